package pc

import (
	"errors"
	"fmt"

	"github.com/rscvm/rscvm/net/tap"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	virtiopci "github.com/rscvm/rscvm/virtio/pci"
)

// NICConfig describes one virtio-net-pci function on a TAP backend, as
// QEMU's `-netdev tap,... -device virtio-net-pci,...` pair does.
type NICConfig struct {
	Net virtionet.Config  // device properties
	PCI virtiopci.Options // transport: disable-legacy/-modern, vectors (Platform and Logger are filled in)
	Tap tap.Config        // backend: ifname, queues, fds, sndbuf
	// Slot is the PCI slot (QEMU's addr=); 0 picks the first free one.
	Slot int
}

// NIC is a virtio-net-pci function added to the machine.
type NIC struct {
	Device    *virtionet.Device
	Transport *virtiopci.Transport
	Tap       *tap.Tap
	Slot      int
}

// AddNIC opens the TAP, creates the virtio-net device and its PCI transport
// and puts the function on bus 0. Call it before Run.
func (p *PC) AddNIC(cfg NICConfig) (n *NIC, err error) {
	if cfg.Tap.Logger == nil {
		cfg.Tap.Logger = p.log
	}
	t, err := tap.Open(cfg.Tap)
	if err != nil {
		return nil, err
	}
	n = &NIC{Tap: t}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	be, err := virtionet.NewTapBackend(t)
	if err != nil {
		return nil, err
	}
	n.Device, err = virtionet.New(cfg.Net, be, virtionet.Options{Logger: p.log})
	if err != nil {
		return nil, err
	}
	opts := cfg.PCI
	opts.Platform = virtiopci.MachinePlatform{Machine: p.Machine}
	opts.Logger = p.log
	n.Transport, err = virtiopci.New(n.Device, p.Machine.Memory(), opts)
	if err != nil {
		return nil, err
	}
	if cfg.Slot > 0 {
		err = p.PCI.AddAt(cfg.Slot, n.Transport)
		n.Slot = cfg.Slot
	} else {
		n.Slot, err = p.PCI.Add(n.Transport)
	}
	if err != nil {
		return nil, fmt.Errorf("pc: adding virtio-net-pci on %s: %w", t.Name(), err)
	}
	p.nics = append(p.nics, n)
	return n, nil
}

// NICs are the NICs added so far, in order.
func (p *PC) NICs() []*NIC { return p.nics }

func (n *NIC) close() error {
	var errs []error
	if n.Transport != nil {
		errs = append(errs, n.Transport.Close())
	} else if n.Device != nil {
		n.Device.Reset()
	}
	if n.Tap != nil {
		errs = append(errs, n.Tap.Close())
	}
	return errors.Join(errs...)
}

// Package pc assembles rscvm's machine: a KVM Machine with RAM, the platform
// devices of QEMU's `pc` machine that a guest kernel relies on (COM1 16550,
// PCI bus 0 behind configuration mechanism #1 with an i440FX-like host
// bridge, the ACPI PM block, reset ports), ACPI tables and a kernel loaded by
// the Linux or PVH boot protocol.
package pc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/devices/power"
	"github.com/rscvm/rscvm/devices/serial"
	"github.com/rscvm/rscvm/vmm"
	"github.com/rscvm/rscvm/vmm/acpi"
	"github.com/rscvm/rscvm/vmm/boot"
)

// Config describes a machine and what it boots.
type Config struct {
	MemBytes uint64
	CPUs     int
	Kernel   []byte // bzImage, or ELF with a PVH entry note
	Initrd   []byte // may be empty
	Cmdline  string
	// Serial receives COM1 output (nil discards it); SerialIn, if set, feeds
	// COM1 input.
	Serial   io.Writer
	SerialIn io.Reader
	KVMPath  string
	Logger   *slog.Logger
}

// PC is a booted-but-not-yet-running machine.
type PC struct {
	Machine *vmm.Machine
	PCI     *pci.Bus
	UART    *serial.UART
	Kind    boot.Kind

	log    *slog.Logger
	cancel context.CancelFunc // stops the serial input pump
	nics   []*NIC
}

// New creates the machine, its platform devices and ACPI tables, and loads
// the kernel. Devices such as NICs are added to p.PCI before Run.
func New(cfg Config) (p *PC, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.CPUs > acpi.MaxCPUs {
		return nil, fmt.Errorf("pc: %d vCPUs: the maximum is %d", cfg.CPUs, acpi.MaxCPUs)
	}
	m, err := vmm.NewMachine(vmm.Config{MemBytes: cfg.MemBytes, CPUs: cfg.CPUs, KVMPath: cfg.KVMPath, Logger: log})
	if err != nil {
		return nil, err
	}
	p = &PC{Machine: m, log: log}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	p.UART = serial.New(serial.Config{Out: cfg.Serial, IRQ: m.IRQLine(acpi.COM1IRQ), Logger: log})
	if err := p.UART.Attach(m.PIO(), acpi.COM1Port); err != nil {
		return p, err
	}
	if cfg.SerialIn != nil {
		ctx, cancel := context.WithCancel(context.Background())
		p.cancel = cancel
		go func() {
			if err := p.UART.Pump(ctx, cfg.SerialIn); err != nil && !errors.Is(err, context.Canceled) {
				log.Debug("serial input ended", "err", err)
			}
		}()
	}

	pm := power.NewPM(power.PMConfig{PowerOff: m.PowerOff, SCI: m.IRQLine(acpi.SCIIRQ), Logger: log})
	if err := pm.Attach(m.PIO()); err != nil {
		return p, err
	}
	rc, err := attachLegacyDevices(m)
	if err != nil {
		return p, err
	}

	mem := m.Memory()
	base64, size64 := acpi.MMIO64Window(mem.Regions())
	p.PCI, err = pci.NewBus(pci.Config{PIO: m.PIO(), MMIO: m.MMIO(), Mem64: pci.Window{Base: base64, Size: size64}, Logger: log})
	if err != nil {
		return p, err
	}
	if err := pci.NewConfigIO(p.PCI, rc).Attach(m.PIO()); err != nil {
		return p, err
	}
	if err := acpi.Build(mem, acpi.Config{CPUs: cfg.CPUs, MMIO64Base: base64, MMIO64Size: size64}); err != nil {
		return p, err
	}
	entry, kind, err := boot.Load(mem, cfg.Kernel, cfg.Initrd, cfg.Cmdline)
	if err != nil {
		return p, err
	}
	p.Kind = kind
	if err := m.SetBootEntry(vmm.BootEntry(entry)); err != nil {
		return p, err
	}
	log.Debug("machine ready", "kernel", kind, "mem", cfg.MemBytes, "cpus", cfg.CPUs)
	return p, nil
}

// Run runs the guest until it powers off or resets (nil), fails (a
// *vmm.GuestError naming the exit), or ctx is cancelled. Console output is
// flushed before Run returns.
func (p *PC) Run(ctx context.Context) error {
	err := p.Machine.Run(ctx)
	fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ferr := p.UART.Flush(fctx); ferr != nil {
		p.log.Warn("serial output not flushed", "err", ferr)
	}
	return err
}

// Close releases the machine and its devices.
func (p *PC) Close() error {
	if p.cancel != nil {
		p.cancel()
	}
	var errs []error
	// Devices before the VM: their irqfds and ioeventfds are deregistered
	// from the VM, which must still be open. Close is called after Run has
	// returned (or without Run), so no vCPU touches them any more.
	for _, n := range p.nics {
		errs = append(errs, n.close())
	}
	if p.UART != nil {
		errs = append(errs, p.UART.Close())
	}
	if p.Machine != nil {
		errs = append(errs, p.Machine.Close())
	}
	return errors.Join(errs...)
}

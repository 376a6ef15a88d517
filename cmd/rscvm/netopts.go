package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/rscvm/rscvm/net/tap"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/vmm/pc"
)

// netdevIgnored are -netdev tap keys QEMU has that rscvm accepts and
// ignores with a warning (it has no vhost-net and runs no helper).
var netdevIgnored = map[string]bool{"vhost": true, "vhostforce": true, "vhostfd": true, "vhostfds": true, "poll-us": true}

// deviceDrivers are the -device drivers rscvm implements, and the
// disable-legacy value each implies (QEMU's generic, -transitional and
// -non-transitional variants).
var deviceDrivers = map[string]string{
	"virtio-net-pci":                  "auto",
	"virtio-net-pci-transitional":     "off",
	"virtio-net-pci-non-transitional": "on",
}

// tapNetdev is a parsed -netdev tap.
type tapNetdev struct {
	id  string
	tap tap.Config
}

func parseNetdev(o *optList) (*tapNetdev, error) {
	typ := o.str("type", "")
	if typ != "tap" {
		return nil, fmt.Errorf("-netdev %s: unsupported type %q (accepted: tap)", o.str("id", "?"), typ)
	}
	nd := &tapNetdev{id: o.str("id", "")}
	if nd.id == "" {
		return nil, fmt.Errorf("-netdev tap: id=ID is required")
	}
	nd.tap.Name = o.str("ifname", "")
	for _, k := range []string{"script", "downscript"} {
		if v := o.str(k, ""); v != "" && v != "no" {
			return nil, fmt.Errorf("-netdev %s: %s=%q: rscvm runs no interface scripts; accepted: %s=no", nd.id, k, v, k)
		}
	}
	vnet, err := o.boolean("vnet_hdr", true)
	if err != nil {
		return nil, err
	}
	if !vnet {
		return nil, fmt.Errorf("-netdev %s: vnet_hdr=off is not supported (accepted: on)", nd.id)
	}
	q, err := o.uint("queues", 1, 1, 256)
	if err != nil {
		return nil, err
	}
	nd.tap.Queues = int(q)
	if fd := o.str("fd", ""); fd != "" {
		n, err := strconv.Atoi(fd)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-netdev %s: fd=%q: want a file descriptor number", nd.id, fd)
		}
		nd.tap.FDs = []int{n}
	}
	if fds := o.str("fds", ""); fds != "" {
		if len(nd.tap.FDs) > 0 {
			return nil, fmt.Errorf("-netdev %s: give fd= or fds=, not both", nd.id)
		}
		if nd.tap.FDs, err = tap.ParseFDs(fds); err != nil {
			return nil, fmt.Errorf("-netdev %s: fds=%q: %w", nd.id, fds, err)
		}
		if o.has("queues") && int(q) != len(nd.tap.FDs) {
			return nil, fmt.Errorf("-netdev %s: queues=%d but fds= lists %d descriptors", nd.id, q, len(nd.tap.FDs))
		}
		nd.tap.Queues = len(nd.tap.FDs)
	}
	sndbuf, err := o.uint("sndbuf", 0, 0, 1<<31-1)
	if err != nil {
		return nil, err
	}
	nd.tap.SndBuf = int(sndbuf)
	for _, k := range o.untaken() {
		if netdevIgnored[k] {
			o.taken[k] = true
			slog.Warn("ignoring -netdev option", "netdev", nd.id, "option", k)
			continue
		}
		return nil, fmt.Errorf("-netdev %s: unknown option %q (accepted: id, ifname, fd, fds, queues, script=no, downscript=no, vnet_hdr, sndbuf)", nd.id, k)
	}
	return nd, nil
}

// parseNICs pairs every -device with its -netdev.
func parseNICs(netdevs, devices []*optList) ([]pc.NICConfig, error) {
	byID := map[string]*tapNetdev{}
	for _, o := range netdevs {
		nd, err := parseNetdev(o)
		if err != nil {
			return nil, err
		}
		if byID[nd.id] != nil {
			return nil, fmt.Errorf("-netdev: duplicate id %q", nd.id)
		}
		byID[nd.id] = nd
	}
	used := map[string]bool{}
	var nics []pc.NICConfig
	for i, o := range devices {
		nic, id, err := parseNetDevice(o, byID, i)
		if err != nil {
			return nil, err
		}
		if used[id] {
			return nil, fmt.Errorf("-device: netdev %q is used by two devices", id)
		}
		used[id] = true
		nics = append(nics, nic)
	}
	for id := range byID {
		if !used[id] {
			return nil, fmt.Errorf("-netdev %s: no -device virtio-net-pci,netdev=%s uses it", id, id)
		}
	}
	return nics, nil
}

func parseNetDevice(o *optList, netdevs map[string]*tapNetdev, index int) (pc.NICConfig, string, error) {
	var nic pc.NICConfig
	driver := o.str("driver", "")
	legacyDefault, ok := deviceDrivers[driver]
	if !ok {
		return nic, "", fmt.Errorf("-device: unsupported driver %q (accepted: virtio-net-pci, virtio-net-pci-transitional, virtio-net-pci-non-transitional)", driver)
	}
	id := o.str("netdev", "")
	nd := netdevs[id]
	if nd == nil {
		return nic, "", fmt.Errorf("-device %s: netdev=%q does not name a -netdev (each virtio-net-pci needs netdev=ID of a -netdev tap,id=ID)", driver, id)
	}
	o.str("id", "") // the device's own id: accepted, unused
	nic.Tap = nd.tap
	nic.Net = virtionet.DefaultConfig()
	nic.Net.MAC = virtionet.NewDefaultMAC(index)

	switch v := o.str("disable-legacy", legacyDefault); v {
	case "auto", "off", "no", "false", "n":
		// auto is off on the pc machine's conventional PCI bus, as in QEMU.
	case "on", "yes", "true", "y":
		nic.PCI.DisableLegacy = true
	default:
		return nic, "", fmt.Errorf("-device %s: disable-legacy=%q: accepted values are on, off, auto", driver, v)
	}
	var err error
	if nic.PCI.DisableModern, err = o.boolean("disable-modern", false); err != nil {
		return nic, "", err
	}
	// QEMU's default: one vector per queue of the tap plus config and
	// control (2*queues+2), whether or not mq is on.
	if v, err := o.uint("vectors", uint64(2*max(nd.tap.Queues, 1)+2), 0, 2048); err != nil {
		return nic, "", err
	} else {
		nic.PCI.Vectors = int(v)
	}
	if a := o.str("addr", ""); a != "" {
		slot, fn, _ := strings.Cut(a, ".")
		n, err := strconv.ParseUint(slot, 0, 8)
		if err != nil || n < 1 || n > 31 || (fn != "" && fn != "0") {
			return nic, "", fmt.Errorf("-device %s: addr=%q: want a slot from 1 to 0x1f (function 0), e.g. addr=0x3", driver, a)
		}
		nic.Slot = int(n)
	}
	for _, k := range o.untaken() {
		o.taken[k] = true
		if virtionet.IsIgnored(k) {
			slog.Warn("ignoring -device property", "device", driver, "property", k)
			continue
		}
		if err := nic.Net.Set(k, o.vals[k]); err != nil {
			return nic, "", fmt.Errorf("-device %s: %w", driver, err)
		}
	}
	if err := nic.Net.Validate(); err != nil {
		return nic, "", fmt.Errorf("-device %s: %w", driver, err)
	}
	return nic, id, nil
}

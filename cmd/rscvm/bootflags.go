package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// bootConfig is what `rscvm boot` was asked to do.
type bootConfig struct {
	Kernel   string
	Initrd   string
	Append   string
	MemBytes uint64
	CPUs     int
	Serial   serialSpec
	Netdevs  []*optList // -netdev tap,... (validated by the net device layer)
	Devices  []*optList // -device virtio-net-pci,...
	Stats    bool       // print device counters at exit
	// appendSet tells an explicit empty -append from none.
	appendSet bool
}

// serialSpec says where COM1 goes.
type serialSpec struct {
	Kind string // "stdio", "file", "none"
	Path string // for "file"
}

const (
	defaultMem  = 256 << 20
	maxCPUs     = 64
	minMemBytes = 16 << 20
)

// flagSpec describes one flag of a command whose configuration is a C, and
// every spelling it accepts.
type flagSpec[C any] struct {
	names   []string // without dashes; the first is the canonical --name
	value   string   // placeholder for help; "" for a boolean flag
	help    string
	handler func(c *C, v string) error
}

var bootFlags = []flagSpec[bootConfig]{
	{[]string{"kernel"}, "PATH", "guest kernel: a bzImage, or an ELF with a PVH entry note (default: the freestanding test guest built by `make guest`)",
		func(c *bootConfig, v string) error { c.Kernel = v; return nil }},
	{[]string{"initrd"}, "PATH", "initial ramdisk",
		func(c *bootConfig, v string) error { c.Initrd = v; return nil }},
	{[]string{"append"}, "CMDLINE", "kernel command line",
		func(c *bootConfig, v string) error { c.Append, c.appendSet = v, true; return nil }},
	{[]string{"mem", "m"}, "SIZE", "guest RAM: MiB, or with a K/M/G suffix; QEMU's -m size=SIZE also works (default 256M)",
		func(c *bootConfig, v string) error {
			v = strings.TrimPrefix(v, "size=")
			n, err := parseSize(v)
			if err != nil {
				return err
			}
			if n < minMemBytes {
				return fmt.Errorf("%q is below the minimum of 16M", v)
			}
			c.MemBytes = n
			return nil
		}},
	{[]string{"cpus", "smp"}, "N", "number of vCPUs, 1 to 64; QEMU's -smp cpus=N also works (default 1)",
		func(c *bootConfig, v string) error {
			v = strings.TrimPrefix(v, "cpus=")
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxCPUs {
				return fmt.Errorf("%q: want a whole number from 1 to %d", v, maxCPUs)
			}
			c.CPUs = n
			return nil
		}},
	{[]string{"serial"}, "stdio|file:PATH|none", "where COM1 goes (default stdio)",
		func(c *bootConfig, v string) error {
			switch {
			case v == "stdio", v == "mon:stdio":
				c.Serial = serialSpec{Kind: "stdio"}
			case v == "none", v == "null":
				c.Serial = serialSpec{Kind: "none"}
			case strings.HasPrefix(v, "file:") && len(v) > len("file:"):
				c.Serial = serialSpec{Kind: "file", Path: v[len("file:"):]}
			default:
				return fmt.Errorf("%q: accepted values are stdio, file:PATH, none", v)
			}
			return nil
		}},
	{[]string{"nographic"}, "", "accepted for QEMU compatibility (rscvm has no display; the serial console goes to stdio)",
		func(c *bootConfig, v string) error { return nil }},
	{[]string{"netdev"}, "tap,id=ID,...", "a network backend, QEMU syntax",
		func(c *bootConfig, v string) error {
			o, err := parseOptList("-netdev", v, "type")
			if err != nil {
				return err
			}
			c.Netdevs = append(c.Netdevs, o)
			return nil
		}},
	{[]string{"device"}, "virtio-net-pci,netdev=ID,...", "a device, QEMU syntax",
		func(c *bootConfig, v string) error {
			o, err := parseOptList("-device", v, "driver")
			if err != nil {
				return err
			}
			c.Devices = append(c.Devices, o)
			return nil
		}},
	{[]string{"stats"}, "", "print device and RSC counters when the guest stops",
		func(c *bootConfig, v string) error { c.Stats = true; return nil }},
}

func lookupFlag[C any](specs []flagSpec[C], name string) *flagSpec[C] {
	for i := range specs {
		for _, n := range specs[i].names {
			if n == name {
				return &specs[i]
			}
		}
	}
	return nil
}

// acceptedFlags lists every spelling, for error messages.
func acceptedFlags[C any](specs []flagSpec[C]) string {
	var s []string
	for _, f := range specs {
		s = append(s, "--"+f.names[0])
		for _, alias := range f.names[1:] {
			s = append(s, "-"+alias)
		}
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// parseFlags applies args to c through specs. Flags take one or two
// dashes, and values either as the next argument or after '='; cmd names
// the command in the error for a stray argument.
func parseFlags[C any](cmd string, specs []flagSpec[C], args []string, c *C) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return fmt.Errorf("unexpected argument %q: rscvm %s takes only flags (accepted: %s)", a, cmd, acceptedFlags(specs))
		}
		name := strings.TrimLeft(a, "-")
		val, hasVal := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, val, hasVal = k, v, true
		}
		spec := lookupFlag(specs, name)
		if spec == nil {
			return fmt.Errorf("unknown flag %s (accepted: %s)", a, acceptedFlags(specs))
		}
		if spec.value == "" {
			if hasVal {
				return fmt.Errorf("flag -%s takes no value", name)
			}
		} else if !hasVal {
			if i+1 >= len(args) {
				return fmt.Errorf("flag -%s needs a value: %s", name, spec.value)
			}
			i++
			val = args[i]
		}
		if err := spec.handler(c, val); err != nil {
			return fmt.Errorf("flag -%s: %w", name, err)
		}
	}
	return nil
}

// parseBootArgs parses `rscvm boot` arguments.
func parseBootArgs(args []string) (*bootConfig, error) {
	c := &bootConfig{MemBytes: defaultMem, CPUs: 1, Serial: serialSpec{Kind: "stdio"}}
	if err := parseFlags("boot", bootFlags, args, c); err != nil {
		return nil, err
	}
	return c, nil
}

// bootUsage is the help text for `rscvm boot`.
func bootUsage() string {
	var b strings.Builder
	b.WriteString("usage: rscvm boot [flags]\n\nBoots a guest under KVM. Flags take one or two dashes (QEMU spellings such as -m, -smp, -kernel work).\n\n")
	for _, f := range bootFlags {
		names := "--" + f.names[0]
		for _, alias := range f.names[1:] {
			names += ", -" + alias
		}
		if f.value != "" {
			names += " " + f.value
		}
		fmt.Fprintf(&b, "  %s\n        %s\n", names, f.help)
	}
	return b.String()
}

package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rscvm/rscvm/guestimages/testguest"
	"github.com/rscvm/rscvm/net/header"
)

// demoUsage is the help text of `rscvm demo`.
func demoUsage() string {
	return `usage: rscvm demo [--segments N] [--mss N] [--interval NS]

Shows receive segment coalescing end to end, on this machine, in seconds:
  1. creates a network namespace with a TAP (vnet_hdr) and boots the
     freestanding test guest under rscvm with
       -netdev tap,... -device virtio-net-pci,guest_rsc_ext=on,rsc_interval=NS
     the guest's virtio-net driver negotiates VIRTIO_NET_F_RSC_EXT over the
     real PCI transport and turns RSC on with GUEST_OFFLOADS_SET (bit 61), as
     Windows NetKVM does;
  2. sends a TCP burst of N MSS-sized segments from the host side of the TAP;
  3. prints what the guest received (packets, segments per packet, the
     RSC_INFO header fields) and rscvm's RSC counters.
Needs root, /dev/kvm, /dev/net/tun, iproute2, and the test guest from
` + "`make guest`" + ` (out/testguest.elf).

flags:
  --segments N    TCP segments in the burst (default 40)
  --mss N         payload bytes per segment, 1..1460 (default 1448)
  --interval NS   the device's rsc_interval in nanoseconds (default 200000000:
                  long enough that a burst is never split by the timer here;
                  the demo flushes by this timer only: x-rsc-batch-flush=off)
`
}

func runDemoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	segments, mss, interval := 40, 1448, "200000000"
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !hasVal {
			if i+1 >= len(args) {
				return fmt.Errorf("demo: flag %s needs a value", args[i])
			}
			i++
			val = args[i]
		}
		var err error
		switch name {
		case "segments":
			if _, err = fmt.Sscan(val, &segments); err != nil || segments < 1 || segments > 1000 {
				return fmt.Errorf("demo: --segments %q: want a whole number from 1 to 1000", val)
			}
		case "mss":
			if _, err = fmt.Sscan(val, &mss); err != nil || mss < 1 || mss > 1460 {
				return fmt.Errorf("demo: --mss %q: want a whole number from 1 to 1460", val)
			}
		case "interval":
			var n uint64
			if _, err = fmt.Sscan(val, &n); err != nil || n > 1<<32-1 {
				return fmt.Errorf("demo: --interval %q: want nanoseconds from 0 to 4294967295", val)
			}
			interval = val
		default:
			return fmt.Errorf("demo: unknown flag %s (accepted: --segments, --mss, --interval)", args[i])
		}
	}
	dir, err := outDir()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	elf := filepath.Join(dir, defaultGuestName)
	if _, err := os.Stat(elf); err != nil {
		return fmt.Errorf("demo: the test guest %s is missing: run `make guest` first", elf)
	}
	if err := testguest.NetnsAvailable(); err != nil {
		return fmt.Errorf("demo: needs root, /dev/net/tun and iproute2 (ip netns) to create the TAP: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	guestMAC := [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	hostMAC := [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	burst := make([][]byte, segments)
	payload := make([]byte, mss)
	for i := range burst {
		seq := uint32(1000 + i*mss)
		for j := range payload {
			payload[j] = byte(int(seq) + j)
		}
		f := header.TCPFrame{DstMAC: guestMAC, SrcMAC: hostMAC,
			Src: netip.MustParseAddr("10.0.2.2"), Dst: netip.MustParseAddr("10.0.2.15"), DontFragment: true, TTL: 64,
			ID: uint16(i), SrcPort: 5001, DstPort: 40000, Seq: seq, Ack: 1, Flags: header.TCPFlagACK, Window: 512, Payload: payload}
		burst[i] = f.Build(nil)
	}

	fmt.Fprintf(stdout, "rscvm demo: booting %s under rscvm with virtio-net-pci,guest_rsc_ext=on,rsc_interval=%s on a TAP\n", elf, interval)
	// Timer-only flushing (as QEMU), so the split of the burst does not depend
	// on how the host's writes interleave with the device's TAP reads (by
	// default rscvm also flushes at the end of every read batch).
	nic := testguest.NIC{DeviceProps: []string{"guest_rsc_ext=on", "rsc_interval=" + interval, "x-rsc-batch-flush=off"}}
	// The guest negotiates RSC_EXT (rsc=1), enables it with OFFLOADS_SET
	// CSUM|TSO4|TSO6|bit 61, then waits for the burst.
	cmdline := fmt.Sprintf("net=1 pci=0 memmap=0 rsc=1 ctrl=offloads:0x2000000000000182 rx=%d rxwait=3000", segments)
	s, err := testguest.StartSession(ctx, testguest.SessionConfig{ELF: elf, Cmdline: cmdline, NIC: nic,
		Command: testguest.RscvmCommand(self, "--stats")})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer s.Close()
	if _, err := s.WaitReady(ctx); err != nil {
		return fmt.Errorf("demo: guest not ready: %w\nconsole:\n%s\n%s", err, s.Serial(), s.Stderr())
	}
	start := time.Now()
	if err := s.Inject(burst...); err != nil {
		return fmt.Errorf("demo: sending the burst: %w", err)
	}
	fmt.Fprintf(stdout, "rscvm demo: sent %d TCP segments of %d bytes (10.0.2.2:5001 -> 10.0.2.15:40000) into the TAP in %v\n",
		segments, mss, time.Since(start).Round(time.Microsecond))
	out, err := s.Wait(ctx)
	if err != nil {
		return fmt.Errorf("demo: %w\n%s", err, s.Stderr())
	}
	if out.Net == nil {
		return fmt.Errorf("demo: the guest reported no virtio-net results:\n%s", s.Serial())
	}
	n := out.Net
	fmt.Fprintf(stdout, "rscvm demo: guest negotiated features %#016x (RSC_EXT: %v)\n", n.Features.Negotiated, n.Features.Has(61))
	fmt.Fprintf(stdout, "\n  %-4s %-7s %-9s %-8s %-9s %-9s %-8s\n", "pkt", "length", "segments", "flags", "gso_type", "gso_size", "hdr_len")
	total := 0
	for _, p := range n.Rx {
		segs := 1
		if p.RSC != nil {
			segs = int(p.RSC.Segments)
		}
		total += segs
		fmt.Fprintf(stdout, "  %-4d %-7d %-9d %#-8x %-9d %-9d %-8d\n", p.N, p.Len, segs, p.Flags, p.GSOType, p.GSOSize, p.HdrLen)
	}
	fmt.Fprintf(stdout, "\nrscvm demo: the guest received %d packets carrying %d segments (RSC_INFO: csum_start = coalesced segments, csum_offset = duplicate ACKs)\n",
		len(n.Rx), total)
	fmt.Fprintf(stdout, "rscvm demo: rscvm's counters at exit:\n%s", indentStats(s.Stderr()))
	if total != segments {
		return fmt.Errorf("demo: %d segments sent but %d received", segments, total)
	}
	return nil
}

// indentStats keeps the --stats JSON from the VMM's stderr.
func indentStats(stderr string) string {
	s := stderr
	if i := strings.Index(s, "rscvm: stats"); i >= 0 {
		s = s[i:]
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

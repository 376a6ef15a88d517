package tap

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Offload is a set of TUN_F_* flags as passed to TUNSETOFFLOAD. The flags describe what the reader of the tap
// (the VMM, hence the guest) can accept: partial checksums and GSO super-frames. Guest-to-host offloads need no
// flag, the kernel parses the virtio-net header of every written frame.
type Offload uint32

// TUN_F_* values from <linux/if_tun.h>.
const (
	OffloadCSUM             Offload = 0x01  // TUN_F_CSUM: reader accepts frames with a partial checksum.
	OffloadTSO4             Offload = 0x02  // TUN_F_TSO4: reader accepts TCPv4 GSO frames.
	OffloadTSO6             Offload = 0x04  // TUN_F_TSO6: reader accepts TCPv6 GSO frames.
	OffloadTSOECN           Offload = 0x08  // TUN_F_TSO_ECN: reader accepts GSO frames with the ECN (CWR) bit.
	OffloadUFO              Offload = 0x10  // TUN_F_UFO: UDP fragmentation offload (accepted, ignored by kernels ≥ 4.14).
	OffloadUSO4             Offload = 0x20  // TUN_F_USO4: reader accepts UDPv4 segmentation offload frames (Linux ≥ 6.2).
	OffloadUSO6             Offload = 0x40  // TUN_F_USO6: reader accepts UDPv6 segmentation offload frames (Linux ≥ 6.2).
	OffloadUDPTunnelGSO     Offload = 0x80  // TUN_F_UDP_TUNNEL_GSO: UDP tunnel GSO frames.
	OffloadUDPTunnelGSOCSUM Offload = 0x100 // TUN_F_UDP_TUNNEL_GSO_CSUM: UDP tunnel GSO with outer checksum.
	offloadUSO                      = OffloadUSO4 | OffloadUSO6
	offloadTunnel                   = OffloadUDPTunnelGSO | OffloadUDPTunnelGSOCSUM
	offloadGatedByCSUM              = OffloadTSO4 | OffloadTSO6 | OffloadTSOECN | OffloadUFO | offloadUSO | offloadTunnel
	offloadKnown                    = OffloadCSUM | offloadGatedByCSUM
	offloadNames                    = "csum,tso4,tso6,tso_ecn,ufo,uso4,uso6,udp_tunnel_gso,udp_tunnel_gso_csum"
)

// String lists the flags, e.g. "csum|tso4|tso6"; "0" for none.
func (o Offload) String() string {
	if o == 0 {
		return "0"
	}
	names := strings.Split(offloadNames, ",")
	var parts []string
	for i, n := range names {
		if o&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	if rest := o &^ offloadKnown; rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(parts, "|")
}

// Virtio-net feature bits that carry guest receive offloads (also the bit positions used by
// VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET).
const (
	FeatureGuestCSUM = 1
	FeatureGuestTSO4 = 7
	FeatureGuestTSO6 = 8
	FeatureGuestECN  = 9
	FeatureGuestUFO  = 10
	FeatureGuestUSO4 = 54
	FeatureGuestUSO6 = 55
	// FeatureGuestUDPTunnelGSO and FeatureGuestUDPTunnelGSOCSUM are the positions QEMU uses for virtio feature
	// bits 65 and 66 inside the 64-bit guest offload word.
	FeatureGuestUDPTunnelGSO     = 46
	FeatureGuestUDPTunnelGSOCSUM = 47
)

// GuestOffloads is the guest's current receive-offload state (negotiated GUEST_* features, later changed by
// GUEST_OFFLOADS_SET).
type GuestOffloads struct {
	CSUM, TSO4, TSO6, ECN, UFO, USO4, USO6 bool
	UDPTunnelGSO, UDPTunnelGSOCSUM         bool
}

// GuestOffloadsFromBits decodes the guest offload bits (1, 7, 8, 9, 10, 54, 55 and the tunnel bits 46, 47) of a
// virtio feature word or GUEST_OFFLOADS_SET argument. Other bits are ignored.
func GuestOffloadsFromBits(bits uint64) GuestOffloads {
	has := func(b uint) bool { return bits&(1<<b) != 0 }
	return GuestOffloads{
		CSUM:             has(FeatureGuestCSUM),
		TSO4:             has(FeatureGuestTSO4),
		TSO6:             has(FeatureGuestTSO6),
		ECN:              has(FeatureGuestECN),
		UFO:              has(FeatureGuestUFO),
		USO4:             has(FeatureGuestUSO4),
		USO6:             has(FeatureGuestUSO6),
		UDPTunnelGSO:     has(FeatureGuestUDPTunnelGSO),
		UDPTunnelGSOCSUM: has(FeatureGuestUDPTunnelGSOCSUM),
	}
}

// Offload maps the guest state to TUN_F_* flags the way QEMU's tap backend does: nothing without CSUM; with CSUM,
// TSO4/TSO6/UFO/USO4/USO6/tunnel map one to one, and TSO_ECN is set only with ECN and at least one of TSO4/TSO6.
func (g GuestOffloads) Offload() Offload {
	if !g.CSUM {
		return 0
	}
	o := OffloadCSUM
	set := func(cond bool, f Offload) {
		if cond {
			o |= f
		}
	}
	set(g.TSO4, OffloadTSO4)
	set(g.TSO6, OffloadTSO6)
	set(g.ECN && (g.TSO4 || g.TSO6), OffloadTSOECN)
	set(g.UFO, OffloadUFO)
	set(g.USO4, OffloadUSO4)
	set(g.USO6, OffloadUSO6)
	set(g.UDPTunnelGSO, OffloadUDPTunnelGSO)
	set(g.UDPTunnelGSOCSUM, OffloadUDPTunnelGSOCSUM)
	return o
}

// OffloadFromBits is GuestOffloadsFromBits(bits).Offload().
func OffloadFromBits(bits uint64) Offload { return GuestOffloadsFromBits(bits).Offload() }

// Capabilities are the optional offloads the kernel accepted when probed at open (as QEMU's tap_probe_has_ufo,
// tap_probe_has_uso and tap_probe_has_tunnel). A device must not offer the matching virtio features otherwise.
type Capabilities struct {
	UFO       bool // TUNSETOFFLOAD(CSUM|UFO) succeeded: GUEST_UFO/HOST_UFO may be offered.
	USO       bool // TUNSETOFFLOAD(CSUM|USO4|USO6) succeeded: GUEST_USO4/6 and HOST_USO may be offered.
	UDPTunnel bool // TUNSETOFFLOAD(CSUM|TSO4|UDP_TUNNEL_GSO) succeeded: the UDP tunnel GSO features may be offered.
}

// setOffloadIoctl is TUNSETOFFLOAD; tests replace it to emulate kernels without USO.
var setOffloadIoctl = func(fd int, o Offload) error {
	_, err := ioctlVal(fd, reqTUNSETOFFLOAD, uintptr(o))
	return err
}

// probe runs the capability probes on fd and then clears the offloads (QEMU starts with offload 0 until the
// guest negotiates features).
func (t *Tap) probe() error {
	fd := t.queues[0].fd
	t.caps.UFO = setOffloadIoctl(fd, OffloadCSUM|OffloadUFO) == nil
	t.caps.USO = setOffloadIoctl(fd, OffloadCSUM|offloadUSO) == nil
	t.caps.UDPTunnel = setOffloadIoctl(fd, OffloadCSUM|OffloadTSO4|OffloadUDPTunnelGSO) == nil
	if !t.caps.USO {
		t.rejected |= offloadUSO
	}
	if !t.caps.UFO {
		t.rejected |= OffloadUFO
	}
	if !t.caps.UDPTunnel {
		t.rejected |= offloadTunnel
	}
	if err := setOffloadIoctl(fd, 0); err != nil {
		return newError(t.name, "TUNSETOFFLOAD", err)
	}
	t.offload = 0
	return nil
}

// Capabilities returns the offload capabilities probed at open, updated when a later SetOffload had to drop
// flags the kernel rejected.
func (t *Tap) Capabilities() Capabilities {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.caps
}

// Offload returns the TUN_F_* flags currently applied to the tap.
func (t *Tap) Offload() Offload {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.offload
}

// SetOffload applies flags with TUNSETOFFLOAD and returns the flags actually applied. Flags other than CSUM are
// dropped when CSUM is absent. Flags the kernel is known not to support (from the open-time probe or an earlier
// call) are masked out. If the kernel answers EINVAL, SetOffload retries without the USO flags, then without UFO
// and the tunnel flags (as QEMU does), remembers what the kernel refused and reports the reduced set; the error
// is nil in that case. It fails only if even the reduced set is refused.
func (t *Tap) SetOffload(flags Offload) (Offload, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return t.offload, ErrClosed
	}
	if flags&OffloadCSUM == 0 {
		flags = 0
	}
	want := flags &^ t.rejected
	fd := t.queues[0].fd
	err := setOffloadIoctl(fd, want)
	if errors.Is(err, unix.EINVAL) && want&offloadUSO != 0 {
		t.slog().Warn("tap: kernel rejected USO offloads, retrying without them", "offload", want.String())
		want &^= offloadUSO
		if err = setOffloadIoctl(fd, want); err == nil {
			t.rejected |= offloadUSO
			t.caps.USO = false
		}
	}
	if errors.Is(err, unix.EINVAL) && want&(OffloadUFO|offloadTunnel) != 0 {
		t.slog().Warn("tap: kernel rejected UFO/tunnel offloads, retrying without them", "offload", want.String())
		want &^= OffloadUFO | offloadTunnel
		if err = setOffloadIoctl(fd, want); err == nil {
			t.rejected |= OffloadUFO | offloadTunnel
			t.caps.UFO, t.caps.UDPTunnel = false, false
		}
	}
	if err != nil {
		return t.offload, newError(t.name, fmt.Sprintf("TUNSETOFFLOAD %s", want), err)
	}
	t.offload = want
	return want, nil
}

// SetGuestOffloads is SetOffload(g.Offload()).
func (t *Tap) SetGuestOffloads(g GuestOffloads) (Offload, error) { return t.SetOffload(g.Offload()) }

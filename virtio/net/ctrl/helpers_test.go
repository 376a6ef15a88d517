package ctrl

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	offCSUM = uint64(1) << FeatureGuestCSUM
	offTSO4 = uint64(1) << FeatureGuestTSO4
	offTSO6 = uint64(1) << FeatureGuestTSO6
	offECN  = uint64(1) << FeatureGuestECN
	offUFO  = uint64(1) << FeatureGuestUFO
	offUSO4 = uint64(1) << FeatureGuestUSO4
	offUSO6 = uint64(1) << FeatureGuestUSO6
)

var (
	testMAC = MAC{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	otherUC = MAC{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
	uc1     = MAC{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	mc1     = MAC{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
	mc2     = MAC{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
)

// fullConfig negotiates every control feature, 4 queue pairs, the usual
// guest offloads without USO, and RSC_EXT.
func fullConfig() Config {
	return Config{
		CtrlRX:            true,
		CtrlRXExtra:       true,
		CtrlVLAN:          true,
		CtrlMACAddr:       true,
		CtrlGuestOffloads: true,
		GuestAnnounce:     true,
		MQ:                true,
		MaxQueuePairs:     4,
		GuestOffloads:     offCSUM | offTSO4 | offTSO6 | offECN | offUFO,
		RSCExt:            true,
	}
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// macTable encodes a TABLE_SET payload.
func macTable(uni, multi []MAC) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, uint32(len(uni)))
	for _, m := range uni {
		b = append(b, m[:]...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(multi)))
	for _, m := range multi {
		b = append(b, m[:]...)
	}
	return b
}

// macs returns n distinct addresses whose first byte is first.
func macs(n int, first byte) []MAC {
	out := make([]MAC, n)
	for i := range out {
		out[i] = MAC{first, 0x10, 0x20, 0x30, byte(i >> 8), byte(i)}
	}
	return out
}

// mustOK runs a command that must be accepted.
func mustOK(t testing.TB, s *State, class, cmd uint8, payload []byte) Event {
	t.Helper()
	ev, err := s.Apply(class, cmd, payload)
	require.NoError(t, err)
	return ev
}

// busyState returns a state with every part moved away from its reset
// value, so that "unchanged after ERR" checks are meaningful.
func busyState(t testing.TB, cfg Config) *State {
	t.Helper()
	s := New(cfg, testMAC)
	if cfg.CtrlRX {
		mustOK(t, s, ClassRX, RXPromisc, []byte{0})
		mustOK(t, s, ClassRX, RXAllMulti, []byte{1})
		mustOK(t, s, ClassMAC, MACTableSet, macTable([]MAC{uc1}, []MAC{mc1}))
	}
	if cfg.CtrlRX && cfg.CtrlRXExtra {
		mustOK(t, s, ClassRX, RXNoBcast, []byte{1})
	}
	if cfg.CtrlVLAN {
		mustOK(t, s, ClassVLAN, VLANAdd, le16(100))
	}
	if cfg.CtrlMACAddr {
		mustOK(t, s, ClassMAC, MACAddrSet, otherUC[:])
	}
	if cfg.MQ && s.Config().MaxQueuePairs > 1 {
		mustOK(t, s, ClassMQ, MQVQPairsSet, le16(2))
	}
	if cfg.CtrlGuestOffloads {
		mustOK(t, s, ClassGuestOffloads, GuestOffloadsSet, le64(cfg.GuestOffloads&offCSUM))
	}
	s.RequestAnnounce()
	return s
}

// frame builds an Ethernet frame to dst, 802.1Q-tagged with vid when
// vid >= 0, padded to 60 bytes.
func frame(dst MAC, vid int) []byte {
	b := append([]byte{}, dst[:]...)
	b = append(b, 0x52, 0x54, 0x00, 0x99, 0x99, 0x99)
	if vid >= 0 {
		b = append(b, 0x81, 0x00, byte(vid>>8), byte(vid))
	}
	b = append(b, 0x08, 0x00)
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

// checkInvariants verifies the State's internal consistency. It uses plain
// comparisons (no testify) because the fuzzers call it after every step.
func checkInvariants(t testing.TB, s *State) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("invariant: "+format, args...)
	}
	cfg := s.Config()
	if cfg.MaxQueuePairs < 1 || cfg.MaxQueuePairs > MaxQueuePairs {
		fail("MaxQueuePairs %d", cfg.MaxQueuePairs)
	}
	if cfg.GuestOffloads&^GuestOffloadMask != 0 {
		fail("GuestOffloads %#x outside the mask", cfg.GuestOffloads)
	}
	if s.pairs < 1 || s.pairs > cfg.MaxQueuePairs {
		fail("queue pairs %d of %d", s.pairs, cfg.MaxQueuePairs)
	}
	if s.offloads&^cfg.GuestOffloads != 0 {
		fail("offloads %#x outside the negotiated %#x", s.offloads, cfg.GuestOffloads)
	}
	if !(0 <= s.firstMulti && s.firstMulti <= s.inUse && s.inUse <= MACTableEntries) {
		fail("MAC table firstMulti %d inUse %d", s.firstMulti, s.inUse)
	}
	if s.uniOverflow && s.firstMulti != 0 {
		fail("unicast overflow with %d unicast entries", s.firstMulti)
	}
	if s.multiOverflow && s.firstMulti != s.inUse {
		fail("multicast overflow with %d multicast entries", s.inUse-s.firstMulti)
	}
	for i := s.inUse; i < MACTableEntries; i++ {
		if s.macs[i] != (MAC{}) {
			fail("stale MAC entry %d beyond in-use %d", i, s.inUse)
		}
	}
	if !cfg.CtrlVLAN && s.vlans != [MaxVLAN / 64]uint64{} {
		fail("VLAN table set without CTRL_VLAN")
	}
	if !cfg.GuestAnnounce && s.announce {
		fail("announce pending without GUEST_ANNOUNCE")
	}
	v4, v6 := s.RSC()
	if (v4 || v6) && !cfg.RSCExt {
		fail("RSC on without RSC_EXT")
	}
	if v4 && s.offloads&offTSO4 == 0 || v6 && s.offloads&offTSO6 == 0 {
		fail("RSC v4 %v v6 %v with offloads %#x", v4, v6, s.offloads)
	}
}

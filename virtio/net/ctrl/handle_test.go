package ctrl

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRXCommands(t *testing.T) {
	get := map[uint8]func(RxMode) bool{
		RXPromisc:  func(m RxMode) bool { return m.Promisc },
		RXAllMulti: func(m RxMode) bool { return m.AllMulti },
		RXAllUni:   func(m RxMode) bool { return m.AllUni },
		RXNoMulti:  func(m RxMode) bool { return m.NoMulti },
		RXNoUni:    func(m RxMode) bool { return m.NoUni },
		RXNoBcast:  func(m RxMode) bool { return m.NoBcast },
	}
	for cmd := RXPromisc; cmd <= RXNoBcast; cmd++ {
		s := New(fullConfig(), testMAC)
		for _, v := range []byte{1, 0, 0xFF, 0, 2} {
			before := s.RxMode()
			ack, ev := s.Handle(ClassRX, cmd, []byte{v})
			require.Equal(t, AckOK, ack, "cmd %d value %d", cmd, v)
			require.Equal(t, Event{Changes: ChangeRxMode}, ev)
			require.Equal(t, v != 0, get[cmd](s.RxMode()), "cmd %d value %d", cmd, v)
			// Only the addressed mode changes.
			after := s.RxMode()
			for other, g := range get {
				if other != cmd {
					require.Equal(t, g(before), g(after))
				}
			}
		}
	}
	// PROMISC and ALLMULTI need only CTRL_RX.
	s := New(Config{CtrlRX: true}, testMAC)
	mustOK(t, s, ClassRX, RXPromisc, []byte{0})
	mustOK(t, s, ClassRX, RXAllMulti, []byte{1})
	require.Equal(t, RxMode{AllMulti: true}, s.RxMode())
}

func TestMACAddrSet(t *testing.T) {
	s := New(fullConfig(), testMAC)
	ack, ev := s.Handle(ClassMAC, MACAddrSet, otherUC[:])
	require.Equal(t, AckOK, ack)
	require.Equal(t, Event{Changes: ChangeMAC, MAC: otherUC}, ev)
	require.Equal(t, otherUC, s.MAC())
	require.Equal(t, testMAC, s.DefaultMAC())
	// Like QEMU, any 6 bytes are accepted, a multicast address too.
	mustOK(t, s, ClassMAC, MACAddrSet, mc1[:])
	require.Equal(t, mc1, s.MAC())
	// ADDR_SET does not need CTRL_RX.
	s = New(Config{CtrlMACAddr: true}, testMAC)
	mustOK(t, s, ClassMAC, MACAddrSet, otherUC[:])
}

func TestMACTableSet(t *testing.T) {
	tests := []struct {
		name             string
		uni, multi       []MAC
		wantUni, wantMul []MAC
		uniOF, multiOF   bool
	}{
		{name: "empty", wantUni: []MAC{}, wantMul: []MAC{}},
		{name: "small", uni: []MAC{uc1, otherUC}, multi: []MAC{mc1, mc2, mc1},
			wantUni: []MAC{uc1, otherUC}, wantMul: []MAC{mc1, mc2, mc1}},
		{name: "64 unicast", uni: macs(64, 0x02), wantUni: macs(64, 0x02), wantMul: []MAC{}},
		{name: "64 multicast", multi: macs(64, 0x01), wantUni: []MAC{}, wantMul: macs(64, 0x01)},
		{name: "64 unicast then 1 multicast overflows multicast", uni: macs(64, 0x02), multi: []MAC{mc1},
			wantUni: macs(64, 0x02), wantMul: []MAC{}, multiOF: true},
		{name: "65 unicast overflows unicast, multicast still fits", uni: macs(65, 0x02), multi: macs(64, 0x01),
			wantUni: []MAC{}, wantMul: macs(64, 0x01), uniOF: true},
		{name: "both overflow", uni: macs(100, 0x02), multi: macs(65, 0x01),
			wantUni: []MAC{}, wantMul: []MAC{}, uniOF: true, multiOF: true},
		{name: "40+24 fit exactly", uni: macs(40, 0x02), multi: macs(24, 0x01),
			wantUni: macs(40, 0x02), wantMul: macs(24, 0x01)},
		{name: "40+25 overflows multicast", uni: macs(40, 0x02), multi: macs(25, 0x01),
			wantUni: macs(40, 0x02), wantMul: []MAC{}, multiOF: true},
		{name: "large lists within MaxPayloadSize", uni: macs(5000, 0x02), multi: macs(5000, 0x01),
			wantUni: []MAC{}, wantMul: []MAC{}, uniOF: true, multiOF: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := busyState(t, fullConfig())
			ack, ev := s.Handle(ClassMAC, MACTableSet, macTable(tc.uni, tc.multi))
			require.Equal(t, AckOK, ack)
			require.Equal(t, Event{Changes: ChangeMACTable}, ev)
			require.Equal(t, MACTable{Unicast: tc.wantUni, Multicast: tc.wantMul,
				UnicastOverflow: tc.uniOF, MulticastOverflow: tc.multiOF}, s.MACTable())
			checkInvariants(t, s)
		})
	}

	// A smaller table after a larger one leaves no stale entries.
	s := New(fullConfig(), testMAC)
	mustOK(t, s, ClassMAC, MACTableSet, macTable(macs(30, 0x02), macs(30, 0x01)))
	mustOK(t, s, ClassMAC, MACTableSet, macTable([]MAC{uc1}, nil))
	require.Equal(t, MACTable{Unicast: []MAC{uc1}, Multicast: []MAC{}}, s.MACTable())
	checkInvariants(t, s)
}

func TestVLANCommands(t *testing.T) {
	s := New(fullConfig(), testMAC)
	for _, vid := range []uint16{0, 1, 63, 64, 100, 4095} {
		ack, ev := s.Handle(ClassVLAN, VLANAdd, le16(vid))
		require.Equal(t, AckOK, ack)
		require.Equal(t, Event{Changes: ChangeVLAN}, ev)
		require.True(t, s.VLANAllowed(vid))
	}
	require.Equal(t, []uint16{0, 1, 63, 64, 100, 4095}, s.VLANs())
	require.False(t, s.VLANAllowed(2))
	require.False(t, s.VLANAllowed(4096))
	mustOK(t, s, ClassVLAN, VLANAdd, le16(100)) // idempotent
	mustOK(t, s, ClassVLAN, VLANDel, le16(64))
	mustOK(t, s, ClassVLAN, VLANDel, le16(2)) // deleting an absent id is fine
	require.Equal(t, []uint16{0, 1, 63, 100, 4095}, s.VLANs())

	off := New(Config{}, testMAC)
	require.False(t, off.VLANFiltering())
	require.True(t, off.VLANAllowed(7), "no CTRL_VLAN: every VLAN passes")
}

func TestMQVQPairsSet(t *testing.T) {
	s := New(fullConfig(), testMAC)
	for _, n := range []uint16{4, 1, 2, 3} {
		ack, ev := s.Handle(ClassMQ, MQVQPairsSet, le16(n))
		require.Equal(t, AckOK, ack)
		require.Equal(t, Event{Changes: ChangeQueuePairs, QueuePairs: n}, ev)
		require.Equal(t, n, s.QueuePairs())
	}
	// MQ negotiated with a single pair: only 1 is accepted.
	one := New(Config{MQ: true, MaxQueuePairs: 1}, testMAC)
	mustOK(t, one, ClassMQ, MQVQPairsSet, le16(1))
	_, err := one.Apply(ClassMQ, MQVQPairsSet, le16(2))
	require.ErrorIs(t, err, ErrInvalid)
}

func TestGuestOffloadsSet(t *testing.T) {
	cfg := fullConfig()
	netkvm := offCSUM | offTSO4 | offTSO6 | OffloadRSCExt
	tests := []struct {
		name         string
		cfg          Config
		value        uint64
		wantOffloads uint64
		rsc4, rsc6   bool
	}{
		{"NetKVM RSC", cfg, netkvm, offCSUM | offTSO4 | offTSO6, true, true},
		{"NetKVM RSC v4 only", cfg, offCSUM | offTSO4 | OffloadRSCExt, offCSUM | offTSO4, true, false},
		{"Linux rx-gro-hw off", cfg, offCSUM, offCSUM, false, false},
		{"Linux rx-gro-hw on", cfg, cfg.GuestOffloads, cfg.GuestOffloads, false, false},
		{"XDP attach", cfg, 0, 0, false, false},
		{"bit 61 alone", cfg, OffloadRSCExt, 0, false, false},
		{"bit 61 without RSC_EXT negotiated", func() Config { c := cfg; c.RSCExt = false; return c }(),
			netkvm, offCSUM | offTSO4 | offTSO6, false, false},
		{"USO negotiated", func() Config { c := cfg; c.GuestOffloads |= offUSO4 | offUSO6; return c }(),
			offCSUM | offUSO4 | offUSO6, offCSUM | offUSO4 | offUSO6, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.cfg, testMAC)
			ack, ev := s.Handle(ClassGuestOffloads, GuestOffloadsSet, le64(tc.value))
			require.Equal(t, AckOK, ack)
			require.Equal(t, Event{Changes: ChangeOffloads, Offloads: tc.wantOffloads, RSC4: tc.rsc4, RSC6: tc.rsc6}, ev)
			require.Equal(t, tc.wantOffloads, s.Offloads())
			v4, v6 := s.RSC()
			require.Equal(t, tc.rsc4, v4)
			require.Equal(t, tc.rsc6, v6)
			checkInvariants(t, s)
		})
	}
	// Offloads can be re-enabled after being cleared (XDP detach).
	s := New(cfg, testMAC)
	mustOK(t, s, ClassGuestOffloads, GuestOffloadsSet, le64(0))
	mustOK(t, s, ClassGuestOffloads, GuestOffloadsSet, le64(cfg.GuestOffloads))
	require.Equal(t, cfg.GuestOffloads, s.Offloads())
}

// TestRejected covers malformed, unknown, unsupported and unnegotiated
// commands: each is answered AckErr with a zero Event, the error names the
// reason, and the state is byte-identical afterwards.
func TestRejected(t *testing.T) {
	full := fullConfig()
	none := Config{MaxQueuePairs: 4, GuestOffloads: full.GuestOffloads, RSCExt: true}
	rxOnly := full
	rxOnly.CtrlRXExtra = false
	narrow := full
	narrow.GuestOffloads = offCSUM

	tests := []struct {
		name       string
		cfg        Config
		class, cmd uint8
		payload    []byte
		want       error
	}{
		// Framing / unknown.
		{"unknown class 7", full, 7, 0, nil, ErrUnknownCommand},
		{"unknown class 255", full, 255, 0, []byte{1}, ErrUnknownCommand},
		{"NOTF_COAL", full, ClassNotfCoal, 0, make([]byte, 8), ErrUnsupported},
		{"STATS", full, ClassStats, 0, nil, ErrUnsupported},
		// RX.
		{"RX unknown cmd 6", full, ClassRX, 6, []byte{1}, ErrUnknownCommand},
		{"RX unknown cmd 255", full, ClassRX, 255, []byte{1}, ErrUnknownCommand},
		{"RX empty", full, ClassRX, RXPromisc, nil, ErrLength},
		{"RX long", full, ClassRX, RXPromisc, []byte{1, 0}, ErrLength},
		{"RX without CTRL_RX", none, ClassRX, RXPromisc, []byte{1}, ErrNotNegotiated},
		{"ALLUNI without RX_EXTRA", rxOnly, ClassRX, RXAllUni, []byte{1}, ErrNotNegotiated},
		{"NOMULTI without RX_EXTRA", rxOnly, ClassRX, RXNoMulti, []byte{1}, ErrNotNegotiated},
		{"NOUNI without RX_EXTRA", rxOnly, ClassRX, RXNoUni, []byte{1}, ErrNotNegotiated},
		{"NOBCAST without RX_EXTRA", rxOnly, ClassRX, RXNoBcast, []byte{1}, ErrNotNegotiated},
		// MAC ADDR_SET.
		{"ADDR_SET short", full, ClassMAC, MACAddrSet, otherUC[:5], ErrLength},
		{"ADDR_SET long", full, ClassMAC, MACAddrSet, append(otherUC[:], 0), ErrLength},
		{"ADDR_SET empty", full, ClassMAC, MACAddrSet, nil, ErrLength},
		{"ADDR_SET without CTRL_MAC_ADDR", none, ClassMAC, MACAddrSet, otherUC[:], ErrNotNegotiated},
		{"MAC unknown cmd", full, ClassMAC, 2, otherUC[:], ErrUnknownCommand},
		// MAC TABLE_SET.
		{"TABLE_SET without CTRL_RX", none, ClassMAC, MACTableSet, macTable(nil, nil), ErrNotNegotiated},
		{"TABLE_SET empty", full, ClassMAC, MACTableSet, nil, ErrLength},
		{"TABLE_SET 3 bytes", full, ClassMAC, MACTableSet, []byte{0, 0, 0}, ErrLength},
		{"TABLE_SET no multicast count", full, ClassMAC, MACTableSet, macTable(nil, nil)[:4], ErrLength},
		{"TABLE_SET short multicast count", full, ClassMAC, MACTableSet, macTable(nil, nil)[:7], ErrLength},
		{"TABLE_SET unicast truncated", full, ClassMAC, MACTableSet, macTable([]MAC{uc1, uc1}, nil)[:4+6+3], ErrLength},
		{"TABLE_SET multicast truncated", full, ClassMAC, MACTableSet, func() []byte {
			b := macTable([]MAC{uc1}, []MAC{mc1, mc2})
			return b[:len(b)-1]
		}(), ErrLength},
		{"TABLE_SET trailing byte", full, ClassMAC, MACTableSet, append(macTable([]MAC{uc1}, []MAC{mc1}), 0), ErrLength},
		{"TABLE_SET multicast count too small", full, ClassMAC, MACTableSet, func() []byte {
			b := macTable(nil, []MAC{mc1, mc2})
			b[4] = 1
			return b
		}(), ErrLength},
		{"TABLE_SET unicast count 0xFFFFFFFF", full, ClassMAC, MACTableSet,
			[]byte{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0}, ErrLength},
		// 0x2AAAAAAB*6 wraps to 2 in 32 bits (QEMU would accept with overflow).
		{"TABLE_SET unicast count wrapping in 32 bits", full, ClassMAC, MACTableSet,
			[]byte{0xAB, 0xAA, 0xAA, 0x2A, 0, 0, 0, 0, 0, 0}, ErrLength},
		{"TABLE_SET multicast count 0xFFFFFFFF", full, ClassMAC, MACTableSet,
			[]byte{0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF}, ErrLength},
		{"TABLE_SET 65 unicast, multicast truncated", full, ClassMAC, MACTableSet, func() []byte {
			b := macTable(macs(65, 2), []MAC{mc1})
			return b[:len(b)-2]
		}(), ErrLength},
		// VLAN.
		{"VLAN id 4096", full, ClassVLAN, VLANAdd, le16(4096), ErrInvalid},
		{"VLAN id 0xFFFF del", full, ClassVLAN, VLANDel, le16(0xFFFF), ErrInvalid},
		{"VLAN short", full, ClassVLAN, VLANAdd, []byte{5}, ErrLength},
		{"VLAN long", full, ClassVLAN, VLANAdd, []byte{5, 0, 0}, ErrLength},
		{"VLAN empty", full, ClassVLAN, VLANDel, nil, ErrLength},
		{"VLAN unknown cmd", full, ClassVLAN, 2, le16(5), ErrUnknownCommand},
		{"VLAN without CTRL_VLAN", none, ClassVLAN, VLANAdd, le16(5), ErrNotNegotiated},
		// ANNOUNCE.
		{"ANNOUNCE payload", full, ClassAnnounce, AnnounceAck, []byte{0}, ErrLength},
		{"ANNOUNCE unknown cmd", full, ClassAnnounce, 1, nil, ErrUnknownCommand},
		{"ANNOUNCE without GUEST_ANNOUNCE", none, ClassAnnounce, AnnounceAck, nil, ErrNotNegotiated},
		// MQ.
		{"PAIRS 0", full, ClassMQ, MQVQPairsSet, le16(0), ErrInvalid},
		{"PAIRS max+1", full, ClassMQ, MQVQPairsSet, le16(5), ErrInvalid},
		{"PAIRS 0x8001", full, ClassMQ, MQVQPairsSet, le16(0x8001), ErrInvalid},
		{"PAIRS 0xFFFF", full, ClassMQ, MQVQPairsSet, le16(0xFFFF), ErrInvalid},
		{"PAIRS short", full, ClassMQ, MQVQPairsSet, []byte{2}, ErrLength},
		{"PAIRS long", full, ClassMQ, MQVQPairsSet, []byte{2, 0, 0, 0}, ErrLength},
		{"PAIRS without MQ", none, ClassMQ, MQVQPairsSet, le16(1), ErrNotNegotiated},
		{"RSS_CONFIG", full, ClassMQ, MQRSSConfig, make([]byte, 8+2+2+1+40), ErrUnsupported},
		{"RSS_CONFIG disable form", full, ClassMQ, MQRSSConfig, make([]byte, 8+2+2+1), ErrUnsupported},
		{"HASH_CONFIG", full, ClassMQ, MQHashConfig, make([]byte, 4+8+1), ErrUnsupported},
		{"MQ unknown cmd", full, ClassMQ, 3, le16(1), ErrUnknownCommand},
		// GUEST_OFFLOADS.
		{"OFFLOADS unnegotiated USO4", full, ClassGuestOffloads, GuestOffloadsSet, le64(offCSUM | offUSO4), ErrInvalid},
		{"OFFLOADS TSO4 not allowed", narrow, ClassGuestOffloads, GuestOffloadsSet,
			le64(offCSUM | offTSO4 | OffloadRSCExt), ErrInvalid},
		{"OFFLOADS non-offload feature bit", full, ClassGuestOffloads, GuestOffloadsSet, le64(1 << FeatureCtrlVQ), ErrInvalid},
		{"OFFLOADS bit 63", full, ClassGuestOffloads, GuestOffloadsSet, le64(1 << 63), ErrInvalid},
		{"OFFLOADS all ones", full, ClassGuestOffloads, GuestOffloadsSet, le64(^uint64(0)), ErrInvalid},
		{"OFFLOADS short", full, ClassGuestOffloads, GuestOffloadsSet, le64(offCSUM)[:7], ErrLength},
		{"OFFLOADS long", full, ClassGuestOffloads, GuestOffloadsSet, append(le64(offCSUM), 0), ErrLength},
		{"OFFLOADS empty", full, ClassGuestOffloads, GuestOffloadsSet, nil, ErrLength},
		{"OFFLOADS unknown cmd", full, ClassGuestOffloads, 1, le64(offCSUM), ErrUnknownCommand},
		{"OFFLOADS without CTRL_GUEST_OFFLOADS", none, ClassGuestOffloads, GuestOffloadsSet, le64(offCSUM), ErrNotNegotiated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := busyState(t, tc.cfg)
			snap := *s
			ack, ev := s.Handle(tc.class, tc.cmd, tc.payload)
			require.Equal(t, AckErr, ack)
			require.Equal(t, Event{}, ev)
			require.Equal(t, snap, *s, "state changed by a rejected command")

			ev, err := s.Apply(tc.class, tc.cmd, tc.payload)
			require.ErrorIs(t, err, tc.want)
			require.Equal(t, Event{}, ev)
			var ce *CommandError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, tc.class, ce.Class)
			require.Equal(t, tc.cmd, ce.Cmd)
			require.Contains(t, err.Error(), "virtio-net ctrl class")
			require.Equal(t, snap, *s)
		})
	}
}

// TestHandleDoesNotRetainPayload checks that Handle copies what it keeps:
// overwriting the payload afterwards changes nothing.
func TestHandleDoesNotRetainPayload(t *testing.T) {
	s := New(fullConfig(), testMAC)
	p := macTable([]MAC{uc1}, []MAC{mc1})
	mustOK(t, s, ClassMAC, MACTableSet, p)
	a := otherUC
	mustOK(t, s, ClassMAC, MACAddrSet, a[:])
	snap := *s
	for i := range p {
		p[i] = 0xEE
	}
	a[0] = 0xEE
	require.Equal(t, snap, *s)
}

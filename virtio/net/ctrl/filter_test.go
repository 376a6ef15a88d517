package ctrl

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// filterState builds a state with current MAC testMAC, unicast table
// {uc1}, multicast table {mc1}, VLAN 5 in the table, and the given modes.
func filterState(t testing.TB, cfg Config, m RxMode) *State {
	t.Helper()
	s := New(cfg, testMAC)
	if cfg.CtrlRX {
		mustOK(t, s, ClassMAC, MACTableSet, macTable([]MAC{uc1}, []MAC{mc1}))
	}
	if cfg.CtrlVLAN {
		mustOK(t, s, ClassVLAN, VLANAdd, le16(5))
	}
	set := func(cmd uint8, on bool) {
		if cfg.CtrlRX && (cmd < RXAllUni || cfg.CtrlRXExtra) {
			b := byte(0)
			if on {
				b = 1
			}
			mustOK(t, s, ClassRX, cmd, []byte{b})
		}
	}
	set(RXPromisc, m.Promisc)
	set(RXAllMulti, m.AllMulti)
	set(RXAllUni, m.AllUni)
	set(RXNoMulti, m.NoMulti)
	set(RXNoUni, m.NoUni)
	set(RXNoBcast, m.NoBcast)
	return s
}

func TestAcceptTable(t *testing.T) {
	full := fullConfig()
	bc := broadcastMAC
	tests := []struct {
		name  string
		cfg   Config
		mode  RxMode
		frame []byte
		want  bool
	}{
		// Promiscuous (the reset state) accepts everything, even garbage.
		{"promisc other unicast", full, RxMode{Promisc: true}, frame(otherUC, -1), true},
		{"promisc NOUNI still accepts", full, RxMode{Promisc: true, NoUni: true}, frame(testMAC, -1), true},
		{"promisc bad VLAN", full, RxMode{Promisc: true}, frame(testMAC, 6), true},
		{"promisc empty frame", full, RxMode{Promisc: true}, nil, true},
		{"promisc 3 bytes", full, RxMode{Promisc: true}, []byte{1, 2, 3}, true},
		// Unicast.
		{"own MAC", full, RxMode{}, frame(testMAC, -1), true},
		{"unicast table", full, RxMode{}, frame(uc1, -1), true},
		{"other unicast", full, RxMode{}, frame(otherUC, -1), false},
		{"ALLUNI", full, RxMode{AllUni: true}, frame(otherUC, -1), true},
		{"NOUNI own MAC", full, RxMode{NoUni: true}, frame(testMAC, -1), false},
		{"NOUNI beats ALLUNI", full, RxMode{NoUni: true, AllUni: true}, frame(otherUC, -1), false},
		{"NOUNI leaves multicast", full, RxMode{NoUni: true}, frame(mc1, -1), true},
		{"multicast table not used for unicast", full, RxMode{}, frame(MAC{0x00, 0x00, 0x5e, 0, 0, 1}, -1), false},
		// Multicast.
		{"multicast table", full, RxMode{}, frame(mc1, -1), true},
		{"other multicast", full, RxMode{}, frame(mc2, -1), false},
		{"ALLMULTI", full, RxMode{AllMulti: true}, frame(mc2, -1), true},
		{"NOMULTI", full, RxMode{NoMulti: true}, frame(mc1, -1), false},
		{"NOMULTI beats ALLMULTI", full, RxMode{NoMulti: true, AllMulti: true}, frame(mc2, -1), false},
		{"ALLUNI does not accept multicast", full, RxMode{AllUni: true}, frame(mc2, -1), false},
		{"unicast table not used for multicast", full, RxMode{}, frame(MAC{0x03, 0, 0, 0, 0, 1}, -1), false},
		// Broadcast.
		{"broadcast", full, RxMode{}, frame(bc, -1), true},
		{"NOBCAST", full, RxMode{NoBcast: true}, frame(bc, -1), false},
		{"NOBCAST beats ALLMULTI", full, RxMode{NoBcast: true, AllMulti: true}, frame(bc, -1), false},
		{"NOMULTI does not drop broadcast", full, RxMode{NoMulti: true}, frame(bc, -1), true},
		// VLAN filtering (CTRL_VLAN).
		{"VLAN in table", full, RxMode{}, frame(testMAC, 5), true},
		{"VLAN not in table", full, RxMode{}, frame(testMAC, 6), false},
		{"VLAN not in table, ALLUNI", full, RxMode{AllUni: true}, frame(otherUC, 6), false},
		{"VLAN not in table, broadcast", full, RxMode{}, frame(bc, 6), false},
		{"VLAN id uses 12 bits (PCP/DEI ignored)", full, RxMode{}, frame(testMAC, 0xE005), true},
		{"VLAN in table, wrong MAC", full, RxMode{}, frame(otherUC, 5), false},
		{"VLAN 0 priority tag not in table", full, RxMode{}, frame(testMAC, 0), false},
		{"untagged passes VLAN filter", full, RxMode{}, frame(testMAC, -1), true},
		{"QinQ TPID 0x88a8 not filtered", full, RxMode{}, func() []byte {
			f := frame(testMAC, 6)
			f[12], f[13] = 0x88, 0xa8
			return f
		}(), true},
		{"no CTRL_VLAN: tagged accepted", Config{CtrlRX: true, CtrlRXExtra: true}, RxMode{}, frame(testMAC, 6), true},
		// Short frames (not promiscuous).
		{"empty", full, RxMode{}, nil, false},
		{"13 bytes", full, RxMode{}, frame(testMAC, -1)[:13], false},
		{"14 bytes own MAC", full, RxMode{}, frame(testMAC, -1)[:14], true},
		{"tagged 14 bytes", full, RxMode{}, frame(testMAC, 5)[:14], false},
		{"tagged 15 bytes", full, RxMode{}, frame(testMAC, 5)[:15], false},
		{"tagged 16 bytes", full, RxMode{}, frame(testMAC, 5)[:16], true},
		{"tagged 14 bytes without CTRL_VLAN", Config{CtrlRX: true}, RxMode{}, frame(testMAC, 5)[:14], true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := filterState(t, tc.cfg, tc.mode)
			require.Equal(t, tc.mode, s.RxMode())
			require.Equal(t, tc.want, s.Accept(tc.frame))
		})
	}
}

func TestAcceptOverflow(t *testing.T) {
	s := New(fullConfig(), testMAC)
	mustOK(t, s, ClassRX, RXPromisc, []byte{0})
	mustOK(t, s, ClassMAC, MACTableSet, macTable(macs(65, 0x02), []MAC{mc1}))
	require.True(t, s.Accept(frame(otherUC, -1)), "unicast overflow accepts all unicast")
	require.True(t, s.Accept(frame(mc1, -1)))
	require.False(t, s.Accept(frame(mc2, -1)))
	mustOK(t, s, ClassRX, RXNoUni, []byte{1})
	require.False(t, s.Accept(frame(otherUC, -1)), "NOUNI beats overflow")

	s = New(fullConfig(), testMAC)
	mustOK(t, s, ClassRX, RXPromisc, []byte{0})
	mustOK(t, s, ClassMAC, MACTableSet, macTable([]MAC{uc1}, macs(64, 0x01)))
	require.True(t, s.Accept(frame(mc2, -1)), "multicast overflow accepts all multicast")
	require.True(t, s.Accept(frame(uc1, -1)))
	require.False(t, s.Accept(frame(otherUC, -1)))
	mustOK(t, s, ClassRX, RXNoMulti, []byte{1})
	require.False(t, s.Accept(frame(mc2, -1)), "NOMULTI beats overflow")
}

func TestAcceptAfterMACChange(t *testing.T) {
	s := filterState(t, fullConfig(), RxMode{})
	require.False(t, s.Accept(frame(otherUC, -1)))
	mustOK(t, s, ClassMAC, MACAddrSet, otherUC[:])
	require.True(t, s.Accept(frame(otherUC, -1)))
	require.False(t, s.Accept(frame(testMAC, -1)), "the old MAC is no longer ours")
	s.SetMAC(testMAC)
	require.True(t, s.Accept(frame(testMAC, -1)))
	mustOK(t, s, ClassVLAN, VLANDel, le16(5))
	require.False(t, s.Accept(frame(testMAC, 5)))
}

// refAccept is an independent statement of the filter as a decision on
// the destination class, used as an oracle over every mode combination.
func refAccept(m RxMode, uniOF, multiOF bool, vlanOK bool, dst MAC, own MAC, uni, multi []MAC) bool {
	if m.Promisc {
		return true
	}
	if !vlanOK {
		return false
	}
	in := func(list []MAC) bool {
		for _, x := range list {
			if x == dst {
				return true
			}
		}
		return false
	}
	isBcast := dst == MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	isGroup := dst[0]&1 == 1
	switch {
	case isBcast:
		return !m.NoBcast
	case isGroup:
		return !m.NoMulti && (m.AllMulti || multiOF || in(multi))
	default:
		return !m.NoUni && (m.AllUni || uniOF || dst == own || in(uni))
	}
}

func TestAcceptAllModeCombinations(t *testing.T) {
	dsts := []MAC{testMAC, uc1, otherUC, mc1, mc2, broadcastMAC}
	type tableCase struct {
		uni, multi     []MAC
		uniOF, multiOF bool
	}
	tables := []tableCase{
		{uni: []MAC{uc1}, multi: []MAC{mc1}},
		{uni: nil, multi: nil},
		{uni: macs(65, 0x02), multi: []MAC{mc1}, uniOF: true},
		{uni: []MAC{uc1}, multi: macs(64, 0x01), multiOF: true},
	}
	for bits := range 64 {
		m := RxMode{
			Promisc: bits&1 != 0, AllMulti: bits&2 != 0, AllUni: bits&4 != 0,
			NoMulti: bits&8 != 0, NoUni: bits&16 != 0, NoBcast: bits&32 != 0,
		}
		for ti, tbl := range tables {
			s := New(fullConfig(), testMAC)
			mustOK(t, s, ClassMAC, MACTableSet, macTable(tbl.uni, tbl.multi))
			mustOK(t, s, ClassVLAN, VLANAdd, le16(5))
			s2 := filterState(t, fullConfig(), m)
			s2.macs, s2.inUse, s2.firstMulti, s2.uniOverflow, s2.multiOverflow =
				s.macs, s.inUse, s.firstMulti, s.uniOverflow, s.multiOverflow
			uni, multi := tbl.uni, tbl.multi
			if tbl.uniOF {
				uni = nil
			}
			if tbl.multiOF {
				multi = nil
			}
			for _, dst := range dsts {
				for _, vid := range []int{-1, 5, 6} {
					want := refAccept(m, tbl.uniOF, tbl.multiOF, vid != 6, dst, testMAC, uni, multi)
					require.Equal(t, want, s2.Accept(frame(dst, vid)),
						fmt.Sprintf("mode %+v table %d dst %x vid %d", m, ti, dst, vid))
				}
			}
		}
	}
}

func TestAcceptAllocs(t *testing.T) {
	s := filterState(t, fullConfig(), RxMode{})
	mustOK(t, s, ClassMAC, MACTableSet, macTable(macs(32, 0x02), macs(32, 0x01)))
	f := frame(mc2, 5)
	allocs := testing.AllocsPerRun(1000, func() { s.Accept(f) })
	require.Zero(t, allocs)
}

func BenchmarkAccept(b *testing.B) {
	s := filterState(b, fullConfig(), RxMode{})
	// Worst case: full tables scanned, frame matches nothing.
	mustOK(b, s, ClassMAC, MACTableSet, macTable(macs(32, 0x02), macs(32, 0x01)))
	cases := []struct {
		name  string
		frame []byte
	}{
		{"own-mac", frame(testMAC, -1)},
		{"unicast-miss-full-table", frame(otherUC, -1)},
		{"multicast-miss-full-table", frame(mc2, -1)},
		{"vlan-tagged", frame(testMAC, 5)},
		{"broadcast", frame(broadcastMAC, -1)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Accept(c.frame)
			}
		})
	}
}

// TestAcceptPrefix checks that the first 16 bytes decide: a prefix gives
// the same answer as the whole frame.
func TestAcceptPrefix(t *testing.T) {
	s := filterState(t, fullConfig(), RxMode{})
	for _, f := range [][]byte{frame(testMAC, 5), frame(testMAC, 6), frame(uc1, -1), frame(mc2, -1), frame(broadcastMAC, 5)} {
		require.Equal(t, s.Accept(f), s.Accept(f[:16]))
	}
	snap := *s
	s.Accept(frame(testMAC, 5))
	require.Equal(t, snap, *s, "Accept does not modify the state")
}

package ctrl

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// fuzzConfig decodes the 3-byte configuration prefix of FuzzHandle inputs:
// feature flags, max queue pairs, and which guest offloads were negotiated
// (bit i selects the i-th bit of GuestOffloadMask).
func fuzzConfig(flags, pairs, offs byte) Config {
	cfg := Config{
		CtrlRX:            flags&1 != 0,
		CtrlRXExtra:       flags&2 != 0,
		CtrlVLAN:          flags&4 != 0,
		CtrlMACAddr:       flags&8 != 0,
		CtrlGuestOffloads: flags&16 != 0,
		GuestAnnounce:     flags&32 != 0,
		MQ:                flags&64 != 0,
		RSCExt:            flags&128 != 0,
		MaxQueuePairs:     uint16(pairs),
	}
	i := 0
	for bit := range 64 {
		if GuestOffloadMask&(1<<bit) != 0 {
			if offs&(1<<i) != 0 {
				cfg.GuestOffloads |= 1 << bit
			}
			i++
		}
	}
	return cfg
}

// Fuzz input records after the 3-byte configuration prefix, each
// [op, class, cmd, lenLo, lenHi] followed by len bytes of payload
// (truncated at the end of the input). op&3: 0 command, 1 RequestAnnounce,
// 2 Accept(payload), 3 Reset.
const (
	fuzzOpCommand  = 0
	fuzzOpAnnounce = 1
	fuzzOpAccept   = 2
	fuzzOpReset    = 3
)

// FuzzHandle runs arbitrary command sequences against one State. It checks
// that nothing panics, that a rejected command leaves the state
// byte-identical and returns a zero Event, that an accepted command
// changes only what its Event reports and needs its feature, that the
// invariants hold, and that Accept agrees with the reference filter.
func FuzzHandle(f *testing.F) {
	f.Add([]byte{0xFF, 4, 0x1F, fuzzOpCommand, ClassRX, RXPromisc, 1, 0, 0})
	f.Add([]byte{0x00, 0, 0, fuzzOpCommand, ClassMAC, MACTableSet, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xFF, 2, 0x07, fuzzOpAnnounce, 0, 0, 0, 0, fuzzOpCommand, ClassAnnounce, AnnounceAck, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		cfg := fuzzConfig(data[0], data[1], data[2])
		s := New(cfg, testMAC)
		data = data[3:]
		for len(data) >= 5 {
			op, class, cmd := data[0], data[1], data[2]
			n := int(binary.LittleEndian.Uint16(data[3:5]))
			data = data[5:]
			n = min(n, len(data))
			payload := data[:n]
			data = data[n:]
			switch op & 3 {
			case fuzzOpCommand:
				fuzzCommand(t, s, class, cmd, payload)
			case fuzzOpAnnounce:
				if s.RequestAnnounce() != s.Config().GuestAnnounce {
					t.Fatal("RequestAnnounce disagrees with GuestAnnounce")
				}
			case fuzzOpAccept:
				if got, want := s.Accept(payload), refAcceptFrame(s, payload); got != want {
					t.Fatalf("Accept(%x) = %v, reference %v", payload, got, want)
				}
			case fuzzOpReset:
				s.Reset()
				if *s != *New(cfg, testMAC) {
					t.Fatal("Reset differs from New")
				}
			}
			checkInvariants(t, s)
		}
	})
}

func fuzzCommand(t *testing.T, s *State, class, cmd uint8, payload []byte) {
	snap := *s
	ack, ev := s.Handle(class, cmd, payload)
	if ack == AckErr {
		if ev != (Event{}) || *s != snap {
			t.Fatalf("rejected command (class %d cmd %d payload %x) changed the state or reported %+v", class, cmd, payload, ev)
		}
		if _, err := s.Apply(class, cmd, payload); err == nil || *s != snap {
			t.Fatalf("Apply disagrees with Handle: %v", err)
		}
		return
	}
	require.Equal(t, AckOK, ack)
	after := *s
	// Build what the state must be: the snapshot with only the reported
	// part taken from after.
	want := snap
	cfg := snap.cfg
	switch ev.Changes {
	case ChangeRxMode:
		require.Equal(t, ClassRX, class)
		require.True(t, cfg.CtrlRX)
		require.True(t, cmd <= RXPromisc+1 || cfg.CtrlRXExtra)
		require.Len(t, payload, 1)
		want.rx = after.rx
	case ChangeMACTable:
		require.Equal(t, ClassMAC, class)
		require.Equal(t, MACTableSet, cmd)
		require.True(t, cfg.CtrlRX)
		nu := uint64(binary.LittleEndian.Uint32(payload))
		nm := uint64(binary.LittleEndian.Uint32(payload[4+6*nu:]))
		require.Equal(t, uint64(len(payload)), 8+6*(nu+nm))
		want.macs, want.inUse, want.firstMulti = after.macs, after.inUse, after.firstMulti
		want.uniOverflow, want.multiOverflow = after.uniOverflow, after.multiOverflow
		require.Equal(t, nu > MACTableEntries, after.uniOverflow)
		if !after.uniOverflow {
			require.Equal(t, int(nu), after.firstMulti)
		}
		if !after.multiOverflow {
			require.Equal(t, int(nm), after.inUse-after.firstMulti)
		}
	case ChangeMAC:
		require.True(t, cfg.CtrlMACAddr)
		require.Equal(t, MAC(payload), ev.MAC)
		require.Equal(t, ev.MAC, after.mac)
		want.mac = after.mac
	case ChangeVLAN:
		require.True(t, cfg.CtrlVLAN)
		vid := binary.LittleEndian.Uint16(payload)
		require.Equal(t, cmd == VLANAdd, s.VLANAllowed(vid))
		want.vlans = after.vlans
	case ChangeAnnounceAck:
		require.True(t, snap.announce)
		require.False(t, after.announce)
		want.announce = false
	case ChangeQueuePairs:
		require.True(t, cfg.MQ)
		require.Equal(t, ev.QueuePairs, after.pairs)
		want.pairs = after.pairs
	case ChangeOffloads:
		require.True(t, cfg.CtrlGuestOffloads)
		require.Equal(t, binary.LittleEndian.Uint64(payload)&^OffloadRSCExt, ev.Offloads)
		require.Equal(t, ev.Offloads, after.offloads)
		v4, v6 := s.RSC()
		require.Equal(t, ev.RSC4, v4)
		require.Equal(t, ev.RSC6, v6)
		want.offloads, want.rscRequest = after.offloads, after.rscRequest
	default:
		t.Fatalf("accepted command reported changes %v", ev.Changes)
	}
	if ev.Changes != ChangeMAC {
		require.Equal(t, MAC{}, ev.MAC)
	}
	if want != after {
		t.Fatalf("command (class %d cmd %d) changed more than it reported (%v)", class, cmd, ev.Changes)
	}
}

// refAcceptFrame applies refAccept to a raw frame, reading the table and
// modes through the exported getters.
func refAcceptFrame(s *State, f []byte) bool {
	m := s.RxMode()
	if m.Promisc {
		return true
	}
	if len(f) < 14 {
		return false
	}
	vlanOK := true
	if s.VLANFiltering() && f[12] == 0x81 && f[13] == 0x00 {
		vlanOK = len(f) >= 16 && s.VLANAllowed(binary.BigEndian.Uint16(f[14:])&0xFFF)
	}
	tbl := s.MACTable()
	return refAccept(m, tbl.UnicastOverflow, tbl.MulticastOverflow, vlanOK, MAC(f), s.MAC(), tbl.Unicast, tbl.Multicast)
}

// FuzzAccept sets up receive modes, a MAC table (from arbitrary bytes; an
// invalid one is simply rejected) and one VLAN, then checks Accept against
// the reference filter for an arbitrary frame.
func FuzzAccept(f *testing.F) {
	f.Add(uint8(0), true, uint16(5), macTable([]MAC{uc1}, []MAC{mc1}), frame(uc1, 5))
	f.Add(uint8(0x3E), false, uint16(0), []byte{}, frame(broadcastMAC, -1))
	f.Add(uint8(0x08), true, uint16(0xE005), macTable(macs(65, 2), nil), frame(mc2, -1)[:15])
	f.Fuzz(func(t *testing.T, mode uint8, vlanFilter bool, vid uint16, table, fr []byte) {
		cfg := fullConfig()
		cfg.CtrlVLAN = vlanFilter
		s := New(cfg, testMAC)
		for cmd := RXPromisc; cmd <= RXNoBcast; cmd++ {
			mustOK(t, s, ClassRX, cmd, []byte{mode >> cmd & 1})
		}
		s.Handle(ClassMAC, MACTableSet, table)
		if vlanFilter {
			mustOK(t, s, ClassVLAN, VLANAdd, le16(vid&0xFFF))
		}
		require.Equal(t, refAcceptFrame(s, fr), s.Accept(fr))
	})
}

// FuzzParseCommand splits arbitrary bytes into descriptor-like pieces and
// checks that ParseCommand and ParseBytes agree, then handles the result.
func FuzzParseCommand(f *testing.F) {
	f.Add(cmdBytes(ClassMAC, MACTableSet, macTable([]MAC{uc1}, []MAC{mc1})), []byte{2, 10, 10})
	f.Add([]byte{ClassRX}, []byte{1})
	f.Add(cmdBytes(ClassGuestOffloads, GuestOffloadsSet, le64(offCSUM|OffloadRSCExt)), []byte{1, 1, 3, 0, 5})
	f.Fuzz(func(t *testing.T, raw, splits []byte) {
		sizes := make([]int, len(splits))
		for i, b := range splits {
			sizes[i] = int(b)
		}
		src := newChunkSource(append([]byte{}, raw...), sizes...)
		class, cmd, payload, err := ParseCommand(src, make([]byte, 0, 16))
		bclass, bcmd, bpayload, berr := ParseBytes(raw)
		require.Equal(t, err == nil, berr == nil)
		if err != nil {
			require.Nil(t, payload)
			return
		}
		require.Equal(t, bclass, class)
		require.Equal(t, bcmd, cmd)
		require.Equal(t, bpayload, payload)
		require.Zero(t, src.Available())
		s := New(fullConfig(), testMAC)
		fuzzCommand(t, s, class, cmd, payload)
	})
}

package tap

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGuestOffloadMapping(t *testing.T) {
	all := GuestOffloads{CSUM: true, TSO4: true, TSO6: true, ECN: true, UFO: true, USO4: true, USO6: true}
	cases := []struct {
		name string
		g    GuestOffloads
		want Offload
	}{
		{"none", GuestOffloads{}, 0},
		{"no csum gates everything", GuestOffloads{TSO4: true, TSO6: true, ECN: true, UFO: true, USO4: true, USO6: true}, 0},
		{"csum", GuestOffloads{CSUM: true}, OffloadCSUM},
		{"tso4", GuestOffloads{CSUM: true, TSO4: true}, OffloadCSUM | OffloadTSO4},
		{"tso6", GuestOffloads{CSUM: true, TSO6: true}, OffloadCSUM | OffloadTSO6},
		{"ecn without tso", GuestOffloads{CSUM: true, ECN: true}, OffloadCSUM},
		{"ecn with tso6", GuestOffloads{CSUM: true, TSO6: true, ECN: true}, OffloadCSUM | OffloadTSO6 | OffloadTSOECN},
		{"ufo", GuestOffloads{CSUM: true, UFO: true}, OffloadCSUM | OffloadUFO},
		{"uso", GuestOffloads{CSUM: true, USO4: true, USO6: true}, OffloadCSUM | OffloadUSO4 | OffloadUSO6},
		{"all", all, 0x7f},
		{"netkvm rsc", GuestOffloads{CSUM: true, TSO4: true, TSO6: true}, OffloadCSUM | OffloadTSO4 | OffloadTSO6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, c.g.Offload(), "got %s", c.g.Offload())
		})
	}
}

func TestOffloadFromBits(t *testing.T) {
	bit := func(b ...uint) uint64 {
		var v uint64
		for _, x := range b {
			v |= 1 << x
		}
		return v
	}
	// QEMU's default modern feature word offers every guest offload.
	require.Equal(t, Offload(0x7f), OffloadFromBits(0x01C00101_30BFFFA7))
	require.Equal(t, Offload(0), OffloadFromBits(bit(7, 8, 9, 10, 54, 55)))
	// NetKVM's GUEST_OFFLOADS_SET argument: CSUM|TSO4|TSO6|RSC_EXT(61); bit 61 has no tap flag.
	require.Equal(t, OffloadCSUM|OffloadTSO4|OffloadTSO6, OffloadFromBits(bit(1, 7, 8, 61)))
	require.Equal(t, OffloadCSUM|OffloadUSO4, OffloadFromBits(bit(1, 54)))
	require.Equal(t, OffloadCSUM|OffloadUDPTunnelGSO|OffloadUDPTunnelGSOCSUM, OffloadFromBits(bit(1, 46, 47)))
	require.Equal(t, GuestOffloads{CSUM: true, ECN: true, UFO: true, USO6: true}, GuestOffloadsFromBits(bit(1, 9, 10, 55)))
}

func TestOffloadString(t *testing.T) {
	require.Equal(t, "0", Offload(0).String())
	require.Equal(t, "csum|tso4|tso6", (OffloadCSUM | OffloadTSO4 | OffloadTSO6).String())
	require.Equal(t, "csum|0x1000", (OffloadCSUM | 0x1000).String())
}

// FuzzOffloadFromBits checks the QEMU invariants for every offload word.
func FuzzOffloadFromBits(f *testing.F) {
	f.Add(uint64(0))
	f.Add(uint64(0x01C00101_30BFFFA7))
	f.Add(uint64(1<<1 | 1<<7 | 1<<8 | 1<<61))
	f.Add(uint64(1<<9 | 1<<1))
	f.Fuzz(func(t *testing.T, bits uint64) {
		o := OffloadFromBits(bits)
		if bits&(1<<FeatureGuestCSUM) == 0 && o != 0 {
			t.Fatalf("%#x: offload %s without GUEST_CSUM", bits, o)
		}
		if o&OffloadTSOECN != 0 && o&(OffloadTSO4|OffloadTSO6) == 0 {
			t.Fatalf("%#x: TSO_ECN without TSO", bits)
		}
		if o&^offloadKnown != 0 {
			t.Fatalf("%#x: unknown flags %s", bits, o)
		}
		if o != 0 && o&OffloadCSUM == 0 {
			t.Fatalf("%#x: %s lacks CSUM", bits, o)
		}
	})
}

func TestParseFDs(t *testing.T) {
	fds, err := ParseFDs("3")
	require.NoError(t, err)
	require.Equal(t, []int{3}, fds)
	fds, err = ParseFDs("3:4:5:6")
	require.NoError(t, err)
	require.Equal(t, []int{3, 4, 5, 6}, fds)
	for _, bad := range []string{"", ":", "3:", "a", "-1", "3::4", "99999999999", "0x3", " 3"} {
		_, err := ParseFDs(bad)
		require.Error(t, err, bad)
	}
}

func FuzzParseFDs(f *testing.F) {
	for _, s := range []string{"3", "3:4:5:6", "", ":", "-1", "2147483648", "1:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fds, err := ParseFDs(s)
		if err != nil {
			return
		}
		if len(fds) == 0 || len(fds) > MaxQueues {
			t.Fatalf("%q: %d fds", s, len(fds))
		}
		for _, fd := range fds {
			if fd < 0 {
				t.Fatalf("%q: negative fd", s)
			}
		}
	})
}

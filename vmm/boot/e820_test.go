package boot

import (
	"errors"
	"testing"

	"github.com/rscvm/rscvm/vmm/memory"
	"github.com/stretchr/testify/require"
)

func TestBuildE820(t *testing.T) {
	cases := []struct {
		name string
		ram  uint64
		want []E820Entry
	}{
		{"128MiB", 128 * miB, []E820Entry{
			{0, 0x9FC00, E820RAM},
			{0x9FC00, 0x400, E820Reserved},
			{0xE0000, 0x20000, E820Reserved},
			{0x100000, 128*miB - 0x100000, E820RAM},
		}},
		{"3GiB", 3 * giB, []E820Entry{
			{0, 0x9FC00, E820RAM},
			{0x9FC00, 0x400, E820Reserved},
			{0xE0000, 0x20000, E820Reserved},
			{0x100000, 0xC0000000 - 0x100000, E820RAM},
		}},
		{"4GiB", 4 * giB, []E820Entry{
			{0, 0x9FC00, E820RAM},
			{0x9FC00, 0x400, E820Reserved},
			{0xE0000, 0x20000, E820Reserved},
			{0x100000, 0xC0000000 - 0x100000, E820RAM},
			{0x100000000, giB, E820RAM},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := guestMem(t, c.ram)
			require.Equal(t, c.want, BuildE820(m.Regions()))
		})
	}
}

func TestBuildE820ClipsHolesAndMerges(t *testing.T) {
	// RAM wrongly covering the PCI hole and split in adjacent regions: the
	// hole is left out and adjacent usable pieces merge.
	m, err := memory.New(
		memory.Region{GPA: 0, Host: make([]byte, 0x200000)},
		memory.Region{GPA: 0x200000, Host: make([]byte, 0x100000)},
	)
	require.NoError(t, err)
	require.Equal(t, []E820Entry{
		{0, 0x9FC00, E820RAM},
		{0x9FC00, 0x400, E820Reserved},
		{0xE0000, 0x20000, E820Reserved},
		{0x100000, 0x200000, E820RAM},
	}, BuildE820(m.Regions()))

	hole := BuildE820([]memory.Region{{GPA: 0xBFF00000, Host: make([]byte, 0x200000)}})
	require.Equal(t, []E820Entry{{0xBFF00000, 0x100000, E820RAM}}, hole)
	require.Equal(t, "usable", E820RAM.String())
	require.Equal(t, "type 9", E820Type(9).String())
}

func TestPlaceInitrd(t *testing.T) {
	e820 := []E820Entry{{0, 0x9FC00, E820RAM}, {0x100000, 0x7F00000, E820RAM}}
	a, err := placeInitrd(e820, 0x1800, 0x200000, fourGiB)
	require.NoError(t, err)
	require.Equal(t, uint64(0x8000000-0x2000), a)
	a, err = placeInitrd(e820, 0x1000, 0x200000, 0x4000001)
	require.NoError(t, err)
	require.Equal(t, uint64(0x4000000-0x1000), a, "the limit is exclusive and the address page-aligned")
	_, err = placeInitrd(e820, 0x8000000, 0x200000, fourGiB)
	require.Error(t, err)
	_, err = placeInitrd(e820, 0x1000, 0x7FFF000+1, fourGiB)
	require.Error(t, err, "must not go below the floor")
}

func TestGuestWriteAcrossRegions(t *testing.T) {
	m, err := memory.New(
		memory.Region{GPA: 0, Host: make([]byte, 16)},
		memory.Region{GPA: 16, Host: make([]byte, 16)},
		memory.Region{GPA: 64, Host: make([]byte, 16)},
	)
	require.NoError(t, err)
	require.NoError(t, guestWrite(m, 10, []byte("0123456789abcdef")))
	require.Equal(t, []byte("012345"), readGuest(t, m, 10, 6))
	require.Equal(t, []byte("6789abcdef"), readGuest(t, m, 16, 10))
	// A write running into a gap fails and writes nothing.
	err = guestWrite(m, 30, []byte("xyz")) // [30,32) exists, [32,33) does not
	require.True(t, errors.Is(err, memory.ErrOutOfRange))
	b := readGuest(t, m, 30, 2)
	require.Equal(t, []byte{0, 0}, b, "nothing written")
	require.NoError(t, guestZero(m, 12, 8))
	require.Equal(t, make([]byte, 4), readGuest(t, m, 12, 4), "zeroed")
	require.Equal(t, make([]byte, 4), readGuest(t, m, 16, 4), "zeroed")
	require.Equal(t, []byte("a"), readGuest(t, m, 20, 1))
	require.Error(t, guestZero(m, ^uint64(0)-1, 4))
}

package memory

import (
	"errors"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSliceBounds(t *testing.T) {
	m, err := New(Region{GPA: 0x1000, Host: make([]byte, 0x1000)}, Region{GPA: 0x10000, Host: make([]byte, 0x100)})
	require.NoError(t, err)
	require.Equal(t, uint64(0x1100), m.Size())
	cases := []struct {
		gpa, n uint64
		ok     bool
	}{
		{0x1000, 0x1000, true},
		{0x1fff, 1, true},
		{0x1fff, 2, false}, // crosses the end of the first region
		{0x0fff, 1, false},
		{0x3000, 0, false}, // between regions
		{0x10000, 0x100, true},
		{0x10080, 0x81, false},
		{math.MaxUint64, 2, false}, // wraps
		{0x1000, math.MaxUint64, false},
	}
	for _, c := range cases {
		s, err := m.Slice(c.gpa, c.n)
		if c.ok {
			require.NoError(t, err, "%#x+%#x", c.gpa, c.n)
			require.Len(t, s, int(c.n))
			require.Equal(t, int(c.n), cap(s), "slice must not reach past the access")
		} else {
			require.True(t, errors.Is(err, ErrOutOfRange), "%#x+%#x", c.gpa, c.n)
		}
	}
}

func TestAccessors(t *testing.T) {
	m, err := New(Region{GPA: 0, Host: make([]byte, 64)})
	require.NoError(t, err)
	require.NoError(t, m.PutU64(8, 0x1122334455667788))
	v, err := m.U32(8)
	require.NoError(t, err)
	require.Equal(t, uint32(0x55667788), v)
	w, err := m.U16(14)
	require.NoError(t, err)
	require.Equal(t, uint16(0x1122), w)
	require.NoError(t, m.Write(60, []byte{1, 2, 3, 4}))
	require.Error(t, m.Write(61, []byte{1, 2, 3, 4}))
	_, err = m.U64(57)
	require.Error(t, err)
}

func TestNewRejectsOverlap(t *testing.T) {
	_, err := New(Region{GPA: 0, Host: make([]byte, 16)}, Region{GPA: 8, Host: make([]byte, 16)})
	require.Error(t, err)
	_, err = New(Region{GPA: 0})
	require.Error(t, err)
}

func BenchmarkSlice(b *testing.B) {
	m, _ := New(Region{GPA: 0, Host: make([]byte, 1<<20)})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := m.Slice(uint64(i&0xffff), 1500); err != nil {
			b.Fatal(err)
		}
	}
}

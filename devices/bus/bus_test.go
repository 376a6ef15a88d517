package bus

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

type recorder struct {
	lastOff   uint64
	lastWrite []byte
}

func (r *recorder) Read(off uint64, data []byte) {
	r.lastOff = off
	for i := range data {
		data[i] = byte(off) + byte(i)
	}
}
func (r *recorder) Write(off uint64, data []byte) {
	r.lastOff = off
	r.lastWrite = append([]byte(nil), data...)
}

func TestRegisterDispatch(t *testing.T) {
	b := New("pio")
	a, c := &recorder{}, &recorder{}
	require.NoError(t, b.Register(0x3f8, 8, a))
	require.NoError(t, b.Register(0xcf8, 8, c))
	require.ErrorIs(t, b.Register(0x3fc, 8, &recorder{}), ErrOverlap)
	require.ErrorIs(t, b.Register(0x3f0, 9, &recorder{}), ErrOverlap)
	require.Error(t, b.Register(0x10, 0, &recorder{}))
	require.Error(t, b.Register(^uint64(0), 2, &recorder{}))

	buf := make([]byte, 2)
	require.True(t, b.Read(0x3fa, buf))
	require.Equal(t, uint64(2), a.lastOff)
	require.Equal(t, []byte{2, 3}, buf)
	require.False(t, b.Read(0x3ff, buf), "access straddling the end of a range")
	require.False(t, b.Read(0x100, buf))
	require.True(t, b.Write(0xcfc, []byte{9, 9, 9, 9}))
	require.Equal(t, uint64(4), c.lastOff)
}

func TestMoveUnregister(t *testing.T) {
	b := New("mmio")
	d := &recorder{}
	require.NoError(t, b.Register(0x1000, 0x100, d))
	require.NoError(t, b.Register(0x3000, 0x100, &recorder{}))
	require.True(t, errors.Is(b.Move(0x1000, 0x2f80), ErrOverlap))
	require.True(t, b.Read(0x1000, make([]byte, 4)), "failed move keeps the old mapping")
	require.NoError(t, b.Move(0x1000, 0x2000))
	require.False(t, b.Read(0x1000, make([]byte, 4)))
	require.True(t, b.Read(0x20fc, make([]byte, 4)))
	require.NoError(t, b.Unregister(0x2000))
	require.False(t, b.Read(0x2000, make([]byte, 1)))
	require.Error(t, b.Unregister(0x2000))
}

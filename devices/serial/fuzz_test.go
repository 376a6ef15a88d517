package serial

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzRegisters drives the UART with arbitrary guest register accesses and
// host input, checking that the interrupt line always matches IIR and the RX
// FIFO stays within bounds.
func FuzzRegisters(f *testing.F) {
	f.Add([]byte{0x13, 0x80, 0x10, 0x01, 0x11, 0x00, 0x13, 0x03, 0x12, 0xC7, 0x11, 0x0F, 0x10, 'a', 0x02, 0x05, 0x00})
	f.Add([]byte{0x14, 0x1A, 0x06, 0x10, 'x', 0x10, 'y', 0x05, 0x00, 0x11, 0x0F, 0x02, 0x20, 'i', 0x14, 0x00})
	f.Add([]byte{0x12, 0x01, 0x20, 'h', 0x20, 'e', 0x11, 0x01, 0x02, 0x00, 0x00, 0x12, 0x06, 0x12, 0x00})
	f.Fuzz(func(t *testing.T, ops []byte) {
		l := &line{}
		u := New(Config{IRQ: l, TxBuffer: 8})
		defer u.Close()
		for i := 0; i+1 < len(ops); i += 2 {
			op, v := ops[i], ops[i+1]
			reg := uint64(op & 0x0F) // 8..15 exercise out-of-range offsets
			switch op >> 4 {
			case 0:
				in(u, reg)
			case 1:
				out(u, reg, v)
			case 2:
				u.Receive([]byte{v, v + 1, v + 2}[:1+int(v%3)])
			default:
				b := make([]byte, 1+int(op>>4)%4)
				u.Read(reg, b)
				u.Write(reg, b)
			}
			u.mu.Lock()
			require.LessOrEqual(t, u.rxLen, u.rxCap())
			require.GreaterOrEqual(t, u.rxLen, 0)
			require.Equal(t, u.iirLocked()&iirNoInt == 0, u.level)
			require.Zero(t, u.ier&^ierMask)
			u.mu.Unlock()
		}
		require.Equal(t, u.level, l.high(), "line level matches the last SetLevel")
	})
}

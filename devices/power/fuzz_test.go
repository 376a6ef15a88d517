package power

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzPMAccess drives the PM block, reset register and i8042 with arbitrary
// accesses (4 bytes per op: kind, offset, width, value) and checks register
// invariants.
func FuzzPMAccess(f *testing.F) {
	f.Add([]byte{1, 2, 2, 0xFF, 0, 0, 1, 0x00, 1, 5, 1, 0x20, 2, 0, 0, 0x06, 3, 0, 0, 0xFE})
	f.Add([]byte{1, 4, 2, 0x01, 1, 5, 0, 0x34, 0, 0, 2, 0, 0, 8, 2, 0, 4, 1, 0, 0, 1, 0, 1, 0x01})
	f.Add([]byte{3, 0, 0, 0xD1, 3, 1, 0, 0xDE, 1, 3, 0, 0xFF, 0, 6, 1, 0, 1, 7, 3, 0xAA})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var offs, resets int
		var clk time.Duration
		sci := &line{}
		pm := NewPM(PMConfig{Clock: func() time.Duration { return clk }, SCI: sci, PowerOff: func() { offs++ }})
		rc := NewResetControl(func() { resets++ })
		kbd := NewI8042(func() { resets++ })
		for len(ops) >= 4 {
			kind, off, width, v := ops[0], uint64(ops[1]%PMSize), 1+int(ops[2]%4), ops[3]
			ops = ops[4:]
			data := []byte{v, v ^ 0x20, v, v}[:width]
			switch kind % 6 {
			case 0:
				pm.Read(off, data)
			case 1:
				pm.Write(off, data)
			case 2:
				rc.Write(off%2, data)
				rc.Read(0, data)
			case 3:
				if off%2 == 0 {
					kbd.CommandPort().Write(0, data)
				} else {
					kbd.DataPort().Write(0, data)
				}
				kbd.CommandPort().Read(0, data)
			case 4:
				pm.PressPowerButton()
			case 5:
				clk += time.Duration(v) * time.Second * 7
			}
			pm.mu.Lock()
			require.Zero(t, pm.sts&^stsAll)
			require.Zero(t, pm.en&^enAll)
			require.Zero(t, pm.cnt&^(cntBMRLD|cntTyp))
			require.Equal(t, pm.sts&pm.en&sciMask != 0, pm.sciLevel)
			pm.mu.Unlock()
			require.Zero(t, kbd.Status()&^uint8(0x1C))
		}
		require.GreaterOrEqual(t, offs+resets, 0)
	})
}

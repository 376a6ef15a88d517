package power

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rscvm/rscvm/devices/bus"
	"github.com/stretchr/testify/require"
)

type fakeClock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *fakeClock) now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.d
}

func (c *fakeClock) set(d time.Duration) {
	c.mu.Lock()
	c.d = d
	c.mu.Unlock()
}

type line struct {
	levels []bool
	err    error
}

func (l *line) SetLevel(high bool) error {
	l.levels = append(l.levels, high)
	return l.err
}

type pmEnv struct {
	t     *testing.T
	pio   *bus.Bus
	pm    *PM
	clock *fakeClock
	sci   *line
	offs  int
}

func newPMEnv(t *testing.T) *pmEnv {
	e := &pmEnv{t: t, pio: bus.New("pio"), clock: &fakeClock{}, sci: &line{}}
	e.pm = NewPM(PMConfig{Clock: e.clock.now, SCI: e.sci, PowerOff: func() { e.offs++ }})
	require.NoError(t, e.pm.Attach(e.pio))
	return e
}

func (e *pmEnv) in(port uint64, n int) uint32 {
	b := make([]byte, 4)
	require.True(e.t, e.pio.Read(port, b[:n]))
	return binary.LittleEndian.Uint32(b)
}

func (e *pmEnv) out(port uint64, n int, v uint32) {
	require.True(e.t, e.pio.Write(port, binary.LittleEndian.AppendUint32(nil, v)[:n]))
}

func TestPMPowerOff(t *testing.T) {
	e := newPMEnv(t)
	require.Equal(t, uint32(1), e.in(PM1aCntBlk, 2), "SCI_EN reads 1: always in ACPI mode")
	e.out(PM1aCntBlk, 2, 0x2000) // S5: SLP_TYP 0 | SLP_EN
	require.Equal(t, 1, e.offs)
	require.Equal(t, uint32(1), e.in(PM1aCntBlk, 2), "SLP_EN is write-only")

	// Linux writes SLP_TYP first, then SLP_TYP|SLP_EN.
	e.out(PM1aCntBlk, 2, 0x0000)
	require.Equal(t, 1, e.offs)
	e.out(PM1aCntBlk, 2, 0x2001)
	require.Equal(t, 2, e.offs)

	// Byte writes: the high byte carries SLP_EN and SLP_TYP.
	e.out(PM1aCntBlk+1, 1, 0x20)
	require.Equal(t, 3, e.offs)

	// Other sleep types are not supported and are ignored, but SLP_TYP and
	// BM_RLD read back; GBL_RLS does not.
	e.out(PM1aCntBlk, 2, 0x1406) // SLP_TYP 5, GBL_RLS, BM_RLD
	require.Equal(t, uint32(0x1403), e.in(PM1aCntBlk, 2))
	e.out(PM1aCntBlk, 2, 0x2000|0x1400)
	require.Equal(t, 3, e.offs)
	// A low-byte write keeps SLP_TYP; SLP_EN in the high byte then uses it.
	e.out(PM1aCntBlk, 1, 0x00)
	require.Equal(t, uint32(0x1401), e.in(PM1aCntBlk, 2))
	e.out(PM1aCntBlk, 4, 0x00002000) // 4-byte access spanning into the gap
	require.Equal(t, 4, e.offs)

	// Without a callback nothing breaks.
	pm := NewPM(PMConfig{})
	pm.Write(pm1Cnt, []byte{0x00, 0x20})
}

func TestPMStatusEnableSCI(t *testing.T) {
	e := newPMEnv(t)
	require.Equal(t, uint32(0), e.in(PM1aEvtBlk, 4))
	e.out(PM1aEvtBlk+2, 2, 0xFFFF)
	require.Equal(t, uint32(enAll), e.in(PM1aEvtBlk+2, 2), "only defined enable bits stick")
	require.Equal(t, []bool(nil), e.sci.levels)

	e.pm.PressPowerButton()
	require.Equal(t, []bool{true}, e.sci.levels, "PWRBTN_EN set: SCI")
	require.Equal(t, uint32(StsPowerButton), e.in(PM1aEvtBlk, 2))
	require.Equal(t, uint32(enAll)<<16|StsPowerButton, e.in(PM1aEvtBlk, 4))

	e.out(PM1aEvtBlk, 2, 0) // writing 0 clears nothing
	require.Equal(t, uint32(StsPowerButton), e.in(PM1aEvtBlk, 2))
	e.out(PM1aEvtBlk, 2, StsGlobal) // other bits: nothing
	require.Equal(t, uint32(StsPowerButton), e.in(PM1aEvtBlk, 2))
	e.out(PM1aEvtBlk+1, 1, StsPowerButton>>8) // W1C by byte
	require.Equal(t, uint32(0), e.in(PM1aEvtBlk, 2))
	require.Equal(t, []bool{true, false}, e.sci.levels)

	// Disabled events set status without an SCI.
	e.out(PM1aEvtBlk+2, 2, 0)
	e.pm.PressPowerButton()
	require.Equal(t, []bool{true, false}, e.sci.levels)
	e.out(PM1aEvtBlk+2, 2, StsPowerButton) // enabling a pending event raises it
	require.Equal(t, []bool{true, false, true}, e.sci.levels)
	e.out(PM1aEvtBlk, 4, uint32(StsPowerButton)<<16|StsPowerButton) // clear + keep enabled
	require.Equal(t, []bool{true, false, true, false}, e.sci.levels)

	// SetLevel errors are logged, not fatal.
	e.sci.err = errors.New("no irqchip")
	e.pm.PressPowerButton()
	require.Equal(t, uint32(StsPowerButton), e.in(PM1aEvtBlk, 2))

	require.Equal(t, uint32(0xFFFF), e.in(PMBase+6, 2), "gap reads all-ones")
	e.out(PMBase+6, 2, 0)
	e.out(PMTmrBlk, 4, 0) // timer is read-only
}

func TestPMTimer(t *testing.T) {
	e := newPMEnv(t)
	require.Equal(t, uint32(0), e.in(PMTmrBlk, 4))
	e.clock.set(time.Second)
	require.Equal(t, uint32(PMTimerHz), e.in(PMTmrBlk, 4))
	e.clock.set(time.Second + time.Microsecond)
	require.Equal(t, uint32(PMTimerHz+3), e.in(PMTmrBlk, 4), "3.58 ticks per microsecond, truncated")
	e.clock.set(1500 * time.Millisecond)
	v := e.in(PMTmrBlk, 4)
	require.Equal(t, uint32(5369317), v)
	require.Equal(t, v&0xFFFF, e.in(PMTmrBlk, 2))
	require.Equal(t, v>>16&0xFF, e.in(PMTmrBlk+2, 1))

	// 32-bit wrap after 2^32 ticks (~1200 s); no overflow for long uptimes.
	wrap := time.Duration((uint64(1)<<32)*uint64(time.Second)/PMTimerHz) + 1
	e.clock.set(wrap + time.Second)
	got := e.in(PMTmrBlk, 4)
	require.InDelta(t, float64(PMTimerHz), float64(got), 2)
	e.clock.set(100 * 365 * 24 * time.Hour)
	want := uint64(100*365*24*3600) * PMTimerHz
	require.Equal(t, uint32(want), e.in(PMTmrBlk, 4))
	e.clock.set(-time.Second)
	require.Equal(t, uint32(0), e.in(PMTmrBlk, 4))

	// TMR_STS is set when bit 31 toggles, and is write-1-to-clear.
	e2 := newPMEnv(t)
	require.Zero(t, e2.in(PM1aEvtBlk, 2)&StsTimer)
	half := time.Duration((uint64(1)<<31)*uint64(time.Second)/PMTimerHz) + 1
	e2.clock.set(half + time.Millisecond)
	require.NotZero(t, e2.in(PM1aEvtBlk, 2)&StsTimer)
	e2.out(PM1aEvtBlk, 2, StsTimer)
	require.Zero(t, e2.in(PM1aEvtBlk, 2)&StsTimer)

	// The default clock runs.
	pm := NewPM(PMConfig{})
	a := pm.Timer()
	time.Sleep(2 * time.Millisecond)
	require.Greater(t, pm.Timer()-a, uint32(PMTimerHz/1000))
}

func TestPMAttachConflict(t *testing.T) {
	pio := bus.New("pio")
	require.NoError(t, NewPM(PMConfig{}).Attach(pio))
	require.Error(t, NewPM(PMConfig{}).Attach(pio))
}

func TestResetControl(t *testing.T) {
	resets := 0
	r := NewResetControl(func() { resets++ })
	pio := bus.New("pio")
	require.NoError(t, r.Attach(pio))
	b := []byte{0}
	require.True(t, pio.Read(ResetControlPort, b))
	require.Equal(t, uint8(0), b[0])
	require.True(t, pio.Write(ResetControlPort, []byte{0x02}))
	require.Equal(t, 0, resets, "selecting hard reset does not reset")
	require.True(t, pio.Read(ResetControlPort, b))
	require.Equal(t, uint8(0x02), b[0])
	require.True(t, pio.Write(ResetControlPort, []byte{0x06})) // FADT RESET_VALUE
	require.Equal(t, 1, resets)
	require.True(t, pio.Write(ResetControlPort, []byte{0x0E}))
	require.Equal(t, 2, resets)
	require.True(t, pio.Read(ResetControlPort, b))
	require.Equal(t, uint8(0x0A), b[0], "reset bit self-clears")
	require.True(t, pio.Write(ResetControlPort, []byte{0x04}))
	require.Equal(t, 3, resets)

	b2 := []byte{0, 0}
	r.Read(0, b2)
	require.Equal(t, []byte{0xFF, 0xFF}, b2)
	r.Write(0, []byte{0x06, 0x06})
	r.Write(1, []byte{0x06})
	require.Equal(t, 3, resets, "only byte writes at 0xCF9 decode")
	NewResetControl(nil).Write(0, []byte{0x06})
	require.Error(t, NewResetControl(nil).Attach(pio))
}

func TestI8042(t *testing.T) {
	resets := 0
	k := NewI8042(func() { resets++ })
	pio := bus.New("pio")
	require.NoError(t, k.Attach(pio))
	b := []byte{0}
	require.True(t, pio.Read(I8042CommandPort, b))
	require.Equal(t, uint8(0x1C), b[0], "no data, system flag, keyboard unlocked")

	// Linux's i8042 probe: flush (no OBF), read CTR (no answer), ignored.
	require.True(t, pio.Write(I8042CommandPort, []byte{0x20}))
	require.True(t, pio.Read(I8042CommandPort, b))
	require.Zero(t, b[0]&kbdStatusOBF)
	require.True(t, pio.Read(I8042DataPort, b))
	require.True(t, pio.Write(I8042DataPort, []byte{0xF4}))
	require.True(t, pio.Read(I8042CommandPort, b))
	require.Equal(t, uint8(0x14), b[0], "last write was data")
	for _, c := range []byte{0xAA, 0xAB, 0xAD, 0xAE, 0xA7, 0xFF, 0x60, 0x00} {
		require.True(t, pio.Write(I8042CommandPort, []byte{c}))
	}
	require.Equal(t, 0, resets, "unknown and harmless commands are ignored")

	// Reboot via the keyboard controller (Linux reboot=k): wait for IBF
	// clear, then pulse reset.
	require.True(t, pio.Read(I8042CommandPort, b))
	require.Zero(t, b[0]&kbdStatusIBF)
	require.True(t, pio.Write(I8042CommandPort, []byte{0xFE}))
	require.Equal(t, 1, resets)
	require.True(t, pio.Write(I8042CommandPort, []byte{0xF0}))
	require.Equal(t, 2, resets)

	// Output port write: A20 on (bit 0 set) is harmless, bit 0 clear resets.
	require.True(t, pio.Write(I8042CommandPort, []byte{0xD1}))
	require.True(t, pio.Write(I8042DataPort, []byte{0xDF}))
	require.Equal(t, 2, resets)
	require.True(t, pio.Write(I8042CommandPort, []byte{0xD1}))
	require.True(t, pio.Write(I8042DataPort, []byte{0xDE}))
	require.Equal(t, 3, resets)
	require.True(t, pio.Write(I8042DataPort, []byte{0xDE}))
	require.Equal(t, 3, resets, "data without a pending 0xD1 is ignored")

	b2 := []byte{0, 0}
	k.CommandPort().Read(0, b2)
	require.Equal(t, []byte{0xFF, 0xFF}, b2)
	k.CommandPort().Write(0, []byte{0xFE, 0xFE})
	k.DataPort().Write(0, []byte{0, 0})
	require.Equal(t, 3, resets)
	NewI8042(nil).CommandPort().Write(0, []byte{0xFE})

	pio2 := bus.New("pio")
	require.NoError(t, pio2.Register(I8042CommandPort, 1, k.CommandPort()))
	require.Error(t, k.Attach(pio2))
	require.False(t, pio2.Read(I8042DataPort, b), "failed attach rolls back")
}

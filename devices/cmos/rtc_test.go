package cmos

import (
	"sync"
	"testing"
	"time"

	"github.com/rscvm/rscvm/devices/bus"
	"github.com/stretchr/testify/require"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func setup(t *testing.T) (*bus.Bus, *clock, *RTC) {
	c := &clock{t: time.Date(2026, 2, 15, 13, 45, 59, 500_000_000, time.UTC)} // a Sunday
	r := New(c.now)
	pio := bus.New("pio")
	require.NoError(t, r.Attach(pio))
	return pio, c, r
}

func rd(t *testing.T, pio *bus.Bus, idx uint8) uint8 {
	require.True(t, pio.Write(Base, []byte{idx | 0x80})) // NMI-disable bit as Linux sets it
	b := []byte{0}
	require.True(t, pio.Read(Base+1, b))
	return b[0]
}

func wr(t *testing.T, pio *bus.Bus, idx, v uint8) {
	require.True(t, pio.Write(Base, []byte{idx}))
	require.True(t, pio.Write(Base+1, []byte{v}))
}

func TestReadHostTimeBCD(t *testing.T) {
	pio, _, _ := setup(t)
	require.Equal(t, uint8(0x59), rd(t, pio, RegSeconds))
	require.Equal(t, uint8(0x45), rd(t, pio, RegMinutes))
	require.Equal(t, uint8(0x13), rd(t, pio, RegHours))
	require.Equal(t, uint8(0x01), rd(t, pio, RegDayOfWeek), "Sunday = 1")
	require.Equal(t, uint8(0x15), rd(t, pio, RegDayOfMonth))
	require.Equal(t, uint8(0x02), rd(t, pio, RegMonth))
	require.Equal(t, uint8(0x26), rd(t, pio, RegYear))
	require.Equal(t, uint8(0x20), rd(t, pio, RegCentury))
	require.Equal(t, uint8(0x26), rd(t, pio, RegA), "UIP clear half a second before the update")
	require.Equal(t, uint8(0x02), rd(t, pio, RegB), "24-hour BCD")
	require.Equal(t, uint8(0x00), rd(t, pio, RegC))
	require.Equal(t, uint8(0x80), rd(t, pio, RegD), "valid RAM and time")
}

func TestModesAndUIP(t *testing.T) {
	pio, c, _ := setup(t)
	wr(t, pio, RegB, regB24Hour|regBBinary)
	require.Equal(t, uint8(59), rd(t, pio, RegSeconds))
	require.Equal(t, uint8(13), rd(t, pio, RegHours))
	require.Equal(t, uint8(26), rd(t, pio, RegYear))
	wr(t, pio, RegB, 0) // 12-hour BCD
	require.Equal(t, uint8(0x81), rd(t, pio, RegHours), "1 PM")
	c.add(-13 * time.Hour) // 00:45
	require.Equal(t, uint8(0x12), rd(t, pio, RegHours), "12 AM")
	c.add(12 * time.Hour) // 12:45
	require.Equal(t, uint8(0x92), rd(t, pio, RegHours), "12 PM")
	wr(t, pio, RegB, regB24Hour)

	c.add(499_800 * time.Microsecond) // 244 µs window before the update
	require.Equal(t, uint8(0xA6), rd(t, pio, RegA))
	wr(t, pio, RegA, 0xA6)
	c.add(time.Millisecond)
	require.Equal(t, uint8(0x26), rd(t, pio, RegA), "UIP is read-only")
}

func TestSetTime(t *testing.T) {
	pio, c, r := setup(t)
	// hwclock --systohc: SET, write the fields, clear SET.
	wr(t, pio, RegB, regBSet|regB24Hour)
	c.add(5 * time.Second)
	require.Equal(t, uint8(0x59), rd(t, pio, RegSeconds), "frozen while SET")
	for _, f := range [][2]uint8{{RegCentury, 0x20}, {RegYear, 0x30}, {RegMonth, 0x07}, {RegDayOfMonth, 0x04},
		{RegHours, 0x09}, {RegMinutes, 0x00}, {RegSeconds, 0x00}, {RegDayOfWeek, 0x07}} {
		wr(t, pio, f[0], f[1])
	}
	c.add(time.Hour)
	require.Equal(t, time.Date(2030, 7, 4, 9, 0, 0, 0, time.UTC), r.GuestTime())
	wr(t, pio, RegB, regB24Hour)
	c.add(10 * time.Second)
	require.Equal(t, time.Date(2030, 7, 4, 9, 0, 10, 0, time.UTC), r.GuestTime())
	require.Equal(t, uint8(0x05), rd(t, pio, RegDayOfWeek), "Thursday, derived from the date")

	// Direct writes without SET adjust the running clock.
	wr(t, pio, RegMinutes, 0x30)
	require.Equal(t, time.Date(2030, 7, 4, 9, 30, 10, 0, time.UTC), r.GuestTime())
	wr(t, pio, RegB, 0)
	wr(t, pio, RegHours, 0x82) // 2 PM in 12-hour mode
	require.Equal(t, 14, r.GuestTime().Hour())
	wr(t, pio, RegHours, 0x12) // 12 AM
	require.Equal(t, 0, r.GuestTime().Hour())
	wr(t, pio, RegB, regBBinary|regB24Hour)
	wr(t, pio, RegYear, 99)
	require.Equal(t, 2099, r.GuestTime().Year())

	// Garbage is normalised, never fatal.
	for _, idx := range []uint8{RegSeconds, RegMinutes, RegHours, RegDayOfMonth, RegMonth, RegYear, RegCentury} {
		wr(t, pio, idx, 0xFF)
	}
	_ = r.GuestTime()
}

func TestRAMAndPorts(t *testing.T) {
	pio, _, r := setup(t)
	for idx := uint8(0x0E); idx < 0x80; idx++ {
		if idx == RegCentury {
			continue
		}
		wr(t, pio, idx, idx^0x5A)
	}
	for idx := uint8(0x0E); idx < 0x80; idx++ {
		if idx == RegCentury {
			continue
		}
		require.Equal(t, idx^0x5A, rd(t, pio, idx))
	}
	wr(t, pio, 0x01, 0x30) // alarm registers are plain RAM
	require.Equal(t, uint8(0x30), rd(t, pio, 0x01))
	wr(t, pio, RegC, 0xFF)
	wr(t, pio, RegD, 0x00)
	require.Equal(t, uint8(0), rd(t, pio, RegC))
	require.Equal(t, uint8(0x80), rd(t, pio, RegD))
	require.True(t, pio.Write(Base, []byte{0x80 | 0x40}))
	b := []byte{0}
	require.True(t, pio.Read(Base+1, b))
	require.Equal(t, uint8(0x40^0x5A), b[0], "index bit 7 is the NMI mask")
	require.True(t, pio.Read(Base, b))
	require.Equal(t, uint8(0xFF), b[0], "index port is write-only")
	b2 := []byte{0, 0}
	r.Read(0, b2)
	require.Equal(t, []byte{0xFF, 0xFF}, b2)
	r.Write(0, []byte{1, 2})
	require.Error(t, New(nil).Attach(pio))
	require.WithinDuration(t, time.Now(), New(nil).GuestTime(), time.Minute)
}

func FuzzRTC(f *testing.F) {
	f.Add([]byte{0, 0x0B, 1, 0x82, 0, 0x09, 1, 0x99, 0, 0x0B, 1, 0x02, 0, 0x00, 2, 0})
	f.Add([]byte{0, 0x0B, 1, 0x04, 0, 0x08, 1, 0xFF, 0, 0x32, 1, 0x00, 2, 0, 0, 0x04, 2, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := New(func() time.Time { return time.Date(2026, 2, 15, 0, 0, 0, 0, time.UTC) })
		for len(ops) >= 2 {
			port, v := ops[0]%3, ops[1]
			ops = ops[2:]
			switch port {
			case 0:
				r.Write(0, []byte{v})
			case 1:
				r.Write(1, []byte{v})
			case 2:
				b := []byte{0}
				r.Read(1, b)
			}
		}
		for idx := 0; idx < 128; idx++ {
			r.Write(0, []byte{uint8(idx)})
			r.Read(1, []byte{0})
		}
	})
}

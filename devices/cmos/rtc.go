// Package cmos emulates the PC's MC146818 real-time clock and its CMOS RAM
// at I/O ports 0x70 (index) and 0x71 (data), enough for a guest to read the
// host's date and time (UTC) and to set its own clock.
//
// The clock runs at host time plus an offset the guest changes by writing
// the time registers. Time registers follow register B's binary/BCD and
// 12/24-hour modes; the SET bit freezes the clock while the guest writes it.
// The RTC raises no interrupts (IRQ 8): periodic, alarm and update-ended
// interrupts are not emulated, and register C always reads 0.
package cmos

import (
	"fmt"
	"sync"
	"time"

	"github.com/rscvm/rscvm/devices/bus"
)

// I/O location.
const (
	Base = 0x70 // index port; Base+1 is the data port
	Size = 2
)

// Register indices.
const (
	RegSeconds     = 0x00
	RegMinutes     = 0x02
	RegHours       = 0x04
	RegDayOfWeek   = 0x06
	RegDayOfMonth  = 0x07
	RegMonth       = 0x08
	RegYear        = 0x09
	RegA           = 0x0A
	RegB           = 0x0B
	RegC           = 0x0C
	RegD           = 0x0D
	RegCentury     = 0x32 // FADT CENTURY
	numRegs        = 128
	regAUIP        = 0x80
	regBSet        = 0x80
	regBBinary     = 0x04
	regB24Hour     = 0x02
	regDValidRAM   = 0x80
	hourPM         = 0x80
	defaultRegA    = 0x26 // 32.768 kHz time base, 1.024 kHz periodic rate
	defaultRegB    = regB24Hour
	updateDuration = 244 * time.Microsecond // UIP is set this long before each update
)

// RTC is the MC146818 RTC plus CMOS RAM; a bus.Device over ports 0x70-0x71.
type RTC struct {
	now func() time.Time

	mu     sync.Mutex
	index  uint8
	ram    [numRegs]byte
	offset time.Duration // guest time - host time
	frozen time.Time     // guest time while register B's SET bit is on
}

// New creates the RTC. now is the host clock (nil: time.Now).
func New(now func() time.Time) *RTC {
	if now == nil {
		now = time.Now
	}
	r := &RTC{now: now}
	r.ram[RegA] = defaultRegA
	r.ram[RegB] = defaultRegB
	return r
}

// Attach registers the RTC on pio at Base.
func (r *RTC) Attach(pio *bus.Bus) error {
	if err := pio.Register(Base, Size, r); err != nil {
		return fmt.Errorf("cmos: attach: %w", err)
	}
	return nil
}

// GuestTime returns the time the guest's clock shows (UTC).
func (r *RTC) GuestTime() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.guestTimeLocked()
}

func (r *RTC) guestTimeLocked() time.Time {
	if r.ram[RegB]&regBSet != 0 {
		return r.frozen
	}
	return r.now().Add(r.offset).UTC()
}

// Read implements bus.Device.
func (r *RTC) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0xFF
	}
	if offset != 1 || len(data) != 1 {
		return // the index port is write-only
	}
	r.mu.Lock()
	data[0] = r.readLocked(r.index)
	r.mu.Unlock()
}

// Write implements bus.Device.
func (r *RTC) Write(offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch offset {
	case 0:
		r.index = data[0] & 0x7F // bit 7 masks NMIs; not emulated
	case 1:
		r.writeLocked(r.index, data[0])
	}
}

func (r *RTC) binary() bool { return r.ram[RegB]&regBBinary != 0 }

func (r *RTC) encode(v int) uint8 {
	if r.binary() {
		return uint8(v)
	}
	return uint8(v/10)<<4 | uint8(v%10)
}

func (r *RTC) decode(v uint8) int {
	if r.binary() {
		return int(v)
	}
	return int(v>>4)*10 + int(v&0x0F)
}

func (r *RTC) readLocked(idx uint8) uint8 {
	t := r.guestTimeLocked()
	switch idx {
	case RegSeconds:
		return r.encode(t.Second())
	case RegMinutes:
		return r.encode(t.Minute())
	case RegHours:
		h := t.Hour()
		if r.ram[RegB]&regB24Hour != 0 {
			return r.encode(h)
		}
		pm := uint8(0)
		if h >= 12 {
			pm = hourPM
		}
		h %= 12
		if h == 0 {
			h = 12
		}
		return r.encode(h) | pm
	case RegDayOfWeek:
		return r.encode(int(t.Weekday()) + 1)
	case RegDayOfMonth:
		return r.encode(t.Day())
	case RegMonth:
		return r.encode(int(t.Month()))
	case RegYear:
		return r.encode(t.Year() % 100)
	case RegCentury:
		return r.encode(t.Year() / 100 % 100)
	case RegA:
		v := r.ram[RegA]
		if r.ram[RegB]&regBSet == 0 && t.Nanosecond() >= int(time.Second-updateDuration) {
			v |= regAUIP
		}
		return v
	case RegC:
		return 0
	case RegD:
		return regDValidRAM
	}
	return r.ram[idx]
}

func (r *RTC) writeLocked(idx uint8, v uint8) {
	switch idx {
	case RegSeconds, RegMinutes, RegHours, RegDayOfMonth, RegMonth, RegYear, RegCentury:
		r.setFieldLocked(idx, v)
	case RegDayOfWeek:
		// Derived from the date.
	case RegA:
		r.ram[RegA] = v &^ regAUIP
	case RegB:
		wasSet := r.ram[RegB]&regBSet != 0
		if !wasSet && v&regBSet != 0 {
			r.frozen = r.guestTimeLocked()
		}
		r.ram[RegB] = v
		if wasSet && v&regBSet == 0 {
			r.offset = r.frozen.Sub(r.now())
		}
	case RegC, RegD:
		// Read-only.
	default:
		r.ram[idx] = v
	}
}

// setFieldLocked replaces one date/time field of the guest clock. Out-of-range
// values are normalised the way time.Date does.
func (r *RTC) setFieldLocked(idx uint8, v uint8) {
	t := r.guestTimeLocked()
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	nsec := t.Nanosecond()
	switch idx {
	case RegSeconds:
		sec = r.decode(v & 0x7F)
		nsec = 0 // a new second starts now
	case RegMinutes:
		minute = r.decode(v & 0x7F)
	case RegHours:
		if r.ram[RegB]&regB24Hour != 0 {
			hour = r.decode(v & 0x7F)
		} else {
			hour = r.decode(v&0x7F) % 12
			if v&hourPM != 0 {
				hour += 12
			}
		}
	case RegDayOfMonth:
		day = r.decode(v)
	case RegMonth:
		month = time.Month(r.decode(v))
	case RegYear:
		year = year/100*100 + r.decode(v)%100
	case RegCentury:
		year = r.decode(v)*100 + year%100
	}
	nt := time.Date(year, month, day, hour, minute, sec, nsec, time.UTC)
	if r.ram[RegB]&regBSet != 0 {
		r.frozen = nt
		return
	}
	r.offset = nt.Sub(r.now())
}

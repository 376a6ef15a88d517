// Package power holds the devices a guest uses to power off and reset the
// machine: the ACPI PM1a event/control blocks and PM timer at the I/O
// addresses of QEMU's pc machine (0x600), the PIIX reset control register at
// 0xCF9, and an i8042 keyboard controller stub at 0x60/0x64 whose pulse-reset
// command resets the machine.
//
// Devices report power-off and reset through callbacks supplied by the VMM;
// callbacks run on the vCPU goroutine that made the access, after the device
// released its locks.
package power

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rscvm/rscvm/devices/bus"
)

// InterruptLine is an interrupt output (the ACPI SCI).
type InterruptLine interface {
	SetLevel(high bool) error
}

// ACPI PM block layout (FADT PM1a_EVT_BLK, PM1a_CNT_BLK, PM_TMR_BLK).
const (
	PMBase       = 0x600
	PMSize       = 0x0C // 0x600-0x60B: event block, control block, (gap), timer
	PM1aEvtBlk   = PMBase + pm1Sts
	PM1aCntBlk   = PMBase + pm1Cnt
	PMTmrBlk     = PMBase + pmTmr
	PM1EvtLen    = 4 // FADT PM1_EVT_LEN
	PM1CntLen    = 2 // FADT PM1_CNT_LEN
	PMTmrLen     = 4 // FADT PM_TMR_LEN
	PMTimerHz    = 3579545
	SCIInterrupt = 9 // FADT SCI_INT
)

// Register offsets within the block.
const (
	pm1Sts = 0x0
	pm1En  = 0x2
	pm1Cnt = 0x4
	pmTmr  = 0x8
)

// PM1 status/enable bits.
const (
	StsTimer       = 1 << 0
	StsBusMaster   = 1 << 4
	StsGlobal      = 1 << 5
	StsPowerButton = 1 << 8
	StsSleepButton = 1 << 9
	StsRTC         = 1 << 10
	StsPCIeWake    = 1 << 14
	StsWake        = 1 << 15

	stsAll   = StsTimer | StsBusMaster | StsGlobal | StsPowerButton | StsSleepButton | StsRTC | StsPCIeWake | StsWake
	enAll    = StsTimer | StsGlobal | StsPowerButton | StsSleepButton | StsRTC | StsPCIeWake // PCIEXP_WAKE_DIS
	sciMask  = StsGlobal | StsPowerButton | StsSleepButton | StsRTC                          // TMR_STS is only sampled, it raises no SCI
	cntSCIEn = 1 << 0
	cntBMRLD = 1 << 1
	cntGBL   = 1 << 2
	cntTyp   = 7 << 10
	cntSlpEn = 1 << 13
)

// PMConfig configures the ACPI PM block.
type PMConfig struct {
	// Clock is a monotonic clock the PM timer counts from (default: time
	// since NewPM).
	Clock func() time.Duration
	// PowerOff is called when the guest enters S5 (SLP_EN with SLP_TYP 0).
	PowerOff func()
	// SCI is the SCI interrupt (IRQ 9, level). Nil leaves it unconnected.
	SCI InterruptLine
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// PM is the ACPI PM1a event and control blocks plus the PM timer, as one
// bus.Device over PMSize ports at PMBase. The machine is always in ACPI
// mode: SCI_EN reads as 1 (the FADT has no SMI command port).
type PM struct {
	clock    func() time.Duration
	powerOff func()
	sci      InterruptLine
	log      *slog.Logger

	mu       sync.Mutex
	sts, en  uint16
	cnt      uint16 // BM_RLD and SLP_TYP as last written
	tmrSeen  uint64 // tick count when TMR_STS was last evaluated
	sciLevel bool
}

// NewPM creates the PM block.
func NewPM(cfg PMConfig) *PM {
	p := &PM{clock: cfg.Clock, powerOff: cfg.PowerOff, sci: cfg.SCI, log: cfg.Logger}
	if p.clock == nil {
		start := time.Now()
		p.clock = func() time.Duration { return time.Since(start) }
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	return p
}

// Attach registers the block on pio at PMBase.
func (p *PM) Attach(pio *bus.Bus) error {
	if err := pio.Register(PMBase, PMSize, p); err != nil {
		return fmt.Errorf("power: attach ACPI PM block: %w", err)
	}
	return nil
}

// ticks converts the clock to PM timer ticks without overflow.
func (p *PM) ticks() uint64 {
	d := p.clock()
	if d < 0 {
		d = 0
	}
	ns := uint64(d)
	return ns/1e9*PMTimerHz + ns%1e9*PMTimerHz/1e9
}

// Timer returns the current 32-bit PM timer value.
func (p *PM) Timer() uint32 { return uint32(p.ticks()) }

// updateTimerStsLocked sets TMR_STS if the timer's bit 31 changed since the
// last look. No SCI is raised for it asynchronously.
func (p *PM) updateTimerStsLocked() {
	now := p.ticks()
	if now>>31 != p.tmrSeen>>31 {
		p.sts |= StsTimer
	}
	p.tmrSeen = now
}

// PressPowerButton sets PWRBTN_STS and raises the SCI if the guest enabled
// the power button event.
func (p *PM) PressPowerButton() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts |= StsPowerButton
	p.updateSCILocked()
}

func (p *PM) updateSCILocked() {
	high := p.sts&p.en&sciMask != 0
	if high == p.sciLevel {
		return
	}
	p.sciLevel = high
	if p.sci == nil {
		return
	}
	if err := p.sci.SetLevel(high); err != nil {
		p.log.Warn("power: setting SCI level failed", "high", high, "err", err)
	}
}

func (p *PM) reg16Locked(off uint64) uint16 {
	switch off {
	case pm1Sts:
		p.updateTimerStsLocked()
		return p.sts
	case pm1En:
		return p.en
	case pm1Cnt:
		return p.cnt | cntSCIEn
	}
	return 0
}

// Read implements bus.Device. Any width from 1 to 4 bytes at any offset is
// decoded byte by byte.
func (p *PM) Read(offset uint64, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var tmr uint32
	tmrRead := false
	var regs [3]uint16
	var have [3]bool
	for i := range data {
		a := offset + uint64(i)
		switch {
		case a < pmTmr-2: // 0..5: three 16-bit registers
			r := a / 2
			if !have[r] {
				regs[r] = p.reg16Locked(r * 2)
				have[r] = true
			}
			data[i] = uint8(regs[r] >> (8 * (a % 2)))
		case a >= pmTmr && a < pmTmr+4:
			if !tmrRead {
				tmr = p.Timer()
				tmrRead = true
			}
			data[i] = uint8(tmr >> (8 * (a - pmTmr)))
		default:
			data[i] = 0xFF
		}
	}
}

// Write implements bus.Device.
func (p *PM) Write(offset uint64, data []byte) {
	var off bool
	p.mu.Lock()
	for r := uint64(0); r < 3; r++ {
		var val, mask uint16
		for i, b := range data {
			a := offset + uint64(i)
			if a/2 == r && a < pmTmr-2 {
				val |= uint16(b) << (8 * (a % 2))
				mask |= 0xFF << (8 * (a % 2))
			}
		}
		if mask == 0 {
			continue
		}
		switch r * 2 {
		case pm1Sts:
			p.updateTimerStsLocked()
			p.sts &^= val & mask & stsAll
		case pm1En:
			p.en = p.en&^mask | val&mask&enAll
		case pm1Cnt:
			p.cnt = p.cnt&^mask | val&mask&(cntBMRLD|cntTyp)
			if val&mask&cntSlpEn != 0 {
				typ := (p.cnt & cntTyp) >> 10
				if typ == 0 {
					off = true
				} else {
					p.log.Info("power: guest requested an unsupported sleep state; ignored", "slp_typ", typ)
				}
			}
		}
	}
	p.updateSCILocked()
	p.mu.Unlock()
	if off && p.powerOff != nil {
		p.powerOff()
	}
}

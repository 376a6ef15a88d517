package power

import (
	"fmt"
	"sync"

	"github.com/rscvm/rscvm/devices/bus"
)

// ResetControlPort is the PIIX/ICH reset control register (FADT RESET_REG,
// value 0x06).
const ResetControlPort = 0xCF9

// Reset control register bits.
const (
	rcrSysReset  = 1 << 1 // hard (system) reset rather than CPU-only
	rcrResetCPU  = 1 << 2 // writing 1 starts the reset
	rcrFullReset = 1 << 3
)

// ResetControl is the reset control register: a 1-byte bus.Device. Writing
// a value with bit 2 set resets the machine. Port 0xCF9 lies inside the PCI
// configuration address register's range, so when pci.ConfigIO is attached
// at 0xCF8 pass the ResetControl to pci.NewConfigIO instead of Attach.
type ResetControl struct {
	reset func()
	mu    sync.Mutex
	val   uint8
}

// NewResetControl creates the register; reset is called on a reset write.
func NewResetControl(reset func()) *ResetControl {
	return &ResetControl{reset: reset}
}

// Attach registers the register on pio at ResetControlPort.
func (r *ResetControl) Attach(pio *bus.Bus) error {
	if err := pio.Register(ResetControlPort, 1, r); err != nil {
		return fmt.Errorf("power: attach reset control: %w", err)
	}
	return nil
}

// Read implements bus.Device: the system/full reset selection bits read
// back; the reset bit is self-clearing.
func (r *ResetControl) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0xFF
	}
	if offset != 0 || len(data) != 1 {
		return
	}
	r.mu.Lock()
	data[0] = r.val
	r.mu.Unlock()
}

// Write implements bus.Device.
func (r *ResetControl) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) != 1 {
		return
	}
	r.mu.Lock()
	r.val = data[0] & (rcrSysReset | rcrFullReset)
	r.mu.Unlock()
	if data[0]&rcrResetCPU != 0 && r.reset != nil {
		r.reset()
	}
}

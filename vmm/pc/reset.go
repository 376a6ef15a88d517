package pc

import "github.com/rscvm/rscvm/vmm"

// attachResetDevices registers the i8042 (its 0xFE command pulses the reset
// line). Filled in with package power's devices.
func attachResetDevices(p *PC, m *vmm.Machine) error { return nil }

// resetControl is the PIIX reset control register at 0xCF9.
func resetControl(m *vmm.Machine) interface {
	Read(uint64, []byte)
	Write(uint64, []byte)
} {
	return nil
}

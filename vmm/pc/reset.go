package pc

import (
	"time"

	"github.com/rscvm/rscvm/devices/cmos"
	"github.com/rscvm/rscvm/devices/power"
	"github.com/rscvm/rscvm/vmm"
)

// attachLegacyDevices registers the i8042 (its pulse-reset command ends the
// run like a reset), the CMOS RTC, and returns the PIIX reset control
// register (port 0xCF9), which sits inside the PCI configuration ports and is
// therefore reached through pci.ConfigIO.
func attachLegacyDevices(m *vmm.Machine) (*power.ResetControl, error) {
	if err := power.NewI8042(m.Reset).Attach(m.PIO()); err != nil {
		return nil, err
	}
	if err := cmos.New(func() time.Time { return time.Now().UTC() }).Attach(m.PIO()); err != nil {
		return nil, err
	}
	return power.NewResetControl(m.Reset), nil
}

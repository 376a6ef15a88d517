package virtiopci

import (
	"os"

	"github.com/rscvm/rscvm/vmm"
	"github.com/rscvm/rscvm/vmm/kvm"
)

// Platform is what the transport needs from the VMM to deliver interrupts
// and receive notifications without exits: MSI routes and irqfds for
// MSI-X, ioeventfds for queue notifications, and a level-triggered INTx
// input. *vmm.Machine provides all but SetIRQLevel; MachinePlatform adds
// that. Methods may be called from any goroutine (SetIRQLevel and
// SetMSIRoute also from the device's workers, through virtio.Interrupt).
type Platform interface {
	// AddMSIRoute allocates a GSI routed to the MSI message (addr, data).
	AddMSIRoute(addr uint64, data uint32) (uint32, error)
	// SetMSIRoute changes the message of a GSI from AddMSIRoute.
	SetMSIRoute(gsi uint32, addr uint64, data uint32) error
	// RemoveMSIRoute frees a GSI from AddMSIRoute.
	RemoveMSIRoute(gsi uint32) error
	// RegisterIRQFD makes writes to ev inject gsi (resample is always nil
	// here: MSI-X is edge-triggered).
	RegisterIRQFD(ev *os.File, gsi uint32, resample *os.File) error
	// UnregisterIRQFD removes a RegisterIRQFD registration.
	UnregisterIRQFD(ev *os.File, gsi uint32) error
	// RegisterIOEventFD makes guest writes matching e signal e.FD without
	// an exit to userspace.
	RegisterIOEventFD(e kvm.IOEventFD) error
	// UnregisterIOEventFD removes an identical earlier registration.
	UnregisterIOEventFD(e kvm.IOEventFD) error
	// SetIRQLevel drives interrupt input gsi (an IOAPIC pin, 0-23) high or
	// low: the function's INTx line, level-triggered.
	SetIRQLevel(gsi uint32, high bool) error
}

// MachinePlatform adapts a *vmm.Machine to Platform: the machine's own
// methods serve the MSI route, irqfd and ioeventfd calls, and SetIRQLevel
// drives KVM_IRQ_LINE directly (without allocating a vmm.IRQLine per call).
type MachinePlatform struct {
	*vmm.Machine
}

// SetIRQLevel implements Platform.
func (p MachinePlatform) SetIRQLevel(gsi uint32, high bool) error {
	return p.VM().IRQLine(gsi, high)
}

var _ Platform = MachinePlatform{}

package vmm

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/rscvm/rscvm/vmm/kvm"
)

// NumIOAPICPins is the number of IOAPIC inputs (GSIs 0-23); MSI routes get
// GSIs above them.
const NumIOAPICPins = 24

// IRQLine is an interrupt input of the in-kernel PIC and IOAPIC, driven
// with KVM_IRQ_LINE.
type IRQLine struct {
	vm  *kvm.VM
	gsi uint32
}

// IRQLine returns the interrupt line for gsi (0-23: ISA IRQs 0-15 reach
// both the PIC and the IOAPIC, 16-23 the IOAPIC only).
func (m *Machine) IRQLine(gsi uint32) *IRQLine { return &IRQLine{vm: m.vm, gsi: gsi} }

// GSI is the line's global system interrupt number.
func (l *IRQLine) GSI() uint32 { return l.gsi }

// SetLevel drives the line: level-triggered devices keep it high while they
// need service.
func (l *IRQLine) SetLevel(high bool) error {
	if err := l.vm.IRQLine(l.gsi, high); err != nil {
		return fmt.Errorf("vmm: irq line %d: %w", l.gsi, err)
	}
	return nil
}

// Pulse raises and lowers the line: one edge for edge-triggered devices
// (the ISA serial port, for example).
func (l *IRQLine) Pulse() error {
	if err := l.SetLevel(true); err != nil {
		return err
	}
	return l.SetLevel(false)
}

// irqRouting is the VM's GSI routing table: the fixed irqchip routes plus
// the MSI routes handed out by AddMSIRoute.
type irqRouting struct {
	mu      sync.Mutex
	maxGSI  uint32 // exclusive
	nextGSI uint32
	free    []uint32
	msi     map[uint32]kvm.IRQRoutingEntry
}

// ErrNoGSI is returned when every GSI available for MSI routes is in use.
var ErrNoGSI = errors.New("vmm: no free GSI for an MSI route")

// irqchipRoutes are the routes of the legacy interrupt controllers, as on
// QEMU's pc machine: ISA IRQ n goes to PIC pin n (master 0-7 except the
// cascade pin 2, slave 8-15) and to IOAPIC pin n, except IRQ 0 (the PIT)
// which reaches IOAPIC pin 2. The ACPI MADT must carry the matching
// interrupt source override (IRQ 0 -> GSI 2). GSIs 16-23 are IOAPIC-only
// (PCI INTx).
func irqchipRoutes() []kvm.IRQRoutingEntry {
	var rs []kvm.IRQRoutingEntry
	for i := uint32(0); i < 16; i++ {
		switch {
		case i < 8 && i != 2:
			rs = append(rs, kvm.IRQChipRoute(i, kvm.IRQChipPICMaster, i))
		case i >= 8:
			rs = append(rs, kvm.IRQChipRoute(i, kvm.IRQChipPICSlave, i-8))
		}
	}
	for i := uint32(0); i < NumIOAPICPins; i++ {
		switch i {
		case 0:
			rs = append(rs, kvm.IRQChipRoute(0, kvm.IRQChipIOAPIC, 2))
		case 2:
		default:
			rs = append(rs, kvm.IRQChipRoute(i, kvm.IRQChipIOAPIC, i))
		}
	}
	return rs
}

func (m *Machine) initIRQRouting() error {
	n, err := m.vm.CheckExtension(kvm.CapIRQRouting) // KVM_MAX_IRQ_ROUTES
	if err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	if n <= NumIOAPICPins {
		n = 1024
	}
	m.irq = irqRouting{maxGSI: uint32(n), nextGSI: NumIOAPICPins, msi: make(map[uint32]kvm.IRQRoutingEntry)}
	m.irq.mu.Lock()
	defer m.irq.mu.Unlock()
	return m.commitRoutesLocked()
}

func (m *Machine) commitRoutesLocked() error {
	rs := irqchipRoutes()
	gsis := make([]uint32, 0, len(m.irq.msi))
	for g := range m.irq.msi {
		gsis = append(gsis, g)
	}
	sort.Slice(gsis, func(i, j int) bool { return gsis[i] < gsis[j] })
	for _, g := range gsis {
		rs = append(rs, m.irq.msi[g])
	}
	if err := m.vm.SetGSIRouting(rs); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	return nil
}

// AddMSIRoute allocates a GSI routed to the MSI message (addr, data). Bind
// an eventfd to it with RegisterIRQFD to inject the MSI from any goroutine.
func (m *Machine) AddMSIRoute(addr uint64, data uint32) (uint32, error) {
	r := &m.irq
	r.mu.Lock()
	defer r.mu.Unlock()
	var gsi uint32
	switch {
	case len(r.free) > 0:
		gsi = r.free[len(r.free)-1]
		r.free = r.free[:len(r.free)-1]
	case r.nextGSI < r.maxGSI:
		gsi = r.nextGSI
		r.nextGSI++
	default:
		return 0, ErrNoGSI
	}
	r.msi[gsi] = kvm.MSIRoute(gsi, addr, data)
	if err := m.commitRoutesLocked(); err != nil {
		delete(r.msi, gsi)
		r.free = append(r.free, gsi)
		return 0, err
	}
	return gsi, nil
}

// SetMSIRoute changes the message of an MSI route (the guest reprogrammed
// an MSI-X table entry).
func (m *Machine) SetMSIRoute(gsi uint32, addr uint64, data uint32) error {
	r := &m.irq
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.msi[gsi]
	if !ok {
		return fmt.Errorf("vmm: GSI %d is not an MSI route", gsi)
	}
	nw := kvm.MSIRoute(gsi, addr, data)
	if nw == old {
		return nil
	}
	r.msi[gsi] = nw
	if err := m.commitRoutesLocked(); err != nil {
		r.msi[gsi] = old
		return err
	}
	return nil
}

// RemoveMSIRoute frees an MSI route's GSI. Unregister its irqfd first.
func (m *Machine) RemoveMSIRoute(gsi uint32) error {
	r := &m.irq
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.msi[gsi]
	if !ok {
		return fmt.Errorf("vmm: GSI %d is not an MSI route", gsi)
	}
	delete(r.msi, gsi)
	if err := m.commitRoutesLocked(); err != nil {
		r.msi[gsi] = old
		return err
	}
	r.free = append(r.free, gsi)
	return nil
}

// SignalMSI injects one MSI directly (KVM_SIGNAL_MSI), without a route.
func (m *Machine) SignalMSI(addr uint64, data uint32) error {
	if _, err := m.vm.SignalMSI(addr, data); err != nil {
		return fmt.Errorf("vmm: MSI addr %#x data %#x: %w", addr, data, err)
	}
	return nil
}

// RegisterIRQFD makes a write to the eventfd ev inject gsi (an IOAPIC pin
// or an MSI route). With a resample eventfd the GSI is treated as
// level-triggered: KVM lowers it when the guest acknowledges it and signals
// resample, and the device re-signals ev if it still needs service.
func (m *Machine) RegisterIRQFD(ev *os.File, gsi uint32, resample *os.File) error {
	if err := m.vm.IRQFD(ev, gsi, resample); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	return nil
}

// UnregisterIRQFD removes an irqfd.
func (m *Machine) UnregisterIRQFD(ev *os.File, gsi uint32) error {
	if err := m.vm.IRQFDDeassign(ev, gsi); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	return nil
}

// RegisterIOEventFD makes guest writes matching e signal e.FD inside KVM,
// without a PIO/MMIO exit (virtio queue notifications).
func (m *Machine) RegisterIOEventFD(e kvm.IOEventFD) error {
	if err := m.vm.IOEventFD(e); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	return nil
}

// UnregisterIOEventFD removes a registration made with RegisterIOEventFD
// (e must be identical).
func (m *Machine) UnregisterIOEventFD(e kvm.IOEventFD) error {
	if err := m.vm.IOEventFDDeassign(e); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	return nil
}

package kvm

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine file descriptor.
type VM struct {
	f        *os.File
	mmapSize int
}

// Close closes the VM fd. The kernel frees the VM when its vCPUs and any
// other references (irqfds, ioeventfds) are gone too.
func (vm *VM) Close() error { return vm.f.Close() }

// File returns the underlying file.
func (vm *VM) File() *os.File { return vm.f }

// CheckExtension is KVM_CHECK_EXTENSION on the VM (answers can be more
// precise than on /dev/kvm).
func (vm *VM) CheckExtension(capability int) (int, error) {
	r, err := ioctlInt(vm.f, kvmCheckExtension, uintptr(capability))
	return int(r), err
}

// SetTSSAddr is KVM_SET_TSS_ADDR: three pages of guest-physical space, not
// RAM, that KVM uses for real-mode emulation on Intel.
func (vm *VM) SetTSSAddr(addr uint32) error {
	_, err := ioctlInt(vm.f, kvmSetTSSAddr, uintptr(addr))
	return err
}

// SetIdentityMapAddr is KVM_SET_IDENTITY_MAP_ADDR: one page of
// guest-physical space for the EPT identity map. The kernel reads a u64.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	_, err := ioctlPtr(vm.f, kvmSetIdentityMapAddr, unsafe.Pointer(&addr))
	return err
}

// CreateIRQChip is KVM_CREATE_IRQCHIP: in-kernel PIC, IOAPIC and local APICs.
// Call it before creating vCPUs.
func (vm *VM) CreateIRQChip() error {
	_, err := ioctlInt(vm.f, kvmCreateIRQChip, 0)
	return err
}

// CreatePIT2 is KVM_CREATE_PIT2: the in-kernel i8254 (after CreateIRQChip).
func (vm *VM) CreatePIT2(flags uint32) error {
	cfg := PITConfig{Flags: flags}
	_, err := ioctlPtr(vm.f, kvmCreatePIT2, unsafe.Pointer(&cfg))
	return err
}

// SetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION. A MemorySize of 0
// deletes the slot.
func (vm *VM) SetUserMemoryRegion(r UserspaceMemoryRegion) error {
	_, err := ioctlPtr(vm.f, kvmSetUserMemoryRegion, unsafe.Pointer(&r))
	if err != nil {
		return fmt.Errorf("slot %d [%#x,+%#x): %w", r.Slot, r.GuestPhysAddr, r.MemorySize, err)
	}
	return nil
}

// IRQLine is KVM_IRQ_LINE: drive GSI gsi high or low.
func (vm *VM) IRQLine(gsi uint32, high bool) error {
	l := irqLevel{IRQ: gsi}
	if high {
		l.Level = 1
	}
	_, err := ioctlPtr(vm.f, kvmIRQLine, unsafe.Pointer(&l))
	return err
}

// IRQFD is KVM_IRQFD: a write to the eventfd ev injects gsi. When resample
// is not nil the route is level-triggered: KVM signals resample when the
// guest acknowledges the interrupt, and the VMM re-arms ev if the line is
// still asserted.
func (vm *VM) IRQFD(ev *os.File, gsi uint32, resample *os.File) error {
	a := irqfd{FD: uint32(ev.Fd()), GSI: gsi}
	if resample != nil {
		a.Flags |= irqfdFlagResample
		a.ResampleFD = uint32(resample.Fd())
	}
	_, err := ioctlPtr(vm.f, kvmIRQFD, unsafe.Pointer(&a))
	keepAlive(ev, resample)
	if err != nil {
		return fmt.Errorf("gsi %d: %w", gsi, err)
	}
	return nil
}

// IRQFDDeassign removes an irqfd registered with IRQFD.
func (vm *VM) IRQFDDeassign(ev *os.File, gsi uint32) error {
	a := irqfd{FD: uint32(ev.Fd()), GSI: gsi, Flags: irqfdFlagDeassign}
	_, err := ioctlPtr(vm.f, kvmIRQFD, unsafe.Pointer(&a))
	keepAlive(ev, nil)
	if err != nil {
		return fmt.Errorf("deassign gsi %d: %w", gsi, err)
	}
	return nil
}

// IOEventFD describes a KVM_IOEVENTFD registration: a guest write of Len
// bytes to Addr (port or guest-physical address) signals FD instead of
// exiting to userspace.
type IOEventFD struct {
	FD   *os.File
	Addr uint64
	Len  uint32 // 1, 2, 4 or 8; 0 matches any length (CapIOEventFDAnyLength)
	PIO  bool   // port I/O rather than MMIO
	// With HasDataMatch, only writes of exactly DataMatch signal FD.
	HasDataMatch bool
	DataMatch    uint64
}

func (e IOEventFD) raw(deassign bool) ioeventfd {
	r := ioeventfd{Addr: e.Addr, Len: e.Len, FD: int32(e.FD.Fd())}
	if e.PIO {
		r.Flags |= ioeventfdFlagPIO
	}
	if e.HasDataMatch {
		r.Flags |= ioeventfdFlagDataMatch
		r.DataMatch = e.DataMatch
	}
	if deassign {
		r.Flags |= ioeventfdFlagDeassign
	}
	return r
}

func (e IOEventFD) String() string {
	space := "mmio"
	if e.PIO {
		space = "pio"
	}
	s := fmt.Sprintf("%s %#x len %d", space, e.Addr, e.Len)
	if e.HasDataMatch {
		s += fmt.Sprintf(" datamatch %#x", e.DataMatch)
	}
	return s
}

// IOEventFD is KVM_IOEVENTFD (assign).
func (vm *VM) IOEventFD(e IOEventFD) error {
	a := e.raw(false)
	_, err := ioctlPtr(vm.f, kvmIOEventFD, unsafe.Pointer(&a))
	keepAlive(e.FD, nil)
	if err != nil {
		return fmt.Errorf("%v: %w", e, err)
	}
	return nil
}

// IOEventFDDeassign is KVM_IOEVENTFD with the deassign flag; e must match
// the registration exactly.
func (vm *VM) IOEventFDDeassign(e IOEventFD) error {
	a := e.raw(true)
	_, err := ioctlPtr(vm.f, kvmIOEventFD, unsafe.Pointer(&a))
	keepAlive(e.FD, nil)
	if err != nil {
		return fmt.Errorf("deassign %v: %w", e, err)
	}
	return nil
}

// SetGSIRouting is KVM_SET_GSI_ROUTING. It replaces the whole table,
// including KVM's default irqchip routes, so entries must list every route
// the VM needs.
func (vm *VM) SetGSIRouting(entries []IRQRoutingEntry) error {
	hdr := unsafe.Sizeof(irqRoutingHeader{})
	esz := unsafe.Sizeof(IRQRoutingEntry{})
	// struct kvm_irq_routing: the 8-byte header, then the entries. A
	// []uint64 keeps the buffer 8-byte aligned.
	buf := make([]uint64, (hdr+uintptr(len(entries))*esz)/8)
	h := (*irqRoutingHeader)(unsafe.Pointer(&buf[0]))
	h.NR = uint32(len(entries))
	for i := range entries {
		*(*IRQRoutingEntry)(unsafe.Pointer(&buf[(hdr+uintptr(i)*esz)/8])) = entries[i]
	}
	_, err := ioctlPtr(vm.f, kvmSetGSIRouting, unsafe.Pointer(&buf[0]))
	if err != nil {
		return fmt.Errorf("%d routes: %w", len(entries), err)
	}
	return nil
}

// SignalMSI is KVM_SIGNAL_MSI: inject one MSI. It reports whether the
// interrupt was delivered (false: the guest blocked it). KVM fails with
// EPERM when no local APIC matches the message's destination.
func (vm *VM) SignalMSI(addr uint64, data uint32) (bool, error) {
	m := MSI{AddressLo: uint32(addr), AddressHi: uint32(addr >> 32), Data: data}
	r, err := ioctlPtr(vm.f, kvmSignalMSI, unsafe.Pointer(&m))
	return r > 0, err
}

// CreateVCPU is KVM_CREATE_VCPU, plus the mmap of its kvm_run page.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	r, err := ioctlInt(vm.f, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("vcpu %d: %w", id, err)
	}
	f := os.NewFile(r, fmt.Sprintf("kvm-vcpu:%d", id))
	if vm.mmapSize < int(unsafe.Sizeof(runHeader{})) {
		f.Close()
		return nil, fmt.Errorf("vcpu %d: kvm_run mapping size %d too small", id, vm.mmapSize)
	}
	run, err := unix.Mmap(int(f.Fd()), 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("vcpu %d: mmap kvm_run: %w", id, err)
	}
	return &VCPU{f: f, id: id, run: run}, nil
}

// keepAlive keeps the files whose descriptors were passed to the kernel
// alive until the ioctl has returned.
func keepAlive(a, b *os.File) {
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
}

// Package vmm is the virtual machine: guest RAM, vCPUs, the in-kernel
// interrupt controllers and the PIO/MMIO buses that guest accesses are
// dispatched to.
//
// Typical use:
//
//	m, err := vmm.NewMachine(vmm.Config{MemBytes: 512 << 20, CPUs: 2})
//	// register devices on m.PIO() and m.MMIO(); load the kernel into
//	// m.Memory() with package boot, then:
//	err = m.SetBootEntry(vmm.BootEntry(entry))
//	err = m.Run(ctx) // nil when the guest powered off or reset
//	m.Close()
package vmm

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/devices/bus"
	"github.com/rscvm/rscvm/vmm/kvm"
	"github.com/rscvm/rscvm/vmm/memory"
)

// Config describes a machine.
type Config struct {
	MemBytes uint64       // guest RAM; a multiple of 4 KiB, at least 1 MiB
	CPUs     int          // number of vCPUs (1 if zero)
	KVMPath  string       // default kvm.DevicePath
	Logger   *slog.Logger // default slog.Default()
}

// MaxCPUs is the largest vCPU count: xAPIC IDs are 8 bits and 0xFF is the
// broadcast ID.
const MaxCPUs = 255

// Machine is a KVM virtual machine with its RAM, vCPUs and buses.
type Machine struct {
	log   *slog.Logger
	sys   *kvm.System
	vm    *kvm.VM
	ram   [][]byte
	mem   *memory.Memory
	vcpus []*vcpu
	pio   *bus.Bus
	mmio  *bus.Bus

	bootSet atomic.Bool
	started atomic.Bool
	runDone chan struct{} // closed when Run returns

	irq irqRouting

	// Stopping. stopped is read on every vCPU loop iteration; the rest is
	// guarded by stopMu.
	stopped atomic.Bool
	stopMu  sync.Mutex
	reason  StopReason
	err     error
	closed  bool

	unhandledMu   sync.Mutex
	unhandledPIO  map[uint64]struct{}
	unhandledMMIO map[uint64]struct{}
}

type vcpu struct {
	id  int
	kv  *kvm.VCPU
	tid atomic.Int32 // OS thread running KVM_RUN, 0 when none
}

// NewMachine creates the VM: RAM, in-kernel irqchip and PIT, vCPUs with
// CPUID and local APICs set up, and empty PIO and MMIO buses. The BSP's
// registers are set later by SetBootEntry.
func NewMachine(cfg Config) (*Machine, error) {
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.CPUs < 0 || cfg.CPUs > MaxCPUs {
		return nil, fmt.Errorf("vmm: %d vCPUs: want 1..%d", cfg.CPUs, MaxCPUs)
	}
	if cfg.MemBytes < 1<<20 || cfg.MemBytes%4096 != 0 {
		return nil, fmt.Errorf("vmm: memory size %#x: want a multiple of 4 KiB, at least 1 MiB", cfg.MemBytes)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Machine{
		log:           cfg.Logger,
		pio:           bus.New("pio"),
		mmio:          bus.New("mmio"),
		runDone:       make(chan struct{}),
		unhandledPIO:  make(map[uint64]struct{}),
		unhandledMMIO: make(map[uint64]struct{}),
	}
	if err := m.init(cfg); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Machine) init(cfg Config) error {
	var err error
	if m.sys, err = kvm.Open(cfg.KVMPath); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	if err := m.checkCaps(cfg.CPUs); err != nil {
		return err
	}
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	// The identity map and TSS must be placed before vCPUs exist.
	if err := m.vm.SetIdentityMapAddr(IdentityMapAddr); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	if err := m.vm.SetTSSAddr(TSSAddr); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	// With the dummy speaker KVM also serves port 0x61 (PIT channel 2 gate
	// and output), which Linux polls to calibrate the TSC.
	if err := m.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	if err := m.initIRQRouting(); err != nil {
		return err
	}
	if err := m.initRAM(cfg.MemBytes); err != nil {
		return err
	}
	return m.initVCPUs(cfg.CPUs)
}

func (m *Machine) checkCaps(cpus int) error {
	for _, c := range []struct {
		cap  int
		name string
	}{
		{kvm.CapIRQChip, "KVM_CAP_IRQCHIP"},
		{kvm.CapUserMemory, "KVM_CAP_USER_MEMORY"},
		{kvm.CapSetTSSAddr, "KVM_CAP_SET_TSS_ADDR"},
		{kvm.CapSetIdentityMapAddr, "KVM_CAP_SET_IDENTITY_MAP_ADDR"},
		{kvm.CapPIT2, "KVM_CAP_PIT2"},
		{kvm.CapIRQRouting, "KVM_CAP_IRQ_ROUTING"},
		{kvm.CapImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"},
		{kvm.CapExtCPUID, "KVM_CAP_EXT_CPUID"},
	} {
		n, err := m.sys.CheckExtension(c.cap)
		if err != nil {
			return fmt.Errorf("vmm: %w", err)
		}
		if n <= 0 {
			return fmt.Errorf("vmm: KVM lacks %s", c.name)
		}
	}
	maxCPUs, err := m.sys.CheckExtension(kvm.CapMaxVCPUs)
	if err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	if maxCPUs == 0 { // older kernels: KVM_CAP_NR_VCPUS is the limit
		if maxCPUs, err = m.sys.CheckExtension(kvm.CapNRVCPUs); err != nil {
			return fmt.Errorf("vmm: %w", err)
		}
	}
	if maxCPUs > 0 && cpus > maxCPUs {
		return fmt.Errorf("vmm: %d vCPUs requested, KVM allows %d", cpus, maxCPUs)
	}
	return nil
}

func (m *Machine) initRAM(memBytes uint64) error {
	var regions []memory.Region
	for slot, r := range RAMLayout(memBytes) {
		if r.Size > uint64(^uint(0)>>1) {
			return fmt.Errorf("vmm: RAM range of %#x bytes too large", r.Size)
		}
		b, err := unix.Mmap(-1, 0, int(r.Size), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return fmt.Errorf("vmm: mmap %d bytes of guest RAM: %w", r.Size, err)
		}
		m.ram = append(m.ram, b)
		err = m.vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
			Slot:          uint32(slot),
			GuestPhysAddr: r.GPA,
			MemorySize:    r.Size,
			UserspaceAddr: uint64(uintptr(unsafe.Pointer(&b[0]))),
		})
		if err != nil {
			return fmt.Errorf("vmm: %w", err)
		}
		regions = append(regions, memory.Region{GPA: r.GPA, Host: b})
	}
	mem, err := memory.New(regions...)
	if err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	m.mem = mem
	return nil
}

func (m *Machine) initVCPUs(n int) error {
	supported, err := m.sys.GetSupportedCPUID()
	if err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	softKVM := hostIsSoftwareKVM()
	if softKVM {
		m.log.Debug("host KVM is the software kvm_pvm: hiding x2APIC and the VMCALL-based KVM PV features from the guest")
	}
	for id := 0; id < n; id++ {
		kv, err := m.vm.CreateVCPU(id)
		if err != nil {
			return fmt.Errorf("vmm: %w", err)
		}
		v := &vcpu{id: id, kv: kv}
		m.vcpus = append(m.vcpus, v)
		if err := kv.SetCPUID2(guestCPUID(supported, id, n, softKVM)); err != nil {
			return fmt.Errorf("vmm: vCPU %d: %w", id, err)
		}
		// x87 and SSE in their power-on state (FINIT / reset MXCSR).
		if err := kv.SetFPU(&kvm.FPU{FCW: 0x37F, MXCSR: 0x1F80}); err != nil {
			return fmt.Errorf("vmm: vCPU %d: %w", id, err)
		}
		if id == 0 {
			if err := setupBSPLAPIC(kv); err != nil {
				return fmt.Errorf("vmm: vCPU %d: %w", id, err)
			}
		}
		// vCPUs other than 0 start in wait-for-SIPI (KVM does that for
		// non-BSP vCPUs when the irqchip is in the kernel).
	}
	return nil
}

// setupBSPLAPIC programs LINT0 as ExtINT (the 8259 PIC's output: virtual
// wire mode) and LINT1 as NMI, what firmware leaves for Linux.
func setupBSPLAPIC(kv *kvm.VCPU) error {
	l, err := kv.GetLAPIC()
	if err != nil {
		return err
	}
	lint0 := l.Reg32(kvm.LAPICRegLVTLINT0)
	lint0 = lint0&^(kvm.LAPICDeliveryModeMask|kvm.LAPICLVTMasked) | kvm.LAPICDeliveryModeExtINT
	l.SetReg32(kvm.LAPICRegLVTLINT0, lint0)
	lint1 := l.Reg32(kvm.LAPICRegLVTLINT1)
	lint1 = lint1&^(kvm.LAPICDeliveryModeMask|kvm.LAPICLVTMasked) | kvm.LAPICDeliveryModeNMI
	l.SetReg32(kvm.LAPICRegLVTLINT1, lint1)
	return kv.SetLAPIC(l)
}

// Memory is guest RAM. It stays valid until Close.
func (m *Machine) Memory() *memory.Memory { return m.mem }

// PIO is the port I/O bus; devices registered there see the guest's
// in/out accesses that KVM does not handle itself.
func (m *Machine) PIO() *bus.Bus { return m.pio }

// MMIO is the MMIO bus: guest-physical accesses outside RAM and outside
// KVM's own devices (IOAPIC, LAPIC, ioeventfds).
func (m *Machine) MMIO() *bus.Bus { return m.mmio }

// VM is the underlying KVM VM, for features the Machine does not wrap.
func (m *Machine) VM() *kvm.VM { return m.vm }

// CPUs is the number of vCPUs.
func (m *Machine) CPUs() int { return len(m.vcpus) }

// Close stops the machine if it runs, waits for Run to return, and releases
// the vCPUs, the VM and guest RAM. Memory must not be used afterwards. Do
// not call it from a vCPU thread (device code); use Stop there.
func (m *Machine) Close() error {
	if m.started.Load() {
		m.Stop(nil)
		<-m.runDone
	}
	m.stopMu.Lock()
	if m.closed {
		m.stopMu.Unlock()
		return nil
	}
	m.closed = true
	m.stopped.Store(true)
	m.stopMu.Unlock()

	var errs []error
	for _, v := range m.vcpus {
		errs = append(errs, v.kv.Close())
	}
	if m.vm != nil {
		errs = append(errs, m.vm.Close())
	}
	if m.sys != nil {
		errs = append(errs, m.sys.Close())
	}
	for _, b := range m.ram {
		errs = append(errs, unix.Munmap(b))
	}
	m.ram = nil
	return errors.Join(errs...)
}

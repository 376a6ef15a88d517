package kvm

// Go mirrors of the kernel's KVM structures (include/uapi/linux/kvm.h and
// arch/x86/include/uapi/asm/kvm.h). Field order, widths and padding match the
// kernel exactly; types_test.go asserts the sizes and offsets.

// UserspaceMemoryRegion is struct kvm_userspace_memory_region.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// Regs is struct kvm_regs (general-purpose registers).
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment is struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable (GDTR/IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// NumInterrupts is KVM_NR_INTERRUPTS.
const NumInterrupts = 256

// Sregs is struct kvm_sregs (segment and control registers).
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [(NumInterrupts + 63) / 64]uint64
}

// FPU is struct kvm_fpu.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// LAPICState is struct kvm_lapic_state: the local APIC register page.
type LAPICState struct {
	Regs [1024]byte
}

// Translation is struct kvm_translation (KVM_TRANSLATE).
type Translation struct {
	LinearAddress   uint64
	PhysicalAddress uint64
	Valid           uint8
	Writeable       uint8
	UserMode        uint8
	_               [5]uint8
}

// CPUIDEntry is struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// CPUIDFlagSignificantIndex is KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry
// applies to one sub-leaf (Index) only.
const CPUIDFlagSignificantIndex = 1

// cpuid2Header is the fixed part of struct kvm_cpuid2; the entries follow.
type cpuid2Header struct {
	NEnt uint32
	_    uint32
}

// MSREntry is struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// msrsHeader is the fixed part of struct kvm_msrs; the entries follow.
type msrsHeader struct {
	NMSRs uint32
	_     uint32
}

// irqLevel is struct kvm_irq_level.
type irqLevel struct {
	IRQ   uint32 // union with status
	Level uint32
}

// PITConfig is struct kvm_pit_config.
type PITConfig struct {
	Flags uint32
	_     [15]uint32
}

// PITSpeakerDummy is KVM_PIT_SPEAKER_DUMMY: KVM also emulates port 0x61
// (PC speaker / PIT channel 2 gate and output), which Linux reads during
// TSC calibration.
const PITSpeakerDummy = 1

// irqfd is struct kvm_irqfd.
type irqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8
}

const (
	irqfdFlagDeassign = 1 << 0
	irqfdFlagResample = 1 << 1
)

// ioeventfd is struct kvm_ioeventfd.
type ioeventfd struct {
	DataMatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]uint8
}

const (
	ioeventfdFlagDataMatch = 1 << 0
	ioeventfdFlagPIO       = 1 << 1
	ioeventfdFlagDeassign  = 1 << 2
)

// MSI is struct kvm_msi (KVM_SIGNAL_MSI).
type MSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]uint8
}

// irqRoutingHeader is the fixed part of struct kvm_irq_routing.
type irqRoutingHeader struct {
	NR    uint32
	Flags uint32
}

// IRQ routing entry types (KVM_IRQ_ROUTING_*).
const (
	IRQRoutingIRQChip = 1
	IRQRoutingMSI     = 2
)

// In-kernel interrupt controllers (KVM_IRQCHIP_*), for IRQChip routes.
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// IRQRoutingEntry is struct kvm_irq_routing_entry (48 bytes). Build one with
// IRQChipRoute or MSIRoute; U holds the union (irqchip or msi).
type IRQRoutingEntry struct {
	GSI   uint32
	Type  uint32
	Flags uint32
	_     uint32
	U     [8]uint32
}

// IRQChipRoute routes gsi to pin of an in-kernel interrupt controller.
func IRQChipRoute(gsi, irqchip, pin uint32) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingIRQChip}
	e.U[0] = irqchip
	e.U[1] = pin
	return e
}

// MSIRoute routes gsi to a message-signalled interrupt.
func MSIRoute(gsi uint32, addr uint64, data uint32) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingMSI}
	e.U[0] = uint32(addr)
	e.U[1] = uint32(addr >> 32)
	e.U[2] = data
	return e
}

// MP states (KVM_MP_STATE_*).
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSIPIReceived  = 4
)

// Capabilities (KVM_CAP_*) for CheckExtension.
const (
	CapIRQChip                = 0
	CapUserMemory             = 3
	CapSetTSSAddr             = 4
	CapExtCPUID               = 7
	CapNRVCPUs                = 9
	CapNRMemSlots             = 10
	CapSyncMMU                = 16
	CapIRQRouting             = 25
	CapIRQFD                  = 32
	CapPIT2                   = 33
	CapPITState2              = 35
	CapIOEventFD              = 36
	CapSetIdentityMapAddr     = 37
	CapMaxVCPUs               = 66
	CapSignalMSI              = 77
	CapIRQFDResample          = 82
	CapIOEventFDAnyLength     = 122
	CapMaxVCPUID              = 128
	CapImmediateExit          = 136
	CapExitOnEmulationFailure = 204
)

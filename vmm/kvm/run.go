package kvm

import (
	"fmt"
	"unsafe"
)

// Exit reasons (KVM_EXIT_*).
const (
	ExitUnknown       = 0
	ExitException     = 1
	ExitIO            = 2
	ExitHypercall     = 3
	ExitDebug         = 4
	ExitHLT           = 5
	ExitMMIO          = 6
	ExitIRQWindowOpen = 7
	ExitShutdown      = 8
	ExitFailEntry     = 9
	ExitIntr          = 10
	ExitSetTPR        = 11
	ExitTPRAccess     = 12
	ExitNMI           = 16
	ExitInternalError = 17
	ExitSystemEvent   = 24
	ExitIOAPICEOI     = 26
	ExitHyperV        = 27
	ExitX86RDMSR      = 29
	ExitX86WRMSR      = 30
	ExitX86BusLock    = 33
	ExitXen           = 34
	ExitNotify        = 37
	ExitMemoryFault   = 39
)

var exitNames = map[uint32]string{
	ExitUnknown:       "KVM_EXIT_UNKNOWN",
	ExitException:     "KVM_EXIT_EXCEPTION",
	ExitIO:            "KVM_EXIT_IO",
	ExitHypercall:     "KVM_EXIT_HYPERCALL",
	ExitDebug:         "KVM_EXIT_DEBUG",
	ExitHLT:           "KVM_EXIT_HLT",
	ExitMMIO:          "KVM_EXIT_MMIO",
	ExitIRQWindowOpen: "KVM_EXIT_IRQ_WINDOW_OPEN",
	ExitShutdown:      "KVM_EXIT_SHUTDOWN",
	ExitFailEntry:     "KVM_EXIT_FAIL_ENTRY",
	ExitIntr:          "KVM_EXIT_INTR",
	ExitSetTPR:        "KVM_EXIT_SET_TPR",
	ExitTPRAccess:     "KVM_EXIT_TPR_ACCESS",
	ExitNMI:           "KVM_EXIT_NMI",
	ExitInternalError: "KVM_EXIT_INTERNAL_ERROR",
	ExitSystemEvent:   "KVM_EXIT_SYSTEM_EVENT",
	ExitIOAPICEOI:     "KVM_EXIT_IOAPIC_EOI",
	ExitHyperV:        "KVM_EXIT_HYPERV",
	ExitX86RDMSR:      "KVM_EXIT_X86_RDMSR",
	ExitX86WRMSR:      "KVM_EXIT_X86_WRMSR",
	ExitX86BusLock:    "KVM_EXIT_X86_BUS_LOCK",
	ExitXen:           "KVM_EXIT_XEN",
	ExitNotify:        "KVM_EXIT_NOTIFY",
	ExitMemoryFault:   "KVM_EXIT_MEMORY_FAULT",
}

// ExitName returns the KVM_EXIT_* name of an exit reason.
func ExitName(reason uint32) string {
	if n, ok := exitNames[reason]; ok {
		return n
	}
	return fmt.Sprintf("KVM exit reason %d", reason)
}

// Internal-error sub-reasons (KVM_INTERNAL_ERROR_*).
const (
	InternalErrorEmulation            = 1
	InternalErrorSimulEx              = 2
	InternalErrorDeliveryEv           = 3
	InternalErrorUnexpectedExitReason = 4
)

// InternalErrorName describes a KVM_INTERNAL_ERROR_* suberror.
func InternalErrorName(sub uint32) string {
	switch sub {
	case InternalErrorEmulation:
		return "emulation failure"
	case InternalErrorSimulEx:
		return "exception while handling an exception"
	case InternalErrorDeliveryEv:
		return "event delivery failed"
	case InternalErrorUnexpectedExitReason:
		return "unexpected exit reason"
	}
	return "unknown"
}

// System event types (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
	SystemEventWakeup   = 4
	SystemEventSuspend  = 5
	SystemEventSEVTerm  = 6
)

// I/O exit directions (KVM_EXIT_IO_*).
const (
	IODirIn  = 0
	IODirOut = 1
)

// emulationFlagInstructionBytes is
// KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES.
const emulationFlagInstructionBytes = 1

// runHeader mirrors the start of struct kvm_run up to and including the
// 256-byte exit union.
type runHeader struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	_                          [6]uint8
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IFFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
	Exit                       [256]byte
}

// Members of the kvm_run exit union.
type (
	ioExit struct {
		Direction  uint8
		Size       uint8
		Port       uint16
		Count      uint32
		DataOffset uint64
	}
	mmioExit struct {
		PhysAddr uint64
		Data     [8]uint8
		Len      uint32
		IsWrite  uint8
		_        [3]uint8
	}
	internalExit struct {
		Suberror uint32
		NData    uint32
		Data     [16]uint64
	}
	emulationFailureExit struct {
		Suberror  uint32
		NData     uint32
		Flags     uint64
		InsnSize  uint8
		InsnBytes [15]uint8
	}
	systemEventExit struct {
		Type  uint32
		NData uint32
		Data  [16]uint64
	}
	failEntryExit struct {
		HardwareEntryFailureReason uint64
		CPU                        uint32
		_                          uint32
	}
	unknownExit struct {
		HardwareExitReason uint64
	}
	exceptionExit struct {
		Exception uint32
		ErrorCode uint32
	}
)

// IOExit describes a KVM_EXIT_IO.
type IOExit struct {
	Out   bool   // direction: guest wrote (out/outs) or read (in/ins)
	Size  uint8  // access width: 1, 2 or 4
	Port  uint16 // first port
	Count uint32 // number of accesses (>1 for rep ins/outs)
	// Data holds Count consecutive Size-byte items inside the kvm_run page.
	// For Out it holds the values written; for In the VMM fills it before
	// the next Run. It aliases the mmap and is valid until the next Run.
	Data []byte
}

// MMIOExit describes a KVM_EXIT_MMIO.
type MMIOExit struct {
	Addr    uint64
	IsWrite bool
	// Data is the access (1..8 bytes) inside the kvm_run page: the written
	// value, or where a read result goes. Valid until the next Run.
	Data []byte
}

// InternalError describes a KVM_EXIT_INTERNAL_ERROR.
type InternalError struct {
	Suberror uint32
	Data     []uint64 // the ndata words KVM supplied (at most 16)
	// Insn is the instruction KVM failed to emulate, when the kernel
	// supplied its bytes (suberror 1 with the instruction-bytes flag).
	Insn []byte
}

// SystemEvent describes a KVM_EXIT_SYSTEM_EVENT.
type SystemEvent struct {
	Type uint32
	Data []uint64
}

func (v *VCPU) hdr() *runHeader { return (*runHeader)(unsafe.Pointer(&v.run[0])) }

// ExitReason is kvm_run.exit_reason after Run.
func (v *VCPU) ExitReason() uint32 { return v.hdr().ExitReason }

// SetImmediateExit sets kvm_run.immediate_exit: while it is set KVM_RUN
// returns EINTR at once (after completing pending I/O) instead of entering
// the guest. Safe to call from any goroutine.
func (v *VCPU) SetImmediateExit(on bool) {
	var b uint8
	if on {
		b = 1
	}
	v.hdr().ImmediateExit = b
}

// IO decodes a KVM_EXIT_IO. The data area is bounds-checked against the
// kvm_run mapping.
func (v *VCPU) IO() (IOExit, error) {
	x := (*ioExit)(unsafe.Pointer(&v.hdr().Exit))
	n := uint64(x.Size) * uint64(x.Count)
	if x.Size == 0 || x.DataOffset > uint64(len(v.run)) || n > uint64(len(v.run))-x.DataOffset {
		return IOExit{}, fmt.Errorf("KVM_EXIT_IO: data (offset %#x, %d x %d bytes) outside the %d-byte kvm_run mapping",
			x.DataOffset, x.Count, x.Size, len(v.run))
	}
	return IOExit{
		Out:   x.Direction == IODirOut,
		Size:  x.Size,
		Port:  x.Port,
		Count: x.Count,
		Data:  v.run[x.DataOffset : x.DataOffset+n : x.DataOffset+n],
	}, nil
}

// MMIO decodes a KVM_EXIT_MMIO.
func (v *VCPU) MMIO() MMIOExit {
	x := (*mmioExit)(unsafe.Pointer(&v.hdr().Exit))
	n := min(x.Len, uint32(len(x.Data)))
	return MMIOExit{Addr: x.PhysAddr, IsWrite: x.IsWrite != 0, Data: x.Data[:n:n]}
}

// InternalError decodes a KVM_EXIT_INTERNAL_ERROR.
func (v *VCPU) InternalError() InternalError {
	x := (*internalExit)(unsafe.Pointer(&v.hdr().Exit))
	n := min(x.NData, uint32(len(x.Data)))
	ie := InternalError{Suberror: x.Suberror, Data: append([]uint64(nil), x.Data[:n]...)}
	if x.Suberror == InternalErrorEmulation && n >= 3 {
		ef := (*emulationFailureExit)(unsafe.Pointer(&v.hdr().Exit))
		if ef.Flags&emulationFlagInstructionBytes != 0 {
			sz := min(int(ef.InsnSize), len(ef.InsnBytes))
			ie.Insn = append([]byte(nil), ef.InsnBytes[:sz]...)
		}
	}
	return ie
}

// SystemEvent decodes a KVM_EXIT_SYSTEM_EVENT.
func (v *VCPU) SystemEvent() SystemEvent {
	x := (*systemEventExit)(unsafe.Pointer(&v.hdr().Exit))
	n := min(x.NData, uint32(len(x.Data)))
	return SystemEvent{Type: x.Type, Data: append([]uint64(nil), x.Data[:n]...)}
}

// FailEntry decodes a KVM_EXIT_FAIL_ENTRY: the hardware entry failure
// reason and the host CPU.
func (v *VCPU) FailEntry() (reason uint64, cpu uint32) {
	x := (*failEntryExit)(unsafe.Pointer(&v.hdr().Exit))
	return x.HardwareEntryFailureReason, x.CPU
}

// HardwareExitReason decodes a KVM_EXIT_UNKNOWN.
func (v *VCPU) HardwareExitReason() uint64 {
	return (*unknownExit)(unsafe.Pointer(&v.hdr().Exit)).HardwareExitReason
}

// Exception decodes a KVM_EXIT_EXCEPTION.
func (v *VCPU) Exception() (vector, errorCode uint32) {
	x := (*exceptionExit)(unsafe.Pointer(&v.hdr().Exit))
	return x.Exception, x.ErrorCode
}

// Package kvm is a thin layer over the Linux KVM API (/dev/kvm).
//
// It mirrors the kernel's structures exactly (sizes are asserted by tests),
// derives every ioctl number from the size of the Go structure it passes, and
// keeps every file descriptor inside an *os.File so that no finalizer can
// close a descriptor that is still in use. Pointers reach the ioctl system
// call as unsafe.Pointer and are converted to uintptr in the call expression
// itself (rule 4 of package unsafe).
//
// Errors are *Error values naming the ioctl and wrapping the errno, so callers
// can test them with errors.Is(err, unix.EINTR).
package kvm

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kvmIO is the ioctl type byte of every KVM ioctl (KVMIO).
const kvmIO = 0xAE

// ioctl direction bits, as in the kernel's asm-generic/ioctl.h.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	iocNRShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30
	iocSizeMask  = 1<<14 - 1
)

func ioc(dir, nr, size uintptr) uintptr {
	if size > iocSizeMask {
		panic("kvm: ioctl argument too large") // programming error: fixed structs only
	}
	return dir<<iocDirShift | size<<iocSizeShift | kvmIO<<iocTypeShift | nr<<iocNRShift
}

func io(nr uintptr) uintptr                  { return ioc(iocNone, nr, 0) }
func iow(nr, size uintptr) uintptr           { return ioc(iocWrite, nr, size) }
func ior(nr, size uintptr) uintptr           { return ioc(iocRead, nr, size) }
func iowr(nr, size uintptr) uintptr          { return ioc(iocRead|iocWrite, nr, size) }
func sizeOf[T any]() uintptr                 { var v T; return unsafe.Sizeof(v) }
func iowT[T any](nr uintptr) uintptr         { return iow(nr, sizeOf[T]()) }
func iorT[T any](nr uintptr) uintptr         { return ior(nr, sizeOf[T]()) }
func iowrT[T any](nr uintptr) uintptr        { return iowr(nr, sizeOf[T]()) }
func ioctlName(req uintptr) string           { return ioctlNames[req] }
func errnoErr(op string, e unix.Errno) error { return &Error{Op: op, Errno: e} }

// Ioctl request numbers. Sizes come from the Go mirrors of the kernel
// structures, so a wrong mirror shows up as a wrong number in the tests.
var (
	kvmGetAPIVersion       = io(0x00)
	kvmCreateVM            = io(0x01)
	kvmCheckExtension      = io(0x03)
	kvmGetVCPUMmapSize     = io(0x04)
	kvmGetSupportedCPUID   = iowrT[cpuid2Header](0x05)
	kvmCreateVCPU          = io(0x41)
	kvmSetUserMemoryRegion = iowT[UserspaceMemoryRegion](0x46)
	kvmSetTSSAddr          = io(0x47)
	kvmSetIdentityMapAddr  = iowT[uint64](0x48)
	kvmCreateIRQChip       = io(0x60)
	kvmIRQLine             = iowT[irqLevel](0x61)
	kvmSetGSIRouting       = iowT[irqRoutingHeader](0x6a)
	kvmIRQFD               = iowT[irqfd](0x76)
	kvmCreatePIT2          = iowT[PITConfig](0x77)
	kvmIOEventFD           = iowT[ioeventfd](0x79)
	kvmSignalMSI           = iowT[MSI](0xa5)
	kvmRun                 = io(0x80)
	kvmGetRegs             = iorT[Regs](0x81)
	kvmSetRegs             = iowT[Regs](0x82)
	kvmGetSregs            = iorT[Sregs](0x83)
	kvmSetSregs            = iowT[Sregs](0x84)
	kvmTranslate           = iowrT[Translation](0x85)
	kvmGetMSRs             = iowrT[msrsHeader](0x88)
	kvmSetMSRs             = iowT[msrsHeader](0x89)
	kvmGetFPU              = iorT[FPU](0x8c)
	kvmSetFPU              = iowT[FPU](0x8d)
	kvmGetLAPIC            = iorT[LAPICState](0x8e)
	kvmSetLAPIC            = iowT[LAPICState](0x8f)
	kvmSetCPUID2           = iowT[cpuid2Header](0x90)
	kvmGetMPState          = iorT[uint32](0x98)
	kvmSetMPState          = iowT[uint32](0x99)
)

var ioctlNames = map[uintptr]string{
	kvmGetAPIVersion:       "KVM_GET_API_VERSION",
	kvmCreateVM:            "KVM_CREATE_VM",
	kvmCheckExtension:      "KVM_CHECK_EXTENSION",
	kvmGetVCPUMmapSize:     "KVM_GET_VCPU_MMAP_SIZE",
	kvmGetSupportedCPUID:   "KVM_GET_SUPPORTED_CPUID",
	kvmCreateVCPU:          "KVM_CREATE_VCPU",
	kvmSetUserMemoryRegion: "KVM_SET_USER_MEMORY_REGION",
	kvmSetTSSAddr:          "KVM_SET_TSS_ADDR",
	kvmSetIdentityMapAddr:  "KVM_SET_IDENTITY_MAP_ADDR",
	kvmCreateIRQChip:       "KVM_CREATE_IRQCHIP",
	kvmIRQLine:             "KVM_IRQ_LINE",
	kvmSetGSIRouting:       "KVM_SET_GSI_ROUTING",
	kvmIRQFD:               "KVM_IRQFD",
	kvmCreatePIT2:          "KVM_CREATE_PIT2",
	kvmIOEventFD:           "KVM_IOEVENTFD",
	kvmSignalMSI:           "KVM_SIGNAL_MSI",
	kvmRun:                 "KVM_RUN",
	kvmGetRegs:             "KVM_GET_REGS",
	kvmSetRegs:             "KVM_SET_REGS",
	kvmGetSregs:            "KVM_GET_SREGS",
	kvmSetSregs:            "KVM_SET_SREGS",
	kvmTranslate:           "KVM_TRANSLATE",
	kvmGetMSRs:             "KVM_GET_MSRS",
	kvmSetMSRs:             "KVM_SET_MSRS",
	kvmGetFPU:              "KVM_GET_FPU",
	kvmSetFPU:              "KVM_SET_FPU",
	kvmGetLAPIC:            "KVM_GET_LAPIC",
	kvmSetLAPIC:            "KVM_SET_LAPIC",
	kvmSetCPUID2:           "KVM_SET_CPUID2",
	kvmGetMPState:          "KVM_GET_MP_STATE",
	kvmSetMPState:          "KVM_SET_MP_STATE",
}

// Error is a failed KVM ioctl.
type Error struct {
	Op    string     // ioctl name, e.g. "KVM_RUN"
	Errno unix.Errno // the kernel's error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Op, e.Errno) }

// Unwrap returns the errno, so errors.Is(err, unix.EINTR) works.
func (e *Error) Unwrap() error { return e.Errno }

// ioctlInt issues an ioctl whose argument is an integer (or nothing).
func ioctlInt(f *os.File, req, arg uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, arg)
	runtime.KeepAlive(f)
	if e != 0 {
		return r, errnoErr(ioctlName(req), e)
	}
	return r, nil
}

// ioctlPtr issues an ioctl whose argument points to memory the kernel reads
// or writes. p is converted to uintptr inside the Syscall expression.
func ioctlPtr(f *os.File, req uintptr, p unsafe.Pointer) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(p))
	runtime.KeepAlive(f)
	if e != 0 {
		return r, errnoErr(ioctlName(req), e)
	}
	return r, nil
}

package kvm

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VCPU is a KVM virtual CPU: its fd and its mmap'd struct kvm_run.
//
// Run must be called from one goroutine at a time, normally one locked to
// its OS thread (signals that kick the vCPU out of the guest are sent to a
// thread). The register accessors must not run concurrently with Run.
type VCPU struct {
	f   *os.File
	id  int
	run []byte
}

// ID is the vCPU id given to CreateVCPU (the initial APIC ID).
func (v *VCPU) ID() int { return v.id }

// File returns the underlying file.
func (v *VCPU) File() *os.File { return v.f }

// Close unmaps kvm_run and closes the fd. The vCPU must not be running.
func (v *VCPU) Close() error {
	var err error
	if v.run != nil {
		err = unix.Munmap(v.run)
		v.run = nil
	}
	if cerr := v.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Preallocated errors for the expected KVM_RUN failures, so the run loop
// allocates nothing when a signal kicks the vCPU.
var (
	errRunEINTR  = &Error{Op: "KVM_RUN", Errno: unix.EINTR}
	errRunEAGAIN = &Error{Op: "KVM_RUN", Errno: unix.EAGAIN}
)

// Run is KVM_RUN. It never retries: EINTR (a signal arrived, or
// immediate_exit is set) is returned to the caller as an *Error wrapping
// unix.EINTR. On success ExitReason and the exit accessors describe why the
// guest stopped.
func (v *VCPU) Run() error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, v.f.Fd(), kvmRun, 0)
	runtime.KeepAlive(v.f)
	switch e {
	case 0:
		return nil
	case unix.EINTR:
		return errRunEINTR
	case unix.EAGAIN:
		return errRunEAGAIN
	}
	return errnoErr("KVM_RUN", e)
}

// GetRegs is KVM_GET_REGS.
func (v *VCPU) GetRegs() (Regs, error) {
	var r Regs
	_, err := ioctlPtr(v.f, kvmGetRegs, unsafe.Pointer(&r))
	return r, err
}

// SetRegs is KVM_SET_REGS.
func (v *VCPU) SetRegs(r Regs) error {
	_, err := ioctlPtr(v.f, kvmSetRegs, unsafe.Pointer(&r))
	return err
}

// GetSregs is KVM_GET_SREGS.
func (v *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	_, err := ioctlPtr(v.f, kvmGetSregs, unsafe.Pointer(&s))
	return s, err
}

// SetSregs is KVM_SET_SREGS.
func (v *VCPU) SetSregs(s Sregs) error {
	_, err := ioctlPtr(v.f, kvmSetSregs, unsafe.Pointer(&s))
	return err
}

// SetCPUID2 is KVM_SET_CPUID2.
func (v *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	if len(entries) > maxCPUIDEntries {
		return fmt.Errorf("KVM_SET_CPUID2: %d entries, at most %d", len(entries), maxCPUIDEntries)
	}
	buf := new(cpuidBuffer)
	buf.NEnt = uint32(len(entries))
	copy(buf.Entries[:], entries)
	_, err := ioctlPtr(v.f, kvmSetCPUID2, unsafe.Pointer(buf))
	return err
}

// maxMSRs bounds one Get/SetMSRs call.
const maxMSRs = 64

type msrBuffer struct {
	msrsHeader
	Entries [maxMSRs]MSREntry
}

// GetMSRs is KVM_GET_MSRS: it fills Data of each entry (by Index) and
// fails unless every MSR was read.
func (v *VCPU) GetMSRs(entries []MSREntry) error {
	if len(entries) > maxMSRs {
		return fmt.Errorf("KVM_GET_MSRS: %d entries, at most %d", len(entries), maxMSRs)
	}
	var buf msrBuffer
	buf.NMSRs = uint32(len(entries))
	copy(buf.Entries[:], entries)
	n, err := ioctlPtr(v.f, kvmGetMSRs, unsafe.Pointer(&buf))
	if err != nil {
		return err
	}
	if int(n) != len(entries) {
		return fmt.Errorf("KVM_GET_MSRS: read %d of %d MSRs (MSR %#x failed)", n, len(entries), entries[n].Index)
	}
	copy(entries, buf.Entries[:len(entries)])
	return nil
}

// SetMSRs is KVM_SET_MSRS; it fails unless every MSR was written.
func (v *VCPU) SetMSRs(entries []MSREntry) error {
	if len(entries) > maxMSRs {
		return fmt.Errorf("KVM_SET_MSRS: %d entries, at most %d", len(entries), maxMSRs)
	}
	var buf msrBuffer
	buf.NMSRs = uint32(len(entries))
	copy(buf.Entries[:], entries)
	n, err := ioctlPtr(v.f, kvmSetMSRs, unsafe.Pointer(&buf))
	if err != nil {
		return err
	}
	if int(n) != len(entries) {
		return fmt.Errorf("KVM_SET_MSRS: wrote %d of %d MSRs (MSR %#x failed)", n, len(entries), entries[n].Index)
	}
	return nil
}

// GetLAPIC is KVM_GET_LAPIC.
func (v *VCPU) GetLAPIC() (*LAPICState, error) {
	s := new(LAPICState)
	_, err := ioctlPtr(v.f, kvmGetLAPIC, unsafe.Pointer(s))
	return s, err
}

// SetLAPIC is KVM_SET_LAPIC.
func (v *VCPU) SetLAPIC(s *LAPICState) error {
	_, err := ioctlPtr(v.f, kvmSetLAPIC, unsafe.Pointer(s))
	return err
}

// GetFPU is KVM_GET_FPU.
func (v *VCPU) GetFPU() (*FPU, error) {
	f := new(FPU)
	_, err := ioctlPtr(v.f, kvmGetFPU, unsafe.Pointer(f))
	return f, err
}

// SetFPU is KVM_SET_FPU.
func (v *VCPU) SetFPU(f *FPU) error {
	_, err := ioctlPtr(v.f, kvmSetFPU, unsafe.Pointer(f))
	return err
}

// Translate is KVM_TRANSLATE: the guest-physical address of a linear
// address under the vCPU's current paging mode.
func (v *VCPU) Translate(linear uint64) (Translation, error) {
	t := Translation{LinearAddress: linear}
	_, err := ioctlPtr(v.f, kvmTranslate, unsafe.Pointer(&t))
	return t, err
}

// GetMPState is KVM_GET_MP_STATE (one of the MPState constants).
func (v *VCPU) GetMPState() (uint32, error) {
	var s uint32
	_, err := ioctlPtr(v.f, kvmGetMPState, unsafe.Pointer(&s))
	return s, err
}

// SetMPState is KVM_SET_MP_STATE.
func (v *VCPU) SetMPState(s uint32) error {
	_, err := ioctlPtr(v.f, kvmSetMPState, unsafe.Pointer(&s))
	return err
}

// LAPIC register offsets and fields used when setting up a vCPU.
const (
	LAPICRegLVTLINT0 = 0x350
	LAPICRegLVTLINT1 = 0x360

	LAPICDeliveryModeMask   = 0x700
	LAPICDeliveryModeNMI    = 0x400
	LAPICDeliveryModeExtINT = 0x700
	LAPICLVTMasked          = 1 << 16
)

// Reg32 reads a 32-bit LAPIC register at off.
func (s *LAPICState) Reg32(off int) uint32 {
	b := s.Regs[off : off+4]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// SetReg32 writes a 32-bit LAPIC register at off.
func (s *LAPICState) SetReg32(off int, v uint32) {
	b := s.Regs[off : off+4]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

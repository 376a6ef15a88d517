package vmm

import (
	"fmt"
	"strings"

	"github.com/rscvm/rscvm/vmm/kvm"
)

// GuestError is a guest crash or a KVM exit the machine cannot handle (a
// triple fault, an instruction KVM could not emulate, a failed VM entry).
// Its message names the exit, the guest RIP and the instruction bytes there:
//
//	guest stopped: KVM internal error (suberror 1: emulation failure) at RIP 0xffffffff81234567: instruction bytes cc 0f 1f 44 00 00 (vCPU 0)
type GuestError struct {
	VCPU  int
	Exit  string   // what happened, e.g. "triple fault (KVM_EXIT_SHUTDOWN)"
	Data  []uint64 // extra words KVM supplied (internal errors)
	RIP   uint64
	Insn  []byte // instruction bytes at RIP (from KVM, or read from guest memory)
	Regs  kvm.Regs
	Sregs kvm.Sregs
	// RegsErr is why the registers could not be read; InsnErr why no
	// instruction bytes could be read.
	RegsErr error
	InsnErr error
}

func (e *GuestError) Error() string {
	var b strings.Builder
	b.WriteString("guest stopped: ")
	b.WriteString(e.Exit)
	if e.RegsErr != nil {
		fmt.Fprintf(&b, " (registers unavailable: %v)", e.RegsErr)
	} else {
		fmt.Fprintf(&b, " at RIP %#x", e.RIP)
	}
	switch {
	case len(e.Insn) > 0:
		b.WriteString(": instruction bytes")
		for _, c := range e.Insn {
			fmt.Fprintf(&b, " %02x", c)
		}
	case e.InsnErr != nil:
		fmt.Fprintf(&b, ": instruction bytes unavailable: %v", e.InsnErr)
	}
	if len(e.Data) > 0 {
		b.WriteString(" (KVM data")
		for _, d := range e.Data {
			fmt.Fprintf(&b, " %#x", d)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, " (vCPU %d)", e.VCPU)
	return b.String()
}

// maxInsnLen is the longest x86 instruction.
const maxInsnLen = 15

// guestError builds the GuestError for vCPU v. insn are instruction bytes
// KVM supplied, if any.
func (m *Machine) guestError(v *vcpu, exit string, insn []byte, data []uint64) error {
	e := &GuestError{VCPU: v.id, Exit: exit, Data: data, Insn: insn}
	regs, err := v.kv.GetRegs()
	if err == nil {
		e.Sregs, err = v.kv.GetSregs()
	}
	if err != nil {
		e.RegsErr = err
		if len(insn) == 0 {
			e.InsnErr = err
		}
		return e
	}
	e.Regs, e.RIP = regs, regs.RIP
	if len(insn) == 0 {
		e.Insn, e.InsnErr = m.fetchInsn(v, regs, e.Sregs)
	}
	return e
}

// fetchInsn reads up to 15 bytes at CS:RIP, translating linear addresses
// with KVM_TRANSLATE when paging is on, page by page.
func (m *Machine) fetchInsn(v *vcpu, regs kvm.Regs, sregs kvm.Sregs) ([]byte, error) {
	linear := regs.RIP
	if !(sregs.EFER&eferLMA != 0 && sregs.CS.L != 0) { // not 64-bit code: segmented
		linear = (sregs.CS.Base + regs.RIP) & 0xFFFFFFFF
	}
	paging := sregs.CR0&cr0PG != 0
	out := make([]byte, 0, maxInsnLen)
	for len(out) < maxInsnLen {
		lin := linear + uint64(len(out))
		gpa := lin
		if paging {
			t, err := v.kv.Translate(lin)
			if err == nil && t.Valid == 0 {
				err = fmt.Errorf("linear address %#x is not mapped", lin)
			}
			if err != nil {
				if len(out) == 0 {
					return nil, err
				}
				break
			}
			gpa = t.PhysicalAddress
		}
		n := min(uint64(maxInsnLen-len(out)), 0x1000-lin&0xFFF)
		s, err := m.mem.Slice(gpa, n)
		if err != nil {
			// Take what there is up to the end of RAM.
			for ; n > 0 && err != nil; n-- {
				s, err = m.mem.Slice(gpa, n-1)
			}
			if len(s) == 0 {
				if len(out) == 0 {
					return nil, fmt.Errorf("RIP at guest-physical %#x, outside RAM", gpa)
				}
				break
			}
			out = append(out, s...)
			break
		}
		out = append(out, s...)
	}
	return out, nil
}

package vmm

import (
	"fmt"

	"github.com/rscvm/rscvm/vmm/kvm"
)

// BootEntry is how the BSP enters the kernel: 32-bit protected mode, paging
// off, flat segments from a GDT in guest memory. Its fields are those of
// boot.Entry, in the same order, so vmm.BootEntry(e) converts one.
type BootEntry struct {
	RIP      uint64 // 32-bit protected-mode entry point
	RSI      uint64 // bzImage: GPA of boot_params; 0 for PVH
	RBX      uint64 // PVH: GPA of hvm_start_info; 0 for bzImage
	GDTBase  uint64 // GPA of the GDT in guest memory
	GDTLimit uint16
	CodeSel  uint16 // flat 32-bit code segment selector
	DataSel  uint16 // flat 32-bit data segment selector
}

// Control-register bits.
const (
	cr0PE    = 1 << 0
	cr0PG    = 1 << 31
	eferLMA  = 1 << 10
	rflagsRe = 1 << 1 // reserved, always 1
)

// SetBootEntry sets the BSP's registers from e: CR0 = PE, CR4 = EFER = 0,
// CS from e.CodeSel and DS/ES/FS/GS/SS from e.DataSel (descriptors read
// from the GDT in guest memory), a valid busy TSS in TR as KVM requires,
// RFLAGS = 0x2 (interrupts off), and RIP/RSI/RBX from e. Other vCPUs wait
// for the guest's INIT/SIPI.
func (m *Machine) SetBootEntry(e BootEntry) error {
	if m.started.Load() {
		return fmt.Errorf("vmm: SetBootEntry after Run")
	}
	code, err := m.gdtSegment(e, e.CodeSel, true)
	if err != nil {
		return err
	}
	data, err := m.gdtSegment(e, e.DataSel, false)
	if err != nil {
		return err
	}
	bsp := m.vcpus[0].kv
	s, err := bsp.GetSregs()
	if err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = kvm.Segment{Limit: 0xFFFF, Type: 11, Present: 1} // 32-bit busy TSS
	s.LDT = kvm.Segment{Limit: 0xFFFF, Type: 2, Present: 1}
	s.GDT = kvm.DTable{Base: e.GDTBase, Limit: e.GDTLimit}
	s.CR0 = cr0PE
	s.CR3, s.CR4, s.EFER = 0, 0, 0
	if err := bsp.SetSregs(s); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	if err := bsp.SetRegs(kvm.Regs{RIP: e.RIP, RSI: e.RSI, RBX: e.RBX, RFLAGS: rflagsRe}); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	m.bootSet.Store(true)
	return nil
}

// gdtSegment decodes the descriptor for sel from the GDT in guest memory
// into the hidden segment state KVM needs.
func (m *Machine) gdtSegment(e BootEntry, sel uint16, code bool) (kvm.Segment, error) {
	off := uint64(sel &^ 7)
	if sel&4 != 0 || sel < 8 || off+7 > uint64(e.GDTLimit) {
		return kvm.Segment{}, fmt.Errorf("vmm: boot entry: selector %#x outside the GDT (limit %#x)", sel, e.GDTLimit)
	}
	d, err := m.mem.U64(e.GDTBase + off)
	if err != nil {
		return kvm.Segment{}, fmt.Errorf("vmm: boot entry: GDT descriptor %#x at %#x: %w", sel, e.GDTBase+off, err)
	}
	seg := decodeDescriptor(d)
	seg.Selector = sel
	switch {
	case seg.Present == 0 || seg.S == 0:
		return kvm.Segment{}, fmt.Errorf("vmm: boot entry: descriptor %#x (%#016x) is not a present code/data segment", sel, d)
	case code && seg.Type&8 == 0:
		return kvm.Segment{}, fmt.Errorf("vmm: boot entry: descriptor %#x (%#016x) is not a code segment", sel, d)
	case !code && (seg.Type&8 != 0 || seg.Type&2 == 0):
		return kvm.Segment{}, fmt.Errorf("vmm: boot entry: descriptor %#x (%#016x) is not a writable data segment", sel, d)
	}
	seg.Type |= 1 // accessed, as after a segment load
	return seg, nil
}

// decodeDescriptor unpacks an 8-byte code/data segment descriptor.
func decodeDescriptor(d uint64) kvm.Segment {
	limit := uint32(d&0xFFFF) | uint32(d>>48&0xF)<<16
	g := uint8(d >> 55 & 1)
	if g != 0 {
		limit = limit<<12 | 0xFFF
	}
	access := uint8(d >> 40)
	return kvm.Segment{
		Base:    d>>16&0xFFFFFF | (d>>56&0xFF)<<24,
		Limit:   limit,
		Type:    access & 0xF,
		S:       access >> 4 & 1,
		DPL:     access >> 5 & 3,
		Present: access >> 7,
		AVL:     uint8(d >> 52 & 1),
		L:       uint8(d >> 53 & 1),
		DB:      uint8(d >> 54 & 1),
		G:       g,
	}
}

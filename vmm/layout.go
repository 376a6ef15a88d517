package vmm

// Guest-physical layout shared by the machine, the loader and the devices.
const (
	// PCIHoleStart is where guest RAM stops below 4 GiB; [PCIHoleStart,
	// 4 GiB) holds the 32-bit PCI MMIO window, the IOAPIC, the local APIC
	// and KVM's private pages.
	PCIHoleStart = 0xC000_0000
	// HighRAMStart is where RAM above PCIHoleStart continues.
	HighRAMStart = 0x1_0000_0000
	// PCIMMIO32Start and PCIMMIO32End bound the 32-bit PCI MMIO window
	// (End is exclusive).
	PCIMMIO32Start = 0xC000_0000
	PCIMMIO32End   = 0xFEC0_0000
	// IOAPICAddr and LAPICAddr are the interrupt controllers' MMIO pages
	// (handled inside KVM).
	IOAPICAddr = 0xFEC0_0000
	LAPICAddr  = 0xFEE0_0000
	// IdentityMapAddr (one page) and TSSAddr (three pages) are the
	// guest-physical pages KVM keeps for itself on Intel hosts; they lie in
	// the PCI hole, outside RAM and outside the PCI MMIO window.
	IdentityMapAddr = 0xFFFB_C000
	TSSAddr         = 0xFFFB_D000
	// PCIMMIO64Size is the size of the 64-bit PCI MMIO window.
	PCIMMIO64Size = 64 << 30
)

// RAMRange is a contiguous range of guest RAM.
type RAMRange struct {
	GPA  uint64
	Size uint64
}

// End is the first address after the range.
func (r RAMRange) End() uint64 { return r.GPA + r.Size }

// RAMLayout splits memBytes of RAM around the PCI hole: [0, min(mem, 3 GiB))
// and, for the rest, [4 GiB, 4 GiB + mem - 3 GiB).
func RAMLayout(memBytes uint64) []RAMRange {
	if memBytes <= PCIHoleStart {
		return []RAMRange{{0, memBytes}}
	}
	return []RAMRange{{0, PCIHoleStart}, {HighRAMStart, memBytes - PCIHoleStart}}
}

// PCIMMIO64Start is the base of the 64-bit PCI MMIO window: the end of high
// RAM (at least 4 GiB) rounded up to 1 GiB.
func PCIMMIO64Start(memBytes uint64) uint64 {
	end := uint64(HighRAMStart)
	if rs := RAMLayout(memBytes); len(rs) > 1 {
		end = rs[1].End()
	}
	const gib = 1 << 30
	return (end + gib - 1) &^ (gib - 1)
}

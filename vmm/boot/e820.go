package boot

import (
	"fmt"
	"sort"

	"github.com/rscvm/rscvm/vmm/memory"
)

// E820Type is the type of an E820 memory-map entry (also used by the PVH
// memory map, whose type values are the same).
type E820Type uint32

// E820 entry types.
const (
	E820RAM      E820Type = 1 // usable RAM
	E820Reserved E820Type = 2 // reserved, not usable by the OS
	E820ACPI     E820Type = 3 // ACPI tables, reclaimable after parsing
	E820NVS      E820Type = 4 // ACPI non-volatile storage
	E820Unusable E820Type = 5 // bad memory
)

// String names the type as Linux prints it.
func (t E820Type) String() string {
	switch t {
	case E820RAM:
		return "usable"
	case E820Reserved:
		return "reserved"
	case E820ACPI:
		return "ACPI data"
	case E820NVS:
		return "ACPI NVS"
	case E820Unusable:
		return "unusable"
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// E820Entry is one range of the guest's physical memory map.
type E820Entry struct {
	Addr uint64
	Size uint64
	Type E820Type
}

// End is the first address after the entry.
func (e E820Entry) End() uint64 { return e.Addr + e.Size }

// e820Limit is the number of entries boot_params.e820_table holds.
const e820Limit = 128

// layoutRanges classifies the guest-physical address space as the machine
// layout does. Ranges not listed (the VGA/option-ROM hole [0xA0000,0xE0000)
// and the PCI hole [0xC0000000,4 GiB)) are left out of the map.
var layoutRanges = []struct {
	start, end uint64
	typ        E820Type
}{
	{0, ebdaStart, E820RAM},
	{ebdaStart, ebdaEnd, E820Reserved},
	{biosAreaStart, biosAreaEnd, E820Reserved}, // ACPI tables, RSDP at 0xE0000
	{biosAreaEnd, pciHoleStart, E820RAM},
	{fourGiB, ^uint64(0), E820RAM},
}

// BuildE820 builds the guest's E820 map from its RAM regions (as returned by
// memory.Memory.Regions): the parts of RAM inside each range of the machine
// layout get that range's type; adjacent entries of the same type are merged.
// The result is sorted by address.
func BuildE820(regions []memory.Region) []E820Entry {
	var out []E820Entry
	for _, r := range regions {
		for _, lr := range layoutRanges {
			s, e := max(r.GPA, lr.start), min(r.End(), lr.end)
			if s < e {
				out = append(out, E820Entry{Addr: s, Size: e - s, Type: lr.typ})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	merged := out[:0]
	for _, e := range out {
		if n := len(merged); n > 0 && merged[n-1].Type == e.Type && merged[n-1].End() == e.Addr {
			merged[n-1].Size += e.Size
			continue
		}
		merged = append(merged, e)
	}
	return merged
}

// usableRange reports whether [addr, addr+size) lies inside one usable entry.
func usableRange(e820 []E820Entry, addr, size uint64) bool {
	end := addr + size
	if end < addr {
		return false
	}
	for _, e := range e820 {
		if e.Type == E820RAM && addr >= e.Addr && end <= e.End() {
			return true
		}
	}
	return false
}

// placeInitrd finds the highest page-aligned address at which size bytes fit
// in usable RAM, end at or below limit (exclusive), and start at or above
// floor.
func placeInitrd(e820 []E820Entry, size, floor, limit uint64) (uint64, error) {
	for i := len(e820) - 1; i >= 0; i-- {
		e := e820[i]
		if e.Type != E820RAM {
			continue
		}
		lo, hi := max(e.Addr, floor), min(e.End(), limit)
		if hi <= lo || hi-lo < size {
			continue
		}
		addr := (hi - size) &^ (pageSize - 1)
		if addr >= lo {
			return addr, nil
		}
	}
	return 0, fmt.Errorf("initrd of %d bytes does not fit in usable RAM between %#x and %#x", size, floor, limit)
}

// guestWrite copies p to guest memory at gpa; unlike memory.Memory.Write it
// may cross adjacent regions.
func guestWrite(mem *memory.Memory, gpa uint64, p []byte) error {
	return guestFill(mem, gpa, uint64(len(p)), p)
}

// guestZero zeroes n bytes of guest memory at gpa (possibly across regions).
func guestZero(mem *memory.Memory, gpa, n uint64) error {
	return guestFill(mem, gpa, n, nil)
}

func guestFill(mem *memory.Memory, gpa, n uint64, p []byte) error {
	if gpa+n < gpa {
		return fmt.Errorf("write of %#x bytes at %#x: %w", n, gpa, memory.ErrOutOfRange)
	}
	// First pass checks that the whole range is backed, so that a failed
	// write leaves guest memory untouched; the second pass writes.
	for pass := 0; pass < 2; pass++ {
		addr, left, src := gpa, n, p
		for left > 0 {
			var dst []byte
			for _, r := range mem.Regions() {
				if addr >= r.GPA && addr < r.End() {
					dst = r.Host[addr-r.GPA:]
					break
				}
			}
			if dst == nil {
				return fmt.Errorf("write of %#x bytes at %#x: %w", n, gpa, memory.ErrOutOfRange)
			}
			if uint64(len(dst)) > left {
				dst = dst[:left]
			}
			if pass == 1 {
				if src != nil {
					copy(dst, src)
					src = src[len(dst):]
				} else {
					clear(dst)
				}
			}
			addr += uint64(len(dst))
			left -= uint64(len(dst))
		}
	}
	return nil
}

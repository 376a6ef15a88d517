// Package acpi builds the guest's ACPI tables: RSDP, XSDT, FADT, FACS, MADT
// and a DSDT (PCI root bridge with its interrupt routing, COM1, \_S5_),
// placed in the reserved BIOS area [0xE0000, 0x100000) with the RSDP at
// 0xE0000. It also has a reader that walks and checks tables in guest
// memory, for tests and diagnostics.
package acpi

import (
	"encoding/binary"
	"fmt"

	"github.com/rscvm/rscvm/vmm/memory"
)

// Placement of the tables.
const (
	// RSDPAddr is the guest-physical address of the RSDP.
	RSDPAddr = 0xE0000
	// RegionEnd is the end of the area the tables live in.
	RegionEnd = 0x100000
)

// Machine facts the tables describe (see the shared machine layout).
const (
	LocalAPICAddr = 0xFEE00000
	IOAPICAddr    = 0xFEC00000
	PM1aEvtBlk    = 0x600 // PM1a event block: status, enable (2 bytes each)
	PM1aCntBlk    = 0x604 // PM1a control block (2 bytes)
	PMTmrBlk      = 0x608 // PM timer (4 bytes, 32-bit)
	ResetPort     = 0xCF9
	ResetValue    = 0x06
	SCIIRQ        = 9
	MMIO32Base    = 0xC0000000
	MMIO32Limit   = 0xFEBFFFFF // inclusive
	COM1Port      = 0x3F8
	COM1IRQ       = 4
	// MaxCPUs is the largest vCPU count the MADT describes (xAPIC IDs
	// 0..n-1 and the IOAPIC ID n must stay below 255).
	MaxCPUs = 254

	mmio64Align = 1 << 30
	// MMIO64Size is the size of the 64-bit PCI MMIO window.
	MMIO64Size = 64 << 30
)

// Identification written into every table header.
const (
	OEMID           = "RSCVM "
	OEMTableID      = "RSCVM   "
	OEMRevision     = 1
	CreatorID       = "RSCV"
	CreatorRevision = 1
)

// Config describes the machine the tables are built for.
type Config struct {
	// CPUs is the number of vCPUs (1..MaxCPUs); vCPU i has APIC ID i.
	CPUs int
	// MMIO64Base and MMIO64Size are the 64-bit PCI MMIO window of the root
	// bridge; a zero size leaves the window out.
	MMIO64Base uint64
	MMIO64Size uint64
}

// MMIO64Window computes the 64-bit PCI MMIO window from the guest's RAM
// regions: it starts at max(4 GiB, end of RAM) rounded up to 1 GiB and is
// MMIO64Size bytes long.
func MMIO64Window(regions []memory.Region) (base, size uint64) {
	end := uint64(1 << 32)
	for _, r := range regions {
		end = max(end, r.End())
	}
	return (end + mmio64Align - 1) &^ (mmio64Align - 1), MMIO64Size
}

// GSIForPin is the IOAPIC GSI of PCI slot's interrupt pin (1 = INTA .. 4 =
// INTD), as both the _PRT and the config-space Interrupt Line report it.
func GSIForPin(slot, pin int) uint32 {
	return 16 + uint32((slot+pin-1)%8)
}

// Build generates the tables and writes them at RSDPAddr, after zeroing the
// whole area [RSDPAddr, RegionEnd), which must be guest memory.
func Build(mem *memory.Memory, cfg Config) error {
	img, err := Generate(cfg)
	if err != nil {
		return err
	}
	area, err := mem.Slice(RSDPAddr, RegionEnd-RSDPAddr)
	if err != nil {
		return fmt.Errorf("acpi: table area [%#x,%#x): %w", RSDPAddr, RegionEnd, err)
	}
	clear(area)
	copy(area, img)
	return nil
}

// Generate returns the bytes of the table area as they must appear at
// RSDPAddr: RSDP, FACS, XSDT, FADT, MADT and DSDT.
func Generate(cfg Config) ([]byte, error) {
	if cfg.CPUs < 1 || cfg.CPUs > MaxCPUs {
		return nil, fmt.Errorf("acpi: %d vCPUs, want 1..%d", cfg.CPUs, MaxCPUs)
	}
	if cfg.MMIO64Size != 0 && cfg.MMIO64Base+cfg.MMIO64Size-1 < cfg.MMIO64Base {
		return nil, fmt.Errorf("acpi: 64-bit MMIO window %#x+%#x overflows", cfg.MMIO64Base, cfg.MMIO64Size)
	}
	dsdt, err := buildDSDT(cfg)
	if err != nil {
		return nil, err
	}
	madt := buildMADT(cfg)

	// Lay out: RSDP at 0, FACS 64-byte aligned, then the others 16-byte
	// aligned.
	var img []byte
	place := func(b []byte, align int) uint64 {
		for len(img)%align != 0 {
			img = append(img, 0)
		}
		off := len(img)
		img = append(img, b...)
		return RSDPAddr + uint64(off)
	}
	place(make([]byte, rsdpLen), 1)
	facsAddr := place(buildFACS(), 64)
	const xsdtEntries = 2
	xsdtAddr := place(make([]byte, headerLen+8*xsdtEntries), 16)
	dsdtAddr := place(dsdt, 16)
	fadtAddr := place(buildFADT(facsAddr, dsdtAddr), 16)
	madtAddr := place(madt, 16)
	if RSDPAddr+uint64(len(img)) > RegionEnd {
		return nil, fmt.Errorf("acpi: tables need %d bytes, more than the %d at %#x", len(img), RegionEnd-RSDPAddr, RSDPAddr)
	}

	xsdt := img[xsdtAddr-RSDPAddr:][:headerLen+8*xsdtEntries]
	putHeader(xsdt, "XSDT", 1)
	binary.LittleEndian.PutUint64(xsdt[headerLen:], fadtAddr)
	binary.LittleEndian.PutUint64(xsdt[headerLen+8:], madtAddr)
	setChecksum(xsdt, 9)

	putRSDP(img[:rsdpLen], xsdtAddr)
	return img, nil
}

// Sizes and offsets common to the tables.
const (
	rsdpLen   = 36
	headerLen = 36
)

// putHeader fills a system description table header over the whole of b
// (its length is len(b)); the checksum is set by setChecksum.
func putHeader(b []byte, sig string, rev uint8) {
	copy(b[0:4], sig)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	b[8] = rev
	b[9] = 0
	copy(b[10:16], OEMID)
	copy(b[16:24], OEMTableID)
	binary.LittleEndian.PutUint32(b[24:], OEMRevision)
	copy(b[28:32], CreatorID)
	binary.LittleEndian.PutUint32(b[32:], CreatorRevision)
}

// setChecksum sets b[at] so that the bytes of b sum to zero.
func setChecksum(b []byte, at int) {
	b[at] = 0
	b[at] = -sum8(b)
}

func sum8(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

func putRSDP(b []byte, xsdt uint64) {
	copy(b[0:8], "RSD PTR ")
	copy(b[9:15], OEMID)
	b[15] = 2 // revision: ACPI 2.0+, XSDT valid
	binary.LittleEndian.PutUint32(b[16:], 0)
	binary.LittleEndian.PutUint32(b[20:], rsdpLen)
	binary.LittleEndian.PutUint64(b[24:], xsdt)
	b[8] = 0
	b[8] = -sum8(b[:20])
	b[32] = 0
	b[32] = -sum8(b[:rsdpLen])
}

func buildFACS() []byte {
	b := make([]byte, 64)
	copy(b[0:4], "FACS")
	binary.LittleEndian.PutUint32(b[4:], 64)
	b[32] = 2 // version
	return b
}

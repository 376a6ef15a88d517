package acpi

import "encoding/binary"

// MADT structure types and flags (ACPI 6.x section 5.2.12).
const (
	madtRevision    = 5
	madtPCATCompat  = 1 << 0
	madtLocalAPIC   = 0
	madtIOAPIC      = 1
	madtOverride    = 2
	madtLocalNMI    = 4
	madtLAPICEnable = 1 << 0

	// MPS INTI flags.
	intiActiveHigh = 0x1
	intiActiveLow  = 0x3
	intiEdge       = 0x1 << 2
	intiLevel      = 0x3 << 2
)

// buildMADT describes one enabled local APIC per vCPU (processor UID and APIC
// ID i), the IOAPIC (ID = number of vCPUs) with GSI base 0, the ISA
// overrides IRQ0->GSI2 (edge) and IRQ9->GSI9 (level, active high: the SCI),
// and LINT1 of every processor as NMI.
func buildMADT(cfg Config) []byte {
	le := binary.LittleEndian
	b := make([]byte, headerLen+8)
	le.PutUint32(b[headerLen:], LocalAPICAddr)
	le.PutUint32(b[headerLen+4:], madtPCATCompat)
	for i := 0; i < cfg.CPUs; i++ {
		e := make([]byte, 8)
		e[0], e[1], e[2], e[3] = madtLocalAPIC, 8, byte(i), byte(i)
		le.PutUint32(e[4:], madtLAPICEnable)
		b = append(b, e...)
	}
	io := make([]byte, 12)
	io[0], io[1], io[2] = madtIOAPIC, 12, byte(cfg.CPUs)
	le.PutUint32(io[4:], IOAPICAddr)
	le.PutUint32(io[8:], 0)
	b = append(b, io...)
	override := func(src uint8, gsi uint32, flags uint16) {
		e := make([]byte, 10)
		e[0], e[1], e[2], e[3] = madtOverride, 10, 0, src
		le.PutUint32(e[4:], gsi)
		le.PutUint16(e[8:], flags)
		b = append(b, e...)
	}
	override(0, 2, intiActiveHigh|intiEdge)
	override(SCIIRQ, SCIIRQ, intiActiveHigh|intiLevel)
	nmi := make([]byte, 6)
	nmi[0], nmi[1], nmi[2] = madtLocalNMI, 6, 0xFF // all processors
	le.PutUint16(nmi[3:], intiActiveHigh|intiEdge)
	nmi[5] = 1 // LINT1
	b = append(b, nmi...)
	putHeader(b, "APIC", madtRevision)
	setChecksum(b, 9)
	return b
}

package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/rscvm/rscvm/vmm/memory"
)

// maxTableLen bounds the length a table header may claim.
const maxTableLen = 1 << 20

// Table is one system description table read from guest memory.
type Table struct {
	Signature  string
	Addr       uint64
	Revision   uint8
	OEMID      string
	OEMTableID string
	CreatorID  string
	Data       []byte // the whole table, header included
}

// Tables is what Read found.
type Tables struct {
	RSDPRevision uint8
	XSDTAddr     uint64
	XSDT         *Table
	Tables       []*Table // the tables the XSDT lists, in order
	DSDT         *Table   // from the FADT
	FACS         []byte   // from the FADT; nil if absent
	FADT         *FADT
	MADT         *MADT
}

// Find returns the first table with the signature, or nil.
func (t *Tables) Find(sig string) *Table {
	for _, tb := range t.Tables {
		if tb.Signature == sig {
			return tb
		}
	}
	if sig == "DSDT" {
		return t.DSDT
	}
	return nil
}

// GAS is a Generic Address Structure.
type GAS struct {
	Space, BitWidth, BitOffset, AccessSize uint8
	Addr                                   uint64
}

// FADT holds the decoded fields of a FADT that the VMM cares about.
type FADT struct {
	Revision      uint8
	MinorVersion  uint8
	FirmwareCtrl  uint32
	DSDT          uint32
	SCIInt        uint16
	SMICmd        uint32
	PM1aEvtBlk    uint32
	PM1aCntBlk    uint32
	PMTmrBlk      uint32
	PM1EvtLen     uint8
	PM1CntLen     uint8
	PMTmrLen      uint8
	IAPCBootArch  uint16
	Flags         uint32
	ResetReg      GAS
	ResetValue    uint8
	XFirmwareCtrl uint64
	XDSDT         uint64
	XPM1aEvtBlk   GAS
	XPM1aCntBlk   GAS
	XPMTmrBlk     GAS
	HypervisorID  uint64
	HasExtensions bool // the table reaches X_PM_TMR_BLK
}

// MADTLocalAPIC is a Processor Local APIC structure.
type MADTLocalAPIC struct {
	ProcessorUID, APICID uint8
	Flags                uint32
}

// MADTIOAPIC is an I/O APIC structure.
type MADTIOAPIC struct {
	ID      uint8
	Addr    uint32
	GSIBase uint32
}

// MADTOverride is an Interrupt Source Override structure.
type MADTOverride struct {
	Bus, Source uint8
	GSI         uint32
	Flags       uint16
}

// MADTLocalNMI is a Local APIC NMI structure.
type MADTLocalNMI struct {
	ProcessorUID uint8
	Flags        uint16
	LINT         uint8
}

// MADT is a decoded MADT.
type MADT struct {
	LocalAPICAddr uint32
	Flags         uint32
	LocalAPICs    []MADTLocalAPIC
	IOAPICs       []MADTIOAPIC
	Overrides     []MADTOverride
	LocalNMIs     []MADTLocalNMI
	Other         [][]byte // structures of other types, raw
	Entries       int      // number of interrupt controller structures
}

// Read walks the tables from the RSDP at rsdp: it checks the RSDP (revision
// 2 or later, both checksums), the XSDT and every table it lists (signature,
// length and checksum), follows the FADT to the DSDT and FACS, and decodes
// the FADT and the MADT.
func Read(mem *memory.Memory, rsdp uint64) (*Tables, error) {
	r := make([]byte, rsdpLen)
	if err := mem.Read(rsdp, r); err != nil {
		return nil, fmt.Errorf("acpi: reading RSDP at %#x: %w", rsdp, err)
	}
	if string(r[:8]) != "RSD PTR " {
		return nil, fmt.Errorf("acpi: no RSDP signature at %#x", rsdp)
	}
	if sum8(r[:20]) != 0 {
		return nil, errors.New("acpi: RSDP checksum mismatch")
	}
	t := &Tables{RSDPRevision: r[15]}
	if r[15] < 2 {
		return nil, fmt.Errorf("acpi: RSDP revision %d has no XSDT", r[15])
	}
	if l := binary.LittleEndian.Uint32(r[20:]); l != rsdpLen {
		return nil, fmt.Errorf("acpi: RSDP length %d, want %d", l, rsdpLen)
	}
	if sum8(r) != 0 {
		return nil, errors.New("acpi: RSDP extended checksum mismatch")
	}
	t.XSDTAddr = binary.LittleEndian.Uint64(r[24:])
	xsdt, err := readTable(mem, t.XSDTAddr, "XSDT")
	if err != nil {
		return nil, err
	}
	t.XSDT = xsdt
	if (len(xsdt.Data)-headerLen)%8 != 0 {
		return nil, fmt.Errorf("acpi: XSDT length %d is not a header plus 8-byte entries", len(xsdt.Data))
	}
	for off := headerLen; off < len(xsdt.Data); off += 8 {
		addr := binary.LittleEndian.Uint64(xsdt.Data[off:])
		tb, err := readTable(mem, addr, "")
		if err != nil {
			return nil, fmt.Errorf("acpi: XSDT entry %d: %w", (off-headerLen)/8, err)
		}
		t.Tables = append(t.Tables, tb)
		switch tb.Signature {
		case "FACP":
			if t.FADT != nil {
				return nil, errors.New("acpi: more than one FADT")
			}
			if t.FADT, err = decodeFADT(tb.Data); err != nil {
				return nil, err
			}
		case "APIC":
			if t.MADT != nil {
				return nil, errors.New("acpi: more than one MADT")
			}
			if t.MADT, err = DecodeMADT(tb.Data); err != nil {
				return nil, err
			}
		}
	}
	if f := t.FADT; f != nil {
		dsdt := f.XDSDT
		if dsdt == 0 {
			dsdt = uint64(f.DSDT)
		} else if f.DSDT != 0 && uint64(f.DSDT) != dsdt {
			return nil, fmt.Errorf("acpi: FADT DSDT %#x and X_DSDT %#x differ", f.DSDT, dsdt)
		}
		if t.DSDT, err = readTable(mem, dsdt, "DSDT"); err != nil {
			return nil, err
		}
		facs := f.XFirmwareCtrl
		if facs == 0 {
			facs = uint64(f.FirmwareCtrl)
		}
		if facs != 0 {
			b := make([]byte, 64)
			if err := mem.Read(facs, b); err != nil {
				return nil, fmt.Errorf("acpi: reading FACS at %#x: %w", facs, err)
			}
			if string(b[:4]) != "FACS" || binary.LittleEndian.Uint32(b[4:]) < 64 {
				return nil, fmt.Errorf("acpi: bad FACS at %#x", facs)
			}
			if facs%64 != 0 {
				return nil, fmt.Errorf("acpi: FACS at %#x is not 64-byte aligned", facs)
			}
			t.FACS = b
		}
	}
	return t, nil
}

// readTable reads and checks the table at addr; sig, if not empty, is the
// signature it must have.
func readTable(mem *memory.Memory, addr uint64, sig string) (*Table, error) {
	h := make([]byte, headerLen)
	if err := mem.Read(addr, h); err != nil {
		return nil, fmt.Errorf("acpi: reading table header at %#x: %w", addr, err)
	}
	if sig != "" && string(h[:4]) != sig {
		return nil, fmt.Errorf("acpi: table at %#x has signature %q, want %q", addr, h[:4], sig)
	}
	n := binary.LittleEndian.Uint32(h[4:])
	if n < headerLen || n > maxTableLen {
		return nil, fmt.Errorf("acpi: table %q at %#x has length %d", h[:4], addr, n)
	}
	b := make([]byte, n)
	if err := mem.Read(addr, b); err != nil {
		return nil, fmt.Errorf("acpi: reading table %q (%d bytes) at %#x: %w", h[:4], n, addr, err)
	}
	if sum8(b) != 0 {
		return nil, fmt.Errorf("acpi: table %q at %#x: checksum mismatch", h[:4], addr)
	}
	return &Table{
		Signature:  string(b[0:4]),
		Addr:       addr,
		Revision:   b[8],
		OEMID:      string(b[10:16]),
		OEMTableID: string(b[16:24]),
		CreatorID:  string(b[28:32]),
		Data:       b,
	}, nil
}

func gasAt(b []byte) GAS {
	return GAS{Space: b[0], BitWidth: b[1], BitOffset: b[2], AccessSize: b[3], Addr: binary.LittleEndian.Uint64(b[4:])}
}

// decodeFADT decodes a FADT of at least the ACPI 1.0 size (116 bytes).
func decodeFADT(b []byte) (*FADT, error) {
	if len(b) < fadtResetReg {
		return nil, fmt.Errorf("acpi: FADT of %d bytes is too short", len(b))
	}
	le := binary.LittleEndian
	f := &FADT{
		Revision:     b[8],
		FirmwareCtrl: le.Uint32(b[fadtFirmwareCtl:]),
		DSDT:         le.Uint32(b[fadtDSDT:]),
		SCIInt:       le.Uint16(b[fadtSCIInt:]),
		SMICmd:       le.Uint32(b[fadtSMICmd:]),
		PM1aEvtBlk:   le.Uint32(b[fadtPM1aEvt:]),
		PM1aCntBlk:   le.Uint32(b[fadtPM1aCnt:]),
		PMTmrBlk:     le.Uint32(b[fadtPMTmr:]),
		PM1EvtLen:    b[fadtPM1EvtLen],
		PM1CntLen:    b[fadtPM1CntLen],
		PMTmrLen:     b[fadtPMTmrLen],
		IAPCBootArch: le.Uint16(b[fadtBootArch:]),
		Flags:        le.Uint32(b[fadtFlags:]),
	}
	if len(b) >= fadtXPMTmr+gasStructLen {
		f.HasExtensions = true
		f.ResetReg = gasAt(b[fadtResetReg:])
		f.ResetValue = b[fadtResetValue]
		f.MinorVersion = b[fadtMinorVer]
		f.XFirmwareCtrl = le.Uint64(b[fadtXFirmware:])
		f.XDSDT = le.Uint64(b[fadtXDSDT:])
		f.XPM1aEvtBlk = gasAt(b[fadtXPM1aEvt:])
		f.XPM1aCntBlk = gasAt(b[fadtXPM1aCnt:])
		f.XPMTmrBlk = gasAt(b[fadtXPMTmr:])
	}
	if len(b) >= fadtHypervisor+8 {
		f.HypervisorID = le.Uint64(b[fadtHypervisor:])
	}
	return f, nil
}

// DecodeMADT decodes a MADT (the whole table, header included) and checks
// the length of every interrupt controller structure.
func DecodeMADT(b []byte) (*MADT, error) {
	if len(b) < headerLen+8 {
		return nil, fmt.Errorf("acpi: MADT of %d bytes is too short", len(b))
	}
	le := binary.LittleEndian
	m := &MADT{LocalAPICAddr: le.Uint32(b[headerLen:]), Flags: le.Uint32(b[headerLen+4:])}
	for off := headerLen + 8; off < len(b); {
		if len(b)-off < 2 {
			return nil, fmt.Errorf("acpi: MADT: truncated structure at offset %d", off)
		}
		typ, n := b[off], int(b[off+1])
		if n < 2 || off+n > len(b) {
			return nil, fmt.Errorf("acpi: MADT: structure type %d at offset %d has length %d", typ, off, n)
		}
		e := b[off : off+n]
		if want := madtEntryLen(typ); want != 0 && n != want {
			return nil, fmt.Errorf("acpi: MADT: structure type %d at offset %d has length %d, want %d", typ, off, n, want)
		}
		switch typ {
		case madtLocalAPIC:
			m.LocalAPICs = append(m.LocalAPICs, MADTLocalAPIC{ProcessorUID: e[2], APICID: e[3], Flags: le.Uint32(e[4:])})
		case madtIOAPIC:
			m.IOAPICs = append(m.IOAPICs, MADTIOAPIC{ID: e[2], Addr: le.Uint32(e[4:]), GSIBase: le.Uint32(e[8:])})
		case madtOverride:
			m.Overrides = append(m.Overrides, MADTOverride{Bus: e[2], Source: e[3], GSI: le.Uint32(e[4:]), Flags: le.Uint16(e[8:])})
		case madtLocalNMI:
			m.LocalNMIs = append(m.LocalNMIs, MADTLocalNMI{ProcessorUID: e[2], Flags: le.Uint16(e[3:]), LINT: e[5]})
		default:
			m.Other = append(m.Other, append([]byte(nil), e...))
		}
		m.Entries++
		off += n
	}
	return m, nil
}

// madtEntryLen is the length of the MADT structures this package decodes,
// 0 for others.
func madtEntryLen(typ byte) int {
	switch typ {
	case madtLocalAPIC:
		return 8
	case madtIOAPIC:
		return 12
	case madtOverride:
		return 10
	case madtLocalNMI:
		return 6
	}
	return 0
}

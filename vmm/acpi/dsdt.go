package acpi

import (
	"fmt"

	"github.com/rscvm/rscvm/vmm/acpi/aml"
)

const (
	dsdtRevision = 2 // 64-bit AML integers
	pciSlots     = 32
)

// buildDSDT builds the DSDT: \_SB.PCI0 (the PCI root bridge with its
// resources and _PRT), \_SB.COM1 and \_S5_.
func buildDSDT(cfg Config) ([]byte, error) {
	crs := []aml.Resource{
		aml.WordBusNumber(0, 0xFF),
		aml.IO(0xCF8, 0xCF8, 1, 8),
		aml.WordIO(0x0000, 0x0CF7),
		aml.WordIO(0x0D00, 0xFFFF),
		aml.DWordMemory(MMIO32Base, MMIO32Limit, false),
	}
	if cfg.MMIO64Size != 0 {
		crs = append(crs, aml.QWordMemory(cfg.MMIO64Base, cfg.MMIO64Base+cfg.MMIO64Size-1, true))
	}
	var prt []aml.Term
	for slot := 1; slot < pciSlots; slot++ {
		for pin := 0; pin < 4; pin++ {
			prt = append(prt, aml.Package(
				aml.Integer(uint64(slot)<<16|0xFFFF), // any function of the slot
				aml.Integer(pin),                     // 0 = INTA
				aml.Integer(0),                       // source: a GSI
				aml.Integer(GSIForPin(slot, pin+1)),
			))
		}
	}
	body, err := aml.Encode(
		aml.Scope(`\_SB`,
			aml.Device("PCI0",
				aml.Name("_HID", aml.EISAID("PNP0A03")),
				aml.Name("_ADR", aml.Integer(0)),
				aml.Name("_UID", aml.Integer(0)),
				aml.Name("_SEG", aml.Integer(0)),
				aml.Name("_BBN", aml.Integer(0)),
				aml.Name("_CRS", aml.ResourceTemplate(crs...)),
				aml.Name("_PRT", aml.Package(prt...)),
			),
			aml.Device("COM1",
				aml.Name("_HID", aml.EISAID("PNP0501")),
				aml.Name("_UID", aml.Integer(1)),
				aml.Name("_CRS", aml.ResourceTemplate(
					aml.IO(COM1Port, COM1Port, 1, 8),
					aml.IRQNoFlags(COM1IRQ),
				)),
			),
		),
		aml.Name(`\_S5_`, aml.Package(aml.Integer(0), aml.Integer(0), aml.Integer(0), aml.Integer(0))),
	)
	if err != nil {
		return nil, fmt.Errorf("acpi: DSDT: %w", err)
	}
	b := make([]byte, headerLen, headerLen+len(body))
	b = append(b, body...)
	putHeader(b, "DSDT", dsdtRevision)
	setChecksum(b, 9)
	return b, nil
}

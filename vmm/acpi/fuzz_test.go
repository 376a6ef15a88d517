package acpi

import (
	"testing"

	"github.com/rscvm/rscvm/vmm/memory"
)

// FuzzRead feeds arbitrary bytes as the table area to the reader: it must
// return an error or tables, never panic or read outside memory.
func FuzzRead(f *testing.F) {
	img, err := Generate(defaultCfg(2))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(img)
	f.Add(img[:100])
	f.Add([]byte("RSD PTR "))
	f.Fuzz(func(t *testing.T, area []byte) {
		host := make([]byte, RegionEnd-RSDPAddr)
		copy(host, area)
		m, err := memory.New(memory.Region{GPA: RSDPAddr, Host: host})
		if err != nil {
			t.Fatal(err)
		}
		tb, err := Read(m, RSDPAddr)
		if err != nil {
			return
		}
		if tb.XSDT == nil {
			t.Fatal("tables without an XSDT")
		}
	})
}

// FuzzDecodeMADT decodes arbitrary MADT bytes.
func FuzzDecodeMADT(f *testing.F) {
	f.Add(buildMADT(Config{CPUs: 3}))
	f.Add(make([]byte, headerLen+8))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMADT(b)
		if err != nil {
			return
		}
		if m.Entries != len(m.LocalAPICs)+len(m.IOAPICs)+len(m.Overrides)+len(m.LocalNMIs)+len(m.Other) {
			t.Fatal("entry count mismatch")
		}
	})
}

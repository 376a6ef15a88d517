package boot

import (
	"testing"

	"github.com/rscvm/rscvm/vmm/acpi"
	"github.com/stretchr/testify/require"
)

// TestWithACPITables loads both formats next to real ACPI tables and checks
// that the RSDP address handed to the kernel leads to valid tables inside
// the reserved E820 range, untouched by the loaders.
func TestWithACPITables(t *testing.T) {
	require.Equal(t, uint64(acpi.RSDPAddr), uint64(RSDPAddr))
	m := guestMem(t, 128*miB)
	base, size := acpi.MMIO64Window(m.Regions())
	require.NoError(t, acpi.Build(m, acpi.Config{CPUs: 2, MMIO64Base: base, MMIO64Size: size}))

	_, _, err := Load(m, fakeBzImage(defaultBz()), []byte("initrd"), "console=ttyS0")
	require.NoError(t, err)
	rsdp, err := m.U64(ZeroPageAddr + bpAcpiRsdpAddr)
	require.NoError(t, err)
	tb, err := acpi.Read(m, rsdp)
	require.NoError(t, err)
	require.Len(t, tb.MADT.LocalAPICs, 2)

	_, _, err = Load(m, buildELF(defaultELF(true)), []byte("initrd"), "console=ttyS0")
	require.NoError(t, err)
	rsdp, err = m.U64(StartInfoAddr + 32)
	require.NoError(t, err)
	_, err = acpi.Read(m, rsdp)
	require.NoError(t, err)

	var inReserved bool
	for _, e := range BuildE820(m.Regions()) {
		if e.Type == E820Reserved && e.Addr <= rsdp && rsdp < e.End() && e.End() == acpi.RegionEnd {
			inReserved = true
		}
	}
	require.True(t, inReserved, "the ACPI area is reserved in the E820 map")
}

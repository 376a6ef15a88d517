package acpi

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rscvm/rscvm/vmm/memory"
	"github.com/stretchr/testify/require"
)

// lowMem is 2 MiB of guest RAM from 0, enough for the table area.
func lowMem(t *testing.T) *memory.Memory {
	t.Helper()
	m, err := memory.New(memory.Region{GPA: 0, Host: make([]byte, 2<<20)})
	require.NoError(t, err)
	return m
}

func defaultCfg(cpus int) Config {
	return Config{CPUs: cpus, MMIO64Base: 0x1_0000_0000, MMIO64Size: MMIO64Size}
}

func build(t *testing.T, cfg Config) (*memory.Memory, *Tables) {
	t.Helper()
	m := lowMem(t)
	require.NoError(t, Build(m, cfg))
	tb, err := Read(m, RSDPAddr)
	require.NoError(t, err)
	return m, tb
}

func TestTablesChecksumsAndPlacement(t *testing.T) {
	for _, cpus := range []int{1, 2, 8, 64, MaxCPUs} {
		_, tb := build(t, defaultCfg(cpus))
		require.Equal(t, uint8(2), tb.RSDPRevision)
		var sigs []string
		for _, x := range tb.Tables {
			sigs = append(sigs, x.Signature)
		}
		require.Equal(t, []string{"FACP", "APIC"}, sigs)
		all := append([]*Table{tb.XSDT, tb.DSDT}, tb.Tables...)
		for _, x := range all {
			require.Equal(t, OEMID, x.OEMID, x.Signature)
			require.Equal(t, OEMTableID, x.OEMTableID, x.Signature)
			require.Equal(t, CreatorID, x.CreatorID, x.Signature)
			require.GreaterOrEqual(t, x.Addr, uint64(RSDPAddr))
			require.LessOrEqual(t, x.Addr+uint64(len(x.Data)), uint64(RegionEnd), x.Signature)
			require.Zero(t, x.Addr%8, x.Signature)
		}
		require.NotNil(t, tb.FACS)
		require.Equal(t, uint32(64), uint32(tb.FACS[4]))
		require.Equal(t, cpus, len(tb.MADT.LocalAPICs))
	}
	img, err := Generate(defaultCfg(MaxCPUs))
	require.NoError(t, err)
	require.LessOrEqual(t, len(img), RegionEnd-RSDPAddr)
	t.Logf("table area: %d bytes for %d vCPUs", len(img), MaxCPUs)
}

func TestRSDP(t *testing.T) {
	m, tb := build(t, defaultCfg(1))
	r := make([]byte, 36)
	require.NoError(t, m.Read(RSDPAddr, r))
	require.Equal(t, "RSD PTR ", string(r[:8]))
	require.Equal(t, OEMID, string(r[9:15]))
	require.Equal(t, byte(2), r[15])
	require.Equal(t, uint32(36), le32(r[20:]))
	require.Equal(t, tb.XSDTAddr, le64(r[24:]))
	require.Zero(t, sum8(r[:20]))
	require.Zero(t, sum8(r))
}

func TestFADT(t *testing.T) {
	_, tb := build(t, defaultCfg(2))
	f := tb.FADT
	require.NotNil(t, f)
	fa := tb.Find("FACP")
	require.Len(t, fa.Data, 276)
	require.Equal(t, uint8(6), f.Revision)
	require.Equal(t, uint16(9), f.SCIInt)
	require.Zero(t, f.SMICmd)
	require.Equal(t, uint32(0x600), f.PM1aEvtBlk)
	require.Equal(t, uint32(0x604), f.PM1aCntBlk)
	require.Equal(t, uint32(0x608), f.PMTmrBlk)
	require.Equal(t, uint8(4), f.PM1EvtLen)
	require.Equal(t, uint8(2), f.PM1CntLen)
	require.Equal(t, uint8(4), f.PMTmrLen)
	require.NotZero(t, f.Flags&flagTmrValExt, "32-bit PM timer")
	require.NotZero(t, f.Flags&flagResetRegSup)
	require.NotZero(t, f.Flags&flagWBINVD)
	require.Equal(t, uint16(bootArchLegacyDevices|bootArch8042), f.IAPCBootArch&(bootArchLegacyDevices|bootArch8042))
	require.Equal(t, GAS{Space: 1, BitWidth: 8, AccessSize: 1, Addr: 0xCF9}, f.ResetReg)
	require.Equal(t, uint8(6), f.ResetValue)
	require.Equal(t, GAS{Space: 1, BitWidth: 32, AccessSize: 2, Addr: 0x600}, f.XPM1aEvtBlk)
	require.Equal(t, GAS{Space: 1, BitWidth: 16, AccessSize: 2, Addr: 0x604}, f.XPM1aCntBlk)
	require.Equal(t, GAS{Space: 1, BitWidth: 32, AccessSize: 3, Addr: 0x608}, f.XPMTmrBlk)
	require.Equal(t, tb.DSDT.Addr, f.XDSDT)
	require.Equal(t, uint32(tb.DSDT.Addr), f.DSDT)
	require.Zero(t, f.FirmwareCtrl)
	require.NotZero(t, f.XFirmwareCtrl)
	require.Zero(t, f.XFirmwareCtrl%64, "FACS 64-byte aligned")
	require.Equal(t, "FACS", string(tb.FACS[:4]))
}

func TestMADT(t *testing.T) {
	for _, cpus := range []int{1, 4, MaxCPUs} {
		_, tb := build(t, defaultCfg(cpus))
		m := tb.MADT
		require.NotNil(t, m)
		require.Equal(t, uint32(0xFEE00000), m.LocalAPICAddr)
		require.Equal(t, uint32(1), m.Flags, "PCAT_COMPAT")
		require.Len(t, m.LocalAPICs, cpus)
		for i, l := range m.LocalAPICs {
			require.Equal(t, MADTLocalAPIC{ProcessorUID: uint8(i), APICID: uint8(i), Flags: 1}, l)
		}
		require.Equal(t, []MADTIOAPIC{{ID: uint8(cpus), Addr: 0xFEC00000, GSIBase: 0}}, m.IOAPICs)
		require.Equal(t, []MADTOverride{
			{Bus: 0, Source: 0, GSI: 2, Flags: 0x5},
			{Bus: 0, Source: 9, GSI: 9, Flags: 0xD},
		}, m.Overrides)
		require.Equal(t, []MADTLocalNMI{{ProcessorUID: 0xFF, Flags: 0x5, LINT: 1}}, m.LocalNMIs)
		require.Empty(t, m.Other)
		require.Equal(t, cpus+4, m.Entries)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cpus := range []int{0, -1, MaxCPUs + 1} {
		_, err := Generate(Config{CPUs: cpus})
		require.Error(t, err, cpus)
	}
	_, err := Generate(Config{CPUs: 1, MMIO64Base: ^uint64(0) - 10, MMIO64Size: 1 << 30})
	require.ErrorContains(t, err, "overflows")
	// Memory that does not cover the table area.
	m, err := memory.New(memory.Region{GPA: 0, Host: make([]byte, 0xE0000)})
	require.NoError(t, err)
	require.Error(t, Build(m, defaultCfg(1)))
	// Without a 64-bit window.
	_, tb := build(t, Config{CPUs: 1})
	require.NotNil(t, tb.DSDT)
}

func TestMMIO64Window(t *testing.T) {
	low := memory.Region{GPA: 0, Host: make([]byte, 1)}
	base, size := MMIO64Window([]memory.Region{low})
	require.Equal(t, uint64(0x1_0000_0000), base)
	require.Equal(t, uint64(64<<30), size)
	// High RAM [4 GiB, 4 GiB + 1 byte) rounds up to 5 GiB.
	high := memory.Region{GPA: 0x1_0000_0000, Host: make([]byte, 1)}
	base, _ = MMIO64Window([]memory.Region{low, high})
	require.Equal(t, uint64(5<<30), base)
}

func TestGSIForPin(t *testing.T) {
	require.Equal(t, uint32(17), GSIForPin(1, 1))
	require.Equal(t, uint32(20), GSIForPin(1, 4))
	require.Equal(t, uint32(16), GSIForPin(7, 2))
	require.Equal(t, uint32(23), GSIForPin(31, 1))
}

func TestReaderRejectsCorruption(t *testing.T) {
	m, tb := build(t, defaultCfg(2))
	flip := func(addr uint64) {
		b, err := m.U8(addr)
		require.NoError(t, err)
		require.NoError(t, m.PutU8(addr, b^0x40))
	}
	for _, addr := range []uint64{RSDPAddr + 1, RSDPAddr + 30, tb.XSDT.Addr + 40,
		tb.Find("FACP").Addr + 50, tb.Find("APIC").Addr + 44, tb.DSDT.Addr + 40} {
		flip(addr)
		_, err := Read(m, RSDPAddr)
		require.Error(t, err, "%#x", addr)
		flip(addr)
		_, err = Read(m, RSDPAddr)
		require.NoError(t, err)
	}
	// A MADT structure with a bad length.
	madt := append([]byte(nil), tb.Find("APIC").Data...)
	madt[headerLen+8+1] = 0
	_, err := DecodeMADT(madt)
	require.Error(t, err)
	madt[headerLen+8+1] = 200
	_, err = DecodeMADT(madt)
	require.Error(t, err)
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

// iasl returns the path of iasl, or skips the test (the CI installs the
// Debian package acpica-tools).
func iasl(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl not installed (apt-get install acpica-tools)")
	}
	return p
}

// disassemble writes each table to a file and runs iasl -d on it, returning
// the disassembly by signature.
func disassemble(t *testing.T, tb *Tables) map[string]string {
	t.Helper()
	bin := iasl(t)
	dir := t.TempDir()
	out := map[string]string{}
	all := append([]*Table{tb.DSDT}, tb.Tables...)
	for _, x := range all {
		name := strings.ToLower(x.Signature)
		dat := filepath.Join(dir, name+".dat")
		require.NoError(t, os.WriteFile(dat, x.Data, 0o644))
		cmd := exec.Command(bin, "-d", dat)
		cmd.Dir = dir
		log, err := cmd.CombinedOutput()
		require.NoError(t, err, "iasl -d %s:\n%s", name, log)
		dsl, err := os.ReadFile(filepath.Join(dir, name+".dsl"))
		require.NoError(t, err, "iasl output:\n%s", log)
		out[x.Signature] = string(dsl)
	}
	return out
}

func TestIASLDisassembly(t *testing.T) {
	_, tb := build(t, defaultCfg(4))
	dsl := disassemble(t, tb)

	d := dsl["DSDT"]
	for _, want := range []string{
		`Device (PCI0)`,
		`EisaId ("PNP0A03")`,
		`Name (_PRT, Package (0x7C)`,
		`Name (\_S5, Package (0x04)`,
		`WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,`,
		`0x00FF,             // Range Maximum`,
		`IO (Decode16,`,
		`0x0CF8,             // Range Minimum`,
		`0x0CF7,             // Range Maximum`,
		`0x0D00,             // Range Minimum`,
		`DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,`,
		`0xC0000000,         // Range Minimum`,
		`0xFEBFFFFF,         // Range Maximum`,
		`QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,`,
		`0x0000000100000000, // Range Minimum`,
		`0x00000010FFFFFFFF, // Range Maximum`,
		`Device (COM1)`,
		`EisaId ("PNP0501")`,
		`IRQNoFlags ()`,
		`{4}`,
	} {
		contains(t, d, want)
	}
	// _PRT: slot 1 INTA -> GSI 17, slot 31 INTD -> GSI 16+((31+3)%8) = 18.
	require.Regexp(t, `0x0001FFFF,\s*Zero,\s*Zero,\s*0x11`, d)
	require.Regexp(t, `0x001FFFFF,\s*0x03,\s*Zero,\s*0x12`, d)
	require.NotContains(t, d, "Error")

	f := dsl["FACP"]
	for _, want := range []string{
		`PM1A Event Block Address : 00000600`,
		`PM1A Control Block Address : 00000604`,
		`PM Timer Block Address : 00000608`,
		`SCI Interrupt : 0009`,
		`32-bit PM Timer (V1) : 1`,
		`Reset Register Supported (V2) : 1`,
		`Value to cause reset : 06`,
	} {
		contains(t, squeeze(f), want)
	}
	a := dsl["APIC"]
	require.Equal(t, 4, strings.Count(a, "Subtable Type : 00 [Processor Local APIC]"))
	contains(t, squeeze(a), "Subtable Type : 01 [I/O APIC]")
	contains(t, squeeze(a), "Address : FEC00000")
	for _, x := range dsl {
		require.NotContains(t, x, "Invalid")
		require.NotContains(t, x, "Incorrect checksum")
	}
}

// TestIASLRoundTrip disassembles the DSDT, recompiles it with iasl (no
// optimizations) and checks that the AML is the same, except for the End Tag
// checksums, which iasl leaves zero.
func TestIASLRoundTrip(t *testing.T) {
	bin := iasl(t)
	_, tb := build(t, defaultCfg(2))
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dsdt.dat"), tb.DSDT.Data, 0o644))
	for _, args := range [][]string{{"-d", "dsdt.dat"}, {"-oa", "-p", "recomp", "dsdt.dsl"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		log, err := cmd.CombinedOutput()
		require.NoError(t, err, "iasl %v:\n%s", args, log)
		require.NotContains(t, string(log), "Error  ", "iasl %v:\n%s", args, log)
	}
	re, err := os.ReadFile(filepath.Join(dir, "recomp.aml"))
	require.NoError(t, err)
	ours := tb.DSDT.Data
	require.Equal(t, len(ours), len(re))
	for i := headerLen; i < len(ours); i++ {
		if ours[i] != re[i] && !(ours[i-1] == 0x79 && re[i-1] == 0x79 && re[i] == 0) {
			t.Fatalf("recompiled DSDT differs at offset %#x: %#x, iasl %#x", i, ours[i], re[i])
		}
	}
}

// contains reports a missing string without dumping the whole disassembly.
func contains(t *testing.T, dsl, want string) {
	t.Helper()
	if !strings.Contains(dsl, want) {
		t.Errorf("disassembly lacks %q", want)
	}
}

// squeeze collapses the runs of spaces iasl aligns its field dumps with.
func squeeze(s string) string {
	for strings.Contains(s, "  ") {
		s = strings.ReplaceAll(s, "  ", " ")
	}
	return s
}

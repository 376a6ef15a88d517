package testguest

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/internal/testenv"
)

// requireTool skips (or, with RSCVM_REQUIRE_KVM=1, fails) when a host tool is missing.
func requireTool(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			testenv.SkipOrFail(t, "%s not found (install build-essential / qemu-system-x86): %v", name, err)
		}
	}
}

var (
	buildOnce sync.Once
	builtELF  string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// guestELF builds the guest once per test binary and returns its path.
func guestELF(t *testing.T) string {
	t.Helper()
	requireTool(t, "gcc", "ld")
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "rscvm-testguest-out-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		builtELF, buildErr = Build(ctx, buildDir)
	})
	require.NoError(t, buildErr)
	return builtELF
}

func TestBuildIsDeterministic(t *testing.T) {
	first := guestELF(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	second, err := Build(ctx, filepath.Join(t.TempDir(), "another", "dir"))
	require.NoError(t, err)
	a, err := os.ReadFile(first)
	require.NoError(t, err)
	b, err := os.ReadFile(second)
	require.NoError(t, err)
	require.True(t, bytes.Equal(a, b), "two builds from different directories differ")
}

// TestELFLayout checks what PVH loaders (QEMU's and rscvm's) rely on.
func TestELFLayout(t *testing.T) {
	path := guestELF(t)
	f, err := elf.Open(path)
	require.NoError(t, err)
	defer f.Close()

	require.Equal(t, elf.ELFCLASS64, f.Class)
	require.Equal(t, elf.EM_X86_64, f.Machine)
	require.Equal(t, elf.ET_EXEC, f.Type)

	syms, err := f.Symbols()
	require.NoError(t, err)
	var entry uint64
	for _, s := range syms {
		if s.Name == "pvh_start" {
			entry = s.Value
		}
	}
	require.NotZero(t, entry, "pvh_start symbol")
	require.Equal(t, entry, f.Entry)

	var notes, loads int
	var phys32 []uint32
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			loads++
			require.Equal(t, p.Vaddr, p.Paddr, "identity-linked segment")
			require.GreaterOrEqual(t, p.Paddr, uint64(0x100000), "segment below 1 MiB")
			require.Less(t, p.Paddr+p.Memsz, uint64(0x1000000), "segment above 16 MiB")
		case elf.PT_NOTE:
			notes++
			data := make([]byte, p.Filesz)
			_, err := p.ReadAt(data, 0)
			require.NoError(t, err)
			phys32 = append(phys32, xenPhys32Entries(t, data)...)
		}
	}
	require.Equal(t, 2, loads)
	require.Equal(t, 1, notes)
	require.Equal(t, []uint32{uint32(entry)}, phys32)
}

// xenPhys32Entries decodes the XEN_ELFNOTE_PHYS32_ENTRY notes of a PT_NOTE segment.
func xenPhys32Entries(t *testing.T, data []byte) []uint32 {
	t.Helper()
	var out []uint32
	align := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(data) >= 12 {
		namesz := binary.LittleEndian.Uint32(data[0:])
		descsz := binary.LittleEndian.Uint32(data[4:])
		typ := binary.LittleEndian.Uint32(data[8:])
		body := data[12:]
		require.LessOrEqual(t, uint64(align(namesz))+uint64(align(descsz)), uint64(len(body)))
		name := string(body[:namesz])
		desc := body[align(namesz) : align(namesz)+descsz]
		if name == "Xen\x00" && typ == 18 {
			require.Len(t, desc, 4, "PHYS32_ENTRY is a 4-byte address")
			out = append(out, binary.LittleEndian.Uint32(desc))
		}
		data = body[align(namesz)+align(descsz):]
	}
	require.Empty(t, data, "trailing bytes in PT_NOTE")
	return out
}

// forbiddenMnemonics are instructions this machine's emulated KVM cannot run
// (see docs/guest-images.md) or that the guest must not use (SSE, x87, random).
var forbiddenMnemonics = map[string]bool{
	"int3": true, "popcnt": true, "fwait": true, "wait": true, "clac": true, "stac": true,
	"vmcall": true, "vmmcall": true, "cmpxchg16b": true, "rdrand": true, "rdseed": true,
	"rdtscp": true, "rdpid": true, "ldmxcsr": true, "stmxcsr": true, "emms": true,
	"lfence": true, "sfence": true, "mfence": true, "clflushopt": true, "clwb": true,
}

var forbiddenPrefixes = []string{"xsave", "xrstor", "fx", "vmovdq", "vpxor"}

// sseRegister matches operands naming SSE/AVX/MMX/x87 stack registers.
var sseRegister = regexp.MustCompile(`%(xmm|ymm|zmm|mm|st)\b|%(xmm|ymm|zmm|mm)[0-9]|%st\(`)

// x87Mnemonic matches x87 instructions (all start with 'f'; fwait is listed above).
var x87Mnemonic = regexp.MustCompile(`^f[a-z0-9]+$`)

// instructionPrefixes are words objdump prints before the mnemonic.
var instructionPrefixes = map[string]bool{
	"lock": true, "rep": true, "repz": true, "repnz": true, "repe": true, "repne": true,
	"data16": true, "addr32": true, "rex": true, "rex.W": true, "notrack": true, "bnd": true,
	"cs": true, "ds": true, "es": true, "ss": true, "fs": true, "gs": true,
}

// findForbidden scans `objdump -d` output and returns the offending lines.
func findForbidden(disasm string) []string {
	_, bad := scanDisassembly(disasm)
	return bad
}

// scanDisassembly counts the instructions of `objdump -d` output and returns
// the lines with forbidden ones.
func scanDisassembly(disasm string) (insns int, bad []string) {
	for _, line := range strings.Split(disasm, "\n") {
		parts := strings.Split(line, "\t")
		if len(parts) < 3 || !strings.HasSuffix(strings.TrimSpace(parts[0]), ":") {
			continue // headers, labels and continuation lines of long encodings
		}
		insn := strings.TrimSpace(strings.Join(parts[2:], " "))
		fields := strings.Fields(insn)
		for len(fields) > 1 && instructionPrefixes[fields[0]] {
			fields = fields[1:]
		}
		if len(fields) == 0 {
			continue
		}
		insns++
		mn := fields[0]
		base := strings.TrimRight(mn, "bwlq")
		hit := forbiddenMnemonics[mn] || forbiddenMnemonics[base] ||
			x87Mnemonic.MatchString(mn) || sseRegister.MatchString(insn) ||
			strings.Contains(mn, "(bad)")
		for _, p := range forbiddenPrefixes {
			if strings.HasPrefix(mn, p) {
				hit = true
			}
		}
		if hit {
			bad = append(bad, strings.TrimSpace(line))
		}
	}
	return insns, bad
}

func TestFindForbiddenDetects(t *testing.T) {
	const sample = `
testguest.elf:     file format elf64-x86-64

Disassembly of section .text:

0000000000100000 <pvh_start>:
  100000:	fa                   	cli
  100001:	cc                   	int3
  100002:	f3 0f b8 c0          	popcnt %eax,%eax
  100006:	9b                   	fwait
  100007:	0f 01 ca             	clac
  10000a:	0f 01 cb             	stac
  10000d:	0f 01 c1             	vmcall
  100010:	f0 48 0f c7 0f       	lock cmpxchg16b (%rdi)
  100015:	0f ae 27             	xsave  (%rdi)
  100018:	48 0f ae 2f          	xrstor64 (%rdi)
  10001c:	0f c7 f0             	rdrand %eax
  10001f:	66 0f ef c0          	pxor   %xmm0,%xmm0
  100023:	0f 28 c8             	movaps %xmm0,%xmm1
  100026:	d9 e8                	fld1
  100028:	0f 0b                	ud2
  10002a:	f3 48 ab             	rep stos %rax,%es:(%rdi)
  10002d:	48 b8 00 00 00 00 00 	movabs $0x0,%rax
  100034:	00 00 00 
  100037:	f0 83 04 24 00       	lock addl $0x0,(%rsp)
  10003c:	ef                   	out    %eax,(%dx)
`
	bad := findForbidden(sample)
	require.Len(t, bad, 13, "%q", bad)
	for _, want := range []string{"int3", "popcnt", "fwait", "clac", "stac", "vmcall",
		"cmpxchg16b", "xsave", "xrstor64", "rdrand", "pxor", "movaps", "fld1"} {
		found := false
		for _, b := range bad {
			found = found || strings.Contains(b, want)
		}
		require.True(t, found, "%s not flagged", want)
	}
}

// disassemble runs objdump -d over [start, stop) of the ELF (stop 0: to the end)
// with the given -M mode ("i386" or "x86-64") and returns tab-separated lines
// in the default objdump layout.
func disassemble(t *testing.T, path, mode string, start, stop uint64) string {
	t.Helper()
	args := []string{"-d", "-M", mode + ",att", "--start-address=" + strconv.FormatUint(start, 10)}
	if stop != 0 {
		args = append(args, "--stop-address="+strconv.FormatUint(stop, 10))
	}
	out, err := exec.Command("objdump", append(args, path)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

func symbolAddr(t *testing.T, path, name string) uint64 {
	t.Helper()
	f, err := elf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	syms, err := f.Symbols()
	require.NoError(t, err)
	for _, s := range syms {
		if s.Name == name {
			return s.Value
		}
	}
	t.Fatalf("symbol %s not found", name)
	return 0
}

func TestNoForbiddenInstructions(t *testing.T) {
	path := guestELF(t)
	requireTool(t, "objdump")
	entry := symbolAddr(t, path, "pvh_start")
	long := symbolAddr(t, path, "long_mode")
	require.Less(t, entry, long)

	// The PVH entry runs in 32-bit protected mode until the far jump to long_mode.
	code32 := disassemble(t, path, "i386", entry, long)
	require.Contains(t, code32, "ljmp")
	n32, bad := scanDisassembly(code32)
	require.Greater(t, n32, 30, "32-bit entry instructions seen")
	require.Empty(t, bad, "forbidden instructions in the 32-bit entry")

	// 64-bit code: long_mode to the AP trampoline (section .trampoline follows .text).
	tramp := symbolAddr(t, path, "ap_trampoline")
	tramp32 := symbolAddr(t, path, "ap_trampoline_pm32")
	trampEnd := symbolAddr(t, path, "ap_trampoline_code_end")
	require.Less(t, long, tramp)
	require.Less(t, tramp, tramp32)
	require.Less(t, tramp32, trampEnd)
	code64 := disassemble(t, path, "x86-64", long, tramp)
	require.Contains(t, code64, "<main>:")
	require.Contains(t, code64, "<trap_handler>:")
	require.Contains(t, code64, "<ap_long_mode>:")
	n64, bad := scanDisassembly(code64)
	require.Greater(t, n64, 1000, "64-bit instructions seen")
	require.Empty(t, bad, "forbidden instructions in the guest")

	// The AP trampoline: real mode up to the far jump, then 32-bit protected mode.
	code16 := disassemble(t, path, "i8086", tramp, tramp32)
	require.Contains(t, code16, "lgdt")
	require.Contains(t, code16, "ljmp")
	n16, bad := scanDisassembly(code16)
	require.Greater(t, n16, 5, "16-bit trampoline instructions seen")
	require.Empty(t, bad, "forbidden instructions in the 16-bit trampoline")
	codeAP32 := disassemble(t, path, "i386", tramp32, trampEnd)
	require.Contains(t, codeAP32, "ljmp")
	nAP32, bad := scanDisassembly(codeAP32)
	require.Greater(t, nAP32, 10, "32-bit trampoline instructions seen")
	require.Empty(t, bad, "forbidden instructions in the 32-bit trampoline")

	// Nothing executable follows the trampoline code but its data.
	rest := disassemble(t, path, "x86-64", trampEnd, 0)
	for _, line := range strings.Split(rest, "\n") {
		if m := regexp.MustCompile(`^([0-9a-f]+) <(.*)>:$`).FindStringSubmatch(line); m != nil {
			addr, err := strconv.ParseUint(m[1], 16, 64)
			require.NoError(t, err)
			require.Less(t, addr, symbolAddr(t, path, "ap_trampoline_end"), "code after the trampoline: %s", line)
		}
	}
	t.Logf("checked %d + %d + %d + %d instructions", n32, n64, n16, nAP32)
}

// qemuAvailable skips unless QEMU and the toolchain are present.
func qemuAvailable(t *testing.T) {
	t.Helper()
	requireTool(t, QEMUBinary)
}

func runGuest(t *testing.T, cmdline string, extra ...string) *Output {
	t.Helper()
	return runGuestWith(t, 60*time.Second, QEMUOptions{Cmdline: cmdline, Extra: extra})
}

func runGuestWith(t *testing.T, timeout time.Duration, opts QEMUOptions) *Output {
	t.Helper()
	out := runGuestRaw(t, timeout, opts)
	require.True(t, out.Done, "done line")
	require.Empty(t, out.Traps)
	require.Empty(t, out.Failures)
	require.False(t, out.Halted)
	require.GreaterOrEqual(t, out.ElapsedMicros, int64(0), "elapsed line")
	t.Logf("guest start-to-done: %d us", out.ElapsedMicros)
	return out
}

// runGuestRaw runs the guest, requires a clean QEMU exit and the start line, and
// returns the parsed output.
func runGuestRaw(t *testing.T, timeout time.Duration, opts QEMUOptions) *Output {
	t.Helper()
	elfPath := guestELF(t)
	qemuAvailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	serial, stderr, err := RunQEMU(ctx, elfPath, opts)
	t.Logf("qemu -accel %s ran %v", QEMUArgs(elfPath, opts)[1], time.Since(start).Round(time.Millisecond))
	t.Logf("serial output:\n%s", serial)
	if len(stderr) > 0 {
		t.Logf("qemu stderr:\n%s", stderr)
	}
	require.NoError(t, err, "qemu must power off by itself and exit 0")
	out, err := ParseOutput(serial)
	require.NoError(t, err)
	require.True(t, out.Started, "start line")
	return out
}

func requirePCI(t *testing.T, out *Output, bus, dev, fn uint8, vendor, device uint16, class uint32) *PCIFunction {
	t.Helper()
	f := out.Function(bus, dev, fn)
	require.NotNil(t, f, "no pci line for %02x:%02x.%d", bus, dev, fn)
	require.Equal(t, vendor, f.Vendor, f.BDF())
	require.Equal(t, device, f.Device, f.BDF())
	require.Equal(t, class, f.Class, f.BDF())
	return f
}

// pcLines are the functions QEMU's pc machine always has (i440FX + PIIX3/4).
func checkPCMachine(t *testing.T, out *Output) {
	t.Helper()
	host := requirePCI(t, out, 0, 0, 0, 0x8086, 0x1237, 0x060000)
	require.Equal(t, uint8(0), host.HeaderType)
	isa := requirePCI(t, out, 0, 1, 0, 0x8086, 0x7000, 0x060100)
	require.True(t, isa.Multifunction)
	ide := requirePCI(t, out, 0, 1, 1, 0x8086, 0x7010, 0x010180)
	require.Equal(t, BARIO, ide.BARs[4].Kind)
	require.Equal(t, uint64(16), ide.BARs[4].Size)
	acpi := requirePCI(t, out, 0, 1, 3, 0x8086, 0x7113, 0x068000)
	require.Equal(t, uint8(1), acpi.IRQPin)
	require.Equal(t, len(out.PCI), out.ScannedFunctions)
}

func TestQEMUBasic(t *testing.T) {
	out := runGuest(t, "x=1 foo=bar flag")
	require.Equal(t, "x=1 foo=bar flag", out.Cmdline)
	require.Equal(t, []Option{{"x", "1"}, {"foo", "bar"}, {"flag", ""}}, out.Options)
	require.NotNil(t, out.StartInfo)
	require.Equal(t, uint32(0x336ec578), out.StartInfo.Magic)
	require.GreaterOrEqual(t, out.StartInfo.Version, uint32(1))
	require.NotEmpty(t, out.Memmap)
	require.Len(t, out.Memmap, int(out.StartInfo.MemmapEntries))
	var ram uint64
	for _, e := range out.Memmap {
		if e.Type == 1 {
			ram += e.Size
		}
	}
	require.InDelta(t, 128<<20, float64(ram), 1<<20, "usable RAM in the memory map")

	checkPCMachine(t, out)
	require.Len(t, out.PCI, 4, "nothing but the pc machine's own functions with -nodefaults")
}

func TestQEMUVirtioNet(t *testing.T) {
	out := runGuest(t, "x=1",
		"-device", "VGA",
		"-device", "virtio-net-pci,netdev=n0,addr=03,romfile=",
		"-netdev", "hubport,id=n0,hubid=0")
	checkPCMachine(t, out)

	vga := requirePCI(t, out, 0, 2, 0, 0x1234, 0x1111, 0x030000)
	require.Equal(t, BARMem32, vga.BARs[0].Kind)
	require.True(t, vga.BARs[0].Prefetchable)
	require.Equal(t, uint64(16<<20), vga.BARs[0].Size)

	nic := requirePCI(t, out, 0, 3, 0, 0x1af4, 0x1000, 0x020000)
	require.Equal(t, uint16(0x1af4), nic.SubsysVendor)
	require.Equal(t, uint16(1), nic.SubsysID, "subsystem id = virtio device type (net)")
	require.Equal(t, uint8(1), nic.IRQPin)
	require.Equal(t, BAR{Kind: BARIO, Addr: nic.BARs[0].Addr, Size: 32}, nic.BARs[0])
	require.Equal(t, BAR{Kind: BARMem32, Addr: nic.BARs[1].Addr, Size: 4096}, nic.BARs[1])
	require.Equal(t, BAR{Kind: BARMem64, Prefetchable: true, Addr: nic.BARs[4].Addr, Size: 16384}, nic.BARs[4])
	require.Equal(t, BARNone, nic.BARs[5].Kind, "upper half of the 64-bit BAR")
	require.Equal(t, BARNone, nic.ROM.Kind, "romfile= leaves no ROM BAR")

	msix := nic.Cap(0x11)
	require.NotNil(t, msix, "MSI-X capability")
	require.Equal(t, "msix", msix.Kind)
	require.Equal(t, "4", msix.Attrs["size"], "QEMU default: 2 queue vectors + control queue + config")
	require.Equal(t, "bar1+0x0", msix.Attrs["table"])
	require.Equal(t, "bar1+0x800", msix.Attrs["pba"])

	cfgTypes := map[uint64]Capability{}
	for _, c := range nic.Caps {
		if c.ID != 0x09 {
			continue
		}
		typ, ok := c.Attr("cfg_type")
		require.True(t, ok, "virtio cap without cfg_type: %+v", c)
		cfgTypes[typ] = c
	}
	for typ := uint64(1); typ <= 5; typ++ {
		require.Contains(t, cfgTypes, typ, "virtio cfg_type %d", typ)
	}
	for typ := uint64(1); typ <= 4; typ++ {
		bar, _ := cfgTypes[typ].Attr("bar")
		require.Equal(t, uint64(4), bar, "cfg_type %d lives in BAR4", typ)
		length, _ := cfgTypes[typ].Attr("length")
		require.NotZero(t, length)
	}
	mult, ok := cfgTypes[2].Attr("mult")
	require.True(t, ok, "notify cap has notify_off_multiplier")
	require.Equal(t, uint64(4), mult)
}

func TestQEMUCommandLineOptions(t *testing.T) {
	out := runGuest(t, "pci=0 memmap=0")
	require.Empty(t, out.PCI)
	require.Empty(t, out.Memmap)
	require.Equal(t, -1, out.ScannedFunctions)
	v, ok := out.Option("pci")
	require.True(t, ok)
	require.Equal(t, "0", v)
}

// TestQEMUHighMemory checks the on-demand page tables: RAM above 4 GiB (pc puts
// what does not fit below 3 GiB at 4 GiB) is reachable, memory beyond RAM is not
// RAM, and addresses that cannot be identity-mapped are refused.
func TestQEMUHighMemory(t *testing.T) {
	for _, tc := range []struct {
		addr   uint64
		result string
	}{
		{0x100000000, "ok"},        // first byte of RAM above 4 GiB
		{0x15ffffff8, "ok"},        // last 8 bytes of it (4.5 GiB guest: 1.5 GiB high)
		{0x160000000, "mismatch"},  // just past RAM
		{0x8000000000, "mismatch"}, // 512 GiB: second PML4 entry, nothing there
		{0x800000000000, "unmapped"},
	} {
		out := runGuestWith(t, 60*time.Second, QEMUOptions{
			MemoryMiB: 4608,
			Cmdline:   "pci=0 memprobe=0x" + strconv.FormatUint(tc.addr, 16),
		})
		require.Equal(t, []MemProbe{{tc.addr, tc.result}}, out.MemProbes)
		var high bool
		for _, e := range out.Memmap {
			high = high || (e.Type == 1 && e.Addr == 0x100000000 && e.Size == 0x60000000)
		}
		require.True(t, high, "memory map shows 1.5 GiB of RAM at 4 GiB")
	}
}

func TestQEMUReset(t *testing.T) {
	// -no-reboot turns the guest's 0xCF9 reset into a clean QEMU exit.
	out := runGuest(t, "end=reset pci=0")
	v, _ := out.Option("end")
	require.Equal(t, "reset", v)
}

func TestQEMUTraps(t *testing.T) {
	for _, tc := range []struct {
		fault                string
		vector, errCode, cr2 uint64
	}{
		{"ud", 6, 0, 0},
		{"pf", 14, 0, 0x10000000000}, // not-present read from kernel mode
	} {
		out := runGuestRaw(t, 60*time.Second, QEMUOptions{Cmdline: "pci=0 memmap=0 fault=" + tc.fault})
		require.False(t, out.Done, tc.fault)
		require.True(t, out.Halted, tc.fault)
		require.Len(t, out.Traps, 1, tc.fault)
		tr := out.Traps[0]
		require.Equal(t, tc.vector, tr.Vector, tc.fault)
		require.Equal(t, tc.errCode, tr.Error, tc.fault)
		require.GreaterOrEqual(t, tr.RIP, uint64(0x100000), tc.fault)
		if tc.vector == 14 {
			require.Equal(t, tc.cr2, tr.CR2, tc.fault)
		}
		require.Empty(t, out.Failures, "power-off after the trap")
	}
}

// TestQEMUKVM boots the guest under QEMU with -accel kvm: on this project's
// machines /dev/kvm is an emulated KVM (kvm_pvm) that runs every guest
// instruction through KVM's emulator, which is what rscvm's integration tests
// face too. SeaBIOS dominates the 4-15 s run here (the guest itself takes
// ~70 ms); on hardware KVM it is instant.
func TestQEMUKVM(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: QEMU+KVM boot takes 4-15 s on emulated KVM")
	}
	testenv.KVM(t)
	out := runGuestWith(t, 240*time.Second, QEMUOptions{Accel: "kvm", Cmdline: "kvm=1"})
	checkPCMachine(t, out)
}

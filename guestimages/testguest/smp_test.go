package testguest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/internal/testenv"
)

func TestParseOutputSMPSamples(t *testing.T) {
	for _, tc := range []struct {
		file string
		cpus int
	}{
		{"qemu-smp.txt", 2},   // QEMU 7.2 TCG, -smp 2, "smp=1 caps=0"
		{"rscvm-smp4.txt", 4}, // rscvm boot under this machine's KVM, -smp 4, "smp=1 pci=0"
	} {
		data, err := os.ReadFile(filepath.Join("testdata", tc.file))
		require.NoError(t, err)
		out, err := ParseOutput(data)
		require.NoError(t, err, tc.file)
		requireAllCPUsUp(t, out, tc.cpus)
		require.True(t, out.Done, tc.file)
	}
}

func TestParseOutputSMPLines(t *testing.T) {
	out, err := ParseOutput([]byte(strings.Join([]string{
		"smp error rsdp addr=0x0 outside ram",
		"smp madt cpus=3 apic_ids=0,2,4 addr=0xe0920 lapic=0xfee00000",
		"smp bsp apic_id=2 apic_base=0xfee00900",
		"smp cpu apic_id=0 up",
		"smp cpu apic_id=4 timeout",
		"smp done cpus=3 up=2",
		"smp cpu apic_id=4 up",
		"smp madt cpus=0 apic_ids= addr=0x1 lapic=0x0",
	}, "\r\n")))
	require.NoError(t, err)
	s := out.SMP
	require.NotNil(t, s)
	require.Equal(t, []string{"rsdp addr=0x0 outside ram"}, s.Errors)
	require.True(t, s.MADTSeen)
	require.Equal(t, 0, s.MADTCPUs, "the last madt line wins")
	require.Empty(t, s.APICIDs)
	require.True(t, s.BSPSeen)
	require.Equal(t, uint32(2), s.BSPAPICID)
	require.Equal(t, uint64(0xfee00900), s.APICBase)
	require.Equal(t, []uint32{0, 4}, s.Up)
	require.Equal(t, []uint32{4}, s.Timeouts)
	require.True(t, s.Done)
	require.Equal(t, 3, s.DoneCPUs)
	require.Equal(t, 2, s.DoneUp)
	require.True(t, s.IsUp(4))
	require.False(t, s.IsUp(2))

	out, err = ParseOutput([]byte("rscvm-testguest: done\n"))
	require.NoError(t, err)
	require.Nil(t, out.SMP)
}

func TestParseOutputRejectsMalformedSMP(t *testing.T) {
	for _, line := range []string{
		"smp",
		"smp madt",
		"smp madt cpus=2 apic_ids=0 addr=0x0 lapic=0x0",
		"smp madt cpus=1 apic_ids=x addr=0x0 lapic=0x0",
		"smp madt cpus=1 addr=0x0 lapic=0x0",
		"smp madt cpus=1 apic_ids=0 lapic=0x0",
		"smp madt cpus=257 apic_ids=" + strings.Repeat("0,", 256) + "0 addr=0x0 lapic=0x0",
		"smp bsp apic_id=0",
		"smp cpu apic_id=1",
		"smp cpu apic_id=1 down",
		"smp cpu id=1 up",
		"smp cpu apic_id=1 up now",
		"smp done cpus=2",
		"smp done cpus=2 up=x",
		"smp start",
	} {
		_, err := ParseOutput([]byte(line + "\n"))
		require.ErrorIs(t, err, ErrMalformed, line)
	}
	_, err := ParseOutput(bytes.Repeat([]byte("smp cpu apic_id=1 up\n"), maxSMPEntries+1))
	require.ErrorIs(t, err, ErrMalformed, "unbounded cpu lines")
}

// requireAllCPUsUp checks a clean smp=1 run on n CPUs with APIC IDs 0..n-1
// (QEMU's and rscvm's numbering), the BSP being 0.
func requireAllCPUsUp(t *testing.T, out *Output, n int) {
	t.Helper()
	s := out.SMP
	require.NotNil(t, s, "smp lines")
	require.Empty(t, s.Errors)
	require.Empty(t, s.Timeouts)
	require.True(t, s.MADTSeen)
	require.Equal(t, n, s.MADTCPUs)
	var want, wantUp []uint32
	for i := 0; i < n; i++ {
		want = append(want, uint32(i))
		if i > 0 {
			wantUp = append(wantUp, uint32(i))
		}
	}
	require.Equal(t, want, s.APICIDs)
	require.Equal(t, uint64(0xfee00000), s.LAPICAddr)
	require.True(t, s.BSPSeen)
	require.Equal(t, uint32(0), s.BSPAPICID)
	require.Equal(t, uint64(0xfee00000), s.APICBase&^0xfff, "xAPIC at the default address")
	require.NotZero(t, s.APICBase&(1<<11), "APIC enabled")
	require.Zero(t, s.APICBase&(1<<10), "xAPIC mode, not x2APIC")
	require.NotZero(t, s.APICBase&(1<<8), "BSP flag")
	require.ElementsMatch(t, wantUp, s.Up)
	require.True(t, s.Done)
	require.Equal(t, n, s.DoneCPUs)
	require.Equal(t, n, s.DoneUp)
}

func TestQEMUSMP(t *testing.T) {
	for _, n := range []int{2, 4} {
		out := runGuest(t, "smp=1", "-smp", strconv.Itoa(n))
		requireAllCPUsUp(t, out, n)
		checkPCMachine(t, out)
	}
	// Off by default: no smp lines, one CPU running.
	out := runGuest(t, "pci=0", "-smp", "2")
	require.Nil(t, out.SMP)
	// A single CPU: the MADT has one entry, nothing to start.
	out = runGuest(t, "smp=1 pci=0")
	requireAllCPUsUp(t, out, 1)
	// Hot-pluggable CPUs are in QEMU's MADT without the enabled flag.
	out = runGuest(t, "smp=1 pci=0", "-smp", "2,maxcpus=4")
	requireAllCPUsUp(t, out, 2)
	// An APIC ID nobody has: a timeout line, the run goes on.
	out = runGuest(t, "smp=1 pci=0 smpextra=7 smpwait=100", "-smp", "2")
	requireTimeout(t, out)
}

// requireTimeout checks an "smp=1 smpextra=7" run on 2 CPUs.
func requireTimeout(t *testing.T, out *Output) {
	t.Helper()
	s := out.SMP
	require.NotNil(t, s)
	require.Equal(t, []uint32{0, 1}, s.APICIDs)
	require.Equal(t, []uint32{1}, s.Up)
	require.Equal(t, []uint32{7}, s.Timeouts)
	require.Empty(t, s.Errors)
	require.True(t, s.Done)
	require.Equal(t, 3, s.DoneCPUs)
	require.Equal(t, 2, s.DoneUp)
}

// TestRscvmSMP boots the guest with -smp 2 and 4 under `rscvm boot` when
// RSCVM_TESTGUEST_VMM names an rscvm binary (this package cannot import
// vmm/pc, which imports it): every vCPU must start through INIT-SIPI-SIPI.
func TestRscvmSMP(t *testing.T) {
	bin := os.Getenv("RSCVM_TESTGUEST_VMM")
	if bin == "" {
		t.Skip("RSCVM_TESTGUEST_VMM not set (path to an rscvm binary: go build -o /tmp/rscvm ./cmd/rscvm)")
	}
	testenv.KVM(t)
	elfPath := guestELF(t)
	for _, tc := range []struct {
		n       int
		cmdline string
	}{{2, "smp=1 pci=0"}, {4, "smp=1 pci=0"}, {2, "smp=1 pci=0 smpextra=7 smpwait=100"}} {
		n := tc.n
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		// No NIC: RscvmCommand's argv without the netdev/device pair.
		argv := []string{bin, "boot", "-kernel", elfPath, "-append", tc.cmdline, "-m", "128",
			"-serial", "stdio", "-smp", strconv.Itoa(n)}
		argv = append(argv, strings.Fields(os.Getenv("RSCVM_TESTGUEST_VMM_ARGS"))...)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		t.Logf("%s\nserial:\n%s\nstderr:\n%s", strings.Join(argv, " "), stdout.Bytes(), stderr.Bytes())
		require.NoError(t, err, "rscvm must exit 0 after the guest's power-off")
		out, err := ParseOutput(stdout.Bytes())
		require.NoError(t, err)
		require.True(t, out.Done)
		require.Empty(t, out.Traps)
		if strings.Contains(tc.cmdline, "smpextra") {
			requireTimeout(t, out)
		} else {
			requireAllCPUsUp(t, out, n)
		}
	}
}

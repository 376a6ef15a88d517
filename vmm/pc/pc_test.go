package pc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/guestimages/testguest"
	"github.com/rscvm/rscvm/internal/testenv"
	"github.com/rscvm/rscvm/vmm"
	"github.com/rscvm/rscvm/vmm/boot"
)

var (
	guestOnce sync.Once
	guestELF  string
	guestErr  error
)

// testGuest builds the freestanding test guest once per test binary.
func testGuest(t *testing.T) []byte {
	t.Helper()
	guestOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rscvm-pc-test-")
		if err != nil {
			guestErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		guestELF, guestErr = testguest.Build(ctx, dir)
	})
	if guestErr != nil {
		if os.Getenv("RSCVM_REQUIRE_KVM") != "1" && strings.Contains(guestErr.Error(), "executable file not found") {
			t.Skipf("cannot build the test guest: %v", guestErr)
		}
		require.NoError(t, guestErr)
	}
	b, err := os.ReadFile(guestELF)
	require.NoError(t, err)
	return b
}

// syncBuffer is a bytes.Buffer safe for the UART's writer goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func bootTestGuest(t *testing.T, cpus int, mem uint64, cmdline string) (*testguest.Output, vmm.StopReason, []byte, error) {
	t.Helper()
	testenv.KVM(t)
	var console syncBuffer
	p, err := New(Config{MemBytes: mem, CPUs: cpus, Kernel: testGuest(t), Cmdline: cmdline, Serial: &console})
	require.NoError(t, err)
	defer p.Close()
	require.Equal(t, boot.KindPVH, p.Kind)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runErr := p.Run(ctx)
	reason, _ := p.Machine.Stopped()
	raw := console.Bytes()
	out, perr := testguest.ParseOutput(raw)
	require.NoError(t, perr, "console:\n%s", raw)
	return out, reason, raw, runErr
}

func TestBootTestGuestScansAndPowersOff(t *testing.T) {
	start := time.Now()
	out, reason, raw, err := bootTestGuest(t, 1, 128<<20, "x=1 hello=world")
	require.NoError(t, err, "console:\n%s", raw)
	require.Equal(t, vmm.StopPowerOff, reason)
	require.Less(t, time.Since(start), 30*time.Second)
	require.True(t, out.Started && out.Done, "console:\n%s", raw)
	require.Equal(t, "x=1 hello=world", out.Cmdline)

	// The memory map the guest read from hvm_start_info is the one rscvm built.
	require.Len(t, out.Memmap, 4)
	require.Equal(t, uint64(0x100000), out.Memmap[3].Addr)
	require.Equal(t, uint64(128<<20-0x100000), out.Memmap[3].Size)
	require.Equal(t, uint32(1), out.Memmap[3].Type)
	require.Equal(t, uint64(0xE0000), out.StartInfo.RSDPPaddr)

	// Bus 0 holds exactly the i440FX-like host bridge.
	require.Len(t, out.PCI, 1)
	hb := out.PCI[0]
	require.Equal(t, uint16(0x8086), hb.Vendor)
	require.Equal(t, uint16(0x1237), hb.Device)
	require.Equal(t, uint32(0x060000), hb.Class)
	require.Equal(t, 1, out.ScannedFunctions)
}

// With -smp 2 and -smp 4 the guest finds every vCPU in rscvm's MADT, starts
// the application processors with INIT-SIPI-SIPI through its local APIC,
// and each of them runs and reports in.
func TestBootTestGuestSMP(t *testing.T) {
	for _, cpus := range []int{2, 4} {
		out, reason, raw, err := bootTestGuest(t, cpus, 256<<20, "smp=1 pci=0")
		require.NoError(t, err, "console:\n%s", raw)
		require.Equal(t, vmm.StopPowerOff, reason)
		require.True(t, out.Done)
		require.NotNil(t, out.SMP, "console:\n%s", raw)
		require.Equal(t, cpus, out.SMP.MADTCPUs)
		require.Empty(t, out.SMP.Errors)
		require.Empty(t, out.SMP.Timeouts)
		require.Len(t, out.SMP.Up, cpus-1, "every AP ran; console:\n%s", raw)
	}
}

func TestBootTestGuestReset(t *testing.T) {
	out, reason, raw, err := bootTestGuest(t, 1, 64<<20, "end=reset pci=0")
	require.NoError(t, err, "a guest reset ends rscvm cleanly; console:\n%s", raw)
	require.Equal(t, vmm.StopReset, reason)
	require.True(t, out.Done)
}

func TestBootTestGuestTrapReported(t *testing.T) {
	out, _, raw, err := bootTestGuest(t, 1, 64<<20, "fault=ud pci=0")
	require.NoError(t, err, "console:\n%s", raw)
	require.True(t, out.Halted, "console:\n%s", raw)
	require.NotEmpty(t, out.Traps)
	require.Equal(t, 6, int(out.Traps[0].Vector), "#UD")
}

func TestBootRejectsNonKernel(t *testing.T) {
	testenv.KVM(t)
	_, err := New(Config{MemBytes: 64 << 20, Kernel: []byte("this is not a kernel at all, just some text bytes")})
	require.Error(t, err)
	require.True(t, errors.Is(err, boot.ErrUnknownFormat), "%v", err)
}

func TestHighMemoryGuest(t *testing.T) {
	// 4.5 GiB: RAM is split around the PCI hole; the guest sees RAM above 4 GiB.
	out, _, raw, err := bootTestGuest(t, 1, 4608<<20, "pci=0 memprobe=0x15ffff000")
	require.NoError(t, err, "console:\n%s", raw)
	var ram uint64
	for _, e := range out.Memmap {
		if e.Type == 1 {
			ram += e.Size
		}
	}
	require.Equal(t, uint64(4608<<20)-0x100000+0x9FC00, ram)
	require.Equal(t, []testguest.MemProbe{{Addr: 0x15ffff000, Result: "ok"}}, out.MemProbes, "the last page of RAM above 4 GiB is usable")
}

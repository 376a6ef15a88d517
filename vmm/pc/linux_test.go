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

	"github.com/rscvm/rscvm/internal/testenv"
	"github.com/rscvm/rscvm/vmm"
)

// Linux boots here run on an emulated KVM: minutes, not seconds
// (../shared/docs/guest-images.md). Each test stops the guest as soon as
// the milestone it checks for appears on the console.
const linuxBootTimeout = 10 * time.Minute

// imagePath returns a guest image built by `make guest`, skipping the test
// when it is missing, unless RSCVM_REQUIRE_KVM=1.
func imagePath(t *testing.T, rel string) string { return testenv.Image(t, rel) }

func readImage(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(imagePath(t, rel))
	require.NoError(t, err)
	return b
}

// consoleWatch collects console output and stops the machine once a
// milestone line appears.
type consoleWatch struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	want    string
	reached chan struct{}
	once    sync.Once
}

func newConsoleWatch(want string) *consoleWatch {
	return &consoleWatch{want: want, reached: make(chan struct{})}
}

func (c *consoleWatch) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.want != "" && bytes.Contains(c.buf.Bytes(), []byte(c.want)) {
		c.once.Do(func() { close(c.reached) })
	}
	return len(p), nil
}

func (c *consoleWatch) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// bootLinux boots cfg until want appears on the console (then stops the
// machine) or the guest stops by itself. It returns the console and Run's
// error.
func bootLinux(t *testing.T, cfg Config, want string) (string, error) {
	t.Helper()
	w := newConsoleWatch(want)
	cfg.Serial = w
	p, err := New(cfg)
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), linuxBootTimeout)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Run(ctx) }()
	select {
	case <-w.reached:
		p.Machine.Stop(nil)
		err = <-done
		t.Logf("reached %q after %v", want, time.Since(start).Round(time.Second))
		require.NoError(t, err)
		return w.String(), nil
	case err = <-done:
		t.Logf("guest stopped after %v", time.Since(start).Round(time.Second))
		return w.String(), err
	}
}

func linuxCmdline(t *testing.T) string {
	return strings.TrimSpace(string(readImage(t, "linux/cmdline.txt")))
}

func requireConsole(t *testing.T, console string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		require.Contains(t, console, w, "console tail:\n%s", tail(console, 40))
	}
}

// The linux-source kernel (bzImage) reaches init with two vCPUs: it used the
// e820 map, the MADT for SMP and the DSDT's PCI host bridge rscvm provides.
func TestLinuxBzImageSMPBootsToInit(t *testing.T) {
	testenv.KVM(t)
	cfg := Config{MemBytes: 256 << 20, CPUs: 2, Kernel: readImage(t, "linux/bzImage"),
		Initrd: readImage(t, "initramfs.cpio"), Cmdline: linuxCmdline(t)}
	console, err := bootLinux(t, cfg, "Run /init as init process")
	require.NoError(t, err, "console tail:\n%s", tail(console, 40))
	requireConsole(t, console,
		"BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
		"BIOS-e820: [mem 0x00000000000e0000-0x00000000000fffff] reserved",
		"BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable",
		"ACPI: RSDP 0x00000000000E0000",
		"ACPI: APIC 0x00000000000E",
		"ACPI: DSDT 0x00000000000E",
		"ACPI: Using ACPI (MADT) for SMP configuration information",
		"ACPI: Interpreter enabled",
		"ACPI: PM: (supports S0 S5)",
		"smp: Brought up 1 node, 2 CPUs",
		"ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00-ff])",
		"pci 0000:00:00.0: [8086:1237] type 00 class 0x060000",
		"Serial: 8250/16550 driver",
		"Unpacking initramfs",
		"Run /init as init process",
	)
}

// The uncompressed vmlinux of the same kernel boots through PVH.
func TestLinuxPVHBootsToInit(t *testing.T) {
	testenv.KVM(t)
	cfg := Config{MemBytes: 256 << 20, CPUs: 1, Kernel: readImage(t, "linux/vmlinux"),
		Initrd: readImage(t, "initramfs.cpio"), Cmdline: linuxCmdline(t)}
	console, err := bootLinux(t, cfg, "Run /init as init process")
	require.NoError(t, err, "console tail:\n%s", tail(console, 40))
	requireConsole(t, console, "BIOS-provided physical RAM map", "ACPI: Using ACPI (MADT) for SMP configuration information",
		"Run /init as init process")
}

// Debian's prebuilt kernel cannot run on this machine's emulated KVM (its
// int3 self-test); rscvm must end the run with a clear report of the
// instruction it stopped at, not hang. On hardware KVM the kernel reaches
// its initramfs instead, which the test accepts.
func TestDebianKernelStopsWithClearError(t *testing.T) {
	testenv.KVM(t)
	if _, err := os.Stat("/sys/module/kvm_pvm"); err != nil {
		t.Skip("the int3 emulation failure is specific to the emulated KVM (kvm_pvm)")
	}
	// The same feature masking as the linux-source kernel, without its
	// switch that skips the int3 self-test (Debian's kernel has none).
	cmdline := strings.ReplaceAll(linuxCmdline(t), "rscvm.noint3", "")
	cfg := Config{MemBytes: 256 << 20, CPUs: 1, Kernel: readImage(t, "debian/vmlinuz"), Cmdline: cmdline}
	console, err := bootLinux(t, cfg, "")
	require.Error(t, err, "console tail:\n%s", tail(console, 40))
	var gerr *vmm.GuestError
	require.True(t, errors.As(err, &gerr), "%v", err)
	msg := err.Error()
	require.Contains(t, msg, "internal error")
	require.Contains(t, msg, "RIP 0x")
	require.Contains(t, msg, "instruction bytes")
	require.Equal(t, byte(0xcc), gerr.Insn[0], "stopped at the int3 of the self-test: %s", msg)
	requireConsole(t, console, "Linux version 6.1", "BIOS-e820:", "ACPI: APIC 0x00000000000E")
}

// On hardware KVM rscvm boots the Linux guest all the way to the agent's
// ready line (its userspace /init). This machine's emulated KVM cannot run
// guest userspace at all, so the test runs only with RSCVM_FULL_BOOT=1.
func TestLinuxFullBootToAgent(t *testing.T) {
	if os.Getenv("RSCVM_FULL_BOOT") != "1" {
		t.Skip("set RSCVM_FULL_BOOT=1 on a host with hardware KVM (guest userspace cannot run on kvm_pvm)")
	}
	testenv.KVM(t)
	for _, kernel := range []string{"linux/bzImage", "debian/vmlinuz"} {
		t.Run(strings.ReplaceAll(kernel, "/", "_"), func(t *testing.T) {
			cfg := Config{MemBytes: 512 << 20, CPUs: 2, Kernel: readImage(t, kernel),
				Initrd: readImage(t, "initramfs.cpio"), Cmdline: "console=ttyS0 panic=-1 rscvm.agent=ready"}
			console, err := bootLinux(t, cfg, "rscvm-agent: ready")
			require.NoError(t, err, "console tail:\n%s", tail(console, 40))
			require.Contains(t, console, "rscvm-agent: ready")
		})
	}
}

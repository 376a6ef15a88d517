// Package testenv is what rscvm's tests know about the machine they run on:
// whether it has what a test needs (KVM, root, the TUN device, command-line
// tools, QEMU, the guest images) and the one policy for when it does not. A
// test skips with the reason, unless RSCVM_REQUIRE_KVM=1 (set by CI, whose
// machines have everything) makes the missing piece a failure, so that no
// test passes in CI by skipping.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireEnv is the variable that turns skips into failures.
const RequireEnv = "RSCVM_REQUIRE_KVM"

// Required reports whether every test must run (RSCVM_REQUIRE_KVM=1).
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// SkipOrFail skips tb with the message, or fails it when Required.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		tb.Fatalf("%s=1 but %s", RequireEnv, msg)
		return
	}
	tb.Skip(msg)
}

// KVMError returns nil if /dev/kvm opens and answers KVM_GET_API_VERSION
// with the stable version 12.
func KVMError() error {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/kvm: %w", err)
	}
	defer unix.Close(fd)
	const kvmGetAPIVersion = 0xAE00
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("KVM_GET_API_VERSION: %w", errno)
	}
	if v != 12 {
		return fmt.Errorf("KVM API version %d (want 12)", v)
	}
	return nil
}

// KVM needs a usable /dev/kvm.
func KVM(tb testing.TB) {
	tb.Helper()
	if err := KVMError(); err != nil {
		SkipOrFail(tb, "KVM is unusable: %v", err)
	}
}

// Root needs uid 0; why says what for ("a TAP", "a network namespace").
func Root(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(tb, "the test needs root for %s", why)
	}
}

// TUN needs root and /dev/net/tun.
func TUN(tb testing.TB) {
	tb.Helper()
	Root(tb, "a TAP")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		SkipOrFail(tb, "the test needs /dev/net/tun: %v", err)
	}
}

// Tool needs a command on PATH; pkg is the Debian package that has it.
// It returns the command's path.
func Tool(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(tb, "the test needs %s (apt-get install %s)", name, pkg)
	}
	return p
}

// QEMU needs qemu-system-x86_64 and returns its path.
func QEMU(tb testing.TB) string {
	tb.Helper()
	return Tool(tb, "qemu-system-x86_64", "qemu-system-x86")
}

// OutDir is the guest-image directory: $RSCVM_OUT, else out/ next to the
// go.mod above the working directory.
func OutDir() (string, error) {
	if d := os.Getenv("RSCVM_OUT"); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "out"), nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("no go.mod above the working directory: set RSCVM_OUT")
		}
	}
}

// Image returns the path of a file in the guest-image directory (`make
// guest` builds them), skipping or failing when it is missing.
func Image(tb testing.TB, rel string) string {
	tb.Helper()
	dir, err := OutDir()
	if err != nil {
		SkipOrFail(tb, "no guest image directory: %v", err)
	}
	p := filepath.Join(dir, rel)
	if _, err := os.Stat(p); err != nil {
		SkipOrFail(tb, "guest image %s is missing (run `make guest`): %v", p, err)
	}
	return p
}

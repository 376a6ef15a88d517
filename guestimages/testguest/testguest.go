// Package testguest builds and runs the freestanding rscvm test guest: a small
// PVH ELF (C and assembly, no libc) that prints its boot information, scans PCI
// bus 0 and powers off, one machine-readable line per fact on COM1.
//
// The guest sources live in src/ (C and GNU assembly; go ignores the directory)
// with build.sh next to this file, and are embedded, so Build works
// from any working directory. The same ELF boots under rscvm and under
// `qemu-system-x86_64 -kernel` (QEMU's PVH loader); RunQEMU runs it there.
// ParseOutput turns the serial output into an Output for host-side assertions.
package testguest

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

//go:embed build.sh src
var sources embed.FS

// ELFName is the file name Build writes into its output directory.
const ELFName = "testguest.elf"

// Build compiles the guest with gcc and binutils into outDir/testguest.elf and
// returns that path. The output is byte-for-byte reproducible for a given
// toolchain, whatever outDir is.
func Build(ctx context.Context, outDir string) (string, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("testguest: create output dir: %w", err)
	}
	srcDir, err := os.MkdirTemp("", "rscvm-testguest-src-")
	if err != nil {
		return "", fmt.Errorf("testguest: create source dir: %w", err)
	}
	defer os.RemoveAll(srcDir)
	if err := writeSources(srcDir); err != nil {
		return "", err
	}
	absOut, err := filepath.Abs(outDir)
	if err != nil {
		return "", fmt.Errorf("testguest: output dir: %w", err)
	}
	cmd := exec.CommandContext(ctx, "sh", filepath.Join(srcDir, "build.sh"), absOut)
	cmd.Dir = srcDir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("testguest: build.sh: %w\n%s", err, out.Bytes())
	}
	return filepath.Join(absOut, ELFName), nil
}

// writeSources copies build.sh and src/ into dir.
func writeSources(dir string) error {
	return fs.WalkDir(sources, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("testguest: walk embedded sources: %w", err)
		}
		dst := filepath.Join(dir, filepath.FromSlash(path))
		if d.IsDir() {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return fmt.Errorf("testguest: create %s: %w", dst, err)
			}
			return nil
		}
		data, err := sources.ReadFile(path)
		if err != nil {
			return fmt.Errorf("testguest: read embedded %s: %w", path, err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return fmt.Errorf("testguest: write %s: %w", dst, err)
		}
		return nil
	})
}

// QEMUBinary is the QEMU system emulator RunQEMU starts.
const QEMUBinary = "qemu-system-x86_64"

// QEMUOptions configures a QEMU run of the guest.
type QEMUOptions struct {
	// Accel is the accelerator: "tcg" (the default) or "kvm".
	Accel string
	// MemoryMiB is the RAM size (-m); 0 means 128.
	MemoryMiB int
	// Cmdline is the guest command line (-append).
	Cmdline string
	// Extra arguments are appended (devices, netdevs, ...).
	Extra []string
}

// QEMUArgs returns the QEMU command line (without the binary) that boots elf
// through PVH on a pc machine (128 MiB unless set), no default devices, COM1 on stdout
// and no monitor.
func QEMUArgs(elf string, opts QEMUOptions) []string {
	accel := opts.Accel
	if accel == "" {
		accel = "tcg"
	}
	mem := opts.MemoryMiB
	if mem <= 0 {
		mem = 128
	}
	args := []string{
		"-accel", accel,
		"-M", "pc",
		"-m", strconv.Itoa(mem),
		"-nodefaults",
		"-no-reboot",
		"-display", "none",
		"-serial", "stdio",
		"-monitor", "none",
		"-kernel", elf,
		"-append", opts.Cmdline,
	}
	return append(args, opts.Extra...)
}

// ErrQEMUFailed is wrapped by RunQEMU when QEMU exits unsuccessfully.
var ErrQEMUFailed = errors.New("qemu failed")

// RunQEMU boots elf under QEMU (see QEMUArgs) and waits for QEMU to exit by
// itself, which the guest causes by powering off. It returns the serial output
// (QEMU's stdout) and QEMU's stderr; the error is non-nil when QEMU could not
// start, exited non-zero, or ctx ended first.
func RunQEMU(ctx context.Context, elf string, opts QEMUOptions) (serial, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, QEMUBinary, QEMUArgs(elf, opts)...)
	var out, errOut bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	runErr := cmd.Run()
	if ctxErr := ctx.Err(); ctxErr != nil {
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("testguest: qemu did not power off: %w", ctxErr)
	}
	if runErr != nil {
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("testguest: %w: %w", ErrQEMUFailed, runErr)
	}
	return out.Bytes(), errOut.Bytes(), nil
}

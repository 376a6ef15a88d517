package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/rscvm/rscvm/vmm"
	"github.com/rscvm/rscvm/vmm/pc"
)

func runBootCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseBootArgs(args)
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	return bootGuest(ctx, cfg, stdout, stderr)
}

// defaultGuestName is what `rscvm boot` boots without --kernel: the
// freestanding test guest `make guest` builds, which boots in seconds even on
// an emulated KVM.
const defaultGuestName = "testguest.elf"

// outDir finds the guest-image directory: $RSCVM_OUT, else out/ next to the
// repository's go.mod above the working directory or the executable.
func outDir() (string, error) {
	if d := os.Getenv("RSCVM_OUT"); d != "" {
		return d, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, d := range starts {
		for {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return filepath.Join(d, "out"), nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", errors.New("no guest image directory: set RSCVM_OUT or run from the rscvm repository")
}

func bootGuest(ctx context.Context, cfg *bootConfig, stdout, stderr io.Writer) error {
	if cfg.Kernel == "" {
		dir, err := outDir()
		if err != nil {
			return fmt.Errorf("boot: no --kernel given and %w", err)
		}
		cfg.Kernel = filepath.Join(dir, defaultGuestName)
		if _, err := os.Stat(cfg.Kernel); err != nil {
			return fmt.Errorf("boot: no --kernel given and the default guest %s is missing: run `make guest` first", cfg.Kernel)
		}
	}
	kernel, err := os.ReadFile(cfg.Kernel)
	if err != nil {
		return fmt.Errorf("boot: --kernel: %w", err)
	}
	var initrd []byte
	if cfg.Initrd != "" {
		if initrd, err = os.ReadFile(cfg.Initrd); err != nil {
			return fmt.Errorf("boot: --initrd: %w", err)
		}
	}
	var console io.Writer
	var consoleIn io.Reader
	switch cfg.Serial.Kind {
	case "stdio":
		console = stdout
		// Reading stdin would steal a terminal's input from the shell after
		// the guest stops, so take it only when it is not a terminal.
		if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
			consoleIn = os.Stdin
		}
	case "file":
		f, err := os.Create(cfg.Serial.Path)
		if err != nil {
			return fmt.Errorf("boot: --serial: %w", err)
		}
		defer f.Close()
		console = f
	}
	nics, err := parseNICs(cfg.Netdevs, cfg.Devices)
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return fmt.Errorf("boot: /dev/kvm is not available (%v): rscvm needs KVM; load the kvm module or run on a machine with virtualization enabled", err)
	}
	m, err := pc.New(pc.Config{
		MemBytes: cfg.MemBytes, CPUs: cfg.CPUs,
		Kernel: kernel, Initrd: initrd, Cmdline: cfg.Append,
		Serial: console, SerialIn: consoleIn, Logger: slog.Default(),
	})
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	defer m.Close()
	for _, nc := range nics {
		nic, err := m.AddNIC(nc)
		if err != nil {
			return fmt.Errorf("boot: %w", err)
		}
		slog.Debug("virtio-net-pci", "slot", nic.Slot, "tap", nic.Tap.Name(), "mac", nc.Net.MAC.String())
	}
	if cfg.Stats {
		defer printStats(stderr, m)
	}
	slog.Debug("booting", "kernel", cfg.Kernel, "format", m.Kind)
	err = m.Run(ctx)
	reason, _ := m.Machine.Stopped()
	var gerr *vmm.GuestError
	switch {
	case errors.As(err, &gerr):
		return err // "guest stopped: <exit reason> at RIP ...: instruction bytes ..."
	case reason == vmm.StopCanceled && ctx.Err() != nil:
		// SIGINT/SIGTERM: like QEMU, stop the guest and exit cleanly.
		fmt.Fprintln(stderr, "rscvm: terminating on signal")
		return nil
	case err != nil:
		return fmt.Errorf("boot: %w", err)
	}
	slog.Debug("guest stopped", "reason", reason)
	return nil
}

// printStats writes every NIC's counters (virtqueue traffic, drops by
// reason, the control queue and RSC) as JSON, one object per NIC.
func printStats(w io.Writer, m *pc.PC) {
	for _, n := range m.NICs() {
		fmt.Fprintf(w, "rscvm: virtio-net %s (slot %d): negotiated features %#016x\n", n.Tap.Name(), n.Slot, n.Device.Negotiated())
		b, err := n.Device.Stats().JSON()
		if err != nil {
			slog.Warn("stats", "err", err)
			continue
		}
		fmt.Fprintf(w, "rscvm: stats %s (slot %d):\n%s\n", n.Tap.Name(), n.Slot, b)
	}
}

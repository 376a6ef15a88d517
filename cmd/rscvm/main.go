// Command rscvm is a KVM micro-VMM whose centrepiece is a QEMU-compatible
// virtio-net-pci device with receive segment coalescing.
//
//	rscvm boot [flags]   boot a guest (see `rscvm help boot`)
//	rscvm version        print the version
//	rscvm help [command] print help
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a process exit status through the command layer.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

type command struct {
	name, summary string
	usage         func() string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"boot", "boot a guest kernel under KVM", bootUsage, runBootCommand},
		{"demo", "show receive segment coalescing end to end (test guest, TAP, TCP burst)", demoUsage, runDemoCommand},
		{"rsc", "offline tools for the RSC engine (rsc replay)", rscUsage, runRSCCommand},
		{"compat", "compare the test guest's view of QEMU's and rscvm's virtio-net-pci (compat qemu)", compatUsage, runCompatCommand},
		{"vhost-user-net", "serve rscvm's virtio-net datapath and RSC to a vhost-user frontend (QEMU)", vhostUserUsage, runVhostUserCommand},
		{"hck", "HCK-style conformance runs: RSC scenarios through the virtio-net device (hck rsc)", hckUsage, runHCKCommand},
		{"version", "print rscvm's version", func() string { return "usage: rscvm version\n" },
			func(_ context.Context, _ []string, stdout, _ io.Writer) error {
				fmt.Fprintf(stdout, "rscvm %s\n", version)
				return nil
			}},
	}
}

func mainUsage() string {
	s := "rscvm: a KVM micro-VMM with a QEMU-compatible virtio-net-pci device and receive segment coalescing\n\nusage: rscvm <command> [flags]\n\ncommands:\n"
	for _, c := range commands() {
		s += fmt.Sprintf("  %-14s %s\n", c.name, c.summary)
	}
	s += "  help           show help for a command (rscvm help boot)\n"
	return s
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage())
		return exitError{2}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "--help", "-help":
		if len(rest) == 0 {
			fmt.Fprint(stdout, mainUsage())
			return nil
		}
		for _, c := range commands() {
			if c.name == rest[0] {
				fmt.Fprint(stdout, c.usage())
				return nil
			}
		}
		return fmt.Errorf("help: unknown command %q (commands: %s)", rest[0], commandNames())
	case "-version", "--version":
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name {
			for _, a := range rest {
				if a == "-h" || a == "--help" || a == "-help" {
					fmt.Fprint(stdout, c.usage())
					return nil
				}
			}
			return c.run(ctx, rest, stdout, stderr)
		}
	}
	return fmt.Errorf("unknown command %q (commands: %s)", name, commandNames())
}

// subcommand is one entry of a command with subcommands (`rscvm hck rsc`,
// `rscvm rsc replay`).
type subcommand struct {
	name string
	run  func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// runSubcommand dispatches args[0] among subs: no argument prints usage to
// stderr (exit status 2), "help" prints it to stdout, anything else unknown
// is an error naming it and the accepted ones (kind: "suite", "subcommand").
func runSubcommand(ctx context.Context, parent, kind string, usage func() string, subs []subcommand,
	args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return exitError{2}
	}
	if args[0] == "help" {
		fmt.Fprint(stdout, usage())
		return nil
	}
	names := make([]string, len(subs))
	for i, s := range subs {
		if s.name == args[0] {
			return s.run(ctx, args[1:], stdout, stderr)
		}
		names[i] = s.name
	}
	return fmt.Errorf("%s: unknown %s %q (%ss: %s)", parent, kind, args[0], kind, strings.Join(names, ", "))
}

func commandNames() string {
	s := ""
	for _, c := range commands() {
		s += c.name + ", "
	}
	return s + "help"
}

func main() {
	level := slog.LevelInfo
	if os.Getenv("RSCVM_DEBUG") != "" {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	default:
		fmt.Fprintf(os.Stderr, "rscvm: %v\n", err)
		os.Exit(1)
	}
}

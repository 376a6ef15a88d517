package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/rscvm/rscvm/guestimages/testguest"
	"github.com/rscvm/rscvm/guestimages/testguest/compat"
)

// compatUsage is the help text of `rscvm compat`.
func compatUsage() string {
	return `usage: rscvm compat qemu [--json] [--run REGEXP] [--list] [--guest ELF] [--rscvm BINARY] [-v]

Boots the freestanding test guest under QEMU (qemu-system-x86_64, TCG) and
under rscvm for each case (device property sets, RSC scenarios of rsc-spec
part (a)), each VMM on its own TAP in its own network namespace, sends the
same frames into both TAPs, and compares what the two guests report (feature
offer, config, queues, control answers, received packets and their headers and
bytes). Nothing about timing is compared; where QEMU's timer makes packet
boundaries nondeterministic the case compares the reassembled TCP stream and
says so. Part (a) scenarios that neither the host side of the TAP nor the test
guest's driver can drive are listed after the table.

Each case is one of:
  identical             the reports are the same
  differs as expected   every difference is a QEMU defect from rsc-spec
                        part (b) (cited by number) or deliberate rscvm behaviour
  differs unexpectedly  a difference nobody explained: a bug in rscvm until
                        shown otherwise (the differing fields are listed)
  error                 the case did not run (VMM or guest failure)
Exit status 1 if any case differs unexpectedly or fails.

Needs root, /dev/kvm, /dev/net/tun, iproute2, qemu-system-x86 and the test
guest (out/testguest.elf from ` + "`make guest`" + `, else built with gcc).

flags:
  --json           one JSON document (cases, differences, both reports)
  --run REGEXP     only cases whose name matches
  --list           list the cases, then which part (a) scenarios they drive
                   (and why the others cannot be driven), and exit
  --guest ELF      the test guest (default $RSCVM_OUT or out/testguest.elf)
  --rscvm BINARY   the rscvm binary to compare (default: this one)
  -v               log every serial line to stderr
`
}

func runCompatCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "qemu" {
		fmt.Fprint(stderr, compatUsage())
		return exitError{2}
	}
	var (
		asJSON, list, verbose bool
		runRE                 *regexp.Regexp
		elf, bin              string
	)
	rest := args[1:]
	for i := 0; i < len(rest); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(rest[i], "-"), "=")
		needVal := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(rest) {
				return "", fmt.Errorf("compat: flag %s needs a value", rest[i])
			}
			i++
			return rest[i], nil
		}
		var err error
		switch name {
		case "json":
			asJSON = true
		case "list":
			list = true
		case "v":
			verbose = true
		case "run":
			var v string
			if v, err = needVal(); err == nil {
				if runRE, err = regexp.Compile(v); err != nil {
					err = fmt.Errorf("compat: --run %q: %w", v, err)
				}
			}
		case "guest":
			elf, err = needVal()
		case "rscvm":
			bin, err = needVal()
		default:
			err = fmt.Errorf("compat: unknown flag %s (accepted: --json, --run, --list, --guest, --rscvm, -v)", rest[i])
		}
		if err != nil {
			return err
		}
	}
	var cases []compat.Case
	for _, c := range compat.Cases() {
		if runRE == nil || runRE.MatchString(c.Name) {
			cases = append(cases, c)
		}
	}
	if list {
		for _, c := range cases {
			fmt.Fprintf(stdout, "%-40s %s\n", c.Name, c.About)
		}
		fmt.Fprintln(stdout)
		compat.WriteCoverage(stdout, cases)
		return nil
	}
	if len(cases) == 0 {
		return fmt.Errorf("compat: no case matches --run")
	}
	if err := testguest.NetnsAvailable(); err != nil {
		return fmt.Errorf("compat: needs root, /dev/net/tun and iproute2 (ip netns): %w", err)
	}
	if _, err := exec.LookPath(testguest.QEMUBinary); err != nil {
		return fmt.Errorf("compat: %s not found (apt-get install qemu-system-x86): %w", testguest.QEMUBinary, err)
	}
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("compat: %w", err)
		}
		bin = self
	}
	if elf == "" {
		dir, err := outDir()
		if err != nil {
			return fmt.Errorf("compat: %w", err)
		}
		elf = filepath.Join(dir, defaultGuestName)
		if _, err := os.Stat(elf); err != nil {
			tmp, err := os.MkdirTemp("", "rscvm-compat-")
			if err != nil {
				return fmt.Errorf("compat: %w", err)
			}
			defer os.RemoveAll(tmp)
			if elf, err = testguest.Build(ctx, tmp); err != nil {
				return fmt.Errorf("compat: no %s and building the test guest failed: %w", filepath.Join(dir, defaultGuestName), err)
			}
		}
	}
	cfg := compat.Config{
		ELF: elf,
		QEMU: func([]string) testguest.VMMCommand {
			return testguest.QEMUCommand(testguest.QEMUOptions{})
		},
		Rscvm: func(props []string) testguest.VMMCommand {
			inner := testguest.RscvmCommand(bin)
			return func(elf, cmdline string, nic testguest.NIC) []string {
				nic.DeviceProps = append(append([]string(nil), nic.DeviceProps...), props...)
				return inner(elf, cmdline, nic)
			}
		},
	}
	if verbose {
		cfg.Log = func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }
	}
	start := time.Now()
	var results []compat.Result
	for _, c := range cases {
		if !asJSON {
			fmt.Fprintf(stderr, "rscvm compat: %s ...\n", c.Name)
		}
		results = append(results, compat.Run(ctx, cfg, c))
		if ctx.Err() != nil {
			break
		}
	}
	sum := compat.Summarise(results)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Summary     compat.Summary    `json:"summary"`
			Cases       []compat.Result   `json:"cases"`
			NotDrivable []compat.Scenario `json:"not_host_drivable"`
			Partial     []compat.Scenario `json:"partly_driven"`
		}{sum, results, compat.NotDrivable(), compat.Partial()}); err != nil {
			return fmt.Errorf("compat: %w", err)
		}
	} else {
		compat.WriteTable(stdout, results)
		fmt.Fprintf(stdout, "\n%d cases in %v: %d identical, %d differ as expected, %d differ unexpectedly, %d errors\n",
			len(results), time.Since(start).Round(time.Second), sum.Identical, sum.Expected, sum.Unexpected, sum.Failed)
	}
	if sum.Unexpected > 0 || sum.Failed > 0 {
		return exitError{1}
	}
	return nil
}

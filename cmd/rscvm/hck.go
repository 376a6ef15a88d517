package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/rscvm/rscvm/rsc/conformance"
	"github.com/rscvm/rscvm/rsc/conformance/hck"
)

// hckUsage is the help text for `rscvm hck`.
func hckUsage() string {
	return `usage: rscvm hck rsc [--tap NAME [--netns]] [--ipv4|--ipv6] [--interval NS] [--json] [--run REGEX] [--engine]

HCK-style conformance runs. Suite rsc runs the receive segment coalescing
scenarios of rsc-spec part (a) (the 54 scenarios and their variants, as
S01_BasicV4 ...) through the whole device: the virtio-net device model with
guest_rsc_ext=on and rsc_interval=NS, driven by a test driver that negotiates
like NetKVM (RSC_EXT, GUEST_CSUM, GUEST_TSO4/6, CTRL_GUEST_OFFLOADS,
MRG_RXBUF), switches RSC on with GUEST_OFFLOADS_SET bit 61, posts mergeable
receive buffers and checks every delivered packet (virtio-net header incl.
RSC_INFO, segment counts, payload bytes, IP length and checksums, order).
Frames come from the in-memory backend, or with --tap from the host side of a
real TAP. The device runs on a virtual clock that the runner advances, so
results do not depend on the host's speed.

Prints a table (scenario, family, result, detail = what differed first) and a
summary line "N passed, N failed"; the exit status is 1 if any scenario
failed. Scenarios a runner cannot run (engine-only settings, runt frames on a
TAP, timing-dependent ones on a TAP) are reported SKIP with the reason.

flags:
  --tap NAME
        run on the real TAP NAME (created if missing) instead of the in-memory
        backend: frames are sent from the host side with an AF_PACKET socket. Needs
        root (CAP_NET_ADMIN, CAP_NET_RAW). The TAP's MTU is raised for the run and
        restored afterwards
  --netns
        with --tap: create the TAP in a fresh network namespace that disappears
        after the run (no host traffic on it; needs CAP_SYS_ADMIN)
  --ipv4
        run the IPv4 scenarios only (and those without traffic)
  --ipv6
        run the IPv6 scenarios only (and those without traffic)
  --interval NS
        rsc_interval in nanoseconds, 1 to 4294967295 (default 1000000, the HCK
        setting guest_rsc_ext=on,rsc_interval=1000000); scenario times scale with
        it, scenarios that need another interval set their own
  --json
        write one JSON document instead of the table: runner, interval and per
        scenario id, number, title, family, result, detail and duration
  --run REGEX
        run only the scenarios whose name matches REGEX (Go regexp syntax, e.g.
        'S0[1-9]|S29')
  --engine
        run the scenarios through the pure RSC engine instead of the device
        (checks the scenario data and the engine alone)
`
}

// hckScenarios lists the suite's scenarios (tests replace it).
var hckScenarios = conformance.Scenarios

// hckOptions is what `rscvm hck rsc` was asked to do.
type hckOptions struct {
	Tap      string
	Netns    bool
	IPv4     bool
	IPv6     bool
	Interval time.Duration
	JSON     bool
	Run      *regexp.Regexp
	Engine   bool
}

// regexpValue is a flag.Value for a regular expression.
type regexpValue struct{ p **regexp.Regexp }

func (v regexpValue) String() string {
	if v.p == nil || *v.p == nil {
		return ""
	}
	return (*v.p).String()
}

func (v regexpValue) Set(s string) error {
	re, err := regexp.Compile(s)
	if err != nil {
		return fmt.Errorf("not a valid regular expression (Go regexp syntax): %v", err)
	}
	*v.p = re
	return nil
}

func hckFlagSet(o *hckOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("hck rsc", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.Tap, "tap", "", "")
	fs.BoolVar(&o.Netns, "netns", false, "")
	fs.BoolVar(&o.IPv4, "ipv4", false, "")
	fs.BoolVar(&o.IPv6, "ipv6", false, "")
	fs.Var(nsValue{&o.Interval, 1, math.MaxUint32, "a whole number of nanoseconds from 1 to 4294967295 (the HCK setting is 1000000)"},
		"interval", "")
	fs.BoolVar(&o.JSON, "json", false, "")
	fs.Var(regexpValue{&o.Run}, "run", "")
	fs.BoolVar(&o.Engine, "engine", false, "")
	return fs
}

func hckFlagNames() string {
	var names []string
	hckFlagSet(&hckOptions{}).VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// parseHCKArgs parses the flags of `rscvm hck rsc`.
func parseHCKArgs(args []string) (*hckOptions, error) {
	o := &hckOptions{Interval: conformance.DefaultInterval}
	fs := hckFlagSet(o)
	if err := fs.Parse(args); err != nil {
		msg := err.Error()
		msg = strings.Replace(msg, "for flag -", "for flag --", 1)
		msg = strings.Replace(msg, "argument: -", "argument: --", 1)
		msg = strings.Replace(msg, "not defined: -", "not defined: --", 1)
		if strings.HasPrefix(msg, "flag provided but not defined") {
			msg += " (accepted: " + hckFlagNames() + ")"
		}
		return nil, errors.New(msg)
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q: hck rsc takes only flags", fs.Arg(0))
	case o.IPv4 && o.IPv6:
		return nil, errors.New("flags --ipv4 and --ipv6 exclude each other (give neither to run both families)")
	case o.Netns && o.Tap == "":
		return nil, errors.New("flag --netns needs --tap NAME")
	case o.Engine && o.Tap != "":
		return nil, errors.New("flags --engine and --tap exclude each other")
	case o.Tap != "" && (len(o.Tap) > 15 || strings.ContainsAny(o.Tap, "/ \t")):
		return nil, fmt.Errorf("invalid value %q for flag --tap: want an interface name of 1 to 15 characters without '/' or spaces", o.Tap)
	}
	return o, nil
}

// runHCKCommand dispatches `rscvm hck <suite>`.
func runHCKCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "hck", "suite", hckUsage, []subcommand{{"rsc",
		func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			opts, err := parseHCKArgs(args)
			if err != nil {
				return fmt.Errorf("hck rsc: %w", err)
			}
			return runHCKRSC(ctx, opts, stdout, stderr)
		}}}, args, stdout, stderr)
}

// hckResult is the JSON form of one scenario's result.
type hckResult struct {
	Scenario   string `json:"scenario"`
	Num        int    `json:"num"`
	Title      string `json:"title"`
	Family     string `json:"family"`
	Result     string `json:"result"`
	Detail     string `json:"detail,omitempty"`
	DurationNs int64  `json:"duration_ns"`
}

// hckReport is the JSON document of `rscvm hck rsc --json`.
type hckReport struct {
	Suite      string      `json:"suite"`
	Runner     string      `json:"runner"`
	Tap        string      `json:"tap,omitempty"`
	IntervalNs int64       `json:"interval_ns"`
	Family     string      `json:"family"`
	Results    []hckResult `json:"results"`
	Passed     int         `json:"passed"`
	Failed     int         `json:"failed"`
	Skipped    int         `json:"skipped"`
}

// newHCKRunner opens the runner the options select.
func newHCKRunner(o *hckOptions) (hck.Runner, string, error) {
	switch {
	case o.Engine:
		return hck.EngineRunner{}, "engine (pure RSC engine, virtual clock)", nil
	case o.Tap != "":
		r, err := hck.NewTapRunner(hck.TapOptions{Name: o.Tap, Netns: o.Netns})
		if err != nil {
			return nil, "", fmt.Errorf("--tap %s: %w", o.Tap, err)
		}
		where := "current network namespace"
		if o.Netns {
			where = "fresh network namespace"
		}
		return r, fmt.Sprintf("tap (virtio-net device on TAP %s in the %s, NetKVM-like driver, virtual clock)", r.Name(), where), nil
	}
	return hck.NewDeviceRunner(hck.Options{}), "device (virtio-net device, in-memory backend, NetKVM-like driver, virtual clock)", nil
}

// runHCKRSC runs the RSC suite and prints the table or JSON.
func runHCKRSC(ctx context.Context, o *hckOptions, stdout, stderr io.Writer) error {
	fam := conformance.Family(0)
	famName := "all"
	switch {
	case o.IPv4:
		fam, famName = conformance.IPv4, "ipv4"
	case o.IPv6:
		fam, famName = conformance.IPv6, "ipv6"
	}
	var match func(string) bool
	if o.Run != nil {
		match = o.Run.MatchString
	}
	scenarios := conformance.Select(hckScenarios(), match, fam, 0)
	if len(scenarios) == 0 {
		return errors.New("hck rsc: no scenario matches the --run and --ipv4/--ipv6 selection")
	}
	runner, desc, err := newHCKRunner(o)
	if err != nil {
		return fmt.Errorf("hck rsc: %w", err)
	}
	defer runner.Close()
	base := conformance.DefaultConfig()
	base.Interval = o.Interval
	fmt.Fprintf(stderr, "hck rsc: %d scenarios, runner %s, rsc_interval=%d ns\n", len(scenarios), desc, o.Interval.Nanoseconds())

	rep := hckReport{Suite: "rsc", Runner: runner.Kind().String(), Tap: o.Tap, IntervalNs: o.Interval.Nanoseconds(), Family: famName}
	w := 8
	for _, sc := range scenarios {
		w = max(w, len(sc.ID))
	}
	row := func(a, b, c, d string) {
		line := fmt.Sprintf("%-*s  %-9s  %-6s  %s", w, a, b, c, d)
		fmt.Fprintln(stdout, strings.TrimRight(line, " "))
	}
	if !o.JSON {
		row("scenario", "family", "result", "detail")
	}
	for _, sc := range scenarios {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("hck rsc: %w", err)
		}
		res := runner.Run(ctx, sc, base)
		switch res.Outcome {
		case conformance.Pass:
			rep.Passed++
		case conformance.Fail:
			rep.Failed++
		default:
			rep.Skipped++
		}
		rep.Results = append(rep.Results, hckResult{Scenario: res.ID, Num: res.Num, Title: res.Title,
			Family: res.Family.String(), Result: res.Outcome.String(), Detail: res.Detail,
			DurationNs: res.Duration.Nanoseconds()})
		if !o.JSON {
			row(res.ID, res.Family.String(), res.Outcome.String(), oneLine(res.Detail))
		}
	}
	if o.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("hck rsc: writing JSON: %w", err)
		}
	} else {
		if rep.Skipped > 0 {
			fmt.Fprintf(stdout, "%d skipped (not meant for this runner; see detail)\n", rep.Skipped)
		}
		fmt.Fprintf(stdout, "%d passed, %d failed\n", rep.Passed, rep.Failed)
	}
	if rep.Failed > 0 {
		return exitError{1}
	}
	return nil
}

// oneLine keeps a detail on one table line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

package rsc

import (
	"testing"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/rsc/conformance"
	"github.com/stretchr/testify/require"
)

// scenario is one conformance scenario of docs/rsc-spec.md part (a), run
// through the engine. The scenarios themselves — input frames, steps and
// expectations — are data in package rsc/conformance (shared with the
// device runners of `rscvm hck rsc`); run executes one with
// conformance.RunEngine, which checks its expectations and the invariants
// every scenario shares (conformance.CheckStream: TCP byte order per flow,
// valid IPv4 header checksums, IP length == bytes present, every input
// delivered exactly once, non-coalesced frames byte-identical with their
// header), then runs the harness's checkStream over the same run and the
// scenario's engine-internal assertions (extras).
type scenario struct {
	id   string
	cfg  func(*Config)
	run  func(t *testing.T, h *harness)
	note string // where the engine covers only part of a device-level scenario
}

// engineNotes says which scenarios cover only the engine's part of a
// device-level scenario.
var engineNotes = map[string]string{
	"S44_NegotiationV4Only":          "engine part: rsc4/rsc6 predicates come from the device",
	"S45_OffloadsSet":                "engine part: command validation is the device's",
	"S46_DisableWhilePending":        "engine part: segmenting TAP GSO frames queued before the change is the device's",
	"S47_XDPSequence":                "engine part",
	"S50_PauseSnapshot":              "engine part: the device flushes before saving and keeps the virtual clock stopped while paused",
	"S53_IntervalZeroFlushEachBatch": "engine part: property parsing is the device's",
}

// extra is an engine-internal assertion run after a scenario passed.
type extra func(t *testing.T, h *harness, res conformance.Result)

var extras = map[string]extra{
	"S03_LoneSegment": func(t *testing.T, h *harness, res conformance.Result) {
		require.Equal(t, uint8(header.VirtioNetHdrFDataValid), res.Outputs[0].Hdr.Flags)
	},
	"S04_NoLatencyAboveInterval": func(t *testing.T, h *harness, res conformance.Result) {
		out := res.Outputs
		require.Greater(t, len(out), 3)
		for i, o := range out[:len(out)-1] {
			p := parseOut(t, o.Frame)
			first := (p.tcp.Seq() - seq0) / mss
			arrived := interval / 10 * (1 + timeDur(first))
			require.LessOrEqual(t, o.At-arrived, interval, "packet %d", i)
		}
	},
	"S34_FlowTablePressure": func(t *testing.T, h *harness, res conformance.Result) {
		require.Equal(t, DefaultMaxFlows, conformance.DefaultMaxFlows)
		require.Len(t, h.e.flows, DefaultMaxFlows, "memory bounded by the table size")
	},
	"S35_EthernetPadding": func(t *testing.T, h *harness, res conformance.Result) {
		require.Len(t, res.Inputs[0].Frame.Data, 60)
	},
	"S36_TrailingGarbageGrowth": func(t *testing.T, h *harness, res conformance.Result) {
		require.Equal(t, BufferSize, conformance.MaxCoalescedFrame)
		for _, o := range res.Outputs {
			require.LessOrEqual(t, len(o.Frame), BufferSize)
		}
		require.NoError(t, h.e.checkMemory(), "memory never grows")
	},
	"S53_ExtremeValues": func(t *testing.T, h *harness, res conformance.Result) {
		cfg := h.e.Config()
		require.Equal(t, timeDur(0), cfg.Interval)
		require.Equal(t, MaxFlowsLimit, cfg.MaxFlows)
		require.Equal(t, BufferSize, cfg.MaxFrame)
	},
}

// scenarios are the conformance scenarios the engine runs.
var scenarios = engineScenarios()

func engineScenarios() []scenario {
	var out []scenario
	for _, sc := range conformance.Scenarios() {
		if sc.Runners&conformance.Engine == 0 {
			continue // device-level: feature offers, command validation, properties
		}
		out = append(out, scenario{
			id:   sc.ID,
			cfg:  func(c *Config) { *c = toRSCConfig(sc.ConfigFor(fromRSCConfig(*c))) },
			run:  func(t *testing.T, h *harness) { runConformance(t, h, sc) },
			note: engineNotes[sc.ID],
		})
	}
	return out
}

// runConformance runs sc through the engine runner with the harness's
// configuration, then the harness's own checks.
func runConformance(t *testing.T, h *harness, sc conformance.Scenario) {
	t.Helper()
	res := conformance.RunEngine(sc, fromRSCConfig(defaultConfig()),
		func(cfg conformance.Config, sink conformance.Sink) conformance.Coalescer {
			require.Equal(t, h.cfg, toRSCConfig(cfg), "harness configured for the scenario")
			h.e = New(toRSCConfig(cfg), SinkFunc(sink))
			return engineAdapter{h.e}
		})
	require.Equal(t, conformance.Pass, res.Outcome, "%s: %s", sc.ID, res.Detail)
	// The same run through the harness's stream checker: inputs and outputs
	// after the last reset.
	prog := sc.Build(sc.ConfigFor(fromRSCConfig(defaultConfig())))
	if !prog.Expect.NoStreamCheck {
		last := 0
		for _, in := range res.Inputs {
			last = max(last, in.Segment)
		}
		var ins []Frame
		for _, in := range res.Inputs {
			if in.Segment == last {
				ins = append(ins, Frame{Hdr: in.Frame.Hdr, Data: in.Frame.Data})
			}
		}
		var outs []rec
		for _, o := range res.Outputs {
			if o.Segment == last {
				outs = append(outs, rec{o.Hdr, o.Frame, o.At})
			}
		}
		checkStream(t, h.e.Config(), ins, outs)
	}
	if x := extras[sc.ID]; x != nil {
		x(t, h, res)
	}
}

func TestConformanceScenarios(t *testing.T) {
	require.NotEmpty(t, scenarios)
	for _, sc := range scenarios {
		t.Run(sc.id, func(t *testing.T) {
			cfg := defaultConfig()
			if sc.cfg != nil {
				sc.cfg(&cfg)
			}
			h := newHarness(t, cfg)
			sc.run(t, h)
		})
	}
}

// TestConformanceScenarioSet checks that every scenario number 1..54 has an
// engine or a device scenario, and that the defaults agree.
func TestConformanceScenarioSet(t *testing.T) {
	require.Equal(t, defaultConfig(), toRSCConfig(conformance.DefaultConfig()))
	seen := map[int]bool{}
	ids := map[string]bool{}
	for _, sc := range conformance.Scenarios() {
		require.False(t, ids[sc.ID], "duplicate %s", sc.ID)
		ids[sc.ID] = true
		seen[sc.Num] = true
	}
	for n := 1; n <= 54; n++ {
		require.True(t, seen[n], "scenario %d missing", n)
	}
}

// TestEngineRunnerReportsFailures breaks expectations on purpose: the
// runner must report FAIL with a useful detail, so a wrong checker cannot
// pass silently.
func TestEngineRunnerReportsFailures(t *testing.T) {
	newEngine := func(cfg conformance.Config, sink conformance.Sink) conformance.Coalescer {
		return engineAdapter{New(toRSCConfig(cfg), SinkFunc(sink))}
	}
	sc, ok := conformance.Lookup("S01_BasicV4")
	require.True(t, ok)
	build := sc.Build
	cases := map[string]func(p *conformance.Program){
		"csum_start (segments) 10, want 9": func(p *conformance.Program) { p.Expect.Packets[0].Segs = 9 },
		"1 packets delivered, want 2":      func(p *conformance.Program) { p.Expect.Count = 2 },
		"counter Coalesced = 9, want 10":   func(p *conformance.Program) { p.Expect.Stats[0].Want = 10 },
		"tcp_window 1001, want 1000": func(p *conformance.Program) {
			p.Expect.Packets[0].Fields = append(p.Expect.Packets[0].Fields, conformance.F("tcp_window", 1000))
		},
		"step 1 (check delivered)": func(p *conformance.Program) { p.Steps[1].N = 1 },
	}
	for want, mutate := range cases {
		t.Run(want, func(t *testing.T) {
			bad := sc
			bad.Build = func(cfg conformance.Config) conformance.Program {
				p := build(cfg)
				mutate(&p)
				return p
			}
			res := conformance.RunEngine(bad, conformance.DefaultConfig(), newEngine)
			require.Equal(t, conformance.Fail, res.Outcome)
			require.Contains(t, res.Detail, want)
		})
	}
}

func timeDur[T ~int | ~uint32](x T) time.Duration { return time.Duration(x) }

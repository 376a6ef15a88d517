package conformance

import (
	"fmt"
	"time"

	"github.com/rscvm/rscvm/net/header"
)

// Coalescer is the coalescing engine as the engine runner drives it: an
// adapter over rsc.Engine (package hck has one; package rsc's tests have
// their own, since this package must not import rsc).
type Coalescer interface {
	// Input offers a frame at virtual time now; false: refused (ring full).
	Input(now time.Duration, f Frame) bool
	// Tick fires due timers; false: a delivery was refused.
	Tick(now time.Duration) bool
	// EndBatch ends a TAP read batch; false: a delivery was refused.
	EndBatch(now time.Duration) bool
	// FlushAll delivers everything pending; false: a delivery was refused.
	FlushAll() bool
	// SetConfig flushes and switches configuration; false: refused.
	SetConfig(cfg Config) bool
	// Reset discards everything pending.
	Reset()
	// Pending is the number of pending packets.
	Pending() int
	// Deadline is the next timer deadline, if any.
	Deadline() (time.Duration, bool)
	// Config is the active configuration.
	Config() Config
	// Stats are the counters by rsc.Stats field name.
	Stats() Counters
}

// Sink receives delivered packets; it returns false when the ring is full.
// frame is only valid during the call.
type Sink func(hdr header.VirtioNetHdr, frame []byte) bool

// EngineFactory creates an engine delivering to sink.
type EngineFactory func(cfg Config, sink Sink) Coalescer

// deviceOnly reports whether a step needs a device.
func deviceOnly(k StepKind) bool {
	switch k {
	case StepCtrl, StepLink, StepCheckFeatures, StepProperty:
		return true
	}
	return false
}

// RunEngine runs sc through an engine made by newEngine with a virtual
// clock starting at 0, on top of configuration base. Each StepInput is one
// TAP read batch: its frames are offered in order, then the batch ends
// (EndBatch), as a device ends a batch when the TAP is empty. After the
// last step everything pending is flushed and the expectations are checked.
func RunEngine(sc Scenario, base Config, newEngine EngineFactory) (res Result) {
	res = Result{ID: sc.ID, Num: sc.Num, Title: sc.Title, Family: sc.Family, Runner: Engine}
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	if sc.Runners&Engine == 0 {
		res.Outcome, res.Detail = Skip, "device-level: "+sc.Why
		return res
	}
	cfg := sc.ConfigFor(base)
	prog := sc.Build(cfg)
	for _, st := range prog.Steps {
		if st.Runs(Engine) && deviceOnly(st.Kind) {
			res.Outcome, res.Detail = Skip, fmt.Sprintf("step %s needs a device", st.Kind)
			return res
		}
	}
	var (
		now     time.Duration
		full    bool
		segment int
		num     int
	)
	sink := func(h header.VirtioNetHdr, f []byte) bool {
		if full {
			return false
		}
		res.Outputs = append(res.Outputs, Output{Hdr: h, Frame: append([]byte(nil), f...), At: now, Buffers: 1, Segment: segment})
		return true
	}
	e := newEngine(cfg, sink)
	refusal := func(i int, st Step, ok bool, what string) bool {
		if ok == !st.Fails {
			return true
		}
		if st.Fails {
			res.Failf("step %d (%s): %s succeeded, want refusal (ring full)", i, st.Kind, what)
		} else {
			res.Failf("step %d (%s): %s refused", i, st.Kind, what)
		}
		return false
	}
	for i, st := range prog.Steps {
		if !st.Runs(Engine) {
			continue
		}
		switch st.Kind {
		case StepInput:
			for j, f := range st.Frames {
				if !st.Retry {
					res.Inputs = append(res.Inputs, Input{Frame: f.Clone(), Num: num, At: now, Segment: segment,
						ScenarioDrop: st.Drop, Dropped: st.Drop})
					num++
				}
				ok := e.Input(now, f)
				if st.Refused && ok {
					res.Failf("step %d (input): frame %d accepted while the ring is full", i, j)
				} else if !st.Refused && !ok {
					res.Failf("step %d (input): frame %d refused", i, j)
				}
			}
			if !st.Refused && !e.EndBatch(now) && !full {
				res.Failf("step %d (input): end of batch refused while the ring has room", i)
			}
		case StepEndBatch:
			refusal(i, st, e.EndBatch(now), "EndBatch")
		case StepAdvance:
			now += st.D
			refusal(i, st, e.Tick(now), "Tick")
		case StepTick:
			refusal(i, st, e.Tick(now), "Tick")
		case StepRingFull:
			full = st.On
		case StepSetConfig:
			refusal(i, st, e.SetConfig(st.Config), "SetConfig")
		case StepFlushAll:
			refusal(i, st, e.FlushAll(), "FlushAll")
		case StepReset:
			e.Reset()
			segment++
		case StepCheckDelivered:
			if len(res.Outputs) != st.N {
				res.Failf("step %d (check delivered): %d packets delivered, want %d", i, len(res.Outputs), st.N)
			}
		case StepCheckPending:
			if n := e.Pending(); n != st.N {
				res.Failf("step %d (check pending): %d packets pending, want %d", i, n, st.N)
			}
		case StepCheckStats:
			if err := CheckStats(e.Stats(), st.Stats, Engine); err != nil {
				res.Failf("step %d (check stats): %v", i, err)
			}
		case StepCheckDeadline:
			d, ok := e.Deadline()
			switch {
			case st.N == 0 && ok:
				res.Failf("step %d (check deadline): timer armed for %v, want none", i, d)
			case st.N != 0 && (!ok || d != st.D):
				res.Failf("step %d (check deadline): deadline %v (armed %v), want %v", i, d, ok, st.D)
			}
		case StepCheckConfig:
			if c := e.Config(); c.IPv4 != st.Config.IPv4 || c.IPv6 != st.Config.IPv6 {
				res.Failf("step %d (check config): IPv4/IPv6 %v/%v, want %v/%v", i, c.IPv4, c.IPv6, st.Config.IPv4, st.Config.IPv6)
			}
		}
		if res.Outcome == Fail {
			return res
		}
	}
	full = false
	if !e.FlushAll() {
		res.Failf("final flush refused")
		return res
	}
	if err := Verify(cfg, prog.Expect, Engine, res.Inputs, res.Outputs, e.Stats(), nil); err != nil {
		res.Failf("%v", err)
	}
	return res
}

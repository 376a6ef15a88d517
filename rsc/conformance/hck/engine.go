package hck

import (
	"context"
	"time"

	"github.com/rscvm/rscvm/rsc"
	"github.com/rscvm/rscvm/rsc/conformance"
)

// RSCConfig converts a conformance configuration to the engine's.
func RSCConfig(c conformance.Config) rsc.Config {
	return rsc.Config{
		IPv4: c.IPv4, IPv6: c.IPv6, Interval: c.Interval, FlushAtBatchEnd: c.FlushAtBatchEnd,
		MaxFlows: c.MaxFlows, MaxFrame: c.MaxFrame, GSOMode: c.GSOMode, GuestECN: c.GuestECN,
		CompatChecksum: c.CompatChecksum, Timestamps: c.Timestamps,
	}
}

// ConformanceConfig converts the engine's configuration to the conformance
// one.
func ConformanceConfig(c rsc.Config) conformance.Config {
	return conformance.Config{
		IPv4: c.IPv4, IPv6: c.IPv6, Interval: c.Interval, FlushAtBatchEnd: c.FlushAtBatchEnd,
		MaxFlows: c.MaxFlows, MaxFrame: c.MaxFrame, GSOMode: c.GSOMode, GuestECN: c.GuestECN,
		CompatChecksum: c.CompatChecksum, Timestamps: c.Timestamps,
	}
}

// engine adapts *rsc.Engine to conformance.Coalescer.
type engine struct{ e *rsc.Engine }

// NewEngine is a conformance.EngineFactory over package rsc's engine.
func NewEngine(cfg conformance.Config, sink conformance.Sink) conformance.Coalescer {
	return engine{rsc.New(RSCConfig(cfg), rsc.SinkFunc(sink))}
}

func (a engine) Input(now time.Duration, f conformance.Frame) bool {
	return a.e.Input(now, rsc.Frame{Hdr: f.Hdr, Data: f.Data})
}
func (a engine) Tick(now time.Duration) bool         { return a.e.Tick(now) }
func (a engine) EndBatch(now time.Duration) bool     { return a.e.EndBatch(now) }
func (a engine) FlushAll() bool                      { return a.e.FlushAll() }
func (a engine) SetConfig(c conformance.Config) bool { return a.e.SetConfig(RSCConfig(c)) }
func (a engine) Reset()                              { a.e.Reset() }
func (a engine) Pending() int                        { return a.e.Pending() }
func (a engine) Deadline() (time.Duration, bool)     { return a.e.NextDeadline() }
func (a engine) Config() conformance.Config          { return ConformanceConfig(a.e.Config()) }
func (a engine) Stats() conformance.Counters         { return conformance.CountersOf(a.e.Stats()) }

// EngineRunner runs scenarios through the pure engine with a virtual clock.
type EngineRunner struct{}

// Kind implements Runner.
func (EngineRunner) Kind() conformance.Runner { return conformance.Engine }

// Run implements Runner.
func (EngineRunner) Run(_ context.Context, sc conformance.Scenario, base conformance.Config) conformance.Result {
	return conformance.RunEngine(sc, base, NewEngine)
}

// Close implements Runner.
func (EngineRunner) Close() error { return nil }

// Runner runs conformance scenarios.
type Runner interface {
	// Kind says which runner it is.
	Kind() conformance.Runner
	// Run runs one scenario on top of configuration base.
	Run(ctx context.Context, sc conformance.Scenario, base conformance.Config) conformance.Result
	// Close releases the runner's resources.
	Close() error
}

package hck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/rsc/conformance"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
)

// Options configure the device runners.
type Options struct {
	// Timeout bounds every wait for the device (default 10 s).
	Timeout time.Duration
	// Logger receives the device's warnings (default: discarded).
	Logger *slog.Logger
}

func (o Options) normalized() Options {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// env is the backend side of a device runner.
type env interface {
	kind() conformance.Runner
	backend() virtionet.Backend
	// inject queues frames as the TAP would receive them from the network.
	// refused frames are not read before the ring has room again (no flow
	// control).
	inject(r *devRun, frames []conformance.Frame, refused bool) error
	// dropsRunts: frames shorter than an Ethernet header reach the device
	// (which drops them).
	dropsRunts() bool
	// captures: the frames the device reads are captured and used as the
	// inputs (a real TAP rewrites the virtio-net header).
	captures() bool
}

// DeviceRunner runs scenarios through the virtio-net device model with the
// in-memory backend (package nettest), driven by a NetKVM-like driver over
// fake guest memory, on the device's virtual clock.
type DeviceRunner struct{ opts Options }

// NewDeviceRunner returns a device runner.
func NewDeviceRunner(opts Options) *DeviceRunner { return &DeviceRunner{opts: opts.normalized()} }

// Kind implements Runner.
func (*DeviceRunner) Kind() conformance.Runner { return conformance.Device }

// Close implements Runner.
func (*DeviceRunner) Close() error { return nil }

// Run implements Runner. Every scenario gets a fresh backend, device and
// driver.
func (r *DeviceRunner) Run(ctx context.Context, sc conformance.Scenario, base conformance.Config) conformance.Result {
	be, err := nettest.New(1)
	if err != nil {
		res := newResult(sc, conformance.Device)
		res.Failf("in-memory backend: %v", err)
		return res
	}
	defer be.Close()
	return runDevice(ctx, &memEnv{be: be}, sc, base, r.opts)
}

// memEnv is the in-memory backend: a batch of frames is queued at once, so
// the device reads it as one TAP read batch.
type memEnv struct{ be *nettest.Backend }

func (m *memEnv) kind() conformance.Runner   { return conformance.Device }
func (m *memEnv) backend() virtionet.Backend { return m.be }
func (m *memEnv) dropsRunts() bool           { return true }
func (m *memEnv) captures() bool             { return false }

func (m *memEnv) inject(_ *devRun, frames []conformance.Frame, _ bool) error {
	fs := make([]nettest.Frame, len(frames))
	for i, f := range frames {
		fs[i] = nettest.Frame{Hdr: f.Hdr, Data: f.Data}
	}
	m.be.Q(0).InjectFrames(fs...)
	return nil
}

func newResult(sc conformance.Scenario, kind conformance.Runner) conformance.Result {
	return conformance.Result{ID: sc.ID, Num: sc.Num, Title: sc.Title, Family: sc.Family, Runner: kind}
}

// deviceSupports reports why a device cannot express cfg ("" if it can).
func deviceSupports(cfg conformance.Config) string {
	switch {
	case !cfg.Timestamps:
		return "the device always coalesces identical timestamp options"
	case cfg.MaxFlows != 0 && cfg.MaxFlows != conformance.DefaultMaxFlows:
		return "the device's flow table has the default size"
	case cfg.CompatChecksum:
		return "the device has no compat-checksum mode"
	case cfg.Interval < 0 || cfg.Interval > math.MaxUint32:
		return "rsc_interval is 0..4294967295 ns"
	}
	return ""
}

// devRun is one scenario run on a device.
type devRun struct {
	ctx   context.Context
	env   env
	opts  Options
	kind  conformance.Runner
	cfg   conformance.Config
	prog  conformance.Program
	res   *conformance.Result
	clock atomic.Int64
	now   time.Duration
	watch *watch
	be    *watchedBackend
	dev   *virtionet.Device
	drv   *driver

	full     bool
	linkUp   bool
	injected int // scenario frames injected
	segment  int
	dropped  int // inputs the device drops by rule so far
	inputs   []conformance.Input
	outputs  []conformance.Output
}

// runDevice runs sc on a device over e.
func runDevice(ctx context.Context, e env, sc conformance.Scenario, base conformance.Config, opts Options) (res conformance.Result) {
	res = newResult(sc, e.kind())
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	if sc.Runners&e.kind() == 0 {
		res.Outcome, res.Detail = conformance.Skip, sc.Why
		return res
	}
	if sc.TimingDependent && e.kind() == conformance.Tap {
		res.Outcome, res.Detail = conformance.Skip, "timing-dependent: the result depends on how frames split into TAP read batches"
		return res
	}
	cfg := sc.ConfigFor(base)
	if why := deviceSupports(cfg); why != "" {
		res.Outcome, res.Detail = conformance.Skip, why
		return res
	}
	r := &devRun{ctx: ctx, env: e, opts: opts, kind: e.kind(), cfg: cfg, prog: sc.Build(cfg), res: &res, linkUp: true}
	r.watch = newWatch(e.captures(), e.kind() == conformance.Tap)
	r.be = newWatchedBackend(e.backend(), r.watch)
	if err := r.run(); err != nil {
		res.Failf("%v", err)
	}
	if r.drv != nil {
		r.drv.close()
	}
	res.Inputs, res.Outputs = r.inputs, r.outputs
	return res
}

// newDevice creates a device with the runner's defaults (guest_rsc_ext=on,
// rsc_interval and x-rsc-batch-flush from cfg, the scenarios' MAC) and
// props on top.
func (r *devRun) newDevice(props []string) (*virtionet.Device, error) {
	c := virtionet.DefaultConfig()
	c.MAC = append([]byte(nil), conformance.GuestMAC[:]...)
	onoff := map[bool]string{true: "on", false: "off"}
	kv := []string{"guest_rsc_ext=on", "rsc_interval=" + strconv.FormatInt(int64(r.cfg.Interval), 10),
		"x-rsc-batch-flush=" + onoff[r.cfg.FlushAtBatchEnd]}
	for _, p := range append(kv, props...) {
		k, v, _ := strings.Cut(p, "=")
		if err := c.Set(k, v); err != nil {
			return nil, fmt.Errorf("device property %s: %w", p, err)
		}
	}
	return virtionet.New(c, r.be, virtionet.Options{Logger: r.opts.Logger,
		Clock: func() time.Duration { return time.Duration(r.clock.Load()) }})
}

// startDriver brings up the driver: negotiation, queues, NetKVM's
// GUEST_OFFLOADS_SET, receive buffers (unless the ring starts full).
func (r *devRun) startDriver() error {
	d, err := newDriver(r.dev, r.prog.Device.Driver, r.cfg)
	if err != nil {
		return fmt.Errorf("driver: %w", err)
	}
	r.drv = d
	// Receive buffers first, as a driver initialises its rings before it
	// configures offloads: the device answers GUEST_OFFLOADS_SET only after
	// delivering what it holds.
	if !r.full {
		if err := d.postRx(); err != nil {
			return err
		}
	}
	if r.prog.Device.Driver == conformance.NetKVM && d.negotiated&(1<<virtionet.FeatureCtrlGuestOffloads) != 0 {
		// Only negotiated bits; bit 61 only with RSC_EXT (the same bit).
		ack, err := d.setOffloads(conformance.OffloadsFor(r.cfg)&d.negotiated, r.opts.Timeout)
		if err != nil {
			return fmt.Errorf("driver: GUEST_OFFLOADS_SET: %w", err)
		}
		if ack != conformance.CtrlOK {
			return fmt.Errorf("driver: GUEST_OFFLOADS_SET answered %d", ack)
		}
	}
	return nil
}

func (r *devRun) run() error {
	if !r.prog.Device.NoDevice {
		dev, err := r.newDevice(r.prog.Device.Props)
		if err != nil {
			return err
		}
		r.dev = dev
		// A scenario with a ring-full period starts without receive
		// buffers: buffers once posted cannot be taken back.
		for _, st := range r.prog.Steps {
			if st.Kind == conformance.StepRingFull && st.On && st.Runs(r.kind) {
				r.full = true
			}
		}
		if err := r.startDriver(); err != nil {
			return err
		}
	}
	steps := r.prog.Steps
	for i := 0; i < len(steps); i++ {
		st := steps[i]
		if !st.Runs(r.kind) {
			continue
		}
		if err := r.step(st, steps[i+1:]); err != nil {
			return fmt.Errorf("step %d (%s): %w", i, st.Kind, err)
		}
		if r.drv != nil {
			if err := r.drv.irq.err(); err != nil {
				return fmt.Errorf("step %d (%s): %w", i, st.Kind, err)
			}
		}
	}
	if r.dev == nil {
		return conformance.Verify(r.cfg, r.prog.Expect, r.kind, r.inputs, r.outputs, nil, nil)
	}
	if r.full {
		return errors.New("scenario ends with the ring full")
	}
	if err := r.flushAll(); err != nil {
		return fmt.Errorf("final flush: %w", err)
	}
	if err := r.drv.irq.err(); err != nil {
		return err
	}
	if err := r.finishInputs(); err != nil {
		return err
	}
	q := r.dev.Stats().Queues[0]
	return conformance.Verify(r.cfg, r.prog.Expect, r.kind, r.inputs, r.outputs,
		conformance.CountersOf(q.RSC), conformance.CountersOf(q))
}

// finishInputs replaces the inputs by the frames the device read, when the
// backend rewrites headers (real TAP), after checking the frames are
// unchanged.
func (r *devRun) finishInputs() error {
	if !r.env.captures() {
		return nil
	}
	got := r.watch.captured()
	for i := range r.inputs {
		if i >= len(got) {
			break // never read: CheckStream reports it
		}
		in := &r.inputs[i]
		if !bytes.Equal(got[i].Data, in.Frame.Data) {
			return fmt.Errorf("input %d arrived changed: %d bytes, want %d", in.Num, len(got[i].Data), len(in.Frame.Data))
		}
		in.Frame = got[i]
	}
	return nil
}

// next returns the first step of rest this runner runs.
func (r *devRun) next(rest []conformance.Step) (conformance.Step, bool) {
	for _, s := range rest {
		if s.Runs(r.kind) {
			return s, true
		}
	}
	return conformance.Step{}, false
}

func (r *devRun) step(st conformance.Step, rest []conformance.Step) error {
	switch st.Kind {
	case conformance.StepInput:
		return r.input(st)
	case conformance.StepEndBatch, conformance.StepTick:
		// A device ends its read batch whenever the TAP is empty; a pass
		// with the current clock fires due timers.
		return r.settle()
	case conformance.StepAdvance:
		r.now += st.D
		r.clock.Store(int64(r.now))
		if nx, ok := r.next(rest); ok && nx.Kind == conformance.StepInput && !nx.Refused && !nx.Retry {
			return nil // the next batch is read at the new time; Input fires due timers first
		}
		return r.settle()
	case conformance.StepRingFull:
		return r.ringFull(st.On)
	case conformance.StepSetConfig:
		return r.setConfig(st)
	case conformance.StepFlushAll:
		if st.Fails {
			return errors.New("a device cannot refuse a flush")
		}
		return r.flushAll()
	case conformance.StepReset:
		r.drv.close()
		r.drv = nil
		r.segment++
		if err := r.startDriver(); err != nil {
			return err
		}
		return r.settle()
	case conformance.StepCheckDelivered:
		return r.checkDelivered(st.N - r.dropped)
	case conformance.StepCheckPending:
		if err := r.settle(); err != nil {
			return err
		}
		q := r.dev.Stats().Queues[0]
		if q.RSC == nil || q.RSC.Pending != st.N {
			return fmt.Errorf("pending packets %v, want %d", pendingOf(q), st.N)
		}
	case conformance.StepCheckStats:
		if err := r.settle(); err != nil {
			return err
		}
		return conformance.CheckStats(conformance.CountersOf(r.dev.Stats().Queues[0].RSC), st.Stats, r.kind)
	case conformance.StepCtrl:
		ack, err := r.drv.ctrl(st.Class, st.Cmd, st.Payload, r.opts.Timeout)
		if err != nil {
			return err
		}
		if ack != st.WantAck {
			return fmt.Errorf("control class %d command %d answered %d, want %d", st.Class, st.Cmd, ack, st.WantAck)
		}
		return r.settle()
	case conformance.StepLink:
		if err := r.setLink(st.On); err != nil {
			return err
		}
		return r.settle()
	case conformance.StepCheckFeatures:
		return r.checkFeatures(st)
	case conformance.StepProperty:
		return checkProperty(st)
	case conformance.StepCheckDeadline, conformance.StepCheckConfig:
		return fmt.Errorf("%s is an engine-internal check", st.Kind)
	default:
		return fmt.Errorf("unknown step kind %d", st.Kind)
	}
	return nil
}

func pendingOf(q virtionet.QueueStats) string {
	if q.RSC == nil {
		return "(RSC never ran)"
	}
	return strconv.Itoa(q.RSC.Pending)
}

// input injects a batch and waits until the device has processed it.
func (r *devRun) input(st conformance.Step) error {
	if st.Retry {
		// The device holds or has yet to read these frames.
		return r.syncInput()
	}
	for _, f := range st.Frames {
		dropped := r.env.dropsRunts() && len(f.Data) < header.EthernetMinSize
		if dropped && !st.Drop {
			r.dropped++
		}
		r.inputs = append(r.inputs, conformance.Input{Frame: f.Clone(), Num: len(r.inputs), At: r.now,
			Segment: r.segment, Dropped: dropped || st.Drop, ScenarioDrop: st.Drop})
	}
	if err := r.env.inject(r, st.Frames, st.Refused); err != nil {
		return err
	}
	r.injected += len(st.Frames)
	if st.Refused {
		// The device does not read while it waits for ring space.
		return r.settle()
	}
	return r.syncInput()
}

// syncInput waits until the device has read every injected frame and then
// found the backend empty (so it processed them all), and published.
func (r *devRun) syncInput() error {
	err := r.waitFor(fmt.Sprintf("the device to read %d frames", r.injected), func() (bool, error) {
		reads, empties, atRead := r.watch.snapshot()
		if reads > r.injected {
			return false, fmt.Errorf("device read %d frames, only %d injected", reads, r.injected)
		}
		return reads == r.injected && empties > atRead, nil
	})
	if err != nil {
		return err
	}
	return r.barrier(1)
}

// marker counts completed device passes: reads that found the backend
// empty, and stalls for lack of receive buffers.
func (r *devRun) marker() int {
	_, empties, _ := r.watch.snapshot()
	return empties + int(r.dev.Stats().Queues[0].RxRingFull)
}

// barrier makes the device run passes complete passes (kicking the
// receive queue) and collects what it delivered.
func (r *devRun) barrier(passes int) error {
	for i := 0; i < passes; i++ {
		m := r.marker()
		r.drv.kickRx()
		if err := r.waitFor("a device pass", func() (bool, error) { return r.marker() > m, nil }); err != nil {
			return err
		}
	}
	return r.collect()
}

// settle lets the device act on the current state: one pass that starts
// after it (a pass already running may end first) and one to publish.
func (r *devRun) settle() error { return r.barrier(3) }

// collect reads what the device published, stamped with the current time.
func (r *devRun) collect() error {
	if r.drv == nil {
		return nil
	}
	outs, err := r.drv.collect(!r.full)
	for _, o := range outs {
		o.At, o.Segment = r.now, r.segment
		if r.kind == conformance.Tap && !fromPeer(o.Frame) {
			continue // host noise on a shared TAP
		}
		r.outputs = append(r.outputs, o)
	}
	return err
}

func fromPeer(frame []byte) bool {
	return len(frame) >= 12 && bytes.Equal(frame[6:12], conformance.PeerMAC[:])
}

// waitFor polls cond, receiving packets meanwhile, until it holds.
func (r *devRun) waitFor(what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(r.opts.Timeout)
	sleep := 10 * time.Microsecond
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if err := r.collect(); err != nil {
			return err
		}
		if r.drv != nil {
			if err := r.drv.irq.err(); err != nil {
				return err
			}
		}
		if err := r.ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", r.opts.Timeout, what)
		}
		select {
		case <-r.watch.changed:
		case <-time.After(sleep):
		}
		sleep = min(2*sleep, time.Millisecond)
	}
}

// ringFull ends (on=false) a ring-full period: every buffer is posted and
// a command the device held back is answered.
func (r *devRun) ringFull(on bool) error {
	if on {
		if len(r.drv.free) != len(r.drv.slots) {
			return errors.New("the ring already has buffers the driver cannot take back")
		}
		r.full = true
		return nil
	}
	r.full = false
	if err := r.drv.postRx(); err != nil {
		return err
	}
	r.drv.kickRx()
	if r.drv.ctrlPending {
		ack, err := r.drv.ctrlWait(r.opts.Timeout)
		if err != nil {
			return fmt.Errorf("held-back command: %w", err)
		}
		if ack != conformance.CtrlOK {
			return fmt.Errorf("held-back command answered %d", ack)
		}
	}
	return r.settle()
}

// setConfig sends the GUEST_OFFLOADS_SET of a configuration change. With
// Fails (ring full) it must not be answered until buffers are posted.
func (r *devRun) setConfig(st conformance.Step) error {
	mask := st.Mask
	if mask == 0 {
		mask = conformance.OffloadsFor(st.Config) & r.drv.negotiated
	}
	if !st.Fails {
		ack, err := r.drv.setOffloads(mask, r.opts.Timeout)
		if err != nil {
			return err
		}
		if ack != conformance.CtrlOK {
			return fmt.Errorf("GUEST_OFFLOADS_SET %#x answered %d", mask, ack)
		}
		return r.settle()
	}
	var p [8]byte
	for i := range p {
		p[i] = byte(mask >> (8 * i))
	}
	if err := r.drv.ctrlSend(conformance.CtrlClassGuestOffloads, conformance.CtrlGuestOffloadsSet, p[:]); err != nil {
		return err
	}
	if err := r.settle(); err != nil {
		return err
	}
	if _, done, err := r.drv.ctrlPoll(); err != nil || done {
		return fmt.Errorf("GUEST_OFFLOADS_SET answered while the device could not deliver its pending packets (err %v)", err)
	}
	return nil
}

// setLink changes the link state (waiting for the device).
func (r *devRun) setLink(up bool) error {
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
	defer cancel()
	if err := r.dev.SetLinkUp(ctx, up); err != nil {
		return fmt.Errorf("link %v: %w", up, err)
	}
	r.linkUp = up
	return nil
}

// flushAll delivers every pending packet: the device flushes before a link
// change takes effect, so the link goes down and up again.
func (r *devRun) flushAll() error {
	if !r.linkUp {
		if err := r.setLink(true); err != nil {
			return err
		}
	}
	if err := r.setLink(false); err != nil {
		return err
	}
	if err := r.setLink(true); err != nil {
		return err
	}
	return r.settle()
}

// checkDelivered checks the number of packets delivered so far (every step
// already waited for the device to publish what it did).
func (r *devRun) checkDelivered(want int) error {
	if err := r.barrier(1); err != nil {
		return err
	}
	if len(r.outputs) != want {
		return fmt.Errorf("%d packets delivered, want %d", len(r.outputs), want)
	}
	return nil
}

// checkFeatures creates a device with the step's properties and checks its
// offer.
func (r *devRun) checkFeatures(st conformance.Step) error {
	dev, err := r.newDevice(st.Props)
	if err != nil {
		return err
	}
	f := dev.Features()
	if miss := st.Offered &^ f; miss != 0 {
		return fmt.Errorf("%s: feature bits %s not offered", strings.Join(st.Props, ","), bitList(miss))
	}
	if extra := st.NotOffered & f; extra != 0 {
		return fmt.Errorf("%s: feature bits %s offered", strings.Join(st.Props, ","), bitList(extra))
	}
	return nil
}

func bitList(m uint64) string {
	var s []string
	for b := 0; b < 64; b++ {
		if m&(1<<b) != 0 {
			s = append(s, strconv.Itoa(b))
		}
	}
	return strings.Join(s, ",")
}

// checkProperty parses one property.
func checkProperty(st conformance.Step) error {
	c := virtionet.DefaultConfig()
	err := c.Set(st.Key, st.Value)
	if st.WantErr {
		if err == nil {
			return fmt.Errorf("%s=%s accepted, want an error", st.Key, st.Value)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s=%s: %w", st.Key, st.Value, err)
	}
	b := func(v bool) uint64 {
		if v {
			return 1
		}
		return 0
	}
	var got uint64
	switch st.Key {
	case "rsc_interval":
		got = uint64(c.RSCInterval)
	case "guest_rsc_ext":
		got = b(c.GuestRSCExt)
	case "x-rsc-batch-flush":
		got = b(c.RSCBatchFlush)
	case "x-rsc-gso":
		got = b(c.RSCGSO)
	default:
		return fmt.Errorf("property %s: no check", st.Key)
	}
	if got != st.Want {
		return fmt.Errorf("%s=%s gives %d, want %d", st.Key, st.Value, got, st.Want)
	}
	return nil
}

package conformance

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/rscvm/rscvm/net/header"
)

// Family is the IP family of a scenario's traffic.
type Family uint8

// Families. A scenario without traffic (device-level) has Family 0.
const (
	IPv4 Family = 1 << iota
	IPv6
	Both = IPv4 | IPv6
)

// String returns "IPv4", "IPv6", "IPv4+IPv6" or "-".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	case Both:
		return "IPv4+IPv6"
	}
	return "-"
}

// Runner is a set of runners.
type Runner uint8

// Runners.
const (
	// Engine is the pure engine with a virtual clock (RunEngine).
	Engine Runner = 1 << iota
	// Device is the virtio-net device model with the in-memory backend,
	// driven by a NetKVM-like driver over fake guest memory.
	Device
	// Tap is the same device and driver on a real TAP, frames injected from
	// the host side.
	Tap
	// AllRunners is every runner.
	AllRunners = Engine | Device | Tap
	// DeviceRunners are the runners with a device.
	DeviceRunners = Device | Tap
)

// String names the runners in the set, e.g. "engine,device".
func (r Runner) String() string {
	var s []string
	for _, x := range []struct {
		r Runner
		n string
	}{{Engine, "engine"}, {Device, "device"}, {Tap, "tap"}} {
		if r&x.r != 0 {
			s = append(s, x.n)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// Config is the receive configuration of a scenario, in the engine's terms
// (the fields of rsc.Config). The device runners map it to device
// properties, negotiated features and GUEST_OFFLOADS_SET masks.
type Config struct {
	// IPv4 and IPv6 enable coalescing per family (device: RSC_EXT and
	// GUEST_TSO4/6 negotiated, bit 61 and TSO4/6 in the offloads).
	IPv4, IPv6 bool
	// Interval is rsc_interval.
	Interval time.Duration
	// FlushAtBatchEnd flushes at the end of every TAP read batch
	// (x-rsc-batch-flush).
	FlushAtBatchEnd bool
	// MaxFlows is the flow-table size (0 = default; the device uses the
	// default).
	MaxFlows int
	// MaxFrame bounds coalesced frames (device: MRG_RXBUF off and receive
	// buffers of MaxFrame bytes after the header).
	MaxFrame int
	// GSOMode emits standard GSO headers (device: x-rsc-gso=on and a driver
	// without RSC_EXT).
	GSOMode bool
	// GuestECN allows CWR to start a coalesced packet (GUEST_ECN).
	GuestECN bool
	// CompatChecksum emits QEMU-style RSC headers (engine only).
	CompatChecksum bool
	// Timestamps coalesces identical timestamp-only option blocks (the
	// device always does).
	Timestamps bool
}

// DefaultInterval is the scenarios' rsc_interval: the HCK setting
// rsc_interval=1000000.
const DefaultInterval = time.Millisecond

// DefaultConfig is the scenarios' configuration: rsc4/rsc6 on, 1 ms
// interval, timestamp coalescing on, no flush at batch end.
func DefaultConfig() Config {
	return Config{IPv4: true, IPv6: true, Interval: DefaultInterval, Timestamps: true}
}

// Frame is one frame as a TAP delivers it: the virtio-net header and the
// Ethernet frame.
type Frame struct {
	Hdr  header.VirtioNetHdr
	Data []byte
}

// Clone returns a deep copy.
func (f Frame) Clone() Frame { return Frame{Hdr: f.Hdr, Data: append([]byte(nil), f.Data...)} }

// Scenario is one conformance scenario.
type Scenario struct {
	// ID is the scenario's name, as the rsc tests name it (S01_BasicV4...).
	ID string
	// Num is the scenario number of rsc-spec part (a), 1..54.
	Num int
	// Title is a one-line description.
	Title string
	// Spec is the specification reference.
	Spec string
	// Family is the traffic's IP family (0: no traffic).
	Family Family
	// Runners are the runners the scenario is meant for.
	Runners Runner
	// Why explains why a runner is missing from Runners.
	Why string
	// TimingDependent marks scenarios whose outcome depends on how frames
	// split into TAP read batches (flush at batch end or rsc_interval 0):
	// deterministic with the in-memory backend, not on a real TAP.
	TimingDependent bool
	// Config adjusts the base configuration (nil: none).
	Config func(*Config)
	// Build returns the program for the final configuration.
	Build func(cfg Config) Program
}

// ConfigFor returns the scenario's configuration on top of base.
func (sc Scenario) ConfigFor(base Config) Config {
	cfg := base
	if sc.Config != nil {
		sc.Config(&cfg)
	}
	return cfg
}

// Program is what a scenario does and expects.
type Program struct {
	// Device selects device properties and the driver (device runners).
	Device DeviceSetup
	// Steps run in order. After the last step the runner flushes what is
	// pending (engine FlushAll; device: link down and up, which delivers
	// pending packets before the change), then checks Expect.
	Steps []Step
	// Expect is checked at the end.
	Expect Expect
}

// Driver selects the guest driver of the device runners.
type Driver uint8

// Drivers.
const (
	// NetKVM negotiates like the Windows NetKVM driver: RSC_EXT, GUEST_CSUM,
	// GUEST_TSO4/6 (as Config.IPv4/IPv6 say), CTRL_VQ, CTRL_GUEST_OFFLOADS,
	// MRG_RXBUF, and sends GUEST_OFFLOADS_SET with bit 61.
	NetKVM Driver = iota
	// Linux negotiates like Linux 6.1's virtio_net: no RSC_EXT and no
	// GUEST_OFFLOADS_SET at start.
	Linux
)

// DeviceSetup is the device side of a program.
type DeviceSetup struct {
	// Props are extra device properties (key=value), applied after the
	// runner's defaults (guest_rsc_ext=on, rsc_interval, x-rsc-batch-flush
	// from the configuration).
	Props []string
	// Driver is the guest driver.
	Driver Driver
	// NoDevice: the program has only property/feature steps that create
	// their own devices; the runner starts no driver.
	NoDevice bool
}

// StepKind says what a step does.
type StepKind uint8

// Step kinds.
const (
	// StepInput: Frames arrive as one TAP read batch at the current time.
	StepInput StepKind = iota
	// StepEndBatch: the engine's EndBatch (a device ends its batch whenever
	// the TAP is empty, so the device runners only synchronise).
	StepEndBatch
	// StepAdvance: the virtual clock advances by D; due timers fire.
	StepAdvance
	// StepTick: timers fire at the current time.
	StepTick
	// StepRingFull: the guest's receive ring is full (On) or the guest
	// posts buffers again (!On).
	StepRingFull
	// StepSetConfig: the receive configuration changes to Config (device:
	// GUEST_OFFLOADS_SET with Mask, or the mask derived from Config).
	StepSetConfig
	// StepFlushAll: every pending packet is delivered (device: link down
	// and up).
	StepFlushAll
	// StepReset: device reset; pending packets are discarded. Inputs and
	// outputs before it are not stream-checked.
	StepReset
	// StepCheckDelivered: exactly N packets were delivered so far.
	StepCheckDelivered
	// StepCheckPending: N packets are pending in the engine.
	StepCheckPending
	// StepCheckStats: the engine's counters (Stats) at this point.
	StepCheckStats
	// StepCheckDeadline: the engine's next timer deadline is D (N = 0:
	// none).
	StepCheckDeadline
	// StepCheckConfig: the engine's active configuration has IPv4/IPv6 as
	// in Config.
	StepCheckConfig
	// StepCtrl: the driver sends control command Class/Cmd with Payload
	// and expects acknowledgement WantAck (device only).
	StepCtrl
	// StepLink: the device's link goes up (On) or down (device only).
	StepLink
	// StepCheckFeatures: a device created with Props (on top of the
	// runner's defaults) offers every bit of Offered and none of
	// NotOffered (device only).
	StepCheckFeatures
	// StepProperty: property Key=Value is accepted with rsc_interval Want
	// ns (Key rsc_interval) or boolean Want (other keys), or rejected
	// (WantErr) (device only).
	StepProperty
)

var stepNames = [...]string{"input", "end batch", "advance", "tick", "ring full", "set config", "flush all",
	"reset", "check delivered", "check pending", "check stats", "check deadline", "check config", "ctrl",
	"link", "check features", "property"}

// String names the kind.
func (k StepKind) String() string {
	if int(k) < len(stepNames) {
		return stepNames[k]
	}
	return fmt.Sprintf("step(%d)", uint8(k))
}

// Step is one step of a program. Which fields matter depends on Kind.
type Step struct {
	Kind StepKind
	// Only restricts the step to these runners (0: all that run the
	// scenario). Checks of engine internals are Only: Engine.
	Only Runner

	// Frames of StepInput.
	Frames []Frame
	// Refused (StepInput): the frames arrive while the ring is full and
	// cannot be accepted yet: the engine refuses them, a device does not
	// read them. A later StepInput with Retry offers them again.
	Refused bool
	// Retry (StepInput): Frames are the frames refused earlier; they are
	// not new inputs (a device already has them).
	Retry bool
	// Drop (StepInput): the device must drop these frames (they are not
	// delivered and not stream-checked).
	Drop bool

	// D is the StepAdvance duration, the StepCheckDeadline deadline.
	D time.Duration
	// On is StepRingFull's and StepLink's state.
	On bool
	// Fails: the engine call of StepTick, StepEndBatch, StepAdvance (its
	// Tick), StepSetConfig or StepFlushAll must report refusal (ring full).
	Fails bool

	// Config of StepSetConfig / StepCheckConfig.
	Config Config
	// Mask is the GUEST_OFFLOADS_SET argument of StepSetConfig (0: derived
	// from Config).
	Mask uint64

	// N of StepCheckDelivered, StepCheckPending, StepCheckDeadline (1 =
	// a deadline is armed).
	N int
	// Stats of StepCheckStats.
	Stats []Stat

	// Class, Cmd, Payload and WantAck of StepCtrl.
	Class, Cmd uint8
	Payload    []byte
	WantAck    uint8

	// Key, Value, Want and WantErr of StepProperty; Props, Offered and
	// NotOffered of StepCheckFeatures.
	Key, Value  string
	Want        uint64
	WantErr     bool
	Props       []string
	Offered     uint64
	NotOffered  uint64
	Description string
}

// Runs reports whether runner r executes the step.
func (s Step) Runs(r Runner) bool { return s.Only == 0 || s.Only&r != 0 }

// Op compares a value with an expectation.
type Op uint8

// Comparison operators.
const (
	Eq Op = iota
	Le
	Ge
)

func (o Op) holds(got, want uint64) bool {
	switch o {
	case Le:
		return got <= want
	case Ge:
		return got >= want
	}
	return got == want
}

func (o Op) String() string {
	switch o {
	case Le:
		return "≤ "
	case Ge:
		return "≥ "
	}
	return ""
}

// Stat is a counter expectation. Names are the field names of rsc.Stats
// (the device's RSCStats uses the same names) or, in Expect.DeviceStats, of
// the device's QueueStats.
type Stat struct {
	Name string
	Op   Op
	Want uint64
	// Only restricts the check to these runners (0: all).
	Only Runner
}

// Counters maps counter names to values.
type Counters map[string]uint64

// CountersOf returns the exported unsigned and int fields of struct v (or
// *v) by name.
func CountersOf(v any) Counters {
	c := Counters{}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return c
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return c
	}
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		if !f.IsExported() {
			continue
		}
		switch fv := rv.Field(i); fv.Kind() {
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			c[f.Name] = fv.Uint()
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			if n := fv.Int(); n >= 0 {
				c[f.Name] = uint64(n)
			}
		}
	}
	return c
}

// CheckStats checks want against c for runner r.
func CheckStats(c Counters, want []Stat, r Runner) error {
	for _, s := range want {
		if s.Only != 0 && s.Only&r == 0 {
			continue
		}
		got, ok := c[s.Name]
		if !ok {
			return fmt.Errorf("counter %s: not reported", s.Name)
		}
		if !s.Op.holds(got, s.Want) {
			return fmt.Errorf("counter %s = %d, want %s%d", s.Name, got, s.Op, s.Want)
		}
	}
	return nil
}

// PacketKind is what a delivered packet must be.
type PacketKind uint8

// Packet kinds.
const (
	// AnyPacket checks only the fields.
	AnyPacket PacketKind = iota
	// Plain: byte-identical with input Input, header included.
	Plain
	// SCU: a coalesced packet with RSC_INFO, csum_start = Segs, csum_offset
	// 0, carrying stream bytes [Seq, Seq+Len) of the flow.
	SCU
)

// Packet is an expectation on delivered packets.
type Packet struct {
	// Index is the output position (negative: from the end, -1 = last).
	Index int
	// Span is how many outputs from Index it applies to (0: 1; -1: all to
	// the end).
	Span int
	Kind PacketKind
	// Input is the Plain packet's input number.
	Input int
	// Segs, Seq and Len describe an SCU.
	Segs int
	Seq  uint32
	Len  int
	// Fields are further checks (see FieldNames).
	Fields []Field
	// IfSCU applies the expectation only to outputs with RSC_INFO.
	IfSCU bool
}

// Field is a check of one packet field.
type Field struct {
	Name  string
	Op    Op
	Want  uint64
	Bytes []byte // for byte-string fields (tcp_options)
}

// Expect is what a program expects at the end.
type Expect struct {
	// Count is the exact number of delivered packets; -1: not checked.
	Count int
	// MinCount is a lower bound on the number of packets.
	MinCount int
	// Packets are per-packet expectations.
	Packets []Packet
	// Stats are the engine's counters at the end.
	Stats []Stat
	// DeviceStats are the device's queue counters at the end (device
	// runners only), e.g. RxDropGSO.
	DeviceStats []Stat
	// MaxLatency bounds, for every packet, the time between the arrival of
	// the first frame it carries and its delivery (0: unchecked).
	MaxLatency time.Duration
	// MaxFrameLen bounds every delivered frame's length (0: unchecked).
	MaxFrameLen int
	// NoStreamCheck skips CheckStream (Why says why).
	NoStreamCheck bool
	Why           string
}

// Input is a frame offered to a receiver, as a runner saw it.
type Input struct {
	// Frame is the frame as the receiver got it: for a real TAP, the header
	// the TAP delivered.
	Frame Frame
	// Num is the input number (order of first offering).
	Num int
	// At is the virtual time it arrived.
	At time.Duration
	// Dropped: the runner's receiver drops it by rule (device: frames
	// shorter than an Ethernet header) — not expected at the output.
	Dropped bool
	// Expected dropped by the scenario (Step.Drop).
	ScenarioDrop bool
	// Segment is the stream-check segment (incremented by every reset).
	Segment int
}

// Output is a packet the guest received.
type Output struct {
	Hdr   header.VirtioNetHdr
	Frame []byte
	// At is the virtual time of delivery.
	At time.Duration
	// Buffers is the number of receive buffers it used (device runners).
	Buffers int
	// Segment is the stream-check segment it was delivered in.
	Segment int
}

// Outcome is a scenario's result.
type Outcome uint8

// Outcomes.
const (
	Pass Outcome = iota
	Fail
	Skip
)

// String returns "PASS", "FAIL" or "SKIP".
func (o Outcome) String() string {
	switch o {
	case Pass:
		return "PASS"
	case Fail:
		return "FAIL"
	}
	return "SKIP"
}

// MarshalText implements encoding.TextMarshaler.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Result is the result of one scenario on one runner.
type Result struct {
	ID      string
	Num     int
	Title   string
	Family  Family
	Runner  Runner
	Outcome Outcome
	// Detail is what differed (the first mismatch), or why it was skipped.
	Detail   string
	Duration time.Duration
	Inputs   []Input
	Outputs  []Output
}

// Failf marks r failed with a detail (the first failure wins).
func (r *Result) Failf(format string, args ...any) {
	if r.Outcome == Fail {
		return
	}
	r.Outcome = Fail
	r.Detail = fmt.Sprintf(format, args...)
}

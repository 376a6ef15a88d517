package rsc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/rsc/conformance"
	"github.com/stretchr/testify/require"
)

// Default test flow F (IPv4) / F6 (IPv6), MSS, ACK and window (spec part (a)).
var (
	srcV4 = netip.MustParseAddr("10.0.0.1")
	dstV4 = netip.MustParseAddr("10.0.0.2")
	srcV6 = netip.MustParseAddr("2001:db8::1")
	dstV6 = netip.MustParseAddr("2001:db8::2")
	macA  = [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	macB  = [6]byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
)

const (
	mss      = 1448
	ackA     = 5000
	winW     = 1000
	interval = time.Millisecond
	seq0     = 1000
)

// rec is one packet delivered to the recording sink.
type rec struct {
	hdr   header.VirtioNetHdr
	frame []byte
	at    time.Duration // virtual time of delivery
}

// recSink records deliveries; full makes it refuse them.
type recSink struct {
	out     []rec
	full    bool
	refused int
	clock   *time.Duration
}

func (s *recSink) Deliver(h header.VirtioNetHdr, f []byte) bool {
	if s.full {
		s.refused++
		return false
	}
	var at time.Duration
	if s.clock != nil {
		at = *s.clock
	}
	s.out = append(s.out, rec{h, bytes.Clone(f), at})
	return true
}

// vecSink is a recSink that also takes scatter lists (VecSink); vec counts
// the packets that arrived in pieces.
type vecSink struct {
	recSink
	vec int
}

func (s *vecSink) DeliverVec(h header.VirtioNetHdr, f [][]byte) bool {
	if s.full {
		s.refused++
		return false
	}
	if len(f) < 2 {
		panic("DeliverVec with a contiguous packet")
	}
	s.vec++
	return s.Deliver(h, bytes.Join(f, nil))
}

// pattern returns n stream bytes starting at sequence number seq: the
// content is a function of the absolute sequence number, so a correctly
// reassembled stream is recognisable.
func pattern(seq uint32, n int) []byte { return conformance.Pattern(seq, n) }

// seg describes a test segment; build turns it into a Frame.
type seg struct {
	f   header.TCPFrame
	hdr header.VirtioNetHdr
}

type segOpt func(*seg)

// D returns data segment D(seq,n) of flow F with ACK, ack A, window W,
// DF set and a DATA_VALID TAP header.
func D(seq uint32, n int, opts ...segOpt) Frame {
	s := seg{
		f: header.TCPFrame{
			DstMAC: macA, SrcMAC: macB, Src: srcV4, Dst: dstV4, DontFragment: true, TTL: 64, ID: 7,
			SrcPort: 40000, DstPort: 5001, Seq: seq, Ack: ackA, Flags: header.TCPFlagACK, Window: winW,
			Payload: pattern(seq, n),
		},
		hdr: header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid},
	}
	for _, o := range opts {
		o(&s)
	}
	return Frame{Hdr: s.hdr, Data: s.f.Build(nil)}
}

// ACK returns a pure ACK of flow F.
func ACK(seq, ack uint32, win uint16, opts ...segOpt) Frame {
	return D(seq, 0, append([]segOpt{withAck(ack), withWin(win)}, opts...)...)
}

func v6(s *seg)                             { s.f.Src, s.f.Dst = srcV6, dstV6 }
func withFlags(fl uint8) segOpt             { return func(s *seg) { s.f.Flags = fl } }
func addFlags(fl uint8) segOpt              { return func(s *seg) { s.f.Flags |= fl } }
func withAck(a uint32) segOpt               { return func(s *seg) { s.f.Ack = a } }
func withWin(w uint16) segOpt               { return func(s *seg) { s.f.Window = w } }
func withTOS(t uint8) segOpt                { return func(s *seg) { s.f.TOS = t } }
func withTTL(t uint8) segOpt                { return func(s *seg) { s.f.TTL = t } }
func withID(id uint16) segOpt               { return func(s *seg) { s.f.ID = id } }
func withDF(df bool) segOpt                 { return func(s *seg) { s.f.DontFragment = df } }
func withMF(s *seg)                         { s.f.MoreFragments = true }
func withSrcPort(p uint16) segOpt           { return func(s *seg) { s.f.SrcPort = p } }
func withOptions(o []byte) segOpt           { return func(s *seg) { s.f.Options = o } }
func withIPOptions(o []byte) segOpt         { return func(s *seg) { s.f.IPOptions = o } }
func withPadding(n int) segOpt              { return func(s *seg) { s.f.Padding = n } }
func withHdr(h header.VirtioNetHdr) segOpt  { return func(s *seg) { s.hdr = h } }
func withVLAN(tci uint16) segOpt            { return func(s *seg) { s.f.VLAN, s.f.VLANTCI = true, tci } }
func withFlowLabel(l uint32) segOpt         { return func(s *seg) { s.f.FlowLabel = l } }
func withCsum(m header.ChecksumMode) segOpt { return func(s *seg) { s.f.Checksum = m } }
func noFlags(s *seg)                        { s.hdr = header.VirtioNetHdr{} }
func partial(s *seg) {
	s.f.Checksum = header.ChecksumPartial
	s.hdr = s.f.PartialChecksumHdr()
}

// tsOpt returns a NOP,NOP,TS option block.
func tsOpt(val, ecr uint32) []byte {
	b := []byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionTimestamp, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], val)
	binary.BigEndian.PutUint32(b[8:], ecr)
	return b
}

// defaultConfig is the scenario configuration: rsc4/rsc6 on, 1 ms interval.
func defaultConfig() Config {
	return Config{IPv4: true, IPv6: true, Interval: interval, Timestamps: true}
}

// harness drives an engine with a virtual clock and keeps every input for
// the stream checker.
type harness struct {
	t      *testing.T
	cfg    Config
	e      *Engine
	s      *recSink
	now    time.Duration
	inputs []Frame
}

func newHarness(t *testing.T, cfg Config) *harness {
	h := &harness{t: t, cfg: cfg, s: &recSink{}}
	h.s.clock = &h.now
	h.e = New(cfg, h.s)
	return h
}

// in feeds frames, requiring acceptance.
func (h *harness) in(fs ...Frame) {
	h.t.Helper()
	for _, f := range fs {
		require.True(h.t, h.e.Input(h.now, f), "Input refused")
		h.inputs = append(h.inputs, Frame{Hdr: f.Hdr, Data: bytes.Clone(f.Data)})
	}
}

func (h *harness) advance(d time.Duration) {
	h.now += d
	require.True(h.t, h.e.Tick(h.now))
}

// finish flushes everything, runs the stream checker and returns the output.
func (h *harness) finish() []rec {
	h.t.Helper()
	require.True(h.t, h.e.FlushAll())
	checkStream(h.t, h.e.Config(), h.inputs, h.s.out)
	return h.s.out
}

// checkMemory verifies the engine's memory bound: the arena and the piece
// lists have their preallocated sizes and every pending packet lies in
// the arena.
func (e *Engine) checkMemory() error {
	if len(e.arena) != arenaSize(len(e.flows)) || cap(e.arena) != len(e.arena) {
		return fmt.Errorf("arena is %d bytes (cap %d), want %d", len(e.arena), cap(e.arena), arenaSize(len(e.flows)))
	}
	for i := range e.flows {
		fl := &e.flows[i]
		if cap(fl.vec) != maxPieces || len(fl.vec) > maxPieces {
			return fmt.Errorf("flow %d: %d pieces (cap %d)", i, len(fl.vec), cap(fl.vec))
		}
		if !fl.active {
			continue
		}
		n := 0
		for _, b := range fl.vec {
			if _, ok := e.inArena(b); !ok {
				return fmt.Errorf("flow %d: a piece outside the arena", i)
			}
			n += len(b)
		}
		if n > BufferSize {
			return fmt.Errorf("flow %d: %d bytes pending", i, n)
		}
	}
	return nil
}

// inArena returns b's offset in the arena.
func (e *Engine) inArena(b []byte) (int, bool) {
	d := uintptr(unsafe.Pointer(unsafe.SliceData(b))) - uintptr(unsafe.Pointer(unsafe.SliceData(e.arena)))
	return int(d), d < uintptr(len(e.arena)) && uintptr(len(b)) <= uintptr(len(e.arena))-d
}

// --- inspection helpers ---

type parsed struct {
	l2, l3, l4 int
	v6         bool
	ip         []byte
	tcp        header.TCP
	payload    []byte
}

func parseOut(t *testing.T, frame []byte) parsed {
	t.Helper()
	var p parsed
	info, ok := header.Ethernet(frame).Parse()
	require.True(t, ok)
	p.l2 = info.HeaderLen
	p.ip = frame[p.l2:]
	switch info.EtherType {
	case header.EtherTypeIPv4:
		ip := header.IPv4(p.ip)
		require.True(t, ip.IsValid())
		p.l3 = ip.HeaderLen()
		p.ip = p.ip[:ip.TotalLength()]
	case header.EtherTypeIPv6:
		ip := header.IPv6(p.ip)
		require.True(t, ip.IsValid())
		p.v6 = true
		p.l3 = header.IPv6MinSize
		p.ip = p.ip[:header.IPv6MinSize+int(ip.PayloadLength())]
	default:
		t.Fatalf("not IP: %#x", info.EtherType)
	}
	p.tcp = header.TCP(p.ip[p.l3:])
	require.True(t, p.tcp.IsValid())
	p.l4 = p.tcp.DataOffset()
	p.payload = p.tcp.Payload()
	return p
}

func isSCU(r rec) bool {
	return r.hdr.Flags&header.VirtioNetHdrFRSCInfo != 0
}

// requireSCU checks an RSC_INFO packet with n segments carrying stream bytes
// [seq, seq+len) of the pattern.
func requireSCU(t *testing.T, r rec, n int, seq uint32, length int) parsed {
	t.Helper()
	require.True(t, isSCU(r), "want SCU, got %v", r.hdr)
	require.Equal(t, uint16(n), r.hdr.CsumStart, "segments")
	require.Equal(t, uint16(0), r.hdr.CsumOffset, "dup acks")
	p := parseOut(t, r.frame)
	require.Equal(t, seq, p.tcp.Seq())
	require.Equal(t, pattern(seq, length), p.payload)
	require.Equal(t, len(r.frame), p.l2+len(p.ip), "IP length == bytes present")
	return p
}

// --- stream checker ---

// checkStream verifies the engine's output against its input with the
// conformance checker (conformance.CheckStream): every input is delivered
// exactly once, non-coalesced frames byte-identical with their header,
// coalesced packets are runs of consecutive frames of one flow with the
// concatenated payload and a correct header (conformance.CheckCoalesced:
// IP length, IPv4 header checksum, pseudo-header TCP checksum, ≤ 65535,
// flags per mode), and no frame overtakes an earlier frame of the same flow
// (or address pair, for frames whose ports are unknown).
func checkStream(t testing.TB, cfg Config, inputs []Frame, outputs []rec) {
	t.Helper()
	ins := make([]conformance.Frame, len(inputs))
	for i, f := range inputs {
		ins[i] = conformance.Frame{Hdr: f.Hdr, Data: f.Data}
	}
	outs := make([]conformance.Output, len(outputs))
	for i, o := range outputs {
		outs[i] = conformance.Output{Hdr: o.hdr, Frame: o.frame, At: o.at}
	}
	if _, err := conformance.CheckStream(fromRSCConfig(normalize(cfg)), ins, outs); err != nil {
		t.Fatal(err)
	}
}

// --- conformance adapter ---

// toRSCConfig converts a conformance configuration to the engine's.
func toRSCConfig(c conformance.Config) Config {
	return Config{
		IPv4: c.IPv4, IPv6: c.IPv6, Interval: c.Interval, FlushAtBatchEnd: c.FlushAtBatchEnd,
		MaxFlows: c.MaxFlows, MaxFrame: c.MaxFrame, GSOMode: c.GSOMode, GuestECN: c.GuestECN,
		CompatChecksum: c.CompatChecksum, Timestamps: c.Timestamps,
	}
}

// fromRSCConfig converts the engine's configuration to the conformance one.
func fromRSCConfig(c Config) conformance.Config {
	return conformance.Config{
		IPv4: c.IPv4, IPv6: c.IPv6, Interval: c.Interval, FlushAtBatchEnd: c.FlushAtBatchEnd,
		MaxFlows: c.MaxFlows, MaxFrame: c.MaxFrame, GSOMode: c.GSOMode, GuestECN: c.GuestECN,
		CompatChecksum: c.CompatChecksum, Timestamps: c.Timestamps,
	}
}

// engineAdapter is the engine as conformance.RunEngine drives it.
type engineAdapter struct{ e *Engine }

func (a engineAdapter) Input(now time.Duration, f conformance.Frame) bool {
	return a.e.Input(now, Frame{Hdr: f.Hdr, Data: f.Data})
}
func (a engineAdapter) Tick(now time.Duration) bool         { return a.e.Tick(now) }
func (a engineAdapter) EndBatch(now time.Duration) bool     { return a.e.EndBatch(now) }
func (a engineAdapter) FlushAll() bool                      { return a.e.FlushAll() }
func (a engineAdapter) SetConfig(c conformance.Config) bool { return a.e.SetConfig(toRSCConfig(c)) }
func (a engineAdapter) Reset()                              { a.e.Reset() }
func (a engineAdapter) Pending() int                        { return a.e.Pending() }
func (a engineAdapter) Deadline() (time.Duration, bool)     { return a.e.NextDeadline() }
func (a engineAdapter) Config() conformance.Config          { return fromRSCConfig(a.e.Config()) }
func (a engineAdapter) Stats() conformance.Counters         { return conformance.CountersOf(a.e.Stats()) }

// seqs returns n contiguous MSS data segments starting at seq.
func seqs(seq uint32, n int, opts ...segOpt) []Frame { return seqs2(seq, n, mss, opts...) }

// seqs2 returns n contiguous segments of size sz starting at seq.
func seqs2(seq uint32, n, sz int, opts ...segOpt) []Frame {
	out := make([]Frame, n)
	for i := range out {
		out[i] = D(seq+uint32(i*sz), sz, opts...)
	}
	return out
}

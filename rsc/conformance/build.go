package conformance

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/rscvm/rscvm/net/header"
)

// Flow F / F6 of the scenarios and the defaults of D.
var (
	SrcV4 = netip.MustParseAddr("10.0.0.1")
	DstV4 = netip.MustParseAddr("10.0.0.2")
	SrcV6 = netip.MustParseAddr("2001:db8::1")
	DstV6 = netip.MustParseAddr("2001:db8::2")
	// GuestMAC is the destination MAC of every frame (the device's MAC in
	// the device runners).
	GuestMAC = [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	// PeerMAC is the source MAC of every frame (a TAP runner tells its
	// frames from host noise by it).
	PeerMAC = [6]byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
)

// Defaults of the scenarios' segments.
const (
	MSS     = 1448
	AckA    = 5000
	WinW    = 1000
	Seq0    = 1000
	SrcPort = 40000
	DstPort = 5001
)

// Pattern returns n stream bytes starting at sequence number seq: the
// content is a function of the absolute sequence number, so a correctly
// reassembled stream is recognisable.
func Pattern(seq uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := seq + uint32(i)
		b[i] = byte(x ^ x>>8 ^ x>>16 ^ x>>24)
	}
	return b
}

// Seg is a segment being built: the frame description and the TAP header.
type Seg struct {
	TCP header.TCPFrame
	Hdr header.VirtioNetHdr
}

// Opt modifies a segment.
type Opt func(*Seg)

// D returns data segment D(seq, n) of flow F: ACK set, ack A, window W, DF,
// TTL 64, IP ID 7, payload Pattern(seq, n) and a DATA_VALID TAP header.
func D(seq uint32, n int, opts ...Opt) Frame {
	s := Seg{
		TCP: header.TCPFrame{
			DstMAC: GuestMAC, SrcMAC: PeerMAC, Src: SrcV4, Dst: DstV4, DontFragment: true, TTL: 64, ID: 7,
			SrcPort: SrcPort, DstPort: DstPort, Seq: seq, Ack: AckA, Flags: header.TCPFlagACK, Window: WinW,
			Payload: Pattern(seq, n),
		},
		Hdr: header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid},
	}
	for _, o := range opts {
		o(&s)
	}
	return Frame{Hdr: s.Hdr, Data: s.TCP.Build(nil)}
}

// ACK returns a pure ACK of flow F.
func ACK(seq, ack uint32, win uint16, opts ...Opt) Frame {
	return D(seq, 0, append([]Opt{WithAck(ack), WithWin(win)}, opts...)...)
}

// Seqs returns n contiguous MSS data segments starting at seq.
func Seqs(seq uint32, n int, opts ...Opt) []Frame { return SeqsN(seq, n, MSS, opts...) }

// SeqsN returns n contiguous data segments of size bytes starting at seq.
func SeqsN(seq uint32, n, size int, opts ...Opt) []Frame {
	out := make([]Frame, n)
	for i := range out {
		out[i] = D(seq+uint32(i*size), size, opts...)
	}
	return out
}

// V6 moves the segment to flow F6.
func V6(s *Seg) { s.TCP.Src, s.TCP.Dst = SrcV6, DstV6 }

// WithFlags sets the TCP flags.
func WithFlags(fl uint8) Opt { return func(s *Seg) { s.TCP.Flags = fl } }

// AddFlags adds TCP flags.
func AddFlags(fl uint8) Opt { return func(s *Seg) { s.TCP.Flags |= fl } }

// WithAck sets the acknowledgement number.
func WithAck(a uint32) Opt { return func(s *Seg) { s.TCP.Ack = a } }

// WithWin sets the window.
func WithWin(w uint16) Opt { return func(s *Seg) { s.TCP.Window = w } }

// WithTOS sets the IPv4 TOS / IPv6 traffic class.
func WithTOS(t uint8) Opt { return func(s *Seg) { s.TCP.TOS = t } }

// WithTTL sets the TTL / hop limit.
func WithTTL(t uint8) Opt { return func(s *Seg) { s.TCP.TTL = t } }

// WithID sets the IPv4 identification.
func WithID(id uint16) Opt { return func(s *Seg) { s.TCP.ID = id } }

// WithDF sets or clears DF.
func WithDF(df bool) Opt { return func(s *Seg) { s.TCP.DontFragment = df } }

// WithMF sets MF.
func WithMF(s *Seg) { s.TCP.MoreFragments = true }

// WithSrcPort sets the source port (another flow).
func WithSrcPort(p uint16) Opt { return func(s *Seg) { s.TCP.SrcPort = p } }

// WithOptions sets the TCP options.
func WithOptions(o []byte) Opt { return func(s *Seg) { s.TCP.Options = o } }

// WithIPOptions sets IPv4 options.
func WithIPOptions(o []byte) Opt { return func(s *Seg) { s.TCP.IPOptions = o } }

// WithPadding appends n bytes after the IP datagram.
func WithPadding(n int) Opt { return func(s *Seg) { s.TCP.Padding = n } }

// WithHdr sets the TAP header.
func WithHdr(h header.VirtioNetHdr) Opt { return func(s *Seg) { s.Hdr = h } }

// WithVLAN adds an 802.1Q tag.
func WithVLAN(tci uint16) Opt { return func(s *Seg) { s.TCP.VLAN, s.TCP.VLANTCI = true, tci } }

// WithFlowLabel sets the IPv6 flow label.
func WithFlowLabel(l uint32) Opt { return func(s *Seg) { s.TCP.FlowLabel = l } }

// WithExt adds IPv6 extension headers.
func WithExt(x ...header.IPv6ExtHeader) Opt { return func(s *Seg) { s.TCP.ExtHeaders = x } }

// WithCsum selects the TCP checksum content.
func WithCsum(m header.ChecksumMode) Opt { return func(s *Seg) { s.TCP.Checksum = m } }

// WithBadIPCsum stores a wrong IPv4 header checksum.
func WithBadIPCsum(s *Seg) { s.TCP.BadIPChecksum = true }

// NoFlags gives the segment a TAP header with flags 0 (the receiver must
// verify the checksum).
func NoFlags(s *Seg) { s.Hdr = header.VirtioNetHdr{} }

// Partial gives the segment a partial checksum and the NEEDS_CSUM header a
// TAP attaches to locally generated traffic.
func Partial(s *Seg) {
	s.TCP.Checksum = header.ChecksumPartial
	s.Hdr = s.TCP.PartialChecksumHdr()
}

// TSOpt returns a NOP,NOP,TS option block.
func TSOpt(val, ecr uint32) []byte {
	b := []byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionTimestamp, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], val)
	binary.BigEndian.PutUint32(b[8:], ecr)
	return b
}

// --- step builders ---

// In is a TAP read batch of frames.
func In(fs ...Frame) Step { return Step{Kind: StepInput, Frames: fs} }

// InRefused offers frames while the ring is full: they must be refused.
func InRefused(fs ...Frame) Step { return Step{Kind: StepInput, Frames: fs, Refused: true} }

// InRetry offers frames refused earlier again.
func InRetry(fs ...Frame) Step { return Step{Kind: StepInput, Frames: fs, Retry: true} }

// InDropped is a batch the device must drop.
func InDropped(fs ...Frame) Step { return Step{Kind: StepInput, Frames: fs, Drop: true} }

// Advance advances the virtual clock by d.
func Advance(d time.Duration) Step { return Step{Kind: StepAdvance, D: d} }

// EndBatch ends a TAP read batch.
func EndBatch() Step { return Step{Kind: StepEndBatch} }

// Tick fires due timers.
func Tick() Step { return Step{Kind: StepTick} }

// RingFull makes the guest ring full (on) or posts buffers again (off).
func RingFull(on bool) Step { return Step{Kind: StepRingFull, On: on} }

// SetConfig changes the receive configuration.
func SetConfig(cfg Config) Step { return Step{Kind: StepSetConfig, Config: cfg} }

// FlushAll delivers everything pending.
func FlushAll() Step { return Step{Kind: StepFlushAll} }

// Reset resets the device.
func Reset() Step { return Step{Kind: StepReset} }

// Delivered checks that exactly n packets were delivered so far.
func Delivered(n int) Step { return Step{Kind: StepCheckDelivered, N: n} }

// Pending checks the engine's pending packets.
func Pending(n int) Step { return Step{Kind: StepCheckPending, N: n} }

// StatsNow checks counters at this point.
func StatsNow(st ...Stat) Step { return Step{Kind: StepCheckStats, Stats: st} }

// Fails marks a step's engine call as expected to be refused.
func Fails(s Step) Step { s.Fails = true; return s }

// OnlyOn restricts a step to runners r.
func OnlyOn(r Runner, s Step) Step { s.Only = r; return s }

// --- expectation builders ---

// PlainAt expects output i to be input n unchanged.
func PlainAt(i, n int, fields ...Field) Packet {
	return Packet{Index: i, Kind: Plain, Input: n, Fields: fields}
}

// SCUAt expects output i to be a coalesced packet of segs segments carrying
// stream bytes [seq, seq+n).
func SCUAt(i, segs int, seq uint32, n int, fields ...Field) Packet {
	return Packet{Index: i, Kind: SCU, Segs: segs, Seq: seq, Len: n, Fields: fields}
}

// FieldsAt checks fields of output i.
func FieldsAt(i int, fields ...Field) Packet { return Packet{Index: i, Fields: fields} }

// EveryFrom checks fields of every output from i to the end.
func EveryFrom(i int, fields ...Field) Packet { return Packet{Index: i, Span: -1, Fields: fields} }

// F expects field name == v.
func F(name string, v uint64) Field { return Field{Name: name, Want: v} }

// FLe expects field name ≤ v.
func FLe(name string, v uint64) Field { return Field{Name: name, Op: Le, Want: v} }

// FBytes expects byte-string field name == b.
func FBytes(name string, b []byte) Field { return Field{Name: name, Bytes: b} }

// S expects counter name == v.
func S(name string, v uint64) Stat { return Stat{Name: name, Want: v} }

// SGe expects counter name ≥ v.
func SGe(name string, v uint64) Stat { return Stat{Name: name, Op: Ge, Want: v} }

package rsc

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/rscvm/rscvm/net/header"
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

// pattern returns n stream bytes starting at sequence number seq: the
// content is a function of the absolute sequence number, so a correctly
// reassembled stream is recognisable.
func pattern(seq uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := seq + uint32(i)
		b[i] = byte(x ^ x>>8 ^ x>>16 ^ x>>24)
	}
	return b
}

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

func v6(s *seg)                            { s.f.Src, s.f.Dst = srcV6, dstV6 }
func withFlags(fl uint8) segOpt            { return func(s *seg) { s.f.Flags = fl } }
func addFlags(fl uint8) segOpt             { return func(s *seg) { s.f.Flags |= fl } }
func withAck(a uint32) segOpt              { return func(s *seg) { s.f.Ack = a } }
func withWin(w uint16) segOpt              { return func(s *seg) { s.f.Window = w } }
func withTOS(t uint8) segOpt               { return func(s *seg) { s.f.TOS = t } }
func withTTL(t uint8) segOpt               { return func(s *seg) { s.f.TTL = t } }
func withID(id uint16) segOpt              { return func(s *seg) { s.f.ID = id } }
func withDF(df bool) segOpt                { return func(s *seg) { s.f.DontFragment = df } }
func withMF(s *seg)                        { s.f.MoreFragments = true }
func withSrcPort(p uint16) segOpt          { return func(s *seg) { s.f.SrcPort = p } }
func withOptions(o []byte) segOpt          { return func(s *seg) { s.f.Options = o } }
func withIPOptions(o []byte) segOpt        { return func(s *seg) { s.f.IPOptions = o } }
func withPadding(n int) segOpt             { return func(s *seg) { s.f.Padding = n } }
func withHdr(h header.VirtioNetHdr) segOpt { return func(s *seg) { s.hdr = h } }
func withVLAN(tci uint16) segOpt           { return func(s *seg) { s.f.VLAN, s.f.VLANTCI = true, tci } }
func withFlowLabel(l uint32) segOpt        { return func(s *seg) { s.f.FlowLabel = l } }
func withExt(x ...header.IPv6ExtHeader) segOpt {
	return func(s *seg) { s.f.ExtHeaders = x }
}
func withCsum(m header.ChecksumMode) segOpt { return func(s *seg) { s.f.Checksum = m } }
func withBadIPCsum(s *seg)                  { s.f.BadIPChecksum = true }
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

func (h *harness) endBatch() { require.True(h.t, h.e.EndBatch(h.now)) }

// finish flushes everything, runs the stream checker and returns the output.
func (h *harness) finish() []rec {
	h.t.Helper()
	require.True(h.t, h.e.FlushAll())
	checkStream(h.t, h.e.Config(), h.inputs, h.s.out)
	return h.s.out
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

// requirePlain checks that r is input frame f, byte-identical with its header.
func requirePlain(t *testing.T, r rec, f Frame) {
	t.Helper()
	require.Equal(t, f.Hdr, r.hdr, "header preserved")
	require.Equal(t, f.Data, r.frame, "frame preserved")
}

// --- stream checker ---

// ckClass is the checker's own classification of an input frame.
type ckClass uint8

const (
	ckOther ckClass = iota
	ckAddr
	ckExact
)

type ckKey struct {
	v6         bool
	tagged     bool
	vid        uint16
	src, dst   [16]byte
	sport, dpt uint16
}

type ckIn struct {
	f        Frame
	class    ckClass
	key      ckKey
	consumed bool
	// TCP view, valid when the frame is fully parsable TCP.
	tcpOK   bool
	seq     uint32
	ack     uint32
	win     uint16
	ttl     uint8
	payload []byte
}

// classify independently mirrors the engine contract: which frames belong to
// a flow (exact key), which only to an address pair, and which to none.
func classify(cfg Config, f Frame) ckIn {
	c := ckIn{f: f}
	b := f.Data
	if len(b) < 14 {
		return c
	}
	et := binary.BigEndian.Uint16(b[12:14])
	l2 := 14
	if et == header.EtherTypeVLAN {
		if len(b) < 18 {
			return c
		}
		c.key.tagged = true
		c.key.vid = binary.BigEndian.Uint16(b[14:16]) & 0xfff
		et = binary.BigEndian.Uint16(b[16:18])
		l2 = 18
	}
	ipb := b[l2:]
	var tcpOff int
	switch {
	case et == header.EtherTypeIPv4 && cfg.IPv4:
		if len(ipb) < 20 || ipb[0]>>4 != 4 || ipb[9] != header.ProtocolTCP {
			return c
		}
		ip := header.IPv4(ipb)
		c.class = ckAddr
		copy(c.key.src[:], ipb[12:16])
		copy(c.key.dst[:], ipb[16:20])
		hl := ip.HeaderLen()
		if ip.FlagsFragment()&header.IPv4FragOffsetMask != 0 || hl < 20 || hl+4 > len(ipb) {
			return c
		}
		tcpOff = hl
		if ip.IsValid() && !ip.IsFragment() && hl+20 <= int(ip.TotalLength()) {
			tcp := header.TCP(ipb[hl:ip.TotalLength()])
			if tcp.IsValid() {
				c.tcpOK = true
				c.seq, c.ack, c.win, c.ttl, c.payload = tcp.Seq(), tcp.Ack(), tcp.Window(), ip.TTL(), tcp.Payload()
			}
		}
	case et == header.EtherTypeIPv6 && cfg.IPv6:
		if len(ipb) < 40 || ipb[0]>>4 != 6 {
			return c
		}
		ip := header.IPv6(ipb)
		proto, off, ok := ip.TransportHeader()
		if ip.NextHeader() == header.ProtocolTCP {
			proto, off, ok = header.ProtocolTCP, 40, true
		} else if !header.IsIPv6ExtensionHeader(ip.NextHeader()) || (ok && proto != header.ProtocolTCP) {
			return c
		}
		c.key.v6 = true
		c.class = ckAddr
		copy(c.key.src[:], ipb[8:24])
		copy(c.key.dst[:], ipb[24:40])
		if !ok || off+4 > len(ipb) {
			return c
		}
		tcpOff = off
		if ip.IsValid() && off == 40 {
			tcp := header.TCP(ipb[40 : 40+int(ip.PayloadLength())])
			if len(tcp) >= 20 && tcp.IsValid() {
				c.tcpOK = true
				c.seq, c.ack, c.win, c.ttl, c.payload = tcp.Seq(), tcp.Ack(), tcp.Window(), ip.HopLimit(), tcp.Payload()
			}
		}
	default:
		return c
	}
	c.class = ckExact
	c.key.sport = binary.BigEndian.Uint16(ipb[tcpOff:])
	c.key.dpt = binary.BigEndian.Uint16(ipb[tcpOff+2:])
	return c
}

func conflict(a, b *ckIn) bool {
	if a.class == ckOther || b.class == ckOther {
		return false
	}
	ka, kb := a.key, b.key
	if ka.v6 != kb.v6 || ka.tagged != kb.tagged || ka.vid != kb.vid || ka.src != kb.src || ka.dst != kb.dst {
		return false
	}
	return a.class == ckAddr || b.class == ckAddr || (ka.sport == kb.sport && ka.dpt == kb.dpt)
}

// checkStream verifies the engine's output against its input: every input is
// delivered exactly once, non-coalesced frames byte-identical with their
// header, coalesced packets are runs of consecutive frames of one flow with
// the concatenated payload and a correct header, and no frame overtakes an
// earlier frame of the same flow (or address pair, for frames whose ports
// are unknown).
func checkStream(t testing.TB, cfg Config, inputs []Frame, outputs []rec) {
	t.Helper()
	cfg = normalize(cfg)
	// Classify as if both families were enabled: frames of a disabled
	// family must not overtake frames of their flow either.
	ccfg := cfg
	ccfg.IPv4, ccfg.IPv6 = true, true
	ins := make([]*ckIn, len(inputs))
	for i, f := range inputs {
		c := classify(ccfg, f)
		ins[i] = &c
	}
	first := 0
	consume := func(set []int) {
		t.Helper()
		member := map[int]bool{}
		for _, j := range set {
			member[j] = true
		}
		for _, j := range set {
			for k := first; k < j; k++ {
				if !ins[k].consumed && !member[k] && conflict(ins[k], ins[j]) {
					t.Fatalf("input %d delivered before earlier input %d of the same flow", j, k)
				}
			}
		}
		for _, j := range set {
			ins[j].consumed = true
		}
		for first < len(ins) && ins[first].consumed {
			first++
		}
	}
	for oi, o := range outputs {
		// Identity: the earliest unconsumed identical input.
		found := -1
		for i := first; i < len(ins); i++ {
			if !ins[i].consumed && ins[i].f.Hdr == o.hdr && bytes.Equal(ins[i].f.Data, o.frame) {
				found = i
				break
			}
		}
		if found >= 0 {
			consume([]int{found})
			continue
		}
		// Otherwise a coalesced packet.
		if !o.hdr.IsGSO() {
			t.Fatalf("output %d (%v, %d bytes) matches no input and is not coalesced", oi, o.hdr, len(o.frame))
		}
		oc := classify(ccfg, Frame{Data: o.frame})
		if oc.class != ckExact || !oc.tcpOK {
			t.Fatalf("output %d: coalesced packet not parsable", oi)
		}
		checkCoalescedHeader(t, cfg, o)
		payload := oc.payload
		pos, segs := 0, 0
		var set []int
		lastWin := uint16(0)
		minTTL := uint8(255)
		var lastAck uint32
		for i := first; i < len(ins); i++ {
			c := ins[i]
			if c.consumed || c.class != ckExact || c.key != oc.key {
				continue
			}
			if !c.tcpOK {
				break
			}
			if len(set) == 0 && c.seq != oc.seq {
				t.Fatalf("output %d: starts at seq %d, flow's next input has seq %d", oi, oc.seq, c.seq)
			}
			if pos == len(payload) && (len(c.payload) > 0 || lastWin == oc.win) {
				break
			}
			if len(c.payload) > 0 {
				if pos+len(c.payload) > len(payload) || !bytes.Equal(payload[pos:pos+len(c.payload)], c.payload) {
					t.Fatalf("output %d: payload mismatch at offset %d (input %d)", oi, pos, i)
				}
				pos += len(c.payload)
				segs++
			}
			set = append(set, i)
			lastWin, lastAck = c.win, c.ack
			minTTL = min(minTTL, c.ttl)
		}
		if pos != len(payload) || len(set) < 2 {
			t.Fatalf("output %d: only %d of %d payload bytes matched inputs", oi, pos, len(payload))
		}
		if lastWin != oc.win || lastAck != oc.ack || minTTL != oc.ttl {
			t.Fatalf("output %d: win/ack/ttl %d/%d/%d, want %d/%d/%d", oi, oc.win, oc.ack, oc.ttl, lastWin, lastAck, minTTL)
		}
		if segs > 0 && !cfg.GSOMode && int(o.hdr.CsumStart) != segs {
			t.Fatalf("output %d: csum_start %d, want %d segments", oi, o.hdr.CsumStart, segs)
		}
		consume(set)
	}
	for i, c := range ins {
		if !c.consumed {
			t.Fatalf("input %d never delivered", i)
		}
	}
}

// checkCoalescedHeader verifies the invariants of a coalesced packet.
func checkCoalescedHeader(t testing.TB, cfg Config, o rec) {
	t.Helper()
	info, ok := header.Ethernet(o.frame).Parse()
	if !ok {
		t.Fatal("coalesced: bad Ethernet header")
	}
	l2 := info.HeaderLen
	ipb := o.frame[l2:]
	var l3 int
	var src, dst []byte
	gso := uint8(header.VirtioNetHdrGSOTCPv4)
	if info.EtherType == header.EtherTypeIPv6 {
		ip := header.IPv6(ipb)
		if !ip.IsValid() || 40+int(ip.PayloadLength()) != len(ipb) || ip.NextHeader() != header.ProtocolTCP {
			t.Fatalf("coalesced v6: bad length/next header")
		}
		l3, src, dst, gso = 40, ipb[8:24], ipb[24:40], header.VirtioNetHdrGSOTCPv6
	} else {
		ip := header.IPv4(ipb)
		if !ip.IsValid() || int(ip.TotalLength()) != len(ipb) || !ip.IsChecksumValid() || ip.HeaderLen() != 20 {
			t.Fatalf("coalesced v4: bad length or header checksum")
		}
		if ip.MF() {
			t.Fatal("coalesced v4: MF set")
		}
		l3, src, dst = 20, ipb[12:16], ipb[16:20]
	}
	if len(ipb) > MaxIPDatagram || len(o.frame) > cfg.MaxFrame {
		t.Fatalf("coalesced packet too large: IP %d, frame %d", len(ipb), len(o.frame))
	}
	tcp := header.TCP(ipb[l3:])
	if o.hdr.GSOType&^header.VirtioNetHdrGSOECN != gso {
		t.Fatalf("coalesced: gso_type %#x", o.hdr.GSOType)
	}
	if (o.hdr.GSOType&header.VirtioNetHdrGSOECN != 0) != (tcp.Flags()&header.TCPFlagCWR != 0) {
		t.Fatal("coalesced: GSO_ECN does not match CWR")
	}
	if int(o.hdr.HdrLen) != l2+l3+tcp.DataOffset() {
		t.Fatalf("coalesced: hdr_len %d", o.hdr.HdrLen)
	}
	if o.hdr.GSOSize == 0 || int(o.hdr.GSOSize) > len(tcp.Payload()) {
		t.Fatalf("coalesced: gso_size %d", o.hdr.GSOSize)
	}
	seg := []byte(tcp)
	ps := header.PseudoHeaderSum(header.ProtocolTCP, src, dst, uint32(len(seg)))
	switch {
	case cfg.GSOMode:
		if o.hdr.Flags != header.VirtioNetHdrFNeedsCsum || int(o.hdr.CsumStart) != l2+l3 || o.hdr.CsumOffset != 16 {
			t.Fatalf("GSO mode header %v", o.hdr)
		}
		if tcp.Checksum() != ps {
			t.Fatal("GSO mode: TCP checksum field is not the pseudo-header sum")
		}
	case cfg.CompatChecksum:
		if o.hdr.Flags != header.VirtioNetHdrFRSCInfo || o.hdr.CsumStart == 0 || o.hdr.CsumOffset != 0 {
			t.Fatalf("compat header %v", o.hdr)
		}
		if !header.TransportChecksumValid(header.ProtocolTCP, src, dst, seg) {
			t.Fatal("compat: TCP checksum invalid")
		}
	default:
		if o.hdr.Flags != header.VirtioNetHdrFNeedsCsum|header.VirtioNetHdrFRSCInfo || o.hdr.CsumStart == 0 || o.hdr.CsumOffset != 0 {
			t.Fatalf("RSC header %v", o.hdr)
		}
		if tcp.Checksum() != ps {
			t.Fatal("RSC: TCP checksum field is not the pseudo-header sum")
		}
	}
	if fl := tcp.Flags(); fl&^(header.TCPFlagACK|header.TCPFlagPSH|header.TCPFlagECE|header.TCPFlagCWR) != 0 || fl&header.TCPFlagACK == 0 {
		t.Fatalf("coalesced: flags %#x", fl)
	}
}

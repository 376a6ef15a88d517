package rsc

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"time"
	"unsafe"

	"github.com/rscvm/rscvm/net/header"
)

const (
	// DefaultMaxFlows is the flow-table size used when Config.MaxFlows is 0.
	DefaultMaxFlows = 64
	// MaxFlowsLimit is the largest accepted Config.MaxFlows.
	MaxFlowsLimit = 4096
	// MaxIPDatagram is the largest IP datagram (IPv4 total length, IPv6 fixed
	// header plus payload length) a coalesced packet may have.
	MaxIPDatagram = 65535
	// maxL2 is the largest Ethernet header the engine coalesces (one tag).
	maxL2 = header.EthernetMinSize + header.VLANTagSize
	// BufferSize is the per-flow buffer size: the largest frame a pending
	// packet can hold.
	BufferSize = maxL2 + MaxIPDatagram
	// bufStride is BufferSize rounded up to a cache line: the arena's unit.
	bufStride = (BufferSize + 63) &^ 63
	// maxPieces bounds the pieces of a pending packet: its first frame plus
	// the payloads kept where they were received. A segment that would need
	// one more ends the packet (OverSize), so packets of segments shorter
	// than 1 KiB may stop short of 64 KiB; MSS-sized segments never do.
	maxPieces = 64
	// pieceSlack is the arena allowance per piece for the headers of the
	// frames the payloads arrived in and for alignment.
	pieceSlack = 128
	// recvAlign aligns the receive region (a frame's headers then share as
	// few cache lines as possible).
	recvAlign = 64
)

// arenaSize is the receive arena of an engine with maxFlows flows: room
// for every flow's largest packet with its per-frame headers, plus two
// largest frames so that a receive region of BufferSize bytes is always
// found while all flows are pending.
func arenaSize(maxFlows int) int {
	return (maxFlows+2)*bufStride + maxFlows*maxPieces*pieceSlack
}

// Config selects the engine's behaviour. The zero value coalesces nothing.
type Config struct {
	// IPv4 and IPv6 enable coalescing per family (RSC_EXT ∧ GUEST_TSO4/6 ∧
	// the current guest offloads). Frames of a disabled family pass through.
	IPv4, IPv6 bool
	// Interval is the maximum time a segment may wait in a pending packet
	// (QEMU's rsc_interval). 0 disables the timer; pending packets are then
	// flushed at every EndBatch regardless of FlushAtBatchEnd.
	Interval time.Duration
	// FlushAtBatchEnd flushes every pending packet at EndBatch.
	FlushAtBatchEnd bool
	// MaxFlows bounds the number of pending packets (flows) per engine;
	// 0 means DefaultMaxFlows. Values above MaxFlowsLimit are clamped.
	MaxFlows int
	// MaxFrame bounds the Ethernet frame length (header plus IP datagram) of a
	// coalesced packet, e.g. the guest's receive buffer size without
	// MRG_RXBUF. 0 or values ≥ BufferSize mean no bound beyond MaxIPDatagram.
	MaxFrame int
	// GSOMode emits standard GSO headers (NEEDS_CSUM, csum_start/offset)
	// without RSC_INFO, for guests that did not negotiate RSC_EXT.
	GSOMode bool
	// GuestECN allows a CWR segment to start a coalesced packet, which is then
	// marked VIRTIO_NET_HDR_GSO_ECN (VIRTIO_NET_F_GUEST_ECN negotiated).
	GuestECN bool
	// CompatChecksum emits RSC_INFO without NEEDS_CSUM and a full TCP
	// checksum, like QEMU's packets minus its defects (ignored in GSOMode).
	CompatChecksum bool
	// Timestamps allows coalescing of segments whose only TCP option is a
	// timestamp, when the option block is byte-identical to the first
	// segment's (virtio cannot report a timestamp delta).
	Timestamps bool
}

// Frame is one received Ethernet frame with the virtio-net header the TAP
// attached to it. If Data was read into the engine's receive region (see
// Engine.RecvBuffer), the engine keeps the bytes it needs where they are;
// otherwise it copies them and Data may be reused after Input returns.
type Frame struct {
	Hdr  header.VirtioNetHdr
	Data []byte
}

// Sink receives finished packets. Deliver must copy frame before returning
// (the engine reuses the buffer) and returns false if the guest has no room
// (receive ring full), in which case the engine keeps the packet and retries
// later. hdr.NumBuffers is left for the device to fill.
type Sink interface {
	Deliver(hdr header.VirtioNetHdr, frame []byte) bool
}

// VecSink is a Sink that also accepts a packet as a scatter list. The
// engine calls DeliverVec for coalesced packets whose pieces are not
// contiguous: the frame is the concatenation of the slices in frame (the
// first holds the headers), which the sink copies before returning, with
// the same back-pressure contract as Deliver. With a plain Sink the engine
// first copies such packets into a contiguous buffer.
type VecSink interface {
	Sink
	DeliverVec(hdr header.VirtioNetHdr, frame [][]byte) bool
}

// SinkFunc adapts a function to the Sink interface.
type SinkFunc func(hdr header.VirtioNetHdr, frame []byte) bool

// Deliver calls f.
func (f SinkFunc) Deliver(hdr header.VirtioNetHdr, frame []byte) bool { return f(hdr, frame) }

// flowKey identifies a TCP flow: addresses, ports, family and VLAN ID.
type flowKey struct {
	addr  [4]uint64 // IPv4: addr[0] = src<<32 | dst
	ports uint32
	meta  uint32 // bit 16: IPv6, bit 15: tagged, bits 0-11: VLAN ID
}

const (
	metaIPv6   = 1 << 16
	metaTagged = 1 << 15
)

// flow is a pending coalesced packet (an SCU) in a table slot.
type flow struct {
	key        flowKey
	hash       uint32
	prev, next int32 // FIFO by birth, oldest first
	born       time.Duration

	// vec is the packet as pieces of the arena: vec[0] the first frame
	// (trimmed to its IP length once merged), then payloads. Capacity
	// maxPieces, preallocated.
	vec     [][]byte
	first   int // arena offset of the first frame (the ring's tail when oldest)
	end     int // arena offset just past the last piece
	origLen int // length of the first frame as received
	hdr     header.VirtioNetHdr
	merged  bool // vec[0] was trimmed and headers must be rewritten on flush
	active  bool // slot holds a pending packet

	l2, l3, l4 int
	ipLen      int // l3 + l4 + payload
	limit      int // largest ipLen: MaxIPDatagram, or less for MaxFrame
	sig        uint64
	segs       int // data segments
	payload    int
	mss        int

	nxt, ack uint32
	win      uint16
	flags    uint8 // first segment's flags, PSH ORed in
	ttl      uint8 // minimum TTL / hop limit
	tos      uint8 // IPv4 TOS / IPv6 traffic class
	v6       bool
	df       bool
	label    uint32
}

// class says how a frame relates to the flow table.
type class uint8

const (
	classOther    class = iota // not TCP of an enabled family: pass through, no flush
	classAddrOnly              // TCP (possibly) but ports unknown: flush flows of the address pair
	classFlow                  // flow key known
)

// packet is the parse result of one frame.
type packet struct {
	class  class
	reason reason // non-zero: cannot be coalesced
	key    flowKey
	hash   uint32 // hash of key, valid after lookup
	sig    uint64 // signature, valid for coalescable TCP
	v6     bool
	pure   bool // no payload (pure ACK candidate)
	l2, l3 int
	l4     int
	ipLen  int
	pay    int
	seq    uint32
	ack    uint32
	win    uint16
	flags  uint8
	ttl    uint8
	tos    uint8
	df     bool
	label  uint32
}

// Engine coalesces the frames of one receive queue. See the package comment.
type Engine struct {
	cfg      Config
	sink     Sink
	vsink    VecSink // sink, if it takes scatter lists
	lin      []byte  // BufferSize bytes to linearize packets for a plain Sink
	maxFrame int

	// The arena is a ring holding every byte of the pending packets, in
	// allocation order: frames read into the receive region [rlo, rhi) and
	// kept (adopted), and copies of frames from elsewhere. put is the
	// allocation point; the oldest live byte is the first frame of the
	// oldest pending packet (flows are allocated in birth order), so
	// flushing the FIFO's head frees the ring's tail.
	arena    []byte
	put      int
	rlo, rhi int // receive region; rhi == 0: none

	flows []flow
	free  []int32
	index []uint64 // open addressing: hash<<32 | slot+1, 0 = empty
	mask  uint32
	seed  uint64
	head  int32
	tail  int32
	last  int32 // most recently looked-up or started slot, or -1
	n     int

	pkt packet
	st  counters
}

// New returns an engine for one receive queue delivering to sink. It
// preallocates MaxFlows buffers of BufferSize bytes.
func New(cfg Config, sink Sink) *Engine {
	e := &Engine{sink: sink, seed: 0x9e3779b97f4a7c15}
	if vs, ok := sink.(VecSink); ok {
		e.vsink = vs
	} else {
		e.lin = make([]byte, BufferSize)
	}
	e.apply(cfg)
	return e
}

func normalize(cfg Config) Config {
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	cfg.MaxFlows = min(cfg.MaxFlows, MaxFlowsLimit)
	cfg.Interval = max(cfg.Interval, 0)
	if cfg.MaxFrame <= 0 || cfg.MaxFrame > BufferSize {
		cfg.MaxFrame = BufferSize
	}
	return cfg
}

func (e *Engine) apply(cfg Config) {
	cfg = normalize(cfg)
	if len(e.flows) != cfg.MaxFlows {
		e.flows = make([]flow, cfg.MaxFlows)
		n := arenaSize(cfg.MaxFlows)
		mem := make([]byte, n+recvAlign-1)
		// Align the arena to a cache line (large allocations are page
		// aligned already; this only guards the assumption).
		a := int(-uintptr(unsafe.Pointer(unsafe.SliceData(mem))) & (recvAlign - 1))
		e.arena = mem[a : a+n : a+n]
		vecs := make([][]byte, cfg.MaxFlows*maxPieces)
		for i := range e.flows {
			e.flows[i].vec = vecs[i*maxPieces : i*maxPieces : (i+1)*maxPieces]
		}
		size := 4
		for size < 4*cfg.MaxFlows {
			size <<= 1
		}
		e.index = make([]uint64, size)
		e.mask = uint32(size - 1)
		e.free = make([]int32, 0, cfg.MaxFlows)
	}
	e.cfg = cfg
	e.maxFrame = cfg.MaxFrame
	e.clear()
}

// clear empties the table without delivering anything.
func (e *Engine) clear() {
	clear(e.index)
	e.free = e.free[:0]
	for i := len(e.flows) - 1; i >= 0; i-- {
		e.free = append(e.free, int32(i))
	}
	e.head, e.tail, e.last, e.n = -1, -1, -1, 0
	e.put, e.rlo, e.rhi = 0, 0, 0
	for i := range e.flows {
		e.flows[i].active = false
	}
}

// Config returns the active configuration (normalized).
func (e *Engine) Config() Config { return e.cfg }

// SetConfig flushes every pending packet under the old configuration and
// then applies cfg (offload change, RSC enable/disable, buffer-size change).
// It returns false, leaving the old configuration active, if the sink
// refused a packet; call it again after the guest posted buffers.
func (e *Engine) SetConfig(cfg Config) bool {
	if !e.FlushAll() {
		return false
	}
	e.apply(cfg)
	return true
}

// Reset discards all pending packets without delivering them (device
// reset): nothing from before the reset reaches the guest afterwards.
func (e *Engine) Reset() {
	e.st.discarded += uint64(e.n)
	e.clear()
}

// Pending returns the number of pending (not yet delivered) packets.
func (e *Engine) Pending() int { return e.n }

// NextDeadline returns when the oldest pending packet reaches Interval, if
// the timer is enabled and a packet is pending.
func (e *Engine) NextDeadline() (time.Duration, bool) {
	if e.n == 0 || e.cfg.Interval <= 0 {
		return 0, false
	}
	return e.flows[e.head].born + e.cfg.Interval, true
}

// Tick flushes the packets whose oldest segment has waited Interval. It
// returns false if the sink refused one (the rest stay pending).
func (e *Engine) Tick(now time.Duration) bool {
	if e.cfg.Interval <= 0 {
		return true
	}
	for e.n > 0 && now-e.flows[e.head].born >= e.cfg.Interval {
		if !e.flush(e.head) {
			return false
		}
		e.st.timer++
	}
	return true
}

// EndBatch is called when the TAP has no more frames (EAGAIN) or a read
// batch ends. It flushes everything if FlushAtBatchEnd is set or Interval is
// 0, otherwise only expired packets. It returns false on back-pressure; the
// caller retries after the guest's next kick before reading the TAP again.
func (e *Engine) EndBatch(now time.Duration) bool {
	if e.cfg.FlushAtBatchEnd || e.cfg.Interval <= 0 {
		for e.n > 0 {
			if !e.flush(e.head) {
				return false
			}
			e.st.batch++
		}
		return true
	}
	return e.Tick(now)
}

// FlushAll delivers every pending packet, oldest first. Call it before an
// offload or feature change, link change or migration. It returns false if
// the sink refused a packet (the rest stay pending).
func (e *Engine) FlushAll() bool {
	for e.n > 0 {
		if !e.flush(e.head) {
			return false
		}
	}
	return true
}

// RecvBuffer returns free space in the engine's arena, at least BufferSize
// bytes, for the caller to read frames into. Frames read into this region
// one after the other and passed to Input in that order (each lying after
// the previous one) are kept where they are, without a copy, until their
// packet is delivered: the caller must not write to a frame it passed to
// Input, nor to the region before it, afterwards. The engine does not write
// to the region. A frame Input refused stays where it is and is passed
// again. The region is valid until the next RecvBuffer, SetConfig or Reset
// call, or an Input of a frame from outside it (the engine may then copy
// into the space); frames read into it later are copied like any other.
//
// RecvBuffer may flush the oldest pending packets (counted as evictions) to
// make room. It returns nil if the sink refused one (back-pressure): the
// caller stops reading and calls it again after the guest posted buffers.
func (e *Engine) RecvBuffer() []byte {
	// Fast path: the rest of the current region is still large enough
	// (flushes only free space, so it is still free).
	if lo := (e.rlo + recvAlign - 1) &^ (recvAlign - 1); e.n > 0 && e.rhi-lo >= BufferSize {
		e.rlo = lo
		return e.arena[lo:e.rhi:e.rhi]
	}
	return e.recvBuffer()
}

func (e *Engine) recvBuffer() []byte {
	// Nothing pending: start over at the beginning (the hot part of the
	// arena stays small).
	if e.n == 0 {
		e.rlo, e.rhi = 0, len(e.arena)
		return e.arena
	}
	for {
		if lo, hi, ok := e.recvRun(); ok {
			e.rlo, e.rhi = lo, hi
			return e.arena[lo:hi:hi]
		}
		if !e.flush(e.head) {
			return nil
		}
		e.st.evictions++
	}
}

// recvRun returns the free run of the arena for the receive region, if one
// of at least BufferSize bytes exists.
func (e *Engine) recvRun() (lo, hi int, ok bool) {
	if e.n == 0 {
		return 0, len(e.arena), true
	}
	t := e.flows[e.head].first
	lo = min((e.put+recvAlign-1)&^(recvAlign-1), len(e.arena))
	switch {
	case e.put < t: // wrapped: live [t, end) and [0, put)
		hi = t - 1
	case len(e.arena)-lo >= BufferSize:
		hi = len(e.arena)
	default:
		lo, hi = 0, t-1
	}
	return lo, hi, hi-lo >= BufferSize
}

// owns reports whether b lies in the receive region after everything
// adopted so far, and returns its arena offset.
func (e *Engine) owns(b []byte) (int, bool) {
	if e.rhi == 0 || len(b) == 0 {
		return 0, false
	}
	d := uintptr(unsafe.Pointer(unsafe.SliceData(b))) - uintptr(unsafe.Pointer(unsafe.SliceData(e.arena)))
	if d < uintptr(e.rlo) || d >= uintptr(e.rhi) || uintptr(len(b)) > uintptr(e.rhi)-d {
		return 0, false
	}
	return int(d), true
}

// adopt keeps the region's frame at arena offset off of n bytes: the
// allocation point and the region's start move past it.
func (e *Engine) adopt(off, n int) {
	e.put = off + n
	e.rlo = e.put
}

// fit returns where n contiguous bytes can be allocated without flushing.
func (e *Engine) fit(n int) (int, bool) {
	if e.n == 0 {
		return 0, true
	}
	t := e.flows[e.head].first
	switch {
	case e.put < t: // wrapped
		return e.put, t-1-e.put >= n
	case len(e.arena)-e.put >= n:
		return e.put, true
	default:
		return 0, t-1 >= n
	}
}

// makeRoom ensures that n bytes can be copied into the arena, flushing the
// oldest pending packets if needed. The receive region is given up (the
// copy may reuse it). It returns false if the sink refused a packet.
func (e *Engine) makeRoom(n int) bool {
	e.rlo, e.rhi = 0, 0
	for {
		if _, ok := e.fit(n); ok {
			return true
		}
		if !e.flush(e.head) {
			return false
		}
		e.st.evictions++
	}
}

// alloc allocates n bytes (makeRoom(n) succeeded) and returns their offset.
func (e *Engine) alloc(n int) int {
	off, _ := e.fit(n)
	e.put = off + n
	return off
}

// Input processes one frame at virtual time now. It returns false if the
// frame was not accepted because the sink refused a packet (guest ring
// full): the caller keeps the frame, stops reading the TAP and calls Input
// again with the same frame after the guest posted buffers. When Input
// returns true the frame was delivered, merged or cached.
func (e *Engine) Input(now time.Duration, f Frame) bool {
	if e.n > 0 && e.cfg.Interval > 0 && now-e.flows[e.head].born >= e.cfg.Interval {
		if !e.Tick(now) {
			return false
		}
	}
	if !e.cfg.IPv4 && !e.cfg.IPv6 {
		return e.passthrough(f, reasonNotIP)
	}
	p := &e.pkt
	e.parse(&f, p)
	switch p.class {
	case classOther:
		return e.passthrough(f, p.reason)
	case classAddrOnly:
		if !e.flushAddr(p.key) {
			return false
		}
		return e.passthrough(f, p.reason)
	}

	own, owned := e.owns(f.Data)
	if !owned && p.reason == reasonNone && !p.pure && len(f.Data) <= BufferSize {
		// The segment may be kept: a copy of it must fit the arena.
		if !e.makeRoom(len(f.Data)) {
			return false
		}
	}
	slot := e.lookup(p)
	if p.reason != reasonNone {
		return e.exception(slot, f, p.reason)
	}
	if p.pure {
		if slot < 0 {
			return e.passthrough(f, reasonPureACK)
		}
		fl := &e.flows[slot]
		r := e.pureACKReason(fl, p, f.Data)
		if r == reasonNone {
			e.windowUpdate(fl, p)
			return true
		}
		return e.exception(slot, f, r)
	}
	if slot >= 0 {
		fl := &e.flows[slot]
		r := e.mergeReason(fl, p, f.Data)
		if r == reasonNone && len(fl.vec) == maxPieces && !e.extends(fl, p, owned) {
			r = reasonOverSize
		}
		if r == reasonNone {
			e.merge(fl, p, f.Data, own, owned)
			return true
		}
		if !e.cacheable(p, &f) {
			return e.exception(slot, f, r)
		}
		// Exception: deliver what is pending, then resume coalescing with
		// this segment (MS rules 7 and 8).
		if !e.flush(slot) {
			return false
		}
		e.st.reasons[r]++
		if r != reasonOverSize {
			e.st.aborts++
		}
	} else if !e.cacheable(p, &f) {
		return e.passthrough(f, reasonTooLarge)
	}
	if e.n == len(e.flows) {
		if !e.flush(e.head) {
			return false
		}
		e.st.evictions++
	}
	e.start(now, p, &f, own, owned)
	return true
}

// cacheable reports whether data segment p (frame f) can start a pending
// packet: it must fit the buffer as received and leave room for at least
// one more segment; otherwise it goes alone.
func (e *Engine) cacheable(p *packet, f *Frame) bool {
	return len(f.Data) <= BufferSize && p.l2+p.ipLen < e.maxFrame && p.ipLen < MaxIPDatagram
}

// passthrough delivers f unchanged and counts why it was not coalesced.
func (e *Engine) passthrough(f Frame, r reason) bool {
	if !e.sink.Deliver(f.Hdr, f.Data) {
		e.st.ringFull++
		return false
	}
	e.st.frames++
	e.st.delivered++
	e.st.passthrough++
	e.st.reasons[r]++
	return true
}

// exception flushes the flow's pending packet (if any) and delivers f alone.
func (e *Engine) exception(slot int32, f Frame, r reason) bool {
	if slot >= 0 {
		if !e.flush(slot) {
			return false
		}
		if r != reasonOverSize {
			e.st.aborts++
		}
	}
	return e.passthrough(f, r)
}

// parse classifies f into p with full bounds checks.
func (e *Engine) parse(f *Frame, p *packet) {
	*p = packet{}
	b := f.Data
	if len(b) < header.EthernetMinSize {
		p.reason = reasonNotIP
		return
	}
	et := binary.BigEndian.Uint16(b[12:14])
	l2 := header.EthernetMinSize
	if et == header.EtherTypeVLAN {
		if len(b) < l2+header.VLANTagSize {
			p.reason = reasonNotIP
			return
		}
		p.key.meta = metaTagged | uint32(binary.BigEndian.Uint16(b[14:16])&0x0fff)
		et = binary.BigEndian.Uint16(b[16:18])
		l2 += header.VLANTagSize
	}
	p.l2 = l2
	ipb := b[l2:]
	switch {
	case et == header.EtherTypeIPv4 && e.cfg.IPv4:
		e.parseIPv4(f, ipb, p)
	case et == header.EtherTypeIPv6 && e.cfg.IPv6:
		e.parseIPv6(f, ipb, p)
	default:
		p.reason = reasonNotIP
		return
	}
	if p.class != classFlow || p.reason != reasonNone {
		return
	}
	e.parseTCP(f, ipb[p.l3:p.ipLen], p)
}

func (e *Engine) parseIPv4(f *Frame, ipb []byte, p *packet) {
	if len(ipb) < header.IPv4MinSize || ipb[0]>>4 != header.IPv4Version {
		p.reason = reasonIPHacked
		return
	}
	ip := header.IPv4(ipb)
	if ip.Protocol() != header.ProtocolTCP {
		p.reason = reasonNotTCP
		return
	}
	p.class = classAddrOnly
	p.key.addr[0] = binary.BigEndian.Uint64(ipb[12:20])
	hl := ip.HeaderLen()
	ff := ip.FlagsFragment()
	switch {
	case ff&header.IPv4FragOffsetMask != 0:
		p.reason = reasonIPFrag
		return
	case hl < header.IPv4MinSize || hl+4 > len(ipb):
		p.reason = reasonIPHacked
		return
	}
	p.class = classFlow
	p.key.ports = binary.BigEndian.Uint32(ipb[hl : hl+4])
	tl := int(ip.TotalLength())
	switch {
	case tl < hl+header.TCPMinSize || tl > len(ipb):
		p.reason = reasonIPHacked
	case hl != header.IPv4MinSize:
		p.reason = reasonIPOption
	case ff&header.IPv4FlagMF != 0:
		p.reason = reasonIPFrag
	case ipv4HeaderSum(ipb) != 0xffff:
		p.reason = reasonChecksum
	}
	p.l3 = hl
	p.ipLen = tl
	p.ttl = ip.TTL()
	p.tos = ip.TOS()
	p.df = ff&header.IPv4FlagDF != 0
}

func (e *Engine) parseIPv6(f *Frame, ipb []byte, p *packet) {
	if len(ipb) < header.IPv6MinSize || ipb[0]>>4 != header.IPv6Version {
		p.reason = reasonIPHacked
		return
	}
	ip := header.IPv6(ipb)
	nh := ip.NextHeader()
	off := header.IPv6MinSize
	if nh != header.ProtocolTCP {
		if !header.IsIPv6ExtensionHeader(nh) {
			p.reason = reasonNotTCP
			return
		}
		proto, o, ok := ip.TransportHeader()
		if ok && proto != header.ProtocolTCP {
			p.reason = reasonNotTCP
			return
		}
		p.reason = reasonIPOption
		if !ok {
			off = -1
		} else {
			off = o
		}
	}
	p.v6 = true
	p.key.meta |= metaIPv6
	for i := range 4 {
		p.key.addr[i] = binary.BigEndian.Uint64(ipb[8+8*i : 16+8*i])
	}
	p.class = classAddrOnly
	if off < 0 || off+4 > len(ipb) {
		if p.reason == reasonNone {
			p.reason = reasonIPHacked
		}
		return
	}
	p.class = classFlow
	p.key.ports = binary.BigEndian.Uint32(ipb[off : off+4])
	if p.reason != reasonNone {
		return
	}
	pl := int(ip.PayloadLength())
	if pl < header.TCPMinSize || header.IPv6MinSize+pl > len(ipb) {
		p.reason = reasonIPHacked
		return
	}
	p.l3 = header.IPv6MinSize
	p.ipLen = header.IPv6MinSize + pl
	p.ttl = ip.HopLimit()
	p.tos = ip.TrafficClass()
	p.label = ip.FlowLabel()
}

// parseTCP checks the TCP header of a frame whose IP layer is coalescable;
// seg is the TCP segment (header and payload).
func (e *Engine) parseTCP(f *Frame, seg []byte, p *packet) {
	tcp := header.TCP(seg)
	l4 := tcp.DataOffset()
	if l4 < header.TCPMinSize || l4 > len(seg) {
		p.reason = reasonIPHacked
		return
	}
	p.l4 = l4
	p.pay = len(seg) - l4
	p.pure = p.pay == 0
	p.seq = tcp.Seq()
	p.ack = tcp.Ack()
	p.win = tcp.Window()
	fl := tcp.Flags()
	p.flags = fl
	switch {
	case fl&header.TCPFlagSYN != 0:
		p.reason = reasonTCPSyn
		return
	case fl&(header.TCPFlagFIN|header.TCPFlagRST|header.TCPFlagURG) != 0 || fl&header.TCPFlagACK == 0:
		p.reason = reasonTCPCtrl
		return
	case l4 != header.TCPMinSize && !(e.cfg.Timestamps && header.TCPOptionsTimestampOnly(seg[header.TCPMinSize:l4])):
		p.reason = reasonTCPOption
		return
	case fl&header.TCPFlagCWR != 0 && !e.cfg.GuestECN:
		p.reason = reasonTCPECN
		return
	case f.Hdr.GSOType != header.VirtioNetHdrGSONone ||
		f.Hdr.Flags&^(header.VirtioNetHdrFNeedsCsum|header.VirtioNetHdrFDataValid) != 0:
		p.reason = reasonHostGSO
		return
	}
	p.sig = p.signature()
	switch {
	case f.Hdr.Flags&header.VirtioNetHdrFDataValid != 0:
	case f.Hdr.Flags&header.VirtioNetHdrFNeedsCsum != 0:
		if int(f.Hdr.CsumStart) != p.l2+p.l3 || f.Hdr.CsumOffset != header.TCPChecksumOffset {
			p.reason = reasonHostGSO
		}
	default:
		ipb := f.Data[p.l2:]
		var ps uint16
		if p.v6 {
			ps = pseudoSum(ipb, true, uint32(len(seg)))
		} else {
			ps = pseudoSum(ipb, false, uint32(len(seg)))
		}
		if header.Sum(seg, ps) != 0xffff {
			p.reason = reasonChecksum
		}
	}
}

// signature packs the fields every segment of a pending packet must share
// (TOS / traffic class, DF, flow label, header lengths) with the flags
// that need a closer look (CWR, ECE), so that the common case compares one
// word.
func (p *packet) signature() uint64 {
	s := uint64(p.tos) | uint64(p.l4)<<8 | uint64(p.l2)<<16 | uint64(p.label)<<24 |
		uint64(p.flags&(header.TCPFlagCWR|header.TCPFlagECE))<<56
	if p.df {
		s |= 1 << 52
	}
	return s
}

// consistent checks the per-packet invariants shared by data segments and
// window updates: IP fields, ECE/CWR, TCP options and the Ethernet header.
func (e *Engine) consistent(fl *flow, p *packet, data []byte) reason {
	// fl.sig has CWR clear (a CWR segment only starts a packet with
	// GuestECN, and then the packet's flags keep it: compare explicitly).
	if p.sig != fl.sig&^(uint64(header.TCPFlagCWR)<<56) {
		return e.inconsistent(fl, p)
	}
	switch {
	case !sameL2(data, fl.vec[0], p.l2):
		return reasonMismatch
	case p.l4 != header.TCPMinSize:
		o := p.l2 + p.l3 + header.TCPMinSize
		if !bytes.Equal(data[o:o+p.l4-header.TCPMinSize], fl.vec[0][o:o+fl.l4-header.TCPMinSize]) {
			return reasonTimestamp
		}
	}
	return reasonNone
}

// inconsistent returns why p's signature differs from fl's, in the order
// of precedence of the reasons.
func (e *Engine) inconsistent(fl *flow, p *packet) reason {
	switch {
	case p.flags&header.TCPFlagCWR != 0 || (p.flags^fl.flags)&header.TCPFlagECE != 0:
		return reasonTCPECN
	case (p.tos^fl.tos)&header.ECNMask != 0:
		return reasonIPECN
	}
	// TOS / traffic class, DF, flow label or header lengths.
	return reasonMismatch
}

// sameL2 compares the Ethernet headers (14 or 18 bytes) of a and b.
func sameL2(a, b []byte, l2 int) bool {
	_, _ = a[13], b[13]
	if binary.LittleEndian.Uint64(a[0:8]) != binary.LittleEndian.Uint64(b[0:8]) ||
		binary.LittleEndian.Uint32(a[8:12]) != binary.LittleEndian.Uint32(b[8:12]) ||
		binary.LittleEndian.Uint16(a[12:14]) != binary.LittleEndian.Uint16(b[12:14]) {
		return false
	}
	return l2 == header.EthernetMinSize || binary.LittleEndian.Uint32(a[14:18]) == binary.LittleEndian.Uint32(b[14:18])
}

// mergeReason returns why data segment p cannot be appended to fl, or
// reasonNone.
func (e *Engine) mergeReason(fl *flow, p *packet, data []byte) reason {
	switch {
	case p.seq != fl.nxt:
		if header.SequenceLess(p.seq, fl.nxt) {
			return reasonDataOutOfWin
		}
		return reasonDataOutOfOrder
	case header.SequenceLess(p.ack, fl.ack):
		return reasonAckOutOfWin
	}
	if r := e.consistent(fl, p, data); r != reasonNone {
		return r
	}
	if fl.ipLen+p.pay > fl.limit {
		return reasonOverSize
	}
	return reasonNone
}

// pureACKReason returns reasonNone if pure ACK p is a window update that can
// be absorbed into fl, else the reason it must be delivered alone.
func (e *Engine) pureACKReason(fl *flow, p *packet, data []byte) reason {
	switch {
	case header.SequenceLess(p.ack, fl.ack):
		return reasonAckOutOfWin
	case p.ack != fl.ack:
		return reasonPureACK
	case p.seq != fl.nxt:
		return reasonPureACK
	case p.win == fl.win:
		return reasonDupACK
	case p.win < fl.win:
		return reasonPureACK
	}
	return e.consistent(fl, p, data)
}

// ensureMerged trims the pending frame to its IP length before the first
// modification.
func (fl *flow) ensureMerged() {
	if !fl.merged {
		fl.merged = true
		n := fl.l2 + fl.ipLen
		fl.vec[0] = fl.vec[0][:n:n]
		fl.end = fl.first + n
	}
}

func (e *Engine) windowUpdate(fl *flow, p *packet) {
	fl.ensureMerged()
	fl.win = p.win
	fl.flags |= p.flags & header.TCPFlagPSH
	fl.ttl = min(fl.ttl, p.ttl)
	e.st.frames++
	e.st.winUpdate++
}

// extends reports whether p's payload, copied, would directly follow fl's
// last piece (a copy lands at the allocation point), so that it needs no
// new piece.
func (e *Engine) extends(fl *flow, p *packet, owned bool) bool {
	if owned {
		return false
	}
	off, ok := e.fit(p.pay)
	return ok && off == fl.end && fl.merged
}

// merge appends data segment p (frame data) to fl: a frame in the receive
// region is adopted and its payload becomes a piece; otherwise the payload
// is copied into the arena, extending the last piece when it follows it.
func (e *Engine) merge(fl *flow, p *packet, data []byte, own int, owned bool) {
	fl.ensureMerged()
	start := p.l2 + p.l3 + p.l4
	n := p.pay
	var off int
	if owned {
		e.adopt(own, len(data))
		off = own + start
	} else {
		off = e.alloc(n)
		copy(e.arena[off:off+n], data[start:start+n])
		e.st.copied++
	}
	if last := len(fl.vec) - 1; off == fl.end && !owned {
		s := fl.end - len(fl.vec[last])
		fl.vec[last] = e.arena[s : off+n : off+n]
	} else {
		fl.vec = append(fl.vec, e.arena[off:off+n:off+n])
	}
	fl.end = off + n
	fl.ipLen += n
	fl.payload += n
	fl.segs++
	fl.mss = max(fl.mss, n)
	fl.nxt += uint32(n)
	fl.ack = p.ack
	fl.win = p.win
	fl.flags |= p.flags & header.TCPFlagPSH
	fl.ttl = min(fl.ttl, p.ttl)
	e.st.frames++
	e.st.coalesced++
}

// start caches data segment p as a new pending packet: a frame in the
// receive region is adopted, any other is copied into the arena.
func (e *Engine) start(now time.Duration, p *packet, f *Frame, own int, owned bool) {
	i := e.free[len(e.free)-1]
	e.free = e.free[:len(e.free)-1]
	fl := &e.flows[i]
	fl.key = p.key
	fl.hash = p.hash
	fl.born = now
	n := len(f.Data)
	if owned {
		e.adopt(own, n)
		fl.first = own
	} else {
		fl.first = e.alloc(n)
		copy(e.arena[fl.first:fl.first+n], f.Data)
		e.st.copied++
	}
	fl.end = fl.first + n
	fl.vec = append(fl.vec[:0], e.arena[fl.first:fl.end:fl.end])
	fl.origLen = n
	fl.hdr = f.Hdr
	fl.merged = false
	fl.l2, fl.l3, fl.l4 = p.l2, p.l3, p.l4
	fl.ipLen = p.ipLen
	fl.limit = min(MaxIPDatagram, e.maxFrame-p.l2)
	fl.sig = p.sig
	fl.segs = 1
	fl.payload = p.pay
	fl.mss = p.pay
	fl.nxt = p.seq + uint32(p.pay)
	fl.ack = p.ack
	fl.win = p.win
	fl.flags = p.flags
	fl.ttl = p.ttl
	fl.tos = p.tos
	fl.v6 = p.v6
	fl.df = p.df
	fl.label = p.label
	e.insert(i)
	fl.active = true
	e.last = i
	if e.n == 0 {
		e.st.emptyCache++
	} else {
		e.st.noMatchCache++
	}
	// Append to the FIFO.
	fl.prev, fl.next = e.tail, -1
	if e.tail >= 0 {
		e.flows[e.tail].next = i
	} else {
		e.head = i
	}
	e.tail = i
	e.n++
	e.st.frames++
	e.st.cache++
}

// flush delivers the pending packet in slot i and frees the slot. It
// returns false, keeping the packet, if the sink refused it.
func (e *Engine) flush(i int32) bool {
	fl := &e.flows[i]
	if !fl.merged {
		if !e.sink.Deliver(fl.hdr, fl.vec[0]) {
			e.st.ringFull++
			return false
		}
		e.st.singles++
	} else {
		hdr := e.finalize(fl)
		if !e.deliverVec(hdr, fl.vec) {
			e.st.ringFull++
			return false
		}
		e.st.events++
		e.st.segments += uint64(fl.segs)
		e.st.bytes += uint64(fl.payload)
	}
	e.st.delivered++
	e.remove(i)
	return true
}

// deliverVec hands a packet in pieces to the sink: contiguous packets
// through Deliver, others through DeliverVec, or linearized for a plain
// Sink.
func (e *Engine) deliverVec(hdr header.VirtioNetHdr, vec [][]byte) bool {
	if len(vec) == 1 {
		return e.sink.Deliver(hdr, vec[0])
	}
	if e.vsink != nil {
		return e.vsink.DeliverVec(hdr, vec)
	}
	n := 0
	for _, b := range vec {
		n += copy(e.lin[n:], b)
	}
	return e.sink.Deliver(hdr, e.lin[:n])
}

// finalize rewrites the headers of a merged packet and returns its
// virtio-net header. It is idempotent (a refused delivery is retried).
func (e *Engine) finalize(fl *flow) header.VirtioNetHdr {
	ipb := fl.vec[0][fl.l2:]
	seg := ipb[fl.l3:] // TCP header and the first payload
	segLen := uint32(fl.ipLen - fl.l3)
	tcp := header.TCP(seg)
	tcp.SetAck(fl.ack)
	tcp.SetWindow(fl.win)
	tcp.SetFlags(fl.flags)
	var ps uint16
	gso := uint8(header.VirtioNetHdrGSOTCPv4)
	if fl.v6 {
		ip := header.IPv6(ipb)
		ip.SetPayloadLength(uint16(fl.ipLen - header.IPv6MinSize))
		ip.SetHopLimit(fl.ttl)
		ps = pseudoSum(ipb, true, segLen)
		gso = header.VirtioNetHdrGSOTCPv6
	} else {
		ip := header.IPv4(ipb)
		ip.SetTotalLength(uint16(fl.ipLen))
		ip.SetTTL(fl.ttl)
		ip.SetChecksum(0)
		ip.SetChecksum(^ipv4HeaderSum(ipb))
		ps = pseudoSum(ipb, false, segLen)
	}
	if fl.flags&header.TCPFlagCWR != 0 {
		gso |= header.VirtioNetHdrGSOECN
	}
	h := header.VirtioNetHdr{
		GSOType: gso,
		HdrLen:  uint16(fl.l2 + fl.l3 + fl.l4),
		GSOSize: uint16(fl.mss),
	}
	switch {
	case e.cfg.GSOMode:
		tcp.SetChecksum(ps)
		h.Flags = header.VirtioNetHdrFNeedsCsum
		h.CsumStart = uint16(fl.l2 + fl.l3)
		h.CsumOffset = header.TCPChecksumOffset
	case e.cfg.CompatChecksum:
		tcp.SetChecksum(0)
		tcp.SetChecksum(^sumVec(seg, fl.vec[1:], ps))
		h.Flags = header.VirtioNetHdrFRSCInfo
		h.CsumStart = uint16(fl.segs)
	default:
		tcp.SetChecksum(ps)
		h.Flags = header.VirtioNetHdrFNeedsCsum | header.VirtioNetHdrFRSCInfo
		h.CsumStart = uint16(fl.segs)
	}
	return h
}

// flushAddr flushes every pending packet whose addresses, family and VLAN
// match k (ports ignored), oldest first.
func (e *Engine) flushAddr(k flowKey) bool {
	for i := e.head; i >= 0; {
		fl := &e.flows[i]
		next := fl.next
		if fl.key.addr == k.addr && fl.key.meta == k.meta {
			if !e.flush(i) {
				return false
			}
			e.st.aborts++
		}
		i = next
	}
	return true
}

func (e *Engine) hashKey(k *flowKey) uint32 {
	const m = 0xff51afd7ed558ccd
	// Independent products (they run in parallel), then a final mix.
	h := (k.addr[0]^e.seed)*m ^ (k.addr[1]^e.seed)*(m+2) ^ (k.addr[2]^e.seed)*(m+4) ^
		(k.addr[3]^e.seed)*(m+6) ^ (uint64(k.ports)|uint64(k.meta)<<32^e.seed)*(m+8)
	h ^= h >> 29
	h *= 0xc4ceb9fe1a85ec53
	return uint32(h >> 32)
}

// sameKey compares two flow keys field by field (inlined, no memequal call).
func sameKey(a, b *flowKey) bool {
	return (a.addr[0]^b.addr[0])|(a.addr[1]^b.addr[1])|(a.addr[2]^b.addr[2])|(a.addr[3]^b.addr[3])|
		uint64(a.ports^b.ports)|uint64(a.meta^b.meta) == 0
}

// lookup returns the slot holding p's key, or -1, and leaves the key's hash
// in p.hash (start reuses it). The most recently used slot is tried first
// (bursts of one flow skip the hash); index entries carry the hash, so a
// probe only reads a flow whose hash matches.
func (e *Engine) lookup(p *packet) int32 {
	k := &p.key
	// (Ports first: interleaved flows usually differ there, and fail fast.)
	if l := e.last; l >= 0 && e.flows[l].key.ports == k.ports && e.flows[l].active && sameKey(&e.flows[l].key, k) {
		p.hash = e.flows[l].hash
		return l
	}
	h := e.hashKey(k)
	p.hash = h
	if e.n == 0 {
		return -1
	}
	for pos := h & e.mask; ; pos = (pos + 1) & e.mask {
		v := e.index[pos]
		if v == 0 {
			return -1
		}
		if uint32(v>>32) == h {
			s := int32(uint32(v)) - 1
			if sameKey(&e.flows[s].key, k) {
				e.last = s
				return s
			}
		}
	}
}

func (e *Engine) insert(i int32) {
	h := e.flows[i].hash
	pos := h & e.mask
	for e.index[pos] != 0 {
		pos = (pos + 1) & e.mask
	}
	e.index[pos] = uint64(h)<<32 | uint64(i+1)
}

// remove unlinks slot i from the index and the FIFO and frees it.
func (e *Engine) remove(i int32) {
	fl := &e.flows[i]
	pos := fl.hash & e.mask
	for uint32(e.index[pos]) != uint32(i+1) {
		pos = (pos + 1) & e.mask
	}
	// Backward-shift deletion keeps probe sequences intact.
	for {
		e.index[pos] = 0
		next := pos
		for {
			next = (next + 1) & e.mask
			v := e.index[next]
			if v == 0 {
				goto unlinked
			}
			home := uint32(v>>32) & e.mask
			// Move v into the hole if its home is not in (pos, next].
			if (next-home)&e.mask >= (next-pos)&e.mask {
				e.index[pos] = v
				pos = next
				break
			}
		}
	}
unlinked:
	if fl.prev >= 0 {
		e.flows[fl.prev].next = fl.next
	} else {
		e.head = fl.next
	}
	if fl.next >= 0 {
		e.flows[fl.next].prev = fl.prev
	} else {
		e.tail = fl.prev
	}
	e.n--
	fl.active = false
	e.free = append(e.free, i)
}

// sumVec returns the one's-complement sum of first followed by the pieces
// of rest, added to initial (a piece at an odd offset contributes its
// byte-swapped sum).
func sumVec(first []byte, rest [][]byte, initial uint16) uint16 {
	s := header.Sum(first, initial)
	odd := len(first)&1 != 0
	for _, b := range rest {
		ps := header.Sum(b, 0)
		if odd {
			ps = bits.ReverseBytes16(ps)
		}
		s = header.CombineSums(s, ps)
		odd = odd != (len(b)&1 != 0)
	}
	return s
}

// pseudoSum returns the TCP pseudo-header sum (header.PseudoHeaderSum) for
// the IPv4 or IPv6 header at the start of ipb (bounds checked by the
// caller's parse) and a segment of n bytes, with whole-word loads.
func pseudoSum(ipb []byte, v6 bool, n uint32) uint16 {
	acc := uint64(header.ProtocolTCP) + uint64(n)
	if v6 {
		_ = ipb[39]
		for i := 8; i < 40; i += 8 {
			w := binary.BigEndian.Uint64(ipb[i : i+8])
			acc += w>>32 + w&0xffffffff
		}
	} else {
		w := binary.BigEndian.Uint64(ipb[12:20])
		acc += w>>32 + w&0xffffffff
	}
	// Fold: 2^16 ≡ 1 in one's-complement arithmetic.
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return uint16(acc>>16 + acc&0xffff)
}

// ipv4HeaderSum is header.SumIPv4Header with three loads (inlined).
func ipv4HeaderSum(b []byte) uint16 {
	_ = b[19]
	w0, w1 := binary.BigEndian.Uint64(b[0:8]), binary.BigEndian.Uint64(b[8:16])
	acc := w0>>32 + w0&0xffffffff + w1>>32 + w1&0xffffffff + uint64(binary.BigEndian.Uint32(b[16:20]))
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return uint16(acc>>16 + acc&0xffff)
}

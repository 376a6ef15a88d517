package rsc

// reason says why a frame was not coalesced (or why it ended its flow's
// pending packet).
type reason uint8

const (
	reasonNone           reason = iota
	reasonNotIP                 // not IPv4/IPv6 of an enabled family, QinQ, runt
	reasonNotTCP                // IP but not TCP
	reasonIPHacked              // bogus or truncated lengths/version/data offset
	reasonIPOption              // IPv4 options or IPv6 extension headers
	reasonIPFrag                // IPv4 fragment
	reasonChecksum              // bad IPv4 header or TCP checksum
	reasonHostGSO               // TAP GSO packet or unusual virtio-net header
	reasonTCPSyn                // SYN
	reasonTCPCtrl               // FIN, RST, URG, or ACK missing
	reasonTCPOption             // TCP options other than an allowed timestamp
	reasonTCPECN                // CWR, or ECE differing from the pending packet
	reasonIPECN                 // IP ECN codepoint differing from the pending packet
	reasonMismatch              // TOS/DSCP, DF, flow label or Ethernet header changed
	reasonTimestamp             // timestamp option differs from the pending packet
	reasonPureACK               // cumulative (or other non-mergeable) pure ACK
	reasonDupACK                // duplicate ACK
	reasonAckOutOfWin           // ACK number went backwards
	reasonDataOutOfWin          // old data: retransmission or overlap
	reasonDataOutOfOrder        // gap
	reasonOverSize              // packet would exceed 65535 bytes or MaxFrame
	reasonTooLarge              // frame cannot be held (trailing bytes) or cannot grow
	numReasons
)

// counters is the engine's internal statistics block.
type counters struct {
	frames, delivered, passthrough, singles uint64
	coalesced, cache, emptyCache            uint64
	noMatchCache, winUpdate                 uint64
	events, segments, bytes, aborts         uint64
	evictions, timer, batch, ringFull       uint64
	discarded, copied                       uint64
	reasons                                 [numReasons]uint64
}

// Stats are the engine's counters. Fields named after QEMU's
// VirtioNetRscStat counters (hw/net/virtio-net.c) carry the same meaning
// where our behaviour matches; the others follow Microsoft's RSC
// statistics (coalesced packets/octets/events/aborts) or are ours.
type Stats struct {
	// Frames is the number of input frames accepted (each counted once).
	Frames uint64
	// Received is the number of accepted IPv4/IPv6 frames of an enabled
	// family (QEMU "received").
	Received uint64
	// Coalesced counts data segments appended to a pending packet (QEMU
	// "coalesced"): 10 contiguous segments give 9.
	Coalesced uint64
	// Cache counts pending packets started (QEMU "cache"); EmptyCache those
	// started with an empty table, NoMatchCache those started while other
	// flows were pending.
	Cache, EmptyCache, NoMatchCache uint64
	// WinUpdate counts window updates absorbed into a pending packet.
	WinUpdate uint64

	// Per-reason counts of frames that were not coalesced, or that ended
	// their flow's pending packet and started a new one. QEMU names.
	BypassNotTCP   uint64 // IP, not TCP
	IPHacked       uint64 // bogus/truncated lengths, version or data offset
	IPOption       uint64 // IPv4 options, IPv6 extension headers
	IPFrag         uint64 // IPv4 fragments
	IPECN          uint64 // IP ECN codepoint changed
	TCPSyn         uint64 // SYN
	TCPCtrlDrain   uint64 // FIN, RST, URG, or no ACK
	TCPAllOpt      uint64 // TCP options not coalescable
	DupAck         uint64 // duplicate ACKs
	PureAck        uint64 // other pure ACKs
	AckOutOfWin    uint64 // ACK went backwards
	DataOutOfWin   uint64 // retransmission or overlap
	DataOutOfOrder uint64 // sequence gap
	OverSize       uint64 // size limit reached (coalescing resumed)
	// Per-reason counts without a QEMU equivalent.
	BypassNotIP uint64 // not IPv4/IPv6 of an enabled family, runts, QinQ
	BadChecksum uint64 // invalid IPv4 header or TCP checksum (delivered alone)
	HostGSO     uint64 // TAP GSO packets and unusual virtio-net headers
	TCPECN      uint64 // CWR/ECE exceptions
	Mismatch    uint64 // TOS/DSCP, DF, flow label or Ethernet header changed
	Timestamp   uint64 // timestamp option changed
	TooLarge    uint64 // frame could not be held (trailing bytes) or grow

	// Timer counts packets flushed because they reached Interval (QEMU
	// "timer"); Batch those flushed at the end of a read batch.
	Timer, Batch uint64
	// DrainFailed counts refused deliveries (QEMU drain_failed /
	// purge_failed / final_failed, which lose data; we keep the packet and
	// retry).
	DrainFailed uint64

	// CoalesceEvents counts coalesced packets delivered; CoalescedSegments
	// their data segments and CoalescedBytes their TCP payload bytes
	// (Microsoft CoalesceEvents / CoalescedPkts / CoalescedOctets).
	CoalesceEvents, CoalescedSegments, CoalescedBytes uint64
	// Aborts counts pending packets ended by an exception other than the
	// size limit (Microsoft Aborts).
	Aborts uint64
	// Evictions counts pending packets flushed to make room for a new flow.
	Evictions uint64
	// Delivered counts packets handed to the sink; Passthrough those that
	// were never held, Singles held packets delivered unmodified.
	Delivered, Passthrough, Singles uint64
	// Discarded counts pending packets dropped by Reset.
	Discarded uint64
	// Copied counts kept segments the engine copied into its arena because
	// they were not read into its receive region (RecvBuffer).
	Copied uint64
	// Pending is the number of pending packets now.
	Pending int
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	c := &e.st
	r := &c.reasons
	return Stats{
		Frames:       c.frames,
		Received:     c.frames - r[reasonNotIP],
		Coalesced:    c.coalesced,
		Cache:        c.cache,
		EmptyCache:   c.emptyCache,
		NoMatchCache: c.noMatchCache,
		WinUpdate:    c.winUpdate,

		BypassNotTCP:   r[reasonNotTCP],
		IPHacked:       r[reasonIPHacked],
		IPOption:       r[reasonIPOption],
		IPFrag:         r[reasonIPFrag],
		IPECN:          r[reasonIPECN],
		TCPSyn:         r[reasonTCPSyn],
		TCPCtrlDrain:   r[reasonTCPCtrl],
		TCPAllOpt:      r[reasonTCPOption],
		DupAck:         r[reasonDupACK],
		PureAck:        r[reasonPureACK],
		AckOutOfWin:    r[reasonAckOutOfWin],
		DataOutOfWin:   r[reasonDataOutOfWin],
		DataOutOfOrder: r[reasonDataOutOfOrder],
		OverSize:       r[reasonOverSize],
		BypassNotIP:    r[reasonNotIP],
		BadChecksum:    r[reasonChecksum],
		HostGSO:        r[reasonHostGSO],
		TCPECN:         r[reasonTCPECN],
		Mismatch:       r[reasonMismatch],
		Timestamp:      r[reasonTimestamp],
		TooLarge:       r[reasonTooLarge],

		Timer:             c.timer,
		Batch:             c.batch,
		DrainFailed:       c.ringFull,
		CoalesceEvents:    c.events,
		CoalescedSegments: c.segments,
		CoalescedBytes:    c.bytes,
		Aborts:            c.aborts,
		Evictions:         c.evictions,
		Delivered:         c.delivered,
		Passthrough:       c.passthrough,
		Singles:           c.singles,
		Discarded:         c.discarded,
		Copied:            c.copied,
		Pending:           e.n,
	}
}

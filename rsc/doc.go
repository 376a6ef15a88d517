// Package rsc implements receive segment coalescing (RSC) for a virtio-net
// device: TCP segments read from a TAP are merged into larger packets before
// they are placed in the guest's receive ring, as the Windows NetKVM driver
// expects with VIRTIO_NET_F_RSC_EXT (and, in GSO mode, as standard GSO/GRO
// packets for other guests).
//
// The Engine is a pure state machine: it performs no I/O, reads time only
// from its callers (a virtual clock that stops while the VM is paused), and
// hands finished packets to a Sink. One Engine serves one receive queue and
// is not safe for concurrent use.
//
// Memory and copies: all pending bytes live in one preallocated arena, a
// ring of about MaxFlows × 72 KiB + 128 KiB. The caller reads frames
// straight into it (Engine.RecvBuffer); a segment that is kept stays where
// it was read, and a coalesced packet reaches the sink as a scatter list
// (VecSink: the first frame's rewritten headers, then each payload), so
// every byte is copied once, by the sink into the guest buffer. Frames from
// elsewhere are copied into the arena (a plain Sink gets packets in pieces
// linearized first).
//
// Behaviour (see docs/rsc-spec.md §6 of the project):
//   - Frames are parsed with full bounds checks; a frame is only merged if it
//     is an IPv4 (no options, not a fragment) or IPv6 (no extension headers)
//     TCP data segment with flags ⊆ {ACK, PSH} (ACK set; ECE consistent; CWR
//     only at the start of a packet and only with GuestECN), no TCP options
//     (or, with Config.Timestamps, an identical timestamp-only option block),
//     a known-good checksum (TAP DATA_VALID / NEEDS_CSUM, else verified in
//     software), consistent TOS/traffic class/ECN, DF, flow label and
//     Ethernet header, seq == next expected sequence and a non-decreasing ACK,
//     and the result stays within 65535 bytes of IP datagram and MaxFrame
//     (and 64 pieces: frames read into the receive region contribute one
//     piece each, so segments under 1 KiB may end a packet earlier).
//   - A frame that cannot join its flow's pending packet first flushes that
//     packet (nothing is reordered within a flow); a mergeable data segment
//     then starts a new pending packet (coalescing resumes with it).
//   - Pure ACKs: a window update (seq == next, same ACK, larger window) is
//     absorbed into the pending packet and not counted as a segment;
//     duplicate and cumulative ACKs flush the flow and are delivered alone.
//   - A frame that is not coalesced leaves byte-identical with its original
//     virtio-net header. A coalesced packet gets gso_type TCPV4/TCPV6,
//     NEEDS_CSUM|RSC_INFO (RSC_INFO only in CompatChecksum mode),
//     csum_start = data segments, csum_offset = 0 (duplicate ACKs are never
//     absorbed), gso_size = largest segment payload, hdr_len = L2+L3+L4, a
//     recomputed IPv4 header checksum, the pseudo-header sum in the TCP
//     checksum field (the full checksum in CompatChecksum mode), the newest
//     ACK and window, PSH ORed, the first segment's IP ID and the minimum
//     TTL / hop limit. In GSOMode the header is a standard GSO header
//     (NEEDS_CSUM with csum_start/csum_offset, no RSC_INFO).
//   - Pending packets are flushed on exceptions, at the end of a TAP read
//     batch (Config.FlushAtBatchEnd, or always when Interval is 0), and when
//     the oldest segment has waited Interval. The flow table is bounded
//     (MaxFlows); a new flow in a full table, or a frame that finds the
//     arena full, flushes the oldest pending packet (an eviction).
//   - Back-pressure: when the Sink refuses a packet (guest ring full), the
//     engine keeps it and reports false (Input, RecvBuffer returns nil);
//     nothing is ever dropped.
//   - Ethernet: untagged frames and frames with one 802.1Q tag (VLAN ID in
//     the flow key, whole Ethernet header must match) are coalesced; 802.1ad
//     / double-tagged frames pass through.
//
// Integration (one goroutine per receive queue):
//
//	for each TAP read:
//	    buf := e.RecvBuffer() (nil: stop reading; wait for a kick)
//	    read one frame into buf (vnet header decoded into Frame.Hdr; a frame
//	    longer than buf overflows into a host buffer and is passed from there)
//	    if !e.Input(now, frame) { keep frame; stop reading; wait for a kick }
//	on EAGAIN / end of a read batch: e.EndBatch(now) (false: wait for a kick)
//	timer: arm at e.NextDeadline(); when it fires call e.Tick(now)
//	guest kick after a refusal: e.EndBatch(now), then retry the kept frame
//	offload/feature change, link change, migration: e.SetConfig / e.FlushAll
//	(deliver under the old configuration before acknowledging the change)
//	device reset: e.Reset()
//
// now is a virtual clock that does not advance while the VM is paused. The
// Sink must not call back into the Engine.
package rsc

package compat

import (
	"encoding/binary"
	"time"

	"github.com/rscvm/rscvm/guestimages/testguest"
	"github.com/rscvm/rscvm/net/header"
)

// This file holds the rsc-spec part (a) scenarios added for issue 5: every
// scenario that can be driven from the host side of the TAP (frames, their
// virtio-net headers, delays) or by the test guest's driver (control
// commands before or during a burst, pause, reset and re-initialisation),
// and the list of those that cannot (NotDrivable).

const (
	tcpACK = header.TCPFlagACK
	// longRSC is rscBase's device with a 3 s interval, for cases in which the
	// guest acts (pause, control command, reset) while packets are pending:
	// QEMU's timer must not fire before.
	longInterval = "rsc_interval=3000000000"
	// lateBase lets the guest wait 800 ms after ready before its late
	// actions (ctrl2=, reinit=1) and the receive loop, which then stops 4 s
	// after the last packet (QEMU's 3 s timer delivers late).
	lateBase = rscBase + " pause=800"
)

// Reasons of the expected differences, by rsc-spec part (b) item.
const (
	ecnFlagReason     = "QEMU (b)1: ECE/CWR never end coalescing (flags masked with 0x3F): the segment is merged, its flags replace the SCU's"
	ecnV6DSCPReason   = "QEMU (b)2: the IPv6 \"ECN\" test masks DSCP bits: AF11 traffic is never coalesced"
	dfReason          = "QEMU (b)13: the fragment test is \"DF clear\": DF=1 with MF=1 is merged, DF=0 traffic never coalesces"
	dfToggleReason    = "QEMU (b)13/(b)10: the DF=0 segments bypass RSC without flushing the flow's pending packet (reordered)"
	dupFirstReason    = "QEMU (b)9: the retransmitted first segment with a new window is taken as a window update, its data discarded"
	ackThenDataReason = "QEMU (b)7: the pure ACK starts the SCU and is counted as one of its segments"
	ackDecReason      = "QEMU (b)12: no ACK direction check: the segment with the decreasing ACK is merged"
	size65535Reason   = "QEMU (b)16: IPv4 SCU capped at 65515 (the segment reaching 65535 ends it); (b)11: that segment does not start the next SCU"
	v6SizeReason      = "rscvm: an IPv6 SCU is bounded at 65535 bytes of datagram, header included (MS exception 7; rsc.MaxIPDatagram, rsc/conformance S30), QEMU at payload length 65535 ((a)30 allows both): rscvm ends it one segment earlier; QEMU (b)11: the segment that did not fit does not start the next SCU"
	trailingReason    = "QEMU (b)3/(b)7: no trim to IP length: the pure ACK is merged and its 1460 trailing bytes enter the stream"
	trailingCrash     = "QEMU (b)3: no trim to IP length, appends unbounded: the SCU overflows its 65601-byte buffer (heap overflow) and QEMU dies"
	malformedReason   = "QEMU (b)10: the malformed frame of the flow bypasses RSC without flushing the flow's pending packet (reordered)"
	doffReason        = "QEMU (b)14: TCP data offset < 5 is accepted: the segment is merged and 4 of its header bytes become payload"
	badSumReason      = "QEMU (b)6: checksums are not validated: the corrupted segment is merged"
	gsoLoneReason     = "QEMU (b)4: the host GSO frame, cached alone, is drained with flags and gso_type zeroed (an oversize non-GSO frame with a partial checksum)"
	gsoSegReason      = "QEMU (b)24: the segment is merged onto the host GSO frame, reported as 2 segments; (b)4: the GSO header is replaced"
	dataValidReason   = "QEMU (b)4: a cached packet drained uncoalesced loses DATA_VALID (flags zeroed)"
	vlanReason        = "rscvm: 802.1Q frames are coalesced with the VLAN ID in the flow key, as (a)43 allows (QEMU's RSC skips tagged frames, rsc-spec 1.5 row 0)"
	noTSOReason       = "QEMU (b)23: RSC_EXT is offered (and negotiated) without GUEST_TSO4/6"
	offloadsErrReason = "QEMU (b)19: OFFLOADS_SET turns RSC off before rejecting the mask"
	disablePending    = "QEMU (b)19: pending packets are not flushed on an offload change: the timer delivers D1-D3 after D4 D5"
	resetReason       = "QEMU (b)19: pending packets survive the device reset: D1-D3 merge with D4 and reach the re-initialised rings"
	ringFullReason    = "QEMU (b)18: the timer drains flow C while the ring is full and drops it"
	smallBufReason    = "QEMU (b)18 (rsc-spec 1.10): coalesced packets ignore the 1530-byte buffers and are dropped: all data lost"
	countWrapReason   = "QEMU (b)7: pure ACKs at H.NXT are counted: 1 + 65535 segments wrap the u16 count to 0"
)

// ipv4Fix recomputes the IPv4 header checksum of an untagged frame.
func ipv4Fix(f []byte) []byte {
	ip := header.IPv4(f[14:])
	ip.UpdateChecksum()
	return f
}

// tcpFix recomputes the TCP checksum of an untagged IPv4 frame over the
// bytes from the TCP header to the end of the frame (so also for frames
// whose lengths were made inconsistent afterwards).
func tcpFix(f []byte) []byte {
	ip := header.IPv4(f[14:])
	l3 := 14 + ip.HeaderLen()
	seg := f[l3:]
	tcp := header.TCP(seg)
	tcp.SetChecksum(0)
	pseudo := header.PseudoHeaderSumV4(header.ProtocolTCP, ip.SrcAddr(), ip.DstAddr(), uint16(len(seg)))
	tcp.SetChecksum(^header.Sum(seg, pseudo))
	return f
}

// gsoFrame is a GSO super-frame of n segments of mss bytes from seq, with
// the partial TCP checksum and the virtio-net header a local sender with
// TSO would hand the TAP.
func gsoFrame(seq uint32, n, mss int, v6 bool) ([]byte, *header.VirtioNetHdr) {
	s := seg{seq: seq, len: n * mss, partial: true, v6: v6}
	f := s.frame()
	h := header.VirtioNetHdr{Flags: header.VirtioNetHdrFNeedsCsum, GSOType: header.VirtioNetHdrGSOTCPv4,
		GSOSize: uint16(mss), HdrLen: 54, CsumStart: 34, CsumOffset: header.TCPChecksumOffset}
	if v6 {
		h.GSOType, h.HdrLen, h.CsumStart = header.VirtioNetHdrGSOTCPv6, 74, 54
	}
	return f, &h
}

// partialHdr is the NEEDS_CSUM header of a single segment built with partial.
func partialHdr() *header.VirtioNetHdr {
	return &header.VirtioNetHdr{Flags: header.VirtioNetHdrFNeedsCsum, CsumStart: 34,
		CsumOffset: header.TCPChecksumOffset}
}

// sized is n contiguous segments from seq with the given payload sizes.
func sized(seq uint32, sizes ...int) []seg {
	var out []seg
	for _, n := range sizes {
		out = append(out, seg{seq: seq, len: n})
		seq += uint32(n)
	}
	return out
}

func repeat(n, v int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// withNIC returns c with extra device properties (both VMMs).
func withNIC(c Case, props ...string) Case {
	c.NIC.DeviceProps = append(append([]string(nil), c.NIC.DeviceProps...), props...)
	return c
}

// withCmdline returns c with the guest command line replaced.
func withCmdline(c Case, cmdline string) Case {
	c.Cmdline = cmdline
	return c
}

// sackOpt is NOP NOP SACK(1 block: 5000-6000).
var sackOpt = []byte{1, 1, 5, 10, 0, 0, 0x13, 0x88, 0, 0, 0x17, 0x70}

// tsOpt2 is tsOpt with TSval 1001.
var tsOpt2 = []byte{1, 1, 8, 10, 0, 0, 0x03, 0xe9, 0, 0, 0x07, 0xd0}

// scenarioCases are the part (a) scenarios added for issue 5.
func scenarioCases() []Case {
	var cs []Case
	add := func(c ...Case) { cs = append(cs, c...) }

	// (a)4: two contiguous segments 15 x the interval apart: two plain packets.
	c := rscCase("rsc-interval-gap", "(a)4 interval boundary: D1, 300 ms, D2 (20 ms interval) -> 2 plain",
		seg{seq: 1000, len: 1000})
	c.NIC.DeviceProps = []string{"guest_rsc_ext=on", "rsc_interval=20000000"}
	c.Steps = []Step{{Delay: 300 * time.Millisecond, Frames: frames(seg{seq: 2000, len: 1000})}}
	c.Timing = "D2 is sent 300 ms after D1, 15 intervals: QEMU's timer must have fired in between"
	add(c)

	// (a)10: ECE/CWR.
	add(withKnown(rscCase("rsc-cwr", "(a)10 D x2 then CWR",
		seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000},
		seg{seq: 3000, len: 1000, flags: tcpACK | header.TCPFlagCWR}),
		knownRecords(ecnFlagReason, "rx n=0", "rsc n=0", "rx n=1", "rxend")...))
	add(withKnown(rscCase("rsc-ece", "(a)10 D x2 then ECE",
		seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000},
		seg{seq: 3000, len: 1000, flags: tcpACK | header.TCPFlagECE}),
		knownRecords(ecnFlagReason, "rx n=0", "rsc n=0", "rx n=1", "rxend")...))
	// (a)11 first half: a constant ECT(0) mark.
	add(withKnown(rscCase("rsc-ecn-ect0", "(a)11 v4 ECT(0) on every segment x3",
		seg{seq: 1000, len: 1000, tos: 2}, seg{seq: 2000, len: 1000, tos: 2}, seg{seq: 3000, len: 1000, tos: 2}),
		knownRecords(ecnV4Reason, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rxend")...))
	// (a)13: IPv6 DSCP AF11 (TC 0x28), no ECN.
	add(withKnown(rscCase("rsc6-dscp", "(a)13 v6 DSCP AF11, no ECN x3",
		v6([]seg{{seq: 1000, len: 1000, tos: 0x28}, {seq: 2000, len: 1000, tos: 0x28}, {seq: 3000, len: 1000, tos: 0x28}})...),
		knownRecords(ecnV6DSCPReason, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rxend")...))
	// (a)14 second half: the timestamp changes mid-flow.
	add(withKnown(rscCase("rsc-ts-change", "(a)14 timestamps differing: TSval 1000 x2, then 1001 x2",
		append(withOpts(burst(1000, 2, 1000), tsOpt), withOpts(burst(3000, 2, 1000), tsOpt2)...)...),
		knownRecords(tsReason, "rx n=0", "rx n=1", "rx n=2", "rx n=3", "rsc n=0", "rsc n=1", "rxend")...))
	// (a)15: SACK.
	add(rscCase("rsc-sack", "(a)15 D x2 then a pure ACK with a SACK option",
		seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 3000, opts: sackOpt}))
	// (a)17 second half, (a)18.
	add(withKnown(rscCase("rsc-dfmf", "(a)17 D x2 then DF=1 with MF=1 (bogus)",
		seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 3000, len: 1000, dfmf: true}),
		knownRecords(dfReason, "rx n=0", "rsc n=0", "rx n=1", "rxend")...))
	add(withKnown(rscCase("rsc-df0", "(a)18 DF clear, not fragmented, x3",
		seg{seq: 1000, len: 1000, df0: true}, seg{seq: 2000, len: 1000, df0: true}, seg{seq: 3000, len: 1000, df0: true}),
		knownRecords(dfReason, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rxend")...))
	add(withKnown(rscCase("rsc-df-toggle", "(a)18 DF toggling: D1 D2 DF, D3 D4 DF clear",
		seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000},
		seg{seq: 3000, len: 1000, df0: true}, seg{seq: 4000, len: 1000, df0: true}),
		knownRecords(dfToggleReason, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rsc n=1", "rsc n=2", "rxend", "stream")...))
	// (a)19: IPv6 extension headers on a flow with a pending packet.
	padN := []byte{1, 4, 0, 0, 0, 0}
	add(withKnown(rscCase("rsc6-exthdr", "(a)19 v6 D x2 then hop-by-hop, destination options, fragment (atomic) headers",
		v6([]seg{{seq: 1000, len: 1000}, {seq: 2000, len: 1000},
			{seq: 3000, len: 1000, ext: []header.IPv6ExtHeader{{Type: header.IPv6HopByHop, Data: padN}}},
			{seq: 4000, len: 1000, ext: []header.IPv6ExtHeader{{Type: header.IPv6DestOptions, Data: padN}}},
			{seq: 5000, len: 1000, ext: []header.IPv6ExtHeader{{Type: header.IPv6Fragment, Data: []byte{0, 0, 0, 0, 0, 7}}}}})...),
		knownRecords(bypassReason, "rx n=0", "rx n=1", "rx n=2", "rx n=3", "rsc n=0", "rsc n=3")...))
	// (a)23, (a)27, (a)28.
	add(withKnown(rscCase("rsc-dup-first-win", "(a)23 D1..D3 then D1 again with a new window",
		append(burst(1000, 3, 1000), seg{seq: 1000, len: 1000, win: 2048})...),
		knownRecords(dupFirstReason, "rx n=0", "rx n=1", "rxend", "stream")...))
	add(withKnown(rscCase("rsc-ack-then-data", "(a)27 pure ACK (seq S) then D(S) x3",
		seg{seq: 1000}, seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 3000, len: 1000}),
		knownRecords(ackThenDataReason, "rx n=0", "rx n=1", "rsc n=0", "rsc n=1", "rxend")...))
	add(rscCase("rsc-ack-inc", "(a)28 piggy-backed ACK: D x4, ack +100 each",
		seg{seq: 1000, len: 1000, ack: 1000}, seg{seq: 2000, len: 1000, ack: 1100},
		seg{seq: 3000, len: 1000, ack: 1200}, seg{seq: 4000, len: 1000, ack: 1300}))
	add(withKnown(rscCase("rsc-ack-dec", "(a)28 ack decreasing at D3: acks 1000 1100 1050 1200",
		seg{seq: 1000, len: 1000, ack: 1000}, seg{seq: 2000, len: 1000, ack: 1100},
		seg{seq: 3000, len: 1000, ack: 1050}, seg{seq: 4000, len: 1000, ack: 1200}),
		knownRecords(ackDecReason, "rx n=0", "rsc n=0", "rx n=1", "rsc n=1", "rxend")...))
	// (a)29, (a)30: size limits.
	add(bigCase(rscCase("rsc-size-46", "(a)29 v4 size limit: 46 x 1448 (45 = 65200 bytes fit, the 46th does not)",
		burst(1000, 46, 1448)...)))
	add(bigCase(withKnown(rscCase("rsc-size-65535", "(a)29 v4 at 65535: 44 x 1460 + 1255 (IP total 65535), then 2 x 1460",
		sized(1000, append(append(repeat(44, 1460), 1255), 1460, 1460)...)...),
		knownRecords(size65535Reason, "rx n=0", "rsc n=0", "rx n=1", "rsc n=1", "rx n=2", "rsc n=2", "rxend")...)))
	add(bigCase(withKnown(rscCase("rsc6-size-65535", "(a)30 v6 at 65535: 45 x 1440 + 715 (payload length 65535), then 2 x 1440",
		v6(sized(1000, append(append(repeat(45, 1440), 715), 1440, 1440)...))...),
		knownRecords(v6SizeReason, "rx n=0", "rsc n=0", "rx n=1", "rsc n=1", "rx n=2", "rxend")...)))
	// (a)31, (a)32: wrap-around.
	add(rscCase("rsc-seq-wrap", "(a)31 sequence wrap: 5 x 1448 from 0xFFFFF000", burst(0xFFFFF000, 5, 1448)...))
	add(rscCase("rsc-ack-wrap", "(a)32 ack wrap: acks 0xFFFFFF00 +100 each across 2^32",
		seg{seq: 1000, len: 1000, ack: 0xFFFFFF00}, seg{seq: 2000, len: 1000, ack: 0xFFFFFF64},
		seg{seq: 3000, len: 1000, ack: 0xFFFFFFC8}, seg{seq: 4000, len: 1000, ack: 0x2C}))
	// (a)34, reduced: 100 flows, one segment each (rscvm's table holds 64).
	var many []seg
	for i := 0; i < 100; i++ {
		many = append(many, seg{seq: 1000, len: 100, srcPort: uint16(10000 + i)})
	}
	add(rscCase("rsc-flows-100", "(a)34 reduced: 100 flows, 1 segment each (more than rscvm's 64-flow table)", many...))
	// (a)36: trailing bytes after a 40-byte datagram.
	add(withKnown(rscCase("rsc-trailing", "(a)36 pure ACK (total length 40) in a 1514-byte frame, then D x3",
		seg{seq: 1000, pad: 1460}, seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 3000, len: 1000}),
		knownRecords(trailingReason, "rx n=0", "rx n=1", "rsc n=0", "rsc n=1", "rxend", "stream")...))
	c = rscCase("rsc-trailing-64k", "(a)36 growth: pure ACK (total length 40) in a 1514-byte frame, then 45 x 1448",
		append([]seg{{seq: 1000, pad: 1460}}, burst(1000, 45, 1448)...)...)
	c.Cmdline = rscBase + " rxwait=5000"
	c.QEMUCrash = trailingCrash
	c.Known = knownRecords(trailingReason, "rx n=0", "rx n=1", "rsc n=0", "rsc n=1", "rxend", "stream")
	add(c)
	// (a)37, (a)38, (a)39: malformed frames on a flow with a pending packet.
	add(malformedCases()...)
	// (a)40: bad checksums with TAP flags 0.
	add(withKnown(rscCase("rsc-bad-tcpsum", "(a)40 D1, D2 with a wrong TCP checksum, D3",
		seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000, badTCP: true}, seg{seq: 3000, len: 1000}),
		knownRecords(badSumReason, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rxend")...))
	add(withKnown(rscCase("rsc-bad-ipsum", "(a)40 D1, D2 with a wrong IPv4 header checksum, D3",
		seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000, badIP: true}, seg{seq: 3000, len: 1000}),
		knownRecords(badSumReason, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rxend")...))
	// (a)41: host GSO super-frames.
	g, gh := gsoFrame(1000, 10, 1448, false)
	c = rscCase("rsc-gso-lone", "(a)41 host GSO: one TCPV4 super-frame 10 x 1448 (NEEDS_CSUM)")
	c.Steps = []Step{{Frames: [][]byte{g}, Vnet: []*header.VirtioNetHdr{gh}}}
	c.Known = []Known{{Record: "rx n=0", Field: "flags", QEMU: "00", Rscvm: "01", Reason: gsoLoneReason},
		{Record: "rx n=0", Field: "gso_type", QEMU: "00", Rscvm: "01", Reason: gsoLoneReason}}
	add(c)
	c = rscCase("rsc-gso-seg", "(a)41 host GSO 10 x 1448 then a contiguous 1448-byte segment")
	c.Steps = []Step{{Frames: [][]byte{g, seg{seq: 1000 + 14480, len: 1448}.frame()},
		Vnet: []*header.VirtioNetHdr{gh, {}}}}
	c.Known = knownRecords(gsoSegReason, "rx n=0", "rsc n=0", "rx n=1", "rxend")
	add(c)
	g6, gh6 := gsoFrame(1000, 10, 1440, true)
	c = rscCase("rsc6-gso-lone", "(a)41 host GSO: one TCPV6 super-frame 10 x 1440 (NEEDS_CSUM)")
	c.Steps = []Step{{Frames: [][]byte{g6}, Vnet: []*header.VirtioNetHdr{gh6}}}
	c.Known = []Known{{Record: "rx n=0", Field: "flags", QEMU: "00", Rscvm: "01", Reason: gsoLoneReason},
		{Record: "rx n=0", Field: "gso_type", QEMU: "00", Rscvm: "04", Reason: gsoLoneReason}}
	add(c)
	// (a)3/(a)42: checksum state the TAP reports.
	// A packet socket cannot make the TAP report DATA_VALID (the kernel
	// ignores it on transmit): these frames take the checksum-verifying
	// path (a GRO veth bridged with the TAP).
	c = rscCase("rsc-lone-datavalid", "(a)3 lone segment arriving with DATA_VALID (checksum-verified path)")
	c.Steps = []Step{{Verified: true, Frames: frames(seg{seq: 1000, len: 1448})}}
	c.Known = []Known{{Record: "rx n=0", Field: "flags", QEMU: "00", Rscvm: "02", Reason: dataValidReason}}
	add(c)
	c = rscCase("rsc-datavalid-burst", "(a)1/(a)40 D x3 arriving with DATA_VALID, 10 ms apart; then D4 with a bad checksum (flags 0), D5 valid")
	c.Steps = []Step{{Verified: true, Gap: 10 * time.Millisecond, Frames: frames(burst(1000, 3, 1000)...)},
		{Verified: true, Delay: 10 * time.Millisecond, Gap: 10 * time.Millisecond,
			Frames: frames(seg{seq: 4000, len: 1000, badTCP: true}, seg{seq: 5000, len: 1000})}}
	c.Timing = "frames are sent 10 ms apart so that the kernel's GRO on the verifying path does not merge them"
	c.Known = knownRecords(badSumReason, "rx n=0", "rsc n=0", "rx n=1", "rx n=2", "rxend")
	add(c)
	c = rscCase("rsc-needscsum-burst", "(a)42 D x3 each injected with NEEDS_CSUM (partial checksum)")
	ph := partialHdr()
	c.Steps = []Step{{Frames: frames(seg{seq: 1000, len: 1000, partial: true}, seg{seq: 2000, len: 1000, partial: true},
		seg{seq: 3000, len: 1000, partial: true}), Vnet: []*header.VirtioNetHdr{ph, ph, ph}}}
	add(c)
	// (a)43: VLAN.
	add(withKnown(rscCase("rsc-vlan", "(a)43 802.1Q VLAN 5 tagged D x3",
		seg{seq: 1000, len: 1000, vlan: 5}, seg{seq: 2000, len: 1000, vlan: 5}, seg{seq: 3000, len: 1000, vlan: 5}),
		knownRecords(vlanReason, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rxend")...))
	// Tagged first: QEMU delivers it at once and holds the untagged one, rscvm
	// holds both (two flows) and delivers them in arrival order.
	add(rscCase("rsc-vlan-mixed", "(a)43 D1 tagged VLAN 5, then D2 (contiguous) untagged: never merged",
		seg{seq: 1000, len: 1000, vlan: 5}, seg{seq: 2000, len: 1000}))
	// (a)44: negotiation matrix.
	add(negotiationCases()...)
	// (a)45: OFFLOADS_SET.
	add(withCmdline(rscCase("rsc-offloads-no61", "(a)45 OFFLOADS_SET CSUM|TSO4|TSO6 without bit 61: RSC off",
		burst(1000, 3, 1000)...), base+" rsc=1 ctrl=offloads:0x182"))
	add(withCmdline(rscCase("rsc-offloads-err", "(a)45 OFFLOADS_SET on, then a rejected mask (MRG_RXBUF bit, no bit 61)",
		burst(1000, 3, 1000)...), rscBase+",offloads:0x8182"))
	cs[len(cs)-1].Known = knownRecords(offloadsErrReason, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rxend")
	add(withCmdline(rscCase("rsc-offloads-badlen", "(a)45 OFFLOADS_SET on, then a 4-byte OFFLOADS_SET (ERR)",
		burst(1000, 3, 1000)...), rscBase+",raw:5:0:82010000"))
	// (a)46-(a)49, (a)51-(a)53: guest actions, buffers, properties.
	add(guestActionCases()...)
	// Zero-window probe (not numbered in part (a); a case of (a)22's rule).
	add(rscCase("rsc-zwp", "(a)22 variant: D x2 then a zero-window probe (1 byte at H.NXT-1)",
		seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 2999, len: 1}))
	return cs
}

// malformedCases: (a)37 truncated headers, (a)38 bogus lengths, (a)39 runts.
func malformedCases() []Case {
	d1, d2 := seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}
	pending := frames(d1, d2)
	d3 := seg{seq: 3000, len: 1000}.frame()
	with := func(name, about string, odd ...[]byte) Case {
		c := rscCase(name, about)
		c.Frames = append(append(append([][]byte(nil), pending...), odd...), d3)
		return c
	}
	var cs []Case

	// (a)37: cut inside the IPv4 header, inside the TCP header (IHL 15 in
	// 54 bytes), inside the IPv6 header.
	full := seg{seq: 3000, len: 1000}.frame()
	ihl15 := append([]byte(nil), full[:54]...)
	ihl15[14] = 0x4f
	// The header checksum over the 40 bytes there are.
	ihl15[24], ihl15[25] = 0, 0
	binary.BigEndian.PutUint16(ihl15[24:], ipv4Checksum(ihl15[14:]))
	v6full := seg{seq: 3000, len: 1000, v6: true}.frame()
	cs = append(cs, with("rsc-truncated", "(a)37 D x2, frames cut in the IPv4 header, the TCP header (IHL 15 in 54 bytes), the IPv6 header; D3",
		append([]byte(nil), full[:24]...), ihl15, append([]byte(nil), full[:44]...), append([]byte(nil), v6full[:40]...)))
	cs[len(cs)-1].Known = knownRecords(malformedReason, "rx n=1", "rx n=2", "rx n=3", "rx n=4", "rx n=5", "rsc n=1", "rsc n=4", "rxend")

	// (a)38: bogus lengths.
	long := seg{seq: 3000, len: 100}.frame()
	header.IPv4(long[14:]).SetTotalLength(1140)
	ipv4Fix(long)
	short := seg{seq: 3000, len: 100}.frame()
	header.IPv4(short[14:]).SetTotalLength(30)
	ipv4Fix(short)
	cs = append(cs, with("rsc-iplen-bogus", "(a)38 D x2, total length > frame, total length 30 (< 40); D3", long, short))
	cs[len(cs)-1].Known = knownRecords(malformedReason, "rx n=0", "rx n=1", "rx n=2", "rx n=3", "rsc n=0", "rsc n=2", "rxend")
	p0 := seg{seq: 3000, len: 100, v6: true}.frame()
	header.IPv6(p0[14:]).SetPayloadLength(0)
	pbig := seg{seq: 3000, len: 100, v6: true}.frame()
	header.IPv6(pbig[14:]).SetPayloadLength(1200)
	c := rscCase("rsc6-plen-bogus", "(a)38 v6 D x2, payload length 0, payload length > frame; D3",
		v6([]seg{{seq: 1000, len: 1000}, {seq: 2000, len: 1000}})...)
	c.Frames = append(c.Frames, p0, pbig, seg{seq: 3000, len: 1000, v6: true}.frame())
	c.Known = knownRecords(malformedReason, "rx n=0", "rx n=1", "rx n=2", "rx n=3", "rsc n=0", "rsc n=2", "rxend")
	cs = append(cs, c)
	// TCP data offset 4 (16 bytes): QEMU's unit takes 4 header bytes as payload.
	doff4 := seg{seq: 2000, len: 1000}.frame()
	doff4[46] = 4 << 4
	tcpFix(doff4)
	c = rscCase("rsc-doff-small", "(a)38 D1, D2 with TCP data offset 4, D3")
	c.Frames = [][]byte{seg{seq: 1000, len: 1000}.frame(), doff4, d3}
	c.Known = knownRecords(doffReason, "rx n=0", "rsc n=0", "rx n=1", "rx n=2", "rxend", "stream")
	cs = append(cs, c)
	// Data offset 15 (60 bytes) in a segment of 20 + 10 bytes.
	doff15 := seg{seq: 3000, len: 10}.frame()
	doff15[46] = 15 << 4
	tcpFix(doff15)
	cs = append(cs, with("rsc-doff-long", "(a)38 D x2, TCP data offset 60 beyond the IP length (30); D3", doff15))

	// (a)39: runts the packet socket can send (at least the 14-byte
	// Ethernet header): header only (IPv4 and IPv6 ethertype), 15 bytes,
	// 33 bytes (IPv4 header cut), 53 bytes (TCP header cut by one byte).
	eth4 := append([]byte(nil), full[:14]...)
	eth6 := append([]byte(nil), v6full[:14]...)
	cs = append(cs, with("rsc-runt", "(a)39 D x2, 14-byte IPv4 and IPv6 Ethernet headers, 15, 33 and 53-byte IPv4 frames; D3",
		eth4, eth6, append([]byte(nil), full[:15]...), append([]byte(nil), full[:33]...), append([]byte(nil), full[:53]...)))
	cs[len(cs)-1].Known = knownRecords(malformedReason, "rx n=4", "rx n=5", "rx n=6", "rsc n=4", "rsc n=5", "rxend")
	return cs
}

// negotiationCases: (a)44.
func negotiationCases() []Case {
	v4v6 := append(burst(1000, 3, 1000), v6(burst(1000, 3, 1000))...)
	var cs []Case
	c := rscCase("rsc-prop-off", "(a)44 guest_rsc_ext off (default), guest wants RSC_EXT: no RSC_INFO", v4v6...)
	c.NIC.DeviceProps = []string{"rsc_interval=200000000"}
	c.Cmdline = base + " rsc=1 ctrl=offloads:0x182"
	cs = append(cs, c)
	cs = append(cs, withCmdline(rscCase("rsc-not-acked", "(a)44 guest_rsc_ext=on, guest does not ack RSC_EXT (Linux): no RSC_INFO",
		v4v6...), base+" ctrl=offloads:0x182"))
	// Features without GUEST_TSO6 (bit 8).
	cs = append(cs, withCmdline(rscCase("rsc-tso4-only", "(a)44 guest acks RSC_EXT + GUEST_TSO4 only: v4 coalesced, v6 plain",
		v4v6...), base+" rsc=1 features=0x1008798a7 ctrl=offloads:0x2000000000000082"))
	cs = append(cs, withNIC(withCmdline(rscCase("rsc-no-guest-tso", "(a)44 guest_tso4=off,guest_tso6=off,guest_rsc_ext=on: RSC_EXT offered, plain packets",
		v4v6...), base+" rsc=1 ctrl=offloads:0x2"), "guest_tso4=off", "guest_tso6=off"))
	cs[len(cs)-1].Known = []Known{
		{Record: "virtio features", Field: "offered", QEMU: "0x2000010130bffe27", Rscvm: "0x0000010130bffe27", Reason: noTSOReason},
		{Record: "virtio features", Field: "negotiated", QEMU: "0x2000000100879827", Rscvm: "0x0000000100879827", Reason: noTSOReason}}
	return cs
}

// guestActionCases: scenarios in which the guest acts while packets are
// pending, or its buffers and the device properties matter.
func guestActionCases() []Case {
	var cs []Case
	late := func(name, about, cmdline string, first []seg, after string, second []seg) Case {
		c := rscCase(name, about, first...)
		c.NIC.DeviceProps = []string{"guest_rsc_ext=on", longInterval}
		c.Cmdline = cmdline + " rxwait=4000"
		if len(second) > 0 {
			c.Steps = []Step{{After: after, Frames: frames(second...)}}
		}
		c.Timing = "the first frames must reach the device during the guest's 800 ms pause, and QEMU's 3 s timer must not fire before the guest acts"
		return c
	}
	// (a)46: OFFLOADS_SET clears TSO4 while D1..D3 are pending; D4 D5 after the ack.
	cs = append(cs, late("rsc-disable-pending", "(a)46 D x3 pending, OFFLOADS_SET clears TSO4, then D4 D5",
		lateBase+" ctrl2=offloads:0x2000000000000102", burst(1000, 3, 1000), "ctrl n=1 ", burst(4000, 2, 1000)))
	cs[len(cs)-1].Known = knownRecords(disablePending, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rsc n=2", "stream")
	// (a)47: XDP-like sequence: with GUEST_CSUM only, a host GSO frame must
	// reach the guest segmented (the TAP does it after TUNSETOFFLOAD).
	c := late("rsc-xdp", "(a)47 offloads GUEST_CSUM only: D x3 + host GSO 5 x 1448; restore CSUM|TSO4|TSO6|61: D x3",
		base+" rsc=1 ctrl=offloads:0x2 pause=800 ctrl2=offloads:0x2000000000000182", burst(1000, 3, 1000),
		"ctrl n=1 ", burst(4000+5*1448, 3, 1000))
	xg, xh := gsoFrame(4000, 5, 1448, false)
	c.Steps = append([]Step{{Frames: [][]byte{xg}, Vnet: []*header.VirtioNetHdr{xh}}}, c.Steps...)
	cs = append(cs, c)
	// (a)48: reset with pending packets, re-initialisation, then D4.
	cs = append(cs, late("rsc-reset-pending", "(a)48 D x3 pending, device reset and re-init, then D4 (contiguous)",
		lateBase+" reinit=1", burst(1000, 3, 1000), "reinit ", burst(4000, 1, 1000)))
	cs[len(cs)-1].Known = knownRecords(resetReason, "rx n=0", "rsc n=0", "stream")
	// (a)49: two receive buffers, three flows' packets flushed while the
	// guest does not take any.
	c = rscCase("rsc-ring-full", "(a)49 2 rx buffers, guest idle 800 ms: flows A B C (D x3 each) flushed by the timer",
		append(append(burst(1000, 3, 1000), withPort(burst(1000, 3, 1000), 5002)...), withPort(burst(1000, 3, 1000), 5003)...)...)
	c.Cmdline = rscBase + " rxbufs=2 pause=800"
	c.Timing = "QEMU's 200 ms timer must fire during the guest's 800 ms pause"
	c.Known = knownRecords(ringFullReason, "rx n=2", "rsc n=2", "rxend", "stream")
	cs = append(cs, c)
	// (a)51: no MRG_RXBUF, 1530-byte buffers although TSO is negotiated.
	cs = append(cs, withCmdline(rscCase("rsc-small-bufs", "(a)51 no MRG_RXBUF, 1530-byte buffers: D x3 (1000 bytes each)",
		burst(1000, 3, 1000)...), rscBase+" features=0x1008719a7 rxbuf=1530 rxdesc=1530 rxfirst=3000"))
	cs[len(cs)-1].Known = knownRecords(smallBufReason, "rx n=0", "rx n=1", "rx n=2", "rxend", "stream")
	// (a)52: counter wrap: one data segment, then 65535 window updates
	// (window 1, 2, ..., 65535) within QEMU's interval.
	c = rscCase("rsc-count-wrap", "(a)52 D (window 0) then 65535 pure ACKs at H.NXT, window 1..65535")
	c.NIC = testguest.NIC{DeviceProps: []string{"guest_rsc_ext=on", "rsc_interval=4294967295"}, TxQueueLen: 70000}
	c.Cmdline = rscBase + " rxwait=6000"
	c.Timing = "QEMU must take all 65536 frames (TAP queue 70000) before its 4.29 s timer fires; if it cannot (host load), its count is below 65536 and does not wrap: unexpected"
	wu := make([][]byte, 0, 65536)
	first := seg{seq: 1000, len: 1000}.frame()
	binary.BigEndian.PutUint16(first[48:], 0)
	tcpFix(first)
	wu = append(wu, first)
	for w := 1; w <= 65535; w++ {
		wu = append(wu, seg{seq: 2000, win: uint16(w)}.frame())
	}
	c.Frames = wu
	c.Known = []Known{{Record: "rx n=0", Field: "csum_start", QEMU: "0", Rscvm: "1", Reason: countWrapReason},
		{Record: "rsc n=0", Field: "segs", QEMU: "0", Rscvm: "1", Reason: countWrapReason},
		{Record: "stream", Field: "segments", QEMU: "0", Rscvm: "1", Reason: countWrapReason}}
	cs = append(cs, c)
	// (a)53: rsc_interval 0 and the largest value.
	c = rscCase("rsc_interval=0", "(a)53 rsc_interval=0: D x10", burst(1000, 10, 1448)...)
	c.NIC.DeviceProps = []string{"guest_rsc_ext=on", "rsc_interval=0"}
	c.Stream = "nondeterministic packet split (QEMU's timer is due at once, rscvm flushes each TAP read batch): compared the reassembled TCP stream"
	cs = append(cs, c)
	c = rscCase("rsc_interval=4294967295", "(a)53 largest rsc_interval (4.29 s): D x3 held until the timer",
		burst(1000, 3, 1000)...)
	c.NIC.DeviceProps = []string{"guest_rsc_ext=on", "rsc_interval=4294967295"}
	c.Cmdline = rscBase + " rxwait=6000"
	cs = append(cs, c)
	for _, v := range []string{"4294967296", "-1"} {
		cs = append(cs, Case{Name: "rsc_interval=" + v, About: "(a)53 rsc_interval out of range: both VMMs refuse the device",
			Cmdline: rscBase, NIC: testguest.NIC{DeviceProps: []string{"guest_rsc_ext=on", "rsc_interval=" + v}},
			StartFails: true})
	}
	return cs
}

// bigCase gives a case with ~64 KiB packets a longer idle wait: the guest
// dumps each packet in hex (minutes of serial output under emulated KVM),
// and a loaded host may delay QEMU's first delivery beyond 1.5 s.
func bigCase(c Case) Case {
	c.Cmdline += " rxwait=5000"
	return c
}

// withPort returns segs from source port p.
func withPort(segs []seg, p uint16) []seg {
	out := make([]seg, len(segs))
	for i, s := range segs {
		s.srcPort = p
		out[i] = s
	}
	return out
}

// Scenario is a part (a) scenario that no case drives, and why.
type Scenario struct {
	Num    int    `json:"scenario"`
	Title  string `json:"title"`
	Reason string `json:"reason"`
}

// NotDrivable lists the part (a) scenarios that cannot be driven from the
// host side of the TAP or by the test guest's driver.
func NotDrivable() []Scenario {
	return []Scenario{
		{50, "pause/snapshot/migration with pending SCUs",
			"needs the VMM control plane (QEMU's monitor: stop/cont/savevm/migrate); rscvm boot has no pause, snapshot or " +
				"migration interface, and neither the TAP side nor the guest driver can pause the VM"},
		{54, "statistics (exported counters)",
			"QEMU 7.2 keeps its RSC counters internal (no QMP, no trace events): nothing to compare; rscvm's counters " +
				"are checked by rsc/conformance (S54)"},
	}
}

// Partial lists the part (a) scenarios whose cases cover only part of
// what the scenario describes, and why the rest is not driven.
func Partial() []Scenario {
	return []Scenario{
		{34, "flow-table pressure: 10,000 flows", "rsc-flows-100 drives 100 flows (above rscvm's 64 per queue); the test " +
			"guest prints a serial line per packet (one VM exit per character), so 10,000 would take many minutes under " +
			"emulated KVM, and the memory bound and per-packet latency are not visible to the guest"},
		{39, "zero/runt frames", "frames of 0 bytes, shorter than the virtio-net header or header only cannot be made on " +
			"the host side: the TAP always hands the VMM a complete header and a packet socket refuses frames shorter " +
			"than the 14-byte Ethernet header; rsc-runt covers 14..53-byte frames"},
		{44, "negotiation matrix", "bits 41/42 never offered: visible in every case's feature line (identical); " +
			"the rest is driven (rsc-prop-off, rsc-not-acked, rsc-tso4-only, rsc-no-guest-tso)"},
		{46, "disable while pending: host GSO skbs already queued in the TAP", "a GSO frame would have to stay queued in " +
			"the TAP across the guest's OFFLOADS_SET, which needs the VMM to stop reading the TAP; QEMU with RSC on never " +
			"does (it caches frames regardless of ring space, (b)18), so both devices cannot be put in that state; " +
			"rsc-disable-pending covers the pending SCUs"},
	}
}

package compat

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/rscvm/rscvm/guestimages/testguest"
	"github.com/rscvm/rscvm/net/header"
)

// Case is one comparison: the guest command line, the NIC (device and
// netdev properties), extra device properties for rscvm only, and the frames
// injected into both TAPs once the guest is ready.
type Case struct {
	// Name is short and unique ("defaults", "rsc-fin").
	Name string
	// About says what the case covers (spec scenario numbers included).
	About string
	// Cmdline is the guest command line.
	Cmdline string
	// NIC is the network card (both VMMs).
	NIC testguest.NIC
	// RscvmProps are device properties given to rscvm only (x-rsc-batch-flush=off).
	RscvmProps []string
	// Frames are injected (in order, at once) after the guest's ready line.
	Frames [][]byte
	// Stream compares the received TCP byte stream instead of packet
	// boundaries: set where QEMU's timer makes the split nondeterministic.
	// The text says why (it is shown in the table).
	Stream string
	// Timing, if set, says how the outcome depends on QEMU's (or the host's)
	// timing; shown as a note.
	Timing string
	// Vnet, if set, is the virtio-net header every frame is injected with
	// (Session.InjectVnet); nil injects plain frames (Session.Inject).
	Vnet *header.VirtioNetHdr
	// Steps are injected after Frames, in order: for frames that need their
	// own virtio-net header, a delay, or a guest action first.
	Steps []Step
	// Known are this scenario's documented differences.
	Known []Known
	// QEMUCrash, if set, says why QEMU is expected to die from a signal in
	// this case (a memory-safety defect of part (b)). If it does, the case
	// differs as expected when rscvm's guest ran to its end and received
	// exactly the injected TCP stream; if QEMU survives, the reports are
	// compared as usual.
	QEMUCrash string
	// StartFails says both VMMs must refuse the NIC (a property value out of
	// range) and exit with an error before the guest starts: the case is
	// identical if both do.
	StartFails bool
}

// Step is one injection after the guest's ready line: wait for the serial
// line starting with After (if set; searched from the start of the output,
// so it must be unique), then Delay, then inject Frames.
type Step struct {
	After string
	Delay time.Duration
	// Frames are injected in order; Vnet[i], if present and non-nil, is
	// frame i's virtio-net header (Session.InjectVnet), else it is injected
	// plain.
	Frames [][]byte
	Vnet   []*header.VirtioNetHdr
	// Verified sends the frames through the checksum-verifying path
	// (Session.InjectVerified: the TAP reports DATA_VALID for frames with a
	// good TCP checksum, as for traffic forwarded from a NIC with receive
	// checksum offload), Gap apart; Vnet is ignored.
	Verified bool
	Gap      time.Duration
}

// steps returns every injection of the case: Frames (with Vnet) first.
func (c Case) steps() []Step {
	var out []Step
	if len(c.Frames) > 0 {
		st := Step{Frames: c.Frames}
		if c.Vnet != nil {
			for range c.Frames {
				st.Vnet = append(st.Vnet, c.Vnet)
			}
		}
		out = append(out, st)
	}
	return append(out, c.Steps...)
}

// Addresses of the test flow: host 10.0.2.2:5001 -> guest 10.0.2.15:40000.
var (
	guestMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	hostMAC  = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	hostIP   = netip.MustParseAddr("10.0.2.2")
	guestIP  = netip.MustParseAddr("10.0.2.15")
	hostIP6  = netip.MustParseAddr("fd00::2")
	guestIP6 = netip.MustParseAddr("fd00::15")
	// tsOpt is NOP NOP TS(TSval 1000, TSecr 2000), identical on every segment.
	tsOpt = []byte{1, 1, 8, 10, 0, 0, 0x03, 0xe8, 0, 0, 0x07, 0xd0}
	// raOpt is the IPv4 Router Alert option (IHL 6).
	raOpt = []byte{0x94, 4, 0, 0}
)

// seg is one host->guest TCP segment (DF, ACK 777 unless set, window 1024).
type seg struct {
	seq     uint32
	len     int
	flags   uint8
	ack     uint32
	win     uint16
	srcPort uint16
	// v6 sends the segment on the IPv6 flow (hostIP6 -> guestIP6).
	v6 bool
	// tos is the IPv4 TOS / IPv6 traffic class.
	tos uint8
	// opts are TCP options, ipOpts IPv4 options.
	opts, ipOpts []byte
	// mf sets IPv4 More Fragments (DF clear).
	mf bool
	// pad appends Ethernet padding after the IP datagram.
	pad int
	// partial stores the pseudo-header sum as the TCP checksum (NEEDS_CSUM).
	partial bool
	// df0 clears DF (not a fragment); dfmf sets DF and MF together.
	df0, dfmf bool
	// badTCP stores a wrong TCP checksum, badIP a wrong IPv4 header checksum.
	badTCP, badIP bool
	// vlan adds an 802.1Q tag with this VLAN ID.
	vlan uint16
	// ext are IPv6 extension headers.
	ext []header.IPv6ExtHeader
	// fill, if set, gives payload byte i (else the default pattern).
	fill func(i int) byte
}

func (s seg) frame() []byte {
	p := make([]byte, s.len)
	for i := range p {
		p[i] = byte(int(s.seq) + i*13)
		if s.fill != nil {
			p[i] = s.fill(i)
		}
	}
	if s.flags == 0 {
		s.flags = header.TCPFlagACK
	}
	if s.ack == 0 {
		s.ack = 777
	}
	if s.win == 0 {
		s.win = 1024
	}
	if s.srcPort == 0 {
		s.srcPort = 5001
	}
	f := header.TCPFrame{DstMAC: guestMAC, SrcMAC: hostMAC, Src: hostIP, Dst: guestIP, DontFragment: !s.mf,
		MoreFragments: s.mf, ID: uint16(s.seq), SrcPort: s.srcPort, DstPort: 40000, Seq: s.seq, Ack: s.ack,
		Flags: s.flags, Window: s.win, Payload: p, TOS: s.tos, Options: s.opts, IPOptions: s.ipOpts, Padding: s.pad}
	if s.partial {
		f.Checksum = header.ChecksumPartial
	}
	if s.badTCP {
		f.Checksum = header.ChecksumBad
	}
	f.BadIPChecksum = s.badIP
	if s.df0 {
		f.DontFragment = false
	}
	if s.dfmf {
		f.DontFragment, f.MoreFragments = true, true
	}
	if s.vlan != 0 {
		f.VLAN, f.VLANTCI = true, s.vlan
	}
	if s.v6 {
		f.Src, f.Dst, f.DontFragment, f.ID = hostIP6, guestIP6, false, 0
		f.ExtHeaders = s.ext
	}
	return f.Build(nil)
}

func frames(segs ...seg) [][]byte {
	out := make([][]byte, len(segs))
	for i, s := range segs {
		out[i] = s.frame()
	}
	return out
}

// v6 returns segs on the IPv6 flow.
func v6(segs []seg) []seg {
	out := make([]seg, len(segs))
	for i, s := range segs {
		s.v6 = true
		out[i] = s
	}
	return out
}

// withOpts returns segs carrying the TCP options o.
func withOpts(segs []seg, o []byte) []seg {
	out := make([]seg, len(segs))
	for i, s := range segs {
		s.opts = o
		out[i] = s
	}
	return out
}

// burst is n contiguous segments of size bytes from seq first.
func burst(first uint32, n, size int) []seg {
	var s []seg
	for i := 0; i < n; i++ {
		s = append(s, seg{seq: first + uint32(i*size), len: size})
	}
	return s
}

const (
	// base waits up to 8 s for the first packet (a loaded host may take a
	// while to send after the ready line) and stops 1.5 s after the last.
	base = "net=1 pci=0 memmap=0 rxdump=1 rxwait=1500 rxfirst=8000"
	// rscBase negotiates RSC_EXT and turns RSC on as NetKVM does
	// (OFFLOADS_SET CSUM|TSO4|TSO6|bit 61).
	rscBase = base + " rsc=1 ctrl=offloads:0x2000000000000182"
	// ctrlCmdline is TestNetCtrl's command list (testguest/net_test.go).
	ctrlCmdline = "ctrl=promisc:0,promisc:1,allmulti:1,alluni:0,nomulti:0,nouni:0,nobcast:0," +
		"mac:52:54:00:aa:bb:cc,mactable:2:2,mactable:70:0,mactable:0:70,vlanadd:5,vlandel:5," +
		"offloads:0x182,offloads:0x2,offloads:0,offloads:0x2000000000000000,announce,mq:1," +
		"raw:4:1:,raw:6:0:,raw:8:0:,bad,nosuch:1"
)

// rscNIC: RSC with a 200 ms interval (a burst written at once is never split
// by QEMU's timer); rscvm flushes by the timer only, as QEMU does.
func rscCase(name, about string, segs ...seg) Case {
	return Case{Name: name, About: about, Cmdline: rscBase,
		NIC:        testguest.NIC{DeviceProps: []string{"guest_rsc_ext=on", "rsc_interval=200000000"}},
		RscvmProps: []string{"x-rsc-batch-flush=off"}, Frames: frames(segs...)}
}

// plainFrames are the frames of the device-property cases: an empty segment,
// small and full-size segments of one flow.
func plainFrames() [][]byte {
	return frames(seg{seq: 1, len: 0}, seg{seq: 1, len: 46, flags: header.TCPFlagACK | header.TCPFlagPSH},
		seg{seq: 47, len: 1460}, seg{seq: 1507, len: 200})
}

const (
	pshReason       = "QEMU (a)5: SCU takes the last segment's TCP flags, PSH of an earlier segment lost (not itemised in (b))"
	gapReason       = "QEMU (b)11: the exception segment (D4) never starts a new SCU"
	ackCountReason  = "QEMU (b)7: the window-update pure ACK is merged and counted as a segment"
	dupAckReason    = "QEMU (b)7: dup ACKs at H.NXT are swallowed into the SCU and counted"
	ecnV4Reason     = "QEMU (b)15: ECN-enabled IPv4 (ECT in TOS) never coalesces"
	ecnV6Reason     = "QEMU (b)2: IPv6 ECN test masks DSCP bits, the CE segment is merged and CE lost"
	tsReason        = "QEMU (b)15: any TCP option (identical timestamps) disables coalescing"
	bypassReason    = "QEMU (b)10: the bypassed segment is delivered before the flow's pending SCU (reordering)"
	needsCsumReason = "QEMU (b)4: a cached packet drained uncoalesced loses NEEDS_CSUM (flags zeroed, partial checksum left in the frame)"
	padReason       = "QEMU (b)3/(b)7: no trim to IP length; the padded pure ACK is merged and its pad bytes enter the stream"
)

func withKnown(c Case, k ...Known) Case {
	c.Known = k
	return c
}

// Cases returns every case, device-property cases first.
func Cases() []Case {
	mqFeatures := strconv.FormatUint(0x1008799a7|1<<22, 16)
	cs := []Case{
		{Name: "defaults", About: "default device, NetKVM-like driver, tx + rx",
			Cmdline: base + " tx=2", Frames: plainFrames()},
		{Name: "mq=on", About: "mq=on, tap queues=2, MQ negotiated, VQ_PAIRS_SET 2,3,0,1",
			Cmdline: base + " ctrl=mq:2,mq:3,mq:0,mq:1 features=0x" + mqFeatures,
			NIC:     testguest.NIC{MultiQueue: true, NetdevProps: []string{"queues=2"}, DeviceProps: []string{"mq=on"}},
			Frames:  plainFrames()},
		{Name: "disable-legacy=on", About: "modern-only device (1af4:1041)",
			Cmdline: base, NIC: testguest.NIC{DeviceProps: []string{"disable-legacy=on"}}, Frames: plainFrames()},
		{Name: "csum=off", About: "csum=off: no CSUM (and so no HOST_TSO) offered",
			Cmdline: base + " tx=2 txcsum=1", NIC: testguest.NIC{DeviceProps: []string{"csum=off"}}, Frames: plainFrames()},
		{Name: "mrg_rxbuf=off", About: "mrg_rxbuf=off: big buffers, jumbo frame",
			Cmdline: base, NIC: testguest.NIC{MTU: 9000, DeviceProps: []string{"mrg_rxbuf=off"}},
			Frames: append(plainFrames(), seg{seq: 1707, len: 8960}.frame())},
		{Name: "legacy", About: "transitional device driven through the legacy interface",
			Cmdline: base + " legacy=1 tx=1", Frames: plainFrames()},
		{Name: "ctrl", About: "control queue answers (TestNetCtrl's command list)",
			Cmdline: "net=1 pci=0 memmap=0 " + ctrlCmdline},
		{Name: "guest_rsc_ext=on,rsc_interval=1000000", About: "(a)1/(a)53: 10 in-order segments, 1 ms interval",
			Cmdline:    rscBase,
			NIC:        testguest.NIC{DeviceProps: []string{"guest_rsc_ext=on", "rsc_interval=1000000"}},
			RscvmProps: []string{"x-rsc-batch-flush=off"}, Frames: frames(burst(1000, 10, 1448)...),
			Stream: "nondeterministic packet split (QEMU's 1 ms timer under TCG): compared the reassembled TCP stream"},
		rscCase("rsc-inorder", "(a)1 basic v4: 10 x 1448 in order -> SCU(10)", burst(1000, 10, 1448)...),
		rscCase("rsc-lone", "(a)3 lone segment -> plain", seg{seq: 1000, len: 1448}),
		rscCase("rsc-fin", "(a)6 D x3 + FIN -> SCU(3), FIN plain",
			append(burst(1000, 3, 1000), seg{seq: 4000, len: 100, flags: header.TCPFlagACK | header.TCPFlagFIN})...),
		withKnown(rscCase("rsc-psh", "(a)5 PSH mid-stream: D x3, 2nd PSH",
			seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000, flags: header.TCPFlagACK | header.TCPFlagPSH},
			seg{seq: 3000, len: 1000}),
			// The TCP flags byte (offset 47) and the checksums.
			Known{Record: "rx n=0", Field: "data", Offsets: []int{24, 25, 47, 50, 51}, Reason: pshReason},
			Known{Record: "rx n=0", Field: "sum", Offsets: []int{24, 25, 47, 50, 51}, Reason: pshReason},
			Known{Record: "stream", Field: "tcpflags", QEMU: "10", Rscvm: "18", Reason: pshReason}),
		withKnown(rscCase("rsc-gap", "(a)20 out-of-order: D1 D2 (D3 lost) D4 D5",
			seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 4000, len: 1000}, seg{seq: 5000, len: 1000}),
			// QEMU: D4 plain, D5 alone (3 packets); rscvm: D4+D5 as SCU(2).
			Known{Record: "rx n=1", Field: "len", QEMU: "1054", Rscvm: "2054", Reason: gapReason},
			Known{Record: "rx n=1", Field: "flags", QEMU: "00", Rscvm: "05", Reason: gapReason},
			Known{Record: "rx n=1", Field: "gso_type", QEMU: "00", Rscvm: "01", Reason: gapReason},
			Known{Record: "rx n=1", Field: "hdr_len", QEMU: "0", Rscvm: "54", Reason: gapReason},
			Known{Record: "rx n=1", Field: "gso_size", QEMU: "0", Rscvm: "1000", Reason: gapReason},
			Known{Record: "rx n=1", Field: "csum_start", QEMU: "0", Rscvm: "2", Reason: gapReason},
			Known{Record: "rx n=1", Field: "sum", Reason: gapReason},
			Known{Record: "rx n=1", Field: "data", Reason: gapReason},
			Known{Record: "rx n=2", Rscvm: absent, Reason: gapReason},
			Known{Record: "rsc n=1", QEMU: absent, Reason: gapReason},
			Known{Record: "rxend", Field: "packets", QEMU: "3", Rscvm: "2", Reason: gapReason}),
		rscCase("rsc-pureack", "(a)24 pure cumulative ACKs a1<a2<a3",
			seg{seq: 1000, ack: 1000}, seg{seq: 1000, ack: 2000}, seg{seq: 1000, ack: 3000}),
		rscCase("rsc-flows", "(a)33 interleaved flows A1 B1 A2 B2 A3",
			seg{seq: 1000, len: 1000}, seg{seq: 5000, len: 1000, srcPort: 5002}, seg{seq: 2000, len: 1000},
			seg{seq: 6000, len: 1000, srcPort: 5002}, seg{seq: 3000, len: 1000}),
		withKnown(rscCase("rsc-winupdate", "(a)25 D x5 then window update",
			append(burst(1000, 5, 1000), seg{seq: 6000, win: 2048})...),
			Known{Record: "rx n=0", Field: "csum_start", QEMU: "6", Rscvm: "5", Reason: ackCountReason},
			Known{Record: "rsc n=0", Field: "segs", QEMU: "6", Rscvm: "5", Reason: ackCountReason},
			Known{Record: "stream", Field: "segments", QEMU: "6", Rscvm: "5", Reason: ackCountReason}),
		withKnown(rscCase("rsc-dupack", "(a)26 D x3 then 3 dup ACKs",
			append(burst(1000, 3, 1000), seg{seq: 4000}, seg{seq: 4000}, seg{seq: 4000})...),
			Known{Record: "rx n=0", Field: "csum_start", QEMU: "6", Rscvm: "3", Reason: dupAckReason},
			Known{Record: "rsc n=0", Field: "segs", QEMU: "6", Rscvm: "3", Reason: dupAckReason},
			Known{Record: "rxend", Field: "packets", QEMU: "1", Rscvm: "4", Reason: dupAckReason},
			Known{Record: "rx n=1", QEMU: absent, Reason: dupAckReason},
			Known{Record: "rx n=2", QEMU: absent, Reason: dupAckReason},
			Known{Record: "rx n=3", QEMU: absent, Reason: dupAckReason}),
	}
	cs = append(cs,
		rscCase("rsc6-inorder", "(a)2 basic v6: 10 x 1440 in order -> SCU(10) TCPV6", v6(burst(1000, 10, 1440))...),
		rscCase("rsc6-fin", "(a)6 on v6: D x3 + FIN -> SCU(3), FIN plain",
			v6(append(burst(1000, 3, 1000), seg{seq: 4000, len: 100, flags: header.TCPFlagACK | header.TCPFlagFIN}))...),
		withKnown(rscCase("rsc-ecn-ce", "(a)11 v4 ECT(0) x2 then CE",
			seg{seq: 1000, len: 1000, tos: 2}, seg{seq: 2000, len: 1000, tos: 2}, seg{seq: 3000, len: 1000, tos: 3}),
			// QEMU: 3 plain packets; rscvm: SCU(2) then the CE segment plain.
			knownRecords(ecnV4Reason, "rx n=0", "rx n=1", "rx n=2", "rsc n=0", "rxend")...),
		withKnown(rscCase("rsc6-ecn-ce", "(a)12 v6 ECT(0) x2 then CE",
			v6([]seg{{seq: 1000, len: 1000, tos: 2}, {seq: 2000, len: 1000, tos: 2}, {seq: 3000, len: 1000, tos: 3}})...),
			// QEMU: SCU(3) with the CE mark lost; rscvm: SCU(2), CE segment plain.
			knownRecords(ecnV6Reason, "rx n=0", "rx n=1", "rsc n=0", "rxend", "stream")...),
		withKnown(rscCase("rsc-ts", "(a)14 identical timestamp option x5", withOpts(burst(1000, 5, 1000), tsOpt)...),
			// QEMU: 5 plain packets; rscvm: SCU(5).
			knownRecords(tsReason, "rx n=0", "rx n=1", "rx n=2", "rx n=3", "rx n=4", "rsc n=0", "rxend")...),
		rscCase("rsc-rst", "(a)7 D x2 then RST",
			seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 3000, flags: header.TCPFlagRST | header.TCPFlagACK}),
		withKnown(rscCase("rsc-syn", "(a)8 D x2 then SYN",
			seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 999, flags: header.TCPFlagSYN}),
			// QEMU: SYN, then SCU(2); rscvm: SCU(2), then SYN.
			knownRecords(bypassReason, "rx n=0", "rx n=1", "rsc n=0", "rsc n=1")...),
		rscCase("rsc-urg", "(a)9 D x2 then URG",
			seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000},
			seg{seq: 3000, len: 1000, flags: header.TCPFlagACK | header.TCPFlagURG}),
		rscCase("rsc-retrans", "(a)21 D1..D3 then D1 again",
			append(burst(1000, 3, 1000), seg{seq: 1000, len: 1000})...),
		rscCase("rsc-overlap", "(a)22 D1 D2 then a segment overlapping D2",
			seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 2500, len: 1000}),
		withKnown(rscCase("rsc-ipopts", "(a)16 D x2 then IHL 6 (router alert)",
			seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 3000, len: 1000, ipOpts: raOpt}),
			// QEMU: the IHL 6 segment, then SCU(2) (stream out of order); rscvm: SCU(2), then it.
			knownRecords(bypassReason, "rx n=0", "rx n=1", "rsc n=0", "rsc n=1", "stream")...),
		withKnown(rscCase("rsc-frag", "(a)17 D x2 then an MF=1 first fragment",
			seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 3000, len: 1000, mf: true}),
			// QEMU: the fragment, then SCU(2); rscvm: SCU(2), then the fragment.
			knownRecords(bypassReason, "rx n=0", "rx n=1", "rsc n=0", "rsc n=1", "stream")...),
		withKnown(rscCase("rsc-pad", "(a)35 padded pure ACK then D x3",
			seg{seq: 1000, pad: 6}, seg{seq: 1000, len: 1000}, seg{seq: 2000, len: 1000}, seg{seq: 3000, len: 1000}),
			// QEMU: one SCU(4) of 3060 bytes whose payload starts with the 6
			// pad bytes; rscvm: the 60-byte ACK plain, then SCU(3).
			knownRecords(padReason, "rx n=0", "rx n=1", "rsc n=0", "rsc n=1", "rxend", "stream")...),
		withKnown(vnetCase("rsc-lone-needscsum", "(a)3/(a)42 lone segment injected with NEEDS_CSUM: header kept",
			header.VirtioNetHdrFNeedsCsum),
			Known{Record: "rx n=0", Field: "flags", QEMU: "00", Rscvm: "01", Reason: needsCsumReason}),
		vnetCase("rsc-lone-vnet0", "(a)3 lone segment injected with a zero virtio-net header", 0),
	)
	return append(cs, scenarioCases()...)
}

// vnetCase is rsc-lone with the frame injected with a virtio-net header
// carrying flags; with NEEDS_CSUM the frame holds the partial (pseudo-header)
// TCP checksum and the header csum_start/csum_offset.
func vnetCase(name, about string, flags uint8) Case {
	c := rscCase(name, about, seg{seq: 1000, len: 1448, partial: flags&header.VirtioNetHdrFNeedsCsum != 0})
	h := header.VirtioNetHdr{Flags: flags}
	if flags&header.VirtioNetHdrFNeedsCsum != 0 {
		h.CsumStart, h.CsumOffset = 34, header.TCPChecksumOffset
	}
	c.Vnet = &h
	return c
}

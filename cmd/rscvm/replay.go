package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/pcap"
	"github.com/rscvm/rscvm/rsc"
)

// rscUsage is the help text for `rscvm rsc`.
func rscUsage() string {
	return "usage: rscvm rsc <subcommand> [flags]\n\nOffline tools for the RSC engine.\n\nsubcommands:\n  replay     run the engine over a pcap capture\n\n" + replayUsage()
}

// runRSCCommand dispatches `rscvm rsc <subcommand>`.
func runRSCCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "rsc", "subcommand", rscUsage, []subcommand{{"replay",
		func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			opts, err := parseReplayArgs(args)
			if err != nil {
				return fmt.Errorf("rsc replay: %w", err)
			}
			return runReplay(ctx, opts, stdout, stderr)
		}}}, args, stdout, stderr)
}

// tapFlags is the vnet-header checksum state the TAP gives each frame.
type tapFlags string

const (
	tapFlagsNone      tapFlags = "none"
	tapFlagsDataValid tapFlags = "data_valid"
	tapFlagsNeedsCsum tapFlags = "needs_csum"
)

// replayOptions is what `rscvm rsc replay` was asked to do.
type replayOptions struct {
	In, Out        string
	JSON           bool
	Interval       time.Duration
	TapFlags       tapFlags
	IPv4Only       bool
	IPv6Only       bool
	Batch          int
	BatchGap       time.Duration
	FlushBatchEnd  bool
	GSO            bool
	CompatChecksum bool
	Timestamps     bool
	MaxFlows       int
	RxBuf          int
}

const (
	defaultReplayInterval = 300 * time.Microsecond
	defaultReplayBatch    = 64
	defaultReplayBatchGap = 5 * time.Microsecond
	maxReplayInterval     = math.MaxUint32 // ns, like the device's rsc_interval property
)

// enumValue is a flag.Value accepting one of a fixed set of words.
type enumValue struct {
	p       *tapFlags
	allowed []tapFlags
}

func (v enumValue) String() string {
	if v.p == nil {
		return ""
	}
	return string(*v.p)
}

func (v enumValue) Set(s string) error {
	for _, a := range v.allowed {
		if s == string(a) {
			*v.p = a
			return nil
		}
	}
	names := make([]string, len(v.allowed))
	for i, a := range v.allowed {
		names[i] = string(a)
	}
	return fmt.Errorf("accepted values are %s", strings.Join(names, ", "))
}

// nsValue is a flag.Value for a duration in whole nanoseconds.
type nsValue struct {
	p        *time.Duration
	min, max int64
	what     string
}

func (v nsValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatInt(int64(*v.p), 10)
}

func (v nsValue) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < v.min || n > v.max {
		return fmt.Errorf("want %s", v.what)
	}
	*v.p = time.Duration(n)
	return nil
}

// intValue is a flag.Value for a bounded integer.
type intValue struct {
	p        *int
	min, max int
	what     string
}

func (v intValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.Itoa(*v.p)
}

func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < v.min || n > v.max {
		return fmt.Errorf("want %s", v.what)
	}
	*v.p = n
	return nil
}

// replayFlagSet defines the replay flags on a fresh FlagSet writing into o.
func replayFlagSet(o *replayOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("rsc replay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.In, "in", "", "input capture: classic pcap (not pcapng), Ethernet link type; pcap timestamps drive the engine's clock (required)")
	fs.StringVar(&o.Out, "out", "", "write the packets the guest would receive to this pcap file (nanosecond pcap, Ethernet; opens in Wireshark and tcpdump)")
	fs.BoolVar(&o.JSON, "json", false, "write one JSON object per delivered packet to stdout: time_ns, flow, virtio-net header fields (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers; rsc_segments and rsc_dup_acks when RSC_INFO is set), len, sha256 of the frame")
	fs.Var(nsValue{&o.Interval, 0, maxReplayInterval, "a whole number of nanoseconds from 0 to 4294967295"}, "interval",
		"maximum time a segment waits in a coalesced packet, in ns (the device's rsc_interval; default 300000, as QEMU's); 0 disables the timer: packets are flushed only at the end of each read batch")
	fs.Var(enumValue{&o.TapFlags, []tapFlags{tapFlagsNone, tapFlagsDataValid, tapFlagsNeedsCsum}}, "tap-flags",
		"vnet-header checksum flags the TAP would give each frame (default data_valid: a TAP fed by a NIC with receive checksum offload, or by a bridge, marks frames DATA_VALID, which the engine trusts). "+
			"With none the engine verifies TCP checksums in software, so frames captured on the sending host (where tx offload leaves only the pseudo-header sum) are never coalesced. "+
			"needs_csum marks TCP/UDP frames NEEDS_CSUM with csum_start/csum_offset at their checksum, as a TAP does for locally generated traffic")
	fs.BoolVar(&o.IPv4Only, "ipv4-only", false, "coalesce IPv4 only (the guest negotiated GUEST_TSO4 but not GUEST_TSO6); IPv6 passes through")
	fs.BoolVar(&o.IPv6Only, "ipv6-only", false, "coalesce IPv6 only; IPv4 passes through")
	fs.Var(intValue{&o.Batch, 1, 1 << 20, "a whole number of frames from 1 to 1048576"}, "batch",
		"frames per simulated TAP read batch: the device reads at most N frames before it ends a batch (default 64, the device's receive budget per pass)")
	fs.Var(nsValue{&o.BatchGap, 0, math.MaxInt64, "a whole number of nanoseconds ≥ 0"}, "batch-gap",
		"a batch also ends when the next frame arrives more than this many ns after the previous one: the device, taking about this long to receive a frame, would have found the TAP queue empty (default 5000, an estimate of the device's per-frame cost including wake-up; 0 = every frame with a later timestamp starts a new batch). With --batch-flush, frames spaced wider than this are never coalesced, as on the device")
	fs.BoolVar(&o.FlushBatchEnd, "batch-flush", true, "flush every pending packet at the end of each read batch, as the device does by default (its x-rsc-batch-flush property); --batch-flush=false leaves --interval as the only flush timer, like QEMU (with --interval 0 batch ends always flush) (default true)")
	fs.BoolVar(&o.GSO, "gso", false, "x-rsc-gso output: standard GSO headers (NEEDS_CSUM, csum_start/csum_offset at the TCP checksum, no RSC_INFO), for guests without RSC_EXT")
	fs.BoolVar(&o.CompatChecksum, "compat-checksum", false, "RSC_INFO without NEEDS_CSUM and a full TCP checksum in coalesced packets (QEMU-style); by default the TCP checksum field of a coalesced packet holds only the pseudo-header sum, per virtio NEEDS_CSUM semantics")
	fs.BoolVar(&o.Timestamps, "tcp-timestamps", true, "coalesce segments whose only TCP option is a timestamp identical to the first segment's (Linux senders use timestamps on every segment); --tcp-timestamps=false coalesces only option-less segments (default true)")
	fs.Var(intValue{&o.MaxFlows, 1, rsc.MaxFlowsLimit, fmt.Sprintf("a whole number from 1 to %d", rsc.MaxFlowsLimit)}, "max-flows",
		"flows with a pending packet per queue; a new flow in a full table flushes the oldest (default 64)")
	fs.Var(intValue{&o.RxBuf, 0, 1 << 30, "a whole number of bytes ≥ 0"}, "rx-buf",
		"size of the guest's mergeable receive buffers, to compute num_buffers (default 0: one buffer per packet, num_buffers 1)")
	return fs
}

func defaultReplayOptions() *replayOptions {
	return &replayOptions{
		Interval:   defaultReplayInterval,
		TapFlags:   tapFlagsDataValid,
		Batch:      defaultReplayBatch,
		BatchGap:   defaultReplayBatchGap,
		Timestamps: true,
		MaxFlows:   rsc.DefaultMaxFlows,
	}
}

func replayFlagNames() string {
	var names []string
	replayFlagSet(defaultReplayOptions()).VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// parseReplayArgs parses `rscvm rsc replay` flags (one or two dashes, value
// after '=' or as the next argument).
func parseReplayArgs(args []string) (*replayOptions, error) {
	o := defaultReplayOptions()
	fs := replayFlagSet(o)
	if err := fs.Parse(args); err != nil {
		msg := err.Error()
		// The flag package spells flags with one dash; the help uses two.
		msg = strings.Replace(msg, "for flag -", "for flag --", 1)
		msg = strings.Replace(msg, "argument: -", "argument: --", 1)
		msg = strings.Replace(msg, "not defined: -", "not defined: --", 1)
		if strings.HasPrefix(msg, "flag provided but not defined") {
			msg += " (accepted: " + replayFlagNames() + ")"
		}
		return nil, errors.New(msg)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: replay takes only flags (the capture goes in --in)", fs.Arg(0))
	}
	if o.In == "" {
		return nil, errors.New("flag --in is required: the pcap capture to replay")
	}
	if o.IPv4Only && o.IPv6Only {
		return nil, errors.New("flags --ipv4-only and --ipv6-only exclude each other")
	}
	return o, nil
}

// replayFlagOrder is the order of the flags in the help text.
var replayFlagOrder = []string{"in", "out", "json", "interval", "tap-flags", "ipv4-only", "ipv6-only", "batch", "batch-gap",
	"batch-flush", "gso", "compat-checksum", "tcp-timestamps", "max-flows", "rx-buf"}

// replayUsage is the help text for `rscvm rsc replay`.
func replayUsage() string {
	var b strings.Builder
	b.WriteString(`usage: rscvm rsc replay --in trace.pcap [--out coalesced.pcap] [--json] [flags]

Runs the RSC engine over a capture and shows what the virtio-net device would
hand the guest for this traffic. Each frame is fed as if read from the TAP at
its pcap timestamp; the engine's timer fires at the exact deadlines in between.
A read batch ends after --batch frames or at a gap longer than --batch-gap;
the device flushes pending packets at batch ends (--batch-flush).

Coalesced packets are single large Ethernet frames (IP total length / payload
length fixed, IPv4 header checksum recomputed); their TCP checksum field holds
the pseudo-header sum (virtio NEEDS_CSUM semantics: the guest does not verify
it; Wireshark and tcpdump flag it as incorrect) unless --compat-checksum asks
for a full checksum. Uncoalesced frames leave unchanged with the header the
TAP gave them. The defaults model the device's defaults (rsc_interval=300000,
x-rsc-batch-flush=on, TCP timestamp coalescing on, 64 flows per queue).

A summary of the engine's counters goes to stderr. Malformed or truncated
captures are an error naming the file and the record (exit status 1).

flags:
`)
	fs := replayFlagSet(defaultReplayOptions())
	for _, n := range replayFlagOrder {
		f := fs.Lookup(n)
		name := "--" + f.Name
		switch f.Name {
		case "in", "out":
			name += " FILE"
		case "interval", "batch-gap":
			name += " NS"
		case "tap-flags":
			name += " none|data_valid|needs_csum"
		case "batch", "max-flows":
			name += " N"
		case "rx-buf":
			name += " BYTES"
		}
		fmt.Fprintf(&b, "  %s\n%s", name, wrapText(f.Usage, "        ", 100))
	}
	return b.String()
}

// wrapText breaks s into lines of at most width columns, each prefixed by
// indent.
func wrapText(s, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(s) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
	return b.String()
}

// replayPacket is the JSON form of one delivered packet.
type replayPacket struct {
	TimeNs      int64   `json:"time_ns"`
	Flow        string  `json:"flow,omitempty"`
	Flags       uint8   `json:"flags"`
	GSOType     uint8   `json:"gso_type"`
	HdrLen      uint16  `json:"hdr_len"`
	GSOSize     uint16  `json:"gso_size"`
	CsumStart   uint16  `json:"csum_start"`
	CsumOffset  uint16  `json:"csum_offset"`
	NumBuffers  uint16  `json:"num_buffers"`
	RSCSegments *uint16 `json:"rsc_segments,omitempty"`
	RSCDupAcks  *uint16 `json:"rsc_dup_acks,omitempty"`
	Len         int     `json:"len"`
	SHA256      string  `json:"sha256"`
}

// replayer feeds a capture through an engine and records what it delivers.
type replayer struct {
	opts  *replayOptions
	eng   *rsc.Engine
	t0    time.Time     // timestamp of the first record
	now   time.Duration // virtual time of the current engine call
	pw    *pcap.Writer
	js    *json.Encoder
	out   int // packets delivered
	err   error
	deliv func(hdr header.VirtioNetHdr, frame []byte, at time.Time)
}

func (r *replayer) Deliver(hdr header.VirtioNetHdr, frame []byte) bool {
	r.out++
	at := r.t0.Add(r.now)
	if hdr.NumBuffers == 0 {
		hdr.NumBuffers = 1
		if r.opts.RxBuf > 0 {
			hdr.NumBuffers = uint16(min((header.VirtioNetHdrSize+len(frame)+r.opts.RxBuf-1)/r.opts.RxBuf, math.MaxUint16))
		}
	}
	if r.deliv != nil {
		r.deliv(hdr, frame, at)
	}
	if r.err != nil {
		return true
	}
	if r.pw != nil {
		if err := r.pw.WritePacket(pcap.Packet{Time: at, Data: frame}); err != nil {
			r.err = fmt.Errorf("--out: %w", err)
			return true
		}
	}
	if r.js != nil {
		sum := sha256.Sum256(frame)
		p := replayPacket{
			TimeNs: at.UnixNano(), Flow: flowString(frame),
			Flags: hdr.Flags, GSOType: hdr.GSOType, HdrLen: hdr.HdrLen, GSOSize: hdr.GSOSize,
			CsumStart: hdr.CsumStart, CsumOffset: hdr.CsumOffset, NumBuffers: hdr.NumBuffers,
			Len: len(frame), SHA256: hex.EncodeToString(sum[:]),
		}
		if segs, dups, ok := hdr.RSCInfo(); ok {
			p.RSCSegments, p.RSCDupAcks = &segs, &dups
		}
		if err := r.js.Encode(&p); err != nil {
			r.err = fmt.Errorf("--json: %w", err)
		}
	}
	return true
}

// flowString names a TCP/UDP frame's flow ("src:port > dst:port"), or "".
func flowString(frame []byte) string {
	l3, proto, l4, ok := transportOffsets(frame)
	if !ok || (proto != header.ProtocolTCP && proto != header.ProtocolUDP) || len(frame) < l4+4 {
		return ""
	}
	var src, dst netip.Addr
	if header.IPv4(frame[l3:]).Version() == header.IPv4Version {
		ip := header.IPv4(frame[l3:])
		src, dst = netip.AddrFrom4(ip.SrcAddr()), netip.AddrFrom4(ip.DstAddr())
	} else {
		ip := header.IPv6(frame[l3:])
		src, dst = netip.AddrFrom16(ip.SrcAddr()), netip.AddrFrom16(ip.DstAddr())
	}
	sp, dp := header.TCP(frame[l4:]).SrcPort(), header.TCP(frame[l4:]).DstPort()
	name := "tcp"
	if proto == header.ProtocolUDP {
		name = "udp"
	}
	return fmt.Sprintf("%s %s > %s", name, netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp))
}

// transportOffsets finds the IP header and the transport header of an
// Ethernet frame (untagged or one 802.1Q tag; IPv4 not a non-first
// fragment; IPv6 extension headers walked), with full bounds checks.
func transportOffsets(frame []byte) (l3 int, proto uint8, l4 int, ok bool) {
	info, ok := header.Ethernet(frame).Parse()
	if !ok || info.Tags > 1 {
		return 0, 0, 0, false
	}
	l3 = info.HeaderLen
	ipb := frame[l3:]
	switch info.EtherType {
	case header.EtherTypeIPv4:
		ip := header.IPv4(ipb)
		if !ip.IsValid() || ip.FragmentOffset() != 0 {
			return 0, 0, 0, false
		}
		return l3, ip.Protocol(), l3 + ip.HeaderLen(), true
	case header.EtherTypeIPv6:
		proto, off, ok := header.IPv6(ipb).TransportHeader()
		if !ok {
			return 0, 0, 0, false
		}
		return l3, proto, l3 + off, true
	}
	return 0, 0, 0, false
}

// tapHeader returns the vnet header the TAP would attach to frame.
func tapHeader(mode tapFlags, frame []byte) header.VirtioNetHdr {
	switch mode {
	case tapFlagsDataValid:
		return header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}
	case tapFlagsNeedsCsum:
		_, proto, l4, ok := transportOffsets(frame)
		if !ok || l4 > math.MaxUint16 {
			return header.VirtioNetHdr{}
		}
		switch {
		case proto == header.ProtocolTCP && len(frame) >= l4+header.TCPMinSize:
			return header.VirtioNetHdr{Flags: header.VirtioNetHdrFNeedsCsum, CsumStart: uint16(l4), CsumOffset: header.TCPChecksumOffset}
		case proto == header.ProtocolUDP && len(frame) >= l4+header.UDPSize:
			return header.VirtioNetHdr{Flags: header.VirtioNetHdrFNeedsCsum, CsumStart: uint16(l4), CsumOffset: 6}
		}
	}
	return header.VirtioNetHdr{}
}

// engineConfig maps the options to the engine's configuration.
func (o *replayOptions) engineConfig() rsc.Config {
	return rsc.Config{
		IPv4:            !o.IPv6Only,
		IPv6:            !o.IPv4Only,
		Interval:        o.Interval,
		FlushAtBatchEnd: o.FlushBatchEnd,
		MaxFlows:        o.MaxFlows,
		GSOMode:         o.GSO,
		CompatChecksum:  o.CompatChecksum,
		Timestamps:      o.Timestamps,
	}
}

// replayStats summarizes a replay.
type replayStats struct {
	Records, Truncated int
	Out                int
	Engine             rsc.Stats
}

// replayCapture runs the engine over the capture read from in and hands
// every delivered packet to r. name is used in error messages.
func replayCapture(ctx context.Context, name string, in io.Reader, r *replayer) (replayStats, error) {
	var st replayStats
	rd, err := pcap.NewReader(in)
	if err != nil {
		return st, fmt.Errorf("%s: %w", name, err)
	}
	if lt := rd.LinkType(); lt != pcap.LinkTypeEthernet {
		return st, fmt.Errorf("%s: link type %v is not supported: replay needs Ethernet frames (LINKTYPE_ETHERNET, 1); capture on an Ethernet, veth or TAP interface, not with tcpdump -i any", name, lt)
	}
	fcs := rd.Header().FCSLen
	r.eng = rsc.New(r.opts.engineConfig(), r)
	var (
		last    time.Duration
		inBatch int
		started bool
	)
	// advance fires every timer deadline up to t, delivering at the deadline.
	advance := func(t time.Duration) {
		for {
			d, ok := r.eng.NextDeadline()
			if !ok || d > t {
				break
			}
			r.now = max(d, r.now)
			r.eng.Tick(r.now)
		}
	}
	for {
		if st.Records%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return st, err
			}
		}
		p, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("%s: %w", name, err)
		}
		st.Records++
		if p.Truncated() {
			st.Truncated++
		}
		data := p.Data
		if fcs > 0 && len(data) >= fcs && !p.Truncated() {
			data = data[:len(data)-fcs]
		}
		if !started {
			r.t0, started = p.Time, true
		}
		// The engine's clock never goes backwards (captures from several
		// CPUs may be slightly out of order).
		t := max(p.Time.Sub(r.t0), last)
		if inBatch > 0 && (inBatch >= r.opts.Batch || t-last > r.opts.BatchGap) {
			r.now = last
			r.eng.EndBatch(last)
			inBatch = 0
		}
		advance(t)
		r.now = t
		if !r.eng.Input(t, rsc.Frame{Hdr: tapHeader(r.opts.TapFlags, data), Data: data}) {
			return st, errors.New("internal error: the engine refused a frame although the sink never refuses")
		}
		if r.err != nil {
			return st, r.err
		}
		inBatch++
		last = t
	}
	if started {
		r.now = last
		r.eng.EndBatch(last)
		advance(math.MaxInt64)
		r.eng.FlushAll()
	}
	st.Out = r.out
	st.Engine = r.eng.Stats()
	return st, r.err
}

// runReplay implements `rscvm rsc replay`.
func runReplay(ctx context.Context, o *replayOptions, stdout, stderr io.Writer) error {
	in, err := os.Open(o.In)
	if err != nil {
		return fmt.Errorf("rsc replay: --in: %w", err)
	}
	defer in.Close()
	r := &replayer{opts: o}
	var outFile *os.File
	if o.Out != "" {
		if outFile, err = os.Create(o.Out); err != nil {
			return fmt.Errorf("rsc replay: --out: %w", err)
		}
		defer outFile.Close()
		if r.pw, err = pcap.NewWriter(outFile, pcap.LinkTypeEthernet); err != nil {
			return fmt.Errorf("rsc replay: --out %s: %w", o.Out, err)
		}
	}
	var jsonBuf *bufio.Writer
	if o.JSON {
		jsonBuf = bufio.NewWriterSize(stdout, 64<<10)
		r.js = json.NewEncoder(jsonBuf)
		r.js.SetEscapeHTML(false)
	}
	st, err := replayCapture(ctx, o.In, in, r)
	if err != nil {
		return fmt.Errorf("rsc replay: %w", err)
	}
	if jsonBuf != nil {
		if err := jsonBuf.Flush(); err != nil {
			return fmt.Errorf("rsc replay: --json: %w", err)
		}
	}
	if r.pw != nil {
		if err := r.pw.Flush(); err != nil {
			return fmt.Errorf("rsc replay: --out %s: %w", o.Out, err)
		}
		if err := outFile.Close(); err != nil {
			return fmt.Errorf("rsc replay: --out %s: %w", o.Out, err)
		}
	}
	fmt.Fprintln(stderr, replaySummary(o.In, st))
	return nil
}

// replaySummary formats the one-line summary of a replay.
func replaySummary(name string, st replayStats) string {
	e := st.Engine
	var b strings.Builder
	fmt.Fprintf(&b, "rsc replay: %s: %d frames in, %d packets out (%d coalesced packets carrying %d segments, %d payload bytes)",
		name, st.Records, st.Out, e.CoalesceEvents, e.CoalescedSegments, e.CoalescedBytes)
	fmt.Fprintf(&b, "; flushes: timer %d, batch end %d, evictions %d, aborts %d", e.Timer, e.Batch, e.Evictions, e.Aborts)
	reasons := []struct {
		name string
		n    uint64
	}{
		{"not_ip", e.BypassNotIP}, {"not_tcp", e.BypassNotTCP}, {"ip_hacked", e.IPHacked}, {"ip_option", e.IPOption},
		{"ip_frag", e.IPFrag}, {"ip_ecn", e.IPECN}, {"bad_checksum", e.BadChecksum}, {"host_gso", e.HostGSO},
		{"tcp_syn", e.TCPSyn}, {"tcp_ctrl", e.TCPCtrlDrain}, {"tcp_option", e.TCPAllOpt}, {"tcp_ecn", e.TCPECN},
		{"mismatch", e.Mismatch}, {"timestamp", e.Timestamp}, {"pure_ack", e.PureAck}, {"dup_ack", e.DupAck},
		{"ack_out_of_win", e.AckOutOfWin}, {"data_out_of_win", e.DataOutOfWin}, {"data_out_of_order", e.DataOutOfOrder},
		{"oversize", e.OverSize}, {"too_large", e.TooLarge},
	}
	b.WriteString("; exceptions:")
	none := true
	for _, r := range reasons {
		if r.n != 0 {
			fmt.Fprintf(&b, " %s=%d", r.name, r.n)
			none = false
		}
	}
	if none {
		b.WriteString(" none")
	}
	if e.WinUpdate != 0 {
		fmt.Fprintf(&b, "; window updates absorbed %d", e.WinUpdate)
	}
	if st.Truncated != 0 {
		fmt.Fprintf(&b, "; %d records truncated by the capture's snapshot length (passed through uncoalesced)", st.Truncated)
	}
	return b.String()
}

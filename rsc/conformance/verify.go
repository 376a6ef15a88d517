package conformance

import (
	"bytes"
	"fmt"
	"sort"
	"time"

	"github.com/rscvm/rscvm/net/header"
)

// FieldNames lists the packet fields a Field may name.
var FieldNames = []string{
	"flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset", "rsc_info", "gso", "gso_ecn",
	"frame_len", "l2_len", "vlan_tci", "ip_version", "ip_total_len", "ip6_payload_len", "ip_ecn", "ip_tos",
	"ip_ttl", "ip_id", "tcp_seq", "tcp_ack", "tcp_window", "tcp_flags", "tcp_psh", "tcp_cwr", "tcp_ece",
	"tcp_options", "ts_val", "at_ns",
}

// pkt is a parsed delivered packet.
type pkt struct {
	o       Output
	l2      int
	vlan    uint16
	tagged  bool
	v6      bool
	ip      []byte // IP header + datagram as its length says
	l3      int
	tcp     header.TCP
	ipOK    bool
	tcpOK   bool
	payload []byte
}

func parsePkt(o Output) pkt {
	p := pkt{o: o}
	info, ok := header.Ethernet(o.Frame).Parse()
	if !ok {
		return p
	}
	p.l2 = info.HeaderLen
	if tci, ok := header.Ethernet(o.Frame).VLAN(); ok {
		p.vlan, p.tagged = tci, true
	}
	ipb := o.Frame[p.l2:]
	switch info.EtherType {
	case header.EtherTypeIPv4:
		ip := header.IPv4(ipb)
		if !ip.IsValid() {
			return p
		}
		p.l3 = ip.HeaderLen()
		p.ip = ipb[:ip.TotalLength()]
	case header.EtherTypeIPv6:
		ip := header.IPv6(ipb)
		if !ip.IsValid() {
			return p
		}
		p.v6 = true
		p.l3 = header.IPv6MinSize
		p.ip = ipb[:header.IPv6MinSize+int(ip.PayloadLength())]
	default:
		return p
	}
	p.ipOK = true
	if p.l3 > len(p.ip) {
		return p
	}
	p.tcp = header.TCP(p.ip[p.l3:])
	if len(p.tcp) >= header.TCPMinSize && p.tcp.IsValid() {
		p.tcpOK = true
		p.payload = p.tcp.Payload()
	}
	return p
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// field returns the value of a numeric field.
func (p *pkt) field(name string) (uint64, error) {
	h := p.o.Hdr
	switch name {
	case "flags":
		return uint64(h.Flags), nil
	case "gso_type":
		return uint64(h.GSOType), nil
	case "hdr_len":
		return uint64(h.HdrLen), nil
	case "gso_size":
		return uint64(h.GSOSize), nil
	case "csum_start":
		return uint64(h.CsumStart), nil
	case "csum_offset":
		return uint64(h.CsumOffset), nil
	case "rsc_info":
		return b2u(h.Flags&header.VirtioNetHdrFRSCInfo != 0), nil
	case "gso":
		return b2u(h.IsGSO()), nil
	case "gso_ecn":
		return b2u(h.GSOType&header.VirtioNetHdrGSOECN != 0), nil
	case "frame_len":
		return uint64(len(p.o.Frame)), nil
	case "at_ns":
		return uint64(max(p.o.At, 0)), nil
	case "l2_len":
		if p.l2 == 0 {
			return 0, fmt.Errorf("no Ethernet header")
		}
		return uint64(p.l2), nil
	case "vlan_tci":
		if !p.tagged {
			return 0, fmt.Errorf("not VLAN-tagged")
		}
		return uint64(p.vlan), nil
	}
	if !p.ipOK {
		return 0, fmt.Errorf("not a valid IP packet")
	}
	switch name {
	case "ip_version":
		return uint64(p.ip[0] >> 4), nil
	case "ip_total_len":
		if p.v6 {
			return 0, fmt.Errorf("not IPv4")
		}
		return uint64(header.IPv4(p.ip).TotalLength()), nil
	case "ip6_payload_len":
		if !p.v6 {
			return 0, fmt.Errorf("not IPv6")
		}
		return uint64(header.IPv6(p.ip).PayloadLength()), nil
	case "ip_ecn":
		if p.v6 {
			return uint64(header.IPv6(p.ip).ECN()), nil
		}
		return uint64(header.IPv4(p.ip).ECN()), nil
	case "ip_tos":
		if p.v6 {
			return uint64(header.IPv6(p.ip).TrafficClass()), nil
		}
		return uint64(header.IPv4(p.ip).TOS()), nil
	case "ip_ttl":
		if p.v6 {
			return uint64(header.IPv6(p.ip).HopLimit()), nil
		}
		return uint64(header.IPv4(p.ip).TTL()), nil
	case "ip_id":
		if p.v6 {
			return 0, fmt.Errorf("not IPv4")
		}
		return uint64(header.IPv4(p.ip).ID()), nil
	}
	if !p.tcpOK {
		return 0, fmt.Errorf("not a valid TCP segment")
	}
	switch name {
	case "tcp_seq":
		return uint64(p.tcp.Seq()), nil
	case "tcp_ack":
		return uint64(p.tcp.Ack()), nil
	case "tcp_window":
		return uint64(p.tcp.Window()), nil
	case "tcp_flags":
		return uint64(p.tcp.Flags()), nil
	case "tcp_psh":
		return b2u(p.tcp.Flags()&header.TCPFlagPSH != 0), nil
	case "tcp_cwr":
		return b2u(p.tcp.Flags()&header.TCPFlagCWR != 0), nil
	case "tcp_ece":
		return b2u(p.tcp.Flags()&header.TCPFlagECE != 0), nil
	case "ts_val":
		ts, ok := header.ParseTCPTimestamp(p.tcp.Options())
		if !ok {
			return 0, fmt.Errorf("no timestamp option")
		}
		return uint64(ts.TSVal), nil
	}
	return 0, fmt.Errorf("unknown field %q", name)
}

func (p *pkt) checkField(f Field) error {
	if f.Bytes != nil || f.Name == "tcp_options" {
		if f.Name != "tcp_options" {
			return fmt.Errorf("field %s is not a byte string", f.Name)
		}
		if !p.tcpOK {
			return fmt.Errorf("tcp_options: not a valid TCP segment")
		}
		if got := []byte(p.tcp.Options()); !bytes.Equal(got, f.Bytes) {
			return fmt.Errorf("tcp_options % x, want % x", got, f.Bytes)
		}
		return nil
	}
	got, err := p.field(f.Name)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	if !f.Op.holds(got, f.Want) {
		return fmt.Errorf("%s %d, want %s%d", f.Name, got, f.Op, f.Want)
	}
	return nil
}

// checkPacket checks one expectation against output o.
func checkPacket(e Packet, o Output, inputs map[int]*Input) error {
	p := parsePkt(o)
	switch e.Kind {
	case Plain:
		in := inputs[e.Input]
		if in == nil {
			return fmt.Errorf("want input %d unchanged, but there is no input %d", e.Input, e.Input)
		}
		h, ih := o.Hdr, in.Frame.Hdr
		h.NumBuffers, ih.NumBuffers = 0, 0
		if h != ih {
			return fmt.Errorf("want input %d unchanged: header %v, want %v", e.Input, h, ih)
		}
		if !bytes.Equal(o.Frame, in.Frame.Data) {
			return fmt.Errorf("want input %d unchanged: %s", e.Input, diffBytes(o.Frame, in.Frame.Data))
		}
	case SCU:
		segs, dup, ok := o.Hdr.RSCInfo()
		switch {
		case !ok:
			return fmt.Errorf("want SCU(%d), got no RSC_INFO: %v", e.Segs, o.Hdr)
		case int(segs) != e.Segs:
			return fmt.Errorf("SCU: csum_start (segments) %d, want %d", segs, e.Segs)
		case dup != 0:
			return fmt.Errorf("SCU: csum_offset (dup ACKs) %d, want 0", dup)
		case !p.tcpOK:
			return fmt.Errorf("SCU: not a valid TCP segment")
		case p.tcp.Seq() != e.Seq:
			return fmt.Errorf("SCU: seq %d, want %d", p.tcp.Seq(), e.Seq)
		case p.l2+len(p.ip) != len(o.Frame):
			return fmt.Errorf("SCU: IP length %d + L2 %d != %d bytes present", len(p.ip), p.l2, len(o.Frame))
		}
		if want := Pattern(e.Seq, e.Len); !bytes.Equal(p.payload, want) {
			return fmt.Errorf("SCU: payload of %d bytes, want stream bytes [%d,+%d): %s", len(p.payload), e.Seq, e.Len,
				diffBytes(p.payload, want))
		}
	}
	for _, f := range e.Fields {
		if err := p.checkField(f); err != nil {
			return err
		}
	}
	return nil
}

// diffBytes describes the first difference of got and want.
func diffBytes(got, want []byte) string {
	n := min(len(got), len(want))
	for i := 0; i < n; i++ {
		if got[i] != want[i] {
			return fmt.Sprintf("byte %d is %#02x, want %#02x (lengths %d, %d)", i, got[i], want[i], len(got), len(want))
		}
	}
	return fmt.Sprintf("length %d, want %d", len(got), len(want))
}

// Verify checks expectation e for runner r. inputs are all inputs of the
// run (Dropped marks those the runner's receiver drops by rule; expected
// counts are reduced by them), outputs everything delivered, stats the
// engine's counters (nil: unavailable), devStats the device's queue
// counters (nil: not a device runner). It returns the first mismatch.
func Verify(cfg Config, e Expect, r Runner, inputs []Input, outputs []Output, stats, devStats Counters) error {
	dropped := 0
	byNum := map[int]*Input{}
	for i := range inputs {
		in := &inputs[i]
		byNum[in.Num] = in
		if in.Dropped && !in.ScenarioDrop {
			dropped++
		}
	}
	if e.Count >= 0 {
		if want := e.Count - dropped; len(outputs) != want {
			return fmt.Errorf("%d packets delivered, want %d%s", len(outputs), want, outputSummary(outputs))
		}
	}
	if len(outputs) < e.MinCount {
		return fmt.Errorf("%d packets delivered, want at least %d", len(outputs), e.MinCount)
	}
	for _, pe := range e.Packets {
		if pe.Kind == Plain {
			if in := byNum[pe.Input]; in != nil && in.Dropped {
				continue
			}
		}
		start := pe.Index
		if start < 0 {
			start += len(outputs)
		}
		n := max(pe.Span, 1)
		if pe.Span < 0 {
			n = len(outputs) - start
		}
		if start < 0 || start+n > len(outputs) || (n == 0 && pe.Span >= 0) {
			return fmt.Errorf("packet %d: only %d packets delivered", pe.Index, len(outputs))
		}
		for i := start; i < start+n; i++ {
			if _, _, scu := outputs[i].Hdr.RSCInfo(); pe.IfSCU && !scu {
				continue
			}
			if err := checkPacket(pe, outputs[i], byNum); err != nil {
				return fmt.Errorf("packet %d: %w", i, err)
			}
		}
	}
	if e.MaxFrameLen > 0 {
		for i, o := range outputs {
			if len(o.Frame) > e.MaxFrameLen {
				return fmt.Errorf("packet %d: %d bytes, want ≤ %d", i, len(o.Frame), e.MaxFrameLen)
			}
		}
	}
	if stats != nil {
		if err := CheckStats(stats, e.Stats, r); err != nil {
			return err
		}
	}
	if devStats != nil {
		if err := CheckStats(devStats, e.DeviceStats, r); err != nil {
			return fmt.Errorf("device %w", err)
		}
	}
	if e.NoStreamCheck {
		return nil
	}
	// Stream check of the last segment (inputs and outputs after the last
	// reset).
	seg := 0
	for _, in := range inputs {
		seg = max(seg, in.Segment)
	}
	for _, o := range outputs {
		seg = max(seg, o.Segment)
	}
	var frames []Frame
	var at []time.Duration
	for _, in := range inputs {
		if in.Segment == seg && !in.Dropped && !in.ScenarioDrop {
			frames = append(frames, in.Frame)
			at = append(at, in.At)
		}
	}
	var outs []Output
	for _, o := range outputs {
		if o.Segment == seg {
			outs = append(outs, o)
		}
	}
	sets, err := CheckStream(cfg, frames, outs)
	if err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	if e.MaxLatency > 0 {
		for i, set := range sets {
			arrived := at[set[0]]
			for _, j := range set {
				arrived = min(arrived, at[j])
			}
			if lat := outs[i].At - arrived; lat > e.MaxLatency {
				return fmt.Errorf("packet %d delivered %v after its first frame arrived, want ≤ %v", i, lat, e.MaxLatency)
			}
		}
	}
	return nil
}

// outputSummary lists the delivered packets briefly for a count mismatch.
func outputSummary(outputs []Output) string {
	if len(outputs) == 0 || len(outputs) > 8 {
		return ""
	}
	s := " ("
	for i, o := range outputs {
		if i > 0 {
			s += ", "
		}
		if segs, _, ok := o.Hdr.RSCInfo(); ok {
			s += fmt.Sprintf("SCU(%d)", segs)
		} else {
			s += fmt.Sprintf("%dB", len(o.Frame))
		}
	}
	return s + ")"
}

// Select returns the scenarios whose ID matches match (nil: all), whose
// family intersects fam (0: any; scenarios without traffic always match)
// and that runner r can run (0: any), sorted by number.
func Select(all []Scenario, match func(id string) bool, fam Family, r Runner) []Scenario {
	var out []Scenario
	for _, sc := range all {
		if match != nil && !match(sc.ID) {
			continue
		}
		if fam != 0 && sc.Family != 0 && sc.Family&fam == 0 {
			continue
		}
		if r != 0 && sc.Runners&r == 0 {
			continue
		}
		out = append(out, sc)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Num < out[j].Num })
	return out
}

package conformance

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/rscvm/rscvm/net/header"
)

// Size limits of coalesced packets.
const (
	// MaxIPDatagram is the largest IP datagram of a coalesced packet.
	MaxIPDatagram = 65535
	// MaxCoalescedFrame is the largest coalesced frame: one VLAN tag plus
	// MaxIPDatagram.
	MaxCoalescedFrame = header.EthernetMinSize + header.VLANTagSize + MaxIPDatagram
)

// maxFrame is cfg's bound on coalesced frames.
func maxFrame(cfg Config) int {
	if cfg.MaxFrame <= 0 || cfg.MaxFrame > MaxCoalescedFrame {
		return MaxCoalescedFrame
	}
	return cfg.MaxFrame
}

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
func classify(f Frame) ckIn {
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
	switch et {
	case header.EtherTypeIPv4:
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
	case header.EtherTypeIPv6:
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

// CheckStream verifies what a receiver delivered against its input: every
// input is delivered exactly once, a frame that was not coalesced
// byte-identical with its header (NumBuffers is ignored), a coalesced packet
// is a run of consecutive frames of one flow with their concatenated
// payload and a correct header (CheckCoalesced), and no frame overtakes an
// earlier frame of the same flow (or address pair, for frames whose ports
// are unknown). It returns, per output, the indices of the inputs it
// carries.
func CheckStream(cfg Config, inputs []Frame, outputs []Output) ([][]int, error) {
	ins := make([]*ckIn, len(inputs))
	for i, f := range inputs {
		c := classify(f)
		ins[i] = &c
	}
	sets := make([][]int, len(outputs))
	first := 0
	consume := func(set []int) error {
		member := map[int]bool{}
		for _, j := range set {
			member[j] = true
		}
		for _, j := range set {
			for k := first; k < j; k++ {
				if !ins[k].consumed && !member[k] && conflict(ins[k], ins[j]) {
					return fmt.Errorf("input %d delivered before earlier input %d of the same flow", j, k)
				}
			}
		}
		for _, j := range set {
			ins[j].consumed = true
		}
		for first < len(ins) && ins[first].consumed {
			first++
		}
		return nil
	}
	for oi, o := range outputs {
		hdr := o.Hdr
		hdr.NumBuffers = 0
		// Identity: the earliest unconsumed identical input.
		found := -1
		for i := first; i < len(ins); i++ {
			ih := ins[i].f.Hdr
			ih.NumBuffers = 0
			if !ins[i].consumed && ih == hdr && bytes.Equal(ins[i].f.Data, o.Frame) {
				found = i
				break
			}
		}
		if found >= 0 {
			sets[oi] = []int{found}
			if err := consume(sets[oi]); err != nil {
				return sets, fmt.Errorf("output %d: %w", oi, err)
			}
			continue
		}
		// Otherwise a coalesced packet.
		if !hdr.IsGSO() {
			return sets, fmt.Errorf("output %d (%v, %d bytes) matches no input and is not coalesced", oi, hdr, len(o.Frame))
		}
		oc := classify(Frame{Data: o.Frame})
		if oc.class != ckExact || !oc.tcpOK {
			return sets, fmt.Errorf("output %d: coalesced packet not parsable", oi)
		}
		if err := CheckCoalesced(cfg, hdr, o.Frame); err != nil {
			return sets, fmt.Errorf("output %d: %w", oi, err)
		}
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
				return sets, fmt.Errorf("output %d: starts at seq %d, flow's next input has seq %d", oi, oc.seq, c.seq)
			}
			if pos == len(payload) && (len(c.payload) > 0 || lastWin == oc.win) {
				break
			}
			if len(c.payload) > 0 {
				if pos+len(c.payload) > len(payload) || !bytes.Equal(payload[pos:pos+len(c.payload)], c.payload) {
					return sets, fmt.Errorf("output %d: payload mismatch at offset %d (input %d)", oi, pos, i)
				}
				pos += len(c.payload)
				segs++
			}
			set = append(set, i)
			lastWin, lastAck = c.win, c.ack
			minTTL = min(minTTL, c.ttl)
		}
		if pos != len(payload) || len(set) < 2 {
			return sets, fmt.Errorf("output %d: only %d of %d payload bytes matched inputs", oi, pos, len(payload))
		}
		if lastWin != oc.win || lastAck != oc.ack || minTTL != oc.ttl {
			return sets, fmt.Errorf("output %d: win/ack/ttl %d/%d/%d, want %d/%d/%d", oi, oc.win, oc.ack, oc.ttl, lastWin, lastAck, minTTL)
		}
		if segs > 0 && !cfg.GSOMode && int(hdr.CsumStart) != segs {
			return sets, fmt.Errorf("output %d: csum_start %d, want %d segments", oi, hdr.CsumStart, segs)
		}
		sets[oi] = set
		if err := consume(set); err != nil {
			return sets, fmt.Errorf("output %d: %w", oi, err)
		}
	}
	for i, c := range ins {
		if !c.consumed {
			return sets, fmt.Errorf("input %d never delivered", i)
		}
	}
	return sets, nil
}

// CheckCoalesced verifies the invariants of a coalesced packet: Ethernet,
// IPv4 (no options, no MF, valid header checksum, total length = bytes
// present) or IPv6 (payload length = bytes present, TCP next header), ≤
// 65535-byte datagram and within cfg.MaxFrame, gso_type matching the family
// (GSO_ECN iff CWR), hdr_len = L2+L3+L4, 0 < gso_size ≤ payload, flags and
// checksum per mode (default: NEEDS_CSUM|RSC_INFO, csum_start = segments > 0,
// csum_offset 0, TCP checksum field = pseudo-header sum; GSOMode: NEEDS_CSUM
// with csum_start at TCP, offset 16; CompatChecksum: RSC_INFO only, full TCP
// checksum), TCP flags ⊆ {ACK, PSH, ECE, CWR} with ACK.
func CheckCoalesced(cfg Config, hdr header.VirtioNetHdr, frame []byte) error {
	info, ok := header.Ethernet(frame).Parse()
	if !ok {
		return fmt.Errorf("coalesced: bad Ethernet header")
	}
	l2 := info.HeaderLen
	ipb := frame[l2:]
	var l3 int
	var src, dst []byte
	gso := uint8(header.VirtioNetHdrGSOTCPv4)
	if info.EtherType == header.EtherTypeIPv6 {
		ip := header.IPv6(ipb)
		if !ip.IsValid() || 40+int(ip.PayloadLength()) != len(ipb) || ip.NextHeader() != header.ProtocolTCP {
			return fmt.Errorf("coalesced v6: bad length/next header")
		}
		l3, src, dst, gso = 40, ipb[8:24], ipb[24:40], header.VirtioNetHdrGSOTCPv6
	} else {
		ip := header.IPv4(ipb)
		if !ip.IsValid() || int(ip.TotalLength()) != len(ipb) || !ip.IsChecksumValid() || ip.HeaderLen() != 20 {
			return fmt.Errorf("coalesced v4: bad length or header checksum")
		}
		if ip.MF() {
			return fmt.Errorf("coalesced v4: MF set")
		}
		l3, src, dst = 20, ipb[12:16], ipb[16:20]
	}
	if len(ipb) > MaxIPDatagram || len(frame) > maxFrame(cfg) {
		return fmt.Errorf("coalesced packet too large: IP %d, frame %d", len(ipb), len(frame))
	}
	tcp := header.TCP(ipb[l3:])
	if !tcp.IsValid() {
		return fmt.Errorf("coalesced: bad TCP header")
	}
	if hdr.GSOType&^header.VirtioNetHdrGSOECN != gso {
		return fmt.Errorf("coalesced: gso_type %#x", hdr.GSOType)
	}
	if (hdr.GSOType&header.VirtioNetHdrGSOECN != 0) != (tcp.Flags()&header.TCPFlagCWR != 0) {
		return fmt.Errorf("coalesced: GSO_ECN does not match CWR")
	}
	if int(hdr.HdrLen) != l2+l3+tcp.DataOffset() {
		return fmt.Errorf("coalesced: hdr_len %d, want %d", hdr.HdrLen, l2+l3+tcp.DataOffset())
	}
	if hdr.GSOSize == 0 || int(hdr.GSOSize) > len(tcp.Payload()) {
		return fmt.Errorf("coalesced: gso_size %d", hdr.GSOSize)
	}
	seg := []byte(tcp)
	ps := header.PseudoHeaderSum(header.ProtocolTCP, src, dst, uint32(len(seg)))
	switch {
	case cfg.GSOMode:
		if hdr.Flags != header.VirtioNetHdrFNeedsCsum || int(hdr.CsumStart) != l2+l3 || hdr.CsumOffset != 16 {
			return fmt.Errorf("GSO mode header %v", hdr)
		}
		if tcp.Checksum() != ps {
			return fmt.Errorf("GSO mode: TCP checksum field is not the pseudo-header sum")
		}
	case cfg.CompatChecksum:
		if hdr.Flags != header.VirtioNetHdrFRSCInfo || hdr.CsumStart == 0 || hdr.CsumOffset != 0 {
			return fmt.Errorf("compat header %v", hdr)
		}
		if !header.TransportChecksumValid(header.ProtocolTCP, src, dst, seg) {
			return fmt.Errorf("compat: TCP checksum invalid")
		}
	default:
		if hdr.Flags != header.VirtioNetHdrFNeedsCsum|header.VirtioNetHdrFRSCInfo || hdr.CsumStart == 0 || hdr.CsumOffset != 0 {
			return fmt.Errorf("RSC header %v", hdr)
		}
		if tcp.Checksum() != ps {
			return fmt.Errorf("RSC: TCP checksum field is not the pseudo-header sum")
		}
	}
	if fl := tcp.Flags(); fl&^(header.TCPFlagACK|header.TCPFlagPSH|header.TCPFlagECE|header.TCPFlagCWR) != 0 || fl&header.TCPFlagACK == 0 {
		return fmt.Errorf("coalesced: flags %#x", fl)
	}
	return nil
}

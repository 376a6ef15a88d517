// Package pcaptest provides test helpers built on captured traffic: a real
// Linux TCP transfer between two network namespaces captured at the
// receiver (CaptureTransfer), and TCP byte-stream reassembly from frame
// lists (Reassemble) to check that something that rewrites frames — the
// RSC engine, the virtio-net device — delivers exactly the bytes it was
// given. Impair captured traffic with package net/impair.
package pcaptest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"sort"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/pcap"
)

// FlowKey identifies one direction of a TCP connection.
type FlowKey struct {
	Src, Dst netip.AddrPort
}

func (k FlowKey) String() string { return k.Src.String() + "->" + k.Dst.String() }

// Stream is the reassembled byte stream of one TCP flow direction, as a
// receiver would hold it: every payload byte at its sequence number, the
// first copy winning when segments overlap. Bytes never received are holes.
type Stream struct {
	// Base is the sequence number of Data[0]: the SYN's sequence number + 1
	// when a SYN was seen, else the lowest sequence number seen.
	Base uint32
	// Data holds the bytes from Base to the highest byte seen; Have says
	// which of them were received.
	Data []byte
	Have []bool
	// Segments counts frames carrying payload; Payload their payload bytes
	// with multiplicity (retransmissions and duplicates counted again).
	Segments, Payload int
	// Conflicts counts bytes received again with different content.
	Conflicts int
	// SYN and FIN report whether the flow's SYN and FIN were seen.
	SYN, FIN bool
}

// Complete reports whether the stream has no holes.
func (s *Stream) Complete() bool {
	for _, h := range s.Have {
		if !h {
			return false
		}
	}
	return true
}

// Holes returns the number of bytes missing between Base and the end.
func (s *Stream) Holes() int {
	n := 0
	for _, h := range s.Have {
		if !h {
			n++
		}
	}
	return n
}

// SHA256 returns the SHA-256 of Data (meaningful when Complete).
func (s *Stream) SHA256() [32]byte { return sha256.Sum256(s.Data) }

// Diff describes the first difference between s and o (bytes at sequence
// numbers, holes, extent), or returns "" if both hold exactly the same
// bytes at the same sequence numbers.
func (s *Stream) Diff(o *Stream) string {
	if s.Base != o.Base {
		return fmt.Sprintf("base sequence %d vs %d", s.Base, o.Base)
	}
	if len(s.Data) != len(o.Data) {
		return fmt.Sprintf("stream extent %d vs %d bytes (ends at seq %d vs %d)",
			len(s.Data), len(o.Data), s.Base+uint32(len(s.Data)), o.Base+uint32(len(o.Data)))
	}
	for i := range s.Data {
		if s.Have[i] != o.Have[i] {
			return fmt.Sprintf("byte at seq %d (offset %d): present %v vs %v", s.Base+uint32(i), i, s.Have[i], o.Have[i])
		}
		if s.Have[i] && s.Data[i] != o.Data[i] {
			return fmt.Sprintf("byte at seq %d (offset %d): %#02x vs %#02x", s.Base+uint32(i), i, s.Data[i], o.Data[i])
		}
	}
	return ""
}

// Streams maps each TCP flow direction seen to its reassembled stream.
type Streams map[FlowKey]*Stream

// Keys returns the flow keys in a stable order.
func (ss Streams) Keys() []FlowKey {
	keys := make([]FlowKey, 0, len(ss))
	for k := range ss {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}

// Segment is one TCP segment parsed from an Ethernet frame.
type Segment struct {
	Flow    FlowKey
	Seq     uint32
	Flags   uint8
	Payload []byte // aliases the frame, trimmed to the IP length
}

// ParseTCP parses an Ethernet frame (untagged or one 802.1Q tag) holding an
// IPv4 (not a fragment) or IPv6 TCP segment. ok is false for anything else
// or anything malformed. Checksums are not verified.
func ParseTCP(frame []byte) (seg Segment, ok bool) {
	info, ok := header.Ethernet(frame).Parse()
	if !ok || info.Tags > 1 {
		return seg, false
	}
	ipb := frame[info.HeaderLen:]
	var tcpb []byte
	var src, dst netip.Addr
	switch info.EtherType {
	case header.EtherTypeIPv4:
		ip := header.IPv4(ipb)
		if !ip.IsValid() || ip.Protocol() != header.ProtocolTCP || ip.IsFragment() {
			return seg, false
		}
		src, dst = netip.AddrFrom4(ip.SrcAddr()), netip.AddrFrom4(ip.DstAddr())
		tcpb = ipb[ip.HeaderLen():ip.TotalLength()]
	case header.EtherTypeIPv6:
		ip := header.IPv6(ipb)
		if !ip.IsValid() {
			return seg, false
		}
		proto, off, ok := ip.TransportHeader()
		if !ok || proto != header.ProtocolTCP {
			return seg, false
		}
		src, dst = netip.AddrFrom16(ip.SrcAddr()), netip.AddrFrom16(ip.DstAddr())
		tcpb = ipb[off : header.IPv6MinSize+int(ip.PayloadLength())]
	default:
		return seg, false
	}
	tcp := header.TCP(tcpb)
	if !tcp.IsValid() {
		return seg, false
	}
	return Segment{
		Flow:    FlowKey{netip.AddrPortFrom(src, tcp.SrcPort()), netip.AddrPortFrom(dst, tcp.DstPort())},
		Seq:     tcp.Seq(),
		Flags:   tcp.Flags(),
		Payload: tcp.Payload(),
	}, true
}

type piece struct {
	seq  uint32
	data []byte
}

type flowAcc struct {
	syn    bool
	isn    uint32
	first  uint32
	pieces []piece
	s      Stream
}

// Reassemble parses every frame (frames that are not TCP over IPv4/IPv6
// Ethernet are ignored) and reassembles each flow direction's stream.
// Sequence numbers are taken modulo 2³² relative to the flow's first
// segment, so a stream may span the wrap.
func Reassemble(frames []pcap.Packet) Streams {
	accs := map[FlowKey]*flowAcc{}
	for _, f := range frames {
		seg, ok := ParseTCP(f.Data)
		if !ok {
			continue
		}
		a := accs[seg.Flow]
		if a == nil {
			a = &flowAcc{first: seg.Seq}
			accs[seg.Flow] = a
		}
		seq := seg.Seq
		if seg.Flags&header.TCPFlagSYN != 0 {
			if !a.syn {
				a.syn, a.isn = true, seg.Seq
			}
			seq++ // data on a SYN starts after it
		}
		if seg.Flags&header.TCPFlagFIN != 0 {
			a.s.FIN = true
		}
		if len(seg.Payload) > 0 {
			a.pieces = append(a.pieces, piece{seq, seg.Payload})
			a.s.Segments++
			a.s.Payload += len(seg.Payload)
		}
	}
	out := make(Streams, len(accs))
	for k, a := range accs {
		s := a.s
		s.SYN = a.syn
		ref := a.first
		if a.syn {
			ref = a.isn + 1
		}
		// Offsets relative to ref, signed (data before ref is possible
		// without a SYN only through reordering).
		lo, hi := int64(0), int64(0)
		if !a.syn && len(a.pieces) > 0 {
			lo = int64(int32(a.pieces[0].seq - ref))
			hi = lo
		}
		for _, p := range a.pieces {
			off := int64(int32(p.seq - ref))
			lo = min(lo, off)
			hi = max(hi, off+int64(len(p.data)))
		}
		s.Base = ref + uint32(lo)
		s.Data = make([]byte, hi-lo)
		s.Have = make([]bool, hi-lo)
		for _, p := range a.pieces {
			off := int64(int32(p.seq-ref)) - lo
			for i, b := range p.data {
				j := off + int64(i)
				if s.Have[j] {
					if s.Data[j] != b {
						s.Conflicts++
					}
					continue
				}
				s.Data[j], s.Have[j] = b, true
			}
		}
		out[k] = &s
	}
	return out
}

// CompareStreams checks that got holds exactly the flows of want with the
// same bytes at the same sequence numbers and the same payload byte count
// (nothing added, lost or duplicated). It returns one line per problem.
func CompareStreams(want, got Streams) []string {
	var errs []string
	for _, k := range want.Keys() {
		w, g := want[k], got[k]
		if g == nil {
			if w.Payload > 0 {
				errs = append(errs, fmt.Sprintf("%v: flow missing (%d payload bytes expected)", k, w.Payload))
			}
			continue
		}
		if d := w.Diff(g); d != "" {
			errs = append(errs, fmt.Sprintf("%v: %s", k, d))
		}
		if w.Payload != g.Payload {
			errs = append(errs, fmt.Sprintf("%v: %d payload bytes delivered, %d received", k, g.Payload, w.Payload))
		}
		if g.Conflicts != w.Conflicts {
			errs = append(errs, fmt.Sprintf("%v: %d conflicting bytes, input had %d", k, g.Conflicts, w.Conflicts))
		}
	}
	for _, k := range got.Keys() {
		if want[k] == nil {
			errs = append(errs, fmt.Sprintf("%v: unexpected flow", k))
		}
	}
	return errs
}

// Matches reports whether s is complete and holds exactly sent.
func (s *Stream) Matches(sent []byte) bool { return s.Complete() && bytes.Equal(s.Data, sent) }

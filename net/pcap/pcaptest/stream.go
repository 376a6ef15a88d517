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
// The stream is stored sparsely, so any sequence numbers are cheap.
type Stream struct {
	// Base is the sequence number of the stream's first byte: the SYN's
	// sequence number + 1 when a SYN was seen, else the lowest sequence
	// number seen.
	Base uint32
	// Segments counts frames carrying payload; Payload their payload bytes
	// with multiplicity (retransmissions and duplicates counted again).
	Segments, Payload int
	// Conflicts counts bytes received again with different content.
	Conflicts int
	// SYN and FIN report whether the flow's SYN and FIN were seen.
	SYN, FIN bool

	runs []Run // sorted, non-overlapping, non-adjacent
}

// Run is a contiguous range of received bytes starting Offset bytes after
// the stream's Base.
type Run struct {
	Offset int64
	Data   []byte
}

func (r Run) end() int64 { return r.Offset + int64(len(r.Data)) }

// Runs returns the received byte ranges in order; adjacent ranges are
// merged, so a complete stream has at most one run.
func (s *Stream) Runs() []Run { return s.runs }

// Extent returns the number of sequence-space bytes from Base to the last
// byte received.
func (s *Stream) Extent() int64 {
	if len(s.runs) == 0 {
		return 0
	}
	return s.runs[len(s.runs)-1].end()
}

// Holes returns the number of bytes missing between Base and the end.
func (s *Stream) Holes() int64 {
	n := s.Extent()
	for _, r := range s.runs {
		n -= int64(len(r.Data))
	}
	return n
}

// Complete reports whether the stream has no holes.
func (s *Stream) Complete() bool { return s.Holes() == 0 }

// Bytes returns the stream's bytes if it is complete, else nil.
func (s *Stream) Bytes() []byte {
	switch {
	case !s.Complete():
		return nil
	case len(s.runs) == 0:
		return []byte{}
	}
	return s.runs[0].Data
}

// SHA256 returns the SHA-256 of the stream (meaningful when Complete).
func (s *Stream) SHA256() [32]byte { return sha256.Sum256(s.Bytes()) }

// Matches reports whether s is complete and holds exactly sent.
func (s *Stream) Matches(sent []byte) bool { return s.Complete() && bytes.Equal(s.Bytes(), sent) }

// Diff describes the first difference between s and o (bytes at sequence
// numbers, holes, extent), or returns "" if both hold exactly the same
// bytes at the same sequence numbers.
func (s *Stream) Diff(o *Stream) string {
	if s.Base != o.Base && (len(s.runs) > 0 || len(o.runs) > 0) {
		return fmt.Sprintf("base sequence %d vs %d", s.Base, o.Base)
	}
	for i := 0; i < len(s.runs) || i < len(o.runs); i++ {
		if i >= len(s.runs) || i >= len(o.runs) {
			extra, which := o.runs, "second"
			if i < len(s.runs) {
				extra, which = s.runs, "first"
			}
			r := extra[i]
			return fmt.Sprintf("bytes at seq %d..%d (offset %d) only in the %s stream", s.Base+uint32(r.Offset), s.Base+uint32(r.end()), r.Offset, which)
		}
		a, b := s.runs[i], o.runs[i]
		if a.Offset != b.Offset {
			at := min(a.Offset, b.Offset)
			return fmt.Sprintf("byte at seq %d (offset %d): present %v vs %v", s.Base+uint32(at), at, at == a.Offset, at == b.Offset)
		}
		n := min(len(a.Data), len(b.Data))
		for j := range n {
			if a.Data[j] != b.Data[j] {
				at := a.Offset + int64(j)
				return fmt.Sprintf("byte at seq %d (offset %d): %#02x vs %#02x", s.Base+uint32(at), at, a.Data[j], b.Data[j])
			}
		}
		if len(a.Data) != len(b.Data) {
			at := a.Offset + int64(n)
			return fmt.Sprintf("byte at seq %d (offset %d): present %v vs %v", s.Base+uint32(at), at, len(a.Data) > n, len(b.Data) > n)
		}
	}
	return ""
}

// add records data at offset off (relative to a reference), keeping bytes
// already present and counting conflicts.
func (s *Stream) add(off int64, data []byte) {
	end := off + int64(len(data))
	// First run ending after off.
	i := sort.Search(len(s.runs), func(k int) bool { return s.runs[k].end() > off })
	var gaps []Run
	pos := off
	for k := i; k < len(s.runs) && s.runs[k].Offset < end; k++ {
		r := s.runs[k]
		if r.Offset > pos {
			gaps = append(gaps, Run{pos, data[pos-off : r.Offset-off]})
		}
		lo, hi := max(pos, r.Offset), min(end, r.end())
		for j := lo; j < hi; j++ {
			if r.Data[j-r.Offset] != data[j-off] {
				s.Conflicts++
			}
		}
		pos = max(pos, hi)
	}
	if pos < end {
		gaps = append(gaps, Run{pos, data[pos-off:]})
	}
	for _, g := range gaps {
		k := sort.Search(len(s.runs), func(k int) bool { return s.runs[k].Offset > g.Offset })
		s.runs = append(s.runs, Run{})
		copy(s.runs[k+1:], s.runs[k:])
		s.runs[k] = Run{g.Offset, append([]byte(nil), g.Data...)}
	}
}

// finish merges adjacent runs and rebases offsets so the stream starts at
// base (offsets are relative to base afterwards).
func (s *Stream) finish(shift int64) {
	var out []Run
	for _, r := range s.runs {
		r.Offset -= shift
		if n := len(out); n > 0 && out[n-1].end() == r.Offset {
			out[n-1].Data = append(out[n-1].Data, r.Data...)
			continue
		}
		out = append(out, r)
	}
	s.runs = out
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

type flowAcc struct {
	syn   bool
	isn   uint32
	first uint32
	s     Stream
}

// Reassemble parses every frame (frames that are not TCP over IPv4/IPv6
// Ethernet are ignored) and reassembles each flow direction's stream.
// Sequence numbers are taken modulo 2³² relative to the flow's first
// segment (or SYN), so a stream may span the wrap.
func Reassemble(frames []pcap.Packet) Streams {
	accs := map[FlowKey]*flowAcc{}
	type pending struct {
		a    *flowAcc
		seq  uint32
		data []byte
	}
	var pieces []pending
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
			pieces = append(pieces, pending{a, seq, seg.Payload})
			a.s.Segments++
			a.s.Payload += len(seg.Payload)
		}
	}
	// The reference sequence number of each flow is only known once every
	// frame was seen (a SYN may arrive late), so place the bytes now.
	ref := func(a *flowAcc) uint32 {
		if a.syn {
			return a.isn + 1
		}
		return a.first
	}
	for _, p := range pieces {
		p.a.s.add(int64(int32(p.seq-ref(p.a))), p.data)
	}
	out := make(Streams, len(accs))
	for k, a := range accs {
		s := a.s
		s.SYN = a.syn
		r := ref(a)
		var lo int64
		if len(s.runs) > 0 && (!a.syn || s.runs[0].Offset < 0) {
			lo = s.runs[0].Offset
		}
		s.Base = r + uint32(lo)
		s.finish(lo)
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

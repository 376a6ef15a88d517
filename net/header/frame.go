package header

import (
	"encoding/binary"
	"net/netip"
)

// ChecksumMode selects how TCPFrame.Build fills the TCP checksum field.
type ChecksumMode uint8

const (
	// ChecksumFull stores the complete, valid TCP checksum.
	ChecksumFull ChecksumMode = iota
	// ChecksumPartial stores the folded pseudo-header sum, as a sender with
	// checksum offload does (virtio NEEDS_CSUM / CHECKSUM_PARTIAL).
	ChecksumPartial
	// ChecksumBad stores a wrong checksum (the valid one with bits flipped).
	ChecksumBad
	// ChecksumZero stores 0.
	ChecksumZero
)

// IPv6ExtHeader is an IPv6 extension header for TCPFrame. Type is the
// next-header value that identifies it (e.g. IPv6HopByHop, IPv6Fragment).
// Build writes the next-header and length bytes, then Data, then zero padding
// up to a multiple of 8 bytes (for IPv6Fragment the length byte is 0 and Data
// should be the 6 bytes of offset/flags and identification).
type IPv6ExtHeader struct {
	Type uint8
	Data []byte
}

func (x IPv6ExtHeader) size() int { return (2 + len(x.Data) + 7) &^ 7 }

// TCPFrame describes an Ethernet + IPv4/IPv6 + TCP frame for tests and tools.
// The IP family comes from Src and Dst, which must both be IPv4 or both IPv6.
// Build produces correct lengths and checksums unless asked otherwise.
type TCPFrame struct {
	DstMAC, SrcMAC [6]byte
	// VLAN adds one 802.1Q tag with tag control information VLANTCI.
	VLAN    bool
	VLANTCI uint16

	Src, Dst netip.Addr
	// TOS is the IPv4 TOS byte or the IPv6 traffic class (DSCP<<2 | ECN).
	TOS uint8
	// FlowLabel is the IPv6 flow label.
	FlowLabel uint32
	// TTL is the IPv4 TTL / IPv6 hop limit; 0 means 64.
	TTL uint8
	// ID is the IPv4 identification.
	ID uint16
	// DontFragment, MoreFragments and FragmentOffset (bytes) fill the IPv4
	// flags/offset word.
	DontFragment   bool
	MoreFragments  bool
	FragmentOffset uint16
	// IPOptions are IPv4 options, zero-padded to a multiple of 4 (≤ 40 bytes).
	IPOptions []byte
	// ExtHeaders are IPv6 extension headers placed before TCP.
	ExtHeaders []IPv6ExtHeader
	// BadIPChecksum stores a wrong IPv4 header checksum.
	BadIPChecksum bool

	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16
	Urgent           uint16
	// Options are TCP options, zero-padded (EOL) to a multiple of 4 (≤ 40 bytes).
	Options []byte
	Payload []byte
	// Checksum selects the TCP checksum content.
	Checksum ChecksumMode

	// Padding appends this many zero bytes after the IP datagram (Ethernet
	// padding or trailing garbage not covered by the IP length).
	Padding int
}

// IsIPv6 reports whether the frame is IPv6.
func (f TCPFrame) IsIPv6() bool { return f.Src.Is6() && !f.Src.Is4In6() }

// L2Len returns the Ethernet header length (14 or 18).
func (f TCPFrame) L2Len() int {
	if f.VLAN {
		return EthernetMinSize + VLANTagSize
	}
	return EthernetMinSize
}

// L3Len returns the IP header length including IPv4 options or IPv6
// extension headers.
func (f TCPFrame) L3Len() int {
	if f.IsIPv6() {
		n := IPv6MinSize
		for _, x := range f.ExtHeaders {
			n += x.size()
		}
		return n
	}
	return IPv4MinSize + (len(f.IPOptions)+3)&^3
}

// L4Len returns the TCP header length including options.
func (f TCPFrame) L4Len() int { return TCPMinSize + (len(f.Options)+3)&^3 }

// Len returns the length of the built frame.
func (f TCPFrame) Len() int {
	return f.L2Len() + f.L3Len() + f.L4Len() + len(f.Payload) + f.Padding
}

// Build appends the frame to dst and returns the extended slice.
func (f TCPFrame) Build(dst []byte) []byte {
	start := len(dst)
	n := f.Len()
	dst = append(dst, make([]byte, n)...)
	b := dst[start : start+n]

	eth := Ethernet(b)
	eth.SetDstAddr(f.DstMAC)
	eth.SetSrcAddr(f.SrcMAC)
	l2 := f.L2Len()
	etype := uint16(EtherTypeIPv4)
	if f.IsIPv6() {
		etype = EtherTypeIPv6
	}
	if f.VLAN {
		eth.SetType(EtherTypeVLAN)
		binary.BigEndian.PutUint16(b[14:16], f.VLANTCI)
		binary.BigEndian.PutUint16(b[16:18], etype)
	} else {
		eth.SetType(etype)
	}

	l3, l4 := f.L3Len(), f.L4Len()
	ttl := f.TTL
	if ttl == 0 {
		ttl = 64
	}
	seg := b[l2+l3 : l2+l3+l4+len(f.Payload)]
	var pseudo uint16
	if f.IsIPv6() {
		ip := IPv6(b[l2:])
		ip.SetVersionTCFlow(f.TOS, f.FlowLabel)
		ip.SetPayloadLength(uint16(l3 - IPv6MinSize + len(seg)))
		ip.SetHopLimit(ttl)
		src, dst := f.Src.As16(), f.Dst.As16()
		ip.SetSrcAddr(src)
		ip.SetDstAddr(dst)
		next := uint8(ProtocolTCP)
		if len(f.ExtHeaders) > 0 {
			next = f.ExtHeaders[0].Type
		}
		ip.SetNextHeader(next)
		off := l2 + IPv6MinSize
		for i, x := range f.ExtHeaders {
			nh := uint8(ProtocolTCP)
			if i+1 < len(f.ExtHeaders) {
				nh = f.ExtHeaders[i+1].Type
			}
			sz := x.size()
			b[off] = nh
			if x.Type != IPv6Fragment {
				b[off+1] = uint8(sz/8 - 1)
			}
			copy(b[off+2:off+sz], x.Data)
			off += sz
		}
		pseudo = PseudoHeaderSumV6(ProtocolTCP, &src, &dst, uint32(len(seg)))
	} else {
		ip := IPv4(b[l2:])
		ip.SetVersionIHL(l3)
		ip.SetTOS(f.TOS)
		ip.SetTotalLength(uint16(l3 + len(seg)))
		ip.SetID(f.ID)
		ff := (f.FragmentOffset / 8) & IPv4FragOffsetMask
		if f.DontFragment {
			ff |= IPv4FlagDF
		}
		if f.MoreFragments {
			ff |= IPv4FlagMF
		}
		ip.SetFlagsFragment(ff)
		ip.SetTTL(ttl)
		ip.SetProtocol(ProtocolTCP)
		src, dst := f.Src.As4(), f.Dst.As4()
		ip.SetSrcAddr(src)
		ip.SetDstAddr(dst)
		copy(b[l2+IPv4MinSize:l2+l3], f.IPOptions)
		ip.UpdateChecksum()
		if f.BadIPChecksum {
			ip.SetChecksum(ip.Checksum() ^ 0x5a5a)
		}
		pseudo = PseudoHeaderSumV4(ProtocolTCP, src, dst, uint16(len(seg)))
	}

	tcp := TCP(seg)
	tcp.SetSrcPort(f.SrcPort)
	tcp.SetDstPort(f.DstPort)
	tcp.SetSeq(f.Seq)
	tcp.SetAck(f.Ack)
	tcp.SetDataOffset(l4)
	tcp.SetFlags(f.Flags)
	tcp.SetWindow(f.Window)
	tcp.SetUrgentPointer(f.Urgent)
	copy(seg[TCPMinSize:l4], f.Options)
	copy(seg[l4:], f.Payload)
	switch f.Checksum {
	case ChecksumFull:
		tcp.SetChecksum(^Sum(seg, pseudo))
	case ChecksumPartial:
		tcp.SetChecksum(pseudo)
	case ChecksumBad:
		tcp.SetChecksum(^Sum(seg, pseudo) ^ 0xa5a5)
	case ChecksumZero:
	}
	return dst
}

// PartialChecksumHdr returns the virtio-net header a TAP would attach to this
// frame when built with ChecksumPartial: NEEDS_CSUM with csum_start at the
// TCP header and csum_offset 16.
func (f TCPFrame) PartialChecksumHdr() VirtioNetHdr {
	return VirtioNetHdr{
		Flags:      VirtioNetHdrFNeedsCsum,
		CsumStart:  uint16(f.L2Len() + f.L3Len()),
		CsumOffset: TCPChecksumOffset,
	}
}

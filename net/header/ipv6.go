package header

import "encoding/binary"

// IPv6 constants.
const (
	// IPv6MinSize is the size of the fixed IPv6 header.
	IPv6MinSize = 40
	// IPv6Version is the version nibble value.
	IPv6Version = 6
	// IPv6MaxPayloadLength is the largest non-jumbo payload length.
	IPv6MaxPayloadLength = 65535

	// Extension header and related next-header values.
	IPv6HopByHop      = 0
	IPv6Routing       = 43
	IPv6Fragment      = 44
	IPv6ESP           = 50
	IPv6AH            = 51
	IPv6NoNextHeader  = 59
	IPv6DestOptions   = 60
	IPv6Mobility      = 135
	IPv6HIP           = 139
	IPv6Shim6         = 140
	IPv6Experimental1 = 253
	IPv6Experimental2 = 254

	// ipv6MaxExtHeaders bounds the extension-header walk.
	ipv6MaxExtHeaders = 16
)

// IPv6 is a fixed IPv6 header (and what follows). Accessors require
// len ≥ IPv6MinSize.
type IPv6 []byte

// Version returns the IP version nibble.
func (b IPv6) Version() uint8 { return b[0] >> 4 }

// TrafficClass returns the traffic class byte (DSCP << 2 | ECN).
func (b IPv6) TrafficClass() uint8 { return uint8(binary.BigEndian.Uint16(b[0:2]) >> 4) }

// ECN returns the ECN codepoint of the traffic class.
func (b IPv6) ECN() uint8 { return b.TrafficClass() & ECNMask }

// FlowLabel returns the 20-bit flow label.
func (b IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(b[0:4]) & 0xfffff }

// PayloadLength returns the payload length field.
func (b IPv6) PayloadLength() uint16 { return binary.BigEndian.Uint16(b[4:6]) }

// NextHeader returns the next header field of the fixed header.
func (b IPv6) NextHeader() uint8 { return b[6] }

// HopLimit returns the hop limit.
func (b IPv6) HopLimit() uint8 { return b[7] }

// SrcAddr returns the source address.
func (b IPv6) SrcAddr() [16]byte { return [16]byte(b[8:24]) }

// DstAddr returns the destination address.
func (b IPv6) DstAddr() [16]byte { return [16]byte(b[24:40]) }

// Payload returns the bytes covered by the payload length, bounded by the slice.
func (b IPv6) Payload() []byte {
	return b[IPv6MinSize:min(IPv6MinSize+int(b.PayloadLength()), len(b))]
}

// IsValid reports whether b holds a fixed IPv6 header with version 6 and a
// payload length that fits in the slice.
func (b IPv6) IsValid() bool {
	return len(b) >= IPv6MinSize && b.Version() == IPv6Version &&
		IPv6MinSize+int(b.PayloadLength()) <= len(b)
}

// SetVersionTCFlow sets version 6, the traffic class and the flow label.
func (b IPv6) SetVersionTCFlow(tc uint8, flow uint32) {
	binary.BigEndian.PutUint32(b[0:4], IPv6Version<<28|uint32(tc)<<20|flow&0xfffff)
}

// SetTrafficClass sets the traffic class, keeping version and flow label.
func (b IPv6) SetTrafficClass(tc uint8) { b.SetVersionTCFlow(tc, b.FlowLabel()) }

// SetPayloadLength sets the payload length field.
func (b IPv6) SetPayloadLength(v uint16) { binary.BigEndian.PutUint16(b[4:6], v) }

// SetNextHeader sets the next header field.
func (b IPv6) SetNextHeader(v uint8) { b[6] = v }

// SetHopLimit sets the hop limit.
func (b IPv6) SetHopLimit(v uint8) { b[7] = v }

// SetSrcAddr sets the source address.
func (b IPv6) SetSrcAddr(a [16]byte) { copy(b[8:24], a[:]) }

// SetDstAddr sets the destination address.
func (b IPv6) SetDstAddr(a [16]byte) { copy(b[24:40], a[:]) }

// IsIPv6ExtensionHeader reports whether next-header value nh denotes an IPv6
// extension header (RFC 8200 §4 and the IANA registry), including ESP/AH.
func IsIPv6ExtensionHeader(nh uint8) bool {
	switch nh {
	case IPv6HopByHop, IPv6Routing, IPv6Fragment, IPv6ESP, IPv6AH, IPv6DestOptions,
		IPv6Mobility, IPv6HIP, IPv6Shim6, IPv6Experimental1, IPv6Experimental2:
		return true
	}
	return false
}

// HasExtensionHeaders reports whether the fixed header is followed by an
// extension header.
func (b IPv6) HasExtensionHeaders() bool { return IsIPv6ExtensionHeader(b.NextHeader()) }

// TransportHeader walks the extension-header chain (bounded by the payload
// length and the slice) and returns the upper-layer protocol number and the
// offset of its header from the start of b. ok is false if the chain is
// malformed or truncated, ends in ESP or No Next Header, or passes through a
// non-first fragment (whose upper-layer header is elsewhere).
func (b IPv6) TransportHeader() (proto uint8, offset int, ok bool) {
	if len(b) < IPv6MinSize {
		return 0, 0, false
	}
	end := min(IPv6MinSize+int(b.PayloadLength()), len(b))
	nh, off := b.NextHeader(), IPv6MinSize
	for range ipv6MaxExtHeaders {
		switch nh {
		case IPv6HopByHop, IPv6Routing, IPv6DestOptions, IPv6Mobility, IPv6HIP, IPv6Shim6,
			IPv6Experimental1, IPv6Experimental2:
			if off+8 > end {
				return 0, 0, false
			}
			next, l := b[off], (int(b[off+1])+1)*8
			if off+l > end {
				return 0, 0, false
			}
			nh, off = next, off+l
		case IPv6AH:
			if off+8 > end {
				return 0, 0, false
			}
			next, l := b[off], (int(b[off+1])+2)*4
			if off+l > end {
				return 0, 0, false
			}
			nh, off = next, off+l
		case IPv6Fragment:
			if off+8 > end {
				return 0, 0, false
			}
			if binary.BigEndian.Uint16(b[off+2:off+4])&0xfff8 != 0 {
				return 0, 0, false // not the first fragment
			}
			nh, off = b[off], off+8
		case IPv6ESP, IPv6NoNextHeader:
			return 0, 0, false
		default:
			return nh, off, true
		}
	}
	return 0, 0, false
}

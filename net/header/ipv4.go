package header

import "encoding/binary"

// IPv4 constants.
const (
	// IPv4MinSize is the size of an IPv4 header without options.
	IPv4MinSize = 20
	// IPv4MaxHeaderSize is the size of an IPv4 header with 40 option bytes.
	IPv4MaxHeaderSize = 60
	// IPv4MaxTotalLength is the largest IPv4 datagram.
	IPv4MaxTotalLength = 65535
	// IPv4Version is the version nibble value.
	IPv4Version = 4

	// IPv4FlagDF is the Don't Fragment bit in the flags/offset word.
	IPv4FlagDF = 0x4000
	// IPv4FlagMF is the More Fragments bit in the flags/offset word.
	IPv4FlagMF = 0x2000
	// IPv4FragOffsetMask masks the fragment offset (8-byte units).
	IPv4FragOffsetMask = 0x1fff

	// ProtocolTCP is the IP protocol number of TCP.
	ProtocolTCP = 6
	// ProtocolUDP is the IP protocol number of UDP.
	ProtocolUDP = 17
	// ProtocolICMPv6 is the IP protocol number of ICMPv6.
	ProtocolICMPv6 = 58

	// ECNMask masks the ECN field of the IPv4 TOS / IPv6 traffic class byte.
	ECNMask = 0x03
	// ECNNotECT, ECNECT1, ECNECT0 and ECNCE are the ECN codepoints.
	ECNNotECT = 0
	ECNECT1   = 1
	ECNECT0   = 2
	ECNCE     = 3
)

// IPv4 is an IPv4 header (and what follows). Accessors require
// len ≥ IPv4MinSize; use IsValid before trusting length fields.
type IPv4 []byte

// Version returns the IP version nibble.
func (b IPv4) Version() uint8 { return b[0] >> 4 }

// HeaderLen returns IHL×4, the header length in bytes (may be < 20 if bogus).
func (b IPv4) HeaderLen() int { return int(b[0]&0x0f) * 4 }

// OptionsLen returns the number of option bytes implied by IHL (0 if IHL < 5).
func (b IPv4) OptionsLen() int { return max(b.HeaderLen()-IPv4MinSize, 0) }

// TOS returns the type-of-service byte (DSCP << 2 | ECN).
func (b IPv4) TOS() uint8 { return b[1] }

// ECN returns the ECN codepoint.
func (b IPv4) ECN() uint8 { return b[1] & ECNMask }

// TotalLength returns the total length field.
func (b IPv4) TotalLength() uint16 { return binary.BigEndian.Uint16(b[2:4]) }

// ID returns the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[4:6]) }

// FlagsFragment returns the raw flags / fragment offset word.
func (b IPv4) FlagsFragment() uint16 { return binary.BigEndian.Uint16(b[6:8]) }

// DF reports whether the Don't Fragment bit is set.
func (b IPv4) DF() bool { return b.FlagsFragment()&IPv4FlagDF != 0 }

// MF reports whether the More Fragments bit is set.
func (b IPv4) MF() bool { return b.FlagsFragment()&IPv4FlagMF != 0 }

// FragmentOffset returns the fragment offset in bytes.
func (b IPv4) FragmentOffset() uint16 { return (b.FlagsFragment() & IPv4FragOffsetMask) * 8 }

// IsFragment reports whether the datagram is a fragment (MF set or offset ≠ 0).
func (b IPv4) IsFragment() bool { return b.FlagsFragment()&(IPv4FlagMF|IPv4FragOffsetMask) != 0 }

// TTL returns the time-to-live.
func (b IPv4) TTL() uint8 { return b[8] }

// Protocol returns the transport protocol number.
func (b IPv4) Protocol() uint8 { return b[9] }

// Checksum returns the header checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[10:12]) }

// SrcAddr returns the source address.
func (b IPv4) SrcAddr() [4]byte { return [4]byte(b[12:16]) }

// DstAddr returns the destination address.
func (b IPv4) DstAddr() [4]byte { return [4]byte(b[16:20]) }

// Options returns the option bytes, bounded by the slice.
func (b IPv4) Options() []byte {
	hl := b.HeaderLen()
	if hl <= IPv4MinSize || hl > len(b) {
		return nil
	}
	return b[IPv4MinSize:hl]
}

// Payload returns the bytes between the header and the total length, bounded
// by the slice; nil if the lengths are inconsistent.
func (b IPv4) Payload() []byte {
	hl, tl := b.HeaderLen(), int(b.TotalLength())
	if hl < IPv4MinSize || tl < hl || hl > len(b) {
		return nil
	}
	return b[hl:min(tl, len(b))]
}

// IsValid reports whether b holds a well-formed IPv4 header: version 4,
// IHL ≥ 5, IHL×4 ≤ total length ≤ len(b).
func (b IPv4) IsValid() bool {
	if len(b) < IPv4MinSize || b.Version() != IPv4Version {
		return false
	}
	hl, tl := b.HeaderLen(), int(b.TotalLength())
	return hl >= IPv4MinSize && hl <= tl && tl <= len(b)
}

// CalculateChecksum returns the header checksum computed with the checksum
// field taken as zero. b must hold HeaderLen() bytes.
func (b IPv4) CalculateChecksum() uint16 {
	hl := b.HeaderLen()
	s := Sum(b[0:10], 0)
	s = Sum(b[12:hl], s)
	return ^s
}

// IsChecksumValid reports whether the header checksum is correct. It returns
// false if IHL is bogus or the slice is shorter than the header.
func (b IPv4) IsChecksumValid() bool {
	hl := b.HeaderLen()
	if hl < IPv4MinSize || hl > len(b) {
		return false
	}
	return Sum(b[:hl], 0) == 0xffff
}

// SetVersionIHL sets the version to 4 and the header length (bytes, multiple of 4).
func (b IPv4) SetVersionIHL(headerLen int) { b[0] = IPv4Version<<4 | uint8(headerLen/4)&0x0f }

// SetTOS sets the type-of-service byte.
func (b IPv4) SetTOS(v uint8) { b[1] = v }

// SetTotalLength sets the total length field.
func (b IPv4) SetTotalLength(v uint16) { binary.BigEndian.PutUint16(b[2:4], v) }

// SetID sets the identification field.
func (b IPv4) SetID(v uint16) { binary.BigEndian.PutUint16(b[4:6], v) }

// SetFlagsFragment sets the raw flags / fragment offset word.
func (b IPv4) SetFlagsFragment(v uint16) { binary.BigEndian.PutUint16(b[6:8], v) }

// SetTTL sets the time-to-live.
func (b IPv4) SetTTL(v uint8) { b[8] = v }

// SetProtocol sets the protocol number.
func (b IPv4) SetProtocol(v uint8) { b[9] = v }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[10:12], v) }

// SetSrcAddr sets the source address.
func (b IPv4) SetSrcAddr(a [4]byte) { copy(b[12:16], a[:]) }

// SetDstAddr sets the destination address.
func (b IPv4) SetDstAddr(a [4]byte) { copy(b[16:20], a[:]) }

// UpdateChecksum recomputes and stores the header checksum.
func (b IPv4) UpdateChecksum() { b.SetChecksum(b.CalculateChecksum()) }

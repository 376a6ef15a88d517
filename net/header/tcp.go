package header

import "encoding/binary"

// TCP constants.
const (
	// TCPMinSize is the size of a TCP header without options.
	TCPMinSize = 20
	// TCPMaxHeaderSize is the size of a TCP header with 40 option bytes.
	TCPMaxHeaderSize = 60
	// TCPChecksumOffset is the offset of the checksum field in the header.
	TCPChecksumOffset = 16

	// TCP flag bits (byte 13 of the header).
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
	TCPFlagURG = 0x20
	TCPFlagECE = 0x40
	TCPFlagCWR = 0x80

	// TCP option kinds.
	TCPOptionEOL       = 0
	TCPOptionNOP       = 1
	TCPOptionMSS       = 2
	TCPOptionWS        = 3
	TCPOptionSACKPerm  = 4
	TCPOptionSACK      = 5
	TCPOptionTimestamp = 8
	// TCPOptionTimestampLen is the length of the timestamp option.
	TCPOptionTimestampLen = 10
)

// TCP is a TCP header (and what follows). Accessors require len ≥ TCPMinSize.
type TCP []byte

// SrcPort returns the source port.
func (b TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[0:2]) }

// DstPort returns the destination port.
func (b TCP) DstPort() uint16 { return binary.BigEndian.Uint16(b[2:4]) }

// Ports returns source and destination port as one big-endian word.
func (b TCP) Ports() uint32 { return binary.BigEndian.Uint32(b[0:4]) }

// Seq returns the sequence number.
func (b TCP) Seq() uint32 { return binary.BigEndian.Uint32(b[4:8]) }

// Ack returns the acknowledgment number.
func (b TCP) Ack() uint32 { return binary.BigEndian.Uint32(b[8:12]) }

// DataOffset returns the header length in bytes (data offset × 4).
func (b TCP) DataOffset() int { return int(b[12]>>4) * 4 }

// Flags returns the eight flag bits (CWR..FIN).
func (b TCP) Flags() uint8 { return b[13] }

// Window returns the (unscaled) window field.
func (b TCP) Window() uint16 { return binary.BigEndian.Uint16(b[14:16]) }

// Checksum returns the checksum field.
func (b TCP) Checksum() uint16 { return binary.BigEndian.Uint16(b[16:18]) }

// UrgentPointer returns the urgent pointer.
func (b TCP) UrgentPointer() uint16 { return binary.BigEndian.Uint16(b[18:20]) }

// Options returns the option bytes, or nil if the data offset is bogus or
// exceeds the slice.
func (b TCP) Options() []byte {
	do := b.DataOffset()
	if do <= TCPMinSize || do > len(b) {
		return nil
	}
	return b[TCPMinSize:do]
}

// Payload returns the bytes after the header, or nil if the data offset is
// bogus or exceeds the slice.
func (b TCP) Payload() []byte {
	do := b.DataOffset()
	if do < TCPMinSize || do > len(b) {
		return nil
	}
	return b[do:]
}

// IsValid reports whether b holds a complete header with data offset ≥ 5.
func (b TCP) IsValid() bool {
	return len(b) >= TCPMinSize && b.DataOffset() >= TCPMinSize && b.DataOffset() <= len(b)
}

// SetSrcPort sets the source port.
func (b TCP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(b[0:2], v) }

// SetDstPort sets the destination port.
func (b TCP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(b[2:4], v) }

// SetSeq sets the sequence number.
func (b TCP) SetSeq(v uint32) { binary.BigEndian.PutUint32(b[4:8], v) }

// SetAck sets the acknowledgment number.
func (b TCP) SetAck(v uint32) { binary.BigEndian.PutUint32(b[8:12], v) }

// SetDataOffset sets the header length in bytes (multiple of 4).
func (b TCP) SetDataOffset(n int) { b[12] = uint8(n/4)<<4 | b[12]&0x0f }

// SetFlags sets the eight flag bits.
func (b TCP) SetFlags(v uint8) { b[13] = v }

// SetWindow sets the window field.
func (b TCP) SetWindow(v uint16) { binary.BigEndian.PutUint16(b[14:16], v) }

// SetChecksum sets the checksum field.
func (b TCP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[16:18], v) }

// SetUrgentPointer sets the urgent pointer.
func (b TCP) SetUrgentPointer(v uint16) { binary.BigEndian.PutUint16(b[18:20], v) }

// NextTCPOption splits the first option off opts. It returns ok=false when
// opts is empty, starts with EOL, or holds a malformed option (length < 2 or
// beyond the slice). NOP has no data.
func NextTCPOption(opts []byte) (kind uint8, data, rest []byte, ok bool) {
	if len(opts) == 0 || opts[0] == TCPOptionEOL {
		return 0, nil, nil, false
	}
	if opts[0] == TCPOptionNOP {
		return TCPOptionNOP, nil, opts[1:], true
	}
	if len(opts) < 2 || opts[1] < 2 || int(opts[1]) > len(opts) {
		return 0, nil, nil, false
	}
	return opts[0], opts[2:opts[1]], opts[opts[1]:], true
}

// TCPOptionsWellFormed reports whether opts is a well-formed option list:
// options with valid lengths, optionally terminated by EOL followed only by
// zero padding.
func TCPOptionsWellFormed(opts []byte) bool {
	for len(opts) > 0 {
		kind, _, rest, ok := NextTCPOption(opts)
		if !ok {
			return opts[0] == TCPOptionEOL && allZero(opts)
		}
		_ = kind
		opts = rest
	}
	return true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TCPTimestamp is the content of a TCP timestamp option (RFC 7323).
type TCPTimestamp struct {
	TSVal, TSEcr uint32
}

// ParseTCPTimestamp returns the timestamp option of a well-formed option list.
// ok is false if the list is malformed, has no timestamp option, or the
// timestamp option has a wrong length.
func ParseTCPTimestamp(opts []byte) (ts TCPTimestamp, ok bool) {
	if !TCPOptionsWellFormed(opts) {
		return ts, false
	}
	for {
		kind, data, rest, more := NextTCPOption(opts)
		if !more {
			return ts, false
		}
		if kind == TCPOptionTimestamp {
			if len(data) != TCPOptionTimestampLen-2 {
				return ts, false
			}
			return TCPTimestamp{
				TSVal: binary.BigEndian.Uint32(data[0:4]),
				TSEcr: binary.BigEndian.Uint32(data[4:8]),
			}, true
		}
		opts = rest
	}
}

// TCPOptionsTimestampOnly reports whether opts is a well-formed option list
// consisting of exactly one timestamp option plus NOP/EOL padding.
func TCPOptionsTimestampOnly(opts []byte) bool {
	if !TCPOptionsWellFormed(opts) {
		return false
	}
	n := 0
	for {
		kind, data, rest, more := NextTCPOption(opts)
		if !more {
			return n == 1
		}
		switch kind {
		case TCPOptionNOP:
		case TCPOptionTimestamp:
			if len(data) != TCPOptionTimestampLen-2 {
				return false
			}
			n++
		default:
			return false
		}
		opts = rest
	}
}

// SequenceLess reports whether a precedes b in TCP sequence space (mod 2³²).
func SequenceLess(a, b uint32) bool { return int32(a-b) < 0 }

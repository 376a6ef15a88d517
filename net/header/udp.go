package header

import "encoding/binary"

// UDPSize is the size of a UDP header.
const UDPSize = 8

// UDP is a UDP header (and what follows). Accessors require len ≥ UDPSize.
type UDP []byte

// SrcPort returns the source port.
func (b UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[0:2]) }

// DstPort returns the destination port.
func (b UDP) DstPort() uint16 { return binary.BigEndian.Uint16(b[2:4]) }

// Length returns the length field (header plus payload).
func (b UDP) Length() uint16 { return binary.BigEndian.Uint16(b[4:6]) }

// Checksum returns the checksum field.
func (b UDP) Checksum() uint16 { return binary.BigEndian.Uint16(b[6:8]) }

// Payload returns the payload covered by the length field, bounded by the
// slice; nil if the length field is < 8.
func (b UDP) Payload() []byte {
	l := int(b.Length())
	if l < UDPSize {
		return nil
	}
	return b[UDPSize:min(l, len(b))]
}

// IsValid reports whether b holds a header whose length field fits the slice.
func (b UDP) IsValid() bool {
	return len(b) >= UDPSize && int(b.Length()) >= UDPSize && int(b.Length()) <= len(b)
}

// SetSrcPort sets the source port.
func (b UDP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(b[0:2], v) }

// SetDstPort sets the destination port.
func (b UDP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(b[2:4], v) }

// SetLength sets the length field.
func (b UDP) SetLength(v uint16) { binary.BigEndian.PutUint16(b[4:6], v) }

// SetChecksum sets the checksum field.
func (b UDP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[6:8], v) }

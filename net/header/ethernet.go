package header

import "encoding/binary"

// Ethernet sizes and EtherType values.
const (
	// EthernetMinSize is the size of an untagged Ethernet II header.
	EthernetMinSize = 14
	// VLANTagSize is the size of one 802.1Q / 802.1ad tag.
	VLANTagSize = 4
	// EthernetMaxHeaderSize is the largest header Parse accepts (two tags).
	EthernetMaxHeaderSize = EthernetMinSize + 2*VLANTagSize
	// EthernetMinFrameSize is the minimum frame size without FCS (60 bytes):
	// shorter frames are padded on the wire.
	EthernetMinFrameSize = 60

	EtherTypeIPv4 = 0x0800 // IPv4
	EtherTypeARP  = 0x0806 // ARP
	EtherTypeVLAN = 0x8100 // 802.1Q C-tag
	EtherTypeQinQ = 0x88A8 // 802.1ad S-tag
	EtherTypeIPv6 = 0x86DD // IPv6
)

// Ethernet is an Ethernet II header, possibly followed by 802.1Q tags. Methods
// other than Parse and IsValid require len ≥ EthernetMinSize.
type Ethernet []byte

// IsValid reports whether e holds at least an untagged header.
func (e Ethernet) IsValid() bool { return len(e) >= EthernetMinSize }

// DstAddr returns the destination MAC address.
func (e Ethernet) DstAddr() [6]byte { return [6]byte(e[0:6]) }

// SrcAddr returns the source MAC address.
func (e Ethernet) SrcAddr() [6]byte { return [6]byte(e[6:12]) }

// Type returns the outer EtherType (0x8100 for a tagged frame).
func (e Ethernet) Type() uint16 { return binary.BigEndian.Uint16(e[12:14]) }

// SetDstAddr sets the destination MAC address.
func (e Ethernet) SetDstAddr(a [6]byte) { copy(e[0:6], a[:]) }

// SetSrcAddr sets the source MAC address.
func (e Ethernet) SetSrcAddr(a [6]byte) { copy(e[6:12], a[:]) }

// SetType sets the outer EtherType.
func (e Ethernet) SetType(t uint16) { binary.BigEndian.PutUint16(e[12:14], t) }

// IsVLANType reports whether t is an 802.1Q or 802.1ad tag protocol identifier.
func IsVLANType(t uint16) bool { return t == EtherTypeVLAN || t == EtherTypeQinQ }

// VLAN returns the tag control information of the outermost VLAN tag and
// whether the frame is tagged (and long enough to hold the tag).
func (e Ethernet) VLAN() (tci uint16, ok bool) {
	if len(e) < EthernetMinSize+VLANTagSize || !IsVLANType(e.Type()) {
		return 0, false
	}
	return binary.BigEndian.Uint16(e[14:16]), true
}

// EthernetInfo describes a parsed Ethernet header.
type EthernetInfo struct {
	// HeaderLen is the length of the header including tags (14, 18 or 22).
	HeaderLen int
	// EtherType is the payload's EtherType after all tags.
	EtherType uint16
	// Tags is the number of VLAN tags (0..2).
	Tags int
	// TCI is the tag control information of the innermost tag (Tags > 0).
	TCI uint16
	// OuterTCI is the tag control information of the outer tag (Tags == 2).
	OuterTCI uint16
}

// Parse walks the Ethernet header and up to two VLAN tags. It returns false if
// the frame is too short or carries more than two tags.
func (e Ethernet) Parse() (EthernetInfo, bool) {
	var info EthernetInfo
	if len(e) < EthernetMinSize {
		return info, false
	}
	off := 12
	for {
		t := binary.BigEndian.Uint16(e[off : off+2])
		if !IsVLANType(t) {
			info.EtherType = t
			info.HeaderLen = off + 2
			return info, true
		}
		if info.Tags == 2 || len(e) < off+2+VLANTagSize {
			return info, false
		}
		tci := binary.BigEndian.Uint16(e[off+2 : off+4])
		if info.Tags == 0 {
			info.OuterTCI = tci
		}
		info.TCI = tci
		info.Tags++
		off += VLANTagSize
	}
}

// Payload returns the bytes after the (possibly tagged) header, or nil if the
// header cannot be parsed.
func (e Ethernet) Payload() []byte {
	info, ok := e.Parse()
	if !ok {
		return nil
	}
	return e[info.HeaderLen:]
}

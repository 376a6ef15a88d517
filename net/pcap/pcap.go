// Package pcap reads and writes classic libpcap capture files (the format of
// tcpdump -w and Wireshark's "pcap" output; not pcapng).
//
// The Reader accepts both byte orders and both timestamp precisions
// (microsecond magic 0xa1b2c3d4, nanosecond magic 0xa1b23c4d), validates
// every length against the file's snapshot length, MaxCapLen and the
// original packet length, and reports malformed or truncated input as a
// *FormatError naming the record, never by panicking. Iterating records
// reuses one buffer and allocates nothing per record.
//
// The Writer writes nanosecond-precision files in the host-independent
// little-endian byte order, readable by tcpdump, Wireshark and this Reader.
package pcap

import (
	"errors"
	"fmt"
	"time"
)

// File-format constants.
const (
	// MagicMicroseconds is the magic number of a microsecond-precision file
	// as written in its own byte order.
	MagicMicroseconds = 0xa1b2c3d4
	// MagicNanoseconds is the magic number of a nanosecond-precision file.
	MagicNanoseconds = 0xa1b23c4d
	// magicPcapng is the first word of a pcapng file (Section Header Block).
	magicPcapng = 0x0a0d0d0a

	// FileHeaderSize is the size of the global file header.
	FileHeaderSize = 24
	// RecordHeaderSize is the size of a per-packet record header.
	RecordHeaderSize = 16

	// VersionMajor and VersionMinor are the format version the Writer
	// writes (2.4). The Reader accepts any 2.x version.
	VersionMajor = 2
	VersionMinor = 4

	// MaxCapLen is the largest captured length the Reader accepts for one
	// record (tcpdump's default snapshot length) and the snapshot length
	// the Writer declares.
	MaxCapLen = 262144
)

// LinkType is the link-layer header type of a capture (the LINKTYPE_ values
// of tcpdump.org/linktypes.html).
type LinkType uint16

// Link types with names. Only LinkTypeEthernet frames can be replayed
// through the RSC engine; the others are named for clear error messages.
const (
	LinkTypeNull      LinkType = 0   // BSD loopback
	LinkTypeEthernet  LinkType = 1   // IEEE 802.3 Ethernet
	LinkTypeRaw       LinkType = 101 // raw IPv4/IPv6, no link header
	LinkTypeIEEE80211 LinkType = 105 // 802.11 wireless
	LinkTypeLoop      LinkType = 108 // OpenBSD loopback
	LinkTypeLinuxSLL  LinkType = 113 // Linux "cooked" capture (tcpdump -i any)
	LinkTypeRadiotap  LinkType = 127 // 802.11 with radiotap header
	LinkTypeIPv4      LinkType = 228 // raw IPv4
	LinkTypeIPv6      LinkType = 229 // raw IPv6
	LinkTypeLinuxSLL2 LinkType = 276 // Linux "cooked" capture v2
)

var linkTypeNames = map[LinkType]string{
	LinkTypeNull:      "NULL",
	LinkTypeEthernet:  "ETHERNET",
	LinkTypeRaw:       "RAW",
	LinkTypeIEEE80211: "IEEE802_11",
	LinkTypeLoop:      "LOOP",
	LinkTypeLinuxSLL:  "LINUX_SLL",
	LinkTypeRadiotap:  "IEEE802_11_RADIOTAP",
	LinkTypeIPv4:      "IPV4",
	LinkTypeIPv6:      "IPV6",
	LinkTypeLinuxSLL2: "LINUX_SLL2",
}

// String returns "LINKTYPE_NAME (n)" or "LINKTYPE n" for unnamed types.
func (l LinkType) String() string {
	if n, ok := linkTypeNames[l]; ok {
		return fmt.Sprintf("LINKTYPE_%s (%d)", n, uint16(l))
	}
	return fmt.Sprintf("LINKTYPE %d", uint16(l))
}

// Packet is one captured packet.
type Packet struct {
	// Time is the capture timestamp.
	Time time.Time
	// Data holds the captured bytes (at most the snapshot length).
	Data []byte
	// OrigLen is the packet's length on the wire; it is ≥ len(Data), and
	// larger when the capture truncated the packet. The Writer treats 0 as
	// len(Data).
	OrigLen int
}

// Truncated reports whether the capture holds fewer bytes than the packet
// had on the wire.
func (p Packet) Truncated() bool { return p.OrigLen > len(p.Data) }

// Clone returns a copy of p with its own Data.
func (p Packet) Clone() Packet {
	p.Data = append([]byte(nil), p.Data...)
	return p
}

// Errors wrapped by FormatError; test with errors.Is.
var (
	// ErrTruncated: the file ends inside the file header or a record.
	ErrTruncated = errors.New("truncated")
	// ErrNotPcap: the file does not start with a pcap magic number.
	ErrNotPcap = errors.New("not a pcap file")
	// ErrMalformed: a header field has an impossible value.
	ErrMalformed = errors.New("malformed")
)

// FormatError describes malformed or truncated input. Record is the
// 1-based number of the record in which the problem was found, or 0 for
// the file header; Offset is the byte offset of that record's header (or 0).
type FormatError struct {
	Record int
	Offset int64
	Msg    string
	Err    error // ErrTruncated, ErrNotPcap, ErrMalformed or an I/O error
}

func (e *FormatError) Error() string {
	where := "file header"
	if e.Record > 0 {
		where = fmt.Sprintf("record %d (offset %d)", e.Record, e.Offset)
	}
	return fmt.Sprintf("pcap: %s: %s", where, e.Msg)
}

// Unwrap returns the error class.
func (e *FormatError) Unwrap() error { return e.Err }

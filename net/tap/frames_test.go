package tap

import (
	"encoding/binary"
	"net"
)

// Minimal frame builder/parser for the tests (the real packet code lives elsewhere; these are test fixtures).

// vnetHdr is struct virtio_net_hdr_v1 (12 bytes, little-endian).
type vnetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
	NumBuffers uint16
}

const (
	vnetFlagNeedsCsum = 1
	vnetFlagDataValid = 2
	gsoNone           = 0
	gsoTCPv4          = 1
	gsoUDPL4          = 5
	vnetHdrLen        = 12
)

func (h vnetHdr) put(b []byte) {
	b[0], b[1] = h.Flags, h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
	if len(b) >= 12 {
		binary.LittleEndian.PutUint16(b[10:], h.NumBuffers)
	}
}

func (h vnetHdr) bytes() []byte {
	b := make([]byte, vnetHdrLen)
	h.put(b)
	return b
}

func parseVnetHdr(b []byte) vnetHdr {
	return vnetHdr{
		Flags: b[0], GSOType: b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
		NumBuffers: binary.LittleEndian.Uint16(b[10:]),
	}
}

var (
	guestMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	bcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
)

func ether(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	b := make([]byte, 14+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:], typ)
	copy(b[14:], payload)
	return b
}

// csumAdd folds b into a running one's-complement sum.
func csumAdd(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func checksum(b []byte) uint16 { return ^csumFold(csumAdd(0, b)) }

func pseudoSum(src, dst net.IP, proto uint8, length int) uint32 {
	var p [12]byte
	copy(p[0:4], src.To4())
	copy(p[4:8], dst.To4())
	p[9] = proto
	binary.BigEndian.PutUint16(p[10:], uint16(length))
	return csumAdd(0, p[:])
}

func ipv4(src, dst net.IP, proto uint8, id uint16, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], id)
	b[6] = 0x40 // DF
	b[8] = 64
	b[9] = proto
	copy(b[12:16], src.To4())
	copy(b[16:20], dst.To4())
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	copy(b[20:], payload)
	return b
}

func arp(op uint16, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
	copy(b[8:14], sha)
	copy(b[14:18], spa.To4())
	copy(b[18:24], tha)
	copy(b[24:28], tpa.To4())
	return b
}

func icmpEcho(typ uint8, id, seq uint16, data []byte) []byte {
	b := make([]byte, 8+len(data))
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], data)
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

func udp(src, dst net.IP, sport, dport uint16, data []byte) []byte {
	b := make([]byte, 8+len(data))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], data)
	c := ^csumFold(csumAdd(pseudoSum(src, dst, protoUDP, len(b)), b))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[6:], c)
	return b
}

// TCP flag bits.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

func tcp(src, dst net.IP, sport, dport uint16, seq, ack uint32, flags uint8, window uint16, opts, data []byte) []byte {
	hl := 20 + len(opts)
	b := make([]byte, hl+len(data))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12] = uint8(hl/4) << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], window)
	copy(b[20:], opts)
	copy(b[hl:], data)
	binary.BigEndian.PutUint16(b[16:], ^csumFold(csumAdd(pseudoSum(src, dst, protoTCP, len(b)), b)))
	return b
}

// ipv4Packet is a parsed IPv4 frame.
type ipv4Packet struct {
	src, dst net.IP
	proto    uint8
	hdr      []byte // IP header
	l4       []byte // IP payload (up to total length)
}

func parseIPv4Frame(f []byte) (ipv4Packet, bool) {
	if len(f) < 34 || binary.BigEndian.Uint16(f[12:]) != etherTypeIPv4 {
		return ipv4Packet{}, false
	}
	ip := f[14:]
	ihl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[0]>>4 != 4 || ihl < 20 || tot < ihl || tot > len(ip) {
		return ipv4Packet{}, false
	}
	return ipv4Packet{src: net.IP(ip[12:16]), dst: net.IP(ip[16:20]), proto: ip[9], hdr: ip[:ihl], l4: ip[ihl:tot]}, true
}

// l4ChecksumOK verifies a TCP/UDP/ICMP checksum of a fully checksummed packet.
func (p ipv4Packet) l4ChecksumOK() bool {
	if p.proto == protoICMP {
		return checksum(p.l4) == 0
	}
	return ^csumFold(csumAdd(pseudoSum(p.src, p.dst, p.proto, len(p.l4)), p.l4)) == 0
}

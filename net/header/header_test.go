package header

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

var (
	testSrc4 = netip.MustParseAddr("10.0.0.1")
	testDst4 = netip.MustParseAddr("10.0.0.2")
	testSrc6 = netip.MustParseAddr("2001:db8::1")
	testDst6 = netip.MustParseAddr("2001:db8::2")
	tsOpts   = []byte{TCPOptionNOP, TCPOptionNOP, TCPOptionTimestamp, 10, 0, 0, 0, 1, 0, 0, 0, 2}
)

func TestTCPFrameIPv4RoundTrip(t *testing.T) {
	f := TCPFrame{
		DstMAC: [6]byte{2, 0, 0, 0, 0, 2}, SrcMAC: [6]byte{2, 0, 0, 0, 0, 1},
		Src: testSrc4, Dst: testDst4, TOS: 0x2a, TTL: 61, ID: 0x1234, DontFragment: true,
		SrcPort: 40000, DstPort: 5001, Seq: 1000, Ack: 77, Flags: TCPFlagACK | TCPFlagPSH,
		Window: 512, Urgent: 3, Options: tsOpts, Payload: []byte("hello, world!"),
	}
	b := f.Build(nil)
	require.Len(t, b, f.Len())
	eth := Ethernet(b)
	info, ok := eth.Parse()
	require.True(t, ok)
	require.Equal(t, EthernetInfo{HeaderLen: 14, EtherType: EtherTypeIPv4}, info)
	require.Equal(t, f.DstMAC, eth.DstAddr())
	require.Equal(t, f.SrcMAC, eth.SrcAddr())
	_, tagged := eth.VLAN()
	require.False(t, tagged)

	ip := IPv4(b[14:])
	require.True(t, ip.IsValid())
	require.True(t, ip.IsChecksumValid())
	require.Equal(t, uint8(4), ip.Version())
	require.Equal(t, 20, ip.HeaderLen())
	require.Equal(t, 0, ip.OptionsLen())
	require.Equal(t, uint8(0x2a), ip.TOS())
	require.Equal(t, uint8(2), ip.ECN())
	require.Equal(t, uint16(20+32+13), ip.TotalLength())
	require.Equal(t, uint16(0x1234), ip.ID())
	require.True(t, ip.DF())
	require.False(t, ip.MF())
	require.False(t, ip.IsFragment())
	require.Equal(t, uint8(61), ip.TTL())
	require.Equal(t, uint8(ProtocolTCP), ip.Protocol())
	require.Equal(t, testSrc4.As4(), ip.SrcAddr())
	require.Equal(t, testDst4.As4(), ip.DstAddr())
	require.Equal(t, ip.CalculateChecksum(), ip.Checksum())

	tcp := TCP(ip.Payload())
	require.True(t, tcp.IsValid())
	require.Equal(t, uint16(40000), tcp.SrcPort())
	require.Equal(t, uint16(5001), tcp.DstPort())
	require.Equal(t, uint32(40000)<<16|5001, tcp.Ports())
	require.Equal(t, uint32(1000), tcp.Seq())
	require.Equal(t, uint32(77), tcp.Ack())
	require.Equal(t, 32, tcp.DataOffset())
	require.Equal(t, uint8(TCPFlagACK|TCPFlagPSH), tcp.Flags())
	require.Equal(t, uint16(512), tcp.Window())
	require.Equal(t, uint16(3), tcp.UrgentPointer())
	require.Equal(t, tsOpts, tcp.Options())
	require.Equal(t, []byte("hello, world!"), tcp.Payload())
	src, dst := ip.SrcAddr(), ip.DstAddr()
	require.True(t, TransportChecksumValid(ProtocolTCP, src[:], dst[:], tcp))
	ts, ok := ParseTCPTimestamp(tcp.Options())
	require.True(t, ok)
	require.Equal(t, TCPTimestamp{TSVal: 1, TSEcr: 2}, ts)
	require.True(t, TCPOptionsTimestampOnly(tcp.Options()))

	// Bad and partial checksum modes.
	f.Checksum = ChecksumBad
	f.BadIPChecksum = true
	b = f.Build(b[:0])
	require.False(t, IPv4(b[14:]).IsChecksumValid())
	require.False(t, TransportChecksumValid(ProtocolTCP, src[:], dst[:], b[34:]))
	f.Checksum = ChecksumPartial
	b = f.Build(b[:0])
	require.Equal(t, PseudoHeaderSumV4(ProtocolTCP, src, dst, uint16(len(b)-34)), TCP(b[34:]).Checksum())
	h := f.PartialChecksumHdr()
	require.Equal(t, uint16(34), h.CsumStart)
	require.Equal(t, uint16(16), h.CsumOffset)
}

func TestTCPFrameIPv6VLANRoundTrip(t *testing.T) {
	f := TCPFrame{
		VLAN: true, VLANTCI: 0x2064,
		Src: testSrc6, Dst: testDst6, TOS: 0x29, FlowLabel: 0xabcde, TTL: 9,
		ExtHeaders: []IPv6ExtHeader{{Type: IPv6HopByHop, Data: []byte{1, 4, 0, 0, 0, 0}}, {Type: IPv6DestOptions}},
		SrcPort:    1, DstPort: 2, Seq: 0xfffffff0, Ack: 1, Flags: TCPFlagACK, Window: 100,
		Payload: make([]byte, 1448), Padding: 7,
	}
	b := f.Build([]byte{0xaa}) // appends
	require.Equal(t, byte(0xaa), b[0])
	b = b[1:]
	require.Len(t, b, f.Len())
	eth := Ethernet(b)
	tci, ok := eth.VLAN()
	require.True(t, ok)
	require.Equal(t, uint16(0x2064), tci)
	info, ok := eth.Parse()
	require.True(t, ok)
	require.Equal(t, EthernetInfo{HeaderLen: 18, EtherType: EtherTypeIPv6, Tags: 1, TCI: 0x2064, OuterTCI: 0x2064}, info)
	ip := IPv6(eth.Payload())
	require.True(t, ip.IsValid())
	require.Equal(t, uint8(6), ip.Version())
	require.Equal(t, uint8(0x29), ip.TrafficClass())
	require.Equal(t, uint8(1), ip.ECN())
	require.Equal(t, uint32(0xabcde), ip.FlowLabel())
	require.Equal(t, uint8(9), ip.HopLimit())
	require.Equal(t, uint16(16+20+1448), ip.PayloadLength())
	require.True(t, ip.HasExtensionHeaders())
	proto, off, ok := ip.TransportHeader()
	require.True(t, ok)
	require.Equal(t, uint8(ProtocolTCP), proto)
	require.Equal(t, 56, off)
	require.Equal(t, testSrc6.As16(), ip.SrcAddr())
	require.Equal(t, testDst6.As16(), ip.DstAddr())
	tcp := TCP(ip[off : ip.PayloadLength()+40])
	src, dst := ip.SrcAddr(), ip.DstAddr()
	require.True(t, TransportChecksumValid(ProtocolTCP, src[:], dst[:], tcp))
	require.Len(t, ip.Payload(), int(ip.PayloadLength()))

	ip.SetTrafficClass(0x30)
	require.Equal(t, uint8(0x30), ip.TrafficClass())
	require.Equal(t, uint32(0xabcde), ip.FlowLabel())

	// Fragment header: first fragment resolves, later fragment does not.
	f.ExtHeaders = []IPv6ExtHeader{{Type: IPv6Fragment, Data: []byte{0, 1, 0, 0, 0, 9}}}
	b = f.Build(nil)
	ip = IPv6(b[18:])
	_, _, ok = ip.TransportHeader()
	require.True(t, ok)
	f.ExtHeaders[0].Data = []byte{0, 8, 0, 0, 0, 9}
	b = f.Build(nil)
	_, _, ok = IPv6(b[18:]).TransportHeader()
	require.False(t, ok)
}

func TestIPv4FragmentsAndOptions(t *testing.T) {
	f := TCPFrame{Src: testSrc4, Dst: testDst4, MoreFragments: true, FragmentOffset: 16,
		IPOptions: []byte{1, 1, 1}, Payload: []byte{1}}
	b := f.Build(nil)
	ip := IPv4(b[14:])
	require.True(t, ip.IsValid())
	require.True(t, ip.MF())
	require.Equal(t, uint16(16), ip.FragmentOffset())
	require.True(t, ip.IsFragment())
	require.Equal(t, 24, ip.HeaderLen())
	require.Equal(t, 4, ip.OptionsLen())
	require.Equal(t, []byte{1, 1, 1, 0}, ip.Options())
	require.True(t, ip.IsChecksumValid())
	old := ip.TotalLength()
	c := ip.Checksum()
	ip.SetTotalLength(old + 100)
	require.Equal(t, ip.CalculateChecksum(), UpdateChecksum16(c, old, old+100))
	ip.SetTotalLength(1000)
	require.False(t, ip.IsValid())
	ip[0] = 0x44
	require.False(t, ip.IsValid())
	require.False(t, ip.IsChecksumValid())
	require.Nil(t, ip.Payload())
}

func TestTCPOptions(t *testing.T) {
	require.True(t, TCPOptionsWellFormed(nil))
	require.True(t, TCPOptionsWellFormed([]byte{1, 1, 0, 0}))
	require.False(t, TCPOptionsWellFormed([]byte{1, 0, 1}))
	require.False(t, TCPOptionsWellFormed([]byte{8, 10, 0}))
	require.False(t, TCPOptionsWellFormed([]byte{2, 1}))
	require.True(t, TCPOptionsTimestampOnly([]byte{8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0}))
	require.False(t, TCPOptionsTimestampOnly([]byte{1, 1, 1, 1}))
	require.False(t, TCPOptionsTimestampOnly(append([]byte{2, 4, 5, 0xb4}, tsOpts...)))
	require.False(t, TCPOptionsTimestampOnly(append(append([]byte{}, tsOpts...), tsOpts...)))
	require.False(t, TCPOptionsTimestampOnly([]byte{1, 1, 8, 9, 1, 2, 3, 4, 5, 6, 7, 0}))
	_, ok := ParseTCPTimestamp([]byte{1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	require.False(t, ok)
	ts, ok := ParseTCPTimestamp(append([]byte{5, 10, 0, 0, 0, 1, 0, 0, 0, 2}, tsOpts...))
	require.True(t, ok)
	require.Equal(t, TCPTimestamp{1, 2}, ts)
	k, d, rest, ok := NextTCPOption([]byte{2, 4, 5, 0xb4, 1})
	require.True(t, ok)
	require.Equal(t, uint8(2), k)
	require.Equal(t, []byte{5, 0xb4}, d)
	require.Equal(t, []byte{1}, rest)
	require.True(t, SequenceLess(0xfffffff0, 5))
	require.False(t, SequenceLess(5, 0xfffffff0))
}

func TestTCPAccessorsBogus(t *testing.T) {
	b := TCP(make([]byte, 20))
	b.SetDataOffset(16)
	require.False(t, b.IsValid())
	require.Nil(t, b.Payload())
	require.Nil(t, b.Options())
	b.SetDataOffset(60)
	require.False(t, b.IsValid())
	require.Nil(t, b.Options())
}

func TestUDP(t *testing.T) {
	u := UDP(make([]byte, 12))
	u.SetSrcPort(53)
	u.SetDstPort(1234)
	u.SetLength(12)
	u.SetChecksum(0xbeef)
	require.True(t, u.IsValid())
	require.Equal(t, uint16(53), u.SrcPort())
	require.Equal(t, uint16(1234), u.DstPort())
	require.Equal(t, uint16(0xbeef), u.Checksum())
	require.Len(t, u.Payload(), 4)
	u.SetLength(13)
	require.False(t, u.IsValid())
	u.SetLength(3)
	require.Nil(t, u.Payload())
}

func TestEthernetTags(t *testing.T) {
	b := make([]byte, 22)
	e := Ethernet(b)
	e.SetType(EtherTypeQinQ)
	copy(b[14:], []byte{0x00, 0x05, 0x81, 0x00, 0x00, 0x07, 0x86, 0xdd})
	info, ok := e.Parse()
	require.True(t, ok)
	require.Equal(t, EthernetInfo{HeaderLen: 22, EtherType: EtherTypeIPv6, Tags: 2, TCI: 7, OuterTCI: 5}, info)
	b[20], b[21] = 0x81, 0x00
	_, ok = Ethernet(append(b, 0, 0, 0, 0)).Parse()
	require.False(t, ok, "three tags")
	_, ok = Ethernet(b[:16]).Parse()
	require.False(t, ok, "truncated tag")
	_, ok = Ethernet(b[:13]).Parse()
	require.False(t, ok)
	require.Nil(t, Ethernet(b[:5]).Payload())
}

func TestVirtioNetHdr(t *testing.T) {
	h := VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, GSOType: VirtioNetHdrGSOTCPv4 | VirtioNetHdrGSOECN,
		HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16, NumBuffers: 3}
	b := make([]byte, 12)
	require.NoError(t, h.Encode(b))
	require.Equal(t, []byte{1, 0x81, 54, 0, 0xa8, 5, 34, 0, 16, 0, 3, 0}, b)
	g, err := DecodeVirtioNetHdr(b)
	require.NoError(t, err)
	require.Equal(t, h, g)
	require.True(t, g.IsGSO())
	l, err := DecodeVirtioNetHdrLegacy(b[:10])
	require.NoError(t, err)
	h.NumBuffers = 0
	require.Equal(t, h, l)
	require.ErrorIs(t, h.Encode(b[:11]), ErrShortBuffer)
	require.ErrorIs(t, h.EncodeLegacy(b[:9]), ErrShortBuffer)
	require.NoError(t, h.EncodeLegacy(b[:10]))
	_, err = DecodeVirtioNetHdr(b[:11])
	require.ErrorIs(t, err, ErrShortBuffer)
	_, err = DecodeVirtioNetHdrLegacy(b[:9])
	require.ErrorIs(t, err, ErrShortBuffer)
	require.Len(t, h.AppendTo([]byte{9}), 13)

	var r VirtioNetHdr
	_, _, ok := r.RSCInfo()
	require.False(t, ok)
	r.SetRSCInfo(10, 0)
	s, d, ok := r.RSCInfo()
	require.True(t, ok)
	require.Equal(t, uint16(10), s)
	require.Equal(t, uint16(0), d)
	require.False(t, r.IsGSO())
	require.Contains(t, r.String(), "csum_start=10")
}

func TestTCPFrameLiteralBuild(t *testing.T) {
	b := TCPFrame{Src: testSrc4, Dst: testDst4, Payload: []byte{1}}.Build(nil)
	require.Len(t, b, 14+20+20+1)
}

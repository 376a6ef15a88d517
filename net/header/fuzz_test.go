package header

import (
	"net/netip"
	"testing"
)

func seedFrames() [][]byte {
	var out [][]byte
	f4 := TCPFrame{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
		SrcPort: 1, DstPort: 2, Flags: TCPFlagACK, Options: tsOpts, Payload: []byte("abc")}
	out = append(out, f4.Build(nil))
	f4.VLAN, f4.IPOptions = true, []byte{1, 1, 1, 1}
	out = append(out, f4.Build(nil))
	f6 := TCPFrame{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
		ExtHeaders: []IPv6ExtHeader{{Type: IPv6HopByHop}, {Type: IPv6Fragment, Data: make([]byte, 6)}},
		Payload:    []byte("x")}
	out = append(out, f6.Build(nil))
	out = append(out, []byte{}, make([]byte, 14), []byte{0x81, 0x00})
	return out
}

// FuzzEthernetIP parses arbitrary bytes as an Ethernet frame carrying IP/TCP
// through every accessor; it must never panic.
func FuzzEthernetIP(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		eth := Ethernet(b)
		info, ok := eth.Parse()
		_, _ = eth.VLAN()
		_ = eth.Payload()
		if !ok {
			return
		}
		p := b[info.HeaderLen:]
		switch info.EtherType {
		case EtherTypeIPv4:
			if len(p) < IPv4MinSize {
				return
			}
			ip := IPv4(p)
			_ = ip.IsChecksumValid()
			_, _, _ = ip.Options(), ip.Payload(), ip.IsFragment()
			if ip.IsValid() {
				_ = ip.CalculateChecksum()
				fuzzTCP(ip.Payload())
				fuzzUDP(ip.Payload())
			}
		case EtherTypeIPv6:
			if len(p) < IPv6MinSize {
				return
			}
			ip := IPv6(p)
			_, _ = ip.Payload(), ip.HasExtensionHeaders()
			if proto, off, ok := ip.TransportHeader(); ok {
				if off < IPv6MinSize || off > len(p) {
					t.Fatalf("transport offset %d out of range", off)
				}
				if proto == ProtocolTCP {
					fuzzTCP(p[off:])
				}
				if proto == ProtocolUDP {
					fuzzUDP(p[off:])
				}
			}
		}
	})
}

func fuzzUDP(b []byte) {
	if len(b) < UDPSize {
		return
	}
	u := UDP(b)
	_, _, _ = u.IsValid(), u.Payload(), u.Checksum()
}

func fuzzTCP(b []byte) {
	if len(b) < TCPMinSize {
		return
	}
	tcp := TCP(b)
	_, _ = tcp.Options(), tcp.Payload()
	_, _ = ParseTCPTimestamp(tcp.Options())
	_ = TCPOptionsTimestampOnly(tcp.Options())
}

// FuzzTCPOptions checks the option walkers never panic and agree.
func FuzzTCPOptions(f *testing.F) {
	f.Add(tsOpts)
	f.Add([]byte{2, 4, 5, 0xb4, 1, 3, 3, 7})
	f.Add([]byte{8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0})
	f.Add([]byte{8, 0})
	f.Fuzz(func(t *testing.T, opts []byte) {
		wf := TCPOptionsWellFormed(opts)
		_, tsOK := ParseTCPTimestamp(opts)
		only := TCPOptionsTimestampOnly(opts)
		if (tsOK || only) && !wf {
			t.Fatal("timestamp found in malformed options")
		}
		if only && !tsOK {
			t.Fatal("timestamp-only list without parsable timestamp")
		}
	})
}

// FuzzVirtioNetHdr round-trips arbitrary header bytes.
func FuzzVirtioNetHdr(f *testing.F) {
	f.Add([]byte{1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 1, 0})
	f.Add([]byte{4, 4, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeVirtioNetHdr(b)
		if err != nil {
			if len(b) >= VirtioNetHdrSize {
				t.Fatal(err)
			}
		} else {
			out := make([]byte, VirtioNetHdrSize)
			if err := h.Encode(out); err != nil || string(out) != string(b[:VirtioNetHdrSize]) {
				t.Fatalf("round trip: %v %x %x", err, out, b)
			}
		}
		l, err := DecodeVirtioNetHdrLegacy(b)
		if err == nil {
			out := make([]byte, VirtioNetHdrLegacySize)
			if err := l.EncodeLegacy(out); err != nil || string(out) != string(b[:VirtioNetHdrLegacySize]) {
				t.Fatalf("legacy round trip: %v", err)
			}
		}
	})
}

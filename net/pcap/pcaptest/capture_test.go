package pcaptest

import (
	"testing"

	"github.com/rscvm/rscvm/net/header"

	"github.com/stretchr/testify/require"
)

func TestCaptureTransfer(t *testing.T) {
	c := MustCaptureTransfer(t, TransferConfig{
		Seed:  1,
		Flows: []FlowConfig{{Bytes: 1 << 20}, {IPv6: true, Bytes: 512 << 10}},
	})
	require.Len(t, c.Flows, 2)
	streams := Reassemble(c.Packets)
	dataFrames := 0
	for _, p := range c.Packets {
		seg, ok := ParseTCP(p.Data)
		if !ok {
			continue
		}
		require.LessOrEqual(t, len(p.Data), 1514, "a frame larger than the MTU: GSO/TSO not off?")
		require.True(t, checksumValid(p.Data), "full TCP checksums (tx off at the sender)")
		if len(seg.Payload) > 0 {
			dataFrames++
		}
	}
	for i, f := range c.Flows {
		require.Equal(t, f.SentSHA256, f.ReceivedSHA256)
		s := streams[f.Key()]
		require.NotNil(t, s, "flow %d %v not captured", i, f.Key())
		require.True(t, s.SYN)
		require.True(t, s.FIN)
		require.Zero(t, s.Conflicts)
		require.True(t, s.Matches(f.Sent), "flow %d: captured stream (%d bytes, %d holes) differs from the sent one (%d bytes)",
			i, s.Extent(), s.Holes(), len(f.Sent))
	}
	require.GreaterOrEqual(t, dataFrames, (1<<20+512<<10)/1448)
	for i := 1; i < len(c.Packets); i++ {
		require.False(t, c.Packets[i].Time.Before(c.Packets[i-1].Time.Add(-1e6)), "timestamps roughly ordered")
	}
	t.Logf("captured %d frames (%d with data)", len(c.Packets), dataFrames)
}

// checksumValid verifies the TCP checksum of an untagged IPv4/IPv6 frame.
func checksumValid(f []byte) bool {
	switch header.Ethernet(f).Type() {
	case header.EtherTypeIPv4:
		ip := header.IPv4(f[14:])
		return header.TransportChecksumValid(header.ProtocolTCP, f[14+12:14+16], f[14+16:14+20], ip.Payload())
	case header.EtherTypeIPv6:
		ip := header.IPv6(f[14:])
		return header.TransportChecksumValid(header.ProtocolTCP, f[14+8:14+24], f[14+24:14+40], ip.Payload())
	}
	return false
}

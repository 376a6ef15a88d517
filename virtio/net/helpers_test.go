package virtionet_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
)

var (
	guestMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	hostMAC  = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	bcast    = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	hostIP   = netip.MustParseAddr("10.0.0.1")
	guestIP  = netip.MustParseAddr("10.0.0.2")
	hostIP6  = netip.MustParseAddr("2001:db8::1")
	guestIP6 = netip.MustParseAddr("2001:db8::2")
)

const timeout = 5 * time.Second

func newBackend(t testing.TB, n int) *nettest.Backend {
	t.Helper()
	be, err := nettest.New(n)
	require.NoError(t, err)
	t.Cleanup(be.Close)
	return be
}

// newDevice builds a device with DefaultConfig modified by props.
func newDevice(t testing.TB, be virtionet.Backend, props ...string) *virtionet.Device {
	t.Helper()
	c := virtionet.DefaultConfig()
	c.MAC = guestMAC[:]
	for i := 0; i+1 < len(props); i += 2 {
		require.NoError(t, c.Set(props[i], props[i+1]))
	}
	dev, err := virtionet.New(c, be, virtionet.Options{})
	require.NoError(t, err)
	return dev
}

// ethFrame builds an Ethernet frame of n bytes (n ≥ 14) with a counting
// payload pattern starting at seed.
func ethFrame(dst, src [6]byte, etype uint16, n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], etype)
	for i := 14; i < n; i++ {
		f[i] = seed + byte(i)
	}
	return f
}

// tcpFrame builds a host→guest IPv4 TCP data segment.
func tcpFrame(seq uint32, payload []byte, csum header.ChecksumMode) []byte {
	return header.TCPFrame{
		DstMAC: guestMAC, SrcMAC: hostMAC, Src: hostIP, Dst: guestIP, DontFragment: true,
		SrcPort: 5001, DstPort: 40000, Seq: seq, Ack: 1, Flags: header.TCPFlagACK, Window: 1000,
		Payload: payload, Checksum: csum,
	}.Build(nil)
}

// tcpFrame6 builds a host→guest IPv6 TCP data segment.
func tcpFrame6(seq uint32, payload []byte) []byte {
	return header.TCPFrame{
		DstMAC: guestMAC, SrcMAC: hostMAC, Src: hostIP6, Dst: guestIP6,
		SrcPort: 5001, DstPort: 40000, Seq: seq, Ack: 1, Flags: header.TCPFlagACK, Window: 1000,
		Payload: payload,
	}.Build(nil)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// linuxGuest starts a guest acking Linux 6.1's features (modified by
// features/clear) with n mergeable 4096-byte rx buffers on pair 0 (posted).
func linuxGuest(t testing.TB, dev *virtionet.Device, cfg nettest.GuestConfig, n int) *nettest.Guest {
	t.Helper()
	g := nettest.StartGuest(t, dev, cfg)
	g.SetupRx(0, n, 4096)
	g.PostRx(0, n)
	return g
}

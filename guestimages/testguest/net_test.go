package testguest

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/stretchr/testify/require"
)

// requireNetEnv skips (or fails with RSCVM_REQUIRE_KVM=1) unless namespaces,
// TAPs and QEMU are usable.
func requireNetEnv(t *testing.T) {
	t.Helper()
	if err := NetnsAvailable(); err != nil {
		if os.Getenv("RSCVM_REQUIRE_KVM") == "1" {
			t.Fatalf("RSCVM_REQUIRE_KVM=1 but %v", err)
		}
		t.Skip(err.Error())
	}
	qemuAvailable(t)
}

// netSession boots the guest under QEMU TCG with a TAP in a fresh namespace,
// runs host (if non-nil) once the guest is ready, and returns the parsed
// output after the guest powered off.
func netSession(t *testing.T, cmdline string, nic NIC, host func(ctx context.Context, s *Session)) *Output {
	t.Helper()
	elfPath := guestELF(t)
	requireNetEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	s, err := StartSession(ctx, SessionConfig{ELF: elfPath, Cmdline: cmdline, NIC: nic, Log: t.Logf})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	if host != nil {
		_, err := s.WaitReady(ctx)
		require.NoError(t, err, "stderr: %s", s.Stderr())
		host(ctx, s)
	}
	out, err := s.Wait(ctx)
	t.Logf("session ran %v", time.Since(start).Round(time.Millisecond))
	require.NoError(t, err)
	require.True(t, out.Done, "done line")
	require.Empty(t, out.Traps)
	require.Empty(t, out.Failures)
	require.NotNil(t, out.Net, "driver lines")
	return out
}

var (
	guestMAC = mustMAC(DefaultMAC)
	hostMAC  = mustMAC("02:00:00:00:00:01")
	hostIP   = netip.MustParseAddr("10.0.2.2")
	guestIP  = netip.MustParseAddr("10.0.2.15")
)

func mustMAC(s string) [6]byte {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return [6]byte(hw)
}

// tcpSegment is one host->guest TCP segment of the test flow.
func tcpSegment(dst [6]byte, seq uint32, payload int, flags uint8) []byte {
	p := make([]byte, payload)
	for i := range p {
		p[i] = byte(int(seq) + i*13)
	}
	f := header.TCPFrame{
		DstMAC: dst, SrcMAC: hostMAC, Src: hostIP, Dst: guestIP, DontFragment: true, ID: uint16(seq),
		SrcPort: 5001, DstPort: 40000, Seq: seq, Ack: 777, Flags: flags, Window: 1024, Payload: p,
	}
	return f.Build(nil)
}

func requireRx(t *testing.T, frames [][]byte, rx []RxPacket) {
	t.Helper()
	require.Len(t, rx, len(frames))
	for i, f := range frames {
		require.Equal(t, uint32(i), rx[i].N)
		require.Equal(t, uint32(len(f)), rx[i].Len, "rx %d length", i)
		require.Equal(t, FrameSum(f), rx[i].Sum, "rx %d checksum", i)
	}
}

// requireTx reads count guest frames from the TAP and checks them against the
// guest's tx lines: same length and checksum, valid IPv4/UDP checksums.
func requireTx(ctx context.Context, t *testing.T, s *Session, count int) [][]byte {
	t.Helper()
	var frames [][]byte
	for len(frames) < count {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		f, err := s.ReadFrame(rctx)
		cancel()
		require.NoError(t, err, "guest frame %d", len(frames))
		frames = append(frames, f)
	}
	for i, f := range frames {
		eth := header.Ethernet(f)
		require.Equal(t, guestMAC, eth.SrcAddr(), "frame %d source", i)
		require.Equal(t, uint16(header.EtherTypeIPv4), eth.Type())
		ip := header.IPv4(f[14:])
		require.Equal(t, uint8(17), ip.Protocol())
		require.Equal(t, uint16(i), ip.ID(), "frames in order")
		require.Zero(t, header.Checksum(f[14:34]), "IPv4 header checksum")
		udp := f[34:]
		require.True(t, header.TransportChecksumValid(17, f[26:30], f[30:34], udp), "UDP checksum of frame %d", i)
		require.True(t, strings.HasPrefix(string(udp[8:]), "rscvm-testguest"), "payload tag")
	}
	return frames
}

func checkTxLines(t *testing.T, out *Output, frames [][]byte) {
	t.Helper()
	require.Len(t, out.Net.Tx, len(frames))
	for i, f := range frames {
		require.Equal(t, TxFrame{N: uint32(i), Len: uint32(len(f)), Sum: FrameSum(f)}, out.Net.Tx[i])
	}
	require.Equal(t, &TxEnd{Sent: uint32(len(frames)), Done: uint32(len(frames)), Reason: "count"}, out.Net.TxEnd)
}

// QEMU 7.2's offer with a vnet_hdr tap, and what the default driver set gets.
const (
	qemuOffered       = 0x0000010130bfffa7
	defaultNegotiated = 0x00000001008799a7
)

func TestQEMUNetDefault(t *testing.T) {
	var frames, sent [][]byte
	for i, n := range []int{0, 1, 46, 200, 1460} {
		frames = append(frames, tcpSegment(guestMAC, uint32(1000+i*1460), n, header.TCPFlagACK|header.TCPFlagPSH))
	}
	out := netSession(t, "net=1 pci=0 memmap=0 tx=3 txlen=300 rx=5 rxwait=20000", NIC{},
		func(ctx context.Context, s *Session) {
			require.NoError(t, s.Inject(frames...))
			sent = requireTx(ctx, t, s, 3)
		})
	n := out.Net
	require.Empty(t, n.Errors)
	require.Equal(t, "modern", n.Device.Mode)
	require.Equal(t, uint16(0x1000), n.Device.Device)
	require.Equal(t, &Features{Offered: qemuOffered, Wanted: defaultNegotiated, Negotiated: defaultNegotiated, Status: 0x0b}, n.Features)
	require.Equal(t, &NetConfig{MAC: DefaultMAC, Status: 1, MaxPairs: 0xffff, MTU: 0xffff}, n.Config)
	require.Equal(t, &Queues{Num: 3, Sizes: []uint16{256, 256, 64}}, n.Queues)
	require.Equal(t, &MSIX{TableSize: 4, Config: 0xffff, RX: 0xffff, TX: 0xffff, Ctrl: 0xffff}, n.MSIX)
	require.Equal(t, &Rings{RXSize: 256, TXSize: 256, CtrlIndex: 2, CtrlSize: 64, HdrLen: 12}, n.Rings)
	require.Equal(t, uint8(0x0f), n.Ready.Status)
	require.Equal(t, "mrg", n.Ready.Mode)
	checkTxLines(t, out, sent)

	// QEMU 7.2 delivers frames from a tap as they are: the 54-byte empty
	// segment is not padded to 60 bytes.
	requireRx(t, frames, n.Rx)
	for _, p := range n.Rx {
		require.Equal(t, uint32(1), p.Bufs)
		require.Equal(t, uint16(1), p.NumBuffers)
		require.Zero(t, p.Flags, "no checksum information for frames from a packet socket")
		require.Zero(t, p.GSOType)
		require.Nil(t, p.RSC)
	}
	require.Equal(t, &RxEnd{Packets: 5, Reason: "count"}, n.RxEnd)
	require.Equal(t, uint8(0x0f), n.Done.Status)
	require.Zero(t, n.Done.ResetStatus)
}

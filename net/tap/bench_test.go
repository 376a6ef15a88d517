package tap

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// benchRig is a tap in a fresh namespace plus an AF_PACKET socket that injects frames into the tap's host side
// (the kernel transmits them on the tap, so they come out of the tap fd like traffic for the guest).
type benchRig struct {
	tap     *Tap
	q       *Queue
	inject  int
	hostMAC net.HardwareAddr
}

func newBenchRig(tb testing.TB, vnet bool, offload Offload) *benchRig {
	tb.Helper()
	ns := newNetns(tb)
	tp := ns.openUp(tb, Config{Name: "bench0"}, hostIP.String())
	applied, err := tp.SetOffload(offload)
	require.NoError(tb, err)
	require.Equal(tb, offload, applied)
	mac, err := tp.MAC()
	require.NoError(tb, err)
	pkt := ns.packetSocket(tb, "bench0", vnet)
	require.NoError(tb, unix.SetsockoptInt(pkt, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 64<<20))
	require.NoError(tb, unix.SetsockoptInt(pkt, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1))
	return &benchRig{tap: tp, q: tp.Queue(0), inject: pkt, hostMAC: mac}
}

// udpFrame is a 1514-byte Ethernet frame host -> guest.
func (r *benchRig) udpFrame() []byte {
	payload := make([]byte, 1514-14-20-8)
	return ether(guestMAC, r.hostMAC, etherTypeIPv4, ipv4(hostIP, guestIP, protoUDP, 1, udp(hostIP, guestIP, 9, 9, payload)))
}

// gsoFrame is a TCPv4 GSO super-frame host -> guest of ipLen bytes of IP packet, with the 10-byte virtio_net_hdr
// AF_PACKET expects in front (PACKET_VNET_HDR) and a partial checksum.
func (r *benchRig) gsoFrame(ipLen int) []byte {
	data := make([]byte, ipLen-20-20)
	seg := tcp(hostIP, guestIP, 5001, 40000, 1, 1, tcpACK, 65535, nil, data)
	copy(seg[16:18], []byte{0, 0})
	ps := csumFold(pseudoSum(hostIP, guestIP, protoTCP, len(seg)))
	seg[16], seg[17] = byte(ps>>8), byte(ps)
	f := ether(guestMAC, r.hostMAC, etherTypeIPv4, ipv4(hostIP, guestIP, protoTCP, 1, seg))
	h := make([]byte, 10)
	vnetHdr{Flags: vnetFlagNeedsCsum, GSOType: gsoTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}.put(h)
	return append(h, f...)
}

// readBatch reads n frames, waiting for readiness when the tap is momentarily empty.
func (r *benchRig) readBatch(tb testing.TB, iovs [][]byte, n int, wantLen int) {
	for i := 0; i < n; {
		got, err := r.q.ReadV(iovs)
		if errors.Is(err, ErrWouldBlock) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, werr := r.q.Wait(ctx, Readable)
			cancel()
			if werr != nil {
				tb.Fatalf("frame %d of %d never arrived: %v", i, n, werr)
			}
			continue
		}
		if err != nil {
			tb.Fatal(err)
		}
		if got != wantLen {
			tb.Fatalf("read %d bytes, want %d", got, wantLen)
		}
		i++
	}
}

func (r *benchRig) injectBatch(tb testing.TB, frame []byte, n int) {
	for i := 0; i < n; i++ {
		if _, err := unix.Write(r.inject, frame); err != nil {
			tb.Fatalf("inject: %v", err)
		}
	}
}

// benchmarkRead measures ReadV per frame; injection runs with the timer stopped unless withInject.
func benchmarkRead(b *testing.B, gso bool, withInject bool) {
	var r *benchRig
	var frame []byte
	var wantLen int
	batch := 256
	if gso {
		r = newBenchRig(b, true, OffloadCSUM|OffloadTSO4)
		frame = r.gsoFrame(65000)
		wantLen = len(frame) - 10 + 12
		batch = 32
	} else {
		r = newBenchRig(b, false, 0)
		frame = r.udpFrame()
		wantLen = len(frame) + 12
	}
	hdr := make([]byte, 12)
	buf := make([]byte, 65550)
	iovs := [][]byte{hdr, buf}
	// Warm up (and check the frame really comes through as one read).
	r.injectBatch(b, frame, 1)
	r.readBatch(b, iovs, 1, wantLen)
	if gso {
		h := parseVnetHdr(hdr)
		require.Equal(b, uint8(gsoTCPv4), h.GSOType)
		require.Equal(b, uint16(1448), h.GSOSize)
	}
	b.SetBytes(int64(wantLen - 12))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		if !withInject {
			b.StopTimer()
		}
		r.injectBatch(b, frame, n)
		if !withInject {
			b.StartTimer()
		}
		r.readBatch(b, iovs, n, wantLen)
		done += n
	}
}

// BenchmarkReadV1514 is the tap read rate for 1514-byte frames (ReadV only).
func BenchmarkReadV1514(b *testing.B) { benchmarkRead(b, false, false) }

// BenchmarkReadVGSO64K is the tap read rate for 65000-byte TCPv4 GSO frames (TUN_F_TSO4 on).
func BenchmarkReadVGSO64K(b *testing.B) { benchmarkRead(b, true, false) }

// BenchmarkInjectReadV1514 includes the host-side AF_PACKET send (kernel transmit into the tap).
func BenchmarkInjectReadV1514(b *testing.B) { benchmarkRead(b, false, true) }

// BenchmarkInjectReadVGSO64K includes the host-side send of the GSO frame.
func BenchmarkInjectReadVGSO64K(b *testing.B) { benchmarkRead(b, true, true) }

// benchmarkWrite measures WriteV (guest -> host) per frame. The frames are addressed to another MAC, so the
// kernel drops them right after the tap's receive path (PACKET_OTHERHOST).
func benchmarkWrite(b *testing.B, gso bool) {
	r := newBenchRig(b, false, 0)
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	var h vnetHdr
	var frame []byte
	if gso {
		data := make([]byte, 65000-40)
		seg := tcp(guestIP, hostIP, 40000, 5001, 1, 1, tcpACK, 65535, nil, data)
		ps := csumFold(pseudoSum(guestIP, hostIP, protoTCP, len(seg)))
		seg[16], seg[17] = byte(ps>>8), byte(ps)
		frame = ether(other, guestMAC, etherTypeIPv4, ipv4(guestIP, hostIP, protoTCP, 1, seg))
		h = vnetHdr{Flags: vnetFlagNeedsCsum, GSOType: gsoTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	} else {
		frame = ether(other, guestMAC, etherTypeIPv4, ipv4(guestIP, hostIP, protoUDP, 1, udp(guestIP, hostIP, 9, 9, make([]byte, 1472))))
	}
	iovs := [][]byte{h.bytes(), frame}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.q.WriteV(iovs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteV1514 is the guest -> host write rate for 1514-byte frames.
func BenchmarkWriteV1514(b *testing.B) { benchmarkWrite(b, false) }

// BenchmarkWriteVGSO64K is the guest -> host write rate for 65000-byte TCPv4 GSO frames.
func BenchmarkWriteVGSO64K(b *testing.B) { benchmarkWrite(b, true) }

// TestDatapathZeroAllocs checks the hot paths allocate nothing: ReadV of a frame, ReadV on an empty tap
// (ErrWouldBlock), WriteV, and Poller.Wait.
func TestDatapathZeroAllocs(t *testing.T) {
	r := newBenchRig(t, false, 0)
	frame := r.udpFrame()
	iovs := [][]byte{make([]byte, 12), make([]byte, 65550)}
	const runs = 100
	r.injectBatch(t, frame, runs+1)
	allocs := testing.AllocsPerRun(runs, func() { r.readBatch(t, iovs, 1, len(frame)+12) })
	require.Zero(t, allocs, "ReadV")
	allocs = testing.AllocsPerRun(runs, func() {
		if _, err := r.q.ReadV(iovs); !errors.Is(err, ErrWouldBlock) {
			t.Fatalf("want ErrWouldBlock, got %v", err)
		}
	})
	require.Zero(t, allocs, "ReadV on an empty tap")
	w := [][]byte{make([]byte, 12), frame}
	allocs = testing.AllocsPerRun(runs, func() {
		if _, err := r.q.WriteV(w); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "WriteV")
	single := append(make([]byte, 12), frame...)
	allocs = testing.AllocsPerRun(runs, func() {
		if _, err := r.q.Write(single); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "Write")
	r.injectBatch(t, frame, runs+1)
	buf := make([]byte, 2048)
	allocs = testing.AllocsPerRun(runs, func() {
		for {
			n, err := r.q.Read(buf)
			if errors.Is(err, ErrWouldBlock) {
				continue
			}
			if err != nil || n != len(single) {
				t.Fatalf("Read: %d, %v", n, err)
			}
			return
		}
	})
	require.Zero(t, allocs, "Read")
}

// TestReadShortBuffers documents the kernel's behaviour with small buffers: a frame longer than the buffers is
// truncated (n counts the stored bytes, the rest is discarded), and buffers smaller than the header are EINVAL
// (the frame is dropped too).
func TestReadShortBuffers(t *testing.T) {
	r := newBenchRig(t, false, 0)
	frame := r.udpFrame()
	r.injectBatch(t, frame, 3)
	n, err := r.q.ReadV([][]byte{make([]byte, 12), make([]byte, 100)})
	require.NoError(t, err)
	require.Equal(t, 112, n, "truncated")
	_, err = r.q.ReadV([][]byte{make([]byte, 8)})
	require.ErrorIs(t, err, unix.EINVAL) // and the frame is dropped
	buf := make([]byte, 2000)
	n, err = r.q.ReadV([][]byte{nil, buf[:5], {}, buf[5:]}) // empty iovecs are skipped
	require.NoError(t, err)
	require.Equal(t, 12+len(frame), n)
	require.Equal(t, frame, buf[12:n])
	_, err = r.q.ReadV([][]byte{buf})
	require.ErrorIs(t, err, ErrWouldBlock, "three frames: truncated, dropped by EINVAL, read whole")
	n, err = r.q.ReadV(nil)
	require.NoError(t, err, "a zero-length read returns 0 without waiting")
	require.Zero(t, n)
	_, err = r.q.ReadV(make([][]byte, maxIovecs+1))
	require.Error(t, err)
}

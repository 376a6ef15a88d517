package virtionet_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
)

const (
	mss        = 1448
	offCSUM    = 1 << virtionet.FeatureGuestCSUM
	offTSO4    = 1 << virtionet.FeatureGuestTSO4
	offTSO6    = 1 << virtionet.FeatureGuestTSO6
	offRSC     = virtionet.RSCOffloadBit
	netkvmFeat = virtionet.LinuxDriverFeatures | 1<<virtionet.FeatureRSCExt
)

// segments returns n contiguous host→guest segments of one flow (full
// checksums, DATA_VALID as a tap with TUN_F_CSUM marks verified frames)
// and the concatenated payload.
func segments(n int, v6 bool) ([]nettest.Frame, []byte) {
	var fs []nettest.Frame
	var all []byte
	for i := 0; i < n; i++ {
		p := pattern(mss, byte(i))
		all = append(all, p...)
		var f []byte
		if v6 {
			f = tcpFrame6(1000+uint32(i*mss), p)
		} else {
			f = tcpFrame(1000+uint32(i*mss), p, header.ChecksumFull)
		}
		fs = append(fs, nettest.Frame{Hdr: header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, Data: f})
	}
	return fs, all
}

// coalesced is the packet a coalesced run of segments must become.
func coalesced(payload []byte) []byte {
	return tcpFrame(1000, payload, header.ChecksumPartial)
}

func recvN(t *testing.T, g *nettest.Guest, n int) []nettest.RxFrame {
	t.Helper()
	var out []nettest.RxFrame
	for i := 0; i < n; i++ {
		f, err := g.Recv(0, timeout)
		require.NoError(t, err, "packet %d of %d", i+1, n)
		g.PostRx(0, f.Buffers)
		out = append(out, f)
	}
	return out
}

func requireRSC(t *testing.T, f nettest.RxFrame, segs int, payload []byte) {
	t.Helper()
	require.EqualValues(t, header.VirtioNetHdrGSOTCPv4, f.Hdr.GSOType)
	s, dup, ok := f.Hdr.RSCInfo()
	require.True(t, ok, "RSC_INFO set: %v", f.Hdr)
	require.EqualValues(t, segs, s)
	require.Zero(t, dup)
	require.Equal(t, coalesced(payload), f.Data)
}

func requirePlain(t *testing.T, fs []nettest.RxFrame, want []nettest.Frame) {
	t.Helper()
	require.Len(t, fs, len(want))
	for i := range fs {
		require.EqualValues(t, header.VirtioNetHdrGSONone, fs[i].Hdr.GSOType, "frame %d", i)
		require.Zero(t, fs[i].Hdr.Flags&header.VirtioNetHdrFRSCInfo)
		require.Equal(t, want[i].Data, fs[i].Data, "frame %d", i)
	}
}

func TestRSCSwitchedByOffloadsSet(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "guest_rsc_ext", "on", "rsc_interval", "1000000")
	g := linuxGuest(t, dev, nettest.GuestConfig{Features: netkvmFeat}, 128)
	require.NotZero(t, dev.Negotiated()&(1<<virtionet.FeatureRSCExt))

	// RSC is on after negotiation (no OFFLOADS_SET yet).
	fs, payload := segments(10, false)
	be.Q(0).InjectFrames(fs...)
	requireRSC(t, recvN(t, g, 1)[0], 10, payload)

	// NetKVM's configuration without bit 61: RSC off.
	ack, err := g.SetOffloads(offCSUM | offTSO4 | offTSO6)
	require.NoError(t, err)
	require.Zero(t, ack)
	be.Q(0).InjectFrames(fs...)
	requirePlain(t, recvN(t, g, 10), fs)

	// With bit 61: on again.
	ack, err = g.SetOffloads(offCSUM | offTSO4 | offTSO6 | offRSC)
	require.NoError(t, err)
	require.Zero(t, ack)
	be.Q(0).InjectFrames(fs...)
	requireRSC(t, recvN(t, g, 1)[0], 10, payload)

	// Windows disabling IPv4 RSC clears TSO4: IPv4 passes plain and the tap
	// may no longer hand over TCPv4 GSO frames (stale ones are dropped).
	ack, err = g.SetOffloads(offCSUM | offTSO6 | offRSC)
	require.NoError(t, err)
	require.Zero(t, ack)
	require.Equal(t, "csum|tso6", be.Offload().String())
	h, big := gsoFrame(t, 20000)
	be.Q(0).Inject(h, big)
	be.Q(0).InjectFrames(fs...)
	requirePlain(t, recvN(t, g, 10), fs)
	s := stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxDropGSO == 1 })
	require.NotNil(t, s.RSC)
	require.EqualValues(t, 2, s.RSC.CoalesceEvents)
	require.EqualValues(t, 20, s.RSC.CoalescedSegments)
	require.EqualValues(t, 18, s.RSC.Coalesced)

	// Offloads every bit of which the guest did not negotiate: ERR, no change.
	ack, err = g.SetOffloads(offCSUM | offTSO4 | 1<<virtionet.FeatureGuestUSO4)
	require.NoError(t, err)
	require.EqualValues(t, 1, ack)
	require.Equal(t, "csum|tso6", be.Offload().String())

	js, err := dev.Stats().JSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"coalesced": 18`)
	require.Contains(t, string(js), `"rx_drop_gso": 1`)
}

// longInterval keeps the batch-end flush but stops the timer from
// splitting a batch: under load (-race, a busy machine) reading a batch can
// take longer than the default 300 µs rsc_interval.
const longInterval = "1000000000"

func TestRSCIPv6(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "guest_rsc_ext", "on", "rsc_interval", longInterval)
	g := linuxGuest(t, dev, nettest.GuestConfig{Features: netkvmFeat}, 128)
	fs, payload := segments(5, true)
	be.Q(0).InjectFrames(fs...)
	got := recvN(t, g, 1)[0]
	require.EqualValues(t, header.VirtioNetHdrGSOTCPv6, got.Hdr.GSOType)
	n, _, ok := got.Hdr.RSCInfo()
	require.True(t, ok)
	require.EqualValues(t, 5, n)
	require.Len(t, got.Data, 14+40+20+len(payload))
	require.Equal(t, payload, got.Data[74:])
}

// A Linux guest never acks RSC_EXT: no RSC_INFO, ever, even with
// guest_rsc_ext=on.
func TestRSCNotForLinux(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "guest_rsc_ext", "on")
	g := linuxGuest(t, dev, nettest.GuestConfig{}, 128)
	require.Zero(t, dev.Negotiated()&(1<<virtionet.FeatureRSCExt))
	fs, _ := segments(10, false)
	be.Q(0).InjectFrames(fs...)
	requirePlain(t, recvN(t, g, 10), fs)
}

// x-rsc-gso=on coalesces for a guest with GUEST_TSO4 and no RSC_EXT and
// delivers standard GSO packets.
func TestRSCGSOMode(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "x-rsc-gso", "on", "rsc_interval", longInterval)
	g := linuxGuest(t, dev, nettest.GuestConfig{}, 128)
	fs, payload := segments(10, false)
	be.Q(0).InjectFrames(fs...)
	got := recvN(t, g, 1)[0]
	require.EqualValues(t, header.VirtioNetHdrGSOTCPv4, got.Hdr.GSOType)
	require.EqualValues(t, header.VirtioNetHdrFNeedsCsum, got.Hdr.Flags, "no RSC_INFO without RSC_EXT")
	require.EqualValues(t, mss, got.Hdr.GSOSize)
	require.EqualValues(t, 34, got.Hdr.CsumStart)
	require.EqualValues(t, 16, got.Hdr.CsumOffset)
	require.Equal(t, coalesced(payload), got.Data)
	// Linux's rx-gro-hw off (offloads without TSO): plain again.
	ack, err := g.SetOffloads(offCSUM)
	require.NoError(t, err)
	require.Zero(t, ack)
	be.Q(0).InjectFrames(fs...)
	requirePlain(t, recvN(t, g, 10), fs)
}

// Pending coalesced packets are delivered, under the old configuration,
// before an OFFLOADS_SET is acknowledged, even when the ring is full at
// that moment.
func TestRSCFlushBeforeOffloadsAck(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "guest_rsc_ext", "on", "rsc_interval", longInterval)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: netkvmFeat})
	g.SetupRx(0, 64, 4096)
	g.PostRx(0, 2) // room for 8 KB: the 14 KB coalesced packet does not fit
	fs, payload := segments(10, false)
	be.Q(0).InjectFrames(fs...)
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxRingFull > 0 })

	acked := make(chan uint8, 1)
	go func() {
		ack, err := g.SetOffloads(offCSUM | offTSO4 | offTSO6) // RSC off
		if err != nil {
			ack = 0xee
		}
		acked <- ack
	}()
	select {
	case <-acked:
		t.Fatal("OFFLOADS_SET acknowledged while a coalesced packet was pending")
	case <-time.After(50 * time.Millisecond):
	}
	g.PostRx(0, 10)
	requireRSC(t, recvN(t, g, 1)[0], 10, payload)
	select {
	case ack := <-acked:
		require.Zero(t, ack)
	case <-time.After(timeout):
		t.Fatal("OFFLOADS_SET never acknowledged")
	}
	be.Q(0).InjectFrames(fs...)
	requirePlain(t, recvN(t, g, 10), fs)
}

// With x-rsc-batch-flush=off segments arriving in separate TAP batches
// within rsc_interval coalesce and the timer delivers them.
func TestRSCIntervalTimer(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "guest_rsc_ext", "on", "rsc_interval", "50000000", "x-rsc-batch-flush", "off")
	g := linuxGuest(t, dev, nettest.GuestConfig{Features: netkvmFeat}, 128)
	fs, payload := segments(4, false)
	start := time.Now()
	for _, f := range fs {
		be.Q(0).InjectFrames(f)
		time.Sleep(2 * time.Millisecond)
	}
	got := recvN(t, g, 1)[0]
	elapsed := time.Since(start)
	requireRSC(t, got, 4, payload)
	require.GreaterOrEqual(t, elapsed, 45*time.Millisecond, "held until rsc_interval")
	require.Less(t, elapsed, 2*time.Second)
	s := stats(t, dev, func(s virtionet.QueueStats) bool { return s.RSC != nil && s.RSC.Timer == 1 })
	require.Zero(t, s.RSC.Batch)
}

// With the default batch flush a lone segment is delivered at once with its
// original header.
func TestRSCLoneSegmentUntouched(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "guest_rsc_ext", "on", "rsc_interval", "4294967295")
	g := linuxGuest(t, dev, nettest.GuestConfig{Features: netkvmFeat}, 128)
	fs, _ := segments(1, false)
	start := time.Now()
	be.Q(0).InjectFrames(fs...)
	got := recvN(t, g, 1)
	require.Less(t, time.Since(start), time.Second)
	requirePlain(t, got, fs)
	require.EqualValues(t, header.VirtioNetHdrFDataValid, got[0].Hdr.Flags)
}

// rsc-spec scenario 51: without MRG_RXBUF the guest posts 1526-byte
// buffers despite GUEST_TSO4: nothing larger than a buffer is built and
// nothing is dropped.
func TestRSCSmallBuffers(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "guest_rsc_ext", "on")
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: netkvmFeat &^ (1 << virtionet.FeatureMrgRxBuf)})
	g.SetupRx(0, 64, 12+1514)
	g.PostRx(0, 64)
	fs, _ := segments(10, false)
	be.Q(0).InjectFrames(fs...)
	requirePlain(t, recvN(t, g, 10), fs)
	s := stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxPackets == 10 })
	require.Zero(t, s.RxDropTooBig)
}

// Frames with large trailing bytes fill the engine's receive arena (where
// segments stay until their packet is copied into the ring) faster than
// packets grow. With x-rsc-batch-flush off and a long interval the oldest
// packets are flushed to make room; while the ring is full the device stops
// reading, and afterwards every byte of every flow arrives, in order.
func TestRSCArenaPressure(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "guest_rsc_ext", "on", "rsc_interval", "1000000000", "x-rsc-batch-flush", "off")
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: netkvmFeat})
	g.SetupRx(0, 256, 4096)
	g.PostRx(0, 4) // 16 KB: the first packet flushed for room does not fit
	const flows, per, pad = 16, 40, 8000
	var fs []nettest.Frame
	want := map[uint16][]byte{}
	for i := 0; i < per; i++ {
		for f := 0; f < flows; f++ {
			port := uint16(6000 + f)
			p := pattern(mss, byte(i*flows+f))
			want[port] = append(want[port], p...)
			fr := header.TCPFrame{
				DstMAC: guestMAC, SrcMAC: hostMAC, Src: hostIP, Dst: guestIP, DontFragment: true,
				SrcPort: port, DstPort: 40000, Seq: 1000 + uint32(i*mss), Ack: 1, Flags: header.TCPFlagACK,
				Window: 1000, Payload: p, Padding: pad,
			}.Build(nil)
			fs = append(fs, nettest.Frame{Hdr: header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, Data: fr})
		}
	}
	be.Q(0).InjectFrames(fs...)
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxRingFull > 0 })
	g.PostRx(0, 252)
	got := map[uint16][]byte{}
	for n := 0; n < flows*per*mss; {
		f, err := g.Recv(0, timeout)
		require.NoError(t, err)
		g.PostRx(0, f.Buffers)
		ip := header.IPv4(f.Data[header.EthernetMinSize:])
		require.True(t, ip.IsValid())
		tcp := header.TCP(ip[ip.HeaderLen():ip.TotalLength()])
		got[tcp.SrcPort()] = append(got[tcp.SrcPort()], tcp.Payload()...)
		n += len(tcp.Payload())
	}
	for port, w := range want {
		require.Equal(t, w, got[port], "flow %d", port)
	}
	s := stats(t, dev, func(s virtionet.QueueStats) bool { return s.RSC != nil && s.RSC.Pending == 0 })
	require.Positive(t, s.RSC.Evictions, "flushed for room")
	require.Zero(t, s.RxDropTooBig+s.RxDropReset+s.RxDropShort)
}

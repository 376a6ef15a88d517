package virtionet_test

import (
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/impair"
	"github.com/rscvm/rscvm/net/pcap"
	"github.com/rscvm/rscvm/net/pcap/pcaptest"
	"github.com/rscvm/rscvm/virtio"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
)

// netkvmLikeFeatures is what a NetKVM-like driver acks with RSC enabled for
// both families: RSC_EXT, GUEST_TSO4/6, GUEST_CSUM, CTRL_GUEST_OFFLOADS and
// mergeable receive buffers.
const netkvmLikeFeatures = 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureIndirectDesc |
	1<<virtionet.FeatureMAC | 1<<virtionet.FeatureStatus | 1<<virtionet.FeatureCSUM |
	1<<virtionet.FeatureHostTSO4 | 1<<virtionet.FeatureHostTSO6 | 1<<virtionet.FeatureCtrlVQ |
	1<<virtionet.FeatureCtrlRx | 1<<virtionet.FeatureCtrlVLAN | 1<<virtionet.FeatureCtrlMACAddr |
	1<<virtionet.FeatureCtrlGuestOffloads | 1<<virtionet.FeatureGuestAnnounce |
	1<<virtionet.FeatureGuestCSUM | 1<<virtionet.FeatureGuestTSO4 | 1<<virtionet.FeatureGuestTSO6 |
	1<<virtionet.FeatureMrgRxBuf | 1<<virtionet.FeatureRSCExt

// realTrafficMode is one device/driver combination of TestRealTraffic.
type realTrafficMode struct {
	name     string
	props    []string // device properties
	features uint64   // driver features (0: Linux's)
	offloads uint64   // GUEST_OFFLOADS_SET sent after DRIVER_OK (0: none)
	rscInfo  bool     // coalesced packets carry RSC_INFO (else plain GSO)
	want     uint64   // feature bits that must be negotiated
	rxBufs   int      // 4 KiB receive buffers posted (0: a full ring)
}

var netkvmMode = realTrafficMode{
	name:     "netkvm",
	props:    []string{"guest_rsc_ext", "on"},
	features: netkvmLikeFeatures,
	offloads: offCSUM | offTSO4 | offTSO6 | offRSC,
	rscInfo:  true,
	want: 1<<virtionet.FeatureRSCExt | 1<<virtionet.FeatureGuestTSO4 | 1<<virtionet.FeatureGuestTSO6 |
		1<<virtionet.FeatureGuestCSUM | 1<<virtionet.FeatureCtrlGuestOffloads | 1<<virtionet.FeatureMrgRxBuf,
}

var realTrafficModes = []realTrafficMode{
	netkvmMode,
	{
		name:  "linux x-rsc-gso",
		props: []string{"x-rsc-gso", "on"},
		want: 1<<virtionet.FeatureGuestTSO4 | 1<<virtionet.FeatureGuestTSO6 | 1<<virtionet.FeatureGuestCSUM |
			1<<virtionet.FeatureMrgRxBuf,
	},
}

// realTrafficRun is what the guest received in one run.
type realTrafficRun struct {
	frames  []nettest.RxFrame
	stats   virtionet.QueueStats
	batches int
	elapsed time.Duration
}

// packets returns the delivered frames as a capture.
func (r realTrafficRun) packets() []pcap.Packet {
	out := make([]pcap.Packet, len(r.frames))
	for i, f := range r.frames {
		out[i] = pcap.Packet{Data: f.Data}
	}
	return out
}

// TestRealTraffic captures real Linux TCP transfers (IPv4 and IPv6, 1 MiB
// each, concurrently; the sender has TSO/GSO off) between two network
// namespaces, impairs a copy with seeded loss, duplication and reordering,
// and injects every frame (with DATA_VALID, as a TAP gives them) into a
// virtio-net device, in batches of random size, with a NetKVM-like driver
// (RSC_INFO) and with a Linux-like driver and x-rsc-gso=on. Every flow's
// byte stream delivered to the guest must be exactly the one injected, and
// coalesced packets must have correct headers.
func TestRealTraffic(t *testing.T) {
	start := time.Now()
	capt := pcaptest.MustCaptureTransfer(t, pcaptest.TransferConfig{
		Seed:  16,
		Flows: []pcaptest.FlowConfig{{Bytes: 1 << 20}, {IPv6: true, Bytes: 1 << 20}},
	})
	t.Logf("capture: %d frames in %v", len(capt.Packets), time.Since(start).Round(time.Millisecond))
	clean := pcaptest.Reassemble(capt.Packets)
	for _, f := range capt.Flows {
		s := clean[f.Key()]
		require.NotNil(t, s, "flow %v captured", f.Key())
		require.True(t, s.Matches(f.Sent), "capture of %v is the sent stream", f.Key())
	}
	cleanData := dataSegments(capt.Packets)

	imp, st, err := impair.Apply(impair.Config{Seed: 42, Loss: 0.01, Duplicate: 0.01, Reorder: 0.02, Window: 4}, capt.Packets)
	require.NoError(t, err)
	require.Positive(t, st.Dropped)
	require.Positive(t, st.Duplicated)
	require.Positive(t, st.Reordered)
	t.Logf("impaired: %+v", st)
	impStreams := pcaptest.Reassemble(imp)

	for _, in := range []struct {
		name   string
		frames []pcap.Packet
		want   pcaptest.Streams
	}{{"unimpaired", capt.Packets, clean}, {"impaired", imp, impStreams}} {
		for _, m := range realTrafficModes {
			t.Run(in.name+" "+m.name, func(t *testing.T) {
				r := runRealTraffic(t, m, in.frames, 7)
				checkRealTraffic(t, m, in.frames, in.want, r)
				data := dataSegments(in.frames)
				t.Logf("%d frames (%d with data) in %d batches, %d packets delivered (%d coalesced carrying %d segments), %v",
					len(in.frames), data, r.batches, len(r.frames), r.stats.RSC.CoalesceEvents, r.stats.RSC.CoalescedSegments,
					r.elapsed.Round(time.Millisecond))
				if in.name == "unimpaired" {
					require.Less(t, len(r.frames), cleanData/2, "coalescing should cut the packet count well below the segment count")
				}
			})
		}
	}
	// Back-pressure: 20 buffers hold one 64 KiB packet (17 buffers) and
	// little more, so the device often finds the ring empty and must wait
	// for the receiver to re-post; nothing may be lost or reordered.
	t.Run("impaired netkvm small ring", func(t *testing.T) {
		m := netkvmMode
		m.rxBufs = 20
		r := runRealTraffic(t, m, imp, 11)
		checkRealTraffic(t, m, imp, impStreams, r)
		t.Logf("%d frames in %d batches, %d packets delivered, ring full %d times, %v",
			len(imp), r.batches, len(r.frames), r.stats.RxRingFull, r.elapsed.Round(time.Millisecond))
	})
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// dataSegments counts the TCP frames carrying payload.
func dataSegments(frames []pcap.Packet) int {
	n := 0
	for _, p := range frames {
		if s, ok := pcaptest.ParseTCP(p.Data); ok && len(s.Payload) > 0 {
			n++
		}
	}
	return n
}

// runRealTraffic starts a device and a driver for m, injects frames in
// batches of 1..64 (seeded sizes; each batch is read by the device before
// the next is queued, so batch ends flush) while a receiver goroutine reads
// every packet and re-posts its buffers, and returns what the guest got once
// the device is idle.
func runRealTraffic(t *testing.T, m realTrafficMode, frames []pcap.Packet, seed uint64) realTrafficRun {
	t.Helper()
	be := newBackend(t, 1)
	props := append([]string{"mac", net.HardwareAddr(pcaptest.ReceiverMAC[:]).String()}, m.props...)
	dev := newDevice(t, be, props...)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: m.features})
	require.Equal(t, m.want, g.Negotiated&m.want, "negotiated %#x", g.Negotiated)
	if m.offloads != 0 {
		ack, err := g.SetOffloads(m.offloads)
		require.NoError(t, err)
		require.Zero(t, ack, "OFFLOADS_SET %#x acknowledged", m.offloads)
	}
	nbuf := int(dev.QueueMaxSizes()[0])
	if m.rxBufs > 0 {
		nbuf = m.rxBufs
	}
	g.SetupRx(0, nbuf, 4096)
	g.PostRx(0, nbuf)

	var (
		mu      sync.Mutex
		got     []nettest.RxFrame
		recvErr error
	)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := g.Recv(0, 20*time.Millisecond)
			if err != nil {
				if f.Buffers == 0 && nettest.IsTimeout(err) {
					select {
					case <-stop:
						return
					default:
						continue
					}
				}
				mu.Lock()
				recvErr = err
				mu.Unlock()
				return
			}
			// Re-post at once: back-pressure only ever waits for this.
			g.PostRx(0, f.Buffers)
			mu.Lock()
			got = append(got, f)
			mu.Unlock()
		}
	}()
	stopped := false
	stopRecv := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-done
		}
	}
	defer stopRecv()
	received := func() (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(got), recvErr
	}

	start := time.Now()
	deadline := start.Add(60 * time.Second)
	rng := rand.New(rand.NewPCG(seed, 0x7274))
	q := be.Q(0)
	batch := make([]nettest.Frame, 0, 64)
	r := realTrafficRun{}
	for i := 0; i < len(frames); {
		n := min(1+rng.IntN(64), len(frames)-i)
		batch = batch[:0]
		for _, p := range frames[i : i+n] {
			batch = append(batch, nettest.Frame{Hdr: header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, Data: p.Data})
		}
		q.InjectFrames(batch...)
		i += n
		r.batches++
		for q.Pending() > 0 {
			if _, err := received(); err != nil {
				t.Fatalf("receiving: %v", err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("device stopped reading: %d frames pending after %d of %d injected", q.Pending(), i, len(frames))
			}
			time.Sleep(20 * time.Microsecond)
		}
	}

	// Idle: everything read, every packet the device placed in the ring
	// received, nothing held by RSC, stable over several polls.
	stable := 0
	var last virtionet.QueueStats
	for stable < 5 {
		n, err := received()
		require.NoError(t, err, "receiving")
		s := dev.Stats().Queues[0]
		idle := q.Pending() == 0 && s.RxPackets == uint64(n) && (s.RSC == nil || s.RSC.Pending == 0)
		if idle && s.RxPackets == last.RxPackets && s.RSC != nil && last.RSC != nil && s.RSC.Frames == last.RSC.Frames {
			stable++
		} else {
			stable = 0
		}
		last = s
		if time.Now().After(deadline) {
			t.Fatalf("device never idle: %d received, stats %+v", n, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopRecv()
	r.elapsed = time.Since(start)
	r.frames = got
	r.stats = dev.Stats().Queues[0]
	require.Empty(t, g.IRQ.Resets(), "NEEDS_RESET")
	return r
}

// checkRealTraffic checks a run: streams, sizes, headers and counters.
func checkRealTraffic(t *testing.T, m realTrafficMode, in []pcap.Packet, want pcaptest.Streams, r realTrafficRun) {
	t.Helper()
	s := r.stats
	require.NotNil(t, s.RSC, "RSC ran")
	require.Zero(t, s.RxDropTooBig+s.RxDropGSO+s.RxDropCsum+s.RxDropShort+s.RxDropBackend+s.RxDropReset+s.RxDropLinkDown,
		"receive drops: %+v", s)
	require.Zero(t, s.RSC.BadChecksum, "DATA_VALID frames are trusted")
	require.EqualValues(t, len(in), s.RxPackets+s.RxDropFiltered+s.RSC.CoalescedSegments-s.RSC.CoalesceEvents,
		"every frame delivered alone, coalesced or filtered: %+v %+v", s, *s.RSC)

	got := pcaptest.Reassemble(r.packets())
	require.Empty(t, pcaptest.CompareStreams(want, got))

	plainData, coalesced, rscSegs := 0, 0, 0
	perType := map[uint8]int{}
	for i, f := range r.frames {
		require.LessOrEqual(t, ipDatagramLen(f.Data), 65535, "packet %d", i)
		require.EqualValues(t, f.Buffers, f.Hdr.NumBuffers, "packet %d", i)
		if !f.Hdr.IsGSO() {
			require.Zero(t, f.Hdr.Flags&header.VirtioNetHdrFRSCInfo, "packet %d: RSC_INFO without GSO", i)
			require.EqualValues(t, header.VirtioNetHdrFDataValid, f.Hdr.Flags, "packet %d keeps the TAP's flags", i)
			if seg, ok := pcaptest.ParseTCP(f.Data); ok && len(seg.Payload) > 0 {
				plainData++
			}
			continue
		}
		coalesced++
		perType[f.Hdr.GSOType]++
		rscSegs += checkCoalescedPacket(t, m, i, f)
	}
	require.EqualValues(t, s.RSC.CoalesceEvents, coalesced, "coalesced packets")
	require.Positive(t, perType[header.VirtioNetHdrGSOTCPv4], "IPv4 packets coalesced")
	require.Positive(t, perType[header.VirtioNetHdrGSOTCPv6], "IPv6 packets coalesced")
	if m.rscInfo {
		require.EqualValues(t, s.RSC.CoalescedSegments, rscSegs, "RSC_INFO segments add up")
	}
	require.EqualValues(t, dataSegments(in), plainData+int(s.RSC.CoalescedSegments),
		"every data segment delivered alone or inside a coalesced packet")
}

// checkCoalescedPacket checks the headers of coalesced packet i and returns
// its RSC_INFO segment count (0 without RSC_INFO).
func checkCoalescedPacket(t *testing.T, m realTrafficMode, i int, f nettest.RxFrame) int {
	t.Helper()
	h := f.Hdr
	info, ok := header.Ethernet(f.Data).Parse()
	require.True(t, ok, "packet %d", i)
	var l4, payloadLen int
	var pseudo uint16
	switch info.EtherType {
	case header.EtherTypeIPv4:
		require.EqualValues(t, header.VirtioNetHdrGSOTCPv4, h.GSOType, "packet %d", i)
		ip := header.IPv4(f.Data[info.HeaderLen:])
		require.True(t, ip.IsValid(), "packet %d", i)
		require.True(t, ip.IsChecksumValid(), "packet %d: IPv4 header checksum", i)
		require.Equal(t, len(f.Data)-info.HeaderLen, int(ip.TotalLength()), "packet %d: IPv4 total length", i)
		l4 = info.HeaderLen + ip.HeaderLen()
		src, dst := ip.SrcAddr(), ip.DstAddr()
		pseudo = header.PseudoHeaderSum(header.ProtocolTCP, src[:], dst[:], uint32(len(f.Data)-l4))
	case header.EtherTypeIPv6:
		require.EqualValues(t, header.VirtioNetHdrGSOTCPv6, h.GSOType, "packet %d", i)
		ip := header.IPv6(f.Data[info.HeaderLen:])
		require.True(t, ip.IsValid(), "packet %d", i)
		require.Equal(t, len(f.Data)-info.HeaderLen-header.IPv6MinSize, int(ip.PayloadLength()), "packet %d: IPv6 payload length", i)
		proto, off, ok := ip.TransportHeader()
		require.True(t, ok && proto == header.ProtocolTCP, "packet %d", i)
		l4 = info.HeaderLen + off
		src, dst := ip.SrcAddr(), ip.DstAddr()
		pseudo = header.PseudoHeaderSum(header.ProtocolTCP, src[:], dst[:], uint32(len(f.Data)-l4))
	default:
		t.Fatalf("packet %d: GSO type %d on ethertype %#x", i, h.GSOType, info.EtherType)
	}
	tcp := header.TCP(f.Data[l4:])
	require.True(t, tcp.IsValid(), "packet %d", i)
	hdrEnd := l4 + tcp.DataOffset()
	payloadLen = len(f.Data) - hdrEnd
	require.Equal(t, pseudo, tcp.Checksum(), "packet %d: TCP checksum field holds the pseudo-header sum", i)
	require.EqualValues(t, hdrEnd, h.HdrLen, "packet %d: hdr_len", i)
	require.Positive(t, h.GSOSize, "packet %d", i)
	require.Greater(t, payloadLen, int(h.GSOSize), "packet %d: more than one segment of payload", i)
	if !m.rscInfo {
		require.EqualValues(t, header.VirtioNetHdrFNeedsCsum, h.Flags, "packet %d", i)
		require.EqualValues(t, l4, h.CsumStart, "packet %d: csum_start", i)
		require.EqualValues(t, 16, h.CsumOffset, "packet %d: csum_offset", i)
		return 0
	}
	require.EqualValues(t, header.VirtioNetHdrFNeedsCsum|header.VirtioNetHdrFRSCInfo, h.Flags, "packet %d", i)
	segs, dup, ok := h.RSCInfo()
	require.True(t, ok, "packet %d", i)
	require.GreaterOrEqual(t, int(segs), 2, "packet %d: RSC segments", i)
	require.Zero(t, dup, "packet %d: dup ACKs", i)
	require.LessOrEqual(t, payloadLen, int(segs)*int(h.GSOSize), "packet %d: %d segments of at most %d bytes", i, segs, h.GSOSize)
	require.Greater(t, payloadLen, int(segs)-1, "packet %d", i)
	return int(segs)
}

// ipDatagramLen returns the IP datagram length of an IPv4/IPv6 frame (0
// for anything else).
func ipDatagramLen(f []byte) int {
	info, ok := header.Ethernet(f).Parse()
	if !ok {
		return 0
	}
	switch info.EtherType {
	case header.EtherTypeIPv4:
		if len(f) >= info.HeaderLen+header.IPv4MinSize {
			return int(header.IPv4(f[info.HeaderLen:]).TotalLength())
		}
	case header.EtherTypeIPv6:
		if len(f) >= info.HeaderLen+header.IPv6MinSize {
			return header.IPv6MinSize + int(header.IPv6(f[info.HeaderLen:]).PayloadLength())
		}
	}
	return 0
}

package virtionet_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/virtio"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
)

// stats waits until cond holds for the published counters of pair 0.
func stats(t *testing.T, dev *virtionet.Device, cond func(virtionet.QueueStats) bool) virtionet.QueueStats {
	t.Helper()
	var s virtionet.QueueStats
	require.Eventually(t, func() bool {
		s = dev.Stats().Queues[0]
		return cond(s)
	}, timeout, time.Millisecond, "counters never matched")
	return s
}

func TestRxMergeableSmallFrames(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := linuxGuest(t, dev, nettest.GuestConfig{}, 64)
	require.Equal(t, 12, g.HdrLen)
	var sent [][]byte
	for i, n := range []int{60, 64, 100, 1514, 1000, 14, 1518} {
		f := ethFrame(guestMAC, hostMAC, 0x0800, n, byte(i))
		sent = append(sent, f)
		be.Q(0).Inject(header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, f)
	}
	for i, want := range sent {
		got, err := g.Recv(0, timeout)
		require.NoError(t, err, "frame %d", i)
		require.Equal(t, want, got.Data, "frame %d", i)
		require.EqualValues(t, 1, got.Hdr.NumBuffers)
		require.Equal(t, 1, got.Buffers)
		require.EqualValues(t, header.VirtioNetHdrFDataValid, got.Hdr.Flags, "DATA_VALID kept with GUEST_CSUM")
	}
	s := stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxPackets == uint64(len(sent)) })
	require.Zero(t, s.RxDropShort)
	require.Positive(t, g.IRQ.Queue(0), "rx interrupts")
}

// gsoFrame is a 64 KB TCPv4 GSO super-frame as a tap with TUN_F_TSO4 hands
// it over: partial checksum, gso_size = MSS.
func gsoFrame(t testing.TB, payload int) (header.VirtioNetHdr, []byte) {
	f := header.TCPFrame{DstMAC: guestMAC, SrcMAC: hostMAC, Src: hostIP, Dst: guestIP, DontFragment: true,
		SrcPort: 5001, DstPort: 40000, Seq: 1, Ack: 1, Flags: header.TCPFlagACK, Window: 1000,
		Payload: pattern(payload, 3), Checksum: header.ChecksumPartial}
	h := f.PartialChecksumHdr()
	h.GSOType = header.VirtioNetHdrGSOTCPv4
	h.GSOSize = 1448
	h.HdrLen = 54
	return h, f.Build(nil)
}

func TestRxMergeableGSOAcrossBuffers(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	g.SetupRx(0, 200, 1536)
	g.PostRx(0, 200)
	h, f := gsoFrame(t, 65000)
	be.Q(0).Inject(h, f)
	be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 200, 9))
	got, err := g.Recv(0, timeout)
	require.NoError(t, err)
	require.Equal(t, f, got.Data)
	require.Equal(t, (12+len(f)+1535)/1536, got.Buffers)
	require.EqualValues(t, got.Buffers, got.Hdr.NumBuffers)
	require.EqualValues(t, header.VirtioNetHdrGSOTCPv4, got.Hdr.GSOType)
	require.EqualValues(t, 1448, got.Hdr.GSOSize)
	require.EqualValues(t, header.VirtioNetHdrFNeedsCsum, got.Hdr.Flags)
	require.Equal(t, h.CsumStart, got.Hdr.CsumStart)
	got, err = g.Recv(0, timeout)
	require.NoError(t, err)
	require.Len(t, got.Data, 200)
}

func TestRxBigPacketChains(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	feat := virtionet.LinuxDriverFeatures &^ (1 << virtionet.FeatureMrgRxBuf)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: feat})
	require.False(t, g.Mrg)
	require.Equal(t, 12, g.HdrLen, "VERSION_1: 12-byte header even without MRG_RXBUF")
	// Linux big packets: the header in its own descriptor, then 17 pages.
	layout := []uint32{12}
	for i := 0; i < 17; i++ {
		layout = append(layout, 4096)
	}
	g.SetupRx(0, 14, layout...)
	g.PostRx(0, 14)
	h, f := gsoFrame(t, 65000)
	small := ethFrame(guestMAC, hostMAC, 0x0800, 1514, 1)
	be.Q(0).Inject(h, f)
	be.Q(0).Inject(header.VirtioNetHdr{}, small)
	got, err := g.Recv(0, timeout)
	require.NoError(t, err)
	require.Equal(t, f, got.Data)
	require.EqualValues(t, 1, got.Hdr.NumBuffers, "num_buffers is 1 without MRG_RXBUF (virtio 1)")
	require.EqualValues(t, header.VirtioNetHdrGSOTCPv4, got.Hdr.GSOType)
	got, err = g.Recv(0, timeout)
	require.NoError(t, err)
	require.Equal(t, small, got.Data)
}

func TestRxSmallBuffersDropTooBig(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	feat := virtionet.LinuxDriverFeatures &^ (1<<virtionet.FeatureMrgRxBuf | 1<<virtionet.FeatureGuestTSO4 |
		1<<virtionet.FeatureGuestTSO6 | 1<<virtionet.FeatureGuestUFO | 1<<virtionet.FeatureGuestECN)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: feat})
	g.SetupRx(0, 8, 12+1518)
	g.PostRx(0, 8)
	a := ethFrame(guestMAC, hostMAC, 0x0800, 1514, 1)
	big := ethFrame(guestMAC, hostMAC, 0x0800, 3000, 2) // a jumbo frame the buffers cannot hold
	b := ethFrame(guestMAC, hostMAC, 0x0800, 1518, 3)
	for _, f := range [][]byte{a, big, b} {
		be.Q(0).Inject(header.VirtioNetHdr{}, f)
	}
	for _, want := range [][]byte{a, b} {
		got, err := g.Recv(0, timeout)
		require.NoError(t, err)
		require.Equal(t, want, got.Data)
	}
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxDropTooBig == 1 && s.RxPackets == 2 })
}

func TestHeaderSizes(t *testing.T) {
	low := virtionet.LinuxDriverFeatures & 0xFFFFFFFF
	for _, tc := range []struct {
		name    string
		cfg     nettest.GuestConfig
		hdrLen  int
		mrg     bool
		numBufs bool
	}{
		{"modern mrg", nettest.GuestConfig{}, 12, true, true},
		{"modern no mrg", nettest.GuestConfig{Features: virtionet.LinuxDriverFeatures &^ (1 << virtionet.FeatureMrgRxBuf)}, 12, false, true},
		{"legacy mrg", nettest.GuestConfig{Legacy: true, Features: low}, 12, true, true},
		{"legacy no mrg", nettest.GuestConfig{Legacy: true, Features: low &^ (1 << virtionet.FeatureMrgRxBuf)}, 10, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, 1)
			dev := newDevice(t, be)
			g := nettest.StartGuest(t, dev, tc.cfg)
			require.Equal(t, tc.hdrLen, g.HdrLen)
			require.Equal(t, tc.hdrLen, virtionet.HeaderSize(dev.Negotiated()))
			if tc.mrg {
				g.SetupRx(0, 32, 2048)
			} else {
				g.SetupRx(0, 8, uint32(tc.hdrLen), 65536)
			}
			g.PostRx(0, 8)
			f := ethFrame(guestMAC, hostMAC, 0x86dd, 1000, 5)
			be.Q(0).Inject(header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, f)
			got, err := g.Recv(0, timeout)
			require.NoError(t, err)
			require.Equal(t, f, got.Data)
			if tc.numBufs {
				require.EqualValues(t, 1, got.Hdr.NumBuffers)
			}
			// Transmit with the negotiated header size: the backend sees a
			// 12-byte header and the exact frame.
			out := ethFrame(hostMAC, guestMAC, 0x0800, 600, 7)
			require.NoError(t, g.Send(1, header.VirtioNetHdr{}, out))
			sent, err := be.Q(0).WaitSent(1, timeout)
			require.NoError(t, err)
			require.Equal(t, out, sent[0].Data)
		})
	}
}

func TestTxHeaderPassing(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	h, f := gsoFrame(t, 30000)
	// The guest's header, split from the frame at an odd place (any layout).
	hb := make([]byte, 12)
	_ = h.Encode(hb)
	all := append(hb, f...)
	require.NoError(t, g.SendChain(1, queuetest.R(all[:7]), queuetest.R(all[7:100]), queuetest.R(all[100:])))
	csum := f[:]
	require.NoError(t, g.Send(1, header.VirtioNetHdr{Flags: header.VirtioNetHdrFNeedsCsum | header.VirtioNetHdrFDataValid | header.VirtioNetHdrFRSCInfo,
		CsumStart: 34, CsumOffset: 16, NumBuffers: 7}, csum))
	sent, err := be.Q(0).WaitSent(2, timeout)
	require.NoError(t, err)
	require.Equal(t, f, sent[0].Data)
	require.Equal(t, h, sent[0].Hdr)
	require.EqualValues(t, header.VirtioNetHdrFNeedsCsum, sent[1].Hdr.Flags, "only NEEDS_CSUM is passed on")
	require.Zero(t, sent[1].Hdr.NumBuffers)
	s := stats(t, dev, func(s virtionet.QueueStats) bool { return s.TxPackets == 2 })
	require.EqualValues(t, 2*len(f), s.TxBytes)
}

func TestTxValidation(t *testing.T) {
	frame := ethFrame(hostMAC, guestMAC, 0x0800, 200, 1)
	tso4 := header.VirtioNetHdr{Flags: header.VirtioNetHdrFNeedsCsum, GSOType: header.VirtioNetHdrGSOTCPv4,
		GSOSize: 100, HdrLen: 54, CsumStart: 34, CsumOffset: 16}
	for _, tc := range []struct {
		name    string
		props   []string
		feat    uint64
		h       header.VirtioNetHdr
		frame   []byte
		counter func(virtionet.QueueStats) uint64
	}{
		{"tso4 without HOST_TSO4", []string{"host_tso4", "off"}, 0, tso4, frame,
			func(s virtionet.QueueStats) uint64 { return s.TxDropGSO }},
		{"tso6 not acked", nil, virtionet.LinuxDriverFeatures &^ (1 << virtionet.FeatureHostTSO6),
			header.VirtioNetHdr{Flags: 1, GSOType: header.VirtioNetHdrGSOTCPv6, GSOSize: 100, CsumStart: 54, CsumOffset: 16}, frame,
			func(s virtionet.QueueStats) uint64 { return s.TxDropGSO }},
		{"ecn without HOST_ECN", []string{"host_ecn", "off"}, 0,
			header.VirtioNetHdr{Flags: 1, GSOType: header.VirtioNetHdrGSOTCPv4 | header.VirtioNetHdrGSOECN, GSOSize: 100, CsumStart: 34, CsumOffset: 16}, frame,
			func(s virtionet.QueueStats) uint64 { return s.TxDropGSO }},
		{"udp_l4 never offered", nil, 0, header.VirtioNetHdr{GSOType: header.VirtioNetHdrGSOUDPL4, GSOSize: 100}, frame,
			func(s virtionet.QueueStats) uint64 { return s.TxDropGSO }},
		{"unknown gso type", nil, 0, header.VirtioNetHdr{GSOType: 9, GSOSize: 100}, frame,
			func(s virtionet.QueueStats) uint64 { return s.TxDropGSO }},
		{"gso_size 0", nil, 0, header.VirtioNetHdr{Flags: 1, GSOType: header.VirtioNetHdrGSOTCPv4, CsumStart: 34, CsumOffset: 16}, frame,
			func(s virtionet.QueueStats) uint64 { return s.TxDropGSO }},
		{"csum beyond frame", nil, 0, header.VirtioNetHdr{Flags: 1, CsumStart: 190, CsumOffset: 16}, frame,
			func(s virtionet.QueueStats) uint64 { return s.TxDropCsum }},
		{"runt", nil, 0, header.VirtioNetHdr{}, frame[:13],
			func(s virtionet.QueueStats) uint64 { return s.TxDropShort }},
		{"too big", nil, 0, header.VirtioNetHdr{}, make([]byte, virtionet.MaxFrameSize+1),
			func(s virtionet.QueueStats) uint64 { return s.TxDropTooBig }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, 1)
			dev := newDevice(t, be, tc.props...)
			g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: tc.feat})
			require.NoError(t, g.Send(1, tc.h, tc.frame))
			// A valid frame afterwards still goes through.
			require.NoError(t, g.Send(1, header.VirtioNetHdr{}, frame))
			sent, err := be.Q(0).WaitSent(1, timeout)
			require.NoError(t, err)
			require.Len(t, sent, 1)
			require.Equal(t, frame, sent[0].Data)
			stats(t, dev, func(s virtionet.QueueStats) bool { return tc.counter(s) == 1 && s.TxPackets == 1 })
		})
	}
}

func TestRxHeaderRules(t *testing.T) {
	t.Run("gso not enabled is dropped", func(t *testing.T) {
		be := newBackend(t, 1)
		dev := newDevice(t, be)
		feat := virtionet.LinuxDriverFeatures &^ (1 << virtionet.FeatureGuestTSO4)
		g := linuxGuest(t, dev, nettest.GuestConfig{Features: feat}, 64)
		h, f := gsoFrame(t, 10000)
		be.Q(0).Inject(h, f)
		h6 := h
		h6.GSOType = header.VirtioNetHdrGSOTCPv4 | header.VirtioNetHdrGSOECN // ECN allowed, TSO4 not
		be.Q(0).Inject(h6, f)
		small := ethFrame(guestMAC, hostMAC, 0x0800, 100, 1)
		be.Q(0).Inject(header.VirtioNetHdr{}, small)
		got, err := g.Recv(0, timeout)
		require.NoError(t, err)
		require.Equal(t, small, got.Data)
		stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxDropGSO == 2 })
	})
	t.Run("needs_csum without guest_csum is completed", func(t *testing.T) {
		be := newBackend(t, 1)
		dev := newDevice(t, be)
		feat := virtionet.LinuxDriverFeatures &^ (1<<virtionet.FeatureGuestCSUM | 1<<virtionet.FeatureGuestTSO4 |
			1<<virtionet.FeatureGuestTSO6 | 1<<virtionet.FeatureGuestECN | 1<<virtionet.FeatureGuestUFO)
		g := linuxGuest(t, dev, nettest.GuestConfig{Features: feat}, 64)
		require.Equal(t, []uint64{0}, be.Offloads(), "no guest offloads: TUN offload 0")
		f := tcpFrame(100, pattern(1000, 1), header.ChecksumPartial)
		full := tcpFrame(100, pattern(1000, 1), header.ChecksumFull)
		be.Q(0).Inject(header.VirtioNetHdr{Flags: header.VirtioNetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}, f)
		be.Q(0).Inject(header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, full)
		got, err := g.Recv(0, timeout)
		require.NoError(t, err)
		require.Equal(t, full, got.Data, "checksum completed in software")
		require.Zero(t, got.Hdr.Flags)
		got, err = g.Recv(0, timeout)
		require.NoError(t, err)
		require.Zero(t, got.Hdr.Flags, "DATA_VALID only with GUEST_CSUM")
		stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxCsumCompleted == 1 })
	})
	t.Run("bad csum offsets are dropped", func(t *testing.T) {
		be := newBackend(t, 1)
		dev := newDevice(t, be)
		g := linuxGuest(t, dev, nettest.GuestConfig{}, 64)
		be.Q(0).Inject(header.VirtioNetHdr{Flags: header.VirtioNetHdrFNeedsCsum, CsumStart: 90, CsumOffset: 16},
			ethFrame(guestMAC, hostMAC, 0x0800, 100, 1))
		ok := ethFrame(guestMAC, hostMAC, 0x0800, 100, 2)
		be.Q(0).Inject(header.VirtioNetHdr{}, ok)
		got, err := g.Recv(0, timeout)
		require.NoError(t, err)
		require.Equal(t, ok, got.Data)
		stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxDropCsum == 1 })
	})
}

// TestBackPressure: frames wait in the backend while the ring is empty;
// when buffers come back nothing is lost and the order is kept.
func TestBackPressure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		big   bool
		feats uint64
	}{
		{"mergeable 1514", false, 0},
		{"mergeable 64K", true, 0},
		{"big packets 64K", true, virtionet.LinuxDriverFeatures &^ (1 << virtionet.FeatureMrgRxBuf)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, 1)
			dev := newDevice(t, be)
			g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: tc.feats})
			if g.Mrg {
				g.SetupRx(0, 120, 2048)
			} else {
				g.SetupRx(0, 10, 12, 65600)
			}
			const frames = 60
			var want [][]byte
			for i := 0; i < frames; i++ {
				var f []byte
				h := header.VirtioNetHdr{}
				if tc.big {
					h, f = gsoFrame(t, 10000+i*100)
					f[60] = byte(i)
				} else {
					f = ethFrame(guestMAC, hostMAC, 0x0800, 1514, byte(i))
				}
				want = append(want, f)
				be.Q(0).Inject(h, f)
			}
			// Nothing posted: nothing received, nothing dropped.
			time.Sleep(20 * time.Millisecond)
			require.Equal(t, frames, be.Q(0).Pending())
			got := 0
			for got < frames {
				g.PostRx(0, 16) // a trickle of buffers
				for {
					f, err := g.Recv(0, 10*time.Millisecond)
					if err != nil {
						break
					}
					require.Equal(t, want[got], f.Data, "frame %d", got)
					got++
				}
			}
			s := stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxPackets == frames })
			require.Zero(t, s.RxDropTooBig+s.RxDropReset+s.RxDropShort)
			require.Positive(t, s.RxRingFull)
		})
	}
}

// TestResetWithPacketsInFlight resets the device while frames are held and
// tx chains are outstanding, then brings it up again.
func TestResetWithPacketsInFlight(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	g.SetupRx(0, 4, 2048)
	g.PostRx(0, 1)
	for i := 0; i < 10; i++ {
		h, f := gsoFrame(t, 30000)
		be.Q(0).Inject(h, f)
	}
	for i := 0; i < 20; i++ {
		require.NoError(t, g.PostTx(1, queuetest.R(make([]byte, 12)), queuetest.R(ethFrame(hostMAC, guestMAC, 0x0800, 100, 1))))
	}
	time.Sleep(10 * time.Millisecond)
	g.Reset()
	require.Zero(t, dev.Negotiated())
	require.Equal(t, uint64(0), be.Offloads()[len(be.Offloads())-1], "offloads cleared at reset")
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxDropReset >= 1 })

	// A new driver instance works normally; nothing from before the reset
	// (the held frame) shows up.
	g2 := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	g2.SetupRx(0, 64, 4096)
	g2.PostRx(0, 64)
	f := ethFrame(guestMAC, hostMAC, 0x0800, 80, 1)
	be.Q(0).Inject(header.VirtioNetHdr{}, f)
	gso := 0
	for {
		got, err := g2.Recv(0, timeout)
		require.NoError(t, err)
		g2.PostRx(0, got.Buffers)
		if len(got.Data) != 80 {
			require.Len(t, got.Data, 30054)
			gso++
		} else {
			require.Equal(t, f, got.Data)
			break
		}
	}
	require.Equal(t, 9, gso, "the frame held at reset is discarded, the others arrive")
}

func TestLinkDown(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := linuxGuest(t, dev, nettest.GuestConfig{}, 16)
	require.Equal(t, []byte{1, 0}, g.ReadConfig(6, 2))
	require.NoError(t, dev.SetLinkUp(t.Context(), false))
	require.Equal(t, []byte{0, 0}, g.ReadConfig(6, 2))
	require.Equal(t, 1, g.IRQ.Config())
	be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 100, 1))
	require.NoError(t, g.Send(1, header.VirtioNetHdr{}, ethFrame(hostMAC, guestMAC, 0x0800, 100, 1)))
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxDropLinkDown == 1 && s.TxDropLinkDown == 1 })
	require.NoError(t, dev.SetLinkUp(t.Context(), true))
	require.Equal(t, 2, g.IRQ.Config())
	f := ethFrame(guestMAC, hostMAC, 0x0800, 100, 2)
	be.Q(0).Inject(header.VirtioNetHdr{}, f)
	got, err := g.Recv(0, timeout)
	require.NoError(t, err)
	require.Equal(t, f, got.Data)
}

func TestConfigSpace(t *testing.T) {
	be := newBackend(t, 4)
	dev := newDevice(t, be, "mq", "on", "host_mtu", "1400", "speed", "10000", "duplex", "full")
	b := make([]byte, 24)
	dev.ReadConfig(0, b)
	require.Equal(t, guestMAC[:], b[0:6])
	require.Equal(t, []byte{1, 0}, b[6:8], "LINK_UP")
	require.Equal(t, []byte{4, 0}, b[8:10], "max_virtqueue_pairs = tap queues")
	require.Equal(t, []byte{0x78, 0x05}, b[10:12], "mtu 1400")
	require.Equal(t, []byte{0x10, 0x27, 0, 0}, b[12:16], "speed 10000")
	require.Equal(t, byte(1), b[16], "full duplex")
	require.Equal(t, bytes.Repeat([]byte{0xff}, 7), b[17:], "beyond the config size")
	require.Len(t, dev.QueueMaxSizes(), 9)

	// Default device: 8 bytes (mac + status).
	dev2 := newDevice(t, newBackend(t, 1))
	dev2.ReadConfig(0, b)
	require.Equal(t, bytes.Repeat([]byte{0xff}, 16), b[8:])
	require.Equal(t, []uint16{256, 256, 64}, dev2.QueueMaxSizes())
	// status=off: 6 bytes.
	dev3 := newDevice(t, newBackend(t, 1), "status", "off")
	dev3.ReadConfig(0, b)
	require.Equal(t, bytes.Repeat([]byte{0xff}, 18), b[6:])
}

func TestLegacyMACWrite(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	// Legacy driver without CTRL_MAC_ADDR: config writes change the MAC.
	low := virtionet.LinuxDriverFeatures & 0xFFFFFFFF &^ (1 << virtionet.FeatureCtrlMACAddr)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{Legacy: true, Features: low})
	dev.WriteConfig(0, []byte{2, 0, 0, 0, 0, 9})
	require.Equal(t, [6]byte{2, 0, 0, 0, 0, 9}, dev.MAC())
	g.Reset()
	require.Equal(t, guestMAC, dev.MAC(), "reset restores the configured MAC")

	// Modern driver: ignored. Legacy with CTRL_MAC_ADDR: ignored.
	g = nettest.StartGuest(t, dev, nettest.GuestConfig{})
	dev.WriteConfig(0, []byte{2, 0, 0, 0, 0, 9})
	require.Equal(t, guestMAC, dev.MAC())
	g.Reset()
	g = nettest.StartGuest(t, dev, nettest.GuestConfig{Legacy: true, Features: low | 1<<virtionet.FeatureCtrlMACAddr})
	dev.WriteConfig(0, []byte{2, 0, 0, 0, 0, 9})
	require.Equal(t, guestMAC, dev.MAC())
	_ = g
}

func TestQueueLayoutMQ(t *testing.T) {
	be := newBackend(t, 3)
	dev := newDevice(t, be, "mq", "on")
	require.Equal(t, []uint16{256, 256, 256, 256, 256, 256, 64}, dev.QueueMaxSizes())
	require.Equal(t, []int{1}, be.ActiveQueues(), "extra tap queues detached at start")
	// A driver without MQ gets the 3-queue layout.
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: virtionet.LinuxDriverFeatures &^ (1 << virtionet.FeatureMQ)})
	require.Equal(t, []uint16{256, 256, 64}, dev.QueueMaxSizes())
	require.Equal(t, 2, g.CtrlIndex())
	g.Reset()
	require.Len(t, dev.QueueMaxSizes(), 7)
	g = nettest.StartGuest(t, dev, nettest.GuestConfig{})
	require.Equal(t, 6, g.CtrlIndex())
	// VQ_PAIRS_SET 3 attaches all tap queues; traffic on pair 2.
	ack, err := g.Ctrl(4, 0, []byte{3, 0})
	require.NoError(t, err)
	require.Zero(t, ack)
	require.Equal(t, 3, be.ActiveQueues()[len(be.ActiveQueues())-1])
	g.SetupRx(4, 16, 4096)
	g.PostRx(4, 16)
	f := ethFrame(guestMAC, hostMAC, 0x0800, 300, 1)
	be.Q(2).Inject(header.VirtioNetHdr{}, f)
	got, err := g.Recv(4, timeout)
	require.NoError(t, err)
	require.Equal(t, f, got.Data)
	out := ethFrame(hostMAC, guestMAC, 0x0800, 300, 2)
	require.NoError(t, g.Send(5, header.VirtioNetHdr{}, out))
	sent, err := be.Q(2).WaitSent(1, timeout)
	require.NoError(t, err)
	require.Equal(t, out, sent[0].Data)
	ack, err = g.Ctrl(4, 0, []byte{4, 0})
	require.NoError(t, err)
	require.EqualValues(t, 1, ack, "more pairs than max")
	g.Reset()
	require.Equal(t, 1, be.ActiveQueues()[len(be.ActiveQueues())-1], "reset detaches again")
}

func TestAnnounce(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	require.True(t, dev.Announce())
	require.Equal(t, []byte{3, 0}, g.ReadConfig(6, 2), "LINK_UP|ANNOUNCE")
	require.Equal(t, 1, g.IRQ.Config())
	ack, err := g.Ctrl(3, 0, nil)
	require.NoError(t, err)
	require.Zero(t, ack)
	require.Equal(t, []byte{1, 0}, g.ReadConfig(6, 2))
	ack, err = g.Ctrl(3, 0, nil)
	require.NoError(t, err)
	require.EqualValues(t, 1, ack, "no announcement pending")
	g.Reset()
	nettest.StartGuest(t, dev, nettest.GuestConfig{Features: virtionet.LinuxDriverFeatures &^ (1 << virtionet.FeatureGuestAnnounce)})
	require.False(t, dev.Announce())
}

// TestRestartWithoutRenegotiation: the PCI transport stops the device
// (Reset) when bus mastering is cleared and activates it again when the
// driver sets DRIVER_OK, without a new feature negotiation.
func TestRestartWithoutRenegotiation(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := linuxGuest(t, dev, nettest.GuestConfig{}, 32)
	neg := dev.Negotiated()
	dev.Reset()
	require.Zero(t, be.Offloads()[len(be.Offloads())-1])
	for _, q := range g.Queues {
		q.SetFeatures(virtio.QueueFeatures(neg))
	}
	require.NoError(t, dev.Activate(g.Mem, g.Queues, g.Kicks, g.IRQ))
	require.Equal(t, neg, dev.Negotiated())
	require.Equal(t, be.Offloads()[0], be.Offloads()[len(be.Offloads())-1], "offloads re-applied")
	// Every one of the 32 posted buffers is still usable (the chains the
	// worker had popped ahead went back to the ring).
	for i := 0; i < 32; i++ {
		be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 700, byte(i)))
	}
	for i := 0; i < 32; i++ {
		got, err := g.Recv(0, timeout)
		require.NoError(t, err, "frame %d", i)
		require.Equal(t, ethFrame(guestMAC, hostMAC, 0x0800, 700, byte(i)), got.Data)
		require.EqualValues(t, 1, got.Hdr.NumBuffers)
	}
	ack, err := g.Ctrl(0, 0, []byte{0})
	require.NoError(t, err)
	require.Zero(t, ack, "control plane configured again")
}

// TestTxBackPressure: while the backend cannot take frames, transmit
// chains stay in the ring (nothing dropped); then they go out in order.
func TestTxBackPressure(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	be.Q(0).BlockTx(true)
	var want [][]byte
	for i := 0; i < 10; i++ {
		f := ethFrame(hostMAC, guestMAC, 0x0800, 100+i, byte(i))
		want = append(want, f)
		require.NoError(t, g.PostTx(1, queuetest.R(make([]byte, 12)), queuetest.R(f)))
	}
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.TxBackPressure > 0 })
	require.Error(t, g.WaitTx(1, 1, 20*time.Millisecond), "no chain completed while blocked")
	be.Q(0).BlockTx(false)
	require.NoError(t, g.WaitTx(1, 10, timeout))
	sent, err := be.Q(0).WaitSent(10, timeout)
	require.NoError(t, err)
	for i := range want {
		require.Equal(t, want[i], sent[i].Data)
	}
	s := stats(t, dev, func(s virtionet.QueueStats) bool { return s.TxPackets == 10 })
	require.Zero(t, s.TxDropBackend)
}

// TestNotificationSuppression: rx interrupts follow used_event (EVENT_IDX)
// or VIRTQ_AVAIL_F_NO_INTERRUPT.
func TestNotificationSuppression(t *testing.T) {
	recvRaw := func(t *testing.T, g *nettest.Guest, be *nettest.Backend, n int) {
		t.Helper()
		d := g.Drv[0]
		want := d.UsedIdx() + uint16(n)
		for i := 0; i < n; i++ {
			be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 100, byte(i)))
		}
		require.Eventually(t, func() bool { return d.UsedIdx() == want }, timeout, time.Millisecond)
		time.Sleep(5 * time.Millisecond)
	}
	t.Run("event_idx", func(t *testing.T) {
		be := newBackend(t, 1)
		g := linuxGuest(t, newDevice(t, be), nettest.GuestConfig{}, 64)
		recvRaw(t, g, be, 1)
		require.Equal(t, 1, g.IRQ.Queue(0))
		require.NoError(t, g.Drv[0].SetUsedEvent(100))
		recvRaw(t, g, be, 5)
		require.Equal(t, 1, g.IRQ.Queue(0), "used_event 100 not reached")
		require.NoError(t, g.Drv[0].SetUsedEvent(g.Drv[0].UsedIdx()))
		recvRaw(t, g, be, 1)
		require.Equal(t, 2, g.IRQ.Queue(0))
	})
	t.Run("no_interrupt flag", func(t *testing.T) {
		be := newBackend(t, 1)
		g := linuxGuest(t, newDevice(t, be), nettest.GuestConfig{Features: virtionet.LinuxDriverFeatures &^ (1 << virtio.FeatureEventIdx)}, 64)
		require.NoError(t, g.Drv[0].SetAvailFlags(queue.AvailFNoInterrupt))
		recvRaw(t, g, be, 3)
		require.Zero(t, g.IRQ.Queue(0))
		require.NoError(t, g.Drv[0].SetAvailFlags(0))
		recvRaw(t, g, be, 1)
		require.Equal(t, 1, g.IRQ.Queue(0))
	})
}

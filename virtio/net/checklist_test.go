package virtionet_test

// Tests named after the malicious-guest checklist (virtio-pci-qemu.md §7.3)
// items that concern the net device: each hostile input must leave the
// device alive and in a defined state (the chain dropped and counted, or
// DEVICE_NEEDS_RESET reported), and a reset must bring it back.

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
)

// requireNeedsReset waits for a NeedsReset report wrapping want.
func requireNeedsReset(t *testing.T, g *nettest.Guest, want error) {
	t.Helper()
	require.Eventually(t, func() bool { return len(g.IRQ.Resets()) > 0 }, timeout, time.Millisecond,
		"device did not report NEEDS_RESET")
	require.ErrorIs(t, g.IRQ.Resets()[0], want)
}

// requireWorks resets the device, starts a fresh guest and passes traffic
// both ways.
func requireWorks(t *testing.T, g *nettest.Guest, be *nettest.Backend) {
	t.Helper()
	g.Reset()
	g2 := linuxGuest(t, g.Dev, nettest.GuestConfig{}, 32)
	f := ethFrame(guestMAC, hostMAC, 0x0800, 500, 42)
	be.Q(0).Inject(header.VirtioNetHdr{}, f)
	for {
		got, err := g2.Recv(0, timeout)
		require.NoError(t, err)
		g2.PostRx(0, got.Buffers)
		if bytes.Equal(got.Data, f) {
			break
		}
	}
	n, _ := be.Q(0).SentCount()
	out := ethFrame(hostMAC, guestMAC, 0x0800, 300, 43)
	require.NoError(t, g2.Send(1, header.VirtioNetHdr{}, out))
	_, err := be.Q(0).WaitSent(n+1, timeout)
	require.NoError(t, err)
	require.Empty(t, g2.IRQ.Resets())
}

// hostileQueues are the queues each ring test runs on.
var hostileQueues = []struct {
	name string
	idx  int
}{{"rx", 0}, {"tx", 1}, {"ctrl", 2}}

func TestChecklist05_KicksBeforeDriverOKAndResetMidIO(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	// Notifications and traffic before activation reach no one.
	be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 100, 1))
	dev.ResetQueue(0)
	require.NoError(t, dev.EnableQueue(0))
	dev.Reset()
	// Reset in the middle of I/O, repeatedly.
	for i := 0; i < 20; i++ {
		g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
		g.SetupRx(0, 16, 2048)
		g.PostRx(0, 4+i%5)
		for j := 0; j < 10; j++ {
			h, f := gsoFrame(t, 3000*j)
			be.Q(0).Inject(h, f)
			_ = g.PostTx(1, queuetest.R(make([]byte, 12)), queuetest.R(ethFrame(hostMAC, guestMAC, 0x0800, 100, 1)))
		}
		_, _ = g.Ctrl(0, 0, []byte{0})
		time.Sleep(time.Duration(i%3) * time.Millisecond)
		g.Shutdown()
	}
	requireWorks(t, nettest.StartGuest(t, dev, nettest.GuestConfig{}), be)
}

func TestChecklist07_AvailIdxJump(t *testing.T) {
	for _, q := range hostileQueues {
		t.Run(q.name, func(t *testing.T) {
			be := newBackend(t, 1)
			g := nettest.StartGuest(t, newDevice(t, be), nettest.GuestConfig{})
			d := g.Drv[q.idx]
			require.NoError(t, d.SetAvailIdx(d.Size+1))
			g.ForceKick(q.idx)
			if q.idx == 0 {
				be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 100, 1))
			}
			requireNeedsReset(t, g, queue.ErrAvailIdx)
			requireWorks(t, g, be)
		})
	}
}

func TestChecklist08_HeadOutOfRange(t *testing.T) {
	for _, q := range hostileQueues {
		t.Run(q.name, func(t *testing.T) {
			be := newBackend(t, 1)
			g := nettest.StartGuest(t, newDevice(t, be), nettest.GuestConfig{})
			d := g.Drv[q.idx]
			require.NoError(t, d.PostHead(d.Size+3))
			g.ForceKick(q.idx)
			if q.idx == 0 {
				be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 100, 1))
			}
			requireNeedsReset(t, g, queue.ErrDescIndex)
			requireWorks(t, g, be)
		})
	}
}

func TestChecklist09_DescriptorLoop(t *testing.T) {
	for _, q := range hostileQueues {
		t.Run(q.name, func(t *testing.T) {
			be := newBackend(t, 1)
			g := nettest.StartGuest(t, newDevice(t, be), nettest.GuestConfig{})
			d := g.Drv[q.idx]
			a, err := d.Alloc(64, 8)
			require.NoError(t, err)
			flags := queue.DescFNext
			if q.idx == 0 {
				flags |= queue.DescFWrite
			}
			require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: a, Len: 64, Flags: flags, Next: 1}))
			require.NoError(t, d.WriteDesc(1, queuetest.Desc{Addr: a, Len: 64, Flags: flags, Next: 0}))
			require.NoError(t, d.PostHead(0))
			g.ForceKick(q.idx)
			if q.idx == 0 {
				be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 100, 1))
			}
			requireNeedsReset(t, g, queue.ErrChainTooLong)
			requireWorks(t, g, be)
		})
	}
}

func TestChecklist10_ZeroLengthDescriptors(t *testing.T) {
	be := newBackend(t, 1)
	g := nettest.StartGuest(t, newDevice(t, be), nettest.GuestConfig{})
	out := ethFrame(hostMAC, guestMAC, 0x0800, 200, 1)
	require.NoError(t, g.SendChain(1, queuetest.R(make([]byte, 12)), queuetest.R(nil), queuetest.R(out), queuetest.R(nil)))
	sent, err := be.Q(0).WaitSent(1, timeout)
	require.NoError(t, err)
	require.Equal(t, out, sent[0].Data)
	// An rx chain made of a zero-length buffer then a real one.
	g.SetupRx(0, 8, 0, 2048)
	g.PostRx(0, 8)
	f := ethFrame(guestMAC, hostMAC, 0x0800, 200, 2)
	be.Q(0).Inject(header.VirtioNetHdr{}, f)
	got, err := g.Recv(0, timeout)
	require.NoError(t, err)
	require.Equal(t, f, got.Data)
	require.Empty(t, g.IRQ.Resets())
}

func TestChecklist11_AddressOverflow(t *testing.T) {
	for _, q := range hostileQueues {
		t.Run(q.name, func(t *testing.T) {
			be := newBackend(t, 1)
			g := nettest.StartGuest(t, newDevice(t, be), nettest.GuestConfig{})
			d := g.Drv[q.idx]
			var flags uint16
			if q.idx == 0 {
				flags = queue.DescFWrite
			}
			require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: ^uint64(0) - 0x100, Len: 0x1000, Flags: flags}))
			require.NoError(t, d.PostHead(0))
			g.ForceKick(q.idx)
			if q.idx == 0 {
				be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 100, 1))
			}
			requireNeedsReset(t, g, queue.ErrBufferAddress)
			requireWorks(t, g, be)
		})
	}
}

func TestChecklist12_DescriptorOrder(t *testing.T) {
	be := newBackend(t, 1)
	g := nettest.StartGuest(t, newDevice(t, be), nettest.GuestConfig{})
	// A readable part in front of an rx chain is ignored.
	d := g.Drv[0]
	head, err := d.AddChain(queuetest.R(make([]byte, 32)), queuetest.W(2048))
	require.NoError(t, err)
	g.Kick(0)
	f := ethFrame(guestMAC, hostMAC, 0x0800, 200, 2)
	be.Q(0).Inject(header.VirtioNetHdr{}, f)
	e := waitUsedElem(t, g, 0)
	require.EqualValues(t, head, e.ID)
	require.EqualValues(t, 12+200, e.Len)
	// Readable after writable: a guest error.
	_, err = d.AddChain(queuetest.W(2048), queuetest.R(make([]byte, 32)))
	require.NoError(t, err)
	g.ForceKick(0)
	be.Q(0).Inject(header.VirtioNetHdr{}, f)
	requireNeedsReset(t, g, queue.ErrDescOrder)
	requireWorks(t, g, be)
}

func TestChecklist13_IndirectTables(t *testing.T) {
	be := newBackend(t, 1)
	g := nettest.StartGuest(t, newDevice(t, be), nettest.GuestConfig{})
	// Indirect rx and tx chains work.
	d := g.Drv[0]
	for i := 0; i < 4; i++ {
		_, err := d.AddIndirect(queuetest.W(12), queuetest.W(1000), queuetest.W(1000))
		require.NoError(t, err)
	}
	g.Kick(0)
	f := ethFrame(guestMAC, hostMAC, 0x0800, 1514, 2)
	be.Q(0).Inject(header.VirtioNetHdr{}, f)
	e := waitUsedElem(t, g, 0)
	require.EqualValues(t, 12+1514, e.Len)
	_, err := g.Drv[1].AddIndirect(queuetest.R(make([]byte, 12)), queuetest.R(f))
	require.NoError(t, err)
	g.Kick(1)
	require.NoError(t, g.WaitTx(1, 1, timeout))
	// INDIRECT inside an indirect table: a guest error.
	tx := g.Drv[1]
	inner, err := tx.Alloc(16, 16)
	require.NoError(t, err)
	outer, err := tx.Alloc(16, 16)
	require.NoError(t, err)
	require.NoError(t, tx.WriteTable(outer, []queuetest.Desc{{Addr: inner, Len: 16, Flags: queue.DescFIndirect}}))
	require.NoError(t, tx.WriteDesc(7, queuetest.Desc{Addr: outer, Len: 16, Flags: queue.DescFIndirect}))
	require.NoError(t, tx.PostHead(7))
	g.ForceKick(1)
	requireNeedsReset(t, g, queue.ErrIndirect)
	requireWorks(t, g, be)
}

func TestChecklist16_TxShortChains(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	for _, bufs := range [][]queuetest.Buffer{
		{queuetest.R(make([]byte, 12))},                         // header only
		{queuetest.R(make([]byte, 5))},                          // shorter than the header
		{queuetest.W(64)},                                       // nothing readable
		{queuetest.R(make([]byte, 12)), queuetest.R([]byte{1})}, // 1-byte frame
	} {
		require.NoError(t, g.SendChain(1, bufs...))
	}
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.TxDropShort == 4 })
	require.Empty(t, g.IRQ.Resets())
	frames, _ := be.Q(0).SentCount()
	require.Zero(t, frames)
}

func TestChecklist17_TxGarbageHeaders(t *testing.T) {
	be := newBackend(t, 1)
	be.Q(0).DiscardTx(true)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		hdr := make([]byte, 12)
		for j := range hdr {
			hdr[j] = byte(rng.IntN(256))
		}
		frame := ethFrame(hostMAC, guestMAC, 0x0800, 14+rng.IntN(300), byte(i))
		require.NoError(t, g.SendChain(1, queuetest.R(hdr), queuetest.R(frame)))
	}
	s := stats(t, dev, func(s virtionet.QueueStats) bool {
		return s.TxPackets+s.TxDropGSO+s.TxDropCsum+s.TxDropShort == 300
	})
	require.Positive(t, s.TxDropGSO)
	require.Empty(t, g.IRQ.Resets())
}

func TestChecklist18_LegacyHeaderLength(t *testing.T) {
	// A legacy driver without MRG_RXBUF uses 10-byte headers: the 2 bytes
	// after it belong to the frame, never to num_buffers.
	be := newBackend(t, 1)
	low := virtionet.LinuxDriverFeatures & 0xFFFFFFFF &^ (1 << virtionet.FeatureMrgRxBuf)
	g := nettest.StartGuest(t, newDevice(t, be), nettest.GuestConfig{Legacy: true, Features: low})
	require.Equal(t, 10, g.HdrLen)
	out := ethFrame(hostMAC, guestMAC, 0x0800, 100, 9)
	require.NoError(t, g.SendChain(1, queuetest.R(append(make([]byte, 10), out...))))
	sent, err := be.Q(0).WaitSent(1, timeout)
	require.NoError(t, err)
	require.Equal(t, out, sent[0].Data)
}

func TestChecklist19_RxBuffersTooSmall(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	d := g.Drv[0]
	small, err := d.AddChain(queuetest.W(4)) // smaller than the header
	require.NoError(t, err)
	noWrite, err := d.AddChain(queuetest.R(make([]byte, 100))) // nothing writable
	require.NoError(t, err)
	good, err := d.AddChain(queuetest.W(2048))
	require.NoError(t, err)
	g.Kick(0)
	f := ethFrame(guestMAC, hostMAC, 0x0800, 100, 1)
	be.Q(0).Inject(header.VirtioNetHdr{}, f)
	for _, want := range []struct {
		head uint16
		len  uint32
	}{{small, 0}, {noWrite, 0}, {good, 112}} {
		e := waitUsedElem(t, g, 0)
		require.EqualValues(t, want.head, e.ID)
		require.EqualValues(t, want.len, e.Len)
	}
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxBadBuffers == 2 && s.RxPackets == 1 })
	require.Empty(t, g.IRQ.Resets())
}

func TestChecklist20_RxRunsDryMidPacket(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	g.SetupRx(0, 64, 2048)
	g.PostRx(0, 5) // 10 KB for a 30 KB frame
	h, f := gsoFrame(t, 30000)
	be.Q(0).Inject(h, f)
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxRingFull > 0 })
	time.Sleep(10 * time.Millisecond)
	require.Zero(t, g.Drv[0].UsedIdx(), "no partial packet was completed")
	g.PostRx(0, 20)
	got, err := g.Recv(0, timeout)
	require.NoError(t, err)
	require.Equal(t, f, got.Data)
	require.EqualValues(t, (12+len(f)+2047)/2048, got.Hdr.NumBuffers)
	require.EqualValues(t, got.Buffers, got.Hdr.NumBuffers)
}

func TestChecklist23_NoBuffersNoHang(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	for i := 0; i < 1000; i++ {
		be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 1514, byte(i)))
	}
	// The device stays responsive: control commands, link changes, reset.
	ack, err := g.Ctrl(0, 0, []byte{1})
	require.NoError(t, err)
	require.Zero(t, ack)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	require.NoError(t, dev.SetLinkUp(ctx, false))
	require.NoError(t, dev.SetLinkUp(ctx, true))
	start := time.Now()
	g.Reset()
	require.Less(t, time.Since(start), time.Second)
	require.Greater(t, be.Q(0).Pending(), 990, "frames wait in the backend, not dropped")
}

// TestChecklist33to39_HostileFrames sends truncated and inconsistent frames
// from the network through the filter, the header checks and the rsc
// engine.
func TestChecklist33to39_HostileFrames(t *testing.T) {
	for _, props := range [][]string{nil, {"guest_rsc_ext", "on"}} {
		be := newBackend(t, 1)
		dev := newDevice(t, be, props...)
		g := linuxGuest(t, dev, nettest.GuestConfig{Features: netkvmFeat}, 128)
		ack, err := g.Ctrl(0, 0, []byte{0}) // filter on
		require.NoError(t, err)
		require.Zero(t, ack)
		base := tcpFrame(1, pattern(100, 1), header.ChecksumFull)
		var hostile [][]byte
		for n := 0; n < len(base); n += 7 {
			hostile = append(hostile, base[:n]) // truncated everywhere
		}
		mut := func(off int, v byte) []byte {
			f := append([]byte(nil), base...)
			f[off] = v
			return f
		}
		hostile = append(hostile,
			mut(14, 0x44), // IHL 4
			mut(14, 0x4f), // IHL 15
			mut(16, 0xff), // ip_len huge
			mut(17, 0x10), // ip_len small
			mut(46, 0x20), // TCP data offset 2
			mut(46, 0xf0), // TCP data offset 15
			mut(14, 0x65), // version 6 in an IPv4 ethertype
		)
		v6 := tcpFrame6(1, pattern(50, 2))
		v6[20] = 0 // next header hop-by-hop
		hostile = append(hostile, v6, v6[:30])
		vlan := ethFrame(guestMAC, hostMAC, 0x8100, 16, 3)
		hostile = append(hostile, vlan, vlan[:15])
		var frames []nettest.Frame
		for _, f := range hostile {
			frames = append(frames, nettest.Frame{Hdr: header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, Data: f})
		}
		be.Q(0).InjectFrames(frames...)
		marker := ethFrame(guestMAC, hostMAC, 0x88b5, 100, 9)
		be.Q(0).Inject(header.VirtioNetHdr{}, marker)
		for {
			got, err := g.Recv(0, timeout)
			require.NoError(t, err)
			g.PostRx(0, got.Buffers)
			if bytes.Equal(got.Data, marker) {
				break
			}
			require.GreaterOrEqual(t, len(got.Data), 14)
		}
		stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxDropShort >= 2 })
		require.Empty(t, g.IRQ.Resets())
	}
}

// logCounter counts log records.
type logCounter struct {
	mu sync.Mutex
	n  int
}

func (c *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCounter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.Contains(r.Message, "refused") {
		c.n++
	}
	return nil
}
func (c *logCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *logCounter) WithGroup(string) slog.Handler      { return c }

func TestChecklist42_GuestTriggeredLogsRateLimited(t *testing.T) {
	be := newBackend(t, 1)
	lc := &logCounter{}
	c := virtionet.DefaultConfig()
	dev, err := virtionet.New(c, be, virtionet.Options{Logger: slog.New(lc)})
	require.NoError(t, err)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	for i := 0; i < 200; i++ {
		ack, err := g.Ctrl(99, 0, nil)
		require.NoError(t, err)
		require.EqualValues(t, 1, ack)
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	require.LessOrEqual(t, lc.n, 3)
	require.Positive(t, lc.n)
}

// TestQueueResetDuringTraffic covers VIRTIO_F_RING_RESET: the rx queue is
// reset (ethtool -G) while frames wait, re-enabled, and traffic resumes.
func TestQueueResetDuringTraffic(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := linuxGuest(t, dev, nettest.GuestConfig{}, 8)
	for i := 0; i < 20; i++ {
		be.Q(0).Inject(header.VirtioNetHdr{}, ethFrame(guestMAC, hostMAC, 0x0800, 1514, byte(i)))
	}
	for i := 0; i < 8; i++ {
		_, err := g.Recv(0, timeout)
		require.NoError(t, err)
	}
	// The driver resets queue 0 and sets it up again with a new size.
	dev.ResetQueue(0)
	g.Queues[0].Reset()
	d, err := queuetest.NewDriver(g.Mem, queuetest.Layout{Size: 128, Desc: g.Drv[0].Desc, Avail: g.Drv[0].Avail,
		Used: g.Drv[0].Used, Data: g.Drv[0].Data, End: g.Drv[0].End})
	require.NoError(t, err)
	require.NoError(t, d.Configure(g.Queues[0]))
	d.EventIdx = true
	g.Drv[0] = d
	require.NoError(t, dev.EnableQueue(0))
	g.SetupRx(0, 32, 4096)
	g.PostRx(0, 32)
	for i := 8; i < 20; i++ {
		got, err := g.Recv(0, timeout)
		require.NoError(t, err)
		require.Equal(t, ethFrame(guestMAC, hostMAC, 0x0800, 1514, byte(i)), got.Data)
	}
	require.Empty(t, g.IRQ.Resets())
	// The control queue too.
	dev.ResetQueue(2)
	g.Queues[2].Reset()
	cq, err := queuetest.NewDriver(g.Mem, queuetest.Layout{Size: 64, Desc: g.Drv[2].Desc, Avail: g.Drv[2].Avail,
		Used: g.Drv[2].Used, Data: g.Drv[2].Data, End: g.Drv[2].End})
	require.NoError(t, err)
	require.NoError(t, cq.Configure(g.Queues[2]))
	cq.EventIdx = true
	g.Drv[2] = cq
	require.NoError(t, dev.EnableQueue(2))
	ack, err := g.Ctrl(0, 0, []byte{1})
	require.NoError(t, err)
	require.Zero(t, ack)
}

// TestChecklist20_FrameLargerThanRing: a mergeable ring whose buffers
// together cannot hold a frame does not stall: the frame is dropped and
// counted, the next one is delivered.
func TestChecklist20_FrameLargerThanRing(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be, "x-rsc-gso", "on")
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{QueueSizes: map[int]uint16{0: 16}})
	g.SetupRx(0, 16, 1536)
	g.PostRx(0, 16)
	for _, rsc := range []bool{true, false} {
		if !rsc { // coalescing off: the zero-copy path
			ack, err := g.SetOffloads(offCSUM)
			require.NoError(t, err)
			require.Zero(t, ack)
		}
		big := ethFrame(guestMAC, hostMAC, 0x0800, 30000, 7) // 30 KB > 16 × 1536
		be.Q(0).Inject(header.VirtioNetHdr{}, big)
		small := ethFrame(guestMAC, hostMAC, 0x0800, 200, 1)
		be.Q(0).Inject(header.VirtioNetHdr{}, small)
		got, err := g.Recv(0, timeout)
		require.NoError(t, err)
		g.PostRx(0, got.Buffers)
		require.Equal(t, small, got.Data)
	}
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxDropTooBig == 2 })
}

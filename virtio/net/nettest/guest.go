package nettest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/virtio"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/rscvm/rscvm/vmm/memory"
)

// IRQ records a device's interrupts (virtio.Interrupt).
type IRQ struct {
	mu      sync.Mutex
	queues  map[int]int
	config  int
	resets  []error
	changed chan struct{}
}

// NewIRQ returns an empty recorder.
func NewIRQ() *IRQ { return &IRQ{queues: map[int]int{}, changed: make(chan struct{}, 1)} }

func (r *IRQ) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// SignalQueue implements virtio.Interrupt.
func (r *IRQ) SignalQueue(i int) error {
	r.mu.Lock()
	r.queues[i]++
	r.mu.Unlock()
	r.poke()
	return nil
}

// SignalConfig implements virtio.Interrupt.
func (r *IRQ) SignalConfig() error {
	r.mu.Lock()
	r.config++
	r.mu.Unlock()
	r.poke()
	return nil
}

// NeedsReset implements virtio.Interrupt.
func (r *IRQ) NeedsReset(err error) {
	r.mu.Lock()
	r.resets = append(r.resets, err)
	r.mu.Unlock()
	r.poke()
}

// Queue returns the number of notifications of queue i.
func (r *IRQ) Queue(i int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queues[i]
}

// Config returns the number of configuration change notifications.
func (r *IRQ) Config() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.config
}

// Resets returns the NeedsReset causes reported.
func (r *IRQ) Resets() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.resets...)
}

// GuestConfig selects how the test guest drives the device.
type GuestConfig struct {
	// Features the driver accepts (intersected with the offer); 0 means
	// virtionet.LinuxDriverFeatures.
	Features uint64
	// Legacy drives the legacy interface: features are the low 32 bits and
	// are acknowledged at DRIVER_OK.
	Legacy bool
	// MemSize is the guest memory size (default 256 MiB).
	MemSize uint64
	// QueueSizes overrides the size of queue i (default: the maximum).
	QueueSizes map[int]uint16
	// Disabled lists queues the driver does not enable.
	Disabled []int
}

// Guest is a test driver playing the guest (and the transport) against a
// device over fake guest memory.
type Guest struct {
	TB         testing.TB
	Dev        *virtionet.Device
	State      *virtio.State
	Mem        *memory.Memory
	Queues     []*queue.Queue
	Kicks      []*virtio.Kick
	Drv        []*queuetest.Driver
	IRQ        *IRQ
	Negotiated uint64
	HdrLen     int
	Mrg        bool

	rx      map[int]*rxRing
	host    []byte // mmapped guest memory
	txMu    sync.Mutex
	pending map[int]int // tx chains in flight per queue
}

// CtrlIndex is the control queue's index for the negotiated features.
func (g *Guest) CtrlIndex() int {
	if g.Negotiated&(1<<virtionet.FeatureMQ) != 0 {
		return 2 * g.Dev.MaxQueuePairs()
	}
	return 2
}

// StartGuest negotiates features, sets up every queue in fresh memory and
// sets DRIVER_OK (activating the device). The device is reset in cleanup.
func StartGuest(tb testing.TB, dev *virtionet.Device, cfg GuestConfig) *Guest {
	tb.Helper()
	g, err := startGuest(tb, dev, cfg)
	if err != nil {
		tb.Fatalf("nettest: %v", err)
	}
	tb.Cleanup(g.Shutdown)
	return g
}

func startGuest(tb testing.TB, dev *virtionet.Device, cfg GuestConfig) (*Guest, error) {
	if cfg.MemSize == 0 {
		cfg.MemSize = 256 << 20
	}
	if cfg.Features == 0 {
		cfg.Features = virtionet.LinuxDriverFeatures
	}
	// Guest memory comes from mmap, as in a VM: the device and the test
	// driver access the rings concurrently by design (ordered by fences, like
	// two CPUs), which the race detector would report on Go heap memory but
	// does not instrument outside it.
	host, err := unix.Mmap(-1, 0, int(cfg.MemSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mmap guest memory: %w", err)
	}
	mem, err := memory.New(memory.Region{GPA: 0, Host: host})
	if err != nil {
		_ = unix.Munmap(host)
		return nil, err
	}
	g := &Guest{TB: tb, Dev: dev, State: virtio.NewDeviceState(dev), Mem: mem, IRQ: NewIRQ(),
		rx: map[int]*rxRing{}, pending: map[int]int{}, host: host}
	st := g.State
	const ackDrv = virtio.StatusAcknowledge | virtio.StatusDriver
	if cfg.Legacy {
		st.WriteLegacyStatus(ackDrv)
		st.SetLegacyGuestFeatures(uint32(cfg.Features & uint64(st.LegacyHostFeatures())))
	} else {
		st.WriteStatus(ackDrv)
		f := cfg.Features & st.Offered()
		st.SetDriverFeatureSelect(0)
		st.SetDriverFeatures(uint32(f))
		st.SetDriverFeatureSelect(1)
		st.SetDriverFeatures(uint32(f >> 32))
		if act := st.WriteStatus(ackDrv | virtio.StatusFeaturesOK); act&virtio.ActionAckFeatures == 0 {
			return nil, fmt.Errorf("FEATURES_OK refused: %v", st.FeaturesError())
		}
		g.Negotiated = st.Negotiated()
		dev.AckFeatures(g.Negotiated)
	}
	sizes := dev.QueueMaxSizes()
	if cfg.Legacy {
		// Legacy drivers set the queues up before DRIVER_OK acks features;
		// the layout is the one without MQ unless MQ is accepted.
		g.Negotiated = uint64(st.LegacyGuestFeatures())
		if g.Negotiated&(1<<virtionet.FeatureMQ) == 0 && len(sizes) > 3 {
			sizes = append(sizes[:2:2], sizes[len(sizes)-1])
		}
	}
	slab := (cfg.MemSize / uint64(len(sizes))) &^ 0xFFFF
	for i, max := range sizes {
		size := max
		if s, ok := cfg.QueueSizes[i]; ok {
			size = s
		}
		base := uint64(i) * slab
		desc := base + 0x1000
		avail := desc + queue.DescTableSize(size)
		used := (avail + queue.AvailRingSize(size) + 4095) &^ 4095
		data := (used + queue.UsedRingSize(size) + 4095) &^ 4095
		d, err := queuetest.NewDriver(mem, queuetest.Layout{Size: size, Desc: desc, Avail: avail, Used: used,
			Data: data, End: base + slab})
		if err != nil {
			return nil, err
		}
		q, err := queue.New(max)
		if err != nil {
			return nil, err
		}
		k, err := virtio.NewKick()
		if err != nil {
			return nil, err
		}
		g.Drv, g.Queues, g.Kicks = append(g.Drv, d), append(g.Queues, q), append(g.Kicks, k)
		disabled := false
		for _, x := range cfg.Disabled {
			disabled = disabled || x == i
		}
		if !disabled {
			if err := d.Configure(q); err != nil {
				return nil, fmt.Errorf("queue %d: %w", i, err)
			}
		}
	}
	var act virtio.Action
	if cfg.Legacy {
		act = st.WriteLegacyStatus(ackDrv | virtio.StatusDriverOK)
		if act&virtio.ActionAckFeatures != 0 {
			g.Negotiated = st.Negotiated()
			dev.AckFeatures(g.Negotiated)
		}
	} else {
		act = st.WriteStatus(ackDrv | virtio.StatusFeaturesOK | virtio.StatusDriverOK)
	}
	qf := virtio.QueueFeatures(g.Negotiated)
	for i, q := range g.Queues {
		q.SetFeatures(qf)
		g.Drv[i].EventIdx = qf.EventIdx
	}
	g.HdrLen = virtionet.HeaderSize(g.Negotiated)
	g.Mrg = g.Negotiated&(1<<virtionet.FeatureMrgRxBuf) != 0
	if act&virtio.ActionActivate == 0 {
		return nil, fmt.Errorf("DRIVER_OK refused: %v", st.FeaturesError())
	}
	if err := dev.Activate(mem, g.Queues, g.Kicks, g.IRQ); err != nil {
		return nil, fmt.Errorf("activate: %w", err)
	}
	return g, nil
}

// Shutdown resets the device (status 0) and closes the kicks.
func (g *Guest) Shutdown() {
	g.Reset()
	for _, k := range g.Kicks {
		_ = k.Close()
	}
	g.Kicks = nil
	if g.host != nil {
		_ = unix.Munmap(g.host)
		g.host = nil
	}
}

// Reset writes status 0: the device and every queue are reset.
func (g *Guest) Reset() {
	g.State.Reset()
	g.Dev.Reset()
	for _, q := range g.Queues {
		q.Reset()
	}
}

// Kick notifies queue i if the device asked for notifications (EVENT_IDX /
// NO_NOTIFY), as a driver does.
func (g *Guest) Kick(i int) {
	if g.Drv[i].KickNeeded() {
		_ = g.Kicks[i].Signal()
	}
}

// ForceKick notifies queue i unconditionally.
func (g *Guest) ForceKick(i int) { _ = g.Kicks[i].Signal() }

// ErrTimeout is returned when the device does not answer in time.
var errTimeout = errors.New("nettest: device did not answer in time")

// waitUsed polls queue i until a used element is published.
func (g *Guest) waitUsed(i int, timeout time.Duration) (queuetest.UsedElem, error) {
	deadline := time.Now().Add(timeout)
	d := g.Drv[i]
	for {
		if e, ok := d.PopUsed(); ok {
			if d.EventIdx {
				_ = d.SetUsedEvent(d.UsedIdx())
			}
			return e, nil
		}
		if time.Now().After(deadline) {
			return queuetest.UsedElem{}, fmt.Errorf("queue %d: %w", i, errTimeout)
		}
		select {
		case <-g.IRQ.changed:
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// rxRing is the receive-buffer bookkeeping of one rx queue: fixed slots,
// each a chain of writable buffers at fixed guest addresses.
type rxRing struct {
	q      int
	layout []uint32
	slots  []rxSlot
	byHead map[uint16]int
	free   []int
}

type rxSlot struct {
	head  uint16
	descs []uint16
	addrs []uint64
	lens  []uint32
}

// SetupRx prepares n receive chains for rx queue q, each made of writable
// buffers of the given lengths (one length: a mergeable or small buffer;
// several: a big-packet chain). None is posted yet (see PostRx).
func (g *Guest) SetupRx(q, n int, lengths ...uint32) {
	g.TB.Helper()
	d := g.Drv[q]
	r := &rxRing{q: q, layout: lengths, byHead: map[uint16]int{}}
	next := uint16(0)
	for s := 0; s < n; s++ {
		slot := rxSlot{}
		for range lengths {
			if int(next) >= int(d.Size) {
				g.TB.Fatalf("nettest: %d chains of %d buffers do not fit queue %d (size %d)", n, len(lengths), q, d.Size)
			}
			slot.descs = append(slot.descs, next)
			next++
		}
		for j, l := range lengths {
			a, err := d.Alloc(uint64(l), 64)
			if err != nil {
				g.TB.Fatalf("nettest: rx buffers of queue %d: %v", q, err)
			}
			slot.addrs = append(slot.addrs, a)
			slot.lens = append(slot.lens, l)
			x := queuetest.Desc{Addr: a, Len: l, Flags: queue.DescFWrite}
			if j+1 < len(lengths) {
				x.Flags |= queue.DescFNext
				x.Next = slot.descs[j+1]
			}
			if err := d.WriteDesc(slot.descs[j], x); err != nil {
				g.TB.Fatalf("nettest: %v", err)
			}
		}
		slot.head = slot.descs[0]
		r.byHead[slot.head] = s
		r.slots = append(r.slots, slot)
		r.free = append(r.free, s)
	}
	g.rx[q] = r
}

// PostRx posts up to n free receive chains of queue q and kicks if the
// device asked for it. It returns how many it posted.
func (g *Guest) PostRx(q, n int) int {
	r := g.rx[q]
	k := 0
	for ; k < n && len(r.free) > 0; k++ {
		s := r.free[0]
		r.free = r.free[1:]
		if err := g.Drv[q].PostHead(r.slots[s].head); err != nil {
			g.TB.Fatalf("nettest: %v", err)
		}
	}
	g.Kick(q)
	return k
}

// FreeRx is the number of receive chains of queue q not posted.
func (g *Guest) FreeRx(q int) int { return len(g.rx[q].free) }

// RxFrame is a received packet as the driver sees it.
type RxFrame struct {
	Hdr     header.VirtioNetHdr
	Data    []byte
	Buffers int // used elements consumed
}

// Recv waits for the next packet on rx queue q, reads it the way Linux
// does (num_buffers chains with MRG_RXBUF, else one) and returns its chains
// to the free list (not re-posted).
func (g *Guest) Recv(q int, timeout time.Duration) (RxFrame, error) {
	r := g.rx[q]
	e, err := g.waitUsed(q, timeout)
	if err != nil {
		return RxFrame{}, err
	}
	first, err := g.slotData(r, e)
	if err != nil {
		return RxFrame{}, err
	}
	if len(first) < g.HdrLen {
		return RxFrame{Data: first, Buffers: 1}, fmt.Errorf("nettest: used length %d shorter than the header", len(first))
	}
	var h header.VirtioNetHdr
	if g.HdrLen == header.VirtioNetHdrSize {
		h, _ = header.DecodeVirtioNetHdr(first)
	} else {
		h, _ = header.DecodeVirtioNetHdrLegacy(first)
	}
	f := RxFrame{Hdr: h, Data: append([]byte(nil), first[g.HdrLen:]...), Buffers: 1}
	if g.Mrg {
		for f.Buffers < int(h.NumBuffers) {
			e, err := g.waitUsed(q, timeout)
			if err != nil {
				return f, fmt.Errorf("buffer %d of %d: %w", f.Buffers+1, h.NumBuffers, err)
			}
			b, err := g.slotData(r, e)
			if err != nil {
				return f, err
			}
			f.Data = append(f.Data, b...)
			f.Buffers++
		}
	}
	return f, nil
}

// slotData returns the bytes the device wrote in the chain of e and frees
// its slot.
func (g *Guest) slotData(r *rxRing, e queuetest.UsedElem) ([]byte, error) {
	s, ok := r.byHead[uint16(e.ID)]
	if !ok || e.ID > 0xFFFF {
		return nil, fmt.Errorf("nettest: used id %d is not a posted rx chain", e.ID)
	}
	r.free = append(r.free, s)
	slot := &r.slots[s]
	out := make([]byte, 0, e.Len)
	left := e.Len
	for i, a := range slot.addrs {
		if left == 0 {
			break
		}
		n := min(left, slot.lens[i])
		b, err := g.Mem.Slice(a, uint64(n))
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
		left -= n
	}
	if left != 0 {
		return nil, fmt.Errorf("nettest: used length %d exceeds the chain", e.Len)
	}
	return out, nil
}

// encodeHdr encodes h in the negotiated header size.
func (g *Guest) encodeHdr(h header.VirtioNetHdr) []byte {
	b := make([]byte, header.VirtioNetHdrSize)
	_ = h.Encode(b)
	return b[:g.HdrLen]
}

// Send transmits one frame on tx queue q with header h, as two descriptors
// (header, frame), and waits until the device has completed it.
func (g *Guest) Send(q int, h header.VirtioNetHdr, frame []byte) error {
	return g.SendChain(q, queuetest.R(g.encodeHdr(h)), queuetest.R(frame))
}

// SendChain posts an arbitrary chain on tx queue q, kicks and waits for
// its completion.
func (g *Guest) SendChain(q int, bufs ...queuetest.Buffer) error {
	if err := g.PostTx(q, bufs...); err != nil {
		return err
	}
	return g.WaitTx(q, 1, 5*time.Second)
}

// PostTx posts a chain on tx queue q and kicks, without waiting.
func (g *Guest) PostTx(q int, bufs ...queuetest.Buffer) error {
	d := g.Drv[q]
	g.txMu.Lock()
	if g.pending[q] == 0 {
		d.ResetData()
	}
	_, err := d.AddChain(bufs...)
	if err == nil {
		g.pending[q]++
	}
	g.txMu.Unlock()
	if err != nil {
		return err
	}
	g.Kick(q)
	return nil
}

// WaitTx waits for n completions on tx queue q.
func (g *Guest) WaitTx(q, n int, timeout time.Duration) error {
	for i := 0; i < n; i++ {
		e, err := g.waitUsed(q, timeout)
		if err != nil {
			return err
		}
		g.Drv[q].Reclaim(uint16(e.ID))
		g.txMu.Lock()
		g.pending[q]--
		g.txMu.Unlock()
	}
	return nil
}

// Ctrl sends a control command and returns the acknowledgement byte.
func (g *Guest) Ctrl(class, cmd uint8, payload []byte) (uint8, error) {
	q := g.CtrlIndex()
	buf := append([]byte{class, cmd}, payload...)
	d := g.Drv[q]
	d.ResetData()
	head, err := d.AddChain(queuetest.R(buf), queuetest.W(1))
	if err != nil {
		return 0, err
	}
	g.Kick(q)
	e, err := g.waitUsed(q, 10*time.Second)
	if err != nil {
		return 0, err
	}
	d.Reclaim(uint16(e.ID))
	if e.ID != uint32(head) || e.Len != 1 {
		return 0, fmt.Errorf("nettest: ctrl used element %+v, want id %d len 1", e, head)
	}
	ack := d.Written(head, 1)
	return ack[0], nil
}

// SetOffloads sends VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET.
func (g *Guest) SetOffloads(bits uint64) (uint8, error) {
	var p [8]byte
	binary.LittleEndian.PutUint64(p[:], bits)
	return g.Ctrl(5, 0, p[:])
}

// ReadConfig reads n bytes of the device configuration at off.
func (g *Guest) ReadConfig(off uint64, n int) []byte {
	b := make([]byte, n)
	g.Dev.ReadConfig(off, b)
	return b
}

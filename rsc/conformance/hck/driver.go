package hck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/rsc/conformance"
	"github.com/rscvm/rscvm/virtio"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/rscvm/rscvm/vmm/memory"
)

// Guest memory of the test driver and its receive buffers.
const (
	guestMemSize = 64 << 20
	// mrgBufSize is the size of a mergeable receive buffer (a page, as
	// Linux posts them; a 64 KiB coalesced packet takes 17).
	mrgBufSize = 4096
)

// Driver feature sets.
const (
	netkvmBase = 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureIndirectDesc |
		1<<virtionet.FeatureMAC | 1<<virtionet.FeatureStatus | 1<<virtionet.FeatureCSUM |
		1<<virtionet.FeatureHostTSO4 | 1<<virtionet.FeatureHostTSO6 | 1<<virtionet.FeatureCtrlVQ |
		1<<virtionet.FeatureCtrlRx | 1<<virtionet.FeatureCtrlVLAN | 1<<virtionet.FeatureCtrlMACAddr |
		1<<virtionet.FeatureCtrlGuestOffloads | 1<<virtionet.FeatureGuestAnnounce |
		1<<virtionet.FeatureGuestCSUM | 1<<virtionet.FeatureRSCExt
)

// driverFeatures is what the driver acks for cfg (before intersecting with
// the offer).
func driverFeatures(d conformance.Driver, cfg conformance.Config) uint64 {
	var f uint64
	switch d {
	case conformance.Linux:
		f = virtionet.LinuxDriverFeatures
	default:
		// NetKVM: RSC per family follows GUEST_TSO4/6 (with RSC off for
		// both it still acks both TSOs).
		f = netkvmBase
		if cfg.IPv4 || !cfg.IPv6 {
			f |= 1 << virtionet.FeatureGuestTSO4
		}
		if cfg.IPv6 || !cfg.IPv4 {
			f |= 1 << virtionet.FeatureGuestTSO6
		}
		if cfg.GuestECN {
			f |= 1 << virtionet.FeatureGuestECN
		}
	}
	if cfg.MaxFrame > 0 {
		f &^= 1 << virtionet.FeatureMrgRxBuf
	} else {
		f |= 1 << virtionet.FeatureMrgRxBuf
	}
	return f
}

// irq records the device's interrupts (virtio.Interrupt).
type irq struct {
	mu     sync.Mutex
	resets []error
}

func (r *irq) SignalQueue(int) error { return nil }
func (r *irq) SignalConfig() error   { return nil }
func (r *irq) NeedsReset(err error) {
	r.mu.Lock()
	r.resets = append(r.resets, err)
	r.mu.Unlock()
}

func (r *irq) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.resets) == 0 {
		return nil
	}
	return fmt.Errorf("device signalled NEEDS_RESET: %v", r.resets[0])
}

// rxSlot is one receive chain at fixed guest addresses.
type rxSlot struct {
	head  uint16
	addrs []uint64
	lens  []uint32
	total uint32
}

// driver is a NetKVM-like virtio-net driver over fake guest memory: it
// negotiates, sets the queues up, posts receive buffers, sends control
// commands and reads every delivered packet (merging num_buffers).
type driver struct {
	dev        *virtionet.Device
	st         *virtio.State
	mem        *memory.Memory
	host       []byte
	queues     []*queue.Queue
	kicks      []*virtio.Kick
	drv        []*queuetest.Driver
	irq        *irq
	negotiated uint64
	hdrLen     int
	mrg        bool
	ctrlIdx    int

	slots   []rxSlot
	byHead  map[uint32]int
	free    []int // slots not posted
	partial *conformance.Output
	want    int // buffers of the packet being assembled

	ctrlHead    uint16
	ctrlPending bool
}

// newDriver negotiates features with dev (what drv acks for cfg), sets up
// the queues in fresh guest memory, activates the device and prepares (but
// does not post) the receive buffers.
func newDriver(dev *virtionet.Device, kind conformance.Driver, cfg conformance.Config) (*driver, error) {
	host, err := unix.Mmap(-1, 0, guestMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mmap guest memory: %w", err)
	}
	mem, err := memory.New(memory.Region{GPA: 0, Host: host})
	if err != nil {
		_ = unix.Munmap(host)
		return nil, err
	}
	d := &driver{dev: dev, st: virtio.NewDeviceState(dev), mem: mem, host: host, irq: &irq{}, byHead: map[uint32]int{}}
	if err := d.init(kind, cfg); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *driver) init(kind conformance.Driver, cfg conformance.Config) error {
	st := d.st
	const ackDrv = virtio.StatusAcknowledge | virtio.StatusDriver
	st.WriteStatus(ackDrv)
	f := driverFeatures(kind, cfg) & st.Offered()
	st.SetDriverFeatureSelect(0)
	st.SetDriverFeatures(uint32(f))
	st.SetDriverFeatureSelect(1)
	st.SetDriverFeatures(uint32(f >> 32))
	if act := st.WriteStatus(ackDrv | virtio.StatusFeaturesOK); act&virtio.ActionAckFeatures == 0 {
		return fmt.Errorf("FEATURES_OK refused: %v", st.FeaturesError())
	}
	d.negotiated = st.Negotiated()
	d.dev.AckFeatures(d.negotiated)
	d.hdrLen = virtionet.HeaderSize(d.negotiated)
	d.mrg = d.negotiated&(1<<virtionet.FeatureMrgRxBuf) != 0
	d.ctrlIdx = 2
	sizes := d.dev.QueueMaxSizes()
	slab := (uint64(guestMemSize) / uint64(len(sizes))) &^ 0xFFFF
	for i, size := range sizes {
		base := uint64(i) * slab
		desc := base + 0x1000
		avail := desc + queue.DescTableSize(size)
		used := (avail + queue.AvailRingSize(size) + 4095) &^ 4095
		data := (used + queue.UsedRingSize(size) + 4095) &^ 4095
		qd, err := queuetest.NewDriver(d.mem, queuetest.Layout{Size: size, Desc: desc, Avail: avail, Used: used,
			Data: data, End: base + slab})
		if err != nil {
			return err
		}
		q, err := queue.New(size)
		if err != nil {
			return err
		}
		k, err := virtio.NewKick()
		if err != nil {
			return err
		}
		d.drv, d.queues, d.kicks = append(d.drv, qd), append(d.queues, q), append(d.kicks, k)
		if err := qd.Configure(q); err != nil {
			return fmt.Errorf("queue %d: %w", i, err)
		}
	}
	act := st.WriteStatus(ackDrv | virtio.StatusFeaturesOK | virtio.StatusDriverOK)
	if act&virtio.ActionActivate == 0 {
		return fmt.Errorf("DRIVER_OK refused: %v", st.FeaturesError())
	}
	qf := virtio.QueueFeatures(d.negotiated)
	for i, q := range d.queues {
		q.SetFeatures(qf)
		d.drv[i].EventIdx = qf.EventIdx
	}
	if err := d.dev.Activate(d.mem, d.queues, d.kicks, d.irq); err != nil {
		return fmt.Errorf("activate: %w", err)
	}
	return d.setupRx(cfg)
}

// setupRx writes the receive chains: mergeable page-sized buffers, or
// (without MRG_RXBUF) a header buffer and a data buffer of cfg.MaxFrame
// bytes per chain, as NetKVM lays them out.
func (d *driver) setupRx(cfg conformance.Config) error {
	qd := d.drv[0]
	lengths := []uint32{mrgBufSize}
	if !d.mrg {
		n := cfg.MaxFrame
		if n <= 0 {
			n = virtionet.MaxFrameSize
		}
		lengths = []uint32{uint32(d.hdrLen), uint32(n)}
	}
	chains := int(qd.Size) / len(lengths)
	next := uint16(0)
	for s := 0; s < chains; s++ {
		descs := make([]uint16, len(lengths))
		for j := range lengths {
			descs[j] = next
			next++
		}
		slot := rxSlot{head: descs[0]}
		for j, l := range lengths {
			a, err := qd.Alloc(uint64(l), 64)
			if err != nil {
				return fmt.Errorf("rx buffers: %w", err)
			}
			slot.addrs = append(slot.addrs, a)
			slot.lens = append(slot.lens, l)
			slot.total += l
			x := queuetest.Desc{Addr: a, Len: l, Flags: queue.DescFWrite}
			if j+1 < len(lengths) {
				x.Flags |= queue.DescFNext
				x.Next = descs[j+1]
			}
			if err := qd.WriteDesc(descs[j], x); err != nil {
				return err
			}
		}
		d.byHead[uint32(descs[0])] = len(d.slots)
		d.slots = append(d.slots, slot)
		d.free = append(d.free, len(d.slots)-1)
	}
	return nil
}

// postRx posts every free receive chain and kicks if the device asked.
func (d *driver) postRx() error {
	if len(d.free) == 0 {
		return nil
	}
	for _, s := range d.free {
		if err := d.drv[0].PostHead(d.slots[s].head); err != nil {
			return err
		}
	}
	d.free = d.free[:0]
	if d.drv[0].KickNeeded() {
		return d.kicks[0].Signal()
	}
	return nil
}

// kickRx notifies the receive queue unconditionally (a spurious kick is
// allowed; the runners use it to make the device run a pass).
func (d *driver) kickRx() { _ = d.kicks[0].Signal() }

// collect reads every packet the device has published on the receive
// queue. It returns chains to the free list; repost posts them again.
func (d *driver) collect(repost bool) ([]conformance.Output, error) {
	var out []conformance.Output
	qd := d.drv[0]
	for {
		e, ok := qd.PopUsed()
		if !ok {
			break
		}
		s, ok := d.byHead[e.ID]
		if !ok {
			return out, fmt.Errorf("used id %d is not a posted receive chain", e.ID)
		}
		d.free = append(d.free, s)
		slot := &d.slots[s]
		if e.Len > slot.total {
			return out, fmt.Errorf("used length %d exceeds the %d-byte chain", e.Len, slot.total)
		}
		data := make([]byte, 0, e.Len)
		left := e.Len
		for i, a := range slot.addrs {
			if left == 0 {
				break
			}
			n := min(left, slot.lens[i])
			b, err := d.mem.Slice(a, uint64(n))
			if err != nil {
				return out, err
			}
			data = append(data, b...)
			left -= n
		}
		if d.partial == nil {
			if len(data) < d.hdrLen {
				return out, fmt.Errorf("used length %d shorter than the %d-byte header", len(data), d.hdrLen)
			}
			var h header.VirtioNetHdr
			if d.hdrLen == header.VirtioNetHdrSize {
				h, _ = header.DecodeVirtioNetHdr(data)
			} else {
				h, _ = header.DecodeVirtioNetHdrLegacy(data)
			}
			want := 1
			if d.mrg {
				want = int(h.NumBuffers)
				if want < 1 {
					return out, fmt.Errorf("num_buffers %d", h.NumBuffers)
				}
			} else if d.hdrLen == header.VirtioNetHdrSize && h.NumBuffers != 1 {
				return out, fmt.Errorf("num_buffers %d without MRG_RXBUF, want 1", h.NumBuffers)
			}
			d.partial = &conformance.Output{Hdr: h, Frame: append([]byte(nil), data[d.hdrLen:]...), Buffers: 1}
			d.want = want
		} else {
			d.partial.Frame = append(d.partial.Frame, data...)
			d.partial.Buffers++
		}
		if d.partial.Buffers < d.want && e.Len != slot.total {
			return out, fmt.Errorf("buffer %d of %d used %d of %d bytes: all but the last must be full",
				d.partial.Buffers, d.want, e.Len, slot.total)
		}
		if d.partial.Buffers == d.want {
			d.partial.Hdr.NumBuffers = 0
			out = append(out, *d.partial)
			d.partial = nil
		}
	}
	if repost {
		return out, d.postRx()
	}
	return out, nil
}

// ctrlSend posts a control command without waiting for its answer.
func (d *driver) ctrlSend(class, cmd uint8, payload []byte) error {
	if d.negotiated&(1<<virtionet.FeatureCtrlVQ) == 0 {
		return errors.New("control queue not negotiated")
	}
	if d.ctrlPending {
		return errors.New("a control command is still pending")
	}
	qd := d.drv[d.ctrlIdx]
	qd.ResetData()
	buf := append([]byte{class, cmd}, payload...)
	head, err := qd.AddChain(queuetest.R(buf), queuetest.W(1))
	if err != nil {
		return err
	}
	d.ctrlHead, d.ctrlPending = head, true
	if qd.KickNeeded() {
		return d.kicks[d.ctrlIdx].Signal()
	}
	return nil
}

// ctrlPoll returns the answer of the pending command, if it came.
func (d *driver) ctrlPoll() (ack uint8, done bool, err error) {
	if !d.ctrlPending {
		return 0, false, errors.New("no control command pending")
	}
	qd := d.drv[d.ctrlIdx]
	e, ok := qd.PopUsed()
	if !ok {
		return 0, false, nil
	}
	qd.Reclaim(uint16(e.ID))
	d.ctrlPending = false
	if e.ID != uint32(d.ctrlHead) || e.Len != 1 {
		return 0, true, fmt.Errorf("control used element {id %d len %d}, want {id %d len 1}", e.ID, e.Len, d.ctrlHead)
	}
	return qd.Written(d.ctrlHead, 1)[0], true, nil
}

// ctrlWait waits for the pending command's answer.
func (d *driver) ctrlWait(timeout time.Duration) (uint8, error) {
	deadline := time.Now().Add(timeout)
	for {
		ack, done, err := d.ctrlPoll()
		if err != nil || done {
			return ack, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("control command not answered within %v", timeout)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// ctrl sends a command and waits for its answer.
func (d *driver) ctrl(class, cmd uint8, payload []byte, timeout time.Duration) (uint8, error) {
	if err := d.ctrlSend(class, cmd, payload); err != nil {
		return 0, err
	}
	return d.ctrlWait(timeout)
}

// setOffloads sends GUEST_OFFLOADS_SET.
func (d *driver) setOffloads(mask uint64, timeout time.Duration) (uint8, error) {
	var p [8]byte
	binary.LittleEndian.PutUint64(p[:], mask)
	return d.ctrl(conformance.CtrlClassGuestOffloads, conformance.CtrlGuestOffloadsSet, p[:], timeout)
}

// close resets the device (status 0) and releases the driver's memory.
func (d *driver) close() {
	if d.st != nil {
		d.st.Reset()
	}
	d.dev.Reset()
	for _, q := range d.queues {
		q.Reset()
	}
	for _, k := range d.kicks {
		_ = k.Close()
	}
	d.kicks = nil
	if d.host != nil {
		_ = unix.Munmap(d.host)
		d.host = nil
	}
}

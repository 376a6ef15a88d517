package virtionet

// A synchronous rig for fuzzing and benchmarks: one queue pair's worker
// built as Activate builds it, driven by calling its passes directly (no
// goroutine), a test driver over fake memory on the other side, and an
// in-memory backend that allocates nothing per frame.

import (
	"context"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/tap"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/rscvm/rscvm/vmm/memory"
)

// memBackend is a one-queue Backend whose frames come from a FIFO of
// byte slices or a repeated frame; written frames are counted (and the last
// one kept when keep is set).
type memBackend struct {
	efd     int
	rx      [][]byte
	rxHead  int
	repeat  []byte
	repeatN int
	txN     int
	txBytes int
	keep    bool
	last    []byte
	offload uint64
}

func newMemBackend(tb testing.TB) *memBackend {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		tb.Fatal(err)
	}
	b := &memBackend{efd: fd, last: make([]byte, 0, BackendHdrSize+MaxFrameSize+16)}
	tb.Cleanup(func() { _ = unix.Close(fd) })
	return b
}

func (b *memBackend) Caps() BackendCaps            { return BackendCaps{VnetHdr: true, UFO: true, Queues: 1} }
func (b *memBackend) NumQueues() int               { return 1 }
func (b *memBackend) Queue(int) BackendQueue       { return b }
func (b *memBackend) SetOffload(bits uint64) error { b.offload = bits; return nil }
func (b *memBackend) SetActiveQueues(int) error    { return nil }
func (b *memBackend) Fd() int                      { return b.efd }
func (b *memBackend) push(raw []byte) {
	if b.rxHead == len(b.rx) {
		b.rx, b.rxHead = b.rx[:0], 0
	}
	b.rx = append(b.rx, raw)
}
func (b *memBackend) pushRepeat(raw []byte, n int) { b.repeat, b.repeatN = raw, b.repeatN+n }
func (b *memBackend) pending() int                 { return len(b.rx) - b.rxHead + b.repeatN }

// ReadV copies the next frame like a TAP (truncating to the iovecs).
func (b *memBackend) ReadV(iovs [][]byte) (int, error) {
	var src []byte
	switch {
	case b.rxHead < len(b.rx):
		src = b.rx[b.rxHead]
		b.rx[b.rxHead] = nil
		b.rxHead++
	case b.repeatN > 0:
		src = b.repeat
		b.repeatN--
	default:
		return 0, tap.ErrWouldBlock
	}
	n := 0
	for _, v := range iovs {
		if n == len(src) {
			break
		}
		n += copy(v, src[n:])
	}
	return n, nil
}

// WriteV counts the frame (and keeps it with keep).
func (b *memBackend) WriteV(iovs [][]byte) (int, error) {
	n := 0
	if b.keep {
		b.last = b.last[:0]
	}
	for _, v := range iovs {
		n += len(v)
		if b.keep {
			b.last = append(b.last, v...)
		}
	}
	b.txN++
	b.txBytes += n - BackendHdrSize
	return n, nil
}

// nopIRQ counts interrupts.
type nopIRQ struct{ queue, config, resets int }

func (i *nopIRQ) SignalQueue(int) error { i.queue++; return nil }
func (i *nopIRQ) SignalConfig() error   { i.config++; return nil }
func (i *nopIRQ) NeedsReset(error)      { i.resets++ }

// rig is one worker with its rx (index 0) and tx (index 1) queues.
type rig struct {
	d      *Device
	w      *worker
	be     Backend
	mem    *memory.Memory
	rx, tx *queuetest.Driver
	irq    *nopIRQ
}

// newRig builds the device with cfg over be, acks negotiated and sets up an
// rx queue of rxSize and a tx queue of 256 in memSize bytes of memory.
func newRig(tb testing.TB, cfg Config, be Backend, negotiated uint64, rxSize uint16, memSize uint64) *rig {
	tb.Helper()
	d, err := New(cfg, be, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	d.AckFeatures(negotiated)
	negotiated = d.Negotiated()
	mem, err := queuetest.NewMemory(memSize)
	if err != nil {
		tb.Fatal(err)
	}
	half := memSize / 2
	lay := func(base, end uint64, size uint16) queuetest.Layout {
		desc := base + 0x1000
		avail := desc + queue.DescTableSize(size)
		used := (avail + queue.AvailRingSize(size) + 4095) &^ 4095
		data := (used + queue.UsedRingSize(size) + 4095) &^ 4095
		return queuetest.Layout{Size: size, Desc: desc, Avail: avail, Used: used, Data: data, End: end}
	}
	r := &rig{d: d, be: be, mem: mem, irq: &nopIRQ{}}
	qf := virtio.QueueFeatures(negotiated)
	var qs []*queue.Queue
	for i, l := range []queuetest.Layout{lay(0, half, rxSize), lay(half, memSize, 256)} {
		drv, err := queuetest.NewDriver(mem, l)
		if err != nil {
			tb.Fatal(err)
		}
		q, err := queue.New(l.Size)
		if err != nil {
			tb.Fatal(err)
		}
		q.SetFeatures(qf)
		if err := drv.Configure(q); err != nil {
			tb.Fatal(err)
		}
		drv.EventIdx = qf.EventIdx
		qs = append(qs, q)
		if i == 0 {
			r.rx = drv
		} else {
			r.tx = drv
		}
	}
	var kicks []*virtio.Kick
	for i := 0; i < 3; i++ {
		k, err := virtio.NewKick()
		if err != nil {
			tb.Fatal(err)
		}
		kicks = append(kicks, k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &runState{ctx: ctx, cancel: cancel, mem: mem, queues: qs, kicks: kicks, irq: r.irq,
		workers: make([]*worker, 1), ctrlIdx: 2}
	d.mu.Lock()
	rc := d.rxConfigLocked()
	filter := *d.ctrl
	d.mu.Unlock()
	w, err := d.newWorker(run, 0, negotiated, rc, filter)
	if err != nil {
		tb.Fatal(err)
	}
	r.w = w
	tb.Cleanup(func() {
		w.close()
		cancel()
		for _, k := range kicks {
			_ = k.Close()
		}
	})
	return r
}

// setupRx creates n single-buffer rx chains of size bytes at descriptors
// 0..n-1 (or, with pages > 0, chains of a header buffer and pages 4 KiB
// buffers) and posts them.
func (r *rig) setupRx(tb testing.TB, n int, size uint32, pages int) {
	tb.Helper()
	per := 1 + pages
	for s := 0; s < n; s++ {
		for j := 0; j < per; j++ {
			l := size
			if pages > 0 && j > 0 {
				l = 4096
			}
			a, err := r.rx.Alloc(uint64(l), 64)
			if err != nil {
				tb.Fatal(err)
			}
			x := queuetest.Desc{Addr: a, Len: l, Flags: queue.DescFWrite}
			if j+1 < per {
				x.Flags |= queue.DescFNext
				x.Next = uint16(s*per + j + 1)
			}
			if err := r.rx.WriteDesc(uint16(s*per+j), x); err != nil {
				tb.Fatal(err)
			}
		}
		if err := r.rx.PostHead(uint16(s * per)); err != nil {
			tb.Fatal(err)
		}
	}
}

// drainRx runs receive passes until the worker has nothing more to do (an
// rx kick is assumed first: the driver just posted buffers).
func (r *rig) drainRx() {
	r.w.starving, r.w.stalled = false, false
	for r.w.rxPass() {
	}
	r.w.finishRx()
}

// recycleRx re-posts every used rx chain and returns how many it saw. It
// allocates nothing.
func (r *rig) recycleRx() (buffers int) {
	for {
		e, ok := r.rx.PopUsed()
		if !ok {
			break
		}
		buffers++
		if err := r.rx.PostHead(uint16(e.ID)); err != nil {
			break
		}
	}
	if r.rx.EventIdx {
		_ = r.rx.SetUsedEvent(r.rx.UsedIdx())
	}
	return buffers
}

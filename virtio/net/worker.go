package virtionet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/tap"
	"github.com/rscvm/rscvm/rsc"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/net/ctrl"
	"github.com/rscvm/rscvm/virtio/queue"
)

// Poller tokens of a worker.
const (
	tokBackend uint32 = iota
	tokRxKick
	tokTxKick
	tokTimer
)

// Budgets per pass, so one direction cannot starve the other or the
// request mailbox.
const (
	rxBudget = 64
	txBudget = 256
)

// maxIovecs bounds the iovec array of one readv (the kernel's UIO_MAXIOV is
// 1024).
const maxIovecs = 1000

// rxConfig is the receive configuration a worker applies; it changes with
// GUEST_OFFLOADS_SET and the link state.
type rxConfig struct {
	offloads   uint64 // current guest offloads (feature bits)
	rsc4, rsc6 bool   // coalesce IPv4 / IPv6 TCP
	gsoMode    bool   // x-rsc-gso: standard GSO output, no RSC_INFO
	linkUp     bool
}

func (c rxConfig) rscOn() bool { return c.rsc4 || c.rsc6 }

type reqKind uint8

const (
	reqConfig     reqKind = iota // deliver what is held, then switch to cfg
	reqFilter                    // replace the receive filter (no wait)
	reqStopQueue                 // stop using queue index (queue reset)
	reqStartQueue                // queue index was re-enabled
)

// request is a control-path message to a worker. done (if not nil) is
// closed when the worker has handled it.
type request struct {
	kind   reqKind
	cfg    rxConfig
	filter ctrl.State
	index  int
	done   chan struct{}
}

// chainFIFO holds receive chains popped ahead of use, in pop order.
type chainFIFO struct {
	buf   []*queue.Chain
	head  int
	n     int
	bytes int // total writable bytes
}

func (f *chainFIFO) at(i int) *queue.Chain { return f.buf[(f.head+i)%len(f.buf)] }

func (f *chainFIFO) push(c *queue.Chain) {
	f.buf[(f.head+f.n)%len(f.buf)] = c
	f.n++
	f.bytes += int(c.WritableLen())
}

func (f *chainFIFO) pop() *queue.Chain {
	c := f.buf[f.head]
	f.buf[f.head] = nil
	f.head = (f.head + 1) % len(f.buf)
	f.n--
	f.bytes -= int(c.WritableLen())
	return c
}

func (f *chainFIFO) reset() {
	clear(f.buf)
	f.head, f.n, f.bytes = 0, 0, 0
}

// worker runs one queue pair.
type worker struct {
	d      *Device
	run    *runState
	pair   int
	bq     BackendQueue
	irq    virtio.Interrupt
	poller *tap.Poller
	timer  int // timerfd, -1 if none
	clock  func() time.Duration
	pub    *pairStats

	hdrLen     int  // guest header size (10 or 12)
	mrg        bool // MRG_RXBUF negotiated
	numBufs    bool // the guest header has num_buffers
	negotiated uint64

	// receive side
	rxq       *queue.Queue
	rxIdx     int
	rxKick    *virtio.Kick
	rxOn      bool // queue usable
	pre       chainFIFO
	starving  bool // ring empty: waiting for the rx kick
	stalled   bool // rsc engine refused a packet: waiting for the rx kick
	cfg       rxConfig
	filter    ctrl.State
	engine    *rsc.Engine
	rscUsed   bool
	hdr       [BackendHdrSize]byte
	out       [BackendHdrSize]byte
	head      [64]byte
	big       []byte // host frame buffer: BackendHdrSize + MaxFrameSize + 1
	iovs      [][]byte
	one       [1][]byte // deliverCopy's scatter list
	rscIov    [3][]byte // rxOneRSC's iovecs: header, receive region, overflow
	held      bool      // a validated frame waits for ring space
	heldFrame []byte    // it (Ethernet), in big or the rsc engine's receive region
	heldHdr   header.VirtioNetHdr
	heldRSC   bool // it must go through the engine
	pendReq   []*request
	rxPublish bool // used entries added since the last notification check
	armed     time.Duration
	isArmed   bool
	minChain  int // smallest non-mergeable chain seen (bytes after the header)

	// transmit side
	txq       *queue.Queue
	txIdx     int
	txKick    *virtio.Kick
	txOn      bool
	txBlocked bool // backend would block: wait for writability
	txHdr     [BackendHdrSize]byte
	txIovs    [][]byte
	txPublish bool

	fdMask tap.Events // current backend fd registration
	ready  []tap.Ready

	mu   sync.Mutex
	reqs []*request

	st    QueueStats
	dirty bool
}

func (d *Device) newWorker(run *runState, p int, negotiated uint64, cfg rxConfig, filter ctrl.State) (*worker, error) {
	poller, err := tap.NewPoller(run.ctx)
	if err != nil {
		return nil, fmt.Errorf("virtio-net pair %d: %w", p, err)
	}
	w := &worker{
		d: d, run: run, pair: p, bq: d.be.Queue(p), irq: run.irq, poller: poller, timer: -1,
		clock: d.clock, pub: d.pairStats[p],
		hdrLen: HeaderSize(negotiated), mrg: has(negotiated, FeatureMrgRxBuf), negotiated: negotiated,
		rxIdx: 2 * p, txIdx: 2*p + 1, cfg: cfg, filter: filter,
		big:  make([]byte, BackendHdrSize+MaxFrameSize+1),
		iovs: make([][]byte, 0, 64), txIovs: make([][]byte, 0, 64),
		ready: make([]tap.Ready, 8),
	}
	w.numBufs = w.hdrLen == BackendHdrSize
	w.pub.mu.Lock()
	w.st = w.pub.s
	w.pub.rscBase = w.pub.rsc
	w.pub.mu.Unlock()
	w.rxKick, w.txKick = kickAt(run.kicks, w.rxIdx), kickAt(run.kicks, w.txIdx)
	if readyAt(run.queues, w.rxIdx) {
		w.rxq = run.queues[w.rxIdx]
	}
	if readyAt(run.queues, w.txIdx) {
		w.txq = run.queues[w.txIdx]
	}
	fail := func(err error) (*worker, error) {
		w.close()
		return nil, fmt.Errorf("virtio-net pair %d: %w", p, err)
	}
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return fail(fmt.Errorf("timerfd_create: %w", err))
	}
	w.timer = tfd
	if err := poller.Add(tfd, tap.Readable, tokTimer); err != nil {
		return fail(err)
	}
	if err := poller.Add(w.bq.Fd(), 0, tokBackend); err != nil {
		return fail(err)
	}
	for _, k := range []struct {
		kick *virtio.Kick
		tok  uint32
	}{{w.rxKick, tokRxKick}, {w.txKick, tokTxKick}} {
		if k.kick != nil {
			if err := poller.Add(k.kick.Fd(), tap.Readable, k.tok); err != nil {
				return fail(err)
			}
		}
	}
	w.startRx()
	w.txOn = w.txq != nil
	w.applyConfig(cfg)
	return w, nil
}

func kickAt(ks []*virtio.Kick, i int) *virtio.Kick {
	if i < len(ks) {
		return ks[i]
	}
	return nil
}

// startRx (re)initialises the receive side for the current rx queue.
func (w *worker) startRx() {
	w.rxOn = w.rxq != nil && w.rxq.Ready()
	if !w.rxOn {
		return
	}
	if n := int(w.rxq.Size()); len(w.pre.buf) < n {
		w.pre.buf = make([]*queue.Chain, n)
	}
	w.pre.reset()
	w.starving, w.stalled = false, false
	w.minChain = 0
	// Whole chains must fit one readv (UIO_MAXIOV) next to the header and
	// overflow iovecs; QEMU's limit is 1024 segments.
	w.rxq.SetMaxSegments(maxIovecs - 2)
	w.rxq.DisableNotification()
}

func (w *worker) close() {
	if w.poller != nil {
		_ = w.poller.Close()
	}
	if w.timer >= 0 {
		_ = unix.Close(w.timer)
		w.timer = -1
	}
}

// post queues a request and wakes the worker.
func (w *worker) post(r *request) {
	w.mu.Lock()
	w.reqs = append(w.reqs, r)
	w.mu.Unlock()
	_ = w.poller.Wake()
}

// call posts r and waits for it (or for ctx / the run to end).
func (w *worker) call(ctx context.Context, r *request) {
	r.done = make(chan struct{})
	w.post(r)
	select {
	case <-r.done:
	case <-ctx.Done():
	case <-w.run.ctx.Done():
	}
}

// loop is the worker goroutine.
func (w *worker) loop() {
	defer w.run.wg.Done()
	defer w.discard()
	for {
		w.handleRequests()
		more := false
		if w.txPass() {
			more = true
		}
		if w.rxPass() {
			more = true
		}
		if len(w.pendReq) > 0 && w.rxOn && !w.stalled {
			more = true // buffers arrived while a flush was refused
		}
		w.publish()
		w.updateInterest()
		timeout := time.Duration(-1)
		if more {
			timeout = 0
		}
		n, err := w.poller.Wait(w.ready, timeout)
		if err != nil {
			return // run cancelled
		}
		for _, r := range w.ready[:n] {
			switch r.Token {
			case tokRxKick:
				if w.rxKick != nil {
					_, _ = w.rxKick.Drain()
				}
				if w.rxOn && (w.starving || w.stalled) {
					w.rxq.DisableNotification()
				}
				w.starving, w.stalled = false, false
			case tokTxKick:
				if w.txKick != nil {
					_, _ = w.txKick.Drain()
				}
			case tokTimer:
				var b [8]byte
				_, _ = unix.Read(w.timer, b[:])
				w.isArmed = false
				if w.engine != nil && w.rxOn && !w.stalled && !w.starving {
					if !w.engine.Tick(w.clock()) {
						w.stall()
					}
					// Publish what the flush delivered now: once stalled,
					// rxPass (whose finishRx would) does not run until a
					// kick, and a polling driver that sees no used entry
					// never posts a buffer.
					w.finishRx()
				}
			case tokBackend:
				if r.Events&tap.Writable != 0 {
					w.txBlocked = false
				}
			}
		}
	}
}

// discard drops what the worker holds when it stops (device reset).
func (w *worker) discard() {
	if w.held {
		w.held, w.heldFrame = false, nil
		w.st.RxDropReset++
	}
	if w.engine != nil {
		w.engine.Reset()
	}
	for _, r := range w.pendReq {
		close(r.done)
	}
	w.pendReq = nil
	// Give chains popped ahead back to the available ring (newest first), so
	// a restart without a queue reset (bus mastering toggled) finds them.
	if w.rxOn {
		for i := w.pre.n - 1; i >= 0; i-- {
			if err := w.rxq.Unpop(w.pre.at(i)); err != nil {
				break
			}
		}
	}
	w.pre.reset()
	w.dirty = true
	w.publish()
}

// handleRequests processes the mailbox. Config requests wait until the
// worker has delivered everything it holds.
func (w *worker) handleRequests() {
	w.mu.Lock()
	reqs := w.reqs
	w.reqs = nil
	w.mu.Unlock()
	for _, r := range reqs {
		switch r.kind {
		case reqFilter:
			w.filter = r.filter
		case reqConfig:
			w.pendReq = append(w.pendReq, r)
			continue
		case reqStopQueue:
			w.stopQueue(r.index)
		case reqStartQueue:
			w.startQueue(r.index)
		}
		if r.done != nil {
			close(r.done)
		}
	}
	w.tryConfig()
}

// tryConfig applies pending config requests once nothing is held.
func (w *worker) tryConfig() {
	if len(w.pendReq) == 0 {
		return
	}
	if !w.flushHeld() {
		return
	}
	for _, r := range w.pendReq {
		w.applyConfig(r.cfg)
		close(r.done)
	}
	w.pendReq = w.pendReq[:0]
}

// flushHeld delivers the held frame and every pending coalesced packet.
// It returns false if the ring had no room (back-pressure). When the rx
// queue is unusable, held data is discarded.
func (w *worker) flushHeld() bool {
	if !w.rxOn {
		if w.held {
			w.held, w.heldFrame = false, nil
			w.st.RxDropReset++
			w.dirty = true
		}
		if w.engine != nil && w.engine.Pending() > 0 {
			w.engine.Reset()
		}
		return true
	}
	if w.held && !w.retryHeld() {
		w.stall()
		return false
	}
	if w.engine != nil && w.engine.Pending() > 0 {
		if !w.engine.FlushAll() {
			w.stall()
			return false
		}
	}
	w.finishRx()
	return true
}

// applyConfig switches the receive configuration (nothing is held).
func (w *worker) applyConfig(c rxConfig) {
	w.cfg = c
	if !c.rscOn() {
		return
	}
	ec := w.engineConfig()
	if w.engine == nil {
		w.engine = rsc.New(ec, rscSink{w})
		w.rscUsed = true
		return
	}
	w.engine.SetConfig(ec) // nothing pending: cannot fail
}

func (w *worker) engineConfig() rsc.Config {
	ec := rsc.Config{
		IPv4: w.cfg.rsc4, IPv6: w.cfg.rsc6,
		Interval:        w.d.cfg.RSCIntervalDuration(),
		FlushAtBatchEnd: w.d.cfg.RSCBatchFlush,
		GSOMode:         w.cfg.gsoMode,
		GuestECN:        has(w.cfg.offloads, FeatureGuestECN),
		Timestamps:      true,
	}
	if !w.mrg && w.minChain > 0 {
		ec.MaxFrame = w.minChain
	}
	return ec
}

func (w *worker) stopQueue(index int) {
	switch index {
	case w.rxIdx:
		// The transport resets the queue: chains popped from it become
		// stale. A held frame stays and goes to the re-enabled ring.
		w.pre.reset()
		w.rxOn = false
		w.rxPublish = false
	case w.txIdx:
		w.txOn = false
		w.txPublish = false
		w.txBlocked = false
	}
}

func (w *worker) startQueue(index int) {
	switch index {
	case w.rxIdx:
		w.rxq = w.run.queues[index]
		w.startRx()
	case w.txIdx:
		w.txq = w.run.queues[index]
		w.txOn = w.txq.Ready()
	}
}

// queueError handles a guest protocol violation on one of the worker's
// queues: the device needs a reset and the queue is not used any more.
func (w *worker) queueError(index int, err error) {
	if index == w.rxIdx {
		w.rxOn = false
		w.pre.reset()
	} else {
		w.txOn = false
	}
	w.d.guestWarn("virtio-net: guest error, device needs reset", "queue", index, "err", err)
	w.irq.NeedsReset(fmt.Errorf("virtio-net queue %d: %w", index, err))
}

// stall records that the ring had no room for a packet and arms the rx
// kick (EnableNotification) unless buffers arrived meanwhile.
func (w *worker) stall() {
	w.stalled = true
	w.st.RxRingFull++
	w.dirty = true
	more, err := w.rxq.EnableNotification()
	if err != nil {
		w.queueError(w.rxIdx, err)
		return
	}
	if more {
		w.stalled = false
	}
}

// updateInterest registers the backend fd for the events the worker can
// act on now.
func (w *worker) updateInterest() {
	var want tap.Events
	if w.rxOn && !w.starving && !w.stalled && !w.held && len(w.pendReq) == 0 {
		want |= tap.Readable
	}
	if w.txOn && w.txBlocked {
		want |= tap.Writable
	}
	if want != w.fdMask {
		if err := w.poller.Modify(w.bq.Fd(), want, tokBackend); err == nil {
			w.fdMask = want
		}
	}
	w.armTimer()
}

// armTimer arms the timerfd for the rsc engine's next deadline.
func (w *worker) armTimer() {
	if w.engine == nil || w.timer < 0 {
		return
	}
	dl, ok := w.engine.NextDeadline()
	if !ok || (w.isArmed && w.armed <= dl) {
		return
	}
	delay := dl - w.clock()
	if delay < time.Microsecond {
		delay = time.Microsecond
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(delay))}
	if err := unix.TimerfdSettime(w.timer, 0, &spec, nil); err == nil {
		w.armed, w.isArmed = dl, true
	}
}

// publish copies the counters for Stats.
func (w *worker) publish() {
	if !w.dirty {
		return
	}
	w.dirty = false
	w.pub.mu.Lock()
	w.pub.s = w.st
	if w.rscUsed && w.engine != nil {
		w.pub.rsc = rscStatsFrom(w.engine.Stats()).plus(w.pub.rscBase)
		w.pub.has = true
	}
	w.pub.mu.Unlock()
}

package virtionet

import (
	"errors"
	"fmt"
	"sync"

	"github.com/rscvm/rscvm/net/tap"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/net/ctrl"
	"github.com/rscvm/rscvm/virtio/queue"
)

// ctrlQueue serves the control virtqueue on its own goroutine.
type ctrlQueue struct {
	d      *Device
	run    *runState
	q      *queue.Queue
	kick   *virtio.Kick
	idx    int
	poller *tap.Poller
	buf    []byte

	mu      sync.Mutex // guards stopped and broken; held while processing
	stopped bool
	broken  bool

	amu     sync.Mutex
	abort   chan struct{} // closed by stop to abandon a wait for the workers
	aborted bool
}

func (d *Device) newCtrlQueue(run *runState) (*ctrlQueue, error) {
	p, err := tap.NewPoller(run.ctx)
	if err != nil {
		return nil, fmt.Errorf("virtio-net control queue: %w", err)
	}
	cq := &ctrlQueue{d: d, run: run, q: run.queues[run.ctrlIdx], kick: run.kicks[run.ctrlIdx],
		idx: run.ctrlIdx, poller: p, buf: make([]byte, 0, 1024), abort: make(chan struct{})}
	if err := p.Add(cq.kick.Fd(), tap.Readable, 0); err != nil {
		_ = p.Close()
		return nil, fmt.Errorf("virtio-net control queue: %w", err)
	}
	return cq, nil
}

func (cq *ctrlQueue) close() { _ = cq.poller.Close() }

// stop makes the goroutine leave the queue alone (queue reset). When it
// returns the queue is not touched until start.
func (cq *ctrlQueue) stop() {
	cq.amu.Lock()
	if !cq.aborted {
		cq.aborted = true
		close(cq.abort) // abandon a wait for the workers
	}
	cq.amu.Unlock()
	cq.mu.Lock()
	cq.stopped = true
	cq.mu.Unlock()
}

// start resumes after the driver re-enabled the queue.
func (cq *ctrlQueue) start() {
	cq.amu.Lock()
	if cq.aborted {
		cq.abort = make(chan struct{})
		cq.aborted = false
	}
	cq.amu.Unlock()
	cq.mu.Lock()
	cq.stopped, cq.broken = false, false
	cq.mu.Unlock()
	_ = cq.poller.Wake()
}

func (cq *ctrlQueue) abortChan() chan struct{} {
	cq.amu.Lock()
	defer cq.amu.Unlock()
	return cq.abort
}

func (cq *ctrlQueue) loop() {
	defer cq.run.wg.Done()
	ready := make([]tap.Ready, 2)
	for {
		cq.process()
		if _, err := cq.poller.Wait(ready, -1); err != nil {
			return
		}
		_, _ = cq.kick.Drain()
	}
}

// process answers every available command.
func (cq *ctrlQueue) process() {
	cq.mu.Lock()
	defer cq.mu.Unlock()
	if cq.stopped || cq.broken || !cq.q.Ready() {
		return
	}
	abort := cq.abortChan()
	for {
		select {
		case <-abort:
			return // queue reset in progress
		default:
		}
		c, err := cq.q.Pop()
		if err != nil {
			cq.broken = true
			cq.d.guestWarn("virtio-net: guest error on the control queue, device needs reset", "err", err)
			cq.run.irq.NeedsReset(fmt.Errorf("virtio-net control queue: %w", err))
			return
		}
		if c == nil {
			// Ask for a kick for the next command (EVENT_IDX: avail_event),
			// closing the race with a driver that just posted one.
			more, err := cq.q.EnableNotification()
			if err != nil {
				cq.broken = true
				cq.run.irq.NeedsReset(fmt.Errorf("virtio-net control queue: %w", err))
				return
			}
			if !more {
				return
			}
			continue
		}
		if c.WritableLen() < ctrl.AckSize {
			// Nowhere to write the acknowledgement: as QEMU does, the
			// device needs a reset and the chain is not completed (a
			// driver waiting for the ack sees DEVICE_NEEDS_RESET instead
			// of a used entry it cannot interpret).
			cq.broken = true
			cq.d.mu.Lock()
			cq.d.ctrlStats.Malformed++
			cq.d.mu.Unlock()
			cq.d.guestWarn("virtio-net: control command without a writable ack byte, device needs reset")
			cq.run.irq.NeedsReset(errors.New("virtio-net control queue: command without a writable ack byte"))
			return
		}
		written := cq.command(c, abort)
		if err := cq.q.Push(c, written); err != nil {
			if errors.Is(err, queue.ErrStaleChain) {
				return // the queue was reset meanwhile
			}
			cq.broken = true
			cq.run.irq.NeedsReset(fmt.Errorf("virtio-net control queue: %w", err))
			return
		}
		if cq.q.NeedsNotify() {
			_ = cq.run.irq.SignalQueue(cq.idx)
		}
	}
}

// command executes one chain and returns the used length.
func (cq *ctrlQueue) command(c *queue.Chain, abort chan struct{}) uint32 {
	d := cq.d
	class, cmd, payload, err := ctrl.ParseCommand(c.Reader(), cq.buf[:0])
	if cap(payload) <= ctrl.MaxPayloadSize && cap(payload) > cap(cq.buf) {
		cq.buf = payload[:0]
	}
	ack := ctrl.AckErr
	var ev ctrl.Event
	d.mu.Lock()
	switch {
	case errors.Is(err, ctrl.ErrMissingHeader):
		d.ctrlStats.Malformed++
	case err != nil:
	default:
		var aerr error
		ev, aerr = d.ctrl.Apply(class, cmd, payload)
		if aerr == nil {
			ack = ctrl.AckOK
		} else {
			err = aerr
		}
	}
	d.ctrlStats.Commands++
	if ack != ctrl.AckOK {
		d.ctrlStats.Errors++
	}
	var cfg rxConfig
	var snap ctrl.State
	if ev.Has(ctrl.ChangeOffloads | ctrl.ChangeRxFilter) {
		cfg = d.rxConfigLocked()
		snap = *d.ctrl
	}
	if ev.Has(ctrl.ChangeQueuePairs) {
		d.pairsInUse = int(ev.QueuePairs)
	}
	d.mu.Unlock()
	if err != nil {
		d.guestWarn("virtio-net: control command refused", "err", err)
	}
	if ev.Has(ctrl.ChangeRxFilter) {
		for _, w := range cq.run.workers {
			if w != nil {
				w.post(&request{kind: reqFilter, filter: snap})
			}
		}
	}
	if ev.Has(ctrl.ChangeOffloads) {
		// Deliver what the workers hold under the old offloads, switch them,
		// then tell the tap what the guest accepts now.
		cq.waitConfig(cfg, abort)
		if err := d.be.SetOffload(ev.Offloads); err != nil {
			d.log.Warn("virtio-net: applying guest offloads to the backend",
				"offloads", fmt.Sprintf("%#x", ev.Offloads), "err", err)
		}
	}
	if ev.Has(ctrl.ChangeQueuePairs) {
		if err := d.be.SetActiveQueues(min(int(ev.QueuePairs), d.be.NumQueues())); err != nil {
			d.log.Warn("virtio-net: attaching backend queues", "pairs", ev.QueuePairs, "err", err)
		}
	}
	// ChangeMAC and ChangeAnnounceAck change config space (mac, status);
	// QEMU sends no notification for either: the driver caused them.
	if err := c.Writer().WriteAt([]byte{ack}, 0); err != nil {
		return 0
	}
	return ctrl.AckSize
}

// waitConfig pushes cfg to the workers and waits, unless the run ends or
// the queue is reset.
func (cq *ctrlQueue) waitConfig(cfg rxConfig, abort chan struct{}) {
	reqs := make([]*request, 0, len(cq.run.workers))
	for _, w := range cq.run.workers {
		if w == nil {
			continue
		}
		r := &request{kind: reqConfig, cfg: cfg, done: make(chan struct{})}
		w.post(r)
		reqs = append(reqs, r)
	}
	for _, r := range reqs {
		select {
		case <-r.done:
		case <-abort:
			return
		case <-cq.run.ctx.Done():
			return
		}
	}
}

// Package nettest provides an in-memory virtionet.Backend for tests: frames
// injected by the test come out of ReadV as if a TAP had received them, and
// frames the device writes are recorded. Readiness is an eventfd, so the
// device's epoll loop works unchanged.
package nettest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/tap"
	virtionet "github.com/rscvm/rscvm/virtio/net"
)

// Frame is a frame with its virtio-net header.
type Frame struct {
	Hdr  header.VirtioNetHdr
	Data []byte
}

// Backend is an in-memory virtionet.Backend. It is safe for concurrent use.
type Backend struct {
	mu       sync.Mutex
	caps     virtionet.BackendCaps
	queues   []*Queue
	offloads []uint64
	active   []int
	failOff  error
}

var _ virtionet.Backend = (*Backend)(nil)

// New returns a backend with n queues, a vnet header and UFO support.
func New(n int) (*Backend, error) {
	if n < 1 {
		return nil, fmt.Errorf("nettest: %d queues", n)
	}
	b := &Backend{caps: virtionet.BackendCaps{VnetHdr: true, UFO: true, Queues: n}}
	for i := 0; i < n; i++ {
		q, err := newQueue(i)
		if err != nil {
			b.Close()
			return nil, err
		}
		b.queues = append(b.queues, q)
	}
	return b, nil
}

// Close releases the queues' eventfds.
func (b *Backend) Close() {
	for _, q := range b.queues {
		q.close()
	}
}

// SetCaps changes the reported capabilities (before creating the device).
func (b *Backend) SetCaps(c virtionet.BackendCaps) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c.Queues = len(b.queues)
	b.caps = c
}

// Caps implements virtionet.Backend.
func (b *Backend) Caps() virtionet.BackendCaps {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.caps
}

// NumQueues implements virtionet.Backend.
func (b *Backend) NumQueues() int { return len(b.queues) }

// Queue implements virtionet.Backend.
func (b *Backend) Queue(i int) virtionet.BackendQueue { return b.queues[i] }

// Q returns queue i with its test methods.
func (b *Backend) Q(i int) *Queue { return b.queues[i] }

// SetOffload implements virtionet.Backend: it records the guest offload
// bits (see Offloads).
func (b *Backend) SetOffload(bits uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failOff != nil {
		return b.failOff
	}
	b.offloads = append(b.offloads, bits)
	return nil
}

// FailSetOffload makes SetOffload fail with err (nil: succeed again).
func (b *Backend) FailSetOffload(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failOff = err
}

// Offloads returns every SetOffload argument so far, oldest first.
func (b *Backend) Offloads() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]uint64(nil), b.offloads...)
}

// Offload returns the TUN_F_* flags a tap would have now (tap.OffloadFromBits
// of the last SetOffload; 0 before any).
func (b *Backend) Offload() tap.Offload {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.offloads) == 0 {
		return 0
	}
	return tap.OffloadFromBits(b.offloads[len(b.offloads)-1])
}

// SetActiveQueues implements virtionet.Backend and records n.
func (b *Backend) SetActiveQueues(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n < 1 || n > len(b.queues) {
		return fmt.Errorf("nettest: %d active queues out of range 1..%d", n, len(b.queues))
	}
	b.active = append(b.active, n)
	return nil
}

// ActiveQueues returns every SetActiveQueues argument so far.
func (b *Backend) ActiveQueues() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.active...)
}

// Queue is one queue of a Backend.
type Queue struct {
	index int
	efd   int // EFD_SEMAPHORE: its count is the number of queued frames

	mu        sync.Mutex
	rx        [][]byte
	repeat    []byte
	repeatN   int
	tx        []Frame
	txFrames  int
	txBytes   int
	discardTx bool
	blockTx   bool
	readErr   error
	sent      chan struct{}
}

var _ virtionet.BackendQueue = (*Queue)(nil)

func newQueue(i int) (*Queue, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC|unix.EFD_SEMAPHORE)
	if err != nil {
		return nil, fmt.Errorf("nettest: eventfd: %w", err)
	}
	return &Queue{index: i, efd: fd, sent: make(chan struct{}, 1)}, nil
}

func (q *Queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.efd >= 0 {
		_ = unix.Close(q.efd)
		q.efd = -1
	}
}

func (q *Queue) signal(n int) {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], uint64(n))
	_, _ = unix.Write(q.efd, b[:])
}

// Fd implements virtionet.BackendQueue: readable while frames are queued.
func (q *Queue) Fd() int { return q.efd }

// InjectRaw queues a frame received from the "network": raw is a 12-byte
// virtio-net header followed by the Ethernet frame. raw is copied.
func (q *Queue) InjectRaw(raw []byte) {
	q.mu.Lock()
	q.rx = append(q.rx, append([]byte(nil), raw...))
	q.signal(1)
	q.mu.Unlock()
}

// Inject queues frame with header h.
func (q *Queue) Inject(h header.VirtioNetHdr, frame []byte) {
	q.InjectRaw(append(h.AppendTo(nil), frame...))
}

// InjectFrames queues several frames at once, so the device reads them in
// one batch (no EAGAIN in between).
func (q *Queue) InjectFrames(frames ...Frame) {
	q.mu.Lock()
	for _, f := range frames {
		q.rx = append(q.rx, append(f.Hdr.AppendTo(nil), f.Data...))
	}
	q.signal(len(frames))
	q.mu.Unlock()
}

// InjectRepeat queues n copies of raw (header and frame) without copying
// per frame: ReadV then allocates nothing (for benchmarks). Repeated frames
// come after the frames queued with Inject.
func (q *Queue) InjectRepeat(raw []byte, n int) {
	q.mu.Lock()
	q.repeat = append(q.repeat[:0], raw...)
	q.repeatN += n
	q.signal(n)
	q.mu.Unlock()
}

// FailRead makes the next ReadV calls fail with err (nil: normal again).
func (q *Queue) FailRead(err error) {
	q.mu.Lock()
	q.readErr = err
	q.mu.Unlock()
}

// Pending returns the number of frames not read yet.
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.rx) + q.repeatN
}

// ReadV implements virtionet.BackendQueue like a TAP: the frame is
// scattered over iovs and truncated if longer; buffers shorter than the
// header fail with EINVAL and drop the frame.
func (q *Queue) ReadV(iovs [][]byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.readErr != nil {
		return 0, q.readErr
	}
	var src []byte
	switch {
	case len(q.rx) > 0:
		src = q.rx[0]
		q.rx[0] = nil
		q.rx = q.rx[1:]
	case q.repeatN > 0:
		src = q.repeat
		q.repeatN--
	default:
		return 0, tap.ErrWouldBlock
	}
	var b [8]byte
	_, _ = unix.Read(q.efd, b[:])
	total := 0
	for _, v := range iovs {
		total += len(v)
	}
	if total < virtionet.BackendHdrSize {
		return 0, unix.EINVAL
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

// DiscardTx makes WriteV count frames without keeping them (benchmarks).
func (q *Queue) DiscardTx(on bool) {
	q.mu.Lock()
	q.discardTx = on
	q.mu.Unlock()
}

// BlockTx makes WriteV report EAGAIN (a full tap) while on. The fd stays
// writable (it is an eventfd), so a device retries in a loop meanwhile.
func (q *Queue) BlockTx(on bool) {
	q.mu.Lock()
	q.blockTx = on
	q.mu.Unlock()
}

// WriteV implements virtionet.BackendQueue: the frame is recorded.
func (q *Queue) WriteV(iovs [][]byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.blockTx {
		return 0, tap.ErrWouldBlock
	}
	n := 0
	for _, v := range iovs {
		n += len(v)
	}
	if n < virtionet.BackendHdrSize {
		return 0, unix.EINVAL
	}
	q.txFrames++
	q.txBytes += n - virtionet.BackendHdrSize
	if !q.discardTx {
		raw := make([]byte, 0, n)
		for _, v := range iovs {
			raw = append(raw, v...)
		}
		h, _ := header.DecodeVirtioNetHdr(raw)
		q.tx = append(q.tx, Frame{Hdr: h, Data: raw[virtionet.BackendHdrSize:]})
	}
	select {
	case q.sent <- struct{}{}:
	default:
	}
	return n, nil
}

// Sent returns the frames written so far (and keeps them).
func (q *Queue) Sent() []Frame {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Frame(nil), q.tx...)
}

// SentCount returns the number of frames written and their Ethernet bytes.
func (q *Queue) SentCount() (frames, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.txFrames, q.txBytes
}

// ErrTimeout is returned by WaitSent.
var ErrTimeout = errors.New("nettest: timed out")

// WaitSent waits until at least n frames were written in total and returns
// them.
func (q *Queue) WaitSent(n int, timeout time.Duration) ([]Frame, error) {
	deadline := time.Now().Add(timeout)
	for {
		q.mu.Lock()
		got := q.txFrames
		q.mu.Unlock()
		if got >= n {
			return q.Sent(), nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return q.Sent(), fmt.Errorf("%w: %d of %d frames sent", ErrTimeout, got, n)
		}
		select {
		case <-q.sent:
		case <-time.After(min(left, 10*time.Millisecond)):
		}
	}
}

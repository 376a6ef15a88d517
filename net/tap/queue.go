package tap

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxIovecs is the kernel's UIO_MAXIOV: the largest iovec count readv/writev accept.
const maxIovecs = 1024

// Queue is one fd of the tap (one virtio-net queue pair). All I/O is non-blocking: when nothing can be read (or
// the tap cannot take a write) the methods return ErrWouldBlock and the caller waits for readiness with Wait, a
// Poller, or its own epoll on Fd().
//
// A Queue can be used by one reader goroutine and one writer goroutine at the same time (ReadV/Read and
// WriteV/Write keep separate iovec arrays); concurrent readers, or concurrent writers, need external locking.
type Queue struct {
	tap      *Tap
	index    int
	fd       int
	wake     int // eventfd used by Wake to interrupt Wait
	attached atomic.Bool
	wakeMu   sync.Mutex // guards wake against close
	riov     []unix.Iovec
	wiov     []unix.Iovec
}

func newQueue(t *Tap, index, fd int) *Queue {
	q := &Queue{tap: t, index: index, fd: fd, wake: -1,
		riov: make([]unix.Iovec, 0, 64), wiov: make([]unix.Iovec, 0, 64)}
	q.attached.Store(true)
	return q
}

func (q *Queue) initWake() error {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return err
	}
	q.wake = fd
	return nil
}

func (q *Queue) close() {
	if q.fd >= 0 {
		_ = unix.Close(q.fd)
		q.fd = -1
	}
	q.wakeMu.Lock()
	if q.wake >= 0 {
		_ = unix.Close(q.wake)
		q.wake = -1
	}
	q.wakeMu.Unlock()
}

// Index returns the queue number (tap queue i serves virtqueues 2i and 2i+1).
func (q *Queue) Index() int { return q.index }

// Fd returns the tap fd of this queue, for registration in the caller's epoll set (level- or edge-triggered;
// EPOLLIN means a frame can be read, EPOLLOUT that a write will not block). The fd stays owned by the Tap.
func (q *Queue) Fd() int { return q.fd }

// Attached reports whether the queue is attached (see Tap.SetActiveQueues).
func (q *Queue) Attached() bool { return q.attached.Load() }

// VnetHdrSize returns the virtio-net header length that precedes every frame.
func (q *Queue) VnetHdrSize() int { return q.tap.VnetHdrSize() }

// ReadV reads one frame (virtio-net header followed by the Ethernet frame) scattered over iovs with readv(2) and
// returns the number of bytes stored. Buffers should hold VnetHdrSize()+65550 bytes when GSO offloads are on
// (VnetHdrSize()+MTU+14 otherwise): the kernel truncates a longer frame, returns the bytes stored and discards
// the rest; buffers shorter than the header fail with EINVAL (and the frame is dropped). Empty slices are skipped. It returns ErrWouldBlock when no frame is
// queued (also on a queue detached by SetActiveQueues). It does not allocate once the internal iovec array has grown to
// the largest len(iovs) used (64 initially).
func (q *Queue) ReadV(iovs [][]byte) (int, error) {
	n, err := fillIovecs(&q.riov, iovs)
	if err != nil {
		return 0, err
	}
	r, e := q.rwv(unix.SYS_READV, q.riov, n)
	clear(q.riov[:n]) // drop references to the caller's buffers
	return q.result(r, e, "readv")
}

// WriteV writes one frame (virtio-net header followed by the Ethernet frame) gathered from iovs with writev(2).
// The kernel parses the header: NEEDS_CSUM/csum_start/csum_offset and gso_type/gso_size/hdr_len describe a
// guest TSO/USO send. It returns ErrWouldBlock when the tap's send buffer is full and an error wrapping EINVAL
// when the kernel rejects the header or the frame.
func (q *Queue) WriteV(iovs [][]byte) (int, error) {
	n, err := fillIovecs(&q.wiov, iovs)
	if err != nil {
		return 0, err
	}
	r, e := q.rwv(unix.SYS_WRITEV, q.wiov, n)
	clear(q.wiov[:n])
	return q.result(r, e, "writev")
}

// Read reads one frame (header and Ethernet frame) into p; see ReadV.
func (q *Queue) Read(p []byte) (int, error) {
	r, e := q.rw(unix.SYS_READ, p)
	return q.result(r, e, "read")
}

// Write writes one frame (header and Ethernet frame) from p; see WriteV.
func (q *Queue) Write(p []byte) (int, error) {
	r, e := q.rw(unix.SYS_WRITE, p)
	return q.result(r, e, "write")
}

func fillIovecs(dst *[]unix.Iovec, iovs [][]byte) (int, error) {
	if len(iovs) > maxIovecs {
		return 0, fmt.Errorf("tap: %d iovecs exceed the limit of %d", len(iovs), maxIovecs)
	}
	if cap(*dst) < len(iovs) {
		*dst = make([]unix.Iovec, 0, len(iovs))
	}
	v := (*dst)[:len(iovs)]
	n := 0
	for _, b := range iovs {
		if len(b) == 0 {
			continue
		}
		v[n].Base = &b[0]
		v[n].SetLen(len(b))
		n++
	}
	*dst = v
	return n, nil
}

func (q *Queue) rwv(trap uintptr, iov []unix.Iovec, n int) (uintptr, unix.Errno) {
	var p unsafe.Pointer
	if n > 0 {
		p = unsafe.Pointer(&iov[0])
	}
	for {
		r, _, e := unix.Syscall(trap, uintptr(q.fd), uintptr(p), uintptr(n))
		if e != unix.EINTR {
			return r, e
		}
	}
}

func (q *Queue) rw(trap uintptr, b []byte) (uintptr, unix.Errno) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		r, _, e := unix.Syscall(trap, uintptr(q.fd), uintptr(p), uintptr(len(b)))
		if e != unix.EINTR {
			return r, e
		}
	}
}

func (q *Queue) result(r uintptr, e unix.Errno, op string) (int, error) {
	switch e {
	case 0:
		return int(r), nil
	case unix.EAGAIN:
		return 0, ErrWouldBlock
	case unix.EBADFD:
		return 0, ErrDetached
	case unix.EBADF:
		if q.fd < 0 {
			return 0, ErrClosed
		}
	}
	return 0, fmt.Errorf("tap %s queue %d: %s: %w", q.tap.name, q.index, op, e)
}

// Events is a readiness mask (the poll/epoll bits).
type Events uint32

// Readiness bits.
const (
	Readable Events = unix.EPOLLIN
	Writable Events = unix.EPOLLOUT
	// Failed is reported for EPOLLERR/EPOLLHUP.
	Failed Events = unix.EPOLLERR | unix.EPOLLHUP
)

// Wait blocks until the queue's fd is ready for one of want (Readable, Writable), Wake is called, or ctx is done.
// It returns the ready events; a Wake returns (0, nil), a cancelled ctx returns ctx.Err(), and error events
// on the fd (POLLERR/POLLHUP/POLLNVAL) return an error. It does not allocate when ctx has no Done channel (context.Background()); with a
// cancellable ctx it costs one context.AfterFunc registration per call — a worker that waits per frame should
// use a Poller, which binds its context once.
func (q *Queue) Wait(ctx context.Context, want Events) (Events, error) {
	if ctx.Done() != nil {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		stop := context.AfterFunc(ctx, func() { _ = q.Wake() })
		defer stop()
	}
	fds := [2]unix.PollFd{
		{Fd: int32(q.fd), Events: int16(want & (Readable | Writable))},
		{Fd: int32(q.wake), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Poll(fds[:], -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("tap %s queue %d: poll: %w", q.tap.name, q.index, err)
		}
		break
	}
	if fds[1].Revents != 0 {
		drainEventfd(q.wake)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	ev := Events(uint16(fds[0].Revents))
	if ev&(Failed|unix.POLLNVAL) != 0 {
		if q.fd < 0 {
			return ev, ErrClosed
		}
		return ev, fmt.Errorf("tap %s queue %d: poll reports error events %#x", q.tap.name, q.index, uint16(ev))
	}
	return ev & want, nil
}

// WaitReadable is Wait(ctx, Readable) reduced to an error.
func (q *Queue) WaitReadable(ctx context.Context) error {
	_, err := q.Wait(ctx, Readable)
	return err
}

// Wake makes a concurrent (or the next) Wait on this queue return early. It is safe from any goroutine.
func (q *Queue) Wake() error {
	q.wakeMu.Lock()
	defer q.wakeMu.Unlock()
	if q.wake < 0 {
		return nil
	}
	return signalEventfd(q.wake)
}

func signalEventfd(fd int) error {
	var one = [8]byte{1}
	_, err := unix.Write(fd, one[:])
	if err == unix.EAGAIN { // counter saturated: a wakeup is pending anyway
		return nil
	}
	return err
}

func drainEventfd(fd int) {
	var buf [8]byte
	_, _ = unix.Read(fd, buf[:])
}

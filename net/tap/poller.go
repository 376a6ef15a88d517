package tap

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Poller is a small epoll set for a device worker: it waits on tap queue fds and any other fds (a virtqueue kick
// eventfd, a timer fd) at once, identifies them by a caller-chosen token, and can be woken from other goroutines
// or by its context. One goroutine calls Wait; Wake and Close are safe from anywhere. Wait does not allocate.
//
// Typical rx worker: Add(q.Fd(), Readable, tokTap); Add(kickFd, Readable, tokKick); then loop: ReadV until
// ErrWouldBlock or the guest has no buffers, and Wait.
type Poller struct {
	ctx    context.Context
	epfd   int
	wake   int
	stop   func() bool
	events []unix.EpollEvent

	mu     sync.Mutex // guards wake against Close
	closed bool
}

// Ready is one readiness report from Poller.Wait.
type Ready struct {
	// Token is the value given to Add for the fd.
	Token uint32
	// Events are the ready events (Readable, Writable, Failed bits).
	Events Events
}

const wakeToken = ^uint64(0)

// NewPoller creates an epoll set. When ctx is done, Wait returns ctx.Err() (a pending Wait is woken).
func NewPoller(ctx context.Context) (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("tap: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("tap: eventfd: %w", err)
	}
	p := &Poller{ctx: ctx, epfd: epfd, wake: wake, events: make([]unix.EpollEvent, 16)}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("tap: epoll_ctl add wake eventfd: %w", err)
	}
	p.stop = context.AfterFunc(ctx, func() { _ = p.Wake() })
	return p, nil
}

// setToken stores a 64-bit token in the epoll_data union (the Fd and Pad fields of unix.EpollEvent).
func setToken(ev *unix.EpollEvent, tok uint64) {
	ev.Fd = int32(uint32(tok))
	ev.Pad = int32(uint32(tok >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// Add registers fd for the events in want (level-triggered) under token.
func (p *Poller) Add(fd int, want Events, token uint32) error {
	return p.ctl(unix.EPOLL_CTL_ADD, fd, want, token)
}

// Modify changes the events and token of a registered fd (e.g. stop polling the tap while the guest has no rx
// buffers, by passing want = 0).
func (p *Poller) Modify(fd int, want Events, token uint32) error {
	return p.ctl(unix.EPOLL_CTL_MOD, fd, want, token)
}

// Remove unregisters fd.
func (p *Poller) Remove(fd int) error {
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("tap: epoll_ctl del fd %d: %w", fd, err)
	}
	return nil
}

func (p *Poller) ctl(op, fd int, want Events, tok uint32) error {
	ev := unix.EpollEvent{Events: uint32(want & (Readable | Writable))}
	setToken(&ev, uint64(tok))
	if err := unix.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("tap: epoll_ctl fd %d: %w", fd, err)
	}
	return nil
}

// Wait blocks until at least one registered fd is ready, Wake is called, the timeout expires (timeout < 0 waits
// forever), or the Poller's context is done. It fills ready and returns the count; a Wake or a timeout returns
// (0, nil); a done context returns ctx.Err().
func (p *Poller) Wait(ready []Ready, timeout time.Duration) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	if len(ready) == 0 {
		return 0, fmt.Errorf("tap: Poller.Wait needs a non-empty ready slice")
	}
	if len(p.events) < len(ready) {
		p.events = make([]unix.EpollEvent, len(ready))
	}
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	var n int
	for {
		var err error
		n, err = unix.EpollWait(p.epfd, p.events[:len(ready)], ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("tap: epoll_wait: %w", err)
		}
		break
	}
	out := 0
	for i := 0; i < n; i++ {
		ev := &p.events[i]
		tok := token(ev)
		if tok == wakeToken {
			drainEventfd(p.wake)
			continue
		}
		ready[out] = Ready{Token: uint32(tok), Events: Events(ev.Events)}
		out++
	}
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	return out, nil
}

// Wake makes a pending (or the next) Wait return. Safe from any goroutine; a no-op after Close.
func (p *Poller) Wake() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	return signalEventfd(p.wake)
}

// Close releases the epoll set; registered fds are not closed. Wait must not be running.
func (p *Poller) Close() error {
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	_ = unix.Close(p.epfd)
	_ = unix.Close(p.wake)
	return nil
}

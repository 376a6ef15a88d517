package hck

import (
	"bytes"
	"errors"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/tap"
	"github.com/rscvm/rscvm/rsc/conformance"
	virtionet "github.com/rscvm/rscvm/virtio/net"
)

// isWouldBlock reports whether a backend error means "empty, try later".
func isWouldBlock(err error) bool { return err == tap.ErrWouldBlock || errors.Is(err, unix.EAGAIN) }

// watch observes the device's reads from its backend: how many scenario
// frames it read, how many reads found the backend empty (each ends a
// device pass), and optionally a copy of every scenario frame as the
// backend delivered it. The runners synchronise on it: a read that finds
// the backend empty after the last frame of a batch means the device has
// processed the whole batch.
type watch struct {
	mu          sync.Mutex
	reads       int // scenario frames read
	empties     int // reads that found the backend empty
	emptiesAtRd int // empties when the last scenario frame was read
	capture     bool
	filter      bool // count only frames from conformance.PeerMAC (real TAP: ignore host noise)
	frames      []conformance.Frame
	changed     chan struct{}
}

func newWatch(capture, filter bool) *watch {
	return &watch{capture: capture, filter: filter, changed: make(chan struct{}, 1)}
}

func (w *watch) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *watch) snapshot() (reads, empties, emptiesAtRead int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reads, w.empties, w.emptiesAtRd
}

// captured returns the frames captured so far.
func (w *watch) captured() []conformance.Frame {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]conformance.Frame(nil), w.frames...)
}

// gather copies the first n bytes scattered over iovs.
func gather(iovs [][]byte, n int) []byte {
	out := make([]byte, 0, n)
	for _, v := range iovs {
		if len(out) == n {
			break
		}
		out = append(out, v[:min(len(v), n-len(out))]...)
	}
	return out
}

// peekSrcMAC reads bytes [6,12) of the Ethernet frame after the header.
func peekSrcMAC(iovs [][]byte, n int) ([6]byte, bool) {
	var mac [6]byte
	if n < virtionet.BackendHdrSize+header.EthernetMinSize {
		return mac, false
	}
	pos, got := 0, 0
	start := virtionet.BackendHdrSize + 6
	for _, v := range iovs {
		for i := range v {
			if p := pos + i; p >= start && p < start+6 {
				mac[p-start] = v[i]
				got++
			}
		}
		pos += len(v)
		if pos >= start+6 {
			break
		}
	}
	return mac, got == 6
}

func (w *watch) read(iovs [][]byte, n int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.poke()
	if err != nil {
		if isWouldBlock(err) {
			w.empties++
		}
		return
	}
	if w.filter {
		mac, ok := peekSrcMAC(iovs, n)
		if !ok || !bytes.Equal(mac[:], conformance.PeerMAC[:]) {
			return
		}
	}
	w.reads++
	w.emptiesAtRd = w.empties
	if w.capture {
		raw := gather(iovs, n)
		if len(raw) >= virtionet.BackendHdrSize {
			h, _ := header.DecodeVirtioNetHdr(raw)
			h.NumBuffers = 0
			w.frames = append(w.frames, conformance.Frame{Hdr: h, Data: raw[virtionet.BackendHdrSize:]})
		}
	}
}

// watchedBackend wraps a backend so that w sees every read.
type watchedBackend struct {
	virtionet.Backend
	w      *watch
	queues []virtionet.BackendQueue
}

func newWatchedBackend(be virtionet.Backend, w *watch) *watchedBackend {
	b := &watchedBackend{Backend: be, w: w}
	for i := 0; i < be.NumQueues(); i++ {
		b.queues = append(b.queues, &watchedQueue{BackendQueue: be.Queue(i), w: w, first: i == 0})
	}
	return b
}

// Queue implements virtionet.Backend.
func (b *watchedBackend) Queue(i int) virtionet.BackendQueue { return b.queues[i] }

type watchedQueue struct {
	virtionet.BackendQueue
	w     *watch
	first bool
}

// ReadV implements virtionet.BackendQueue.
func (q *watchedQueue) ReadV(iovs [][]byte) (int, error) {
	n, err := q.BackendQueue.ReadV(iovs)
	if q.first {
		q.w.read(iovs, n, err)
	}
	return n, err
}

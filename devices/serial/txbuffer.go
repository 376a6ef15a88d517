package serial

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// txBuffer is a byte ring between THR writes (producer, never blocking) and
// a goroutine that writes chunks to the output.
type txBuffer struct {
	out     io.Writer
	log     *slog.Logger
	onSpace func() // called (without mu held) after draining a full buffer

	mu       sync.Mutex
	cond     *sync.Cond
	buf      []byte
	head, n  int
	inFlight bool // a chunk is being written
	fullSeen bool // the buffer filled up since the last chunk was taken
	closed   bool
	werr     bool
	done     chan struct{}
}

func newTxBuffer(size int, out io.Writer, log *slog.Logger, onSpace func()) *txBuffer {
	t := &txBuffer{out: out, log: log, onSpace: onSpace, buf: make([]byte, size), done: make(chan struct{})}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// put appends v; it reports false when the buffer is full or closed.
func (t *txBuffer) put(v byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.n == len(t.buf) {
		return false
	}
	t.buf[(t.head+t.n)%len(t.buf)] = v
	t.n++
	if t.n == len(t.buf) {
		t.fullSeen = true
	}
	if t.n == 1 {
		t.cond.Broadcast()
	}
	return true
}

func (t *txBuffer) full() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n == len(t.buf)
}

func (t *txBuffer) run() {
	defer close(t.done)
	chunk := make([]byte, 4096)
	for {
		t.mu.Lock()
		for t.n == 0 && !t.closed {
			t.cond.Wait()
		}
		if t.n == 0 {
			t.mu.Unlock()
			return
		}
		k := 0
		for k < len(chunk) && t.n > 0 {
			end := t.head + t.n
			if end > len(t.buf) {
				end = len(t.buf)
			}
			c := copy(chunk[k:], t.buf[t.head:end])
			k += c
			t.head = (t.head + c) % len(t.buf)
			t.n -= c
		}
		wasFull := t.fullSeen
		t.fullSeen = false
		t.inFlight = true
		t.mu.Unlock()

		_, err := t.out.Write(chunk[:k])

		t.mu.Lock()
		t.inFlight = false
		if err != nil && !t.werr {
			t.werr = true
			t.log.Warn("serial: writing output failed; output is discarded", "err", err)
		}
		t.cond.Broadcast()
		t.mu.Unlock()
		if wasFull {
			t.onSpace()
		}
	}
}

func (t *txBuffer) flush(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		t.cond.Broadcast()
		t.mu.Unlock()
	})
	defer stop()
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.n > 0 || t.inFlight {
		if err := ctx.Err(); err != nil {
			return err
		}
		t.cond.Wait()
	}
	return nil
}

func (t *txBuffer) close() error {
	t.mu.Lock()
	t.closed = true
	t.cond.Broadcast()
	t.mu.Unlock()
	<-t.done
	return nil
}

// inFlightNow reports whether the writer goroutine is inside Write.
func (t *txBuffer) inFlightNow() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inFlight
}

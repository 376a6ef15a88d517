package queue

import (
	"errors"
	"io"
)

// ErrShortChain is returned when a chain's readable or writable part is too
// short for the requested transfer.
var ErrShortChain = errors.New("virtqueue: descriptor chain too short")

// Reader is a cursor over the device-readable part of a chain. It copies
// out of guest memory slices; it never touches memory outside them.
type Reader struct {
	bufs [][]byte
	i    int // current buffer
	off  int // offset in bufs[i]
	left int // bytes not yet consumed
	done int // bytes consumed
}

// Available is the number of readable bytes not yet consumed.
func (r *Reader) Available() int { return r.left }

// Consumed is the number of readable bytes consumed so far.
func (r *Reader) Consumed() int { return r.done }

// Read copies up to len(p) bytes (io.Reader semantics: io.EOF once the
// readable part is exhausted).
func (r *Reader) Read(p []byte) (int, error) {
	if r.left == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.i < len(r.bufs) {
		b := r.bufs[r.i]
		k := copy(p[n:], b[r.off:])
		n += k
		r.off += k
		if r.off == len(b) {
			r.i++
			r.off = 0
		}
	}
	r.left -= n
	r.done += n
	return n, nil
}

// ReadFull fills p entirely. If fewer than len(p) bytes are left it
// consumes nothing and returns ErrShortChain.
func (r *Reader) ReadFull(p []byte) error {
	if len(p) > r.left {
		return ErrShortChain
	}
	_, _ = r.Read(p)
	return nil
}

// Skip consumes up to n bytes without copying them (for example after a
// zero-copy writev of Slices) and returns how many it consumed.
func (r *Reader) Skip(n int) int {
	if n <= 0 {
		return 0
	}
	n = min(n, r.left)
	k := n
	for k > 0 {
		b := r.bufs[r.i]
		step := min(k, len(b)-r.off)
		k -= step
		r.off += step
		if r.off == len(b) {
			r.i++
			r.off = 0
		}
	}
	r.left -= n
	r.done += n
	return n
}

// Slices appends the unconsumed readable memory to dst, as slices of guest
// memory suitable for writev, and returns the extended slice. It does not
// consume anything (use Skip).
func (r *Reader) Slices(dst [][]byte) [][]byte {
	if r.left == 0 {
		return dst
	}
	dst = append(dst, r.bufs[r.i][r.off:])
	return append(dst, r.bufs[r.i+1:]...)
}

// Writer is a cursor over the device-writable part of a chain. It copies
// into guest memory slices; it never touches memory outside them.
type Writer struct {
	bufs [][]byte
	i    int // current buffer
	off  int // offset in bufs[i]
	done int // bytes written (cursor position)
	size int // total writable length
}

// Available is the number of writable bytes after the cursor.
func (w *Writer) Available() int { return w.size - w.done }

// BytesWritten is the cursor position: bytes written (or skipped with
// Advance) so far. It is normally the length to give AddUsed.
func (w *Writer) BytesWritten() int { return w.done }

// Write copies p at the cursor. If p does not fit it writes what fits and
// returns io.ErrShortWrite.
func (w *Writer) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) && w.i < len(w.bufs) {
		b := w.bufs[w.i]
		k := copy(b[w.off:], p[n:])
		n += k
		w.off += k
		if w.off == len(b) {
			w.i++
			w.off = 0
		}
	}
	w.done += n
	if n < len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// WriteAt copies p at offset off of the writable part without moving the
// cursor (for example to fill in num_buffers of a header written earlier).
// It writes nothing and returns ErrShortChain unless all of p fits.
func (w *Writer) WriteAt(p []byte, off int) error {
	if off < 0 || off > w.size || len(p) > w.size-off {
		return ErrShortChain
	}
	i := 0
	for off > 0 && off >= len(w.bufs[i]) {
		off -= len(w.bufs[i])
		i++
	}
	for len(p) > 0 {
		k := copy(w.bufs[i][off:], p)
		p = p[k:]
		off = 0
		i++
	}
	return nil
}

// Advance moves the cursor by up to n bytes without copying (after a
// zero-copy readv into Slices) and returns how far it moved.
func (w *Writer) Advance(n int) int {
	if n <= 0 {
		return 0
	}
	n = min(n, w.size-w.done)
	k := n
	for k > 0 {
		b := w.bufs[w.i]
		step := min(k, len(b)-w.off)
		k -= step
		w.off += step
		if w.off == len(b) {
			w.i++
			w.off = 0
		}
	}
	w.done += n
	return n
}

// Slices appends the writable memory after the cursor to dst, as slices of
// guest memory suitable for readv, and returns the extended slice. It does
// not move the cursor (use Advance).
func (w *Writer) Slices(dst [][]byte) [][]byte {
	if w.done == w.size {
		return dst
	}
	dst = append(dst, w.bufs[w.i][w.off:])
	return append(dst, w.bufs[w.i+1:]...)
}

package queue

import (
	"fmt"
	"math"

	"github.com/rscvm/rscvm/vmm/memory"
)

// Chain is a descriptor chain popped from the available ring: the
// device-readable buffers followed by the device-writable ones, each a
// slice of guest memory obtained from memory.Memory.
//
// A Chain is owned by its Queue and reused: it is valid from Pop until it is
// passed to AddUsed or Unpop (or the queue is reset). The slices alias guest
// memory, which the guest may change at any time: copy what you validate.
type Chain struct {
	q        *Queue
	gen      uint32
	head     uint16
	availPos uint16
	inflight bool

	bufs     [][]byte // readable buffers, then writable ones
	nRead    int      // bufs[:nRead] are device-readable
	readLen  uint32
	writeLen uint32

	r Reader
	w Writer
}

// Head is the index of the chain's head descriptor (the used element id).
func (c *Chain) Head() uint16 { return c.head }

// Readable returns the device-readable buffers, in chain order. The slice is
// owned by the chain; do not modify it.
func (c *Chain) Readable() [][]byte { return c.bufs[:c.nRead] }

// Writable returns the device-writable buffers, in chain order. The slice is
// owned by the chain; do not modify it.
func (c *Chain) Writable() [][]byte { return c.bufs[c.nRead:] }

// ReadableLen is the total length of the device-readable buffers.
func (c *Chain) ReadableLen() uint32 { return c.readLen }

// WritableLen is the total length of the device-writable buffers.
func (c *Chain) WritableLen() uint32 { return c.writeLen }

// Reader returns the chain's cursor over its readable part.
func (c *Chain) Reader() *Reader { return &c.r }

// Writer returns the chain's cursor over its writable part.
func (c *Chain) Writer() *Writer { return &c.w }

// Pop takes the next available descriptor chain. It returns (nil, nil) when
// the driver has made nothing new available. Any error is a guest protocol
// violation that breaks the queue (see the package documentation).
//
// Pop allocates nothing once a chain's buffer list has grown to the largest
// chain seen at its head index.
func (q *Queue) Pop() (*Chain, error) {
	if q.broken != nil {
		return nil, q.broken
	}
	if !q.enabled {
		return nil, ErrNotReady
	}
	if q.availIdx == q.lastAvail {
		if err := q.readAvailIdx(); err != nil {
			return nil, err
		}
		if q.availIdx == q.lastAvail {
			return nil, nil
		}
	}
	pos := q.lastAvail
	off := 4 + 2*int(pos&q.mask)
	head := le.Uint16(q.avail[off : off+2])
	if head >= q.size {
		return nil, q.fail(&ChainError{Head: head, Desc: uint32(head), Err: ErrDescIndex})
	}
	c := &q.chains[head]
	if c.inflight {
		return nil, q.fail(&ChainError{Head: head, Desc: uint32(head), Err: ErrHeadInUse})
	}
	if err := q.walk(c, head); err != nil {
		c.release()
		return nil, q.fail(err)
	}
	c.q, c.gen, c.head, c.availPos, c.inflight = q, q.gen, head, pos, true
	c.r = Reader{bufs: c.bufs[:c.nRead], left: int(c.readLen)}
	c.w = Writer{bufs: c.bufs[c.nRead:], size: int(c.writeLen)}
	q.lastAvail++
	q.inflight++
	return c, nil
}

// walk follows the chain at head and fills c's buffer list. Each
// descriptor is copied out of guest memory once and then validated.
func (q *Queue) walk(c *Chain, head uint16) error {
	c.bufs = c.bufs[:0]
	c.nRead = 0
	var readLen, writeLen uint64

	table := q.desc
	entries := uint32(q.size)
	ttl := entries // direct chains are at most queue size long
	idx := uint32(head)
	indirect := false
	seenWrite := false
	bad := func(i uint32, err error) error {
		return &ChainError{Head: head, Desc: i, Indirect: indirect, Err: err}
	}
	for {
		if ttl == 0 {
			return bad(idx, ErrChainTooLong)
		}
		ttl--
		if idx >= entries {
			return bad(idx, ErrDescIndex)
		}
		d := table[DescSize*idx : DescSize*idx+DescSize]
		addr := le.Uint64(d[0:8])
		length := le.Uint32(d[8:12])
		flags := le.Uint16(d[12:14])
		next := le.Uint16(d[14:16])

		if flags&DescFIndirect != 0 {
			switch {
			case indirect:
				return bad(idx, fmt.Errorf("indirect descriptor inside an indirect table: %w", ErrIndirect))
			case flags&DescFNext != 0:
				return bad(idx, fmt.Errorf("indirect descriptor with NEXT: %w", ErrIndirect))
			case length == 0 || length%DescSize != 0:
				return bad(idx, fmt.Errorf("indirect table length %d: %w", length, ErrIndirect))
			case length/DescSize > MaxIndirectEntries:
				return bad(idx, fmt.Errorf("indirect table of %d entries: %w", length/DescSize, ErrIndirect))
			}
			t, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return bad(idx, fmt.Errorf("indirect table [%#x,+%#x): %w", addr, length, ErrIndirect))
			}
			// The WRITE flag of the descriptor naming the table is ignored (spec).
			table, entries, ttl, idx, indirect = t, length/DescSize, length/DescSize, 0, true
			continue
		}

		write := flags&DescFWrite != 0
		if write {
			seenWrite = true
		} else if seenWrite {
			return bad(idx, ErrDescOrder)
		}
		if length > 0 {
			if write {
				writeLen += uint64(length)
			} else {
				readLen += uint64(length)
			}
			if readLen+writeLen > math.MaxUint32 {
				return bad(idx, ErrChainLength)
			}
			if err := q.addBuf(c, addr, length, write); err != nil {
				return bad(idx, err)
			}
		}
		if flags&DescFNext == 0 {
			break
		}
		idx = uint32(next)
	}
	c.readLen, c.writeLen = uint32(readLen), uint32(writeLen)
	return nil
}

// addBuf appends guest memory [addr, addr+n) to c, split at region
// boundaries when it spans adjacent regions.
func (q *Queue) addBuf(c *Chain, addr uint64, n uint32, write bool) error {
	if s, err := q.mem.Slice(addr, uint64(n)); err == nil {
		return q.appendBuf(c, s, write)
	}
	left, at := uint64(n), addr
	for left > 0 {
		r, ok := regionAt(q.mem, at)
		if !ok {
			return fmt.Errorf("buffer [%#x,+%#x): %w", addr, n, ErrBufferAddress)
		}
		k := min(left, r.End()-at)
		s, err := q.mem.Slice(at, k)
		if err != nil {
			return fmt.Errorf("buffer [%#x,+%#x): %w", addr, n, ErrBufferAddress)
		}
		if err := q.appendBuf(c, s, write); err != nil {
			return err
		}
		at += k
		left -= k
	}
	return nil
}

func (q *Queue) appendBuf(c *Chain, s []byte, write bool) error {
	if len(c.bufs) >= q.maxSegs {
		return fmt.Errorf("more than %d buffers: %w", q.maxSegs, ErrTooManySegs)
	}
	c.bufs = append(c.bufs, s)
	if !write {
		c.nRead++
	}
	return nil
}

func regionAt(mem *memory.Memory, gpa uint64) (memory.Region, bool) {
	for _, r := range mem.Regions() {
		if gpa >= r.GPA && gpa < r.End() {
			return r, true
		}
	}
	return memory.Region{}, false
}

// Unpop gives back the most recently popped chain that is still in flight,
// as if it had never been popped (for example when a received packet does
// not fit the buffers popped so far and they must be returned untouched).
// Chains must be given back in the reverse order of popping.
func (q *Queue) Unpop(c *Chain) error {
	if err := q.checkChain(c); err != nil {
		return err
	}
	if c.availPos != q.lastAvail-1 {
		return ErrUnpopOrder
	}
	q.lastAvail--
	c.inflight = false
	c.release()
	q.inflight--
	return nil
}

// retainSegs bounds the buffer list a chain keeps for reuse once it is
// returned. Chains with more buffers (legitimate drivers rarely post more
// than a few dozen) get a fresh list each time, so a guest cannot make the
// queue hold size × DefaultMaxSegments slice headers forever.
const retainSegs = 128

// release drops a chain's references to guest memory and, if it grew
// unusually large, its buffer list.
func (c *Chain) release() {
	if cap(c.bufs) > retainSegs {
		c.bufs = nil
	} else {
		clear(c.bufs[:cap(c.bufs)])
		c.bufs = c.bufs[:0]
	}
	c.r, c.w = Reader{}, Writer{}
}

func (q *Queue) checkChain(c *Chain) error {
	if q.broken != nil {
		return q.broken
	}
	if c == nil || c.q != q || c.gen != q.gen || !c.inflight || !q.enabled {
		return ErrStaleChain
	}
	return nil
}

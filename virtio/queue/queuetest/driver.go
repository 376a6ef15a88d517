// Package queuetest is a virtio split-ring "driver" for tests: it lays out
// rings in fake guest memory, posts descriptor chains (direct and indirect,
// well-formed or hostile), notifies, and reads back used elements. Tests of
// the queue itself, of devices (virtio-net) and of transports (virtio-pci)
// share it.
package queuetest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/vmm/memory"
)

// Layout places one queue's rings and a data area in guest memory.
type Layout struct {
	Size  uint16 // queue size
	Desc  uint64 // descriptor table GPA
	Avail uint64 // available ring GPA
	Used  uint64 // used ring GPA
	Data  uint64 // start of the area buffers and indirect tables are allocated from
	End   uint64 // end of that area
}

// DefaultLayout is the legacy-style layout at 0x1000: descriptor table,
// available ring, used ring on the next page, then data up to memSize.
func DefaultLayout(size uint16, memSize uint64) Layout {
	desc, avail, used := queue.LegacyLayout(1, size)
	data := (used + queue.UsedRingSize(size) + 4095) &^ 4095
	return Layout{Size: size, Desc: desc, Avail: avail, Used: used, Data: data, End: memSize}
}

// NewMemory returns guest memory made of one zeroed region [0, size).
func NewMemory(size uint64) (*memory.Memory, error) {
	return memory.New(memory.Region{GPA: 0, Host: make([]byte, size)})
}

// Buffer describes one element of a chain to post.
type Buffer struct {
	Data  []byte // device-readable contents (ignored for writable buffers)
	Len   uint32 // writable length (ignored for readable buffers)
	Write bool
}

// R is a device-readable buffer holding data.
func R(data []byte) Buffer { return Buffer{Data: data} }

// W is a device-writable buffer of n bytes.
func W(n uint32) Buffer { return Buffer{Len: n, Write: true} }

// Desc is a raw descriptor, as written into a table.
type Desc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// UsedElem is one used ring entry.
type UsedElem struct {
	ID  uint32
	Len uint32
}

type seg struct {
	addr  uint64
	n     uint32
	write bool
}

type posted struct {
	descs []uint16
	segs  []seg
}

// Driver is the driver side of one split queue.
type Driver struct {
	Mem *memory.Memory
	Layout
	// EventIdx makes KickNeeded use avail_event (VIRTIO_F_EVENT_IDX).
	EventIdx bool

	next     uint64
	free     []uint16
	chains   []posted
	availIdx uint16
	lastUsed uint16
	kickOld  uint16
}

// NewDriver lays out the rings described by l in mem. The ring areas must
// be inside mem; they are zeroed.
func NewDriver(mem *memory.Memory, l Layout) (*Driver, error) {
	if l.Size == 0 || l.Size > queue.MaxSize {
		return nil, fmt.Errorf("queuetest: queue size %d", l.Size)
	}
	for _, a := range []struct{ gpa, n uint64 }{
		{l.Desc, queue.DescTableSize(l.Size)},
		{l.Avail, queue.AvailRingSize(l.Size)},
		{l.Used, queue.UsedRingSize(l.Size)},
	} {
		s, err := mem.Slice(a.gpa, a.n)
		if err != nil {
			return nil, fmt.Errorf("queuetest: ring [%#x,+%#x): %w", a.gpa, a.n, err)
		}
		clear(s)
	}
	d := &Driver{Mem: mem, Layout: l, next: l.Data, chains: make([]posted, l.Size)}
	for i := int(l.Size) - 1; i >= 0; i-- {
		d.free = append(d.free, uint16(i))
	}
	return d, nil
}

// New returns a driver for a queue of qsize entries in a fresh memory of
// memSize bytes with DefaultLayout. It fails tb on error.
func New(tb testing.TB, qsize uint16, memSize uint64) *Driver {
	tb.Helper()
	mem, err := NewMemory(memSize)
	if err != nil {
		tb.Fatalf("queuetest: %v", err)
	}
	d, err := NewDriver(mem, DefaultLayout(qsize, memSize))
	if err != nil {
		tb.Fatalf("queuetest: %v", err)
	}
	return d
}

// Configure programs q with the layout (size and ring addresses) and
// enables it.
func (d *Driver) Configure(q *queue.Queue) error {
	q.SetSize(d.Size)
	q.SetDescAddr(d.Desc)
	q.SetAvailAddr(d.Avail)
	q.SetUsedAddr(d.Used)
	return q.Enable(d.Mem)
}

// NewQueue returns a queue (max size = d.Size) configured and enabled on d,
// with features f. It fails tb on error.
func (d *Driver) NewQueue(tb testing.TB, f queue.Features) *queue.Queue {
	tb.Helper()
	q, err := queue.New(d.Size)
	if err != nil {
		tb.Fatalf("queuetest: %v", err)
	}
	q.SetFeatures(f)
	if err := d.Configure(q); err != nil {
		tb.Fatalf("queuetest: %v", err)
	}
	d.EventIdx = f.EventIdx
	return q
}

// ErrNoSpace is returned when the data area or the descriptor table is full.
var ErrNoSpace = errors.New("queuetest: out of descriptors or data space")

// Alloc reserves n bytes of the data area aligned to align (a power of two,
// 0 or 1 for none) and returns its GPA.
func (d *Driver) Alloc(n, align uint64) (uint64, error) {
	a := d.next
	if align > 1 {
		a = (a + align - 1) &^ (align - 1)
	}
	if a < d.next || a+n < a || a+n > d.End {
		return 0, ErrNoSpace
	}
	d.next = a + n
	return a, nil
}

// ResetData forgets every allocation from the data area.
func (d *Driver) ResetData() { d.next = d.Data }

func putDesc(b []byte, x Desc) {
	binary.LittleEndian.PutUint64(b[0:8], x.Addr)
	binary.LittleEndian.PutUint32(b[8:12], x.Len)
	binary.LittleEndian.PutUint16(b[12:14], x.Flags)
	binary.LittleEndian.PutUint16(b[14:16], x.Next)
}

// WriteDesc writes descriptor i of the descriptor table. i may be out of
// range of the queue only if the table is, which fails.
func (d *Driver) WriteDesc(i uint16, x Desc) error {
	s, err := d.Mem.Slice(d.Desc+queue.DescSize*uint64(i), queue.DescSize)
	if err != nil {
		return err
	}
	putDesc(s, x)
	return nil
}

// WriteTable writes descriptors at gpa (an indirect table).
func (d *Driver) WriteTable(gpa uint64, xs []Desc) error {
	s, err := d.Mem.Slice(gpa, queue.DescSize*uint64(len(xs)))
	if err != nil {
		return err
	}
	for i, x := range xs {
		putDesc(s[queue.DescSize*i:], x)
	}
	return nil
}

// AvailIdx is the driver's available index (the next ring slot).
func (d *Driver) AvailIdx() uint16 { return d.availIdx }

// SetAvailIdx writes avail idx directly (hostile tests), without a ring entry.
func (d *Driver) SetAvailIdx(v uint16) error {
	d.availIdx = v
	memory.Fence()
	return d.Mem.PutU16(d.Avail+2, v)
}

// PutRing writes ring slot (pos mod size) of the available ring without
// touching avail idx.
func (d *Driver) PutRing(pos, head uint16) error {
	return d.Mem.PutU16(d.Avail+4+2*uint64(pos%d.Size), head)
}

// PostHead exposes head in the next available ring slot and publishes the
// new avail idx (with a fence in between). It allocates nothing.
func (d *Driver) PostHead(head uint16) error {
	if err := d.PutRing(d.availIdx, head); err != nil {
		return err
	}
	return d.SetAvailIdx(d.availIdx + 1)
}

// SetAvailFlags writes the available ring flags (VIRTQ_AVAIL_F_NO_INTERRUPT).
func (d *Driver) SetAvailFlags(v uint16) error { return d.Mem.PutU16(d.Avail, v) }

// SetUsedEvent writes used_event (EVENT_IDX).
func (d *Driver) SetUsedEvent(v uint16) error {
	return d.Mem.PutU16(d.Avail+4+2*uint64(d.Size), v)
}

// UsedFlags reads the used ring flags (VIRTQ_USED_F_NO_NOTIFY).
func (d *Driver) UsedFlags() uint16 { v, _ := d.Mem.U16(d.Used); return v }

// UsedIdx reads the device's published used idx.
func (d *Driver) UsedIdx() uint16 { v, _ := d.Mem.U16(d.Used + 2); return v }

// AvailEvent reads avail_event (EVENT_IDX).
func (d *Driver) AvailEvent() uint16 {
	v, _ := d.Mem.U16(d.Used + 4 + queue.UsedElemSize*uint64(d.Size))
	return v
}

// KickNeeded reports whether the driver must notify the device for the
// chains posted since the previous call, by the device's avail_event (with
// EventIdx) or its VIRTQ_USED_F_NO_NOTIFY flag.
func (d *Driver) KickNeeded() bool {
	memory.Fence()
	old := d.kickOld
	d.kickOld = d.availIdx
	if old == d.availIdx {
		return false
	}
	if d.EventIdx {
		return queue.NeedEvent(d.AvailEvent(), d.availIdx, old)
	}
	return d.UsedFlags()&queue.UsedFNoNotify == 0
}

func (d *Driver) takeDescs(n int) ([]uint16, error) {
	if n > len(d.free) {
		return nil, ErrNoSpace
	}
	ids := make([]uint16, n)
	for i := range ids {
		ids[i] = d.free[len(d.free)-1-i]
	}
	d.free = d.free[:len(d.free)-n]
	return ids, nil
}

func (d *Driver) placeBufs(bufs []Buffer) ([]seg, error) {
	segs := make([]seg, len(bufs))
	for i, b := range bufs {
		n := b.Len
		if !b.Write {
			n = uint32(len(b.Data))
		}
		a, err := d.Alloc(uint64(n), 8)
		if err != nil {
			return nil, err
		}
		if !b.Write {
			if err := d.Mem.Write(a, b.Data); err != nil {
				return nil, err
			}
		}
		segs[i] = seg{addr: a, n: n, write: b.Write}
	}
	return segs, nil
}

func chainDescs(segs []seg, ids []uint16) []Desc {
	xs := make([]Desc, len(segs))
	for i, s := range segs {
		x := Desc{Addr: s.addr, Len: s.n}
		if s.write {
			x.Flags |= queue.DescFWrite
		}
		if i+1 < len(segs) {
			x.Flags |= queue.DescFNext
			x.Next = ids[i+1]
		}
		xs[i] = x
	}
	return xs
}

// AddChain places bufs in the data area, links them into a chain of free
// descriptors and posts it. It returns the head index.
func (d *Driver) AddChain(bufs ...Buffer) (uint16, error) {
	if len(bufs) == 0 {
		return 0, errors.New("queuetest: empty chain")
	}
	segs, err := d.placeBufs(bufs)
	if err != nil {
		return 0, err
	}
	ids, err := d.takeDescs(len(bufs))
	if err != nil {
		return 0, err
	}
	for i, x := range chainDescs(segs, ids) {
		if err := d.WriteDesc(ids[i], x); err != nil {
			return 0, err
		}
	}
	d.chains[ids[0]] = posted{descs: ids, segs: segs}
	return ids[0], d.PostHead(ids[0])
}

// AddIndirect places bufs in the data area, describes them in an indirect
// table (entries in order 0..n-1) and posts one descriptor naming it.
func (d *Driver) AddIndirect(bufs ...Buffer) (uint16, error) {
	if len(bufs) == 0 {
		return 0, errors.New("queuetest: empty chain")
	}
	segs, err := d.placeBufs(bufs)
	if err != nil {
		return 0, err
	}
	seq := make([]uint16, len(segs))
	for i := range seq {
		seq[i] = uint16(i)
	}
	table, err := d.Alloc(queue.DescSize*uint64(len(segs)), queue.DescSize)
	if err != nil {
		return 0, err
	}
	if err := d.WriteTable(table, chainDescs(segs, seq)); err != nil {
		return 0, err
	}
	ids, err := d.takeDescs(1)
	if err != nil {
		return 0, err
	}
	x := Desc{Addr: table, Len: uint32(queue.DescSize * len(segs)), Flags: queue.DescFIndirect}
	if err := d.WriteDesc(ids[0], x); err != nil {
		return 0, err
	}
	d.chains[ids[0]] = posted{descs: ids, segs: segs}
	return ids[0], d.PostHead(ids[0])
}

// PopUsed returns the next used element the device has published, if any.
// It allocates nothing and frees no descriptors (see Reclaim and Completed).
func (d *Driver) PopUsed() (UsedElem, bool) {
	idx := d.UsedIdx()
	memory.Fence()
	if idx == d.lastUsed {
		return UsedElem{}, false
	}
	off := d.Used + 4 + queue.UsedElemSize*uint64(d.lastUsed%d.Size)
	id, _ := d.Mem.U32(off)
	n, _ := d.Mem.U32(off + 4)
	d.lastUsed++
	return UsedElem{ID: id, Len: n}, true
}

// Completed returns every newly published used element and frees the
// descriptors of the chains they name.
func (d *Driver) Completed() []UsedElem {
	var out []UsedElem
	for {
		e, ok := d.PopUsed()
		if !ok {
			return out
		}
		out = append(out, e)
		if e.ID < uint32(d.Size) {
			d.Reclaim(uint16(e.ID))
		}
	}
}

// Reclaim returns the descriptors of the chain posted at head (by AddChain
// or AddIndirect) to the free list.
func (d *Driver) Reclaim(head uint16) {
	if int(head) >= len(d.chains) {
		return
	}
	p := &d.chains[head]
	for i := len(p.descs) - 1; i >= 0; i-- {
		d.free = append(d.free, p.descs[i])
	}
	p.descs = nil
}

// Written returns the first n bytes of the writable part of the chain
// posted at head, as the device left them.
func (d *Driver) Written(head uint16, n int) []byte {
	out := make([]byte, 0, n)
	for _, s := range d.chains[head].segs {
		if !s.write || len(out) == n {
			continue
		}
		k := min(uint64(s.n), uint64(n-len(out)))
		b, err := d.Mem.Slice(s.addr, k)
		if err != nil {
			break
		}
		out = append(out, b...)
	}
	return out
}

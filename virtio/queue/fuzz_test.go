package queue_test

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/rscvm/rscvm/vmm/memory"
)

// Fuzz input layout:
//
//	[0]    queue size: bit 7 set → raw size (bits 0-6, may be 0 or not a
//	       power of two); else 1 << (b % 9)
//	[1]    bit 0 EVENT_IDX, bit 1 NOTIFY_ON_EMPTY, bit 2 max 4 segments
//	[2:4]  device's last avail idx
//	[4:6]  device's used idx
//	[6:8]  operation selector seed
//	[8:]   guest memory image: the regions' contents, one after the other
//
// Guest memory: [0,0x4000) and [0x4000,0x8000) (adjacent, so buffers can
// span them), and [0x10000,0x11000) after a hole. The rings are packed from
// GPA 0: descriptor table, available ring, used ring (4-aligned).
const fuzzHdr = 8

var fuzzRegions = [][2]uint64{{0, 0x4000}, {0x4000, 0x8000}, {0x10000, 0x11000}}

func fuzzLayout(size uint16) queuetest.Layout {
	avail := queue.DescTableSize(size)
	used := (avail + queue.AvailRingSize(size) + 3) &^ 3
	data := (used + queue.UsedRingSize(size) + 15) &^ 15
	return queuetest.Layout{Size: size, Desc: 0, Avail: avail, Used: used, Data: data, End: 0x4000}
}

func fuzzSize(b byte) uint16 {
	if b&0x80 != 0 {
		return uint16(b & 0x7F)
	}
	return 1 << (b % 9)
}

func fuzzMemory(image []byte) (*memory.Memory, error) {
	var rs []memory.Region
	off := 0
	for _, r := range fuzzRegions {
		host := make([]byte, r[1]-r[0])
		if len(image) > off {
			copy(host, image[off:])
		}
		off += len(host)
		rs = append(rs, memory.Region{GPA: r[0], Host: host})
	}
	return memory.New(rs...)
}

func insideMemory(mem *memory.Memory, b []byte) bool {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	for _, r := range mem.Regions() {
		base := uintptr(unsafe.Pointer(unsafe.SliceData(r.Host)))
		if p >= base && p+uintptr(len(b)) <= base+uintptr(len(r.Host)) {
			return true
		}
	}
	return false
}

var guestErrors = []error{
	queue.ErrAvailIdx, queue.ErrDescIndex, queue.ErrChainTooLong, queue.ErrIndirect,
	queue.ErrBufferAddress, queue.ErrChainLength, queue.ErrDescOrder, queue.ErrTooManySegs,
	queue.ErrHeadInUse,
}

func isGuestError(err error) bool {
	for _, s := range guestErrors {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func runFuzzPop(t *testing.T, data []byte) {
	if len(data) < fuzzHdr {
		return
	}
	size := fuzzSize(data[0])
	flags := data[1]
	lastAvail := uint16(data[2]) | uint16(data[3])<<8
	usedIdx := uint16(data[4]) | uint16(data[5])<<8
	ops := uint32(data[6]) | uint32(data[7])<<8
	mem, err := fuzzMemory(data[fuzzHdr:])
	require.NoError(t, err)

	q, err := queue.New(256)
	require.NoError(t, err)
	q.SetFeatures(queue.Features{EventIdx: flags&1 != 0, NotifyOnEmpty: flags&2 != 0})
	maxSegs := queue.DefaultMaxSegments
	if flags&4 != 0 {
		maxSegs = 4
		q.SetMaxSegments(maxSegs)
	}
	l := fuzzLayout(size)
	q.SetSize(size)
	q.SetDescAddr(l.Desc)
	q.SetAvailAddr(l.Avail)
	q.SetUsedAddr(l.Used)
	if err := q.Enable(mem); err != nil {
		require.True(t, errors.Is(err, queue.ErrSize) || errors.Is(err, queue.ErrRingAddress), err)
		return
	}
	require.NoError(t, q.SetLastAvailIdx(lastAvail))
	require.NoError(t, q.SetUsedIdx(usedIdx))

	var held []*queue.Chain
	scratch := make([]byte, 256)
	// Each iteration pops at most one chain, so this bounds the work.
	for iter := 0; iter < 2*int(size)+4; iter++ {
		op := ops % 7
		ops = ops/7 + uint32(iter)*2654435761
		switch op {
		case 0:
			q.PublishUsed()
			_ = q.NeedsNotify()
			continue
		case 1:
			_, err := q.EnableNotification()
			if err != nil {
				require.True(t, isGuestError(err), err)
				return
			}
			q.DisableNotification()
			continue
		case 2:
			if n := len(held); n > 0 {
				// Only the most recently popped chain can be given back.
				if err := q.Unpop(held[n-1]); err != nil {
					require.ErrorIs(t, err, queue.ErrUnpopOrder)
				} else {
					held = held[:n-1]
				}
				continue
			}
		}
		c, err := q.Pop()
		if err != nil {
			require.True(t, isGuestError(err), "unexpected error %v", err)
			require.Equal(t, err, q.Err())
			_, err2 := q.Pop()
			require.Equal(t, err, err2, "broken queue stays broken")
			return
		}
		if c == nil {
			break
		}
		require.Less(t, c.Head(), size)
		bufs := append(append([][]byte{}, c.Readable()...), c.Writable()...)
		require.LessOrEqual(t, len(bufs), maxSegs)
		var rd, wr uint64
		for i, b := range bufs {
			require.NotEmpty(t, b)
			require.True(t, insideMemory(mem, b), "buffer %d outside guest memory", i)
			if i < len(c.Readable()) {
				rd += uint64(len(b))
			} else {
				wr += uint64(len(b))
			}
		}
		require.Equal(t, uint64(c.ReadableLen()), rd)
		require.Equal(t, uint64(c.WritableLen()), wr)
		require.LessOrEqual(t, rd+wr, uint64(math.MaxUint32))
		// Everything readable lies in memory, so it is at most its size.
		require.LessOrEqual(t, rd+wr, uint64(maxSegs)*mem.Size())

		if op == 3 {
			held = append(held, c) // keep it in flight for a while
			continue
		}
		n, err := io.CopyBuffer(io.Discard, c.Reader(), scratch)
		require.NoError(t, err)
		require.Equal(t, int64(c.ReadableLen()), n)
		w := c.Writer()
		_, _ = w.Write(scratch[:min(len(scratch), w.Available())])
		require.NoError(t, q.AddUsed(c, uint32(w.BytesWritten())))
	}
	for _, c := range held {
		require.NoError(t, q.AddUsed(c, 0))
	}
	q.PublishUsed()
	_ = q.NeedsNotify()
}

// fuzzSeed builds an input whose memory image holds rings prepared by the
// test driver (post), trimmed of trailing zeros.
func fuzzSeed(sizeByte, flags byte, post func(d *queuetest.Driver) error) ([]byte, error) {
	size := fuzzSize(sizeByte)
	mem, err := fuzzMemory(nil)
	if err != nil {
		return nil, err
	}
	d, err := queuetest.NewDriver(mem, fuzzLayout(size))
	if err != nil {
		return nil, err
	}
	if err := post(d); err != nil {
		return nil, err
	}
	var image []byte
	for _, r := range mem.Regions()[:2] {
		image = append(image, r.Host...)
	}
	end := len(image)
	for end > 0 && image[end-1] == 0 {
		end--
	}
	hdr := []byte{sizeByte, flags, 0, 0, 0, 0, 0x35, 0x12}
	return append(hdr, image[:end]...), nil
}

func fuzzSeeds() ([][]byte, error) {
	type seed struct {
		size, flags byte
		post        func(d *queuetest.Driver) error
	}
	direct := func(d *queuetest.Driver) error {
		if _, err := d.AddChain(queuetest.R([]byte("hdr-hdr-hdr!")), queuetest.R([]byte("payload")), queuetest.W(64)); err != nil {
			return err
		}
		_, err := d.AddChain(queuetest.W(128))
		return err
	}
	indirect := func(d *queuetest.Driver) error {
		if _, err := d.AddIndirect(queuetest.R([]byte("abc")), queuetest.W(32), queuetest.W(16)); err != nil {
			return err
		}
		_, err := d.AddChain(queuetest.R([]byte("x")))
		return err
	}
	spanning := func(d *queuetest.Driver) error {
		if err := d.WriteDesc(0, queuetest.Desc{Addr: 0x3FF0, Len: 0x20, Flags: queue.DescFNext, Next: 1}); err != nil {
			return err
		}
		if err := d.WriteDesc(1, queuetest.Desc{Addr: 0x10000, Len: 0x100, Flags: queue.DescFWrite}); err != nil {
			return err
		}
		return d.PostHead(0)
	}
	loop := func(d *queuetest.Driver) error {
		if err := d.WriteDesc(0, queuetest.Desc{Addr: 0x3000, Len: 8, Flags: queue.DescFNext, Next: 1}); err != nil {
			return err
		}
		if err := d.WriteDesc(1, queuetest.Desc{Addr: 0x3000, Len: 0, Flags: queue.DescFNext, Next: 0}); err != nil {
			return err
		}
		return d.PostHead(0)
	}
	many := func(d *queuetest.Driver) error {
		for i := 0; i < 6; i++ {
			if _, err := d.AddChain(queuetest.W(uint32(16 * (i + 1)))); err != nil {
				return err
			}
		}
		return nil
	}
	nestedIndirect := func(d *queuetest.Driver) error {
		tb, err := d.Alloc(32, 16)
		if err != nil {
			return err
		}
		if err := d.WriteTable(tb, []queuetest.Desc{
			{Addr: 0x3000, Len: 4, Flags: queue.DescFNext, Next: 1},
			{Addr: tb, Len: 32, Flags: queue.DescFIndirect},
		}); err != nil {
			return err
		}
		if err := d.WriteDesc(0, queuetest.Desc{Addr: tb, Len: 32, Flags: queue.DescFIndirect}); err != nil {
			return err
		}
		return d.PostHead(0)
	}
	seeds := []seed{
		{2, 0, direct},   // size 4
		{3, 1, direct},   // size 8, EVENT_IDX
		{3, 0, indirect}, // size 8
		{4, 5, indirect}, // size 16, EVENT_IDX, 4 segments
		{2, 2, spanning}, // NOTIFY_ON_EMPTY
		{2, 0, loop},     //
		{3, 1, many},     //
		{2, 0, nestedIndirect},
		{0x83, 0, indirect}, // raw size 3: refused
	}
	var out [][]byte
	for _, s := range seeds {
		b, err := fuzzSeed(s.size, s.flags, s.post)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	// Indexes near the wrap, and an avail idx far ahead.
	b, err := fuzzSeed(3, 1, direct)
	if err != nil {
		return nil, err
	}
	wrap := append([]byte{}, b...)
	wrap[2], wrap[3], wrap[4], wrap[5] = 0xFF, 0xFF, 0xFE, 0xFF
	out = append(out, wrap)
	return out, nil
}

// FuzzPop drives the descriptor chain walker with arbitrary guest memory,
// ring indexes and features: it must never panic or hang, every buffer it
// returns must lie inside guest memory, lengths must add up and stay below
// 2^32, and any error must be a guest-error sentinel that leaves the queue
// broken.
func FuzzPop(f *testing.F) {
	seeds, err := fuzzSeeds()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(runFuzzPop)
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzPop/seed-* from
// fuzzSeeds when RSCVM_WRITE_FUZZ_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("RSCVM_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set RSCVM_WRITE_FUZZ_CORPUS=1 to regenerate the checked-in seed corpus")
	}
	seeds, err := fuzzSeeds()
	require.NoError(t, err)
	dir := filepath.Join("testdata", "fuzz", "FuzzPop")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for i, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644))
	}
}

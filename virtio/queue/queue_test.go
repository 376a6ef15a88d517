package queue_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/rscvm/rscvm/vmm/memory"
)

const memSize = 1 << 20

func newDriver(t *testing.T, size uint16) *queuetest.Driver {
	t.Helper()
	return queuetest.New(t, size, memSize)
}

// requireBroken asserts that err wraps sentinel and that the queue is left
// broken (every later ring operation fails with the same error): the device
// would set DEVICE_NEEDS_RESET.
func requireBroken(t *testing.T, q *queue.Queue, err, sentinel error) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, sentinel)
	require.Equal(t, err, q.Err())
	c, err2 := q.Pop()
	require.Nil(t, c)
	require.Equal(t, err, err2)
	_, err2 = q.HasAvailable()
	require.Equal(t, err, err2)
	_, err2 = q.EnableNotification()
	require.Equal(t, err, err2)
	require.False(t, q.NeedsNotify())
}

func TestNewMaxSize(t *testing.T) {
	for _, n := range []uint16{0, 3, 100, 65535} {
		_, err := queue.New(n)
		require.ErrorIs(t, err, queue.ErrSize, "max %d", n)
	}
	q, err := queue.New(queue.MaxSize)
	require.NoError(t, err)
	require.Equal(t, uint16(queue.MaxSize), q.MaxSize())
	c := q.Config()
	require.Equal(t, queue.Config{Size: queue.MaxSize, Vector: queue.NoVector}, c)
	require.False(t, q.Ready())
}

func TestLegacyLayout(t *testing.T) {
	desc, avail, used := queue.LegacyLayout(2, 256)
	require.Equal(t, uint64(0x2000), desc)
	require.Equal(t, uint64(0x2000+4096), avail)
	require.Equal(t, uint64(0x2000+8192), used) // 4096+6+512 rounded up
	require.Equal(t, uint64(16*256), queue.DescTableSize(256))
	require.Equal(t, uint64(6+2*256), queue.AvailRingSize(256))
	require.Equal(t, uint64(6+8*256), queue.UsedRingSize(256))
}

func TestPopDirectChain(t *testing.T) {
	d := newDriver(t, 16)
	q := d.NewQueue(t, queue.Features{})

	c, err := q.Pop()
	require.NoError(t, err)
	require.Nil(t, c, "empty ring")

	hdr := []byte("0123456789ab")
	payload := bytes.Repeat([]byte{0x5a}, 100)
	head, err := d.AddChain(queuetest.R(hdr), queuetest.R(payload), queuetest.W(64), queuetest.W(64))
	require.NoError(t, err)

	c, err = q.Pop()
	require.NoError(t, err)
	require.NotNil(t, c)
	require.Equal(t, head, c.Head())
	require.Equal(t, uint32(112), c.ReadableLen())
	require.Equal(t, uint32(128), c.WritableLen())
	require.Len(t, c.Readable(), 2)
	require.Len(t, c.Writable(), 2)
	require.Equal(t, 1, q.InFlight())

	r := c.Reader()
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, append(append([]byte{}, hdr...), payload...), got)
	require.Equal(t, 112, r.Consumed())

	w := c.Writer()
	msg := bytes.Repeat([]byte{7}, 100)
	n, err := w.Write(msg)
	require.NoError(t, err)
	require.Equal(t, 100, n)
	require.Equal(t, 28, w.Available())
	require.NoError(t, q.AddUsed(c, uint32(w.BytesWritten())))
	require.Equal(t, uint16(0), d.UsedIdx(), "not published before PublishUsed")
	q.PublishUsed()
	require.Equal(t, uint16(1), d.UsedIdx())
	require.Equal(t, []queuetest.UsedElem{{ID: uint32(head), Len: 100}}, d.Completed())
	require.Equal(t, msg, d.Written(head, 100))
	require.Equal(t, 0, q.InFlight())

	c, err = q.Pop()
	require.NoError(t, err)
	require.Nil(t, c)
}

func TestIndirectChain(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	head, err := d.AddIndirect(queuetest.R([]byte("abc")), queuetest.R([]byte("defg")), queuetest.W(10))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)
	require.Equal(t, head, c.Head())
	require.Equal(t, uint32(7), c.ReadableLen())
	require.Equal(t, uint32(10), c.WritableLen())
	buf := make([]byte, 7)
	require.NoError(t, c.Reader().ReadFull(buf))
	require.Equal(t, "abcdefg", string(buf))
	require.NoError(t, q.Push(c, 0))
	require.Equal(t, []queuetest.UsedElem{{ID: uint32(head)}}, d.Completed())
}

// The spec requires devices to handle normal descriptors followed by one
// indirect descriptor, and to ignore WRITE on the descriptor naming a table.
func TestDirectThenIndirect(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	a, err := d.Alloc(16, 8)
	require.NoError(t, err)
	require.NoError(t, d.Mem.Write(a, []byte("head")))
	b, err := d.Alloc(32, 8)
	require.NoError(t, err)
	table, err := d.Alloc(32, 16)
	require.NoError(t, err)
	require.NoError(t, d.WriteTable(table, []queuetest.Desc{
		{Addr: a + 4, Len: 4, Flags: queue.DescFNext, Next: 1},
		{Addr: b, Len: 32, Flags: queue.DescFWrite},
	}))
	require.NoError(t, d.Mem.Write(a+4, []byte("tail")))
	require.NoError(t, d.WriteDesc(3, queuetest.Desc{Addr: a, Len: 4, Flags: queue.DescFNext, Next: 5}))
	require.NoError(t, d.WriteDesc(5, queuetest.Desc{Addr: table, Len: 32, Flags: queue.DescFIndirect | queue.DescFWrite}))
	require.NoError(t, d.PostHead(3))
	c, err := q.Pop()
	require.NoError(t, err)
	require.Equal(t, uint16(3), c.Head())
	got := make([]byte, 8)
	require.NoError(t, c.Reader().ReadFull(got))
	require.Equal(t, "headtail", string(got))
	require.Equal(t, uint32(32), c.WritableLen())
}

func TestHasAvailable(t *testing.T) {
	d := newDriver(t, 4)
	q := d.NewQueue(t, queue.Features{})
	ok, err := q.HasAvailable()
	require.NoError(t, err)
	require.False(t, ok)
	_, err = d.AddChain(queuetest.W(8))
	require.NoError(t, err)
	ok, err = q.HasAvailable()
	require.NoError(t, err)
	require.True(t, ok)

	var nq queue.Queue
	_, err = nq.HasAvailable()
	require.ErrorIs(t, err, queue.ErrNotReady)
	_, err = nq.Pop()
	require.ErrorIs(t, err, queue.ErrNotReady)
}

func TestReaderWriter(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	_, err := d.AddChain(queuetest.R([]byte("abc")), queuetest.R([]byte("defgh")),
		queuetest.W(3), queuetest.W(5), queuetest.W(2))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)

	r := c.Reader()
	require.Equal(t, 8, r.Available())
	two := make([]byte, 2)
	require.NoError(t, r.ReadFull(two))
	require.Equal(t, "ab", string(two))
	require.Equal(t, [][]byte{[]byte("c"), []byte("defgh")}, r.Slices(nil))
	require.Equal(t, 2, r.Skip(2))
	big := make([]byte, 10)
	require.ErrorIs(t, r.ReadFull(big), queue.ErrShortChain)
	require.Equal(t, 4, r.Available(), "a failed ReadFull consumes nothing")
	n, err := r.Read(big)
	require.NoError(t, err)
	require.Equal(t, "efgh", string(big[:n]))
	n, err = r.Read(big)
	require.Equal(t, io.EOF, err)
	require.Zero(t, n)
	require.Nil(t, r.Slices(nil))
	require.Zero(t, r.Skip(5))

	w := c.Writer()
	require.Equal(t, 10, w.Available())
	_, err = w.Write([]byte("XY"))
	require.NoError(t, err)
	sl := w.Slices(nil)
	require.Len(t, sl, 3)
	require.Len(t, sl[0], 1)
	copy(sl[0], "Z")
	copy(sl[1], "12345")
	require.Equal(t, 6, w.Advance(6))
	require.Equal(t, 8, w.BytesWritten())
	require.NoError(t, w.WriteAt([]byte("!!"), 2)) // straddles buffers 0 and 1
	require.ErrorIs(t, w.WriteAt([]byte("abc"), 8), queue.ErrShortChain)
	require.ErrorIs(t, w.WriteAt([]byte("a"), -1), queue.ErrShortChain)
	require.NoError(t, w.WriteAt(nil, 10))
	n, err = w.Write([]byte("pqr"))
	require.Equal(t, io.ErrShortWrite, err)
	require.Equal(t, 2, n)
	require.Zero(t, w.Available())
	require.Nil(t, w.Slices(nil))
	require.Zero(t, w.Advance(1))
	require.NoError(t, q.Push(c, uint32(w.BytesWritten())))
	require.Equal(t, "XY!!2345pq", string(d.Written(c.Head(), 10)))
}

func TestBatchPublish(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	var chains []*queue.Chain
	for i := 0; i < 3; i++ {
		_, err := d.AddChain(queuetest.W(4))
		require.NoError(t, err)
		c, err := q.Pop()
		require.NoError(t, err)
		chains = append(chains, c)
	}
	for i, c := range chains {
		require.NoError(t, q.AddUsed(c, uint32(i)))
	}
	require.Equal(t, uint16(0), d.UsedIdx())
	require.Equal(t, uint16(3), q.UsedIdx())
	q.PublishUsed()
	require.Equal(t, uint16(3), d.UsedIdx())
	used := d.Completed()
	require.Len(t, used, 3)
	for i, e := range used {
		require.Equal(t, uint32(chains[i].Head()), e.ID)
		require.Equal(t, uint32(i), e.Len)
	}
	q.PublishUsed() // nothing new: no change
	require.Equal(t, uint16(3), d.UsedIdx())
}

// More than queue-size unpublished used elements would overwrite entries the
// driver has not seen: AddUsed publishes the earlier ones first.
func TestAddUsedAutoPublish(t *testing.T) {
	d := newDriver(t, 4)
	q := d.NewQueue(t, queue.Features{})
	var heads [4]uint16
	for i := range heads {
		h, err := d.AddChain(queuetest.W(4))
		require.NoError(t, err)
		heads[i] = h
		c, err := q.Pop()
		require.NoError(t, err)
		require.NoError(t, q.AddUsed(c, 1))
	}
	require.Equal(t, uint16(0), d.UsedIdx())
	require.NoError(t, d.PostHead(heads[0]))
	c, err := q.Pop()
	require.NoError(t, err)
	require.NoError(t, q.AddUsed(c, 2))
	require.Equal(t, uint16(4), d.UsedIdx(), "first batch published before overwriting slot 0")
	require.Len(t, d.Completed(), 4)
	q.PublishUsed()
	require.Equal(t, []queuetest.UsedElem{{ID: uint32(heads[0]), Len: 2}}, d.Completed())
}

func TestAddUsedMisuse(t *testing.T) {
	d := newDriver(t, 4)
	q := d.NewQueue(t, queue.Features{})
	_, err := d.AddChain(queuetest.R([]byte("x")), queuetest.W(4))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)
	require.ErrorIs(t, q.AddUsed(c, 5), queue.ErrUsedLen)
	require.ErrorIs(t, q.AddUsed(nil, 0), queue.ErrStaleChain)
	require.NoError(t, q.AddUsed(c, 4))
	require.ErrorIs(t, q.AddUsed(c, 4), queue.ErrStaleChain, "returned twice")

	other := d.NewQueue(t, queue.Features{})
	_, err = d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	c, err = q.Pop()
	require.NoError(t, err)
	require.ErrorIs(t, other.AddUsed(c, 0), queue.ErrStaleChain, "chain of another queue")
	require.Nil(t, q.Err(), "device misuse does not break the queue")
}

func TestUnpop(t *testing.T) {
	d := newDriver(t, 4)
	q := d.NewQueue(t, queue.Features{})
	for i := 0; i < 2; i++ {
		_, err := d.AddChain(queuetest.W(4))
		require.NoError(t, err)
	}
	a, err := q.Pop()
	require.NoError(t, err)
	b, err := q.Pop()
	require.NoError(t, err)
	require.ErrorIs(t, q.Unpop(a), queue.ErrUnpopOrder)
	require.NoError(t, q.Unpop(b))
	require.NoError(t, q.Unpop(a))
	require.ErrorIs(t, q.Unpop(a), queue.ErrStaleChain)
	require.Equal(t, uint16(0), q.LastAvailIdx())
	require.Zero(t, q.InFlight())
	a2, err := q.Pop()
	require.NoError(t, err)
	require.Equal(t, a.Head(), a2.Head())
}

func TestRingBase(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	require.NoError(t, d.SetAvailIdx(1000))
	require.NoError(t, q.SetLastAvailIdx(999))
	require.NoError(t, q.SetUsedIdx(999))
	require.NoError(t, d.PutRing(999, 2))
	require.NoError(t, d.WriteDesc(2, queuetest.Desc{Addr: d.Data, Len: 8, Flags: queue.DescFWrite}))
	c, err := q.Pop()
	require.NoError(t, err)
	require.Equal(t, uint16(2), c.Head())
	require.Equal(t, uint16(1000), q.LastAvailIdx())
	require.ErrorIs(t, q.SetLastAvailIdx(0), queue.ErrInFlight)
	require.ErrorIs(t, q.SetUsedIdx(0), queue.ErrInFlight)
	require.NoError(t, q.Push(c, 8))
	require.Equal(t, uint16(1000), d.UsedIdx())
	require.Equal(t, uint16(1000), q.UsedIdx())
}

// Per-queue reset (RING_RESET) and device reset: everything returns to the
// power-on state, chains from before are stale, and the queue can be
// configured again with a different layout.
func TestReset(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{EventIdx: true})
	q.SetVector(3)
	_, err := d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)

	q.Reset()
	require.False(t, q.Ready())
	require.Equal(t, queue.Config{Size: 8, Vector: queue.NoVector}, q.Config())
	require.Equal(t, queue.Features{}, q.Features())
	require.Zero(t, q.LastAvailIdx())
	require.Zero(t, q.UsedIdx())
	require.Zero(t, q.InFlight())
	require.Nil(t, q.Err())
	require.ErrorIs(t, q.AddUsed(c, 0), queue.ErrStaleChain)

	// Reconfigure at a different place with a smaller size.
	mem := d.Mem
	l := queuetest.Layout{Size: 4, Desc: 0x40000, Avail: 0x40100, Used: 0x40200, Data: 0x41000, End: 0x50000}
	d2, err := queuetest.NewDriver(mem, l)
	require.NoError(t, err)
	require.NoError(t, d2.Configure(q))
	require.Equal(t, uint16(4), q.Size())
	_, err = d2.AddChain(queuetest.W(4))
	require.NoError(t, err)
	c, err = q.Pop()
	require.NoError(t, err)
	require.NoError(t, q.Push(c, 4))
	require.Len(t, d2.Completed(), 1)

	// A broken queue is repaired by reset.
	require.NoError(t, d2.SetAvailIdx(100))
	_, err = q.Pop()
	require.ErrorIs(t, err, queue.ErrAvailIdx)
	q.Reset()
	require.Nil(t, q.Err())
}

func TestSetMaxSegments(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	q.SetMaxSegments(0) // raised to 1
	_, err := d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)
	require.NoError(t, q.Push(c, 0))
	q.SetMaxSegments(2)
	_, err = d.AddChain(queuetest.W(4), queuetest.W(4), queuetest.W(4))
	require.NoError(t, err)
	_, err = q.Pop()
	requireBroken(t, q, err, queue.ErrTooManySegs)
}

// Buffers spanning two adjacent regions are split; chain errors carry the
// failing descriptor.
func TestAdjacentRegions(t *testing.T) {
	mem, err := memory.New(
		memory.Region{GPA: 0, Host: make([]byte, 0x10000)},
		memory.Region{GPA: 0x10000, Host: make([]byte, 0x10000)},
	)
	require.NoError(t, err)
	d, err := queuetest.NewDriver(mem, queuetest.DefaultLayout(8, 0x20000))
	require.NoError(t, err)
	q := d.NewQueue(t, queue.Features{})
	require.NoError(t, mem.Write(0xFFF0, bytes.Repeat([]byte{1}, 16)))
	require.NoError(t, mem.Write(0x10000, bytes.Repeat([]byte{2}, 16)))
	require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: 0xFFF0, Len: 32}))
	require.NoError(t, d.PostHead(0))
	c, err := q.Pop()
	require.NoError(t, err)
	require.Len(t, c.Readable(), 2)
	got := make([]byte, 32)
	require.NoError(t, c.Reader().ReadFull(got))
	require.Equal(t, append(bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 16)...), got)
}

func TestChainErrorMessage(t *testing.T) {
	d := newDriver(t, 4)
	q := d.NewQueue(t, queue.Features{})
	require.NoError(t, d.WriteDesc(1, queuetest.Desc{Addr: 1 << 40, Len: 4}))
	require.NoError(t, d.PostHead(1))
	_, err := q.Pop()
	var ce *queue.ChainError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, uint16(1), ce.Head)
	require.Equal(t, uint32(1), ce.Desc)
	require.False(t, ce.Indirect)
	require.Contains(t, err.Error(), "chain at head 1, descriptor table entry 1")
	requireBroken(t, q, err, queue.ErrBufferAddress)
}

// Chains with unusually many buffers do not keep their buffer lists after
// they are returned, and are popped correctly again.
func TestLargeChainReuse(t *testing.T) {
	d := queuetest.New(t, 8, 4<<20)
	q := d.NewQueue(t, queue.Features{})
	bufs := make([]queuetest.Buffer, 300)
	for i := range bufs {
		bufs[i] = queuetest.W(2)
	}
	head, err := d.AddIndirect(bufs...)
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		c, err := q.Pop()
		require.NoError(t, err)
		require.Len(t, c.Writable(), 300)
		require.Equal(t, uint32(600), c.WritableLen())
		if i == 1 {
			require.NoError(t, q.Unpop(c))
		} else {
			require.NoError(t, q.Push(c, 600))
			require.NoError(t, d.PostHead(head))
		}
	}
}

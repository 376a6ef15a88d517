package queue_test

// Tests named after the malicious-guest checklist (shared/docs/virtio-pci-qemu.md
// §7.3) items that concern virtqueues. Each asserts a defined outcome: the
// operation succeeds with a bounded result, or it fails with a sentinel
// error and leaves the queue broken (the device sets DEVICE_NEEDS_RESET).
// None may panic or loop.

import (
	"bytes"
	"math"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/rscvm/rscvm/vmm/memory"
)

// §7.3 item 2: queue_size 0, larger than max, or not a power of two.
func TestChecklist02_QueueSize(t *testing.T) {
	d := newDriver(t, 256)
	for _, size := range []uint16{0, 3, 100, 255, 512, 1024, 32768, 65535} {
		q, err := queue.New(256)
		require.NoError(t, err)
		require.True(t, q.SetSize(size))
		require.Equal(t, size, q.Config().Size, "the register reads back what was written")
		q.SetDescAddr(d.Desc)
		q.SetAvailAddr(d.Avail)
		q.SetUsedAddr(d.Used)
		require.ErrorIs(t, q.Enable(d.Mem), queue.ErrSize, "size %d", size)
		require.False(t, q.Ready())
		require.False(t, q.Config().Ready)
		_, err = q.Pop()
		require.ErrorIs(t, err, queue.ErrNotReady)
	}
	for _, size := range []uint16{1, 2, 128, 256} {
		q, err := queue.New(256)
		require.NoError(t, err)
		q.SetSize(size)
		q.SetDescAddr(d.Desc)
		q.SetAvailAddr(d.Avail)
		q.SetUsedAddr(d.Used)
		require.NoError(t, q.Enable(d.Mem), "size %d", size)
	}
	require.ErrorIs(t, (&queue.Queue{}).Enable(nil), queue.ErrRingAddress)
}

// §7.3 item 3: registers changed after queue_enable are ignored.
func TestChecklist03_RegistersLatched(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	before := q.Config()
	require.True(t, before.Ready)
	require.False(t, q.SetSize(4))
	require.False(t, q.SetDescAddr(0x999000))
	require.False(t, q.SetAvailAddr(0x999000))
	require.False(t, q.SetUsedAddr(0x999000))
	require.Equal(t, before, q.Config())
	require.NoError(t, q.Enable(d.Mem), "enabling again is a no-op")
	require.Equal(t, uint16(8), q.Size())
	// The queue still works on the latched layout.
	_, err := d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)
	require.NoError(t, q.Push(c, 4))
	require.Len(t, d.Completed(), 1)
	// The vector is not latched (the transport validates it).
	q.SetVector(2)
	require.Equal(t, uint16(2), q.Config().Vector)
}

// §7.3 item 4: ring addresses outside RAM, unaligned, straddling regions, or
// in a hole (where MMIO lives); trailing EVENT_IDX fields included.
func TestChecklist04_RingAddresses(t *testing.T) {
	const size = 16
	mem, err := memory.New(
		memory.Region{GPA: 0, Host: make([]byte, 0x10000)},
		memory.Region{GPA: 0x10000, Host: make([]byte, 0x10000)}, // adjacent
		memory.Region{GPA: 0x100000, Host: make([]byte, 0x1000)}, // after a hole
	)
	require.NoError(t, err)
	good := queue.Config{Size: size, Desc: 0x1000, Avail: 0x2000, Used: 0x3000}
	cases := []struct {
		name string
		mod  func(*queue.Config)
	}{
		{"desc unaligned", func(c *queue.Config) { c.Desc = 0x1008 }},
		{"avail unaligned", func(c *queue.Config) { c.Avail = 0x2001 }},
		{"used unaligned", func(c *queue.Config) { c.Used = 0x3002 }},
		{"desc outside RAM", func(c *queue.Config) { c.Desc = 0x200000 }},
		{"desc in hole (MMIO)", func(c *queue.Config) { c.Desc = 0xC0000000 }},
		{"avail outside RAM", func(c *queue.Config) { c.Avail = 0x20000 }},
		{"used outside RAM", func(c *queue.Config) { c.Used = 1 << 40 }},
		{"desc straddles regions", func(c *queue.Config) { c.Desc = 0x10000 - 0x80 }},
		{"avail straddles regions", func(c *queue.Config) { c.Avail = 0x10000 - 0x10 }},
		{"used straddles regions", func(c *queue.Config) { c.Used = 0x10000 - 0x40 }},
		// avail ring ends 2 bytes short of the used_event field.
		{"used_event outside", func(c *queue.Config) { c.Avail = 0x101000 - (4 + 2*size) }},
		// used ring ends 2 bytes short of the avail_event field.
		{"avail_event outside", func(c *queue.Config) { c.Used = 0x101000 - (4 + 8*size) }},
		{"desc wraps", func(c *queue.Config) { c.Desc = math.MaxUint64 - 0xF }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			q, err := queue.New(256)
			require.NoError(t, err)
			q.SetSize(cfg.Size)
			q.SetDescAddr(cfg.Desc)
			q.SetAvailAddr(cfg.Avail)
			q.SetUsedAddr(cfg.Used)
			require.ErrorIs(t, q.Enable(mem), queue.ErrRingAddress)
			require.False(t, q.Ready())
		})
	}
	// Exactly at the end of a region is fine.
	q, err := queue.New(256)
	require.NoError(t, err)
	q.SetSize(size)
	q.SetDescAddr(0x101000 - 16*size)
	q.SetAvailAddr(0x100000)
	q.SetUsedAddr(0x101000 - (6 + 8*size) - 2) // 4-aligned
	require.NoError(t, q.Enable(mem))
}

// §7.3 item 7: avail.idx jumping more than the queue size ahead (or going
// backwards), compared in wrapping 16-bit arithmetic.
func TestChecklist07_AvailIdxJump(t *testing.T) {
	t.Run("exactly size ahead is fine", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		for i := 0; i < 8; i++ {
			require.NoError(t, d.WriteDesc(uint16(i), queuetest.Desc{Addr: d.Data, Len: 1}))
			require.NoError(t, d.PutRing(uint16(i), uint16(i)))
		}
		require.NoError(t, d.SetAvailIdx(8))
		for i := 0; i < 8; i++ {
			c, err := q.Pop()
			require.NoError(t, err)
			require.NotNil(t, c)
		}
	})
	for _, tc := range []struct {
		name      string
		base, idx uint16
	}{
		{"size+1 ahead", 0, 9},
		{"far ahead", 0, 0x8000},
		{"backwards", 100, 99},
		{"across the wrap", 0xFFFC, 5}, // 9 ahead
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDriver(t, 8)
			q := d.NewQueue(t, queue.Features{})
			require.NoError(t, q.SetLastAvailIdx(tc.base))
			require.NoError(t, d.SetAvailIdx(tc.idx))
			_, err := q.Pop()
			requireBroken(t, q, err, queue.ErrAvailIdx)
		})
	}
	t.Run("wrap within size is fine", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		require.NoError(t, q.SetLastAvailIdx(0xFFFE))
		require.NoError(t, d.SetAvailIdx(0xFFFE))
		for i := 0; i < 5; i++ {
			_, err := d.AddChain(queuetest.W(4))
			require.NoError(t, err)
			c, err := q.Pop()
			require.NoError(t, err)
			require.NoError(t, q.Push(c, 4))
		}
		require.Equal(t, uint16(3), q.LastAvailIdx())
	})
	t.Run("detected by EnableNotification too", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		require.NoError(t, d.SetAvailIdx(200))
		_, err := q.EnableNotification()
		requireBroken(t, q, err, queue.ErrAvailIdx)
	})
}

// §7.3 item 8: head index or next ≥ queue size.
func TestChecklist08_IndexOutOfRange(t *testing.T) {
	t.Run("head", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		require.NoError(t, d.PostHead(8))
		_, err := q.Pop()
		requireBroken(t, q, err, queue.ErrDescIndex)
	})
	t.Run("head 0xFFFF", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		require.NoError(t, d.PostHead(0xFFFF))
		_, err := q.Pop()
		requireBroken(t, q, err, queue.ErrDescIndex)
	})
	t.Run("next", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: 8}))
		require.NoError(t, d.PostHead(0))
		_, err := q.Pop()
		requireBroken(t, q, err, queue.ErrDescIndex)
	})
	t.Run("indirect next beyond table", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		table, err := d.Alloc(32, 16)
		require.NoError(t, err)
		require.NoError(t, d.WriteTable(table, []queuetest.Desc{
			{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: 2}, // table has 2 entries
			{Addr: d.Data, Len: 4},
		}))
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: table, Len: 32, Flags: queue.DescFIndirect}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrDescIndex)
	})
}

// §7.3 item 9: descriptor loops, including loops through the whole table.
func TestChecklist09_Loops(t *testing.T) {
	t.Run("self loop", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		require.NoError(t, d.WriteDesc(3, queuetest.Desc{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: 3}))
		require.NoError(t, d.PostHead(3))
		_, err := q.Pop()
		requireBroken(t, q, err, queue.ErrChainTooLong)
	})
	t.Run("whole table", func(t *testing.T) {
		d := newDriver(t, 256)
		q := d.NewQueue(t, queue.Features{})
		for i := 0; i < 256; i++ {
			require.NoError(t, d.WriteDesc(uint16(i), queuetest.Desc{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: uint16((i + 1) % 256)}))
		}
		require.NoError(t, d.PostHead(17))
		_, err := q.Pop()
		requireBroken(t, q, err, queue.ErrChainTooLong)
	})
	t.Run("chain of exactly queue size is fine", func(t *testing.T) {
		d := newDriver(t, 16)
		q := d.NewQueue(t, queue.Features{})
		for i := 0; i < 16; i++ {
			x := queuetest.Desc{Addr: d.Data + uint64(i), Len: 1, Flags: queue.DescFNext, Next: uint16(i + 1)}
			if i == 15 {
				x.Flags = 0
			}
			require.NoError(t, d.WriteDesc(uint16(i), x))
		}
		require.NoError(t, d.PostHead(0))
		c, err := q.Pop()
		require.NoError(t, err)
		require.Len(t, c.Readable(), 16)
	})
	t.Run("indirect loop", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		table, err := d.Alloc(64, 16)
		require.NoError(t, err)
		require.NoError(t, d.WriteTable(table, []queuetest.Desc{
			{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: 1},
			{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: 2},
			{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: 3},
			{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: 1},
		}))
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: table, Len: 64, Flags: queue.DescFIndirect}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrChainTooLong)
	})
	t.Run("huge indirect table of zero-length self loops is bounded", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		const n = queue.MaxIndirectEntries
		table, err := d.Alloc(16*n, 16)
		if err != nil {
			d = queuetest.New(t, 8, 4<<20)
			q = d.NewQueue(t, queue.Features{})
			table, err = d.Alloc(16*n, 16)
			require.NoError(t, err)
		}
		xs := make([]queuetest.Desc, n)
		for i := range xs {
			xs[i] = queuetest.Desc{Flags: queue.DescFNext, Next: uint16(i + 1)} // wraps to 0 at the end
		}
		require.NoError(t, d.WriteTable(table, xs))
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: table, Len: 16 * n, Flags: queue.DescFIndirect}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrChainTooLong)
	})
}

// §7.3 item 10: zero-length descriptors are tolerated (skipped) without
// looping.
func TestChecklist10_ZeroLength(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	a, err := d.Alloc(8, 8)
	require.NoError(t, err)
	require.NoError(t, d.Mem.Write(a, []byte("data")))
	// zero-length readable (bogus address, never looked at), data, zero-length
	// writable, writable.
	require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: 1 << 50, Len: 0, Flags: queue.DescFNext, Next: 1}))
	require.NoError(t, d.WriteDesc(1, queuetest.Desc{Addr: a, Len: 4, Flags: queue.DescFNext, Next: 2}))
	require.NoError(t, d.WriteDesc(2, queuetest.Desc{Addr: 0, Len: 0, Flags: queue.DescFNext | queue.DescFWrite, Next: 3}))
	require.NoError(t, d.WriteDesc(3, queuetest.Desc{Addr: a + 4, Len: 4, Flags: queue.DescFWrite}))
	require.NoError(t, d.PostHead(0))
	c, err := q.Pop()
	require.NoError(t, err)
	require.Len(t, c.Readable(), 1)
	require.Len(t, c.Writable(), 1)
	require.Equal(t, uint32(4), c.ReadableLen())
	require.NoError(t, q.Push(c, 0))

	// A chain made only of zero-length descriptors is a valid empty chain.
	require.NoError(t, d.WriteDesc(4, queuetest.Desc{Flags: queue.DescFNext, Next: 5}))
	require.NoError(t, d.WriteDesc(5, queuetest.Desc{Flags: queue.DescFWrite}))
	require.NoError(t, d.PostHead(4))
	c, err = q.Pop()
	require.NoError(t, err)
	require.Empty(t, c.Readable())
	require.Empty(t, c.Writable())
	require.Zero(t, c.ReadableLen()+c.WritableLen())
	require.NoError(t, q.Push(c, 0))

	// A loop of zero-length descriptors is still a loop.
	require.NoError(t, d.WriteDesc(6, queuetest.Desc{Flags: queue.DescFNext, Next: 7}))
	require.NoError(t, d.WriteDesc(7, queuetest.Desc{Flags: queue.DescFNext, Next: 6}))
	require.NoError(t, d.PostHead(6))
	_, err = q.Pop()
	requireBroken(t, q, err, queue.ErrChainTooLong)
}

// §7.3 item 11: addr+len overflowing 64 bits, crossing a memory hole, and a
// chain totalling more than 2^32 bytes.
func TestChecklist11_AddressOverflow(t *testing.T) {
	for _, tc := range []struct {
		name string
		x    queuetest.Desc
	}{
		{"wraps 64 bits", queuetest.Desc{Addr: math.MaxUint64 - 3, Len: 16}},
		{"outside RAM", queuetest.Desc{Addr: memSize, Len: 1}},
		{"ends past RAM", queuetest.Desc{Addr: memSize - 4, Len: 8}},
		{"MMIO hole", queuetest.Desc{Addr: 0xFEE00000, Len: 4, Flags: queue.DescFWrite}},
		{"huge length", queuetest.Desc{Addr: 0x1000, Len: math.MaxUint32}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDriver(t, 8)
			q := d.NewQueue(t, queue.Features{})
			require.NoError(t, d.WriteDesc(0, tc.x))
			require.NoError(t, d.PostHead(0))
			_, err := q.Pop()
			requireBroken(t, q, err, queue.ErrBufferAddress)
		})
	}
	t.Run("crosses a hole between regions", func(t *testing.T) {
		mem, err := memory.New(
			memory.Region{GPA: 0, Host: make([]byte, 0x10000)},
			memory.Region{GPA: 0x11000, Host: make([]byte, 0x1000)},
		)
		require.NoError(t, err)
		d, err := queuetest.NewDriver(mem, queuetest.DefaultLayout(8, 0x10000))
		require.NoError(t, err)
		q := d.NewQueue(t, queue.Features{})
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: 0xFF00, Len: 0x1200}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrBufferAddress)
	})
	t.Run("chain over 4 GiB", func(t *testing.T) {
		// 4 GiB of address space, never touched, so it costs no RAM.
		const n = 4 << 30
		host, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE,
			syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|syscall.MAP_NORESERVE)
		if err != nil {
			t.Skipf("cannot reserve 4 GiB of address space: %v", err)
		}
		defer func() { _ = syscall.Munmap(host) }()
		mem, err := memory.New(memory.Region{GPA: 0, Host: host})
		require.NoError(t, err)
		d, err := queuetest.NewDriver(mem, queuetest.DefaultLayout(8, n))
		require.NoError(t, err)
		q := d.NewQueue(t, queue.Features{})
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: 0x10000, Len: 0xFFFF0000, Flags: queue.DescFNext, Next: 1}))
		require.NoError(t, d.WriteDesc(1, queuetest.Desc{Addr: 0x100000, Len: 0x10000, Flags: queue.DescFWrite}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrChainLength)

		// Exactly 2^32-1 bytes is allowed.
		q.Reset()
		require.NoError(t, d.Configure(q))
		require.NoError(t, q.SetLastAvailIdx(d.AvailIdx()))
		require.NoError(t, d.WriteDesc(1, queuetest.Desc{Addr: 0x100000, Len: 0xFFFF, Flags: queue.DescFWrite}))
		require.NoError(t, d.PostHead(0))
		c, err := q.Pop()
		require.NoError(t, err)
		require.Equal(t, uint64(math.MaxUint32), uint64(c.ReadableLen())+uint64(c.WritableLen()))
	})
}

// §7.3 item 12: device-readable descriptors after writable ones, and more
// buffers than the segment limit.
func TestChecklist12_OrderAndSegments(t *testing.T) {
	t.Run("readable after writable", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: d.Data, Len: 4, Flags: queue.DescFNext | queue.DescFWrite, Next: 1}))
		require.NoError(t, d.WriteDesc(1, queuetest.Desc{Addr: d.Data, Len: 4}))
		require.NoError(t, d.PostHead(0))
		_, err := q.Pop()
		requireBroken(t, q, err, queue.ErrDescOrder)
	})
	t.Run("readable after writable in indirect table", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		table, err := d.Alloc(32, 16)
		require.NoError(t, err)
		require.NoError(t, d.WriteTable(table, []queuetest.Desc{
			{Addr: d.Data, Len: 4, Flags: queue.DescFNext | queue.DescFWrite, Next: 1},
			{Addr: d.Data, Len: 4},
		}))
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: table, Len: 32, Flags: queue.DescFIndirect}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrDescOrder)
	})
	t.Run("writable direct part then readable indirect part", func(t *testing.T) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		table, err := d.Alloc(16, 16)
		require.NoError(t, err)
		require.NoError(t, d.WriteTable(table, []queuetest.Desc{{Addr: d.Data, Len: 4}}))
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: d.Data, Len: 4, Flags: queue.DescFNext | queue.DescFWrite, Next: 1}))
		require.NoError(t, d.WriteDesc(1, queuetest.Desc{Addr: table, Len: 16, Flags: queue.DescFIndirect}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrDescOrder)
	})
	t.Run("more segments than the limit", func(t *testing.T) {
		d := queuetest.New(t, 8, 4<<20)
		q := d.NewQueue(t, queue.Features{})
		const n = queue.DefaultMaxSegments + 1
		table, err := d.Alloc(16*n, 16)
		require.NoError(t, err)
		xs := make([]queuetest.Desc, n)
		for i := range xs {
			xs[i] = queuetest.Desc{Addr: d.Data, Len: 1, Flags: queue.DescFNext, Next: uint16(i + 1)}
		}
		xs[n-1].Flags = 0
		require.NoError(t, d.WriteTable(table, xs))
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: table, Len: 16 * n, Flags: queue.DescFIndirect}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrTooManySegs)
	})
	t.Run("segment limit counts region splits", func(t *testing.T) {
		mem, err := memory.New(
			memory.Region{GPA: 0, Host: make([]byte, 0x10000)},
			memory.Region{GPA: 0x10000, Host: make([]byte, 0x10000)},
		)
		require.NoError(t, err)
		d, err := queuetest.NewDriver(mem, queuetest.DefaultLayout(8, 0x20000))
		require.NoError(t, err)
		q := d.NewQueue(t, queue.Features{})
		q.SetMaxSegments(1)
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: 0xFFF0, Len: 32}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrTooManySegs)
	})
}

// §7.3 item 13: malformed indirect tables.
func TestChecklist13_Indirect(t *testing.T) {
	setup := func(t *testing.T) (*queuetest.Driver, *queue.Queue, uint64) {
		d := newDriver(t, 8)
		q := d.NewQueue(t, queue.Features{})
		table, err := d.Alloc(64, 16)
		require.NoError(t, err)
		require.NoError(t, d.WriteTable(table, []queuetest.Desc{
			{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: 1},
			{Addr: d.Data, Len: 4, Flags: queue.DescFWrite},
		}))
		return d, q, table
	}
	for _, tc := range []struct {
		name string
		x    func(table uint64) queuetest.Desc
		want error
	}{
		{"length 0", func(tb uint64) queuetest.Desc {
			return queuetest.Desc{Addr: tb, Len: 0, Flags: queue.DescFIndirect}
		}, queue.ErrIndirect},
		{"length not a multiple of 16", func(tb uint64) queuetest.Desc {
			return queuetest.Desc{Addr: tb, Len: 24, Flags: queue.DescFIndirect}
		}, queue.ErrIndirect},
		{"more than 65536 entries", func(tb uint64) queuetest.Desc {
			return queuetest.Desc{Addr: tb, Len: 16 * (queue.MaxIndirectEntries + 1), Flags: queue.DescFIndirect}
		}, queue.ErrIndirect},
		{"outside RAM", func(uint64) queuetest.Desc {
			return queuetest.Desc{Addr: memSize - 16, Len: 32, Flags: queue.DescFIndirect}
		}, queue.ErrIndirect},
		{"in MMIO hole", func(uint64) queuetest.Desc {
			return queuetest.Desc{Addr: 0xC0000000, Len: 32, Flags: queue.DescFIndirect}
		}, queue.ErrIndirect},
		{"INDIRECT with NEXT", func(tb uint64) queuetest.Desc {
			return queuetest.Desc{Addr: tb, Len: 32, Flags: queue.DescFIndirect | queue.DescFNext, Next: 1}
		}, queue.ErrIndirect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, q, table := setup(t)
			require.NoError(t, d.WriteDesc(0, tc.x(table)))
			require.NoError(t, d.PostHead(0))
			_, err := q.Pop()
			requireBroken(t, q, err, tc.want)
		})
	}
	t.Run("INDIRECT inside an indirect table", func(t *testing.T) {
		d, q, table := setup(t)
		inner, err := d.Alloc(16, 16)
		require.NoError(t, err)
		require.NoError(t, d.WriteTable(inner, []queuetest.Desc{{Addr: d.Data, Len: 4}}))
		require.NoError(t, d.WriteTable(table, []queuetest.Desc{
			{Addr: d.Data, Len: 4, Flags: queue.DescFNext, Next: 1},
			{Addr: inner, Len: 16, Flags: queue.DescFIndirect},
		}))
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: table, Len: 32, Flags: queue.DescFIndirect}))
		require.NoError(t, d.PostHead(0))
		_, err = q.Pop()
		requireBroken(t, q, err, queue.ErrIndirect)
		var ce *queue.ChainError
		require.ErrorAs(t, err, &ce)
		require.True(t, ce.Indirect)
		require.Equal(t, uint32(1), ce.Desc)
	})
	t.Run("indirect without negotiating INDIRECT_DESC is accepted (as QEMU)", func(t *testing.T) {
		d, q, table := setup(t)
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: table, Len: 32, Flags: queue.DescFIndirect}))
		require.NoError(t, d.PostHead(0))
		c, err := q.Pop()
		require.NoError(t, err)
		require.Equal(t, uint32(4), c.ReadableLen())
		require.Equal(t, uint32(4), c.WritableLen())
	})
	t.Run("buffer in indirect table outside RAM", func(t *testing.T) {
		d, q, table := setup(t)
		require.NoError(t, d.WriteTable(table, []queuetest.Desc{{Addr: 1 << 45, Len: 4}}))
		require.NoError(t, d.WriteDesc(0, queuetest.Desc{Addr: table, Len: 16, Flags: queue.DescFIndirect}))
		require.NoError(t, d.PostHead(0))
		_, err := q.Pop()
		requireBroken(t, q, err, queue.ErrBufferAddress)
	})
}

// §7.3 item 14: values that change between two reads. Descriptors are copied
// once at Pop: rewriting the table or the ring afterwards does not change
// the chain the device holds.
func TestChecklist14_DoubleFetch(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	head, err := d.AddChain(queuetest.R([]byte("abcd")), queuetest.W(8))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)
	rd := c.Readable()[0]
	wr := c.Writable()[0]

	// The guest now rewrites everything to point outside memory and huge.
	for i := uint16(0); i < 8; i++ {
		require.NoError(t, d.WriteDesc(i, queuetest.Desc{Addr: 1 << 60, Len: math.MaxUint32, Flags: queue.DescFNext, Next: i}))
	}
	require.NoError(t, d.PutRing(0, 0xFFFF))
	require.Equal(t, uint32(4), c.ReadableLen())
	require.Equal(t, uint32(8), c.WritableLen())
	require.Same(t, &rd[0], &c.Readable()[0][0])
	require.Same(t, &wr[0], &c.Writable()[0][0])
	n, err := c.Writer().Write([]byte("12345678"))
	require.NoError(t, err)
	require.NoError(t, q.Push(c, uint32(n)))
	require.Equal(t, "12345678", string(d.Written(head, 8)))
	require.Nil(t, q.Err())
}

// §7.3 item 15: EVENT_IDX with arbitrary used_event/avail_event and index
// wrap at 65536; used-ring writes stay inside the used ring.
func TestChecklist15_EventIdx(t *testing.T) {
	t.Run("arbitrary used_event across the wrap", func(t *testing.T) {
		for _, start := range []uint16{0, 100, 0xFFF0, 0xFFFF} {
			for _, event := range []uint16{0, 1, start, start + 1, start + 2, start + 5, 0x8000, 0xFFFF} {
				d := newDriver(t, 8)
				q := d.NewQueue(t, queue.Features{EventIdx: true})
				require.NoError(t, q.SetLastAvailIdx(start))
				require.NoError(t, q.SetUsedIdx(start))
				require.NoError(t, d.SetAvailIdx(start))
				require.NoError(t, d.SetUsedEvent(event))
				// First check after reset/base change is always true.
				_, err := d.AddChain(queuetest.W(4))
				require.NoError(t, err)
				c, err := q.Pop()
				require.NoError(t, err)
				require.NoError(t, q.Push(c, 0))
				require.True(t, q.NeedsNotify())
				d.Reclaim(c.Head())
				// Then publish 3 and check the window [start+1, start+4).
				for i := 0; i < 3; i++ {
					_, err := d.AddChain(queuetest.W(4))
					require.NoError(t, err)
					c, err := q.Pop()
					require.NoError(t, err)
					require.NoError(t, q.AddUsed(c, 0))
					d.Reclaim(c.Head())
				}
				q.PublishUsed()
				old, now := start+1, start+4
				want := uint16(event-old) < uint16(now-old)
				require.Equal(t, want, q.NeedsNotify(), "start %#x event %#x", start, event)
				require.False(t, q.NeedsNotify(), "nothing new published")
			}
		}
	})
	t.Run("NeedEvent", func(t *testing.T) {
		require.True(t, queue.NeedEvent(0, 1, 0))
		require.False(t, queue.NeedEvent(1, 1, 0))
		require.True(t, queue.NeedEvent(0xFFFF, 0, 0xFFFF))
		require.True(t, queue.NeedEvent(0xFFFE, 2, 0xFFFD))
		require.False(t, queue.NeedEvent(2, 2, 0xFFFD))
		require.False(t, queue.NeedEvent(5, 5, 5))
	})
	t.Run("used ring writes stay in the used ring", func(t *testing.T) {
		d := newDriver(t, 16)
		q := d.NewQueue(t, queue.Features{EventIdx: true})
		host := d.Mem.Regions()[0].Host
		var heads []uint16
		for i := 0; i < 8; i++ {
			h, err := d.AddChain(queuetest.R([]byte("x")), queuetest.W(16))
			require.NoError(t, err)
			heads = append(heads, h)
		}
		require.NoError(t, d.SetUsedEvent(0xABCD))
		before := bytes.Clone(host)
		for range heads {
			c, err := q.Pop()
			require.NoError(t, err)
			_, err = c.Writer().Write(bytes.Repeat([]byte{0xEE}, 16))
			require.NoError(t, err)
			require.NoError(t, q.AddUsed(c, 16))
		}
		q.PublishUsed()
		q.NeedsNotify()
		q.DisableNotification()
		_, err := q.EnableNotification()
		require.NoError(t, err)
		usedStart, usedEnd := d.Used, d.Used+queue.UsedRingSize(16)
		// Outside the used ring only the writable buffers changed.
		changed := 0
		for i := range host {
			a := uint64(i)
			if a >= usedStart && a < usedEnd {
				continue
			}
			if host[i] != before[i] {
				require.Equal(t, byte(0xEE), host[i], "unexpected write at %#x", a)
				changed++
			}
		}
		require.Equal(t, 8*16, changed)
	})
}

// §7.3 item 40: memory per queue is bounded by the queue size: a head that
// is already in flight cannot be popped again (CVE-2016-5403).
func TestChecklist40_BoundedInFlight(t *testing.T) {
	d := newDriver(t, 4)
	q := d.NewQueue(t, queue.Features{})
	head, err := d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)
	require.Equal(t, head, c.Head())
	require.NoError(t, d.PostHead(head)) // resubmitted while in flight
	_, err = q.Pop()
	requireBroken(t, q, err, queue.ErrHeadInUse)
	require.Equal(t, 1, q.InFlight())

	// After a proper return the same head may be posted again.
	d2 := newDriver(t, 4)
	q2 := d2.NewQueue(t, queue.Features{})
	head, err = d2.AddChain(queuetest.W(4))
	require.NoError(t, err)
	for i := 0; i < 100; i++ {
		c, err := q2.Pop()
		require.NoError(t, err)
		require.NoError(t, q2.Push(c, 1))
		require.NoError(t, d2.PostHead(head))
	}
	require.LessOrEqual(t, q2.InFlight(), 4)
}

package queue_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
)

const vnetHdrLen = 12

// Each scenario sets up a driver and a queue and returns one iteration of
// the device's hot path (plus the driver's repost and reap, which allocate
// nothing either). Benchmarks loop it; TestHotPathAllocs checks it makes 0
// allocations.

// rx1514: one 1514-byte frame into a single writable buffer (as Linux posts
// with MRG_RXBUF): pop, write header + frame, add used, publish, check
// notification.
func rx1514(tb testing.TB) (step func(), bytes int64) {
	d := queuetest.New(tb, 256, 4<<20)
	q := d.NewQueue(tb, queue.Features{EventIdx: true})
	head, err := d.AddChain(queuetest.W(vnetHdrLen + 1514))
	require.NoError(tb, err)
	hdr := make([]byte, vnetHdrLen)
	frame := make([]byte, 1514)
	return func() {
		c, err := q.Pop()
		if err != nil || c == nil {
			tb.Fatal(c, err)
		}
		w := c.Writer()
		_, _ = w.Write(hdr)
		_, _ = w.Write(frame)
		if err := q.AddUsed(c, uint32(w.BytesWritten())); err != nil {
			tb.Fatal(err)
		}
		q.PublishUsed()
		_ = q.NeedsNotify()
		if _, ok := d.PopUsed(); !ok {
			tb.Fatal("no used element")
		}
		if err := d.PostHead(head); err != nil {
			tb.Fatal(err)
		}
	}, vnetHdrLen + 1514
}

// tx1514: a [header, 1514-byte frame] readable chain copied out.
func tx1514(tb testing.TB) (step func(), bytes int64) {
	d := queuetest.New(tb, 256, 4<<20)
	q := d.NewQueue(tb, queue.Features{EventIdx: true})
	head, err := d.AddChain(queuetest.R(make([]byte, vnetHdrLen)), queuetest.R(make([]byte, 1514)))
	require.NoError(tb, err)
	hdr := make([]byte, vnetHdrLen)
	frame := make([]byte, 1514)
	return func() {
		c, err := q.Pop()
		if err != nil || c == nil {
			tb.Fatal(c, err)
		}
		r := c.Reader()
		if err := r.ReadFull(hdr); err != nil {
			tb.Fatal(err)
		}
		if err := r.ReadFull(frame); err != nil {
			tb.Fatal(err)
		}
		if err := q.Push(c, 0); err != nil {
			tb.Fatal(err)
		}
		_ = q.NeedsNotify()
		d.PopUsed()
		if err := d.PostHead(head); err != nil {
			tb.Fatal(err)
		}
	}, vnetHdrLen + 1514
}

// rx64KMergeable: a 64 KiB GSO frame spread over mergeable buffers: 17
// single-descriptor chains of 4096 bytes are popped, filled, num_buffers is
// patched into the first header, all are added to the used ring and
// published once.
func rx64KMergeable(tb testing.TB) (step func(), bytes int64) {
	const nbuf = 17
	const total = vnetHdrLen + 65536
	d := queuetest.New(tb, 256, 4<<20)
	q := d.NewQueue(tb, queue.Features{EventIdx: true})
	var heads [nbuf]uint16
	for i := range heads {
		h, err := d.AddChain(queuetest.W(4096))
		require.NoError(tb, err)
		heads[i] = h
	}
	pkt := make([]byte, total)
	var chains [nbuf]*queue.Chain
	var num [2]byte
	return func() {
		rest := pkt
		n := 0
		for len(rest) > 0 {
			c, err := q.Pop()
			if err != nil || c == nil {
				tb.Fatal(c, err)
			}
			k, _ := c.Writer().Write(rest)
			rest = rest[k:]
			chains[n] = c
			n++
		}
		num[0] = byte(n)
		if err := chains[0].Writer().WriteAt(num[:], 10); err != nil { // num_buffers
			tb.Fatal(err)
		}
		for _, c := range chains[:n] {
			if err := q.AddUsed(c, uint32(c.Writer().BytesWritten())); err != nil {
				tb.Fatal(err)
			}
		}
		q.PublishUsed()
		_ = q.NeedsNotify()
		for range n {
			d.PopUsed()
		}
		for _, h := range heads {
			if err := d.PostHead(h); err != nil {
				tb.Fatal(err)
			}
		}
	}, total
}

// rx64KChain: a 64 KiB frame into one chain of 17 writable 4096-byte
// descriptors (big-packets mode), filled zero-copy through Slices/Advance
// as a readv from a tap would.
func rx64KChain(tb testing.TB) (step func(), bytes int64) {
	const total = vnetHdrLen + 65536
	d := queuetest.New(tb, 256, 4<<20)
	q := d.NewQueue(tb, queue.Features{EventIdx: true})
	bufs := make([]queuetest.Buffer, 17)
	for i := range bufs {
		bufs[i] = queuetest.W(4096)
	}
	head, err := d.AddChain(bufs...)
	require.NoError(tb, err)
	pkt := make([]byte, total)
	iov := make([][]byte, 0, 64)
	return func() {
		c, err := q.Pop()
		if err != nil || c == nil {
			tb.Fatal(c, err)
		}
		w := c.Writer()
		iov = w.Slices(iov[:0])
		rest := pkt // stands in for readv(tap, iov)
		n := 0
		for _, s := range iov {
			k := copy(s, rest)
			rest = rest[k:]
			n += k
		}
		w.Advance(n)
		if err := q.Push(c, uint32(w.BytesWritten())); err != nil {
			tb.Fatal(err)
		}
		_ = q.NeedsNotify()
		d.PopUsed()
		if err := d.PostHead(head); err != nil {
			tb.Fatal(err)
		}
	}, total
}

// txIndirect19: transmit with an indirect table of 19 segments
// (MAX_SKB_FRAGS+2), gathered zero-copy for a writev.
func txIndirect19(tb testing.TB) (step func(), bytes int64) {
	d := queuetest.New(tb, 256, 4<<20)
	q := d.NewQueue(tb, queue.Features{EventIdx: true})
	bufs := make([]queuetest.Buffer, 19)
	for i := range bufs {
		bufs[i] = queuetest.R(make([]byte, 1024))
	}
	head, err := d.AddIndirect(bufs...)
	require.NoError(tb, err)
	iov := make([][]byte, 0, 64)
	return func() {
		c, err := q.Pop()
		if err != nil || c == nil {
			tb.Fatal(c, err)
		}
		iov = c.Reader().Slices(iov[:0])
		c.Reader().Skip(c.Reader().Available())
		if err := q.Push(c, 0); err != nil {
			tb.Fatal(err)
		}
		d.PopUsed()
		if err := d.PostHead(head); err != nil {
			tb.Fatal(err)
		}
	}, 19 * 1024
}

var scenarios = []struct {
	name  string
	setup func(testing.TB) (func(), int64)
}{
	{"rx1514", rx1514},
	{"tx1514", tx1514},
	{"rx64KMergeable", rx64KMergeable},
	{"rx64KChain", rx64KChain},
	{"txIndirect19", txIndirect19},
}

func runBench(b *testing.B, setup func(testing.TB) (func(), int64)) {
	step, n := setup(b)
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		step()
	}
}

// BenchmarkPopWritePush1514 is pop + write + push of a 1514-byte frame.
func BenchmarkPopWritePush1514(b *testing.B) { runBench(b, rx1514) }

// BenchmarkPopReadPush1514 is pop + read + push of a 1514-byte frame.
func BenchmarkPopReadPush1514(b *testing.B) { runBench(b, tx1514) }

// BenchmarkPopWritePush64KMergeable is a 64 KiB frame over 17 mergeable buffers.
func BenchmarkPopWritePush64KMergeable(b *testing.B) { runBench(b, rx64KMergeable) }

// BenchmarkPopWritePush64KChain is a 64 KiB frame into one 17-descriptor chain.
func BenchmarkPopWritePush64KChain(b *testing.B) { runBench(b, rx64KChain) }

// BenchmarkPopIndirect19 is pop + gather + push of a 19-entry indirect chain.
func BenchmarkPopIndirect19(b *testing.B) { runBench(b, txIndirect19) }

// The hot path must not allocate; enforce it in ordinary test runs too.
func TestHotPathAllocs(t *testing.T) {
	for _, s := range scenarios {
		step, _ := s.setup(t)
		step() // warm up: chains grow their buffer lists once
		require.Zero(t, testing.AllocsPerRun(50, step), s.name)
	}
}

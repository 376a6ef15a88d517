package rsc

import (
	"testing"
	"unsafe"

	"github.com/rscvm/rscvm/net/header"
	"github.com/stretchr/testify/require"
)

// readInto places f in the engine's receive region, as a TAP read would.
func readInto(t *testing.T, e *Engine, f Frame) Frame {
	t.Helper()
	b := e.RecvBuffer()
	require.NotNil(t, b)
	require.GreaterOrEqual(t, len(b), BufferSize)
	f.Data = b[:copy(b, f.Data)]
	return f
}

// ptrSink records the scatter lists it gets (the slices themselves, not
// copies), to check where the pieces live.
type ptrSink struct {
	vecs [][][]byte
	full bool
}

func (s *ptrSink) Deliver(h header.VirtioNetHdr, f []byte) bool {
	return s.DeliverVec(h, [][]byte{f})
}

func (s *ptrSink) DeliverVec(_ header.VirtioNetHdr, f [][]byte) bool {
	if s.full {
		return false
	}
	s.vecs = append(s.vecs, append([][]byte(nil), f...))
	return true
}

// Frames read into the receive region are not copied: the sink gets the
// first frame's headers and then each segment's payload where it was read.
func TestRecvBufferZeroCopy(t *testing.T) {
	for _, v := range []struct {
		name string
		opts []segOpt
	}{{"IPv4", nil}, {"IPv6", []segOpt{v6}}, {"VLAN", []segOpt{withVLAN(5)}}} {
		t.Run(v.name, func(t *testing.T) {
			s := &ptrSink{}
			e := New(Config{IPv4: true, IPv6: true, FlushAtBatchEnd: true}, s)
			var read []Frame
			for _, f := range seqs(seq0, 10, v.opts...) {
				f = readInto(t, e, f)
				require.True(t, e.Input(0, f))
				read = append(read, f)
			}
			require.True(t, e.EndBatch(0))
			require.Len(t, s.vecs, 1)
			vec := s.vecs[0]
			require.Len(t, vec, 10)
			hl := len(read[0].Data) - mss
			require.Equal(t, unsafe.SliceData(read[0].Data), unsafe.SliceData(vec[0]), "first frame in place")
			for i := 1; i < 10; i++ {
				require.Len(t, vec[i], mss)
				require.Equal(t, unsafe.SliceData(read[i].Data[hl:]), unsafe.SliceData(vec[i]), "payload %d in place", i)
				require.Equal(t, len(vec[i]), cap(vec[i]), "pieces are capped")
			}
			require.Equal(t, pattern(seq0+mss, 9*mss), joinVec(vec[1:]))
			require.Zero(t, e.Stats().Copied)
		})
	}
}

func joinVec(v [][]byte) []byte {
	var out []byte
	for _, b := range v {
		out = append(out, b...)
	}
	return out
}

// With a plain Sink a packet in pieces arrives linearized; payloads copied
// by the engine (frames not read into the region) extend the last piece
// when they land right after it, here after the last frame read.
func TestPlainSinkAndCopiedFrames(t *testing.T) {
	h := newHarness(t, Config{IPv4: true, FlushAtBatchEnd: true})
	for _, f := range seqs(seq0, 5) {
		h.in(readInto(t, h.e, f))
	}
	h.in(seqs(seq0+5*mss, 5)...) // copied
	fl := &h.e.flows[h.e.last]
	require.Len(t, fl.vec, 5)
	require.EqualValues(t, 5, h.e.Stats().Copied)
	require.True(t, h.e.EndBatch(0))
	out := h.finish()
	require.Len(t, out, 1)
	requireSCU(t, out[0], 10, seq0, 10*mss)
}

// A pending packet holds at most maxPieces pieces: small segments read into
// the region end a packet after maxPieces segments (OverSize, coalescing
// resumes); copied segments of one flow stay contiguous and do not.
func TestPieceLimit(t *testing.T) {
	const n, sz = 150, 100
	t.Run("region", func(t *testing.T) {
		h := newHarness(t, Config{IPv4: true, FlushAtBatchEnd: true})
		for _, f := range seqs2(seq0, n, sz) {
			h.in(readInto(t, h.e, f))
		}
		out := h.finish()
		require.Len(t, out, 3)
		requireSCU(t, out[0], maxPieces, seq0, maxPieces*sz)
		requireSCU(t, out[1], maxPieces, seq0+maxPieces*sz, maxPieces*sz)
		requireSCU(t, out[2], n-2*maxPieces, seq0+2*maxPieces*sz, (n-2*maxPieces)*sz)
		require.EqualValues(t, 2, h.e.Stats().OverSize)
		require.Zero(t, h.e.Stats().Aborts)
	})
	t.Run("copied", func(t *testing.T) {
		h := newHarness(t, Config{IPv4: true, FlushAtBatchEnd: true})
		h.in(seqs2(seq0, n, sz)...)
		out := h.finish()
		require.Len(t, out, 1)
		requireSCU(t, out[0], n, seq0, n*sz)
	})
}

// When the arena has no room for the receive region, RecvBuffer flushes the
// oldest packet; if the sink refuses, it returns nil and nothing is lost.
// Frames with trailing bytes fill the arena faster than their payload
// fills packets: memory stays bounded by the arena.
func TestRecvBufferBackPressure(t *testing.T) {
	h := newHarness(t, Config{IPv4: true, IPv6: true, Interval: interval, MaxFlows: 2})
	h.s.full = true
	seq := uint32(seq0)
	var b []byte
	for i := 0; ; i++ {
		require.Less(t, i, len(h.e.arena)/9000, "the arena must fill")
		if b = h.e.RecvBuffer(); b == nil {
			break
		}
		f := D(seq, 1000, withPadding(9000))
		seq += 1000
		f.Data = b[:copy(b, f.Data)]
		h.in(f)
	}
	require.Equal(t, 1, h.s.refused)
	require.Equal(t, 1, h.e.Pending(), "the packet is kept")
	h.s.full = false
	b = h.e.RecvBuffer()
	require.NotNil(t, b)
	require.Zero(t, h.e.Pending())
	require.EqualValues(t, 1, h.e.Stats().Evictions)
	require.NoError(t, h.e.checkMemory())
	out := h.finish()
	require.Len(t, out, 1)
}

// Reads with the engine's arena and a VecSink allocate nothing.
func TestRecvBufferZeroAlloc(t *testing.T) {
	frames := benchFrames(false, 4, 16, header.VirtioNetHdrFDataValid)
	frames = append(frames, benchFrames(true, 2, 8, 0)...)
	frames = append(frames, ACK(seq0, ackA, winW), D(seq0, 10, addFlags(header.TCPFlagFIN)))
	sink := &copyVecSink{dst: make([]byte, 65536+64)}
	e := New(Config{IPv4: true, IPv6: true, Interval: interval, MaxFlows: 4}, sink)
	allocs := testing.AllocsPerRun(20, func() {
		for _, f := range frames {
			b := e.RecvBuffer()
			f.Data = b[:copy(b, f.Data)]
			e.Input(0, f)
		}
		e.Tick(2 * interval)
		e.EndBatch(0)
		e.FlushAll()
	})
	require.Zero(t, allocs)
	require.Positive(t, sink.vec)
}

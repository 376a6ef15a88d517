package rsc

import (
	"fmt"
	"testing"

	"github.com/rscvm/rscvm/net/header"
)

// copySink copies every packet into a preallocated 64 KiB buffer, as the
// device copies into guest receive buffers.
type copySink struct {
	dst     []byte
	packets int
}

func (s *copySink) Deliver(_ header.VirtioNetHdr, f []byte) bool {
	copy(s.dst, f)
	s.packets++
	return true
}

// copyVecSink is copySink taking scatter lists, as the device does.
type copyVecSink struct {
	dst          []byte
	packets, vec int
}

func (s *copyVecSink) Deliver(_ header.VirtioNetHdr, f []byte) bool {
	copy(s.dst, f)
	s.packets++
	return true
}

func (s *copyVecSink) DeliverVec(_ header.VirtioNetHdr, f [][]byte) bool {
	n := 0
	for _, b := range f {
		n += copy(s.dst[n:], b)
	}
	s.packets++
	s.vec++
	return true
}

// BenchFrames returns one read batch: perFlow contiguous MSS segments for
// each of flows flows, interleaved round-robin, with the given TAP header
// flags (DATA_VALID, or 0 to make the engine verify checksums).
func benchFrames(ipv6 bool, flows, perFlow int, flags uint8) []Frame {
	out := make([]Frame, 0, flows*perFlow)
	for i := range perFlow {
		for f := range flows {
			opts := []segOpt{withSrcPort(uint16(10000 + f)), withHdr(header.VirtioNetHdr{Flags: flags})}
			if ipv6 {
				opts = append(opts, v6)
			}
			out = append(out, D(seq0+uint32(i*mss), mss, opts...))
		}
	}
	return out
}

// benchEngine feeds frames from the caller's memory (the engine copies
// what it keeps) to a plain Sink.
func benchEngine(b *testing.B, frames []Frame) {
	sink := &copySink{dst: make([]byte, 65536+64)}
	e := New(Config{IPv4: true, IPv6: true, FlushAtBatchEnd: true, MaxFlows: 64}, sink)
	b.SetBytes(mss)
	b.ReportAllocs()
	n := len(frames)
	i := 0
	for b.Loop() {
		e.Input(0, frames[i])
		i++
		if i == n {
			e.EndBatch(0)
			i = 0
		}
	}
	e.EndBatch(0)
	b.ReportMetric(float64(e.Stats().Frames)/float64(max(sink.packets, 1)), "segs/pkt")
}

// benchRecv is the device's way: per read batch, untimed, the frames are
// read into the engine's receive region (RecvBuffer); timed, every frame
// goes through the engine and the VecSink copies each packet out once.
func benchRecv(b *testing.B, frames []Frame) {
	sink := &copyVecSink{dst: make([]byte, 65536+64)}
	e := New(Config{IPv4: true, IPv6: true, FlushAtBatchEnd: true, MaxFlows: 64}, sink)
	b.SetBytes(mss)
	b.ReportAllocs()
	batch := make([]Frame, len(frames))
	read := func() {
		r := e.RecvBuffer()
		for i, f := range frames {
			batch[i] = Frame{Hdr: f.Hdr, Data: r[:copy(r, f.Data)]}
			r = r[(len(f.Data)+recvAlign-1)&^(recvAlign-1):]
		}
	}
	b.ResetTimer()
	for done := 0; done < b.N; done += len(batch) {
		b.StopTimer()
		read()
		b.StartTimer()
		for _, f := range batch {
			e.Input(0, f)
		}
		e.EndBatch(0)
	}
	b.ReportMetric(float64(e.Stats().Frames)/float64(max(sink.packets, 1)), "segs/pkt")
}

// BenchmarkEngine reports ns per 1448-byte segment (ns/op), including the
// sink's copy into a 64 KiB buffer: "recv" with frames read into the
// engine's receive region (kept in place, one copy), "copy" with frames
// the engine copies (two copies).
func BenchmarkEngine(b *testing.B) {
	for _, fam := range []struct {
		name string
		v6   bool
	}{{"IPv4", false}, {"IPv6", true}} {
		for _, c := range []struct {
			flows, perFlow int
		}{{1, 128}, {64, 8}} {
			for _, fl := range []struct {
				name  string
				flags uint8
			}{{"DataValid", header.VirtioNetHdrFDataValid}, {"VerifyCsum", 0}} {
				name := fmt.Sprintf("%s/flows=%d/%s", fam.name, c.flows, fl.name)
				frames := benchFrames(fam.v6, c.flows, c.perFlow, fl.flags)
				b.Run(name+"/recv", func(b *testing.B) { benchRecv(b, frames) })
				b.Run(name+"/copy", func(b *testing.B) { benchEngine(b, frames) })
			}
		}
	}
}

// BenchmarkEnginePureACK measures frames that cannot be coalesced.
func BenchmarkEnginePureACK(b *testing.B) {
	frames := make([]Frame, 128)
	for i := range frames {
		frames[i] = ACK(seq0, uint32(ackA+i*100), winW)
	}
	benchEngine(b, frames)
}

// TestInputZeroAlloc asserts the hot path allocates nothing per segment:
// merging, starting, flushing, exceptions and pass-through.
func TestInputZeroAlloc(t *testing.T) {
	frames := benchFrames(false, 4, 16, header.VirtioNetHdrFDataValid)
	frames = append(frames, benchFrames(true, 2, 8, 0)...)
	frames = append(frames, ACK(seq0, ackA, winW), D(seq0, 10, addFlags(header.TCPFlagFIN)))
	sink := &copySink{dst: make([]byte, 65536+64)}
	e := New(Config{IPv4: true, IPv6: true, Interval: interval, MaxFlows: 4}, sink)
	allocs := testing.AllocsPerRun(20, func() {
		for _, f := range frames {
			e.Input(0, f)
		}
		e.Tick(2 * interval)
		e.EndBatch(0)
		e.FlushAll()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run", allocs)
	}
}

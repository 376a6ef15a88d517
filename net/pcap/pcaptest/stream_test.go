package pcaptest

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/pcap"
	"github.com/stretchr/testify/require"
)

var (
	srcA = netip.MustParseAddr("10.0.0.1")
	dstA = netip.MustParseAddr("10.0.0.2")
	srcB = netip.MustParseAddr("2001:db8::1")
	dstB = netip.MustParseAddr("2001:db8::2")
)

func frame(src, dst netip.Addr, seq uint32, flags uint8, payload []byte) pcap.Packet {
	f := header.TCPFrame{Src: src, Dst: dst, SrcPort: 40000, DstPort: 5001, Seq: seq, Ack: 1, Flags: flags | header.TCPFlagACK,
		Window: 100, Payload: payload, Padding: 3}
	return pcap.Packet{Time: time.Unix(1, 0), Data: f.Build(nil)}
}

func TestReassemble(t *testing.T) {
	const isn = 0xfffff000 // the stream wraps
	data := make([]byte, 9000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	seq := func(off int) uint32 { return isn + 1 + uint32(off) }
	frames := []pcap.Packet{
		frame(srcA, dstA, isn, header.TCPFlagSYN, nil),
		frame(srcA, dstA, seq(0), 0, data[0:3000]),
		frame(srcA, dstA, seq(6000), 0, data[6000:9000]), // out of order
		frame(srcA, dstA, seq(3000), 0, data[3000:6000]),
		frame(srcA, dstA, seq(1000), 0, data[1000:2000]), // retransmission
		frame(srcA, dstA, seq(9000), header.TCPFlagFIN, nil),
		frame(dstA, srcA, 77, 0, nil), // pure ACK the other way
		{Data: []byte{1, 2, 3}},       // runt, ignored
		frame(srcB, dstB, 100, 0, data[:10]),
		frame(srcB, dstB, 120, 0, data[20:30]), // hole 110..119
	}
	ss := Reassemble(frames)
	require.Len(t, ss, 3)
	a := ss[FlowKey{netip.AddrPortFrom(srcA, 40000), netip.AddrPortFrom(dstA, 5001)}]
	require.NotNil(t, a)
	require.Equal(t, uint32(isn+1), a.Base)
	require.True(t, a.SYN)
	require.True(t, a.FIN)
	require.True(t, a.Matches(data))
	require.Equal(t, 4, a.Segments)
	require.Equal(t, 10000, a.Payload)
	require.Zero(t, a.Conflicts)

	rev := ss[FlowKey{netip.AddrPortFrom(dstA, 40000), netip.AddrPortFrom(srcA, 5001)}]
	require.NotNil(t, rev)
	require.Zero(t, rev.Extent())

	b := ss[FlowKey{netip.AddrPortFrom(srcB, 40000), netip.AddrPortFrom(dstB, 5001)}]
	require.NotNil(t, b)
	require.Equal(t, uint32(100), b.Base)
	require.Equal(t, int64(30), b.Extent())
	require.Equal(t, int64(10), b.Holes())
	require.Len(t, b.Runs(), 2)
	require.False(t, b.Complete())

	// A conflicting retransmission is counted, the first copy kept.
	bad := append([]byte(nil), data[0:100]...)
	bad[50] ^= 0xff
	ss2 := Reassemble(append(frames[:6:6], frame(srcA, dstA, seq(0), 0, bad)))
	a2 := ss2[synFlow(t, ss2)]
	require.Equal(t, 1, a2.Conflicts)
	require.True(t, a2.Matches(data))
}

// synFlow finds the single flow with a SYN.
func synFlow(t *testing.T, ss Streams) FlowKey {
	for _, k := range ss.Keys() {
		if ss[k].SYN {
			return k
		}
	}
	t.Fatal("no SYN flow")
	return FlowKey{}
}

func TestCompareStreams(t *testing.T) {
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i)
	}
	in := []pcap.Packet{
		frame(srcA, dstA, 1000, 0, data[0:1000]),
		frame(srcA, dstA, 2000, 0, data[1000:2000]),
		frame(srcA, dstA, 2000, 0, data[1000:2000]), // duplicate
		frame(srcA, dstA, 3000, 0, data[2000:3000]),
	}
	want := Reassemble(in)
	require.Empty(t, CompareStreams(want, Reassemble(in)))

	// Coalescing the first two into one frame keeps the stream.
	merged := []pcap.Packet{frame(srcA, dstA, 1000, 0, data[0:2000]), in[2], in[3]}
	require.Empty(t, CompareStreams(want, Reassemble(merged)))

	// Losing the duplicate changes the payload count.
	errs := CompareStreams(want, Reassemble([]pcap.Packet{merged[0], in[3]}))
	require.Len(t, errs, 1)
	require.Contains(t, errs[0], "4000 received")

	// Losing a segment leaves a hole.
	errs = CompareStreams(want, Reassemble([]pcap.Packet{in[0], in[3]}))
	require.Contains(t, errs[0], "present true vs false")

	// A changed byte.
	x := append([]byte(nil), data[2000:3000]...)
	x[10]++
	errs = CompareStreams(want, Reassemble([]pcap.Packet{in[0], in[1], in[2], frame(srcA, dstA, 3000, 0, x)}))
	require.Contains(t, errs[0], "byte at seq 3010")

	// Extra and missing flows.
	errs = CompareStreams(want, Reassemble(append(in[:4:4], frame(srcB, dstB, 1, 0, data[:5]))))
	require.Contains(t, errs[0], "unexpected flow")
	errs = CompareStreams(want, Streams{})
	require.Contains(t, errs[0], "flow missing")
}

func TestParseTCPRejects(t *testing.T) {
	good := header.TCPFrame{Src: srcA, Dst: dstA, SrcPort: 1, DstPort: 2, Flags: header.TCPFlagACK, Payload: []byte("hi")}
	_, ok := ParseTCP(good.Build(nil))
	require.True(t, ok)
	frag := good
	frag.MoreFragments = true
	_, ok = ParseTCP(frag.Build(nil))
	require.False(t, ok)
	b := good.Build(nil)
	_, ok = ParseTCP(b[:30])
	require.False(t, ok)
	ext := header.TCPFrame{Src: srcB, Dst: dstB, SrcPort: 1, DstPort: 2, Flags: header.TCPFlagACK, Payload: []byte("hi"),
		ExtHeaders: []header.IPv6ExtHeader{{Type: header.IPv6DestOptions, Data: make([]byte, 6)}}}
	seg, ok := ParseTCP(ext.Build(nil))
	require.True(t, ok)
	require.Equal(t, []byte("hi"), seg.Payload)
	for i := range b {
		ParseTCP(b[:i]) // never panics
	}
}

// TestStreamAddMatchesDenseModel checks the sparse reassembly against a
// plain byte-array model on random overlapping segments.
func TestStreamAddMatchesDenseModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 300 {
		const size = 400
		var model [size]int // -1 = hole, else byte value
		for i := range model {
			model[i] = -1
		}
		conflicts := 0
		var s Stream
		for range 1 + rng.IntN(12) {
			off := rng.IntN(size - 1)
			n := 1 + rng.IntN(min(size-off, 80))
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(off + i)
				if rng.IntN(50) == 0 {
					data[i] ^= 0xff
				}
				switch {
				case model[off+i] < 0:
					model[off+i] = int(data[i])
				case model[off+i] != int(data[i]):
					conflicts++
				}
			}
			s.add(int64(off), data)
		}
		s.finish(0)
		require.Equal(t, conflicts, s.Conflicts, "iter %d", iter)
		got := make([]int, size)
		for i := range got {
			got[i] = -1
		}
		for k, r := range s.Runs() {
			if k > 0 {
				require.Greater(t, r.Offset, s.Runs()[k-1].end(), "runs sorted, not adjacent")
			}
			for i, b := range r.Data {
				got[int(r.Offset)+i] = int(b)
			}
		}
		require.Equal(t, model[:], got, "iter %d", iter)
	}
}

func TestStreamDiff(t *testing.T) {
	mk := func(runs ...Run) *Stream {
		s := &Stream{Base: 100}
		for _, r := range runs {
			s.add(r.Offset, r.Data)
		}
		s.finish(0)
		return s
	}
	a := mk(Run{0, []byte("hello")}, Run{10, []byte("world")})
	require.Empty(t, a.Diff(mk(Run{10, []byte("world")}, Run{0, []byte("hel")}, Run{3, []byte("lo")})))
	require.Contains(t, a.Diff(mk(Run{0, []byte("hello")})), "seq 110..115 (offset 10) only in the first")
	require.Contains(t, a.Diff(mk(Run{0, []byte("hellp")}, Run{10, []byte("world")})), "seq 104 (offset 4)")
	require.Contains(t, a.Diff(mk(Run{1, []byte("ello")}, Run{10, []byte("world")})), "seq 100 (offset 0): present true vs false")
	require.Contains(t, a.Diff(mk(Run{0, []byte("hello!")}, Run{10, []byte("world")})), "seq 105 (offset 5): present false vs true")
	b := mk(Run{0, []byte("x")})
	b.Base = 7
	require.Contains(t, a.Diff(b), "base sequence")
	require.Empty(t, (&Stream{Base: 1}).Diff(&Stream{Base: 2}), "empty streams are equal")
	require.Nil(t, a.Bytes())
	require.Equal(t, []byte{}, (&Stream{}).Bytes())
}

// TestReassembleFarApart: segments 2 GiB apart in sequence space cost no
// memory proportional to the distance.
func TestReassembleFarApart(t *testing.T) {
	const d = 1<<31 - 8
	base := uint32(10)
	ss := Reassemble([]pcap.Packet{
		frame(srcA, dstA, base, 0, []byte("abc")),
		frame(srcA, dstA, base+d, 0, []byte("xyz")),
		frame(srcA, dstA, base-d, 0, []byte("uvw")),
	})
	s := ss[FlowKey{netip.AddrPortFrom(srcA, 40000), netip.AddrPortFrom(dstA, 5001)}]
	require.Len(t, s.Runs(), 3)
	require.Equal(t, base-d, s.Base)
	require.Equal(t, int64(2*d+3), s.Extent())
}

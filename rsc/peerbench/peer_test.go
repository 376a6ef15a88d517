package peerbench

import (
	"fmt"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/rsc"
	_ "golang.zx2c4.com/wireguard/tun" // linked for handleGRO
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	gheader "gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// wireguard-go's unexported GRO entry points (pinned version in go.mod; the
// signatures must match golang.zx2c4.com/wireguard/tun/offload_linux.go).
//
//go:linkname wgHandleGRO golang.zx2c4.com/wireguard/tun.handleGRO
func wgHandleGRO(bufs [][]byte, offset int, tcpTable, udpTable unsafe.Pointer, canUDPGRO bool, toWrite *[]int) error

//go:linkname wgNewTCPGROTable golang.zx2c4.com/wireguard/tun.newTCPGROTable
func wgNewTCPGROTable() unsafe.Pointer

//go:linkname wgNewUDPGROTable golang.zx2c4.com/wireguard/tun.newUDPGROTable
func wgNewUDPGROTable() unsafe.Pointer

//go:linkname wgTCPReset golang.zx2c4.com/wireguard/tun.(*tcpGROTable).reset
func wgTCPReset(unsafe.Pointer)

//go:linkname wgUDPReset golang.zx2c4.com/wireguard/tun.(*udpGROTable).reset
func wgUDPReset(unsafe.Pointer)

const (
	mss      = 1448
	wgOffset = 12 // virtio-net header headroom
	bufCap   = 65535 + wgOffset
)

// input is one read batch: perFlow contiguous segments per flow, flows
// interleaved round-robin, as Ethernet frames (rsc) and IP packets (peers).
type input struct {
	frames [][]byte
	ip     [][]byte
	v6     bool
}

func makeInput(v6 bool, flows, perFlow int) input {
	in := input{v6: v6}
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if v6 {
		src, dst = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	}
	payload := make([]byte, mss)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	for i := range perFlow {
		for f := range flows {
			fr := header.TCPFrame{Src: src, Dst: dst, TTL: 64, DontFragment: true,
				SrcPort: uint16(10000 + f), DstPort: 5001, Seq: uint32(1000 + i*mss), Ack: 1,
				Flags: header.TCPFlagACK, Window: 1000, Payload: payload}
			b := fr.Build(nil)
			in.frames = append(in.frames, b)
			in.ip = append(in.ip, b[header.EthernetMinSize:])
		}
	}
	return in
}

var cases = []struct {
	v6             bool
	flows, perFlow int
}{{false, 1, 128}, {false, 64, 8}, {true, 1, 128}, {true, 64, 8}}

func caseName(v6 bool, flows int) string {
	fam := "IPv4"
	if v6 {
		fam = "IPv6"
	}
	return fmt.Sprintf("%s/flows=%d", fam, flows)
}

// copySink copies every packet rsc delivers into a 64 KiB buffer: whole
// frames (Deliver) or, for coalesced packets whose segments stayed where
// they were read, the headers and payloads in order (DeliverVec).
type copySink struct{ dst []byte }

func (s *copySink) Deliver(_ header.VirtioNetHdr, f []byte) bool {
	copy(s.dst, f)
	return true
}

func (s *copySink) DeliverVec(_ header.VirtioNetHdr, f [][]byte) bool {
	n := 0
	for _, b := range f {
		n += copy(s.dst[n:], b)
	}
	return true
}

// All engines are measured the same way: per read batch, with the timer
// stopped, the input is copied into the batch's receive buffers (the TAP /
// TUN read, which leaves the data in cache: rsc's engine-provided receive
// region, wireguard-go's per-packet buffers, gVisor's PacketBuffers); then,
// timed, every segment of the batch goes through the engine and each
// output packet is copied into a 64 KiB buffer. ns/op is per segment.
func runBatches(b *testing.B, n int, read, process func()) {
	b.SetBytes(mss)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += n {
		b.StopTimer()
		read()
		b.StartTimer()
		process()
	}
}

// benchRSC runs our engine; validated selects a DATA_VALID TAP header
// (checksums trusted) or flags 0 (verified in software). The receive
// buffers are the engine's receive region (RecvBuffer), which the device
// reads TAP frames into: the engine keeps the segments there and the sink
// copies each packet out once.
func benchRSC(b *testing.B, in input, validated bool) {
	sink := &copySink{dst: make([]byte, 65536+64)}
	e := rsc.New(rsc.Config{IPv4: true, IPv6: true, FlushAtBatchEnd: true, MaxFlows: 64}, sink)
	var h header.VirtioNetHdr
	if validated {
		h.Flags = header.VirtioNetHdrFDataValid
	}
	n := len(in.frames)
	bufs := make([][]byte, n)
	runBatches(b, n, func() {
		// Everything was flushed at the end of the previous batch: the
		// region is the whole arena, nothing is flushed here.
		r := e.RecvBuffer()
		for i, f := range in.frames {
			bufs[i] = r[:copy(r, f)]
			r = r[(len(f)+63)&^63:]
		}
	}, func() {
		for _, f := range bufs {
			e.Input(0, rsc.Frame{Hdr: h, Data: f})
		}
		e.EndBatch(0)
	})
	if st := e.Stats(); st.Evictions != 0 || st.Pending != 0 {
		b.Fatalf("rsc: %d evictions, %d pending", st.Evictions, st.Pending)
	}
}

// benchWireGuard runs wireguard-go's handleGRO over whole batches (it
// coalesces in place into the batch buffers).
func benchWireGuard(b *testing.B, in input) {
	n := len(in.ip)
	bufs := make([][]byte, n)
	backing := make([][]byte, n)
	for i := range bufs {
		backing[i] = make([]byte, bufCap)
	}
	tcpT, udpT := wgNewTCPGROTable(), wgNewUDPGROTable()
	toWrite := make([]int, 0, n)
	dst := make([]byte, 65536+64)
	runBatches(b, n, func() {
		for i, p := range in.ip {
			bufs[i] = backing[i][:wgOffset+len(p)]
			clear(bufs[i][:wgOffset])
			copy(bufs[i][wgOffset:], p)
		}
		wgTCPReset(tcpT)
		wgUDPReset(udpT)
		toWrite = toWrite[:0]
	}, func() {
		if err := wgHandleGRO(bufs, wgOffset, tcpT, udpT, false, &toWrite); err != nil {
			b.Fatal(err)
		}
		for _, j := range toWrite {
			copy(dst, bufs[j])
		}
	})
}

// gvDispatcher copies every packet gVisor's GRO delivers into a 64 KiB buffer.
type gvDispatcher struct{ dst []byte }

func (d *gvDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	vl, off := pkt.AsViewList()
	n := 0
	for v := vl.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(d.dst[n:], s[off:])
		off = 0
	}
}

func (d *gvDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// benchGVisor runs gVisor's exported GRO. The PacketBuffers are created
// (and the segments copied into them) untimed, as the read.
func benchGVisor(b *testing.B, in input, validated bool) {
	var g gro.GRO
	g.Dispatcher = &gvDispatcher{dst: make([]byte, 65536+64)}
	g.Init(true)
	proto := gheader.IPv4ProtocolNumber
	if in.v6 {
		proto = gheader.IPv6ProtocolNumber
	}
	pkts := make([]*stack.PacketBuffer, len(in.ip))
	runBatches(b, len(in.ip), func() {
		for i, p := range in.ip {
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
			pkt.NetworkProtocolNumber = proto
			pkt.RXChecksumValidated = validated
			pkts[i] = pkt
		}
	}, func() {
		for _, pkt := range pkts {
			g.Enqueue(pkt)
			pkt.DecRef()
		}
		g.Flush()
	})
}

// BenchmarkPeers prints, per input, our engine beside wireguard-go and
// gVisor. "validated" variants trust the checksum (TAP DATA_VALID / gVisor
// RXChecksumValidated); "verify" variants check it in software, which is
// what wireguard-go always does.
func BenchmarkPeers(b *testing.B) {
	for _, c := range cases {
		in := makeInput(c.v6, c.flows, c.perFlow)
		name := caseName(c.v6, c.flows)
		b.Run(name+"/rsc/validated", func(b *testing.B) { benchRSC(b, in, true) })
		b.Run(name+"/rsc/verify", func(b *testing.B) { benchRSC(b, in, false) })
		b.Run(name+"/wireguard-go/verify", func(b *testing.B) { benchWireGuard(b, in) })
		b.Run(name+"/gvisor/validated", func(b *testing.B) { benchGVisor(b, in, true) })
		b.Run(name+"/gvisor/verify", func(b *testing.B) { benchGVisor(b, in, false) })
	}
}

// TestPeersCoalesce checks that each engine actually coalesces the input, so
// the benchmark compares like with like.
func TestPeersCoalesce(t *testing.T) {
	in := makeInput(false, 1, 8)
	// rsc
	var pk int
	e := rsc.New(rsc.Config{IPv4: true, FlushAtBatchEnd: true}, rsc.SinkFunc(func(header.VirtioNetHdr, []byte) bool { pk++; return true }))
	for _, f := range in.frames {
		e.Input(0, rsc.Frame{Data: f})
	}
	e.EndBatch(0)
	if pk != 1 {
		t.Fatalf("rsc: %d packets", pk)
	}
	// rsc as benchRSC runs it: frames read into the receive region, kept in
	// place (no copy), one scatter-list packet.
	vs := &vecCountSink{}
	e = rsc.New(rsc.Config{IPv4: true, FlushAtBatchEnd: true}, vs)
	r := e.RecvBuffer()
	for _, f := range in.frames {
		e.Input(0, rsc.Frame{Hdr: header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, Data: r[:copy(r, f)]})
		r = r[(len(f)+63)&^63:]
	}
	e.EndBatch(0)
	if vs.vec != 1 || vs.bytes != 14+40+8*mss || e.Stats().Copied != 0 {
		t.Fatalf("rsc (receive region): %d scatter packets, %d bytes, %d copied", vs.vec, vs.bytes, e.Stats().Copied)
	}
	// wireguard-go
	bufs := make([][]byte, len(in.ip))
	for i, p := range in.ip {
		bufs[i] = make([]byte, wgOffset+len(p), bufCap)
		copy(bufs[i][wgOffset:], p)
	}
	var toWrite []int
	if err := wgHandleGRO(bufs, wgOffset, wgNewTCPGROTable(), wgNewUDPGROTable(), false, &toWrite); err != nil {
		t.Fatal(err)
	}
	if len(toWrite) != 1 || len(bufs[toWrite[0]]) != wgOffset+40+8*mss {
		t.Fatalf("wireguard-go: %v", toWrite)
	}
	// gVisor
	var n int
	var g gro.GRO
	g.Dispatcher = countDispatcher{&n}
	g.Init(true)
	for _, p := range in.ip {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		pkt.NetworkProtocolNumber = gheader.IPv4ProtocolNumber
		g.Enqueue(pkt)
		pkt.DecRef()
	}
	g.Flush()
	if n != 1 {
		t.Fatalf("gVisor: %d packets", n)
	}
}

type vecCountSink struct{ vec, bytes int }

func (s *vecCountSink) Deliver(_ header.VirtioNetHdr, f []byte) bool { s.bytes += len(f); return true }
func (s *vecCountSink) DeliverVec(_ header.VirtioNetHdr, f [][]byte) bool {
	s.vec++
	for _, b := range f {
		s.bytes += len(b)
	}
	return true
}

type countDispatcher struct{ n *int }

func (c countDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	*c.n++
}
func (c countDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

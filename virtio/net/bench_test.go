package virtionet

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
)

var (
	benchGuestMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	benchHostMAC  = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	benchHostIP   = netip.MustParseAddr("10.0.0.1")
	benchGuestIP  = netip.MustParseAddr("10.0.0.2")
)

// linux61 is what a Linux 6.1 guest acks of the default offer.
const linux61 = LinuxDriverFeatures

// rawFrame is a TAP frame: header then Ethernet frame.
func rawFrame(h header.VirtioNetHdr, f []byte) []byte { return append(h.AppendTo(nil), f...) }

// udpLike is a 1514-byte frame for the guest.
func udpLike() []byte {
	f := make([]byte, 1514)
	copy(f[0:6], benchGuestMAC[:])
	copy(f[6:12], benchHostMAC[:])
	f[12], f[13] = 0x08, 0x00
	return rawFrame(header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, f)
}

// tcpSegment is a host→guest TCPv4 segment of one flow.
func tcpSegment(seq uint32, n int, csum header.ChecksumMode) header.TCPFrame {
	return header.TCPFrame{DstMAC: benchGuestMAC, SrcMAC: benchHostMAC, Src: benchHostIP, Dst: benchGuestIP,
		DontFragment: true, SrcPort: 5001, DstPort: 40000, Seq: seq, Ack: 1, Flags: header.TCPFlagACK,
		Window: 1000, Payload: make([]byte, n), Checksum: csum}
}

// gso64K is a 64 KB TCPv4 GSO frame as a TAP with TUN_F_TSO4 delivers it.
func gso64K() []byte {
	f := tcpSegment(1, 65000, header.ChecksumPartial)
	h := f.PartialChecksumHdr()
	h.GSOType, h.GSOSize, h.HdrLen = header.VirtioNetHdrGSOTCPv4, 1448, 54
	return rawFrame(h, f.Build(nil))
}

// rscBatch is 44 contiguous 1448-byte segments (one 64 KB coalesced packet).
func rscBatch() [][]byte {
	var out [][]byte
	for i := 0; i < 44; i++ {
		f := tcpSegment(1+uint32(i*1448), 1448, header.ChecksumFull)
		out = append(out, rawFrame(header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, f.Build(nil)))
	}
	return out
}

// rxScenario returns one step (a batch of frames received and the buffers
// recycled) and the frames and bytes per step.
type rxScenario struct {
	name   string
	props  []string
	feat   uint64
	buf    uint32 // mergeable buffer size
	frames func() [][]byte
	batch  int
}

var rxScenarios = []rxScenario{
	{"1514", nil, linux61, 4096, func() [][]byte { return [][]byte{udpLike()} }, 64},
	{"gso64k", nil, linux61, 4096, func() [][]byte { return [][]byte{gso64K()} }, 8},
	{"rsc", []string{"guest_rsc_ext", "on"}, linux61 | 1<<FeatureRSCExt, 4096, rscBatch, 44},
}

func (sc rxScenario) rig(tb testing.TB) (r *rig, be *memBackend, step func(), frameBytes int) {
	cfg := DefaultConfig()
	for i := 0; i+1 < len(sc.props); i += 2 {
		require.NoError(tb, cfg.Set(sc.props[i], sc.props[i+1]))
	}
	be = newMemBackend(tb)
	r = newRig(tb, cfg, be, sc.feat, 256, 64<<20)
	r.setupRx(tb, 256, sc.buf, 0)
	frames := sc.frames()
	for _, f := range frames {
		frameBytes += len(f) - BackendHdrSize
	}
	frameBytes /= len(frames)
	step = func() {
		if len(frames) == 1 {
			be.pushRepeat(frames[0], sc.batch)
		} else {
			for _, f := range frames {
				be.push(f)
			}
		}
		for be.pending() > 0 || r.w.held {
			r.drainRx()
			r.recycleRx()
		}
		r.drainRx() // flush at EAGAIN
		r.recycleRx()
	}
	return r, be, step, frameBytes
}

// BenchmarkRxMem is the device's receive path (zero-copy readv from an
// in-memory backend into mergeable buffers, or through the rsc engine) with
// a driver that recycles buffers. One op is one frame.
func BenchmarkRxMem(b *testing.B) {
	for _, sc := range rxScenarios {
		b.Run(sc.name, func(b *testing.B) {
			r, _, step, n := sc.rig(b)
			for i := 0; i < 32; i++ {
				step()
			}
			b.SetBytes(int64(n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += sc.batch {
				step()
			}
			b.StopTimer()
			s := r.w.st
			require.Zero(b, s.RxDropTooBig+s.RxDropShort+s.RxDropReset)
		})
	}
}

// txRig posts one [header, frame] chain at a fixed head; step transmits it.
func txRig(tb testing.TB, frameLen int) (*rig, *memBackend, func()) {
	be := newMemBackend(tb)
	r := newRig(tb, DefaultConfig(), be, linux61, 256, 16<<20)
	f := tcpSegment(1, frameLen-54, header.ChecksumPartial)
	h := f.PartialChecksumHdr()
	if frameLen > 1514 {
		h.GSOType, h.GSOSize = header.VirtioNetHdrGSOTCPv4, 1448
	}
	head, err := r.tx.AddChain(queuetest.R(h.AppendTo(nil)), queuetest.R(f.Build(nil)))
	require.NoError(tb, err)
	_, ok := r.tx.PopUsed()
	require.False(tb, ok)
	step := func() {
		r.w.txPass()
		if _, ok := r.tx.PopUsed(); !ok {
			tb.Fatal("tx chain not completed")
		}
		_ = r.tx.PostHead(head)
	}
	return r, be, step
}

// BenchmarkTxMem is the transmit path: pop, validate the header, writev
// (header copy + guest frame memory), complete.
func BenchmarkTxMem(b *testing.B) {
	for _, n := range []int{1514, 65000} {
		b.Run(map[int]string{1514: "1514", 65000: "gso64k"}[n], func(b *testing.B) {
			_, _, step := txRig(b, n)
			step()
			b.SetBytes(int64(n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				step()
			}
		})
	}
}

// TestHotPathZeroAllocs proves the per-packet paths allocate nothing.
func TestHotPathZeroAllocs(t *testing.T) {
	for _, sc := range rxScenarios {
		t.Run("rx "+sc.name, func(t *testing.T) {
			r, _, step, _ := sc.rig(t)
			// Warm up: a chain's buffer list is allocated the first time its
			// head descriptor is popped (once per descriptor per queue).
			for i := 0; i < 32; i++ {
				step()
			}
			require.Zero(t, testing.AllocsPerRun(50, step))
			require.Positive(t, r.w.st.RxPackets)
			if sc.name == "rsc" {
				st := r.w.engine.Stats()
				require.Positive(t, st.CoalesceEvents)
				require.Zero(t, st.Copied, "segments stay where the TAP read put them")
			}
		})
	}
	for _, n := range []int{1514, 65000} {
		t.Run("tx", func(t *testing.T) {
			_, be, step := txRig(t, n)
			step()
			require.Zero(t, testing.AllocsPerRun(100, step))
			require.Positive(t, be.txN)
		})
	}
}

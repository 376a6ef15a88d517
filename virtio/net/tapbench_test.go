package virtionet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/tap"
)

// tapBench is a TAP in a fresh namespace, an AF_PACKET socket that injects
// frames into its host side (they come out of the tap fd like traffic for
// the guest), and the device's worker on it (synchronous rig).
type tapBench struct {
	ns     *TapNetns
	tp     *tap.Tap
	inject int
	r      *rig
}

func newTapBench(b *testing.B) *tapBench {
	ns := NewTapNetns(b)
	tp := ns.OpenTap(b, "bench0", "10.0.0.1/24")
	be, err := NewTapBackend(tp)
	require.NoError(b, err)
	r := newRig(b, DefaultConfig(), be, linux61, 256, 64<<20)
	r.setupRx(b, 256, 4096, 0)
	var fd int
	require.NoError(b, ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 64<<20); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName("bench0")
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	}))
	b.Cleanup(func() { _ = unix.Close(fd) })
	return &tapBench{ns: ns, tp: tp, inject: fd, r: r}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// injectFrame is a frame for AF_PACKET with PACKET_VNET_HDR: a 10-byte
// virtio_net_hdr, then the Ethernet frame.
func injectFrame(gso bool) (raw []byte, frameLen int) {
	var h header.VirtioNetHdr
	var f []byte
	if gso {
		seg := tcpSegment(1, 65000, header.ChecksumPartial)
		h = seg.PartialChecksumHdr()
		h.GSOType, h.GSOSize, h.HdrLen = header.VirtioNetHdrGSOTCPv4, 1448, 54
		f = seg.Build(nil)
	} else {
		f = udpLike()[BackendHdrSize:]
	}
	var hb [header.VirtioNetHdrLegacySize]byte
	_ = h.EncodeLegacy(hb[:])
	return append(hb[:], f...), len(f)
}

func (tb *tapBench) injectN(b *testing.B, raw []byte, n int) {
	for i := 0; i < n; i++ {
		if _, err := unix.Write(tb.inject, raw); err != nil {
			b.Fatalf("inject: %v", err)
		}
	}
}

// BenchmarkTapRx measures the receive path from a real TAP: "raw" is the
// TAP read rate (readv into a host buffer), "device" the device's worker
// reading the same frames into mergeable guest buffers (zero-copy readv,
// header checks, used ring, EVENT_IDX) with a driver that recycles the
// buffers. One op is one frame; frames are injected with the timer stopped.
func BenchmarkTapRx(b *testing.B) {
	RequireTapEnv(b)
	for _, gso := range []bool{false, true} {
		name, batch := "1514", 256
		if gso {
			name, batch = "gso64k", 32
		}
		b.Run(name, func(b *testing.B) {
			tb := newTapBench(b)
			raw, frameLen := injectFrame(gso)
			report := func(b *testing.B) {
				b.ReportMetric(float64(frameLen)*8*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "Gbit/s")
			}
			b.Run("raw", func(b *testing.B) {
				q := tb.tp.Queue(0)
				iovs := [][]byte{make([]byte, BackendHdrSize), make([]byte, MaxFrameSize)}
				b.SetBytes(int64(frameLen))
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; {
					n := min(batch, b.N-done)
					b.StopTimer()
					tb.injectN(b, raw, n)
					b.StartTimer()
					for i := 0; i < n; {
						got, err := q.ReadV(iovs)
						if errors.Is(err, tap.ErrWouldBlock) {
							ctx, cancel := context.WithTimeout(context.Background(), time.Second)
							_, werr := q.Wait(ctx, tap.Readable)
							cancel()
							if werr != nil {
								b.Fatalf("frame %d of %d missing: %v", i, n, werr)
							}
							continue
						}
						if err != nil || got != BackendHdrSize+frameLen {
							b.Fatalf("read %d, %v", got, err)
						}
						i++
					}
					done += n
				}
				report(b)
			})
			b.Run("device", func(b *testing.B) {
				w := tb.r.w
				b.SetBytes(int64(frameLen))
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; {
					n := min(batch, b.N-done)
					b.StopTimer()
					tb.injectN(b, raw, n)
					want := w.st.RxPackets + uint64(n)
					b.StartTimer()
					deadline := time.Now().Add(5 * time.Second)
					for w.st.RxPackets < want {
						tb.r.drainRx()
						tb.r.recycleRx()
						if time.Now().After(deadline) {
							b.Fatalf("device received %d of %d frames", n-int(want-w.st.RxPackets), n)
						}
					}
					done += n
				}
				b.StopTimer()
				require.Zero(b, w.st.RxDropTooBig+w.st.RxDropGSO+w.st.RxDropShort)
				report(b)
			})
		})
	}
}

// TestTapRxZeroAllocs checks the device's receive path from a real TAP
// allocates nothing per frame.
func TestTapRxZeroAllocs(t *testing.T) {
	RequireTapEnv(t)
	res := testing.Benchmark(func(b *testing.B) {
		tb := newTapBench(b)
		raw, _ := injectFrame(true)
		w := tb.r.w
		// Warm-up: every rx descriptor popped once.
		for i := 0; i < 32; i++ {
			tb.injectN(b, raw, 1)
			want := w.st.RxPackets + 1
			for w.st.RxPackets < want {
				tb.r.drainRx()
				tb.r.recycleRx()
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			tb.injectN(b, raw, 1)
			want := w.st.RxPackets + 1
			b.StartTimer()
			for w.st.RxPackets < want {
				tb.r.drainRx()
				tb.r.recycleRx()
			}
		}
	})
	require.Positive(t, res.N, "benchmark did not run")
	require.Zero(t, res.AllocsPerOp(), "allocations per frame: %s", fmt.Sprint(res.MemString()))
}

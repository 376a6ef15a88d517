package virtionet

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
)

// txVariant derives negotiated features from a fuzz byte.
func txVariant(v uint8) uint64 {
	f := uint64(linux61)
	if v&1 != 0 {
		f &^= 1 << FeatureHostTSO4
	}
	if v&2 != 0 {
		f &^= 1<<FeatureHostTSO6 | 1<<FeatureHostECN
	}
	if v&4 != 0 { // legacy driver without MRG_RXBUF: 10-byte header, GSO bit
		f = f&0xFFFFFFFF&^(1<<FeatureMrgRxBuf) | 1<<FeatureGSO
	}
	return f
}

// FuzzTxChain feeds arbitrary guest transmit chains (header and frame,
// split over up to three descriptors) through the transmit path: the chain
// is always completed, and whatever reaches the backend carries a header
// the negotiated features allow and exactly the guest's frame bytes.
func FuzzTxChain(f *testing.F) {
	fr := tcpSegment(1, 100, header.ChecksumPartial)
	h := fr.PartialChecksumHdr()
	good := append(h.AppendTo(nil), fr.Build(nil)...)
	f.Add(good, uint8(0), uint16(12), uint16(40))
	g := h
	g.GSOType, g.GSOSize = header.VirtioNetHdrGSOTCPv4, 50
	f.Add(append(g.AppendTo(nil), fr.Build(nil)...), uint8(0), uint16(3), uint16(500))
	f.Add(append(g.AppendTo(nil), fr.Build(nil)...), uint8(1), uint16(0), uint16(0))
	g.GSOType = header.VirtioNetHdrGSOTCPv6 | header.VirtioNetHdrGSOECN
	f.Add(append(g.AppendTo(nil), fr.Build(nil)...), uint8(2), uint16(12), uint16(13))
	f.Add(good[:12], uint8(0), uint16(12), uint16(12))
	f.Add(good[:20], uint8(4), uint16(10), uint16(11))
	f.Add([]byte{}, uint8(0), uint16(0), uint16(0))

	rigs := map[uint8]*rig{}
	bes := map[uint8]*memBackend{}
	for v := uint8(0); v < 8; v++ {
		be := newMemBackend(f)
		be.keep = true
		rigs[v] = newRig(f, DefaultConfig(), be, txVariant(v), 16, 4<<20)
		bes[v] = be
	}
	f.Fuzz(func(t *testing.T, data []byte, variant uint8, s1, s2 uint16) {
		variant &= 7
		r, be := rigs[variant], bes[variant]
		neg := r.w.negotiated
		hdrLen := r.w.hdrLen
		if len(data) > 2*MaxFrameSize {
			data = data[:2*MaxFrameSize]
		}
		a, b := min(int(s1), len(data)), min(int(s2), len(data))
		if a > b {
			a, b = b, a
		}
		var bufs []queuetest.Buffer
		for _, p := range [][]byte{data[:a], data[a:b], data[b:]} {
			bufs = append(bufs, queuetest.R(p))
		}
		r.tx.ResetData()
		head, err := r.tx.AddChain(bufs...)
		if err != nil {
			t.Skip(err)
		}
		before := be.txN
		drops := func() uint64 {
			s := r.w.st
			return s.TxDropShort + s.TxDropTooBig + s.TxDropGSO + s.TxDropCsum + s.TxDropBackend
		}
		d0 := drops()
		r.w.txPass()
		e, ok := r.tx.PopUsed()
		if !ok || e.ID != uint32(head) || e.Len != 0 {
			t.Fatalf("chain not completed: %+v %v", e, ok)
		}
		r.tx.Reclaim(head)
		if r.w.txq.Err() != nil {
			t.Fatalf("queue broke: %v", r.w.txq.Err())
		}
		if be.txN == before {
			if drops() != d0+1 {
				t.Fatalf("frame neither sent nor counted as dropped")
			}
			return
		}
		out := be.last
		oh, _ := header.DecodeVirtioNetHdr(out)
		frame := out[BackendHdrSize:]
		if !bytes.Equal(frame, data[hdrLen:]) {
			t.Fatalf("frame bytes differ")
		}
		n := len(frame)
		if n < header.EthernetMinSize || n > MaxFrameSize {
			t.Fatalf("frame of %d bytes sent", n)
		}
		if oh.Flags&^header.VirtioNetHdrFNeedsCsum != 0 || oh.NumBuffers != 0 {
			t.Fatalf("header %v", oh)
		}
		if oh.Flags != 0 && int(oh.CsumStart)+int(oh.CsumOffset)+2 > n {
			t.Fatalf("csum offsets beyond frame: %v", oh)
		}
		if oh.GSOType != 0 {
			gso := neg&(1<<FeatureGSO) != 0
			ok := false
			switch oh.GSOType &^ header.VirtioNetHdrGSOECN {
			case header.VirtioNetHdrGSOTCPv4:
				ok = gso || neg&(1<<FeatureHostTSO4) != 0
			case header.VirtioNetHdrGSOTCPv6:
				ok = gso || neg&(1<<FeatureHostTSO6) != 0
			case header.VirtioNetHdrGSOUDP:
				ok = gso || neg&(1<<FeatureHostUFO) != 0
			}
			if oh.GSOType&header.VirtioNetHdrGSOECN != 0 && !gso && neg&(1<<FeatureHostECN) == 0 {
				ok = false
			}
			if !ok || oh.GSOSize == 0 || int(oh.HdrLen) > n {
				t.Fatalf("GSO header not allowed by %#x: %v", neg, oh)
			}
		}
	})
}

// rxVariant describes a receive configuration for FuzzRxFrame.
type rxVariant struct {
	props []string
	feat  uint64
	mrg   bool
}

var rxVariants = []rxVariant{
	{nil, linux61, true},
	{nil, linux61 &^ (1 << FeatureMrgRxBuf), false},
	{[]string{"guest_rsc_ext", "on"}, linux61 | 1<<FeatureRSCExt, true},
	{[]string{"x-rsc-gso", "on"}, linux61 &^ (1 << FeatureMrgRxBuf), false},
	{nil, linux61 &^ (1<<FeatureGuestCSUM | 1<<FeatureGuestTSO4 | 1<<FeatureGuestTSO6 | 1<<FeatureGuestECN | 1<<FeatureGuestUFO), true},
	{nil, linux61&0xFFFFFFFF&^(1<<FeatureMrgRxBuf) | 1<<FeatureGSO, false}, // legacy, 10-byte header
}

// readChain copies len bytes from the writable buffers of the chain at head
// (direct descriptors, as setupRx lays them out).
func (r *rig) readChain(head uint16, n uint32) []byte {
	var out []byte
	i := head
	for n > 0 {
		d, err := r.mem.Slice(r.rx.Desc+queue.DescSize*uint64(i), queue.DescSize)
		if err != nil {
			return out
		}
		addr := binary.LittleEndian.Uint64(d[0:8])
		l := min(n, binary.LittleEndian.Uint32(d[8:12]))
		b, err := r.mem.Slice(addr, uint64(l))
		if err != nil {
			return out
		}
		out = append(out, b...)
		n -= l
		if binary.LittleEndian.Uint16(d[12:14])&queue.DescFNext == 0 {
			break
		}
		i = binary.LittleEndian.Uint16(d[14:16])
	}
	return out
}

// FuzzRxFrame feeds arbitrary TAP frames (12-byte header and frame) through
// the receive path in several configurations (mergeable, big packets,
// RSC, x-rsc-gso, no GUEST_CSUM, legacy header): no crash, nothing
// delivered that the driver's features do not allow, frames delivered
// byte-exact (or with only the checksum completed). The input is extended
// with a byte pattern to padTo bytes, so large frames come from small
// inputs (the minimizer is slow on 64 KB inputs).
func FuzzRxFrame(f *testing.F) {
	seg := tcpSegment(1, 200, header.ChecksumFull).Build(nil)
	f.Add(rawFrame(header.VirtioNetHdr{Flags: header.VirtioNetHdrFDataValid}, seg), uint8(2), uint32(0))
	gso := gso64K()
	for _, v := range []uint8{0, 1, 3, 4} {
		f.Add(gso[:100], v, uint32(len(gso)))
	}
	f.Add(gso[:100], uint8(0), uint32(BackendHdrSize+MaxFrameSize+1))
	part := tcpSegment(1, 300, header.ChecksumPartial)
	f.Add(rawFrame(part.PartialChecksumHdr(), part.Build(nil)), uint8(4), uint32(0))
	f.Add(rawFrame(header.VirtioNetHdr{}, seg[:20]), uint8(2), uint32(0))
	f.Add(make([]byte, 5), uint8(0), uint32(0))
	f.Add(rawFrame(header.VirtioNetHdr{Flags: 1, CsumStart: 0xffff, CsumOffset: 0xffff}, seg), uint8(5), uint32(0))

	type slot struct {
		r  *rig
		be *memBackend
	}
	var rigs []slot
	for _, v := range rxVariants {
		cfg := DefaultConfig()
		for i := 0; i+1 < len(v.props); i += 2 {
			if err := cfg.Set(v.props[i], v.props[i+1]); err != nil {
				f.Fatal(err)
			}
		}
		be := newMemBackend(f)
		r := newRig(f, cfg, be, v.feat, 256, 8<<20)
		if v.mrg {
			r.setupRx(f, 256, 2048, 0)
		} else {
			r.setupRx(f, 14, uint32(r.w.hdrLen), 17)
		}
		rigs = append(rigs, slot{r, be})
	}
	f.Fuzz(func(t *testing.T, raw []byte, variant uint8, padTo uint32) {
		s := rigs[int(variant)%len(rigs)]
		r, be, w := s.r, s.be, s.r.w
		padTo = min(padTo, BackendHdrSize+MaxFrameSize+100)
		raw = raw[:len(raw):len(raw)] // never append into the fuzzer's buffer
		for i := 0; len(raw) < int(padTo); i++ {
			raw = append(raw, byte(i*13))
		}
		if len(raw) > BackendHdrSize+MaxFrameSize+100 {
			raw = raw[:BackendHdrSize+MaxFrameSize+100]
		}
		be.push(raw)
		r.drainRx()
		if w.rxq.Err() != nil || !w.rxOn {
			t.Fatalf("rx queue unusable: %v", w.rxq.Err())
		}
		if be.pending() != 0 || w.held {
			t.Fatalf("frame not consumed (pending %d, held %v)", be.pending(), w.held)
		}
		csum := w.cfg.offloads&(1<<FeatureGuestCSUM) != 0
		for {
			e, ok := r.rx.PopUsed()
			if !ok {
				break
			}
			first := r.readChain(uint16(e.ID), e.Len)
			_ = r.rx.PostHead(uint16(e.ID))
			if len(first) < w.hdrLen {
				t.Fatalf("used length %d", e.Len)
			}
			h, _ := header.DecodeVirtioNetHdrLegacy(first)
			data := first[w.hdrLen:]
			if w.numBufs {
				nb := binary.LittleEndian.Uint16(first[10:12])
				if !w.mrg && nb != 1 {
					t.Fatalf("num_buffers %d without MRG_RXBUF", nb)
				}
				for i := 1; i < int(nb); i++ {
					e, ok := r.rx.PopUsed()
					if !ok {
						t.Fatalf("num_buffers %d but only %d used", nb, i)
					}
					data = append(data, r.readChain(uint16(e.ID), e.Len)...)
					_ = r.rx.PostHead(uint16(e.ID))
				}
			}
			if !csum && h.Flags != 0 {
				t.Fatalf("flags %#x without GUEST_CSUM", h.Flags)
			}
			if h.GSOType != 0 {
				var bit uint
				switch h.GSOType &^ header.VirtioNetHdrGSOECN {
				case header.VirtioNetHdrGSOTCPv4:
					bit = FeatureGuestTSO4
				case header.VirtioNetHdrGSOTCPv6:
					bit = FeatureGuestTSO6
				case header.VirtioNetHdrGSOUDP:
					bit = FeatureGuestUFO
				default:
					t.Fatalf("gso type %#x", h.GSOType)
				}
				if w.cfg.offloads&(1<<bit) == 0 {
					t.Fatalf("gso type %#x not enabled (%#x)", h.GSOType, w.cfg.offloads)
				}
			}
			if h.Flags&header.VirtioNetHdrFRSCInfo != 0 && w.negotiated&(1<<FeatureRSCExt) == 0 {
				t.Fatalf("RSC_INFO without RSC_EXT")
			}
			in := raw[BackendHdrSize:]
			if len(data) != len(in) {
				t.Fatalf("delivered %d bytes of a %d-byte frame", len(data), len(in))
			}
			if !bytes.Equal(data, in) {
				// Only a software-completed checksum may differ.
				diff := 0
				for i := range data {
					if data[i] != in[i] {
						diff++
					}
				}
				if csum || diff > 2 {
					t.Fatalf("frame changed in %d bytes", diff)
				}
			}
		}
		if r.rx.EventIdx {
			_ = r.rx.SetUsedEvent(r.rx.UsedIdx())
		}
	})
}

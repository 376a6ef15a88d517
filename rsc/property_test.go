package rsc

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/stretchr/testify/require"
)

// source supplies random choices: a PRNG for property tests, fuzz bytes
// for the fuzz target.
type source interface {
	IntN(n int) int
	Uint32() uint32
}

// byteSource draws choices from fuzz input, then zeros.
type byteSource struct{ b []byte }

func (s *byteSource) next() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *byteSource) IntN(n int) int {
	if n <= 256 {
		return int(s.next()) % n
	}
	return int(s.Uint32() % uint32(n))
}

func (s *byteSource) Uint32() uint32 {
	return uint32(s.next()) | uint32(s.next())<<8 | uint32(s.next())<<16 | uint32(s.next())<<24
}

func (s *byteSource) exhausted() bool { return len(s.b) == 0 }

// genFlow is the generator's view of one TCP flow.
type genFlow struct {
	opts []segOpt
	seq  uint32
	ack  uint32
	win  uint16
	ts   uint32
	tos  uint8
	df   bool
}

// generator produces a random but mostly coalescable frame mix.
type generator struct {
	r     source
	flows []*genFlow
}

func newGenerator(r source, nflows int) *generator {
	g := &generator{r: r}
	for i := range nflows {
		f := &genFlow{seq: r.Uint32(), ack: r.Uint32(), win: uint16(1000 + i), df: true}
		f.opts = append(f.opts, withSrcPort(uint16(40000+i%5)))
		if i%2 == 1 {
			f.opts = append(f.opts, v6)
		}
		if i%7 == 3 {
			f.opts = append(f.opts, withVLAN(uint16(i)))
		}
		g.flows = append(g.flows, f)
	}
	return g
}

func (g *generator) frame() Frame {
	r := g.r
	fl := g.flows[r.IntN(len(g.flows))]
	opts := append([]segOpt{}, fl.opts...)
	opts = append(opts, withAck(fl.ack), withWin(fl.win), withTOS(fl.tos), withDF(fl.df))
	if fl.ts != 0 {
		opts = append(opts, withOptions(tsOpt(fl.ts, 1)))
	}
	n := mss
	if r.IntN(4) == 0 {
		n = 1 + r.IntN(2000)
	}
	seq := fl.seq
	switch c := r.IntN(100); {
	case c < 55: // contiguous data
	case c < 60: // gap
		seq += uint32(1 + r.IntN(3000))
	case c < 64: // retransmission / overlap
		seq -= uint32(r.IntN(3000))
	case c < 70: // pure ACK: dup, cumulative or window update
		n = 0
		switch r.IntN(3) {
		case 1:
			fl.ack += uint32(r.IntN(5000))
		case 2:
			fl.win += uint16(r.IntN(100))
		}
		opts = append(opts, withAck(fl.ack), withWin(fl.win))
	case c < 74: // piggy-backed ACK advance
		fl.ack += uint32(r.IntN(3000))
		opts = append(opts, withAck(fl.ack))
	case c < 78:
		flags := []uint8{header.TCPFlagPSH, header.TCPFlagFIN, header.TCPFlagSYN, header.TCPFlagRST,
			header.TCPFlagURG, header.TCPFlagCWR, header.TCPFlagECE, 0}
		opts = append(opts, withFlags(header.TCPFlagACK|flags[r.IntN(len(flags))]))
	case c < 80:
		fl.tos = uint8(r.IntN(4)) | uint8(r.IntN(2))<<2
		opts = append(opts, withTOS(fl.tos))
	case c < 82:
		fl.df = !fl.df
		opts = append(opts, withDF(fl.df))
	case c < 84:
		fl.ts = uint32(r.IntN(3))
		if fl.ts != 0 {
			opts = append(opts, withOptions(tsOpt(fl.ts, 1)))
		} else {
			opts = append(opts, withOptions(nil))
		}
	case c < 86:
		opts = append(opts, noFlags, withCsum(header.ChecksumMode(r.IntN(2)*2))) // full or bad
	case c < 88:
		opts = append(opts, partial)
	case c < 89:
		opts = append(opts, withPadding(r.IntN(100)))
	case c < 90:
		opts = append(opts, withIPOptions([]byte{1, 1, 1, 1}))
	case c < 91:
		opts = append(opts, withMF)
	case c < 92:
		opts = append(opts, withTTL(uint8(1+r.IntN(255))))
	case c < 93:
		n = 20000 + r.IntN(45000)
		opts = append(opts, withHdr(header.VirtioNetHdr{Flags: header.VirtioNetHdrFNeedsCsum,
			GSOType: header.VirtioNetHdrGSOTCPv4, GSOSize: mss}))
	case c < 95: // non-TCP or non-IP
		f := D(seq, 10, opts...)
		if r.IntN(2) == 0 {
			binary.BigEndian.PutUint16(f.Data[12:], header.EtherTypeARP)
		} else if header.Ethernet(f.Data).Type() == header.EtherTypeIPv4 {
			f.Data[14+9] = header.ProtocolUDP
		}
		return f
	default: // byte mutation of a valid frame
		f := D(seq, n, opts...)
		for range 1 + r.IntN(4) {
			f.Data[r.IntN(min(len(f.Data), 80))] ^= byte(1 + r.IntN(255))
		}
		if r.IntN(2) == 0 {
			f.Data = f.Data[:r.IntN(len(f.Data)+1)]
		}
		return f
	}
	if n > 0 && seq == fl.seq {
		fl.seq += uint32(n)
	}
	return D(seq, n, opts...)
}

// randomConfig picks an engine configuration.
func randomConfig(r source) Config {
	cfg := Config{
		IPv4:            r.IntN(8) != 0,
		IPv6:            r.IntN(8) != 0,
		Interval:        time.Duration(r.IntN(3)) * interval,
		FlushAtBatchEnd: r.IntN(2) == 0,
		MaxFlows:        1 + r.IntN(8),
		GSOMode:         r.IntN(4) == 0,
		GuestECN:        r.IntN(2) == 0,
		CompatChecksum:  r.IntN(4) == 0,
		Timestamps:      r.IntN(4) != 0,
	}
	if r.IntN(4) == 0 {
		cfg.MaxFrame = 1514 + r.IntN(20000)
	}
	return cfg
}

// Input modes of runProgram.
const (
	modeCopy  = iota // frames from the caller's memory: the engine copies
	modeRecv         // each frame read into RecvBuffer (as the device does)
	modeBatch        // several frames read into one region, then input
	modeMixed        // any of the above per frame
	numModes
)

// runProgram feeds generated frames with random clock steps, ticks, batch
// ends and ring-full periods, then checks the stream invariants. Frames are
// copied by the engine or read into its receive region (scribbling over
// the rest of the region, which must not hold anything pending), and the
// sink takes scatter lists or not.
func runProgram(t testing.TB, r source, steps int, done func() bool) {
	cfg := randomConfig(r)
	vs := &vecSink{}
	var sink Sink = &vs.recSink
	if r.IntN(2) == 0 {
		sink = vs
	}
	s := &vs.recSink
	e := New(cfg, sink)
	g := newGenerator(r, 1+r.IntN(6))
	mode := r.IntN(numModes)
	var now time.Duration
	var inputs []Frame
	input := func(f Frame) {
		for !e.Input(now, f) {
			if !s.full {
				t.Fatal("Input refused while the sink accepts")
			}
			s.full = false // the guest posts buffers; retry the same frame
		}
	}
	region := func() []byte {
		for {
			b := e.RecvBuffer()
			if b != nil {
				if len(b) < BufferSize {
					t.Fatalf("receive region of %d bytes", len(b))
				}
				// The region is free: scribble over a part of it.
				for j := range b[:min(len(b), r.IntN(80000))] {
					b[j] = 0xa5
				}
				return b
			}
			if !s.full {
				t.Fatal("RecvBuffer refused while the sink accepts")
			}
			s.full = false
		}
	}
	for i := 0; i < steps && !done(); i++ {
		switch c := r.IntN(20); {
		case c == 0:
			now += time.Duration(r.IntN(int(2 * interval)))
			e.Tick(now)
		case c == 1:
			e.EndBatch(now)
		case c == 2:
			s.full = !s.full
		default:
			m := mode
			if m == modeMixed {
				m = r.IntN(modeMixed)
			}
			var batch []Frame
			switch m {
			case modeCopy:
				f := g.frame()
				inputs = append(inputs, Frame{Hdr: f.Hdr, Data: bytes.Clone(f.Data)})
				input(f)
			case modeRecv:
				f := g.frame()
				inputs = append(inputs, Frame{Hdr: f.Hdr, Data: bytes.Clone(f.Data)})
				b := region()
				if len(f.Data) <= len(b) {
					f.Data = b[:copy(b, f.Data)]
				}
				input(f)
			case modeBatch:
				b := region()
				for k := 1 + r.IntN(8); k > 0; k-- {
					f := g.frame()
					gap := r.IntN(100)
					if gap+len(f.Data) > len(b) {
						break
					}
					inputs = append(inputs, Frame{Hdr: f.Hdr, Data: bytes.Clone(f.Data)})
					b = b[gap:]
					f.Data = b[:copy(b, f.Data)]
					b = b[len(f.Data):]
					batch = append(batch, f)
				}
				for _, f := range batch {
					input(f)
				}
			}
		}
		if e.Pending() > len(e.flows) || len(e.flows) != normalize(cfg).MaxFlows {
			t.Fatal("flow table exceeded its bound")
		}
	}
	s.full = false
	if !e.FlushAll() {
		t.Fatal("FlushAll refused")
	}
	if err := e.checkMemory(); err != nil {
		t.Fatal(err)
	}
	checkStream(t, cfg, inputs, s.out)
	st := e.Stats()
	if st.Frames != uint64(len(inputs)) {
		t.Fatalf("Frames = %d, inputs %d", st.Frames, len(inputs))
	}
}

func TestPropertyRandomStreams(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 50
	}
	for seed := range n {
		r := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
		ok := t.Run("", func(t *testing.T) {
			runProgram(t, r, 400, func() bool { return false })
		})
		if !ok {
			t.Fatalf("seed %d failed", seed)
		}
	}
}

// FuzzEngine drives the engine with a program decoded from the fuzz input
// (configuration, frame mix with mutations, clock, ring-full periods) and
// checks the stream invariants: per flow the delivered TCP byte stream equals
// the input's, no reordering within a flow, nothing over 65535 bytes of IP
// datagram, memory bounded, non-coalesced frames byte-identical.
func FuzzEngine(f *testing.F) {
	for seed := range 8 {
		r := rand.New(rand.NewPCG(uint64(seed), 1))
		b := make([]byte, 512)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{3}, 200))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &byteSource{b: data}
		runProgram(t, s, 2000, s.exhausted)
	})
}

// FuzzEngineRawFrames feeds arbitrary bytes as frames (split at 0xFF 0xFF
// markers) after a valid prefix, with every header flag combination.
func FuzzEngineRawFrames(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add(D(seq0, 10).Data, uint8(2))
	f.Add(D(seq0, 10, v6).Data, uint8(1))
	f.Add(append(D(seq0, 10, withVLAN(3)).Data, 0xff, 0xff, 0x45), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, flags uint8) {
		cfg := defaultConfig()
		cfg.MaxFlows = 2
		s := &recSink{}
		e := New(cfg, s)
		var inputs []Frame
		add := func(fr Frame) {
			require.True(t, e.Input(0, fr))
			inputs = append(inputs, Frame{Hdr: fr.Hdr, Data: bytes.Clone(fr.Data)})
		}
		add(D(seq0, mss))
		add(D(seq0, mss, v6))
		for _, part := range bytes.Split(data, []byte{0xff, 0xff}) {
			add(Frame{Hdr: header.VirtioNetHdr{Flags: flags & 7, GSOType: flags >> 5}, Data: part})
			add(D(seq0+mss, mss))
		}
		require.True(t, e.FlushAll())
		checkStream(t, cfg, inputs, s.out)
	})
}

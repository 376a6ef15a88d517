package rsc

import (
	"testing"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/stretchr/testify/require"
)

// scenario is one conformance scenario of docs/rsc-spec.md part (a). run
// drives the harness and asserts; the harness's stream checker (checkStream,
// called by h.finish) additionally asserts the invariants every scenario
// shares: TCP byte order per flow, valid IPv4 header checksums, IP length ==
// bytes present, every input delivered exactly once, non-coalesced frames
// byte-identical with their header.
type scenario struct {
	id   string
	cfg  func(*Config)
	run  func(t *testing.T, h *harness)
	note string // where the engine covers only part of a device-level scenario
}

// seqs returns n contiguous MSS data segments starting at seq.
func seqs(seq uint32, n int, opts ...segOpt) []Frame {
	out := make([]Frame, n)
	for i := range out {
		out[i] = D(seq+uint32(i*mss), mss, opts...)
	}
	return out
}

var scenarios = []scenario{
	{id: "S01_BasicV4", run: func(t *testing.T, h *harness) {
		fs := seqs(seq0, 10)
		last := D(seq0+9*mss, mss, withAck(ackA+50), withWin(winW+1))
		fs[9] = last
		h.in(fs...)
		require.Empty(t, h.s.out, "held until the interval")
		h.advance(interval)
		out := h.finish()
		require.Len(t, out, 1)
		p := requireSCU(t, out[0], 10, seq0, 10*mss)
		require.Equal(t, uint16(20+20+14480), header.IPv4(p.ip).TotalLength())
		require.Equal(t, uint16(1448), out[0].hdr.GSOSize)
		require.Equal(t, uint16(54), out[0].hdr.HdrLen)
		require.Equal(t, uint8(header.VirtioNetHdrGSOTCPv4), out[0].hdr.GSOType)
		require.Equal(t, uint32(ackA+50), p.tcp.Ack())
		require.Equal(t, uint16(winW+1), p.tcp.Window())
		st := h.e.Stats()
		require.Equal(t, uint64(9), st.Coalesced)
		require.Equal(t, uint64(1), st.CoalesceEvents)
		require.Equal(t, uint64(10), st.CoalescedSegments)
		require.Equal(t, uint64(14480), st.CoalescedBytes)
	}},
	{id: "S02_BasicV6", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 10, v6)...)
		h.advance(interval)
		out := h.finish()
		require.Len(t, out, 1)
		p := requireSCU(t, out[0], 10, seq0, 10*mss)
		require.True(t, p.v6)
		require.Equal(t, uint16(20+14480), header.IPv6(p.ip).PayloadLength())
		require.Equal(t, uint8(header.VirtioNetHdrGSOTCPv6), out[0].hdr.GSOType)
		require.Equal(t, uint16(74), out[0].hdr.HdrLen)
	}},
	{id: "S03_LoneSegment", run: func(t *testing.T, h *harness) {
		f := D(seq0, mss)
		h.in(f)
		h.advance(interval)
		out := h.finish()
		require.Len(t, out, 1)
		requirePlain(t, out[0], f)
		require.Equal(t, uint8(header.VirtioNetHdrFDataValid), out[0].hdr.Flags)
		require.LessOrEqual(t, out[0].at, interval)
	}},
	{id: "S03_LoneSegmentBatchEnd", cfg: func(c *Config) { c.FlushAtBatchEnd = true }, run: func(t *testing.T, h *harness) {
		f := D(seq0, 100)
		h.in(f)
		h.endBatch()
		require.Len(t, h.s.out, 1)
		require.Zero(t, h.s.out[0].at)
		requirePlain(t, h.finish()[0], f)
	}},
	{id: "S04_IntervalBoundary", run: func(t *testing.T, h *harness) {
		a, b := D(seq0, mss), D(seq0+mss, mss)
		h.in(a)
		deadline, ok := h.e.NextDeadline()
		require.True(t, ok)
		require.Equal(t, interval, deadline)
		h.advance(2 * interval)
		h.in(b)
		start := h.now
		h.advance(2 * interval)
		out := h.finish()
		require.Len(t, out, 2)
		requirePlain(t, out[0], a)
		requirePlain(t, out[1], b)
		require.LessOrEqual(t, out[0].at, interval*2)
		require.LessOrEqual(t, out[1].at-start, 2*interval)
	}},
	{id: "S04_NoLatencyAboveInterval", run: func(t *testing.T, h *harness) {
		// Continuous traffic: a segment arriving every 100 µs never waits
		// longer than the interval (the SCU is not extended by activity).
		for i := range 50 {
			h.now += interval / 10
			h.in(D(seq0+uint32(i*mss), mss))
			require.True(t, h.e.Tick(h.now))
		}
		out := h.finish()
		require.Greater(t, len(out), 3)
		for i, o := range out[:len(out)-1] {
			p := parseOut(t, o.frame)
			first := (p.tcp.Seq() - seq0) / mss
			arrived := interval / 10 * (1 + timeDur(first))
			require.LessOrEqual(t, o.at-arrived, interval, "packet %d", i)
		}
	}},
	{id: "S05_PSHMidStream", run: func(t *testing.T, h *harness) {
		h.in(D(seq0, mss), D(seq0+mss, mss, addFlags(header.TCPFlagPSH)), D(seq0+2*mss, mss))
		out := h.finish()
		require.Len(t, out, 1)
		p := requireSCU(t, out[0], 3, seq0, 3*mss)
		require.NotZero(t, p.tcp.Flags()&header.TCPFlagPSH)
	}},
	{id: "S06_FIN", run: func(t *testing.T, h *harness) {
		fin := D(seq0+3*mss, mss, addFlags(header.TCPFlagFIN))
		h.in(seqs(seq0, 3)...)
		h.in(fin)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 3, seq0, 3*mss)
		requirePlain(t, out[1], fin)
		require.Equal(t, uint64(1), h.e.Stats().TCPCtrlDrain)
	}},
	{id: "S07_RST", run: func(t *testing.T, h *harness) {
		rst := D(seq0+2*mss, 0, addFlags(header.TCPFlagRST))
		h.in(seqs(seq0, 2)...)
		h.in(rst)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requirePlain(t, out[1], rst)
	}},
	{id: "S08_SYNOnBusyFlow", run: func(t *testing.T, h *harness) {
		syn := D(seq0-1, 0, withFlags(header.TCPFlagSYN|header.TCPFlagACK))
		h.in(seqs(seq0, 2)...)
		h.in(syn)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requirePlain(t, out[1], syn)
		require.Equal(t, uint64(1), h.e.Stats().TCPSyn)
	}},
	{id: "S09_URG", run: func(t *testing.T, h *harness) {
		urg := D(seq0+2*mss, mss, addFlags(header.TCPFlagURG))
		h.in(seqs(seq0, 2)...)
		h.in(urg)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requirePlain(t, out[1], urg)
	}},
	{id: "S10_CWRNoGuestECN", run: func(t *testing.T, h *harness) {
		cwr := D(seq0+2*mss, mss, addFlags(header.TCPFlagCWR))
		h.in(seqs(seq0, 2)...)
		h.in(cwr)
		h.in(seqs(seq0+3*mss, 2)...)
		out := h.finish()
		require.Len(t, out, 3)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requirePlain(t, out[1], cwr)
		requireSCU(t, out[2], 2, seq0+3*mss, 2*mss)
		for _, o := range out {
			require.Zero(t, o.hdr.GSOType&header.VirtioNetHdrGSOECN)
		}
	}},
	{id: "S10_CWRGuestECN", cfg: func(c *Config) { c.GuestECN = true }, run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2, addFlags(header.TCPFlagECE))...)
		h.in(D(seq0+2*mss, mss, addFlags(header.TCPFlagCWR)))
		h.in(seqs(seq0+3*mss, 2)...)
		out := h.finish()
		require.Len(t, out, 2)
		p := requireSCU(t, out[0], 2, seq0, 2*mss)
		require.NotZero(t, p.tcp.Flags()&header.TCPFlagECE)
		require.Zero(t, out[0].hdr.GSOType&header.VirtioNetHdrGSOECN)
		p = requireSCU(t, out[1], 3, seq0+2*mss, 3*mss)
		require.NotZero(t, p.tcp.Flags()&header.TCPFlagCWR)
		require.Equal(t, uint8(header.VirtioNetHdrGSOTCPv4|header.VirtioNetHdrGSOECN), out[1].hdr.GSOType)
	}},
	{id: "S11_IPv4ECNConstant", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 4, withTOS(header.ECNECT0))...)
		out := h.finish()
		require.Len(t, out, 1)
		p := requireSCU(t, out[0], 4, seq0, 4*mss)
		require.Equal(t, uint8(header.ECNECT0), header.IPv4(p.ip).ECN())
	}},
	{id: "S11_IPv4CEMark", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2, withTOS(header.ECNECT0))...)
		h.in(seqs(seq0+2*mss, 2, withTOS(header.ECNCE))...)
		h.in(D(seq0+4*mss, mss, withTOS(header.ECNECT0)))
		out := h.finish()
		require.Len(t, out, 3)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		p := requireSCU(t, out[1], 2, seq0+2*mss, 2*mss)
		require.Equal(t, uint8(header.ECNCE), header.IPv4(p.ip).ECN(), "CE never lost")
		require.Equal(t, uint64(2), h.e.Stats().IPECN)
	}},
	{id: "S12_IPv6CEMark", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2, v6, withTOS(header.ECNECT0))...)
		ce := D(seq0+2*mss, mss, v6, withTOS(header.ECNCE))
		h.in(ce)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requirePlain(t, out[1], ce)
		require.Equal(t, uint8(header.ECNCE), header.IPv6(out[1].frame[14:]).ECN())
	}},
	{id: "S13_IPv6DSCPAF11", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3, v6, withTOS(10<<2))...)
		out := h.finish()
		require.Len(t, out, 1)
		p := requireSCU(t, out[0], 3, seq0, 3*mss)
		require.Equal(t, uint8(10<<2), header.IPv6(p.ip).TrafficClass())
	}},
	{id: "S14_TimestampsIdentical", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 5, withOptions(tsOpt(100, 200)))...)
		out := h.finish()
		require.Len(t, out, 1)
		p := requireSCU(t, out[0], 5, seq0, 5*mss)
		require.Equal(t, tsOpt(100, 200), []byte(p.tcp.Options()))
		require.Equal(t, uint16(14+20+32), out[0].hdr.HdrLen)
	}},
	{id: "S14_TimestampsDisabled", cfg: func(c *Config) { c.Timestamps = false }, run: func(t *testing.T, h *harness) {
		fs := seqs(seq0, 5, withOptions(tsOpt(100, 200)))
		h.in(fs...)
		out := h.finish()
		require.Len(t, out, 5)
		for i := range fs {
			requirePlain(t, out[i], fs[i])
		}
	}},
	{id: "S14_TimestampsDiffering", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2, withOptions(tsOpt(100, 200)))...)
		h.in(seqs(seq0+2*mss, 2, withOptions(tsOpt(101, 200)))...)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		p := requireSCU(t, out[1], 2, seq0+2*mss, 2*mss)
		ts, ok := header.ParseTCPTimestamp(p.tcp.Options())
		require.True(t, ok)
		require.Equal(t, uint32(101), ts.TSVal)
		require.Equal(t, uint64(1), h.e.Stats().Timestamp)
	}},
	{id: "S15_SACKOption", run: func(t *testing.T, h *harness) {
		sack := []byte{1, 1, header.TCPOptionSACK, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0}
		h.in(seqs(seq0, 2)...)
		s1 := ACK(seq0+2*mss, ackA, winW, withOptions(sack))
		s2 := D(seq0+2*mss, mss, withOptions(sack))
		h.in(s1, s2)
		out := h.finish()
		require.Len(t, out, 3)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requirePlain(t, out[1], s1)
		requirePlain(t, out[2], s2)
		require.Equal(t, uint64(2), h.e.Stats().TCPAllOpt)
	}},
	{id: "S16_IPv4Options", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2)...)
		o := D(seq0+2*mss, mss, withIPOptions([]byte{1, 1, 1, 0}))
		h.in(o)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requirePlain(t, out[1], o)
		require.Equal(t, uint64(1), h.e.Stats().IPOption)
	}},
	{id: "S17_Fragments", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2)...)
		mf := D(seq0+2*mss, 600, withDF(false), withMF)
		dfmf := D(seq0+2*mss+600, 600, withMF)
		h.in(mf)
		h.in(seqs(seq0+3*mss, 2)...)
		h.in(dfmf)
		// A non-first fragment carries no ports: it flushes every flow of its
		// address pair.
		later := D(0, 100, withDF(false))
		ip := header.IPv4(later.Data[14:])
		ip.SetFlagsFragment(8)
		ip.UpdateChecksum()
		h.in(seqs(seq0+5*mss, 2)...)
		h.in(later)
		out := h.finish()
		require.Len(t, out, 6)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requirePlain(t, out[1], mf)
		requireSCU(t, out[2], 2, seq0+3*mss, 2*mss)
		requirePlain(t, out[3], dfmf)
		requireSCU(t, out[4], 2, seq0+5*mss, 2*mss)
		requirePlain(t, out[5], later)
		require.Equal(t, uint64(3), h.e.Stats().IPFrag)
	}},
	{id: "S18_DFClear", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3, withDF(false))...)
		h.in(seqs(seq0+3*mss, 2)...)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 3, seq0, 3*mss)
		requireSCU(t, out[1], 2, seq0+3*mss, 2*mss)
		require.Equal(t, uint64(1), h.e.Stats().Mismatch)
	}},
	{id: "S19_IPv6ExtensionHeaders", run: func(t *testing.T, h *harness) {
		exts := [][]header.IPv6ExtHeader{
			{{Type: header.IPv6HopByHop, Data: []byte{1, 4, 0, 0, 0, 0}}},
			{{Type: header.IPv6DestOptions}},
			{{Type: header.IPv6Fragment, Data: []byte{0, 1, 0, 0, 0, 1}}},
			{{Type: header.IPv6Fragment, Data: []byte{0x10, 0, 0, 0, 0, 1}}}, // not first: no ports
		}
		var odd []Frame
		seq := uint32(seq0)
		for _, x := range exts {
			h.in(seqs(seq, 2, v6)...)
			f := D(seq+2*mss, 100, v6, withExt(x...))
			h.in(f)
			odd = append(odd, f)
			seq += 2*mss + 100
		}
		out := h.finish()
		require.Len(t, out, 8)
		for i := range exts {
			requireSCU(t, out[2*i], 2, seq0+uint32(i)*(2*mss+100), 2*mss)
			requirePlain(t, out[2*i+1], odd[i])
		}
	}},
	{id: "S20_Gap", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2)...)
		h.in(seqs(seq0+3*mss, 2)...)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requireSCU(t, out[1], 2, seq0+3*mss, 2*mss)
		require.Equal(t, uint64(1), h.e.Stats().DataOutOfOrder)
	}},
	{id: "S21_Retransmission", run: func(t *testing.T, h *harness) {
		fs := seqs(seq0, 3)
		h.in(fs...)
		h.in(fs[0])
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 3, seq0, 3*mss)
		requirePlain(t, out[1], fs[0])
		require.Equal(t, uint64(1), h.e.Stats().DataOutOfWin)
	}},
	{id: "S22_Overlap", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		ov := D(seq0+mss+100, mss)
		h.in(ov)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 3, seq0, 3*mss)
		requirePlain(t, out[1], ov)
	}},
	{id: "S23_DuplicateFirstNewWindow", run: func(t *testing.T, h *harness) {
		a := D(seq0, mss)
		b := D(seq0, mss, withWin(2*winW))
		h.in(a, b)
		out := h.finish()
		require.Len(t, out, 2)
		requirePlain(t, out[0], a)
		requirePlain(t, out[1], b)
	}},
	{id: "S24_PureCumulativeACKs", run: func(t *testing.T, h *harness) {
		acks := []Frame{ACK(seq0, 100, winW), ACK(seq0, 200, winW), ACK(seq0, 300, winW)}
		for i, a := range acks {
			h.in(a)
			require.Len(t, h.s.out, i+1, "pure ACKs are never held")
		}
		out := h.finish()
		for i := range acks {
			requirePlain(t, out[i], acks[i])
			require.False(t, isSCU(out[i]))
		}
	}},
	{id: "S25_WindowUpdateAfterData", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 5)...)
		h.in(ACK(seq0+5*mss, ackA, 2*winW))
		out := h.finish()
		require.Len(t, out, 1)
		p := requireSCU(t, out[0], 5, seq0, 5*mss)
		require.Equal(t, uint16(2*winW), p.tcp.Window())
		require.Equal(t, uint64(1), h.e.Stats().WinUpdate)
	}},
	{id: "S26_DupACKsAfterData", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		dups := []Frame{ACK(seq0+3*mss, ackA, winW), ACK(seq0+3*mss, ackA, winW), ACK(seq0+3*mss, ackA, winW)}
		h.in(dups...)
		out := h.finish()
		require.Len(t, out, 4)
		requireSCU(t, out[0], 3, seq0, 3*mss)
		for i := range dups {
			requirePlain(t, out[1+i], dups[i])
		}
		// Only the first is recognisably a duplicate (of the pending
		// packet); the others find no pending state and pass as pure ACKs.
		require.Equal(t, uint64(1), h.e.Stats().DupAck)
		require.Equal(t, uint64(2), h.e.Stats().PureAck)
	}},
	{id: "S27_PureACKThenData", run: func(t *testing.T, h *harness) {
		a := ACK(seq0, ackA, winW)
		h.in(a)
		h.in(seqs(seq0, 3)...)
		out := h.finish()
		require.Len(t, out, 2)
		requirePlain(t, out[0], a)
		requireSCU(t, out[1], 3, seq0, 3*mss)
	}},
	{id: "S28_PiggybackedACK", run: func(t *testing.T, h *harness) {
		for i := range 4 {
			h.in(D(seq0+uint32(i*mss), mss, withAck(ackA+uint32(100*i))))
		}
		h.in(D(seq0+4*mss, mss, withAck(ackA+250)))
		out := h.finish()
		require.Len(t, out, 2)
		p := requireSCU(t, out[0], 4, seq0, 4*mss)
		require.Equal(t, uint32(ackA+300), p.tcp.Ack())
		require.Equal(t, uint64(1), h.e.Stats().AckOutOfWin)
	}},
	{id: "S29_V4SizeLimit", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 46)...)
		out := h.finish()
		require.Len(t, out, 2)
		p := requireSCU(t, out[0], 45, seq0, 45*mss)
		require.Equal(t, uint16(45*mss+40), header.IPv4(p.ip).TotalLength()) // 65200
		require.Equal(t, uint64(1), h.e.Stats().OverSize)
		require.Equal(t, uint64(0), h.e.Stats().Aborts, "size limit is not an abort")
	}},
	{id: "S29_V4ExactLimit", run: func(t *testing.T, h *harness) {
		// 65535 − 40 = 65495 payload bytes fit exactly.
		h.in(D(seq0, 65495-45*1400))
		h.in(seqs2(seq0+uint32(65495-45*1400), 45, 1400)...)
		h.in(D(seq0+65495, 1))
		out := h.finish()
		require.Len(t, out, 2)
		p := requireSCU(t, out[0], 46, seq0, 65495)
		require.Equal(t, uint16(65535), header.IPv4(p.ip).TotalLength())
	}},
	{id: "S30_V6SizeLimit", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 47, v6)...)
		out := h.finish()
		require.Len(t, out, 2)
		p := requireSCU(t, out[0], 45, seq0, 45*mss)
		require.LessOrEqual(t, 40+int(header.IPv6(p.ip).PayloadLength()), 65535)
		requireSCU(t, out[1], 2, seq0+45*mss, 2*mss)
	}},
	{id: "S31_SequenceWrap", run: func(t *testing.T, h *harness) {
		h.in(seqs(0xFFFFF000, 5)...)
		out := h.finish()
		require.Len(t, out, 1)
		requireSCU(t, out[0], 5, 0xFFFFF000, 5*mss)
	}},
	{id: "S32_ACKWrap", run: func(t *testing.T, h *harness) {
		for i := range 4 {
			h.in(D(seq0+uint32(i*mss), mss, withAck(0xFFFFFF00+uint32(0x80*i))))
		}
		out := h.finish()
		require.Len(t, out, 1)
		p := requireSCU(t, out[0], 4, seq0, 4*mss)
		require.Equal(t, uint32(0x80), p.tcp.Ack())
	}},
	{id: "S33_InterleavedFlows", run: func(t *testing.T, h *harness) {
		b := withSrcPort(40001)
		h.in(D(seq0, mss), D(7000, mss, b), D(seq0+mss, mss), D(7000+mss, mss, b), D(seq0+2*mss, mss))
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 3, seq0, 3*mss)
		requireSCU(t, out[1], 2, 7000, 2*mss)
	}},
	{id: "S34_FlowTablePressure", run: func(t *testing.T, h *harness) {
		for i := range 10000 {
			h.now += 50 // 10,000 segments within 0.5 ms
			h.in(D(seq0, mss, withSrcPort(uint16(10000+i))))
		}
		h.advance(interval)
		out := h.finish()
		require.Len(t, out, 10000)
		st := h.e.Stats()
		require.Equal(t, uint64(10000-DefaultMaxFlows), st.Evictions)
		require.Len(t, h.e.flows, DefaultMaxFlows, "memory bounded by the table size")
		for _, o := range out {
			require.LessOrEqual(t, o.at, h.now)
		}
	}},
	{id: "S35_EthernetPadding", run: func(t *testing.T, h *harness) {
		a := ACK(seq0, ackA, winW, withPadding(6))
		require.Len(t, a.Data, 60)
		h.in(a)
		// A padded first data segment: pad bytes must not enter the stream.
		h.in(D(seq0, 4, withPadding(2)))
		h.in(seqs(seq0+4, 3)...)
		out := h.finish()
		require.Len(t, out, 2)
		requirePlain(t, out[0], a)
		requireSCU(t, out[1], 4, seq0, 4+3*mss)
	}},
	{id: "S36_TrailingGarbageGrowth", run: func(t *testing.T, h *harness) {
		for _, fam := range []segOpt{func(*seg) {}, v6} {
			h.in(ACK(seq0, ackA, winW, fam, withPadding(1460)))
			h.in(D(seq0, 100, fam, withPadding(1314)))
			h.in(seqs2(seq0+100, 46, mss, fam)...)
			h.advance(interval)
		}
		out := h.finish()
		for _, o := range out {
			require.LessOrEqual(t, len(o.frame), BufferSize)
		}
		for i := range h.e.flows {
			require.Len(t, h.e.flows[i].buf, BufferSize, "buffers never grow")
		}
	}},
	{id: "S37_TruncatedHeaders", run: func(t *testing.T, h *harness) {
		full := D(seq0+2*mss, mss)
		h.in(seqs(seq0, 2)...)
		cutIP := Frame{Hdr: full.Hdr, Data: full.Data[:14+10]}
		h.in(cutIP)
		require.Len(t, h.s.out, 1, "no addresses: nothing flushed")
		ihl15 := D(seq0+2*mss, 0)
		ihl15.Data = ihl15.Data[:54]
		ihl15.Data[14] = 0x4f
		h.in(ihl15)
		cut6 := D(seq0, mss, v6)
		cut6.Data = cut6.Data[:14+30]
		h.in(cut6)
		cutTCP := D(seq0+2*mss, mss)
		cutTCP.Data = cutTCP.Data[:14+20+10]
		h.in(cutTCP)
		out := h.finish()
		require.Len(t, out, 5)
		requirePlain(t, out[0], cutIP)
		requireSCU(t, out[1], 2, seq0, 2*mss)
		requirePlain(t, out[2], ihl15)
	}},
	{id: "S38_BogusLengths", run: func(t *testing.T, h *harness) {
		mut := []func(b []byte){
			func(b []byte) { header.IPv4(b[14:]).SetTotalLength(3000) },
			func(b []byte) { header.IPv4(b[14:]).SetTotalLength(39) },
			func(b []byte) { header.TCP(b[34:]).SetDataOffset(16) },
			func(b []byte) { header.TCP(b[34:]).SetDataOffset(0) },
			func(b []byte) { header.IPv4(b[14:]).SetTotalLength(50); header.TCP(b[34:]).SetDataOffset(60) },
		}
		for _, m := range mut {
			h.in(seqs(seq0, 2)...)
			f := D(seq0+2*mss, mss)
			m(f.Data)
			header.IPv4(f.Data[14:]).UpdateChecksum()
			h.in(f)
			h.in(D(seq0+2*mss, mss)) // a valid segment after it starts fresh
		}
		m6 := []uint16{0, 3000, 10}
		for _, pl := range m6 {
			f := D(seq0, mss, v6)
			header.IPv6(f.Data[14:]).SetPayloadLength(pl)
			h.in(f)
		}
		out := h.finish()
		for _, o := range out {
			if isSCU(o) {
				requireSCU(t, o, 2, seq0, 2*mss)
			}
		}
		require.Equal(t, uint64(len(mut)+len(m6)), h.e.Stats().IPHacked)
	}},
	{id: "S39_ZeroRuntFrames", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2)...)
		full := D(seq0+2*mss, mss)
		for _, n := range []int{0, 1, 6, 12, 13, 14, 15, 17, 18} {
			h.in(Frame{Data: full.Data[:n]})
		}
		vl := D(seq0, mss, withVLAN(5))
		for _, n := range []int{15, 16, 17, 18} {
			h.in(Frame{Data: vl.Data[:n]})
		}
		require.Len(t, h.s.out, 13, "runts pass through at once")
		out := h.finish()
		requireSCU(t, out[13], 2, seq0, 2*mss)
	}},
	{id: "S40_BadChecksums", run: func(t *testing.T, h *harness) {
		good := []Frame{D(seq0, mss, noFlags), D(seq0+mss, mss, noFlags)}
		badTCP := D(seq0+mss, mss, noFlags, withCsum(header.ChecksumBad))
		badIP := D(seq0+mss, mss, withBadIPCsum) // DATA_VALID covers TCP only
		h.in(good[0], badTCP)
		h.in(good[0], badIP)
		h.in(good...) // software-verified good segments coalesce
		out := h.finish()
		require.Len(t, out, 5)
		requirePlain(t, out[0], good[0])
		requirePlain(t, out[1], badTCP)
		require.Zero(t, out[1].hdr.Flags, "guest must verify and drop it")
		requirePlain(t, out[2], good[0])
		requirePlain(t, out[3], badIP)
		requireSCU(t, out[4], 2, seq0, 2*mss)
		require.Equal(t, uint64(2), h.e.Stats().BadChecksum)
	}},
	{id: "S41_HostGSOPassthrough", run: func(t *testing.T, h *harness) {
		gso := D(seq0, 45*mss, withHdr(header.VirtioNetHdr{
			Flags: header.VirtioNetHdrFNeedsCsum, GSOType: header.VirtioNetHdrGSOTCPv4,
			HdrLen: 54, GSOSize: mss, CsumStart: 34, CsumOffset: 16,
		}), withCsum(header.ChecksumPartial))
		h.in(D(seq0-400, 400))
		h.in(gso)
		next := D(seq0+45*mss, mss)
		h.in(next)
		out := h.finish()
		require.Len(t, out, 3)
		requirePlain(t, out[1], gso)
		requirePlain(t, out[2], next)
		require.Equal(t, uint64(1), h.e.Stats().HostGSO)
	}},
	{id: "S42_NeedsCsum", run: func(t *testing.T, h *harness) {
		one := D(seq0, mss, partial)
		h.in(one)
		h.advance(interval)
		h.in(seqs(seq0+mss, 3, partial)...)
		out := h.finish()
		require.Len(t, out, 2)
		requirePlain(t, out[0], one)
		require.Equal(t, uint16(34), out[0].hdr.CsumStart)
		require.Equal(t, uint16(16), out[0].hdr.CsumOffset)
		requireSCU(t, out[1], 3, seq0+mss, 3*mss)
	}},
	{id: "S43_VLAN", run: func(t *testing.T, h *harness) {
		h.in(D(seq0, mss, withVLAN(5)), D(seq0+mss, mss), D(seq0+mss, mss, withVLAN(5)),
			D(seq0+2*mss, mss, withVLAN(6)), D(seq0+2*mss, mss, withVLAN(5)))
		out := h.finish()
		require.Len(t, out, 3)
		p := requireSCU(t, out[0], 3, seq0, 3*mss)
		require.Equal(t, 18, p.l2)
		require.Equal(t, uint16(18+20+20), out[0].hdr.HdrLen)
		tci, _ := header.Ethernet(out[0].frame).VLAN()
		require.Equal(t, uint16(5), tci)
	}},
	{id: "S43_VLANPriorityChange", run: func(t *testing.T, h *harness) {
		h.in(D(seq0, mss, withVLAN(5)), D(seq0+mss, mss, withVLAN(5|3<<13)))
		out := h.finish()
		require.Len(t, out, 2, "PCP change: different Ethernet header, not merged")
	}},
	{id: "S44_NegotiationV4Only", cfg: func(c *Config) { c.IPv6 = false }, note: "engine part: rsc4/rsc6 predicates come from the device", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		f6 := seqs(seq0, 3, v6)
		h.in(f6...)
		out := h.finish()
		require.Len(t, out, 4)
		for i := range f6 {
			requirePlain(t, out[i], f6[i])
		}
		requireSCU(t, out[3], 3, seq0, 3*mss)
	}},
	{id: "S44_NegotiationOff", cfg: func(c *Config) { c.IPv4, c.IPv6 = false, false }, run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		h.in(seqs(seq0, 3, v6)...)
		for _, o := range h.finish() {
			require.False(t, isSCU(o))
			require.False(t, o.hdr.IsGSO())
		}
	}},
	{id: "S44_GSOModeLinuxGuest", cfg: func(c *Config) { c.GSOMode = true }, run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		h.in(seqs(seq0, 3, v6)...)
		out := h.finish()
		require.Len(t, out, 2)
		for _, o := range out {
			require.False(t, isSCU(o), "no RSC_INFO without RSC_EXT")
			require.Equal(t, uint8(header.VirtioNetHdrFNeedsCsum), o.hdr.Flags)
			require.Equal(t, uint16(mss), o.hdr.GSOSize)
		}
	}},
	{id: "S45_OffloadsSet", note: "engine part: command validation is the device's", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2)...)
		h.s.full = true
		off := h.cfg
		off.IPv4, off.IPv6 = false, false
		require.False(t, h.e.SetConfig(off), "cannot flush: change refused")
		require.True(t, h.e.Config().IPv4, "no state change on failure")
		h.s.full = false
		require.True(t, h.e.SetConfig(off))
		require.False(t, h.e.Config().IPv4)
		h.in(seqs(seq0+2*mss, 2)...)
		require.True(t, h.e.SetConfig(h.cfg))
		h.in(seqs(seq0+4*mss, 2)...)
		out := h.finish()
		require.Len(t, out, 4)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requireSCU(t, out[3], 2, seq0+4*mss, 2*mss)
	}},
	{id: "S46_DisableWhilePending", note: "engine part: segmenting TAP GSO frames queued before the change is the device's", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		h.in(seqs(seq0, 3, v6)...)
		off := h.cfg
		off.IPv4 = false
		require.True(t, h.e.SetConfig(off))
		require.Len(t, h.s.out, 2, "pending SCUs delivered before the change completes")
		h.in(seqs(seq0+3*mss, 3)...)
		out := h.finish()
		for _, o := range out[2:] {
			require.False(t, o.hdr.IsGSO())
		}
	}},
	{id: "S47_XDPSequence", note: "engine part", run: func(t *testing.T, h *harness) {
		off := h.cfg
		off.IPv4, off.IPv6 = false, false
		require.True(t, h.e.SetConfig(off))
		h.in(seqs(seq0, 5)...)
		require.Len(t, h.s.out, 5)
		for _, o := range h.s.out {
			require.False(t, o.hdr.IsGSO())
		}
		require.True(t, h.e.SetConfig(h.cfg))
		h.in(seqs(seq0+5*mss, 5)...)
		out := h.finish()
		require.Len(t, out, 6)
		requireSCU(t, out[5], 5, seq0+5*mss, 5*mss)
	}},
	{id: "S48_ResetWithPending", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		h.e.Reset()
		h.inputs = nil
		require.Zero(t, h.e.Pending())
		_, ok := h.e.NextDeadline()
		require.False(t, ok, "timer cancelled")
		h.advance(10 * interval)
		require.True(t, h.e.FlushAll())
		require.Empty(t, h.s.out, "nothing delivered after reset")
		require.Equal(t, uint64(1), h.e.Stats().Discarded)
		h.in(seqs(seq0+3*mss, 2)...)
		out := h.finish()
		require.Len(t, out, 1)
	}},
	{id: "S49_RingExhaustion", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		h.s.full = true
		h.now += interval
		require.False(t, h.e.Tick(h.now), "back-pressure reported")
		require.False(t, h.e.EndBatch(h.now))
		require.Equal(t, 1, h.e.Pending(), "SCU retained")
		next := D(seq0+3*mss, mss)
		require.False(t, h.e.Input(h.now, next), "TAP reading paused")
		h.s.full = false // guest posted buffers
		require.True(t, h.e.Tick(h.now))
		h.in(next)
		out := h.finish()
		require.Len(t, out, 2)
		requireSCU(t, out[0], 3, seq0, 3*mss)
		requirePlain(t, out[1], next)
		require.NotZero(t, h.e.Stats().DrainFailed)
	}},
	{id: "S49_RingExhaustionOnException", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 2)...)
		h.s.full = true
		fin := D(seq0+2*mss, 0, addFlags(header.TCPFlagFIN))
		require.False(t, h.e.Input(h.now, fin))
		other := ACK(9, 9, 9, withSrcPort(1))
		require.False(t, h.e.Input(h.now, other), "plain frames wait too")
		h.s.full = false
		h.in(fin, other)
		out := h.finish()
		require.Len(t, out, 3)
		requireSCU(t, out[0], 2, seq0, 2*mss)
		requirePlain(t, out[1], fin)
		require.Equal(t, uint64(1), h.e.Stats().TCPCtrlDrain, "counted once despite the retry")
	}},
	{id: "S50_PauseSnapshot", note: "engine part: the device flushes before saving and keeps the virtual clock stopped while paused", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		// Paused: the virtual clock does not advance, nothing expires.
		require.True(t, h.e.Tick(h.now))
		require.Empty(t, h.s.out)
		require.True(t, h.e.FlushAll(), "flushed before save")
		require.Len(t, h.s.out, 1)
		cfg := h.e.Config()
		require.True(t, cfg.IPv4 && cfg.IPv6)
		h.finish()
	}},
	{id: "S51_SmallBuffers", cfg: func(c *Config) { c.MaxFrame = 1514 }, run: func(t *testing.T, h *harness) {
		fs := seqs(seq0, 3)
		h.in(fs...)
		small := seqs2(seq0+3*mss, 5, 400)
		h.in(small...)
		out := h.finish()
		for _, o := range out {
			require.LessOrEqual(t, len(o.frame), 1514)
		}
		requirePlain(t, out[0], fs[0])
		requireSCU(t, out[3], 3, seq0+3*mss, 1200)
	}},
	{id: "S52_CounterWrap", cfg: func(c *Config) { c.Interval = 0 }, run: func(t *testing.T, h *harness) {
		h.in(D(seq0, mss, withWin(0)))
		for w := 1; w <= 65535; w++ {
			require.True(t, h.e.Input(h.now, ACK(seq0+mss, ackA, uint16(w))))
		}
		h.inputs = nil
		require.True(t, h.e.FlushAll())
		out := h.s.out
		require.Len(t, out, 1)
		require.Equal(t, uint16(1), out[0].hdr.CsumStart, "ACKs are not counted")
		require.Equal(t, uint64(65535), h.e.Stats().WinUpdate)
	}},
	{id: "S53_IntervalZeroFlushEachBatch", cfg: func(c *Config) { c.Interval = 0 }, note: "engine part: property parsing is the device's", run: func(t *testing.T, h *harness) {
		h.in(seqs(seq0, 3)...)
		_, ok := h.e.NextDeadline()
		require.False(t, ok)
		h.endBatch()
		require.Len(t, h.s.out, 1)
		h.finish()
	}},
	{id: "S53_ExtremeValues", cfg: func(c *Config) { c.Interval = -5; c.MaxFlows = 1 << 20; c.MaxFrame = 1 << 30 }, run: func(t *testing.T, h *harness) {
		cfg := h.e.Config()
		require.Equal(t, timeDur(0), cfg.Interval)
		require.Equal(t, MaxFlowsLimit, cfg.MaxFlows)
		require.Equal(t, BufferSize, cfg.MaxFrame)
		h.in(seqs(seq0, 3)...)
		h.endBatch()
		h.finish()
	}},
	{id: "S54_Statistics", run: func(t *testing.T, h *harness) {
		// Scenario 1.
		h.in(seqs(seq0, 10)...)
		h.advance(interval)
		// Scenario 20 on flow B.
		b := withSrcPort(40001)
		h.in(seqs(seq0, 2, b)...)
		h.in(seqs(seq0+3*mss, 2, b)...)
		h.advance(interval)
		// Scenario 26 on flow C.
		c := withSrcPort(40002)
		h.in(seqs(seq0, 3, c)...)
		for range 3 {
			h.in(ACK(seq0+3*mss, ackA, winW, c))
		}
		h.finish()
		st := h.e.Stats()
		require.Equal(t, uint64(9+2+2), st.Coalesced)
		require.Equal(t, uint64(4), st.CoalesceEvents)
		require.Equal(t, uint64(10+4+3), st.CoalescedSegments)
		require.Equal(t, uint64(17*mss), st.CoalescedBytes)
		require.Equal(t, uint64(2), st.Aborts)
		require.Equal(t, uint64(1), st.DataOutOfOrder)
		require.Equal(t, uint64(1), st.DupAck)
		require.Equal(t, uint64(2), st.PureAck)
		require.Equal(t, uint64(4), st.Cache)
		require.Equal(t, uint64(2), st.Timer)
		require.Equal(t, uint64(20), st.Frames)
		require.Equal(t, uint64(20), st.Received)
		require.Equal(t, uint64(3), st.Passthrough)
		require.Equal(t, uint64(7), st.Delivered)
		require.Zero(t, st.Pending)
	}},
}

// seqs2 returns n contiguous segments of size sz starting at seq.
func seqs2(seq uint32, n, sz int, opts ...segOpt) []Frame {
	out := make([]Frame, n)
	for i := range out {
		out[i] = D(seq+uint32(i*sz), sz, opts...)
	}
	return out
}

func TestConformanceScenarios(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.id, func(t *testing.T) {
			cfg := defaultConfig()
			if sc.cfg != nil {
				sc.cfg(&cfg)
			}
			h := newHarness(t, cfg)
			sc.run(t, h)
		})
	}
}

func timeDur[T ~int | ~uint32](x T) time.Duration { return time.Duration(x) }

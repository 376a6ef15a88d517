package conformance

import (
	"encoding/binary"
	"math"

	"github.com/rscvm/rscvm/net/header"
)

// DefaultMaxFlows is the flow-table size of the engine and the device
// (rsc.DefaultMaxFlows); scenario 34 counts evictions against it.
const DefaultMaxFlows = 64

// Virtio-net feature bits and control classes the device-level scenarios
// use (virtio 1.2 §5.1.3, §5.1.6.5).
const (
	FeatureGuestCSUM = 1
	FeatureGuestTSO4 = 7
	FeatureGuestTSO6 = 8
	FeatureGuestECN  = 9
	FeatureGuestUSO4 = 54
	FeatureGuestRSC4 = 41 // legacy, must never be offered
	FeatureGuestRSC6 = 42 // legacy, must never be offered
	FeatureRSCExt    = 61

	CtrlClassGuestOffloads = 5
	CtrlGuestOffloadsSet   = 0
	CtrlOK                 = 0
	CtrlErr                = 1
)

// Guest offload masks for GUEST_OFFLOADS_SET.
const (
	OffCSUM = 1 << FeatureGuestCSUM
	OffTSO4 = 1 << FeatureGuestTSO4
	OffTSO6 = 1 << FeatureGuestTSO6
	OffECN  = 1 << FeatureGuestECN
	OffRSC  = 1 << FeatureRSCExt
)

// OffloadsFor is the GUEST_OFFLOADS_SET mask a NetKVM driver sends for
// cfg: CSUM, TSO4/TSO6 for the families with RSC, bit 61 when either has
// it, ECN with GuestECN. With RSC off for both families NetKVM keeps TSO
// and only drops bit 61 (the dynamic RSC switch).
func OffloadsFor(cfg Config) uint64 {
	m := uint64(OffCSUM)
	if cfg.GuestECN {
		m |= OffECN
	}
	if !cfg.IPv4 && !cfg.IPv6 {
		return m | OffTSO4 | OffTSO6
	}
	if cfg.IPv4 {
		m |= OffTSO4
	}
	if cfg.IPv6 {
		m |= OffTSO6
	}
	return m | OffRSC
}

// CtrlOffloads is a GUEST_OFFLOADS_SET command step.
func CtrlOffloads(mask uint64, wantAck uint8) Step {
	p := make([]byte, 8)
	binary.LittleEndian.PutUint64(p, mask)
	return Step{Kind: StepCtrl, Class: CtrlClassGuestOffloads, Cmd: CtrlGuestOffloadsSet, Payload: p, WantAck: wantAck}
}

const anyCount = -1

func ex(count int, pk ...Packet) Expect { return Expect{Count: count, Packets: pk} }

func (e Expect) with(st ...Stat) Expect { e.Stats = append(e.Stats, st...); return e }

// Scenarios returns every conformance scenario, in order.
func Scenarios() []Scenario {
	out := make([]Scenario, 0, len(scenarioList))
	for _, sc := range scenarioList {
		if sc.Runners == 0 {
			sc.Runners = AllRunners
		}
		if sc.Spec == "" {
			sc.Spec = "rsc-spec (a) " + itoa(sc.Num)
		}
		out = append(out, sc)
	}
	return out
}

// Lookup returns the scenario named id.
func Lookup(id string) (Scenario, bool) {
	for _, sc := range Scenarios() {
		if sc.ID == id {
			return sc, true
		}
	}
	return Scenario{}, false
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

var scenarioList = []Scenario{
	{ID: "S01_BasicV4", Num: 1, Title: "10 contiguous segments → SCU(10), ack/window of the last", Family: IPv4,
		Build: func(cfg Config) Program {
			fs := Seqs(Seq0, 10)
			fs[9] = D(Seq0+9*MSS, MSS, WithAck(AckA+50), WithWin(WinW+1))
			return Program{
				Steps: []Step{In(fs...), Delivered(0), Advance(cfg.Interval)},
				Expect: ex(1, SCUAt(0, 10, Seq0, 10*MSS, F("ip_total_len", 20+20+14480), F("gso_size", 1448),
					F("hdr_len", 54), F("gso_type", header.VirtioNetHdrGSOTCPv4), F("tcp_ack", AckA+50),
					F("tcp_window", WinW+1))).
					with(S("Coalesced", 9), S("CoalesceEvents", 1), S("CoalescedSegments", 10), S("CoalescedBytes", 14480)),
			}
		}},
	{ID: "S02_BasicV6", Num: 2, Title: "10 contiguous IPv6 segments → SCU(10), TCPV6", Family: IPv6,
		Build: func(cfg Config) Program {
			return Program{
				Steps: []Step{In(Seqs(Seq0, 10, V6)...), Advance(cfg.Interval)},
				Expect: ex(1, SCUAt(0, 10, Seq0, 10*MSS, F("ip_version", 6), F("ip6_payload_len", 20+14480),
					F("gso_type", header.VirtioNetHdrGSOTCPv6), F("hdr_len", 74))),
			}
		}},
	{ID: "S03_LoneSegment", Num: 3, Title: "one segment → plain within the interval, TAP header kept", Family: IPv4,
		Build: func(cfg Config) Program {
			return Program{
				Steps:  []Step{In(D(Seq0, MSS)), Advance(cfg.Interval)},
				Expect: ex(1, PlainAt(0, 0, FLe("at_ns", uint64(cfg.Interval)))),
			}
		}},
	{ID: "S03_LoneSegmentBatchEnd", Num: 3, Title: "one segment, flush at batch end → plain at once", Family: IPv4,
		Config: func(c *Config) { c.FlushAtBatchEnd = true },
		Build: func(cfg Config) Program {
			return Program{
				Steps:  []Step{In(D(Seq0, 100)), EndBatch(), Delivered(1)},
				Expect: ex(1, PlainAt(0, 0, F("at_ns", 0))),
			}
		}},
	{ID: "S04_IntervalBoundary", Num: 4, Title: "two segments 2×interval apart → two plain, each within the interval", Family: IPv4,
		Build: func(cfg Config) Program {
			iv := cfg.Interval
			return Program{
				Steps: []Step{In(D(Seq0, MSS)), OnlyOn(Engine, Step{Kind: StepCheckDeadline, N: 1, D: iv}),
					Advance(2 * iv), In(D(Seq0+MSS, MSS)), Advance(2 * iv)},
				Expect: ex(2, PlainAt(0, 0, FLe("at_ns", uint64(2*iv))), PlainAt(1, 1, FLe("at_ns", uint64(4*iv)))),
			}
		}},
	{ID: "S04_NoLatencyAboveInterval", Num: 4, Title: "a segment every interval/10: no packet waits longer than the interval", Family: IPv4,
		Build: func(cfg Config) Program {
			var steps []Step
			for i := range 50 {
				steps = append(steps, Advance(cfg.Interval/10), In(D(Seq0+uint32(i*MSS), MSS)))
			}
			e := ex(anyCount)
			e.MinCount = 4
			e.MaxLatency = cfg.Interval
			return Program{Steps: steps, Expect: e}
		}},
	{ID: "S05_PSHMidStream", Num: 5, Title: "PSH on the 2nd of 3 segments → SCU(3) with PSH", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(D(Seq0, MSS), D(Seq0+MSS, MSS, AddFlags(header.TCPFlagPSH)), D(Seq0+2*MSS, MSS))},
				Expect: ex(1, SCUAt(0, 3, Seq0, 3*MSS, F("tcp_psh", 1))),
			}
		}},
	{ID: "S06_FIN", Num: 6, Title: "FIN on the 4th segment → SCU(3), then the FIN segment plain", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 3)...), In(D(Seq0+3*MSS, MSS, AddFlags(header.TCPFlagFIN)))},
				Expect: ex(2, SCUAt(0, 3, Seq0, 3*MSS), PlainAt(1, 3)).with(S("TCPCtrlDrain", 1)),
			}
		}},
	{ID: "S07_RST", Num: 7, Title: "RST after 2 segments → SCU(2), RST plain", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 2)...), In(D(Seq0+2*MSS, 0, AddFlags(header.TCPFlagRST)))},
				Expect: ex(2, SCUAt(0, 2, Seq0, 2*MSS), PlainAt(1, 2)),
			}
		}},
	{ID: "S08_SYNOnBusyFlow", Num: 8, Title: "retransmitted SYN on a flow with a pending SCU → SCU first", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 2)...), In(D(Seq0-1, 0, WithFlags(header.TCPFlagSYN|header.TCPFlagACK)))},
				Expect: ex(2, SCUAt(0, 2, Seq0, 2*MSS), PlainAt(1, 2)).with(S("TCPSyn", 1)),
			}
		}},
	{ID: "S09_URG", Num: 9, Title: "URG segment → SCU(2), URG plain", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 2)...), In(D(Seq0+2*MSS, MSS, AddFlags(header.TCPFlagURG)))},
				Expect: ex(2, SCUAt(0, 2, Seq0, 2*MSS), PlainAt(1, 2)),
			}
		}},
	{ID: "S10_CWRNoGuestECN", Num: 10, Title: "CWR without GUEST_ECN → separate, coalescing resumes, no GSO_ECN", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2)...), In(D(Seq0+2*MSS, MSS, AddFlags(header.TCPFlagCWR))),
					In(Seqs(Seq0+3*MSS, 2)...)},
				Expect: ex(3, SCUAt(0, 2, Seq0, 2*MSS), PlainAt(1, 2), SCUAt(2, 2, Seq0+3*MSS, 2*MSS),
					EveryFrom(0, F("gso_ecn", 0))),
			}
		}},
	{ID: "S10_CWRGuestECN", Num: 10, Title: "CWR with GUEST_ECN starts a new SCU marked GSO_ECN", Family: IPv4,
		Config: func(c *Config) { c.GuestECN = true },
		Build: func(Config) Program {
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2, AddFlags(header.TCPFlagECE))...),
					In(D(Seq0+2*MSS, MSS, AddFlags(header.TCPFlagCWR))), In(Seqs(Seq0+3*MSS, 2)...)},
				Expect: ex(2, SCUAt(0, 2, Seq0, 2*MSS, F("tcp_ece", 1), F("gso_ecn", 0)),
					SCUAt(1, 3, Seq0+2*MSS, 3*MSS, F("tcp_cwr", 1),
						F("gso_type", header.VirtioNetHdrGSOTCPv4|header.VirtioNetHdrGSOECN))),
			}
		}},
	{ID: "S11_IPv4ECNConstant", Num: 11, Title: "all segments ECT(0) → coalesced, ECN kept", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 4, WithTOS(header.ECNECT0))...)},
				Expect: ex(1, SCUAt(0, 4, Seq0, 4*MSS, F("ip_ecn", header.ECNECT0))),
			}
		}},
	{ID: "S11_IPv4CEMark", Num: 11, Title: "CE mark mid-flow → SCU(2), CE segments their own SCU, CE never lost", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2, WithTOS(header.ECNECT0))...), In(Seqs(Seq0+2*MSS, 2, WithTOS(header.ECNCE))...),
					In(D(Seq0+4*MSS, MSS, WithTOS(header.ECNECT0)))},
				Expect: ex(3, SCUAt(0, 2, Seq0, 2*MSS), SCUAt(1, 2, Seq0+2*MSS, 2*MSS, F("ip_ecn", header.ECNCE))).
					with(S("IPECN", 2)),
			}
		}},
	{ID: "S12_IPv6CEMark", Num: 12, Title: "IPv6 CE mark (ECN bits of the traffic class) → flush, CE kept", Family: IPv6,
		Build: func(Config) Program {
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2, V6, WithTOS(header.ECNECT0))...),
					In(D(Seq0+2*MSS, MSS, V6, WithTOS(header.ECNCE)))},
				Expect: ex(2, SCUAt(0, 2, Seq0, 2*MSS), PlainAt(1, 2, F("ip_ecn", header.ECNCE))),
			}
		}},
	{ID: "S13_IPv6DSCPAF11", Num: 13, Title: "IPv6 DSCP AF11 without ECN → coalesced", Family: IPv6,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 3, V6, WithTOS(10<<2))...)},
				Expect: ex(1, SCUAt(0, 3, Seq0, 3*MSS, F("ip_tos", 10<<2))),
			}
		}},
	{ID: "S14_TimestampsIdentical", Num: 14, Title: "identical timestamp options ×5 → SCU(5) carrying the option", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 5, WithOptions(TSOpt(100, 200)))...)},
				Expect: ex(1, SCUAt(0, 5, Seq0, 5*MSS, FBytes("tcp_options", TSOpt(100, 200)), F("hdr_len", 14+20+32))),
			}
		}},
	{ID: "S14_TimestampsDisabled", Num: 14, Title: "timestamp coalescing off → 5 plain", Family: IPv4,
		Runners: Engine, Why: "the device always coalesces identical timestamp options",
		Config: func(c *Config) { c.Timestamps = false },
		Build: func(Config) Program {
			e := ex(5)
			for i := range 5 {
				e.Packets = append(e.Packets, PlainAt(i, i))
			}
			return Program{Steps: []Step{In(Seqs(Seq0, 5, WithOptions(TSOpt(100, 200)))...)}, Expect: e}
		}},
	{ID: "S14_TimestampsDiffering", Num: 14, Title: "TSval change → no merge across it", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2, WithOptions(TSOpt(100, 200)))...),
					In(Seqs(Seq0+2*MSS, 2, WithOptions(TSOpt(101, 200)))...)},
				Expect: ex(2, SCUAt(0, 2, Seq0, 2*MSS), SCUAt(1, 2, Seq0+2*MSS, 2*MSS, F("ts_val", 101))).
					with(S("Timestamp", 1)),
			}
		}},
	{ID: "S15_SACKOption", Num: 15, Title: "SACK option → SCU(prior), SACK segments plain", Family: IPv4,
		Build: func(Config) Program {
			sack := []byte{1, 1, header.TCPOptionSACK, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0}
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2)...),
					In(ACK(Seq0+2*MSS, AckA, WinW, WithOptions(sack)), D(Seq0+2*MSS, MSS, WithOptions(sack)))},
				Expect: ex(3, SCUAt(0, 2, Seq0, 2*MSS), PlainAt(1, 2), PlainAt(2, 3)).with(S("TCPAllOpt", 2)),
			}
		}},
	{ID: "S16_IPv4Options", Num: 16, Title: "IPv4 options on a flow with a pending SCU → SCU first, then plain", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 2)...), In(D(Seq0+2*MSS, MSS, WithIPOptions([]byte{1, 1, 1, 0})))},
				Expect: ex(2, SCUAt(0, 2, Seq0, 2*MSS), PlainAt(1, 2)).with(S("IPOption", 1)),
			}
		}},
	{ID: "S17_Fragments", Num: 17, Title: "MF fragment, DF+MF, non-first fragment → plain, pending SCUs first", Family: IPv4,
		Build: func(Config) Program {
			// A non-first fragment carries no ports: it flushes every flow of
			// its address pair.
			later := D(0, 100, WithDF(false))
			ip := header.IPv4(later.Data[14:])
			ip.SetFlagsFragment(8)
			ip.UpdateChecksum()
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2)...), In(D(Seq0+2*MSS, 600, WithDF(false), WithMF)),
					In(Seqs(Seq0+3*MSS, 2)...), In(D(Seq0+2*MSS+600, 600, WithMF)),
					In(Seqs(Seq0+5*MSS, 2)...), In(later)},
				Expect: ex(6, SCUAt(0, 2, Seq0, 2*MSS), PlainAt(1, 2), SCUAt(2, 2, Seq0+3*MSS, 2*MSS), PlainAt(3, 5),
					SCUAt(4, 2, Seq0+5*MSS, 2*MSS), PlainAt(5, 8)).with(S("IPFrag", 3)),
			}
		}},
	{ID: "S18_DFClear", Num: 18, Title: "DF clear on all → coalesced; DF toggling → flush", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 3, WithDF(false))...), In(Seqs(Seq0+3*MSS, 2)...)},
				Expect: ex(2, SCUAt(0, 3, Seq0, 3*MSS), SCUAt(1, 2, Seq0+3*MSS, 2*MSS)).with(S("Mismatch", 1)),
			}
		}},
	{ID: "S19_IPv6ExtensionHeaders", Num: 19, Title: "HBH, Dest-Opts, Fragment headers → plain, pending SCU first", Family: IPv6,
		Build: func(Config) Program {
			exts := [][]header.IPv6ExtHeader{
				{{Type: header.IPv6HopByHop, Data: []byte{1, 4, 0, 0, 0, 0}}},
				{{Type: header.IPv6DestOptions}},
				{{Type: header.IPv6Fragment, Data: []byte{0, 1, 0, 0, 0, 1}}},
				{{Type: header.IPv6Fragment, Data: []byte{0x10, 0, 0, 0, 0, 1}}}, // not first: no ports
			}
			var steps []Step
			e := ex(8)
			seq := uint32(Seq0)
			for i, x := range exts {
				steps = append(steps, In(Seqs(seq, 2, V6)...), In(D(seq+2*MSS, 100, V6, WithExt(x...))))
				e.Packets = append(e.Packets, SCUAt(2*i, 2, seq, 2*MSS), PlainAt(2*i+1, 3*i+2))
				seq += 2*MSS + 100
			}
			return Program{Steps: steps, Expect: e}
		}},
	{ID: "S20_Gap", Num: 20, Title: "D1,D2,(D3 lost),D4,D5 → SCU(2), SCU(2): the exception starts a new SCU", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 2)...), In(Seqs(Seq0+3*MSS, 2)...)},
				Expect: ex(2, SCUAt(0, 2, Seq0, 2*MSS), SCUAt(1, 2, Seq0+3*MSS, 2*MSS)).with(S("DataOutOfOrder", 1)),
			}
		}},
	{ID: "S21_Retransmission", Num: 21, Title: "retransmitted D1 after SCU(D1..D3) pending → SCU(3), D1 plain", Family: IPv4,
		Build: func(Config) Program {
			fs := Seqs(Seq0, 3)
			return Program{
				Steps:  []Step{In(fs...), In(fs[0])},
				Expect: ex(2, SCUAt(0, 3, Seq0, 3*MSS), PlainAt(1, 3)).with(S("DataOutOfWin", 1)),
			}
		}},
	{ID: "S22_Overlap", Num: 22, Title: "overlapping segment → flush, overlap plain, no duplicated bytes", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 3)...), In(D(Seq0+MSS+100, MSS))},
				Expect: ex(2, SCUAt(0, 3, Seq0, 3*MSS), PlainAt(1, 3)),
			}
		}},
	{ID: "S23_DuplicateFirstNewWindow", Num: 23, Title: "duplicate of the first segment with a new window → both plain", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(D(Seq0, MSS), D(Seq0, MSS, WithWin(2*WinW)))},
				Expect: ex(2, PlainAt(0, 0), PlainAt(1, 1)),
			}
		}},
	{ID: "S24_PureCumulativeACKs", Num: 24, Title: "cumulative pure ACKs → each plain at once, no RSC_INFO", Family: IPv4,
		Build: func(Config) Program {
			var steps []Step
			e := ex(3)
			for i, a := range []uint32{100, 200, 300} {
				steps = append(steps, In(ACK(Seq0, a, WinW)), Delivered(i+1))
				e.Packets = append(e.Packets, PlainAt(i, i, F("rsc_info", 0)))
			}
			return Program{Steps: steps, Expect: e}
		}},
	{ID: "S25_WindowUpdateAfterData", Num: 25, Title: "window update after D×5 → SCU(5) with the new window, not counted", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 5)...), In(ACK(Seq0+5*MSS, AckA, 2*WinW))},
				Expect: ex(1, SCUAt(0, 5, Seq0, 5*MSS, F("tcp_window", 2*WinW))).with(S("WinUpdate", 1)),
			}
		}},
	{ID: "S26_DupACKsAfterData", Num: 26, Title: "3 duplicate ACKs after D×3 → SCU(3) + 3 plain dup ACKs", Family: IPv4,
		Build: func(Config) Program {
			dup := ACK(Seq0+3*MSS, AckA, WinW)
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 3)...), In(dup, dup, dup)},
				Expect: ex(4, SCUAt(0, 3, Seq0, 3*MSS), PlainAt(1, 3), PlainAt(2, 4), PlainAt(3, 5)).with(S("DupAck", 1), S("PureAck", 2)),
			}
		}},
	{ID: "S27_PureACKThenData", Num: 27, Title: "pure ACK then data at the same seq → ACK plain + SCU(3)", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(ACK(Seq0, AckA, WinW)), In(Seqs(Seq0, 3)...)},
				Expect: ex(2, PlainAt(0, 0), SCUAt(1, 3, Seq0, 3*MSS)),
			}
		}},
	{ID: "S28_PiggybackedACK", Num: 28, Title: "increasing piggy-backed ACKs → SCU(4) with the last; decrease flushes", Family: IPv4,
		Build: func(Config) Program {
			var steps []Step
			for i := range 4 {
				steps = append(steps, In(D(Seq0+uint32(i*MSS), MSS, WithAck(AckA+uint32(100*i)))))
			}
			steps = append(steps, In(D(Seq0+4*MSS, MSS, WithAck(AckA+250))))
			return Program{
				Steps:  steps,
				Expect: ex(2, SCUAt(0, 4, Seq0, 4*MSS, F("tcp_ack", AckA+300))).with(S("AckOutOfWin", 1)),
			}
		}},
	{ID: "S29_V4SizeLimit", Num: 29, Title: "46×1448 → SCU(45) of 65200 bytes, the 46th starts the next", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 46)...)},
				Expect: ex(2, SCUAt(0, 45, Seq0, 45*MSS, F("ip_total_len", 45*MSS+40))).with(S("OverSize", 1), S("Aborts", 0)),
			}
		}},
	{ID: "S29_V4ExactLimit", Num: 29, Title: "segments filling exactly 65535 bytes of IPv4 datagram → one SCU", Family: IPv4,
		Build: func(Config) Program {
			first := 65495 - 45*1400
			return Program{
				Steps:  []Step{In(D(Seq0, first)), In(SeqsN(Seq0+uint32(first), 45, 1400)...), In(D(Seq0+65495, 1))},
				Expect: ex(2, SCUAt(0, 46, Seq0, 65495, F("ip_total_len", 65535))),
			}
		}},
	{ID: "S30_V6SizeLimit", Num: 30, Title: "IPv6: payload length never above 65535, coalescing resumes", Family: IPv6,
		Build: func(Config) Program {
			return Program{
				Steps: []Step{In(Seqs(Seq0, 47, V6)...)},
				Expect: ex(2, SCUAt(0, 45, Seq0, 45*MSS, FLe("ip6_payload_len", 65535-40)),
					SCUAt(1, 2, Seq0+45*MSS, 2*MSS)),
			}
		}},
	{ID: "S31_SequenceWrap", Num: 31, Title: "sequence numbers wrapping 2³² → SCU(5)", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(0xFFFFF000, 5)...)},
				Expect: ex(1, SCUAt(0, 5, 0xFFFFF000, 5*MSS)),
			}
		}},
	{ID: "S32_ACKWrap", Num: 32, Title: "piggy-backed ACKs wrapping 2³² count as increasing", Family: IPv4,
		Build: func(Config) Program {
			var steps []Step
			for i := range 4 {
				steps = append(steps, In(D(Seq0+uint32(i*MSS), MSS, WithAck(0xFFFFFF00+uint32(0x80*i)))))
			}
			return Program{Steps: steps, Expect: ex(1, SCUAt(0, 4, Seq0, 4*MSS, F("tcp_ack", 0x80)))}
		}},
	{ID: "S33_InterleavedFlows", Num: 33, Title: "A1,B1,A2,B2,A3 → SCU_A(3), SCU_B(2)", Family: IPv4,
		Build: func(Config) Program {
			b := WithSrcPort(40001)
			return Program{
				Steps:  []Step{In(D(Seq0, MSS), D(7000, MSS, b), D(Seq0+MSS, MSS), D(7000+MSS, MSS, b), D(Seq0+2*MSS, MSS))},
				Expect: ex(2, SCUAt(0, 3, Seq0, 3*MSS), SCUAt(1, 2, 7000, 2*MSS)),
			}
		}},
	{ID: "S34_FlowTablePressure", Num: 34, Title: "10,000 flows within half an interval → all delivered, table bounded", Family: IPv4,
		Build: func(cfg Config) Program {
			const flows = 10000
			step := cfg.Interval / (2 * flows)
			steps := make([]Step, 0, 2*flows+1)
			for i := range flows {
				steps = append(steps, Advance(step), In(D(Seq0, MSS, WithSrcPort(uint16(10000+i)))))
			}
			steps = append(steps, Advance(cfg.Interval))
			end := flows*step + cfg.Interval
			return Program{
				Steps:  steps,
				Expect: ex(flows, EveryFrom(0, FLe("at_ns", uint64(end)))).with(S("Evictions", flows-DefaultMaxFlows)),
			}
		}},
	{ID: "S35_EthernetPadding", Num: 35, Title: "padded pure ACK and padded data → no pad bytes in the stream", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps: []Step{In(ACK(Seq0, AckA, WinW, WithPadding(6))),
					// A padded first data segment: pad bytes must not enter the stream.
					In(D(Seq0, 4, WithPadding(2))), In(Seqs(Seq0+4, 3)...)},
				Expect: ex(2, PlainAt(0, 0, F("frame_len", 60)), SCUAt(1, 4, Seq0, 4+3*MSS)),
			}
		}},
	{ID: "S36_TrailingGarbageGrowth", Num: 36, Title: "trailing bytes then growth to 64 KB → trimmed, bounded", Family: Both,
		Build: func(cfg Config) Program {
			var steps []Step
			for _, fam := range []Opt{func(*Seg) {}, V6} {
				steps = append(steps, In(ACK(Seq0, AckA, WinW, fam, WithPadding(1460))),
					In(D(Seq0, 100, fam, WithPadding(1314))), In(SeqsN(Seq0+100, 46, MSS, fam)...), Advance(cfg.Interval))
			}
			e := ex(anyCount)
			e.MaxFrameLen = MaxCoalescedFrame
			return Program{Steps: steps, Expect: e}
		}},
	{ID: "S37_TruncatedHeaders", Num: 37, Title: "frames cut inside IPv4/TCP/IPv6 headers → plain, SCU unaffected", Family: Both,
		Build: func(Config) Program {
			full := D(Seq0+2*MSS, MSS)
			cutIP := Frame{Hdr: full.Hdr, Data: full.Data[:14+10]}
			ihl15 := D(Seq0+2*MSS, 0)
			ihl15.Data = ihl15.Data[:54]
			ihl15.Data[14] = 0x4f
			cut6 := D(Seq0, MSS, V6)
			cut6.Data = cut6.Data[:14+30]
			cutTCP := D(Seq0+2*MSS, MSS)
			cutTCP.Data = cutTCP.Data[:14+20+10]
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2)...), In(cutIP),
					Delivered(1), // no addresses: nothing flushed
					In(ihl15), In(cut6), In(cutTCP)},
				Expect: ex(5, PlainAt(0, 2), SCUAt(1, 2, Seq0, 2*MSS), PlainAt(2, 3)),
			}
		}},
	{ID: "S38_BogusLengths", Num: 38, Title: "bogus IP lengths and data offsets → plain, never merged", Family: Both,
		Build: func(Config) Program {
			mut := []func(b []byte){
				func(b []byte) { header.IPv4(b[14:]).SetTotalLength(3000) },
				func(b []byte) { header.IPv4(b[14:]).SetTotalLength(39) },
				func(b []byte) { header.TCP(b[34:]).SetDataOffset(16) },
				func(b []byte) { header.TCP(b[34:]).SetDataOffset(0) },
				func(b []byte) { header.IPv4(b[14:]).SetTotalLength(50); header.TCP(b[34:]).SetDataOffset(60) },
			}
			var steps []Step
			for _, m := range mut {
				f := D(Seq0+2*MSS, MSS)
				m(f.Data)
				header.IPv4(f.Data[14:]).UpdateChecksum()
				// A valid segment after it starts fresh.
				steps = append(steps, In(Seqs(Seq0, 2)...), In(f), In(D(Seq0+2*MSS, MSS)))
			}
			m6 := []uint16{0, 3000, 10}
			for _, pl := range m6 {
				f := D(Seq0, MSS, V6)
				header.IPv6(f.Data[14:]).SetPayloadLength(pl)
				steps = append(steps, In(f))
			}
			e := ex(anyCount, Packet{Index: 0, Span: -1, IfSCU: true, Kind: SCU, Segs: 2, Seq: Seq0, Len: 2 * MSS})
			return Program{Steps: steps, Expect: e.with(S("IPHacked", uint64(len(mut)+len(m6))))}
		}},
	{ID: "S39_ZeroRuntFrames", Num: 39, Title: "0-byte, runt and header-only frames → no crash, nothing merged", Family: IPv4,
		Runners: Engine | Device, Why: "AF_PACKET cannot send frames shorter than an Ethernet header onto a TAP",
		Build: func(Config) Program {
			steps := []Step{In(Seqs(Seq0, 2)...)}
			full := D(Seq0+2*MSS, MSS)
			for _, n := range []int{0, 1, 6, 12, 13, 14, 15, 17, 18} {
				steps = append(steps, In(Frame{Data: full.Data[:n]}))
			}
			vl := D(Seq0, MSS, WithVLAN(5))
			for _, n := range []int{15, 16, 17, 18} {
				steps = append(steps, In(Frame{Data: vl.Data[:n]}))
			}
			steps = append(steps, Delivered(13)) // runts pass through at once
			return Program{Steps: steps, Expect: ex(14, SCUAt(-1, 2, Seq0, 2*MSS))}
		}},
	{ID: "S40_BadChecksums", Num: 40, Title: "bad TCP / IPv4 header checksum → flush, bad segment plain with flags 0", Family: IPv4,
		Build: func(Config) Program {
			good := []Frame{D(Seq0, MSS, NoFlags), D(Seq0+MSS, MSS, NoFlags)}
			badTCP := D(Seq0+MSS, MSS, NoFlags, WithCsum(header.ChecksumBad))
			badIP := D(Seq0+MSS, MSS, WithBadIPCsum) // DATA_VALID covers TCP only
			return Program{
				Steps: []Step{In(good[0], badTCP), In(good[0], badIP),
					In(good...)}, // software-verified good segments coalesce
				Expect: ex(5, PlainAt(0, 0), PlainAt(1, 1, F("flags", 0)), PlainAt(2, 2), PlainAt(3, 3),
					SCUAt(4, 2, Seq0, 2*MSS)).with(S("BadChecksum", 2)),
			}
		}},
	{ID: "S41_HostGSOPassthrough", Num: 41, Title: "TAP GSO super-packet → delivered with its header intact", Family: IPv4,
		Build: func(Config) Program {
			gso := D(Seq0, 45*MSS, WithHdr(header.VirtioNetHdr{
				Flags: header.VirtioNetHdrFNeedsCsum, GSOType: header.VirtioNetHdrGSOTCPv4,
				HdrLen: 54, GSOSize: MSS, CsumStart: 34, CsumOffset: 16,
			}), WithCsum(header.ChecksumPartial))
			return Program{
				Steps:  []Step{In(D(Seq0-400, 400)), In(gso), In(D(Seq0+45*MSS, MSS))},
				Expect: ex(3, PlainAt(1, 1), PlainAt(2, 2)).with(S("HostGSO", 1)),
			}
		}},
	{ID: "S42_NeedsCsum", Num: 42, Title: "NEEDS_CSUM single segment → header intact; NEEDS_CSUM run coalesces", Family: IPv4,
		Build: func(cfg Config) Program {
			return Program{
				Steps: []Step{In(D(Seq0, MSS, Partial)), Advance(cfg.Interval), In(Seqs(Seq0+MSS, 3, Partial)...)},
				Expect: ex(2, PlainAt(0, 0, F("csum_start", 34), F("csum_offset", 16)),
					SCUAt(1, 3, Seq0+MSS, 3*MSS)),
			}
		}},
	{ID: "S43_VLAN", Num: 43, Title: "VLAN-tagged flow coalesced with the tag, never with untagged/other VLAN", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps: []Step{In(D(Seq0, MSS, WithVLAN(5)), D(Seq0+MSS, MSS), D(Seq0+MSS, MSS, WithVLAN(5)),
					D(Seq0+2*MSS, MSS, WithVLAN(6)), D(Seq0+2*MSS, MSS, WithVLAN(5)))},
				Expect: ex(3, SCUAt(0, 3, Seq0, 3*MSS, F("l2_len", 18), F("hdr_len", 18+20+20), F("vlan_tci", 5))),
			}
		}},
	{ID: "S43_VLANPriorityChange", Num: 43, Title: "VLAN PCP change → different Ethernet header, not merged", Family: IPv4,
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(D(Seq0, MSS, WithVLAN(5)), D(Seq0+MSS, MSS, WithVLAN(5|3<<13)))},
				Expect: ex(2),
			}
		}},
	{ID: "S44_NegotiationV4Only", Num: 44, Title: "RSC for IPv4 only (NetKVM acks RSC_EXT+TSO4) → v4 coalesced, v6 plain", Family: Both,
		Config: func(c *Config) { c.IPv6 = false },
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 3)...), In(Seqs(Seq0, 3, V6)...)},
				Expect: ex(4, PlainAt(0, 3), PlainAt(1, 4), PlainAt(2, 5), SCUAt(3, 3, Seq0, 3*MSS)),
			}
		}},
	{ID: "S44_NegotiationOff", Num: 44, Title: "RSC not negotiated → no RSC_INFO, no GSO", Family: Both,
		Config: func(c *Config) { c.IPv4, c.IPv6 = false, false },
		Build: func(Config) Program {
			return Program{
				Device: DeviceSetup{Props: []string{"guest_rsc_ext=off"}},
				Steps:  []Step{In(Seqs(Seq0, 3)...), In(Seqs(Seq0, 3, V6)...)},
				Expect: ex(6, EveryFrom(0, F("rsc_info", 0), F("gso", 0))),
			}
		}},
	{ID: "S44_GSOModeLinuxGuest", Num: 44, Title: "Linux guest with x-rsc-gso → standard GSO packets, no RSC_INFO", Family: Both,
		Config: func(c *Config) { c.GSOMode = true },
		Build: func(Config) Program {
			return Program{
				Device: DeviceSetup{Props: []string{"x-rsc-gso=on"}, Driver: Linux},
				Steps:  []Step{In(Seqs(Seq0, 3)...), In(Seqs(Seq0, 3, V6)...)},
				Expect: ex(2, EveryFrom(0, F("rsc_info", 0), F("flags", header.VirtioNetHdrFNeedsCsum), F("gso_size", MSS))),
			}
		}},
	{ID: "S44_OfferedFeatures", Num: 44, Title: "RSC_EXT offered only with guest_rsc_ext=on and a GUEST_TSO; 41/42 never",
		Runners: DeviceRunners, Why: "feature offers are the device's",
		Build: func(Config) Program {
			legacy := uint64(1)<<FeatureGuestRSC4 | 1<<FeatureGuestRSC6
			return Program{
				Device: DeviceSetup{NoDevice: true},
				Steps: []Step{
					{Kind: StepCheckFeatures, Props: []string{"guest_rsc_ext=on"}, Offered: 1 << FeatureRSCExt, NotOffered: legacy},
					{Kind: StepCheckFeatures, Props: []string{"guest_rsc_ext=off"}, NotOffered: 1<<FeatureRSCExt | legacy},
					{Kind: StepCheckFeatures, Props: []string{"guest_rsc_ext=on", "guest_tso4=off", "guest_tso6=off"},
						NotOffered: 1<<FeatureRSCExt | legacy},
					{Kind: StepCheckFeatures, Props: []string{"guest_rsc_ext=on", "guest_tso6=off"}, Offered: 1 << FeatureRSCExt},
				},
				Expect: ex(0),
			}
		}},
	{ID: "S44_LinuxGuestNoRSCInfo", Num: 44, Title: "guest_rsc_ext=on with a Linux guest (no RSC_EXT ack) → no RSC_INFO", Family: IPv4,
		Runners: DeviceRunners, Why: "negotiation is the device's",
		Config: func(c *Config) { c.IPv4, c.IPv6 = false, false },
		Build: func(Config) Program {
			return Program{
				Device: DeviceSetup{Driver: Linux},
				Steps:  []Step{In(Seqs(Seq0, 10)...)},
				Expect: ex(10, EveryFrom(0, F("rsc_info", 0), F("gso", 0))),
			}
		}},
	{ID: "S45_OffloadsSet", Num: 45, Title: "offload change refused while the ring is full, applied after; RSC off/on", Family: IPv4,
		Build: func(cfg Config) Program {
			off := cfg
			off.IPv4, off.IPv6 = false, false
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2)...), RingFull(true),
					Fails(SetConfig(off)), // cannot flush: change refused
					OnlyOn(Engine, Step{Kind: StepCheckConfig, Config: cfg}), // no state change on failure
					RingFull(false), SetConfig(off), OnlyOn(Engine, Step{Kind: StepCheckConfig, Config: off}),
					In(Seqs(Seq0+2*MSS, 2)...), SetConfig(cfg), In(Seqs(Seq0+4*MSS, 2)...)},
				Expect: ex(4, SCUAt(0, 2, Seq0, 2*MSS), SCUAt(3, 2, Seq0+4*MSS, 2*MSS)),
			}
		}},
	{ID: "S45_OffloadsSetValidation", Num: 45, Title: "OFFLOADS_SET: bit 61 on/off, unsupported bit → ERR and no change, bad length → ERR", Family: IPv4,
		Runners: DeviceRunners, Why: "command validation is the device's",
		Build: func(Config) Program {
			on := uint64(OffCSUM | OffTSO4 | OffTSO6 | OffRSC)
			bad := CtrlOffloads(on, CtrlErr)
			bad.Payload = bad.Payload[:7]
			var steps []Step
			seq := uint32(Seq0)
			batch := func() {
				steps = append(steps, In(Seqs(seq, 3)...), FlushAll())
				seq += 3 * MSS
			}
			steps = append(steps, CtrlOffloads(on, CtrlOK))
			batch()
			steps = append(steps, Delivered(1), CtrlOffloads(on&^OffRSC, CtrlOK)) // without bit 61: RSC off
			batch()
			steps = append(steps, Delivered(4),
				CtrlOffloads(on|1<<FeatureGuestUSO4, CtrlErr)) // not negotiated: ERR, RSC stays off
			batch()
			steps = append(steps, Delivered(7), bad) // 7-byte argument: ERR
			batch()
			steps = append(steps, Delivered(10), CtrlOffloads(on, CtrlOK))
			batch()
			e := ex(11, SCUAt(0, 3, Seq0, 3*MSS), SCUAt(10, 3, Seq0+12*MSS, 3*MSS))
			for i := 1; i <= 9; i++ {
				e.Packets = append(e.Packets, PlainAt(i, i+2))
			}
			return Program{Steps: steps, Expect: e}
		}},
	{ID: "S46_DisableWhilePending", Num: 46, Title: "IPv4 RSC disabled with SCUs pending → delivered before the ack, no GSO after", Family: Both,
		Build: func(cfg Config) Program {
			off := cfg
			off.IPv4 = false
			return Program{
				Steps: []Step{In(Seqs(Seq0, 3)...), In(Seqs(Seq0, 3, V6)...), SetConfig(off),
					Delivered(2), // pending SCUs delivered before the change completes
					In(Seqs(Seq0+3*MSS, 3)...)},
				Expect: ex(anyCount, EveryFrom(2, F("gso", 0))),
			}
		}},
	{ID: "S46_DisableDropsGSO", Num: 46, Title: "TSO4 cleared: a TCPv4 GSO frame the TAP still delivers is dropped", Family: IPv4,
		Runners: Device, Why: "dropping TAP GSO frames is the device's job; a real TAP segments them itself once TSO4 is off",
		Build: func(Config) Program {
			gso := D(Seq0+3*MSS, 20*MSS, WithHdr(header.VirtioNetHdr{
				Flags: header.VirtioNetHdrFNeedsCsum, GSOType: header.VirtioNetHdrGSOTCPv4,
				HdrLen: 54, GSOSize: MSS, CsumStart: 34, CsumOffset: 16,
			}), WithCsum(header.ChecksumPartial))
			e := ex(4, SCUAt(0, 3, Seq0, 3*MSS), EveryFrom(1, F("gso", 0)))
			e.DeviceStats = []Stat{S("RxDropGSO", 1)}
			return Program{
				Steps: []Step{In(Seqs(Seq0, 3)...), CtrlOffloads(OffCSUM|OffTSO6|OffRSC, CtrlOK), Delivered(1),
					InDropped(gso), In(Seqs(Seq0+3*MSS, 3)...)},
				Expect: e,
			}
		}},
	{ID: "S47_XDPSequence", Num: 47, Title: "offloads → GUEST_CSUM only (XDP): no GSO; restored: coalescing resumes", Family: IPv4,
		Build: func(cfg Config) Program {
			off := cfg
			off.IPv4, off.IPv6 = false, false
			xdp := SetConfig(off)
			xdp.Mask = OffCSUM
			return Program{
				Steps:  []Step{xdp, In(Seqs(Seq0, 5)...), Delivered(5), SetConfig(cfg), In(Seqs(Seq0+5*MSS, 5)...)},
				Expect: ex(6, Packet{Index: 0, Span: 5, Fields: []Field{F("gso", 0)}}, SCUAt(5, 5, Seq0+5*MSS, 5*MSS)),
			}
		}},
	{ID: "S48_ResetWithPending", Num: 48, Title: "reset with SCUs pending → nothing delivered after reset, timer cancelled", Family: IPv4,
		Build: func(cfg Config) Program {
			return Program{
				Steps: []Step{In(Seqs(Seq0, 3)...), Reset(),
					OnlyOn(Engine, Pending(0)), OnlyOn(Engine, Step{Kind: StepCheckDeadline}), // timer cancelled
					Advance(10 * cfg.Interval), FlushAll(), Delivered(0), // nothing delivered after reset
					OnlyOn(Engine, StatsNow(S("Discarded", 1))),
					In(Seqs(Seq0+3*MSS, 2)...)},
				Expect: ex(1),
			}
		}},
	{ID: "S49_RingExhaustion", Num: 49, Title: "no rx buffers at flush time → SCU retained, TAP paused, zero loss", Family: IPv4,
		Build: func(cfg Config) Program {
			next := D(Seq0+3*MSS, MSS)
			return Program{
				Steps: []Step{In(Seqs(Seq0, 3)...), RingFull(true),
					Fails(Advance(cfg.Interval)),  // back-pressure reported
					Fails(EndBatch()), Pending(1), // SCU retained
					InRefused(next), // TAP reading paused
					RingFull(false), Tick(), InRetry(next)},
				Expect: ex(2, SCUAt(0, 3, Seq0, 3*MSS), PlainAt(1, 3)).with(SGe("DrainFailed", 1)),
			}
		}},
	{ID: "S49_RingExhaustionOnException", Num: 49, Title: "ring full when an exception flushes → SCU and exception kept in order", Family: IPv4,
		Build: func(Config) Program {
			fin := D(Seq0+2*MSS, 0, AddFlags(header.TCPFlagFIN))
			other := ACK(9, 9, 9, WithSrcPort(1))
			return Program{
				Steps: []Step{In(Seqs(Seq0, 2)...), RingFull(true), InRefused(fin),
					InRefused(other), // plain frames wait too
					RingFull(false), InRetry(fin, other)},
				Expect: ex(3, SCUAt(0, 2, Seq0, 2*MSS), PlainAt(1, 2)).with(S("TCPCtrlDrain", 1)), // counted once despite the retry
			}
		}},
	{ID: "S50_PauseSnapshot", Num: 50, Title: "paused: nothing expires; flushed before save", Family: IPv4,
		Build: func(cfg Config) Program {
			return Program{
				// Paused: the virtual clock does not advance, nothing expires.
				Steps: []Step{In(Seqs(Seq0, 3)...), Tick(), Delivered(0), FlushAll(), Delivered(1),
					OnlyOn(Engine, Step{Kind: StepCheckConfig, Config: cfg})},
				Expect: ex(1),
			}
		}},
	{ID: "S50_LinkDownFlushes", Num: 50, Title: "link down with an SCU pending → delivered before the change, then drops", Family: IPv4,
		Runners: DeviceRunners, Why: "the link state is the device's",
		Build: func(Config) Program {
			e := ex(2, SCUAt(0, 3, Seq0, 3*MSS), SCUAt(1, 3, Seq0+5*MSS, 3*MSS))
			e.DeviceStats = []Stat{S("RxDropLinkDown", 2)}
			return Program{
				Steps: []Step{In(Seqs(Seq0, 3)...), {Kind: StepLink, On: false}, Delivered(1),
					InDropped(Seqs(Seq0+3*MSS, 2)...), {Kind: StepLink, On: true}, In(Seqs(Seq0+5*MSS, 3)...)},
				Expect: e,
			}
		}},
	{ID: "S51_SmallBuffers", Num: 51, Title: "no MRG_RXBUF, 1526-byte buffers → no packet larger than a buffer, no drop", Family: IPv4,
		Config: func(c *Config) { c.MaxFrame = 1514 },
		Build: func(Config) Program {
			e := ex(anyCount, PlainAt(0, 0), SCUAt(3, 3, Seq0+3*MSS, 1200))
			e.MaxFrameLen = 1514
			return Program{Steps: []Step{In(Seqs(Seq0, 3)...), In(SeqsN(Seq0+3*MSS, 5, 400)...)}, Expect: e}
		}},
	{ID: "S52_CounterWrap", Num: 52, Title: "65535 window updates against one SCU in a long interval → count never wraps", Family: IPv4,
		Config: func(c *Config) { c.Interval = math.MaxUint32 }, // rsc_interval's maximum
		Build: func(Config) Program {
			fs := make([]Frame, 0, 65536)
			fs = append(fs, D(Seq0, MSS, WithWin(0)))
			for w := 1; w <= 65535; w++ {
				fs = append(fs, ACK(Seq0+MSS, AckA, uint16(w)))
			}
			e := ex(1, FieldsAt(0, F("csum_start", 1))).with(S("WinUpdate", 65535)) // ACKs are not counted
			e.NoStreamCheck = true
			e.Why = "65,536 inputs against one packet: the stream checker is quadratic"
			return Program{Steps: []Step{In(fs...)}, Expect: e}
		}},
	{ID: "S53_IntervalZeroFlushEachBatch", Num: 53, Title: "rsc_interval=0 → no timer, flush at each batch end", Family: IPv4,
		TimingDependent: true,
		Config:          func(c *Config) { c.Interval = 0 },
		Build: func(Config) Program {
			return Program{
				Steps:  []Step{In(Seqs(Seq0, 3)...), OnlyOn(Engine, Step{Kind: StepCheckDeadline}), EndBatch(), Delivered(1)},
				Expect: ex(1),
			}
		}},
	{ID: "S53_ExtremeValues", Num: 53, Title: "negative interval, huge table and frame bounds → clamped", Family: IPv4,
		Runners: Engine, Why: "engine settings a device cannot express (device limits: S53_PropertyParsing)",
		Config: func(c *Config) { c.Interval = -5; c.MaxFlows = 1 << 20; c.MaxFrame = 1 << 30 },
		Build: func(Config) Program {
			return Program{Steps: []Step{In(Seqs(Seq0, 3)...), EndBatch()}, Expect: ex(anyCount)}
		}},
	{ID: "S53_PropertyParsing", Num: 53, Title: "guest_rsc_ext / rsc_interval parsing: 1 ms, 0, limits, bad values",
		Runners: DeviceRunners, Why: "property parsing is the device's",
		Build: func(Config) Program {
			p := func(k, v string, want uint64) Step { return Step{Kind: StepProperty, Key: k, Value: v, Want: want} }
			bad := func(k, v string) Step { return Step{Kind: StepProperty, Key: k, Value: v, WantErr: true} }
			return Program{
				Device: DeviceSetup{NoDevice: true},
				Steps: []Step{
					p("rsc_interval", "1000000", 1000000), p("rsc_interval", "0", 0),
					p("rsc_interval", "4294967295", 4294967295), p("rsc_interval", "0x10", 16),
					bad("rsc_interval", "4294967296"), bad("rsc_interval", "-1"), bad("rsc_interval", "1ms"),
					p("guest_rsc_ext", "on", 1), p("guest_rsc_ext", "yes", 1), p("guest_rsc_ext", "off", 0),
					bad("guest_rsc_ext", "maybe"), p("x-rsc-batch-flush", "off", 0), p("x-rsc-gso", "on", 1),
				},
				Expect: ex(0),
			}
		}},
	{ID: "S54_Statistics", Num: 54, Title: "counters after scenarios 1+20+26 match exactly", Family: IPv4,
		Build: func(cfg Config) Program {
			b, c := WithSrcPort(40001), WithSrcPort(40002)
			dup := ACK(Seq0+3*MSS, AckA, WinW, c)
			return Program{
				Steps: []Step{In(Seqs(Seq0, 10)...), Advance(cfg.Interval), // scenario 1
					In(Seqs(Seq0, 2, b)...), In(Seqs(Seq0+3*MSS, 2, b)...), Advance(cfg.Interval), // scenario 20 on flow B
					In(Seqs(Seq0, 3, c)...), In(dup), In(dup), In(dup)}, // scenario 26 on flow C
				Expect: ex(anyCount).with(S("Coalesced", 9+2+2), S("CoalesceEvents", 4), S("CoalescedSegments", 10+4+3),
					S("CoalescedBytes", 17*MSS), S("Aborts", 2), S("DataOutOfOrder", 1), S("DupAck", 1), S("PureAck", 2),
					S("Cache", 4), S("Timer", 2), S("Frames", 20), S("Received", 20), S("Passthrough", 3),
					S("Delivered", 7), S("Pending", 0)),
			}
		}},
}

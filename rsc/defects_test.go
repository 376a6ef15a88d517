package rsc

import (
	"testing"

	"github.com/rscvm/rscvm/net/header"
	"github.com/stretchr/testify/require"
)

// runScenario runs conformance scenario id as a subtest.
func runScenario(t *testing.T, id string) {
	t.Helper()
	for _, sc := range scenarios {
		if sc.id == id {
			t.Run(id, func(t *testing.T) {
				cfg := defaultConfig()
				if sc.cfg != nil {
					sc.cfg(&cfg)
				}
				sc.run(t, newHarness(t, cfg))
			})
			return
		}
	}
	t.Fatalf("no scenario %s", id)
}

// defect is one QEMU defect of docs/rsc-spec.md part (b): the scenarios
// showing we do not have it, plus an optional dedicated test.
type defect struct {
	id        string
	scenarios []string
	test      func(t *testing.T)
}

var defects = []defect{
	{id: "B01_ECECWRFinalize", scenarios: []string{"S10_CWRNoGuestECN", "S10_CWRGuestECN"}, test: func(t *testing.T) {
		h := newHarness(t, defaultConfig())
		h.in(seqs(seq0, 2)...)
		h.in(seqs(seq0+2*mss, 2, addFlags(header.TCPFlagECE))...)
		out := h.finish()
		require.Len(t, out, 2, "ECE change ends the packet")
		require.Equal(t, uint64(1), h.e.Stats().TCPECN)
	}},
	{id: "B02_IPv6ECNMask", scenarios: []string{"S12_IPv6CEMark", "S13_IPv6DSCPAF11"}},
	{id: "B03_TrimToIPLength", scenarios: []string{"S35_EthernetPadding", "S36_TrailingGarbageGrowth"}},
	{id: "B04_NoHeaderClobbering", scenarios: []string{"S03_LoneSegment", "S41_HostGSOPassthrough", "S42_NeedsCsum"}},
	{id: "B05_CompliantSCUHeader", test: func(t *testing.T) {
		for _, compat := range []bool{false, true} {
			cfg := defaultConfig()
			cfg.CompatChecksum = compat
			h := newHarness(t, cfg)
			h.in(seqs(seq0, 3, withTTL(60))...)
			out := h.finish() // checkCoalescedHeader verifies flags and checksums per mode
			require.Len(t, out, 1)
			p := requireSCU(t, out[0], 3, seq0, 3*mss)
			require.True(t, header.IPv4(p.ip).IsChecksumValid(), "IPv4 header checksum recomputed")
			require.Equal(t, uint16(mss), out[0].hdr.GSOSize)
			require.Equal(t, uint16(54), out[0].hdr.HdrLen)
			// Little-endian on the wire regardless of host order.
			b := make([]byte, header.VirtioNetHdrSize)
			require.NoError(t, out[0].hdr.Encode(b))
			require.Equal(t, []byte{0xa8, 0x05}, b[4:6])
			require.Equal(t, []byte{3, 0}, b[6:8])
			if compat {
				require.Equal(t, uint8(header.VirtioNetHdrFRSCInfo), b[0])
				src, dst := p.ip[12:16], p.ip[16:20]
				require.True(t, header.TransportChecksumValid(header.ProtocolTCP, src, dst, p.ip[20:]))
			} else {
				require.Equal(t, uint8(header.VirtioNetHdrFNeedsCsum|header.VirtioNetHdrFRSCInfo), b[0])
			}
		}
	}},
	{id: "B06_ChecksumValidation", scenarios: []string{"S40_BadChecksums"}},
	{id: "B07_PureACKRules", scenarios: []string{"S24_PureCumulativeACKs", "S25_WindowUpdateAfterData", "S26_DupACKsAfterData", "S52_CounterWrap"}},
	{id: "B08_DupAckCountZero", scenarios: []string{"S26_DupACKsAfterData"}},
	{id: "B09_RetransmittedFirstNewWindow", scenarios: []string{"S23_DuplicateFirstNewWindow"}},
	{id: "B10_BypassFlushesFlow", scenarios: []string{"S08_SYNOnBusyFlow", "S16_IPv4Options", "S17_Fragments", "S19_IPv6ExtensionHeaders", "S38_BogusLengths"}},
	{id: "B11_ExceptionResumes", scenarios: []string{"S20_Gap", "S29_V4SizeLimit", "S11_IPv4CEMark"}},
	{id: "B12_ConsistencyChecks", test: func(t *testing.T) {
		h := newHarness(t, defaultConfig())
		// TTL: minimum; IP ID: first segment's.
		h.in(D(seq0, mss, withTTL(64), withID(1)), D(seq0+mss, mss, withTTL(50), withID(2)), D(seq0+2*mss, mss, withTTL(60), withID(3)))
		h.advance(interval)
		// DSCP change.
		h.in(D(seq0+3*mss, mss), D(seq0+4*mss, mss, withTOS(0x28)))
		h.advance(interval)
		// Flow label change (IPv6).
		h.in(D(seq0, mss, v6, withFlowLabel(1)), D(seq0+mss, mss, v6, withFlowLabel(2)))
		h.advance(interval)
		// Source MAC change.
		mac := func(s *seg) { s.f.SrcMAC = [6]byte{2, 2, 2, 2, 2, 2} }
		h.in(D(seq0+5*mss, mss), D(seq0+6*mss, mss, mac))
		out := h.finish()
		require.Len(t, out, 7)
		p := requireSCU(t, out[0], 3, seq0, 3*mss)
		require.Equal(t, uint8(50), header.IPv4(p.ip).TTL())
		require.Equal(t, uint16(1), header.IPv4(p.ip).ID())
		require.Equal(t, uint64(3), h.e.Stats().Mismatch)
	}},
	{id: "B13_FragmentTest", scenarios: []string{"S17_Fragments", "S18_DFClear"}},
	{id: "B14_ValidateFirst", scenarios: []string{"S37_TruncatedHeaders", "S38_BogusLengths"}},
	{id: "B15_TimestampOptions", scenarios: []string{"S14_TimestampsIdentical", "S14_TimestampsDiffering"}},
	{id: "B16_V4Limit65535", scenarios: []string{"S29_V4SizeLimit", "S29_V4ExactLimit"}},
	{id: "B17_TimerModel", scenarios: []string{"S03_LoneSegmentBatchEnd", "S04_IntervalBoundary", "S04_NoLatencyAboveInterval", "S50_PauseSnapshot"}},
	{id: "B18_BackPressure", scenarios: []string{"S49_RingExhaustion", "S49_RingExhaustionOnException"}},
	{id: "B19_StateLifetime", scenarios: []string{"S45_OffloadsSet", "S46_DisableWhilePending", "S48_ResetWithPending"}},
	{id: "B20_BoundedFlowTable", scenarios: []string{"S34_FlowTablePressure"}},
	{id: "B21_PerQueueAndVLANKey", scenarios: []string{"S43_VLAN"}, test: func(t *testing.T) {
		// Two queues (engines) never mix their flows.
		h1, h2 := newHarness(t, defaultConfig()), newHarness(t, defaultConfig())
		h1.in(D(seq0, mss))
		h2.in(D(seq0+mss, mss))
		h1.in(D(seq0+mss, mss))
		require.Len(t, h1.finish(), 1)
		require.Len(t, h2.finish(), 1)
	}},
	{id: "B22_ByteOrder", scenarios: []string{"S02_BasicV6"}, test: func(t *testing.T) {
		var h header.VirtioNetHdr
		h.SetRSCInfo(0x0102, 0)
		b := make([]byte, 12)
		require.NoError(t, h.Encode(b))
		require.Equal(t, []byte{0x02, 0x01}, b[6:8])
	}},
	{id: "B24_NoMergeOntoHostGSO", scenarios: []string{"S41_HostGSOPassthrough"}},
	{id: "B25_Observability", scenarios: []string{"S54_Statistics"}},
}

// TestQEMUDefects shows, per defect of spec part (b), that the engine does
// not have it. B23 (feature plumbing) is device-level and not covered here.
func TestQEMUDefects(t *testing.T) {
	for _, d := range defects {
		t.Run(d.id, func(t *testing.T) {
			for _, id := range d.scenarios {
				runScenario(t, id)
			}
			if d.test != nil {
				d.test(t)
			}
		})
	}
}

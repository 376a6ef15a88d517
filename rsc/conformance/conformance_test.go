package conformance_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/rsc/conformance"
	"github.com/rscvm/rscvm/rsc/conformance/hck"
)

// runS returns the engine run of scenario id (which must pass).
func runS(t *testing.T, id string) conformance.Result {
	t.Helper()
	sc, ok := conformance.Lookup(id)
	require.True(t, ok)
	res := conformance.RunEngine(sc, conformance.DefaultConfig(), hck.NewEngine)
	require.Equal(t, conformance.Pass, res.Outcome, res.Detail)
	return res
}

func frames(res conformance.Result) []conformance.Frame {
	fs := make([]conformance.Frame, len(res.Inputs))
	for i, in := range res.Inputs {
		fs[i] = in.Frame
	}
	return fs
}

func cloneOutputs(outs []conformance.Output) []conformance.Output {
	c := make([]conformance.Output, len(outs))
	for i, o := range outs {
		c[i] = o
		c[i].Frame = append([]byte(nil), o.Frame...)
	}
	return c
}

// TestCheckStreamCatches breaks a correct output stream in the ways a
// receiver could and checks that the checker names the problem.
func TestCheckStreamCatches(t *testing.T) {
	cfg := conformance.DefaultConfig()
	fin := runS(t, "S06_FIN") // SCU(3), FIN plain
	_, err := conformance.CheckStream(cfg, frames(fin), fin.Outputs)
	require.NoError(t, err)

	cases := map[string]func(o []conformance.Output) []conformance.Output{
		"input 3 never delivered": func(o []conformance.Output) []conformance.Output { return o[:1] },
		"payload mismatch": func(o []conformance.Output) []conformance.Output {
			o[0].Frame[len(o[0].Frame)-1] ^= 1
			return o
		},
		"delivered before earlier input": func(o []conformance.Output) []conformance.Output {
			return []conformance.Output{o[1], o[0]}
		},
		"bad length or header checksum": func(o []conformance.Output) []conformance.Output {
			o[0].Frame[14+8]-- // TTL: header checksum now wrong
			return o
		},
		"matches no input and is not coalesced": func(o []conformance.Output) []conformance.Output {
			o[1].Hdr.Flags = 0
			o[1].Hdr.Flags |= header.VirtioNetHdrFNeedsCsum
			return o
		},
		"csum_start 2, want 3 segments": func(o []conformance.Output) []conformance.Output {
			o[0].Hdr.CsumStart = 2
			return o
		},
		"RSC header": func(o []conformance.Output) []conformance.Output {
			o[0].Hdr.Flags &^= header.VirtioNetHdrFNeedsCsum
			return o
		},
		"hdr_len 60": func(o []conformance.Output) []conformance.Output {
			o[0].Hdr.HdrLen = 60
			return o
		},
		"TCP checksum field is not the pseudo-header sum": func(o []conformance.Output) []conformance.Output {
			o[0].Frame[14+20+16] ^= 0xff
			return o
		},
	}
	for want, mutate := range cases {
		t.Run(want, func(t *testing.T) {
			_, err := conformance.CheckStream(cfg, frames(fin), mutate(cloneOutputs(fin.Outputs)))
			require.ErrorContains(t, err, want)
		})
	}
	// Duplicated bytes: a coalesced packet delivered twice.
	dup := append(cloneOutputs(fin.Outputs[:1]), cloneOutputs(fin.Outputs)...)
	_, err = conformance.CheckStream(cfg, frames(fin), dup)
	require.Error(t, err)
}

// TestVerifyFields checks every field name against a known packet.
func TestVerifyFields(t *testing.T) {
	res := runS(t, "S43_VLAN")
	want := map[string]uint64{
		"flags": header.VirtioNetHdrFNeedsCsum | header.VirtioNetHdrFRSCInfo, "gso_type": header.VirtioNetHdrGSOTCPv4,
		"hdr_len": 58, "gso_size": conformance.MSS, "csum_start": 3, "csum_offset": 0, "rsc_info": 1, "gso": 1,
		"gso_ecn": 0, "frame_len": uint64(18 + 40 + 3*conformance.MSS), "l2_len": 18, "vlan_tci": 5, "ip_version": 4,
		"ip_total_len": uint64(40 + 3*conformance.MSS), "ip_ecn": 0, "ip_tos": 0, "ip_ttl": 64, "ip_id": 7,
		"tcp_seq": conformance.Seq0, "tcp_ack": conformance.AckA, "tcp_window": conformance.WinW,
		"tcp_flags": header.TCPFlagACK, "tcp_psh": 0, "tcp_cwr": 0, "tcp_ece": 0, "at_ns": 0,
	}
	e := conformance.Expect{Count: -1}
	p := conformance.Packet{Index: 0}
	for name, v := range want {
		p.Fields = append(p.Fields, conformance.F(name, v))
	}
	p.Fields = append(p.Fields, conformance.FBytes("tcp_options", []byte{}))
	e.Packets = []conformance.Packet{p}
	cfg := conformance.DefaultConfig()
	require.NoError(t, conformance.Verify(cfg, e, conformance.Engine, res.Inputs, res.Outputs, nil, nil))
	for _, n := range conformance.FieldNames {
		if _, ok := want[n]; !ok && n != "tcp_options" && n != "ip6_payload_len" && n != "ts_val" {
			t.Errorf("field %s not covered", n)
		}
	}
	e.Packets[0].Fields = []conformance.Field{conformance.F("ip6_payload_len", 1)}
	require.ErrorContains(t, conformance.Verify(cfg, e, conformance.Engine, res.Inputs, res.Outputs, nil, nil), "not IPv6")
	e.Packets[0].Fields = []conformance.Field{conformance.F("ts_val", 1)}
	require.ErrorContains(t, conformance.Verify(cfg, e, conformance.Engine, res.Inputs, res.Outputs, nil, nil), "no timestamp option")
	e.Packets[0].Fields = []conformance.Field{conformance.F("bogus", 1)}
	require.ErrorContains(t, conformance.Verify(cfg, e, conformance.Engine, res.Inputs, res.Outputs, nil, nil), `unknown field "bogus"`)
	e.Packets = []conformance.Packet{{Index: 5}}
	require.ErrorContains(t, conformance.Verify(cfg, e, conformance.Engine, res.Inputs, res.Outputs, nil, nil), "packet 5: only 3 packets")
}

// TestScenarioData checks the scenario list's invariants: unique IDs, every
// number 1..54, runners and reasons, engine-only steps marked.
func TestScenarioData(t *testing.T) {
	seen := map[int]bool{}
	ids := map[string]bool{}
	for _, sc := range conformance.Scenarios() {
		require.False(t, ids[sc.ID], sc.ID)
		ids[sc.ID] = true
		seen[sc.Num] = true
		require.Regexp(t, `^S\d\d_[A-Za-z0-9]+$`, sc.ID)
		require.Equal(t, sc.ID[1:3], func() string { s := "0" + itoa(sc.Num); return s[len(s)-2:] }(), sc.ID)
		require.NotEmpty(t, sc.Title)
		require.NotZero(t, sc.Runners)
		if sc.Runners != conformance.AllRunners {
			require.NotEmpty(t, sc.Why, "%s: a missing runner needs a reason", sc.ID)
		}
		p := sc.Build(sc.ConfigFor(conformance.DefaultConfig()))
		for _, st := range p.Steps {
			if st.Kind == conformance.StepCheckDeadline || st.Kind == conformance.StepCheckConfig {
				require.Equal(t, conformance.Engine, st.Only, "%s: %s checks engine internals", sc.ID, st.Kind)
			}
		}
	}
	for n := 1; n <= 54; n++ {
		require.True(t, seen[n], "scenario %d", n)
	}
	sel := conformance.Select(conformance.Scenarios(), nil, conformance.IPv6, 0)
	for _, sc := range sel {
		require.True(t, sc.Family == 0 || sc.Family&conformance.IPv6 != 0, sc.ID)
	}
	c := conformance.CountersOf(struct {
		A uint64
		B int
		c uint64
		D string
	}{1, 2, 3, "x"})
	require.Equal(t, conformance.Counters{"A": 1, "B": 2}, c)
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// FuzzCheckStream feeds arbitrary output frames (what a broken or hostile
// device could deliver) to the checker: it must return, never panic.
func FuzzCheckStream(f *testing.F) {
	fin := conformance.RunEngine(mustLookup("S06_FIN"), conformance.DefaultConfig(), hck.NewEngine)
	for _, o := range fin.Outputs {
		f.Add(o.Frame, uint8(o.Hdr.Flags), uint8(o.Hdr.GSOType), uint16(o.Hdr.CsumStart))
	}
	f.Add([]byte{}, uint8(0), uint8(0), uint16(0))
	f.Add(make([]byte, 14), uint8(5), uint8(1), uint16(1))
	f.Fuzz(func(t *testing.T, frame []byte, flags, gso uint8, cs uint16) {
		o := conformance.Output{Hdr: header.VirtioNetHdr{Flags: flags, GSOType: gso, CsumStart: cs, HdrLen: 54, GSOSize: 1}, Frame: frame}
		ins := frames(fin)
		_, _ = conformance.CheckStream(conformance.DefaultConfig(), ins, []conformance.Output{o})
		e := conformance.Expect{Count: -1, Packets: []conformance.Packet{{Index: 0, Kind: conformance.SCU, Segs: 1}}}
		for _, n := range conformance.FieldNames {
			e.Packets[0].Fields = append(e.Packets[0].Fields, conformance.F(n, 0))
		}
		_ = conformance.Verify(conformance.DefaultConfig(), e, conformance.Engine, fin.Inputs, []conformance.Output{o}, nil, nil)
		for _, n := range []string{"l2_len", "vlan_tci", "ip_total_len", "ip6_payload_len", "ts_val", "tcp_options"} {
			e.Packets[0] = conformance.Packet{Fields: []conformance.Field{conformance.F(n, 1)}}
			_ = conformance.Verify(conformance.DefaultConfig(), e, conformance.Engine, fin.Inputs, []conformance.Output{o}, nil, nil)
		}
	})
}

func mustLookup(id string) conformance.Scenario {
	sc, ok := conformance.Lookup(id)
	if !ok {
		panic(id)
	}
	return sc
}

package compat

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// scuReports are synthetic QEMU and rscvm reports of one coalesced packet:
// QEMU's with RSC_INFO only, gso_size/hdr_len 0 and stale checksums.
func scuReports(t *testing.T) (q, r []string) {
	t.Helper()
	segs := frames(burst(1000, 3, 1000)...)
	qf := append([]byte(nil), segs[0]...)
	for _, s := range segs[1:] {
		qf = append(qf, s[54:]...)
	}
	qf[16], qf[17] = byte((len(qf)-14)>>8), byte(len(qf)-14)
	rf := append([]byte(nil), qf...)
	rf[24], rf[25] = 0, 0
	c := ipv4Checksum(rf[14:34])
	rf[24], rf[25] = byte(c>>8), byte(c)
	rf[50], rf[51] = 0x12, 0x34
	head := []string{
		"virtio dev 00:02.0 id=1af4:1000 rev=00 mode=modern cmd=0107",
		"virtio features offered=0x0000010130bfffa7 offered_hi=0x0 wanted=0x20000001008799a7 negotiated=0x20000001008799a7 status=0b",
		"ready status=0f rxbufs=256 bufsize=4096 descs=1 mode=mrg heap=1085440",
	}
	rx := func(flags string, gso string, f []byte) []string {
		var l []string
		for off := 0; off < len(f); off += 32 {
			l = append(l, fmt.Sprintf("rxdata n=0 off=%d %s", off, hex.EncodeToString(f[off:min(off+32, len(f))])))
		}
		return append(l, fmt.Sprintf("rx n=0 len=%d bufs=1 flags=%s gso_type=01 %s csum_start=3 csum_offset=0 num_buffers=1 sum=%08x",
			len(f), flags, gso, fnv(f)), "rsc n=0 segs=3 dupacks=0", "rxend packets=1 reason=idle")
	}
	q = append(append([]string{}, head...), rx("04", "hdr_len=0 gso_size=0", qf)...)
	r = append([]string{strings.Replace(head[0], "00:02.0", "00:01.0", 1) + "", head[1], head[2]}, rx("05", "hdr_len=54 gso_size=1000", rf)...)
	r[0] = strings.Replace(r[0], "cmd=0107", "cmd=0007", 1)
	return q, r
}

func fnv(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

func TestClassifyKnownQEMUDefects(t *testing.T) {
	q, r := scuReports(t)
	diffs := Compare(ParseReport(q), ParseReport(r), DefaultRules())
	require.Equal(t, Expected, CaseClass(diffs))
	var reasons []string
	for _, d := range diffs {
		require.NotEqual(t, Unexpected, d.Class, "%s", d)
		reasons = append(reasons, d.Record+" "+d.Field+": "+d.Reason)
	}
	require.Contains(t, strings.Join(reasons, "\n"), "rx n=0 data: QEMU (b)5")
	require.Contains(t, strings.Join(reasons, "\n"), "rx n=0 gso_size: QEMU (b)5")
	require.Equal(t, Identical, CaseClass(Compare(ParseReport(q), ParseReport(q), DefaultRules())))
}

// An injected difference (a payload byte, a packet too many, a ctrl answer
// no rule covers) is reported as unexpected, with the differing lines.
func TestClassifyInjectedDifferenceIsUnexpected(t *testing.T) {
	q, r := scuReports(t)
	for name, mutate := range map[string]func([]string) []string{
		"payload byte": func(l []string) []string {
			for i, s := range l {
				if strings.HasPrefix(s, "rxdata n=0 off=64 ") {
					b := []byte(s)
					b[len(b)-1] ^= 1
					l[i] = string(b)
				}
			}
			return l
		},
		"extra packet": func(l []string) []string {
			return append(l, "rx n=1 len=60 bufs=1 flags=00 gso_type=00 hdr_len=0 gso_size=0 csum_start=0 csum_offset=0 num_buffers=1 sum=00000000")
		},
		"ctrl answer": func(l []string) []string { return append(l, "ctrl n=0 class=5 cmd=0 len=8 ack=1 used_len=1") },
	} {
		rr := mutate(append([]string(nil), r...))
		qq := append([]string(nil), q...)
		if name == "ctrl answer" {
			qq = append(qq, "ctrl n=0 class=5 cmd=0 len=8 ack=0 used_len=1")
		}
		diffs := Compare(ParseReport(qq), ParseReport(rr), DefaultRules())
		require.Equal(t, Unexpected, CaseClass(diffs), name)
		var buf bytes.Buffer
		WriteTable(&buf, []Result{{Case: name, Class: CaseClass(diffs), Diffs: diffs}})
		require.Contains(t, buf.String(), "UNEXPECTED", name)
		t.Logf("%s", buf.String())
	}
}

func TestKnownRuleNeedsExactValues(t *testing.T) {
	q := ParseReport([]string{"rxend packets=3 reason=idle"})
	r := ParseReport([]string{"rxend packets=2 reason=idle"})
	k := []Known{{Record: "rxend", Field: "packets", QEMU: "3", Rscvm: "2", Reason: "why"}}
	require.Equal(t, Expected, CaseClass(Compare(q, r, []Rule{knownRule(k)})))
	r = ParseReport([]string{"rxend packets=1 reason=idle"})
	require.Equal(t, Unexpected, CaseClass(Compare(q, r, []Rule{knownRule(k)})))
}

func TestStreamReport(t *testing.T) {
	q, _ := scuReports(t)
	s := streamReport(ParseReport(q), true)
	st := s.Find("stream")
	require.NotNil(t, st)
	v, _ := st.Get("segments")
	require.Equal(t, "3", v)
	v, _ = st.Get("bytes")
	require.Equal(t, "3000", v)
	require.Nil(t, s.Find("rx n=0"))
}

func FuzzParseReport(f *testing.F) {
	f.Add("rx n=0 len=54 bufs=1 flags=00\nrxdata n=0 off=0 00ff\nctrl n=1 class=0 cmd=0 len=1 ack=0 used_len=1\nopt ctrl=a,b")
	f.Add("virtio dev 00:02.0 id=1af4:1000\nrsc n=0 segs=2 dupacks=0\nrxdata n=0 off=0 zz")
	f.Fuzz(func(t *testing.T, s string) {
		rep := ParseReport(strings.Split(s, "\n"))
		_ = Compare(rep, streamReport(rep, false), DefaultRules())
		_ = streamReport(rep, true)
	})
}

// Every part (a) scenario is driven by a case or listed as not
// host-drivable (with a reason), never both, never neither; case names are
// unique and every case's frames are well-formed enough to inject.
func TestScenarioCoverage(t *testing.T) {
	cases := Cases()
	names := map[string]bool{}
	for _, c := range cases {
		require.False(t, names[c.Name], "duplicate case %s", c.Name)
		names[c.Name] = true
		if strings.HasPrefix(c.Name, "rsc") {
			require.Regexp(t, `\(a\)\d+`, c.About, "%s cites no part (a) scenario", c.Name)
		}
		for i, st := range c.steps() {
			for j, f := range st.Frames {
				require.GreaterOrEqual(t, len(f), 14, "%s step %d frame %d", c.Name, i, j)
			}
		}
	}
	cov := Coverage(cases)
	nd := map[int]bool{}
	for _, s := range NotDrivable() {
		require.NotEmpty(t, s.Reason)
		require.Empty(t, cov[s.Num], "(a)%d is listed as not drivable but cases cite it", s.Num)
		nd[s.Num] = true
	}
	for _, s := range Partial() {
		require.NotEmpty(t, cov[s.Num], "(a)%d partly driven by no case", s.Num)
	}
	for n := 1; n <= NumScenarios; n++ {
		require.True(t, len(cov[n]) > 0 || nd[n], "(a)%d: no case and not listed as not host-drivable", n)
	}
	var buf bytes.Buffer
	WriteCoverage(&buf, cases)
	require.Contains(t, buf.String(), "(a)50  not host-drivable")
	require.NotContains(t, buf.String(), "no case")
	WriteTable(&buf, nil)
	require.Contains(t, buf.String(), "(a)54")
}

// A case in which QEMU is expected to crash: expected when rscvm received
// exactly the injected stream, unexpected when rscvm's stream differs.
func TestCrashDiffs(t *testing.T) {
	c := rscCase("x", "(a)36", burst(1000, 3, 1000)...)
	c.QEMUCrash = "QEMU (b)3"
	var lines []string
	for i, f := range c.Frames {
		for off := 0; off < len(f); off += 32 {
			lines = append(lines, fmt.Sprintf("rxdata n=%d off=%d %s", i, off, hex.EncodeToString(f[off:min(off+32, len(f))])))
		}
		lines = append(lines, fmt.Sprintf("rx n=%d len=%d bufs=1 flags=00 gso_type=00", i, len(f)))
	}
	err := fmt.Errorf("qemu: testguest: vmm exited: signal: segmentation fault")
	diffs := crashDiffs(c, err, ParseReport(lines))
	require.Equal(t, Expected, CaseClass(diffs), "%v", diffs)
	diffs = crashDiffs(c, err, ParseReport(lines[:len(lines)-1]))
	require.Equal(t, Unexpected, CaseClass(diffs), "%v", diffs)
}

func TestStartFailDiffs(t *testing.T) {
	e := fmt.Errorf("exit status 1")
	require.Empty(t, startFailDiffs(e, e, nil, nil))
	require.Equal(t, Unexpected, CaseClass(startFailDiffs(e, nil, nil, []string{"rscvm-testguest: start"})))
	require.Equal(t, Unexpected, CaseClass(startFailDiffs(e, e, nil, []string{"rscvm-testguest: start"})))
}

// The stream parser takes 802.1Q-tagged frames.
func TestTCPPayloadVLAN(t *testing.T) {
	p, fl, ok := tcpPayload(seg{seq: 1000, len: 100, vlan: 5}.frame())
	require.True(t, ok)
	require.Len(t, p, 100)
	require.Equal(t, byte(0x10), fl)
	_, _, ok = tcpPayload(seg{seq: 1000, len: 100, vlan: 5}.frame()[:30])
	require.False(t, ok)
}

// steps() puts Frames (with the shared Vnet header) before Steps.
func TestCaseSteps(t *testing.T) {
	c := vnetCase("v", "(a)3", 0)
	c.Steps = []Step{{After: "ctrl n=1 ", Frames: frames(seg{seq: 5, len: 1})}}
	st := c.steps()
	require.Len(t, st, 2)
	require.Len(t, st[0].Vnet, 1)
	require.NotNil(t, st[0].Vnet[0])
	require.Equal(t, "ctrl n=1 ", st[1].After)
	require.Empty(t, rscCase("e", "(a)1").steps())
}

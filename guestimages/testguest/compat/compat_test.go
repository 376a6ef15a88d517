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

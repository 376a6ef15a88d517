package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/internal/testenv"
	"github.com/rscvm/rscvm/rsc/conformance"
)

// runHCK runs `rscvm args...` and returns stdout, stderr and the error.
func runHCK(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

var hckRow = regexp.MustCompile(`^(S\d\d_\S+)\s+(IPv4\+IPv6|IPv4|IPv6|-)\s+(PASS|FAIL|SKIP)(\s+(.*))?$`)

// parseHCKTable checks the table's shape and returns scenario → result.
func parseHCKTable(t *testing.T, out string) (map[string]string, map[string]string, string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	require.GreaterOrEqual(t, len(lines), 3)
	require.Regexp(t, `^scenario\s+family\s+result\s+detail$`, lines[0])
	res, detail := map[string]string{}, map[string]string{}
	for _, l := range lines[1 : len(lines)-1] {
		if strings.HasSuffix(l, "(not meant for this runner; see detail)") {
			continue
		}
		m := hckRow.FindStringSubmatch(l)
		require.NotNil(t, m, "table row %q", l)
		res[m[1]], detail[m[1]] = m[3], m[5]
	}
	return res, detail, lines[len(lines)-1]
}

// TestHCKRSCDevice runs the whole suite through the device with the
// in-memory backend: every scenario meant for the device passes.
func TestHCKRSCDevice(t *testing.T) {
	out, stderr, err := runHCK(t, "hck", "rsc")
	require.NoError(t, err, out)
	require.Contains(t, stderr, "runner device")
	res, detail, summary := parseHCKTable(t, out)
	passed, skipped := 0, 0
	for _, sc := range conformance.Scenarios() {
		got, ok := res[sc.ID]
		require.True(t, ok, "%s missing from the table", sc.ID)
		if sc.Runners&conformance.Device != 0 {
			require.Equal(t, "PASS", got, "%s: %s", sc.ID, detail[sc.ID])
			passed++
		} else {
			require.Equal(t, "SKIP", got, sc.ID)
			require.NotEmpty(t, detail[sc.ID], "a skip says why")
			skipped++
		}
	}
	require.Equal(t, itoa(passed)+" passed, 0 failed", summary)
	require.Contains(t, out, itoa(skipped)+" skipped")
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestHCKRSCSelection covers --run, --ipv4/--ipv6, --interval, --engine and
// --json.
func TestHCKRSCSelection(t *testing.T) {
	out, _, err := runHCK(t, "hck", "rsc", "--run", "^S0[12]_", "--interval", "300000")
	require.NoError(t, err)
	res, _, summary := parseHCKTable(t, out)
	require.Equal(t, map[string]string{"S01_BasicV4": "PASS", "S02_BasicV6": "PASS"}, res)
	require.Equal(t, "2 passed, 0 failed", summary)

	out, _, err = runHCK(t, "hck", "rsc", "--ipv6", "--engine")
	require.NoError(t, err)
	res, _, _ = parseHCKTable(t, out)
	require.Contains(t, res, "S02_BasicV6")
	require.Contains(t, res, "S36_TrailingGarbageGrowth") // both families
	require.Contains(t, res, "S53_PropertyParsing")       // no traffic
	require.NotContains(t, res, "S01_BasicV4")
	require.Equal(t, "SKIP", res["S53_PropertyParsing"], "device-level on the engine runner")

	out, _, err = runHCK(t, "hck", "rsc", "--ipv4", "--json", "--run", "S0[1-3]|S14")
	require.NoError(t, err)
	var rep hckReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, "rsc", rep.Suite)
	require.Equal(t, "device", rep.Runner)
	require.Equal(t, int64(1000000), rep.IntervalNs)
	require.Equal(t, "ipv4", rep.Family)
	ids := []string{}
	for _, r := range rep.Results {
		ids = append(ids, r.Scenario)
		require.Equal(t, "IPv4", r.Family)
		require.NotEmpty(t, r.Title)
	}
	require.Equal(t, []string{"S01_BasicV4", "S03_LoneSegment", "S03_LoneSegmentBatchEnd",
		"S14_TimestampsIdentical", "S14_TimestampsDisabled", "S14_TimestampsDiffering"}, ids)
	require.Equal(t, 5, rep.Passed)
	require.Equal(t, 1, rep.Skipped)
	require.Equal(t, "SKIP", rep.Results[4].Result)
	require.Contains(t, rep.Results[4].Detail, "timestamp")
}

// TestHCKRSCReportsFailure breaks a scenario's expectation on purpose: the
// command prints FAIL with what differed, counts it and exits 1 (table and
// JSON).
func TestHCKRSCReportsFailure(t *testing.T) {
	orig := hckScenarios
	t.Cleanup(func() { hckScenarios = orig })
	hckScenarios = func() []conformance.Scenario {
		all := orig()
		for i := range all {
			if all[i].ID == "S06_FIN" {
				build := all[i].Build
				all[i].Build = func(cfg conformance.Config) conformance.Program {
					p := build(cfg)
					p.Expect.Packets[0].Segs = 4 // the SCU has 3 segments
					return p
				}
			}
		}
		return all
	}
	for _, runner := range [][]string{nil, {"--engine"}} {
		args := append([]string{"hck", "rsc", "--run", "S0[5-7]"}, runner...)
		out, _, err := runHCK(t, args...)
		require.Equal(t, exitError{1}, err)
		res, detail, summary := parseHCKTable(t, out)
		require.Equal(t, "FAIL", res["S06_FIN"])
		require.Equal(t, "packet 0: SCU: csum_start (segments) 3, want 4", detail["S06_FIN"])
		require.Equal(t, "PASS", res["S05_PSHMidStream"])
		require.Equal(t, "2 passed, 1 failed", summary)

		out, _, err = runHCK(t, append(args, "--json")...)
		require.Equal(t, exitError{1}, err)
		var rep hckReport
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.Equal(t, 1, rep.Failed)
		require.Equal(t, 2, rep.Passed)
	}
}

func TestHCKFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  []string
	}{
		{[]string{"--interval", "0"}, []string{"--interval", "1 to 4294967295", "1000000"}},
		{[]string{"--interval", "1ms"}, []string{"--interval", "nanoseconds"}},
		{[]string{"--interval", "4294967296"}, []string{"--interval"}},
		{[]string{"--ipv4", "--ipv6"}, []string{"--ipv4 and --ipv6"}},
		{[]string{"--run", "("}, []string{"--run", "regular expression"}},
		{[]string{"--netns"}, []string{"--netns needs --tap"}},
		{[]string{"--engine", "--tap", "x"}, []string{"--engine and --tap"}},
		{[]string{"--tap", "a/b"}, []string{"--tap", "interface name"}},
		{[]string{"--tap", "a-name-longer-than-15"}, []string{"--tap", "1 to 15 characters"}},
		{[]string{"--nope"}, []string{"--nope", "accepted: --engine, --interval, --ipv4, --ipv6, --json, --netns, --run, --tap"}},
		{[]string{"S01"}, []string{`unexpected argument "S01"`}},
		{[]string{"--tap"}, []string{"needs an argument: --tap"}},
	} {
		_, err := parseHCKArgs(tc.args)
		require.Error(t, err, "%q", tc.args)
		for _, m := range tc.msg {
			require.Contains(t, err.Error(), m, "%q", tc.args)
		}
	}
	o, err := parseHCKArgs(nil)
	require.NoError(t, err)
	require.Equal(t, time.Millisecond, o.Interval, "the HCK setting rsc_interval=1000000")

	_, stderr, err := runHCK(t, "hck")
	require.Equal(t, exitError{2}, err)
	require.Contains(t, stderr, "usage: rscvm hck rsc")
	_, _, err = runHCK(t, "hck", "hlk")
	require.ErrorContains(t, err, `unknown suite "hlk" (suites: rsc)`)
	_, _, err = runHCK(t, "hck", "rsc", "--run", "nothing-matches")
	require.ErrorContains(t, err, "no scenario matches")
	out, _, err := runHCK(t, "hck", "rsc", "--help")
	require.NoError(t, err)
	for _, f := range []string{"--tap", "--netns", "--ipv4", "--ipv6", "--interval", "--json", "--run", "--engine"} {
		require.Contains(t, out, f)
	}
	out, _, err = runHCK(t, "help")
	require.NoError(t, err)
	require.Contains(t, out, "hck ")
}

// TestHCKRSCTap runs the timing-independent scenarios on a real TAP in a
// fresh network namespace (root; skipped with the reason otherwise, failed
// under RSCVM_REQUIRE_KVM=1).
func TestHCKRSCTap(t *testing.T) {
	testenv.TUN(t)
	out, stderr, err := runHCK(t, "hck", "rsc", "--tap", "hcktest0", "--netns")
	require.NoError(t, err, out)
	require.Contains(t, stderr, "TAP hcktest0 in the fresh network namespace")
	res, detail, summary := parseHCKTable(t, out)
	n := 0
	for _, sc := range conformance.Scenarios() {
		if sc.Runners&conformance.Tap != 0 && !sc.TimingDependent {
			require.Equal(t, "PASS", res[sc.ID], "%s: %s", sc.ID, detail[sc.ID])
			n++
		} else {
			require.Equal(t, "SKIP", res[sc.ID], sc.ID)
		}
	}
	require.Equal(t, itoa(n)+" passed, 0 failed", summary)
}

package compat

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rscvm/rscvm/guestimages/testguest"
)

// Config says how to run the cases.
type Config struct {
	// ELF is the test guest.
	ELF string
	// QEMU and Rscvm build the two VMM command lines
	// (testguest.QEMUCommand, testguest.RscvmCommand).
	QEMU, Rscvm func(extraDeviceProps []string) testguest.VMMCommand
	// Rules classify differences; nil means DefaultRules().
	Rules []Rule
	// Timeout bounds one case (both VMMs); 0 means 60 s.
	Timeout time.Duration
	// Log, if set, gets progress and every serial line.
	Log func(format string, args ...any)
}

// Result is the outcome of one case.
type Result struct {
	Case  string `json:"case"`
	About string `json:"about"`
	Class Class  `json:"class"`
	// Note says what was compared differently (Case.Stream) or why the case failed.
	Note    string   `json:"note,omitempty"`
	Diffs   []Diff   `json:"diffs,omitempty"`
	Seconds float64  `json:"seconds"`
	QEMU    []string `json:"qemu_report,omitempty"`
	Rscvm   []string `json:"rscvm_report,omitempty"`
	// TapQEMU and TapRscvm are the TAP's kernel counters at the end of the
	// run ("tx=packets/dropped rx=packets/dropped"; tx is towards the VMM):
	// they tell lost frames from frames a device did not deliver.
	TapQEMU  string `json:"tap_qemu,omitempty"`
	TapRscvm string `json:"tap_rscvm,omitempty"`
}

// Run runs one case under both VMMs at the same time, each in its own
// namespace, and compares the reports.
func Run(ctx context.Context, cfg Config, c Case) Result {
	start := time.Now()
	res := Result{Case: c.Name, About: c.About}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	var qLines, rLines []string
	var qErr, rErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		qLines, res.TapQEMU, qErr = runOne(ctx, cfg, c, cfg.QEMU(nil), "qemu")
	}()
	go func() {
		defer wg.Done()
		rLines, res.TapRscvm, rErr = runOne(ctx, cfg, c, cfg.Rscvm(c.RscvmProps), "rscvm")
	}()
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	q, r := ParseReport(qLines), ParseReport(rLines)
	res.QEMU, res.Rscvm = lines(q), lines(r)
	if c.StartFails {
		res.Diffs = startFailDiffs(qErr, rErr, qLines, rLines)
		res.Class = CaseClass(res.Diffs)
		return res
	}
	if c.QEMUCrash != "" && qErr != nil && rErr == nil && strings.Contains(qErr.Error(), "signal: ") {
		res.Diffs = crashDiffs(c, qErr, r)
		res.Class = CaseClass(res.Diffs)
		res.Note = "QEMU crashed, as expected"
		return res
	}
	if err := errors.Join(qErr, rErr); err != nil {
		res.Class, res.Note = Failed, err.Error()
		return res
	}
	if c.Stream != "" {
		q, r = streamReport(q, true), streamReport(r, true)
		res.Note = c.Stream
	} else if len(c.steps()) > 0 {
		q, r = streamReport(q, false), streamReport(r, false)
	}
	rules := cfg.Rules
	if rules == nil {
		rules = DefaultRules()
	}
	if len(c.Known) > 0 {
		rules = append(append([]Rule(nil), rules...), knownRule(c.Known))
	}
	res.Diffs = Compare(q, r, rules)
	res.Class = CaseClass(res.Diffs)
	if c.Timing != "" {
		res.Note = strings.TrimPrefix(res.Note+"; timing: "+c.Timing, "; ")
	}
	return res
}

func lines(r Report) []string {
	var out []string
	for _, rec := range r.Records {
		out = append(out, rec.Line)
	}
	return out
}

// runOne boots the guest under one VMM, injects the frames after ready and
// returns the serial lines once the guest powered off.
func runOne(ctx context.Context, cfg Config, c Case, cmd testguest.VMMCommand, who string) (lines []string, tap string, err error) {
	logf := func(string, ...any) {}
	if cfg.Log != nil {
		logf = func(f string, a ...any) { cfg.Log(c.Name+" "+who+": "+f, a...) }
	}
	s, err := testguest.StartSession(ctx, testguest.SessionConfig{ELF: cfg.ELF, Cmdline: c.Cmdline, NIC: c.NIC,
		Command: cmd, Log: logf})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", who, err)
	}
	defer s.Close()
	defer func() { tap = tapCounters(s) }()
	if steps := c.steps(); len(steps) > 0 {
		if _, err := s.WaitReady(ctx); err != nil {
			return s.Lines(), "", fmt.Errorf("%s: guest not ready: %w; stderr: %s", who, err, strings.TrimSpace(s.Stderr()))
		}
		for i, st := range steps {
			if err := inject(ctx, s, st); err != nil {
				return s.Lines(), "", fmt.Errorf("%s: step %d: %w", who, i, err)
			}
		}
	}
	out, err := s.Wait(ctx)
	if err != nil {
		return s.Lines(), "", fmt.Errorf("%s: %w", who, err)
	}
	if !out.Done {
		return s.Lines(), "", fmt.Errorf("%s: guest did not reach its done line", who)
	}
	return s.Lines(), "", nil
}

// startFailDiffs: both VMMs must have failed before the guest printed
// anything.
func startFailDiffs(qErr, rErr error, qLines, rLines []string) []Diff {
	state := func(err error, lines []string) string {
		switch {
		case err == nil:
			return "guest ran"
		case len(lines) > 0:
			return "failed after the guest started"
		}
		return "refused to start"
	}
	q, r := state(qErr, qLines), state(rErr, rLines)
	if q == "refused to start" && r == q {
		return nil
	}
	return []Diff{{Record: "vmm", QEMU: q, Rscvm: r, Class: Unexpected}}
}

// tapCounters reads the session TAP's counters (best effort).
func tapCounters(s *testguest.Session) string {
	out, err := exec.Command("ip", "-n", s.Netns.Name, "-s", "-j", "link", "show", s.Netns.Tap).Output()
	if err != nil {
		return ""
	}
	var links []struct {
		Stats struct {
			RX struct{ Packets, Dropped uint64 }
			TX struct{ Packets, Dropped uint64 }
		} `json:"stats64"`
	}
	if json.Unmarshal(out, &links) != nil || len(links) != 1 {
		return ""
	}
	st := links[0].Stats
	return fmt.Sprintf("tx=%d/%d rx=%d/%d", st.TX.Packets, st.TX.Dropped, st.RX.Packets, st.RX.Dropped)
}

// crashDiffs classifies a case in which QEMU died as c.QEMUCrash expects:
// one expected difference for the crash, plus an unexpected one for every
// field of rscvm's stream record that differs from the injected stream.
func crashDiffs(c Case, qErr error, r Report) []Diff {
	diffs := []Diff{{Record: "vmm", QEMU: strings.TrimRight(qErr.Error(), ": "), Rscvm: "guest powered off",
		Class: Expected, Reason: c.QEMUCrash}}
	want := injectedStream(c)
	rs := streamReport(r, true)
	got := rs.Find("stream")
	for _, f := range want.Fields {
		v, _ := got.Get(f.Key)
		if v != f.Value {
			diffs = append(diffs, Diff{Record: "stream", Field: f.Key, QEMU: "(injected) " + f.Value, Rscvm: v,
				Class: Unexpected})
		}
	}
	return diffs
}

// injectedStream is the stream record of the case's injected frames, each
// taken as one segment.
func injectedStream(c Case) Record {
	var rep Report
	n := 0
	for _, st := range c.steps() {
		for _, f := range st.Frames {
			k := "n=" + strconv.Itoa(n)
			rep.Records = append(rep.Records, Record{Key: "rx " + k,
				Fields: []Field{{"n", strconv.Itoa(n)}, {"data", hex.EncodeToString(f)}}})
			n++
		}
	}
	st := streamReport(rep, true)
	return *st.Find("stream")
}

// inject runs one step: wait for its line and delay, then send its frames.
func inject(ctx context.Context, s *testguest.Session, st Step) error {
	if st.After != "" {
		if _, err := s.WaitPrefix(ctx, st.After); err != nil {
			return fmt.Errorf("waiting for %q: %w", st.After, err)
		}
	}
	if st.Delay > 0 {
		t := time.NewTimer(st.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if st.Verified {
		if err := s.InjectVerified(st.Gap, st.Frames...); err != nil {
			return fmt.Errorf("inject (verified path): %w", err)
		}
		return nil
	}
	for i, f := range st.Frames {
		var err error
		if i < len(st.Vnet) && st.Vnet[i] != nil {
			err = s.InjectVnet(*st.Vnet[i], f)
		} else {
			err = s.Inject(f)
		}
		if err != nil {
			return fmt.Errorf("inject frame %d: %w", i, err)
		}
	}
	return nil
}

// streamReport adds one "stream" record: segments carried, TCP payload
// bytes, an FNV-1a sum of the TCP payloads in delivery order, and the OR of
// the TCP flags. With only set, the rx, rsc and rxend records are dropped
// (packet boundaries and per-packet headers are not compared).
func streamReport(r Report, only bool) Report {
	var out Report
	var segs, bytes uint64
	var flags byte
	var payload []byte
	bad := 0
	for _, rec := range r.Records {
		k := rec.Key
		switch {
		case strings.HasPrefix(k, "rx "):
			n := uint64(1)
			if rr := r.Find("rsc " + strings.TrimPrefix(k, "rx ")); rr != nil {
				if v, ok := decField(rr, "segs"); ok {
					n = v
				}
			}
			segs += n
			if !only {
				out.Records = append(out.Records, rec)
			}
			d, _ := rec.Get("data")
			b, _ := hex.DecodeString(d)
			p, f, ok := tcpPayload(b)
			if !ok {
				bad++
				continue
			}
			payload = append(payload, p...)
			bytes += uint64(len(p))
			flags |= f
		case only && (strings.HasPrefix(k, "rsc ") || strings.HasPrefix(k, "rxend")):
		default:
			out.Records = append(out.Records, rec)
		}
	}
	fields := []Field{{"segments", strconv.FormatUint(segs, 10)}, {"bytes", strconv.FormatUint(bytes, 10)},
		{"sum", fmt.Sprintf("%08x", testguest.FrameSum(payload))}, {"tcpflags", fmt.Sprintf("%02x", flags)},
		{"unparsed", strconv.Itoa(bad)}}
	line := "stream"
	for _, f := range fields {
		line += " " + f.Key + "=" + f.Value
	}
	out.Records = append(out.Records, Record{Key: "stream", Fields: fields, Line: line})
	return out
}

// tcpPayload returns the TCP payload and flags of an IPv4/TCP or IPv6/TCP
// (no extension header) frame, untagged or with one 802.1Q tag.
func tcpPayload(b []byte) ([]byte, byte, bool) {
	if len(b) >= 18 && b[12] == 0x81 && b[13] == 0x00 {
		// One 802.1Q tag: drop it.
		b = append(append([]byte(nil), b[:12]...), b[16:]...)
	}
	if len(b) >= 54 && b[12] == 0x86 && b[13] == 0xdd && b[14]>>4 == 6 && b[20] == 6 {
		pl := int(b[18])<<8 | int(b[19])
		if pl < 20 || 54+pl > len(b) {
			return nil, 0, false
		}
		return tcpSegment(b[54 : 54+pl])
	}
	if len(b) < 34 || b[12] != 0x08 || b[13] != 0x00 || b[14]>>4 != 4 || b[23] != 6 {
		return nil, 0, false
	}
	ihl := int(b[14]&0x0f) * 4
	tot := int(b[16])<<8 | int(b[17])
	if ihl < 20 || tot < ihl+20 || 14+tot > len(b) {
		return nil, 0, false
	}
	return tcpSegment(b[14+ihl : 14+tot])
}

// tcpSegment returns the payload and flags of a TCP segment.
func tcpSegment(tcp []byte) ([]byte, byte, bool) {
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return nil, 0, false
	}
	return tcp[doff:], tcp[13], true
}

package main

// BenchmarkVhostUserMatrix: the same Linux guest (Debian's kernel, the agent
// as /init) under QEMU 7.2 TCG receiving host→guest TCP streams through four
// virtio-net datapaths, for two kinds of input on the host TAP:
//
//	qemu-tap          QEMU's built-in virtio-net on a TAP (vhost=off)
//	qemu-tap-rsc-ext  the same with guest_rsc_ext=on (Linux does not negotiate
//	                  VIRTIO_NET_F_RSC_EXT, so this should change nothing)
//	rscvm-gso-off     rscvm vhost-user-net, x-rsc-gso=off
//	rscvm-gso-on      rscvm vhost-user-net, x-rsc-gso=on
//
//	gso input         the TAP's TSO/GSO on: the host kernel hands it 64 KiB
//	                  GSO frames
//	mss input         TSO/GSO switched off with ethtool after the guest's
//	                  device started (the VMM sets the TAP's offloads then):
//	                  MSS-sized segments enter the TAP
//
// Every configuration boots its own guest, all at once; their transfers
// interleave (see runBenchMatrix). Each agent runs, per input, a warm-up
// sink (SHA-256 checked against what the host sent) and RSCVM_BENCH_RUNS
// drain actions (read and count only: under TCG the guest's SHA-256 runs at
// about 0.2 Gbit/s and would be all that is measured). Measured per
// transfer: the guest's own transfer time (drain ns=), its rx packet count (rx
// before and after), and utime+stime of the QEMU and rscvm processes
// (/proc/PID/stat) from before the host connects until the guest closed the
// stream. The result is a markdown table (RSCVM_BENCH_MD, and the log) and a
// bar chart (RSCVM_BENCH_PNG); `make bench` runs it with -benchtime=1x.
// RSCVM_BENCH_MIB and RSCVM_BENCH_CONFIGS (e.g. qemu-tap,rscvm-gso-on)
// make a quick check smaller. Nothing here asserts on timing: numbers are
// reported, not judged.
//
// Processes start through the error-returning cores of qemu_test.go and
// vhostuser_test.go (launchGuest, buildInitramfs, vuBackend.start and
// terminate), which the tests' helpers wrap.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	raster "image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/guestimages/agent/protocol"
	"github.com/rscvm/rscvm/guestimages/testguest"
	"github.com/rscvm/rscvm/internal/testenv"
)

// Environment of the benchmark.
const (
	envBenchRuns = "RSCVM_BENCH_RUNS" // measured transfers per cell (default 7)
	envBenchMiB  = "RSCVM_BENCH_MIB"  // MiB per measured transfer (default 128)
	envBenchPNG  = "RSCVM_BENCH_PNG"  // chart output path (none if unset)
	envBenchMD   = "RSCVM_BENCH_MD"   // markdown output path (none if unset)
	envBenchRev  = "RSCVM_BENCH_REV"  // the revision measured (default: git describe --always --dirty)
	// envBenchConfigs selects configurations by name, comma-separated
	// (default all).
	envBenchConfigs = "RSCVM_BENCH_CONFIGS"
)

// benchMatrixTimeout bounds one matrix: boots, transfers, power-offs.
const benchMatrixTimeout = 20 * time.Minute

// userHZ is the unit of utime and stime in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture rscvm runs on).
const userHZ = 100

// benchConfig is one datapath.
type benchConfig struct {
	Name  string // short name (metrics, RSCVM_BENCH_CONFIGS)
	Label string // table and chart label
	// VhostUser: rscvm vhost-user-net serves the device; Props are its
	// -device virtio-net properties. Otherwise QEMU's virtio-net on a TAP;
	// Props are appended to its -device virtio-net-pci.
	VhostUser bool
	Props     string
}

var benchConfigs = []benchConfig{
	{Name: "qemu-tap", Label: "QEMU virtio-net, TAP"},
	{Name: "qemu-tap-rsc-ext", Label: "QEMU virtio-net, TAP, guest_rsc_ext=on", Props: "guest_rsc_ext=on"},
	{Name: "rscvm-gso-off", Label: "rscvm vhost-user-net, x-rsc-gso=off", VhostUser: true, Props: "x-rsc-gso=off"},
	{Name: "rscvm-gso-on", Label: "rscvm vhost-user-net, x-rsc-gso=on", VhostUser: true, Props: "x-rsc-gso=on"},
}

// selectBenchConfigs returns the configurations named in list
// (comma-separated), all for "".
func selectBenchConfigs(list string) ([]benchConfig, error) {
	if list == "" {
		return benchConfigs, nil
	}
	var out []benchConfig
	for _, name := range strings.Split(list, ",") {
		i := slices.IndexFunc(benchConfigs, func(c benchConfig) bool { return c.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("%s: no configuration %q", envBenchConfigs, name)
		}
		if !slices.ContainsFunc(out, func(c benchConfig) bool { return c.Name == name }) {
			out = append(out, benchConfigs[i])
		}
	}
	return out, nil
}

// benchInput is what the host kernel hands the TAP.
type benchInput struct {
	Name    string
	Label   string
	HostGSO bool
}

var benchInputs = []benchInput{
	{Name: "gso", Label: "GSO", HostGSO: true},
	{Name: "mss", Label: "MSS", HostGSO: false},
}

// benchRun is one measured transfer.
type benchRun struct {
	Bytes int64
	// Guest is the guest's transfer time (sink ns=).
	Guest time.Duration
	// Packets is the guest's rx packet count over the transfer.
	Packets int64
	// QEMUTicks and RscvmTicks are utime+stime in USER_HZ ticks.
	QEMUTicks, RscvmTicks int64
}

func (r benchRun) gbps() float64 {
	if r.Guest <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / float64(r.Guest.Nanoseconds())
}

// cpuPerGB converts ticks to CPU seconds per 10^9 bytes received.
func (r benchRun) cpuPerGB(ticks int64) float64 {
	if r.Bytes <= 0 {
		return 0
	}
	return float64(ticks) / userHZ / (float64(r.Bytes) / 1e9)
}

// benchCell is the runs of one configuration and input.
type benchCell struct {
	Config benchConfig
	Input  benchInput
	Runs   []benchRun
	// Features is the feature word the guest negotiated.
	Features string
}

// stat is the median and range of a sample.
type stat struct {
	Median, Min, Max float64
	N                int
}

func newStat(xs []float64) stat {
	if len(xs) == 0 {
		return stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// cellStats summarises a cell.
type cellStats struct {
	Gbps, Packets, QEMUCPU, RscvmCPU, TotalCPU stat
}

func (c benchCell) stats() cellStats {
	var g, p, q, r, t []float64
	for _, run := range c.Runs {
		g = append(g, run.gbps())
		p = append(p, float64(run.Packets))
		q = append(q, run.cpuPerGB(run.QEMUTicks))
		r = append(r, run.cpuPerGB(run.RscvmTicks))
		t = append(t, run.cpuPerGB(run.QEMUTicks+run.RscvmTicks))
	}
	return cellStats{Gbps: newStat(g), Packets: newStat(p), QEMUCPU: newStat(q), RscvmCPU: newStat(r), TotalCPU: newStat(t)}
}

// benchParams are the knobs of one benchmark run.
type benchParams struct {
	Runs, Warmup int
	// Bytes is the size of a measured transfer. 128 MiB take about half a
	// second at these speeds: 50 ticks of /proc/PID/stat's 10 ms, a 2%
	// resolution of the CPU figures (32 MiB would give 8%).
	Bytes int64
	// WarmupBytes is the size of a warm-up (hashed by the guest's agent,
	// which runs at about 0.2 Gbit/s under TCG).
	WarmupBytes int64
	PNG, MD     string
}

func benchParamsFromEnv() (benchParams, error) {
	p := benchParams{Runs: 7, Warmup: 1, Bytes: 128 << 20, PNG: os.Getenv(envBenchPNG), MD: os.Getenv(envBenchMD)}
	if s := os.Getenv(envBenchRuns); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 50 {
			return p, fmt.Errorf("%s=%q: want 1..50", envBenchRuns, s)
		}
		p.Runs = n
	}
	if s := os.Getenv(envBenchMiB); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1024 {
			return p, fmt.Errorf("%s=%q: want 1..1024", envBenchMiB, s)
		}
		p.Bytes = int64(n) << 20
	}
	p.WarmupBytes = min(p.Bytes, 16<<20)
	return p, nil
}

// benchEnv is what every configuration needs.
type benchEnv struct {
	qemu, kernel, initrd, rscvm string
	params                      benchParams
}

func BenchmarkVhostUserMatrix(b *testing.B) {
	params, err := benchParamsFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	testenv.Root(b, "network namespaces and TAPs")
	if err := testguest.NetnsAvailable(); err != nil {
		testenv.SkipOrFail(b, "%v", err)
	}
	qemu := testenv.QEMU(b)
	testenv.Tool(b, "ethtool", "ethtool")
	kernel := testenv.Image(b, "debian/vmlinuz")
	out := filepath.Dir(filepath.Dir(kernel))
	kver := "?"
	if v, err := os.ReadFile(filepath.Join(out, "debian", "kver")); err == nil {
		kver = strings.TrimSpace(string(v))
	}
	dir := b.TempDir()
	initrd, err := buildInitramfs(dir, filepath.Join(out, "debian", "modules"))
	if err != nil {
		b.Fatal(err)
	}
	rscvm := filepath.Join(dir, "rscvm")
	if err := goBuild(rscvm, "../../cmd/rscvm", nil); err != nil {
		b.Fatal(err)
	}
	env := benchEnv{qemu: qemu, kernel: kernel, initrd: initrd, rscvm: rscvm, params: params}

	configs, err := selectBenchConfigs(os.Getenv(envBenchConfigs))
	if err != nil {
		b.Fatal(err)
	}
	runs := map[string][]benchRun{}
	features := map[string]string{}
	for i := 0; i < b.N; i++ {
		res, err := runBenchMatrix(b, env, configs)
		if err != nil {
			b.Fatal(err)
		}
		for k, v := range res.Runs {
			runs[k] = append(runs[k], v...)
		}
		for k, v := range res.Features {
			features[k] = v
		}
	}
	var cells []benchCell
	for _, c := range configs {
		for _, in := range benchInputs {
			cell := benchCell{Config: c, Input: in, Runs: runs[c.Name+"/"+in.Name], Features: features[c.Name]}
			b.ReportMetric(cell.stats().Gbps.Median, c.Name+"/"+in.Name+"-Gbit/s")
			cells = append(cells, cell)
		}
	}
	rep := benchReport{
		Date:        time.Now().UTC(),
		Machine:     benchMachine(qemu),
		Revision:    benchRevision(),
		Kernel:      kver,
		Runs:        params.Runs,
		Bytes:       params.Bytes,
		WarmupBytes: params.WarmupBytes,
		Cells:       cells,
	}
	if params.PNG != "" {
		rep.Image = "docs/" + filepath.Base(params.PNG)
	}
	for _, in := range benchInputs {
		a, okA := rep.cell("rscvm-gso-on", in.Name)
		q, okQ := rep.cell("qemu-tap", in.Name)
		if okA && okQ {
			sa, sq := a.stats(), q.stats()
			b.ReportMetric(sa.Gbps.Median/sq.Gbps.Median, in.Name+"-Gbit/s-rscvm/qemu")
			b.ReportMetric(sa.TotalCPU.Median/sq.TotalCPU.Median, in.Name+"-CPU/GB-rscvm/qemu")
		}
	}
	md := rep.markdown()
	b.Logf("\n%s", md)
	if params.MD != "" {
		err := os.MkdirAll(filepath.Dir(params.MD), 0o755)
		if err == nil {
			err = os.WriteFile(params.MD, []byte(md), 0o644)
		}
		if err != nil {
			b.Errorf("markdown: %v", err)
		}
	}
	if params.PNG != "" {
		img, err := rep.chart()
		if err == nil {
			err = writePNG(params.PNG, img)
		}
		if err != nil {
			b.Errorf("chart: %v", err)
		}
	}
}

// benchMachine describes the host: "2 vCPU, QEMU 7.2 TCG, nested" (nested:
// the host is itself a virtual machine, its CPU flags say hypervisor).
func benchMachine(qemu string) string {
	ver := "?"
	if out, err := exec.Command(qemu, "--version").Output(); err == nil {
		ver = qemuMinorVersion(string(out))
	}
	s := fmt.Sprintf("%d vCPU, QEMU %s TCG", runtime.NumCPU(), ver)
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil && cpuinfoHypervisor(info) {
		s += ", nested"
	}
	return s
}

// qemuMinorVersion extracts "7.2" from "QEMU emulator version 7.2.22 (...)".
func qemuMinorVersion(out string) string {
	_, rest, ok := strings.Cut(out, "version ")
	if !ok {
		return "?"
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "?"
	}
	v := f[0]
	parts := strings.Split(v, ".")
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// cpuinfoHypervisor reports whether /proc/cpuinfo lists the hypervisor flag.
func cpuinfoHypervisor(info []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(info))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "flags" {
			return slices.Contains(strings.Fields(v), "hypervisor")
		}
	}
	return false
}

// benchRevision is $RSCVM_BENCH_REV or what git says about this tree.
func benchRevision() string {
	if r := os.Getenv(envBenchRev); r != "" {
		return r
	}
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// benchResult is what a matrix measured.
type benchResult struct {
	// Runs are keyed "configuration/input".
	Runs map[string][]benchRun
	// Features is the negotiated feature word per configuration.
	Features map[string]string
}

// runBenchMatrix boots one guest per configuration, all at once, and runs
// the warm-up and measured transfers of every input, interleaved: round r
// of an input starts at configuration r mod n and visits each once, so
// that whatever else loads the host spreads over all configurations
// instead of landing on whichever ran at that minute. The guests that do
// not transfer wait in accept (idle; their CPU is not counted).
func runBenchMatrix(b *testing.B, env benchEnv, configs []benchConfig) (benchResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), benchMatrixTimeout)
	defer cancel()
	p := env.params
	per := p.Warmup + p.Runs
	var sessions []*benchSession
	defer func() {
		for _, s := range sessions {
			s.close()
		}
	}()
	for _, c := range configs {
		s, err := startBenchSession(ctx, env, c)
		if err != nil {
			return benchResult{}, fmt.Errorf("%s: %w", c.Name, err)
		}
		sessions = append(sessions, s)
	}
	for ii, in := range benchInputs {
		for i := 0; i < per; i++ {
			idx := ii*per + i
			for k := range sessions {
				s := sessions[(k+i)%len(sessions)]
				if err := s.transfer(ctx, idx, in, i == 0); err != nil {
					return benchResult{}, s.failed(b, fmt.Errorf("%s input, transfer %d: %w", in.Name, i, err))
				}
			}
		}
	}
	res := benchResult{Runs: map[string][]benchRun{}, Features: map[string]string{}}
	for _, s := range sessions {
		runs, features, err := s.finish(ctx)
		if err != nil {
			return benchResult{}, s.failed(b, err)
		}
		res.Features[s.c.Name] = features
		for _, in := range benchInputs {
			key := s.c.Name + "/" + in.Name
			res.Runs[key] = runs[in.Name]
			st := benchCell{Runs: runs[in.Name]}.stats()
			b.Logf("%s: %.3f Gbit/s, %.0f rx packets, CPU s/GB QEMU %.2f rscvm %.2f (medians of %d)",
				key, st.Gbps.Median, st.Packets.Median, st.QEMUCPU.Median, st.RscvmCPU.Median, st.Gbps.N)
		}
	}
	return res, nil
}

// benchSession is one configuration's namespace, TAP, backend and guest.
type benchSession struct {
	c          benchConfig
	p          benchParams
	per, total int
	ns         *testguest.Netns
	vu         *vuBackend
	tap        *os.File
	dir        string
	g          *guest
	rscvmPid   int
	// hostCtx ends when QEMU exits: the host's connects and sends give up
	// instead of retrying SYNs to a guest that is gone.
	hostCtx    context.Context
	hostCancel context.CancelFunc
	sents      []benchSent
}

// benchSent is the host's side of one transfer.
type benchSent struct {
	sha                   string
	qemuTicks, rscvmTicks int64
}

// kind is the agent action of transfer i: warm-ups are sinks (hashed,
// checked), measured transfers drain (under TCG the guest's SHA-256 would
// otherwise be what is measured).
func (s *benchSession) kind(i int) protocol.Kind {
	if i%s.per < s.p.Warmup {
		return protocol.KindSink
	}
	return protocol.KindDrain
}

func (s *benchSession) size(i int) int64 {
	if s.kind(i) == protocol.KindSink {
		return s.p.WarmupBytes
	}
	return s.p.Bytes
}

// startBenchSession sets up configuration c and boots its guest.
func startBenchSession(ctx context.Context, env benchEnv, c benchConfig) (_ *benchSession, err error) {
	p := env.params
	s := &benchSession{c: c, p: p, per: p.Warmup + p.Runs}
	s.total = s.per * len(benchInputs)
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.ns, err = testguest.NewNetns(vuTap, false); err != nil {
		return nil, err
	}
	if out, err := exec.Command("ip", "-n", s.ns.Name, "addr", "add", "10.0.2.1/24", "dev", vuTap).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip addr add: %w: %s", err, out)
	}
	s.vu = &vuBackend{ns: s.ns}
	var extra []string
	var files []*os.File
	if c.VhostUser {
		if s.dir, err = os.MkdirTemp("", "rscvm-bench-"); err != nil {
			return nil, err
		}
		if err := s.vu.start(env.rscvm, s.dir, c.Props); err != nil {
			return nil, err
		}
		s.rscvmPid = s.vu.cmd.Process.Pid
		// `ip netns exec` execs rscvm: the PID must be rscvm's own.
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.rscvmPid)); err != nil || strings.TrimSpace(string(comm)) != "rscvm" {
			return nil, fmt.Errorf("PID %d is %q, not rscvm (%v)", s.rscvmPid, comm, err)
		}
		extra = s.vu.qemuArgs()
	} else {
		if err := s.ns.Do(func() error {
			var err error
			s.tap, err = openTap(vuTap)
			return err
		}); err != nil {
			return nil, fmt.Errorf("open TAP: %w", err)
		}
		// The same guest as vuBackend.qemuArgs gives the vhost-user
		// configurations: memfd RAM, INTx (vectors=0).
		dev := "virtio-net-pci,netdev=n0,vectors=0"
		if c.Props != "" {
			dev += "," + c.Props
		}
		extra = []string{
			"-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-machine", "pc,memory-backend=mem",
			"-netdev", "tap,id=n0,fd=3,vhost=off", "-device", dev,
		}
		files = []*os.File{s.tap}
	}

	acts := []protocol.Action{{Kind: protocol.KindReady}, {Kind: protocol.KindFeatures}, {Kind: protocol.KindRX}}
	for i := 0; i < s.total; i++ {
		acts = append(acts, protocol.Action{Kind: s.kind(i), Port: uint16(5001 + i)}, protocol.Action{Kind: protocol.KindRX})
	}
	// A last, empty drain holds the guest until the TAP's offloads were
	// checked after the last transfer: once the agent is done the guest
	// powers off, and a VMM resetting or restarting its device sets the
	// TAP's offloads again.
	acts = append(acts, protocol.Action{Kind: protocol.KindDrain, Port: uint16(5001 + s.total)})
	cfg := protocol.Config{Actions: acts, Addr: mustPrefix("10.0.2.15/24"), Timeout: benchMatrixTimeout}
	if s.g, err = launchGuest(ctx, env.qemu, env.kernel, env.initrd, debianCmdline(cfg.CommandLine()), extra, files); err != nil {
		return nil, err
	}
	s.hostCtx, s.hostCancel = context.WithCancel(ctx)
	go func(g *guest, hostCtx context.Context, cancel context.CancelFunc) {
		select {
		case <-g.done:
			cancel()
		case <-hostCtx.Done():
		}
	}(s.g, s.hostCtx, s.hostCancel)
	return s, nil
}

// transfer runs transfer idx (input in; first: the input's first): waits
// for the guest's listener, checks the TAP's offloads, sends and measures.
func (s *benchSession) transfer(ctx context.Context, idx int, in benchInput, first bool) error {
	port := strconv.Itoa(5001 + idx)
	if _, err := s.g.waitLine(ctx, string(s.kind(idx)), "listening", "port="+port); err != nil {
		return err
	}
	// Before every transfer: the input is what the cell says.
	if err := prepareTapInput(s.ns, in, first); err != nil {
		return err
	}
	q0, err := procCPUTicks(s.g.cmd.Process.Pid)
	if err != nil {
		return err
	}
	r0, err := procCPUTicksOpt(s.rscvmPid)
	if err != nil {
		return err
	}
	conn, err := s.vu.dial(s.hostCtx, net.JoinHostPort("10.0.2.15", port))
	if err != nil {
		return fmt.Errorf("connect to the guest: %w", err)
	}
	// sendPayload returns once the guest has read to EOF and closed: the
	// end of the transfer.
	res, err := sendPayload(s.hostCtx, conn, s.size(idx))
	if err != nil {
		return err
	}
	q1, err := procCPUTicks(s.g.cmd.Process.Pid)
	if err != nil {
		return err
	}
	r1, err := procCPUTicksOpt(s.rscvmPid)
	if err != nil {
		return err
	}
	s.sents = append(s.sents, benchSent{sha: res.SHA256, qemuTicks: q1 - q0, rscvmTicks: r1 - r0})
	return nil
}

// finish checks the TAP after the last transfer, lets the guest power off
// and turns its console into runs per input and the negotiated features.
func (s *benchSession) finish(ctx context.Context) (map[string][]benchRun, string, error) {
	endPort := strconv.Itoa(5001 + s.total)
	if _, err := s.g.waitLine(ctx, protocol.LineDrain, "listening", "port="+endPort); err != nil {
		return nil, "", err
	}
	// Nothing switched the TAP's offloads back on during the last transfer
	// (a VMM does when the guest changes its offloads).
	if err := prepareTapInput(s.ns, benchInputs[len(benchInputs)-1], false); err != nil {
		return nil, "", fmt.Errorf("after the last transfer: %w", err)
	}
	conn, err := s.vu.dial(s.hostCtx, net.JoinHostPort("10.0.2.15", endPort))
	if err != nil {
		return nil, "", fmt.Errorf("connect to the guest's last drain: %w", err)
	}
	if _, err := sendPayload(s.hostCtx, conn, 0); err != nil {
		return nil, "", fmt.Errorf("last drain: %w", err)
	}
	select {
	case <-s.g.done:
	case <-ctx.Done():
		return nil, "", fmt.Errorf("QEMU did not power off: %w", ctx.Err())
	}
	if s.g.waitErr != nil {
		return nil, "", fmt.Errorf("QEMU: %w", s.g.waitErr)
	}

	var sinks []protocol.SinkResult
	var rx []int64
	features := ""
	doneOK := false
	for _, l := range protocol.ParseOutput([]byte(s.g.output())) {
		switch l.Kind {
		case protocol.LineError:
			return nil, "", fmt.Errorf("agent: %s", l.Text)
		case protocol.LineFeatures:
			if len(l.Args) == 2 {
				features = l.Args[1]
			}
		case protocol.LineSink, protocol.LineDrain:
			if _, ok := l.Value(protocol.KeyBytes); !ok {
				continue
			}
			r, err := protocol.ParseSink(l)
			if err != nil {
				return nil, "", err
			}
			sinks = append(sinks, r)
		case protocol.LineRX:
			n, err := l.Uint("packets")
			if err != nil {
				return nil, "", err
			}
			rx = append(rx, int64(n))
		case protocol.LineDone:
			doneOK = l.Values["errors"] == "0"
		}
	}
	if !doneOK || len(sinks) != s.total+1 || len(rx) != s.total+1 || len(s.sents) != s.total {
		return nil, "", fmt.Errorf("agent: done ok %v, %d sink/drain results, %d rx lines, %d sent; want %d, %d, %d",
			doneOK, len(sinks), len(rx), len(s.sents), s.total+1, s.total+1, s.total)
	}
	if sinks[s.total].Bytes != 0 {
		return nil, "", fmt.Errorf("last drain: %d bytes, want 0", sinks[s.total].Bytes)
	}
	runs := map[string][]benchRun{}
	for i, sent := range s.sents {
		in := benchInputs[i/s.per]
		want := sent.sha
		if s.kind(i) == protocol.KindDrain {
			want = ""
		}
		if sinks[i].Bytes != uint64(s.size(i)) || sinks[i].SHA256 != want {
			return nil, "", fmt.Errorf("%s input, transfer %d: guest got %d bytes sha256 %q, host sent %d sha256 %q",
				in.Name, i%s.per, sinks[i].Bytes, sinks[i].SHA256, s.size(i), sent.sha)
		}
		if s.kind(i) == protocol.KindSink {
			continue
		}
		runs[in.Name] = append(runs[in.Name], benchRun{
			Bytes: s.size(i), Guest: sinks[i].Duration, Packets: rx[i+1] - rx[i],
			QEMUTicks: sent.qemuTicks, RscvmTicks: sent.rscvmTicks,
		})
	}
	return runs, features, nil
}

// failed logs the session's console (and rscvm's log) and names it in err.
func (s *benchSession) failed(b *testing.B, err error) error {
	if s.g != nil {
		b.Logf("%s console:\n%s", s.c.Name, s.g.output())
	}
	if s.vu != nil && s.vu.log != nil {
		if out, rerr := os.ReadFile(s.vu.log.Name()); rerr == nil {
			b.Logf("%s rscvm log:\n%s", s.c.Name, out)
		}
	}
	return fmt.Errorf("%s: %w", s.c.Name, err)
}

// close ends everything the session started.
func (s *benchSession) close() {
	if s.hostCancel != nil {
		s.hostCancel()
	}
	if s.g != nil {
		s.g.kill()
	}
	if s.vu != nil && s.vu.cmd != nil {
		_ = s.vu.terminate()
	}
	if s.tap != nil {
		s.tap.Close()
	}
	if s.ns != nil {
		_ = s.ns.Delete()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// prepareTapInput checks that the TAP's offloads are in the state of input
// in: on (as the VMM set them at device start) for GSO input, off for MSS
// input, which switch switches them off first.
func prepareTapInput(ns *testguest.Netns, in benchInput, switchOff bool) error {
	if !in.HostGSO && switchOff {
		argv := ns.Command("ethtool", "-K", vuTap, "tso", "off", "gso", "off")
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("ethtool -K: %w: %s", err, out)
		}
	}
	tso, gso, err := tapOffloads(ns)
	if err != nil {
		return err
	}
	if tso != in.HostGSO || gso != in.HostGSO {
		return fmt.Errorf("%s input: TAP tso=%v gso=%v, want both %v", in.Name, tso, gso, in.HostGSO)
	}
	return nil
}

// tapOffloads reads the TAP's TSO and GSO states with ethtool -k.
func tapOffloads(ns *testguest.Netns) (tso, gso bool, err error) {
	argv := ns.Command("ethtool", "-k", vuTap)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return false, false, fmt.Errorf("ethtool -k: %w: %s", err, out)
	}
	return parseEthtoolFeatures(out, "tcp-segmentation-offload"), parseEthtoolFeatures(out, "generic-segmentation-offload"), nil
}

// parseEthtoolFeatures reports whether ethtool -k output lists name as on.
func parseEthtoolFeatures(out []byte, name string) bool {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if ok && k == name {
			return strings.HasPrefix(strings.TrimSpace(v), "on")
		}
	}
	return false
}

// procCPUTicks returns utime+stime of process pid (all its threads) in
// USER_HZ ticks.
func procCPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	return parseProcStatCPU(b)
}

// procCPUTicksOpt is procCPUTicks, 0 for pid 0 (no such process).
func procCPUTicksOpt(pid int) (int64, error) {
	if pid == 0 {
		return 0, nil
	}
	return procCPUTicks(pid)
}

// parseProcStatCPU parses utime (field 14) and stime (field 15) of a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseProcStatCPU(b []byte) (int64, error) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat %q: no command name", s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name", len(f))
	}
	var sum int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc stat: cpu time %q", s)
		}
		sum += n
	}
	return sum, nil
}

// benchReport is a finished matrix.
type benchReport struct {
	Date    time.Time
	Machine string
	// Revision is rscvm's source revision ("" if unknown).
	Revision string
	Kernel   string
	Runs     int
	Bytes    int64
	// WarmupBytes is the size of the warm-up transfer.
	WarmupBytes int64
	Cells       []benchCell
	// Image is the chart's path relative to the README ("" for none).
	Image string
}

// cell returns the cell of configuration cfg and input in.
func (r benchReport) cell(cfg, in string) (benchCell, bool) {
	for _, c := range r.Cells {
		if c.Config.Name == cfg && c.Input.Name == in && len(c.Runs) > 0 {
			return c, true
		}
	}
	return benchCell{}, false
}

func fmtStat(s stat, prec int) string {
	if s.N == 0 {
		return "–"
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	if s.N == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

// markdown renders the table, the ratios and the notes.
func (r benchReport) markdown() string {
	var w strings.Builder
	fmt.Fprintf(&w, "#### Benchmark: rscvm vhost-user-net vs QEMU's virtio-net (`make bench`)\n\n")
	fmt.Fprintf(&w, "%s, %s. The same guest in every configuration: Debian kernel %s, 1 vCPU, 512 MiB memfd RAM, "+
		"virtio-net-pci with `vectors=0` (INTx: QEMU 7.2 under TCG needs it for vhost-user, so QEMU's own device gets it too); "+
		"one guest per configuration, all booted together, their transfers interleaved round-robin so that other load on the host "+
		"spreads over all of them. Host→guest TCP from the host end of the TAP: per cell %d measured transfers of %d MiB "+
		"after a %d MiB warm-up whose SHA-256 the guest checks; median (min–max).\n\n",
		r.Date.Format("2006-01-02"), r.Machine, r.Kernel, r.Runs, r.Bytes>>20, r.WarmupBytes>>20)
	if r.Revision != "" {
		fmt.Fprintf(&w, "rscvm revision `%s`.\n\n", r.Revision)
	}
	w.WriteString("- Gbit/s: by the guest's clock, from accept to EOF (agent `drain`: 256 KiB reads, no hashing).\n" +
		"- rx packets: what the guest's interface counted per transfer.\n" +
		"- CPU: utime+stime (10 ms ticks) of the QEMU and the rscvm process during the transfer, in CPU seconds per GB (10^9 bytes) received.\n" +
		"- GSO input: the TAP's TSO/GSO on, the host kernel hands it 64 KiB GSO frames. " +
		"MSS input: TSO/GSO switched off with ethtool after the guest's device started, MSS-sized segments.\n\n")
	fmt.Fprintf(&w, "| input | configuration | Gbit/s | rx packets/transfer | QEMU CPU s/GB | rscvm CPU s/GB | total CPU s/GB |\n")
	fmt.Fprintf(&w, "|---|---|--:|--:|--:|--:|--:|\n")
	for _, in := range benchInputs {
		for _, cfg := range benchConfigs {
			c, ok := r.cell(cfg.Name, in.Name)
			if !ok {
				continue
			}
			st := c.stats()
			rs := fmtStat(st.RscvmCPU, 2)
			if !cfg.VhostUser {
				rs = "–"
			}
			fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %s | %s |\n", in.Label, cfg.Label,
				fmtStat(st.Gbps, 2), fmtStat(st.Packets, 0), fmtStat(st.QEMUCPU, 2), rs, fmtStat(st.TotalCPU, 2))
		}
	}
	w.WriteString("\n")
	for _, q := range []struct{ title, a, b string }{
		{"rscvm x-rsc-gso=on ÷ QEMU built-in", "rscvm-gso-on", "qemu-tap"},
		{"rscvm x-rsc-gso=on ÷ off", "rscvm-gso-on", "rscvm-gso-off"},
		{"QEMU guest_rsc_ext=on ÷ off", "qemu-tap-rsc-ext", "qemu-tap"},
	} {
		var parts []string
		for _, in := range benchInputs {
			a, okA := r.cell(q.a, in.Name)
			b, okB := r.cell(q.b, in.Name)
			if !okA || !okB {
				continue
			}
			sa, sb := a.stats(), b.stats()
			parts = append(parts, fmt.Sprintf("%s input: throughput %s, rx packets %s, total CPU/GB %s",
				in.Label, ratio(sa.Gbps.Median, sb.Gbps.Median), ratio(sa.Packets.Median, sb.Packets.Median),
				ratio(sa.TotalCPU.Median, sb.TotalCPU.Median)))
		}
		if len(parts) > 0 {
			fmt.Fprintf(&w, "- %s (medians): %s.\n", q.title, strings.Join(parts, "; "))
		}
	}
	var feats []string
	for _, cfg := range benchConfigs {
		for _, c := range r.Cells {
			if c.Config.Name != cfg.Name || c.Features == "" {
				continue
			}
			rsc := "?"
			if f, err := protocol.ParseFeatures(c.Features); err == nil {
				rsc = map[uint]string{0: "no", 1: "yes"}[f.Bit(61)]
			}
			feats = append(feats, fmt.Sprintf("%s `%s` (RSC_EXT %s)", cfg.Name, c.Features, rsc))
			break
		}
	}
	if len(feats) > 0 {
		fmt.Fprintf(&w, "- Negotiated features: %s.\n", strings.Join(feats, ", "))
	}
	if r.Image != "" {
		fmt.Fprintf(&w, "\n![host→guest TCP: throughput, guest rx packets and host CPU per GB](%s)\n", r.Image)
	}
	return w.String()
}

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a/b) {
		return "–"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// Chart geometry.
const (
	chartW       = 1400
	chartPanelH  = 300
	chartTop     = 96
	chartLeft    = 120
	chartRight   = 30
	chartPlotTop = 34  // below the panel title
	chartPlotH   = 216 // plot height
	glyphW       = 5
	glyphH       = 7
)

var (
	chartBG    = color.RGBA{255, 255, 255, 255}
	chartInk   = color.RGBA{0, 0, 0, 255}
	chartGrid  = color.RGBA{222, 222, 222, 255}
	chartFaint = color.RGBA{90, 90, 90, 255}
	// chartColors are the configurations' colors, in benchConfigs order.
	chartColors = []color.RGBA{{96, 112, 128, 255}, {165, 178, 192, 255}, {232, 150, 48, 255}, {36, 140, 88, 255}}
)

func darker(c color.RGBA) color.RGBA {
	return color.RGBA{uint8(int(c.R) * 11 / 20), uint8(int(c.G) * 11 / 20), uint8(int(c.B) * 11 / 20), 255}
}

// chartPanel is one row of bars: both inputs, every configuration.
type chartPanel struct {
	title string
	log   bool
	prec  int
	// value gives the stacked segments, the whisker range and the label.
	value func(cfg benchConfig, s cellStats) (segs []float64, lo, hi, label float64)
}

// chart draws the report as grouped bar charts: throughput, guest rx
// packets (log scale) and host CPU per GB (QEMU, rscvm stacked), median bars
// with min-max whiskers.
func (r benchReport) chart() (*raster.RGBA, error) {
	if len(r.Cells) == 0 {
		return nil, errors.New("no results")
	}
	panels := []chartPanel{
		{title: "THROUGHPUT, GBIT/S (GUEST CLOCK)", prec: 2, value: func(_ benchConfig, s cellStats) ([]float64, float64, float64, float64) {
			return []float64{s.Gbps.Median}, s.Gbps.Min, s.Gbps.Max, s.Gbps.Median
		}},
		{title: "GUEST RX PACKETS PER TRANSFER (LOG SCALE)", log: true, value: func(_ benchConfig, s cellStats) ([]float64, float64, float64, float64) {
			return []float64{s.Packets.Median}, s.Packets.Min, s.Packets.Max, s.Packets.Median
		}},
		{title: "HOST CPU SECONDS PER GB: QEMU, RSCVM (DARK, STACKED)", prec: 2, value: func(cfg benchConfig, s cellStats) ([]float64, float64, float64, float64) {
			segs := []float64{s.QEMUCPU.Median}
			if cfg.VhostUser {
				segs = append(segs, s.RscvmCPU.Median)
			}
			return segs, s.TotalCPU.Min, s.TotalCPU.Max, s.TotalCPU.Median
		}},
	}
	legendRows := (len(benchConfigs) + 1) / 2
	h := chartTop + len(panels)*chartPanelH + 20 + legendRows*34 + 10
	img := raster.NewRGBA(raster.Rect(0, 0, chartW, h))
	cv := canvas{img}
	cv.fill(img.Bounds(), chartBG)
	cv.text(chartLeft, 16, "RSCVM VHOST-USER-NET VS QEMU VIRTIO-NET: HOST TO GUEST TCP", 3, chartInk)
	cv.text(chartLeft, 54, fmt.Sprintf("%s, %s; %d X %d MIB PER CELL, MEDIAN AND MIN-MAX",
		r.Date.Format("2006-01-02"), r.Machine, r.Runs, r.Bytes>>20), 2, chartFaint)
	for i, p := range panels {
		r.drawPanel(cv, p, chartTop+i*chartPanelH)
	}
	y := chartTop + len(panels)*chartPanelH + 20
	for i, cfg := range benchConfigs {
		x := chartLeft + (i%2)*620
		yy := y + (i/2)*34
		cv.fill(raster.Rect(x, yy, x+24, yy+24), chartColors[i])
		cv.text(x+34, yy+5, cfg.Label, 2, chartInk)
	}
	return img, nil
}

func (r benchReport) drawPanel(cv canvas, p chartPanel, top int) {
	plotL, plotR := chartLeft, chartW-chartRight
	plotT := top + chartPlotTop
	plotB := plotT + chartPlotH
	cv.text(plotL, top+6, p.title, 2, chartInk)

	type bar struct {
		segs             []float64
		lo, hi, label    float64
		cfgIdx, inputIdx int
	}
	var bars []bar
	maxV, minV := 0.0, math.Inf(1)
	for ii, in := range benchInputs {
		for ci, cfg := range benchConfigs {
			c, ok := r.cell(cfg.Name, in.Name)
			if !ok {
				continue
			}
			segs, lo, hi, label := p.value(cfg, c.stats())
			bars = append(bars, bar{segs, lo, hi, label, ci, ii})
			total := 0.0
			for _, s := range segs {
				total += s
			}
			maxV = math.Max(maxV, math.Max(hi, total))
			if lo > 0 {
				minV = math.Min(minV, lo)
			}
		}
	}
	// The value axis: linear from 0, or whole decades.
	var ticks []float64
	var lo, hi float64
	prec := 0
	if p.log {
		if math.IsInf(minV, 1) {
			minV = 1
		}
		lo = math.Pow(10, math.Floor(math.Log10(minV)))
		hi = math.Pow(10, math.Ceil(math.Log10(math.Max(maxV, 1)*1.6)))
		for v := lo; v <= hi*1.0001; v *= 10 {
			ticks = append(ticks, v)
		}
	} else {
		step := niceStep(math.Max(maxV, 1e-9) * 1.2 / 5)
		hi = math.Ceil(maxV*1.2/step) * step
		if hi <= 0 {
			hi = step
		}
		for v := 0.0; v <= hi*1.0001; v += step {
			ticks = append(ticks, v)
		}
		prec = max(0, int(-math.Floor(math.Log10(step)+1e-9)))
	}
	ymap := func(v float64) int {
		var f float64
		if p.log {
			if v <= lo {
				return plotB
			}
			f = (math.Log10(v) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo))
		} else {
			f = v / hi
		}
		f = math.Max(0, math.Min(1, f))
		return plotB - int(math.Round(f*chartPlotH))
	}
	for _, t := range ticks {
		y := ymap(t)
		cv.fill(raster.Rect(plotL, y, plotR, y+1), chartGrid)
		s := strconv.FormatFloat(t, 'f', prec, 64)
		cv.text(plotL-12-textWidth(s, 2), y-glyphH, s, 2, chartFaint)
	}
	cv.fill(raster.Rect(plotL, plotT, plotL+2, plotB+1), chartInk)
	cv.fill(raster.Rect(plotL, plotB, plotR, plotB+2), chartInk)

	groupW := (plotR - plotL) / len(benchInputs)
	slot := groupW / (len(benchConfigs) + 1)
	barW := slot * 3 / 4
	for ii, in := range benchInputs {
		s := in.Label + " INPUT"
		cv.text(plotL+ii*groupW+(groupW-textWidth(s, 2))/2, plotB+10, s, 2, chartInk)
	}
	for _, b := range bars {
		cx := plotL + b.inputIdx*groupW + slot*(b.cfgIdx+1)
		x0, x1 := cx-barW/2, cx+barW/2
		base := 0.0
		topY := plotB
		for si, s := range b.segs {
			col := chartColors[b.cfgIdx]
			if si > 0 {
				col = darker(col)
			}
			y0, y1 := ymap(base), ymap(base+s)
			if si == 0 && p.log {
				y0 = plotB
			}
			cv.fill(raster.Rect(x0, y1, x1, y0), col)
			base += s
			topY = min(topY, y1)
		}
		// min-max whisker
		wl, wh := ymap(b.lo), ymap(b.hi)
		if b.hi > b.lo {
			cv.fill(raster.Rect(cx-1, wh, cx+1, wl+1), chartInk)
			cv.fill(raster.Rect(cx-8, wh, cx+8, wh+2), chartInk)
			cv.fill(raster.Rect(cx-8, wl-1, cx+8, wl+1), chartInk)
		}
		label := strconv.FormatFloat(b.label, 'f', p.prec, 64)
		ly := min(topY, wh) - 8 - glyphH*2
		cv.text(cx-textWidth(label, 2)/2, ly, label, 2, chartInk)
	}
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

func writePNG(path string, img raster.Image) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	return nil
}

// canvas draws rectangles and text in a 5x7 bitmap font.
type canvas struct{ img *raster.RGBA }

func (c canvas) fill(r raster.Rectangle, col color.RGBA) {
	draw.Draw(c.img, r, &raster.Uniform{col}, raster.Point{}, draw.Src)
}

// textWidth is the width of s at the given scale.
func textWidth(s string, scale int) int {
	n := len([]rune(s))
	if n == 0 {
		return 0
	}
	return (n*(glyphW+1) - 1) * scale
}

// text draws s (upper-cased) with its top left corner at x, y.
func (c canvas) text(x, y int, s string, scale int, col color.RGBA) {
	for _, r := range strings.ToUpper(s) {
		g, ok := chartFont[r]
		if !ok {
			g = chartFont['?']
		}
		for row, bits := range g {
			for i := 0; i < glyphW; i++ {
				if bits&(1<<(glyphW-1-i)) != 0 {
					c.fill(raster.Rect(x+i*scale, y+row*scale, x+(i+1)*scale, y+(row+1)*scale), col)
				}
			}
		}
		x += (glyphW + 1) * scale
	}
}

// chartFont: 5x7 glyphs, one byte per row, bit 4 leftmost.
var chartFont = map[rune][glyphH]uint8{
	' ': {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
	'%': {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03},
	'(': {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02},
	')': {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08},
	'*': {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00},
	'+': {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00},
	',': {0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08},
	'-': {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00},
	'.': {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c},
	'/': {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00},
	'0': {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e},
	'1': {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e},
	'2': {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f},
	'3': {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e},
	'4': {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02},
	'5': {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e},
	'6': {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e},
	'7': {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
	'8': {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e},
	'9': {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c},
	':': {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00},
	';': {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x04, 0x08},
	'<': {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02},
	'=': {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00},
	'>': {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08},
	'?': {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04},
	'A': {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11},
	'B': {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e},
	'C': {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e},
	'D': {0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e},
	'E': {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f},
	'F': {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10},
	'G': {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f},
	'H': {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11},
	'I': {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e},
	'J': {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c},
	'K': {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11},
	'L': {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f},
	'M': {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11},
	'N': {0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11},
	'O': {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e},
	'P': {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10},
	'Q': {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d},
	'R': {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11},
	'S': {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e},
	'T': {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},
	'U': {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e},
	'V': {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04},
	'W': {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a},
	'X': {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11},
	'Y': {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04},
	'Z': {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f},
	'_': {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f},
	'–': {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00},
	'÷': {0x00, 0x04, 0x00, 0x1f, 0x00, 0x04, 0x00},
}

func TestAcceptSinkTimed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type res struct {
		r   transferResult
		d   time.Duration
		err error
	}
	for _, hash := range []bool{true, false} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ch := make(chan res, 1)
		go func() {
			r, d, err := acceptSinkTimed(ctx, ln, hash)
			ch <- res{r, d, err}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		// The clock runs from the accepted connection to EOF: a pause in
		// the middle of the stream is inside the measured time.
		const pause = 60 * time.Millisecond
		payload := make([]byte, 1024)
		payload[7] = 1
		_, err = c.Write(payload[:1000])
		require.NoError(t, err)
		time.Sleep(pause)
		_, err = c.Write(payload[1000:])
		require.NoError(t, err)
		require.NoError(t, c.Close())
		got := <-ch
		require.NoError(t, got.err)
		require.Equal(t, int64(1024), got.r.Bytes)
		require.GreaterOrEqual(t, got.d, pause)
		line := protocol.FormatDrain(got.r.Bytes, got.d)
		if hash {
			sum := sha256.Sum256(payload)
			require.Equal(t, hex.EncodeToString(sum[:]), got.r.SHA256)
			line = protocol.FormatSink(got.r.Bytes, got.r.SHA256, got.d)
		} else {
			require.Empty(t, got.r.SHA256)
		}
		// The line the agent prints from it parses back.
		l, ok := protocol.ParseLine(line)
		require.True(t, ok)
		s, err := protocol.ParseSink(l)
		require.NoError(t, err)
		require.Equal(t, got.d, s.Duration)
		require.Equal(t, got.r.SHA256, s.SHA256)
	}
}

func TestParseProcStatCPU(t *testing.T) {
	line := "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 5173 0 0 0 1234 567 0 0 20 0 4 0 100 1 1 18446744073709551615\n"
	n, err := parseProcStatCPU([]byte(line))
	require.NoError(t, err)
	require.Equal(t, int64(1234+567), n)
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 12x 5 0", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 -1 5 0"} {
		_, err := parseProcStatCPU([]byte(bad))
		require.Error(t, err, bad)
	}
	// This process has used some CPU by now.
	n, err = procCPUTicks(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, int64(0))
	n, err = procCPUTicksOpt(0)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestParseEthtoolFeatures(t *testing.T) {
	out := []byte("Features for vu0:\nrx-checksumming: off [fixed]\ntcp-segmentation-offload: on\n\ttx-tcp-segmentation: on\ngeneric-segmentation-offload: off [requested on]\n")
	require.True(t, parseEthtoolFeatures(out, "tcp-segmentation-offload"))
	require.False(t, parseEthtoolFeatures(out, "generic-segmentation-offload"))
	require.False(t, parseEthtoolFeatures(out, "rx-checksumming"))
	require.False(t, parseEthtoolFeatures(out, "large-receive-offload"))
}

func TestBenchMachine(t *testing.T) {
	require.Equal(t, "7.2", qemuMinorVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"))
	require.Equal(t, "8.0", qemuMinorVersion("QEMU emulator version 8.0.0\n"))
	require.Equal(t, "9", qemuMinorVersion("QEMU emulator version 9"))
	require.Equal(t, "?", qemuMinorVersion("something else"))
	require.Equal(t, "?", qemuMinorVersion(""))
	require.Equal(t, "?", qemuMinorVersion("QEMU emulator version \n"))
	require.True(t, cpuinfoHypervisor([]byte("processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm\n")))
	require.False(t, cpuinfoHypervisor([]byte("processor\t: 0\nflags\t\t: fpu vme lahf_lm\nbugs: hypervisor\n")))
	require.False(t, cpuinfoHypervisor(nil))
}

func TestBenchParams(t *testing.T) {
	t.Setenv(envBenchRuns, "")
	t.Setenv(envBenchMiB, "")
	p, err := benchParamsFromEnv()
	require.NoError(t, err)
	require.Equal(t, 7, p.Runs)
	require.Equal(t, int64(128<<20), p.Bytes)
	require.Equal(t, int64(16<<20), p.WarmupBytes)
	t.Setenv(envBenchRuns, "3")
	t.Setenv(envBenchMiB, "16")
	p, err = benchParamsFromEnv()
	require.NoError(t, err)
	require.Equal(t, 3, p.Runs)
	require.Equal(t, int64(16<<20), p.Bytes)
	t.Setenv(envBenchMiB, "4")
	p, err = benchParamsFromEnv()
	require.NoError(t, err)
	require.Equal(t, int64(4<<20), p.WarmupBytes)
	for _, bad := range []string{"0", "-1", "x", "51"} {
		t.Setenv(envBenchRuns, bad)
		_, err = benchParamsFromEnv()
		require.Error(t, err, bad)
	}
}

func TestSelectBenchConfigs(t *testing.T) {
	all, err := selectBenchConfigs("")
	require.NoError(t, err)
	require.Equal(t, benchConfigs, all)
	some, err := selectBenchConfigs("rscvm-gso-on,qemu-tap,rscvm-gso-on")
	require.NoError(t, err)
	require.Equal(t, []benchConfig{benchConfigs[3], benchConfigs[0]}, some)
	for _, bad := range []string{"qemu", "qemu-tap,", ",", "QEMU-TAP"} {
		_, err := selectBenchConfigs(bad)
		require.Error(t, err, bad)
	}
}

func TestNewStat(t *testing.T) {
	require.Equal(t, stat{Median: 2, Min: 1, Max: 9, N: 3}, newStat([]float64{9, 1, 2}))
	require.Equal(t, stat{Median: 2.5, Min: 1, Max: 9, N: 4}, newStat([]float64{9, 3, 1, 2}))
	require.Equal(t, stat{}, newStat(nil))
}

func TestNiceStep(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{{0.7, 1}, {1, 1}, {1.2, 2}, {3, 5}, {7, 10}, {0.031, 0.05}, {2400, 5000}} {
		require.InDelta(t, c.want, niceStep(c.in), c.want*1e-9, "%v", c.in)
	}
}

// syntheticReport: every rscvm x-rsc-gso=on number is twice QEMU's.
func syntheticReport() benchReport {
	rep := benchReport{Date: time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC), Machine: "test machine", Kernel: "6.1.0-test",
		Revision: "abc1234", Runs: 3, Bytes: 32 << 20, WarmupBytes: 16 << 20, Image: "docs/x.png"}
	for _, in := range benchInputs {
		for ci, cfg := range benchConfigs {
			k := int64(1)
			if ci == 3 {
				k = 2
			}
			var runs []benchRun
			for i := int64(1); i <= 3; i++ {
				// guest time 1s±: Gbit/s 0.268..., times k
				runs = append(runs, benchRun{Bytes: 32 << 20, Guest: time.Duration(i) * time.Second / time.Duration(k),
					Packets: 1000 * i * k, QEMUTicks: 100 * i * k, RscvmTicks: map[bool]int64{true: 10 * i, false: 0}[cfg.VhostUser]})
			}
			rep.Cells = append(rep.Cells, benchCell{Config: cfg, Input: in, Runs: runs, Features: "0x2000010130afffa7"})
		}
	}
	return rep
}

func TestBenchReportMarkdown(t *testing.T) {
	rep := syntheticReport()
	md := rep.markdown()
	t.Log(md)
	// 32 MiB in 2 s = 0.13 Gbit/s; packets 2000; QEMU 200 ticks = 2 s per 0.0336 GB = 59.60 s/GB.
	require.Contains(t, md, "| GSO | QEMU virtio-net, TAP | 0.13 (0.09–0.27) | 2000 (1000–3000) | 59.60 (29.80–89.41) | – | 59.60 (29.80–89.41) |")
	require.Contains(t, md, "| MSS | rscvm vhost-user-net, x-rsc-gso=off | 0.13 (0.09–0.27) | 2000 (1000–3000) | 59.60 (29.80–89.41) | 5.96 (2.98–8.94) | 65.57 (32.78–98.35) |")
	require.Contains(t, md, "rscvm x-rsc-gso=on ÷ QEMU built-in (medians): GSO input: throughput 2.00x, rx packets 2.00x, total CPU/GB 2.10x; MSS input:")
	require.Contains(t, md, "2025-01-02, test machine")
	require.Contains(t, md, "per cell 3 measured transfers of 32 MiB after a 16 MiB warm-up")
	require.Contains(t, md, "qemu-tap-rsc-ext `0x2000010130afffa7` (RSC_EXT yes)")
	require.Contains(t, md, "](docs/x.png)")
	require.Contains(t, md, "rscvm revision `abc1234`.")
	require.Equal(t, 8, strings.Count(md, "\n| GSO |")+strings.Count(md, "\n| MSS |"))

	// A missing cell leaves its row and its ratios out.
	rep.Cells = rep.Cells[:1]
	md = rep.markdown()
	require.NotContains(t, md, "÷")
	require.Equal(t, 1, strings.Count(md, "\n| GSO |"))
}

func TestBenchReportChart(t *testing.T) {
	rep := syntheticReport()
	img, err := rep.chart()
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "chart.png")
	require.NoError(t, writePNG(path, img))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	dec, err := png.Decode(f)
	require.NoError(t, err)
	require.Equal(t, img.Bounds(), dec.Bounds())
	count := map[color.RGBA]int{}
	b := dec.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, a := dec.At(x, y).RGBA()
			count[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bb >> 8), uint8(a >> 8)}]++
		}
	}
	// Every configuration has bars and a legend square; rscvm x-rsc-gso=on's
	// bars, twice as high in every panel, cover more than QEMU's; the
	// stacked rscvm CPU appears only for the vhost-user configurations.
	legend := 24 * 24
	for i, c := range chartColors {
		require.Greater(t, count[c], legend+1000, "configuration %d", i)
	}
	require.Greater(t, count[chartColors[3]], count[chartColors[0]]*3/2)
	require.Zero(t, count[darker(chartColors[0])])
	require.Greater(t, count[darker(chartColors[3])], 100)
	require.Greater(t, count[chartInk], 1000, "text and axes")

	_, err = benchReport{}.chart()
	require.Error(t, err)
}

func TestChartFont(t *testing.T) {
	// Every character the chart writes has a glyph, and glyphs fit 5 bits.
	var labels []string
	for _, c := range benchConfigs {
		labels = append(labels, c.Label)
	}
	for _, in := range benchInputs {
		labels = append(labels, in.Label+" INPUT")
	}
	labels = append(labels, "THROUGHPUT, GBIT/S (GUEST CLOCK) 0123456789.-", "HOST CPU SECONDS PER GB: QEMU, RSCVM (DARK, STACKED)", "2 vCPU, QEMU 7.2 TCG, nested; 5 X 32 MIB PER CELL, MEDIAN AND MIN-MAX 2025-01-02")
	for _, s := range labels {
		for _, r := range strings.ToUpper(s) {
			_, ok := chartFont[r]
			require.True(t, ok, "no glyph for %q in %q", r, s)
		}
	}
	for r, g := range chartFont {
		for _, row := range g {
			require.Less(t, row, uint8(1<<glyphW), "glyph %q", r)
		}
	}
	require.Equal(t, 0, textWidth("", 2))
	require.Equal(t, 22, textWidth("ab", 2))
}

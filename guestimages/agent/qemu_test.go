package main

// Boot tests: the agent as /init under QEMU TCG, with Debian's cloud kernel
// and with the linux-source kernel. They need qemu-system-x86_64 and the
// images of guestimages/build.sh in $RSCVM_OUT (default: out/ at the
// repository root); without them they skip, unless RSCVM_REQUIRE_KVM=1.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/guestimages/agent/protocol"
	"github.com/rscvm/rscvm/guestimages/initramfs"
	"github.com/rscvm/rscvm/internal/testenv"
)

// skipOrFail skips, or fails when RSCVM_REQUIRE_KVM=1 says everything must run.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	testenv.SkipOrFail(t, format, args...)
}

// outDir is $RSCVM_OUT or the out/ directory next to go.mod.
func outDir(t *testing.T) string {
	d, err := testenv.OutDir()
	require.NoError(t, err)
	return d
}

// image returns a file of the out directory, skipping if it is missing.
func image(t *testing.T, rel string) string {
	t.Helper()
	return testenv.Image(t, rel)
}

func needQEMU(t *testing.T) string {
	t.Helper()
	return testenv.QEMU(t)
}

func qemuTimeout() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("RSCVM_QEMU_TIMEOUT")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 60 * time.Second
}

var (
	initrdOnce sync.Once
	initrdPath string
	initrdErr  error
	initrdDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if initrdDir != "" {
		os.RemoveAll(initrdDir)
	}
	if rscvmBin != "" {
		os.RemoveAll(filepath.Dir(rscvmBin))
	}
	os.Exit(code)
}

// testInitramfs builds the agent from this source tree (static, GOAMD64=v1)
// and an initramfs with it and the Debian modules, once per test binary.
func testInitramfs(t *testing.T) string {
	t.Helper()
	mods := filepath.Join(outDir(t), "debian", "modules")
	initrdOnce.Do(func() {
		initrdDir, initrdErr = os.MkdirTemp("", "rscvm-agent-test-")
		if initrdErr != nil {
			return
		}
		initrdPath, initrdErr = buildInitramfs(initrdDir, mods)
	})
	require.NoError(t, initrdErr)
	return initrdPath
}

// goBuild builds pkg (relative to this package) into out.
func goBuild(out, pkg string, env []string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(gobin, "build", "-trimpath", "-buildvcs=false", "-o", out, pkg)
	cmd.Env = append(os.Environ(), env...)
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, o)
	}
	return nil
}

// buildInitramfs builds the agent from this tree into dir and an initramfs
// with it and the Debian modules in modDir (if any).
func buildInitramfs(dir, modDir string) (string, error) {
	bin := filepath.Join(dir, "agent")
	if err := goBuild(bin, ".", []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1"}); err != nil {
		return "", err
	}
	init, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	spec := initramfs.Spec{Init: init}
	if _, err := os.Stat(filepath.Join(modDir, initramfs.LoadOrderFile)); err == nil {
		ms, err := initramfs.ReadModulesDir(modDir)
		if err != nil {
			return "", fmt.Errorf("modules: %w", err)
		}
		spec.Modules = append(spec.Modules, ms)
	}
	p := filepath.Join(dir, "initramfs.cpio")
	if err := initramfs.WriteFile(p, spec); err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	return p, nil
}

// guest is one QEMU run whose console is parsed as it arrives.
type guest struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	console strings.Builder
	lines   chan protocol.Line
	done    chan struct{}
	waitErr error
}

// startGuest boots kernel+initrd under QEMU TCG with the given command line
// and extra QEMU arguments.
func startGuest(t *testing.T, ctx context.Context, kernel, initrd, cmdline string, extra []string, files []*os.File) *guest {
	t.Helper()
	g, err := launchGuest(ctx, needQEMU(t), kernel, initrd, cmdline, extra, files)
	require.NoError(t, err)
	t.Logf("qemu %s", strings.Join(g.cmd.Args[1:], " "))
	t.Cleanup(func() {
		g.kill()
		if t.Failed() {
			t.Logf("console:\n%s", g.output())
		}
	})
	return g
}

// launchGuest starts QEMU (TCG, 512 MiB, one vCPU, serial console on
// stdout) with kernel, initrd and cmdline, and parses the agent's lines as
// they arrive.
func launchGuest(ctx context.Context, qemu, kernel, initrd, cmdline string, extra []string, files []*os.File) (*guest, error) {
	args := []string{
		"-accel", "tcg", "-m", "512", "-smp", "1", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
	}
	args = append(args, extra...)
	g := &guest{
		cmd:   exec.CommandContext(ctx, qemu, args...),
		lines: make(chan protocol.Line, 256),
		done:  make(chan struct{}),
	}
	g.cmd.ExtraFiles = files
	pr, pw := io.Pipe()
	g.cmd.Stdout = pw
	g.cmd.Stderr = pw
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start QEMU: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			g.mu.Lock()
			g.console.WriteString(sc.Text() + "\n")
			g.mu.Unlock()
			if l, ok := protocol.ParseLine(sc.Text()); ok {
				select {
				case g.lines <- l:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
		close(g.lines)
	}()
	go func() {
		g.waitErr = g.cmd.Wait()
		pw.Close()
		close(g.done)
	}()
	return g, nil
}

// kill kills QEMU if it still runs and waits for it.
func (g *guest) kill() {
	select {
	case <-g.done:
		return
	default:
	}
	_ = g.cmd.Process.Kill()
	<-g.done
}

func (g *guest) output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.console.String()
}

// waitLine returns the first agent line of the given kind (skipping others).
func (g *guest) waitLine(ctx context.Context, kind string, args ...string) (protocol.Line, error) {
	for {
		select {
		case l, ok := <-g.lines:
			if !ok {
				return protocol.Line{}, fmt.Errorf("console closed before %q", kind)
			}
			if l.Kind == protocol.LineError {
				return l, fmt.Errorf("agent: %s", l.Text)
			}
			if l.Kind == kind && hasPrefixArgs(l.Args, args) {
				return l, nil
			}
		case <-ctx.Done():
			return protocol.Line{}, fmt.Errorf("waiting for %q: %w", kind, ctx.Err())
		}
	}
}

func hasPrefixArgs(have, want []string) bool {
	if len(have) < len(want) {
		return false
	}
	for i := range want {
		if have[i] != want[i] {
			return false
		}
	}
	return true
}

// finish waits for QEMU to exit by itself and returns the agent lines.
func (g *guest) finish(t *testing.T, ctx context.Context) []protocol.Line {
	t.Helper()
	select {
	case <-g.done:
	case <-ctx.Done():
		t.Fatalf("QEMU did not exit by itself within the timeout")
	}
	require.NoError(t, g.waitErr, "QEMU exit status")
	lines := protocol.ParseOutput([]byte(g.output()))
	require.NotEmpty(t, lines)
	last := lines[len(lines)-1]
	require.Equal(t, protocol.LineDone, last.Kind)
	require.Equal(t, "0", last.Values["errors"], "agent reported errors")
	return lines
}

func findLine(lines []protocol.Line, kind string) (protocol.Line, bool) {
	for _, l := range lines {
		if l.Kind == kind {
			return l, true
		}
	}
	return protocol.Line{}, false
}

// debianCmdline is the command line for the Debian kernel.
func debianCmdline(agent string) string {
	return "console=ttyS0 panic=-1 " + agent
}

// linuxCmdline is the command line for the linux-source kernel: what
// out/linux/cmdline.txt says (for the emulated KVM; harmless under TCG).
func linuxCmdline(t *testing.T, agent string) string {
	b, err := os.ReadFile(image(t, "linux/cmdline.txt"))
	require.NoError(t, err)
	return strings.TrimSpace(string(b)) + " panic=-1 " + agent
}

func TestQEMUDebianReady(t *testing.T) {
	kernel := image(t, "debian/vmlinuz")
	needQEMU(t)
	initrd := testInitramfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), qemuTimeout())
	defer cancel()
	g := startGuest(t, ctx, kernel, initrd, debianCmdline("rscvm.agent=ready"), []string{"-nic", "none"}, nil)
	lines := g.finish(t, ctx)
	_, ok := findLine(lines, protocol.LineReady)
	require.True(t, ok, "no ready line")
	mods, ok := findLine(lines, protocol.LineModules)
	require.True(t, ok)
	require.Equal(t, "8", mods.Values["loaded"], "virtio_ring ... virtio_net")
}

func TestQEMULinuxSourceReady(t *testing.T) {
	kernel := image(t, "linux/bzImage")
	needQEMU(t)
	initrd := testInitramfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), qemuTimeout())
	defer cancel()
	agent := protocol.Config{Actions: []protocol.Action{{Kind: protocol.KindReady}, {Kind: protocol.KindFeatures}, {Kind: protocol.KindOffloads}}}
	g := startGuest(t, ctx, kernel, initrd, linuxCmdline(t, agent.CommandLine()),
		[]string{"-nic", "user,model=virtio-net-pci"}, nil)
	lines := g.finish(t, ctx)
	_, ok := findLine(lines, protocol.LineReady)
	require.True(t, ok, "no ready line")
	mods, _ := findLine(lines, protocol.LineModules)
	require.Equal(t, "0", mods.Values["loaded"], "everything is built in")
	checkFeatures(t, lines, false)
	require.Contains(t, g.output(), "rscvm.noint3: skipping int3 self-test")
}

// TestQEMULinuxSourcePVH boots the uncompressed vmlinux through its PVH
// entry note, the way rscvm boots it under the emulated KVM.
func TestQEMULinuxSourcePVH(t *testing.T) {
	kernel := image(t, "linux/vmlinux")
	needQEMU(t)
	initrd := testInitramfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), qemuTimeout())
	defer cancel()
	g := startGuest(t, ctx, kernel, initrd, linuxCmdline(t, "rscvm.agent=ready"), []string{"-nic", "none"}, nil)
	lines := g.finish(t, ctx)
	_, ok := findLine(lines, protocol.LineReady)
	require.True(t, ok, "no ready line")
}

// checkFeatures checks the features line: bits QEMU's virtio-net always
// offers and, with a vnet_hdr backend, the offload bits.
func checkFeatures(t *testing.T, lines []protocol.Line, offloads bool) {
	t.Helper()
	l, ok := findLine(lines, protocol.LineFeatures)
	require.True(t, ok, "no features line")
	require.Len(t, l.Args, 2)
	require.Equal(t, "eth0", l.Args[0])
	f, err := protocol.ParseFeatures(l.Args[1])
	require.NoError(t, err)
	t.Logf("negotiated features %s", l.Args[1])
	for _, bit := range []int{5 /* MAC */, 16 /* STATUS */, 17 /* CTRL_VQ */, 32 /* VERSION_1 */} {
		require.Equal(t, uint(1), f.Bit(bit), "feature bit %d", bit)
	}
	if offloads {
		for _, bit := range []int{0 /* CSUM */, 1 /* GUEST_CSUM */, 7 /* GUEST_TSO4 */, 11 /* HOST_TSO4 */, 15 /* MRG_RXBUF */} {
			require.Equal(t, uint(1), f.Bit(bit), "feature bit %d", bit)
		}
	}
	o, ok := findLine(lines, protocol.LineOffloads)
	require.True(t, ok, "no offloads line")
	require.Equal(t, "eth0", o.Args[0])
	for _, k := range []string{"tx-checksumming", "rx-gro-hw", "generic-receive-offload", "tcp-segmentation-offload"} {
		require.Contains(t, o.Values, k)
	}
	if offloads {
		require.Equal(t, "on", o.Values["tx-checksumming"])
		require.Equal(t, "on", o.Values["tcp-segmentation-offload"])
	}
}

// TestQEMUDebianUserNet moves data both ways through QEMU's user network
// (slirp): the host connects to the guest's sink through a host forward, the
// guest's source connects to the host through 10.0.2.2.
func TestQEMUDebianUserNet(t *testing.T) {
	kernel := image(t, "debian/vmlinuz")
	needQEMU(t)
	initrd := testInitramfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), qemuTimeout())
	defer cancel()

	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer hostLn.Close()
	hostPort := hostLn.Addr().(*net.TCPAddr).Port
	fwdPort := freePort(t)
	const n = 1 << 20
	agent := protocol.Config{
		Actions: []protocol.Action{
			{Kind: protocol.KindReady}, {Kind: protocol.KindFeatures}, {Kind: protocol.KindOffloads},
			{Kind: protocol.KindSink, Port: 5001},
			{Kind: protocol.KindSource, Addr: net.JoinHostPort("10.0.2.2", strconv.Itoa(hostPort)), Bytes: n},
			{Kind: protocol.KindRX}, {Kind: protocol.KindTX},
		},
		Addr:    mustPrefix("10.0.2.15/24"),
		Gateway: mustAddr("10.0.2.2"),
	}
	nic := fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:5001", fwdPort)
	g := startGuest(t, ctx, kernel, initrd, debianCmdline(agent.CommandLine()), []string{"-nic", nic}, nil)

	recv := hostSink(t, ctx, hostLn)
	_, err = g.waitLine(ctx, protocol.LineSink, "listening")
	require.NoError(t, err)
	sent, err := source(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(fwdPort))), n)
	require.NoError(t, err)

	lines := g.finish(t, ctx)
	checkFeatures(t, lines, false)
	sink := lastArgs(t, lines, protocol.LineSink, "bytes")
	require.Equal(t, strconv.Itoa(n), sink.Values["bytes"])
	require.Equal(t, sent.SHA256, sink.Values["sha256"])
	src := lastArgs(t, lines, protocol.LineSource, "bytes")
	require.Equal(t, protocol.PayloadSHA256(n), src.Values["sha256"])
	got := <-recv
	require.Equal(t, transferResult{Bytes: n, SHA256: protocol.PayloadSHA256(n)}, got)
	rx := lastArgs(t, lines, protocol.LineRX, "packets")
	pk, err := rx.Uint("packets")
	require.NoError(t, err)
	require.Greater(t, pk, uint64(100))
}

// lastArgs returns the last line of kind that has key.
func lastArgs(t *testing.T, lines []protocol.Line, kind, key string) protocol.Line {
	t.Helper()
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i].Kind == kind {
			if _, ok := lines[i].Values[key]; ok {
				return lines[i]
			}
		}
	}
	t.Fatalf("no %s line with %s=", kind, key)
	return protocol.Line{}
}

// TestQEMUDebianTap uses a TAP with vnet_hdr in a fresh network namespace,
// so the guest negotiates the offloads, and toggles rx-gro-hw.
func TestQEMUDebianTap(t *testing.T) {
	kernel := image(t, "debian/vmlinuz")
	needQEMU(t)
	initrd := testInitramfs(t)
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root for a network namespace and a TAP")
	}
	ctx, cancel := context.WithTimeout(context.Background(), qemuTimeout())
	defer cancel()

	// Everything that creates sockets or interfaces runs on one locked
	// thread that moved into a new network namespace; the thread is never
	// unlocked, so Go discards it when the goroutine ends.
	type nsReq struct {
		fn   func() error
		done chan error
	}
	reqs := make(chan nsReq)
	nsErr := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			nsErr <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		nsErr <- nil
		for r := range reqs {
			r.done <- r.fn()
		}
	}()
	if err := <-nsErr; err != nil {
		skipOrFail(t, "%v", err)
	}
	defer close(reqs)
	inNS := func(fn func() error) error {
		d := make(chan error, 1)
		reqs <- nsReq{fn, d}
		return <-d
	}

	var tap *os.File
	var hostLn net.Listener
	err := inNS(func() error {
		fd, err := ethtoolSocket()
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := linkUp(fd, "lo"); err != nil {
			return err
		}
		tap, err = openTap("rscvm0")
		if err != nil {
			return err
		}
		if err := setIPv4(fd, "rscvm0", mustPrefix("10.0.2.1/24")); err != nil {
			return err
		}
		if err := linkUp(fd, "rscvm0"); err != nil {
			return err
		}
		hostLn, err = net.Listen("tcp", "10.0.2.1:5002")
		return err
	})
	if err != nil && errors.Is(err, unix.EPERM) {
		skipOrFail(t, "TAP setup: %v", err)
	}
	require.NoError(t, err)
	defer tap.Close()
	defer hostLn.Close()

	const n = 4 << 20
	agent := protocol.Config{
		Actions: []protocol.Action{
			{Kind: protocol.KindReady}, {Kind: protocol.KindFeatures}, {Kind: protocol.KindOffloads},
			{Kind: protocol.KindSink, Port: 5001},
			{Kind: protocol.KindSource, Addr: "10.0.2.1:5002", Bytes: n},
			{Kind: protocol.KindRX},
			{Kind: protocol.KindSet, Feature: "rx-gro-hw", On: false},
			{Kind: protocol.KindOffloads},
		},
		Addr: mustPrefix("10.0.2.15/24"),
	}
	g := startGuest(t, ctx, kernel, initrd, debianCmdline(agent.CommandLine()),
		[]string{"-netdev", "tap,id=n0,fd=3,vhost=off", "-device", "virtio-net-pci,netdev=n0"}, []*os.File{tap})

	recv := hostSink(t, ctx, hostLn)
	_, err = g.waitLine(ctx, protocol.LineSink, "listening")
	require.NoError(t, err)
	var conn net.Conn
	require.NoError(t, inNS(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "tcp", "10.0.2.15:5001")
		return err
	}))
	sent, err := sendPayload(ctx, conn, n)
	require.NoError(t, err)

	lines := g.finish(t, ctx)
	checkFeatures(t, lines, true)
	sink := lastArgs(t, lines, protocol.LineSink, "bytes")
	require.Equal(t, strconv.Itoa(n), sink.Values["bytes"])
	require.Equal(t, sent.SHA256, sink.Values["sha256"])
	require.Equal(t, transferResult{Bytes: n, SHA256: protocol.PayloadSHA256(n)}, <-recv)
	var offs []protocol.Line
	for _, l := range lines {
		if l.Kind == protocol.LineOffloads {
			offs = append(offs, l)
		}
	}
	require.Len(t, offs, 2)
	require.Equal(t, "on", offs[0].Values["rx-gro-hw"], "GUEST_TSO4 negotiated: rx-gro-hw starts on")
	require.Equal(t, "off", offs[1].Values["rx-gro-hw"])
	set, ok := findLine(lines, protocol.LineSet)
	require.True(t, ok)
	require.Equal(t, []string{"rx-gro-hw=off", "ok"}, set.Args)
}

// hostSink accepts one connection on ln in the background, reads it to EOF
// and delivers what it read (the test fails if the sink does).
func hostSink(t *testing.T, ctx context.Context, ln net.Listener) <-chan transferResult {
	recv := make(chan transferResult, 1)
	go func() {
		r, err := acceptSink(ctx, ln)
		if err != nil {
			t.Errorf("host sink: %v", err)
		}
		recv <- r
	}()
	return recv
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// openTap creates a TAP with vnet_hdr in the calling thread's namespace.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

package main

// End-to-end tests of `rscvm vhost-user-net`: a Linux guest (Debian's kernel,
// the agent as /init) under QEMU TCG whose virtio-net datapath is served by
// rscvm over vhost-user, on a TAP in a network namespace. The real Linux
// virtio_net driver runs against rscvm's virtqueues, receive path, RSC
// engine and TAP backend.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/guestimages/agent/protocol"
	"github.com/rscvm/rscvm/guestimages/testguest"
	"github.com/rscvm/rscvm/internal/testenv"
)

var (
	rscvmOnce sync.Once
	rscvmBin  string
	rscvmErr  error
)

// rscvmBinary builds cmd/rscvm once per test binary.
func rscvmBinary(t *testing.T) string {
	t.Helper()
	rscvmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rscvm-bin-")
		if err != nil {
			rscvmErr = err
			return
		}
		rscvmBin = filepath.Join(dir, "rscvm")
		rscvmErr = goBuild(rscvmBin, "../../cmd/rscvm", nil)
	})
	require.NoError(t, rscvmErr)
	return rscvmBin
}

// vuBackend is a running `rscvm vhost-user-net` on a TAP in its own
// namespace; the host end of the TAP is 10.0.2.1/24.
type vuBackend struct {
	ns     *testguest.Netns
	socket string
	stats  string
	cmd    *exec.Cmd
	log    *os.File
	done   chan struct{}
}

const vuTap = "vu0"

func startVhostUserBackend(t *testing.T, deviceProps string) *vuBackend {
	t.Helper()
	testenv.Root(t, "a network namespace and a TAP")
	if err := testguest.NetnsAvailable(); err != nil {
		skipOrFail(t, "%v", err)
	}
	bin := rscvmBinary(t)
	ns, err := testguest.NewNetns(vuTap, false)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ns.Delete() })
	require.NoError(t, exec.Command("ip", "-n", ns.Name, "addr", "add", "10.0.2.1/24", "dev", vuTap).Run())
	b := &vuBackend{ns: ns}
	if err := b.start(bin, t.TempDir(), deviceProps, "--stats"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			out, _ := os.ReadFile(b.log.Name())
			t.Logf("rscvm vhost-user-net log:\n%s", out)
		}
	})
	return b
}

// start runs `rscvm vhost-user-net` (binary rscvm) in b's namespace on the
// TAP, its socket, stats file and log in dir, and waits for the socket.
func (b *vuBackend) start(rscvm, dir, deviceProps string, extra ...string) error {
	b.socket, b.stats = filepath.Join(dir, "vu.sock"), filepath.Join(dir, "stats.json")
	b.done = make(chan struct{})
	var err error
	if b.log, err = os.Create(filepath.Join(dir, "rscvm.log")); err != nil {
		return err
	}
	args := []string{rscvm, "vhost-user-net", "--socket", b.socket, "-netdev", "tap,id=n0,ifname=" + vuTap,
		"--stats-file", b.stats}
	args = append(args, extra...)
	if deviceProps != "" {
		args = append(args, "-device", "virtio-net,"+deviceProps)
	}
	argv := b.ns.Command(args...)
	b.cmd = exec.Command(argv[0], argv[1:]...)
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		return fmt.Errorf("start rscvm: %w", err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(b.socket); err == nil {
			return nil
		}
		select {
		case <-b.done:
			out, _ := os.ReadFile(b.log.Name())
			return fmt.Errorf("rscvm vhost-user-net exited: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			_ = b.terminate()
			return errors.New("rscvm vhost-user-net did not create its socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// terminate ends rscvm with SIGTERM (it exits 0 and prints its counters),
// or SIGKILL after 10 s; the error says what went wrong.
func (b *vuBackend) terminate() error {
	defer b.log.Close()
	select {
	case <-b.done:
		return nil
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
		err = errors.New("rscvm vhost-user-net ignored SIGTERM")
	}
	if st := b.cmd.ProcessState; err == nil && st != nil && !st.Success() {
		err = fmt.Errorf("rscvm vhost-user-net exit status: %v", st)
	}
	return err
}

// stop is terminate for a test.
func (b *vuBackend) stop(t *testing.T) {
	if err := b.terminate(); err != nil {
		t.Error(err)
	}
}

// vuStats is the part of --stats-file the tests read.
type vuStats struct {
	Device struct {
		Queues []struct {
			RxPackets uint64 `json:"rx_packets"`
			RSC       *struct {
				Received          uint64 `json:"received"`
				CoalescedSegments uint64 `json:"coalesced_segments"`
				Delivered         uint64 `json:"delivered"`
			} `json:"rsc"`
		} `json:"queues"`
	} `json:"device"`
	VhostUser struct {
		Connections uint64 `json:"connections"`
		Errors      uint64 `json:"errors"`
	} `json:"vhost_user"`
}

// readStats waits for the stats file to be rewritten (it is every second)
// and decodes it.
func (b *vuBackend) readStats(t *testing.T) vuStats {
	t.Helper()
	var st vuStats
	time.Sleep(1200 * time.Millisecond)
	data, err := os.ReadFile(b.stats)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &st))
	return st
}

// qemuArgs attaches a QEMU guest to the backend: guest RAM in a shared
// memfd, vhost-user netdev. vectors=0: QEMU 7.2 under TCG crashes in
// vhost_net_start with MSI-X vectors on a vhost-user NIC.
func (b *vuBackend) qemuArgs() []string {
	return []string{
		"-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-machine", "pc,memory-backend=mem",
		"-chardev", "socket,id=c0,path=" + b.socket,
		"-netdev", "vhost-user,id=n0,chardev=c0", "-device", "virtio-net-pci,netdev=n0,vectors=0",
	}
}

// dial connects from the host end of the TAP.
func (b *vuBackend) dial(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := b.ns.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// listen listens on the host end of the TAP.
func (b *vuBackend) listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := b.ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// hostOffloads switches the TAP's TSO and GSO: off makes the host kernel
// send MSS-sized segments into the TAP (the input RSC exists for). rscvm
// sets the TAP's offloads when the device starts, so call this after.
func (b *vuBackend) hostOffloads(t *testing.T, on bool) {
	t.Helper()
	v := "off"
	if on {
		v = "on"
	}
	argv := b.ns.Command("ethtool", "-K", vuTap, "tso", v, "gso", v)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	require.NoError(t, err, "ethtool: %s", out)
}

// hostSend connects to the guest's sink and sends n payload bytes.
func (b *vuBackend) hostSend(t *testing.T, ctx context.Context, addr string, n int64) transferResult {
	t.Helper()
	c, err := b.dial(ctx, addr)
	require.NoError(t, err)
	r, err := sendPayload(ctx, c, n)
	require.NoError(t, err)
	return r
}

func rxPackets(t *testing.T, l protocol.Line) int64 {
	t.Helper()
	n, err := strconv.ParseInt(l.Values["packets"], 10, 64)
	require.NoError(t, err, "rx line %q", l.Text)
	return n
}

// vhostUserSetup is what every vhost-user test needs: the Debian kernel,
// the agent initramfs, QEMU, and rscvm's backend with deviceProps; ctx ends
// with the test or after twice the QEMU timeout.
func vhostUserSetup(t *testing.T, deviceProps string) (kernel, initrd string, b *vuBackend, ctx context.Context) {
	t.Helper()
	kernel = image(t, "debian/vmlinuz")
	needQEMU(t)
	initrd = testInitramfs(t)
	b = startVhostUserBackend(t, deviceProps)
	ctx, cancel := context.WithTimeout(context.Background(), 2*qemuTimeout())
	t.Cleanup(cancel)
	return kernel, initrd, b, ctx
}

// TestQEMUVhostUserTCP: host→guest and guest→host TCP through rscvm's
// backend, byte-exact; with x-rsc-gso=on and MSS-sized frames entering the
// TAP the guest receives at least 10x fewer packets than segments; after the
// guest switches rx-gro-hw off the stream stays intact.
func TestQEMUVhostUserTCP(t *testing.T) {
	kernel, initrd, b, ctx := vhostUserSetup(t, "x-rsc-gso=on")

	const n = 8 << 20
	hostLn, err := b.listen("10.0.2.1:5002")
	require.NoError(t, err)
	defer hostLn.Close()
	agent := protocol.Config{
		Actions: []protocol.Action{
			{Kind: protocol.KindReady}, {Kind: protocol.KindFeatures},
			{Kind: protocol.KindRX},
			{Kind: protocol.KindSink, Port: 5001},
			{Kind: protocol.KindRX},
			{Kind: protocol.KindSource, Addr: "10.0.2.1:5002", Bytes: n},
			{Kind: protocol.KindSet, Feature: "rx-gro-hw", On: false},
			{Kind: protocol.KindSink, Port: 5003},
			{Kind: protocol.KindRX},
		},
		Addr: mustPrefix("10.0.2.15/24"),
	}
	g := startGuest(t, ctx, kernel, initrd, debianCmdline(agent.CommandLine()), b.qemuArgs(), nil)
	recv := hostSink(t, ctx, hostLn)

	_, err = g.waitLine(ctx, protocol.LineSink, "listening", "port=5001")
	require.NoError(t, err)
	b.hostOffloads(t, false)
	before := b.readStats(t)
	sent1 := b.hostSend(t, ctx, "10.0.2.15:5001", n)
	_, err = g.waitLine(ctx, protocol.LineSink, "listening", "port=5003")
	require.NoError(t, err)
	mid := b.readStats(t)
	sent2 := b.hostSend(t, ctx, "10.0.2.15:5003", n)
	lines := g.finish(t, ctx)

	f, ok := findLine(lines, protocol.LineFeatures)
	require.True(t, ok)
	feat, err := protocol.ParseFeatures(f.Args[1])
	require.NoError(t, err)
	t.Logf("negotiated %s", f.Args[1])
	for _, bit := range []int{1 /* GUEST_CSUM */, 7 /* GUEST_TSO4 */, 15 /* MRG_RXBUF */, 17 /* CTRL_VQ (QEMU's) */, 32 /* VERSION_1 */} {
		require.Equal(t, uint(1), feat.Bit(bit), "feature bit %d", bit)
	}
	var sinks, rxs []protocol.Line
	for _, l := range lines {
		switch {
		case l.Kind == protocol.LineSink && l.Values["bytes"] != "":
			sinks = append(sinks, l)
		case l.Kind == protocol.LineRX:
			rxs = append(rxs, l)
		}
	}
	require.Len(t, sinks, 2)
	require.Len(t, rxs, 3)
	require.Equal(t, strconv.Itoa(n), sinks[0].Values["bytes"])
	require.Equal(t, sent1.SHA256, sinks[0].Values["sha256"], "host→guest stream 1")
	require.Equal(t, strconv.Itoa(n), sinks[1].Values["bytes"])
	require.Equal(t, sent2.SHA256, sinks[1].Values["sha256"], "host→guest stream 2 (after rx-gro-hw off)")
	require.Equal(t, transferResult{Bytes: n, SHA256: protocol.PayloadSHA256(n)}, <-recv, "guest→host stream")
	set, ok := findLine(lines, protocol.LineSet)
	require.True(t, ok)
	require.Equal(t, []string{"rx-gro-hw=off", "ok"}, set.Args)

	// RSC: the TAP delivered MSS segments (host TSO/GSO off), the guest got
	// GSO packets at least 10x fewer.
	segments := int64(n / 1448)
	guestPackets := rxPackets(t, rxs[1]) - rxPackets(t, rxs[0])
	q0, q1 := before.Device.Queues[0], mid.Device.Queues[0]
	require.NotNil(t, q1.RSC, "no RSC counters")
	var coalesced uint64
	if q0.RSC != nil {
		coalesced = q0.RSC.CoalescedSegments
	}
	coalesced = q1.RSC.CoalescedSegments - coalesced
	t.Logf("transfer 1: %d bytes, ~%d MSS segments, guest packets %d, rscvm coalesced %d segments", n, segments, guestPackets, coalesced)
	require.LessOrEqual(t, guestPackets*10, segments, "x-rsc-gso: guest packets not 10x below the segment count")
	require.Greater(t, coalesced, uint64(segments/2))
	// QEMU 7.2 answers GUEST_OFFLOADS_SET itself and tells a vhost-user
	// backend nothing (vhost-user has no message for it), so coalescing
	// goes on after rx-gro-hw off; the guest's virtio_net accepts the GSO
	// packets and the stream above stayed intact. Record what happened.
	after := rxPackets(t, rxs[2]) - rxPackets(t, rxs[1])
	t.Logf("transfer 2 (rx-gro-hw off in the guest, not visible to a vhost-user backend under QEMU 7.2): guest packets %d", after)
	st := b.readStats(t)
	require.Equal(t, uint64(1), st.VhostUser.Connections)
}

// TestQEMUVhostUserReconnect: killing QEMU leaves rscvm listening with its
// TAP; a new QEMU connects and its guest receives a TCP stream.
func TestQEMUVhostUserReconnect(t *testing.T) {
	kernel, initrd, b, ctx := vhostUserSetup(t, "x-rsc-gso=on")

	first := protocol.Config{
		Actions: []protocol.Action{{Kind: protocol.KindReady}, {Kind: protocol.KindSink, Port: 5001}},
		Addr:    mustPrefix("10.0.2.15/24"),
	}
	g1 := startGuest(t, ctx, kernel, initrd, debianCmdline(first.CommandLine()), b.qemuArgs(), nil)
	_, err := g1.waitLine(ctx, protocol.LineSink, "listening")
	require.NoError(t, err)
	// The guest is up with rings running: kill QEMU mid-session.
	require.NoError(t, g1.cmd.Process.Kill())
	<-g1.done

	const n = 2 << 20
	second := protocol.Config{
		Actions: []protocol.Action{{Kind: protocol.KindReady}, {Kind: protocol.KindSink, Port: 5001}, {Kind: protocol.KindRX}},
		Addr:    mustPrefix("10.0.2.15/24"),
	}
	g2 := startGuest(t, ctx, kernel, initrd, debianCmdline(second.CommandLine()), b.qemuArgs(), nil)
	_, err = g2.waitLine(ctx, protocol.LineSink, "listening")
	require.NoError(t, err)
	var sent transferResult
	for attempt := 0; ; attempt++ {
		// The host may still hold a neighbour entry or a half-open
		// connection of the first guest: retry the connect briefly.
		c, err := b.dial(ctx, "10.0.2.15:5001")
		if err == nil {
			sent, err = sendPayload(ctx, c, n)
			require.NoError(t, err)
			break
		}
		if attempt > 20 || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("connect to the second guest: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	lines := g2.finish(t, ctx)
	sink := lastArgs(t, lines, protocol.LineSink, "bytes")
	require.Equal(t, strconv.Itoa(n), sink.Values["bytes"])
	require.Equal(t, sent.SHA256, sink.Values["sha256"])
	st := b.readStats(t)
	require.Equal(t, uint64(2), st.VhostUser.Connections, "connections")
	out, _ := os.ReadFile(b.log.Name())
	require.True(t, strings.Count(string(out), "frontend connected") >= 2, "log:\n%s", out)
}

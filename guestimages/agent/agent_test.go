package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/guestimages/agent/protocol"
)

func TestStructLayouts(t *testing.T) {
	require.Equal(t, uintptr(40), unsafe.Sizeof(ifreqData{}), "struct ifreq")
	require.Equal(t, uintptr(24), unsafe.Sizeof(in6Ifreq{}), "struct in6_ifreq")
	var rt rtentry
	require.Equal(t, uintptr(120), unsafe.Sizeof(rt), "struct rtentry")
	require.Equal(t, uintptr(8), unsafe.Offsetof(rt.dst))
	require.Equal(t, uintptr(56), unsafe.Offsetof(rt.flags))
	require.Equal(t, uintptr(80), unsafe.Offsetof(rt.metric))
	require.Equal(t, uintptr(88), unsafe.Offsetof(rt.dev))
	require.Equal(t, uintptr(112), unsafe.Offsetof(rt.irtt))
}

func TestParseGStrings(t *testing.T) {
	data := make([]byte, 3*ethGStringLen)
	copy(data, "tx-scatter-gather")
	copy(data[ethGStringLen:], strings.Repeat("x", ethGStringLen)) // no NUL
	require.Equal(t, []string{"tx-scatter-gather", strings.Repeat("x", 32), ""}, parseGStrings(data, 3, 3))
	require.Len(t, parseGStrings(data, 10, 10), 3, "bounded by the buffer")
	require.Len(t, parseGStrings(data, 3, 1), 1, "bounded by what was asked")
}

func TestFeatureStates(t *testing.T) {
	b := make([]byte, 2*16)
	binary.NativeEndian.PutUint32(b[8:], 0b101)   // block 0 active
	binary.NativeEndian.PutUint32(b[16+8:], 1<<1) // block 1 active: bit 33
	blocks := parseFeatureBlocks(b, 5)
	require.Len(t, blocks, 2)
	names := make([]string, 34)
	names[0], names[1], names[2], names[33] = "a", "b", "c", "z"
	got := namedStates(names, blocks)
	require.Equal(t, []featureState{{"a", true}, {"b", false}, {"c", true}, {"z", true}}, got)
	require.Equal(t, "rscvm-agent: offloads eth0 a=on b=off c=on z=on", formatOffloads("eth0", got))
	require.Equal(t, "rscvm-agent: offloads eth0 ok=on", formatOffloads("eth0", []featureState{{"bad name", true}, {"a=b", true}, {"ok", true}}))
}

func TestEthtoolOnLoopback(t *testing.T) {
	fd, err := ethtoolSocket()
	require.NoError(t, err)
	defer unix.Close(fd)
	names, err := featureNames(fd, "lo")
	if err != nil {
		t.Skipf("ethtool on lo: %v", err)
	}
	require.Contains(t, names, "rx-gro-hw")
	require.Contains(t, names, "tx-checksum-ip-generic")
	states, err := offloads(fd, "lo")
	require.NoError(t, err)
	require.Equal(t, "rx-checksumming", states[0].Name)
	seen := map[string]bool{}
	for _, s := range states {
		seen[s.Name] = s.On
	}
	require.True(t, seen["tx-checksum-ip-generic"], "lo always checksums")
	require.False(t, seen["rx-gro-hw"])

	_, err = ethtool(fd, "no-such-if0", make([]byte, 8))
	require.Error(t, err)
	_, err = ethtool(fd, strings.Repeat("x", 16), make([]byte, 8))
	require.Error(t, err)
	require.Error(t, setFeature(fd, "lo", "no-such-feature", true))
}

func TestLoadOrder(t *testing.T) {
	dir := t.TempDir()
	names, err := readLoadOrder(dir)
	require.NoError(t, err)
	require.Empty(t, names)
	require.NoError(t, os.WriteFile(filepath.Join(dir, LoadOrderFile), []byte("# order\nvirtio_ring.ko\n\nvirtio_net.ko.xz\n"), 0o644))
	names, err = readLoadOrder(dir)
	require.NoError(t, err)
	require.Equal(t, []string{"virtio_ring.ko", "virtio_net.ko.xz"}, names)
	require.NoError(t, os.WriteFile(filepath.Join(dir, LoadOrderFile), []byte("../evil.ko\n"), 0o644))
	_, err = readLoadOrder(dir)
	require.Error(t, err)

	require.Equal(t, 0, moduleFlags("virtio_net.ko"))
	require.Equal(t, unix.MODULE_INIT_COMPRESSED_FILE, moduleFlags("virtio_net.ko.xz"))
	require.Equal(t, unix.MODULE_INIT_COMPRESSED_FILE, moduleFlags("virtio_net.ko.zst"))
}

func TestSinkSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	type res struct {
		r   transferResult
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := acceptSink(ctx, ln)
		ch <- res{r, err}
	}()
	const n = 3<<20 + 17
	sent, err := source(ctx, addr, n)
	require.NoError(t, err)
	got := <-ch
	require.NoError(t, got.err)
	want := protocol.PayloadSHA256(n)
	require.Equal(t, transferResult{Bytes: n, SHA256: want}, sent)
	require.Equal(t, transferResult{Bytes: n, SHA256: want}, got.r)
}

func TestSinkTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	ln, err := listenSink(ctx, freePort(t))
	require.NoError(t, err)
	_, err = acceptSink(ctx, ln)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestSourceRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := source(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(freePort(t)))), 10)
	require.Error(t, err)
}

func freePort(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// fakeSys builds a sysfs tree with one virtio-net interface.
func fakeSys(t *testing.T) string {
	root := t.TempDir()
	dev := filepath.Join(root, "class/net/eth0")
	require.NoError(t, os.MkdirAll(filepath.Join(dev, "statistics"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dev, "device"), 0o755))
	write := func(p, s string) { require.NoError(t, os.WriteFile(filepath.Join(dev, p), []byte(s), 0o644)) }
	write("device/features", "1110010111111111111101010000110010000000100000000000000000000000\n")
	write("statistics/rx_packets", "12\n")
	write("statistics/rx_bytes", "3456\n")
	write("statistics/tx_packets", "7\n")
	write("statistics/tx_bytes", "890\n")
	write("address", "52:54:00:12:34:56\n")
	write("carrier", "1\n")
	return root
}

func TestAgentRun(t *testing.T) {
	var buf bytes.Buffer
	a := &agent{out: &console{w: &buf}, sysRoot: fakeSys(t), linkTried: true, linked: true}
	cfg, err := protocol.ParseCommandLine("rscvm.agent=ready,features,rx,tx,sleep:1 rscvm.timeout=10")
	require.NoError(t, err)
	require.Equal(t, 0, a.run(cfg))
	require.Equal(t, strings.Join([]string{
		"rscvm-agent: ready",
		"rscvm-agent: features eth0 0x0000010130afffa7",
		"rscvm-agent: rx packets=12 bytes=3456",
		"rscvm-agent: tx packets=7 bytes=890",
	}, "\n")+"\n", buf.String())
}

func TestAgentRunErrors(t *testing.T) {
	var buf bytes.Buffer
	a := &agent{out: &console{w: &buf}, sysRoot: t.TempDir(), linkTried: true}
	cfg, err := protocol.ParseCommandLine("rscvm.agent=rx,ready rscvm.timeout=10 rscvm.if=eth9")
	require.NoError(t, err)
	require.Equal(t, 1, a.run(cfg))
	lines := protocol.ParseOutput(buf.Bytes())
	require.Len(t, lines, 2)
	require.Equal(t, "error", lines[0].Kind)
	require.True(t, strings.HasPrefix(lines[0].Text, "error rx: "), lines[0].Text)
	require.Equal(t, "ready", lines[1].Kind)
}

func TestAgentSinkAction(t *testing.T) {
	port := freePort(t)
	pr, pw := io.Pipe()
	a := &agent{out: &console{w: pw}, sysRoot: fakeSys(t), linkTried: true, linked: true}
	cfg, err := protocol.ParseCommandLine("rscvm.agent=sink:" + strconv.Itoa(int(port)) + " rscvm.timeout=20")
	require.NoError(t, err)
	done := make(chan int, 1)
	go func() { done <- a.run(cfg); pw.Close() }()
	out, err := io.ReadAll(&lineWaiter{r: pr, port: port, t: t})
	require.NoError(t, err)
	require.Equal(t, 0, <-done)
	lines := protocol.ParseOutput(out)
	require.Len(t, lines, 2)
	require.Equal(t, "listening", lines[0].Args[0])
	n, err := lines[1].Uint("bytes")
	require.NoError(t, err)
	require.Equal(t, uint64(1000), n)
	require.Equal(t, protocol.PayloadSHA256(1000), lines[1].Values["sha256"])
}

// lineWaiter passes the agent's output through and, once the sink reports
// that it listens, sends 1000 payload bytes to it.
type lineWaiter struct {
	r    io.Reader
	port uint16
	t    *testing.T
	sent bool
	seen []byte
}

func (w *lineWaiter) Read(b []byte) (int, error) {
	n, err := w.r.Read(b)
	w.seen = append(w.seen, b[:n]...)
	if !w.sent && bytes.Contains(w.seen, []byte("sink listening")) {
		w.sent = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, serr := source(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(w.port))), 1000)
		require.NoError(w.t, serr)
	}
	return n, err
}

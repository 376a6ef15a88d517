//go:build linux

package pcaptest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/internal/testenv"
	"github.com/rscvm/rscvm/net/pcap"
)

// Addresses of the two ends of a transfer (each in its own namespace, so
// they never clash with the host's). The sender's veth has MAC SenderMAC,
// the receiver's ReceiverMAC.
var (
	SenderIPv4   = netip.MustParseAddr("10.231.0.1")
	ReceiverIPv4 = netip.MustParseAddr("10.231.0.2")
	SenderIPv6   = netip.MustParseAddr("fd00:7273:6376::1")
	ReceiverIPv6 = netip.MustParseAddr("fd00:7273:6376::2")
	SenderMAC    = [6]byte{0x02, 0x72, 0x73, 0x63, 0x00, 0x01}
	ReceiverMAC  = [6]byte{0x02, 0x72, 0x73, 0x63, 0x00, 0x02}
)

// DefaultTransferBytes is the size of the default flow (2 MiB).
const DefaultTransferBytes = 2 << 20

// FlowConfig is one TCP connection of a transfer.
type FlowConfig struct {
	// IPv6 selects IPv6 instead of IPv4.
	IPv6 bool
	// Bytes is the amount of data sent (0 means DefaultTransferBytes).
	Bytes int
}

// TransferConfig describes a captured transfer.
type TransferConfig struct {
	// Flows run concurrently; none means one IPv4 flow of
	// DefaultTransferBytes.
	Flows []FlowConfig
	// Seed selects the (pseudo-random) content of the streams.
	Seed uint64
	// PartialChecksums leaves TX checksum offload on at the sender, so the
	// captured TCP checksum fields hold only the pseudo-header sum (what a
	// TAP hands over with NEEDS_CSUM for locally generated traffic). By
	// default the sender computes full checksums, as on a real wire.
	PartialChecksums bool
	// NoTCPTimestamps turns TCP timestamps off in the sender's namespace
	// (Linux sends them by default, on every segment).
	NoTCPTimestamps bool
	// MTU of the veth pair (0 means 1500).
	MTU int
	// Timeout bounds the whole capture (0 means 60 s).
	Timeout time.Duration
}

// FlowResult is one transferred flow.
type FlowResult struct {
	// Src is the sender's address and port, Dst the receiver's.
	Src, Dst netip.AddrPort
	// Sent is the byte stream written by the sender; SentSHA256 its hash
	// and ReceivedSHA256 the hash of what the receiving socket read (equal
	// after a successful transfer).
	Sent                       []byte
	SentSHA256, ReceivedSHA256 [32]byte
}

// Key returns the flow direction carrying the data.
func (r FlowResult) Key() FlowKey { return FlowKey{r.Src, r.Dst} }

// Capture is a captured transfer.
type Capture struct {
	// Packets are the Ethernet frames that arrived at the receiver's
	// interface (data, the sender's ACKs and FIN, ARP/ND), in arrival order
	// with kernel receive timestamps. Frames the receiver sent are not
	// included: this is what a TAP would hand to a guest receiving the
	// transfer.
	Packets []pcap.Packet
	// Flows are the transfers, in TransferConfig.Flows order.
	Flows []FlowResult
}

// WriteFile writes the captured frames to a pcap file (Ethernet).
func (c *Capture) WriteFile(path string) error {
	return pcap.WriteFile(path, pcap.LinkTypeEthernet, c.Packets)
}

// ErrUnsupported is wrapped by CaptureTransfer errors caused by the
// environment: not root, iproute2/ethtool missing, or no network
// namespace / veth support in the kernel.
var ErrUnsupported = errors.New("transfer capture not supported here")

// Supported reports why CaptureTransfer cannot run here (wrapping
// ErrUnsupported), or nil. Missing kernel support is only found when
// CaptureTransfer tries.
func Supported() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (network namespaces, veth, AF_PACKET)", ErrUnsupported)
	}
	for _, tool := range []struct{ name, pkg string }{{"ip", "iproute2"}, {"ethtool", "ethtool"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return fmt.Errorf("%w: needs %s (apt-get install %s)", ErrUnsupported, tool.name, tool.pkg)
		}
	}
	return nil
}

// MustCaptureTransfer runs CaptureTransfer for a test. When the
// environment cannot run it (ErrUnsupported) the test is skipped with the
// reason, or fails if RSCVM_REQUIRE_KVM=1 (CI); other errors fail t.
func MustCaptureTransfer(t testing.TB, cfg TransferConfig) *Capture {
	t.Helper()
	skipIf := func(err error) {
		t.Helper()
		testenv.SkipOrFail(t, "%v", err)
	}
	if err := Supported(); err != nil {
		skipIf(err)
	}
	c, err := CaptureTransfer(context.Background(), cfg)
	if errors.Is(err, ErrUnsupported) {
		skipIf(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CaptureTransfer runs real Linux TCP transfers between two fresh network
// namespaces joined by a veth pair and captures, with an AF_PACKET socket,
// every frame arriving at the receiver's end. The sender has TSO, GSO and
// GRO off (and TX checksumming unless PartialChecksums), so every data
// frame is one MSS-sized segment as on a wire; GRO is off at the receiver.
// Sender and receiver are Go sockets created on OS threads locked into the
// namespaces. The namespaces are always deleted before it returns. A
// capture with kernel-reported drops is an error.
func CaptureTransfer(ctx context.Context, cfg TransferConfig) (*Capture, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	if len(cfg.Flows) == 0 {
		cfg.Flows = []FlowConfig{{}}
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	s := &setup{
		sendNS: "rscvm-pcap-" + id + "-s", recvNS: "rscvm-pcap-" + id + "-r",
		sendIf: "rpc" + id + "s", recvIf: "rpc" + id + "r",
	}
	defer s.cleanup()
	if err := s.create(cfg); err != nil {
		return nil, err
	}
	return s.transfer(ctx, cfg)
}

type setup struct {
	sendNS, recvNS string
	sendIf, recvIf string
	created        []string
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (s *setup) cleanup() {
	for _, ns := range s.created {
		_ = run("ip", "netns", "del", ns)
	}
}

func macString(m [6]byte) string { return net.HardwareAddr(m[:]).String() }

func (s *setup) create(cfg TransferConfig) error {
	v6 := false
	for _, f := range cfg.Flows {
		v6 = v6 || f.IPv6
	}
	for _, ns := range []string{s.sendNS, s.recvNS} {
		if err := run("ip", "netns", "add", ns); err != nil {
			return fmt.Errorf("%w: %v", ErrUnsupported, err)
		}
		s.created = append(s.created, ns)
		sysctls := map[string]string{}
		if !v6 {
			// No IPv6 at all: no router solicitations or MLD reports.
			sysctls["net/ipv6/conf/all/disable_ipv6"] = "1"
			sysctls["net/ipv6/conf/default/disable_ipv6"] = "1"
		} else {
			sysctls["net/ipv6/conf/default/accept_dad"] = "0"
		}
		if ns == s.sendNS && cfg.NoTCPTimestamps {
			sysctls["net/ipv4/tcp_timestamps"] = "0"
		}
		for k, v := range sysctls {
			if err := run("ip", "netns", "exec", ns, "sh", "-c", "echo "+v+" > /proc/sys/"+k); err != nil {
				return err
			}
		}
		if err := run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	if err := run("ip", "link", "add", s.sendIf, "netns", s.sendNS, "address", macString(SenderMAC), "mtu", fmt.Sprint(cfg.MTU), "type", "veth",
		"peer", "name", s.recvIf, "netns", s.recvNS, "address", macString(ReceiverMAC), "mtu", fmt.Sprint(cfg.MTU)); err != nil {
		return fmt.Errorf("%w: veth: %v", ErrUnsupported, err)
	}
	sendOff := []string{"tso", "off", "gso", "off", "gro", "off"}
	if !cfg.PartialChecksums {
		sendOff = append(sendOff, "tx", "off")
	}
	steps := [][]string{
		append([]string{"ip", "netns", "exec", s.sendNS, "ethtool", "-K", s.sendIf}, sendOff...),
		{"ip", "netns", "exec", s.recvNS, "ethtool", "-K", s.recvIf, "gro", "off", "lro", "off"},
		{"ip", "-n", s.sendNS, "addr", "add", SenderIPv4.String() + "/24", "dev", s.sendIf},
		{"ip", "-n", s.recvNS, "addr", "add", ReceiverIPv4.String() + "/24", "dev", s.recvIf},
		// Static neighbours: no ARP/ND exchange inside the capture.
		{"ip", "-n", s.sendNS, "neigh", "add", ReceiverIPv4.String(), "lladdr", macString(ReceiverMAC), "dev", s.sendIf},
		{"ip", "-n", s.recvNS, "neigh", "add", SenderIPv4.String(), "lladdr", macString(SenderMAC), "dev", s.recvIf},
	}
	if v6 {
		steps = append(steps,
			[]string{"ip", "-n", s.sendNS, "addr", "add", SenderIPv6.String() + "/64", "dev", s.sendIf, "nodad"},
			[]string{"ip", "-n", s.recvNS, "addr", "add", ReceiverIPv6.String() + "/64", "dev", s.recvIf, "nodad"},
			[]string{"ip", "-n", s.sendNS, "neigh", "add", ReceiverIPv6.String(), "lladdr", macString(ReceiverMAC), "dev", s.sendIf},
			[]string{"ip", "-n", s.recvNS, "neigh", "add", SenderIPv6.String(), "lladdr", macString(SenderMAC), "dev", s.recvIf})
	}
	steps = append(steps,
		[]string{"ip", "-n", s.sendNS, "link", "set", s.sendIf, "up"},
		[]string{"ip", "-n", s.recvNS, "link", "set", s.recvIf, "up"})
	for _, st := range steps {
		if err := run(st...); err != nil {
			return err
		}
	}
	return nil
}

// inNetns runs f on an OS thread that has joined the named namespace. The
// thread is never unlocked, so it exits with its goroutine instead of
// returning to the scheduler in the wrong namespace. Sockets created by f
// belong to the namespace and may be used from any goroutine afterwards.
func inNetns(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// sniffer captures incoming frames on one interface.
type sniffer struct {
	fd      int
	stop    atomic.Bool
	done    chan struct{}
	packets []pcap.Packet
	err     error
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openSniffer(ns, ifname string) (*sniffer, error) {
	sn := &sniffer{fd: -1, done: make(chan struct{})}
	err := inNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		sn.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
			return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
		}
		tv := unix.NsecToTimeval((20 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		if sn.fd >= 0 {
			unix.Close(sn.fd)
		}
		return nil, fmt.Errorf("capture socket on %s: %w", ifname, err)
	}
	go sn.loop()
	return sn, nil
}

func (sn *sniffer) loop() {
	defer close(sn.done)
	buf := make([]byte, pcap.MaxCapLen)
	oob := make([]byte, 256)
	for {
		n, oobn, flags, from, err := unix.Recvmsg(sn.fd, buf, oob, unix.MSG_TRUNC)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				if sn.stop.Load() {
					return
				}
				continue
			}
			sn.err = fmt.Errorf("capture recvmsg: %w", err)
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if flags&unix.MSG_TRUNC != 0 || n > len(buf) {
			sn.err = fmt.Errorf("capture: frame of %d bytes larger than %d", n, len(buf))
			return
		}
		ts := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
					sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
					nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
					ts = time.Unix(sec, nsec)
				}
			}
		}
		sn.packets = append(sn.packets, pcap.Packet{Time: ts, Data: append([]byte(nil), buf[:n]...), OrigLen: n})
	}
}

// finish stops the capture after the queued frames are read and reports
// kernel drops.
func (sn *sniffer) finish() ([]pcap.Packet, error) {
	sn.stop.Store(true)
	<-sn.done
	defer unix.Close(sn.fd)
	if sn.err != nil {
		return nil, sn.err
	}
	st, err := unix.GetsockoptTpacketStats(sn.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return nil, fmt.Errorf("PACKET_STATISTICS: %w", err)
	}
	if st.Drops != 0 {
		return nil, fmt.Errorf("capture socket dropped %d frames", st.Drops)
	}
	return sn.packets, nil
}

func streamData(seed uint64, flow, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(flow))
	copy(key[16:], "rscvm pcaptest")
	b := make([]byte, n)
	_, _ = mrand.NewChaCha8(key).Read(b)
	return b
}

func (s *setup) transfer(ctx context.Context, cfg TransferConfig) (*Capture, error) {
	sn, err := openSniffer(s.recvNS, s.recvIf)
	if err != nil {
		return nil, err
	}
	snifferDone := false
	defer func() {
		if !snifferDone {
			_, _ = sn.finish()
		}
	}()

	c := &Capture{Flows: make([]FlowResult, len(cfg.Flows))}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(cfg.Flows))
	deadline, _ := ctx.Deadline()
	for i, fc := range cfg.Flows {
		n := fc.Bytes
		if n == 0 {
			n = DefaultTransferBytes
		}
		src, dst := SenderIPv4, ReceiverIPv4
		if fc.IPv6 {
			src, dst = SenderIPv6, ReceiverIPv6
		}
		var ln net.Listener
		if err := inNetns(s.recvNS, func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
			return err
		}); err != nil {
			return nil, fmt.Errorf("flow %d: listen: %w", i, err)
		}
		var conn net.Conn
		if err := inNetns(s.sendNS, func() (err error) {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
			conn, err = d.DialContext(ctx, "tcp", ln.Addr().String())
			return err
		}); err != nil {
			ln.Close()
			return nil, fmt.Errorf("flow %d: dial: %w", i, err)
		}
		fr := &c.Flows[i]
		fr.Src = conn.LocalAddr().(*net.TCPAddr).AddrPort()
		fr.Dst = conn.RemoteAddr().(*net.TCPAddr).AddrPort()
		fr.Sent = streamData(cfg.Seed, i, n)
		fr.SentSHA256 = sha256.Sum256(fr.Sent)
		wg.Add(2)
		go func() { // receiver
			defer wg.Done()
			defer ln.Close()
			rc, err := ln.Accept()
			if err != nil {
				errs <- fmt.Errorf("flow %d: accept: %w", i, err)
				return
			}
			defer rc.Close()
			_ = rc.SetDeadline(deadline)
			h := sha256.New()
			if _, err := io.Copy(h, rc); err != nil {
				errs <- fmt.Errorf("flow %d: receive: %w", i, err)
				return
			}
			copy(fr.ReceivedSHA256[:], h.Sum(nil))
		}()
		go func() { // sender
			defer wg.Done()
			defer conn.Close()
			_ = conn.SetDeadline(deadline)
			if _, err := conn.Write(fr.Sent); err != nil {
				errs <- fmt.Errorf("flow %d: send: %w", i, err)
				return
			}
			if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
				errs <- fmt.Errorf("flow %d: shutdown: %w", i, err)
				return
			}
			// Wait for the receiver's FIN so the whole exchange is captured.
			if _, err := io.Copy(io.Discard, conn); err != nil {
				errs <- fmt.Errorf("flow %d: waiting for the receiver to close: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	// Let the last ACKs/FINs arrive.
	time.Sleep(100 * time.Millisecond)
	snifferDone = true
	if c.Packets, err = sn.finish(); err != nil {
		return nil, err
	}
	for i, f := range c.Flows {
		if f.ReceivedSHA256 != f.SentSHA256 {
			return nil, fmt.Errorf("flow %d: the receiver's stream differs from what was sent", i)
		}
	}
	return c, nil
}

package tap

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/internal/testenv"
)

// requireTapEnv skips the test unless it runs as root with /dev/net/tun and
// iproute2; with RSCVM_REQUIRE_KVM=1 (CI) a missing prerequisite fails it.
func requireTapEnv(t testing.TB) {
	t.Helper()
	testenv.TUN(t)
	testenv.Tool(t, "ip", "iproute2")
}

// requireTool skips (or fails under RSCVM_REQUIRE_KVM=1) when a command-line tool is missing.
func requireTool(t testing.TB, name, pkg string) { testenv.Tool(t, name, pkg) }

// netns is a named network namespace created for one test (ip netns add rscvm-test-<random>) and deleted in
// cleanup. Code that must run inside it goes through do (a dedicated, locked OS thread that joins the
// namespace and is discarded afterwards); commands go through run (ip netns exec).
type netns struct {
	name string
	fd   int
}

func newNetns(t testing.TB) *netns {
	t.Helper()
	requireTapEnv(t)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	n := &netns{name: "rscvm-test-" + hex.EncodeToString(rnd[:]), fd: -1}
	out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput()
	require.NoError(t, err, "ip netns add: %s", out)
	t.Cleanup(func() {
		if n.fd >= 0 {
			_ = unix.Close(n.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+n.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	n.fd = fd
	n.run(t, "ip", "link", "set", "lo", "up")
	// No IPv6 on new interfaces: router solicitations and MLD reports would be noise on the tap.
	for _, k := range []string{"all", "default"} {
		n.run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/"+k+"/disable_ipv6")
	}
	return n
}

// do runs f on an OS thread inside the namespace. f must not call t.FailNow; it returns an error instead.
func (n *netns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread dies with this goroutine instead of returning to the pool in the wrong netns.
		runtime.LockOSThread()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// run executes a command inside the namespace and returns its output.
func (n *netns) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	require.NoError(t, err, "%s: %s", strings.Join(args, " "), out)
	return string(out)
}

// open opens a tap inside the namespace and closes it in cleanup.
func (n *netns) open(t testing.TB, cfg Config) *Tap {
	t.Helper()
	var tp *Tap
	err := n.do(func() (err error) {
		tp, err = Open(cfg)
		return err
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tp.Close() })
	return tp
}

// openUp opens a tap, brings it up and gives the host side hostIP/24.
func (n *netns) openUp(t testing.TB, cfg Config, hostIP string) *Tap {
	t.Helper()
	tp := n.open(t, cfg)
	require.NoError(t, tp.SetUp(true))
	n.run(t, "ip", "addr", "add", hostIP+"/24", "dev", tp.Name())
	return tp
}

// packetSocket opens an AF_PACKET socket bound to ifname inside the namespace (ETH_P_ALL, non-blocking).
// With vnetHdr, PACKET_VNET_HDR is enabled so sends carry a 10-byte virtio_net_hdr.
func (n *netns) packetSocket(t testing.TB, ifname string, vnetHdr bool) int {
	t.Helper()
	var fd int
	err := n.do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if vnetHdr {
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
				return fmt.Errorf("PACKET_VNET_HDR: %w", err)
			}
		}
		ifi, err := ifIndex(ifname)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi})
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

func ifIndex(name string) (int, error) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(s)
	r := newIfreq(name)
	if err := ioctlPtr(s, unix.SIOCGIFINDEX, unsafe.Pointer(&r)); err != nil {
		return 0, fmt.Errorf("SIOCGIFINDEX %s: %w", name, err)
	}
	return int(r.int32()), nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ethtoolFeatures parses `ethtool -k IF` into feature -> "on"/"off".
func (n *netns) ethtoolFeatures(t testing.TB, ifname string) map[string]string {
	t.Helper()
	out := n.run(t, "ethtool", "-k", ifname)
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) > 0 {
			m[k] = f[0]
		}
	}
	return m
}

var errNoFrame = errors.New("no matching frame")

func execCommand(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

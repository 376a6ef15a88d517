package virtionet

// Helpers for tests against a real TAP in a throw-away network namespace.
// They are exported (test binary only) for the external test package.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/internal/testenv"
	"github.com/rscvm/rscvm/net/tap"
)

// RequireTapEnv skips the test unless it runs as root with /dev/net/tun and
// iproute2 (and the named extra tools, each from the Debian package of the
// same name); with RSCVM_REQUIRE_KVM=1 a missing prerequisite fails it.
func RequireTapEnv(tb testing.TB, tools ...string) {
	tb.Helper()
	testenv.TUN(tb)
	testenv.Tool(tb, "ip", "iproute2")
	for _, t := range tools {
		testenv.Tool(tb, t, t)
	}
}

// TapNetns is a network namespace created for one test (ip netns add) and
// deleted in cleanup.
type TapNetns struct {
	Name string
	fd   int
}

// NewTapNetns creates the namespace with loopback up and IPv6 disabled (no
// router solicitations on the tap).
func NewTapNetns(tb testing.TB) *TapNetns {
	tb.Helper()
	RequireTapEnv(tb)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	n := &TapNetns{Name: "rscvm-vnet-" + hex.EncodeToString(rnd[:]), fd: -1}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add: %v: %s", err, out)
	}
	tb.Cleanup(func() {
		if n.fd >= 0 {
			_ = unix.Close(n.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	n.fd = fd
	n.Run(tb, "ip", "link", "set", "lo", "up")
	for _, k := range []string{"all", "default"} {
		n.Run(tb, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/"+k+"/disable_ipv6")
	}
	return n
}

// Do runs f on a locked OS thread that joined the namespace; the thread is
// discarded afterwards. f must not call t.FailNow.
func (n *TapNetns) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Run executes a command in the namespace and returns its output.
func (n *TapNetns) Run(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// OpenTap opens a tap named name in the namespace, brings it up with
// hostCIDR on the host side (if not empty) and closes it in cleanup.
func (n *TapNetns) OpenTap(tb testing.TB, name, hostCIDR string) *tap.Tap {
	tb.Helper()
	var tp *tap.Tap
	if err := n.Do(func() (err error) {
		tp, err = tap.Open(tap.Config{Name: name})
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = tp.Close() })
	if err := tp.SetUp(true); err != nil {
		tb.Fatal(err)
	}
	if hostCIDR != "" {
		n.Run(tb, "ip", "addr", "add", hostCIDR, "dev", name)
	}
	return tp
}

// Ethtool returns `ethtool -k ifname` as feature -> "on"/"off".
func (n *TapNetns) Ethtool(tb testing.TB, ifname string) map[string]string {
	tb.Helper()
	out := n.Run(tb, "ethtool", "-k", ifname)
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		if f := strings.Fields(v); len(f) > 0 {
			m[k] = f[0]
		}
	}
	return m
}

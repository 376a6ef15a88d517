package testguest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a named network namespace (ip netns add) holding a persistent TAP
// that a VMM attaches to by name. IPv6 is disabled inside it and no address
// is configured, so the kernel sends nothing to the guest by itself: every
// frame the guest receives comes from the test.
type Netns struct {
	// Name is the namespace name (under /run/netns).
	Name string
	// Tap is the TAP interface name inside the namespace.
	Tap string
}

// NetnsPrefix starts the names of the namespaces NewNetns creates.
const NetnsPrefix = "rscvm-tg-"

// ErrNetnsUnavailable is wrapped by NewNetns when the host cannot create
// namespaces or TAPs (not root, no /dev/net/tun, no ip tool).
var ErrNetnsUnavailable = errors.New("network namespace with a TAP unavailable")

// NetnsAvailable returns nil if this process can create a namespace with a
// TAP, or an error wrapping ErrNetnsUnavailable that says what is missing.
func NetnsAvailable() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root", ErrNetnsUnavailable)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("%w: %w", ErrNetnsUnavailable, err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: needs the ip tool (apt-get install iproute2): %w", ErrNetnsUnavailable, err)
	}
	return nil
}

// NewNetns creates namespace rscvm-tg-<random> with a persistent TAP named tap
// (IFF_VNET_HDR, multi-queue if multiQueue), link up. The caller must Delete it.
func NewNetns(tap string, multiQueue bool) (*Netns, error) {
	if err := NetnsAvailable(); err != nil {
		return nil, err
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("testguest: random namespace name: %w", err)
	}
	n := &Netns{Name: NetnsPrefix + hex.EncodeToString(rnd[:]), Tap: tap}
	if err := ipCommand("netns", "add", n.Name); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = n.Delete()
		}
	}()
	// Quiet namespace: no IPv6 (no router solicitations, MLD or DAD frames).
	if err := n.Do(func() error {
		for _, f := range []string{"all", "default"} {
			p := filepath.Join("/proc/sys/net/ipv6/conf", f, "disable_ipv6")
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("testguest: %s: %w", p, err)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	args := []string{"-n", n.Name, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"}
	if multiQueue {
		args = append(args, "multi_queue")
	}
	if err := ipCommand(args...); err != nil {
		return nil, err
	}
	if err := ipCommand("-n", n.Name, "link", "set", tap, "up"); err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

// Delete removes the TAP and the namespace.
func (n *Netns) Delete() error {
	_ = ipCommand("-n", n.Name, "link", "del", n.Tap)
	return ipCommand("netns", "del", n.Name)
}

// Command returns argv prefixed so that it runs inside the namespace.
func (n *Netns) Command(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", n.Name}, argv...)
}

// Do runs f on a dedicated OS thread that has joined the namespace. File
// descriptors f creates (sockets) stay bound to the namespace afterwards.
func (n *Netns) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: if restoring its namespace failed it must
		// die with the goroutine rather than serve other goroutines.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("testguest: open own netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", n.Name))
		if err != nil {
			errc <- fmt.Errorf("testguest: open netns %s: %w", n.Name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("testguest: setns %s: %w", n.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("testguest: restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Interface returns the index of the named interface inside the namespace.
func (n *Netns) Interface(name string) (int, error) {
	var idx int
	err := n.Do(func() error {
		var err error
		idx, err = interfaceIndex(name)
		return err
	})
	return idx, err
}

// WaitOperUp waits until interface ifname of the namespace, if it has a
// carrier (LOWER_UP: for a TAP, a VMM attached to it), reports operational
// state UP (or UNKNOWN, for devices without carrier reporting): the kernel
// has then switched its transmit queue on. Frames sent while the carrier is
// on but the link-watch event is still pending (it waits for the RTNL lock,
// seconds while namespaces are being deleted) are dropped silently by the
// noop qdisc. Without a carrier there is nothing to wait for. Gives up after
// 30 s.
func (n *Netns) WaitOperUp(ctx context.Context, ifname string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	state := "?"
	for {
		out, err := exec.CommandContext(ctx, "ip", "-n", n.Name, "-j", "link", "show", "dev", ifname).Output()
		var links []struct {
			Flags     []string `json:"flags"`
			OperState string   `json:"operstate"`
		}
		if err == nil && json.Unmarshal(out, &links) == nil && len(links) == 1 {
			l := links[0]
			state = l.OperState
			if l.OperState == "UP" || l.OperState == "UNKNOWN" || !slices.Contains(l.Flags, "LOWER_UP") {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testguest: %s in %s has a carrier but is not up (operstate %s): %w", ifname, n.Name, state, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func ipCommand(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testguest: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Names of the interfaces AddVerifiedPath creates inside the namespace.
const (
	VerifiedBridge = "tgbr0"
	VerifiedInject = "tgv0" // frames written here reach the TAP checksum-verified
	verifiedPort   = "tgv1"
)

// AddVerifiedPath gives the TAP a second, checksum-verifying way in: a veth
// pair whose receiving end (GRO on, so the kernel verifies TCP checksums and
// marks good frames CHECKSUM_UNNECESSARY) is bridged with the TAP. A frame
// written to VerifiedInject reaches the VMM with VIRTIO_NET_HDR_F_DATA_VALID
// if its TCP checksum is good, with flags 0 otherwise, as frames forwarded
// from a NIC with receive checksum offload do. (A packet socket's own virtio
// header cannot ask for DATA_VALID: the kernel ignores that flag on
// transmit.) The sending end has TSO off, else veth bypasses GRO. Frames
// written back to back may be merged by GRO into one GSO frame: space them.
func (n *Netns) AddVerifiedPath() error {
	steps := [][]string{
		{"link", "add", VerifiedInject, "type", "veth", "peer", "name", verifiedPort},
		{"link", "add", VerifiedBridge, "type", "bridge", "mcast_snooping", "0"},
		// No multicast: the kernel would send IGMP reports to the guest.
		{"link", "set", VerifiedInject, "multicast", "off"},
		{"link", "set", verifiedPort, "multicast", "off"},
		{"link", "set", VerifiedBridge, "multicast", "off"},
		{"link", "set", verifiedPort, "master", VerifiedBridge},
		{"link", "set", n.Tap, "master", VerifiedBridge},
		{"link", "set", VerifiedInject, "up"},
		{"link", "set", verifiedPort, "up"},
		{"link", "set", VerifiedBridge, "up"},
	}
	for _, s := range steps {
		if err := ipCommand(append([]string{"-n", n.Name}, s...)...); err != nil {
			return err
		}
	}
	for _, args := range [][]string{{"-K", VerifiedInject, "tso", "off"}, {"-K", verifiedPort, "gro", "on"}} {
		argv := n.Command(append([]string{"ethtool"}, args...)...)
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("testguest: ethtool %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

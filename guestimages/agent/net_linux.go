package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// waitIface waits until iface exists (drivers probe asynchronously on some
// kernels).
func waitIface(ctx context.Context, sysRoot, iface string) error {
	for {
		if _, err := os.Stat(filepath.Join(sysRoot, "class/net", iface)); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no interface %s: %w", iface, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// linkUp sets IFF_UP on iface.
func linkUp(fd int, iface string) error {
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// setIPv4 assigns addr (with its prefix length) to iface.
func setIPv4(fd int, iface string, addr netip.Prefix) error {
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		return err
	}
	a := addr.Addr().As4()
	if err := ifr.SetInet4Addr(a[:]); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
		return fmt.Errorf("SIOCSIFADDR: %w", err)
	}
	m := net.CIDRMask(addr.Bits(), 32)
	if err := ifr.SetInet4Addr(m); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, ifr); err != nil {
		return fmt.Errorf("SIOCSIFNETMASK: %w", err)
	}
	return nil
}

// in6Ifreq is struct in6_ifreq.
type in6Ifreq struct {
	addr      [16]byte
	prefixLen uint32
	ifindex   int32
}

// setIPv6 assigns addr to iface with SIOCSIFADDR on an AF_INET6 socket.
func setIPv6(iface string, addr netip.Prefix) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket(AF_INET6): %w", err)
	}
	defer unix.Close(fd)
	req := in6Ifreq{addr: addr.Addr().As16(), prefixLen: uint32(addr.Bits()), ifindex: int32(ifi.Index)}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCSIFADDR, uintptr(unsafe.Pointer(&req)))
	runtime.KeepAlive(&req)
	if errno != 0 && errno != unix.EEXIST {
		return fmt.Errorf("SIOCSIFADDR(inet6): %w", errno)
	}
	return nil
}

// rtentry is struct rtentry of <net/route.h> on 64-bit Linux.
type rtentry struct {
	pad1    uint64
	dst     unix.RawSockaddrInet4
	gateway unix.RawSockaddrInet4
	genmask unix.RawSockaddrInet4
	flags   uint16
	pad2    int16
	_       uint32
	pad3    uint64
	pad4    uintptr
	metric  int16
	_       [3]int16
	dev     *byte
	mtu     uint64
	window  uint64
	irtt    uint16
	_       [3]uint16
}

// addDefaultRoute adds an IPv4 default route through gw on iface.
func addDefaultRoute(fd int, iface string, gw netip.Addr) error {
	dev, err := unix.BytePtrFromString(iface)
	if err != nil {
		return err
	}
	rt := rtentry{flags: unix.RTF_UP | unix.RTF_GATEWAY, dev: dev}
	rt.dst.Family = unix.AF_INET
	rt.genmask.Family = unix.AF_INET
	rt.gateway.Family = unix.AF_INET
	rt.gateway.Addr = gw.As4()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCADDRT, uintptr(unsafe.Pointer(&rt)))
	runtime.KeepAlive(&rt)
	runtime.KeepAlive(dev)
	if errno != 0 && errno != unix.EEXIST {
		return fmt.Errorf("SIOCADDRT: %w", errno)
	}
	return nil
}

// waitCarrier waits until iface reports carrier (virtio-net's STATUS).
func waitCarrier(ctx context.Context, sysRoot, iface string) error {
	p := filepath.Join(sysRoot, "class/net", iface, "carrier")
	for {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: no carrier: %w", iface, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readMAC returns the interface's MAC address as sysfs shows it.
func readMAC(sysRoot, iface string) (string, error) {
	b, err := os.ReadFile(filepath.Join(sysRoot, "class/net", iface, "address"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// readStat reads one counter of /sys/class/net/IFACE/statistics.
func readStat(sysRoot, iface, name string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(sysRoot, "class/net", iface, "statistics", name))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("statistics/%s: %w", name, err)
	}
	return n, nil
}

// readFeatureBits reads the negotiated virtio feature bit string of iface's
// device.
func readFeatureBits(sysRoot, iface string) (string, error) {
	b, err := os.ReadFile(filepath.Join(sysRoot, "class/net", iface, "device/features"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s has no virtio device features: %w", iface, err)
		}
		return "", err
	}
	return string(b), nil
}

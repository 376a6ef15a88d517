package tap

import (
	"fmt"
	"net"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// controlSocket returns an AF_INET datagram socket in the network namespace of the tap behind tunFD, for the
// SIOC[GS]IF* link ioctls. If the tap lives in another namespace than the calling thread (an fd handed over by a
// manager), the socket is created on a throw-away OS thread that joins the tap's namespace.
func controlSocket(tunFD int) (int, error) {
	nsfd, err := ioctlVal(tunFD, reqTUNGETDEVNETNS, 0)
	if err != nil {
		// Old kernel or no CAP_NET_ADMIN over the namespace: use ours.
		return newControlSocket()
	}
	defer unix.Close(nsfd)
	if same, err := sameNetns(nsfd); err == nil && same {
		return newControlSocket()
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is never unlocked: it exits with the goroutine, so its changed namespace cannot leak.
		runtime.LockOSThread()
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			ch <- result{-1, fmt.Errorf("setns into the tap's network namespace: %w", err)}
			return
		}
		fd, err := newControlSocket()
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func newControlSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("AF_INET control socket: %w", err)
	}
	return fd, nil
}

// sameNetns reports whether nsfd is the calling thread's network namespace.
func sameNetns(nsfd int) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(nsfd, &a); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &b); err != nil {
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// linkIoctl runs a SIOC* request on the control socket.
func (t *Tap) linkIoctl(op string, req uintptr, r *ifreq) error {
	if t.closed {
		return ErrClosed
	}
	if t.ctl < 0 {
		return &Error{Device: t.name, Op: op, Err: unix.ENOTSUP, Hint: "no control socket in the tap's namespace"}
	}
	if err := ioctlPtr(t.ctl, req, unsafe.Pointer(r)); err != nil {
		return newError(t.name, op, err)
	}
	return nil
}

// SetUp brings the link administratively up (up=true) or down with SIOCSIFFLAGS, like `ip link set NAME up`.
func (t *Tap) SetUp(up bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := newIfreq(t.name)
	if err := t.linkIoctl("SIOCGIFFLAGS", unix.SIOCGIFFLAGS, &r); err != nil {
		return err
	}
	f := r.flags()
	if up {
		f |= unix.IFF_UP
	} else {
		f &^= unix.IFF_UP
	}
	r.setFlags(f)
	return t.linkIoctl("SIOCSIFFLAGS", unix.SIOCSIFFLAGS, &r)
}

// IsUp reports whether the link is administratively up (IFF_UP).
func (t *Tap) IsUp() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := newIfreq(t.name)
	if err := t.linkIoctl("SIOCGIFFLAGS", unix.SIOCGIFFLAGS, &r); err != nil {
		return false, err
	}
	return r.flags()&unix.IFF_UP != 0, nil
}

// MTU returns the interface MTU (SIOCGIFMTU).
func (t *Tap) MTU() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := newIfreq(t.name)
	if err := t.linkIoctl("SIOCGIFMTU", unix.SIOCGIFMTU, &r); err != nil {
		return 0, err
	}
	return int(r.int32()), nil
}

// SetMTU sets the interface MTU (SIOCSIFMTU); the tap accepts 68..65521.
func (t *Tap) SetMTU(mtu int) error {
	if mtu <= 0 || mtu > 65535 {
		return fmt.Errorf("tap %s: MTU %d out of range", t.name, mtu)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r := newIfreq(t.name)
	r.setInt32(int32(mtu))
	return t.linkIoctl("SIOCSIFMTU", unix.SIOCSIFMTU, &r)
}

// MAC returns the host-side MAC address of the tap (SIOCGIFHWADDR on the tun fd). This is not the guest's MAC.
func (t *Tap) MAC() (net.HardwareAddr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	var r ifreq
	if err := ioctlPtr(t.queues[0].fd, unix.SIOCGIFHWADDR, unsafe.Pointer(&r)); err != nil {
		return nil, newError(t.name, "SIOCGIFHWADDR", err)
	}
	// struct sockaddr: sa_family (2 bytes) then sa_data; the MAC is the first 6 bytes of sa_data.
	return net.HardwareAddr(append([]byte(nil), r.data[2:8]...)), nil
}

// SetMAC sets the host-side MAC address of the tap (SIOCSIFHWADDR on the tun fd).
func (t *Tap) SetMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("tap %s: MAC %v is not 6 bytes", t.name, mac)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	var r ifreq
	*(*uint16)(unsafe.Pointer(&r.data[0])) = unix.ARPHRD_ETHER
	copy(r.data[2:8], mac)
	if err := ioctlPtr(t.queues[0].fd, unix.SIOCSIFHWADDR, unsafe.Pointer(&r)); err != nil {
		return newError(t.name, "SIOCSIFHWADDR", err)
	}
	return nil
}

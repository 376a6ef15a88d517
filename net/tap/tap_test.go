package tap

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// tunIff returns the TUNGETIFF name and flags of fd.
func tunIff(t testing.TB, fd int) (string, uint16) {
	t.Helper()
	var r ifreq
	require.NoError(t, ioctlPtr(fd, reqTUNGETIFF, unsafe.Pointer(&r)))
	return r.ifName(), r.flags()
}

func TestOpenSingleQueue(t *testing.T) {
	ns := newNetns(t)
	tp := ns.open(t, Config{Name: "rt%d"})
	require.Equal(t, "rt0", tp.Name())
	require.Equal(t, 1, tp.NumQueues())
	require.False(t, tp.MultiQueue())
	require.False(t, tp.Persistent())

	name, flags := tunIff(t, tp.Queue(0).Fd())
	require.Equal(t, "rt0", name)
	require.Equal(t, uint16(flagTAP|flagNoPI|flagVnetHdr), flags&(flagTAP|flagTUN|flagNoPI|flagVnetHdr|flagMultiQueue))

	hdr, err := ioctlGetInt(tp.Queue(0).Fd(), reqTUNGETVNETHDRSZ)
	require.NoError(t, err)
	require.EqualValues(t, 12, hdr)
	require.Equal(t, 12, tp.VnetHdrSize())

	fl, err := unix.FcntlInt(uintptr(tp.Queue(0).Fd()), unix.F_GETFL, 0)
	require.NoError(t, err)
	require.NotZero(t, fl&unix.O_NONBLOCK, "fd must be non-blocking")

	sb, err := tp.SndBuf()
	require.NoError(t, err)
	require.Equal(t, math.MaxInt32, sb)
	require.NoError(t, tp.SetSndBuf(1<<20))
	sb, err = tp.SndBuf()
	require.NoError(t, err)
	require.Equal(t, 1<<20, sb)

	// Kernel 6.2+ accepts every optional offload; UFO is accepted (and ignored) by all current kernels.
	caps := tp.Capabilities()
	require.True(t, caps.UFO)
	require.Equal(t, Offload(0), tp.Offload())

	mac, err := tp.MAC()
	require.NoError(t, err)
	require.Len(t, mac, 6)
	require.NotEqual(t, "00:00:00:00:00:00", mac.String())
	require.NoError(t, tp.SetMAC(guestMAC))
	require.Contains(t, ns.run(t, "ip", "link", "show", "rt0"), "link/ether 52:54:00:12:34:56")

	require.NoError(t, tp.SetMTU(9000))
	mtu, err := tp.MTU()
	require.NoError(t, err)
	require.Equal(t, 9000, mtu)
	require.Contains(t, ns.run(t, "ip", "link", "show", "rt0"), "mtu 9000")

	up, err := tp.IsUp()
	require.NoError(t, err)
	require.False(t, up)
	require.NoError(t, tp.SetUp(true))
	require.Contains(t, ns.run(t, "ip", "link", "show", "rt0"), ",UP")
	up, err = tp.IsUp()
	require.NoError(t, err)
	require.True(t, up)
	require.NoError(t, tp.SetUp(false))
	require.NotContains(t, ns.run(t, "ip", "link", "show", "rt0"), ",UP")

	require.NoError(t, tp.SetVnetHdrSize(VnetHdrSizeLegacy))
	hdr, err = ioctlGetInt(tp.Queue(0).Fd(), reqTUNGETVNETHDRSZ)
	require.NoError(t, err)
	require.EqualValues(t, 10, hdr)
	require.Error(t, tp.SetVnetHdrSize(11))

	// Nothing queued: a read does not block.
	buf := make([]byte, 2048)
	_, err = tp.Queue(0).Read(buf)
	require.ErrorIs(t, err, ErrWouldBlock)
	require.ErrorIs(t, err, unix.EAGAIN)

	// Closing the only fd of a non-persistent tap removes it.
	require.NoError(t, tp.Close())
	require.NoError(t, tp.Close())
	_, err = tp.Queue(0).Read(buf)
	require.ErrorIs(t, err, ErrClosed)
	_, err = tp.SetOffload(OffloadCSUM)
	require.ErrorIs(t, err, ErrClosed)
	out, _ := ns.runAllowFail("ip", "link", "show", "rt0")
	require.Contains(t, out, "does not exist")
}

// runAllowFail runs a command in the namespace and returns its output and error.
func (n *netns) runAllowFail(args ...string) (string, error) {
	out, err := execCommand("ip", append([]string{"netns", "exec", n.name}, args...)...)
	return out, err
}

func TestOpenErrors(t *testing.T) {
	ns := newNetns(t)

	t.Run("missing /dev/net/tun", func(t *testing.T) {
		old := tunPath
		tunPath = "/nonexistent/net/tun"
		defer func() { tunPath = old }()
		_, err := Open(Config{Name: "nodev0"})
		var te *Error
		require.ErrorAs(t, err, &te)
		require.ErrorIs(t, err, unix.ENOENT)
		require.Equal(t, "nodev0", te.Device)
		require.Contains(t, err.Error(), "open /dev/net/tun")
		require.Contains(t, err.Error(), "modprobe tun")
	})

	t.Run("busy single-queue tap", func(t *testing.T) {
		ns.open(t, Config{Name: "busy0"})
		err := ns.do(func() error {
			tp, err := Open(Config{Name: "busy0"})
			if err == nil {
				_ = tp.Close()
			}
			return err
		})
		require.ErrorIs(t, err, unix.EBUSY)
		require.Contains(t, err.Error(), "tap busy0: TUNSETIFF")
		require.Contains(t, err.Error(), "busy")
	})

	t.Run("multiqueue on a non-multiqueue persistent tap", func(t *testing.T) {
		ns.run(t, "ip", "tuntap", "add", "dev", "pers0", "mode", "tap", "vnet_hdr")
		defer ns.run(t, "ip", "link", "del", "pers0")
		err := ns.do(func() error {
			tp, err := Open(Config{Name: "pers0", Queues: 2})
			if err == nil {
				_ = tp.Close()
			}
			return err
		})
		require.ErrorIs(t, err, unix.EINVAL)
		require.Contains(t, err.Error(), "TUNSETIFF")
		require.Contains(t, err.Error(), "multi_queue")
	})

	t.Run("no CAP_NET_ADMIN", func(t *testing.T) {
		err := ns.do(func() error {
			// Drop CAP_NET_ADMIN from this (throw-away) thread only.
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var data [2]unix.CapUserData
			if err := unix.Capget(&hdr, &data[0]); err != nil {
				return err
			}
			data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
			if err := unix.Capset(&hdr, &data[0]); err != nil {
				return err
			}
			tp, err := Open(Config{Name: "noperm0"})
			if err == nil {
				_ = tp.Close()
			}
			return err
		})
		require.ErrorIs(t, err, unix.EPERM)
		require.Contains(t, err.Error(), "tap noperm0: TUNSETIFF")
		require.Contains(t, err.Error(), "CAP_NET_ADMIN")
	})

	t.Run("bad config", func(t *testing.T) {
		for _, cfg := range []Config{
			{Name: "x", Queues: MaxQueues + 1},
			{Name: "x", Queues: -1},
			{Name: "x", VnetHdrSize: 16},
			{Name: strings.Repeat("x", 16)},
			{FDs: []int{1, 2}, Queues: 3},
			{FDs: []int{-1}},
		} {
			err := ns.do(func() error {
				tp, err := Open(cfg)
				if err == nil {
					_ = tp.Close()
				}
				return err
			})
			require.Error(t, err, "%+v", cfg)
		}
	})
}

// rawTun opens /dev/net/tun inside the namespace and attaches it with TUNSETIFF(name, flags) unless flags is 0.
func (n *netns) rawTun(t testing.TB, name string, flags uint16) int {
	t.Helper()
	var fd int
	err := n.do(func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if flags == 0 {
			return nil
		}
		r := newIfreq(name)
		r.setFlags(flags)
		return ioctlPtr(fd, reqTUNSETIFF, unsafe.Pointer(&r))
	})
	require.NoError(t, err)
	return fd
}

func TestAdoptFD(t *testing.T) {
	ns := newNetns(t)
	fd := ns.rawTun(t, "adopt0", flagTAP|flagNoPI|flagVnetHdr)
	fds, err := ParseFDs(fmt.Sprint(fd))
	require.NoError(t, err)
	tp := ns.open(t, Config{FDs: fds})
	require.Equal(t, "adopt0", tp.Name())
	require.Equal(t, fd, tp.Queue(0).Fd())
	hdr, err := ioctlGetInt(fd, reqTUNGETVNETHDRSZ)
	require.NoError(t, err)
	require.EqualValues(t, 12, hdr)
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	require.NoError(t, err)
	require.NotZero(t, fl&unix.O_NONBLOCK)
	require.NoError(t, tp.SetUp(true))
	require.Contains(t, ns.run(t, "ip", "link", "show", "adopt0"), ",UP")
	_, err = tp.Queue(0).Read(make([]byte, 100))
	require.ErrorIs(t, err, ErrWouldBlock)
}

func TestAdoptMultiqueuePersistent(t *testing.T) {
	ns := newNetns(t)
	ns.run(t, "ip", "tuntap", "add", "dev", "mqp0", "mode", "tap", "vnet_hdr", "multi_queue")
	t.Cleanup(func() { _, _ = ns.runAllowFail("ip", "link", "del", "mqp0") })
	fl := uint16(flagTAP | flagNoPI | flagVnetHdr | flagMultiQueue)
	a, b := ns.rawTun(t, "mqp0", fl), ns.rawTun(t, "mqp0", fl)
	fds, err := ParseFDs(fmt.Sprintf("%d:%d", a, b))
	require.NoError(t, err)
	tp := ns.open(t, Config{FDs: fds, Name: "mqp0"})
	require.Equal(t, 2, tp.NumQueues())
	require.True(t, tp.MultiQueue())
	require.True(t, tp.Persistent())
	require.NoError(t, tp.Close())
	// Persistence is the user's choice: the device survives Close.
	require.Contains(t, ns.run(t, "ip", "link", "show", "mqp0"), "mqp0")
}

func TestAdoptErrors(t *testing.T) {
	ns := newNetns(t)
	adopt := func(cfg Config) error {
		return ns.do(func() error {
			tp, err := Open(cfg)
			if err == nil {
				_ = tp.Close()
			}
			return err
		})
	}

	t.Run("not a tun fd", func(t *testing.T) {
		f, err := os.CreateTemp(t.TempDir(), "x")
		require.NoError(t, err)
		defer f.Close()
		err = adopt(Config{FDs: []int{int(f.Fd())}})
		require.ErrorIs(t, err, unix.ENOTTY)
		require.Contains(t, err.Error(), fmt.Sprintf("tap fd %d: TUNGETIFF", f.Fd()))
		require.Contains(t, err.Error(), "not a /dev/net/tun descriptor")
	})

	t.Run("unattached tun fd", func(t *testing.T) {
		fd := ns.rawTun(t, "", 0)
		defer unix.Close(fd)
		err := adopt(Config{FDs: []int{fd}})
		require.ErrorIs(t, err, unix.EBADFD)
		require.Contains(t, err.Error(), "not attached")
	})

	t.Run("tun instead of tap", func(t *testing.T) {
		fd := ns.rawTun(t, "tun0", flagTUN|flagNoPI|flagVnetHdr)
		defer unix.Close(fd)
		err := adopt(Config{FDs: []int{fd}})
		require.Error(t, err)
		require.Contains(t, err.Error(), "tap tun0 (fd")
		require.Contains(t, err.Error(), "not a TAP")
	})

	t.Run("no vnet_hdr", func(t *testing.T) {
		fd := ns.rawTun(t, "novnet0", flagTAP|flagNoPI)
		defer unix.Close(fd)
		err := adopt(Config{FDs: []int{fd}})
		require.Error(t, err)
		require.Contains(t, err.Error(), "IFF_VNET_HDR")
	})

	t.Run("name mismatch", func(t *testing.T) {
		fd := ns.rawTun(t, "named0", flagTAP|flagNoPI|flagVnetHdr)
		defer unix.Close(fd)
		err := adopt(Config{FDs: []int{fd}, Name: "other0"})
		require.Error(t, err)
		require.Contains(t, err.Error(), "ifname=other0")
	})

	t.Run("two fds of a single-queue tap", func(t *testing.T) {
		fd1 := ns.rawTun(t, "sq0", flagTAP|flagNoPI|flagVnetHdr)
		defer unix.Close(fd1)
		fd2, err := unix.Dup(fd1)
		require.NoError(t, err)
		defer unix.Close(fd2)
		err = adopt(Config{FDs: []int{fd1, fd2}})
		require.Error(t, err)
		require.Contains(t, err.Error(), "not multiqueue")
		err = adopt(Config{FDs: []int{fd1, fd1}})
		require.Error(t, err)
	})
}

func TestSetOffloadEthtool(t *testing.T) {
	requireTapEnv(t)
	requireTool(t, "ethtool", "ethtool")
	ns := newNetns(t)
	tp := ns.open(t, Config{Name: "off0"})

	type feat = map[string]string
	check := func(want feat) {
		t.Helper()
		got := ns.ethtoolFeatures(t, "off0")
		for k, v := range want {
			require.Equal(t, v, got[k], "ethtool -k off0: %s", k)
		}
	}
	check(feat{"tx-checksumming": "off", "tcp-segmentation-offload": "off"})

	// NetKVM's RSC profile: the seed's host verification expects tx-checksumming and TSO on.
	applied, err := tp.SetGuestOffloads(GuestOffloadsFromBits(1<<1 | 1<<7 | 1<<8 | 1<<61))
	require.NoError(t, err)
	require.Equal(t, OffloadCSUM|OffloadTSO4|OffloadTSO6, applied)
	check(feat{"tx-checksumming": "on", "tx-checksum-ip-generic": "on", "tcp-segmentation-offload": "on",
		"tx-tcp-segmentation": "on", "tx-tcp6-segmentation": "on", "tx-tcp-ecn-segmentation": "off"})

	applied, err = tp.SetOffload(OffloadCSUM | OffloadTSO4 | OffloadTSOECN)
	require.NoError(t, err)
	require.Equal(t, OffloadCSUM|OffloadTSO4|OffloadTSOECN, applied)
	check(feat{"tx-checksumming": "on", "tx-tcp-segmentation": "on", "tx-tcp6-segmentation": "off",
		"tx-tcp-ecn-segmentation": "on"})

	applied, err = tp.SetOffload(OffloadCSUM)
	require.NoError(t, err)
	require.Equal(t, OffloadCSUM, applied)
	check(feat{"tx-checksumming": "on", "tcp-segmentation-offload": "off"})

	// USO shows as tx-udp-segmentation (both USO4 and USO6 needed).
	if tp.Capabilities().USO {
		applied, err = tp.SetOffload(OffloadCSUM | OffloadUSO4 | OffloadUSO6)
		require.NoError(t, err)
		require.Equal(t, OffloadCSUM|OffloadUSO4|OffloadUSO6, applied)
		check(feat{"tx-udp-segmentation": "on", "tcp-segmentation-offload": "off"})
	}

	// Without CSUM nothing else is applied.
	applied, err = tp.SetOffload(OffloadTSO4 | OffloadTSO6)
	require.NoError(t, err)
	require.Equal(t, Offload(0), applied)
	require.Equal(t, Offload(0), tp.Offload())
	check(feat{"tx-checksumming": "off", "tcp-segmentation-offload": "off", "tx-udp-segmentation": "off"})
}

// fakeOffloadKernel replaces TUNSETOFFLOAD with a version that rejects the flags in reject with EINVAL (as a
// kernel older than 6.2 does for USO) and records every request.
func fakeOffloadKernel(t *testing.T, reject *Offload) *[]Offload {
	var calls []Offload
	old := setOffloadIoctl
	setOffloadIoctl = func(fd int, o Offload) error {
		calls = append(calls, o)
		if o&*reject != 0 {
			return unix.EINVAL
		}
		return old(fd, o)
	}
	t.Cleanup(func() { setOffloadIoctl = old })
	return &calls
}

func TestSetOffloadUSOFallback(t *testing.T) {
	ns := newNetns(t)
	all := OffloadCSUM | OffloadTSO4 | OffloadTSO6 | OffloadUFO | OffloadUSO4 | OffloadUSO6

	t.Run("probe at open", func(t *testing.T) {
		reject := offloadUSO
		calls := fakeOffloadKernel(t, &reject)
		tp := ns.open(t, Config{Name: "uso0"})
		require.False(t, tp.Capabilities().USO)
		require.True(t, tp.Capabilities().UFO)
		*calls = nil
		applied, err := tp.SetOffload(all)
		require.NoError(t, err)
		require.Equal(t, all&^offloadUSO, applied)
		// Known-unsupported flags are masked without a failing ioctl.
		require.Equal(t, []Offload{all &^ offloadUSO}, *calls)
	})

	t.Run("rejected later", func(t *testing.T) {
		var reject Offload
		calls := fakeOffloadKernel(t, &reject)
		tp := ns.open(t, Config{Name: "uso1"})
		require.True(t, tp.Capabilities().USO)
		reject = offloadUSO
		*calls = nil
		applied, err := tp.SetOffload(all)
		require.NoError(t, err)
		require.Equal(t, all&^offloadUSO, applied)
		require.Equal(t, []Offload{all, all &^ offloadUSO}, *calls)
		require.False(t, tp.Capabilities().USO)
		require.Equal(t, applied, tp.Offload())
		// Remembered: the next call does not try USO again.
		*calls = nil
		applied, err = tp.SetOffload(OffloadCSUM | OffloadUSO4)
		require.NoError(t, err)
		require.Equal(t, OffloadCSUM, applied)
		require.Equal(t, []Offload{OffloadCSUM}, *calls)
	})

	t.Run("UFO too", func(t *testing.T) {
		var reject Offload
		fakeOffloadKernel(t, &reject)
		tp := ns.open(t, Config{Name: "uso2"})
		reject = offloadUSO | OffloadUFO
		applied, err := tp.SetOffload(all)
		require.NoError(t, err)
		require.Equal(t, OffloadCSUM|OffloadTSO4|OffloadTSO6, applied)
	})

	t.Run("everything rejected", func(t *testing.T) {
		var reject Offload
		fakeOffloadKernel(t, &reject)
		tp := ns.open(t, Config{Name: "uso3"})
		_, err := tp.SetOffload(OffloadCSUM)
		require.NoError(t, err)
		reject = OffloadTSO4
		_, err = tp.SetOffload(OffloadCSUM | OffloadTSO4)
		require.ErrorIs(t, err, unix.EINVAL)
		require.Contains(t, err.Error(), "tap uso3: TUNSETOFFLOAD csum|tso4")
		require.Equal(t, OffloadCSUM, tp.Offload(), "the previous flags stay applied")
	})
}

func TestMultiqueueOpen(t *testing.T) {
	ns := newNetns(t)
	tp := ns.open(t, Config{Name: "mq%d", Queues: 2})
	require.Equal(t, "mq0", tp.Name())
	require.True(t, tp.MultiQueue())
	require.Equal(t, 2, tp.NumQueues())
	for i, q := range tp.Queues() {
		require.Equal(t, i, q.Index())
		name, flags := tunIff(t, q.Fd())
		require.Equal(t, "mq0", name)
		require.NotZero(t, flags&flagMultiQueue)
		hdr, err := ioctlGetInt(q.Fd(), reqTUNGETVNETHDRSZ)
		require.NoError(t, err)
		require.EqualValues(t, 12, hdr)
	}
	out := ns.run(t, "ip", "-d", "link", "show", "mq0")
	require.Contains(t, out, "multi_queue")

	// A third opener with queues=1 is refused (flags differ).
	err := ns.do(func() error {
		tp2, err := Open(Config{Name: "mq0"})
		if err == nil {
			_ = tp2.Close()
		}
		return err
	})
	require.ErrorIs(t, err, unix.EINVAL)

	require.Equal(t, 2, tp.ActiveQueues())
	require.Error(t, tp.SetActiveQueues(0))
	require.Error(t, tp.SetActiveQueues(3))
	require.NoError(t, tp.SetActiveQueues(1))
	require.False(t, tp.Queue(1).Attached())
	// The kernel steers nothing to a detached queue.
	_, err = tp.Queue(1).Read(make([]byte, 100))
	require.ErrorIs(t, err, ErrWouldBlock)
	require.Contains(t, ns.run(t, "ip", "-d", "link", "show", "mq0"), "numqueues 1 numdisabled 1")
	require.NoError(t, tp.SetActiveQueues(2))
	require.Contains(t, ns.run(t, "ip", "-d", "link", "show", "mq0"), "numqueues 2 numdisabled 0")
	require.True(t, tp.Queue(1).Attached())
	_, err = tp.Queue(1).Read(make([]byte, 100))
	require.ErrorIs(t, err, ErrWouldBlock)
}

// TestAdoptFromOtherNamespace adopts a tap fd from a thread outside the tap's namespace, as a VMM handed an fd by
// a manager does: the link ioctls must still reach the device (the control socket joins the tap's namespace).
func TestAdoptFromOtherNamespace(t *testing.T) {
	ns := newNetns(t)
	fd := ns.rawTun(t, "far0", flagTAP|flagNoPI|flagVnetHdr)
	tp, err := Open(Config{FDs: []int{fd}}) // on the test's own (initial-namespace) thread
	require.NoError(t, err)
	defer tp.Close()
	require.Equal(t, "far0", tp.Name())
	require.NoError(t, tp.SetMTU(1400))
	require.NoError(t, tp.SetUp(true))
	out := ns.run(t, "ip", "link", "show", "far0")
	require.Contains(t, out, "mtu 1400")
	require.Contains(t, out, ",UP")
}

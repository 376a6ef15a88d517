// Package tap is the Linux TAP backend of the virtio-net device: it opens (or adopts) a multiqueue TAP with a
// virtio-net header, maps the guest's receive offloads to TUNSETOFFLOAD as QEMU's -netdev tap does, and moves
// frames with non-blocking, allocation-free readv/writev.
//
// Every frame read or written starts with a virtio-net header of VnetHdrSize bytes (12 by default: struct
// virtio_net_hdr_v1, which is also the mrg_rxbuf layout), followed by the Ethernet frame.
package tap

import (
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Header sizes accepted by TUNSETVNETHDRSZ for the virtio-net header layouts.
const (
	// VnetHdrSizeLegacy is struct virtio_net_hdr (legacy device without mrg_rxbuf).
	VnetHdrSizeLegacy = 10
	// VnetHdrSizeV1 is struct virtio_net_hdr_v1 / virtio_net_hdr_mrg_rxbuf (virtio 1, or legacy with mrg_rxbuf).
	VnetHdrSizeV1 = 12
	// VnetHdrSizeHash is struct virtio_net_hdr_v1_hash (VIRTIO_NET_F_HASH_REPORT).
	VnetHdrSizeHash = 20
	// VnetHdrSizeTunnel is the header with UDP tunnel GSO fields.
	VnetHdrSizeTunnel = 24
)

// MaxQueues is the maximum number of queues of a multiqueue tap (the kernel's MAX_TAP_QUEUES).
const MaxQueues = 256

// tunPath is the clone device; tests point it elsewhere to exercise the missing-device error.
var tunPath = "/dev/net/tun"

// Config selects the tap to open or adopt.
type Config struct {
	// Name is the interface name (ifname=). It may contain a "%d" template; empty means "tap%d". When FDs are
	// given, a non-empty Name must match the name of the adopted device.
	Name string
	// Queues is the number of queues (queues=); 0 means 1, or len(FDs) when FDs are given. More than one queue
	// opens the device with IFF_MULTI_QUEUE, one fd per queue.
	Queues int
	// FDs are already-open /dev/net/tun descriptors to adopt (fd=N or fds=a:b:c), one per queue. The Tap takes
	// ownership and closes them in Close.
	FDs []int
	// VnetHdrSize is the virtio-net header length set with TUNSETVNETHDRSZ; 0 means VnetHdrSizeV1 (12).
	VnetHdrSize int
	// SndBuf is the TUNSETSNDBUF value (sndbuf=); 0 means INT_MAX (no flow control), as QEMU's default.
	SndBuf int
	// Logger receives warnings (offload fallbacks); nil means slog.Default().
	Logger *slog.Logger
}

// Tap is an open TAP device with one Queue per fd. Device-wide settings (offloads, sndbuf, link state) are
// applied through queue 0, which is never detached.
type Tap struct {
	name    string
	flags   uint16 // TUNGETIFF flags
	hdrSize atomic.Int32
	queues  []*Queue
	ctl     int // AF_INET datagram socket in the tap's network namespace (link ioctls), or -1
	log     *slog.Logger

	mu       sync.Mutex
	caps     Capabilities
	offload  Offload
	rejected Offload // flags the kernel refused (probe or SetOffload fallback)
	active   int     // attached queues
	closed   bool
}

// Open opens the TAP described by cfg: it adopts cfg.FDs when given, otherwise it opens /dev/net/tun once per
// queue with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (plus IFF_MULTI_QUEUE for more than one queue), creating the device
// if it does not exist. Persistence is left as configured by whoever created the device. Then it sets the header
// size and send buffer on every queue, probes the optional offloads and clears the offloads (TUN offload 0).
func Open(cfg Config) (*Tap, error) {
	hdr := cfg.VnetHdrSize
	if hdr == 0 {
		hdr = VnetHdrSizeV1
	}
	if err := checkHdrSize(hdr); err != nil {
		return nil, err
	}
	queues := cfg.Queues
	if len(cfg.FDs) > 0 {
		if queues != 0 && queues != len(cfg.FDs) {
			return nil, fmt.Errorf("tap: queues=%d does not match the %d fds given", queues, len(cfg.FDs))
		}
		queues = len(cfg.FDs)
	}
	if queues == 0 {
		queues = 1
	}
	if queues < 0 || queues > MaxQueues {
		return nil, fmt.Errorf("tap: queues=%d out of range 1..%d", queues, MaxQueues)
	}
	t := &Tap{ctl: -1, log: cfg.Logger}
	t.hdrSize.Store(int32(hdr))
	var err error
	if len(cfg.FDs) > 0 {
		err = t.adopt(cfg.Name, cfg.FDs)
	} else {
		err = t.create(cfg.Name, queues)
	}
	if err != nil {
		t.closeFDs()
		return nil, err
	}
	if err := t.setup(cfg); err != nil {
		t.closeFDs()
		return nil, err
	}
	return t, nil
}

func checkHdrSize(n int) error {
	switch n {
	case VnetHdrSizeLegacy, VnetHdrSizeV1, VnetHdrSizeHash, VnetHdrSizeTunnel:
		return nil
	}
	return fmt.Errorf("tap: vnet header size %d not one of 10, 12, 20, 24", n)
}

// create opens /dev/net/tun n times and attaches every fd to the same device.
func (t *Tap) create(name string, n int) error {
	if name == "" {
		name = "tap%d"
	}
	if len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("tap: interface name %q longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	t.name = name
	flags := uint16(flagTAP | flagNoPI | flagVnetHdr)
	if n > 1 {
		flags |= flagMultiQueue
	}
	for i := 0; i < n; i++ {
		fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return newError(name, "open /dev/net/tun", err)
		}
		t.queues = append(t.queues, newQueue(t, i, fd))
		if i == 0 {
			feat, err := ioctlGetInt(fd, reqTUNGETFEATURES)
			if err == nil {
				if feat&flagVnetHdr == 0 {
					return &Error{Device: name, Op: "TUNGETFEATURES", Err: unix.EOPNOTSUPP,
						Hint: "the kernel's tun driver lacks IFF_VNET_HDR"}
				}
				if n > 1 && feat&flagMultiQueue == 0 {
					return &Error{Device: name, Op: "TUNGETFEATURES", Err: unix.EOPNOTSUPP,
						Hint: "the kernel's tun driver lacks IFF_MULTI_QUEUE; use queues=1"}
				}
			}
		}
		req := newIfreq(name)
		req.setFlags(flags)
		if err := ioctlPtr(fd, reqTUNSETIFF, unsafe.Pointer(&req)); err != nil {
			op := "TUNSETIFF"
			if i > 0 {
				op = fmt.Sprintf("TUNSETIFF (queue %d)", i)
			}
			return newError(name, op, err)
		}
		if i == 0 {
			// A "%d" template is resolved by the kernel; the other queues attach by the real name.
			name = req.ifName()
			t.name = name
		}
	}
	t.flags = flags
	return nil
}

// adopt takes over already-open tap fds after checking them with TUNGETIFF.
func (t *Tap) adopt(name string, fds []int) error {
	for i, fd := range fds {
		dev := fmt.Sprintf("fd %d", fd)
		if fd < 0 {
			return &Error{Device: dev, Op: "adopt", Err: unix.EBADF, Hint: "negative fd"}
		}
		for _, prev := range fds[:i] {
			if prev == fd {
				return &Error{Device: dev, Op: "adopt", Err: unix.EINVAL, Hint: "the same fd is given twice"}
			}
		}
		var req ifreq
		if err := ioctlPtr(fd, reqTUNGETIFF, unsafe.Pointer(&req)); err != nil {
			return newError(dev, "TUNGETIFF", err)
		}
		got, flags := req.ifName(), req.flags()
		dev = fmt.Sprintf("%s (fd %d)", got, fd)
		switch {
		case flags&flagTAP == 0:
			return &Error{Device: dev, Op: "adopt", Err: unix.EINVAL, Hint: "the fd is a TUN (layer 3) device, not a TAP"}
		case flags&flagVnetHdr == 0:
			return &Error{Device: dev, Op: "adopt", Err: unix.EINVAL,
				Hint: "the tap was opened without IFF_VNET_HDR (vnet_hdr=off is not supported)"}
		case flags&flagNoPI == 0:
			return &Error{Device: dev, Op: "adopt", Err: unix.EINVAL,
				Hint: "the tap was opened without IFF_NO_PI; frames would carry a packet-information prefix"}
		case len(fds) > 1 && flags&flagMultiQueue == 0:
			return &Error{Device: dev, Op: "adopt", Err: unix.EINVAL,
				Hint: "several fds given but the tap is not multiqueue (IFF_MULTI_QUEUE)"}
		}
		if i == 0 {
			if name != "" && name != got && !strings.Contains(name, "%") {
				return &Error{Device: dev, Op: "adopt", Err: unix.EINVAL,
					Hint: fmt.Sprintf("ifname=%s given but the fd belongs to %s", name, got)}
			}
			t.name, t.flags = got, flags
		} else if got != t.name {
			return &Error{Device: dev, Op: "adopt", Err: unix.EINVAL,
				Hint: fmt.Sprintf("all fds must belong to one tap; fd %d belongs to %s", fds[0], t.name)}
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			return newError(dev, "set O_NONBLOCK", err)
		}
		unix.CloseOnExec(fd)
		t.queues = append(t.queues, newQueue(t, i, fd))
	}
	return nil
}

// setup applies the per-queue and device settings common to created and adopted taps.
func (t *Tap) setup(cfg Config) error {
	for _, q := range t.queues {
		if err := ioctlSetInt(q.fd, reqTUNSETVNETHDRSZ, t.hdrSize.Load()); err != nil {
			return newError(t.name, fmt.Sprintf("TUNSETVNETHDRSZ %d (queue %d)", t.hdrSize.Load(), q.index), err)
		}
		if err := q.initWake(); err != nil {
			return newError(t.name, "eventfd", err)
		}
	}
	sndbuf := cfg.SndBuf
	if sndbuf <= 0 || sndbuf > math.MaxInt32 {
		sndbuf = math.MaxInt32
	}
	if err := ioctlSetInt(t.queues[0].fd, reqTUNSETSNDBUF, int32(sndbuf)); err != nil {
		return newError(t.name, "TUNSETSNDBUF", err)
	}
	if err := t.probe(); err != nil {
		return err
	}
	t.active = len(t.queues)
	ctl, err := controlSocket(t.queues[0].fd)
	if err != nil {
		t.slog().Warn("tap: no control socket; link up/MTU unavailable", "tap", t.name, "err", err)
	} else {
		t.ctl = ctl
	}
	return nil
}

func (t *Tap) slog() *slog.Logger {
	if t.log != nil {
		return t.log
	}
	return slog.Default()
}

// closeFDs closes every descriptor the Tap owns.
func (t *Tap) closeFDs() {
	for _, q := range t.queues {
		q.close()
	}
	if t.ctl >= 0 {
		_ = unix.Close(t.ctl)
		t.ctl = -1
	}
}

// Close closes all queues (a non-persistent tap disappears with its last fd). Workers must have stopped using
// the queues; Wake can be used to get them out of Wait first.
func (t *Tap) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.closeFDs()
	return nil
}

// Name returns the interface name (the resolved name when a "%d" template was used).
func (t *Tap) Name() string { return t.name }

// NumQueues returns the number of queues (fds).
func (t *Tap) NumQueues() int { return len(t.queues) }

// Queue returns queue i (0 ≤ i < NumQueues()); it panics on an out-of-range index like a slice would.
func (t *Tap) Queue(i int) *Queue { return t.queues[i] }

// Queues returns all queues; the slice must not be modified.
func (t *Tap) Queues() []*Queue { return t.queues }

// VnetHdrSize returns the virtio-net header length in front of every frame.
func (t *Tap) VnetHdrSize() int { return int(t.hdrSize.Load()) }

// MultiQueue reports whether the device was opened with IFF_MULTI_QUEUE.
func (t *Tap) MultiQueue() bool { return t.flags&flagMultiQueue != 0 }

// Persistent reports whether the device was persistent (IFF_PERSIST) when it was adopted; it is false for
// devices created by Open, which never changes persistence.
func (t *Tap) Persistent() bool { return t.flags&flagPersist != 0 }

// SetVnetHdrSize changes the header length on every queue (after feature negotiation: 12 for virtio 1 or
// mrg_rxbuf, 10 for a legacy guest without mrg_rxbuf, 20 with hash reporting).
func (t *Tap) SetVnetHdrSize(n int) error {
	if err := checkHdrSize(n); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	for _, q := range t.queues {
		if err := ioctlSetInt(q.fd, reqTUNSETVNETHDRSZ, int32(n)); err != nil {
			return newError(t.name, fmt.Sprintf("TUNSETVNETHDRSZ %d (queue %d)", n, q.index), err)
		}
	}
	t.hdrSize.Store(int32(n))
	return nil
}

// SetSndBuf sets the tap's send buffer (TUNSETSNDBUF); n ≤ 0 means INT_MAX.
func (t *Tap) SetSndBuf(n int) error {
	if n <= 0 || n > math.MaxInt32 {
		n = math.MaxInt32
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if err := ioctlSetInt(t.queues[0].fd, reqTUNSETSNDBUF, int32(n)); err != nil {
		return newError(t.name, "TUNSETSNDBUF", err)
	}
	return nil
}

// SndBuf returns the tap's send buffer size (TUNGETSNDBUF).
func (t *Tap) SndBuf() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, ErrClosed
	}
	v, err := ioctlGetInt(t.queues[0].fd, reqTUNGETSNDBUF)
	if err != nil {
		return 0, newError(t.name, "TUNGETSNDBUF", err)
	}
	return int(v), nil
}

// ActiveQueues returns the number of attached queues.
func (t *Tap) ActiveQueues() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.active
}

// SetActiveQueues attaches queues [0,n) and detaches queues [n,NumQueues()) with TUNSETQUEUE, as QEMU does for
// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET. The kernel steers no received frame to a detached queue (reads return
// ErrWouldBlock) but still accepts writes on it; the device should not use the queue pair until reattached.
// It is a no-op for a single-queue tap with n == 1.
func (t *Tap) SetActiveQueues(n int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if n < 1 || n > len(t.queues) {
		return fmt.Errorf("tap %s: %d active queues out of range 1..%d", t.name, n, len(t.queues))
	}
	if len(t.queues) == 1 {
		return nil
	}
	for _, q := range t.queues {
		attach := q.index < n
		if attach == q.attached.Load() {
			continue
		}
		req := newIfreq("")
		op := "TUNSETQUEUE detach"
		if attach {
			req.setFlags(flagAttachQueue)
			op = "TUNSETQUEUE attach"
		} else {
			req.setFlags(flagDetachQueue)
		}
		if err := ioctlPtr(q.fd, reqTUNSETQUEUE, unsafe.Pointer(&req)); err != nil {
			return newError(t.name, fmt.Sprintf("%s (queue %d)", op, q.index), err)
		}
		q.attached.Store(attach)
	}
	t.active = n
	return nil
}

// ParseFDs parses the fd= / fds= values of -netdev tap: decimal fd numbers separated by ':'.
func ParseFDs(s string) ([]int, error) {
	if s == "" {
		return nil, fmt.Errorf("tap: empty fd list")
	}
	parts := strings.Split(s, ":")
	if len(parts) > MaxQueues {
		return nil, fmt.Errorf("tap: %d fds, at most %d", len(parts), MaxQueues)
	}
	fds := make([]int, 0, len(parts))
	for _, p := range parts {
		v, err := strconv.ParseUint(p, 10, 31)
		if err != nil {
			return nil, fmt.Errorf("tap: bad fd %q in %q", p, s)
		}
		fds = append(fds, int(v))
	}
	return fds, nil
}

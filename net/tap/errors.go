package tap

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Error describes a failed TAP operation: which device, which system call or ioctl, the errno, and a hint
// about the usual cause.
type Error struct {
	// Device is the interface name (or "fd N" for an adopted descriptor whose name is unknown yet).
	Device string
	// Op is the failing operation, e.g. "open /dev/net/tun", "TUNSETIFF", "TUNSETOFFLOAD".
	Op string
	// Err is the underlying error, usually a unix.Errno.
	Err error
	// Hint explains the likely cause in words; may be empty.
	Hint string
}

// Error implements error.
func (e *Error) Error() string {
	s := fmt.Sprintf("tap %s: %s: %v", e.Device, e.Op, e.Err)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// Unwrap returns the underlying error so errors.Is(err, unix.EPERM) works.
func (e *Error) Unwrap() error { return e.Err }

// ErrWouldBlock is returned by the non-blocking I/O methods when the operation would block (EAGAIN): no frame
// to read, or the tap's transmit side is full. errors.Is(ErrWouldBlock, unix.EAGAIN) is true.
var ErrWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string        { return "tap: operation would block" }
func (wouldBlock) Is(target error) bool { return target == unix.EAGAIN }

// Timeout reports true so the error satisfies the net.Error-style Timeout() convention.
func (wouldBlock) Timeout() bool { return true }

// ErrClosed is returned by operations on a closed Tap or Queue.
var ErrClosed = errors.New("tap: closed")

// ErrDetached is returned by I/O on a tun fd that is not attached to a device (the kernel answers EBADFD). A
// queue detached with Tap.SetActiveQueues is still attached in this sense: it just stops receiving.
var ErrDetached = errors.New("tap: fd not attached to a device")

// newError builds an *Error for op failing with err on dev, adding a hint for well-known errnos.
func newError(dev, op string, err error) *Error {
	return &Error{Device: dev, Op: op, Err: err, Hint: hintFor(op, err)}
}

func hintFor(op string, err error) string {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	if i := strings.IndexByte(op, ' '); i > 0 && strings.HasPrefix(op, "TUN") {
		op = op[:i]
	}
	switch op {
	case "open /dev/net/tun":
		switch errno {
		case unix.ENOENT, unix.ENODEV, unix.ENXIO:
			return "no /dev/net/tun: load the tun module (modprobe tun) or create the node (mknod /dev/net/tun c 10 200)"
		case unix.EACCES, unix.EPERM:
			return "no permission on /dev/net/tun: run as root or grant access to the device node"
		}
	case "TUNSETIFF":
		switch errno {
		case unix.EPERM:
			return "creating or attaching a TAP needs root or CAP_NET_ADMIN; unprivileged use needs a persistent tap owned by " +
				"this user (ip tuntap add NAME mode tap vnet_hdr [multi_queue] user USER)"
		case unix.EBUSY:
			return "device busy: a non-multiqueue tap already has an open fd (another VMM using it?), or all queues of a " +
				"multiqueue tap are taken"
		case unix.EINVAL:
			return "the existing device has different flags: it may be a TUN rather than a TAP, or a persistent tap created " +
				"without multi_queue opened with queues>1 (or with multi_queue opened with queues=1), or the name is invalid"
		case unix.ENOTTY:
			return "the kernel's tun driver does not support this request"
		}
	case "TUNGETIFF":
		switch errno {
		case unix.ENOTTY, unix.EINVAL:
			return "the fd is not a /dev/net/tun descriptor"
		case unix.EBADFD:
			return "the fd is a /dev/net/tun descriptor not attached to a device (TUNSETIFF never done, or a detached queue)"
		case unix.EBADF:
			return "the fd is not open in this process"
		}
	case "TUNSETOFFLOAD":
		if errno == unix.EINVAL {
			return "the kernel rejected an offload flag it does not know"
		}
	case "TUNSETQUEUE":
		switch errno {
		case unix.EINVAL:
			return "the tap is not multiqueue, or the queue is already in the requested state"
		case unix.EPERM:
			return "attaching a queue needs CAP_NET_ADMIN unless the tap is owned by this user"
		}
	case "SIOCSIFFLAGS", "SIOCSIFMTU":
		switch errno {
		case unix.EPERM:
			return "needs root or CAP_NET_ADMIN in the tap's network namespace"
		case unix.ENODEV:
			return "the interface no longer exists or lives in another network namespace"
		case unix.EINVAL:
			return "value out of range for this device"
		}
	}
	switch errno {
	case unix.EPERM:
		return "needs root or CAP_NET_ADMIN"
	case unix.ENODEV:
		return "no such device"
	}
	return ""
}

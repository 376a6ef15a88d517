package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Kick is a queue's notification channel from the driver to the device: a
// non-blocking eventfd. The transport registers it as a KVM ioeventfd, so a
// guest's notify write signals it without an exit to userspace, and signals
// it itself for notifications that reach it by register access (the legacy
// QUEUE_NOTIFY port when no ioeventfd is registered, the PCI_CFG window, an
// in-process test driver). A device worker waits on Fd (for example in an
// epoll set next to its backend's fd) and calls Drain when it is readable.
type Kick struct {
	f *os.File
}

// NewKick creates a kick eventfd.
func NewKick() (*Kick, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("virtio: kick eventfd: %w", err)
	}
	return &Kick{f: os.NewFile(uintptr(fd), "virtio-kick")}, nil
}

// KickFromFile wraps an eventfd someone else created (a vhost-user
// frontend's kick descriptor). The Kick takes ownership of f and makes it
// non-blocking.
func KickFromFile(f *os.File) (*Kick, error) {
	if err := unix.SetNonblock(int(f.Fd()), true); err != nil {
		return nil, fmt.Errorf("virtio: kick descriptor: %w", err)
	}
	return &Kick{f: f}, nil
}

// File is the eventfd, for KVM_IOEVENTFD registration.
func (k *Kick) File() *os.File { return k.f }

// Fd is the eventfd's descriptor, for epoll.
func (k *Kick) Fd() int { return int(k.f.Fd()) }

// Signal notifies the device.
func (k *Kick) Signal() error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	if _, err := unix.Write(k.Fd(), b[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("virtio: signal kick: %w", err)
	}
	return nil
}

// Drain consumes pending notifications and reports whether there were any.
func (k *Kick) Drain() (bool, error) {
	var b [8]byte
	_, err := unix.Read(k.Fd(), b[:])
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EAGAIN):
		return false, nil
	}
	return false, fmt.Errorf("virtio: drain kick: %w", err)
}

// Close releases the eventfd.
func (k *Kick) Close() error { return k.f.Close() }

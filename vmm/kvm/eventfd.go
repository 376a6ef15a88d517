package kvm

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// EventFD is a Linux eventfd, the notification object of KVM_IRQFD and
// KVM_IOEVENTFD.
type EventFD struct {
	f *os.File
}

// NewEventFD creates an eventfd (close-on-exec). Pass unix.EFD_NONBLOCK in
// flags for a non-blocking one.
func NewEventFD(flags int) (*EventFD, error) {
	fd, err := unix.Eventfd(0, flags|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &EventFD{f: os.NewFile(uintptr(fd), "eventfd")}, nil
}

// File returns the underlying file (for IRQFD and IOEventFD).
func (e *EventFD) File() *os.File { return e.f }

// Close closes the eventfd.
func (e *EventFD) Close() error { return e.f.Close() }

// Signal adds 1 to the counter.
func (e *EventFD) Signal() error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	_, err := unix.Write(int(e.f.Fd()), b[:])
	runtime.KeepAlive(e.f)
	if err != nil {
		return fmt.Errorf("eventfd write: %w", err)
	}
	return nil
}

// Read returns and clears the counter; it blocks while it is zero unless the
// eventfd is non-blocking (then it returns unix.EAGAIN).
func (e *EventFD) Read() (uint64, error) {
	var b [8]byte
	_, err := unix.Read(int(e.f.Fd()), b[:])
	runtime.KeepAlive(e.f)
	if err != nil {
		return 0, fmt.Errorf("eventfd read: %w", err)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

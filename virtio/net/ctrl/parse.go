package ctrl

import (
	"errors"
	"fmt"
)

// Source is the device-readable part of a control-queue descriptor chain,
// in chain order, possibly split across descriptors. *queue.Reader (from
// Chain.Reader) implements it.
type Source interface {
	// Available is the number of readable bytes not yet consumed.
	Available() int
	// ReadFull fills p entirely or, when fewer bytes are left, consumes
	// nothing and fails.
	ReadFull(p []byte) error
}

// Parse errors.
var (
	// ErrMissingHeader: the readable part is shorter than the 2-byte
	// class/command header. QEMU treats this (like a writable part shorter
	// than the 1-byte ack) as a fatal driver error: virtio_error, which
	// sets DEVICE_NEEDS_RESET, and the chain is not completed.
	ErrMissingHeader = errors.New("virtio-net ctrl: readable part shorter than the command header")
	// ErrTooLarge: the command-specific-data is longer than MaxPayloadSize.
	// Answer AckErr; the payload was not read.
	ErrTooLarge = errors.New("virtio-net ctrl: command payload too large")
)

// ParseCommand reads a control command from src: the 2-byte header, then
// every remaining readable byte as the payload. The payload is copied into
// buf when it fits in cap(buf), else into a new slice; pass the previous
// payload[:0] back in to reuse it. Copying first means the command is
// validated and applied from a private copy, not from guest memory the
// driver could still change.
//
// Payloads larger than MaxPayloadSize (64 KiB: enough for about 10900 MAC
// filter entries, two full 64-entry tables need 776 bytes) are not read:
// ParseCommand returns the class and command with ErrTooLarge after
// consuming only the header. QEMU has no such bound; a guest would need a
// MAC filter list of more than ~10900 addresses to notice (it then gets
// AckErr instead of the overflow flags).
//
// A readable part shorter than the header gives ErrMissingHeader.
func ParseCommand(src Source, buf []byte) (class, cmd uint8, payload []byte, err error) {
	if src.Available() < HeaderSize {
		return 0, 0, nil, ErrMissingHeader
	}
	var hdr [HeaderSize]byte
	if err := src.ReadFull(hdr[:]); err != nil {
		return 0, 0, nil, fmt.Errorf("virtio-net ctrl: reading header: %w", err)
	}
	class, cmd = hdr[0], hdr[1]
	n := src.Available()
	if n > MaxPayloadSize {
		return class, cmd, nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, n, MaxPayloadSize)
	}
	if n < 0 {
		n = 0
	}
	if cap(buf) >= n {
		payload = buf[:n]
	} else {
		payload = make([]byte, n)
	}
	if err := src.ReadFull(payload); err != nil {
		return class, cmd, nil, fmt.Errorf("virtio-net ctrl: reading %d payload bytes: %w", n, err)
	}
	return class, cmd, payload, nil
}

// ParseBytes splits an already flattened readable part into header and
// payload, with the same rules as ParseCommand. The payload aliases b. If b
// is guest memory, prefer ParseCommand (Handle reads each byte once, so
// aliasing is memory-safe, but a racing driver could still see a command
// applied from bytes it changed mid-way).
func ParseBytes(b []byte) (class, cmd uint8, payload []byte, err error) {
	if len(b) < HeaderSize {
		return 0, 0, nil, ErrMissingHeader
	}
	class, cmd, payload = b[0], b[1], b[HeaderSize:]
	if len(payload) > MaxPayloadSize {
		return class, cmd, nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(payload), MaxPayloadSize)
	}
	return class, cmd, payload, nil
}

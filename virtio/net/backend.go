package virtionet

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/tap"
)

// BackendHdrSize is the virtio-net header every frame carries across the
// Backend interface: struct virtio_net_hdr_v1 (12 bytes; num_buffers is
// ignored on write and undefined on read). The device translates to the
// guest's header size (10 or 12).
const BackendHdrSize = header.VirtioNetHdrSize

// MaxFrameSize is the largest Ethernet frame (without virtio-net header) the
// device moves: a 65535-byte IP datagram behind an Ethernet header with one
// VLAN tag.
const MaxFrameSize = 65535 + header.EthernetMinSize + header.VLANTagSize

// Backend is the device's peer on the host: a TAP in production (NewTapBackend),
// an in-memory fake in tests (package nettest). Queue i serves virtqueue pair i.
type Backend interface {
	// Caps reports the backend's capabilities for feature pruning.
	Caps() BackendCaps
	// NumQueues is the number of queues (at least 1).
	NumQueues() int
	// Queue returns queue i, 0 ≤ i < NumQueues().
	Queue(i int) BackendQueue
	// SetOffload applies the guest's current receive offloads, given as
	// virtio feature bits (GUEST_CSUM 1, GUEST_TSO4 7, GUEST_TSO6 8,
	// GUEST_ECN 9, GUEST_UFO 10, GUEST_USO4 54, GUEST_USO6 55; other bits
	// are ignored). The TAP maps them to TUNSETOFFLOAD as QEMU does
	// (tap.OffloadFromBits): what the backend may hand to ReadV.
	SetOffload(guestOffloads uint64) error
	// SetActiveQueues attaches queues [0,n) and detaches the others
	// (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET). Detached queues receive nothing.
	SetActiveQueues(n int) error
}

// BackendQueue is one queue of a Backend. Its methods are called from one
// device goroutine (the queue pair's worker) and never concurrently.
type BackendQueue interface {
	// ReadV reads one frame (a BackendHdrSize header followed by the
	// Ethernet frame) scattered over iovs and returns the bytes stored. A
	// frame longer than the buffers is truncated (the rest is lost). When
	// no frame is queued it returns an error for which
	// errors.Is(err, unix.EAGAIN) holds (tap.ErrWouldBlock).
	ReadV(iovs [][]byte) (int, error)
	// WriteV writes one frame (header and Ethernet frame) gathered from
	// iovs. It returns an EAGAIN error when the backend cannot take it now
	// (then Fd becomes writable when it can).
	WriteV(iovs [][]byte) (int, error)
	// Fd is a descriptor for epoll: readable when a frame can be read,
	// writable when a write would not block. The backend owns it.
	Fd() int
}

// isWouldBlock reports whether err means "try again later".
func isWouldBlock(err error) bool {
	return err == tap.ErrWouldBlock || errors.Is(err, unix.EAGAIN)
}

// TapBackend adapts a *tap.Tap to Backend.
type TapBackend struct {
	t      *tap.Tap
	queues []BackendQueue
}

// NewTapBackend wraps t, whose every queue must carry virtio-net headers
// (tap.Open always sets IFF_VNET_HDR). It sets the header size to 12 bytes
// (the device translates for legacy guests). The caller keeps ownership of t.
func NewTapBackend(t *tap.Tap) (*TapBackend, error) {
	if t.VnetHdrSize() != BackendHdrSize {
		if err := t.SetVnetHdrSize(BackendHdrSize); err != nil {
			return nil, fmt.Errorf("virtio-net: tap backend: %w", err)
		}
	}
	b := &TapBackend{t: t}
	for _, q := range t.Queues() {
		b.queues = append(b.queues, q)
	}
	return b, nil
}

// Tap returns the wrapped tap.
func (b *TapBackend) Tap() *tap.Tap { return b.t }

// Caps implements Backend: a tap always has a vnet header; UFO as probed.
func (b *TapBackend) Caps() BackendCaps {
	return BackendCaps{VnetHdr: true, UFO: b.t.Capabilities().UFO, Queues: b.t.NumQueues()}
}

// NumQueues implements Backend.
func (b *TapBackend) NumQueues() int { return len(b.queues) }

// Queue implements Backend.
func (b *TapBackend) Queue(i int) BackendQueue { return b.queues[i] }

// SetOffload implements Backend with tap.OffloadFromBits and TUNSETOFFLOAD.
func (b *TapBackend) SetOffload(guestOffloads uint64) error {
	_, err := b.t.SetOffload(tap.OffloadFromBits(guestOffloads))
	return err
}

// SetActiveQueues implements Backend with TUNSETQUEUE.
func (b *TapBackend) SetActiveQueues(n int) error { return b.t.SetActiveQueues(n) }

// Package queue implements the device side of virtio split virtqueues
// (virtio 1.2 §2.7) over bounds-checked guest memory.
//
// The guest is hostile. Every index, flag, address and length it writes into
// a ring is validated before use; descriptors are copied out of guest memory
// once and then checked (no double fetch); buffers are handed to devices only
// as slices obtained from memory.Memory. Any guest protocol violation is
// reported as an error wrapping one of the sentinel errors below, and it
// leaves the queue "broken": every later ring operation returns the same
// error until the queue is reset. The device answers such an error by setting
// DEVICE_NEEDS_RESET (virtio.Interrupt.NeedsReset) and stopping its use of
// the queue; it never panics and never spins.
//
// # Life cycle
//
// The transport writes the driver's queue registers with SetSize,
// SetDescAddr, SetAvailAddr, SetUsedAddr and SetVector, and calls Enable when
// the driver writes queue_enable (or QUEUE_PFN on the legacy interface).
// Enable validates and latches the layout; later register writes are ignored
// until Reset. After DRIVER_OK the device pops chains with Pop, moves data
// with the chain's Reader and Writer (or its raw slices for zero-copy I/O),
// returns chains with AddUsed, publishes them with PublishUsed and asks
// NeedsNotify whether to interrupt the driver.
//
// # Concurrency
//
// A Queue is not safe for concurrent use. The transport owns it until
// activation; then the device's worker owns the ring-side methods (Pop,
// AddUsed, ...). The transport may still call Config and SetVector. Reset
// and Enable must only be called while the device is not using the queue
// (after virtio.Device.Reset or virtio.QueueResetter.ResetQueue returned).
//
// # Deliberate behaviours
//
//   - Zero-length descriptors are skipped: they count towards the chain
//     length limit (so they cannot cause a loop) and their flags are
//     checked, but they contribute no buffer and their address is not
//     looked at. The spec does not forbid them. QEMU rejects them
//     (virtio_error, since the CVE-2016-6490 fix), which has hung real
//     guests: Linux virtio-net posts a zero-length RSS key buffer when
//     the key size is 0 and then waits forever for the control reply.
//   - An indirect descriptor is accepted as the last descriptor of a chain
//     (spec: "zero or more normal chained descriptors followed by a single
//     descriptor with INDIRECT"). INDIRECT together with NEXT is rejected
//     (QEMU silently ignores NEXT); INDIRECT inside an indirect table is
//     rejected. Indirect descriptors are accepted even when
//     VIRTIO_F_INDIRECT_DESC was not negotiated, as QEMU does.
//   - A head that is already in flight (popped and not yet returned) is a
//     guest error (ErrHeadInUse). This bounds the chains in flight, and so
//     the memory a guest can make the device hold, by the queue size
//     (CVE-2016-5403 class).
//   - A buffer that spans two adjacent memory regions is split into two
//     segments; a buffer crossing a hole is rejected.
package queue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/rscvm/rscvm/vmm/memory"
)

// Descriptor flags (struct virtq_desc.flags).
const (
	DescFNext     uint16 = 1 // VIRTQ_DESC_F_NEXT: the chain continues at next
	DescFWrite    uint16 = 2 // VIRTQ_DESC_F_WRITE: device-writable buffer
	DescFIndirect uint16 = 4 // VIRTQ_DESC_F_INDIRECT: buffer is a descriptor table
)

// Ring flags.
const (
	AvailFNoInterrupt uint16 = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT (driver → device)
	UsedFNoNotify     uint16 = 1 // VIRTQ_USED_F_NO_NOTIFY (device → driver)
)

// Layout constants of the split ring.
const (
	MaxSize      = 32768 // largest split queue size (spec §2.7)
	DescSize     = 16    // sizeof(struct virtq_desc)
	UsedElemSize = 8     // sizeof(struct virtq_used_elem)
	DescAlign    = 16    // descriptor table alignment
	AvailAlign   = 2     // available ring alignment
	UsedAlign    = 4     // used ring alignment
	LegacyAlign  = 4096  // legacy interface: used ring starts on this boundary

	// MaxIndirectEntries bounds an indirect table: next is a 16-bit field,
	// so no more entries are reachable.
	MaxIndirectEntries = 65536

	// NoVector is the MSI-X "no vector" value (VIRTIO_MSI_NO_VECTOR).
	NoVector uint16 = 0xFFFF

	// DefaultMaxSegments is the default limit on buffers in one chain
	// (QEMU's VIRTQUEUE_MAX_SIZE iovec limit).
	DefaultMaxSegments = 1024
)

// DescTableSize is the size in bytes of the descriptor table of a queue.
func DescTableSize(size uint16) uint64 { return DescSize * uint64(size) }

// AvailRingSize is the size in bytes of the available ring, including the
// trailing used_event field used with VIRTIO_F_EVENT_IDX.
func AvailRingSize(size uint16) uint64 { return 6 + 2*uint64(size) }

// UsedRingSize is the size in bytes of the used ring, including the
// trailing avail_event field used with VIRTIO_F_EVENT_IDX.
func UsedRingSize(size uint16) uint64 { return 6 + UsedElemSize*uint64(size) }

// LegacyLayout returns the ring addresses of a legacy-interface queue whose
// QUEUE_PFN register holds pfn (the ring starts at pfn*4096, the available
// ring follows the descriptor table and the used ring starts on the next
// 4096-byte boundary).
func LegacyLayout(pfn uint32, size uint16) (desc, avail, used uint64) {
	desc = uint64(pfn) * LegacyAlign
	avail = desc + DescTableSize(size)
	used = (avail + AvailRingSize(size) + LegacyAlign - 1) &^ (LegacyAlign - 1)
	return desc, avail, used
}

// Guest protocol violations. Errors returned by Queue wrap one of these, so
// callers test them with errors.Is. Every one of them means the device must
// set DEVICE_NEEDS_RESET.
var (
	ErrSize          = errors.New("virtqueue: invalid queue size")
	ErrRingAddress   = errors.New("virtqueue: ring area misaligned or outside guest memory")
	ErrAvailIdx      = errors.New("virtqueue: available index moved more than the queue size")
	ErrDescIndex     = errors.New("virtqueue: descriptor index out of range")
	ErrChainTooLong  = errors.New("virtqueue: descriptor chain longer than its table (loop)")
	ErrIndirect      = errors.New("virtqueue: invalid indirect descriptor")
	ErrBufferAddress = errors.New("virtqueue: buffer outside guest memory")
	ErrChainLength   = errors.New("virtqueue: descriptor chain longer than 4 GiB in total")
	ErrDescOrder     = errors.New("virtqueue: device-readable descriptor after a device-writable one")
	ErrTooManySegs   = errors.New("virtqueue: too many buffers in one descriptor chain")
	ErrHeadInUse     = errors.New("virtqueue: chain head is already in flight")
)

// Device-side misuse (bugs in the device model, not guest misbehaviour).
var (
	ErrNotReady   = errors.New("virtqueue: queue is not enabled")
	ErrStaleChain = errors.New("virtqueue: chain is not in flight on this queue")
	ErrUsedLen    = errors.New("virtqueue: used length exceeds the chain's writable length")
	ErrUnpopOrder = errors.New("virtqueue: only the most recently popped chain can be returned")
	ErrInFlight   = errors.New("virtqueue: chains are in flight")
)

// ChainError describes a malformed descriptor chain. It wraps one of the
// sentinel errors.
type ChainError struct {
	Head     uint16 // head descriptor index from the available ring
	Desc     uint32 // index of the offending descriptor in its table
	Indirect bool   // Desc indexes the indirect table
	Err      error  // sentinel
}

func (e *ChainError) Error() string {
	where := "descriptor table"
	if e.Indirect {
		where = "indirect table"
	}
	return fmt.Sprintf("chain at head %d, %s entry %d: %v", e.Head, where, e.Desc, e.Err)
}

func (e *ChainError) Unwrap() error { return e.Err }

// Config is the driver-visible configuration of one queue, as the transport
// presents it in its registers.
type Config struct {
	Size   uint16 // queue_size: number of entries (the maximum until the driver changes it)
	Desc   uint64 // queue_desc: descriptor table GPA
	Avail  uint64 // queue_driver: available ring GPA
	Used   uint64 // queue_device: used ring GPA
	Ready  bool   // queue_enable
	Vector uint16 // queue_msix_vector (NoVector when none)
}

// Features are the negotiated feature bits that change queue behaviour.
type Features struct {
	EventIdx      bool // VIRTIO_F_EVENT_IDX (bit 29)
	NotifyOnEmpty bool // VIRTIO_F_NOTIFY_ON_EMPTY (bit 24, legacy)
}

// Queue is the device side of one split virtqueue.
type Queue struct {
	maxSize uint16
	maxSegs int
	cfg     Config // registers (transport side)

	// Latched at Enable; used by the device side.
	enabled bool
	mem     *memory.Memory
	size    uint16
	mask    uint16
	desc    []byte // descriptor table, DescTableSize(size) bytes of guest memory
	avail   []byte // available ring, AvailRingSize(size) bytes
	used    []byte // used ring, UsedRingSize(size) bytes
	feat    Features

	lastAvail uint16 // next available ring entry to pop
	availIdx  uint16 // driver's avail idx as last read
	nextUsed  uint16 // next used ring entry to fill
	pubUsed   uint16 // used idx as last published
	signalled uint16 // used idx at the last NeedsNotify
	sigValid  bool   // signalled is meaningful (EVENT_IDX)
	inflight  int
	broken    error
	gen       uint32 // bumped by Reset: chains from before are stale

	chains []Chain // indexed by head descriptor
}

// New returns a reset queue whose size may be at most maxSize, which must be
// a power of two no larger than MaxSize.
func New(maxSize uint16) (*Queue, error) {
	if maxSize == 0 || maxSize > MaxSize || maxSize&(maxSize-1) != 0 {
		return nil, fmt.Errorf("virtqueue max size %d: %w", maxSize, ErrSize)
	}
	q := &Queue{maxSize: maxSize, maxSegs: DefaultMaxSegments}
	q.Reset()
	return q, nil
}

// MaxSize is the largest size the driver may configure.
func (q *Queue) MaxSize() uint16 { return q.maxSize }

// SetMaxSegments changes the limit on buffers per chain (default
// DefaultMaxSegments). Values below 1 are raised to 1.
func (q *Queue) SetMaxSegments(n int) {
	if n < 1 {
		n = 1
	}
	q.maxSegs = n
}

// Config returns the queue's register values.
func (q *Queue) Config() Config { return q.cfg }

// Ready reports whether the queue has been enabled.
func (q *Queue) Ready() bool { return q.enabled }

// Size is the latched queue size (0 when not enabled).
func (q *Queue) Size() uint16 { return q.size }

// SetSize sets queue_size. It reports false (and changes nothing) when the
// queue is enabled: registers are latched at enable. The value is validated
// by Enable, not here, so a driver reads back what it wrote.
func (q *Queue) SetSize(n uint16) bool {
	if q.enabled {
		return false
	}
	q.cfg.Size = n
	return true
}

// SetDescAddr sets the descriptor table address; ignored once enabled.
func (q *Queue) SetDescAddr(gpa uint64) bool {
	if q.enabled {
		return false
	}
	q.cfg.Desc = gpa
	return true
}

// SetAvailAddr sets the available ring (driver area) address; ignored once enabled.
func (q *Queue) SetAvailAddr(gpa uint64) bool {
	if q.enabled {
		return false
	}
	q.cfg.Avail = gpa
	return true
}

// SetUsedAddr sets the used ring (device area) address; ignored once enabled.
func (q *Queue) SetUsedAddr(gpa uint64) bool {
	if q.enabled {
		return false
	}
	q.cfg.Used = gpa
	return true
}

// SetVector records the queue's MSI-X vector. It may change at any time; the
// transport validates it (storing NoVector for a bad one).
func (q *Queue) SetVector(v uint16) { q.cfg.Vector = v }

// SetFeatures records the negotiated features that change ring behaviour.
// Call it before the device starts using the queue (at FEATURES_OK or
// activation).
func (q *Queue) SetFeatures(f Features) { q.feat = f }

// Features returns what SetFeatures recorded.
func (q *Queue) Features() Features { return q.feat }

// Enable validates the configured layout against mem and latches it. The
// size must be a non-zero power of two no larger than MaxSize(); each ring
// area must be aligned (descriptor table 16, available ring 2, used ring 4)
// and lie wholly inside one region of guest memory, trailing EVENT_IDX
// fields included (so rings can never point at MMIO or straddle a hole).
// On error the queue stays disabled and the error wraps ErrSize or
// ErrRingAddress. Enabling an enabled queue does nothing.
func (q *Queue) Enable(mem *memory.Memory) error {
	if q.enabled {
		return nil
	}
	if mem == nil {
		return fmt.Errorf("enable virtqueue: no guest memory: %w", ErrRingAddress)
	}
	c := q.cfg
	if c.Size == 0 || c.Size > q.maxSize || c.Size&(c.Size-1) != 0 {
		return fmt.Errorf("enable virtqueue: size %d (max %d, power of two): %w", c.Size, q.maxSize, ErrSize)
	}
	desc, err := ringArea(mem, "descriptor table", c.Desc, DescTableSize(c.Size), DescAlign)
	if err != nil {
		return err
	}
	avail, err := ringArea(mem, "available ring", c.Avail, AvailRingSize(c.Size), AvailAlign)
	if err != nil {
		return err
	}
	used, err := ringArea(mem, "used ring", c.Used, UsedRingSize(c.Size), UsedAlign)
	if err != nil {
		return err
	}
	q.mem, q.desc, q.avail, q.used = mem, desc, avail, used
	q.size, q.mask = c.Size, c.Size-1
	if cap(q.chains) < int(c.Size) {
		q.chains = make([]Chain, c.Size)
	}
	q.chains = q.chains[:c.Size]
	for i := range q.chains {
		q.chains[i].inflight = false
		q.chains[i].release()
	}
	q.inflight = 0
	q.broken = nil
	q.enabled = true
	q.cfg.Ready = true
	return nil
}

func ringArea(mem *memory.Memory, what string, gpa, n, align uint64) ([]byte, error) {
	if gpa%align != 0 {
		return nil, fmt.Errorf("enable virtqueue: %s at %#x not %d-byte aligned: %w", what, gpa, align, ErrRingAddress)
	}
	s, err := mem.Slice(gpa, n)
	if err != nil {
		return nil, fmt.Errorf("enable virtqueue: %s [%#x,+%#x): %w (%w)", what, gpa, n, ErrRingAddress, err)
	}
	return s, nil
}

// Reset returns the queue to its power-on state: disabled, size = MaxSize(),
// addresses 0, vector NoVector, features cleared, all indexes 0, not
// broken. Chains popped before the reset become stale: AddUsed and Unpop
// reject them. Used for device reset and per-queue reset (RING_RESET).
func (q *Queue) Reset() {
	q.cfg = Config{Size: q.maxSize, Vector: NoVector}
	q.enabled = false
	q.mem, q.desc, q.avail, q.used = nil, nil, nil, nil
	q.size, q.mask = 0, 0
	q.feat = Features{}
	q.lastAvail, q.availIdx = 0, 0
	q.nextUsed, q.pubUsed = 0, 0
	q.signalled, q.sigValid = 0, false
	q.inflight = 0
	q.broken = nil
	q.gen++
}

// Err returns the guest error that broke the queue, or nil.
func (q *Queue) Err() error { return q.broken }

func (q *Queue) fail(err error) error {
	q.broken = err
	return err
}

// InFlight is the number of chains popped and not yet returned.
func (q *Queue) InFlight() int { return q.inflight }

// LastAvailIdx is the free-running index of the next available ring entry
// the device will pop (vhost-user's vring base).
func (q *Queue) LastAvailIdx() uint16 { return q.lastAvail }

// UsedIdx is the free-running index of the next used ring entry the device
// will fill. It equals the published used idx after PublishUsed.
func (q *Queue) UsedIdx() uint16 { return q.nextUsed }

// SetLastAvailIdx sets the next available ring entry to pop (vhost-user
// SET_VRING_BASE, or restoring state). It fails with ErrInFlight if chains
// are in flight.
func (q *Queue) SetLastAvailIdx(v uint16) error {
	if q.inflight != 0 {
		return ErrInFlight
	}
	q.lastAvail, q.availIdx = v, v
	return nil
}

// SetUsedIdx sets the device's used index (restoring state). It does not
// write the used ring. It fails with ErrInFlight if chains are in flight.
func (q *Queue) SetUsedIdx(v uint16) error {
	if q.inflight != 0 {
		return ErrInFlight
	}
	q.nextUsed, q.pubUsed, q.signalled, q.sigValid = v, v, v, false
	return nil
}

// le16/le32/le64 decode little-endian fields from a slice of guest memory.
var le = binary.LittleEndian

// readAvailIdx reads the driver's avail idx and checks it against the
// device's position. The fence orders the index load before the loads of
// the ring entries and descriptors it exposes.
func (q *Queue) readAvailIdx() error {
	idx := le.Uint16(q.avail[2:4])
	memory.Fence()
	if n := idx - q.lastAvail; n > q.size {
		return q.fail(fmt.Errorf("avail idx %d, device at %d, queue size %d: %w", idx, q.lastAvail, q.size, ErrAvailIdx))
	}
	q.availIdx = idx
	return nil
}

// HasAvailable reports whether the driver has made chains available that
// the device has not popped yet. It re-reads the avail index.
func (q *Queue) HasAvailable() (bool, error) {
	if q.broken != nil {
		return false, q.broken
	}
	if !q.enabled {
		return false, ErrNotReady
	}
	if q.availIdx != q.lastAvail {
		return true, nil
	}
	if err := q.readAvailIdx(); err != nil {
		return false, err
	}
	return q.availIdx != q.lastAvail, nil
}

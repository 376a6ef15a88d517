package virtio

import (
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/vmm/memory"
)

// Device is a virtio device model, independent of its transport (modelled
// on Cloud Hypervisor's VirtioDevice). The transport calls these methods
// from the vCPU thread that accessed its registers; a device runs its queues
// on its own goroutines between Activate and Reset.
type Device interface {
	// Type is the virtio device ID.
	Type() DeviceType

	// Features are the feature bits the device offers, legacy-only bits
	// included (the transport hides those from the modern interface).
	Features() uint64

	// AckFeatures tells the device the features the driver accepted: at
	// FEATURES_OK on the modern interface, before activation on the legacy
	// one. They are a subset of Features().
	AckFeatures(negotiated uint64)

	// ReadConfig fills data from the device-specific configuration space
	// at offset. Bytes past the end of the configuration read as 0xFF.
	ReadConfig(offset uint64, data []byte)

	// WriteConfig handles a driver write to the configuration space.
	WriteConfig(offset uint64, data []byte)

	// QueueMaxSizes is the maximum size of each virtqueue; its length is
	// the number of queues the transport exposes.
	QueueMaxSizes() []uint16

	// Activate starts the device after DRIVER_OK. queues has one entry per
	// QueueMaxSizes element; queues the driver did not enable have
	// Ready() == false. kicks[i] is signalled whenever the driver notifies
	// queue i; the transport owns the kicks (the device must not close
	// them). The device owns the queues' ring side until Reset returns. An
	// error leaves the device inactive; the transport then sets
	// DEVICE_NEEDS_RESET.
	Activate(mem *memory.Memory, queues []*queue.Queue, kicks []*Kick, irq Interrupt) error

	// Reset stops all queue processing and returns the device to its
	// initial state. When it returns no goroutine of the device touches
	// guest memory or the queues any more. Called on driver reset (status
	// 0) whether or not the device was activated.
	Reset()
}

// Interrupt is what a transport gives a device at activation to signal the
// driver. Its methods may be called from any goroutine.
type Interrupt interface {
	// SignalQueue sends a used-buffer notification for queue index (the
	// queue's MSI-X vector, or the ISR queue bit and INTx). The device
	// decides whether to call it with queue.Queue.NeedsNotify.
	SignalQueue(index int) error

	// SignalConfig sends a configuration-change notification (and bumps
	// config_generation).
	SignalConfig() error

	// NeedsReset reports that the device hit an unrecoverable error, such
	// as a guest protocol violation returned by a queue. The transport sets
	// DEVICE_NEEDS_RESET and, if DRIVER_OK is set, sends a configuration
	// change notification (State.SetNeedsReset). The device stops using
	// the queue concerned; the driver is expected to reset the device.
	NeedsReset(cause error)
}

// LegacyFeatureDevice is implemented by devices with device-specific
// feature bits that exist only on the legacy interface (virtio-net's GSO,
// bit 6). They are hidden from the modern feature window, as are
// LegacyOnlyFeatures.
type LegacyFeatureDevice interface {
	LegacyOnlyFeatures() uint64
}

// FeatureValidator is implemented by devices that refuse some feature
// combinations. An error keeps FEATURES_OK clear.
type FeatureValidator interface {
	ValidateFeatures(negotiated uint64) error
}

// QueueResetter is implemented by devices that support per-queue reset
// (VIRTIO_F_RING_RESET); the transport offers RING_RESET only for them.
type QueueResetter interface {
	// ResetQueue stops all use of queue index. When it returns the device
	// no longer touches the queue; the transport then resets it.
	ResetQueue(index int)
	// EnableQueue tells an active device that the driver re-enabled queue
	// index after resetting it.
	EnableQueue(index int) error
}

// NewDeviceState returns a State for dev: it offers dev.Features(), hides
// LegacyOnlyFeatures (and dev's own legacy-only bits) from the modern
// interface, and consults dev's FeatureValidator at FEATURES_OK.
func NewDeviceState(dev Device) *State {
	legacy := LegacyOnlyFeatures
	if l, ok := dev.(LegacyFeatureDevice); ok {
		legacy |= l.LegacyOnlyFeatures()
	}
	var validate func(uint64) error
	if v, ok := dev.(FeatureValidator); ok {
		validate = v.ValidateFeatures
	}
	return NewState(dev.Features(), legacy, validate)
}

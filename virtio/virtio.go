// Package virtio holds what every virtio device and transport share: the
// Device interface a device model implements, the Interrupt interface a
// transport provides to it, the device status state machine and feature
// negotiation (State), and the constants of the common transport feature
// bits and status bits (virtio 1.2 §2.1, §2.2, §6).
//
// Virtqueues live in package virtio/queue; the PCI transport and device
// models live in their own packages.
package virtio

import (
	"fmt"

	"github.com/rscvm/rscvm/virtio/queue"
)

// DeviceType is a virtio device ID (virtio 1.2 §5).
type DeviceType uint32

// Device IDs.
const (
	DeviceTypeNet     DeviceType = 1
	DeviceTypeBlock   DeviceType = 2
	DeviceTypeConsole DeviceType = 3
	DeviceTypeEntropy DeviceType = 4
	DeviceTypeBalloon DeviceType = 5
	DeviceTypeSCSI    DeviceType = 8
	DeviceType9P      DeviceType = 9
	DeviceTypeGPU     DeviceType = 16
	DeviceTypeInput   DeviceType = 18
	DeviceTypeVsock   DeviceType = 19
	DeviceTypeIOMMU   DeviceType = 23
	DeviceTypeMem     DeviceType = 24
	DeviceTypeFS      DeviceType = 26
	DeviceTypePMEM    DeviceType = 27
)

func (t DeviceType) String() string {
	switch t {
	case DeviceTypeNet:
		return "net"
	case DeviceTypeBlock:
		return "block"
	case DeviceTypeConsole:
		return "console"
	case DeviceTypeEntropy:
		return "entropy"
	case DeviceTypeBalloon:
		return "balloon"
	case DeviceTypeSCSI:
		return "scsi"
	case DeviceType9P:
		return "9p"
	case DeviceTypeGPU:
		return "gpu"
	case DeviceTypeInput:
		return "input"
	case DeviceTypeVsock:
		return "vsock"
	case DeviceTypeIOMMU:
		return "iommu"
	case DeviceTypeMem:
		return "mem"
	case DeviceTypeFS:
		return "fs"
	case DeviceTypePMEM:
		return "pmem"
	}
	return fmt.Sprintf("virtio-%d", uint32(t))
}

// Device status bits (the device_status register).
const (
	StatusAcknowledge      uint8 = 1   // ACKNOWLEDGE: the guest found the device
	StatusDriver           uint8 = 2   // DRIVER: the guest has a driver for it
	StatusDriverOK         uint8 = 4   // DRIVER_OK: the driver is ready; the device may run
	StatusFeaturesOK       uint8 = 8   // FEATURES_OK: feature negotiation is complete
	StatusDeviceNeedsReset uint8 = 64  // DEVICE_NEEDS_RESET: set by the device on an unrecoverable error
	StatusFailed           uint8 = 128 // FAILED: the driver gave up on the device
)

// Feature bit numbers of the transport-independent features (use Bit to
// make a mask). Device-specific bits are 0-23 and 50-127.
const (
	FeatureNotifyOnEmpty    = 24 // VIRTIO_F_NOTIFY_ON_EMPTY (legacy only)
	FeatureAnyLayout        = 27 // VIRTIO_F_ANY_LAYOUT (legacy only)
	FeatureIndirectDesc     = 28 // VIRTIO_F_INDIRECT_DESC (VIRTIO_RING_F_INDIRECT_DESC)
	FeatureEventIdx         = 29 // VIRTIO_F_EVENT_IDX (VIRTIO_RING_F_EVENT_IDX)
	FeatureBadFeature       = 30 // QEMU's VIRTIO_F_BAD_FEATURE (legacy only)
	FeatureVersion1         = 32 // VIRTIO_F_VERSION_1
	FeatureAccessPlatform   = 33 // VIRTIO_F_ACCESS_PLATFORM
	FeatureRingPacked       = 34 // VIRTIO_F_RING_PACKED
	FeatureInOrder          = 35 // VIRTIO_F_IN_ORDER
	FeatureOrderPlatform    = 36 // VIRTIO_F_ORDER_PLATFORM
	FeatureSRIOV            = 37 // VIRTIO_F_SR_IOV
	FeatureNotificationData = 38 // VIRTIO_F_NOTIFICATION_DATA
	FeatureNotifConfigData  = 39 // VIRTIO_F_NOTIF_CONFIG_DATA
	FeatureRingReset        = 40 // VIRTIO_F_RING_RESET
)

// Bit returns the feature mask of bit number n (n < 64).
func Bit(n uint) uint64 { return 1 << n }

// LegacyOnlyFeatures are the common feature bits that exist only on the
// legacy interface: QEMU hides them from the modern feature window.
const LegacyOnlyFeatures uint64 = 1<<FeatureNotifyOnEmpty | 1<<FeatureAnyLayout | 1<<FeatureBadFeature

// QueueFeatures extracts the negotiated features that change ring behaviour.
func QueueFeatures(negotiated uint64) queue.Features {
	return queue.Features{
		EventIdx:      negotiated&Bit(FeatureEventIdx) != 0,
		NotifyOnEmpty: negotiated&Bit(FeatureNotifyOnEmpty) != 0,
	}
}

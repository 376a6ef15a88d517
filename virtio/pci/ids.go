package virtiopci

import (
	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
)

// PCI identity constants of virtio functions.
const (
	VendorID = 0x1AF4 // Red Hat / Qumranet

	// ModernDeviceIDBase + device type is the device ID of a modern-only
	// (virtio 1.0) function.
	ModernDeviceIDBase = 0x1040

	// LegacyRevision is the revision of transitional and legacy-only
	// functions (VIRTIO_PCI_ABI_VERSION); modern-only functions have
	// ModernRevision.
	LegacyRevision = 0x00
	ModernRevision = 0x01

	// ModernSubsystemID is the subsystem ID of modern-only functions:
	// QEMU's default subsystem (1af4:1100). Transitional and legacy-only
	// functions use the virtio device type as subsystem ID.
	ModernSubsystemID = pci.SubsystemQEMU
)

// Class codes (24-bit: base class, subclass, programming interface).
const (
	ClassNetworkEthernet = 0x020000 // PCI_CLASS_NETWORK_ETHERNET
	ClassStorageSCSI     = 0x010000 // PCI_CLASS_STORAGE_SCSI (virtio-blk and virtio-scsi)
	ClassStorageOther    = 0x018000 // PCI_CLASS_STORAGE_OTHER (virtio-fs)
	ClassCommOther       = 0x078000 // PCI_CLASS_COMMUNICATION_OTHER (virtio-console, vsock)
	ClassNetworkBase     = 0x000200 // class_id PCI_BASE_CLASS_NETWORK, as QEMU gives virtio-9p
	ClassDisplayOther    = 0x038000 // PCI_CLASS_DISPLAY_OTHER (virtio-gpu)
	ClassInputOther      = 0x098000 // PCI_CLASS_INPUT_OTHER (virtio-input)
	ClassOthers          = 0x00FF00 // PCI_CLASS_OTHERS (rng, balloon, iommu, ...)
)

// TransitionalDeviceID returns the device ID of a transitional (or
// legacy-only) function of device type t, and false for device types that
// QEMU only offers as modern-only functions.
func TransitionalDeviceID(t virtio.DeviceType) (uint16, bool) {
	switch t {
	case virtio.DeviceTypeNet:
		return 0x1000, true
	case virtio.DeviceTypeBlock:
		return 0x1001, true
	case virtio.DeviceTypeBalloon:
		return 0x1002, true
	case virtio.DeviceTypeConsole:
		return 0x1003, true
	case virtio.DeviceTypeSCSI:
		return 0x1004, true
	case virtio.DeviceTypeEntropy:
		return 0x1005, true
	case virtio.DeviceType9P:
		return 0x1009, true
	}
	return 0, false
}

// DefaultClass returns the class code QEMU gives a virtio-pci function of
// device type t.
func DefaultClass(t virtio.DeviceType) uint32 {
	switch t {
	case virtio.DeviceTypeNet:
		return ClassNetworkEthernet
	case virtio.DeviceTypeBlock, virtio.DeviceTypeSCSI:
		return ClassStorageSCSI
	case virtio.DeviceTypeConsole, virtio.DeviceTypeVsock:
		return ClassCommOther
	case virtio.DeviceType9P:
		return ClassNetworkBase
	case virtio.DeviceTypeFS:
		return ClassStorageOther
	case virtio.DeviceTypeGPU:
		return ClassDisplayOther
	case virtio.DeviceTypeInput:
		return ClassInputOther
	}
	return ClassOthers
}

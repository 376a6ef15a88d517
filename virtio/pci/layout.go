package virtiopci

// BAR indexes, as QEMU's virtio-pci lays them out (modern-pio-notify=off).
const (
	BARLegacy = 0 // I/O: legacy register block (transitional and legacy-only)
	BARMSIX   = 1 // 32-bit memory: MSI-X table and PBA (when vectors > 0)
	BARModern = 4 // 64-bit prefetchable memory, BARs 4+5 (transitional and modern-only)
)

// Modern BAR layout (page-per-vq=off).
const (
	ModernBARSize       = 0x4000 // pow2ceil(NotifyOffset + 4*MaxQueues)
	CommonCfgOffset     = 0x0000
	ISROffset           = 0x1000
	DeviceCfgOffset     = 0x2000
	NotifyOffset        = 0x3000
	ModernRegionSize    = 0x1000 // length of each of the four regions
	NotifyOffMultiplier = 4      // queue q is notified at NotifyOffset + 4*q
)

// MSI-X BAR layout (msix_init_exclusive_bar).
const (
	MSIXTableOffset = 0
	MSIXEntrySize   = 16
	// MSIXPBAOffset is where the pending bit array starts for up to 128
	// vectors; more vectors push it to the end of the table.
	MSIXPBAOffset = 0x800
	msixBARMin    = 0x1000
)

// Limits.
const (
	// MaxQueues is QEMU's VIRTIO_QUEUE_MAX: queue_select and the notify
	// index range over it.
	MaxQueues = 1024
	// MaxVectors is the largest MSI-X table (PCI_MSIX_FLAGS_QSIZE + 1).
	MaxVectors = 2048
	// NoVector is VIRTIO_MSI_NO_VECTOR.
	NoVector uint16 = 0xFFFF
)

// Legacy register block (BAR 0) offsets.
const (
	LegacyHostFeatures    = 0x00 // 32, RO
	LegacyGuestFeatures   = 0x04 // 32
	LegacyQueuePFN        = 0x08 // 32
	LegacyQueueNum        = 0x0C // 16, RO
	LegacyQueueSel        = 0x0E // 16
	LegacyQueueNotify     = 0x10 // 16
	LegacyStatus          = 0x12 // 8
	LegacyISR             = 0x13 // 8, read-to-clear
	LegacyMSIConfigVector = 0x14 // 16, only while MSI-X is enabled
	LegacyMSIQueueVector  = 0x16 // 16, only while MSI-X is enabled
	// Device configuration starts at LegacyConfigNoMSIX while MSI-X is
	// disabled (or absent) and at LegacyConfigMSIX while it is enabled.
	LegacyConfigNoMSIX = 20
	LegacyConfigMSIX   = 24
	// LegacyPFNShift converts QUEUE_PFN to a guest-physical address.
	LegacyPFNShift = 12
)

// Common configuration (struct virtio_pci_common_cfg) offsets.
const (
	CommonDeviceFeatureSelect = 0x00 // le32
	CommonDeviceFeature       = 0x04 // le32, RO
	CommonDriverFeatureSelect = 0x08 // le32
	CommonDriverFeature       = 0x0C // le32
	CommonMSIXConfig          = 0x10 // le16
	CommonNumQueues           = 0x12 // le16, RO
	CommonDeviceStatus        = 0x14 // u8
	CommonConfigGeneration    = 0x15 // u8, RO
	CommonQueueSelect         = 0x16 // le16
	CommonQueueSize           = 0x18 // le16
	CommonQueueMSIXVector     = 0x1A // le16
	CommonQueueEnable         = 0x1C // le16
	CommonQueueNotifyOff      = 0x1E // le16, RO
	CommonQueueDescLo         = 0x20 // le32
	CommonQueueDescHi         = 0x24
	CommonQueueAvailLo        = 0x28 // queue_driver
	CommonQueueAvailHi        = 0x2C
	CommonQueueUsedLo         = 0x30 // queue_device
	CommonQueueUsedHi         = 0x34
	CommonQueueNotifyData     = 0x38 // le16, RO (reads 0, as in QEMU)
	CommonQueueReset          = 0x3A // le16 (VIRTIO_F_RING_RESET)
)

// Virtio vendor capability cfg_type values.
const (
	CapCommonCfg = 1
	CapNotifyCfg = 2
	CapISRCfg    = 3
	CapDeviceCfg = 4
	CapPCICfg    = 5
)

// Capability lengths (cap_len) and the offsets of the fields of the
// vendor capabilities.
const (
	capLenVendor = 16 // struct virtio_pci_cap
	capLenNotify = 20 // struct virtio_pci_notify_cap
	capLenPCICfg = 20 // struct virtio_pci_cfg_cap
	capBar       = 4
	capOffset    = 8
	capLength    = 12
	capCfgData   = 16 // pci_cfg_data in struct virtio_pci_cfg_cap

	msixCapControl = 2 // message control (le16); enable and mask-all in its high byte
	msixCapTable   = 4
	msixCapPBA     = 8
	msixCtrlHigh   = msixCapControl + 1
	msixEnableBit  = 0x80 // in the high byte of message control
	msixMaskAllBit = 0x40
)

// ISR bits.
const (
	ISRQueue  = 0x1
	ISRConfig = 0x2
)

// pow2ceil returns the smallest power of two >= n (n >= 1).
func pow2ceil(n uint64) uint64 {
	p := uint64(1)
	for p < n {
		p <<= 1
	}
	return p
}

// msixLayout returns the MSI-X BAR size and PBA offset for n vectors, as
// QEMU's msix_init_exclusive_bar computes them.
func msixLayout(n int) (barSize, pbaOff, pbaSize uint64) {
	barSize = msixBARMin
	pbaOff = barSize / 2
	pbaSize = (uint64(n) + 63) / 64 * 8
	if uint64(n)*MSIXEntrySize > pbaOff {
		pbaOff = uint64(n) * MSIXEntrySize
	}
	if pbaOff+pbaSize > msixBARMin {
		barSize = pbaOff + pbaSize
	}
	return pow2ceil(barSize), pbaOff, pbaSize
}

package pci

// Identity of the host bridge at 00:00.0 (QEMU's i440FX).
const (
	HostBridgeVendorID = 0x8086 // Intel
	HostBridgeDeviceID = 0x1237 // 82441FX (440FX PMC)
	HostBridgeRevision = 0x02
	HostBridgeClass    = 0x060000 // bridge, host bridge
)

// QEMU's default subsystem IDs, which it gives devices that have no own.
const (
	SubsystemVendorQEMU = 0x1AF4 // Red Hat / Qumranet
	SubsystemQEMU       = 0x1100
)

// NewHostBridge returns the configuration space of the 440FX host bridge:
// header type 0, no BARs, no interrupt pin.
func NewHostBridge() *ConfigSpace {
	return newConfigSpace(Header{
		VendorID:          HostBridgeVendorID,
		DeviceID:          HostBridgeDeviceID,
		Revision:          HostBridgeRevision,
		Class:             HostBridgeClass,
		SubsystemVendorID: SubsystemVendorQEMU,
		SubsystemID:       SubsystemQEMU,
	})
}

package virtionet

import "github.com/rscvm/rscvm/virtio"

// Feature bit numbers of virtio-net (virtio 1.2 §5.1.3, Linux
// include/uapi/linux/virtio_net.h). Use virtio.Bit to make a mask.
const (
	FeatureCSUM              = 0  // VIRTIO_NET_F_CSUM: driver sends partial checksums
	FeatureGuestCSUM         = 1  // VIRTIO_NET_F_GUEST_CSUM: driver accepts partial checksums
	FeatureCtrlGuestOffloads = 2  // VIRTIO_NET_F_CTRL_GUEST_OFFLOADS
	FeatureMTU               = 3  // VIRTIO_NET_F_MTU
	FeatureMAC               = 5  // VIRTIO_NET_F_MAC
	FeatureGSO               = 6  // VIRTIO_NET_F_GSO (legacy interface only)
	FeatureGuestTSO4         = 7  // VIRTIO_NET_F_GUEST_TSO4
	FeatureGuestTSO6         = 8  // VIRTIO_NET_F_GUEST_TSO6
	FeatureGuestECN          = 9  // VIRTIO_NET_F_GUEST_ECN
	FeatureGuestUFO          = 10 // VIRTIO_NET_F_GUEST_UFO
	FeatureHostTSO4          = 11 // VIRTIO_NET_F_HOST_TSO4
	FeatureHostTSO6          = 12 // VIRTIO_NET_F_HOST_TSO6
	FeatureHostECN           = 13 // VIRTIO_NET_F_HOST_ECN
	FeatureHostUFO           = 14 // VIRTIO_NET_F_HOST_UFO
	FeatureMrgRxBuf          = 15 // VIRTIO_NET_F_MRG_RXBUF
	FeatureStatus            = 16 // VIRTIO_NET_F_STATUS
	FeatureCtrlVQ            = 17 // VIRTIO_NET_F_CTRL_VQ
	FeatureCtrlRx            = 18 // VIRTIO_NET_F_CTRL_RX
	FeatureCtrlVLAN          = 19 // VIRTIO_NET_F_CTRL_VLAN
	FeatureCtrlRxExtra       = 20 // VIRTIO_NET_F_CTRL_RX_EXTRA
	FeatureGuestAnnounce     = 21 // VIRTIO_NET_F_GUEST_ANNOUNCE
	FeatureMQ                = 22 // VIRTIO_NET_F_MQ
	FeatureCtrlMACAddr       = 23 // VIRTIO_NET_F_CTRL_MAC_ADDR
	FeatureNotfCoal          = 53 // VIRTIO_NET_F_NOTF_COAL (not offered)
	FeatureGuestUSO4         = 54 // VIRTIO_NET_F_GUEST_USO4 (not offered: QEMU 7.2)
	FeatureGuestUSO6         = 55 // VIRTIO_NET_F_GUEST_USO6 (not offered)
	FeatureHostUSO           = 56 // VIRTIO_NET_F_HOST_USO (not offered)
	FeatureHashReport        = 57 // VIRTIO_NET_F_HASH_REPORT (not offered)
	FeatureRSS               = 60 // VIRTIO_NET_F_RSS (not offered)
	FeatureRSCExt            = 61 // VIRTIO_NET_F_RSC_EXT
	FeatureStandby           = 62 // VIRTIO_NET_F_STANDBY (not offered)
	FeatureSpeedDuplex       = 63 // VIRTIO_NET_F_SPEED_DUPLEX
)

// Feature masks used by the device.
const (
	// vnetHdrFeatures are the bits QEMU clears when the peer has no
	// virtio-net header (virtio_net_get_features).
	vnetHdrFeatures = 1<<FeatureCSUM | 1<<FeatureHostTSO4 | 1<<FeatureHostTSO6 | 1<<FeatureHostECN |
		1<<FeatureGuestCSUM | 1<<FeatureGuestTSO4 | 1<<FeatureGuestTSO6 | 1<<FeatureGuestECN |
		1<<FeatureHostUSO | 1<<FeatureGuestUSO4 | 1<<FeatureGuestUSO6 | 1<<FeatureHashReport

	// ufoFeatures need a tap that accepts TUN_F_UFO.
	ufoFeatures = 1<<FeatureGuestUFO | 1<<FeatureHostUFO

	// legacyOnlyNet are the device-specific bits only the legacy interface
	// shows (GSO, bit 6).
	legacyOnlyNet = 1 << FeatureGSO

	// RSCOffloadBit is bit 61 in a GUEST_OFFLOADS_SET argument: NetKVM's
	// (and QEMU's) dynamic RSC switch.
	RSCOffloadBit = 1 << FeatureRSCExt
)

// LinuxDriverFeatures is the feature list of Linux 6.1's virtio_net driver
// (its features[] table plus the transport features vring_transport_features
// keeps): what a Linux 6.1 guest acks from whatever the device offers.
const LinuxDriverFeatures uint64 = 1<<FeatureCSUM | 1<<FeatureGuestCSUM | 1<<FeatureCtrlGuestOffloads |
	1<<FeatureMTU | 1<<FeatureMAC | 1<<FeatureGuestTSO4 | 1<<FeatureGuestTSO6 | 1<<FeatureGuestECN |
	1<<FeatureGuestUFO | 1<<FeatureHostTSO4 | 1<<FeatureHostUFO | 1<<FeatureHostTSO6 | 1<<FeatureHostECN |
	1<<FeatureMrgRxBuf | 1<<FeatureStatus | 1<<FeatureCtrlVQ | 1<<FeatureCtrlRx | 1<<FeatureCtrlVLAN |
	1<<FeatureGuestAnnounce | 1<<FeatureMQ | 1<<FeatureCtrlMACAddr | 1<<FeatureSpeedDuplex |
	1<<FeatureStandby | 1<<FeatureRSS | 1<<FeatureHashReport | 1<<FeatureNotfCoal |
	1<<virtio.FeatureIndirectDesc | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureVersion1 |
	1<<virtio.FeatureAccessPlatform | 1<<virtio.FeatureRingPacked | 1<<virtio.FeatureOrderPlatform |
	1<<virtio.FeatureSRIOV | 1<<virtio.FeatureRingReset

// has reports whether feature bit n is set in f.
func has(f uint64, n uint) bool { return f&(1<<n) != 0 }

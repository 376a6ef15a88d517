package ctrl

// Acknowledgement values (virtio_net_ctrl_ack), written by the device into
// the first byte of the chain's device-writable part.
const (
	AckOK  uint8 = 0 // VIRTIO_NET_OK
	AckErr uint8 = 1 // VIRTIO_NET_ERR
)

// Command classes (virtio_net_ctrl_hdr.class).
const (
	ClassRX            uint8 = 0 // VIRTIO_NET_CTRL_RX
	ClassMAC           uint8 = 1 // VIRTIO_NET_CTRL_MAC
	ClassVLAN          uint8 = 2 // VIRTIO_NET_CTRL_VLAN
	ClassAnnounce      uint8 = 3 // VIRTIO_NET_CTRL_ANNOUNCE
	ClassMQ            uint8 = 4 // VIRTIO_NET_CTRL_MQ
	ClassGuestOffloads uint8 = 5 // VIRTIO_NET_CTRL_GUEST_OFFLOADS
	ClassNotfCoal      uint8 = 6 // VIRTIO_NET_CTRL_NOTF_COAL (not implemented: AckErr)
	ClassStats         uint8 = 8 // VIRTIO_NET_CTRL_STATS (not implemented: AckErr)
)

// Commands of ClassRX. The payload is one byte: 0 off, anything else on.
const (
	RXPromisc  uint8 = 0 // VIRTIO_NET_CTRL_RX_PROMISC (CTRL_RX)
	RXAllMulti uint8 = 1 // VIRTIO_NET_CTRL_RX_ALLMULTI (CTRL_RX)
	RXAllUni   uint8 = 2 // VIRTIO_NET_CTRL_RX_ALLUNI (CTRL_RX_EXTRA)
	RXNoMulti  uint8 = 3 // VIRTIO_NET_CTRL_RX_NOMULTI (CTRL_RX_EXTRA)
	RXNoUni    uint8 = 4 // VIRTIO_NET_CTRL_RX_NOUNI (CTRL_RX_EXTRA)
	RXNoBcast  uint8 = 5 // VIRTIO_NET_CTRL_RX_NOBCAST (CTRL_RX_EXTRA)
)

// Commands of ClassMAC.
const (
	MACTableSet uint8 = 0 // VIRTIO_NET_CTRL_MAC_TABLE_SET: le32 n + n*6 (unicast), le32 m + m*6 (multicast)
	MACAddrSet  uint8 = 1 // VIRTIO_NET_CTRL_MAC_ADDR_SET: 6 bytes
)

// Commands of ClassVLAN. The payload is a le16 VLAN id below MaxVLAN.
const (
	VLANAdd uint8 = 0 // VIRTIO_NET_CTRL_VLAN_ADD
	VLANDel uint8 = 1 // VIRTIO_NET_CTRL_VLAN_DEL
)

// Commands of ClassAnnounce.
const (
	AnnounceAck uint8 = 0 // VIRTIO_NET_CTRL_ANNOUNCE_ACK: no payload
)

// Commands of ClassMQ.
const (
	MQVQPairsSet uint8 = 0 // VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: le16 pairs
	MQRSSConfig  uint8 = 1 // VIRTIO_NET_CTRL_MQ_RSS_CONFIG (RSS not offered: AckErr)
	MQHashConfig uint8 = 2 // VIRTIO_NET_CTRL_MQ_HASH_CONFIG (HASH_REPORT not offered: AckErr)
)

// Commands of ClassGuestOffloads.
const (
	GuestOffloadsSet uint8 = 0 // VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET: le64 offload bits
)

// virtio-net feature bit numbers this package interprets.
const (
	FeatureGuestCSUM         = 1  // VIRTIO_NET_F_GUEST_CSUM
	FeatureCtrlGuestOffloads = 2  // VIRTIO_NET_F_CTRL_GUEST_OFFLOADS
	FeatureGuestTSO4         = 7  // VIRTIO_NET_F_GUEST_TSO4
	FeatureGuestTSO6         = 8  // VIRTIO_NET_F_GUEST_TSO6
	FeatureGuestECN          = 9  // VIRTIO_NET_F_GUEST_ECN
	FeatureGuestUFO          = 10 // VIRTIO_NET_F_GUEST_UFO
	FeatureCtrlVQ            = 17 // VIRTIO_NET_F_CTRL_VQ
	FeatureCtrlRX            = 18 // VIRTIO_NET_F_CTRL_RX
	FeatureCtrlVLAN          = 19 // VIRTIO_NET_F_CTRL_VLAN
	FeatureCtrlRXExtra       = 20 // VIRTIO_NET_F_CTRL_RX_EXTRA
	FeatureGuestAnnounce     = 21 // VIRTIO_NET_F_GUEST_ANNOUNCE
	FeatureMQ                = 22 // VIRTIO_NET_F_MQ
	FeatureCtrlMACAddr       = 23 // VIRTIO_NET_F_CTRL_MAC_ADDR
	FeatureGuestUSO4         = 54 // VIRTIO_NET_F_GUEST_USO4
	FeatureGuestUSO6         = 55 // VIRTIO_NET_F_GUEST_USO6
	FeatureHashReport        = 57 // VIRTIO_NET_F_HASH_REPORT (never offered with this package)
	FeatureRSS               = 60 // VIRTIO_NET_F_RSS (never offered with this package)
	FeatureRSCExt            = 61 // VIRTIO_NET_F_RSC_EXT
)

// GuestOffloadMask holds the feature bits that GUEST_OFFLOADS_SET can turn
// on and off (virtio 1.2 §5.1.6.5.6.1): GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN,
// GUEST_UFO and GUEST_USO4/6.
const GuestOffloadMask uint64 = 1<<FeatureGuestCSUM | 1<<FeatureGuestTSO4 | 1<<FeatureGuestTSO6 |
	1<<FeatureGuestECN | 1<<FeatureGuestUFO | 1<<FeatureGuestUSO4 | 1<<FeatureGuestUSO6

// OffloadRSCExt is bit 61 (RSC_EXT) in a GUEST_OFFLOADS_SET value. NetKVM
// sets it to ask for QEMU-style receive segment coalescing; it is accepted
// and stripped, never stored in Offloads.
const OffloadRSCExt uint64 = 1 << FeatureRSCExt

// Limits.
const (
	HeaderSize      = 2       // struct virtio_net_ctrl_hdr: u8 class, u8 cmd
	AckSize         = 1       // virtio_net_ctrl_ack
	MACTableEntries = 64      // QEMU's MAC_TABLE_ENTRIES, shared by unicast and multicast
	MaxVLAN         = 4096    // VLAN ids are 12 bits
	MaxQueuePairs   = 0x8000  // VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX
	MaxPayloadSize  = 1 << 16 // largest command-specific-data ParseCommand reads (see ParseCommand)
)

// MAC is an Ethernet address.
type MAC = [6]byte

var broadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

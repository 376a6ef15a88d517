package virtionet

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rscvm/rscvm/virtio"
)

// Property defaults and limits (QEMU 7.2 hw/net/virtio-net.c).
const (
	DefaultQueueSize     = 256    // rx_queue_size and tx_queue_size
	MinQueueSize         = 256    // smallest rx/tx_queue_size QEMU accepts
	MaxQueueSize         = 1024   // largest rx/tx_queue_size QEMU accepts
	MaxTapTxQueueSize    = 256    // the tx queue size QEMU uses with a tap peer
	CtrlQueueSize        = 64     // control virtqueue size
	DefaultRSCInterval   = 300000 // rsc_interval default, ns (VIRTIO_NET_RSC_DEFAULT_INTERVAL)
	SpeedUnknown         = -1     // speed property / config value for "unknown"
	DuplexUnknown        = 0xFF   // duplex config value for "unknown"
	DuplexHalf           = 0x00   // duplex config value "half"
	DuplexFull           = 0x01   // duplex config value "full"
	defaultMACPrefix0    = 0x52   // QEMU's auto-generated MACs are 52:54:00:xx:xx:xx
	maxRSCIntervalString = "4294967295"
)

// Config is the virtio-net device configuration: the properties of QEMU's
// virtio-net device (-device virtio-net-pci,...) that concern the device
// model, with QEMU's names and defaults (see DefaultConfig), plus rscvm's
// x-rsc-gso. Transport properties (addr, vectors, disable-legacy,
// disable-modern, ...) and frontend keys (driver, id, netdev) are not part of
// it: the caller handles them before handing the rest to Set.
type Config struct {
	// Feature-bit properties, on by default.
	CSUM              bool // csum: VIRTIO_NET_F_CSUM
	GuestCSUM         bool // guest_csum: VIRTIO_NET_F_GUEST_CSUM
	GSO               bool // gso: VIRTIO_NET_F_GSO (legacy interface only)
	GuestTSO4         bool // guest_tso4
	GuestTSO6         bool // guest_tso6
	GuestECN          bool // guest_ecn
	GuestUFO          bool // guest_ufo
	GuestAnnounce     bool // guest_announce
	HostTSO4          bool // host_tso4
	HostTSO6          bool // host_tso6
	HostECN           bool // host_ecn
	HostUFO           bool // host_ufo
	MrgRxBuf          bool // mrg_rxbuf
	Status            bool // status
	CtrlVQ            bool // ctrl_vq
	CtrlRx            bool // ctrl_rx
	CtrlVLAN          bool // ctrl_vlan
	CtrlRxExtra       bool // ctrl_rx_extra
	CtrlMACAddr       bool // ctrl_mac_addr
	CtrlGuestOffloads bool // ctrl_guest_offloads

	// Feature-bit properties, off by default.
	MQ          bool // mq: VIRTIO_NET_F_MQ
	GuestRSCExt bool // guest_rsc_ext: VIRTIO_NET_F_RSC_EXT

	// RSCInterval is rsc_interval in nanoseconds (0..4294967295, default
	// 300000): the longest a segment waits in a coalesced packet.
	RSCInterval uint32
	// RSCGSO (x-rsc-gso, rscvm only, default off) coalesces TCP segments
	// for guests that negotiated GUEST_TSO4/6 but not RSC_EXT and delivers
	// the result as standard GSO packets.
	RSCGSO bool
	// RSCBatchFlush (x-rsc-batch-flush, rscvm only, default on) flushes
	// coalesced packets at the end of every TAP read batch; off leaves
	// rsc_interval as the only flush timer (QEMU's behaviour, which
	// timing-based conformance tests such as the HCK RSC test expect).
	RSCBatchFlush bool

	// MAC is the station address (mac=); nil means a generated
	// 52:54:00:xx:xx:xx address (NewDefaultMAC).
	MAC net.HardwareAddr

	// RxQueueSize and TxQueueSize (rx_queue_size, tx_queue_size) are powers
	// of two in 256..1024. With a tap peer QEMU uses at most 256 tx entries
	// (TxSize).
	RxQueueSize uint16
	TxQueueSize uint16

	// HostMTU (host_mtu) > 0 offers VIRTIO_NET_F_MTU with this MTU.
	HostMTU uint16
	// Speed (speed, Mb/s, -1 unknown) and Duplex (duplex: "", "half",
	// "full"): setting either offers VIRTIO_NET_F_SPEED_DUPLEX.
	Speed  int32
	Duplex string

	// Common virtio properties.
	IndirectDesc  bool // indirect_desc (on)
	EventIdx      bool // event_idx (on)
	AnyLayout     bool // any_layout (on, legacy only)
	NotifyOnEmpty bool // notify_on_empty (on, legacy only)
	QueueReset    bool // queue_reset (on): VIRTIO_F_RING_RESET

	// Modern (disable-modern=off, the default) offers VIRTIO_F_VERSION_1.
	// The transport sets it from its own property; Set does not touch it.
	Modern bool
}

// DefaultConfig returns QEMU 7.2's defaults for -device virtio-net-pci.
func DefaultConfig() Config {
	return Config{
		CSUM: true, GuestCSUM: true, GSO: true, GuestTSO4: true, GuestTSO6: true, GuestECN: true,
		GuestUFO: true, GuestAnnounce: true, HostTSO4: true, HostTSO6: true, HostECN: true, HostUFO: true,
		MrgRxBuf: true, Status: true, CtrlVQ: true, CtrlRx: true, CtrlVLAN: true, CtrlRxExtra: true,
		CtrlMACAddr: true, CtrlGuestOffloads: true,
		RSCInterval: DefaultRSCInterval, RSCBatchFlush: true,
		RxQueueSize: DefaultQueueSize, TxQueueSize: DefaultQueueSize,
		Speed:        SpeedUnknown,
		IndirectDesc: true, EventIdx: true, AnyLayout: true, NotifyOnEmpty: true, QueueReset: true,
		Modern: true,
	}
}

// boolProps maps the boolean property names to their fields.
func (c *Config) boolProps() map[string]*bool {
	return map[string]*bool{
		"csum": &c.CSUM, "guest_csum": &c.GuestCSUM, "gso": &c.GSO,
		"guest_tso4": &c.GuestTSO4, "guest_tso6": &c.GuestTSO6, "guest_ecn": &c.GuestECN,
		"guest_ufo": &c.GuestUFO, "guest_announce": &c.GuestAnnounce,
		"host_tso4": &c.HostTSO4, "host_tso6": &c.HostTSO6, "host_ecn": &c.HostECN, "host_ufo": &c.HostUFO,
		"mrg_rxbuf": &c.MrgRxBuf, "status": &c.Status, "ctrl_vq": &c.CtrlVQ, "ctrl_rx": &c.CtrlRx,
		"ctrl_vlan": &c.CtrlVLAN, "ctrl_rx_extra": &c.CtrlRxExtra, "ctrl_mac_addr": &c.CtrlMACAddr,
		"ctrl_guest_offloads": &c.CtrlGuestOffloads, "mq": &c.MQ, "guest_rsc_ext": &c.GuestRSCExt,
		"x-rsc-gso": &c.RSCGSO, "x-rsc-batch-flush": &c.RSCBatchFlush,
		"indirect_desc": &c.IndirectDesc, "event_idx": &c.EventIdx, "any_layout": &c.AnyLayout,
		"notify_on_empty": &c.NotifyOnEmpty, "queue_reset": &c.QueueReset,
	}
}

// unsupportedOff are QEMU properties rscvm knows but does not implement:
// they are accepted only with a false value.
var unsupportedOff = map[string]string{
	"rss":            "RSS is not implemented",
	"hash":           "hash reporting is not implemented",
	"failover":       "failover (STANDBY) is not implemented",
	"iommu_platform": "VIRTIO_F_ACCESS_PLATFORM is not implemented",
	"packed":         "packed virtqueues are not implemented",
	"in_order":       "VIRTIO_F_IN_ORDER is not implemented",
}

// ignoredKeys are accepted and ignored (with a warning by the caller).
var ignoredKeys = map[string]bool{
	"vhost": true, "vhostforce": true, "poll-us": true, "ioeventfd": true, "tx": true,
	"x-txtimer": true, "x-txburst": true, "romfile": true, "rombar": true, "bootindex": true,
	"page-per-vq": true, "ats": true,
}

// IsIgnored reports whether key is a property rscvm accepts and ignores
// (the caller logs a warning): vhost, vhostforce, poll-us, ioeventfd, tx,
// x-txtimer, x-txburst, romfile, rombar, bootindex, page-per-vq, ats, and
// every other x-* key except rscvm's x-rsc-gso and x-rsc-batch-flush.
func IsIgnored(key string) bool {
	if ignoredKeys[key] {
		return true
	}
	return strings.HasPrefix(key, "x-") && key != "x-rsc-gso" && key != "x-rsc-batch-flush"
}

// boolValues is how QEMU spells booleans (qapi_bool_parse).
const boolValues = "on/off, yes/no, true/false, y/n"

// ParseBool parses a QEMU boolean: on/yes/true/y or off/no/false/n.
func ParseBool(s string) (bool, error) {
	switch s {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (%s)", s, boolValues)
}

// parseUint parses a QEMU integer (decimal or 0x hexadecimal) no larger
// than max.
func parseUint(s string, max uint64) (uint64, error) {
	var v uint64
	var err error
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		v, err = strconv.ParseUint(s[2:], 16, 64)
	} else {
		v, err = strconv.ParseUint(s, 10, 64)
	}
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer (decimal or 0x hexadecimal)", s)
	}
	if v > max {
		return 0, fmt.Errorf("%s is out of range", s)
	}
	return v, nil
}

// Set applies one key=value property with QEMU's spelling of values:
// booleans on/off/yes/no/true/false/y/n, integers in decimal or 0x
// hexadecimal, mac as xx:xx:xx:xx:xx:xx (or with '-'), duplex half/full.
// Errors name the key and the accepted values. Ignored keys (IsIgnored)
// return nil without changing anything; unknown keys are an error.
func (c *Config) Set(key, value string) error {
	if p, ok := c.boolProps()[key]; ok {
		v, err := ParseBool(value)
		if err != nil {
			return fmt.Errorf("virtio-net property %s: %w", key, err)
		}
		*p = v
		return nil
	}
	if why, ok := unsupportedOff[key]; ok {
		v, err := ParseBool(value)
		if err != nil {
			return fmt.Errorf("virtio-net property %s: %w", key, err)
		}
		if v {
			return fmt.Errorf("virtio-net property %s: only off is accepted (%s)", key, why)
		}
		return nil
	}
	switch key {
	case "rsc_interval":
		v, err := parseUint(value, math.MaxUint32)
		if err != nil {
			return fmt.Errorf("virtio-net property rsc_interval: %w: nanoseconds in 0..%s", err, maxRSCIntervalString)
		}
		c.RSCInterval = uint32(v)
	case "mac":
		mac, err := ParseMAC(value)
		if err != nil {
			return fmt.Errorf("virtio-net property mac: %w", err)
		}
		c.MAC = mac
	case "rx_queue_size", "tx_queue_size":
		v, err := parseUint(value, math.MaxUint16)
		if err == nil && !validQueueSize(v) {
			err = fmt.Errorf("%s is not valid", value)
		}
		if err != nil {
			return fmt.Errorf("virtio-net property %s: %w: must be a power of 2 between %d and %d",
				key, err, MinQueueSize, MaxQueueSize)
		}
		if key == "rx_queue_size" {
			c.RxQueueSize = uint16(v)
		} else {
			c.TxQueueSize = uint16(v)
		}
	case "host_mtu":
		v, err := parseUint(value, math.MaxUint16)
		if err != nil {
			return fmt.Errorf("virtio-net property host_mtu: %w: 0..65535 (0 = not offered)", err)
		}
		c.HostMTU = uint16(v)
	case "speed":
		v, err := parseSpeed(value)
		if err != nil {
			return fmt.Errorf("virtio-net property speed: %w: Mb/s in -1..%d (-1 = unknown)", err, math.MaxInt32)
		}
		c.Speed = v
	case "duplex":
		if value != "half" && value != "full" {
			return fmt.Errorf("virtio-net property duplex: %q is not valid: 'duplex' must be 'half' or 'full'", value)
		}
		c.Duplex = value
	default:
		if IsIgnored(key) {
			return nil
		}
		return fmt.Errorf("virtio-net: unknown property %q", key)
	}
	return nil
}

func parseSpeed(s string) (int32, error) {
	if s == "-1" {
		return SpeedUnknown, nil
	}
	v, err := parseUint(s, math.MaxInt32)
	if err != nil {
		return 0, err
	}
	return int32(v), nil
}

func validQueueSize(v uint64) bool {
	return v >= MinQueueSize && v <= MaxQueueSize && v&(v-1) == 0
}

// ParseMAC parses a MAC address written as six hexadecimal byte pairs
// separated by ':' or '-'.
func ParseMAC(s string) (net.HardwareAddr, error) {
	sep := ":"
	if strings.Contains(s, "-") {
		sep = "-"
	}
	parts := strings.Split(s, sep)
	if len(parts) != 6 {
		return nil, fmt.Errorf("%q is not a MAC address (xx:xx:xx:xx:xx:xx)", s)
	}
	mac := make(net.HardwareAddr, 6)
	for i, p := range parts {
		if len(p) == 0 || len(p) > 2 {
			return nil, fmt.Errorf("%q is not a MAC address (xx:xx:xx:xx:xx:xx)", s)
		}
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil {
			return nil, fmt.Errorf("%q is not a MAC address (xx:xx:xx:xx:xx:xx)", s)
		}
		mac[i] = byte(v)
	}
	return mac, nil
}

// Validate checks the values a Config literal may have set directly (Set
// checks each property as it is parsed).
func (c *Config) Validate() error {
	if !validQueueSize(uint64(c.RxQueueSize)) {
		return fmt.Errorf("virtio-net: rx_queue_size %d: must be a power of 2 between %d and %d",
			c.RxQueueSize, MinQueueSize, MaxQueueSize)
	}
	if !validQueueSize(uint64(c.TxQueueSize)) {
		return fmt.Errorf("virtio-net: tx_queue_size %d: must be a power of 2 between %d and %d",
			c.TxQueueSize, MinQueueSize, MaxQueueSize)
	}
	if c.Speed < SpeedUnknown {
		return fmt.Errorf("virtio-net: speed %d: must be between -1 and %d", c.Speed, math.MaxInt32)
	}
	if c.Duplex != "" && c.Duplex != "half" && c.Duplex != "full" {
		return fmt.Errorf("virtio-net: duplex %q: 'duplex' must be 'half' or 'full'", c.Duplex)
	}
	if c.MAC != nil && len(c.MAC) != 6 {
		return fmt.Errorf("virtio-net: mac %v: not a 6-byte Ethernet address", c.MAC)
	}
	return nil
}

// TxSize is the tx queue size used with a tap peer: QEMU clamps
// tx_queue_size to 256 unless the peer is vhost-user or vDPA.
func (c *Config) TxSize() uint16 { return min(c.TxQueueSize, MaxTapTxQueueSize) }

// speedDuplex reports whether VIRTIO_NET_F_SPEED_DUPLEX is offered: speed
// ≥ 0 or duplex given, as in QEMU.
func (c *Config) speedDuplex() bool {
	return c.Speed >= 0 || c.Duplex != ""
}

// duplexValue is the config-space duplex byte.
func (c *Config) duplexValue() uint8 {
	switch c.Duplex {
	case "half":
		return DuplexHalf
	case "full":
		return DuplexFull
	}
	return DuplexUnknown
}

// RSCIntervalDuration is rsc_interval as a time.Duration.
func (c *Config) RSCIntervalDuration() time.Duration { return time.Duration(c.RSCInterval) }

// BackendCaps is what the peer (the tap) supports, for feature pruning
// (QEMU virtio_net_get_features).
type BackendCaps struct {
	// VnetHdr: the peer carries a virtio-net header (tap with
	// IFF_VNET_HDR). Without it every checksum/GSO offload is dropped.
	VnetHdr bool
	// UFO: the peer accepted TUNSETOFFLOAD(CSUM|UFO). Without it
	// GUEST_UFO and HOST_UFO are dropped.
	UFO bool
	// Queues is the number of peer queues (tap queues=): the
	// max_virtqueue_pairs value with mq=on.
	Queues int
}

// Features returns the feature bits the device offers with this
// configuration and backend, legacy-only bits included (the transport hides
// GSO, NOTIFY_ON_EMPTY, ANY_LAYOUT and BAD_FEATURE from the modern
// interface). USO (bits 54-56), RSS, HASH_REPORT and STANDBY are never
// offered (QEMU 7.2 defaults); RSC_EXT only with guest_rsc_ext=on and one
// of GUEST_TSO4/6 offered.
func (c *Config) Features(b BackendCaps) uint64 {
	var f uint64
	set := func(on bool, bit uint) {
		if on {
			f |= 1 << bit
		}
	}
	set(c.CSUM, FeatureCSUM)
	set(c.GuestCSUM, FeatureGuestCSUM)
	set(c.CtrlGuestOffloads, FeatureCtrlGuestOffloads)
	set(c.HostMTU != 0, FeatureMTU)
	set(true, FeatureMAC)
	set(c.GSO, FeatureGSO)
	set(c.GuestTSO4, FeatureGuestTSO4)
	set(c.GuestTSO6, FeatureGuestTSO6)
	set(c.GuestECN, FeatureGuestECN)
	set(c.GuestUFO, FeatureGuestUFO)
	set(c.HostTSO4, FeatureHostTSO4)
	set(c.HostTSO6, FeatureHostTSO6)
	set(c.HostECN, FeatureHostECN)
	set(c.HostUFO, FeatureHostUFO)
	set(c.MrgRxBuf, FeatureMrgRxBuf)
	set(c.Status, FeatureStatus)
	set(c.CtrlVQ, FeatureCtrlVQ)
	set(c.CtrlRx, FeatureCtrlRx)
	set(c.CtrlVLAN, FeatureCtrlVLAN)
	set(c.CtrlRxExtra, FeatureCtrlRxExtra)
	set(c.GuestAnnounce, FeatureGuestAnnounce)
	set(c.MQ, FeatureMQ)
	set(c.CtrlMACAddr, FeatureCtrlMACAddr)
	set(c.speedDuplex(), FeatureSpeedDuplex)
	set(c.NotifyOnEmpty, virtio.FeatureNotifyOnEmpty)
	set(c.AnyLayout, virtio.FeatureAnyLayout)
	set(c.IndirectDesc, virtio.FeatureIndirectDesc)
	set(c.EventIdx, virtio.FeatureEventIdx)
	set(true, virtio.FeatureBadFeature)
	set(c.Modern, virtio.FeatureVersion1)
	set(c.QueueReset, virtio.FeatureRingReset)

	if !b.VnetHdr {
		f &^= vnetHdrFeatures
	}
	if !b.VnetHdr || !b.UFO {
		f &^= ufoFeatures
	}
	if c.GuestRSCExt && f&(1<<FeatureGuestTSO4|1<<FeatureGuestTSO6) != 0 {
		f |= 1 << FeatureRSCExt
	}
	return f
}

// NewDefaultMAC returns a QEMU-style locally generated address
// 52:54:00:12:34:(0x56+index), as QEMU's qemu_macaddr_default_if_unset
// numbers NICs.
func NewDefaultMAC(index int) net.HardwareAddr {
	return net.HardwareAddr{defaultMACPrefix0, 0x54, 0x00, 0x12, 0x34, byte(0x56 + index)}
}

package ctrl

// Config is what the device offered and the driver negotiated that matters
// to the control plane. The device builds it after FEATURES_OK (see
// ConfigFromFeatures) and passes it to New or Configure.
type Config struct {
	// CtrlRX: VIRTIO_NET_F_CTRL_RX. Enables RX PROMISC/ALLMULTI and MAC
	// TABLE_SET.
	CtrlRX bool
	// CtrlRXExtra: VIRTIO_NET_F_CTRL_RX_EXTRA. Enables RX ALLUNI, NOMULTI,
	// NOUNI and NOBCAST (together with CtrlRX).
	CtrlRXExtra bool
	// CtrlVLAN: VIRTIO_NET_F_CTRL_VLAN. Enables VLAN ADD/DEL and VLAN
	// filtering of received frames.
	CtrlVLAN bool
	// CtrlMACAddr: VIRTIO_NET_F_CTRL_MAC_ADDR. Enables MAC ADDR_SET.
	CtrlMACAddr bool
	// CtrlGuestOffloads: VIRTIO_NET_F_CTRL_GUEST_OFFLOADS negotiated and the
	// backend has a vnet header (QEMU refuses the command without one).
	CtrlGuestOffloads bool
	// GuestAnnounce: VIRTIO_NET_F_GUEST_ANNOUNCE (and CTRL_VQ) negotiated.
	GuestAnnounce bool
	// MQ: VIRTIO_NET_F_MQ. Enables VQ_PAIRS_SET.
	MQ bool
	// MaxQueuePairs is max_virtqueue_pairs. 0 is taken as 1; values above
	// MaxQueuePairs (0x8000) are clamped.
	MaxQueuePairs uint16
	// GuestOffloads are the negotiated guest offload feature bits
	// (negotiated & GuestOffloadMask): the bits GUEST_OFFLOADS_SET may
	// enable, and the offloads in effect after negotiation. Bits outside
	// GuestOffloadMask are ignored. Bit 61 is accepted by the command
	// regardless (see OffloadRSCExt).
	GuestOffloads uint64
	// RSCExt: VIRTIO_NET_F_RSC_EXT negotiated. RSC (QEMU's rsc4/rsc6) is
	// enabled only with it.
	RSCExt bool
}

// ConfigFromFeatures derives a Config from the negotiated feature bits,
// the device's max_virtqueue_pairs and whether the backend has a vnet
// header (tap with IFF_VNET_HDR). Like QEMU it does not require CTRL_VQ for
// the individual control features (QEMU creates the control queue for
// drivers that use it without acking CTRL_VQ), except for GUEST_ANNOUNCE,
// which QEMU only honours together with CTRL_VQ.
func ConfigFromFeatures(negotiated uint64, maxPairs uint16, vnetHdr bool) Config {
	has := func(bit uint) bool { return negotiated&(1<<bit) != 0 }
	return Config{
		CtrlRX:            has(FeatureCtrlRX),
		CtrlRXExtra:       has(FeatureCtrlRXExtra),
		CtrlVLAN:          has(FeatureCtrlVLAN),
		CtrlMACAddr:       has(FeatureCtrlMACAddr),
		CtrlGuestOffloads: has(FeatureCtrlGuestOffloads) && vnetHdr,
		GuestAnnounce:     has(FeatureGuestAnnounce) && has(FeatureCtrlVQ),
		MQ:                has(FeatureMQ),
		MaxQueuePairs:     maxPairs,
		GuestOffloads:     negotiated & GuestOffloadMask,
		RSCExt:            has(FeatureRSCExt),
	}
}

// normalized returns c with MaxQueuePairs in [1, MaxQueuePairs] and
// GuestOffloads restricted to GuestOffloadMask.
func (c Config) normalized() Config {
	c.MaxQueuePairs = max(1, min(c.MaxQueuePairs, MaxQueuePairs))
	c.GuestOffloads &= GuestOffloadMask
	return c
}

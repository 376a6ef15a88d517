package ctrl

import "slices"

// RxMode is the set of receive modes of the VIRTIO_NET_CTRL_RX class.
type RxMode struct {
	Promisc  bool // receive everything
	AllMulti bool // receive all multicast
	AllUni   bool // receive all unicast
	NoMulti  bool // receive no multicast (broadcast excepted)
	NoUni    bool // receive no unicast
	NoBcast  bool // receive no broadcast
}

// MACTable is a copy of the MAC filter table.
type MACTable struct {
	Unicast   []MAC // unicast filter entries (empty when UnicastOverflow)
	Multicast []MAC // multicast filter entries (empty when MulticastOverflow)
	// UnicastOverflow: the last TABLE_SET had more unicast entries than fit
	// (QEMU's uni_overflow); every unicast frame passes the MAC filter.
	UnicastOverflow bool
	// MulticastOverflow: the multicast entries did not fit in the slots left
	// (QEMU's multi_overflow); every multicast frame passes the MAC filter.
	MulticastOverflow bool
}

// State is the control-plane state of one virtio-net device. The zero
// value is not usable; use New.
//
// State is a plain comparable value (no pointers or slices), so a copy is a
// complete snapshot.
type State struct {
	cfg        Config
	defaultMAC MAC // the configured MAC, restored by Reset
	mac        MAC // current MAC (ADDR_SET, SetMAC)
	rx         RxMode

	macs          [MACTableEntries]MAC // unicast in [0,firstMulti), multicast in [firstMulti,inUse)
	inUse         int
	firstMulti    int
	uniOverflow   bool
	multiOverflow bool

	vlans [MaxVLAN / 64]uint64 // bit v set: VLAN id v is in the filter table

	offloads   uint64 // current guest offloads (GuestOffloadMask bits only)
	rscRequest bool   // bit 61 of the last accepted GUEST_OFFLOADS_SET (or RSCExt after negotiation)
	pairs      uint16 // current queue pairs, 1..cfg.MaxQueuePairs
	announce   bool   // VIRTIO_NET_S_ANNOUNCE is set
}

// New returns the state of a freshly reset device with the given
// negotiated configuration and configured MAC address.
func New(cfg Config, mac MAC) *State {
	s := &State{defaultMAC: mac}
	s.Configure(cfg)
	return s
}

// Configure replaces the negotiated configuration and resets the state
// (see Reset). Call it when the driver completes feature negotiation; the
// offloads then become cfg.GuestOffloads, as QEMU's set_features does.
func (s *State) Configure(cfg Config) {
	s.cfg = cfg.normalized()
	s.Reset()
}

// Reset returns the state to what QEMU's virtio_net_reset leaves:
// promiscuous on and every other mode off, empty MAC and VLAN tables,
// overflow flags cleared, the configured MAC, one queue pair, no pending
// announcement; the offloads are the negotiated GuestOffloads and RSC is
// on when RSC_EXT was negotiated.
func (s *State) Reset() {
	*s = State{
		cfg:        s.cfg,
		defaultMAC: s.defaultMAC,
		mac:        s.defaultMAC,
		rx:         RxMode{Promisc: true},
		offloads:   s.cfg.GuestOffloads,
		rscRequest: s.cfg.RSCExt,
		pairs:      1,
	}
}

// Config returns the (normalized) negotiated configuration.
func (s *State) Config() Config { return s.cfg }

// RxMode returns the current receive modes.
func (s *State) RxMode() RxMode { return s.rx }

// MAC returns the current MAC address: the configured one, or the last one
// set with MAC ADDR_SET or SetMAC. The device reports it in config space.
func (s *State) MAC() MAC { return s.mac }

// DefaultMAC returns the configured MAC address that Reset restores.
func (s *State) DefaultMAC() MAC { return s.defaultMAC }

// SetMAC changes the current MAC address outside the control queue: for a
// legacy driver writing mac in config space without CTRL_MAC_ADDR (QEMU
// allows that only when neither CTRL_MAC_ADDR nor VERSION_1 was
// negotiated; the device checks that).
func (s *State) SetMAC(mac MAC) { s.mac = mac }

// MACTable returns a copy of the MAC filter table.
func (s *State) MACTable() MACTable {
	return MACTable{
		Unicast:           slices.Clone(s.macs[:s.firstMulti]),
		Multicast:         slices.Clone(s.macs[s.firstMulti:s.inUse]),
		UnicastOverflow:   s.uniOverflow,
		MulticastOverflow: s.multiOverflow,
	}
}

// VLANFiltering reports whether received VLAN-tagged frames are filtered
// by the VLAN table (CTRL_VLAN negotiated).
func (s *State) VLANFiltering() bool { return s.cfg.CtrlVLAN }

// VLANAllowed reports whether a frame tagged with VLAN id vid passes the
// VLAN filter: always when VLAN filtering is off, else when vid is in the
// table. Ids of MaxVLAN and above never pass a filtering device.
func (s *State) VLANAllowed(vid uint16) bool {
	if !s.cfg.CtrlVLAN {
		return true
	}
	return vid < MaxVLAN && s.vlanSet(vid)
}

// VLANs returns the VLAN ids in the filter table, in ascending order.
func (s *State) VLANs() []uint16 {
	var ids []uint16
	for vid := range uint16(MaxVLAN) {
		if s.vlanSet(vid) {
			ids = append(ids, vid)
		}
	}
	return ids
}

func (s *State) vlanSet(vid uint16) bool { return s.vlans[vid>>6]&(1<<(vid&63)) != 0 }

// Offloads returns the guest offload bits in effect (a subset of
// Config().GuestOffloads, never bit 61). The device maps them to
// TUNSETOFFLOAD flags.
func (s *State) Offloads() uint64 { return s.offloads }

// RSC reports whether receive segment coalescing is on for IPv4 and IPv6,
// as QEMU's rsc4_enabled and rsc6_enabled: RSC_EXT negotiated, bit 61 in
// the last accepted GUEST_OFFLOADS_SET (or, before any, RSC_EXT negotiated)
// and GUEST_TSO4 respectively GUEST_TSO6 in the offloads.
func (s *State) RSC() (v4, v6 bool) {
	on := s.cfg.RSCExt && s.rscRequest
	return on && s.offloads&(1<<FeatureGuestTSO4) != 0, on && s.offloads&(1<<FeatureGuestTSO6) != 0
}

// QueuePairs returns the number of queue pairs in use (1 after reset).
func (s *State) QueuePairs() uint16 { return s.pairs }

// RequestAnnounce asks the driver to announce itself (after migration):
// when GUEST_ANNOUNCE was negotiated it marks the announcement pending and
// returns true; the device then sets VIRTIO_NET_S_ANNOUNCE in config-space
// status and sends a configuration change notification. It returns false,
// changing nothing, without GUEST_ANNOUNCE.
func (s *State) RequestAnnounce() bool {
	if !s.cfg.GuestAnnounce {
		return false
	}
	s.announce = true
	return true
}

// AnnouncePending reports whether VIRTIO_NET_S_ANNOUNCE is set: requested
// with RequestAnnounce and not yet acknowledged with ANNOUNCE_ACK.
func (s *State) AnnouncePending() bool { return s.announce }

package ctrl

// Ethernet header layout used by the receive filter.
const (
	ethHeaderLen = 14     // destination, source, EtherType/TPID
	vlanTagEnd   = 16     // the 802.1Q TCI ends here
	tpid8021Q    = 0x8100 // the only TPID QEMU's filter recognises
)

// Accept reports whether a frame received from the network is delivered to
// the driver, applying the receive modes, the MAC table and the VLAN table
// the way QEMU's receive_filter does (see the package documentation).
// frame starts at the Ethernet destination address (no virtio-net header).
// Accept reads at most the first 16 bytes (destination, source, TPID and
// 802.1Q TCI), so a prefix of at least that length may be passed instead
// of the whole frame; a shorter frame is judged by its own length. Accept
// does not allocate and does not modify the State, so a copy of the State
// (a snapshot) may filter in another goroutine while the original changes.
func (s *State) Accept(frame []byte) bool {
	if s.rx.Promisc {
		return true
	}
	if len(frame) < ethHeaderLen {
		return false
	}
	if s.cfg.CtrlVLAN && uint16(frame[12])<<8|uint16(frame[13]) == tpid8021Q {
		if len(frame) < vlanTagEnd {
			return false
		}
		vid := (uint16(frame[14])<<8 | uint16(frame[15])) & (MaxVLAN - 1)
		if !s.vlanSet(vid) {
			return false
		}
	}
	dst := MAC(frame[:6])
	if dst[0]&1 != 0 { // group address
		switch {
		case dst == broadcastMAC:
			return !s.rx.NoBcast
		case s.rx.NoMulti:
			return false
		case s.rx.AllMulti || s.multiOverflow:
			return true
		}
		for i := s.firstMulti; i < s.inUse; i++ {
			if s.macs[i] == dst {
				return true
			}
		}
		return false
	}
	switch {
	case s.rx.NoUni:
		return false
	case s.rx.AllUni || s.uniOverflow:
		return true
	case dst == s.mac:
		return true
	}
	for i := range s.firstMulti {
		if s.macs[i] == dst {
			return true
		}
	}
	return false
}

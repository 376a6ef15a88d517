package ctrl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Change is a set of flags saying what an accepted command set.
type Change uint16

// Change flags. A flag is reported for every accepted command of its kind,
// even if the new value equals the old one (QEMU re-applies offloads and
// queue pairs each time too).
const (
	ChangeRxMode      Change = 1 << iota // a receive mode (RxMode)
	ChangeMACTable                       // the MAC filter table (MACTable)
	ChangeMAC                            // the current MAC (Event.MAC): update config space
	ChangeVLAN                           // the VLAN filter table
	ChangeAnnounceAck                    // the pending announcement was acknowledged: clear VIRTIO_NET_S_ANNOUNCE, step the announce timer
	ChangeQueuePairs                     // the queue pairs in use (Event.QueuePairs): attach/detach tap queues
	ChangeOffloads                       // the guest offloads (Event.Offloads, Event.RSC4/6): TUNSETOFFLOAD, RSC switch
)

// ChangeRxFilter are the changes that affect the receive filter (QEMU
// sends its NIC_RX_FILTER_CHANGED event for these).
const ChangeRxFilter = ChangeRxMode | ChangeMACTable | ChangeMAC | ChangeVLAN

var changeNames = [...]string{"rx-mode", "mac-table", "mac", "vlan", "announce-ack", "queue-pairs", "offloads"}

// String lists the flags, for logs.
func (c Change) String() string {
	if c == 0 {
		return "none"
	}
	var parts []string
	for i, n := range changeNames {
		if c&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	if rest := c &^ (1<<len(changeNames) - 1); rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint16(rest)))
	}
	return strings.Join(parts, "|")
}

// Event reports what an accepted command changed, so the device can act.
// It is the zero Event for a rejected command.
type Event struct {
	Changes    Change
	MAC        MAC    // with ChangeMAC: the new current MAC
	QueuePairs uint16 // with ChangeQueuePairs: the new number of queue pairs
	Offloads   uint64 // with ChangeOffloads: the new guest offloads (bit 61 stripped)
	RSC4, RSC6 bool   // with ChangeOffloads: RSC on for IPv4/IPv6 (see State.RSC)
}

// Has reports whether any of the flags in c is set.
func (e Event) Has(c Change) bool { return e.Changes&c != 0 }

// Reasons for rejecting a command. Errors returned by Apply wrap one of them.
var (
	ErrUnknownCommand = errors.New("unknown control command")
	ErrUnsupported    = errors.New("control command not supported by this device")
	ErrNotNegotiated  = errors.New("control command needs a feature that was not negotiated")
	ErrLength         = errors.New("control command payload has the wrong length")
	ErrInvalid        = errors.New("control command value not acceptable")
)

// CommandError describes a rejected command.
type CommandError struct {
	Class, Cmd uint8
	Detail     string
	Err        error // one of the Err* sentinels
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("virtio-net ctrl class %d cmd %d: %v: %s", e.Class, e.Cmd, e.Err, e.Detail)
}

func (e *CommandError) Unwrap() error { return e.Err }

// Handle executes one control command and returns the acknowledgement to
// write (AckOK or AckErr) and what changed. On AckErr nothing changed and
// the Event is zero. payload is the command-specific-data after the 2-byte
// header; it is only read, each byte once, and not retained.
func (s *State) Handle(class, cmd uint8, payload []byte) (ack uint8, ev Event) {
	ev, err := s.Apply(class, cmd, payload)
	if err != nil {
		return AckErr, Event{}
	}
	return AckOK, ev
}

// Apply is Handle reporting why a command is rejected: a *CommandError
// wrapping ErrUnknownCommand, ErrUnsupported, ErrNotNegotiated, ErrLength
// or ErrInvalid. The device may log it (rate-limited: the guest controls
// how often it happens).
func (s *State) Apply(class, cmd uint8, payload []byte) (Event, error) {
	var ev Event
	var err error
	switch class {
	case ClassRX:
		ev, err = s.rxMode(cmd, payload)
	case ClassMAC:
		ev, err = s.macCommand(cmd, payload)
	case ClassVLAN:
		ev, err = s.vlan(cmd, payload)
	case ClassAnnounce:
		ev, err = s.announceAck(cmd, payload)
	case ClassMQ:
		ev, err = s.mq(cmd, payload)
	case ClassGuestOffloads:
		ev, err = s.guestOffloads(cmd, payload)
	case ClassNotfCoal, ClassStats:
		err = errorf(ErrUnsupported, "class not implemented")
	default:
		err = errorf(ErrUnknownCommand, "unknown class")
	}
	if err != nil {
		var ce *CommandError
		if errors.As(err, &ce) {
			ce.Class, ce.Cmd = class, cmd
		}
		return Event{}, err
	}
	return ev, nil
}

func errorf(sentinel error, format string, args ...any) error {
	return &CommandError{Detail: fmt.Sprintf(format, args...), Err: sentinel}
}

func wantLen(payload []byte, n int) error {
	if len(payload) != n {
		return errorf(ErrLength, "payload is %d bytes, want %d", len(payload), n)
	}
	return nil
}

func (s *State) rxMode(cmd uint8, payload []byte) (Event, error) {
	if cmd > RXNoBcast {
		return Event{}, errorf(ErrUnknownCommand, "unknown RX command")
	}
	if !s.cfg.CtrlRX {
		return Event{}, errorf(ErrNotNegotiated, "needs CTRL_RX")
	}
	if cmd >= RXAllUni && !s.cfg.CtrlRXExtra {
		return Event{}, errorf(ErrNotNegotiated, "needs CTRL_RX_EXTRA")
	}
	if err := wantLen(payload, 1); err != nil {
		return Event{}, err
	}
	on := payload[0] != 0
	switch cmd {
	case RXPromisc:
		s.rx.Promisc = on
	case RXAllMulti:
		s.rx.AllMulti = on
	case RXAllUni:
		s.rx.AllUni = on
	case RXNoMulti:
		s.rx.NoMulti = on
	case RXNoUni:
		s.rx.NoUni = on
	case RXNoBcast:
		s.rx.NoBcast = on
	}
	return Event{Changes: ChangeRxMode}, nil
}

func (s *State) macCommand(cmd uint8, payload []byte) (Event, error) {
	switch cmd {
	case MACTableSet:
		return s.macTableSet(payload)
	case MACAddrSet:
		if !s.cfg.CtrlMACAddr {
			return Event{}, errorf(ErrNotNegotiated, "needs CTRL_MAC_ADDR")
		}
		if err := wantLen(payload, len(MAC{})); err != nil {
			return Event{}, err
		}
		s.mac = MAC(payload)
		return Event{Changes: ChangeMAC, MAC: s.mac}, nil
	default:
		return Event{}, errorf(ErrUnknownCommand, "unknown MAC command")
	}
}

// macTableSet decodes both tables completely into a local copy before
// committing, reading every payload byte at most once. Sizes are computed
// in 64 bits (CVE-2014-0150 was the 32-bit wrap of this arithmetic).
func (s *State) macTableSet(payload []byte) (Event, error) {
	if !s.cfg.CtrlRX {
		return Event{}, errorf(ErrNotNegotiated, "TABLE_SET needs CTRL_RX")
	}
	var (
		macs          [MACTableEntries]MAC
		inUse         int
		uniOverflow   bool
		multiOverflow bool
	)
	p := payload
	// Unicast table: its entries must fit in what follows (the multicast
	// table comes after it).
	if len(p) < 4 {
		return Event{}, errorf(ErrLength, "no unicast entry count")
	}
	nUni := uint64(binary.LittleEndian.Uint32(p))
	p = p[4:]
	if nUni*6 > uint64(len(p)) {
		return Event{}, errorf(ErrLength, "%d unicast entries need %d bytes, %d left", nUni, nUni*6, len(p))
	}
	if nUni <= MACTableEntries {
		for i := range int(nUni) {
			macs[i] = MAC(p[i*6:])
		}
		inUse = int(nUni)
	} else {
		uniOverflow = true
	}
	p = p[nUni*6:]
	firstMulti := inUse
	// Multicast table: its entries must end the payload exactly.
	if len(p) < 4 {
		return Event{}, errorf(ErrLength, "no multicast entry count")
	}
	nMulti := uint64(binary.LittleEndian.Uint32(p))
	p = p[4:]
	if nMulti*6 != uint64(len(p)) {
		return Event{}, errorf(ErrLength, "%d multicast entries need %d bytes, %d left", nMulti, nMulti*6, len(p))
	}
	if nMulti <= uint64(MACTableEntries-inUse) {
		for i := range int(nMulti) {
			macs[inUse+i] = MAC(p[i*6:])
		}
		inUse += int(nMulti)
	} else {
		multiOverflow = true
	}
	s.macs = macs
	s.inUse = inUse
	s.firstMulti = firstMulti
	s.uniOverflow = uniOverflow
	s.multiOverflow = multiOverflow
	return Event{Changes: ChangeMACTable}, nil
}

func (s *State) vlan(cmd uint8, payload []byte) (Event, error) {
	if cmd != VLANAdd && cmd != VLANDel {
		return Event{}, errorf(ErrUnknownCommand, "unknown VLAN command")
	}
	if !s.cfg.CtrlVLAN {
		return Event{}, errorf(ErrNotNegotiated, "needs CTRL_VLAN")
	}
	if err := wantLen(payload, 2); err != nil {
		return Event{}, err
	}
	vid := binary.LittleEndian.Uint16(payload)
	if vid >= MaxVLAN {
		return Event{}, errorf(ErrInvalid, "VLAN id %d >= %d", vid, MaxVLAN)
	}
	if cmd == VLANAdd {
		s.vlans[vid>>6] |= 1 << (vid & 63)
	} else {
		s.vlans[vid>>6] &^= 1 << (vid & 63)
	}
	return Event{Changes: ChangeVLAN}, nil
}

func (s *State) announceAck(cmd uint8, payload []byte) (Event, error) {
	if cmd != AnnounceAck {
		return Event{}, errorf(ErrUnknownCommand, "unknown ANNOUNCE command")
	}
	if !s.cfg.GuestAnnounce {
		return Event{}, errorf(ErrNotNegotiated, "needs GUEST_ANNOUNCE")
	}
	if err := wantLen(payload, 0); err != nil {
		return Event{}, err
	}
	if !s.announce {
		return Event{}, errorf(ErrInvalid, "no announcement pending")
	}
	s.announce = false
	return Event{Changes: ChangeAnnounceAck}, nil
}

func (s *State) mq(cmd uint8, payload []byte) (Event, error) {
	switch cmd {
	case MQVQPairsSet:
	case MQRSSConfig:
		return Event{}, errorf(ErrUnsupported, "RSS is not offered")
	case MQHashConfig:
		return Event{}, errorf(ErrUnsupported, "HASH_REPORT is not offered")
	default:
		return Event{}, errorf(ErrUnknownCommand, "unknown MQ command")
	}
	if !s.cfg.MQ {
		return Event{}, errorf(ErrNotNegotiated, "needs MQ")
	}
	if err := wantLen(payload, 2); err != nil {
		return Event{}, err
	}
	n := binary.LittleEndian.Uint16(payload)
	if n < 1 || n > s.cfg.MaxQueuePairs {
		return Event{}, errorf(ErrInvalid, "%d queue pairs, want 1..%d", n, s.cfg.MaxQueuePairs)
	}
	s.pairs = n
	return Event{Changes: ChangeQueuePairs, QueuePairs: n}, nil
}

func (s *State) guestOffloads(cmd uint8, payload []byte) (Event, error) {
	if cmd != GuestOffloadsSet {
		return Event{}, errorf(ErrUnknownCommand, "unknown GUEST_OFFLOADS command")
	}
	if !s.cfg.CtrlGuestOffloads {
		return Event{}, errorf(ErrNotNegotiated, "needs CTRL_GUEST_OFFLOADS and a vnet header")
	}
	if err := wantLen(payload, 8); err != nil {
		return Event{}, err
	}
	v := binary.LittleEndian.Uint64(payload)
	rsc := v&OffloadRSCExt != 0
	v &^= OffloadRSCExt
	if extra := v &^ s.cfg.GuestOffloads; extra != 0 {
		return Event{}, errorf(ErrInvalid, "offloads %#x not negotiated (allowed %#x)", extra, s.cfg.GuestOffloads)
	}
	s.offloads = v
	s.rscRequest = rsc
	ev := Event{Changes: ChangeOffloads, Offloads: v}
	ev.RSC4, ev.RSC6 = s.RSC()
	return ev, nil
}

// Package ctrl holds the control-plane state of a virtio-net device and
// executes the commands of its control virtqueue (virtio 1.2 §5.1.6.5):
// receive modes, MAC and VLAN filter tables, the default MAC address,
// announce acknowledgement, the number of queue pairs and the guest
// offloads. It also implements the receive filter those commands configure.
//
// The package is pure: it does no I/O, starts no goroutines and never
// panics on guest input. The device owns a State, feeds it the commands it
// pops from the control queue and acts on the returned Event (re-applying
// TUNSETOFFLOAD, attaching or detaching tap queues, updating the MAC in
// config space, stepping the announce timer). A State is not safe for
// concurrent use: the device serialises Handle, Accept and the other
// methods.
//
// Control-queue glue, for a chain popped from the control queue:
//
//	class, cmd, payload, err := ctrl.ParseCommand(chain.Reader(), scratch)
//	if errors.Is(err, ctrl.ErrMissingHeader) || chain.WritableLen() < ctrl.AckSize {
//		// QEMU: virtio_error ("virtio-net ctrl missing headers"), NEEDS_RESET.
//	}
//	ack := ctrl.AckErr
//	var ev ctrl.Event
//	if err == nil {
//		ack, ev = state.Handle(class, cmd, payload)
//	}
//	chain.Writer().Write([]byte{ack}) // used length 1
//	// act on ev, then complete the chain
//
// # Behaviour and where it follows QEMU
//
// The command set, payload layouts and the receive filter follow QEMU's
// hw/net/virtio-net.c (virtio_net_handle_ctrl_iov and the per-class
// handlers, receive_filter, virtio_net_reset). Every command is decoded and
// validated completely before anything changes; a command answered with
// AckErr leaves the State unchanged. Each payload byte is read once, so the
// payload may alias guest memory.
//
// Deliberate differences from QEMU, all of them stricter on malformed or
// unnegotiated input and invisible to Linux and NetKVM:
//   - Exact payload lengths: QEMU ignores trailing bytes after the 1-byte RX
//     value, the le16 VLAN id, the le16 queue-pair count, the le64 offloads
//     and for ANNOUNCE_ACK; here they are AckErr. MAC ADDR_SET (exactly 6)
//     and MAC TABLE_SET (the multicast table must end the payload) are
//     checked exactly by QEMU as well.
//   - Capabilities: QEMU accepts RX, MAC, VLAN commands without checking the
//     CTRL_RX, CTRL_RX_EXTRA, CTRL_MAC_ADDR or CTRL_VLAN features; here each
//     needs its feature as the specification requires of drivers.
//     ANNOUNCE_ACK needs GUEST_ANNOUNCE and a pending announcement (QEMU
//     checks only the latter, which cannot be set without the feature).
//   - MAC TABLE_SET computes entries*6 in 64 bits; QEMU computes it in 32
//     bits, so counts of 2^32/6 or more wrap there and are rejected here.
//   - GUEST_OFFLOADS_SET: QEMU updates rsc4/rsc6 from bit 61 before
//     rejecting unnegotiated bits (state changes on an ERR) and enables RSC
//     from bit 61 even when RSC_EXT was not negotiated; here a rejected
//     command changes nothing and RSC needs RSC_EXT negotiated.
//   - Accept drops frames shorter than an Ethernet header (and VLAN-tagged
//     frames shorter than 16 bytes while VLAN filtering is on) unless
//     promiscuous; QEMU relies on the net layer padding frames to 60 bytes.
//
// Kept from QEMU on purpose:
//   - Receive-mode bytes other than 0 mean on (the specification says 0 or
//     1; QEMU stores the byte as a truth value).
//   - The MAC filter table has MACTableEntries (64) slots shared by both
//     tables. A unicast table larger than 64 entries is not stored and sets
//     the unicast overflow flag (all unicast accepted); a multicast table
//     larger than the slots left after the unicast entries sets the
//     multicast overflow flag (all multicast accepted). Neither is an error.
//     Entries are not checked for being unicast or multicast addresses.
//   - ADDR_SET accepts any 6 bytes, including multicast addresses.
//   - Bit 61 (RSC_EXT) is accepted in GUEST_OFFLOADS_SET and stripped
//     before the remaining bits are checked against the negotiated guest
//     offloads, because NetKVM sends GUEST_CSUM|TSO4|TSO6|1<<61.
//   - VQ_PAIRS_SET needs MQ and 1 <= pairs <= min(0x8000, max pairs).
//   - RSS_CONFIG and HASH_CONFIG are answered AckErr (RSS and HASH_REPORT
//     are never offered by this device), as are NOTF_COAL, STATS and every
//     unknown class or command.
//   - After reset the device is promiscuous, all other modes are off, the
//     MAC and VLAN tables are empty, one queue pair is in use and the MAC
//     is the configured one.
//   - Receive filter (receive_filter): promiscuous accepts everything; with
//     CTRL_VLAN a frame whose TPID is 0x8100 passes only if its VLAN id is
//     in the table (untagged frames and other TPIDs are not VLAN-filtered);
//     broadcast passes unless NOBCAST (even with NOMULTI); other multicast:
//     NOMULTI drops, ALLMULTI or multicast overflow accepts, else the
//     multicast table; unicast: NOUNI drops, ALLUNI or unicast overflow
//     accepts, else the current MAC or the unicast table.
package ctrl

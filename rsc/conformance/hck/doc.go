// Package hck runs the RSC conformance scenarios of package
// rsc/conformance HCK-style: through the whole virtio-net device, as the
// Windows HCK/HLK "Run RSC Tests" job exercises a NIC with crafted TCP
// segment sequences and watches what the stack receives.
//
// Runners (all implement Runner):
//
//   - EngineRunner: the pure rsc engine with a virtual clock
//     (conformance.RunEngine over NewEngine).
//   - DeviceRunner: a fresh virtio-net device per scenario (guest_rsc_ext=on,
//     rsc_interval and x-rsc-batch-flush from the scenario's configuration,
//     the scenarios' MAC) over the in-memory backend of package
//     virtio/net/nettest. A NetKVM-like test driver over fake guest memory
//     (package virtio/queue/queuetest) negotiates RSC_EXT, GUEST_CSUM,
//     GUEST_TSO4/6, CTRL_VQ, CTRL_GUEST_OFFLOADS and MRG_RXBUF (or, for
//     Driver Linux, what Linux 6.1 acks), posts page-sized mergeable
//     receive buffers (header + data buffers of MaxFrame bytes without
//     MRG_RXBUF, as NetKVM lays them out), sends GUEST_OFFLOADS_SET with bit
//     61, and reads every delivered packet, merging num_buffers buffers and
//     checking that all but the last are full.
//   - TapRunner: the same device and driver on a real TAP (named, or created
//     in a fresh network namespace); frames are sent from the host side with
//     an AF_PACKET socket with PACKET_VNET_HDR. The kernel delivers them to
//     the device with its own virtio-net header (never DATA_VALID), so the
//     runner checks the output against the frames as the device read them.
//
// Clock and synchronisation: the device runs on a virtual clock
// (virtionet.Options.Clock) that only the runner advances, so results do
// not depend on the host's speed. The runner watches the device's backend
// reads: a batch of frames has been processed when the device has read all
// of them and then found the backend empty; a clock change takes effect in
// a device pass that starts after it (the runner kicks the receive queue
// to start passes; the device's own timerfd may add passes). Packets are
// stamped with the virtual time at which they were collected, which is the
// time of delivery because the clock only moves between synchronised steps.
// Device actions without a direct API are mapped: a flush is a link down/up
// (the device delivers pending packets before a link change), a ring-full
// period is a scenario that starts with no receive buffers and posts them
// when the period ends, a refused configuration change is a
// GUEST_OFFLOADS_SET the device must not answer until buffers are posted.
package hck

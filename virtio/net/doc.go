// Package virtionet is the virtio-net device model of rscvm: QEMU-compatible
// properties and feature bits (QEMU 7.2 defaults), the device configuration
// space, the receive/transmit queue pairs and the control queue, over a
// Backend (a TAP in production, an in-memory fake in tests). It is
// transport-independent: it implements virtio.Device and is plugged into
// the PCI transport by package virtio/pci.
//
// # Datapath
//
// Each queue pair has one worker goroutine. It waits in an epoll set
// (tap.Poller) on the backend queue's fd, the rx and tx kick eventfds and a
// timerfd for receive segment coalescing; no goroutine is started per
// packet and the steady-state path allocates nothing.
//
// Transmit: chains are popped, the guest's virtio-net header is copied out
// once, validated against the negotiated features (a GSO type without the
// matching HOST_* feature, a zero gso_size or checksum offsets outside the
// frame: dropped and counted) and handed, rewritten as a 12-byte header, to
// the backend together with the frame's guest memory (writev, no copy).
// Used entries are published per batch and the driver is notified per
// EVENT_IDX.
//
// Receive: the worker keeps descriptor chains popped ahead (enough writable
// bytes for the largest frame the current offloads allow) and reads frames
// with readv straight into guest memory, with a host overflow buffer as the
// last element so a frame longer than the chains popped so far is never
// truncated: its tail is copied into further chains, or, when the ring has
// none, the whole frame is kept in host memory until the driver posts
// buffers (back-pressure: the tap is not read meanwhile, nothing is lost).
// The TAP's header is validated against the current guest offloads before
// the driver sees it: a GSO type the driver did not enable is dropped and
// counted, NEEDS_CSUM without GUEST_CSUM is completed in software and
// DATA_VALID is kept only with GUEST_CSUM. The header is written in the
// negotiated size (12 bytes with VERSION_1 or MRG_RXBUF, else 10) with
// num_buffers filled in before the chains are completed. Frames the control
// queue's receive filter rejects are dropped.
//
// With mergeable buffers every chain may start a packet; without them one
// chain holds one packet (big-packet chains or small buffers) and a frame
// that does not fit is dropped, never truncated.
//
// # Receive segment coalescing
//
// When RSC is active (rsc-spec §6.2: RSC_EXT ∧ GUEST_TSO4/6 negotiated ∧
// the current offloads contain GUEST_CSUM and TSO4/6 ∧ bit 61 in the last
// GUEST_OFFLOADS_SET or none yet; with x-rsc-gso=on also for guests that
// negotiated GUEST_TSO4/6 without RSC_EXT, producing standard GSO packets)
// frames are read into a host buffer and passed through the rsc engine of
// the queue, which copies finished packets into the ring. Pending packets
// are flushed at the end of each TAP read batch (x-rsc-batch-flush=off
// turns that off, leaving QEMU's timer-only behaviour) and when they reach
// rsc_interval (a timerfd in the worker's epoll set), and always before an
// offload change or a link change is acknowledged. Device reset discards
// them (the rings they were meant for are being reset). Without mergeable
// buffers coalesced packets are bounded by the smallest receive chain.
//
// # Counters
//
// Stats returns per-queue counters (packets, bytes, drops by reason,
// back-pressure events, notifications) that accumulate over the device's
// lifetime, and the rsc engine's counters under QEMU's names, which start
// again at every activation.
//
// # Transport notes
//
// QueueMaxSizes reports the full multiqueue layout until the driver
// acknowledges features without MQ. Activate without a preceding
// AckFeatures (the PCI transport restarting the device after bus mastering
// was cleared and set again) reuses the last negotiation; the chains the
// receive side had popped ahead are given back to the ring when it stops.
//
// # Control queue
//
// The control queue is served by its own goroutine with package ctrl. A
// command that changes the offloads first makes every worker deliver what
// it holds under the old configuration, then reapplies TUNSETOFFLOAD
// (Backend.SetOffload) and only then writes the acknowledgement. A chain
// without the 2-byte header is answered with ERR (QEMU sets NEEDS_RESET; a
// Linux guest then hangs on the control queue), one without a writable
// byte is returned with used length 0.
package virtionet

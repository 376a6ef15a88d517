// Package conformance holds the RSC conformance scenarios of the project's
// rsc-spec part (a) as data, a checker for what a receiver delivered, and
// the engine runner.
//
// A Scenario is a program of steps — TAP read batches of frames (each with
// the virtio-net header the TAP attached), virtual clock advances, guest
// ring-full periods, offload changes, resets, device-level control commands —
// and the expectations on the packets the guest receives: their number, per
// packet the virtio-net header fields (flags incl. RSC_INFO, gso_type,
// gso_size, hdr_len, csum_start/csum_offset = coalesced segments / duplicate
// ACKs) and the stream bytes they carry, counters, latency bounds. Whatever a
// scenario says in particular, CheckStream also checks the invariants every
// scenario shares: every input byte is delivered exactly once and in flow
// order, a frame that was not coalesced is delivered byte-identical with its
// header, and a coalesced packet is a valid TCP segment (IP length = bytes
// present, IPv4 header checksum, pseudo-header TCP checksum, ≤ 65535).
//
// Runners execute scenarios. This package has the engine runner (RunEngine:
// a pure engine with a virtual clock behind the Engine interface, so that
// package rsc's own tests can use it without an import cycle). Package
// conformance/hck has the device runners: the virtio-net device model with
// the in-memory backend or a real TAP, driven by a NetKVM-like test driver.
// Scenario.Runners says which runners a scenario is meant for: device-level
// scenarios (feature offers, OFFLOADS_SET validation, property parsing) need
// a device; engine-only ones use engine settings a device cannot express.
//
// Conventions of the data: flow F is 10.0.0.1:40000 → 10.0.0.2:5001 (F6 the
// same ports between 2001:db8::1 and 2001:db8::2), MSS 1448, ack A = 5000,
// window W = 1000, rsc_interval 1 ms (the HCK setting), payload bytes are a
// function of the TCP sequence number (Pattern), so an expected payload is a
// sequence range. Input frames are numbered 0, 1, ... in the order they are
// first offered to the receiver; Plain expectations name them by number.
package conformance

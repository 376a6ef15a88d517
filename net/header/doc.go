// Package header provides zero-allocation views of network packet headers
// (Ethernet, IPv4, IPv6, TCP, UDP), the virtio-net packet header, Internet
// checksum helpers, and frame constructors for tests and tools.
//
// Header types are byte slices with accessor methods in the style of gVisor's
// tcpip/header package: a view does not copy, never allocates and never reads
// outside its slice. Accessors assume the slice is at least the minimum header
// size of its type; callers validate lengths first with the IsValid / Parse
// helpers, which perform every bounds check needed before any field is read.
//
// All multi-byte network header fields are big-endian. The virtio-net header is
// little-endian (virtio 1.0; legacy devices on x86 are little-endian too).
package header

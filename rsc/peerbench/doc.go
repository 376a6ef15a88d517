// Package peerbench benchmarks the rsc engine side by side with two peer Go
// coalescing engines on the same input in the same run:
//
//   - wireguard-go's TUN GRO (golang.zx2c4.com/wireguard/tun handleGRO,
//     reached with go:linkname because it is unexported), and
//   - gVisor's exported pkg/tcpip/stack/gro.GRO.
//
// It is a separate module so that the peers' large dependency trees (gVisor
// alone is a 21 MB module with ~50 requirements, and wireguard-go requires
// gVisor too) stay out of the main module's go.mod. Run it with
//
//	cd rsc/peerbench && go test -bench . -benchmem
//
// Every benchmark reports ns/op per 1448-byte TCP segment, including the
// copy of each output packet into a preallocated 64 KiB buffer. The input
// is read (untimed) into each engine's receive buffers as its device would
// read it: rsc's receive region (Engine.RecvBuffer, where rsc keeps the
// segments until the packet is copied out), wireguard-go's per-packet
// buffers, gVisor's PacketBuffers.
package peerbench

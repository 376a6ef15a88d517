package virtiopci

import "encoding/binary"

// QEMU's memory core splits every access to a region implementing 1..4-byte
// accesses into naturally aligned pieces of at most 4 bytes (an 8-byte
// access becomes two 4-byte ones, a 4-byte access at offset 2 two 2-byte
// ones, a 2-byte access at offset 1 two byte accesses). Each piece is then
// handled as a register access of its own size. Every BAR handler of this
// package does the same, so any access width at any offset has a defined
// result.

// pieceSize returns the size of the piece an access with rem bytes left
// at offset off starts with.
func pieceSize(off uint64, rem int) int {
	maxSize := 4
	if a := off & -off; a != 0 && a < uint64(maxSize) {
		maxSize = int(a)
	}
	n := min(rem, maxSize)
	// Round down to a power of two (n is 1..4).
	if n == 3 {
		n = 2
	}
	return n
}

// getLE decodes a 1..4-byte little-endian value.
func getLE(b []byte) uint32 {
	switch len(b) {
	case 1:
		return uint32(b[0])
	case 2:
		return uint32(binary.LittleEndian.Uint16(b))
	case 4:
		return binary.LittleEndian.Uint32(b)
	}
	var v uint32
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint32(b[i])
	}
	return v
}

// putLE stores the low len(b) bytes of v little-endian.
func putLE(b []byte, v uint32) {
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
}

// covers reports whether an access of n bytes at off includes byte at.
func covers(off, n, at int) bool { return at >= off && at < off+n }

// overlaps reports whether [off, off+n) and [at, at+size) intersect.
func overlaps(off, n, at, size int) bool { return off < at+size && at < off+n }

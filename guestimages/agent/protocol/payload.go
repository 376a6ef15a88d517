package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
)

// Payload is the deterministic byte stream that source sends: byte i is byte
// i%8 (little endian) of splitmix64(i/8). Both halves of a test can generate
// it; it does not compress, so offloads see realistic data.
type Payload struct {
	off, n int64
}

// NewPayload returns a reader of the first n payload bytes.
func NewPayload(n int64) *Payload {
	if n < 0 {
		n = 0
	}
	return &Payload{n: n}
}

// Read implements io.Reader.
func (p *Payload) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	fillPayload(b, p.off)
	p.off += int64(len(b))
	return len(b), nil
}

// fillPayload writes the payload bytes starting at offset off into b.
func fillPayload(b []byte, off int64) {
	var w [8]byte
	i := 0
	// leading partial word
	if r := int(off % 8); r != 0 {
		binary.LittleEndian.PutUint64(w[:], splitmix64(uint64(off/8)))
		i = copy(b, w[r:])
	}
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], splitmix64(uint64((off+int64(i))/8)))
	}
	if i < len(b) {
		binary.LittleEndian.PutUint64(w[:], splitmix64(uint64((off+int64(i))/8)))
		copy(b[i:], w[:])
	}
}

func splitmix64(x uint64) uint64 {
	z := x*0x9e3779b97f4a7c15 + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// PayloadSHA256 returns the lowercase hex SHA-256 of the first n payload bytes.
func PayloadSHA256(n int64) string {
	h := sha256.New()
	buf := make([]byte, 64*1024)
	p := NewPayload(n)
	_, _ = io.CopyBuffer(h, p, buf) // neither side ever fails
	return hex.EncodeToString(h.Sum(nil))
}

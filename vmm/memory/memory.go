// Package memory is guest-physical memory as the VMM and its devices see it.
//
// Everything a guest writes is hostile: devices never index host memory with a
// guest-supplied address directly. They go through Memory, whose every access
// is checked against the regions that exist and never crosses a region
// boundary. An out-of-range access returns ErrOutOfRange (a sentinel, so the
// check allocates nothing on hot paths).
package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
)

// ErrOutOfRange is returned for any access that is not wholly inside one
// region of guest memory (including address arithmetic that overflows).
var ErrOutOfRange = errors.New("guest memory access out of range")

// Region is a contiguous range of guest-physical memory backed by host memory.
type Region struct {
	GPA  uint64 // guest-physical address of Host[0]
	Host []byte // backing memory (an mmap for a VM, a plain slice in tests)
}

// End is the first guest-physical address after the region.
func (r Region) End() uint64 { return r.GPA + uint64(len(r.Host)) }

// Memory is a set of non-overlapping regions, sorted by address.
type Memory struct {
	regions []Region
}

// New builds a Memory from regions. Regions must be non-empty, must not wrap
// the 64-bit address space and must not overlap.
func New(regions ...Region) (*Memory, error) {
	rs := append([]Region(nil), regions...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].GPA < rs[j].GPA })
	for i, r := range rs {
		if len(r.Host) == 0 {
			return nil, fmt.Errorf("memory region at %#x is empty", r.GPA)
		}
		if r.End() < r.GPA {
			return nil, fmt.Errorf("memory region at %#x size %#x wraps the address space", r.GPA, len(r.Host))
		}
		if i > 0 && rs[i-1].End() > r.GPA {
			return nil, fmt.Errorf("memory regions overlap: [%#x,%#x) and [%#x,%#x)",
				rs[i-1].GPA, rs[i-1].End(), r.GPA, r.End())
		}
	}
	return &Memory{regions: rs}, nil
}

// Regions returns the regions, sorted by guest-physical address.
func (m *Memory) Regions() []Region { return m.regions }

// Size is the total number of bytes of guest memory.
func (m *Memory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += uint64(len(r.Host))
	}
	return n
}

// Slice returns host memory for [gpa, gpa+n). The range must lie inside a
// single region. n may be zero (an empty slice at a valid address). The
// returned slice aliases guest memory: the guest may change it at any time,
// so callers copy what they validate before they use it.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	end := gpa + n
	if end < gpa {
		return nil, ErrOutOfRange
	}
	// Few regions (one or two): a linear scan beats a binary search.
	for i := range m.regions {
		r := &m.regions[i]
		if gpa >= r.GPA && end <= r.End() {
			off := gpa - r.GPA
			return r.Host[off : off+n : off+n], nil
		}
	}
	return nil, ErrOutOfRange
}

// Contains reports whether [gpa, gpa+n) lies inside one region.
func (m *Memory) Contains(gpa, n uint64) bool {
	_, err := m.Slice(gpa, n)
	return err == nil
}

// Read copies len(p) bytes at gpa into p.
func (m *Memory) Read(gpa uint64, p []byte) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// Write copies p into guest memory at gpa.
func (m *Memory) Write(gpa uint64, p []byte) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

// U8 reads a byte.
func (m *Memory) U8(gpa uint64) (uint8, error) {
	s, err := m.Slice(gpa, 1)
	if err != nil {
		return 0, err
	}
	return s[0], nil
}

// U16 reads a little-endian uint16.
func (m *Memory) U16(gpa uint64) (uint16, error) {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// U32 reads a little-endian uint32.
func (m *Memory) U32(gpa uint64) (uint32, error) {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// U64 reads a little-endian uint64.
func (m *Memory) U64(gpa uint64) (uint64, error) {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

// PutU8 writes a byte.
func (m *Memory) PutU8(gpa uint64, v uint8) error {
	s, err := m.Slice(gpa, 1)
	if err != nil {
		return err
	}
	s[0] = v
	return nil
}

// PutU16 writes a little-endian uint16.
func (m *Memory) PutU16(gpa uint64, v uint16) error {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(s, v)
	return nil
}

// PutU32 writes a little-endian uint32.
func (m *Memory) PutU32(gpa uint64, v uint32) error {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(s, v)
	return nil
}

// PutU64 writes a little-endian uint64.
func (m *Memory) PutU64(gpa uint64, v uint64) error {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(s, v)
	return nil
}

var fence atomic.Uint32

// Fence is a full memory barrier between the device's accesses to shared
// rings and the guest's: a compiler barrier, and on amd64 a locked
// read-modify-write, which orders earlier stores before later loads (as the
// virtio EVENT_IDX protocol needs). Use it around ring index publication and
// before reading a notification-suppression field after publishing.
func Fence() { fence.Add(1) }

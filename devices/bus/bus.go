// Package bus dispatches guest port-I/O and MMIO accesses to devices.
//
// A Bus maps non-overlapping address ranges to Devices. The vCPU run loop asks
// the bus to handle each PIO or MMIO exit; devices see offsets relative to the
// start of the range they registered. Ranges can be moved (PCI BAR relocation)
// and removed at run time; lookups take a read lock only.
package bus

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Device handles accesses to the range it is registered at. offset is
// relative to the range's base; len(data) is the access width (1, 2, 4 or 8
// for CPU accesses). Read fills data; Write consumes it. Devices must not keep
// data after returning.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// ErrOverlap is returned when a registration overlaps an existing range.
var ErrOverlap = errors.New("bus range overlaps an existing device")

type entry struct {
	base, size uint64
	dev        Device
}

// Bus is a set of address ranges, each handled by one Device.
type Bus struct {
	name    string
	mu      sync.RWMutex
	entries []entry // sorted by base, non-overlapping
}

// New makes an empty bus; name ("pio", "mmio") appears in errors.
func New(name string) *Bus { return &Bus{name: name} }

// Register maps [base, base+size) to dev.
func (b *Bus) Register(base, size uint64, dev Device) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("%s bus: invalid range base %#x size %#x", b.name, base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.insertLocked(entry{base, size, dev})
}

func (b *Bus) insertLocked(e entry) error {
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= e.base })
	if i > 0 && b.entries[i-1].base+b.entries[i-1].size > e.base {
		return fmt.Errorf("%s bus: [%#x,%#x): %w at [%#x,%#x)", b.name, e.base, e.base+e.size, ErrOverlap,
			b.entries[i-1].base, b.entries[i-1].base+b.entries[i-1].size)
	}
	if i < len(b.entries) && e.base+e.size > b.entries[i].base {
		return fmt.Errorf("%s bus: [%#x,%#x): %w at [%#x,%#x)", b.name, e.base, e.base+e.size, ErrOverlap,
			b.entries[i].base, b.entries[i].base+b.entries[i].size)
	}
	b.entries = append(b.entries, entry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = e
	return nil
}

// Unregister removes the range that starts at base.
func (b *Bus) Unregister(base uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, e := range b.entries {
		if e.base == base {
			b.entries = append(b.entries[:i], b.entries[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%s bus: no device at %#x", b.name, base)
}

// Move relocates the range at oldBase to newBase atomically: on error the old
// mapping stays in place.
func (b *Bus) Move(oldBase, newBase uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, e := range b.entries {
		if e.base != oldBase {
			continue
		}
		if newBase+e.size < newBase {
			return fmt.Errorf("%s bus: cannot move [%#x,+%#x) to %#x: wraps", b.name, oldBase, e.size, newBase)
		}
		saved := append([]entry(nil), b.entries...)
		b.entries = append(b.entries[:i], b.entries[i+1:]...)
		e.base = newBase
		if err := b.insertLocked(e); err != nil {
			b.entries = saved
			return err
		}
		return nil
	}
	return fmt.Errorf("%s bus: no device at %#x", b.name, oldBase)
}

func (b *Bus) find(addr uint64, n int) (Device, uint64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base > addr }) - 1
	if i < 0 {
		return nil, 0, false
	}
	e := b.entries[i]
	off := addr - e.base
	if off >= e.size || uint64(n) > e.size-off {
		return nil, 0, false
	}
	return e.dev, off, true
}

// Read dispatches a read; it reports false (and leaves data untouched) when
// no device covers the whole access.
func (b *Bus) Read(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr, len(data))
	if !ok {
		return false
	}
	dev.Read(off, data)
	return true
}

// Write dispatches a write; it reports false when no device covers the whole
// access.
func (b *Bus) Write(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr, len(data))
	if !ok {
		return false
	}
	dev.Write(off, data)
	return true
}

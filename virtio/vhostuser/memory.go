package vhostuser

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/vmm/memory"
)

// mappedRegion is one region of the frontend's guest memory, mapped from the
// descriptor it sent.
type mappedRegion struct {
	gpa, size, uaddr, offset uint64
	mapping                  []byte // the whole mmap (offset + size bytes)
}

func (r *mappedRegion) host() []byte { return r.mapping[r.offset : r.offset+r.size] }

// memTable is the frontend's memory table: mapped regions, the guest-memory
// view the device uses, and frontend-virtual to guest-physical translation
// for ring addresses.
type memTable struct {
	regions []*mappedRegion
	mem     *memory.Memory // nil when there are no regions
}

// mapRegion validates a region description and maps it from f. f is not
// closed (the caller closes it: the mapping keeps the memory).
func mapRegion(r MemRegion, f *os.File) (*mappedRegion, error) {
	gpa, size, uaddr, off := r.GPA(), r.Size(), r.UserAddr(), r.MmapOffset()
	switch {
	case size == 0:
		return nil, fmt.Errorf("%w: empty region at guest address %#x", ErrRegion, gpa)
	case gpa+size < gpa, uaddr+size < uaddr, off+size < off:
		return nil, fmt.Errorf("%w: region [%#x,+%#x) (user %#x, offset %#x) wraps", ErrRegion, gpa, size, uaddr, off)
	case off+size > math.MaxInt:
		return nil, fmt.Errorf("%w: region of %#x bytes at offset %#x is too large to map", ErrRegion, size, off)
	case f == nil:
		return nil, fmt.Errorf("%w: region at guest address %#x has no file descriptor", ErrFDs, gpa)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("vhost-user: fstat region fd: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < off+size {
		return nil, fmt.Errorf("%w: region [%#x,+%#x) at offset %#x is past the end of its %d-byte file", ErrRegion, gpa, size, off, st.Size)
	}
	// A frontend that shrinks the file under a mapping makes the backend's
	// next access to the lost pages fault (SIGBUS). QEMU's memfd backend
	// seals its files against shrinking (seal=on, the default); say so when
	// a file could shrink.
	if seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err == nil && seals&unix.F_SEAL_SHRINK == 0 {
		slog.Warn("vhost-user: a memory region's file is not sealed against shrinking; shrinking it would crash the backend",
			"gpa", fmt.Sprintf("%#x", gpa), "size", size)
	}
	// Map from offset 0: the offset need not be page-aligned (hugepage
	// backends align only the whole file).
	m, err := unix.Mmap(int(f.Fd()), 0, int(off+size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("vhost-user: mmap region [%#x,+%#x): %w", gpa, size, err)
	}
	return &mappedRegion{gpa: gpa, size: size, uaddr: uaddr, offset: off, mapping: m}, nil
}

func (r *mappedRegion) unmap() {
	if r.mapping != nil {
		_ = unix.Munmap(r.mapping)
		r.mapping = nil
	}
}

// rebuild recomputes the memory view after the region list changed. Regions
// must not overlap in guest-physical or frontend-virtual space.
func (t *memTable) rebuild() error {
	sort.Slice(t.regions, func(i, j int) bool { return t.regions[i].gpa < t.regions[j].gpa })
	if len(t.regions) == 0 {
		t.mem = nil
		return nil
	}
	rs := make([]memory.Region, len(t.regions))
	for i, r := range t.regions {
		rs[i] = memory.Region{GPA: r.gpa, Host: r.host()}
		for _, o := range t.regions[:i] {
			if r.uaddr < o.uaddr+o.size && o.uaddr < r.uaddr+r.size {
				return fmt.Errorf("%w: regions at user addresses %#x and %#x overlap", ErrRegion, o.uaddr, r.uaddr)
			}
		}
	}
	m, err := memory.New(rs...)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRegion, err)
	}
	t.mem = m
	return nil
}

// add maps and adds a region (ADD_MEM_REG).
func (t *memTable) add(r *mappedRegion) error {
	if len(t.regions) >= MaxMemSlots {
		return fmt.Errorf("%w: all %d memory slots are in use", ErrRegion, MaxMemSlots)
	}
	t.regions = append(t.regions, r)
	if err := t.rebuild(); err != nil {
		for i, o := range t.regions {
			if o == r {
				t.regions = append(t.regions[:i], t.regions[i+1:]...)
				break
			}
		}
		_ = t.rebuild()
		return err
	}
	return nil
}

// remove unmaps the region matching gpa, size and user address
// (REM_MEM_REG).
func (t *memTable) remove(d MemRegion) error {
	for i, r := range t.regions {
		if r.gpa == d.GPA() && r.size == d.Size() && r.uaddr == d.UserAddr() {
			t.regions = append(t.regions[:i], t.regions[i+1:]...)
			r.unmap()
			return t.rebuild()
		}
	}
	return fmt.Errorf("%w: no region at guest address %#x size %#x user address %#x", ErrRegion, d.GPA(), d.Size(), d.UserAddr())
}

// clear unmaps everything.
func (t *memTable) clear() {
	for _, r := range t.regions {
		r.unmap()
	}
	t.regions = nil
	t.mem = nil
}

// translate maps a frontend virtual address of an n-byte area to a
// guest-physical address. The whole area must be inside one region.
func (t *memTable) translate(uaddr, n uint64) (uint64, bool) {
	for _, r := range t.regions {
		if uaddr >= r.uaddr && uaddr-r.uaddr < r.size && n <= r.size-(uaddr-r.uaddr) {
			return r.gpa + (uaddr - r.uaddr), true
		}
	}
	return 0, false
}

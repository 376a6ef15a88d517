package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/rscvm/rscvm/vmm/memory"
)

var elfMagic = []byte("\x7fELF")

// errNoPVHNote is returned by ParsePVH for a valid ELF without the note.
var errNoPVHNote = errors.New("ELF has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")

// ELF constants used here.
const (
	elfClass32   = 1
	elfClass64   = 2
	elfDataLSB   = 1
	emI386       = 3
	emX86_64     = 62
	ptLoad       = 1
	ptNote       = 4
	shtNote      = 7
	xenPhys32    = 18 // XEN_ELFNOTE_PHYS32_ENTRY
	startInfoMag = 0x336ec578
)

// Placement of the PVH boot structures in the page at StartInfoAddr.
const (
	startInfoSize = 56
	modlistAddr   = StartInfoAddr + 0x40
	modEntrySize  = 32
	memmapAddr    = StartInfoAddr + 0x80
	memmapEntSize = 24
	memmapMax     = (ZeroPageAddr - memmapAddr) / memmapEntSize
)

// Segment is one PT_LOAD program header of a PVH kernel.
type Segment struct {
	Paddr  uint64 // guest-physical load address (p_paddr)
	Offset uint64 // file offset of the initialized part
	Filesz uint64 // bytes copied from the file
	Memsz  uint64 // bytes occupied in memory; the rest after Filesz is zeroed
}

// PVHImage is a parsed ELF kernel with a PVH entry point.
type PVHImage struct {
	Class    int    // 32 or 64
	Entry    uint32 // XEN_ELFNOTE_PHYS32_ENTRY
	Segments []Segment
}

// elfFile is a bounds-checked view of the ELF headers.
type elfFile struct {
	b    []byte
	is64 bool
}

func (f elfFile) u16(off uint64) uint16 { return binary.LittleEndian.Uint16(f.b[off:]) }
func (f elfFile) u32(off uint64) uint32 { return binary.LittleEndian.Uint32(f.b[off:]) }
func (f elfFile) u64(off uint64) uint64 { return binary.LittleEndian.Uint64(f.b[off:]) }

// span checks that [off, off+n) lies inside the file.
func (f elfFile) span(off, n uint64) ([]byte, bool) {
	end := off + n
	if end < off || end > uint64(len(f.b)) {
		return nil, false
	}
	return f.b[off:end], true
}

// table checks that a header table (program or section headers) lies inside
// the file with entries of a usable size.
func (f elfFile) table(what string, off uint64, entsize, num uint16, minEnt uint16) error {
	if num == 0 {
		return nil
	}
	if entsize < minEnt {
		return fmt.Errorf("pvh: ELF %s entry size %d, need at least %d", what, entsize, minEnt)
	}
	if _, ok := f.span(off, uint64(entsize)*uint64(num)); !ok {
		return fmt.Errorf("pvh: ELF %s table (%d x %d bytes at %#x) is outside the %d-byte file",
			what, num, entsize, off, len(f.b))
	}
	return nil
}

// ParsePVH parses an ELF32 or ELF64 little-endian x86 kernel: its PT_LOAD
// segments and the Xen PVH entry note, looked for in PT_NOTE segments and
// then in SHT_NOTE sections.
func ParsePVH(image []byte) (*PVHImage, error) {
	if !bytes.HasPrefix(image, elfMagic) || len(image) < 16 {
		return nil, errors.New("pvh: not an ELF file")
	}
	f := elfFile{b: image}
	var hdrSize uint64
	switch image[4] {
	case elfClass32:
		hdrSize = 52
	case elfClass64:
		hdrSize, f.is64 = 64, true
	default:
		return nil, fmt.Errorf("pvh: unknown ELF class %d", image[4])
	}
	if image[5] != elfDataLSB {
		return nil, fmt.Errorf("pvh: ELF data encoding %d is not little-endian", image[5])
	}
	if uint64(len(image)) < hdrSize {
		return nil, fmt.Errorf("pvh: %d bytes is too short for an ELF header", len(image))
	}
	if m := f.u16(18); m != emI386 && m != emX86_64 {
		return nil, fmt.Errorf("pvh: ELF machine %d is not x86", m)
	}
	// Header field offsets differ by class.
	var phoff, shoff uint64
	var phentsize, phnum, shentsize, shnum, minPh, minSh uint16
	if f.is64 {
		phoff, shoff = f.u64(32), f.u64(40)
		phentsize, phnum, shentsize, shnum = f.u16(54), f.u16(56), f.u16(58), f.u16(60)
		minPh, minSh = 56, 64
	} else {
		phoff, shoff = uint64(f.u32(28)), uint64(f.u32(32))
		phentsize, phnum, shentsize, shnum = f.u16(42), f.u16(44), f.u16(46), f.u16(48)
		minPh, minSh = 32, 40
	}
	if phnum == 0xFFFF {
		return nil, errors.New("pvh: extended ELF program header numbering is not supported")
	}
	if err := f.table("program header", phoff, phentsize, phnum, minPh); err != nil {
		return nil, err
	}
	img := &PVHImage{Class: 32}
	if f.is64 {
		img.Class = 64
	}
	found := false
	for i := uint64(0); i < uint64(phnum); i++ {
		ph := phoff + i*uint64(phentsize)
		typ := f.u32(ph)
		var off, paddr, filesz, memsz, align uint64
		if f.is64 {
			off, paddr, filesz, memsz, align = f.u64(ph+8), f.u64(ph+24), f.u64(ph+32), f.u64(ph+40), f.u64(ph+48)
		} else {
			off, paddr, filesz, memsz, align = uint64(f.u32(ph+4)), uint64(f.u32(ph+12)),
				uint64(f.u32(ph+16)), uint64(f.u32(ph+20)), uint64(f.u32(ph+28))
		}
		switch typ {
		case ptLoad:
			if memsz == 0 {
				continue
			}
			if filesz > memsz {
				return nil, fmt.Errorf("pvh: PT_LOAD %d: p_filesz %#x > p_memsz %#x", i, filesz, memsz)
			}
			if _, ok := f.span(off, filesz); !ok {
				return nil, fmt.Errorf("pvh: PT_LOAD %d: file range [%#x,+%#x) is outside the %d-byte file",
					i, off, filesz, len(image))
			}
			if paddr+memsz < paddr {
				return nil, fmt.Errorf("pvh: PT_LOAD %d: p_paddr %#x + p_memsz %#x overflows", i, paddr, memsz)
			}
			img.Segments = append(img.Segments, Segment{Paddr: paddr, Offset: off, Filesz: filesz, Memsz: memsz})
		case ptNote:
			if found {
				continue
			}
			b, ok := f.span(off, filesz)
			if !ok {
				return nil, fmt.Errorf("pvh: PT_NOTE %d: file range [%#x,+%#x) is outside the %d-byte file",
					i, off, filesz, len(image))
			}
			e, ok, err := findPVHNote(b, align)
			if err != nil {
				return nil, err
			}
			if ok {
				img.Entry, found = e, true
			}
		}
	}
	if !found && shnum > 0 {
		if err := f.table("section header", shoff, shentsize, shnum, minSh); err != nil {
			return nil, err
		}
		for i := uint64(0); i < uint64(shnum) && !found; i++ {
			sh := shoff + i*uint64(shentsize)
			if f.u32(sh+4) != shtNote {
				continue
			}
			var off, size, align uint64
			if f.is64 {
				off, size, align = f.u64(sh+24), f.u64(sh+32), f.u64(sh+48)
			} else {
				off, size, align = uint64(f.u32(sh+16)), uint64(f.u32(sh+20)), uint64(f.u32(sh+32))
			}
			b, ok := f.span(off, size)
			if !ok {
				return nil, fmt.Errorf("pvh: note section %d: file range [%#x,+%#x) is outside the %d-byte file",
					i, off, size, len(image))
			}
			e, ok, err := findPVHNote(b, align)
			if err != nil {
				return nil, err
			}
			if ok {
				img.Entry, found = e, true
			}
		}
	}
	if !found {
		return nil, errNoPVHNote
	}
	if len(img.Segments) == 0 {
		return nil, errors.New("pvh: ELF has no PT_LOAD segment")
	}
	return img, nil
}

// findPVHNote walks the notes in b (aligned to 8 bytes if align is 8, else
// 4) for a "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY.
func findPVHNote(b []byte, align uint64) (uint32, bool, error) {
	if align != 8 {
		align = 4
	}
	pad := func(n uint64) uint64 { return (n + align - 1) &^ (align - 1) }
	for uint64(len(b)) >= 12 {
		namesz := uint64(binary.LittleEndian.Uint32(b))
		descsz := uint64(binary.LittleEndian.Uint32(b[4:]))
		typ := binary.LittleEndian.Uint32(b[8:])
		b = b[12:]
		if pad(namesz) > uint64(len(b)) {
			return 0, false, nil // truncated note: no more notes here
		}
		name := b[:namesz]
		b = b[pad(namesz):]
		if descsz > uint64(len(b)) {
			return 0, false, nil
		}
		desc := b[:descsz]
		b = b[min(pad(descsz), uint64(len(b))):]
		if typ != xenPhys32 || string(bytes.TrimRight(name, "\x00")) != "Xen" {
			continue
		}
		switch len(desc) {
		case 4:
			return binary.LittleEndian.Uint32(desc), true, nil
		case 8:
			v := binary.LittleEndian.Uint64(desc)
			if v >= fourGiB {
				return 0, false, fmt.Errorf("pvh: PVH entry %#x is above 4 GiB", v)
			}
			return uint32(v), true, nil
		default:
			return 0, false, fmt.Errorf("pvh: PVH entry note has a %d-byte descriptor, want 4 or 8", len(desc))
		}
	}
	return 0, false, nil
}

// LoadPVH loads an ELF kernel with a PVH entry note: its PT_LOAD segments at
// their physical addresses (at or above KernelAddr, in usable RAM), the
// command line at CmdlineAddr, the initrd (if any) as module 0 at the top of
// usable RAM below 4 GiB, hvm_start_info (version 1, with the E820 memory
// map and the RSDP address) at StartInfoAddr, and the GDT.
func LoadPVH(mem *memory.Memory, kernel []byte, initrd []byte, cmdline string) (Entry, error) {
	img, err := ParsePVH(kernel)
	if err != nil {
		return Entry{}, err
	}
	e820 := BuildE820(mem.Regions())
	if len(e820) > memmapMax {
		return Entry{}, fmt.Errorf("pvh: %d memory map entries, room for %d", len(e820), memmapMax)
	}
	var kend uint64
	entryLoaded := false
	for i, s := range img.Segments {
		if s.Paddr < KernelAddr {
			return Entry{}, fmt.Errorf("pvh: segment %d at %#x is below %#x (boot data lives there)", i, s.Paddr, KernelAddr)
		}
		if !usableRange(e820, s.Paddr, s.Memsz) {
			return Entry{}, fmt.Errorf("pvh: segment %d [%#x,%#x) is not in usable RAM (RAM below 4 GiB ends at %#x)",
				i, s.Paddr, s.Paddr+s.Memsz, lowRAMEnd(e820))
		}
		kend = max(kend, s.Paddr+s.Memsz)
		if uint64(img.Entry) >= s.Paddr && uint64(img.Entry) < s.Paddr+s.Memsz {
			entryLoaded = true
		}
	}
	if !entryLoaded {
		return Entry{}, fmt.Errorf("pvh: entry point %#x is not inside a loaded segment", img.Entry)
	}
	var rdAddr uint64
	if len(initrd) > 0 {
		floor := (kend + pageSize - 1) &^ (pageSize - 1)
		rdAddr, err = placeInitrd(e820, uint64(len(initrd)), floor, fourGiB)
		if err != nil {
			return Entry{}, fmt.Errorf("pvh: %w (kernel ends at %#x)", err, kend)
		}
	}
	if err := checkCmdline(cmdline, CmdlineMax-1); err != nil {
		return Entry{}, fmt.Errorf("pvh: %w", err)
	}

	// Everything is validated; write. The page holds hvm_start_info, the
	// module list and the memory map.
	page := make([]byte, ZeroPageAddr-StartInfoAddr)
	le := binary.LittleEndian
	le.PutUint32(page[0:], startInfoMag)
	le.PutUint32(page[4:], 1) // version
	le.PutUint64(page[24:], CmdlineAddr)
	le.PutUint64(page[32:], RSDPAddr)
	if len(initrd) > 0 {
		le.PutUint32(page[12:], 1) // nr_modules
		le.PutUint64(page[16:], modlistAddr)
		m := page[modlistAddr-StartInfoAddr:]
		le.PutUint64(m[0:], rdAddr)
		le.PutUint64(m[8:], uint64(len(initrd)))
	}
	le.PutUint64(page[40:], memmapAddr)
	le.PutUint32(page[48:], uint32(len(e820)))
	for i, e := range e820 {
		o := memmapAddr - StartInfoAddr + memmapEntSize*i
		le.PutUint64(page[o:], e.Addr)
		le.PutUint64(page[o+8:], e.Size)
		le.PutUint32(page[o+16:], uint32(e.Type))
	}

	entry, err := writeGDT(mem)
	if err != nil {
		return Entry{}, err
	}
	if err := guestWrite(mem, StartInfoAddr, page); err != nil {
		return Entry{}, fmt.Errorf("pvh: writing hvm_start_info: %w", err)
	}
	if err := writeCmdline(mem, cmdline, CmdlineMax-1); err != nil {
		return Entry{}, fmt.Errorf("pvh: %w", err)
	}
	for i, s := range img.Segments {
		if err := guestWrite(mem, s.Paddr, kernel[s.Offset:s.Offset+s.Filesz]); err != nil {
			return Entry{}, fmt.Errorf("pvh: loading segment %d at %#x: %w", i, s.Paddr, err)
		}
		if err := guestZero(mem, s.Paddr+s.Filesz, s.Memsz-s.Filesz); err != nil {
			return Entry{}, fmt.Errorf("pvh: zeroing segment %d bss at %#x: %w", i, s.Paddr+s.Filesz, err)
		}
	}
	if len(initrd) > 0 {
		if err := guestWrite(mem, rdAddr, initrd); err != nil {
			return Entry{}, fmt.Errorf("pvh: loading initrd at %#x: %w", rdAddr, err)
		}
	}
	entry.RIP = uint64(img.Entry)
	entry.RBX = StartInfoAddr
	return entry, nil
}

package boot

import (
	"encoding/binary"
	"syscall"
	"testing"

	"github.com/rscvm/rscvm/vmm/memory"
	"github.com/stretchr/testify/require"
)

const (
	miB = 1 << 20
	giB = 1 << 30
)

var le = binary.LittleEndian

// hostMem returns n bytes of lazily backed anonymous memory, so that tests
// can describe multi-GiB guests without touching (or committing) them.
func hostMem(t testing.TB, n uint64) []byte {
	t.Helper()
	b, err := syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|syscall.MAP_NORESERVE)
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Munmap(b) })
	return b
}

// guestMem lays out ram bytes of guest RAM as the machine does: from 0 up to
// 3 GiB, the rest from 4 GiB.
func guestMem(t testing.TB, ram uint64) *memory.Memory {
	t.Helper()
	low := min(ram, pciHoleStart)
	regions := []memory.Region{{GPA: 0, Host: hostMem(t, low)}}
	if ram > low {
		regions = append(regions, memory.Region{GPA: fourGiB, Host: hostMem(t, ram-low)})
	}
	m, err := memory.New(regions...)
	require.NoError(t, err)
	return m
}

// bzOpts describes a synthetic bzImage.
type bzOpts struct {
	version       uint16
	setupSects    uint8
	pmSize        int
	initrdAddrMax uint32
	cmdlineSize   uint32
	prefAddress   uint64
	initSize      uint32
	alignment     uint32
	relocatable   bool
	loadflags     uint8
}

func defaultBz() bzOpts {
	return bzOpts{
		version:       0x020F,
		setupSects:    3,
		pmSize:        0x3000,
		initrdAddrMax: 0x7FFFFFFF,
		cmdlineSize:   2047,
		prefAddress:   0x1000000,
		initSize:      0x2000000,
		alignment:     0x200000,
		relocatable:   true,
		loadflags:     loadedHigh,
	}
}

// fakeBzImage builds a bzImage with a real-looking setup header; the
// protected-mode part is a byte pattern.
func fakeBzImage(o bzOpts) []byte {
	sects := int(o.setupSects)
	if sects == 0 {
		sects = 4
	}
	b := make([]byte, (sects+1)*512+o.pmSize)
	// Recognizable filler in the header so that the copy can be checked.
	for i := hdrStartOff; i < 0x268; i++ {
		b[i] = byte(i * 7)
	}
	b[offSetupSects] = o.setupSects
	le.PutUint16(b[offBootFlag:], 0xAA55)
	b[offJump], b[offJump+1] = 0xEB, 0x66 // header ends at 0x268
	copy(b[hdrMagicOff:], hdrMagic)
	le.PutUint16(b[offVersion:], o.version)
	b[offTypeOfLoader] = 0
	b[offLoadflags] = o.loadflags
	le.PutUint32(b[offCode32Start:], KernelAddr)
	le.PutUint32(b[offRamdiskImage:], 0)
	le.PutUint32(b[offRamdiskSize:], 0)
	le.PutUint16(b[offHeapEndPtr:], 0)
	le.PutUint32(b[offCmdLinePtr:], 0)
	le.PutUint32(b[offInitrdAddrMax:], o.initrdAddrMax)
	le.PutUint32(b[offKernelAlignment:], o.alignment)
	b[offRelocatable] = 0
	if o.relocatable {
		b[offRelocatable] = 1
	}
	le.PutUint16(b[offXLoadflags:], 0x3)
	le.PutUint32(b[offCmdlineSize:], o.cmdlineSize)
	le.PutUint64(b[offSetupData:], 0x12345678) // bogus setup_data: the loader clears it
	le.PutUint64(b[offPrefAddress:], o.prefAddress)
	le.PutUint32(b[offInitSize:], o.initSize)
	for i := (sects + 1) * 512; i < len(b); i++ {
		b[i] = byte(i*13 + 1)
	}
	return b
}

// elfSeg is a PT_LOAD of a synthetic ELF.
type elfSeg struct {
	paddr uint64
	data  []byte
	memsz uint64
}

// elfOpts describes a synthetic PVH ELF.
type elfOpts struct {
	is64       bool
	segs       []elfSeg
	entry      uint64
	entrySize  int  // 4 or 8; 0 means no PVH note
	noteInSect bool // put the note in an SHT_NOTE section instead of a PT_NOTE
	otherNote  bool // put an unrelated note before the PVH note
}

func note(name string, typ uint32, desc []byte) []byte {
	nb := append([]byte(name), 0)
	b := make([]byte, 12)
	le.PutUint32(b[0:], uint32(len(nb)))
	le.PutUint32(b[4:], uint32(len(desc)))
	le.PutUint32(b[8:], typ)
	b = append(b, nb...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// buildELF writes an ELF file programmatically: header, program headers,
// notes, segment data, and (if asked) section headers.
func buildELF(o elfOpts) []byte {
	ehsize, phsize, shsize := 52, 32, 40
	if o.is64 {
		ehsize, phsize, shsize = 64, 56, 64
	}
	var notes []byte
	if o.otherNote {
		notes = append(notes, note("GNU", 3, []byte{1, 2, 3, 4, 5, 6})...)
	}
	if o.entrySize != 0 {
		d := make([]byte, o.entrySize)
		switch o.entrySize {
		case 8:
			le.PutUint64(d, o.entry)
		case 4:
			le.PutUint32(d, uint32(o.entry))
		}
		notes = append(notes, note("Xen", xenPhys32, d)...)
	}
	nph := len(o.segs)
	if len(notes) > 0 && !o.noteInSect {
		nph++
	}
	off := ehsize + nph*phsize
	noteOff := off
	off += len(notes)
	segOff := make([]int, len(o.segs))
	for i, s := range o.segs {
		off = (off + 15) &^ 15
		segOff[i] = off
		off += len(s.data)
	}
	shoff := 0
	nsh := 0
	if o.noteInSect && len(notes) > 0 {
		off = (off + 7) &^ 7
		shoff = off
		nsh = 2 // null section + the note section
		off += nsh * shsize
	}
	b := make([]byte, off)
	copy(b, elfMagic)
	b[4] = elfClass32
	if o.is64 {
		b[4] = elfClass64
	}
	b[5], b[6] = elfDataLSB, 1
	le.PutUint16(b[16:], 2) // ET_EXEC
	if o.is64 {
		le.PutUint16(b[18:], emX86_64)
		le.PutUint32(b[20:], 1)
		le.PutUint64(b[24:], o.entry)
		le.PutUint64(b[32:], uint64(ehsize))
		le.PutUint64(b[40:], uint64(shoff))
		le.PutUint16(b[52:], uint16(ehsize))
		le.PutUint16(b[54:], uint16(phsize))
		le.PutUint16(b[56:], uint16(nph))
		le.PutUint16(b[58:], uint16(shsize))
		le.PutUint16(b[60:], uint16(nsh))
	} else {
		le.PutUint16(b[18:], emI386)
		le.PutUint32(b[20:], 1)
		le.PutUint32(b[24:], uint32(o.entry))
		le.PutUint32(b[28:], uint32(ehsize))
		le.PutUint32(b[32:], uint32(shoff))
		le.PutUint16(b[40:], uint16(ehsize))
		le.PutUint16(b[42:], uint16(phsize))
		le.PutUint16(b[44:], uint16(nph))
		le.PutUint16(b[46:], uint16(shsize))
		le.PutUint16(b[48:], uint16(nsh))
	}
	putPh := func(i int, typ uint32, off, paddr, filesz, memsz, align uint64) {
		p := ehsize + i*phsize
		le.PutUint32(b[p:], typ)
		if o.is64 {
			le.PutUint32(b[p+4:], 5)
			le.PutUint64(b[p+8:], off)
			le.PutUint64(b[p+16:], paddr+0xffffffff80000000)
			le.PutUint64(b[p+24:], paddr)
			le.PutUint64(b[p+32:], filesz)
			le.PutUint64(b[p+40:], memsz)
			le.PutUint64(b[p+48:], align)
		} else {
			le.PutUint32(b[p+4:], uint32(off))
			le.PutUint32(b[p+8:], uint32(paddr))
			le.PutUint32(b[p+12:], uint32(paddr))
			le.PutUint32(b[p+16:], uint32(filesz))
			le.PutUint32(b[p+20:], uint32(memsz))
			le.PutUint32(b[p+24:], 5)
			le.PutUint32(b[p+28:], uint32(align))
		}
	}
	for i, s := range o.segs {
		copy(b[segOff[i]:], s.data)
		putPh(i, ptLoad, uint64(segOff[i]), s.paddr, uint64(len(s.data)), s.memsz, 0x1000)
	}
	copy(b[noteOff:], notes)
	if len(notes) > 0 && !o.noteInSect {
		putPh(len(o.segs), ptNote, uint64(noteOff), 0, uint64(len(notes)), uint64(len(notes)), 4)
	}
	if nsh > 0 {
		p := shoff + shsize // section 1
		le.PutUint32(b[p+4:], shtNote)
		if o.is64 {
			le.PutUint64(b[p+24:], uint64(noteOff))
			le.PutUint64(b[p+32:], uint64(len(notes)))
			le.PutUint64(b[p+48:], 4)
		} else {
			le.PutUint32(b[p+16:], uint32(noteOff))
			le.PutUint32(b[p+20:], uint32(len(notes)))
			le.PutUint32(b[p+32:], 4)
		}
	}
	return b
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)*31 + seed
	}
	return b
}

func defaultELF(is64 bool) elfOpts {
	return elfOpts{
		is64: is64,
		segs: []elfSeg{
			{paddr: 0x200000, data: pattern(0x1234, 1), memsz: 0x5000},
			{paddr: 0x400000, data: pattern(0x100, 2), memsz: 0x100},
		},
		entry:     0x200040,
		entrySize: 8,
	}
}

func readGuest(t testing.TB, m *memory.Memory, gpa, n uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	require.NoError(t, m.Read(gpa, b))
	return b
}

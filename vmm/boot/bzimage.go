package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/rscvm/rscvm/vmm/memory"
)

// Offsets in a bzImage file, which are also offsets in boot_params (the
// setup header is at the same place in both).
const (
	hdrStartOff        = 0x1F1 // first byte of the setup header (setup_sects)
	hdrMagicOff        = 0x202
	hdrMagic           = "HdrS"
	hdrMaxEnd          = 0x290 // boot_params room for the setup header ends here
	offSetupSects      = 0x1F1
	offBootFlag        = 0x1FE
	offJump            = 0x200
	offVersion         = 0x206
	offTypeOfLoader    = 0x210
	offLoadflags       = 0x211
	offCode32Start     = 0x214
	offRamdiskImage    = 0x218
	offRamdiskSize     = 0x21C
	offHeapEndPtr      = 0x224
	offCmdLinePtr      = 0x228
	offInitrdAddrMax   = 0x22C
	offKernelAlignment = 0x230
	offRelocatable     = 0x234
	offXLoadflags      = 0x236
	offCmdlineSize     = 0x238
	offSetupData       = 0x250
	offPrefAddress     = 0x258
	offInitSize        = 0x260

	// boot_params fields outside the setup header.
	bpAcpiRsdpAddr = 0x070
	bpE820Entries  = 0x1E8
	bpE820Table    = 0x2D0
	bpSize         = 0x1000

	loadedHigh  = 0x01 // loadflags: protected-mode code at 0x100000
	canUseHeap  = 0x80 // loadflags: heap_end_ptr is valid
	heapEndPtr  = 0xFE00
	loaderOther = 0xFF // type_of_loader: undefined boot loader

	minProtocol = 0x0206
)

// SetupHeader holds the fields of a bzImage setup header that loading needs.
// Fields newer than the image's protocol version are zero.
type SetupHeader struct {
	SetupSects      uint8  // 512-byte sectors of real-mode setup code (0 read as 4)
	Version         uint16 // boot protocol version, e.g. 0x020F
	Loadflags       uint8
	Code32Start     uint32
	InitrdAddrMax   uint32 // highest address the initrd may occupy
	KernelAlignment uint32 // 2.05+
	Relocatable     bool   // 2.05+
	XLoadflags      uint16 // 2.12+
	CmdlineSize     uint32 // 2.06+: maximum command line length without the NUL
	PrefAddress     uint64 // 2.10+
	InitSize        uint32 // 2.10+: memory the kernel needs from its run address
	// HeaderEnd is the file offset just after the setup header
	// (0x202 + the byte at 0x201), clamped to the room in boot_params.
	HeaderEnd int
}

// SetupSize is the size in bytes of the real-mode part that precedes the
// protected-mode kernel in the file.
func (h SetupHeader) SetupSize() int {
	s := int(h.SetupSects)
	if s == 0 {
		s = 4
	}
	return (s + 1) * 512
}

// ParseSetupHeader parses and validates the setup header of a bzImage: the
// "HdrS" magic, protocol 2.06 or newer, LOADED_HIGH, and a protected-mode
// kernel after the setup sectors.
func ParseSetupHeader(image []byte) (SetupHeader, error) {
	var h SetupHeader
	if len(image) < offVersion+2 {
		return h, fmt.Errorf("not a bzImage: %d bytes is too short for a setup header", len(image))
	}
	if string(image[hdrMagicOff:hdrMagicOff+4]) != hdrMagic {
		return h, fmt.Errorf("not a bzImage: no HdrS magic at %#x", hdrMagicOff)
	}
	le := binary.LittleEndian
	h.Version = le.Uint16(image[offVersion:])
	if h.Version < minProtocol {
		return h, fmt.Errorf("not a bzImage: boot protocol %d.%02d is older than 2.06",
			h.Version>>8, h.Version&0xFF)
	}
	end := hdrMagicOff + int(image[offJump+1])
	if end < offCmdlineSize+4 {
		// 2.06 headers reach at least cmdline_size; a shorter jump is bogus.
		return h, fmt.Errorf("not a bzImage: setup header ends at %#x, before cmdline_size", end)
	}
	h.HeaderEnd = min(end, hdrMaxEnd)
	if len(image) < h.HeaderEnd {
		return h, fmt.Errorf("not a bzImage: %d bytes is too short for a setup header ending at %#x",
			len(image), h.HeaderEnd)
	}
	u32 := func(off int) uint32 {
		if off+4 > h.HeaderEnd {
			return 0
		}
		return le.Uint32(image[off:])
	}
	h.SetupSects = image[offSetupSects]
	h.Loadflags = image[offLoadflags]
	h.Code32Start = u32(offCode32Start)
	h.InitrdAddrMax = u32(offInitrdAddrMax)
	h.KernelAlignment = u32(offKernelAlignment)
	h.Relocatable = image[offRelocatable] != 0
	h.CmdlineSize = u32(offCmdlineSize)
	if h.Version >= 0x020A && offInitSize+4 <= h.HeaderEnd {
		h.PrefAddress = le.Uint64(image[offPrefAddress:])
		h.InitSize = le.Uint32(image[offInitSize:])
	}
	if h.Version >= 0x020C {
		h.XLoadflags = le.Uint16(image[offXLoadflags:])
	}
	if h.Loadflags&loadedHigh == 0 {
		return h, fmt.Errorf("not a bzImage: LOADED_HIGH is not set in loadflags %#x (zImage is not supported)", h.Loadflags)
	}
	if len(image) <= h.SetupSize() {
		return h, fmt.Errorf("bzImage truncated: %d bytes, setup code alone is %d", len(image), h.SetupSize())
	}
	return h, nil
}

// kernelEnd is the first address after the memory the kernel uses while it
// decompresses itself, given that its protected-mode part of pmSize bytes is
// loaded at KernelAddr.
func (h SetupHeader) kernelEnd(pmSize uint64) (uint64, error) {
	end := KernelAddr + pmSize
	if h.InitSize == 0 {
		return end, nil
	}
	run := uint64(KernelAddr)
	if h.Relocatable {
		a := uint64(h.KernelAlignment)
		if a == 0 || a&(a-1) != 0 {
			return 0, fmt.Errorf("bzImage: kernel_alignment %#x is not a power of two", a)
		}
		run = (run + a - 1) &^ (a - 1)
		// The decompressor never runs below its link-time address.
		run = max(run, h.PrefAddress)
	} else if h.PrefAddress != 0 {
		run = h.PrefAddress
	}
	runEnd := run + uint64(h.InitSize)
	if runEnd < run {
		return 0, fmt.Errorf("bzImage: pref_address %#x + init_size %#x overflows", run, h.InitSize)
	}
	return max(end, runEnd), nil
}

// LoadBzImage loads a bzImage through the 32-bit boot protocol: the
// protected-mode kernel at KernelAddr, the zero page at ZeroPageAddr, the
// command line at CmdlineAddr, the initrd (if any) at the top of usable RAM
// below min(initrd_addr_max, 4 GiB), and the GDT.
func LoadBzImage(mem *memory.Memory, kernel []byte, initrd []byte, cmdline string) (Entry, error) {
	h, err := ParseSetupHeader(kernel)
	if err != nil {
		return Entry{}, err
	}
	pm := kernel[h.SetupSize():]
	e820 := BuildE820(mem.Regions())
	if len(e820) > e820Limit {
		return Entry{}, fmt.Errorf("bzImage: %d e820 entries, boot_params holds %d", len(e820), e820Limit)
	}
	kend, err := h.kernelEnd(uint64(len(pm)))
	if err != nil {
		return Entry{}, err
	}
	if !usableRange(e820, KernelAddr, kend-KernelAddr) {
		return Entry{}, fmt.Errorf("bzImage: kernel needs usable RAM [%#x,%#x), RAM below 4 GiB ends at %#x",
			KernelAddr, kend, lowRAMEnd(e820))
	}
	var rdAddr uint64
	if len(initrd) > 0 {
		limit := min(uint64(h.InitrdAddrMax)+1, fourGiB)
		rdAddr, err = placeInitrd(e820, uint64(len(initrd)), kend, limit)
		if err != nil {
			return Entry{}, fmt.Errorf("bzImage: %w (kernel ends at %#x, initrd_addr_max %#x)", err, kend, h.InitrdAddrMax)
		}
	}
	if h.CmdlineSize == 0 {
		// Protocol 2.06 defines cmdline_size; a zero value means the
		// traditional 255-byte limit.
		h.CmdlineSize = 255
	}
	if err := checkCmdline(cmdline, uint64(h.CmdlineSize)); err != nil {
		return Entry{}, fmt.Errorf("bzImage: %w", err)
	}

	// Everything is validated; write.
	zp := make([]byte, bpSize)
	copy(zp[hdrStartOff:h.HeaderEnd], kernel[hdrStartOff:h.HeaderEnd])
	le := binary.LittleEndian
	zp[offTypeOfLoader] = loaderOther
	zp[offLoadflags] |= canUseHeap
	le.PutUint16(zp[offHeapEndPtr:], heapEndPtr)
	le.PutUint32(zp[offCode32Start:], KernelAddr)
	le.PutUint32(zp[offCmdLinePtr:], CmdlineAddr)
	le.PutUint32(zp[offRamdiskImage:], uint32(rdAddr))
	le.PutUint32(zp[offRamdiskSize:], uint32(len(initrd)))
	// No setup_data chain: whatever the file holds there is not a pointer
	// into this guest's memory.
	if h.HeaderEnd >= offSetupData+8 {
		le.PutUint64(zp[offSetupData:], 0)
	}
	if h.Version >= 0x020E {
		le.PutUint64(zp[bpAcpiRsdpAddr:], RSDPAddr)
	}
	zp[bpE820Entries] = uint8(len(e820))
	for i, e := range e820 {
		o := bpE820Table + 20*i
		le.PutUint64(zp[o:], e.Addr)
		le.PutUint64(zp[o+8:], e.Size)
		le.PutUint32(zp[o+16:], uint32(e.Type))
	}

	entry, err := writeGDT(mem)
	if err != nil {
		return Entry{}, err
	}
	if err := writeCmdline(mem, cmdline, uint64(h.CmdlineSize)); err != nil {
		return Entry{}, fmt.Errorf("bzImage: %w", err)
	}
	if err := guestWrite(mem, ZeroPageAddr, zp); err != nil {
		return Entry{}, fmt.Errorf("bzImage: writing zero page: %w", err)
	}
	if err := guestWrite(mem, KernelAddr, pm); err != nil {
		return Entry{}, fmt.Errorf("bzImage: loading %d-byte kernel at %#x: %w", len(pm), KernelAddr, err)
	}
	if len(initrd) > 0 {
		if err := guestWrite(mem, rdAddr, initrd); err != nil {
			return Entry{}, fmt.Errorf("bzImage: loading initrd at %#x: %w", rdAddr, err)
		}
	}
	entry.RIP = KernelAddr
	entry.RSI = ZeroPageAddr
	return entry, nil
}

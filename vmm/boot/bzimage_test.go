package boot

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBzImageZeroPage(t *testing.T) {
	cases := []struct {
		name       string
		ram        uint64
		addrMax    uint32
		initrdSize int
		wantInitrd uint64
		wantE820   int
	}{
		// Top of RAM, page aligned, for a small guest.
		{"128MiB", 128 * miB, 0x7FFFFFFF, 5*miB + 123, 128*miB - 5*miB - pageSize, 4},
		{"1GiB", 1 * giB, 0x7FFFFFFF, 3 * miB, 1*giB - 3*miB, 4},
		// initrd_addr_max below the top of RAM is honoured.
		{"1GiB-addrmax", 1 * giB, 0x1FFFFFFF, 0x1000, 0x20000000 - 0x1000, 4},
		// 4 GiB: the PCI hole ends low RAM at 3 GiB.
		{"4GiB", 4 * giB, 0xFFFFFFFF, 2 * miB, 0xC0000000 - 2*miB, 5},
		{"4GiB-addrmax", 4 * giB, 0x7FFFFFFF, 2 * miB, 0x80000000 - 2*miB, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := guestMem(t, c.ram)
			o := defaultBz()
			o.initrdAddrMax = c.addrMax
			img := fakeBzImage(o)
			initrd := pattern(c.initrdSize, 9)
			cmdline := "console=ttyS0 earlyprintk=serial"
			e, kind, err := Load(m, img, initrd, cmdline)
			require.NoError(t, err)
			require.Equal(t, KindBzImage, kind)
			require.Equal(t, Entry{RIP: 0x100000, RSI: 0x7000, GDTBase: 0x500, GDTLimit: 31, CodeSel: 0x10, DataSel: 0x18}, e)

			zp := readGuest(t, m, ZeroPageAddr, bpSize)
			// The setup header is copied, then the loader fields are set.
			setupSize := 4 * 512
			want := append([]byte(nil), img[hdrStartOff:0x268]...)
			got := zp[hdrStartOff:0x268]
			for _, off := range []int{offTypeOfLoader, offLoadflags, offRamdiskImage, offRamdiskImage + 1,
				offRamdiskImage + 2, offRamdiskImage + 3, offRamdiskSize, offRamdiskSize + 1, offRamdiskSize + 2,
				offRamdiskSize + 3, offHeapEndPtr, offHeapEndPtr + 1, offCmdLinePtr, offCmdLinePtr + 1,
				offCmdLinePtr + 2, offCmdLinePtr + 3, offSetupData, offSetupData + 1, offSetupData + 2, offSetupData + 3} {
				want[off-hdrStartOff] = got[off-hdrStartOff]
			}
			require.Equal(t, want, got)
			require.Equal(t, []byte("HdrS"), zp[0x202:0x206])
			require.Equal(t, uint16(0x020F), le.Uint16(zp[offVersion:]))
			require.Equal(t, byte(0xFF), zp[offTypeOfLoader])
			require.Equal(t, byte(loadedHigh|canUseHeap), zp[offLoadflags])
			require.Equal(t, uint16(0xFE00), le.Uint16(zp[offHeapEndPtr:]))
			require.Equal(t, uint32(0x100000), le.Uint32(zp[offCode32Start:]))
			require.Equal(t, uint32(0x20000), le.Uint32(zp[offCmdLinePtr:]))
			require.Equal(t, uint32(c.wantInitrd), le.Uint32(zp[offRamdiskImage:]))
			require.Equal(t, uint32(c.initrdSize), le.Uint32(zp[offRamdiskSize:]))
			require.Equal(t, uint64(0xE0000), le.Uint64(zp[bpAcpiRsdpAddr:]))
			require.Zero(t, le.Uint64(zp[offSetupData:]), "setup_data")
			require.Equal(t, byte(0), zp[0x1EF], "sentinel")
			require.Equal(t, make([]byte, hdrStartOff-bpE820Entries-1), zp[bpE820Entries+1:hdrStartOff])

			// e820 table.
			require.Equal(t, byte(c.wantE820), zp[bpE820Entries])
			var got820 []E820Entry
			for i := 0; i < int(zp[bpE820Entries]); i++ {
				o := bpE820Table + 20*i
				got820 = append(got820, E820Entry{le.Uint64(zp[o:]), le.Uint64(zp[o+8:]), E820Type(le.Uint32(zp[o+16:]))})
			}
			require.Equal(t, BuildE820(m.Regions()), got820)
			require.Equal(t, E820Entry{0, 0x9FC00, E820RAM}, got820[0])
			require.Equal(t, E820Entry{0xE0000, 0x20000, E820Reserved}, got820[2])
			require.Equal(t, make([]byte, 20), zp[bpE820Table+20*c.wantE820:bpE820Table+20*c.wantE820+20])

			// Command line, kernel, initrd, GDT.
			require.Equal(t, append([]byte(cmdline), 0), readGuest(t, m, CmdlineAddr, uint64(len(cmdline)+1)))
			require.Equal(t, img[setupSize:], readGuest(t, m, KernelAddr, uint64(len(img)-setupSize)))
			require.Equal(t, initrd, readGuest(t, m, c.wantInitrd, uint64(len(initrd))))
			require.Zero(t, c.wantInitrd%pageSize)
			require.LessOrEqual(t, c.wantInitrd+uint64(c.initrdSize)-1, uint64(c.addrMax))
			gdt := readGuest(t, m, GDTAddr, 32)
			require.Equal(t, uint64(0), le.Uint64(gdt[0:]))
			require.Equal(t, uint64(0), le.Uint64(gdt[8:]))
			require.Equal(t, uint64(0x00CF9B000000FFFF), le.Uint64(gdt[16:]))
			require.Equal(t, uint64(0x00CF93000000FFFF), le.Uint64(gdt[24:]))
		})
	}
}

func TestBzImageNoInitrd(t *testing.T) {
	m := guestMem(t, 64*miB)
	img := fakeBzImage(defaultBz())
	_, err := LoadBzImage(m, img, nil, "")
	require.NoError(t, err)
	zp := readGuest(t, m, ZeroPageAddr, bpSize)
	require.Zero(t, le.Uint32(zp[offRamdiskImage:]))
	require.Zero(t, le.Uint32(zp[offRamdiskSize:]))
	b, err := m.U8(CmdlineAddr)
	require.NoError(t, err)
	require.Zero(t, b)
}

func TestBzImageOldProtocolFields(t *testing.T) {
	// Protocol 2.06: no acpi_rsdp_addr (2.14), no init_size (2.10).
	m := guestMem(t, 64*miB)
	o := defaultBz()
	o.version = 0x0206
	o.setupSects = 0 // means 4
	img := fakeBzImage(o)
	e, err := LoadBzImage(m, img, []byte("rd"), "x")
	require.NoError(t, err)
	require.Equal(t, uint64(KernelAddr), e.RIP)
	zp := readGuest(t, m, ZeroPageAddr, bpSize)
	require.Zero(t, le.Uint64(zp[bpAcpiRsdpAddr:]))
	require.Equal(t, img[5*512:5*512+64], readGuest(t, m, KernelAddr, 64))
	require.Equal(t, uint32(64*miB-pageSize), le.Uint32(zp[offRamdiskImage:]))
}

func TestBzImageRejects(t *testing.T) {
	m := guestMem(t, 128*miB)
	o := defaultBz()
	o.version = 0x0204
	_, _, err := Load(m, fakeBzImage(o), nil, "")
	require.ErrorContains(t, err, "not a bzImage: boot protocol 2.04 is older than 2.06")

	o = defaultBz()
	o.loadflags = 0
	_, _, err = Load(m, fakeBzImage(o), nil, "")
	require.ErrorContains(t, err, "not a bzImage: LOADED_HIGH")

	// initrd that does not fit above the kernel (which needs up to 48 MiB).
	_, _, err = Load(m, fakeBzImage(defaultBz()), make([]byte, 100*miB), "")
	require.ErrorContains(t, err, "initrd of 104857600 bytes does not fit")

	// Kernel whose init_size does not fit in RAM.
	o = defaultBz()
	o.initSize = 200 * miB
	_, _, err = Load(m, fakeBzImage(o), nil, "")
	require.ErrorContains(t, err, "kernel needs usable RAM")

	o = defaultBz()
	o.alignment = 3
	_, _, err = Load(m, fakeBzImage(o), nil, "")
	require.ErrorContains(t, err, "kernel_alignment")

	// Command line longer than cmdline_size, or with a NUL.
	o = defaultBz()
	o.cmdlineSize = 10
	_, _, err = Load(m, fakeBzImage(o), nil, strings.Repeat("a", 11))
	require.ErrorContains(t, err, "command line is 11 bytes, the kernel accepts at most 10")
	_, _, err = Load(m, fakeBzImage(o), nil, strings.Repeat("a", 10))
	require.NoError(t, err)
	_, _, err = Load(m, fakeBzImage(defaultBz()), nil, "a\x00b")
	require.ErrorContains(t, err, "NUL")

	// Too little RAM for even the kernel.
	small := guestMem(t, 2*miB)
	o = defaultBz()
	o.initSize = 0
	o.pmSize = 2 * miB
	_, _, err = Load(small, fakeBzImage(o), nil, "")
	require.ErrorContains(t, err, "kernel needs usable RAM")

	// Not a kernel at all.
	_, _, err = Load(m, []byte("MZ garbage"), nil, "")
	require.True(t, errors.Is(err, ErrUnknownFormat))
	require.EqualError(t, err, "kernel: not a bzImage (no HdrS magic at 0x202) and not an ELF with a PVH entry note")
	_, _, err = Load(m, nil, nil, "")
	require.True(t, errors.Is(err, ErrUnknownFormat))
}

func TestBzImageFailureWritesNothing(t *testing.T) {
	m := guestMem(t, 128*miB)
	_, _, err := Load(m, fakeBzImage(defaultBz()), make([]byte, 100*miB), "console=ttyS0")
	require.Error(t, err)
	require.Equal(t, make([]byte, 64), readGuest(t, m, GDTAddr, 64))
	require.Equal(t, make([]byte, bpSize), readGuest(t, m, ZeroPageAddr, bpSize))
	require.Equal(t, make([]byte, 16), readGuest(t, m, CmdlineAddr, 16))
	require.Equal(t, make([]byte, 64), readGuest(t, m, KernelAddr, 64))
}

func TestBzImageTruncated(t *testing.T) {
	m := guestMem(t, 64*miB)
	img := fakeBzImage(defaultBz())
	setupSize := 4 * 512
	for n := 0; n <= setupSize; n++ {
		_, err := LoadBzImage(m, img[:n], nil, "")
		require.Error(t, err, "prefix of %d bytes", n)
		_, err = ParseSetupHeader(img[:n])
		require.Error(t, err, "prefix of %d bytes", n)
	}
	_, err := LoadBzImage(m, img[:setupSize+1], nil, "")
	require.NoError(t, err, "one byte of protected-mode kernel is enough")

	// A jump byte claiming a header shorter than protocol 2.06's.
	bad := append([]byte(nil), img...)
	bad[offJump+1] = 0x10
	_, err = ParseSetupHeader(bad)
	require.ErrorContains(t, err, "setup header ends at 0x212")
	// A header claiming to run past boot_params' room is clamped.
	bad[offJump+1] = 0xFF
	h, err := ParseSetupHeader(bad)
	require.NoError(t, err)
	require.Equal(t, hdrMaxEnd, h.HeaderEnd)
}

func TestSetupHeaderFields(t *testing.T) {
	o := defaultBz()
	h, err := ParseSetupHeader(fakeBzImage(o))
	require.NoError(t, err)
	require.Equal(t, SetupHeader{
		SetupSects: 3, Version: 0x020F, Loadflags: loadedHigh, Code32Start: 0x100000,
		InitrdAddrMax: 0x7FFFFFFF, KernelAlignment: 0x200000, Relocatable: true, XLoadflags: 3,
		CmdlineSize: 2047, PrefAddress: 0x1000000, InitSize: 0x2000000, HeaderEnd: 0x268,
	}, h)
	require.Equal(t, 2048, h.SetupSize())
	end, err := h.kernelEnd(0x3000)
	require.NoError(t, err)
	require.Equal(t, uint64(0x3000000), end)

	// Non-relocatable: runs at pref_address.
	h.Relocatable = false
	h.PrefAddress = 0x400000
	end, err = h.kernelEnd(0x3000)
	require.NoError(t, err)
	require.Equal(t, uint64(0x2400000), end)
	// Relocatable with a pref_address below the aligned load address.
	h.Relocatable = true
	h.PrefAddress = 0
	end, err = h.kernelEnd(0x3000)
	require.NoError(t, err)
	require.Equal(t, uint64(0x200000+0x2000000), end)
}

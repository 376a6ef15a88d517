package boot

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// checkStartInfo verifies hvm_start_info and the structures it points to.
func checkStartInfo(t *testing.T, m interface {
	Read(uint64, []byte) error
}, initrdAddr uint64, initrdSize int, cmdline string, e820 []E820Entry) {
	t.Helper()
	si := make([]byte, startInfoSize)
	require.NoError(t, m.Read(StartInfoAddr, si))
	require.Equal(t, uint32(0x336ec578), le.Uint32(si[0:]), "magic")
	require.Equal(t, uint32(1), le.Uint32(si[4:]), "version")
	require.Equal(t, uint32(0), le.Uint32(si[8:]), "flags")
	require.Equal(t, uint64(0xE0000), le.Uint64(si[32:]), "rsdp_paddr")
	cmdPA := le.Uint64(si[24:])
	require.Equal(t, uint64(CmdlineAddr), cmdPA)
	cb := make([]byte, len(cmdline)+1)
	require.NoError(t, m.Read(cmdPA, cb))
	require.Equal(t, append([]byte(cmdline), 0), cb)

	if initrdSize > 0 {
		require.Equal(t, uint32(1), le.Uint32(si[12:]), "nr_modules")
		ml := le.Uint64(si[16:])
		require.NotZero(t, ml)
		mod := make([]byte, modEntrySize)
		require.NoError(t, m.Read(ml, mod))
		require.Equal(t, initrdAddr, le.Uint64(mod[0:]))
		require.Equal(t, uint64(initrdSize), le.Uint64(mod[8:]))
		require.Zero(t, le.Uint64(mod[16:]), "module cmdline")
		require.Zero(t, le.Uint64(mod[24:]), "reserved")
	} else {
		require.Zero(t, le.Uint32(si[12:]), "nr_modules")
		require.Zero(t, le.Uint64(si[16:]), "modlist_paddr")
	}

	mm := le.Uint64(si[40:])
	n := le.Uint32(si[48:])
	require.Zero(t, le.Uint32(si[52:]), "reserved")
	require.Equal(t, uint32(len(e820)), n)
	var got []E820Entry
	for i := uint32(0); i < n; i++ {
		ent := make([]byte, memmapEntSize)
		require.NoError(t, m.Read(mm+uint64(i)*memmapEntSize, ent))
		require.Zero(t, le.Uint32(ent[20:]), "reserved")
		got = append(got, E820Entry{le.Uint64(ent[0:]), le.Uint64(ent[8:]), E820Type(le.Uint32(ent[16:]))})
	}
	require.Equal(t, e820, got)
}

func TestPVHLoad(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(o *elfOpts)
	}{
		{"elf64", func(o *elfOpts) {}},
		{"elf64-entry32", func(o *elfOpts) { o.entrySize = 4 }},
		{"elf64-section-note", func(o *elfOpts) { o.noteInSect = true; o.otherNote = true }},
		{"elf32", func(o *elfOpts) { o.is64 = false; o.entrySize = 4 }},
		{"elf32-section-note", func(o *elfOpts) { o.is64 = false; o.entrySize = 4; o.noteInSect = true }},
		{"other-note-first", func(o *elfOpts) { o.otherNote = true }},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := defaultELF(true)
			c.mod(&o)
			img := buildELF(o)
			m := guestMem(t, 128*miB)
			// Dirty the bss so that zeroing is visible.
			dirt := make([]byte, 0x10000)
			for i := range dirt {
				dirt[i] = 0xAA
			}
			require.NoError(t, m.Write(0x200000, dirt))

			initrd := pattern(3*miB+5, 4)
			cmdline := "console=ttyS0 root=/dev/ram0"
			e, kind, err := Load(m, img, initrd, cmdline)
			require.NoError(t, err)
			require.Equal(t, KindPVH, kind)
			require.Equal(t, Entry{RIP: 0x200040, RBX: 0x6000, GDTBase: 0x500, GDTLimit: 31, CodeSel: 0x10, DataSel: 0x18}, e)

			// Segments: file part, zeroed bss, untouched after memsz.
			s0 := o.segs[0]
			require.Equal(t, s0.data, readGuest(t, m, s0.paddr, uint64(len(s0.data))))
			require.Equal(t, make([]byte, s0.memsz-uint64(len(s0.data))),
				readGuest(t, m, s0.paddr+uint64(len(s0.data)), s0.memsz-uint64(len(s0.data))))
			require.Equal(t, byte(0xAA), readGuest(t, m, s0.paddr+s0.memsz, 1)[0])
			s1 := o.segs[1]
			require.Equal(t, s1.data, readGuest(t, m, s1.paddr, uint64(len(s1.data))))

			rdAddr := uint64(128*miB - 3*miB - pageSize)
			require.Equal(t, initrd, readGuest(t, m, rdAddr, uint64(len(initrd))))
			checkStartInfo(t, m, rdAddr, len(initrd), cmdline, BuildE820(m.Regions()))
			require.Equal(t, uint64(0x00CF9B000000FFFF), le.Uint64(readGuest(t, m, GDTAddr+16, 8)))
		})
	}
}

func TestPVHNoInitrdAndHighRAM(t *testing.T) {
	m := guestMem(t, 4*giB+512*miB)
	img := buildELF(defaultELF(true))
	e, err := LoadPVH(m, img, nil, "")
	require.NoError(t, err)
	require.Equal(t, uint64(StartInfoAddr), e.RBX)
	e820 := BuildE820(m.Regions())
	require.Len(t, e820, 5)
	require.Equal(t, E820Entry{fourGiB, 1*giB + 512*miB, E820RAM}, e820[4])
	checkStartInfo(t, m, 0, 0, "", e820)

	// With an initrd, it goes below the PCI hole.
	_, err = LoadPVH(m, img, []byte("initrd"), "x")
	require.NoError(t, err)
	checkStartInfo(t, m, 0xC0000000-pageSize, 6, "x", e820)
}

func TestPVHParse(t *testing.T) {
	img, err := ParsePVH(buildELF(defaultELF(true)))
	require.NoError(t, err)
	require.Equal(t, 64, img.Class)
	require.Equal(t, uint32(0x200040), img.Entry)
	require.Len(t, img.Segments, 2)
	require.Equal(t, uint64(0x200000), img.Segments[0].Paddr)
	require.Equal(t, uint64(0x1234), img.Segments[0].Filesz)
	require.Equal(t, uint64(0x5000), img.Segments[0].Memsz)

	o := defaultELF(false)
	o.entrySize = 4
	img, err = ParsePVH(buildELF(o))
	require.NoError(t, err)
	require.Equal(t, 32, img.Class)
}

func TestPVHRejects(t *testing.T) {
	m := guestMem(t, 128*miB)

	// No PVH note: Load reports the unknown format.
	o := defaultELF(true)
	o.entrySize = 0
	o.otherNote = true
	_, _, err := Load(m, buildELF(o), nil, "")
	require.True(t, errors.Is(err, ErrUnknownFormat))
	o.otherNote = false
	_, _, err = Load(m, buildELF(o), nil, "")
	require.EqualError(t, err, ErrUnknownFormat.Error())

	// Segment below 1 MiB, outside RAM, in the PCI hole.
	for _, paddr := range []uint64{0x8000, 200 * miB, 0xC0000000} {
		o = defaultELF(true)
		o.segs[1].paddr = paddr
		_, _, err = Load(m, buildELF(o), nil, "")
		require.Error(t, err, "%#x", paddr)
	}
	// Entry outside the loaded segments.
	o = defaultELF(true)
	o.entry = 0x900000
	_, _, err = Load(m, buildELF(o), nil, "")
	require.ErrorContains(t, err, "entry point 0x900000 is not inside a loaded segment")
	// Entry above 4 GiB in an 8-byte note.
	o = defaultELF(true)
	o.entry = 0x1_0020_0000
	_, _, err = Load(m, buildELF(o), nil, "")
	require.ErrorContains(t, err, "above 4 GiB")
	// Odd-sized descriptor.
	o = defaultELF(true)
	o.entrySize = 2
	_, _, err = Load(m, buildELF(o), nil, "")
	require.ErrorContains(t, err, "2-byte descriptor")
	// initrd too big.
	_, _, err = Load(m, buildELF(defaultELF(true)), make([]byte, 125*miB), "")
	require.ErrorContains(t, err, "does not fit")
	// Big-endian, unknown class, wrong machine.
	good := buildELF(defaultELF(true))
	for _, mut := range []func(b []byte){
		func(b []byte) { b[5] = 2 },
		func(b []byte) { b[4] = 3 },
		func(b []byte) { b[18] = 40 },
		func(b []byte) { le.PutUint16(b[54:], 8) },          // phentsize too small
		func(b []byte) { le.PutUint64(b[32:], 1<<40) },      // phoff outside the file
		func(b []byte) { le.PutUint64(b[64+32:], 0x10000) }, // filesz > memsz
		func(b []byte) { le.PutUint64(b[64+8:], 1<<62) },    // offset outside the file
		func(b []byte) { le.PutUint64(b[64+24:], ^uint64(0)-10) },
	} {
		b := append([]byte(nil), good...)
		mut(b)
		_, _, err = Load(m, b, nil, "")
		require.Error(t, err)
	}
}

func TestPVHTruncated(t *testing.T) {
	m := guestMem(t, 16*miB)
	for _, is64 := range []bool{true, false} {
		o := defaultELF(is64)
		o.entrySize = 4
		img := buildELF(o)
		for n := 0; n < len(img); n++ {
			_, _, err := Load(m, img[:n], nil, "")
			require.Error(t, err, "prefix of %d bytes", n)
		}
		_, _, err := Load(m, img, nil, "")
		require.NoError(t, err)
	}
}

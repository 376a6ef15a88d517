package boot

import (
	"bytes"
	"sync"
	"testing"

	"github.com/rscvm/rscvm/vmm/memory"
	"github.com/stretchr/testify/require"
)

const fuzzRAM = 64 * miB

var (
	fuzzOnce sync.Once
	fuzzMem  *memory.Memory
	fuzzHost []byte
)

// fuzzGuest returns a 64 MiB guest shared by the iterations of a fuzz worker
// (they run one at a time), with a guard pattern below the GDT.
func fuzzGuest(t testing.TB) *memory.Memory {
	fuzzOnce.Do(func() {
		fuzzHost = make([]byte, fuzzRAM)
		var err error
		fuzzMem, err = memory.New(memory.Region{GPA: 0, Host: fuzzHost})
		if err != nil {
			panic(err)
		}
	})
	for i := range fuzzHost[:GDTAddr] {
		fuzzHost[i] = 0x5A
	}
	return fuzzMem
}

// checkGuard verifies that nothing was written below the GDT, where no
// loader has business.
func checkGuard(t *testing.T) {
	if !bytes.Equal(fuzzHost[:GDTAddr], bytes.Repeat([]byte{0x5A}, GDTAddr)) {
		t.Fatal("loader wrote below the GDT")
	}
}

func FuzzBzImage(f *testing.F) {
	small := defaultBz()
	small.initSize = 0x100000
	f.Add(fakeBzImage(small), []byte("initrd"), "console=ttyS0")
	f.Add(fakeBzImage(defaultBz()), []byte(nil), "")
	old := small
	old.version = 0x0206
	old.setupSects = 0
	f.Add(fakeBzImage(old), []byte("rd"), "a")
	f.Add(fakeBzImage(small)[:0x300], []byte(nil), "")
	f.Fuzz(func(t *testing.T, image, initrd []byte, cmdline string) {
		m := fuzzGuest(t)
		h, err := ParseSetupHeader(image)
		e, lerr := LoadBzImage(m, image, initrd, cmdline)
		checkGuard(t)
		if err != nil {
			require.Error(t, lerr)
			return
		}
		require.LessOrEqual(t, h.HeaderEnd, len(image))
		if lerr == nil {
			require.Equal(t, uint64(ZeroPageAddr), e.RSI)
			rd, _ := m.U32(ZeroPageAddr + offRamdiskImage)
			require.LessOrEqual(t, uint64(rd)+uint64(len(initrd)), uint64(fuzzRAM))
		}
	})
}

func FuzzPVHELF(f *testing.F) {
	f.Add(buildELF(defaultELF(true)), []byte("initrd"))
	o := defaultELF(false)
	o.entrySize = 4
	f.Add(buildELF(o), []byte(nil))
	o = defaultELF(true)
	o.noteInSect, o.otherNote = true, true
	f.Add(buildELF(o), []byte("x"))
	o = defaultELF(false)
	o.entrySize, o.noteInSect = 4, true
	f.Add(buildELF(o), []byte(nil))
	f.Fuzz(func(t *testing.T, image, initrd []byte) {
		m := fuzzGuest(t)
		img, perr := ParsePVH(image)
		e, kind, err := Load(m, image, initrd, "console=ttyS0")
		checkGuard(t)
		if perr != nil || err != nil {
			return
		}
		require.Equal(t, KindPVH, kind)
		require.Equal(t, uint64(img.Entry), e.RIP)
		for _, s := range img.Segments {
			require.GreaterOrEqual(t, s.Paddr, uint64(KernelAddr))
			require.LessOrEqual(t, s.Paddr+s.Memsz, uint64(fuzzRAM))
		}
	})
}

package boot

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// realKernels finds kernel images for the optional tests: the file named by
// the environment variable env, else every file matching the candidate
// globs. The test skips if there is none.
func realKernels(t *testing.T, env string, globs ...string) map[string][]byte {
	t.Helper()
	paths := globs
	if p := os.Getenv(env); p != "" {
		paths = []string{p}
	}
	found := map[string][]byte{}
	for _, g := range paths {
		matches, _ := filepath.Glob(g)
		for _, p := range matches {
			if b, err := os.ReadFile(p); err == nil {
				found[p] = b
			}
		}
	}
	if len(found) == 0 {
		t.Skipf("no kernel image found (set %s, or provide one of %v)", env, globs)
	}
	return found
}

// TestRealBzImage loads a real bzImage (Debian's, for example) if one is
// available.
func TestRealBzImage(t *testing.T) {
	for path, img := range realKernels(t, "RSCVM_TEST_BZIMAGE",
		"/boot/vmlinuz-*", "../../out/linux/bzImage", "../../out/debian/vmlinuz") {
		t.Run(filepath.Base(path), func(t *testing.T) { testRealBzImage(t, img) })
	}
}

func testRealBzImage(t *testing.T, img []byte) {
	m := guestMem(t, 256*miB)
	initrd := pattern(1*miB, 3)
	e, kind, err := Load(m, img, initrd, "console=ttyS0")
	require.NoError(t, err)
	require.Equal(t, KindBzImage, kind)
	require.Equal(t, uint64(KernelAddr), e.RIP)
	h, err := ParseSetupHeader(img)
	require.NoError(t, err)
	t.Logf("protocol %#x setup_sects %d init_size %#x pref_address %#x initrd_addr_max %#x",
		h.Version, h.SetupSects, h.InitSize, h.PrefAddress, h.InitrdAddrMax)
	zp := readGuest(t, m, ZeroPageAddr, bpSize)
	require.Equal(t, img[hdrMagicOff:hdrMagicOff+4], zp[hdrMagicOff:hdrMagicOff+4])
	rd := uint64(le.Uint32(zp[offRamdiskImage:]))
	require.Equal(t, initrd, readGuest(t, m, rd, uint64(len(initrd))))
	end, err := h.kernelEnd(uint64(len(img) - h.SetupSize()))
	require.NoError(t, err)
	require.GreaterOrEqual(t, rd, end)
	pm := img[h.SetupSize():]
	require.Equal(t, pm[:4096], readGuest(t, m, KernelAddr, 4096))
}

// TestRealPVH loads a real PVH ELF (the project's freestanding test guest,
// or a vmlinux) if one is available.
func TestRealPVH(t *testing.T) {
	for path, img := range realKernels(t, "RSCVM_TEST_PVH", "../../out/testguest.elf", "../../out/linux/vmlinux") {
		t.Run(filepath.Base(path), func(t *testing.T) { testRealPVH(t, img) })
	}
}

func testRealPVH(t *testing.T, img []byte) {
	p, err := ParsePVH(img)
	require.NoError(t, err)
	t.Logf("ELF%d entry %#x, %d segments", p.Class, p.Entry, len(p.Segments))
	m := guestMem(t, 512*miB)
	e, kind, err := Load(m, img, []byte("initrd"), "console=ttyS0")
	require.NoError(t, err)
	require.Equal(t, KindPVH, kind)
	require.Equal(t, uint64(p.Entry), e.RIP)
	for _, s := range p.Segments {
		n := min(s.Filesz, 4096)
		require.Equal(t, img[s.Offset:s.Offset+n], readGuest(t, m, s.Paddr, n))
	}
}

package initramfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/internal/testenv"
)

func testSpec() Spec {
	return Spec{
		Init: []byte("\x7fELF fake agent"),
		Modules: []Modules{{
			KernelRelease: "6.1.0-56-cloud-amd64",
			List: []Module{
				{Name: "virtio_ring.ko", Data: []byte("ring")},
				{Name: "virtio_net.ko.xz", Data: []byte("net!!")},
			},
		}},
	}
}

func TestReproducible(t *testing.T) {
	a, err := Bytes(testSpec())
	require.NoError(t, err)
	b, err := Bytes(testSpec())
	require.NoError(t, err)
	require.Equal(t, a, b)
	require.True(t, bytes.HasPrefix(a, []byte("070701")), "newc magic")
	require.Zero(t, len(a)%4)

	// Through files, with a pause so that real mtimes would differ.
	dir := t.TempDir()
	f1, f2 := filepath.Join(dir, "1.cpio"), filepath.Join(dir, "2.cpio")
	require.NoError(t, WriteFile(f1, testSpec()))
	time.Sleep(1100 * time.Millisecond)
	require.NoError(t, WriteFile(f2, testSpec()))
	c1, err := os.ReadFile(f1)
	require.NoError(t, err)
	c2, err := os.ReadFile(f2)
	require.NoError(t, err)
	require.Equal(t, c1, c2)
	require.Equal(t, a, c1)

	// Rewriting identical content leaves the file alone.
	st1, err := os.Stat(f1)
	require.NoError(t, err)
	require.NoError(t, WriteFile(f1, testSpec()))
	st2, err := os.Stat(f1)
	require.NoError(t, err)
	require.Equal(t, st1.ModTime(), st2.ModTime())
}

func TestEntries(t *testing.T) {
	a, err := Bytes(testSpec())
	require.NoError(t, err)
	es, err := Entries(a)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name)
	}
	require.Equal(t, []string{
		"dev", "dev/console", "dev/null", "proc", "sys", "lib", "lib/modules",
		"lib/modules/6.1.0-56-cloud-amd64",
		"lib/modules/6.1.0-56-cloud-amd64/virtio_ring.ko",
		"lib/modules/6.1.0-56-cloud-amd64/virtio_net.ko.xz",
		"lib/modules/6.1.0-56-cloud-amd64/load.order",
		"init",
	}, names)
	byName := map[string]Entry{}
	for _, e := range es {
		byName[e.Name] = e
	}
	require.Equal(t, Entry{Name: "dev/console", Mode: ModeChar | 0o600, Rmajor: 5, Rminor: 1}, byName["dev/console"])
	require.Equal(t, Entry{Name: "dev/null", Mode: ModeChar | 0o666, Rmajor: 1, Rminor: 3}, byName["dev/null"])
	require.Equal(t, uint64(ModeFile|0o755), byName["init"].Mode)
	require.Equal(t, uint64(len(testSpec().Init)), byName["init"].Size)
	require.Equal(t, uint64(ModeDir|0o755), byName["proc"].Mode)
	require.Equal(t, uint64(len("virtio_ring.ko\nvirtio_net.ko.xz\n")), byName["lib/modules/6.1.0-56-cloud-amd64/load.order"].Size)
}

func TestNoModules(t *testing.T) {
	a, err := Bytes(Spec{Init: []byte("x")})
	require.NoError(t, err)
	es, err := Entries(a)
	require.NoError(t, err)
	require.Len(t, es, 8)
	require.Equal(t, "init", es[7].Name)
}

// TestCpioTool checks the archive with GNU cpio when it is installed:
// metadata must be reproducible (uid/gid 0, mtime 0).
func TestCpioTool(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	a, err := Bytes(testSpec())
	require.NoError(t, err)
	cmd := exec.Command("cpio", "-t", "-v", "--quiet")
	cmd.Stdin = bytes.NewReader(a)
	out, err := cmd.Output()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 12)
	for _, l := range lines {
		f := strings.Fields(l)
		require.Equal(t, "root", f[2], l)
		require.Equal(t, "root", f[3], l)
		require.Contains(t, l, "1970", l)
	}
	require.True(t, strings.HasPrefix(lines[1], "crw-------"), lines[1])
}

func TestWriteErrors(t *testing.T) {
	_, err := Bytes(Spec{})
	require.Error(t, err)
	for _, ms := range []Modules{
		{KernelRelease: ""},
		{KernelRelease: "../x"},
		{KernelRelease: "6.1", List: []Module{{Name: "a/b.ko"}}},
		{KernelRelease: "6.1", List: []Module{{Name: LoadOrderFile}}},
		{KernelRelease: "6.1", List: []Module{{Name: "a.ko"}, {Name: "a.ko"}}},
	} {
		_, err := Bytes(Spec{Init: []byte("x"), Modules: []Modules{ms}})
		require.Error(t, err, ms)
	}
	_, err = Bytes(Spec{Init: []byte("x"), Modules: []Modules{{KernelRelease: "a"}, {KernelRelease: "a"}}})
	require.Error(t, err)
}

func TestReadModulesDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "modules")
	require.NoError(t, os.Mkdir(dir, 0o755))
	_, err := ReadModulesDir(dir)
	require.Error(t, err, "no kver")
	require.NoError(t, os.WriteFile(filepath.Join(root, "kver"), []byte("6.1.0-56-cloud-amd64\n"), 0o644))
	_, err = ReadModulesDir(dir)
	require.Error(t, err, "no load.order")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "load.order"), []byte("a.ko\n\nb.ko.xz\n"), 0o644))
	_, err = ReadModulesDir(dir)
	require.Error(t, err, "missing module")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.ko"), []byte("A"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b.ko.xz"), []byte("BB"), 0o644))
	ms, err := ReadModulesDir(dir)
	require.NoError(t, err)
	require.Equal(t, Modules{KernelRelease: "6.1.0-56-cloud-amd64", List: []Module{{"a.ko", []byte("A")}, {"b.ko.xz", []byte("BB")}}}, ms)

	// kver next to the modules wins
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kver"), []byte("6.12.1\n"), 0o644))
	ms, err = ReadModulesDir(dir)
	require.NoError(t, err)
	require.Equal(t, "6.12.1", ms.KernelRelease)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "load.order"), []byte("../x.ko\n"), 0o644))
	_, err = ReadModulesDir(dir)
	require.Error(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kver"), []byte("a/b\n"), 0o644))
	_, err = ReadModulesDir(dir)
	require.Error(t, err)
}

// TestDebianModules builds an archive from the real fetched modules when
// they are there.
func TestDebianModules(t *testing.T) {
	dir := filepath.Join(outDir(t), "debian", "modules")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("%s missing (run guestimages/build.sh out): %v", dir, err)
	}
	ms, err := ReadModulesDir(dir)
	require.NoError(t, err)
	require.NotEmpty(t, ms.List)
	require.Equal(t, "virtio_net", strings.SplitN(ms.List[len(ms.List)-1].Name, ".", 2)[0])
	a, err := Bytes(Spec{Init: []byte("x"), Modules: []Modules{ms}})
	require.NoError(t, err)
	b, err := Bytes(Spec{Init: []byte("x"), Modules: []Modules{ms}})
	require.NoError(t, err)
	require.Equal(t, a, b)
}

// outDir is $RSCVM_OUT or the out/ directory of the repository.
func outDir(t *testing.T) string {
	d, err := testenv.OutDir()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func FuzzEntries(f *testing.F) {
	a, err := Bytes(testSpec())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(a)
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Entries(b)
	})
}

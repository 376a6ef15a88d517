// Package initramfs writes rscvm's test initramfs: a newc cpio archive with a
// static /init (the guest agent), /dev/console and /dev/null, the mount
// points the agent uses and optional kernel modules under
// /lib/modules/<release>/ with their load order. The archive is
// byte-for-byte reproducible: fixed entry order, inode numbers, zero mtimes,
// uid and gid 0.
package initramfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// LoadOrderFile lists the module files of a module directory in load order,
// one name per line; the agent reads /lib/modules/<release>/LoadOrderFile.
const LoadOrderFile = "load.order"

// KernelReleaseFile in a module directory (or its parent) holds the kernel
// release the modules belong to.
const KernelReleaseFile = "kver"

// maxModuleSize bounds one module file.
const maxModuleSize = 64 << 20

// Module is one kernel module file.
type Module struct {
	// Name is the file name, e.g. "virtio_net.ko" or "virtio_net.ko.xz".
	Name string
	Data []byte
}

// Modules is a set of modules for one kernel release, in load order.
type Modules struct {
	KernelRelease string
	List          []Module
}

// Spec describes an initramfs.
type Spec struct {
	// Init is the content of /init, a static executable.
	Init []byte
	// Modules go to /lib/modules/<release>/ with a load.order file.
	Modules []Modules
}

// Entry is one archive member as Entries reports it.
type Entry struct {
	Name string
	// Mode holds the Unix file type and permission bits.
	Mode   uint64
	Size   uint64
	Rmajor uint64
	Rminor uint64
}

// Unix file types in Entry.Mode.
const (
	ModeDir  = cpio.S_IFDIR
	ModeFile = cpio.S_IFREG
	ModeChar = cpio.S_IFCHR
	ModeType = cpio.S_IFMT
)

// Write writes the archive for spec to w.
func Write(w io.Writer, spec Spec) error {
	if len(spec.Init) == 0 {
		return errors.New("initramfs: empty /init")
	}
	var recs []cpio.Record
	dir := func(name string) { recs = append(recs, cpio.Directory(name, 0o755)) }
	dir("dev")
	recs = append(recs,
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3))
	dir("proc")
	dir("sys")
	dir("lib")
	dir("lib/modules")
	seen := map[string]bool{}
	for _, ms := range spec.Modules {
		if err := validName(ms.KernelRelease); err != nil {
			return fmt.Errorf("initramfs: kernel release: %w", err)
		}
		if seen[ms.KernelRelease] {
			return fmt.Errorf("initramfs: kernel release %q twice", ms.KernelRelease)
		}
		seen[ms.KernelRelease] = true
		base := path.Join("lib/modules", ms.KernelRelease)
		dir(base)
		var order strings.Builder
		names := map[string]bool{}
		for _, m := range ms.List {
			if err := validName(m.Name); err != nil || m.Name == LoadOrderFile {
				return fmt.Errorf("initramfs: module file name %q", m.Name)
			}
			if names[m.Name] {
				return fmt.Errorf("initramfs: module %q twice", m.Name)
			}
			names[m.Name] = true
			recs = append(recs, cpio.StaticRecord(m.Data, cpio.Info{Name: path.Join(base, m.Name), Mode: cpio.S_IFREG | 0o644}))
			order.WriteString(m.Name + "\n")
		}
		recs = append(recs, cpio.StaticFile(path.Join(base, LoadOrderFile), order.String(), 0o644))
	}
	recs = append(recs, cpio.StaticRecord(spec.Init, cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755}))

	bw := bufio.NewWriter(w)
	cw := cpio.Newc.Writer(bw)
	for i, r := range recs {
		r = cpio.MakeReproducible(r)
		r.Ino = uint64(i + 1)
		r.NLink = 1
		if r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			r.NLink = 2
		}
		if err := cw.WriteRecord(r); err != nil {
			return fmt.Errorf("initramfs: %s: %w", r.Name, err)
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("initramfs: trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// Bytes returns the archive for spec.
func Bytes(spec Spec) ([]byte, error) {
	var b bytes.Buffer
	if err := Write(&b, spec); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteFile writes the archive to file atomically; an identical existing
// file is left untouched (so its mtime only changes with its content).
func WriteFile(file string, spec Spec) error {
	b, err := Bytes(spec)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(file); err == nil && bytes.Equal(old, b) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".initramfs-*")
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// Entries lists the members of a newc archive in order, up to the trailer.
// It checks every length against the archive, so any bytes are safe input.
func Entries(archive []byte) ([]Entry, error) {
	const hdrLen = 110
	var out []Entry
	off := 0
	for {
		if len(archive)-off < hdrLen {
			return nil, fmt.Errorf("initramfs: truncated header at %d", off)
		}
		h := archive[off : off+hdrLen]
		if string(h[:6]) != "070701" && string(h[:6]) != "070702" {
			return nil, fmt.Errorf("initramfs: bad magic at %d", off)
		}
		var f [13]uint64
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("initramfs: bad header field at %d", off)
			}
			f[i] = v
		}
		mode, size, rmaj, rmin, nameSize := f[1], f[6], f[9], f[10], f[11]
		if nameSize == 0 || nameSize > uint64(len(archive)-off-hdrLen) {
			return nil, fmt.Errorf("initramfs: bad name size at %d", off)
		}
		nameBytes := archive[off+hdrLen : off+hdrLen+int(nameSize)]
		if nameBytes[len(nameBytes)-1] != 0 {
			return nil, fmt.Errorf("initramfs: name not NUL-terminated at %d", off)
		}
		name := string(nameBytes[:len(nameBytes)-1])
		data := align4(off + hdrLen + int(nameSize))
		if name == cpio.Trailer {
			return out, nil
		}
		if data > len(archive) || size > uint64(len(archive)-data) {
			return nil, fmt.Errorf("initramfs: %q: truncated data", name)
		}
		out = append(out, Entry{Name: name, Mode: mode, Size: size, Rmajor: rmaj, Rminor: rmin})
		off = align4(data + int(size))
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

// ReadModulesDir reads a module directory as fetch-debian.sh writes it: the
// modules named in DIR/load.order, and the kernel release from DIR/kver or
// DIR/../kver.
func ReadModulesDir(dir string) (Modules, error) {
	rel, err := readRelease(dir)
	if err != nil {
		return Modules{}, err
	}
	order, err := os.ReadFile(filepath.Join(dir, LoadOrderFile))
	if err != nil {
		return Modules{}, fmt.Errorf("initramfs: modules: %w", err)
	}
	ms := Modules{KernelRelease: rel}
	for _, line := range strings.Split(string(order), "\n") {
		name := strings.TrimSpace(line)
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		if err := validName(name); err != nil {
			return Modules{}, fmt.Errorf("initramfs: %s: %w", LoadOrderFile, err)
		}
		data, err := readBounded(filepath.Join(dir, name), maxModuleSize)
		if err != nil {
			return Modules{}, fmt.Errorf("initramfs: module: %w", err)
		}
		ms.List = append(ms.List, Module{Name: name, Data: data})
	}
	return ms, nil
}

func readRelease(dir string) (string, error) {
	var firstErr error
	for _, p := range []string{filepath.Join(dir, KernelReleaseFile), filepath.Join(dir, "..", KernelReleaseFile)} {
		b, err := readBounded(p, 4096)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		rel := strings.TrimSpace(string(b))
		if err := validName(rel); err != nil {
			return "", fmt.Errorf("initramfs: %s: kernel release: %w", p, err)
		}
		return rel, nil
	}
	return "", fmt.Errorf("initramfs: no kernel release file: %w", firstErr)
}

// readBounded reads a file of at most max bytes.
func readBounded(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, max)
	}
	return b, nil
}

// validName accepts a single path element.
func validName(s string) error {
	if s == "" || s == "." || s == ".." || len(s) > 255 || strings.ContainsAny(s, "/\x00\n") {
		return fmt.Errorf("bad name %q", s)
	}
	return nil
}

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/guestimages/agent/protocol"
)

// mountAll mounts /proc, /sys and /dev (devtmpfs); already mounted is fine.
func mountAll() error {
	var errs []error
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		flags := uintptr(unix.MS_NOSUID)
		if m.fstype != "devtmpfs" {
			flags |= unix.MS_NOEXEC
		}
		err := unix.Mount(m.src, m.dst, m.fstype, flags, "")
		if err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.dst, err))
		}
	}
	return errors.Join(errs...)
}

// kernelRelease returns uname -r.
func kernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// LoadOrderFile names the file in /lib/modules/<release>/ that lists the
// modules to load, one file name per line, in order.
const LoadOrderFile = "load.order"

// readLoadOrder reads dir/load.order; a missing file means no modules.
func readLoadOrder(dir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, LoadOrderFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if strings.Contains(s, "/") || s == "." || s == ".." {
			return nil, fmt.Errorf("%s: bad module file name %q", LoadOrderFile, s)
		}
		names = append(names, s)
	}
	return names, sc.Err()
}

// moduleFlags returns the finit_module flags for a module file name.
func moduleFlags(name string) int {
	if strings.HasSuffix(name, ".ko") {
		return 0
	}
	// .ko.xz, .ko.zst, .ko.gz: the kernel decompresses
	return unix.MODULE_INIT_COMPRESSED_FILE
}

// loadModule loads one module file; an already loaded module is fine.
func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", moduleFlags(filepath.Base(path)))
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
		return nil
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("finit_module: kernel has no module support: %w", err)
	}
	return fmt.Errorf("finit_module: %w", err)
}

// powerOff syncs and powers the machine off; if that fails it tries a
// reboot (QEMU with -no-reboot exits then), and finally waits forever:
// init must never exit.
func powerOff(out *console) {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	out.line(protocol.FormatError("poweroff", err))
	err = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	out.line(protocol.FormatError("reboot", err))
	select {}
}

// openConsole returns a writer for the console: stdout if the kernel gave
// init one, else /dev/console (after /dev is mounted).
func openConsole() *os.File {
	var st unix.Stat_t
	if unix.Fstat(1, &st) == nil {
		return os.Stdout
	}
	for _, p := range []string{"/dev/console", "/dev/ttyS0"} {
		if f, err := os.OpenFile(p, os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			return f
		}
	}
	return os.Stdout
}

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/guestimages/initramfs"
	"github.com/rscvm/rscvm/guestimages/testguest"
	"github.com/rscvm/rscvm/internal/testenv"
)

// The real Linux virtio_net driver against rscvm's device, under rscvm's
// KVM: the kernel-only linux-source guest (no userspace can run on this
// machine's emulated KVM) binds virtio_net to the virtio-net-pci function,
// configures eth0 with ip= and answers ICMP echo and TCP SYNs from the host
// side of the TAP. The boot takes minutes here.

func requireLinuxNetEnv(t *testing.T) (bzImage, cmdline string) {
	t.Helper()
	testenv.KVM(t)
	if err := testguest.NetnsAvailable(); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	bzImage = testenv.Image(t, "linux/bzImage")
	b, err := os.ReadFile(testenv.Image(t, "linux/cmdline.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return bzImage, strings.TrimSpace(string(b))
}

// spinInit is a minimal static x86-64 ELF whose entry point is `jmp .`: an
// init that never makes a system call (guest userspace cannot make one on
// this machine's emulated KVM: the first syscall faults and the kernel
// panics, after which its network stack stops answering). Spinning in user
// mode keeps the kernel scheduling, so the network stays up for the test.
func spinInit() []byte {
	const base, codeOff = 0x400000, 120
	b := make([]byte, codeOff+2)
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1}) // ELF64, little-endian, version 1
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)            // ET_EXEC
	le.PutUint16(b[18:], 0x3e)         // EM_X86_64
	le.PutUint32(b[20:], 1)            // EV_CURRENT
	le.PutUint64(b[24:], base+codeOff) // e_entry
	le.PutUint64(b[32:], 64)           // e_phoff
	le.PutUint16(b[52:], 64)           // e_ehsize
	le.PutUint16(b[54:], 56)           // e_phentsize
	le.PutUint16(b[56:], 1)            // e_phnum
	ph := b[64:]
	le.PutUint32(ph[0:], 1)               // PT_LOAD
	le.PutUint32(ph[4:], 5)               // PF_R|PF_X
	le.PutUint64(ph[16:], base)           // p_vaddr
	le.PutUint64(ph[24:], base)           // p_paddr
	le.PutUint64(ph[32:], uint64(len(b))) // p_filesz
	le.PutUint64(ph[40:], uint64(len(b))) // p_memsz
	le.PutUint64(ph[48:], 0x1000)         // p_align
	b[codeOff], b[codeOff+1] = 0xeb, 0xfe // jmp .
	return b
}

// buildRscvm compiles this command into a temporary directory.
func buildRscvm(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rscvm")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

func TestLinuxVirtioNetUnderRscvm(t *testing.T) {
	bzImage, cmdline := requireLinuxNetEnv(t)
	bin := buildRscvm(t)
	initrd := filepath.Join(t.TempDir(), "spin.cpio")
	require.NoError(t, initramfs.WriteFile(initrd, initramfs.Spec{Init: spinInit()}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	const guestIP, hostIP = "10.0.2.15", "10.0.2.2"
	cmdline += " ip=" + guestIP + "::" + hostIP + ":255.255.255.0::eth0:off"
	start := time.Now()
	s, err := testguest.StartSession(ctx, testguest.SessionConfig{ELF: bzImage, Cmdline: cmdline,
		Command: testguest.RscvmCommand(bin, "--stats", "-initrd", initrd), Log: t.Logf})
	require.NoError(t, err)
	defer s.Close()

	_, err = s.WaitLine(ctx, func(l string) bool { return strings.Contains(l, "IP-Config: Complete") },
		func(l string) error {
			if strings.Contains(l, "Kernel panic") || strings.Contains(l, "IP-Config: Failed") {
				return errors.New(l)
			}
			return nil
		})
	require.NoError(t, err, "stderr: %s", s.Stderr())
	t.Logf("eth0 configured after %v", time.Since(start).Round(time.Second))
	_, err = s.WaitLine(ctx, func(l string) bool { return strings.Contains(l, "device=eth0") }, nil)
	require.NoError(t, err)
	serial := string(s.Serial())
	for _, want := range []string{
		"pci 0000:00:01.0: [1af4:1000] type 00 class 0x020000",
		"pci 0000:00:01.0: BAR 0 [io  0xc000-0xc01f]",
		"pci 0000:00:01.0: BAR 1 [mem 0xc0000000-0xc0000fff]",
		"pci 0000:00:01.0: BAR 4 [mem 0x100000000-0x100003fff 64bit pref]",
		"device=eth0, hwaddr=52:54:00:12:34:56, ipaddr=" + guestIP,
	} {
		require.Contains(t, serial, want)
	}

	// The host side of the TAP gets an address so the namespace's own stack
	// (ping, TCP) talks to the guest.
	ipCmd := func(args ...string) {
		out, err := exec.CommandContext(ctx, "ip", append([]string{"-n", s.Netns.Name}, args...)...).CombinedOutput()
		require.NoError(t, err, "ip %v: %s", args, out)
	}
	ipCmd("addr", "add", hostIP+"/24", "dev", s.Netns.Tap)

	for _, size := range []int{56, 1472, 1473, 8000, 60000} {
		argv := s.Netns.Command("ping", "-n", "-c", "1", "-W", "120", "-s", fmt.Sprint(size), "-p", "a5c3", guestIP)
		t0 := time.Now()
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		require.NoError(t, err, "ping -s %d: %s", size, out)
		require.Contains(t, string(out), "1 received", "ping -s %d: %s", size, out)
		require.NotContains(t, string(out), "wrong data byte", "echo payload byte-exact: %s", out)
		t.Logf("ping -s %d: reply in %v", size, time.Since(t0).Round(time.Millisecond))
	}

	// A SYN to a closed port is answered with a RST: connection refused.
	err = s.Netns.Do(func() error {
		c, err := net.DialTimeout("tcp", guestIP+":9", 2*time.Minute)
		if err == nil {
			c.Close()
			return errors.New("connected to a closed port")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		return nil
	})
	require.NoError(t, err, "SYN to a closed port must be refused by a RST")

	require.NotContains(t, string(s.Serial()), "Kernel panic", "the guest stayed up (its init spins in user mode)")

	// Linux 6.1's virtio_net negotiates with rscvm exactly what it
	// negotiates with QEMU 7.2.
	require.NoError(t, s.Stop(30*time.Second))
	require.Contains(t, s.Stderr(), "negotiated features 0x0000010130afffa7", "stderr: %s", s.Stderr())
}

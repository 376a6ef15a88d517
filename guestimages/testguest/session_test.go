package testguest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeVMM is a VMMCommand running a shell script instead of a VMM: the
// harness does not care what prints the serial lines.
func fakeVMM(script string) VMMCommand {
	return func(elf, cmdline string, nic NIC) []string {
		return []string{"sh", "-c", script, "fakevmm", elf, cmdline, strings.Join(nic.Args(), " ")}
	}
}

func requireNetns(t *testing.T) {
	t.Helper()
	if err := NetnsAvailable(); err != nil {
		requireNetEnvSkip(t, err)
	}
}

func TestNICArgs(t *testing.T) {
	require.Equal(t, []string{
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=",
	}, NIC{}.Args())
	require.Equal(t, []string{
		"-netdev", "tap,id=n0,ifname=t1,script=no,downscript=no,vhost=off,queues=2",
		"-device", "virtio-net-pci-non-transitional,netdev=n0,mac=02:00:00:00:00:01,romfile=,mq=on,guest_rsc_ext=on",
	}, NIC{Tap: "t1", MAC: "02:00:00:00:00:01", Device: "virtio-net-pci-non-transitional",
		DeviceProps: []string{"mq=on", "guest_rsc_ext=on"}, NetdevProps: []string{"queues=2"}}.Args())
	argv := QEMUCommand(QEMUOptions{Accel: "kvm"})("g.elf", "net=1", NIC{})
	require.Equal(t, QEMUBinary, argv[0])
	require.Contains(t, strings.Join(argv, " "), "-accel kvm ")
	require.Contains(t, strings.Join(argv, " "), "-kernel g.elf -append net=1 -netdev tap,id=n0,ifname=tap0,")
}

// TestSessionFakeVMM exercises the harness without QEMU: the command runs in
// the namespace (it sees the TAP), lines are awaited and parsed, frames the
// "VMM" would read are injected and the exit is collected.
func TestSessionFakeVMM(t *testing.T) {
	requireNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := StartSession(ctx, SessionConfig{
		ELF: "/nonexistent.elf", Cmdline: "net=1 x=1",
		Command: fakeVMM(`ip link show tap0 >/dev/null || exit 3
echo "rscvm-testguest: start"
echo "cmdline \"$2\""
echo "ready status=0f rxbufs=256 bufsize=4096 descs=1 mode=mrg heap=1"
sleep 0.2
echo "rx n=0 len=60 bufs=1 flags=00 gso_type=00 hdr_len=0 gso_size=0 csum_start=0 csum_offset=0 num_buffers=1 sum=0000abcd"
echo "rscvm-testguest: done"`),
		Log: t.Logf,
	})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	require.Equal(t, []string{"ip", "netns", "exec", s.Netns.Name, "sh", "-c"}, s.Argv[:6])

	ready, err := s.WaitReady(ctx)
	require.NoError(t, err)
	require.Equal(t, &Ready{Status: 0x0f, RxBufs: 256, BufSize: 4096, Descs: 1, Mode: "mrg", Heap: 1}, ready)
	require.NoError(t, s.Inject(make([]byte, 60))) // queued in the TAP: nobody reads it

	line, err := s.WaitPrefix(ctx, "rx ")
	require.NoError(t, err)
	require.Contains(t, line, "sum=0000abcd")
	out, err := s.Wait(ctx)
	require.NoError(t, err)
	require.True(t, out.Done)
	require.Equal(t, "net=1 x=1", out.Cmdline)
	require.Len(t, out.Net.Rx, 1)

	_, err = s.WaitPrefix(ctx, "never")
	require.ErrorIs(t, err, ErrVMMExited)
}

func TestSessionGuestFailure(t *testing.T) {
	requireNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := StartSession(ctx, SessionConfig{Command: fakeVMM(`echo "virtio error no virtio-net device"; sleep 30`)})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }() // kills the sleeping "VMM"
	_, err = s.WaitReady(ctx)
	require.ErrorIs(t, err, ErrGuestFailed)
	require.Contains(t, err.Error(), "no virtio-net device")

	short, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	_, err = s.Wait(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestSessionVMMFails(t *testing.T) {
	requireNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := StartSession(ctx, SessionConfig{Command: fakeVMM(`echo boom >&2; exit 1`)})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	_, err = s.WaitReady(ctx)
	require.ErrorIs(t, err, ErrVMMExited)
	_, err = s.Wait(ctx)
	require.ErrorIs(t, err, ErrVMMExited)
	require.Contains(t, err.Error(), "boom")
}

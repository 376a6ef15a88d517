package testguest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rscvm/rscvm/net/header"
)

// NIC describes the guest's network card as a -netdev/-device pair, in the
// syntax QEMU and `rscvm boot` both accept.
type NIC struct {
	// Tap is the TAP interface name (default "tap0").
	Tap string
	// MAC is the guest MAC address (default DefaultMAC).
	MAC string
	// Device is the device model (default "virtio-net-pci").
	Device string
	// DeviceProps are extra "key=value" properties of the device, e.g.
	// "guest_rsc_ext=on", "rsc_interval=50000000", "mq=on".
	DeviceProps []string
	// NetdevProps are extra "key=value" properties of the tap netdev, e.g. "queues=2".
	NetdevProps []string
	// MultiQueue creates the TAP with IFF_MULTI_QUEUE (needed for queues > 1).
	MultiQueue bool
	// MTU, if non-zero, is set on the TAP: the packet socket cannot inject
	// frames longer than MTU + 14 (+4 with a VLAN tag).
	MTU int
	// TxQueueLen, if non-zero, is set on the TAP: the kernel drops frames
	// for the VMM beyond this many queued (default 1000).
	TxQueueLen int
}

// DefaultMAC is the guest MAC address the harness uses unless told otherwise.
const DefaultMAC = "52:54:00:12:34:56"

func (n NIC) tap() string {
	if n.Tap == "" {
		return "tap0"
	}
	return n.Tap
}

func (n NIC) mac() string {
	if n.MAC == "" {
		return DefaultMAC
	}
	return n.MAC
}

// Args returns the -netdev and -device arguments: a userspace tap backend
// (vhost=off, no scripts) and the device with romfile= (no option ROM).
func (n NIC) Args() []string {
	netdev := "tap,id=n0,ifname=" + n.tap() + ",script=no,downscript=no,vhost=off"
	for _, p := range n.NetdevProps {
		netdev += "," + p
	}
	dev := n.Device
	if dev == "" {
		dev = "virtio-net-pci"
	}
	dev += ",netdev=n0,mac=" + n.mac() + ",romfile="
	for _, p := range n.DeviceProps {
		dev += "," + p
	}
	return []string{"-netdev", netdev, "-device", dev}
}

// VMMCommand returns the argv (binary first) of a VMM that boots the guest
// ELF with the given command line and NIC, COM1 on stdout, and exits when the
// guest powers off.
type VMMCommand func(elf, cmdline string, nic NIC) []string

// QEMUCommand runs QEMU as RunQEMU does (see QEMUArgs; opts.Cmdline is
// replaced by the session's command line) with the NIC appended.
func QEMUCommand(opts QEMUOptions) VMMCommand {
	return func(elf, cmdline string, nic NIC) []string {
		o := opts
		o.Cmdline = cmdline
		o.Extra = append(append([]string(nil), opts.Extra...), nic.Args()...)
		return append([]string{QEMUBinary}, QEMUArgs(elf, o)...)
	}
}

// RscvmCommand runs `BINARY boot -kernel ELF -append CMDLINE -m 128 -serial
// stdio [extra...] -netdev ... -device ...`, the rscvm spelling of what
// QEMUCommand does.
func RscvmCommand(binary string, extra ...string) VMMCommand {
	return func(elf, cmdline string, nic NIC) []string {
		argv := []string{binary, "boot", "-kernel", elf, "-append", cmdline, "-m", "128", "-serial", "stdio"}
		argv = append(argv, extra...)
		return append(argv, nic.Args()...)
	}
}

// SessionConfig configures StartSession.
type SessionConfig struct {
	// ELF is the guest image (see Build).
	ELF string
	// Cmdline is the guest command line; "net=1" is usually needed.
	Cmdline string
	// NIC is the network card; its TAP is created in a fresh namespace.
	NIC NIC
	// Command builds the VMM command line; nil means QEMUCommand(QEMUOptions{}) (TCG).
	Command VMMCommand
	// Log, if set, receives every serial line as it arrives (e.g. t.Logf).
	Log func(format string, args ...any)
}

// Session is one VMM process running the test guest inside a fresh network
// namespace whose TAP is the guest NIC's backend. The host side of the TAP is
// a packet socket: Inject sends frames to the guest, ReadFrame returns what
// the guest transmitted. Serial lines are collected as they arrive.
type Session struct {
	Netns  *Netns
	Packet *PacketSocket
	// Verified is the packet socket on the checksum-verifying path
	// (InjectVerified), opened on first use.
	Verified *PacketSocket
	Argv     []string // the VMM command as started (inside the namespace)

	cmd    *exec.Cmd
	log    func(string, ...any)
	stderr bytes.Buffer

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line and at exit
	exited  bool
	exitErr error
	done    chan struct{} // closed once the process has exited and output is drained
}

// ErrVMMExited is returned by the Wait* helpers when the VMM exited before the
// awaited line appeared.
var ErrVMMExited = errors.New("vmm exited")

// ErrGuestFailed is returned by WaitReady when the guest printed a failure
// ("virtio error", "trap") before its ready line.
var ErrGuestFailed = errors.New("guest failed")

// StartSession creates the namespace and TAP, opens the packet socket and
// starts the VMM inside the namespace. The process is killed when ctx ends;
// Close must be called in any case.
func StartSession(ctx context.Context, cfg SessionConfig) (*Session, error) {
	ns, err := NewNetns(cfg.NIC.tap(), cfg.NIC.MultiQueue)
	if err != nil {
		return nil, err
	}
	if cfg.NIC.MTU != 0 {
		if err := ipCommand("-n", ns.Name, "link", "set", ns.Tap, "mtu", strconv.Itoa(cfg.NIC.MTU)); err != nil {
			_ = ns.Delete()
			return nil, err
		}
	}
	if cfg.NIC.TxQueueLen != 0 {
		if err := ipCommand("-n", ns.Name, "link", "set", ns.Tap, "txqueuelen", strconv.Itoa(cfg.NIC.TxQueueLen)); err != nil {
			_ = ns.Delete()
			return nil, err
		}
	}
	s := &Session{Netns: ns, log: cfg.Log, changed: make(chan struct{}), done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			_ = s.Close()
		}
	}()
	if s.Packet, err = ns.OpenPacketSocket(ns.Tap); err != nil {
		return nil, err
	}
	build := cfg.Command
	if build == nil {
		build = QEMUCommand(QEMUOptions{})
	}
	s.Argv = ns.Command(build(cfg.ELF, cfg.Cmdline, cfg.NIC)...)
	s.cmd = exec.CommandContext(ctx, s.Argv[0], s.Argv[1:]...)
	// Own process group: killing it also ends children that hold stdout open.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.cmd.Cancel = s.kill
	s.cmd.Stderr = &lockedWriter{w: &s.stderr, mu: &s.mu}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("testguest: vmm stdout: %w", err)
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("testguest: start %s: %w", strings.Join(s.Argv, " "), err)
	}
	go s.collect(stdout)
	ok = true
	return s, nil
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// collect reads serial lines until EOF, then waits for the process.
func (s *Session) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if s.log != nil {
			s.log("serial: %s", line)
		}
		s.mu.Lock()
		s.lines = append(s.lines, line)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
	err := s.cmd.Wait()
	s.mu.Lock()
	s.exited, s.exitErr = true, err
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	close(s.done)
}

// Lines returns a copy of the serial lines received so far.
func (s *Session) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// Serial returns the serial output so far, one "\n"-terminated line each.
func (s *Session) Serial() []byte {
	var b bytes.Buffer
	for _, l := range s.Lines() {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Stderr returns what the VMM wrote to stderr so far.
func (s *Session) Stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// WaitLine waits for the first serial line (from the start of output) for
// which match returns true and returns it. It fails with ErrVMMExited if the
// VMM exits first, or with fail's error as soon as fail (if non-nil) returns
// one for a line seen before the match.
func (s *Session) WaitLine(ctx context.Context, match func(string) bool, fail func(string) error) (string, error) {
	next := 0
	for {
		s.mu.Lock()
		lines, exited, changed := s.lines[next:], s.exited, s.changed
		next = len(s.lines)
		s.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
			if fail != nil {
				if err := fail(l); err != nil {
					return "", err
				}
			}
		}
		if exited {
			return "", fmt.Errorf("testguest: %w before the awaited line", ErrVMMExited)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("testguest: waiting for a serial line: %w", ctx.Err())
		}
	}
}

// WaitPrefix waits for a serial line starting with prefix.
func (s *Session) WaitPrefix(ctx context.Context, prefix string) (string, error) {
	return s.WaitLine(ctx, func(l string) bool { return strings.HasPrefix(l, prefix) }, nil)
}

// guestFailure reports lines that mean the guest will not reach the awaited state.
func guestFailure(l string) error {
	for _, p := range []string{"virtio error", "trap ", HaltedLine} {
		if strings.HasPrefix(l, p) {
			return fmt.Errorf("testguest: %w: %s", ErrGuestFailed, l)
		}
	}
	return nil
}

// WaitReady waits for the guest's "ready" line (driver set up, rx buffers
// posted, control commands done) and returns it parsed.
func (s *Session) WaitReady(ctx context.Context) (*Ready, error) {
	l, err := s.WaitLine(ctx, func(l string) bool { return strings.HasPrefix(l, "ready ") }, guestFailure)
	if err != nil {
		return nil, err
	}
	var o Output
	if err := o.parseLine(l); err != nil {
		return nil, fmt.Errorf("testguest: %q: %w", l, err)
	}
	if o.Net == nil || o.Net.Ready == nil {
		return nil, fmt.Errorf("testguest: %w: %q", ErrMalformed, l)
	}
	// The VMM attached to the TAP long ago, but the kernel turns the TAP's
	// queue on (noop qdisc -> real one) only when its link-watch work has
	// seen the carrier, which waits for the RTNL lock: while namespaces are
	// being deleted that can take seconds, and frames sent meanwhile are
	// dropped without an error.
	if err := s.Netns.WaitOperUp(ctx, s.Netns.Tap); err != nil {
		return nil, err
	}
	return o.Net.Ready, nil
}

// Inject sends frames (Ethernet, no virtio header) to the guest, in order.
func (s *Session) Inject(frames ...[]byte) error {
	for _, f := range frames {
		if err := s.Packet.Write(f); err != nil {
			return err
		}
	}
	return nil
}

// InjectVnet sends one frame with virtio-net header information (partial
// checksum, GSO) to the guest; see PacketSocket.WriteVnet.
func (s *Session) InjectVnet(hdr header.VirtioNetHdr, frame []byte) error {
	return s.Packet.WriteVnet(hdr, frame)
}

// InjectVerified sends frames to the guest through the namespace's
// checksum-verifying path (Netns.AddVerifiedPath, set up on first use): the
// VMM reads them with DATA_VALID if their TCP checksum is good. gap is
// waited between frames so that the kernel's GRO does not merge them.
func (s *Session) InjectVerified(gap time.Duration, frames ...[]byte) error {
	if s.Verified == nil {
		if err := s.Netns.AddVerifiedPath(); err != nil {
			return err
		}
		for _, ifname := range []string{VerifiedInject, verifiedPort, s.Netns.Tap} {
			if err := s.Netns.WaitOperUp(context.Background(), ifname); err != nil {
				return err
			}
		}
		p, err := s.Netns.OpenPacketSocket(VerifiedInject)
		if err != nil {
			return err
		}
		s.Verified = p
	}
	for i, f := range frames {
		if i > 0 && gap > 0 {
			time.Sleep(gap)
		}
		if err := s.Verified.Write(f); err != nil {
			return err
		}
	}
	return nil
}

// ReadFrame returns the next frame the guest transmitted.
func (s *Session) ReadFrame(ctx context.Context) ([]byte, error) {
	return s.Packet.Read(ctx)
}

// Wait waits for the VMM to exit by itself (the guest powers off) and returns
// the parsed serial output. The error is non-nil if ctx ended first, the VMM
// failed, or the output does not parse; the Output is returned as far as it
// parsed in every case.
func (s *Session) Wait(ctx context.Context) (*Output, error) {
	select {
	case <-s.done:
	case <-ctx.Done():
		out, _ := ParseOutput(s.Serial())
		return out, fmt.Errorf("testguest: vmm still running: %w", ctx.Err())
	}
	out, perr := ParseOutput(s.Serial())
	s.mu.Lock()
	exitErr := s.exitErr
	s.mu.Unlock()
	if exitErr != nil {
		return out, fmt.Errorf("testguest: %w: %w: %s", ErrVMMExited, exitErr, strings.TrimSpace(s.Stderr()))
	}
	return out, perr
}

// kill sends SIGKILL to the VMM's process group.
func (s *Session) kill() error {
	return syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
}

// Stop asks a VMM that still runs to end (SIGTERM to its process group: a
// VMM like rscvm then stops its guest and prints its exit-time output, such
// as --stats) and waits up to grace for it; then it kills it.
func (s *Session) Stop(grace time.Duration) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
		return nil
	case <-time.After(grace):
	}
	_ = s.kill()
	select {
	case <-s.done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("testguest: vmm did not exit after kill")
	}
}

// Close kills the VMM if it still runs, closes the packet socket and deletes
// the namespace (and its TAP).
func (s *Session) Close() error {
	var errs []error
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.done:
		default:
			_ = s.kill()
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				errs = append(errs, errors.New("testguest: vmm did not exit after kill"))
			}
		}
	}
	if s.Packet != nil {
		errs = append(errs, s.Packet.Close())
	}
	if s.Verified != nil {
		errs = append(errs, s.Verified.Close())
	}
	if s.Netns != nil {
		errs = append(errs, s.Netns.Delete())
	}
	return errors.Join(errs...)
}

package hck

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/tap"
	"github.com/rscvm/rscvm/rsc/conformance"
	virtionet "github.com/rscvm/rscvm/virtio/net"
)

// tapMTU is the MTU the runner gives the TAP, so that AF_PACKET can send
// the scenarios' frames longer than 1514 bytes.
const tapMTU = 65521

// maxOutstanding bounds the frames injected but not yet read, below the
// TAP's queue length (tx_queue_len 500).
const maxOutstanding = 128

// TapOptions select the TAP of a TAP runner.
type TapOptions struct {
	Options
	// Name is the TAP's name; it is created if it does not exist.
	Name string
	// Netns creates the TAP in a fresh network namespace, which disappears
	// with the runner (no host traffic, IPv6 off). Otherwise the TAP is in
	// the current namespace; host traffic on it (its own IPv6 neighbour
	// discovery, say) is told apart by source MAC and ignored.
	Netns bool
}

// TapRunner runs scenarios through the virtio-net device on a real TAP:
// frames are sent from the host side of the TAP with an AF_PACKET socket
// (with a virtio-net header, so NEEDS_CSUM and GSO frames can be sent) and
// the device reads them with the virtio-net header the kernel attaches.
// The kernel never marks such frames DATA_VALID, so the device sees flags
// 0 (or NEEDS_CSUM) where a scenario's TAP header says DATA_VALID; the
// runner checks the delivered packets against the frames as the device
// read them. Timing-dependent scenarios (batch boundaries) are skipped.
type TapRunner struct {
	opts    TapOptions
	t       *tap.Tap
	be      *virtionet.TapBackend
	sock    int
	ifindex int
	restore func()
}

// NewTapRunner opens (or creates) the TAP, sets its MTU, brings it up and
// opens the injection socket. It needs CAP_NET_ADMIN (and CAP_SYS_ADMIN
// for Netns).
func NewTapRunner(opts TapOptions) (*TapRunner, error) {
	opts.Options = opts.Options.normalized()
	if opts.Name == "" {
		return nil, errors.New("TAP runner: no TAP name")
	}
	r := &TapRunner{opts: opts, sock: -1}
	var err error
	if opts.Netns {
		err = inNewNetns(r.open)
	} else {
		err = r.open()
	}
	if err != nil {
		_ = r.Close()
		return nil, err
	}
	if err := r.waitReady(); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// inNewNetns runs f on a thread in a new network namespace. The thread is
// never returned to the runtime's pool (it exits with its goroutine); the
// namespace lives as long as the descriptors f opened in it.
func inNewNetns(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("new network namespace: %w (needs CAP_SYS_ADMIN)", err)
			return
		}
		// No IPv6 on the TAP: router solicitations would be noise.
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
		errc <- f()
	}()
	return <-errc
}

// open opens the TAP and the socket in the calling thread's namespace.
func (r *TapRunner) open() error {
	t, err := tap.Open(tap.Config{Name: r.opts.Name, Logger: r.opts.Logger})
	if err != nil {
		return fmt.Errorf("opening TAP %s: %w", r.opts.Name, err)
	}
	r.t = t
	oldMTU, errMTU := t.MTU()
	wasUp, errUp := t.IsUp()
	// No IPv6 on the TAP while the runner uses it: the host's neighbour
	// discovery would queue frames the device must deliver before it can
	// acknowledge offload changes, and hold them while the ring is full.
	v6 := "/proc/sys/net/ipv6/conf/" + t.Name() + "/disable_ipv6"
	oldV6, errV6 := os.ReadFile(v6)
	if errV6 == nil {
		_ = os.WriteFile(v6, []byte("1"), 0)
	}
	if err := t.SetMTU(tapMTU); err != nil {
		return fmt.Errorf("TAP %s: MTU %d: %w", r.opts.Name, tapMTU, err)
	}
	if err := t.SetUp(true); err != nil {
		return fmt.Errorf("TAP %s: link up: %w", r.opts.Name, err)
	}
	r.restore = func() {
		if errV6 == nil {
			_ = os.WriteFile(v6, oldV6, 0)
		}
		if errMTU == nil {
			_ = t.SetMTU(oldMTU)
		}
		if errUp == nil && !wasUp {
			_ = t.SetUp(false)
		}
	}
	ifi, err := net.InterfaceByName(t.Name())
	if err != nil {
		return fmt.Errorf("TAP %s: %w", t.Name(), err)
	}
	r.ifindex = ifi.Index
	// Protocol 0: the socket only sends.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("AF_PACKET socket: %w (needs CAP_NET_RAW)", err)
	}
	r.sock = fd
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fmt.Errorf("PACKET_VNET_HDR: %w", err)
	}
	be, err := virtionet.NewTapBackend(t)
	if err != nil {
		return err
	}
	r.be = be
	return nil
}

// Name is the TAP's name.
func (r *TapRunner) Name() string { return r.t.Name() }

// Kind implements Runner.
func (r *TapRunner) Kind() conformance.Runner { return conformance.Tap }

// Close implements Runner: it restores the TAP's MTU and link state and
// closes it (a TAP the runner created disappears).
func (r *TapRunner) Close() error {
	if r.sock >= 0 {
		_ = unix.Close(r.sock)
		r.sock = -1
	}
	if r.restore != nil && !r.opts.Netns {
		r.restore()
	}
	if r.t != nil {
		err := r.t.Close()
		r.t = nil
		return err
	}
	return nil
}

// send writes one frame with a 10-byte virtio-net header to the TAP.
func (r *TapRunner) send(h header.VirtioNetHdr, frame []byte) error {
	b := make([]byte, header.VirtioNetHdrLegacySize+len(frame))
	_ = h.EncodeLegacy(b)
	copy(b[header.VirtioNetHdrLegacySize:], frame)
	proto := uint16(unix.ETH_P_ALL)
	if len(frame) >= header.EthernetMinSize {
		proto = binary.BigEndian.Uint16(frame[12:14])
	}
	sa := &unix.SockaddrLinklayer{Ifindex: r.ifindex, Protocol: htons(proto)}
	return unix.Sendto(r.sock, b, 0, sa)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// probeMAC is the source MAC of the runner's readiness probes.
var probeMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}

// waitReady sends probes until one comes out of the TAP: the kernel
// activates the TAP's queueing discipline asynchronously after carrier-on
// and drops frames until then.
func (r *TapRunner) waitReady() error {
	probe := make([]byte, 60)
	copy(probe[0:6], conformance.GuestMAC[:])
	copy(probe[6:12], probeMAC[:])
	binary.BigEndian.PutUint16(probe[12:14], 0x88b5) // local experimental
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 65600)
	for time.Now().Before(deadline) {
		if err := r.send(header.VirtioNetHdr{}, probe); err != nil && !errors.Is(err, unix.ENOBUFS) {
			return fmt.Errorf("TAP %s: sending a probe: %w", r.t.Name(), err)
		}
		end := time.Now().Add(20 * time.Millisecond)
		for time.Now().Before(end) {
			n, err := r.t.Queue(0).Read(buf)
			if err != nil {
				time.Sleep(time.Millisecond)
				continue
			}
			if n >= virtionet.BackendHdrSize+12 && [6]byte(buf[virtionet.BackendHdrSize+6:virtionet.BackendHdrSize+12]) == probeMAC {
				return r.drain()
			}
		}
	}
	return fmt.Errorf("TAP %s: frames sent to it never arrive", r.t.Name())
}

// drain discards frames queued in the TAP.
func (r *TapRunner) drain() error {
	buf := make([]byte, 65600)
	for {
		if _, err := r.t.Queue(0).Read(buf); err != nil {
			if errors.Is(err, tap.ErrWouldBlock) || errors.Is(err, unix.EAGAIN) {
				return nil
			}
			return fmt.Errorf("TAP %s: draining: %w", r.t.Name(), err)
		}
	}
}

// Run implements Runner. Every scenario gets a fresh device and driver on
// the TAP; frames left in the TAP are discarded first.
func (r *TapRunner) Run(ctx context.Context, sc conformance.Scenario, base conformance.Config) conformance.Result {
	if err := r.drain(); err != nil {
		res := newResult(sc, conformance.Tap)
		res.Failf("%v", err)
		return res
	}
	return runDevice(ctx, &tapEnv{r: r}, sc, base, r.opts.Options)
}

// tapEnv injects through the TAP runner's socket.
type tapEnv struct{ r *TapRunner }

func (e *tapEnv) kind() conformance.Runner   { return conformance.Tap }
func (e *tapEnv) backend() virtionet.Backend { return e.r.be }
func (e *tapEnv) dropsRunts() bool           { return false }
func (e *tapEnv) captures() bool             { return true }

// inject sends frames one by one, keeping at most maxOutstanding unread.
// The kernel never produces DATA_VALID for them; NEEDS_CSUM and GSO fields
// are passed on.
func (e *tapEnv) inject(d *devRun, frames []conformance.Frame, refused bool) error {
	base := d.injected
	for i, f := range frames {
		if !refused {
			target := base + i - maxOutstanding
			if err := d.waitFor("the device to catch up with the TAP", func() (bool, error) {
				reads, _, _ := d.watch.snapshot()
				return reads >= target, nil
			}); err != nil {
				return err
			}
		}
		h := f.Hdr
		h.Flags &= header.VirtioNetHdrFNeedsCsum
		if h.Flags == 0 {
			h.CsumStart, h.CsumOffset = 0, 0
		}
		deadline := time.Now().Add(d.opts.Timeout)
		for {
			err := e.r.send(h, f.Data)
			if err == nil {
				break
			}
			if !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("sending frame %d (%d bytes) to TAP %s: %w", base+i, len(f.Data), e.r.t.Name(), err)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("sending frame %d to TAP %s: queue full for %v", base+i, e.r.t.Name(), d.opts.Timeout)
			}
			if err := d.collect(); err != nil {
				return err
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	return nil
}

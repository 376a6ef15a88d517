package vhostuser

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/rscvm/rscvm/vmm/memory"
)

// testFrontend is a minimal vhost-user frontend for in-process tests: guest
// memory in a memfd shared with the backend, rings laid out by queuetest
// drivers, kick and call eventfds.
type testFrontend struct {
	tb     testing.TB
	c      *net.UnixConn
	memfd  *os.File
	host   []byte
	mem    *memory.Memory
	uaddr  uint64 // the "frontend virtual address" of guest-physical 0
	size   uint64
	kicks  []*os.File
	calls  []*os.File
	errs   []*os.File
	reply  bool // REPLY_ACK negotiated: ask for acks
	closed bool
}

const (
	testMemSize = 8 << 20
	testUaddr   = 0x7f1200000000
)

// newTestFrontend creates guest memory and connects to the socket at path.
func newTestFrontend(tb testing.TB, path string) *testFrontend {
	tb.Helper()
	fd, err := unix.MemfdCreate("vhost-user-test", unix.MFD_CLOEXEC)
	if err != nil {
		tb.Fatalf("memfd_create: %v", err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	if err := f.Truncate(testMemSize); err != nil {
		tb.Fatal(err)
	}
	host, err := unix.Mmap(fd, 0, testMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		tb.Fatal(err)
	}
	mem, err := memory.New(memory.Region{GPA: 0, Host: host})
	if err != nil {
		tb.Fatal(err)
	}
	fe := &testFrontend{tb: tb, memfd: f, host: host, mem: mem, uaddr: testUaddr, size: testMemSize}
	fe.dial(path)
	tb.Cleanup(fe.close)
	return fe
}

func (fe *testFrontend) dial(path string) {
	fe.tb.Helper()
	var c *net.UnixConn
	var err error
	for i := 0; i < 200; i++ {
		c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		fe.tb.Fatalf("dial %s: %v", path, err)
	}
	fe.c = c
}

func (fe *testFrontend) close() {
	if fe.closed {
		return
	}
	fe.closed = true
	_ = fe.c.Close()
	for _, fs := range [][]*os.File{fe.kicks, fe.calls, fe.errs} {
		for _, f := range fs {
			if f != nil {
				_ = f.Close()
			}
		}
	}
	_ = unix.Munmap(fe.host)
	_ = fe.memfd.Close()
}

// send writes one request with optional descriptors.
func (fe *testFrontend) send(req Request, flags uint32, payload []byte, files ...*os.File) error {
	b := make([]byte, HeaderSize+len(payload))
	le.PutUint32(b[0:4], uint32(req))
	le.PutUint32(b[4:8], flags)
	le.PutUint32(b[8:12], uint32(len(payload)))
	copy(b[HeaderSize:], payload)
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	_, _, err := fe.c.WriteMsgUnix(b, oob, nil)
	return err
}

// recv reads one reply to req.
func (fe *testFrontend) recv(req Request) ([]byte, error) {
	_ = fe.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [HeaderSize]byte
	if _, err := readFull(fe.c, h[:]); err != nil {
		return nil, err
	}
	if got := Request(le.Uint32(h[0:4])); got != req {
		return nil, errors.New("reply to " + got.String() + ", want " + req.String())
	}
	if f := le.Uint32(h[4:8]); f != version|flagReply {
		return nil, errors.New("reply flags wrong")
	}
	p := make([]byte, le.Uint32(h[8:12]))
	if _, err := readFull(fe.c, p); err != nil {
		return nil, err
	}
	return p, nil
}

func readFull(c *net.UnixConn, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := c.Read(p[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// do sends req and, when REPLY_ACK is on, checks the ack. It returns the
// ack status (0 when no ack was asked for).
func (fe *testFrontend) do(req Request, payload []byte, files ...*os.File) uint64 {
	fe.tb.Helper()
	flags := uint32(version)
	if fe.reply {
		flags |= flagNeedReply
	}
	if err := fe.send(req, flags, payload, files...); err != nil {
		fe.tb.Fatalf("%v: %v", req, err)
	}
	if !fe.reply {
		return 0
	}
	p, err := fe.recv(req)
	if err != nil || len(p) != 8 {
		fe.tb.Fatalf("%v ack: %v (%d bytes)", req, err, len(p))
	}
	return le.Uint64(p)
}

// mustDo is do that fails the test on a non-zero ack.
func (fe *testFrontend) mustDo(req Request, payload []byte, files ...*os.File) {
	fe.tb.Helper()
	if st := fe.do(req, payload, files...); st != 0 {
		fe.tb.Fatalf("%v: backend answered failure %d", req, st)
	}
}

// get sends a request that has a reply and returns the reply.
func (fe *testFrontend) get(req Request, payload []byte) []byte {
	fe.tb.Helper()
	if err := fe.send(req, version, payload); err != nil {
		fe.tb.Fatalf("%v: %v", req, err)
	}
	p, err := fe.recv(req)
	if err != nil {
		fe.tb.Fatalf("%v: %v", req, err)
	}
	return p
}

func (fe *testFrontend) getU64(req Request) uint64 {
	fe.tb.Helper()
	p := fe.get(req, nil)
	if len(p) != 8 {
		fe.tb.Fatalf("%v: %d-byte reply", req, len(p))
	}
	return le.Uint64(p)
}

func u64(v uint64) []byte { return u64Bytes(v) }

func state(i, n uint32) []byte {
	b := make([]byte, 8)
	le.PutUint32(b[0:4], i)
	le.PutUint32(b[4:8], n)
	return b
}

func regionBytes(gpa, size, uaddr, off uint64) []byte {
	b := make([]byte, regionSize)
	le.PutUint64(b[0:8], gpa)
	le.PutUint64(b[8:16], size)
	le.PutUint64(b[16:24], uaddr)
	le.PutUint64(b[24:32], off)
	return b
}

// memTable sends SET_MEM_TABLE with the whole memfd as one region.
func (fe *testFrontend) memTable() uint64 {
	p := make([]byte, 8)
	le.PutUint32(p[0:4], 1)
	p = append(p, regionBytes(0, fe.size, fe.uaddr, 0)...)
	return fe.do(ReqSetMemTable, p, fe.memfd)
}

// handshake negotiates features (protocol features with REPLY_ACK and the
// given device features) and sends the memory table.
func (fe *testFrontend) handshake(features uint64) {
	fe.tb.Helper()
	offered := fe.getU64(ReqGetFeatures)
	if offered&(1<<FeatureProtocolFeatures) == 0 {
		fe.tb.Fatalf("GET_FEATURES %#x without VHOST_USER_F_PROTOCOL_FEATURES", offered)
	}
	if features&^offered != 0 {
		fe.tb.Fatalf("features %#x not offered (%#x)", features, offered)
	}
	fe.mustDo(ReqSetOwner, nil)
	proto := fe.getU64(ReqGetProtocolFeatures)
	if proto&(1<<ProtocolReplyAck) == 0 || proto&(1<<ProtocolMQ) == 0 {
		fe.tb.Fatalf("protocol features %#x lack REPLY_ACK or MQ", proto)
	}
	fe.mustDo(ReqSetProtocolFeatures, u64(proto))
	fe.reply = true
	fe.mustDo(ReqSetFeatures, u64(features|1<<FeatureProtocolFeatures))
	if st := fe.memTable(); st != 0 {
		fe.tb.Fatalf("SET_MEM_TABLE failed: %d", st)
	}
}

func eventfd(tb testing.TB) *os.File {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		tb.Fatal(err)
	}
	return os.NewFile(uintptr(fd), "eventfd")
}

// startRing sets up ring i with driver d's layout, starting at base, and
// enables it.
func (fe *testFrontend) startRing(i uint32, d *queuetest.Driver, base uint16) {
	fe.tb.Helper()
	for len(fe.kicks) <= int(i) {
		fe.kicks = append(fe.kicks, nil)
		fe.calls = append(fe.calls, nil)
		fe.errs = append(fe.errs, nil)
	}
	fe.mustDo(ReqSetVringNum, state(i, uint32(d.Size)))
	fe.mustDo(ReqSetVringBase, state(i, uint32(base)))
	a := make([]byte, vringAddrSize)
	le.PutUint32(a[0:4], i)
	le.PutUint64(a[8:16], fe.uaddr+d.Desc)
	le.PutUint64(a[16:24], fe.uaddr+d.Used)
	le.PutUint64(a[24:32], fe.uaddr+d.Avail)
	fe.mustDo(ReqSetVringAddr, a)
	if fe.calls[i] == nil {
		fe.calls[i] = eventfd(fe.tb)
		fe.errs[i] = eventfd(fe.tb)
	}
	fe.mustDo(ReqSetVringCall, u64(uint64(i)), fe.calls[i])
	fe.mustDo(ReqSetVringErr, u64(uint64(i)), fe.errs[i])
	if fe.kicks[i] != nil {
		_ = fe.kicks[i].Close()
	}
	fe.kicks[i] = eventfd(fe.tb)
	fe.mustDo(ReqSetVringKick, u64(uint64(i)), fe.kicks[i])
	fe.mustDo(ReqSetVringEnable, state(i, 1))
}

// stopRing sends GET_VRING_BASE and returns the base.
func (fe *testFrontend) stopRing(i uint32) uint16 {
	fe.tb.Helper()
	p := fe.get(ReqGetVringBase, state(i, 0))
	if len(p) != 8 || le.Uint32(p[0:4]) != i {
		fe.tb.Fatalf("GET_VRING_BASE %d: reply %x", i, p)
	}
	return uint16(le.Uint32(p[4:8]))
}

func (fe *testFrontend) kick(i int) {
	var b [8]byte
	b[0] = 1
	if _, err := fe.kicks[i].Write(b[:]); err != nil {
		fe.tb.Fatal(err)
	}
}

// errSignalled reports (and consumes) an error notification on ring i.
func (fe *testFrontend) errSignalled(i int) bool {
	var b [8]byte
	n, _ := unix.Read(int(fe.errs[i].Fd()), b[:])
	return n == 8
}

// waitUsed waits for n used elements on d.
func waitUsed(tb testing.TB, d *queuetest.Driver, n int) []queuetest.UsedElem {
	tb.Helper()
	var out []queuetest.UsedElem
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n {
		if e, ok := d.PopUsed(); ok {
			out = append(out, e)
			continue
		}
		if time.Now().After(deadline) {
			tb.Fatalf("waited for %d used elements, got %d", n, len(out))
		}
		time.Sleep(time.Millisecond)
	}
	return out
}

// ringLayout places a ring of size entries at base and its data area after
// it, up to end.
func ringLayout(size uint16, base, end uint64) queuetest.Layout {
	desc := base
	avail := desc + uint64(size)*16
	used := (avail + 6 + 2*uint64(size) + 4095) &^ 4095
	data := (used + 6 + 8*uint64(size) + 4095) &^ 4095
	return queuetest.Layout{Size: size, Desc: desc, Avail: avail, Used: used, Data: data, End: end}
}

// listen starts b on a socket in a temporary directory and returns its path.
func listen(tb testing.TB, b *Backend) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "vhost-user.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := b.Serve(ctx, ln); err != nil {
			tb.Errorf("Serve: %v", err)
		}
	}()
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return path
}

// hdrAt decodes the 12-byte virtio-net header at the start of p.
func hdrAt(tb testing.TB, p []byte) header.VirtioNetHdr {
	tb.Helper()
	h, err := header.DecodeVirtioNetHdr(p)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

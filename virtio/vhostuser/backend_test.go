package vhostuser

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/rsc/conformance"
	"github.com/rscvm/rscvm/virtio/net/nettest"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"

	virtionet "github.com/rscvm/rscvm/virtio/net"
)

const (
	fVersion1  = 1 << 32
	netFeatues = fVersion1 | 1<<virtionet.FeatureMrgRxBuf | 1<<virtionet.FeatureCSUM |
		1<<virtionet.FeatureGuestCSUM | 1<<virtionet.FeatureGuestTSO4 | 1<<virtionet.FeatureGuestTSO6 |
		1<<virtionet.FeatureHostTSO4 | 1<<virtionet.FeatureHostTSO6
	rxBufSize = 65562
)

// rig is a virtio-net device on an in-memory backend served over
// vhost-user to a test frontend.
type rig struct {
	t      *testing.T
	be     *nettest.Backend
	dev    *virtionet.Device
	b      *Backend
	path   string
	fe     *testFrontend
	rx, tx *queuetest.Driver
}

func newRig(t *testing.T, props map[string]string) *rig {
	t.Helper()
	be, err := nettest.New(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.Close)
	cfg := virtionet.DefaultConfig()
	cfg.MAC = conformance.GuestMAC[:]
	for k, v := range props {
		if err := cfg.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	dev, err := virtionet.New(cfg, be, virtionet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Device: dev, Rings: 2, QueueNum: 1, FeatureMask: virtionet.VhostUserFeatureMask(),
		AckHook: dev.VhostUserAck, ConfigSpace: true})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, be: be, dev: dev, b: b}
	r.path = listen(t, b)
	r.connect()
	return r
}

// connect attaches a fresh frontend with fresh rings and starts both rings.
func (r *rig) connect() {
	r.t.Helper()
	r.fe = newTestFrontend(r.t, r.path)
	var err error
	if r.rx, err = queuetest.NewDriver(r.fe.mem, ringLayout(256, 0x10000, 0x600000)); err != nil {
		r.t.Fatal(err)
	}
	if r.tx, err = queuetest.NewDriver(r.fe.mem, ringLayout(256, 0x600000, testMemSize)); err != nil {
		r.t.Fatal(err)
	}
	r.fe.handshake(netFeatues)
	r.postRx(32)
	r.fe.startRing(0, r.rx, 0)
	r.fe.startRing(1, r.tx, 0)
}

func (r *rig) postRx(n int) {
	r.t.Helper()
	for i := 0; i < n; i++ {
		if _, err := r.rx.AddChain(queuetest.W(rxBufSize)); err != nil {
			r.t.Fatal(err)
		}
	}
}

// received waits for n packets on the rx ring and returns header and frame
// of each (one buffer per packet: the buffers hold 64 KiB).
func (r *rig) received(n int) []nettest.Frame {
	r.t.Helper()
	var out []nettest.Frame
	for _, e := range waitUsed(r.t, r.rx, n) {
		p := r.rx.Written(uint16(e.ID), int(e.Len))
		r.rx.Reclaim(uint16(e.ID))
		h := hdrAt(r.t, p)
		if h.NumBuffers != 1 {
			r.t.Fatalf("num_buffers %d, want 1", h.NumBuffers)
		}
		out = append(out, nettest.Frame{Hdr: h, Data: p[header.VirtioNetHdrSize:]})
	}
	return out
}

func TestHandshakeOffersDatapathFeatures(t *testing.T) {
	r := newRig(t, nil)
	f := r.b.Features()
	for _, bit := range []int{virtionet.FeatureCtrlVQ, virtionet.FeatureMAC, virtionet.FeatureStatus, virtionet.FeatureCtrlGuestOffloads} {
		if f&(1<<bit) != 0 {
			t.Errorf("offered frontend-served feature bit %d (features %#x)", bit, f)
		}
	}
	for _, bit := range []int{virtionet.FeatureGuestTSO4, virtionet.FeatureMrgRxBuf, 32, FeatureProtocolFeatures} {
		if f&(1<<bit) == 0 {
			t.Errorf("feature bit %d missing from %#x", bit, f)
		}
	}
	if n := r.fe.getU64(ReqGetQueueNum); n != 1 {
		t.Errorf("GET_QUEUE_NUM = %d, want 1", n)
	}
	if n := r.fe.getU64(ReqGetMaxMemSlots); n != MaxMemSlots {
		t.Errorf("GET_MAX_MEM_SLOTS = %d", n)
	}
	// Config space through GET_CONFIG: the MAC.
	p := make([]byte, configHdrSize+6)
	le.PutUint32(p[4:8], 6)
	cfg := r.fe.get(ReqGetConfig, p)
	if !bytes.Equal(cfg[configHdrSize:], conformance.GuestMAC[:]) {
		t.Errorf("GET_CONFIG mac = %x, want %x", cfg[configHdrSize:], conformance.GuestMAC)
	}
	if got := r.dev.Negotiated(); got != netFeatues {
		t.Errorf("device negotiated %#x, want %#x", got, uint64(netFeatues))
	}
}

func TestRxTxThroughVhostUser(t *testing.T) {
	r := newRig(t, nil)
	q := r.be.Q(0)
	frames := conformance.Seqs(conformance.Seq0, 3)
	for _, f := range frames {
		q.Inject(f.Hdr, f.Data)
	}
	got := r.received(3)
	for i, f := range got {
		if !bytes.Equal(f.Data, frames[i].Data) {
			t.Fatalf("rx packet %d differs", i)
		}
	}
	// Transmit: header + frame in one readable buffer.
	out := conformance.D(9000, 100).Data
	var h [header.VirtioNetHdrSize]byte
	if _, err := r.tx.AddChain(queuetest.R(append(h[:], out...))); err != nil {
		t.Fatal(err)
	}
	r.fe.kick(1)
	sent, err := q.WaitSent(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sent[0].Data, out) {
		t.Fatalf("tx frame differs")
	}
	waitUsed(t, r.tx, 1)
}

// TestStopRestartKeepsPosition: GET_VRING_BASE stops a ring at the exact
// position (buffers the device popped ahead are given back), and a restart
// from that base goes on with the next buffer: nothing lost, nothing
// delivered twice.
func TestStopRestartKeepsPosition(t *testing.T) {
	r := newRig(t, nil)
	q := r.be.Q(0)
	f1 := conformance.D(conformance.Seq0, 500)
	q.Inject(f1.Hdr, f1.Data)
	r.received(1)
	rxBase := r.fe.stopRing(0)
	txBase := r.fe.stopRing(1)
	if rxBase != 1 || txBase != 0 {
		t.Fatalf("bases rx %d tx %d, want 1 and 0", rxBase, txBase)
	}
	// Frames arriving while the rings are stopped wait in the backend.
	f2 := conformance.D(conformance.Seq0+500, 600)
	q.Inject(f2.Hdr, f2.Data)
	time.Sleep(50 * time.Millisecond)
	if _, ok := r.rx.PopUsed(); ok {
		t.Fatal("a stopped ring was written")
	}
	r.fe.startRing(0, r.rx, rxBase)
	r.fe.startRing(1, r.tx, txBase)
	got := r.received(1)
	if !bytes.Equal(got[0].Data, f2.Data) {
		t.Fatal("packet after restart differs")
	}
	// The second buffer was used: positions continued.
	if r.rx.UsedIdx() != 2 {
		t.Fatalf("used idx %d, want 2", r.rx.UsedIdx())
	}
}

// TestReconnect: a frontend that goes away (QEMU killed) leaves the device
// reset and the backend listening; a new frontend works with the same TAP
// (here the in-memory backend).
func TestReconnect(t *testing.T) {
	r := newRig(t, nil)
	q := r.be.Q(0)
	f1 := conformance.D(conformance.Seq0, 100)
	q.Inject(f1.Hdr, f1.Data)
	r.received(1)
	r.fe.close()
	deadline := time.Now().Add(5 * time.Second)
	for r.dev.Negotiated() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("device not reset after the frontend disconnected")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.connect()
	f2 := conformance.D(conformance.Seq0+100, 200)
	q.Inject(f2.Hdr, f2.Data)
	got := r.received(1)
	if !bytes.Equal(got[0].Data, f2.Data) {
		t.Fatal("packet after reconnect differs")
	}
	if st := r.b.Stats(); st.Connections != 2 {
		t.Fatalf("connections %d, want 2", st.Connections)
	}
}

// TestRSCGSOThroughVhostUser: with x-rsc-gso=on a guest that negotiated
// GUEST_TSO4 gets MSS segments coalesced into one GSO packet.
func TestRSCGSOThroughVhostUser(t *testing.T) {
	// A long rsc_interval: the batch flush, not the timer, ends each packet (the
	// 300 us default can expire mid-batch under -race).
	r := newRig(t, map[string]string{"x-rsc-gso": "on", "rsc_interval": "1000000000"})
	q := r.be.Q(0)
	segs := conformance.Seqs(conformance.Seq0, 10)
	fs := make([]nettest.Frame, len(segs))
	var want []byte
	for i, s := range segs {
		fs[i] = nettest.Frame{Hdr: s.Hdr, Data: s.Data}
		want = append(want, conformance.Pattern(conformance.Seq0+uint32(i*conformance.MSS), conformance.MSS)...)
	}
	q.InjectFrames(fs...)
	got := r.received(1)
	h := got[0].Hdr
	if h.GSOType != header.VirtioNetHdrGSOTCPv4 || h.GSOSize != conformance.MSS {
		t.Fatalf("header %+v, want a TCPv4 GSO packet with gso_size %d", h, conformance.MSS)
	}
	// Ethernet 14 + IPv4 20 + TCP 20 (the conformance flow has no options).
	if payload := got[0].Data[54:]; !bytes.Equal(payload, want) {
		t.Fatalf("coalesced payload: %d bytes, want %d", len(payload), len(want))
	}
	coalesced := func() uint64 {
		st := r.dev.Stats()
		if len(st.Queues) == 0 || st.Queues[0].RSC == nil {
			t.Fatalf("no RSC counters: %+v", st)
		}
		return st.Queues[0].RSC.CoalescedSegments
	}
	waitFor(t, func() bool { return coalesced() == 10 }, "10 coalesced segments")
	// Counters are cumulative across device restarts (each ring stop and
	// start restarts the device).
	base0, base1 := r.fe.stopRing(0), r.fe.stopRing(1)
	r.fe.startRing(0, r.rx, base0)
	r.fe.startRing(1, r.tx, base1)
	segs = conformance.Seqs(conformance.Seq0+10*conformance.MSS, 10)
	for i, s := range segs {
		fs[i] = nettest.Frame{Hdr: s.Hdr, Data: s.Data}
	}
	q.InjectFrames(fs...)
	if got := r.received(1); got[0].Hdr.GSOType != header.VirtioNetHdrGSOTCPv4 {
		t.Fatalf("after restart: header %+v", got[0].Hdr)
	}
	waitFor(t, func() bool { return coalesced() == 20 }, "20 coalesced segments")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMemoryRegionsAtRunTime: ADD_MEM_REG and REM_MEM_REG (CONFIGURE_MEM_SLOTS)
// instead of SET_MEM_TABLE; removing the region under the rings stops them
// and signals the error descriptor.
func TestMemoryRegionsAtRunTime(t *testing.T) {
	be, err := nettest.New(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.Close) // after the backend's Serve stops (cleanups run last-in first-out)
	dev, err := virtionet.New(virtionet.DefaultConfig(), be, virtionet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Device: dev, Rings: 2, FeatureMask: virtionet.VhostUserFeatureMask(), AckHook: dev.VhostUserAck})
	if err != nil {
		t.Fatal(err)
	}
	fe := newTestFrontend(t, listen(t, b))
	rx, err := queuetest.NewDriver(fe.mem, ringLayout(256, 0x10000, 0x600000))
	if err != nil {
		t.Fatal(err)
	}
	_ = fe.getU64(ReqGetFeatures)
	fe.mustDo(ReqSetProtocolFeatures, u64(baseProtocol))
	fe.reply = true
	fe.mustDo(ReqSetFeatures, u64(netFeatues|1<<FeatureProtocolFeatures))
	// Two regions: [0, 4M) and [4M, 8M) of the memfd.
	half := uint64(testMemSize / 2)
	for i := uint64(0); i < 2; i++ {
		p := append(make([]byte, 8), regionBytes(i*half, half, fe.uaddr+i*half, i*half)...)
		fe.mustDo(ReqAddMemReg, p, fe.memfd)
	}
	for i := 0; i < 4; i++ {
		if _, err := rx.AddChain(queuetest.W(rxBufSize)); err != nil {
			t.Fatal(err)
		}
	}
	fe.startRing(0, rx, 0)
	f1 := conformance.D(conformance.Seq0, 100)
	be.Q(0).Inject(f1.Hdr, f1.Data)
	waitUsed(t, rx, 1)
	// Overlapping region: refused.
	if st := fe.do(ReqAddMemReg, append(make([]byte, 8), regionBytes(0, 4096, fe.uaddr+testMemSize, 0)...), fe.memfd); st == 0 {
		t.Fatal("overlapping region accepted")
	}
	// Remove the region holding the rings: the ring cannot run.
	if st := fe.do(ReqRemMemReg, append(make([]byte, 8), regionBytes(0, half, fe.uaddr, 0)...)); st != 0 {
		t.Fatalf("REM_MEM_REG failed: %d", st)
	}
	if !fe.errSignalled(0) {
		t.Fatal("no error notification for a ring outside memory")
	}
	// Removing it again: no such region.
	if st := fe.do(ReqRemMemReg, append(make([]byte, 8), regionBytes(0, half, fe.uaddr, 0)...)); st == 0 {
		t.Fatal("removing a missing region succeeded")
	}
}

// TestMalformedRequests: every bad request gets a failure ack (or closes
// the connection for a broken stream) and the backend keeps serving.
func TestMalformedRequests(t *testing.T) {
	r := newRig(t, nil)
	fe := r.fe
	bad := []struct {
		name    string
		req     Request
		payload []byte
	}{
		{"short SET_FEATURES", ReqSetFeatures, []byte{1, 2}},
		{"unoffered feature", ReqSetFeatures, u64(1 << 63)},
		{"ring index", ReqSetVringNum, state(7, 256)},
		{"ring size not a power of two", ReqSetVringNum, state(0, 100)},
		{"ring size zero", ReqSetVringNum, state(0, 0)},
		{"enable=2", ReqSetVringEnable, state(0, 2)},
		{"base of a running ring", ReqSetVringBase, state(0, 5)},
		{"short addr", ReqSetVringAddr, make([]byte, 10)},
		{"kick without fd", ReqSetVringKick, u64(0)},
		{"polling kick", ReqSetVringKick, u64(vringNoFD)},
		{"mem table zero regions", ReqSetMemTable, make([]byte, 8)},
		{"mem table count past payload", ReqSetMemTable, append([]byte{3, 0, 0, 0, 0, 0, 0, 0}, regionBytes(0, 4096, 0, 0)...)},
		{"unsupported log base", ReqSetLogBase, u64(0)},
		{"unknown request", Request(999), nil},
		{"protocol feature not offered", ReqSetProtocolFeatures, u64(1 << 40)},
		{"big-endian rings", ReqSetVringEndian, state(0, 0)},
	}
	for _, c := range bad {
		if st := fe.do(c.req, c.payload); st == 0 {
			t.Errorf("%s: accepted", c.name)
		}
	}
	// A too-large config request gets an empty reply, not a crash.
	p := make([]byte, configHdrSize)
	le.PutUint32(p[4:8], 4096)
	if got := fe.get(ReqGetConfig, p); len(got) != 0 {
		t.Errorf("oversized GET_CONFIG answered %d bytes", len(got))
	}
	// Traffic still flows after all that.
	f := conformance.D(conformance.Seq0, 64)
	r.be.Q(0).Inject(f.Hdr, f.Data)
	r.received(1)
	// A header with a payload size over the limit breaks the stream: the
	// backend closes the connection and takes the next one.
	var h [HeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(ReqSetFeatures))
	binary.LittleEndian.PutUint32(h[4:8], version)
	binary.LittleEndian.PutUint32(h[8:12], MaxPayload+1)
	if _, err := fe.c.Write(h[:]); err != nil {
		t.Fatal(err)
	}
	_ = fe.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := fe.c.Read(make([]byte, 16)); err == nil {
		t.Fatalf("connection still open after an oversized header (read %d bytes)", n)
	}
	r.connect()
	r.be.Q(0).Inject(f.Hdr, f.Data)
	r.received(1)
}

// TestMultiQueue: with two queue pairs (MQ), each pair's rings run on its
// own worker and backend queue; a pair whose rings the frontend enabled
// receives from its backend queue.
func TestMultiQueue(t *testing.T) {
	be, err := nettest.New(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.Close) // after the backend's Serve stops (cleanups run last-in first-out)
	cfg := virtionet.DefaultConfig()
	cfg.MQ = true
	dev, err := virtionet.New(cfg, be, virtionet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pairs := dev.MaxQueuePairs()
	if pairs != 2 {
		t.Fatalf("max queue pairs %d, want 2", pairs)
	}
	var hooked []bool
	b, err := New(Config{Device: dev, Rings: 4, QueueNum: 2, FeatureMask: virtionet.VhostUserFeatureMask(),
		AckHook: dev.VhostUserAck, RingsHook: func(r []bool) {
			hooked = append([]bool(nil), r...)
			_ = dev.SetQueuePairs(2)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Features()&(1<<virtionet.FeatureMQ) == 0 {
		t.Fatal("MQ not offered with two queue pairs")
	}
	fe := newTestFrontend(t, listen(t, b))
	if n := fe.getU64(ReqGetQueueNum); n != 2 {
		t.Fatalf("GET_QUEUE_NUM %d, want 2", n)
	}
	fe.handshake(netFeatues)
	var drivers []*queuetest.Driver
	for i := 0; i < 4; i++ {
		base := uint64(0x10000 + i*0x1f0000)
		d, err := queuetest.NewDriver(fe.mem, ringLayout(256, base, base+0x1f0000))
		if err != nil {
			t.Fatal(err)
		}
		drivers = append(drivers, d)
		if i%2 == 0 {
			for j := 0; j < 8; j++ {
				if _, err := d.AddChain(queuetest.W(rxBufSize)); err != nil {
					t.Fatal(err)
				}
			}
		}
		fe.startRing(uint32(i), d, 0)
	}
	if len(hooked) != 4 || !hooked[2] || !hooked[3] {
		t.Fatalf("rings hook saw %v", hooked)
	}
	if got := dev.Negotiated(); got&(1<<virtionet.FeatureMQ) == 0 {
		t.Fatalf("device runs without MQ: %#x", got)
	}
	for p := 0; p < 2; p++ {
		f := conformance.D(conformance.Seq0+uint32(p)*1000, 100+p)
		be.Q(p).Inject(f.Hdr, f.Data)
		e := waitUsed(t, drivers[2*p], 1)
		got := drivers[2*p].Written(uint16(e[0].ID), int(e[0].Len))
		if !bytes.Equal(got[header.VirtioNetHdrSize:], f.Data) {
			t.Fatalf("pair %d: received frame differs", p)
		}
	}
}

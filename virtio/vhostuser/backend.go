package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/queue"
)

// Config describes what the backend serves.
type Config struct {
	// Device is the device model. Its queues 0..Rings-1 are the rings the
	// frontend sets up; any further queue (virtio-net's control queue)
	// stays with the frontend and is never started here.
	Device virtio.Device
	// Rings is the number of vrings the frontend may use (virtio-net: two
	// per queue pair). 0 means len(Device.QueueMaxSizes()).
	Rings int
	// QueueNum is GET_QUEUE_NUM's answer (virtio-net: queue pairs). 0
	// means 1.
	QueueNum uint64
	// FeatureMask limits the device features offered (bits the frontend
	// implements itself, such as virtio-net's control-queue features, are
	// best left out). 0 means all of Device.Features().
	FeatureMask uint64
	// AckHook, if set, adjusts the features the frontend acknowledged
	// before the device sees them (virtio-net adds MQ: QEMU negotiates it
	// with the guest and tells the backend through the enabled rings).
	AckHook func(acked uint64) uint64
	// RingsHook, if set, is told which rings are about to run before each
	// activation (virtio-net attaches the TAP queues of the enabled pairs).
	RingsHook func(running []bool)
	// ConfigSpace offers VHOST_USER_PROTOCOL_F_CONFIG: GET/SET_CONFIG read
	// and write the device's configuration space. Off by default: QEMU's
	// virtio-net keeps the configuration space itself (and warns when a
	// backend offers it).
	ConfigSpace bool
	// Logger receives protocol errors and state changes (default
	// slog.Default()).
	Logger *slog.Logger
}

// baseProtocol are the protocol features the backend always offers.
const baseProtocol = 1<<ProtocolMQ | 1<<ProtocolReplyAck | 1<<ProtocolResetDevice | 1<<ProtocolConfigureMemSlots

// ring is the backend's state for one vring.
type ring struct {
	q       *queue.Queue
	num     uint32
	desc    uint64 // frontend virtual addresses
	used    uint64
	avail   uint64
	addrSet bool
	base    uint16
	kick    *virtio.Kick
	started bool // has a kick descriptor and was not stopped by GET_VRING_BASE
	enabled bool // SET_VRING_ENABLE
	running bool // enabled on the queue the device runs
	call    atomic.Pointer[os.File]
	errFD   atomic.Pointer[os.File]
}

// Backend is a vhost-user backend for one device. It serves one frontend
// connection at a time (Serve accepts the next one when a frontend goes
// away) and keeps the device model, and so its host backend such as a TAP,
// across connections.
type Backend struct {
	cfg      Config
	log      *slog.Logger
	dev      virtio.Device
	offered  uint64
	proto    uint64         // protocol features offered
	queues   []*queue.Queue // one per device queue (len(QueueMaxSizes()))
	kicks    []*virtio.Kick
	rings    []*ring
	mem      memTable
	irq      interrupt
	features uint64 // acknowledged by SET_FEATURES (without bit 30)
	featSet  bool
	protoAck bool // VHOST_USER_F_PROTOCOL_FEATURES acknowledged
	protocol uint64
	active   bool // the device is activated
	dirty    bool // ring or memory layout changed: restart the device
	status   uint8

	mu    sync.Mutex // guards conns (Serve vs Close)
	conns map[*net.UnixConn]bool

	stats struct {
		connections, messages, errors, restarts, needsReset atomic.Uint64
	}
}

// New returns a backend for cfg.Device.
func New(cfg Config) (*Backend, error) {
	if cfg.Device == nil {
		return nil, errors.New("vhost-user: no device")
	}
	sizes := cfg.Device.QueueMaxSizes()
	if cfg.Rings == 0 {
		cfg.Rings = len(sizes)
	}
	if cfg.Rings < 1 || cfg.Rings > len(sizes) || cfg.Rings > vringIndexMask+1 {
		return nil, fmt.Errorf("vhost-user: %d rings for a device with %d queues", cfg.Rings, len(sizes))
	}
	if cfg.QueueNum == 0 {
		cfg.QueueNum = 1
	}
	if cfg.FeatureMask == 0 {
		cfg.FeatureMask = ^uint64(0)
	}
	b := &Backend{cfg: cfg, log: cfg.Logger, dev: cfg.Device, conns: map[*net.UnixConn]bool{}}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.proto = baseProtocol
	if cfg.ConfigSpace {
		b.proto |= 1 << ProtocolConfig
	}
	b.offered = (cfg.Device.Features() & cfg.FeatureMask &^ (1 << FeatureProtocolFeatures)) | 1<<FeatureProtocolFeatures
	b.queues = make([]*queue.Queue, len(sizes))
	b.kicks = make([]*virtio.Kick, len(sizes))
	for i := range b.queues {
		q, err := queue.New(queue.MaxSize)
		if err != nil {
			return nil, err
		}
		b.queues[i] = q
	}
	b.rings = make([]*ring, cfg.Rings)
	for i := range b.rings {
		b.rings[i] = &ring{q: b.queues[i]}
	}
	b.irq = interrupt{b: b}
	return b, nil
}

// Features are the virtio features the backend offers (GET_FEATURES).
func (b *Backend) Features() uint64 { return b.offered }

// Serve accepts frontends on ln, one at a time, until ctx ends or ln is
// closed. A frontend that disconnects (or is killed) leaves the device
// stopped and reset; the next one starts afresh.
func (b *Backend) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("vhost-user: accept: %w", err)
		}
		b.ServeConn(ctx, c)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// ServeConn serves one frontend until it disconnects or ctx ends, then
// stops the device and forgets the connection's state (memory table,
// rings, negotiated features).
func (b *Backend) ServeConn(ctx context.Context, uc *net.UnixConn) {
	b.stats.connections.Add(1)
	b.mu.Lock()
	b.conns[uc] = true
	b.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = uc.Close() })
	defer func() {
		stop()
		b.mu.Lock()
		delete(b.conns, uc)
		b.mu.Unlock()
		_ = uc.Close()
		b.disconnect()
	}()
	b.log.Info("vhost-user: frontend connected")
	c := newConn(uc)
	for {
		m, err := c.read()
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				b.log.Info("vhost-user: frontend disconnected")
			case ctx.Err() != nil:
			default:
				b.log.Warn("vhost-user: closing the connection", "err", err)
			}
			return
		}
		if err := b.handle(c, m); err != nil {
			b.log.Warn("vhost-user: closing the connection", "err", err)
			return
		}
	}
}

// hasReply reports whether a request carries its own reply (no REPLY_ACK).
func hasReply(r Request) bool {
	switch r {
	case ReqGetFeatures, ReqGetProtocolFeatures, ReqGetVringBase, ReqGetQueueNum,
		ReqGetConfig, ReqGetMaxMemSlots, ReqGetStatus, ReqGetInflightFD:
		return true
	}
	return false
}

// handle runs one request. A returned error closes the connection (the
// reply could not be sent); request errors are reported to the frontend
// through REPLY_ACK when it asked for one, and logged.
func (b *Backend) handle(c *conn, m *message) error {
	defer m.closeFiles()
	b.stats.messages.Add(1)
	req := m.hdr.Request()
	reply, err := b.dispatch(req, m)
	if err != nil {
		b.stats.errors.Add(1)
		b.log.Warn("vhost-user: request failed", "request", req, "err", err)
	}
	if hasReply(req) {
		if reply == nil {
			// A request that needs an answer got none: the frontend
			// would wait forever. Answer with an empty payload, which
			// it rejects as malformed.
			reply = []byte{}
		}
		return c.reply(req, reply)
	}
	if m.hdr.NeedReply() && b.protocol&(1<<ProtocolReplyAck) != 0 {
		var status uint64
		if err != nil {
			status = 1
		}
		return c.reply(req, u64Bytes(status))
	}
	return nil
}

func u64Bytes(v uint64) []byte {
	b := make([]byte, 8)
	le.PutUint64(b, v)
	return b
}

// ringAt validates a ring index from a message.
func (b *Backend) ringAt(req Request, i uint32) (*ring, error) {
	if int(i) >= len(b.rings) {
		return nil, fmt.Errorf("%v: ring %d (the backend has %d): %w", req, i, len(b.rings), ErrRingIndex)
	}
	return b.rings[i], nil
}

// dispatch handles one request and returns its reply payload for requests
// that have one.
func (b *Backend) dispatch(req Request, m *message) ([]byte, error) {
	p := m.payload
	switch req {
	case ReqGetFeatures:
		return u64Bytes(b.offered), nil
	case ReqSetFeatures:
		v, err := payloadU64(req, p)
		if err != nil {
			return nil, err
		}
		return nil, b.setFeatures(v)
	case ReqGetProtocolFeatures:
		return u64Bytes(b.proto), nil
	case ReqSetProtocolFeatures:
		v, err := payloadU64(req, p)
		if err != nil {
			return nil, err
		}
		if v&^b.proto != 0 {
			return nil, fmt.Errorf("%v: %#x has bits the backend did not offer (%#x): %w", req, v, b.proto, ErrNotSupported)
		}
		b.protocol = v
		return nil, nil
	case ReqSetOwner:
		return nil, nil
	case ReqResetOwner, ReqResetDevice:
		b.resetDevice()
		return nil, nil
	case ReqGetQueueNum:
		return u64Bytes(b.cfg.QueueNum), nil
	case ReqGetMaxMemSlots:
		return u64Bytes(MaxMemSlots), nil
	case ReqSetMemTable:
		return nil, b.setMemTable(m)
	case ReqAddMemReg:
		return nil, b.addMemReg(m)
	case ReqRemMemReg:
		return nil, b.remMemReg(m)
	case ReqSetVringNum, ReqSetVringBase, ReqGetVringBase, ReqSetVringEnable:
		st, err := payloadState(req, p)
		if err != nil {
			return nil, err
		}
		r, err := b.ringAt(req, st.Index())
		if err != nil {
			return nil, err
		}
		return b.vringState(req, st, r)
	case ReqSetVringAddr:
		a, err := payloadAddr(req, p)
		if err != nil {
			return nil, err
		}
		r, err := b.ringAt(req, a.Index())
		if err != nil {
			return nil, err
		}
		if a.Flags()&vringFLog != 0 {
			return nil, fmt.Errorf("%v: ring %d asks for dirty logging (no LOG_SHMFD): %w", req, a.Index(), ErrNotSupported)
		}
		r.desc, r.used, r.avail, r.addrSet = a.Desc(), a.Used(), a.Avail(), true
		b.dirty = b.dirty || r.running
		return nil, b.reconcile()
	case ReqSetVringKick, ReqSetVringCall, ReqSetVringErr:
		return nil, b.setVringFD(req, m)
	case ReqGetConfig, ReqSetConfig:
		if b.protocol&(1<<ProtocolConfig) == 0 {
			return nil, fmt.Errorf("%v without VHOST_USER_PROTOCOL_F_CONFIG: %w", req, ErrState)
		}
		return b.config(req, p)
	case ReqSetStatus:
		v, err := payloadU64(req, p)
		if err != nil {
			return nil, err
		}
		b.status = uint8(v)
		return nil, nil
	case ReqGetStatus:
		return u64Bytes(uint64(b.status)), nil
	case ReqSetVringEndian:
		s, err := payloadState(req, p)
		if err != nil {
			return nil, err
		}
		if s.Num() != 1 { // VHOST_VRING_LITTLE_ENDIAN
			return nil, fmt.Errorf("%v: big-endian rings: %w", req, ErrNotSupported)
		}
		return nil, nil
	}
	return nil, fmt.Errorf("%v: %w", req, ErrNotSupported)
}

// vringState handles the requests whose payload is a vring state.
func (b *Backend) vringState(req Request, s VringState, r *ring) ([]byte, error) {
	i, n := s.Index(), s.Num()
	switch req {
	case ReqSetVringNum:
		if n == 0 || n > queue.MaxSize || n&(n-1) != 0 {
			return nil, fmt.Errorf("%v: ring %d size %d (a power of two up to %d): %w", req, i, n, queue.MaxSize, queue.ErrSize)
		}
		r.num = n
		b.dirty = b.dirty || r.running
		return nil, b.reconcile()
	case ReqSetVringBase:
		if r.running {
			return nil, fmt.Errorf("%v: ring %d is running: %w", req, i, ErrState)
		}
		if n > 0xFFFF {
			return nil, fmt.Errorf("%v: ring %d base %d (split rings: 16 bits): %w", req, i, n, ErrNotSupported)
		}
		r.base = uint16(n)
		return nil, nil
	case ReqSetVringEnable:
		if n > 1 {
			return nil, fmt.Errorf("%v: ring %d enable=%d (0 or 1): %w", req, i, n, ErrState)
		}
		r.enabled = n == 1
		return nil, b.reconcile()
	}
	// GET_VRING_BASE: the ring stops; the reply is where it stopped.
	r.started = false
	err := b.reconcile()
	if r.kick != nil {
		// The restarted device no longer polls it.
		_ = r.kick.Close()
		r.kick = nil
	}
	out := make([]byte, vringStateSize)
	le.PutUint32(out[0:4], i)
	le.PutUint32(out[4:8], uint32(r.base))
	return out, err
}

// config serves GET_CONFIG and SET_CONFIG from the device's configuration
// space.
func (b *Backend) config(req Request, p []byte) ([]byte, error) {
	cm, err := parseConfig(req, p)
	if err != nil {
		return nil, err
	}
	if req == ReqSetConfig {
		b.dev.WriteConfig(uint64(cm.Offset()), p[configHdrSize:configHdrSize+int(cm.Size())])
		return nil, nil
	}
	out := make([]byte, configHdrSize+int(cm.Size()))
	copy(out, p[:configHdrSize])
	b.dev.ReadConfig(uint64(cm.Offset()), out[configHdrSize:])
	return out, nil
}

func (b *Backend) setFeatures(v uint64) error {
	if v&^b.offered != 0 {
		return fmt.Errorf("SET_FEATURES: %#x has bits the backend did not offer (%#x): %w", v, b.offered, ErrNotSupported)
	}
	acked := v &^ (1 << FeatureProtocolFeatures)
	if vd, ok := b.dev.(virtio.FeatureValidator); ok {
		if err := vd.ValidateFeatures(acked); err != nil {
			return fmt.Errorf("SET_FEATURES %#x: %w", acked, err)
		}
	}
	if b.featSet && acked == b.features && b.protoAck == (v&(1<<FeatureProtocolFeatures) != 0) {
		return nil
	}
	b.features, b.featSet = acked, true
	b.protoAck = v&(1<<FeatureProtocolFeatures) != 0
	b.dirty = b.dirty || b.active
	return b.reconcile()
}

// setVringFD handles SET_VRING_KICK, _CALL and _ERR.
func (b *Backend) setVringFD(req Request, m *message) error {
	v, err := payloadU64(req, m.payload)
	if err != nil {
		return err
	}
	idx := uint32(v & vringIndexMask)
	r, err := b.ringAt(req, idx)
	if err != nil {
		return err
	}
	var f *os.File
	if v&vringNoFD == 0 {
		if len(m.files) != 1 {
			return fmt.Errorf("%v: ring %d: %d descriptors, want 1: %w", req, idx, len(m.files), ErrFDs)
		}
		f = m.take(0)
	} else if len(m.files) != 0 {
		return fmt.Errorf("%v: ring %d: descriptor sent with the no-descriptor flag: %w", req, idx, ErrFDs)
	}
	switch req {
	case ReqSetVringCall:
		if old := r.call.Swap(f); old != nil {
			_ = old.Close()
		}
		return nil
	case ReqSetVringErr:
		if old := r.errFD.Swap(f); old != nil {
			_ = old.Close()
		}
		return nil
	}
	if f == nil {
		return fmt.Errorf("%v: ring %d: polling mode (no kick descriptor): %w", req, idx, ErrNotSupported)
	}
	k, err := virtio.KickFromFile(f)
	if err != nil {
		_ = f.Close()
		return err
	}
	// A running ring's kick is polled by the device: stop the device
	// before the old descriptor goes (reconcile restarts it with the new
	// one).
	if r.running {
		b.stopDevice()
	}
	if r.kick != nil {
		_ = r.kick.Close()
	}
	r.kick, r.started = k, true
	return b.reconcile()
}

// live reports whether ring i should be running.
func (b *Backend) live(r *ring) bool {
	return r.started && r.addrSet && r.num != 0 && (r.enabled || !b.protoAck) && b.mem.mem != nil && b.featSet
}

// reconcile brings the device in line with the rings: it restarts the
// device when the set of live rings, their layout or the memory changed.
// Restarting keeps each ring's position (the device returns chains it
// popped ahead, so the vring base is exact).
func (b *Backend) reconcile() error {
	changed := b.dirty
	for _, r := range b.rings {
		if b.live(r) != r.running {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	b.dirty = false
	if b.active {
		b.stopDevice()
	}
	return b.startDevice()
}

// stopDevice stops the device and records each running ring's base.
func (b *Backend) stopDevice() {
	if !b.active {
		return
	}
	b.dev.Reset()
	b.active = false
	for _, r := range b.rings {
		if r.running {
			// Chains still in flight were popped after the ones returned
			// (the device completes in order): the frontend gets them
			// back by restarting at the first of them.
			r.base = r.q.LastAvailIdx() - uint16(r.q.InFlight())
			r.q.Reset()
			r.running = false
		}
	}
}

// startDevice activates the device on the live rings.
func (b *Backend) startDevice() error {
	var errs []error
	started := false
	for i, r := range b.rings {
		b.kicks[i] = nil
		if !b.live(r) {
			continue
		}
		if err := b.prepareRing(i, r); err != nil {
			errs = append(errs, err)
			b.signalErr(r)
			continue
		}
		b.kicks[i] = r.kick
		r.running = true
		started = true
	}
	if !started {
		return errors.Join(errs...)
	}
	if b.cfg.RingsHook != nil {
		running := make([]bool, len(b.rings))
		for i, r := range b.rings {
			running[i] = r.running
		}
		b.cfg.RingsHook(running)
	}
	acked := b.features
	if b.cfg.AckHook != nil {
		acked = b.cfg.AckHook(acked)
	}
	b.dev.AckFeatures(acked)
	if err := b.dev.Activate(b.mem.mem, b.queues, b.kicks, b.irq); err != nil {
		for _, r := range b.rings {
			if r.running {
				r.q.Reset()
				r.running = false
				b.signalErr(r)
			}
		}
		return errors.Join(append(errs, fmt.Errorf("vhost-user: activating the device: %w", err))...)
	}
	b.active = true
	b.stats.restarts.Add(1)
	return errors.Join(errs...)
}

// prepareRing configures and enables ring i's queue from the frontend's
// layout: addresses translated to guest-physical ones, the position from
// the vring base and the used ring's index.
func (b *Backend) prepareRing(i int, r *ring) error {
	q := r.q
	q.Reset()
	size := uint16(r.num) // SET_VRING_NUM checked it: a power of two up to queue.MaxSize
	type area struct {
		what string
		ua   uint64
		n    uint64
		set  func(uint64) bool
	}
	for _, a := range []area{
		{"descriptor table", r.desc, queue.DescTableSize(size), q.SetDescAddr},
		{"available ring", r.avail, queue.AvailRingSize(size) + 2, q.SetAvailAddr},
		{"used ring", r.used, queue.UsedRingSize(size) + 2, q.SetUsedAddr},
	} {
		gpa, ok := b.mem.translate(a.ua, a.n)
		if !ok {
			return fmt.Errorf("vhost-user: ring %d %s at frontend address %#x (+%#x) is not in shared memory: %w", i, a.what, a.ua, a.n, queue.ErrRingAddress)
		}
		a.set(gpa)
	}
	q.SetSize(size)
	if err := q.Enable(b.mem.mem); err != nil {
		return fmt.Errorf("vhost-user: ring %d: %w", i, err)
	}
	usedIdx, err := b.mem.mem.U16(q.Config().Used + 2)
	if err == nil {
		err = q.SetLastAvailIdx(r.base)
	}
	if err == nil {
		err = q.SetUsedIdx(usedIdx)
	}
	if err != nil {
		q.Reset()
		return fmt.Errorf("vhost-user: ring %d position: %w", i, err)
	}
	return nil
}

func (b *Backend) setMemTable(m *message) error {
	t, n, err := parseMemTable(m.payload)
	if err != nil {
		return err
	}
	if len(m.files) != n {
		return fmt.Errorf("SET_MEM_TABLE: %d regions but %d descriptors: %w", n, len(m.files), ErrFDs)
	}
	regions := make([]*mappedRegion, 0, n)
	for i := 0; i < n; i++ {
		r, err := mapRegion(t.Region(i), m.files[i])
		if err != nil {
			for _, r := range regions {
				r.unmap()
			}
			return fmt.Errorf("SET_MEM_TABLE region %d: %w", i, err)
		}
		regions = append(regions, r)
	}
	b.stopDevice()
	b.mem.clear()
	b.mem.regions = regions
	if err := b.mem.rebuild(); err != nil {
		b.mem.clear()
		return fmt.Errorf("SET_MEM_TABLE: %w", err)
	}
	b.restartAfterMemoryChange()
	return nil
}

// restartAfterMemoryChange restarts the device on the new memory view. A
// ring that no longer fits is reported on its error descriptor and in the
// log; the memory change itself succeeded.
func (b *Backend) restartAfterMemoryChange() {
	b.dirty = true
	if err := b.reconcile(); err != nil {
		b.log.Warn("vhost-user: restarting rings after a memory table change", "err", err)
	}
}

func (b *Backend) addMemReg(m *message) error {
	d, err := parseSingleRegion(ReqAddMemReg, m.payload)
	if err != nil {
		return err
	}
	if len(m.files) != 1 {
		return fmt.Errorf("ADD_MEM_REG: %d descriptors, want 1: %w", len(m.files), ErrFDs)
	}
	r, err := mapRegion(d, m.files[0])
	if err != nil {
		return fmt.Errorf("ADD_MEM_REG: %w", err)
	}
	b.stopDevice()
	err = b.mem.add(r)
	if err != nil {
		r.unmap()
		err = fmt.Errorf("ADD_MEM_REG: %w", err)
	}
	b.restartAfterMemoryChange()
	return err
}

func (b *Backend) remMemReg(m *message) error {
	d, err := parseSingleRegion(ReqRemMemReg, m.payload)
	if err != nil {
		return err
	}
	b.stopDevice()
	err = b.mem.remove(d)
	b.restartAfterMemoryChange()
	return err
}

// resetDevice handles RESET_DEVICE and RESET_OWNER: rings disabled and
// forgotten, features cleared; the memory table stays.
func (b *Backend) resetDevice() {
	b.stopDevice()
	b.dev.Reset()
	for i, r := range b.rings {
		b.resetRing(i, r)
	}
	b.features, b.featSet, b.protoAck = 0, false, false
	b.status = 0
}

func (b *Backend) resetRing(i int, r *ring) {
	if r.kick != nil {
		_ = r.kick.Close()
	}
	if f := r.call.Swap(nil); f != nil {
		_ = f.Close()
	}
	if f := r.errFD.Swap(nil); f != nil {
		_ = f.Close()
	}
	r.q.Reset()
	r.num, r.desc, r.used, r.avail, r.addrSet, r.base = 0, 0, 0, 0, false, 0
	r.kick, r.started, r.enabled, r.running = nil, false, false, false
	b.kicks[i] = nil
}

// disconnect forgets everything a connection set up.
func (b *Backend) disconnect() {
	b.resetDevice()
	b.mem.clear()
	b.protocol = 0
}

// Close disconnects any frontend and stops the device.
func (b *Backend) Close() {
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
}

// Stats are the backend's protocol counters.
type Stats struct {
	Connections uint64 `json:"connections"`
	Messages    uint64 `json:"messages"`
	Errors      uint64 `json:"errors"`
	Restarts    uint64 `json:"device_starts"`
	NeedsReset  uint64 `json:"needs_reset"`
}

// Stats returns the counters.
func (b *Backend) Stats() Stats {
	return Stats{
		Connections: b.stats.connections.Load(), Messages: b.stats.messages.Load(),
		Errors: b.stats.errors.Load(), Restarts: b.stats.restarts.Load(), NeedsReset: b.stats.needsReset.Load(),
	}
}

// one is an eventfd increment (never written to).
var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}

func (b *Backend) signalErr(r *ring) {
	if f := r.errFD.Load(); f != nil {
		_, _ = f.Write(one)
	}
}

// interrupt is the virtio.Interrupt the device gets: used-buffer
// notifications go to the rings' call descriptors.
type interrupt struct{ b *Backend }

func (i interrupt) SignalQueue(index int) error {
	if index < 0 || index >= len(i.b.rings) {
		return nil
	}
	f := i.b.rings[index].call.Load()
	if f == nil {
		return nil
	}
	if _, err := f.Write(one); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("vhost-user: ring %d call: %w", index, err)
	}
	return nil
}

// SignalConfig: the frontend owns the configuration space; a backend could
// tell it through the backend request channel, which rscvm does not offer.
func (i interrupt) SignalConfig() error { return nil }

// NeedsReset reports a guest protocol violation: the frontend learns it
// through each ring's error descriptor (QEMU logs it); the device stops
// using the queue concerned.
func (i interrupt) NeedsReset(cause error) {
	i.b.stats.needsReset.Add(1)
	i.b.log.Warn("vhost-user: device needs reset", "err", cause)
	for _, r := range i.b.rings {
		i.b.signalErr(r)
	}
}

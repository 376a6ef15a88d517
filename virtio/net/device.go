package virtionet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/net/ctrl"
	virtiopci "github.com/rscvm/rscvm/virtio/pci"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/vmm/memory"
)

// Config-space status bits (virtio_net_config.status).
const (
	StatusLinkUp   uint16 = 1 // VIRTIO_NET_S_LINK_UP
	StatusAnnounce uint16 = 2 // VIRTIO_NET_S_ANNOUNCE
)

// Offsets and sizes of struct virtio_net_config.
const (
	cfgMAC      = 0
	cfgStatus   = 6
	cfgMaxPairs = 8
	cfgMTU      = 10
	cfgSpeed    = 12
	cfgDuplex   = 16
	cfgMaxSize  = 17
)

// Options are the device's non-property settings.
type Options struct {
	// Logger receives warnings (rate-limited where the guest triggers
	// them); nil means slog.Default().
	Logger *slog.Logger
	// Clock is the virtual clock for receive segment coalescing: it must not
	// advance while the VM is paused. nil means monotonic time since New.
	Clock func() time.Duration
}

// Device is a virtio-net device. It implements virtio.Device,
// virtio.LegacyFeatureDevice and virtio.QueueResetter.
type Device struct {
	cfg      Config
	be       Backend
	log      *slog.Logger
	clock    func() time.Duration
	offered  uint64
	maxPairs int // max_virtqueue_pairs (backend queues with mq=on, else 1)
	caps     BackendCaps
	limit    *rateLimiter

	mu         sync.Mutex
	negotiated uint64
	acked      bool
	last       uint64 // features of the last negotiation, kept across Reset
	ctrl       *ctrl.State
	linkUp     bool
	run        *runState
	pairStats  []*pairStats
	ctrlStats  CtrlStats
	pairsInUse int
}

// runState is what exists between Activate and Reset.
type runState struct {
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mem     *memory.Memory
	queues  []*queue.Queue
	kicks   []*virtio.Kick
	irq     virtio.Interrupt
	workers []*worker // per pair; nil where neither queue was enabled
	cq      *ctrlQueue
	ctrlIdx int
}

// New creates a device. The configuration is validated; the backend must
// have at least one queue. The device starts with the link up.
func New(cfg Config, be Backend, opt Options) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if be == nil || be.NumQueues() < 1 {
		return nil, errors.New("virtio-net: backend with no queues")
	}
	if cfg.MAC == nil {
		cfg.MAC = NewDefaultMAC(0)
	}
	caps := be.Caps()
	caps.Queues = be.NumQueues()
	d := &Device{cfg: cfg, be: be, log: opt.Logger, clock: opt.Clock, caps: caps, linkUp: true}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.clock == nil {
		start := time.Now()
		d.clock = func() time.Duration { return time.Since(start) }
	}
	d.limit = newRateLimiter(time.Second)
	d.offered = cfg.Features(caps)
	d.maxPairs = 1
	if cfg.MQ {
		d.maxPairs = min(be.NumQueues(), ctrl.MaxQueuePairs)
	}
	d.pairStats = make([]*pairStats, d.maxPairs)
	for i := range d.pairStats {
		d.pairStats[i] = &pairStats{}
		d.pairStats[i].s.Pair = i
	}
	d.ctrl = ctrl.New(ctrl.ConfigFromFeatures(0, uint16(d.maxPairs), caps.VnetHdr), ctrl.MAC(cfg.MAC))
	d.pairsInUse = 1
	// Tap queues beyond what the guest can use would receive frames nobody
	// reads (QEMU leaves them attached with mq=off); detach them.
	if be.NumQueues() > 1 {
		if err := be.SetActiveQueues(1); err != nil {
			return nil, fmt.Errorf("virtio-net: detaching unused backend queues: %w", err)
		}
	}
	return d, nil
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceTypeNet }

// Features implements virtio.Device: the offered feature bits (Config.Features
// pruned by the backend's capabilities).
func (d *Device) Features() uint64 { return d.offered }

// LegacyOnlyFeatures implements virtio.LegacyFeatureDevice: GSO (bit 6).
func (d *Device) LegacyOnlyFeatures() uint64 { return legacyOnlyNet }

// Config returns the device's configuration.
func (d *Device) Config() Config { return d.cfg }

// MaxQueuePairs is max_virtqueue_pairs.
func (d *Device) MaxQueuePairs() int { return d.maxPairs }

// Negotiated returns the features acknowledged by the driver (0 before
// AckFeatures and after Reset).
func (d *Device) Negotiated() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.negotiated
}

// HeaderSize is the virtio-net header length of the negotiated features: 12
// with VERSION_1 or MRG_RXBUF, else 10.
func HeaderSize(negotiated uint64) int {
	if has(negotiated, virtio.FeatureVersion1) || has(negotiated, FeatureMrgRxBuf) {
		return header.VirtioNetHdrSize
	}
	return header.VirtioNetHdrLegacySize
}

// AckFeatures implements virtio.Device. It applies the negotiated guest
// offloads to the backend (TUNSETOFFLOAD, as QEMU's set_features) and
// configures the control plane.
func (d *Device) AckFeatures(negotiated uint64) {
	d.mu.Lock()
	off := d.ackLocked(negotiated)
	d.mu.Unlock()
	if err := d.be.SetOffload(off); err != nil {
		d.log.Warn("virtio-net: applying guest offloads to the backend", "offloads", fmt.Sprintf("%#x", off), "err", err)
	}
}

// ackLocked records a negotiation and configures the control plane; it
// returns the offloads for the backend.
func (d *Device) ackLocked(negotiated uint64) uint64 {
	negotiated &= d.offered
	d.negotiated = negotiated
	d.last = negotiated
	d.acked = true
	mac := d.ctrl.MAC() // a legacy driver may have written the MAC before negotiation
	d.ctrl.Configure(ctrl.ConfigFromFeatures(negotiated, uint16(d.maxPairs), d.caps.VnetHdr))
	d.ctrl.SetMAC(mac)
	return d.ctrl.Offloads()
}

// QueueMaxSizes implements virtio.Device. The queue layout follows QEMU:
// receiveq i at 2i, transmitq i at 2i+1, the control queue at 2 unless MQ is
// negotiated and at 2·max_virtqueue_pairs if it is. With mq=on the full
// layout (2·N+1 queues) is reported until the driver acknowledges features
// without MQ; then the 3-queue layout is. The transport must read it again
// after AckFeatures.
func (d *Device) QueueMaxSizes() []uint16 {
	d.mu.Lock()
	pairs := d.maxPairs
	if d.acked && !has(d.negotiated, FeatureMQ) {
		pairs = 1
	}
	d.mu.Unlock()
	sizes := make([]uint16, 0, 2*pairs+1)
	for i := 0; i < pairs; i++ {
		sizes = append(sizes, d.cfg.RxQueueSize, d.cfg.TxSize())
	}
	return append(sizes, CtrlQueueSize)
}

// ctrlIndexLocked is the control queue's index for the negotiated features.
func (d *Device) ctrlIndexLocked() int {
	if has(d.negotiated, FeatureMQ) {
		return 2 * d.maxPairs
	}
	return 2
}

// configSize is the size of the device configuration space: the end of the
// last field whose feature is offered (QEMU computes it from the host
// features).
func (d *Device) configSize() int {
	n := cfgStatus
	if has(d.offered, FeatureStatus) {
		n = cfgMaxPairs
	}
	if has(d.offered, FeatureMQ) {
		n = cfgMTU
	}
	if has(d.offered, FeatureMTU) {
		n = cfgSpeed
	}
	if has(d.offered, FeatureSpeedDuplex) {
		n = cfgMaxSize
	}
	return n
}

// configBytes renders the configuration space.
func (d *Device) configBytes(b *[cfgMaxSize]byte) int {
	d.mu.Lock()
	mac := d.ctrl.MAC()
	status := uint16(0)
	if d.linkUp {
		status |= StatusLinkUp
	}
	if d.ctrl.AnnouncePending() {
		status |= StatusAnnounce
	}
	d.mu.Unlock()
	copy(b[cfgMAC:], mac[:])
	binary.LittleEndian.PutUint16(b[cfgStatus:], status)
	binary.LittleEndian.PutUint16(b[cfgMaxPairs:], uint16(d.maxPairs))
	binary.LittleEndian.PutUint16(b[cfgMTU:], d.cfg.HostMTU)
	binary.LittleEndian.PutUint32(b[cfgSpeed:], uint32(d.cfg.Speed))
	b[cfgDuplex] = d.cfg.duplexValue()
	return d.configSize()
}

// ReadConfig implements virtio.Device: struct virtio_net_config, sized as
// QEMU sizes it; bytes past the end read as 0xFF.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	var b [cfgMaxSize]byte
	n := d.configBytes(&b)
	for i := range data {
		o := offset + uint64(i)
		if o < uint64(n) {
			data[i] = b[o]
		} else {
			data[i] = 0xFF
		}
	}
}

// WriteConfig implements virtio.Device. Only the MAC is writable, and only
// by a legacy driver that did not negotiate CTRL_MAC_ADDR (QEMU's rule);
// other writes are ignored.
func (d *Device) WriteConfig(offset uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if has(d.negotiated, FeatureCtrlMACAddr) || has(d.negotiated, virtio.FeatureVersion1) {
		return
	}
	mac := d.ctrl.MAC()
	changed := false
	for i, v := range data {
		o := offset + uint64(i)
		if o >= cfgMAC+6 {
			break
		}
		mac[o] = v
		changed = true
	}
	if !changed {
		return
	}
	d.ctrl.SetMAC(mac)
	d.pushFilterLocked()
}

// BadFeatures is QEMU's virtio_net_bad_features, what a legacy driver that
// writes VIRTIO_F_BAD_FEATURE is assumed to support: MAC, CSUM, HOST_TSO4,
// HOST_TSO6 and HOST_ECN (the PCI transport's BadFeaturesDevice).
func (d *Device) BadFeatures() uint64 {
	return 1<<FeatureMAC | 1<<FeatureCSUM | 1<<FeatureHostTSO4 | 1<<FeatureHostTSO6 | 1<<FeatureHostECN
}

var (
	_ virtio.Device               = (*Device)(nil)
	_ virtio.LegacyFeatureDevice  = (*Device)(nil)
	_ virtio.QueueResetter        = (*Device)(nil)
	_ virtiopci.BadFeaturesDevice = (*Device)(nil)
)

// MAC returns the current MAC address (configured, or set by the driver).
func (d *Device) MAC() [6]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctrl.MAC()
}

// LinkUp reports the link state.
func (d *Device) LinkUp() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.linkUp
}

// SetLinkUp changes the link state (QEMU's set_link). Pending coalesced
// packets are delivered before the change takes effect; then the status
// field changes and the driver gets a configuration change notification.
// While the link is down received frames and transmitted chains are
// dropped (and counted), as in QEMU. ctx bounds the wait for the workers.
func (d *Device) SetLinkUp(ctx context.Context, up bool) error {
	d.mu.Lock()
	if d.linkUp == up {
		d.mu.Unlock()
		return nil
	}
	d.linkUp = up
	run := d.run
	cfg := d.rxConfigLocked()
	d.mu.Unlock()
	if run == nil {
		return nil
	}
	err := d.pushConfig(ctx, run, cfg)
	if ierr := run.irq.SignalConfig(); ierr != nil && err == nil {
		err = fmt.Errorf("virtio-net: link change notification: %w", ierr)
	}
	return err
}

// Announce asks the driver to announce itself (gratuitous ARP after
// migration): with GUEST_ANNOUNCE and CTRL_VQ negotiated it sets
// VIRTIO_NET_S_ANNOUNCE and sends a configuration change notification. It
// reports whether it did.
func (d *Device) Announce() bool {
	d.mu.Lock()
	ok := d.ctrl.RequestAnnounce()
	run := d.run
	d.mu.Unlock()
	if ok && run != nil {
		_ = run.irq.SignalConfig()
	}
	return ok
}

// rxConfigLocked derives the receive configuration from the negotiated
// features, the control plane and the link.
func (d *Device) rxConfigLocked() rxConfig {
	off := d.ctrl.Offloads()
	c := rxConfig{offloads: off, linkUp: d.linkUp}
	if off&(1<<FeatureGuestCSUM) == 0 {
		return c
	}
	switch {
	case has(d.negotiated, FeatureRSCExt):
		c.rsc4, c.rsc6 = d.ctrl.RSC()
	case d.cfg.RSCGSO:
		c.rsc4 = has(off, FeatureGuestTSO4)
		c.rsc6 = has(off, FeatureGuestTSO6)
		c.gsoMode = true
	}
	return c
}

// Activate implements virtio.Device.
func (d *Device) Activate(mem *memory.Memory, queues []*queue.Queue, kicks []*virtio.Kick, irq virtio.Interrupt) error {
	if mem == nil || irq == nil {
		return errors.New("virtio-net: activate without memory or interrupt")
	}
	if len(kicks) != len(queues) {
		return fmt.Errorf("virtio-net: %d queues but %d kicks", len(queues), len(kicks))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.run != nil {
		return errors.New("virtio-net: already active")
	}
	if !d.acked {
		// Restarted without a new negotiation (the transport stopped the
		// device when bus mastering was cleared and the driver set
		// DRIVER_OK again): the last negotiation still holds.
		off := d.ackLocked(d.last)
		if err := d.be.SetOffload(off); err != nil {
			d.log.Warn("virtio-net: applying guest offloads to the backend", "err", err)
		}
	}
	negotiated := d.negotiated
	pairs := 1
	if has(negotiated, FeatureMQ) {
		pairs = d.maxPairs
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &runState{ctx: ctx, cancel: cancel, mem: mem, queues: queues, kicks: kicks, irq: irq,
		workers: make([]*worker, pairs), ctrlIdx: d.ctrlIndexLocked()}
	qf := virtio.QueueFeatures(negotiated)
	cfg := d.rxConfigLocked()
	filter := *d.ctrl
	for p := 0; p < pairs; p++ {
		if !readyAt(queues, 2*p) && !readyAt(queues, 2*p+1) {
			continue
		}
		w, err := d.newWorker(run, p, negotiated, cfg, filter)
		if err != nil {
			d.stopLocked(run)
			return err
		}
		for _, i := range []int{2 * p, 2*p + 1} {
			if readyAt(queues, i) {
				queues[i].SetFeatures(qf)
			}
		}
		run.workers[p] = w
	}
	if readyAt(queues, run.ctrlIdx) {
		queues[run.ctrlIdx].SetFeatures(qf)
		cq, err := d.newCtrlQueue(run)
		if err != nil {
			d.stopLocked(run)
			return err
		}
		run.cq = cq
	}
	d.run = run
	for _, w := range run.workers {
		if w != nil {
			run.wg.Add(1)
			go w.loop()
		}
	}
	if run.cq != nil {
		run.wg.Add(1)
		go run.cq.loop()
	}
	return nil
}

func readyAt(qs []*queue.Queue, i int) bool { return i < len(qs) && qs[i] != nil && qs[i].Ready() }

// stopLocked cancels and waits for run's goroutines and releases their
// resources.
func (d *Device) stopLocked(run *runState) {
	run.cancel()
	run.wg.Wait()
	for _, w := range run.workers {
		if w != nil {
			w.close()
		}
	}
	if run.cq != nil {
		run.cq.close()
	}
}

// Reset implements virtio.Device: it stops the workers (discarding pending
// coalesced packets and frames held for the ring), resets the control
// plane, clears the negotiated features and the backend's offloads and
// detaches extra backend queues.
func (d *Device) Reset() {
	d.mu.Lock()
	run := d.run
	d.run = nil
	d.mu.Unlock()
	if run != nil {
		// Workers never take d.mu while they are being stopped, except in
		// short sections that do not wait for anything.
		run.cancel()
		run.wg.Wait()
		for _, w := range run.workers {
			if w != nil {
				w.close()
			}
		}
		if run.cq != nil {
			run.cq.close()
		}
	}
	d.mu.Lock()
	d.negotiated = 0
	d.acked = false
	d.ctrl.Configure(ctrl.ConfigFromFeatures(0, uint16(d.maxPairs), d.caps.VnetHdr))
	pairs := d.pairsInUse
	d.pairsInUse = 1
	d.mu.Unlock()
	if err := d.be.SetOffload(0); err != nil {
		d.log.Warn("virtio-net: clearing backend offloads at reset", "err", err)
	}
	if pairs != 1 {
		if err := d.be.SetActiveQueues(1); err != nil {
			d.log.Warn("virtio-net: detaching backend queues at reset", "err", err)
		}
	}
}

// pairOf maps a queue index to its pair and whether it is the rx queue; ok
// is false for the control queue or an index out of range.
func (run *runState) pairOf(index int) (pair int, rx bool, ok bool) {
	if index < 0 || index == run.ctrlIdx || index/2 >= len(run.workers) {
		return 0, false, false
	}
	return index / 2, index%2 == 0, true
}

// ResetQueue implements virtio.QueueResetter: the worker (or the control
// queue goroutine) stops using the queue before it returns.
func (d *Device) ResetQueue(index int) {
	d.mu.Lock()
	run := d.run
	d.mu.Unlock()
	if run == nil {
		return
	}
	if index == run.ctrlIdx {
		if run.cq != nil {
			run.cq.stop()
		}
		return
	}
	p, _, ok := run.pairOf(index)
	if !ok || run.workers[p] == nil {
		return
	}
	run.workers[p].call(run.ctx, &request{kind: reqStopQueue, index: index})
}

// EnableQueue implements virtio.QueueResetter: the driver re-enabled a
// queue after resetting it.
func (d *Device) EnableQueue(index int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	run := d.run
	if run == nil || index < 0 || index >= len(run.queues) || !run.queues[index].Ready() {
		return nil
	}
	run.queues[index].SetFeatures(virtio.QueueFeatures(d.negotiated))
	if index == run.ctrlIdx {
		if run.cq == nil {
			cq, err := d.newCtrlQueue(run)
			if err != nil {
				return err
			}
			run.cq = cq
			run.wg.Add(1)
			go cq.loop()
			return nil
		}
		run.cq.start()
		return nil
	}
	p, _, ok := run.pairOf(index)
	if !ok {
		return nil
	}
	if run.workers[p] == nil {
		w, err := d.newWorker(run, p, d.negotiated, d.rxConfigLocked(), *d.ctrl)
		if err != nil {
			return err
		}
		run.workers[p] = w
		run.wg.Add(1)
		go w.loop()
		return nil
	}
	w := run.workers[p]
	d.mu.Unlock()
	w.call(run.ctx, &request{kind: reqStartQueue, index: index})
	d.mu.Lock()
	return nil
}

// pushConfig sends cfg to every worker and waits until each has delivered
// what it held under its previous configuration and switched.
func (d *Device) pushConfig(ctx context.Context, run *runState, cfg rxConfig) error {
	reqs := make([]*request, 0, len(run.workers))
	for _, w := range run.workers {
		if w == nil {
			continue
		}
		r := &request{kind: reqConfig, cfg: cfg, done: make(chan struct{})}
		w.post(r)
		reqs = append(reqs, r)
	}
	for _, r := range reqs {
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-run.ctx.Done():
			return run.ctx.Err()
		}
	}
	return nil
}

// pushFilterLocked sends the current receive filter to every worker
// without waiting.
func (d *Device) pushFilterLocked() {
	run := d.run
	if run == nil {
		return
	}
	snap := *d.ctrl
	for _, w := range run.workers {
		if w != nil {
			w.post(&request{kind: reqFilter, filter: snap})
		}
	}
}

// rateLimiter lets a guest-triggered message through at most once per
// interval.
type rateLimiter struct {
	mu    sync.Mutex
	every time.Duration
	last  time.Time
	quiet int
}

func newRateLimiter(every time.Duration) *rateLimiter { return &rateLimiter{every: every} }

// allow reports whether to log now and how many messages were suppressed
// since the last one.
func (r *rateLimiter) allow() (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.last) < r.every {
		r.quiet++
		return false, 0
	}
	r.last = now
	q := r.quiet
	r.quiet = 0
	return true, q
}

// guestWarn logs a guest-triggered problem, rate-limited.
func (d *Device) guestWarn(msg string, args ...any) {
	if ok, quiet := d.limit.allow(); ok {
		if quiet > 0 {
			args = append(args, "suppressed", quiet)
		}
		d.log.Warn(msg, args...)
	}
}

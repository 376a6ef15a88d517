// Package virtiopci is the virtio PCI transport: it presents any
// virtio.Device as a PCI function exactly as QEMU 7.2 presents
// `-device virtio-<type>-pci` on the `pc` machine, and drives the device
// through the virtio status state machine (virtio.State).
//
// # What the guest sees
//
// A transitional function by default (legacy and modern interfaces), or a
// modern-only (Options.DisableLegacy) or legacy-only (Options.DisableModern)
// one:
//
//   - identity: vendor 0x1AF4; transitional/legacy device ID 0x1000+n
//     (0x1000 for net) with revision 0 and subsystem 1af4:<device type>;
//     modern-only 0x1040+type, revision 1, subsystem 1af4:1100; class from
//     the device type (0x020000 for net); interrupt pin INTA#.
//   - BAR 0 (I/O, transitional and legacy): the legacy register block,
//     pow2ceil(24 + config length) bytes (20 + length without MSI-X).
//   - BAR 1 (32-bit memory, 4 KiB, when Options.Vectors > 0): MSI-X table at
//     0, pending bit array at 0x800.
//   - BAR 4/5 (64-bit prefetchable memory, 16 KiB, transitional and
//     modern): common configuration at 0, ISR at 0x1000, device
//     configuration at 0x2000, notifications at 0x3000 (multiplier 4).
//   - capabilities, allocated first-fit from 0x40 and linked at the head:
//     COMMON@0x40, ISR@0x50, DEVICE@0x60, NOTIFY@0x70, PCI_CFG@0x84 and
//     MSI-X@0x98 (the list head); MSI-X takes 0x40 on a legacy-only
//     function.
//
// Register semantics follow QEMU's hw/virtio/virtio-pci.c and hw/pci/msix.c,
// including its quirks (the legacy BAD_FEATURE substitution, QUEUE_PFN 0
// resetting the device, ACKNOWLEDGE|DRIVER forcing bus mastering on,
// invalid MSI-X vectors reading back 0xFFFF, a queue_enable value other
// than 1 setting DEVICE_NEEDS_RESET, clearing Bus Master dropping
// DRIVER_OK). Accesses of every width at every offset are split into
// naturally aligned pieces of at most 4 bytes, as QEMU's memory core does.
// The legacy GUEST_FEATURES BAD_FEATURE substitution uses the device's
// BadFeaturesDevice set (virtio-net's is MAC|CSUM|HOST_TSO4|HOST_TSO6|
// HOST_ECN); the transport adds BAD_FEATURE to every offer and VERSION_1
// to the offer of functions with the modern interface, as QEMU does.
//
// # Deliberate differences from QEMU
//
//   - A queue is validated when it is enabled (queue_enable, or QUEUE_PFN
//     on the legacy interface): its size must be a power of two no larger
//     than the device's maximum and its rings must lie in guest RAM (see
//     queue.Queue.Enable). Otherwise the device is marked
//     DEVICE_NEEDS_RESET. QEMU accepts any size up to 1024.
//   - Queue registers are latched at enable: later writes are ignored
//     until the queue or the device is reset.
//   - Enabling a queue after DRIVER_OK is only possible for devices that
//     implement virtio.QueueResetter; for others it sets
//     DEVICE_NEEDS_RESET.
//   - DRIVER_OK written while Bus Master is off is recorded, but the device
//     is activated only when the guest turns bus mastering on (no DMA
//     without bus mastering).
//   - Registers of queues the device does not have read as 0 (vector
//     0xFFFF) and ignore writes; QEMU keeps scratch values for them.
//
// # Interrupts and notifications
//
// With a Platform (a *vmm.Machine through MachinePlatform), every MSI-X
// vector has an eventfd bound as irqfd to a GSI whose MSI route follows the
// guest's table entry, so devices interrupt the guest from their own
// goroutines without a VM exit; INTx drives the IOAPIC input named by the
// Interrupt Line register. Queue notifications are KVM ioeventfds on the
// kick eventfds (virtio.Kick) while the device runs: at BAR4+0x3000+4*q
// and, for transitional functions, on the legacy QUEUE_NOTIFY port with a
// 2-byte datamatch of q. They follow BAR moves and decode changes.
// Without a Platform, MSI-X messages go to Options.OnMSI and the INTx level
// to Options.OnINTx, and every notification reaches the BAR handlers, which
// signal the kick themselves.
//
// The modern notify ioeventfds are registered with length 0 (any write
// width, KVM_CAP_IOEVENTFD_ANY_LENGTH), as QEMU does when KVM allows it;
// the software KVM used in CI (kvm_pvm) accepts and honours them. If KVM
// refuses, the transport falls back to 2-byte matches like QEMU.
//
// # Concurrency
//
// Register accesses (vCPU threads, the pci.Bus) are serialised by the
// transport. Devices call the virtio.Interrupt methods from any goroutine;
// those never wait for register accesses, and the transport calls device
// methods (Reset, Activate, ...) without holding the interrupt lock, so a
// device may block in Reset until its workers stopped signalling.
package virtiopci

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/vmm/kvm"
	"github.com/rscvm/rscvm/vmm/memory"
)

// ConfigSizer is implemented by devices that know the length of their
// device-specific configuration structure (virtio_net_config: 8 bytes with
// the default features). The transport sizes the legacy BAR from it and
// answers accesses beyond it with all-ones, as QEMU does.
type ConfigSizer interface {
	ConfigSize() int
}

// BadFeaturesDevice is implemented by devices that have a "bad features"
// set: what QEMU assumes a legacy driver supports when it writes
// GUEST_FEATURES with bit 30 (VIRTIO_F_BAD_FEATURE) set. virtio-net's is
// MAC | CSUM | HOST_TSO4 | HOST_TSO6 | HOST_ECN. Devices without it get 0.
type BadFeaturesDevice interface {
	BadFeatures() uint64
}

// Options configures a Transport. The zero value is QEMU's generic
// transitional `-device virtio-<type>-pci,vectors=0`.
type Options struct {
	// DisableLegacy makes a modern-only function (QEMU disable-legacy=on):
	// device ID 0x1040+type, revision 1, subsystem 1af4:1100, no BAR 0.
	DisableLegacy bool
	// DisableModern makes a legacy-only function (disable-modern=on): no
	// virtio capabilities and no BAR 4.
	DisableModern bool
	// Vectors is the MSI-X table size (QEMU's vectors=; virtio-net-pci's
	// default is 2*queue pairs+2). 0 means no MSI-X capability and no BAR
	// 1. At most MaxVectors.
	Vectors int
	// Class overrides the class code (0: DefaultClass of the device type).
	Class uint32
	// ConfigSize is the device configuration length for devices that do
	// not implement ConfigSizer.
	ConfigSize int
	// Platform delivers interrupts and notifications through KVM. Nil for
	// in-process use: see OnMSI and OnINTx.
	Platform Platform
	// OnMSI, without a Platform, receives every MSI-X message the
	// function sends (vector index, address, data). It may be called from
	// any goroutine, with the transport's interrupt lock held: it must not
	// call back into the Transport.
	OnMSI func(vector int, addr uint64, data uint32)
	// OnINTx, without a Platform, receives INTx level changes of the IRQ
	// input gsi (same calling rules as OnMSI).
	OnINTx func(gsi uint32, high bool)
	// Logger receives diagnostics (default slog.Default()). Guest-triggered
	// messages are rate-limited.
	Logger *slog.Logger
}

// Transport is one virtio PCI function. It implements pci.Device (add it to
// a pci.Bus), pci.BARMover (ioeventfds follow the BARs) and
// virtio.Interrupt (given to the device at activation).
type Transport struct {
	dev      virtio.Device
	resetter virtio.QueueResetter
	mem      *memory.Memory
	log      *slog.Logger
	plat     Platform

	legacy, modern bool
	cfgSize        int
	badFeatures    uint32
	cfg            *pci.ConfigSpace
	bars           [pci.NumBARs]pci.BAR
	msixCap        int // offset of the MSI-X capability, 0 when absent
	pciCfgCap      int // offset of the PCI_CFG capability, 0 when absent
	state          *virtio.State
	queues         []*queue.Queue
	kicks          []*virtio.Kick
	// numQueues is how many of queues the device exposes now (num_queues):
	// a device whose layout depends on the negotiated features (virtio-net
	// with mq=on and a driver without MQ) reports fewer after FEATURES_OK,
	// as QEMU deletes and re-adds its virtqueues then.
	numQueues int

	// mu serialises register accesses (configuration space and BARs) and
	// the device life cycle. Lock order: pci.Bus -> mu -> irq.mu. Device
	// methods are called with mu held, never with irq.mu held.
	mu          sync.Mutex
	queueSel    uint16
	activated   bool   // Device.Activate succeeded and no Reset since
	pending     bool   // DRIVER_OK accepted while Bus Master was off
	acked       bool   // Device.AckFeatures delivered since the last reset
	negotiated  uint64 // what was acked
	barBase     [pci.NumBARs]uint64
	ioevents    []kvm.IOEventFD
	notifyLen   uint32 // length of modern notify ioeventfds: 0 (any), or 2
	notifyFixed bool   // notifyLen is known to work
	scratch     [8]byte
	featErr     error // last FeaturesError logged
	closed      bool

	irq irqState

	userNotifies atomic.Uint64 // notifications that reached a BAR handler
	lastGuestLog atomic.Int64  // unix nanoseconds of the last guest-error log
}

var (
	_ pci.Device       = (*Transport)(nil)
	_ pci.BARMover     = (*Transport)(nil)
	_ virtio.Interrupt = (*Transport)(nil)
)

// Errors from New.
var (
	ErrOptions = errors.New("virtio-pci: invalid options")
)

// New builds the PCI function for dev, whose queues live in mem. Add the
// result to a pci.Bus; Close releases its eventfds and platform resources.
func New(dev virtio.Device, mem *memory.Memory, opts Options) (*Transport, error) {
	if dev == nil || mem == nil {
		return nil, fmt.Errorf("%w: a device and guest memory are required", ErrOptions)
	}
	if opts.DisableLegacy && opts.DisableModern {
		return nil, fmt.Errorf("%w: neither modern nor legacy interface enabled", ErrOptions)
	}
	if opts.Vectors < 0 || opts.Vectors > MaxVectors {
		return nil, fmt.Errorf("%w: %d MSI-X vectors (0..%d)", ErrOptions, opts.Vectors, MaxVectors)
	}
	t := &Transport{
		dev:    dev,
		mem:    mem,
		log:    opts.Logger,
		plat:   opts.Platform,
		legacy: !opts.DisableLegacy,
		modern: !opts.DisableModern,
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	t.log = t.log.With("dev", "virtio-pci-"+dev.Type().String())
	t.resetter, _ = dev.(virtio.QueueResetter)
	if s, ok := dev.(ConfigSizer); ok {
		t.cfgSize = s.ConfigSize()
	} else {
		t.cfgSize = opts.ConfigSize
	}
	if t.cfgSize < 0 || t.cfgSize > ModernRegionSize {
		return nil, fmt.Errorf("%w: device configuration of %d bytes", ErrOptions, t.cfgSize)
	}
	if t.legacy && LegacyConfigMSIX+t.cfgSize > 256 {
		return nil, fmt.Errorf("%w: device configuration of %d bytes does not fit the legacy I/O BAR", ErrOptions, t.cfgSize)
	}
	if b, ok := dev.(BadFeaturesDevice); ok {
		t.badFeatures = uint32(b.BadFeatures())
	}
	t.state = newState(dev, t.modern, t.resetter != nil)
	if t.legacy && t.state.Offered()&virtio.Bit(virtio.FeatureAccessPlatform) != 0 {
		return nil, fmt.Errorf("%w: VIRTIO_F_ACCESS_PLATFORM needs a modern-only function", ErrOptions)
	}

	sizes := dev.QueueMaxSizes()
	if len(sizes) > MaxQueues {
		return nil, fmt.Errorf("%w: %d queues (at most %d)", ErrOptions, len(sizes), MaxQueues)
	}
	for i, n := range sizes {
		q, err := queue.New(n)
		if err != nil {
			t.closeKicks()
			return nil, fmt.Errorf("virtio-pci: queue %d: %w", i, err)
		}
		k, err := virtio.NewKick()
		if err != nil {
			t.closeKicks()
			return nil, fmt.Errorf("virtio-pci: queue %d: %w", i, err)
		}
		t.queues = append(t.queues, q)
		t.kicks = append(t.kicks, k)
	}
	t.numQueues = len(t.queues)
	if err := t.buildConfigSpace(dev.Type(), opts); err != nil {
		t.closeKicks()
		return nil, err
	}
	if err := t.irq.init(t, opts); err != nil {
		t.closeKicks()
		return nil, err
	}
	return t, nil
}

// newState builds the State like virtio.NewDeviceState, with the
// transport's additions to the offer (as QEMU's virtio_pci_pre_plugged):
// BAD_FEATURE always, VERSION_1 exactly when the modern interface exists,
// and RING_RESET only for devices that can reset a queue.
func newState(dev virtio.Device, modern, canResetQueue bool) *virtio.State {
	offered := dev.Features() | virtio.Bit(virtio.FeatureBadFeature)
	if modern {
		offered |= virtio.Bit(virtio.FeatureVersion1)
	} else {
		offered &^= virtio.Bit(virtio.FeatureVersion1)
	}
	if !canResetQueue {
		offered &^= virtio.Bit(virtio.FeatureRingReset)
	}
	legacy := virtio.LegacyOnlyFeatures
	if l, ok := dev.(virtio.LegacyFeatureDevice); ok {
		legacy |= l.LegacyOnlyFeatures()
	}
	var validate func(uint64) error
	if v, ok := dev.(virtio.FeatureValidator); ok {
		validate = v.ValidateFeatures
	}
	return virtio.NewState(offered, legacy, validate)
}

func (t *Transport) closeKicks() {
	for _, k := range t.kicks {
		_ = k.Close()
	}
}

// Close stops the device, removes the transport's ioeventfds, irqfds and
// MSI routes, deasserts INTx and closes the kick eventfds. Remove the
// function from guest reach (stop the VM) first.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if t.activated {
		t.dev.Reset()
		t.activated = false
	}
	t.pending = false
	var errs []error
	errs = append(errs, t.syncIOEventFDsLocked()...)
	errs = append(errs, t.irq.close()...)
	for _, k := range t.kicks {
		errs = append(errs, k.Close())
	}
	return errors.Join(errs...)
}

// Device returns the virtio device behind the transport.
func (t *Transport) Device() virtio.Device { return t.dev }

// State returns the transport's virtio status and feature state.
func (t *Transport) State() *virtio.State { return t.state }

// Queues returns the transport's queues (one per QueueMaxSizes entry).
// They belong to the device while it is active.
func (t *Transport) Queues() []*queue.Queue { return t.queues }

// Kicks returns the queues' notification eventfds.
func (t *Transport) Kicks() []*virtio.Kick { return t.kicks }

// Active reports whether the device has been activated and not reset or
// stopped since.
func (t *Transport) Active() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.activated
}

// UserNotifies counts queue notifications that reached the transport's
// BAR handlers (or the PCI_CFG window) instead of an ioeventfd.
func (t *Transport) UserNotifies() uint64 { return t.userNotifies.Load() }

// guestError handles guest misuse the transport detects: it logs
// (rate-limited) and sets DEVICE_NEEDS_RESET, notifying the driver if
// DRIVER_OK is set.
func (t *Transport) guestError(err error) {
	t.logGuest("guest error; device needs reset", err)
	if t.state.SetNeedsReset() {
		_ = t.SignalConfig()
	}
}

// logGuest logs a guest-triggered message at most once per second.
func (t *Transport) logGuest(msg string, err error) {
	now := time.Now().UnixNano()
	last := t.lastGuestLog.Load()
	if now-last < int64(time.Second) || !t.lastGuestLog.CompareAndSwap(last, now) {
		return
	}
	t.log.Warn("virtio-pci: "+msg, "err", err)
}

// writeStatusLocked handles a driver status write on either interface.
func (t *Transport) writeStatusLocked(v uint8, legacy bool) {
	var act virtio.Action
	if legacy {
		act = t.state.WriteLegacyStatus(v)
	} else {
		act = t.state.WriteStatus(v)
	}
	t.applyLocked(act)
}

// applyLocked carries out the Actions of a status change, in order.
func (t *Transport) applyLocked(act virtio.Action) {
	if act&virtio.ActionReset != 0 {
		t.resetLocked()
	}
	if act&virtio.ActionAckFeatures != 0 {
		t.ackLocked(t.state.Negotiated())
	}
	if act&virtio.ActionActivate != 0 {
		t.activateLocked()
	}
	if act&virtio.ActionNotifyConfig != 0 {
		_ = t.SignalConfig()
	}
	if err := t.state.FeaturesError(); err != nil && err != t.featErr {
		t.logGuest("status write refused", err)
	}
	t.featErr = t.state.FeaturesError()
}

func (t *Transport) ackLocked(f uint64) {
	t.negotiated, t.acked = f, true
	t.dev.AckFeatures(f)
	t.relayoutLocked()
	qf := virtio.QueueFeatures(f)
	for _, q := range t.queues {
		q.SetFeatures(qf)
	}
}

// resetLocked resets the device after the State was reset (status 0 or
// QUEUE_PFN 0): ioeventfds go, the device stops, the queues, vectors and
// ISR return to power-on values and INTx is deasserted. The MSI-X table
// and the PCI configuration registers are not touched (QEMU's
// virtio_pci_reset).
func (t *Transport) resetLocked() {
	t.activated, t.pending = false, false
	t.syncIOEventFDsLocked()
	t.dev.Reset()
	for i, q := range t.queues {
		q.Reset()
		_, _ = t.kicks[i].Drain()
	}
	t.relayoutLocked()
	t.acked, t.negotiated = false, 0
	t.queueSel = 0
	t.irq.reset()
}

// activateLocked starts the device (DRIVER_OK accepted), or defers that
// until bus mastering is on.
func (t *Transport) activateLocked() {
	if !t.cfg.BusMaster() {
		t.pending = true
		return
	}
	t.pending = false
	if !t.acked {
		t.ackLocked(t.state.Negotiated())
	}
	qf := virtio.QueueFeatures(t.negotiated)
	for _, q := range t.queues {
		q.SetFeatures(qf)
	}
	if err := t.dev.Activate(t.mem, t.queues, t.kicks, t); err != nil {
		t.guestError(fmt.Errorf("activate: %w", err))
		return
	}
	t.activated = true
	t.syncIOEventFDsLocked()
}

// stopLocked is QEMU's reaction to Bus Master being cleared: the device
// stops (no DMA, no interrupts) and DRIVER_OK is dropped from the status,
// everything else of the negotiation staying as it was; the queues keep
// their configuration. The driver may set DRIVER_OK again to restart it.
func (t *Transport) stopLocked() {
	t.pending = false
	if t.activated {
		t.activated = false
		t.syncIOEventFDsLocked()
		t.dev.Reset()
	}
	st := t.state.Status()
	if st&virtio.StatusDriverOK == 0 {
		return
	}
	// virtio.State cannot clear a status bit other than by a reset, so
	// rebuild it: reset, restore the feature windows, replay the status
	// without DRIVER_OK.
	legacy := t.state.Legacy()
	neg := t.state.Negotiated()
	dsel, gsel := t.state.DeviceFeatureSelect(), t.state.DriverFeatureSelect()
	t.state.Reset()
	t.state.SetDeviceFeatureSelect(dsel)
	keep := st &^ (virtio.StatusDriverOK | virtio.StatusDeviceNeedsReset)
	var act virtio.Action
	if legacy {
		t.state.SetLegacyGuestFeatures(uint32(neg))
		if keep != 0 {
			act = t.state.WriteLegacyStatus(keep)
		}
	} else {
		t.state.SetDriverFeatureSelect(0)
		t.state.SetDriverFeatures(uint32(neg))
		t.state.SetDriverFeatureSelect(1)
		t.state.SetDriverFeatures(uint32(neg >> 32))
		if keep != 0 {
			act = t.state.WriteStatus(keep)
		}
	}
	t.state.SetDriverFeatureSelect(gsel)
	if st&virtio.StatusDeviceNeedsReset != 0 {
		t.state.SetNeedsReset()
	}
	// The device was reset: it needs the features again before a new
	// activation (modern: now, as FEATURES_OK was replayed; legacy: at
	// DRIVER_OK).
	t.acked = false
	if act&virtio.ActionAckFeatures != 0 {
		t.ackLocked(t.state.Negotiated())
	}
}

// commandWrittenLocked follows a configuration write that covered the
// command register's low byte (QEMU's virtio_write_config).
func (t *Transport) commandWrittenLocked() {
	master := t.cfg.BusMaster()
	t.irq.setCommand(master, t.cfg.INTxDisabled())
	if !master {
		t.stopLocked()
		return
	}
	if t.pending {
		t.activateLocked()
	}
}

// forceBusMasterLocked sets Bus Master without a guest configuration write
// (legacy status ACKNOWLEDGE|DRIVER, for Linux before 2.6.34).
func (t *Transport) forceBusMasterLocked() {
	cmd := t.cfg.Command() | pci.CommandBusMaster
	_ = t.cfg.Store(pci.RegCommand, []byte{byte(cmd), byte(cmd >> 8)})
	t.commandWrittenLocked()
}

// enableQueueLocked handles queue_enable = 1 (or a legacy QUEUE_PFN).
func (t *Transport) enableQueueLocked(i int) {
	q := t.queues[i]
	if q.Ready() {
		return
	}
	if t.activated && t.resetter == nil {
		t.guestError(fmt.Errorf("queue %d enabled after DRIVER_OK", i))
		return
	}
	if err := q.Enable(t.mem); err != nil {
		t.guestError(fmt.Errorf("queue %d: %w", i, err))
		return
	}
	if t.acked {
		q.SetFeatures(virtio.QueueFeatures(t.negotiated))
	}
	if t.activated {
		if err := t.resetter.EnableQueue(i); err != nil {
			t.guestError(fmt.Errorf("re-enable queue %d: %w", i, err))
		}
		t.syncIOEventFDsLocked()
	}
}

// resetQueueLocked handles queue_reset = 1 (VIRTIO_F_RING_RESET).
func (t *Transport) resetQueueLocked(i int) {
	if t.resetter == nil {
		return
	}
	if t.activated {
		t.resetter.ResetQueue(i)
	}
	t.queues[i].Reset()
	if t.acked {
		t.queues[i].SetFeatures(virtio.QueueFeatures(t.negotiated))
	}
	t.irq.setQueueVector(i, NoVector)
	if t.activated {
		t.syncIOEventFDsLocked()
	}
}

// notify signals queue q's kick for a notification that reached
// userspace. Out-of-range indexes are ignored.
func (t *Transport) notify(q uint32) {
	if q >= uint32(len(t.kicks)) {
		return
	}
	t.userNotifies.Add(1)
	if err := t.kicks[q].Signal(); err != nil {
		t.log.Error("virtio-pci: kick", "queue", q, "err", err)
	}
}

// selected returns queue_select and whether it names one of the queues
// the device exposes.
func (t *Transport) selected() (int, bool) {
	i := int(t.queueSel)
	return i, i < t.numQueues
}

// relayoutLocked asks the device for its queue layout again (after it
// acknowledged features, and after a reset) and follows it: the number of
// queues it exposes and each disabled queue's maximum size. Queues keep
// their kick and vector; a queue the driver already enabled (a legacy
// driver sets queues up before the features reach the device) is kept.
func (t *Transport) relayoutLocked() {
	sizes := t.dev.QueueMaxSizes()
	n := min(len(sizes), len(t.queues))
	for i := 0; i < n; i++ {
		old := t.queues[i]
		if old.MaxSize() == sizes[i] || old.Ready() {
			continue
		}
		q, err := queue.New(sizes[i])
		if err != nil {
			t.log.Error("virtio-pci: device reported an invalid queue size", "queue", i, "size", sizes[i], "err", err)
			continue
		}
		q.SetVector(old.Config().Vector)
		t.queues[i] = q
	}
	t.numQueues = n
}

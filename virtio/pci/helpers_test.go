package virtiopci

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/devices/bus"
	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/rscvm/rscvm/vmm/kvm"
	"github.com/rscvm/rscvm/vmm/memory"
)

// virtio-net feature bits the fake device offers (a QEMU-like subset).
const (
	fCSUM      = 0
	fGuestCSUM = 1
	fMAC       = 5
	fGSO       = 6 // legacy-only
	fHostTSO4  = 11
	fHostTSO6  = 12
	fHostECN   = 13
	fMrgRxbuf  = 15
	fStatus    = 16
	fCtrlVQ    = 17
)

func bits(ns ...uint) uint64 {
	var f uint64
	for _, n := range ns {
		f |= 1 << n
	}
	return f
}

var (
	fakeFeatures = bits(fCSUM, fGuestCSUM, fMAC, fGSO, fHostTSO4, fHostTSO6, fHostECN, fMrgRxbuf, fStatus,
		fCtrlVQ, virtio.FeatureNotifyOnEmpty, virtio.FeatureAnyLayout, virtio.FeatureIndirectDesc,
		virtio.FeatureEventIdx, virtio.FeatureVersion1, virtio.FeatureRingReset)
	netBadFeatures = bits(fMAC, fCSUM, fHostTSO4, fHostTSO6, fHostECN)
	testMAC        = []byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
)

// fakeDev is a virtio-net-shaped device: 3 queues (rx, tx, ctrl), an
// 8-byte configuration (MAC, status). Tests drive its queue processing
// explicitly with echo.
type fakeDev struct {
	mu          sync.Mutex
	typ         virtio.DeviceType
	sizes       []uint16
	config      [8]byte
	acked       []uint64
	activations int
	resets      int
	queues      []*queue.Queue
	kicks       []*virtio.Kick
	irq         virtio.Interrupt
	queueResets []int
	queueEnabls []int
	activateErr error
	enableErr   error
	cfgWrites   int
}

func newFakeDev() *fakeDev {
	d := &fakeDev{typ: virtio.DeviceTypeNet, sizes: []uint16{256, 256, 64}}
	copy(d.config[:], testMAC)
	d.config[6] = 1 // VIRTIO_NET_S_LINK_UP
	return d
}

func (d *fakeDev) Type() virtio.DeviceType    { return d.typ }
func (d *fakeDev) Features() uint64           { return fakeFeatures }
func (d *fakeDev) LegacyOnlyFeatures() uint64 { return bits(fGSO) }
func (d *fakeDev) BadFeatures() uint64        { return netBadFeatures }
func (d *fakeDev) ConfigSize() int            { return len(d.config) }
func (d *fakeDev) QueueMaxSizes() []uint16    { return d.sizes }

func (d *fakeDev) AckFeatures(f uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.acked = append(d.acked, f)
}

func (d *fakeDev) lastAcked() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.acked) == 0 {
		return 0
	}
	return d.acked[len(d.acked)-1]
}

func (d *fakeDev) ReadConfig(off uint64, p []byte) {
	for i := range p {
		if o := off + uint64(i); o < uint64(len(d.config)) {
			p[i] = d.config[o]
		} else {
			p[i] = 0xFF
		}
	}
}

func (d *fakeDev) WriteConfig(off uint64, p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfgWrites++
	for i, b := range p {
		if o := off + uint64(i); o < 6 { // the MAC is writable (legacy drivers)
			d.config[o] = b
		}
	}
}

func (d *fakeDev) Activate(_ *memory.Memory, qs []*queue.Queue, ks []*virtio.Kick, irq virtio.Interrupt) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.activateErr != nil {
		return d.activateErr
	}
	d.activations++
	d.queues, d.kicks, d.irq = qs, ks, irq
	return nil
}

func (d *fakeDev) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resets++
	d.queues, d.kicks, d.irq = nil, nil, nil
}

func (d *fakeDev) ResetQueue(i int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queueResets = append(d.queueResets, i)
}

func (d *fakeDev) EnableQueue(i int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queueEnabls = append(d.queueEnabls, i)
	return d.enableErr
}

func (d *fakeDev) active() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.irq != nil
}

// echo processes queue i like the virtio test device: each chain's
// readable bytes, reversed, go into its writable part.
func (d *fakeDev) echo(t *testing.T, i int) {
	t.Helper()
	d.mu.Lock()
	q, irq := d.queues[i], d.irq
	d.mu.Unlock()
	var buf [256]byte
	for {
		c, err := q.Pop()
		require.NoError(t, err)
		if c == nil {
			break
		}
		n, _ := c.Reader().Read(buf[:])
		slices.Reverse(buf[:n])
		w := c.Writer()
		_, _ = w.Write(buf[:min(n, w.Available())])
		require.NoError(t, q.AddUsed(c, uint32(w.BytesWritten())))
	}
	q.PublishUsed()
	if q.NeedsNotify() {
		require.NoError(t, irq.SignalQueue(i))
	}
}

// noResetDev is fakeDev without per-queue reset.
type noResetDev struct{ fd *fakeDev }

func (d noResetDev) Type() virtio.DeviceType         { return d.fd.Type() }
func (d noResetDev) Features() uint64                { return d.fd.Features() }
func (d noResetDev) AckFeatures(f uint64)            { d.fd.AckFeatures(f) }
func (d noResetDev) ReadConfig(o uint64, p []byte)   { d.fd.ReadConfig(o, p) }
func (d noResetDev) WriteConfig(o uint64, p []byte)  { d.fd.WriteConfig(o, p) }
func (d noResetDev) QueueMaxSizes() []uint16         { return d.fd.QueueMaxSizes() }
func (d noResetDev) Reset()                          { d.fd.Reset() }
func (d noResetDev) ConfigSize() int                 { return d.fd.ConfigSize() }
func (d noResetDev) LegacyOnlyFeatures() uint64      { return d.fd.LegacyOnlyFeatures() }
func (d noResetDev) BadFeatures() uint64             { return d.fd.BadFeatures() }
func (d noResetDev) ValidateFeatures(f uint64) error { return nil }
func (d noResetDev) Activate(m *memory.Memory, q []*queue.Queue, k []*virtio.Kick, i virtio.Interrupt) error {
	return d.fd.Activate(m, q, k, i)
}

// fakePlatform records what the transport asks of KVM.
type fakePlatform struct {
	mu              sync.Mutex
	nextGSI         uint32
	routes          map[uint32]msiMessage
	irqfds          map[uint32]*os.File
	ioevents        []kvm.IOEventFD
	levels          map[uint32]bool
	levelChanges    int
	routeUpdates    int
	rejectAnyLength bool
}

func newFakePlatform() *fakePlatform {
	return &fakePlatform{nextGSI: 24, routes: map[uint32]msiMessage{}, irqfds: map[uint32]*os.File{}, levels: map[uint32]bool{}}
}

var errFake = errors.New("fake platform: refused")

func (p *fakePlatform) AddMSIRoute(addr uint64, data uint32) (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.nextGSI
	p.nextGSI++
	p.routes[g] = msiMessage{addr, data}
	return g, nil
}

func (p *fakePlatform) SetMSIRoute(gsi uint32, addr uint64, data uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.routes[gsi]; !ok {
		return errFake
	}
	p.routes[gsi] = msiMessage{addr, data}
	p.routeUpdates++
	return nil
}

func (p *fakePlatform) RemoveMSIRoute(gsi uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.routes[gsi]; !ok {
		return errFake
	}
	delete(p.routes, gsi)
	return nil
}

func (p *fakePlatform) RegisterIRQFD(ev *os.File, gsi uint32, resample *os.File) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.irqfds[gsi]; ok || resample != nil {
		return errFake
	}
	p.irqfds[gsi] = ev
	return nil
}

func (p *fakePlatform) UnregisterIRQFD(ev *os.File, gsi uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.irqfds[gsi] != ev {
		return errFake
	}
	delete(p.irqfds, gsi)
	return nil
}

func (p *fakePlatform) RegisterIOEventFD(e kvm.IOEventFD) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rejectAnyLength && e.Len == 0 {
		return errFake
	}
	for _, x := range p.ioevents {
		if x.Addr == e.Addr && x.PIO == e.PIO && x.HasDataMatch == e.HasDataMatch && x.DataMatch == e.DataMatch {
			return errFake // EEXIST
		}
	}
	p.ioevents = append(p.ioevents, e)
	return nil
}

func (p *fakePlatform) UnregisterIOEventFD(e kvm.IOEventFD) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.ioevents {
		if x == e {
			p.ioevents = slices.Delete(p.ioevents, i, i+1)
			return nil
		}
	}
	return errFake
}

func (p *fakePlatform) SetIRQLevel(gsi uint32, high bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.levels[gsi] = high
	p.levelChanges++
	return nil
}

func (p *fakePlatform) level(gsi uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.levels[gsi]
}

func (p *fakePlatform) events() []kvm.IOEventFD {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ioevents)
}

// fired drains the irqfd eventfd of gsi and returns its count.
func (p *fakePlatform) fired(t *testing.T, gsi uint32) uint64 {
	t.Helper()
	p.mu.Lock()
	f := p.irqfds[gsi]
	p.mu.Unlock()
	require.NotNil(t, f, "no irqfd on GSI %d", gsi)
	var b [8]byte
	_, err := unix.Read(int(f.Fd()), b[:])
	if errors.Is(err, unix.EAGAIN) {
		return 0
	}
	require.NoError(t, err)
	return binary.NativeEndian.Uint64(b[:])
}

type msiRecord struct {
	vector int
	addr   uint64
	data   uint32
}

const (
	testSlot = 3
	testGSI  = 19 // 16 + (3 + 1 - 1) mod 8
	memSize  = 4 << 20
)

// env is a pci.Bus with one transport at 00:03.0 over fake memory.
type env struct {
	t         testing.TB
	pio, mmio *bus.Bus
	pci       *pci.Bus
	tr        *Transport
	dev       *fakeDev
	plat      *fakePlatform
	mem       *memory.Memory

	mu    sync.Mutex
	msis  []msiRecord
	intx  map[uint32]bool
	intxN int
}

type envOpt func(*Options)

func withPlatform(p *fakePlatform) envOpt { return func(o *Options) { o.Platform = p } }
func vectors(n int) envOpt                { return func(o *Options) { o.Vectors = n } }
func modernOnly(o *Options)               { o.DisableLegacy = true }
func legacyOnly(o *Options)               { o.DisableModern = true }

func newEnv(t testing.TB, opts ...envOpt) *env {
	return newEnvDev(t, newFakeDev(), nil, opts...)
}

// newEnvDev builds the environment for fd, exposing dev (fd itself when
// nil) to the transport.
func newEnvDev(t testing.TB, fd *fakeDev, dev virtio.Device, opts ...envOpt) *env {
	t.Helper()
	if dev == nil {
		dev = fd
	}
	e := &env{t: t, pio: bus.New("pio"), mmio: bus.New("mmio"), dev: fd, intx: map[uint32]bool{}}
	mem, err := queuetest.NewMemory(memSize)
	require.NoError(t, err)
	e.mem = mem
	o := Options{Vectors: 4, Logger: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	if p, ok := o.Platform.(*fakePlatform); ok {
		e.plat = p
	} else {
		o.OnMSI = func(v int, a uint64, d uint32) {
			e.mu.Lock()
			e.msis = append(e.msis, msiRecord{v, a, d})
			e.mu.Unlock()
		}
		o.OnINTx = func(g uint32, high bool) {
			e.mu.Lock()
			e.intx[g] = high
			e.intxN++
			e.mu.Unlock()
		}
	}
	tr, err := New(dev, mem, o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) })
	e.tr = tr
	e.pci, err = pci.NewBus(pci.Config{PIO: e.pio, MMIO: e.mmio, Mem64: pci.Window{Base: 0x1_0000_0000, Size: 1 << 30}})
	require.NoError(t, err)
	require.NoError(t, e.pci.AddAt(testSlot, tr))
	return e
}

func (e *env) takeMSIs() []msiRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.msis
	e.msis = nil
	return m
}

func (e *env) intxLevel(gsi uint32) bool {
	if e.plat != nil {
		return e.plat.level(gsi)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.intx[gsi]
}

func le(v uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	return b
}

func fromLE(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func (e *env) cfgRead(off, n int) uint64 {
	b := make([]byte, n)
	e.pci.ConfigRead(testSlot, 0, off, b)
	return fromLE(b)
}

func (e *env) cfgWrite(off, n int, v uint64) { e.pci.ConfigWrite(testSlot, 0, off, le(v, n)) }

func (e *env) image() []byte {
	b := make([]byte, 256)
	for off := 0; off < 256; off += 4 {
		e.pci.ConfigRead(testSlot, 0, off, b[off:off+4])
	}
	return b
}

func (e *env) barBase(bar int) uint64 {
	base, ok := e.pci.BARMapping(testSlot, bar)
	require.True(e.t, ok, "BAR %d not mapped", bar)
	return base
}

func (e *env) busFor(bar int) *bus.Bus {
	if bar == BARLegacy {
		return e.pio
	}
	return e.mmio
}

func (e *env) barRead(bar int, off uint64, n int) uint64 {
	b := make([]byte, n)
	require.True(e.t, e.busFor(bar).Read(e.barBase(bar)+off, b), "BAR %d read at %#x", bar, off)
	return fromLE(b)
}

func (e *env) barWrite(bar int, off uint64, n int, v uint64) {
	require.True(e.t, e.busFor(bar).Write(e.barBase(bar)+off, le(v, n)), "BAR %d write at %#x", bar, off)
}

// Register shortcuts.
func (e *env) common(off uint64, n int) uint64 { return e.barRead(BARModern, CommonCfgOffset+off, n) }
func (e *env) setCommon(off uint64, n int, v uint64) {
	e.barWrite(BARModern, CommonCfgOffset+off, n, v)
}
func (e *env) legacyReg(off uint64, n int) uint64    { return e.barRead(BARLegacy, off, n) }
func (e *env) setLegacy(off uint64, n int, v uint64) { e.barWrite(BARLegacy, off, n, v) }
func (e *env) status() uint8                         { return e.tr.State().Status() }
func (e *env) needsReset() bool                      { return e.status()&virtio.StatusDeviceNeedsReset != 0 }
func (e *env) busMaster() {
	e.cfgWrite(pci.RegCommand, 2, e.cfgRead(pci.RegCommand, 2)|pci.CommandBusMaster)
}
func (e *env) command(v uint16) { e.cfgWrite(pci.RegCommand, 2, uint64(v)) }
func (e *env) msixControl(enable, maskAll bool) {
	var v uint64
	if enable {
		v |= msixEnableBit
	}
	if maskAll {
		v |= msixMaskAllBit
	}
	e.cfgWrite(e.tr.msixCap+msixCtrlHigh, 1, v)
}

// setEntry programs MSI-X table entry v (address 0xFEE00000, data
// 0x4000+v) and its mask bit.
func (e *env) setEntry(v int, masked bool) {
	off := uint64(v) * MSIXEntrySize
	e.barWrite(BARMSIX, off, 4, 0xFEE00000)
	e.barWrite(BARMSIX, off+4, 4, 0)
	e.barWrite(BARMSIX, off+8, 4, uint64(0x4000+v))
	ctrl := uint64(0)
	if masked {
		ctrl = 1
	}
	e.barWrite(BARMSIX, off+12, 4, ctrl)
}

// layout returns distinct ring addresses for queue i (legacy layout at
// PFN 0x10 + 0x20*i, 128 KiB apart, data area after the rings).
func layout(i int, size uint16) queuetest.Layout {
	pfn := uint32(0x10 + 0x20*i)
	desc, avail, used := queue.LegacyLayout(pfn, size)
	data := (used + queue.UsedRingSize(size) + 4095) &^ 4095
	return queuetest.Layout{Size: size, Desc: desc, Avail: avail, Used: used, Data: data, End: uint64(pfn+0x20) << 12}
}

// modernFeatures negotiates f on the modern interface up to FEATURES_OK
// and reports whether FEATURES_OK stuck.
func (e *env) modernFeatures(f uint64) bool {
	e.setCommon(CommonDeviceStatus, 1, 0)
	e.setCommon(CommonDeviceStatus, 1, uint64(virtio.StatusAcknowledge))
	e.setCommon(CommonDeviceStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver))
	e.setCommon(CommonDriverFeatureSelect, 4, 0)
	e.setCommon(CommonDriverFeature, 4, f&0xFFFFFFFF)
	e.setCommon(CommonDriverFeatureSelect, 4, 1)
	e.setCommon(CommonDriverFeature, 4, f>>32)
	e.setCommon(CommonDeviceStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK))
	return e.common(CommonDeviceStatus, 1)&uint64(virtio.StatusFeaturesOK) != 0
}

// modernQueue programs queue i through the common configuration with
// vector v and enables it; it returns a driver for the rings.
func (e *env) modernQueue(i int, size uint16, v uint16) *queuetest.Driver {
	l := layout(i, size)
	d, err := queuetest.NewDriver(e.mem, l)
	require.NoError(e.t, err)
	e.setCommon(CommonQueueSelect, 2, uint64(i))
	e.setCommon(CommonQueueSize, 2, uint64(size))
	e.setCommon(CommonQueueDescLo, 4, l.Desc&0xFFFFFFFF)
	e.setCommon(CommonQueueDescHi, 4, l.Desc>>32)
	e.setCommon(CommonQueueAvailLo, 4, l.Avail&0xFFFFFFFF)
	e.setCommon(CommonQueueAvailHi, 4, l.Avail>>32)
	e.setCommon(CommonQueueUsedLo, 4, l.Used&0xFFFFFFFF)
	e.setCommon(CommonQueueUsedHi, 4, l.Used>>32)
	e.setCommon(CommonQueueMSIXVector, 2, uint64(v))
	e.setCommon(CommonQueueEnable, 2, 1)
	return d
}

func (e *env) driverOK() {
	st := e.common(CommonDeviceStatus, 1)
	e.setCommon(CommonDeviceStatus, 1, st|uint64(virtio.StatusDriverOK))
}

// modernUp brings the device up like Linux: bus master, MSI-X enabled
// with entries 0..3 unmasked, config vector 0, queues 0..2 on vectors
// 1..3, DRIVER_OK.
func (e *env) modernUp(f uint64) []*queuetest.Driver {
	ds := e.bringUp(f)
	require.True(e.t, e.dev.active())
	return ds
}

// bringUp is modernUp without checking the outcome.
func (e *env) bringUp(f uint64) []*queuetest.Driver {
	e.busMaster()
	for v := 0; v < 4; v++ {
		e.setEntry(v, false)
	}
	e.msixControl(true, false)
	e.modernFeatures(f)
	e.setCommon(CommonMSIXConfig, 2, 0)
	var ds []*queuetest.Driver
	for i, n := range e.dev.sizes {
		ds = append(ds, e.modernQueue(i, n, uint16(i+1)))
	}
	e.driverOK()
	return ds
}

// legacyUp brings the device up through the legacy interface: ACK|DRIVER
// (which sets bus mastering), guest features, QUEUE_PFN per queue,
// DRIVER_OK. MSI-X stays disabled (INTx).
func (e *env) legacyUp(f uint32) []*queuetest.Driver {
	e.setLegacy(LegacyStatus, 1, 0)
	e.setLegacy(LegacyStatus, 1, uint64(virtio.StatusAcknowledge))
	e.setLegacy(LegacyStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver))
	e.setLegacy(LegacyGuestFeatures, 4, uint64(f))
	var ds []*queuetest.Driver
	for i := range e.dev.sizes {
		e.setLegacy(LegacyQueueSel, 2, uint64(i))
		n := uint16(e.legacyReg(LegacyQueueNum, 2))
		l := layout(i, n)
		d, err := queuetest.NewDriver(e.mem, l)
		require.NoError(e.t, err)
		e.setLegacy(LegacyQueuePFN, 4, l.Desc>>12)
		ds = append(ds, d)
	}
	e.setLegacy(LegacyStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusDriverOK))
	require.True(e.t, e.dev.active())
	return ds
}

// kicked drains queue i's kick and reports whether it had been signalled.
func (e *env) kicked(i int) bool {
	ok, err := e.tr.Kicks()[i].Drain()
	require.NoError(e.t, err)
	return ok
}

var _ Platform = (*fakePlatform)(nil)

func newMem() (*memory.Memory, error) { return queuetest.NewMemory(memSize) }

// noSizer hides fakeDev's ConfigSize (Options.ConfigSize applies).
type noSizer struct{ *fakeDev }

func (noSizer) ConfigSize() {}

func bufR(s string) queuetest.Buffer { return queuetest.R([]byte(s)) }
func bufW(n uint32) queuetest.Buffer { return queuetest.W(n) }

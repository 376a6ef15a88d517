package virtiopci

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/vmm/kvm"
)

// window programs the PCI_CFG capability (bar 4, offset, length).
func (e *env) window(off uint32, n uint32) {
	c := e.tr.pciCfgCap
	e.cfgWrite(c+capBar, 1, BARModern)
	e.cfgWrite(c+capOffset, 4, uint64(off))
	e.cfgWrite(c+capLength, 4, uint64(n))
}

func TestPCICfgWindow(t *testing.T) {
	e := newEnv(t)
	c := e.tr.pciCfgCap
	require.Equal(t, 0x84, c)
	e.window(CommonNumQueues, 2)
	require.Equal(t, uint64(3), e.cfgRead(c+capCfgData, 4)&0xFFFF)
	require.Equal(t, uint64(BARModern), e.cfgRead(c+capBar, 1), "bar field is writable")
	e.cfgWrite(c, 4, 0xFFFFFFFF)
	e.cfgWrite(c+capOffset-4+1, 3, 0xFFFFFF) // id and padding
	require.Equal(t, uint64(0x05147009), e.cfgRead(c, 4), "header bytes stay read-only")
	require.Equal(t, uint64(BARModern), e.cfgRead(c+4, 4))

	// Feature negotiation entirely through the window (what SeaBIOS does
	// for BARs above 4 GiB).
	e.window(CommonDeviceFeatureSelect, 4)
	e.cfgWrite(c+capCfgData, 4, 1)
	e.window(CommonDeviceFeature, 4)
	require.Equal(t, fakeFeatures>>32, e.cfgRead(c+capCfgData, 4))
	e.window(CommonDeviceStatus, 1)
	e.cfgWrite(c+capCfgData, 1, uint64(virtio.StatusAcknowledge))
	require.Equal(t, virtio.StatusAcknowledge, e.status())
	require.Equal(t, uint64(virtio.StatusAcknowledge), e.cfgRead(c+capCfgData, 1))

	// Device configuration and ISR through the window.
	e.window(DeviceCfgOffset, 4)
	require.Equal(t, uint64(0x12005452), e.cfgRead(c+capCfgData, 4))
	e.window(DeviceCfgOffset+8, 4)
	require.Equal(t, uint64(0xFFFFFFFF), e.cfgRead(c+capCfgData, 4))

	// A notification through the window reaches the kick from userspace.
	n := e.tr.UserNotifies()
	e.window(NotifyOffset+4*2, 2)
	e.cfgWrite(c+capCfgData, 2, 2)
	require.True(t, e.kicked(2))
	require.Equal(t, n+1, e.tr.UserNotifies())

	// The offset is aligned down to the length: 0x17 with length 2 is
	// queue_select at 0x16.
	e.setCommon(CommonQueueSelect, 2, 1)
	e.window(CommonQueueSelect+1, 2)
	require.Equal(t, uint64(1), e.cfgRead(c+capCfgData, 2))

	// The bar field is not looked at (QEMU).
	e.cfgWrite(c+capBar, 1, 0)
	require.Equal(t, uint64(1), e.cfgRead(c+capCfgData, 2))
}

// Checklist 6: PCI_CFG window with a length not in {1, 2, 4} or an offset
// outside the regions does nothing; the device stays usable.
func TestChecklist6_PCICfgBadWindow(t *testing.T) {
	e := newEnv(t)
	c := e.tr.pciCfgCap
	e.cfgWrite(c+capCfgData, 4, 0xA5A5A5A5)
	for _, w := range []struct{ off, n uint32 }{
		{CommonDeviceStatus, 3}, {CommonDeviceStatus, 0}, {CommonDeviceStatus, 8}, {0, 0xFFFFFFFF},
		{ModernBARSize, 4}, {0xFFFFFFFC, 4}, {0xFFFFFFFF, 1},
	} {
		e.window(w.off, w.n)
		e.cfgWrite(c+capCfgData, 4, 0x0F0F0F0F)
		require.Equal(t, uint64(0x0F0F0F0F), e.cfgRead(c+capCfgData, 4), "window %#x+%d", w.off, w.n)
	}
	// An unaligned window is aligned down: 0x3FFE+4 is the last notify
	// dword (no such queue), which reads 0.
	e.window(ModernBARSize-2, 4)
	require.Equal(t, uint64(0), e.cfgRead(c+capCfgData, 4))
	require.Equal(t, uint8(0), e.status())
	require.False(t, e.needsReset())
	e.modernUp(bits(virtio.FeatureVersion1))
}

func TestQueueReset(t *testing.T) {
	e := newEnv(t)
	require.NotZero(t, e.tr.State().Offered()&virtio.Bit(virtio.FeatureRingReset))
	ds := e.modernUp(bits(virtio.FeatureVersion1, virtio.FeatureRingReset, virtio.FeatureEventIdx))
	e.setCommon(CommonQueueSelect, 2, 1)
	e.setCommon(CommonQueueReset, 2, 1)
	require.Equal(t, []int{1}, e.dev.queueResets)
	require.Equal(t, uint64(0), e.common(CommonQueueReset, 2), "reset completes synchronously")
	require.Equal(t, uint64(0), e.common(CommonQueueEnable, 2))
	require.Equal(t, uint64(NoVector), e.common(CommonQueueMSIXVector, 2))
	require.Equal(t, uint64(256), e.common(CommonQueueSize, 2))
	require.Equal(t, uint64(0), e.common(CommonQueueDescLo, 4))
	require.True(t, e.tr.Queues()[1].Features().EventIdx, "negotiated ring features kept")
	require.True(t, e.tr.Queues()[0].Ready())
	// Re-enable with a smaller ring.
	ds[1] = e.modernQueue(1, 128, 2)
	require.Equal(t, []int{1}, e.dev.queueEnabls)
	require.True(t, e.tr.Queues()[1].Ready())
	require.Equal(t, uint16(128), e.tr.Queues()[1].Size())
	require.False(t, e.needsReset())
	// EnableQueue failing marks the device.
	e.setCommon(CommonQueueReset, 2, 1)
	e.dev.enableErr = errors.New("no")
	e.setCommon(CommonQueueEnable, 2, 1)
	require.True(t, e.needsReset())
	// Other values are ignored.
	e.setCommon(CommonQueueSelect, 2, 0)
	e.setCommon(CommonQueueReset, 2, 2)
	require.True(t, e.tr.Queues()[0].Ready())
}

func TestQueueResetUnsupported(t *testing.T) {
	fd := newFakeDev()
	e := newEnvDev(t, fd, noResetDev{fd})
	require.Zero(t, e.tr.State().Offered()&virtio.Bit(virtio.FeatureRingReset), "RING_RESET not offered")
	e.modernUp(bits(virtio.FeatureVersion1))
	e.setCommon(CommonQueueSelect, 2, 0)
	e.setCommon(CommonQueueReset, 2, 1)
	require.True(t, e.tr.Queues()[0].Ready(), "ignored")
	require.Empty(t, fd.queueResets)
}

func TestIOEventFDLifecycle(t *testing.T) {
	p := newFakePlatform()
	e := newEnv(t, withPlatform(p))
	e.busMaster()
	require.True(t, e.modernFeatures(bits(virtio.FeatureVersion1)))
	e.modernQueue(0, 256, 0)
	e.modernQueue(1, 256, 1) // queue 2 stays disabled
	require.Empty(t, p.events(), "nothing before DRIVER_OK")
	e.driverOK()
	io, m64 := e.barBase(BARLegacy), e.barBase(BARModern)
	k := e.tr.Kicks()
	want := []kvm.IOEventFD{
		{FD: k[0].File(), Addr: m64 + NotifyOffset, Len: 0},
		{FD: k[0].File(), Addr: io + LegacyQueueNotify, Len: 2, PIO: true, HasDataMatch: true, DataMatch: 0},
		{FD: k[1].File(), Addr: m64 + NotifyOffset + 4, Len: 0},
		{FD: k[1].File(), Addr: io + LegacyQueueNotify, Len: 2, PIO: true, HasDataMatch: true, DataMatch: 1},
	}
	require.ElementsMatch(t, want, p.events())
	require.ElementsMatch(t, want, e.tr.IOEventFDs())

	// The guest moves BAR 4 (64-bit, high half first as Linux does).
	newBase := uint64(0x1_2000_0000)
	e.cfgWrite(pci.RegBAR0+4*BARModern+4, 4, newBase>>32)
	e.cfgWrite(pci.RegBAR0+4*BARModern, 4, newBase&0xFFFFFFFF|0xC)
	require.Equal(t, newBase, e.barBase(BARModern))
	moved := []kvm.IOEventFD{want[1], want[3],
		{FD: k[0].File(), Addr: newBase + NotifyOffset, Len: 0},
		{FD: k[1].File(), Addr: newBase + NotifyOffset + 4, Len: 0}}
	require.ElementsMatch(t, moved, p.events())

	// Memory decode off: the MMIO ones go; on: they come back.
	cmd := uint16(e.cfgRead(pci.RegCommand, 2))
	e.command(cmd &^ pci.CommandMemory)
	require.ElementsMatch(t, []kvm.IOEventFD{want[1], want[3]}, p.events())
	e.command(cmd)
	require.ElementsMatch(t, moved, p.events())

	// BAR 0 moves too.
	e.cfgWrite(pci.RegBAR0, 4, 0xD001)
	require.Equal(t, uint64(0xD000), e.barBase(BARLegacy))
	for _, r := range p.events() {
		if r.PIO {
			require.Equal(t, uint64(0xD000+LegacyQueueNotify), r.Addr)
		}
	}
	require.Len(t, p.events(), 4)

	// A notification through an ioeventfd never reaches the handler; the
	// ones that do (other widths) still kick.
	n := e.tr.UserNotifies()
	e.barWrite(BARModern, NotifyOffset, 4, 0)
	require.True(t, e.kicked(0))
	require.Equal(t, n+1, e.tr.UserNotifies())

	// Reset removes everything.
	e.setCommon(CommonDeviceStatus, 1, 0)
	require.Empty(t, p.events())
	require.Empty(t, e.tr.IOEventFDs())
}

// Without KVM_CAP_IOEVENTFD_ANY_LENGTH the modern notify ioeventfds match
// 2-byte writes, as QEMU's.
func TestIOEventFDFixedLength(t *testing.T) {
	p := newFakePlatform()
	p.rejectAnyLength = true
	e := newEnv(t, withPlatform(p), modernOnly)
	e.modernUp(bits(virtio.FeatureVersion1))
	m64 := e.barBase(BARModern)
	require.Len(t, p.events(), 3)
	for i, r := range p.events() {
		require.Equal(t, kvm.IOEventFD{FD: e.tr.Kicks()[i].File(), Addr: m64 + NotifyOffset + 4*uint64(i), Len: 2}, r)
	}
}

func TestBusMasterClearStopsDevice(t *testing.T) {
	p := newFakePlatform()
	e := newEnv(t, withPlatform(p))
	f := bits(virtio.FeatureVersion1, fCSUM)
	e.modernUp(f)
	require.NotEmpty(t, p.events())
	resets := e.dev.resets
	e.command(pci.CommandIO | pci.CommandMemory)
	require.Equal(t, resets+1, e.dev.resets, "device stopped")
	require.False(t, e.dev.active())
	require.False(t, e.tr.Active())
	require.Empty(t, p.events())
	st := virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK
	require.Equal(t, st, e.status(), "DRIVER_OK dropped, the rest kept")
	require.Equal(t, f, e.dev.lastAcked(), "features given again")
	for _, q := range e.tr.Queues() {
		require.True(t, q.Ready(), "queues keep their configuration")
	}
	// Setting DRIVER_OK while bus mastering is off waits for it.
	activations := e.dev.activations
	e.driverOK()
	require.Equal(t, st|virtio.StatusDriverOK, e.status())
	require.Equal(t, activations, e.dev.activations)
	e.busMaster()
	require.Equal(t, activations+1, e.dev.activations)
	require.True(t, e.dev.active())
	require.NotEmpty(t, p.events())
	require.False(t, e.needsReset())
}

func TestBusMasterClearLegacy(t *testing.T) {
	e := newEnv(t)
	e.legacyUp(uint32(bits(fCSUM)))
	e.command(pci.CommandIO | pci.CommandMemory)
	require.False(t, e.dev.active())
	require.Equal(t, virtio.StatusAcknowledge|virtio.StatusDriver, e.status())
	require.Equal(t, bits(fCSUM), e.legacyReg(LegacyGuestFeatures, 4))
	// Old Linux: ACK|DRIVER|DRIVER_OK sets bus mastering? No: only the
	// exact ACK|DRIVER write does. DRIVER_OK waits for bus mastering.
	e.setLegacy(LegacyStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusDriverOK))
	require.False(t, e.dev.active())
	e.setLegacy(LegacyStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver))
	require.True(t, e.dev.active(), "forced bus master starts the pending device")
}

// mqLayoutDev has virtio-net's mq=on queue layout: two pairs and the
// control queue (5 queues) until the driver acknowledges features without
// MQ (bit 22), then one pair and the control queue at index 2.
type mqLayoutDev struct{ *fakeDev }

func (d mqLayoutDev) QueueMaxSizes() []uint16 {
	if acked := d.lastAcked(); len(d.acked) > 0 && acked&bits(22) == 0 {
		return []uint16{256, 256, 64}
	}
	return []uint16{256, 256, 256, 256, 64}
}

func (d mqLayoutDev) Reset() {
	d.fakeDev.Reset()
	d.mu.Lock()
	d.acked = nil
	d.mu.Unlock()
}

// TestQueueLayoutFollowsFeatures: as QEMU re-creates virtio-net's queues
// when the driver declines MQ, num_queues and the control queue's size
// follow the device's layout after FEATURES_OK, and a reset restores the
// full layout.
func TestQueueLayoutFollowsFeatures(t *testing.T) {
	fd := newFakeDev()
	fd.sizes = []uint16{256, 256, 256, 256, 64}
	e := newEnvDev(t, fd, mqLayoutDev{fd})
	e.busMaster()
	require.Equal(t, uint64(5), e.common(CommonNumQueues, 2))
	e.setCommon(CommonQueueSelect, 2, 2)
	require.Equal(t, uint64(256), e.common(CommonQueueSize, 2), "queue 2 is pair 1's rx before FEATURES_OK")
	require.True(t, e.modernFeatures(bits(virtio.FeatureVersion1)))
	require.Equal(t, uint64(3), e.common(CommonNumQueues, 2), "num_queues after the driver declined MQ")
	e.setCommon(CommonQueueSelect, 2, 2)
	require.Equal(t, uint64(64), e.common(CommonQueueSize, 2), "queue 2 is the control queue")
	e.setCommon(CommonQueueSelect, 2, 3)
	require.Equal(t, uint64(0), e.common(CommonQueueSize, 2), "queue 3 does not exist")
	for i, size := range []uint16{256, 256, 64} {
		e.modernQueue(i, size, uint16(i))
	}
	e.driverOK()
	require.True(t, fd.active())
	require.Len(t, fd.queues, 5, "the device gets every queue object")
	require.Equal(t, uint16(64), fd.queues[2].Size())
	e.setCommon(CommonDeviceStatus, 1, 0)
	require.Equal(t, uint64(5), e.common(CommonNumQueues, 2), "reset restores the full layout")
	e.setCommon(CommonQueueSelect, 2, 2)
	require.Equal(t, uint64(256), e.common(CommonQueueSize, 2))
}

package virtiopci

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio"
)

// Tests for the transport items of the malicious-guest checklist
// (virtio-pci-qemu.md §7.3, items 1-6). Each ends by asserting the
// defined state the device is left in.

const ackDriverFeat = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK

// Checklist 1: queue_select, notify index or vectors out of range.
func TestChecklist1_OutOfRangeIndexes(t *testing.T) {
	e := newEnv(t)
	e.setCommon(CommonQueueSelect, 2, 1)
	e.setCommon(CommonQueueSelect, 2, MaxQueues)
	e.setCommon(CommonQueueSelect, 4, 0xFFFF0000|1)
	require.Equal(t, uint64(1), e.common(CommonQueueSelect, 2), "selects >= 1024 ignored")

	// A select below 1024 naming no queue is accepted (as QEMU, and how
	// legacy drivers probe); its registers read 0 and ignore writes.
	e.setCommon(CommonQueueSelect, 2, 700)
	require.Equal(t, uint64(700), e.common(CommonQueueSelect, 2))
	require.Equal(t, uint64(700), e.common(CommonQueueNotifyOff, 2))
	for _, off := range []uint64{CommonQueueSize, CommonQueueEnable, CommonQueueDescLo, CommonQueueUsedHi, CommonQueueReset} {
		e.setCommon(off, 2, 1)
		require.Equal(t, uint64(0), e.common(off, 2), "register %#x", off)
	}
	e.setCommon(CommonQueueMSIXVector, 2, 1)
	require.Equal(t, uint64(NoVector), e.common(CommonQueueMSIXVector, 2))
	e.setLegacy(LegacyQueueSel, 2, 700)
	e.setLegacy(LegacyQueuePFN, 4, 0x20)
	require.Equal(t, uint64(0), e.legacyReg(LegacyQueuePFN, 4))

	ds := e.modernUp(bits(virtio.FeatureVersion1))
	// Notifications for queues that do not exist are dropped.
	for _, q := range []uint64{3, 700, 1023} {
		e.barWrite(BARModern, NotifyOffset+NotifyOffMultiplier*q, 2, q)
	}
	e.setLegacy(LegacyQueueNotify, 2, 3)
	e.setLegacy(LegacyQueueNotify, 2, 0xFFFF)
	for i := range ds {
		require.False(t, e.kicked(i))
	}
	// Bad vectors read back 0xFFFF; the queue then interrupts nobody.
	e.setCommon(CommonQueueSelect, 2, 0)
	e.setCommon(CommonQueueMSIXVector, 2, 4)
	require.Equal(t, uint64(NoVector), e.common(CommonQueueMSIXVector, 2))
	require.NoError(t, e.tr.SignalQueue(0))
	require.Empty(t, e.takeMSIs())
	require.False(t, e.needsReset())
	require.True(t, e.dev.active())
}

// Checklist 2: queue_size 0, above the maximum, or not a power of two:
// queue_enable is refused with DEVICE_NEEDS_RESET.
func TestChecklist2_BadQueueSize(t *testing.T) {
	for _, size := range []uint64{0, 512, 100, 0xFFFF} {
		e := newEnv(t)
		require.True(t, e.modernFeatures(bits(virtio.FeatureVersion1)))
		l := layout(0, 256)
		e.setCommon(CommonQueueSelect, 2, 0)
		e.setCommon(CommonQueueSize, 2, size)
		require.Equal(t, size, e.common(CommonQueueSize, 2), "read back as written")
		e.setCommon(CommonQueueDescLo, 4, l.Desc)
		e.setCommon(CommonQueueAvailLo, 4, l.Avail)
		e.setCommon(CommonQueueUsedLo, 4, l.Used)
		e.setCommon(CommonQueueEnable, 2, 1)
		require.True(t, e.needsReset(), "size %d", size)
		require.False(t, e.tr.Queues()[0].Ready())
		require.Equal(t, uint64(0), e.common(CommonQueueEnable, 2))
		// DRIVER_OK with NEEDS_RESET pending does not start the device.
		e.driverOK()
		require.False(t, e.dev.active())
		require.Equal(t, ackDriverFeat|virtio.StatusDriverOK|virtio.StatusDeviceNeedsReset, e.status())
		// Reset recovers.
		e.setCommon(CommonDeviceStatus, 1, 0)
		require.Equal(t, uint8(0), e.status())
		e.modernUp(bits(virtio.FeatureVersion1))
	}
}

// Checklist 3: queue registers written after queue_enable or DRIVER_OK are
// ignored (latched at enable).
func TestChecklist3_QueueRegistersLatched(t *testing.T) {
	e := newEnv(t)
	e.busMaster()
	require.True(t, e.modernFeatures(bits(virtio.FeatureVersion1)))
	d := e.modernQueue(0, 256, 1)
	check := func() {
		t.Helper()
		c := e.tr.Queues()[0].Config()
		require.Equal(t, uint16(256), c.Size)
		require.Equal(t, [3]uint64{d.Desc, d.Avail, d.Used}, [3]uint64{c.Desc, c.Avail, c.Used})
		require.Equal(t, uint64(256), e.common(CommonQueueSize, 2))
		require.Equal(t, d.Desc, e.common(CommonQueueDescLo, 4))
	}
	for _, off := range []uint64{CommonQueueSize, CommonQueueDescLo, CommonQueueDescHi, CommonQueueAvailLo,
		CommonQueueAvailHi, CommonQueueUsedLo, CommonQueueUsedHi} {
		e.setCommon(off, 4, 0x1000)
	}
	check()
	e.setLegacy(LegacyQueuePFN, 4, 0x300) // legacy relocation of an enabled queue
	check()
	e.modernQueue(1, 256, 2)
	e.modernQueue(2, 64, 3)
	e.driverOK()
	e.setCommon(CommonQueueSelect, 2, 0)
	e.setCommon(CommonQueueDescLo, 4, 0x2000)
	e.setCommon(CommonQueueEnable, 2, 1) // enabling an enabled queue: no-op
	check()
	require.False(t, e.needsReset())
	require.True(t, e.dev.active())
}

// Checklist 4: ring addresses outside RAM, misaligned, straddling the end
// of RAM or pointing at MMIO are refused at enable.
func TestChecklist4_RingAddresses(t *testing.T) {
	good := layout(0, 256)
	for name, l := range map[string][3]uint64{
		"desc outside RAM":     {memSize + 0x1000, good.Avail, good.Used},
		"desc misaligned":      {good.Desc + 8, good.Avail, good.Used},
		"avail misaligned":     {good.Desc, good.Avail + 1, good.Used},
		"used misaligned":      {good.Desc, good.Avail, good.Used + 2},
		"used straddles end":   {good.Desc, good.Avail, memSize - 8},
		"avail at the LAPIC":   {good.Desc, 0xFEE00000, good.Used},
		"desc at the BAR":      {0x1_0000_0000, good.Avail, good.Used},
		"desc wraps the space": {0xFFFFFFFF_FFFFF000, good.Avail, good.Used},
	} {
		e := newEnv(t)
		e.busMaster()
		require.True(t, e.modernFeatures(bits(virtio.FeatureVersion1)))
		e.setCommon(CommonQueueSelect, 2, 0)
		e.setCommon(CommonQueueDescLo, 8, l[0])
		e.setCommon(CommonQueueAvailLo, 8, l[1])
		e.setCommon(CommonQueueUsedLo, 8, l[2])
		e.setCommon(CommonQueueEnable, 2, 1)
		require.True(t, e.needsReset(), name)
		require.False(t, e.tr.Queues()[0].Ready(), name)
		e.driverOK()
		require.False(t, e.dev.active(), name)
	}
	// Legacy: a PFN beyond RAM.
	e := newEnv(t)
	e.setLegacy(LegacyStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver))
	e.setLegacy(LegacyQueuePFN, 4, 0xFFFFFFFF)
	require.True(t, e.needsReset())
	require.False(t, e.tr.Queues()[0].Ready())
}

// Checklist 5: status and feature misuse, notifications before DRIVER_OK,
// reset in the middle of I/O, bus mastering cleared during I/O.
func TestChecklist5_StatusMisuse(t *testing.T) {
	t.Run("features after FEATURES_OK", func(t *testing.T) {
		e := newEnv(t)
		f := bits(virtio.FeatureVersion1, fCSUM)
		require.True(t, e.modernFeatures(f))
		e.setCommon(CommonDriverFeatureSelect, 4, 0)
		e.setCommon(CommonDriverFeature, 4, 0xFFFFFFFF)
		require.Equal(t, f&0xFFFFFFFF, e.common(CommonDriverFeature, 4))
		e.setLegacy(LegacyGuestFeatures, 4, 0xFFFF)
		require.Equal(t, f, e.dev.lastAcked())
	})
	t.Run("DRIVER_OK without FEATURES_OK", func(t *testing.T) {
		e := newEnv(t)
		e.busMaster()
		e.setCommon(CommonDeviceStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusDriverOK))
		require.Equal(t, virtio.StatusAcknowledge|virtio.StatusDriver, e.status())
		require.False(t, e.dev.active())
	})
	t.Run("status going backwards", func(t *testing.T) {
		e := newEnv(t)
		e.modernUp(bits(virtio.FeatureVersion1))
		e.setCommon(CommonDeviceStatus, 1, uint64(virtio.StatusAcknowledge))
		require.Equal(t, ackDriverFeat|virtio.StatusDriverOK, e.status())
		require.True(t, e.dev.active())
	})
	t.Run("notifications before DRIVER_OK", func(t *testing.T) {
		e := newEnv(t)
		require.True(t, e.modernFeatures(bits(virtio.FeatureVersion1)))
		e.barWrite(BARModern, NotifyOffset, 2, 0)
		e.setLegacy(LegacyQueueNotify, 2, 1)
		require.True(t, e.kicked(0), "the kick is signalled; the device sees it when it starts")
		require.True(t, e.kicked(1))
		require.False(t, e.dev.active())
		require.False(t, e.needsReset())
	})
	t.Run("reset during I/O", func(t *testing.T) {
		p := newFakePlatform()
		e := newEnv(t, withPlatform(p))
		ds := e.modernUp(bits(virtio.FeatureVersion1))
		_, err := ds[1].AddChain(bufR("x"), bufW(4))
		require.NoError(t, err)
		e.barWrite(BARModern, NotifyOffset+4, 2, 1)
		e.setCommon(CommonDeviceStatus, 1, 0)
		require.False(t, e.dev.active())
		require.Empty(t, p.events())
		require.False(t, e.kicked(1), "stale kicks drained")
		for _, q := range e.tr.Queues() {
			require.False(t, q.Ready())
			require.Zero(t, q.InFlight())
		}
		e.modernUp(bits(virtio.FeatureVersion1))
	})
	t.Run("bus master cleared during I/O", func(t *testing.T) {
		e := newEnv(t)
		ds := e.modernUp(bits(virtio.FeatureVersion1))
		_, err := ds[1].AddChain(bufR("x"), bufW(4))
		require.NoError(t, err)
		e.barWrite(BARModern, NotifyOffset+4, 2, 1)
		e.command(0)
		require.False(t, e.dev.active())
		require.Equal(t, ackDriverFeat, e.status())
		require.NoError(t, e.tr.SignalQueue(1))
		require.Empty(t, e.takeMSIs())
	})
}

func TestQueueEnableWrongValue(t *testing.T) {
	e := newEnv(t)
	e.modernUp(bits(virtio.FeatureVersion1))
	gen := e.common(CommonConfigGeneration, 1)
	e.setCommon(CommonQueueSelect, 2, 0)
	e.setCommon(CommonQueueEnable, 2, 0)
	require.True(t, e.needsReset())
	require.Equal(t, []msiRecord{{0, 0xFEE00000, 0x4000}}, e.takeMSIs(), "config interrupt after DRIVER_OK")
	require.Equal(t, gen+1, e.common(CommonConfigGeneration, 1))
	require.True(t, e.tr.Queues()[0].Ready(), "the queue itself is untouched")

	// Before any status write there is nothing to mark (State rule).
	e2 := newEnv(t)
	e2.setCommon(CommonQueueEnable, 2, 2)
	require.Equal(t, uint8(0), e2.status())
}

func TestActivateFailure(t *testing.T) {
	p := newFakePlatform()
	e := newEnv(t, withPlatform(p))
	e.dev.activateErr = errors.New("backend down")
	e.busMaster()
	require.True(t, e.modernFeatures(bits(virtio.FeatureVersion1)))
	e.modernQueue(0, 256, 0)
	e.driverOK()
	require.True(t, e.needsReset())
	require.False(t, e.tr.Active())
	require.Empty(t, p.events())
}

func TestQueueEnableAfterDriverOKWithoutReset(t *testing.T) {
	fd := newFakeDev()
	e := newEnvDev(t, fd, noResetDev{fd})
	e.busMaster()
	require.True(t, e.modernFeatures(bits(virtio.FeatureVersion1)))
	e.modernQueue(0, 256, 0)
	e.driverOK()
	require.True(t, fd.active())
	e.modernQueue(1, 256, 1)
	require.True(t, e.needsReset())
	require.False(t, e.tr.Queues()[1].Ready())
}

func TestDeviceReportsNeedsReset(t *testing.T) {
	e := newEnv(t)
	e.modernUp(bits(virtio.FeatureVersion1))
	e.dev.irq.NeedsReset(errors.New("bad descriptor"))
	require.True(t, e.needsReset())
	require.Equal(t, []msiRecord{{0, 0xFEE00000, 0x4000}}, e.takeMSIs())
	e.dev.irq.NeedsReset(errors.New("again"))
	require.Empty(t, e.takeMSIs(), "notified once")
}

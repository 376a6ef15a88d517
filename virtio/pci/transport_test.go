package virtiopci

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
)

func TestModernFeatureNegotiation(t *testing.T) {
	e := newEnv(t)
	// Device features: legacy-only bits (GSO, NOTIFY_ON_EMPTY, ANY_LAYOUT,
	// BAD_FEATURE) hidden; VERSION_1 and RING_RESET visible.
	e.setCommon(CommonDeviceFeatureSelect, 4, 0)
	lo := e.common(CommonDeviceFeature, 4)
	e.setCommon(CommonDeviceFeatureSelect, 4, 1)
	hi := e.common(CommonDeviceFeature, 4)
	e.setCommon(CommonDeviceFeatureSelect, 4, 2)
	require.Equal(t, uint64(0), e.common(CommonDeviceFeature, 4), "window 2 is empty")
	require.Equal(t, uint64(2), e.common(CommonDeviceFeatureSelect, 4))
	offer := hi<<32 | lo
	want := fakeFeatures &^ bits(fGSO, virtio.FeatureNotifyOnEmpty, virtio.FeatureAnyLayout)
	require.Equal(t, want, offer)

	// Sub-word reads decode the exact register offset (QEMU): a byte at
	// 0x05 is not a register and reads 0; a word at 0x04 is the low half.
	e.setCommon(CommonDeviceFeatureSelect, 4, 0)
	require.Equal(t, lo&0xFFFF, e.common(CommonDeviceFeature, 2))
	require.Equal(t, uint64(0), e.common(CommonDeviceFeature+1, 1))

	f := bits(fCSUM, fMAC, virtio.FeatureVersion1, virtio.FeatureEventIdx)
	require.True(t, e.modernFeatures(f))
	require.Equal(t, f, e.dev.lastAcked())
	e.setCommon(CommonDriverFeatureSelect, 4, 0)
	require.Equal(t, f&0xFFFFFFFF, e.common(CommonDriverFeature, 4))
	e.setCommon(CommonDriverFeatureSelect, 4, 1)
	require.Equal(t, f>>32, e.common(CommonDriverFeature, 4))
	for _, q := range e.tr.Queues() {
		require.True(t, q.Features().EventIdx)
	}

	// Without VERSION_1, or with a feature not offered, FEATURES_OK does
	// not stick.
	require.False(t, e.modernFeatures(bits(fCSUM)))
	require.False(t, e.modernFeatures(bits(fGSO, virtio.FeatureVersion1)))
	require.False(t, e.needsReset())
}

func TestLegacyFeatureNegotiation(t *testing.T) {
	e := newEnv(t)
	require.Equal(t, uint64(0), e.cfgRead(pci.RegCommand, 2)&pci.CommandBusMaster)
	host := e.legacyReg(LegacyHostFeatures, 4)
	require.Equal(t, (fakeFeatures|bits(virtio.FeatureBadFeature))&0xFFFFFFFF, host, "legacy bits included")
	e.setLegacy(LegacyStatus, 1, uint64(virtio.StatusAcknowledge))
	e.setLegacy(LegacyStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver))
	require.NotZero(t, e.cfgRead(pci.RegCommand, 2)&pci.CommandBusMaster, "ACK|DRIVER forces bus mastering")

	e.setLegacy(LegacyGuestFeatures, 4, bits(fCSUM, fGSO, 31))
	require.Equal(t, bits(fCSUM, fGSO), e.legacyReg(LegacyGuestFeatures, 4), "bits not offered dropped")
	// BAD_FEATURE: QEMU substitutes the device's bad-features set.
	e.setLegacy(LegacyGuestFeatures, 4, bits(virtio.FeatureBadFeature, fGuestCSUM))
	require.Equal(t, netBadFeatures, e.legacyReg(LegacyGuestFeatures, 4))

	// Byte and word accesses: exact offsets only; others read all-ones.
	require.Equal(t, host&0xFF, e.legacyReg(LegacyHostFeatures, 1))
	require.Equal(t, uint64(0xFF), e.legacyReg(LegacyHostFeatures+1, 1))
	require.Equal(t, uint64(0xFFFF), e.legacyReg(LegacyHostFeatures+2, 2))

	ds := e.legacyUp(uint32(bits(fCSUM, fMAC, virtio.FeatureEventIdx)))
	require.Len(t, ds, 3)
	require.Equal(t, bits(fCSUM, fMAC, virtio.FeatureEventIdx), e.dev.lastAcked())
	require.True(t, e.tr.State().Legacy())
	require.True(t, e.tr.Queues()[0].Features().EventIdx)
	require.Equal(t, uint64(0), e.legacyReg(LegacyGuestFeatures, 4)>>32)
}

func TestDeviceConfigWindows(t *testing.T) {
	e := newEnv(t)
	// Modern: 8 bytes, then all-ones per access that does not fit.
	require.Equal(t, uint64(0x12005452), e.barRead(BARModern, DeviceCfgOffset, 4))
	require.Equal(t, uint64(0x0001), e.barRead(BARModern, DeviceCfgOffset+6, 2), "status: link up")
	require.Equal(t, uint64(0xFFFFFFFF), e.barRead(BARModern, DeviceCfgOffset+8, 4))
	require.Equal(t, uint64(0xFFFFFFFF), e.barRead(BARModern, DeviceCfgOffset+0xFFC, 4))
	// 8-byte read: two 4-byte pieces.
	require.Equal(t, uint64(0x000156341200_5452), e.barRead(BARModern, DeviceCfgOffset, 8))
	// Legacy: config at 20 while MSI-X is disabled, at 24 when enabled.
	require.Equal(t, uint64(0x52), e.legacyReg(LegacyConfigNoMSIX, 1))
	require.Equal(t, uint64(0x1200), e.legacyReg(LegacyConfigNoMSIX+2, 2))
	require.Equal(t, uint64(0xFFFF), e.legacyReg(LegacyConfigNoMSIX+8, 2), "past the config")
	e.msixControl(true, false)
	require.Equal(t, uint64(NoVector), e.legacyReg(LegacyMSIConfigVector, 2), "vector registers appear")
	require.Equal(t, uint64(0x12005452), e.legacyReg(LegacyConfigMSIX, 4))
	e.setLegacy(LegacyConfigMSIX+5, 1, 0x99)
	require.Equal(t, byte(0x99), e.dev.config[5], "legacy MAC write")
	e.msixControl(false, false)
	require.Equal(t, uint64(0x99), e.legacyReg(LegacyConfigNoMSIX+5, 1))
	writes := e.dev.cfgWrites
	e.barWrite(BARModern, DeviceCfgOffset+8, 4, 0xFFFF) // past the end: dropped
	e.barWrite(BARModern, DeviceCfgOffset+4, 8, 0)      // 4@4 forwarded, 4@8 dropped
	require.Equal(t, writes+1, e.dev.cfgWrites)
	require.Equal(t, []byte{0, 0, 1, 0}, e.dev.config[4:8], "MAC bytes 4-5 cleared")
}

func TestModernQueueSetupAndMSIX(t *testing.T) {
	e := newEnv(t)
	require.Equal(t, uint64(3), e.common(CommonNumQueues, 2))
	e.setCommon(CommonQueueSelect, 2, 2)
	require.Equal(t, uint64(64), e.common(CommonQueueSize, 2), "max size before the driver writes it")
	require.Equal(t, uint64(2), e.common(CommonQueueNotifyOff, 2))
	require.Equal(t, uint64(NoVector), e.common(CommonQueueMSIXVector, 2))

	ds := e.modernUp(bits(virtio.FeatureVersion1))
	require.Equal(t, 1, e.dev.activations)
	for i, q := range e.tr.Queues() {
		require.True(t, q.Ready(), "queue %d", i)
		e.setCommon(CommonQueueSelect, 2, uint64(i))
		require.Equal(t, uint64(1), e.common(CommonQueueEnable, 2))
		require.Equal(t, uint64(i+1), e.common(CommonQueueMSIXVector, 2))
		c := q.Config()
		require.Equal(t, ds[i].Desc, uint64(e.common(CommonQueueDescHi, 4)<<32|e.common(CommonQueueDescLo, 4)))
		require.Equal(t, ds[i].Avail, c.Avail)
		require.Equal(t, ds[i].Used, c.Used)
		require.Equal(t, uint16(i+1), c.Vector)
	}
	require.Equal(t, e.tr.Kicks(), e.dev.kicks)

	// The driver posts a chain on queue 1 and notifies through the notify
	// region (2-byte write of the queue index, like Linux).
	head, err := ds[1].AddChain(queuetest.R([]byte("hello")), queuetest.W(16))
	require.NoError(t, err)
	e.barWrite(BARModern, NotifyOffset+NotifyOffMultiplier*1, 2, 1)
	require.True(t, e.kicked(1))
	require.False(t, e.kicked(0))
	e.dev.echo(t, 1)
	used := ds[1].Completed()
	require.Equal(t, []queuetest.UsedElem{{ID: uint32(head), Len: 5}}, used)
	require.Equal(t, []byte("olleh"), ds[1].Written(head, 5))
	require.Equal(t, []msiRecord{{1 + 1, 0xFEE00000, 0x4000 + 2}}, e.takeMSIs(), "queue 1 uses vector 2")
	require.Equal(t, uint64(ISRQueue), e.barRead(BARModern, ISROffset, 1), "ISR set with MSI-X too")
	require.Equal(t, uint64(0), e.barRead(BARModern, ISROffset+0x10, 4), "read cleared it")

	// Config change: vector 0, generation bumped.
	gen := e.common(CommonConfigGeneration, 1)
	require.NoError(t, e.tr.SignalConfig())
	require.Equal(t, []msiRecord{{0, 0xFEE00000, 0x4000}}, e.takeMSIs())
	require.Equal(t, gen+1, e.common(CommonConfigGeneration, 1))
	require.Equal(t, uint64(ISRQueue|ISRConfig), e.barRead(BARModern, ISROffset+3, 1))

	// Reads of the notify region return 0; 8-byte notify writes are two
	// notifications.
	require.Equal(t, uint64(0), e.barRead(BARModern, NotifyOffset, 4))
	e.barWrite(BARModern, NotifyOffset, 8, 0)
	require.True(t, e.kicked(0))
	require.True(t, e.kicked(1))
	e.barWrite(BARModern, NotifyOffset+4*3, 2, 3) // no queue 3
	e.barWrite(BARModern, NotifyOffset+0xFFC, 4, 0)
	for i := range 3 {
		require.False(t, e.kicked(i))
	}
	require.False(t, e.needsReset())
}

func TestLegacyQueueSetupPFNAndINTx(t *testing.T) {
	e := newEnv(t)
	e.setLegacy(LegacyQueueSel, 2, 0)
	require.Equal(t, uint64(256), e.legacyReg(LegacyQueueNum, 2))
	e.setLegacy(LegacyQueueSel, 2, 3)
	require.Equal(t, uint64(0), e.legacyReg(LegacyQueueNum, 2), "no queue 3: size 0 (how legacy drivers probe)")
	require.Equal(t, uint64(0), e.legacyReg(LegacyQueuePFN, 4))
	e.setLegacy(LegacyQueueSel, 2, 1024)
	require.Equal(t, uint64(3), e.legacyReg(LegacyQueueSel, 2), "selects >= 1024 ignored")

	ds := e.legacyUp(0)
	for i, q := range e.tr.Queues() {
		c := q.Config()
		desc, avail, used := queue.LegacyLayout(uint32(c.Desc>>12), c.Size)
		require.Equal(t, [3]uint64{ds[i].Desc, ds[i].Avail, ds[i].Used}, [3]uint64{desc, avail, used})
		require.Equal(t, [3]uint64{desc, avail, used}, [3]uint64{c.Desc, c.Avail, c.Used})
		e.setLegacy(LegacyQueueSel, 2, uint64(i))
		require.Equal(t, c.Desc>>12, e.legacyReg(LegacyQueuePFN, 4))
	}

	head, err := ds[0].AddChain(queuetest.R([]byte("abc")), queuetest.W(8))
	require.NoError(t, err)
	e.setLegacy(LegacyQueueNotify, 2, 0)
	require.True(t, e.kicked(0))
	e.setLegacy(LegacyQueueNotify, 2, 7) // out of range
	e.setLegacy(LegacyQueueNotify, 4, 0x10000)
	require.False(t, e.kicked(0))

	require.False(t, e.intxLevel(testGSI))
	e.dev.echo(t, 0)
	require.Equal(t, []byte("cba"), ds[0].Written(head, 3))
	require.True(t, e.intxLevel(testGSI), "INTx on the Interrupt Line GSI")
	require.NotZero(t, e.cfgRead(pci.RegStatus, 2)&pci.StatusINTx)
	require.Empty(t, e.takeMSIs())
	require.Equal(t, uint64(ISRQueue), e.legacyReg(LegacyISR, 1))
	require.False(t, e.intxLevel(testGSI), "ISR read deasserts")
	require.Zero(t, e.cfgRead(pci.RegStatus, 2)&pci.StatusINTx)
	require.Equal(t, uint64(0), e.legacyReg(LegacyISR, 1))

	// Without MSI-X enabled, offsets 0x14-0x17 are device configuration.
	require.Equal(t, uint64(0x12005452), e.legacyReg(LegacyMSIConfigVector, 4))
	require.False(t, e.needsReset())
}

func TestLegacyPFNZeroResets(t *testing.T) {
	e := newEnv(t)
	e.legacyUp(0)
	resets := e.dev.resets
	e.setLegacy(LegacyQueueSel, 2, 2)
	e.setLegacy(LegacyQueuePFN, 4, 0)
	require.Equal(t, uint8(0), e.status())
	require.Equal(t, resets+1, e.dev.resets)
	require.False(t, e.dev.active())
	require.Equal(t, uint64(0), e.legacyReg(LegacyQueueSel, 2))
	for _, q := range e.tr.Queues() {
		require.False(t, q.Ready())
	}
}

func TestStatusResetRestoresDefaults(t *testing.T) {
	e := newEnv(t)
	e.modernUp(bits(virtio.FeatureVersion1))
	e.setCommon(CommonQueueSelect, 2, 1)
	resets := e.dev.resets
	e.setCommon(CommonDeviceStatus, 1, 0)
	require.Equal(t, uint8(0), e.status())
	require.Equal(t, resets+1, e.dev.resets)
	require.Equal(t, uint64(NoVector), e.common(CommonMSIXConfig, 2))
	require.Equal(t, uint64(0), e.common(CommonQueueSelect, 2))
	for i, q := range e.tr.Queues() {
		require.False(t, q.Ready())
		require.Equal(t, q.MaxSize(), q.Config().Size)
		e.setCommon(CommonQueueSelect, 2, uint64(i))
		require.Equal(t, uint64(NoVector), e.common(CommonQueueMSIXVector, 2))
		require.Equal(t, uint64(0), e.common(CommonQueueEnable, 2))
	}
	// The MSI-X table and enable bit survive a virtio reset (QEMU).
	require.Equal(t, uint64(0xFEE00000), e.barRead(BARMSIX, 0, 4))
	require.NotZero(t, e.cfgRead(e.tr.msixCap+2, 2)&0x8000)
	require.NoError(t, e.tr.SignalConfig(), "no DRIVER_OK: nothing sent")
	require.Empty(t, e.takeMSIs())
}

package virtiopci

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
)

func TestMSIXTableInitialState(t *testing.T) {
	e := newEnv(t)
	for v := 0; v < 4; v++ {
		for dw := uint64(0); dw < 3; dw++ {
			require.Equal(t, uint64(0), e.barRead(BARMSIX, uint64(v)*16+4*dw, 4))
		}
		require.Equal(t, uint64(1), e.barRead(BARMSIX, uint64(v)*16+12, 4), "vector %d starts masked", v)
	}
	require.Equal(t, uint64(0), e.barRead(BARMSIX, MSIXPBAOffset, 4))
	require.Equal(t, uint64(0), e.barRead(BARMSIX, 4*16, 4), "past the table")
	require.Equal(t, uint64(0), e.barRead(BARMSIX, 0xFFC, 4), "past the PBA")
}

func TestMSIXAccessRules(t *testing.T) {
	e := newEnv(t)
	e.barWrite(BARMSIX, 0, 4, 0xFEE01000)
	// Only aligned dwords are valid: narrower pieces read 0 and are dropped.
	require.Equal(t, uint64(0), e.barRead(BARMSIX, 0, 2))
	require.Equal(t, uint64(0), e.barRead(BARMSIX, 1, 1))
	e.barWrite(BARMSIX, 0, 2, 0xFFFF)
	e.barWrite(BARMSIX, 2, 1, 0xFF)
	require.Equal(t, uint64(0xFEE01000), e.barRead(BARMSIX, 0, 4))
	// 8-byte accesses are two dwords.
	e.barWrite(BARMSIX, 16, 8, 0x00000001_FEE02000)
	require.Equal(t, uint64(0x00000001_FEE02000), e.barRead(BARMSIX, 16, 8))
	// The PBA is read-only; writes past the table go nowhere.
	e.barWrite(BARMSIX, MSIXPBAOffset, 4, 0xF)
	e.barWrite(BARMSIX, 0x100, 4, 0xF)
	require.Equal(t, uint64(0), e.barRead(BARMSIX, MSIXPBAOffset, 4))
	require.Equal(t, uint64(0), e.barRead(BARMSIX, 0x100, 4))
	// Vector control is stored as written (QEMU); bit 0 is the mask.
	e.barWrite(BARMSIX, 12, 4, 0xFFFFFFFE)
	require.Equal(t, uint64(0xFFFFFFFE), e.barRead(BARMSIX, 12, 4))
}

func TestMSIXVectorAssignment(t *testing.T) {
	e := newEnv(t)
	e.setCommon(CommonMSIXConfig, 2, 3)
	require.Equal(t, uint64(3), e.common(CommonMSIXConfig, 2))
	e.setCommon(CommonMSIXConfig, 2, 4)
	require.Equal(t, uint64(NoVector), e.common(CommonMSIXConfig, 2), "vectors >= table size read back 0xFFFF")
	e.setCommon(CommonQueueSelect, 2, 1)
	e.setCommon(CommonQueueMSIXVector, 2, 0x7FF)
	require.Equal(t, uint64(NoVector), e.common(CommonQueueMSIXVector, 2))
	e.setCommon(CommonQueueMSIXVector, 2, 2)
	require.Equal(t, uint64(2), e.common(CommonQueueMSIXVector, 2))
	require.Equal(t, uint16(2), e.tr.Queues()[1].Config().Vector)
	// Legacy vector registers, visible while MSI-X is enabled.
	e.msixControl(true, false)
	e.setLegacy(LegacyQueueSel, 2, 0)
	e.setLegacy(LegacyMSIQueueVector, 2, 1)
	require.Equal(t, uint64(1), e.legacyReg(LegacyMSIQueueVector, 2))
	e.setLegacy(LegacyMSIConfigVector, 2, 9)
	require.Equal(t, uint64(NoVector), e.legacyReg(LegacyMSIConfigVector, 2))
}

func TestMSIXMaskingAndPending(t *testing.T) {
	e := newEnv(t)
	ds := e.modernUp(bits(virtio.FeatureVersion1))
	_ = ds
	// Mask vector 2 (queue 1): the interrupt becomes pending.
	e.barWrite(BARMSIX, 2*16+12, 4, 1)
	require.NoError(t, e.tr.SignalQueue(1))
	require.Empty(t, e.takeMSIs())
	require.Equal(t, uint64(1<<2), e.barRead(BARMSIX, MSIXPBAOffset, 4))
	require.NoError(t, e.tr.SignalQueue(1))
	require.Equal(t, uint64(1<<2), e.barRead(BARMSIX, MSIXPBAOffset, 4))
	// Reprogram while masked, then unmask: one delivery with the new
	// message, pending cleared.
	e.barWrite(BARMSIX, 2*16+8, 4, 0x4077)
	e.barWrite(BARMSIX, 2*16+12, 4, 0)
	require.Equal(t, []msiRecord{{2, 0xFEE00000, 0x4077}}, e.takeMSIs())
	require.Equal(t, uint64(0), e.barRead(BARMSIX, MSIXPBAOffset, 4))

	// Function mask: every vector pends; clearing it delivers them.
	e.msixControl(true, true)
	require.NotZero(t, e.cfgRead(e.tr.msixCap+2, 2)&0x4000)
	require.NoError(t, e.tr.SignalQueue(0))
	require.NoError(t, e.tr.SignalConfig())
	require.Empty(t, e.takeMSIs())
	require.Equal(t, uint64(1<<0|1<<1), e.barRead(BARMSIX, MSIXPBAOffset, 4))
	e.msixControl(true, false)
	require.ElementsMatch(t, []msiRecord{{0, 0xFEE00000, 0x4000}, {1, 0xFEE00000, 0x4001}}, e.takeMSIs())
	require.Equal(t, uint64(0), e.barRead(BARMSIX, MSIXPBAOffset, 4))

	// A vector nobody uses stays silent and never pends.
	e.setCommon(CommonQueueSelect, 2, 2)
	e.setCommon(CommonQueueMSIXVector, 2, uint64(NoVector))
	require.NoError(t, e.tr.SignalQueue(2))
	require.Empty(t, e.takeMSIs())
	// Unassigning a vector clears its pending bit (msix_vector_unuse).
	e.barWrite(BARMSIX, 1*16+12, 4, 1)
	require.NoError(t, e.tr.SignalQueue(0))
	require.Equal(t, uint64(1<<1), e.barRead(BARMSIX, MSIXPBAOffset, 4))
	e.setCommon(CommonQueueSelect, 2, 0)
	e.setCommon(CommonQueueMSIXVector, 2, 3)
	require.Equal(t, uint64(0), e.barRead(BARMSIX, MSIXPBAOffset, 4))
	require.NoError(t, e.tr.SignalQueue(0))
	require.Equal(t, []msiRecord{{3, 0xFEE00000, 0x4003}}, e.takeMSIs())
	require.Error(t, e.tr.SignalQueue(3))
	require.Error(t, e.tr.SignalQueue(-1))
}

func TestMSIXDisableSwitchesToINTx(t *testing.T) {
	e := newEnv(t)
	e.modernUp(bits(virtio.FeatureVersion1))
	require.NoError(t, e.tr.SignalQueue(0))
	require.Len(t, e.takeMSIs(), 1)
	require.False(t, e.intxLevel(testGSI))
	e.msixControl(false, false)
	require.NoError(t, e.tr.SignalQueue(0))
	require.Empty(t, e.takeMSIs())
	require.True(t, e.intxLevel(testGSI), "INTx while MSI-X is disabled")
	// Enabling MSI-X deasserts INTx (the ISR keeps its bits).
	e.msixControl(true, false)
	require.False(t, e.intxLevel(testGSI))
	require.Equal(t, uint64(ISRQueue), e.barRead(BARModern, ISROffset, 1))
}

func TestINTxLine(t *testing.T) {
	p := newFakePlatform()
	e := newEnv(t, withPlatform(p), vectors(0))
	e.busMaster()
	require.True(t, e.modernFeatures(bits(virtio.FeatureVersion1)))
	for i, n := range e.dev.sizes {
		e.modernQueue(i, n, NoVector)
	}
	e.driverOK()
	require.NoError(t, e.tr.SignalQueue(2))
	require.True(t, p.level(testGSI))
	require.NotZero(t, e.cfgRead(pci.RegStatus, 2)&pci.StatusINTx)
	// INTx disable: line low, status bit still set; re-enable asserts.
	e.command(uint16(e.cfgRead(pci.RegCommand, 2) | pci.CommandINTxDisable))
	require.False(t, p.level(testGSI))
	require.NotZero(t, e.cfgRead(pci.RegStatus, 2)&pci.StatusINTx)
	e.cfgWrite(pci.RegCommand+1, 1, 0) // byte write of the high half clears INTx disable
	require.True(t, p.level(testGSI))
	// Rewriting Interrupt Line moves the asserted line.
	e.cfgWrite(pci.RegInterruptLine, 1, 10)
	require.False(t, p.level(testGSI))
	require.True(t, p.level(10))
	e.cfgWrite(pci.RegInterruptLine, 1, 0xFF) // "unknown": not connected
	require.False(t, p.level(10))
	e.cfgWrite(pci.RegInterruptLine, 1, testGSI)
	require.True(t, p.level(testGSI))
	// Reading the ISR deasserts; a config change asserts again (ISR 3).
	require.Equal(t, uint64(ISRQueue), e.barRead(BARModern, ISROffset, 4))
	require.False(t, p.level(testGSI))
	require.NoError(t, e.tr.SignalConfig())
	require.True(t, p.level(testGSI))
	require.Equal(t, uint64(ISRQueue|ISRConfig), e.barRead(BARModern, ISROffset, 1))
	// A device reset deasserts.
	require.NoError(t, e.tr.SignalQueue(0))
	require.True(t, p.level(testGSI))
	e.setCommon(CommonDeviceStatus, 1, 0)
	require.False(t, p.level(testGSI))
	require.Equal(t, uint64(0), e.barRead(BARModern, ISROffset, 1))
}

func TestNoInterruptsWithoutBusMaster(t *testing.T) {
	e := newEnv(t)
	e.modernUp(bits(virtio.FeatureVersion1))
	e.command(pci.CommandIO | pci.CommandMemory) // Bus Master off
	require.NoError(t, e.tr.SignalQueue(0))
	require.Empty(t, e.takeMSIs())
	require.Equal(t, uint64(0), e.barRead(BARMSIX, MSIXPBAOffset, 4), "not even pending")
	e.msixControl(false, false)
	require.NoError(t, e.tr.SignalQueue(0))
	require.False(t, e.intxLevel(testGSI))
	require.Equal(t, uint64(ISRQueue), e.barRead(BARModern, ISROffset, 1), "the ISR is still set")
}

// With a Platform, each vector is an irqfd on a GSI whose MSI route
// follows the table entry.
func TestMSIXThroughIRQFD(t *testing.T) {
	p := newFakePlatform()
	e := newEnv(t, withPlatform(p))
	gsis := append([]uint32(nil), e.tr.irq.gsis...)
	require.Len(t, gsis, 4)
	require.Len(t, p.irqfds, 4)
	for _, g := range gsis {
		require.Equal(t, msiMessage{}, p.routes[g])
	}
	e.modernUp(bits(virtio.FeatureVersion1))
	for v, g := range gsis {
		require.Equal(t, msiMessage{0xFEE00000, uint32(0x4000 + v)}, p.routes[g], "route follows entry %d", v)
	}
	require.NoError(t, e.tr.SignalQueue(1))
	require.Equal(t, uint64(1), p.fired(t, gsis[2]))
	require.Equal(t, uint64(0), p.fired(t, gsis[1]))

	// Rewriting an unmasked entry updates the route at once.
	e.barWrite(BARMSIX, 2*16+8, 4, 0x4055)
	require.Equal(t, msiMessage{0xFEE00000, 0x4055}, p.routes[gsis[2]])
	e.barWrite(BARMSIX, 2*16+4, 4, 0x1)
	require.Equal(t, msiMessage{0x1_FEE00000, 0x4055}, p.routes[gsis[2]])
	// Masked: pending, no eventfd write; unmask fires it.
	e.barWrite(BARMSIX, 2*16+12, 4, 1)
	require.NoError(t, e.tr.SignalQueue(1))
	require.Equal(t, uint64(0), p.fired(t, gsis[2]))
	e.barWrite(BARMSIX, 2*16+12, 4, 0)
	require.Equal(t, uint64(1), p.fired(t, gsis[2]))

	require.NoError(t, e.tr.Close())
	require.Empty(t, p.irqfds)
	require.Empty(t, p.routes)
	require.Error(t, e.tr.SignalQueue(1), "closed")
}

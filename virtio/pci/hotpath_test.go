package virtiopci

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio"
)

// Interrupt delivery and userspace notifications allocate nothing: MSI-X
// through the irqfd eventfd, through the OnMSI callback, INTx, and a
// notify write reaching the BAR handler.
func TestHotPathsAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	p := newFakePlatform()
	e := newEnv(t, withPlatform(p))
	e.modernUp(bits(virtio.FeatureVersion1))
	gsi := e.tr.irq.gsis[2]
	require.Zero(t, testing.AllocsPerRun(1000, func() { _ = e.tr.SignalQueue(1) }), "MSI-X via irqfd")
	require.NotZero(t, p.fired(t, gsi))
	require.Zero(t, testing.AllocsPerRun(1000, func() { _ = e.tr.SignalConfig() }))

	h := e.tr.BARs()[BARModern].Handler
	buf := []byte{1, 0}
	require.Zero(t, testing.AllocsPerRun(1000, func() { h.Write(NotifyOffset+4, buf) }), "userspace notify")
	lh := e.tr.BARs()[BARLegacy].Handler
	require.Zero(t, testing.AllocsPerRun(1000, func() { lh.Write(LegacyQueueNotify, buf) }), "legacy notify")

	e2 := newEnv(t)
	e2.modernUp(bits(virtio.FeatureVersion1))
	e2.msis = make([]msiRecord, 0, 4096)
	require.Zero(t, testing.AllocsPerRun(1000, func() { _ = e2.tr.SignalQueue(0) }), "MSI-X via callback")
	e2.msixControl(false, false)
	isr := make([]byte, 1)
	ih := e2.tr.BARs()[BARModern].Handler
	require.Zero(t, testing.AllocsPerRun(1000, func() {
		_ = e2.tr.SignalQueue(0)
		ih.Read(ISROffset, isr)
	}), "INTx assert and ISR read")
}

func BenchmarkSignalQueueIRQFD(b *testing.B) {
	e := newEnv(b, withPlatform(newFakePlatform()))
	e.modernUp(bits(virtio.FeatureVersion1))
	b.ReportAllocs()
	for b.Loop() {
		_ = e.tr.SignalQueue(1)
	}
}

func BenchmarkUserspaceNotify(b *testing.B) {
	e := newEnv(b)
	e.modernUp(bits(virtio.FeatureVersion1))
	h := e.tr.BARs()[BARModern].Handler
	buf := []byte{1, 0}
	b.ReportAllocs()
	for b.Loop() {
		h.Write(NotifyOffset+4, buf)
	}
}

// Device goroutines signal while the vCPU side reprograms MSI-X, moves
// vectors, masks, toggles INTx and resets: no race, no deadlock, state
// stays coherent (run with -race).
func TestConcurrentSignalling(t *testing.T) {
	p := newFakePlatform()
	e := newEnv(t, withPlatform(p))
	e.modernUp(bits(virtio.FeatureVersion1))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(q int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = e.tr.SignalQueue(q)
				_ = e.tr.SignalConfig()
				if q == 2 {
					e.tr.NeedsReset(errFake)
				}
			}
		}(g)
	}
	for i := 0; i < 200; i++ {
		v := uint64(i % 5)
		e.barWrite(BARMSIX, v%4*16+12, 4, uint64(i&1))
		e.setCommon(CommonQueueSelect, 2, uint64(i%3))
		e.setCommon(CommonQueueMSIXVector, 2, v)
		e.msixControl(i%7 != 0, i%11 == 0)
		_ = e.barRead(BARModern, ISROffset, 1)
		_ = e.barRead(BARMSIX, MSIXPBAOffset, 4)
		if i%50 == 49 {
			e.setCommon(CommonDeviceStatus, 1, 0)
			e.bringUp(bits(virtio.FeatureVersion1)) // may end in NEEDS_RESET: the workers call NeedsReset
		}
	}
	close(stop)
	wg.Wait()
	checkInvariants(t, e.tr, p, e.dev)
}

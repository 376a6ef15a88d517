package virtiopci

import (
	"fmt"

	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/queue"
)

// legacyBAR serves BAR 0, the legacy register block (QEMU's
// virtio_pci_config_ops).
type legacyBAR struct{ t *Transport }

func (b legacyBAR) Read(off uint64, data []byte) {
	t := b.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < len(data); {
		n := pieceSize(off+uint64(i), len(data)-i)
		putLE(data[i:i+n], t.legacyReadLocked(off+uint64(i), n))
		i += n
	}
}

func (b legacyBAR) Write(off uint64, data []byte) {
	t := b.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < len(data); {
		n := pieceSize(off+uint64(i), len(data)-i)
		t.legacyWriteLocked(off+uint64(i), n, getLE(data[i:i+n]))
		i += n
	}
}

// legacyConfigOffset is where the device configuration starts in BAR 0.
func (t *Transport) legacyConfigOffset() uint64 {
	if t.irq.msixEnabled() {
		return LegacyConfigMSIX
	}
	return LegacyConfigNoMSIX
}

// legacyReadLocked reads one piece of n bytes at off. Registers are
// decoded by their exact offset; the value is truncated to the piece.
func (t *Transport) legacyReadLocked(off uint64, n int) uint32 {
	if c := t.legacyConfigOffset(); off >= c {
		return t.configReadLocked(off-c, n)
	}
	switch off {
	case LegacyHostFeatures:
		return t.state.LegacyHostFeatures()
	case LegacyGuestFeatures:
		return t.state.LegacyGuestFeatures()
	case LegacyQueuePFN:
		if i, ok := t.selected(); ok {
			return uint32(t.queues[i].Config().Desc >> LegacyPFNShift)
		}
		return 0
	case LegacyQueueNum:
		if i, ok := t.selected(); ok {
			return uint32(t.queues[i].Config().Size)
		}
		return 0
	case LegacyQueueSel:
		return uint32(t.queueSel)
	case LegacyStatus:
		return uint32(t.state.Status())
	case LegacyISR:
		return uint32(t.irq.readISR())
	case LegacyMSIConfigVector:
		return uint32(t.irq.configVectorValue())
	case LegacyMSIQueueVector:
		if i, ok := t.selected(); ok {
			return uint32(t.irq.queueVector(i))
		}
		return uint32(NoVector)
	}
	return 0xFFFFFFFF
}

// legacyWriteLocked writes one piece; val holds its n bytes.
func (t *Transport) legacyWriteLocked(off uint64, n int, val uint32) {
	if c := t.legacyConfigOffset(); off >= c {
		t.configWriteLocked(off-c, n, val)
		return
	}
	switch off {
	case LegacyGuestFeatures:
		// "Guest does not negotiate properly? We have to assume nothing."
		if val&uint32(virtio.Bit(virtio.FeatureBadFeature)) != 0 {
			val = t.badFeatures
		}
		t.state.SetLegacyGuestFeatures(val)
	case LegacyQueuePFN:
		if val == 0 {
			t.state.Reset()
			t.resetLocked()
			return
		}
		t.setPFNLocked(val)
	case LegacyQueueSel:
		if val < MaxQueues {
			t.queueSel = uint16(val)
		}
	case LegacyQueueNotify:
		if val < MaxQueues {
			t.notify(val)
		}
	case LegacyStatus:
		t.writeStatusLocked(uint8(val), true)
		// Linux before 2.6.34 drives the device without setting Bus
		// Master; QEMU sets it for them.
		if val == uint32(virtio.StatusAcknowledge|virtio.StatusDriver) {
			t.forceBusMasterLocked()
		}
	case LegacyMSIConfigVector:
		t.irq.setConfigVector(uint16(val))
	case LegacyMSIQueueVector:
		if i, ok := t.selected(); ok {
			t.irq.setQueueVector(i, uint16(val))
		}
	}
}

// setPFNLocked places the selected queue's rings at pfn<<12 in the legacy
// layout (used ring 4096-aligned) and enables it.
func (t *Transport) setPFNLocked(pfn uint32) {
	i, ok := t.selected()
	if !ok {
		return
	}
	q := t.queues[i]
	if q.Ready() {
		t.logGuest("QUEUE_PFN of an enabled queue ignored", fmt.Errorf("queue %d", i))
		return
	}
	desc, avail, used := queue.LegacyLayout(pfn, q.Config().Size)
	q.SetDescAddr(desc)
	q.SetAvailAddr(avail)
	q.SetUsedAddr(used)
	t.enableQueueLocked(i)
}

// configReadLocked reads n bytes of device configuration at off; accesses
// that do not fit the device's configuration read all-ones (QEMU's
// virtio_config_read*).
func (t *Transport) configReadLocked(off uint64, n int) uint32 {
	if !t.configFits(off, n) {
		return 0xFFFFFFFF
	}
	b := t.scratch[:n]
	t.dev.ReadConfig(off, b)
	return getLE(b)
}

// configWriteLocked writes n bytes of device configuration; accesses that
// do not fit are dropped.
func (t *Transport) configWriteLocked(off uint64, n int, val uint32) {
	if !t.configFits(off, n) {
		return
	}
	b := t.scratch[:n]
	putLE(b, val)
	t.dev.WriteConfig(off, b)
}

// configFits reports whether n bytes at off lie inside the device
// configuration.
func (t *Transport) configFits(off uint64, n int) bool {
	size := uint64(t.cfgSize)
	return n >= 0 && off <= size && uint64(n) <= size-off
}

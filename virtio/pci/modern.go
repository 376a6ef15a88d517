package virtiopci

import "fmt"

// modernBAR serves BAR 4: common configuration, ISR, device configuration
// and notifications, 4 KiB each.
type modernBAR struct{ t *Transport }

func (b modernBAR) Read(off uint64, data []byte) {
	t := b.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < len(data); {
		n := pieceSize(off+uint64(i), len(data)-i)
		putLE(data[i:i+n], t.modernReadLocked(off+uint64(i), n))
		i += n
	}
}

func (b modernBAR) Write(off uint64, data []byte) {
	t := b.t
	// Notifications need no lock: the kicks never change.
	if off >= NotifyOffset && off < NotifyOffset+ModernRegionSize && uint64(len(data)) <= NotifyOffset+ModernRegionSize-off {
		for i := 0; i < len(data); {
			n := pieceSize(off+uint64(i), len(data)-i)
			t.notify(uint32((off + uint64(i) - NotifyOffset) / NotifyOffMultiplier))
			i += n
		}
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < len(data); {
		n := pieceSize(off+uint64(i), len(data)-i)
		t.modernWriteLocked(off+uint64(i), n, getLE(data[i:i+n]))
		i += n
	}
}

// modernReadLocked reads one aligned piece of at most 4 bytes.
func (t *Transport) modernReadLocked(off uint64, n int) uint32 {
	switch {
	case off < ISROffset:
		return t.commonReadLocked(off)
	case off < DeviceCfgOffset:
		// Any read in the ISR region returns and clears the ISR.
		return uint32(t.irq.readISR())
	case off < NotifyOffset:
		return t.configReadLocked(off-DeviceCfgOffset, n)
	}
	return 0 // notify region, and beyond
}

// modernWriteLocked writes one aligned piece of at most 4 bytes.
func (t *Transport) modernWriteLocked(off uint64, n int, val uint32) {
	switch {
	case off < ISROffset:
		t.commonWriteLocked(off, val)
	case off < DeviceCfgOffset:
		// The ISR is read-only.
	case off < NotifyOffset:
		t.configWriteLocked(off-DeviceCfgOffset, n, val)
	case off < NotifyOffset+ModernRegionSize:
		t.notify(uint32((off - NotifyOffset) / NotifyOffMultiplier))
	}
}

// commonReadLocked reads a common configuration register; QEMU decodes
// the exact offset and truncates the register to the access size.
func (t *Transport) commonReadLocked(off uint64) uint32 {
	switch off {
	case CommonDeviceFeatureSelect:
		return t.state.DeviceFeatureSelect()
	case CommonDeviceFeature:
		return t.state.DeviceFeatures()
	case CommonDriverFeatureSelect:
		return t.state.DriverFeatureSelect()
	case CommonDriverFeature:
		return t.state.DriverFeatures()
	case CommonMSIXConfig:
		return uint32(t.irq.configVectorValue())
	case CommonNumQueues:
		return uint32(t.numQueues)
	case CommonDeviceStatus:
		return uint32(t.state.Status())
	case CommonConfigGeneration:
		return uint32(t.state.ConfigGeneration())
	case CommonQueueSelect:
		return uint32(t.queueSel)
	case CommonQueueNotifyOff:
		return uint32(t.queueSel)
	}
	i, ok := t.selected()
	if !ok {
		if off == CommonQueueMSIXVector {
			return uint32(NoVector)
		}
		return 0
	}
	c := t.queues[i].Config()
	switch off {
	case CommonQueueSize:
		return uint32(c.Size)
	case CommonQueueMSIXVector:
		return uint32(t.irq.queueVector(i))
	case CommonQueueEnable:
		if c.Ready {
			return 1
		}
	case CommonQueueDescLo:
		return uint32(c.Desc)
	case CommonQueueDescHi:
		return uint32(c.Desc >> 32)
	case CommonQueueAvailLo:
		return uint32(c.Avail)
	case CommonQueueAvailHi:
		return uint32(c.Avail >> 32)
	case CommonQueueUsedLo:
		return uint32(c.Used)
	case CommonQueueUsedHi:
		return uint32(c.Used >> 32)
	}
	return 0 // queue_notify_data, queue_reset (reset completes synchronously), padding
}

// setLow and setHigh replace one 32-bit half of a 64-bit address.
func setLow(a uint64, v uint32) uint64  { return a&^0xFFFFFFFF | uint64(v) }
func setHigh(a uint64, v uint32) uint64 { return a&0xFFFFFFFF | uint64(v)<<32 }

// commonWriteLocked writes a common configuration register.
func (t *Transport) commonWriteLocked(off uint64, val uint32) {
	switch off {
	case CommonDeviceFeatureSelect:
		t.state.SetDeviceFeatureSelect(val)
		return
	case CommonDriverFeatureSelect:
		t.state.SetDriverFeatureSelect(val)
		return
	case CommonDriverFeature:
		t.state.SetDriverFeatures(val)
		return
	case CommonMSIXConfig:
		t.irq.setConfigVector(uint16(val))
		return
	case CommonDeviceStatus:
		t.writeStatusLocked(uint8(val), false)
		return
	case CommonQueueSelect:
		if val < MaxQueues {
			t.queueSel = uint16(val)
		}
		return
	}
	i, ok := t.selected()
	if !ok {
		return
	}
	q := t.queues[i]
	c := q.Config()
	switch off {
	case CommonQueueSize:
		q.SetSize(uint16(val))
	case CommonQueueMSIXVector:
		t.irq.setQueueVector(i, uint16(val))
	case CommonQueueEnable:
		if val != 1 {
			t.guestError(fmt.Errorf("queue %d: queue_enable written with %#x", i, val))
			return
		}
		t.enableQueueLocked(i)
	case CommonQueueDescLo:
		q.SetDescAddr(setLow(c.Desc, val))
	case CommonQueueDescHi:
		q.SetDescAddr(setHigh(c.Desc, val))
	case CommonQueueAvailLo:
		q.SetAvailAddr(setLow(c.Avail, val))
	case CommonQueueAvailHi:
		q.SetAvailAddr(setHigh(c.Avail, val))
	case CommonQueueUsedLo:
		q.SetUsedAddr(setLow(c.Used, val))
	case CommonQueueUsedHi:
		q.SetUsedAddr(setHigh(c.Used, val))
	case CommonQueueReset:
		if val == 1 {
			t.resetQueueLocked(i)
		}
	}
}

package virtiopci

import (
	"encoding/binary"
	"fmt"

	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
)

// buildConfigSpace creates the configuration header, BARs and capability
// list in QEMU's order (virtio_pci_device_plugged): the four virtio
// regions, PCI_CFG, then MSI-X.
func (t *Transport) buildConfigSpace(typ virtio.DeviceType, opts Options) error {
	h := pci.Header{
		VendorID:          VendorID,
		Class:             opts.Class,
		SubsystemVendorID: VendorID,
		InterruptPin:      1,
	}
	if h.Class == 0 {
		h.Class = DefaultClass(typ)
	}
	if t.legacy {
		id, ok := TransitionalDeviceID(typ)
		if !ok {
			return fmt.Errorf("%w: %v devices are modern-only (set DisableLegacy)", ErrOptions, typ)
		}
		h.DeviceID, h.Revision, h.SubsystemID = id, LegacyRevision, uint16(typ)
	} else {
		if typ > 0xFFFF-ModernDeviceIDBase {
			return fmt.Errorf("%w: device type %d has no PCI device ID", ErrOptions, typ)
		}
		h.DeviceID, h.Revision, h.SubsystemID = uint16(ModernDeviceIDBase+typ), ModernRevision, ModernSubsystemID
	}
	cs, err := pci.NewConfigSpace(h)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrOptions, err)
	}
	t.cfg = cs

	nvec := opts.Vectors
	if t.legacy {
		base := uint64(LegacyConfigNoMSIX)
		if nvec > 0 {
			base = LegacyConfigMSIX
		}
		b := pci.BAR{Kind: pci.BARIO, Size: pow2ceil(base + uint64(t.cfgSize)), Handler: legacyBAR{t}}
		if err := cs.SetBAR(BARLegacy, b); err != nil {
			return err
		}
	}
	if nvec > 0 {
		size, _, _ := msixLayout(nvec)
		if err := cs.SetBAR(BARMSIX, pci.BAR{Kind: pci.BARMem32, Size: size, Handler: msixBAR{t}}); err != nil {
			return err
		}
	}
	if t.modern {
		b := pci.BAR{Kind: pci.BARMem64, Size: ModernBARSize, Prefetchable: true, Handler: modernBAR{t}}
		if err := cs.SetBAR(BARModern, b); err != nil {
			return err
		}
		for _, c := range []struct {
			typ      uint8
			off, len uint32
		}{
			{CapCommonCfg, CommonCfgOffset, ModernRegionSize},
			{CapISRCfg, ISROffset, ModernRegionSize},
			{CapDeviceCfg, DeviceCfgOffset, ModernRegionSize},
		} {
			if _, err := cs.AddCapability(pci.CapVendor, vendorCap(capLenVendor, c.typ, BARModern, c.off, c.len)); err != nil {
				return err
			}
		}
		notify := vendorCap(capLenNotify, CapNotifyCfg, BARModern, NotifyOffset, NotifyOffMultiplier*MaxQueues)
		binary.LittleEndian.PutUint32(notify[capLenVendor-2:], NotifyOffMultiplier)
		if _, err := cs.AddCapability(pci.CapVendor, notify); err != nil {
			return err
		}
		// PCI_CFG: bar, offset, length all 0; guest-writable, as is the
		// data window.
		off, err := cs.AddCapability(pci.CapVendor, vendorCap(capLenPCICfg, CapPCICfg, 0, 0, 0))
		if err != nil {
			return err
		}
		t.pciCfgCap = off
		ones := []byte{0xFF, 0xFF, 0xFF, 0xFF}
		for _, f := range []struct{ at, n int }{{capBar, 1}, {capOffset, 4}, {capLength, 4}, {capCfgData, 4}} {
			if err := cs.SetWritable(off+f.at, ones[:f.n]); err != nil {
				return err
			}
		}
	}
	if nvec > 0 {
		_, pbaOff, _ := msixLayout(nvec)
		body := make([]byte, 10)
		binary.LittleEndian.PutUint16(body[0:], uint16(nvec-1))
		binary.LittleEndian.PutUint32(body[msixCapTable-2:], MSIXTableOffset|BARMSIX)
		binary.LittleEndian.PutUint32(body[msixCapPBA-2:], uint32(pbaOff)|BARMSIX)
		off, err := cs.AddCapability(pci.CapMSIX, body)
		if err != nil {
			return err
		}
		t.msixCap = off
		if err := cs.SetWritable(off+msixCtrlHigh, []byte{msixEnableBit | msixMaskAllBit}); err != nil {
			return err
		}
	}
	t.bars = cs.BARs()
	return nil
}

// vendorCap returns the body (after cap_vndr and cap_next) of a virtio
// vendor capability of capLen bytes.
func vendorCap(capLen int, cfgType uint8, bar uint8, off, length uint32) []byte {
	b := make([]byte, capLen-2)
	b[0] = byte(capLen)
	b[1] = cfgType
	b[capBar-2] = bar
	binary.LittleEndian.PutUint32(b[capOffset-2:], off)
	binary.LittleEndian.PutUint32(b[capLength-2:], length)
	return b
}

// BARs implements pci.Device.
func (t *Transport) BARs() [pci.NumBARs]pci.BAR { return t.bars }

// ConfigRead implements pci.Device. A read that touches the PCI_CFG
// capability's data window first performs the window's BAR access.
func (t *Transport) ConfigRead(off int, data []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pciCfgCap != 0 && overlaps(off, len(data), t.pciCfgCap+capCfgData, 4) {
		t.pciCfgAccessLocked(false)
	}
	t.cfg.ConfigRead(off, data)
}

// ConfigWrite implements pci.Device: the standard write rules, then the
// transport's reactions (QEMU's virtio_write_config and
// msix_write_config).
func (t *Transport) ConfigWrite(off int, data []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cfg.ConfigWrite(off, data)
	n := len(data)
	if covers(off, n, pci.RegCommand) {
		t.commandWrittenLocked()
	} else if covers(off, n, pci.RegCommand+1) {
		t.irq.setCommand(t.cfg.BusMaster(), t.cfg.INTxDisabled())
	}
	if covers(off, n, pci.RegInterruptLine) {
		t.irq.refreshLine()
	}
	if t.msixCap != 0 && covers(off, n, t.msixCap+msixCtrlHigh) {
		var b [1]byte
		_ = t.cfg.Load(t.msixCap+msixCtrlHigh, b[:])
		t.irq.controlWritten(b[0]&msixEnableBit != 0, b[0]&msixMaskAllBit != 0)
	}
	if t.pciCfgCap != 0 && overlaps(off, n, t.pciCfgCap+capCfgData, 4) {
		t.pciCfgAccessLocked(true)
	}
}

// pciCfgAccessLocked forwards a PCI_CFG window access to the modern BAR
// region at the capability's offset, for lengths 1, 2 and 4 (the offset is
// aligned down to the length; the capability's bar field is not looked
// at, as in QEMU). Accesses that fall outside the four regions do nothing.
func (t *Transport) pciCfgAccessLocked(write bool) {
	var c [capLenPCICfg]byte
	_ = t.cfg.Load(t.pciCfgCap, c[:])
	n := binary.LittleEndian.Uint32(c[capLength:])
	if n != 1 && n != 2 && n != 4 {
		return
	}
	off := uint64(binary.LittleEndian.Uint32(c[capOffset:]) &^ (n - 1))
	if off+uint64(n) > ModernBARSize {
		return
	}
	win := c[capCfgData : capCfgData+n]
	if write {
		t.modernWriteLocked(off, int(n), getLE(win))
		return
	}
	putLE(win, t.modernReadLocked(off, int(n)))
	_ = t.cfg.Store(t.pciCfgCap+capCfgData, win)
}

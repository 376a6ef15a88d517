package pci

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/rscvm/rscvm/devices/bus"
)

// Configuration mechanism #1 ports.
const (
	ConfigIOBase = 0xCF8 // CONFIG_ADDRESS (0xCF8-0xCFB), CONFIG_DATA (0xCFC-0xCFF)
	ConfigIOSize = 8
)

const (
	addrEnable = 1 << 31
	// addrExt holds register bits 11:8 in AMD's extended configuration
	// access scheme; this bus has no extended space, so such accesses hit
	// nothing.
	addrExt = 0x0F000000
	// addrMask keeps the enable bit, the extended register bits, bus,
	// device, function and dword register number; the remaining reserved
	// bits and bits 1:0 read as zero.
	addrMask = addrEnable | addrExt | 0x00FFFFFC
)

// ConfigIO is PCI configuration mechanism #1: a bus.Device for ports
// 0xCF8-0xCFF. CONFIG_ADDRESS only decodes 32-bit accesses at 0xCF8; other
// accesses to 0xCF8-0xCFB read all-ones and are ignored, except byte
// accesses to 0xCF9, which go to the reset control register if one is set
// (the PIIX reset control register lives inside this range).
type ConfigIO struct {
	bus   *Bus
	addr  atomic.Uint32
	reset bus.Device
}

// NewConfigIO returns the configuration ports for bus 0 b. resetControl, if
// not nil, receives byte accesses to port 0xCF9 at offset 0.
func NewConfigIO(b *Bus, resetControl bus.Device) *ConfigIO {
	return &ConfigIO{bus: b, reset: resetControl}
}

// Attach registers the ports on pio at ConfigIOBase.
func (c *ConfigIO) Attach(pio *bus.Bus) error {
	if err := pio.Register(ConfigIOBase, ConfigIOSize, c); err != nil {
		return fmt.Errorf("pci: attach config ports: %w", err)
	}
	return nil
}

// target decodes CONFIG_ADDRESS for a data-port access of n bytes at data
// port byte k. ok is false when the access does not reach a function.
func (c *ConfigIO) target(k, n int) (slot, fn, off int, ok bool) {
	if (n != 1 && n != 2 && n != 4) || k < 0 || k+n > 4 {
		return 0, 0, 0, false
	}
	a := c.addr.Load()
	if a&addrEnable == 0 || (a>>16)&0xFF != 0 || a&addrExt != 0 {
		return 0, 0, 0, false // disabled, a bus other than 0, or extended space
	}
	return int(a>>11) & 0x1F, int(a>>8) & 0x7, int(a&0xFC) + k, true
}

// Read implements bus.Device.
func (c *ConfigIO) Read(offset uint64, data []byte) {
	switch {
	case offset == 0 && len(data) == 4:
		binary.LittleEndian.PutUint32(data, c.addr.Load())
		return
	case offset == 1 && len(data) == 1 && c.reset != nil:
		c.reset.Read(0, data)
		return
	case offset >= 4 && offset < ConfigIOSize:
		if slot, fn, off, ok := c.target(int(offset-4), len(data)); ok {
			c.bus.ConfigRead(slot, fn, off, data)
			return
		}
	}
	for i := range data {
		data[i] = 0xFF
	}
}

// Write implements bus.Device.
func (c *ConfigIO) Write(offset uint64, data []byte) {
	switch {
	case offset == 0 && len(data) == 4:
		c.addr.Store(binary.LittleEndian.Uint32(data) & addrMask)
	case offset == 1 && len(data) == 1 && c.reset != nil:
		c.reset.Write(0, data)
	case offset >= 4 && offset < ConfigIOSize:
		if slot, fn, off, ok := c.target(int(offset-4), len(data)); ok {
			c.bus.ConfigWrite(slot, fn, off, data)
		}
	}
}

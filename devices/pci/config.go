// Package pci emulates the conventional PCI bus 0 of a PC as QEMU's `pc`
// machine presents it: configuration mechanism #1 at ports 0xCF8/0xCFC, an
// Intel 440FX host bridge at 00:00.0, and type-0 functions whose BARs are
// mapped onto the VMM's port-I/O and MMIO buses while their decode bits are
// on.
//
// A PCI function implements Device. Most embed a *ConfigSpace, which provides
// the standard header (read-only vs writable fields, write-1-to-clear status
// bits, BAR sizing, capability list) and implements Device by itself.
package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/rscvm/rscvm/devices/bus"
)

// Configuration space geometry.
const (
	ConfigSize = 256 // bytes of conventional configuration space
	NumBARs    = 6   // BARs in a type-0 header
	capStart   = 0x40
)

// Type-0 header register offsets.
const (
	RegVendorID          = 0x00
	RegDeviceID          = 0x02
	RegCommand           = 0x04
	RegStatus            = 0x06
	RegRevision          = 0x08
	RegClass             = 0x09 // 3 bytes: programming interface, subclass, base class
	RegCacheLineSize     = 0x0C
	RegLatencyTimer      = 0x0D
	RegHeaderType        = 0x0E
	RegBIST              = 0x0F
	RegBAR0              = 0x10
	RegSubsystemVendorID = 0x2C
	RegSubsystemID       = 0x2E
	RegROMAddress        = 0x30
	RegCapPtr            = 0x34
	RegInterruptLine     = 0x3C
	RegInterruptPin      = 0x3D
)

// Command register bits.
const (
	CommandIO          = 0x0001
	CommandMemory      = 0x0002
	CommandBusMaster   = 0x0004
	CommandParity      = 0x0040
	CommandSERR        = 0x0100
	CommandINTxDisable = 0x0400
	commandWritable    = CommandIO | CommandMemory | CommandBusMaster | CommandParity | CommandSERR | CommandINTxDisable
)

// Status register bits.
const (
	StatusINTx              = 0x0008
	StatusCapList           = 0x0010
	StatusMasterDataParity  = 0x0100
	StatusSignaledTgtAbort  = 0x0800
	StatusReceivedTgtAbort  = 0x1000
	StatusReceivedMstrAbort = 0x2000
	StatusSignaledSysError  = 0x4000
	StatusDetectedParity    = 0x8000
	statusW1C               = StatusMasterDataParity | StatusSignaledTgtAbort | StatusReceivedTgtAbort |
		StatusReceivedMstrAbort | StatusSignaledSysError | StatusDetectedParity
)

// Capability IDs.
const (
	CapPowerManagement = 0x01
	CapMSI             = 0x05
	CapVendor          = 0x09
	CapPCIExpress      = 0x10
	CapMSIX            = 0x11
)

// BAR register low bits.
const (
	barIOSpace      = 0x1
	barMem64        = 0x4
	barPrefetchable = 0x8
)

// BARKind is the type of a base address register.
type BARKind uint8

// BAR kinds.
const (
	BARNone  BARKind = iota // unused (also the upper half of a 64-bit BAR)
	BARIO                   // I/O space
	BARMem32                // 32-bit memory space
	BARMem64                // 64-bit memory space; uses this and the next BAR register
)

func (k BARKind) String() string {
	switch k {
	case BARNone:
		return "none"
	case BARIO:
		return "io"
	case BARMem32:
		return "mem32"
	case BARMem64:
		return "mem64"
	}
	return fmt.Sprintf("BARKind(%d)", uint8(k))
}

// BAR describes one base address register.
type BAR struct {
	Kind BARKind
	// Size is a power of two: 4 to 256 bytes for I/O BARs, at least 16
	// bytes (at most 2 GiB for 32-bit ones) for memory BARs.
	Size         uint64
	Prefetchable bool // memory BARs only
	// Handler serves guest accesses to the BAR while it is mapped; offsets
	// are relative to the BAR's base address.
	Handler bus.Device
}

// Validate checks the BAR's kind and size.
func (b BAR) Validate() error {
	if b.Kind == BARNone {
		return nil
	}
	if b.Size == 0 || b.Size&(b.Size-1) != 0 {
		return fmt.Errorf("pci: %v BAR size %#x is not a power of two", b.Kind, b.Size)
	}
	if b.Handler == nil {
		return fmt.Errorf("pci: %v BAR has no handler", b.Kind)
	}
	switch b.Kind {
	case BARIO:
		if b.Size < 4 || b.Size > 256 {
			return fmt.Errorf("pci: I/O BAR size %#x outside [4,256]", b.Size)
		}
		if b.Prefetchable {
			return errors.New("pci: I/O BAR cannot be prefetchable")
		}
	case BARMem32:
		if b.Size < 16 || b.Size > 1<<31 {
			return fmt.Errorf("pci: 32-bit memory BAR size %#x outside [16,2G]", b.Size)
		}
	case BARMem64:
		if b.Size < 16 || b.Size > 1<<62 {
			return fmt.Errorf("pci: 64-bit memory BAR size %#x too small or large", b.Size)
		}
	default:
		return fmt.Errorf("pci: unknown BAR kind %d", b.Kind)
	}
	return nil
}

// Device is a PCI function on the bus. ConfigRead and ConfigWrite access the
// 256-byte configuration space with byte granularity (off+len(data) may run
// past the end: such bytes read as 0xFF and writes to them are dropped). The
// bus serialises all calls to one Device.
type Device interface {
	ConfigRead(off int, data []byte)
	ConfigWrite(off int, data []byte)
	// BARs describes the function's BARs. The bus reads it once, when the
	// device is added. A 64-bit BAR at index i leaves index i+1 BARNone.
	BARs() [NumBARs]BAR
}

// BARMover is implemented by devices that want to know where their BARs are
// mapped (for example to move ioeventfds). The bus calls BARMoved after it
// changed a BAR's mapping; 0 stands for "not mapped". It is called with the
// bus lock held and must not call back into the Bus.
type BARMover interface {
	BARMoved(bar int, old, new uint64)
}

// Header holds the identity fields of a type-0 configuration header.
type Header struct {
	VendorID, DeviceID uint16
	Revision           uint8
	// Class is the 24-bit class code: base class << 16 | subclass << 8 |
	// programming interface (e.g. 0x020000 for an Ethernet controller).
	Class                          uint32
	SubsystemVendorID, SubsystemID uint16
	// InterruptPin is 0 (no INTx) or 1..4 for INTA#..INTD#.
	InterruptPin uint8
}

// ConfigSpace is a type-0 configuration space with per-bit write masks. It
// implements Device; devices embed it and override ConfigWrite when they need
// to react to writes. All methods are safe for concurrent use.
type ConfigSpace struct {
	mu    sync.Mutex
	data  [ConfigSize]byte
	wmask [ConfigSize]byte // bits the guest may write
	w1c   [ConfigSize]byte // bits the guest clears by writing 1
	used  [ConfigSize]bool // bytes taken by capabilities
	bars  [NumBARs]BAR
}

// NewConfigSpace builds a header-type-0 configuration space.
func NewConfigSpace(h Header) (*ConfigSpace, error) {
	if h.InterruptPin > 4 {
		return nil, fmt.Errorf("pci: interrupt pin %d out of range", h.InterruptPin)
	}
	if h.Class > 0xFFFFFF {
		return nil, fmt.Errorf("pci: class code %#x wider than 24 bits", h.Class)
	}
	return newConfigSpace(h), nil
}

func newConfigSpace(h Header) *ConfigSpace {
	c := &ConfigSpace{}
	le := binary.LittleEndian
	le.PutUint16(c.data[RegVendorID:], h.VendorID)
	le.PutUint16(c.data[RegDeviceID:], h.DeviceID)
	c.data[RegRevision] = h.Revision
	c.data[RegClass] = uint8(h.Class)
	c.data[RegClass+1] = uint8(h.Class >> 8)
	c.data[RegClass+2] = uint8(h.Class >> 16)
	le.PutUint16(c.data[RegSubsystemVendorID:], h.SubsystemVendorID)
	le.PutUint16(c.data[RegSubsystemID:], h.SubsystemID)
	c.data[RegInterruptPin] = h.InterruptPin

	le.PutUint16(c.wmask[RegCommand:], commandWritable)
	le.PutUint16(c.w1c[RegStatus:], statusW1C)
	c.wmask[RegCacheLineSize] = 0xFF
	c.wmask[RegInterruptLine] = 0xFF
	for i := 0; i < capStart; i++ {
		c.used[i] = true
	}
	return c
}

// SetBAR defines BAR i. It must be called before the device is added to a
// bus. A 64-bit BAR takes registers i and i+1.
func (c *ConfigSpace) SetBAR(i int, b BAR) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if i < 0 || i >= NumBARs || (b.Kind == BARMem64 && i == NumBARs-1) {
		return fmt.Errorf("pci: BAR index %d invalid for a %v BAR", i, b.Kind)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bars[i].Kind != BARNone || c.isHighHalfLocked(i) || (b.Kind == BARMem64 && c.bars[i+1].Kind != BARNone) {
		return fmt.Errorf("pci: BAR %d already defined", i)
	}
	c.bars[i] = b
	if b.Kind == BARNone {
		return nil
	}
	off := RegBAR0 + 4*i
	le := binary.LittleEndian
	var low, mask uint32
	switch b.Kind {
	case BARIO:
		low = barIOSpace
		mask = ^uint32(b.Size-1) &^ 0x3
	case BARMem32, BARMem64:
		if b.Kind == BARMem64 {
			low |= barMem64
		}
		if b.Prefetchable {
			low |= barPrefetchable
		}
		mask = ^uint32(b.Size-1) &^ 0xF
	}
	le.PutUint32(c.data[off:], low)
	le.PutUint32(c.wmask[off:], mask)
	if b.Kind == BARMem64 {
		le.PutUint32(c.data[off+4:], 0)
		le.PutUint32(c.wmask[off+4:], uint32(^(b.Size-1)>>32))
	}
	return nil
}

func (c *ConfigSpace) isHighHalfLocked(i int) bool {
	return i > 0 && c.bars[i-1].Kind == BARMem64
}

// BARs implements Device.
func (c *ConfigSpace) BARs() [NumBARs]BAR {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bars
}

// AddCapability places a capability in the first free dword-aligned space
// from 0x40 and links it at the head of the list (as QEMU does), returning
// its offset. body is the capability after its ID and next-pointer bytes; it
// is read-only to the guest unless SetWritable says otherwise.
func (c *ConfigSpace) AddCapability(id uint8, body []byte) (int, error) {
	size := (2 + len(body) + 3) &^ 3
	c.mu.Lock()
	defer c.mu.Unlock()
	off := -1
	for start := capStart; start+size <= ConfigSize; start += 4 {
		free := true
		for i := start; i < start+size; i++ {
			if c.used[i] {
				free = false
				start = i &^ 3 // resume after this dword
				break
			}
		}
		if free {
			off = start
			break
		}
	}
	if off < 0 {
		return 0, fmt.Errorf("pci: no room for a %d-byte capability %#x", size, id)
	}
	for i := off; i < off+size; i++ {
		c.used[i] = true
	}
	c.data[off] = id
	c.data[off+1] = c.data[RegCapPtr]
	copy(c.data[off+2:], body)
	c.data[RegCapPtr] = uint8(off)
	binary.LittleEndian.PutUint16(c.data[RegStatus:], binary.LittleEndian.Uint16(c.data[RegStatus:])|StatusCapList)
	return off, nil
}

func checkRange(off, n int) error {
	if off < 0 || n < 0 || off+n > ConfigSize {
		return fmt.Errorf("pci: config range [%#x,+%d) outside the %d-byte space", off, n, ConfigSize)
	}
	return nil
}

// SetWritable makes the bits set in mask, starting at off, guest-writable
// (for device-specific registers such as capability fields).
func (c *ConfigSpace) SetWritable(off int, mask []byte) error {
	if err := checkRange(off, len(mask)); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range mask {
		c.wmask[off+i] |= m
	}
	return nil
}

// SetW1C makes the bits set in mask, starting at off, write-1-to-clear.
func (c *ConfigSpace) SetW1C(off int, mask []byte) error {
	if err := checkRange(off, len(mask)); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range mask {
		c.w1c[off+i] |= m
	}
	return nil
}

// ConfigRead implements Device.
func (c *ConfigSpace) ConfigRead(off int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		p := off + i
		if p < 0 || p >= ConfigSize {
			data[i] = 0xFF
			continue
		}
		data[i] = c.data[p]
	}
}

// ConfigWrite implements Device: it applies the guest-write rules (writable
// bits replaced, write-1-to-clear bits cleared, everything else kept).
func (c *ConfigSpace) ConfigWrite(off int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, v := range data {
		p := off + i
		if p < 0 || p >= ConfigSize {
			continue
		}
		nv := (c.data[p] &^ c.wmask[p]) | (v & c.wmask[p])
		c.data[p] = nv &^ (v & c.w1c[p])
	}
}

// Load copies raw configuration bytes at off into p, ignoring write masks.
func (c *ConfigSpace) Load(off int, p []byte) error {
	if err := checkRange(off, len(p)); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(p, c.data[off:])
	return nil
}

// Store writes raw configuration bytes (device-side updates such as
// capability state), ignoring write masks.
func (c *ConfigSpace) Store(off int, p []byte) error {
	if err := checkRange(off, len(p)); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(c.data[off:], p)
	return nil
}

// U16 returns the 16-bit register at off (0xFFFF if out of range).
func (c *ConfigSpace) U16(off int) uint16 {
	var b [2]byte
	c.ConfigRead(off, b[:])
	return binary.LittleEndian.Uint16(b[:])
}

// U32 returns the 32-bit register at off (0xFFFFFFFF if out of range).
func (c *ConfigSpace) U32(off int) uint32 {
	var b [4]byte
	c.ConfigRead(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// Command returns the command register.
func (c *ConfigSpace) Command() uint16 { return c.U16(RegCommand) }

// BusMaster reports whether the guest enabled bus mastering (DMA).
func (c *ConfigSpace) BusMaster() bool { return c.Command()&CommandBusMaster != 0 }

// INTxDisabled reports whether the guest disabled INTx assertion.
func (c *ConfigSpace) INTxDisabled() bool { return c.Command()&CommandINTxDisable != 0 }

// SetINTxStatus sets the status register's Interrupt Status bit, which
// reflects whether the function asserts its INTx (even while INTx is
// disabled by the command register).
func (c *ConfigSpace) SetINTxStatus(asserted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if asserted {
		c.data[RegStatus] |= StatusINTx
	} else {
		c.data[RegStatus] &^= StatusINTx
	}
}

// BARAddress returns the address programmed into BAR i (0 for an unused
// BAR). It does not say whether the BAR is mapped.
func (c *ConfigSpace) BARAddress(i int) uint64 {
	bars := c.BARs()
	if i < 0 || i >= NumBARs {
		return 0
	}
	return barAddress(c, i, bars[i])
}

// barAddress decodes BAR i of dev from its configuration registers.
func barAddress(dev Device, i int, b BAR) uint64 {
	var buf [8]byte
	off := RegBAR0 + 4*i
	switch b.Kind {
	case BARIO:
		dev.ConfigRead(off, buf[:4])
		return uint64(binary.LittleEndian.Uint32(buf[:])&^0x3) &^ (b.Size - 1)
	case BARMem32:
		dev.ConfigRead(off, buf[:4])
		return uint64(binary.LittleEndian.Uint32(buf[:])&^0xF) &^ (b.Size - 1)
	case BARMem64:
		dev.ConfigRead(off, buf[:8])
		return binary.LittleEndian.Uint64(buf[:]) &^ 0xF &^ (b.Size - 1)
	}
	return 0
}

// barUsable reports whether addr is a valid place to map a BAR of kind and
// size: not 0, not the all-ones pattern left by sizing, inside the address
// space.
func barUsable(b BAR, addr uint64) bool {
	if addr == 0 {
		return false
	}
	switch b.Kind {
	case BARIO:
		return addr+b.Size <= 1<<16
	case BARMem32:
		return addr != uint64(^uint32(0))&^(b.Size-1) && addr+b.Size <= 1<<32
	case BARMem64:
		low := uint32(addr)
		high := uint32(addr >> 32)
		if (b.Size < 1<<32 && low == ^uint32(0)&^uint32(b.Size-1)) || high == ^uint32(0) {
			return false
		}
		_, carry := bits.Add64(addr, b.Size, 0)
		return carry == 0
	}
	return false
}

package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/rscvm/rscvm/devices/bus"
)

// NumSlots is the number of device numbers on a PCI bus.
const NumSlots = 32

// Default BAR allocation windows (see the machine layout in the project
// notes).
var (
	DefaultIOWindow    = Window{Base: 0xC000, Size: 0x4000}
	DefaultMem32Window = Window{Base: 0xC0000000, Size: 0xFEC00000 - 0xC0000000}
)

// Window is an address range BARs are allocated from.
type Window struct {
	Base, Size uint64
}

// GSI returns the IOAPIC GSI that INTx pin (1=INTA#..4=INTD#) of the device
// in slot is routed to: 16 + ((slot + pin - 1) mod 8), level-triggered and
// active-low. It reports false for pin 0 (no INTx) or out-of-range input.
func GSI(slot int, pin uint8) (uint32, bool) {
	if slot < 0 || slot >= NumSlots || pin < 1 || pin > 4 {
		return 0, false
	}
	return 16 + uint32((slot+int(pin)-1)%8), true
}

// Config configures a Bus.
type Config struct {
	// PIO and MMIO are the VMM's buses that I/O and memory BARs are mapped
	// onto. Both are required.
	PIO, MMIO *bus.Bus
	// IO and Mem32 are the windows initial I/O and 32-bit memory BAR
	// addresses come from (defaults DefaultIOWindow, DefaultMem32Window).
	IO, Mem32 Window
	// Mem64 is the window for 64-bit BARs. If its Size is 0, 64-bit BARs
	// are placed in the 32-bit window instead (what SeaBIOS does with
	// small BARs); use a 64-bit window only if the ACPI _CRS declares it.
	Mem64 Window
	// Logger receives mapping diagnostics (default slog.Default()).
	Logger *slog.Logger
}

type allocator struct {
	w    Window
	next uint64
}

func (a *allocator) alloc(size uint64) (uint64, bool) {
	if a.next < a.w.Base {
		a.next = a.w.Base
	}
	addr := (a.next + size - 1) &^ (size - 1)
	if addr < a.next || addr+size < addr || addr+size > a.w.Base+a.w.Size {
		return 0, false
	}
	a.next = addr + size
	return addr, true
}

type function struct {
	dev    Device
	bars   [NumBARs]BAR
	mapped [NumBARs]uint64 // current base on the PIO/MMIO bus, 0 = not mapped
}

// Bus is PCI bus 0. Configuration accesses come through ConfigIO (or
// ConfigRead/ConfigWrite); after every configuration write the bus brings
// the BAR mappings on the PIO and MMIO buses in line with the command
// register and BAR registers of every function.
type Bus struct {
	pio, mmio *bus.Bus
	log       *slog.Logger

	mu               sync.Mutex
	slots            [NumSlots]*function
	io, mem32, mem64 allocator
	mem64In32        bool
}

// NewBus creates bus 0 with the host bridge at 00:00.0.
func NewBus(cfg Config) (*Bus, error) {
	if cfg.PIO == nil || cfg.MMIO == nil {
		return nil, errors.New("pci: PIO and MMIO buses are required")
	}
	if cfg.IO.Size == 0 {
		cfg.IO = DefaultIOWindow
	}
	if cfg.Mem32.Size == 0 {
		cfg.Mem32 = DefaultMem32Window
	}
	if cfg.IO.Base+cfg.IO.Size > 1<<16 {
		return nil, fmt.Errorf("pci: I/O window [%#x,+%#x) beyond 64 KiB", cfg.IO.Base, cfg.IO.Size)
	}
	if cfg.Mem32.Base+cfg.Mem32.Size > 1<<32 {
		return nil, fmt.Errorf("pci: 32-bit window [%#x,+%#x) beyond 4 GiB", cfg.Mem32.Base, cfg.Mem32.Size)
	}
	if cfg.Mem64.Base+cfg.Mem64.Size < cfg.Mem64.Base {
		return nil, fmt.Errorf("pci: 64-bit window [%#x,+%#x) wraps", cfg.Mem64.Base, cfg.Mem64.Size)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Bus{
		pio: cfg.PIO, mmio: cfg.MMIO, log: log,
		io: allocator{w: cfg.IO}, mem32: allocator{w: cfg.Mem32}, mem64: allocator{w: cfg.Mem64},
		mem64In32: cfg.Mem64.Size == 0,
	}
	if err := b.AddAt(0, NewHostBridge()); err != nil {
		return nil, err
	}
	return b, nil
}

// Add puts dev in the first free slot from 1 and returns the slot. See AddAt.
func (b *Bus) Add(dev Device) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := 1; s < NumSlots; s++ {
		if b.slots[s] == nil {
			return s, b.addLocked(s, dev)
		}
	}
	return 0, errors.New("pci: bus 0 is full")
}

// AddAt puts dev (as function 0) in slot. Like firmware would, it assigns
// each BAR an address from the allocation windows, sets Interrupt Line to
// the INTx GSI (see GSI), and turns on I/O and memory decoding for the BAR
// kinds the device has, which maps the BARs. The guest may move or unmap
// them later.
func (b *Bus) AddAt(slot int, dev Device) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addLocked(slot, dev)
}

func (b *Bus) addLocked(slot int, dev Device) error {
	if slot < 0 || slot >= NumSlots {
		return fmt.Errorf("pci: slot %d out of range", slot)
	}
	if b.slots[slot] != nil {
		return fmt.Errorf("pci: slot %d is taken", slot)
	}
	if dev == nil {
		return errors.New("pci: nil device")
	}
	f := &function{dev: dev, bars: dev.BARs()}
	for i, bar := range f.bars {
		if err := bar.Validate(); err != nil {
			return fmt.Errorf("pci: slot %d BAR %d: %w", slot, i, err)
		}
		if bar.Kind == BARMem64 && (i == NumBARs-1 || f.bars[i+1].Kind != BARNone) {
			return fmt.Errorf("pci: slot %d BAR %d: 64-bit BAR needs the next register free", slot, i)
		}
	}
	// Allocate everything first so that a failure leaves the allocators
	// untouched.
	saved := [3]allocator{b.io, b.mem32, b.mem64}
	var addrs [NumBARs]uint64
	var cmd uint16
	for i, bar := range f.bars {
		var a *allocator
		switch bar.Kind {
		case BARNone:
			continue
		case BARIO:
			a, cmd = &b.io, cmd|CommandIO
		case BARMem32:
			a, cmd = &b.mem32, cmd|CommandMemory
		case BARMem64:
			a, cmd = &b.mem64, cmd|CommandMemory
			if b.mem64In32 {
				a = &b.mem32
			}
		}
		addr, ok := a.alloc(bar.Size)
		if !ok {
			b.io, b.mem32, b.mem64 = saved[0], saved[1], saved[2]
			return fmt.Errorf("pci: slot %d BAR %d: no room for %#x bytes of %v space", slot, i, bar.Size, bar.Kind)
		}
		addrs[i] = addr
	}
	var buf [4]byte
	for i, bar := range f.bars {
		if bar.Kind == BARNone {
			continue
		}
		off := RegBAR0 + 4*i
		dev.ConfigRead(off, buf[:])
		low := binary.LittleEndian.Uint32(buf[:])&0xF | uint32(addrs[i])
		if bar.Kind == BARIO {
			low = binary.LittleEndian.Uint32(buf[:])&0x3 | uint32(addrs[i])
		}
		binary.LittleEndian.PutUint32(buf[:], low)
		dev.ConfigWrite(off, buf[:])
		if bar.Kind == BARMem64 {
			binary.LittleEndian.PutUint32(buf[:], uint32(addrs[i]>>32))
			dev.ConfigWrite(off+4, buf[:])
		}
	}
	dev.ConfigRead(RegInterruptPin, buf[:1])
	if gsi, ok := GSI(slot, buf[0]); ok {
		dev.ConfigWrite(RegInterruptLine, []byte{uint8(gsi)})
	}
	if cmd != 0 {
		dev.ConfigRead(RegCommand, buf[:2])
		binary.LittleEndian.PutUint16(buf[:], binary.LittleEndian.Uint16(buf[:])|cmd)
		dev.ConfigWrite(RegCommand, buf[:2])
	}
	b.slots[slot] = f
	b.syncLocked()
	return nil
}

// Device returns the device in slot, or nil.
func (b *Bus) Device(slot int) Device {
	b.mu.Lock()
	defer b.mu.Unlock()
	if slot < 0 || slot >= NumSlots || b.slots[slot] == nil {
		return nil
	}
	return b.slots[slot].dev
}

// BARMapping reports where BAR bar of the device in slot is currently mapped.
func (b *Bus) BARMapping(slot, bar int) (base uint64, mapped bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if slot < 0 || slot >= NumSlots || bar < 0 || bar >= NumBARs || b.slots[slot] == nil {
		return 0, false
	}
	base = b.slots[slot].mapped[bar]
	return base, base != 0
}

// ConfigRead reads the configuration space of function fn of the device in
// slot on bus 0. Absent functions read as all-ones.
func (b *Bus) ConfigRead(slot, fn, off int, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.lookupLocked(slot, fn)
	if f == nil {
		for i := range data {
			data[i] = 0xFF
		}
		return
	}
	f.dev.ConfigRead(off, data)
}

// ConfigWrite writes the configuration space of function fn of the device in
// slot and updates the BAR mappings. Writes to absent functions are dropped.
func (b *Bus) ConfigWrite(slot, fn, off int, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.lookupLocked(slot, fn)
	if f == nil {
		return
	}
	f.dev.ConfigWrite(off, data)
	b.syncLocked()
}

func (b *Bus) lookupLocked(slot, fn int) *function {
	if slot < 0 || slot >= NumSlots || fn != 0 {
		return nil
	}
	return b.slots[slot]
}

func (b *Bus) busFor(k BARKind) *bus.Bus {
	if k == BARIO {
		return b.pio
	}
	return b.mmio
}

// desired is where BAR i of f should be mapped now (0: nowhere).
func desired(f *function, i int) uint64 {
	bar := f.bars[i]
	if bar.Kind == BARNone {
		return 0
	}
	var buf [2]byte
	f.dev.ConfigRead(RegCommand, buf[:])
	cmd := binary.LittleEndian.Uint16(buf[:])
	if (bar.Kind == BARIO && cmd&CommandIO == 0) || (bar.Kind != BARIO && cmd&CommandMemory == 0) {
		return 0
	}
	addr := barAddress(f.dev, i, bar)
	if !barUsable(bar, addr) {
		return 0
	}
	return addr
}

func (b *Bus) notify(f *function, i int, from, to uint64) {
	if m, ok := f.dev.(BARMover); ok {
		m.BARMoved(i, from, to)
	}
}

// syncLocked makes every BAR's mapping match its registers: first unmap,
// then move what changed, then map what is wanted but not mapped.
func (b *Bus) syncLocked() {
	var want [NumSlots][NumBARs]uint64
	for s, f := range b.slots {
		if f == nil {
			continue
		}
		for i := range f.bars {
			want[s][i] = desired(f, i)
		}
	}
	// Unmap BARs that must go away.
	for s, f := range b.slots {
		if f == nil {
			continue
		}
		for i, cur := range f.mapped {
			if cur != 0 && want[s][i] == 0 {
				b.unmapLocked(f, i)
			}
		}
	}
	// Move BARs that changed address.
	for s, f := range b.slots {
		if f == nil {
			continue
		}
		for i, cur := range f.mapped {
			w := want[s][i]
			if cur == 0 || w == 0 || w == cur {
				continue
			}
			if err := b.busFor(f.bars[i].Kind).Move(cur, w); err != nil {
				b.log.Debug("pci: BAR move failed; unmapping", "slot", s, "bar", i, "from", cur, "to", w, "err", err)
				b.unmapLocked(f, i)
				continue
			}
			f.mapped[i] = w
			b.notify(f, i, cur, w)
		}
	}
	// Map what is still missing. Mapping only takes space, so one pass is
	// enough; BARs that collide stay pending and are retried on the next
	// configuration write.
	for s, f := range b.slots {
		if f == nil {
			continue
		}
		for i, cur := range f.mapped {
			w := want[s][i]
			if cur != 0 || w == 0 {
				continue
			}
			if err := b.busFor(f.bars[i].Kind).Register(w, f.bars[i].Size, f.bars[i].Handler); err != nil {
				b.log.Debug("pci: cannot map BAR", "slot", s, "bar", i, "addr", w, "err", err)
				continue
			}
			f.mapped[i] = w
			b.notify(f, i, 0, w)
		}
	}
}

func (b *Bus) unmapLocked(f *function, i int) {
	old := f.mapped[i]
	if err := b.busFor(f.bars[i].Kind).Unregister(old); err != nil {
		b.log.Warn("pci: BAR unmap failed", "bar", i, "addr", old, "err", err)
	}
	f.mapped[i] = 0
	b.notify(f, i, old, 0)
}

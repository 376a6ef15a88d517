package pci

import (
	"encoding/binary"
	"testing"

	"github.com/rscvm/rscvm/devices/bus"
	"github.com/stretchr/testify/require"
)

// region is a BAR handler that counts accesses.
type region struct {
	name  string
	hits  int
	last  uint64
	store [8]byte
}

func (r *region) Read(off uint64, data []byte) {
	r.hits++
	r.last = off
	for i := range data {
		data[i] = byte(off) + byte(i)
	}
}

func (r *region) Write(off uint64, data []byte) {
	r.hits++
	r.last = off
	copy(r.store[:], data)
}

type move struct {
	bar      int
	old, new uint64
}

// testDev is a function with an I/O BAR 0 (32 bytes), a 32-bit BAR 1 (4 KiB)
// and a 64-bit prefetchable BAR 2/3 (16 KiB), like a transitional
// virtio-net-pci (which uses BAR 4 for the 64-bit one).
type testDev struct {
	*ConfigSpace
	io, m32, m64 *region
	moves        []move
}

func (d *testDev) BARMoved(bar int, old, new uint64) {
	d.moves = append(d.moves, move{bar, old, new})
}

func (d *testDev) takeMoves() []move {
	m := d.moves
	d.moves = nil
	return m
}

func newTestDev(t testing.TB) *testDev {
	t.Helper()
	cs, err := NewConfigSpace(Header{
		VendorID: 0x1AF4, DeviceID: 0x1000, Revision: 0, Class: 0x020000,
		SubsystemVendorID: 0x1AF4, SubsystemID: 0x0001, InterruptPin: 1,
	})
	require.NoError(t, err)
	d := &testDev{ConfigSpace: cs, io: &region{name: "io"}, m32: &region{name: "m32"}, m64: &region{name: "m64"}}
	require.NoError(t, cs.SetBAR(0, BAR{Kind: BARIO, Size: 32, Handler: d.io}))
	require.NoError(t, cs.SetBAR(1, BAR{Kind: BARMem32, Size: 0x1000, Handler: d.m32}))
	require.NoError(t, cs.SetBAR(2, BAR{Kind: BARMem64, Size: 0x4000, Prefetchable: true, Handler: d.m64}))
	return d
}

type env struct {
	t         testing.TB
	pio, mmio *bus.Bus
	pci       *Bus
	cfg       *ConfigIO
	reset     *region
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	e := &env{t: t, pio: bus.New("pio"), mmio: bus.New("mmio"), reset: &region{name: "rcr"}}
	cfg.PIO, cfg.MMIO = e.pio, e.mmio
	b, err := NewBus(cfg)
	require.NoError(t, err)
	e.pci = b
	e.cfg = NewConfigIO(b, e.reset)
	require.NoError(t, e.cfg.Attach(e.pio))
	return e
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func (e *env) setAddr(busNo, dev, fn, reg int) {
	v := uint32(1<<31 | busNo<<16 | dev<<11 | fn<<8 | reg&0xFC)
	require.True(e.t, e.pio.Write(ConfigIOBase, le32(v)))
}

func (e *env) read(dev, reg, n int) uint32 {
	e.setAddr(0, dev, 0, reg)
	buf := make([]byte, 4)
	require.True(e.t, e.pio.Read(ConfigIOBase+4+uint64(reg&3), buf[:n]))
	return binary.LittleEndian.Uint32(buf)
}

func (e *env) write(dev, reg, n int, v uint32) {
	e.setAddr(0, dev, 0, reg)
	require.True(e.t, e.pio.Write(ConfigIOBase+4+uint64(reg&3), le32(v)[:n]))
}

func TestConfigMechanism(t *testing.T) {
	e := newEnv(t, Config{})
	addr := make([]byte, 4)

	// Linux pci_check_type1: a byte write to 0xCFB must not disturb
	// CONFIG_ADDRESS, which reads back exactly what was written.
	require.True(t, e.pio.Write(0xCFB, []byte{0x01}))
	require.True(t, e.pio.Write(0xCF8, le32(0x80000000)))
	require.True(t, e.pio.Read(0xCF8, addr))
	require.Equal(t, uint32(0x80000000), binary.LittleEndian.Uint32(addr))
	require.True(t, e.pio.Write(0xCFB, []byte{0x01}))
	require.True(t, e.pio.Read(0xCF8, addr))
	require.Equal(t, uint32(0x80000000), binary.LittleEndian.Uint32(addr))
	require.True(t, e.pio.Write(0xCF8, le32(0xFFFFFFFF)))
	require.True(t, e.pio.Read(0xCF8, addr))
	require.Equal(t, uint32(0x8FFFFFFC), binary.LittleEndian.Uint32(addr), "reserved bits and bits 1:0 read as 0")
	b2 := make([]byte, 2)
	require.True(t, e.pio.Read(0xCF8, b2))
	require.Equal(t, []byte{0xFF, 0xFF}, b2, "CONFIG_ADDRESS decodes dword accesses only")

	// Host bridge through all access widths and data-port offsets.
	require.Equal(t, uint32(0x12378086), e.read(0, 0, 4))
	require.Equal(t, uint32(0x8086), e.read(0, 0, 2))
	require.Equal(t, uint32(0x1237), e.read(0, 2, 2))
	require.Equal(t, uint32(0x86), e.read(0, 0, 1))
	require.Equal(t, uint32(0x80), e.read(0, 1, 1))
	require.Equal(t, uint32(0x37), e.read(0, 2, 1))
	require.Equal(t, uint32(0x12), e.read(0, 3, 1))
	require.Equal(t, uint32(0x06000002), e.read(0, RegRevision, 4), "class 0x060000, revision 2")
	require.Equal(t, uint32(0), e.read(0, RegHeaderType, 1))

	// A 2-byte access at 0xCFF straddles the end: the PIO bus refuses it,
	// and the device itself answers all-ones if asked directly.
	require.False(t, e.pio.Read(0xCFF, b2))
	e.setAddr(0, 0, 0, 0)
	e.cfg.Read(7, b2)
	require.Equal(t, []byte{0xFF, 0xFF}, b2)
	b3 := make([]byte, 3)
	e.cfg.Read(4, b3)
	require.Equal(t, []byte{0xFF, 0xFF, 0xFF}, b3, "3-byte accesses are not decoded")

	// Enable bit clear: data port floats.
	require.True(t, e.pio.Write(0xCF8, le32(0x00000000)))
	b4 := make([]byte, 4)
	require.True(t, e.pio.Read(0xCFC, b4))
	require.Equal(t, uint32(0xFFFFFFFF), binary.LittleEndian.Uint32(b4))
	require.True(t, e.pio.Write(0xCFC, le32(0)), "writes while disabled are dropped")

	// Absent devices, functions and buses read all-ones.
	require.Equal(t, uint32(0xFFFF), e.read(5, 0, 2))
	require.Equal(t, uint32(0xFFFFFFFF), e.read(31, 0, 4))
	e.setAddr(0, 0, 1, 0)
	require.True(t, e.pio.Read(0xCFC, b2))
	require.Equal(t, []byte{0xFF, 0xFF}, b2, "function 1")
	e.setAddr(1, 0, 0, 0)
	require.True(t, e.pio.Read(0xCFC, b2))
	require.Equal(t, []byte{0xFF, 0xFF}, b2, "bus 1")
	require.True(t, e.pio.Write(0xCF8, le32(0x81000000))) // AMD ECS register 0x100 of 00:00.0
	require.True(t, e.pio.Read(0xCFC, b2))
	require.Equal(t, []byte{0xFF, 0xFF}, b2, "no extended configuration space")
	e.write(5, RegCommand, 2, 0xFFFF) // no panic, no effect

	// 0xCF9 is the reset control register.
	e.setAddr(0, 0, 0, 0x08)
	require.True(t, e.pio.Write(0xCF9, []byte{0x06}))
	require.Equal(t, []byte{0x06}, e.reset.store[:1])
	require.True(t, e.pio.Read(0xCF9, b4[:1]))
	require.Equal(t, 2, e.reset.hits)
	require.True(t, e.pio.Read(0xCF8, addr))
	require.Equal(t, uint32(0x80000008), binary.LittleEndian.Uint32(addr), "CONFIG_ADDRESS unaffected by 0xCF9")
}

func TestConfigIOWithoutResetControl(t *testing.T) {
	pio, mmio := bus.New("pio"), bus.New("mmio")
	b, err := NewBus(Config{PIO: pio, MMIO: mmio})
	require.NoError(t, err)
	c := NewConfigIO(b, nil)
	require.NoError(t, c.Attach(pio))
	require.Error(t, c.Attach(pio))
	v := []byte{0}
	require.True(t, pio.Read(0xCF9, v))
	require.Equal(t, byte(0xFF), v[0])
	require.True(t, pio.Write(0xCF9, []byte{0x06}))
}

func TestHostBridgeHeader(t *testing.T) {
	e := newEnv(t, Config{})
	require.Equal(t, uint32(0x11001AF4), e.read(0, RegSubsystemVendorID, 4))
	require.Equal(t, uint32(0), e.read(0, RegInterruptPin, 1))
	require.Equal(t, uint32(0), e.read(0, RegCapPtr, 1))
	for i := 0; i < NumBARs; i++ {
		e.write(0, RegBAR0+4*i, 4, 0xFFFFFFFF)
		require.Equal(t, uint32(0), e.read(0, RegBAR0+4*i, 4), "host bridge has no BARs")
	}
	e.write(0, RegVendorID, 4, 0)
	require.Equal(t, uint32(0x12378086), e.read(0, 0, 4))
}

func TestGSI(t *testing.T) {
	for _, c := range []struct {
		slot int
		pin  uint8
		gsi  uint32
	}{{1, 1, 17}, {2, 1, 18}, {3, 1, 19}, {3, 2, 20}, {7, 2, 16}, {8, 1, 16}, {0, 1, 16}, {31, 4, 18}} {
		g, ok := GSI(c.slot, c.pin)
		require.True(t, ok)
		require.Equal(t, c.gsi, g, "slot %d pin %d", c.slot, c.pin)
	}
	for _, c := range []struct {
		slot int
		pin  uint8
	}{{1, 0}, {1, 5}, {-1, 1}, {32, 1}} {
		_, ok := GSI(c.slot, c.pin)
		require.False(t, ok)
	}
}

func TestSlotsAndInterruptLine(t *testing.T) {
	e := newEnv(t, Config{})
	d1, d2, d3 := newTestDev(t), newTestDev(t), newTestDev(t)
	s, err := e.pci.Add(d1)
	require.NoError(t, err)
	require.Equal(t, 1, s)
	require.NoError(t, e.pci.AddAt(3, d3))
	require.Error(t, e.pci.AddAt(3, newTestDev(t)), "taken")
	require.Error(t, e.pci.AddAt(0, newTestDev(t)), "host bridge slot")
	require.Error(t, e.pci.AddAt(32, newTestDev(t)))
	require.Error(t, e.pci.AddAt(4, nil))
	s, err = e.pci.Add(d2)
	require.NoError(t, err)
	require.Equal(t, 2, s)
	require.Same(t, d3, e.pci.Device(3))
	require.Nil(t, e.pci.Device(4))
	require.Nil(t, e.pci.Device(-1))

	require.Equal(t, uint32(17), e.read(1, RegInterruptLine, 1))
	require.Equal(t, uint32(19), e.read(3, RegInterruptLine, 1), "GSI 16 + (3+1-1) mod 8")
	require.Equal(t, uint32(0x0100|19), e.read(3, RegInterruptLine, 2), "pin INTA#")
	e.write(3, RegInterruptLine, 1, 0x0A)
	require.Equal(t, uint32(0x0A), e.read(3, RegInterruptLine, 1), "guest may rewrite the line")
	e.write(3, RegInterruptPin, 1, 3)
	require.Equal(t, uint32(1), e.read(3, RegInterruptPin, 1), "pin is read-only")

	for s := 4; s < NumSlots; s++ {
		require.NoError(t, e.pci.AddAt(s, &bareDev{}))
	}
	_, err = e.pci.Add(&bareDev{})
	require.Error(t, err, "bus full")
}

// bareDev is a Device without ConfigSpace: all registers read 0.
type bareDev struct{ cfg [ConfigSize]byte }

func (d *bareDev) ConfigRead(off int, data []byte) {
	for i := range data {
		if off+i >= 0 && off+i < ConfigSize {
			data[i] = d.cfg[off+i]
		} else {
			data[i] = 0xFF
		}
	}
}
func (d *bareDev) ConfigWrite(int, []byte) {}
func (d *bareDev) BARs() [NumBARs]BAR      { return [NumBARs]BAR{} }

func TestInitialBARs(t *testing.T) {
	e := newEnv(t, Config{})
	d := newTestDev(t)
	slot, err := e.pci.Add(d)
	require.NoError(t, err)
	require.Equal(t, uint32(0xC001), e.read(slot, RegBAR0, 4))
	require.Equal(t, uint32(0xC0000000), e.read(slot, RegBAR0+4, 4))
	require.Equal(t, uint32(0xC000400C), e.read(slot, RegBAR0+8, 4), "64-bit prefetchable, in the 32-bit window by default")
	require.Equal(t, uint32(0), e.read(slot, RegBAR0+12, 4))
	require.Equal(t, uint16(CommandIO|CommandMemory), d.Command(), "decode on, bus master off")
	require.Equal(t, []move{{0, 0, 0xC000}, {1, 0, 0xC0000000}, {2, 0, 0xC0004000}}, d.takeMoves())

	buf := make([]byte, 4)
	require.True(t, e.pio.Read(0xC010, buf))
	require.Equal(t, uint64(0x10), d.io.last)
	require.True(t, e.mmio.Read(0xC0000FFC, buf))
	require.Equal(t, uint64(0xFFC), d.m32.last)
	require.True(t, e.mmio.Read(0xC0007FFC, buf))
	require.Equal(t, uint64(0x3FFC), d.m64.last)

	d2 := newTestDev(t)
	slot2, err := e.pci.Add(d2)
	require.NoError(t, err)
	require.Equal(t, uint32(0xC021), e.read(slot2, RegBAR0, 4))
	require.Equal(t, uint32(0xC0008000), e.read(slot2, RegBAR0+4, 4), "bump allocation, naturally aligned")
	require.Equal(t, uint32(0xC000C00C), e.read(slot2, RegBAR0+8, 4))

	// With a 64-bit window, 64-bit BARs go there.
	e64 := newEnv(t, Config{Mem64: Window{Base: 0x1_0000_0000, Size: 64 << 30}})
	d3 := newTestDev(t)
	slot3, err := e64.pci.Add(d3)
	require.NoError(t, err)
	require.Equal(t, uint32(0x0000000C), e64.read(slot3, RegBAR0+8, 4))
	require.Equal(t, uint32(0x1), e64.read(slot3, RegBAR0+12, 4))
	addr, ok := e64.pci.BARMapping(slot3, 2)
	require.True(t, ok)
	require.Equal(t, uint64(0x1_0000_0000), addr)
	_, ok = e64.pci.BARMapping(slot3, 3)
	require.False(t, ok)
	_, ok = e64.pci.BARMapping(9, 0)
	require.False(t, ok)
}

func TestAllocatorExhaustion(t *testing.T) {
	e := newEnv(t, Config{IO: Window{Base: 0xC000, Size: 0x40}})
	_, err := e.pci.Add(newTestDev(t))
	require.NoError(t, err)
	_, err = e.pci.Add(newTestDev(t))
	require.NoError(t, err)
	_, err = e.pci.Add(newTestDev(t))
	require.ErrorContains(t, err, "no room")
	require.Nil(t, e.pci.Device(3))

	_, err = NewBus(Config{PIO: bus.New("p"), MMIO: bus.New("m"), IO: Window{Base: 0xF000, Size: 0x2000}})
	require.Error(t, err)
	_, err = NewBus(Config{PIO: bus.New("p"), MMIO: bus.New("m"), Mem32: Window{Base: 0xF0000000, Size: 0x20000000}})
	require.Error(t, err)
	_, err = NewBus(Config{PIO: bus.New("p"), MMIO: bus.New("m"), Mem64: Window{Base: ^uint64(0) - 10, Size: 0x1000}})
	require.Error(t, err)
	_, err = NewBus(Config{})
	require.Error(t, err)
}

// linuxSize probes a BAR like Linux's __pci_read_base: save, write all-ones,
// read back, restore; for 64-bit BARs the upper dword too.
func (e *env) linuxSize(slot, bar int) (size uint64, kind BARKind, pref bool) {
	reg := RegBAR0 + 4*bar
	l := e.read(slot, reg, 4)
	e.write(slot, reg, 4, 0xFFFFFFFF)
	sz := e.read(slot, reg, 4)
	e.write(slot, reg, 4, l)
	if l&barIOSpace != 0 {
		mask := sz &^ 0x3 & 0xFFFF
		return uint64(mask & -mask), BARIO, false
	}
	if l&0x6 == barMem64 {
		lh := e.read(slot, reg+4, 4)
		e.write(slot, reg+4, 4, 0xFFFFFFFF)
		szh := e.read(slot, reg+4, 4)
		e.write(slot, reg+4, 4, lh)
		mask := uint64(szh)<<32 | uint64(sz&^0xF)
		return mask & -mask, BARMem64, l&barPrefetchable != 0
	}
	mask := sz &^ 0xF
	return uint64(mask & -mask), BARMem32, l&barPrefetchable != 0
}

func TestBARSizingLikeLinux(t *testing.T) {
	e := newEnv(t, Config{})
	d := newTestDev(t)
	slot, err := e.pci.Add(d)
	require.NoError(t, err)
	d.takeMoves()
	orig := [4]uint32{}
	for i := range orig {
		orig[i] = e.read(slot, RegBAR0+4*i, 4)
	}

	// Linux turns decoding off while sizing.
	cmd := e.read(slot, RegCommand, 2)
	e.write(slot, RegCommand, 2, cmd&^(CommandIO|CommandMemory))
	require.Equal(t, []move{{0, 0xC000, 0}, {1, 0xC0000000, 0}, {2, 0xC0004000, 0}}, d.takeMoves())

	// Raw all-ones readbacks.
	e.write(slot, RegBAR0, 4, 0xFFFFFFFF)
	require.Equal(t, uint32(0xFFFFFFE1), e.read(slot, RegBAR0, 4))
	e.write(slot, RegBAR0+4, 4, 0xFFFFFFFF)
	require.Equal(t, uint32(0xFFFFF000), e.read(slot, RegBAR0+4, 4))
	e.write(slot, RegBAR0+8, 4, 0xFFFFFFFF)
	require.Equal(t, uint32(0xFFFFC00C), e.read(slot, RegBAR0+8, 4))
	e.write(slot, RegBAR0+12, 4, 0xFFFFFFFF)
	require.Equal(t, uint32(0xFFFFFFFF), e.read(slot, RegBAR0+12, 4))
	for i := range orig {
		e.write(slot, RegBAR0+4*i, 4, orig[i])
	}

	size, kind, pref := e.linuxSize(slot, 0)
	require.Equal(t, uint64(32), size)
	require.Equal(t, BARIO, kind)
	require.False(t, pref)
	size, kind, pref = e.linuxSize(slot, 1)
	require.Equal(t, uint64(0x1000), size)
	require.Equal(t, BARMem32, kind)
	require.False(t, pref)
	size, kind, pref = e.linuxSize(slot, 2)
	require.Equal(t, uint64(0x4000), size)
	require.Equal(t, BARMem64, kind)
	require.True(t, pref)
	for _, bar := range []int{4, 5} {
		e.write(slot, RegBAR0+4*bar, 4, 0xFFFFFFFF)
		require.Equal(t, uint32(0), e.read(slot, RegBAR0+4*bar, 4), "unused BAR")
	}
	e.write(slot, RegROMAddress, 4, 0xFFFFF801)
	require.Equal(t, uint32(0), e.read(slot, RegROMAddress, 4), "no expansion ROM")

	for i := range orig {
		require.Equal(t, orig[i], e.read(slot, RegBAR0+4*i, 4))
	}
	require.Empty(t, d.takeMoves(), "nothing mapped while decode is off")
	e.write(slot, RegCommand, 2, cmd)
	require.Equal(t, []move{{0, 0, 0xC000}, {1, 0, 0xC0000000}, {2, 0, 0xC0004000}}, d.takeMoves())
}

func TestRelocation(t *testing.T) {
	e := newEnv(t, Config{})
	d := newTestDev(t)
	slot, err := e.pci.Add(d)
	require.NoError(t, err)
	d.takeMoves()
	buf := make([]byte, 4)

	e.write(slot, RegBAR0+4, 4, 0xD0000000)
	require.Equal(t, []move{{1, 0xC0000000, 0xD0000000}}, d.takeMoves())
	require.False(t, e.mmio.Read(0xC0000000, buf))
	require.True(t, e.mmio.Read(0xD0000010, buf))
	require.Equal(t, uint64(0x10), d.m32.last)
	require.Equal(t, uint64(0xD0000000), d.BARAddress(1))

	e.write(slot, RegBAR0, 2, 0xE000)
	require.Equal(t, []move{{0, 0xC000, 0xE000}}, d.takeMoves())
	require.False(t, e.pio.Read(0xC000, buf))
	require.True(t, e.pio.Read(0xE01C, buf))

	// A 64-bit BAR moved dword by dword above 4 GiB.
	e.write(slot, RegBAR0+8, 4, 0x0010000C)
	e.write(slot, RegBAR0+12, 4, 0x8)
	require.Equal(t, []move{{2, 0xC0004000, 0x00100000}, {2, 0x00100000, 0x8_0010_0000}}, d.takeMoves())
	require.True(t, e.mmio.Read(0x8_0010_3FFC, buf))
	require.Equal(t, uint64(0x3FFC), d.m64.last)
	addr, ok := e.pci.BARMapping(slot, 2)
	require.True(t, ok)
	require.Equal(t, uint64(0x8_0010_0000), addr)
	require.Equal(t, uint64(0x8_0010_0000), d.BARAddress(2))

	// Invalid addresses unmap: 0, beyond the I/O space, all-ones.
	e.write(slot, RegBAR0+4, 4, 0)
	require.Equal(t, []move{{1, 0xD0000000, 0}}, d.takeMoves())
	e.write(slot, RegBAR0, 4, 0x10000)
	require.Equal(t, []move{{0, 0xE000, 0}}, d.takeMoves())
	e.write(slot, RegBAR0, 4, 0xFFE0)
	require.Equal(t, []move{{0, 0, 0xFFE0}}, d.takeMoves(), "the last 32 ports are usable")
	e.write(slot, RegBAR0+4, 4, 0xFFFFFFFF)
	require.Empty(t, d.takeMoves(), "all-ones is the sizing pattern, not an address")
	e.write(slot, RegBAR0+12, 4, 0xFFFFFFFF)
	require.Equal(t, []move{{2, 0x8_0010_0000, 0}}, d.takeMoves())
}

func TestDecodeDisable(t *testing.T) {
	e := newEnv(t, Config{})
	d := newTestDev(t)
	slot, err := e.pci.Add(d)
	require.NoError(t, err)
	d.takeMoves()
	buf := make([]byte, 1)

	e.write(slot, RegCommand, 2, CommandIO)
	require.Equal(t, []move{{1, 0xC0000000, 0}, {2, 0xC0004000, 0}}, d.takeMoves())
	require.False(t, e.mmio.Read(0xC0000000, buf))
	require.False(t, e.mmio.Read(0xC0004000, buf))
	require.True(t, e.pio.Read(0xC000, buf))

	e.write(slot, RegCommand, 2, 0)
	require.Equal(t, []move{{0, 0xC000, 0}}, d.takeMoves())
	require.False(t, e.pio.Read(0xC000, buf))

	// Moving a BAR while decode is off just takes effect on enable.
	e.write(slot, RegBAR0+4, 4, 0xC8000000)
	require.Empty(t, d.takeMoves())
	e.write(slot, RegCommand, 2, CommandMemory|CommandBusMaster)
	require.Equal(t, []move{{1, 0, 0xC8000000}, {2, 0, 0xC0004000}}, d.takeMoves())
	require.True(t, d.BusMaster())
	require.True(t, e.mmio.Read(0xC8000000, buf))
	require.False(t, e.pio.Read(0xC000, buf))
}

func TestOverlapPendingThenMapped(t *testing.T) {
	e := newEnv(t, Config{})
	d1, d2 := newTestDev(t), newTestDev(t)
	s1, err := e.pci.Add(d1)
	require.NoError(t, err)
	s2, err := e.pci.Add(d2)
	require.NoError(t, err)
	d1.takeMoves()
	d2.takeMoves()

	// d2's BAR1 onto d1's BAR1: the bus refuses the overlap, d2's BAR1
	// stays unmapped but pending.
	e.write(s2, RegBAR0+4, 4, 0xC0000000)
	require.Equal(t, []move{{1, 0xC0008000, 0}}, d2.takeMoves())
	_, ok := e.pci.BARMapping(s2, 1)
	require.False(t, ok)
	buf := make([]byte, 4)
	require.True(t, e.mmio.Read(0xC0000000, buf))
	require.Equal(t, 1, d1.m32.hits)

	// d1 moves away: d2's BAR1 gets mapped in the same sync.
	e.write(s1, RegBAR0+4, 4, 0xC0100000)
	require.Equal(t, []move{{1, 0xC0000000, 0xC0100000}}, d1.takeMoves())
	require.Equal(t, []move{{1, 0, 0xC0000000}}, d2.takeMoves())
	require.True(t, e.mmio.Read(0xC0000000, buf))
	require.Equal(t, 1, d2.m32.hits)

	// Collision with a non-PCI range (e.g. the IOAPIC).
	require.NoError(t, e.mmio.Register(0xFEC00000, 0x1000, &region{}))
	e.write(s1, RegBAR0+4, 4, 0xFEC00000)
	require.Equal(t, []move{{1, 0xC0100000, 0}}, d1.takeMoves())
}

func TestCapabilities(t *testing.T) {
	cs, err := NewConfigSpace(Header{VendorID: 0x1AF4, DeviceID: 0x1000, Class: 0x020000, InterruptPin: 1})
	require.NoError(t, err)
	require.Zero(t, cs.U16(RegStatus)&StatusCapList)
	vendorCap := func(cfgType byte, n int) []byte {
		b := make([]byte, n-2)
		b[0] = byte(n) // cap_len
		b[1] = cfgType
		return b
	}
	// The virtio-net-pci layout from QEMU: first fit from 0x40, each new
	// capability at the head of the list.
	var offs []int
	for _, c := range []struct {
		id   uint8
		body []byte
	}{
		{CapVendor, vendorCap(1, 16)}, {CapVendor, vendorCap(3, 16)}, {CapVendor, vendorCap(4, 16)},
		{CapVendor, vendorCap(2, 20)}, {CapVendor, vendorCap(5, 20)}, {CapMSIX, make([]byte, 10)},
	} {
		off, err := cs.AddCapability(c.id, c.body)
		require.NoError(t, err)
		offs = append(offs, off)
	}
	require.Equal(t, []int{0x40, 0x50, 0x60, 0x70, 0x84, 0x98}, offs)
	require.NotZero(t, cs.U16(RegStatus)&StatusCapList)

	// Walk the chain as Linux does.
	var walked []int
	var ids []uint8
	var b [2]byte
	cs.ConfigRead(RegCapPtr, b[:1])
	for p := int(b[0]); p != 0; {
		require.Zero(t, p&3)
		require.GreaterOrEqual(t, p, 0x40)
		walked = append(walked, p)
		cs.ConfigRead(p, b[:])
		ids = append(ids, b[0])
		p = int(b[1])
		require.Less(t, len(walked), 48, "loop in the capability list")
	}
	require.Equal(t, []int{0x98, 0x84, 0x70, 0x60, 0x50, 0x40}, walked)
	require.Equal(t, []uint8{CapMSIX, CapVendor, CapVendor, CapVendor, CapVendor, CapVendor}, ids)
	require.Equal(t, uint16(0x0514), cs.U16(0x84+2), "cap_len 20, cfg_type 5")

	// Capabilities are read-only unless made writable.
	cs.ConfigWrite(0x84, []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF})
	require.Equal(t, uint32(0x05147009), cs.U32(0x84))
	require.NoError(t, cs.SetWritable(0x84+4, []byte{0xFF}))
	cs.ConfigWrite(0x84+4, []byte{0x04})
	var v [1]byte
	cs.ConfigRead(0x84+4, v[:])
	require.Equal(t, byte(4), v[0])
	require.NoError(t, cs.SetW1C(0x98+3, []byte{0x40}))
	require.NoError(t, cs.Store(0x98+3, []byte{0xC0}))
	cs.ConfigWrite(0x98+3, []byte{0x40})
	cs.ConfigRead(0x98+3, v[:])
	require.Equal(t, byte(0x80), v[0], "W1C bit cleared, RO bit kept")

	// Fill the space; then there is no room.
	for {
		if _, err := cs.AddCapability(CapVendor, make([]byte, 30)); err != nil {
			require.ErrorContains(t, err, "no room")
			break
		}
	}
	off, err := cs.AddCapability(CapPowerManagement, make([]byte, 2))
	require.NoError(t, err, "a small one still fits at the end")
	require.Equal(t, 0, off%4)
	require.Error(t, cs.SetWritable(0xFF, []byte{1, 1}))
	require.Error(t, cs.SetW1C(-1, []byte{1}))
	require.Error(t, cs.Store(0x100, []byte{1}))
	require.Error(t, cs.Load(250, make([]byte, 8)))
}

func TestReadOnlyMasks(t *testing.T) {
	d := newTestDev(t)
	before := make([]byte, ConfigSize)
	d.ConfigRead(0, before)

	// Write all-ones over the identity and pointer registers.
	for _, off := range []int{RegVendorID, RegRevision, RegHeaderType & ^3, RegSubsystemVendorID, RegROMAddress, RegCapPtr} {
		d.ConfigWrite(off, []byte{0xFF, 0xFF, 0xFF, 0xFF})
	}
	after := make([]byte, ConfigSize)
	d.ConfigRead(0, after)
	require.Equal(t, byte(0xFF), after[RegCacheLineSize], "cache line size is RW")
	after[RegCacheLineSize] = before[RegCacheLineSize]
	require.Equal(t, before, after)

	d.ConfigWrite(RegCommand, []byte{0xFF, 0xFF})
	require.Equal(t, uint16(0x0547), d.Command())
	require.True(t, d.INTxDisabled())
	require.True(t, d.BusMaster())

	// Status: W1C error bits, RO INTx status and capability list.
	require.NoError(t, d.Store(RegStatus, []byte{0x18, 0xF9}))
	d.SetINTxStatus(true)
	d.ConfigWrite(RegStatus, []byte{0x00, 0x00})
	require.Equal(t, uint16(0xF918), d.U16(RegStatus), "writing 0 clears nothing")
	d.ConfigWrite(RegStatus, []byte{0xFF, 0x88})
	require.Equal(t, uint16(0x7118), d.U16(RegStatus), "1s clear error bits only")
	d.SetINTxStatus(false)
	require.Equal(t, uint16(0x7110), d.U16(RegStatus))

	d.ConfigWrite(RegLatencyTimer, []byte{0x40})
	require.Equal(t, uint16(0), d.U16(RegLatencyTimer)&0xFF, "latency timer RO 0")

	// Out-of-range accesses.
	b := []byte{0, 0, 0, 0}
	d.ConfigRead(254, b)
	require.Equal(t, []byte{0, 0, 0xFF, 0xFF}, b)
	d.ConfigRead(-2, b)
	require.Equal(t, []byte{0xFF, 0xFF, 0xF4, 0x1A}, b)
	d.ConfigWrite(-3, b)
	d.ConfigWrite(300, b)
	require.Equal(t, uint16(0xFF00), d.U16(255))
	require.Equal(t, uint32(0xFFFFFFFF), d.U32(ConfigSize))
	require.Equal(t, uint64(0), d.BARAddress(6))
	require.Equal(t, uint64(0), d.BARAddress(4))
}

func TestSetBARValidation(t *testing.T) {
	cs, err := NewConfigSpace(Header{})
	require.NoError(t, err)
	r := &region{}
	for _, c := range []struct {
		i int
		b BAR
	}{
		{0, BAR{Kind: BARIO, Size: 2, Handler: r}},
		{0, BAR{Kind: BARIO, Size: 512, Handler: r}},
		{0, BAR{Kind: BARIO, Size: 32, Prefetchable: true, Handler: r}},
		{0, BAR{Kind: BARMem32, Size: 8, Handler: r}},
		{0, BAR{Kind: BARMem32, Size: 0x3000, Handler: r}},
		{0, BAR{Kind: BARMem32, Size: 1 << 32, Handler: r}},
		{0, BAR{Kind: BARMem32, Size: 0x1000}},
		{5, BAR{Kind: BARMem64, Size: 0x1000, Handler: r}},
		{6, BAR{Kind: BARIO, Size: 4, Handler: r}},
		{-1, BAR{Kind: BARIO, Size: 4, Handler: r}},
		{0, BAR{Kind: 9, Size: 4, Handler: r}},
	} {
		require.Error(t, cs.SetBAR(c.i, c.b), "%+v", c)
	}
	require.NoError(t, cs.SetBAR(0, BAR{Kind: BARMem64, Size: 1 << 33, Handler: r}))
	require.Error(t, cs.SetBAR(1, BAR{Kind: BARIO, Size: 4, Handler: r}), "upper half of BAR 0")
	require.Error(t, cs.SetBAR(0, BAR{Kind: BARIO, Size: 4, Handler: r}), "already set")
	require.NoError(t, cs.SetBAR(3, BAR{Kind: BARIO, Size: 4, Handler: r}))
	require.Error(t, cs.SetBAR(2, BAR{Kind: BARMem64, Size: 16, Handler: r}), "next register taken")
	require.Equal(t, uint32(0xFFFFFFFE), cs.wmaskU32(RegBAR0+4), "8 GiB BAR: high dword bit 0 is a size bit")

	_, err = NewConfigSpace(Header{InterruptPin: 5})
	require.Error(t, err)
	_, err = NewConfigSpace(Header{Class: 1 << 24})
	require.Error(t, err)
	require.Equal(t, "mem64", BARMem64.String())
	require.Equal(t, "BARKind(7)", BARKind(7).String())

	// Devices with bad BAR tables are refused by the bus.
	e := newEnv(t, Config{})
	bad := &badBARDev{bars: [NumBARs]BAR{{Kind: BARMem64, Size: 16, Handler: r}, {Kind: BARIO, Size: 4, Handler: r}}}
	_, err = e.pci.Add(bad)
	require.Error(t, err)
	bad.bars = [NumBARs]BAR{{Kind: BARIO, Size: 3, Handler: r}}
	_, err = e.pci.Add(bad)
	require.Error(t, err)
}

type badBARDev struct {
	bareDev
	bars [NumBARs]BAR
}

func (d *badBARDev) BARs() [NumBARs]BAR { return d.bars }

func (c *ConfigSpace) wmaskU32(off int) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return binary.LittleEndian.Uint32(c.wmask[off:])
}

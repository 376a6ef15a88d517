package pci

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/rscvm/rscvm/devices/bus"
	"github.com/stretchr/testify/require"
)

// Fuzz op encoding, 8 bytes per op:
//
//	b0%4 == 0: config write via 0xCF8/0xCFC: slot b1%4, register b2, width 1<<(b3%3), value b4..b7
//	b0%4 == 1: config read, same addressing
//	b0%4 == 2: raw port access at 0xCF8+b1%8, width 1<<(b3%3), write if b2&1, value b4..b7
//	b0%4 == 3: command register write of b4..b5 to slot b1%4
func fuzzOp(kind, slot, reg, width byte, v uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{kind, slot, reg, width}, v)
}

func fuzzSeeds() [][]byte {
	var sizing []byte
	// Linux: decode off, size every BAR, restore, decode on.
	sizing = append(sizing, fuzzOp(3, 1, 0, 0, 0)...)
	for bar := 0; bar < 6; bar++ {
		reg := byte(RegBAR0 + 4*bar)
		sizing = append(sizing, fuzzOp(1, 1, reg, 2, 0)...)
		sizing = append(sizing, fuzzOp(0, 1, reg, 2, 0xFFFFFFFF)...)
		sizing = append(sizing, fuzzOp(1, 1, reg, 2, 0)...)
	}
	sizing = append(sizing, fuzzOp(0, 1, RegBAR0, 2, 0xD001)...)
	sizing = append(sizing, fuzzOp(0, 1, RegBAR0+4, 2, 0xD0000000)...)
	sizing = append(sizing, fuzzOp(0, 1, RegBAR0+8, 2, 0xD000400C)...)
	sizing = append(sizing, fuzzOp(0, 1, RegBAR0+12, 2, 0)...)
	sizing = append(sizing, fuzzOp(3, 1, 0, 0, CommandIO|CommandMemory|CommandBusMaster)...)

	var overlap []byte
	overlap = append(overlap, fuzzOp(0, 2, RegBAR0+4, 2, 0xC0000000)...)
	overlap = append(overlap, fuzzOp(0, 1, RegBAR0+4, 2, 0xC8000000)...)
	overlap = append(overlap, fuzzOp(0, 2, RegBAR0+8, 2, 0xC8000000)...)
	overlap = append(overlap, fuzzOp(0, 1, RegBAR0+8, 2, 0xC8000000)...)

	var ports []byte
	ports = append(ports, fuzzOp(2, 3, 1, 0, 0x01)...)
	ports = append(ports, fuzzOp(2, 0, 1, 2, 0x80000800)...)
	ports = append(ports, fuzzOp(2, 5, 0, 1, 0)...)
	ports = append(ports, fuzzOp(2, 6, 1, 1, 0x1234)...)
	ports = append(ports, fuzzOp(2, 1, 1, 0, 0x06)...)
	ports = append(ports, fuzzOp(0, 2, 0x86, 0, 0xFF)...)
	ports = append(ports, fuzzOp(0, 2, 0x06, 1, 0xFFFF)...)
	return [][]byte{sizing, overlap, ports}
}

func FuzzConfigAccess(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 8*256 {
			ops = ops[:8*256]
		}
		e := newEnv(t, Config{})
		d1, d2 := newTestDev(t), newTestDev(t)
		_, err := d2.AddCapability(CapVendor, []byte{16, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		require.NoError(t, err)
		off, err := d2.AddCapability(CapVendor, []byte{20, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		require.NoError(t, err)
		require.NoError(t, d2.SetWritable(off+4, []byte{0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}))
		require.NoError(t, e.pci.AddAt(1, d1))
		require.NoError(t, e.pci.AddAt(2, d2))
		devs := []*testDev{d1, d2}

		for len(ops) >= 8 {
			op := ops[:8]
			ops = ops[8:]
			v := binary.LittleEndian.Uint32(op[4:])
			width := 1 << (op[3] % 3)
			slot := int(op[1] % 4)
			switch op[0] % 4 {
			case 0:
				e.setAddr(0, slot, 0, int(op[2]))
				e.pio.Write(ConfigIOBase+4+uint64(op[2]&3), le32(v)[:width])
			case 1:
				e.setAddr(0, slot, 0, int(op[2]))
				e.pio.Read(ConfigIOBase+4+uint64(op[2]&3), make([]byte, width))
			case 2:
				port := ConfigIOBase + uint64(op[1]%8)
				if op[2]&1 != 0 {
					e.pio.Write(port, le32(v)[:width])
				} else {
					e.pio.Read(port, make([]byte, width))
				}
			case 3:
				e.setAddr(0, slot, 0, RegCommand)
				e.pio.Write(ConfigIOBase+4, le32(v)[:2])
			}
			checkInvariants(t, e, devs)
		}
	})
}

func checkInvariants(t *testing.T, e *env, devs []*testDev) {
	var b [4]byte
	e.pci.ConfigRead(0, 0, 0, b[:])
	require.Equal(t, uint32(0x12378086), binary.LittleEndian.Uint32(b[:]))
	for n, d := range devs {
		slot := n + 1
		require.Equal(t, uint32(0x10001AF4), d.U32(RegVendorID))
		require.Equal(t, uint32(0x02000000), d.U32(RegRevision))
		require.Equal(t, uint16(0), d.U16(RegHeaderType), "header type 0, no BIST")
		require.Equal(t, uint32(0), d.U32(RegROMAddress))
		require.Equal(t, uint32(0), d.U32(RegBAR0+16))
		require.Equal(t, uint32(0), d.U32(RegBAR0+20))
		require.Equal(t, uint16(0), d.Command()&^commandWritable)

		// The capability list stays a finite, aligned chain.
		seen := 0
		for p := int(d.U16(RegCapPtr) & 0xFF); p != 0; p = int(d.U16(p) >> 8) {
			require.Zero(t, p&3)
			require.GreaterOrEqual(t, p, capStart)
			seen++
			require.Less(t, seen, 48)
		}

		// Mappings agree with the registers.
		cmd := d.Command()
		for i, bar := range d.BARs() {
			if bar.Kind == BARNone {
				continue
			}
			w := uint64(0)
			var addr uint64
			switch bar.Kind {
			case BARIO:
				addr = uint64(d.U32(RegBAR0+4*i) &^ 3)
			case BARMem32:
				addr = uint64(d.U32(RegBAR0+4*i) &^ 0xF)
			case BARMem64:
				addr = uint64(d.U32(RegBAR0+4*i+4))<<32 | uint64(d.U32(RegBAR0+4*i)&^0xF)
			}
			require.Zero(t, addr&(bar.Size-1), "BAR registers keep natural alignment")
			on := cmd&CommandMemory != 0
			if bar.Kind == BARIO {
				on = cmd&CommandIO != 0
			}
			if on && barUsable(bar, addr) {
				w = addr
			}
			b := e.busFor(bar.Kind)
			got, mapped := e.pci.BARMapping(slot, i)
			if mapped {
				require.Equal(t, w, got, "slot %d BAR %d mapped at a stale address", slot, i)
				r := bar.Handler.(*region)
				hits := r.hits
				require.True(t, b.Read(got+bar.Size-1, make([]byte, 1)))
				require.Equal(t, hits+1, r.hits, "slot %d BAR %d: access reaches its handler", slot, i)
				continue
			}
			if w != 0 {
				err := b.Register(w, bar.Size, &region{})
				if err == nil {
					require.NoError(t, b.Unregister(w))
					t.Fatalf("slot %d BAR %d at %#x is free but not mapped", slot, i, w)
				}
				require.True(t, errors.Is(err, bus.ErrOverlap), "%v", err)
			}
		}
	}
}

func (e *env) busFor(k BARKind) *bus.Bus {
	if k == BARIO {
		return e.pio
	}
	return e.mmio
}

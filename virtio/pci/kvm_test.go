package virtiopci

import (
	"context"
	"encoding/binary"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/internal/testenv"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/vmm"
)

// portFunc is a bus device calling fn on writes.
type portFunc func(off uint64, data []byte)

func (f portFunc) Read(_ uint64, data []byte) {
	for i := range data {
		data[i] = 0xFF
	}
}
func (f portFunc) Write(off uint64, data []byte) { f(off, data) }

// A tiny assembler for the 32-bit test guest.
type asm []byte

func (a asm) b(bs ...byte) asm { return append(a, bs...) }
func (a asm) u16(v uint16) asm { return binary.LittleEndian.AppendUint16(a, v) }
func (a asm) u32(v uint32) asm { return binary.LittleEndian.AppendUint32(a, v) }
func (a asm) outImm(port uint16, al byte) asm {
	return a.b(0x66, 0xBA).u16(port).b(0xB0, al, 0xEE) // mov dx, port; mov al, v; out dx, al
}
func (a asm) outAX(port uint16, ax uint16) asm {
	return a.b(0x66, 0xBA).u16(port).b(0x66, 0xB8).u16(ax).b(0x66, 0xEF) // mov dx; mov ax; out dx, ax
}
func (a asm) store16(addr uint32, v uint16) asm { return a.b(0x66, 0xC7, 0x05).u32(addr).u16(v) }
func (a asm) store32(addr, v uint32) asm        { return a.b(0xC7, 0x05).u32(addr).u32(v) }

// The transport on a real KVM machine: queue notifications written by the
// guest reach the kick eventfds through KVM ioeventfds without a userspace
// exit (modern MMIO notify and the legacy port), and a queue interrupt
// signalled by the device reaches the guest as an MSI through the irqfd
// and the GSI route that follows the MSI-X table entry.
func TestKVMIOEventFDAndIRQFD(t *testing.T) {
	testenv.KVM(t)
	m, err := vmm.NewMachine(vmm.Config{MemBytes: 2 << 20, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer m.Close()

	dev := newFakeDev()
	tr, err := New(dev, m.Memory(), Options{Vectors: 4, Platform: MachinePlatform{m}, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer func() { require.NoError(t, tr.Close()) }()
	// No 64-bit window: BAR 4 lands below 4 GiB, reachable by 32-bit code.
	pb, err := pci.NewBus(pci.Config{PIO: m.PIO(), MMIO: m.MMIO()})
	require.NoError(t, err)
	require.NoError(t, pb.AddAt(testSlot, tr))
	io, ok := pb.BARMapping(testSlot, BARLegacy)
	require.True(t, ok)
	msix, ok := pb.BARMapping(testSlot, BARMSIX)
	require.True(t, ok)
	modern, ok := pb.BARMapping(testSlot, BARModern)
	require.True(t, ok)
	require.Less(t, modern, uint64(1<<32))

	// The host plays the driver's setup part through the buses.
	cfgW := func(off int, v uint64, n int) { pb.ConfigWrite(testSlot, 0, off, le(v, n)) }
	mmioW := func(addr uint64, v uint64, n int) { require.True(t, m.MMIO().Write(addr, le(v, n))) }
	common := func(off uint64, v uint64, n int) { mmioW(modern+off, v, n) }
	cfgW(pci.RegCommand, pci.CommandIO|pci.CommandMemory|pci.CommandBusMaster, 2)
	const vector = 0x41
	mmioW(msix+2*16, 0xFEE00000, 4) // entry 2: APIC 0, fixed, vector 0x41
	mmioW(msix+2*16+8, vector, 4)
	mmioW(msix+2*16+12, 0, 4)
	cfgW(tr.msixCap+msixCtrlHigh, msixEnableBit, 1)
	for _, s := range []uint8{virtio.StatusAcknowledge, virtio.StatusAcknowledge | virtio.StatusDriver} {
		common(CommonDeviceStatus, uint64(s), 1)
	}
	common(CommonDriverFeatureSelect, 1, 4)
	common(CommonDriverFeature, 1, 4) // VERSION_1
	common(CommonDeviceStatus, uint64(ackDriverFeat), 1)
	for i, n := range dev.sizes {
		l := layout(i, n)
		common(CommonQueueSelect, uint64(i), 2)
		common(CommonQueueDescLo, l.Desc, 4)
		common(CommonQueueAvailLo, l.Avail, 4)
		common(CommonQueueUsedLo, l.Used, 4)
		common(CommonQueueMSIXVector, 2, 2)
		common(CommonQueueEnable, 1, 2)
	}
	common(CommonDeviceStatus, uint64(ackDriverFeat|virtio.StatusDriverOK), 1)
	require.True(t, dev.active())
	require.False(t, tr.State().Status()&virtio.StatusDeviceNeedsReset != 0)
	evs := tr.IOEventFDs()
	require.Len(t, evs, 6)
	for _, e := range evs {
		t.Logf("ioeventfd %v", e)
	}

	// Guest: IDT with vector 0x41 -> handler; notify queue 1 (modern MMIO,
	// 2-byte store), queue 0 (modern, 4-byte store: the zero-length
	// ioeventfd matches any width) and queues 0 and 2 (legacy port); enable the LAPIC;
	// sti; tell the host it is ready; spin. The handler reports and powers
	// off.
	const (
		gdt, code, handler, spurious = 0x500, 0x1000, 0x1800, 0x1900
		idtr, idt                    = 0x2000, 0x3000
		readyPort, irqPort, donePort = 0xF0, 0xF1, 0xF4
	)
	mem := m.Memory()
	for i, d := range []uint64{0, 0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF} {
		require.NoError(t, mem.PutU64(gdt+uint64(i)*8, d))
	}
	require.NoError(t, mem.PutU16(idtr, 256*8-1))
	require.NoError(t, mem.PutU32(idtr+2, idt))
	gate := func(h uint64) uint64 { return h&0xFFFF | 0x10<<16 | 0x8E<<40 | h>>16<<48 }
	for v := uint64(0); v < 256; v++ {
		require.NoError(t, mem.PutU64(idt+v*8, gate(spurious))) // iret
	}
	require.NoError(t, mem.PutU64(idt+vector*8, gate(handler)))
	require.NoError(t, mem.PutU8(spurious, 0xCF))
	prog := asm{}.b(0xBC).u32(0x8000). // mov esp, 0x8000
						b(0x0F, 0x01, 0x1D).u32(idtr).         // lidt [idtr]
						outImm(0x21, 0xFF).outImm(0xA1, 0xFF). // mask the 8259s
						store16(uint32(modern+NotifyOffset+NotifyOffMultiplier*1), 1).
						store32(uint32(modern+NotifyOffset), 0). // any-length match: 4-byte store
						outAX(uint16(io+LegacyQueueNotify), 0).
						outAX(uint16(io+LegacyQueueNotify), 2).
						store32(0xFEE000F0, 0x1FF). // LAPIC SVR: software enable
						b(0xFB).                    // sti
						outImm(readyPort, 1).
						b(0xEB, 0xFE) // jmp $
	require.NoError(t, mem.Write(code, prog))
	require.NoError(t, mem.Write(handler, asm{}.outImm(irqPort, vector).store32(0xFEE000B0, 0).outImm(donePort, 0).b(0xEB, 0xFE)))

	var ready, irqs atomic.Int32
	require.NoError(t, m.PIO().Register(readyPort, 1, portFunc(func(uint64, []byte) {
		ready.Add(1)
		require.NoError(t, tr.SignalQueue(1)) // the device completes work on queue 1
	})))
	require.NoError(t, m.PIO().Register(irqPort, 1, portFunc(func(_ uint64, d []byte) {
		if d[0] == vector {
			irqs.Add(1)
		}
	})))
	require.NoError(t, m.PIO().Register(donePort, 1, portFunc(func(uint64, []byte) { m.PowerOff() })))
	require.NoError(t, m.SetBootEntry(vmm.BootEntry{RIP: code, GDTBase: gdt, GDTLimit: 4*8 - 1, CodeSel: 0x10, DataSel: 0x18}))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, m.Run(ctx))
	reason, err := m.Stopped()
	require.NoError(t, err)
	require.Equal(t, vmm.StopPowerOff, reason)

	require.Equal(t, int32(1), ready.Load())
	require.Equal(t, int32(1), irqs.Load(), "MSI delivered through the irqfd")
	for i := range 3 {
		ok, err := tr.Kicks()[i].Drain()
		require.NoError(t, err)
		require.True(t, ok, "queue %d kicked", i)
	}
	require.Equal(t, uint64(0), tr.UserNotifies(), "no notification reached userspace")
	require.Equal(t, uint64(ISRQueue), uint64(tr.irq.readISR()))
}

package virtiopci

import (
	"encoding/binary"
	"log/slog"
	"testing"

	"github.com/rscvm/rscvm/devices/bus"
	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
)

// Fuzz input: byte 0 picks the variant (transitional / modern-only /
// legacy-only, 4 or 0 vectors); then 8-byte operations
// [kind, a, b, c, v0..v3] with v the little-endian value:
//
//	kind%8 == 0: configuration write at a, width 1<<(b%3)
//	kind%8 == 1: configuration read at a, width 1<<(b%3)
//	kind%8 == 2: BAR 0 access at a; width 1<<(b%4); write if b&0x80
//	kind%8 == 3: BAR 1 access at a | (c&0xF)<<8
//	kind%8 == 4: BAR 4 access at (a | c<<8) % 0x4000
//	kind%8 == 5: device side: a%5 = 0 SignalQueue(b%5-1), 1 SignalConfig,
//	             2 NeedsReset, 3 process queue b%3, 4 guest memory byte c at v
//	kind%8 == 6: common configuration write at a%0x40 (width 1<<(b%3))
//	kind%8 == 7: BAR 4 access through the PCI_CFG window (offset v, length b)
const fuzzOpSize = 8

func op(kind, a, b, c byte, v uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{kind, a, b, c}, v)
}

const (
	w1 = 0x80 // write, width 1
	w2 = 0x81
	w4 = 0x82
	w8 = 0x83
)

func cw(off uint16, width byte, v uint32) []byte { // common config write
	return op(6, byte(off), width>>1&3, 0, v)
}

// Seeds: bring-up sequences of real drivers and the hostile corners.
func fuzzSeeds() [][]byte {
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	bm := op(0, pci.RegCommand, 1, 0, pci.CommandIO|pci.CommandMemory|pci.CommandBusMaster)
	var modern []byte
	modern = cat(modern, []byte{0}, bm)
	for v := 0; v < 4; v++ {
		modern = cat(modern,
			op(3, byte(16*v), w4, 0, 0xFEE00000), op(3, byte(16*v+8), w4, 0, uint32(0x4000+v)), op(3, byte(16*v+12), w4, 0, 0))
	}
	modern = cat(modern, op(0, 0x9B, 0, 0, msixEnableBit),
		cw(CommonDeviceStatus, 1, 1), cw(CommonDeviceStatus, 1, 3),
		cw(CommonDriverFeatureSelect, 4, 1), cw(CommonDriverFeature, 4, 1),
		cw(CommonDeviceStatus, 1, 11), cw(CommonMSIXConfig, 2, 0))
	for i := 0; i < 3; i++ {
		l := layout(i, 64)
		modern = cat(modern, cw(CommonQueueSelect, 2, uint32(i)), cw(CommonQueueSize, 2, 64),
			cw(CommonQueueDescLo, 4, uint32(l.Desc)), cw(CommonQueueAvailLo, 4, uint32(l.Avail)),
			cw(CommonQueueUsedLo, 4, uint32(l.Used)), cw(CommonQueueMSIXVector, 2, uint32(i+1)), cw(CommonQueueEnable, 2, 1))
	}
	modern = cat(modern, cw(CommonDeviceStatus, 1, 15),
		op(4, 0x04, w2, 0x30, 1), op(5, 3, 1, 0, 0), op(5, 0, 2, 0, 0), op(4, 0, 0, 0x10, 0),
		op(3, 2*16+12, w4, 0, 1), op(5, 0, 2, 0, 0), op(3, 0, 2, 0x08, 0), op(3, 2*16+12, w4, 0, 0),
		op(0, 0x9B, 0, 0, msixEnableBit|msixMaskAllBit), op(5, 1, 0, 0, 0), op(0, 0x9B, 0, 0, msixEnableBit),
		cw(CommonQueueSelect, 2, 1), cw(CommonQueueReset, 2, 1), cw(CommonQueueEnable, 2, 1),
		op(0, pci.RegCommand, 1, 0, pci.CommandIO|pci.CommandMemory), cw(CommonDeviceStatus, 1, 15), bm,
		cw(CommonDeviceStatus, 1, 0))

	var legacy []byte
	legacy = cat([]byte{2}, op(2, LegacyStatus, w1, 0, 1), op(2, LegacyStatus, w1, 0, 3),
		op(2, LegacyGuestFeatures, w4, 0, 1<<30))
	for i := 0; i < 3; i++ {
		l := layout(i, 256)
		legacy = cat(legacy, op(2, LegacyQueueSel, w2, 0, uint32(i)), op(2, LegacyQueueNum, 1, 0, 0),
			op(2, LegacyQueuePFN, w4, 0, uint32(l.Desc>>12)))
	}
	legacy = cat(legacy, op(2, LegacyStatus, w1, 0, 7), op(2, LegacyQueueNotify, w2, 0, 0), op(5, 3, 0, 0, 0),
		op(2, LegacyISR, 0, 0, 0), op(0, 0x98+3, 0, 0, msixEnableBit), op(2, LegacyMSIQueueVector, w2, 0, 9),
		op(2, LegacyConfigMSIX, 2, 0, 0), op(2, LegacyQueuePFN, w4, 0, 0))

	window := cat([]byte{1}, op(0, 0x84+capOffset, 2, 0, CommonNumQueues), op(0, 0x84+capLength, 2, 0, 2),
		op(1, 0x84+capCfgData, 2, 0, 0), op(7, 0, 1, 0, CommonDeviceStatus), op(7, 0, 3, 0, 0x14),
		op(7, 0, 4, 0, NotifyOffset+8), op(7, 0, 2, 0, 0x3FFE))

	moves := cat([]byte{3}, bm, op(0, pci.RegBAR0, 2, 0, 0xD001), op(0, pci.RegBAR0+16, 2, 0, 0xE000000C),
		op(0, pci.RegBAR0+20, 2, 0, 0), op(0, pci.RegCommand, 1, 0, 0), op(0, pci.RegBAR0+16, 2, 0, 0xFFFFFFFF),
		op(1, pci.RegBAR0+16, 2, 0, 0), op(0, pci.RegCommand, 1, 0, 7), op(0, pci.RegInterruptLine, 0, 0, 5),
		op(5, 1, 0, 0, 0), op(2, LegacyISR, 0, 0, 0))

	widths := []byte{4}
	for off := 0; off < 0x40; off += 3 {
		widths = cat(widths, op(4, byte(off), byte(off)%4|0x80, 0, 0xFFFFFFFF), op(4, byte(off), byte(off)%4, 0, 0))
	}
	return [][]byte{modern, legacy, window, moves, widths, {5}}
}

// fuzzDev is fakeDev whose queue processing reports guest errors instead
// of failing the test.
func (d *fakeDev) process(i int) {
	d.mu.Lock()
	qs, irq := d.queues, d.irq
	d.mu.Unlock()
	if irq == nil || i >= len(qs) || !qs[i].Ready() {
		return
	}
	q := qs[i]
	for n := 0; n < 8; n++ {
		c, err := q.Pop()
		if err != nil {
			irq.NeedsReset(err)
			return
		}
		if c == nil {
			break
		}
		if err := q.AddUsed(c, 0); err != nil {
			irq.NeedsReset(err)
			return
		}
	}
	q.PublishUsed()
	if q.NeedsNotify() {
		_ = irq.SignalQueue(i)
	}
}

func FuzzTransport(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 || len(in) > 1+fuzzOpSize*512 {
			return
		}
		variant := in[0] % 6
		o := Options{Vectors: 4, Logger: slog.New(slog.DiscardHandler)}
		switch variant % 3 {
		case 1:
			o.DisableLegacy = true
		case 2:
			o.DisableModern = true
		}
		if variant >= 3 {
			o.Vectors = 0
		}
		p := newFakePlatform()
		o.Platform = p
		mem, err := newMem()
		if err != nil {
			t.Fatal(err)
		}
		dev := newFakeDev()
		tr, err := New(dev, mem, o)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		pb, err := pci.NewBus(pci.Config{PIO: bus.New("pio"), MMIO: bus.New("mmio"), Mem64: pci.Window{Base: 1 << 32, Size: 1 << 30}})
		if err != nil {
			t.Fatal(err)
		}
		if err := pb.AddAt(testSlot, tr); err != nil {
			t.Fatal(err)
		}
		bars := tr.BARs()
		access := func(bar int, off uint64, b byte, v uint32) {
			h := bars[bar].Handler
			if h == nil {
				return
			}
			n := 1 << (b % 4)
			if size := bars[bar].Size; off >= size || off+uint64(n) > size {
				return
			}
			buf := binary.LittleEndian.AppendUint64(nil, uint64(v)|uint64(v)<<32)[:n]
			if b&0x80 != 0 {
				h.Write(off, buf)
			} else {
				h.Read(off, buf)
			}
		}
		for ops := in[1:]; len(ops) >= fuzzOpSize; ops = ops[fuzzOpSize:] {
			kind, a, b, c := ops[0], ops[1], ops[2], ops[3]
			v := binary.LittleEndian.Uint32(ops[4:8])
			n := 1 << (b % 3)
			buf := binary.LittleEndian.AppendUint32(nil, v)[:n]
			switch kind % 8 {
			case 0:
				pb.ConfigWrite(testSlot, 0, int(a), buf)
			case 1:
				pb.ConfigRead(testSlot, 0, int(a), buf)
			case 2:
				access(BARLegacy, uint64(a), b, v)
			case 3:
				access(BARMSIX, uint64(a)|uint64(c&0xF)<<8, b, v)
			case 4:
				access(BARModern, (uint64(a)|uint64(c)<<8)%ModernBARSize, b, v)
			case 5:
				switch a % 5 {
				case 0:
					_ = tr.SignalQueue(int(b%5) - 1)
				case 1:
					_ = tr.SignalConfig()
				case 2:
					tr.NeedsReset(errFake)
				case 3:
					dev.process(int(b % 3))
				case 4:
					_ = mem.PutU8(uint64(v)%memSize, c)
				}
			case 6:
				access(BARModern, uint64(a%0x40), b%3|0x80, v)
			case 7:
				if tr.pciCfgCap != 0 {
					c := tr.pciCfgCap
					pb.ConfigWrite(testSlot, 0, c+capOffset, binary.LittleEndian.AppendUint32(nil, v))
					pb.ConfigWrite(testSlot, 0, c+capLength, binary.LittleEndian.AppendUint32(nil, uint32(b%5)))
					if c&1 != 0 {
						pb.ConfigWrite(testSlot, 0, c+capCfgData, buf)
					} else {
						pb.ConfigRead(testSlot, 0, c+capCfgData, buf)
					}
				}
			}
			checkInvariants(t, tr, p, dev)
		}
	})
}

// checkInvariants verifies the transport's state is coherent.
func checkInvariants(t *testing.T, tr *Transport, p *fakePlatform, dev *fakeDev) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	st := tr.state.Status()
	if st&0x30 != 0 {
		t.Fatalf("reserved status bits set: %#x", st)
	}
	if tr.activated {
		if st&virtio.StatusDriverOK == 0 {
			t.Fatalf("active without DRIVER_OK: %#x", st)
		}
		if !tr.cfg.BusMaster() {
			t.Fatal("active without bus mastering")
		}
		if !dev.active() {
			t.Fatal("transport active, device not")
		}
	} else if dev.active() {
		t.Fatal("device active, transport not")
	}
	if tr.pending && (tr.activated || st&virtio.StatusDriverOK == 0) {
		t.Fatalf("pending activation with activated=%v status %#x", tr.activated, st)
	}
	// ioeventfds: exactly what the state calls for, all at mapped BARs.
	want := tr.wantedIOEventFDsLocked()
	got := p.events()
	if len(got) != len(tr.ioevents) {
		t.Fatalf("platform has %d ioeventfds, transport %d", len(got), len(tr.ioevents))
	}
	for _, r := range got {
		if !containsIOEventFD(tr.ioevents, r) {
			t.Fatalf("stray ioeventfd %v", r)
		}
		w := r
		if !r.PIO {
			w.Len = tr.notifyLen
		}
		if !containsIOEventFD(want, w) {
			t.Fatalf("unwanted ioeventfd %v", r)
		}
		bar := BARModern
		if r.PIO {
			bar = BARLegacy
		}
		base := tr.barBase[bar]
		if base == 0 || r.Addr < base || r.Addr >= base+tr.bars[bar].Size {
			t.Fatalf("ioeventfd %v outside BAR %d at %#x", r, bar, base)
		}
	}
	if len(want) != len(got) {
		t.Fatalf("want %d ioeventfds, have %d", len(want), len(got))
	}
	s := &tr.irq
	s.mu.Lock()
	defer s.mu.Unlock()
	uses := make([]uint32, s.nvec)
	for _, v := range append([]uint16{s.configVector}, s.queueVectors...) {
		if v == NoVector {
			continue
		}
		if int(v) >= s.nvec {
			t.Fatalf("vector %d with %d vectors", v, s.nvec)
		}
		uses[v]++
	}
	for v := 0; v < s.nvec; v++ {
		if uses[v] != s.use[v] {
			t.Fatalf("vector %d use count %d, assigned %d times", v, s.use[v], uses[v])
		}
		if s.pendingLocked(v) && (s.use[v] == 0 || !s.maskedLocked(v)) {
			t.Fatalf("vector %d pending while unused or unmasked", v)
		}
	}
	for i, q := range tr.queues {
		if q.Config().Vector != s.queueVectors[i] {
			t.Fatalf("queue %d vector %d, transport %d", i, q.Config().Vector, s.queueVectors[i])
		}
		if q.Ready() && (q.Size() == 0 || q.Size()&(q.Size()-1) != 0 || q.Size() > q.MaxSize()) {
			t.Fatalf("queue %d enabled with size %d", i, q.Size())
		}
	}
	if s.lineHigh && !(s.intxLevel && !s.intxDisabled) {
		t.Fatal("INTx driven while the function does not assert it")
	}
	for g, high := range p.levels {
		if high && (!s.lineHigh || g != s.lineGSI) {
			t.Fatalf("platform line %d high, transport drives %v/%d", g, s.lineHigh, s.lineGSI)
		}
	}
	if len(p.irqfds) != len(s.evs) || len(p.routes) != len(s.evs) {
		t.Fatalf("%d irqfds, %d routes for %d vectors", len(p.irqfds), len(p.routes), len(s.evs))
	}
	for v := range s.evs {
		if s.routeOK[v] && p.routes[s.gsis[v]] != s.routed[v] {
			t.Fatalf("vector %d route %v, transport thinks %v", v, p.routes[s.gsis[v]], s.routed[v])
		}
	}
}

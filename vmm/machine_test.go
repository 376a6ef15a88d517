package vmm

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/internal/testenv"
	"github.com/rscvm/rscvm/vmm/kvm"
)

func TestPIOExits(t *testing.T) {
	m := newTestMachine(t, 1)
	rec := &recorder{base: 0x10, readVal: func(off uint64, n int) uint64 {
		switch off {
		case 0:
			return 0x5A
		case 3: // port 0x13: a counter, for rep insb
			return 0
		}
		return 0
	}}
	var ctr byte = 0xA0
	rec.readVal = func(off uint64, n int) uint64 {
		if off == 3 {
			ctr++
			return uint64(ctr)
		}
		return 0x5A
	}
	require.NoError(t, m.PIO().Register(0x10, 4, rec))
	serial := &recorder{base: 0x3F8}
	require.NoError(t, m.PIO().Register(0x3F8, 8, serial))
	require.NoError(t, m.Memory().Write(0x2000, []byte("hello")))

	load(t, m, cat(
		movDX(0x3F8), movAL('A'), outAL, movAL('B'), outAL,
		movDX(0x10), movAX(0x1234), outAX,
		movEAX(0x12345678), outEAX,
		inAL, movDX(0x11), outAL, // echo the read of port 0x10
		movDX(0x99), inEAX, movDX(0x10), outEAX, // unhandled read: all-ones
		movDX(0x98), outAL, // unhandled write: dropped
		cld, movESI(0x2000), movECX(5), movDX(0x12), repOutsb,
		movEDI(0x3000), movECX(4), movDX(0x13), repInsb,
		done,
	))
	require.NoError(t, run(t, m))
	reason, err := m.Stopped()
	require.NoError(t, err)
	require.Equal(t, StopPowerOff, reason)

	require.Equal(t, []access{{0x3F8, true, []byte{'A'}}, {0x3F8, true, []byte{'B'}}}, serial.accesses())
	require.Equal(t, []access{
		{0x10, true, []byte{0x34, 0x12}},
		{0x10, true, []byte{0x78, 0x56, 0x34, 0x12}},
		{0x11, true, []byte{0x5A}},
		{0x10, true, []byte{0xFF, 0xFF, 0xFF, 0xFF}},
		{0x12, true, []byte{'h'}}, {0x12, true, []byte{'e'}}, {0x12, true, []byte{'l'}},
		{0x12, true, []byte{'l'}}, {0x12, true, []byte{'o'}},
	}, writes(rec.accesses()))
	got := make([]byte, 4)
	require.NoError(t, m.Memory().Read(0x3000, got))
	require.Equal(t, []byte{0xA1, 0xA2, 0xA3, 0xA4}, got, "rep insb stores each item in order")
}

func TestMMIOExits(t *testing.T) {
	m := newTestMachine(t, 1)
	const base = 0xD0000000
	rec := &recorder{base: base, readVal: func(off uint64, n int) uint64 { return 0xCAFEBABE }}
	require.NoError(t, m.MMIO().Register(base, 0x1000, rec))
	load(t, m, cat(
		loadEAX(base), storeEAX(base+4),
		storeImm32(base+8, 0xDEADBEEF),
		loadEAX(0xE0000000), storeEAX(base+12), // unhandled read: all-ones
		storeImm32(0xE0000004, 1), // unhandled write: dropped
		done,
	))
	require.NoError(t, run(t, m))
	require.Equal(t, []access{
		{base, false, []byte{0xBE, 0xBA, 0xFE, 0xCA}},
		{base + 4, true, []byte{0xBE, 0xBA, 0xFE, 0xCA}},
		{base + 8, true, []byte{0xEF, 0xBE, 0xAD, 0xDE}},
		{base + 12, true, []byte{0xFF, 0xFF, 0xFF, 0xFF}},
	}, rec.accesses())
}

func TestGuestCPUID(t *testing.T) {
	m := newTestMachine(t, 2)
	rec := &recorder{base: 0x10}
	require.NoError(t, m.PIO().Register(0x10, 4, rec))
	load(t, m, cat(
		movEAX(1), cpuid, movEAXB, movDX(0x10), outEAX, // leaf 1 EBX
		movEAX(0x40000000), cpuid, movEAXB, movDX(0x10), outEAX, // signature EBX
		done,
	))
	require.NoError(t, run(t, m))
	w := writes(rec.accesses())
	require.Len(t, w, 2)
	ebx1 := le32u(w[0].Data)
	require.Equal(t, uint32(0), ebx1>>24, "BSP APIC ID")
	require.Equal(t, uint32(2), ebx1>>16&0xFF, "logical processors")
	require.Equal(t, "KVMK", string(w[1].Data))
}

func le32u(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func TestInternalErrorReport(t *testing.T) {
	testenv.KVM(t)
	if !onPVM() {
		t.Skip("int3 is only an emulation failure under kvm_pvm; hardware KVM delivers #BP")
	}
	m := newTestMachine(t, 1)
	load(t, m, []byte{0x90, 0xCC, 0x90, 0x90})
	err := run(t, m)
	var ge *GuestError
	require.ErrorAs(t, err, &ge, "%v", err)
	t.Log(err)
	require.Contains(t, err.Error(), "KVM internal error (suberror 1: emulation failure)")
	require.Contains(t, err.Error(), "at RIP 0x1001")
	require.Contains(t, err.Error(), "instruction bytes cc")
	reason, _ := m.Stopped()
	require.Equal(t, StopError, reason)
}

func TestTripleFault(t *testing.T) {
	m := newTestMachine(t, 1)
	// An IDT of limit 0, then ud2: #UD cannot be delivered, nor #GP, nor #DF.
	require.NoError(t, m.Memory().Write(0x2000, []byte{0, 0, 0, 0, 0, 0}))
	load(t, m, cat([]byte{0x0F, 0x01, 0x1D}, le32(0x2000), []byte{0x0F, 0x0B}))
	err := run(t, m)
	var ge *GuestError
	require.ErrorAs(t, err, &ge, "%v", err)
	t.Log(err)
	require.Contains(t, err.Error(), "triple fault (KVM_EXIT_SHUTDOWN)")
	require.Contains(t, err.Error(), "at RIP 0x")
	require.Contains(t, err.Error(), "instruction bytes")
}

// stopsPromptly runs a spinning guest, calls stop and checks that Run
// returns quickly and no goroutine is left behind.
func stopsPromptly(t *testing.T, cpus int, stop func(m *Machine, cancel context.CancelFunc)) (StopReason, error) {
	t.Helper()
	m := newTestMachine(t, cpus)
	spin := &recorder{base: 0x10}
	require.NoError(t, m.PIO().Register(0x10, 1, spin))
	load(t, m, cat(movDX(0x10), outAL, jmpSelf))
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- m.Run(ctx) }()
	require.Eventually(t, func() bool { return len(spin.accesses()) > 0 }, 30*time.Second, time.Millisecond, "guest started")
	time.Sleep(20 * time.Millisecond) // now in jmp $
	start := time.Now()
	stop(m, cancel)
	var err error
	select {
	case err = <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after stop")
	}
	t.Logf("Run returned %v after %v", err, time.Since(start))
	// (Not require.Eventually: it polls from goroutines of its own.)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines left behind")
	reason, _ := m.Stopped()
	return reason, err
}

func TestStopWhileSpinning(t *testing.T) {
	reason, err := stopsPromptly(t, 1, func(m *Machine, _ context.CancelFunc) { m.Stop(nil) })
	require.NoError(t, err)
	require.Equal(t, StopRequested, reason)
}

func TestStopWithError(t *testing.T) {
	boom := errors.New("boom")
	reason, err := stopsPromptly(t, 1, func(m *Machine, _ context.CancelFunc) { m.Stop(boom) })
	require.ErrorIs(t, err, boom)
	require.Equal(t, StopError, reason)
}

func TestContextCancelSMP(t *testing.T) {
	// vCPU 1 waits for SIPI inside KVM_RUN; it must be kicked out too.
	reason, err := stopsPromptly(t, 2, func(_ *Machine, cancel context.CancelFunc) { cancel() })
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, StopCanceled, reason)
}

func TestSMPCreation(t *testing.T) {
	m := newTestMachine(t, 2)
	require.Equal(t, 2, m.CPUs())
	st, err := m.vcpus[0].kv.GetMPState()
	require.NoError(t, err)
	require.Equal(t, uint32(kvm.MPStateRunnable), st)
	st, err = m.vcpus[1].kv.GetMPState()
	require.NoError(t, err)
	require.Equal(t, uint32(kvm.MPStateUninitialized), st, "APs wait for INIT/SIPI")
	l, err := m.vcpus[0].kv.GetLAPIC()
	require.NoError(t, err)
	require.Equal(t, uint32(kvm.LAPICDeliveryModeExtINT), l.Reg32(kvm.LAPICRegLVTLINT0)&0x10700)
	require.Equal(t, uint32(kvm.LAPICDeliveryModeNMI), l.Reg32(kvm.LAPICRegLVTLINT1)&0x10700)
	load(t, m, done)
	require.NoError(t, run(t, m))
	require.ErrorIs(t, m.Run(context.Background()), ErrAlreadyRun)
}

func TestBootEntryRegisters(t *testing.T) {
	m := newTestMachine(t, 1)
	load(t, m, done)
	s, err := m.vcpus[0].kv.GetSregs()
	require.NoError(t, err)
	require.Equal(t, kvm.Segment{Limit: 0xFFFFFFFF, Selector: 0x10, Type: 0xB, Present: 1, DB: 1, S: 1, G: 1}, s.CS)
	require.Equal(t, kvm.Segment{Limit: 0xFFFFFFFF, Selector: 0x18, Type: 0x3, Present: 1, DB: 1, S: 1, G: 1}, s.SS)
	require.Equal(t, uint64(1), s.CR0&1)
	require.Equal(t, uint64(0), s.CR0&cr0PG)
	require.Equal(t, uint64(testGDT), s.GDT.Base)
	r, err := m.vcpus[0].kv.GetRegs()
	require.NoError(t, err)
	require.Equal(t, uint64(testCode), r.RIP)
	require.Equal(t, uint64(2), r.RFLAGS)

	// Bad entries are refused.
	for _, e := range []BootEntry{
		{RIP: testCode, GDTBase: testGDT, GDTLimit: 31, CodeSel: 0x18, DataSel: 0x18}, // data as code
		{RIP: testCode, GDTBase: testGDT, GDTLimit: 31, CodeSel: 0x10, DataSel: 0x10}, // code as data
		{RIP: testCode, GDTBase: testGDT, GDTLimit: 23, CodeSel: 0x10, DataSel: 0x18}, // past the limit
		{RIP: testCode, GDTBase: testGDT, GDTLimit: 31, CodeSel: 0x08, DataSel: 0x18}, // null descriptor
		{RIP: testCode, GDTBase: 1 << 40, GDTLimit: 31, CodeSel: 0x10, DataSel: 0x18}, // outside RAM
	} {
		require.Error(t, m.SetBootEntry(e), "%+v", e)
	}
}

func TestRunWithoutEntry(t *testing.T) {
	m := newTestMachine(t, 1)
	require.ErrorIs(t, m.Run(context.Background()), ErrNoBootEntry)
}

func TestIRQHelpers(t *testing.T) {
	m := newTestMachine(t, 1)
	require.NoError(t, m.IRQLine(4).Pulse())
	l := m.IRQLine(17)
	require.Equal(t, uint32(17), l.GSI())
	require.NoError(t, l.SetLevel(true))
	require.NoError(t, l.SetLevel(false))

	ev, err := kvm.NewEventFD(unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer ev.Close()
	rs, err := kvm.NewEventFD(unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer rs.Close()

	g1, err := m.AddMSIRoute(0xFEE00000, 0x4041)
	require.NoError(t, err)
	g2, err := m.AddMSIRoute(0xFEE00000, 0x4042)
	require.NoError(t, err)
	require.GreaterOrEqual(t, g1, uint32(NumIOAPICPins))
	require.NotEqual(t, g1, g2)
	require.NoError(t, m.SetMSIRoute(g1, 0xFEE00000, 0x4051))
	require.NoError(t, m.RegisterIRQFD(ev.File(), g1, nil))
	require.NoError(t, ev.Signal())
	require.NoError(t, m.UnregisterIRQFD(ev.File(), g1))
	require.NoError(t, m.RemoveMSIRoute(g1))
	require.Error(t, m.RemoveMSIRoute(g1))
	require.Error(t, m.SetMSIRoute(g1, 0, 0))
	g3, err := m.AddMSIRoute(0xFEE00000, 0x4043)
	require.NoError(t, err)
	require.Equal(t, g1, g3, "freed GSIs are reused")
	require.NoError(t, m.SignalMSI(0xFEE00000, 0x4030))

	// Level-triggered INTx through an irqfd with a resample fd.
	require.NoError(t, m.RegisterIRQFD(ev.File(), 18, rs.File()))
	require.NoError(t, m.UnregisterIRQFD(ev.File(), 18))
}

func TestIOEventFD(t *testing.T) {
	m := newTestMachine(t, 1)
	pioEv, err := kvm.NewEventFD(unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer pioEv.Close()
	mmioEv, err := kvm.NewEventFD(unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer mmioEv.Close()

	pioRec := &recorder{base: 0x5000}
	require.NoError(t, m.PIO().Register(0x5000, 2, pioRec))
	const base = 0xD0000000
	mmioRec := &recorder{base: base}
	require.NoError(t, m.MMIO().Register(base, 0x1000, mmioRec))

	pio := kvm.IOEventFD{FD: pioEv.File(), Addr: 0x5000, Len: 2, PIO: true}
	mmio := kvm.IOEventFD{FD: mmioEv.File(), Addr: base + 0x100, Len: 4, HasDataMatch: true, DataMatch: 7}
	require.NoError(t, m.RegisterIOEventFD(pio))
	require.NoError(t, m.RegisterIOEventFD(mmio))

	load(t, m, cat(
		movDX(0x5000), movAX(1), outAX, outAX, // two kicks, no exits
		storeImm32(base+0x100, 7), // datamatch: eventfd
		storeImm32(base+0x100, 8), // no match: MMIO exit
		done,
	))
	require.NoError(t, run(t, m))
	n, err := pioEv.Read()
	require.NoError(t, err)
	require.Equal(t, uint64(2), n)
	n, err = mmioEv.Read()
	require.NoError(t, err)
	require.Equal(t, uint64(1), n)
	require.Empty(t, pioRec.accesses())
	require.Equal(t, []access{{base + 0x100, true, []byte{8, 0, 0, 0}}}, mmioRec.accesses())

	require.NoError(t, m.UnregisterIOEventFD(pio))
	require.NoError(t, m.UnregisterIOEventFD(mmio))
}

// A crash in 64-bit mode at a kernel-style high address: the report reads
// the instruction bytes through the guest's 4-level page tables.
func TestCrashInLongMode(t *testing.T) {
	m := newTestMachine(t, 1)
	mem := m.Memory()
	// PML4 at 0x4000: [0] -> PDPT 0x5000, [511] -> PDPT 0x7000; both lead
	// to the PD at 0x6000 whose entry 0 is a 2 MiB page at 0. So linear
	// [0,2M) and [0xFFFFFFFF80000000,+2M) map physical [0,2M).
	for _, pt := range [][2]uint64{
		{0x4000, 0x5003}, {0x4000 + 511*8, 0x7003},
		{0x5000, 0x6003}, {0x7000 + 510*8, 0x6003},
		{0x6000, 0x83},
	} {
		require.NoError(t, mem.PutU64(pt[0], pt[1]))
	}
	require.NoError(t, mem.Write(0x2000, make([]byte, 10))) // IDTR: limit 0
	const ud2At = 0x1800
	require.NoError(t, mem.Write(ud2At, []byte{0x0F, 0x0B}))
	const gdtCode64 = 0x00AF9B000000FFFF
	require.NoError(t, mem.PutU64(testGDT+0x20, gdtCode64))
	prog32 := cat(
		[]byte{0x0F, 0x20, 0xE0, 0x83, 0xC8, 0x20, 0x0F, 0x22, 0xE0}, // cr4 |= PAE
		movEAX(0x4000), []byte{0x0F, 0x22, 0xD8}, // cr3 = PML4
		movECX(0xC0000080), []byte{0x0F, 0x32, 0x0D, 0x00, 0x01, 0x00, 0x00, 0x0F, 0x30}, // EFER |= LME
		[]byte{0x0F, 0x20, 0xC0, 0x0D, 0x00, 0x00, 0x00, 0x80, 0x0F, 0x22, 0xC0}, // cr0 |= PG
	)
	long := testCode + uint32(len(prog32)) + 7
	prog := cat(prog32,
		[]byte{0xEA}, le32(long), le16(0x20), // ljmp 0x20:long
		[]byte{0x0F, 0x01, 0x1C, 0x25}, le32(0x2000), // lidt [0x2000]
		[]byte{0x48, 0xB8}, le32(0x80000000+ud2At), le32(0xFFFFFFFF), // mov rax, 0xffffffff80001800
		[]byte{0xFF, 0xE0}, // jmp rax
	)
	require.NoError(t, mem.Write(testCode, prog))
	require.NoError(t, m.PIO().Register(donePort, 1, devFunc{write: func(uint64, []byte) { m.PowerOff() }}))
	for i, d := range []uint64{0, 0, gdtCode32, gdtData32} {
		require.NoError(t, mem.PutU64(testGDT+uint64(i)*8, d))
	}
	require.NoError(t, m.SetBootEntry(BootEntry{RIP: testCode, GDTBase: testGDT, GDTLimit: 5*8 - 1, CodeSel: 0x10, DataSel: 0x18}))
	err := run(t, m)
	var ge *GuestError
	require.ErrorAs(t, err, &ge, "%v", err)
	t.Log(err)
	require.Equal(t, uint64(0xFFFFFFFF80000000+ud2At), ge.RIP)
	require.Equal(t, []byte{0x0F, 0x0B}, ge.Insn[:2], "bytes read through the guest page tables")
	require.Contains(t, err.Error(), "at RIP 0xffffffff80001800: instruction bytes 0f 0b")
}

func TestResetFromDevice(t *testing.T) {
	m := newTestMachine(t, 1)
	require.NoError(t, m.PIO().Register(0xCF9, 1, devFunc{write: func(_ uint64, d []byte) {
		if d[0] == 6 {
			m.Reset()
		}
	}}))
	load(t, m, cat(movDX(0xCF9), movAL(6), outAL, jmpSelf))
	require.NoError(t, run(t, m))
	reason, err := m.Stopped()
	require.NoError(t, err)
	require.Equal(t, StopReset, reason)
}

func TestHighRAM(t *testing.T) {
	testenv.KVM(t)
	m, err := NewMachine(Config{MemBytes: 3<<30 + 64<<20})
	require.NoError(t, err)
	defer m.Close()
	rs := m.Memory().Regions()
	require.Len(t, rs, 2)
	require.Equal(t, uint64(0), rs[0].GPA)
	require.Equal(t, uint64(PCIHoleStart), rs[0].End())
	require.Equal(t, uint64(HighRAMStart), rs[1].GPA)
	require.Equal(t, uint64(HighRAMStart+64<<20), rs[1].End())
	require.NoError(t, m.Memory().PutU64(HighRAMStart+8, 42))
	require.False(t, m.Memory().Contains(PCIHoleStart, 1))
}

// The in-kernel PIT (created with the dummy speaker) serves ports 0x40-0x43
// and 0x61 itself: Linux's TSC calibration polls 0x61 without exiting.
func TestPITPortsInKernel(t *testing.T) {
	m := newTestMachine(t, 1)
	rec := &recorder{base: 0x40}
	require.NoError(t, m.PIO().Register(0x40, 0x22, rec))
	out := &recorder{base: 0x10}
	require.NoError(t, m.PIO().Register(0x10, 1, out))
	load(t, m, cat(
		movDX(0x61), inAL, movDX(0x10), outAL,
		movDX(0x43), movAL(0x34), outAL, // PIT channel 0 mode 2
		done,
	))
	require.NoError(t, run(t, m))
	require.Empty(t, rec.accesses(), "PIT and speaker ports reached userspace")
	require.Len(t, out.accesses(), 1)
}

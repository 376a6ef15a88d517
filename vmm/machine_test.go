package vmm

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

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
	requireKVM(t)
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

package kvm

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/internal/testenv"
)

// openKVM opens /dev/kvm, or skips the test when it is unusable, unless
// RSCVM_REQUIRE_KVM=1 makes that a failure.
func openKVM(t *testing.T) *System {
	t.Helper()
	s, err := Open("")
	if err != nil {
		testenv.SkipOrFail(t, "KVM is unusable: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newVM(t *testing.T, s *System) *VM {
	t.Helper()
	vm, err := s.CreateVM()
	require.NoError(t, err)
	t.Cleanup(func() { vm.Close() })
	require.NoError(t, vm.SetIdentityMapAddr(0xFFFBC000))
	require.NoError(t, vm.SetTSSAddr(0xFFFBD000))
	require.NoError(t, vm.CreateIRQChip())
	require.NoError(t, vm.CreatePIT2(PITSpeakerDummy))
	return vm
}

func TestSystem(t *testing.T) {
	s := openKVM(t)
	v, err := s.GetAPIVersion()
	require.NoError(t, err)
	require.Equal(t, APIVersion, v)
	for _, c := range []int{CapIRQChip, CapUserMemory, CapIRQRouting, CapIRQFD, CapIOEventFD, CapSignalMSI,
		CapIRQFDResample, CapSetIdentityMapAddr, CapImmediateExit, CapPIT2} {
		n, err := s.CheckExtension(c)
		require.NoError(t, err)
		require.Positivef(t, n, "capability %d", c)
	}
	sz, err := s.GetVCPUMmapSize()
	require.NoError(t, err)
	require.GreaterOrEqual(t, sz, 4096)
	ents, err := s.GetSupportedCPUID()
	require.NoError(t, err)
	require.NotEmpty(t, ents)
	require.Equal(t, uint32(0), ents[0].Function)
}

func TestVMAndVCPU(t *testing.T) {
	s := openKVM(t)
	vm := newVM(t, s)

	mem, err := unix.Mmap(-1, 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Munmap(mem) })
	require.NoError(t, vm.SetUserMemoryRegion(UserspaceMemoryRegion{
		Slot: 0, MemorySize: uint64(len(mem)), UserspaceAddr: addrOf(mem),
	}))

	v, err := vm.CreateVCPU(0)
	require.NoError(t, err)
	t.Cleanup(func() { v.Close() })
	require.Equal(t, 0, v.ID())

	ents, err := s.GetSupportedCPUID()
	require.NoError(t, err)
	require.NoError(t, v.SetCPUID2(ents))

	regs, err := v.GetRegs()
	require.NoError(t, err)
	regs.RAX = 0x1234
	regs.RIP = 0x1000
	require.NoError(t, v.SetRegs(regs))
	regs2, err := v.GetRegs()
	require.NoError(t, err)
	require.Equal(t, regs, regs2)

	sregs, err := v.GetSregs()
	require.NoError(t, err)
	require.Equal(t, uint64(0xFFFF0000), sregs.CS.Base, "reset state")
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	require.NoError(t, v.SetSregs(sregs))

	lapic, err := v.GetLAPIC()
	require.NoError(t, err)
	lint1 := lapic.Reg32(LAPICRegLVTLINT1)
	lapic.SetReg32(LAPICRegLVTLINT1, lint1&^LAPICDeliveryModeMask|LAPICDeliveryModeNMI)
	require.NoError(t, v.SetLAPIC(lapic))
	lapic, err = v.GetLAPIC()
	require.NoError(t, err)
	require.Equal(t, uint32(LAPICDeliveryModeNMI), lapic.Reg32(LAPICRegLVTLINT1)&LAPICDeliveryModeMask)

	fpu := &FPU{FCW: 0x37f, MXCSR: 0x1f80}
	require.NoError(t, v.SetFPU(fpu))
	fpu, err = v.GetFPU()
	require.NoError(t, err)
	require.Equal(t, uint16(0x37f), fpu.FCW)

	const msrSysenterCS = 0x174
	require.NoError(t, v.SetMSRs([]MSREntry{{Index: msrSysenterCS, Data: 0x10}}))
	msrs := []MSREntry{{Index: msrSysenterCS}}
	require.NoError(t, v.GetMSRs(msrs))
	require.Equal(t, uint64(0x10), msrs[0].Data)

	st, err := v.GetMPState()
	require.NoError(t, err)
	require.Equal(t, uint32(MPStateRunnable), st, "vCPU 0 is the BSP")

	tr, err := v.Translate(0x1234)
	require.NoError(t, err)
	require.Equal(t, uint64(0x1234), tr.PhysicalAddress, "paging is off")

	// A real-mode program: two port writes, then a store to 0x20000, past
	// the 64 KiB of RAM (an MMIO exit).
	prog := []byte{
		0xB0, 0x42, // mov al, 0x42
		0xE6, 0x10, // out 0x10, al
		0xBA, 0x11, 0x00, // mov dx, 0x11
		0xB8, 0xAA, 0x55, // mov ax, 0x55aa
		0xEF,             // out dx, ax
		0xB8, 0x00, 0x20, // mov ax, 0x2000
		0x8E, 0xD8, // mov ds, ax
		0xC6, 0x06, 0x00, 0x00, 0x07, // mov byte [0], 7
		0xF4, // hlt
	}
	copy(mem[0x1000:], prog)

	runOnce := func() uint32 {
		t.Helper()
		for {
			err := v.Run()
			if errors.Is(err, unix.EINTR) {
				continue
			}
			require.NoError(t, err)
			return v.ExitReason()
		}
	}
	require.Equal(t, uint32(ExitIO), runOnce())
	io, err := v.IO()
	require.NoError(t, err)
	require.Equal(t, IOExit{Out: true, Size: 1, Port: 0x10, Count: 1, Data: []byte{0x42}}, io)

	require.Equal(t, uint32(ExitIO), runOnce())
	io, err = v.IO()
	require.NoError(t, err)
	require.Equal(t, IOExit{Out: true, Size: 2, Port: 0x11, Count: 1, Data: []byte{0xAA, 0x55}}, io)

	require.Equal(t, uint32(ExitMMIO), runOnce())
	mm := v.MMIO()
	require.Equal(t, MMIOExit{Addr: 0x20000, IsWrite: true, Data: []byte{7}}, mm)

	// immediate_exit makes KVM_RUN return EINTR without entering the guest.
	v.SetImmediateExit(true)
	err = v.Run()
	require.ErrorIs(t, err, unix.EINTR)
	require.Contains(t, err.Error(), "KVM_RUN")
	v.SetImmediateExit(false)
}

func TestIRQFDAndIOEventFD(t *testing.T) {
	s := openKVM(t)
	vm := newVM(t, s)

	// A vCPU to receive MSIs (KVM_SIGNAL_MSI fails with EPERM when no
	// local APIC accepts the message).
	v, err := vm.CreateVCPU(0)
	require.NoError(t, err)
	defer v.Close()

	ev, err := NewEventFD(unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer ev.Close()
	rs, err := NewEventFD(unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer rs.Close()

	// Edge-triggered irqfd on an IOAPIC GSI, then deassign.
	require.NoError(t, vm.IRQFD(ev.File(), 5, nil))
	require.NoError(t, ev.Signal())
	require.NoError(t, vm.IRQFDDeassign(ev.File(), 5))
	// Level-triggered irqfd with a resample fd.
	require.NoError(t, vm.IRQFD(ev.File(), 20, rs.File()))
	require.NoError(t, vm.IRQFDDeassign(ev.File(), 20))

	// ioeventfd: PIO without and with datamatch, MMIO with datamatch.
	regs := []IOEventFD{
		{FD: ev.File(), Addr: 0x6000, Len: 2, PIO: true},
		{FD: ev.File(), Addr: 0x6010, Len: 4, PIO: true, HasDataMatch: true, DataMatch: 3},
		{FD: ev.File(), Addr: 0xD0000000, Len: 4, HasDataMatch: true, DataMatch: 1},
		{FD: ev.File(), Addr: 0xD0001000, Len: 2},
	}
	for _, r := range regs {
		require.NoError(t, vm.IOEventFD(r), r.String())
	}
	err = vm.IOEventFD(regs[0])
	require.ErrorIs(t, err, unix.EEXIST, "duplicate registration")
	for _, r := range regs {
		require.NoError(t, vm.IOEventFDDeassign(r), r.String())
	}
	err = vm.IOEventFDDeassign(regs[0])
	require.Error(t, err)
	require.Contains(t, err.Error(), "KVM_IOEVENTFD")

	// GSI routing with irqchip and MSI entries, irqfd on an MSI route, and
	// a direct MSI.
	routes := []IRQRoutingEntry{
		IRQChipRoute(0, IRQChipPICMaster, 0),
		IRQChipRoute(0, IRQChipIOAPIC, 2),
		IRQChipRoute(4, IRQChipIOAPIC, 4),
		MSIRoute(24, 0xFEE00000, 0x4030),
		MSIRoute(25, 0xFEE00000, 0x4031),
	}
	require.NoError(t, vm.SetGSIRouting(routes))
	require.NoError(t, vm.IRQFD(ev.File(), 24, nil))
	require.NoError(t, ev.Signal())
	require.NoError(t, vm.IRQFDDeassign(ev.File(), 24))
	_, err = vm.SignalMSI(0xFEE00000, 0x4030)
	require.NoError(t, err)
	require.NoError(t, vm.IRQLine(4, true))
	require.NoError(t, vm.IRQLine(4, false))

	// The eventfd itself works.
	require.NoError(t, ev.Signal())
	time.Sleep(time.Millisecond)
	n, err := ev.Read()
	require.NoError(t, err)
	require.Positive(t, n)
}

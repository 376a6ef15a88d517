package kvm

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// Sizes and offsets of the kernel's structures (x86-64), as the C compiler
// reports them for <linux/kvm.h>.
func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"kvm_userspace_memory_region", unsafe.Sizeof(UserspaceMemoryRegion{}), 32},
		{"kvm_regs", unsafe.Sizeof(Regs{}), 144},
		{"kvm_segment", unsafe.Sizeof(Segment{}), 24},
		{"kvm_dtable", unsafe.Sizeof(DTable{}), 16},
		{"kvm_sregs", unsafe.Sizeof(Sregs{}), 312},
		{"kvm_fpu", unsafe.Sizeof(FPU{}), 416},
		{"kvm_lapic_state", unsafe.Sizeof(LAPICState{}), 1024},
		{"kvm_translation", unsafe.Sizeof(Translation{}), 24},
		{"kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry{}), 40},
		{"kvm_cpuid2", unsafe.Sizeof(cpuid2Header{}), 8},
		{"kvm_msr_entry", unsafe.Sizeof(MSREntry{}), 16},
		{"kvm_msrs", unsafe.Sizeof(msrsHeader{}), 8},
		{"kvm_irq_level", unsafe.Sizeof(irqLevel{}), 8},
		{"kvm_pit_config", unsafe.Sizeof(PITConfig{}), 64},
		{"kvm_irqfd", unsafe.Sizeof(irqfd{}), 32},
		{"kvm_ioeventfd", unsafe.Sizeof(ioeventfd{}), 64},
		{"kvm_msi", unsafe.Sizeof(MSI{}), 32},
		{"kvm_irq_routing", unsafe.Sizeof(irqRoutingHeader{}), 8},
		{"kvm_irq_routing_entry", unsafe.Sizeof(IRQRoutingEntry{}), 48},
		{"kvm_run up to the exit union end", unsafe.Sizeof(runHeader{}), 288},
		{"kvm_run.io", unsafe.Sizeof(ioExit{}), 16},
		{"kvm_run.mmio", unsafe.Sizeof(mmioExit{}), 24},
		{"kvm_run.internal", unsafe.Sizeof(internalExit{}), 136},
		{"kvm_run.emulation_failure", unsafe.Sizeof(emulationFailureExit{}), 32},
		{"kvm_run.system_event", unsafe.Sizeof(systemEventExit{}), 136},
		{"kvm_run.fail_entry", unsafe.Sizeof(failEntryExit{}), 16},
	} {
		require.Equal(t, c.want, c.got, c.name)
	}
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"kvm_run.immediate_exit", unsafe.Offsetof(runHeader{}.ImmediateExit), 1},
		{"kvm_run.exit_reason", unsafe.Offsetof(runHeader{}.ExitReason), 8},
		{"kvm_run.flags", unsafe.Offsetof(runHeader{}.Flags), 14},
		{"kvm_run.cr8", unsafe.Offsetof(runHeader{}.CR8), 16},
		{"kvm_run exit union", unsafe.Offsetof(runHeader{}.Exit), 32},
		{"kvm_run.io.port", 32 + unsafe.Offsetof(ioExit{}.Port), 34},
		{"kvm_run.io.count", 32 + unsafe.Offsetof(ioExit{}.Count), 36},
		{"kvm_run.io.data_offset", 32 + unsafe.Offsetof(ioExit{}.DataOffset), 40},
		{"kvm_run.mmio.data", 32 + unsafe.Offsetof(mmioExit{}.Data), 40},
		{"kvm_run.mmio.len", 32 + unsafe.Offsetof(mmioExit{}.Len), 48},
		{"kvm_run.mmio.is_write", 32 + unsafe.Offsetof(mmioExit{}.IsWrite), 52},
		{"kvm_run.internal.data", 32 + unsafe.Offsetof(internalExit{}.Data), 40},
		{"kvm_run.emulation_failure.flags", 32 + unsafe.Offsetof(emulationFailureExit{}.Flags), 40},
		{"kvm_run.emulation_failure.insn_size", 32 + unsafe.Offsetof(emulationFailureExit{}.InsnSize), 48},
		{"kvm_run.emulation_failure.insn_bytes", 32 + unsafe.Offsetof(emulationFailureExit{}.InsnBytes), 49},
		{"kvm_run.system_event.ndata", 32 + unsafe.Offsetof(systemEventExit{}.NData), 36},
		{"kvm_run.system_event.data", 32 + unsafe.Offsetof(systemEventExit{}.Data), 40},
		{"kvm_run.fail_entry.cpu", 32 + unsafe.Offsetof(failEntryExit{}.CPU), 40},
		{"kvm_sregs.tr", unsafe.Offsetof(Sregs{}.TR), 144},
		{"kvm_sregs.gdt", unsafe.Offsetof(Sregs{}.GDT), 192},
		{"kvm_sregs.cr0", unsafe.Offsetof(Sregs{}.CR0), 224},
		{"kvm_sregs.efer", unsafe.Offsetof(Sregs{}.EFER), 264},
		{"kvm_sregs.interrupt_bitmap", unsafe.Offsetof(Sregs{}.InterruptBitmap), 280},
		{"kvm_regs.rip", unsafe.Offsetof(Regs{}.RIP), 128},
		{"kvm_fpu.mxcsr", unsafe.Offsetof(FPU{}.MXCSR), 408},
		{"kvm_ioeventfd.flags", unsafe.Offsetof(ioeventfd{}.Flags), 24},
		{"kvm_irqfd.resamplefd", unsafe.Offsetof(irqfd{}.ResampleFD), 12},
		{"kvm_irq_routing_entry.u", unsafe.Offsetof(IRQRoutingEntry{}.U), 16},
	} {
		require.Equal(t, c.want, c.got, c.name)
	}
}

// The ioctl numbers derived from the Go structures equal the kernel's.
func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		got  uintptr
		want uintptr
	}{
		{kvmGetAPIVersion, 0xae00},
		{kvmCreateVM, 0xae01},
		{kvmCheckExtension, 0xae03},
		{kvmGetVCPUMmapSize, 0xae04},
		{kvmGetSupportedCPUID, 0xc008ae05},
		{kvmCreateVCPU, 0xae41},
		{kvmSetUserMemoryRegion, 0x4020ae46},
		{kvmSetTSSAddr, 0xae47},
		{kvmSetIdentityMapAddr, 0x4008ae48},
		{kvmCreateIRQChip, 0xae60},
		{kvmIRQLine, 0x4008ae61},
		{kvmSetGSIRouting, 0x4008ae6a},
		{kvmIRQFD, 0x4020ae76},
		{kvmCreatePIT2, 0x4040ae77},
		{kvmIOEventFD, 0x4040ae79},
		{kvmSignalMSI, 0x4020aea5},
		{kvmRun, 0xae80},
		{kvmGetRegs, 0x8090ae81},
		{kvmSetRegs, 0x4090ae82},
		{kvmGetSregs, 0x8138ae83},
		{kvmSetSregs, 0x4138ae84},
		{kvmTranslate, 0xc018ae85},
		{kvmGetMSRs, 0xc008ae88},
		{kvmSetMSRs, 0x4008ae89},
		{kvmGetFPU, 0x81a0ae8c},
		{kvmSetFPU, 0x41a0ae8d},
		{kvmGetLAPIC, 0x8400ae8e},
		{kvmSetLAPIC, 0x4400ae8f},
		{kvmSetCPUID2, 0x4008ae90},
		{kvmGetMPState, 0x8004ae98},
		{kvmSetMPState, 0x4004ae99},
	} {
		require.Equalf(t, c.want, c.got, "%s", ioctlName(c.got))
		require.NotEmpty(t, ioctlName(c.got))
	}
	require.Len(t, ioctlNames, 31, "every ioctl number is distinct and named")
}

func TestRoutes(t *testing.T) {
	e := MSIRoute(30, 0x1_FEE0_1000, 0x4041)
	require.Equal(t, IRQRoutingEntry{GSI: 30, Type: IRQRoutingMSI, U: [8]uint32{0xFEE01000, 1, 0x4041}}, e)
	e = IRQChipRoute(0, IRQChipIOAPIC, 2)
	require.Equal(t, IRQRoutingEntry{GSI: 0, Type: IRQRoutingIRQChip, U: [8]uint32{2, 2}}, e)
}

func TestExitNames(t *testing.T) {
	require.Equal(t, "KVM_EXIT_SHUTDOWN", ExitName(ExitShutdown))
	require.Equal(t, "KVM exit reason 200", ExitName(200))
	require.Equal(t, "emulation failure", InternalErrorName(1))
}

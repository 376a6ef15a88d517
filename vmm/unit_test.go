package vmm

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/vmm/kvm"
)

func TestRAMLayout(t *testing.T) {
	require.Equal(t, []RAMRange{{0, 512 << 20}}, RAMLayout(512<<20))
	require.Equal(t, []RAMRange{{0, 3 << 30}}, RAMLayout(3<<30))
	require.Equal(t, []RAMRange{{0, 3 << 30}, {4 << 30, 1 << 30}}, RAMLayout(4<<30))
	require.Equal(t, uint64(5<<30), RAMLayout(4 << 30)[1].End())
	require.Equal(t, uint64(4<<30), PCIMMIO64Start(512<<20))
	require.Equal(t, uint64(5<<30), PCIMMIO64Start(4<<30))
	require.Equal(t, uint64(6<<30), PCIMMIO64Start(4<<30+4096))
	// KVM's private pages are in the hole, outside the PCI window and the APICs.
	require.GreaterOrEqual(t, uint64(IdentityMapAddr), uint64(LAPICAddr+0x1000))
	require.Less(t, uint64(TSSAddr+3*0x1000), uint64(HighRAMStart))
}

func TestDecodeDescriptor(t *testing.T) {
	require.Equal(t, kvm.Segment{Limit: 0xFFFFFFFF, Type: 0xB, Present: 1, DB: 1, S: 1, G: 1},
		decodeDescriptor(gdtCode32))
	require.Equal(t, kvm.Segment{Limit: 0xFFFFFFFF, Type: 0x3, Present: 1, DB: 1, S: 1, G: 1},
		decodeDescriptor(gdtData32))
	// 64-bit code, DPL 3, base 0x12345678, byte-granular limit 0x5FFFF.
	require.Equal(t, kvm.Segment{Base: 0x12345678, Limit: 0x5FFFF, Type: 0xA, Present: 1, DPL: 3, S: 1, L: 1, AVL: 1},
		decodeDescriptor(0x1235FA345678FFFF))
}

func TestGuestCPUIDAdjustments(t *testing.T) {
	supported := []kvm.CPUIDEntry{
		{Function: 0, EAX: 0x1F},
		{Function: 1, EBX: 0xAB_CD_08_00 | 0x0800, ECX: 0x1, EDX: 0x1},
		{Function: 0xB, Index: 0, Flags: 1, EAX: 9, EBX: 9, ECX: 0x100, EDX: 9},
		{Function: 0x1F, Index: 0, Flags: 1, EAX: 9},
		{Function: 7, EBX: 0x55},
		{Function: 0x40000000, EAX: 0x40000001},
		{Function: 0x40000001, EAX: 0x1234},
	}
	got := guestCPUID(supported, 3, 6, false)
	find := func(fn, idx uint32) kvm.CPUIDEntry {
		t.Helper()
		var found []kvm.CPUIDEntry
		for _, e := range got {
			if e.Function == fn && e.Index == idx {
				found = append(found, e)
			}
		}
		require.Len(t, found, 1, "leaf %#x.%d", fn, idx)
		return found[0]
	}
	l1 := find(1, 0)
	require.Equal(t, uint32(3), l1.EBX>>24, "APIC ID")
	require.Equal(t, uint32(8), l1.EBX>>16&0xFF, "addressable logical processors (2^3 >= 6)")
	require.Equal(t, uint32(0x0800), l1.EBX&0xFFFF, "CLFLUSH size kept")
	require.NotZero(t, l1.ECX&cpuid1ECXHypervisor)
	require.NotZero(t, l1.EDX&cpuid1EDXHTT)
	require.Equal(t, uint32(1), l1.ECX&1, "other features kept")
	require.Equal(t, uint32(0x55), find(7, 0).EBX, "other leaves untouched")
	for _, leaf := range []uint32{0xB, 0x1F} {
		smt, core, end := find(leaf, 0), find(leaf, 1), find(leaf, 2)
		require.Equal(t, kvm.CPUIDEntry{Function: leaf, Index: 0, Flags: 1, EAX: 0, EBX: 1, ECX: 0x100, EDX: 3}, smt)
		require.Equal(t, kvm.CPUIDEntry{Function: leaf, Index: 1, Flags: 1, EAX: 3, EBX: 6, ECX: 0x201, EDX: 3}, core)
		require.Equal(t, kvm.CPUIDEntry{Function: leaf, Index: 2, Flags: 1, ECX: 2, EDX: 3}, end)
	}
	hv := find(0x40000000, 0)
	require.Equal(t, kvm.CPUIDEntry{Function: 0x40000000, EAX: 0x40000001, EBX: kvmSigEBX, ECX: kvmSigECX, EDX: kvmSigEDX}, hv)
	require.Equal(t, uint32(0x1234), find(0x40000001, 0).EAX)

	// Without the hypervisor leaves and with max basic leaf < 0xB.
	got = guestCPUID([]kvm.CPUIDEntry{{Function: 0, EAX: 0xA}, {Function: 1}}, 0, 1, false)
	require.Len(t, got, 4)
	l1 = got[1]
	require.Equal(t, uint32(1), l1.EBX>>16&0xFF)
	require.Zero(t, l1.EDX&cpuid1EDXHTT, "one vCPU: no HTT")
	require.Equal(t, uint32(kvmSigEBX), got[2].EBX)
	require.Equal(t, uint32(0x40000001), got[3].Function)
}

func TestIRQChipRoutes(t *testing.T) {
	rs := irqchipRoutes()
	type key struct{ gsi, chip uint32 }
	pins := map[key]uint32{}
	for _, r := range rs {
		require.Equal(t, uint32(kvm.IRQRoutingIRQChip), r.Type)
		k := key{r.GSI, r.U[0]}
		_, dup := pins[k]
		require.False(t, dup)
		pins[k] = r.U[1]
	}
	require.Equal(t, uint32(2), pins[key{0, kvm.IRQChipIOAPIC}], "PIT on IOAPIC pin 2")
	require.Equal(t, uint32(0), pins[key{0, kvm.IRQChipPICMaster}])
	require.Equal(t, uint32(4), pins[key{4, kvm.IRQChipIOAPIC}])
	require.Equal(t, uint32(1), pins[key{9, kvm.IRQChipPICSlave}])
	require.Equal(t, uint32(23), pins[key{23, kvm.IRQChipIOAPIC}])
	_, ok := pins[key{2, kvm.IRQChipIOAPIC}]
	require.False(t, ok, "GSI 2 is the PIT's pin, not routed by itself")
	_, ok = pins[key{16, kvm.IRQChipPICMaster}]
	require.False(t, ok)
	require.Len(t, rs, 15+23)
}

func TestGuestErrorMessage(t *testing.T) {
	e := &GuestError{VCPU: 1, Exit: "KVM internal error (suberror 1: emulation failure)", RIP: 0xffffffff81234567,
		Insn: []byte{0xcc, 0x0f, 0x1f}}
	require.Equal(t, "guest stopped: KVM internal error (suberror 1: emulation failure) at RIP 0xffffffff81234567: "+
		"instruction bytes cc 0f 1f (vCPU 1)", e.Error())
	e = &GuestError{Exit: "triple fault (KVM_EXIT_SHUTDOWN)", RIP: 0x1000, InsnErr: errors.New("nope"), Data: []uint64{1, 2}}
	require.Equal(t, "guest stopped: triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x1000: instruction bytes unavailable: nope "+
		"(KVM data 0x1 0x2) (vCPU 0)", e.Error())
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{MemBytes: 1 << 19},
		{MemBytes: 1<<20 + 1},
		{MemBytes: 1 << 20, CPUs: -1},
		{MemBytes: 1 << 20, CPUs: 256},
	} {
		_, err := NewMachine(c)
		require.Error(t, err, "%+v", c)
	}
	_, err := NewMachine(Config{MemBytes: 1 << 20, KVMPath: "/nonexistent/kvm"})
	require.ErrorContains(t, err, "/nonexistent/kvm")
}

func TestGuestCPUIDOnSoftwareKVM(t *testing.T) {
	supported := []kvm.CPUIDEntry{{Function: 0, EAX: 1}, {Function: 1, ECX: 1 << 21}, {Function: cpuidLeafHypervisor, EAX: cpuidLeafKVMFeatures},
		{Function: cpuidLeafKVMFeatures, EAX: 0xFFFF}}
	find := func(es []kvm.CPUIDEntry) uint32 {
		for _, e := range es {
			if e.Function == cpuidLeafKVMFeatures {
				return e.EAX
			}
		}
		t.Fatal("no KVM features leaf")
		return 0
	}
	require.Equal(t, uint32(0xFFFF), find(guestCPUID(supported, 0, 2, false)))
	got := find(guestCPUID(supported, 0, 2, true))
	require.Zero(t, got&(1<<7|1<<11|1<<13), "PV unhalt, PV send-IPI and PV sched-yield need VMCALL")
	require.Equal(t, uint32(0xFFFF&^(1<<7|1<<11|1<<13)), got, "every other PV feature stays")
	x2apic := func(es []kvm.CPUIDEntry) bool {
		for _, e := range es {
			if e.Function == 1 {
				return e.ECX&(1<<21) != 0
			}
		}
		return false
	}
	require.True(t, x2apic(guestCPUID(supported, 0, 2, false)))
	require.False(t, x2apic(guestCPUID(supported, 0, 2, true)), "x2APIC IPIs are lost on kvm_pvm")
}

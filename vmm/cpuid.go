package vmm

import (
	"math/bits"
	"os"

	"github.com/rscvm/rscvm/vmm/kvm"
)

// CPUID leaves and bits the machine adjusts.
const (
	cpuidLeafBasic       = 0x0
	cpuidLeafFeatures    = 0x1
	cpuidLeafTopology    = 0xB
	cpuidLeafTopologyV2  = 0x1F
	cpuidLeafHypervisor  = 0x40000000
	cpuidLeafKVMFeatures = 0x40000001

	cpuid1EDXHTT        = 1 << 28
	cpuid1ECXX2APIC     = 1 << 21
	cpuid1ECXHypervisor = 1 << 31

	topoLevelSMT  = 1
	topoLevelCore = 2

	// KVM paravirtual features (leaf 0x40000001 EAX) that the guest drives
	// with the VMCALL hypercall instruction.
	kvmFeaturePVUnhalt     = 1 << 7  // KVM_HC_KICK_CPU for PV spinlocks
	kvmFeaturePVSendIPI    = 1 << 11 // KVM_HC_SEND_IPI
	kvmFeaturePVSchedYield = 1 << 13 // KVM_HC_SCHED_YIELD
	kvmHypercallFeatures   = kvmFeaturePVUnhalt | kvmFeaturePVSendIPI | kvmFeaturePVSchedYield
)

// hostIsSoftwareKVM reports whether the host's KVM is kvm_pvm, a software
// KVM that runs guest kernel code through KVM's instruction emulator
// (docs: guest-images.md). Two of its gaps break SMP guests, so the machine
// hides the features that lead a guest into them:
//   - it cannot execute VMCALL, so KVM's hypercall-based PV features (PV
//     IPIs, PV unhalt, PV sched-yield) never reach the other vCPU;
//   - IPIs sent through the x2APIC ICR MSR are not delivered (a 2-vCPU
//     Linux hangs in stop_machine when it switches clocksource), while the
//     xAPIC's memory-mapped ICR works.
func hostIsSoftwareKVM() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil
}

// KVM's hypervisor signature "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
const (
	kvmSigEBX = 0x4b4d564b // "KVMK"
	kvmSigECX = 0x564b4d56 // "VMKV"
	kvmSigEDX = 0x0000004d // "M\0\0\0"
)

// guestCPUID derives vCPU apicID's CPUID from KVM_GET_SUPPORTED_CPUID.
//
// Adjusted: the initial APIC ID (leaf 1 EBX[31:24], leaves 0xB and 0x1F
// EDX), the topology (one thread per core, cpus cores in one package, in
// leaves 1, 0xB and 0x1F), the hypervisor bit (leaf 1 ECX[31]) and the KVM
// signature leaf 0x40000000 (so Linux enables its KVM guest support: kvmclock,
// PV EOI...). Nothing else is masked: KVM reports only features it can
// virtualise. Features the host's software KVM cannot emulate (see
// docs/guest-images.md) are masked on the guest kernel command line instead,
// which Linux honours reliably. The exceptions are for a software KVM
// (softKVM, see hostIsSoftwareKVM): x2APIC and the KVM paravirtual features
// that need VMCALL are hidden, and the guest falls back to xAPIC IPIs and
// native spinlocks.
func guestCPUID(supported []kvm.CPUIDEntry, apicID, cpus int, softKVM bool) []kvm.CPUIDEntry {
	coreShift := uint32(bits.Len(uint(cpus - 1))) // bits of APIC ID that number the cores
	out := make([]kvm.CPUIDEntry, 0, len(supported)+6)
	var maxBasic uint32
	sawHV, sawKVMFeatures := false, false
	for _, e := range supported {
		switch e.Function {
		case cpuidLeafTopology, cpuidLeafTopologyV2:
			continue // rebuilt below
		case cpuidLeafBasic:
			maxBasic = e.EAX
		case cpuidLeafFeatures:
			e.EBX = e.EBX&0x0000FFFF | uint32(apicID)<<24 | (uint32(1)<<coreShift)<<16
			if cpus > 1 {
				e.EDX |= cpuid1EDXHTT
			}
			e.ECX |= cpuid1ECXHypervisor
			if softKVM {
				e.ECX &^= cpuid1ECXX2APIC
			}
		case cpuidLeafHypervisor:
			sawHV = true
			e.EAX = max(e.EAX, cpuidLeafKVMFeatures)
			e.EBX, e.ECX, e.EDX = kvmSigEBX, kvmSigECX, kvmSigEDX
		case cpuidLeafKVMFeatures:
			sawKVMFeatures = true
			if softKVM {
				e.EAX &^= kvmHypercallFeatures
			}
		}
		out = append(out, e)
	}
	if !sawHV {
		out = append(out, kvm.CPUIDEntry{Function: cpuidLeafHypervisor, EAX: cpuidLeafKVMFeatures,
			EBX: kvmSigEBX, ECX: kvmSigECX, EDX: kvmSigEDX})
	}
	if !sawKVMFeatures {
		out = append(out, kvm.CPUIDEntry{Function: cpuidLeafKVMFeatures})
	}
	for _, leaf := range []uint32{cpuidLeafTopology, cpuidLeafTopologyV2} {
		if maxBasic < leaf {
			continue
		}
		out = append(out, topologyLeaf(leaf, 0, 0, 1, topoLevelSMT, apicID),
			topologyLeaf(leaf, 1, coreShift, uint32(cpus), topoLevelCore, apicID),
			topologyLeaf(leaf, 2, 0, 0, 0, apicID))
	}
	return out
}

// topologyLeaf is one sub-leaf of CPUID 0xB/0x1F: shift is the APIC ID
// width below the next level, count the logical processors at this level.
func topologyLeaf(leaf, sub, shift, count, levelType uint32, apicID int) kvm.CPUIDEntry {
	return kvm.CPUIDEntry{
		Function: leaf,
		Index:    sub,
		Flags:    kvm.CPUIDFlagSignificantIndex,
		EAX:      shift,
		EBX:      count,
		ECX:      levelType<<8 | sub,
		EDX:      uint32(apicID),
	}
}

package kvm

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DevicePath is the usual path of the KVM device.
const DevicePath = "/dev/kvm"

// APIVersion is the only KVM API version this package speaks.
const APIVersion = 12

// System is an open /dev/kvm.
type System struct {
	f *os.File
}

// Open opens the KVM device at path (DevicePath if empty) and checks the API
// version.
func Open(path string) (*System, error) {
	if path == "" {
		path = DevicePath
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &System{f: os.NewFile(uintptr(fd), path)}
	v, err := s.GetAPIVersion()
	if err != nil {
		s.f.Close()
		return nil, err
	}
	if v != APIVersion {
		s.f.Close()
		return nil, fmt.Errorf("%s: KVM API version %d, want %d", path, v, APIVersion)
	}
	return s, nil
}

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error { return s.f.Close() }

// File returns the underlying file.
func (s *System) File() *os.File { return s.f }

// GetAPIVersion is KVM_GET_API_VERSION.
func (s *System) GetAPIVersion() (int, error) {
	r, err := ioctlInt(s.f, kvmGetAPIVersion, 0)
	return int(r), err
}

// CheckExtension is KVM_CHECK_EXTENSION on /dev/kvm: 0 when the capability
// is missing, otherwise a capability-specific positive value.
func (s *System) CheckExtension(capability int) (int, error) {
	r, err := ioctlInt(s.f, kvmCheckExtension, uintptr(capability))
	return int(r), err
}

// GetVCPUMmapSize is KVM_GET_VCPU_MMAP_SIZE: the size of each vCPU's
// kvm_run mapping.
func (s *System) GetVCPUMmapSize() (int, error) {
	r, err := ioctlInt(s.f, kvmGetVCPUMmapSize, 0)
	return int(r), err
}

// maxCPUIDEntries bounds KVM_GET_SUPPORTED_CPUID's buffer; KVM's own limit
// (KVM_MAX_CPUID_ENTRIES) is 256.
const maxCPUIDEntries = 256

// cpuidBuffer is struct kvm_cpuid2 with room for maxCPUIDEntries entries.
type cpuidBuffer struct {
	cpuid2Header
	Entries [maxCPUIDEntries]CPUIDEntry
}

// GetSupportedCPUID is KVM_GET_SUPPORTED_CPUID: the CPUID leaves KVM can
// present to a guest.
func (s *System) GetSupportedCPUID() ([]CPUIDEntry, error) {
	buf := new(cpuidBuffer)
	buf.NEnt = maxCPUIDEntries
	if _, err := ioctlPtr(s.f, kvmGetSupportedCPUID, unsafe.Pointer(buf)); err != nil {
		return nil, err
	}
	n := min(int(buf.NEnt), maxCPUIDEntries)
	return append([]CPUIDEntry(nil), buf.Entries[:n]...), nil
}

// CreateVM is KVM_CREATE_VM (default machine type).
func (s *System) CreateVM() (*VM, error) {
	r, err := ioctlInt(s.f, kvmCreateVM, 0)
	if err != nil {
		return nil, err
	}
	mmapSize, err := s.GetVCPUMmapSize()
	if err != nil {
		unix.Close(int(r))
		return nil, err
	}
	return &VM{f: os.NewFile(r, "kvm-vm"), mmapSize: mmapSize}, nil
}

// Package boot loads a Linux kernel into guest memory and describes how a
// vCPU must enter it.
//
// Two formats are supported: a bzImage through the Linux x86 32-bit boot
// protocol (boot_params "zero page" in RSI), and an ELF kernel carrying the
// Xen PVH entry note (hvm_start_info in RBX). Both enter in 32-bit protected
// mode with paging off and flat segments from the GDT this package writes.
//
// Kernel and initrd images are files supplied by the user and are treated as
// untrusted input: every offset and length in them is bounds-checked, and all
// writes go through the bounds-checked memory.Memory.
package boot

// Guest-physical layout of the boot data (see the machine layout shared by
// the VMM packages).
const (
	// GDTAddr is where the boot GDT is written.
	GDTAddr = 0x500
	// StartInfoAddr is where the PVH hvm_start_info is written; its module
	// list and memory map follow it in the same page.
	StartInfoAddr = 0x6000
	// ZeroPageAddr is where the bzImage boot_params (zero page) is written.
	ZeroPageAddr = 0x7000
	// CmdlineAddr is where the NUL-terminated kernel command line goes.
	CmdlineAddr = 0x20000
	// CmdlineMax is the room reserved for the command line, NUL included.
	CmdlineMax = 0x10000
	// KernelAddr is where a bzImage's protected-mode kernel is loaded, and
	// the lowest address a PVH segment may be loaded at.
	KernelAddr = 0x100000
	// RSDPAddr is the guest-physical address of the ACPI RSDP.
	RSDPAddr = 0xE0000

	// CodeSelector is the GDT selector of the flat 32-bit code segment.
	CodeSelector = 0x10
	// DataSelector is the GDT selector of the flat 32-bit data segment.
	DataSelector = 0x18

	pageSize = 0x1000

	ebdaStart     = 0x9FC00
	ebdaEnd       = 0xA0000
	biosAreaStart = 0xE0000
	biosAreaEnd   = 0x100000
	pciHoleStart  = 0xC0000000
	fourGiB       = 0x1_0000_0000
)

package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/rscvm/rscvm/vmm/memory"
)

// Entry is the vCPU state a loaded kernel must be entered with: 32-bit
// protected mode, paging off, CS = CodeSel and DS/ES/SS = DataSel from the
// GDT at GDTBase, interrupts disabled, the other general registers zero.
type Entry struct {
	RIP      uint64 // 32-bit protected-mode entry point (bzImage code32_start, or PVH XEN_ELFNOTE_PHYS32_ENTRY)
	RSI      uint64 // bzImage: GPA of boot_params (zero page); 0 for PVH
	RBX      uint64 // PVH: GPA of hvm_start_info; 0 for bzImage
	GDTBase  uint64 // GPA of the GDT written into guest memory (0x500)
	GDTLimit uint16
	CodeSel  uint16 // 0x10: flat 32-bit code segment
	DataSel  uint16 // 0x18: flat 32-bit data segment
}

// Kind is the format of a loaded kernel.
type Kind int

// Kernel formats.
const (
	KindBzImage Kind = iota + 1 // Linux bzImage, 32-bit boot protocol
	KindPVH                     // ELF with a Xen PVH entry note
)

// String names the format.
func (k Kind) String() string {
	switch k {
	case KindBzImage:
		return "bzImage"
	case KindPVH:
		return "PVH ELF"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ErrUnknownFormat is returned by Load for an image that is neither a
// bzImage nor an ELF with a PVH entry note.
var ErrUnknownFormat = errors.New("kernel: not a bzImage (no HdrS magic at 0x202) and not an ELF with a PVH entry note")

// Load detects the kernel's format and loads it, the initrd (may be empty)
// and the command line into mem, together with the GDT and the boot
// information the format needs (zero page or hvm_start_info, E820 map built
// from mem's regions, RSDP address). The ACPI tables themselves are written
// separately (package acpi).
func Load(mem *memory.Memory, kernel []byte, initrd []byte, cmdline string) (Entry, Kind, error) {
	if bytes.HasPrefix(kernel, elfMagic) {
		e, err := LoadPVH(mem, kernel, initrd, cmdline)
		if errors.Is(err, errNoPVHNote) {
			return Entry{}, 0, ErrUnknownFormat
		}
		return e, KindPVH, err
	}
	if len(kernel) >= hdrMagicOff+4 && string(kernel[hdrMagicOff:hdrMagicOff+4]) == hdrMagic {
		e, err := LoadBzImage(mem, kernel, initrd, cmdline)
		return e, KindBzImage, err
	}
	return Entry{}, 0, ErrUnknownFormat
}

// gdtEntries are the boot GDT: null, null, flat 4 GiB 32-bit code (execute/
// read, accessed) at 0x10 and flat 4 GiB data (read/write, accessed) at 0x18.
var gdtEntries = [4]uint64{
	0,
	0,
	0x00CF9B000000FFFF,
	0x00CF93000000FFFF,
}

// writeGDT writes the boot GDT and returns an Entry with its fields set.
func writeGDT(mem *memory.Memory) (Entry, error) {
	var b [len(gdtEntries) * 8]byte
	for i, d := range gdtEntries {
		binary.LittleEndian.PutUint64(b[i*8:], d)
	}
	if err := guestWrite(mem, GDTAddr, b[:]); err != nil {
		return Entry{}, fmt.Errorf("writing GDT: %w", err)
	}
	return Entry{
		GDTBase:  GDTAddr,
		GDTLimit: uint16(len(b) - 1),
		CodeSel:  CodeSelector,
		DataSel:  DataSelector,
	}, nil
}

// checkCmdline checks the command line against maxLen (bytes, without the
// terminating NUL) and the room at CmdlineAddr.
func checkCmdline(cmdline string, maxLen uint64) error {
	if i := bytes.IndexByte([]byte(cmdline), 0); i >= 0 {
		return fmt.Errorf("command line contains a NUL byte at offset %d", i)
	}
	if uint64(len(cmdline)) > maxLen {
		return fmt.Errorf("command line is %d bytes, the kernel accepts at most %d", len(cmdline), maxLen)
	}
	if uint64(len(cmdline)) >= CmdlineMax {
		return fmt.Errorf("command line is %d bytes, at most %d fit at %#x", len(cmdline), CmdlineMax-1, CmdlineAddr)
	}
	return nil
}

// writeCmdline checks the command line (see checkCmdline) and writes it
// NUL-terminated at CmdlineAddr.
func writeCmdline(mem *memory.Memory, cmdline string, maxLen uint64) error {
	if err := checkCmdline(cmdline, maxLen); err != nil {
		return err
	}
	b := make([]byte, len(cmdline)+1)
	copy(b, cmdline)
	if err := guestWrite(mem, CmdlineAddr, b); err != nil {
		return fmt.Errorf("writing command line: %w", err)
	}
	return nil
}

// lowRAMEnd is the end of usable RAM below 4 GiB.
func lowRAMEnd(e820 []E820Entry) uint64 {
	var end uint64
	for _, e := range e820 {
		if e.Type == E820RAM && e.Addr < fourGiB {
			end = max(end, min(e.End(), fourGiB))
		}
	}
	return end
}

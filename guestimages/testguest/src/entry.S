/*
 * entry.S - PVH entry of the rscvm test guest.
 *
 * The loader (QEMU's pvh.bin or rscvm) jumps to pvh_start in 32-bit protected
 * mode, paging off, with EBX = physical address of struct hvm_start_info. We
 * zero .bss (not .noinit), identity-map the first 4 GiB with 2 MiB pages (0xC0000000 and up,
 * the PCI hole, with PCD|PWT), enter long mode and call main(start_info).
 *
 * Kept small on purpose: under the emulated KVM every instruction costs ~750 ns.
 */

#define CR0_PE		0x00000001
#define CR0_PG		0x80000000
#define CR4_PAE		0x00000020
#define MSR_EFER	0xc0000080
#define EFER_LME	0x00000100

#define PTE_P		0x001
#define PTE_RW		0x002
#define PTE_PWT		0x008
#define PTE_PCD		0x010
#define PTE_PS		0x080

#define PAGE_2M		0x200000
#define PCI_HOLE_PDES	1536	/* 0xC0000000 / 2 MiB */
#define TOTAL_PDES	2048	/* 4 GiB / 2 MiB */

#define KERNEL_CS	0x08
#define KERNEL_DS	0x10

	.section .text.entry, "ax"
	.code32
	.globl	pvh_start
	.type	pvh_start, @function
pvh_start:
	cli
	cld
	/* EBX holds the start_info pointer until main; nothing below touches it. */
	movl	$__stack_top, %esp

	/* Zero .bss (page tables included). */
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$2, %ecx
	xorl	%eax, %eax
	rep stosl

	/* PML4[0] -> PDPT; PDPT[0..3] -> the four page directories. */
	movl	$pdpt + (PTE_P | PTE_RW), pml4
	movl	$pd + (PTE_P | PTE_RW), pdpt
	movl	$pd + 0x1000 + (PTE_P | PTE_RW), pdpt + 8
	movl	$pd + 0x2000 + (PTE_P | PTE_RW), pdpt + 16
	movl	$pd + 0x3000 + (PTE_P | PTE_RW), pdpt + 24

	/* 2 MiB identity mappings: RAM below 3 GiB write-back, the PCI hole uncached. */
	movl	$pd, %edi
	movl	$(PTE_P | PTE_RW | PTE_PS), %eax
	movl	$pd + PCI_HOLE_PDES * 8, %edx
1:	movl	%eax, (%edi)
	addl	$PAGE_2M, %eax
	addl	$8, %edi
	cmpl	%edx, %edi
	jb	1b
	orl	$(PTE_PCD | PTE_PWT), %eax
	movl	$pd + TOTAL_PDES * 8, %edx
2:	movl	%eax, (%edi)
	addl	$PAGE_2M, %eax
	addl	$8, %edi
	cmpl	%edx, %edi
	jb	2b

	/* PAE, then CR3, then EFER.LME, then paging: long mode (compatibility). */
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$(CR0_PG | CR0_PE), %eax
	movl	%eax, %cr0

	lgdt	gdt_desc
	ljmp	$KERNEL_CS, $long_mode
	.size	pvh_start, . - pvh_start

	.code64
	.globl	long_mode
long_mode:
	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	movl	$__stack_top, %esp	/* zero-extends into RSP */
	movl	%ebx, %edi		/* main(struct hvm_start_info *) */
	xorl	%ebp, %ebp
	call	main
3:	cli
	hlt
	jmp	3b

/*
 * Exception stubs: push a dummy error code where the CPU pushes none, then the
 * vector, and hand the frame to trap_handler (which prints and halts).
 */
.macro TRAP_NOERR vec
trap_stub_\vec:
	pushq	$0
	pushq	$\vec
	jmp	trap_common
.endm

.macro TRAP_ERR vec
trap_stub_\vec:
	pushq	$\vec
	jmp	trap_common
.endm

	.p2align 4
TRAP_NOERR 0
TRAP_NOERR 1
TRAP_NOERR 2
TRAP_NOERR 3
TRAP_NOERR 4
TRAP_NOERR 5
TRAP_NOERR 6
TRAP_NOERR 7
TRAP_ERR   8
TRAP_NOERR 9
TRAP_ERR   10
TRAP_ERR   11
TRAP_ERR   12
TRAP_ERR   13
TRAP_ERR   14
TRAP_NOERR 15
TRAP_NOERR 16
TRAP_ERR   17
TRAP_NOERR 18
TRAP_NOERR 19
TRAP_NOERR 20
TRAP_ERR   21
TRAP_NOERR 22
TRAP_NOERR 23
TRAP_NOERR 24
TRAP_NOERR 25
TRAP_NOERR 26
TRAP_NOERR 27
TRAP_NOERR 28
TRAP_ERR   29
TRAP_ERR   30
TRAP_NOERR 31

trap_common:
	movq	%rsp, %rdi
	andq	$-16, %rsp
	call	trap_handler
4:	cli
	hlt
	jmp	4b

	.section .rodata, "a"
	.p2align 3
	.globl	trap_stubs
trap_stubs:
	.irp	v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad	trap_stub_\v
	.endr

	/* 64-bit GDT: null, code (L=1), data. */
	.p2align 3
gdt:
	.quad	0
	.quad	0x00af9a000000ffff
	.quad	0x00cf92000000ffff
gdt_end:
gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt

	/* PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY = 18), 32-bit physical address. */
	.section .note.Xen, "a", @note
	.p2align 2
	.long	4		/* namesz: "Xen\0" */
	.long	4		/* descsz */
	.long	18		/* type */
	.asciz	"Xen"
	.p2align 2
	.long	pvh_start

	/* PML4 and PDPT must start zeroed (.bss); the PDs are written in full. */
	.section .bss.pagetables, "aw", @nobits
	.p2align 12
	.globl	pml4
pml4:	.skip	0x1000
pdpt:	.skip	0x1000

	.section .noinit, "aw", @nobits
	.p2align 12
pd:	.skip	0x4000

	.section .note.GNU-stack, "", @progbits

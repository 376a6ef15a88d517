/*
 * trampoline.S - application-processor start-up code (smp=1).
 *
 * ap_trampoline..ap_trampoline_end is copied by smp.c to AP_TRAMPOLINE_BASE
 * (a page below 1 MiB) and runs there: a SIPI with vector AP_TRAMPOLINE_BASE
 * >> 12 starts the AP in real mode at CS = vector << 8, IP = 0. It loads its
 * own GDT, enters protected mode, enables PAE, loads the BSP's CR3 (patched
 * into ap_cr3 of the copy), sets EFER.LME, turns paging on and jumps to
 * ap_long_mode in the image, which takes a per-CPU stack and calls ap_main.
 *
 * The code is assembled position-dependent for AP_TRAMPOLINE_BASE: every
 * absolute address is TRAMP(label). The test disassembles
 * [ap_trampoline, ap_trampoline_pm32) as 16-bit and [ap_trampoline_pm32,
 * ap_trampoline_code_end) as 32-bit code.
 */
#include "smp.h"

#define CR0_PE		0x00000001
#define CR0_PG		0x80000000
#define CR0_NW		0x20000000
#define CR0_CD		0x40000000
#define CR4_PAE		0x00000020
#define MSR_EFER	0xc0000080
#define EFER_LME	0x00000100

/* Selectors of the trampoline GDT; 0x08/0x10 match entry.S's GDT. */
#define AP_CS64		0x08
#define AP_DS		0x10
#define AP_CS32		0x18

#define TRAMP(x)	(AP_TRAMPOLINE_BASE + ((x) - ap_trampoline))

#if AP_STACK_SIZE != 0x1000
#error "ap_long_mode shifts by 12: AP_STACK_SIZE must be 4 KiB"
#endif

	.section .trampoline, "ax"
	.code16
	.globl	ap_trampoline
ap_trampoline:
	cli
	cld
	movw	%cs, %ax
	movw	%ax, %ds
	lgdtl	ap_gdt_desc - ap_trampoline
	movl	%cr0, %eax
	orl	$CR0_PE, %eax
	movl	%eax, %cr0
	ljmpl	$AP_CS32, $TRAMP(ap_trampoline_pm32)

	.code32
	.globl	ap_trampoline_pm32
ap_trampoline_pm32:
	movl	$AP_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	TRAMP(ap_cr3), %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	andl	$~(CR0_CD | CR0_NW), %eax	/* INIT leaves caching disabled */
	orl	$(CR0_PG | CR0_PE), %eax
	movl	%eax, %cr0
	ljmp	$AP_CS64, $ap_long_mode
	.globl	ap_trampoline_code_end
ap_trampoline_code_end:

	/* GDT: null, 64-bit code, data, 32-bit code. */
	.p2align 3
ap_gdt:
	.quad	0
	.quad	0x00af9a000000ffff
	.quad	0x00cf92000000ffff
	.quad	0x00cf9a000000ffff
ap_gdt_end:
ap_gdt_desc:
	.word	ap_gdt_end - ap_gdt - 1
	.long	TRAMP(ap_gdt)
	.p2align 2
	.globl	ap_cr3
ap_cr3:
	.long	0
	.globl	ap_trampoline_end
ap_trampoline_end:

	.text
	.code64
/*
 * Still on the trampoline's GDT (its 0x08 and 0x10 match entry.S's, so the
 * IDT's gates work). Each AP takes a ticket; ticket t gets stack t of
 * ap_stacks. An AP beyond the stacks halts without a word.
 */
	.globl	ap_long_mode
ap_long_mode:
	movl	$AP_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	movl	$1, %eax
	lock xaddl %eax, ap_ticket(%rip)
	cmpl	$AP_MAX_CPUS - 1, %eax
	jae	1f
	movl	%eax, %edi		/* ap_main(ticket) */
	leal	1(%eax), %edx
	shll	$12, %edx		/* (ticket + 1) * AP_STACK_SIZE */
	leaq	ap_stacks(%rip), %rsp
	addq	%rdx, %rsp
	xorl	%ebp, %ebp
	call	ap_main
1:	cli
	hlt
	jmp	1b

	.bss
	.p2align 2
	.globl	ap_ticket
ap_ticket:
	.long	0

	.section .noinit, "aw", @nobits
	.p2align 12
	.globl	ap_stacks
ap_stacks:
	.skip	(AP_MAX_CPUS - 1) * AP_STACK_SIZE

	.section .note.GNU-stack, "", @progbits

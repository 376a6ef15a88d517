/* trap.c - CPU exception reporting: a "trap" line on COM1, then halt. */
#include <stdint.h>

#include "io.h"
#include "power.h"
#include "printf.h"
#include "trap.h"

#define NUM_EXCEPTIONS 32
#define KERNEL_CS 0x08

struct idt_gate {
	uint16_t off_lo;
	uint16_t sel;
	uint8_t ist;
	uint8_t type_attr;
	uint16_t off_mid;
	uint32_t off_hi;
	uint32_t reserved;
} __attribute__((packed));

struct idt_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

static struct idt_gate idt[NUM_EXCEPTIONS] __attribute__((aligned(16)));

/* Stub entry points, defined in entry.S. */
extern const uint64_t trap_stubs[NUM_EXCEPTIONS];

void trap_load(void)
{
	struct idt_ptr p;

	p.limit = sizeof(idt) - 1;
	p.base = (uint64_t)(uintptr_t)idt;
	__asm__ volatile("lidt %0" : : "m"(p));
}

void trap_init(void)
{
	for (int i = 0; i < NUM_EXCEPTIONS; i++) {
		uint64_t a = trap_stubs[i];

		idt[i].off_lo = (uint16_t)a;
		idt[i].sel = KERNEL_CS;
		idt[i].ist = 0;
		idt[i].type_attr = 0x8e; /* present, DPL 0, 64-bit interrupt gate */
		idt[i].off_mid = (uint16_t)(a >> 16);
		idt[i].off_hi = (uint32_t)(a >> 32);
		idt[i].reserved = 0;
	}
	trap_load();
}

void trap_handler(struct trap_frame *tf)
{
	uint64_t cr2;

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	kprintf_lock_break();
	kprintf("trap vector=%lu error=0x%lx rip=0x%lx cs=0x%lx rflags=0x%lx rsp=0x%lx cr2=0x%lx\n",
		tf->vector, tf->error, tf->rip, tf->cs, tf->rflags, tf->rsp, cr2);
	kprintf("rscvm-testguest: halted\n");
	/* Power off so the VMM exits promptly; halt if that does not work. */
	acpi_poweroff();
	kprintf("poweroff failed\n");
	halt_forever();
}

/*
 * main.c - the rscvm freestanding test guest.
 *
 * Prints one machine-readable line per fact on COM1 (the host half of the
 * integration tests asserts on them), then powers off. See README.md for the
 * exact line formats.
 *
 * Command-line options (key=value, unknown keys are ignored):
 *   pci=0        skip the PCI scan
 *   caps=0       do not print capability lines
 *   memmap=0     do not print the PVH memory map
 *   memprobe=A   map physical address A (identity, write-back, may be above
 *                4 GiB), write a pattern to the 8 bytes there and read it back
 *   end=poweroff (default) ACPI S5 via port 0x604
 *   end=halt     cli; hlt forever after the done line
 *   end=reset    reset through port 0xCF9
 *   fault=ud     execute ud2 (#UD, vector 6) after the scan: tests trap reporting
 *   fault=pf     read unmapped address 1 TiB (#PF, vector 14, cr2=0x10000000000)
 *   smp=1        read the ACPI MADT and start the other CPUs (smp.c);
 *                smpwait=MS bounds the wait for each (default 1000),
 *                smpextra=ID also starts APIC ID (tests the timeout path)
 *   net=1        drive the first virtio-net function (virtio_net.c; its
 *                options are listed in README.md)
 */
#include <stdint.h>

#include "cmdline.h"
#include "heap.h"
#include "io.h"
#include "mem.h"
#include "paging.h"
#include "pci.h"
#include "power.h"
#include "printf.h"
#include "pvh.h"
#include "smp.h"
#include "trap.h"
#include "uart.h"
#include "virtio_net.h"

#define IDENTITY_LIMIT 0x100000000ull /* entry.S maps the first 4 GiB */
#define HEAP_LIMIT 0xc0000000ull      /* write-back RAM ends at the PCI hole */
#define HEAP_DEFAULT (16ull << 20)    /* without a memory map: assume 16 MiB */

extern char __image_end[]; /* linker.ld */

void main(const struct hvm_start_info *si);

/* Whether [addr, addr+len) lies inside the identity map. */
static int mapped(uint64_t addr, uint64_t len)
{
	return addr != 0 && addr < IDENTITY_LIMIT && len <= IDENTITY_LIMIT - addr;
}

static int print_start_info(const struct hvm_start_info *si)
{
	if (!mapped((uint64_t)(uintptr_t)si, sizeof(*si))) {
		kprintf("start_info addr=0x%lx unusable\n", (uint64_t)(uintptr_t)si);
		return -1;
	}
	kprintf("start_info addr=0x%lx magic=%08x version=%u flags=0x%x nr_modules=%u"
		" cmdline=0x%lx rsdp=0x%lx",
		(uint64_t)(uintptr_t)si, si->magic, si->version, si->flags, si->nr_modules,
		si->cmdline_paddr, si->rsdp_paddr);
	if (si->version >= 1)
		kprintf(" memmap=0x%lx memmap_entries=%u", si->memmap_paddr, si->memmap_entries);
	kprintf("\n");
	if (si->magic != HVM_START_MAGIC) {
		kprintf("start_info bad magic\n");
		return -1;
	}
	return 0;
}

static void print_memmap(const struct hvm_start_info *si)
{
	uint32_t n = si->memmap_entries;

	if (si->version < 1 || n == 0)
		return;
	if (n > 128)
		n = 128;
	if (!mapped(si->memmap_paddr, (uint64_t)n * sizeof(struct hvm_memmap_table_entry))) {
		kprintf("memmap unusable\n");
		return;
	}
	const struct hvm_memmap_table_entry *e =
		(const struct hvm_memmap_table_entry *)(uintptr_t)si->memmap_paddr;
	for (uint32_t i = 0; i < n; i++)
		kprintf("memmap %u addr=0x%016lx size=0x%016lx type=%u\n", i, e[i].addr,
			e[i].size, e[i].type);
}

static void load_cmdline(const struct hvm_start_info *si, int si_ok)
{
	const char *src = NULL;

	if (si_ok && mapped(si->cmdline_paddr, CMDLINE_MAX))
		src = (const char *)(uintptr_t)si->cmdline_paddr;
	cmdline_parse(src);
	kprintf("cmdline \"%s\"%s\n", cmdline_raw(), cmdline_truncated() ? " truncated" : "");
	for (int i = 0; i < cmdline_count(); i++) {
		const struct cmdline_opt *o = cmdline_opt(i);

		kprintf("opt %s=%s\n", o->key, o->value);
	}
}

/* memprobe=ADDR: prove RAM (or the page-table code) at an address above 4 GiB. */
static void memprobe(uint64_t addr)
{
	addr &= ~7ull;
	volatile uint64_t *p = map_identity_wb(addr, 8);
	if (!p) {
		kprintf("memprobe addr=0x%lx result=unmapped\n", addr);
		return;
	}
	uint64_t pattern = 0x5a5aa5a5c3c33c3cull ^ addr;
	uint64_t old = *p;
	*p = pattern;
	uint64_t got = *p;
	*p = old;
	kprintf("memprobe addr=0x%lx result=%s\n", addr, got == pattern ? "ok" : "mismatch");
}

/*
 * The driver's heap: from the end of the image (rounded to 64 KiB) to the end
 * of the RAM entry of the memory map that holds it.
 */
static void setup_heap(const struct hvm_start_info *si, int si_ok)
{
	uint64_t start = ((uint64_t)(uintptr_t)__image_end + 0xffff) & ~0xffffull;
	uint64_t end = start + HEAP_DEFAULT;

	if (si_ok && si->version >= 1 && si->memmap_entries &&
	    mapped(si->memmap_paddr, (uint64_t)si->memmap_entries * sizeof(struct hvm_memmap_table_entry))) {
		const struct hvm_memmap_table_entry *e =
			(const struct hvm_memmap_table_entry *)(uintptr_t)si->memmap_paddr;
		uint32_t n = si->memmap_entries < 128 ? si->memmap_entries : 128;

		end = start;
		for (uint32_t i = 0; i < n; i++) {
			if (e[i].type == 1 && e[i].addr <= start && e[i].addr + e[i].size > start)
				end = e[i].addr + e[i].size;
		}
	}
	if (end > HEAP_LIMIT)
		end = HEAP_LIMIT;
	heap_init(start, end);
}

struct scan_ctx {
	int caps;
};

static void visit(const struct pci_func *f, void *arg)
{
	const struct scan_ctx *ctx = arg;

	pci_print_func(f);
	if (ctx->caps)
		pci_print_caps(f);
}

void main(const struct hvm_start_info *si)
{
	uint32_t t0 = pm_timer_read();

	uart_init();
	kprintf("\nrscvm-testguest: start\n");
	trap_init();

	int si_ok = print_start_info(si) == 0;
	load_cmdline(si, si_ok);
	if (si_ok && cmdline_get_u64("memmap", 1))
		print_memmap(si);

	uint64_t probe = cmdline_get_u64("memprobe", 0);
	if (probe)
		memprobe(probe);

	if (cmdline_get_u64("smp", 0))
		smp_start(si_ok ? si : NULL, (uint32_t)cmdline_get_u64("smpwait", 1000),
			  (int)cmdline_get_u64("smpextra", (uint64_t)-1));

	if (cmdline_get_u64("pci", 1)) {
		struct scan_ctx ctx = { .caps = cmdline_get_u64("caps", 1) != 0 };
		int n = pci_scan_bus(0, visit, &ctx);

		kprintf("pciscan bus=00 functions=%d\n", n);
	}

	if (cmdline_get_u64("net", 0)) {
		setup_heap(si, si_ok);
		net_test();
	}

	const char *fault = cmdline_get("fault", "");
	if (strcmp(fault, "ud") == 0)
		__asm__ volatile("ud2");
	if (strcmp(fault, "pf") == 0)
		(void)*(volatile uint64_t *)(uintptr_t)0x10000000000ull;

	/* PM timer ticks modulo 2^24 (QEMU's width): exact below ~4.6 s. */
	uint32_t ticks = (pm_timer_read() - t0) & 0xffffff;
	kprintf("elapsed us=%lu\n", (uint64_t)ticks * 1000000u / ACPI_PM_TMR_HZ);

	const char *end = cmdline_get("end", "poweroff");
	kprintf("rscvm-testguest: done\n");
	if (strcmp(end, "halt") == 0)
		halt_forever();
	if (strcmp(end, "reset") == 0) {
		cf9_reset();
		kprintf("reset failed\n");
		halt_forever();
	}
	acpi_poweroff();
	kprintf("poweroff failed\n");
	halt_forever();
}

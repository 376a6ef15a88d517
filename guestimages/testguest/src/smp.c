/*
 * smp.c - smp=1: find the CPUs in the ACPI MADT and start the other ones.
 *
 * RSDP (start_info.rsdp_paddr) -> XSDT (revision >= 2 with an XSDT address)
 * or RSDT -> "APIC" (MADT) -> type 0 Processor Local APIC entries with the
 * enabled flag. Every table must lie inside one memory-map entry (any type)
 * below 4 GiB; lengths are checked against their minimum and the table's
 * end. The other CPUs are started one at a time through the xAPIC (MMIO at
 * the IA32_APIC_BASE address, uncached by entry.S's PCI-hole mapping) with
 * INIT, 10 ms, SIPI, 200 us, SIPI; trampoline.S takes them to ap_main.
 */
#include <stddef.h>
#include <stdint.h>

#include "io.h"
#include "mem.h"
#include "power.h"
#include "printf.h"
#include "pvh.h"
#include "smp.h"
#include "trap.h"

#define MSR_APIC_BASE 0x1b
#define APIC_BASE_BSP (1u << 8)
#define APIC_BASE_EXTD (1u << 10) /* x2APIC mode */
#define APIC_BASE_EN (1u << 11)
#define APIC_BASE_ADDR 0xfffff000ull

#define LAPIC_ID 0x20
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310

#define ICR_INIT 0x00000500u
#define ICR_STARTUP 0x00000600u
#define ICR_ASSERT 0x00004000u
#define ICR_BUSY 0x00001000u /* delivery status: send pending */

#define UNCACHED_START 0xc0000000ull /* entry.S: PCD|PWT from here to 4 GiB */
#define IDENTITY_LIMIT 0x100000000ull
#define TABLE_MAX (1u << 20)       /* longer ACPI tables are refused */
#define SDT_HEADER 36
#define MADT_FIXED 44              /* header + local APIC address + flags */
#define MAX_APIC_IDS 256

extern char ap_trampoline[], ap_trampoline_end[], ap_cr3[]; /* trampoline.S */
extern uint64_t pml4[512];                                    /* entry.S */

static uint64_t lapic_base;
static volatile uint8_t ap_up[MAX_APIC_IDS]; /* set by each AP after its line */

struct ram_view {
	const struct hvm_memmap_table_entry *e;
	uint32_t n;
};

static struct ram_view ram;

/* Whether [addr, addr+len) lies in one memory-map entry, below 4 GiB. */
static int in_ram(uint64_t addr, uint64_t len, uint32_t want_type)
{
	if (addr == 0 || addr >= IDENTITY_LIMIT || len > IDENTITY_LIMIT - addr)
		return 0;
	if (ram.n == 0) /* no memory map: anything below the PCI hole */
		return addr + len <= UNCACHED_START;
	for (uint32_t i = 0; i < ram.n; i++) {
		const struct hvm_memmap_table_entry *e = &ram.e[i];

		if (want_type && e->type != want_type)
			continue;
		if (addr >= e->addr && addr - e->addr <= e->size && len <= e->size - (addr - e->addr))
			return 1;
	}
	return 0;
}

static uint8_t sum8(const uint8_t *p, uint32_t n)
{
	uint8_t s = 0;

	for (uint32_t i = 0; i < n; i++)
		s += p[i];
	return s;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/*
 * Validates the system description table at addr: in RAM, length in
 * [min, TABLE_MAX], checksum (a mismatch is reported, not fatal). Returns the
 * table or NULL after an error line.
 */
static const uint8_t *sdt(uint64_t addr, const char *what, uint32_t min, uint32_t *len)
{
	if (!in_ram(addr, SDT_HEADER, 0)) {
		kprintf("smp error %s addr=0x%lx outside ram\n", what, addr);
		return NULL;
	}
	const uint8_t *t = (const uint8_t *)(uintptr_t)addr;
	uint32_t n = le32(t + 4);
	if (n < min || n > TABLE_MAX || !in_ram(addr, n, 0)) {
		kprintf("smp error %s addr=0x%lx bad length=%u\n", what, addr, n);
		return NULL;
	}
	if (sum8(t, n) != 0)
		kprintf("smp error %s addr=0x%lx bad checksum\n", what, addr);
	*len = n;
	return t;
}

/* Finds the MADT through the RSDP; NULL after an error line. */
static const uint8_t *find_madt(uint64_t rsdp, uint32_t *len)
{
	if (!in_ram(rsdp, 20, 0)) {
		kprintf("smp error rsdp addr=0x%lx outside ram\n", rsdp);
		return NULL;
	}
	const uint8_t *r = (const uint8_t *)(uintptr_t)rsdp;
	if (memcmp(r, "RSD PTR ", 8) != 0) {
		kprintf("smp error rsdp addr=0x%lx bad signature\n", rsdp);
		return NULL;
	}
	if (sum8(r, 20) != 0)
		kprintf("smp error rsdp addr=0x%lx bad checksum\n", rsdp);

	uint64_t root = le32(r + 16);
	uint32_t entry = 4;
	const char *what = "rsdt";
	if (r[15] >= 2 && in_ram(rsdp, 36, 0) && le64(r + 24) != 0) {
		root = le64(r + 24);
		entry = 8;
		what = "xsdt";
	}
	uint32_t rlen;
	const uint8_t *t = sdt(root, what, SDT_HEADER, &rlen);
	if (!t)
		return NULL;
	if (memcmp(t, entry == 8 ? "XSDT" : "RSDT", 4) != 0) {
		kprintf("smp error %s addr=0x%lx bad signature\n", what, root);
		return NULL;
	}
	for (uint32_t off = SDT_HEADER; off + entry <= rlen; off += entry) {
		uint64_t a = entry == 8 ? le64(t + off) : le32(t + off);

		if (!in_ram(a, SDT_HEADER, 0)) {
			kprintf("smp error %s entry=%u addr=0x%lx outside ram\n", what,
				(off - SDT_HEADER) / entry, a);
			continue;
		}
		if (memcmp((const uint8_t *)(uintptr_t)a, "APIC", 4) == 0)
			return sdt(a, "madt", MADT_FIXED, len);
	}
	kprintf("smp error madt not found\n");
	return NULL;
}

/*
 * Collects the APIC IDs of the enabled Processor Local APIC entries (at most
 * max). Returns how many, or -1 after an error line.
 */
static int madt_cpus(const uint8_t *m, uint32_t len, uint8_t *ids, int max)
{
	int n = 0;

	for (uint32_t off = MADT_FIXED; off < len;) {
		if (len - off < 2) {
			kprintf("smp error madt entry at %u truncated\n", off);
			return -1;
		}
		uint8_t type = m[off], elen = m[off + 1];
		if (elen < 2 || elen > len - off) {
			kprintf("smp error madt entry at %u type=%u bad length=%u\n", off, type, elen);
			return -1;
		}
		if (type == 0) {
			if (elen < 8) {
				kprintf("smp error madt entry at %u type=0 bad length=%u\n", off, elen);
				return -1;
			}
			if (le32(m + off + 4) & 1) {
				if (n < max)
					ids[n] = m[off + 3];
				n++;
			}
		}
		off += elen;
	}
	if (n > max) {
		kprintf("smp error madt cpus=%d more than %d\n", n, max);
		n = max;
	}
	return n;
}

static uint32_t lapic_read(uint32_t reg)
{
	return mmio_read32(lapic_base + reg);
}

static void lapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(lapic_base + reg, v);
}

static uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;

	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return (uint64_t)hi << 32 | lo;
}

/* Sends one IPI; returns 0 once the ICR reports it delivered. */
static int send_ipi(uint8_t apic_id, uint32_t lo)
{
	lapic_write(LAPIC_ICR_HI, (uint32_t)apic_id << 24);
	lapic_write(LAPIC_ICR_LO, lo);
	for (int i = 0; i < 1000; i++) {
		if (!(lapic_read(LAPIC_ICR_LO) & ICR_BUSY))
			return 0;
	}
	kprintf("smp error apic_id=%u icr busy\n", apic_id);
	return -1;
}

/* Waits up to ms for the AP to say it is up (ms < 4000: PM timer arithmetic). */
static int wait_up(uint8_t apic_id, uint32_t ms)
{
	uint32_t ticks = (uint32_t)(((uint64_t)ms * ACPI_PM_TMR_HZ) / 1000u);
	uint32_t start = pm_timer_read(), last = start;
	unsigned int stuck = 0;

	for (;;) {
		for (uint32_t i = 0; i < 256; i++) {
			if (ap_up[apic_id])
				return 1;
			__asm__ volatile("pause" : : : "memory");
		}
		uint32_t now = pm_timer_read();
		if (((now - start) & 0xffffff) >= ticks)
			return ap_up[apic_id];
		if (now == last) {
			if (++stuck >= 1024) /* the timer does not move */
				return ap_up[apic_id];
		} else {
			stuck = 0;
			last = now;
		}
	}
}

static void print_ids(const uint8_t *ids, int n)
{
	for (int i = 0; i < n; i++)
		kprintf("%s%u", i ? "," : "", ids[i]);
}

void ap_main(uint32_t ticket)
{
	(void)ticket;
	trap_load();
	uint32_t id = lapic_read(LAPIC_ID) >> 24;
	kprintf("smp cpu apic_id=%u up\n", id);
	ap_up[id & (MAX_APIC_IDS - 1)] = 1;
	halt_forever();
}

static int start_aps(const uint8_t *ids, int n, uint32_t wait_ms)
{
	uint64_t base = rdmsr(MSR_APIC_BASE);
	if (!(base & APIC_BASE_EN) || (base & APIC_BASE_EXTD)) {
		kprintf("smp error apic_base=0x%lx not in xapic mode\n", base);
		return 1;
	}
	lapic_base = base & APIC_BASE_ADDR;
	if (lapic_base < UNCACHED_START || lapic_base >= IDENTITY_LIMIT - 0x1000) {
		kprintf("smp error apic_base=0x%lx outside the uncached map\n", base);
		return 1;
	}
	uint8_t bsp = (uint8_t)(lapic_read(LAPIC_ID) >> 24);
	kprintf("smp bsp apic_id=%u apic_base=0x%lx\n", bsp, base);

	uint64_t tsize = (uint64_t)(ap_trampoline_end - ap_trampoline);
	if (!in_ram(AP_TRAMPOLINE_BASE, 0x1000, 1) || tsize > 0x1000) {
		kprintf("smp error trampoline addr=0x%x not in usable ram\n", AP_TRAMPOLINE_BASE);
		return 1;
	}
	uint8_t *tramp = (uint8_t *)(uintptr_t)AP_TRAMPOLINE_BASE;
	memcpy(tramp, ap_trampoline, tsize);
	uint32_t cr3 = (uint32_t)(uintptr_t)pml4;
	memcpy(tramp + (ap_cr3 - ap_trampoline), &cr3, 4);
	mb();

	/* Software-enable the local APIC (spurious vector 0xff); IF stays 0. */
	lapic_write(LAPIC_SVR, lapic_read(LAPIC_SVR) | 0x1ff);

	int up = 1;
	for (int i = 0; i < n; i++) {
		uint8_t id = ids[i];

		if (id == bsp)
			continue;
		if (send_ipi(id, ICR_INIT | ICR_ASSERT) == 0) {
			pm_timer_delay_us(10000);
			for (int k = 0; k < 2 && !ap_up[id]; k++) {
				if (send_ipi(id, ICR_STARTUP | (AP_TRAMPOLINE_BASE >> 12)) != 0)
					break;
				pm_timer_delay_us(200);
			}
		}
		if (wait_up(id, wait_ms))
			up++;
		else
			kprintf("smp cpu apic_id=%u timeout\n", id);
	}
	return up;
}

void smp_start(const struct hvm_start_info *si, uint32_t wait_ms, int extra_id)
{
	uint8_t ids[AP_MAX_CPUS];
	int n = 0, up = 1;

	if (wait_ms == 0 || wait_ms > 4000)
		wait_ms = 4000;
	ram.e = NULL;
	ram.n = 0;
	if (!si) {
		kprintf("smp error no start_info\n");
		goto done;
	}
	if (si->version >= 1 && si->memmap_entries && si->memmap_paddr &&
	    si->memmap_paddr < IDENTITY_LIMIT &&
	    (uint64_t)si->memmap_entries * sizeof(struct hvm_memmap_table_entry) <=
		    IDENTITY_LIMIT - si->memmap_paddr) {
		ram.e = (const struct hvm_memmap_table_entry *)(uintptr_t)si->memmap_paddr;
		ram.n = si->memmap_entries < 128 ? si->memmap_entries : 128;
	}
	uint32_t len;
	const uint8_t *madt = find_madt(si->rsdp_paddr, &len);
	if (!madt)
		goto done;
	n = madt_cpus(madt, len, ids, AP_MAX_CPUS);
	if (n < 0) {
		n = 0;
		goto done;
	}
	kprintf("smp madt cpus=%d apic_ids=", n);
	print_ids(ids, n);
	kprintf(" addr=0x%lx lapic=0x%x\n", (uint64_t)(uintptr_t)madt, le32(madt + 36));
	if (extra_id >= 0 && extra_id < MAX_APIC_IDS && n < AP_MAX_CPUS)
		ids[n++] = (uint8_t)extra_id; /* smpextra=: a CPU the MADT does not list */
	up = start_aps(ids, n, wait_ms);
done:
	kprintf("smp done cpus=%d up=%d\n", n, up);
}

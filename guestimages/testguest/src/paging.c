/*
 * paging.c - identity mappings beyond the boot-time first 4 GiB.
 *
 * entry.S builds PML4[0] -> PDPT -> four page directories covering [0, 4 GiB)
 * with 2 MiB pages. Addresses above that get page-directory (and, above
 * 512 GiB, PDPT) pages from a small static pool in .noinit (not cleared at
 * boot: each page is zeroed when it is handed out).
 */
#include <stddef.h>
#include <stdint.h>

#include "paging.h"

#define PTE_P 0x001ull
#define PTE_RW 0x002ull
#define PTE_PWT 0x008ull
#define PTE_PCD 0x010ull
#define PTE_PS 0x080ull
#define PTE_ADDR 0x000ffffffffff000ull

#define PAGE_2M 0x200000ull
#define POOL_PAGES 16

extern uint64_t pml4[512]; /* entry.S */

static uint64_t pool[POOL_PAGES][512] __attribute__((aligned(4096), section(".noinit")));
static unsigned int pool_used;

/* Returns the table that entry tbl[idx] points to, allocating it if absent. */
static uint64_t *next_table(uint64_t *tbl, unsigned int idx)
{
	if (tbl[idx] & PTE_P) {
		if (tbl[idx] & PTE_PS)
			return NULL; /* a large page already covers it */
		return (uint64_t *)(uintptr_t)(tbl[idx] & PTE_ADDR);
	}
	if (pool_used == POOL_PAGES)
		return NULL;
	uint64_t *t = pool[pool_used++];
	for (unsigned int i = 0; i < 512; i++)
		t[i] = 0;
	tbl[idx] = (uint64_t)(uintptr_t)t | PTE_P | PTE_RW;
	return t;
}

static void *map(uint64_t phys, uint64_t size, uint64_t cache)
{
	if (size == 0 || phys + size < phys || phys + size > IDENTITY_MAX)
		return NULL;
	uint64_t end = phys + size;
	if (end <= IDENTITY_BOOT_LIMIT)
		return (void *)(uintptr_t)phys;

	for (uint64_t a = phys & ~(PAGE_2M - 1); a < end; a += PAGE_2M) {
		if (a < IDENTITY_BOOT_LIMIT)
			continue;
		uint64_t *pdpt = next_table(pml4, (unsigned int)(a >> 39) & 511);
		if (!pdpt)
			return NULL;
		uint64_t *pd = next_table(pdpt, (unsigned int)(a >> 30) & 511);
		if (!pd)
			return NULL;
		uint64_t *pde = &pd[(a >> 21) & 511];
		if (!(*pde & PTE_P))
			*pde = a | PTE_P | PTE_RW | PTE_PS | cache;
	}
	/* Only not-present entries changed: no stale TLB entries to flush. */
	__asm__ volatile("" : : : "memory");
	return (void *)(uintptr_t)phys;
}

void *map_identity(uint64_t phys, uint64_t size)
{
	return map(phys, size, PTE_PCD | PTE_PWT);
}

void *map_identity_wb(uint64_t phys, uint64_t size)
{
	return map(phys, size, 0);
}

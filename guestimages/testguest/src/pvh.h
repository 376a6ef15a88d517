/* pvh.h - the PVH (x86/HVM direct boot ABI) start-of-day structures. */
#ifndef TESTGUEST_PVH_H
#define TESTGUEST_PVH_H

#include <stdint.h>

#define HVM_START_MAGIC 0x336ec578u

/* hvm_start_info, as the loader leaves it at EBX (version 0 ends at rsdp_paddr). */
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	/* version >= 1 */
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};

/* hvm_memmap_table_entry: e820-style, type 1 = RAM, 2 = reserved, 3 = ACPI ... */
struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

#endif

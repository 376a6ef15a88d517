/* paging.h - identity mappings beyond the boot-time first 4 GiB. */
#ifndef TESTGUEST_PAGING_H
#define TESTGUEST_PAGING_H

#include <stdint.h>

#define IDENTITY_BOOT_LIMIT 0x100000000ull /* entry.S maps [0, 4 GiB) */
#define IDENTITY_MAX 0x800000000000ull     /* 2^47: canonical lower half */

/*
 * Makes [phys, phys+size) reachable at the same virtual address, mapping any
 * part above 4 GiB with uncached 2 MiB pages on demand (64-bit BARs, high RAM).
 * Returns the virtual address (== phys), or NULL when the range is empty,
 * wraps, reaches 2^47 (not identity-mappable) or the table pool is exhausted.
 */
void *map_identity(uint64_t phys, uint64_t size);

/* Same as map_identity but with write-back caching (for RAM above 4 GiB). */
void *map_identity_wb(uint64_t phys, uint64_t size);

#endif

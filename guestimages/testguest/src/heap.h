/* heap.h - a bump allocator for rings and buffers in guest RAM (never freed). */
#ifndef TESTGUEST_HEAP_H
#define TESTGUEST_HEAP_H

#include <stdint.h>

/* Hands out [start, end) (identity-mapped RAM below 4 GiB). */
void heap_init(uint64_t start, uint64_t end);
/*
 * Returns size bytes aligned to align (a power of two), not cleared, or NULL
 * (after printing a "virtio error heap exhausted" line) when they do not fit.
 */
void *heap_alloc(uint64_t size, uint64_t align);
/* Same, cleared to zero. */
void *heap_zalloc(uint64_t size, uint64_t align);
/* Bytes handed out so far. */
uint64_t heap_used(void);

#endif

/* heap.c - a bump allocator for rings and buffers in guest RAM. */
#include <stdint.h>

#include "heap.h"
#include "mem.h"
#include "printf.h"

static uint64_t heap_start, heap_next, heap_end;

void heap_init(uint64_t start, uint64_t end)
{
	heap_start = heap_next = start;
	heap_end = end > start ? end : start;
}

void *heap_alloc(uint64_t size, uint64_t align)
{
	uint64_t p = (heap_next + align - 1) & ~(align - 1);

	if (p < heap_next || size > heap_end - p || p > heap_end) {
		kprintf("virtio error heap exhausted size=%lu used=%lu free=%lu\n", size,
			heap_next - heap_start, heap_end - heap_next);
		return 0;
	}
	heap_next = p + size;
	return (void *)(uintptr_t)p;
}

void *heap_zalloc(uint64_t size, uint64_t align)
{
	void *p = heap_alloc(size, align);

	if (p)
		memset(p, 0, size);
	return p;
}

uint64_t heap_used(void)
{
	return heap_next - heap_start;
}

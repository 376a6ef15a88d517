/*
 * ring.c - split virtqueues. The driver polls the used ring in memory (cheap)
 * and touches device registers only to notify, and then only when the device
 * has not suppressed notifications (VRING_USED_F_NO_NOTIFY, or the avail event
 * index with VIRTIO_F_RING_EVENT_IDX).
 */
#include <stdint.h>

#include "heap.h"
#include "io.h"
#include "printf.h"
#include "ring.h"
#include "virtio.h"
#include "virtio_pci.h"

static inline uint16_t rd16(const volatile uint16_t *p)
{
	return *p;
}

static inline void wr16(volatile uint16_t *p, uint16_t v)
{
	*p = v;
}

int vq_init(struct vq *q, struct vpci *d, uint16_t index, uint16_t size, uint16_t vector,
	    int event_idx)
{
	uint64_t desc_sz = 16ull * size;
	uint64_t avail_sz = 6 + 2ull * size;
	uint64_t used_off = (desc_sz + avail_sz + VPL_ALIGN - 1) & ~(uint64_t)(VPL_ALIGN - 1);
	uint64_t used_sz = 6 + 8ull * size;

	q->dev = d;
	q->index = index;
	q->size = size;
	q->event_idx = event_idx;
	if (size == 0) {
		kprintf("virtio error queue=%u size 0\n", index);
		return -1;
	}
	uint8_t *mem = heap_zalloc(used_off + used_sz, VPL_ALIGN);
	q->chain = heap_zalloc(2ull * size, 8);
	q->token = heap_zalloc(4ull * size, 8);
	if (!mem || !q->chain || !q->token)
		return -1;
	q->desc = (struct vring_desc *)mem;
	q->avail = (struct vring_avail *)(mem + desc_sz);
	q->used = (struct vring_used *)(mem + used_off);
	for (uint16_t i = 0; i + 1 < size; i++)
		q->desc[i].next = (uint16_t)(i + 1);
	q->free_head = 0;
	q->num_free = size;
	q->avail_idx = q->kicked_idx = q->last_used = 0;
	/* We poll: ask the device not to interrupt. */
	q->avail->flags = VRING_AVAIL_F_NO_INTERRUPT;

	q->msix_vector = vector;
	uint64_t base = (uint64_t)(uintptr_t)mem;
	if (vpci_queue_setup(d, index, size, base, base + desc_sz, base + used_off,
			     &q->msix_vector, &q->notify) != 0)
		return -1;
	return 0;
}

int vq_add(struct vq *q, const struct vq_buf *bufs, unsigned int n, uint32_t token)
{
	if (n == 0 || n > q->num_free)
		return -1;
	uint16_t head = q->free_head, i = head, last = head;

	for (unsigned int k = 0; k < n; k++) {
		struct vring_desc *dsc = &q->desc[i];

		dsc->addr = bufs[k].addr;
		dsc->len = bufs[k].len;
		dsc->flags = (uint16_t)((bufs[k].write ? VRING_DESC_F_WRITE : 0) |
					(k + 1 < n ? VRING_DESC_F_NEXT : 0));
		last = i;
		i = dsc->next;
	}
	/* The free list continues after the chain's last descriptor. */
	q->free_head = q->desc[last].next;
	q->num_free = (uint16_t)(q->num_free - n);
	q->chain[head] = (uint16_t)n;
	q->token[head] = token;

	q->avail->ring[q->avail_idx % q->size] = head;
	barrier(); /* ring entry before the index (x86 keeps stores in order) */
	q->avail_idx++;
	wr16(&q->avail->idx, q->avail_idx);
	return head;
}

void vq_kick(struct vq *q)
{
	uint16_t new_idx = q->avail_idx, old = q->kicked_idx;

	if (new_idx == old)
		return;
	q->kicked_idx = new_idx;
	mb(); /* the avail index must be visible before we read the device's wishes */
	int need;
	if (q->event_idx) {
		uint16_t event = rd16((volatile uint16_t *)&q->used->ring[q->size]);

		need = (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
	} else {
		need = !(rd16(&q->used->flags) & VRING_USED_F_NO_NOTIFY);
	}
	if (need) {
		vpci_notify(q->dev, q->index, q->notify);
		q->kicks++;
	}
}

uint16_t vq_pending(struct vq *q)
{
	return (uint16_t)(rd16(&q->used->idx) - q->last_used);
}

int vq_poll(struct vq *q, uint32_t *token, uint32_t *len)
{
	uint16_t pending = vq_pending(q);

	if (pending == 0)
		return 0;
	if (pending > q->size) {
		kprintf("virtio error queue=%u used idx=%u runs %u ahead of %u\n", q->index,
			rd16(&q->used->idx), pending, q->last_used);
		return -1;
	}
	barrier(); /* read the entry after the index */
	volatile struct vring_used_elem *e = &q->used->ring[q->last_used % q->size];
	uint32_t id = e->id, l = e->len;

	q->last_used++;
	if (q->event_idx)
		wr16(&q->avail->ring[q->size], q->last_used);
	if (id >= q->size || q->chain[id] == 0) {
		kprintf("virtio error queue=%u used id=%u len=%u not outstanding\n", q->index, id, l);
		return -1;
	}
	/* Return the chain to the free list. */
	uint16_t n = q->chain[id], i = (uint16_t)id;
	for (uint16_t k = 1; k < n; k++)
		i = q->desc[i].next;
	q->desc[i].next = q->free_head;
	q->free_head = (uint16_t)id;
	q->num_free = (uint16_t)(q->num_free + n);
	q->chain[id] = 0;
	*token = q->token[id];
	*len = l;
	return 1;
}

/* ring.h - split virtqueues in guest RAM, polled (no interrupts). */
#ifndef TESTGUEST_RING_H
#define TESTGUEST_RING_H

#include <stdint.h>

#include "virtio.h"
#include "virtio_pci.h"

/* One driver buffer of a chain: device-readable, or device-writable if write. */
struct vq_buf {
	uint64_t addr;
	uint32_t len;
	int write;
};

struct vq {
	struct vpci *dev;
	uint16_t index, size;
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint64_t notify;
	uint16_t msix_vector; /* as read back from the device */
	int event_idx;
	uint16_t free_head, num_free;
	uint16_t avail_idx;  /* shadow of avail->idx */
	uint16_t kicked_idx; /* avail_idx at the last notification decision */
	uint16_t last_used;  /* next used entry to consume */
	uint16_t *chain;     /* per head: descriptors in its chain, 0 when free */
	uint32_t *token;     /* per head: the caller's value */
	uint32_t kicks;      /* notifications sent */
};

/*
 * Allocates a queue of `size` entries (split layout, legacy-compatible:
 * 4 KiB-aligned descriptor table, avail after it, used ring on the next 4 KiB
 * boundary), and registers it with the device with MSI-X vector `vector`.
 * Returns 0, or -1 after printing a "virtio error" line.
 */
int vq_init(struct vq *q, struct vpci *d, uint16_t index, uint16_t size, uint16_t vector,
	    int event_idx);

/*
 * Makes bufs[0..n) one chain and publishes it in the avail ring (no
 * notification). Returns the head index, or -1 if there are not enough free
 * descriptors.
 */
int vq_add(struct vq *q, const struct vq_buf *bufs, unsigned int n, uint32_t token);

/* Notifies the device of new avail entries unless it asked not to be. */
void vq_kick(struct vq *q);

/*
 * Takes the next used entry: 1 with *token and *len set, 0 if there is none,
 * -1 (after a "virtio error" line) if the device returned an id that is not an
 * outstanding head or moved the used index too far.
 */
int vq_poll(struct vq *q, uint32_t *token, uint32_t *len);

/* Number of used entries published but not yet taken (0 if none). */
uint16_t vq_pending(struct vq *q);

#endif

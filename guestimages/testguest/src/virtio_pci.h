/* virtio_pci.h - the virtio PCI transport (modern capabilities, or legacy BAR0). */
#ifndef TESTGUEST_VIRTIO_PCI_H
#define TESTGUEST_VIRTIO_PCI_H

#include <stdint.h>

#include "pci.h"

#define VPCI_MAX_QUEUES 64 /* queues this driver will look at */

/* Where one virtio structure lives (modern capability). */
struct vpci_region {
	uint8_t present;
	uint8_t bar;
	uint8_t cap; /* config-space offset of the capability */
	uint32_t offset, length;
	uint64_t addr; /* mapped address (identity) */
};

struct vpci {
	struct pci_func f;
	int legacy;  /* 1: legacy register block in BAR0 */
	uint16_t io; /* legacy: BAR0 port base */
	struct vpci_region common, notify, isr, device, pcicfg;
	uint32_t notify_mult;
	uint8_t msix_cap;     /* 0: none */
	uint16_t msix_size;   /* table entries */
	int msix_enabled;
	uint64_t msix_table;  /* mapped MSI-X table, 0 if unusable */
};

/*
 * Finds the first virtio-net function on bus 0 (1af4:1000 with subsystem id 1,
 * or 1af4:1041) and probes it into d->f. Returns 0, or -1 if there is none.
 */
int vpci_find_net(struct vpci *d);

/*
 * Enables decoding and bus mastering, walks the capabilities and maps the
 * structures (modern) or checks BAR0 (legacy). Prints the "virtio dev" line,
 * or a "virtio error" line and returns -1.
 */
int vpci_setup(struct vpci *d, int legacy);

void vpci_reset(struct vpci *d);
uint8_t vpci_status(struct vpci *d);
void vpci_set_status(struct vpci *d, uint8_t status);

/* Feature word `sel` (0..3) the device offers (legacy: word 0 only). */
uint32_t vpci_device_features(struct vpci *d, uint32_t sel);
void vpci_set_driver_features(struct vpci *d, uint64_t features);

/* num_queues (legacy: number of queues with a non-zero size, up to VPCI_MAX_QUEUES). */
uint16_t vpci_num_queues(struct vpci *d);
/* The device's (maximum) size of queue idx; 0 if absent. */
uint16_t vpci_queue_max(struct vpci *d, uint16_t idx);

/*
 * Programs queue idx: size (modern only; legacy sizes are fixed), ring
 * addresses (legacy: desc must be 4 KiB aligned with avail and used at their
 * legacy offsets), MSI-X vector (read back into *vector), and enables it.
 * Stores the notify address (modern) in *notify. Returns 0 or -1.
 */
int vpci_queue_setup(struct vpci *d, uint16_t idx, uint16_t size, uint64_t desc,
		     uint64_t avail, uint64_t used, uint16_t *vector, uint64_t *notify);
void vpci_notify(struct vpci *d, uint16_t idx, uint64_t notify);

/* MSI-X config vector: writes v, returns the read-back value. */
uint16_t vpci_set_config_vector(struct vpci *d, uint16_t v);
/*
 * Enables MSI-X and programs table entries 0..n-1 (LAPIC 0, vectors 0x40+i,
 * unmasked; the guest keeps interrupts off and polls). Returns 0 or -1.
 */
int vpci_msix_enable(struct vpci *d);

/* Device-specific configuration space. */
uint8_t vpci_cfg8(struct vpci *d, uint32_t off);
uint16_t vpci_cfg16(struct vpci *d, uint32_t off);
uint8_t vpci_cfg_generation(struct vpci *d);

#endif

/*
 * virtio_pci.c - the virtio PCI transport: device discovery, capability walk,
 * common configuration (modern, BAR4 on QEMU) or the legacy I/O block (BAR0).
 *
 * Every register access is a VM exit, so each is done once where it can be;
 * fields are accessed with their own width, as the virtio spec requires.
 */
#include <stdint.h>

#include "io.h"
#include "paging.h"
#include "pci.h"
#include "printf.h"
#include "virtio.h"
#include "virtio_pci.h"

#define CAP_WALK_LIMIT 48
#define RESET_POLL_LIMIT 100000

int vpci_find_net(struct vpci *d)
{
	for (uint8_t dev = 0; dev < 32; dev++) {
		for (uint8_t fn = 0; fn < 8; fn++) {
			uint32_t id = pci_cfg_read32(0, dev, fn, PCI_VENDOR_ID);
			uint16_t vendor = (uint16_t)id, device = (uint16_t)(id >> 16);

			if (vendor == 0xffff || vendor == 0) {
				if (fn == 0)
					break; /* no device in this slot */
				continue;
			}
			if (vendor == VIRTIO_VENDOR &&
			    (device == VIRTIO_DEV_NET_MODERN ||
			     (device == VIRTIO_DEV_NET_TRANSITIONAL &&
			      pci_cfg_read16(0, dev, fn, PCI_SUBSYS_ID) == 1))) {
				for (unsigned int i = 0; i < sizeof(d->f); i++)
					((uint8_t *)&d->f)[i] = 0;
				return pci_probe(0, dev, fn, &d->f);
			}
			if (fn == 0 && !(pci_cfg_read8(0, dev, 0, PCI_HEADER_TYPE) & 0x80))
				break; /* single-function device */
		}
	}
	return -1;
}

/* Checks and maps a capability's region inside its BAR. */
static int map_region(struct vpci *d, struct vpci_region *r, const char *what)
{
	const struct pci_bar *bar;

	if (r->bar >= PCI_MAX_BARS) {
		kprintf("virtio error %s cap bar=%u invalid\n", what, r->bar);
		return -1;
	}
	bar = &d->f.bars[r->bar];
	if (bar->kind != PCI_BAR_MEM32 && bar->kind != PCI_BAR_MEM64) {
		kprintf("virtio error %s cap bar=%u not a memory bar\n", what, r->bar);
		return -1;
	}
	if (bar->addr == 0) {
		kprintf("virtio error %s cap bar=%u unassigned\n", what, r->bar);
		return -1;
	}
	if (r->length == 0 || (uint64_t)r->offset + r->length > bar->size) {
		kprintf("virtio error %s cap offset=0x%x length=0x%x outside bar%u size=%lu\n", what,
			r->offset, r->length, r->bar, bar->size);
		return -1;
	}
	void *p = map_identity(bar->addr + r->offset, r->length);
	if (!p) {
		kprintf("virtio error %s cap at 0x%lx not mappable\n", what, bar->addr + r->offset);
		return -1;
	}
	r->addr = (uint64_t)(uintptr_t)p;
	return 0;
}

static void walk_caps(struct vpci *d)
{
	struct pci_func *f = &d->f;

	if (!(f->status & PCI_STATUS_CAP_LIST))
		return;
	uint8_t ptr = pci_cfg_read8(f->bus, f->dev, f->fn, PCI_CAP_PTR);
	for (int n = 0; n < CAP_WALK_LIMIT; n++) {
		ptr &= 0xfc;
		if (ptr < 0x40)
			return;
		uint32_t hdr = pci_cfg_read32(f->bus, f->dev, f->fn, ptr);
		uint8_t id = (uint8_t)hdr, len = (uint8_t)(hdr >> 16);

		if (id == PCI_CAP_ID_MSIX && !d->msix_cap && ptr <= 0xfc - 8) {
			d->msix_cap = ptr;
			d->msix_size = (uint16_t)(((hdr >> 16) & 0x7ff) + 1);
		}
		if (id == PCI_CAP_ID_VNDR && len >= 16 && ptr <= 0xfc - 16) {
			uint8_t cfg_type = (uint8_t)(hdr >> 24);
			struct vpci_region *r = 0;

			switch (cfg_type) {
			case VIRTIO_PCI_CAP_COMMON_CFG:
				r = &d->common;
				break;
			case VIRTIO_PCI_CAP_NOTIFY_CFG:
				r = &d->notify;
				break;
			case VIRTIO_PCI_CAP_ISR_CFG:
				r = &d->isr;
				break;
			case VIRTIO_PCI_CAP_DEVICE_CFG:
				r = &d->device;
				break;
			case VIRTIO_PCI_CAP_PCI_CFG:
				r = &d->pcicfg;
				break;
			}
			/* The first capability of each type is the one to use. */
			if (r && !r->present) {
				r->present = 1;
				r->cap = ptr;
				r->bar = (uint8_t)pci_cfg_read32(f->bus, f->dev, f->fn, ptr + 4);
				r->offset = pci_cfg_read32(f->bus, f->dev, f->fn, ptr + 8);
				r->length = pci_cfg_read32(f->bus, f->dev, f->fn, ptr + 12);
				if (cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG && len >= 20 && ptr <= 0xfc - 20)
					d->notify_mult = pci_cfg_read32(f->bus, f->dev, f->fn, ptr + 16);
			}
		}
		ptr = (uint8_t)(hdr >> 8);
	}
}

int vpci_setup(struct vpci *d, int legacy)
{
	struct pci_func *f = &d->f;

	d->legacy = legacy;
	walk_caps(d);

	uint16_t cmd = f->command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	if (legacy)
		cmd |= PCI_COMMAND_IO;
	pci_cfg_write16(f->bus, f->dev, f->fn, PCI_COMMAND, cmd);
	f->command = pci_cfg_read16(f->bus, f->dev, f->fn, PCI_COMMAND);

	if (d->msix_cap) {
		uint32_t table = pci_cfg_read32(f->bus, f->dev, f->fn, d->msix_cap + 4);
		uint8_t bir = table & 7;
		uint32_t off = table & ~7u;
		const struct pci_bar *bar = bir < PCI_MAX_BARS ? &f->bars[bir] : 0;

		if (bar && (bar->kind == PCI_BAR_MEM32 || bar->kind == PCI_BAR_MEM64) && bar->addr &&
		    (uint64_t)off + (uint64_t)d->msix_size * 16 <= bar->size) {
			void *p = map_identity(bar->addr + off, (uint64_t)d->msix_size * 16);
			d->msix_table = (uint64_t)(uintptr_t)p;
		}
	}

	if (legacy) {
		if (f->device != VIRTIO_DEV_NET_TRANSITIONAL || f->bars[0].kind != PCI_BAR_IO ||
		    f->bars[0].addr == 0 || f->bars[0].size < 0x18 || f->bars[0].addr > 0xffff - 0x40) {
			kprintf("virtio error no legacy i/o bar\n");
			return -1;
		}
		d->io = (uint16_t)f->bars[0].addr;
		kprintf("virtio dev %02x:%02x.%u id=%04x:%04x rev=%02x mode=legacy io=0x%x cmd=%04x\n",
			f->bus, f->dev, f->fn, f->vendor, f->device, f->rev, d->io, f->command);
		return 0;
	}

	if (!d->common.present || !d->notify.present || !d->isr.present) {
		kprintf("virtio error missing capability common=%u notify=%u isr=%u device=%u\n",
			d->common.present, d->notify.present, d->isr.present, d->device.present);
		return -1;
	}
	if (map_region(d, &d->common, "common") || map_region(d, &d->notify, "notify") ||
	    map_region(d, &d->isr, "isr"))
		return -1;
	if (d->device.present && map_region(d, &d->device, "device"))
		return -1;
	if (d->common.length < 0x38) {
		kprintf("virtio error common cap length=0x%x too short\n", d->common.length);
		return -1;
	}
	kprintf("virtio dev %02x:%02x.%u id=%04x:%04x rev=%02x mode=modern cmd=%04x"
		" common=bar%u+0x%x notify=bar%u+0x%x mult=%u isr=bar%u+0x%x device=bar%u+0x%x/0x%x"
		" pcicfg=%u\n",
		f->bus, f->dev, f->fn, f->vendor, f->device, f->rev, f->command, d->common.bar,
		d->common.offset, d->notify.bar, d->notify.offset, d->notify_mult, d->isr.bar,
		d->isr.offset, d->device.bar, d->device.offset, d->device.length, d->pcicfg.cap);
	return 0;
}

static uint64_t cc(struct vpci *d, uint32_t off)
{
	return d->common.addr + off;
}

uint8_t vpci_status(struct vpci *d)
{
	if (d->legacy)
		return inb(d->io + VPL_STATUS);
	return mmio_read8(cc(d, VPC_STATUS));
}

void vpci_set_status(struct vpci *d, uint8_t status)
{
	if (d->legacy)
		outb(d->io + VPL_STATUS, status);
	else
		mmio_write8(cc(d, VPC_STATUS), status);
}

void vpci_reset(struct vpci *d)
{
	vpci_set_status(d, 0);
	/* The reset is complete once the status reads back 0. */
	for (int i = 0; i < RESET_POLL_LIMIT; i++) {
		if (vpci_status(d) == 0)
			return;
	}
	kprintf("virtio error reset did not complete\n");
}

uint32_t vpci_device_features(struct vpci *d, uint32_t sel)
{
	if (d->legacy)
		return sel == 0 ? inl(d->io + VPL_HOST_FEATURES) : 0;
	mmio_write32(cc(d, VPC_DFSELECT), sel);
	return mmio_read32(cc(d, VPC_DF));
}

void vpci_set_driver_features(struct vpci *d, uint64_t features)
{
	if (d->legacy) {
		outl(d->io + VPL_GUEST_FEATURES, (uint32_t)features);
		return;
	}
	mmio_write32(cc(d, VPC_GFSELECT), 0);
	mmio_write32(cc(d, VPC_GF), (uint32_t)features);
	mmio_write32(cc(d, VPC_GFSELECT), 1);
	mmio_write32(cc(d, VPC_GF), (uint32_t)(features >> 32));
}

uint16_t vpci_queue_max(struct vpci *d, uint16_t idx)
{
	if (d->legacy) {
		outw(d->io + VPL_QUEUE_SEL, idx);
		return inw(d->io + VPL_QUEUE_NUM);
	}
	mmio_write16(cc(d, VPC_Q_SELECT), idx);
	return mmio_read16(cc(d, VPC_Q_SIZE));
}

uint16_t vpci_num_queues(struct vpci *d)
{
	if (!d->legacy)
		return mmio_read16(cc(d, VPC_NUM_QUEUES));
	uint16_t n = 0;
	while (n < VPCI_MAX_QUEUES && vpci_queue_max(d, n) != 0)
		n++;
	return n;
}

int vpci_queue_setup(struct vpci *d, uint16_t idx, uint16_t size, uint64_t desc,
		     uint64_t avail, uint64_t used, uint16_t *vector, uint64_t *notify)
{
	*notify = 0;
	if (d->legacy) {
		(void)avail;
		(void)used;
		outw(d->io + VPL_QUEUE_SEL, idx);
		if (d->msix_enabled) {
			outw(d->io + VPL_MSIX_QUEUE, *vector);
			*vector = inw(d->io + VPL_MSIX_QUEUE);
		} else {
			*vector = VIRTIO_MSI_NO_VECTOR;
		}
		if ((desc & (VPL_ALIGN - 1)) || (desc >> 12) > 0xffffffffull) {
			kprintf("virtio error queue=%u ring 0x%lx unusable for legacy\n", idx, desc);
			return -1;
		}
		outl(d->io + VPL_QUEUE_PFN, (uint32_t)(desc >> 12));
		return 0;
	}
	mmio_write16(cc(d, VPC_Q_SELECT), idx);
	mmio_write16(cc(d, VPC_Q_SIZE), size);
	mmio_write16(cc(d, VPC_Q_MSIX), *vector);
	*vector = mmio_read16(cc(d, VPC_Q_MSIX));
	uint16_t off = mmio_read16(cc(d, VPC_Q_NOTIFY_OFF));
	mmio_write32(cc(d, VPC_Q_DESC), (uint32_t)desc);
	mmio_write32(cc(d, VPC_Q_DESC + 4), (uint32_t)(desc >> 32));
	mmio_write32(cc(d, VPC_Q_AVAIL), (uint32_t)avail);
	mmio_write32(cc(d, VPC_Q_AVAIL + 4), (uint32_t)(avail >> 32));
	mmio_write32(cc(d, VPC_Q_USED), (uint32_t)used);
	mmio_write32(cc(d, VPC_Q_USED + 4), (uint32_t)(used >> 32));
	uint64_t noff = (uint64_t)off * d->notify_mult;
	if (noff + 2 > d->notify.length) {
		kprintf("virtio error queue=%u notify_off=%u outside notify region\n", idx, off);
		return -1;
	}
	*notify = d->notify.addr + noff;
	mmio_write16(cc(d, VPC_Q_ENABLE), 1);
	return 0;
}

void vpci_notify(struct vpci *d, uint16_t idx, uint64_t notify)
{
	if (d->legacy)
		outw(d->io + VPL_QUEUE_NOTIFY, idx);
	else
		mmio_write16(notify, idx);
}

uint16_t vpci_set_config_vector(struct vpci *d, uint16_t v)
{
	if (d->legacy) {
		if (!d->msix_enabled)
			return VIRTIO_MSI_NO_VECTOR;
		outw(d->io + VPL_MSIX_CONFIG, v);
		return inw(d->io + VPL_MSIX_CONFIG);
	}
	mmio_write16(cc(d, VPC_MSIX_CONFIG), v);
	return mmio_read16(cc(d, VPC_MSIX_CONFIG));
}

int vpci_msix_enable(struct vpci *d)
{
	struct pci_func *f = &d->f;

	if (!d->msix_cap || !d->msix_table)
		return -1;
	for (uint16_t i = 0; i < d->msix_size; i++) {
		uint64_t e = d->msix_table + (uint64_t)i * 16;

		mmio_write32(e + 0, 0xfee00000u);   /* LAPIC 0, physical */
		mmio_write32(e + 4, 0);
		mmio_write32(e + 8, 0x40u + i);     /* fixed, edge */
		mmio_write32(e + 12, 0);            /* unmasked */
	}
	uint16_t ctrl = pci_cfg_read16(f->bus, f->dev, f->fn, d->msix_cap + 2);
	ctrl = (uint16_t)((ctrl | 0x8000) & ~0x4000); /* enable, function mask off */
	pci_cfg_write16(f->bus, f->dev, f->fn, d->msix_cap + 2, ctrl);
	d->msix_enabled = (pci_cfg_read16(f->bus, f->dev, f->fn, d->msix_cap + 2) & 0x8000) != 0;
	return d->msix_enabled ? 0 : -1;
}

static uint32_t legacy_cfg_base(struct vpci *d)
{
	return d->io + (d->msix_enabled ? VPL_CONFIG_MSIX : VPL_CONFIG);
}

uint8_t vpci_cfg8(struct vpci *d, uint32_t off)
{
	if (d->legacy)
		return inb((uint16_t)(legacy_cfg_base(d) + off));
	if (!d->device.present || off + 1 > d->device.length)
		return 0xff;
	return mmio_read8(d->device.addr + off);
}

uint16_t vpci_cfg16(struct vpci *d, uint32_t off)
{
	if (d->legacy)
		return inw((uint16_t)(legacy_cfg_base(d) + off));
	if (!d->device.present || off + 2 > d->device.length)
		return 0xffff;
	return mmio_read16(d->device.addr + off);
}

uint8_t vpci_cfg_generation(struct vpci *d)
{
	if (d->legacy)
		return 0;
	return mmio_read8(cc(d, VPC_CFG_GENERATION));
}

/*
 * pci.c - PCI configuration mechanism #1 (ports 0xCF8/0xCFC), BAR sizing and
 * capability walking. Each config access costs two port exits, so the code
 * reads whole dwords and touches each register once where it can.
 */
#include <stdint.h>

#include "io.h"
#include "pci.h"
#include "printf.h"

#define CAP_WALK_LIMIT 48 /* (256 - 64) / 4: more entries means a loop */

static uint32_t cfg_addr(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off)
{
	return 0x80000000u | ((uint32_t)bus << 16) | ((uint32_t)(dev & 0x1f) << 11) |
	       ((uint32_t)(fn & 7) << 8) | (off & 0xfc);
}

uint32_t pci_cfg_read32(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off)
{
	outl(PCI_CONFIG_ADDR, cfg_addr(bus, dev, fn, off));
	return inl(PCI_CONFIG_DATA);
}

uint16_t pci_cfg_read16(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off)
{
	return (uint16_t)(pci_cfg_read32(bus, dev, fn, off) >> ((off & 2) * 8));
}

uint8_t pci_cfg_read8(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off)
{
	return (uint8_t)(pci_cfg_read32(bus, dev, fn, off) >> ((off & 3) * 8));
}

void pci_cfg_write32(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off, uint32_t v)
{
	outl(PCI_CONFIG_ADDR, cfg_addr(bus, dev, fn, off));
	outl(PCI_CONFIG_DATA, v);
}

void pci_cfg_write16(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off, uint16_t v)
{
	outl(PCI_CONFIG_ADDR, cfg_addr(bus, dev, fn, off));
	outw(PCI_CONFIG_DATA + (off & 2), v);
}

void pci_cfg_write8(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off, uint8_t v)
{
	outl(PCI_CONFIG_ADDR, cfg_addr(bus, dev, fn, off));
	outb(PCI_CONFIG_DATA + (off & 3), v);
}

/* Lowest set bit: the decoded size of a BAR from its all-ones readback. */
static uint64_t lowest_bit(uint64_t v)
{
	return v & (~v + 1);
}

static void size_bars(struct pci_func *f, int nbars, uint8_t rom_off)
{
	uint8_t b = f->bus, d = f->dev, fn = f->fn;
	uint16_t decode = f->command & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
	/* Host bridges keep decoding (as Linux does): they may route RAM or config. */
	int toggle = decode && (f->class_code >> 8) != 0x0600;

	if (toggle)
		pci_cfg_write16(b, d, fn, PCI_COMMAND, f->command & ~decode);

	for (int i = 0; i < nbars; i++) {
		uint8_t off = (uint8_t)(PCI_BAR0 + 4 * i);
		struct pci_bar *bar = &f->bars[i];
		uint32_t orig = pci_cfg_read32(b, d, fn, off);

		pci_cfg_write32(b, d, fn, off, 0xffffffffu);
		uint32_t sz = pci_cfg_read32(b, d, fn, off);
		pci_cfg_write32(b, d, fn, off, orig);

		if (orig & 1) {
			uint64_t s = sz & 0xfffffffcu;

			if (s == 0)
				continue;
			bar->kind = PCI_BAR_IO;
			bar->addr = orig & 0xfffffffcu;
			bar->size = lowest_bit(s);
			continue;
		}
		uint64_t mask = sz & 0xfffffff0u;
		uint64_t addr = orig & 0xfffffff0u;
		uint8_t kind = PCI_BAR_MEM32;
		if (((orig >> 1) & 3) == 2 && i + 1 < nbars) {
			uint32_t orig_hi = pci_cfg_read32(b, d, fn, off + 4);

			pci_cfg_write32(b, d, fn, off + 4, 0xffffffffu);
			uint32_t sz_hi = pci_cfg_read32(b, d, fn, off + 4);
			pci_cfg_write32(b, d, fn, off + 4, orig_hi);
			mask |= (uint64_t)sz_hi << 32;
			addr |= (uint64_t)orig_hi << 32;
			kind = PCI_BAR_MEM64;
		}
		if (mask == 0) {
			if (kind == PCI_BAR_MEM64)
				i++;
			continue;
		}
		bar->kind = kind;
		bar->prefetch = (orig >> 3) & 1;
		bar->addr = addr;
		bar->size = lowest_bit(mask);
		if (kind == PCI_BAR_MEM64)
			i++; /* the upper half belongs to this BAR */
	}

	if (rom_off) {
		uint32_t orig = pci_cfg_read32(b, d, fn, rom_off);

		pci_cfg_write32(b, d, fn, rom_off, 0xfffff800u);
		uint32_t sz = pci_cfg_read32(b, d, fn, rom_off);
		pci_cfg_write32(b, d, fn, rom_off, orig);
		if (sz & 0xfffff800u) {
			f->rom_addr = orig & 0xfffff800u;
			f->rom_size = (uint32_t)lowest_bit(sz & 0xfffff800u);
		}
	}

	if (toggle)
		pci_cfg_write16(b, d, fn, PCI_COMMAND, f->command);
}

int pci_probe(uint8_t bus, uint8_t dev, uint8_t fn, struct pci_func *f)
{
	uint32_t id = pci_cfg_read32(bus, dev, fn, PCI_VENDOR_ID);
	uint16_t vendor = (uint16_t)id;

	if (vendor == 0xffff || vendor == 0x0000)
		return -1;

	uint8_t *p = (uint8_t *)f;
	for (unsigned int i = 0; i < sizeof(*f); i++)
		p[i] = 0;

	f->bus = bus;
	f->dev = dev;
	f->fn = fn;
	f->vendor = vendor;
	f->device = (uint16_t)(id >> 16);

	uint32_t cmdsts = pci_cfg_read32(bus, dev, fn, PCI_COMMAND);
	f->command = (uint16_t)cmdsts;
	f->status = (uint16_t)(cmdsts >> 16);

	uint32_t classrev = pci_cfg_read32(bus, dev, fn, PCI_REVISION);
	f->rev = (uint8_t)classrev;
	f->class_code = classrev >> 8;

	uint32_t bist_hdr = pci_cfg_read32(bus, dev, fn, 0x0c);
	uint8_t hdr = (uint8_t)(bist_hdr >> 16);
	f->hdr_type = hdr & 0x7f;
	f->multifunction = hdr >> 7;

	uint32_t irq = pci_cfg_read32(bus, dev, fn, PCI_INTERRUPT_LINE);
	f->irq_line = (uint8_t)irq;
	f->irq_pin = (uint8_t)(irq >> 8);

	switch (f->hdr_type) {
	case 0: {
		uint32_t ss = pci_cfg_read32(bus, dev, fn, PCI_SUBSYS_VENDOR);
		f->subsys_vendor = (uint16_t)ss;
		f->subsys_id = (uint16_t)(ss >> 16);
		size_bars(f, 6, PCI_ROM_ADDRESS);
		break;
	}
	case 1:
		size_bars(f, 2, PCI_BRIDGE_ROM_ADDRESS);
		break;
	default:
		break; /* CardBus and unknown layouts: header fields only */
	}
	return 0;
}

uint8_t pci_find_cap(const struct pci_func *f, uint8_t id, uint8_t from)
{
	uint8_t ptr;

	if (!(f->status & PCI_STATUS_CAP_LIST) || f->hdr_type > 1)
		return 0;
	if (from)
		ptr = (uint8_t)(pci_cfg_read32(f->bus, f->dev, f->fn, from) >> 8);
	else
		ptr = pci_cfg_read8(f->bus, f->dev, f->fn, PCI_CAP_PTR);
	for (int n = 0; n < CAP_WALK_LIMIT; n++) {
		ptr &= 0xfc;
		if (ptr < 0x40)
			return 0;
		uint32_t hdr = pci_cfg_read32(f->bus, f->dev, f->fn, ptr);
		if ((uint8_t)hdr == id)
			return ptr;
		ptr = (uint8_t)(hdr >> 8);
	}
	return 0;
}

static const char *bar_kind_name(const struct pci_bar *bar)
{
	switch (bar->kind) {
	case PCI_BAR_IO:
		return "io";
	case PCI_BAR_MEM32:
		return bar->prefetch ? "mem32p" : "mem32";
	case PCI_BAR_MEM64:
		return bar->prefetch ? "mem64p" : "mem64";
	default:
		return "none";
	}
}

void pci_print_func(const struct pci_func *f)
{
	kprintf("pci %02x:%02x.%u vendor=%04x device=%04x rev=%02x class=%06x hdr=%02x"
		" mf=%u subsys=%04x:%04x cmd=%04x pin=%u line=%u",
		f->bus, f->dev, f->fn, f->vendor, f->device, f->rev, f->class_code,
		f->hdr_type, f->multifunction, f->subsys_vendor, f->subsys_id,
		f->command, f->irq_pin, f->irq_line);
	for (int i = 0; i < PCI_MAX_BARS; i++) {
		const struct pci_bar *bar = &f->bars[i];

		if (bar->kind == PCI_BAR_NONE)
			continue;
		if (bar->kind == PCI_BAR_MEM64)
			kprintf(" bar%d=%s:%016lx/%lu", i, bar_kind_name(bar), bar->addr, bar->size);
		else
			kprintf(" bar%d=%s:%08lx/%lu", i, bar_kind_name(bar), bar->addr, bar->size);
	}
	if (f->rom_size)
		kprintf(" rom=mem32:%08x/%u", f->rom_addr, f->rom_size);
	kprintf("\n");
}

/* Virtio PCI capability (vendor-specific, id 0x09) on a virtio device. */
static void print_virtio_cap(const struct pci_func *f, uint8_t ptr, uint32_t hdr)
{
	uint8_t b = f->bus, d = f->dev, fn = f->fn;
	uint8_t len = (uint8_t)(hdr >> 16);
	uint8_t cfg_type = (uint8_t)(hdr >> 24);
	uint32_t w1 = pci_cfg_read32(b, d, fn, ptr + 4);
	uint32_t offset = pci_cfg_read32(b, d, fn, ptr + 8);
	uint32_t length = pci_cfg_read32(b, d, fn, ptr + 12);

	kprintf("(len=0x%x cfg_type=%u bar=%u offset=0x%x length=0x%x", len, cfg_type,
		w1 & 0xff, offset, length);
	/* VIRTIO_PCI_CAP_NOTIFY_CFG carries notify_off_multiplier after the cap. */
	if (cfg_type == 2 && len >= 20 && ptr <= 0xfc - 16)
		kprintf(" mult=%u", pci_cfg_read32(b, d, fn, ptr + 16));
	kprintf(")");
}

void pci_print_caps(const struct pci_func *f)
{
	uint8_t b = f->bus, d = f->dev, fn = f->fn;

	if (!(f->status & PCI_STATUS_CAP_LIST) || f->hdr_type > 1)
		return;
	kprintf("caps %02x:%02x.%u", b, d, fn);
	uint8_t ptr = pci_cfg_read8(b, d, fn, PCI_CAP_PTR);
	for (int n = 0; n < CAP_WALK_LIMIT; n++) {
		ptr &= 0xfc;
		if (ptr < 0x40)
			break;
		uint32_t hdr = pci_cfg_read32(b, d, fn, ptr);
		uint8_t id = (uint8_t)hdr;

		kprintf(" %02x@%02x", id, ptr);
		if (id == PCI_CAP_ID_VNDR && f->vendor == 0x1af4 && ptr <= 0xfc - 12) {
			print_virtio_cap(f, ptr, hdr);
		} else if (id == PCI_CAP_ID_VNDR) {
			kprintf("(len=0x%x)", (hdr >> 16) & 0xff);
		} else if (id == PCI_CAP_ID_MSIX && ptr <= 0xfc - 8) {
			uint16_t ctrl = (uint16_t)(hdr >> 16);
			uint32_t table = pci_cfg_read32(b, d, fn, ptr + 4);
			uint32_t pba = pci_cfg_read32(b, d, fn, ptr + 8);

			kprintf("(msix size=%u enabled=%u masked=%u table=bar%u+0x%x pba=bar%u+0x%x)",
				(ctrl & 0x7ff) + 1, ctrl >> 15, (ctrl >> 14) & 1, table & 7,
				table & ~7u, pba & 7, pba & ~7u);
		} else if (id == PCI_CAP_ID_MSI) {
			kprintf("(msi ctrl=0x%04x)", hdr >> 16);
		}
		ptr = (uint8_t)(hdr >> 8);
	}
	kprintf("\n");
}

int pci_scan_bus(uint8_t bus, pci_visit_fn visit, void *arg)
{
	struct pci_func f;
	int count = 0;

	for (uint8_t dev = 0; dev < 32; dev++) {
		if (pci_probe(bus, dev, 0, &f) != 0)
			continue;
		count++;
		visit(&f, arg);
		if (!f.multifunction)
			continue;
		for (uint8_t fn = 1; fn < 8; fn++) {
			if (pci_probe(bus, dev, fn, &f) != 0)
				continue;
			count++;
			visit(&f, arg);
		}
	}
	return count;
}

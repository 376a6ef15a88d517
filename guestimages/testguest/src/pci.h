/* pci.h - PCI configuration mechanism #1, BAR sizing and capability walking. */
#ifndef TESTGUEST_PCI_H
#define TESTGUEST_PCI_H

#include <stdint.h>

#define PCI_CONFIG_ADDR 0xcf8
#define PCI_CONFIG_DATA 0xcfc

#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION 0x08
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYS_VENDOR 0x2c
#define PCI_SUBSYS_ID 0x2e
#define PCI_ROM_ADDRESS 0x30
#define PCI_CAP_PTR 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d
#define PCI_BRIDGE_ROM_ADDRESS 0x38

#define PCI_COMMAND_IO 0x0001
#define PCI_COMMAND_MEMORY 0x0002
#define PCI_COMMAND_MASTER 0x0004
#define PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS_CAP_LIST 0x0010

#define PCI_CAP_ID_MSI 0x05
#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11

#define PCI_MAX_BARS 6

enum pci_bar_kind {
	PCI_BAR_NONE = 0, /* not implemented (or upper half of a 64-bit BAR) */
	PCI_BAR_IO,
	PCI_BAR_MEM32,
	PCI_BAR_MEM64,
};

struct pci_bar {
	uint8_t kind;     /* enum pci_bar_kind */
	uint8_t prefetch; /* memory BARs: prefetchable bit */
	uint64_t addr;    /* assigned base address (flag bits stripped) */
	uint64_t size;    /* decoded size in bytes */
};

/* One probed function; bars[] and the ROM are sized, not just read. */
struct pci_func {
	uint8_t bus, dev, fn;
	uint8_t rev;
	uint8_t hdr_type;  /* header layout, multifunction bit stripped */
	uint8_t multifunction;
	uint8_t irq_pin;   /* 0 = none, 1 = INTA# .. 4 = INTD# */
	uint8_t irq_line;
	uint16_t vendor, device;
	uint16_t command, status;
	uint16_t subsys_vendor, subsys_id; /* 0 for bridges */
	uint32_t class_code; /* class << 16 | subclass << 8 | prog-if */
	struct pci_bar bars[PCI_MAX_BARS];
	uint32_t rom_addr;
	uint32_t rom_size;
};

uint32_t pci_cfg_read32(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off);
uint16_t pci_cfg_read16(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off);
uint8_t pci_cfg_read8(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off);
void pci_cfg_write32(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off, uint32_t v);
void pci_cfg_write16(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off, uint16_t v);
void pci_cfg_write8(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off, uint8_t v);

/*
 * Reads the header of bus:dev.fn and sizes its BARs and ROM (decode is switched
 * off in the command register while sizing, except on host bridges). Returns 0 on
 * success, -1 if no function answers.
 */
int pci_probe(uint8_t bus, uint8_t dev, uint8_t fn, struct pci_func *f);

/*
 * Offset of the first capability with the given id at or after the list entry
 * `from` (0 = start of the list), or 0. Loops in the chain are cut off.
 */
uint8_t pci_find_cap(const struct pci_func *f, uint8_t id, uint8_t from);

/* Prints the "pci BB:DD.F ..." line. */
void pci_print_func(const struct pci_func *f);
/* Prints the "caps BB:DD.F ..." line if the function has a capability list. */
void pci_print_caps(const struct pci_func *f);

typedef void (*pci_visit_fn)(const struct pci_func *f, void *arg);

/* Probes every slot and function of one bus, calling visit for each; returns the count. */
int pci_scan_bus(uint8_t bus, pci_visit_fn visit, void *arg);

#endif

/* io.h - port I/O and small CPU helpers for the rscvm test guest. */
#ifndef TESTGUEST_IO_H
#define TESTGUEST_IO_H

#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint16_t inw(uint16_t port)
{
	uint16_t v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* Memory-mapped I/O accessors (volatile, no reordering by the compiler). */
static inline uint8_t mmio_read8(uint64_t addr)
{
	return *(volatile uint8_t *)(uintptr_t)addr;
}

static inline uint16_t mmio_read16(uint64_t addr)
{
	return *(volatile uint16_t *)(uintptr_t)addr;
}

static inline uint32_t mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)(uintptr_t)addr;
}

static inline void mmio_write8(uint64_t addr, uint8_t v)
{
	*(volatile uint8_t *)(uintptr_t)addr = v;
}

static inline void mmio_write16(uint64_t addr, uint16_t v)
{
	*(volatile uint16_t *)(uintptr_t)addr = v;
}

static inline void mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)(uintptr_t)addr = v;
}

/* Compiler barrier. x86 keeps stores ordered with stores and loads with loads. */
static inline void barrier(void)
{
	__asm__ volatile("" : : : "memory");
}

/*
 * Full memory barrier without SSE2 fences (mfence is avoided on purpose: keep the
 * guest to instructions every emulator handles). A locked RMW orders everything.
 */
static inline void mb(void)
{
	__asm__ volatile("lock; addl $0, (%%rsp)" : : : "memory", "cc");
}

/* Stops the CPU for good: interrupts off, then hlt forever. */
static inline __attribute__((noreturn)) void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt" : : : "memory");
}

#endif

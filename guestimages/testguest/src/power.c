/* power.c - ACPI power-off, reset and the ACPI PM timer. */
#include <stdint.h>

#include "io.h"
#include "power.h"

uint32_t pm_timer_read(void)
{
	return inl(ACPI_PM_TMR);
}

void pm_timer_delay_us(uint32_t us)
{
	uint32_t ticks = (uint32_t)(((uint64_t)us * ACPI_PM_TMR_HZ) / 1000000u);
	uint32_t start = pm_timer_read();
	uint32_t last = start;
	unsigned int stuck = 0;

	/*
	 * Spin mostly without exits (under QEMU TCG a stream of port reads can
	 * keep the main loop from acting on a power-off request), reading the
	 * timer every 1024 iterations (~2.3 ms at ~750 ns per instruction, a few
	 * us under TCG). Differences are taken modulo 2^24 (QEMU's timer is 24
	 * bits wide), so waits must stay below ~4.6 s. A timer that does not move
	 * for 64 reads in a row ends the wait; so does a hard bound on rounds.
	 */
	for (uint32_t n = 0; n < (1u << 18); n++) {
		for (uint32_t i = 0; i < 1024; i++)
			__asm__ volatile("" : : : "memory");
		uint32_t now = pm_timer_read();
		if (((now - start) & 0xffffff) >= ticks)
			return;
		if (now == last) {
			if (++stuck >= 64)
				return;
		} else {
			stuck = 0;
			last = now;
		}
	}
}

void acpi_poweroff(void)
{
	outw(ACPI_PM1A_CNT, ACPI_SLP_EN);
	/* A VMM may act on the request asynchronously: give it a second. */
	pm_timer_delay_us(1000000);
}

void cf9_reset(void)
{
	outb(RESET_PORT, 0x06);
	pm_timer_delay_us(1000000);
}

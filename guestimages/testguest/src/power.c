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

	/*
	 * Spin mostly without exits (under QEMU TCG a stream of port reads can
	 * keep the main loop from acting on a power-off request), reading the
	 * timer every 1024 iterations. Differences are taken modulo 2^24 (QEMU's
	 * timer is 24 bits wide), so waits must stay below ~4.6 s. The outer
	 * bound ends the wait if the timer never ticks: about 2.5 ms per round at
	 * ~750 ns per instruction, ~5 s in all.
	 */
	for (uint32_t n = 0; n < 2048; n++) {
		for (uint32_t i = 0; i < 1024; i++)
			__asm__ volatile("" : : : "memory");
		if (((pm_timer_read() - start) & 0xffffff) >= ticks)
			return;
	}
}

void acpi_poweroff(void)
{
	outw(ACPI_PM1A_CNT, ACPI_SLP_EN);
	/* A VMM may act on the request asynchronously: give it 500 ms. */
	pm_timer_delay_us(500000);
}

void cf9_reset(void)
{
	outb(RESET_PORT, 0x06);
	pm_timer_delay_us(500000);
}

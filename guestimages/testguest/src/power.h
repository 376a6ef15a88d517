/* power.h - ACPI power-off, reset and the ACPI PM timer. */
#ifndef TESTGUEST_POWER_H
#define TESTGUEST_POWER_H

#include <stdint.h>

#define ACPI_PM1A_CNT 0x604
#define ACPI_PM_TMR 0x608
#define ACPI_PM_TMR_HZ 3579545u
#define ACPI_SLP_EN 0x2000
#define RESET_PORT 0xcf9

/* Reads the 32-bit ACPI PM timer. */
uint32_t pm_timer_read(void);
/*
 * Busy-waits about us microseconds (us < 4,000,000) on the PM timer; ends
 * early (after ~150 ms at emulated-KVM speed) when the timer does not move.
 */
void pm_timer_delay_us(uint32_t us);

/* S5 through PM1a_CNT (SLP_TYP 0, SLP_EN); returns only if nothing happened. */
void acpi_poweroff(void);
/* Hard reset through port 0xCF9; returns only if nothing happened. */
void cf9_reset(void);

#endif

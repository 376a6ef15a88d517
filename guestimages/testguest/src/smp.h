/* smp.h - ACPI MADT parsing and application-processor start-up (smp=1). */
#ifndef TESTGUEST_SMP_H
#define TESTGUEST_SMP_H

/* Shared with trampoline.S (keep to #defines). */
#define AP_TRAMPOLINE_BASE 0x8000 /* SIPI vector 0x08: CS=0x0800, IP=0 */
#define AP_MAX_CPUS 32            /* CPUs brought up at most (BSP included) */
#define AP_STACK_SIZE 0x1000      /* per application processor */

#ifndef __ASSEMBLER__
#include <stdint.h>

#include "pvh.h"

/*
 * Reads the MADT through start_info's RSDP, prints the "smp" lines and starts
 * every other enabled local APIC with INIT-SIPI-SIPI, waiting up to wait_ms
 * for each. Never hangs: problems become "smp error ..." or "... timeout".
 * si may be NULL (unusable start_info). extra_id >= 0 adds that APIC ID to
 * the CPUs to start (tests the timeout path with an ID nobody has); it is
 * counted in "smp done cpus=" but not in the "smp madt" line.
 */
void smp_start(const struct hvm_start_info *si, uint32_t wait_ms, int extra_id);

/* The C side of an application processor (trampoline.S); never returns. */
void ap_main(uint32_t ticket) __attribute__((noreturn));
#endif

#endif

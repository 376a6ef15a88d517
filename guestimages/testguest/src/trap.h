/* trap.h - CPU exception reporting. */
#ifndef TESTGUEST_TRAP_H
#define TESTGUEST_TRAP_H

#include <stdint.h>

/* Stack frame built by the entry.S stubs: vector and error code, then the CPU frame. */
struct trap_frame {
	uint64_t vector;
	uint64_t error;
	uint64_t rip;
	uint64_t cs;
	uint64_t rflags;
	uint64_t rsp;
	uint64_t ss;
};

/*
 * Installs an IDT whose 32 exception vectors print a "trap ..." line and the
 * halted line, then power off (or halt if power-off fails).
 */
void trap_init(void);
/* Loads the IDT trap_init built on the calling CPU (application processors). */
void trap_load(void);
/* Called by the stubs; never returns. */
void trap_handler(struct trap_frame *tf) __attribute__((noreturn));

#endif

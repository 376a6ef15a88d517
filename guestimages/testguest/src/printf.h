/* printf.h - a tiny printf subset writing to COM1. */
#ifndef TESTGUEST_PRINTF_H
#define TESTGUEST_PRINTF_H

#include <stdarg.h>

/*
 * Supported conversions: %s %c %d %i %u %x %X %p %%, with an optional '0' flag,
 * a '-' flag, a decimal width, and the length modifiers l, ll and z
 * (%ld %lu %lx %llx %zu ...). Everything is unbuffered; '\n' becomes "\r\n".
 */
int kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int kvprintf(const char *fmt, va_list ap);
/*
 * Output of one kprintf call is never interleaved with another CPU's (a
 * spinlock). The trap handler calls this first: from then on the lock is
 * ignored, so a CPU that faults while printing still reports.
 */
void kprintf_lock_break(void);

#endif

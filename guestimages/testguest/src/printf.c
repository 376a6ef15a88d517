/* printf.c - a tiny printf subset writing to COM1. */
#include <stdarg.h>
#include <stdint.h>

#include "printf.h"
#include "uart.h"

/* Output is staged in a small buffer so uart_write sees runs, not single bytes. */
struct out {
	char buf[64];
	unsigned int len;
	int total;
};

static void out_flush(struct out *o)
{
	if (o->len) {
		uart_write(o->buf, o->len);
		o->len = 0;
	}
}

static void out_char(struct out *o, char c)
{
	if (o->len == sizeof(o->buf))
		out_flush(o);
	o->buf[o->len++] = c;
	o->total++;
}

static void out_pad(struct out *o, char c, int n)
{
	while (n-- > 0)
		out_char(o, c);
}

static void out_str(struct out *o, const char *s, int width, int left)
{
	int n = 0;

	if (!s)
		s = "(null)";
	while (s[n])
		n++;
	if (!left)
		out_pad(o, ' ', width - n);
	for (int i = 0; i < n; i++)
		out_char(o, s[i]);
	if (left)
		out_pad(o, ' ', width - n);
}

static void out_num(struct out *o, uint64_t v, unsigned int base, int neg,
		    int width, int zero, int left, int upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);

	int len = n + (neg ? 1 : 0);
	if (left) {
		if (neg)
			out_char(o, '-');
		while (n)
			out_char(o, tmp[--n]);
		out_pad(o, ' ', width - len);
		return;
	}
	if (zero) {
		if (neg)
			out_char(o, '-');
		out_pad(o, '0', width - len);
	} else {
		out_pad(o, ' ', width - len);
		if (neg)
			out_char(o, '-');
	}
	while (n)
		out_char(o, tmp[--n]);
}

/*
 * One console lock for all CPUs (smp=1): a test-and-set spinlock on xchg (an
 * implicitly locked exchange every emulator handles). kprintf_lock_break turns
 * it off for good, for the trap handler, which may run with the lock held.
 */
static volatile uint32_t console_lock;
static volatile uint32_t console_lock_off;

static void console_acquire(void)
{
	if (console_lock_off)
		return;
	for (;;) {
		uint32_t v = 1;

		__asm__ volatile("xchgl %0, %1" : "+r"(v), "+m"(console_lock) : : "memory");
		if (v == 0)
			return;
		while (console_lock && !console_lock_off)
			__asm__ volatile("pause" : : : "memory");
		if (console_lock_off)
			return;
	}
}

static void console_release(void)
{
	__asm__ volatile("" : : : "memory");
	console_lock = 0;
}

void kprintf_lock_break(void)
{
	console_lock_off = 1;
}

static int kvprintf_locked(const char *fmt, va_list ap);

int kvprintf(const char *fmt, va_list ap)
{
	console_acquire();
	int n = kvprintf_locked(fmt, ap);
	console_release();
	return n;
}

static int kvprintf_locked(const char *fmt, va_list ap)
{
	struct out o;

	o.len = 0;
	o.total = 0;
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			out_char(&o, *p);
			continue;
		}
		p++;
		int zero = 0, left = 0, width = 0, lng = 0;
		for (;; p++) {
			if (*p == '0')
				zero = 1;
			else if (*p == '-')
				left = 1;
			else
				break;
		}
		while (*p >= '0' && *p <= '9')
			width = width * 10 + (*p++ - '0');
		while (*p == 'l' || *p == 'z') {
			lng++;
			p++;
		}
		switch (*p) {
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
			out_num(&o, u, 10, v < 0, width, zero, left, 0);
			break;
		}
		case 'u':
		case 'x':
		case 'X': {
			uint64_t v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned int);
			out_num(&o, v, *p == 'u' ? 10 : 16, 0, width, zero, left, *p == 'X');
			break;
		}
		case 'p':
			out_char(&o, '0');
			out_char(&o, 'x');
			out_num(&o, (uint64_t)(uintptr_t)va_arg(ap, void *), 16, 0, width, zero, left, 0);
			break;
		case 'c':
			out_char(&o, (char)va_arg(ap, int));
			break;
		case 's':
			out_str(&o, va_arg(ap, const char *), width, left);
			break;
		case '%':
			out_char(&o, '%');
			break;
		case '\0':
			p--; /* trailing '%': stop at the terminator */
			break;
		default:
			out_char(&o, '%');
			out_char(&o, *p);
			break;
		}
	}
	out_flush(&o);
	return o.total;
}

int kprintf(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = kvprintf(fmt, ap);
	va_end(ap);
	return n;
}

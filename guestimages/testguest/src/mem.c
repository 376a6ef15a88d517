/*
 * mem.c - freestanding memory/string routines (gcc may emit calls to these).
 * Plain loops (no SSE, no string instructions); memset and memcpy move 8 bytes
 * per iteration when both pointers are 8-byte aligned, since every guest
 * instruction is expensive under an emulated KVM.
 */
#include <stddef.h>
#include <stdint.h>

#include "mem.h"

void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = dst;

	if (n >= 16 && ((uintptr_t)d & 7) == 0) {
		uint64_t v = (unsigned char)c * 0x0101010101010101ull;
		uint64_t *w = (uint64_t *)d;

		for (; n >= 8; n -= 8)
			*w++ = v;
		d = (unsigned char *)w;
	}
	while (n--)
		*d++ = (unsigned char)c;
	return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (n >= 16 && (((uintptr_t)d | (uintptr_t)s) & 7) == 0) {
		uint64_t *wd = (uint64_t *)d;
		const uint64_t *ws = (const uint64_t *)s;

		for (; n >= 8; n -= 8)
			*wd++ = *ws++;
		d = (unsigned char *)wd;
		s = (const unsigned char *)ws;
	}
	while (n--)
		*d++ = *s++;
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (d == s || n == 0)
		return dst;
	if (d < s) {
		while (n--)
			*d++ = *s++;
	} else {
		d += n;
		s += n;
		while (n--)
			*--d = *--s;
	}
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (; n; n--, x++, y++) {
		if (*x != *y)
			return *x < *y ? -1 : 1;
	}
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (unsigned char)*a - (unsigned char)*b;
		if (!*a)
			return 0;
	}
	return 0;
}

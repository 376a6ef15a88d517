/* cmdline.c - the kernel command line as key=value options. */
#include <stddef.h>
#include <stdint.h>

#include "cmdline.h"
#include "mem.h"

static char raw[CMDLINE_MAX];   /* verbatim copy, printed */
static char split[CMDLINE_MAX]; /* copy cut into NUL-terminated keys/values */
static struct cmdline_opt opts[CMDLINE_MAX_OPTS];
static int nopts;
static int truncated;

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int cmdline_parse(const char *src)
{
	size_t n = 0;

	nopts = 0;
	truncated = 0;
	if (src) {
		while (n < CMDLINE_MAX - 1 && src[n]) {
			raw[n] = src[n];
			n++;
		}
		if (n == CMDLINE_MAX - 1 && src[n])
			truncated = 1;
	}
	raw[n] = '\0';
	memcpy(split, raw, n + 1);

	char *p = split;
	while (*p) {
		while (is_space(*p))
			*p++ = '\0';
		if (!*p)
			break;
		char *key = p;
		char *value = NULL;
		while (*p && !is_space(*p)) {
			if (*p == '=' && !value) {
				*p = '\0';
				value = p + 1;
			}
			p++;
		}
		if (nopts < CMDLINE_MAX_OPTS) {
			opts[nopts].key = key;
			opts[nopts].value = value ? value : "";
			nopts++;
		}
	}
	return nopts;
}

const char *cmdline_raw(void)
{
	return raw;
}

int cmdline_truncated(void)
{
	return truncated;
}

int cmdline_count(void)
{
	return nopts;
}

const struct cmdline_opt *cmdline_opt(int i)
{
	if (i < 0 || i >= nopts)
		return NULL;
	return &opts[i];
}

const char *cmdline_get(const char *key, const char *def)
{
	const char *v = def;

	for (int i = 0; i < nopts; i++) {
		if (strcmp(opts[i].key, key) == 0)
			v = opts[i].value;
	}
	return v;
}

uint64_t cmdline_get_u64(const char *key, uint64_t def)
{
	const char *s = cmdline_get(key, NULL);
	uint64_t v = 0;
	unsigned int base = 10;

	if (!s || !*s)
		return def;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		if (!*s)
			return def;
	}
	for (; *s; s++) {
		unsigned int d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned int)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned int)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned int)(*s - 'A' + 10);
		else
			return def;
		if (v > (UINT64_MAX - d) / base)
			return def; /* overflow */
		v = v * base + d;
	}
	return v;
}

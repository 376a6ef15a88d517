/* cmdline.h - the kernel command line as key=value options. */
#ifndef TESTGUEST_CMDLINE_H
#define TESTGUEST_CMDLINE_H

#include <stdint.h>

#define CMDLINE_MAX 1024 /* bytes kept (longer command lines are truncated) */
#define CMDLINE_MAX_OPTS 32

/* One option: "key=value" -> {key, value}; a bare "key" has value "". */
struct cmdline_opt {
	const char *key;
	const char *value;
};

/*
 * Copies at most CMDLINE_MAX-1 bytes of the NUL-terminated string at src (may be
 * NULL) and splits it on spaces/tabs into options. Returns the number of options.
 */
int cmdline_parse(const char *src);

/* The raw (copied, possibly truncated) command line; "" before cmdline_parse. */
const char *cmdline_raw(void);
/* Whether the copy was truncated. */
int cmdline_truncated(void);

int cmdline_count(void);
const struct cmdline_opt *cmdline_opt(int i);

/* Value of the last option named key, or def when absent. */
const char *cmdline_get(const char *key, const char *def);
/* Numeric value (decimal, or hex with 0x) of key, or def when absent or malformed. */
uint64_t cmdline_get_u64(const char *key, uint64_t def);

#endif

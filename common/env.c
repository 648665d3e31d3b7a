/*
 * env.c - whole numbers from text: option values and integer settings
 * from the environment (tuning knobs).
 */
#include <errno.h>
#include <stdlib.h>

#include "bm_common.h"

int
bm_parse_long(const char *s, long lo, long hi, long *ret)
{
	char *end;
	long n;

	if (s == NULL) {
		return -EINVAL;
	}
	errno = 0;
	n = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || n < lo || n > hi) {
		return -EINVAL;
	}
	*ret = n;
	return 0;
}

long
bm_env_long(const char *name, long lo, long hi, long dflt)
{
	long n;

	return name != NULL && bm_parse_long(getenv(name), lo, hi, &n) == 0 ? n : dflt;
}

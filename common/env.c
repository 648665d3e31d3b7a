/*
 * env.c - integer settings from the environment (tuning knobs).
 */
#include <errno.h>
#include <stdlib.h>

#include "bm_common.h"

long
bm_env_long(const char *name, long lo, long hi, long dflt)
{
	const char *v = name != NULL ? getenv(name) : NULL;
	char *end;
	long n;

	if (v == NULL || *v == '\0') {
		return dflt;
	}
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || n < lo || n > hi) {
		return dflt;
	}
	return n;
}

/*
 * log.c - the one logging sink and the clocks.
 *
 * Lines go to stderr as "ident: level: text\n", written with one write() so
 * lines from threads and processes sharing a terminal do not interleave.
 * The level comes from bm_log_set_level() or, at the first call, from
 * $BEAST_LOG.  Clocks are thin wrappers so every floor reads time one way.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bm_common.h"

static atomic_int s_level = -1;
static const char *s_ident = "beastmesh";

static int
s_level_from_env(void)
{
	const char *v = getenv("BEAST_LOG");

	if (v == NULL) {
		return BM_LOG_WARN;
	}
	if (strcasecmp(v, "debug") == 0) {
		return BM_LOG_DEBUG;
	}
	if (strcasecmp(v, "info") == 0) {
		return BM_LOG_INFO;
	}
	if (strcasecmp(v, "error") == 0) {
		return BM_LOG_ERROR;
	}
	return BM_LOG_WARN;
}

void
bm_log_set_level(int level)
{
	atomic_store(&s_level, level);
}

int
bm_log_level(void)
{
	int level = atomic_load_explicit(&s_level, memory_order_relaxed);

	if (level < 0) {
		level = s_level_from_env();
		atomic_store(&s_level, level);
	}
	return level;
}

void
bm_log_set_ident(const char *ident)
{
	s_ident = ident ? ident : "beastmesh";
}

void
bm_log(int level, const char *fmt, ...)
{
	static const char *const names[] = {"error", "warning", "info", "debug"};
	char line[2048];
	va_list ap;
	int n;

	if (level > bm_log_level()) {
		return;
	}
	if (level < 0 || level > BM_LOG_DEBUG) {
		level = BM_LOG_DEBUG;
	}
	n = snprintf(line, sizeof line, "%s: %s: ", s_ident, names[level]);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2) {
		n = (int)sizeof line - 2;
	}
	line[n++] = '\n';
	/* One write so concurrent lines stay whole; a failed log write has
	 * nowhere to be reported. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		return;
	}
}

static int64_t
s_clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
bm_mono_ns(void)
{
	return s_clock_ns(CLOCK_MONOTONIC);
}

int64_t
bm_mono_ms(void)
{
	return s_clock_ns(CLOCK_MONOTONIC) / 1000000;
}

int64_t
bm_mono_coarse_ms(void)
{
	return s_clock_ns(CLOCK_MONOTONIC_COARSE) / 1000000;
}

int64_t
bm_wall_ms(void)
{
	return s_clock_ns(CLOCK_REALTIME) / 1000000;
}

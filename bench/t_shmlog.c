/*
 * t_shmlog.c - beastmesh's shared-memory broadcast log (shm/bcastlog.c):
 * one publisher appends to one log in shared memory, every subscriber
 * reads it with its own cursor (one copy however many subscribers).
 *
 *   beast-shmlog             tethered readers: a slow reader holds the
 *                            publisher (it waits for room), nothing is lost.
 *   beast-shmlog-untethered  untethered readers: the publisher never waits;
 *                            a reader lapped by it jumps ahead and counts
 *                            what it lost.  Only the overload row: its note
 *                            says what the readers reported lost beside the
 *                            core's count (sent - received).
 *
 * Fan-out through the generic driver: the subscribers start first, so a
 * reader attaches lazily in recv(), retrying until the publisher's socket
 * appears; the publisher services attaching readers while it sends the
 * probes.  The log is 8 MiB (2,000 records of 4 KiB).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bb.h"
#include "bb_core.h"
#include "bm_shm.h"

#define S_LOG_NAME "bench"
#define S_CAPACITY ((size_t)8 << 20)

typedef struct {
	bm_bcastlog_t *log;
	bm_bcastlog_reader_t *rd;
	unsigned flags;
	const char *dir;
	_Atomic uint64_t *lost_out; /* shared page: readers add what they lost */
	uint64_t lost;
	char *buf;                  /* receive scratch */
	size_t cap;
} s_sl_t;

/* One shared page per run: subscribers add the loss they counted. */
static _Atomic uint64_t *s_lost_page;

static int
s_open(bb_link_t *l, const bb_env_t *env, unsigned flags)
{
	s_sl_t *s = calloc(1, sizeof *s);
	if (!s)
		return -1;
	s->flags = flags;
	s->dir = env->dir;
	s->lost_out = s_lost_page;
	l->impl = s;
	return 0;
}

static int
s_sub_tethered(bb_link_t *l, const bb_env_t *env)
{
	return s_open(l, env, BM_BCASTLOG_TETHERED);
}

static int
s_sub_untethered(bb_link_t *l, const bb_env_t *env)
{
	return s_open(l, env, 0);
}

static int
s_pub(bb_link_t *l, const bb_env_t *env)
{
	bm_bcastlog_opts_t o = {.capacity = S_CAPACITY, .readers = 64};
	if (s_open(l, env, 0) != 0)
		return -1;
	s_sl_t *s = l->impl;
	return bm_bcastlog_open(env->dir, S_LOG_NAME, &o, &s->log) == 0 ? 0 : -1;
}

static int
s_send(bb_link_t *l, const void *buf, size_t len)
{
	s_sl_t *s = l->impl;
	/* Readers attach while the probes go out. */
	if (((const char *)buf)[0] == BB_TAG_PROBE)
		(void)bm_bcastlog_service(s->log);
	/* Tethered: wait for room (the back-pressure); untethered never waits. */
	return bm_bcastlog_publish(s->log, "bench/", 0, buf, len, (int)(BB_DEADLINE_S * 1000)) == 0
	               ? 0
	               : -1;
}

static long
s_recv(bb_link_t *l, void *buf, size_t cap, int timeout_ms)
{
	s_sl_t *s = l->impl;
	bm_bcastlog_rec_t rec;
	double end = bb_now() + timeout_ms / 1000.0;
	while (!s->rd) {
		int rc = bm_bcastlog_attach(s->dir, S_LOG_NAME, s->flags, timeout_ms, &s->rd);
		if (rc == 0)
			break;
		if (bb_now() >= end || (rc != -ENOENT && rc != -ECONNREFUSED))
			return -1;
		usleep(1000);
	}
	int left = (int)((end - bb_now()) * 1000);
	int rc = bm_bcastlog_read(s->rd, buf, cap, left > 0 ? left : 0, &rec);
	if (rc != 0)
		return -1;
	s->lost += rec.gap;
	return (long)rec.len;
}

static void
s_close(bb_link_t *l)
{
	s_sl_t *s = l->impl;
	if (!s)
		return;
	if (s->rd && s->lost_out)
		atomic_fetch_add(s->lost_out, s->lost);
	bm_bcastlog_reader_destroy(&s->rd);
	bm_bcastlog_destroy(&s->log);
	free(s);
	l->impl = NULL;
}

static int
s_up(bb_env_t *env, char *why, size_t whylen)
{
	(void)env;
	if (!s_lost_page) {
		void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			snprintf(why, whylen, "mmap: %s", strerror(errno));
			return -1;
		}
		s_lost_page = p;
	}
	return 0;
}

static const bb_ops_t s_tethered_ops = {
	.sub = s_sub_tethered, .pub = s_pub, .send = s_send, .recv = s_recv, .close = s_close};
static const bb_ops_t s_untethered_ops = {
	.sub = s_sub_untethered, .pub = s_pub, .send = s_send, .recv = s_recv, .close = s_close};

/* The untethered overload row: the generic driver measures it, then the
 * note sets the loss the readers counted beside sent - received. */
extern const bb_transport_t bb_t_beast_shmlog_untethered;

static int
s_untethered_run(bb_row_t *r, bb_env_t *env)
{
	static bb_transport_t plain;
	plain = bb_t_beast_shmlog_untethered;
	plain.run = NULL;
	atomic_store(s_lost_page, 0);
	bb_core_measure(&plain, r, env);
	if (strcmp(r->status, "ok") == 0)
		snprintf(r->note, sizeof r->note, "readers counted %llu lost; sent - received = %ld",
		         (unsigned long long)atomic_load(s_lost_page), r->lost);
	return 1;
}

const bb_transport_t bb_t_beast_shmlog = {
	.id = "beast-shmlog",
	.about = "beastmesh shared-memory broadcast log, tethered readers (back-pressure, no loss)",
	.scens = BB_S(BB_FANOUT1) | BB_S(BB_FANOUT8) | BB_S(BB_FANOUT32) | BB_S(BB_OVERLOAD),
	.up = s_up,
	.ops = &s_tethered_ops,
};

const bb_transport_t bb_t_beast_shmlog_untethered = {
	.id = "beast-shmlog-untethered",
	.about = "beastmesh shared-memory broadcast log, untethered readers (lapped readers count loss)",
	.scens = BB_S(BB_OVERLOAD),
	.up = s_up,
	.ops = &s_untethered_ops,
	.run = s_untethered_run,
};


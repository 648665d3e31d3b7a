/*
 * t_shm.c - beastmesh's bulk channel: an SPSC shared-memory ring handed
 * over a Unix socket, with doorbells (shm/bm_shm.h).
 *
 *   beast-ring       zero copy: the producer reserves in the ring, writes in
 *                    place and commits; the consumer reads in place and
 *                    releases.
 *   beast-ring-copy  bm_channel_send / bm_channel_recv: one copy in, one out.
 *
 * The ring is one-way, so latency is measured one way: the producer stamps
 * CLOCK_MONOTONIC into the record, the consumer reads the clock when it has
 * the record (one clock across processes); one record in flight, the next
 * sent when the consumer has counted the last one (a counter in a shared
 * page) after a 50 µs pause, so in blocking mode the consumer has gone to
 * sleep and the wake-up is in the number.  Wait modes: `blocking` (no spin:
 * straight to poll() on the doorbell) and `spinning` (spin for ever).
 * Latency rows time the hand-off (stamp, reserve, commit -> peek); bulk rows
 * time end to end (the producer writes every byte, the consumer reads every
 * byte) and give the bare hand-off in the note.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bb.h"
#include "bm_shm.h"


typedef struct {
	_Atomic uint64_t acked; /* records the consumer has finished */
	_Atomic int ready;      /* the consumer listens */
	_Atomic int stop;       /* a side gave up */
} s_shared_t;

typedef struct {
	const bb_row_t *row;
	const bb_env_t *env;
	s_shared_t *sh;
	int copy;       /* beast-ring-copy */
	int spin;       /* spinning wait mode */
	int iters;      /* records timed */
	int handoff;    /* bulk: records timed as bare hand-off first */
	int paced;      /* one in flight (latency, bulk) or a stream (throughput) */
	char name[32];
} s_arg_t;

static volatile uint64_t s_sink;

static void
s_fill(void *p, size_t n, uint64_t v)
{
	uint64_t *w = p;
	for (size_t i = 0; i < n / 8; i++)
		w[i] = v + i;
}

static uint64_t
s_sum(const void *p, size_t n)
{
	const uint64_t *w = p;
	uint64_t s = 0;
	for (size_t i = 0; i < n / 8; i++)
		s += w[i];
	return s;
}

static size_t
s_ring_for(size_t size)
{
	size_t cap = 4u << 20;
	while (cap < 2 * size + (1u << 20))
		cap *= 2;
	return cap;
}

static int
s_wait_acked(s_shared_t *sh, uint64_t n, double end)
{
	while (atomic_load_explicit(&sh->acked, memory_order_acquire) < n) {
		if (atomic_load(&sh->stop) || bb_now() > end) {
			atomic_store(&sh->stop, 1);
			return -1;
		}
#if defined(__x86_64__)
		__builtin_ia32_pause();
#endif
	}
	return 0;
}

static int
s_consumer_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	size_t size = a->row->payload;
	bm_channel_opts_t o = {.spin_us = a->spin ? 10000000 : 0};
	bm_listener_t *l = NULL;
	bm_channel_t *ch = NULL;
	int total = a->handoff + a->iters;
	double *lat = calloc((size_t)total + 1, sizeof *lat);
	char *buf = a->copy ? malloc(size) : NULL;
	int n = 0;
	if (!lat || (a->copy && !buf) || bm_listener_open(a->env->dir, a->name, &l) != 0) {
		bb_fail(&res, "the consumer cannot listen");
		atomic_store(&a->sh->stop, 1);
		goto out;
	}
	atomic_store(&a->sh->ready, 1);
	if (bm_listener_accept(l, (int)(BB_DEADLINE_S * 1000), &o, &ch) != 0) {
		bb_fail(&res, "no producer connected");
		goto out;
	}
	double t_first = 0, t_last = 0;
	for (int i = 0; i < total; i++) {
		bm_ring_rec_t rec;
		const void *data;
		size_t len;
		if (a->copy) {
			if (bm_channel_recv(ch, buf, size, (int)(BB_DEADLINE_S * 1000), &rec) != 0)
				break;
			data = buf;
			len = rec.len;
		} else {
			if (bm_channel_peek(ch, (int)(BB_DEADLINE_S * 1000), &rec) != 0)
				break;
			data = rec.data;
			len = rec.len;
		}
		double stamp, now = bb_now();
		if (i < a->handoff) { /* bulk, end to end: every byte read, timed */
			s_sink += s_sum(data, len);
			now = bb_now();
		}
		memcpy(&stamp, data, sizeof stamp);
		if (a->row->scen == BB_BULK && i >= a->handoff)
			s_sink += s_sum(data, len); /* bulk, transfer: read after the clock */
		if (a->paced)
			lat[n++] = (now - stamp) * 1e6;
		if (i == 0)
			t_first = now;
		t_last = now;
		if (!a->copy)
			bm_channel_release(ch);
		atomic_store_explicit(&a->sh->acked, (uint64_t)i + 1, memory_order_release);
	}
	uint64_t got = atomic_load(&a->sh->acked);
	if (got < (uint64_t)total) {
		bb_fail(&res, "consumer got %llu of %d records", (unsigned long long)got, total);
	} else if (a->paced) {
		if (a->handoff > 0) {
			bb_row_t h;
			memset(&h, 0, sizeof h);
			bb_latency_stats(&h, lat, a->handoff);
			snprintf(res.note, sizeof res.note, "%s; end to end (every byte written and read) p50 %.0f us",
			         a->copy ? "copied in and out" : "zero copy", h.p50_us);
		}
		bb_latency_stats(&res, lat + a->handoff, a->iters);
		res.msgs_per_s = res.p50_us > 0 ? 1e6 / res.p50_us : 0;
	} else {
		res.msgs_per_s = t_last > t_first ? (double)(total - 1) / (t_last - t_first) : 0;
	}
	res.sent = total;
	if (a->paced && a->handoff == 0)
		snprintf(res.note, sizeof res.note, "one way, hand-off (%s), %s", a->copy ? "copy in and out" : "in place",
		         a->spin ? "spinning" : "blocking");
	else if (!a->paced) /* MB/s of a zero-copy stream counts bytes nobody touched */
		snprintf(res.note, sizeof res.note, "%s, %s",
		         a->copy ? "copied in and out" : "hand-off rate (zero copy, payload untouched)",
		         a->spin ? "spinning" : "blocking");
out:
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
	free(lat);
	free(buf);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_producer_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	size_t size = a->row->payload;
	bm_channel_opts_t o = {.capacity = s_ring_for(size), .flags = BM_RING_PREFAULT,
	                       .spin_us = a->spin ? 10000000 : 0};
	bm_channel_t *ch = NULL;
	char *buf = a->copy ? malloc(size) : NULL;
	double end = bb_now() + BB_DEADLINE_S;
	while (!atomic_load(&a->sh->ready) && !atomic_load(&a->sh->stop) && bb_now() < end)
		usleep(200);
	char self[32];
	snprintf(self, sizeof self, "p%d", (int)getpid());
	if ((a->copy && !buf) || bm_channel_connect(a->env->dir, a->name, self, &o, 5000, &ch) != 0) {
		bb_fail(&res, "the producer cannot connect");
		atomic_store(&a->sh->stop, 1);
		goto out;
	}
	if (buf)
		memset(buf, 1, size);
	int total = a->handoff + a->iters;
	end = bb_now() + 2 * BB_DEADLINE_S;
	for (int i = 0; i < total && bb_now() < end; i++) {
		int e2e = i < a->handoff; /* bulk: the first ones are timed end to end */
		if (a->paced && !a->spin) { /* let the consumer fall asleep */
			double until = bb_now() + 50e-6;
			while (bb_now() < until)
				;
		}
		int bulk = a->row->scen == BB_BULK;
		double t0 = bb_now();
		if (a->copy) {
			if (bulk) /* the data: end to end inside the timed span, else before it */
				s_fill(buf, size, (uint64_t)i);
			if (bulk && !e2e)
				t0 = bb_now();
			memcpy(buf, &t0, sizeof t0);
			if (bm_channel_send(ch, 1, buf, size, (int)(BB_DEADLINE_S * 1000)) != 0) {
				bb_fail(&res, "send %d failed", i);
				break;
			}
		} else {
			void *p;
			if (bm_channel_reserve(ch, size, (int)(BB_DEADLINE_S * 1000), &p) != 0) {
				bb_fail(&res, "reserve %d failed", i);
				break;
			}
			if (bulk) /* written in place: the data is produced where it is sent from */
				s_fill(p, size, (uint64_t)i);
			if (bulk && !e2e)
				t0 = bb_now(); /* transfer: from the data being ready */
			memcpy(p, &t0, sizeof t0);
			if (bm_channel_commit(ch, 1, size) != 0) {
				bb_fail(&res, "commit %d failed", i);
				break;
			}
		}
		if (a->paced && s_wait_acked(a->sh, (uint64_t)i + 1, end) != 0) {
			bb_fail(&res, "record %d not consumed in time", i);
			break;
		}
	}
	/* a stream's tail: the consumer must have it all before we go */
	if (!res.status[0] && s_wait_acked(a->sh, (uint64_t)total, end) != 0)
		bb_fail(&res, "the consumer did not finish");
out:
	bm_channel_destroy(&ch);
	free(buf);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_run(bb_row_t *r, bb_env_t *env, int copy)
{
	static s_arg_t a;
	memset(&a, 0, sizeof a);
	a.row = r;
	a.env = env;
	a.copy = copy;
	a.spin = !strcmp(r->mode, "spinning");
	snprintf(a.name, sizeof a.name, "bb%d", (int)getpid());
	if (a.spin && !strcmp(r->placement, "same-cpu")) {
		snprintf(r->status, sizeof r->status, "skipped: two spinners on one CPU only trade time slices");
		return 1;
	}
	if (r->scen == BB_LATENCY) {
		a.paced = 1;
		a.iters = (int)bb_counts(env, r->scen, r->payload).n;
		a.handoff = 0;
	} else if (r->scen == BB_BULK) {
		a.paced = 1;
		a.handoff = a.iters = (int)bb_counts(env, r->scen, r->payload).n; /* handoff: e2e ones */
	} else if (r->scen == BB_THROUGHPUT) {
		a.iters = (int)bb_counts(env, r->scen, r->payload).n;
	} else {
		return 0;
	}
	/* the one page both sides count in: anonymous, shared across fork */
	a.sh = mmap(NULL, sizeof *a.sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (a.sh == MAP_FAILED) {
		bb_fail(r, "mmap");
		return 1;
	}
	memset(a.sh, 0, sizeof *a.sh);
	int cfd = -1, pfd = -1;
	pid_t c = bb_side_spawn(env->cpu_rx, s_consumer_main, &a, &cfd);
	pid_t p = c > 0 ? bb_side_spawn(env->cpu_tx, s_producer_main, &a, &pfd) : -1;
	if (p < 0) {
		bb_fail(r, "fork");
		atomic_store(&a.sh->stop, 1);
	} else if (bb_side_collect(p, pfd, 4 * BB_DEADLINE_S, r, BB_SIDE_TX) != 0) {
		atomic_store(&a.sh->stop, 1);
	}
	if (c > 0 && bb_side_collect(c, cfd, 4 * BB_DEADLINE_S, r, BB_SIDE_RX) == 0 && !r->status[0]) {
		if (r->scen == BB_THROUGHPUT)
			r->lost = 0;
		r->mb_per_s = r->msgs_per_s * (double)r->payload / 1e6;
		snprintf(r->status, sizeof r->status, "ok");
	}
	munmap(a.sh, sizeof *a.sh);
	return 1;
}

static int
s_run_zero(bb_row_t *r, bb_env_t *env)
{
	return s_run(r, env, 0);
}

static int
s_run_copy(bb_row_t *r, bb_env_t *env)
{
	return s_run(r, env, 1);
}

/* ---- memcpy: the floor under every copying transport ----
 *
 * One process copies a warm buffer of the payload's size into another
 * (every page touched before the clock starts), once per "message": what
 * a bulk row of a transport that copies can at best approach, and what
 * beast-ring's zero-copy row does not pay. */

typedef struct {
	const bb_row_t *row;
	const bb_env_t *env;
} s_mc_t;

static int
s_memcpy_main(void *arg, int wfd)
{
	s_mc_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	size_t len = a->row->payload;
	long n = bb_counts(a->env, BB_BULK, len).n;
	char *src = malloc(len), *dst = malloc(len);
	double *lat = calloc((size_t)n, sizeof *lat), total = 0;
	if (!src || !dst || !lat) {
		bb_fail(&res, "out of memory");
	} else {
		memset(src, 'x', len);
		memset(dst, 0, len);
		memcpy(dst, src, len);
		for (long i = 0; i < n; i++) {
			double t = bb_now();
			memcpy(dst, src, len);
			__asm__ volatile("" : : "r"(dst) : "memory"); /* the copy is not dead */
			lat[i] = (bb_now() - t) * 1e6;
			total += lat[i];
			src[(size_t)i % len]++;
		}
		bb_latency_stats(&res, lat, (int)n);
		res.sent = n;
		res.msgs_per_s = total > 0 ? n / (total / 1e6) : 0;
		res.mb_per_s = res.msgs_per_s * (double)len / 1e6;
		snprintf(res.note, sizeof res.note, "one warm copy per message, one process: the floor under copying rows");
	}
	free(src);
	free(dst);
	free(lat);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_run_memcpy(bb_row_t *r, bb_env_t *env)
{
	static s_mc_t a;
	a.row = r;
	a.env = env;
	int fd = -1;
	pid_t pid = bb_side_spawn(env->cpu_tx, s_memcpy_main, &a, &fd);
	if (pid < 0)
		bb_fail(r, "fork");
	else if (bb_side_collect(pid, fd, 4 * BB_DEADLINE_S, r, BB_SIDE_TX) == 0 && !r->status[0])
		snprintf(r->status, sizeof r->status, "ok");
	return 1;
}

const bb_transport_t bb_t_memcpy = {
	.id = "memcpy",
	.about = "memcpy of a warm buffer in one process: the floor under every copying transport",
	.scens = BB_S(BB_BULK),
	.run = s_run_memcpy,
};

static const char *const s_modes[] = {"blocking", "spinning", NULL};

const bb_transport_t bb_t_beast_ring = {
	.id = "beast-ring",
	.about = "beastmesh shm ring, zero copy (reserve/fill/commit, read in place)",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_BULK),
	.modes = s_modes,
	.run = s_run_zero,
};

const bb_transport_t bb_t_beast_ring_copy = {
	.id = "beast-ring-copy",
	.about = "beastmesh shm ring, copying (bm_channel_send / bm_channel_recv)",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_BULK),
	.modes = s_modes,
	.run = s_run_copy,
};

/*
 * t_iceoryx.c - iceoryx: zero-copy shared memory through its daemon,
 * iox-roudi, with the C binding (Debian iceoryx, libiceoryx-binding-c-dev).
 *
 * Measured exactly as the beastmesh ring (t_shm.c): one way, a
 * CLOCK_MONOTONIC stamp in the chunk, one chunk in flight, the next sent
 * when the consumer has counted the last one after a 50 µs pause.  Wait
 * modes: `blocking` (a waitset: the consumer sleeps until the chunk is
 * there) and `spinning` (take() in a loop).  Latency rows time the hand-off
 * (loan, stamp, publish -> take); bulk rows the transfer (the producer
 * fills the loaned chunk, then stamps and publishes; the consumer reads
 * every byte after the clock), like the ring's.  Throughput rows stream
 * (loan, stamp, publish -> take, release) as fast as the subscriber's queue
 * (256 chunks, the producer blocked when it is full) lets them, like the
 * ring's: the hand-off rate, the payload neither written nor read.
 *
 * up() starts iox-roudi with a config sized for the group's scenario (the
 * payloads of its rows, chunks enough for what can be in flight: RouDi
 * makes the whole segment up front, and every side maps it), and only
 * when no other RouDi runs (its management segment is machine-wide);
 * down() stops it and removes what RouDi and the runtimes leave behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bb.h"

#ifdef BB_HAVE_ICEORYX
#include "iceoryx_binding_c/enums.h"
#include "iceoryx_binding_c/publisher.h"
#include "iceoryx_binding_c/runtime.h"
#include "iceoryx_binding_c/subscriber.h"
#include "iceoryx_binding_c/types.h"
#include "iceoryx_binding_c/wait_set.h"
#endif

#ifdef BB_HAVE_ICEORYX
static char s_roudi[512];	/* the server's program, once found */
#endif

static const char *
s_missing(void)
{
#ifndef BB_HAVE_ICEORYX
	return "not installed: the iceoryx C binding (Debian libiceoryx-binding-c-dev), at build time";
#else
	if (!s_roudi[0] && bb_find_program("iox-roudi", s_roudi, sizeof s_roudi) != 0)
		return "not installed: iox-roudi (Debian iceoryx)";
	return NULL;
#endif
}

#ifdef BB_HAVE_ICEORYX


typedef struct {
	_Atomic uint64_t acked;
	_Atomic int ready, stop;
} s_shared_t;

typedef struct {
	const bb_row_t *row;
	const bb_env_t *env;
	s_shared_t *sh;
	int spin, iters;
	int stream; /* throughput: no pacing, the consumer counts */
} s_arg_t;

static void
s_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static volatile uint64_t s_sink;

/* iceoryx's runtime logs to stderr at debug level: the table stays clean. */
static void
s_quiet(void)
{
	int null = open("/dev/null", O_WRONLY);
	if (null >= 0) {
		dup2(null, 2);
		close(null);
	}
}

static void
s_event(const bb_row_t *r, char *ev, size_t n)
{
	snprintf(ev, n, "e%d%zu%c", (int)r->scen, r->payload, r->mode[0] == 's' ? 's' : 'b');
}

static int
s_wait_acked(s_shared_t *sh, uint64_t n, double end)
{
	while (atomic_load_explicit(&sh->acked, memory_order_acquire) < n) {
		if (atomic_load(&sh->stop) || bb_now() > end) {
			atomic_store(&sh->stop, 1);
			return -1;
		}
		s_relax();
	}
	return 0;
}

static int
s_consumer_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	char ev[64], app[64];
	s_event(a->row, ev, sizeof ev);
	snprintf(app, sizeof app, "bbsub%d", (int)getpid());
	s_quiet();
	iox_runtime_init(app);
	iox_sub_options_t opts;
	iox_sub_options_init(&opts);
	opts.queueCapacity = a->stream ? 256 : 4; /* 256: the most iceoryx allows */
	opts.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
	iox_sub_storage_t storage;
	iox_sub_t sub = iox_sub_init(&storage, "bench", "bb", ev, &opts);
	iox_ws_storage_t ws_storage;
	iox_ws_t ws = NULL;
	if (!a->spin) {
		ws = iox_ws_init(&ws_storage);
		iox_ws_attach_subscriber_state(ws, sub, SubscriberState_HAS_DATA, 1, NULL);
	}
	double *lat = calloc((size_t)a->iters, sizeof *lat);
	atomic_store(&a->sh->ready, 1);
	int n = 0;
	double t_first = 0, t_last = 0;
	double end = bb_now() + 2 * BB_DEADLINE_S;
	while (lat && n < a->iters && !atomic_load(&a->sh->stop) && bb_now() < end) {
		const void *p = NULL;
		if (iox_sub_take_chunk(sub, &p) != ChunkReceiveResult_SUCCESS) {
			if (!a->spin) {
				iox_notification_info_t info[1];
				uint64_t missed = 0;
				struct timespec tmo = {0, 100000000};
				iox_ws_timed_wait(ws, tmo, info, 1, &missed);
			} else {
				s_relax();
			}
			continue;
		}
		double now = bb_now(), stamp;
		memcpy(&stamp, p, sizeof stamp);
		if (n == 0)
			t_first = stamp; /* the first chunk's send time */
		t_last = now;
		lat[n++] = (now - stamp) * 1e6;
		if (a->row->scen == BB_BULK) {
			const uint64_t *w = p;
			for (size_t i = 0; i < a->row->payload / 8; i++)
				s_sink += w[i]; /* read after the clock, as the ring's consumer does */
		}
		iox_sub_release_chunk(sub, p);
		atomic_store_explicit(&a->sh->acked, (uint64_t)n, memory_order_release);
	}
	if (n < a->iters) {
		bb_fail(&res, "consumer got %d of %d chunks", n, a->iters);
		atomic_store(&a->sh->stop, 1);
	} else if (a->stream) {
		res.msgs_per_s = t_last > t_first ? (double)n / (t_last - t_first) : 0;
		res.sent = n;
		snprintf(res.note, sizeof res.note, "hand-off rate (zero copy, payload untouched), %s",
		         a->spin ? "spinning" : "blocking (waitset)");
	} else {
		bb_latency_stats(&res, lat, n);
		res.msgs_per_s = res.p50_us > 0 ? 1e6 / res.p50_us : 0;
		snprintf(res.note, sizeof res.note, "one way, %s (zero copy), %s",
		         a->row->scen == BB_BULK ? "transfer" : "hand-off", a->spin ? "spinning" : "blocking (waitset)");
	}
	if (ws) {
		iox_ws_detach_subscriber_state(ws, sub, SubscriberState_HAS_DATA);
		iox_ws_deinit(ws);
	}
	iox_sub_deinit(sub);
	free(lat);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_producer_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	char ev[64], app[64];
	s_event(a->row, ev, sizeof ev);
	snprintf(app, sizeof app, "bbpub%d", (int)getpid());
	double end = bb_now() + BB_DEADLINE_S;
	while (!atomic_load(&a->sh->ready) && !atomic_load(&a->sh->stop) && bb_now() < end)
		usleep(200);
	s_quiet();
	iox_runtime_init(app);
	iox_pub_options_t opts;
	iox_pub_options_init(&opts);
	opts.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
	iox_pub_storage_t storage;
	iox_pub_t pub = iox_pub_init(&storage, "bench", "bb", ev, &opts);
	while (!iox_pub_has_subscribers(pub) && bb_now() < end)
		usleep(1000);
	size_t size = a->row->payload;
	end = bb_now() + 2 * BB_DEADLINE_S;
	for (int i = 0; i < a->iters && !res.status[0] && bb_now() < end; i++) {
		if (!a->spin && !a->stream) {
			double until = bb_now() + 50e-6;
			while (bb_now() < until)
				;
		}
		double t0 = bb_now();
		void *p = NULL;
		enum iox_AllocationResult ar;
		/* a stream may have every chunk in the subscriber's queue: wait for one */
		while ((ar = iox_pub_loan_chunk(pub, &p, (uint32_t)size)) != AllocationResult_SUCCESS && a->stream &&
		       (ar == AllocationResult_RUNNING_OUT_OF_CHUNKS ||
		        ar == AllocationResult_TOO_MANY_CHUNKS_ALLOCATED_IN_PARALLEL) &&
		       !atomic_load(&a->sh->stop) && bb_now() < end)
			s_relax();
		if (ar != AllocationResult_SUCCESS) {
			bb_fail(&res, "iceoryx could not loan %zu bytes", size);
			break;
		}
		if (a->row->scen == BB_BULK) {
			memset(p, (int)i, size); /* the data, produced in place */
			t0 = bb_now();
		}
		memcpy(p, &t0, sizeof t0);
		iox_pub_publish_chunk(pub, p);
		if (!a->stream && s_wait_acked(a->sh, (uint64_t)i + 1, end) != 0)
			bb_fail(&res, "chunk %d not consumed in time", i);
	}
	/* a stream's tail: the consumer must have it all before we go */
	if (a->stream && !res.status[0] && s_wait_acked(a->sh, (uint64_t)a->iters, end) != 0)
		bb_fail(&res, "the consumer did not finish");
	iox_pub_deinit(pub);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_run(bb_row_t *r, bb_env_t *env)
{
	static s_arg_t a;
	memset(&a, 0, sizeof a);
	a.row = r;
	a.env = env;
	a.spin = !strcmp(r->mode, "spinning");
	if (a.spin && !strcmp(r->placement, "same-cpu")) {
		snprintf(r->status, sizeof r->status, "skipped: two spinners on one CPU only trade time slices");
		return 1;
	}
	if (r->scen == BB_LATENCY || r->scen == BB_BULK || r->scen == BB_THROUGHPUT)
		a.iters = (int)bb_counts(env, r->scen, r->payload).n;
	if (r->scen == BB_THROUGHPUT)
		a.stream = 1;
	else if (r->scen != BB_LATENCY && r->scen != BB_BULK)
		return 0;
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
		if (a.stream)
			r->lost = 0; /* the producer blocks on a full queue: nothing is dropped */
		r->mb_per_s = r->msgs_per_s * (double)r->payload / 1e6;
		snprintf(r->status, sizeof r->status, "ok");
	}
	munmap(a.sh, sizeof *a.sh);
	/* each runtime leaves its socket and lock file in /tmp */
	pid_t sides[2] = {c, p};
	for (int i = 0; i < 2; i++) {
		char f[64];
		snprintf(f, sizeof f, "/tmp/bb%s%d", i ? "pub" : "sub", (int)sides[i]);
		unlink(f);
		strcat(f, ".lock");
		unlink(f);
	}
	return 1;
}

/* ---- RouDi ---- */

/* Chunk sizes a little over each payload (RouDi adds its chunk header on
 * top); counts for what can be held at once: one in flight for latency
 * and bulk, a full subscriber queue (256) plus the producer's loans for a
 * stream of small chunks.  Each group gets only what its rows use, so a
 * 64 B row does not map (and account) a segment sized for 100 MiB blobs. */
typedef struct {
	size_t size;
	int count;
} s_pool_t;

static const s_pool_t *
s_pools(const bb_env_t *env)
{
	static const s_pool_t lat[] = {{1024, 32}, {8192, 32}, {65536, 16}, {1049600, 8}, {0, 0}};
	static const s_pool_t tp_quick[] = {{1024, 320}, {8192, 320}, {66560, 320}, {0, 0}};
	static const s_pool_t tp_full[] = {{1024, 320},     {8192, 320},    {66560, 320},     {263168, 64},
	                                   {1049600, 16},   {16778240, 6},  {104858624, 4},   {0, 0}};
	static const s_pool_t bulk[] = {{1049600, 4}, {16778240, 4}, {104858624, 3}, {0, 0}};
	switch (env->scen) {
	case BB_THROUGHPUT: return env->quick ? tp_quick : tp_full;
	case BB_BULK: return bulk;
	default: return lat;
	}
}

static void
s_cleanup(void)
{
	/* RouDi leaves its segments and sockets behind when stopped; they were
	 * ours (none existed when we started it). */
	shm_unlink("/iceoryx_mgmt");
	struct passwd *pw = getpwuid(getuid());
	if (pw) {
		char seg[128];
		snprintf(seg, sizeof seg, "/%s", pw->pw_name);
		shm_unlink(seg);
	}
	unlink("/tmp/roudi");
	unlink("/tmp/roudi.lock");
	unlink("/tmp/iox-unique-roudi.lock");
}

static int
s_up(bb_env_t *env, char *why, size_t whylen)
{
	struct stat st;
	if (stat("/dev/shm/iceoryx_mgmt", &st) == 0) {
		snprintf(why, whylen, "an iox-roudi runs already (or a stale /dev/shm/iceoryx_mgmt): not ours to use");
		return -1;
	}
	char cfg[300];
	snprintf(cfg, sizeof cfg, "%s/roudi.toml", env->dir);
	FILE *f = fopen(cfg, "w");
	if (!f) {
		snprintf(why, whylen, "cannot write %s", cfg);
		return -1;
	}
	fputs("[general]\nversion = 1\n\n[[segment]]\n", f);
	for (const s_pool_t *mp = s_pools(env); mp->size; mp++)
		fprintf(f, "\n[[segment.mempool]]\nsize = %zu\ncount = %d\n", mp->size, mp->count);
	fclose(f);
	char *argv[] = {s_roudi, "-c", cfg, "-m", "off", "-l", "error", NULL};
	/* the segment appears before RouDi listens: 300 ms more */
	bb_ready_t ready = {.file = "/dev/shm/iceoryx_mgmt", .settle_s = 0.3, .timeout_s = 10.0};
	if (bb_server_up(env, argv, "roudi.log", &ready, why, whylen) != 0) {
		s_cleanup();
		return -1;
	}
	return 0;
}

static void
s_down(bb_env_t *env)
{
	for (int i = 0; i < env->nsrv; i++)
		bb_server_stop(env->srv_pid[i]);
	env->nsrv = 0;
	s_cleanup();
}

static const char *
s_refuse(int scen, size_t payload)
{
	(void)scen;
	return payload > (100u << 20) ? "over the largest chunk of the RouDi config here (100 MiB)" : NULL;
}

static const char *const s_modes[] = {"blocking", "spinning", NULL};
#define S_UP s_up
#define S_DOWN s_down
#define S_RUN s_run
#define S_REFUSE s_refuse
#define S_MODES s_modes
#else
#define S_UP NULL
#define S_DOWN NULL
#define S_RUN NULL
#define S_REFUSE NULL
#define S_MODES NULL
#endif

const bb_transport_t bb_t_iceoryx = {
	.id = "iceoryx",
	.about = "iceoryx zero-copy shared memory through iox-roudi (C binding)",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_BULK),
	.modes = S_MODES,
	.missing = s_missing,
	.up = S_UP,
	.down = S_DOWN,
	.refuse = S_REFUSE,
	.run = S_RUN,
};

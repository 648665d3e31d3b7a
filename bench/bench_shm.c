/*
 * bench_shm.c - the bulk channel beside its peers, same run, same machine.
 *
 * One-way latency: the producer stamps CLOCK_MONOTONIC into the payload,
 * the consumer reads the clock on receipt (both processes share the clock).
 * One message in flight at a time: the producer waits until the consumer
 * has counted the previous one (a counter in a shared page), and in
 * blocking mode lets the consumer fall asleep before the next send, so the
 * wake-up is part of what is measured.
 *
 *   bm hand-off   reserve, stamp, commit → peek: the zero-copy hand-off
 *   bm e2e        stamp, reserve, write every byte, commit → peek, read
 *                 every byte, release
 *   zmq ipc       PUSH/PULL over ipc://, stamp, fill, send → recv, read
 *   unix stream   socketpair, stamp, fill, write → read all
 *   iceoryx       loan, stamp (and fill), publish → take (and read);
 *                 waitset (blocking) or take loop (spinning)
 *   memcpy        bandwidth of one warm 100 MiB copy: the physical limit
 *   copy mode     bm_channel_send / bm_channel_recv of 1 MiB records
 *
 * Wait modes: blocking (our spin 0: straight to poll(); iceoryx waitset;
 * zmq and sockets always block) and spinning (our spin for ever; iceoryx
 * polling take()).  iceoryx needs iox-roudi: we start it with a config
 * sized for these payloads and stop it afterwards.
 *
 * Usage: bench-shm [--quick] [--no-iceoryx]
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bm_shm.h"

#ifdef BM_HAVE_ICEORYX
#include "iceoryx_binding_c/enums.h"
#include "iceoryx_binding_c/publisher.h"
#include "iceoryx_binding_c/runtime.h"
#include "iceoryx_binding_c/subscriber.h"
#include "iceoryx_binding_c/types.h"
#include "iceoryx_binding_c/wait_set.h"
#endif

#define S_MAX_SAMPLES 50000
#define S_MIB ((size_t)1 << 20)

enum { S_BM, S_ZMQ, S_UNIX, S_ICE };

typedef struct {
	_Atomic uint64_t acked;     /* messages the consumer has finished */
	_Atomic int ready;          /* consumer is set up */
	_Atomic int pub_ready;      /* producer is set up (iceoryx) */
	_Atomic int stop;           /* give up */
	double gbps;                /* copy-mode result from the consumer */
	int64_t lat[S_MAX_SAMPLES]; /* ns per message */
} s_shared_t;

typedef struct {
	int kind;      /* S_BM ... */
	size_t size;   /* payload bytes */
	int iters;     /* messages */
	bool spin;     /* spinning wait mode */
	bool e2e;      /* write and read the payload */
	char dir[64];  /* scratch dir for sockets */
	int sp[2];     /* socketpair for S_UNIX */
} s_run_t;

static s_shared_t *s_sh;
static bool s_quick;

static inline void
s_relax(void)
{
#if defined(__x86_64__)
	__builtin_ia32_pause();
#endif
}

static void
s_fill(void *p, size_t n, uint64_t v)
{
	uint64_t *w = p;

	for (size_t i = 0; i < n / 8; i++) {
		w[i] = v + i;
	}
}

static uint64_t
s_read(const void *p, size_t n)
{
	const uint64_t *w = p;
	uint64_t s = 0;

	for (size_t i = 0; i < n / 8; i++) {
		s += w[i];
	}
	return s;
}

static volatile uint64_t s_sink;

/* Producer side pacing: wait until message i was consumed. */
static bool
s_wait_acked(uint64_t i)
{
	int64_t end = bm_mono_ns() + 30 * (int64_t)1000000000;

	while (atomic_load_explicit(&s_sh->acked, memory_order_acquire) < i) {
		s_relax();
		if (atomic_load(&s_sh->stop) || bm_mono_ns() > end) {
			atomic_store(&s_sh->stop, 1);
			return false;
		}
	}
	return true;
}

static void
s_gap(const s_run_t *r)
{
	/* Blocking mode: let the consumer reach its sleep. */
	if (!r->spin) {
		int64_t end = bm_mono_ns() + 50000;

		while (bm_mono_ns() < end) {
			s_relax();
		}
	}
}

static bool
s_wait_flag(_Atomic int *f)
{
	int64_t end = bm_mono_ns() + 30 * (int64_t)1000000000;

	while (!atomic_load(f)) {
		struct timespec ts = {0, 100000};

		nanosleep(&ts, NULL);
		if (bm_mono_ns() > end || atomic_load(&s_sh->stop)) {
			return false;
		}
	}
	return true;
}

/* ---- beastmesh bulk channel ---- */

static size_t
s_ring_for(size_t size)
{
	size_t cap = 4 * S_MIB;

	while (cap < 2 * size + S_MIB) {
		cap *= 2;
	}
	return cap;
}

static int
s_bm_consumer(const s_run_t *r)
{
	bm_channel_opts_t o = {.spin_us = r->spin ? 10000000 : 0};
	bm_listener_t *l = NULL;
	bm_channel_t *ch = NULL;

	if (bm_listener_open(r->dir, "bench", &l) < 0) {
		return 1;
	}
	atomic_store(&s_sh->ready, 1);
	if (bm_listener_accept(l, 30000, &o, &ch) < 0) {
		return 1;
	}
	for (int i = 0; i < r->iters; i++) {
		bm_ring_rec_t rec;
		int64_t t0;

		if (bm_channel_peek(ch, 30000, &rec) < 0) {
			return 1;
		}
		if (r->e2e) {
			s_sink += s_read(rec.data, rec.len);
		}
		memcpy(&t0, rec.data, 8);
		s_sh->lat[i] = bm_mono_ns() - t0;
		bm_channel_release(ch);
		atomic_store_explicit(&s_sh->acked, (uint64_t)i + 1, memory_order_release);
	}
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
	return 0;
}

static int
s_bm_producer(const s_run_t *r)
{
	bm_channel_opts_t o = {.capacity = s_ring_for(r->size), .flags = BM_RING_PREFAULT,
	                       .spin_us = r->spin ? 10000000 : 0};
	bm_channel_t *ch = NULL;

	if (!s_wait_flag(&s_sh->ready) || bm_channel_connect(r->dir, "bench", "b", &o, 30000, &ch) < 0) {
		return 1;
	}
	for (int i = 0; i < r->iters; i++) {
		int64_t t0;
		void *p;

		s_gap(r);
		t0 = bm_mono_ns();
		if (bm_channel_reserve(ch, r->size, 30000, &p) < 0) {
			return 1;
		}
		if (r->e2e) {
			s_fill(p, r->size, (uint64_t)i); /* inside the timed span */
		}
		memcpy(p, &t0, 8);
		bm_channel_commit(ch, 1, r->size);
		if (!s_wait_acked((uint64_t)i + 1)) {
			return 1;
		}
	}
	bm_channel_destroy(&ch);
	return 0;
}

/* ---- ZeroMQ ipc ---- */

static int
s_zmq_consumer(const s_run_t *r)
{
	char ep[128];
	void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_PULL);
	zmq_msg_t m;

	snprintf(ep, sizeof ep, "ipc://%s/z.sock", r->dir);
	if (zmq_bind(s, ep) < 0) {
		return 1;
	}
	atomic_store(&s_sh->ready, 1);
	for (int i = 0; i < r->iters; i++) {
		int64_t t0;

		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, s, 0) < 0) {
			return 1;
		}
		if (r->e2e) {
			s_sink += s_read(zmq_msg_data(&m), zmq_msg_size(&m));
		}
		memcpy(&t0, zmq_msg_data(&m), 8);
		s_sh->lat[i] = bm_mono_ns() - t0;
		zmq_msg_close(&m);
		atomic_store_explicit(&s_sh->acked, (uint64_t)i + 1, memory_order_release);
	}
	zmq_close(s);
	zmq_ctx_term(ctx);
	return 0;
}

static int
s_zmq_producer(const s_run_t *r)
{
	char ep[128];
	void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_PUSH);
	int linger = 5000;
	uint8_t *buf = malloc(r->size);

	snprintf(ep, sizeof ep, "ipc://%s/z.sock", r->dir);
	zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
	if (!s_wait_flag(&s_sh->ready) || zmq_connect(s, ep) < 0) {
		return 1;
	}
	memset(buf, 1, r->size);
	for (int i = 0; i < r->iters; i++) {
		zmq_msg_t m;
		int64_t t0;

		s_gap(r);
		t0 = bm_mono_ns();
		/* A message of our own buffer's bytes: zmq copies it in. */
		zmq_msg_init_size(&m, r->size);
		if (r->e2e) {
			s_fill(zmq_msg_data(&m), r->size, (uint64_t)i);
		} else {
			memcpy(zmq_msg_data(&m), buf, 8);
		}
		memcpy(zmq_msg_data(&m), &t0, 8);
		if (zmq_msg_send(&m, s, 0) < 0) {
			return 1;
		}
		if (!s_wait_acked((uint64_t)i + 1)) {
			return 1;
		}
	}
	zmq_close(s);
	zmq_ctx_term(ctx);
	free(buf);
	return 0;
}

/* ---- Unix stream socket ---- */

static int
s_unix_consumer(const s_run_t *r)
{
	uint8_t *buf = malloc(r->size);

	memset(buf, 0, r->size);
	atomic_store(&s_sh->ready, 1);
	for (int i = 0; i < r->iters; i++) {
		size_t got = 0;
		int64_t t0;

		while (got < r->size) {
			ssize_t n = read(r->sp[1], buf + got, r->size - got);

			if (n <= 0) {
				return 1;
			}
			got += (size_t)n;
		}
		if (r->e2e) {
			s_sink += s_read(buf, r->size);
		}
		memcpy(&t0, buf, 8);
		s_sh->lat[i] = bm_mono_ns() - t0;
		atomic_store_explicit(&s_sh->acked, (uint64_t)i + 1, memory_order_release);
	}
	free(buf);
	return 0;
}

static int
s_unix_producer(const s_run_t *r)
{
	uint8_t *buf = malloc(r->size);

	memset(buf, 1, r->size);
	if (!s_wait_flag(&s_sh->ready)) {
		return 1;
	}
	for (int i = 0; i < r->iters; i++) {
		size_t off = 0;
		int64_t t0;

		s_gap(r);
		t0 = bm_mono_ns();
		if (r->e2e) {
			s_fill(buf, r->size, (uint64_t)i);
		}
		memcpy(buf, &t0, 8);
		while (off < r->size) {
			ssize_t n = write(r->sp[0], buf + off, r->size - off);

			if (n <= 0) {
				return 1;
			}
			off += (size_t)n;
		}
		if (!s_wait_acked((uint64_t)i + 1)) {
			return 1;
		}
	}
	free(buf);
	return 0;
}

/* ---- iceoryx ---- */

#ifdef BM_HAVE_ICEORYX
/* iceoryx's runtime logs to stderr at debug level; keep the table clean. */
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
s_ice_names(const s_run_t *r, char *ev, size_t n)
{
	snprintf(ev, n, "s%zu%c%c", r->size, r->spin ? 's' : 'b', r->e2e ? 'e' : 'h');
}

static int
s_ice_consumer(const s_run_t *r)
{
	iox_sub_storage_t storage;
	iox_ws_storage_t ws_storage;
	iox_sub_options_t opts;
	iox_ws_t ws = NULL;
	iox_sub_t sub;
	char ev[64];

	s_ice_names(r, ev, sizeof ev);
	s_quiet();
	iox_runtime_init("bench-shm-sub");
	iox_sub_options_init(&opts);
	opts.queueCapacity = 4;
	opts.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
	sub = iox_sub_init(&storage, "bench", "shm", ev, &opts);
	if (!r->spin) {
		ws = iox_ws_init(&ws_storage);
		iox_ws_attach_subscriber_state(ws, sub, SubscriberState_HAS_DATA, 1, NULL);
	}
	atomic_store(&s_sh->ready, 1);
	for (int i = 0; i < r->iters; i++) {
		const void *p = NULL;
		int64_t t0;

		if (r->spin) {
			int64_t end = bm_mono_ns() + 30 * (int64_t)1000000000;

			while (iox_sub_take_chunk(sub, &p) != ChunkReceiveResult_SUCCESS) {
				s_relax();
				if (bm_mono_ns() > end) {
					return 1;
				}
			}
		} else {
			while (iox_sub_take_chunk(sub, &p) != ChunkReceiveResult_SUCCESS) {
				iox_notification_info_t info[1];
				uint64_t missed = 0;

				iox_ws_wait(ws, info, 1, &missed);
			}
		}
		if (r->e2e) {
			s_sink += s_read(p, r->size);
		}
		memcpy(&t0, p, 8);
		s_sh->lat[i] = bm_mono_ns() - t0;
		iox_sub_release_chunk(sub, p);
		atomic_store_explicit(&s_sh->acked, (uint64_t)i + 1, memory_order_release);
	}
	if (ws != NULL) {
		iox_ws_detach_subscriber_state(ws, sub, SubscriberState_HAS_DATA);
		iox_ws_deinit(ws);
	}
	iox_sub_deinit(sub);
	return 0;
}

static int
s_ice_producer(const s_run_t *r)
{
	iox_pub_storage_t storage;
	iox_pub_options_t opts;
	iox_pub_t pub;
	char ev[64];
	int64_t end;

	s_ice_names(r, ev, sizeof ev);
	if (!s_wait_flag(&s_sh->ready)) {
		return 1;
	}
	s_quiet();
	iox_runtime_init("bench-shm-pub");
	iox_pub_options_init(&opts);
	opts.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
	pub = iox_pub_init(&storage, "bench", "shm", ev, &opts);
	end = bm_mono_ns() + 30 * (int64_t)1000000000;
	while (!iox_pub_has_subscribers(pub)) {
		struct timespec ts = {0, 1000000};

		nanosleep(&ts, NULL);
		if (bm_mono_ns() > end) {
			return 1;
		}
	}
	for (int i = 0; i < r->iters; i++) {
		void *p = NULL;
		int64_t t0;

		s_gap(r);
		t0 = bm_mono_ns();
		if (iox_pub_loan_chunk(pub, &p, (uint32_t)r->size) != AllocationResult_SUCCESS) {
			fprintf(stderr, "bench-shm: iceoryx could not loan %zu bytes\n", r->size);
			return 1;
		}
		if (r->e2e) {
			s_fill(p, r->size, (uint64_t)i);
		}
		memcpy(p, &t0, 8);
		iox_pub_publish_chunk(pub, p);
		if (!s_wait_acked((uint64_t)i + 1)) {
			return 1;
		}
	}
	iox_pub_deinit(pub);
	return 0;
}
#endif

/* ---- running one measurement ---- */

static int
s_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static int
s_child(const s_run_t *r, bool consumer)
{
	switch (r->kind) {
	case S_BM:
		return consumer ? s_bm_consumer(r) : s_bm_producer(r);
	case S_ZMQ:
		return consumer ? s_zmq_consumer(r) : s_zmq_producer(r);
	case S_UNIX:
		return consumer ? s_unix_consumer(r) : s_unix_producer(r);
#ifdef BM_HAVE_ICEORYX
	case S_ICE:
		return consumer ? s_ice_consumer(r) : s_ice_producer(r);
#endif
	default:
		return 1;
	}
}

static pid_t
s_fork(const s_run_t *r, bool consumer)
{
	pid_t pid = fork();

	if (pid == 0) {
		int rc = s_child(r, consumer);

		if (rc != 0) {
			atomic_store(&s_sh->stop, 1);
		}
		_exit(rc);
	}
	return pid;
}

static bool
s_reap(pid_t pid)
{
	int st;
	int64_t end = bm_mono_ns() + 120 * (int64_t)1000000000;

	for (;;) {
		if (waitpid(pid, &st, WNOHANG) == pid) {
			return WIFEXITED(st) && WEXITSTATUS(st) == 0;
		}
		if (bm_mono_ns() > end || atomic_load(&s_sh->stop)) {
			struct timespec ts = {0, 200000000};

			nanosleep(&ts, NULL);
			if (waitpid(pid, &st, WNOHANG) == pid) {
				return WIFEXITED(st) && WEXITSTATUS(st) == 0;
			}
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return false;
		}
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
}

/* Removes a scratch dir: sockets, shm/ and the dir itself. */
static void
s_rmdir(const char *dir)
{
	char cmd[160];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "bench-shm: could not remove %s\n", dir);
	}
}

/* Runs one case; writes p50/p99 in µs.  false when it failed. */
static bool
s_measure(int kind, size_t size, int iters, bool spin, bool e2e, double *p50, double *p99)
{
	s_run_t r = {.kind = kind, .size = size, .iters = iters, .spin = spin, .e2e = e2e};
	int warm = iters / 10 > 3 ? iters / 10 : 3;
	bool ok;
	pid_t c, p;

	if (iters + warm > S_MAX_SAMPLES) {
		iters = S_MAX_SAMPLES - warm;
	}
	r.iters = iters + warm;
	memset(s_sh, 0, sizeof *s_sh);
	snprintf(r.dir, sizeof r.dir, "/tmp/bench-shm-XXXXXX");
	if (mkdtemp(r.dir) == NULL || chmod(r.dir, 0700) < 0) {
		return false;
	}
	if (kind == S_UNIX && socketpair(AF_UNIX, SOCK_STREAM, 0, r.sp) < 0) {
		return false;
	}
	c = s_fork(&r, true);
	p = s_fork(&r, false);
	ok = s_reap(p);
	ok = s_reap(c) && ok;
	if (kind == S_UNIX) {
		close(r.sp[0]);
		close(r.sp[1]);
	}
	s_rmdir(r.dir);
	if (!ok) {
		return false;
	}
	qsort(s_sh->lat + warm, (size_t)iters, sizeof s_sh->lat[0], s_cmp);
	*p50 = (double)s_sh->lat[warm + iters / 2] / 1000.0;
	*p99 = (double)s_sh->lat[warm + (iters * 99) / 100] / 1000.0;
	return true;
}

/* ---- bandwidths ---- */

/* Best of `reps` warm copies of n bytes. */
static double
s_memcpy_gbps(size_t n, int reps)
{
	uint8_t *a = malloc(n), *b = malloc(n);
	double best = 0;

	memset(a, 1, n);
	memset(b, 2, n);
	for (int k = 0; k < reps; k++) {
		int64_t t0 = bm_mono_ns();
		double g;

		memcpy(b, a, n);
		g = (double)n / (double)(bm_mono_ns() - t0);
		best = g > best ? g : best;
		s_sink += b[k];
	}
	free(a);
	free(b);
	return best;
}

static bool
s_copy_gbps(size_t rec, size_t ring, size_t total, double *ret)
{
	char dir[64];
	pid_t c, p;
	bool ok;

	memset(s_sh, 0, sizeof *s_sh);
	snprintf(dir, sizeof dir, "/tmp/bench-shm-XXXXXX");
	if (mkdtemp(dir) == NULL) {
		return false;
	}
	c = fork();
	if (c == 0) {
		bm_listener_t *l = NULL;
		bm_channel_t *ch = NULL;
		uint8_t *buf = malloc(rec);
		int64_t t0 = 0;
		size_t got = 0;

		memset(buf, 0, rec);
		if (bm_listener_open(dir, "copy", &l) < 0) {
			_exit(1);
		}
		atomic_store(&s_sh->ready, 1);
		if (bm_listener_accept(l, 30000, NULL, &ch) < 0) {
			_exit(1);
		}
		while (got < total) {
			bm_ring_rec_t r;

			if (bm_channel_recv(ch, buf, rec, 30000, &r) < 0) {
				_exit(1);
			}
			if (got == 0) {
				t0 = bm_mono_ns();
			}
			got += r.len;
		}
		/* The first record's time is not counted, nor its bytes. */
		s_sh->gbps = (double)(got - rec) / (double)(bm_mono_ns() - t0);
		_exit(0);
	}
	p = fork();
	if (p == 0) {
		bm_channel_opts_t o = {.capacity = ring, .flags = BM_RING_PREFAULT};
		bm_channel_t *ch = NULL;
		uint8_t *buf = malloc(rec);

		memset(buf, 3, rec);
		if (!s_wait_flag(&s_sh->ready) || bm_channel_connect(dir, "copy", NULL, &o, 30000, &ch) < 0) {
			_exit(1);
		}
		for (size_t sent = 0; sent < total; sent += rec) {
			if (bm_channel_send(ch, 1, buf, rec, 30000) < 0) {
				_exit(1);
			}
		}
		bm_channel_destroy(&ch);
		_exit(0);
	}
	ok = s_reap(p);
	ok = s_reap(c) && ok;
	s_rmdir(dir);
	*ret = s_sh->gbps;
	return ok;
}

/* ---- iceoryx's daemon ---- */

#ifdef BM_HAVE_ICEORYX
static pid_t s_roudi;
static char s_roudi_dir[64];

static bool
s_roudi_start(void)
{
	static const char cfg[] =
		"[general]\nversion = 1\n\n[[segment]]\n\n"
		"[[segment.mempool]]\nsize = 1024\ncount = 64\n\n"
		"[[segment.mempool]]\nsize = 8192\ncount = 64\n\n"
		"[[segment.mempool]]\nsize = 1049600\ncount = 16\n\n"
		"[[segment.mempool]]\nsize = 16778240\ncount = 8\n\n"
		"[[segment.mempool]]\nsize = 104858624\ncount = 6\n";
	char path[128];
	struct stat st;
	int64_t end;
	FILE *f;

	if (stat("/dev/shm/iceoryx_mgmt", &st) == 0) {
		fprintf(stderr, "bench-shm: an iox-roudi seems to be running already; skipping iceoryx "
		                "(stop it, or remove a stale /dev/shm/iceoryx_mgmt)\n");
		return false;
	}
	snprintf(s_roudi_dir, sizeof s_roudi_dir, "/tmp/bench-roudi-XXXXXX");
	if (mkdtemp(s_roudi_dir) == NULL) {
		return false;
	}
	snprintf(path, sizeof path, "%s/roudi.toml", s_roudi_dir);
	f = fopen(path, "w");
	if (f == NULL) {
		return false;
	}
	fputs(cfg, f);
	fclose(f);
	s_roudi = fork();
	if (s_roudi == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execlp("iox-roudi", "iox-roudi", "-c", path, "-m", "off", "-l", "error", (char *)NULL);
		_exit(127);
	}
	end = bm_mono_ns() + 10 * (int64_t)1000000000;
	while (stat("/dev/shm/iceoryx_mgmt", &st) < 0) {
		struct timespec ts = {0, 10000000};
		int wst;

		if (waitpid(s_roudi, &wst, WNOHANG) == s_roudi || bm_mono_ns() > end) {
			fprintf(stderr, "bench-shm: iox-roudi did not start (apt-get install iceoryx); "
			                "skipping iceoryx\n");
			s_roudi = 0;
			return false;
		}
		nanosleep(&ts, NULL);
	}
	/* The management segment appears before RouDi listens; give it a
	 * moment so the first runtime does not wait on it. */
	struct timespec ts = {0, 300000000};
	nanosleep(&ts, NULL);
	return true;
}

static void
s_roudi_stop(void)
{
	char cmd[128];
	int st;

	if (s_roudi > 0) {
		struct passwd *pw = getpwuid(getuid());

		kill(s_roudi, SIGTERM);
		waitpid(s_roudi, &st, 0);
		/* RouDi leaves its segments behind when stopped; they were
		 * ours (none existed when we started it). */
		shm_unlink("/iceoryx_mgmt");
		if (pw != NULL) {
			snprintf(cmd, sizeof cmd, "/%s", pw->pw_name);
			shm_unlink(cmd);
		}
	}
	/* RouDi and each runtime leave a socket and lock files in /tmp. */
	unlink("/tmp/roudi");
	unlink("/tmp/roudi.lock");
	unlink("/tmp/iox-unique-roudi.lock");
	unlink("/tmp/bench-shm-pub");
	unlink("/tmp/bench-shm-pub.lock");
	unlink("/tmp/bench-shm-sub");
	unlink("/tmp/bench-shm-sub.lock");
	snprintf(cmd, sizeof cmd, "rm -rf %s", s_roudi_dir);
	if (s_roudi_dir[0] != '\0' && system(cmd) != 0) {
		fprintf(stderr, "bench-shm: could not remove %s\n", s_roudi_dir);
	}
}
#endif

/* ---- report ---- */

typedef struct {
	double p50, p99;
	bool ok;
} s_res_t;

static const size_t s_sizes[] = {64, 4096, S_MIB, 16 * S_MIB, 100 * S_MIB};
static const char *const s_size_names[] = {"64 B", "4 KiB", "1 MiB", "16 MiB", "100 MiB"};
#define S_NSIZES 5

static int
s_iters(size_t size)
{
	int n = size <= 4096 ? 20000 : size <= S_MIB ? 2000 : size <= 16 * S_MIB ? 200 : 40;

	return s_quick ? (n / 10 > 10 ? n / 10 : 10) : n;
}

static void
s_row(const char *name, const char *mode, s_res_t res[S_NSIZES])
{
	printf("%-24s %-5s", name, mode);
	for (int k = 0; k < S_NSIZES; k++) {
		if (res[k].ok) {
			printf(" %9.1f/%-9.1f", res[k].p50, res[k].p99);
		} else {
			printf(" %19s", "-");
		}
	}
	printf("\n");
	fflush(stdout);
}

static void
s_series(int kind, bool spin, bool e2e, s_res_t res[S_NSIZES])
{
	for (int k = 0; k < S_NSIZES; k++) {
		res[k].ok = s_measure(kind, s_sizes[k], s_iters(s_sizes[k]), spin, e2e, &res[k].p50,
		                      &res[k].p99);
	}
}

static void
s_verdict(const char *what, bool ok, const char *fmt, double a, double b)
{
	printf("  [%s] %s: ", ok ? "PASS" : "FAIL", what);
	printf(fmt, a, b);
	printf("\n");
}

int
main(int argc, char **argv)
{
	s_res_t bm_h[2][S_NSIZES], bm_e[2][S_NSIZES], zmq_h[S_NSIZES], zmq_e[S_NSIZES],
		unix_h[S_NSIZES], unix_e[S_NSIZES], ice_h[2][S_NSIZES], ice_e[2][S_NSIZES];
	bool use_ice = true, have_ice = false;
	double memcpy_g, memcpy_c, copy_g = 0, copy_big = 0;
	bool copy_ok, copy_big_ok;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick") == 0) {
			s_quick = true;
		} else if (strcmp(argv[i], "--copy-sweep") == 0) {
			s_sh = mmap(NULL, sizeof *s_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
			printf("memcpy 100 MiB: %.2f GB/s\n", s_memcpy_gbps(100 * S_MIB, 10));
			for (size_t rec = 16 << 10; rec <= 4 * S_MIB; rec *= 4) {
				for (size_t ring = S_MIB; ring <= 64 * S_MIB; ring *= 4) {
					double g = 0;

					if (ring < 2 * rec) {
						continue;
					}
					s_copy_gbps(rec, ring, 2048 * S_MIB, &g);
					printf("copy rec %7zu KiB ring %5zu KiB: %.2f GB/s\n", rec >> 10, ring >> 10, g);
				}
			}
			return 0;
		} else if (strcmp(argv[i], "--one") == 0 && i + 4 < argc) {
			/* --one KIND SIZE SPIN E2E: one case, for profiling */
			double p50 = 0, p99 = 0;
			size_t sz = strtoull(argv[i + 2], NULL, 10);
			bool ok;

			s_sh = mmap(NULL, sizeof *s_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
#ifdef BM_HAVE_ICEORYX
			if (atoi(argv[i + 1]) == S_ICE && !s_roudi_start()) {
				return 1;
			}
#endif
			ok = s_measure(atoi(argv[i + 1]), sz, s_iters(sz), atoi(argv[i + 3]) != 0,
			               atoi(argv[i + 4]) != 0, &p50, &p99);
#ifdef BM_HAVE_ICEORYX
			if (atoi(argv[i + 1]) == S_ICE) {
				s_roudi_stop();
			}
#endif
			printf("%s p50 %.1f p99 %.1f\n", ok ? "ok" : "failed", p50, p99);
			return ok ? 0 : 1;
		} else if (strcmp(argv[i], "--no-iceoryx") == 0) {
			use_ice = false;
		} else {
			fprintf(stderr, "usage: bench-shm [--quick] [--no-iceoryx]\n");
			return 2;
		}
	}
	s_sh = mmap(NULL, sizeof *s_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s_sh == MAP_FAILED) {
		return 1;
	}
	memset(ice_h, 0, sizeof ice_h);
	memset(ice_e, 0, sizeof ice_e);
#ifdef BM_HAVE_ICEORYX
	if (use_ice) {
		have_ice = s_roudi_start();
	}
#else
	(void)use_ice;
	fprintf(stderr, "bench-shm: built without iceoryx (apt-get install libiceoryx-binding-c-dev "
	                "iceoryx, then reconfigure)\n");
#endif
	printf("bench-shm: one-way latency in µs, p50/p99, one message in flight; %ld CPUs\n\n",
	       sysconf(_SC_NPROCESSORS_ONLN));
	printf("%-24s %-5s", "transport", "wait");
	for (int k = 0; k < S_NSIZES; k++) {
		printf(" %19s", s_size_names[k]);
	}
	printf("\n");
	for (int spin = 1; spin >= 0; spin--) {
		const char *mode = spin ? "spin" : "block";

		s_series(S_BM, spin, false, bm_h[spin]);
		s_row("bm zero-copy hand-off", mode, bm_h[spin]);
		s_series(S_BM, spin, true, bm_e[spin]);
		s_row("bm zero-copy e2e", mode, bm_e[spin]);
		if (have_ice) {
			s_series(S_ICE, spin, false, ice_h[spin]);
			s_row("iceoryx hand-off", mode, ice_h[spin]);
			s_series(S_ICE, spin, true, ice_e[spin]);
			s_row("iceoryx e2e", mode, ice_e[spin]);
		}
	}
	s_series(S_ZMQ, false, false, zmq_h);
	s_row("zmq ipc (copies)", "block", zmq_h);
	s_series(S_ZMQ, false, true, zmq_e);
	s_row("zmq ipc e2e", "block", zmq_e);
	s_series(S_UNIX, false, false, unix_h);
	s_row("unix stream (copies)", "block", unix_h);
	s_series(S_UNIX, false, true, unix_e);
	s_row("unix stream e2e", "block", unix_e);
#ifdef BM_HAVE_ICEORYX
	if (have_ice) {
		s_roudi_stop();
	}
#endif

	memcpy_g = s_memcpy_gbps(100 * S_MIB, 10);
	memcpy_c = s_memcpy_gbps(256 << 10, 2000);
	/* The default 4 MiB ring stays in cache; 256 KiB records. */
	copy_ok = s_copy_gbps(256 << 10, 4 * S_MIB, s_quick ? 512 * S_MIB : 8192 * S_MIB, &copy_g);
	copy_big_ok = s_copy_gbps(S_MIB, 64 * S_MIB, s_quick ? 512 * S_MIB : 4096 * S_MIB, &copy_big);
	printf("\nbandwidth (GB/s): memcpy 100 MiB %.2f (DRAM, best of 10), memcpy 256 KiB %.2f "
	       "(in cache)\n"
	       "  bm copy mode, 256 KiB records, 4 MiB ring: %.2f = %.0f%% of memcpy 100 MiB, "
	       "%.0f%% of memcpy 256 KiB\n"
	       "  bm copy mode, 1 MiB records, 64 MiB ring:  %.2f = %.0f%% of memcpy 100 MiB\n",
	       memcpy_g, memcpy_c, copy_g, 100.0 * copy_g / memcpy_g, 100.0 * copy_g / memcpy_c,
	       copy_big, 100.0 * copy_big / memcpy_g);

	printf("\ntargets:\n");
	for (int spin = 1; spin >= 0; spin--) {
		const char *m = spin ? "spin" : "block";
		char what[128];

		if (bm_h[spin][0].ok && bm_h[spin][4].ok) {
			double r = bm_h[spin][4].p50 / bm_h[spin][0].p50;

			snprintf(what, sizeof what, "100 MiB hand-off <= 2x 64 B hand-off (%s)", m);
			s_verdict(what, r <= 2.0, "%.2fx (%.1f µs vs 64 B)", r, bm_h[spin][0].p50);
		}
		if (have_ice && bm_h[spin][0].ok && ice_h[spin][0].ok) {
			snprintf(what, sizeof what, "64 B p50 <= iceoryx p50 (%s)", m);
			s_verdict(what, bm_h[spin][0].p50 <= ice_h[spin][0].p50, "%.1f µs vs %.1f µs",
			          bm_h[spin][0].p50, ice_h[spin][0].p50);
		} else {
			printf("  [n/a ] 64 B p50 vs iceoryx (%s): iceoryx not measured\n", m);
		}
	}
	if (copy_ok) {
		s_verdict("copy mode >= 70% of memcpy (100 MiB)", copy_g >= 0.7 * memcpy_g,
		          "%.2f GB/s vs %.2f GB/s", copy_g, memcpy_g);
	}
	if (copy_big_ok) {
		s_verdict("copy mode, 64 MiB ring, >= 70% of memcpy (100 MiB)", copy_big >= 0.7 * memcpy_g,
		          "%.2f GB/s vs %.2f GB/s", copy_big, memcpy_g);
	}
	for (int spin = 1; spin >= 0; spin--) {
		if (bm_h[spin][4].ok && zmq_e[4].ok) {
			double r = zmq_e[4].p50 / bm_h[spin][4].p50;
			char what[128];

			snprintf(what, sizeof what, "100 MiB >= 20x faster than zmq ipc (hand-off, %s)",
			         spin ? "spin" : "block");
			s_verdict(what, r >= 20.0, "%.0fx (zmq %.0f µs)", r, zmq_e[4].p50);
		}
	}
	if (bm_e[0][4].ok && zmq_e[4].ok) {
		double r = zmq_e[4].p50 / bm_e[0][4].p50;

		printf("  [info] 100 MiB end to end, writing and reading every byte: bm %.0f µs, zmq "
		       "%.0f µs (%.1fx), unix %.0f µs\n",
		       bm_e[0][4].p50, zmq_e[4].p50, r, unix_e[4].ok ? unix_e[4].p50 : 0.0);
	}
	printf("\npeers: iceoryx %s, zeromq %d.%d.%d\n", have_ice ? "measured" : "not measured",
	       ZMQ_VERSION_MAJOR, ZMQ_VERSION_MINOR, ZMQ_VERSION_PATCH);
	return 0;
}

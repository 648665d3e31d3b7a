/*
 * test_agent.c - the agent runtime on its own: handlers, requests and
 * their timeouts, reliable sends across a receiver's kill -9, broadcasts,
 * blobs, stop, and a step with a timeout driven from a foreign poll loop.
 * beastd runs as a child; agents run in the test process or forked.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bm_agent.h"
#include "proxy_private.h"
#include "shm_private.h"
#include "testutil.h"

#define HB 200 /* heartbeat, ms */

static char *s_dir;   /* beastd's runtime dir */
static char *s_state; /* journals (BEAST_STATE) */
static pid_t s_beastd;

static void
s_start(void)
{
	s_dir = tu_scratch_dir();
	s_state = tu_scratch_dir();
	ck_assert_ptr_nonnull(s_dir);
	ck_assert_ptr_nonnull(s_state);
	setenv("BEAST_STATE", s_state, 1);
	s_beastd = tu_beastd_start(s_dir, HB);
	ck_assert_int_gt(s_beastd, 0);
}

static void
s_stop(void)
{
	if (s_beastd > 0) {
		tu_kill9(s_beastd);
		s_beastd = 0;
	}
	tu_rmrf(&s_dir);
	tu_rmrf(&s_state);
}

static bm_agent_t *
s_agent(const char *name, const char *const *caps)
{
	bm_agent_opts_t o = {.name = name, .caps = caps, .dir = s_dir, .heartbeat_ms = HB,
	                     .ack_timeout_ms = 1000};
	bm_agent_t *a = NULL;

	ck_assert_int_eq(bm_agent_open(&o, &a), 0);
	return a;
}

/* Steps until *flag is set or timeout_ms passes. */
static bool
s_step_until(bm_agent_t *a, volatile int *flag, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;

	while (!*flag && bm_mono_ms() < deadline) {
		int rc = bm_agent_step(a, 50);

		ck_assert(rc >= 0 || rc == -EINTR);
	}
	return *flag != 0;
}

/* ---- a child agent: echo (requests) and an appending receiver ---- */

static volatile sig_atomic_t s_child_stop;

static void
s_on_term(int sig)
{
	(void)sig;
	s_child_stop = 1;
}

static int
s_echo(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	(void)arg;
	return bm_agent_reply(a, m, "echo.reply", bm_msg_data(m), bm_msg_size(m));
}

/* Appends each body as a line to the file named by arg. */
static int
s_append(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	(void)a;
	return tu_append_line(arg, bm_msg_data(m), bm_msg_size(m));
}

typedef struct {
	const char *name;   /* agent name */
	const char *file;   /* NULL = echo; else append bodies there */
	const char *ready;  /* created once the agent is up, or NULL */
} s_child_t;

/* Waits until path exists (bounded). */
static bool
s_wait_file(const char *path, off_t min_size, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;
	struct stat st;

	while (bm_mono_ms() < deadline) {
		if (stat(path, &st) == 0 && st.st_size >= min_size) {
			return true;
		}
		usleep(2000);
	}
	return false;
}

static int
s_child(void *arg)
{
	const s_child_t *c = arg;
	const char *caps[] = {"test", NULL};
	/* A generous connect timeout: sanitizer builds on a busy machine are slow. */
	bm_agent_opts_t o = {.name = c->name, .caps = caps, .dir = s_dir, .heartbeat_ms = HB,
	                     .stop = &s_child_stop, .connect_timeout_ms = 10000};
	bm_agent_t *a = NULL;
	int rc;

	signal(SIGTERM, s_on_term);
	if ((rc = bm_agent_open(&o, &a)) < 0) {
		fprintf(stderr, "child %s: bm_agent_open: %s\n", c->name, bm_strerror(rc));
		return 10;
	}
	if (c->ready != NULL) {
		close(open(c->ready, O_WRONLY | O_CREAT, 0600));
	}
	if (c->file == NULL) {
		bm_agent_on_request(a, NULL, s_echo, NULL);
	} else {
		bm_agent_on_message(a, NULL, s_append, (void *)c->file);
	}
	rc = bm_agent_run(a);
	bm_agent_destroy(&a);
	return rc == 0 ? 0 : 11;
}

/* ---- tests ---- */

static volatile int s_got;
static int s_err;
static char s_body[256];

static void
s_on_reply(bm_agent_t *a, int err, bm_msg_t *reply, void *arg)
{
	(void)a;
	(void)arg;
	s_err = err;
	if (reply != NULL) {
		snprintf(s_body, sizeof s_body, "%.*s", (int)bm_msg_size(reply),
		         (const char *)bm_msg_data(reply));
	}
	s_got = 1;
}

START_TEST(an_agent_with_a_name_alone_registers_runs_and_stops_cleanly_on_sigterm)
{
	char ready[512];
	s_child_t c = {.name = "solo", .ready = ready};
	pid_t pid;

	snprintf(ready, sizeof ready, "%s/solo.ready", s_state);
	pid = tu_fork(s_child, &c);
	ck_assert_int_ge(tu_wait_agent(s_dir, "solo", true, 15000), 0);
	ck_assert(s_wait_file(ready, 0, 15000));
	ck_assert_int_eq(tu_term(pid, 5000), 0);
	ck_assert_int_ge(tu_wait_agent(s_dir, "solo", false, 5000), 0);
}
END_TEST

START_TEST(a_request_handlers_reply_reaches_the_requesters_callback)
{
	char ready[512];
	s_child_t c = {.name = "echo1", .ready = ready};
	bm_agent_t *a;
	bm_agent_stats_t st;
	pid_t pid;

	snprintf(ready, sizeof ready, "%s/echo1.ready", s_state);
	pid = tu_fork(s_child, &c);
	ck_assert(s_wait_file(ready, 0, 15000));
	a = s_agent("asker", NULL);
	ck_assert_int_eq(bm_agent_request(a, "@test", "q", "hello", 5, 5000, s_on_reply, NULL), 0);
	ck_assert_uint_eq(bm_agent_requests_pending(a), 1);
	ck_assert(s_step_until(a, &s_got, 5000));
	ck_assert_int_eq(s_err, 0);
	ck_assert_str_eq(s_body, "hello");
	ck_assert_uint_eq(bm_agent_requests_pending(a), 0);
	ck_assert_int_eq(bm_agent_drain(a, 5000), 0);
	bm_agent_stats(a, &st);
	ck_assert_uint_eq(st.replies, 1);
	ck_assert_uint_eq(st.pending, 0);
	ck_assert_uint_eq(st.dead, 0);
	ck_assert_uint_gt(bm_agent_hist_quantile(st.req_hist, 0.5), 0);
	bm_agent_destroy(&a);
	ck_assert_int_eq(tu_term(pid, 5000), 0);
}
END_TEST

START_TEST(a_request_nobody_answers_times_out_and_is_withdrawn_from_the_outbox)
{
	bm_agent_t *a = s_agent("asker", NULL);
	bm_agent_stats_t st;
	int64_t t0 = bm_mono_ms();

	ck_assert_int_eq(bm_agent_request(a, "nobody", "q", "x", 1, 300, s_on_reply, NULL), 0);
	ck_assert(s_step_until(a, &s_got, 3000));
	ck_assert_int_eq(s_err, -ETIMEDOUT);
	ck_assert_int_ge(bm_mono_ms() - t0, 290);
	bm_agent_stats(a, &st);
	ck_assert_uint_eq(st.timeouts, 1);
	ck_assert_uint_eq(st.pending, 0);
	ck_assert_uint_eq(st.dead, 0);
	bm_agent_destroy(&a);
}
END_TEST

START_TEST(a_reply_its_requester_no_longer_waits_for_is_withdrawn_not_dead_lettered)
{
	const char *const caps[] = {"test", NULL};
	bm_agent_t *srv = s_agent("srv", caps), *late, *gone;
	bm_agent_stats_t st;

	bm_agent_on_request(srv, NULL, s_echo, NULL);
	/* 1: the request's 300 ms are over before the server gets to it: no
	 * reply is sent at all. */
	late = s_agent("late", NULL);
	ck_assert_int_eq(bm_agent_request(late, "srv", "q", "a", 1, 300, s_on_reply, NULL), 0);
	ck_assert_int_eq(bm_agent_flush(late), 0);
	usleep(400000);
	bm_agent_destroy(&late);
	/* 2: the requester is gone (it gave up and left) while its reply is
	 * on the way: the reply is retried only until the 700 ms are over. */
	gone = s_agent("gone", NULL);
	ck_assert_int_eq(bm_agent_request(gone, "srv", "q", "b", 1, 700, s_on_reply, NULL), 0);
	ck_assert_int_eq(bm_agent_flush(gone), 0);
	bm_agent_destroy(&gone);
	/* Serve both, then let the second reply run out of time. */
	for (int64_t end = bm_mono_ms() + 5000; bm_mono_ms() < end;) {
		ck_assert_int_ge(bm_agent_step(srv, 50), 0);
		bm_agent_stats(srv, &st);
		if (st.received == 2 && st.pending == 0) {
			break;
		}
	}
	ck_assert_int_eq(bm_agent_drain(srv, 5000), 0);
	bm_agent_stats(srv, &st);
	ck_assert_uint_eq(st.received, 2);
	ck_assert_uint_eq(st.replies_expired, 2);
	ck_assert_uint_eq(st.pending, 0);
	ck_assert_uint_eq(st.dead, 0);
	bm_agent_destroy(&srv);
}
END_TEST

START_TEST(reliable_sends_and_a_batch_reach_a_receiver_that_starts_late_and_is_killed_9)
{
	char file[512], ready[512], line[64];
	s_child_t c = {.name = "rx", .file = file, .ready = ready};
	bm_agent_item_t items[3];
	char bodies[3][16];
	bm_agent_t *a;
	bool seen[1003] = {false};
	int nseen = 0;
	FILE *f;
	pid_t pid;
	tu_held_t first, second;

	snprintf(file, sizeof file, "%s/rx.out", s_state);
	snprintf(ready, sizeof ready, "%s/rx.ready", s_state);
	/* Both incarnations of rx are forked before tx has threads. */
	first = tu_fork_held(s_child, &c);
	second = tu_fork_held(s_child, &c);
	a = s_agent("tx", NULL);
	/* rx is offline: stored and retried. */
	for (int i = 0; i < 1000; i++) {
		char b[16];

		snprintf(b, sizeof b, "%d", i);
		ck_assert_int_eq(bm_agent_send(a, "rx", NULL, b, strlen(b), NULL), 0);
	}
	for (int i = 0; i < 3; i++) {
		snprintf(bodies[i], sizeof bodies[i], "%d", 1000 + i);
		items[i] = (bm_agent_item_t){.to = "rx", .type = "batch", .body = bodies[i],
		                             .len = strlen(bodies[i])};
	}
	ck_assert_int_eq(bm_agent_send_batch(a, items, 3, NULL), 0);
	ck_assert_int_eq(bm_agent_flush(a), 0);
	pid = tu_release(&first);
	ck_assert_int_ge(tu_wait_agent(s_dir, "rx", true, 15000), 0);
	/* Kill rx as soon as the first messages arrived, start it again. */
	for (int k = 0; k < 1000; k++) {
		struct stat st;

		(void)bm_agent_step(a, 5);
		if (stat(file, &st) == 0 && st.st_size > 0) {
			break;
		}
	}
	tu_kill9(pid);
	unlink(ready);
	pid = tu_release(&second);
	ck_assert(s_wait_file(ready, 0, 15000));
	ck_assert_int_eq(bm_agent_drain(a, 20000), 0);
	ck_assert_int_eq(tu_term(pid, 5000), 0);
	f = fopen(file, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof line, f) != NULL) {
		int v = atoi(line);

		ck_assert(v >= 0 && v < 1003);
		if (!seen[v]) {
			seen[v] = true;
			nseen++;
		}
	}
	fclose(f);
	ck_assert_int_eq(nseen, 1003);
	bm_agent_destroy(&a);
}
END_TEST

static volatile int s_bcast_n;
static char s_topic[BM_TOPIC_MAX + 1];

static void
s_on_bcast(bm_agent_t *a, bm_bcast_t *b, void *arg)
{
	(void)a;
	(void)arg;
	snprintf(s_topic, sizeof s_topic, "%s", b->topic);
	s_bcast_n++;
}

/* ---- broadcasts through a publisher's shared-memory log ----
 *
 * One publisher agent offers a small log; subscriber agents in their own
 * processes follow it tethered, untethered and through the proxy only.
 * Every body starts with the publisher's own count (= the broadcast's
 * seq) and the last one carries 'E'.  Pipes, not sleeps, order the
 * steps that make the outcome certain: the tethered reader stops reading
 * once it reads the log until the publisher says it was held (BM_EFULL);
 * the untethered one stops once it reads the log, says so, and waits
 * until the publisher has sent 1000 more (more than the log holds) and
 * finished, so it is lapped and must count its loss. */

#define S_LOG_SIZE (64u << 10)
#define S_LOG_MIN 5000    /* broadcasts at least, and until held once */
#define S_LOG_BODY 100
#define S_LOG_WAIT_MS 60000

typedef struct {
	const char *name;  /* agent name */
	int shm;           /* enum bm_agent_shm */
	int ready_fd;      /* write 'r' once subscribed */
	int stall_fd;      /* once reading the log, wait for a byte here (-1: no) */
	int stalled_fd;    /* and say so here first (-1: no) */
	uint64_t n, first, last, gaps, bad; /* what the handler saw */
	bool end;          /* the last broadcast came */
} s_lsub_t;

static void
s_lsub_on(bm_agent_t *a, bm_bcast_t *b, void *arg)
{
	s_lsub_t *c = arg;
	const uint8_t *d = bm_bcast_data(b);
	uint64_t seq = 0;

	(void)a;
	if (bm_bcast_size(b) != S_LOG_BODY) {
		c->bad++;
		return;
	}
	memcpy(&seq, d, 8);
	/* Order and no duplicate: the publisher's count only grows; and it is
	 * the broadcast's per-publisher seq, whichever way it came. */
	if ((c->n > 0 && seq <= c->last) || seq != b->seq) {
		c->bad++;
	}
	if (c->n == 0) {
		c->first = seq;
	}
	c->n++;
	c->gaps += b->gap;
	c->last = seq;
	c->end = d[8] == 'E';
}

static bool
s_pipe_wait(int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char c;

	return poll(&p, 1, timeout_ms) == 1 && read(fd, &c, 1) == 1;
}

/* A subscriber child.  Exit 0, or which check failed. */
static int
s_lsub_child(void *arg)
{
	s_lsub_t *c = arg;
	bm_agent_opts_t o = {.name = c->name, .dir = s_dir, .heartbeat_ms = HB,
	                     .connect_timeout_ms = 10000};
	int64_t deadline = bm_mono_ms() + S_LOG_WAIT_MS;
	bm_agent_stats_t st;
	bm_agent_t *a = NULL;
	bool stalled = false;

	if (bm_agent_open(&o, &a) < 0 ||
	    bm_agent_subscribe_shm(a, "tot/log", c->shm, s_lsub_on, c) < 0 ||
	    bm_agent_wait_subscribed(a, 10000) < 0) {
		return 10;
	}
	(void)!write(c->ready_fd, "r", 1);
	while (!c->end && bm_mono_ms() < deadline) {
		int rc = bm_agent_step(a, 50);

		if (rc < 0 && rc != -EINTR) {
			fprintf(stderr, "%s: step: %s\n", c->name, bm_strerror(rc));
			return 11;
		}
		bm_agent_stats(a, &st);
		if (c->stall_fd >= 0 && !stalled && st.bcasts_shm > 0) {
			stalled = true;
			if (c->stalled_fd >= 0) {
				(void)!write(c->stalled_fd, "u", 1);
			}
			if (!s_pipe_wait(c->stall_fd, 30000)) {
				return 12;
			}
		}
	}
	bm_agent_stats(a, &st);
	bm_agent_destroy(&a);
	fprintf(stderr, "%s: n %llu first %llu last %llu gaps %llu bad %llu via log %llu\n", c->name,
	        (unsigned long long)c->n, (unsigned long long)c->first, (unsigned long long)c->last,
	        (unsigned long long)c->gaps, (unsigned long long)c->bad,
	        (unsigned long long)st.bcasts_shm);
	if (!c->end) {
		return 13;
	}
	if (c->bad > 0) {
		return 14; /* a duplicate, a message out of order, or a bad body */
	}
	/* Exact accounting: every broadcast from the first one seen on was
	 * received or counted lost. */
	if (c->n + c->gaps != c->last - c->first + 1) {
		return 15;
	}
	if (c->shm == BM_AGENT_SHM_OFF) {
		return st.bcasts_shm == 0 && c->gaps == 0 ? 0 : 16;
	}
	/* Switched mid-stream: the first broadcasts came through the proxy. */
	if (st.bcasts_shm == 0 || st.bcasts_shm >= c->n) {
		return 17;
	}
	if (c->shm == BM_AGENT_SHM_TETHERED) {
		return c->gaps == 0 && c->first == 1 ? 0 : 18;
	}
	return c->gaps > 0 ? 0 : 19; /* lapped, and said so */
}

typedef struct {
	int full_fd;  /* write 'f' the first time a publish is held */
	int done_fd;  /* write 'd' once the last broadcast is out */
	int ustall_fd; /* the untethered reader stopped reading: 1000 more, then done */
	int quit_fd;  /* wait for a byte here before leaving */
} s_lpub_t;

/* Publishes one, retrying while held; the first time it is held it says
 * so on full_fd (-1: nobody to tell) — before waiting, since the reader
 * that holds it may be waiting for just that. */
static int
s_publish_seq(bm_agent_t *a, uint64_t seq, bool end, uint64_t *ret_full, int full_fd)
{
	uint8_t body[S_LOG_BODY] = {0};
	int64_t deadline = bm_mono_ms() + 20000;

	memcpy(body, &seq, 8);
	body[8] = end ? 'E' : '-';
	for (;;) {
		int rc = bm_agent_publish(a, "tot/log/x", body, sizeof body);

		if (rc != BM_EFULL) {
			return rc;
		}
		if ((*ret_full)++ == 0 && full_fd >= 0) {
			(void)!write(full_fd, "f", 1);
		}
		if (bm_mono_ms() > deadline) {
			return -ETIMEDOUT;
		}
		(void)bm_agent_step(a, 1);
	}
}

static int
s_lpub_child(void *arg)
{
	s_lpub_t *p = arg;
	bm_agent_opts_t o = {.name = "logpub", .dir = s_dir, .heartbeat_ms = HB,
	                     .connect_timeout_ms = 10000, .shm_log = S_LOG_SIZE};
	int64_t deadline = bm_mono_ms() + S_LOG_WAIT_MS;
	uint64_t seq = 0, full = 0, until = 0;
	bm_agent_t *a = NULL;

	if (bm_agent_open(&o, &a) < 0) {
		return 10;
	}
	/* At least S_LOG_MIN, held at least once, and 1000 (more than the
	 * log holds) past the moment the untethered reader stopped. */
	while (seq < S_LOG_MIN || full == 0 || until == 0 || seq < until) {
		if (until == 0 && s_pipe_wait(p->ustall_fd, 0)) {
			until = seq + 1000;
		}
		if (bm_mono_ms() > deadline || s_publish_seq(a, ++seq, false, &full, p->full_fd) < 0) {
			return 11;
		}
		if (seq % 64 == 0) {
			(void)bm_agent_step(a, 0); /* readers attaching */
		}
	}
	if (s_publish_seq(a, ++seq, true, &full, p->full_fd) < 0) {
		return 12;
	}
	(void)!write(p->done_fd, "d", 1);
	fprintf(stderr, "logpub: %llu broadcasts, held %llu times\n", (unsigned long long)seq,
	        (unsigned long long)full);
	while (!s_pipe_wait(p->quit_fd, 0) && bm_mono_ms() < deadline) {
		(void)bm_agent_step(a, 20);
	}
	bm_agent_destroy(&a);
	return 0;
}

START_TEST(log_readers_tethered_untethered_and_a_proxy_reader_see_the_stream_honestly)
{
	int ready[2], full[2], done[2], quit[2], ustall[2];
	s_lsub_t subs[3] = {
		{.name = "teth", .shm = BM_AGENT_SHM_TETHERED, .stalled_fd = -1},
		{.name = "unteth", .shm = BM_AGENT_SHM_AUTO},
		{.name = "viaproxy", .shm = BM_AGENT_SHM_OFF, .stall_fd = -1, .stalled_fd = -1},
	};
	s_lpub_t pub;
	pid_t pid[3];
	tu_held_t hp;

	ck_assert_int_eq(pipe(ready), 0);
	ck_assert_int_eq(pipe(full), 0);
	ck_assert_int_eq(pipe(done), 0);
	ck_assert_int_eq(pipe(quit), 0);
	ck_assert_int_eq(pipe(ustall), 0);
	subs[0].stall_fd = full[0];
	subs[1].stall_fd = done[0];
	subs[1].stalled_fd = ustall[1];
	pub = (s_lpub_t){.full_fd = full[1], .done_fd = done[1], .quit_fd = quit[0],
	                 .ustall_fd = ustall[0]};
	hp = tu_fork_held(s_lpub_child, &pub);
	for (int i = 0; i < 3; i++) {
		subs[i].ready_fd = ready[1];
		pid[i] = tu_fork(s_lsub_child, &subs[i]);
		ck_assert_int_gt(pid[i], 0);
	}
	for (int i = 0; i < 3; i++) {
		ck_assert(s_pipe_wait(ready[0], 20000));
	}
	ck_assert_int_gt(tu_release(&hp), 0);
	ck_assert_int_eq(tu_wait(pid[0], S_LOG_WAIT_MS), 0);
	ck_assert_int_eq(tu_wait(pid[1], S_LOG_WAIT_MS), 0);
	ck_assert_int_eq(tu_wait(pid[2], S_LOG_WAIT_MS), 0);
	(void)!write(quit[1], "q", 1);
	ck_assert_int_eq(tu_wait(hp.pid, 20000), 0);
	for (int i = 0; i < 2; i++) {
		close(ready[i]);
		close(full[i]);
		close(done[i]);
		close(quit[i]);
		close(ustall[i]);
	}
}
END_TEST

/* A publisher that streams until it is killed. */
static int
s_diepub_child(void *arg)
{
	bm_agent_opts_t o = {.name = "diepub", .dir = s_dir, .heartbeat_ms = HB,
	                     .connect_timeout_ms = 10000, .shm_log = S_LOG_SIZE};
	int64_t deadline = bm_mono_ms() + S_LOG_WAIT_MS;
	uint64_t seq = 0, full = 0;
	bm_agent_t *a = NULL;

	(void)arg;
	if (bm_agent_open(&o, &a) < 0) {
		return 10;
	}
	while (bm_mono_ms() < deadline) {
		if (s_publish_seq(a, ++seq, false, &full, -1) < 0) {
			return 11;
		}
		if (seq % 16 == 0) {
			(void)bm_agent_step(a, 1); /* readers attaching; a gentle pace */
		}
	}
	bm_agent_destroy(&a);
	return 0;
}

/* Steps a until n broadcasts came from shared memory (bounded). */
static void
s_step_until_shm(bm_agent_t *a, uint64_t n, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;
	bm_agent_stats_t st;

	do {
		int rc = bm_agent_step(a, 20);

		ck_assert(rc >= 0 || rc == -EINTR);
		bm_agent_stats(a, &st);
	} while (st.bcasts_shm < n && bm_mono_ms() < deadline);
	ck_assert_uint_ge(st.bcasts_shm, n);
}

START_TEST(a_log_publisher_killed_with_9_sends_its_readers_back_to_the_proxy_without_a_crash)
{
	tu_held_t hp = tu_fork_held(s_diepub_child, NULL);
	bm_agent_t *a = s_agent("survivor", NULL);
	s_lsub_t c = {.name = "survivor", .stall_fd = -1};
	int64_t deadline;
	bm_agent_stats_t st;

	ck_assert_int_eq(bm_agent_subscribe(a, "tot/log", s_lsub_on, &c), 0);
	ck_assert_int_eq(bm_agent_wait_subscribed(a, 10000), 0);
	ck_assert_int_gt(tu_release(&hp), 0);
	s_step_until_shm(a, 100, 20000);
	tu_kill9(hp.pid);
	deadline = bm_mono_ms() + 10000;
	do {
		int rc = bm_agent_step(a, 20);

		ck_assert(rc >= 0 || rc == -EINTR);
		bm_agent_stats(a, &st);
	} while (st.shm_fallbacks == 0 && bm_mono_ms() < deadline);
	ck_assert_uint_eq(st.shm_fallbacks, 1);
	ck_assert_uint_eq(st.shm_corrupt, 0);
	/* What the proxy still had comes now; then nothing. */
	for (int i = 0; i < 10; i++) {
		int rc = bm_agent_step(a, 20);

		ck_assert(rc >= 0 || rc == -EINTR);
	}
	ck_assert_uint_eq(c.bad, 0);
	ck_assert_uint_eq(c.n + c.gaps, c.last - c.first + 1);
	bm_agent_destroy(&a);
}
END_TEST

/* A publisher (a plain bm_pub, so the test can reach its log) that
 * streams until told 'c', then publishes 20 more while the reader is
 * held still, scribbles over its whole record space (nobody else can: the
 * log is sealed), answers 'k', and publishes 200 more, the last one 'E'. */
typedef struct {
	int cmd;  /* read end */
	int ack;  /* write end */
} s_badpub_t;

static int
s_pub_seq(bm_pub_t *p, uint64_t seq, bool end)
{
	uint8_t body[S_LOG_BODY] = {0};
	int64_t deadline = bm_mono_ms() + 20000;
	int rc;

	memcpy(body, &seq, 8);
	body[8] = end ? 'E' : '-';
	while ((rc = bm_pub_send(p, "tot/log/x", body, sizeof body)) == BM_EFULL &&
	       bm_mono_ms() < deadline) {
		zmq_pollitem_t it = {.socket = bm_pub_socket(p), .events = ZMQ_POLLOUT};

		(void)zmq_poll(&it, 1, 1);
	}
	return rc;
}

static int
s_badpub_child(void *arg)
{
	s_badpub_t *b = arg;
	bm_pub_opts_t po = {.dir = s_dir, .name = "badpub", .shm_log = S_LOG_SIZE};
	int64_t deadline = bm_mono_ms() + S_LOG_WAIT_MS;
	bm_pub_t *p = NULL;
	uint64_t seq = 0;
	size_t len;
	uint8_t *base;

	if (bm_pub_open(&po, &p) < 0) {
		return 10;
	}
	while (!s_pipe_wait(b->cmd, 0)) {
		if (bm_mono_ms() > deadline || s_pub_seq(p, ++seq, false) < 0) {
			return 11;
		}
		if (seq % 16 == 0) {
			struct pollfd w = {.fd = bm_pub_shm_fd(p), .events = POLLIN};

			(void)poll(&w, 1, 1); /* a gentle pace; readers attaching */
			(void)bm_pub_service(p);
		}
	}
	for (int i = 0; i < 20; i++) {
		if (s_pub_seq(p, ++seq, false) < 0) {
			return 12;
		}
	}
	base = bm__bcastlog_base(bm__pub_log(p), &len);
	memset(base + 4096, 0xAB, len - 4096);
	(void)!write(b->ack, "k", 1);
	for (int i = 0; i < 200; i++) {
		if (s_pub_seq(p, ++seq, i == 199) < 0) {
			return 13;
		}
	}
	(void)s_pipe_wait(b->cmd, S_LOG_WAIT_MS);
	bm_pub_destroy(&p);
	return 0;
}

START_TEST(a_corrupt_log_sends_its_reader_back_to_the_proxy_with_every_broadcast_accounted)
{
	int cmd[2], ack[2];
	s_badpub_t b;
	tu_held_t hp;
	bm_agent_t *a;
	s_lsub_t c = {.name = "victim", .stall_fd = -1};
	bm_agent_stats_t st;
	int64_t deadline;

	ck_assert_int_eq(pipe(cmd), 0);
	ck_assert_int_eq(pipe(ack), 0);
	b = (s_badpub_t){.cmd = cmd[0], .ack = ack[1]};
	hp = tu_fork_held(s_badpub_child, &b);
	a = s_agent("victim", NULL);
	ck_assert_int_eq(bm_agent_subscribe(a, "tot/log", s_lsub_on, &c), 0);
	ck_assert_int_eq(bm_agent_wait_subscribed(a, 10000), 0);
	ck_assert_int_gt(tu_release(&hp), 0);
	s_step_until_shm(a, 50, 20000);
	/* Held still while the publisher gets ahead and scribbles. */
	ck_assert_int_eq(write(cmd[1], "c", 1), 1);
	ck_assert(s_pipe_wait(ack[0], 20000));
	deadline = bm_mono_ms() + 20000;
	while (!c.end && bm_mono_ms() < deadline) {
		int rc = bm_agent_step(a, 20);

		ck_assert(rc >= 0 || rc == -EINTR);
	}
	bm_agent_stats(a, &st);
	ck_assert(c.end);
	ck_assert_uint_eq(st.shm_corrupt, 1);
	ck_assert_uint_eq(st.shm_fallbacks, 1);
	ck_assert_uint_eq(c.bad, 0);
	ck_assert_uint_eq(c.first, 1);
	ck_assert_uint_eq(c.n + c.gaps, c.last);
	ck_assert_uint_eq(st.bcasts, c.n);
	ck_assert_int_eq(write(cmd[1], "q", 1), 1);
	ck_assert_int_eq(tu_wait(hp.pid, 20000), 0);
	bm_agent_destroy(&a);
	for (int i = 0; i < 2; i++) {
		close(cmd[i]);
		close(ack[i]);
	}
}
END_TEST

START_TEST(a_broadcast_handler_gets_its_subtree_and_nothing_else)
{
	bm_agent_t *a = s_agent("follower", NULL);
	bm_agent_stats_t st;
	volatile int never = 0;

	ck_assert_int_eq(bm_agent_subscribe(a, "tot/7", s_on_bcast, NULL), 0);
	ck_assert_int_eq(bm_agent_wait_subscribed(a, 5000), 0);
	ck_assert_int_eq(bm_agent_publish(a, "tot/70/1", "no", 2), 0);
	ck_assert_int_eq(bm_agent_publish(a, "tot/7/2/5", "yes", 3), 0);
	ck_assert(s_step_until(a, &s_bcast_n, 5000));
	(void)s_step_until(a, &never, 200);
	ck_assert_int_eq(s_bcast_n, 1);
	ck_assert_str_eq(s_topic, "tot/7/2/5/");
	bm_agent_stats(a, &st);
	ck_assert_uint_eq(st.published, 2);
	ck_assert_uint_eq(st.bcasts, 1);
	ck_assert_uint_eq(st.gaps, 0);
	bm_agent_destroy(&a);
}
END_TEST

/* The blob receiver: exits 0 once it has a cloud and its announcement and
 * the checksums agree. */
static uint32_t s_ann_crc, s_blob_crc;
static volatile int s_have;

static int
s_on_announce(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	char buf[512];
	const char *p;

	(void)a;
	(void)arg;
	snprintf(buf, sizeof buf, "%.*s", (int)bm_msg_size(m), (const char *)bm_msg_data(m));
	p = strstr(buf, "\"crc\":\"");
	if (p != NULL) {
		s_ann_crc = (uint32_t)strtoul(p + 7, NULL, 16);
		s_have |= 1;
	}
	return 0;
}

static int
s_on_blob(bm_agent_t *a, const char *from, bm_blob_t *blob, void *arg)
{
	bm_cloud_t *cloud = NULL;

	(void)a;
	(void)arg;
	if (strcmp(from, "scan") == 0 &&
	    bm_cloud_parse(bm_blob_data(blob), bm_blob_size(blob), &cloud) == 0 &&
	    bm_cloud_count(cloud) == 5000) {
		s_blob_crc = bm_crc32c(0, bm_blob_data(blob), bm_blob_size(blob));
		s_have |= 2;
	}
	bm_cloud_destroy(&cloud);
	return 0;
}

static int
s_blob_child(void *arg)
{
	bm_agent_opts_t o = {.name = "map", .dir = s_dir, .heartbeat_ms = HB};
	bm_agent_t *a = NULL;
	int64_t deadline = bm_mono_ms() + 10000;

	(void)arg;
	if (bm_agent_open(&o, &a) < 0 || bm_agent_on_blob(a, s_on_blob, NULL) < 0 ||
	    bm_agent_on_message(a, "blob.announce", s_on_announce, NULL) < 0) {
		return 10;
	}
	while (s_have != 3 && bm_mono_ms() < deadline) {
		(void)bm_agent_step(a, 50);
	}
	(void)bm_agent_step(a, 0); /* ACK what the last turn handled */
	bm_agent_destroy(&a);
	return s_have == 3 && s_ann_crc == s_blob_crc ? 0 : 12;
}

START_TEST(a_point_cloud_reaches_the_blob_handler_intact_with_its_mesh_announcement)
{
	pid_t pid = tu_fork(s_blob_child, NULL);
	bm_cloud_t *cloud = NULL;
	bm_agent_t *a;
	bm_agent_stats_t st;

	ck_assert_int_ge(tu_wait_agent(s_dir, "map", true, 5000), 0);
	a = s_agent("scan", NULL);
	ck_assert_int_eq(bm_cloud_generate(5000, BM_CLOUD_XYZ_RGB, 7, &cloud), 0);
	ck_assert_int_eq(bm_agent_send_cloud(a, "map", "c0.ply", cloud, 5000), 0);
	ck_assert_int_eq(bm_agent_drain(a, 5000), 0);
	ck_assert_int_eq(tu_wait(pid, 10000), 0);
	bm_agent_stats(a, &st);
	ck_assert_uint_eq(st.blobs_sent, 1);
	ck_assert_uint_gt(st.blob_bytes_sent, 5000 * 15);
	bm_cloud_destroy(&cloud);
	bm_agent_destroy(&a);
}
END_TEST

static volatile int s_handled;

static int
s_count_and_stop(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	(void)m;
	(void)arg;
	s_handled++;
	/* Re-entering the loop from a handler is refused. */
	ck_assert_int_eq(bm_agent_step(a, 0), -EDEADLK);
	bm_agent_stop(a);
	return 0;
}

START_TEST(a_foreign_poll_loop_wakes_on_the_agents_items_and_a_handler_can_stop_the_run)
{
	bm_agent_t *a = s_agent("embedded", NULL);
	zmq_pollitem_t items[BM_AGENT_POLLITEMS_MAX];
	bm_client_t *c;
	bm_send_opts_t so = {.to = "embedded", .type = "poke"};
	int64_t t0;
	int n, t;

	ck_assert_int_eq(bm_agent_on_message(a, "poke", s_count_and_stop, NULL), 0);
	/* A step with nothing to do returns after its timeout. */
	t0 = bm_mono_ms();
	ck_assert_int_ge(bm_agent_step(a, 150), 0);
	ck_assert_int_ge(bm_mono_ms() - t0, 140);
	ck_assert_int_lt(bm_mono_ms() - t0, 1000);
	/* Another agent pokes us; the foreign loop wakes on our items. */
	c = tu_client(s_dir, "poker", NULL, HB);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(bm_client_send(c, &so, "x", 1, NULL), 0);
	t0 = bm_mono_ms();
	while (s_handled == 0 && bm_mono_ms() - t0 < 5000) {
		n = bm_agent_pollitems(a, items, BM_AGENT_POLLITEMS_MAX);
		t = bm_agent_timeout(a);
		ck_assert_int_ge(n, 1);
		ck_assert(t >= -1);
		ck_assert_int_ge(zmq_poll(items, n, t < 0 || t > 100 ? 100 : t), 0);
		ck_assert_int_ge(bm_agent_step(a, 0), 0);
	}
	ck_assert_int_eq(s_handled, 1);
	ck_assert(bm_agent_stopped(a));
	ck_assert_int_eq(bm_agent_run(a), 0); /* already stopped: returns at once */
	bm_client_destroy(&c);
	bm_agent_destroy(&a);
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("agent");
	TCase *tc = tcase_create("runtime");

	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, an_agent_with_a_name_alone_registers_runs_and_stops_cleanly_on_sigterm);
	tcase_add_test(tc, a_request_handlers_reply_reaches_the_requesters_callback);
	tcase_add_test(tc, a_request_nobody_answers_times_out_and_is_withdrawn_from_the_outbox);
	tcase_add_test(tc, reliable_sends_and_a_batch_reach_a_receiver_that_starts_late_and_is_killed_9);
	tcase_add_test(tc, a_reply_its_requester_no_longer_waits_for_is_withdrawn_not_dead_lettered);
	tcase_add_test(tc, a_broadcast_handler_gets_its_subtree_and_nothing_else);
	tcase_add_test(tc, a_point_cloud_reaches_the_blob_handler_intact_with_its_mesh_announcement);
	tcase_add_test(tc, a_foreign_poll_loop_wakes_on_the_agents_items_and_a_handler_can_stop_the_run);
	suite_add_tcase(s, tc);
	tc = tcase_create("shmlog");
	tcase_set_timeout(tc, 120);
	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_add_test(tc, log_readers_tethered_untethered_and_a_proxy_reader_see_the_stream_honestly);
	tcase_add_test(tc, a_log_publisher_killed_with_9_sends_its_readers_back_to_the_proxy_without_a_crash);
	tcase_add_test(tc, a_corrupt_log_sends_its_reader_back_to_the_proxy_with_every_broadcast_accounted);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(s_suite());
}

/*
 * test_load.c - beastd under many agents: 256 agents connected at once,
 * each sending to the next at a steady rate for a bounded time and ACKing
 * what it receives.  Asserts what a broker owes a crowd: every agent
 * registered, every message ACKed (nothing lost), no agent starved (each
 * one's deliveries near the mean) and beastd's memory bounded.  Prints the
 * figures (docs/security.md quotes them).
 *
 * Four forked processes run 64 agents each on one zmq context per process;
 * BM_LOAD_SECONDS (default 8) and BM_LOAD_RATE (messages/s per agent,
 * default 20) scale it.  Unless BEAST_DIRECT=0 (the suite's load) the
 * agents offer direct routes: each pair that talks gets a ring pair, and
 * the test also asserts that most messages took them, that no agent held
 * more routes than its cap, and that each agents' process stayed bounded.
 */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "testutil.h"

#define S_PROCS 4
#define S_PER_PROC 64
#define S_AGENTS (S_PROCS * S_PER_PROC)
#define S_HB 1000

typedef struct {
	uint32_t sent, acked, received;
	uint32_t direct;   /* messages it sent over a direct route */
	uint32_t routes;   /* its routes when it stopped sending */
	uint32_t hwm_kb;   /* its process' peak RSS (the same for its 64) */
} s_count_t;

static char *s_dir;
static pid_t s_beastd;
static int s_seconds, s_rate;

static long
s_env(const char *name, long dflt)
{
	const char *v = getenv(name);

	return v != NULL && atol(v) > 0 ? atol(v) : dflt;
}

static void
s_start(void)
{
	ck_assert(tu_broker_up(&s_dir, &s_beastd, S_HB));
	s_seconds = (int)s_env("BM_LOAD_SECONDS", 8);
	s_rate = (int)s_env("BM_LOAD_RATE", 20);
}

static void
s_stop(void)
{
	tu_broker_down(&s_dir, &s_beastd);
}

/* VmRSS or VmHWM of pid, in KiB; -1 if unreadable. */
static long
s_mem_kb(pid_t pid, const char *key)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL) {
		return -1;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, key, strlen(key)) == 0) {
			kb = atol(line + strlen(key) + 1);
		}
	}
	fclose(f);
	return kb;
}

typedef struct {
	int proc;     /* 0..S_PROCS-1: agents proc*64 .. proc*64+63 */
	int go_fd;    /* read end: a byte once everyone is registered */
	int ready_fd; /* write end: a byte once our agents are registered */
	int out_fd;   /* write end: our s_count_t[S_PER_PROC] at the end */
} s_proc_arg_t;

static int
s_agents(void *arg)
{
	s_proc_arg_t *p = arg;
	void *ctx = zmq_ctx_new();
	bm_client_t *c[S_PER_PROC] = {0};
	s_count_t n[S_PER_PROC];
	int64_t next[S_PER_PROC], t0, stop_at, deadline, gap_ms = 1000 / s_rate;
	char b;

	memset(n, 0, sizeof n);
	for (int i = 0; i < S_PER_PROC; i++) {
		char name[16];
		bm_client_opts_t o = {.dir = s_dir, .name = name, .heartbeat_ms = S_HB, .zmq_ctx = ctx,
		                      .connect_timeout_ms = 20000};

		snprintf(name, sizeof name, "load-%03d", p->proc * S_PER_PROC + i);
		if (bm_client_open(&o, &c[i]) < 0) {
			return 10;
		}
	}
	if (write(p->ready_fd, "r", 1) != 1 || read(p->go_fd, &b, 1) != 1) {
		return 11;
	}
	t0 = bm_mono_ms();
	stop_at = t0 + (int64_t)s_seconds * 1000;
	for (int i = 0; i < S_PER_PROC; i++) {
		next[i] = t0 + (i * gap_ms) / S_PER_PROC; /* spread the first sends */
	}
	/* Send at the rate until stop_at; then only receive until every
	 * agent's messages are ACKed (bounded). */
	deadline = stop_at + 20000;
	for (;;) {
		int64_t now = bm_mono_ms();
		bool pending = false;

		for (int i = 0; i < S_PER_PROC; i++) {
			int me = p->proc * S_PER_PROC + i;
			bm_event_t ev;

			if (now < stop_at && now >= next[i]) {
				char to[16], body[32];
				int len;

				snprintf(to, sizeof to, "load-%03d", (me + 1) % S_AGENTS);
				len = snprintf(body, sizeof body, "%d:%u", me, n[i].sent);
				if (bm_client_send(c[i], &(bm_send_opts_t){.to = to}, body, (size_t)len,
				                   NULL) == 0) {
					n[i].sent++;
				}
				next[i] += gap_ms;
			}
			while (bm_client_recv(c[i], 0, &ev) == 0) {
				if (ev.kind == BM_EV_MESSAGE) {
					n[i].received++;
					(void)bm_client_ack(c[i], ev.msg);
				} else if (ev.kind == BM_EV_ACK) {
					n[i].acked++;
				}
				bm_event_clear(&ev);
			}
			pending = pending || n[i].acked < n[i].sent;
		}
		if ((now >= stop_at && !pending) || now >= deadline) {
			break;
		}
		usleep(1000);
	}
	for (int i = 0; i < S_PER_PROC; i++) {
		bm_direct_stats_t ds;

		bm_client_direct_stats(c[i], &ds);
		n[i].routes = (uint32_t)ds.routes;
	}
	/* Our neighbours may still be waiting for our ACKs: keep answering
	 * for a moment before closing. */
	for (int64_t until = bm_mono_ms() + 1000; bm_mono_ms() < until;) {
		for (int i = 0; i < S_PER_PROC; i++) {
			bm_event_t ev;

			while (bm_client_recv(c[i], 0, &ev) == 0) {
				if (ev.kind == BM_EV_MESSAGE) {
					n[i].received++;
					(void)bm_client_ack(c[i], ev.msg);
				}
				bm_event_clear(&ev);
			}
		}
		usleep(2000);
	}
	for (int i = 0; i < S_PER_PROC; i++) {
		bm_direct_stats_t ds;

		bm_client_direct_stats(c[i], &ds);
		n[i].direct = (uint32_t)ds.sent;
		n[i].hwm_kb = (uint32_t)s_mem_kb(getpid(), "VmHWM:");
	}
	if (write(p->out_fd, n, sizeof n) != (ssize_t)sizeof n) {
		return 12;
	}
	for (int i = 0; i < S_PER_PROC; i++) {
		bm_client_destroy(&c[i]);
	}
	zmq_ctx_term(ctx);
	return 0;
}

START_TEST(beastd_serves_256_agents_at_a_steady_rate_none_starved_memory_bounded)
{
	s_proc_arg_t a[S_PROCS];
	pid_t kids[S_PROCS];
	int go[2], ready[2], out[2];
	s_count_t all[S_AGENTS];
	uint64_t sent = 0, acked = 0, received = 0, direct = 0;
	uint32_t routes_max = 0, kid_hwm = 0;
	const char *env_direct = getenv("BEAST_DIRECT");
	bool on = env_direct == NULL || strcmp(env_direct, "0") != 0;
	uint32_t rmin = UINT32_MAX, rmax = 0;
	long rss0, hwm;
	int64_t t0, secs;
	char b;

	ck_assert_int_eq(pipe(go), 0);
	ck_assert_int_eq(pipe(ready), 0);
	ck_assert_int_eq(pipe(out), 0);
	rss0 = s_mem_kb(s_beastd, "VmRSS:");
	/* Forked before this process has any thread. */
	for (int k = 0; k < S_PROCS; k++) {
		a[k] = (s_proc_arg_t){.proc = k, .go_fd = go[0], .ready_fd = ready[1], .out_fd = out[1]};
		kids[k] = tu_fork(s_agents, &a[k]);
		ck_assert_int_gt(kids[k], 0);
	}
	for (int k = 0; k < S_PROCS; k++) {
		ck_assert_int_eq(read(ready[0], &b, 1), 1);
	}
	ck_assert_int_eq(tu_stat(s_dir, "agents"), S_AGENTS);
	t0 = bm_mono_ms();
	for (int k = 0; k < S_PROCS; k++) {
		ck_assert_int_eq(write(go[1], "g", 1), 1);
	}
	/* Each child writes its counts once done (the pipe holds them all). */
	for (int k = 0; k < S_PROCS; k++) {
		s_count_t part[S_PER_PROC];
		ssize_t got = 0;

		while (got < (ssize_t)sizeof part) {
			ssize_t r = read(out[0], (char *)part + got, sizeof part - (size_t)got);

			ck_assert_int_gt(r, 0);
			got += r;
		}
		/* Children finish in any order; every check below is per agent
		 * or a sum, so the slot order does not matter. */
		memcpy(&all[k * S_PER_PROC], part, sizeof part);
	}
	secs = bm_mono_ms() - t0;
	hwm = s_mem_kb(s_beastd, "VmHWM:");
	for (int k = 0; k < S_PROCS; k++) {
		ck_assert_int_eq(tu_wait(kids[k], 10000), 0);
	}
	for (int i = 0; i < S_AGENTS; i++) {
		sent += all[i].sent;
		acked += all[i].acked;
		received += all[i].received;
		direct += all[i].direct;
		routes_max = all[i].routes > routes_max ? all[i].routes : routes_max;
		kid_hwm = all[i].hwm_kb > kid_hwm ? all[i].hwm_kb : kid_hwm;
		rmin = all[i].received < rmin ? all[i].received : rmin;
		rmax = all[i].received > rmax ? all[i].received : rmax;
		/* Every message this agent sent was ACKed: nothing lost. */
		ck_assert_uint_eq(all[i].acked, all[i].sent);
	}
	printf("load: %d agents, %llu messages in %.1f s (%.0f msgs/s routed), per agent "
	       "received min %u max %u mean %.0f; beastd RSS %ld KiB before, peak %ld KiB\n",
	       S_AGENTS, (unsigned long long)sent, (double)secs / 1000.0,
	       (double)sent * 1000.0 / (double)secs, rmin, rmax, (double)received / S_AGENTS, rss0,
	       hwm);
	printf("load: direct routes %s: %llu messages over them, at most %u routes per agent, "
	       "agents' processes peak RSS %u KiB (64 agents each)\n",
	       on ? "on" : "off", (unsigned long long)direct, routes_max, kid_hwm);
	ck_assert_uint_eq(received, sent);
	if (on) {
		/* After the first 8 messages of each pair: most go direct. */
		ck_assert_uint_gt(direct * 2, sent);
		/* Each agent talks to two neighbours: its cap is never near. */
		ck_assert_uint_le(routes_max, 2);
		/* 64 agents with their rings, sessions and journals. */
		ck_assert_uint_lt(kid_hwm, 256 * 1024);
	} else {
		ck_assert_uint_eq(direct, 0);
	}
	/* Each agent sent at the same rate: no one may get less than half the
	 * mean (a starved agent gets far less). */
	ck_assert_uint_ge((uint64_t)rmin * 2 * S_AGENTS, received);
	ck_assert_uint_gt(rmin, 0);
	/* Bounded: 256 sessions and their queues in well under 256 MiB. */
	ck_assert_int_gt(hwm, 0);
	ck_assert_int_lt(hwm, 256 * 1024);
	ck_assert_int_eq(tu_stat(s_dir, "malformed"), 0);
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("load");
	TCase *tc = tcase_create("crowd");

	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, beastd_serves_256_agents_at_a_steady_rate_none_starved_memory_bounded);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(s_suite());
}

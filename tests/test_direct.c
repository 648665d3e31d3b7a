/*
 * test_direct.c - direct routes (issue 18 part 1): two local agents that
 * both offer them exchange messages and ACKs over shared-memory rings
 * once beastd has introduced them; a peer scribbling on a ring ends the
 * route with BM_ECORRUPT and traffic falls back to beastd; kill -9 of
 * either side mid-stream loses nothing.  beastd runs as a child; agents
 * run in the test process or forked; every loop is bounded.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bm_agent.h"
#include "mesh_private.h"
#include "shm_private.h"
#include "testutil.h"

#define HB 200    /* heartbeat, ms */
#define N_STREAM 3000

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
	setenv("BEAST_DIRECT", "1", 1);
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
	unsetenv("BEAST_DIRECT");
	tu_rmrf(&s_dir);
	tu_rmrf(&s_state);
}

static bm_client_t *
s_client(const char *name, int direct)
{
	bm_client_opts_t o = {.dir = s_dir, .name = name, .heartbeat_ms = HB, .direct = direct};
	bm_client_t *c = NULL;

	ck_assert_int_eq(bm_client_open(&o, &c), 0);
	return c;
}

/* Reads what is waiting on c: ACKs each message (counted in *msgs), counts
 * ACK events in *acks. */
static void
s_drain(bm_client_t *c, int *msgs, int *acks)
{
	bm_event_t ev;

	for (int i = 0; i < 4096 && bm_client_recv(c, 0, &ev) == 0; i++) {
		if (ev.kind == BM_EV_MESSAGE) {
			ck_assert_int_eq(bm_client_ack(c, ev.msg), 0);
			if (msgs != NULL) {
				(*msgs)++;
			}
		} else if (ev.kind == BM_EV_ACK && acks != NULL) {
			(*acks)++;
		}
		bm_event_clear(&ev);
	}
	(void)bm_client_flush(c);
}

/* Sends one message from a, pumping both while a's route says BM_EFULL
 * (the fence of a route coming up is one beastd round trip). */
static void
s_send(bm_client_t *a, bm_client_t *b, const bm_send_opts_t *o, const void *body, size_t len)
{
	int rc = BM_EFULL;

	for (int k = 0; k < 10000 && rc == BM_EFULL; k++) {
		if ((rc = bm_client_send(a, o, body, len, NULL)) == BM_EFULL) {
			s_drain(b, NULL, NULL);
			s_drain(a, NULL, NULL);
			usleep(100);
		}
	}
	ck_assert_int_eq(rc, 0);
}

/* Sends n messages from a to b and pumps both until a has n ACKs. */
static void
s_exchange(bm_client_t *a, const char *to, bm_client_t *b, int n, int *ret_got)
{
	bm_send_opts_t o = {.to = to, .type = "t"};
	int acks = 0, got = 0;
	int64_t deadline = bm_mono_ms() + 10000;

	for (int i = 0; i < n; i++) {
		char body[32];
		int len = snprintf(body, sizeof body, "m%d", i);

		s_send(a, b, &o, body, (size_t)len);
		/* One at a time: the route comes up on the way. */
		while (acks <= i && bm_mono_ms() < deadline) {
			s_drain(b, &got, NULL);
			s_drain(a, NULL, &acks);
		}
	}
	ck_assert_int_eq(acks, n);
	if (ret_got != NULL) {
		*ret_got = got;
	}
}

START_TEST(two_clients_that_talk_are_introduced_and_exchange_messages_and_acks_directly)
{
	bm_client_t *a = s_client("a", 1), *b = s_client("b", 1), *old = s_client("old", -1);
	bm_direct_stats_t sa, sb, so;
	bm_agent_info_t *v = NULL;
	size_t n = 0;
	int got = 0;

	ck_assert_int_ge(bm_client_direct_fd(a), 0);
	ck_assert_int_eq(bm_client_direct_fd(old), -1);
	s_exchange(a, "b", b, 100, &got);
	ck_assert_int_eq(got, 100);
	bm_client_direct_stats(a, &sa);
	bm_client_direct_stats(b, &sb);
	ck_assert_int_eq(sa.routes, 1);
	ck_assert_int_eq(sa.opened, 1);
	ck_assert_int_gt(sa.sent, 50);      /* after the first eight or so */
	ck_assert_int_ge(sb.received, sa.sent);
	/* The reverse direction rides the same route. */
	s_exchange(b, "a", a, 20, NULL);
	bm_client_direct_stats(b, &sb);
	ck_assert_int_eq(sb.routes, 1);
	ck_assert_int_gt(sb.sent, 0);
	/* An agent without the feature keeps to beastd. */
	s_exchange(a, "old", old, 20, &got);
	ck_assert_int_eq(got, 20);
	bm_client_direct_stats(old, &so);
	ck_assert_int_eq(so.received, 0);
	bm_client_direct_stats(a, &sa);
	ck_assert_int_eq(sa.routes, 1);
	/* beastd shows the pair (reports arrive within a heartbeat). */
	for (int k = 0; k < 100; k++) {
		s_drain(a, NULL, NULL);
		s_drain(b, NULL, NULL);
		if (tu_stat(s_dir, "direct_msgs") >= (int64_t)sa.sent) {
			break;
		}
		usleep(20000);
	}
	ck_assert_int_ge(tu_stat(s_dir, "direct_msgs"), (int64_t)sa.sent);
	ck_assert_int_eq(tu_stat(s_dir, "direct_route_ends"), 2);
	ck_assert_int_eq(tu_stat(s_dir, "routes_introduced"), 1);
	ck_assert_int_eq(bm_client_list(old, 2000, &v, &n), 0);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].name, "a") == 0) {
			ck_assert_ptr_nonnull(strstr(v[i].direct, "b:"));
		}
	}
	free(v);
	bm_client_destroy(&old);
	bm_client_destroy(&b);
	bm_client_destroy(&a);
}
END_TEST

START_TEST(a_peer_scribbling_on_a_direct_ring_gives_ecorrupt_and_traffic_falls_back_to_beastd)
{
	bm_client_t *a = s_client("a", 1), *b = s_client("b", 1);
	bm_send_opts_t o = {.to = "a", .type = "t"};
	bm_direct_stats_t sa, sb;
	bm_route_t *r;
	uint8_t *base;
	size_t len = 0;
	int got = 0, acks = 0;
	int64_t deadline;

	s_exchange(b, "a", a, 30, NULL);
	bm_client_direct_stats(b, &sb);
	ck_assert_int_eq(sb.routes, 1);
	/* b turns hostile: right after a send, its ring (the one a reads)
	 * gets garbage over the records and a head far past the end. */
	r = bm__direct_route(bm__client_direct(b), "a");
	ck_assert_ptr_nonnull(r);
	base = bm__route_out_base(r, &len);
	ck_assert_ptr_nonnull(base);
	s_send(b, a, &o, "x", 1);
	memset(base + BM__RING_HDR_SIZE, 0xa5, len - BM__RING_HDR_SIZE);
	atomic_store(&((struct bm__ring_hdr *)(void *)base)->head, UINT64_C(1) << 40);
	deadline = bm_mono_ms() + 5000;
	do {
		s_drain(a, &got, NULL);
		bm_client_direct_stats(a, &sa);
	} while (sa.corrupt == 0 && bm_mono_ms() < deadline);
	ck_assert_int_eq(sa.corrupt, 1);
	ck_assert_int_eq(sa.routes, 0);
	/* b learns the route is gone (EOF) and sends through beastd (a bare
	 * client has no outbox: what met the dead ring is not resent). */
	got = 0;
	for (int i = 0; i < 20; i++) {
		s_send(b, a, &o, "y", 1);
		s_drain(b, NULL, &acks);
	}
	deadline = bm_mono_ms() + 5000;
	while (got < 19 && bm_mono_ms() < deadline) {
		s_drain(a, &got, NULL);
		s_drain(b, NULL, &acks);
	}
	ck_assert_int_ge(got, 19); /* the first may still meet the dead ring */
	/* a accepts no new route from b for a while (S_RETRY_MS). */
	bm_client_direct_stats(a, &sa);
	ck_assert_int_eq(sa.routes, 0);
	ck_assert_int_eq(sa.opened, 1);
	bm_client_destroy(&b);
	bm_client_destroy(&a);
}
END_TEST

START_TEST(an_idle_route_is_closed_and_the_next_messages_go_through_beastd_until_a_new_one)
{
	bm_client_t *a, *b;
	bm_direct_stats_t sa;
	int64_t deadline;
	int got = 0;

	setenv("BEAST_DIRECT_IDLE_MS", "300", 1); /* 10 s in earnest */
	a = s_client("a", 1);
	b = s_client("b", 1);
	s_exchange(a, "b", b, 20, NULL);
	bm_client_direct_stats(a, &sa);
	ck_assert_int_eq(sa.routes, 1);
	deadline = bm_mono_ms() + 5000;
	do {
		s_drain(a, NULL, NULL);
		s_drain(b, NULL, NULL);
		usleep(10000);
		bm_client_direct_stats(a, &sa);
	} while (sa.routes > 0 && bm_mono_ms() < deadline);
	ck_assert_int_eq(sa.routes, 0);
	ck_assert_int_eq(sa.closed, 1); /* closed by itself, or seen closed by b */
	/* Talking again: beastd first, then a new route. */
	s_exchange(a, "b", b, 20, &got);
	ck_assert_int_eq(got, 20);
	bm_client_direct_stats(a, &sa);
	ck_assert_int_eq(sa.opened, 2);
	bm_client_destroy(&b);
	bm_client_destroy(&a);
	unsetenv("BEAST_DIRECT_IDLE_MS");
}
END_TEST

START_TEST(an_agent_holds_at_most_16_routes_and_talks_to_the_17th_through_beastd)
{
	enum { N = 17 };
	bm_client_t *a = s_client("hub", 1), *b[N];
	bm_direct_stats_t sa, sb;
	int got;

	for (int i = 0; i < N; i++) {
		char name[16];

		snprintf(name, sizeof name, "spoke%02d", i);
		b[i] = s_client(name, 1);
	}
	for (int i = 0; i < N; i++) {
		char name[16];

		snprintf(name, sizeof name, "spoke%02d", i);
		got = 0;
		s_exchange(a, name, b[i], 16, &got);
		ck_assert_int_eq(got, 16);
	}
	bm_client_direct_stats(a, &sa);
	ck_assert_int_eq(sa.routes, 16);
	ck_assert_int_eq(sa.opened, 16);
	bm_client_direct_stats(b[N - 1], &sb);
	ck_assert_int_eq(sb.opened, 0); /* the 17th: beastd only */
	ck_assert_int_eq(sb.received, 0);
	for (int i = 0; i < N; i++) {
		bm_client_destroy(&b[i]);
	}
	bm_client_destroy(&a);
}
END_TEST

/* ---- agents across kill -9 ---- */

static volatile sig_atomic_t s_child_stop;

static void
s_on_term(int sig)
{
	(void)sig;
	s_child_stop = 1;
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
	const char *file;   /* rx: append bodies there */
	const char *to;     /* tx: send N_STREAM messages there, then drain */
	bool resume;        /* tx: only drain what the journal holds */
	const char *ready;  /* created once the agent is up, or NULL */
} s_child_t;

static int
s_child(void *arg)
{
	const s_child_t *c = arg;
	bm_agent_opts_t o = {.name = c->name, .dir = s_dir, .heartbeat_ms = HB,
	                     .stop = &s_child_stop, .connect_timeout_ms = 10000,
	                     .ack_timeout_ms = 1000};
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
	if (c->file != NULL) {
		bm_agent_on_message(a, NULL, s_append, (void *)c->file);
		rc = bm_agent_run(a);
	} else {
		for (int i = 0; !c->resume && i < N_STREAM && !s_child_stop; i++) {
			char b[16];

			snprintf(b, sizeof b, "%d", i);
			while ((rc = bm_agent_send(a, c->to, NULL, b, strlen(b), NULL)) == BM_EFULL) {
				(void)bm_agent_step(a, 1);
			}
			if (rc < 0) {
				return 12;
			}
			if (i % 8 == 7) {
				(void)bm_agent_step(a, 0);
			}
		}
		rc = bm_agent_drain(a, 60000);
	}
	bm_agent_destroy(&a);
	return rc == 0 ? 0 : 11;
}

/* Lines of file: every value 0..N_STREAM-1 present?  Returns how many
 * distinct; *ret_dups counts repeats. */
static int s_max; /* the largest value s_count saw */

static int
s_count(const char *file, int *ret_dups)
{
	static bool seen[N_STREAM];
	char line[64];
	int n = 0;
	FILE *f = fopen(file, "r");

	memset(seen, 0, sizeof seen);
	*ret_dups = 0;
	s_max = -1;
	if (f == NULL) {
		return 0;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		int v = atoi(line);

		ck_assert(v >= 0 && v < N_STREAM);
		s_max = v > s_max ? v : s_max;
		if (seen[v]) {
			(*ret_dups)++;
		} else {
			seen[v] = true;
			n++;
		}
	}
	fclose(f);
	return n;
}

static int
s_count_line(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	return s_append(a, m, arg);
}

START_TEST(kill_9_of_the_receiver_mid_stream_on_a_direct_route_loses_nothing)
{
	char file[512], ready[512];
	s_child_t c = {.name = "rx", .file = file, .ready = ready};
	bm_agent_opts_t o = {.name = "tx", .dir = s_dir, .heartbeat_ms = HB, .ack_timeout_ms = 1000};
	bm_direct_stats_t st;
	bm_agent_t *a = NULL;
	tu_held_t first, second;
	struct stat sb;
	int dups, i = 0;
	pid_t pid;

	snprintf(file, sizeof file, "%s/rx.out", s_state);
	snprintf(ready, sizeof ready, "%s/rx.ready", s_state);
	first = tu_fork_held(s_child, &c);
	second = tu_fork_held(s_child, &c);
	pid = tu_release(&first);
	ck_assert_int_ge(tu_wait_agent(s_dir, "rx", true, 15000), 0);
	ck_assert_int_eq(bm_agent_open(&o, &a), 0);
	/* Stream until a third went over the route, then kill rx. */
	for (int k = 0; k < 200000; k++) {
		char b[16];

		bm_client_direct_stats(bm_agent_client(a), &st);
		if (st.sent > N_STREAM / 3 || i == N_STREAM) {
			break;
		}
		snprintf(b, sizeof b, "%d", i);
		if (bm_agent_send(a, "rx", NULL, b, strlen(b), NULL) == 0) {
			i++;
		}
		(void)bm_agent_step(a, 0);
	}
	ck_assert_int_gt(st.sent, 0);
	tu_kill9(pid);
	for (; i < N_STREAM; i++) {
		char b[16];

		snprintf(b, sizeof b, "%d", i);
		while (bm_agent_send(a, "rx", NULL, b, strlen(b), NULL) == BM_EFULL) {
			(void)bm_agent_step(a, 1);
		}
		if (i % 8 == 7) {
			(void)bm_agent_step(a, 0);
		}
	}
	unlink(ready);
	pid = tu_release(&second);
	for (int k = 0; k < 1000 && stat(ready, &sb) != 0; k++) {
		usleep(10000);
	}
	ck_assert_int_eq(bm_agent_drain(a, 60000), 0);
	ck_assert_int_eq(tu_term(pid, 5000), 0);
	ck_assert_int_eq(s_count(file, &dups), N_STREAM);
	bm_client_direct_stats(bm_agent_client(a), &st);
	fprintf(stderr, "receiver killed: %llu sent directly, %d duplicate handler runs\n",
	        (unsigned long long)st.sent, dups);
	bm_agent_destroy(&a);
}
END_TEST

START_TEST(kill_9_of_the_sender_mid_stream_on_a_direct_route_loses_nothing)
{
	char file[512];
	s_child_t c1 = {.name = "tx", .to = "rx"}, c2 = {.name = "tx", .to = "rx", .resume = true};
	bm_agent_opts_t o = {.name = "rx", .dir = s_dir, .heartbeat_ms = HB, .ack_timeout_ms = 1000};
	bm_direct_stats_t st;
	bm_agent_t *a = NULL;
	tu_held_t first, second;
	int dups;
	pid_t pid;

	snprintf(file, sizeof file, "%s/rx.out", s_state);
	first = tu_fork_held(s_child, &c1);
	second = tu_fork_held(s_child, &c2);
	ck_assert_int_eq(bm_agent_open(&o, &a), 0);
	bm_agent_on_message(a, NULL, s_count_line, file);
	pid = tu_release(&first);
	for (int k = 0; k < 100000; k++) {
		bm_client_direct_stats(bm_agent_client(a), &st);
		if (st.received > N_STREAM / 4) {
			break;
		}
		(void)bm_agent_step(a, 5);
	}
	ck_assert_int_gt(st.received, 0);
	tu_kill9(pid);
	pid = tu_release(&second);
	/* The sender stores its messages in order before it sends them, so
	 * every value up to the largest that arrived was stored: all of them
	 * must arrive (resent by its next incarnation), none twice over. */
	{
		int64_t deadline = bm_mono_ms() + 60000;
		int status = -1;

		/* The resumed sender exits once everything it stored is ACKed. */
		while (bm_mono_ms() < deadline && waitpid(pid, &status, WNOHANG) != pid) {
			for (int k = 0; k < 20; k++) {
				(void)bm_agent_step(a, 2);
			}
			status = -1;
		}
		if (status == -1) {
			tu_kill9(pid);
		}
		ck_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	for (int k = 0; k < 100; k++) {
		(void)bm_agent_step(a, 5);
	}
	ck_assert_int_gt(s_count(file, &dups), N_STREAM / 4);
	ck_assert_int_eq(s_count(file, &dups), s_max + 1);
	fprintf(stderr, "sender killed: %llu received directly, %d duplicate handler runs\n",
	        (unsigned long long)st.received, dups);
	bm_agent_destroy(&a);
}
END_TEST

/* BM_TEST_ONLY=WORD runs only the tests whose names contain WORD. */
#define S_ADD(tc, t)                                                          \
	if (getenv("BM_TEST_ONLY") == NULL || strstr(#t, getenv("BM_TEST_ONLY"))) { \
		tcase_add_test(tc, t);                                        \
	}

static Suite *
s_suite(void)
{
	Suite *s = suite_create("direct");
	TCase *tc = tcase_create("routes");

	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 120);
	S_ADD(tc, two_clients_that_talk_are_introduced_and_exchange_messages_and_acks_directly);
	S_ADD(tc, a_peer_scribbling_on_a_direct_ring_gives_ecorrupt_and_traffic_falls_back_to_beastd);
	S_ADD(tc, an_idle_route_is_closed_and_the_next_messages_go_through_beastd_until_a_new_one);
	S_ADD(tc, an_agent_holds_at_most_16_routes_and_talks_to_the_17th_through_beastd);
	S_ADD(tc, kill_9_of_the_receiver_mid_stream_on_a_direct_route_loses_nothing);
	S_ADD(tc, kill_9_of_the_sender_mid_stream_on_a_direct_route_loses_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(s_suite());
}

/*
 * test_proxy.c - broadcast: topic helpers, then the proxy inside a real
 * beastd child with publishers and subscribers in forked processes, real
 * ipc sockets, kill -9, overload and garbage.
 *
 * Synchronisation is by handshake only: a subscriber is ready when its
 * sync marker (BM_BCAST_SYNC) has arrived, and tells the parent through a
 * pipe; the parent publishes only then.  Every wait is bounded.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bm_proxy.h"
#include "proxy_private.h"
#include "shm_private.h"
#include "testutil.h"

#define HB 200

static char *s_dir;
static pid_t s_beastd;

static void
s_start(void)
{
	ck_assert(tu_broker_up(&s_dir, &s_beastd, HB));
}

static void
s_stop(void)
{
	tu_broker_down(&s_dir, &s_beastd);
}

/* ---- small helpers ---- */

static bm_pub_t *
s_pub(const char *name)
{
	bm_pub_opts_t o = {.dir = s_dir, .name = name};
	bm_pub_t *p = NULL;

	return bm_pub_open(&o, &p) == 0 ? p : NULL;
}

/* Publishes, retrying while the proxy pushes back (bounded). */
static int
s_send(bm_pub_t *p, const char *topic, const void *body, size_t len)
{
	int64_t deadline = bm_mono_ms() + 10000;
	int rc;

	while ((rc = bm_pub_send(p, topic, body, len)) == BM_EFULL && bm_mono_ms() < deadline) {
		zmq_pollitem_t it = {.socket = bm_pub_socket(p), .events = ZMQ_POLLOUT};

		zmq_poll(&it, 1, 20);
	}
	return rc;
}

/* Opens a subscriber on prefixes and waits for all their sync markers;
 * messages arriving before (LVC replays) go to *replays when not NULL. */
static bm_sub_t *
s_sub(const char *const *prefixes, int n, bool no_lvc, int hwm, int *replays)
{
	bm_sub_opts_t o = {.dir = s_dir, .no_lvc = no_lvc, .hwm = hwm, .name = "tester"};
	bm_sub_t *s = NULL;
	int synced = 0;
	int64_t deadline = bm_mono_ms() + 5000;

	if (bm_sub_open(&o, &s) < 0) {
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		if (bm_sub_subscribe(s, prefixes[i]) < 0) {
			bm_sub_destroy(&s);
			return NULL;
		}
	}
	while (synced < n && bm_mono_ms() < deadline) {
		bm_bcast_t m = {0};

		if (bm_sub_recv(s, 100, &m) == 0) {
			if (m.kind == BM_BCAST_SYNC) {
				synced++;
			} else if (replays != NULL) {
				(*replays)++;
			}
			bm_bcast_clear(&m);
		}
	}
	if (synced < n) {
		bm_sub_destroy(&s);
	}
	return s;
}

static void
s_signal(int fd)
{
	char c = 1;

	(void)!write(fd, &c, 1);
}

static bool
s_await(int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char c;

	return poll(&p, 1, timeout_ms) == 1 && read(fd, &c, 1) == 1;
}

/* ---- topics ---- */

START_TEST(topic_helpers_build_normalise_and_split_thought_paths)
{
	char t[BM_TOPIC_MAX + 1];
	const uint32_t path[] = {2, 5};
	const char *segs[BM_TOPIC_DEPTH_MAX];
	size_t lens[BM_TOPIC_DEPTH_MAX];
	const char *const parts[] = {"tot", "7", "2"};

	ck_assert_int_eq(bm_topic_tot(t, sizeof t, "7", path, 2), 10);
	ck_assert_str_eq(t, "tot/7/2/5/");
	ck_assert_int_eq(bm_topic_tot(t, sizeof t, "7", NULL, 0), 6);
	ck_assert_str_eq(t, "tot/7/");
	ck_assert_int_eq(bm_topic_build(t, sizeof t, parts, 3), 8);
	ck_assert_str_eq(t, "tot/7/2/");
	ck_assert_int_eq(bm_topic_normalize("tot/7/2", false, t, sizeof t), 8);
	ck_assert_str_eq(t, "tot/7/2/");
	ck_assert_int_eq(bm_topic_normalize("tot/7/2/", false, t, sizeof t), 8);
	ck_assert_int_eq(bm_topic_normalize("", true, t, sizeof t), 0);
	ck_assert_int_eq(bm_topic_split("tot/7/23/", 9, segs, lens, BM_TOPIC_DEPTH_MAX), 3);
	ck_assert_int_eq((int)lens[2], 2);
	ck_assert_int_eq(memcmp(segs[2], "23", 2), 0);
	ck_assert(bm_topic_matches("tot/7/2/", "tot/7/2/5/"));
	ck_assert(bm_topic_matches("tot/7/2/", "tot/7/2/"));
	ck_assert(!bm_topic_matches("tot/7/2/", "tot/7/23/"));
	ck_assert(bm_topic_matches("", "anything/"));
	ck_assert_int_eq(bm_topic_normalize("notes/agent-1/log", false, t, sizeof t), 18);
}
END_TEST

START_TEST(topic_check_refuses_empty_oversized_and_too_deep_paths)
{
	char t[BM_TOPIC_MAX + 1], seg[BM_TOPIC_SEG_MAX + 2], deep[80] = "";
	const char *const empty_seg[] = {"tot", "", "2"};

	ck_assert_int_eq(bm_topic_check("tot//2/", 7, false), BM_EBADNAME);
	ck_assert_int_eq(bm_topic_check("tot/7/2", 7, false), BM_EBADNAME);
	ck_assert_int_eq(bm_topic_check("/tot/", 5, false), BM_EBADNAME);
	ck_assert_int_eq(bm_topic_check("", 0, false), BM_EBADNAME);
	ck_assert_int_eq(bm_topic_check("", 0, true), 0);
	ck_assert_int_eq(bm_topic_check("to t/", 5, false), BM_EBADNAME);
	ck_assert_int_eq(bm_topic_check("t\x01/", 3, false), BM_EBADNAME);
	ck_assert_int_eq(bm_topic_normalize("tot//2", false, t, sizeof t), BM_EBADNAME);
	ck_assert_int_eq(bm_topic_normalize("", false, t, sizeof t), BM_EBADNAME);
	ck_assert_int_eq(bm_topic_build(t, sizeof t, empty_seg, 3), BM_EBADNAME);
	memset(seg, 'a', BM_TOPIC_SEG_MAX + 1);
	seg[BM_TOPIC_SEG_MAX + 1] = '\0';
	ck_assert_int_eq(bm_topic_normalize(seg, false, t, sizeof t), BM_EBADNAME);
	seg[BM_TOPIC_SEG_MAX] = '\0';
	ck_assert_int_eq(bm_topic_normalize(seg, false, t, sizeof t), BM_TOPIC_SEG_MAX + 1);
	for (int i = 0; i <= BM_TOPIC_DEPTH_MAX; i++) {
		strcat(deep, "a/");
	}
	ck_assert_int_eq(bm_topic_check(deep, strlen(deep), false), BM_EBADNAME);
	deep[2 * BM_TOPIC_DEPTH_MAX] = '\0';
	ck_assert_int_eq(bm_topic_check(deep, strlen(deep), false), 0);
	ck_assert_int_eq(bm_topic_normalize("tot/7", false, t, 4), -ENOSPC);
}
END_TEST

/* ---- subtree semantics ---- */

START_TEST(a_subtree_subscription_never_receives_a_sibling_sharing_its_bytes)
{
	const char *const pre[] = {"tot/7/2"};
	const char *const topics[] = {"tot/7/2", "tot/7/23", "tot/7/2/5", "tot/7/20/1",
	                              "tot/70/2", "tot/7/2/9/1", "other/7/2"};
	const bool want[] = {true, false, true, false, false, true, false};
	bm_sub_t *s = s_sub(pre, 1, true, 0, NULL);
	bm_pub_t *p = s_pub("brancher");
	int got = 0, expect = 0;
	int64_t deadline = bm_mono_ms() + 5000;

	ck_assert_ptr_nonnull(s);
	ck_assert_ptr_nonnull(p);
	for (int i = 0; i < 7; i++) {
		ck_assert_int_eq(s_send(p, topics[i], topics[i], strlen(topics[i])), 0);
		expect += want[i];
	}
	ck_assert_int_eq(s_send(p, "tot/7/2/end", "end", 3), 0);
	for (;;) {
		bm_bcast_t m = {0};
		char t[BM_TOPIC_MAX + 1];

		ck_assert_int_lt(bm_mono_ms(), deadline);
		if (bm_sub_recv(s, 100, &m) < 0) {
			continue;
		}
		ck_assert_int_eq(m.kind, BM_BCAST_MSG);
		ck_assert(bm_topic_matches("tot/7/2/", m.topic));
		ck_assert_str_eq(m.from, "brancher");
		if (strcmp(m.topic, "tot/7/2/end/") == 0) {
			bm_bcast_clear(&m);
			break;
		}
		/* The body is the topic as published, without its '/'. */
		snprintf(t, sizeof t, "%.*s/", (int)bm_bcast_size(&m), (const char *)bm_bcast_data(&m));
		ck_assert_str_eq(t, m.topic);
		got++;
		bm_bcast_clear(&m);
	}
	ck_assert_int_eq(got, expect);
	bm_pub_destroy(&p);
	bm_sub_destroy(&s);
}
END_TEST

/* ---- fan-out without loss ---- */

#define S_FAN_SUBS 8
#define S_FAN_MSGS 100000

typedef struct {
	int ready_fd;   /* write 1 byte when synced */
	long count;     /* messages to expect */
} s_fan_arg_t;

static int
s_fan_sub(void *arg)
{
	s_fan_arg_t *a = arg;
	const char *const pre[] = {"tot/fan"};
	bm_sub_t *s = s_sub(pre, 1, true, 0, NULL);
	int64_t deadline = bm_mono_ms() + 60000;
	uint64_t expect = 0;
	bm_sub_stats_t st;

	if (s == NULL) {
		return 10;
	}
	s_signal(a->ready_fd);
	while ((long)expect < a->count && bm_mono_ms() < deadline) {
		bm_bcast_t m = {0};
		uint64_t v;

		if (bm_sub_recv(s, 100, &m) < 0) {
			continue;
		}
		if (m.kind != BM_BCAST_MSG || bm_bcast_size(&m) < sizeof v) {
			return 11;
		}
		memcpy(&v, bm_bcast_data(&m), sizeof v);
		bm_bcast_clear(&m);
		if (v != expect) {
			return 12; /* lost, duplicated or reordered */
		}
		expect++;
	}
	bm_sub_stats(s, &st);
	bm_sub_destroy(&s);
	if ((long)expect != a->count) {
		return 13;
	}
	return st.gaps == 0 && st.received == (uint64_t)a->count ? 0 : 14;
}

START_TEST(eight_subscribers_each_get_100000_messages_with_zero_gaps)
{
	int fds[2];
	pid_t kids[S_FAN_SUBS];
	s_fan_arg_t a = {.count = S_FAN_MSGS};
	bm_pub_t *p;
	uint8_t body[32] = {0};
	int64_t t0, deadline;

	ck_assert_int_eq(pipe(fds), 0);
	a.ready_fd = fds[1];
	for (int i = 0; i < S_FAN_SUBS; i++) {
		kids[i] = tu_fork(s_fan_sub, &a);
		ck_assert_int_gt(kids[i], 0);
	}
	for (int i = 0; i < S_FAN_SUBS; i++) {
		ck_assert(s_await(fds[0], 10000));
	}
	p = s_pub("fan");
	ck_assert_ptr_nonnull(p);
	/* A moderate rate: about 100,000 messages a second, in bursts of 1000
	 * per 10 ms, so eight readers sharing two cores keep up. */
	t0 = bm_mono_ms();
	for (uint64_t i = 0; i < S_FAN_MSGS; i++) {
		memcpy(body, &i, sizeof i);
		ck_assert_int_eq(s_send(p, "tot/fan/1", body, sizeof body), 0);
		if (i % 1000 == 999) {
			int64_t due = t0 + (int64_t)(i + 1) / 100;

			while (bm_mono_ms() < due) {
				zmq_poll(NULL, 0, 1);
			}
		}
	}
	bm_pub_destroy(&p);
	for (int i = 0; i < S_FAN_SUBS; i++) {
		ck_assert_int_eq(tu_wait(kids[i], 60000), 0);
	}
	close(fds[0]);
	close(fds[1]);
	/* Each subscriber reported its totals on the way out. */
	deadline = bm_mono_ms() + 5000;
	while (tu_stat(s_dir, "bcast_sub_received") < (int64_t)S_FAN_SUBS * S_FAN_MSGS &&
	       bm_mono_ms() < deadline) {
		zmq_poll(NULL, 0, 20);
	}
	ck_assert_int_eq(tu_stat(s_dir, "bcast_sub_received"), (int64_t)S_FAN_SUBS * S_FAN_MSGS);
	ck_assert_int_eq(tu_stat(s_dir, "bcast_sub_gaps"), 0);
	ck_assert_int_ge(tu_stat(s_dir, "bcast_out"), S_FAN_MSGS);
}
END_TEST

/* ---- overload: losses are counted exactly ---- */

#define S_OVER_MSGS 250000

typedef struct {
	int ready_fd;   /* child -> parent: synced */
	int go_fd;      /* parent -> child: start reading */
	int result_fd;  /* child -> parent: counts */
} s_over_arg_t;

typedef struct {
	uint64_t received;  /* data messages received */
	uint64_t missing;   /* data indexes missing inside [first, last] */
	uint64_t gaps;      /* what bm_sub counted */
	uint64_t first;     /* first index seen */
} s_over_res_t;

static int
s_over_sub(void *arg)
{
	s_over_arg_t *a = arg;
	const char *const pre[] = {"tot/over"};
	/* A small queue on our side; the proxy's stays at its default. */
	bm_sub_t *s = s_sub(pre, 1, true, 1000, NULL);
	int64_t deadline;
	uint8_t *seen = calloc(S_OVER_MSGS + 1, 1);
	s_over_res_t r = {.first = UINT64_MAX};
	uint64_t last = 0;
	bm_sub_stats_t st;

	if (s == NULL || seen == NULL) {
		return 10;
	}
	s_signal(a->ready_fd);
	/* Deliberately not reading until the publisher is done: that is
	 * the overload. */
	if (!s_await(a->go_fd, 60000)) {
		return 11;
	}
	deadline = bm_mono_ms() + 60000;
	while (bm_mono_ms() < deadline) {
		bm_bcast_t m = {0};
		uint64_t v;

		if (bm_sub_recv(s, 100, &m) < 0) {
			continue;
		}
		memcpy(&v, bm_bcast_data(&m), sizeof v);
		bm_bcast_clear(&m);
		if (v >= S_OVER_MSGS) {
			last = v;
			break; /* an end marker made it */
		}
		if (seen[v]) {
			return 12;
		}
		seen[v] = 1;
		r.received++;
		r.first = v < r.first ? v : r.first;
	}
	if (last == 0 || r.first == UINT64_MAX) {
		return 13;
	}
	/* Everything between the first message and the end marker that did
	 * not arrive was lost; end markers before `last` count too. */
	for (uint64_t i = r.first; i < S_OVER_MSGS; i++) {
		r.missing += !seen[i];
	}
	r.missing += last - S_OVER_MSGS;
	bm_sub_stats(s, &st);
	r.gaps = st.gaps;
	bm_sub_destroy(&s);
	free(seen);
	return write(a->result_fd, &r, sizeof r) == sizeof r ? 0 : 14;
}

START_TEST(under_overload_the_counted_gaps_equal_the_missing_messages_exactly)
{
	int ready[2], go[2], res[2];
	s_over_arg_t a;
	s_over_res_t r = {0};
	pid_t kid;
	bm_pub_t *p;
	int64_t deadline;

	ck_assert_int_eq(pipe(ready), 0);
	ck_assert_int_eq(pipe(go), 0);
	ck_assert_int_eq(pipe(res), 0);
	a = (s_over_arg_t){.ready_fd = ready[1], .go_fd = go[0], .result_fd = res[1]};
	kid = tu_fork(s_over_sub, &a);
	ck_assert_int_gt(kid, 0);
	ck_assert(s_await(ready[0], 10000));
	p = s_pub("flood");
	ck_assert_ptr_nonnull(p);
	for (uint64_t i = 0; i < S_OVER_MSGS; i++) {
		ck_assert_int_eq(s_send(p, "tot/over/x", &i, sizeof i), 0);
	}
	s_signal(go[1]);
	/* End markers on the same topic until the reader has one: whatever
	 * of the flood is still queued ahead of them arrives first. */
	deadline = bm_mono_ms() + 60000;
	for (uint64_t end = S_OVER_MSGS; bm_mono_ms() < deadline; end++) {
		struct pollfd pf = {.fd = res[0], .events = POLLIN};

		ck_assert_int_eq(s_send(p, "tot/over/x", &end, sizeof end), 0);
		if (poll(&pf, 1, 20) == 1) {
			break;
		}
	}
	ck_assert_int_eq(read(res[0], &r, sizeof r), (ssize_t)sizeof r);
	ck_assert_int_eq(tu_wait(kid, 10000), 0);
	bm_pub_destroy(&p);
	for (int i = 0; i < 2; i++) {
		close(ready[i]);
		close(go[i]);
		close(res[i]);
	}
	ck_assert_msg(r.missing > 0, "the flood did not overflow anything (%llu received)",
	              (unsigned long long)r.received);
	ck_assert_int_eq(r.gaps, r.missing);
	ck_assert_int_eq(r.first, 0);
}
END_TEST

/* ---- last-value cache ---- */

START_TEST(a_late_joiner_gets_the_latest_message_of_each_topic_under_its_prefix)
{
	const char *const pre[] = {"tot/1"};
	bm_pub_t *p = s_pub("early");
	bm_sub_opts_t o = {.dir = s_dir};
	bm_sub_t *s = NULL;
	char got_a[16] = "", got_b[16] = "";
	int replays = 0, synced = 0;
	int64_t deadline = bm_mono_ms() + 5000;

	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(s_send(p, "tot/1/a", "a1", 2), 0);
	ck_assert_int_eq(s_send(p, "tot/1/a", "a2", 2), 0);
	ck_assert_int_eq(s_send(p, "tot/1/b/c", "b1", 2), 0);
	ck_assert_int_eq(s_send(p, "tot/10", "no", 2), 0);
	ck_assert_int_eq(s_send(p, "tot/2", "no", 2), 0);
	/* A sync-only subscriber proves the proxy has all five. */
	bm_sub_destroy(&(bm_sub_t *){s_sub((const char *const[]){""}, 1, true, 0, NULL)});
	ck_assert_int_eq(bm_sub_open(&o, &s), 0);
	ck_assert_int_eq(bm_sub_subscribe(s, pre[0]), 0);
	while (synced == 0) {
		bm_bcast_t m = {0};

		ck_assert_int_lt(bm_mono_ms(), deadline);
		if (bm_sub_recv(s, 100, &m) < 0) {
			continue;
		}
		if (m.kind == BM_BCAST_SYNC) {
			ck_assert_str_eq(m.topic, "tot/1/");
			synced++;
		} else {
			char *dst = strcmp(m.topic, "tot/1/a/") == 0 ? got_a : got_b;

			ck_assert(m.replay);
			ck_assert(strcmp(m.topic, "tot/1/a/") == 0 || strcmp(m.topic, "tot/1/b/c/") == 0);
			ck_assert_str_eq(m.from, "early");
			snprintf(dst, 16, "%.*s", (int)bm_bcast_size(&m), (const char *)bm_bcast_data(&m));
			replays++;
		}
		bm_bcast_clear(&m);
	}
	ck_assert_int_eq(replays, 2);
	ck_assert_str_eq(got_a, "a2");
	ck_assert_str_eq(got_b, "b1");
	/* Live traffic follows the replay without a gap or a duplicate. */
	ck_assert_int_eq(s_send(p, "tot/1/a", "a3", 2), 0);
	for (;;) {
		bm_bcast_t m = {0};

		ck_assert_int_lt(bm_mono_ms(), deadline);
		if (bm_sub_recv(s, 100, &m) == 0) {
			ck_assert(!m.replay);
			ck_assert_int_eq(m.tseq, 3);
			ck_assert_int_eq(m.gap, 0);
			bm_bcast_clear(&m);
			break;
		}
	}
	bm_sub_destroy(&s);
	/* Without the LVC: only the sync marker. */
	replays = 0;
	s = s_sub(pre, 1, true, 0, &replays);
	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(replays, 0);
	bm_sub_destroy(&s);
	ck_assert_int_ge(tu_stat(s_dir, "bcast_lvc_replayed"), 2);
	ck_assert_int_eq(tu_stat(s_dir, "bcast_lvc_topics"), 4);
	bm_pub_destroy(&p);
}
END_TEST

/* Byte i of a body of size n: a pattern a misplaced offset cannot match. */
static uint8_t
s_pat(size_t i, size_t n)
{
	return (uint8_t)((i * 131u + n * 7u) >> 3);
}

static bool
s_body_ok(bm_bcast_t *m, size_t n)
{
	const uint8_t *d = bm_bcast_data(m);

	if (bm_bcast_size(m) != n) {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (d[i] != s_pat(i, n)) {
			return false;
		}
	}
	return true;
}

START_TEST(bodies_inline_or_in_a_frame_of_their_own_arrive_intact_live_and_replayed)
{
	/* up to 64 KiB a broadcast is one frame; past it the body has its own */
	static const size_t sizes[] = {0, 1, 64 << 10, (64 << 10) + 1, 1 << 20};
	enum { N = sizeof sizes / sizeof sizes[0] };
	const char *const pre[] = {"tot/big"};
	bm_sub_t *live = s_sub(pre, 1, true, 0, NULL), *late;
	bm_pub_t *p = s_pub("sizes");
	bool seen[N] = {false};
	int replays = 0, got = 0;
	int64_t deadline = bm_mono_ms() + 10000;

	ck_assert_ptr_nonnull(live);
	ck_assert_ptr_nonnull(p);
	for (int k = 0; k < N; k++) {
		char topic[32];
		zmq_msg_t f;

		snprintf(topic, sizeof topic, "tot/big/%d", k);
		ck_assert_int_eq(zmq_msg_init_size(&f, sizes[k]), 0);
		for (size_t i = 0; i < sizes[k]; i++) {
			((uint8_t *)zmq_msg_data(&f))[i] = s_pat(i, sizes[k]);
		}
		if (k % 2 == 0) {
			ck_assert_int_eq(bm_pub_send_frame(p, topic, &f), 0);
		} else {
			ck_assert_int_eq(s_send(p, topic, zmq_msg_data(&f), sizes[k]), 0);
		}
		zmq_msg_close(&f);
	}
	while (got < N) {
		bm_bcast_t m = {0};
		int k;

		ck_assert_int_lt(bm_mono_ms(), deadline);
		if (bm_sub_recv(live, 100, &m) < 0) {
			continue;
		}
		ck_assert_int_eq(sscanf(m.topic, "tot/big/%d/", &k), 1);
		ck_assert(k >= 0 && k < N && !seen[k]);
		ck_assert_msg(s_body_ok(&m, sizes[k]), "live body %d (%zu bytes) differs", k, sizes[k]);
		seen[k] = true;
		got++;
		bm_bcast_clear(&m);
	}
	/* The cache holds each as published, one frame or two. */
	{
		bm_sub_opts_t o = {.dir = s_dir};
		bool synced = false;

		ck_assert_int_eq(bm_sub_open(&o, &late), 0);
		ck_assert_int_eq(bm_sub_subscribe(late, pre[0]), 0);
		memset(seen, 0, sizeof seen);
		while (!synced) {
			bm_bcast_t m = {0};
			int k;

			ck_assert_int_lt(bm_mono_ms(), deadline);
			if (bm_sub_recv(late, 100, &m) < 0) {
				continue;
			}
			if (m.kind == BM_BCAST_SYNC) {
				synced = true;
			} else {
				ck_assert(m.replay);
				ck_assert_int_eq(sscanf(m.topic, "tot/big/%d/", &k), 1);
				ck_assert(k >= 0 && k < N && !seen[k]);
				ck_assert_msg(s_body_ok(&m, sizes[k]), "replayed body %d differs", k);
				seen[k] = true;
				replays++;
			}
			bm_bcast_clear(&m);
		}
	}
	ck_assert_int_eq(replays, N);
	bm_sub_destroy(&late);
	bm_sub_destroy(&live);
	bm_pub_destroy(&p);
}
END_TEST

/* ---- faults ---- */

static int
s_flooder(void *arg)
{
	bm_pub_t *p = s_pub("doomed");
	int fd = *(int *)arg;
	char body[64] = "doomed";

	if (p == NULL) {
		return 10;
	}
	s_signal(fd);
	for (long i = 0; i < 100000000; i++) {
		(void)bm_pub_send(p, "tot/k/doomed", body, sizeof body);
	}
	return 0;
}

START_TEST(a_publisher_killed_with_kill_9_does_not_disturb_the_others)
{
	const char *const pre[] = {"tot/k"};
	int fds[2] = {-1, -1};
	int piped = pipe(fds);
	tu_held_t held = tu_fork_held(s_flooder, &fds[1]); /* before we have threads */
	bm_sub_t *s = s_sub(pre, 1, true, 0, NULL);
	pid_t doomed;
	bm_pub_t *p;
	uint64_t expect = 0;
	int64_t deadline = bm_mono_ms() + 20000;

	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(piped, 0);
	doomed = tu_release(&held);
	ck_assert(s_await(fds[0], 5000));
	p = s_pub("survivor");
	ck_assert_ptr_nonnull(p);
	for (uint64_t i = 0; i < 2000; i++) {
		if (i == 1000) {
			tu_kill9(doomed);
		}
		ck_assert_int_eq(s_send(p, "tot/k/ok", &i, sizeof i), 0);
	}
	while (expect < 2000) {
		bm_bcast_t m = {0};
		uint64_t v;

		ck_assert_int_lt(bm_mono_ms(), deadline);
		if (bm_sub_recv(s, 100, &m) < 0) {
			continue;
		}
		if (strcmp(m.from, "survivor") == 0) {
			memcpy(&v, bm_bcast_data(&m), sizeof v);
			ck_assert_int_eq(v, expect);
			ck_assert_int_eq(m.gap, 0);
			expect++;
		}
		bm_bcast_clear(&m);
	}
	bm_pub_destroy(&p);
	bm_sub_destroy(&s);
	close(fds[0]);
	close(fds[1]);
	/* beastd is alive and the proxy still answers. */
	ck_assert(tu_broker_answers(s_dir, 2000));
	ck_assert_int_ge(tu_stat(s_dir, "bcast_in"), 2000);
}
END_TEST

START_TEST(malformed_frames_from_either_side_do_not_stop_the_proxy)
{
	const char *const pre[] = {"tot/m"};
	bm_sub_t *s = s_sub(pre, 1, true, 0, NULL);
	void *ctx = zmq_ctx_new();
	void *raw = zmq_socket(ctx, ZMQ_XPUB), *up = zmq_socket(ctx, ZMQ_XSUB);
	char ep[BM_PATH_MAX + 16];
	uint8_t buf[8];
	int linger = 1000;
	bm_pub_t *p;
	int64_t deadline = bm_mono_ms() + 5000, malformed;
	bool done = false;

	ck_assert_ptr_nonnull(s);
	zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof linger);
	zmq_setsockopt(up, ZMQ_LINGER, &linger, sizeof linger);
	snprintf(ep, sizeof ep, "ipc://%s/pub.sock", s_dir);
	ck_assert_int_eq(zmq_connect(raw, ep), 0);
	/* Wait for the proxy's subscription: then sends are not dropped. */
	ck_assert_int_ge(zmq_recv(raw, buf, sizeof buf, 0), 1);
	/* The proxy drops these (7): a topic without a header, an empty
	 * frame, an empty segment, no '/' before the header, three frames,
	 * five frames, a version 1 header. */
	zmq_send(raw, "tot/m/no-header/", 16, 0);
	zmq_send(raw, "", 0, 0);
	zmq_send(raw, "tot/m//\x97\x02", 9, 0);
	zmq_send(raw, "tot/m/hdr\x97\x02", 11, 0);
	zmq_send(raw, "tot/m/three/\x97\x02", 14, ZMQ_SNDMORE);
	zmq_send(raw, "x", 1, ZMQ_SNDMORE);
	zmq_send(raw, "x", 1, 0);
	for (int i = 0; i < 4; i++) {
		zmq_send(raw, "tot/m/five/\x97\x02", 13, ZMQ_SNDMORE);
	}
	zmq_send(raw, "x", 1, 0);
	zmq_send(raw, "tot/m/v1/\x97\x01\xa1x\x01\x01\x01\x01\x00x", 19, 0);
	/* These pass the proxy's quick check but not a subscriber (2): a
	 * header that does not decode, and a header followed by bytes in
	 * frame 0 when the body comes in frame 1. */
	zmq_send(raw, "tot/m/bad/\x97\x02\xff\xff", 14, 0);
	zmq_send(raw, "tot/m/trail/\x97\x02\xa1x\x01\x01\x01\x01\x00zz", 23, ZMQ_SNDMORE);
	zmq_send(raw, "x", 1, 0);
	snprintf(ep, sizeof ep, "ipc://%s/sub.sock", s_dir);
	ck_assert_int_eq(zmq_connect(up, ep), 0);
	zmq_send(up, "\x07junk", 5, 0);
	zmq_send(up, "\x02\x91", 2, 0);
	zmq_send(up, "\x01\x00short", 7, 0);
	p = s_pub("fine");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(s_send(p, "tot/m/ok", "ok", 2), 0);
	while (!done) {
		bm_bcast_t m = {0};

		ck_assert_int_lt(bm_mono_ms(), deadline);
		if (bm_sub_recv(s, 100, &m) < 0) {
			continue;
		}
		ck_assert_str_eq(m.topic, "tot/m/ok/");
		done = true;
		bm_bcast_clear(&m);
	}
	/* publishers' 7 and the 2 upstream: exactly, once all are read */
	deadline = bm_mono_ms() + 5000;
	while ((malformed = tu_stat(s_dir, "bcast_malformed")) < 7 + 2 && bm_mono_ms() < deadline) {
		usleep(20 * 1000);
	}
	ck_assert_int_eq(malformed, 7 + 2);
	{
		bm_sub_stats_t st;

		bm_sub_stats(s, &st);
		ck_assert_int_eq(st.malformed, 2);
	}
	bm_pub_destroy(&p);
	bm_sub_destroy(&s);
	zmq_close(raw);
	zmq_close(up);
	zmq_ctx_term(ctx);
}
END_TEST

/* ---- the CLI ---- */

START_TEST(beast_pub_and_sub_json_carry_topic_from_seq_and_body)
{
	char cmd[BM_PATH_MAX * 2 + 256], line[1024] = "";
	FILE *f;

	snprintf(cmd, sizeof cmd, "%s --dir %s pub --as clitest tot/9/1 'hello \"tree\"'",
	         BM_BEAST_PATH, s_dir);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(cmd, sizeof cmd, "%s --dir %s sub --count 1 --timeout 5000 --json tot/9 2>/dev/null",
	         BM_BEAST_PATH, s_dir);
	f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
	ck_assert_int_eq(pclose(f), 0);
	ck_assert_ptr_nonnull(strstr(line, "\"topic\":\"tot/9/1/\""));
	ck_assert_ptr_nonnull(strstr(line, "\"from\":\"clitest\""));
	ck_assert_ptr_nonnull(strstr(line, "\"seq\":1"));
	ck_assert_ptr_nonnull(strstr(line, "\"body\":\"hello \\\"tree\\\"\""));
	snprintf(cmd, sizeof cmd, "%s --dir %s pub 'tot//x' body 2>/dev/null", BM_BEAST_PATH, s_dir);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 2);
}
END_TEST

START_TEST(beast_proxy_pause_and_resume_steer_the_proxy_inside_beastd)
{
	char cmd[BM_PATH_MAX * 2 + 256], line[256] = "";
	const char *const pre[] = {"tot/s"};
	bm_bcast_t m = {0};
	bm_sub_t *s = s_sub(pre, 1, true, 0, NULL);
	bm_pub_t *p = s_pub("steered");
	char *empty = tu_scratch_dir();
	FILE *f;

	ck_assert_ptr_nonnull(s);
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(empty);
	snprintf(cmd, sizeof cmd, "%s --dir %s proxy pause >/dev/null", BM_BEAST_PATH, s_dir);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(tu_stat(s_dir, "bcast_paused"), 1);
	snprintf(cmd, sizeof cmd, "%s --dir %s proxy status", BM_BEAST_PATH, s_dir);
	f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
	ck_assert_int_eq(pclose(f), 0);
	ck_assert_ptr_nonnull(strstr(line, "paused"));
	ck_assert_int_eq(s_send(p, "tot/s/x", "held", 4), 0);
	/* Proving an absence needs a wait: nothing in 300 ms. */
	ck_assert_int_eq(bm_sub_recv(s, 300, &m), -ETIMEDOUT);
	snprintf(cmd, sizeof cmd, "%s --dir %s proxy resume >/dev/null", BM_BEAST_PATH, s_dir);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(bm_sub_recv(s, 5000, &m), 0);
	ck_assert_str_eq(m.topic, "tot/s/x/");
	bm_bcast_clear(&m);
	ck_assert_int_eq(tu_stat(s_dir, "bcast_paused"), 0);
	/* beastd went on serving the mesh meanwhile, and no beastd: exit 4. */
	ck_assert(tu_broker_answers(s_dir, 2000));
	snprintf(cmd, sizeof cmd, "%s --dir %s proxy pause 2>/dev/null", BM_BEAST_PATH, empty);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 4);
	bm_pub_destroy(&p);
	bm_sub_destroy(&s);
	tu_rmrf(&empty);
}
END_TEST

/* ---- the proxy object, in process ---- */

START_TEST(a_paused_proxy_holds_messages_until_resumed)
{
	char *dir = tu_scratch_dir();
	bm_proxy_opts_t po = {.dir = dir};
	bm_proxy_t *px = NULL;
	bm_stat_t st[BM_PROXY_STATS_MAX];
	bm_bcast_t m = {0};
	bm_pub_t *p;
	bm_sub_t *s;
	int n;
	const char *const pre[] = {"tot/p"};
	char *keep = s_dir;

	ck_assert_ptr_nonnull(dir);
	ck_assert_int_eq(bm_proxy_open(&po, &px), 0);
	s_dir = dir;
	s = s_sub(pre, 1, true, 0, NULL);
	p = s_pub("pauser");
	ck_assert_ptr_nonnull(s);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(bm_proxy_pause(px), 0);
	n = bm_proxy_stats(px, st, BM_PROXY_STATS_MAX);
	ck_assert_int_gt(n, 0);
	for (int i = 0; i < n; i++) {
		if (strcmp(st[i].key, "bcast_paused") == 0) {
			ck_assert_int_eq(st[i].value, 1);
		}
	}
	ck_assert_int_eq(s_send(p, "tot/p/x", "held", 4), 0);
	/* Proving an absence needs a wait: nothing in 300 ms. */
	ck_assert_int_eq(bm_sub_recv(s, 300, &m), -ETIMEDOUT);
	ck_assert_int_eq(bm_proxy_resume(px), 0);
	ck_assert_int_eq(bm_sub_recv(s, 5000, &m), 0);
	ck_assert_str_eq(m.topic, "tot/p/x/");
	bm_bcast_clear(&m);
	bm_pub_destroy(&p);
	bm_sub_destroy(&s);
	bm_proxy_destroy(&px);
	ck_assert_ptr_null(px);
	s_dir = keep;
	tu_rmrf(&dir);
}
END_TEST

/* ---- the shared-memory log beside the proxy ---- */

#define S_LOG_N 20000

static size_t
s_log_len(long i)
{
	return i % 1000 == 0 ? 100000 : (size_t)(i % 300);
}

static int
s_log_body_ok(const uint8_t *b, size_t n, long i)
{
	for (size_t k = 0; k < n; k++) {
		if (b[k] != (uint8_t)(i + (long)k)) {
			return 0;
		}
	}
	return 1;
}

/* Child: follows tot/7 from logpub's log, tethered; checks every field. */
static int
s_log_reader(void *arg)
{
	int fd = *(int *)arg;
	bm_sub_opts_t o = {.dir = s_dir, .shm_from = "logpub", .shm_tethered = true};
	bm_sub_t *s = NULL;
	bm_bcast_t m = {0};

	if (bm_sub_open(&o, &s) < 0 || bm_sub_socket(s) != NULL || bm_sub_subscribe(s, "tot/7") < 0 ||
	    bm_sub_recv(s, 1000, &m) != 0 || m.kind != BM_BCAST_SYNC || strcmp(m.topic, "tot/7/") != 0) {
		return 10;
	}
	bm_bcast_clear(&m);
	s_signal(fd);
	for (long i = 1; i <= S_LOG_N; i++) {
		if (bm_sub_recv(s, 5000, &m) != 0 || m.kind != BM_BCAST_MSG) {
			return 11;
		}
		if (strcmp(m.topic, "tot/7/1/") != 0 || strcmp(m.from, "logpub") != 0 ||
		    m.seq != (uint64_t)(2 * i - 1) || m.tseq != (uint64_t)i || m.gap != 0 || m.replay ||
		    bm_bcast_size(&m) != s_log_len(i) ||
		    !s_log_body_ok(bm_bcast_data(&m), bm_bcast_size(&m), i)) {
			fprintf(stderr, "log reader: message %ld: %s seq %llu tseq %llu gap %llu\n", i, m.topic,
			        (unsigned long long)m.seq, (unsigned long long)m.tseq,
			        (unsigned long long)m.gap);
			return 12;
		}
		bm_bcast_clear(&m);
	}
	/* The publisher closes: the end, not a hang. */
	if (bm_sub_recv(s, 5000, &m) != -ESHUTDOWN) {
		return 13;
	}
	bm_sub_destroy(&s);
	return 0;
}

START_TEST(a_local_subscriber_reads_the_publishers_shm_log_and_sees_what_the_proxy_delivers)
{
	const char *pre[] = {"tot/7"};
	bm_pub_opts_t po = {.dir = s_dir, .name = "logpub", .shm_log = 1 << 20};
	bm_pub_t *p = NULL;
	bm_sub_t *proxy_sub = s_sub(pre, 1, true, 0, NULL);
	static uint8_t body[100000];
	int pp[2];
	pid_t child;
	char c;

	ck_assert_ptr_nonnull(proxy_sub);
	ck_assert_int_eq(bm_pub_open(&po, &p), 0);
	ck_assert_int_ge(bm_pub_shm_fd(p), 0);
	ck_assert_int_eq(pipe(pp), 0);
	child = tu_fork(s_log_reader, &pp[1]);
	ck_assert_int_gt(child, 0);
	{
		int64_t deadline = bm_mono_ms() + 5000;
		struct pollfd w = {.fd = pp[0], .events = POLLIN};

		while (poll(&w, 1, 2) == 0) {
			ck_assert_int_ge(bm_pub_service(p), 0);
			ck_assert_msg(bm_mono_ms() < deadline, "log reader did not attach");
		}
		ck_assert_int_eq(read(pp[0], &c, 1), 1);
	}
	for (long i = 1; i <= S_LOG_N; i++) {
		for (size_t k = 0; k < s_log_len(i); k++) {
			body[k] = (uint8_t)(i + (long)k);
		}
		ck_assert_int_eq(s_send(p, "tot/7/1", body, s_log_len(i)), 0);
		ck_assert_int_eq(s_send(p, "tot/8/1", "x", 1), 0);
	}
	/* Bodies over a quarter of the log do not fit it. */
	ck_assert_int_eq(bm_pub_send(p, "tot/7/1", body, (1 << 20) / 4 + 1), BM_ETOOBIG);
	bm_pub_destroy(&p);
	ck_assert_int_eq(tu_wait(child, 30000), 0);
	/* The proxy path, unchanged beside it: the same messages, same fields. */
	for (long i = 1; i <= S_LOG_N; i++) {
		bm_bcast_t m = {0};

		ck_assert_int_eq(bm_sub_recv(proxy_sub, 5000, &m), 0);
		ck_assert_int_eq(m.kind, BM_BCAST_MSG);
		ck_assert_str_eq(m.topic, "tot/7/1/");
		ck_assert_str_eq(m.from, "logpub");
		ck_assert_uint_eq(m.seq, (uint64_t)(2 * i - 1));
		ck_assert_uint_eq(m.tseq, (uint64_t)i);
		ck_assert_uint_eq(m.gap, 0);
		ck_assert_uint_eq(bm_bcast_size(&m), s_log_len(i));
		bm_bcast_clear(&m);
	}
	bm_sub_destroy(&proxy_sub);
	close(pp[0]);
	close(pp[1]);
}
END_TEST

/* ---- a subscriber that switches to a log by itself, and back ---- */

#define S_BAD_BODY 64

/* Child: publishes ten as "badlog" with a log; on 'm' ten more; on 'c' ten
 * more, then scribbles over the whole record space (nobody else can: the
 * log is sealed against writers), then ten more, the last one 'E', and
 * answers 'k'; on 'q' it leaves.  It services its log all along. */
typedef struct {
	int cmd;  /* read end */
	int ack;  /* write end */
} s_bad_t;

static int
s_bad_send(bm_pub_t *p, uint64_t seq, bool end)
{
	uint8_t body[S_BAD_BODY] = {0};

	memcpy(body, &seq, 8);
	body[8] = end ? 'E' : '-';
	return bm_pub_send(p, "tot/c/1", body, sizeof body);
}

static int
s_bad_pub(void *arg)
{
	s_bad_t *b = arg;
	bm_pub_opts_t po = {.dir = s_dir, .name = "badlog", .shm_log = 64 << 10};
	int64_t deadline = bm_mono_ms() + 30000;
	bm_pub_t *p = NULL;
	uint64_t seq = 0;

	if (bm_pub_open(&po, &p) < 0) {
		return 10;
	}
	for (int i = 0; i < 10; i++) {
		if (s_bad_send(p, ++seq, false) < 0) {
			return 11;
		}
	}
	while (bm_mono_ms() < deadline) {
		struct pollfd w = {.fd = b->cmd, .events = POLLIN};
		char c;

		(void)bm_pub_service(p);
		if (poll(&w, 1, 5) != 1 || read(b->cmd, &c, 1) != 1) {
			continue;
		}
		if (c == 'q') {
			break;
		}
		for (int i = 0; i < 10; i++) {
			if (s_bad_send(p, ++seq, false) < 0) {
				return 12;
			}
		}
		if (c == 'c') {
			size_t len;
			uint8_t *base = bm__bcastlog_base(bm__pub_log(p), &len);

			memset(base + 4096, 0xAB, len - 4096);
			for (int i = 0; i < 10; i++) {
				if (s_bad_send(p, ++seq, i == 9) < 0) {
					return 13;
				}
			}
			(void)!write(b->ack, "k", 1);
		}
	}
	bm_pub_destroy(&p);
	return 0;
}

typedef struct {
	uint64_t n, first, last, gaps, bad; /* what came */
	bool end;                           /* the 'E' message came */
} s_seen_t;

/* Receives until the message with count `until` (or the 'E') came. */
static void
s_recv_until(bm_sub_t *s, s_seen_t *v, uint64_t until)
{
	int64_t deadline = bm_mono_ms() + 10000;

	while (!v->end && v->last < until) {
		bm_bcast_t m = {0};
		uint64_t seq;
		int rc = bm_sub_recv(s, 100, &m);

		ck_assert_msg(bm_mono_ms() < deadline, "message %llu did not come",
		              (unsigned long long)until);
		if (rc == -ETIMEDOUT) {
			continue;
		}
		ck_assert_int_eq(rc, 0);
		if (m.kind != BM_BCAST_MSG) {
			bm_bcast_clear(&m);
			continue;
		}
		ck_assert_uint_eq(bm_bcast_size(&m), S_BAD_BODY);
		memcpy(&seq, bm_bcast_data(&m), 8);
		v->bad += seq != m.seq || (v->n > 0 && seq <= v->last);
		v->first = v->n == 0 ? seq : v->first;
		v->n++;
		v->gaps += m.gap;
		v->last = seq;
		v->end = ((const uint8_t *)bm_bcast_data(&m))[8] == 'E';
		bm_bcast_clear(&m);
	}
}

START_TEST(a_subscriber_switches_to_a_local_log_and_back_to_the_proxy_when_the_log_is_corrupt)
{
	int cmd[2], ack[2];
	s_bad_t b;
	tu_held_t hp;
	bm_sub_opts_t so = {.dir = s_dir, .shm_auto = true};
	bm_sub_t *s = NULL;
	bm_bcast_t m = {0};
	bm_sub_stats_t st;
	s_seen_t v = {0};
	uint64_t sent = 10;
	struct pollfd w;
	char c;

	ck_assert_int_eq(pipe(cmd), 0);
	ck_assert_int_eq(pipe(ack), 0);
	b = (s_bad_t){.cmd = cmd[0], .ack = ack[1]};
	hp = tu_fork_held(s_bad_pub, &b);
	ck_assert_int_eq(bm_sub_open(&so, &s), 0);
	ck_assert_int_eq(bm_sub_subscribe(s, "tot/c"), 0);
	ck_assert_int_eq(bm_sub_recv(s, 5000, &m), 0);
	ck_assert_int_eq(m.kind, BM_BCAST_SYNC);
	bm_bcast_clear(&m);
	ck_assert_int_gt(tu_release(&hp), 0);
	/* Through the proxy; the first one makes it ask to attach, and the
	 * publisher's answer is read as the subscriber waits. */
	s_recv_until(s, &v, sent);
	for (int64_t end = bm_mono_ms() + 10000; bm_mono_ms() < end;) {
		bm_sub_stats(s, &st);
		if (st.shm_attached > 0) {
			break;
		}
		ck_assert_int_eq(bm_sub_recv(s, 100, &m), -ETIMEDOUT);
	}
	ck_assert_uint_eq(st.shm_attached, 1);
	/* Then from the log, once the proxy has caught up with it (a round
	 * the proxy brings first, before the log is read, is skipped in the
	 * log: another round then). */
	for (int round = 0; st.shm_received == 0; round++) {
		ck_assert_int_lt(round, 50);
		ck_assert_int_eq(write(cmd[1], "m", 1), 1);
		sent += 10;
		s_recv_until(s, &v, sent);
		bm_sub_stats(s, &st);
	}
	/* The log is scribbled on: BM_ECORRUPT inside, the proxy again. */
	ck_assert_int_eq(write(cmd[1], "c", 1), 1);
	w = (struct pollfd){.fd = ack[0], .events = POLLIN};
	ck_assert_int_eq(poll(&w, 1, 10000), 1);
	ck_assert_int_eq(read(ack[0], &c, 1), 1);
	sent += 20;
	s_recv_until(s, &v, sent);
	bm_sub_stats(s, &st);
	ck_assert_uint_eq(st.shm_corrupt, 1);
	ck_assert_uint_eq(st.shm_fallbacks, 1);
	ck_assert(v.end);
	ck_assert_uint_eq(v.bad, 0);
	ck_assert_uint_eq(v.first, 1);
	ck_assert_uint_eq(v.last, sent);
	ck_assert_uint_eq(v.n + v.gaps, sent);
	ck_assert_uint_eq(st.received, v.n);
	ck_assert_int_eq(write(cmd[1], "q", 1), 1);
	ck_assert_int_eq(tu_wait(hp.pid, 10000), 0);
	bm_sub_destroy(&s);
	for (int i = 0; i < 2; i++) {
		close(cmd[i]);
		close(ack[i]);
	}
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("proxy");
	TCase *tc = tcase_create("topic");

	tcase_add_test(tc, topic_helpers_build_normalise_and_split_thought_paths);
	tcase_add_test(tc, topic_check_refuses_empty_oversized_and_too_deep_paths);
	suite_add_tcase(s, tc);

	tc = tcase_create("proxy");
	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, a_subtree_subscription_never_receives_a_sibling_sharing_its_bytes);
	tcase_add_test(tc, eight_subscribers_each_get_100000_messages_with_zero_gaps);
	tcase_add_test(tc, under_overload_the_counted_gaps_equal_the_missing_messages_exactly);
	tcase_add_test(tc, a_late_joiner_gets_the_latest_message_of_each_topic_under_its_prefix);
	tcase_add_test(tc, bodies_inline_or_in_a_frame_of_their_own_arrive_intact_live_and_replayed);
	tcase_add_test(tc, a_publisher_killed_with_kill_9_does_not_disturb_the_others);
	tcase_add_test(tc, malformed_frames_from_either_side_do_not_stop_the_proxy);
	tcase_add_test(tc, beast_pub_and_sub_json_carry_topic_from_seq_and_body);
	tcase_add_test(tc, beast_proxy_pause_and_resume_steer_the_proxy_inside_beastd);
	tcase_add_test(tc, a_local_subscriber_reads_the_publishers_shm_log_and_sees_what_the_proxy_delivers);
	tcase_add_test(tc, a_subscriber_switches_to_a_local_log_and_back_to_the_proxy_when_the_log_is_corrupt);
	suite_add_tcase(s, tc);

	tc = tcase_create("steering");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, a_paused_proxy_holds_messages_until_resumed);
	suite_add_tcase(s, tc);
	return s;
}


int
main(void)
{
	return tu_run_suite(s_suite());
}

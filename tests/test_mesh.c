/*
 * test_mesh.c - the control mesh with real processes: beastd as a child,
 * agents as forked processes, real ipc sockets, real kill -9.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define HB 200 /* heartbeat for these tests, ms */

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

/* ---- agents run in child processes ---- */

typedef struct {
	const char *name;            /* agent name */
	const char *caps[3];         /* capabilities */
	long count;                  /* messages to take before exiting */
	int timeout_ms;              /* overall bound */
	bool echo;                   /* reply with own name */
} s_agent_arg_t;

/* Receives count messages whose bodies are consecutive uint64 sequence
 * numbers from 0; exits 0 when none was lost, duplicated or reordered. */
static int
s_seq_receiver(void *arg)
{
	s_agent_arg_t *a = arg;
	bm_client_t *c = tu_client(s_dir, a->name, NULL, HB);
	int64_t deadline = bm_mono_ms() + a->timeout_ms;
	uint64_t expect = 0;

	if (c == NULL) {
		return 10;
	}
	while (expect < (uint64_t)a->count && bm_mono_ms() < deadline) {
		bm_event_t ev;
		uint64_t seq;

		if (bm_client_recv(c, 100, &ev) < 0) {
			continue;
		}
		if (ev.kind == BM_EV_MESSAGE) {
			if (bm_msg_size(ev.msg) != sizeof seq) {
				return 11;
			}
			memcpy(&seq, bm_msg_data(ev.msg), sizeof seq);
			if (seq != expect) {
				fprintf(stderr, "receiver: got %llu, expected %llu\n",
				        (unsigned long long)seq, (unsigned long long)expect);
				return 12;
			}
			expect++;
			if (bm_client_ack(c, ev.msg) < 0) {
				return 13;
			}
		}
		bm_event_clear(&ev);
	}
	/* Let the last ACKs leave before the socket closes (linger is set). */
	bm_client_destroy(&c);
	return expect == (uint64_t)a->count ? 0 : 14;
}

/* Serves requests until count are answered: ACK, then reply with its name. */
static int
s_worker(void *arg)
{
	s_agent_arg_t *a = arg;
	bm_client_t *c = tu_client(s_dir, a->name, a->caps, HB);
	int64_t deadline = bm_mono_ms() + a->timeout_ms;
	long served = 0;

	if (c == NULL) {
		return 10;
	}
	while ((a->count <= 0 || served < a->count) && bm_mono_ms() < deadline) {
		bm_event_t ev;

		if (bm_client_recv(c, 100, &ev) < 0) {
			continue;
		}
		if (ev.kind == BM_EV_MESSAGE) {
			(void)bm_client_ack(c, ev.msg);
			if (a->echo) {
				(void)bm_client_reply(c, ev.msg, "reply", a->name, strlen(a->name));
			}
			served++;
		}
		bm_event_clear(&ev);
	}
	bm_client_destroy(&c);
	return a->count <= 0 || served == a->count ? 0 : 15;
}

/* ---- tests ---- */

START_TEST(two_agents_exchange_100000_messages_none_lost_duplicated_or_reordered)
{
	enum { N = 100000, WINDOW = 2000 };
	s_agent_arg_t ra = {.name = "rx", .count = N, .timeout_ms = 100000};
	pid_t rx = tu_fork(s_seq_receiver, &ra);
	bm_client_t *tx;
	bm_send_opts_t o = {.to = "rx", .type = "seq"};
	uint64_t next = 0, acked = 0;
	int64_t deadline = bm_mono_ms() + 100000;

	ck_assert_int_ge(tu_wait_agent(s_dir, "rx", true, 5000), 0);
	tx = tu_client(s_dir, "tx", NULL, HB);
	ck_assert_ptr_nonnull(tx);
	while (acked < N && bm_mono_ms() < deadline) {
		bm_event_t ev;

		/* Credit window: at most WINDOW un-ACKed messages in flight. */
		while (next < N && next - acked < WINDOW) {
			int rc = bm_client_send(tx, &o, &next, sizeof next, NULL);

			if (rc == BM_EFULL) {
				break; /* back-pressure (a full route ring): ACKs first */
			}
			ck_assert_int_eq(rc, 0);
			next++;
		}
		if (bm_client_recv(tx, 100, &ev) < 0) {
			continue;
		}
		if (ev.kind == BM_EV_NACK) {
			ck_abort_msg("NACK: %s", ev.text);
		}
		acked += ev.kind == BM_EV_ACK;
		bm_event_clear(&ev);
	}
	ck_assert_uint_eq(acked, N);
	ck_assert_int_eq(tu_wait(rx, 20000), 0);
	bm_client_destroy(&tx);
	if (getenv("BEAST_DIRECT") == NULL || strcmp(getenv("BEAST_DIRECT"), "0") != 0) {
		/* Run with direct routes: most went over the ring, not beastd. */
		ck_assert_int_lt(tu_stat(s_dir, "delivers"), N);
	} else {
		ck_assert_int_eq(tu_stat(s_dir, "delivers"), N);
		ck_assert_int_eq(tu_stat(s_dir, "acks"), N);
	}
}
END_TEST

START_TEST(a_request_gets_its_reply_and_other_traffic_is_kept)
{
	s_agent_arg_t wa = {.name = "svc", .count = 2, .timeout_ms = 10000, .echo = true};
	pid_t w = tu_fork(s_worker, &wa);
	bm_client_t *c;
	bm_msg_t *reply = NULL;
	bm_event_t ev;

	ck_assert_int_ge(tu_wait_agent(s_dir, "svc", true, 5000), 0);
	c = tu_client(s_dir, "asker", NULL, HB);
	ck_assert_ptr_nonnull(c);
	/* A first plain send: its ACK and the worker's reply arrive while the
	 * request below waits, and must stay queued for recv. */
	ck_assert_int_eq(bm_client_send(c, &(bm_send_opts_t){.to = "svc"}, "a", 1, NULL), 0);
	ck_assert_int_eq(bm_client_request(c, "svc", "q", "b", 1, 5000, &reply), 0);
	ck_assert_str_eq(reply->from, "svc");
	ck_assert_str_eq(reply->type, "reply");
	ck_assert_uint_eq(bm_msg_size(reply), 3);
	ck_assert_int_eq(memcmp(bm_msg_data(reply), "svc", 3), 0);
	bm_msg_destroy(&reply);
	/* The first message's ACK is still there. */
	bool saw_ack = false;
	for (int i = 0; i < 4 && !saw_ack; i++) {
		if (bm_client_recv(c, 1000, &ev) == 0) {
			saw_ack = ev.kind == BM_EV_ACK;
			bm_event_clear(&ev);
		}
	}
	ck_assert(saw_ack);
	ck_assert_int_eq(bm_client_request(c, "nobody", "q", "x", 1, 2000, &reply), BM_ENOAGENT);
	ck_assert_int_eq(tu_wait(w, 5000), 0);
	bm_client_destroy(&c);
}
END_TEST

START_TEST(anycast_spreads_requests_over_three_agents)
{
	enum { N = 30 };
	s_agent_arg_t wa[3] = {
		{.name = "w1", .caps = {"work", NULL}, .timeout_ms = 15000, .echo = true},
		{.name = "w2", .caps = {"work", "x", NULL}, .timeout_ms = 15000, .echo = true},
		{.name = "w3", .caps = {"work", NULL}, .timeout_ms = 15000, .echo = true},
	};
	s_agent_arg_t other = {.name = "idle", .caps = {"other", NULL}, .timeout_ms = 15000};
	pid_t pids[4];
	int tally[3] = {0};
	bm_client_t *c;

	for (int i = 0; i < 3; i++) {
		pids[i] = tu_fork(s_worker, &wa[i]);
	}
	pids[3] = tu_fork(s_worker, &other);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_ge(tu_wait_agent(s_dir, wa[i].name, true, 5000), 0);
	}
	ck_assert_int_ge(tu_wait_agent(s_dir, "idle", true, 5000), 0);
	c = tu_client(s_dir, "boss", NULL, HB);
	ck_assert_ptr_nonnull(c);
	for (int i = 0; i < N; i++) {
		bm_msg_t *r = NULL;

		ck_assert_int_eq(bm_client_request(c, "@work", "job", "j", 1, 5000, &r), 0);
		ck_assert_uint_eq(bm_msg_size(r), 2);
		tally[((const char *)bm_msg_data(r))[1] - '1']++;
		bm_msg_destroy(&r);
	}
	for (int i = 0; i < 3; i++) {
		/* Sequential requests leave every worker equally loaded, so they
		 * take turns: an even spread, give or take a turn. */
		ck_assert_int_ge(tally[i], N / 3 - 1);
	}
	ck_assert_int_eq(bm_client_request(c, "@none", "job", "j", 1, 2000, &(bm_msg_t *){NULL}),
	                 BM_ENOAGENT);
	bm_client_destroy(&c);
	for (int i = 0; i < 4; i++) {
		tu_kill9(pids[i]);
	}
}
END_TEST

static int
s_idle_agent(void *arg)
{
	s_agent_arg_t *a = arg;

	return s_worker(a);
}

START_TEST(a_killed_agent_is_noticed_within_three_heartbeats)
{
	s_agent_arg_t va = {.name = "victim", .timeout_ms = 30000};
	pid_t v = tu_fork(s_idle_agent, &va);
	bm_client_t *watcher;
	int64_t t0, gone_ms;
	bool noticed = false;

	ck_assert_int_ge(tu_wait_agent(s_dir, "victim", true, 5000), 0);
	watcher = tu_client(s_dir, "watcher", NULL, HB);
	ck_assert_ptr_nonnull(watcher);
	t0 = bm_mono_ms();
	tu_kill9(v);
	gone_ms = tu_wait_agent(s_dir, "victim", false, 10 * HB);
	ck_assert_int_ge(gone_ms, 0);
	ck_assert_int_le(bm_mono_ms() - t0, 3 * HB);
	/* Other agents are told. */
	for (int i = 0; i < 20 && !noticed; i++) {
		bm_event_t ev;

		if (bm_client_recv(watcher, HB, &ev) == 0) {
			noticed = ev.kind == BM_EV_NOTICE && strcmp(ev.peer, "victim") == 0 &&
			          strcmp(ev.text, "offline") == 0;
			bm_event_clear(&ev);
		}
	}
	ck_assert(noticed);
	bm_client_destroy(&watcher);
}
END_TEST

START_TEST(traffic_resumes_after_beastd_is_killed_and_restarted)
{
	s_agent_arg_t ra = {.name = "rx", .count = 2, .timeout_ms = 20000};
	pid_t rx = tu_fork(s_seq_receiver, &ra);
	bm_client_t *tx;
	bm_send_opts_t o = {.to = "rx"};
	uint64_t seq = 0;
	bool acked = false;
	int64_t deadline;

	ck_assert_int_ge(tu_wait_agent(s_dir, "rx", true, 5000), 0);
	tx = tu_client(s_dir, "tx", NULL, HB);
	ck_assert_ptr_nonnull(tx);
	ck_assert_int_eq(bm_client_send(tx, &o, &seq, sizeof seq, NULL), 0);
	for (int i = 0; i < 50 && !acked; i++) {
		bm_event_t ev;

		if (bm_client_recv(tx, 100, &ev) == 0) {
			acked = ev.kind == BM_EV_ACK;
			bm_event_clear(&ev);
		}
	}
	ck_assert(acked);

	tu_kill9(s_beastd);
	s_beastd = tu_beastd_start(s_dir, HB); /* takes over the stale socket */
	ck_assert_int_gt(s_beastd, 0);

	/* No manual step: both agents re-register by themselves.  Keep trying
	 * the second message until one is ACKed (the outbox will do this). */
	seq = 1;
	acked = false;
	deadline = bm_mono_ms() + 15000;
	while (!acked && bm_mono_ms() < deadline) {
		bm_event_t ev;
		int rc = bm_client_send(tx, &o, &seq, sizeof seq, NULL);

		ck_assert(rc == 0 || rc == BM_ENOTREG);
		for (int64_t until = bm_mono_ms() + 300; !acked && bm_mono_ms() < until;) {
			if (bm_client_recv(tx, 50, &ev) == 0) {
				acked = ev.kind == BM_EV_ACK;
				bm_event_clear(&ev);
			}
		}
	}
	ck_assert(acked);
	ck_assert_int_eq(tu_wait(rx, 5000), 0);
	bm_client_destroy(&tx);
}
END_TEST

/* An agent that only waits, with a slow heartbeat (3 s), for 20 s. */
static int
s_quiet_agent(void *arg)
{
	bm_client_opts_t o = {.dir = s_dir, .name = arg, .heartbeat_ms = 3000};
	bm_client_t *c = NULL;
	int64_t deadline = bm_mono_ms() + 20000;

	if (bm_client_open(&o, &c) < 0) {
		return 10;
	}
	while (bm_mono_ms() < deadline) {
		bm_event_t ev;

		if (bm_client_recv(c, 200, &ev) == 0) {
			bm_event_clear(&ev);
		}
	}
	bm_client_destroy(&c);
	return 0;
}

START_TEST(an_idle_agent_is_back_in_a_restarted_beastd_long_before_its_heartbeat)
{
	pid_t idle = tu_fork(s_quiet_agent, "idle");
	int64_t t0, took;

	ck_assert_int_ge(tu_wait_agent(s_dir, "idle", true, 5000), 0);
	tu_kill9(s_beastd);
	t0 = bm_mono_ms();
	s_beastd = tu_beastd_start(s_dir, HB);
	ck_assert_int_gt(s_beastd, 0);
	/* Its next PING is up to 3 s away: it must come back on its own
	 * connection's return (the client's socket monitor), not on that. */
	took = tu_wait_agent(s_dir, "idle", true, 2500);
	ck_assert_msg(took >= 0, "the idle agent did not re-register within 2.5 s");
	ck_assert_msg(bm_mono_ms() - t0 < 1000, "re-registered %lld ms after the restart",
	              (long long)(bm_mono_ms() - t0));
	tu_kill9(idle);
}
END_TEST

START_TEST(garbage_from_a_raw_dealer_does_not_stop_routing)
{
	s_agent_arg_t ra = {.name = "rx", .count = 3, .timeout_ms = 10000};
	pid_t rx = tu_fork(s_seq_receiver, &ra);
	char ep[BM_PATH_MAX + 16];
	void *ctx = zmq_ctx_new(), *raw = zmq_socket(ctx, ZMQ_DEALER);
	int linger = 1000, sent = 0, errors = 0;
	uint8_t big[BM_HEADER_MAX + 10];
	static const uint8_t hello_no_caps[] = {0x93, 0x01, 0x01, 0xa1, 'z'};
	static const uint8_t wrong_version[] = {0x92, 0x07, 0x08};
	static const uint8_t ping[] = {0x92, 0x01, 0x08};
	bm_client_t *tx;
	bm_send_opts_t o = {.to = "rx"};
	uint64_t ack_count = 0;

	snprintf(ep, sizeof ep, "ipc://%s/mesh.sock", s_dir);
	zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof linger);
	ck_assert_int_eq(zmq_connect(raw, ep), 0);
	ck_assert_int_ge(tu_wait_agent(s_dir, "rx", true, 5000), 0);
	tx = tu_client(s_dir, "tx", NULL, HB);
	ck_assert_ptr_nonnull(tx);

	for (uint64_t seq = 0; seq < 3; seq++) {
		/* Interleave garbage with real traffic. */
		memset(big, 0x91, sizeof big);
		zmq_send(raw, "", 0, 0);
		zmq_send(raw, "\xff\xfe garbage", 10, 0);
		zmq_send(raw, hello_no_caps, sizeof hello_no_caps, 0);
		zmq_send(raw, wrong_version, sizeof wrong_version, 0);
		zmq_send(raw, big, sizeof big, 0);
		zmq_send(raw, ping, sizeof ping, ZMQ_SNDMORE); /* PING with a body frame */
		zmq_send(raw, "x", 1, 0);
		sent += 6;
		ck_assert_int_eq(bm_client_send(tx, &o, &seq, sizeof seq, NULL), 0);
	}
	for (int i = 0; i < 100 && ack_count < 3; i++) {
		bm_event_t ev;

		if (bm_client_recv(tx, 100, &ev) == 0) {
			ack_count += ev.kind == BM_EV_ACK;
			bm_event_clear(&ev);
		}
	}
	ck_assert_uint_eq(ack_count, 3);
	ck_assert_int_eq(tu_wait(rx, 5000), 0);
	/* Every bad frame was answered with an ERROR and counted. */
	for (int i = 0; i < 100 && errors < sent; i++) {
		zmq_pollitem_t it = {.socket = raw, .events = ZMQ_POLLIN};
		zmq_msg_t m;

		if (zmq_poll(&it, 1, 100) <= 0) {
			continue;
		}
		zmq_msg_init(&m);
		zmq_msg_recv(&m, raw, 0);
		errors += zmq_msg_size(&m) >= 3 && ((uint8_t *)zmq_msg_data(&m))[2] == BM_CMD_ERROR;
		zmq_msg_close(&m);
	}
	ck_assert_int_eq(errors, sent);
	ck_assert_int_eq(tu_stat(s_dir, "malformed"), sent);
	bm_client_destroy(&tx);
	zmq_close(raw);
	zmq_ctx_term(ctx);
}
END_TEST

START_TEST(a_live_agents_name_cannot_be_taken_but_a_dead_ones_can)
{
	s_agent_arg_t aa = {.name = "alice", .timeout_ms = 20000};
	pid_t alice = tu_fork(s_idle_agent, &aa);
	bm_client_opts_t o = {.dir = s_dir, .name = "alice", .heartbeat_ms = HB};
	bm_client_t *c = NULL;

	ck_assert_int_ge(tu_wait_agent(s_dir, "alice", true, 5000), 0);
	ck_assert_int_eq(bm_client_open(&o, &c), BM_ENAMETAKEN);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(tu_stat(s_dir, "denied"), 1);
	/* Once the holder is dead its name is free at once: the broker's probe
	 * finds the connection closed. */
	tu_kill9(alice);
	ck_assert_int_eq(bm_client_open(&o, &c), 0);
	bm_client_destroy(&c);
}
END_TEST

START_TEST(sends_that_cannot_be_delivered_are_refused_with_a_reason)
{
	bm_client_opts_t o = {.dir = s_dir, .name = "small", .max_body = 1 << 20};
	bm_client_t *c = tu_client(s_dir, "tx", NULL, HB), *limited = NULL;
	bm_send_opts_t so = {.to = "ghost"};
	char *big = calloc(1, (1 << 20) + 1);
	bm_event_t ev;
	bm_id_t id;

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(bm_client_send(c, &so, "x", 1, &id), 0);
	ck_assert_int_eq(bm_client_recv(c, 2000, &ev), 0);
	ck_assert_int_eq(ev.kind, BM_EV_NACK);
	ck_assert_int_eq(ev.code, BM_ENOAGENT);
	ck_assert(bm_id_equal(&ev.id, &id));
	ck_assert_ptr_nonnull(strstr(ev.text, "ghost"));
	bm_event_clear(&ev);
	/* Over the cap: refused locally, before it is sent. */
	ck_assert_int_eq(bm_client_open(&o, &limited), 0);
	so.to = "tx";
	ck_assert_int_eq(bm_client_send(limited, &so, big, (1 << 20) + 1, NULL), BM_ETOOBIG);
	ck_assert_int_eq(bm_client_send(limited, &(bm_send_opts_t){.to = "bad name"}, "x", 1, NULL),
	                 BM_EBADNAME);
	bm_client_destroy(&limited);
	bm_client_destroy(&c);
	free(big);
}
END_TEST

START_TEST(an_oversized_body_from_a_raw_peer_gets_a_toobig_nack)
{
	char ep[BM_PATH_MAX + 16];
	void *ctx = zmq_ctx_new(), *raw = zmq_socket(ctx, ZMQ_DEALER);
	static const uint8_t hello[] = {0x95, 0x01, 0x01, 0xa3, 'r', 'a', 'w', 0x90, 0xcd, 0x03, 0xe8};
	uint8_t send[64];
	size_t n = 0;
	size_t big = BM_BODY_MAX_DEFAULT + 1;
	void *body = calloc(1, big);
	bool nacked = false;
	int linger = 0;

	snprintf(ep, sizeof ep, "ipc://%s/mesh.sock", s_dir);
	zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof linger);
	ck_assert_int_eq(zmq_connect(raw, ep), 0);
	ck_assert_int_eq(zmq_send(raw, hello, sizeof hello, 0), (int)sizeof hello);
	/* [1, SEND, id, nil, "raw", "t", 0, 0, 0, 0] by hand */
	send[n++] = 0x9a;
	send[n++] = 0x01;
	send[n++] = 0x04;
	send[n++] = 0xc4;
	send[n++] = 16;
	memset(send + n, 0x42, 16);
	n += 16;
	send[n++] = 0xc0;
	send[n++] = 0xa3;
	memcpy(send + n, "raw", 3);
	n += 3;
	send[n++] = 0xa1;
	send[n++] = 't';
	for (int i = 0; i < 4; i++) {
		send[n++] = 0x00;
	}
	ck_assert_int_eq(zmq_send(raw, send, n, ZMQ_SNDMORE), (int)n);
	ck_assert_int_eq(zmq_send(raw, body, big, 0), (int)big);
	for (int i = 0; i < 50 && !nacked; i++) {
		zmq_pollitem_t it = {.socket = raw, .events = ZMQ_POLLIN};
		zmq_msg_t m;

		if (zmq_poll(&it, 1, 100) <= 0) {
			continue;
		}
		zmq_msg_init(&m);
		zmq_msg_recv(&m, raw, 0);
		/* NACK header: [1, 7, id, peer, code, text]; code TOOBIG = 7 */
		nacked = zmq_msg_size(&m) > 24 && ((uint8_t *)zmq_msg_data(&m))[2] == BM_CMD_NACK;
		zmq_msg_close(&m);
	}
	ck_assert(nacked);
	ck_assert_int_eq(tu_stat(s_dir, "nack_toobig"), 1);
	zmq_close(raw);
	zmq_ctx_term(ctx);
	free(body);
}
END_TEST

static char s_go[BM_PATH_MAX + 16]; /* s_acker starts reading once this exists */

/* Registers, then waits (not reading, with a heartbeat long enough for
 * that) until s_go exists, then ACKs every message until count: whatever
 * was sent meanwhile is waiting for it as one burst. */
static int
s_acker(void *arg)
{
	s_agent_arg_t *a = arg;
	bm_client_t *c = tu_client(s_dir, a->name, NULL, 5000);
	int64_t deadline = bm_mono_ms() + a->timeout_ms;
	long got = 0;

	if (c == NULL) {
		return 10;
	}
	while (access(s_go, F_OK) != 0 && bm_mono_ms() < deadline) {
		usleep(2000);
	}
	while (got < a->count && bm_mono_ms() < deadline) {
		bm_event_t ev;

		if (bm_client_recv(c, 100, &ev) < 0) {
			continue;
		}
		if (ev.kind == BM_EV_MESSAGE) {
			got++;
			if (bm_client_ack(c, ev.msg) < 0) {
				return 13;
			}
		}
		bm_event_clear(&ev);
	}
	bm_client_destroy(&c);
	return got == a->count ? 0 : 14;
}

START_TEST(acks_of_a_burst_travel_together_and_an_old_sender_gets_them_one_by_one)
{
	enum { N = 300 };
	/* HELLO without the features field, as a client of the first revision. */
	static const uint8_t hello[] = {0x95, 0x01, 0x01, 0xa3, 'o', 'l', 'd', 0x90, 0xcd, 0x13, 0x88};
	s_agent_arg_t ra = {.name = "rx", .count = 2 * N, .timeout_ms = 30000};
	char ep[BM_PATH_MAX + 16];
	void *ctx, *raw;
	bool raw_acked[N] = {false};
	bm_send_opts_t o = {.to = "rx", .type = "t"};
	bm_client_t *c;
	int linger = 0, raw_acks = 0, new_acks = 0, other = 0;
	int64_t deadline;
	pid_t rx;

	snprintf(s_go, sizeof s_go, "%s/go", s_dir);
	unlink(s_go);
	rx = tu_fork(s_acker, &ra); /* before this process has threads */
	ctx = zmq_ctx_new();
	raw = zmq_socket(ctx, ZMQ_DEALER);
	ck_assert_int_ge(tu_wait_agent(s_dir, "rx", true, 15000), 0);
	c = tu_client(s_dir, "new", NULL, HB);
	ck_assert_ptr_nonnull(c);
	snprintf(ep, sizeof ep, "ipc://%s/mesh.sock", s_dir);
	zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof linger);
	ck_assert_int_eq(zmq_connect(raw, ep), 0);
	ck_assert_int_eq(zmq_send(raw, hello, sizeof hello, 0), (int)sizeof hello);
	ck_assert_int_ge(tu_wait_agent(s_dir, "old", true, 15000), 0);
	/* rx does not read yet: both senders' messages pile up in its socket,
	 * so it finds a burst waiting when it starts. */
	for (int k = 0; k < N; k++) {
		/* [1, SEND, id, nil, "rx", "t", 0, 0, 0, 0]; id = 0x42.. then k */
		uint8_t send[64];
		size_t n = 0;

		send[n++] = 0x9a;
		send[n++] = 0x01;
		send[n++] = 0x04;
		send[n++] = 0xc4;
		send[n++] = 16;
		memset(send + n, 0x42, 14);
		send[n + 14] = (uint8_t)(k >> 8);
		send[n + 15] = (uint8_t)k;
		n += 16;
		send[n++] = 0xc0;
		send[n++] = 0xa2;
		send[n++] = 'r';
		send[n++] = 'x';
		send[n++] = 0xa1;
		send[n++] = 't';
		for (int i = 0; i < 4; i++) {
			send[n++] = 0x00;
		}
		ck_assert_int_eq(zmq_send(raw, send, n, ZMQ_SNDMORE), (int)n);
		ck_assert_int_eq(zmq_send(raw, "b", 1, 0), 1);
	}
	/* The new sender's after the old one's: ACKs batch per sender. */
	deadline = bm_mono_ms() + 5000;
	while (tu_stat(s_dir, "delivers") < N && bm_mono_ms() < deadline) {
		usleep(5000);
	}
	for (int k = 0; k < N; k++) {
		ck_assert_int_eq(bm_client_send(c, &o, "b", 1, NULL), 0);
	}
	deadline = bm_mono_ms() + 5000;
	while (tu_stat(s_dir, "delivers") < 2 * N && bm_mono_ms() < deadline) {
		usleep(5000);
	}
	usleep(100000); /* for rx's I/O thread to take them all in */
	close(open(s_go, O_WRONLY | O_CREAT, 0600));
	deadline = bm_mono_ms() + 20000;
	while ((raw_acks < N || new_acks < N) && bm_mono_ms() < deadline) {
		zmq_pollitem_t it = {.socket = raw, .events = ZMQ_POLLIN};
		bm_event_t ev;

		while (bm_client_recv(c, 0, &ev) == 0) {
			new_acks += ev.kind == BM_EV_ACK && strcmp(ev.peer, "rx") == 0;
			bm_event_clear(&ev);
		}
		if (zmq_poll(&it, 1, 10) > 0) {
			uint8_t h[64];
			int n = zmq_recv(raw, h, sizeof h, 0);

			/* [1, ACK, bin16 id, "rx"]: 0x94 0x01 0x06 0xc4 0x10 id... */
			if (n == 24 && h[2] == BM_CMD_ACK && h[3] == 0xc4 && h[5] == 0x42) {
				int k = h[19] << 8 | h[20];

				ck_assert(k < N && !raw_acked[k]);
				raw_acked[k] = true;
				raw_acks++;
			} else if (n >= 3 && h[2] != BM_CMD_PING && h[2] != BM_CMD_WELCOME &&
			           h[2] != BM_CMD_NOTICE) {
				other++;
			}
		}
	}
	/* The old sender got N plain ACKs (never an ACKS it cannot read), the
	 * new one N ACK events; rx sent them in far fewer frames. */
	ck_assert_int_eq(raw_acks, N);
	ck_assert_int_eq(new_acks, N);
	ck_assert_int_eq(other, 0);
	ck_assert_int_eq(tu_wait(rx, 10000), 0);
	ck_assert_int_eq(tu_stat(s_dir, "acks"), 2 * N);
	/* 2N ACKs in a handful of frames (256 ids each at most); a margin
	 * for bursts that arrive split. */
	ck_assert_int_lt(tu_stat(s_dir, "ack_frames"), N / 4);
	bm_client_destroy(&c);
	zmq_close(raw);
	zmq_ctx_term(ctx);
}
END_TEST

/* [1, SEND, id, nil, to, "t", 0, 0, 0, 0] by hand into buf; returns its size. */
static size_t
s_raw_send(uint8_t *buf, const char *to, uint8_t idbyte)
{
	size_t n = 0, tl = strlen(to);

	buf[n++] = 0x9a;
	buf[n++] = 0x01;
	buf[n++] = 0x04;
	buf[n++] = 0xc4;
	buf[n++] = 16;
	memset(buf + n, idbyte, 16);
	n += 16;
	buf[n++] = 0xc0;
	buf[n++] = (uint8_t)(0xa0 | tl);
	memcpy(buf + n, to, tl);
	n += tl;
	buf[n++] = 0xa1;
	buf[n++] = 't';
	for (int i = 0; i < 4; i++) {
		buf[n++] = 0x00;
	}
	return n;
}

START_TEST(inline_bodies_go_in_one_frame_and_to_an_old_receiver_in_two)
{
	static const uint8_t hello[] = {0x95, 0x01, 0x01, 0xa3, 'o', 'l', 'd', 0x90, 0xcd, 0x13, 0x88};
	char ep[BM_PATH_MAX + 16];
	void *ctx = zmq_ctx_new(), *raw = zmq_socket(ctx, ZMQ_DEALER);
	bm_client_t *c = tu_client(s_dir, "new", NULL, HB);
	uint8_t buf[256], got[256];
	bool old_got = false, new_got = false, nacked = false;
	int linger = 0, frames = 0;
	int64_t deadline, malformed = tu_stat(s_dir, "malformed");
	size_t n;

	ck_assert_ptr_nonnull(c);
	snprintf(ep, sizeof ep, "ipc://%s/mesh.sock", s_dir);
	zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof linger);
	ck_assert_int_eq(zmq_connect(raw, ep), 0);
	ck_assert_int_eq(zmq_send(raw, hello, sizeof hello, 0), (int)sizeof hello);
	ck_assert_int_ge(tu_wait_agent(s_dir, "old", true, 5000), 0);
	/* new -> old: small enough to go inline, but old never said it takes
	 * that: a header frame, then the body frame. */
	ck_assert_int_eq(bm_client_send(c, &(bm_send_opts_t){.to = "old"}, "hello-old", 9, NULL), 0);
	/* old -> new inline: header and body in one frame. */
	n = s_raw_send(buf, "new", 0x51);
	memcpy(buf + n, "inline!", 7);
	ck_assert_int_eq(zmq_send(raw, buf, n + 7, 0), (int)n + 7);
	/* Inline and a body frame as well: malformed, NACKed, not delivered. */
	n = s_raw_send(buf, "new", 0x52);
	memcpy(buf + n, "twice", 5);
	ck_assert_int_eq(zmq_send(raw, buf, n + 5, ZMQ_SNDMORE), (int)n + 5);
	ck_assert_int_eq(zmq_send(raw, "body", 4, 0), 4);
	deadline = bm_mono_ms() + 10000;
	while ((!old_got || !new_got || !nacked) && bm_mono_ms() < deadline) {
		zmq_pollitem_t it = {.socket = raw, .events = ZMQ_POLLIN};
		bm_event_t ev;

		while (bm_client_recv(c, 0, &ev) == 0) {
			if (ev.kind == BM_EV_MESSAGE) {
				ck_assert_str_eq(ev.msg->from, "old");
				ck_assert_uint_eq(bm_msg_size(ev.msg), 7);
				ck_assert_int_eq(memcmp(bm_msg_data(ev.msg), "inline!", 7), 0);
				ck_assert(!new_got);
				new_got = true;
				(void)bm_client_ack(c, ev.msg);
			}
			bm_event_clear(&ev);
		}
		if (zmq_poll(&it, 1, 10) > 0) {
			int more = 0, k;
			size_t sz = sizeof more;

			k = zmq_recv(raw, got, sizeof got, 0);
			ck_assert_int_ge(k, 3);
			zmq_getsockopt(raw, ZMQ_RCVMORE, &more, &sz);
			if (got[2] == BM_CMD_DELIVER) {
				/* The header frame ends with ts_ms, not the body. */
				ck_assert(more);
				ck_assert(memcmp(got + k - 9, "hello-old", 9) != 0);
				k = zmq_recv(raw, got, sizeof got, 0);
				ck_assert_int_eq(k, 9);
				ck_assert_int_eq(memcmp(got, "hello-old", 9), 0);
				zmq_getsockopt(raw, ZMQ_RCVMORE, &more, &sz);
				ck_assert(!more);
				frames = 2;
				old_got = true;
			} else if (got[2] == BM_CMD_NACK && got[5] == 0x52) {
				nacked = true;
			}
			while (more) {
				zmq_recv(raw, got, sizeof got, 0);
				zmq_getsockopt(raw, ZMQ_RCVMORE, &more, &sz);
			}
		}
	}
	ck_assert(old_got);
	ck_assert_int_eq(frames, 2);
	ck_assert(new_got);
	ck_assert(nacked);
	ck_assert_int_eq(tu_stat(s_dir, "malformed"), malformed + 1);
	bm_client_destroy(&c);
	zmq_close(raw);
	zmq_ctx_term(ctx);
}
END_TEST

/*
 * beastd relays a SEND's own frame, its header rewritten in place and
 * padded, when the sender's name is no longer than the name addressed, and
 * builds a new frame otherwise.  Either way every field and every body
 * byte arrives: inline bodies (up to 4 KiB) and bodies in a frame of
 * their own, to a name of equal, longer and shorter length, and anycast.
 */
START_TEST(deliveries_arrive_intact_whichever_name_is_longer_and_wherever_the_body_is)
{
	static const size_t sizes[] = {0, 1, 100, BM_INLINE_MAX, BM_INLINE_MAX + 1, 100000};
	static const char *const rcaps[] = {"c", NULL};
	char la[BM_NAME_MAX + 1], lb[BM_NAME_MAX + 1];
	struct {
		int from, to;
		const char *addr;
	} pairs[] = {
		{0, 2, "r"},  /* same length: no padding */
		{0, 3, NULL}, /* 1 to 64 characters: a bin 8 of padding */
		{0, 2, "@c"}, /* one byte shorter: a nil */
		{1, 2, "r"},  /* 64 to 1 characters: cannot fit, a new frame */
		{1, 3, NULL}, /* 64 and 64 */
	};
	bm_client_t *c[4];
	uint8_t *body = malloc(100000);
	bm_id_t corr;

	ck_assert_ptr_nonnull(body);
	memset(la, 'L', BM_NAME_MAX);
	la[BM_NAME_MAX] = '\0';
	memset(lb, 'M', BM_NAME_MAX);
	lb[BM_NAME_MAX] = '\0';
	c[0] = tu_client(s_dir, "s", NULL, HB);
	c[1] = tu_client(s_dir, la, NULL, HB);
	c[2] = tu_client(s_dir, "r", rcaps, HB);
	c[3] = tu_client(s_dir, lb, NULL, HB);
	for (int i = 0; i < 4; i++) {
		ck_assert_ptr_nonnull(c[i]);
	}
	bm_id_new(&corr);
	for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
		for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
			const char *from = pairs[p].from == 0 ? "s" : la;
			const char *to = pairs[p].addr ? pairs[p].addr : lb;
			char type[32];
			bm_send_opts_t o = {.to = to, .type = type, .corr = &corr, .priority = 7,
			                    .ttl_ms = 60000, .attempt = (uint32_t)k};
			bm_id_t id;
			bm_event_t ev = {0};
			bool got = false;

			snprintf(type, sizeof type, "t.%zu.%zu", p, k);
			for (size_t i = 0; i < sizes[k]; i++) {
				body[i] = (uint8_t)(i * 7 + p + k);
			}
			ck_assert_int_eq(bm_client_send(c[pairs[p].from], &o, body, sizes[k], &id), 0);
			for (int tries = 0; tries < 50 && !got; tries++) {
				if (bm_client_recv(c[pairs[p].to], 200, &ev) < 0) {
					continue;
				}
				if (ev.kind == BM_EV_MESSAGE) {
					bm_msg_t *m = ev.msg;

					got = true;
					ck_assert_str_eq(m->from, from);
					ck_assert_str_eq(m->type, type);
					ck_assert(bm_id_equal(&m->id, &id));
					ck_assert(bm_id_equal(&m->corr, &corr));
					ck_assert_uint_eq(m->priority, 7);
					ck_assert_uint_eq(m->ttl_ms, 60000);
					ck_assert_uint_eq(m->attempt, k);
					ck_assert_uint_eq(bm_msg_size(m), sizes[k]);
					ck_assert(sizes[k] == 0 ||
					          memcmp(bm_msg_data(m), body, sizes[k]) == 0);
					ck_assert_int_eq(bm_client_ack(c[pairs[p].to], m), 0);
				}
				bm_event_clear(&ev);
			}
			ck_assert_msg(got, "%s -> %s, %zu bytes: not delivered", from, to, sizes[k]);
		}
	}
	for (int i = 0; i < 4; i++) {
		bm_client_destroy(&c[i]);
	}
	free(body);
}
END_TEST

static int
s_send_one(void *arg)
{
	bm_client_t *c = tu_client(s_dir, "poker", NULL, HB);
	bm_event_t ev;
	int rc = 20;

	if (c == NULL) {
		return 10;
	}
	if (bm_client_send(c, &(bm_send_opts_t){.to = (const char *)arg}, "poke", 4, NULL) == 0) {
		for (int i = 0; i < 50 && rc != 0; i++) {
			if (bm_client_recv(c, 100, &ev) == 0) {
				rc = ev.kind == BM_EV_ACK ? 0 : rc;
				bm_event_clear(&ev);
			}
		}
	}
	bm_client_destroy(&c);
	return rc;
}

START_TEST(one_zmq_poll_loop_waits_on_the_client_and_a_plain_fd)
{
	tu_held_t held = tu_fork_held(s_send_one, "poller");
	bm_client_t *c = tu_client(s_dir, "poller", NULL, HB);
	int fds[2];
	bool got_msg = false, got_fd = false;
	pid_t poker;
	int64_t deadline = bm_mono_ms() + 10000;

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(pipe(fds), 0);
	poker = tu_release(&held);
	ck_assert_int_eq(write(fds[1], "x", 1), 1);
	while ((!got_msg || !got_fd) && bm_mono_ms() < deadline) {
		zmq_pollitem_t items[2] = {
			{.socket = bm_client_socket(c), .events = ZMQ_POLLIN},
			{.fd = fds[0], .events = ZMQ_POLLIN},
		};
		int wait = bm_client_timeout(c);
		bm_event_t ev;
		char ch;

		ck_assert_int_ge(zmq_poll(items, 2, wait > 0 ? wait : 0), 0);
		if (items[1].revents & ZMQ_POLLIN) {
			ck_assert_int_eq(read(fds[0], &ch, 1), 1);
			got_fd = true;
		}
		/* Drain whatever the client has, ready socket or not (the
		 * heartbeat runs inside recv too). */
		while (bm_client_recv(c, 0, &ev) == 0) {
			if (ev.kind == BM_EV_MESSAGE) {
				got_msg = bm_msg_size(ev.msg) == 4;
				ck_assert_int_eq(bm_client_ack(c, ev.msg), 0);
			}
			bm_event_clear(&ev);
		}
	}
	ck_assert(got_fd);
	ck_assert(got_msg);
	ck_assert_int_eq(tu_wait(poker, 5000), 0);
	close(fds[0]);
	close(fds[1]);
	bm_client_destroy(&c);
}
END_TEST

/* Waits for one blob.announce naming file "cloud.ply" of 1000 bytes. */
static int
s_announce_rx(void *arg)
{
	bm_client_t *c = tu_client(s_dir, "bob", NULL, HB);
	int64_t deadline = bm_mono_ms() + 15000;
	int rc = 30;

	(void)arg;
	if (c == NULL) {
		return 10;
	}
	while (rc == 30 && bm_mono_ms() < deadline) {
		bm_event_t ev;

		if (bm_client_recv(c, 100, &ev) < 0) {
			continue;
		}
		if (ev.kind == BM_EV_MESSAGE) {
			char body[512] = "";

			memcpy(body, bm_msg_data(ev.msg),
			       bm_msg_size(ev.msg) < sizeof body - 1 ? bm_msg_size(ev.msg) : sizeof body - 1);
			rc = strcmp(ev.msg->type, "blob.announce") == 0 &&
			             strstr(body, "\"name\":\"cloud.ply\"") != NULL &&
			             strstr(body, "\"size\":1000") != NULL &&
			             strstr(body, "pointcloud/ply") != NULL
			         ? 0
			         : 31;
			(void)bm_client_ack(c, ev.msg);
		}
		bm_event_clear(&ev);
	}
	bm_client_destroy(&c);
	return rc;
}

static pid_t
s_spawn(const char *const argv[])
{
	pid_t pid = fork();

	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		dup2(devnull, 1);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

START_TEST(blob_send_announces_each_blob_to_the_mesh_agent_of_that_name)
{
	char file[BM_PATH_MAX + 64], out[BM_PATH_MAX + 32], sock[BM_PATH_MAX + 32];
	const char *recv_argv[] = {BM_BEAST_PATH, "--dir", s_dir, "blob", "recv", "--count", "1",
	                           "--out", out, "bob", NULL};
	const char *send_argv[] = {BM_BEAST_PATH, "--dir", s_dir, "blob", "send", "bob", file, NULL};
	char data[1000];
	pid_t rx, shm_rx, tx;
	struct stat st;
	int fd;

	snprintf(file, sizeof file, "%s/cloud.ply", s_dir);
	snprintf(out, sizeof out, "%s/out", s_dir);
	snprintf(sock, sizeof sock, "%s/shm/bob.sock", s_dir);
	ck_assert_int_eq(mkdir(out, 0700), 0);
	memset(data, 'p', sizeof data);
	fd = open(file, O_CREAT | O_WRONLY, 0600);
	ck_assert_int_eq(write(fd, data, sizeof data), (int)sizeof data);
	close(fd);
	rx = tu_fork(s_announce_rx, NULL);
	ck_assert_int_ge(tu_wait_agent(s_dir, "bob", true, 5000), 0);
	shm_rx = s_spawn(recv_argv);
	for (int i = 0; i < 500 && stat(sock, &st) < 0; i++) {
		usleep(10000); /* bounded: the listener's socket appears */
	}
	ck_assert_int_eq(stat(sock, &st), 0);
	tx = s_spawn(send_argv);
	ck_assert_int_eq(tu_wait(tx, 20000), 0);
	ck_assert_int_eq(tu_wait(shm_rx, 20000), 0);
	ck_assert_int_eq(tu_wait(rx, 20000), 0);
	snprintf(file, sizeof file, "%s/cloud.ply", out);
	ck_assert_int_eq(stat(file, &st), 0);
	ck_assert_int_eq(st.st_size, 1000);
}
END_TEST

/* ---- beastd process behaviour ---- */

START_TEST(a_second_beastd_on_a_live_dir_refuses_to_start)
{
	pid_t second = fork();

	if (second == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		dup2(devnull, 2);
		execl(BM_BEASTD_PATH, "beastd", "--dir", s_dir, (char *)NULL);
		_exit(127);
	}
	ck_assert_int_eq(tu_wait(second, 5000), 1);
	ck_assert(tu_broker_answers(s_dir, 1000));
}
END_TEST

START_TEST(sigterm_stops_beastd_cleanly_and_removes_its_socket)
{
	char sock[BM_PATH_MAX + 16];
	struct stat st;

	snprintf(sock, sizeof sock, "%s/mesh.sock", s_dir);
	ck_assert_int_eq(stat(sock, &st), 0);
	ck_assert_int_eq(tu_term(s_beastd, 5000), 0);
	s_beastd = 0;
	ck_assert_int_eq(stat(sock, &st), -1);
	ck_assert_int_eq(errno, ENOENT);
}
END_TEST

/* bm_mkdirs makes a path 0700; bm_rmtree removes a tree but only the
 * symlink in it, never what the link points to. */
START_TEST(mkdirs_makes_private_dirs_and_rmtree_never_follows_a_link)
{
	char *dir = tu_scratch_dir(), *keep = tu_scratch_dir();
	char p[BM_PATH_MAX], q[BM_PATH_MAX];
	struct stat st;
	FILE *f;

	ck_assert_ptr_nonnull(dir);
	ck_assert_ptr_nonnull(keep);
	snprintf(p, sizeof p, "%s/tree/a/b", dir);
	ck_assert_int_eq(bm_mkdirs(p), 0);
	ck_assert_int_eq(bm_mkdirs(p), 0); /* exists: fine */
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0700);
	snprintf(q, sizeof q, "%s/kept", keep);
	f = fopen(q, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	snprintf(p, sizeof p, "%s/tree/a/file", dir);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	snprintf(p, sizeof p, "%s/tree/a/b/link", dir);
	ck_assert_int_eq(symlink(keep, p), 0);
	snprintf(p, sizeof p, "%s/tree", dir);
	ck_assert_int_eq(bm_rmtree(p), 0);
	ck_assert_int_eq(lstat(p, &st), -1);
	ck_assert_int_eq(stat(q, &st), 0); /* the link's target is untouched */
	ck_assert_int_eq(bm_rmtree(p), 0); /* already gone */
	ck_assert_int_eq(bm_rmtree(""), -EINVAL);
	tu_rmrf(&dir);
	tu_rmrf(&keep);
}
END_TEST

START_TEST(a_runtime_dir_open_to_others_is_refused)
{
	char *dir = tu_scratch_dir();
	char path[BM_PATH_MAX];
	bm_broker_t *b = NULL;

	ck_assert_ptr_nonnull(dir);
	ck_assert_int_eq(chmod(dir, 0755), 0);
	ck_assert_int_eq(bm_rundir_resolve(dir, true, path), BM_EUNSAFEDIR);
	ck_assert_int_eq(bm_broker_open(&(bm_broker_opts_t){.dir = dir}, &b), BM_EUNSAFEDIR);
	ck_assert_int_eq(chmod(dir, 0700), 0);
	ck_assert_int_eq(bm_rundir_resolve(dir, true, path), 0);
	ck_assert_int_eq(bm_client_open(&(bm_client_opts_t){.dir = dir}, &(bm_client_t *){NULL}),
	                 BM_ENOBROKER);
	tu_rmrf(&dir);
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("mesh");
	TCase *tc = tcase_create("routing");

	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, two_agents_exchange_100000_messages_none_lost_duplicated_or_reordered);
	tcase_add_test(tc, a_request_gets_its_reply_and_other_traffic_is_kept);
	tcase_add_test(tc, anycast_spreads_requests_over_three_agents);
	tcase_add_test(tc, sends_that_cannot_be_delivered_are_refused_with_a_reason);
	tcase_add_test(tc, an_oversized_body_from_a_raw_peer_gets_a_toobig_nack);
	tcase_add_test(tc, acks_of_a_burst_travel_together_and_an_old_sender_gets_them_one_by_one);
	tcase_add_test(tc, inline_bodies_go_in_one_frame_and_to_an_old_receiver_in_two);
	tcase_add_test(tc, deliveries_arrive_intact_whichever_name_is_longer_and_wherever_the_body_is);
	tcase_add_test(tc, garbage_from_a_raw_dealer_does_not_stop_routing);
	tcase_add_test(tc, one_zmq_poll_loop_waits_on_the_client_and_a_plain_fd);
	tcase_add_test(tc, blob_send_announces_each_blob_to_the_mesh_agent_of_that_name);
	suite_add_tcase(s, tc);

	tc = tcase_create("liveness");
	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, a_killed_agent_is_noticed_within_three_heartbeats);
	tcase_add_test(tc, traffic_resumes_after_beastd_is_killed_and_restarted);
	tcase_add_test(tc, an_idle_agent_is_back_in_a_restarted_beastd_long_before_its_heartbeat);
	tcase_add_test(tc, a_live_agents_name_cannot_be_taken_but_a_dead_ones_can);
	suite_add_tcase(s, tc);

	tc = tcase_create("beastd");
	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, a_second_beastd_on_a_live_dir_refuses_to_start);
	tcase_add_test(tc, sigterm_stops_beastd_cleanly_and_removes_its_socket);
	tcase_add_test(tc, a_runtime_dir_open_to_others_is_refused);
	tcase_add_test(tc, mkdirs_makes_private_dirs_and_rmtree_never_follows_a_link);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(s_suite());
}

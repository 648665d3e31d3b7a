/*
 * test_outbox.c - reliable sends with real processes and real files:
 * beastd as a child, senders and receivers in the test process or forked,
 * outbox and de-dup journals on disk, kill -9 of everything.
 *
 * BM_SOAK_MESSAGES and BM_SOAK_KILLS scale the kill -9 soak (the sanitizer
 * build in CI sets them); the default is the full 100,000 messages with six
 * kills each of sender, receiver and beastd.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define HB 200 /* heartbeat, ms */

static char *s_dir;      /* beastd's runtime dir */
static char *s_state;    /* journals */
static pid_t s_beastd;

static void
s_start(void)
{
	s_state = tu_scratch_dir();
	ck_assert_ptr_nonnull(s_state);
	ck_assert(tu_broker_up(&s_dir, &s_beastd, HB));
}

static void
s_stop(void)
{
	tu_broker_down(&s_dir, &s_beastd);
	tu_rmrf(&s_state);
}

static char *
s_path(char *out, size_t cap, const char *agent, const char *what)
{
	snprintf(out, cap, "%s/%s", s_state, agent);
	(void)mkdir(out, 0700);
	snprintf(out, cap, "%s/%s/%s", s_state, agent, what);
	return out;
}

static bm_outbox_t *
s_outbox(const char *agent, bm_client_t *c, const bm_outbox_opts_t *tmpl)
{
	bm_outbox_opts_t o = tmpl ? *tmpl : (bm_outbox_opts_t){0};
	bm_outbox_t *ob = NULL;
	char p[512];

	o.dir = s_path(p, sizeof p, agent, "outbox");
	o.client = c;
	ck_assert_int_eq(bm_outbox_open(&o, &ob), 0);
	return ob;
}

/* Pumps the outbox and feeds it the sender client's events until pred
 * holds or timeout_ms passes.  Other events are dropped. */
static bool
s_drive(bm_outbox_t *ob, bm_client_t *c, bool (*pred)(bm_outbox_t *, void *), void *arg,
        int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;

	while (bm_mono_ms() < deadline) {
		bm_event_t ev;
		int wait;

		ck_assert_int_ge(bm_outbox_pump(ob), 0);
		if (pred(ob, arg)) {
			return true;
		}
		wait = bm_outbox_timeout(ob);
		if (wait < 0 || wait > 20) {
			wait = 20;
		}
		if (bm_client_recv(c, wait, &ev) == 0) {
			(void)bm_outbox_handle(ob, &ev);
			bm_event_clear(&ev);
		}
	}
	return pred(ob, arg);
}

static bool
s_has_dead(bm_outbox_t *ob, void *arg)
{
	bm_outbox_stats_t st;

	bm_outbox_stats(ob, &st);
	return st.dead >= (uint64_t)(size_t)arg;
}

static bool
s_empty(bm_outbox_t *ob, void *arg)
{
	(void)arg;
	return bm_outbox_count(ob) == 0;
}

/* ---- a receiver that de-duplicates, in a child process ---- */

typedef struct {
	const char *name;   /* agent name */
	int timeout_ms;     /* bound on its life */
	size_t window;      /* dedup window; 0 = default */
} s_rcv_arg_t;

static volatile sig_atomic_t s_rcv_stop;

static void
s_on_term(int sig)
{
	(void)sig;
	s_rcv_stop = 1;
}

/*
 * Receives, de-duplicates, stores each new message's body as the mark's
 * note (the handler's effect, atomic with the mark), commits the batch and
 * only then ACKs it.  Runs until SIGTERM; survives beastd restarts.
 */
static int
s_receiver(void *argp)
{
	s_rcv_arg_t *a = argp;
	bm_dedup_opts_t dopt = {.window = a->window};
	bm_dedup_t *d = NULL;
	bm_client_t *c = NULL;
	int64_t deadline = bm_mono_ms() + a->timeout_ms;
	bm_msg_t *batch[512];
	char p[512];

	signal(SIGTERM, s_on_term);
	if (bm_dedup_open(s_path(p, sizeof p, a->name, "dedup"), &dopt, &d) < 0) {
		return 2;
	}
	while (c == NULL && !s_rcv_stop && bm_mono_ms() < deadline) {
		c = tu_client(s_dir, a->name, NULL, HB);
		if (c == NULL) {
			usleep(20000);
		}
	}
	while (c != NULL && !s_rcv_stop && bm_mono_ms() < deadline) {
		int n = 0;
		bm_event_t ev;
		int rc = bm_client_recv(c, 100, &ev);

		while (rc == 0) {
			if (ev.kind == BM_EV_MESSAGE) {
				bm_msg_t *m = ev.msg;

				ev.msg = NULL;
				if (bm_dedup_seen(d, m->from, &m->id) == 0 &&
				    bm_dedup_mark(d, m->from, &m->id, bm_msg_data(m), bm_msg_size(m)) < 0) {
					return 3;
				}
				batch[n++] = m;
			}
			bm_event_clear(&ev);
			if (n == 512) {
				break;
			}
			rc = bm_client_recv(c, 0, &ev);
		}
		if (n > 0 && bm_dedup_commit(d) < 0) {
			return 4;
		}
		for (int i = 0; i < n; i++) {
			(void)bm_client_ack(c, batch[i]);
			bm_msg_destroy(&batch[i]);
		}
	}
	bm_client_destroy(&c);
	bm_dedup_destroy(&d);
	return 0;
}

typedef struct {
	uint64_t count[64];  /* how often each small key was seen */
	uint64_t total;      /* notes */
	uint64_t *seen;      /* soak: per sequence number */
	uint64_t nseen;      /* its length */
	uint64_t out_of_range;
} s_notes_t;

static int
s_note(void *arg, const char *from, const bm_id_t *id, const void *note, size_t len)
{
	s_notes_t *n = arg;
	uint64_t k;

	(void)from;
	(void)id;
	n->total++;
	if (len != sizeof k) {
		n->out_of_range++;
		return 0;
	}
	memcpy(&k, note, sizeof k);
	if (n->seen != NULL) {
		if (k < n->nseen) {
			n->seen[k]++;
		} else {
			n->out_of_range++;
		}
	} else if (k < 64) {
		n->count[k]++;
	}
	return 0;
}

/* Reads back what a (stopped) receiver's handler stored. */
static void
s_read_notes(const char *agent, s_notes_t *n, size_t window)
{
	bm_dedup_opts_t o = {.replay_note = s_note, .arg = n, .window = window};
	bm_dedup_t *d = NULL;
	char p[512];

	ck_assert_int_eq(bm_dedup_open(s_path(p, sizeof p, agent, "dedup"), &o, &d), 0);
	bm_dedup_destroy(&d);
}

/* ---- dead letters ---- */

START_TEST(a_message_for_an_absent_agent_dies_of_its_ttl_and_requeue_then_delivers_it)
{
	bm_outbox_opts_t oo = {.base_ms = 20, .cap_ms = 80, .ttl_ms = 400, .ack_timeout_ms = 500};
	s_rcv_arg_t ra = {.name = "rcv", .timeout_ms = 20000};
	tu_held_t held = tu_fork_held(s_receiver, &ra); /* before we have threads */
	bm_client_t *c = tu_client(s_dir, "snd", NULL, HB);
	bm_outbox_t *ob;
	bm_outbox_entry_t *v = NULL;
	bm_outbox_send_opts_t so = {.to = "rcv", .type = "t"};
	uint64_t k = 7;
	size_t n = 0;
	bm_id_t id;
	pid_t rcv;
	s_notes_t notes = {0};

	ck_assert_ptr_nonnull(c);
	ob = s_outbox("snd", c, &oo);
	ck_assert_int_eq(bm_outbox_send(ob, &so, &k, sizeof k, &id), 0);
	ck_assert(s_drive(ob, c, s_has_dead, (void *)1, 5000));
	ck_assert_int_eq(bm_outbox_list(ob, true, &v, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert(bm_id_equal(&v[0].id, &id));
	ck_assert_int_eq(v[0].dead_code, BM_OUTBOX_DEAD_TTL);
	ck_assert_uint_ge(v[0].attempts, 2);
	free(v);
	/* Dead survives a restart of the sender. */
	bm_outbox_destroy(&ob);
	ob = s_outbox("snd", c, &oo);
	ck_assert_int_eq(bm_outbox_list(ob, true, &v, &n), 0);
	ck_assert_uint_eq(n, 1);
	free(v);
	ck_assert_uint_eq(bm_outbox_count(ob), 0);

	rcv = tu_release(&held);
	ck_assert_int_ge(tu_wait_agent(s_dir, "rcv", true, 5000), 0);
	ck_assert_int_eq(bm_outbox_requeue(ob, &id), 0);
	ck_assert(s_drive(ob, c, s_empty, NULL, 5000));
	ck_assert_int_eq(bm_outbox_list(ob, true, &v, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(v);
	ck_assert_int_eq(tu_term(rcv, 5000), 0);
	s_read_notes("rcv", &notes, 0);
	ck_assert_uint_eq(notes.total, 1);
	ck_assert_uint_eq(notes.count[7], 1);
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
}
END_TEST

START_TEST(a_message_for_an_absent_agent_dies_after_its_attempts_and_can_be_purged)
{
	bm_outbox_opts_t oo = {.base_ms = 10, .cap_ms = 40, .max_attempts = 3};
	bm_client_t *c = tu_client(s_dir, "snd", NULL, HB);
	bm_outbox_send_opts_t so = {.to = "nobody"};
	bm_outbox_entry_t *v = NULL;
	bm_outbox_stats_t st;
	bm_outbox_t *ob;
	size_t n = 0;

	ck_assert_ptr_nonnull(c);
	ob = s_outbox("snd", c, &oo);
	ck_assert_int_eq(bm_outbox_send(ob, &so, "x", 1, NULL), 0);
	so.max_attempts = 5;
	ck_assert_int_eq(bm_outbox_send(ob, &so, "y", 1, NULL), 0);
	ck_assert(s_drive(ob, c, s_has_dead, (void *)2, 5000));
	ck_assert_int_eq(bm_outbox_list(ob, true, &v, &n), 0);
	ck_assert_uint_eq(n, 2);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(v[i].dead_code, BM_OUTBOX_DEAD_ATTEMPTS);
		ck_assert_uint_eq(v[i].attempts, v[i].max_attempts);
	}
	free(v);
	bm_outbox_stats(ob, &st);
	ck_assert_uint_eq(st.retries, 2 + 4);
	ck_assert_int_eq(bm_outbox_purge_dead(ob), 2);
	bm_outbox_destroy(&ob);
	ob = s_outbox("snd", c, &oo);
	bm_outbox_stats(ob, &st);
	ck_assert_uint_eq(st.dead, 0);
	ck_assert_uint_eq(st.pending, 0);
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
}
END_TEST

/* ---- sending ---- */

START_TEST(stored_messages_go_out_after_a_restart_highest_priority_first)
{
	bm_client_t *c, *r;
	bm_outbox_t *ob = s_outbox("snd", NULL, NULL);
	bm_outbox_send_opts_t so = {.to = "rcv"};
	int order[6], got = 0;
	int64_t deadline;

	/* Stored with no broker in sight. */
	for (int i = 0; i < 6; i++) {
		so.priority = (uint8_t)(i % 3 == 0 ? 9 : 1);
		ck_assert_int_eq(bm_outbox_put(ob, &so, &i, sizeof i, NULL), 0);
	}
	ck_assert_int_eq(bm_outbox_commit(ob), 0);
	ck_assert_int_eq(bm_outbox_pump(ob), 0);
	bm_outbox_destroy(&ob);

	r = tu_client(s_dir, "rcv", NULL, HB);
	c = tu_client(s_dir, "snd", NULL, HB);
	ck_assert_ptr_nonnull(r);
	ck_assert_ptr_nonnull(c);
	ob = s_outbox("snd", c, NULL);
	ck_assert_uint_eq(bm_outbox_count(ob), 6);
	ck_assert_int_eq(bm_outbox_pump(ob), 6);
	deadline = bm_mono_ms() + 5000;
	while (got < 6 && bm_mono_ms() < deadline) {
		bm_event_t ev;

		if (bm_client_recv(r, 50, &ev) == 0) {
			if (ev.kind == BM_EV_MESSAGE) {
				memcpy(&order[got++], bm_msg_data(ev.msg), sizeof(int));
				ck_assert_int_eq(bm_client_ack(r, ev.msg), 0);
			}
			bm_event_clear(&ev);
		}
	}
	ck_assert_int_eq(got, 6);
	/* 0 and 3 had priority 9: they went first, each priority in order. */
	ck_assert_int_eq(order[0], 0);
	ck_assert_int_eq(order[1], 3);
	ck_assert_int_eq(order[2], 1);
	ck_assert_int_eq(order[5], 5);
	ck_assert(s_drive(ob, c, s_empty, NULL, 5000));
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
	bm_client_destroy(&r);
}
END_TEST

START_TEST(the_pending_count_and_byte_limits_refuse_with_efull)
{
	bm_outbox_opts_t oo = {.max_pending = 10, .max_bytes = 1000};
	bm_outbox_t *ob = s_outbox("snd", NULL, &oo);
	bm_outbox_send_opts_t so = {.to = "rcv"};
	bm_outbox_item_t items[3] = {{so, "a", 1}, {so, "b", 1}, {so, "c", 1}};
	char big[600] = {0};

	ck_assert_int_eq(bm_outbox_put(ob, &so, big, sizeof big, NULL), 0);
	ck_assert_int_eq(bm_outbox_put(ob, &so, big, sizeof big, NULL), BM_EFULL);
	for (int i = 0; i < 9; i++) {
		ck_assert_int_eq(bm_outbox_put(ob, &so, "x", 1, NULL), 0);
	}
	ck_assert_int_eq(bm_outbox_put(ob, &so, "x", 1, NULL), BM_EFULL);
	ck_assert_int_eq(bm_outbox_put_batch(ob, items, 3, NULL), BM_EFULL);
	ck_assert_int_eq(bm_outbox_commit(ob), 0);
	ck_assert_uint_eq(bm_outbox_count(ob), 10);
	bm_outbox_destroy(&ob);
}
END_TEST

START_TEST(an_expiring_message_is_withdrawn_at_its_ttl_even_after_a_restart)
{
	bm_outbox_opts_t oo = {.base_ms = 20, .cap_ms = 80, .ack_timeout_ms = 300};
	bm_client_t *c = tu_client(s_dir, "snd", NULL, HB);
	bm_outbox_send_opts_t so = {.to = "nobody", .type = "reply", .ttl_ms = 400, .expire = true};
	bm_outbox_stats_t st;
	bm_outbox_t *ob;

	ck_assert_ptr_nonnull(c);
	ob = s_outbox("snd", c, &oo);
	ck_assert_int_eq(bm_outbox_put(ob, &so, "r", 1, NULL), 0);
	ck_assert_int_eq(bm_outbox_commit(ob), 0);
	/* The flag is in the journal: a restart keeps it. */
	bm_outbox_destroy(&ob);
	ob = s_outbox("snd", c, &oo);
	ck_assert_uint_eq(bm_outbox_count(ob), 1);
	ck_assert(s_drive(ob, c, s_empty, NULL, 5000));
	bm_outbox_stats(ob, &st);
	ck_assert_uint_eq(st.expired, 1);
	ck_assert_uint_eq(st.dead, 0);
	bm_outbox_destroy(&ob);
	/* ... and its withdrawal too. */
	ob = s_outbox("snd", c, &oo);
	ck_assert_uint_eq(bm_outbox_count(ob), 0);
	bm_outbox_stats(ob, &st);
	ck_assert_uint_eq(st.dead, 0);
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
}
END_TEST

START_TEST(a_notice_that_the_destination_came_online_retries_at_once)
{
	/* A long backoff: only the notice can bring the retry in time. */
	bm_outbox_opts_t oo = {.base_ms = 60000, .cap_ms = 60000};
	s_rcv_arg_t ra = {.name = "rcv", .timeout_ms = 20000};
	tu_held_t held = tu_fork_held(s_receiver, &ra); /* before we have threads */
	bm_client_t *c = tu_client(s_dir, "snd", NULL, HB);
	bm_outbox_send_opts_t so = {.to = "rcv"};
	bm_outbox_entry_t *v = NULL;
	bm_outbox_t *ob;
	size_t n = 0;
	pid_t rcv;
	int64_t t0;

	ck_assert_ptr_nonnull(c);
	ob = s_outbox("snd", c, &oo);
	ck_assert_int_eq(bm_outbox_send(ob, &so, "x", 1, NULL), 0);
	/* Wait for the NACK: then it is backing off. */
	t0 = bm_mono_ms();
	while (bm_mono_ms() - t0 < 3000) {
		bm_event_t ev;

		if (bm_client_recv(c, 50, &ev) == 0) {
			int was_nack = ev.kind == BM_EV_NACK;

			(void)bm_outbox_handle(ob, &ev);
			bm_event_clear(&ev);
			if (was_nack) {
				break;
			}
		}
	}
	ck_assert_int_eq(bm_outbox_list(ob, false, &v, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert(!v[0].inflight);
	free(v);
	rcv = tu_release(&held);
	t0 = bm_mono_ms();
	ck_assert(s_drive(ob, c, s_empty, NULL, 5000));
	ck_assert_int_lt(bm_mono_ms() - t0, 5000);
	ck_assert_int_eq(tu_term(rcv, 5000), 0);
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
}
END_TEST

/* n messages to rcv stored and ACKed (the ACKs made up here) behind what
 * the outbox holds: ~150-byte records, ~110 segments of 4 KiB for 3000;
 * compaction keeps the journal to a few segments. */
static void
s_churn(bm_outbox_t *ob, int n)
{
	bm_outbox_send_opts_t so = {.to = "rcv"};

	for (int i = 0; i < n; i++) {
		bm_event_t ev = {.kind = BM_EV_ACK};

		ck_assert_int_eq(bm_outbox_put(ob, &so, "new", 3, &ev.id), 0);
		ck_assert_int_ge(bm_outbox_pump(ob), 0);
		ck_assert_int_eq(bm_outbox_handle(ob, &ev), 1);
	}
	ck_assert_int_ge(bm_outbox_pump(ob), 0);
	ck_assert_uint_le(bm_journal_segments(bm_outbox_journal(ob)), 10);
}

START_TEST(an_old_pending_message_does_not_pin_the_outbox_journal)
{
	bm_outbox_opts_t oo = {.segment_size = 4096};
	bm_outbox_t *ob = s_outbox("snd", NULL, &oo);
	bm_outbox_send_opts_t so = {.to = "rcv", .priority = 7, .max_attempts = 9};
	bm_outbox_entry_t e;
	bm_id_t old;

	ck_assert_int_eq(bm_outbox_put(ob, &so, "old", 3, &old), 0);
	ck_assert_int_eq(bm_outbox_commit(ob), 0);
	s_churn(ob, 3000);
	bm_outbox_destroy(&ob);
	ob = s_outbox("snd", NULL, &oo);
	ck_assert_uint_eq(bm_outbox_count(ob), 1);
	ck_assert_int_eq(bm_outbox_get(ob, &old, &e), 0);
	ck_assert_uint_eq(e.priority, 7);
	ck_assert_uint_eq(e.max_attempts, 9);
	ck_assert_str_eq(e.to, "rcv");
	bm_outbox_destroy(&ob);
}
END_TEST

START_TEST(a_dead_letter_keeps_the_refusers_words_across_compaction_and_restart)
{
	bm_outbox_opts_t oo = {.base_ms = 20, .cap_ms = 80, .ttl_ms = 1500, .segment_size = 4096};
	bm_client_t *c = tu_client(s_dir, "snd", NULL, HB);
	bm_outbox_send_opts_t so = {.to = "far@h2", .max_attempts = 100000};
	bm_outbox_entry_t e;
	bm_outbox_t *ob;
	bm_id_t dead;

	/* No bridge is online: beastd refuses every attempt in its words. */
	ck_assert_ptr_nonnull(c);
	ob = s_outbox("snd", c, &oo);
	ck_assert_int_eq(bm_outbox_send(ob, &so, "x", 1, &dead), 0);
	ck_assert(s_drive(ob, c, s_has_dead, (void *)1, 10000));
	ck_assert_int_eq(bm_outbox_get(ob, &dead, &e), 0);
	ck_assert_int_eq(e.dead_code, BM_OUTBOX_DEAD_TTL);
	ck_assert_msg(strstr(e.why, "no bridge") && strstr(e.why, "'far@h2'"), "why: %s", e.why);
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
	/* ~110 segments of traffic behind it: compaction moves it forward. */
	ob = s_outbox("snd", NULL, &oo);
	s_churn(ob, 3000);
	bm_outbox_destroy(&ob);
	ob = s_outbox("snd", NULL, &oo);
	ck_assert_int_eq(bm_outbox_get(ob, &dead, &e), 0);
	ck_assert_int_eq(e.dead_code, BM_OUTBOX_DEAD_TTL);
	ck_assert_msg(strstr(e.why, "no bridge") && strstr(e.why, "'far@h2'"), "why: %s", e.why);
	/* Requeued, it starts afresh: no words until a new refusal. */
	ck_assert_int_eq(bm_outbox_requeue(ob, &dead), 0);
	ck_assert_int_eq(bm_outbox_get(ob, &dead, &e), 0);
	ck_assert_str_eq(e.why, "");
	bm_outbox_destroy(&ob);
	ob = s_outbox("snd", NULL, &oo);
	ck_assert_int_eq(bm_outbox_get(ob, &dead, &e), 0);
	ck_assert_int_eq(e.dead_code, 0);
	ck_assert_str_eq(e.why, "");
	bm_outbox_destroy(&ob);
}
END_TEST

static bool
s_inflight(bm_outbox_t *ob, void *arg)
{
	bm_outbox_entry_t e;

	return bm_outbox_get(ob, arg, &e) == 0 && e.inflight;
}

/* Waits until the message is in flight again, then refuses it with code
 * and text as another host's bridge would; returns its last refusal. */
static const char *
s_refuse(bm_outbox_t *ob, bm_client_t *c, bm_id_t *id, int code, const char *text)
{
	static bm_outbox_entry_t e;
	bm_event_t ev = {.kind = BM_EV_NACK, .code = code, .id = *id};

	ck_assert(s_drive(ob, c, s_inflight, id, 5000));
	snprintf(ev.text, sizeof ev.text, "%s", text);
	ck_assert_int_eq(bm_outbox_handle(ob, &ev), 1);
	ck_assert_int_eq(bm_outbox_get(ob, id, &e), 0);
	return e.why;
}

START_TEST(an_expiry_does_not_hide_the_refusal_that_explains_it)
{
	bm_outbox_opts_t oo = {.base_ms = 10, .cap_ms = 10};
	bm_client_t *c = tu_client(s_dir, "snd", NULL, HB);
	bm_client_t *r = tu_client(s_dir, "rcv", NULL, HB);
	bm_outbox_send_opts_t so = {.to = "rcv"};
	const char *gone = "on host h2: no agent named 'ghost' is online";
	bm_outbox_t *ob;
	bm_id_t id;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(r);
	ob = s_outbox("snd", c, &oo);
	ck_assert_int_eq(bm_outbox_send(ob, &so, "x", 1, &id), 0);
	/* rcv never answers; the refusals come as another host would send them. */
	ck_assert_str_eq(s_refuse(ob, c, &id, BM_ENOAGENT, gone), gone);
	ck_assert_str_eq(s_refuse(ob, c, &id, BM_ETTL, "on host h2: expired before delivery"), gone);
	/* A refusal with new words still replaces the old ones. */
	ck_assert_str_eq(s_refuse(ob, c, &id, BM_EBUSY, "on host h2: ghost is not keeping up"),
	                 "on host h2: ghost is not keeping up");
	bm_outbox_destroy(&ob);
	bm_client_destroy(&r);
	bm_client_destroy(&c);
}
END_TEST

/* ---- de-duplication ---- */

START_TEST(a_retry_after_a_lost_ack_reaches_the_handler_once_also_across_a_receiver_restart)
{
	bm_outbox_opts_t oo = {.ack_timeout_ms = 150, .base_ms = 10, .cap_ms = 20};
	bm_client_t *c = tu_client(s_dir, "snd", NULL, HB);
	bm_client_t *r = tu_client(s_dir, "rcv", NULL, HB);
	bm_outbox_send_opts_t so = {.to = "rcv"};
	bm_outbox_t *ob;
	bm_dedup_t *d = NULL;
	char p[512];
	int handled = 0, delivered = 0;
	uint64_t k = 3;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(r);
	ob = s_outbox("snd", c, &oo);
	ck_assert_int_eq(bm_dedup_open(s_path(p, sizeof p, "rcv", "dedup"), NULL, &d), 0);
	ck_assert_int_eq(bm_outbox_send(ob, &so, &k, sizeof k, NULL), 0);
	/* Three deliveries of the same message: the first ACK is "lost" (not
	 * sent), then the receiver restarts (dedup reopened), and the ACK of
	 * the third goes out. */
	for (int64_t deadline = bm_mono_ms() + 8000; delivered < 3 && bm_mono_ms() < deadline;) {
		bm_event_t ev;

		(void)bm_outbox_pump(ob);
		if (bm_client_recv(c, 5, &ev) == 0) {
			(void)bm_outbox_handle(ob, &ev);
			bm_event_clear(&ev);
		}
		if (bm_client_recv(r, 5, &ev) == 0) {
			if (ev.kind == BM_EV_MESSAGE) {
				delivered++;
				if (bm_dedup_seen(d, ev.msg->from, &ev.msg->id) == 0) {
					handled++;
					ck_assert_int_eq(bm_dedup_mark(d, ev.msg->from, &ev.msg->id, NULL, 0), 0);
				}
				ck_assert_int_eq(bm_dedup_commit(d), 0);
				if (delivered == 2) {
					bm_dedup_destroy(&d);
					ck_assert_int_eq(bm_dedup_open(p, NULL, &d), 0);
					ck_assert_int_eq(bm_dedup_seen(d, ev.msg->from, &ev.msg->id), 1);
				}
				if (delivered == 3) {
					ck_assert_int_eq(bm_client_ack(r, ev.msg), 0);
				}
			}
			bm_event_clear(&ev);
		}
	}
	ck_assert_int_eq(delivered, 3);
	ck_assert_int_eq(handled, 1);
	ck_assert(s_drive(ob, c, s_empty, NULL, 5000));
	bm_dedup_destroy(&d);
	bm_outbox_destroy(&ob);
	bm_client_destroy(&r);
	bm_client_destroy(&c);
}
END_TEST

START_TEST(a_quiet_senders_marks_do_not_pin_the_dedup_journal)
{
	bm_dedup_opts_t o = {.window = 100, .segment_size = 4096};
	bm_dedup_t *d = NULL;
	bm_id_t quiet, first, last;
	char p[512];

	s_path(p, sizeof p, "rcv", "dedup");
	ck_assert_int_eq(bm_dedup_open(p, &o, &d), 0);
	bm_id_new(&quiet);
	ck_assert_int_eq(bm_dedup_mark(d, "quiet", &quiet, "q", 1), 0);
	for (int i = 0; i < 5000; i++) {
		bm_id_t id;

		bm_id_new(&id);
		if (i == 0) {
			first = id;
		}
		last = id;
		ck_assert_int_eq(bm_dedup_mark(d, "busy", &id, NULL, 0), 0);
		if (i % 10 == 9) {
			ck_assert_int_eq(bm_dedup_commit(d), 0);
		}
	}
	ck_assert_int_eq(bm_dedup_commit(d), 0);
	/* ~60-byte marks in 4 KiB segments: 5000 of them would fill ~75. */
	ck_assert_uint_le(bm_journal_segments(bm_dedup_journal(d)), 6);
	bm_dedup_destroy(&d);
	ck_assert_int_eq(bm_dedup_open(p, &o, &d), 0);
	ck_assert_int_eq(bm_dedup_seen(d, "quiet", &quiet), 1);
	ck_assert_int_eq(bm_dedup_seen(d, "busy", &last), 1);
	ck_assert_int_eq(bm_dedup_seen(d, "busy", &first), 0);
	bm_dedup_destroy(&d);
}
END_TEST

/* ---- atomic batches ---- */

#define S_BATCH 200

static int
s_batch_writer(void *arg)
{
	bm_outbox_send_opts_t so = {.to = "rcv"};
	bm_outbox_item_t items[S_BATCH];
	static char body[2048];
	bm_outbox_t *ob = NULL;
	bm_outbox_opts_t o = {0};
	char p[512];

	(void)arg;
	o.dir = s_path(p, sizeof p, "snd", "outbox");
	if (bm_outbox_open(&o, &ob) < 0) {
		return 2;
	}
	for (int i = 0; i < S_BATCH; i++) {
		items[i] = (bm_outbox_item_t){so, body, sizeof body};
	}
	/* Until killed (400 KiB a batch: most of the time goes to big writes). */
	for (int round = 0; round < 2000; round++) {
		if (bm_outbox_put_batch(ob, items, S_BATCH, NULL) < 0 || bm_outbox_commit(ob) < 0) {
			return 3;
		}
	}
	return 0;
}

START_TEST(an_atomic_batch_killed_mid_append_is_all_or_nothing)
{
	for (int round = 0; round < 6; round++) {
		pid_t pid = tu_fork(s_batch_writer, NULL);
		bm_journal_report_t rep;
		bm_outbox_opts_t o = {.report = &rep};
		bm_outbox_t *ob = NULL;
		char p[512];

		ck_assert_int_gt(pid, 0);
		usleep(50000 + (useconds_t)(rand() % 200000));
		tu_kill9(pid);
		o.dir = s_path(p, sizeof p, "snd", "outbox");
		ck_assert_int_eq(bm_outbox_open(&o, &ob), 0);
		ck_assert_uint_eq(bm_outbox_count(ob) % S_BATCH, 0);
		bm_outbox_destroy(&ob);
	}
}
END_TEST

/* Tears the unsynced tail of every file it wrote at the Nth sync, then
 * dies: a power cut in the middle of a batch's write. */
static int s_tear_at, s_syncs;
static int s_tear_fd = -1;
static off_t s_tear_synced;

static ssize_t
s_tear_write(void *arg, int fd, const void *buf, size_t len)
{
	ssize_t n;

	(void)arg;
	if (fd != s_tear_fd) {
		struct stat st;

		s_tear_fd = fd;
		s_tear_synced = fstat(fd, &st) == 0 ? st.st_size : 0;
	}
	n = write(fd, buf, len);
	return n < 0 ? -errno : n;
}

static int
s_tear_sync(void *arg, int fd, bool is_dir)
{
	struct stat st;

	(void)arg;
	if (++s_syncs == s_tear_at) {
		if (s_tear_fd >= 0 && fstat(s_tear_fd, &st) == 0 && st.st_size > s_tear_synced) {
			/* Keep about half of what was not yet synced. */
			(void)!ftruncate(s_tear_fd, s_tear_synced + (st.st_size - s_tear_synced) / 2);
		}
		_exit(42);
	}
	if (is_dir) {
		return fsync(fd) < 0 ? -errno : 0;
	}
	if (fdatasync(fd) < 0) {
		return -errno;
	}
	if (fd == s_tear_fd && fstat(fd, &st) == 0) {
		s_tear_synced = st.st_size;
	}
	return 0;
}

START_TEST(an_atomic_batch_torn_at_a_sync_is_all_or_nothing_and_stored_batches_stay)
{
	for (int round = 0; round < 8; round++) {
		int p[2];
		pid_t pid;
		uint64_t reported = 0, v;
		bm_outbox_t *ob = NULL;
		char path[512];

		ck_assert_int_eq(pipe(p), 0);
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			bm_journal_ops_t ops = {s_tear_write, s_tear_sync, NULL};
			bm_outbox_opts_t o = {.ops = &ops, .segment_size = 64 << 10};
			bm_outbox_send_opts_t so = {.to = "rcv"};
			bm_outbox_item_t items[50];
			static char body[300];

			close(p[0]);
			s_tear_at = 4 + round * 3;
			s_syncs = 0;
			o.dir = s_path(path, sizeof path, "snd", "outbox");
			for (int i = 0; i < 50; i++) {
				items[i] = (bm_outbox_item_t){so, body, sizeof body};
			}
			if (bm_outbox_open(&o, &ob) < 0) {
				_exit(2);
			}
			for (int b = 0; b < 1000; b++) {
				if (bm_outbox_put_batch(ob, items, 50, NULL) < 0 || bm_outbox_commit(ob) < 0) {
					_exit(3);
				}
				v = bm_outbox_count(ob);
				(void)!write(p[1], &v, sizeof v);
			}
			_exit(0);
		}
		close(p[1]);
		while (read(p[0], &v, sizeof v) == sizeof v) {
			reported = v;
		}
		close(p[0]);
		ck_assert_int_eq(tu_wait(pid, 20000), 42);
		ob = s_outbox("snd", NULL, NULL);
		ck_assert_uint_eq(bm_outbox_count(ob) % 50, 0);
		ck_assert_uint_ge(bm_outbox_count(ob), reported);
		bm_outbox_destroy(&ob);
	}
}
END_TEST

START_TEST(a_full_disk_refuses_with_a_clear_error_and_loses_no_stored_message)
{
	int p[2];
	pid_t pid;
	uint64_t reported = 0, v;
	bm_outbox_t *ob = NULL;

	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* The file-size limit stands in for a full disk. */
		struct rlimit rl = {.rlim_cur = 200000, .rlim_max = 200000};
		bm_outbox_send_opts_t so = {.to = "rcv"};
		char body[500] = {0};
		int rc = 0;

		close(p[0]);
		signal(SIGXFSZ, SIG_IGN);
		ob = s_outbox("snd", NULL, NULL);
		if (setrlimit(RLIMIT_FSIZE, &rl) < 0) {
			_exit(2);
		}
		for (int i = 0; i < 100000 && rc == 0; i++) {
			rc = bm_outbox_put(ob, &so, body, sizeof body, NULL);
			if (rc == 0 && i % 10 == 9 && (rc = bm_outbox_commit(ob)) == 0) {
				v = bm_outbox_count(ob);
				(void)!write(p[1], &v, sizeof v);
			}
		}
		if (rc != -EFBIG || bm_outbox_put(ob, &so, "x", 1, NULL) != BM_EREADONLY) {
			_exit(3);
		}
		/* What was not stored is forgotten; what was stays. */
		v = bm_outbox_count(ob);
		(void)!write(p[1], &v, sizeof v);
		bm_outbox_destroy(&ob);
		_exit(0);
	}
	close(p[1]);
	while (read(p[0], &v, sizeof v) == sizeof v) {
		reported = v;
	}
	close(p[0]);
	ck_assert_int_eq(tu_wait(pid, 20000), 0);
	ck_assert_uint_gt(reported, 100);
	ob = s_outbox("snd", NULL, NULL);
	ck_assert_uint_eq(bm_outbox_count(ob), reported);
	bm_outbox_destroy(&ob);
}
END_TEST

/* ---- the kill -9 soak ---- */

#define S_SOAK_ID_TAG 0xB5

static void
s_soak_id(uint64_t k, bm_id_t *id)
{
	memset(id, 0, sizeof *id);
	id->b[0] = S_SOAK_ID_TAG;
	memcpy(id->b + 8, &k, sizeof k);
}

typedef struct {
	uint64_t total;     /* messages to send */
} s_snd_arg_t;

/*
 * The soak's sender: puts messages 0..total-1 with ids derived from their
 * number (so a re-put after a crash is the same message), commits in
 * groups, records its progress in a file after each commit (a re-put of a
 * message already sent is caught by the id), and exits 0 once all were put
 * and the outbox is empty.
 */
static int
s_soak_sender(void *argp)
{
	s_snd_arg_t *a = argp;
	bm_outbox_opts_t oo = {.ack_timeout_ms = 1000, .base_ms = 20, .cap_ms = 500,
	                       .max_attempts = 100000, .window = 2048};
	bm_outbox_send_opts_t so = {.to = "rcv", .type = "soak"};
	bm_client_t *c = NULL;
	bm_outbox_t *ob = NULL;
	int64_t deadline = bm_mono_ms() + 300000;
	char p[512], prog[512];
	uint64_t k = 0;
	FILE *f;

	snprintf(prog, sizeof prog, "%s/progress", s_state);
	if ((f = fopen(prog, "r")) != NULL) {
		if (fscanf(f, "%lu", &k) != 1) {
			k = 0;
		}
		fclose(f);
	}
	while (c == NULL && bm_mono_ms() < deadline) {
		if ((c = tu_client(s_dir, "snd", NULL, HB)) == NULL) {
			usleep(20000);
		}
	}
	oo.dir = s_path(p, sizeof p, "snd", "outbox");
	oo.client = c;
	if (c == NULL || bm_outbox_open(&oo, &ob) < 0) {
		return 2;
	}
	while (bm_mono_ms() < deadline) {
		bm_event_t ev;
		int wait, rc;

		if (k < a->total && bm_outbox_count(ob) < 20000) {
			uint64_t end = k + 512 < a->total ? k + 512 : a->total;

			for (; k < end; k++) {
				bm_id_t id;

				s_soak_id(k, &id);
				so.id = &id;
				rc = bm_outbox_put(ob, &so, &k, sizeof k, NULL);
				if (rc < 0 && rc != -EEXIST) {
					return 3;
				}
			}
			if (bm_outbox_commit(ob) < 0) {
				return 4;
			}
			if ((f = fopen(prog, "w")) == NULL) {
				return 5;
			}
			fprintf(f, "%lu\n", (unsigned long)k);
			fclose(f);
		}
		if (bm_outbox_pump(ob) < 0) {
			return 6;
		}
		if (k == a->total && bm_outbox_count(ob) == 0) {
			bm_outbox_destroy(&ob);
			bm_client_destroy(&c);
			return 0;
		}
		wait = bm_outbox_timeout(ob);
		if (wait < 0 || wait > 50) {
			wait = 50;
		}
		if (k < a->total && bm_outbox_count(ob) < 20000) {
			wait = 0;
		}
		rc = bm_client_recv(c, wait, &ev);
		while (rc == 0) {
			(void)bm_outbox_handle(ob, &ev);
			bm_event_clear(&ev);
			rc = bm_client_recv(c, 0, &ev);
		}
	}
	return 7;
}

static uint64_t
s_progress(void)
{
	char prog[512];
	unsigned long k = 0;
	FILE *f;

	snprintf(prog, sizeof prog, "%s/progress", s_state);
	if ((f = fopen(prog, "r")) != NULL) {
		if (fscanf(f, "%lu", &k) != 1) {
			k = 0;
		}
		fclose(f);
	}
	return k;
}

static long
s_env(const char *name, long dflt)
{
	const char *v = getenv(name);

	return v != NULL && atol(v) > 0 ? atol(v) : dflt;
}

START_TEST(messages_streamed_through_kill_9_of_sender_receiver_and_beastd_arrive_exactly_once)
{
	uint64_t total = (uint64_t)s_env("BM_SOAK_MESSAGES", 100000);
	int kills = (int)s_env("BM_SOAK_KILLS", 6);
	s_snd_arg_t sa = {.total = total};
	s_rcv_arg_t ra = {.name = "rcv", .timeout_ms = 600000, .window = (size_t)total + 1};
	pid_t snd, rcv;
	int killed[3] = {0, 0, 0}, status;
	s_notes_t notes = {0};
	int64_t t0 = bm_mono_ms();
	uint64_t *points;

	rcv = tu_fork(s_receiver, &ra);
	ck_assert_int_ge(tu_wait_agent(s_dir, "rcv", true, 5000), 0);
	snd = tu_fork(s_soak_sender, &sa);
	/* Kill points spread over the stream: 3 * kills of them, in order,
	 * the victim going round sender -> receiver -> beastd. */
	points = calloc((size_t)kills * 3, sizeof *points);
	srand((unsigned)getpid());
	for (int i = 0; i < kills * 3; i++) {
		points[i] = total * (uint64_t)(i + 1) / (uint64_t)(kills * 3 + 2) +
		            (uint64_t)rand() % (total / (uint64_t)(kills * 3 + 2) / 2 + 1);
	}
	for (int i = 0; i < kills * 3; i++) {
		int victim = i % 3;

		/* Bounded: 2 minutes for the whole stream, normally ~20 s. */
		while (s_progress() < points[i] && bm_mono_ms() - t0 < 240000) {
			ck_assert_int_eq(waitpid(snd, &status, WNOHANG), 0);
			usleep(2000);
		}
		usleep((useconds_t)(rand() % 20000));
		if (victim == 0) {
			tu_kill9(snd);
			snd = tu_fork(s_soak_sender, &sa);
		} else if (victim == 1) {
			tu_kill9(rcv);
			rcv = tu_fork(s_receiver, &ra);
		} else {
			tu_kill9(s_beastd);
			s_beastd = tu_beastd_start(s_dir, HB);
			ck_assert_int_gt(s_beastd, 0);
		}
		killed[victim]++;
	}
	free(points);
	ck_assert_int_ge(killed[0], 5);
	ck_assert_int_ge(killed[1], 5);
	ck_assert_int_ge(killed[2], 5);
	/* The sender exits 0 once everything it put was ACKed. */
	ck_assert_int_eq(tu_wait(snd, 240000 - (int)(bm_mono_ms() - t0) + 30000), 0);
	ck_assert_int_eq(tu_term(rcv, 10000), 0);

	/* Every message reached the handler exactly once ... */
	notes.seen = calloc(total, sizeof *notes.seen);
	notes.nseen = total;
	s_read_notes("rcv", &notes, (size_t)total + 1);
	ck_assert_uint_eq(notes.out_of_range, 0);
	for (uint64_t k = 0; k < total; k++) {
		if (notes.seen[k] != 1) {
			ck_abort_msg("message %lu was handled %lu times", (unsigned long)k,
			             (unsigned long)notes.seen[k]);
		}
	}
	ck_assert_uint_eq(notes.total, total);
	free(notes.seen);
	/* ... and the sender's outbox is empty. */
	{
		bm_outbox_t *ob = s_outbox("snd", NULL, NULL);

		ck_assert_uint_eq(bm_outbox_count(ob), 0);
		bm_outbox_destroy(&ob);
	}
	fprintf(stderr, "soak: %lu messages, %d kills each, %.1f s\n", (unsigned long)total, kills,
	        (double)(bm_mono_ms() - t0) / 1000.0);
}
END_TEST


/* ---- the beast CLI ---- */

#ifdef BM_BEAST_PATH
/* Runs beast with args (NULL-terminated), BEAST_STATE set, stdout to out
 * (or /dev/null); returns the pid, or the exit status when wait. */
static int
s_beast(const char *out, bool wait, const char *const *args)
{
	const char *argv[24];
	int n = 0;
	pid_t pid;

	argv[n++] = "beast";
	argv[n++] = "--dir";
	argv[n++] = s_dir;
	for (int i = 0; args[i] != NULL && n < 23; i++) {
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	pid = fork();
	if (pid == 0) {
		int fd = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);

		setenv("BEAST_STATE", s_state, 1);
		dup2(fd, 1);
		execv(BM_BEAST_PATH, (char *const *)argv);
		_exit(127);
	}
	return wait ? tu_wait(pid, 20000) : pid;
}

static size_t
s_count_lines(const char *path, const char *needle)
{
	char line[4096];
	size_t n = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		return 0;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		n += strstr(line, needle) != NULL;
	}
	fclose(f);
	return n;
}

START_TEST(beast_send_no_wait_stores_for_an_offline_agent_and_outbox_flush_delivers_once)
{
	char out[600], ls[600];
	pid_t listen;

	snprintf(out, sizeof out, "%s/listen.out", s_state);
	snprintf(ls, sizeof ls, "%s/ls.out", s_state);
	ck_assert_int_eq(s_beast(NULL, true, (const char *[]){"send", "--as", "alice", "--no-wait",
	                                                        "--priority", "3", "bob", "first",
	                                                        NULL}),
	                 0);
	ck_assert_int_eq(s_beast(NULL, true, (const char *[]){"send", "--as", "alice", "--attempts",
	                                                        "1", "bob", "doomed", NULL}),
	                 1);
	ck_assert_int_eq(s_beast(ls, true, (const char *[]){"outbox", "--as", "alice", "ls", "--json",
	                                                      NULL}),
	                 0);
	ck_assert_uint_eq(s_count_lines(ls, "\"to\":\"bob\""), 1);
	ck_assert_int_eq(s_beast(ls, true, (const char *[]){"outbox", "--as", "alice", "dead",
	                                                      "--json", NULL}),
	                 0);
	ck_assert_uint_eq(s_count_lines(ls, "attempts: "), 1);
	listen = s_beast(out, false, (const char *[]){"listen", "--count", "2", "bob", NULL});
	ck_assert_int_ge(tu_wait_agent(s_dir, "bob", true, 5000), 0);
	ck_assert_int_eq(s_beast(NULL, true, (const char *[]){"outbox", "--as", "alice", "requeue",
	                                                        "--all", NULL}),
	                 0);
	ck_assert_int_eq(s_beast(NULL, true, (const char *[]){"outbox", "--as", "alice", "flush",
	                                                        "--timeout", "5000", NULL}),
	                 0);
	ck_assert_int_eq(tu_wait(listen, 5000), 0);
	ck_assert_uint_eq(s_count_lines(out, "alice msg first"), 1);
	ck_assert_uint_eq(s_count_lines(out, "alice msg doomed"), 1);
	ck_assert_int_eq(s_beast(ls, true, (const char *[]){"outbox", "--as", "alice", "stats",
	                                                      "--json", NULL}),
	                 0);
	ck_assert_uint_eq(s_count_lines(ls, "\"pending\":0,"), 1);
	ck_assert_uint_eq(s_count_lines(ls, "\"dead\":0,"), 1);
}
END_TEST
#endif

static Suite *
s_suite(void)
{
	Suite *s = suite_create("outbox");
	TCase *tc = tcase_create("outbox");

	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, a_message_for_an_absent_agent_dies_of_its_ttl_and_requeue_then_delivers_it);
	tcase_add_test(tc, a_message_for_an_absent_agent_dies_after_its_attempts_and_can_be_purged);
	tcase_add_test(tc, stored_messages_go_out_after_a_restart_highest_priority_first);
	tcase_add_test(tc, the_pending_count_and_byte_limits_refuse_with_efull);
	tcase_add_test(tc, an_old_pending_message_does_not_pin_the_outbox_journal);
	tcase_add_test(tc, a_dead_letter_keeps_the_refusers_words_across_compaction_and_restart);
	tcase_add_test(tc, an_expiry_does_not_hide_the_refusal_that_explains_it);
	tcase_add_test(tc, a_notice_that_the_destination_came_online_retries_at_once);
	tcase_add_test(tc, an_expiring_message_is_withdrawn_at_its_ttl_even_after_a_restart);
	tcase_add_test(tc, an_atomic_batch_killed_mid_append_is_all_or_nothing);
	tcase_add_test(tc, an_atomic_batch_torn_at_a_sync_is_all_or_nothing_and_stored_batches_stay);
	tcase_add_test(tc, a_full_disk_refuses_with_a_clear_error_and_loses_no_stored_message);
	suite_add_tcase(s, tc);

	tc = tcase_create("dedup");
	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, a_retry_after_a_lost_ack_reaches_the_handler_once_also_across_a_receiver_restart);
	tcase_add_test(tc, a_quiet_senders_marks_do_not_pin_the_dedup_journal);
	suite_add_tcase(s, tc);

#ifdef BM_BEAST_PATH
	tc = tcase_create("cli");
	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, beast_send_no_wait_stores_for_an_offline_agent_and_outbox_flush_delivers_once);
	suite_add_tcase(s, tc);
#endif

	tc = tcase_create("soak");
	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_start, s_stop);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, messages_streamed_through_kill_9_of_sender_receiver_and_beastd_arrive_exactly_once);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(s_suite());
}

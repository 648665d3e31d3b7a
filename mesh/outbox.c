/*
 * outbox.c - reliable sends: every message sits in the sender's journal
 * from before it leaves until the receiver's ACK comes back.
 *
 * Life of a message:
 *
 *   put ──commit──▶ READY ──send──▶ INFLIGHT ──ACK──▶ retired (ACK record)
 *                     ▲                │ NACK (transient) or no ACK in
 *                     │                ▼ ack_timeout_ms
 *                     └──backoff── WAITING
 *   TTL passed, attempts used up, a permanent NACK, too large ──▶ DEAD
 *   DEAD ──requeue──▶ READY (fresh attempts and TTL);  DEAD ──purge──▶ gone
 *
 * Nothing is sent before its PUT record is stored under the journal's sync
 * policy: bm_outbox_put() only frames it, bm_outbox_commit() writes and
 * syncs the whole batch at once (group commit), and only then do the
 * messages become READY.  So a caller that puts many messages and pumps
 * once pays one fdatasync for all of them.
 *
 * Retries use exponential backoff with full jitter: after the k-th failed
 * attempt the message waits random(0, min(cap, base * 2^k)) ms.  A NOTICE
 * that the destination came online makes its waiting messages READY at
 * once; re-registration with a restarted broker resends everything in
 * flight (the broker that held it is gone).  Among READY messages the
 * highest priority goes first, FIFO within a priority.  At most `window`
 * messages are in flight.
 *
 * Duplicates are the receiver's problem by design: a lost ACK means a
 * resend with the same id, and the receiver's de-dup window (dedup.c)
 * keeps it from the handler.
 *
 * Journal records (payloads little-endian; type in the record header):
 *   PUT (1, LIVE): one message
 *      0 16 id | 16 16 corr (zero = none) | 32 1 priority | 33 1 to length T
 *      | 34 1 type length Y | 35 1 flags (bit 0: expire — at the TTL it
 *      is withdrawn, not dead-lettered; bit 1: a trace context follows
 *      the body; other bits 0) | 36 4 ttl_ms (0 = none)
 *      | 40 4 max attempts | 44 4 attempts made | 48 8 created, wall ms
 *      | 56 4 dead code (0 = live; else the BM_E* / reason it died of)
 *      | 60 4 body length B | 64 T to | Y type | B body
 *      [bit 1: 1 traceparent length P (1..127) | P traceparent
 *      | 2 tracestate length S (0..512) | S tracestate]  (the W3C trace
 *      context the message is sent with, protocol.md section 4)
 *     A second PUT with the same id (compaction: re-written forward so an
 *     old segment can go) replaces the first.
 *   BATCH (2, LIVE): u32 count N, then N times (u32 length L, L bytes of a
 *     PUT payload).  All N or none: one record, one checksum.
 *   ACK (3): 16 id — retired.
 *   ATTEMPT (4): 16 id | 4 attempts made — lazily written (not synced on
 *     its own; losing one costs a resend).
 *   DEAD (5): 16 id | 4 reason code | 4 attempts made [| 1 length L
 *     (1..255) | L bytes: the last refusal's text, e.g. a NACK's reason
 *     from the receiving side or from another host].  Compaction writes
 *     a dead letter's DEAD record again after its re-PUT when it has a
 *     text, so the text lives as long as the letter.
 *   REQUEUE (6): 16 id | 8 new created wall ms — attempts back to 0.
 *   PURGE (7): 16 id — a dead letter removed.
 *
 * Liveness in the journal: a PUT (or BATCH) stays live until its message
 * (all of a batch's messages) is retired; then bm_journal_release() lets
 * the segment go.  When the journal holds more than `compact_segments`
 * segments, the messages still held by the oldest segment are re-PUT at
 * the head with their current state, so one old dead letter never pins the
 * whole log.
 *
 * Threading: one thread at a time, the same as the client it sends through.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "mesh_private.h"

enum {
	S_REC_PUT = 1,
	S_REC_BATCH = 2,
	S_REC_ACK = 3,
	S_REC_ATTEMPT = 4,
	S_REC_DEAD = 5,
	S_REC_REQUEUE = 6,
	S_REC_PURGE = 7,
};

enum {
	S_UNSTORED = 0, /* put, not yet committed */
	S_READY,        /* in a ready list */
	S_INFLIGHT,     /* sent, ACK awaited (timer = ack deadline) */
	S_WAITING,      /* backing off (timer = next retry) */
	S_DEAD,         /* dead letter */
};

#define S_PUT_FIXED 64
#define S_MSG_EXPIRE 0x01 /* at its TTL: withdrawn (expired), not dead-lettered */
#define S_MSG_TRACE 0x02  /* a trace context follows the body in the PUT */
#define S_TRACE_MAX (1 + BM_TRACEPARENT_MAX + 2 + BM_TRACESTATE_MAX)
#define S_COMPACT_SEGMENTS 8

typedef struct s_batch {
	uint64_t seq;     /* the BATCH record */
	size_t live;      /* its messages not yet retired or moved */
} s_batch_t;

typedef struct s_msg {
	bm_id_t id;                   /* map key */
	bm_id_t corr;                 /* reply to; zero = none */
	char to[BM_ADDR_MAX + 1];     /* destination */
	char type[BM_TYPE_MAX + 1];   /* message type */
	uint8_t priority;             /* higher first */
	uint32_t ttl_ms;              /* 0 = none */
	uint32_t max_attempts;        /* sends allowed */
	uint32_t attempts;            /* sends made */
	int64_t created_ms;           /* wall ms, for TTL (reset by requeue) */
	int dead_code;                /* why it died; 0 = live */
	uint8_t flags;                /* S_MSG_* */
	int state;                    /* S_* */
	uint64_t seq;                 /* its PUT record, or 0 when in a batch */
	s_batch_t *batch;             /* its BATCH, or NULL */
	int64_t due_ms;               /* INFLIGHT: ACK deadline; WAITING: retry; mono ms */
	size_t heap_idx;              /* WAITING: in the timer heap, else SIZE_MAX */
	struct s_msg *prev, *next;    /* ready, unstored or sent list */
	size_t len;                   /* body bytes */
	uint8_t *body;                /* body: the bytes right after this struct */
	uint8_t *trace;               /* S_MSG_TRACE: its PUT encoding, after the body */
	size_t trace_len;             /* its bytes; 0 = none */
	char *why;                    /* the last refusal's text (malloc'd), or NULL */
} s_msg_t;

typedef struct {
	s_msg_t *head, *tail;
} s_list_t;

struct bm_outbox {
	bm_journal_t *j;              /* PUT, ACK ... records */
	bm_client_t *client;          /* sends through it; may be NULL */
	bm_outbox_opts_t o;           /* options, defaults filled in */
	bm_map_t *by_id;              /* id -> s_msg_t */
	s_list_t ready[256];          /* by priority */
	uint64_t ready_bits[4];       /* non-empty ready lists */
	s_list_t unstored;            /* put since the last commit */
	s_list_t sent;                /* INFLIGHT, oldest first = earliest ACK deadline */
	s_msg_t **heap;               /* timers of WAITING messages */
	size_t nheap, capheap;        /* used, allocated */
	size_t live, bytes, dead, inflight; /* counts: live = not dead */
	int64_t blocked_ms;           /* sending refused (no broker): retry at */
	bm_outbox_stats_t st;         /* counters */
	bool replaying;               /* inside open */
};

/* ---- little-endian ---- */

static void
s_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static void
s_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint32_t
s_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
s_get64(const uint8_t *p)
{
	return (uint64_t)s_get32(p) | (uint64_t)s_get32(p + 4) << 32;
}

/* ---- lists and the timer heap ---- */

static void
s_list_push(s_list_t *l, s_msg_t *m, bool front)
{
	m->prev = m->next = NULL;
	if (l->head == NULL) {
		l->head = l->tail = m;
	} else if (front) {
		m->next = l->head;
		l->head->prev = m;
		l->head = m;
	} else {
		m->prev = l->tail;
		l->tail->next = m;
		l->tail = m;
	}
}

static void
s_list_del(s_list_t *l, s_msg_t *m)
{
	if (m->prev) {
		m->prev->next = m->next;
	} else {
		l->head = m->next;
	}
	if (m->next) {
		m->next->prev = m->prev;
	} else {
		l->tail = m->prev;
	}
	m->prev = m->next = NULL;
}

static void
s_heap_swap(bm_outbox_t *ob, size_t a, size_t b)
{
	s_msg_t *t = ob->heap[a];

	ob->heap[a] = ob->heap[b];
	ob->heap[b] = t;
	ob->heap[a]->heap_idx = a;
	ob->heap[b]->heap_idx = b;
}

static void
s_heap_up(bm_outbox_t *ob, size_t i)
{
	while (i > 0 && ob->heap[(i - 1) / 2]->due_ms > ob->heap[i]->due_ms) {
		s_heap_swap(ob, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void
s_heap_down(bm_outbox_t *ob, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, min = i;

		if (l < ob->nheap && ob->heap[l]->due_ms < ob->heap[min]->due_ms) {
			min = l;
		}
		if (r < ob->nheap && ob->heap[r]->due_ms < ob->heap[min]->due_ms) {
			min = r;
		}
		if (min == i) {
			return;
		}
		s_heap_swap(ob, i, min);
		i = min;
	}
}

static int
s_heap_add(bm_outbox_t *ob, s_msg_t *m)
{
	if (ob->nheap == ob->capheap) {
		size_t cap = ob->capheap ? ob->capheap * 2 : 256;
		s_msg_t **h = realloc(ob->heap, cap * sizeof *h);

		if (h == NULL) {
			return -ENOMEM;
		}
		ob->heap = h;
		ob->capheap = cap;
	}
	m->heap_idx = ob->nheap;
	ob->heap[ob->nheap++] = m;
	s_heap_up(ob, m->heap_idx);
	return 0;
}

static void
s_heap_del(bm_outbox_t *ob, s_msg_t *m)
{
	size_t i = m->heap_idx;

	if (i == SIZE_MAX) {
		return;
	}
	ob->nheap--;
	if (i != ob->nheap) {
		s_heap_swap(ob, i, ob->nheap);
		s_heap_down(ob, i);
		s_heap_up(ob, i);
	}
	m->heap_idx = SIZE_MAX;
}

/* ---- state changes ---- */

/* Takes m out of whatever structure its state keeps it in. */
static void
s_unlink(bm_outbox_t *ob, s_msg_t *m)
{
	switch (m->state) {
	case S_UNSTORED:
		s_list_del(&ob->unstored, m);
		break;
	case S_READY:
		s_list_del(&ob->ready[m->priority], m);
		if (ob->ready[m->priority].head == NULL) {
			ob->ready_bits[m->priority / 64] &= ~(1ull << (m->priority % 64));
		}
		break;
	case S_INFLIGHT:
		ob->inflight--;
		s_list_del(&ob->sent, m);
		break;
	case S_WAITING:
		s_heap_del(ob, m);
		break;
	default:
		break;
	}
}

static void
s_make_ready(bm_outbox_t *ob, s_msg_t *m, bool front)
{
	s_unlink(ob, m);
	m->state = S_READY;
	s_list_push(&ob->ready[m->priority], m, front);
	ob->ready_bits[m->priority / 64] |= 1ull << (m->priority % 64);
}

static int
s_make_timer(bm_outbox_t *ob, s_msg_t *m, int state, int64_t due)
{
	s_unlink(ob, m);
	m->state = state;
	m->due_ms = due;
	if (state == S_INFLIGHT) {
		/* Every ACK deadline is send time + the same timeout: a FIFO
		 * keeps them in order at O(1). */
		ob->inflight++;
		s_list_push(&ob->sent, m, false);
		return 0;
	}
	return s_heap_add(ob, m);
}

/* Drops m's claim on its journal record. */
static void
s_release(bm_outbox_t *ob, s_msg_t *m)
{
	if (m->batch != NULL) {
		if (--m->batch->live == 0) {
			bm_journal_release(ob->j, m->batch->seq);
			free(m->batch);
		}
		m->batch = NULL;
	} else if (m->seq != 0) {
		bm_journal_release(ob->j, m->seq);
	}
	m->seq = 0;
}

static void
s_free(bm_outbox_t *ob, s_msg_t *m)
{
	s_unlink(ob, m);
	bm__map_del(ob->by_id, m->id.b, sizeof m->id.b);
	if (m->state == S_DEAD) {
		ob->dead--;
	} else {
		ob->live--;
		ob->bytes -= m->len;
	}
	s_release(ob, m);
	free(m->why);
	free(m);
}

static int
s_record_id(bm_outbox_t *ob, int type, const bm_id_t *id, const void *extra, size_t elen)
{
	bm_journal_iov_t v[2] = {{id->b, 16}, {extra, elen}};

	if (ob->replaying) {
		return 0;
	}
	return bm_journal_appendv(ob->j, type, 0, v, extra ? 2 : 1, NULL);
}

/* Keeps text as m's last refusal (a NACK's reason); "" or NULL keeps
 * the one before.  Out of memory keeps the old text too. */
static void
s_set_why(s_msg_t *m, const char *text, size_t len)
{
	char *w;

	if (text == NULL || len == 0) {
		return;
	}
	len = len > BM_TEXT_MAX ? BM_TEXT_MAX : len;
	if ((w = malloc(len + 1)) == NULL) {
		return;
	}
	memcpy(w, text, len);
	w[len] = '\0';
	free(m->why);
	m->why = w;
}

/* m's DEAD record: code, attempts and, when it has one, the last
 * refusal's text. */
static int
s_record_dead(bm_outbox_t *ob, const s_msg_t *m)
{
	uint8_t c[8 + 1 + BM_TEXT_MAX];
	size_t wl = m->why ? strlen(m->why) : 0;

	s_put32(c, (uint32_t)m->dead_code);
	s_put32(c + 4, m->attempts);
	if (wl > 0) {
		c[8] = (uint8_t)wl;
		memcpy(c + 9, m->why, wl);
	}
	return s_record_id(ob, S_REC_DEAD, &m->id, c, wl > 0 ? 9 + wl : 8);
}

static void
s_kill(bm_outbox_t *ob, s_msg_t *m, int code)
{
	s_unlink(ob, m);
	m->state = S_DEAD;
	m->dead_code = code;
	ob->live--;
	ob->bytes -= m->len;
	ob->dead++;
	ob->st.dead_total++;
	(void)s_record_dead(ob, m);
	bm_debug("outbox: message to %s dead: %s%s%s", m->to, bm_outbox_reason(code),
	         m->why ? "; last refusal: " : "", m->why ? m->why : "");
}

/* Its TTL passed: dead letter, or, for a message sent with `expire` (a
 * reply nobody waits for any more), withdrawn and counted. */
static void
s_ttl(bm_outbox_t *ob, s_msg_t *m)
{
	if ((m->flags & S_MSG_EXPIRE) && s_record_id(ob, S_REC_PURGE, &m->id, NULL, 0) == 0) {
		ob->st.expired++;
		s_free(ob, m);
		return;
	}
	s_kill(ob, m, BM_OUTBOX_DEAD_TTL);
}

/* ---- encoding ---- */

static size_t
s_put_size(const s_msg_t *m)
{
	return S_PUT_FIXED + strlen(m->to) + strlen(m->type) + m->len + m->trace_len;
}

/* The fixed 64 bytes of a PUT payload. */
static void
s_put_fixed(const s_msg_t *m, uint8_t *p)
{
	memset(p, 0, S_PUT_FIXED);
	memcpy(p, m->id.b, 16);
	memcpy(p + 16, m->corr.b, 16);
	p[32] = m->priority;
	p[33] = (uint8_t)strlen(m->to);
	p[34] = (uint8_t)strlen(m->type);
	p[35] = m->flags;
	s_put32(p + 36, m->ttl_ms);
	s_put32(p + 40, m->max_attempts);
	s_put32(p + 44, m->attempts);
	s_put64(p + 48, (uint64_t)m->created_ms);
	s_put32(p + 56, (uint32_t)m->dead_code);
	s_put32(p + 60, (uint32_t)m->len);
}

static void
s_put_encode(const s_msg_t *m, uint8_t *p)
{
	size_t tl = strlen(m->to), yl = strlen(m->type);

	s_put_fixed(m, p);
	memcpy(p + S_PUT_FIXED, m->to, tl);
	memcpy(p + S_PUT_FIXED + tl, m->type, yl);
	if (m->len > 0) {
		memcpy(p + S_PUT_FIXED + tl + yl, m->body, m->len);
	}
	if (m->trace_len > 0) {
		memcpy(p + S_PUT_FIXED + tl + yl + m->len, m->trace, m->trace_len);
	}
}

/* Appends m as one PUT record, without an intermediate copy. */
static int
s_put_append(bm_outbox_t *ob, const s_msg_t *m, uint64_t *ret_seq)
{
	uint8_t fixed[S_PUT_FIXED];
	bm_journal_iov_t v[5] = {{fixed, S_PUT_FIXED},
	                         {m->to, strlen(m->to)},
	                         {m->type, strlen(m->type)},
	                         {m->body, m->len},
	                         {m->trace, m->trace_len}};

	s_put_fixed(m, fixed);
	return bm_journal_appendv(ob->j, S_REC_PUT, BM_JOURNAL_LIVE, v, m->trace_len ? 5 : 4,
	                          ret_seq);
}

/*
 * A PUT's trace context (len bytes at p; 0 = none): 1 traceparent length
 * (1..127), traceparent, 2 tracestate length (0..512), tracestate, nothing
 * after.  Returns 0 or BM_ECORRUPT.
 */
static int
s_trace_check(const uint8_t *p, size_t len)
{
	size_t pl, sl;

	if (len == 0) {
		return 0;
	}
	if (len < 3 || (pl = p[0]) == 0 || pl > BM_TRACEPARENT_MAX || len < 1 + pl + 2) {
		return BM_ECORRUPT;
	}
	sl = (size_t)p[1 + pl] | (size_t)p[2 + pl] << 8;
	return sl <= BM_TRACESTATE_MAX && len == 1 + pl + 2 + sl ? 0 : BM_ECORRUPT;
}

/* Splits a checked trace context into NUL-terminated strings. */
static void
s_trace_split(const uint8_t *p, size_t len, char tp[BM_TRACEPARENT_MAX + 1],
              char ts[BM_TRACESTATE_MAX + 1])
{
	size_t pl = len ? p[0] : 0, sl = len ? ((size_t)p[1 + pl] | (size_t)p[2 + pl] << 8) : 0;

	memcpy(tp, p + 1, pl);
	tp[pl] = '\0';
	if (sl > 0) {
		memcpy(ts, p + 3 + pl, sl);
	}
	ts[sl] = '\0';
}

/* Decodes a PUT payload into a new message. */
static int
s_put_decode(const uint8_t *p, size_t len, s_msg_t **ret)
{
	size_t tl, yl, bl, xl;
	s_msg_t *m;

	if (len < S_PUT_FIXED) {
		return BM_ECORRUPT;
	}
	tl = p[33];
	yl = p[34];
	bl = s_get32(p + 60);
	if (tl == 0 || tl > BM_ADDR_MAX || yl == 0 || yl > BM_TYPE_MAX ||
	    len < S_PUT_FIXED + tl + yl || len - S_PUT_FIXED - tl - yl < bl ||
	    (len - S_PUT_FIXED - tl - yl - bl != 0) != ((p[35] & S_MSG_TRACE) != 0) ||
	    (s_trace_check(p + S_PUT_FIXED + tl + yl + bl, len - S_PUT_FIXED - tl - yl - bl) < 0)) {
		return BM_ECORRUPT;
	}
	xl = len - S_PUT_FIXED - tl - yl - bl;
	m = malloc(sizeof *m + bl + xl);
	if (m == NULL) {
		return -ENOMEM;
	}
	memset(m, 0, sizeof *m);
	m->body = (uint8_t *)(m + 1);
	memcpy(m->id.b, p, 16);
	memcpy(m->corr.b, p + 16, 16);
	m->priority = p[32];
	m->flags = p[35] & (S_MSG_EXPIRE | S_MSG_TRACE);
	if (xl > 0) {
		m->trace = m->body + bl;
		m->trace_len = xl;
		memcpy(m->trace, p + S_PUT_FIXED + tl + yl + bl, xl);
	}
	memcpy(m->to, p + S_PUT_FIXED, tl);
	memcpy(m->type, p + S_PUT_FIXED + tl, yl);
	m->ttl_ms = s_get32(p + 36);
	m->max_attempts = s_get32(p + 40);
	m->attempts = s_get32(p + 44);
	m->created_ms = (int64_t)s_get64(p + 48);
	m->dead_code = (int32_t)s_get32(p + 56);
	m->len = bl;
	if (bl > 0) {
		memcpy(m->body, p + S_PUT_FIXED + tl + yl, bl);
	}
	m->heap_idx = SIZE_MAX;
	*ret = m;
	return 0;
}

/* Takes in a decoded message (replay or put): indexes it, replacing an
 * older copy with the same id. */
static int
s_adopt(bm_outbox_t *ob, s_msg_t *m, int state)
{
	s_msg_t *old = bm__map_get(ob->by_id, m->id.b, sizeof m->id.b);

	if (old != NULL) {
		s_free(ob, old);
	}
	if (bm__map_put(ob->by_id, m->id.b, sizeof m->id.b, m) < 0) {
		return -ENOMEM;
	}
	if (m->dead_code != 0) {
		m->state = S_DEAD;
		ob->dead++;
		return 0;
	}
	ob->live++;
	ob->bytes += m->len;
	if (state == S_UNSTORED) {
		m->state = S_UNSTORED;
		s_list_push(&ob->unstored, m, false);
	} else {
		m->state = -1; /* in no structure yet */
		s_make_ready(ob, m, false);
	}
	return 0;
}

/* ---- replay ---- */

static int
s_replay(void *arg, const bm_journal_rec_t *r)
{
	bm_outbox_t *ob = arg;
	const uint8_t *p = r->data;
	s_msg_t *m = NULL;
	int rc;

	switch (r->type) {
	case S_REC_PUT:
		if ((rc = s_put_decode(p, r->len, &m)) < 0) {
			return rc;
		}
		m->seq = r->seq;
		return s_adopt(ob, m, S_READY);
	case S_REC_BATCH: {
		s_batch_t *b = calloc(1, sizeof *b);
		size_t off = 4, n;

		if (b == NULL) {
			return -ENOMEM;
		}
		if (r->len < 4) {
			free(b);
			return BM_ECORRUPT;
		}
		b->seq = r->seq;
		n = s_get32(p);
		b->live = 1; /* held while adopting */
		for (size_t i = 0; i < n; i++) {
			size_t l;

			if (off + 4 > r->len || (l = s_get32(p + off)) > r->len - off - 4) {
				rc = BM_ECORRUPT;
			} else {
				rc = s_put_decode(p + off + 4, l, &m);
			}
			if (rc < 0) {
				if (--b->live == 0) {
					free(b);
				}
				return rc;
			}
			off += 4 + l;
			m->batch = b;
			b->live++;
			if ((rc = s_adopt(ob, m, S_READY)) < 0) {
				return rc;
			}
		}
		if (--b->live == 0) {
			bm_journal_release(ob->j, b->seq);
			free(b);
		}
		return 0;
	}
	default:
		break;
	}
	if (r->len < 16) {
		return BM_ECORRUPT;
	}
	m = bm__map_get(ob->by_id, p, 16);
	if (m == NULL) {
		/* Its PUT was in a segment already deleted: it was retired. */
		return 0;
	}
	switch (r->type) {
	case S_REC_ACK:
	case S_REC_PURGE:
		s_free(ob, m);
		break;
	case S_REC_ATTEMPT:
		if (r->len >= 20 && s_get32(p + 16) > m->attempts) {
			m->attempts = s_get32(p + 16);
		}
		break;
	case S_REC_DEAD:
		if (r->len >= 25 && r->len >= 25 + (size_t)p[24]) {
			s_set_why(m, (const char *)p + 25, p[24]);
		}
		if (m->state != S_DEAD && r->len >= 24) {
			if (s_get32(p + 20) > m->attempts) {
				m->attempts = s_get32(p + 20);
			}
			s_kill(ob, m, (int32_t)s_get32(p + 16));
			ob->st.dead_total--;
		}
		break;
	case S_REC_REQUEUE:
		if (m->state == S_DEAD && r->len >= 24) {
			m->state = -1;
			ob->dead--;
			ob->live++;
			ob->bytes += m->len;
			m->dead_code = 0;
			m->attempts = 0;
			free(m->why);
			m->why = NULL;
			m->created_ms = (int64_t)s_get64(p + 16);
			s_make_ready(ob, m, false);
		}
		break;
	default:
		break;
	}
	return 0;
}

/* ---- open / destroy ---- */

int
bm_outbox_open(const bm_outbox_opts_t *opts, bm_outbox_t **ret_outbox)
{
	bm_journal_opts_t jo = {0};
	bm_outbox_t *ob;
	int rc;

	if (opts == NULL || opts->dir == NULL || ret_outbox == NULL) {
		return -EINVAL;
	}
	ob = calloc(1, sizeof *ob);
	if (ob == NULL || (ob->by_id = bm__map_new()) == NULL) {
		free(ob);
		return -ENOMEM;
	}
	ob->o = *opts;
	ob->client = opts->client;
	if (ob->o.base_ms == 0) {
		ob->o.base_ms = 100;
	}
	if (ob->o.cap_ms == 0) {
		ob->o.cap_ms = 30000;
	}
	if (ob->o.max_attempts == 0) {
		ob->o.max_attempts = 20;
	}
	if (ob->o.ack_timeout_ms == 0) {
		ob->o.ack_timeout_ms = 5000;
	}
	if (ob->o.max_pending == 0) {
		ob->o.max_pending = 1000000;
	}
	if (ob->o.max_bytes == 0) {
		ob->o.max_bytes = (size_t)1 << 30;
	}
	if (ob->o.window <= 0) {
		ob->o.window = 4096;
	}
	jo.sync = opts->sync;
	jo.interval_ms = opts->interval_ms;
	jo.segment_size = opts->segment_size;
	jo.ops = opts->ops;
	jo.report = opts->report;
	jo.replay = s_replay;
	jo.arg = ob;
	ob->replaying = true;
	rc = bm_journal_open(opts->dir, &jo, &ob->j);
	ob->replaying = false;
	if (rc < 0) {
		bm_outbox_destroy(&ob);
		return rc;
	}
	*ret_outbox = ob;
	return 0;
}

void
bm_outbox_destroy(bm_outbox_t **self_p)
{
	bm_outbox_t *ob;
	size_t cur = 0;
	s_msg_t *m;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	ob = *self_p;
	/* Lazy records (ATTEMPT, ACK) go out with the close. */
	bm_journal_destroy(&ob->j);
	while (ob->by_id != NULL && (m = bm__map_next(ob->by_id, &cur)) != NULL) {
		if (m->batch != NULL && --m->batch->live == 0) {
			free(m->batch);
		}
		free(m->why);
		free(m);
	}
	bm__map_destroy(&ob->by_id);
	free(ob->heap);
	free(ob);
	*self_p = NULL;
}

void
bm_outbox_set_client(bm_outbox_t *ob, bm_client_t *c)
{
	if (ob != NULL) {
		ob->client = c;
	}
}

/* ---- putting ---- */

static int
s_new_msg(bm_outbox_t *ob, const bm_outbox_send_opts_t *o, const void *body, size_t len,
          s_msg_t **ret)
{
	s_msg_t *m;
	size_t pl, sl, xl;
	int rc;

	if (o == NULL || (body == NULL && len > 0)) {
		return -EINVAL;
	}
	if ((rc = bm_address_check(o->to)) < 0 ||
	    (o->type != NULL && (rc = bm_type_check(o->type)) < 0)) {
		return rc;
	}
	if (o->id != NULL && bm__map_get(ob->by_id, o->id->b, 16) != NULL) {
		return -EEXIST;
	}
	if (len > BM_JOURNAL_RECORD_MAX - S_PUT_FIXED - 256 - S_TRACE_MAX ||
	    (ob->client != NULL && len > bm_client_max_body(ob->client))) {
		return BM_ETOOBIG;
	}
	pl = o->traceparent ? strlen(o->traceparent) : 0;
	sl = pl > 0 && o->tracestate ? strlen(o->tracestate) : 0;
	if (pl > BM_TRACEPARENT_MAX || sl > BM_TRACESTATE_MAX) {
		return -EINVAL;
	}
	xl = pl > 0 ? 1 + pl + 2 + sl : 0;
	m = malloc(sizeof *m + len + xl);
	if (m == NULL) {
		return -ENOMEM;
	}
	memset(m, 0, sizeof *m);
	m->body = (uint8_t *)(m + 1);
	if (len > 0) {
		memcpy(m->body, body, len);
	}
	m->len = len;
	if (xl > 0) {
		/* Kept as the PUT carries it (see the top). */
		m->trace = m->body + len;
		m->trace_len = xl;
		m->trace[0] = (uint8_t)pl;
		memcpy(m->trace + 1, o->traceparent, pl);
		m->trace[1 + pl] = (uint8_t)(sl & 0xff);
		m->trace[2 + pl] = (uint8_t)(sl >> 8);
		if (sl > 0) {
			memcpy(m->trace + 3 + pl, o->tracestate, sl);
		}
	}
	if (o->id != NULL) {
		m->id = *o->id;
	} else {
		bm_id_new(&m->id);
	}
	if (o->corr != NULL) {
		m->corr = *o->corr;
	}
	/* Both checked above: they fit. */
	memcpy(m->to, o->to, strlen(o->to) + 1);
	memcpy(m->type, o->type ? o->type : "msg", strlen(o->type ? o->type : "msg") + 1);
	m->priority = o->priority;
	m->flags = (o->expire ? S_MSG_EXPIRE : 0) | (xl > 0 ? S_MSG_TRACE : 0);
	m->ttl_ms = o->ttl_ms ? o->ttl_ms : ob->o.ttl_ms;
	m->max_attempts = o->max_attempts ? o->max_attempts : ob->o.max_attempts;
	m->created_ms = bm_wall_ms();
	m->heap_idx = SIZE_MAX;
	*ret = m;
	return 0;
}

static int
s_room(bm_outbox_t *ob, size_t n, size_t bytes)
{
	if (ob->live + n > ob->o.max_pending || ob->bytes + bytes > ob->o.max_bytes) {
		return BM_EFULL;
	}
	return 0;
}

int
bm_outbox_put(bm_outbox_t *ob, const bm_outbox_send_opts_t *o, const void *body, size_t len,
              bm_id_t *ret_id)
{
	s_msg_t *m = NULL;
	int rc;

	if (ob == NULL) {
		return -EINVAL;
	}
	if ((rc = bm_journal_error(ob->j)) != 0) {
		return BM_EREADONLY;
	}
	if ((rc = s_room(ob, 1, len)) < 0 || (rc = s_new_msg(ob, o, body, len, &m)) < 0) {
		return rc;
	}
	rc = s_put_append(ob, m, &m->seq);
	if (rc < 0 || (rc = s_adopt(ob, m, S_UNSTORED)) < 0) {
		free(m);
		return rc;
	}
	if (ret_id != NULL) {
		*ret_id = m->id;
	}
	return 0;
}

int
bm_outbox_put_batch(bm_outbox_t *ob, const bm_outbox_item_t *items, size_t n, bm_id_t *ret_ids)
{
	s_msg_t **v;
	size_t total = 4, bytes = 0, off = 4;
	s_batch_t *b;
	uint8_t *buf;
	int rc = 0;

	if (ob == NULL || items == NULL || n == 0 || n > UINT32_MAX) {
		return -EINVAL;
	}
	if (bm_journal_error(ob->j) != 0) {
		return BM_EREADONLY;
	}
	for (size_t i = 0; i < n; i++) {
		bytes += items[i].len;
	}
	if ((rc = s_room(ob, n, bytes)) < 0) {
		return rc;
	}
	v = calloc(n, sizeof *v);
	b = calloc(1, sizeof *b);
	if (v == NULL || b == NULL) {
		free(v);
		free(b);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = s_new_msg(ob, &items[i].opts, items[i].body, items[i].len, &v[i]);
		if (rc == 0) {
			total += 4 + s_put_size(v[i]);
		}
	}
	if (rc == 0 && total > BM_JOURNAL_RECORD_MAX) {
		rc = BM_ETOOBIG;
	}
	buf = rc == 0 ? malloc(total) : NULL;
	if (rc == 0 && buf == NULL) {
		rc = -ENOMEM;
	}
	if (rc == 0) {
		s_put32(buf, (uint32_t)n);
		for (size_t i = 0; i < n; i++) {
			s_put32(buf + off, (uint32_t)s_put_size(v[i]));
			s_put_encode(v[i], buf + off + 4);
			off += 4 + s_put_size(v[i]);
		}
		rc = bm_journal_append(ob->j, S_REC_BATCH, BM_JOURNAL_LIVE, buf, total, &b->seq);
	}
	free(buf);
	if (rc < 0) {
		for (size_t i = 0; i < n; i++) {
			if (v[i] != NULL) {
				free(v[i]);
			}
		}
		free(v);
		free(b);
		return rc;
	}
	b->live = n;
	for (size_t i = 0; i < n; i++) {
		v[i]->batch = b;
		if (ret_ids != NULL) {
			ret_ids[i] = v[i]->id;
		}
		(void)s_adopt(ob, v[i], S_UNSTORED);
	}
	free(v);
	return 0;
}

/*
 * Re-PUTs the messages whose records sit in the oldest segment, commits the
 * copies, and only then lets go of the originals: the old segment may be
 * deleted the moment it holds nothing live, so the copy must be stored first.
 */
static void
s_compact(bm_outbox_t *ob)
{
	uint64_t bound = 0;
	size_t cur = 0, n = 0, cap = 0;
	s_msg_t *m, **moved = NULL;
	uint64_t *seqs = NULL;

	if (bm_journal_segments(ob->j) <= S_COMPACT_SEGMENTS ||
	    bm__journal_segment_base(ob->j, 1, &bound) < 0) {
		return;
	}
	while ((m = bm__map_next(ob->by_id, &cur)) != NULL) {
		uint64_t seq = m->batch ? m->batch->seq : m->seq;
		uint64_t nseq;

		if (seq == 0 || seq >= bound || m->state == S_UNSTORED) {
			continue;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			s_msg_t **nm = realloc(moved, nc * sizeof *nm);
			uint64_t *ns = nm ? realloc(seqs, nc * sizeof *ns) : NULL;

			if (nm != NULL) {
				moved = nm;
			}
			if (ns == NULL) {
				break;
			}
			seqs = ns;
			cap = nc;
		}
		if (s_put_append(ob, m, &nseq) < 0 ||
		    (m->state == S_DEAD && m->why != NULL && s_record_dead(ob, m) < 0)) {
			break;
		}
		moved[n] = m;
		seqs[n++] = nseq;
	}
	if (n > 0 && bm_journal_commit(ob->j) == 0) {
		for (size_t i = 0; i < n; i++) {
			s_release(ob, moved[i]);
			moved[i]->seq = seqs[i];
		}
		bm_debug("outbox: %zu messages moved out of the oldest segment", n);
	}
	free(moved);
	free(seqs);
}

int
bm_outbox_commit(bm_outbox_t *ob)
{
	s_msg_t *m;
	int rc;

	if (ob == NULL) {
		return -EINVAL;
	}
	rc = bm_journal_commit(ob->j);
	if (rc < 0) {
		/* Nothing put since the last commit was stored: forget it.  The
		 * caller got (or gets now) the error for those ids. */
		while ((m = ob->unstored.head) != NULL) {
			s_free(ob, m);
		}
		return rc;
	}
	/* Stored under the policy: ALWAYS synced it; INTERVAL and NEVER count
	 * a written record as stored (docs/journal.md). */
	while ((m = ob->unstored.head) != NULL) {
		s_make_ready(ob, m, false);
		ob->st.stored++;
	}
	return 0;
}

int
bm_outbox_send(bm_outbox_t *ob, const bm_outbox_send_opts_t *o, const void *body, size_t len,
               bm_id_t *ret_id)
{
	int rc = bm_outbox_put(ob, o, body, len, ret_id);

	if (rc == 0 && (rc = bm_outbox_commit(ob)) == 0) {
		rc = bm_outbox_pump(ob);
	}
	return rc < 0 ? rc : 0;
}

/* ---- sending and retrying ---- */

static int64_t
s_backoff(bm_outbox_t *ob, uint32_t attempts)
{
	uint64_t ceil = ob->o.base_ms;
	uint32_t k = attempts > 0 ? attempts - 1 : 0;

	for (uint32_t i = 0; i < k && ceil < ob->o.cap_ms; i++) {
		ceil *= 2;
	}
	if (ceil > ob->o.cap_ms) {
		ceil = ob->o.cap_ms;
	}
	/* Full jitter: anywhere in [0, ceil]. */
	return (int64_t)randombytes_uniform((uint32_t)ceil + 1);
}

static bool
s_expired(const s_msg_t *m, int64_t now_wall)
{
	return m->ttl_ms != 0 && now_wall - m->created_ms >= (int64_t)m->ttl_ms;
}

/* An attempt failed (transient NACK or no ACK in time): back off, or die. */
static void
s_failed(bm_outbox_t *ob, s_msg_t *m)
{
	if (s_expired(m, bm_wall_ms())) {
		s_ttl(ob, m);
	} else if (m->attempts >= m->max_attempts) {
		s_kill(ob, m, BM_OUTBOX_DEAD_ATTEMPTS);
	} else {
		int64_t wait = s_backoff(ob, m->attempts);

		/* A backoff never outlives the TTL: the message is looked at
		 * again when it expires, not up to a backoff cap later. */
		if (m->ttl_ms > 0) {
			int64_t left = m->created_ms + (int64_t)m->ttl_ms - bm_wall_ms();

			wait = left < wait ? (left > 0 ? left : 0) : wait;
		}
		(void)s_make_timer(ob, m, S_WAITING, bm_mono_ms() + wait);
	}
}

static s_msg_t *
s_next_ready(bm_outbox_t *ob)
{
	for (int w = 3; w >= 0; w--) {
		if (ob->ready_bits[w] != 0) {
			int bit = 63 - __builtin_clzll(ob->ready_bits[w]);

			return ob->ready[w * 64 + bit].head;
		}
	}
	return NULL;
}

/* Sends one READY message.  0 sent (or died), 1 stop for now. */
static int
s_send_one(bm_outbox_t *ob, s_msg_t *m, int64_t now, int64_t now_wall)
{
	bm_send_opts_t so = {0};
	char tp[BM_TRACEPARENT_MAX + 1], ts[BM_TRACESTATE_MAX + 1];
	int rc;

	if (s_expired(m, now_wall)) {
		s_ttl(ob, m);
		return 0;
	}
	so.to = m->to;
	so.type = m->type;
	so.id = &m->id;
	so.corr = bm_id_is_zero(&m->corr) ? NULL : &m->corr;
	so.priority = m->priority;
	so.ttl_ms = m->ttl_ms;
	so.attempt = m->attempts;
	so.ts_ms = m->created_ms;
	if (m->trace_len > 0) {
		s_trace_split(m->trace, m->trace_len, tp, ts);
		so.traceparent = tp;
		so.tracestate = ts[0] ? ts : NULL;
	}
	rc = bm_client_send(ob->client, &so, m->body, m->len, NULL);
	if (rc == BM_ETOOBIG) {
		s_kill(ob, m, BM_OUTBOX_DEAD_TOOBIG);
		return 0;
	}
	if (rc == BM_EBADNAME) {
		s_kill(ob, m, BM_EBADNAME);
		return 0;
	}
	if (rc < 0) {
		/* No broker, or its queue is full: leave it first in line and
		 * try again shortly. */
		ob->blocked_ms = now + (rc == BM_EFULL ? 1 : 50);
		return 1;
	}
	m->attempts++;
	ob->st.sent++;
	if (m->attempts > 1) {
		uint8_t a[4];

		ob->st.retries++;
		s_put32(a, m->attempts);
		(void)s_record_id(ob, S_REC_ATTEMPT, &m->id, a, 4);
	}
	(void)s_make_timer(ob, m, S_INFLIGHT, now + ob->o.ack_timeout_ms);
	return 0;
}

int
bm_outbox_pump(bm_outbox_t *ob)
{
	int64_t now = bm_mono_ms(), now_wall = bm_wall_ms();
	int sent = 0, rc;
	s_msg_t *m;

	if (ob == NULL) {
		return -EINVAL;
	}
	if ((rc = bm_journal_tick(ob->j)) < 0) {
		return rc;
	}
	bm__client_report(ob->client, ob->live, ob->dead, ob->st.retries);
	s_compact(ob);
	if ((rc = bm_outbox_commit(ob)) < 0) {
		return rc;
	}
	/* Timers first: ACK deadlines passed, backoffs over. */
	while ((m = ob->sent.head) != NULL && m->due_ms <= now) {
		ob->st.timeouts++;
		s_failed(ob, m);
	}
	while (ob->nheap > 0 && ob->heap[0]->due_ms <= now) {
		s_make_ready(ob, ob->heap[0], false);
	}
	if (ob->client == NULL || now < ob->blocked_ms) {
		return 0;
	}
	ob->blocked_ms = 0;
	while (ob->inflight < (size_t)ob->o.window && (m = s_next_ready(ob)) != NULL) {
		if (s_send_one(ob, m, now, now_wall) != 0) {
			break;
		}
		sent++;
	}
	return sent;
}

static bool
s_permanent(int code)
{
	return code == BM_ETOOBIG || code == BM_EDENIED || code == BM_EBADNAME ||
	       code == BM_EPROTO || code == BM_EVERSION;
}

int
bm_outbox_handle(bm_outbox_t *ob, const bm_event_t *ev)
{
	s_msg_t *m;
	size_t cur = 0;

	if (ob == NULL || ev == NULL) {
		return -EINVAL;
	}
	switch (ev->kind) {
	case BM_EV_ACK:
		if ((m = bm__map_get(ob->by_id, ev->id.b, 16)) == NULL) {
			return 0;
		}
		ob->st.acked++;
		(void)s_record_id(ob, S_REC_ACK, &m->id, NULL, 0);
		s_free(ob, m);
		return 1;
	case BM_EV_NACK:
		if ((m = bm__map_get(ob->by_id, ev->id.b, 16)) == NULL) {
			return 0;
		}
		ob->st.nacked++;
		if (m->state != S_INFLIGHT) {
			return 1; /* a stale answer to an earlier attempt */
		}
		/* An expiry says nothing new (the TTL is the reason already):
		 * it does not hide the refusal that explains it. */
		if (ev->code != BM_ETTL || m->why == NULL) {
			s_set_why(m, ev->text, strnlen(ev->text, sizeof ev->text));
		}
		if (s_permanent(ev->code)) {
			s_kill(ob, m, ev->code == BM_ETOOBIG ? BM_OUTBOX_DEAD_TOOBIG : ev->code);
		} else {
			s_failed(ob, m);
		}
		return 1;
	case BM_EV_NOTICE:
		if (strcmp(ev->text, "online") != 0) {
			return 0;
		}
		/* The destination is back: what waits for it goes now. */
		while ((m = bm__map_next(ob->by_id, &cur)) != NULL) {
			if (m->state == S_WAITING && strcmp(m->to, ev->peer) == 0) {
				s_make_ready(ob, m, false);
			}
		}
		return 0;
	case BM_EV_REGISTERED:
		/* A new broker: whatever the old one held is gone. */
		while ((m = bm__map_next(ob->by_id, &cur)) != NULL) {
			if (m->state == S_INFLIGHT || m->state == S_WAITING) {
				s_make_ready(ob, m, false);
			}
		}
		ob->blocked_ms = 0;
		return 0;
	default:
		return 0;
	}
}

int
bm_outbox_timeout(const bm_outbox_t *ob)
{
	int64_t now = bm_mono_ms(), due = -1;
	int jt;

	if (ob == NULL) {
		return -1;
	}
	if (ob->unstored.head != NULL) {
		due = now;
	}
	if (s_next_ready((bm_outbox_t *)ob) != NULL && ob->inflight < (size_t)ob->o.window) {
		due = ob->blocked_ms > now ? ob->blocked_ms : now;
	}
	if (ob->nheap > 0 && (due < 0 || ob->heap[0]->due_ms < due)) {
		due = ob->heap[0]->due_ms;
	}
	if (ob->sent.head != NULL && (due < 0 || ob->sent.head->due_ms < due)) {
		due = ob->sent.head->due_ms;
	}
	jt = bm_journal_timeout(ob->j);
	if (jt >= 0 && (due < 0 || now + jt < due)) {
		due = now + jt;
	}
	if (due < 0) {
		return -1;
	}
	return due <= now ? 0 : (int)(due - now);
}

int
bm_outbox_run(bm_outbox_t *ob, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;
	int rc;

	if (ob == NULL || ob->client == NULL) {
		return -EINVAL;
	}
	for (;;) {
		bm_event_t ev;
		int wait;

		if ((rc = bm_outbox_pump(ob)) < 0) {
			return rc;
		}
		if (ob->live == 0) {
			return 0;
		}
		if (bm_mono_ms() >= deadline) {
			return -ETIMEDOUT;
		}
		wait = bm_outbox_timeout(ob);
		if (wait < 0 || wait > deadline - bm_mono_ms()) {
			wait = (int)(deadline - bm_mono_ms());
		}
		rc = bm_client_recv(ob->client, wait, &ev);
		if (rc == 0) {
			(void)bm_outbox_handle(ob, &ev);
			bm_event_clear(&ev);
			/* Drain what else is waiting before the next pump. */
			while (bm_client_recv(ob->client, 0, &ev) == 0) {
				(void)bm_outbox_handle(ob, &ev);
				bm_event_clear(&ev);
			}
		} else if (rc != -ETIMEDOUT) {
			/* -EINTR included: a signal is the caller's to handle. */
			return rc;
		}
	}
}

/* ---- dead letters and inspection ---- */

int
bm_outbox_requeue(bm_outbox_t *ob, const bm_id_t *id)
{
	s_msg_t *m;
	uint8_t t[8];
	int rc;

	if (ob == NULL || id == NULL) {
		return -EINVAL;
	}
	if ((m = bm__map_get(ob->by_id, id->b, 16)) == NULL) {
		return -ENOENT;
	}
	if (m->state != S_DEAD) {
		return -EALREADY;
	}
	if ((rc = s_room(ob, 1, m->len)) < 0) {
		return rc;
	}
	m->created_ms = bm_wall_ms();
	s_put64(t, (uint64_t)m->created_ms);
	if ((rc = s_record_id(ob, S_REC_REQUEUE, &m->id, t, 8)) < 0) {
		return rc;
	}
	m->state = -1;
	m->dead_code = 0;
	m->attempts = 0;
	free(m->why);
	m->why = NULL;
	ob->dead--;
	ob->live++;
	ob->bytes += m->len;
	s_make_ready(ob, m, false);
	return 0;
}

/* Applies fn (requeue or purge) to every dead letter; returns the count. */
static int
s_each_dead(bm_outbox_t *ob, int (*fn)(bm_outbox_t *, const bm_id_t *))
{
	size_t cur = 0, n = 0;
	bm_id_t *ids;
	s_msg_t *m;
	int rc = 0;

	if (ob == NULL) {
		return -EINVAL;
	}
	/* Collect first: fn changes the map being walked. */
	if ((ids = malloc((ob->dead + 1) * sizeof *ids)) == NULL) {
		return -ENOMEM;
	}
	while ((m = bm__map_next(ob->by_id, &cur)) != NULL) {
		if (m->state == S_DEAD) {
			ids[n++] = m->id;
		}
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = fn(ob, &ids[i]);
	}
	free(ids);
	return rc < 0 ? rc : (int)n;
}

int
bm_outbox_requeue_all(bm_outbox_t *ob)
{
	return s_each_dead(ob, bm_outbox_requeue);
}

int
bm_outbox_purge(bm_outbox_t *ob, const bm_id_t *id)
{
	s_msg_t *m;
	int rc;

	if (ob == NULL || id == NULL) {
		return -EINVAL;
	}
	if ((m = bm__map_get(ob->by_id, id->b, 16)) == NULL) {
		return -ENOENT;
	}
	if ((rc = s_record_id(ob, S_REC_PURGE, &m->id, NULL, 0)) < 0) {
		return rc;
	}
	s_free(ob, m);
	return 0;
}

int
bm_outbox_purge_dead(bm_outbox_t *ob)
{
	return s_each_dead(ob, bm_outbox_purge);
}

static int
s_cmp_entry(const void *a, const void *b)
{
	const bm_outbox_entry_t *x = a, *y = b;

	if (x->priority != y->priority) {
		return x->priority > y->priority ? -1 : 1;
	}
	return memcmp(x->id.b, y->id.b, 16);
}

static void
s_entry(const s_msg_t *m, bm_outbox_entry_t *e, int64_t now, int64_t wall)
{
	memset(e, 0, sizeof *e);
	e->id = m->id;
	memcpy(e->to, m->to, sizeof e->to);
	memcpy(e->type, m->type, sizeof e->type);
	e->priority = m->priority;
	e->attempts = m->attempts;
	e->max_attempts = m->max_attempts;
	e->ttl_ms = m->ttl_ms;
	e->created_ms = m->created_ms;
	e->size = m->len;
	e->dead_code = m->dead_code;
	if (m->why != NULL) {
		snprintf(e->why, sizeof e->why, "%s", m->why);
	}
	e->inflight = m->state == S_INFLIGHT;
	e->next_ms = (m->state == S_WAITING || m->state == S_INFLIGHT)
	                     ? wall + (m->due_ms > now ? m->due_ms - now : 0)
	                     : wall;
}

int
bm_outbox_get(const bm_outbox_t *ob, const bm_id_t *id, bm_outbox_entry_t *ret_entry)
{
	s_msg_t *m;

	if (ob == NULL || id == NULL || ret_entry == NULL) {
		return -EINVAL;
	}
	if ((m = bm__map_get(ob->by_id, id->b, 16)) == NULL) {
		return -ENOENT;
	}
	s_entry(m, ret_entry, bm_mono_ms(), bm_wall_ms());
	return 0;
}

int
bm_outbox_list(bm_outbox_t *ob, bool dead, bm_outbox_entry_t **ret_entries, size_t *ret_count)
{
	size_t cur = 0, n = 0;
	bm_outbox_entry_t *v;
	int64_t now = bm_mono_ms(), wall = bm_wall_ms();
	s_msg_t *m;

	if (ob == NULL || ret_entries == NULL || ret_count == NULL) {
		return -EINVAL;
	}
	v = calloc((dead ? ob->dead : ob->live) + 1, sizeof *v);
	if (v == NULL) {
		return -ENOMEM;
	}
	while ((m = bm__map_next(ob->by_id, &cur)) != NULL) {
		if ((m->state == S_DEAD) != dead) {
			continue;
		}
		s_entry(m, &v[n++], now, wall);
	}
	qsort(v, n, sizeof *v, s_cmp_entry);
	*ret_entries = v;
	*ret_count = n;
	return 0;
}

void
bm_outbox_stats(const bm_outbox_t *ob, bm_outbox_stats_t *ret)
{
	if (ob == NULL || ret == NULL) {
		return;
	}
	*ret = ob->st;
	ret->pending = ob->live - ob->inflight;
	ret->inflight = ob->inflight;
	ret->dead = ob->dead;
	ret->bytes = ob->bytes;
	ret->segments = bm_journal_segments(ob->j);
	ret->journal_bytes = bm_journal_bytes(ob->j);
}

size_t
bm_outbox_count(const bm_outbox_t *ob)
{
	return ob ? ob->live : 0;
}

bm_journal_t *
bm_outbox_journal(bm_outbox_t *ob)
{
	return ob ? ob->j : NULL;
}

const char *
bm_outbox_reason(int code)
{
	switch (code) {
	case 0:
		return "live";
	case BM_OUTBOX_DEAD_TTL:
		return "ttl: expired before it was acknowledged";
	case BM_OUTBOX_DEAD_ATTEMPTS:
		return "attempts: every attempt went unacknowledged";
	case BM_OUTBOX_DEAD_TOOBIG:
		return "too large: over a size limit on its way";
	default:
		return bm_strerror(code);
	}
}

/* ---- reading one message's history (beast trace) ---- */

typedef struct {
	bm_id_t id;              /* the message asked about */
	bm_outbox_trace_t *t;    /* what was found */
} s_trace_arg_t;

static void
s_trace_put(s_trace_arg_t *a, const uint8_t *p, size_t len)
{
	bm_outbox_trace_t *t = a->t;
	size_t tl, yl;

	if (len < S_PUT_FIXED || memcmp(p, a->id.b, 16) != 0) {
		return;
	}
	tl = p[33];
	yl = p[34];
	if (tl == 0 || tl > BM_ADDR_MAX || yl == 0 || yl > BM_TYPE_MAX ||
	    len < S_PUT_FIXED + tl + yl) {
		return;
	}
	/* A compaction re-PUT carries the state as it was then. */
	if (t->records == 0) {
		t->stored_ms = (int64_t)s_get64(p + 48);
	}
	t->records++;
	memcpy(t->to, p + S_PUT_FIXED, tl);
	t->to[tl] = '\0';
	memcpy(t->type, p + S_PUT_FIXED + tl, yl);
	t->type[yl] = '\0';
	t->ttl_ms = s_get32(p + 36);
	t->max_attempts = s_get32(p + 40);
	if (s_get32(p + 44) > t->attempts) {
		t->attempts = s_get32(p + 44);
	}
	t->dead_code = (int32_t)s_get32(p + 56);
	t->fate = t->dead_code != 0 ? BM_OUTBOX_FATE_DEAD : BM_OUTBOX_FATE_PENDING;
	if ((p[35] & S_MSG_TRACE) && len >= S_PUT_FIXED + tl + yl + (size_t)s_get32(p + 60)) {
		const uint8_t *x = p + S_PUT_FIXED + tl + yl + s_get32(p + 60);
		size_t xl = len - S_PUT_FIXED - tl - yl - s_get32(p + 60);
		char ts[BM_TRACESTATE_MAX + 1];

		if (s_trace_check(x, xl) == 0 && xl > 0) {
			s_trace_split(x, xl, t->traceparent, ts);
		}
	}
}

static int
s_trace_replay(void *arg, const bm_journal_rec_t *r)
{
	s_trace_arg_t *a = arg;
	bm_outbox_trace_t *t = a->t;
	const uint8_t *p = r->data;

	if (r->type == S_REC_PUT) {
		s_trace_put(a, p, r->len);
		return 0;
	}
	if (r->type == S_REC_BATCH) {
		size_t off = 4, n = r->len >= 4 ? s_get32(p) : 0;

		for (size_t i = 0; i < n && off + 4 <= r->len; i++) {
			size_t l = s_get32(p + off);

			if (l > r->len - off - 4) {
				break;
			}
			s_trace_put(a, p + off + 4, l);
			off += 4 + l;
		}
		return 0;
	}
	if (r->len < 16 || memcmp(p, a->id.b, 16) != 0) {
		return 0;
	}
	t->records++;
	switch (r->type) {
	case S_REC_ACK:
		t->fate = BM_OUTBOX_FATE_ACKED;
		break;
	case S_REC_PURGE:
		t->fate = BM_OUTBOX_FATE_PURGED;
		break;
	case S_REC_ATTEMPT:
		if (r->len >= 20 && s_get32(p + 16) > t->attempts) {
			t->attempts = s_get32(p + 16);
		}
		break;
	case S_REC_DEAD:
		if (r->len >= 24) {
			t->fate = BM_OUTBOX_FATE_DEAD;
			t->dead_code = (int32_t)s_get32(p + 16);
			if (s_get32(p + 20) > t->attempts) {
				t->attempts = s_get32(p + 20);
			}
			if (r->len >= 25 && r->len >= 25 + (size_t)p[24] && p[24] > 0) {
				snprintf(t->why, sizeof t->why, "%.*s", (int)p[24], (const char *)p + 25);
			}
		}
		break;
	case S_REC_REQUEUE:
		if (r->len >= 24) {
			t->fate = BM_OUTBOX_FATE_PENDING;
			t->dead_code = 0;
			t->why[0] = '\0';
			t->attempts = 0;
			t->requeued_ms = (int64_t)s_get64(p + 16);
		}
		break;
	default:
		break;
	}
	return 0;
}

int
bm_outbox_trace(const char *dir, const bm_id_t *id, bm_outbox_trace_t *ret)
{
	bm_outbox_trace_t t = {0};
	s_trace_arg_t a = {.t = &t};
	bm_journal_opts_t jo = {.sync = BM_JOURNAL_SYNC_NEVER, .replay = s_trace_replay, .arg = &a};
	bm_journal_t *j = NULL;
	int rc;

	if (dir == NULL || id == NULL || ret == NULL) {
		return -EINVAL;
	}
	a.id = *id;
	if ((rc = bm_journal_open(dir, &jo, &j)) < 0) {
		return rc;
	}
	bm_journal_destroy(&j);
	if (t.records == 0) {
		return -ENOENT;
	}
	*ret = t;
	return 0;
}

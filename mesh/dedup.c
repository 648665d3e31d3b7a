/*
 * dedup.c - the receiver's de-duplication window, persisted in a journal.
 *
 * A sender retries a message whose ACK it did not see; when the first copy
 * did arrive (the ACK was lost, the sender or beastd died in between) the
 * receiver gets it twice.  The window remembers, per sender, the ids of the
 * last `window` messages it handled, so the copy is ACKed again without
 * reaching the handler.  Message ids keep their value across retries,
 * restarts and requeue, so the id is the key.
 *
 * Order of work for each delivered message (bm_dedup_seen, the handler,
 * bm_dedup_mark, bm_dedup_commit, then the ACK):
 *   - the ACK of a message, new or duplicate, goes out only after the mark
 *     is committed: an ACK before that lets the sender forget a message the
 *     receiver may not remember after a crash;
 *   - a mark may carry a note: the handler's result, stored in the same
 *     record as the mark, so "handled" and "remembered" are one atomic
 *     write.  A handler whose effects live elsewhere must make them
 *     idempotent for the gap between its effect and the mark.
 * Group commit: mark a batch of deliveries, commit once, ACK them all.
 *
 * Persistence: every mark is a LIVE journal record; a mark pushed out of
 * its sender's window is released, so old segments drain and are deleted;
 * marks of senders gone quiet are rewritten forward (s_compact).
 * On open the journal replays the marks into the windows (and the notes to
 * the caller).
 *
 * Record (journal type 1, LIVE), little-endian:
 *   0   16  message id
 *   16  1   u8 sender name length N (1..64)
 *   17  N   sender name
 *   17+N    note bytes (the rest of the record), may be empty
 *
 * Memory: per sender a ring of `window` slots (id + journal seq) and a hash
 * map from id to slot.  Not thread safe.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mesh_private.h"

#define S_REC_MARK 1
#define S_WINDOW_DEFAULT 65536
#define S_COMPACT_SEGMENTS 4

typedef struct {
	bm_id_t id;     /* a handled message (the map's key points here) */
	uint64_t seq;   /* its mark's journal record */
} s_slot_t;

typedef struct {
	char name[BM_NAME_MAX + 1];  /* sender */
	s_slot_t *ring;              /* window slots, oldest at head */
	size_t cap;                  /* allocated slots (grows to the window) */
	size_t head, n;              /* oldest slot, slots in use */
	bm_map_t *ids;               /* id -> slot */
} s_sender_t;

struct bm_dedup {
	bm_journal_t *j;          /* the marks */
	bm_map_t *senders;        /* name -> s_sender_t */
	size_t window;            /* ids remembered per sender */
	bm_dedup_note_fn note;    /* replay: notes to the caller */
	void *arg;                /* its argument */
	uint64_t marks;           /* marks made since open */
};

static void
s_sender_free(s_sender_t *s)
{
	if (s != NULL) {
		bm__map_destroy(&s->ids);
		free(s->ring);
		free(s);
	}
}

static s_sender_t *
s_sender(bm_dedup_t *d, const char *name, bool create)
{
	size_t len = strlen(name);
	s_sender_t *s = bm__map_get(d->senders, name, len);

	if (s != NULL || !create) {
		return s;
	}
	s = calloc(1, sizeof *s);
	if (s == NULL || (s->ids = bm__map_new()) == NULL) {
		s_sender_free(s);
		return NULL;
	}
	memcpy(s->name, name, len + 1);
	if (bm__map_put(d->senders, s->name, len, s) < 0) {
		s_sender_free(s);
		return NULL;
	}
	return s;
}

/* Adds id to the sender's window, pushing out (and releasing) the oldest
 * when full.  A second mark of an id already there (a compaction copy met
 * on replay) is released and ignored: returns 1 then, else 0. */
static int
s_remember(bm_dedup_t *d, s_sender_t *s, const bm_id_t *id, uint64_t seq)
{
	s_slot_t *slot;

	if (bm__map_get(s->ids, id->b, sizeof id->b) != NULL) {
		bm_journal_release(d->j, seq);
		return 1;
	}
	if (s->n == d->window) {
		slot = &s->ring[s->head];
		bm__map_del(s->ids, slot->id.b, sizeof slot->id.b);
		bm_journal_release(d->j, slot->seq);
		s->head = (s->head + 1) % s->cap;
		s->n--;
	} else if (s->n == s->cap) {
		/* Grow, unrolling the ring so the map's keys move with it. */
		size_t cap = s->cap ? s->cap * 2 : 64;
		s_slot_t *ring;

		if (cap > d->window) {
			cap = d->window;
		}
		ring = malloc(cap * sizeof *ring);
		if (ring == NULL) {
			return -ENOMEM;
		}
		for (size_t i = 0; i < s->n; i++) {
			ring[i] = s->ring[(s->head + i) % s->cap];
		}
		free(s->ring);
		s->ring = ring;
		s->cap = cap;
		s->head = 0;
		bm__map_destroy(&s->ids);
		if ((s->ids = bm__map_new()) == NULL) {
			return -ENOMEM;
		}
		for (size_t i = 0; i < s->n; i++) {
			if (bm__map_put(s->ids, ring[i].id.b, sizeof ring[i].id.b, &ring[i]) < 0) {
				return -ENOMEM;
			}
		}
	}
	slot = &s->ring[(s->head + s->n) % s->cap];
	slot->id = *id;
	slot->seq = seq;
	if (bm__map_put(s->ids, slot->id.b, sizeof slot->id.b, slot) < 0) {
		return -ENOMEM;
	}
	s->n++;
	return 0;
}

static int
s_replay(void *arg, const bm_journal_rec_t *r)
{
	bm_dedup_t *d = arg;
	const uint8_t *p = r->data;
	char name[BM_NAME_MAX + 1];
	s_sender_t *s;
	bm_id_t id;
	size_t nl;
	int rc;

	if (r->type != S_REC_MARK) {
		return 0;
	}
	if (r->len < 17 || (nl = p[16]) == 0 || nl > BM_NAME_MAX || r->len < 17 + nl) {
		return BM_ECORRUPT;
	}
	memcpy(id.b, p, 16);
	memcpy(name, p + 17, nl);
	name[nl] = '\0';
	if ((s = s_sender(d, name, true)) == NULL) {
		return -ENOMEM;
	}
	if ((rc = s_remember(d, s, &id, r->seq)) < 0) {
		return rc;
	}
	if (rc == 0 && d->note != NULL) {
		return d->note(d->arg, name, &id, p + 17 + nl, r->len - 17 - nl);
	}
	return 0;
}

int
bm_dedup_open(const char *dir, const bm_dedup_opts_t *opts, bm_dedup_t **ret_dedup)
{
	bm_journal_opts_t jo = {0};
	bm_dedup_t *d;
	int rc;

	if (dir == NULL || ret_dedup == NULL) {
		return -EINVAL;
	}
	d = calloc(1, sizeof *d);
	if (d == NULL || (d->senders = bm__map_new()) == NULL) {
		free(d);
		return -ENOMEM;
	}
	d->window = opts && opts->window ? opts->window : S_WINDOW_DEFAULT;
	if (opts != NULL) {
		d->note = opts->replay_note;
		d->arg = opts->arg;
		jo.sync = opts->sync;
		jo.interval_ms = opts->interval_ms;
		jo.segment_size = opts->segment_size;
		jo.report = opts->report;
		jo.ops = opts->ops;
	}
	jo.replay = s_replay;
	jo.arg = d;
	if ((rc = bm_journal_open(dir, &jo, &d->j)) < 0) {
		bm_dedup_destroy(&d);
		return rc;
	}
	*ret_dedup = d;
	return 0;
}

void
bm_dedup_destroy(bm_dedup_t **self_p)
{
	bm_dedup_t *d;
	size_t cur = 0;
	s_sender_t *s;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	d = *self_p;
	bm_journal_destroy(&d->j);
	while (d->senders != NULL && (s = bm__map_next(d->senders, &cur)) != NULL) {
		s_sender_free(s);
	}
	bm__map_destroy(&d->senders);
	free(d);
	*self_p = NULL;
}

int
bm_dedup_seen(bm_dedup_t *d, const char *from, const bm_id_t *id)
{
	s_sender_t *s;

	if (d == NULL || from == NULL || id == NULL) {
		return -EINVAL;
	}
	s = s_sender(d, from, false);
	return s != NULL && bm__map_get(s->ids, id->b, sizeof id->b) != NULL ? 1 : 0;
}

int
bm_dedup_mark(bm_dedup_t *d, const char *from, const bm_id_t *id, const void *note,
              size_t len)
{
	uint8_t hdr[17];
	size_t nl;
	uint64_t seq;
	s_sender_t *s;
	int rc;

	/* A sender on another host is "name@host" (at most 64 bytes too). */
	if (d == NULL || from == NULL || id == NULL || (note == NULL && len > 0) ||
	    from[0] == '@' || bm_address_check(from) < 0) {
		return -EINVAL;
	}
	nl = strlen(from);
	memcpy(hdr, id->b, 16);
	hdr[16] = (uint8_t)nl;
	{
		bm_journal_iov_t v[3] = {{hdr, 17}, {from, nl}, {note, len}};

		if ((rc = bm_journal_appendv(d->j, S_REC_MARK, BM_JOURNAL_LIVE, v, 3, &seq)) < 0) {
			return rc;
		}
	}
	if ((s = s_sender(d, from, true)) == NULL) {
		return -ENOMEM;
	}
	if ((rc = s_remember(d, s, id, seq)) < 0) {
		return rc;
	}
	d->marks++;
	return 0;
}

/*
 * A sender that stopped sending keeps its marks live for ever, and the log
 * is only cut at its front: so when the journal holds more than
 * S_COMPACT_SEGMENTS segments, the marks still in the oldest one are
 * written again at the head (without their notes: a note serves the
 * recovery right after its handling), committed, and only then released.
 */
static int
s_compact(bm_dedup_t *d)
{
	uint64_t bound, *seqs = NULL;
	s_slot_t **moved = NULL;
	size_t cur = 0, n = 0, cap = 0;
	s_sender_t *s;
	int rc = 0;

	if (bm_journal_segments(d->j) <= S_COMPACT_SEGMENTS ||
	    bm__journal_segment_base(d->j, 1, &bound) < 0) {
		return 0;
	}
	while (rc == 0 && (s = bm__map_next(d->senders, &cur)) != NULL) {
		size_t nl = strlen(s->name);

		for (size_t i = 0; rc == 0 && i < s->n; i++) {
			s_slot_t *slot = &s->ring[(s->head + i) % s->cap];
			uint8_t hdr[17];
			bm_journal_iov_t v[2] = {{hdr, 17}, {s->name, nl}};

			if (slot->seq >= bound) {
				continue;
			}
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 64;
				s_slot_t **nm = realloc(moved, nc * sizeof *nm);
				uint64_t *ns = nm ? realloc(seqs, nc * sizeof *ns) : NULL;

				if (nm != NULL) {
					moved = nm;
				}
				if (ns == NULL) {
					rc = -ENOMEM;
					break;
				}
				seqs = ns;
				cap = nc;
			}
			memcpy(hdr, slot->id.b, 16);
			hdr[16] = (uint8_t)nl;
			rc = bm_journal_appendv(d->j, S_REC_MARK, BM_JOURNAL_LIVE, v, 2, &seqs[n]);
			if (rc == 0) {
				moved[n++] = slot;
			}
		}
	}
	if (rc == 0 && n > 0) {
		rc = bm_journal_commit(d->j);
	}
	for (size_t i = 0; rc == 0 && i < n; i++) {
		bm_journal_release(d->j, moved[i]->seq);
		moved[i]->seq = seqs[i];
	}
	free(moved);
	free(seqs);
	return rc;
}

int
bm_dedup_commit(bm_dedup_t *d)
{
	int rc;

	if (d == NULL) {
		return -EINVAL;
	}
	if ((rc = bm_journal_commit(d->j)) < 0) {
		return rc;
	}
	return s_compact(d);
}

bm_journal_t *
bm_dedup_journal(bm_dedup_t *d)
{
	return d ? d->j : NULL;
}

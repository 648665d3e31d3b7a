/*
 * obs.c - the broker's observability tables: who sends to whom (flows) and
 * how long a delivery waits for its ACK (a sampled histogram).
 *
 * Both sit on the routing path, so both are fixed-size arrays touched in
 * O(1) with no allocation after bm__obs_new:
 *
 * - Flows: an open-addressing table of (from, to) name pairs, at most
 *   BM_SNAP_FLOWS_MAX of them; a pair seen once the table is full is
 *   summed into one "_other" flow.  Entries are never removed (an agent
 *   that went away keeps its past traffic), so the table's memory and the
 *   snapshot's size are bounded whatever the swarm does.
 *
 * - SEND->ACK time: each delivery stamps its id and bm_mono_ns() into a
 *   direct-mapped slot chosen by the id's random bits; an ACK that finds
 *   its own id there observes the elapsed time into the histogram and
 *   clears the slot.  A delivery whose slot is overwritten before its ACK
 *   (more than S_LAT_SLOTS in flight) is simply not sampled: the histogram
 *   is a sample of the traffic, never a cost that grows with it.
 *
 * Threading: the broker's thread only (snapshots copy out of it there).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mesh_private.h"

#define S_FLOW_SLOTS 512 /* power of two, twice BM_SNAP_FLOWS_MAX */
#define S_LAT_SLOTS 4096 /* power of two */

typedef struct {
	bm_id_t id;                   /* the message */
	int64_t t_ns;                 /* bm_mono_ns() */
	uint32_t attempt;             /* SEND's attempt */
	int32_t code;                 /* NACK reason */
	uint8_t kind;                 /* enum bm_trace_kind; 0 = empty */
	char from[BM_NAME_MAX + 1];   /* see bm_trace_event_t */
	char to[BM_ADDR_MAX + 1];     /* see bm_trace_event_t */
} s_trace_t;

typedef struct {
	bm_id_t id;      /* the delivery's id; zero = free */
	int64_t t_ns;    /* bm_mono_ns() when it was delivered */
} s_lat_slot_t;

struct bm_obs {
	bm_snap_flow_t flows[S_FLOW_SLOTS]; /* msgs == 0 and from[0] == 0: free */
	size_t nflows;                      /* slots in use */
	bm_snap_flow_t other;               /* pairs past the bound */
	s_lat_slot_t lat[S_LAT_SLOTS];      /* deliveries awaiting their ACK */
	uint64_t buckets[BM_LAT_BUCKETS];   /* histogram, per bucket */
	uint64_t count;                     /* samples */
	uint64_t sum_us;                    /* their sum */
	s_trace_t *ring;                    /* BM_TRACE_RING events */
	uint64_t ring_next;                 /* events written so far */
	uint64_t blobs;                     /* blob.announce routed */
	uint64_t blob_bytes;                /* sizes they announced */
};

static const int64_t s_bounds_us[BM_LAT_BUCKETS - 1] = BM_LAT_BOUNDS_US;

bm_obs_t *
bm__obs_new(void)
{
	bm_obs_t *o = calloc(1, sizeof *o);

	/* calloc'd: its pages cost memory only once the ring reaches them. */
	if (o != NULL && (o->ring = calloc(BM_TRACE_RING, sizeof *o->ring)) == NULL) {
		free(o);
		o = NULL;
	}
	if (o != NULL) {
		snprintf(o->other.from, sizeof o->other.from, "_other");
		snprintf(o->other.to, sizeof o->other.to, "_other");
	}
	return o;
}

void
bm__obs_destroy(bm_obs_t **self_p)
{
	if (self_p != NULL && *self_p != NULL) {
		free((*self_p)->ring);
		free(*self_p);
		*self_p = NULL;
	}
}

void
bm__obs_trace(bm_obs_t *o, int kind, const bm_id_t *id, const char *from, const char *to,
              uint32_t attempt, int code, int64_t now_ns)
{
	s_trace_t *t = &o->ring[o->ring_next++ % BM_TRACE_RING];
	size_t fl = strnlen(from, BM_NAME_MAX), tl = strnlen(to, BM_ADDR_MAX);

	t->id = *id;
	t->t_ns = now_ns;
	t->attempt = attempt;
	t->code = code;
	t->kind = (uint8_t)kind;
	memcpy(t->from, from, fl);
	t->from[fl] = '\0';
	memcpy(t->to, to, tl);
	t->to[tl] = '\0';
}

size_t
bm__obs_trace_find(const bm_obs_t *o, const bm_id_t *id, bm_trace_event_t *ret, size_t max)
{
	uint64_t end = o->ring_next, start = end > BM_TRACE_RING ? end - BM_TRACE_RING : 0;
	struct timespec ts;
	int64_t wall_us, mono_ns = bm_mono_ns();
	size_t n = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	wall_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	for (uint64_t i = start; i < end && n < max; i++) {
		const s_trace_t *t = &o->ring[i % BM_TRACE_RING];

		if (t->kind == 0 || !bm_id_equal(&t->id, id)) {
			continue;
		}
		ret[n].kind = t->kind;
		ret[n].t_us = wall_us - (mono_ns - t->t_ns) / 1000;
		memcpy(ret[n].from, t->from, sizeof ret[n].from);
		memcpy(ret[n].to, t->to, sizeof ret[n].to);
		ret[n].attempt = t->attempt;
		ret[n].code = t->code;
		n++;
	}
	return n;
}

const char *
bm_trace_kind_name(int kind)
{
	switch (kind) {
	case BM_TRACE_ROUTED:
		return "routed";
	case BM_TRACE_NACKED:
		return "nacked";
	case BM_TRACE_ACKED:
		return "acked";
	case BM_TRACE_REFUSED:
		return "refused";
	default:
		return "?";
	}
}

static uint32_t
s_hash(const char *a, const char *b)
{
	uint32_t h = 2166136261u;

	for (; *a; a++) {
		h = (h ^ (uint8_t)*a) * 16777619u;
	}
	h = (h ^ 0xff) * 16777619u; /* separator: ("ab","c") != ("a","bc") */
	for (; *b; b++) {
		h = (h ^ (uint8_t)*b) * 16777619u;
	}
	return h;
}

void
bm__obs_flow(bm_obs_t *o, const char *from, const char *to, uint64_t bytes)
{
	uint32_t i = s_hash(from, to) & (S_FLOW_SLOTS - 1);

	for (int probe = 0; probe < S_FLOW_SLOTS; probe++, i = (i + 1) & (S_FLOW_SLOTS - 1)) {
		bm_snap_flow_t *f = &o->flows[i];

		if (f->from[0] == '\0') {
			if (o->nflows >= BM_SNAP_FLOWS_MAX) {
				break;
			}
			snprintf(f->from, sizeof f->from, "%s", from);
			snprintf(f->to, sizeof f->to, "%s", to);
			o->nflows++;
		} else if (strcmp(f->from, from) != 0 || strcmp(f->to, to) != 0) {
			continue;
		}
		f->msgs++;
		f->bytes += bytes;
		return;
	}
	o->other.msgs++;
	o->other.bytes += bytes;
}

static s_lat_slot_t *
s_lat_slot(bm_obs_t *o, const bm_id_t *id)
{
	/* The last bytes of an id are random (id.c): a fair spread. */
	uint32_t k = (uint32_t)id->b[14] << 8 | id->b[15];

	return &o->lat[k & (S_LAT_SLOTS - 1)];
}

void
bm__obs_delivered(bm_obs_t *o, const bm_id_t *id, int64_t now_ns)
{
	s_lat_slot_t *s = s_lat_slot(o, id);

	s->id = *id;
	s->t_ns = now_ns;
}

void
bm__obs_settled(bm_obs_t *o, const bm_id_t *id, bool acked, int64_t now_ns)
{
	s_lat_slot_t *s = s_lat_slot(o, id);
	int64_t us;
	int k = 0;

	if (!bm_id_equal(&s->id, id)) {
		return;
	}
	memset(&s->id, 0, sizeof s->id);
	if (!acked) {
		return;
	}
	us = (now_ns - s->t_ns) / 1000;
	us = us < 0 ? 0 : us;
	while (k < BM_LAT_BUCKETS - 1 && us > s_bounds_us[k]) {
		k++;
	}
	o->buckets[k]++;
	o->count++;
	o->sum_us += (uint64_t)us;
}

void
bm__obs_blob(bm_obs_t *o, const void *body, size_t len)
{
	/* The announce body is JSON with "size":N (cli_announce.c, bm_agent);
	 * read it without a parser, within the bytes given. */
	static const char key[] = "\"size\":";
	const char *p = body, *end = p + len;
	uint64_t v = 0;

	o->blobs++;
	for (; p + sizeof key - 1 <= end; p++) {
		if (memcmp(p, key, sizeof key - 1) == 0) {
			p += sizeof key - 1;
			while (p < end && *p == ' ') {
				p++;
			}
			while (p < end && *p >= '0' && *p <= '9' && v < UINT64_MAX / 10) {
				v = v * 10 + (uint64_t)(*p++ - '0');
			}
			o->blob_bytes += v;
			return;
		}
	}
}

static int
s_by_msgs(const void *a, const void *b)
{
	const bm_snap_flow_t *x = a, *y = b;

	return x->msgs < y->msgs ? 1 : (x->msgs > y->msgs ? -1 : strcmp(x->from, y->from));
}

size_t
bm__obs_copy(const bm_obs_t *o, bm_broker_snap_t *s)
{
	size_t n = 0;

	for (size_t i = 0; i < S_FLOW_SLOTS; i++) {
		if (o->flows[i].from[0] != '\0') {
			s->flows[n++] = o->flows[i];
		}
	}
	qsort(s->flows, n, sizeof s->flows[0], s_by_msgs);
	if (o->other.msgs > 0) {
		s->flows[n++] = o->other;
	}
	s->nflows = n;
	memcpy(s->lat_buckets, o->buckets, sizeof s->lat_buckets);
	s->lat_count = o->count;
	s->lat_sum_us = o->sum_us;
	s->blobs = o->blobs;
	s->blob_bytes = o->blob_bytes;
	return n;
}

void
bm__obs_blobs(const bm_obs_t *o, uint64_t *ret_count, uint64_t *ret_bytes)
{
	*ret_count = o->blobs;
	*ret_bytes = o->blob_bytes;
}

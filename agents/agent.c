/*
 * agent.c - the agent runtime (bm_agent.h): one object that owns an
 * agent's mesh client, outbox, de-dup window, publisher, subscriber, blob
 * listener and bulk channels, and one loop over all of them.
 *
 * The loop.  bm_agent_step() is one turn:
 *   1. store and send: commit the outbox (everything sent since the last
 *      turn: one journal write, one sync) and pump it;
 *   2. one zmq_poll over the mesh socket, the subscriber sockets (one per
 *      shm mode in use) and the publishers' shared-memory logs they read,
 *      the agent's own log socket, the blob listener and every incoming
 *      channel's doorbell, for no longer than
 *      the earliest timer (client heartbeat, outbox retry, request
 *      deadline, the caller's timeout);
 *   3. handle what is ready: mesh events (ACK/NACK go to the outbox first;
 *      messages are de-duplicated, matched to requests or dispatched to a
 *      handler), broadcasts, new channels, blobs, expired requests;
 *   4. store again (replies, the de-dup marks) and only then ACK the
 *      messages handled in step 3: a sender forgets a message only once
 *      its effects are stored here.
 * Everything a turn handles shares the two commits: group commit is where
 * the speed comes from.
 *
 * Requests are reliable sends whose reply (a message with corr = the
 * request id) is matched here; a request waits in a small array with its
 * deadline (the swarms this serves keep tens in flight, not millions).
 * Latencies are kept as histograms of 4 buckets per octave so that
 * several agents' histograms can be merged.
 *
 * Threading: one thread.  bm_agent_stop() only sets a flag.
 * Invariants: a handler never re-enters the loop (bm_agent_step refuses
 * with -EDEADLK); a message is ACKed only after the commit that follows
 * its handler.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <czmq.h>
#include <sodium.h>

#include "bm_agent.h"

#define S_FOLLOW_MAX 64        /* subscriptions (the subscriber's own bound) */
#define S_IN_MAX 32            /* incoming bulk channels */
#define S_OUT_MAX 16           /* outgoing bulk channels, one per peer */
#define S_EVENTS_PER_TURN 4096 /* bound on mesh events handled per turn */
#define S_BCASTS_PER_TURN 4096 /* bound on broadcasts handled per turn */
#define S_BLOBS_PER_TURN 4     /* per channel per turn, and at most: */
#define S_BLOB_BYTES_PER_TURN (4u << 20) /* past this, the mesh's turn (ACKs wait) */
#define S_BLOB_WAIT_MS 30000   /* a blob that started arriving finishes within */
#define S_SENT_AT_MAX 1000000  /* ids whose send time we keep for latency */

typedef struct {
	char type[BM_TYPE_MAX + 1]; /* exact type, or "" = any */
	bm_agent_msg_fn fn;         /* handler */
	void *arg;                  /* its argument */
} s_handler_t;

typedef struct {
	bm_id_t id;              /* the request's message id (replies carry it as corr) */
	int64_t deadline_ms;     /* monotonic */
	int64_t t0_ns;           /* when it was made, for the latency */
	bm_agent_reply_fn fn;    /* callback */
	void *arg;               /* its argument */
} s_request_t;

typedef struct {
	char prefix[BM_TOPIC_MAX + 1]; /* normalized prefix */
	int shm;                       /* enum bm_agent_shm */
	bm_agent_bcast_fn fn;          /* handler */
	void *arg;                     /* its argument */
} s_follow_t;

typedef struct {
	bm_id_t id; /* a message sent, not yet ACKed */
	int64_t ns; /* when (bm_mono_ns); 0 = empty slot */
} s_sent_t;

typedef struct {
	char to[BM_NAME_MAX + 1]; /* consumer's name */
	bm_channel_t *ch;         /* producer end */
} s_out_t;

struct bm_agent {
	char name[BM_NAME_MAX + 1];      /* registered name */
	char dir[BM_PATH_MAX];           /* resolved runtime dir */
	char state[BM_PATH_MAX];         /* state dir: outbox/, dedup/ */
	void *zctx;                      /* one zmq context for every socket */
	char *remote[5];                 /* endpoint, pub, sub, key, server key (copies) */
	bm_client_t *client;             /* mesh session */
	bm_outbox_t *outbox;             /* reliable sends */
	bm_dedup_t *dedup;               /* received ids */
	bm_pub_t *pub;                   /* opened on first publish */
	bm_sub_t *sub;                   /* opened on first subscribe (BM_AGENT_SHM_AUTO) */
	bm_sub_t *subx[2];               /* the same for TETHERED and OFF subscriptions */
	size_t shm_log;                  /* opts.shm_log */
	s_follow_t follow[S_FOLLOW_MAX]; /* subscriptions */
	int nfollow;                     /* how many */
	int nsynced;                     /* SYNCs seen */
	bm_listener_t *listener;         /* blob listener, with on_blob */
	bm_agent_blob_fn blob_fn;        /* blob handler */
	void *blob_arg;                  /* its argument */
	bm_channel_t *in[S_IN_MAX];      /* incoming channels */
	int nin;                         /* how many */
	s_out_t out[S_OUT_MAX];          /* outgoing channels */
	int nout;                        /* how many */
	size_t chan_cap;                 /* ring capacity of channels we create */
	s_handler_t *handlers;           /* message and request handlers */
	int nhandlers;                   /* how many */
	s_request_t *reqs;               /* requests awaiting a reply */
	size_t nreqs, reqcap;            /* count, capacity */
	bm_msg_t **toack;                /* handled this turn, ACK after the commit */
	size_t ntoack, toackcap;         /* count, capacity */
	s_sent_t *sent;                  /* id -> mono ns of the send (s_note_sent) */
	size_t sent_cap, nsent;          /* slots (a power of two, or 0), used */
	const bm_id_t *cause;            /* the message whose handler runs, or NULL */
	uint32_t ncaused;                /* sends its handler made so far */
	bool dirty;                      /* sends put since the last commit */
	bool in_handler;                 /* a handler is running */
	char refusal[BM_TEXT_MAX + 1]; /* the NACK text a handler chose; "" = none */
	volatile sig_atomic_t stopped;   /* bm_agent_stop */
	volatile sig_atomic_t *ext_stop; /* opts.stop */
	void *user;                      /* opts.user */
	bm_agent_stats_t st;             /* counters (outbox ones filled on read) */
};

/* ---- histograms ---- */

int
bm_agent_hist_bucket(uint64_t us)
{
	int b;

	if (us < 1) {
		return 0;
	}
	/* 4 buckets per octave: log2(us) * 4, rounded up. */
	b = (int)ceil(log2((double)us) * 4.0);
	if (b < 0) {
		b = 0;
	}
	return b >= BM_AGENT_HIST ? BM_AGENT_HIST - 1 : b;
}

uint64_t
bm_agent_hist_us(int bucket)
{
	return (uint64_t)llround(exp2((double)bucket / 4.0));
}

uint64_t
bm_agent_hist_quantile(const uint64_t *hist, double p)
{
	uint64_t total = 0, seen = 0, want;

	for (int i = 0; i < BM_AGENT_HIST; i++) {
		total += hist[i];
	}
	if (total == 0) {
		return 0;
	}
	want = (uint64_t)ceil(p * (double)total);
	if (want < 1) {
		want = 1;
	}
	for (int i = 0; i < BM_AGENT_HIST; i++) {
		seen += hist[i];
		if (seen >= want) {
			return bm_agent_hist_us(i);
		}
	}
	return bm_agent_hist_us(BM_AGENT_HIST - 1);
}

static void
s_hist_add(uint64_t *hist, int64_t ns)
{
	hist[bm_agent_hist_bucket(ns > 0 ? (uint64_t)ns / 1000 : 0)]++;
}

/* ---- state directory ---- */

/* The agent's state dir: given, else STATE/NAME (bm_statedir_resolve). */
static int
s_state_dir(const char *given, const char *name, char *out, size_t cap)
{
	char base[BM_PATH_MAX];
	int rc, n;

	if (given != NULL) {
		n = snprintf(out, cap, "%s", given);
	} else if ((rc = bm_statedir_resolve(base)) < 0) {
		return rc;
	} else {
		n = snprintf(out, cap, "%s/%s", base, name);
	}
	if (n < 0 || (size_t)n >= cap - 16) {
		return -ENAMETOOLONG;
	}
	return bm_mkdirs(out);
}

/* ---- open / destroy ---- */

int
bm_agent_open(const bm_agent_opts_t *opts, bm_agent_t **ret_agent)
{
	bm_agent_t *a;
	char path[BM_PATH_MAX + 16];
	int rc;

	if (opts == NULL || ret_agent == NULL || opts->name == NULL) {
		return -EINVAL;
	}
	if (bm_name_check(opts->name) < 0) {
		return BM_EBADNAME;
	}
	a = calloc(1, sizeof *a);
	if (a == NULL) {
		return -ENOMEM;
	}
	snprintf(a->name, sizeof a->name, "%s", opts->name);
	a->ext_stop = opts->stop;
	a->user = opts->user;
	a->chan_cap = opts->channel_capacity ? opts->channel_capacity : ((size_t)64 << 20);
	a->shm_log = opts->shm_log;
	{
		const char *r[5] = {opts->endpoint, opts->pub_endpoint, opts->sub_endpoint,
		                    opts->key_file, opts->server_key_file};

		for (int i = 0; i < 5; i++) {
			if (r[i] != NULL && (a->remote[i] = strdup(r[i])) == NULL) {
				rc = -ENOMEM;
				goto fail;
			}
		}
	}
	/* A remote agent may have no local runtime dir: only its bulk
	 * channels need one, and they say so when used. */
	if ((rc = bm_rundir_resolve(opts->dir, false, a->dir)) < 0 && opts->endpoint == NULL) {
		goto fail;
	}
	if ((rc = s_state_dir(opts->state_dir, a->name, a->state, sizeof a->state)) < 0) {
		goto fail;
	}
	a->zctx = zmq_ctx_new();
	if (a->zctx == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	/* Journals first: a name whose journals another process holds is
	 * that process's (-EBUSY), whatever the broker says. */
	{
		bm_outbox_opts_t oo = {.sync = opts->sync, .ack_timeout_ms = opts->ack_timeout_ms};
		bm_dedup_opts_t dopt = {.sync = opts->sync};

		snprintf(path, sizeof path, "%s/outbox", a->state);
		oo.dir = path;
		if ((rc = bm_outbox_open(&oo, &a->outbox)) < 0) {
			goto fail;
		}
		snprintf(path, sizeof path, "%s/dedup", a->state);
		if ((rc = bm_dedup_open(path, &dopt, &a->dedup)) < 0) {
			goto fail;
		}
	}
	{
		bm_client_opts_t co = {.dir = a->dir,
		                       .name = a->name,
		                       .caps = opts->caps,
		                       .heartbeat_ms = opts->heartbeat_ms,
		                       .connect_timeout_ms = opts->connect_timeout_ms,
		                       .zmq_ctx = a->zctx,
		                       .endpoint = a->remote[0],
		                       .key_file = a->remote[3],
		                       .server_key_file = a->remote[4]};

		if ((rc = bm_client_open(&co, &a->client)) < 0) {
			goto fail;
		}
	}
	bm_outbox_set_client(a->outbox, a->client);
	*ret_agent = a;
	return 0;
fail:
	bm_agent_destroy(&a);
	return rc;
}

static void
s_drop_in(bm_agent_t *a, int i)
{
	bm_channel_destroy(&a->in[i]);
	a->in[i] = a->in[--a->nin];
	a->in[a->nin] = NULL;
}

static void
s_drop_out(bm_agent_t *a, int i)
{
	bm_channel_destroy(&a->out[i].ch);
	a->out[i] = a->out[--a->nout];
	memset(&a->out[a->nout], 0, sizeof a->out[0]);
}

void
bm_agent_destroy(bm_agent_t **self_p)
{
	bm_agent_t *a;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	a = *self_p;
	if (a->outbox != NULL) {
		(void)bm_outbox_commit(a->outbox);
		(void)bm_outbox_pump(a->outbox);
	}
	/* Handled messages whose ACK the last turn did not send: their marks
	 * are stored first, or the sender resends and we handle them again. */
	if (a->dedup != NULL && bm_dedup_commit(a->dedup) == 0) {
		for (size_t i = 0; i < a->ntoack; i++) {
			(void)bm_client_ack(a->client, a->toack[i]);
		}
	}
	for (size_t i = 0; i < a->ntoack; i++) {
		bm_msg_destroy(&a->toack[i]);
	}
	free(a->toack);
	while (a->nin > 0) {
		s_drop_in(a, a->nin - 1);
	}
	while (a->nout > 0) {
		s_drop_out(a, a->nout - 1);
	}
	bm_listener_destroy(&a->listener);
	bm_sub_destroy(&a->sub);
	bm_sub_destroy(&a->subx[0]);
	bm_sub_destroy(&a->subx[1]);
	bm_pub_destroy(&a->pub);
	bm_outbox_destroy(&a->outbox);
	bm_dedup_destroy(&a->dedup);
	bm_client_destroy(&a->client);
	if (a->zctx != NULL) {
		zmq_ctx_term(a->zctx);
	}
	free(a->sent);
	free(a->handlers);
	free(a->reqs);
	for (int i = 0; i < 5; i++) {
		free(a->remote[i]);
	}
	free(a);
	*self_p = NULL;
}

const char *
bm_agent_name(const bm_agent_t *a)
{
	return a ? a->name : NULL;
}

void *
bm_agent_user(const bm_agent_t *a)
{
	return a ? a->user : NULL;
}

bm_client_t *
bm_agent_client(bm_agent_t *a)
{
	return a ? a->client : NULL;
}

/* ---- handlers ---- */

static int
s_add_handler(bm_agent_t *a, const char *type, bm_agent_msg_fn fn, void *arg)
{
	s_handler_t *h;

	if (a == NULL || fn == NULL) {
		return -EINVAL;
	}
	if (type != NULL && bm_type_check(type) < 0) {
		return BM_EBADNAME;
	}
	h = realloc(a->handlers, (size_t)(a->nhandlers + 1) * sizeof *h);
	if (h == NULL) {
		return -ENOMEM;
	}
	a->handlers = h;
	h = &a->handlers[a->nhandlers++];
	snprintf(h->type, sizeof h->type, "%s", type ? type : "");
	h->fn = fn;
	h->arg = arg;
	return 0;
}

int
bm_agent_on_message(bm_agent_t *a, const char *type, bm_agent_msg_fn fn, void *arg)
{
	return s_add_handler(a, type, fn, arg);
}

int
bm_agent_on_request(bm_agent_t *a, const char *type, bm_agent_msg_fn fn, void *arg)
{
	return s_add_handler(a, type, fn, arg);
}

/* The subscriber of a shm mode (each mode has its own, opened on first
 * use, so that its logs are attached tethered or not, or not at all). */
static bm_sub_t **
s_sub_of(bm_agent_t *a, int shm)
{
	return shm == BM_AGENT_SHM_AUTO ? &a->sub : &a->subx[shm - 1];
}

int
bm_agent_subscribe_shm(bm_agent_t *a, const char *prefix, int shm, bm_agent_bcast_fn fn,
                       void *arg)
{
	s_follow_t *f;
	bm_sub_t **sub;
	int rc;

	if (a == NULL || prefix == NULL || fn == NULL || shm < BM_AGENT_SHM_AUTO ||
	    shm > BM_AGENT_SHM_OFF) {
		return -EINVAL;
	}
	if (a->nfollow >= S_FOLLOW_MAX) {
		return -ENOSPC;
	}
	f = &a->follow[a->nfollow];
	if ((rc = bm_topic_normalize(prefix, true, f->prefix, sizeof f->prefix)) < 0) {
		return rc;
	}
	sub = s_sub_of(a, shm);
	if (*sub == NULL) {
		bm_sub_opts_t so = {.dir = a->dir, .name = a->name, .zmq_ctx = a->zctx,
		                    .endpoint = a->remote[2],
		                    .shm_auto = shm != BM_AGENT_SHM_OFF && a->remote[2] == NULL,
		                    .shm_tethered = shm == BM_AGENT_SHM_TETHERED};

		if (a->remote[2] != NULL) {
			so.key_file = a->remote[3];
			so.server_key_file = a->remote[4];
		}

		if ((rc = bm_sub_open(&so, sub)) < 0) {
			return rc;
		}
	}
	if ((rc = bm_sub_subscribe(*sub, f->prefix)) < 0) {
		return rc;
	}
	f->shm = shm;
	f->fn = fn;
	f->arg = arg;
	a->nfollow++;
	return 0;
}

int
bm_agent_subscribe(bm_agent_t *a, const char *prefix, bm_agent_bcast_fn fn, void *arg)
{
	return bm_agent_subscribe_shm(a, prefix, BM_AGENT_SHM_AUTO, fn, arg);
}

int
bm_agent_wait_subscribed(bm_agent_t *a, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;

	if (a == NULL) {
		return -EINVAL;
	}
	while (a->nsynced < a->nfollow) {
		int64_t left = deadline - bm_mono_ms();
		int rc;

		if (left <= 0) {
			return -ETIMEDOUT;
		}
		rc = bm_agent_step(a, (int)(left < 100 ? left : 100));
		if (rc < 0 && rc != -EINTR) {
			return rc;
		}
	}
	return 0;
}

int
bm_agent_on_blob(bm_agent_t *a, bm_agent_blob_fn fn, void *arg)
{
	int rc;

	if (a == NULL || fn == NULL) {
		return -EINVAL;
	}
	if (a->listener == NULL && (rc = bm_listener_open(a->dir, a->name, &a->listener)) < 0) {
		return rc;
	}
	a->blob_fn = fn;
	a->blob_arg = arg;
	return 0;
}

/* ---- sending ---- */

/*
 * Sends made by a message's handler get ids derived from that message's
 * id and their order in the handler (BLAKE2b of both; the time part is
 * the cause's), not fresh ones.  A handler that runs again for the same
 * message — the agent died after its effects were stored but before the
 * de-dup mark was, or the handler failed and the message came back —
 * makes the same sends with the same ids: the outbox already holds them
 * (EEXIST: kept, not stored twice) or, if they were ACKed and retired,
 * the receiver's de-dup window knows them.  So effects that travel as
 * messages happen once, end to end, across a kill -9 in that gap.
 */
static bool
s_derive_id(bm_agent_t *a, bm_id_t *ret_id)
{
	uint8_t in[20], out[16];

	if (!a->in_handler || a->cause == NULL) {
		return false;
	}
	memcpy(in, a->cause->b, 16);
	memcpy(in + 16, &a->ncaused, 4);
	a->ncaused++;
	crypto_generichash(out, sizeof out, in, sizeof in, NULL, 0);
	memcpy(ret_id->b, a->cause->b, 6);
	memcpy(ret_id->b + 6, out, 10);
	return true;
}

/*
 * Send times for the send -> ACK histogram: an open-addressing table keyed
 * by the id itself (its random tail is the hash), linear probing with
 * backward-shift deletion, doubled at half load, at most S_SENT_AT_MAX
 * entries (past that a send is not timed).  One slot write per send, no
 * allocation, no string: this is on every send's path.
 */
static size_t
s_sent_home(const bm_agent_t *a, const bm_id_t *id)
{
	uint64_t h;

	memcpy(&h, id->b + 8, sizeof h);
	return (size_t)h & (a->sent_cap - 1);
}

static bool
s_sent_grow(bm_agent_t *a)
{
	size_t cap = a->sent_cap ? a->sent_cap * 2 : 1024;
	s_sent_t *old = a->sent, *v = calloc(cap, sizeof *v);
	size_t oldcap = a->sent_cap;

	if (v == NULL) {
		return false;
	}
	a->sent = v;
	a->sent_cap = cap;
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i].ns != 0) {
			size_t j = s_sent_home(a, &old[i].id);

			while (v[j].ns != 0) {
				j = (j + 1) & (cap - 1);
			}
			v[j] = old[i];
		}
	}
	free(old);
	return true;
}

static void
s_note_sent(bm_agent_t *a, const bm_id_t *id)
{
	size_t i;

	if (a->nsent >= S_SENT_AT_MAX ||
	    ((a->nsent + 1) * 2 > a->sent_cap && !s_sent_grow(a))) {
		return;
	}
	for (i = s_sent_home(a, id); a->sent[i].ns != 0; i = (i + 1) & (a->sent_cap - 1)) {
		if (bm_id_equal(&a->sent[i].id, id)) {
			return; /* noted already (a resend of the same id) */
		}
	}
	a->sent[i] = (s_sent_t){.id = *id, .ns = bm_mono_ns()};
	a->nsent++;
}

static int64_t
s_take_sent(bm_agent_t *a, const bm_id_t *id)
{
	size_t mask = a->sent_cap - 1, i, j;
	int64_t ns;

	if (a->nsent == 0) {
		return -1;
	}
	for (i = s_sent_home(a, id); a->sent[i].ns != 0; i = (i + 1) & mask) {
		if (bm_id_equal(&a->sent[i].id, id)) {
			break;
		}
	}
	if (a->sent[i].ns == 0) {
		return -1;
	}
	ns = a->sent[i].ns;
	/* Backward shift: pull later entries of the run into the hole when
	 * the hole lies between their home and where they sit. */
	for (j = (i + 1) & mask; a->sent[j].ns != 0; j = (j + 1) & mask) {
		size_t k = s_sent_home(a, &a->sent[j].id);

		if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) {
			continue; /* its home is after the hole: it stays */
		}
		a->sent[i] = a->sent[j];
		i = j;
	}
	a->sent[i].ns = 0;
	a->nsent--;
	return ns;
}

int
bm_agent_send(bm_agent_t *a, const char *to, const bm_agent_send_opts_t *o, const void *body,
              size_t len, bm_id_t *ret_id)
{
	bm_outbox_send_opts_t so = {.to = to};
	bm_id_t id;
	int rc;

	if (a == NULL || to == NULL || (body == NULL && len > 0)) {
		return -EINVAL;
	}
	if (o != NULL) {
		so.type = o->type;
		so.priority = o->priority;
		so.ttl_ms = o->ttl_ms;
		so.max_attempts = o->max_attempts;
		so.expire = o->expire;
		so.traceparent = o->traceparent;
		so.tracestate = o->tracestate;
	}
	if (s_derive_id(a, &id)) {
		so.id = &id;
	}
	rc = bm_outbox_put(a->outbox, &so, body, len, &id);
	if (rc == -EEXIST) {
		rc = 0; /* made before by this handler for this message: kept */
	} else if (rc == 0) {
		a->dirty = true;
		s_note_sent(a, &id);
	}
	if (rc == 0 && ret_id != NULL) {
		*ret_id = id;
	}
	return rc;
}

int
bm_agent_send_batch(bm_agent_t *a, const bm_agent_item_t *items, size_t n, bm_id_t *ret_ids)
{
	bm_outbox_item_t *v;
	bm_outbox_entry_t ent;
	bm_id_t *ids;
	int rc;

	if (a == NULL || items == NULL || n == 0) {
		return -EINVAL;
	}
	v = calloc(n, sizeof *v);
	ids = calloc(n, sizeof *ids);
	if (v == NULL || ids == NULL) {
		free(v);
		free(ids);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		v[i].opts.to = items[i].to;
		v[i].opts.type = items[i].type;
		v[i].body = items[i].body;
		v[i].len = items[i].len;
		if (s_derive_id(a, &ids[i])) {
			v[i].opts.id = &ids[i];
		}
	}
	if (v[0].opts.id != NULL && bm_outbox_get(a->outbox, v[0].opts.id, &ent) == 0) {
		/* This handler stored the batch before (it is one record: all
		 * of it is there). */
		if (ret_ids != NULL) {
			memcpy(ret_ids, ids, n * sizeof *ids);
		}
		free(v);
		free(ids);
		return 0;
	}
	rc = bm_outbox_put_batch(a->outbox, v, n, ids);
	if (rc == 0) {
		a->dirty = true;
		for (size_t i = 0; i < n; i++) {
			s_note_sent(a, &ids[i]);
		}
		if (ret_ids != NULL) {
			memcpy(ret_ids, ids, n * sizeof *ids);
		}
	}
	free(v);
	free(ids);
	return rc;
}

int
bm_agent_request(bm_agent_t *a, const char *to, const char *type, const void *body, size_t len,
                 int timeout_ms, bm_agent_reply_fn fn, void *arg)
{
	/* The timeout travels as the request's TTL (with a second's grace, so
	 * our own withdrawal at the deadline comes first): the replier knows
	 * how long a reply stays worth sending.  `expire`: a requester restarted
	 * from its journal, which no longer waits, lets it go without a dead
	 * letter. */
	bm_agent_send_opts_t so = {.type = type, .expire = true,
	                           .ttl_ms = timeout_ms > 0 ? (uint32_t)timeout_ms + 1000 : 0};
	s_request_t *r;
	bm_id_t id;
	int rc;

	if (a == NULL || fn == NULL || timeout_ms <= 0) {
		return -EINVAL;
	}
	if (a->nreqs == a->reqcap) {
		size_t cap = a->reqcap ? a->reqcap * 2 : 16;

		r = realloc(a->reqs, cap * sizeof *r);
		if (r == NULL) {
			return -ENOMEM;
		}
		a->reqs = r;
		a->reqcap = cap;
	}
	if ((rc = bm_agent_send(a, to, &so, body, len, &id)) < 0) {
		return rc;
	}
	r = &a->reqs[a->nreqs++];
	r->id = id;
	r->deadline_ms = bm_mono_ms() + timeout_ms;
	r->t0_ns = bm_mono_ns();
	r->fn = fn;
	r->arg = arg;
	a->st.requests++;
	return 0;
}

int
bm_agent_reply(bm_agent_t *a, const bm_msg_t *req, const char *type, const void *body, size_t len)
{
	bm_outbox_send_opts_t so;
	bm_id_t id;
	int rc;

	if (a == NULL || req == NULL) {
		return -EINVAL;
	}
	/* A reply belongs to its request's trace. */
	so = (bm_outbox_send_opts_t){.to = req->from, .type = type, .corr = &req->id,
	                             .traceparent = req->traceparent[0] ? req->traceparent : NULL,
	                             .tracestate = req->tracestate};
	if (s_derive_id(a, &id)) {
		so.id = &id;
	}
	if (req->ttl_ms > 0) {
		/* The requester waits until ts_ms + ttl_ms (its clock, near ours:
		 * one machine).  Past that the reply would only linger. */
		int64_t left = req->ts_ms + (int64_t)req->ttl_ms - bm_wall_ms();

		if (left <= 0) {
			a->st.replies_expired++;
			return 0;
		}
		/* Retried only while it is wanted; then withdrawn, not kept
		 * as a dead letter (the outbox counts it as expired). */
		so.ttl_ms = (uint32_t)left;
		so.expire = true;
	}
	rc = bm_outbox_put(a->outbox, &so, body, len, &id);
	if (rc == -EEXIST) {
		return 0; /* made before by this handler for this request: kept */
	}
	if (rc < 0) {
		return rc;
	}
	a->dirty = true;
	s_note_sent(a, &id);
	return 0;
}


size_t
bm_agent_requests_pending(const bm_agent_t *a)
{
	return a ? a->nreqs : 0;
}

int
bm_agent_publish(bm_agent_t *a, const char *topic, const void *body, size_t len)
{
	int rc;

	if (a == NULL || topic == NULL) {
		return -EINVAL;
	}
	if (a->pub == NULL) {
		bm_pub_opts_t po = {.dir = a->dir, .name = a->name, .zmq_ctx = a->zctx,
		                    .endpoint = a->remote[1]};

		if (a->remote[1] != NULL) {
			po.key_file = a->remote[3];
			po.server_key_file = a->remote[4];
		} else {
			po.shm_log = a->shm_log;
		}

		if ((rc = bm_pub_open(&po, &a->pub)) < 0) {
			return rc;
		}
	}
	if ((rc = bm_pub_send(a->pub, topic, body, len)) == 0) {
		a->st.published++;
	}
	return rc;
}

static int
s_channel_to(bm_agent_t *a, const char *to, int timeout_ms, bm_channel_t **ret_ch)
{
	bm_channel_opts_t co = {.capacity = a->chan_cap, .spin_us = -1};
	bm_channel_t *ch = NULL;
	int rc;

	for (int i = 0; i < a->nout; i++) {
		if (strcmp(a->out[i].to, to) == 0) {
			*ret_ch = a->out[i].ch;
			return i;
		}
	}
	if (a->nout == S_OUT_MAX) {
		s_drop_out(a, 0);
	}
	if ((rc = bm_channel_connect(a->dir, to, a->name, &co, timeout_ms, &ch)) < 0) {
		return rc;
	}
	snprintf(a->out[a->nout].to, sizeof a->out[0].to, "%s", to);
	a->out[a->nout].ch = ch;
	*ret_ch = ch;
	return a->nout++;
}

static const char *
s_content_name(uint32_t content)
{
	switch (content) {
	case BM_BLOB_PLY:
		return "ply";
	case BM_BLOB_PCD:
		return "pcd";
	default:
		return "raw";
	}
}

/* Announces, then sends data/len: copied, or, with *blob (whose bytes
 * data/len are), handed over as it is — zero copy. */
static int
s_send_blob(bm_agent_t *a, const char *to, const char *name, const void *data, size_t len,
            bm_blob_t **blob, uint32_t content, int timeout_ms)
{
	bm_blob_opts_t bo = {.name = name, .content = content, .flags = BM_BLOB_CHECKSUM};
	bm_agent_send_opts_t so = {.type = "blob.announce"};
	bm_channel_t *ch = NULL;
	char body[BM_BLOB_NAME_MAX + 256];
	int64_t t0, id;
	int slot, rc;

	if (a == NULL || to == NULL || name == NULL || (data == NULL && len > 0) ||
	    strlen(name) > BM_BLOB_NAME_MAX || strchr(name, '"') != NULL ||
	    strchr(name, '\\') != NULL) {
		return -EINVAL;
	}
	if ((slot = s_channel_to(a, to, timeout_ms, &ch)) < 0) {
		return slot;
	}
	/* The announcement is stored and on its way before the first byte of
	 * the blob: the receiver learns what comes even if we die mid-blob. */
	snprintf(body, sizeof body,
	         "{\"name\":\"%s\",\"size\":%zu,\"content\":\"%s\",\"crc\":\"%08x\","
	         "\"channel\":\"shm/%s.sock\"}",
	         name, len, s_content_name(content), bm_crc32c(0, data, len), to);
	if ((rc = bm_agent_send(a, to, &so, body, strlen(body), NULL)) < 0 ||
	    (rc = bm_agent_flush(a)) < 0) {
		return rc;
	}
	t0 = bm_mono_ns();
	id = blob != NULL ? bm_blob_send_blob(ch, blob, &bo, timeout_ms)
	                  : bm_blob_send(ch, data, len, &bo, timeout_ms);
	rc = id < 0 ? (int)id : bm_blob_wait(ch, (uint64_t)id, timeout_ms);
	if (rc == BM_EPEER || rc == -ETIMEDOUT) {
		s_drop_out(a, slot);
	}
	if (rc < 0) {
		a->st.blob_errors++;
		return rc;
	}
	(void)t0;
	a->st.blobs_sent++;
	a->st.blob_bytes_sent += len;
	return 0;
}

int
bm_agent_send_blob(bm_agent_t *a, const char *to, const char *name, const void *data, size_t len,
                   uint32_t content, int timeout_ms)
{
	return s_send_blob(a, to, name, data, len, NULL, content, timeout_ms);
}

int
bm_agent_send_blob_take(bm_agent_t *a, const char *to, const char *name, bm_blob_t **blob_p,
                        uint32_t content, int timeout_ms)
{
	if (blob_p == NULL || *blob_p == NULL) {
		return -EINVAL;
	}
	return s_send_blob(a, to, name, bm_blob_wdata(*blob_p), bm_blob_size(*blob_p), blob_p,
	                   content, timeout_ms);
}

int
bm_agent_send_cloud(bm_agent_t *a, const char *to, const char *name, const bm_cloud_t *cloud,
                    int timeout_ms)
{
	bm_blob_t *blob = NULL;
	int fd, rc;

	if (a == NULL || cloud == NULL) {
		return -EINVAL;
	}
	/* The PLY is written once, into a memfd that then goes over as it is:
	 * the receiver maps the very pages written here. */
	fd = memfd_create("bm-cloud", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		return -errno;
	}
	if ((rc = bm_cloud_write_ply(cloud, fd)) < 0 || (rc = bm_blob_adopt_fd(fd, &blob)) < 0) {
		close(fd);
		return rc;
	}
	rc = s_send_blob(a, to, name, bm_blob_wdata(blob), bm_blob_size(blob), &blob, BM_BLOB_PLY,
	                 timeout_ms);
	bm_blob_destroy(&blob); /* sent: already NULL; else its fd is closed here */
	return rc;
}

/* ---- the loop ---- */

void
bm_agent_stop(bm_agent_t *a)
{
	if (a != NULL) {
		a->stopped = 1;
	}
}

bool
bm_agent_stopped(const bm_agent_t *a)
{
	return a == NULL || a->stopped || (a->ext_stop != NULL && *a->ext_stop);
}

int
bm_agent_flush(bm_agent_t *a)
{
	int rc;

	if (a == NULL) {
		return -EINVAL;
	}
	a->dirty = false;
	/* pump commits first, then sends what is ready. */
	rc = bm_outbox_pump(a->outbox);
	return rc < 0 ? rc : 0;
}

/* After the items above, so their indexes stay put: the other
 * subscribers, the shared-memory logs every subscriber reads, and last
 * this agent's own log's socket (readers attaching). */
static int
s_bcast_items(bm_agent_t *a, zmq_pollitem_t *items, int n, int max)
{
	bm_sub_t *subs[3] = {a->sub, a->subx[0], a->subx[1]};
	int fds[BM_SUB_FDS_MAX];

	for (int i = 1; i < 3 && n < max; i++) {
		if (subs[i] != NULL) {
			items[n++] = (zmq_pollitem_t){.socket = bm_sub_socket(subs[i]), .events = ZMQ_POLLIN};
		}
	}
	for (int i = 0; i < 3; i++) {
		int k = subs[i] != NULL ? bm_sub_fds(subs[i], fds, BM_SUB_FDS_MAX) : 0;

		for (int j = 0; j < k && n < max; j++) {
			items[n++] = (zmq_pollitem_t){.fd = fds[j], .events = ZMQ_POLLIN};
		}
	}
	if (a->pub != NULL && bm_pub_shm_fd(a->pub) >= 0 && n < max) {
		items[n++] = (zmq_pollitem_t){.fd = bm_pub_shm_fd(a->pub), .events = ZMQ_POLLIN};
	}
	return n;
}

int
bm_agent_pollitems(bm_agent_t *a, zmq_pollitem_t *items, int max)
{
	int n = 0;

	if (a == NULL || items == NULL || max < 1) {
		return -EINVAL;
	}
	items[n++] = (zmq_pollitem_t){.socket = bm_client_socket(a->client), .events = ZMQ_POLLIN};
	if (a->sub != NULL && n < max) {
		items[n++] = (zmq_pollitem_t){.socket = bm_sub_socket(a->sub), .events = ZMQ_POLLIN};
	}
	if (a->listener != NULL && n < max) {
		items[n++] = (zmq_pollitem_t){.fd = bm_listener_fd(a->listener), .events = ZMQ_POLLIN};
	}
	for (int i = 0; i < a->nin && n < max; i++) {
		items[n++] = (zmq_pollitem_t){.fd = bm_channel_fd(a->in[i]), .events = ZMQ_POLLIN};
	}
	/* Direct routes to other agents (one fd for all of them). */
	if (n < max && bm_client_direct_fd(a->client) >= 0) {
		items[n++] = (zmq_pollitem_t){.fd = bm_client_direct_fd(a->client), .events = ZMQ_POLLIN};
	}
	/* Last, so the indexes above stay put: the mesh connection's events,
	 * so a restarted beastd hears this agent's HELLO at once. */
	if (n < max && bm_client_monitor(a->client) != NULL) {
		items[n++] = (zmq_pollitem_t){.socket = bm_client_monitor(a->client),
		                              .events = ZMQ_POLLIN};
	}
	return s_bcast_items(a, items, n, max);
}

static int
s_min_timeout(int a, int b)
{
	if (a < 0) {
		return b;
	}
	if (b < 0) {
		return a;
	}
	return a < b ? a : b;
}

int
bm_agent_timeout(bm_agent_t *a)
{
	int t;
	int64_t now = bm_mono_ms();

	if (a == NULL) {
		return -1;
	}
	if (a->dirty || a->ntoack > 0) {
		return 0;
	}
	t = s_min_timeout(bm_client_timeout(a->client), bm_outbox_timeout(a->outbox));
	for (size_t i = 0; i < a->nreqs; i++) {
		int64_t left = a->reqs[i].deadline_ms - now;

		t = s_min_timeout(t, left < 0 ? 0 : (int)left);
	}
	/* Arm the doorbells: a channel with a record already waiting must not
	 * be slept on. */
	for (int i = 0; i < a->nin; i++) {
		if (bm_channel_arm(a->in[i]) != 0) {
			t = 0;
		}
	}
	/* The same for the shared-memory logs the subscribers read, and the
	 * deadline of a switch from the proxy to a log. */
	for (int i = 0; i < 3; i++) {
		bm_sub_t *sub = i == 0 ? a->sub : a->subx[i - 1];

		if (sub != NULL && bm_sub_arm(sub) == 1) {
			t = 0;
		}
		if (sub != NULL) {
			t = s_min_timeout(t, bm_sub_timeout(sub));
		}
	}
	return t;
}

int
bm_agent_fds(bm_agent_t *a, int *fds, int max)
{
	zmq_pollitem_t items[BM_AGENT_POLLITEMS_MAX];
	int n, k = 0;

	if (a == NULL || fds == NULL || max < 1) {
		return -EINVAL;
	}
	n = bm_agent_pollitems(a, items, BM_AGENT_POLLITEMS_MAX);
	for (int i = 0; i < n && k < max; i++) {
		if (items[i].socket != NULL) {
			int fd = -1;
			size_t len = sizeof fd;

			if (zmq_getsockopt(items[i].socket, ZMQ_FD, &fd, &len) < 0) {
				return -errno;
			}
			fds[k++] = fd;
		} else {
			fds[k++] = items[i].fd;
		}
	}
	return k;
}

int
bm_agent_ready(bm_agent_t *a)
{
	zmq_pollitem_t items[BM_AGENT_POLLITEMS_MAX];
	int n, rc;

	if (a == NULL) {
		return -EINVAL;
	}
	if (bm_agent_timeout(a) == 0) {
		return 1;
	}
	n = bm_agent_pollitems(a, items, BM_AGENT_POLLITEMS_MAX);
	rc = zmq_poll(items, n, 0);
	if (rc < 0) {
		return errno == EINTR ? 1 : -errno;
	}
	return rc > 0 ? 1 : 0;
}

int
bm_agent_status(bm_agent_t *a, const bm_id_t *id, int *ret_dead_code)
{
	bm_outbox_entry_t ent;

	if (a == NULL || id == NULL) {
		return -EINVAL;
	}
	if (bm_outbox_get(a->outbox, id, &ent) < 0) {
		return 0; /* retired: ACKed (or withdrawn, purged) */
	}
	if (ent.dead_code == 0) {
		return 1;
	}
	if (ret_dead_code != NULL) {
		*ret_dead_code = ent.dead_code;
	}
	return 2;
}

int
bm_agent_refuse_text(bm_agent_t *a, const char *text)
{
	if (a == NULL || text == NULL || !a->in_handler) {
		return -EINVAL;
	}
	snprintf(a->refusal, sizeof a->refusal, "%s", text);
	return 0;
}

int
bm_agent_refusal(bm_agent_t *a, const bm_id_t *id, char *buf, size_t size)
{
	bm_outbox_entry_t ent;

	if (a == NULL || id == NULL || buf == NULL || size == 0) {
		return -EINVAL;
	}
	if (bm_outbox_get(a->outbox, id, &ent) < 0) {
		buf[0] = '\0';
		return -ENOENT;
	}
	snprintf(buf, size, "%s", ent.why);
	return (int)strlen(buf);
}

const void *
bm_agent_msg_body(bm_msg_t *m, size_t *ret_len)
{
	*ret_len = bm_msg_size(m);
	return bm_msg_data(m);
}

const void *
bm_agent_bcast_body(bm_bcast_t *b, size_t *ret_len)
{
	*ret_len = bm_bcast_size(b);
	return bm_bcast_data(b);
}

/* "type:size:field@offset,..." for every struct a binding declares: the
 * Python package compares it with its own declarations on load. */
static char s_abi[2048];

static void
s_abi_fill(void)
{
	snprintf(s_abi, sizeof s_abi,
	         "bm_msg_t:%zu:id@%zu,corr@%zu,from@%zu,to@%zu,type@%zu,priority@%zu,"
	         "ttl_ms@%zu,attempt@%zu,ts_ms@%zu;"
	         "bm_bcast_t:%zu:kind@%zu,topic@%zu,from@%zu,session@%zu,seq@%zu,tseq@%zu,"
	         "ts_ms@%zu,replay@%zu,gap@%zu;"
	         "bm_agent_opts_t:%zu:name@%zu,caps@%zu,dir@%zu,state_dir@%zu,sync@%zu,"
	         "heartbeat_ms@%zu,connect_timeout_ms@%zu,ack_timeout_ms@%zu,"
	         "channel_capacity@%zu,stop@%zu,user@%zu,endpoint@%zu,key_file@%zu,shm_log@%zu;"
	         "bm_agent_send_opts_t:%zu:type@%zu,priority@%zu,ttl_ms@%zu,"
	         "max_attempts@%zu,expire@%zu;"
	         "bm_agent_item_t:%zu:to@%zu,type@%zu,body@%zu,len@%zu;"
	         "bm_agent_stats_t:%zu:sent@%zu,blob_errors@%zu,ack_hist@%zu,req_hist@%zu,"
	         "bcasts_shm@%zu;"
	         "bm_blob_info_t:%zu:name@%zu,id@%zu,size@%zu,content@%zu,crc@%zu,"
	         "has_crc@%zu,via_fd@%zu",
	         sizeof(bm_msg_t), offsetof(bm_msg_t, id), offsetof(bm_msg_t, corr),
	         offsetof(bm_msg_t, from), offsetof(bm_msg_t, to), offsetof(bm_msg_t, type),
	         offsetof(bm_msg_t, priority), offsetof(bm_msg_t, ttl_ms),
	         offsetof(bm_msg_t, attempt), offsetof(bm_msg_t, ts_ms), sizeof(bm_bcast_t),
	         offsetof(bm_bcast_t, kind), offsetof(bm_bcast_t, topic),
	         offsetof(bm_bcast_t, from), offsetof(bm_bcast_t, session),
	         offsetof(bm_bcast_t, seq), offsetof(bm_bcast_t, tseq),
	         offsetof(bm_bcast_t, ts_ms), offsetof(bm_bcast_t, replay),
	         offsetof(bm_bcast_t, gap), sizeof(bm_agent_opts_t),
	         offsetof(bm_agent_opts_t, name), offsetof(bm_agent_opts_t, caps),
	         offsetof(bm_agent_opts_t, dir), offsetof(bm_agent_opts_t, state_dir),
	         offsetof(bm_agent_opts_t, sync), offsetof(bm_agent_opts_t, heartbeat_ms),
	         offsetof(bm_agent_opts_t, connect_timeout_ms),
	         offsetof(bm_agent_opts_t, ack_timeout_ms),
	         offsetof(bm_agent_opts_t, channel_capacity), offsetof(bm_agent_opts_t, stop),
	         offsetof(bm_agent_opts_t, user), offsetof(bm_agent_opts_t, endpoint),
	         offsetof(bm_agent_opts_t, key_file), offsetof(bm_agent_opts_t, shm_log),
	         sizeof(bm_agent_send_opts_t),
	         offsetof(bm_agent_send_opts_t, type), offsetof(bm_agent_send_opts_t, priority),
	         offsetof(bm_agent_send_opts_t, ttl_ms),
	         offsetof(bm_agent_send_opts_t, max_attempts),
	         offsetof(bm_agent_send_opts_t, expire), sizeof(bm_agent_item_t),
	         offsetof(bm_agent_item_t, to), offsetof(bm_agent_item_t, type),
	         offsetof(bm_agent_item_t, body), offsetof(bm_agent_item_t, len),
	         sizeof(bm_agent_stats_t), offsetof(bm_agent_stats_t, sent),
	         offsetof(bm_agent_stats_t, blob_errors), offsetof(bm_agent_stats_t, ack_hist),
	         offsetof(bm_agent_stats_t, req_hist), offsetof(bm_agent_stats_t, bcasts_shm),
	         sizeof(bm_blob_info_t),
	         offsetof(bm_blob_info_t, name), offsetof(bm_blob_info_t, id),
	         offsetof(bm_blob_info_t, size), offsetof(bm_blob_info_t, content),
	         offsetof(bm_blob_info_t, crc), offsetof(bm_blob_info_t, has_crc),
	         offsetof(bm_blob_info_t, via_fd));
}

const char *
bm_agent_abi(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	/* Once: two threads asking first must not both write the buffer. */
	(void)pthread_once(&once, s_abi_fill);
	return s_abi;
}

static s_request_t *
s_find_request(bm_agent_t *a, const bm_id_t *id, size_t *ret_i)
{
	for (size_t i = 0; i < a->nreqs; i++) {
		if (bm_id_equal(&a->reqs[i].id, id)) {
			*ret_i = i;
			return &a->reqs[i];
		}
	}
	return NULL;
}

static void
s_remove_request(bm_agent_t *a, size_t i)
{
	a->reqs[i] = a->reqs[--a->nreqs];
}

/* Calls a request's callback once; the entry is gone before the call, so
 * the callback may make new requests. */
static void
s_finish_request(bm_agent_t *a, size_t i, int err, bm_msg_t *reply)
{
	s_request_t r = a->reqs[i];

	s_remove_request(a, i);
	if (err == 0) {
		a->st.replies++;
		s_hist_add(a->st.req_hist, bm_mono_ns() - r.t0_ns);
	} else if (err == -ETIMEDOUT) {
		a->st.timeouts++;
		/* Withdrawn: a request nobody answers in time is not left to be
		 * retried for ever, nor counted as a dead letter. */
		(void)bm_outbox_purge(a->outbox, &r.id);
		(void)s_take_sent(a, &r.id);
	}
	a->in_handler = true;
	r.fn(a, err, reply, r.arg);
	a->in_handler = false;
}

static int
s_defer_ack(bm_agent_t *a, bm_event_t *ev)
{
	if (a->ntoack == a->toackcap) {
		size_t cap = a->toackcap ? a->toackcap * 2 : 64;
		bm_msg_t **v = realloc(a->toack, cap * sizeof *v);

		if (v == NULL) {
			return -ENOMEM;
		}
		a->toack = v;
		a->toackcap = cap;
	}
	a->toack[a->ntoack++] = ev->msg;
	ev->msg = NULL;
	return 0;
}

static const s_handler_t *
s_handler_for(const bm_agent_t *a, const char *type)
{
	const s_handler_t *any = NULL;

	for (int i = 0; i < a->nhandlers; i++) {
		if (strcmp(a->handlers[i].type, type) == 0) {
			return &a->handlers[i];
		}
		if (a->handlers[i].type[0] == '\0' && any == NULL) {
			any = &a->handlers[i];
		}
	}
	return any;
}

/* One delivered message: de-dup, reply matching or a handler; then it
 * waits for the commit to be ACKed. */
static int
s_on_message(bm_agent_t *a, bm_event_t *ev)
{
	bm_msg_t *m = ev->msg;
	s_request_t *r;
	size_t ri;
	int rc = 0;

	if (bm_dedup_seen(a->dedup, m->from, &m->id) == 1) {
		a->st.duplicates++;
		return s_defer_ack(a, ev);
	}
	if (!bm_id_is_zero(&m->corr)) {
		if ((r = s_find_request(a, &m->corr, &ri)) != NULL) {
			s_finish_request(a, ri, 0, m);
		} else {
			a->st.unhandled++; /* a late reply: its request timed out */
		}
	} else {
		const s_handler_t *h = s_handler_for(a, m->type);

		if (h == NULL) {
			a->st.unhandled++;
		} else {
			a->in_handler = true;
			a->cause = &m->id;
			a->ncaused = 0;
			a->refusal[0] = '\0';
			rc = h->fn(a, m, h->arg);
			a->cause = NULL;
			a->in_handler = false;
		}
	}
	if (rc < 0) {
		/* Refused: not remembered, so a resend is handled afresh. */
		(void)bm_client_nack(a->client, m, rc, a->refusal[0] ? a->refusal : bm_strerror(rc));
		a->refusal[0] = '\0';
		return 0;
	}
	a->st.received++;
	if ((rc = bm_dedup_mark(a->dedup, m->from, &m->id, NULL, 0)) < 0) {
		return rc;
	}
	return s_defer_ack(a, ev);
}

static int
s_mesh(bm_agent_t *a)
{
	int handled = 0, rc;

	for (int k = 0; k < S_EVENTS_PER_TURN; k++) {
		bm_event_t ev;

		rc = bm_client_recv(a->client, 0, &ev);
		if (rc == -ETIMEDOUT) {
			break;
		}
		if (rc < 0) {
			return rc;
		}
		handled++;
		if (ev.kind == BM_EV_ACK) {
			int64_t t0 = s_take_sent(a, &ev.id);

			if (t0 > 0) {
				s_hist_add(a->st.ack_hist, bm_mono_ns() - t0);
			}
		}
		if (bm_outbox_handle(a->outbox, &ev) == 1 && ev.kind == BM_EV_NACK) {
			bm_outbox_entry_t ent;
			size_t ri;

			/* A request that died will never be answered. */
			if (bm_outbox_get(a->outbox, &ev.id, &ent) == 0 && ent.dead_code != 0 &&
			    s_find_request(a, &ev.id, &ri) != NULL) {
				s_finish_request(a, ri, ent.dead_code > 0 ? BM_ETTL : ent.dead_code, NULL);
			}
		}
		if (ev.kind == BM_EV_MESSAGE) {
			rc = s_on_message(a, &ev);
		} else if (ev.kind == BM_EV_DENIED) {
			rc = BM_EDENIED;
		} else {
			rc = 0;
		}
		bm_event_clear(&ev);
		if (rc < 0) {
			return rc;
		}
	}
	return handled;
}

/* Broadcasts from one subscriber (shm mode `shm`): each goes to the first
 * handler whose prefix matches, if that handler's subscription is of this
 * mode — a broadcast under prefixes of several modes arrives at several
 * subscribers and is handled once. */
static int
s_bcasts_of(bm_agent_t *a, bm_sub_t *sub, int shm)
{
	int handled = 0;

	for (int k = 0; sub != NULL && k < S_BCASTS_PER_TURN; k++) {
		bm_bcast_t b;
		int rc = bm_sub_recv(sub, 0, &b);

		if (rc == -ETIMEDOUT) {
			break;
		}
		if (rc < 0) {
			return rc;
		}
		handled++;
		if (b.kind == BM_BCAST_SYNC) {
			a->nsynced++;
		} else {
			for (int i = 0; i < a->nfollow; i++) {
				if (!bm_topic_matches(a->follow[i].prefix, b.topic)) {
					continue;
				}
				if (a->follow[i].shm == shm) {
					a->st.bcasts++;
					a->st.gaps += b.gap;
					a->in_handler = true;
					a->follow[i].fn(a, &b, a->follow[i].arg);
					a->in_handler = false;
				}
				break;
			}
		}
		bm_bcast_clear(&b);
	}
	return handled;
}

static int
s_bcasts(bm_agent_t *a)
{
	int handled = 0;

	for (int i = 0; i < 3; i++) {
		int rc = s_bcasts_of(a, i == 0 ? a->sub : a->subx[i - 1], i);

		if (rc < 0) {
			return rc;
		}
		handled += rc;
	}
	return handled;
}

static int
s_blobs(bm_agent_t *a, bool accept)
{
	int handled = 0;
	size_t bytes = 0;

	if (accept && a->listener != NULL) {
		bm_channel_t *ch = NULL;

		if (bm_listener_accept(a->listener, 0, NULL, &ch) == 0) {
			if (a->nin < S_IN_MAX) {
				a->in[a->nin++] = ch;
			} else {
				bm_channel_destroy(&ch); /* the producer sees EOF */
			}
			handled++;
		}
	}
	for (int i = a->nin - 1; i >= 0 && bytes < S_BLOB_BYTES_PER_TURN; i--) {
		bm_channel_t *ch = a->in[i];

		for (int k = 0; k < S_BLOBS_PER_TURN && bytes < S_BLOB_BYTES_PER_TURN; k++) {
			bm_ring_rec_t rec;
			bm_blob_t *blob = NULL;
			int rc = bm_channel_peek(ch, 0, &rec);

			if (rc == -EAGAIN) {
				break;
			}
			if (rc == 0) {
				rc = bm_blob_recv(ch, S_BLOB_WAIT_MS, &blob);
			}
			if (rc == BM_ECORRUPT) {
				a->st.blob_errors++; /* the sender is told */
				continue;
			}
			if (rc < 0) {
				/* Gone (or broke the protocol) mid-blob: what it sent
				 * of that blob is dropped; it resends. */
				if (rc != BM_EPEER) {
					a->st.blob_errors++;
				}
				s_drop_in(a, i);
				break;
			}
			handled++;
			a->st.blobs_received++;
			a->st.blob_bytes_received += bm_blob_size(blob);
			bytes += bm_blob_size(blob);
			a->in_handler = true;
			rc = a->blob_fn(a, bm_channel_peer_name(ch), blob, a->blob_arg);
			a->in_handler = false;
			if (rc != BM_AGENT_BLOB_KEEP) {
				bm_blob_destroy(&blob);
			} /* else the handler owns it now (a view that outlives the call) */
		}
	}
	return handled;
}

/* Stores the replies and marks of this turn, then ACKs what it handled. */
static int
s_settle(bm_agent_t *a)
{
	int rc = 0;

	if (a->dirty) {
		rc = bm_agent_flush(a);
	}
	if (a->ntoack > 0) {
		int drc = bm_dedup_commit(a->dedup);

		for (size_t i = 0; i < a->ntoack; i++) {
			if (drc == 0) {
				(void)bm_client_ack(a->client, a->toack[i]);
			}
			bm_msg_destroy(&a->toack[i]);
		}
		a->ntoack = 0;
		if (drc < 0) {
			return drc;
		}
	}
	return rc;
}

int
bm_agent_step(bm_agent_t *a, int timeout_ms)
{
	zmq_pollitem_t items[BM_AGENT_POLLITEMS_MAX];
	int n, t, rc, handled = 0;
	int64_t now;

	if (a == NULL) {
		return -EINVAL;
	}
	if (a->in_handler) {
		return -EDEADLK;
	}
	/* What arrived while the caller was busy first: an ACK waiting in the
	 * socket must retire its message before the retry timers look at it. */
	if ((rc = s_mesh(a)) < 0) {
		(void)s_settle(a);
		return rc;
	}
	handled += rc;
	if (rc > 0 && (rc = s_settle(a)) < 0) {
		return rc;
	}
	if ((rc = bm_outbox_pump(a->outbox)) < 0) {
		return rc;
	}
	a->dirty = false;
	n = bm_agent_pollitems(a, items, BM_AGENT_POLLITEMS_MAX);
	t = s_min_timeout(bm_agent_timeout(a), timeout_ms);
	if (bm_agent_stopped(a)) {
		t = 0;
	}
	if (zmq_poll(items, n, t) < 0) {
		if (errno == EINTR) {
			return -EINTR;
		}
		return errno == ETERM ? -ESHUTDOWN : -errno;
	}
	if ((rc = s_mesh(a)) < 0) {
		(void)s_settle(a);
		return rc;
	}
	handled += rc;
	if ((rc = s_bcasts(a)) < 0) {
		(void)s_settle(a);
		return rc;
	}
	handled += rc;
	/* Readers attaching to our log: its socket is the last item. */
	if (a->pub != NULL && n > 0 && items[n - 1].socket == NULL &&
	    items[n - 1].fd == bm_pub_shm_fd(a->pub) && (items[n - 1].revents & ZMQ_POLLIN)) {
		(void)bm_pub_service(a->pub);
	}
	handled += s_blobs(a, a->listener != NULL && (items[a->sub ? 2 : 1].revents & ZMQ_POLLIN));
	now = bm_mono_ms();
	for (size_t i = 0; i < a->nreqs;) {
		if (a->reqs[i].deadline_ms <= now) {
			s_finish_request(a, i, -ETIMEDOUT, NULL);
			handled++;
			i = 0; /* the callback may have changed the array */
		} else {
			i++;
		}
	}
	if ((rc = s_settle(a)) < 0) {
		return rc;
	}
	return handled;
}

int
bm_agent_run(bm_agent_t *a)
{
	if (a == NULL) {
		return -EINVAL;
	}
	while (!bm_agent_stopped(a)) {
		int rc = bm_agent_step(a, -1);

		if (rc < 0 && rc != -EINTR) {
			return rc;
		}
	}
	return 0;
}

int
bm_agent_drain(bm_agent_t *a, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;

	if (a == NULL) {
		return -EINVAL;
	}
	for (;;) {
		bm_outbox_stats_t os;
		int64_t left;
		int rc;

		if ((rc = bm_agent_flush(a)) < 0) {
			return rc;
		}
		bm_outbox_stats(a->outbox, &os);
		if (os.pending + os.inflight == 0 && a->ntoack == 0) {
			return 0;
		}
		left = deadline - bm_mono_ms();
		if (left <= 0) {
			return -ETIMEDOUT;
		}
		rc = bm_agent_step(a, (int)(left < 50 ? left : 50));
		if (rc < 0 && rc != -EINTR) {
			return rc;
		}
	}
}

void
bm_agent_stats(const bm_agent_t *a, bm_agent_stats_t *ret)
{
	bm_outbox_stats_t os;

	if (a == NULL || ret == NULL) {
		return;
	}
	*ret = a->st;
	bm_outbox_stats(a->outbox, &os);
	ret->sent = os.stored;
	ret->acked = os.acked;
	ret->retried = os.retries;
	ret->dead = os.dead;
	ret->pending = os.pending + os.inflight;
	ret->replies_expired = a->st.replies_expired + os.expired;
	for (int i = 0; i < 3; i++) {
		bm_sub_stats_t ss;

		if ((i == 0 ? a->sub : a->subx[i - 1]) == NULL) {
			continue;
		}
		bm_sub_stats(i == 0 ? a->sub : a->subx[i - 1], &ss);
		ret->bcasts_shm += ss.shm_received;
		ret->shm_fallbacks += ss.shm_fallbacks;
		ret->shm_corrupt += ss.shm_corrupt;
	}
}

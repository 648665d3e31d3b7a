/*
 * bridge.c - beast-bridge: one host's mesh joined to the other hosts'
 * through NATS JetStream (docs/multihost.md).
 *
 * The bridge is a mesh agent (capability "bridge") and a NATS client of
 * the host's leaf nats-server.  Its host's stream BM_<host> captures
 * every subject bm.<host>.>; other hosts publish into it over the leaf
 * connections and the hub, and the bridge pulls from it with one durable
 * consumer.
 *
 *   out  beastd hands the bridge every SEND to an address on another host
 *        (name@host, @cap@host), with the address in the route field.
 *        The bridge publishes it to bm.<host>.dm.<name> (Nats-Msg-Id:
 *        id-attempt) and does NOT acknowledge it: the sender's outbox
 *        keeps it until the remote receiver's ACK comes back.  A publish
 *        that fails (link down, stream full) is NACKed BUSY at once, so
 *        the outbox backs off and retries; nothing else is held here.
 *   in   a message pulled from the stream is handed to the local agent
 *        with the sender's name@host as its origin (bm_client_forward);
 *        the JetStream message stays un-acked until the agent's ACK or
 *        NACK has been published to bm.<origin host>.ack and stored
 *        there: a bridge killed in between gets it redelivered after the
 *        ack wait, the agent's de-dup window ACKs the repeat.
 *   back an ACK/NACK record pulled from the stream is relayed to the
 *        local sender as an ACK or NACK from the bridge; the record is
 *        acked after the relay.
 *
 * Headers on bm.<host>.dm.<name> (body = the message body): Nats-Msg-Id,
 * Bm (the envelope in one header: agents/bridge_hdr.h), traceparent and
 * tracestate (W3C, when the message carries them).  On bm.<host>.ack: Bm
 * (id, the local sender, who answered, 0 = ACK or a NACK's wire code,
 * protocol.md §6) and Bm-Text, a NACK's words; an ACK record's body names
 * the other messages ACKed in the same turn of the loop for that host, a
 * line "<id> <sender>" each (s_ack_later).  A record has no
 * Nats-Msg-Id: a repeat is harmless (an ACK for a retired message is
 * ignored, a NACK counts only against an attempt in flight) and the
 * de-dup costs the origin's server a lookup per record.
 *
 * Why Nats-Msg-Id is id-attempt and not the bare id: a NACK (no such
 * agent yet, busy) comes back as a record and the outbox retries with the
 * next attempt number; with the bare id the stream's duplicate window
 * would swallow every retry for two minutes.  The same attempt published
 * twice is still de-duplicated; repeats across attempts reach the
 * receiver, whose de-dup window (keyed by name@host and id) hands each
 * message to its handler once.
 *
 * Threading: the main thread owns the mesh client and decides everything.
 * One helper thread blocks in JetStream fetches; it and libnats' publish
 * callbacks hand their natsMsg to the main thread through a locked queue
 * and a pipe the main thread polls beside the mesh socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "bm_agent.h"
#include "bm_bridge.h"
#include "bridge_hdr.h"
#include "bridge_nats.h"

#define S_FETCH_BATCH 256
#define S_TTL_GRACE_MS 0
#define S_HEADER_ROOM 2048 /* bytes of a NATS message kept for our headers */

enum { S_FETCHED = 1, S_PUB_OK, S_PUB_FAIL, S_TOPIC };

typedef struct s_item {
	int kind;             /* S_FETCHED, S_PUB_OK, S_PUB_FAIL, S_TOPIC */
	natsMsg *msg;         /* owned by the item */
	struct s_item *next;  /* queue link */
} s_item_t;

/* A message handed to a local agent, its JetStream copy not yet acked. */
typedef struct s_table s_table_t;

typedef struct s_inflight {
	bm_id_t id;                     /* the message id */
	natsMsg *msg;                   /* the pulled message (ack after the record) */
	char origin[BM_NAME_MAX + 1];   /* its sender, name@host */
	bool record_sent;               /* the ACK/NACK record is being published */
} s_inflight_t;

/* ACKs waiting to go back to one host in one record (flushed at the end
 * of each turn of the loop, or when full). */
#define S_ACK_HOSTS 8
#define S_ACK_BODY ((BM_BH_ACKS_MAX - 1) * (size_t)BM_BH_ACK_LINE)
typedef struct {
	char host[BM_HOST_MAX + 1];  /* "" = unused */
	char head[BM_BH_MAX];        /* the first ACK: the record's header */
	char *body;                  /* the others, a line each */
	size_t len;
	int n;
} s_acks_t;

struct bm_bridge {
	bm_bridge_opts_t o;
	bm_client_t *mesh;
	natsConnection *nc;
	jsCtx *js;
	bm_bn_puller_t *puller; /* the fetcher thread's */
	pthread_t fetcher;
	bool fetcher_up;
	volatile int stopping;
	int pipe[2];
	pthread_mutex_t lock;
	s_item_t *head, *tail;
	s_table_t *inflight; /* id -> s_inflight_t */
	char stream[64];
	char rundir[BM_PATH_MAX];  /* beastd's, for DIR/bridge-directory */
	pthread_t dirthread;   /* the directory keeper (s_directory) */
	bool dir_up;
	pthread_mutex_t dir_lock;
	char *dir_snapshot;    /* every host's agents, "host\tname\tcaps\tidle_ms\n"... */
	uint64_t rotor;        /* turns among hosts for @cap@* */
	/* topics (s_topic_*): */
	char prefixes[16][BM_TOPIC_MAX + 1]; /* global prefixes, "tot/" */
	int nprefixes;
	bm_sub_t *tsub;        /* local broadcasts under the prefixes */
	void *tctx;            /* zmq context of tpub */
	void *tpub;            /* XPUB into the local proxy: other hosts' broadcasts */
	natsSubscription *nsub; /* bm.topic.* from the other hosts */
	pthread_t topicthread;
	bool topic_up;
	uint64_t remote_sessions[4096]; /* publishers seen through NATS: not exported */
	uint64_t publishing;   /* async publishes without a result yet */
	int64_t pub_progress;  /* mono ms of the last result (or of the first publish) */
	s_acks_t acks[S_ACK_HOSTS];
	bm_bridge_stats_t st;
};

/* A publish with no PubAck for this long is taken back as failed. */
#define S_PUB_STALL_MS 3000

/* libbeastmesh's map is private to its floor: the bridge keeps its own
 * small open-addressing table of in-flight ids (linear probing). */
struct s_table {
	s_inflight_t **slot;
	size_t cap, n;
};

static uint64_t
s_hash(const bm_id_t *id)
{
	uint64_t h;

	memcpy(&h, id->b + 8, sizeof h); /* random bits */
	return h;
}

static s_inflight_t **
s_find(s_table_t *m, const bm_id_t *id)
{
	size_t i = s_hash(id) & (m->cap - 1);

	while (m->slot[i] != NULL && !bm_id_equal(&m->slot[i]->id, id)) {
		i = (i + 1) & (m->cap - 1);
	}
	return &m->slot[i];
}

static int
s_put(s_table_t *m, s_inflight_t *f)
{
	if ((m->n + 1) * 2 > m->cap) {
		s_table_t bigger = {.cap = m->cap * 2};

		bigger.slot = calloc(bigger.cap, sizeof *bigger.slot);
		if (bigger.slot == NULL) {
			return -ENOMEM;
		}
		for (size_t i = 0; i < m->cap; i++) {
			if (m->slot[i] != NULL) {
				*s_find(&bigger, &m->slot[i]->id) = m->slot[i];
			}
		}
		free(m->slot);
		m->slot = bigger.slot;
		m->cap = bigger.cap;
	}
	*s_find(m, &f->id) = f;
	m->n++;
	return 0;
}

/* Removes by backward-shift so probing stays correct. */
static void
s_del(s_table_t *m, const bm_id_t *id)
{
	s_inflight_t **p = s_find(m, id);
	size_t i = (size_t)(p - m->slot), j = i;

	if (*p == NULL) {
		return;
	}
	m->slot[i] = NULL;
	m->n--;
	for (;;) {
		size_t k;

		j = (j + 1) & (m->cap - 1);
		if (m->slot[j] == NULL) {
			return;
		}
		k = s_hash(&m->slot[j]->id) & (m->cap - 1);
		if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
			m->slot[i] = m->slot[j];
			m->slot[j] = NULL;
			i = j;
		}
	}
}

static void
s_log(const bm_bridge_t *b, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
s_log(const bm_bridge_t *b, int level, const char *fmt, ...)
{
	va_list ap;

	if (level > b->o.verbose) {
		return;
	}
	fprintf(stderr, "beast-bridge[%s]: ", b->o.host);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- the queue from libnats' threads ---- */

static void
s_push(bm_bridge_t *b, int kind, natsMsg *msg)
{
	s_item_t *it = malloc(sizeof *it);
	char one = 1;

	if (it == NULL) {
		/* Dropping a pulled message only delays it (redelivered after
		 * the ack wait); a publish result only costs a retry. */
		natsMsg_Destroy(msg);
		return;
	}
	it->kind = kind;
	it->msg = msg;
	it->next = NULL;
	bool wake;

	pthread_mutex_lock(&b->lock);
	/* Only the first item wakes the main thread: it takes the whole
	 * queue at once, so one byte per batch is enough. */
	wake = b->head == NULL;
	if (b->tail != NULL) {
		b->tail->next = it;
	} else {
		b->head = it;
	}
	b->tail = it;
	pthread_mutex_unlock(&b->lock);
	if (wake) {
		(void)!write(b->pipe[1], &one, 1);
	}
}

static s_item_t *
s_take_all(bm_bridge_t *b)
{
	s_item_t *all;
	char buf[256];

	while (read(b->pipe[0], buf, sizeof buf) > 0) {
	}
	pthread_mutex_lock(&b->lock);
	all = b->head;
	b->head = b->tail = NULL;
	pthread_mutex_unlock(&b->lock);
	return all;
}

static void *
s_fetcher(void *arg)
{
	bm_bridge_t *b = arg;

	while (!b->stopping) {
		natsMsg *m = NULL;
		int rc = bm_bn_puller_next(b->puller, 200, &m);

		if (rc > 0) {
			s_push(b, S_FETCHED, m);
		} else if (rc < 0) {
			/* Disconnected: libnats reconnects by itself. */
			struct timespec ts = {0, 50 * 1000000};

			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

static void
s_on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	(void)js;
	s_push(closure, pa != NULL && pae == NULL ? S_PUB_OK : S_PUB_FAIL, msg);
}

/* ---- helpers ---- */

static void
s_subject_token(const char *name, char *out, size_t cap)
{
	/* Agent names may hold '.', a NATS token separator; '~' is outside
	 * the name alphabet, so the mapping is one to one. */
	size_t i = 0;

	for (; name[i] != '\0' && i + 1 < cap; i++) {
		out[i] = name[i] == '.' ? '~' : name[i];
	}
	out[i] = '\0';
}

static void
s_set_u64(natsMsg *m, const char *key, uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
	natsMsgHeader_Set(m, key, buf);
}

static uint64_t
s_get_u64(natsMsg *m, const char *key, uint64_t dflt)
{
	const char *v = bm_bn_header(m, key);

	return v != NULL ? strtoull(v, NULL, 10) : dflt;
}

static int
s_publish(bm_bridge_t *b, natsMsg **m)
{
	natsStatus s = js_PublishMsgAsync(b->js, m, NULL);

	if (s != NATS_OK) {
		natsMsg_Destroy(*m);
		*m = NULL;
		return -EIO;
	}
	if (b->publishing++ == 0) {
		b->pub_progress = bm_mono_ms();
	}
	return 0;
}

/* Splits "name@host" (or "@cap@host"): the local part and the host. */
static int
s_split(const char *addr, char *local, char *host)
{
	const char *at = strchr(addr + 1, '@');

	if (at == NULL || (size_t)(at - addr) > BM_ADDR_MAX || strlen(at + 1) > BM_HOST_MAX) {
		return -EINVAL;
	}
	memcpy(local, addr, (size_t)(at - addr));
	local[at - addr] = '\0';
	strcpy(host, at + 1);
	return 0;
}

static int s_dir_pick(bm_bridge_t *b, const char *cap, char *ret_host);

/* ---- out: a local sender's message to another host ---- */

static void
s_nack_local(bm_bridge_t *b, const bm_id_t *id, const char *peer, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
s_nack_local(bm_bridge_t *b, const bm_id_t *id, const char *peer, int code, const char *fmt, ...)
{
	bm_msg_t m;
	char text[BM_TEXT_MAX + 1];
	va_list ap;

	memset(&m, 0, sizeof m);
	m.id = *id;
	snprintf(m.from, sizeof m.from, "%s", peer);
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	(void)bm_client_nack(b->mesh, &m, code, text);
}

static void
s_out(bm_bridge_t *b, bm_msg_t *m)
{
	char local[BM_ADDR_MAX + 1], host[BM_HOST_MAX + 1], tok[BM_ADDR_MAX + 1];
	char subject[192], hex[BM_ID_HEX_LEN + 1], mid[64], env[BM_BH_MAX];
	bm_bh_msg_t h = {.id = m->id, .corr = m->corr, .priority = m->priority,
	                 .ttl_ms = m->ttl_ms, .attempt = m->attempt, .ts_ms = m->ts_ms};
	natsMsg *nm = NULL;

	if (m->to[0] == '\0' || !bm_address_remote(m->to) || s_split(m->to, local, host) < 0) {
		/* Sent to the bridge by name: not a thing it does. */
		b->st.refused++;
		(void)bm_client_nack(b->mesh, m, BM_EDENIED,
		                     "beast-bridge carries messages to name@host only");
		return;
	}
	snprintf(h.to, sizeof h.to, "%s", m->to);
	snprintf(h.type, sizeof h.type, "%s", m->type);
	if (snprintf(h.from, sizeof h.from, "%s@%s", m->from, b->o.host) >= (int)sizeof h.from) {
		b->st.refused++;
		(void)bm_client_nack(b->mesh, m, BM_EBADNAME,
		                     "sender name plus '@host' is over 64 bytes");
		return;
	}
	if (strcmp(host, "*") == 0) {
		/* @cap@*: a host from the directory, this one first. */
		if (s_dir_pick(b, local + 1, host) < 0) {
			b->st.refused++;
			s_nack_local(b, &m->id, m->from, BM_ENOAGENT,
			             "no host has an agent with capability '%s' (beast ls --all)",
			             local + 1);
			return;
		}
		snprintf(h.to, sizeof h.to, "%s@%s", local, host);
	}
	/* NATS refuses a message over its max_payload (1 MiB by default) for
	 * good: a permanent TOOBIG, not a BUSY retried until the TTL.  The
	 * headers take up to ~1 KiB of it. */
	if (b->nc != NULL && (int64_t)bm_msg_size(m) + S_HEADER_ROOM >
	                             natsConnection_GetMaxPayload(b->nc)) {
		b->st.refused++;
		s_nack_local(b, &m->id, m->from, BM_ETOOBIG,
		             "%zu bytes is over what NATS carries between hosts (max_payload %lld, "
		             "less %d for headers)",
		             bm_msg_size(m), (long long)natsConnection_GetMaxPayload(b->nc),
		             S_HEADER_ROOM);
		return;
	}
	s_subject_token(local[0] == '@' ? local + 1 : local, tok, sizeof tok);
	snprintf(subject, sizeof subject, "bm.%s.%s.%s", host, local[0] == '@' ? "any" : "dm",
	         tok);
	bm_id_hex(&m->id, hex);
	snprintf(mid, sizeof mid, "%s-%u", hex, m->attempt);
	if (natsMsg_Create(&nm, subject, NULL, bm_msg_data(m), (int)bm_msg_size(m)) != NATS_OK) {
		s_nack_local(b, &m->id, m->from, BM_EBUSY, "bridge out of memory");
		return;
	}
	(void)bm_bh_msg_format(&h, env, sizeof env); /* fits: BM_BH_MAX */
	natsMsgHeader_Set(nm, "Nats-Msg-Id", mid);
	natsMsgHeader_Set(nm, BM_BH_NAME, env);
	if (m->traceparent[0] != '\0') {
		/* The W3C trace context crosses untouched, under its own names. */
		natsMsgHeader_Set(nm, "traceparent", m->traceparent);
		if (m->tracestate != NULL) {
			natsMsgHeader_Set(nm, "tracestate", m->tracestate);
		}
	}
	if (s_publish(b, &nm) < 0) {
		b->st.publish_failed++;
		s_nack_local(b, &m->id, m->from, BM_EBUSY,
		             "bridge on %s cannot publish to NATS now; retry later", b->o.host);
		return;
	}
	b->st.out++;
}

/* The record answering a delivered message was stored (the JetStream
 * message is acked and forgotten), or not (left un-acked: it is
 * redelivered after the ack wait and tried again). */
static void
s_answered(bm_bridge_t *b, const bm_id_t *id, bool stored)
{
	s_inflight_t *f = *s_find(b->inflight, id);

	if (f == NULL) {
		return;
	}
	if (!stored) {
		f->record_sent = false;
		return;
	}
	bm_bn_ack(b->nc, f->msg);
	natsMsg_Destroy(f->msg);
	s_del(b->inflight, id);
	free(f);
}

/* s_answered for every message a record of ours names: its header's,
 * then its body's lines. */
static void
s_answered_all(bm_bridge_t *b, const char *head, const char *body, size_t len, bool stored)
{
	const char *p = body, *end = body != NULL ? body + len : NULL;
	bm_bh_rec_t r;

	if (bm_bh_rec_parse(head, &r) < 0) {
		return;
	}
	do {
		s_answered(b, &r.id, stored);
	} while (p != NULL && bm_bh_ack_next(&p, end, &r.id, r.peer) == 1);
}

/* A publish of ours was stored, or not. */
static void
s_published(bm_bridge_t *b, natsMsg *nm, bool ok)
{
	const char *subject = natsMsg_GetSubject(nm);
	const char *env = bm_bn_header(nm, BM_BH_NAME);
	bm_bh_msg_t h;

	if (b->publishing > 0) {
		b->publishing--;
	}
	b->pub_progress = bm_mono_ms();
	if (strstr(subject, ".ack") != NULL && strchr(subject, '.') != NULL &&
	    strcmp(strrchr(subject, '.'), ".ack") == 0) {
		/* Our ACK/NACK record for delivered messages. */
		if (!ok) {
			b->st.publish_failed++;
		}
		s_answered_all(b, env, natsMsg_GetData(nm), (size_t)natsMsg_GetDataLength(nm), ok);
		return;
	}
	if (!ok && bm_bh_msg_parse(env, &h) == 0) {
		char local[BM_ADDR_MAX + 1], host[BM_HOST_MAX + 1];

		b->st.publish_failed++;
		if (s_split(h.from, local, host) == 0) {
			s_nack_local(b, &h.id, local, BM_EBUSY,
			             "bridge on %s cannot reach '%s' through NATS now; retry later",
			             b->o.host, h.to);
		}
	}
}

/* ---- in: another host's message for a local agent ---- */

/* Publishes the ACKs gathered for one host as one record. */
static void
s_ack_flush(bm_bridge_t *b, s_acks_t *a)
{
	char subject[96];
	natsMsg *nm = NULL;

	if (a->n == 0) {
		return;
	}
	snprintf(subject, sizeof subject, "bm.%s.ack", a->host);
	if (natsMsg_Create(&nm, subject, NULL, a->body, (int)a->len) == NATS_OK) {
		natsMsgHeader_Set(nm, BM_BH_NAME, a->head);
		if (s_publish(b, &nm) < 0) {
			nm = NULL;
		}
	}
	if (nm == NULL) {
		/* Not published: each message is answered again when its
		 * JetStream copy comes back after the ack wait. */
		b->st.publish_failed++;
		s_answered_all(b, a->head, a->body, a->len, false);
	}
	a->n = 0;
	a->len = 0;
}

static void
s_ack_flush_all(bm_bridge_t *b)
{
	for (int i = 0; i < S_ACK_HOSTS; i++) {
		s_ack_flush(b, &b->acks[i]);
	}
}

/* Adds the ACK for f (head: its record header, should it come first) to
 * its host's batch: 0, or -ENOMEM (send it alone). */
static int
s_ack_later(bm_bridge_t *b, s_inflight_t *f, const char *host, const char *peer,
            const char *head)
{
	s_acks_t *a = NULL;

	for (int i = 0; i < S_ACK_HOSTS && a == NULL; i++) {
		if (strcmp(b->acks[i].host, host) == 0) {
			a = &b->acks[i];
		}
	}
	for (int i = 0; i < S_ACK_HOSTS && a == NULL; i++) {
		if (b->acks[i].host[0] == '\0') {
			a = &b->acks[i];
			snprintf(a->host, sizeof a->host, "%s", host);
		}
	}
	if (a == NULL) {
		return -ENOMEM; /* more hosts than slots: this one goes alone */
	}
	if (a->body == NULL && (a->body = malloc(S_ACK_BODY)) == NULL) {
		return -ENOMEM;
	}
	if (a->n == 0) {
		snprintf(a->head, sizeof a->head, "%s", head);
	} else if (bm_bh_ack_add(a->body, S_ACK_BODY, &a->len, &f->id, peer) < 0) {
		return -ENOMEM;
	}
	a->n++;
	f->record_sent = true;
	if (a->n >= BM_BH_ACKS_MAX) {
		s_ack_flush(b, a);
	}
	return 0;
}

static void
s_record(bm_bridge_t *b, s_inflight_t *f, const char *acker, int code, const char *text)
{
	char local[BM_ADDR_MAX + 1], host[BM_HOST_MAX + 1], subject[96], env[BM_BH_MAX];
	bm_bh_rec_t r;
	natsMsg *nm = NULL;

	if (f->record_sent || s_split(f->origin, local, host) < 0) {
		return;
	}
	memset(&r, 0, sizeof r);
	r.id = f->id;
	/* The origin's local part is the sender's name (s_in_dm checked). */
	snprintf(r.peer, sizeof r.peer, "%.*s", (int)sizeof r.peer - 1, local);
	(void)!snprintf(r.from, sizeof r.from, "%s@%s", acker, b->o.host);
	/* The wire code (protocol.md §6); a code outside that table as PEER. */
	if (code != 0 && !(code > BM_E__FIRST && code < BM_E__LAST)) {
		code = BM_EPEER;
	}
	r.code = code == 0 ? 0 : (uint32_t)(code + BM_EBASE);
	(void)bm_bh_rec_format(&r, env, sizeof env); /* fits: BM_BH_MAX */
	if (code == 0 && s_ack_later(b, f, host, r.peer, env) == 0) {
		return;
	}
	snprintf(subject, sizeof subject, "bm.%s.ack", host);
	if (natsMsg_Create(&nm, subject, NULL, NULL, 0) != NATS_OK) {
		return;
	}
	natsMsgHeader_Set(nm, BM_BH_NAME, env);
	if (text != NULL && text[0] != '\0') {
		/* Whoever refused it here, the sender learns which host said so
		 * (cut to the wire's 255 bytes: the host goes first). */
		char said[BM_TEXT_MAX + 1];

		(void)!snprintf(said, sizeof said, "on host %s: %.200s", b->o.host, text);
		natsMsgHeader_Set(nm, "Bm-Text", said);
	}
	if (s_publish(b, &nm) == 0) {
		f->record_sent = true;
	}
}

static void
s_in_dm(bm_bridge_t *b, natsMsg *nm)
{
	char local[BM_ADDR_MAX + 1], host[BM_HOST_MAX + 1];
	s_inflight_t **p, *f;
	bm_send_opts_t o;
	bm_bh_msg_t h;
	int rc;

	if (bm_bh_msg_parse(bm_bn_header(nm, BM_BH_NAME), &h) < 0 ||
	    s_split(h.to, local, host) < 0) {
		/* Not ours to understand: acked so it does not come back. */
		b->st.malformed++;
		bm_bn_ack(b->nc, nm);
		natsMsg_Destroy(nm);
		return;
	}
	p = s_find(b->inflight, &h.id);
	if ((f = *p) != NULL) {
		/* Redelivered (ack wait passed) or a later attempt: keep the
		 * newest pulled copy, hand it over again. */
		natsMsg_Destroy(f->msg);
		f->msg = nm;
		f->record_sent = false;
	} else {
		f = calloc(1, sizeof *f);
		if (f == NULL) {
			natsMsg_Destroy(nm);
			return;
		}
		f->id = h.id;
		f->msg = nm;
		snprintf(f->origin, sizeof f->origin, "%s", h.from);
		if (s_put(b->inflight, f) < 0) {
			natsMsg_Destroy(nm);
			free(f);
			return;
		}
	}
	if (h.ttl_ms > 0 && h.ts_ms + h.ttl_ms + S_TTL_GRACE_MS < bm_wall_ms()) {
		b->st.expired++;
		s_record(b, f, local, BM_ETTL, "expired before delivery");
		return;
	}
	memset(&o, 0, sizeof o);
	o.to = local;
	o.type = h.type;
	o.id = &h.id;
	o.corr = bm_id_is_zero(&h.corr) ? NULL : &h.corr;
	o.priority = h.priority;
	o.ttl_ms = h.ttl_ms;
	o.attempt = h.attempt;
	o.ts_ms = h.ts_ms;
	/* A trace context we could not carry is left behind, not the message. */
	o.traceparent = bm_bn_header(nm, "traceparent");
	o.tracestate = o.traceparent != NULL ? bm_bn_header(nm, "tracestate") : NULL;
	if (o.traceparent != NULL && strlen(o.traceparent) > BM_TRACEPARENT_MAX) {
		o.traceparent = o.tracestate = NULL;
	}
	if (o.tracestate != NULL && strlen(o.tracestate) > BM_TRACESTATE_MAX) {
		o.tracestate = NULL;
	}
	rc = bm_client_forward(b->mesh, &o, h.from, natsMsg_GetData(nm),
	                       (size_t)natsMsg_GetDataLength(nm), NULL);
	if (rc < 0) {
		/* beastd away or full: the pulled copy comes back after the
		 * ack wait. */
		b->st.forward_failed++;
		return;
	}
	b->st.in++;
}

/* The local agent's answer for a message we handed over. */
static void
s_in_answer(bm_bridge_t *b, const bm_event_t *ev)
{
	s_inflight_t *f = *s_find(b->inflight, &ev->id);

	if (f == NULL) {
		return; /* an answer for an earlier bridge's delivery */
	}
	if (ev->kind == BM_EV_ACK) {
		b->st.acked++;
		s_record(b, f, ev->peer, 0, NULL);
		return;
	}
	b->st.nacked++;
	s_record(b, f, ev->peer[0] ? ev->peer : "bridge", ev->code, ev->text);
}

/* ---- back: an ACK/NACK record for a local sender ---- */

static void
s_in_record(bm_bridge_t *b, natsMsg *nm)
{
	const char *text = bm_bn_header(nm, "Bm-Text");
	bm_bh_rec_t r;
	uint32_t code;
	bm_msg_t m;
	int rc;

	memset(&m, 0, sizeof m);
	if (bm_bh_rec_parse(bm_bn_header(nm, BM_BH_NAME), &r) < 0) {
		b->st.malformed++;
		bm_bn_ack(b->nc, nm);
		natsMsg_Destroy(nm);
		return;
	}
	m.id = r.id;
	code = r.code;
	snprintf(m.from, sizeof m.from, "%s", r.peer);
	if (code == 0) {
		/* The header's ACK, then the body's, to their senders. */
		const char *p = natsMsg_GetData(nm);
		const char *end = p != NULL ? p + natsMsg_GetDataLength(nm) : NULL;
		int more = 0;

		do {
			snprintf(m.from, sizeof m.from, "%s", r.peer);
			m.id = r.id;
			rc = bm_client_ack(b->mesh, &m);
			b->st.acks_back++;
		} while (rc != BM_EFULL && p != NULL &&
		         (more = bm_bh_ack_next(&p, end, &r.id, r.peer)) == 1);
		if (more < 0) {
			b->st.malformed++; /* the rest is lost: their senders retry */
		}
	} else {
		/* Wire code back to BM_E*: protocol.md §6. */
		rc = bm_client_nack(b->mesh, &m, code < 100 ? (int)code - BM_EBASE : BM_EPEER,
		                    text != NULL ? text : "refused");
		b->st.nacks_back++;
	}
	if (rc == BM_EFULL) {
		/* beastd is not taking frames: let the record come again. */
		bm_bn_nak(b->nc, nm, 100);
	} else {
		bm_bn_ack(b->nc, nm);
	}
	natsMsg_Destroy(nm);
}

static void
s_fetched(bm_bridge_t *b, natsMsg *nm)
{
	const char *subject = natsMsg_GetSubject(nm);
	const char *last = strrchr(subject, '.');

	if (last != NULL && strcmp(last, ".ack") == 0) {
		s_in_record(b, nm);
	} else {
		s_in_dm(b, nm);
	}
}

/* ---- the shared directory ----
 *
 * A thread of its own, because its NATS calls are requests that may wait
 * seconds while the hub is away, and the mesh loop must not.  Once a
 * second it lists the local agents (its own anonymous mesh client: LIST
 * needs no registration), stores them in the KV bucket `bm_dir` in the
 * hub's JetStream domain under the key <host> (the bucket's TTL drops a
 * host whose bridge stopped writing), reads every host's entry back, and
 * publishes the result: to the main thread for @cap@* (dir_snapshot), and
 * to DIR/bridge-directory for `beast ls --all`.
 *
 * Entry value (text): line 1 "bm-dir 1 <wall ms>", then per agent
 * "<name>\t<cap,cap|->\t<idle ms>".  The file: per agent
 * "<host>\t<name>\t<caps>\t<idle ms>\t<age of the host's entry, ms>".
 */

#define S_DIR_BUCKET "bm_dir"
#define S_DIR_TTL_MS 15000

static void
s_buf_add(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
s_buf_add(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = *buf ? vsnprintf(*buf + *len, *cap - *len, fmt, ap) : -1;
		va_end(ap);
		if (n >= 0 && *len + (size_t)n < *cap) {
			*len += (size_t)n;
			return;
		}
		char *p = realloc(*buf, *cap * 2 + 256);

		if (p == NULL) {
			return;
		}
		*buf = p;
		*cap = *cap * 2 + 256;
	}
}

/* The local agents as an entry value (malloc'd), or NULL. */
static char *
s_dir_local(bm_client_t *c)
{
	bm_agent_info_t *v = NULL;
	size_t n = 0, len = 0, cap = 0;
	char *buf = NULL;

	if (bm_client_list(c, 1000, &v, &n) < 0) {
		return NULL;
	}
	s_buf_add(&buf, &len, &cap, "bm-dir 1 %lld\n", (long long)bm_wall_ms());
	for (size_t i = 0; i < n; i++) {
		s_buf_add(&buf, &len, &cap, "%s\t", v[i].name);
		for (int k = 0; k < v[i].ncaps; k++) {
			s_buf_add(&buf, &len, &cap, "%s%s", k ? "," : "", v[i].caps[k]);
		}
		s_buf_add(&buf, &len, &cap, "%s\t%lld\n", v[i].ncaps ? "" : "-",
		          (long long)v[i].idle_ms);
	}
	free(v);
	return buf;
}

/* Appends one host's entry to the snapshot; false when it is not one. */
static bool
s_dir_merge(const char *host, const char *value, char **buf, size_t *len, size_t *cap)
{
	long long ts;
	const char *line;

	if (value == NULL || sscanf(value, "bm-dir 1 %lld", &ts) != 1) {
		return false;
	}
	for (line = strchr(value, '\n'); line != NULL && line[1] != '\0';
	     line = strchr(line + 1, '\n')) {
		const char *end = strchr(line + 1, '\n');
		int n = end ? (int)(end - line - 1) : (int)strlen(line + 1);

		s_buf_add(buf, len, cap, "%s\t%.*s\t%lld\n", host, n, line + 1,
		          (long long)(bm_wall_ms() - ts));
	}
	return true;
}

static void
s_dir_round(bm_bridge_t *b, bm_client_t *c, kvStore *kv)
{
	char *local = s_dir_local(c), *snap = NULL, path[BM_PATH_MAX + 64], tmp[BM_PATH_MAX + 80];
	size_t len = 0, cap = 0;
	kvKeysList keys = {0};
	FILE *f;

	s_buf_add(&snap, &len, &cap, "%s", "");
	if (kv != NULL && local != NULL) {
		uint64_t rev = 0;

		(void)kvStore_PutString(&rev, kv, b->o.host, local);
	}
	if (kv != NULL && kvStore_Keys(&keys, kv, NULL) == NATS_OK) {
		for (int i = 0; i < keys.Count; i++) {
			kvEntry *e = NULL;

			if (strcmp(keys.Keys[i], b->o.host) == 0 && local != NULL) {
				continue; /* ours: fresher from beastd itself */
			}
			if (kvStore_Get(&e, kv, keys.Keys[i]) == NATS_OK) {
				s_dir_merge(keys.Keys[i], kvEntry_ValueString(e), &snap, &len, &cap);
				kvEntry_Destroy(e);
			}
		}
		kvKeysList_Destroy(&keys);
	}
	if (local != NULL) {
		(void)s_dir_merge(b->o.host, local, &snap, &len, &cap);
	}
	free(local);
	if (snap == NULL) {
		return;
	}
	pthread_mutex_lock(&b->dir_lock);
	free(b->dir_snapshot);
	b->dir_snapshot = snap;
	pthread_mutex_unlock(&b->dir_lock);
	/* For `beast ls --all`: replaced whole, never half written. */
	if (b->rundir[0] != '\0') {
		snprintf(path, sizeof path, "%s/bridge-directory", b->rundir);
		snprintf(tmp, sizeof tmp, "%s.tmp", path);
		if ((f = fopen(tmp, "w")) != NULL) {
			pthread_mutex_lock(&b->dir_lock);
			fputs(b->dir_snapshot, f);
			pthread_mutex_unlock(&b->dir_lock);
			if (fclose(f) == 0) {
				(void)rename(tmp, path);
			}
		}
	}
}

static void *
s_directory(void *arg)
{
	bm_bridge_t *b = arg;
	bm_client_t *c = NULL;
	jsCtx *js = NULL;
	kvStore *kv = NULL;
	jsOptions jo;

	jsOptions_Init(&jo);
	jo.Domain = b->o.dir_domain;
	jo.Wait = 2000;
	if (natsConnection_JetStream(&js, b->nc, &jo) != NATS_OK) {
		js = NULL;
	}
	while (!b->stopping) {
		bm_client_opts_t co = {.dir = b->o.dir, .connect_timeout_ms = 1000};

		if (c == NULL && bm_client_open(&co, &c) < 0) {
			c = NULL;
		}
		if (kv == NULL && js != NULL) {
			kvConfig kc;

			kvConfig_Init(&kc);
			kc.Bucket = S_DIR_BUCKET;
			kc.History = 1;
			kc.TTL = BM_BN_MS(S_DIR_TTL_MS);
			kc.StorageType = js_FileStorage;
			if (js_KeyValue(&kv, js, S_DIR_BUCKET) != NATS_OK &&
			    js_CreateKeyValue(&kv, js, &kc) != NATS_OK) {
				kv = NULL;
			}
		}
		if (c != NULL) {
			s_dir_round(b, c, kv);
		}
		for (int i = 0; i < 10 && !b->stopping; i++) {
			usleep(100000);
		}
	}
	kvStore_Destroy(kv);
	jsCtx_Destroy(js);
	bm_client_destroy(&c);
	return NULL;
}

/* For @cap@*: a host with an agent that has cap, this one first; 0 or
 * -ENOENT. */
static int
s_dir_pick(bm_bridge_t *b, const char *cap, char *ret_host)
{
	char hosts[16][BM_HOST_MAX + 1];
	int n = 0;
	bool local = false;

	pthread_mutex_lock(&b->dir_lock);
	for (const char *line = b->dir_snapshot; line != NULL && *line != '\0';) {
		char host[BM_HOST_MAX + 1], name[BM_NAME_MAX + 1], caps[600];
		const char *end = strchr(line, '\n');

		if (sscanf(line, "%32[^\t]\t%64[^\t]\t%599[^\t]", host, name, caps) == 3) {
			bool has = false;

			for (char *sv = NULL, *tok = strtok_r(caps, ",", &sv); tok != NULL;
			     tok = strtok_r(NULL, ",", &sv)) {
				has = has || strcmp(tok, cap) == 0;
			}
			if (has && strcmp(host, b->o.host) == 0) {
				local = true;
			} else if (has && n < 16) {
				bool dup = false;

				for (int i = 0; i < n; i++) {
					dup = dup || strcmp(hosts[i], host) == 0;
				}
				if (!dup) {
					strcpy(hosts[n++], host);
				}
			}
		}
		line = end ? end + 1 : NULL;
	}
	pthread_mutex_unlock(&b->dir_lock);
	if (local) {
		strcpy(ret_host, b->o.host);
		return 0;
	}
	if (n == 0) {
		return -ENOENT;
	}
	strcpy(ret_host, hosts[b->rotor++ % (uint64_t)n]);
	return 0;
}

/* ---- topics ----
 *
 * Broadcasts under the configured global prefixes cross hosts on core
 * NATS (at most once: a loss shows as a hole in the stream's tseq, which
 * every subscriber counts).  Out: the bridge follows the prefixes on its
 * proxy and publishes each live broadcast to bm.topic.<host> with the
 * header fields as NATS headers (Bm-Origin = this host).  In: a thread
 * takes bm.topic.* from the other hosts; the main thread re-encodes the
 * frame exactly as the publisher made it (protocol.md §14.2: same
 * publisher name, session, seq, tseq) and pushes it into the local proxy,
 * so local subscribers see the original stream and count its gaps.  No
 * loops: a session that came in through NATS is remembered and never
 * exported again, and a host ignores its own subject.
 */

static bool
s_session_remote(bm_bridge_t *b, uint64_t session, bool add)
{
	size_t n = sizeof b->remote_sessions / sizeof b->remote_sessions[0];
	size_t i = (size_t)(session * 0x9e3779b97f4a7c15ull >> 52) % n;

	for (size_t k = 0; k < n; k++, i = (i + 1) % n) {
		if (b->remote_sessions[i] == session) {
			return true;
		}
		if (b->remote_sessions[i] == 0) {
			if (add) {
				b->remote_sessions[i] = session;
			}
			return false;
		}
	}
	if (add) {
		/* Full (4096 publishers came through NATS): start over. */
		memset(b->remote_sessions, 0, sizeof b->remote_sessions);
		b->remote_sessions[i] = session;
	}
	return false;
}

static void *
s_topic_thread(void *arg)
{
	bm_bridge_t *b = arg;

	while (!b->stopping) {
		natsMsg *m = NULL;

		if (natsSubscription_NextMsg(&m, b->nsub, 200) == NATS_OK) {
			s_push(b, S_TOPIC, m);
		}
	}
	return NULL;
}

/* A local broadcast out to the other hosts. */
static void
s_topic_out(bm_bridge_t *b, bm_bcast_t *bc)
{
	char subject[64];
	natsMsg *nm = NULL;

	if (bc->kind != BM_BCAST_MSG || bc->replay || s_session_remote(b, bc->session, false)) {
		return;
	}
	snprintf(subject, sizeof subject, "bm.topic.%s", b->o.host);
	if (natsMsg_Create(&nm, subject, NULL, bm_bcast_data(bc), (int)bm_bcast_size(bc)) !=
	    NATS_OK) {
		return;
	}
	natsMsgHeader_Set(nm, "Bm-Origin", b->o.host);
	natsMsgHeader_Set(nm, "Bm-Topic", bc->topic);
	natsMsgHeader_Set(nm, "Bm-From", bc->from);
	s_set_u64(nm, "Bm-Session", bc->session);
	s_set_u64(nm, "Bm-Seq", bc->seq);
	s_set_u64(nm, "Bm-Tseq", bc->tseq);
	s_set_u64(nm, "Bm-Ts", (uint64_t)bc->ts_ms);
	if (natsConnection_PublishMsg(b->nc, nm) == NATS_OK) {
		b->st.topics_out++;
	}
	natsMsg_Destroy(nm);
}

/* Another host's broadcast into the local proxy, as its publisher made it. */
static void
s_topic_in(bm_bridge_t *b, natsMsg *nm)
{
	const char *origin = bm_bn_header(nm, "Bm-Origin"), *topic = bm_bn_header(nm, "Bm-Topic");
	const char *from = bm_bn_header(nm, "Bm-From");
	uint64_t session = s_get_u64(nm, "Bm-Session", 0);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	zmq_msg_t f;
	bool wanted = false;
	size_t tlen, blen = (size_t)natsMsg_GetDataLength(nm);

	if (origin == NULL || strcmp(origin, b->o.host) == 0 || topic == NULL || from == NULL ||
	    session == 0 || bm_name_check(from) < 0 ||
	    bm_topic_check(topic, strlen(topic), false) < 0) {
		return;
	}
	for (int i = 0; i < b->nprefixes && !wanted; i++) {
		wanted = bm_topic_matches(b->prefixes[i], topic);
	}
	if (!wanted) {
		return;
	}
	s_session_remote(b, session, true);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 7);
	msgpack_pack_uint8(&pk, 2);
	msgpack_pack_str(&pk, strlen(from));
	msgpack_pack_str_body(&pk, from, strlen(from));
	msgpack_pack_uint64(&pk, session);
	msgpack_pack_uint64(&pk, s_get_u64(nm, "Bm-Seq", 0));
	msgpack_pack_uint64(&pk, s_get_u64(nm, "Bm-Tseq", 0));
	msgpack_pack_int64(&pk, (int64_t)s_get_u64(nm, "Bm-Ts", 0));
	msgpack_pack_uint8(&pk, 0);
	tlen = strlen(topic);
	/* One frame up to 64 KiB of body, else the body in a second (§14.2). */
	if (zmq_msg_init_size(&f, tlen + sb.size + (blen <= 65536 ? blen : 0)) == 0) {
		uint8_t *p = zmq_msg_data(&f);
		int rc;

		memcpy(p, topic, tlen);
		memcpy(p + tlen, sb.data, sb.size);
		if (blen <= 65536) {
			if (blen > 0) {
				memcpy(p + tlen + sb.size, natsMsg_GetData(nm), blen);
			}
			rc = zmq_msg_send(&f, b->tpub, ZMQ_DONTWAIT);
		} else {
			rc = zmq_msg_send(&f, b->tpub, ZMQ_DONTWAIT | ZMQ_SNDMORE);
			if (rc >= 0) {
				rc = zmq_send(b->tpub, natsMsg_GetData(nm), blen, ZMQ_DONTWAIT);
			}
		}
		if (rc < 0) {
			/* The proxy is not keeping up: dropped here, counted as a
			 * gap by every subscriber downstream. */
			zmq_msg_close(&f);
			b->st.topics_dropped++;
		} else {
			b->st.topics_in++;
		}
	}
	msgpack_sbuffer_destroy(&sb);
}

static int
s_topic_open(bm_bridge_t *b)
{
	char ep[BM_PATH_MAX + 16], tmp[BM_TOPIC_MAX + 2];
	const char *p = b->o.topics;
	bm_sub_opts_t so = {.dir = b->o.dir, .name = b->o.name, .no_lvc = true};
	int one = 1, hwm = 100000;
	uint8_t sub;

	while (p != NULL && *p != '\0' && b->nprefixes < 16) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);

		if (n > 0 && n < sizeof tmp) {
			memcpy(tmp, p, n);
			tmp[n] = '\0';
			if (bm_topic_normalize(tmp, true, b->prefixes[b->nprefixes],
			                       sizeof b->prefixes[0]) < 0) {
				s_log(b, 0, "not a topic prefix: '%s'", tmp);
				return -EINVAL;
			}
			b->nprefixes++;
		}
		p = comma ? comma + 1 : NULL;
	}
	if (b->nprefixes == 0) {
		return 0;
	}
	if (bm_sub_open(&so, &b->tsub) < 0) {
		return -EIO;
	}
	for (int i = 0; i < b->nprefixes; i++) {
		if (bm_sub_subscribe(b->tsub, b->prefixes[i]) < 0) {
			return -EIO;
		}
	}
	b->tctx = zmq_ctx_new();
	b->tpub = b->tctx ? zmq_socket(b->tctx, ZMQ_XPUB) : NULL;
	snprintf(ep, sizeof ep, "ipc://%s/pub.sock", b->rundir);
	if (b->tpub == NULL || zmq_setsockopt(b->tpub, ZMQ_XPUB_NODROP, &one, sizeof one) < 0 ||
	    zmq_setsockopt(b->tpub, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_connect(b->tpub, ep) < 0) {
		return -EIO;
	}
	/* The proxy subscribes to everything once attached: wait for it, so
	 * the first broadcast in is not lost to a slow joiner. */
	{
		zmq_pollitem_t it = {.socket = b->tpub, .events = ZMQ_POLLIN};

		if (zmq_poll(&it, 1, 5000) <= 0 || zmq_recv(b->tpub, &sub, 1, 0) < 0) {
			s_log(b, 0, "beastd's broadcast proxy did not attach");
			return -EIO;
		}
	}
	if (natsConnection_SubscribeSync(&b->nsub, b->nc, "bm.topic.*") != NATS_OK ||
	    natsSubscription_SetPendingLimits(b->nsub, -1, -1) != NATS_OK) {
		return -EIO;
	}
	if (pthread_create(&b->topicthread, NULL, s_topic_thread, b) != 0) {
		return -EAGAIN;
	}
	b->topic_up = true;
	return 0;
}

static void
s_topic_events(bm_bridge_t *b)
{
	bm_bcast_t bc;

	for (int i = 0; i < 4096 && b->tsub != NULL && bm_sub_recv(b->tsub, 0, &bc) == 0; i++) {
		if (bc.kind == BM_BCAST_SYNC) {
			s_log(b, 1, "topics under %s in force", bc.topic);
		} else {
			s_topic_out(b, &bc);
		}
		bm_bcast_clear(&bc);
	}
	if (b->tpub != NULL) {
		uint8_t buf[256];

		/* The proxy's subscription frames: nothing to do with them. */
		while (zmq_recv(b->tpub, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
		}
	}
}

/* ---- life ---- */

int
bm_bridge_open(const bm_bridge_opts_t *opts, bm_bridge_t **ret_bridge)
{
	static const char *caps[] = {"bridge", NULL};
	bm_bridge_t *b;
	jsOptions jo;
	char subject[64];
	bm_client_opts_t co = {0};
	int rc;

	if (opts == NULL || opts->host == NULL || bm_host_check(opts->host) < 0 ||
	    opts->nats_url == NULL || ret_bridge == NULL) {
		return -EINVAL;
	}
	b = calloc(1, sizeof *b);
	if (b == NULL) {
		return -ENOMEM;
	}
	b->o = *opts;
	if (b->o.name == NULL) {
		b->o.name = "bridge";
	}
	if (b->o.ack_wait_ms <= 0) {
		b->o.ack_wait_ms = 10000;
	}
	b->pipe[0] = b->pipe[1] = -1;
	pthread_mutex_init(&b->lock, NULL);
	pthread_mutex_init(&b->dir_lock, NULL);
	if (b->o.dir_domain == NULL) {
		b->o.dir_domain = "hub";
	}
	b->inflight = calloc(1, sizeof *b->inflight);
	if (b->inflight == NULL || (b->inflight->slot = calloc(1024, sizeof(void *))) == NULL ||
	    pipe2(b->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		bm_bridge_destroy(&b);
		return -ENOMEM;
	}
	b->inflight->cap = 1024;
	snprintf(b->stream, sizeof b->stream, "BM_%s", b->o.host);
	snprintf(subject, sizeof subject, "bm.%s.>", b->o.host);
	if ((rc = bm_bn_connect(b->o.nats_url, b->o.name, &b->nc)) < 0) {
		s_log(b, 0, "cannot use NATS at %s", b->o.nats_url);
		bm_bridge_destroy(&b);
		return rc;
	}
	jsOptions_Init(&jo);
	jo.PublishAsync.AckHandler = s_on_puback;
	jo.PublishAsync.AckHandlerClosure = b;
	jo.PublishAsync.MaxPending = 8192;
	jo.Wait = 5000;
	if (natsConnection_JetStream(&b->js, b->nc, &jo) != NATS_OK) {
		bm_bridge_destroy(&b);
		return -EIO;
	}
	/* The leaf may still be starting: try for a while. */
	for (int i = 0;; i++) {
		char why[256] = "";

		rc = bm_bn_stream(b->js, b->stream, subject, 24 * 3600 * 1000LL, 120000, why,
		                  sizeof why);
		if (rc == 0) {
			rc = bm_bn_consumer(b->js, b->stream, "bridge", b->o.ack_wait_ms, 16384, why,
			                    sizeof why);
		}
		if (rc == 0 && (rc = bm_bn_puller_open(b->nc, b->stream, "bridge", &b->puller)) < 0) {
			snprintf(why, sizeof why, "cannot subscribe to an inbox");
		}
		if (rc == 0) {
			break;
		}
		if (i >= 100) {
			s_log(b, 0, "JetStream on %s is not usable: %s", b->o.nats_url, why);
			bm_bridge_destroy(&b);
			return rc;
		}
		usleep(100000);
	}
	co.dir = b->o.dir;
	co.name = b->o.name;
	co.caps = caps;
	co.connect_timeout_ms = 10000;
	if ((rc = bm_client_open(&co, &b->mesh)) < 0) {
		s_log(b, 0, "cannot join the mesh: %s", bm_strerror(rc));
		bm_bridge_destroy(&b);
		return rc;
	}
	if (pthread_create(&b->fetcher, NULL, s_fetcher, b) != 0) {
		bm_bridge_destroy(&b);
		return -EAGAIN;
	}
	b->fetcher_up = true;
	if (bm_rundir_resolve(b->o.dir, false, b->rundir) < 0) {
		b->rundir[0] = '\0';
	}
	if (pthread_create(&b->dirthread, NULL, s_directory, b) != 0) {
		bm_bridge_destroy(&b);
		return -EAGAIN;
	}
	b->dir_up = true;
	if ((rc = s_topic_open(b)) < 0) {
		s_log(b, 0, "cannot bridge topics: %s", bm_strerror(rc));
		bm_bridge_destroy(&b);
		return rc;
	}
	s_log(b, 1, "up: mesh agent '%s', stream %s on %s", b->o.name, b->stream, b->o.nats_url);
	*ret_bridge = b;
	return 0;
}

static void
s_mesh_events(bm_bridge_t *b)
{
	bm_event_t ev;

	for (int i = 0; i < 4096 && bm_client_recv(b->mesh, 0, &ev) == 0; i++) {
		switch (ev.kind) {
		case BM_EV_MESSAGE:
			s_out(b, ev.msg);
			break;
		case BM_EV_ACK:
		case BM_EV_NACK:
			s_in_answer(b, &ev);
			break;
		default:
			break;
		}
		bm_event_clear(&ev);
	}
	(void)bm_client_flush(b->mesh);
}

/* Publishes whose PubAck never came (libnats keeps them for ever): failed. */
static void
s_reap(bm_bridge_t *b)
{
	natsMsgList list;
	int n = bm_bn_take_pending(b->js, &list);

	s_log(b, 1, "%d publishes had no PubAck for %d ms: treated as failed", n, S_PUB_STALL_MS);
	for (int i = 0; i < n; i++) {
		s_published(b, list.Msgs[i], false);
	}
	if (n >= 0) {
		natsMsgList_Destroy(&list);
	}
	b->publishing = 0;
	b->pub_progress = bm_mono_ms();
}

int
bm_bridge_run(bm_bridge_t *b, volatile sig_atomic_t *stop)
{
	while (!*stop) {
		/* Local agents' messages come on the mesh socket or, once they
		 * have a direct route to the bridge, on the routes' fd. */
		zmq_pollitem_t items[4] = {
			{.socket = bm_client_socket(b->mesh), .events = ZMQ_POLLIN},
			{.fd = b->pipe[0], .events = ZMQ_POLLIN},
			{.fd = bm_client_direct_fd(b->mesh), .events = ZMQ_POLLIN},
			{.socket = b->tsub ? bm_sub_socket(b->tsub) : NULL, .events = ZMQ_POLLIN},
		};
		int n = items[2].fd >= 0 ? 3 : 2, t = bm_client_timeout(b->mesh);
		s_item_t *it;

		if (items[2].fd < 0) {
			items[2] = items[3];
		}
		n += b->tsub != NULL;
		if (t < 0 || t > 200) {
			t = 200;
		}
		if (zmq_poll(items, n, t) < 0 && zmq_errno() != EINTR) {
			return -EIO;
		}
		s_mesh_events(b);
		s_topic_events(b);
		it = s_take_all(b);
		while (it != NULL) {
			s_item_t *next = it->next;

			if (it->kind == S_FETCHED) {
				s_fetched(b, it->msg);
			} else if (it->kind == S_TOPIC) {
				s_topic_in(b, it->msg);
				natsMsg_Destroy(it->msg);
			} else {
				s_published(b, it->msg, it->kind == S_PUB_OK);
				natsMsg_Destroy(it->msg);
			}
			free(it);
			it = next;
		}
		/* What this turn ACKed goes back now, a record per host. */
		s_ack_flush_all(b);
		if (b->publishing > 0 && bm_mono_ms() - b->pub_progress > S_PUB_STALL_MS) {
			s_reap(b);
		}
		(void)bm_client_flush(b->mesh);
	}
	s_ack_flush_all(b);
	return 0;
}

void
bm_bridge_stats(const bm_bridge_t *b, bm_bridge_stats_t *ret)
{
	*ret = b->st;
	ret->holding = b->inflight ? b->inflight->n : 0;
}

void
bm_bridge_destroy(bm_bridge_t **self_p)
{
	bm_bridge_t *b = self_p ? *self_p : NULL;
	s_item_t *it;

	if (b == NULL) {
		return;
	}
	b->stopping = 1;
	if (b->fetcher_up) {
		pthread_join(b->fetcher, NULL);
	}
	if (b->dir_up) {
		pthread_join(b->dirthread, NULL);
	}
	if (b->topic_up) {
		pthread_join(b->topicthread, NULL);
	}
	natsSubscription_Destroy(b->nsub);
	bm_sub_destroy(&b->tsub);
	if (b->tpub != NULL) {
		int zero = 0;

		zmq_setsockopt(b->tpub, ZMQ_LINGER, &zero, sizeof zero);
		zmq_close(b->tpub);
	}
	if (b->tctx != NULL) {
		zmq_ctx_term(b->tctx);
	}
	if (b->js != NULL) {
		jsPubOptions po;

		jsPubOptions_Init(&po);
		po.MaxWait = 1000;
		(void)js_PublishAsyncComplete(b->js, &po);
	}
	bm_bn_puller_destroy(&b->puller);
	jsCtx_Destroy(b->js);
	natsConnection_Destroy(b->nc);
	bm_client_destroy(&b->mesh);
	for (it = b->head; it != NULL;) {
		s_item_t *next = it->next;

		natsMsg_Destroy(it->msg);
		free(it);
		it = next;
	}
	if (b->inflight != NULL) {
		for (size_t i = 0; b->inflight->slot && i < b->inflight->cap; i++) {
			if (b->inflight->slot[i] != NULL) {
				natsMsg_Destroy(b->inflight->slot[i]->msg);
				free(b->inflight->slot[i]);
			}
		}
		free(b->inflight->slot);
		free(b->inflight);
	}
	if (b->pipe[0] >= 0) {
		close(b->pipe[0]);
		close(b->pipe[1]);
	}
	for (int i = 0; i < S_ACK_HOSTS; i++) {
		free(b->acks[i].body);
	}
	pthread_mutex_destroy(&b->lock);
	pthread_mutex_destroy(&b->dir_lock);
	free(b->dir_snapshot);
	free(b);
	*self_p = NULL;
}

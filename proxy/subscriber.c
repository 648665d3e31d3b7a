/*
 * subscriber.c - bm_sub_t: follows subtrees of topics through the proxy's
 * sub.sock (or, as a tap, its tap.sock), counts what it lost.
 *
 * The socket is an XSUB connected to the proxy's XPUB: subscriptions are
 * sent as "\x01" + prefix messages (libzmq replays them on reconnect), and
 * an XSUB, unlike a SUB, can also send reports upstream.  Per subscribed
 * prefix P it sends "\x01" P and then, unless this is a tap, the sync
 * request "\x01" R P (R = 0x00, its 16-hex-digit token, 'L' or 'S', '/';
 * proxy/proxy.c specifies it); replays and the sync marker come back
 * with frame 0 = R + topic.  Frames starting 0x00 with another token
 * (a subscriber to the empty prefix sees everyone's) are skipped.
 *
 * Loss accounting: per (publisher session, topic) the last tseq seen; a
 * live message whose tseq jumps by k > 1 carries gap = k - 1.  The first
 * message of a stream sets the baseline (joining mid-stream is not a
 * loss); a tseq at or below the last one is a publisher restart of that
 * topic, a new baseline.  A replayed message at or below the last seen
 * is a duplicate and skipped.  The table is bounded (S_TRACK_MAX): past
 * it, it is cleared and losses right across the clear are not seen.
 *
 * Reports: after a loss (at most every S_REPORT_MS) and on destroy the
 * subscriber sends the proxy its cumulative counts, which beast stats
 * sums as bcast_sub_received / bcast_sub_gaps.
 *
 * shm_from: the subscriber reads one local publisher's shared-memory
 * broadcast log (shm/bcastlog.c) instead of the proxy, and opens no zmq
 * socket at all.  Prefixes are matched here (the log holds every topic of
 * that publisher); a subscription is in force at once, so its SYNC event
 * comes with the next recv; messages go through the same loss accounting
 * (per topic tseq), so handlers see the same bm_bcast_t either way.  The
 * body is copied out of the log (the log may be overwritten under a slow
 * untethered reader; the copy is validated after it is made).
 *
 * shm_auto: a proxy subscriber that also reads local publishers' logs.
 * When a live message comes through the proxy from a publisher this
 * subscriber does not read yet, it looks (at most once a second per name)
 * for that publisher's log, DIR/shm/pub-NAME.sock, and attaches to it
 * (tethered with shm_tethered) if the log's session is the message's.
 * Each publisher then goes through these states, kept per session in a
 * small table (S_SRC_MAX):
 *   ATTACH asked, the publisher's WELCOME not read yet (its socket is
 *          polled; it answers when it sends or services its log): as
 *          PROXY meanwhile; no answer within S_AUTO_ATTACH_MS, or a
 *          refusal, and the entry goes (the name is looked at again
 *          later); a log of another session keeps this one on the proxy;
 *   PROXY  messages come from the proxy; `last` is the highest seq
 *          delivered, and a proxy message at or below it is dropped (it
 *          was delivered, or counted lost, while the log was read);
 *   HOLD   attached: proxy messages are still delivered; log records at
 *          or below `last` are skipped (the proxy has delivered them), the
 *          first later one the subscription follows is read and held.
 *          When the proxy reaches the held record's seq (or passes it: the
 *          record was lost on the proxy's way), the held record is
 *          delivered in its place and the publisher goes to LOG; if the
 *          proxy does not get there within S_HOLD_MS the held record is
 *          delivered anyway;
 *   LOG    records come from the log; every proxy message from this
 *          session is dropped (counted in shm_skipped).
 * A log read that fails — the publisher died (BM_EPEER, after its last
 * record), the log failed a check (BM_ECORRUPT) — closes the reader and
 * puts the publisher back to PROXY with `last` where the log left it, for
 * good for that session.  Everything a subscriber returns goes through
 * one loss accounting (per publisher session and topic, tseq), whichever
 * way it came: so across a switch, either way, no message is returned
 * twice, the per-publisher seq only grows, and a message not returned is
 * counted in a gap.  LVC replays come through the proxy and are matched
 * as ever.  Nothing here waits for a publisher.  A publisher of the
 * subscriber's own name is never attached to: it is this process's (an
 * agent's publisher and subscriber share the agent's name).
 *
 * Threading: one thread at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "bm_shm.h"
#include "proxy_private.h"

#define S_SUBS_MAX 64
#define S_TRACK_MAX (1u << 20)
#define S_REPORT_MS 100
#define S_SRC_MAX BM_SUB_FDS_MAX /* shm_auto: publishers tracked (logs read at once) */
#define S_HOLD_MS 1000        /* shm_auto: longest wait for the proxy at a switch */
#define S_PROBE_MS 1000       /* shm_auto: a name is looked for a log this often */
#define S_PROBED_MAX 4096     /* shm_auto: names remembered for that */
#define S_AUTO_ATTACH_MS 2000 /* shm_auto: a publisher's WELCOME comes within */
#define S_LOG_BATCH 64        /* shm_auto: records skipped per source and call */

enum { S_VIA_PROXY = 0, S_VIA_ATTACH, S_VIA_HOLD, S_VIA_LOG };

/* shm_auto: one publisher session and the way its messages come. */
typedef struct {
	char name[BM_NAME_MAX + 1];   /* publisher */
	uint64_t session;             /* its instance */
	int via;                      /* S_VIA_* */
	bm_bcastlog_reader_t *rd;     /* HOLD, LOG: its log */
	uint64_t last;                /* highest seq delivered or passed */
	bool held;                    /* HOLD: hrec + hbody wait for the proxy */
	bm_bcastlog_rec_t hrec;       /* the held record */
	zmq_msg_t hbody;              /* its body */
	int64_t hold_until;           /* HOLD: deliver it anyway then (mono ms) */
	int afd;                      /* ATTACH: the socket awaiting WELCOME */
	int64_t attach_until;         /* ATTACH: give up then (mono ms) */
	uint64_t used;                /* last use (s->ticks), for eviction */
} s_src_t;

struct bm_sub {
	void *ctx;                          /* zmq context */
	bool own_ctx;                       /* we made it */
	void *sock;                         /* XSUB, connected */
	char name[BM_NAME_MAX + 1];         /* shown in reports */
	char token[BM__SYNC_TOKEN_LEN + 1]; /* random, hex */
	bool no_lvc;                        /* sync requests use mode 'S' */
	bool tap;                           /* connected to tap.sock */
	size_t max_body;                    /* body cap */
	char subs[S_SUBS_MAX][BM_TOPIC_MAX + 1]; /* prefixes followed */
	int nsubs;                          /* how many */
	bm__tab_t *track;                   /* session+topic -> last tseq */
	uint8_t memo_key[8 + BM_TOPIC_MAX]; /* key of the last tracked message */
	size_t memo_klen;                   /* its length, 0 = no memo */
	void **memo_slot;                   /* its slot (valid until an insert) */
	bm_sub_stats_t st;                  /* counters */
	uint64_t reported_gaps;             /* gaps in the last report */
	uint64_t reported_received;         /* received in the last report */
	int64_t last_report_ms;             /* monotonic */
	bm_bcastlog_reader_t *rd;           /* shm_from: the publisher's log */
	int synced;                         /* shm_from: subs whose SYNC went out */
	uint8_t *scratch;                   /* shm_from, shm_auto: a record's body */
	size_t scratch_cap;                 /* its size */
	char *dir;                          /* shm_auto: runtime dir (NULL = default) */
	bool tethered;                      /* shm_auto: attach tethered */
	s_src_t *src;                       /* shm_auto: S_SRC_MAX publishers */
	int nsrc;                           /* used entries */
	int rr;                             /* next source to read first */
	unsigned turn;                      /* proxy or logs first */
	uint64_t ticks;                     /* use counter */
	bm__tab_t *probed;                  /* shm_auto: name -> next look (mono ms) */
};

#define S_SHM_ATTACH_MS 3000
#define S_SCRATCH_MIN (64u << 10)

int
bm_sub_open(const bm_sub_opts_t *opts, bm_sub_t **ret_sub)
{
	bm_sub_opts_t o = opts ? *opts : (bm_sub_opts_t){0};
	char ep[BM_PATH_MAX + 8];
	int rc, hwm = o.hwm > 0 ? o.hwm : 100000;
	uint8_t rnd[BM__SYNC_TOKEN_LEN / 2];
	bm_sub_t *s;

	if (ret_sub == NULL) {
		return -EINVAL;
	}
	if (o.name != NULL && bm_name_check(o.name) < 0) {
		return BM_EBADNAME;
	}
	if ((rc = bm__proxy_endpoint(o.dir, o.endpoint, o.tap ? "tap.sock" : "sub.sock", ep, sizeof ep)) < 0) {
		return rc;
	}
	s = calloc(1, sizeof *s);
	if (s == NULL) {
		return -ENOMEM;
	}
	if (o.name != NULL) {
		snprintf(s->name, sizeof s->name, "%s", o.name);
	} else {
		snprintf(s->name, sizeof s->name, "pid-%ld", (long)getpid());
	}
	if (sodium_init() < 0) {
		rc = -ENOMEM;
		goto fail;
	}
	randombytes_buf(rnd, sizeof rnd);
	sodium_bin2hex(s->token, sizeof s->token, rnd, sizeof rnd);
	s->no_lvc = o.no_lvc;
	s->tap = o.tap;
	s->max_body = o.max_body ? o.max_body : BM_BCAST_BODY_MAX_DEFAULT;
	s->track = bm__tab_new();
	if (s->track == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	if (o.shm_from != NULL) {
		if (o.tap) {
			rc = -EINVAL;
			goto fail;
		}
		s->scratch_cap = S_SCRATCH_MIN;
		s->scratch = malloc(s->scratch_cap);
		if (s->scratch == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
		rc = bm_bcastlog_attach(o.dir, o.shm_from, o.shm_tethered ? BM_BCASTLOG_TETHERED : 0,
		                        S_SHM_ATTACH_MS, &s->rd);
		if (rc < 0) {
			goto fail;
		}
		*ret_sub = s;
		return 0;
	}
	if (o.shm_auto && !o.tap && o.endpoint == NULL) {
		s->scratch_cap = S_SCRATCH_MIN;
		s->scratch = malloc(s->scratch_cap);
		s->src = calloc(S_SRC_MAX, sizeof *s->src);
		s->probed = bm__tab_new();
		s->dir = o.dir != NULL ? strdup(o.dir) : NULL;
		s->tethered = o.shm_tethered;
		if (s->scratch == NULL || s->src == NULL || s->probed == NULL ||
		    (o.dir != NULL && s->dir == NULL)) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	s->own_ctx = o.zmq_ctx == NULL;
	s->ctx = o.zmq_ctx ? o.zmq_ctx : zmq_ctx_new();
	if (s->track == NULL || s->ctx == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	s->sock = zmq_socket(s->ctx, ZMQ_XSUB);
	if (s->sock == NULL) {
		rc = bm__pzerr();
		goto fail;
	}
	if (zmq_setsockopt(s->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) < 0) {
		rc = bm__pzerr();
		goto fail;
	}
	if ((o.key_file != NULL || o.server_key_file != NULL) &&
	    (rc = bm_curve_client(s->sock, o.key_file, o.server_key_file)) < 0) {
		goto fail;
	}
	if (zmq_connect(s->sock, ep) < 0) {
		rc = bm__pzerr();
		goto fail;
	}
	*ret_sub = s;
	return 0;
fail:
	bm_sub_destroy(&s);
	return rc;
}

static void
s_report(bm_sub_t *s)
{
	bm__report_t r = {.name = s->name, .name_len = strlen(s->name), .token = s->token,
	                  .received = s->st.received, .gaps = s->st.gaps};
	uint8_t buf[BM__REPORT_MAX];
	int n;

	if (s->tap) {
		return;
	}
	n = bm__report_encode(&r, buf, sizeof buf);
	/* Advisory: a full upstream pipe skips it; the next one carries the
	 * same cumulative counts. */
	if (n > 0 && zmq_send(s->sock, buf, (size_t)n, ZMQ_DONTWAIT) >= 0) {
		s->reported_gaps = s->st.gaps;
		s->reported_received = s->st.received;
	}
	s->last_report_ms = bm_mono_ms();
}

void
bm_sub_destroy(bm_sub_t **self_p)
{
	bm_sub_t *s;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	s = *self_p;
	if (s->sock != NULL) {
		int linger = 500;

		if (s->st.received != s->reported_received || s->st.gaps != s->reported_gaps) {
			s_report(s);
		}
		/* XSUB defaults to linger 0, which would lose the report. */
		zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
		zmq_close(s->sock);
	}
	if (s->own_ctx && s->ctx != NULL) {
		zmq_ctx_term(s->ctx);
	}
	bm_bcastlog_reader_destroy(&s->rd);
	for (int i = 0; i < s->nsrc; i++) {
		if (s->src[i].via == S_VIA_ATTACH) {
			close(s->src[i].afd);
		}
		bm_bcastlog_reader_destroy(&s->src[i].rd);
		if (s->src[i].held) {
			zmq_msg_close(&s->src[i].hbody);
		}
	}
	free(s->src);
	free(s->dir);
	bm__tab_destroy(&s->probed);
	free(s->scratch);
	bm__tab_destroy(&s->track);
	free(s);
	*self_p = NULL;
}

static int
s_send_sub(bm_sub_t *s, uint8_t op, bool request, const char *prefix, size_t plen)
{
	uint8_t buf[1 + BM__SYNC_HEAD + BM_TOPIC_MAX];
	size_t n = 0;

	buf[n++] = op;
	if (request) {
		buf[n++] = 0x00;
		memcpy(buf + n, s->token, BM__SYNC_TOKEN_LEN);
		n += BM__SYNC_TOKEN_LEN;
		buf[n++] = s->no_lvc ? BM__SYNC_MODE_SYNC : BM__SYNC_MODE_LVC;
		buf[n++] = '/';
	}
	memcpy(buf + n, prefix, plen);
	n += plen;
	if (zmq_send(s->sock, buf, n, 0) < 0) {
		return bm__pzerr();
	}
	return 0;
}

int
bm_sub_subscribe(bm_sub_t *s, const char *prefix)
{
	char p[BM_TOPIC_MAX + 2];
	int len, rc;

	if (s == NULL || prefix == NULL) {
		return -EINVAL;
	}
	if ((len = bm_topic_normalize(prefix, true, p, sizeof p)) < 0) {
		return len == -ENOSPC ? BM_EBADNAME : len;
	}
	if (s->nsubs == S_SUBS_MAX) {
		return -ENOSPC;
	}
	if (s->rd != NULL) {
		memcpy(s->subs[s->nsubs++], p, (size_t)len + 1);
		return 0;
	}
	/* The plain subscription first: the proxy handles both in order, so
	 * by the sync marker the prefix is in force. */
	if ((rc = s_send_sub(s, 1, false, p, (size_t)len)) < 0) {
		return rc;
	}
	if (!s->tap && (rc = s_send_sub(s, 1, true, p, (size_t)len)) < 0) {
		return rc;
	}
	memcpy(s->subs[s->nsubs++], p, (size_t)len + 1);
	return 0;
}

int
bm_sub_unsubscribe(bm_sub_t *s, const char *prefix)
{
	char p[BM_TOPIC_MAX + 2];
	int len;

	if (s == NULL || prefix == NULL) {
		return -EINVAL;
	}
	if ((len = bm_topic_normalize(prefix, true, p, sizeof p)) < 0) {
		return len == -ENOSPC ? BM_EBADNAME : len;
	}
	for (int i = 0; i < s->nsubs; i++) {
		if (strcmp(s->subs[i], p) == 0) {
			memmove(s->subs[i], s->subs[i + 1], (size_t)(s->nsubs - i - 1) * sizeof s->subs[0]);
			s->nsubs--;
			if (s->rd != NULL) {
				s->synced -= i < s->synced;
				return 0;
			}
			return s_send_sub(s, 0, false, p, (size_t)len);
		}
	}
	return -ENOENT;
}

void
bm_bcast_clear(bm_bcast_t *m)
{
	if (m != NULL && m->kind != 0) {
		zmq_msg_close(&m->body);
		m->kind = 0;
	}
}

/* ---- shm_auto: publishers read from their logs ---- */

static bool s_followed(const bm_sub_t *s, const char *topic);

static s_src_t *
s_src_find(bm_sub_t *s, uint64_t session)
{
	for (int i = 0; i < s->nsrc; i++) {
		if (s->src[i].session == session) {
			return &s->src[i];
		}
	}
	return NULL;
}

/* A free entry, or the least recently used one of a publisher back on
 * the proxy; NULL when every entry reads a log. */
static s_src_t *
s_src_slot(bm_sub_t *s)
{
	s_src_t *old = NULL;

	if (s->nsrc < S_SRC_MAX) {
		return &s->src[s->nsrc++];
	}
	for (int i = 0; i < s->nsrc; i++) {
		if (s->src[i].session == 0 && s->src[i].via == S_VIA_PROXY) {
			return &s->src[i]; /* freed */
		}
	}
	for (int i = 0; i < s->nsrc; i++) {
		if (s->src[i].via == S_VIA_PROXY && (old == NULL || s->src[i].used < old->used)) {
			old = &s->src[i];
		}
	}
	return old;
}

/* Looks for the log of the publisher of m (a live proxy message) and
 * attaches to it: its entry starts in HOLD. */
static void
s_discover(bm_sub_t *s, const bm_bcast_t *m)
{
	size_t nlen = strlen(m->from);
	int64_t now = bm_mono_ms();
	s_src_t *src;
	void **slot;
	bool fresh;
	int rc, fd;

	/* Our own name is our own publisher (an agent's pub and sub share
	 * it): attaching would wait for an answer only this thread gives. */
	if (nlen == 0 || strcmp(m->from, s->name) == 0) {
		return;
	}
	if (bm__tab_size(s->probed) >= S_PROBED_MAX && bm__tab_get(s->probed, m->from, nlen) == NULL) {
		bm__tab_clear(s->probed);
	}
	slot = bm__tab_slot(s->probed, m->from, nlen, &fresh);
	if (slot == NULL || (!fresh && (int64_t)(intptr_t)*slot > now)) {
		return;
	}
	*slot = (void *)(intptr_t)(now + S_PROBE_MS);
	rc = bm_bcastlog_attach_start(s->dir, m->from, s->tethered ? BM_BCASTLOG_TETHERED : 0, &fd);
	if (rc < 0) {
		/* No log (the common case) is not worth a count. */
		if (rc != -ENOENT && rc != -ECONNREFUSED) {
			s->st.shm_refused++;
			bm_debug("sub: %s's shared-memory log refused us: %s", m->from, bm_strerror(rc));
		}
		return;
	}
	if ((src = s_src_slot(s)) == NULL) {
		close(fd);
		return;
	}
	if (src->held) {
		zmq_msg_close(&src->hbody);
	}
	*src = (s_src_t){.session = m->session, .via = S_VIA_ATTACH, .afd = fd,
	                 .attach_until = now + S_AUTO_ATTACH_MS, .used = ++s->ticks};
	snprintf(src->name, sizeof src->name, "%s", m->from);
}

/* ATTACH: reads the publisher's answer if it came (never waits).  Until
 * then, and when it fails, the publisher stays on the proxy. */
static void
s_attach_poll(bm_sub_t *s, s_src_t *src, int64_t now)
{
	bm_bcastlog_reader_t *rd = NULL;
	int rc = bm_bcastlog_attach_finish(src->afd, s->tethered ? BM_BCASTLOG_TETHERED : 0, &rd);

	if (rc == -EAGAIN && now < src->attach_until) {
		return;
	}
	if (rc == -EAGAIN) {
		close(src->afd);
		rc = -ETIMEDOUT;
	}
	src->afd = -1;
	if (rc < 0) {
		/* The entry goes: the name is looked at again later. */
		bm_debug("sub: %s's shared-memory log: %s", src->name, bm_strerror(rc));
		s->st.shm_refused++;
		*src = (s_src_t){.via = S_VIA_PROXY, .afd = -1};
		return;
	}
	/* Another instance under the name: its sequence is not this one's.
	 * This session stays on the proxy. */
	if (bm_bcastlog_reader_session(rd) != src->session ||
	    strcmp(bm_bcastlog_reader_from(rd), src->name) != 0) {
		bm_bcastlog_reader_destroy(&rd);
		s->st.shm_refused++;
		src->via = S_VIA_PROXY;
		return;
	}
	src->rd = rd;
	src->via = S_VIA_HOLD;
	s->st.shm_attached++;
}

/* The held record becomes m; the publisher goes to LOG. */
static void
s_take_held(bm_sub_t *s, s_src_t *src, bm_bcast_t *m)
{
	memset(m, 0, sizeof *m);
	memcpy(m->topic, src->hrec.topic, sizeof m->topic);
	snprintf(m->from, sizeof m->from, "%s", src->name);
	m->session = src->session;
	m->seq = src->hrec.seq;
	m->tseq = src->hrec.tseq;
	m->ts_ms = src->hrec.ts_ms;
	zmq_msg_init(&m->body);
	zmq_msg_move(&m->body, &src->hbody);
	zmq_msg_close(&src->hbody);
	src->held = false;
	src->via = S_VIA_LOG;
	src->last = m->seq;
	s->st.shm_received++;
}

/* The log failed (err): back to the proxy for good for this session. */
static void
s_fallback(bm_sub_t *s, s_src_t *src, int err)
{
	bm_debug("sub: %s's shared-memory log: %s; back to the proxy", src->name, bm_strerror(err));
	bm_bcastlog_reader_destroy(&src->rd);
	if (src->held) {
		zmq_msg_close(&src->hbody);
		src->held = false;
	}
	src->via = S_VIA_PROXY;
	s->st.shm_fallbacks++;
	s->st.shm_corrupt += err == BM_ECORRUPT;
}

/* The proxy's side of a live message m from a publisher: 1 return it,
 * 0 drop it, 2 return the held log record instead (m refilled). */
static int
s_gate(bm_sub_t *s, bm_bcast_t *m)
{
	s_src_t *src = s_src_find(s, m->session);

	if (src == NULL) {
		s_discover(s, m);
		if ((src = s_src_find(s, m->session)) == NULL) {
			return 1;
		}
	}
	src->used = ++s->ticks;
	if (src->via == S_VIA_LOG || m->seq <= src->last) {
		return 0;
	}
	if (src->via == S_VIA_HOLD && src->held && m->seq >= src->hrec.seq) {
		/* The proxy has caught up with the log (or lost the held
		 * record on its way): the log goes on from here. */
		s_take_held(s, src, m);
		return 2;
	}
	src->last = m->seq;
	return 1;
}

/* Fills m from a log record of src; false when the subscription does not
 * follow it. */
static bool
s_from_rec(bm_sub_t *s, s_src_t *src, const bm_bcastlog_rec_t *rec, bm_bcast_t *m)
{
	if (!s_followed(s, rec->topic) || bm_topic_check(rec->topic, strlen(rec->topic), false) < 0 ||
	    rec->len > s->max_body) {
		return false;
	}
	memset(m, 0, sizeof *m);
	memcpy(m->topic, rec->topic, sizeof m->topic);
	snprintf(m->from, sizeof m->from, "%s", src->name);
	m->session = src->session;
	m->seq = rec->seq;
	m->tseq = rec->tseq;
	m->ts_ms = rec->ts_ms;
	if (zmq_msg_init_size(&m->body, rec->len) < 0) {
		zmq_msg_init(&m->body);
		return false;
	}
	if (rec->len > 0) {
		memcpy(zmq_msg_data(&m->body), s->scratch, rec->len);
	}
	return true;
}

/* The next message from the logs: 1 = *m filled, 0 = none now. */
static int
s_from_logs(bm_sub_t *s, bm_bcast_t *m)
{
	int64_t now = -1;

	for (int k = 0; k < s->nsrc; k++) {
		int i = (s->rr + k) % s->nsrc;
		s_src_t *src = &s->src[i];

		if (src->via == S_VIA_PROXY) {
			continue;
		}
		if (src->via == S_VIA_ATTACH) {
			if (now < 0) {
				now = bm_mono_ms();
			}
			s_attach_poll(s, src, now);
			continue;
		}
		if (src->held) {
			if (now < 0) {
				now = bm_mono_ms();
			}
			if (now < src->hold_until) {
				continue;
			}
			/* The proxy did not get there in time: whatever it still
			 * brings from below is dropped and counted lost. */
			s_take_held(s, src, m);
			s->rr = i + 1;
			return 1;
		}
		for (int n = 0; n < S_LOG_BATCH; n++) {
			bm_bcastlog_rec_t rec;
			int rc = bm_bcastlog_read(src->rd, s->scratch, s->scratch_cap, 0, &rec);

			if (rc == -EMSGSIZE) {
				uint8_t *b = realloc(s->scratch, rec.len);

				if (b == NULL) {
					s_fallback(s, src, -ENOMEM);
					break;
				}
				s->scratch = b;
				s->scratch_cap = rec.len;
				continue; /* the record is still unread */
			}
			if (rc == -EAGAIN) {
				break;
			}
			if (rc < 0) {
				s_fallback(s, src, rc);
				break;
			}
			if (rec.seq <= src->last) {
				continue; /* the proxy delivered it */
			}
			if (src->via == S_VIA_LOG) {
				src->last = rec.seq;
			}
			if (!s_from_rec(s, src, &rec, m)) {
				continue;
			}
			if (src->via == S_VIA_HOLD) {
				src->hrec = rec;
				zmq_msg_init(&src->hbody);
				zmq_msg_move(&src->hbody, &m->body);
				zmq_msg_close(&m->body);
				src->held = true;
				src->hold_until = (now < 0 ? bm_mono_ms() : now) + S_HOLD_MS;
				break;
			}
			s->st.shm_received++;
			s->rr = i + 1;
			return 1;
		}
	}
	return 0;
}

/* Loss accounting for one message; false when it is a duplicate. */
static bool
s_track(bm_sub_t *s, bm_bcast_t *m)
{
	uint8_t key[8 + BM_TOPIC_MAX];
	size_t tlen = strlen(m->topic);
	void **slot;
	bool fresh;
	uint64_t last;

	memcpy(key, &m->session, 8);
	memcpy(key + 8, m->topic, tlen);
	/* A stream repeats one (publisher, topic): the memo skips the hash.
	 * Slots move only when the table grows or is cleared, i.e. on a
	 * fresh insert, which always renews the memo. */
	if (s->memo_klen == 8 + tlen && memcmp(s->memo_key, key, 8 + tlen) == 0) {
		slot = s->memo_slot;
		fresh = false;
	} else {
		if (bm__tab_size(s->track) >= S_TRACK_MAX &&
		    bm__tab_get(s->track, key, 8 + tlen) == NULL) {
			bm__tab_clear(s->track);
		}
		slot = bm__tab_slot(s->track, key, 8 + tlen, &fresh);
		if (slot == NULL) {
			s->memo_klen = 0;
			return true;
		}
		memcpy(s->memo_key, key, 8 + tlen);
		s->memo_klen = 8 + tlen;
		s->memo_slot = slot;
	}
	last = (uint64_t)(uintptr_t)*slot;
	if (!fresh) {
		if (m->tseq <= last) {
			if (m->replay) {
				return false;
			}
		} else if (m->tseq > last + 1) {
			m->gap = m->tseq - last - 1;
			s->st.gaps += m->gap;
		}
	}
	*slot = (void *)(uintptr_t)m->tseq;
	return true;
}

/* Parses one received message (n frames in f).  1 = *m filled, 0 =
 * skipped. */
static int
s_parse(bm_sub_t *s, zmq_msg_t *f, int n, bm_bcast_t *m)
{
	const uint8_t *f0 = zmq_msg_data(&f[0]);
	size_t f0len = zmq_msg_size(&f[0]), off = 0, tlen, blen;
	bm__hdr_t h;
	int hlen;

	memset(m, 0, sizeof *m);
	if (n < 1 || n > 2) {
		s->st.malformed++;
		return 0;
	}
	if (f0len > 0 && f0[0] == 0x00) {
		if (f0len < BM__SYNC_HEAD) {
			s->st.malformed++;
			return 0;
		}
		if (s->tap || memcmp(f0 + 1, s->token, BM__SYNC_TOKEN_LEN) != 0) {
			return 0; /* another subscriber's replay or sync */
		}
		off = BM__SYNC_HEAD;
		m->replay = true;
	}
	tlen = bm__topic_span(f0 + off, f0len - off);
	hlen = bm__hdr_decode(f0 + off + tlen, f0len - off - tlen, &h);
	if (hlen < 0 || bm_topic_check((const char *)f0 + off, tlen, m->replay) < 0) {
		s->st.malformed++;
		return 0;
	}
	/* The body: the rest of frame 0, or all of frame 1 (then frame 0 must
	 * end with the header). */
	blen = n == 2 ? zmq_msg_size(&f[1]) : f0len - off - tlen - (size_t)hlen;
	if ((n == 2 && off + tlen + (size_t)hlen != f0len) || blen > s->max_body) {
		s->st.malformed++;
		return 0;
	}
	memcpy(m->topic, f0 + off, tlen);
	m->topic[tlen] = '\0';
	if (h.flags & BM__HDR_FLAG_SYNC) {
		if (!m->replay || blen > 0) {
			s->st.malformed++;
			return 0;
		}
		/* The request subscription has done its job. */
		(void)s_send_sub(s, 0, true, m->topic, tlen);
		m->kind = BM_BCAST_SYNC;
		m->replay = false;
		s->st.syncs++;
		zmq_msg_init(&m->body);
		return 1;
	}
	if (m->replay && tlen == 0) {
		s->st.malformed++;
		return 0;
	}
	memcpy(m->from, h.from, h.from_len);
	m->from[h.from_len] = '\0';
	m->session = h.session;
	m->seq = h.seq;
	m->tseq = h.tseq;
	m->ts_ms = h.ts_ms;
	if (s->src != NULL && !m->replay) {
		int r = s_gate(s, m);

		if (r == 0) {
			s->st.shm_skipped++;
			return 0;
		}
		if (r == 2) {
			(void)s_track(s, m);
			m->kind = BM_BCAST_MSG;
			s->st.received++;
			return 1;
		}
	}
	if (!s_track(s, m)) {
		s->st.dups++;
		return 0;
	}
	m->kind = BM_BCAST_MSG;
	s->st.received++;
	s->st.replayed += m->replay;
	zmq_msg_init(&m->body);
	if (n == 2) {
		zmq_msg_move(&m->body, &f[1]);
	} else {
		zmq_msg_move(&m->body, &f[0]);
		m->body_off = off + tlen + (size_t)hlen;
	}
	return 1;
}

static bool
s_followed(const bm_sub_t *s, const char *topic)
{
	for (int i = 0; i < s->nsubs; i++) {
		if (bm_topic_matches(s->subs[i], topic)) {
			return true;
		}
	}
	return false;
}

/* shm_from: the next message from the log that a prefix follows. */
static int
s_recv_shm(bm_sub_t *s, int timeout_ms, bm_bcast_t *m)
{
	int64_t deadline = timeout_ms < 0 ? INT64_MAX : bm_mono_ms() + timeout_ms;
	bm_bcastlog_rec_t rec;

	memset(m, 0, sizeof *m);
	if (s->synced < s->nsubs) {
		/* Matched here: in force as soon as it is made. */
		snprintf(m->topic, sizeof m->topic, "%s", s->subs[s->synced++]);
		m->kind = BM_BCAST_SYNC;
		s->st.syncs++;
		zmq_msg_init(&m->body);
		return 0;
	}
	for (;;) {
		int64_t left = deadline - bm_mono_ms();
		int rc = bm_bcastlog_read(s->rd, s->scratch, s->scratch_cap,
		                          timeout_ms < 0 ? -1 : (left > 0 ? (int)left : 0), &rec);

		if (rc == -EMSGSIZE) {
			uint8_t *b = realloc(s->scratch, rec.len);

			if (b == NULL) {
				return -ENOMEM;
			}
			s->scratch = b;
			s->scratch_cap = rec.len;
			continue;
		}
		if (rc == -EAGAIN) {
			return -ETIMEDOUT;
		}
		if (rc == BM_EPEER) {
			return -ESHUTDOWN;
		}
		if (rc < 0) {
			return rc;
		}
		if (!s_followed(s, rec.topic) || bm_topic_check(rec.topic, strlen(rec.topic), false) < 0 ||
		    rec.len > s->max_body) {
			continue;
		}
		memcpy(m->topic, rec.topic, sizeof m->topic);
		snprintf(m->from, sizeof m->from, "%s", bm_bcastlog_reader_from(s->rd));
		m->session = bm_bcastlog_reader_session(s->rd);
		m->seq = rec.seq;
		m->tseq = rec.tseq;
		m->ts_ms = rec.ts_ms;
		(void)s_track(s, m);
		if (zmq_msg_init_size(&m->body, rec.len) < 0) {
			return -ENOMEM;
		}
		if (rec.len > 0) {
			memcpy(zmq_msg_data(&m->body), s->scratch, rec.len);
		}
		m->kind = BM_BCAST_MSG;
		s->st.received++;
		return 0;
	}
}

int
bm_sub_arm(bm_sub_t *s)
{
	if (s == NULL || (s->rd == NULL && s->src == NULL)) {
		return -EINVAL;
	}
	if (s->rd != NULL) {
		return s->synced < s->nsubs ? 1 : bm_bcastlog_reader_arm(s->rd);
	}
	for (int i = 0; i < s->nsrc; i++) {
		if (s->src[i].via == S_VIA_PROXY || s->src[i].via == S_VIA_ATTACH) {
			continue; /* ATTACH: its socket is among the fds */
		}
		if (s->src[i].held ? bm_mono_ms() >= s->src[i].hold_until
		                   : bm_bcastlog_reader_arm(s->src[i].rd) != 0) {
			return 1;
		}
	}
	return 0;
}

int
bm_sub_fd(const bm_sub_t *s)
{
	if (s == NULL || s->rd == NULL) {
		return -EINVAL;
	}
	return bm_bcastlog_reader_fd(s->rd);
}

int
bm_sub_fds(const bm_sub_t *s, int *fds, int max)
{
	int n = 0;

	if (s == NULL || fds == NULL || max < 0) {
		return -EINVAL;
	}
	if (s->rd != NULL && n < max) {
		fds[n++] = bm_bcastlog_reader_fd(s->rd);
	}
	for (int i = 0; i < s->nsrc && n < max; i++) {
		if (s->src[i].via == S_VIA_ATTACH) {
			fds[n++] = s->src[i].afd;
		} else if (s->src[i].via != S_VIA_PROXY && !s->src[i].held) {
			fds[n++] = bm_bcastlog_reader_fd(s->src[i].rd);
		}
	}
	return n;
}

int
bm_sub_timeout(const bm_sub_t *s)
{
	int64_t now = -1, t = -1;

	for (int i = 0; s != NULL && i < s->nsrc; i++) {
		bool attaching = s->src[i].via == S_VIA_ATTACH;

		if (attaching || (s->src[i].via != S_VIA_PROXY && s->src[i].held)) {
			int64_t left;

			if (now < 0) {
				now = bm_mono_ms();
			}
			left = (attaching ? s->src[i].attach_until : s->src[i].hold_until) - now;
			left = left < 0 ? 0 : left;
			t = t < 0 || left < t ? left : t;
		}
	}
	return (int)t;
}

/* shm_auto: the next message from the logs, accounted. */
static bool
s_recv_logs(bm_sub_t *s, bm_bcast_t *m)
{
	if (s->src == NULL || s->nsrc == 0 || !s_from_logs(s, m)) {
		return false;
	}
	(void)s_track(s, m);
	m->kind = BM_BCAST_MSG;
	s->st.received++;
	return true;
}

/* shm_auto: waits up to ms on the proxy socket and the logs. */
static int
s_poll_all(bm_sub_t *s, long ms)
{
	zmq_pollitem_t it[1 + S_SRC_MAX];
	int n = 0, t = bm_sub_timeout(s);

	it[n++] = (zmq_pollitem_t){.socket = s->sock, .events = ZMQ_POLLIN};
	for (int i = 0; i < s->nsrc; i++) {
		if (s->src[i].via == S_VIA_ATTACH) {
			it[n++] = (zmq_pollitem_t){.fd = s->src[i].afd, .events = ZMQ_POLLIN};
			continue;
		}
		if (s->src[i].via == S_VIA_PROXY || s->src[i].held) {
			continue;
		}
		if (bm_bcastlog_reader_arm(s->src[i].rd) != 0) {
			return 0;
		}
		it[n++] = (zmq_pollitem_t){.fd = bm_bcastlog_reader_fd(s->src[i].rd), .events = ZMQ_POLLIN};
	}
	if (t >= 0 && (ms < 0 || t < ms)) {
		ms = t;
	}
	return zmq_poll(it, n, ms) < 0 ? bm__pzerr() : 0;
}

int
bm_sub_recv(bm_sub_t *s, int timeout_ms, bm_bcast_t *ret)
{
	int64_t deadline = timeout_ms < 0 ? INT64_MAX : bm_mono_ms() + timeout_ms;

	if (s == NULL || ret == NULL) {
		return -EINVAL;
	}
	if (s->rd != NULL) {
		return s_recv_shm(s, timeout_ms, ret);
	}
	for (;;) {
		zmq_msg_t f[2];
		int n, got;

		/* Logs and proxy take turns first, so neither starves. */
		if ((++s->turn & 1) && s_recv_logs(s, ret)) {
			return 0;
		}
		n = bm__recv_parts(s->sock, f, 2, ZMQ_DONTWAIT);
		if (n == -EAGAIN && s_recv_logs(s, ret)) {
			return 0;
		}
		if (n == -EAGAIN) {
			zmq_pollitem_t it = {.socket = s->sock, .events = ZMQ_POLLIN};
			int64_t now = bm_mono_ms(), left = deadline - now;

			if (s->st.gaps != s->reported_gaps && now - s->last_report_ms >= S_REPORT_MS) {
				s_report(s);
			}
			if (left <= 0) {
				return -ETIMEDOUT;
			}
			if (s->st.gaps != s->reported_gaps && left > S_REPORT_MS) {
				left = S_REPORT_MS;
			}
			if (s->src != NULL) {
				int rc = s_poll_all(s, timeout_ms < 0 && left > INT32_MAX ? -1 : (long)left);

				if (rc < 0) {
					return rc;
				}
			} else if (zmq_poll(&it, 1, timeout_ms < 0 && left > INT32_MAX ? -1 : (long)left) < 0) {
				return bm__pzerr();
			}
			continue;
		}
		if (n < 0) {
			return n;
		}
		got = s_parse(s, f, n, ret);
		bm__close_parts(f, n < 2 ? n : 2);
		if (got) {
			if (ret->gap > 0 && bm_mono_ms() - s->last_report_ms >= S_REPORT_MS) {
				s_report(s);
			}
			return 0;
		}
	}
}

void *
bm_sub_socket(bm_sub_t *s)
{
	return s ? s->sock : NULL;
}

void
bm_sub_stats(const bm_sub_t *s, bm_sub_stats_t *ret)
{
	if (s != NULL && ret != NULL) {
		*ret = s->st;
	}
}

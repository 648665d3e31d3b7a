/*
 * proxy.c - the broadcast proxy inside beastd: XSUB -> XPUB with thought
 * path topics, a last-value cache (LVC), a tap and a control pipe.
 *
 * Sockets (all in the 0700 runtime directory, files chmod 0600):
 *
 *   ipc://DIR/pub.sock  XSUB, bound.  Publishers connect (XPUB or PUB).
 *                       The proxy subscribes to everything ("\x01" once),
 *                       so every publisher sends it every message: the LVC
 *                       must see topics nobody follows yet, and a new
 *                       subscription never waits for a publisher to learn
 *                       of it (no slow joiner between proxy and
 *                       publishers).  Subscriptions are not forwarded up.
 *   ipc://DIR/sub.sock  XPUB, bound, ZMQ_XPUB_VERBOSE.  Subscribers
 *                       connect (XSUB or SUB); matching is libzmq's.
 *   ipc://DIR/tap.sock  XPUB, bound.  The capture: a copy of every message
 *                       forwarded, made only while someone is subscribed.
 *   --pub-tcp/--sub-tcp optional loopback tcp endpoints on the same
 *                       XSUB/XPUB.
 *   inproc control      PAIR: pause, resume, stats, stop from the owner.
 *
 * The wire format (frames, header, sync requests, subscriber reports) is
 * specified in wire.c, beside its codec; docs/protocol.md "Broadcast" is
 * its twin.  Anything else arriving on pub.sock (other frame counts, a bad
 * topic, a header not starting 0x97 0x02, a body over the cap) is counted
 * as malformed and dropped; the proxy goes on.
 *
 * LVC: topic -> the frames of its latest message, shared with the
 * forwarded message by libzmq's reference counting (no copy for frames
 * over 33 bytes), in least-recently-updated order; the oldest are evicted
 * past lvc_max_bytes or lvc_max_topics.
 *
 * Pause stops reading pub.sock: publishers' queues fill and their own
 * high-water marks apply (bm_pub_send then returns BM_EFULL); nothing is
 * dropped by the proxy.
 *
 * Threading: bm_proxy_open binds every socket on the caller's thread (so
 * errors are reported there) and starts the proxy thread, which alone
 * uses the data sockets until stop.  The owner uses only its end of the
 * control pipe; the proxy answers between batches of at most S_BATCH
 * messages, so pause, stats and stop are prompt under load.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy_private.h"

#define S_BATCH 1024
#define S_CTL_TIMEOUT_MS 5000
#define S_REPORTS_MAX 4096
#define S_LVC_BYTES_DEFAULT (64u << 20)
#define S_LVC_TOPICS_DEFAULT 10000
#define S_LVC_OVERHEAD 96 /* per-entry bookkeeping counted in lvc_bytes */

/* X(field): counters, reported as "bcast_<field>" in this order. */
#define S_STATS(X)                                                            \
	X(in)            /* messages read from publishers */                   \
	X(out)           /* messages forwarded to subscribers */               \
	X(malformed)     /* frames dropped as malformed (either side) */       \
	X(paused)        /* 1 while paused */                                  \
	X(subscribes)    /* subscriptions seen (verbose) */                    \
	X(lvc_topics)    /* topics cached */                                   \
	X(lvc_bytes)     /* bytes held by the cache */                         \
	X(lvc_evicted)   /* topics evicted by the bounds */                    \
	X(lvc_replayed)  /* cached messages replayed to late joiners */        \
	X(syncs)         /* sync markers sent */                               \
	X(tapped)        /* messages copied to the tap */                      \
	X(taps)          /* distinct tap subscriptions in force */             \
	X(sub_reports)   /* subscriber reports received */                     \
	X(sub_received)  /* sum of subscribers' received counts */             \
	X(sub_gaps)      /* sum of subscribers' known losses */

typedef struct {
#define S_FIELD(n) uint64_t n;
	S_STATS(S_FIELD)
#undef S_FIELD
} s_stats_t;

typedef struct s_lvc {
	struct s_lvc *prev;              /* older */
	struct s_lvc *next;              /* newer */
	zmq_msg_t f[2];                  /* the message's frames (shared) */
	int nf;                          /* 1 or 2 */
	size_t bytes;                    /* what it counts in lvc_bytes */
	uint64_t msgs;                   /* broadcasts on it since cached */
	uint64_t msg_bytes;              /* their bytes */
	size_t tlen;                     /* topic length */
	char topic[BM_TOPIC_MAX + 1];    /* the key, NUL-terminated */
} s_lvc_t;

typedef struct {
	uint64_t received;               /* last reported */
	uint64_t gaps;                   /* last reported */
} s_report_t;

struct bm_proxy {
	void *ctx;                       /* zmq context (czmq's with curve) */
	bool own_ctx;                    /* ctx is ours to terminate */
	int curve_refs;                  /* bm_curve_server references held */
	void *xsub;                      /* publishers */
	void *xpub;                      /* subscribers */
	void *tap;                       /* capture */
	void *ctl;                       /* proxy's end of the control pipe */
	void *ctl_owner;                 /* owner's end */
	pthread_t thread;                /* the proxy thread */
	bool started;                    /* thread is running */
	uint32_t ctl_id;                 /* last request id (owner) */
	char dir[BM_PATH_MAX];           /* runtime directory */
	char pub_path[BM_PATH_MAX];      /* DIR/pub.sock */
	char sub_path[BM_PATH_MAX];      /* DIR/sub.sock */
	char tap_path[BM_PATH_MAX];      /* DIR/tap.sock */
	/* proxy thread only: */
	bool paused;                     /* not reading publishers */
	bool lvc_on;                     /* cache enabled */
	size_t lvc_max_bytes;            /* bound */
	size_t lvc_max_topics;           /* bound */
	size_t max_body;                 /* body cap */
	bm__tab_t *lvc;                  /* topic -> s_lvc_t */
	s_lvc_t *lru_old;                /* least recently updated */
	s_lvc_t *lvc_last;               /* entry updated last (a stream repeats it) */
	s_lvc_t *lru_new;                /* most recently updated */
	bm__tab_t *reports;              /* token -> s_report_t */
	s_stats_t st;                    /* counters */
};

/* ---- last-value cache ---- */

static void
s_lru_unlink(bm_proxy_t *p, s_lvc_t *e)
{
	if (e->prev != NULL) {
		e->prev->next = e->next;
	} else {
		p->lru_old = e->next;
	}
	if (e->next != NULL) {
		e->next->prev = e->prev;
	} else {
		p->lru_new = e->prev;
	}
	e->prev = e->next = NULL;
}

static void
s_lru_append(bm_proxy_t *p, s_lvc_t *e)
{
	e->prev = p->lru_new;
	e->next = NULL;
	if (p->lru_new != NULL) {
		p->lru_new->next = e;
	} else {
		p->lru_old = e;
	}
	p->lru_new = e;
}

static void
s_lvc_free(bm_proxy_t *p, s_lvc_t *e)
{
	if (p->lvc_last == e) {
		p->lvc_last = NULL;
	}
	s_lru_unlink(p, e);
	p->st.lvc_bytes -= e->bytes;
	zmq_msg_close(&e->f[0]);
	zmq_msg_close(&e->f[1]);
	free(e);
}

static void
s_lvc_evict(bm_proxy_t *p)
{
	while (p->lru_old != NULL &&
	       (p->st.lvc_bytes > p->lvc_max_bytes || bm__tab_size(p->lvc) > p->lvc_max_topics)) {
		s_lvc_t *e = p->lru_old;

		bm__tab_del(p->lvc, e->topic, e->tlen);
		s_lvc_free(p, e);
		p->st.lvc_evicted++;
	}
	p->st.lvc_topics = bm__tab_size(p->lvc);
}

/* Caches the message in f[0..n-1] whose topic is frame 0's first tlen
 * bytes. */
static void
s_lvc_put(bm_proxy_t *p, zmq_msg_t *f, int n, size_t tlen)
{
	const void *topic = zmq_msg_data(&f[0]);
	s_lvc_t *e = p->lvc_last;
	bool fresh = false;
	void **slot = NULL;

	/* A stream updates one topic over and over: skip the hash then. */
	if (e == NULL || e->tlen != tlen || memcmp(e->topic, topic, tlen) != 0) {
		slot = bm__tab_slot(p->lvc, topic, tlen, &fresh);
		if (slot == NULL) {
			return; /* out of memory: the cache is best effort */
		}
		e = fresh ? NULL : *slot;
	}
	if (fresh) {
		e = calloc(1, sizeof *e);
		if (e == NULL) {
			bm__tab_del(p->lvc, topic, tlen);
			return;
		}
		memcpy(e->topic, topic, tlen);
		e->tlen = tlen;
		zmq_msg_init(&e->f[0]);
		zmq_msg_init(&e->f[1]);
		*slot = e;
	} else {
		s_lru_unlink(p, e);
		p->st.lvc_bytes -= e->bytes;
	}
	/* zmq_msg_copy shares the buffer (reference count) for frames over
	 * 33 bytes and copies smaller ones; the forwarded message is
	 * untouched. */
	zmq_msg_copy(&e->f[0], &f[0]);
	if (n == 2) {
		zmq_msg_copy(&e->f[1], &f[1]);
	} else {
		zmq_msg_close(&e->f[1]);
		zmq_msg_init(&e->f[1]);
	}
	e->nf = n;
	e->bytes = zmq_msg_size(&f[0]) + (n == 2 ? zmq_msg_size(&f[1]) : 0) + S_LVC_OVERHEAD;
	e->msgs++;
	e->msg_bytes += e->bytes - S_LVC_OVERHEAD;
	p->st.lvc_bytes += e->bytes;
	s_lru_append(p, e);
	p->lvc_last = e;
	if (fresh || p->st.lvc_bytes > p->lvc_max_bytes) {
		s_lvc_evict(p); /* clears lvc_last if it evicts e */
	}
}

static void
s_lvc_clear(bm_proxy_t *p)
{
	while (p->lru_old != NULL) {
		s_lvc_free(p, p->lru_old);
	}
	if (p->lvc != NULL) {
		bm__tab_clear(p->lvc);
	}
	p->st.lvc_topics = 0;
}

/* ---- subscriber side ---- */

/* Sends f[0..n-1] as one message; the frames are taken on success. */
static int
s_send_parts(void *sock, zmq_msg_t *f, int n)
{
	for (int i = 0; i < n; i++) {
		if (zmq_msg_send(&f[i], sock, (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
			return bm__pzerr();
		}
	}
	return 0;
}

/* To one subscriber: [R + a + b] or, with f1, [R + a + b, f1]. */
static void
s_send_to(bm_proxy_t *p, const uint8_t *req, const void *a, size_t alen, const void *b,
          size_t blen, zmq_msg_t *f1)
{
	zmq_msg_t f[2];
	uint8_t *d;

	if (zmq_msg_init_size(&f[0], BM__SYNC_HEAD + alen + blen) < 0) {
		return;
	}
	d = zmq_msg_data(&f[0]);
	memcpy(d, req, BM__SYNC_HEAD);
	memcpy(d + BM__SYNC_HEAD, a, alen);
	if (blen > 0) {
		memcpy(d + BM__SYNC_HEAD + alen, b, blen);
	}
	zmq_msg_init(&f[1]);
	if (f1 != NULL) {
		zmq_msg_copy(&f[1], f1);
	}
	(void)s_send_parts(p->xpub, f, f1 != NULL ? 2 : 1);
	bm__close_parts(f, 2);
}

/* "\x01" R P: replay (mode 'L') then the sync marker. */
static void
s_on_sync_request(bm_proxy_t *p, const uint8_t *req, size_t len)
{
	const char *prefix = (const char *)req + BM__SYNC_HEAD;
	size_t plen = len - BM__SYNC_HEAD;
	uint8_t hbuf[BM__HDR_MAX];
	bm__hdr_t h = {.from = "", .flags = BM__HDR_FLAG_SYNC, .ts_ms = bm_wall_ms()};
	int n;

	for (int i = 1; i <= BM__SYNC_TOKEN_LEN; i++) {
		if (!((req[i] >= '0' && req[i] <= '9') || (req[i] >= 'a' && req[i] <= 'f'))) {
			p->st.malformed++;
			return;
		}
	}
	if ((req[17] != BM__SYNC_MODE_LVC && req[17] != BM__SYNC_MODE_SYNC) || req[18] != '/' ||
	    bm_topic_check(prefix, plen, true) < 0) {
		p->st.malformed++;
		return;
	}
	if (req[17] == BM__SYNC_MODE_LVC && p->lvc_on) {
		for (s_lvc_t *e = p->lru_old; e != NULL; e = e->next) {
			if (e->tlen >= plen && memcmp(e->topic, prefix, plen) == 0) {
				s_send_to(p, req, zmq_msg_data(&e->f[0]), zmq_msg_size(&e->f[0]), NULL, 0,
				          e->nf == 2 ? &e->f[1] : NULL);
				p->st.lvc_replayed++;
			}
		}
	}
	n = bm__hdr_encode(&h, hbuf, sizeof hbuf);
	if (n < 0) {
		return;
	}
	s_send_to(p, req, prefix, plen, hbuf, (size_t)n, NULL);
	p->st.syncs++;
}

static void
s_on_report(bm_proxy_t *p, const uint8_t *d, size_t n)
{
	bm__report_t r;
	s_report_t *rep;
	void **slot;
	bool fresh;

	if (bm__report_decode(d, n, &r) < 0) {
		p->st.malformed++;
		return;
	}
	p->st.sub_reports++;
	if (bm__tab_size(p->reports) >= S_REPORTS_MAX && bm__tab_get(p->reports, r.token,
	                                                              BM__SYNC_TOKEN_LEN) == NULL) {
		size_t cur = 0;

		for (void *v; (v = bm__tab_next(p->reports, &cur, NULL, NULL)) != NULL;) {
			free(v);
		}
		bm__tab_clear(p->reports);
	}
	slot = bm__tab_slot(p->reports, r.token, BM__SYNC_TOKEN_LEN, &fresh);
	if (slot == NULL) {
		return;
	}
	if (fresh) {
		*slot = calloc(1, sizeof(s_report_t));
		if (*slot == NULL) {
			bm__tab_del(p->reports, r.token, BM__SYNC_TOKEN_LEN);
			return;
		}
	}
	rep = *slot;
	/* Counts are cumulative: a report older than one already seen (they
	 * never cross on one pipe, but be safe) cannot lower the totals. */
	if (r.received >= rep->received && r.gaps >= rep->gaps) {
		p->st.sub_received += r.received - rep->received;
		p->st.sub_gaps += r.gaps - rep->gaps;
		rep->received = r.received;
		rep->gaps = r.gaps;
	}
}

static void
s_drain_xpub(bm_proxy_t *p)
{
	for (int i = 0; i < S_BATCH; i++) {
		zmq_msg_t f[1];
		int n = bm__recv_parts(p->xpub, f, 1, ZMQ_DONTWAIT);
		const uint8_t *d;
		size_t len;

		if (n < 0) {
			return;
		}
		d = zmq_msg_data(&f[0]);
		len = zmq_msg_size(&f[0]);
		if (n != 1 || len == 0) {
			p->st.malformed++;
		} else if (d[0] == 1) {
			p->st.subscribes++;
			if (len >= 1 + BM__SYNC_HEAD && d[1] == 0x00) {
				s_on_sync_request(p, d + 1, len - 1);
			}
		} else if (d[0] == 0) {
			/* unsubscribe: libzmq has already updated its trie */
		} else if (d[0] == BM__REPORT_TAG) {
			s_on_report(p, d, len);
		} else {
			p->st.malformed++;
		}
		zmq_msg_close(&f[0]);
	}
}

static void
s_drain_tap(bm_proxy_t *p)
{
	for (int i = 0; i < S_BATCH; i++) {
		zmq_msg_t f[1];
		int n = bm__recv_parts(p->tap, f, 1, ZMQ_DONTWAIT);

		if (n < 0) {
			return;
		}
		/* Non-verbose XPUB: the first subscription to a prefix and the
		 * last cancel of it, so this counts prefixes in force. */
		if (n == 1 && zmq_msg_size(&f[0]) > 0) {
			uint8_t c = *(uint8_t *)zmq_msg_data(&f[0]);

			if (c == 1) {
				p->st.taps++;
			} else if (c == 0 && p->st.taps > 0) {
				p->st.taps--;
			}
		}
		zmq_msg_close(&f[0]);
	}
}

/* ---- publisher side ---- */

/* A broadcast as publishers send it: frame 0 = topic + header (+ body),
 * optionally frame 1 = body.  Checks the topic, the header's first two
 * bytes and the body cap; subscribers decode the rest.  Sets *ret_tlen. */
static bool
s_valid(const bm_proxy_t *p, zmq_msg_t *f, int n, size_t *ret_tlen)
{
	const uint8_t *d = zmq_msg_data(&f[0]);
	size_t len = zmq_msg_size(&f[0]);
	size_t tlen = bm__topic_span(d, len);

	if (n < 1 || n > 2 || bm_topic_check((const char *)d, tlen, false) < 0) {
		return false;
	}
	if (len - tlen < 2 || d[tlen] != 0x97 || d[tlen + 1] != BM_BCAST_VERSION) {
		return false;
	}
	*ret_tlen = tlen;
	if (n == 2) {
		return len - tlen <= BM__HDR_MAX && zmq_msg_size(&f[1]) <= p->max_body;
	}
	return len - tlen <= BM__HDR_MAX + p->max_body;
}

static int
s_forward_one(bm_proxy_t *p)
{
	zmq_msg_t f[2];
	int n = bm__recv_parts(p->xsub, f, 2, ZMQ_DONTWAIT);
	size_t tlen = 0;

	if (n < 0) {
		return n;
	}
	p->st.in++;
	if (!s_valid(p, f, n, &tlen)) {
		p->st.malformed++;
		bm__close_parts(f, n < 2 ? n : 2);
		return 0;
	}
	if (p->lvc_on) {
		s_lvc_put(p, f, n, tlen);
	}
	if (p->st.taps > 0) {
		zmq_msg_t t[2];

		for (int i = 0; i < n; i++) {
			zmq_msg_init(&t[i]);
			zmq_msg_copy(&t[i], &f[i]);
		}
		if (s_send_parts(p->tap, t, n) == 0) {
			p->st.tapped++;
		}
		bm__close_parts(t, n);
	}
	if (s_send_parts(p->xpub, f, n) == 0) {
		p->st.out++;
	}
	bm__close_parts(f, n);
	return 0;
}

/* ---- control ---- */

enum { S_CMD_PAUSE = 'P', S_CMD_RESUME = 'R', S_CMD_STATS = 'S', S_CMD_STOP = 'X',
       S_CMD_TOPICS = 'T' };

/* The largest control reply: the counters, or the busiest topics. */
#define S_CTL_REP_MAX                                                         \
	(4 + (sizeof(s_stats_t) > BM_PROXY_TOPICS_MAX * sizeof(bm_proxy_topic_t)  \
	          ? sizeof(s_stats_t)                                             \
	          : BM_PROXY_TOPICS_MAX * sizeof(bm_proxy_topic_t)))

/* The busiest cached topics into out (sorted, at most BM_PROXY_TOPICS_MAX,
 * the rest zeroed); one pass over the cache keeping the best so far. */
static void
s_topics(bm_proxy_t *p, bm_proxy_topic_t *out)
{
	size_t n = 0;

	memset(out, 0, BM_PROXY_TOPICS_MAX * sizeof *out);
	for (s_lvc_t *e = p->lru_old; e != NULL; e = e->next) {
		size_t k;

		if (n == BM_PROXY_TOPICS_MAX && e->msgs <= out[n - 1].msgs) {
			continue;
		}
		k = n < BM_PROXY_TOPICS_MAX ? n++ : n - 1;
		while (k > 0 && out[k - 1].msgs < e->msgs) {
			out[k] = out[k - 1];
			k--;
		}
		memcpy(out[k].topic, e->topic, e->tlen);
		out[k].topic[e->tlen] = '\0';
		out[k].msgs = e->msgs;
		out[k].bytes = e->msg_bytes;
	}
}

/* Returns true on stop. */
static bool
s_on_ctl(bm_proxy_t *p)
{
	uint8_t req[8];
	static uint8_t rep[S_CTL_REP_MAX]; /* the proxy thread's only */
	int n = zmq_recv(p->ctl, req, sizeof req, ZMQ_DONTWAIT);
	size_t rlen = 4;

	if (n < 5) {
		return false;
	}
	memcpy(rep, req + 1, 4);
	switch (req[0]) {
	case S_CMD_PAUSE:
		p->paused = true;
		break;
	case S_CMD_RESUME:
		p->paused = false;
		break;
	case S_CMD_STATS:
		p->st.paused = p->paused;
		memcpy(rep + 4, &p->st, sizeof p->st);
		rlen += sizeof p->st;
		break;
	case S_CMD_TOPICS: {
		bm_proxy_topic_t t[BM_PROXY_TOPICS_MAX];

		s_topics(p, t);
		memcpy(rep + 4, t, sizeof t);
		rlen += sizeof t;
		break;
	}
	case S_CMD_STOP:
		(void)zmq_send(p->ctl, rep, rlen, 0);
		return true;
	default:
		break;
	}
	(void)zmq_send(p->ctl, rep, rlen, 0);
	return false;
}

static void *
s_main(void *arg)
{
	bm_proxy_t *p = arg;

	for (;;) {
		zmq_pollitem_t it[4] = {
			{.socket = p->ctl, .events = ZMQ_POLLIN},
			{.socket = p->xpub, .events = ZMQ_POLLIN},
			{.socket = p->tap, .events = ZMQ_POLLIN},
			{.socket = p->xsub, .events = ZMQ_POLLIN},
		};
		int rc = zmq_poll(it, p->paused ? 3 : 4, -1);

		if (rc < 0) {
			if (zmq_errno() == EINTR) {
				continue;
			}
			bm_debug("proxy: poll failed: %s", zmq_strerror(zmq_errno()));
			break;
		}
		if ((it[0].revents & ZMQ_POLLIN) && s_on_ctl(p)) {
			break;
		}
		if (it[1].revents & ZMQ_POLLIN) {
			s_drain_xpub(p);
		}
		if (it[2].revents & ZMQ_POLLIN) {
			s_drain_tap(p);
		}
		if (!p->paused && (it[3].revents & ZMQ_POLLIN)) {
			for (int i = 0; i < S_BATCH; i++) {
				if (s_forward_one(p) < 0) {
					break;
				}
			}
		}
	}
	return NULL;
}

/* One request/reply on the control pipe; reply payload into out. */
static int
s_ctl(bm_proxy_t *p, uint8_t cmd, void *out, size_t out_len)
{
	uint8_t req[5];
	static _Thread_local uint8_t rep[S_CTL_REP_MAX];
	int64_t deadline;
	uint32_t id;

	if (p == NULL || !p->started) {
		return -EINVAL;
	}
	id = ++p->ctl_id;
	req[0] = cmd;
	memcpy(req + 1, &id, 4);
	if (zmq_send(p->ctl_owner, req, sizeof req, 0) < 0) {
		return bm__pzerr();
	}
	deadline = bm_mono_ms() + S_CTL_TIMEOUT_MS;
	for (;;) {
		zmq_pollitem_t it = {.socket = p->ctl_owner, .events = ZMQ_POLLIN};
		int64_t left = deadline - bm_mono_ms();
		int n;

		if (left <= 0) {
			return -ETIMEDOUT;
		}
		if (zmq_poll(&it, 1, (long)left) < 0 && zmq_errno() != EINTR) {
			return bm__pzerr();
		}
		if (!(it.revents & ZMQ_POLLIN)) {
			continue;
		}
		n = zmq_recv(p->ctl_owner, rep, sizeof rep, 0);
		/* A reply to an earlier request that timed out: skip it. */
		if (n >= 4 && memcmp(rep, &id, 4) == 0) {
			if (out != NULL && (size_t)n >= 4 + out_len) {
				memcpy(out, rep + 4, out_len);
			}
			return 0;
		}
	}
}

int
bm_proxy_pause(bm_proxy_t *p)
{
	return s_ctl(p, S_CMD_PAUSE, NULL, 0);
}

int
bm_proxy_resume(bm_proxy_t *p)
{
	return s_ctl(p, S_CMD_RESUME, NULL, 0);
}

int
bm_proxy_stats(bm_proxy_t *p, bm_stat_t *ret, size_t max)
{
	s_stats_t st;
	size_t k = 0;
	int rc;

	if (ret == NULL) {
		return -EINVAL;
	}
	if ((rc = s_ctl(p, S_CMD_STATS, &st, sizeof st)) < 0) {
		return rc;
	}
#define S_OUT(n)                                                              \
	if (k < max) {                                                        \
		snprintf(ret[k].key, sizeof ret[k].key, "bcast_%s", #n);      \
		ret[k].value = (int64_t)st.n;                                 \
		k++;                                                          \
	}
	S_STATS(S_OUT)
#undef S_OUT
	return (int)k;
}

int
bm_proxy_topics(bm_proxy_t *p, bm_proxy_topic_t *ret, size_t max)
{
	bm_proxy_topic_t t[BM_PROXY_TOPICS_MAX];
	size_t n = 0;
	int rc;

	if (ret == NULL) {
		return -EINVAL;
	}
	if ((rc = s_ctl(p, S_CMD_TOPICS, t, sizeof t)) < 0) {
		return rc;
	}
	while (n < max && n < BM_PROXY_TOPICS_MAX && t[n].msgs > 0) {
		ret[n] = t[n];
		n++;
	}
	return (int)n;
}

/* ---- set-up and tear-down ---- */

static bool
s_loopback_tcp(const char *ep)
{
	return strncmp(ep, "tcp://127.", 10) == 0;
}

static int
s_bind(void *sock, const char *dir, const char *name, char *path, size_t path_size)
{
	char ep[BM_PATH_MAX + 8];
	int rc;

	if ((rc = bm_rundir_path(dir, name, false, path, path_size)) < 0 ||
	    (rc = bm_rundir_path(dir, name, true, ep, sizeof ep)) < 0) {
		return rc;
	}
	/* The caller holds the directory's beastd lock: a file here is a
	 * crashed beastd's, and a second bind would steal a live endpoint. */
	if (unlink(path) < 0 && errno != ENOENT) {
		return -errno;
	}
	if (zmq_bind(sock, ep) < 0) {
		path[0] = '\0';
		return bm__pzerr();
	}
	(void)chmod(path, 0600);
	return 0;
}

static void *
s_socket(bm_proxy_t *p, int type, int hwm)
{
	void *s = zmq_socket(p->ctx, type);
	int zero = 0;

	if (s == NULL) {
		return NULL;
	}
	if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
	    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm) < 0) {
		zmq_close(s);
		return NULL;
	}
	return s;
}

int
bm_proxy_open(const bm_proxy_opts_t *opts, bm_proxy_t **ret_proxy)
{
	bm_proxy_opts_t o = opts ? *opts : (bm_proxy_opts_t){0};
	bm_proxy_t *p;
	char inproc[64];
	int rc, one = 1, hwm = o.hwm > 0 ? o.hwm : 100000;
	int64_t maxmsg;
	uint8_t all = 1;

	if (ret_proxy == NULL) {
		return -EINVAL;
	}
	if (!o.curve && ((o.pub_tcp != NULL && !s_loopback_tcp(o.pub_tcp)) ||
	                 (o.sub_tcp != NULL && !s_loopback_tcp(o.sub_tcp)))) {
		return -EADDRNOTAVAIL;
	}
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		return -ENOMEM;
	}
	p->lvc_on = !o.no_lvc;
	p->lvc_max_bytes = o.lvc_max_bytes ? o.lvc_max_bytes : S_LVC_BYTES_DEFAULT;
	p->lvc_max_topics = o.lvc_max_topics ? o.lvc_max_topics : S_LVC_TOPICS_DEFAULT;
	p->max_body = o.max_body ? o.max_body : BM_BCAST_BODY_MAX_DEFAULT;
	p->lvc = bm__tab_new();
	p->reports = bm__tab_new();
	/* With CURVE the sockets live where the ZAP handler does. */
	p->own_ctx = !o.curve;
	p->ctx = o.curve ? bm_curve_context() : zmq_ctx_new();
	if (p->lvc == NULL || p->reports == NULL || p->ctx == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = bm_rundir_resolve(o.dir, true, p->dir)) < 0) {
		goto fail;
	}
	p->xsub = s_socket(p, ZMQ_XSUB, hwm);
	p->xpub = s_socket(p, ZMQ_XPUB, hwm);
	p->tap = s_socket(p, ZMQ_XPUB, hwm);
	p->ctl = zmq_socket(p->ctx, ZMQ_PAIR);
	p->ctl_owner = zmq_socket(p->ctx, ZMQ_PAIR);
	if (p->xsub == NULL || p->xpub == NULL || p->tap == NULL || p->ctl == NULL ||
	    p->ctl_owner == NULL) {
		rc = bm__pzerr();
		goto fail;
	}
	/* A publisher far past the body cap is cut off by libzmq before we
	 * buffer it; one just over it is counted as malformed. */
	maxmsg = (int64_t)p->max_body + 65536;
	if (zmq_setsockopt(p->xsub, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
	    zmq_setsockopt(p->xpub, ZMQ_XPUB_VERBOSE, &one, sizeof one) < 0) {
		rc = bm__pzerr();
		goto fail;
	}
	if ((rc = s_bind(p->xsub, p->dir, "pub.sock", p->pub_path, sizeof p->pub_path)) < 0 ||
	    (rc = s_bind(p->xpub, p->dir, "sub.sock", p->sub_path, sizeof p->sub_path)) < 0 ||
	    (rc = s_bind(p->tap, p->dir, "tap.sock", p->tap_path, sizeof p->tap_path)) < 0) {
		goto fail;
	}
	/* CURVE options apply to the binds after them: the ipc endpoints
	 * above stay plain, the tcp ones below are CURVE servers. */
	if (o.curve && o.pub_tcp != NULL) {
		if ((rc = bm_curve_server(p->xsub, o.server_key, o.allow_dir)) < 0) {
			goto fail;
		}
		p->curve_refs++;
	}
	if (o.curve && o.sub_tcp != NULL) {
		if ((rc = bm_curve_server(p->xpub, o.server_key, o.allow_dir)) < 0) {
			goto fail;
		}
		p->curve_refs++;
	}
	if ((o.pub_tcp != NULL && zmq_bind(p->xsub, o.pub_tcp) < 0) ||
	    (o.sub_tcp != NULL && zmq_bind(p->xpub, o.sub_tcp) < 0)) {
		rc = bm__pzerr();
		goto fail;
	}
	/* Everything from every publisher, now and for each one that comes:
	 * XSUB replays its subscriptions to every new pipe. */
	if (zmq_send(p->xsub, &all, 1, 0) < 0) {
		rc = bm__pzerr();
		goto fail;
	}
	snprintf(inproc, sizeof inproc, "inproc://bm-proxy-ctl-%p", (void *)p);
	if (zmq_bind(p->ctl, inproc) < 0 || zmq_connect(p->ctl_owner, inproc) < 0) {
		rc = bm__pzerr();
		goto fail;
	}
	if ((rc = -pthread_create(&p->thread, NULL, s_main, p)) < 0) {
		goto fail;
	}
	p->started = true;
	*ret_proxy = p;
	return 0;
fail:
	bm_proxy_destroy(&p);
	return rc;
}

static void
s_close_unlink(void **sock, char *path)
{
	if (*sock != NULL) {
		zmq_close(*sock);
		*sock = NULL;
	}
	if (path[0] != '\0') {
		(void)unlink(path);
		path[0] = '\0';
	}
}

void
bm_proxy_destroy(bm_proxy_t **self_p)
{
	bm_proxy_t *p;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	p = *self_p;
	if (p->started) {
		if (s_ctl(p, S_CMD_STOP, NULL, 0) == 0) {
			pthread_join(p->thread, NULL);
		} else {
			/* Never free what a live thread uses. */
			bm_debug("proxy: thread did not stop; leaking it");
			*self_p = NULL;
			return;
		}
	}
	s_close_unlink(&p->xsub, p->pub_path);
	s_close_unlink(&p->xpub, p->sub_path);
	s_close_unlink(&p->tap, p->tap_path);
	if (p->ctl != NULL) {
		zmq_close(p->ctl);
	}
	if (p->ctl_owner != NULL) {
		zmq_close(p->ctl_owner);
	}
	s_lvc_clear(p);
	if (p->reports != NULL) {
		size_t cur = 0;

		for (void *v; (v = bm__tab_next(p->reports, &cur, NULL, NULL)) != NULL;) {
			free(v);
		}
	}
	bm__tab_destroy(&p->reports);
	bm__tab_destroy(&p->lvc);
	while (p->curve_refs-- > 0) {
		bm_curve_server_release();
	}
	if (p->ctx != NULL && p->own_ctx) {
		zmq_ctx_term(p->ctx);
	}
	free(p);
	*self_p = NULL;
}

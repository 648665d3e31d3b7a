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
	uint8_t *scratch;                   /* shm_from: a record's body */
	size_t scratch_cap;                 /* its size */
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
	if (s == NULL || s->rd == NULL) {
		return -EINVAL;
	}
	return s->synced < s->nsubs ? 1 : bm_bcastlog_reader_arm(s->rd);
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
		int n = bm__recv_parts(s->sock, f, 2, ZMQ_DONTWAIT), got;

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
			if (zmq_poll(&it, 1, timeout_ms < 0 && left > INT32_MAX ? -1 : (long)left) < 0) {
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

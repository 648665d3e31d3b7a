/*
 * client.c - an agent's session with the broker (one DEALER socket).
 *
 * The client keeps the session alive by itself: it sends PING whenever it
 * has not heard from or spoken to the broker for one heartbeat interval.
 * The broker answers PONG with the name it knows us by; when that is not
 * ours, or a reply says "not registered" (a restarted broker), the client
 * says HELLO again every interval until WELCOME.  After three silent
 * intervals it also re-asserts HELLO, but keeps sending meanwhile.  libzmq
 * reconnects the socket underneath; we only re-register.
 *
 * Reconnect.  A broker killed and started again knows nobody, and an idle
 * agent would learn so only from its next PING, up to a heartbeat interval
 * later.  So the client watches its own connection (a socket monitor on an
 * inproc PAIR, polled beside the DEALER whenever the client waits, and
 * bm_client_monitor() for callers with a loop of their own).  A lost
 * connection makes the client unregistered (what was in flight on it may
 * be lost); when the connection comes back it says HELLO at once (a broker
 * that still knows us just answers WELCOME) and the WELCOME becomes a
 * BM_EV_REGISTERED event, on which an outbox resends what was in flight.
 * libzmq retries a lost connection after 10 ms, doubling up to 50 ms
 * (ZMQ_RECONNECT_IVL / _MAX, plus up to 10 ms of jitter): while beastd is
 * down that is 20 cheap failed connects a second per client, and once it
 * listens again the first delivery waits at most one retry interval and
 * one HELLO -> WELCOME round trip; heartbeats are not involved.
 *
 * Everything that arrives is turned into events in a FIFO inside the
 * client.  bm_client_recv() pops it; bm_client_request(), _list(), _stats()
 * and _ping() wait for their own answer and leave everything else queued,
 * so a request never eats a delivery meant for the main loop.
 *
 * Bodies are zero copy on receive: a bm_msg_t keeps the zmq frame the body
 * arrived in.  bm_client_send_frame() sends a caller's frame without a copy.
 *
 * Direct routes (direct.c): with BM_FEAT_DIRECT on both sides, a SEND to
 * a local agent we talk to often goes into a shared-memory ring instead of
 * to the broker, and what comes back over the rings becomes the same
 * events as what comes from the broker.  The routes' fd is polled beside
 * the socket; bm_client_timeout() arms their doorbells before a wait.
 *
 * Threading: a client is used from one thread at a time.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "mesh_private.h"

#define S_HDR_BUF (BM_ACKS_MAX * 16 + 1024) /* the largest header a client sends: ACKS */

typedef struct s_node {
	struct s_node *next; /* FIFO link */
	bm_event_t ev;       /* queued event (owns ev.msg) */
} s_node_t;

struct bm_client {
	void *ctx;                               /* zmq context */
	bool own_ctx;                            /* we terminate it */
	void *sock;                              /* DEALER to the broker */
	void *mon;                               /* PAIR: sock's connect/disconnect events */
	bool lost;                               /* a disconnect seen, no connect since */
	uint64_t reconnects;                     /* connections regained */
	char endpoint[BM_PATH_MAX + 8];          /* where it connects */
	char name[BM_NAME_MAX + 1];              /* "" = anonymous */
	char caps[BM_CAPS_MAX][BM_CAP_MAX + 1];  /* capabilities */
	int ncaps;                               /* how many */
	uint32_t heartbeat_ms;                   /* interval */
	size_t max_body;                         /* body cap */
	bool registered;                         /* WELCOME seen, not lost */
	bool ever_registered;                    /* for BM_EV_REGISTERED */
	int denied;                              /* last DENIED code, 0 = none */
	/* Heartbeat bookkeeping runs on bm_mono_coarse_ms(): stamped per
	 * frame, so it must be cheap, and a few ms of slack is nothing
	 * beside a heartbeat interval. */
	int64_t last_rx_ms;                      /* last frame from the broker */
	int64_t last_tx_ms;                      /* last frame to the broker */
	bool has_report;                         /* an outbox reports through us */
	uint64_t report[3];                      /* its pending, dead, retries */
	bool report_sent;                        /* report[] went out unchanged */
	int64_t next_report_ms;                  /* earliest next report PING */
	int64_t next_hello_ms;                   /* when to say HELLO again */
	uint64_t pongs;                          /* PONGs seen */
	int reply_cmd;                           /* DIRECTORY/STATS waiting */
	zmq_msg_t reply;                         /* its body */
	msgpack_zone zone;                       /* DIRECTORY/STATS scratch */
	s_node_t *head, *tail;                   /* event FIFO */
	size_t nevents;                          /* in the FIFO */
	bool drained;                            /* the last read found the socket empty */
	s_node_t *spare;                         /* free nodes for reuse */
	int nspare;                              /* how many */
	uint8_t rnd[2560];                       /* random bits for 256 ids */
	size_t rnd_left;                         /* unused bytes at its end */
	bool broker_acks;                        /* broker takes ACKS */
	bool broker_inline;                      /* ... and inline bodies */
	uint16_t nacks;                          /* ACKs held for one ACKS */
	char ack_peer[BM_ADDR_MAX + 1];          /* whom they go to */
	uint8_t ack_ids[BM_ACKS_MAX * sizeof(bm_id_t)]; /* their ids */
	bm_direct_t *direct;                     /* direct routes, or NULL (off) */
	bool broker_direct;                      /* broker introduces routes */
};

void
bm_msg_destroy(bm_msg_t **self_p)
{
	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	zmq_msg_close(&(*self_p)->body);
	free((*self_p)->tracestate);
	free(*self_p);
	*self_p = NULL;
}

void
bm_event_clear(bm_event_t *ev)
{
	if (ev != NULL) {
		bm_msg_destroy(&ev->msg);
		memset(ev, 0, sizeof *ev);
	}
}

/* ---- event FIFO ---- */

static int
s_push(bm_client_t *c, const bm_event_t *ev)
{
	s_node_t *n = c->spare;

	if (n != NULL) {
		c->spare = n->next;
		c->nspare--;
	} else if ((n = malloc(sizeof *n)) == NULL) {
		return -ENOMEM;
	}
	n->ev = *ev;
	n->next = NULL;
	c->nevents++;
	if (c->tail != NULL) {
		c->tail->next = n;
	} else {
		c->head = n;
	}
	c->tail = n;
	return 0;
}

/* Unlinks node n (prev is its predecessor or NULL) and moves its event out. */
static void
s_take(bm_client_t *c, s_node_t *prev, s_node_t *n, bm_event_t *ret_ev)
{
	if (prev != NULL) {
		prev->next = n->next;
	} else {
		c->head = n->next;
	}
	if (c->tail == n) {
		c->tail = prev;
	}
	c->nevents--;
	*ret_ev = n->ev;
	/* Keep a bounded stock of nodes: one per event is the hot path. */
	if (c->nspare < 1024) {
		n->next = c->spare;
		c->spare = n;
		c->nspare++;
	} else {
		free(n);
	}
}

/* ---- sending ---- */

/* Copies a NUL-terminated string into dst[cap], truncating like snprintf
 * "%s" but without a format parser on the per-message path. */
static void
s_strcpy(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * A fresh id in bm_id_new()'s layout (48-bit wall ms, then 80 random bits
 * from libsodium), but with the random bits taken from a per-client pool
 * refilled 256 ids at a time, instead of a getrandom() system call per
 * send (libsodium reads 256 bytes per call: one call per 25 sends).  ts_ms
 * is the send's timestamp (one clock read serves both).  No two processes can share a pool, because a
 * client never crosses a fork (its zmq socket cannot).
 */
static void
s_id_new(bm_client_t *c, int64_t ts_ms, bm_id_t *ret_id)
{
	uint64_t ms = (uint64_t)ts_ms;

	if (c->rnd_left < 10) {
		if (sodium_init() < 0) {
			/* unreachable on Linux; randombytes_buf() still works */
		}
		randombytes_buf(c->rnd, sizeof c->rnd);
		c->rnd_left = sizeof c->rnd;
	}
	for (int i = 0; i < 6; i++) {
		ret_id->b[i] = (uint8_t)(ms >> (40 - 8 * i));
	}
	memcpy(ret_id->b + 6, c->rnd + sizeof c->rnd - c->rnd_left, 10);
	c->rnd_left -= 10;
}

static int s_flush_acks(bm_client_t *c);

static int
s_send_env(bm_client_t *c, const bm_env_t *e, zmq_msg_t *body)
{
	uint8_t hdr[S_HDR_BUF];
	int n;

	/* Held ACKs leave first, so nothing overtakes them. */
	if (c->nacks > 0 && e->cmd != BM_CMD_ACKS && e->cmd != BM_CMD_ACK) {
		(void)s_flush_acks(c);
	}
	n = bm__env_encode(e, hdr, sizeof hdr);
	if (n < 0) {
		return n;
	}
	if (zmq_send(c->sock, hdr, (size_t)n, ZMQ_DONTWAIT | (body ? ZMQ_SNDMORE : 0)) < 0) {
		n = bm__zmq_err();
		return n == -EAGAIN ? BM_EFULL : n;
	}
	/* Multipart is atomic: once the first frame is queued the rest is. */
	if (body != NULL && zmq_msg_send(body, c->sock, ZMQ_DONTWAIT) < 0) {
		return bm__zmq_err();
	}
	c->last_tx_ms = bm_mono_coarse_ms();
	return 0;
}

/* A SEND with its body inline: one frame, header then body. */
static int
s_send_inline(bm_client_t *c, const bm_env_t *e, const void *body, size_t len)
{
	uint8_t hdr[S_HDR_BUF];
	zmq_msg_t m;
	int n;

	if (c->nacks > 0) {
		(void)s_flush_acks(c);
	}
	if (len > BM_INLINE_MAX || (n = bm__env_encode(e, hdr, sizeof hdr)) < 0) {
		return len > BM_INLINE_MAX ? -EINVAL : n;
	}
	/* Header and body straight into the frame: the body is copied once. */
	if (zmq_msg_init_size(&m, (size_t)n + len) < 0) {
		return -ENOMEM;
	}
	memcpy(zmq_msg_data(&m), hdr, (size_t)n);
	if (len > 0) {
		memcpy((uint8_t *)zmq_msg_data(&m) + n, body, len);
	}
	if (zmq_msg_send(&m, c->sock, ZMQ_DONTWAIT) < 0) {
		n = bm__zmq_err();
		zmq_msg_close(&m);
		return n == -EAGAIN ? BM_EFULL : n;
	}
	c->last_tx_ms = bm_mono_coarse_ms();
	return 0;
}

static int
s_send_cmd(bm_client_t *c, int cmd)
{
	bm_env_t e = {.cmd = (uint8_t)cmd};

	return s_send_env(c, &e, NULL);
}

/*
 * Sends the ACKs held by bm_client_ack(): one plain ACK, or one ACKS frame
 * for several.  When the queue toward the broker is full they stay held
 * for the next try; on another error they are dropped (the sender retries,
 * the receiver's de-dup answers the resend).
 */
static int
s_flush_acks(bm_client_t *c)
{
	bm_env_t e = {.cmd = BM_CMD_ACKS, .ids = c->ack_ids, .nids = c->nacks};
	int rc;

	bm__direct_flush(c->direct);
	if (c->nacks == 0) {
		return 0;
	}
	if (c->nacks == 1) {
		e.cmd = BM_CMD_ACK;
		memcpy(e.id.b, c->ack_ids, sizeof e.id.b);
	}
	memcpy(e.name, c->ack_peer, sizeof e.name);
	rc = s_send_env(c, &e, NULL);
	if (rc != BM_EFULL) {
		c->nacks = 0;
	}
	return rc;
}

static int
s_hello(bm_client_t *c)
{
	bm_env_t e = {.cmd = BM_CMD_HELLO, .heartbeat_ms = c->heartbeat_ms, .ncaps = c->ncaps,
	              .features = BM_FEAT_ACKS | BM_FEAT_INLINE |
	                          (c->direct != NULL ? BM_FEAT_DIRECT : 0)};

	memcpy(e.name, c->name, sizeof c->name);
	memcpy(e.caps, c->caps, sizeof c->caps);
	c->next_hello_ms = bm_mono_coarse_ms() + c->heartbeat_ms;
	return s_send_env(c, &e, NULL);
}

/* ---- receiving ---- */

static void
s_event_from(bm_event_t *ev, int kind, const bm_env_t *e)
{
	memset(ev, 0, sizeof *ev);
	ev->kind = kind;
	ev->id = e->id;
	ev->code = e->code;
	memcpy(ev->peer, e->name, sizeof ev->peer);
	memcpy(ev->text, kind == BM_EV_NOTICE ? e->type : e->text, sizeof ev->text);
}

static int
s_on_frame(bm_client_t *c, bm_env_t *e, zmq_msg_t *body, size_t body_at)
{
	bm_event_t ev;
	bm_msg_t *m;

	switch (e->cmd) {
	case BM_CMD_WELCOME:
		if (c->ever_registered && !c->registered) {
			s_event_from(&ev, BM_EV_REGISTERED, e);
			(void)s_push(c, &ev);
		}
		c->registered = c->ever_registered = true;
		c->broker_acks = (e->features & BM_FEAT_ACKS) != 0;
		c->broker_inline = (e->features & BM_FEAT_INLINE) != 0;
		c->broker_direct = (e->features & BM_FEAT_DIRECT) != 0;
		c->denied = 0;
		if (e->max_body > 0 && e->max_body < c->max_body) {
			c->max_body = (size_t)e->max_body;
		}
		return 0;
	case BM_CMD_DENIED:
		c->denied = e->code ? e->code : BM_EDENIED;
		c->registered = false;
		if (c->ever_registered) {
			s_event_from(&ev, BM_EV_DENIED, e);
			return s_push(c, &ev);
		}
		return 0;
	case BM_CMD_PONG:
		c->pongs++;
		if (c->registered && strcmp(e->name, c->name) != 0) {
			/* The broker does not know us: it restarted. */
			c->registered = false;
			c->next_hello_ms = 0;
		}
		return 0;
	case BM_CMD_DELIVER:
		/* Every field is set below; no need to zero ~300 bytes. */
		m = malloc(sizeof *m);
		if (m == NULL) {
			return -ENOMEM;
		}
		m->id = e->id;
		m->corr = e->corr;
		memcpy(m->from, e->name, sizeof m->from);
		/* A bridge learns the address a message was sent to from its
		 * route field; anybody else was addressed by name. */
		if (e->route[0] != '\0') {
			memcpy(m->to, e->route, sizeof m->to);
		} else {
			memcpy(m->to, c->name, sizeof c->name);
		}
		memcpy(m->type, e->type, sizeof m->type);
		m->priority = e->priority;
		m->ttl_ms = e->ttl_ms;
		m->attempt = e->attempt;
		m->ts_ms = e->ts_ms;
		m->traceparent[0] = '\0';
		m->tracestate = NULL;
		if (e->tp != NULL) {
			memcpy(m->traceparent, e->tp, e->tp_len); /* <= BM_TRACEPARENT_MAX */
			m->traceparent[e->tp_len] = '\0';
		}
		if (e->ts != NULL && (m->tracestate = malloc((size_t)e->ts_len + 1)) != NULL) {
			memcpy(m->tracestate, e->ts, e->ts_len);
			m->tracestate[e->ts_len] = '\0';
		}
		zmq_msg_init(&m->body);
		m->body_at = body != NULL ? body_at : 0;
		if (body != NULL) {
			zmq_msg_move(&m->body, body);
		}
		memset(&ev, 0, sizeof ev);
		ev.kind = BM_EV_MESSAGE;
		ev.msg = m;
		ev.id = m->id;
		memcpy(ev.peer, m->from, sizeof m->from);
		if (s_push(c, &ev) < 0) {
			bm_msg_destroy(&m);
			return -ENOMEM;
		}
		return 0;
	case BM_CMD_ACK:
		s_event_from(&ev, BM_EV_ACK, e);
		return s_push(c, &ev);
	case BM_CMD_ACKS:
		/* One event per id, as if they had come one by one. */
		s_event_from(&ev, BM_EV_ACK, e);
		for (size_t i = 0; i < e->nids; i++) {
			int rc;

			memcpy(ev.id.b, e->ids + i * sizeof ev.id.b, sizeof ev.id.b);
			if ((rc = s_push(c, &ev)) < 0) {
				return rc;
			}
		}
		return 0;
	case BM_CMD_NACK:
		if (e->code == BM_ENOTREG) {
			c->registered = false;
			c->next_hello_ms = 0;
		}
		s_event_from(&ev, BM_EV_NACK, e);
		return s_push(c, &ev);
	case BM_CMD_NOTICE:
		s_event_from(&ev, BM_EV_NOTICE, e);
		return s_push(c, &ev);
	case BM_CMD_ERROR:
		if (e->code == BM_ENOTREG) {
			c->registered = false;
			c->next_hello_ms = 0;
		} else {
			bm_debug("broker reported an error: %s", e->text);
		}
		return 0;
	case BM_CMD_ROUTE:
		return bm__direct_on_route(c->direct, e);
	case BM_CMD_DIRECTORY:
	case BM_CMD_STATS:
	case BM_CMD_TRACE:
		zmq_msg_close(&c->reply);
		zmq_msg_init(&c->reply);
		if (body != NULL) {
			zmq_msg_move(&c->reply, body);
		}
		c->reply_cmd = e->cmd;
		return 0;
	default:
		/* PING probes from the broker need no answer. */
		return 0;
	}
}

/* Reads and handles one message if one is waiting: 0, -EAGAIN, or error. */
static int
s_read_one(bm_client_t *c)
{
	zmq_msg_t f[2];
	int nf = 0, rc = 0;
	bool more = true;
	const char *why;
	bm_env_t e;

	while (more) {
		zmq_msg_t *m = nf < 2 ? &f[nf] : &(zmq_msg_t){0};

		zmq_msg_init(m);
		if (zmq_msg_recv(m, c->sock, ZMQ_DONTWAIT) < 0) {
			rc = bm__zmq_err();
			zmq_msg_close(m);
			break;
		}
		more = zmq_msg_more(m);
		if (nf < 2) {
			nf++;
		} else {
			zmq_msg_close(m);
		}
	}
	if (nf > 0) {
		c->last_rx_ms = bm_mono_coarse_ms();
		rc = bm__env_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &e, &why);
		if (rc == 0 && e.hdr_len < zmq_msg_size(&f[0]) && nf > 1) {
			rc = BM_EPROTO;
			why = "an inline body and a body frame";
		}
		if (rc == 0 && e.hdr_len < zmq_msg_size(&f[0])) {
			/* Inline: the body is frame 0 past the header. */
			rc = s_on_frame(c, &e, &f[0], e.hdr_len);
		} else if (rc == 0) {
			rc = s_on_frame(c, &e, nf > 1 ? &f[1] : NULL, 0);
		} else {
			bm_debug("dropped a malformed frame from the broker: %s", why);
			rc = 0;
		}
	}
	for (int i = 0; i < nf; i++) {
		zmq_msg_close(&f[i]);
	}
	return rc;
}

void
bm__client_report(bm_client_t *c, uint64_t pending, uint64_t dead, uint64_t retries)
{
	if (c == NULL) {
		return;
	}
	if (!c->has_report || c->report[0] != pending || c->report[1] != dead ||
	    c->report[2] != retries) {
		c->report_sent = false;
	}
	c->has_report = true;
	c->report[0] = pending;
	c->report[1] = dead;
	c->report[2] = retries;
}

/* A heartbeat PING, with the outbox report when there is one. */
static int
s_ping(bm_client_t *c, int64_t now)
{
	bm_env_t e = {.cmd = BM_CMD_PING, .has_report = c->has_report};

	if (c->has_report) {
		memcpy(e.report, c->report, sizeof e.report);
		c->report_sent = true;
		c->next_report_ms = now + c->heartbeat_ms;
	}
	return s_send_env(c, &e, NULL);
}

/* Reads the connection events waiting on the monitor pipe (never
 * blocks).  A connect after a loss re-registers at once: the broker at
 * the other end may be a new one that knows nobody. */
static void
s_mon_drain(bm_client_t *c)
{
	for (int i = 0; c->mon != NULL && i < 64; i++) {
		zmq_msg_t ev, ep;
		uint16_t id = 0;

		zmq_msg_init(&ev);
		if (zmq_msg_recv(&ev, c->mon, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&ev);
			return;
		}
		if (zmq_msg_size(&ev) >= 2) {
			memcpy(&id, zmq_msg_data(&ev), 2);
		}
		/* Event frame, then the endpoint frame. */
		while (zmq_msg_more(&ev)) {
			zmq_msg_init(&ep);
			if (zmq_msg_recv(&ep, c->mon, ZMQ_DONTWAIT) < 0) {
				zmq_msg_close(&ep);
				break;
			}
			zmq_msg_close(&ev);
			zmq_msg_init(&ev);
			zmq_msg_move(&ev, &ep);
			zmq_msg_close(&ep);
		}
		zmq_msg_close(&ev);
		if (id == ZMQ_EVENT_DISCONNECTED) {
			/* Whatever was in flight on that connection may be gone,
			 * and the broker at the other end may be gone with it:
			 * sends wait for a WELCOME, which then tells the caller
			 * (BM_EV_REGISTERED: an outbox resends at once). */
			c->lost = true;
			c->registered = false;
		} else if (id == ZMQ_EVENT_CONNECTED && c->lost) {
			c->lost = false;
			c->reconnects++;
			if (c->name[0] != '\0') {
				(void)s_hello(c);
			} else {
				(void)s_send_cmd(c, BM_CMD_PING);
			}
		}
	}
}

/* Heartbeats and re-registration; cheap to call often. */
static void
s_tick(bm_client_t *c)
{
	int64_t now = bm_mono_coarse_ms();

	/* Silence alone does not unregister us: a busy or starved broker is
	 * still the broker that knows us, and sends must keep flowing.  A
	 * restarted one says so (PONG without our name, or NOTREG).  After
	 * three silent intervals we re-assert the registration, once per
	 * interval, which a live broker simply answers with WELCOME. */
	if (c->name[0] != '\0' && now >= c->next_hello_ms &&
	    (!c->registered || now - c->last_rx_ms > 3 * (int64_t)c->heartbeat_ms)) {
		(void)s_hello(c);
	}
	bm__direct_tick(c->direct);
	if (now - c->last_tx_ms >= c->heartbeat_ms || now - c->last_rx_ms >= c->heartbeat_ms) {
		/* Rate-limited by last_tx: at most one PING per interval. */
		if (now - c->last_tx_ms >= c->heartbeat_ms / 2) {
			(void)s_ping(c, now);
			return;
		}
	}
	/* A busy agent sends no heartbeats: a changed report still goes out,
	 * at most once per interval. */
	if (c->has_report && !c->report_sent && c->registered && now >= c->next_report_ms) {
		(void)s_ping(c, now);
	}
}

/* Milliseconds until the client's next timer. */
static int
s_timeout(bm_client_t *c)
{
	int64_t now, next;

	if (c->head != NULL) {
		return 0;
	}
	/* The caller is about to wait: held ACKs leave now. */
	(void)s_flush_acks(c);
	now = bm_mono_coarse_ms();
	next = c->last_tx_ms + c->heartbeat_ms;
	if (c->last_rx_ms + c->heartbeat_ms < next) {
		next = c->last_rx_ms + c->heartbeat_ms;
	}
	if (c->name[0] != '\0' && !c->registered && c->next_hello_ms < next) {
		next = c->next_hello_ms;
	}
	return next <= now ? 0 : (int)(next - now);
}

int
bm_client_timeout(bm_client_t *c)
{
	int t;

	if (c == NULL) {
		return -1;
	}
	t = s_timeout(c);
	/* The caller is about to sleep: a route with a record waiting must
	 * not be slept on, and the others must ring us. */
	if (t != 0 && bm__direct_arm(c->direct) > 0) {
		return 0;
	}
	return t;
}

/*
 * Reads, and waits while the socket is empty, until done(c, arg) holds or
 * timeout_ms passes (-1 = never, 0 = do not wait).  The precise clock is
 * read only when there is something to wait for: the hot path (an event
 * already queued) reads just the coarse one, in s_tick().
 */
static int
s_pump_until(bm_client_t *c, int timeout_ms, bool (*done)(bm_client_t *, void *), void *arg)
{
	int64_t deadline = -2; /* not yet computed */

	for (;;) {
		zmq_pollitem_t it[3] = {{.socket = c->sock, .events = ZMQ_POLLIN},
		                        {.socket = c->mon, .events = ZMQ_POLLIN},
		                        {.fd = bm__direct_fd(c->direct), .events = ZMQ_POLLIN}};
		int64_t now, wait;
		int rc, nit;

		s_tick(c);
		if (c->direct != NULL && !done(c, arg)) {
			/* Both paths at each look, beastd's first: what it
			 * delivered before a route came up is the older, and
			 * neither path may starve the other.  (Not only when the
			 * queue is empty: a request waits for its reply behind
			 * events it leaves queued.) */
			for (int i = 0; i < 256; i++) {
				rc = s_read_one(c);
				c->drained = rc == -EAGAIN;
				if (rc == -EAGAIN) {
					break;
				}
				if (rc < 0) {
					return rc;
				}
			}
			(void)bm__direct_pump(c->direct, 1024);
		}
		/* Reads until the answer is there, and no further: asking an
		 * empty zmq socket costs system calls, which a message that
		 * has arrived should not wait for (bm_client_ack() reads ahead
		 * instead, to see a burst).  Bounded, so a flood cannot starve
		 * the deadline check.  Once the socket was found empty, a
		 * caller that will wait lets zmq_poll() say when to ask again. */
		for (int i = 0; i < 1024 && !done(c, arg) && (!c->drained || timeout_ms == 0); i++) {
			rc = s_read_one(c);
			c->drained = rc == -EAGAIN;
			if (rc == -EAGAIN) {
				break;
			}
			if (rc < 0) {
				return rc;
			}
		}
		if (done(c, arg)) {
			return 0;
		}
		/* About to wait or give up: nothing may stay held. */
		(void)s_flush_acks(c);
		now = bm_mono_ms();
		if (deadline == -2) {
			deadline = timeout_ms < 0 ? -1 : now + timeout_ms;
		}
		if (deadline >= 0 && now >= deadline) {
			/* A caller polling on its own (bm_client_monitor) was
			 * woken by a connection event: act on it. */
			s_mon_drain(c);
			return -ETIMEDOUT;
		}
		wait = s_timeout(c);
		if (wait <= 0) {
			wait = 1;
		}
		if (deadline >= 0 && deadline - now < wait) {
			wait = deadline - now;
		}
		if (bm__direct_arm(c->direct) > 0) {
			continue; /* a record on a route: read it, do not sleep */
		}
		nit = c->mon != NULL ? 2 : 1;
		if (c->direct != NULL) {
			if (nit == 1) {
				it[1] = it[2];
			}
			nit++;
		}
		if (zmq_poll(it, nit, (long)wait) < 0) {
			return bm__zmq_err();
		}
		if (c->mon != NULL && (it[1].revents & ZMQ_POLLIN)) {
			s_mon_drain(c);
		}
		c->drained = false;
	}
}

static bool
s_has_event(bm_client_t *c, void *arg)
{
	(void)arg;
	return c->head != NULL;
}

int
bm_client_recv(bm_client_t *c, int timeout_ms, bm_event_t *ret_ev)
{
	int rc;

	if (c == NULL || ret_ev == NULL) {
		return -EINVAL;
	}
	rc = s_pump_until(c, timeout_ms, s_has_event, NULL);
	if (rc < 0) {
		return rc;
	}
	s_take(c, NULL, c->head, ret_ev);
	return 0;
}

/* ---- open / close ---- */

/* Fails fast when no broker socket exists at an ipc endpoint. */
static int
s_probe_ipc(const char *endpoint)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, rc = 0;

	if (strncmp(endpoint, "ipc://", 6) != 0) {
		return 0;
	}
	if (strlen(endpoint + 6) >= sizeof sa.sun_path) {
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, endpoint + 6);
	if ((rc = bm_rundir_socket_check(sa.sun_path)) < 0) {
		return rc == -ENOENT ? BM_ENOBROKER : rc;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -errno;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		rc = (errno == ENOENT || errno == ECONNREFUSED) ? BM_ENOBROKER : -errno;
	}
	close(fd);
	return rc;
}

static bool
s_welcomed(bm_client_t *c, void *arg)
{
	(void)arg;
	return c->registered || c->denied != 0;
}

static bool
s_ponged(bm_client_t *c, void *arg)
{
	return c->pongs > *(uint64_t *)arg;
}

/* ---- direct routes: the client's side of direct.c ---- */

static bool
s_direct_wanted(int opt)
{
	if (opt != 0) {
		return opt > 0;
	}
	return bm_env_long("BEAST_DIRECT", 0, 1, 1) != 0;
}

static int
s_direct_frame(void *arg, bm_env_t *e, zmq_msg_t *frame, size_t body_at)
{
	return s_on_frame(arg, e, frame, body_at);
}

static int
s_direct_out(void *arg, const bm_env_t *e)
{
	return s_send_env(arg, e, NULL);
}

/* A route ended: the outbox resends to peer now (through beastd) what the
 * route did not confirm, as when the peer comes online. */
static void
s_direct_fallback(void *arg, const char *peer)
{
	bm_event_t ev = {.kind = BM_EV_NOTICE};

	s_strcpy(ev.peer, sizeof ev.peer, peer);
	s_strcpy(ev.text, sizeof ev.text, "online");
	(void)s_push(arg, &ev);
}

int
bm_client_open(const bm_client_opts_t *opts, bm_client_t **ret_client)
{
	bm_client_opts_t o = opts ? *opts : (bm_client_opts_t){0};
	bm_client_t *c;
	int rc, hwm, linger = 1000, ivl = 10, ivl_max = 50, zero = 0;
	char mon_ep[64];
	static _Atomic unsigned s_mon_seq;
	int64_t maxmsg;
	uint64_t pongs = 0;

	if (ret_client == NULL) {
		return -EINVAL;
	}
	if (o.name != NULL && (rc = bm_name_check(o.name)) < 0) {
		return rc;
	}
	if (o.heartbeat_ms < 0 || o.heartbeat_ms > 3600000) {
		return -EINVAL;
	}
	c = calloc(1, sizeof *c);
	if (c == NULL) {
		return -ENOMEM;
	}
	zmq_msg_init(&c->reply);
	msgpack_zone_init(&c->zone, 4096);
	c->heartbeat_ms = o.heartbeat_ms > 0 ? (uint32_t)o.heartbeat_ms : BM_HEARTBEAT_DEFAULT;
	c->max_body = o.max_body ? o.max_body : BM_BODY_MAX_DEFAULT;
	hwm = o.hwm > 0 ? o.hwm : 100000;
	if (o.name != NULL) {
		snprintf(c->name, sizeof c->name, "%s", o.name);
	}
	for (int i = 0; o.caps != NULL && o.caps[i] != NULL; i++) {
		if (i >= BM_CAPS_MAX || (rc = bm_cap_check(o.caps[i])) < 0) {
			rc = BM_EBADNAME;
			goto fail;
		}
		snprintf(c->caps[i], sizeof c->caps[i], "%s", o.caps[i]);
		c->ncaps = i + 1;
	}
	if (o.endpoint != NULL) {
		if (snprintf(c->endpoint, sizeof c->endpoint, "%s", o.endpoint) >=
		    (int)sizeof c->endpoint) {
			rc = -ENAMETOOLONG;
			goto fail;
		}
	} else {
		char dir[BM_PATH_MAX];

		rc = bm_rundir_resolve(o.dir, false, dir);
		if (rc == -ENOENT) {
			rc = BM_ENOBROKER;
		}
		if (rc < 0 ||
		    (rc = bm_rundir_path(dir, "mesh.sock", true, c->endpoint, sizeof c->endpoint)) < 0) {
			goto fail;
		}
	}
	if ((rc = s_probe_ipc(c->endpoint)) < 0) {
		goto fail;
	}
	c->own_ctx = o.zmq_ctx == NULL;
	c->ctx = o.zmq_ctx ? o.zmq_ctx : zmq_ctx_new();
	if (c->ctx == NULL || (c->sock = zmq_socket(c->ctx, ZMQ_DEALER)) == NULL) {
		rc = c->ctx ? bm__zmq_err() : -ENOMEM;
		goto fail;
	}
	/* Explicit linger: queued frames get a second to leave on close, and a
	 * dead broker can never hang the close for ever. */
	maxmsg = (int64_t)c->max_body * 2 + BM_HEADER_MAX;
	if (zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
	    zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(c->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) < 0 ||
	    zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) < 0 ||
	    zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0) {
		rc = bm__zmq_err();
		goto fail;
	}
	if ((o.key_file != NULL || o.server_key_file != NULL) &&
	    (rc = bm__curve_client(c->sock, o.key_file, o.server_key_file)) < 0) {
		goto fail;
	}
	/* The connection's events, read by s_mon_drain(). */
	snprintf(mon_ep, sizeof mon_ep, "inproc://bm-client-mon-%d-%u", (int)getpid(),
	         ++s_mon_seq);
	if (zmq_socket_monitor(c->sock, mon_ep, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) < 0 ||
	    (c->mon = zmq_socket(c->ctx, ZMQ_PAIR)) == NULL ||
	    zmq_setsockopt(c->mon, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
	    zmq_connect(c->mon, mon_ep) < 0) {
		rc = bm__zmq_err();
		goto fail;
	}
	if (zmq_connect(c->sock, c->endpoint) < 0) {
		rc = bm__zmq_err();
		goto fail;
	}
	c->last_rx_ms = c->last_tx_ms = bm_mono_coarse_ms();
	if (c->name[0] != '\0' && o.endpoint == NULL && s_direct_wanted(o.direct)) {
		bm_direct_ops_t ops = {.arg = c, .on_frame = s_direct_frame, .to_broker = s_direct_out,
		                       .fallback = s_direct_fallback};

		/* Without routes the client works as before: not an error. */
		if ((rc = bm__direct_new(o.dir, c->name, &ops, &c->direct)) < 0) {
			bm_debug("direct routes off: %s", bm_strerror(rc));
		}
	}
	if (c->name[0] != '\0') {
		if ((rc = s_hello(c)) < 0) {
			goto fail;
		}
		rc = s_pump_until(c, o.connect_timeout_ms > 0 ? o.connect_timeout_ms : 3000,
		                  s_welcomed, NULL);
		if (rc == 0 && c->denied) {
			rc = c->denied;
		}
	} else {
		if ((rc = s_send_cmd(c, BM_CMD_PING)) < 0) {
			goto fail;
		}
		rc = s_pump_until(c, o.connect_timeout_ms > 0 ? o.connect_timeout_ms : 3000,
		                  s_ponged, &pongs);
	}
	if (rc == -ETIMEDOUT) {
		/* A ZAP refusal is silent: the handshake just never completes. */
		rc = o.key_file != NULL ? BM_ENOCURVE : BM_ENOBROKER;
	}
	if (rc < 0) {
		goto fail;
	}
	*ret_client = c;
	return 0;
fail:
	bm_client_destroy(&c);
	return rc;
}

void
bm_client_destroy(bm_client_t **self_p)
{
	bm_client_t *c;
	bm_event_t ev;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	c = *self_p;
	if (c->sock != NULL) {
		(void)s_flush_acks(c);
		if (c->registered) {
			(void)s_send_cmd(c, BM_CMD_BYE);
		}
		if (c->mon != NULL) {
			zmq_close(c->mon);
			(void)zmq_socket_monitor(c->sock, NULL, 0);
		}
		zmq_close(c->sock);
	}
	bm__direct_flush(c->direct);
	bm__direct_destroy(&c->direct);
	if (c->ctx != NULL && c->own_ctx) {
		zmq_ctx_term(c->ctx);
	}
	while (c->head != NULL) {
		s_take(c, NULL, c->head, &ev);
		bm_event_clear(&ev);
	}
	while (c->spare != NULL) {
		s_node_t *n = c->spare;

		c->spare = n->next;
		free(n);
	}
	zmq_msg_close(&c->reply);
	msgpack_zone_destroy(&c->zone);
	free(c);
	*self_p = NULL;
}

/* ---- messaging ---- */

/*
 * A SEND of body (a frame, zero copy) or of data/len (copied: inline in
 * frame 0 when small and the broker takes that, else into a frame).
 */
static int
s_send_msg(bm_client_t *c, const bm_send_opts_t *o, zmq_msg_t *body, const void *data,
           size_t len, const char *route, bm_id_t *ret_id)
{
	bm_env_t e;
	zmq_msg_t m;
	int rc;

	/* Only the fixed part: a SEND's encoding reads no text or caps, and
	 * zeroing them would be most of the bytes this function touches. */
	memset(&e, 0, offsetof(bm_env_t, text));
	e.cmd = BM_CMD_SEND;
	if (body != NULL) {
		len = zmq_msg_size(body);
	}
	if (c->name[0] == '\0') {
		return BM_ENOTREG;
	}
	if ((rc = bm_address_check(o->to)) < 0 ||
	    (o->type != NULL && (rc = bm_type_check(o->type)) < 0)) {
		return rc;
	}
	if (len > c->max_body) {
		return BM_ETOOBIG;
	}
	if (!c->registered) {
		/* Keep the session going so a caller that only sends still
		 * re-registers after a broker restart. */
		s_tick(c);
		(void)s_read_one(c);
		if (!c->registered) {
			return BM_ENOTREG;
		}
	}
	e.ts_ms = o->ts_ms ? o->ts_ms : bm_wall_ms();
	if (o->id != NULL) {
		e.id = *o->id;
	} else {
		s_id_new(c, e.ts_ms, &e.id);
	}
	if (o->corr != NULL) {
		e.corr = *o->corr;
	}
	s_strcpy(e.name, sizeof e.name, o->to);
	if (route != NULL) {
		s_strcpy(e.route, sizeof e.route, route);
	}
	s_strcpy(e.type, sizeof e.type, o->type ? o->type : "msg");
	e.priority = o->priority;
	e.ttl_ms = o->ttl_ms;
	e.attempt = o->attempt;
	if (o->traceparent != NULL && o->traceparent[0] != '\0') {
		size_t n = strlen(o->traceparent);

		if (n > BM_TRACEPARENT_MAX) {
			return -EINVAL;
		}
		e.tp = o->traceparent;
		e.tp_len = (uint16_t)n;
	}
	if (o->tracestate != NULL && o->tracestate[0] != '\0') {
		size_t n = strlen(o->tracestate);

		if (n > BM_TRACESTATE_MAX) {
			return -EINVAL;
		}
		e.ts = o->tracestate;
		e.ts_len = (uint16_t)n;
	}
	if (c->direct != NULL && c->broker_direct && route == NULL &&
	    (rc = bm__direct_send(c->direct, &e, body != NULL ? zmq_msg_data(body) : data, len)) != 0) {
		if (rc < 0) {
			return rc; /* BM_EFULL: the ring is full, back off */
		}
		if (body != NULL) {
			/* Sent: the frame is the caller's no more (as zmq_msg_send). */
			zmq_msg_close(body);
			zmq_msg_init(body);
		}
		if (ret_id != NULL) {
			*ret_id = e.id;
		}
		return 0;
	}
	if (body != NULL) {
		rc = s_send_env(c, &e, body);
	} else if (c->broker_inline && len <= BM_INLINE_MAX) {
		rc = s_send_inline(c, &e, data, len);
	} else {
		if (zmq_msg_init_size(&m, len) < 0) {
			return -ENOMEM;
		}
		if (len > 0) {
			memcpy(zmq_msg_data(&m), data, len);
		}
		rc = s_send_env(c, &e, &m);
		zmq_msg_close(&m);
	}
	if (rc == 0 && ret_id != NULL) {
		*ret_id = e.id;
	}
	return rc;
}

int
bm_client_send_frame(bm_client_t *c, const bm_send_opts_t *o, zmq_msg_t *body, bm_id_t *ret_id)
{
	if (c == NULL || o == NULL || body == NULL) {
		return -EINVAL;
	}
	return s_send_msg(c, o, body, NULL, 0, NULL, ret_id);
}

int
bm_client_send(bm_client_t *c, const bm_send_opts_t *o, const void *body, size_t len,
               bm_id_t *ret_id)
{
	if (c == NULL || o == NULL || (body == NULL && len > 0)) {
		return -EINVAL;
	}
	return s_send_msg(c, o, NULL, body, len, NULL, ret_id);
}

static int
s_ack(bm_client_t *c, const bm_msg_t *m, int cmd, int code, const char *text)
{
	bm_env_t e = {.cmd = (uint8_t)cmd, .id = m->id, .code = code};

	if (c == NULL || m == NULL) {
		return -EINVAL;
	}
	s_strcpy(e.name, sizeof e.name, m->from);
	s_strcpy(e.text, sizeof e.text, text ? text : "");
	if (bm__direct_ack(c->direct, &e, false) == 1) {
		return 0;
	}
	return s_send_env(c, &e, NULL);
}

/*
 * ACKs of a burst travel together: while more deliveries wait (queued in
 * the client or readable on the socket) an ACK is held, up to BM_ACKS_MAX
 * of them to one sender, and the last of the burst sends them all as one
 * ACKS frame.  A lone message is ACKed at once, so latency is unchanged;
 * whatever is held leaves before the client waits or sends anything else.
 */
int
bm_client_ack(bm_client_t *c, const bm_msg_t *m)
{
	int rc;

	if (c == NULL || m == NULL) {
		return -EINVAL;
	}
	if (!c->broker_acks || c->direct != NULL) {
		bm_env_t e;

		/* Only the fixed part: zeroing all of it costs more than the
		 * ring write this ACK becomes. */
		memset(&e, 0, offsetof(bm_env_t, text));
		e.text[0] = '\0';
		e.cmd = BM_CMD_ACK;
		e.id = m->id;
		/* The ACK of a message that came over a route goes back on it,
		 * held while more deliveries wait (one ACKS record for a burst). */
		s_strcpy(e.name, sizeof e.name, m->from);
		if (bm__direct_ack(c->direct, &e,
		                   c->head != NULL || bm__direct_readable(c->direct)) == 1) {
			return 0;
		}
		if (!c->broker_acks) {
			return s_ack(c, m, BM_CMD_ACK, 0, NULL);
		}
	}
	if (c->nacks > 0 && strcmp(c->ack_peer, m->from) != 0 && (rc = s_flush_acks(c)) < 0) {
		return rc;
	}
	if (c->nacks == 0) {
		memcpy(c->ack_peer, m->from, sizeof c->ack_peer);
	}
	memcpy(c->ack_ids + (size_t)c->nacks * sizeof m->id.b, m->id.b, sizeof m->id.b);
	c->nacks++;
	/* More deliveries waiting, queued or readable: hold the ACK.  A read
	 * is what tells (as cheap as asking zmq whether one would succeed,
	 * and when it does, the delivery is queued already). */
	for (int i = 0; i < 4 && c->head == NULL && c->nacks < BM_ACKS_MAX; i++) {
		rc = s_read_one(c);
		c->drained = rc == -EAGAIN;
		if (rc < 0) {
			break;
		}
	}
	if (c->nacks < BM_ACKS_MAX && c->head != NULL) {
		return 0;
	}
	rc = s_flush_acks(c);
	/* Still held when the queue is full: not an error for this ACK. */
	return rc == BM_EFULL ? 0 : rc;
}

int
bm_client_flush(bm_client_t *c)
{
	return c == NULL ? -EINVAL : s_flush_acks(c);
}

int
bm_client_nack(bm_client_t *c, const bm_msg_t *m, int code, const char *text)
{
	return s_ack(c, m, BM_CMD_NACK, code, text);
}

int
bm_client_reply(bm_client_t *c, const bm_msg_t *req, const char *type, const void *body,
                size_t len)
{
	bm_send_opts_t o = {.to = req ? req->from : NULL, .type = type, .corr = req ? &req->id : NULL};

	if (req == NULL) {
		return -EINVAL;
	}
	/* A reply belongs to its request's trace. */
	o.traceparent = req->traceparent;
	o.tracestate = req->tracestate;
	return bm_client_send(c, &o, body, len, NULL);
}

typedef struct {
	bm_id_t id;          /* the request's id */
	s_node_t *prev;      /* predecessor of the match */
	s_node_t *match;     /* the reply or NACK */
} s_wait_t;

/* Finds the reply (or refusal) of a request; drops the request's own ACK. */
static bool
s_find_reply(bm_client_t *c, void *arg)
{
	s_wait_t *w = arg;
	s_node_t *prev = NULL, *n = c->head;

	while (n != NULL) {
		bm_event_t *ev = &n->ev;

		if (ev->kind == BM_EV_ACK && bm_id_equal(&ev->id, &w->id)) {
			s_node_t *next = n->next;
			bm_event_t gone;

			s_take(c, prev, n, &gone);
			n = next;
			continue;
		}
		if ((ev->kind == BM_EV_MESSAGE && bm_id_equal(&ev->msg->corr, &w->id)) ||
		    (ev->kind == BM_EV_NACK && bm_id_equal(&ev->id, &w->id))) {
			w->prev = prev;
			w->match = n;
			return true;
		}
		prev = n;
		n = n->next;
	}
	return false;
}

int
bm_client_request(bm_client_t *c, const char *to, const char *type, const void *body,
                  size_t len, int timeout_ms, bm_msg_t **ret_reply)
{
	bm_send_opts_t o = {.to = to, .type = type};
	s_wait_t w = {0};
	bm_event_t ev;
	int rc;

	if (c == NULL || ret_reply == NULL) {
		return -EINVAL;
	}
	if ((rc = bm_client_send(c, &o, body, len, &w.id)) < 0) {
		return rc;
	}
	if ((rc = s_pump_until(c, timeout_ms, s_find_reply, &w)) < 0) {
		return rc;
	}
	s_take(c, w.prev, w.match, &ev);
	if (ev.kind == BM_EV_NACK) {
		rc = ev.code < 0 ? ev.code : BM_EDENIED;
		bm_event_clear(&ev);
		return rc;
	}
	(void)bm_client_ack(c, ev.msg);
	*ret_reply = ev.msg;
	return 0;
}

/* ---- directory, stats, ping ---- */

static bool
s_got_reply(bm_client_t *c, void *arg)
{
	return c->reply_cmd == *(int *)arg;
}

/* Sends a request (e: LIST, STATS or TRACE) and unpacks its reply's body. */
static int
s_query_env(bm_client_t *c, const bm_env_t *e, int timeout_ms, msgpack_object *ret_obj)
{
	int want = e->cmd == BM_CMD_LIST ? BM_CMD_DIRECTORY : e->cmd;
	size_t off = 0;
	int rc;

	c->reply_cmd = 0;
	if ((rc = s_send_env(c, e, NULL)) < 0) {
		return rc;
	}
	if ((rc = s_pump_until(c, timeout_ms, s_got_reply, &want)) < 0) {
		return rc;
	}
	c->reply_cmd = 0;
	msgpack_zone_clear(&c->zone);
	if (!bm__msgpack_check(zmq_msg_data(&c->reply), zmq_msg_size(&c->reply)) ||
	    msgpack_unpack(zmq_msg_data(&c->reply), zmq_msg_size(&c->reply), &off, &c->zone,
	                   ret_obj) != MSGPACK_UNPACK_SUCCESS) {
		return BM_EPROTO;
	}
	return 0;
}

static int
s_query(bm_client_t *c, int cmd, int timeout_ms, msgpack_object *ret_obj)
{
	bm_env_t e = {.cmd = (uint8_t)cmd};

	return s_query_env(c, &e, timeout_ms, ret_obj);
}

static const msgpack_object *
s_map_get(const msgpack_object *map, const char *key)
{
	size_t klen = strlen(key);

	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
		    memcmp(k->via.str.ptr, key, klen) == 0) {
			return &map->via.map.ptr[i].val;
		}
	}
	return NULL;
}

static int64_t
s_map_int(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = s_map_get(map, key);

	if (v == NULL) {
		return 0;
	}
	if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		return v->via.u64 > INT64_MAX ? INT64_MAX : (int64_t)v->via.u64;
	}
	return v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? v->via.i64 : 0;
}

static void
s_copy_str(const msgpack_object *o, char *out, size_t cap)
{
	size_t n = 0;

	if (o != NULL && o->type == MSGPACK_OBJECT_STR) {
		n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
		memcpy(out, o->via.str.ptr, n);
	}
	out[n] = '\0';
}

/* A DIRECTORY entry's "direct" map as "peer:msgs,...". */
static void
s_direct_text(const msgpack_object *o, char *out, size_t cap)
{
	size_t at = 0;

	out[0] = '\0';
	for (uint32_t i = 0; o != NULL && o->type == MSGPACK_OBJECT_MAP && i < o->via.map.size; i++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[i];
		char peer[BM_NAME_MAX + 1];
		int n;

		s_copy_str(&kv->key, peer, sizeof peer);
		n = snprintf(out + at, cap - at, "%s%s:%llu", at ? "," : "", peer,
		             kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER
		                 ? (unsigned long long)kv->val.via.u64
		                 : 0ULL);
		if (n < 0 || (size_t)n >= cap - at) {
			out[at] = '\0';
			return;
		}
		at += (size_t)n;
	}
}

int
bm_client_list(bm_client_t *c, int timeout_ms, bm_agent_info_t **ret_agents, size_t *ret_count)
{
	msgpack_object root;
	bm_agent_info_t *v;
	uint32_t n;
	int rc;

	if (c == NULL || ret_agents == NULL || ret_count == NULL) {
		return -EINVAL;
	}
	if ((rc = s_query(c, BM_CMD_LIST, timeout_ms, &root)) < 0) {
		return rc;
	}
	if (root.type != MSGPACK_OBJECT_ARRAY) {
		return BM_EPROTO;
	}
	n = root.via.array.size;
	v = calloc(n ? n : 1, sizeof *v);
	if (v == NULL) {
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *m = &root.via.array.ptr[i], *caps;

		if (m->type != MSGPACK_OBJECT_MAP) {
			free(v);
			return BM_EPROTO;
		}
		s_copy_str(s_map_get(m, "name"), v[i].name, sizeof v[i].name);
		caps = s_map_get(m, "caps");
		for (uint32_t k = 0; caps && caps->type == MSGPACK_OBJECT_ARRAY &&
		                     k < caps->via.array.size && k < BM_CAPS_MAX;
		     k++) {
			s_copy_str(&caps->via.array.ptr[k], v[i].caps[k], sizeof v[i].caps[k]);
			v[i].ncaps = (int)k + 1;
		}
		v[i].idle_ms = s_map_int(m, "idle_ms");
		v[i].inflight = (uint64_t)s_map_int(m, "inflight");
		v[i].sent = (uint64_t)s_map_int(m, "sent");
		v[i].delivered = (uint64_t)s_map_int(m, "delivered");
		v[i].acked = (uint64_t)s_map_int(m, "acked");
		v[i].unacked_bytes = (uint64_t)s_map_int(m, "unacked_bytes");
		/* Absent (an old beastd, or no report yet): -1. */
		v[i].outbox_pending = s_map_get(m, "outbox_pending") ? s_map_int(m, "outbox_pending") : -1;
		v[i].outbox_dead = s_map_get(m, "outbox_dead") ? s_map_int(m, "outbox_dead") : -1;
		v[i].outbox_retries = s_map_get(m, "outbox_retries") ? s_map_int(m, "outbox_retries") : -1;
		s_direct_text(s_map_get(m, "direct"), v[i].direct, sizeof v[i].direct);
	}
	*ret_agents = v;
	*ret_count = n;
	return 0;
}

int
bm_client_stats(bm_client_t *c, int timeout_ms, bm_stat_t **ret_stats, size_t *ret_count)
{
	msgpack_object root;
	bm_stat_t *v;
	uint32_t n;
	int rc;

	if (c == NULL || ret_stats == NULL || ret_count == NULL) {
		return -EINVAL;
	}
	if ((rc = s_query(c, BM_CMD_STATS, timeout_ms, &root)) < 0) {
		return rc;
	}
	if (root.type != MSGPACK_OBJECT_MAP) {
		return BM_EPROTO;
	}
	n = root.via.map.size;
	v = calloc(n ? n : 1, sizeof *v);
	if (v == NULL) {
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *val = &root.via.map.ptr[i].val;

		s_copy_str(&root.via.map.ptr[i].key, v[i].key, sizeof v[i].key);
		if (val->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
			v[i].value = val->via.u64 > INT64_MAX ? INT64_MAX : (int64_t)val->via.u64;
		} else if (val->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
			v[i].value = val->via.i64;
		}
	}
	*ret_stats = v;
	*ret_count = n;
	return 0;
}

int
bm_client_trace(bm_client_t *c, const bm_id_t *id, int timeout_ms, bm_trace_event_t **ret_events,
                size_t *ret_count)
{
	static const char *const kinds[] = {"routed", "nacked", "acked", "refused"};
	bm_env_t e = {.cmd = BM_CMD_TRACE};
	msgpack_object root;
	bm_trace_event_t *v;
	size_t n = 0;
	int rc;

	if (c == NULL || id == NULL || ret_events == NULL || ret_count == NULL) {
		return -EINVAL;
	}
	e.id = *id;
	if ((rc = s_query_env(c, &e, timeout_ms, &root)) < 0) {
		return rc;
	}
	if (root.type != MSGPACK_OBJECT_ARRAY) {
		return BM_EPROTO;
	}
	v = calloc(root.via.array.size ? root.via.array.size : 1, sizeof *v);
	if (v == NULL) {
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < root.via.array.size; i++) {
		const msgpack_object *m = &root.via.array.ptr[i], *ev;
		int64_t code;

		if (m->type != MSGPACK_OBJECT_MAP || (ev = s_map_get(m, "ev")) == NULL ||
		    ev->type != MSGPACK_OBJECT_STR) {
			continue;
		}
		for (int k = 0; k < 4; k++) {
			if (ev->via.str.size == strlen(kinds[k]) &&
			    memcmp(ev->via.str.ptr, kinds[k], ev->via.str.size) == 0) {
				v[n].kind = k + 1;
			}
		}
		if (v[n].kind == 0) {
			continue; /* a kind a newer beastd records */
		}
		v[n].t_us = s_map_int(m, "t_us");
		if (s_map_get(m, "from") != NULL) {
			s_copy_str(s_map_get(m, "from"), v[n].from, sizeof v[n].from);
		}
		if (s_map_get(m, "to") != NULL) {
			s_copy_str(s_map_get(m, "to"), v[n].to, sizeof v[n].to);
		}
		v[n].attempt = (uint32_t)s_map_int(m, "attempt");
		code = s_map_int(m, "code");
		v[n].code = code > 0 ? bm__code_from_wire((uint64_t)code) : 0;
		n++;
	}
	*ret_events = v;
	*ret_count = n;
	return 0;
}

int64_t
bm_client_ping(bm_client_t *c, int timeout_ms)
{
	uint64_t before;
	int64_t t0;
	int rc;

	if (c == NULL) {
		return -EINVAL;
	}
	before = c->pongs;
	t0 = bm_mono_ns();
	if ((rc = s_send_cmd(c, BM_CMD_PING)) < 0 ||
	    (rc = s_pump_until(c, timeout_ms, s_ponged, &before)) < 0) {
		return rc;
	}
	return (bm_mono_ns() - t0) / 1000;
}

/* ---- accessors ---- */

void *
bm_client_socket(bm_client_t *c)
{
	return c ? c->sock : NULL;
}

void *
bm_client_monitor(bm_client_t *c)
{
	return c ? c->mon : NULL;
}

uint64_t
bm_client_reconnects(const bm_client_t *c)
{
	return c ? c->reconnects : 0;
}

const char *
bm_client_name(const bm_client_t *c)
{
	return c ? c->name : NULL;
}

bool
bm_client_registered(const bm_client_t *c)
{
	return c != NULL && c->registered;
}

size_t
bm_client_max_body(const bm_client_t *c)
{
	return c ? c->max_body : 0;
}

void
bm_client_direct_stats(const bm_client_t *c, bm_direct_stats_t *ret)
{
	if (ret != NULL) {
		bm__direct_stats(c ? c->direct : NULL, ret);
	}
}

int
bm_client_direct_fd(const bm_client_t *c)
{
	return c != NULL && c->direct != NULL ? bm__direct_fd(c->direct) : -1;
}

bm_direct_t *
bm__client_direct(bm_client_t *c)
{
	return c ? c->direct : NULL;
}

int
bm_client_forward(bm_client_t *c, const bm_send_opts_t *o, const char *origin, const void *body,
                  size_t len, bm_id_t *ret_id)
{
	if (c == NULL || o == NULL || (len > 0 && body == NULL) ||
	    bm_address_check(origin) < 0 || !bm_address_remote(origin)) {
		return -EINVAL;
	}
	return s_send_msg(c, o, NULL, body, len, origin, ret_id);
}

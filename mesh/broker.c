/*
 * broker.c - the mesh broker inside beastd.
 *
 * One ROUTER socket, bound at ipc://$BEAST_DIR/mesh.sock (and optionally a
 * loopback tcp endpoint), served by one thread that never blocks: every
 * send is ZMQ_DONTWAIT with ZMQ_ROUTER_MANDATORY, so a peer that is gone
 * (EHOSTUNREACH) or not keeping up (EAGAIN at the high-water mark) turns
 * into a NACK to the sender, never a silent drop and never a stall.
 *
 * The directory maps agent names to ZeroMQ routing ids.  The broker owns
 * the routing ids (the ROUTER assigns them); names are bound to them by
 * HELLO.  A name is owned by its live holder: a second HELLO for it is
 * DENIED unless a probe shows the holder's connection is already gone.
 * Agents are dropped on BYE, on a failed send, or after three heartbeat
 * intervals of silence; every drop is logged and announced (NOTICE).
 *
 * Routing: SEND names a destination or "@capability"; the broker rewrites
 * the header into a DELIVER carrying the sender's name and forwards the
 * body frame untouched (zmq_msg_send moves it, no copy).  Anycast picks the
 * live agent with that capability and the fewest unacknowledged
 * deliveries, rotating among equals.  ACK and NACK from a receiver go back
 * to the sender named in them.
 *
 * CURVE: with --curve the tcp endpoint is a ROUTER of its own, in czmq's
 * context beside the zauth actor that answers ZAP with the allow-list.
 * Inside the broker a routing id is prefixed with one byte naming the
 * socket it came in on (S_SOCK_MAIN, S_SOCK_CURVE), so ids the two ROUTERs
 * assign can never collide and every send finds its socket.  A HELLO over
 * CURVE must carry the name written in the allowed certificate of the key
 * that authenticated the connection (ZAP User-Id): name ownership is bound
 * to the key.  ipc peers are not asked: the 0700 runtime dir is their
 * boundary.
 *
 * Direct routes (protocol.md §16): two local agents that both announced
 * BM_FEAT_DIRECT may exchange their messages over shared-memory rings.
 * The broker stays the authority: an agent asks (ROUTE "ask"), the broker
 * checks that both are registered and announced the feature, and
 * introduces them with a fresh random token (ROUTE "accept" to the peer,
 * then "connect" to the asker); the agents set the rings up between
 * themselves and report them (ROUTE "up"/"down" with the messages sent
 * over them), which LIST and STATS show, and relays each side's "fence"
 * to the other (it marks the end of what went through beastd before the
 * route).  Anycast is never direct.
 *
 * Input is never trusted: a frame that does not decode is answered with
 * ERROR (or NACK when it names a message) and counted; routing goes on.
 *
 * Threading: a bm_broker_t is used by one thread.  The stop flag is read
 * between polls; a signal interrupts zmq_poll (EINTR) so stop is prompt.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <czmq.h>

#include "mesh_private.h"

#define S_RID_MAX 256          /* socket byte + a ZeroMQ routing id (<= 255) */
#define S_SOCK_MAIN 0          /* first routing-id byte: ipc (+ plain tcp) */
#define S_SOCK_CURVE 1         /* first routing-id byte: the CURVE ROUTER */
#define S_DRAIN_BATCH 4096     /* messages handled per poll wake-up */
#define S_HDR_BUF 2048         /* encoded headers the broker sends */
#define S_DIRECT_MAX 16        /* direct routes reported per agent (the client's cap) */

typedef struct {
	char peer[BM_NAME_MAX + 1];  /* the other end, "" = free slot */
	uint64_t msgs;               /* messages this agent sent over it (reported) */
} s_direct_t;

typedef struct s_agent {
	char name[BM_NAME_MAX + 1];            /* registered name */
	uint8_t rid[S_RID_MAX];                /* ZeroMQ routing id */
	size_t rid_len;                        /* its length */
	char caps[BM_CAPS_MAX][BM_CAP_MAX + 1]; /* capabilities */
	int ncaps;                             /* how many */
	uint32_t heartbeat_ms;                 /* interval it promised */
	int64_t last_seen_ms;                  /* bm_mono_coarse_ms() of last frame */
	uint64_t inflight;                     /* delivered, not yet (N)ACKed */
	uint64_t pending_bytes;                /* their bodies' bytes (see s_settle) */
	uint64_t sent;                         /* SENDs it made */
	uint64_t delivered;                    /* DELIVERs it got */
	uint64_t acked;                        /* ACKs it gave */
	bool acks;                             /* takes ACKS (BM_FEAT_ACKS) */
	bool inl;                              /* takes inline bodies (BM_FEAT_INLINE) */
	int64_t ob_pending;                    /* outbox report (PING): pending, -1 = none */
	int64_t ob_dead;                       /* ... dead letters */
	int64_t ob_retries;                    /* ... resends made */
	bool direct;                           /* takes direct routes (BM_FEAT_DIRECT) */
	s_direct_t routes[S_DIRECT_MAX];       /* its direct routes, as it reports them */
} s_agent_t;

/* X(field): broker counters, reported by STATS in this order. */
#define S_STATS(X)                                                            \
	X(frames)        /* messages received */                              \
	X(sends)         /* SENDs received */                                 \
	X(delivers)      /* DELIVERs forwarded */                             \
	X(acks)          /* ACKs relayed (one per message id) */              \
	X(ack_frames)    /* ACK and ACKS frames received */                   \
	X(nacks)         /* NACKs sent or relayed */                          \
	X(nack_noagent)  /* no such agent / capability */                     \
	X(nack_toobig)   /* body over the cap */                              \
	X(nack_busy)     /* receiver at its high-water mark */                \
	X(nack_pending)  /* receiver over its pending-bytes cap (BUSY) */     \
	X(nack_notreg)   /* SEND from an unregistered peer */                 \
	X(malformed)     /* frames that did not decode */                     \
	X(unroutable)    /* ACK/NACK whose sender is gone */                  \
	X(hellos)        /* registrations */                                  \
	X(denied)        /* refused registrations */                          \
	X(denied_key)    /* of which: name not bound to the CURVE key */      \
	X(gone)          /* agents dropped for silence or a dead pipe */      \
	X(byes)          /* agents that said goodbye */                       \
	X(pings)         /* PINGs answered */                                 \
	X(routes_introduced) /* direct routes introduced (ROUTE ask granted) */ \
	X(routes_refused)    /* ROUTE asks refused */                          \
	X(routes_closed)     /* direct routes reported down */

typedef struct {
#define S_FIELD(n) uint64_t n;
	S_STATS(S_FIELD)
#undef S_FIELD
} s_stats_t;

struct bm_broker {
	void *ctx;                         /* zmq context (owned) */
	void *router;                      /* the ROUTER socket */
	zsock_t *curve_sock;               /* CURVE ROUTER on tcp, or NULL */
	void *curve_router;                /* its libzmq handle */
	bool curve_ref;                    /* holds a bm_curve_server reference */
	zcertstore_t *allowed;             /* allowed certificates (names) */
	char user_id[64];                  /* ZAP User-Id of the frame in hand */
	char dir[BM_PATH_MAX];             /* runtime directory */
	char sock_path[BM_PATH_MAX];       /* DIR/mesh.sock */
	char endpoint[BM_PATH_MAX + 8];    /* ipc://DIR/mesh.sock */
	int lock_fd;                       /* flock'ed DIR/beastd.lock */
	uint32_t heartbeat_ms;             /* default interval */
	size_t max_body;                   /* body cap */
	size_t max_pending;                /* per-agent pending-bytes cap */
	bm_map_t *by_name;                 /* name -> s_agent_t (owns them) */
	bm_map_t *by_rid;                  /* routing id -> s_agent_t */
	uint64_t rotor;                    /* anycast turn among equals */
	int64_t started_ms;                /* monotonic start time */
	int64_t next_sweep_ms;             /* next liveness sweep */
	s_stats_t st;                      /* counters */
	uint8_t relay[BM_HEADER_MAX + BM_INLINE_MAX + 128]; /* rewritten headers (one thread) */
	bm_broker_stats_fn stats_fn;       /* extra STATS counters, or NULL */
	void *stats_arg;                   /* its argument */
	bm_obs_t *obs;                     /* flows, SEND->ACK histogram (obs.c) */
	bm_broker_tick_fn tick_fn;         /* periodic hook, or NULL */
	void *tick_arg;                    /* its argument */
	int tick_ms;                       /* its period */
	int64_t next_tick_ms;              /* when it runs next */
	bool no_direct;                    /* introduce no direct routes */
};

static void
s_hex(const uint8_t *p, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[p[i] >> 4];
		out[2 * i + 1] = d[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* ---- sending ---- */

/*
 * Sends [rid, header(, body)] without blocking.  On success the body frame
 * has been moved out; on failure it is untouched.  Returns 0, -EHOSTUNREACH
 * (peer gone), -EAGAIN (peer's queue full) or another negative errno.
 */
static int
s_send_raw(bm_broker_t *b, const uint8_t *rid, size_t rid_len, const void *hdr, size_t hdr_len,
           zmq_msg_t *body)
{
	/* With ROUTER_MANDATORY the identity frame is where an unroutable or
	 * full peer is refused; once it is accepted the rest of the message
	 * goes into the same pipe. */
	void *sock = rid[0] == S_SOCK_CURVE ? b->curve_router : b->router;

	if (sock == NULL || rid_len < 2) {
		return -EHOSTUNREACH;
	}
	if (zmq_send(sock, rid + 1, rid_len - 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
		return bm__zmq_err();
	}
	if (zmq_send(sock, hdr, hdr_len, ZMQ_DONTWAIT | (body ? ZMQ_SNDMORE : 0)) < 0) {
		return bm__zmq_err();
	}
	if (body != NULL && zmq_msg_send(body, sock, ZMQ_DONTWAIT) < 0) {
		return bm__zmq_err();
	}
	return 0;
}

/*
 * Sends [rid, frame(, body)] without blocking, where frame is a received
 * header frame whose first hdr_len bytes are overwritten with hdr (same
 * length) once the peer has accepted the routing id: a relay that copies
 * nothing and allocates nothing, whatever follows the header in the frame
 * (an inline body) going along as received.  On success frame and body
 * have been moved out; on failure both are untouched.  Returns as
 * s_send_raw().
 */
static int
s_send_over(bm_broker_t *b, const uint8_t *rid, size_t rid_len, zmq_msg_t *frame,
            const void *hdr, size_t hdr_len, zmq_msg_t *body)
{
	void *sock = rid[0] == S_SOCK_CURVE ? b->curve_router : b->router;

	if (sock == NULL || rid_len < 2) {
		return -EHOSTUNREACH;
	}
	if (zmq_send(sock, rid + 1, rid_len - 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
		return bm__zmq_err();
	}
	memcpy(zmq_msg_data(frame), hdr, hdr_len); /* hdr_len <= its size: decoded from it */
	if (zmq_msg_send(frame, sock, ZMQ_DONTWAIT | (body ? ZMQ_SNDMORE : 0)) < 0) {
		return bm__zmq_err();
	}
	if (body != NULL && zmq_msg_send(body, sock, ZMQ_DONTWAIT) < 0) {
		return bm__zmq_err();
	}
	return 0;
}

/*
 * Sends [rid, header(, body)] without blocking.  On success the body frame
 * has been moved out; on failure it is untouched.  Returns 0, -EHOSTUNREACH
 * (peer gone), -EAGAIN (peer's queue full) or another negative errno.
 */
static int
s_send(bm_broker_t *b, const uint8_t *rid, size_t rid_len, const bm_env_t *e, zmq_msg_t *body)
{
	uint8_t hdr[S_HDR_BUF];
	int n = bm__env_encode(e, hdr, sizeof hdr);

	if (n < 0) {
		return n;
	}
	return s_send_raw(b, rid, rid_len, hdr, (size_t)n, body);
}

static void
s_reply_error(bm_broker_t *b, const uint8_t *rid, size_t rid_len, int cmd, int code,
              const char *text)
{
	bm_env_t e = {.cmd = (uint8_t)cmd, .code = code};

	snprintf(e.text, sizeof e.text, "%s", text);
	/* Best effort: the peer may be the one that is gone or flooding. */
	(void)s_send(b, rid, rid_len, &e, NULL);
}

static void
s_nack(bm_broker_t *b, const s_agent_t *to, const bm_env_t *in, const char *peer, int code,
       const char *fmt, ...) BM_PRINTF(6, 7);

static void
s_nack(bm_broker_t *b, const s_agent_t *to, const bm_env_t *in, const char *peer, int code,
       const char *fmt, ...)
{
	bm_env_t e = {.cmd = BM_CMD_NACK, .id = in->id, .code = code};
	va_list ap;

	snprintf(e.name, sizeof e.name, "%s", peer);
	va_start(ap, fmt);
	vsnprintf(e.text, sizeof e.text, fmt, ap);
	va_end(ap);
	b->st.nacks++;
	bm__obs_trace(b->obs, BM_TRACE_NACKED, &in->id, to->name, peer, in->attempt, code,
	              bm_mono_ns());
	if (s_send(b, to->rid, to->rid_len, &e, NULL) < 0) {
		b->st.unroutable++;
	}
}

/* ---- directory ---- */

static void s_drop(bm_broker_t *b, s_agent_t *a, const char *why);

static void
s_notice_all(bm_broker_t *b, const char *event, const char *name)
{
	bm_env_t e = {.cmd = BM_CMD_NOTICE};

	snprintf(e.type, sizeof e.type, "%s", event);
	snprintf(e.name, sizeof e.name, "%s", name);
	size_t cur = 0;

	for (s_agent_t *a; (a = bm__map_next(b->by_name, &cur)) != NULL;) {
		if (strcmp(a->name, name) != 0) {
			/* A notice is advisory: a full queue skips it. */
			(void)s_send(b, a->rid, a->rid_len, &e, NULL);
		}
	}
}

static void
s_drop(bm_broker_t *b, s_agent_t *a, const char *why)
{
	char name[BM_NAME_MAX + 1];

	bm_log(BM_LOG_INFO, "agent '%s' %s", a->name, why);
	memcpy(name, a->name, sizeof name);
	bm__map_del(b->by_rid, a->rid, a->rid_len);
	bm__map_del(b->by_name, a->name, strlen(a->name));
	free(a);
	s_notice_all(b, "offline", name);
}

/* The capability of the agent that carries other hosts' traffic. */
#define S_BRIDGE "bridge"

static bool
s_has_cap(const s_agent_t *a, const char *cap)
{
	for (int i = 0; i < a->ncaps; i++) {
		if (strcmp(a->caps[i], cap) == 0) {
			return true;
		}
	}
	return false;
}

/* Least-loaded live agent with cap; among equals, turns by the rotor. */
static s_agent_t *
s_anycast(bm_broker_t *b, const char *cap)
{
	uint64_t least = UINT64_MAX, pick, k = 0;
	size_t cur = 0;

	for (s_agent_t *a; (a = bm__map_next(b->by_name, &cur)) != NULL;) {
		if (s_has_cap(a, cap)) {
			if (a->inflight < least) {
				least = a->inflight;
				k = 0;
			}
			k += a->inflight == least;
		}
	}
	if (k == 0) {
		return NULL;
	}
	pick = b->rotor++ % k;
	cur = 0;
	for (s_agent_t *a; (a = bm__map_next(b->by_name, &cur)) != NULL;) {
		if (s_has_cap(a, cap) && a->inflight == least && pick-- == 0) {
			return a;
		}
	}
	return NULL;
}

/* ---- commands ---- */

/*
 * Over CURVE a name belongs to a key: the HELLO's name must be the one in
 * the allowed certificate of the key that authenticated this connection.
 * Refuses (DENIED, counted) and returns true when it is not.
 */
static bool
s_key_refuses(bm_broker_t *b, const uint8_t *rid, size_t rid_len, const char *name)
{
	zcert_t *cert = NULL;
	const char *owner = NULL;
	char text[BM_TEXT_MAX + 1];

	if (b->allowed != NULL && b->user_id[0] != '\0') {
		cert = zcertstore_lookup(b->allowed, b->user_id);
	}
	if (cert != NULL) {
		owner = zcert_meta(cert, "name");
	}
	if (owner != NULL && strcmp(owner, name) == 0) {
		return false;
	}
	if (owner == NULL) {
		snprintf(text, sizeof text,
		         "this CURVE key has no name=... in its allowed certificate; "
		         "it cannot register '%s'",
		         name);
	} else {
		snprintf(text, sizeof text,
		         "this CURVE key belongs to '%s'; it cannot register as '%s'", owner, name);
	}
	bm_log(BM_LOG_WARN, "refused HELLO as '%s' over CURVE: key %.8s... %s%s", name,
	       b->user_id[0] ? b->user_id : "(none)", owner ? "belongs to " : "has no name",
	       owner ? owner : "");
	b->st.denied++;
	b->st.denied_key++;
	s_reply_error(b, rid, rid_len, BM_CMD_DENIED, BM_EDENIED, text);
	return true;
}

static void
s_on_hello(bm_broker_t *b, const uint8_t *rid, size_t rid_len, s_agent_t *self,
           const bm_env_t *in)
{
	s_agent_t *holder = bm__map_get(b->by_name, in->name, strlen(in->name));
	bm_env_t out = {.cmd = BM_CMD_WELCOME};

	if (rid[0] == S_SOCK_CURVE && s_key_refuses(b, rid, rid_len, in->name)) {
		return;
	}

	if (holder != NULL && holder != self) {
		/* A live holder keeps its name.  Probe it: with ROUTER_MANDATORY
		 * a holder whose connection is gone fails at once. */
		bm_env_t ping = {.cmd = BM_CMD_PING};

		if (s_send(b, holder->rid, holder->rid_len, &ping, NULL) != -EHOSTUNREACH) {
			char text[BM_TEXT_MAX + 1];

			b->st.denied++;
			snprintf(text, sizeof text,
			         "name '%s' is held by a live agent; pick another name or stop it first",
			         in->name);
			s_reply_error(b, rid, rid_len, BM_CMD_DENIED, BM_ENAMETAKEN, text);
			return;
		}
		b->st.gone++;
		s_drop(b, holder, "gone (connection closed); name taken over");
	}
	if (self != NULL && strcmp(self->name, in->name) != 0) {
		s_drop(b, self, "re-registered under another name");
		self = NULL;
	}
	if (self == NULL) {
		self = calloc(1, sizeof *self);
		if (self == NULL) {
			s_reply_error(b, rid, rid_len, BM_CMD_DENIED, -ENOMEM, "broker is out of memory");
			return;
		}
		memcpy(self->name, in->name, sizeof self->name);
		memcpy(self->rid, rid, rid_len);
		self->rid_len = rid_len;
		self->ob_pending = self->ob_dead = self->ob_retries = -1;
		if (bm__map_put(b->by_name, self->name, strlen(self->name), self) < 0 ||
		    bm__map_put(b->by_rid, self->rid, self->rid_len, self) < 0) {
			bm__map_del(b->by_name, self->name, strlen(self->name));
			free(self);
			s_reply_error(b, rid, rid_len, BM_CMD_DENIED, -ENOMEM, "broker is out of memory");
			return;
		}
		bm_log(BM_LOG_INFO, "agent '%s' online", self->name);
		s_notice_all(b, "online", self->name);
	}
	self->ncaps = in->ncaps;
	memcpy(self->caps, in->caps, (size_t)in->ncaps * sizeof self->caps[0]);
	self->heartbeat_ms = in->heartbeat_ms ? in->heartbeat_ms : b->heartbeat_ms;
	self->acks = (in->features & BM_FEAT_ACKS) != 0;
	self->inl = (in->features & BM_FEAT_INLINE) != 0;
	self->direct = !b->no_direct && (in->features & BM_FEAT_DIRECT) != 0;
	self->last_seen_ms = bm_mono_coarse_ms();
	b->st.hellos++;
	memcpy(out.name, self->name, sizeof self->name);
	out.heartbeat_ms = self->heartbeat_ms;
	out.max_body = b->max_body;
	out.features = BM_FEAT_ACKS | BM_FEAT_INLINE | (b->no_direct ? 0 : BM_FEAT_DIRECT);
	(void)s_send(b, rid, rid_len, &out, NULL);
}

/* The slot of self's route to peer, or a free one (create), or NULL. */
static s_direct_t *
s_direct_slot(s_agent_t *self, const char *peer, bool create)
{
	s_direct_t *free_slot = NULL;

	for (int i = 0; i < S_DIRECT_MAX; i++) {
		if (strcmp(self->routes[i].peer, peer) == 0) {
			return &self->routes[i];
		}
		if (free_slot == NULL && self->routes[i].peer[0] == '\0') {
			free_slot = &self->routes[i];
		}
	}
	if (create && free_slot != NULL) {
		memcpy(free_slot->peer, peer, sizeof free_slot->peer);
		free_slot->msgs = 0;
		return free_slot;
	}
	return NULL;
}

/*
 * ROUTE from an agent: "ask" for an introduction to the agent named, or
 * "up" / "down" reports of a route and the messages sent over it.
 */
static void
s_on_route(bm_broker_t *b, s_agent_t *self, const bm_env_t *in)
{
	s_agent_t *peer = bm__map_get(b->by_name, in->name, strlen(in->name));
	bm_env_t out = {.cmd = BM_CMD_ROUTE};
	s_direct_t *d;

	if (strcmp(in->type, "up") == 0) {
		if ((d = s_direct_slot(self, in->name, true)) != NULL) {
			d->msgs = in->attempt;
		}
		return;
	}
	if (strcmp(in->type, "down") == 0) {
		if ((d = s_direct_slot(self, in->name, false)) != NULL) {
			d->peer[0] = '\0';
			b->st.routes_closed++;
		}
		return;
	}
	if (strcmp(in->type, "fence") == 0) {
		/* Relayed on the pipe that carries self's DELIVERs to peer, so it
		 * arrives behind all of them. */
		if (peer != NULL && peer != self) {
			snprintf(out.type, sizeof out.type, "fence");
			memcpy(out.name, self->name, sizeof out.name);
			out.attempt = in->attempt;
			(void)s_send(b, peer->rid, peer->rid_len, &out, NULL);
		}
		return;
	}
	if (strcmp(in->type, "ask") != 0) {
		return; /* an event a later revision defines */
	}
	if (peer == NULL || peer == self || !self->direct || !peer->direct) {
		b->st.routes_refused++;
		out.code = peer == NULL ? BM_ENOAGENT : BM_EDENIED;
		snprintf(out.type, sizeof out.type, "refused");
		memcpy(out.name, in->name, sizeof out.name);
		(void)s_send(b, self->rid, self->rid_len, &out, NULL);
		return;
	}
	/* The peer learns first, so its listener knows the token by the time
	 * the asker connects (the asker retries a connect the peer refused
	 * for an unknown token only after a new introduction). */
	bm_id_new(&out.id);
	snprintf(out.type, sizeof out.type, "accept");
	memcpy(out.name, self->name, sizeof out.name);
	if (s_send(b, peer->rid, peer->rid_len, &out, NULL) < 0) {
		b->st.routes_refused++;
		out.id = (bm_id_t){{0}};
		out.code = BM_EBUSY;
		snprintf(out.type, sizeof out.type, "refused");
		memcpy(out.name, peer->name, sizeof out.name);
		(void)s_send(b, self->rid, self->rid_len, &out, NULL);
		return;
	}
	snprintf(out.type, sizeof out.type, "connect");
	memcpy(out.name, peer->name, sizeof out.name);
	(void)s_send(b, self->rid, self->rid_len, &out, NULL);
	b->st.routes_introduced++;
}

static void
s_on_send(bm_broker_t *b, s_agent_t *from, bm_env_t *in, zmq_msg_t *hdr, zmq_msg_t *body)
{
	char addr[BM_ADDR_MAX + 1];
	int n;
	bool any = in->name[0] == '@';
	size_t flen = zmq_msg_size(hdr), ilen = flen - in->hdr_len; /* inline body */
	size_t blen = ilen > 0 ? ilen : zmq_msg_size(body);
	s_agent_t *to;
	zmq_msg_t split;
	const char *origin;
	bool remote, rebuild;
	int rc;

	b->st.sends++;
	from->sent++;
	if (blen > b->max_body) {
		b->st.nack_toobig++;
		s_nack(b, from, in, in->name, BM_ETOOBIG,
		       "body of %zu bytes is over the %zu-byte cap; send bulk data through shm",
		       blen, b->max_body);
		return;
	}
	memcpy(addr, in->name, sizeof addr);
	/* Another host's address goes to the local bridge, which gets the
	 * address in the route field; a bridge's SEND that names a remote
	 * origin is delivered from that origin (docs/multihost.md). */
	remote = bm_address_remote(addr);
	origin = in->route[0] != '\0' && bm_address_remote(in->route) && s_has_cap(from, S_BRIDGE)
	             ? in->route
	             : NULL;
	rebuild = remote || origin != NULL || in->route[0] != '\0';
	to = remote ? s_anycast(b, S_BRIDGE)
	     : any  ? s_anycast(b, addr + 1)
	            : bm__map_get(b->by_name, addr, strlen(addr));
	while (to != NULL) {
		/* The DELIVER header is the SEND header, byte for byte, with the
		 * command and the name field swapped: no re-encoding.  An inline
		 * body stays inline for a receiver that takes it; for one that
		 * does not it goes in a body frame of its own. */
		bool keep_inline = ilen > 0 && to->inl;

		/* Memory toward a slow or stuck receiver is bounded: past the
		 * cap the sender hears BUSY and retries; one delivery always
		 * fits, so a body up to max_body can always get through. */
		if (to->inflight > 0 && to->pending_bytes + blen > b->max_pending) {
			b->st.nack_busy++;
			b->st.nack_pending++;
			s_nack(b, from, in, addr, BM_EBUSY,
			       "agent '%s' has %llu bytes not yet acknowledged (cap %zu, beastd "
			       "--max-pending); retry later",
			       to->name, (unsigned long long)to->pending_bytes, b->max_pending);
			return;
		}

		if (in->type[0] == 'b' && strcmp(in->type, "blob.announce") == 0) {
			/* Read before the frames are moved out by the send. */
			if (ilen > 0) {
				bm__obs_blob(b->obs, (const uint8_t *)zmq_msg_data(hdr) + in->hdr_len, ilen);
			} else {
				bm__obs_blob(b->obs, zmq_msg_data(body), zmq_msg_size(body));
			}
		}
		if (rebuild) {
			n = bm__env_deliver(zmq_msg_data(hdr), in, origin ? origin : from->name,
			                    remote ? addr : NULL, b->relay,
			                    sizeof b->relay - BM_INLINE_MAX);
		} else {
			n = bm__env_retarget(zmq_msg_data(hdr), in->hdr_len, in, BM_CMD_DELIVER,
			                     from->name, b->relay, sizeof b->relay - BM_INLINE_MAX);
		}
		if (n < 0) {
			s_nack(b, from, in, addr, BM_EPROTO, "header cannot be relayed: %s",
			       bm_strerror(n));
			return;
		}
		if (!rebuild && !(ilen > 0 && !keep_inline) &&
		    bm__env_pad(b->relay, (size_t)n, in->hdr_len)) {
			/* The usual case (the sender's name no longer than the
			 * name it addressed): the DELIVER header fits where the
			 * SEND header was, so the frame itself is relayed. */
			rc = s_send_over(b, to->rid, to->rid_len, hdr, b->relay, in->hdr_len,
			                 keep_inline ? NULL : body);
		} else if (keep_inline) {
			memcpy(b->relay + n, (const uint8_t *)zmq_msg_data(hdr) + in->hdr_len, ilen);
			rc = s_send_raw(b, to->rid, to->rid_len, b->relay, (size_t)n + ilen, NULL);
		} else if (ilen > 0) {
			if (zmq_msg_init_size(&split, ilen) < 0) {
				s_nack(b, from, in, addr, BM_EBUSY, "broker is out of memory");
				return;
			}
			memcpy(zmq_msg_data(&split), (const uint8_t *)zmq_msg_data(hdr) + in->hdr_len, ilen);
			rc = s_send_raw(b, to->rid, to->rid_len, b->relay, (size_t)n, &split);
			zmq_msg_close(&split);
		} else {
			rc = s_send_raw(b, to->rid, to->rid_len, b->relay, (size_t)n, body);
		}
		if (rc == 0) {
			int64_t now_ns = bm_mono_ns();

			bm__obs_flow(b->obs, from->name, to->name, blen);
			bm__obs_delivered(b->obs, &in->id, now_ns);
			bm__obs_trace(b->obs, BM_TRACE_ROUTED, &in->id, from->name, to->name, in->attempt,
			              0, now_ns);
			b->st.delivers++;
			to->inflight++;
			to->pending_bytes += blen;
			to->delivered++;
			return;
		}
		if (rc == -EAGAIN) {
			b->st.nack_busy++;
			s_nack(b, from, in, addr, BM_EBUSY,
			       "agent '%s' is not keeping up (its queue is full); retry later",
			       to->name);
			return;
		}
		/* Its connection is gone: drop it and, for anycast, try the next
		 * one with the capability.  Each turn removes an agent, so this
		 * ends. */
		b->st.gone++;
		if (to == from) {
			/* An agent sending to itself whose connection is gone:
			 * nobody is left to tell. */
			s_drop(b, to, "gone (connection closed)");
			return;
		}
		s_drop(b, to, "gone (connection closed)");
		to = remote ? s_anycast(b, S_BRIDGE) : any ? s_anycast(b, addr + 1) : NULL;
	}
	b->st.nack_noagent++;
	if (remote) {
		s_nack(b, from, in, addr, BM_ENOAGENT,
		       "no bridge (an agent with capability '" S_BRIDGE "') is online to reach '%s'",
		       addr);
		return;
	}
	s_nack(b, from, in, addr, BM_ENOAGENT,
	       any ? "no agent with capability '%s' is online" : "no agent named '%s' is online",
	       addr + any);
}

/*
 * n of an agent's deliveries were settled (ACKed or NACKed).  ACKs carry
 * ids, not sizes, and a table of sizes per id would cost every delivery a
 * map insert; so the bytes released are the mean of what is outstanding.
 * The count is exact at zero outstanding, and always at most the bytes
 * really delivered since then.
 */
static void
s_settle(s_agent_t *a, uint64_t n)
{
	if (n >= a->inflight) {
		a->inflight = 0;
		a->pending_bytes = 0;
		return;
	}
	a->pending_bytes -= a->pending_bytes / a->inflight * n;
	a->inflight -= n;
}

/* The agent an ACK or NACK for peer goes to: the bridge for another
 * host's address. */
static s_agent_t *
s_peer(bm_broker_t *b, const char *peer)
{
	if (bm_address_remote(peer)) {
		return s_anycast(b, S_BRIDGE);
	}
	return bm__map_get(b->by_name, peer, strlen(peer));
}

static void
s_on_ack(bm_broker_t *b, s_agent_t *self, bm_env_t *in, zmq_msg_t *hdr)
{
	s_agent_t *to = s_peer(b, in->name);
	int n;

	int64_t now_ns = bm_mono_ns();

	s_settle(self, 1);
	bm__obs_settled(b->obs, &in->id, in->cmd == BM_CMD_ACK, now_ns);
	bm__obs_trace(b->obs, in->cmd == BM_CMD_ACK ? BM_TRACE_ACKED : BM_TRACE_REFUSED, &in->id,
	              self->name, in->name, 0, in->cmd == BM_CMD_ACK ? 0 : in->code, now_ns);
	if (in->cmd == BM_CMD_ACK) {
		self->acked++;
		b->st.acks++;
		b->st.ack_frames++;
	} else {
		b->st.nacks++;
	}
	if (to == NULL) {
		b->st.unroutable++;
		return;
	}
	/* Relayed as received, with the acker's name in place of the sender's. */
	n = bm__env_retarget(zmq_msg_data(hdr), zmq_msg_size(hdr), in, in->cmd, self->name,
	                     b->relay, sizeof b->relay);
	if (n < 0 || s_send_raw(b, to->rid, to->rid_len, b->relay, (size_t)n, NULL) < 0) {
		b->st.unroutable++;
	}
}

/*
 * ACKS: many ACKs from one receiver to one sender in a frame.  Relayed
 * like an ACK to a sender that takes them; for one that does not (it said
 * no BM_FEAT_ACKS in its HELLO) split into one ACK per id.
 */
static void
s_on_acks(bm_broker_t *b, s_agent_t *self, bm_env_t *in, zmq_msg_t *hdr)
{
	s_agent_t *to = s_peer(b, in->name);
	bm_env_t one = {.cmd = BM_CMD_ACK};
	int n;

	s_settle(self, in->nids);
	if (in->nids > 0) {
		int64_t now = bm_mono_ns();

		for (size_t i = 0; i < in->nids; i++) {
			bm_id_t id;

			memcpy(id.b, in->ids + i * sizeof id.b, sizeof id.b);
			bm__obs_settled(b->obs, &id, true, now);
			bm__obs_trace(b->obs, BM_TRACE_ACKED, &id, self->name, in->name, 0, 0, now);
		}
	}
	self->acked += in->nids;
	b->st.acks += in->nids;
	b->st.ack_frames++;
	if (to == NULL) {
		b->st.unroutable += in->nids;
		return;
	}
	if (to->acks) {
		n = bm__env_retarget(zmq_msg_data(hdr), zmq_msg_size(hdr), in, in->cmd, self->name,
		                     b->relay, sizeof b->relay);
		if (n < 0 || s_send_raw(b, to->rid, to->rid_len, b->relay, (size_t)n, NULL) < 0) {
			b->st.unroutable += in->nids;
		}
		return;
	}
	memcpy(one.name, self->name, sizeof self->name);
	for (size_t i = 0; i < in->nids; i++) {
		memcpy(one.id.b, in->ids + i * sizeof one.id.b, sizeof one.id.b);
		if (s_send(b, to->rid, to->rid_len, &one, NULL) < 0) {
			b->st.unroutable++;
		}
	}
}

static void
s_pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	msgpack_pack_str(pk, strlen(k));
	msgpack_pack_str_body(pk, k, strlen(k));
	msgpack_pack_str(pk, strlen(v));
	msgpack_pack_str_body(pk, v, strlen(v));
}

static void
s_pack_kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
	msgpack_pack_str(pk, strlen(k));
	msgpack_pack_str_body(pk, k, strlen(k));
	msgpack_pack_int64(pk, v);
}

/* Replies with header [1, cmd] and the packed sbuffer as body. */
static void
s_reply_body(bm_broker_t *b, const uint8_t *rid, size_t rid_len, int cmd, msgpack_sbuffer *sb)
{
	bm_env_t e = {.cmd = (uint8_t)cmd};
	zmq_msg_t body;

	if (zmq_msg_init_size(&body, sb->size) < 0) {
		return;
	}
	memcpy(zmq_msg_data(&body), sb->data, sb->size);
	if (s_send(b, rid, rid_len, &e, &body) < 0) {
		zmq_msg_close(&body);
	}
}

static void
s_on_list(bm_broker_t *b, const uint8_t *rid, size_t rid_len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int64_t now = bm_mono_coarse_ms();
	size_t cur = 0;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, bm__map_size(b->by_name));
	for (s_agent_t *a; (a = bm__map_next(b->by_name, &cur)) != NULL;) {
		int nd = 0;

		for (int i = 0; i < S_DIRECT_MAX; i++) {
			nd += a->routes[i].peer[0] != '\0';
		}
		msgpack_pack_map(&pk, (a->ob_pending >= 0 ? 11 : 8) + (nd > 0 ? 1 : 0));
		s_pack_kv_str(&pk, "name", a->name);
		msgpack_pack_str(&pk, 4);
		msgpack_pack_str_body(&pk, "caps", 4);
		msgpack_pack_array(&pk, (size_t)a->ncaps);
		for (int i = 0; i < a->ncaps; i++) {
			msgpack_pack_str(&pk, strlen(a->caps[i]));
			msgpack_pack_str_body(&pk, a->caps[i], strlen(a->caps[i]));
		}
		s_pack_kv_int(&pk, "idle_ms", now - a->last_seen_ms);
		s_pack_kv_int(&pk, "inflight", (int64_t)a->inflight);
		s_pack_kv_int(&pk, "sent", (int64_t)a->sent);
		s_pack_kv_int(&pk, "delivered", (int64_t)a->delivered);
		s_pack_kv_int(&pk, "acked", (int64_t)a->acked);
		s_pack_kv_int(&pk, "unacked_bytes", (int64_t)a->pending_bytes);
		if (a->ob_pending >= 0) {
			s_pack_kv_int(&pk, "outbox_pending", a->ob_pending);
			s_pack_kv_int(&pk, "outbox_dead", a->ob_dead);
			s_pack_kv_int(&pk, "outbox_retries", a->ob_retries);
		}
		if (nd > 0) {
			/* "direct": {peer: messages this agent sent over the route} */
			msgpack_pack_str(&pk, 6);
			msgpack_pack_str_body(&pk, "direct", 6);
			msgpack_pack_map(&pk, (size_t)nd);
			for (int i = 0; i < S_DIRECT_MAX; i++) {
				if (a->routes[i].peer[0] != '\0') {
					s_pack_kv_int(&pk, a->routes[i].peer, (int64_t)(a->routes[i].msgs & INT64_MAX));
				}
			}
		}
	}
	s_reply_body(b, rid, rid_len, BM_CMD_DIRECTORY, &sb);
	msgpack_sbuffer_destroy(&sb);
}

#define S_STATS_MAX 64 /* uptime, agents, S_STATS and the hook's */

/* The STATS counters in reply order; returns how many were written. */
static size_t
s_stats_fill(bm_broker_t *b, bm_stat_t *out, size_t max)
{
	bm_stat_t extra[32];
	int nextra = b->stats_fn ? b->stats_fn(b->stats_arg, extra, 32) : 0;
	size_t n = 0;

	nextra = nextra < 0 ? 0 : (nextra > 32 ? 32 : nextra);
#define S_PUT(k, v)                                                           \
	if (n < max) {                                                        \
		size_t kl_ = strnlen(k, sizeof out[n].key - 1);               \
		memcpy(out[n].key, k, kl_);                                   \
		out[n].key[kl_] = '\0';                                       \
		out[n++].value = (int64_t)(v);                                \
	}
	S_PUT("uptime_ms", bm_mono_ms() - b->started_ms);
	S_PUT("agents", bm__map_size(b->by_name));
#define S_ONE(f) S_PUT(#f, b->st.f)
	S_STATS(S_ONE)
#undef S_ONE
	{
		uint64_t blobs, blob_bytes;

		bm__obs_blobs(b->obs, &blobs, &blob_bytes);
		S_PUT("blobs_announced", blobs);
		S_PUT("blob_bytes_announced", blob_bytes);
	}
	{
		uint64_t ends = 0, msgs = 0;
		size_t cur = 0;

		for (s_agent_t *a; (a = bm__map_next(b->by_name, &cur)) != NULL;) {
			for (int i = 0; i < S_DIRECT_MAX; i++) {
				if (a->routes[i].peer[0] != '\0') {
					ends++;
					msgs += a->routes[i].msgs;
				}
			}
		}
		S_PUT("direct_route_ends", ends);
		S_PUT("direct_msgs", msgs);
	}
	for (int i = 0; i < nextra; i++) {
		extra[i].key[sizeof extra[i].key - 1] = '\0';
		S_PUT(extra[i].key, extra[i].value);
	}
#undef S_PUT
	return n;
}

static void
s_on_stats(bm_broker_t *b, const uint8_t *rid, size_t rid_len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	bm_stat_t v[S_STATS_MAX];
	size_t n = s_stats_fill(b, v, S_STATS_MAX);

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n);
	for (size_t i = 0; i < n; i++) {
		s_pack_kv_int(&pk, v[i].key, v[i].value);
	}
	s_reply_body(b, rid, rid_len, BM_CMD_STATS, &sb);
	msgpack_sbuffer_destroy(&sb);
}

/* TRACE: what the trace ring holds about one message id. */
static void
s_on_trace(bm_broker_t *b, const uint8_t *rid, size_t rid_len, const bm_id_t *id)
{
	bm_trace_event_t v[BM_TRACE_MAX];
	size_t n = bm__obs_trace_find(b->obs, id, v, BM_TRACE_MAX);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	bm_env_t e = {.cmd = BM_CMD_TRACE, .id = *id};
	zmq_msg_t body;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, n);
	for (size_t i = 0; i < n; i++) {
		msgpack_pack_map(&pk, 6);
		s_pack_kv_str(&pk, "ev", bm_trace_kind_name(v[i].kind));
		s_pack_kv_int(&pk, "t_us", v[i].t_us);
		s_pack_kv_str(&pk, "from", v[i].from);
		s_pack_kv_str(&pk, "to", v[i].to);
		s_pack_kv_int(&pk, "attempt", v[i].attempt);
		s_pack_kv_int(&pk, "code", bm__code_to_wire(v[i].code));
	}
	if (zmq_msg_init_size(&body, sb.size) == 0) {
		memcpy(zmq_msg_data(&body), sb.data, sb.size);
		if (s_send(b, rid, rid_len, &e, &body) < 0) {
			zmq_msg_close(&body);
		}
	}
	msgpack_sbuffer_destroy(&sb);
}

/* ---- snapshots ---- */

int
bm_broker_snap(bm_broker_t *b, bm_broker_snap_t **ret_snap)
{
	size_t na = b ? bm__map_size(b->by_name) : 0, cur = 0, i = 0;
	bm_broker_snap_t *s;
	int64_t now = bm_mono_coarse_ms();

	if (b == NULL || ret_snap == NULL) {
		return -EINVAL;
	}
	/* One allocation: the struct, then its three arrays. */
	s = calloc(1, sizeof *s + S_STATS_MAX * sizeof s->stats[0] + na * sizeof s->agents[0] +
	                  (BM_SNAP_FLOWS_MAX + 1) * sizeof s->flows[0]);
	if (s == NULL) {
		return -ENOMEM;
	}
	s->stats = (bm_stat_t *)(s + 1);
	s->agents = (bm_snap_agent_t *)(s->stats + S_STATS_MAX);
	s->flows = (bm_snap_flow_t *)(s->agents + na);
	s->taken_ms = bm_mono_ms();
	s->nstats = s_stats_fill(b, s->stats, S_STATS_MAX);
	for (s_agent_t *a; i < na && (a = bm__map_next(b->by_name, &cur)) != NULL; i++) {
		bm_snap_agent_t *d = &s->agents[i];

		memcpy(d->name, a->name, sizeof d->name);
		memcpy(d->caps, a->caps, sizeof d->caps);
		d->ncaps = a->ncaps;
		d->idle_ms = now - a->last_seen_ms;
		d->inflight = a->inflight;
		d->pending_bytes = a->pending_bytes;
		d->sent = a->sent;
		d->delivered = a->delivered;
		d->acked = a->acked;
		d->outbox_pending = a->ob_pending;
		d->outbox_dead = a->ob_dead;
		d->outbox_retries = a->ob_retries;
	}
	s->nagents = i;
	bm__obs_copy(b->obs, s);
	*ret_snap = s;
	return 0;
}

void
bm_broker_snap_destroy(bm_broker_snap_t **self_p)
{
	if (self_p != NULL) {
		free(*self_p);
		*self_p = NULL;
	}
}

void
bm_broker_set_tick_hook(bm_broker_t *b, bm_broker_tick_fn fn, void *arg, int period_ms)
{
	if (b != NULL) {
		b->tick_fn = fn;
		b->tick_arg = arg;
		b->tick_ms = period_ms > 0 ? period_ms : 250;
		b->next_tick_ms = 0;
	}
}

/* ---- the loop ---- */

static void
s_dispatch(bm_broker_t *b, zmq_msg_t *f, int nf, int extra)
{
	const uint8_t *rid = zmq_msg_data(&f[0]);
	size_t rid_len = zmq_msg_size(&f[0]);
	s_agent_t *self;
	const char *why = NULL;
	bm_env_t in;
	int rc;

	if (rid_len == 0 || rid_len > S_RID_MAX) {
		b->st.malformed++;
		return;
	}
	self = bm__map_get(b->by_rid, rid, rid_len);
	if (self != NULL) {
		self->last_seen_ms = bm_mono_coarse_ms();
	}
	if (nf < 2) {
		b->st.malformed++;
		s_reply_error(b, rid, rid_len, BM_CMD_ERROR, BM_EPROTO, "empty message: no header frame");
		return;
	}
	rc = bm__env_decode(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &in, &why);
	if (rc == 0 && (extra > 0 || (nf == 3 && in.cmd != BM_CMD_SEND))) {
		rc = BM_EPROTO;
		why = "unexpected extra frames";
	} else if (rc == 0 && nf == 3 && in.hdr_len < zmq_msg_size(&f[1])) {
		rc = BM_EPROTO;
		why = "an inline body and a body frame";
	}
	if (rc < 0) {
		b->st.malformed++;
		if (bm_log_level() >= BM_LOG_DEBUG) {
			char hex[2 * S_RID_MAX + 1];

			s_hex(rid, rid_len, hex);
			bm_log(BM_LOG_DEBUG, "malformed frame from %s: %s", hex, why);
		}
		if (in.cmd == BM_CMD_SEND && self != NULL && !bm_id_is_zero(&in.id)) {
			s_nack(b, self, &in, "beastd", rc, "malformed SEND: %s", why);
		} else {
			s_reply_error(b, rid, rid_len, BM_CMD_ERROR, rc, why);
		}
		return;
	}
	switch (in.cmd) {
	case BM_CMD_HELLO:
		s_on_hello(b, rid, rid_len, self, &in);
		return;
	case BM_CMD_PING:
		/* The PONG says whom we know the peer as, so an agent whose
		 * broker restarted learns it must say HELLO again. */
		b->st.pings++;
		if (in.has_report && self != NULL) {
			self->ob_pending = (int64_t)(in.report[0] & INT64_MAX);
			self->ob_dead = (int64_t)(in.report[1] & INT64_MAX);
			self->ob_retries = (int64_t)(in.report[2] & INT64_MAX);
		}
		in.cmd = BM_CMD_PONG;
		in.has_report = false;
		memcpy(in.name, self ? self->name : "", self ? sizeof self->name : 1);
		(void)s_send(b, rid, rid_len, &in, NULL);
		return;
	case BM_CMD_LIST:
		s_on_list(b, rid, rid_len);
		return;
	case BM_CMD_STATS:
		s_on_stats(b, rid, rid_len);
		return;
	case BM_CMD_TRACE:
		s_on_trace(b, rid, rid_len, &in.id);
		return;
	case BM_CMD_SEND:
	case BM_CMD_ACK:
	case BM_CMD_ACKS:
	case BM_CMD_NACK:
	case BM_CMD_BYE:
	case BM_CMD_ROUTE:
		break;
	default:
		b->st.malformed++;
		s_reply_error(b, rid, rid_len, BM_CMD_ERROR, BM_EPROTO,
		              "command not accepted by the broker");
		return;
	}
	if (self == NULL) {
		/* Typically an agent whose broker restarted: NOTREG tells it to
		 * say HELLO again. */
		if (in.cmd == BM_CMD_SEND) {
			bm_env_t e = {.cmd = BM_CMD_NACK, .id = in.id, .code = BM_ENOTREG};

			memcpy(e.name, in.name, sizeof e.name);
			snprintf(e.text, sizeof e.text, "not registered: say HELLO first");
			b->st.nack_notreg++;
			b->st.nacks++;
			(void)s_send(b, rid, rid_len, &e, NULL);
		} else if (in.cmd != BM_CMD_BYE) {
			s_reply_error(b, rid, rid_len, BM_CMD_ERROR, BM_ENOTREG,
			              "not registered: say HELLO first");
		}
		return;
	}
	switch (in.cmd) {
	case BM_CMD_SEND: {
		zmq_msg_t empty;

		if (nf == 3) {
			s_on_send(b, self, &in, &f[1], &f[2]);
		} else {
			zmq_msg_init(&empty);
			s_on_send(b, self, &in, &f[1], &empty);
			zmq_msg_close(&empty);
		}
		return;
	}
	case BM_CMD_ACK:
	case BM_CMD_NACK:
		s_on_ack(b, self, &in, &f[1]);
		return;
	case BM_CMD_ACKS:
		s_on_acks(b, self, &in, &f[1]);
		return;
	case BM_CMD_BYE:
		b->st.byes++;
		s_drop(b, self, "said goodbye");
		return;
	case BM_CMD_ROUTE:
		s_on_route(b, self, &in);
		return;
	default:
		return;
	}
}

/* Reads one whole message (all its frames) and handles it.  -EAGAIN when
 * nothing is waiting. */
static int
s_recv_one(bm_broker_t *b, int which)
{
	void *sock = which == S_SOCK_CURVE ? b->curve_router : b->router;
	zmq_msg_t f[3];
	int nf = 0, extra = 0, rc = 0;
	bool more = true;

	while (more) {
		zmq_msg_t *m = nf < 3 ? &f[nf] : &(zmq_msg_t){0};

		zmq_msg_init(m);
		if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) < 0) {
			rc = bm__zmq_err();
			zmq_msg_close(m);
			break;
		}
		more = zmq_msg_more(m);
		if (nf < 3) {
			nf++;
		} else {
			extra++;
			zmq_msg_close(m);
		}
	}
	if (nf > 0) {
		/* Prefix the routing id with the socket's byte (see the top). */
		size_t n = zmq_msg_size(&f[0]);
		zmq_msg_t tagged;

		b->st.frames++;
		if (n > 0 && n < S_RID_MAX && zmq_msg_init_size(&tagged, n + 1) == 0) {
			uint8_t *t = zmq_msg_data(&tagged);

			t[0] = (uint8_t)which;
			memcpy(t + 1, zmq_msg_data(&f[0]), n);
			zmq_msg_close(&f[0]);
			f[0] = tagged;
		} else {
			zmq_msg_close(&f[0]);
			zmq_msg_init(&f[0]); /* empty: counted as malformed */
		}
		b->user_id[0] = '\0';
		if (which == S_SOCK_CURVE && nf > 1) {
			const char *uid = zmq_msg_gets(&f[1], "User-Id");

			if (uid != NULL) {
				snprintf(b->user_id, sizeof b->user_id, "%s", uid);
			}
		}
		s_dispatch(b, f, nf, extra);
		rc = 0;
	}
	for (int i = 0; i < nf; i++) {
		zmq_msg_close(&f[i]);
	}
	return rc;
}

/*
 * Liveness.  An agent silent for a heartbeat interval is probed: with
 * ROUTER_MANDATORY a PING to a peer whose connection has closed (a killed
 * process) fails at once, so a crash is seen within about one interval.  A
 * peer that is connected but silent (hung) is dropped after three.
 */
static void
s_sweep(bm_broker_t *b, int64_t now)
{
	/* Collect first: the table must not change while iterated. */
	s_agent_t *dead[64];
	const char *why[64];
	bm_env_t ping = {.cmd = BM_CMD_PING};
	int n = 0;

	size_t cur = 0;

	for (s_agent_t *a; n < 64 && (a = bm__map_next(b->by_name, &cur)) != NULL;) {
		int64_t silent = now - a->last_seen_ms;

		if (silent > 3 * (int64_t)a->heartbeat_ms) {
			why[n] = "gone (missed 3 heartbeats)";
			dead[n++] = a;
		} else if (silent > (int64_t)a->heartbeat_ms &&
		           s_send(b, a->rid, a->rid_len, &ping, NULL) == -EHOSTUNREACH) {
			why[n] = "gone (connection closed)";
			dead[n++] = a;
		}
	}
	for (int i = 0; i < n; i++) {
		b->st.gone++;
		s_drop(b, dead[i], why[i]);
	}
}

int
bm_broker_run(bm_broker_t *b, volatile sig_atomic_t *stop)
{
	int64_t tick = b->heartbeat_ms / 4 > 0 ? b->heartbeat_ms / 4 : 1;

	if (b == NULL || stop == NULL) {
		return -EINVAL;
	}
	while (!*stop) {
		zmq_pollitem_t it[2] = {{.socket = b->router, .events = ZMQ_POLLIN},
		                        {.socket = b->curve_router, .events = ZMQ_POLLIN}};
		int64_t now;
		long wait = b->tick_fn && b->tick_ms < tick ? b->tick_ms : tick;
		int rc = zmq_poll(it, b->curve_router ? 2 : 1, wait);

		if (rc < 0) {
			rc = bm__zmq_err();
			if (rc == -EINTR) {
				continue;
			}
			return rc;
		}
		bool backlog = false;

		for (int which = S_SOCK_MAIN; which <= S_SOCK_CURVE; which++) {
			int i;

			if (which == S_SOCK_CURVE && b->curve_router == NULL) {
				break;
			}
			for (i = 0; i < S_DRAIN_BATCH; i++) {
				rc = s_recv_one(b, which);
				if (rc == -EAGAIN || rc == -EINTR) {
					break;
				}
				if (rc < 0) {
					return rc;
				}
			}
			backlog = backlog || i == S_DRAIN_BATCH;
		}
		now = bm_mono_coarse_ms();
		/* Sweep only with nothing left unread: after a stall (a starved
		 * CPU) an agent's frames may still be queued here, and judging
		 * its silence before reading them would drop a live agent. */
		if (now >= b->next_sweep_ms && !backlog) {
			s_sweep(b, now);
			b->next_sweep_ms = now + tick;
		}
		if (b->tick_fn != NULL && now >= b->next_tick_ms) {
			b->next_tick_ms = now + b->tick_ms;
			b->tick_fn(b->tick_arg);
		}
	}
	return 0;
}

/* ---- set-up and tear-down ---- */

static bool
s_loopback_tcp(const char *ep)
{
	static const char *const ok[] = {"tcp://127."};

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		if (strncmp(ep, ok[i], strlen(ok[i])) == 0) {
			return true;
		}
	}
	return false;
}

/*
 * The CURVE endpoint: a zauth actor checking client keys against the
 * allow-list directory, then a ROUTER in the same (czmq) context with the
 * server key, bound to opts->tcp.
 */
static int
s_curve_open(bm_broker_t *b, const bm_broker_opts_t *o, int hwm, int64_t maxmsg)
{
	char key[BM_PATH_MAX], allow[BM_PATH_MAX];
	int rc, one = 1, linger = 100;

	if ((rc = bm_curve_paths(o->server_key, o->allow_dir, key, allow)) < 0) {
		return rc;
	}
	(void)bm_curve_context(); /* keeps czmq off our signals, first */
	b->allowed = zcertstore_new(allow);
	b->curve_sock = zsock_new(ZMQ_ROUTER); /* in bm_curve_context() */
	if (b->allowed == NULL || b->curve_sock == NULL) {
		return -ENOMEM;
	}
	b->curve_router = zsock_resolve(b->curve_sock);
	if ((rc = bm_curve_server(b->curve_router, key, allow)) < 0) {
		return rc;
	}
	b->curve_ref = true;
	if (zmq_setsockopt(b->curve_router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0 ||
	    zmq_setsockopt(b->curve_router, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(b->curve_router, ZMQ_RCVHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(b->curve_router, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
	    zmq_setsockopt(b->curve_router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
	    zmq_bind(b->curve_router, o->tcp) < 0) {
		return bm__zmq_err();
	}
	bm_log(BM_LOG_DEBUG, "CURVE on %s: server key %s, allow-list %s", o->tcp, key, allow);
	return 0;
}

static int
s_lock(bm_broker_t *b)
{
	char path[BM_PATH_MAX + 16], pid[32];
	int n;

	snprintf(path, sizeof path, "%s/beastd.lock", b->dir);
	b->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (b->lock_fd < 0) {
		return -errno;
	}
	/* flock dies with its holder, so a crashed beastd never blocks a new
	 * one, and a second live one is refused before it can steal the
	 * socket (a second ipc bind would silently take the endpoint). */
	if (flock(b->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		return errno == EWOULDBLOCK ? BM_ERUNNING : -errno;
	}
	n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(b->lock_fd, 0) < 0 || write(b->lock_fd, pid, (size_t)n) != n) {
		return -errno;
	}
	return 0;
}

int
bm_broker_open(const bm_broker_opts_t *opts, bm_broker_t **ret_broker)
{
	bm_broker_opts_t o = opts ? *opts : (bm_broker_opts_t){0};
	bm_broker_t *b;
	int rc, one = 1, hwm, linger = 100;
	int64_t maxmsg;

	if (ret_broker == NULL) {
		return -EINVAL;
	}
	if (o.tcp != NULL && !o.curve && !s_loopback_tcp(o.tcp)) {
		return -EADDRNOTAVAIL;
	}
	if (o.curve && o.tcp == NULL) {
		return -EINVAL;
	}
	b = calloc(1, sizeof *b);
	if (b == NULL) {
		return -ENOMEM;
	}
	b->lock_fd = -1;
	b->heartbeat_ms = o.heartbeat_ms > 0 ? (uint32_t)o.heartbeat_ms : BM_HEARTBEAT_DEFAULT;
	b->max_body = o.max_body ? o.max_body : BM_BODY_MAX_DEFAULT;
	b->max_pending = o.max_pending ? o.max_pending : BM_PENDING_MAX_DEFAULT;
	b->no_direct = o.no_direct;
	hwm = o.hwm > 0 ? o.hwm : 100000;
	b->by_name = bm__map_new();
	b->by_rid = bm__map_new();
	b->obs = bm__obs_new();
	if (b->by_name == NULL || b->by_rid == NULL || b->obs == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = bm_rundir_resolve(o.dir, true, b->dir)) < 0 ||
	    (rc = bm_rundir_path(b->dir, "mesh.sock", false, b->sock_path, sizeof b->sock_path)) < 0 ||
	    (rc = bm_rundir_path(b->dir, "mesh.sock", true, b->endpoint, sizeof b->endpoint)) < 0) {
		goto fail;
	}
	if ((rc = s_lock(b)) < 0) {
		goto fail;
	}
	/* We hold the lock, so a socket file left here is a crashed broker's. */
	if (unlink(b->sock_path) < 0 && errno != ENOENT) {
		rc = -errno;
		goto fail;
	}
	b->ctx = zmq_ctx_new();
	if (b->ctx == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	b->router = zmq_socket(b->ctx, ZMQ_ROUTER);
	if (b->router == NULL) {
		rc = bm__zmq_err();
		goto fail;
	}
	/* A peer sending far past the cap is disconnected by libzmq before
	 * we buffer it; one just over it gets a TOOBIG NACK from us. */
	maxmsg = (int64_t)b->max_body * 2 + BM_HEADER_MAX;
	if (zmq_setsockopt(b->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0 ||
	    zmq_setsockopt(b->router, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(b->router, ZMQ_RCVHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(b->router, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
	    zmq_setsockopt(b->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
	    zmq_bind(b->router, b->endpoint) < 0) {
		rc = bm__zmq_err();
		goto fail;
	}
	if (o.tcp != NULL && !o.curve && zmq_bind(b->router, o.tcp) < 0) {
		rc = bm__zmq_err();
		goto fail;
	}
	if (o.curve && (rc = s_curve_open(b, &o, hwm, maxmsg)) < 0) {
		goto fail;
	}
	/* The socket file gets 0777 & ~umask; the 0700 directory is what
	 * keeps others out, but do not leave it wider than needed. */
	(void)chmod(b->sock_path, 0600);
	b->started_ms = bm_mono_ms();
	b->next_sweep_ms = b->started_ms;
	*ret_broker = b;
	return 0;
fail:
	bm_broker_destroy(&b);
	return rc;
}

void
bm_broker_destroy(bm_broker_t **self_p)
{
	bm_broker_t *b;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	b = *self_p;
	if (b->router != NULL) {
		zmq_close(b->router);
		(void)unlink(b->sock_path);
	}
	/* The socket before its ZAP handler: no handshake may be left
	 * waiting on a handler that is gone. */
	zsock_destroy(&b->curve_sock);
	if (b->curve_ref) {
		bm_curve_server_release();
	}
	zcertstore_destroy(&b->allowed);
	if (b->ctx != NULL) {
		zmq_ctx_term(b->ctx);
	}
	if (b->by_name != NULL) {
		size_t cur = 0;

		for (s_agent_t *a; (a = bm__map_next(b->by_name, &cur)) != NULL;) {
			free(a);
		}
	}
	bm__map_destroy(&b->by_rid);
	bm__map_destroy(&b->by_name);
	bm__obs_destroy(&b->obs);
	if (b->lock_fd >= 0) {
		close(b->lock_fd);
	}
	free(b);
	*self_p = NULL;
}

const char *
bm_broker_dir(const bm_broker_t *b)
{
	return b ? b->dir : NULL;
}

void
bm_broker_set_stats_hook(bm_broker_t *b, bm_broker_stats_fn fn, void *arg)
{
	if (b != NULL) {
		b->stats_fn = fn;
		b->stats_arg = arg;
	}
}

const char *
bm_broker_endpoint(const bm_broker_t *b)
{
	return b ? b->endpoint : NULL;
}

/*
 * mesh_private.h - internal types of the mesh floor: the decoded header
 * (envelope) and its codec, shared by broker.c and client.c.
 */
#ifndef BM_MESH_PRIVATE_H
#define BM_MESH_PRIVATE_H

#include <msgpack.h>

#include "bm_mesh.h"
#include "bm_shm.h"

/*
 * A decoded frame-0 header.  Which fields mean something depends on cmd;
 * docs/protocol.md lists them per command.  `name` is the one agent name a
 * command carries: the registering agent (HELLO/WELCOME), the destination
 * (SEND), the sender (DELIVER), the other end (ACK/NACK), the subject (NOTICE).
 */
typedef struct bm_env {
	uint8_t cmd;                    /* enum bm_cmd */
	bm_id_t id;                     /* SEND/DELIVER/ACK/NACK */
	bm_id_t corr;                   /* SEND/DELIVER; zero = nil */
	char name[BM_ADDR_MAX + 1];     /* see above */
	char type[BM_TYPE_MAX + 1];     /* SEND/DELIVER type; NOTICE event */
	uint8_t priority;               /* SEND/DELIVER */
	uint32_t ttl_ms;                /* SEND/DELIVER */
	uint32_t attempt;               /* SEND/DELIVER */
	int64_t ts_ms;                  /* SEND/DELIVER */
	uint32_t heartbeat_ms;          /* HELLO/WELCOME */
	uint64_t max_body;              /* WELCOME */
	int32_t code;                   /* NACK/DENIED/ERROR: BM_E* */
	char route[BM_ADDR_MAX + 1];    /* SEND/DELIVER element 12: bridges' other end; "" = none */
	uint16_t nelem;                 /* decode SEND/DELIVER: elements in the header array */
	uint16_t tail_at;               /*   offset just past ts_ms (element 10 starts) */
	uint16_t route_at, route_end;   /*   element 12's extent; 0 when absent */
	uint16_t cmd_at;                /* decode: offset of the command's value byte */
	uint16_t name_at;               /* decode: offset of the name field (SEND, */
	uint16_t name_end;              /*   DELIVER, ACK, NACK, ACKS) and one past its end */
	uint32_t features;              /* HELLO/WELCOME: BM_FEAT_* bits */
	uint32_t hdr_len;               /* decode: bytes of the header object; an */
	                                /*   inline body (SEND/DELIVER) follows it */
	const uint8_t *ids;             /* ACKS: nids ids of 16 bytes (decode: into */
	uint16_t nids;                  /*   the frame; encode: the caller's) */
	const char *tp;                 /* SEND/DELIVER: W3C traceparent (not NUL- */
	const char *ts;                 /*   terminated; decode: into the buffer), */
	uint16_t tp_len, ts_len;        /*   tracestate, their lengths; NULL = none */
	bool has_report;                /* PING: carries an outbox report */
	uint64_t report[3];             /* PING: outbox pending, dead, retries */
	char text[BM_TEXT_MAX + 1];     /* NACK/DENIED/ERROR */
	int ncaps;                      /* HELLO */
	char caps[BM_CAPS_MAX][BM_CAP_MAX + 1]; /* HELLO */
} bm_env_t;

/* Encodes e into buf; returns the byte count, -ENOBUFS or -EINVAL. */
int bm__env_encode(const bm_env_t *e, void *buf, size_t cap);

/*
 * Decodes and validates one header without allocating.  Returns 0,
 * BM_EVERSION (wrong version: e->cmd still set when readable) or BM_EPROTO
 * with a reason in *ret_why (static text).  On failure the fields read so
 * far (e.g. a SEND's id) are set.
 */
int bm__env_decode(const void *buf, size_t len, bm_env_t *e, const char **ret_why);

/*
 * Rewrites a decoded header (in, len; e from bm__env_decode of it) into
 * out with another command and another name in the name field, copying
 * every other byte as it was: how the broker turns SEND into DELIVER and
 * relays ACK/NACK without decoding into fields and encoding them again.
 * Returns the new length, or -ENOBUFS / -EINVAL.
 */
int bm__env_retarget(const void *in, size_t len, const bm_env_t *e, uint8_t cmd,
                     const char *name, void *out, size_t cap);

/*
 * Builds a DELIVER header for a SEND (in, decoded as e; its hdr_len bytes)
 * with `from` in the name field and element 12 set to route (NULL or "":
 * nil): how the broker hands a message to a bridge (route = the address it
 * was sent to) and delivers one a bridge brought from another host (from =
 * its origin).  Elements 10 and 11 are kept, or nil when the SEND had
 * none; anything after 12 is kept.  Returns the length, -ENOBUFS, -EINVAL
 * (a header of more than 15 elements).
 */
int bm__env_deliver(const void *in, const bm_env_t *e, const char *from, const char *route,
                    void *out, size_t cap);

/*
 * Grows a header of len bytes (as bm__env_retarget wrote it) to exactly
 * want bytes by appending one element receivers skip (protocol.md §3): a
 * nil, or a bin 8 of zeros.  buf must have room for want bytes.  False,
 * buf untouched, when it cannot: want < len, more than 257 bytes to fill,
 * or a header array that is not a fixarray with room for one more.
 */
bool bm__env_pad(uint8_t *buf, size_t len, size_t want);

/* True when buf is exactly one msgpack object whose declared lengths all
 * fit: call before msgpack_unpack() on bytes from outside. */
bool bm__msgpack_check(const void *buf, size_t len);

/* True for commands that carry one body frame after the header. */
bool bm__cmd_has_body(int cmd);

/* Maps a zmq call's failure (-1 + errno) to a negative code. */
static inline int
bm__zmq_err(void)
{
	int e = zmq_errno();

	if (e == ETERM) {
		return -ESHUTDOWN;
	}
	return e > 0 && e < 4096 ? -e : -EIO;
}


/* Byte-string -> pointer hash map (map.c).  Keys are borrowed. */
typedef struct bm_map bm_map_t;
bm_map_t *bm__map_new(void);
void bm__map_destroy(bm_map_t **self_p);
size_t bm__map_size(const bm_map_t *m);
void *bm__map_get(bm_map_t *m, const void *key, size_t klen);
/* Inserts or replaces; -ENOMEM when the table cannot grow. */
int bm__map_put(bm_map_t *m, const void *key, size_t klen, void *val);
void bm__map_del(bm_map_t *m, const void *key, size_t klen);
/* Iteration: size_t cur = 0; while ((v = bm__map_next(m, &cur))) ... */
void *bm__map_next(const bm_map_t *m, size_t *cursor);

/* ---- journal internals (journal.c), for the outbox's compaction ---- */
/* Base sequence number of the i-th segment, oldest = 0; -ENOENT past the
 * last. */
int bm__journal_segment_base(const bm_journal_t *j, size_t i, uint64_t *ret_seq);

/* ---- CURVE keys (curve.c) ---- */
typedef struct _zcert_t zcert_t;
/* Loads a key file; with secret, it must hold a secret key, be the
 * caller's and closed to group/others.  BM_EBADKEY otherwise. */
int bm__curve_load(const char *path, bool secret, zcert_t **ret_cert);
/* Loads the server's secret key file, making a fresh pair there (0600,
 * public half beside it as X.pub) when it does not exist. */
int bm__curve_server_cert(const char *path, zcert_t **ret_cert);
/* Makes sock a CURVE client with the key pair in key_file, trusting the
 * server public key in server_key_file. */
int bm__curve_client(void *sock, const char *key_file, const char *server_key_file);

/*
 * The outbox that sends through c reports its state (live messages, dead
 * letters, resends made) for the heartbeat PINGs to carry to the broker
 * (protocol.md, PING).  Cheap: three stores; the client sends them at most
 * once per heartbeat interval.
 */
void bm__client_report(bm_client_t *c, uint64_t pending, uint64_t dead, uint64_t retries);

/* ---- direct routes (direct.c): a client's rings to local peers ---- */
typedef struct bm_direct bm_direct_t;
typedef struct {
	void *arg;                                        /* the client */
	/* A frame that came over a route, as if from beastd (body_at: the
	 * inline body's offset in frame; on_frame may move the frame). */
	int (*on_frame)(void *arg, bm_env_t *e, zmq_msg_t *frame, size_t body_at);
	int (*to_broker)(void *arg, const bm_env_t *e);   /* sends a ROUTE to beastd */
	void (*fallback)(void *arg, const char *peer);    /* a route to peer ended */
} bm_direct_ops_t;
/* Listens for routes to `name`; -errno, BM_E* from bm_route_listen. */
int bm__direct_new(const char *rundir, const char *name, const bm_direct_ops_t *ops,
                   bm_direct_t **ret_d);
void bm__direct_destroy(bm_direct_t **self_p);
/* One fd (epoll) for the listener and every route: poll it for POLLIN. */
int bm__direct_fd(const bm_direct_t *d);
/* A SEND (e, encoded as beastd would get it; borrowed, left as it came)
 * with its body: 1 = it went
 * over a route, 0 = send it through beastd (and it counts toward asking),
 * BM_EFULL = the route's ring is full, or its fence not back yet: back off
 * and retry. */
int bm__direct_send(bm_direct_t *d, bm_env_t *e, const void *body, size_t len);
/* An ACK or NACK (name = the message's sender): 1 = it goes over the
 * route its message came by (an ACK may be held while hold says more
 * deliveries wait: bm__direct_flush sends what is held), 0 = send it
 * through beastd. */
int bm__direct_ack(bm_direct_t *d, const bm_env_t *ack, bool hold);
void bm__direct_flush(bm_direct_t *d);
/* A record waits on some route. */
bool bm__direct_readable(bm_direct_t *d);
/* A ROUTE from beastd. */
int bm__direct_on_route(bm_direct_t *d, const bm_env_t *e);
/* Accepts, finishes and reads routes (at most about max records); never
 * blocks.  Returns the records read. */
int bm__direct_pump(bm_direct_t *d, int max);
/* Idle teardown and reports; call about once per loop turn. */
void bm__direct_tick(bm_direct_t *d);
/* Before sleeping: spins briefly when routes are busy, then arms every
 * doorbell.  1 = a record is waiting (do not sleep). */
int bm__direct_arm(bm_direct_t *d);
void bm__direct_stats(const bm_direct_t *d, bm_direct_stats_t *ret);
/* The live route to peer, or NULL (tests). */
bm_route_t *bm__direct_route(bm_direct_t *d, const char *peer);
/* The client's direct routes, or NULL (tests). */
bm_direct_t *bm__client_direct(bm_client_t *c);

/* Error codes on the wire: BM_E* + BM_EBASE, 0 = other (protocol.md §6). */
uint32_t bm__code_to_wire(int code);
int bm__code_from_wire(uint64_t w);

/* ---- observability tables (obs.c): broker thread only ---- */
typedef struct bm_obs bm_obs_t;
bm_obs_t *bm__obs_new(void);
void bm__obs_destroy(bm_obs_t **self_p);
/* One delivery of bytes from one agent to another. */
void bm__obs_flow(bm_obs_t *o, const char *from, const char *to, uint64_t bytes);
/* A delivery left at now_ns; its ACK (acked) or NACK settles it. */
void bm__obs_delivered(bm_obs_t *o, const bm_id_t *id, int64_t now_ns);
void bm__obs_settled(bm_obs_t *o, const bm_id_t *id, bool acked, int64_t now_ns);
/* A blob.announce was routed; body is its JSON. */
void bm__obs_blob(bm_obs_t *o, const void *body, size_t len);
/* One event for the trace ring: kind is enum bm_trace_kind. */
void bm__obs_trace(bm_obs_t *o, int kind, const bm_id_t *id, const char *from, const char *to,
                   uint32_t attempt, int code, int64_t now_ns);
/* Writes the ring's events about id, oldest first, at most max; returns
 * how many.  t_us of each is wall-clock microseconds. */
size_t bm__obs_trace_find(const bm_obs_t *o, const bm_id_t *id, bm_trace_event_t *ret,
                          size_t max);
/* blob.announce messages routed so far, and the bytes they announced. */
void bm__obs_blobs(const bm_obs_t *o, uint64_t *ret_count, uint64_t *ret_bytes);
/* Copies flows (s->flows must hold BM_SNAP_FLOWS_MAX + 1), histogram and
 * blob counts into s; returns the flows copied. */
size_t bm__obs_copy(const bm_obs_t *o, bm_broker_snap_t *s);

#endif

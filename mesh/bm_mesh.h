/*
 * bm_mesh.h - the control mesh: message ids, the broker and the client.
 *
 * An agent is a ZeroMQ DEALER connected to beastd's ROUTER.  Every message
 * is frame 0 = a msgpack header [version, command, fields...] and, for
 * SEND/DELIVER, frame 1 = an opaque body.  docs/protocol.md is the wire
 * specification; this header is the C API over it.
 *
 * Ownership follows CZMQ: bm_x_open()/bm_x_new() return an owned object,
 * bm_x_destroy(&x) frees it and NULLs the pointer.  Objects are not thread
 * safe: use each from one thread at a time.
 */
#ifndef BM_MESH_H
#define BM_MESH_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <zmq.h>

#include "bm_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BM_PROTO_VERSION 1
#define BM_NAME_MAX 64          /* agent name: [A-Za-z0-9._-]{1,64} */
#define BM_CAP_MAX 32           /* capability: same alphabet, 1..32 */
#define BM_CAPS_MAX 16          /* capabilities per agent */
#define BM_TYPE_MAX 64          /* message type: printable ASCII, no space */
#define BM_TEXT_MAX 255         /* NACK/ERROR/DENIED text */
#define BM_HEADER_MAX 65536     /* frame 0 cap */
#define BM_BODY_MAX_DEFAULT (16u << 20)
/* Bytes beastd lets wait toward one agent (delivered, not yet ACKed or
 * NACKed) before it refuses more with BUSY; --max-pending. */
#define BM_PENDING_MAX_DEFAULT ((size_t)256 << 20)
#define BM_HEARTBEAT_DEFAULT 1000 /* ms */
#define BM_ADDR_MAX (BM_NAME_MAX + 1) /* "@" + capability, or a name */
#define BM_HOST_MAX 32          /* host in name@host: [A-Za-z0-9_-]{1,32} */
#define BM_ACKS_MAX 256         /* message ids in one ACKS frame */
#define BM_INLINE_MAX 4096      /* largest body carried inside frame 0 */
#define BM_FEAT_ACKS 1u         /* HELLO/WELCOME features bit: takes ACKS */
#define BM_FEAT_INLINE 2u       /* ... takes SEND/DELIVER with an inline body */
#define BM_FEAT_DIRECT 4u       /* ... takes direct routes (ROUTE, protocol.md §16) */
#define BM_TRACEPARENT_MAX 127  /* W3C traceparent carried by SEND/DELIVER (55 in version 00) */
#define BM_TRACESTATE_MAX 512   /* W3C tracestate */

/* Wire commands (frame 0, element 1). */
enum bm_cmd {
	BM_CMD_HELLO = 1,
	BM_CMD_WELCOME = 2,
	BM_CMD_DENIED = 3,
	BM_CMD_SEND = 4,
	BM_CMD_DELIVER = 5,
	BM_CMD_ACK = 6,
	BM_CMD_NACK = 7,
	BM_CMD_PING = 8,
	BM_CMD_PONG = 9,
	BM_CMD_LIST = 10,
	BM_CMD_DIRECTORY = 11,
	BM_CMD_STATS = 12,
	BM_CMD_BYE = 13,
	BM_CMD_ERROR = 14,
	BM_CMD_NOTICE = 15,
	BM_CMD_ACKS = 16,
	BM_CMD_TRACE = 17,
	BM_CMD_ROUTE = 18,
	BM_CMD__MAX = 18,
};
BM_EXPORT const char *bm_cmd_name(int cmd);

/* ---- ids and names ---- */
typedef struct bm_id {
	uint8_t b[16]; /* 48-bit big-endian wall ms, then 80 random bits */
} bm_id_t;
#define BM_ID_HEX_LEN 32

/* A fresh time-ordered id.  Thread safe. */
BM_EXPORT void bm_id_new(bm_id_t *ret_id);
BM_EXPORT bool bm_id_is_zero(const bm_id_t *id);
BM_EXPORT bool bm_id_equal(const bm_id_t *a, const bm_id_t *b);
/* Milliseconds since the epoch when the id was made. */
BM_EXPORT int64_t bm_id_ms(const bm_id_t *id);
/* 32 lowercase hex digits + NUL. */
BM_EXPORT void bm_id_hex(const bm_id_t *id, char ret_hex[BM_ID_HEX_LEN + 1]);
/* -EINVAL unless exactly 32 hex digits. */
BM_EXPORT int bm_id_parse(const char *hex, bm_id_t *ret_id);

/* 0 when valid, else BM_EBADNAME. */
BM_EXPORT int bm_name_check(const char *name);
BM_EXPORT int bm_cap_check(const char *cap);
BM_EXPORT int bm_type_check(const char *type);
/*
 * A destination: an agent name, "@capability" for anycast, or either with
 * "@host" after it for another host reached through the bridges
 * ("mapper@h2", "@map@h2", and "@map@*" for any host, the local one
 * first; docs/multihost.md).  A host-qualified address
 * is at most BM_NAME_MAX bytes in all, so it also fits a `from` field.
 */
BM_EXPORT int bm_address_check(const char *to);
/* A host name: 1..BM_HOST_MAX bytes of [A-Za-z0-9_-] (no dot: hosts are
 * NATS subject tokens).  0 or BM_EBADNAME. */
BM_EXPORT int bm_host_check(const char *host);
/* True when the address names a host (it goes to the local bridge). */
BM_EXPORT bool bm_address_remote(const char *to);

/* ---- messages ---- */
/* A delivered message.  The body stays in the zmq frame it arrived in. */
typedef struct bm_msg {
	bm_id_t id;                     /* kept across retries and requeue */
	bm_id_t corr;                   /* request id this replies to; zero = none */
	char from[BM_NAME_MAX + 1];     /* sender's name, set by the broker */
	char to[BM_ADDR_MAX + 1];       /* as addressed: name or @capability */
	char type[BM_TYPE_MAX + 1];     /* application type, e.g. "plan.request" */
	uint8_t priority;               /* 0..255, higher first where queued */
	uint32_t ttl_ms;                /* 0 = no expiry */
	uint32_t attempt;               /* 0 on first send, +1 per retry */
	int64_t ts_ms;                  /* wall ms when first sent */
	zmq_msg_t body;                 /* the frame holding the body (zero copy) */
	size_t body_at;                 /* where the body starts in it (inline: past the header) */
	char traceparent[BM_TRACEPARENT_MAX + 1]; /* W3C trace context as sent; "" = none */
	char *tracestate;               /* W3C tracestate as sent (owned), or NULL */
} bm_msg_t;

static inline const void *
bm_msg_data(bm_msg_t *m)
{
	return (const char *)zmq_msg_data(&m->body) + m->body_at;
}
static inline size_t
bm_msg_size(bm_msg_t *m)
{
	return zmq_msg_size(&m->body) - m->body_at;
}
/* Frees a message from bm_client_request() or an event.  NULL-safe. */
BM_EXPORT void bm_msg_destroy(bm_msg_t **self_p);

/* ---- client ---- */
typedef struct bm_client bm_client_t;

typedef struct bm_client_opts {
	const char *dir;          /* runtime dir; NULL = $BEAST_DIR or default */
	const char *endpoint;     /* overrides dir: "ipc://..." or "tcp://..." */
	const char *name;         /* NULL = anonymous: LIST, STATS, PING only */
	const char *const *caps;  /* NULL-terminated capability list, or NULL */
	int heartbeat_ms;         /* 0 = BM_HEARTBEAT_DEFAULT */
	int connect_timeout_ms;   /* wait for WELCOME/PONG in open; 0 = 3000 */
	size_t max_body;          /* 0 = BM_BODY_MAX_DEFAULT */
	int hwm;                  /* socket high-water marks; 0 = 100000 */
	void *zmq_ctx;            /* share a zmq context; NULL = own one */
	const char *key_file;     /* CURVE over tcp: own key pair (NAME.key) */
	const char *server_key_file; /* CURVE: the broker's public key (.pub) */
	int direct;               /* direct routes: 1 = offer, -1 = never, 0 = as
	                           * $BEAST_DIRECT says ("0" = never; default offer) */
} bm_client_opts_t;

/*
 * Connects to beastd and, with a name, registers (HELLO -> WELCOME).  Waits
 * at most connect_timeout_ms.  Returns 0 and an owned client, or:
 * BM_ENOBROKER (no beastd answered), BM_ENOCURVE (with key_file: no answer
 * over CURVE), BM_EBADKEY (a key file is unusable), BM_ENAMETAKEN, BM_EBADNAME,
 * BM_EUNSAFEDIR, -ENAMETOOLONG, -ENOMEM.
 */
BM_EXPORT int bm_client_open(const bm_client_opts_t *opts, bm_client_t **ret_client);
/* Sends BYE when registered, lingers up to 1 s for queued frames, frees. */
BM_EXPORT void bm_client_destroy(bm_client_t **self_p);

typedef struct bm_send_opts {
	const char *to;        /* agent name or "@capability" */
	const char *type;      /* message type; NULL = "msg" */
	const bm_id_t *id;     /* NULL = a fresh id (written to ret_id) */
	const bm_id_t *corr;   /* NULL = not a reply */
	uint8_t priority;
	uint32_t ttl_ms;
	uint32_t attempt;
	int64_t ts_ms;         /* 0 = now */
	const char *traceparent; /* W3C traceparent to carry untouched; NULL = none */
	const char *tracestate;  /* W3C tracestate to carry untouched; NULL = none */
} bm_send_opts_t;

/*
 * Queues one SEND; never blocks.  The body is copied (bm_client_send_frame
 * takes a zmq frame instead, without copying).  The outcome arrives later as
 * a BM_EV_ACK or BM_EV_NACK event carrying the id.  Returns 0, BM_ETOOBIG,
 * BM_EBADNAME, BM_ENOTREG (anonymous client), BM_EFULL (socket high-water
 * mark: back off and retry), -EINVAL.
 */
BM_EXPORT int bm_client_send(bm_client_t *c, const bm_send_opts_t *o, const void *body,
                             size_t len, bm_id_t *ret_id);
/* As bm_client_send; on success the frame is moved (left empty). */
BM_EXPORT int bm_client_send_frame(bm_client_t *c, const bm_send_opts_t *o, zmq_msg_t *body,
                                   bm_id_t *ret_id);

/*
 * For bridges (an agent with the capability "bridge"): sends on behalf of
 * origin, an agent on another host ("name@host"), so the receiver sees
 * origin as the sender and its ACK or reply comes back to the bridge.
 * beastd ignores the origin from any other agent.  Otherwise as
 * bm_client_send; -EINVAL when origin names no host.
 */
BM_EXPORT int bm_client_forward(bm_client_t *c, const bm_send_opts_t *o, const char *origin,
                                const void *body, size_t len, bm_id_t *ret_id);

enum bm_event_kind {
	BM_EV_MESSAGE = 1, /* msg: a DELIVER; ACK it with bm_client_ack() */
	BM_EV_ACK,         /* id was acknowledged by peer */
	BM_EV_NACK,        /* id was refused: code, text; peer = destination */
	BM_EV_NOTICE,      /* peer went "online"/"offline" (text) */
	BM_EV_REGISTERED,  /* (re)registered with a (re)started broker */
	BM_EV_DENIED,      /* re-registration refused: code, text */
};

typedef struct bm_event {
	int kind;                      /* enum bm_event_kind */
	bm_msg_t *msg;                 /* MESSAGE: owned by the event */
	bm_id_t id;                    /* ACK/NACK: the message id */
	char peer[BM_ADDR_MAX + 1];    /* ACK: acker; NACK: destination; NOTICE: agent */
	int code;                      /* NACK/DENIED: BM_E* reason */
	char text[BM_TEXT_MAX + 1];    /* NACK/DENIED reason, NOTICE event */
} bm_event_t;
/* Frees what the event owns (its msg).  Safe on a zeroed event. */
BM_EXPORT void bm_event_clear(bm_event_t *ev);

/*
 * Waits up to timeout_ms (0 = poll, -1 = for ever) for the next event,
 * keeping heartbeats and re-registration going meanwhile.  Returns 0 with
 * *ret_ev filled (clear it with bm_event_clear), -ETIMEDOUT, -EINTR,
 * -ESHUTDOWN when the zmq context was terminated.
 */
BM_EXPORT int bm_client_recv(bm_client_t *c, int timeout_ms, bm_event_t *ret_ev);

/*
 * Acknowledge / refuse a delivered message (relayed to its sender).  While
 * more deliveries are waiting, ACKs are held and leave together as one
 * ACKS frame (protocol.md §4) with the last of the burst; anything held
 * leaves before the client waits (recv, timeout) or sends, on
 * bm_client_flush() and on destroy.
 */
BM_EXPORT int bm_client_ack(bm_client_t *c, const bm_msg_t *m);
BM_EXPORT int bm_client_flush(bm_client_t *c);
BM_EXPORT int bm_client_nack(bm_client_t *c, const bm_msg_t *m, int code, const char *text);

/* Sends a reply to a delivered request: to = m->from, corr = m->id. */
BM_EXPORT int bm_client_reply(bm_client_t *c, const bm_msg_t *req, const char *type,
                              const void *body, size_t len);

/*
 * Request/reply: sends, then waits up to timeout_ms for the message whose
 * corr is the request's id, ACKs it and returns it in *ret_reply (caller
 * destroys).  Other events arriving meanwhile are kept for bm_client_recv.
 * Returns 0, -ETIMEDOUT, or the NACK's code (BM_ENOAGENT, BM_ETOOBIG, ...).
 */
BM_EXPORT int bm_client_request(bm_client_t *c, const char *to, const char *type,
                                const void *body, size_t len, int timeout_ms,
                                bm_msg_t **ret_reply);

/* ---- tracing (docs/observability.md) ---- */

/* What beastd's trace ring records about a message. */
enum bm_trace_kind {
	BM_TRACE_ROUTED = 1,   /* a SEND handed to its receiver's connection */
	BM_TRACE_NACKED = 2,   /* beastd refused a SEND (code: why) */
	BM_TRACE_ACKED = 3,    /* the receiver's ACK, relayed to the sender */
	BM_TRACE_REFUSED = 4,  /* the receiver's NACK, relayed (code: why) */
};
#define BM_TRACE_RING 16384 /* events beastd keeps (all messages together) */
#define BM_TRACE_MAX 64     /* events one TRACE reply carries at most */

typedef struct bm_trace_event {
	int kind;                     /* enum bm_trace_kind */
	int64_t t_us;                 /* wall-clock microseconds since the epoch */
	char from[BM_NAME_MAX + 1];   /* sender (ACK/REFUSED: the receiver) */
	char to[BM_ADDR_MAX + 1];     /* receiver or address (ACK/REFUSED: the sender) */
	uint32_t attempt;             /* the SEND's attempt number (0 = first) */
	int code;                     /* NACKED/REFUSED: BM_E* reason, else 0 */
} bm_trace_event_t;
BM_EXPORT const char *bm_trace_kind_name(int kind);

/*
 * Asks beastd what its trace ring holds about message id (TRACE): at most
 * BM_TRACE_MAX events, oldest first.  *ret_events is malloc'd (free()); a
 * count of 0 means beastd saw nothing of it (or forgot: the ring keeps the
 * last BM_TRACE_RING events).  BM_EPROTO from a beastd too old for TRACE
 * (it answers ERROR: the call then times out), -ETIMEDOUT.
 */
BM_EXPORT int bm_client_trace(bm_client_t *c, const bm_id_t *id, int timeout_ms,
                              bm_trace_event_t **ret_events, size_t *ret_count);

/* One directory entry (LIST -> DIRECTORY). */
typedef struct bm_agent_info {
	char name[BM_NAME_MAX + 1];
	char caps[BM_CAPS_MAX][BM_CAP_MAX + 1];
	int ncaps;
	int64_t idle_ms;       /* since the broker last heard from it */
	uint64_t inflight;     /* delivered to it, not yet ACKed/NACKed */
	uint64_t sent;         /* SENDs it made */
	uint64_t delivered;    /* DELIVERs it got */
	uint64_t acked;        /* ACKs it gave */
	uint64_t unacked_bytes; /* bytes delivered to it, not yet ACKed (estimate) */
	int64_t outbox_pending; /* its outbox as it last reported (PING); -1 = never */
	int64_t outbox_dead;    /* dead letters it reported; -1 = never */
	int64_t outbox_retries; /* resends it reported; -1 = never */
	char direct[256];       /* its direct routes as "peer:msgs,..." (messages it
	                         * sent over each, as it reported); "" = none */
} bm_agent_info_t;

/* Asks the broker for its directory.  *ret_agents is malloc'd (free()). */
BM_EXPORT int bm_client_list(bm_client_t *c, int timeout_ms, bm_agent_info_t **ret_agents,
                             size_t *ret_count);

typedef struct bm_stat {
	char key[32];
	int64_t value;
} bm_stat_t;
/* Broker counters as key/value pairs.  *ret_stats is malloc'd (free()). */
BM_EXPORT int bm_client_stats(bm_client_t *c, int timeout_ms, bm_stat_t **ret_stats,
                              size_t *ret_count);

/* Round trip PING -> PONG; returns microseconds or an error. */
BM_EXPORT int64_t bm_client_ping(bm_client_t *c, int timeout_ms);

/*
 * Polling: put bm_client_socket(), bm_client_direct_fd() (when >= 0: messages
 * over direct routes wake nothing else) and bm_client_monitor() in
 * zmq_pollitem_t (ZMQ_POLLIN) beside your other sockets and fds, with a timeout no longer
 * than bm_client_timeout() (0 when events are already waiting inside the
 * client), then call bm_client_recv(c, 0, &ev) until -ETIMEDOUT.  The
 * monitor says when the connection to the broker was regained (a
 * restarted beastd): polling it lets the client register again at once
 * instead of at its next heartbeat.  Both belong to the client.
 */
BM_EXPORT void *bm_client_socket(bm_client_t *c);
BM_EXPORT void *bm_client_monitor(bm_client_t *c);
BM_EXPORT int bm_client_timeout(bm_client_t *c);
/* How many times the connection to the broker was lost and regained. */
BM_EXPORT uint64_t bm_client_reconnects(const bm_client_t *c);
BM_EXPORT const char *bm_client_name(const bm_client_t *c);
BM_EXPORT bool bm_client_registered(const bm_client_t *c);
BM_EXPORT size_t bm_client_max_body(const bm_client_t *c);

/* Direct routes (docs/protocol.md §16, docs/shm.md): counters. */
typedef struct bm_direct_stats {
	uint64_t routes;    /* routes open or opening now */
	uint64_t asked;     /* introductions asked of beastd */
	uint64_t refused;   /* ... refused by it */
	uint64_t opened;    /* routes that came up */
	uint64_t closed;    /* routes that went down (any reason) */
	uint64_t idle;      /* ... of which for idleness */
	uint64_t failed;    /* setups or routes that failed (peer gone, refused) */
	uint64_t corrupt;   /* routes ended by a ring that failed a check */
	uint64_t sent;      /* messages sent over routes */
	uint64_t received;  /* frames (messages, ACKs) received over routes */
	uint64_t full;      /* sends that found the ring full and went through beastd */
} bm_direct_stats_t;
/* Zeroes when the client has no direct routes. */
BM_EXPORT void bm_client_direct_stats(const bm_client_t *c, bm_direct_stats_t *ret);
/* The fd to poll (POLLIN) for direct routes beside bm_client_socket(), or
 * -1 when the client offers none. */
BM_EXPORT int bm_client_direct_fd(const bm_client_t *c);

/* ---- CURVE keys (mesh/curve.c) ---- */
/*
 * Writes DIR/NAME.key (public + secret key, 0600) and DIR/NAME.pub (public
 * key), both carrying the metadata name=NAME; DIR is made 0700 when
 * missing.  Never overwrites: -EEXIST when NAME.key exists.  BM_EBADNAME,
 * -ENAMETOOLONG, -errno.
 */
BM_EXPORT int bm_curve_keygen(const char *dir, const char *name);
/* The default key directory, STATE/keys (bm_statedir_resolve); writes
 * BM_PATH_MAX bytes at most. */
BM_EXPORT int bm_curve_keydir(char *ret_path);
/*
 * Resolves a server's key file and allow-list directory: NULL server_key =
 * KEYDIR/server.key, NULL allow_dir = KEYDIR/allowed (made 0700); a given
 * allow_dir must exist (-ENOTDIR).  Writes BM_PATH_MAX bytes to each.
 */
BM_EXPORT int bm_curve_paths(const char *server_key, const char *allow_dir, char *ret_key,
                             char *ret_allow);
/* czmq's zmq context, where the ZAP handler lives: a CURVE server socket
 * must be made in it. */
BM_EXPORT void *bm_curve_context(void);
/*
 * Makes the next binds of sock (a socket of bm_curve_context()) CURVE
 * servers: the server key (made 0600 on first use, as bm_curve_paths
 * says) and the process' ZAP handler admitting the keys in allow_dir (one
 * allow-list per process: -EBUSY for another).  Set ZMQ_CURVE_SERVER back
 * to 0 to bind plain endpoints after.  Takes a reference on the handler:
 * call bm_curve_server_release() once per success, after closing sock.
 * BM_EBADKEY, -ENOTDIR, -errno.
 */
BM_EXPORT int bm_curve_server(void *sock, const char *server_key, const char *allow_dir);
BM_EXPORT void bm_curve_server_release(void);
/* Makes sock a CURVE client with the key pair in key_file (NAME.key,
 * private to the user) trusting the server key in server_key_file (.pub).
 * Call before connect.  BM_EBADKEY, -EINVAL. */
BM_EXPORT int bm_curve_client(void *sock, const char *key_file, const char *server_key_file);

/* ---- broker ---- */
typedef struct bm_broker bm_broker_t;

typedef struct bm_broker_opts {
	const char *dir;          /* runtime dir; NULL = default (created 0700) */
	const char *tcp;          /* extra endpoint, loopback only unless curve */
	int heartbeat_ms;         /* 0 = BM_HEARTBEAT_DEFAULT */
	size_t max_body;          /* 0 = BM_BODY_MAX_DEFAULT */
	int hwm;                  /* per-peer queue bound; 0 = 100000 */
	size_t max_pending;       /* per-agent unacknowledged bytes; 0 = BM_PENDING_MAX_DEFAULT */
	bool curve;               /* tcp endpoint is CURVE-encrypted, ZAP-checked */
	const char *server_key;   /* curve: secret key file; NULL = KEYDIR/server.key */
	const char *allow_dir;    /* curve: allowed .pub files; NULL = KEYDIR/allowed */
	bool no_direct;           /* introduce no direct routes (agents keep to the broker) */
} bm_broker_opts_t;

/*
 * Resolves and checks the runtime dir, takes its lock (BM_ERUNNING when a
 * live beastd holds it), removes a crashed broker's stale socket and binds.
 * With curve, the tcp endpoint may be any address: peers must complete a
 * CURVE handshake with a key whose .pub file is in allow_dir (checked by a
 * ZAP handler), and a HELLO over it must use the name in that file's
 * metadata (name=...), else DENIED.  The server key is made on first use
 * (0600).  BM_EBADKEY when a key file is unusable; -EADDRNOTAVAIL for a
 * non-loopback tcp endpoint without curve.
 */
BM_EXPORT int bm_broker_open(const bm_broker_opts_t *opts, bm_broker_t **ret_broker);
/* Runs the loop until *stop becomes non-zero (set it from a signal). */
BM_EXPORT int bm_broker_run(bm_broker_t *b, volatile sig_atomic_t *stop);
/* Closes sockets, removes socket files, releases the lock, frees. */
BM_EXPORT void bm_broker_destroy(bm_broker_t **self_p);
BM_EXPORT const char *bm_broker_dir(const bm_broker_t *b);

/*
 * Extra STATS counters (beastd adds the broadcast proxy's): fn is called on
 * the broker's thread for each STATS request, writes at most max entries
 * to ret and returns how many (a negative return adds none).  NULL fn
 * removes the hook.
 */
typedef int (*bm_broker_stats_fn)(void *arg, bm_stat_t *ret, size_t max);
BM_EXPORT void bm_broker_set_stats_hook(bm_broker_t *b, bm_broker_stats_fn fn, void *arg);
BM_EXPORT const char *bm_broker_endpoint(const bm_broker_t *b);

/* ---- broker snapshots (observability, docs/observability.md) ---- */

#define BM_SNAP_FLOWS_MAX 256   /* (from, to) pairs counted; more go to "_other" */
#define BM_LAT_BUCKETS 16       /* SEND->ACK histogram: 15 bounds + overflow */
/* Upper bounds of the histogram's buckets, microseconds. */
#define BM_LAT_BOUNDS_US                                                      \
	{100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,    \
	 500000, 1000000, 2500000, 5000000}

/* One agent as the broker saw it when the snapshot was taken. */
typedef struct bm_snap_agent {
	char name[BM_NAME_MAX + 1];               /* registered name */
	char caps[BM_CAPS_MAX][BM_CAP_MAX + 1];   /* capabilities */
	int ncaps;                                /* how many */
	int64_t idle_ms;                          /* since last heard from */
	uint64_t inflight;                        /* delivered, not yet (N)ACKed */
	uint64_t pending_bytes;                   /* their bytes (an estimate, see broker.c) */
	uint64_t sent;                            /* SENDs it made */
	uint64_t delivered;                       /* DELIVERs it got */
	uint64_t acked;                           /* ACKs it gave */
	int64_t outbox_pending;                   /* reported in its PING; -1 = never */
	int64_t outbox_dead;                      /* dead letters it holds; -1 = never */
	int64_t outbox_retries;                   /* resends it made; -1 = never */
} bm_snap_agent_t;

/* Messages routed from one agent to another (anycast counted at the
 * agent picked). */
typedef struct bm_snap_flow {
	char from[BM_NAME_MAX + 1];               /* sender, or "_other" */
	char to[BM_NAME_MAX + 1];                 /* receiver, or "_other" */
	uint64_t msgs;                            /* deliveries */
	uint64_t bytes;                           /* their body bytes */
} bm_snap_flow_t;

/* What the broker publishes for readers on other threads: plain data,
 * owned by whoever holds the pointer. */
typedef struct bm_broker_snap {
	int64_t taken_ms;                         /* bm_mono_ms() when taken */
	bm_stat_t *stats;                         /* the STATS reply, in order */
	size_t nstats;                            /* entries */
	bm_snap_agent_t *agents;                  /* the directory */
	size_t nagents;                           /* entries */
	bm_snap_flow_t *flows;                    /* pairs, busiest first */
	size_t nflows;                            /* entries (<= BM_SNAP_FLOWS_MAX + 1) */
	uint64_t lat_buckets[BM_LAT_BUCKETS];     /* SEND->ACK samples per bucket (not cumulative) */
	uint64_t lat_count;                       /* samples */
	uint64_t lat_sum_us;                      /* their sum */
	uint64_t blobs;                           /* blob.announce messages routed */
	uint64_t blob_bytes;                      /* the sizes they announced */
} bm_broker_snap_t;

/*
 * Takes a snapshot of the broker's counters, directory, flows and SEND->ACK
 * histogram (the STATS hook's counters included).  Call on the broker's
 * thread (from a tick hook).  Returns 0 and an owned snapshot, or -ENOMEM.
 */
BM_EXPORT int bm_broker_snap(bm_broker_t *b, bm_broker_snap_t **ret_snap);
/* Frees a snapshot; NULL-safe.  Thread safe (it touches only the snapshot). */
BM_EXPORT void bm_broker_snap_destroy(bm_broker_snap_t **self_p);

/*
 * Calls fn(arg) on the broker's thread about every period_ms while
 * bm_broker_run runs (between two polls; the loop never waits longer than
 * period_ms), so fn may call bm_broker_snap.  fn must not block.  NULL fn
 * removes the hook.
 */
typedef void (*bm_broker_tick_fn)(void *arg);
BM_EXPORT void bm_broker_set_tick_hook(bm_broker_t *b, bm_broker_tick_fn fn, void *arg,
                                       int period_ms);

/* ======================================================================
 * journal - an append-only, segmented, checksummed log (mesh/journal.c,
 * docs/journal.md).  The outbox and the de-dup window are built on it.
 * ====================================================================== */

typedef struct bm_journal bm_journal_t;

#define BM_JOURNAL_RECORD_MAX (64u << 20) /* payload bytes per record */
#define BM_JOURNAL_LIVE 1                 /* append flag: counts as live */

/* Sync policies (docs/journal.md states what each one guarantees). */
enum bm_journal_sync {
	BM_JOURNAL_SYNC_ALWAYS = 0,   /* every commit fdatasyncs: group commit */
	BM_JOURNAL_SYNC_INTERVAL = 1, /* at most every interval_ms */
	BM_JOURNAL_SYNC_NEVER = 2,    /* write only: survives kill -9, not power loss */
};

/* One record handed to the replay callback; data is valid during the call. */
typedef struct bm_journal_rec {
	uint64_t seq;      /* sequence number */
	int type;          /* 1..255 */
	int flags;         /* BM_JOURNAL_LIVE or 0 */
	const void *data;  /* payload */
	size_t len;        /* payload bytes */
} bm_journal_rec_t;
/* Returns 0 to go on, a negative code to stop open with that code. */
typedef int (*bm_journal_replay_fn)(void *arg, const bm_journal_rec_t *rec);

/* What recovery (or salvage) found. */
typedef struct bm_journal_report {
	uint64_t records;                   /* valid records replayed (kept) */
	uint64_t segments;                  /* segments read */
	uint64_t torn_bytes;                /* bytes cut off a torn tail (salvage: bytes dropped) */
	char torn_segment[BM_PATH_MAX];     /* the segment that was cut, or "" */
	char corrupt_segment[BM_PATH_MAX];  /* BM_ECORRUPT: where (salvage: quarantined copy) */
	uint64_t corrupt_offset;            /* BM_ECORRUPT: byte offset of the bad record */
	uint64_t quarantined;               /* salvage: segments moved to quarantine/ */
} bm_journal_report_t;

/* Write and sync hooks, so a test can fail or "crash" at the Nth sync.
 * write returns bytes written or -errno; sync returns 0 or -errno (is_dir:
 * the directory, else fdatasync of a segment). */
typedef struct bm_journal_ops {
	ssize_t (*write)(void *arg, int fd, const void *buf, size_t len);
	int (*sync)(void *arg, int fd, bool is_dir);
	void *arg;
} bm_journal_ops_t;

typedef struct bm_journal_opts {
	size_t segment_size;          /* rotate past this many bytes; 0 = 64 MiB */
	int sync;                     /* enum bm_journal_sync; 0 = ALWAYS */
	int interval_ms;              /* INTERVAL period; 0 = 100 */
	bm_journal_replay_fn replay;  /* called for each record on open; may be NULL */
	void *arg;                    /* its argument */
	bm_journal_report_t *report;  /* filled by open when not NULL */
	const bm_journal_ops_t *ops;  /* NULL = the real system calls */
} bm_journal_opts_t;

/*
 * Opens (creating dir 0700 when missing) and recovers the journal in dir,
 * replaying every valid record.  A torn tail of the newest segment is cut
 * off and reported.  Returns 0 and an owned journal, or BM_ECORRUPT (the
 * report names segment and offset; bm_journal_salvage() repairs), -EBUSY
 * (another process has it open), BM_EVERSION, -errno, or the replay
 * callback's error.
 */
BM_EXPORT int bm_journal_open(const char *dir, const bm_journal_opts_t *opts,
                              bm_journal_t **ret_journal);
/* Commits what is buffered (INTERVAL: with a sync); returns the sticky
 * error if there is one.  The journal stays usable by destroy only. */
BM_EXPORT int bm_journal_close(bm_journal_t *j);
/* Closes (best effort) and frees; NULL-safe. */
BM_EXPORT void bm_journal_destroy(bm_journal_t **self_p);

/* A slice of a record's payload for bm_journal_appendv. */
typedef struct bm_journal_iov {
	const void *data;
	size_t len;
} bm_journal_iov_t;

/*
 * Frames one record in memory (nothing is written until commit) and gives
 * its sequence number.  Returns 0, BM_ETOOBIG, BM_EREADONLY (after an I/O
 * error), -ENOMEM, -EINVAL; may commit and rotate first, so also any commit
 * error.
 */
BM_EXPORT int bm_journal_append(bm_journal_t *j, int type, int flags, const void *data,
                                size_t len, uint64_t *ret_seq);
BM_EXPORT int bm_journal_appendv(bm_journal_t *j, int type, int flags,
                                 const bm_journal_iov_t *iov, int niov, uint64_t *ret_seq);
/*
 * Writes every buffered record with one write and syncs per the policy.
 * On 0, bm_journal_synced_seq() says what is stored.  An I/O error is
 * returned once and makes the journal read-only (BM_EREADONLY after).
 */
BM_EXPORT int bm_journal_commit(bm_journal_t *j);
/* INTERVAL: syncs when due.  Call from the loop; bm_journal_timeout() gives
 * the ms until due (-1 = nothing to sync). */
BM_EXPORT int bm_journal_tick(bm_journal_t *j);
BM_EXPORT int bm_journal_timeout(const bm_journal_t *j);
/* A LIVE record is no longer needed; a segment whose records are all
 * released is deleted once it is the oldest. */
BM_EXPORT void bm_journal_release(bm_journal_t *j, uint64_t seq);
/* The sticky error (0 = none). */
BM_EXPORT int bm_journal_error(const bm_journal_t *j);
BM_EXPORT uint64_t bm_journal_written_seq(const bm_journal_t *j);
BM_EXPORT uint64_t bm_journal_synced_seq(const bm_journal_t *j);
BM_EXPORT uint64_t bm_journal_next_seq(const bm_journal_t *j);
BM_EXPORT size_t bm_journal_segments(const bm_journal_t *j);
BM_EXPORT uint64_t bm_journal_bytes(const bm_journal_t *j);
BM_EXPORT const char *bm_journal_dir(const bm_journal_t *j);

/*
 * Repairs a journal that open refused with BM_ECORRUPT: every segment with
 * a bad byte is moved to dir/quarantine/ and replaced by one holding every
 * valid record found in it.  The journal must not be open.  The report
 * counts records kept, bytes dropped and segments quarantined.
 */
BM_EXPORT int bm_journal_salvage(const char *dir, bm_journal_report_t *ret_report);

/* ======================================================================
 * outbox - reliable sends kept in the sender's journal until ACKed, with
 * retries, dead letters and atomic batches (mesh/outbox.c); and the
 * receiver's de-dup window (mesh/dedup.c).  docs/architecture.md, Outbox.
 * ====================================================================== */

typedef struct bm_outbox bm_outbox_t;

/* Why a message is dead (bm_outbox_entry_t.dead_code).  A permanent NACK
 * keeps the broker's BM_E* code (negative) instead. */
enum bm_outbox_dead {
	BM_OUTBOX_DEAD_TTL = 1,      /* its TTL passed before an ACK */
	BM_OUTBOX_DEAD_ATTEMPTS = 2, /* max attempts made, none ACKed */
	BM_OUTBOX_DEAD_TOOBIG = 3,   /* larger than the broker takes */
};

typedef struct bm_outbox_opts {
	const char *dir;              /* journal directory ($BEAST_STATE/<agent>/outbox) */
	bm_client_t *client;          /* sends through it; NULL = store only */
	int sync;                     /* enum bm_journal_sync; 0 = ALWAYS */
	int interval_ms;              /* for INTERVAL */
	size_t segment_size;          /* journal segments; 0 = 64 MiB */
	uint32_t base_ms;             /* backoff base; 0 = 100 */
	uint32_t cap_ms;              /* backoff cap; 0 = 30000 */
	uint32_t max_attempts;        /* default per message; 0 = 20 */
	uint32_t ttl_ms;              /* default per message; 0 = none */
	uint32_t ack_timeout_ms;      /* an attempt without ACK fails after; 0 = 5000 */
	size_t max_pending;           /* live messages; 0 = 1000000 */
	size_t max_bytes;             /* live body bytes; 0 = 1 GiB */
	int window;                   /* messages in flight at most; 0 = 4096 */
	const bm_journal_ops_t *ops;  /* journal hooks for tests; NULL = real */
	bm_journal_report_t *report;  /* journal recovery report, when not NULL */
} bm_outbox_opts_t;

typedef struct bm_outbox_send_opts {
	const char *to;          /* agent name or "@capability" */
	const char *type;        /* NULL = "msg" */
	const bm_id_t *id;       /* NULL = a fresh id; else the caller's (an
	                          * idempotency key: -EEXIST while held) */
	const bm_id_t *corr;     /* NULL = not a reply */
	uint8_t priority;        /* higher goes first among pending */
	uint32_t ttl_ms;         /* 0 = the outbox default */
	uint32_t max_attempts;   /* 0 = the outbox default */
	bool expire;             /* at the TTL, withdraw it (stats: expired) rather
	                          * than keep a dead letter: for replies */
	const char *traceparent; /* W3C trace context, stored with it and sent on
	                          * every attempt; NULL = none (-EINVAL when over
	                          * BM_TRACEPARENT_MAX) */
	const char *tracestate;  /* with a traceparent only; NULL = none */
} bm_outbox_send_opts_t;

/*
 * Opens the outbox in opts->dir (its journal), recovering what was pending
 * and dead.  Returns 0 and an owned outbox, or a bm_journal_open error
 * (BM_ECORRUPT: see bm_journal_salvage).
 */
BM_EXPORT int bm_outbox_open(const bm_outbox_opts_t *opts, bm_outbox_t **ret_outbox);
/* Writes the lazy records, closes the journal, frees; NULL-safe. */
BM_EXPORT void bm_outbox_destroy(bm_outbox_t **self_p);
/* The client to send through (NULL = none: store only). */
BM_EXPORT void bm_outbox_set_client(bm_outbox_t *ob, bm_client_t *c);

/*
 * Frames one message into the journal with a fresh id (written to ret_id).
 * Not stored until bm_outbox_commit(); not sent before that.  Returns 0,
 * BM_EFULL (pending count or bytes at their limit: back off), BM_ETOOBIG,
 * BM_EBADNAME, BM_EREADONLY (the journal met an I/O error), -EEXIST (the
 * caller's id is already held), -ENOMEM.
 */
BM_EXPORT int bm_outbox_put(bm_outbox_t *ob, const bm_outbox_send_opts_t *o, const void *body,
                            size_t len, bm_id_t *ret_id);

/* One message of an atomic batch. */
typedef struct bm_outbox_item {
	bm_outbox_send_opts_t opts;  /* as for bm_outbox_put */
	const void *body;            /* body bytes */
	size_t len;                  /* their count */
} bm_outbox_item_t;
/* Frames n messages as one journal record: after any crash all n are
 * pending or none.  ret_ids (n entries) may be NULL.  Errors as put. */
BM_EXPORT int bm_outbox_put_batch(bm_outbox_t *ob, const bm_outbox_item_t *items, size_t n,
                                  bm_id_t *ret_ids);
/*
 * Stores everything put since the last commit (one write, one fdatasync
 * under ALWAYS).  On 0 those messages are durable and will be sent.  On an
 * error (-ENOSPC, -EIO, ...; BM_EREADONLY after) none of them was stored
 * and they are forgotten; messages stored before stay stored.
 */
BM_EXPORT int bm_outbox_commit(bm_outbox_t *ob);
/* put + commit + pump. */
BM_EXPORT int bm_outbox_send(bm_outbox_t *ob, const bm_outbox_send_opts_t *o, const void *body,
                             size_t len, bm_id_t *ret_id);
/*
 * Commits, handles due retries and ACK deadlines, and sends what is ready
 * (highest priority first, at most `window` in flight).  Returns how many
 * it sent, or a journal error.  Call it from the loop whenever
 * bm_outbox_timeout() says so and after handling events.
 */
BM_EXPORT int bm_outbox_pump(bm_outbox_t *ob);
/*
 * Feeds a client event to the outbox: ACK retires, NACK retries or kills,
 * NOTICE "online" makes messages waiting for that agent ready, REGISTERED
 * resends what was in flight.  Returns 1 when the event was about one of
 * its messages (ACK/NACK), else 0 (the caller handles it as usual).
 */
BM_EXPORT int bm_outbox_handle(bm_outbox_t *ob, const bm_event_t *ev);
/* Milliseconds until bm_outbox_pump() has work (0 = now, -1 = none). */
BM_EXPORT int bm_outbox_timeout(const bm_outbox_t *ob);
/* Runs the retry loop on the client until nothing is pending (0),
 * timeout_ms passes (-ETIMEDOUT) or a signal interrupts it (-EINTR).  Events other than its own are dropped:
 * use it in a sender that only sends (beast outbox flush). */
BM_EXPORT int bm_outbox_run(bm_outbox_t *ob, int timeout_ms);

/* DEAD -> pending with fresh attempts and TTL: 0, -ENOENT, -EALREADY (not
 * dead), BM_EFULL.  _all returns how many. */
BM_EXPORT int bm_outbox_requeue(bm_outbox_t *ob, const bm_id_t *id);
BM_EXPORT int bm_outbox_requeue_all(bm_outbox_t *ob);
/* Removes a message (pending or dead) for good: 0, -ENOENT.  _dead purges
 * every dead letter and returns how many. */
BM_EXPORT int bm_outbox_purge(bm_outbox_t *ob, const bm_id_t *id);
BM_EXPORT int bm_outbox_purge_dead(bm_outbox_t *ob);

/* One message as bm_outbox_list shows it. */
typedef struct bm_outbox_entry {
	bm_id_t id;                   /* kept across retries and requeue */
	char to[BM_ADDR_MAX + 1];     /* destination */
	char type[BM_TYPE_MAX + 1];   /* message type */
	uint8_t priority;             /* 0..255 */
	bool inflight;                /* sent, ACK awaited */
	uint32_t attempts;            /* sends made */
	uint32_t max_attempts;        /* allowed */
	uint32_t ttl_ms;              /* 0 = none */
	int64_t created_ms;           /* wall ms (reset by requeue) */
	int64_t next_ms;              /* wall ms of the next attempt or deadline */
	size_t size;                  /* body bytes */
	int dead_code;                /* 0, or why it is dead (bm_outbox_reason) */
	char why[BM_TEXT_MAX + 1];    /* the last refusal's text: the reason of the
	                               * last NACK (from the receiver, its beastd,
	                               * or another host: "on host h2: ..."); "" =
	                               * none.  An expiry (BM_ETTL) does not
	                               * replace an earlier refusal.  Kept with a
	                               * dead letter. */
} bm_outbox_entry_t;
/* Pending (dead = false) or dead messages, highest priority first.
 * *ret_entries is malloc'd (free()). */
BM_EXPORT int bm_outbox_list(bm_outbox_t *ob, bool dead, bm_outbox_entry_t **ret_entries,
                             size_t *ret_count);
/* One message by id (pending or dead): 0, or -ENOENT once it is retired
 * (ACKed or purged). */
BM_EXPORT int bm_outbox_get(const bm_outbox_t *ob, const bm_id_t *id,
                            bm_outbox_entry_t *ret_entry);
/* Text for a dead_code. */
BM_EXPORT const char *bm_outbox_reason(int code);

typedef struct bm_outbox_stats {
	uint64_t pending;        /* live, not in flight */
	uint64_t inflight;       /* sent, ACK awaited */
	uint64_t dead;           /* dead letters held */
	uint64_t bytes;          /* live body bytes */
	uint64_t stored;         /* since open: messages stored */
	uint64_t sent;           /* sends, retries included */
	uint64_t retries;        /* sends after the first */
	uint64_t acked;          /* ACKs received */
	uint64_t nacked;         /* NACKs received */
	uint64_t timeouts;       /* attempts without ACK in time */
	uint64_t dead_total;     /* messages that died since open */
	uint64_t expired;        /* `expire` messages withdrawn at their TTL */
	uint64_t segments;       /* journal segments */
	uint64_t journal_bytes;  /* journal bytes on disk */
} bm_outbox_stats_t;

/* What an outbox journal says about one message (bm_outbox_trace). */
enum bm_outbox_fate {
	BM_OUTBOX_FATE_PENDING = 1, /* stored, not yet ACKed (in flight or waiting) */
	BM_OUTBOX_FATE_ACKED = 2,   /* ACK record: retired */
	BM_OUTBOX_FATE_DEAD = 3,    /* dead letter (dead_code says why) */
	BM_OUTBOX_FATE_PURGED = 4,  /* dead letter removed */
};

typedef struct bm_outbox_trace {
	char to[BM_ADDR_MAX + 1];     /* destination */
	char type[BM_TYPE_MAX + 1];   /* message type */
	int64_t stored_ms;            /* wall ms it was stored (first PUT) */
	int64_t requeued_ms;          /* wall ms of the last requeue; 0 = none */
	uint32_t attempts;            /* sends made, as last recorded */
	uint32_t max_attempts;        /* allowed */
	uint32_t ttl_ms;              /* 0 = none */
	int fate;                     /* enum bm_outbox_fate */
	int dead_code;                /* DEAD: BM_E* or BM_OUTBOX_DEAD_* reason */
	char why[BM_TEXT_MAX + 1];    /* DEAD: the last refusal's text; "" = none */
	uint64_t records;             /* journal records about it */
	char traceparent[BM_TRACEPARENT_MAX + 1]; /* W3C trace context stored; "" = none */
} bm_outbox_trace_t;

/*
 * Reads the outbox journal in dir (not while its agent runs: -EBUSY) for
 * the records about message id.  Returns 0 with *ret filled, -ENOENT when
 * the journal holds nothing about it (never stored here, or retired in a
 * segment already deleted), -EBUSY, -errno.  Opening recovers the journal
 * as bm_outbox_open would (a torn tail is cut).
 */
BM_EXPORT int bm_outbox_trace(const char *dir, const bm_id_t *id, bm_outbox_trace_t *ret);
BM_EXPORT void bm_outbox_stats(const bm_outbox_t *ob, bm_outbox_stats_t *ret);
/* Live (pending + in flight) messages. */
BM_EXPORT size_t bm_outbox_count(const bm_outbox_t *ob);
BM_EXPORT bm_journal_t *bm_outbox_journal(bm_outbox_t *ob);

/* ---- receiver de-duplication ---- */

typedef struct bm_dedup bm_dedup_t;

/* Replay of a stored mark: its sender, id and note. */
typedef int (*bm_dedup_note_fn)(void *arg, const char *from, const bm_id_t *id,
                                const void *note, size_t len);

typedef struct bm_dedup_opts {
	size_t window;                /* ids remembered per sender; 0 = 65536 */
	int sync;                     /* enum bm_journal_sync; 0 = ALWAYS */
	int interval_ms;              /* for INTERVAL */
	size_t segment_size;          /* 0 = 64 MiB */
	bm_dedup_note_fn replay_note; /* called on open for each mark; may be NULL */
	void *arg;                    /* its argument */
	const bm_journal_ops_t *ops;  /* journal hooks for tests */
	bm_journal_report_t *report;  /* recovery report, when not NULL */
} bm_dedup_opts_t;

/* Opens the window persisted in dir ($BEAST_STATE/<agent>/dedup). */
BM_EXPORT int bm_dedup_open(const char *dir, const bm_dedup_opts_t *opts,
                            bm_dedup_t **ret_dedup);
BM_EXPORT void bm_dedup_destroy(bm_dedup_t **self_p);
/* 1 when from's message id was handled already, 0 when new. */
BM_EXPORT int bm_dedup_seen(bm_dedup_t *d, const char *from, const bm_id_t *id);
/*
 * Remembers a handled message, with an optional note (the handler's result,
 * stored atomically with the mark).  Stored at the next bm_dedup_commit();
 * ACK the message (new or duplicate) only after that commit.
 */
BM_EXPORT int bm_dedup_mark(bm_dedup_t *d, const char *from, const bm_id_t *id,
                            const void *note, size_t len);
BM_EXPORT int bm_dedup_commit(bm_dedup_t *d);
BM_EXPORT bm_journal_t *bm_dedup_journal(bm_dedup_t *d);

#ifdef __cplusplus
}
#endif
#endif

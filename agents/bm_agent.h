/*
 * bm_agent.h - the agent runtime: the one facade an agent author codes
 * against.
 *
 * An agent has a name (and optionally capabilities), registers with
 * beastd, and then lives in one loop that waits on everything at once:
 * the mesh (directed messages, requests, replies, ACKs), broadcasts it
 * follows, blobs arriving over shared memory, and the timers of its
 * outbox and of its requests.  The author registers handlers and calls
 * bm_agent_run(); or, inside a foreign event loop, polls the items
 * bm_agent_pollitems() gives for at most bm_agent_timeout() ms and calls
 * bm_agent_step(a, 0).
 *
 *   bm_agent_t *a = NULL;
 *   bm_agent_opts_t o = {.name = "echo"};
 *   bm_agent_open(&o, &a);
 *   bm_agent_on_request(a, NULL, my_echo, NULL);
 *   bm_agent_run(a);
 *   bm_agent_destroy(&a);
 *
 * Reliability: every send, request and reply goes through the agent's
 * outbox (a journal in its state directory) and is retried until the
 * receiver ACKs it; every message received is de-duplicated by id (the
 * window is persisted too), handled, and only then ACKed.  Sends made in
 * one turn of the loop are stored with one journal commit (group commit).
 *
 * Threading: an agent belongs to one thread.  bm_agent_stop() alone may be
 * called from a signal handler.
 */
#ifndef BM_AGENT_H
#define BM_AGENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "bm_common.h"
#include "bm_mesh.h"
#include "bm_proxy.h"
#include "bm_shm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bm_agent bm_agent_t;

typedef struct bm_agent_opts {
	const char *name;            /* required: [A-Za-z0-9._-]{1,64} */
	const char *const *caps;     /* NULL-terminated capabilities, or NULL */
	const char *dir;             /* runtime dir; NULL = $BEAST_DIR or default */
	const char *state_dir;       /* journals; NULL = $BEAST_STATE/<name>, else
	                              * $XDG_STATE_HOME/beast/<name>, else
	                              * ~/.local/state/beast/<name> */
	int sync;                    /* enum bm_journal_sync for outbox and de-dup;
	                              * 0 = ALWAYS (group commit) */
	int heartbeat_ms;            /* 0 = BM_HEARTBEAT_DEFAULT */
	int connect_timeout_ms;      /* wait for beastd in open; 0 = 3000 */
	uint32_t ack_timeout_ms;     /* outbox: an attempt without ACK fails
	                              * after; 0 = 5000 */
	size_t channel_capacity;     /* rings of the bulk channels; 0 = 64 MiB */
	volatile sig_atomic_t *stop; /* also stop bm_agent_run when *stop != 0 */
	void *user;                  /* the author's pointer (bm_agent_user) */
	const char *endpoint;        /* remote beastd, "tcp://HOST:PORT"; NULL = ipc in dir */
	const char *pub_endpoint;    /* its --pub-tcp for publishing; NULL = ipc in dir */
	const char *sub_endpoint;    /* its --sub-tcp for following; NULL = ipc in dir */
	const char *key_file;        /* CURVE: own key pair (NAME.key, beast keygen) */
	const char *server_key_file; /* CURVE: beastd's public key (server.pub) */
	size_t shm_log;              /* also offer this agent's broadcasts to local
	                              * subscribers in a shared-memory log of this
	                              * many bytes (>= 64 KiB; bodies then at most a
	                              * quarter of it); 0 = the proxy only */
} bm_agent_opts_t;

/*
 * Opens the agent's journals, connects to beastd and registers.  With
 * endpoint (and key_file + server_key_file for a beastd --curve) it reaches
 * a remote beastd over TCP; bulk channels stay local.  Returns 0
 * and an owned agent, or BM_ENOBROKER, BM_ENAMETAKEN, BM_EBADNAME,
 * BM_EUNSAFEDIR, BM_ENOCURVE, BM_EBADKEY, BM_ECORRUPT (a journal needs salvage: `beast outbox --as
 * NAME salvage`), -EBUSY (the journals are open in another process),
 * -ENOENT (no state directory to default to), -ENOMEM.
 */
BM_EXPORT int bm_agent_open(const bm_agent_opts_t *opts, bm_agent_t **ret_agent);
/* Stores what is buffered, closes every socket, channel and journal
 * (messages not yet ACKed stay in the outbox for the next run), frees.
 * NULL-safe. */
BM_EXPORT void bm_agent_destroy(bm_agent_t **self_p);

BM_EXPORT const char *bm_agent_name(const bm_agent_t *a);
BM_EXPORT void *bm_agent_user(const bm_agent_t *a);
BM_EXPORT bm_client_t *bm_agent_client(bm_agent_t *a);

/* ---- handlers ----
 * A handler returns 0 (the message is ACKed once what the handler sent
 * is stored) or a negative BM_E* code (the message is NACKed with it; the
 * sender's outbox decides whether to retry).  Messages and blobs are
 * valid during the call only. */

typedef int (*bm_agent_msg_fn)(bm_agent_t *a, bm_msg_t *m, void *arg);
/* Inside a message handler that is about to return a negative code: the
 * text its NACK carries (cut to 255 bytes) instead of bm_strerror(code).
 * The sender sees it as the message's last refusal (bm_agent_refusal,
 * `beast outbox dead`).  0, or -EINVAL (also outside a handler). */
BM_EXPORT int bm_agent_refuse_text(bm_agent_t *a, const char *text);
typedef void (*bm_agent_bcast_fn)(bm_agent_t *a, bm_bcast_t *b, void *arg);
/* A blob handler returns 0 (the blob is freed after the call) or
 * BM_AGENT_BLOB_KEEP: it keeps the blob (and every view of its mapped
 * pages) and frees it later with bm_blob_destroy(). */
typedef int (*bm_agent_blob_fn)(bm_agent_t *a, const char *from, bm_blob_t *blob, void *arg);
#define BM_AGENT_BLOB_KEEP 1
/* A request's outcome: err 0 and the reply, or err -ETIMEDOUT, or the
 * dead letter's reason (reply NULL). */
typedef void (*bm_agent_reply_fn)(bm_agent_t *a, int err, bm_msg_t *reply, void *arg);

/*
 * Handlers for delivered messages of `type` (NULL = any type without a
 * handler of its own).  A request handler answers with bm_agent_reply();
 * a message handler may too.  Messages nobody handles are ACKed and
 * counted.  Replies to this agent's own requests go to their callbacks,
 * never to these handlers.  Returns 0, -ENOMEM, BM_EBADNAME.
 */
BM_EXPORT int bm_agent_on_message(bm_agent_t *a, const char *type, bm_agent_msg_fn fn, void *arg);
BM_EXPORT int bm_agent_on_request(bm_agent_t *a, const char *type, bm_agent_msg_fn fn, void *arg);

/*
 * Follows every broadcast topic under prefix (a thought path such as
 * "tot/7"; "" = everything) and calls fn for each (the first handler whose
 * prefix matches).  The latest message of each existing topic comes first
 * (from beastd's cache, b->replay).  Returns 0, BM_EBADNAME, -ENOSPC, or
 * the error opening the subscriber.
 */
BM_EXPORT int bm_agent_subscribe(bm_agent_t *a, const char *prefix, bm_agent_bcast_fn fn,
                                 void *arg);
/*
 * How a subscription reads a local publisher that offers a shared-memory
 * log (bm_agent_opts_t.shm_log): AUTO (bm_agent_subscribe's way) reads it
 * untethered — the publisher never waits, a reader that falls behind by
 * more than the log skips ahead and its loss is counted in gaps; TETHERED
 * holds the publisher instead (its bm_agent_publish returns BM_EFULL until
 * this agent has read), never a loss on the way; OFF stays on the proxy.
 * A publisher is found when its first message comes through the proxy and
 * switched to its log without a duplicate or an uncounted loss; if it dies
 * or its log fails a check (BM_ECORRUPT) its messages come through the
 * proxy again, the same way.  The last-value cache and remote publishers
 * always come through the proxy.  A remote agent (opts.sub_endpoint)
 * stays on the proxy.
 */
enum bm_agent_shm {
	BM_AGENT_SHM_AUTO = 0,     /* untethered log when offered, else the proxy */
	BM_AGENT_SHM_TETHERED = 1, /* tethered log when offered, else the proxy */
	BM_AGENT_SHM_OFF = 2,      /* the proxy only */
};

/* bm_agent_subscribe with the shm mode (enum bm_agent_shm) of this
 * subscription.  A broadcast under prefixes of several modes goes to the
 * first matching handler once, as ever.  Returns as bm_agent_subscribe,
 * or -EINVAL for an unknown mode. */
BM_EXPORT int bm_agent_subscribe_shm(bm_agent_t *a, const char *prefix, int shm,
                                     bm_agent_bcast_fn fn, void *arg);

/* Steps the loop until every subscription is in force at the proxy (0) or
 * timeout_ms passes (-ETIMEDOUT). */
BM_EXPORT int bm_agent_wait_subscribed(bm_agent_t *a, int timeout_ms);

/*
 * Accepts blobs: listens on the bulk channel $DIR/shm/<name>.sock; each
 * blob received whole (and its checksum verified) goes to fn with the
 * sender's name.  Returns 0, BM_ENAMETAKEN, or the listener's error.
 */
BM_EXPORT int bm_agent_on_blob(bm_agent_t *a, bm_agent_blob_fn fn, void *arg);

/* ---- sending ---- */

/* Options for one send; zero = defaults. */
typedef struct bm_agent_send_opts {
	const char *type;       /* NULL = "msg" */
	uint8_t priority;       /* higher goes first */
	uint32_t ttl_ms;        /* 0 = none */
	uint32_t max_attempts;  /* 0 = 20 */
	bool expire;            /* at the TTL, withdraw it rather than keep a dead letter */
	const char *traceparent; /* W3C trace context carried with it; NULL = none */
	const char *tracestate;  /* with a traceparent; NULL = none */
} bm_agent_send_opts_t;

/*
 * Reliable send to an agent name or "@capability": stored in the outbox
 * at the next turn of the loop (or bm_agent_flush), sent, retried until
 * ACKed.  ret_id may be NULL.  Returns 0, BM_EFULL (back-pressure),
 * BM_ETOOBIG, BM_EBADNAME, BM_EREADONLY, -ENOMEM.
 */
BM_EXPORT int bm_agent_send(bm_agent_t *a, const char *to, const bm_agent_send_opts_t *o,
                            const void *body, size_t len, bm_id_t *ret_id);

/* One message of an atomic batch. */
typedef struct bm_agent_item {
	const char *to;      /* agent name or "@capability" */
	const char *type;    /* NULL = "msg" */
	const void *body;    /* body bytes */
	size_t len;          /* their count */
} bm_agent_item_t;
/* n messages stored as one journal record: after any crash all are sent
 * or none.  ret_ids (n entries) may be NULL.  Errors as bm_agent_send. */
BM_EXPORT int bm_agent_send_batch(bm_agent_t *a, const bm_agent_item_t *items, size_t n,
                                  bm_id_t *ret_ids);

/*
 * Reliable request: sent like bm_agent_send; fn is called once with the
 * reply, or with -ETIMEDOUT after timeout_ms (the request is then
 * withdrawn from the outbox), or with the reason it died.  Returns 0 or a
 * send error (fn is then never called).  The timeout travels as the
 * request's TTL, so the replier's bm_agent_reply() retries the reply only
 * while the requester still waits, then withdraws it (stats:
 * replies_expired) instead of keeping a dead letter nobody wants.
 */
BM_EXPORT int bm_agent_request(bm_agent_t *a, const char *to, const char *type, const void *body,
                               size_t len, int timeout_ms, bm_agent_reply_fn fn, void *arg);
/* Answers a delivered request (to its sender, correlated), reliably. */
BM_EXPORT int bm_agent_reply(bm_agent_t *a, const bm_msg_t *req, const char *type,
                             const void *body, size_t len);
/* Requests waiting for their reply. */
BM_EXPORT size_t bm_agent_requests_pending(const bm_agent_t *a);

/* Broadcast on a topic (thought path "tot/<tree>/<branch>/…").  Returns 0,
 * BM_EBADNAME, BM_EFULL (the proxy is not keeping up), or the error
 * opening the publisher (BM_ENOBROKER). */
BM_EXPORT int bm_agent_publish(bm_agent_t *a, const char *topic, const void *body, size_t len);

/*
 * Sends a blob to agent `to` over the bulk channel (connected on first
 * use, kept open), checksummed, and waits up to timeout_ms until `to`
 * confirms it arrived intact.  Before it, a reliable "blob.announce"
 * message tells `to` over the mesh what comes: JSON {"name", "size",
 * "content", "crc", "channel"}.  Returns 0, BM_ECORRUPT (the receiver
 * found a mismatch), BM_EPEER (the receiver went away: the channel is
 * dropped, call again to reconnect), -ETIMEDOUT, -ECONNREFUSED/-ENOENT
 * (nobody listens as `to`).
 */
BM_EXPORT int bm_agent_send_blob(bm_agent_t *a, const char *to, const char *name,
                                 const void *data, size_t len, uint32_t content, int timeout_ms);
/* Zero copy: sends a blob filled by the caller (bm_blob_new, then
 * bm_blob_wdata) as it is — sealed and handed over as a memfd.  Takes
 * *blob_p (NULLs it) once handed over.  Returns as bm_agent_send_blob. */
BM_EXPORT int bm_agent_send_blob_take(bm_agent_t *a, const char *to, const char *name,
                                      bm_blob_t **blob_p, uint32_t content, int timeout_ms);
/* The same for a point cloud, sent as a binary PLY. */
BM_EXPORT int bm_agent_send_cloud(bm_agent_t *a, const char *to, const char *name,
                                  const bm_cloud_t *cloud, int timeout_ms);

/* ---- the loop ---- */

/*
 * One turn: stores and sends what is ready, waits up to timeout_ms (0 =
 * poll, -1 = until something happens) for the mesh, broadcasts, blobs and
 * timers, handles everything that is ready, then stores and ACKs.  Returns
 * how many things it handled (>= 0), -EINTR (a signal), BM_EDENIED (beastd
 * restarted and the name is held by another agent), -ESHUTDOWN, or a
 * journal error.
 */
BM_EXPORT int bm_agent_step(bm_agent_t *a, int timeout_ms);
/* Steps until bm_agent_stop() or *opts.stop.  Returns 0 when stopped, or
 * the error that ended it. */
BM_EXPORT int bm_agent_run(bm_agent_t *a);
/* Makes bm_agent_run return after the current turn.  Async-signal-safe. */
BM_EXPORT void bm_agent_stop(bm_agent_t *a);
BM_EXPORT bool bm_agent_stopped(const bm_agent_t *a);
/* Steps until nothing is pending in the outbox (0) or timeout_ms passes
 * (-ETIMEDOUT). */
BM_EXPORT int bm_agent_drain(bm_agent_t *a, int timeout_ms);
/* Stores what was sent since the last turn now (one journal commit) and
 * sends it. */
BM_EXPORT int bm_agent_flush(bm_agent_t *a);

/*
 * Embedding: fills up to max poll items (the mesh socket, the subscriber
 * sockets, the blob listener and channels, the direct routes, the mesh
 * connection monitor, the shared-memory logs followed and the agent's own
 * log's socket),
 * returns how many.  Poll them
 * (ZMQ_POLLIN) for at most bm_agent_timeout() ms (-1 = no timer), then
 * call bm_agent_step(a, 0).  Call both again before every poll: the set
 * changes as channels come and go.
 */
BM_EXPORT int bm_agent_pollitems(bm_agent_t *a, zmq_pollitem_t *items, int max);
BM_EXPORT int bm_agent_timeout(bm_agent_t *a);
/* mesh, sub, listener, 32 channels, monitor; the direct routes' one fd;
 * two more subscribers (one per shm mode), the shared-memory logs they
 * read (BM_SUB_FDS_MAX each) and this agent's own log's socket */
#define BM_AGENT_POLLITEMS_MAX (36 + 1 + 2 + 3 * BM_SUB_FDS_MAX + 1)

/*
 * Event loops that wait on plain file descriptors (Python's asyncio,
 * libuv, epoll): fills up to max fds that turn readable when the agent
 * may have work (for its zmq sockets, their ZMQ_FD — edge-triggered: after
 * a wake-up, and after any send, call bm_agent_step(a, 0) while
 * bm_agent_ready() says 1).  The set changes as channels come and go:
 * fetch it again after each step.  Returns the count or -errno.
 */
BM_EXPORT int bm_agent_fds(bm_agent_t *a, int *fds, int max);
/* 1 when a step would find work now (something readable, or a timer that
 * is due), 0 when not, or -errno. */
BM_EXPORT int bm_agent_ready(bm_agent_t *a);

/*
 * What became of a message this agent sent (its id from bm_agent_send):
 * 1 still pending (stored, awaiting its ACK), 0 retired (ACKed — or
 * withdrawn at its TTL, or purged), 2 dead, with *ret_dead_code its reason
 * (bm_outbox_reason()).  -EINVAL on bad arguments.
 */
BM_EXPORT int bm_agent_status(bm_agent_t *a, const bm_id_t *id, int *ret_dead_code);
/*
 * The last refusal's text for a message this agent sent and still holds
 * (pending or dead): the reason of the last NACK it got, written by the
 * side that refused it — the receiver, its beastd, or, across hosts, the
 * remote bridge ("on host h2: no such agent 'mapper'").  Copies it into
 * buf (NUL-terminated, cut to size) and returns its length: 0 when there
 * was no refusal, -ENOENT once the message is retired, -EINVAL.
 */
BM_EXPORT int bm_agent_refusal(bm_agent_t *a, const bm_id_t *id, char *buf, size_t size);

/* For bindings without a C compiler (cffi's ABI mode): a delivered
 * message's or broadcast's body, and the layout of every struct a binding
 * declares ("type:size:field@offset,...;...") so that it can refuse a
 * library that does not match it. */
BM_EXPORT const void *bm_agent_msg_body(bm_msg_t *m, size_t *ret_len);
BM_EXPORT const void *bm_agent_bcast_body(bm_bcast_t *b, size_t *ret_len);
BM_EXPORT const char *bm_agent_abi(void);

/* ---- statistics ---- */
#define BM_AGENT_HIST 128 /* latency buckets: 4 per octave of microseconds */

typedef struct bm_agent_stats {
	uint64_t sent;            /* messages stored by this agent (requests and replies too) */
	uint64_t acked;           /* ACKs received for them */
	uint64_t retried;         /* resends */
	uint64_t dead;            /* dead letters held */
	uint64_t pending;         /* stored, not yet ACKed */
	uint64_t received;        /* messages handled */
	uint64_t duplicates;      /* redeliveries ACKed again, not handled again */
	uint64_t unhandled;       /* messages no handler took (ACKed) */
	uint64_t requests;        /* requests made */
	uint64_t replies;         /* replies matched to a request */
	uint64_t timeouts;        /* requests that timed out */
	uint64_t replies_expired; /* replies withdrawn: their requester's timeout passed */
	uint64_t published;       /* broadcasts sent */
	uint64_t bcasts;          /* broadcasts received */
	uint64_t gaps;            /* broadcasts known lost on the way */
	uint64_t blobs_sent;      /* blobs confirmed by their receiver */
	uint64_t blob_bytes_sent; /* their bytes */
	uint64_t blobs_received;  /* blobs received whole and verified */
	uint64_t blob_bytes_received; /* their bytes */
	uint64_t blob_errors;     /* blobs refused (checksum, size, peer died) */
	uint64_t ack_hist[BM_AGENT_HIST];  /* send -> ACK latency histogram */
	uint64_t req_hist[BM_AGENT_HIST];  /* request -> reply latency histogram */
	uint64_t bcasts_shm;      /* of bcasts, read from a publisher's shared-memory log */
	uint64_t shm_fallbacks;   /* logs given up: publisher gone, log corrupt */
	uint64_t shm_corrupt;     /* of which the log failed a check (BM_ECORRUPT) */
} bm_agent_stats_t;
BM_EXPORT void bm_agent_stats(const bm_agent_t *a, bm_agent_stats_t *ret);
/* Bucket of a latency in microseconds, and the microseconds a bucket
 * stands for (its upper bound). */
BM_EXPORT int bm_agent_hist_bucket(uint64_t us);
BM_EXPORT uint64_t bm_agent_hist_us(int bucket);
/* The p-quantile (0..1) of a histogram in microseconds; 0 when empty. */
BM_EXPORT uint64_t bm_agent_hist_quantile(const uint64_t *hist, double p);

#ifdef __cplusplus
}
#endif
#endif

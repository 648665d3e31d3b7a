/*
 * bm_proxy.h - broadcast for thought branches: topic (thought path)
 * helpers, the XSUB -> XPUB proxy that runs inside beastd, and the
 * publisher and subscriber objects agents use.
 *
 * A broadcast is one frame, topic + header + body (a body over 64 KiB
 * follows in a second frame of its own, uncopied).  The topic is a
 * path of segments each followed by '/', e.g. "tot/7/2/" (tree 7, branch
 * 2); a subscription to a prefix such as "tot/7/2/" follows that subtree
 * and, because every topic ends with '/', never matches "tot/7/23/".
 * docs/protocol.md ("Broadcast") and proxy/wire.c specify the frames byte
 * by byte.
 *
 * Ownership follows CZMQ: bm_x_open() returns an owned object,
 * bm_x_destroy(&x) frees it and NULLs the pointer.  Publisher and
 * subscriber objects are not thread safe: use each from one thread.  The
 * proxy object is steered from the thread that opened it; the proxy itself
 * runs on a thread of its own.
 */
#ifndef BM_PROXY_H
#define BM_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "bm_common.h"
#include "bm_mesh.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BM_BCAST_VERSION 2
#define BM_TOPIC_MAX 255       /* topic bytes, trailing '/' included */
#define BM_TOPIC_SEG_MAX 64    /* bytes per segment */
#define BM_TOPIC_DEPTH_MAX 16  /* segments per topic */
#define BM_BCAST_BODY_MAX_DEFAULT (16u << 20)

/* ---- topics (thought paths) ---- */

/*
 * Checks a wire topic: 1..BM_TOPIC_DEPTH_MAX segments, each 1..
 * BM_TOPIC_SEG_MAX bytes of printable ASCII other than '/' (0x21..0x7e),
 * each followed by '/'; at most BM_TOPIC_MAX bytes.  With `prefix`, the
 * empty string (everything) is valid too.  Returns 0 or BM_EBADNAME.
 */
BM_EXPORT int bm_topic_check(const char *topic, size_t len, bool prefix);

/*
 * Writes `in` as a wire topic into ret (ret_size bytes, NUL-terminated):
 * a missing trailing '/' is added ("tot/7/2" -> "tot/7/2/").  With `prefix`,
 * "" stays "" (everything).  Returns the length, BM_EBADNAME (empty or
 * oversized segment, too deep, bad byte) or -ENOSPC.
 */
BM_EXPORT int bm_topic_normalize(const char *in, bool prefix, char *ret, size_t ret_size);

/* Joins n segments into "s1/s2/.../sn/".  Returns the length, BM_EBADNAME,
 * -ENOSPC. */
BM_EXPORT int bm_topic_build(char *ret, size_t ret_size, const char *const *segs, size_t n);

/* Thought path "tot/<tree>/<b1>/<b2>/.../" for a branch path of `depth`
 * numbers (depth 0: the whole tree).  Returns the length, BM_EBADNAME,
 * -ENOSPC. */
BM_EXPORT int bm_topic_tot(char *ret, size_t ret_size, const char *tree, const uint32_t *path,
                           size_t depth);

/*
 * Splits a valid topic into segments: ret_segs[i] points into `topic`,
 * ret_lens[i] is its length (no '/').  Returns the segment count,
 * BM_EBADNAME, or -ENOSPC when more than max.
 */
BM_EXPORT int bm_topic_split(const char *topic, size_t len, const char **ret_segs,
                             size_t *ret_lens, size_t max);

/* True when `prefix` (a valid prefix) selects `topic`: a byte prefix on
 * whole segments. */
BM_EXPORT bool bm_topic_matches(const char *prefix, const char *topic);

/* ---- the proxy (inside beastd) ---- */
typedef struct bm_proxy bm_proxy_t;

typedef struct bm_proxy_opts {
	const char *dir;         /* runtime dir; NULL = default (must exist) */
	const char *pub_tcp;     /* extra publisher endpoint (loopback unless curve) */
	const char *sub_tcp;     /* extra subscriber endpoint (loopback unless curve) */
	bool no_lvc;             /* turn the last-value cache off */
	size_t lvc_max_bytes;    /* LVC memory bound; 0 = 64 MiB */
	size_t lvc_max_topics;   /* LVC topic bound; 0 = 100000 */
	int hwm;                 /* per-peer queue bound (messages); 0 = 100000 */
	size_t max_body;         /* larger bodies are dropped as malformed; 0 = 16 MiB */
	bool curve;              /* tcp endpoints are CURVE servers (bm_curve_server) */
	const char *server_key;  /* curve: secret key file; NULL = KEYDIR/server.key */
	const char *allow_dir;   /* curve: allowed .pub files; NULL = KEYDIR/allowed */
} bm_proxy_opts_t;

/*
 * Binds ipc://DIR/pub.sock (publishers, XSUB), ipc://DIR/sub.sock
 * (subscribers, XPUB), ipc://DIR/tap.sock (the capture, XPUB) and the tcp
 * extras, then starts the proxy thread.  Call it as the holder of the
 * directory's beastd lock (after bm_broker_open): stale socket files are
 * removed.  Returns 0, -EADDRNOTAVAIL (non-loopback tcp), -ENAMETOOLONG,
 * BM_EUNSAFEDIR, -ENOMEM or a bind error.
 */
BM_EXPORT int bm_proxy_open(const bm_proxy_opts_t *opts, bm_proxy_t **ret_proxy);
/* Stops the thread, closes the sockets, removes the socket files, frees. */
BM_EXPORT void bm_proxy_destroy(bm_proxy_t **self_p);

/* Pause: stop reading from publishers (their queues fill, then their own
 * high-water marks apply).  Resume: go on.  Return 0 or -ETIMEDOUT. */
BM_EXPORT int bm_proxy_pause(bm_proxy_t *p);
BM_EXPORT int bm_proxy_resume(bm_proxy_t *p);

/*
 * Copies the proxy's counters as key/value pairs (keys start "bcast_"):
 * in, out, malformed, paused, subscribes, lvc_topics, lvc_bytes,
 * lvc_evicted, lvc_replayed, syncs, tapped, sub_reports, sub_received,
 * sub_gaps.  Writes at most max; returns how many, or -ETIMEDOUT.
 */
BM_EXPORT int bm_proxy_stats(bm_proxy_t *p, bm_stat_t *ret, size_t max);
#define BM_PROXY_STATS_MAX 16

/* A topic the last-value cache holds, with its traffic. */
typedef struct bm_proxy_topic {
	char topic[BM_TOPIC_MAX + 1];  /* the topic (thought path) */
	uint64_t msgs;                 /* broadcasts on it since it was cached */
	uint64_t bytes;                /* their bytes (topic, header and body) */
} bm_proxy_topic_t;
#define BM_PROXY_TOPICS_MAX 32

/*
 * The busiest topics in the last-value cache, most broadcasts first: at
 * most min(max, BM_PROXY_TOPICS_MAX).  Counts start when a topic enters the
 * cache and go with it when it is evicted; with --no-lvc there are none.
 * Scans the cache on the proxy's thread (call it about once a second, not
 * per message).  Call from the owner thread.  Returns how many, or
 * -ETIMEDOUT.
 */
BM_EXPORT int bm_proxy_topics(bm_proxy_t *p, bm_proxy_topic_t *ret, size_t max);

/* ---- a received broadcast ---- */
enum bm_bcast_kind {
	BM_BCAST_MSG = 1,   /* a broadcast (live, or replayed from the LVC) */
	BM_BCAST_SYNC = 2,  /* the proxy has applied subscription `topic` */
};

typedef struct bm_bcast {
	int kind;                          /* enum bm_bcast_kind */
	char topic[BM_TOPIC_MAX + 1];      /* MSG: topic; SYNC: the prefix */
	char from[BM_NAME_MAX + 1];        /* publisher name */
	uint64_t session;                  /* publisher instance (random) */
	uint64_t seq;                      /* per-publisher sequence, from 1 */
	uint64_t tseq;                     /* per (publisher, topic) sequence, from 1 */
	int64_t ts_ms;                     /* wall ms when published */
	bool replay;                       /* came from the last-value cache */
	uint64_t gap;                      /* messages missed just before this one */
	zmq_msg_t body;                    /* the frame holding the body (zero copy) */
	size_t body_off;                   /* where in it the body starts */
} bm_bcast_t;

static inline const void *
bm_bcast_data(bm_bcast_t *m)
{
	return (const uint8_t *)zmq_msg_data(&m->body) + m->body_off;
}
static inline size_t
bm_bcast_size(bm_bcast_t *m)
{
	return zmq_msg_size(&m->body) - m->body_off;
}
/* Frees the body.  Safe on a zeroed struct. */
BM_EXPORT void bm_bcast_clear(bm_bcast_t *m);

/* ---- publisher ---- */
typedef struct bm_pub bm_pub_t;

typedef struct bm_pub_opts {
	const char *dir;          /* runtime dir; NULL = $BEAST_DIR or default */
	const char *endpoint;     /* overrides dir: "ipc://..." or "tcp://..." */
	const char *name;         /* publisher name; NULL = "pid-<pid>" */
	int connect_timeout_ms;   /* wait for the proxy in open; 0 = 3000 */
	int hwm;                  /* send queue bound; 0 = 100000 */
	int linger_ms;            /* flush time on destroy; 0 = 2000, -1 = none */
	void *zmq_ctx;            /* share a zmq context; NULL = own one */
	const char *key_file;     /* CURVE over tcp: own key pair (NAME.key) */
	const char *server_key_file; /* CURVE: beastd's public key (.pub) */
	size_t shm_log;           /* also offer a shared-memory log of this many
	                           * bytes (>= 64 KiB) to local subscribers at
	                           * DIR/shm/pub-NAME.sock (bm_sub_opts_t.shm_from);
	                           * bodies are then limited to a quarter of it.
	                           * 0 = none (the proxy only) */
} bm_pub_opts_t;

/*
 * Connects to the proxy and waits until it is attached (it subscribes to
 * everything on connect), so the first send is not lost to a slow joiner.
 * Returns 0, BM_ENOBROKER (no proxy answered in time), BM_EBADNAME,
 * BM_EUNSAFEDIR, -ENAMETOOLONG, -ENOMEM.
 */
BM_EXPORT int bm_pub_open(const bm_pub_opts_t *opts, bm_pub_t **ret_pub);
/* Flushes for up to linger_ms, closes, frees.  NULL-safe. */
BM_EXPORT void bm_pub_destroy(bm_pub_t **self_p);

/*
 * Publishes one message; never blocks.  topic: a topic with or without its
 * trailing '/'.  The body is copied (bm_pub_send_frame takes a frame and
 * sends a body over 64 KiB without copying it; close the frame after the
 * call either way).  Returns 0, BM_EBADNAME (bad topic), BM_EFULL (the proxy is not
 * keeping up: poll bm_pub_socket() for ZMQ_POLLOUT and retry — nothing was
 * sent and no sequence number was used), -EINVAL.
 */
BM_EXPORT int bm_pub_send(bm_pub_t *p, const char *topic, const void *body, size_t len);
BM_EXPORT int bm_pub_send_frame(bm_pub_t *p, const char *topic, zmq_msg_t *body);
/* The socket, for zmq_poll with ZMQ_POLLOUT. */
BM_EXPORT void *bm_pub_socket(bm_pub_t *p);
/*
 * With shm_log: accepts local subscribers attaching to the log and
 * releases dead ones (never blocks).  Sends do it too (every 5 ms at
 * most); a publisher that sends rarely calls it when bm_pub_shm_fd() is
 * readable.  Returns the subscribers attached, 0 without a log, or -errno.
 * With a log, a send also returns BM_EFULL while a tethered local
 * subscriber holds the log (nothing was sent, to the proxy either), and
 * BM_ETOOBIG for a body over a quarter of the log.
 */
BM_EXPORT int bm_pub_service(bm_pub_t *p);
/* The log's listening socket (POLLIN: a subscriber attaches), or -ENOENT. */
BM_EXPORT int bm_pub_shm_fd(const bm_pub_t *p);
BM_EXPORT const char *bm_pub_name(const bm_pub_t *p);
/* Messages published so far (the last per-publisher sequence number). */
BM_EXPORT uint64_t bm_pub_count(const bm_pub_t *p);

/* ---- subscriber ---- */
typedef struct bm_sub bm_sub_t;

typedef struct bm_sub_opts {
	const char *dir;          /* runtime dir; NULL = $BEAST_DIR or default */
	const char *endpoint;     /* overrides dir */
	const char *name;         /* shown in proxy reports; NULL = "pid-<pid>" */
	bool no_lvc;              /* do not ask for the last-value cache */
	bool tap;                 /* read the proxy's capture (tap.sock): live
	                           * traffic only, no LVC, no sync, no reports */
	int hwm;                  /* receive queue bound; 0 = 100000 */
	size_t max_body;          /* larger bodies are dropped; 0 = 16 MiB */
	void *zmq_ctx;            /* share a zmq context; NULL = own one */
	const char *key_file;     /* CURVE over tcp: own key pair (NAME.key) */
	const char *server_key_file; /* CURVE: beastd's public key (.pub) */
	const char *shm_from;     /* read only publisher NAME, from its shared-memory
	                           * log (bm_pub_opts_t.shm_log), instead of the
	                           * proxy: local, no last-value cache, no reports;
	                           * messages as from the proxy (topic, from, seq,
	                           * tseq, gap).  NULL = the proxy */
	bool shm_tethered;        /* with shm_from or shm_auto: hold the publisher
	                           * (its sends return BM_EFULL) rather than lose
	                           * messages */
	bool shm_auto;            /* a proxy subscriber that also reads the logs of
	                           * local publishers it hears from (those opened
	                           * with shm_log, found as DIR/shm/pub-NAME.sock),
	                           * switching each from the proxy to its log and
	                           * back (publisher died, log corrupt) without a
	                           * duplicate or an uncounted loss; the proxy still
	                           * brings the last-value cache and everyone else.
	                           * Not with tap or endpoint */
} bm_sub_opts_t;

/* Connects to the proxy (no waiting: see BM_BCAST_SYNC).  Returns 0,
 * BM_EUNSAFEDIR, -ENAMETOOLONG, -ENOMEM, -EINVAL.  With shm_from it
 * attaches to that publisher's log instead, waiting up to 3 s for the
 * publisher to answer (it does when it sends or calls bm_pub_service):
 * -ENOENT/-ECONNREFUSED (no such log), -ETIMEDOUT, BM_EFULL (no free
 * slot), BM_ECORRUPT. */
BM_EXPORT int bm_sub_open(const bm_sub_opts_t *opts, bm_sub_t **ret_sub);
/* Sends a final report to the proxy, closes, frees.  NULL-safe. */
BM_EXPORT void bm_sub_destroy(bm_sub_t **self_p);

/*
 * Follows the subtree under prefix ("" = everything; a missing trailing
 * '/' is added).  Unless no_lvc, the latest message of every cached topic
 * under it arrives first (replay = true); then a BM_BCAST_SYNC event whose
 * topic is the prefix says the subscription is in force at the proxy.
 * Returns 0, BM_EBADNAME, -ENOSPC (more than 64 prefixes).
 */
BM_EXPORT int bm_sub_subscribe(bm_sub_t *s, const char *prefix);
BM_EXPORT int bm_sub_unsubscribe(bm_sub_t *s, const char *prefix);

/*
 * Waits up to timeout_ms (0 = poll, -1 = for ever) for the next broadcast
 * or sync.  Returns 0 with *ret filled (bm_bcast_clear it), -ETIMEDOUT,
 * -EINTR, -ESHUTDOWN.  Malformed frames are counted and skipped.
 * Duplicates from an LVC replay are skipped.  Each message's `gap` says
 * how many messages of its (publisher, topic) stream were lost just before
 * it (the queue overflowed somewhere on the way).
 */
BM_EXPORT int bm_sub_recv(bm_sub_t *s, int timeout_ms, bm_bcast_t *ret);
/* The socket, for zmq_poll with ZMQ_POLLIN; then bm_sub_recv(s, 0, …).
 * NULL for a shm_from subscriber: it has bm_sub_arm and bm_sub_fd. */
BM_EXPORT void *bm_sub_socket(bm_sub_t *s);
/* shm_from subscribers, in a poll loop: bm_sub_arm() returns 1 when a
 * recv would find something now, 0 when the caller should poll
 * bm_sub_fd() for POLLIN first; -EINVAL for a proxy subscriber without
 * shm_auto (with it: 1 when a log has a record or a switch is due).  A
 * shm_from subscriber's recv returns -ESHUTDOWN once the publisher is
 * gone and its last message read, BM_ECORRUPT when the log failed a
 * check. */
BM_EXPORT int bm_sub_arm(bm_sub_t *s);
BM_EXPORT int bm_sub_fd(const bm_sub_t *s);
/*
 * shm_auto (and shm_from) subscribers, in a poll loop: fills up to max
 * fds of the logs being read, to poll for POLLIN beside bm_sub_socket();
 * returns how many (the set changes as publishers come and go: fetch it
 * before every poll).  bm_sub_arm() returns 1 when a recv would find a
 * log record now.  bm_sub_timeout() is the ms until a switch from the
 * proxy to a log must go ahead without the proxy (-1 = none): poll no
 * longer than that.
 */
BM_EXPORT int bm_sub_fds(const bm_sub_t *s, int *fds, int max);
BM_EXPORT int bm_sub_timeout(const bm_sub_t *s);
#define BM_SUB_FDS_MAX 16

typedef struct bm_sub_stats {
	uint64_t received;   /* broadcasts returned (live + replayed) */
	uint64_t replayed;   /* of which from the last-value cache */
	uint64_t gaps;       /* messages known lost (sequence holes) */
	uint64_t dups;       /* replayed messages already seen, skipped */
	uint64_t malformed;  /* frames that did not decode, skipped */
	uint64_t syncs;      /* subscriptions confirmed */
	uint64_t shm_received;  /* shm_auto: of received, read from a log */
	uint64_t shm_attached;  /* shm_auto: logs attached to */
	uint64_t shm_fallbacks; /* shm_auto: logs given up (publisher gone, corrupt) */
	uint64_t shm_corrupt;   /* shm_auto: of which BM_ECORRUPT */
	uint64_t shm_refused;   /* shm_auto: attaches refused (no slot, other session) */
	uint64_t shm_skipped;   /* shm_auto: proxy copies of log records dropped */
} bm_sub_stats_t;
BM_EXPORT void bm_sub_stats(const bm_sub_t *s, bm_sub_stats_t *ret);

#ifdef __cplusplus
}
#endif
#endif

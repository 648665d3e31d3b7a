/*
 * bridge_nats.h - the few libnats calls the bridge makes, wrapped so that
 * the pitfalls of Debian 12's libnats 3.4.1 and nats-server 2.9.10 are
 * handled in one place (agents/bridge_nats.c says which and how).
 *
 * Private to beast-bridge: not installed, not part of libbeastmesh.
 */
#ifndef BM_BRIDGE_NATS_H
#define BM_BRIDGE_NATS_H

#include <stdbool.h>
#include <stdint.h>

#include <nats/nats.h>

/* NATS durations (stream max age, duplicate window, ack wait, KV TTL) are
 * nanoseconds; ours are milliseconds. */
#define BM_BN_MS(ms) ((int64_t)(ms) * 1000000)

/*
 * Connects to url and keeps reconnecting for ever (every 100 ms, also when
 * the first attempt fails), so a leaf restart never ends the bridge.
 * 0 or -EIO; *ret_nc owned by the caller (natsConnection_Destroy).
 */
int bm_bn_connect(const char *url, const char *name, natsConnection **ret_nc);

/*
 * Makes or updates the file-backed stream `name` capturing `subject`,
 * keeping messages max_age_ms and de-duplicating Nats-Msg-Id over
 * dup_ms.  0 or -EIO with the server's text in why.
 */
int bm_bn_stream(jsCtx *js, const char *name, const char *subject, int64_t max_age_ms,
                 int64_t dup_ms, char *why, size_t whylen);

/*
 * Takes back every asynchronous publish still waiting for its PubAck (they
 * never time out in libnats 3.4.1).  Returns how many, 0, or -EIO; the
 * messages are the caller's (natsMsgList_Destroy).  A PubAck arriving
 * later for one of them is dropped by libnats.
 */
int bm_bn_take_pending(jsCtx *js, natsMsgList *ret_list);

/* Makes (or finds) the durable pull consumer on stream: explicit acks,
 * redelivery after ack_wait_ms, at most max_ack_pending un-acked. */
int bm_bn_consumer(jsCtx *js, const char *stream, const char *durable, int64_t ack_wait_ms,
                   int64_t max_ack_pending, char *why, size_t whylen);

/*
 * Pulls from a durable consumer with pull requests of our own (see the
 * Fetch pitfall in bridge_nats.c).  One thread uses a puller.
 */
typedef struct bm_bn_puller bm_bn_puller_t;
int bm_bn_puller_open(natsConnection *nc, const char *stream, const char *durable,
                      bm_bn_puller_t **ret_p);
void bm_bn_puller_destroy(bm_bn_puller_t **self_p);
/* The next message, waiting up to wait_ms: 1 and *ret_msg (owned by the
 * caller), 0 (none yet), -EIO (connection down: try again later). */
int bm_bn_puller_next(bm_bn_puller_t *p, int wait_ms, natsMsg **ret_msg);
/* Acknowledge, or refuse with a redelivery after delay_ms, a pulled
 * message (thread safe). */
void bm_bn_ack(natsConnection *nc, natsMsg *m);
void bm_bn_nak(natsConnection *nc, natsMsg *m, int64_t delay_ms);

/* A header's value, or NULL when absent. */
const char *bm_bn_header(natsMsg *m, const char *key);

#endif

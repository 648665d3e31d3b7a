/*
 * httpd.h - beastd's read-only HTTP endpoints (agents/httpd.c): Prometheus
 * /metrics, /healthz, /varz, /agents, /flows, /topics and the dashboard page, served
 * by libmicrohttpd on a thread of its own from snapshots the broker
 * publishes.  Private to beastd; docs/observability.md describes the
 * endpoints.
 */
#ifndef BM_HTTPD_H
#define BM_HTTPD_H

#include "bm_mesh.h"
#include "bm_proxy.h"

#define BM_HTTPD_AGENTS_LABELLED 64 /* agents with their own label in /metrics */
#define BM_HTTPD_CONN_MAX 64        /* simultaneous connections */
#define BM_HTTPD_TIMEOUT_S 5        /* idle connection timeout */
#define BM_HTTPD_STALE_MS 2000      /* snapshot older than this: unhealthy */

typedef struct bm_httpd bm_httpd_t;

/*
 * Checks an --http address: "127.0.0.1:PORT" (any 127.x), "localhost:PORT",
 * "[::1]:PORT" or "unix:PATH".  PORT 0 picks a free port.  Returns 0,
 * -EADDRNOTAVAIL for an address that is not loopback, -EINVAL when it does
 * not parse.
 */
int bm_httpd_check(const char *addr);

/*
 * Binds addr (checked as above) and starts serving on a new thread, with
 * every signal blocked in it.  dir is the runtime directory (its mesh.sock
 * is part of the health check).  Until the first bm_httpd_publish the
 * endpoints answer 503.  Returns 0 and an owned server, -EADDRNOTAVAIL,
 * -EINVAL, -EADDRINUSE, -errno.
 */
int bm_httpd_open(const char *addr, const char *dir, bm_httpd_t **ret_httpd);

/* The address bound, with the port picked: "127.0.0.1:PORT" or
 * "unix:PATH". */
const char *bm_httpd_address(const bm_httpd_t *h);

/*
 * Hands a fresh snapshot over (takes *snap_p and NULLs it), with the
 * proxy's busiest topics (copied; ntopics <= BM_PROXY_TOPICS_MAX); the one
 * it replaces is freed once the last request reading it is done.  Never
 * waits on a request: the lock only guards a pointer swap.  Thread safe.
 */
void bm_httpd_publish(bm_httpd_t *h, bm_broker_snap_t **snap_p, const bm_proxy_topic_t *topics,
                      size_t ntopics);

/* Stops the thread (waits for requests in hand), closes, frees; removes a
 * unix socket it made.  NULL-safe. */
void bm_httpd_destroy(bm_httpd_t **self_p);

#endif

/*
 * bm_bridge.h - beast-bridge, one host's mesh joined to other hosts'
 * through NATS JetStream (agents/bridge.c, docs/multihost.md).
 *
 * Private to the beast-bridge program: built only when libnats is found,
 * not part of libbeastmesh.  One bridge per host; one thread uses it.
 */
#ifndef BM_BRIDGE_H
#define BM_BRIDGE_H

#include <signal.h>
#include <stdint.h>

typedef struct bm_bridge bm_bridge_t;

typedef struct bm_bridge_opts {
	const char *dir;          /* beastd's runtime dir; NULL = the default */
	const char *host;         /* this host's name: [A-Za-z0-9_-]{1,32} */
	const char *nats_url;     /* the host's leaf nats-server */
	const char *name;         /* mesh agent name; NULL = "bridge" */
	int64_t ack_wait_ms;      /* JetStream redelivery of an unanswered message; 0 = 10000 */
	const char *dir_domain;   /* JetStream domain of the shared directory; NULL = "hub" */
	const char *topics;       /* global broadcast prefixes, "tot/,plan/"; NULL = none */
	int verbose;              /* 0 errors, 1 start/stop, 2 debug */
} bm_bridge_opts_t;

typedef struct bm_bridge_stats {
	uint64_t out;             /* local messages published to other hosts */
	uint64_t in;              /* other hosts' messages handed to local agents */
	uint64_t acked;           /* ... ACKed by them */
	uint64_t nacked;          /* ... NACKed by them */
	uint64_t expired;         /* ... past their TTL on arrival */
	uint64_t acks_back;       /* remote ACKs relayed to local senders */
	uint64_t nacks_back;      /* remote NACKs relayed to local senders */
	uint64_t publish_failed;  /* publishes NATS did not store */
	uint64_t forward_failed;  /* hand-overs beastd did not take */
	uint64_t refused;         /* messages the bridge cannot carry */
	uint64_t malformed;       /* stream messages without our headers */
	uint64_t holding;         /* pulled messages awaiting their answer */
	uint64_t topics_out;      /* local broadcasts sent to the other hosts */
	uint64_t topics_in;       /* other hosts' broadcasts put into the local proxy */
	uint64_t topics_dropped;  /* ... dropped: the proxy was not keeping up */
} bm_bridge_stats_t;

/*
 * Connects to the leaf (retrying while it starts), makes the host's stream
 * BM_<host> and the durable consumer, joins the mesh as `name` with the
 * capability "bridge".  0, -EINVAL, -EIO (NATS or JetStream unusable) or a
 * bm_client_open error.
 */
int bm_bridge_open(const bm_bridge_opts_t *opts, bm_bridge_t **ret_bridge);
/* Runs until *stop becomes non-zero. */
int bm_bridge_run(bm_bridge_t *b, volatile sig_atomic_t *stop);
void bm_bridge_stats(const bm_bridge_t *b, bm_bridge_stats_t *ret);
/* Waits up to 1 s for publishes in flight, closes everything; NULL-safe. */
void bm_bridge_destroy(bm_bridge_t **self_p);

#endif

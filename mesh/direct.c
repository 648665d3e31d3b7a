/*
 * direct.c - a client's direct routes: shared-memory rings to the local
 * agents it talks to most, beside (never instead of) the broker.
 *
 * Where it sits.  Under the outbox, inside the client's transport: a SEND
 * the client would hand to beastd goes into the ring of a live route to
 * its receiver instead, already in the form beastd would have delivered it
 * (a DELIVER frame with our name as the sender); the receiver's client
 * reads it as if it had come from beastd, and its ACK, NACK or reply comes
 * back over the reverse ring.  Outbox, de-dup and handlers see the same
 * events either way, so the semantics do not change: a message is retired
 * only on the receiver's ACK, resent when none comes, and de-duplicated by
 * id on arrival.
 *
 * Setup on demand.  The client counts the SENDs it makes to each named
 * peer; the S_ASK_AFTER-th (8) through the broker asks beastd for a route
 * (ROUTE "ask").  beastd, the authority for names and liveness, checks
 * both agents announced BM_FEAT_DIRECT and introduces them with a random
 * token: "accept" to the peer, "connect" to us.  We connect to the peer's
 * route listener (shm/route.c) and offer our ring with the token; the peer
 * accepts only a token beastd gave it for us, answers with its ring, and
 * the route is up.  Both sides report "up" (and the messages sent over it,
 * once a second while it changes) and "down" to beastd, which shows them
 * in LIST and STATS.
 *
 * Bounds.  At most S_ROUTES_MAX (16) routes per client, each of two rings
 * of S_RING_BYTES (1 MiB; BEAST_DIRECT_RING_KIB, 64..65536, sets it) —
 * pages are touched only as used — torn down
 * after S_IDLE_MS (10 s) without traffic.  One epoll fd holds the listener
 * and every route's socket, so the agent's loop polls one fd for all of
 * them.  The peer table (SEND counts) holds S_PEERS_MAX names.
 *
 * Order.  Messages to one peer keep their order as through beastd.  When
 * a route comes up, each side sends a fence (ROUTE "fence") through
 * beastd behind whatever it sent that way; beastd relays it to the peer
 * on the same pipe as those messages, so when the peer's client reads it,
 * they have all arrived, and it answers "fenced" over the ring.  Until
 * then our sends still go through beastd, behind the fence, up to a slack
 * (64); a fence with sends behind it is followed by another, with a
 * quarter of the slack, until one comes back clean; past the slack a send
 * gets BM_EFULL (back-pressure for a beastd round trip).  Then sends take
 * the ring.  A full ring is back-pressure too, not a
 * detour.  Bodies over 4 KiB always go through beastd, and may overtake or
 * be overtaken.
 *
 * Failure is a fallback, never a loss.  A ring that stays full for
 * S_STALL_MS (1 s: the peer is stalled) ends the route.  A dead peer (EOF) or a ring that fails a check
 * (BM_ECORRUPT: the peer scribbled on shared memory) ends the route; what
 * was written and not ACKed is resent by the outbox through beastd (a
 * synthetic "online" NOTICE for the peer makes it resend at once), and the
 * receiver's de-dup drops what it already had.  The pair is not asked for
 * again for S_RETRY_MS (30 s).  ACKs travel the path their message came
 * by: beastd counts what it delivered until it sees the ACK.
 *
 * Never trust shared memory: each record is copied out of the ring before
 * it is decoded, and must be a DELIVER, ACK, ACKS or NACK naming the
 * route's peer; anything else is BM_ECORRUPT.
 *
 * Threading: the client's thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "mesh_private.h"

#define S_ASK_AFTER 8            /* SENDs to one peer through beastd before asking */
#define S_ROUTES_MAX 16          /* routes per client */
#define S_RING_BYTES ((size_t)1 << 20) /* each direction; $BEAST_DIRECT_RING_KIB */
#define S_IDLE_MS 10000          /* a route without traffic this long is closed */
#define S_RETRY_MS 30000         /* after a refusal or a failed route */
#define S_INTRO_MS 5000          /* an introduction not completed within is void */
#define S_REPORT_MS 1000         /* route counts to beastd at most this often */
#define S_PEERS_MAX 1024         /* peers counted */
#define S_OFFERS_MAX 8            /* offers waiting for their introduction */
#define S_SEEN_MAX 8192          /* ids of messages that came over a route, unACKed */
#define S_SPIN_US 50             /* spin before sleeping while routes are busy */
#define S_HDR_ACKS (BM_ACKS_MAX * 16 + 1024) /* the largest ACKS header */
#define S_BUSY_NS 2000000        /* "busy": a record read within the last 2 ms */
#define S_FENCE_SLACK 64         /* sends through beastd behind a first fence */
#define S_STALL_MS 1000          /* a ring full this long: the peer is stalled, close */

enum { S_NONE, S_ASKED, S_CONNECTING, S_FENCING, S_UP, S_REFUSED };

/* FENCING: the rings are set up and read, ACKs use them, but our sends
 * wait (BM_EFULL) for the fence through beastd to come back over the
 * ring: then nothing we sent through beastd can arrive after what we put
 * in the ring. */

typedef struct {
	bm_route_t *route;             /* accepted, not answered */
	int64_t until_ms;              /* dropped unless introduced by then */
} s_offer_t;

typedef struct {
	char name[BM_NAME_MAX + 1];    /* the peer (the map's key) */
	int state;                     /* S_* */
	uint32_t sends;                /* SENDs through beastd, while S_NONE */
	int64_t until_ms;              /* ASKED/REFUSED: when that lapses */
	bm_route_t *route;             /* CONNECTING/UP */
	bool have_intro;               /* an "accept" token from beastd is valid */
	bm_id_t intro;                 /* that token */
	int64_t intro_until_ms;        /* its expiry */
	int64_t last_ms;               /* last traffic over the route */
	uint64_t sent;                 /* messages sent over the route */
	uint64_t reported;             /* sent as last reported */
	int64_t next_report_ms;        /* earliest next report */
	uint32_t fence;                /* the fence we sent (FENCING) */
	uint32_t fence_owed;           /* the peer's fence, come before our route was up */
	uint32_t fence_sent;           /* sent through beastd behind the current fence */
	uint32_t slack;                /* ... how many more may be (then BM_EFULL) */
	uint32_t slack_next;           /* the next fence's slack */
	int64_t full_ms;               /* since when the ring is full, 0 = not */
} s_peer_t;

/* The rings are set up: read them, ACK over them. */
static bool
s_open(const s_peer_t *p)
{
	return p->state == S_UP || p->state == S_FENCING;
}

struct bm_direct {
	char rundir[BM_PATH_MAX];      /* runtime dir */
	char name[BM_NAME_MAX + 1];    /* our agent name */
	size_t name_len;               /* its length */
	bm_direct_ops_t ops;           /* the client's side */
	bm_listener_t *listener;       /* routes to us */
	int epfd;                      /* listener + route sockets */
	bm_map_t *peers;               /* name -> s_peer_t (owned) */
	s_peer_t *live[S_ROUTES_MAX];  /* peers with a route (CONNECTING or UP) */
	int nlive;                     /* how many */
	bm_map_t *seen;                /* id -> 1: came over a route, not yet ACKed */
	bm_id_t seen_ids[S_SEEN_MAX];  /* the keys, a ring */
	size_t seen_next;              /* next slot to use */
	int spin_us;                   /* spin before sleeping */
	size_t ring_bytes;             /* capacity of the rings we create */
	int64_t idle_ms;               /* close a route without traffic this long */
	int64_t busy_ns;               /* bm_mono_ns of the last record read */
	int64_t events_ms;             /* bm_mono_coarse_ms of the last epoll_wait */
	bm_direct_stats_t st;          /* counters */
	char ack_peer[BM_NAME_MAX + 1];  /* held ACKs go to this peer */
	uint8_t ack_ids[BM_ACKS_MAX * sizeof(bm_id_t)]; /* their ids */
	uint16_t nacks;                /* how many */
	s_offer_t offers[S_OFFERS_MAX]; /* offers that came before their introduction */
	int noffers;                   /* how many */
};

/* ---- open / close ---- */

int
bm__direct_new(const char *rundir, const char *name, const bm_direct_ops_t *ops,
               bm_direct_t **ret_d)
{
	bm_direct_t *d;
	struct epoll_event ev = {.events = EPOLLIN};
	int rc;

	if (name == NULL || ops == NULL || ret_d == NULL) {
		return -EINVAL;
	}
	d = calloc(1, sizeof *d);
	if (d == NULL) {
		return -ENOMEM;
	}
	d->epfd = -1;
	d->ops = *ops;
	/* Tuning knobs (docs/shm.md); tests shorten the idle time. */
	d->spin_us = (int)bm_env_long("BEAST_DIRECT_SPIN_US", 0, 1000000, S_SPIN_US);
	d->idle_ms = bm_env_long("BEAST_DIRECT_IDLE_MS", 100, 3600000, S_IDLE_MS);
	d->ring_bytes = (size_t)bm_env_long("BEAST_DIRECT_RING_KIB", 64, 65536,
	                                    (long)(S_RING_BYTES >> 10)) << 10;
	snprintf(d->name, sizeof d->name, "%s", name);
	d->name_len = strlen(d->name);
	if ((rc = bm_rundir_resolve(rundir, false, d->rundir)) < 0) {
		goto fail;
	}
	d->peers = bm__map_new();
	d->seen = bm__map_new();
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->peers == NULL || d->seen == NULL || d->epfd < 0) {
		rc = d->epfd < 0 ? -errno : -ENOMEM;
		goto fail;
	}
	if ((rc = bm_route_listen(d->rundir, name, &d->listener)) < 0) {
		goto fail;
	}
	ev.data.ptr = NULL; /* NULL = the listener */
	if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, bm_listener_fd(d->listener), &ev) < 0) {
		rc = -errno;
		goto fail;
	}
	*ret_d = d;
	return 0;
fail:
	bm__direct_destroy(&d);
	return rc;
}

void
bm__direct_destroy(bm_direct_t **self_p)
{
	bm_direct_t *d;
	size_t cur = 0;
	s_peer_t *p;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	d = *self_p;
	if (d->peers != NULL) {
		while ((p = bm__map_next(d->peers, &cur)) != NULL) {
			bm_route_destroy(&p->route);
			free(p);
		}
		bm__map_destroy(&d->peers);
	}
	for (int i = 0; i < d->noffers; i++) {
		bm_route_destroy(&d->offers[i].route);
	}
	bm__map_destroy(&d->seen);
	bm_listener_destroy(&d->listener);
	if (d->epfd >= 0) {
		close(d->epfd);
	}
	free(d);
	*self_p = NULL;
}

int
bm__direct_fd(const bm_direct_t *d)
{
	return d ? d->epfd : -1;
}

void
bm__direct_stats(const bm_direct_t *d, bm_direct_stats_t *ret)
{
	memset(ret, 0, sizeof *ret);
	if (d != NULL) {
		*ret = d->st;
		ret->routes = (uint64_t)d->nlive;
	}
}

/* ---- the peer table ---- */

static s_peer_t *
s_peer(bm_direct_t *d, const char *name, bool create)
{
	size_t n = strlen(name);
	s_peer_t *p = bm__map_get(d->peers, name, n);

	if (p != NULL || !create || bm__map_size(d->peers) >= S_PEERS_MAX) {
		return p;
	}
	if ((p = calloc(1, sizeof *p)) == NULL) {
		return NULL;
	}
	snprintf(p->name, sizeof p->name, "%s", name);
	if (bm__map_put(d->peers, p->name, n, p) < 0) {
		free(p);
		return NULL;
	}
	return p;
}

static void
s_report(bm_direct_t *d, s_peer_t *p, const char *event)
{
	bm_env_t e = {.cmd = BM_CMD_ROUTE};

	snprintf(e.name, sizeof e.name, "%s", p->name);
	snprintf(e.type, sizeof e.type, "%s", event);
	e.attempt = (uint32_t)(p->sent > UINT32_MAX ? UINT32_MAX : p->sent);
	p->reported = p->sent;
	p->next_report_ms = bm_mono_coarse_ms() + S_REPORT_MS;
	(void)d->ops.to_broker(d->ops.arg, &e);
}

static void
s_live_add(bm_direct_t *d, s_peer_t *p)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};

	d->live[d->nlive++] = p;
	(void)epoll_ctl(d->epfd, EPOLL_CTL_ADD, bm_route_fd(p->route), &ev);
}

/*
 * Ends p's route (why: 0 idle or closed, else the error) and falls back to
 * the broker: what went into the ring unACKed is resent by the outbox.
 */
static void
s_close(bm_direct_t *d, s_peer_t *p, int why)
{
	bool was_up = s_open(p);

	for (int i = 0; i < d->nlive; i++) {
		if (d->live[i] == p) {
			d->live[i] = d->live[--d->nlive];
			break;
		}
	}
	if (p->route != NULL) {
		(void)epoll_ctl(d->epfd, EPOLL_CTL_DEL, bm_route_fd(p->route), NULL);
		bm_route_destroy(&p->route);
	}
	if (why == BM_ECORRUPT) {
		d->st.corrupt++;
	} else if (why != 0) {
		d->st.failed++;
	}
	p->sends = 0;
	p->full_ms = 0;
	p->state = why != 0 ? S_REFUSED : S_NONE;
	p->until_ms = bm_mono_coarse_ms() + S_RETRY_MS;
	if (was_up) {
		d->st.closed++;
		s_report(d, p, "down");
		/* Resend now, through beastd, what the route did not confirm. */
		d->ops.fallback(d->ops.arg, p->name);
	}
}

/* ---- sending ---- */

int
bm__direct_send(bm_direct_t *d, bm_env_t *send, const void *body, size_t len)
{
	uint8_t hdr[2048]; /* a DELIVER header (a larger one goes through beastd) */
	char to[BM_ADDR_MAX + 1];
	s_peer_t *p;
	int n, rc;
	int64_t now;

	if (d == NULL || send->name[0] == '@' || send->route[0] != '\0' ||
	    bm_address_remote(send->name)) {
		return 0;
	}
	p = s_peer(d, send->name, true);
	if (p == NULL) {
		return 0;
	}
	now = bm_mono_coarse_ms();
	if (!s_open(p)) {
		if ((p->state == S_ASKED || p->state == S_REFUSED) && now >= p->until_ms) {
			p->state = S_NONE;
			p->sends = 0;
		}
		if (p->state == S_NONE && ++p->sends >= S_ASK_AFTER && d->nlive < S_ROUTES_MAX) {
			bm_env_t ask = {.cmd = BM_CMD_ROUTE};

			snprintf(ask.name, sizeof ask.name, "%s", p->name);
			snprintf(ask.type, sizeof ask.type, "ask");
			if (d->ops.to_broker(d->ops.arg, &ask) == 0) {
				p->state = S_ASKED;
				p->until_ms = now + S_INTRO_MS;
				d->st.asked++;
			}
		}
		return 0;
	}
	if (p->state == S_FENCING) {
		if (now >= p->until_ms) {
			s_close(d, p, BM_EPEER);
			return 0;
		}
		/* Behind the fence, through beastd, while there is slack: a
		 * caller sending now and then never meets back-pressure. */
		if (p->slack > 0) {
			p->slack--;
			p->fence_sent++;
			return 0;
		}
		return BM_EFULL; /* a moment: a fence is one beastd round trip */
	}
	if (len > BM_INLINE_MAX) {
		return 0;
	}
	/* The frame beastd would have delivered: DELIVER, from = us (the
	 * caller's header, borrowed: no copy of its ~1.5 KB per message). */
	memcpy(to, send->name, sizeof to);
	memcpy(send->name, d->name, d->name_len + 1);
	send->cmd = BM_CMD_DELIVER;
	n = bm__env_encode(send, hdr, sizeof hdr);
	send->cmd = BM_CMD_SEND;
	memcpy(send->name, to, sizeof to);
	if (n < 0) {
		return 0;
	}
	rc = bm_route_send(p->route, hdr, (size_t)n, body, len);
	if (rc == BM_EFULL) {
		/* Back-pressure, as a full socket gives: the caller retries.
		 * A peer that reads nothing for S_STALL_MS loses the route. */
		d->st.full++;
		if (p->full_ms == 0) {
			p->full_ms = now;
		} else if (now - p->full_ms > S_STALL_MS) {
			s_close(d, p, BM_EFULL);
			return 0;
		}
		return BM_EFULL;
	}
	if (rc < 0) {
		s_close(d, p, rc);
		return 0;
	}
	p->full_ms = 0;
	p->sent++;
	p->last_ms = now;
	d->st.sent++;
	return 1;
}

/* Takes id out of the "came over a route" set: true when it was there. */
static bool
s_seen_take(bm_direct_t *d, const bm_id_t *id)
{
	if (bm__map_get(d->seen, id->b, sizeof id->b) == NULL) {
		return false;
	}
	bm__map_del(d->seen, id->b, sizeof id->b);
	return true;
}

static void
s_seen_put(bm_direct_t *d, const bm_id_t *id)
{
	bm_id_t *slot = &d->seen_ids[d->seen_next];

	/* The oldest entry makes room: its ACK, if it ever comes, goes
	 * through beastd, which relays it all the same. */
	if (!bm_id_is_zero(slot)) {
		bm__map_del(d->seen, slot->b, sizeof slot->b);
	}
	*slot = *id;
	d->seen_next = (d->seen_next + 1) % S_SEEN_MAX;
	(void)bm__map_put(d->seen, slot->b, sizeof slot->b, slot);
}

/* Sends one ACK/ACKS/NACK record (e: as the client would send it to
 * beastd) to p, with our name as the acker.  A record that does not fit
 * is dropped: the sender resends and the de-dup here answers again. */
static void
s_ack_out(bm_direct_t *d, s_peer_t *p, bm_env_t *e)
{
	uint8_t hdr[S_HDR_ACKS];
	int n, rc;

	snprintf(e->name, sizeof e->name, "%s", d->name);
	if ((n = bm__env_encode(e, hdr, sizeof hdr)) < 0) {
		return;
	}
	rc = bm_route_send(p->route, hdr, (size_t)n, NULL, 0);
	if (rc < 0 && rc != BM_EFULL) {
		s_close(d, p, rc);
		return;
	}
	p->last_ms = bm_mono_coarse_ms();
}

void
bm__direct_flush(bm_direct_t *d)
{
	bm_env_t e = {.cmd = BM_CMD_ACKS};
	s_peer_t *p;

	if (d == NULL || d->nacks == 0) {
		return;
	}
	p = s_peer(d, d->ack_peer, false);
	if (p != NULL && s_open(p)) {
		e.ids = d->ack_ids;
		e.nids = d->nacks;
		if (d->nacks == 1) {
			e.cmd = BM_CMD_ACK;
			memcpy(e.id.b, d->ack_ids, sizeof e.id.b);
		}
		s_ack_out(d, p, &e);
	}
	d->nacks = 0;
}

int
bm__direct_ack(bm_direct_t *d, const bm_env_t *ack, bool hold)
{
	bm_env_t e;
	s_peer_t *p;

	if (d == NULL || !s_seen_take(d, &ack->id)) {
		return 0;
	}
	p = s_peer(d, ack->name, false);
	if (p == NULL || !s_open(p)) {
		return 0;
	}
	if (d->nacks > 0 && (ack->cmd != BM_CMD_ACK || strcmp(d->ack_peer, p->name) != 0)) {
		bm__direct_flush(d);
	}
	if (ack->cmd != BM_CMD_ACK) {
		e = *ack;
		s_ack_out(d, p, &e);
		return 1;
	}
	/* ACKs of a burst travel together, as ACKS through beastd do. */
	if (d->nacks == 0) {
		snprintf(d->ack_peer, sizeof d->ack_peer, "%s", p->name);
	}
	memcpy(d->ack_ids + (size_t)d->nacks * sizeof(bm_id_t), ack->id.b, sizeof(bm_id_t));
	d->nacks++;
	if (!hold || d->nacks == BM_ACKS_MAX) {
		bm__direct_flush(d);
	}
	return 1;
}

bool
bm__direct_readable(bm_direct_t *d)
{
	for (int i = 0; d != NULL && i < d->nlive; i++) {
		if (s_open(d->live[i]) && bm_route_readable(d->live[i]->route)) {
			return true;
		}
	}
	return false;
}

/* ---- introductions ---- */

static void s_offers(bm_direct_t *d, bool expire);

/* Tells the peer over the ring that its fence arrived. */
static void
s_fenced(bm_direct_t *d, s_peer_t *p, uint32_t fence)
{
	bm_env_t f = {.cmd = BM_CMD_ROUTE, .attempt = fence};

	snprintf(f.type, sizeof f.type, "fenced");
	s_ack_out(d, p, &f);
}


int
bm__direct_on_route(bm_direct_t *d, const bm_env_t *e)
{
	s_peer_t *p;
	int64_t now = bm_mono_coarse_ms();
	int rc;

	if (d == NULL || (p = s_peer(d, e->name, true)) == NULL) {
		return 0;
	}
	if (strcmp(e->type, "refused") == 0) {
		if (p->state == S_ASKED) {
			p->state = S_REFUSED;
			p->until_ms = now + S_RETRY_MS;
		}
		d->st.refused++;
		return 0;
	}
	if (strcmp(e->type, "fence") == 0) {
		/* Everything the peer sent us through beastd before its fence
		 * has arrived: say so over the ring. */
		if (s_open(p)) {
			s_fenced(d, p, e->attempt);
		} else if (p->state == S_CONNECTING) {
			p->fence_owed = e->attempt; /* answered once we are up */
		}
		return 0;
	}
	if (bm_id_is_zero(&e->id)) {
		return 0;
	}
	if (strcmp(e->type, "accept") == 0) {
		p->have_intro = true;
		p->intro = e->id;
		p->intro_until_ms = now + S_INTRO_MS;
		s_offers(d, false); /* its offer may be here already */
		return 0;
	}
	if (strcmp(e->type, "connect") != 0 || p->state != S_ASKED) {
		return 0;
	}
	if (d->nlive >= S_ROUTES_MAX) {
		p->state = S_REFUSED;
		p->until_ms = now + S_RETRY_MS;
		return 0;
	}
	rc = bm_route_connect(d->rundir, p->name, d->name, e->id.b, d->ring_bytes, &p->route);
	if (rc < 0) {
		bm_debug("direct: no route to '%s': %s", p->name, bm_strerror(rc));
		p->state = S_REFUSED;
		p->until_ms = now + S_RETRY_MS;
		d->st.failed++;
		return 0;
	}
	p->state = S_CONNECTING;
	p->until_ms = now + S_INTRO_MS;
	s_live_add(d, p);
	return 0;
}

/* Sends a fence: it goes the way our earlier messages went, behind them. */
static void
s_fence(bm_direct_t *d, s_peer_t *p)
{
	bm_env_t f = {.cmd = BM_CMD_ROUTE};

	snprintf(f.name, sizeof f.name, "%s", p->name);
	snprintf(f.type, sizeof f.type, "fence");
	f.attempt = ++p->fence;
	p->fence_sent = 0;
	p->until_ms = bm_mono_coarse_ms() + S_INTRO_MS;
	(void)d->ops.to_broker(d->ops.arg, &f);
}

static void
s_up(bm_direct_t *d, s_peer_t *p)
{
	bm_debug("direct: route to '%s' is up", p->name);
	p->state = S_FENCING;
	p->last_ms = bm_mono_coarse_ms();
	p->until_ms = p->last_ms + S_INTRO_MS;
	p->sent = p->reported = 0;
	d->st.opened++;
	s_report(d, p, "up");
	p->slack = S_FENCE_SLACK;
	p->slack_next = S_FENCE_SLACK / 4;
	s_fence(d, p);
	if (p->fence_owed != 0) {
		s_fenced(d, p, p->fence_owed);
		p->fence_owed = 0;
	}
}

/* r's peer, when beastd introduced it to us with r's token, lately. */
static s_peer_t *
s_intro_for(bm_direct_t *d, bm_route_t *r)
{
	s_peer_t *p = s_peer(d, bm_route_peer(r), false);

	if (p != NULL && p->have_intro && bm_mono_coarse_ms() < p->intro_until_ms &&
	    memcmp(p->intro.b, bm_route_token(r), BM_ROUTE_TOKEN) == 0) {
		p->have_intro = false;
		return p;
	}
	return NULL;
}

/* Takes (or refuses) an introduced peer's offer r. */
static void
s_take_offer(bm_direct_t *d, s_peer_t *p, bm_route_t *r)
{
	bm_debug("direct: '%s' offers a route", p->name);
	/* A peer whose route failed here (a corrupt ring) waits out
	 * S_RETRY_MS like one that asked and was refused. */
	if (s_open(p) || d->nlive >= S_ROUTES_MAX ||
	    (p->state == S_REFUSED && bm_mono_coarse_ms() < p->until_ms)) {
		bm_route_destroy(&r);
		d->st.failed++;
		return;
	}
	if (p->state == S_CONNECTING) {
		/* Both asked at once: the connect of the agent whose name sorts
		 * first wins, on both sides. */
		if (strcmp(d->name, p->name) < 0) {
			bm_route_destroy(&r);
			return;
		}
		s_close(d, p, 0);
	}
	if (bm_route_answer(r, d->ring_bytes) < 0) {
		bm_route_destroy(&r);
		d->st.failed++;
		return;
	}
	p->route = r;
	s_live_add(d, p);
	s_up(d, p);
}

/* Offers waiting for their introduction: beastd tells the peer first, but
 * the two messages travel different pipes and the offer can win. */
static void
s_offers(bm_direct_t *d, bool expire)
{
	int64_t now = bm_mono_coarse_ms();

	for (int i = 0; i < d->noffers;) {
		s_offer_t *o = &d->offers[i];
		s_peer_t *p = s_intro_for(d, o->route);

		if (p != NULL || (expire && now >= o->until_ms)) {
			bm_route_t *r = o->route;

			*o = d->offers[--d->noffers];
			if (p != NULL) {
				s_take_offer(d, p, r);
			} else {
				bm_route_destroy(&r);
				d->st.failed++;
			}
			continue;
		}
		i++;
	}
}

static void
s_accept(bm_direct_t *d)
{
	for (int k = 0; k < 4; k++) {
		bm_route_t *r = NULL;
		s_peer_t *p;
		int rc = bm_route_accept(d->listener, &r);

		if (rc == -EAGAIN) {
			return;
		}
		if (rc < 0) {
			d->st.failed++;
			continue;
		}
		if ((p = s_intro_for(d, r)) != NULL) {
			s_take_offer(d, p, r);
		} else if (d->noffers < S_OFFERS_MAX) {
			d->offers[d->noffers++] = (s_offer_t){r, bm_mono_coarse_ms() + S_INTRO_MS};
		} else {
			bm_route_destroy(&r);
			d->st.failed++;
		}
	}
}

/* ---- receiving ---- */

/* Reads up to max records of p's route; BM_ECORRUPT/BM_EPEER end it. */
static int
s_read(bm_direct_t *d, s_peer_t *p, int max)
{
	int n = 0, rc = 0;

	while (n < max) {
		bm_ring_rec_t rec;
		const char *why;
		zmq_msg_t f;
		bm_env_t e;

		rc = bm_route_peek(p->route, &rec);
		if (rc < 0) {
			break;
		}
		/* Copy first: the peer may change the bytes under us. */
		if (zmq_msg_init_size(&f, rec.len) < 0) {
			rc = -ENOMEM;
			break;
		}
		memcpy(zmq_msg_data(&f), rec.data, rec.len);
		(void)bm_route_release(p->route);
		rc = bm__env_decode(zmq_msg_data(&f), rec.len, &e, &why);
		if (rc == 0 && !((e.cmd == BM_CMD_DELIVER && e.route[0] == '\0') ||
		                 e.cmd == BM_CMD_ACK || e.cmd == BM_CMD_ACKS ||
		                 e.cmd == BM_CMD_NACK ||
		                 (e.cmd == BM_CMD_ROUTE && strcmp(e.type, "fenced") == 0))) {
			rc = BM_EPROTO;
		}
		if (rc == 0 && strcmp(e.name, p->name) != 0) {
			rc = BM_EPROTO; /* only the peer speaks on its route */
		}
		if (rc < 0) {
			zmq_msg_close(&f);
			rc = BM_ECORRUPT;
			break;
		}
		if (e.cmd == BM_CMD_ROUTE) {
			bm_debug("direct: '%s' saw our fence %u (ours now %u)", p->name, e.attempt, p->fence);
			if (p->state == S_FENCING && e.attempt == p->fence) {
				if (p->fence_sent == 0) {
					p->state = S_UP; /* our sends may take the ring now */
				} else {
					/* Some went behind it: fence again, with less
					 * slack each round (64, 16, 4, 1, 0), so a stream
					 * is held at last and the route is taken. */
					p->slack = p->slack_next;
					p->slack_next /= 4;
					s_fence(d, p);
				}
			}
			zmq_msg_close(&f);
			n++;
			continue;
		}
		if (e.cmd == BM_CMD_DELIVER) {
			s_seen_put(d, &e.id);
		}
		rc = d->ops.on_frame(d->ops.arg, &e, &f, e.hdr_len);
		zmq_msg_close(&f);
		if (rc < 0) {
			break;
		}
		n++;
		d->st.received++;
	}
	if (n > 0) {
		p->last_ms = bm_mono_coarse_ms();
		d->busy_ns = bm_mono_ns();
	}
	if (rc == BM_ECORRUPT || rc == BM_EPEER) {
		bm_debug("direct: route to '%s' ends: %s", p->name, bm_strerror(rc));
		s_close(d, p, rc == BM_EPEER ? 0 : rc);
	}
	return n;
}

/* What the epoll fd says: connections to accept, answers to pick up,
 * doorbell datagrams to read, EOFs. */
static void
s_events(bm_direct_t *d)
{
	struct epoll_event evs[S_ROUTES_MAX + 1];
	int k = epoll_wait(d->epfd, evs, S_ROUTES_MAX + 1, 0);

	for (int i = 0; i < k; i++) {
		s_peer_t *p = evs[i].data.ptr;

		if (p == NULL) {
			s_accept(d);
		} else if (p->state == S_CONNECTING) {
			int rc = bm_route_finish(p->route);

			if (rc == 1) {
				s_up(d, p);
			} else if (rc < 0) {
				s_close(d, p, rc);
			}
		} else if (s_open(p)) {
			/* Doorbell datagrams, or the peer's EOF. */
			bm_route_disarm(p->route);
		}
	}
}

int
bm__direct_pump(bm_direct_t *d, int max)
{
	int64_t now;
	int n = 0;

	if (d == NULL) {
		return 0;
	}
	now = bm_mono_coarse_ms();
	for (int i = 0; i < d->nlive;) {
		s_peer_t *p = d->live[i];
		int before = d->nlive;

		if (s_open(p)) {
			n += s_read(d, p, max - n > 0 ? max - n : 1);
		} else if (p->state == S_CONNECTING && now >= p->until_ms) {
			s_close(d, p, BM_EPEER);
		}
		if (d->nlive == before) {
			i++;
		}
	}
	/* The hot path makes no system call: records are found by reading
	 * the rings.  The epoll fd is asked when they are empty, and at
	 * least once per clock tick while they are not. */
	if (n == 0 || now != d->events_ms) {
		d->events_ms = now;
		s_events(d);
	}
	return n;
}

void
bm__direct_tick(bm_direct_t *d)
{
	int64_t now;

	if (d == NULL) {
		return;
	}
	if (d->noffers > 0) {
		s_offers(d, true);
	}
	now = bm_mono_coarse_ms();
	for (int i = 0; i < d->nlive;) {
		s_peer_t *p = d->live[i];

		if (p->state == S_FENCING && now >= p->until_ms) {
			s_close(d, p, BM_EPEER); /* the fence never came back */
			continue;
		}
		if (s_open(p) && now - p->last_ms > d->idle_ms &&
		    !bm_route_readable(p->route)) {
			d->st.idle++;
			s_close(d, p, 0);
			continue;
		}
		if (s_open(p) && p->sent != p->reported && now >= p->next_report_ms) {
			s_report(d, p, "up");
		}
		i++;
	}
}

int
bm__direct_arm(bm_direct_t *d)
{
	int ready = 0;

	if (d == NULL || d->nlive == 0) {
		return 0;
	}
	/* A busy route's next record is usually microseconds away, and a
	 * sleeping peer costs 40-58 us to wake across CPUs: spin a little. */
	if (d->spin_us > 0 && bm_mono_ns() - d->busy_ns < S_BUSY_NS) {
		int64_t t0 = bm_mono_ns(), now = t0, end = t0 + (int64_t)d->spin_us * 1000;

		do {
			for (int i = 0; i < d->nlive; i++) {
				if (s_open(d->live[i]) && bm_route_readable(d->live[i]->route)) {
					return 1;
				}
			}
			/* After 2 us, yield between looks: a peer on this same
			 * CPU gets to run (and write), one on another CPU costs
			 * us only the call. */
			if (now - t0 > 2000) {
				sched_yield();
			}
			now = bm_mono_ns();
		} while (now < end);
	}
	for (int i = 0; i < d->nlive; i++) {
		s_peer_t *p = d->live[i];

		if (s_open(p) && bm_route_arm(p->route) != 0) {
			ready = 1;
		}
	}
	return ready;
}

bm_route_t *
bm__direct_route(bm_direct_t *d, const char *peer)
{
	s_peer_t *p = d ? s_peer(d, peer, false) : NULL;

	return p != NULL && s_open(p) ? p->route : NULL;
}

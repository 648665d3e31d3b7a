/*
 * t_zmq.c - raw libzmq, the baselines: DEALER -> ROUTER on ipc and tcp
 * (zmq-dealer-ipc, zmq-dealer-tcp), a bare DEALER -> ROUTER forwarder ->
 * DEALER on ipc (zmq-forwarder-ipc: two hops through a server, like every
 * broker here), zmq_proxy(XSUB, XPUB) with PUB and SUB sockets
 * (zmq-proxy), and PAIR over ipc (zmq-pair-ipc) and inproc
 * (zmq-pair-inproc: two threads of one process, libzmq's floor).  What a
 * careful user would write with libzmq alone.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "bb.h"
#include "bb_core.h"

typedef struct {
	zmq_msg_t peer; /* ROUTER: identity of the last sender (the reply goes there) */
	int has_peer;
	int kind;       /* S_ROUTER, S_DEALER, S_FWD_DEALER, S_PUB, S_SUB */
} s_zl_t;

enum { S_ROUTER, S_DEALER, S_FWD_DEALER, S_PUB, S_SUB };

static int
s_sock(bb_link_t *l, int type, int kind)
{
	s_zl_t *z = calloc(1, sizeof *z);
	l->ctx = zmq_ctx_new();
	if (!z || !l->ctx) {
		free(z);
		return -1;
	}
	l->impl = z;
	z->kind = kind;
	l->sock = zmq_socket(l->ctx, type);
	if (!l->sock)
		return -1;
	/* fan-out and point-to-point rows keep every message (unbounded
	 * queues); overload rows keep libzmq's defaults, so drops show */
	int hwm = 0, linger = (int)(BB_DEADLINE_S * 1000); /* the tail of a stream is delivered */
	if (l->scen != BB_OVERLOAD) {
		zmq_setsockopt(l->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
		zmq_setsockopt(l->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
	}
	zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
	return 0;
}

static int
s_send(bb_link_t *l, const void *buf, size_t len)
{
	s_zl_t *z = l->impl;
	if (z->kind == S_ROUTER) {
		if (!z->has_peer)
			return -1;
		zmq_msg_t id;
		zmq_msg_init(&id);
		zmq_msg_copy(&id, &z->peer);
		if (zmq_msg_send(&id, l->sock, ZMQ_SNDMORE) < 0) {
			zmq_msg_close(&id);
			return -1;
		}
	} else if (z->kind == S_FWD_DEALER) {
		/* [destination, body]: the forwarder turns it into [source, body] */
		if (zmq_send(l->sock, l->peer, strlen(l->peer), ZMQ_SNDMORE) < 0)
			return -1;
	}
	return zmq_send(l->sock, buf, len, 0) == (int)len ? 0 : -1;
}

/* Receives the last frame of one message into buf; a ROUTER or a
 * forwarded DEALER keeps the first frame as the reply address. */
static long
s_recv(bb_link_t *l, void *buf, size_t cap, int timeout_ms)
{
	s_zl_t *z = l->impl;
	zmq_pollitem_t it = {.socket = l->sock, .events = ZMQ_POLLIN};
	if (zmq_poll(&it, 1, timeout_ms) <= 0)
		return -1;
	int lead = z->kind == S_ROUTER || z->kind == S_FWD_DEALER;
	if (lead) {
		if (z->has_peer)
			zmq_msg_close(&z->peer);
		zmq_msg_init(&z->peer);
		if (zmq_msg_recv(&z->peer, l->sock, 0) < 0 || !zmq_msg_more(&z->peer))
			return -1;
		z->has_peer = 1;
		if (z->kind == S_FWD_DEALER) {
			size_t n = zmq_msg_size(&z->peer);
			if (n >= sizeof l->peer)
				return -1;
			memcpy(l->peer, zmq_msg_data(&z->peer), n);
			l->peer[n] = '\0';
		}
	}
	int n = zmq_recv(l->sock, buf, cap, 0);
	if (n < 0 || (size_t)n > cap)
		return -1;
	int more = 0;
	size_t ml = sizeof more;
	zmq_getsockopt(l->sock, ZMQ_RCVMORE, &more, &ml);
	if (more)
		return -1; /* nothing here sends more frames */
	return n;
}

static void
s_close(bb_link_t *l)
{
	s_zl_t *z = l->impl;
	if (z && z->has_peer)
		zmq_msg_close(&z->peer);
	if (l->sock)
		zmq_close(l->sock);
	if (l->ctx)
		zmq_ctx_term(l->ctx);
	free(z);
	l->impl = l->sock = l->ctx = NULL;
}

/* ---- DEALER -> ROUTER, direct ---- */

static int
s_dealer_serve(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen, int tcp)
{
	if (s_sock(l, ZMQ_ROUTER, S_ROUTER) != 0)
		return -1;
	if (tcp)
		snprintf(ep, eplen, "tcp://127.0.0.1:*");
	else
		snprintf(ep, eplen, "ipc://%s/zr-%d", env->dir, (int)getpid());
	if (zmq_bind(l->sock, ep) != 0)
		return -1;
	size_t len = eplen;
	return zmq_getsockopt(l->sock, ZMQ_LAST_ENDPOINT, ep, &len);
}

static int
s_serve_ipc(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen)
{
	return s_dealer_serve(l, env, ep, eplen, 0);
}

static int
s_serve_tcp(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen)
{
	return s_dealer_serve(l, env, ep, eplen, 1);
}

static int
s_dial(bb_link_t *l, const bb_env_t *env, const char *ep)
{
	(void)env;
	if (s_sock(l, ZMQ_DEALER, S_DEALER) != 0)
		return -1;
	return zmq_connect(l->sock, ep);
}

static const bb_ops_t s_dealer_ipc_ops = {
	.serve = s_serve_ipc, .dial = s_dial, .send = s_send, .recv = s_recv, .close = s_close};
static const bb_ops_t s_dealer_tcp_ops = {
	.serve = s_serve_tcp, .dial = s_dial, .send = s_send, .recv = s_recv, .close = s_close};

static const unsigned s_p2p_scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_BULK);

const bb_transport_t bb_t_zmq_dealer_ipc = {
	.id = "zmq-dealer-ipc",
	.about = "raw libzmq DEALER -> ROUTER over ipc:// (the default baseline)",
	.scens = s_p2p_scens,
	.ops = &s_dealer_ipc_ops,
};

const bb_transport_t bb_t_zmq_dealer_tcp = {
	.id = "zmq-dealer-tcp",
	.about = "raw libzmq DEALER -> ROUTER over tcp://127.0.0.1",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT),
	.ops = &s_dealer_tcp_ops,
};

/* ---- PAIR over ipc ---- */

static int
s_pair_serve(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen)
{
	if (s_sock(l, ZMQ_PAIR, S_DEALER) != 0)
		return -1;
	snprintf(ep, eplen, "ipc://%s/zp-%d", env->dir, (int)getpid());
	return zmq_bind(l->sock, ep);
}

static int
s_pair_dial(bb_link_t *l, const bb_env_t *env, const char *ep)
{
	(void)env;
	if (s_sock(l, ZMQ_PAIR, S_DEALER) != 0)
		return -1;
	return zmq_connect(l->sock, ep);
}

static const bb_ops_t s_pair_ipc_ops = {
	.serve = s_pair_serve, .dial = s_pair_dial, .send = s_send, .recv = s_recv, .close = s_close};

const bb_transport_t bb_t_zmq_pair_ipc = {
	.id = "zmq-pair-ipc",
	.about = "raw libzmq PAIR <-> PAIR over ipc://",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT),
	.ops = &s_pair_ipc_ops,
};

/* ---- PAIR over inproc: both ends in one side, the receiver a thread ---- */

typedef struct {
	const bb_row_t *row;
	const bb_env_t *env;
	void *sock;          /* the receiver's PAIR */
	long got;            /* throughput: data messages received */
	double t_end;        /* throughput: when the end marker arrived */
	int ok;
} s_inproc_t;

/* Ping-pong: echoes until the end marker; stream: counts until it. */
static void *
s_inproc_rx(void *arg)
{
	s_inproc_t *x = arg;
	size_t cap = x->row->payload;
	char *buf = malloc(cap);
	int timeout = (int)(BB_DEADLINE_S * 1000);

	bb_pin(x->env->cpu_rx);
	zmq_setsockopt(x->sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
	while (buf) {
		int n = zmq_recv(x->sock, buf, cap, 0);
		if (n < 1)
			break;
		if (buf[0] == BB_TAG_END) {
			x->t_end = bb_now();
			x->ok = 1;
			break;
		}
		if (x->row->scen == BB_LATENCY) {
			if (zmq_send(x->sock, buf, (size_t)n, 0) != n)
				break;
		} else {
			x->got++;
		}
	}
	free(buf);
	return NULL;
}

static int
s_inproc_main(void *arg, int wfd)
{
	const bb_row_t *row = ((s_inproc_t *)arg)->row;
	const bb_env_t *env = ((s_inproc_t *)arg)->env;
	static bb_row_t res;
	s_inproc_t x = {.row = row, .env = env};
	size_t payload = row->payload;
	void *ctx = zmq_ctx_new(), *tx = ctx ? zmq_socket(ctx, ZMQ_PAIR) : NULL;
	char *buf = malloc(payload);
	double *lat = NULL;
	pthread_t th;
	int hwm = 0, started = 0;

	memset(&res, 0, sizeof res);
	x.sock = ctx ? zmq_socket(ctx, ZMQ_PAIR) : NULL;
	if (!tx || !x.sock || !buf) {
		bb_fail(&res, "cannot set up the PAIR sockets");
		goto out;
	}
	zmq_setsockopt(tx, ZMQ_SNDHWM, &hwm, sizeof hwm);
	zmq_setsockopt(x.sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
	if (zmq_bind(x.sock, "inproc://bb") != 0 || zmq_connect(tx, "inproc://bb") != 0 ||
	    pthread_create(&th, NULL, s_inproc_rx, &x) != 0) {
		bb_fail(&res, "cannot connect the PAIR sockets over inproc");
		goto out;
	}
	started = 1;
	memset(buf, 'x', payload);
	buf[0] = BB_TAG_DATA;
	double end = bb_now() + BB_DEADLINE_S;
	if (row->scen == BB_LATENCY) {
		bb_counts_t kc = bb_counts(env, BB_LATENCY, payload);
		int warm = (int)kc.warm, n = (int)kc.n, k = 0;
		int timeout = (int)(BB_DEADLINE_S * 1000);
		lat = malloc((size_t)n * sizeof *lat);
		zmq_setsockopt(tx, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
		for (int i = 0; lat && i < warm + n && bb_now() < end; i++) {
			double t = bb_now();
			if (zmq_send(tx, buf, payload, 0) != (int)payload || zmq_recv(tx, buf, payload, 0) < 1) {
				bb_fail(&res, "echo lost or late (round trip %d)", i);
				break;
			}
			if (i >= warm)
				lat[k++] = (bb_now() - t) * 1e6 / 2;
		}
		if (k > 0 && !res.status[0])
			bb_latency_stats(&res, lat, k);
		res.sent = k;
		snprintf(res.note, sizeof res.note, "one way = round trip / 2; threads of one process");
	} else {
		long count = bb_counts(env, BB_THROUGHPUT, payload).n;
		double t0 = bb_now();
		long i = 0;
		for (; i < count && bb_now() < end; i++)
			if (zmq_send(tx, buf, payload, 0) != (int)payload)
				break;
		buf[0] = BB_TAG_END;
		(void)zmq_send(tx, buf, payload, 0);
		pthread_join(th, NULL);
		started = 0;
		res.sent = i;
		res.lost = i - x.got;
		if (!x.ok || x.got != count) {
			bb_fail(&res, "received %ld of %ld", x.got, count);
		} else {
			res.msgs_per_s = (double)x.got / (x.t_end - t0);
			res.mb_per_s = res.msgs_per_s * (double)payload / 1e6;
		}
		snprintf(res.note, sizeof res.note, "threads of one process");
	}
	if (started) {
		buf[0] = BB_TAG_END;
		(void)zmq_send(tx, buf, 1, 0);
		pthread_join(th, NULL);
	}
	if (!res.status[0])
		snprintf(res.status, sizeof res.status, "ok");
out:
	free(lat);
	free(buf);
	if (tx)
		zmq_close(tx);
	if (x.sock)
		zmq_close(x.sock);
	if (ctx)
		zmq_ctx_term(ctx);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_inproc_run(bb_row_t *r, bb_env_t *env)
{
	static s_inproc_t a;
	int fd = -1;

	memset(&a, 0, sizeof a);
	a.row = r;
	a.env = env;
	pid_t pid = bb_side_spawn(env->cpu_tx, s_inproc_main, &a, &fd);
	if (pid < 0) {
		bb_fail(r, "fork");
		return 1;
	}
	if (bb_side_collect(pid, fd, 4 * BB_DEADLINE_S, r, BB_SIDE_TX) == 0 && !r->status[0])
		snprintf(r->status, sizeof r->status, "ok");
	else if (!r->status[0])
		bb_fail(r, "the side did not report");
	return 1;
}

const bb_transport_t bb_t_zmq_pair_inproc = {
	.id = "zmq-pair-inproc",
	.about = "raw libzmq PAIR <-> PAIR over inproc:// (two threads of one process, pinned like two sides)",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT),
	.run = s_inproc_run,
};

/* ---- a bare forwarder: DEALER -> ROUTER -> DEALER ---- */

static volatile sig_atomic_t s_stop;

static void
s_on_term(int sig)
{
	(void)sig;
	s_stop = 1;
}

/* [src, dst, body] in, [dst, src, body] out; unroutable ones are dropped
 * (ROUTER_MANDATORY says so) and counted on stderr. */
static void
s_forward(void *router, long *dropped)
{
	zmq_msg_t f[3];
	int nf = 0, more = 1;
	while (more) {
		zmq_msg_t spare, *m = nf < 3 ? &f[nf] : &spare;
		zmq_msg_init(m);
		if (zmq_msg_recv(m, router, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(m);
			break;
		}
		more = zmq_msg_more(m);
		if (nf < 3)
			nf++;
		else
			zmq_msg_close(m);
	}
	if (nf == 3 && zmq_msg_send(&f[1], router, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
		(void)zmq_msg_send(&f[0], router, ZMQ_SNDMORE);
		(void)zmq_msg_send(&f[2], router, 0);
	} else if (nf > 0) {
		(*dropped)++;
	}
	for (int i = 0; i < nf; i++)
		zmq_msg_close(&f[i]);
}

static int
s_forwarder_main(void *arg, int wfd)
{
	const char *ep = arg;
	signal(SIGTERM, s_on_term);
	void *ctx = zmq_ctx_new();
	void *router = zmq_socket(ctx, ZMQ_ROUTER);
	int one = 1, hwm = 0, linger = 0;
	zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
	zmq_setsockopt(router, ZMQ_SNDHWM, &hwm, sizeof hwm);
	zmq_setsockopt(router, ZMQ_RCVHWM, &hwm, sizeof hwm);
	zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
	char ok = zmq_bind(router, ep) == 0;
	bb_write_full(wfd, &ok, 1);
	long dropped = 0;
	while (ok && !s_stop) {
		zmq_pollitem_t it = {.socket = router, .events = ZMQ_POLLIN};
		if (zmq_poll(&it, 1, 200) < 0 && zmq_errno() != EINTR)
			break;
		for (int i = 0; i < 4096 && (it.revents & ZMQ_POLLIN); i++) {
			int ev = 0;
			size_t el = sizeof ev;
			zmq_getsockopt(router, ZMQ_EVENTS, &ev, &el);
			if (!(ev & ZMQ_POLLIN))
				break;
			s_forward(router, &dropped);
		}
	}
	if (dropped)
		fprintf(stderr, "zmq-forwarder: dropped %ld unroutable messages\n", dropped);
	zmq_close(router);
	zmq_ctx_term(ctx);
	return ok ? 0 : 1;
}

/* Starts a server function in a child (no exec: it is ours) and waits for
 * its one-byte "bound" answer. */
static int
s_up_child(bb_env_t *env, int (*fn)(void *, int), char *why, size_t whylen)
{
	int rfd = -1;
	pid_t pid = bb_side_spawn(env->cpu_srv, fn, env->ep[0], &rfd);
	if (pid < 0) {
		snprintf(why, whylen, "fork");
		return -1;
	}
	env->srv_pid[env->nsrv++] = pid;
	char ok = 0;
	int rc = bb_read_full(rfd, &ok, 1, bb_now() + 5.0);
	close(rfd);
	if (rc != 0 || !ok) {
		snprintf(why, whylen, "the zmq server did not bind %s", env->ep[0]);
		return -1;
	}
	return 0;
}

static int
s_fwd_up(bb_env_t *env, char *why, size_t whylen)
{
	snprintf(env->ep[0], sizeof env->ep[0], "ipc://%s/zfwd.sock", env->dir);
	return s_up_child(env, s_forwarder_main, why, whylen);
}

/* A forwarded DEALER has an identity the other side addresses it by. */
static int
s_fwd_open(bb_link_t *l, const bb_env_t *env, const char *self)
{
	if (s_sock(l, ZMQ_DEALER, S_FWD_DEALER) != 0)
		return -1;
	zmq_setsockopt(l->sock, ZMQ_ROUTING_ID, self, strlen(self));
	if (zmq_connect(l->sock, env->ep[0]) != 0)
		return -1;
	/* the forwarder drops what it cannot route: be known before the
	 * sender starts (a message to ourselves comes back when we are) */
	double end = bb_now() + 5.0;
	snprintf(l->peer, sizeof l->peer, "%s", self);
	char probe[64] = {BB_TAG_PROBE};
	while (bb_now() < end) {
		if (s_send(l, probe, sizeof probe) != 0)
			return -1;
		char buf[64];
		if (s_recv(l, buf, sizeof buf, 100) > 0) {
			while (s_recv(l, buf, sizeof buf, 20) > 0)
				; /* a late twin of the probe */
			return 0;
		}
	}
	return -1;
}

static int
s_fwd_serve(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen)
{
	snprintf(ep, eplen, "rx-%d", (int)getpid());
	return s_fwd_open(l, env, ep);
}

static int
s_fwd_dial(bb_link_t *l, const bb_env_t *env, const char *ep)
{
	char self[32];
	snprintf(self, sizeof self, "tx-%d", (int)getpid());
	if (s_fwd_open(l, env, self) != 0)
		return -1;
	snprintf(l->peer, sizeof l->peer, "%s", ep);
	return 0;
}

static const bb_ops_t s_fwd_ops = {
	.serve = s_fwd_serve, .dial = s_fwd_dial, .send = s_send, .recv = s_recv, .close = s_close};

const bb_transport_t bb_t_zmq_forwarder_ipc = {
	.id = "zmq-forwarder-ipc",
	.about = "raw libzmq DEALER -> ROUTER forwarder -> DEALER over ipc:// (two hops, like a broker)",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT),
	.up = s_fwd_up,
	.ops = &s_fwd_ops,
};

/* ---- zmq_proxy(XSUB, XPUB) ---- */

static int
s_proxy_main(void *arg, int wfd)
{
	const char *dir = arg; /* ep[0] holds the dir here */
	char pub_ep[300], sub_ep[300];
	snprintf(pub_ep, sizeof pub_ep, "ipc://%s/zpub.sock", dir);
	snprintf(sub_ep, sizeof sub_ep, "ipc://%s/zsub.sock", dir);
	void *ctx = zmq_ctx_new();
	void *xsub = zmq_socket(ctx, ZMQ_XSUB), *xpub = zmq_socket(ctx, ZMQ_XPUB);
	int hwm = 0, linger = 0;
	if (getenv("BB_ZPROXY_HWM") == NULL) { /* fan-out: keep all */
		zmq_setsockopt(xsub, ZMQ_RCVHWM, &hwm, sizeof hwm);
		zmq_setsockopt(xpub, ZMQ_SNDHWM, &hwm, sizeof hwm);
	}
	zmq_setsockopt(xsub, ZMQ_LINGER, &linger, sizeof linger);
	zmq_setsockopt(xpub, ZMQ_LINGER, &linger, sizeof linger);
	char ok = zmq_bind(xsub, pub_ep) == 0 && zmq_bind(xpub, sub_ep) == 0;
	bb_write_full(wfd, &ok, 1);
	if (ok)
		zmq_proxy(xsub, xpub, NULL); /* until SIGTERM ends the process */
	zmq_close(xsub);
	zmq_close(xpub);
	zmq_ctx_term(ctx);
	return ok ? 0 : 1;
}

static int
s_proxy_up(bb_env_t *env, char *why, size_t whylen)
{
	snprintf(env->ep[0], sizeof env->ep[0], "%s", env->dir);
	if (env->scen == BB_OVERLOAD)
		setenv("BB_ZPROXY_HWM", "default", 1);
	else
		unsetenv("BB_ZPROXY_HWM");
	int rc = s_up_child(env, s_proxy_main, why, whylen);
	unsetenv("BB_ZPROXY_HWM");
	return rc;
}

static int
s_proxy_sub(bb_link_t *l, const bb_env_t *env)
{
	if (s_sock(l, ZMQ_SUB, S_SUB) != 0)
		return -1;
	char ep[300];
	snprintf(ep, sizeof ep, "ipc://%s/zsub.sock", env->ep[0]);
	return zmq_setsockopt(l->sock, ZMQ_SUBSCRIBE, "", 0) == 0 && zmq_connect(l->sock, ep) == 0 ? 0 : -1;
}

static int
s_proxy_pub(bb_link_t *l, const bb_env_t *env)
{
	if (s_sock(l, ZMQ_PUB, S_PUB) != 0)
		return -1;
	char ep[300];
	snprintf(ep, sizeof ep, "ipc://%s/zpub.sock", env->ep[0]);
	return zmq_connect(l->sock, ep);
}

static const bb_ops_t s_proxy_ops = {
	.sub = s_proxy_sub, .pub = s_proxy_pub, .send = s_send, .recv = s_recv, .close = s_close};

const bb_transport_t bb_t_zmq_proxy = {
	.id = "zmq-proxy",
	.about = "bare libzmq zmq_proxy(XSUB, XPUB) over ipc://, PUB and SUB sockets",
	.scens = BB_S(BB_FANOUT1) | BB_S(BB_FANOUT8) | BB_S(BB_FANOUT32) | BB_S(BB_OVERLOAD),
	.up = s_proxy_up,
	.ops = &s_proxy_ops,
};

/*
 * t_nats.c - NATS through nats-server on a free 127.0.0.1 port, with
 * libnats (Debian libnats-dev; nats-server from Debian nats-server):
 *
 *   nats      core NATS.  Latency: request/reply-shaped ping-pong, the
 *             receiver answering on the sender's subject; throughput: a
 *             publish stream to one subscriber; fan-out and overload
 *             through the generic driver (pending limits lifted for
 *             fan-out rows, the defaults for overload rows, so a slow
 *             consumer's drops show as lost).
 *   nats-js   JetStream (nats-server -js, file store in the scratch dir):
 *             durable rows, async publish-with-ack with 4096 in flight.
 *             A PubAck means the server has the message in its stream; it
 *             syncs to disk every 2 minutes by default, not per message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bb.h"

#ifdef BB_HAVE_NATS
#include <nats/nats.h>
#endif

#ifdef BB_HAVE_NATS
static char s_server[512];	/* the server's program, once found */
#endif

static const char *
s_missing(void)
{
#ifndef BB_HAVE_NATS
	return "not installed: libnats (Debian libnats-dev), at build time";
#else
	if (!s_server[0] && bb_find_program("nats-server", s_server, sizeof s_server) != 0)
		return "not installed: nats-server (Debian nats-server)";
	return NULL;
#endif
}

#ifdef BB_HAVE_NATS

static int
s_up_js(bb_env_t *env, char *why, size_t whylen, int js)
{
	int port = bb_free_port();
	char conf[300], store[300];
	snprintf(conf, sizeof conf, "%s/nats-%d.conf", env->dir, port);
	snprintf(store, sizeof store, "%s/nats-js-%d", env->dir, port);
	FILE *f = fopen(conf, "w");
	if (!f) {
		snprintf(why, whylen, "cannot write %s", conf);
		return -1;
	}
	/* 64 MB: the largest payload nats-server accepts; overload rows keep
	 * the server's default limit on what may wait for a slow client */
	fprintf(f, "listen: 127.0.0.1:%d\nmax_payload: 67108864\n", port);
	if (env->scen != BB_OVERLOAD)
		fprintf(f, "max_pending: 268435456\n");
	if (js)
		fprintf(f, "jetstream {\n  store_dir: \"%s\"\n}\n", store);
	fclose(f);
	char *argv[] = {s_server, "-c", conf, NULL};
	if (bb_server_up(env, argv, "nats-server.log", &(bb_ready_t){.port = port, .timeout_s = 5.0},
	                 why, whylen) != 0)
		return -1;
	snprintf(env->ep[0], sizeof env->ep[0], "nats://127.0.0.1:%d", port);
	return 0;
}

static int
s_up(bb_env_t *env, char *why, size_t whylen)
{
	return s_up_js(env, why, whylen, 0);
}

static int
s_up_jetstream(bb_env_t *env, char *why, size_t whylen)
{
	return s_up_js(env, why, whylen, 1);
}

/* ---- links ---- */

typedef struct {
	natsConnection *nc;
	natsSubscription *sub;
	char out[64]; /* the subject this side publishes to */
} s_nl_t;

static int
s_connect(bb_link_t *l, const bb_env_t *env, const char *in_subject)
{
	s_nl_t *n = calloc(1, sizeof *n);
	if (!n)
		return -1;
	l->impl = n;
	natsOptions *o = NULL;
	int ok = natsOptions_Create(&o) == NATS_OK && natsOptions_SetURL(o, env->ep[0]) == NATS_OK &&
	         (l->scen == BB_OVERLOAD || natsOptions_SetMaxPendingMsgs(o, 1000000) == NATS_OK) &&
	         /* one message at a time: out at once, not at the flusher's next turn */
	         natsOptions_SetSendAsap(o, l->scen == BB_LATENCY || l->scen == BB_LATLOAD || l->scen == BB_BULK) ==
	                 NATS_OK &&
	         natsConnection_Connect(&n->nc, o) == NATS_OK;
	natsOptions_Destroy(o);
	if (!ok)
		return -1;
	if (in_subject) {
		if (natsConnection_SubscribeSync(&n->sub, n->nc, in_subject) != NATS_OK)
			return -1;
		if (l->scen != BB_OVERLOAD && natsSubscription_SetPendingLimits(n->sub, -1, -1) != NATS_OK)
			return -1;
	}
	/* the subscription is in force at the server once a flush returns */
	return natsConnection_FlushTimeout(n->nc, 5000) == NATS_OK ? 0 : -1;
}

static int
s_serve(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen)
{
	int pid = (int)getpid();
	snprintf(ep, eplen, "bench.rx%d", pid);
	if (s_connect(l, env, ep) != 0)
		return -1;
	s_nl_t *n = l->impl;
	snprintf(n->out, sizeof n->out, "%s.reply", ep); /* where the sender listens */
	return 0;
}

static int
s_dial(bb_link_t *l, const bb_env_t *env, const char *ep)
{
	char back[80];
	snprintf(back, sizeof back, "%s.reply", ep);
	if (s_connect(l, env, back) != 0)
		return -1;
	s_nl_t *n = l->impl;
	snprintf(n->out, sizeof n->out, "%s", ep);
	return 0;
}

static int
s_sub(bb_link_t *l, const bb_env_t *env)
{
	return s_connect(l, env, "bench.fan");
}

static int
s_pub(bb_link_t *l, const bb_env_t *env)
{
	if (s_connect(l, env, NULL) != 0)
		return -1;
	s_nl_t *n = l->impl;
	snprintf(n->out, sizeof n->out, "bench.fan");
	return 0;
}

static int
s_send(bb_link_t *l, const void *buf, size_t len)
{
	s_nl_t *n = l->impl;
	return natsConnection_Publish(n->nc, n->out, buf, (int)len) == NATS_OK ? 0 : -1;
}

static long
s_recv(bb_link_t *l, void *buf, size_t cap, int timeout_ms)
{
	s_nl_t *n = l->impl;
	natsMsg *m = NULL;
	if (natsSubscription_NextMsg(&m, n->sub, timeout_ms > 0 ? timeout_ms : 1) != NATS_OK)
		return -1;
	int len = natsMsg_GetDataLength(m);
	long rc = len >= 0 && (size_t)len <= cap ? len : -1;
	if (rc >= 0)
		memcpy(buf, natsMsg_GetData(m), (size_t)len);
	natsMsg_Destroy(m);
	return rc;
}

static void
s_close(bb_link_t *l)
{
	s_nl_t *n = l->impl;
	if (!n)
		return;
	if (n->nc)
		(void)natsConnection_FlushTimeout(n->nc, (int64_t)(BB_DEADLINE_S * 1000));
	natsSubscription_Destroy(n->sub);
	natsConnection_Destroy(n->nc);
	free(n);
	l->impl = NULL;
}

static const bb_ops_t s_ops = {.serve = s_serve,
                               .dial = s_dial,
                               .sub = s_sub,
                               .pub = s_pub,
                               .send = s_send,
                               .recv = s_recv,
                               .close = s_close};

/* ---- JetStream: durable ---- */

#define S_WINDOW 4096

static double *s_t0, *s_lat;
static long s_acked;

static void
s_on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	(void)js;
	(void)closure;
	long k = -1;
	if (!pae && pa && natsMsg_GetDataLength(msg) >= (int)sizeof k) {
		memcpy(&k, natsMsg_GetData(msg), sizeof k);
		if (k >= 0 && s_lat[k] < 0) {
			s_lat[k] = (bb_now() - s_t0[k]) * 1e6;
			__atomic_add_fetch(&s_acked, 1, __ATOMIC_RELAXED);
		}
	}
	natsMsg_Destroy(msg);
}

typedef struct {
	const bb_env_t *env;
	const bb_row_t *row;
} s_js_arg_t;

static int
s_js_main(void *arg, int wfd)
{
	s_js_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	long n = bb_counts(a->env, BB_DURABLE, a->row->payload).n;
	size_t size = a->row->payload;
	s_t0 = calloc((size_t)n, sizeof *s_t0);
	s_lat = calloc((size_t)n, sizeof *s_lat);
	char *body = calloc(1, size);
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	if (!s_t0 || !s_lat || !body || natsConnection_ConnectTo(&nc, a->env->ep[0]) != NATS_OK) {
		bb_fail(&res, "cannot connect to nats-server");
		goto out;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.PublishAsync.MaxPending = S_WINDOW;
	jo.PublishAsync.AckHandler = s_on_puback;
	jo.PublishAsync.StallWait = (int64_t)(BB_DEADLINE_S * 1000);
	jsStreamConfig sc;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	const char *subjects[] = {"durable.>"};
	if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) {
		bb_fail(&res, "no JetStream context");
		goto out;
	}
	jsStreamConfig_Init(&sc);
	sc.Name = "BENCH";
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	if (js_AddStream(&si, js, &sc, NULL, &jerr) != NATS_OK) {
		bb_fail(&res, "cannot add a stream (JetStream error %d)", (int)jerr);
		goto out;
	}
	jsStreamInfo_Destroy(si);
	for (long i = 0; i < n; i++)
		s_lat[i] = -1;
	double start = bb_now(), end = start + 3 * BB_DEADLINE_S;
	for (long k = 0; k < n && bb_now() < end; k++) {
		memcpy(body, &k, sizeof k);
		s_t0[k] = bb_now();
		if (js_PublishAsync(js, "durable.x", body, (int)size, NULL) != NATS_OK) {
			bb_fail(&res, "publish %ld refused", k);
			break;
		}
	}
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MaxWait = (int64_t)(BB_DEADLINE_S * 1000);
	(void)js_PublishAsyncComplete(js, &po);
	double dt = bb_now() - start;
	long k = 0;
	for (long i = 0; i < n; i++)
		if (s_lat[i] >= 0)
			s_lat[k++] = s_lat[i];
	bb_latency_stats(&res, s_lat, (int)k);
	res.msgs_per_s = dt > 0 ? (double)k / dt : 0;
	res.sent = n;
	res.lost = n - k;
	if (k < n)
		bb_fail(&res, "only %ld of %ld acknowledged in time", k, n);
	snprintf(res.note, sizeof res.note, "async publish-with-ack, %d in flight; server syncs every 2 min",
	         S_WINDOW);
out:
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	free(body);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_js_run(bb_row_t *r, bb_env_t *env)
{
	if (r->scen != BB_DURABLE)
		return 0;
	static s_js_arg_t a;
	a.env = env;
	a.row = r;
	int fd = -1;
	pid_t pid = bb_side_spawn(env->cpu_tx, s_js_main, &a, &fd);
	if (pid < 0)
		bb_fail(r, "fork");
	else if (bb_side_collect(pid, fd, 4 * BB_DEADLINE_S, r, BB_SIDE_TX) == 0)
		snprintf(r->status, sizeof r->status, "ok");
	return 1;
}

#define S_UP s_up
#define S_UP_JS s_up_jetstream
#define S_OPS (&s_ops)
#define S_JS_RUN s_js_run
#else
#define S_UP NULL
#define S_UP_JS NULL
#define S_OPS NULL
#define S_JS_RUN NULL
#endif

static const char *
s_refuse(int scen, size_t payload)
{
	(void)scen;
	return payload > (64u << 20) ? "over nats-server's largest max_payload (64 MB)" : NULL;
}

const bb_transport_t bb_t_nats = {
	.id = "nats",
	.about = "NATS core through nats-server on 127.0.0.1 (libnats)",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_FANOUT1) | BB_S(BB_FANOUT8) | BB_S(BB_FANOUT32) |
	         BB_S(BB_OVERLOAD),
	.missing = s_missing,
	.up = S_UP,
	.refuse = s_refuse,
	.ops = S_OPS,
};

const bb_transport_t bb_t_nats_js = {
	.id = "nats-js",
	.about = "NATS JetStream (nats-server -js, file store): async publish-with-ack",
	.scens = BB_S(BB_DURABLE),
	.missing = s_missing,
	.up = S_UP_JS,
	.run = S_JS_RUN,
};

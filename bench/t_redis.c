/*
 * t_redis.c - Redis through redis-server on a free 127.0.0.1 port
 * (`--save ''`, no RDB snapshots), with hiredis (Debian libhiredis-dev;
 * redis-server from Debian redis-server):
 *
 *   redis-pubsub        PUBLISH / SUBSCRIBE: latency as ping-pong over two
 *                       channels, throughput (pipelined PUBLISH), fan-out and
 *                       overload (a slow subscriber past the server's output
 *                       buffer limit for pub/sub clients is disconnected).
 *   redis-stream        XADD with appendonly yes, appendfsync everysec:
 *                       durable rows, pipelined, 4096 in flight; a message
 *                       counts at its reply (up to a second of acknowledged
 *                       writes can be lost in a crash).
 *   redis-stream-fsync  the same with appendfsync always.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bb.h"

#ifdef BB_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

#ifdef BB_HAVE_HIREDIS
static char s_server[512];	/* the server's program, once found */
#endif

static const char *
s_missing(void)
{
#ifndef BB_HAVE_HIREDIS
	return "not installed: hiredis (Debian libhiredis-dev), at build time";
#else
	if (!s_server[0] && bb_find_program("redis-server", s_server, sizeof s_server) != 0)
		return "not installed: redis-server (Debian redis-server)";
	return NULL;
#endif
}

#ifdef BB_HAVE_HIREDIS

static int
s_start(bb_env_t *env, char *why, size_t whylen, const char *fsync)
{
	int port = bb_free_port();
	char ps[16], dir[300];
	snprintf(ps, sizeof ps, "%d", port);
	snprintf(dir, sizeof dir, "%s", env->dir);
	char aof[32];
	snprintf(aof, sizeof aof, "bench-%d.aof", port);
	/* overload rows keep the server's default output limits for pub/sub
	 * clients (a slow subscriber is cut off); others lift them */
	char *argv[32];
	int n = 0;
	argv[n++] = s_server;
	argv[n++] = "--bind";
	argv[n++] = "127.0.0.1";
	argv[n++] = "--port";
	argv[n++] = ps;
	argv[n++] = "--dir";
	argv[n++] = dir;
	argv[n++] = "--save";
	argv[n++] = "";
	argv[n++] = "--protected-mode";
	argv[n++] = "yes";
	if (fsync) {
		argv[n++] = "--appendonly";
		argv[n++] = "yes";
		argv[n++] = "--appendfsync";
		argv[n++] = (char *)fsync;
		argv[n++] = "--appendfilename";
		argv[n++] = aof;
	}
	if (env->scen != BB_OVERLOAD) {
		argv[n++] = "--client-output-buffer-limit";
		argv[n++] = "pubsub 0 0 0";
	}
	argv[n] = NULL;
	if (bb_server_up(env, argv, "redis-server.log", &(bb_ready_t){.port = port, .timeout_s = 5.0},
	                 why, whylen) != 0)
		return -1;
	snprintf(env->ep[0], sizeof env->ep[0], "%d", port);
	return 0;
}

static int
s_up(bb_env_t *env, char *why, size_t whylen)
{
	return s_start(env, why, whylen, NULL);
}

static int
s_up_everysec(bb_env_t *env, char *why, size_t whylen)
{
	return s_start(env, why, whylen, "everysec");
}

static int
s_up_always(bb_env_t *env, char *why, size_t whylen)
{
	return s_start(env, why, whylen, "always");
}

/* ---- pub/sub links: one connection subscribed, one publishing ---- */

typedef struct {
	redisContext *in, *out;
	char chan_out[64];
	long unread; /* PUBLISH replies not read yet (pipelined) */
} s_rl_t;

static redisContext *
s_conn(const bb_env_t *env)
{
	struct timeval tv = {5, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", atoi(env->ep[0]), tv);
	if (c && c->err) {
		redisFree(c);
		return NULL;
	}
	return c;
}

static int
s_open(bb_link_t *l, const bb_env_t *env, const char *in_chan, const char *out_chan)
{
	s_rl_t *r = calloc(1, sizeof *r);
	if (!r)
		return -1;
	l->impl = r;
	if (out_chan) {
		snprintf(r->chan_out, sizeof r->chan_out, "%s", out_chan);
		if (!(r->out = s_conn(env)))
			return -1;
	}
	if (in_chan) {
		if (!(r->in = s_conn(env)))
			return -1;
		redisReply *rep = redisCommand(r->in, "SUBSCRIBE %s", in_chan);
		int ok = rep && rep->type == REDIS_REPLY_ARRAY; /* the server confirms: it is in force */
		freeReplyObject(rep);
		if (!ok)
			return -1;
	}
	return 0;
}

static int
s_serve(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen)
{
	snprintf(ep, eplen, "rx%d", (int)getpid());
	char back[80];
	snprintf(back, sizeof back, "%s.reply", ep);
	return s_open(l, env, ep, back);
}

static int
s_dial(bb_link_t *l, const bb_env_t *env, const char *ep)
{
	char back[80];
	snprintf(back, sizeof back, "%s.reply", ep);
	return s_open(l, env, back, ep);
}

static int
s_sub(bb_link_t *l, const bb_env_t *env)
{
	return s_open(l, env, "bench.fan", NULL);
}

static int
s_pub(bb_link_t *l, const bb_env_t *env)
{
	return s_open(l, env, NULL, "bench.fan");
}

/* Reads the replies of pipelined PUBLISHes: what has arrived, or (all)
 * every one still owed. */
static int
s_read_replies(s_rl_t *r, int all)
{
	while (r->unread > 0) {
		redisReply *rep = NULL;
		if (redisGetReplyFromReader(r->out, (void **)&rep) != REDIS_OK)
			return -1;
		if (rep) {
			freeReplyObject(rep);
			r->unread--;
			continue;
		}
		struct pollfd p = {.fd = r->out->fd, .events = POLLIN};
		if (poll(&p, 1, all ? (int)(BB_DEADLINE_S * 1000) : 0) != 1)
			return all ? -1 : 0;
		if (redisBufferRead(r->out) != REDIS_OK)
			return -1;
	}
	return 0;
}

static int
s_send(bb_link_t *l, const void *buf, size_t len)
{
	s_rl_t *r = l->impl;
	if (redisAppendCommand(r->out, "PUBLISH %s %b", r->chan_out, buf, len) != REDIS_OK)
		return -1;
	r->unread++;
	int pipelined = len > 0 && *(const char *)buf == BB_TAG_DATA &&
	                (l->scen == BB_THROUGHPUT || (l->scen >= BB_FANOUT1 && l->scen <= BB_FANOUT32) ||
	                 l->scen == BB_OVERLOAD);
	if (pipelined && r->unread < 256)
		return 0; /* written with the next batch */
	int done = 0;
	do {
		if (redisBufferWrite(r->out, &done) != REDIS_OK)
			return -1;
	} while (!done);
	/* ping-pong reads its reply now; a stream (latency-load too) reads what
	 * has come and waits only when 4096 are owed */
	return s_read_replies(r, l->scen == BB_LATENCY || l->scen == BB_BULK || r->unread >= 4096);
}

static long
s_recv(bb_link_t *l, void *buf, size_t cap, int timeout_ms)
{
	s_rl_t *r = l->impl;
	for (;;) {
		redisReply *rep = NULL;
		if (redisGetReplyFromReader(r->in, (void **)&rep) != REDIS_OK)
			return -1;
		if (!rep) {
			struct pollfd p = {.fd = r->in->fd, .events = POLLIN};
			if (poll(&p, 1, timeout_ms) != 1)
				return -1;
			if (redisBufferRead(r->in) != REDIS_OK)
				return -1;
			continue;
		}
		long rc = -2;
		if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 && rep->element[2]->type == REDIS_REPLY_STRING) {
			size_t n = rep->element[2]->len;
			rc = n <= cap ? (long)n : -1;
			if (rc >= 0)
				memcpy(buf, rep->element[2]->str, n);
		}
		freeReplyObject(rep);
		if (rc != -2)
			return rc;
	}
}

static void
s_close(bb_link_t *l)
{
	s_rl_t *r = l->impl;
	if (!r)
		return;
	if (r->out) {
		int done = 0;
		while (redisBufferWrite(r->out, &done) == REDIS_OK && !done)
			;
		(void)s_read_replies(r, 1);
		redisFree(r->out);
	}
	if (r->in)
		redisFree(r->in);
	free(r);
	l->impl = NULL;
}

static const bb_ops_t s_ops = {.serve = s_serve,
                               .dial = s_dial,
                               .sub = s_sub,
                               .pub = s_pub,
                               .send = s_send,
                               .recv = s_recv,
                               .close = s_close};

/* ---- streams: durable ---- */

#define S_WINDOW 4096

typedef struct {
	const bb_env_t *env;
	const bb_row_t *row;
	const char *how;
} s_x_arg_t;

static int
s_xadd_main(void *arg, int wfd)
{
	s_x_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	long n = bb_counts(a->env, BB_DURABLE, a->row->payload).n;
	size_t size = a->row->payload;
	double *t0 = calloc((size_t)n, sizeof *t0), *lat = calloc((size_t)n, sizeof *lat);
	char *body = calloc(1, size);
	redisContext *c = s_conn(a->env);
	long sent = 0, got = 0;
	double start = bb_now(), end = start + 3 * BB_DEADLINE_S;
	if (!t0 || !lat || !body || !c) {
		bb_fail(&res, "cannot connect to redis-server");
		goto out;
	}
	while (got < n && bb_now() < end) {
		while (sent < n && sent - got < S_WINDOW) {
			t0[sent] = bb_now();
			redisAppendCommand(c, "XADD bench * k %b", body, size);
			sent++;
		}
		redisReply *r = NULL;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
			bb_fail(&res, "XADD: %s", c->errstr);
			break;
		}
		if (r->type == REDIS_REPLY_ERROR) {
			bb_fail(&res, "XADD refused: %.60s", r->str);
			freeReplyObject(r);
			break;
		}
		freeReplyObject(r);
		lat[got] = (bb_now() - t0[got]) * 1e6;
		got++;
	}
	double dt = bb_now() - start;
	bb_latency_stats(&res, lat, (int)got);
	res.msgs_per_s = dt > 0 ? (double)got / dt : 0;
	res.sent = n;
	res.lost = n - got;
	if (got < n)
		bb_fail(&res, "only %ld of %ld acknowledged in time", got, n);
	snprintf(res.note, sizeof res.note, "pipelined XADD, %d in flight; appendfsync %s", S_WINDOW, a->how);
out:
	if (c)
		redisFree(c);
	free(t0);
	free(lat);
	free(body);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_xadd_run(bb_row_t *r, bb_env_t *env, const char *how)
{
	if (r->scen != BB_DURABLE)
		return 0;
	static s_x_arg_t a;
	a.env = env;
	a.row = r;
	a.how = how;
	int fd = -1;
	pid_t pid = bb_side_spawn(env->cpu_tx, s_xadd_main, &a, &fd);
	if (pid < 0)
		bb_fail(r, "fork");
	else if (bb_side_collect(pid, fd, 4 * BB_DEADLINE_S, r, BB_SIDE_TX) == 0)
		snprintf(r->status, sizeof r->status, "ok");
	return 1;
}

static int
s_run_everysec(bb_row_t *r, bb_env_t *env)
{
	return s_xadd_run(r, env, "everysec");
}

static int
s_run_always(bb_row_t *r, bb_env_t *env)
{
	return s_xadd_run(r, env, "always");
}

#define S_UP s_up
#define S_UP_EVERYSEC s_up_everysec
#define S_UP_ALWAYS s_up_always
#define S_OPS (&s_ops)
#define S_RUN_EVERYSEC s_run_everysec
#define S_RUN_ALWAYS s_run_always
#else
#define S_UP NULL
#define S_UP_EVERYSEC NULL
#define S_UP_ALWAYS NULL
#define S_OPS NULL
#define S_RUN_EVERYSEC NULL
#define S_RUN_ALWAYS NULL
#endif

static const char *
s_refuse(int scen, size_t payload)
{
	(void)scen;
	return payload > (64u << 20) ? "over what a pub/sub client buffers here (64 MiB)" : NULL;
}

const bb_transport_t bb_t_redis_pubsub = {
	.id = "redis-pubsub",
	.about = "Redis PUBLISH/SUBSCRIBE through redis-server on 127.0.0.1 (hiredis)",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_FANOUT1) | BB_S(BB_FANOUT8) | BB_S(BB_FANOUT32) |
	         BB_S(BB_OVERLOAD),
	.missing = s_missing,
	.up = S_UP,
	.refuse = s_refuse,
	.ops = S_OPS,
};

const bb_transport_t bb_t_redis_stream = {
	.id = "redis-stream",
	.about = "Redis XADD, appendonly yes, appendfsync everysec",
	.scens = BB_S(BB_DURABLE),
	.missing = s_missing,
	.up = S_UP_EVERYSEC,
	.run = S_RUN_EVERYSEC,
};

const bb_transport_t bb_t_redis_stream_fsync = {
	.id = "redis-stream-fsync",
	.about = "Redis XADD, appendonly yes, appendfsync always",
	.scens = BB_S(BB_DURABLE),
	.missing = s_missing,
	.up = S_UP_ALWAYS,
	.run = S_RUN_ALWAYS,
};

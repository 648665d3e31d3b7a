/*
 * t_nng.c - nng's pair1 protocol over ipc:// (Debian libnng-dev, which
 * ships no pkg-config file: meson finds the library and its header).
 * Latency, throughput and bulk through the generic drivers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bb.h"

#ifdef BB_HAVE_NNG
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

typedef struct {
	nng_socket s;
} s_nl_t;

static int
s_open(bb_link_t *l)
{
	s_nl_t *n = calloc(1, sizeof *n);
	if (!n)
		return -1;
	l->impl = n;
	if (nng_pair1_open(&n->s) != 0)
		return -1;
	/* no cap on what a message may be (the default is 1 MiB) */
	nng_socket_set_size(n->s, NNG_OPT_RECVMAXSZ, 0);
	nng_socket_set_ms(n->s, NNG_OPT_SENDTIMEO, (nng_duration)(BB_DEADLINE_S * 1000));
	return 0;
}

static int
s_serve(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen)
{
	snprintf(ep, eplen, "ipc://%s/nng-%d", env->dir, (int)getpid());
	return s_open(l) == 0 && nng_listen(((s_nl_t *)l->impl)->s, ep, NULL, 0) == 0 ? 0 : -1;
}

static int
s_dial(bb_link_t *l, const bb_env_t *env, const char *ep)
{
	(void)env;
	return s_open(l) == 0 && nng_dial(((s_nl_t *)l->impl)->s, ep, NULL, 0) == 0 ? 0 : -1;
}

static int
s_send(bb_link_t *l, const void *buf, size_t len)
{
	s_nl_t *n = l->impl;
	return nng_send(n->s, (void *)buf, len, 0) == 0 ? 0 : -1;
}

static long
s_recv(bb_link_t *l, void *buf, size_t cap, int timeout_ms)
{
	s_nl_t *n = l->impl;
	nng_socket_set_ms(n->s, NNG_OPT_RECVTIMEO, timeout_ms);
	size_t sz = cap;
	return nng_recv(n->s, buf, &sz, 0) == 0 ? (long)sz : -1;
}

static void
s_close(bb_link_t *l)
{
	s_nl_t *n = l->impl;
	if (!n)
		return;
	/* lets what is queued go out before the socket closes */
	usleep(l->scen == BB_THROUGHPUT ? 200000 : 0);
	nng_close(n->s);
	free(n);
	l->impl = NULL;
}

static const bb_ops_t s_ops = {
	.serve = s_serve, .dial = s_dial, .send = s_send, .recv = s_recv, .close = s_close};

#define S_OPS (&s_ops)
#define S_MISSING NULL
#else
#define S_OPS NULL

static const char *
s_missing_fn(void)
{
	return "not installed: libnng (Debian libnng-dev), at build time";
}
#define S_MISSING s_missing_fn
#endif

const bb_transport_t bb_t_nng_pair = {
	.id = "nng-pair",
	.about = "nng pair1 over ipc://",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_BULK),
	.missing = S_MISSING,
	.ops = S_OPS,
};

/*
 * t_uds.c - a plain Unix stream socket with a 4-byte length before each
 * message: the least any local transport can cost (uds).
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bb.h"

static int
s_serve(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int n = snprintf(a.sun_path, sizeof a.sun_path, "%s/uds-%d", env->dir, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof a.sun_path)
		return -1;
	unlink(a.sun_path);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0) {
		if (lfd >= 0)
			close(lfd);
		return -1;
	}
	l->fd = lfd; /* the listener, until accept() */
	snprintf(ep, eplen, "%s", a.sun_path);
	snprintf(l->peer, sizeof l->peer, "%s", a.sun_path);
	return 0;
}

static int
s_accept(bb_link_t *l, const bb_env_t *env)
{
	(void)env;
	struct pollfd p = {.fd = l->fd, .events = POLLIN};
	int fd = poll(&p, 1, (int)(BB_DEADLINE_S * 1000)) == 1 ? accept4(l->fd, NULL, NULL, SOCK_CLOEXEC) : -1;
	close(l->fd);
	unlink(l->peer);
	l->fd = fd;
	return fd >= 0 ? 0 : -1;
}

static int
s_dial(bb_link_t *l, const bb_env_t *env, const char *ep)
{
	(void)env;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(ep) >= sizeof a.sun_path)
		return -1;
	memcpy(a.sun_path, ep, strlen(ep) + 1);
	l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return l->fd >= 0 && connect(l->fd, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : -1;
}

static int
s_send(bb_link_t *l, const void *buf, size_t len)
{
	uint32_t hdr = (uint32_t)len;
	if (len > UINT32_MAX || bb_write_full(l->fd, &hdr, sizeof hdr) != 0)
		return -1;
	return bb_write_full(l->fd, buf, len);
}

/* Reads what the socket has (up to the staging buffer) without blocking,
 * polling only when it has nothing: one read() serves many small messages. */
typedef struct {
	size_t head, tail;
	char buf[256 << 10];
} s_rd_t;

static int
s_fill(bb_link_t *l, s_rd_t *r, double deadline)
{
	if (r->head > 0) {
		memmove(r->buf, r->buf + r->head, r->tail - r->head);
		r->tail -= r->head;
		r->head = 0;
	}
	for (;;) {
		ssize_t n = recv(l->fd, r->buf + r->tail, sizeof r->buf - r->tail, MSG_DONTWAIT);
		if (n > 0) {
			r->tail += (size_t)n;
			return 0;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			return -1;
		int left = (int)((deadline - bb_now()) * 1000);
		struct pollfd p = {.fd = l->fd, .events = POLLIN};
		if (left <= 0 || (poll(&p, 1, left) <= 0 && errno != EINTR))
			return -1;
	}
}

static long
s_recv(bb_link_t *l, void *buf, size_t cap, int timeout_ms)
{
	s_rd_t *r = l->impl;
	if (!r && !(r = l->impl = calloc(1, sizeof *r)))
		return -1;
	double deadline = bb_now() + timeout_ms / 1000.0;
	while (r->tail - r->head < sizeof(uint32_t))
		if (s_fill(l, r, deadline) != 0)
			return -1;
	uint32_t hdr;
	memcpy(&hdr, r->buf + r->head, sizeof hdr);
	if (hdr > cap)
		return -1;
	r->head += sizeof hdr;
	/* a message that has begun is read to its end: the staged part first,
	 * then straight into buf */
	size_t have = r->tail - r->head < hdr ? r->tail - r->head : hdr;
	memcpy(buf, r->buf + r->head, have);
	r->head += have;
	if (have < hdr && bb_read_full(l->fd, (char *)buf + have, hdr - have, bb_now() + BB_DEADLINE_S) != 0)
		return -1;
	return (long)hdr;
}

static void
s_close(bb_link_t *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	free(l->impl);
	l->impl = NULL;
}

static const bb_ops_t s_ops = {
	.serve = s_serve, .accept = s_accept, .dial = s_dial, .send = s_send, .recv = s_recv, .close = s_close};

const bb_transport_t bb_t_uds = {
	.id = "uds",
	.about = "a plain Unix stream socket, 4-byte length + message",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_BULK),
	.ops = &s_ops,
};

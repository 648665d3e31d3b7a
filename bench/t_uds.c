/*
 * t_uds.c - a plain Unix stream socket with a 4-byte length before each
 * message: the least any local transport can cost (uds).
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bb.h"

static int
s_io(int fd, void *buf, size_t len, int wr, int timeout_ms)
{
	char *p = buf;
	while (len > 0) {
		if (!wr) {
			struct pollfd pfd = {.fd = fd, .events = POLLIN};
			int rc = poll(&pfd, 1, timeout_ms);
			if (rc < 0 && errno == EINTR)
				continue;
			if (rc <= 0)
				return -1;
		}
		ssize_t n = wr ? write(fd, p, len) : read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

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
	if (len > UINT32_MAX || s_io(l->fd, &hdr, sizeof hdr, 1, 0) != 0)
		return -1;
	return s_io(l->fd, (void *)buf, len, 1, 0);
}

static long
s_recv(bb_link_t *l, void *buf, size_t cap, int timeout_ms)
{
	uint32_t hdr;
	if (s_io(l->fd, &hdr, sizeof hdr, 0, timeout_ms) != 0 || hdr > cap)
		return -1;
	return s_io(l->fd, buf, hdr, 0, timeout_ms) == 0 ? (long)hdr : -1;
}

static void
s_close(bb_link_t *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}

static const bb_ops_t s_ops = {
	.serve = s_serve, .accept = s_accept, .dial = s_dial, .send = s_send, .recv = s_recv, .close = s_close};

const bb_transport_t bb_t_uds = {
	.id = "uds",
	.about = "a plain Unix stream socket, 4-byte length + message",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_BULK),
	.ops = &s_ops,
};

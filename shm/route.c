/*
 * route.c - a direct route: two agents' pair of SPSC rings and one shared
 * doorbell socket, set up over a Unix socket in the runtime directory.
 *
 * A route joins two processes in both directions.  Each side creates the
 * ring it writes (ring.c: a sealed memfd) and hands it to the other, so
 * every ring has exactly the producer and consumer the ring layer expects.
 * The connected SOCK_SEQPACKET socket that carried the setup then serves
 * as the doorbell of both directions (doorbell.c): a side waiting for
 * records sets cons_wait in the ring it reads; a side that commits rings
 * when cons_wait in the ring it writes says the peer sleeps.  A full ring
 * is not waited on (the caller takes another path), so prod_wait is unused.
 *
 * Setup (rundir/shm/<listener>.sock, SO_PEERCRED checked on both sides):
 *   OFFER   connector -> acceptor, one datagram with its ring's fd:
 *             0  1  'R'
 *             1  1  version (1)
 *             2  1  name length n (1..64): the connector's agent name
 *             3  5  zero
 *             8  8  ring capacity
 *            16 16  token: the introduction the broker made (opaque here)
 *            32  n  name
 *   ANSWER  acceptor -> connector, one datagram with its ring's fd:
 *             0  1  'A'
 *             1  1  version (1)
 *             2  6  zero
 *             8  8  ring capacity
 * The acceptor reads the offer (bm_route_accept), lets its caller check
 * the token and the name, and answers (bm_route_answer) or closes.  The
 * connector sends the offer at once (bm_route_connect never waits for the
 * acceptor) and picks up the answer when the socket is readable
 * (bm_route_finish).  After that only doorbell datagrams ("D") travel.
 *
 * Records: type BM_ROUTE_REC (a mesh frame, opaque here), written by
 * bm_route_send as up to two pieces in one record.  Everything read from
 * the peer's ring is bounds-checked by ring.c; a failed check is
 * BM_ECORRUPT and the route is dead for good.  The peer's death is EOF on
 * the socket: BM_EPEER once every record it committed has been read.
 *
 * Threading: a route belongs to one thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "shm_private.h"

#define S_VERSION 1
#define S_OFFER_LEN 32

struct bm_route {
	int fd;                          /* the setup socket, then the doorbell */
	bm_ring_t *out;                  /* the ring we write (we created it) */
	bm_ring_t *in;                   /* the ring we read (the peer's), or NULL */
	bm__doorbell_t db;               /* over fd: mine = in's cons_wait */
	bool up;                         /* both rings mapped, doorbell set */
	bool dead;                       /* a failure seen: every call fails */
	int err;                         /* that failure */
	char peer[BM_ROUTE_NAME_MAX + 1]; /* the other agent's name */
	uint8_t token[BM_ROUTE_TOKEN];   /* acceptor: the token the offer carried */
	int spin_us;                     /* spin before sleeping (bm_route_wait) */
};

/* The listener's socket name for an agent: "rt." + name, or for a name
 * too long for that, its first 40 bytes and a hash of the whole. */
static void
s_listen_name(const char *name, char out[BM_CHANNEL_NAME_MAX + 1])
{
	size_t n = strlen(name);
	uint64_t h = UINT64_C(14695981039346656037);

	if (n + 3 <= BM_CHANNEL_NAME_MAX) {
		snprintf(out, BM_CHANNEL_NAME_MAX + 1, "rt.%s", name);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		h = (h ^ (uint8_t)name[i]) * UINT64_C(1099511628211);
	}
	snprintf(out, BM_CHANNEL_NAME_MAX + 1, "rt.%.40s.%016llx", name, (unsigned long long)h);
}

int
bm_route_listen(const char *rundir, const char *name, bm_listener_t **ret_l)
{
	char lname[BM_CHANNEL_NAME_MAX + 1];
	int fd, rc;

	if (ret_l == NULL || !bm__shm_name_ok(name)) {
		return ret_l == NULL ? -EINVAL : BM_EBADNAME;
	}
	s_listen_name(name, lname);
	if ((rc = bm_listener_open(rundir, lname, ret_l)) < 0) {
		return rc;
	}
	/* bm_route_accept never waits for a connection. */
	fd = bm_listener_fd(*ret_l);
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		rc = -errno;
		bm_listener_destroy(ret_l);
		return rc;
	}
	return 0;
}

static bm_route_t *
s_route_new(int fd)
{
	bm_route_t *r = calloc(1, sizeof *r);

	if (r != NULL) {
		r->fd = fd;
		r->spin_us = 0;
	}
	return r;
}

void
bm_route_destroy(bm_route_t **self_p)
{
	bm_route_t *r;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	r = *self_p;
	if (r->up) {
		bm__doorbell_fini(&r->db); /* closes fd */
	} else if (r->fd >= 0) {
		close(r->fd);
	}
	bm_ring_destroy(&r->out);
	bm_ring_destroy(&r->in);
	free(r);
	*self_p = NULL;
}

/* Sends a setup datagram with one fd. */
static int
s_send_fd(int fd, const void *buf, size_t len, int rfd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
	                     .msg_controllen = sizeof cbuf.buf};
	struct cmsghdr *c;
	ssize_t n;

	memset(&cbuf, 0, sizeof cbuf);
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &rfd, sizeof(int));
	do {
		n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		return (errno == EPIPE || errno == ECONNRESET || errno == EAGAIN) ? BM_EPEER : -errno;
	}
	return 0;
}

/* Receives one setup datagram (never blocks) and at most one fd:
 * returns its length, -EAGAIN, BM_EPEER (EOF, more than one fd, a cut
 * message). */
static int
s_recv_fd(int fd, void *buf, size_t cap, int *ret_fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 2)];
	} cbuf;
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
	                     .msg_controllen = sizeof cbuf.buf};
	int fds[2], nfds = 0;
	ssize_t n;

	*ret_fd = -1;
	do {
		n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : BM_EPEER;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (size_t i = 0; i < k && nfds < 2; i++) {
				memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			}
		}
	}
	if (n == 0 || nfds != 1 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		for (int i = 0; i < nfds; i++) {
			close(fds[i]);
		}
		return BM_EPEER;
	}
	*ret_fd = fds[0];
	return (int)n;
}

/* Maps the peer's ring fd as our inbound ring and starts the doorbell. */
static int
s_go_up(bm_route_t *r, int rfd, uint64_t cap)
{
	int rc = bm_ring_attach(rfd, &r->in);

	close(rfd);
	if (rc == 0 && bm_ring_capacity(r->in) != cap) {
		rc = BM_ECORRUPT;
	}
	if (rc < 0) {
		bm_ring_destroy(&r->in);
		return rc;
	}
	bm__doorbell_init(&r->db, r->fd, &bm__ring_hdr(r->in)->cons_wait,
	                  &bm__ring_hdr(r->out)->cons_wait, 0);
	r->up = true;
	return 0;
}

int
bm_route_connect(const char *rundir, const char *to, const char *as,
                 const uint8_t token[BM_ROUTE_TOKEN], size_t capacity, bm_route_t **ret_route)
{
	char lname[BM_CHANNEL_NAME_MAX + 1];
	uint8_t buf[S_OFFER_LEN + BM_ROUTE_NAME_MAX];
	struct sockaddr_un addr;
	size_t nlen = as ? strlen(as) : 0;
	uint64_t cap;
	bm_route_t *r;
	int fd, rc;

	if (ret_route == NULL || token == NULL || !bm__shm_name_ok(to) || !bm__shm_name_ok(as) ||
	    nlen > BM_ROUTE_NAME_MAX) {
		return -EINVAL;
	}
	s_listen_name(to, lname);
	if ((rc = bm__shm_sock_path(rundir, lname, false, &addr)) < 0 ||
	    (rc = bm_rundir_socket_check(addr.sun_path)) < 0) {
		return rc;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		return -errno;
	}
	/* A Unix connect completes at once or fails (a full backlog:
	 * EAGAIN); it never waits for the acceptor's accept(). */
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		rc = errno == EAGAIN ? BM_EFULL : -errno;
		close(fd);
		return rc;
	}
	if ((rc = bm__shm_check_peer(fd)) < 0 || (r = s_route_new(fd)) == NULL) {
		close(fd);
		return rc < 0 ? rc : -ENOMEM;
	}
	snprintf(r->peer, sizeof r->peer, "%s", to);
	if ((rc = bm_ring_create(capacity, 0, &r->out)) < 0) {
		bm_route_destroy(&r);
		return rc;
	}
	cap = bm_ring_capacity(r->out);
	memset(buf, 0, S_OFFER_LEN);
	buf[0] = 'R';
	buf[1] = S_VERSION;
	buf[2] = (uint8_t)nlen;
	memcpy(buf + 8, &cap, 8);
	memcpy(buf + 16, token, BM_ROUTE_TOKEN);
	memcpy(buf + S_OFFER_LEN, as, nlen);
	if ((rc = s_send_fd(fd, buf, S_OFFER_LEN + nlen, bm_ring_fd(r->out))) < 0) {
		bm_route_destroy(&r);
		return rc;
	}
	*ret_route = r;
	return 0;
}

int
bm_route_finish(bm_route_t *r)
{
	uint8_t buf[16];
	uint64_t cap;
	int n, rfd, rc;

	if (r == NULL) {
		return -EINVAL;
	}
	if (r->up) {
		return 1;
	}
	if (r->dead) {
		return r->err;
	}
	n = s_recv_fd(r->fd, buf, sizeof buf, &rfd);
	if (n == -EAGAIN) {
		return 0;
	}
	rc = n;
	if (n >= 0) {
		rc = (n == 16 && buf[0] == 'A') ? 0 : BM_EPEER;
		if (rc == 0 && buf[1] != S_VERSION) {
			rc = BM_EVERSION;
		}
		memcpy(&cap, buf + 8, 8);
		if (rc == 0) {
			rc = s_go_up(r, rfd, cap); /* closes rfd */
			rfd = -1;
		}
		if (rfd >= 0) {
			close(rfd);
		}
	}
	if (rc < 0) {
		r->dead = true;
		r->err = rc;
		return rc;
	}
	return 1;
}

int
bm_route_accept(bm_listener_t *l, bm_route_t **ret_route)
{
	uint8_t buf[S_OFFER_LEN + BM_ROUTE_NAME_MAX + 1];
	struct pollfd p;
	uint64_t cap;
	bm_route_t *r;
	int cfd, rfd = -1, n, rc;

	if (l == NULL || ret_route == NULL) {
		return -EINVAL;
	}
	cfd = accept4(bm_listener_fd(l), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (cfd < 0) {
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -errno;
	}
	if ((rc = bm__shm_check_peer(cfd)) < 0) {
		close(cfd);
		return rc;
	}
	/* The connector sent its offer right after connect(): it is queued
	 * already, or arrives within moments.  Bounded wait: 20 ms (a
	 * connector that sends nothing costs its acceptor no more). */
	p = (struct pollfd){.fd = cfd, .events = POLLIN};
	if (poll(&p, 1, 20) <= 0) {
		close(cfd);
		return BM_EPEER;
	}
	n = s_recv_fd(cfd, buf, sizeof buf, &rfd);
	rc = n < 0 ? (n == -EAGAIN ? BM_EPEER : n) : 0;
	if (rc == 0 && (n < S_OFFER_LEN + 1 || buf[0] != 'R' || buf[2] < 1 ||
	                buf[2] > BM_ROUTE_NAME_MAX || n != S_OFFER_LEN + buf[2])) {
		rc = BM_EPEER;
	}
	if (rc == 0 && buf[1] != S_VERSION) {
		rc = BM_EVERSION;
	}
	if (rc == 0 && (r = s_route_new(cfd)) == NULL) {
		rc = -ENOMEM;
	}
	if (rc < 0) {
		if (rfd >= 0) {
			close(rfd);
		}
		close(cfd);
		return rc;
	}
	memcpy(r->peer, buf + S_OFFER_LEN, buf[2]);
	r->peer[buf[2]] = '\0';
	memcpy(r->token, buf + 16, BM_ROUTE_TOKEN);
	memcpy(&cap, buf + 8, 8);
	if (!bm__shm_name_ok(r->peer)) {
		close(rfd);
		bm_route_destroy(&r);
		return BM_EPEER;
	}
	/* Map the offered ring now: a bad one fails before anybody answers. */
	rc = bm_ring_attach(rfd, &r->in);
	close(rfd);
	if (rc == 0 && bm_ring_capacity(r->in) != cap) {
		rc = BM_ECORRUPT;
	}
	if (rc < 0) {
		bm_route_destroy(&r);
		return rc;
	}
	*ret_route = r;
	return 0;
}

const char *
bm_route_peer(const bm_route_t *r)
{
	return r ? r->peer : NULL;
}

const uint8_t *
bm_route_token(const bm_route_t *r)
{
	return r ? r->token : NULL;
}

int
bm_route_answer(bm_route_t *r, size_t capacity)
{
	uint8_t buf[16] = {'A', S_VERSION};
	uint64_t cap;
	int rc;

	if (r == NULL || r->up || r->in == NULL || r->out != NULL) {
		return -EINVAL;
	}
	if ((rc = bm_ring_create(capacity, 0, &r->out)) < 0) {
		return rc;
	}
	cap = bm_ring_capacity(r->out);
	memcpy(buf + 8, &cap, 8);
	if ((rc = s_send_fd(r->fd, buf, sizeof buf, bm_ring_fd(r->out))) < 0) {
		return rc;
	}
	bm__doorbell_init(&r->db, r->fd, &bm__ring_hdr(r->in)->cons_wait,
	                  &bm__ring_hdr(r->out)->cons_wait, 0);
	r->up = true;
	return 0;
}

bool
bm_route_up(const bm_route_t *r)
{
	return r != NULL && r->up && !r->dead;
}

int
bm_route_fd(const bm_route_t *r)
{
	return r ? r->fd : -1;
}

/* A failure that ends the route: sticky. */
static int
s_fail(bm_route_t *r, int rc)
{
	if (rc == BM_ECORRUPT || rc == BM_EPEER) {
		r->dead = true;
		r->err = rc;
	}
	return rc;
}

int
bm_route_send(bm_route_t *r, const void *a, size_t alen, const void *b, size_t blen)
{
	void *p;
	int rc;

	if (r == NULL || (alen > 0 && a == NULL) || (blen > 0 && b == NULL)) {
		return -EINVAL;
	}
	if (!r->up || r->dead) {
		return r->dead ? r->err : -ENOTCONN;
	}
	if (r->db.dead) {
		return s_fail(r, BM_EPEER);
	}
	if ((rc = bm_ring_reserve(r->out, alen + blen, &p)) < 0) {
		return s_fail(r, rc);
	}
	memcpy(p, a, alen);
	if (blen > 0) {
		memcpy((uint8_t *)p + alen, b, blen);
	}
	if ((rc = bm_ring_commit(r->out, BM_ROUTE_REC, alen + blen)) < 0) {
		return rc;
	}
	return s_fail(r, bm__doorbell_ring(&r->db));
}

int
bm_route_peek(bm_route_t *r, bm_ring_rec_t *ret_rec)
{
	int rc;

	if (r == NULL || ret_rec == NULL) {
		return -EINVAL;
	}
	if (!r->up || r->dead) {
		return r->dead ? r->err : -EAGAIN;
	}
	rc = bm_ring_peek(r->in, ret_rec);
	if (rc == -EAGAIN && bm__doorbell_peer_gone(&r->db)) {
		/* Records committed before a death are read first. */
		rc = bm_ring_peek(r->in, ret_rec);
		if (rc == -EAGAIN) {
			rc = BM_EPEER;
		}
	}
	if (rc == -EAGAIN) {
		return rc;
	}
	if (rc == 0 && ret_rec->type != BM_ROUTE_REC) {
		rc = BM_ECORRUPT;
	}
	return rc < 0 ? s_fail(r, rc) : 0;
}

int
bm_route_release(bm_route_t *r)
{
	if (r == NULL || !r->up) {
		return -EINVAL;
	}
	return bm_ring_release(r->in);
}

static bool
s_readable(void *arg)
{
	return bm__ring_readable(arg);
}

int
bm_route_arm(bm_route_t *r)
{
	int rc;

	if (r == NULL) {
		return -EINVAL;
	}
	if (!r->up) {
		return r->dead ? 1 : 0;
	}
	if (r->dead) {
		return 1; /* the caller should look: it finds the failure */
	}
	rc = bm__doorbell_arm(&r->db, s_readable, r->in);
	if (rc < 0 || r->db.dead) {
		return 1;
	}
	return rc;
}

bool
bm_route_readable(bm_route_t *r)
{
	return r != NULL && r->up && !r->dead && bm__ring_readable(r->in);
}

void
bm_route_disarm(bm_route_t *r)
{
	if (r != NULL && r->up && !r->dead) {
		(void)bm__doorbell_drain(&r->db);
	}
}

size_t
bm_route_max_record(const bm_route_t *r)
{
	return r != NULL && r->out != NULL ? bm_ring_max_record(r->out) : 0;
}

uint8_t *
bm__route_out_base(bm_route_t *r, size_t *ret_len)
{
	struct bm__ring_hdr *h;

	if (r == NULL || r->out == NULL) {
		return NULL;
	}
	h = bm__ring_hdr(r->out);
	*ret_len = BM__RING_HDR_SIZE + bm_ring_capacity(r->out);
	return (uint8_t *)h;
}

/*
 * channel.c - setting up a bulk channel and its blocking calls.
 *
 * Setup: the consumer listens on <rundir>/shm/<name>.sock (SOCK_SEQPACKET,
 * in a 0700 directory).  A producer connects; each side checks the other's
 * SO_PEERCRED uid against its own.  The producer creates the ring (ring.c:
 * a sealed memfd, or an unlinked shm_open object) and sends the HELLO
 * message with the ring's fd attached (SCM_RIGHTS); the consumer validates
 * and maps it and answers OK.  From then on the same socket is the
 * channel's doorbell (doorbell.c) and carries blob fds (blob.c).
 *
 * Setup messages (one datagram each, little-endian):
 *   HELLO  producer → consumer, with the ring fd:
 *            0  1  'H'
 *            1  1  version (1)
 *            2  1  name length n (0..64)
 *            3  1  zero
 *            4  4  zero
 *            8  8  ring capacity
 *           16  n  producer name
 *   OK     consumer → producer: 'K' (1 byte)
 *
 * A listener whose socket file exists but nobody accepts on it (its
 * process died) is taken over: bind fails with EADDRINUSE, a probe
 * connect gets ECONNREFUSED, the file is unlinked and bound again.  A live
 * listener answers the probe: BM_ENAMETAKEN.
 *
 * Blocking calls combine the non-blocking ring with the doorbell's wait;
 * every wait has a deadline and notices the peer's death.
 *
 * Threading: a channel end belongs to one thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "shm_private.h"

#define S_DEFAULT_CAPACITY ((size_t)4 << 20)
#define S_DEFAULT_SPIN_US 50
#define S_SETUP_VERSION 1

struct bm_listener {
	int fd;                        /* listening socket */
	char path[BM_PATH_MAX];        /* its file, unlinked on destroy */
};

struct bm_channel {
	bm_ring_t *ring;               /* the shared ring */
	bm__doorbell_t db;             /* socket + waiting words */
	bool producer;                 /* which end this is */
	size_t want;                   /* producer: bytes a waiting reserve needs */
	uint64_t blob_next;            /* producer: id of the next blob */
	uint64_t bad_seen;             /* producer: blob_bad already reported */
	char peer[BM_CHANNEL_NAME_MAX + 1]; /* producer's name */
	uint64_t max_blob;             /* consumer: streamed blob size cap */
};

bool
bm__shm_name_ok(const char *name)
{
	size_t n;

	if (name == NULL || name[0] == '\0' || name[0] == '.') {
		return false;
	}
	n = strlen(name);
	if (n > BM_CHANNEL_NAME_MAX) {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-')) {
			return false;
		}
	}
	return true;
}

int
bm__shm_sock_path(const char *rundir, const char *name, bool create, struct sockaddr_un *ret_addr)
{
	char dir[BM_PATH_MAX], sub[BM_PATH_MAX];
	struct stat st;
	int rc, n;

	if (!bm__shm_name_ok(name)) {
		return BM_EBADNAME;
	}
	if ((rc = bm_rundir_resolve(rundir, create, dir)) < 0) {
		return rc;
	}
	n = snprintf(sub, sizeof sub, "%s/shm", dir);
	if (n < 0 || (size_t)n >= sizeof sub) {
		return -ENAMETOOLONG;
	}
	if (create && mkdir(sub, 0700) < 0 && errno != EEXIST) {
		return -errno;
	}
	if (lstat(sub, &st) < 0) {
		return -errno;
	}
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077) != 0) {
		return BM_EUNSAFEDIR;
	}
	memset(ret_addr, 0, sizeof *ret_addr);
	ret_addr->sun_family = AF_UNIX;
	n = snprintf(ret_addr->sun_path, sizeof ret_addr->sun_path, "%s/%s.sock", sub, name);
	if (n < 0 || (size_t)n >= sizeof ret_addr->sun_path) {
		return -ENAMETOOLONG;
	}
	return 0;
}

int
bm__shm_check_peer(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof cred;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		return -errno;
	}
	if (cred.uid != getuid()) {
		bm_debug("channel: peer uid %u is not ours", (unsigned)cred.uid);
		return BM_EDENIED;
	}
	return 0;
}

/* Waits for fd to become readable: 0, -ETIMEDOUT, -errno. */
static int
s_wait_in(int fd, int64_t deadline_ns)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int rc, ms;

	for (;;) {
		if (deadline_ns < 0) {
			ms = -1;
		} else {
			int64_t left = deadline_ns - bm_mono_ns();

			ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
		}
		rc = poll(&p, 1, ms);
		if (rc > 0) {
			return 0;
		}
		if (rc == 0) {
			return -ETIMEDOUT;
		}
		if (errno != EINTR) {
			return -errno;
		}
	}
}

int
bm_listener_open(const char *rundir, const char *name, bm_listener_t **ret_l)
{
	struct sockaddr_un addr;
	bm_listener_t *self;
	int fd, probe, rc;

	if (ret_l == NULL) {
		return -EINVAL;
	}
	if ((rc = bm__shm_sock_path(rundir, name, true, &addr)) < 0) {
		return rc;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -errno;
	}
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		if (errno != EADDRINUSE) {
			rc = -errno;
			close(fd);
			return rc;
		}
		probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (probe < 0) {
			rc = -errno;
			close(fd);
			return rc;
		}
		rc = connect(probe, (struct sockaddr *)&addr, sizeof addr);
		rc = rc == 0 ? 0 : -errno;
		close(probe);
		if (rc == 0) {
			close(fd);
			return BM_ENAMETAKEN;
		}
		if (rc != -ECONNREFUSED) {
			close(fd);
			return rc;
		}
		/* Stale: its listener died without unlinking. */
		unlink(addr.sun_path);
		if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
			rc = errno == EADDRINUSE ? BM_ENAMETAKEN : -errno;
			close(fd);
			return rc;
		}
	}
	if (listen(fd, 16) < 0) {
		rc = -errno;
		unlink(addr.sun_path);
		close(fd);
		return rc;
	}
	self = calloc(1, sizeof *self);
	if (self == NULL) {
		unlink(addr.sun_path);
		close(fd);
		return -ENOMEM;
	}
	self->fd = fd;
	snprintf(self->path, sizeof self->path, "%s", addr.sun_path);
	*ret_l = self;
	return 0;
}

void
bm_listener_destroy(bm_listener_t **self_p)
{
	bm_listener_t *self;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	self = *self_p;
	if (self->fd >= 0) {
		unlink(self->path);
		close(self->fd);
	}
	free(self);
	*self_p = NULL;
}

int
bm_listener_fd(const bm_listener_t *self)
{
	return self ? self->fd : -EINVAL;
}

static int
s_spin(const bm_channel_opts_t *opts)
{
	return (opts == NULL || opts->spin_us < 0) ? S_DEFAULT_SPIN_US : opts->spin_us;
}

static bm_channel_t *
s_channel_new(bm_ring_t *ring, int fd, bool producer, int spin_us)
{
	bm_channel_t *self = calloc(1, sizeof *self);
	struct bm__ring_hdr *hdr;

	if (self == NULL) {
		return NULL;
	}
	hdr = bm__ring_hdr(ring);
	self->ring = ring;
	self->producer = producer;
	self->blob_next = 1;
	if (producer) {
		bm__doorbell_init(&self->db, fd, &hdr->prod_wait, &hdr->cons_wait, spin_us);
	} else {
		bm__doorbell_init(&self->db, fd, &hdr->cons_wait, &hdr->prod_wait, spin_us);
	}
	return self;
}

/* Consumer: reads the HELLO and its fd. */
static int
s_recv_hello(int cfd, int64_t deadline_ns, char *ret_name, uint64_t *ret_cap, int *ret_fd)
{
	uint8_t buf[16 + BM_CHANNEL_NAME_MAX];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 2)];
	} cbuf;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
	                     .msg_controllen = sizeof cbuf.buf};
	int fds[2], nfds = 0, rc;
	ssize_t n;

	if ((rc = s_wait_in(cfd, deadline_ns)) < 0) {
		return rc;
	}
	do {
		n = recvmsg(cfd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		return errno == EAGAIN ? BM_EPEER : -errno;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (size_t i = 0; i < k && nfds < 2; i++) {
				memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			}
		}
	}
	rc = 0;
	if (n < 16 || buf[0] != 'H' || nfds != 1 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
	    buf[2] > BM_CHANNEL_NAME_MAX || (size_t)n != 16u + buf[2]) {
		rc = BM_EPEER;
	} else if (buf[1] != S_SETUP_VERSION) {
		rc = BM_EVERSION;
	}
	if (rc == 0) {
		memcpy(ret_name, buf + 16, buf[2]);
		ret_name[buf[2]] = '\0';
		if (buf[2] > 0 && !bm__shm_name_ok(ret_name)) {
			rc = BM_EBADNAME;
		}
		memcpy(ret_cap, buf + 8, 8);
		*ret_fd = fds[0];
		nfds = 0;
	}
	for (int i = 0; i < nfds; i++) {
		close(fds[i]);
	}
	return rc;
}

int
bm_listener_accept(bm_listener_t *self, int timeout_ms, const bm_channel_opts_t *opts,
                   bm_channel_t **ret_ch)
{
	int64_t deadline = bm__deadline(timeout_ms);
	char name[BM_CHANNEL_NAME_MAX + 1];
	bm_ring_t *ring = NULL;
	bm_channel_t *ch = NULL;
	uint64_t cap = 0;
	int cfd, rfd = -1, rc;

	if (self == NULL || ret_ch == NULL) {
		return -EINVAL;
	}
	if (timeout_ms != 0 && (rc = s_wait_in(self->fd, deadline)) < 0) {
		return rc;
	}
	cfd = accept4(self->fd, NULL, NULL, SOCK_CLOEXEC | (timeout_ms == 0 ? SOCK_NONBLOCK : 0));
	if (cfd < 0) {
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
	}
	if (timeout_ms == 0) {
		fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) & ~O_NONBLOCK);
		deadline = bm__deadline(1000);
	}
	if ((rc = bm__shm_check_peer(cfd)) < 0) {
		close(cfd);
		return rc;
	}
	if ((rc = s_recv_hello(cfd, deadline, name, &cap, &rfd)) < 0) {
		close(cfd);
		return rc;
	}
	rc = bm_ring_attach(rfd, &ring);
	close(rfd);
	if (rc == 0 && bm_ring_capacity(ring) != cap) {
		rc = BM_ECORRUPT;
	}
	if (rc == 0 && send(cfd, "K", 1, MSG_NOSIGNAL) != 1) {
		rc = BM_EPEER;
	}
	if (rc == 0 && (ch = s_channel_new(ring, cfd, false, s_spin(opts))) != NULL) {
		ch->max_blob = opts && opts->max_blob ? opts->max_blob : BM_BLOB_MAX_DEFAULT;
	}
	if (rc == 0 && ch == NULL) {
		rc = -ENOMEM;
	}
	if (rc < 0) {
		bm_ring_destroy(&ring);
		close(cfd);
		return rc;
	}
	snprintf(ch->peer, sizeof ch->peer, "%s", name);
	*ret_ch = ch;
	return 0;
}

static int
s_send_hello(int fd, bm_ring_t *ring, const char *as)
{
	uint8_t buf[16 + BM_CHANNEL_NAME_MAX];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	size_t nlen = as ? strlen(as) : 0;
	uint64_t cap = bm_ring_capacity(ring);
	int rfd = bm_ring_fd(ring);
	struct iovec iov = {.iov_base = buf, .iov_len = 16 + nlen};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
	                     .msg_controllen = sizeof cbuf.buf};
	struct cmsghdr *c;

	memset(buf, 0, 16);
	memset(&cbuf, 0, sizeof cbuf);
	buf[0] = 'H';
	buf[1] = S_SETUP_VERSION;
	buf[2] = (uint8_t)nlen;
	memcpy(buf + 8, &cap, 8);
	if (nlen > 0) {
		memcpy(buf + 16, as, nlen);
	}
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &rfd, sizeof(int));
	if (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) {
		return errno == EPIPE || errno == ECONNRESET ? BM_EPEER : -errno;
	}
	return 0;
}

int
bm_channel_connect(const char *rundir, const char *to, const char *as,
                   const bm_channel_opts_t *opts, int timeout_ms, bm_channel_t **ret_ch)
{
	int64_t deadline = bm__deadline(timeout_ms);
	struct sockaddr_un addr;
	bm_ring_t *ring = NULL;
	bm_channel_t *ch = NULL;
	size_t cap = (opts && opts->capacity) ? opts->capacity : S_DEFAULT_CAPACITY;
	char ok = 0;
	int fd, rc;

	if (ret_ch == NULL || (as != NULL && *as != '\0' && !bm__shm_name_ok(as))) {
		return as != NULL && ret_ch != NULL ? BM_EBADNAME : -EINVAL;
	}
	if ((rc = bm__shm_sock_path(rundir, to, false, &addr)) < 0 ||
	    (rc = bm_rundir_socket_check(addr.sun_path)) < 0) {
		return rc;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -errno;
	}
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	rc = bm__shm_check_peer(fd);
	if (rc == 0) {
		rc = bm_ring_create(cap, opts ? opts->flags : 0, &ring);
	}
	if (rc == 0) {
		rc = s_send_hello(fd, ring, as);
	}
	if (rc == 0) {
		rc = s_wait_in(fd, deadline < 0 ? -1 : (timeout_ms == 0 ? bm__deadline(1000) : deadline));
	}
	if (rc == 0) {
		ssize_t n = recv(fd, &ok, 1, MSG_DONTWAIT);

		rc = (n == 1 && ok == 'K') ? 0 : BM_EPEER;
	}
	if (rc == 0 && (ch = s_channel_new(ring, fd, true, s_spin(opts))) == NULL) {
		rc = -ENOMEM;
	}
	if (rc < 0) {
		bm_ring_destroy(&ring);
		close(fd);
		return rc;
	}
	snprintf(ch->peer, sizeof ch->peer, "%s", to);
	*ret_ch = ch;
	return 0;
}

void
bm_channel_destroy(bm_channel_t **self_p)
{
	bm_channel_t *self;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	self = *self_p;
	bm__doorbell_fini(&self->db);
	bm_ring_destroy(&self->ring);
	free(self);
	*self_p = NULL;
}

const char *
bm_channel_peer_name(const bm_channel_t *self)
{
	return self ? self->peer : "";
}

bool
bm_channel_is_producer(const bm_channel_t *self)
{
	return self && self->producer;
}

bm_ring_t *
bm_channel_ring(bm_channel_t *self)
{
	return self ? self->ring : NULL;
}

int
bm_channel_fd(const bm_channel_t *self)
{
	return self ? self->db.fd : -EINVAL;
}

static bool
s_readable(void *arg)
{
	bm_channel_t *self = arg;

	return bm__ring_readable(self->ring);
}

static bool
s_writable(void *arg)
{
	bm_channel_t *self = arg;

	return bm__ring_writable(self->ring, self->want);
}

int
bm_channel_arm(bm_channel_t *self)
{
	if (self == NULL) {
		return -EINVAL;
	}
	if (self->producer) {
		self->want = 0;
		return bm__doorbell_arm(&self->db, s_writable, self);
	}
	/* Room freed by a skipped wrap record must reach a waiting producer. */
	(void)bm__doorbell_ring(&self->db);
	return bm__doorbell_arm(&self->db, s_readable, self);
}

int
bm_channel_reserve(bm_channel_t *self, size_t len, int timeout_ms, void **ret_ptr)
{
	int64_t deadline = bm__deadline(timeout_ms);
	int rc;

	if (self == NULL || !self->producer) {
		return -EINVAL;
	}
	for (;;) {
		rc = bm_ring_reserve(self->ring, len, ret_ptr);
		if (rc != BM_EFULL) {
			return rc;
		}
		/* We may just have published a wrap record the consumer must
		 * skip before our record fits: wake it if it sleeps. */
		if ((rc = bm__doorbell_ring(&self->db)) < 0) {
			return rc;
		}
		self->want = len;
		rc = bm__doorbell_wait(&self->db, s_writable, self, deadline);
		if (rc == -ETIMEDOUT && timeout_ms == 0) {
			return BM_EFULL;
		}
		if (rc < 0) {
			return rc;
		}
	}
}

int
bm_channel_commit(bm_channel_t *self, uint32_t type, size_t len)
{
	int rc;

	if (self == NULL || !self->producer) {
		return -EINVAL;
	}
	if ((rc = bm_ring_commit(self->ring, type, len)) < 0) {
		return rc;
	}
	return bm__doorbell_ring(&self->db);
}

typedef struct {
	bm_channel_t *ch;     /* the consumer end */
	bm_ring_rec_t *rec;   /* where the record goes */
} s_peek_t;

static int
s_try_peek(void *arg)
{
	s_peek_t *p = arg;
	int rc = bm_ring_peek(p->ch->ring, p->rec);

	/* A skipped wrap record freed room: a producer waiting for it must
	 * hear.  A dead producer ends the read only once nothing is left. */
	if (rc != -EAGAIN) {
		return rc;
	}
	if ((rc = bm__doorbell_ring(&p->ch->db)) < 0 && !bm__ring_readable(p->ch->ring)) {
		return rc;
	}
	return -EAGAIN;
}

int
bm_channel_peek(bm_channel_t *self, int timeout_ms, bm_ring_rec_t *ret_rec)
{
	s_peek_t p = {.ch = self, .rec = ret_rec};

	if (self == NULL || self->producer) {
		return -EINVAL;
	}
	return bm__doorbell_read(&self->db, s_try_peek, &p, s_readable, self, timeout_ms);
}

int
bm_channel_release(bm_channel_t *self)
{
	int rc;

	if (self == NULL || self->producer) {
		return -EINVAL;
	}
	if ((rc = bm_ring_release(self->ring)) < 0) {
		return rc;
	}
	/* A dead producer is not the consumer's error here: it still reads
	 * what was committed, and learns of the death at the next peek. */
	(void)bm__doorbell_ring(&self->db);
	return 0;
}

int
bm_channel_send(bm_channel_t *self, uint32_t type, const void *buf, size_t len, int timeout_ms)
{
	void *p;
	int rc;

	if (buf == NULL && len > 0) {
		return -EINVAL;
	}
	if ((rc = bm_channel_reserve(self, len, timeout_ms, &p)) < 0) {
		return rc;
	}
	if (len > 0) {
		memcpy(p, buf, len);
	}
	return bm_channel_commit(self, type, len);
}

int
bm_channel_recv(bm_channel_t *self, void *buf, size_t size, int timeout_ms, bm_ring_rec_t *ret_rec)
{
	bm_ring_rec_t rec;
	int rc;

	if ((rc = bm_channel_peek(self, timeout_ms, &rec)) < 0) {
		return rc;
	}
	if (rec.len > size || (buf == NULL && rec.len > 0)) {
		if (ret_rec != NULL) {
			*ret_rec = rec;
		}
		return -EMSGSIZE;
	}
	if (rec.len > 0) {
		memcpy(buf, rec.data, rec.len);
	}
	if (ret_rec != NULL) {
		*ret_rec = rec;
		ret_rec->data = buf;
	}
	return bm_channel_release(self);
}

bm__doorbell_t *
bm__channel_doorbell(bm_channel_t *ch)
{
	return &ch->db;
}

uint64_t
bm__channel_next_blob_id(bm_channel_t *ch)
{
	return ch->blob_next++;
}

uint64_t *
bm__channel_bad_seen(bm_channel_t *ch)
{
	return &ch->bad_seen;
}

uint64_t
bm__channel_blobs_sent(const bm_channel_t *ch)
{
	return ch->blob_next - 1;
}

uint64_t
bm__channel_max_blob(const bm_channel_t *ch)
{
	return ch->max_blob ? ch->max_blob : BM_BLOB_MAX_DEFAULT;
}

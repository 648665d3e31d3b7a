/*
 * doorbell.c - waking a sleeping peer through a Unix socket, without a
 * system call while the peer is awake.
 *
 * Each channel has one connected SOCK_SEQPACKET socket pair (the
 * consumer's accepted socket and the producer's connected one) and two
 * waiting words in the ring header: cons_wait (the consumer sleeps for
 * data) and prod_wait (the producer sleeps for room or a blob
 * confirmation).  A side owns "mine" and rings "theirs".
 *
 * States of a waiting word: IDLE (awake), WAITING (asleep or about to
 * be), NOTIFIED (the peer claimed the wake-up and sends, or has sent,
 * exactly one "D" datagram).  Only the owner moves IDLE→WAITING and
 * anything→IDLE; only the peer moves WAITING→NOTIFIED, by compare-and-swap.
 *
 * Waiter:                              Ringer (after publishing):
 *   W1 store mine = WAITING (seq_cst)    R1 store head/tail (seq_cst)
 *   W2 load ready? (seq_cst)             R2 load theirs (seq_cst)
 *   W3 not ready: poll(fd)               R3 if WAITING: CAS → NOTIFIED,
 *   W4 exchange mine → IDLE;                send one "D"
 *      saw NOTIFIED: one "D" is owed
 *
 * No lost wake-up: W1/W2 and R1/R2 are seq_cst accesses to two locations
 * on each side, the store-buffering pattern, which C11's single total
 * order over seq_cst operations forbids from both reading the old value.
 * So either the waiter's W2 sees the publication (it does not sleep) or the
 * ringer's R2 sees WAITING (it rings, and the datagram makes poll return).
 * On x86 the seq_cst stores compile to XCHG, a full barrier, so the fast
 * path costs one locked instruction and no system call.
 *
 * At most one datagram in flight per direction: a "D" is sent only on the
 * WAITING→NOTIFIED transition, and the waiter does not set WAITING again
 * until it has read the datagram it is owed (W4 counts it in `owed`; a
 * later wait first reads it, a few microseconds at most since the ringer
 * sends right after its CAS).  A socket queue holds about ten datagrams;
 * a doorbell that sent one per record would fill it and lose wake-ups.
 *
 * The socket also carries "F"+id messages with one fd (SCM_RIGHTS) from
 * producer to consumer for blobs sent as sealed memfds; they are stashed
 * here until blob.c takes them.  Peer death is EOF/POLLHUP on the socket,
 * seen by the next wait; a record committed before the death is still
 * delivered first.
 *
 * Threading: a doorbell belongs to one thread.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shm_private.h"

#define S_MAX_MSG 16

static inline void
s_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

int64_t
bm__deadline(int timeout_ms)
{
	if (timeout_ms < 0) {
		return -1;
	}
	if (timeout_ms == 0) {
		return 0;
	}
	return bm_mono_ns() + (int64_t)timeout_ms * 1000000;
}

int
bm__doorbell_read(bm__doorbell_t *db, bm__try_fn try_fn, void *try_arg, bm__ready_fn ready,
                  void *arg, int timeout_ms)
{
	int64_t deadline = bm__deadline(timeout_ms);

	for (;;) {
		int rc = try_fn(try_arg);

		if (rc != -EAGAIN) {
			return rc;
		}
		/* Nothing read.  A poll returns now — with the hang-up, if that
		 * is what woke the caller's poll loop; a wait ends at its
		 * deadline, also when the ring or log looks readable but every
		 * try was undone (a peer moving under us, or a hostile one). */
		if (timeout_ms == 0) {
			return bm__doorbell_peer_gone(db) && !ready(arg) ? BM_EPEER : -EAGAIN;
		}
		if (deadline > 0 && bm_mono_ns() >= deadline) {
			return -ETIMEDOUT;
		}
		if ((rc = bm__doorbell_wait(db, ready, arg, deadline)) < 0) {
			return rc;
		}
	}
}

static int
s_remaining_ms(int64_t deadline_ns)
{
	int64_t left;

	if (deadline_ns < 0) {
		return -1;
	}
	left = deadline_ns - bm_mono_ns();
	if (left <= 0) {
		return 0;
	}
	left = (left + 999999) / 1000000;
	return left > 1000000000 ? 1000000000 : (int)left;
}

void
bm__doorbell_init(bm__doorbell_t *db, int fd, _Atomic uint32_t *mine, _Atomic uint32_t *theirs,
                  int spin_us)
{
	memset(db, 0, sizeof *db);
	db->fd = fd;
	db->mine = mine;
	db->theirs = theirs;
	db->spin_us = spin_us;
}

void
bm__doorbell_fini(bm__doorbell_t *db)
{
	for (int i = 0; i < db->nfds; i++) {
		close(db->fds[i]);
	}
	db->nfds = 0;
	if (db->fd >= 0) {
		close(db->fd);
	}
	db->fd = -1;
}

static void
s_disarm(bm__doorbell_t *db)
{
	uint32_t prev = atomic_exchange_explicit(db->mine, BM__DB_IDLE, memory_order_seq_cst);

	if (prev == BM__DB_NOTIFIED) {
		db->owed++;
	}
}

/* Reads one queued message without blocking: 1 read, 0 none, BM_EPEER. */
static int
s_read_one(bm__doorbell_t *db)
{
	char buf[S_MAX_MSG];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} cbuf;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
	                     .msg_controllen = sizeof cbuf.buf};
	int fds[4], nfds = 0, rc = 1;
	ssize_t n;

	if (db->dead) {
		return BM_EPEER;
	}
	do {
		n = recvmsg(db->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		return 0;
	}
	if (n <= 0) {
		db->dead = true;
		return BM_EPEER;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (size_t i = 0; i < k && nfds < 4; i++) {
				memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			}
		}
	}
	if (n == 1 && buf[0] == 'D' && nfds == 0) {
		if (db->owed > 0) {
			db->owed--;
		}
	} else if (n == 9 && buf[0] == 'F' && nfds == 1 && !(msg.msg_flags & MSG_CTRUNC) &&
	           db->nfds < BM__DB_MAX_FDS) {
		memcpy(&db->fd_ids[db->nfds], buf + 1, 8);
		db->fds[db->nfds++] = fds[0];
		nfds = 0;
	} else {
		bm_debug("doorbell: unexpected message of %zd bytes with %d fds", n, nfds);
		db->dead = true;
		rc = BM_EPEER;
	}
	for (int i = 0; i < nfds; i++) {
		close(fds[i]);
	}
	return rc;
}

static int
s_read_all(bm__doorbell_t *db)
{
	int rc;

	/* Bounded: a flooding peer cannot keep us here. */
	for (int i = 0; i < 64; i++) {
		if ((rc = s_read_one(db)) <= 0) {
			return rc;
		}
	}
	return 0;
}

int
bm__doorbell_drain(bm__doorbell_t *db)
{
	s_disarm(db);
	return s_read_all(db);
}

bool
bm__doorbell_peer_gone(bm__doorbell_t *db)
{
	struct pollfd p = {.fd = db->fd, .events = POLLIN};

	if (db->dead) {
		return true;
	}
	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL))) {
		db->dead = true;
	}
	return db->dead;
}

/* Reads the datagrams we are owed before we may sleep again: exactly as
 * many as owed, so no extra system call finds the queue empty. */
static int
s_settle(bm__doorbell_t *db, int64_t deadline_ns)
{
	struct pollfd p = {.fd = db->fd, .events = POLLIN};
	int rc;

	for (int i = 0; db->owed > 0 && i < 1000; i++) {
		if ((rc = s_read_one(db)) < 0) {
			return rc;
		}
		if (rc > 0) {
			continue;
		}
		rc = poll(&p, 1, s_remaining_ms(deadline_ns));
		if (rc == 0) {
			return -ETIMEDOUT;
		}
		if (rc < 0 && errno != EINTR) {
			return -errno;
		}
	}
	return db->owed > 0 ? BM_EPEER : 0;
}

int
bm__doorbell_arm(bm__doorbell_t *db, bm__ready_fn ready, void *arg)
{
	int rc;

	if ((rc = bm__doorbell_drain(db)) < 0) {
		return ready(arg) ? 1 : rc;
	}
	if (ready(arg)) {
		return 1;
	}
	if (db->owed > 0) {
		/* The owed datagram makes the fd readable soon; the caller
		 * comes back and arms properly then. */
		return 0;
	}
	atomic_store_explicit(db->mine, BM__DB_WAITING, memory_order_seq_cst);
	if (ready(arg)) {
		s_disarm(db);
		return 1;
	}
	return 0;
}

int
bm__doorbell_wait(bm__doorbell_t *db, bm__ready_fn ready, void *arg, int64_t deadline_ns)
{
	struct pollfd p = {.fd = db->fd, .events = POLLIN};
	int rc;

	if (ready(arg)) {
		return 1;
	}
	if (deadline_ns == 0) {
		return bm__doorbell_peer_gone(db) ? BM_EPEER : -ETIMEDOUT;
	}
	if (db->spin_us > 0) {
		int64_t now = bm_mono_ns(), end = now + (int64_t)db->spin_us * 1000;
		int64_t check = now + 1000000;

		if (deadline_ns > 0 && deadline_ns < end) {
			end = deadline_ns;
		}
		do {
			for (int i = 0; i < 64; i++) {
				if (ready(arg)) {
					return 1;
				}
				s_relax();
			}
			now = bm_mono_ns();
			/* A long spin still notices a dead peer within 1 ms. */
			if (now >= check) {
				if (bm__doorbell_peer_gone(db)) {
					return ready(arg) ? 1 : BM_EPEER;
				}
				check = now + 1000000;
			}
		} while (now < end);
	}
	for (;;) {
		s_disarm(db);
		if (db->owed > 0 && (rc = s_settle(db, deadline_ns)) < 0) {
			return ready(arg) ? 1 : rc;
		}
		if (db->dead) {
			return ready(arg) ? 1 : BM_EPEER;
		}
		/* W1, W2: see the top of the file. */
		atomic_store_explicit(db->mine, BM__DB_WAITING, memory_order_seq_cst);
		if (ready(arg)) {
			s_disarm(db);
			return 1;
		}
		rc = poll(&p, 1, s_remaining_ms(deadline_ns));
		s_disarm(db);
		if (rc < 0 && errno != EINTR) {
			return -errno;
		}
		if (rc > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL))) {
			db->dead = true;
		}
		/* Woken: go straight back to work.  The datagram that woke us
		 * is owed and read before we sleep again, off this path. */
		if (ready(arg)) {
			return 1;
		}
		if (rc > 0 && (p.revents & POLLIN)) {
			(void)s_read_all(db);
		}
		if (db->dead) {
			return BM_EPEER;
		}
		if (deadline_ns > 0 && bm_mono_ns() >= deadline_ns) {
			return -ETIMEDOUT;
		}
	}
}

int
bm__doorbell_ring(bm__doorbell_t *db)
{
	uint32_t expect = BM__DB_WAITING;
	ssize_t n;

	/* R2: the caller's publication was a seq_cst store (R1). */
	if (atomic_load_explicit(db->theirs, memory_order_seq_cst) != BM__DB_WAITING) {
		return 0;
	}
	if (!atomic_compare_exchange_strong_explicit(db->theirs, &expect, BM__DB_NOTIFIED,
	                                             memory_order_seq_cst, memory_order_seq_cst)) {
		return 0;
	}
	if (db->dead) {
		return BM_EPEER;
	}
	do {
		n = send(db->fd, "D", 1, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		db->dead = true;
		return BM_EPEER;
	}
	return 0;
}

int
bm__doorbell_send_fd(bm__doorbell_t *db, uint64_t id, int fd)
{
	char buf[9];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
	                     .msg_controllen = sizeof cbuf.buf};
	struct cmsghdr *c;
	ssize_t n;

	buf[0] = 'F';
	memcpy(buf + 1, &id, 8);
	memset(&cbuf, 0, sizeof cbuf);
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	do {
		n = sendmsg(db->fd, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		db->dead = true;
		return BM_EPEER;
	}
	return 0;
}

static int
s_find_fd(const bm__doorbell_t *db, uint64_t id)
{
	for (int i = 0; i < db->nfds; i++) {
		if (db->fd_ids[i] == id) {
			return i;
		}
	}
	return -1;
}

int
bm__doorbell_take_fd(bm__doorbell_t *db, uint64_t id, int64_t deadline_ns, int *ret_fd)
{
	struct pollfd p = {.fd = db->fd, .events = POLLIN};
	int i, rc;

	for (;;) {
		if ((i = s_find_fd(db, id)) >= 0) {
			*ret_fd = db->fds[i];
			db->nfds--;
			db->fds[i] = db->fds[db->nfds];
			db->fd_ids[i] = db->fd_ids[db->nfds];
			return 0;
		}
		if ((rc = bm__doorbell_drain(db)) < 0) {
			return rc;
		}
		if (s_find_fd(db, id) >= 0) {
			continue;
		}
		if (db->nfds == BM__DB_MAX_FDS) {
			return BM_EPEER;
		}
		rc = poll(&p, 1, s_remaining_ms(deadline_ns));
		if (rc == 0) {
			return -ETIMEDOUT;
		}
		if (rc < 0 && errno != EINTR) {
			return -errno;
		}
	}
}

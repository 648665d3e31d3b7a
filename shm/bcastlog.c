/*
 * bcastlog.c - a broadcast log in shared memory: one publisher appends
 * records to one immutable log, any number of local readers follow it,
 * each with a cursor of its own (one copy, however many readers).
 *
 * The publisher creates two shared-memory objects: the log (header page +
 * record space), a memfd sealed against shrink, grow and future writable
 * mappings (F_SEAL_FUTURE_WRITE: the publisher's own mapping stays
 * writable, nobody else can ever map it for writing or write() it), and
 * the cursor table, a small memfd sealed against shrink and grow that
 * every reader maps read-write.  It listens on
 * <rundir>/shm/pub-<name>.sock (SOCK_SEQPACKET, 0700 directory, SO_PEERCRED
 * same uid).  A reader connects and sends ATTACH; the publisher assigns a
 * slot in the cursor table and answers WELCOME with both fds (SCM_RIGHTS).
 * The connection stays open: it is the doorbell (one "D" datagram, only
 * when the other side sleeps; doorbell.c) and the sign of life (EOF =
 * the peer died; no daemon).
 *
 * Tethered and untethered.  Before the publisher overwrites space it
 * advances `oldest` past the records there.  It never advances it beyond
 * the cursor of a tethered reader: when it would have to, the publish
 * returns BM_EFULL (or waits for room), never a drop.  Untethered cursors
 * are never read by the publisher; a reader lapped by the publisher finds
 * its cursor below `oldest`, jumps there and counts exactly how many
 * records it lost from the sequence numbers (loss = seq of the record it
 * lands on - seq it expected).  A tethered reader whose socket closes or
 * whose pid is gone is released (its slot freed) and holds nothing.
 *
 * Shared layout (all integers little-endian, native atomics):
 *
 *   Log header page, 4096 bytes at offset 0 of the log object; written
 *   by the publisher only (readers cannot: the object is sealed):
 *     off  size  field
 *       0     8  magic      "BMBCSLOG" (0x474f4c5343424d42)
 *       8     4  version    1
 *      12     4  hdr_size   4096
 *      16     8  capacity   bytes of record space; a multiple of 4096
 *      24     4  nslots     reader slots in the cursor table
 *      28     4  pid        publisher's pid (informational)
 *      32     8  session    publisher instance (bm_bcastlog_opts_t.session:
 *                           a bm_pub's own, as its broadcast headers carry
 *                           it; random when 0)
 *      40     4  name_len   0..64
 *      44    64  name       publisher name (name_len bytes, rest zero)
 *     108    20  reserved, zero
 *     128     8  tail       end of the last published record: a byte
 *                           position that only grows (seq_cst store after
 *                           the record is written: a release)
 *     136     8  next_seq   sequence of the next record (informational)
 *     144    48  padding (tail has the cache line to itself)
 *     192     8  oldest     position of the oldest intact record; only
 *                           grows; stored (seq_cst + fence) before the
 *                           space below it is overwritten
 *     200     8  oldest_seq its sequence (informational: readers take the
 *                           sequence from the record they land on)
 *     208  3888  padding to 4096
 *
 *   Record space, `capacity` bytes at offset 4096.  Records start on
 *   64-byte boundaries, occupy align64(32 + topic_len + body_len) bytes and
 *   never cross the end of the space:
 *     off  size  field
 *       0     4  body_len   payload bytes
 *       4     2  topic_len  0..255
 *       6     2  kind       1 = message; 0xFFFF = wrap (fills the space to
 *                           the end exactly; topic_len 0; readers skip it)
 *       8     8  seq        1, 2, 3 ...; a wrap carries the sequence of the
 *                           record after it
 *      16     8  tseq       publisher's per-topic sequence (0 = none)
 *      24     8  ts_ms      publisher's wall clock, ms
 *      32     t  topic
 *    32+t     b  body
 *
 *   Cursor table, 128 + 128 * nslots bytes rounded up to 4096, in its own
 *   object mapped read-write by the publisher and every reader:
 *     off  size  field
 *       0     8  magic      "BMBCSCUR" (0x5255435343424d42)
 *       8     4  version    1
 *      12     4  nslots
 *      16    48  reserved, zero
 *      64     4  pub_wait   the publisher's doorbell word (0 idle,
 *                           1 waiting, 2 notified; doorbell.c): it sleeps
 *                           for room, tethered readers ring it
 *      68    60  padding
 *     128 + 128 i: slot i
 *       0     8  cursor     position of the next record the reader reads;
 *                           written by the reader (publisher: at attach);
 *                           read by the publisher for tethered readers
 *       8     8  cursor_seq its sequence (informational)
 *      16     8  lost       records the reader lost so far (informational)
 *      24     4  state      0 free, 1 untethered, 2 tethered (publisher;
 *                           informational: the publisher's own table rules)
 *      28     4  pid        reader's pid from SO_PEERCRED (publisher)
 *      32     4  gen        bumped at every assignment (publisher); a
 *                           reader writes its slot only while gen is the
 *                           one its WELCOME named
 *      36    28  padding
 *      64     4  wait       the reader's doorbell word (own cache line)
 *      68    60  padding
 *
 * Setup messages on the socket (one datagram each, little-endian):
 *   ATTACH  reader → publisher: 0 'A'; 1 version 1; 2 flags (bit 0
 *           tethered); 3..7 zero  (8 bytes)
 *   WELCOME publisher → reader, with two fds (log, cursor table):
 *           0 'W'; 1 version 1; 2..3 zero; 4 u32 slot; 8 u32 gen;
 *           12 u32 zero; 16 u64 capacity; 24 u64 start position;
 *           32 u64 start sequence  (40 bytes)
 *   REFUSE  publisher → reader: 0 'R'; 1..3 zero; 4 i32 error (BM_EFULL:
 *           no free slot)  (8 bytes)
 *   wake    either way: 'D'
 *
 * Publication and overwriting.  The publisher writes the record with plain
 * stores and then stores tail (seq_cst).  A reader loads tail (acquire)
 * before it reads a record, so what it reads below tail is complete.
 * Before overwriting, the publisher stores oldest (seq_cst) and issues a
 * full fence; a reader copies the record out, issues an acquire fence and
 * loads oldest again: if the record now lies below oldest the copy may be
 * torn and is thrown away (and counted lost by the jump that follows).
 * The publisher frees at least a sixteenth of the capacity at a time, so
 * the fence is paid once per many records.
 *
 * Never trust shared memory.  Each side keeps its own positions as the
 * authority and reads the other's once per use, into a local, checked:
 * readers check tail never goes backwards, oldest <= tail <= oldest +
 * capacity, oldest only grows, both 64-aligned, every record within the
 * space's end and below tail, topic_len <= 255, a wrap ending exactly at
 * the end, seq equal to the one expected (or, after a jump, not lower).
 * A failed check that is not explained by being lapped is BM_ECORRUPT and
 * sticky.  The publisher checks a tethered cursor lies in [oldest, tail],
 * 64-aligned, and never moves back; a reader whose cursor fails is
 * released (counted as corrupt), never trusted, never a crash.
 *
 * Threading: the publisher object belongs to one thread; so does each
 * reader.  They live in different processes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "shm_private.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

#define S_LOG_MAGIC UINT64_C(0x474f4c5343424d42) /* "BMBCSLOG" */
#define S_CUR_MAGIC UINT64_C(0x5255435343424d42) /* "BMBCSCUR" */
#define S_VERSION 1
#define S_HDR 4096
#define S_CUR_HDR 128
#define S_SLOT 128
#define S_REC 32
#define S_KIND_MSG 1
#define S_KIND_WRAP 0xFFFF
#define S_DEFAULT_CAPACITY ((size_t)4 << 20)
#define S_DEFAULT_READERS 64
#define S_DEFAULT_SPIN_US 50
#define S_NAME_MAX 64
#define S_WELCOME_LEN 40
#define S_STATE_UNTETHERED 1
#define S_STATE_TETHERED 2

struct s_loghdr {
	uint64_t magic;              /* 0 */
	uint32_t version;            /* 8 */
	uint32_t hdr_size;           /* 12 */
	uint64_t capacity;           /* 16 */
	uint32_t nslots;             /* 24 */
	uint32_t pid;                /* 28 */
	uint64_t session;            /* 32 */
	uint32_t name_len;           /* 40 */
	char name[S_NAME_MAX];       /* 44 */
	uint8_t pad0[20];            /* 108 */
	_Atomic uint64_t tail;       /* 128 */
	_Atomic uint64_t next_seq;   /* 136 */
	uint8_t pad1[48];            /* 144 */
	_Atomic uint64_t oldest;     /* 192 */
	_Atomic uint64_t oldest_seq; /* 200 */
	uint8_t pad2[S_HDR - 208];   /* 208 */
};
_Static_assert(sizeof(struct s_loghdr) == S_HDR, "log header is one page");

struct s_curhdr {
	uint64_t magic;              /* 0 */
	uint32_t version;            /* 8 */
	uint32_t nslots;             /* 12 */
	uint8_t pad0[48];            /* 16 */
	_Atomic uint32_t pub_wait;   /* 64 */
	uint8_t pad1[60];            /* 68 */
};
_Static_assert(sizeof(struct s_curhdr) == S_CUR_HDR, "cursor header is two lines");

struct s_slot {
	_Atomic uint64_t cursor;     /* 0 */
	_Atomic uint64_t cursor_seq; /* 8 */
	_Atomic uint64_t lost;       /* 16 */
	_Atomic uint32_t state;      /* 24 */
	_Atomic uint32_t pid;        /* 28 */
	_Atomic uint32_t gen;        /* 32 */
	uint8_t pad0[28];            /* 36 */
	_Atomic uint32_t wait;       /* 64 */
	uint8_t pad1[60];            /* 68 */
};
_Static_assert(sizeof(struct s_slot) == S_SLOT, "a slot is two lines");

/* The publisher's own record of a reader: the authority. */
typedef struct {
	int fd;               /* connected socket, -1 = slot free */
	bool tethered;        /* holds the publisher */
	pid_t pid;            /* from SO_PEERCRED */
	uint64_t cursor_seen; /* last cursor read from its slot (tethered) */
} s_reader_t;

struct bm_bcastlog {
	uint8_t *base;             /* log mapping */
	size_t map_len;            /* its bytes */
	struct s_loghdr *hdr;      /* base */
	uint8_t *data;             /* base + S_HDR */
	uint64_t cap;              /* record space; our copy */
	int fd;                    /* log memfd */
	uint8_t *cbase;            /* cursor table mapping */
	size_t cmap_len;           /* its bytes */
	struct s_curhdr *chdr;     /* cbase */
	int cfd;                   /* cursor table memfd */
	int lfd;                   /* listening socket */
	char path[BM_PATH_MAX];    /* its file */
	unsigned nslots;           /* slots */
	s_reader_t *rd;            /* nslots of them */
	struct pollfd *pfd;        /* scratch for waits */
	unsigned hi;               /* slots in use are below this */
	int spin_us;               /* spin before sleeping on a full log */
	uint64_t tail;             /* authoritative write position */
	uint64_t seq;              /* next record's sequence */
	uint64_t oldest;           /* authoritative oldest intact record */
	uint64_t oldest_seq;       /* its sequence */
	uint32_t gen;              /* slot assignments so far */
	bool broken;               /* our own log failed a check */
	bm_bcastlog_stats_t st;    /* counters */
};

struct bm_bcastlog_reader {
	uint8_t *base;             /* log mapping, read-only */
	size_t map_len;
	const struct s_loghdr *hdr;
	const uint8_t *data;
	uint64_t cap;              /* our copy */
	uint8_t *cbase;            /* cursor table, read-write */
	size_t cmap_len;
	struct s_curhdr *chdr;
	struct s_slot *slot;       /* ours */
	bm__doorbell_t db;         /* socket + waiting words */
	bool tethered;
	bool broken;               /* a check failed: every call fails */
	bool jumped;               /* cursor moved to oldest: seq unknown */
	uint32_t gen;              /* our slot's assignment (WELCOME) */
	uint64_t cursor;           /* authoritative read position */
	uint64_t seq;              /* sequence expected at cursor */
	uint64_t oldest_seen;      /* oldest as last read (only grows) */
	uint64_t pending_gap;      /* lost before the next record returned */
	uint64_t lost;             /* total lost */
	uint64_t session;          /* from the header at attach */
	char from[S_NAME_MAX + 1]; /* publisher name, from the header at attach */
};

static inline uint64_t
s_align(uint64_t n)
{
	return (n + 63) & ~(uint64_t)63;
}

static inline struct s_slot *
s_slot(uint8_t *cbase, unsigned i)
{
	return (struct s_slot *)(void *)(cbase + S_CUR_HDR + (size_t)S_SLOT * i);
}

static size_t
s_cur_size(unsigned nslots)
{
	return ((size_t)S_CUR_HDR + (size_t)S_SLOT * nslots + 4095) & ~(size_t)4095;
}

static int
s_memfd(const char *name, size_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), rc;

	if (fd < 0) {
		return -errno;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* ================= publisher ================= */

static void
s_release(bm_bcastlog_t *self, unsigned i, bool corrupt)
{
	s_reader_t *r = &self->rd[i];

	if (r->fd < 0) {
		return;
	}
	close(r->fd);
	r->fd = -1;
	if (r->tethered) {
		self->st.tethered--;
	}
	r->tethered = false;
	atomic_store_explicit(&s_slot(self->cbase, i)->state, 0, memory_order_release);
	self->st.readers--;
	self->st.released++;
	self->st.corrupt += corrupt;
	while (self->hi > 0 && self->rd[self->hi - 1].fd < 0) {
		self->hi--;
	}
}

int
bm_bcastlog_open(const char *rundir, const char *name, const bm_bcastlog_opts_t *opts,
                 bm_bcastlog_t **ret_log)
{
	bm_bcastlog_opts_t o = opts ? *opts : (bm_bcastlog_opts_t){0};
	char sname[BM_CHANNEL_NAME_MAX + 8];
	struct sockaddr_un addr;
	bm_bcastlog_t *self;
	size_t cap, nlen;
	int rc, probe;

	if (ret_log == NULL || name == NULL) {
		return -EINVAL;
	}
	nlen = strlen(name);
	if (nlen > S_NAME_MAX || !bm__shm_name_ok(name)) {
		return BM_EBADNAME;
	}
	cap = o.capacity ? o.capacity : S_DEFAULT_CAPACITY;
	if (cap < BM_BCASTLOG_MIN_CAPACITY || cap > BM_BCASTLOG_MAX_CAPACITY ||
	    o.readers > BM_BCASTLOG_MAX_READERS) {
		return -EINVAL;
	}
	cap = (cap + 4095) & ~(size_t)4095;
	/* "pub-" + a 64-byte name may exceed a channel name: check it whole. */
	snprintf(sname, sizeof sname, "pub-%s", name);
	if ((rc = bm__shm_sock_path(rundir, sname, true, &addr)) < 0) {
		return rc == BM_EBADNAME ? -ENAMETOOLONG : rc;
	}
	self = calloc(1, sizeof *self);
	if (self == NULL) {
		return -ENOMEM;
	}
	self->fd = self->cfd = self->lfd = -1;
	self->base = self->cbase = MAP_FAILED;
	self->nslots = o.readers ? o.readers : S_DEFAULT_READERS;
	self->spin_us = o.spin_us < 0 ? S_DEFAULT_SPIN_US : o.spin_us;
	self->cap = cap;
	self->map_len = S_HDR + cap;
	self->cmap_len = s_cur_size(self->nslots);
	self->rd = calloc(self->nslots, sizeof *self->rd);
	self->pfd = calloc(self->nslots, sizeof *self->pfd);
	if (self->rd == NULL || self->pfd == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < self->nslots; i++) {
		self->rd[i].fd = -1;
	}
	if ((self->fd = s_memfd("bm-bcastlog", self->map_len)) < 0 ||
	    (self->cfd = s_memfd("bm-bcastcur", self->cmap_len)) < 0) {
		rc = self->fd < 0 ? self->fd : self->cfd;
		goto fail;
	}
	self->base = mmap(NULL, self->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
	                  self->fd, 0);
	if (self->base == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	/* After our writable mapping exists: nobody may make another. */
	if (fcntl(self->fd, F_ADD_SEALS,
	          F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0 ||
	    fcntl(self->cfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		rc = -errno;
		goto fail;
	}
	self->cbase = mmap(NULL, self->cmap_len, PROT_READ | PROT_WRITE, MAP_SHARED, self->cfd, 0);
	if (self->cbase == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	self->hdr = (struct s_loghdr *)(void *)self->base;
	self->data = self->base + S_HDR;
	self->chdr = (struct s_curhdr *)(void *)self->cbase;
	self->tail = 0;
	self->oldest = 0;
	self->seq = 1;
	self->oldest_seq = 1;
	self->hdr->magic = S_LOG_MAGIC;
	self->hdr->version = S_VERSION;
	self->hdr->hdr_size = S_HDR;
	self->hdr->capacity = cap;
	self->hdr->nslots = self->nslots;
	self->hdr->pid = (uint32_t)getpid();
	self->hdr->session = opts != NULL ? opts->session : 0;
	if (self->hdr->session == 0 &&
	    getrandom(&self->hdr->session, sizeof self->hdr->session, 0) !=
	    (ssize_t)sizeof self->hdr->session) {
		rc = -EIO;
		goto fail;
	}
	self->hdr->name_len = (uint32_t)nlen;
	memcpy(self->hdr->name, name, nlen);
	atomic_store(&self->hdr->tail, 0);
	atomic_store(&self->hdr->next_seq, 1);
	atomic_store(&self->hdr->oldest_seq, 1);
	atomic_store(&self->hdr->oldest, 0);
	self->chdr->magic = S_CUR_MAGIC;
	self->chdr->version = S_VERSION;
	self->chdr->nslots = self->nslots;
	atomic_store(&self->chdr->pub_wait, BM__DB_IDLE);

	self->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (self->lfd < 0) {
		rc = -errno;
		goto fail;
	}
	if (bind(self->lfd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		if (errno != EADDRINUSE) {
			rc = -errno;
			goto fail;
		}
		/* A live publisher answers a probe; a dead one's file is stale. */
		probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (probe < 0) {
			rc = -errno;
			goto fail;
		}
		rc = connect(probe, (struct sockaddr *)&addr, sizeof addr) == 0 ? 0 : -errno;
		close(probe);
		if (rc != -ECONNREFUSED) {
			rc = rc == 0 ? BM_ENAMETAKEN : rc;
			goto fail;
		}
		unlink(addr.sun_path);
		if (bind(self->lfd, (struct sockaddr *)&addr, sizeof addr) < 0) {
			rc = errno == EADDRINUSE ? BM_ENAMETAKEN : -errno;
			goto fail;
		}
	}
	snprintf(self->path, sizeof self->path, "%s", addr.sun_path);
	if (listen(self->lfd, 64) < 0) {
		rc = -errno;
		goto fail;
	}
	*ret_log = self;
	return 0;
fail:
	bm_bcastlog_destroy(&self);
	return rc;
}

void
bm_bcastlog_destroy(bm_bcastlog_t **self_p)
{
	bm_bcastlog_t *self;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	self = *self_p;
	for (unsigned i = 0; self->rd != NULL && i < self->nslots; i++) {
		if (self->rd[i].fd >= 0) {
			close(self->rd[i].fd);
		}
	}
	if (self->lfd >= 0) {
		if (self->path[0] != '\0') {
			unlink(self->path);
		}
		close(self->lfd);
	}
	if (self->base != MAP_FAILED && self->base != NULL) {
		munmap(self->base, self->map_len);
	}
	if (self->cbase != MAP_FAILED && self->cbase != NULL) {
		munmap(self->cbase, self->cmap_len);
	}
	if (self->fd >= 0) {
		close(self->fd);
	}
	if (self->cfd >= 0) {
		close(self->cfd);
	}
	free(self->rd);
	free(self->pfd);
	free(self);
	*self_p = NULL;
}

int
bm_bcastlog_fd(const bm_bcastlog_t *self)
{
	return self ? self->lfd : -EINVAL;
}

void
bm_bcastlog_stats(const bm_bcastlog_t *self, bm_bcastlog_stats_t *ret)
{
	if (self != NULL && ret != NULL) {
		*ret = self->st;
	}
}

/* Reads what readers sent (wake datagrams) without blocking; releases a
 * reader whose socket closed or whose pid is gone. */
static void
s_drain_readers(bm_bcastlog_t *self, bool check_pid)
{
	char buf[16];

	for (unsigned i = 0; i < self->hi; i++) {
		s_reader_t *r = &self->rd[i];
		ssize_t n = 1;

		if (r->fd < 0) {
			continue;
		}
		for (int k = 0; k < 8 && n > 0; k++) {
			n = recv(r->fd, buf, sizeof buf, MSG_DONTWAIT);
		}
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
		    (check_pid && r->pid > 0 && kill(r->pid, 0) < 0 && errno == ESRCH)) {
			s_release(self, i, false);
		}
	}
}

static int
s_refuse(int fd, int err)
{
	uint8_t m[8] = {'R'};
	int32_t e = err;

	memcpy(m + 4, &e, 4);
	return send(fd, m, sizeof m, MSG_NOSIGNAL) == (ssize_t)sizeof m ? 0 : -errno;
}

/* One connecting reader: checks, reads ATTACH, assigns a slot, answers. */
static void
s_accept_one(bm_bcastlog_t *self, int cfd)
{
	struct ucred cred;
	socklen_t clen = sizeof cred;
	struct pollfd p = {.fd = cfd, .events = POLLIN};
	uint8_t m[16];
	uint8_t w[S_WELCOME_LEN];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 2)];
	} cbuf;
	struct iovec iov = {.iov_base = w, .iov_len = sizeof w};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
	                     .msg_controllen = sizeof cbuf.buf};
	struct cmsghdr *c;
	struct s_slot *sl;
	unsigned i;
	uint32_t slot32, gen;
	int fds[2] = {self->fd, self->cfd};
	ssize_t n;

	if (bm__shm_check_peer(cfd) < 0 ||
	    getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
		close(cfd);
		return;
	}
	/* The reader sends ATTACH right after connecting; a reader that does
	 * not within 100 ms is dropped, it may try again. */
	if (poll(&p, 1, 100) != 1) {
		close(cfd);
		return;
	}
	n = recv(cfd, m, sizeof m, MSG_DONTWAIT);
	if (n != 8 || m[0] != 'A' || m[1] != S_VERSION) {
		close(cfd);
		return;
	}
	/* The slot after the last one handed out first: a released reader
	 * that still writes its old slot meets an empty one as long as
	 * possible (and readers check gen before they write). */
	i = self->nslots;
	for (unsigned k = 0; k < self->nslots; k++) {
		unsigned j = (self->gen + k) % self->nslots;

		if (self->rd[j].fd < 0) {
			i = j;
			break;
		}
	}
	if (i == self->nslots) {
		(void)s_refuse(cfd, BM_EFULL);
		close(cfd);
		return;
	}
	gen = ++self->gen;
	sl = s_slot(self->cbase, i);
	atomic_store_explicit(&sl->cursor, self->tail, memory_order_relaxed);
	atomic_store_explicit(&sl->cursor_seq, self->seq, memory_order_relaxed);
	atomic_store_explicit(&sl->lost, 0, memory_order_relaxed);
	atomic_store_explicit(&sl->pid, (uint32_t)cred.pid, memory_order_relaxed);
	atomic_store_explicit(&sl->gen, gen, memory_order_relaxed);
	atomic_store_explicit(&sl->wait, BM__DB_IDLE, memory_order_relaxed);
	atomic_store_explicit(&sl->state, (m[2] & 1) ? S_STATE_TETHERED : S_STATE_UNTETHERED,
	                      memory_order_seq_cst);
	memset(w, 0, sizeof w);
	w[0] = 'W';
	w[1] = S_VERSION;
	slot32 = i;
	memcpy(w + 4, &slot32, 4);
	memcpy(w + 8, &gen, 4);
	memcpy(w + 16, &self->cap, 8);
	memcpy(w + 24, &self->tail, 8);
	memcpy(w + 32, &self->seq, 8);
	memset(&cbuf, 0, sizeof cbuf);
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof fds);
	memcpy(CMSG_DATA(c), fds, sizeof fds);
	if (sendmsg(cfd, &msg, MSG_NOSIGNAL) != (ssize_t)sizeof w) {
		atomic_store(&sl->state, 0);
		close(cfd);
		return;
	}
	self->rd[i].fd = cfd;
	self->rd[i].pid = cred.pid;
	self->rd[i].tethered = (m[2] & 1) != 0;
	self->rd[i].cursor_seen = self->tail;
	if (i >= self->hi) {
		self->hi = i + 1;
	}
	self->st.readers++;
	self->st.attached++;
	self->st.tethered += self->rd[i].tethered;
}

int
bm_bcastlog_service(bm_bcastlog_t *self)
{
	if (self == NULL) {
		return -EINVAL;
	}
	/* Bounded: a flood of connections cannot keep us here. */
	for (int k = 0; k < 32; k++) {
		int cfd = accept4(self->lfd, NULL, NULL, SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno == EINTR) {
				continue;
			}
			break;
		}
		s_accept_one(self, cfd);
	}
	s_drain_readers(self, false);
	return (int)self->st.readers;
}

/* The lowest tethered cursor, each read once and checked (a bad one gets
 * its reader released); tail when no tethered reader holds anything. */
static uint64_t
s_tether_limit(bm_bcastlog_t *self)
{
	uint64_t limit = self->tail;

	for (unsigned i = 0; i < self->hi; i++) {
		s_reader_t *r = &self->rd[i];
		uint64_t c;

		if (r->fd < 0 || !r->tethered) {
			continue;
		}
		c = atomic_load_explicit(&s_slot(self->cbase, i)->cursor, memory_order_acquire);
		if (c % 64 != 0 || c < self->oldest || c > self->tail || c < r->cursor_seen) {
			bm_debug("bcastlog: reader %u's cursor is out of bounds; released", i);
			s_release(self, i, true);
			continue;
		}
		r->cursor_seen = c;
		if (c < limit) {
			limit = c;
		}
	}
	return limit;
}

/* Our own record at pos (below tail): its size and what sequence follows. */
static int
s_own_record(bm_bcastlog_t *self, uint64_t pos, uint64_t *ret_slot, uint64_t *ret_next_seq,
             uint64_t seq)
{
	uint64_t off = pos % self->cap, slot;
	const uint8_t *rec = self->data + off;
	uint32_t blen;
	uint16_t tlen, kind;
	uint64_t rseq;

	memcpy(&blen, rec, 4);
	memcpy(&tlen, rec + 4, 2);
	memcpy(&kind, rec + 6, 2);
	memcpy(&rseq, rec + 8, 8);
	slot = kind == S_KIND_WRAP ? self->cap - off : s_align(S_REC + (uint64_t)tlen + blen);
	if (slot < 64 || off + slot > self->cap || pos + slot > self->tail) {
		self->broken = true;
		return BM_ECORRUPT;
	}
	*ret_slot = slot;
	*ret_next_seq = kind == S_KIND_WRAP ? seq : rseq + 1;
	return 0;
}

/* Frees space so that a write ending at `end` overwrites nothing a reader
 * may still read: 0, or BM_EFULL when a tethered reader holds it. */
static int
s_make_room(bm_bcastlog_t *self, uint64_t end)
{
	uint64_t lo, soft, limit, pos, seq, slot, next;
	int rc;

	if (end - self->oldest <= self->cap) {
		return 0;
	}
	lo = end - self->cap;
	soft = self->oldest + self->cap / 16;
	if (soft < lo) {
		soft = lo;
	}
	limit = s_tether_limit(self);
	if (limit < lo) {
		return BM_EFULL;
	}
	pos = self->oldest;
	seq = self->oldest_seq;
	while (pos < self->tail && (pos < lo || pos < soft)) {
		if ((rc = s_own_record(self, pos, &slot, &next, seq)) < 0) {
			return rc;
		}
		if (pos + slot > limit) {
			break;
		}
		pos += slot;
		seq = next;
	}
	if (pos < lo) {
		return BM_EFULL;
	}
	self->oldest = pos;
	self->oldest_seq = pos == self->tail ? self->seq : seq;
	atomic_store_explicit(&self->hdr->oldest_seq, self->oldest_seq, memory_order_relaxed);
	atomic_store_explicit(&self->hdr->oldest, self->oldest, memory_order_seq_cst);
	/* Readers copy, fence, re-load oldest: none may see our coming
	 * overwrite without also seeing the new oldest. */
	atomic_thread_fence(memory_order_seq_cst);
	return 0;
}

static void
s_put_header(uint8_t *rec, uint32_t blen, uint16_t tlen, uint16_t kind, uint64_t seq,
             uint64_t tseq, int64_t ts)
{
	memcpy(rec, &blen, 4);
	memcpy(rec + 4, &tlen, 2);
	memcpy(rec + 6, &kind, 2);
	memcpy(rec + 8, &seq, 8);
	memcpy(rec + 16, &tseq, 8);
	memcpy(rec + 24, &ts, 8);
}

/* Rings every reader that sleeps (after the seq_cst store of tail). */
static void
s_ring_readers(bm_bcastlog_t *self)
{
	for (unsigned i = 0; i < self->hi; i++) {
		_Atomic uint32_t *w;
		uint32_t expect = BM__DB_WAITING;

		if (self->rd[i].fd < 0) {
			continue;
		}
		w = &s_slot(self->cbase, i)->wait;
		if (atomic_load_explicit(w, memory_order_seq_cst) != BM__DB_WAITING ||
		    !atomic_compare_exchange_strong_explicit(w, &expect, BM__DB_NOTIFIED,
		                                             memory_order_seq_cst,
		                                             memory_order_seq_cst)) {
			continue;
		}
		if (send(self->rd[i].fd, "D", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN) {
			s_release(self, i, false);
		}
	}
}

/* Whether a record ending at `end` could be written now. */
static bool
s_room(bm_bcastlog_t *self, uint64_t end)
{
	return end - self->oldest <= self->cap || s_tether_limit(self) >= end - self->cap;
}

/* Sleeps until a tethered reader moves (or dies) or the deadline. */
static int
s_wait_room(bm_bcastlog_t *self, uint64_t end, int64_t deadline)
{
	int64_t now = bm_mono_ns(), spin_end = now + (int64_t)self->spin_us * 1000;
	nfds_t n = 0;
	int ms, rc;

	while (now < spin_end && (deadline < 0 || now < deadline)) {
		for (int i = 0; i < 64; i++) {
			if (s_room(self, end)) {
				return 0;
			}
		}
		now = bm_mono_ns();
	}
	s_drain_readers(self, true);
	atomic_store_explicit(&self->chdr->pub_wait, BM__DB_WAITING, memory_order_seq_cst);
	if (s_room(self, end)) {
		atomic_store_explicit(&self->chdr->pub_wait, BM__DB_IDLE, memory_order_seq_cst);
		return 0;
	}
	for (unsigned i = 0; i < self->hi; i++) {
		if (self->rd[i].fd >= 0 && self->rd[i].tethered) {
			self->pfd[n++] = (struct pollfd){.fd = self->rd[i].fd, .events = POLLIN};
		}
	}
	/* Poll in slices of 100 ms: a reader whose pid vanished without its
	 * socket closing (it was passed on) is noticed too. */
	ms = 100;
	if (deadline >= 0) {
		int64_t left = (deadline - bm_mono_ns() + 999999) / 1000000;

		ms = left <= 0 ? 0 : (left < 100 ? (int)left : 100);
	}
	rc = n > 0 ? poll(self->pfd, n, ms) : 0;
	atomic_exchange_explicit(&self->chdr->pub_wait, BM__DB_IDLE, memory_order_seq_cst);
	if (rc < 0 && errno != EINTR) {
		return -errno;
	}
	s_drain_readers(self, true);
	if (s_room(self, end)) {
		return 0;
	}
	if (deadline >= 0 && bm_mono_ns() >= deadline) {
		return -ETIMEDOUT;
	}
	return 1; /* go round again */
}

int
bm_bcastlog_publish(bm_bcastlog_t *self, const char *topic, uint64_t tseq, const void *body,
                    size_t len, int timeout_ms)
{
	int64_t deadline = bm__deadline(timeout_ms);
	uint64_t slot, off, wrap, end;
	size_t tlen;
	uint8_t *rec;
	int rc;

	if (self == NULL || topic == NULL || (body == NULL && len > 0)) {
		return -EINVAL;
	}
	if (self->broken) {
		return BM_ECORRUPT;
	}
	tlen = strlen(topic);
	if (tlen == 0 || tlen > BM_BCASTLOG_TOPIC_MAX) {
		return -EINVAL;
	}
	if (len > self->cap / 4 || (slot = s_align(S_REC + tlen + len)) > self->cap / 4) {
		return BM_ETOOBIG;
	}
	for (;;) {
		off = self->tail % self->cap;
		wrap = off + slot > self->cap ? self->cap - off : 0;
		end = self->tail + wrap + slot;
		rc = s_make_room(self, end);
		if (rc != BM_EFULL) {
			break;
		}
		/* Maybe the reader holding us is dead: look before refusing. */
		s_drain_readers(self, true);
		if ((rc = s_make_room(self, end)) != BM_EFULL) {
			break;
		}
		if (timeout_ms == 0) {
			self->st.full++;
			return BM_EFULL;
		}
		if ((rc = s_wait_room(self, end, deadline)) < 0) {
			self->st.full++;
			return rc;
		}
	}
	if (rc < 0) {
		return rc;
	}
	if (wrap > 0) {
		s_put_header(self->data + off, (uint32_t)(wrap - S_REC), 0, S_KIND_WRAP, self->seq, 0, 0);
		self->tail += wrap;
		off = 0;
	}
	rec = self->data + off;
	s_put_header(rec, (uint32_t)len, (uint16_t)tlen, S_KIND_MSG, self->seq, tseq, bm_wall_ms());
	memcpy(rec + S_REC, topic, tlen);
	if (len > 0) {
		memcpy(rec + S_REC + tlen, body, len);
	}
	self->tail += slot;
	self->seq++;
	self->st.published++;
	atomic_store_explicit(&self->hdr->next_seq, self->seq, memory_order_relaxed);
	/* seq_cst: the release of the record, and the store half of the
	 * doorbell's Dekker pair with every reader's wait word. */
	atomic_store_explicit(&self->hdr->tail, self->tail, memory_order_seq_cst);
	s_ring_readers(self);
	return 0;
}

uint8_t *
bm__bcastlog_base(bm_bcastlog_t *self, size_t *ret_len)
{
	*ret_len = self->map_len;
	return self->base;
}

uint8_t *
bm__bcastlog_cursors(bm_bcastlog_t *self, size_t *ret_len)
{
	*ret_len = self->cmap_len;
	return self->cbase;
}

/* Whether a publish of a topic of topic_len bytes and len body bytes would
 * go through now without waiting (room only grows until the next publish:
 * readers move forward or are released). */
int
bm_bcastlog_room(bm_bcastlog_t *self, size_t topic_len, size_t len)
{
	uint64_t slot, off, wrap, end;

	if (self == NULL || topic_len == 0 || topic_len > BM_BCASTLOG_TOPIC_MAX) {
		return -EINVAL;
	}
	if (self->broken) {
		return BM_ECORRUPT;
	}
	if (len > self->cap / 4 || (slot = s_align(S_REC + topic_len + len)) > self->cap / 4) {
		return BM_ETOOBIG;
	}
	off = self->tail % self->cap;
	wrap = off + slot > self->cap ? self->cap - off : 0;
	end = self->tail + wrap + slot;
	if (s_room(self, end)) {
		return 0;
	}
	s_drain_readers(self, true);
	return s_room(self, end) ? 0 : BM_EFULL;
}

/* ================= reader ================= */

static int
s_corrupt(bm_bcastlog_reader_t *self, const char *why)
{
	if (!self->broken) {
		bm_debug("bcastlog: shared memory failed a check: %s", why);
	}
	self->broken = true;
	return BM_ECORRUPT;
}

static bool
s_readable(void *arg)
{
	bm_bcastlog_reader_t *self = arg;

	/* seq_cst: the load half of the reader's Dekker pair. */
	return self->broken ||
	       atomic_load_explicit(&self->hdr->tail, memory_order_seq_cst) != self->cursor;
}

static int
s_sealed(int fd, int want)
{
	int seals = fcntl(fd, F_GET_SEALS);

	return seals >= 0 && (seals & want) == want;
}

/* Maps what WELCOME brought and checks it against the header. */
static int
s_reader_map(bm_bcastlog_reader_t *self, int lfd, int cfd, const uint8_t *w)
{
	struct stat st, cst;
	uint32_t slot, nslots;
	uint64_t cap, start, start_seq, tail, oldest;
	const struct s_loghdr *h;

	memcpy(&slot, w + 4, 4);
	memcpy(&self->gen, w + 8, 4);
	memcpy(&cap, w + 16, 8);
	memcpy(&start, w + 24, 8);
	memcpy(&start_seq, w + 32, 8);
	if (fstat(lfd, &st) < 0 || fstat(cfd, &cst) < 0) {
		return -errno;
	}
	if (!S_ISREG(st.st_mode) || !S_ISREG(cst.st_mode) || cap < BM_BCASTLOG_MIN_CAPACITY ||
	    cap > BM_BCASTLOG_MAX_CAPACITY || cap % 4096 != 0 || (uint64_t)st.st_size != S_HDR + cap) {
		return BM_ECORRUPT;
	}
	/* Sealed: nobody can shrink either object under us (SIGBUS), and
	 * nobody but the publisher can ever write the log. */
	if (!s_sealed(lfd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE) ||
	    !s_sealed(cfd, F_SEAL_SHRINK | F_SEAL_GROW)) {
		return BM_ECORRUPT;
	}
	self->map_len = (size_t)st.st_size;
	self->base = mmap(NULL, self->map_len, PROT_READ, MAP_SHARED, lfd, 0);
	if (self->base == MAP_FAILED) {
		self->base = NULL;
		return -errno;
	}
	h = self->hdr = (const struct s_loghdr *)(const void *)self->base;
	self->data = self->base + S_HDR;
	self->cap = cap;
	if (h->magic != S_LOG_MAGIC || h->hdr_size != S_HDR) {
		return BM_ECORRUPT;
	}
	if (h->version != S_VERSION) {
		return BM_EVERSION;
	}
	nslots = h->nslots;
	if (h->capacity != cap || nslots == 0 || nslots > BM_BCASTLOG_MAX_READERS ||
	    slot >= nslots || h->name_len > S_NAME_MAX ||
	    (uint64_t)cst.st_size < S_CUR_HDR + (uint64_t)S_SLOT * nslots) {
		return BM_ECORRUPT;
	}
	memcpy(self->from, h->name, h->name_len);
	self->from[h->name_len] = '\0';
	self->session = h->session;
	self->cmap_len = (size_t)cst.st_size;
	self->cbase = mmap(NULL, self->cmap_len, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
	if (self->cbase == MAP_FAILED) {
		self->cbase = NULL;
		return -errno;
	}
	self->chdr = (struct s_curhdr *)(void *)self->cbase;
	if (self->chdr->magic != S_CUR_MAGIC || self->chdr->nslots != nslots) {
		return BM_ECORRUPT;
	}
	self->slot = s_slot(self->cbase, slot);
	oldest = atomic_load_explicit(&h->oldest, memory_order_acquire);
	tail = atomic_load_explicit(&h->tail, memory_order_acquire);
	if (start % 64 != 0 || start > tail || oldest > tail || oldest % 64 != 0 || start_seq == 0) {
		return BM_ECORRUPT;
	}
	self->cursor = start;
	self->seq = start_seq;
	self->oldest_seen = oldest;
	return 0;
}

int
bm_bcastlog_attach_start(const char *rundir, const char *name, unsigned flags, int *ret_fd)
{
	char sname[BM_CHANNEL_NAME_MAX + 8];
	struct sockaddr_un addr;
	uint8_t a[8] = {'A', S_VERSION, (uint8_t)(flags & BM_BCASTLOG_TETHERED)};
	int fd, rc;

	if (ret_fd == NULL || name == NULL || (flags & ~(unsigned)BM_BCASTLOG_TETHERED)) {
		return -EINVAL;
	}
	if (strlen(name) > S_NAME_MAX) {
		return BM_EBADNAME;
	}
	snprintf(sname, sizeof sname, "pub-%s", name);
	if ((rc = bm__shm_sock_path(rundir, sname, false, &addr)) < 0) {
		return rc == BM_EBADNAME ? -ENAMETOOLONG : rc;
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
	if ((rc = bm__shm_check_peer(fd)) < 0) {
		close(fd);
		return rc;
	}
	if (send(fd, a, sizeof a, MSG_NOSIGNAL) != (ssize_t)sizeof a) {
		close(fd);
		return BM_EPEER;
	}
	*ret_fd = fd;
	return 0;
}

int
bm_bcastlog_attach_finish(int fd, unsigned flags, bm_bcastlog_reader_t **ret_reader)
{
	bm_bcastlog_reader_t *self;
	uint8_t w[S_WELCOME_LEN + 8];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} cbuf;
	struct iovec iov = {.iov_base = w, .iov_len = sizeof w};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
	                     .msg_controllen = sizeof cbuf.buf};
	int fds[4], nfds = 0, rc;
	ssize_t n;

	if (fd < 0 || ret_reader == NULL || (flags & ~(unsigned)BM_BCASTLOG_TETHERED)) {
		return -EINVAL;
	}
	n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		return -EAGAIN; /* not yet: fd stays the caller's */
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); n > 0 && c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (size_t i = 0; i < k && nfds < 4; i++) {
				memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			}
		}
	}
	rc = 0;
	if (n == 8 && w[0] == 'R' && nfds == 0) {
		int32_t e;

		memcpy(&e, w + 4, 4);
		rc = e == BM_EFULL ? BM_EFULL : BM_EPEER;
	} else if (n != S_WELCOME_LEN || w[0] != 'W' || nfds != 2 ||
	           (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		rc = BM_EPEER;
	} else if (w[1] != S_VERSION) {
		rc = BM_EVERSION;
	}
	self = rc == 0 ? calloc(1, sizeof *self) : NULL;
	if (rc == 0 && self == NULL) {
		rc = -ENOMEM;
	}
	if (rc == 0) {
		self->db.fd = -1;
		rc = s_reader_map(self, fds[0], fds[1], w);
		if (rc == 0) {
			self->tethered = (flags & BM_BCASTLOG_TETHERED) != 0;
			bm__doorbell_init(&self->db, fd, &self->slot->wait, &self->chdr->pub_wait,
			                  S_DEFAULT_SPIN_US);
			fd = -1;
		} else {
			bm_bcastlog_reader_destroy(&self);
		}
	}
	for (int i = 0; i < nfds; i++) {
		close(fds[i]);
	}
	if (rc < 0) {
		if (fd >= 0) {
			close(fd);
		}
		return rc;
	}
	*ret_reader = self;
	return 0;
}

int
bm_bcastlog_attach(const char *rundir, const char *name, unsigned flags, int timeout_ms,
                   bm_bcastlog_reader_t **ret_reader)
{
	int64_t deadline = bm__deadline(timeout_ms);
	int fd, rc;

	if (ret_reader == NULL) {
		return -EINVAL;
	}
	if ((rc = bm_bcastlog_attach_start(rundir, name, flags, &fd)) < 0) {
		return rc;
	}
	/* The publisher answers when it services its socket. */
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int ms = -1;

		if (deadline >= 0) {
			int64_t left = (deadline - bm_mono_ns() + 999999) / 1000000;

			ms = left <= 0 ? 0 : (left > 1000000 ? 1000000 : (int)left);
		}
		rc = poll(&p, 1, timeout_ms == 0 ? 1000 : ms);
		if (rc > 0) {
			break;
		}
		if (rc == 0 || errno != EINTR) {
			rc = rc == 0 ? -ETIMEDOUT : -errno;
			close(fd);
			return rc;
		}
	}
	rc = bm_bcastlog_attach_finish(fd, flags, ret_reader);
	if (rc == -EAGAIN) {
		close(fd);
		return BM_EPEER;
	}
	return rc;
}

void
bm_bcastlog_reader_destroy(bm_bcastlog_reader_t **self_p)
{
	bm_bcastlog_reader_t *self;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	self = *self_p;
	if (self->db.fd >= 0) {
		bm__doorbell_fini(&self->db);
	}
	if (self->base != NULL) {
		munmap(self->base, self->map_len);
	}
	if (self->cbase != NULL) {
		munmap(self->cbase, self->cmap_len);
	}
	free(self);
	*self_p = NULL;
}

/* Re-checks after a copy or a failed check: true when the record at our
 * cursor may have been overwritten meanwhile (we were lapped). */
static bool
s_lapped(bm_bcastlog_reader_t *self)
{
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&self->hdr->oldest, memory_order_acquire) > self->cursor;
}

static inline uint64_t
s_get(const volatile uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--) {
		v = v << 8 | p[i];
	}
	return v;
}

/* One attempt at the next record without waiting. */
static int
s_try_read(bm_bcastlog_reader_t *self, void *buf, size_t size, bm_bcastlog_rec_t *rec)
{
	/* Bounded: a publisher moving oldest for ever cannot keep us here. */
	for (int tries = 0; tries < 64; tries++) {
		uint64_t tail, oldest, off, slot, avail, blen, seq, gap;
		unsigned tlen, kind;
		const volatile uint8_t *r;

		/* oldest before tail: the publisher stores tail before it moves
		 * oldest up to it, so the pair read in this order has
		 * oldest <= tail (tail - oldest may exceed the capacity when
		 * we read a stale oldest: that is only being behind). */
		oldest = atomic_load_explicit(&self->hdr->oldest, memory_order_acquire);
		tail = atomic_load_explicit(&self->hdr->tail, memory_order_acquire);
		if (tail < self->cursor) {
			return s_corrupt(self, "tail went backwards");
		}
		if (tail == self->cursor) {
			return -EAGAIN;
		}
		if (tail % 64 != 0 || oldest % 64 != 0 || oldest > tail || oldest < self->oldest_seen) {
			return s_corrupt(self, "tail or oldest out of bounds");
		}
		self->oldest_seen = oldest;
		if (self->cursor < oldest) {
			/* Lapped: the records we had not read are gone.  Their
			 * count comes from the sequence of the record we land on. */
			self->cursor = oldest;
			self->jumped = true;
			continue;
		}
		off = self->cursor % self->cap;
		avail = tail - self->cursor;
		r = self->data + off;
		/* Each field read once; our checked copy is what we use. */
		blen = s_get(r, 4);
		tlen = (unsigned)s_get(r + 4, 2);
		kind = (unsigned)s_get(r + 6, 2);
		seq = s_get(r + 8, 8);
		slot = kind == S_KIND_WRAP ? self->cap - off : s_align(S_REC + (uint64_t)tlen + blen);
		if ((kind != S_KIND_MSG && kind != S_KIND_WRAP) || tlen > BM_BCASTLOG_TOPIC_MAX ||
		    blen > self->cap ||
		    (kind == S_KIND_WRAP && (tlen != 0 || blen + S_REC != slot || off == 0)) ||
		    off + slot > self->cap || slot > avail || (!self->jumped && seq != self->seq) ||
		    (self->jumped && seq < self->seq)) {
			if (s_lapped(self)) {
				continue;
			}
			return s_corrupt(self, "record out of bounds or out of sequence");
		}
		gap = self->jumped ? seq - self->seq : 0;
		if (kind == S_KIND_WRAP) {
			if (s_lapped(self)) {
				continue;
			}
			self->pending_gap += gap;
			self->seq = seq;
			self->jumped = false;
			self->cursor += slot;
			continue;
		}
		if (blen > size || (buf == NULL && blen > 0)) {
			rec->len = blen;
			return -EMSGSIZE;
		}
		for (unsigned i = 0; i < tlen; i++) {
			rec->topic[i] = (char)r[S_REC + i];
		}
		rec->topic[tlen] = '\0';
		if (blen > 0) {
			memcpy(buf, (const uint8_t *)r + S_REC + tlen, blen);
		}
		rec->tseq = s_get(r + 16, 8);
		rec->ts_ms = (int64_t)s_get(r + 24, 8);
		if (s_lapped(self)) {
			continue; /* the copy may be torn: the jump counts it lost */
		}
		rec->len = blen;
		rec->seq = seq;
		rec->gap = self->pending_gap + gap;
		self->lost += rec->gap;
		self->pending_gap = 0;
		self->jumped = false;
		self->seq = seq + 1;
		self->cursor += slot;
		/* A slot handed to another reader (the publisher released us)
		 * is not ours to write any more. */
		if (atomic_load_explicit(&self->slot->gen, memory_order_relaxed) != self->gen) {
			return 0;
		}
		atomic_store_explicit(&self->slot->cursor_seq, self->seq, memory_order_relaxed);
		atomic_store_explicit(&self->slot->lost, self->lost, memory_order_relaxed);
		/* seq_cst: the store half of the publisher's Dekker pair (it
		 * sleeps for room and we ring it). */
		atomic_store_explicit(&self->slot->cursor, self->cursor,
		                      self->tethered ? memory_order_seq_cst : memory_order_release);
		if (self->tethered) {
			(void)bm__doorbell_ring(&self->db);
		}
		return 0;
	}
	return -EAGAIN;
}

typedef struct {
	bm_bcastlog_reader_t *rd;  /* the reader */
	void *buf;                 /* the caller's body buffer */
	size_t size;               /* its size */
	bm_bcastlog_rec_t *rec;    /* where the record goes */
} s_read_t;

static int
s_try(void *arg)
{
	s_read_t *r = arg;

	return r->rd->broken ? BM_ECORRUPT : s_try_read(r->rd, r->buf, r->size, r->rec);
}

int
bm_bcastlog_read(bm_bcastlog_reader_t *self, void *buf, size_t size, int timeout_ms,
                 bm_bcastlog_rec_t *ret_rec)
{
	s_read_t r = {.rd = self, .buf = buf, .size = size, .rec = ret_rec};

	if (self == NULL || ret_rec == NULL) {
		return -EINVAL;
	}
	return bm__doorbell_read(&self->db, s_try, &r, s_readable, self, timeout_ms);
}

int
bm_bcastlog_reader_arm(bm_bcastlog_reader_t *self)
{
	if (self == NULL) {
		return -EINVAL;
	}
	return bm__doorbell_arm(&self->db, s_readable, self);
}

int
bm_bcastlog_reader_fd(const bm_bcastlog_reader_t *self)
{
	return self ? self->db.fd : -EINVAL;
}

void
bm__bcastlog_reader_reset(bm_bcastlog_reader_t *self)
{
	self->broken = false;
	self->jumped = false;
	self->cursor = 0;
	self->seq = 1;
	self->oldest_seen = 0;
	self->pending_gap = 0;
	self->lost = 0;
}

uint64_t
bm_bcastlog_reader_next_seq(const bm_bcastlog_reader_t *self)
{
	return self ? self->seq : 0;
}

uint64_t
bm_bcastlog_reader_lost(const bm_bcastlog_reader_t *self)
{
	return self ? self->lost : 0;
}

const char *
bm_bcastlog_reader_from(const bm_bcastlog_reader_t *self)
{
	return self ? self->from : "";
}

uint64_t
bm_bcastlog_reader_session(const bm_bcastlog_reader_t *self)
{
	return self ? self->session : 0;
}

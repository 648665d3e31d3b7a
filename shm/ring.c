/*
 * ring.c - a single-producer single-consumer ring of variable-length
 * records in one shared-memory object.
 *
 * The producer creates the object (a memfd sealed against shrink and grow,
 * or a 0600 O_EXCL shm_open object with a random name, unlinked as soon as
 * it is mapped), lays out the header and hands the fd to the consumer (the
 * channel does that over a Unix socket).  Records are appended at `head`
 * and consumed at `tail`; both are byte positions that only grow, so
 * head - tail is the bytes in use and pos % capacity the offset.
 *
 * Zero copy: bm_ring_reserve() returns a pointer into the ring, the producer
 * fills it in place, bm_ring_commit() publishes it; bm_ring_peek() gives the
 * consumer a pointer to the record in place, bm_ring_release() frees it.
 *
 * This file makes no system call on the hot path and never blocks; waiting
 * and waking live in doorbell.c and channel.c.
 *
 * Shared layout (all integers little-endian, native atomics):
 *
 *   Header page, 4096 bytes at offset 0:
 *     off  size  field
 *       0     8  magic        "BMSHRING" (0x474e495248534d42)
 *       8     4  version      1
 *      12     4  hdr_size     4096
 *      16     8  capacity     bytes of record space; a multiple of 64
 *      24     4  flags        BM_RING_* used at creation (informational)
 *      28     4  producer_pid informational
 *      32    32  reserved, zero
 *      64     8  head         producer's write position; written by the
 *                             producer only (seq_cst store after the record)
 *      72    56  padding (head has the cache line to itself)
 *     128     8  tail         consumer's read position; consumer only
 *     136     8  blob_done    blobs the consumer has finished; consumer only
 *     144     8  blob_bad     of those, blobs that failed checks
 *     152    40  padding
 *     192     4  cons_wait    consumer's doorbell word: 0 idle, 1 waiting,
 *                             2 notified (doorbell.c)
 *     196    60  padding
 *     256     4  prod_wait    producer's doorbell word
 *     260  3836  padding to 4096
 *
 *   Record space, `capacity` bytes at offset 4096.  Each record starts on a
 *   64-byte boundary:
 *     off  size  field
 *       0     4  len    payload bytes, <= capacity - 16
 *       4     4  type   caller's type; 0xFFFFFFFF = wrap record;
 *                       0xB10B0000 and up reserved (blobs)
 *       8     8  seq    record number: 0, 1, 2 ...; a wrap record carries
 *                       the number of the record after it
 *      16   len  payload
 *     the record occupies align64(16 + len) bytes and never crosses the end
 *     of the record space.  When the next record does not fit before the
 *     end, the producer first writes a wrap record whose length fills the
 *     space to the end exactly; the consumer skips it.
 *
 * Publication: the producer writes payload and record header with plain
 * stores, then stores the new head (seq_cst, hence a release).  The consumer
 * loads head (acquire) and only then reads the record.  A producer killed
 * between reserve and commit leaves head where it was: nothing half-written
 * is ever visible.
 *
 * Never trust shared memory: each side keeps its own position (producer:
 * head, consumer: tail) as the authority and reads the peer's index once
 * per call.  Every index and length read from the ring is checked before it
 * is used: tail <= head <= tail + capacity, len <= capacity - 16, the record
 * within both the ring's end and head, seq equal to the next expected one,
 * a wrap record ending exactly at the end.  A failed check returns
 * BM_ECORRUPT and breaks the ring for good.  Payload bytes are the peer's:
 * they may change under a reader; their bounds cannot.
 *
 * Threading: one producer thread and one consumer thread (usually in two
 * processes); a bm_ring_t handle itself is single-threaded.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm_private.h"

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif

#define S_HUGE_PAGE ((size_t)2 << 20)

struct bm_ring {
	uint8_t *base;             /* mapping: header page + record space */
	size_t map_len;            /* bytes mapped */
	uint8_t *data;             /* base + BM__RING_HDR_SIZE */
	struct bm__ring_hdr *hdr;  /* base, as the header */
	uint64_t cap;              /* record space; our copy, never re-read */
	int fd;                    /* shared-memory object */
	bool producer;             /* which side this handle is */
	bool broken;               /* a check failed: every call fails */
	/* producer's own state */
	uint64_t head;             /* authoritative write position */
	uint64_t tail_seen;        /* consumer's position as last read */
	uint64_t seq;              /* next record's sequence number */
	uint64_t resv_off;         /* offset of the reserved record */
	size_t resv_len;           /* reserved payload bytes */
	bool reserved;             /* a reservation is open */
	/* consumer's own state */
	uint64_t tail;             /* authoritative read position */
	uint64_t expect_seq;       /* sequence number the next record must have */
	uint64_t peek_slot;        /* bytes of the peeked record, 0 = none */
	bm_ring_rec_t peeked;      /* the peeked record */
};

static inline uint64_t
s_align(uint64_t n)
{
	return (n + BM__RING_ALIGN - 1) & ~(uint64_t)(BM__RING_ALIGN - 1);
}

static int
s_corrupt(bm_ring_t *self, const char *why)
{
	if (!self->broken) {
		bm_debug("ring: shared memory failed a check: %s", why);
	}
	self->broken = true;
	return BM_ECORRUPT;
}

static int
s_shm_open_fd(size_t size)
{
	char name[64];
	uint64_t rnd;
	int fd = -1;

	for (int i = 0; i < 8 && fd < 0; i++) {
		if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
			return -EIO;
		}
		snprintf(name, sizeof name, "/bm-shm-%d-%016llx", (int)getpid(),
		         (unsigned long long)rnd);
		fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST) {
			return -errno;
		}
	}
	if (fd < 0) {
		return -EEXIST;
	}
	/* Unlinked before anything else can fail: the name lives only for
	 * these few instructions, and a crash after this leaks nothing. */
	shm_unlink(name);
	if (ftruncate(fd, (off_t)size) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

static int
s_memfd(size_t size, bool huge)
{
	int fd = memfd_create("bm-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB : 0));
	int rc;

	if (fd < 0) {
		return -errno;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int
bm_ring_create(size_t capacity, unsigned flags, bm_ring_t **ret_ring)
{
	bm_ring_t *self;
	size_t cap, size;
	int fd = -1, mflags, rc;
	void *p = MAP_FAILED;

	if (ret_ring == NULL || capacity < BM_RING_MIN_CAPACITY || capacity > BM_RING_MAX_CAPACITY) {
		return -EINVAL;
	}
	cap = (capacity + 4095) & ~(size_t)4095;
	size = BM__RING_HDR_SIZE + cap;
	mflags = MAP_SHARED | MAP_NORESERVE | ((flags & BM_RING_PREFAULT) ? MAP_POPULATE : 0);

	if ((flags & BM_RING_HUGEPAGES) && !(flags & BM_RING_SHM_OPEN)) {
		size_t hsize = (size + S_HUGE_PAGE - 1) & ~(S_HUGE_PAGE - 1);

		/* hugetlb pages exist only when the admin reserved some;
		 * without them fall back to plain pages with THP advice. */
		fd = s_memfd(hsize, true);
		if (fd >= 0) {
			/* Without MAP_NORESERVE the kernel reserves the huge
			 * pages now and fails here, not with SIGBUS later. */
			p = mmap(NULL, hsize, PROT_READ | PROT_WRITE, mflags & ~MAP_NORESERVE, fd, 0);
			if (p == MAP_FAILED) {
				close(fd);
				fd = -1;
			} else {
				size = hsize;
				cap = size - BM__RING_HDR_SIZE;
			}
		}
	}
	if (fd < 0) {
		fd = (flags & BM_RING_SHM_OPEN) ? s_shm_open_fd(size) : s_memfd(size, false);
		if (fd < 0) {
			return fd;
		}
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, mflags, fd, 0);
		if (p == MAP_FAILED) {
			rc = -errno;
			close(fd);
			return rc;
		}
		if (flags & BM_RING_HUGEPAGES) {
			(void)madvise(p, size, MADV_HUGEPAGE);
		}
	}
	self = calloc(1, sizeof *self);
	if (self == NULL) {
		munmap(p, size);
		close(fd);
		return -ENOMEM;
	}
	self->base = p;
	self->map_len = size;
	self->hdr = p;
	self->data = self->base + BM__RING_HDR_SIZE;
	self->cap = cap;
	self->fd = fd;
	self->producer = true;

	self->hdr->magic = BM__RING_MAGIC;
	self->hdr->version = BM__RING_VERSION;
	self->hdr->hdr_size = BM__RING_HDR_SIZE;
	self->hdr->capacity = cap;
	self->hdr->flags = flags;
	self->hdr->producer_pid = (uint32_t)getpid();
	atomic_store(&self->hdr->head, 0);
	atomic_store(&self->hdr->tail, 0);
	atomic_store(&self->hdr->cons_wait, BM__DB_IDLE);
	atomic_store(&self->hdr->prod_wait, BM__DB_IDLE);
	*ret_ring = self;
	return 0;
}

/* A memfd's /proc link reads "/memfd:NAME (deleted)"; a shm_open object's
 * is its /dev/shm path and cannot be sealed at all. */
static bool
s_is_memfd(int fd)
{
	char proc[64], link[256];
	ssize_t n;

	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	n = readlink(proc, link, sizeof link - 1);
	if (n < 0) {
		return true; /* no /proc: insist on the seals */
	}
	link[n] = '\0';
	return strncmp(link, "/memfd:", 7) == 0;
}

int
bm_ring_attach(int fd, bm_ring_t **ret_ring)
{
	struct stat st;
	bm_ring_t *self;
	struct bm__ring_hdr *hdr;
	uint64_t cap, head, tail;
	int seals, myfd, rc;
	void *p;

	if (ret_ring == NULL || fd < 0) {
		return -EINVAL;
	}
	if (fstat(fd, &st) < 0) {
		return -errno;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)(BM__RING_HDR_SIZE + BM_RING_MIN_CAPACITY) ||
	    st.st_size > (off_t)(BM__RING_HDR_SIZE + BM_RING_MAX_CAPACITY + S_HUGE_PAGE)) {
		return BM_ECORRUPT;
	}
	/* A memfd must be sealed so the producer cannot shrink it under us
	 * (SIGBUS).  A shm_open object cannot be sealed; it was unlinked and
	 * only a same-uid peer holds it. */
	seals = fcntl(fd, F_GET_SEALS);
	if (s_is_memfd(fd) &&
	    (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))) {
		return BM_ECORRUPT;
	}
	myfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (myfd < 0) {
		return -errno;
	}
	/* No MAP_NORESERVE: a hugetlb object without reserved pages fails
	 * here instead of raising SIGBUS at first touch. */
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, myfd, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		close(myfd);
		return rc;
	}
	hdr = p;
	cap = hdr->capacity;
	rc = 0;
	if (hdr->magic != BM__RING_MAGIC || hdr->hdr_size != BM__RING_HDR_SIZE) {
		rc = BM_ECORRUPT;
	} else if (hdr->version != BM__RING_VERSION) {
		rc = BM_EVERSION;
	} else if (cap != (uint64_t)st.st_size - BM__RING_HDR_SIZE || cap % BM__RING_ALIGN != 0) {
		rc = BM_ECORRUPT;
	}
	head = atomic_load(&hdr->head);
	tail = atomic_load(&hdr->tail);
	if (rc == 0 && (tail != 0 || head > cap)) {
		rc = BM_ECORRUPT;
	}
	if (rc == 0 && (self = calloc(1, sizeof *self)) == NULL) {
		rc = -ENOMEM;
	}
	if (rc < 0) {
		munmap(p, (size_t)st.st_size);
		close(myfd);
		return rc;
	}
	self->base = p;
	self->map_len = (size_t)st.st_size;
	self->hdr = hdr;
	self->data = self->base + BM__RING_HDR_SIZE;
	self->cap = cap;
	self->fd = myfd;
	self->producer = false;
	*ret_ring = self;
	return 0;
}

void
bm_ring_destroy(bm_ring_t **self_p)
{
	bm_ring_t *self;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	self = *self_p;
	if (self->base != NULL) {
		munmap(self->base, self->map_len);
	}
	if (self->fd >= 0) {
		close(self->fd);
	}
	free(self);
	*self_p = NULL;
}

int
bm_ring_fd(const bm_ring_t *self)
{
	return self ? self->fd : -EINVAL;
}

size_t
bm_ring_capacity(const bm_ring_t *self)
{
	return self ? (size_t)self->cap : 0;
}

size_t
bm_ring_max_record(const bm_ring_t *self)
{
	uint64_t m;

	if (self == NULL) {
		return 0;
	}
	m = self->cap - BM_RING_RECORD_HEADER;
	return m > UINT32_MAX ? UINT32_MAX & ~(size_t)63 : (size_t)m;
}

size_t
bm_ring_used(const bm_ring_t *self)
{
	if (self == NULL) {
		return 0;
	}
	if (self->producer) {
		return (size_t)(self->head - self->tail_seen);
	}
	return (size_t)(atomic_load_explicit(&self->hdr->head, memory_order_acquire) - self->tail);
}

/* Producer: reads the consumer's tail once and checks it. */
static int
s_read_tail(bm_ring_t *self, uint64_t *ret_tail)
{
	uint64_t tail = atomic_load_explicit(&self->hdr->tail, memory_order_acquire);

	if (tail > self->head || self->head - tail > self->cap || tail < self->tail_seen) {
		return s_corrupt(self, "tail out of bounds");
	}
	self->tail_seen = tail;
	*ret_tail = tail;
	return 0;
}

static void
s_write_header(bm_ring_t *self, uint64_t off, uint32_t len, uint32_t type)
{
	uint8_t *rec = self->data + off;

	memcpy(rec, &len, 4);
	memcpy(rec + 4, &type, 4);
	memcpy(rec + 8, &self->seq, 8);
	self->seq++;
}

int
bm_ring_reserve(bm_ring_t *self, size_t len, void **ret_ptr)
{
	uint64_t tail, off, slot, room;
	int rc;

	if (self == NULL || ret_ptr == NULL || !self->producer) {
		return -EINVAL;
	}
	if (self->broken) {
		return BM_ECORRUPT;
	}
	if (self->reserved) {
		return -EBUSY;
	}
	if (len > bm_ring_max_record(self)) {
		return BM_ETOOBIG;
	}
	slot = s_align(BM_RING_RECORD_HEADER + len);
	if ((rc = s_read_tail(self, &tail)) < 0) {
		return rc;
	}
	room = self->cap - (self->head - tail);
	off = self->head % self->cap;
	if (off + slot > self->cap) {
		uint64_t wrap = self->cap - off;

		if (room < wrap) {
			return BM_EFULL;
		}
		/* Publish the wrap record alone: the record after it may need
		 * the space the consumer frees by skipping it. */
		s_write_header(self, off, (uint32_t)(wrap - BM_RING_RECORD_HEADER), BM__RING_TYPE_WRAP);
		self->seq--; /* a wrap carries the next record's number */
		self->head += wrap;
		atomic_store_explicit(&self->hdr->head, self->head, memory_order_seq_cst);
		room -= wrap;
		off = 0;
	}
	if (room < slot) {
		return BM_EFULL;
	}
	self->reserved = true;
	self->resv_off = off;
	self->resv_len = len;
	*ret_ptr = self->data + off + BM_RING_RECORD_HEADER;
	return 0;
}

int
bm_ring_commit(bm_ring_t *self, uint32_t type, size_t len)
{
	if (self == NULL || !self->producer || !self->reserved || len > self->resv_len ||
	    type == BM__RING_TYPE_WRAP) {
		return -EINVAL;
	}
	if (self->broken) {
		return BM_ECORRUPT;
	}
	s_write_header(self, self->resv_off, (uint32_t)len, type);
	self->head += s_align(BM_RING_RECORD_HEADER + len);
	self->reserved = false;
	/* seq_cst: a release for the record, and the store half of the
	 * doorbell's Dekker pair (doorbell.c). */
	atomic_store_explicit(&self->hdr->head, self->head, memory_order_seq_cst);
	return 0;
}

void
bm_ring_abort(bm_ring_t *self)
{
	if (self != NULL) {
		self->reserved = false;
	}
}

int
bm_ring_peek(bm_ring_t *self, bm_ring_rec_t *ret_rec)
{
	uint64_t head, off, slot, avail, seq;
	uint32_t len, type;
	const volatile uint8_t *rec;

	if (self == NULL || ret_rec == NULL || self->producer) {
		return -EINVAL;
	}
	if (self->broken) {
		return BM_ECORRUPT;
	}
	if (self->peek_slot != 0) {
		*ret_rec = self->peeked;
		return 0;
	}
	for (;;) {
		head = atomic_load_explicit(&self->hdr->head, memory_order_seq_cst);
		if (head == self->tail) {
			return -EAGAIN;
		}
		if (head < self->tail || head - self->tail > self->cap) {
			return s_corrupt(self, "head out of bounds");
		}
		avail = head - self->tail;
		off = self->tail % self->cap;
		rec = self->data + off;
		/* Each field read once through volatile: the peer may rewrite
		 * it, our checked copy is what we use. */
		len = (uint32_t)rec[0] | (uint32_t)rec[1] << 8 | (uint32_t)rec[2] << 16 |
		      (uint32_t)rec[3] << 24;
		type = (uint32_t)rec[4] | (uint32_t)rec[5] << 8 | (uint32_t)rec[6] << 16 |
		       (uint32_t)rec[7] << 24;
		seq = 0;
		for (int i = 7; i >= 0; i--) {
			seq = seq << 8 | rec[8 + i];
		}
		if ((uint64_t)len > self->cap - BM_RING_RECORD_HEADER) {
			return s_corrupt(self, "record length beyond capacity");
		}
		slot = s_align(BM_RING_RECORD_HEADER + (uint64_t)len);
		if (off + slot > self->cap || slot > avail) {
			return s_corrupt(self, "record beyond the ring's end or head");
		}
		if (seq != self->expect_seq) {
			return s_corrupt(self, "record out of sequence");
		}
		if (type == BM__RING_TYPE_WRAP) {
			if (off + slot != self->cap) {
				return s_corrupt(self, "wrap record does not end the ring");
			}
			self->tail += slot;
			atomic_store_explicit(&self->hdr->tail, self->tail, memory_order_seq_cst);
			continue;
		}
		self->peeked.data = self->data + off + BM_RING_RECORD_HEADER;
		self->peeked.len = len;
		self->peeked.type = type;
		self->peeked.seq = seq;
		self->peek_slot = slot;
		*ret_rec = self->peeked;
		return 0;
	}
}

int
bm_ring_release(bm_ring_t *self)
{
	if (self == NULL || self->producer || self->peek_slot == 0) {
		return -EINVAL;
	}
	if (self->broken) {
		return BM_ECORRUPT;
	}
	self->tail += self->peek_slot;
	self->expect_seq++;
	self->peek_slot = 0;
	/* seq_cst: the store half of the producer-side Dekker pair. */
	atomic_store_explicit(&self->hdr->tail, self->tail, memory_order_seq_cst);
	return 0;
}

int
bm_ring_write(bm_ring_t *self, uint32_t type, const void *buf, size_t len)
{
	void *p;
	int rc;

	if (buf == NULL && len > 0) {
		return -EINVAL;
	}
	if ((rc = bm_ring_reserve(self, len, &p)) < 0) {
		return rc;
	}
	if (len > 0) {
		memcpy(p, buf, len);
	}
	return bm_ring_commit(self, type, len);
}

int
bm_ring_read(bm_ring_t *self, void *buf, size_t size, size_t *ret_len, uint32_t *ret_type)
{
	bm_ring_rec_t rec;
	int rc;

	if ((rc = bm_ring_peek(self, &rec)) < 0) {
		return rc;
	}
	if (ret_len != NULL) {
		*ret_len = rec.len;
	}
	if (rec.len > size || (buf == NULL && rec.len > 0)) {
		return -EMSGSIZE;
	}
	if (rec.len > 0) {
		memcpy(buf, rec.data, rec.len);
	}
	if (ret_type != NULL) {
		*ret_type = rec.type;
	}
	return bm_ring_release(self);
}

struct bm__ring_hdr *
bm__ring_hdr(bm_ring_t *ring)
{
	return ring->hdr;
}

bool
bm__ring_is_producer(const bm_ring_t *ring)
{
	return ring->producer;
}

bool
bm__ring_broken(const bm_ring_t *ring)
{
	return ring->broken;
}

bool
bm__ring_readable(bm_ring_t *ring)
{
	/* seq_cst: the load half of the consumer's Dekker pair.  A wrap
	 * record counts as readable: skipping it frees room the producer
	 * may be waiting for. */
	return ring->peek_slot != 0 || ring->broken ||
	       atomic_load_explicit(&ring->hdr->head, memory_order_seq_cst) != ring->tail;
}

bool
bm__ring_writable(bm_ring_t *ring, size_t len)
{
	uint64_t tail = atomic_load_explicit(&ring->hdr->tail, memory_order_seq_cst);
	uint64_t slot = s_align(BM_RING_RECORD_HEADER + len);
	uint64_t off = ring->head % ring->cap;

	if (tail > ring->head || ring->head - tail > ring->cap) {
		return true; /* let reserve report the corruption */
	}
	if (off + slot > ring->cap) {
		/* Room for the wrap is enough to make progress. */
		return ring->cap - (ring->head - tail) >= ring->cap - off;
	}
	return ring->cap - (ring->head - tail) >= slot;
}

/*
 * blob.c - payloads of any size over a channel, with an optional CRC32C.
 *
 * Two ways, one API:
 *   - streamed: BLOB_BEGIN, then BLOB_CHUNK records of at most a quarter of
 *     the ring, then BLOB_END with the checksum.  For blobs up to a quarter
 *     of the ring (and, from files, straight from read() into the ring);
 *   - whole: the bytes sit in a memfd sealed against write, shrink, grow and
 *     further sealing; its fd goes over the socket ("F"+id, SCM_RIGHTS) and
 *     a BLOB_FD record in the ring says what it is.  The receiver maps it
 *     read-only: zero copy, and the seals stop the sender changing it.
 * The receiver calls bm_blob_recv() (or _fd) either way.
 *
 * Blob records (payload of the ring record, little-endian):
 *   BLOB_BEGIN / BLOB_FD / BLOB_END:
 *     0  8  id        sender's blob number, 1, 2, 3 ... in order
 *     8  8  size      total bytes
 *    16  4  content   BM_BLOB_RAW / PLY / PCD
 *    20  4  flags     bit 0: crc is valid
 *    24  4  crc       CRC32C of the bytes (BLOB_FD, BLOB_END)
 *    28  4  name_len  0..255 (BEGIN, FD; 0 in END)
 *    32  n  name
 *   BLOB_CHUNK: the bytes.
 *
 * Confirmation: after a blob the consumer increments blob_done (and
 * blob_bad when a check failed) in the ring header and rings the producer;
 * bm_blob_wait() waits for blob_done to reach an id.  The producer checks
 * blob_done against the number it sent (never trust shared memory).
 * At most BM__DB_MAX_FDS memfd blobs are unconfirmed at a time, so the
 * receiver's fd stash cannot overflow.
 *
 * CRC32C uses the SSE4.2 crc32 instruction when the CPU has it, else a
 * byte table.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm_private.h"

#define S_WIRE 32
#define S_FLAG_CRC 1u
#define S_SEALS_ALL (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)

struct bm_blob {
	void *map;            /* the bytes (memfd mapping or anonymous) */
	size_t map_len;       /* bytes mapped (size, or 0) */
	int fd;               /* memfd for blobs from bm_blob_new(), else -1 */
	bool writable;        /* made by bm_blob_new(), not yet sent */
	bm_blob_info_t info;  /* name, size, checksum ... */
};

/* ---- CRC32C ---- */

static uint32_t s_table[256];

static void
s_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++) {
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		}
		s_table[i] = c;
	}
}

static uint32_t
s_crc_sw(uint32_t crc, const uint8_t *p, size_t n)
{
	static int ready;

	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		s_table_init(); /* idempotent: racing threads write equal values */
		__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
	}
	while (n--) {
		crc = s_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	}
	return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t
s_crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
	uint64_t c = crc;

	while (n > 0 && ((uintptr_t)p & 7) != 0) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		n--;
	}
	while (n >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		n -= 8;
	}
	while (n > 0) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		n--;
	}
	return (uint32_t)c;
}
#endif

uint32_t
bm_crc32c(uint32_t crc, const void *buf, size_t len)
{
	crc = ~crc;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2")) {
		return ~s_crc_hw(crc, buf, len);
	}
#endif
	return ~s_crc_sw(crc, buf, len);
}

/* ---- wire ---- */

static void
s_wire_put(uint8_t *p, const bm_blob_info_t *info, size_t name_len)
{
	uint32_t flags = info->has_crc ? S_FLAG_CRC : 0, nl = (uint32_t)name_len;

	memcpy(p, &info->id, 8);
	memcpy(p + 8, &info->size, 8);
	memcpy(p + 16, &info->content, 4);
	memcpy(p + 20, &flags, 4);
	memcpy(p + 24, &info->crc, 4);
	memcpy(p + 28, &nl, 4);
	if (name_len > 0) {
		memcpy(p + S_WIRE, info->name, name_len);
	}
}

/* Copies a record out of the ring before looking at it, and checks it. */
static int
s_wire_get(const bm_ring_rec_t *rec, bm_blob_info_t *info)
{
	uint8_t buf[S_WIRE + BM_BLOB_NAME_MAX];
	uint32_t flags, nl;
	size_t n = rec->len < sizeof buf ? rec->len : sizeof buf;

	if (rec->len < S_WIRE) {
		return BM_ECORRUPT;
	}
	memcpy(buf, rec->data, n);
	memcpy(&nl, buf + 28, 4);
	if (nl > BM_BLOB_NAME_MAX || S_WIRE + (size_t)nl != rec->len) {
		return BM_ECORRUPT;
	}
	memset(info, 0, sizeof *info);
	memcpy(&info->id, buf, 8);
	memcpy(&info->size, buf + 8, 8);
	memcpy(&info->content, buf + 16, 4);
	memcpy(&flags, buf + 20, 4);
	memcpy(&info->crc, buf + 24, 4);
	memcpy(info->name, buf + S_WIRE, nl);
	info->name[nl] = '\0';
	if (memchr(info->name, '\0', nl) != NULL) {
		return BM_ECORRUPT;
	}
	info->has_crc = (flags & S_FLAG_CRC) != 0;
	return 0;
}

static void
s_info_from_opts(bm_blob_info_t *info, uint64_t id, uint64_t size, const bm_blob_opts_t *opts)
{
	memset(info, 0, sizeof *info);
	info->id = id;
	info->size = size;
	if (opts != NULL) {
		if (opts->name != NULL) {
			snprintf(info->name, sizeof info->name, "%s", opts->name);
		}
		info->content = opts->content;
		info->has_crc = (opts->flags & BM_BLOB_CHECKSUM) != 0;
	}
}

static int
s_send_meta(bm_channel_t *ch, uint32_t type, const bm_blob_info_t *info, bool with_name,
            int64_t deadline)
{
	size_t nl = with_name ? strlen(info->name) : 0;
	int ms = deadline < 0 ? -1 : (int)((deadline - bm_mono_ns()) / 1000000);
	void *p;
	int rc;

	if (deadline >= 0 && ms < 1) {
		ms = deadline == 0 ? 0 : 1;
	}
	if ((rc = bm_channel_reserve(ch, S_WIRE + nl, ms, &p)) < 0) {
		return rc;
	}
	s_wire_put(p, info, nl);
	return bm_channel_commit(ch, type, S_WIRE + nl);
}

/* ---- sending ---- */

static bool
s_done_reaches(void *arg)
{
	void **a = arg;
	bm_channel_t *ch = a[0];
	uint64_t want = *(uint64_t *)a[1];
	uint64_t done = atomic_load_explicit(&bm__ring_hdr(bm_channel_ring(ch))->blob_done,
	                                     memory_order_seq_cst);

	/* Out of bounds counts as "ready" so the caller sees it and fails. */
	return done >= want || done > bm__channel_blobs_sent(ch);
}

static int
s_wait_done(bm_channel_t *ch, uint64_t want, int64_t deadline)
{
	void *arg[2] = {ch, &want};
	uint64_t done;
	int rc;

	rc = bm__doorbell_wait(bm__channel_doorbell(ch), s_done_reaches, arg, deadline);
	if (rc < 0) {
		return rc;
	}
	done = atomic_load(&bm__ring_hdr(bm_channel_ring(ch))->blob_done);
	if (done > bm__channel_blobs_sent(ch)) {
		return BM_ECORRUPT;
	}
	return 0;
}

static int64_t
s_send_memfd(bm_channel_t *ch, int memfd, bm_blob_info_t *info, int64_t deadline)
{
	int rc;

	if (info->id > BM__DB_MAX_FDS &&
	    (rc = s_wait_done(ch, info->id - BM__DB_MAX_FDS, deadline)) < 0) {
		return rc;
	}
	if ((rc = bm__doorbell_send_fd(bm__channel_doorbell(ch), info->id, memfd)) < 0) {
		return rc;
	}
	info->via_fd = true;
	if ((rc = s_send_meta(ch, BM__REC_BLOB_FD, info, true, deadline)) < 0) {
		return rc;
	}
	return (int64_t)info->id;
}

static int
s_seal(int fd)
{
	return fcntl(fd, F_ADD_SEALS, S_SEALS_ALL) < 0 ? -errno : 0;
}

static int
s_memfd(size_t size, void **ret_map)
{
	int fd = memfd_create("bm-blob", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *p = NULL;
	int rc;

	if (fd < 0) {
		return -errno;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (size > 0) {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			rc = -errno;
			close(fd);
			return rc;
		}
	}
	*ret_map = p;
	return fd;
}

static bool
s_use_fd(bm_channel_t *ch, uint64_t size, const bm_blob_opts_t *opts)
{
	unsigned f = opts ? opts->flags : 0;

	if (f & BM_BLOB_FORCE_FD) {
		return true;
	}
	if (f & BM_BLOB_FORCE_STREAM) {
		return false;
	}
	return size > bm_ring_capacity(bm_channel_ring(ch)) / 4;
}

static size_t
s_chunk(bm_channel_t *ch)
{
	return bm_ring_capacity(bm_channel_ring(ch)) / 4;
}

static int
s_ms_left(int64_t deadline)
{
	int64_t left;

	if (deadline < 0) {
		return -1;
	}
	if (deadline == 0) {
		return 0;
	}
	left = (deadline - bm_mono_ns()) / 1000000;
	return left < 1 ? 1 : (int)left;
}

int64_t
bm_blob_send(bm_channel_t *ch, const void *data, size_t len, const bm_blob_opts_t *opts,
             int timeout_ms)
{
	int64_t deadline = bm__deadline(timeout_ms), rc;
	const uint8_t *src = data;
	bm_blob_info_t info;
	size_t off = 0, chunk;
	uint32_t crc = 0;

	if (ch == NULL || !bm_channel_is_producer(ch) || (data == NULL && len > 0)) {
		return -EINVAL;
	}
	s_info_from_opts(&info, bm__channel_next_blob_id(ch), len, opts);
	if (s_use_fd(ch, len, opts)) {
		void *map = NULL;
		int fd = s_memfd(len, &map);

		if (fd < 0) {
			return fd;
		}
		if (len > 0) {
			memcpy(map, data, len);
			if (info.has_crc) {
				info.crc = bm_crc32c(0, map, len);
			}
			munmap(map, len);
		}
		rc = s_seal(fd);
		if (rc == 0) {
			rc = s_send_memfd(ch, fd, &info, deadline);
		}
		close(fd);
		return rc;
	}
	if ((rc = s_send_meta(ch, BM__REC_BLOB_BEGIN, &info, true, deadline)) < 0) {
		return rc;
	}
	chunk = s_chunk(ch);
	while (off < len) {
		size_t n = len - off < chunk ? len - off : chunk;
		void *p;

		if ((rc = bm_channel_reserve(ch, n, s_ms_left(deadline), &p)) < 0) {
			return rc;
		}
		memcpy(p, src + off, n);
		if (info.has_crc) {
			crc = bm_crc32c(crc, src + off, n);
		}
		if ((rc = bm_channel_commit(ch, BM__REC_BLOB_CHUNK, n)) < 0) {
			return rc;
		}
		off += n;
	}
	info.crc = crc;
	if ((rc = s_send_meta(ch, BM__REC_BLOB_END, &info, false, deadline)) < 0) {
		return rc;
	}
	return (int64_t)info.id;
}

static int
s_read_full(int fd, uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t r = read(fd, p, n);

		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r < 0) {
			return -errno;
		}
		if (r == 0) {
			return -EIO; /* the file shrank under us */
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int64_t
bm_blob_send_fd(bm_channel_t *ch, int in_fd, uint64_t size, const bm_blob_opts_t *opts,
                int timeout_ms)
{
	int64_t deadline = bm__deadline(timeout_ms), rc;
	bm_blob_info_t info;
	uint64_t off = 0;
	uint32_t crc = 0;
	size_t chunk;

	if (ch == NULL || !bm_channel_is_producer(ch) || in_fd < 0 || size > (uint64_t)SIZE_MAX / 2) {
		return -EINVAL;
	}
	s_info_from_opts(&info, bm__channel_next_blob_id(ch), size, opts);
	if (s_use_fd(ch, size, opts)) {
		void *map = NULL;
		int fd = s_memfd((size_t)size, &map);

		if (fd < 0) {
			return fd;
		}
		rc = 0;
		if (size > 0) {
			rc = s_read_full(in_fd, map, (size_t)size);
			if (rc == 0 && info.has_crc) {
				info.crc = bm_crc32c(0, map, (size_t)size);
			}
			munmap(map, (size_t)size);
		}
		if (rc == 0) {
			rc = s_seal(fd);
		}
		if (rc == 0) {
			rc = s_send_memfd(ch, fd, &info, deadline);
		}
		close(fd);
		return rc;
	}
	if ((rc = s_send_meta(ch, BM__REC_BLOB_BEGIN, &info, true, deadline)) < 0) {
		return rc;
	}
	chunk = s_chunk(ch);
	while (off < size) {
		size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
		void *p;

		if ((rc = bm_channel_reserve(ch, n, s_ms_left(deadline), &p)) < 0) {
			return rc;
		}
		/* Straight from the file into the ring: no bounce buffer. */
		if ((rc = s_read_full(in_fd, p, n)) < 0) {
			bm_ring_abort(bm_channel_ring(ch));
			/* The receiver sees a short blob and reports it. */
			info.size = off;
			(void)s_send_meta(ch, BM__REC_BLOB_END, &info, false, deadline);
			return rc;
		}
		if (info.has_crc) {
			crc = bm_crc32c(crc, p, n);
		}
		if ((rc = bm_channel_commit(ch, BM__REC_BLOB_CHUNK, n)) < 0) {
			return rc;
		}
		off += n;
	}
	info.crc = crc;
	if ((rc = s_send_meta(ch, BM__REC_BLOB_END, &info, false, deadline)) < 0) {
		return rc;
	}
	return (int64_t)info.id;
}

int
bm_blob_new(size_t size, bm_blob_t **ret_blob)
{
	bm_blob_t *self;
	void *map = NULL;
	int fd;

	if (ret_blob == NULL) {
		return -EINVAL;
	}
	if ((fd = s_memfd(size, &map)) < 0) {
		return fd;
	}
	self = calloc(1, sizeof *self);
	if (self == NULL) {
		if (map != NULL) {
			munmap(map, size);
		}
		close(fd);
		return -ENOMEM;
	}
	self->map = map;
	self->map_len = size;
	self->fd = fd;
	self->writable = true;
	self->info.size = size;
	*ret_blob = self;
	return 0;
}

int
bm_blob_adopt_fd(int fd, bm_blob_t **ret_blob)
{
	bm_blob_t *self;
	struct stat st;
	void *map = NULL;
	int seals;

	if (fd < 0 || ret_blob == NULL) {
		return -EINVAL;
	}
	/* A memfd that can still be sealed against writes; nothing else. */
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & (F_SEAL_SEAL | F_SEAL_WRITE)) != 0) {
		return -EINVAL;
	}
	if (fstat(fd, &st) < 0) {
		return -errno;
	}
	if (st.st_size > 0) {
		map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			return -errno;
		}
	}
	self = calloc(1, sizeof *self);
	if (self == NULL) {
		if (map != NULL) {
			munmap(map, (size_t)st.st_size);
		}
		return -ENOMEM;
	}
	self->map = map;
	self->map_len = (size_t)st.st_size;
	self->fd = fd;
	self->writable = true;
	self->info.size = (uint64_t)st.st_size;
	*ret_blob = self;
	return 0;
}

void *
bm_blob_wdata(bm_blob_t *self)
{
	return (self && self->writable) ? self->map : NULL;
}

int64_t
bm_blob_send_blob(bm_channel_t *ch, bm_blob_t **blob_p, const bm_blob_opts_t *opts, int timeout_ms)
{
	int64_t deadline = bm__deadline(timeout_ms), rc;
	bm_blob_t *blob;
	bm_blob_info_t info;

	if (ch == NULL || !bm_channel_is_producer(ch) || blob_p == NULL || *blob_p == NULL ||
	    !(*blob_p)->writable) {
		return -EINVAL;
	}
	blob = *blob_p;
	s_info_from_opts(&info, bm__channel_next_blob_id(ch), blob->info.size, opts);
	if (info.has_crc && blob->map_len > 0) {
		info.crc = bm_crc32c(0, blob->map, blob->map_len);
	}
	/* F_SEAL_WRITE needs every writable mapping gone. */
	if (blob->map != NULL) {
		munmap(blob->map, blob->map_len);
		blob->map = NULL;
		blob->map_len = 0;
	}
	blob->writable = false;
	if ((rc = s_seal(blob->fd)) < 0) {
		return rc;
	}
	rc = s_send_memfd(ch, blob->fd, &info, deadline);
	if (rc > 0) {
		bm_blob_destroy(blob_p);
	}
	return rc;
}

int
bm_blob_wait(bm_channel_t *ch, uint64_t id, int timeout_ms)
{
	uint64_t bad, *seen;
	int rc;

	if (ch == NULL || !bm_channel_is_producer(ch) || id == 0 || id > bm__channel_blobs_sent(ch)) {
		return -EINVAL;
	}
	if ((rc = s_wait_done(ch, id, bm__deadline(timeout_ms))) < 0) {
		return rc;
	}
	seen = bm__channel_bad_seen(ch);
	bad = atomic_load(&bm__ring_hdr(bm_channel_ring(ch))->blob_bad);
	if (bad > bm__channel_blobs_sent(ch)) {
		return BM_ECORRUPT;
	}
	if (bad > *seen) {
		*seen = bad;
		return BM_ECORRUPT;
	}
	return 0;
}

/* ---- receiving ---- */

/* Consumer: counts a finished blob and tells the producer. */
static void
s_confirm(bm_channel_t *ch, bool ok)
{
	struct bm__ring_hdr *hdr = bm__ring_hdr(bm_channel_ring(ch));

	if (!ok) {
		atomic_fetch_add_explicit(&hdr->blob_bad, 1, memory_order_seq_cst);
	}
	atomic_fetch_add_explicit(&hdr->blob_done, 1, memory_order_seq_cst);
	(void)bm__doorbell_ring(bm__channel_doorbell(ch));
}

static int
s_write_full(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR) {
			continue;
		}
		if (w < 0) {
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Receives the memfd of a BLOB_FD record and maps it read-only. */
static int
s_map_fd(bm_channel_t *ch, const bm_blob_info_t *info, int64_t deadline, void **ret_map)
{
	struct stat st;
	int fd, seals, rc = 0;
	void *p = NULL;

	if ((rc = bm__doorbell_take_fd(bm__channel_doorbell(ch), info->id, deadline, &fd)) < 0) {
		return rc;
	}
	seals = fcntl(fd, F_GET_SEALS);
	if (fstat(fd, &st) < 0) {
		rc = -errno;
	} else if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)) !=
	                            (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)) {
		bm_debug("blob: memfd %llu is not sealed", (unsigned long long)info->id);
		rc = BM_ECORRUPT;
	} else if ((uint64_t)st.st_size != info->size || info->size > (uint64_t)SIZE_MAX / 2) {
		rc = BM_ECORRUPT;
	} else if (info->size > 0) {
		p = mmap(NULL, (size_t)info->size, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			rc = -errno;
			p = NULL;
		}
	}
	close(fd);
	*ret_map = p;
	return rc;
}

/*
 * The common receive path: to memory (out_map != NULL) or to out_fd.
 * Fills info; returns 0, BM_ECORRUPT after confirming a bad blob, or an
 * error without confirmation when the channel broke.
 */
static int
s_recv(bm_channel_t *ch, int timeout_ms, int out_fd, void **out_map, size_t *out_len,
       bm_blob_info_t *info)
{
	int64_t deadline = bm__deadline(timeout_ms);
	bm_ring_rec_t rec;
	bm_blob_info_t end;
	uint64_t got = 0;
	uint32_t crc = 0;
	uint8_t *buf = NULL;
	bool ok = true, toobig;
	int rc;

	if ((rc = bm_channel_peek(ch, timeout_ms, &rec)) < 0) {
		return rc;
	}
	if (rec.type != BM__REC_BLOB_BEGIN && rec.type != BM__REC_BLOB_FD) {
		return BM_EPROTO;
	}
	if ((rc = s_wire_get(&rec, info)) < 0) {
		return rc;
	}
	if ((rc = bm_channel_release(ch)) < 0) {
		return rc;
	}
	if (rec.type == BM__REC_BLOB_FD) {
		void *map = NULL;

		info->via_fd = true;
		if ((rc = s_map_fd(ch, info, deadline, &map)) < 0) {
			if (rc == BM_ECORRUPT) {
				s_confirm(ch, false);
			}
			return rc;
		}
		if (info->has_crc && map != NULL && bm_crc32c(0, map, (size_t)info->size) != info->crc) {
			ok = false;
		}
		if (ok && out_fd >= 0 && map != NULL) {
			rc = s_write_full(out_fd, map, (size_t)info->size);
		}
		if (out_map != NULL && ok) {
			*out_map = map;
			*out_len = (size_t)info->size;
		} else if (map != NULL) {
			munmap(map, (size_t)info->size);
		}
		s_confirm(ch, ok && rc == 0);
		return rc < 0 ? rc : (ok ? 0 : BM_ECORRUPT);
	}
	/* Streamed.  Over the consumer's cap, the blob is drained without
	 * being assembled or written, then refused: the ring keeps moving and
	 * no memory is taken for it. */
	toobig = info->size > bm__channel_max_blob(ch);
	if (toobig) {
		out_map = NULL;
		out_fd = -1;
	}
	if (out_map != NULL && info->size > 0) {
		if (info->size > (uint64_t)SIZE_MAX / 2) {
			return -ENOMEM;
		}
		buf = mmap(NULL, (size_t)info->size, PROT_READ | PROT_WRITE,
		           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (buf == MAP_FAILED) {
			return -ENOMEM;
		}
	}
	for (;;) {
		if ((rc = bm_channel_peek(ch, timeout_ms, &rec)) < 0) {
			break;
		}
		if (rec.type == BM__REC_BLOB_END) {
			rc = s_wire_get(&rec, &end);
			if (rc == 0 && (end.id != info->id || end.size != info->size || got != info->size)) {
				ok = false;
			}
			if (rc == 0 && info->has_crc) {
				info->crc = end.crc;
				if (crc != end.crc) {
					ok = false;
				}
			}
			if (rc == 0) {
				rc = bm_channel_release(ch);
			}
			break;
		}
		if (rec.type != BM__REC_BLOB_CHUNK || rec.len > info->size - got) {
			rc = BM_ECORRUPT;
			break;
		}
		/* Copy before checking: the sender could rewrite the ring. */
		if (buf != NULL) {
			memcpy(buf + got, rec.data, rec.len);
			if (info->has_crc) {
				crc = bm_crc32c(crc, buf + got, rec.len);
			}
		} else {
			if (info->has_crc) {
				crc = bm_crc32c(crc, rec.data, rec.len);
			}
			if (out_fd >= 0 && (rc = s_write_full(out_fd, rec.data, rec.len)) < 0) {
				break;
			}
		}
		got += rec.len;
		if ((rc = bm_channel_release(ch)) < 0) {
			break;
		}
	}
	if (rc < 0 || !ok) {
		if (buf != NULL) {
			munmap(buf, (size_t)info->size);
		}
		if (rc == BM_ECORRUPT || (rc == 0 && !ok)) {
			s_confirm(ch, false);
			return BM_ECORRUPT;
		}
		return rc;
	}
	if (toobig) {
		s_confirm(ch, false);
		return BM_ETOOBIG;
	}
	if (out_map != NULL) {
		*out_map = buf;
		*out_len = (size_t)info->size;
	}
	s_confirm(ch, true);
	return 0;
}

int
bm_blob_recv(bm_channel_t *ch, int timeout_ms, bm_blob_t **ret_blob)
{
	bm_blob_t *self;
	void *map = NULL;
	size_t len = 0;
	int rc;

	if (ch == NULL || bm_channel_is_producer(ch) || ret_blob == NULL) {
		return -EINVAL;
	}
	self = calloc(1, sizeof *self);
	if (self == NULL) {
		return -ENOMEM;
	}
	self->fd = -1;
	if ((rc = s_recv(ch, timeout_ms, -1, &map, &len, &self->info)) < 0) {
		free(self);
		return rc;
	}
	self->map = map;
	self->map_len = len;
	*ret_blob = self;
	return 0;
}

int
bm_blob_recv_fd(bm_channel_t *ch, int fd, int timeout_ms, bm_blob_info_t *ret_info)
{
	bm_blob_info_t info;
	int rc;

	if (ch == NULL || bm_channel_is_producer(ch) || fd < 0) {
		return -EINVAL;
	}
	rc = s_recv(ch, timeout_ms, fd, NULL, NULL, &info);
	if (ret_info != NULL && (rc == 0 || rc == BM_ECORRUPT)) {
		*ret_info = info;
	}
	return rc;
}

void
bm_blob_destroy(bm_blob_t **self_p)
{
	bm_blob_t *self;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	self = *self_p;
	if (self->map != NULL && self->map_len > 0) {
		munmap(self->map, self->map_len);
	}
	if (self->fd >= 0) {
		close(self->fd);
	}
	free(self);
	*self_p = NULL;
}

const void *
bm_blob_data(const bm_blob_t *self)
{
	return self ? self->map : NULL;
}

size_t
bm_blob_size(const bm_blob_t *self)
{
	return self ? (size_t)self->info.size : 0;
}

const bm_blob_info_t *
bm_blob_info(const bm_blob_t *self)
{
	return self ? &self->info : NULL;
}

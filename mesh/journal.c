/*
 * journal.c - an append-only, segmented, checksummed log in one directory.
 *
 * The journal is the floor under the outbox and the receiver's de-dup
 * window: it stores opaque records (a type byte and a payload) and promises
 * that what it reported stored is there after a crash, and that what it
 * gives back on recovery is exactly what was written, or an error that says
 * where it is not.  It knows nothing of messages.
 *
 * Writing.  bm_journal_append() frames a record into an in-memory buffer;
 * bm_journal_commit() writes the buffer with one write() and then, per the
 * sync policy, one fdatasync():
 *   ALWAYS    every commit syncs: group commit.  Append a batch, commit once,
 *             and every record of the batch is durable across power loss
 *             when commit returns.  The default.
 *   INTERVAL  commit syncs only when the last sync is older than interval_ms
 *             (bm_journal_tick() syncs a dirty journal when it is due): power
 *             loss loses at most the last interval; kill -9 loses nothing
 *             committed (the bytes are in the page cache).
 *   NEVER     commit only writes: survives kill -9 of the process, not a
 *             power loss or a kernel crash.
 * bm_journal_synced_seq() is the last sequence number known durable under
 * the policy; bm_journal_written_seq() the last one handed to the kernel.
 *
 * Errors are sticky.  After a failed write() or fdatasync() the journal
 * turns read-only: the call that met the error returns it (-EIO, -ENOSPC,
 * -EFBIG ...), every later append or commit returns BM_EREADONLY, and
 * bm_journal_error() keeps the first error.  Never retry a failed fsync:
 * the kernel may have dropped the dirty pages and a second fsync "succeeds"
 * over lost data.  A failed write is cut back to the last whole record
 * (ftruncate) so the file stays a clean log; what was not reported stored is
 * what was lost.  Reopen the journal (after freeing space) to go on.
 *
 * Segments.  Files NNNNNNNNNNNNNNNN.log (16 hex digits, the segment number)
 * in the journal's directory.  A commit that would take the head segment past
 * segment_size first starts a new segment (a record is never split; a record
 * larger than segment_size gets a segment of its own).  The old segment is
 * synced (unless NEVER) before the new one is created, and the directory is
 * synced after the create, so a recovered directory never misses a segment
 * in the middle.
 *
 * Liveness.  A record appended with BM_JOURNAL_LIVE counts as live in its
 * segment until its owner calls bm_journal_release(seq).  Segments are
 * deleted oldest first, and only while the oldest holds nothing live and is
 * not the head: later segments may hold records (ACK, DEAD ...) that refer
 * to live records before them, so the log is only ever cut at its front.
 * Each delete is followed by a directory sync.
 *
 * Recovery (bm_journal_open).  Segments are read oldest first and every
 * valid record is handed to the replay callback in order.  A record is valid
 * when its header fits, its length is within bounds, its sequence number is
 * greater than the previous record's, and its CRC32C matches.  At the first
 * invalid record:
 *   - in the newest segment, with no valid record anywhere after it, it is a
 *     torn tail (a write cut short by a crash): the file is truncated at the
 *     record, synced, and the report says how many bytes were dropped;
 *   - otherwise (a valid record follows it, or it sits in an older segment)
 *     it is corruption: open fails with BM_ECORRUPT and the report names the
 *     segment and the offset.  Nothing is truncated.  bm_journal_salvage()
 *     moves the segment into quarantine/ and writes back every valid record
 *     it can find in it, so the journal opens again.
 * A newest segment whose header is torn (shorter than a header, or a header
 * that fails its CRC while no record follows) is removed as torn, too.
 *
 * The salt.  Each segment header carries 64 random bits that seed every
 * record checksum in that segment, so bytes left over from an older file
 * (a reused block, a segment recycled by a copy) never validate as records
 * of this one.
 *
 * Threading: one journal is used from one thread at a time.  Two processes
 * must not open the same directory; an flock on the directory enforces it
 * (-EBUSY).
 *
 * ---- On-disk format (all integers little-endian) ----
 *
 * Segment header, 40 bytes, at offset 0 of each segment file:
 *   0   4  magic "BMJL"
 *   4   4  u32 format version = 1
 *   8   8  u64 segment number (equals the number in the file name)
 *   16  8  u64 salt: random, chosen when the segment is created
 *   24  8  u64 base sequence: every record in the segment has seq >= it
 *   32  4  u32 reserved, 0
 *   36  4  u32 CRC32C of bytes 0..35 (initial value 0)
 *
 * Record, 24 bytes of header then the payload, packed back to back (no
 * padding) from offset 40:
 *   0   4  u32 payload length L (at most BM_JOURNAL_RECORD_MAX)
 *   4   1  u8  type (user defined, 1..255; 0 is never written)
 *   5   1  u8  flags: bit 0 = LIVE; other bits 0
 *   6   2  u16 reserved, 0
 *   8   8  u64 sequence number: strictly increasing through the journal
 *   16  4  u32 reserved, 0
 *   20  4  u32 checksum = CRC32C over (the segment's 8 salt bytes, record
 *          bytes 0..19, the L payload bytes), initial value 0
 *   24  L  payload
 * The checksum covers the length, so a length torn or flipped never makes a
 * record that validates with the wrong extent.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bm_shm.h"
#include "mesh_private.h"

#define S_MAGIC "BMJL"
#define S_VERSION 1
#define S_SEG_HDR 40
#define S_REC_HDR 24
#define S_SEG_DEFAULT (64u << 20)
#define S_INTERVAL_DEFAULT 100

typedef struct {
	uint64_t segno;     /* number in the file name */
	uint64_t salt;      /* checksum seed */
	uint64_t base_seq;  /* from the header */
	uint64_t last_seq;  /* last record in it; base_seq - 1 when empty */
	uint64_t live;      /* records still live */
	uint64_t nrec;      /* records in it */
	uint64_t size;      /* bytes, including the header */
} s_seg_t;

struct bm_journal {
	char dir[BM_PATH_MAX];          /* the journal's directory */
	int dirfd;                      /* open on dir, flock'ed */
	int fd;                         /* head segment, O_WRONLY|O_APPEND */
	s_seg_t *segs;                  /* oldest first; last = head */
	size_t nsegs, capsegs;          /* used, allocated */
	bm_journal_opts_t o;            /* options, defaults filled in */
	bm_journal_ops_t ops;           /* write/sync, real or a test's */
	uint8_t *buf;                   /* framed, not yet written */
	size_t len, cap;                /* bytes in buf, allocated */
	uint64_t buf_nrec;              /* records in buf */
	uint64_t buf_live;              /* LIVE records in buf */
	uint64_t next_seq;              /* seq of the next append */
	uint64_t written_seq;           /* last seq written to the kernel */
	uint64_t synced_seq;            /* last seq durable under the policy */
	int64_t last_sync_ms;           /* mono ms of the last sync */
	int err;                        /* sticky error, 0 = fine */
	bool replaying;                 /* inside open's replay */
};

/* ---- little-endian helpers ---- */

static void
s_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static void
s_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint32_t
s_get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--) {
		v = (v << 8) | p[i];
	}
	return v;
}

static uint64_t
s_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--) {
		v = (v << 8) | p[i];
	}
	return v;
}

/* ---- default ops: the real system calls ---- */

static ssize_t
s_sys_write(void *arg, int fd, const void *buf, size_t len)
{
	ssize_t n;

	(void)arg;
	do {
		n = write(fd, buf, len);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

static int
s_sys_sync(void *arg, int fd, bool is_dir)
{
	int rc;

	(void)arg;
	rc = is_dir ? fsync(fd) : fdatasync(fd);
	return rc < 0 ? -errno : 0;
}

static const bm_journal_ops_t s_sys_ops = {s_sys_write, s_sys_sync, NULL};

/* ---- framing ---- */

static uint32_t
s_rec_crc(uint64_t salt, const uint8_t *hdr, const void *payload, size_t len)
{
	uint8_t s[8];
	uint32_t crc;

	s_put64(s, salt);
	crc = bm_crc32c(0, s, 8);
	crc = bm_crc32c(crc, hdr, 20);
	return bm_crc32c(crc, payload, len);
}

static void
s_seg_header(uint8_t *p, const s_seg_t *sg)
{
	memset(p, 0, S_SEG_HDR);
	memcpy(p, S_MAGIC, 4);
	s_put32(p + 4, S_VERSION);
	s_put64(p + 8, sg->segno);
	s_put64(p + 16, sg->salt);
	s_put64(p + 24, sg->base_seq);
	s_put32(p + 36, bm_crc32c(0, p, 36));
}

/* 0 when p holds a valid header for segment number segno. */
static int
s_seg_parse(const uint8_t *p, size_t len, uint64_t segno, s_seg_t *ret)
{
	if (len < S_SEG_HDR || memcmp(p, S_MAGIC, 4) != 0 ||
	    s_get32(p + 36) != bm_crc32c(0, p, 36)) {
		return BM_ECORRUPT;
	}
	if (s_get32(p + 4) != S_VERSION) {
		return BM_EVERSION;
	}
	if (s_get64(p + 8) != segno) {
		return BM_ECORRUPT;
	}
	memset(ret, 0, sizeof *ret);
	ret->segno = segno;
	ret->salt = s_get64(p + 16);
	ret->base_seq = s_get64(p + 24);
	ret->last_seq = ret->base_seq - 1;
	return 0;
}

/*
 * Checks the record at p (avail bytes readable) against salt and the
 * smallest acceptable sequence number.  Returns its total size (header +
 * payload) or 0 when it is not a valid record.
 */
static size_t
s_rec_check(const uint8_t *p, size_t avail, uint64_t salt, uint64_t min_seq, size_t max_len)
{
	uint32_t len;
	uint64_t seq;

	if (avail < S_REC_HDR) {
		return 0;
	}
	len = s_get32(p);
	seq = s_get64(p + 8);
	if (len > max_len || len > avail - S_REC_HDR || p[4] == 0 || (p[5] & ~1u) != 0 ||
	    p[6] != 0 || p[7] != 0 || s_get32(p + 16) != 0 || seq < min_seq) {
		return 0;
	}
	if (s_get32(p + 20) != s_rec_crc(salt, p, p + S_REC_HDR, len)) {
		return 0;
	}
	return S_REC_HDR + (size_t)len;
}

/* True when any valid record starts in p[from..avail). */
static bool
s_valid_after(const uint8_t *p, size_t from, size_t avail, uint64_t salt, uint64_t min_seq,
              size_t max_len)
{
	for (size_t off = from; off + S_REC_HDR <= avail; off++) {
		if (s_rec_check(p + off, avail - off, salt, min_seq, max_len) > 0) {
			return true;
		}
	}
	return false;
}

/* ---- files ---- */

static void
s_seg_name(char *out, size_t cap, uint64_t segno)
{
	snprintf(out, cap, "%016llx.log", (unsigned long long)segno);
}

static int
s_read_file(int dirfd, const char *name, uint8_t **ret_buf, size_t *ret_len)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		return -errno;
	}
	if (fstat(fd, &st) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
	if (buf == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			int e = n < 0 ? -errno : -EIO;

			free(buf);
			close(fd);
			return e;
		}
		got += (size_t)n;
	}
	close(fd);
	*ret_buf = buf;
	*ret_len = got;
	return 0;
}

static int
s_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Segment numbers found in dir, sorted; *ret is malloc'd. */
static int
s_list(int dirfd, uint64_t **ret, size_t *ret_n)
{
	int fd = dup(dirfd);
	DIR *d;
	struct dirent *de;
	uint64_t *v = NULL;
	size_t n = 0, cap = 0;

	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0) {
			close(fd);
		}
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		unsigned long long segno;
		char tail[8];

		if (strlen(de->d_name) != 20 ||
		    sscanf(de->d_name, "%16llx%7s", &segno, tail) != 2 || strcmp(tail, ".log") != 0) {
			continue;
		}
		if (n == cap) {
			uint64_t *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v);

			if (nv == NULL) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		v[n++] = segno;
	}
	closedir(d);
	if (n > 0) {
		qsort(v, n, sizeof *v, s_cmp_u64);
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static int
s_push_seg(bm_journal_t *j, const s_seg_t *sg)
{
	if (j->nsegs == j->capsegs) {
		size_t cap = j->capsegs ? j->capsegs * 2 : 8;
		s_seg_t *v = realloc(j->segs, cap * sizeof *v);

		if (v == NULL) {
			return -ENOMEM;
		}
		j->segs = v;
		j->capsegs = cap;
	}
	j->segs[j->nsegs++] = *sg;
	return 0;
}

static void
s_fail(bm_journal_t *j, int err)
{
	if (j->err == 0) {
		j->err = err;
		bm_debug("journal %s: read-only after %s", j->dir, bm_strerror(err));
	}
}

static int
s_sync(bm_journal_t *j, int fd, bool is_dir)
{
	int rc = j->ops.sync(j->ops.arg, fd, is_dir);

	if (rc < 0) {
		s_fail(j, rc);
	}
	return rc;
}

/* Creates segment segno starting at base_seq as the new head. */
static int
s_seg_create(bm_journal_t *j, uint64_t segno, uint64_t base_seq)
{
	s_seg_t sg = {.segno = segno, .base_seq = base_seq, .last_seq = base_seq - 1,
	              .size = S_SEG_HDR};
	uint8_t hdr[S_SEG_HDR];
	char name[32];
	ssize_t n;
	int fd, rc;

	randombytes_buf(&sg.salt, sizeof sg.salt);
	s_seg_name(name, sizeof name, segno);
	fd = openat(j->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		s_fail(j, rc);
		return rc;
	}
	s_seg_header(hdr, &sg);
	n = j->ops.write(j->ops.arg, fd, hdr, sizeof hdr);
	if (n != (ssize_t)sizeof hdr) {
		rc = n < 0 ? (int)n : -ENOSPC;
		/* A header that did not fit leaves no segment behind. */
		close(fd);
		(void)unlinkat(j->dirfd, name, 0);
		s_fail(j, rc);
		return rc;
	}
	if (j->o.sync != BM_JOURNAL_SYNC_NEVER &&
	    ((rc = s_sync(j, fd, false)) < 0 || (rc = s_sync(j, j->dirfd, true)) < 0)) {
		close(fd);
		return rc;
	}
	if ((rc = s_push_seg(j, &sg)) < 0) {
		close(fd);
		s_fail(j, rc);
		return rc;
	}
	if (j->fd >= 0) {
		close(j->fd);
	}
	j->fd = fd;
	return 0;
}

/* Deletes the oldest segments while they hold nothing live. */
static void
s_gc(bm_journal_t *j)
{
	size_t k = 0;
	char name[32];

	if (j->err != 0 || j->replaying) {
		return;
	}
	while (k + 1 < j->nsegs && j->segs[k].live == 0) {
		s_seg_name(name, sizeof name, j->segs[k].segno);
		if (unlinkat(j->dirfd, name, 0) < 0 && errno != ENOENT) {
			break;
		}
		k++;
	}
	if (k == 0) {
		return;
	}
	memmove(j->segs, j->segs + k, (j->nsegs - k) * sizeof *j->segs);
	j->nsegs -= k;
	if (j->o.sync != BM_JOURNAL_SYNC_NEVER) {
		(void)s_sync(j, j->dirfd, true);
	}
}

/* ---- recovery ---- */

typedef struct {
	bm_journal_t *j;
	bm_journal_report_t *rep;
} s_rec_ctx_t;

static void
s_report_path(bm_journal_t *j, char *out, size_t cap, uint64_t segno)
{
	char name[32];

	s_seg_name(name, sizeof name, segno);
	if (snprintf(out, cap, "%s/%s", j->dir, name) >= (int)cap) {
		out[0] = '\0';
	}
}

/*
 * Reads one segment, replays its records.  newest: it is the last segment.
 * Returns 0, BM_ECORRUPT (report filled), or another error.
 */
static int
s_recover_seg(bm_journal_t *j, uint64_t segno, bool newest, uint64_t *min_seq,
              bm_journal_report_t *rep)
{
	uint8_t *buf = NULL;
	size_t len = 0, off = S_SEG_HDR;
	char name[32];
	s_seg_t sg;
	int rc;

	s_seg_name(name, sizeof name, segno);
	if ((rc = s_read_file(j->dirfd, name, &buf, &len)) < 0) {
		return rc;
	}
	if ((rc = s_seg_parse(buf, len, segno, &sg)) < 0) {
		free(buf);
		if (rc == BM_ECORRUPT && newest && len < S_SEG_HDR + S_REC_HDR) {
			/* Torn while being created: nothing in it ever counted. */
			if (unlinkat(j->dirfd, name, 0) < 0) {
				return -errno;
			}
			rep->torn_bytes += len;
			s_report_path(j, rep->torn_segment, sizeof rep->torn_segment, segno);
			return 0;
		}
		rep->corrupt_offset = 0;
		s_report_path(j, rep->corrupt_segment, sizeof rep->corrupt_segment, segno);
		return rc;
	}
	if (sg.base_seq < *min_seq) {
		free(buf);
		rep->corrupt_offset = 0;
		s_report_path(j, rep->corrupt_segment, sizeof rep->corrupt_segment, segno);
		return BM_ECORRUPT;
	}
	while (off < len) {
		size_t n = s_rec_check(buf + off, len - off, sg.salt,
		                       sg.last_seq + 1 > sg.base_seq ? sg.last_seq + 1 : sg.base_seq,
		                       BM_JOURNAL_RECORD_MAX);
		bm_journal_rec_t r;

		if (n == 0) {
			break;
		}
		r.type = buf[off + 4];
		r.flags = buf[off + 5];
		r.seq = s_get64(buf + off + 8);
		r.data = buf + off + S_REC_HDR;
		r.len = n - S_REC_HDR;
		sg.last_seq = r.seq;
		sg.nrec++;
		if (r.flags & BM_JOURNAL_LIVE) {
			sg.live++;
		}
		rep->records++;
		off += n;
		/* The segment goes in the table before the callback so a release
		 * from inside replay finds it. */
		if (sg.nrec == 1 && (rc = s_push_seg(j, &sg)) < 0) {
			free(buf);
			return rc;
		}
		j->segs[j->nsegs - 1] = sg;
		if (j->o.replay != NULL && (rc = j->o.replay(j->o.arg, &r)) < 0) {
			free(buf);
			return rc;
		}
		sg = j->segs[j->nsegs - 1];
	}
	if (off < len) {
		uint64_t min = sg.last_seq + 1 > sg.base_seq ? sg.last_seq + 1 : sg.base_seq;

		if (!newest || s_valid_after(buf, off + 1, len, sg.salt, min, BM_JOURNAL_RECORD_MAX)) {
			free(buf);
			rep->corrupt_offset = off;
			s_report_path(j, rep->corrupt_segment, sizeof rep->corrupt_segment, segno);
			return BM_ECORRUPT;
		}
		/* A torn tail: cut it off, and make the cut durable before anything
		 * is appended after it. */
		{
			int fd = openat(j->dirfd, name, O_WRONLY | O_CLOEXEC);

			if (fd < 0) {
				free(buf);
				return -errno;
			}
			if (ftruncate(fd, (off_t)off) < 0 || fsync(fd) < 0) {
				rc = -errno;
				close(fd);
				free(buf);
				return rc;
			}
			close(fd);
		}
		rep->torn_bytes += len - off;
		s_report_path(j, rep->torn_segment, sizeof rep->torn_segment, segno);
		len = off;
	}
	free(buf);
	sg.size = len;
	if (sg.nrec == 0 && (rc = s_push_seg(j, &sg)) < 0) {
		return rc;
	}
	j->segs[j->nsegs - 1] = sg;
	*min_seq = sg.last_seq + 1 > sg.base_seq ? sg.last_seq + 1 : sg.base_seq;
	return 0;
}

static int
s_lock_dir(const char *dir, bool create, int *ret_fd)
{
	int fd;

	if (create && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		return -errno;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno == EWOULDBLOCK ? -EBUSY : -errno;

		close(fd);
		return e;
	}
	*ret_fd = fd;
	return 0;
}

int
bm_journal_open(const char *dir, const bm_journal_opts_t *opts, bm_journal_t **ret_journal)
{
	bm_journal_report_t scratch, *rep;
	bm_journal_t *j;
	uint64_t *list = NULL, min_seq = 1;
	size_t nlist = 0;
	int rc;

	if (dir == NULL || ret_journal == NULL || strlen(dir) >= BM_PATH_MAX - 32) {
		return -EINVAL;
	}
	if (opts != NULL && (opts->sync < BM_JOURNAL_SYNC_ALWAYS || opts->sync > BM_JOURNAL_SYNC_NEVER)) {
		return -EINVAL;
	}
	if (sodium_init() < 0) {
		return -EIO;
	}
	j = calloc(1, sizeof *j);
	if (j == NULL) {
		return -ENOMEM;
	}
	j->fd = -1;
	j->dirfd = -1;
	if (opts != NULL) {
		j->o = *opts;
	}
	if (j->o.segment_size == 0) {
		j->o.segment_size = S_SEG_DEFAULT;
	}
	if (j->o.interval_ms <= 0) {
		j->o.interval_ms = S_INTERVAL_DEFAULT;
	}
	j->ops = j->o.ops != NULL ? *j->o.ops : s_sys_ops;
	rep = j->o.report != NULL ? j->o.report : &scratch;
	memset(rep, 0, sizeof *rep);
	snprintf(j->dir, sizeof j->dir, "%s", dir);
	if ((rc = s_lock_dir(dir, true, &j->dirfd)) < 0 || (rc = s_list(j->dirfd, &list, &nlist)) < 0) {
		goto fail;
	}
	j->replaying = true;
	for (size_t i = 0; i < nlist; i++) {
		if ((rc = s_recover_seg(j, list[i], i + 1 == nlist, &min_seq, rep)) < 0) {
			goto fail;
		}
	}
	j->replaying = false;
	rep->segments = j->nsegs;
	j->next_seq = min_seq;
	j->written_seq = j->synced_seq = min_seq - 1;
	if (j->nsegs == 0 || j->segs[j->nsegs - 1].size >= j->o.segment_size) {
		uint64_t segno = j->nsegs ? j->segs[j->nsegs - 1].segno + 1 : (nlist ? list[nlist - 1] + 1 : 1);

		if ((rc = s_seg_create(j, segno, j->next_seq)) < 0) {
			goto fail;
		}
	} else {
		char name[32];

		s_seg_name(name, sizeof name, j->segs[j->nsegs - 1].segno);
		j->fd = openat(j->dirfd, name, O_WRONLY | O_APPEND | O_CLOEXEC);
		if (j->fd < 0) {
			rc = -errno;
			goto fail;
		}
	}
	free(list);
	j->last_sync_ms = bm_mono_ms();
	s_gc(j);
	*ret_journal = j;
	return 0;
fail:
	free(list);
	j->err = 0;
	bm_journal_destroy(&j);
	return rc;
}

int
bm_journal_close(bm_journal_t *j)
{
	int rc = 0;

	if (j == NULL) {
		return -EINVAL;
	}
	if (j->err == 0 && j->fd >= 0 && (j->len > 0 || j->written_seq > j->synced_seq)) {
		int mode = j->o.sync;

		/* Closing counts as a sync point for INTERVAL. */
		if (mode == BM_JOURNAL_SYNC_INTERVAL) {
			j->o.sync = BM_JOURNAL_SYNC_ALWAYS;
		}
		rc = bm_journal_commit(j);
		j->o.sync = mode;
	}
	return rc < 0 ? rc : (j->err ? j->err : 0);
}

void
bm_journal_destroy(bm_journal_t **self_p)
{
	bm_journal_t *j;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	j = *self_p;
	(void)bm_journal_close(j);
	if (j->fd >= 0) {
		close(j->fd);
	}
	if (j->dirfd >= 0) {
		close(j->dirfd);
	}
	free(j->segs);
	free(j->buf);
	free(j);
	*self_p = NULL;
}

/* ---- appending ---- */

int
bm_journal_append(bm_journal_t *j, int type, int flags, const void *data, size_t len,
                  uint64_t *ret_seq)
{
	return bm_journal_appendv(j, type, flags, &(bm_journal_iov_t){data, len}, 1, ret_seq);
}

int
bm_journal_appendv(bm_journal_t *j, int type, int flags, const bm_journal_iov_t *iov, int niov,
                   uint64_t *ret_seq)
{
	size_t len = 0, need;
	uint8_t *p;
	uint64_t seq;
	s_seg_t *head;
	int rc;

	if (j == NULL || type < 1 || type > 255 || (flags & ~BM_JOURNAL_LIVE) != 0 || niov < 0 ||
	    (niov > 0 && iov == NULL)) {
		return -EINVAL;
	}
	if (j->err != 0) {
		return BM_EREADONLY;
	}
	for (int i = 0; i < niov; i++) {
		if (iov[i].len > 0 && iov[i].data == NULL) {
			return -EINVAL;
		}
		len += iov[i].len;
	}
	if (len > BM_JOURNAL_RECORD_MAX) {
		return BM_ETOOBIG;
	}
	need = S_REC_HDR + len;
	head = &j->segs[j->nsegs - 1];
	/* Rotate before the record that would overflow a non-empty head: the
	 * buffered records go to the old segment first. */
	if (head->size + j->len + need > j->o.segment_size && head->size + j->len > S_SEG_HDR) {
		uint64_t segno = head->segno + 1;

		if ((rc = bm_journal_commit(j)) < 0) {
			return rc;
		}
		if (j->o.sync == BM_JOURNAL_SYNC_INTERVAL && j->written_seq > j->synced_seq) {
			if ((rc = s_sync(j, j->fd, false)) < 0) {
				return rc;
			}
			j->synced_seq = j->written_seq;
			j->last_sync_ms = bm_mono_ms();
		}
		if ((rc = s_seg_create(j, segno, j->next_seq)) < 0) {
			return rc;
		}
		s_gc(j);
	}
	if (j->len + need > j->cap) {
		size_t cap = j->cap ? j->cap : 65536;
		uint8_t *nb;

		while (cap < j->len + need) {
			cap *= 2;
		}
		if ((nb = realloc(j->buf, cap)) == NULL) {
			return -ENOMEM;
		}
		j->buf = nb;
		j->cap = cap;
	}
	seq = j->next_seq;
	head = &j->segs[j->nsegs - 1];
	p = j->buf + j->len;
	memset(p, 0, S_REC_HDR);
	s_put32(p, (uint32_t)len);
	p[4] = (uint8_t)type;
	p[5] = (uint8_t)flags;
	s_put64(p + 8, seq);
	{
		size_t off = S_REC_HDR;
		uint8_t s[8];
		uint32_t crc;

		s_put64(s, head->salt);
		crc = bm_crc32c(bm_crc32c(0, s, 8), p, 20);
		for (int i = 0; i < niov; i++) {
			if (iov[i].len > 0) {
				memcpy(p + off, iov[i].data, iov[i].len);
				crc = bm_crc32c(crc, iov[i].data, iov[i].len);
				off += iov[i].len;
			}
		}
		s_put32(p + 20, crc);
	}
	j->len += need;
	j->buf_nrec++;
	if (flags & BM_JOURNAL_LIVE) {
		j->buf_live++;
	}
	j->next_seq++;
	if (ret_seq != NULL) {
		*ret_seq = seq;
	}
	return 0;
}

int
bm_journal_commit(bm_journal_t *j)
{
	s_seg_t *head;
	size_t done = 0;
	int rc;

	if (j == NULL) {
		return -EINVAL;
	}
	if (j->err != 0) {
		return BM_EREADONLY;
	}
	head = &j->segs[j->nsegs - 1];
	while (done < j->len) {
		ssize_t n = j->ops.write(j->ops.arg, j->fd, j->buf + done, j->len - done);

		if (n <= 0) {
			rc = n < 0 ? (int)n : -EIO;
			/* Leave the file a clean log: cut what part of this batch
			 * made it (not a retry, the data stays unreported). */
			if (done > 0) {
				(void)ftruncate(j->fd, (off_t)head->size);
			}
			j->len = 0;
			j->buf_nrec = j->buf_live = 0;
			j->next_seq = j->written_seq + 1;
			s_fail(j, rc);
			return rc;
		}
		done += (size_t)n;
	}
	if (j->len > 0) {
		head->size += j->len;
		head->nrec += j->buf_nrec;
		head->live += j->buf_live;
		head->last_seq = j->next_seq - 1;
		j->written_seq = j->next_seq - 1;
		j->len = 0;
		j->buf_nrec = j->buf_live = 0;
	}
	if (j->written_seq == j->synced_seq) {
		return 0;
	}
	if (j->o.sync == BM_JOURNAL_SYNC_ALWAYS ||
	    (j->o.sync == BM_JOURNAL_SYNC_INTERVAL &&
	     bm_mono_ms() - j->last_sync_ms >= j->o.interval_ms)) {
		if ((rc = s_sync(j, j->fd, false)) < 0) {
			return rc;
		}
		j->last_sync_ms = bm_mono_ms();
		j->synced_seq = j->written_seq;
	} else if (j->o.sync == BM_JOURNAL_SYNC_NEVER) {
		j->synced_seq = j->written_seq;
	}
	return 0;
}

int
bm_journal_tick(bm_journal_t *j)
{
	int rc;

	if (j == NULL) {
		return -EINVAL;
	}
	if (j->err != 0) {
		return BM_EREADONLY;
	}
	if (j->o.sync != BM_JOURNAL_SYNC_INTERVAL || j->written_seq == j->synced_seq ||
	    bm_mono_ms() - j->last_sync_ms < j->o.interval_ms) {
		return 0;
	}
	if ((rc = s_sync(j, j->fd, false)) < 0) {
		return rc;
	}
	j->last_sync_ms = bm_mono_ms();
	j->synced_seq = j->written_seq;
	return 0;
}

int
bm_journal_timeout(const bm_journal_t *j)
{
	int64_t left;

	if (j == NULL || j->err != 0 || j->o.sync != BM_JOURNAL_SYNC_INTERVAL ||
	    j->written_seq == j->synced_seq) {
		return -1;
	}
	left = j->last_sync_ms + j->o.interval_ms - bm_mono_ms();
	return left < 0 ? 0 : (int)left;
}

void
bm_journal_release(bm_journal_t *j, uint64_t seq)
{
	size_t lo = 0, hi;

	if (j == NULL || j->nsegs == 0) {
		return;
	}
	hi = j->nsegs;
	/* The last segment whose base_seq <= seq. */
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;

		if (j->segs[mid].base_seq <= seq) {
			lo = mid;
		} else {
			hi = mid;
		}
	}
	if (seq < j->segs[lo].base_seq) {
		return;
	}
	if (lo + 1 == j->nsegs && seq > j->segs[lo].last_seq) {
		/* Still in the buffer, not yet written. */
		if (j->buf_live > 0) {
			j->buf_live--;
		}
		return;
	}
	if (j->segs[lo].live > 0) {
		j->segs[lo].live--;
	}
	if (lo == 0 && j->segs[0].live == 0) {
		s_gc(j);
	}
}

int
bm_journal_error(const bm_journal_t *j)
{
	return j == NULL ? -EINVAL : j->err;
}

uint64_t
bm_journal_written_seq(const bm_journal_t *j)
{
	return j ? j->written_seq : 0;
}

uint64_t
bm_journal_synced_seq(const bm_journal_t *j)
{
	return j ? j->synced_seq : 0;
}

uint64_t
bm_journal_next_seq(const bm_journal_t *j)
{
	return j ? j->next_seq : 0;
}

size_t
bm_journal_segments(const bm_journal_t *j)
{
	return j ? j->nsegs : 0;
}

uint64_t
bm_journal_bytes(const bm_journal_t *j)
{
	uint64_t n = 0;

	for (size_t i = 0; j != NULL && i < j->nsegs; i++) {
		n += j->segs[i].size;
	}
	return n;
}

int
bm__journal_segment_base(const bm_journal_t *j, size_t i, uint64_t *ret_seq)
{
	if (j == NULL || i >= j->nsegs) {
		return -ENOENT;
	}
	*ret_seq = j->segs[i].base_seq;
	return 0;
}

const char *
bm_journal_dir(const bm_journal_t *j)
{
	return j ? j->dir : NULL;
}

/* ---- salvage ---- */

int
bm_journal_salvage(const char *dir, bm_journal_report_t *ret_report)
{
	bm_journal_report_t rep = {0};
	uint64_t *list = NULL;
	size_t nlist = 0;
	int dirfd = -1, rc;
	uint64_t min_seq = 1;
	char qdir[BM_PATH_MAX];

	if (dir == NULL || strlen(dir) >= BM_PATH_MAX - 64) {
		return -EINVAL;
	}
	if ((rc = s_lock_dir(dir, false, &dirfd)) < 0 || (rc = s_list(dirfd, &list, &nlist)) < 0) {
		goto out;
	}
	snprintf(qdir, sizeof qdir, "%s/quarantine", dir);
	for (size_t i = 0; i < nlist; i++) {
		uint8_t *buf = NULL, *out = NULL;
		size_t len = 0, off = S_SEG_HDR, olen = S_SEG_HDR;
		char name[32], tmp[48], qname[BM_PATH_MAX + 64];
		uint64_t last = 0;
		bool bad = false;
		s_seg_t sg;
		int fd;

		s_seg_name(name, sizeof name, list[i]);
		if ((rc = s_read_file(dirfd, name, &buf, &len)) < 0) {
			goto out;
		}
		if (s_seg_parse(buf, len, list[i], &sg) < 0) {
			/* No salt, no records: the whole file goes to quarantine. */
			sg.segno = list[i];
			sg.base_seq = min_seq;
			randombytes_buf(&sg.salt, sizeof sg.salt);
			bad = true;
			off = len;
		}
		out = malloc(len > S_SEG_HDR ? len : S_SEG_HDR);
		if (out == NULL) {
			free(buf);
			rc = -ENOMEM;
			goto out;
		}
		if (sg.base_seq < min_seq) {
			sg.base_seq = min_seq;
		}
		while (off < len) {
			size_t n = s_rec_check(buf + off, len - off, sg.salt,
			                       last ? last + 1 : sg.base_seq, BM_JOURNAL_RECORD_MAX);

			if (n == 0) {
				bad = true;
				rep.torn_bytes++;
				off++;
				continue;
			}
			memcpy(out + olen, buf + off, n);
			olen += n;
			last = s_get64(buf + off + 8);
			rep.records++;
			off += n;
		}
		rep.segments++;
		if (bad) {
			/* Quarantine the original, then put the good records back
			 * under the same name (written aside, synced, renamed). */
			if (mkdir(qdir, 0700) < 0 && errno != EEXIST) {
				rc = -errno;
				free(buf);
				free(out);
				goto out;
			}
			snprintf(qname, sizeof qname, "%s/%s.%lld", qdir, name, (long long)bm_wall_ms());
			snprintf(tmp, sizeof tmp, "%s.salvage", name);
			s_seg_header(out, &sg);
			fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			rc = fd < 0 ? -errno : 0;
			for (size_t w = 0; rc == 0 && w < olen;) {
				ssize_t n = write(fd, out + w, olen - w);

				if (n < 0 && errno == EINTR) {
					continue;
				}
				if (n <= 0) {
					rc = n < 0 ? -errno : -EIO;
					break;
				}
				w += (size_t)n;
			}
			if (rc == 0 && fsync(fd) < 0) {
				rc = -errno;
			}
			if (fd >= 0) {
				close(fd);
			}
			if (rc == 0) {
				char src[BM_PATH_MAX + 32];

				snprintf(src, sizeof src, "%s/%s", dir, name);
				if (rename(src, qname) < 0 || renameat(dirfd, tmp, dirfd, name) < 0 ||
				    fsync(dirfd) < 0) {
					rc = -errno;
				}
			}
			if (rc < 0) {
				free(buf);
				free(out);
				goto out;
			}
			if (snprintf(rep.corrupt_segment, sizeof rep.corrupt_segment, "%s", qname) >=
			    (int)sizeof rep.corrupt_segment) {
				rep.corrupt_segment[0] = '\0';
			}
			rep.quarantined++;
		}
		if (last) {
			min_seq = last + 1;
		} else if (sg.base_seq > min_seq) {
			min_seq = sg.base_seq;
		}
		free(buf);
		free(out);
	}
	rc = 0;
out:
	free(list);
	if (dirfd >= 0) {
		close(dirfd);
	}
	if (ret_report != NULL) {
		*ret_report = rep;
	}
	return rc;
}

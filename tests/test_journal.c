/*
 * test_journal.c - the journal with real files: replay, rotation and
 * deletion, torn tails cut at every offset, a flipped byte reported and
 * salvaged, a crash shim that drops or tears unsynced writes at the Nth
 * sync, sticky I/O errors, and a real file-size limit (RLIMIT_FSIZE).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bm_mesh.h"

static char s_dir[256];

static void
s_setup(void)
{
	char tmpl[] = "/tmp/bmjournal.XXXXXX";

	ck_assert_ptr_nonnull(mkdtemp(tmpl));
	snprintf(s_dir, sizeof s_dir, "%s/j", tmpl);
}

static void
s_teardown(void)
{
	char cmd[600];

	if (s_dir[0] != '\0') {
		/* s_dir is ".../bmjournal.XXXXXX/j": remove its parent. */
		snprintf(cmd, sizeof cmd, "rm -rf '%.*s'", (int)(strlen(s_dir) - 2), s_dir);
		ck_assert_int_eq(system(cmd), 0);
		s_dir[0] = '\0';
	}
}

/* Payload of record number i (1-based): deterministic, size 1..max. */
static size_t
s_payload(uint64_t i, uint8_t *out, size_t max)
{
	size_t len = 1 + (size_t)((i * 2654435761u) % max);

	for (size_t k = 0; k < len; k++) {
		out[k] = (uint8_t)(i * 31 + k);
	}
	return len;
}

typedef struct {
	uint64_t n;         /* records seen */
	uint64_t last;      /* last seq */
	uint64_t bad;       /* payload mismatches */
	size_t max;         /* payload size bound used to write */
	bool contiguous;    /* seqs ran 1, 2, 3 ... */
} s_seen_t;

static int
s_check_rec(void *arg, const bm_journal_rec_t *r)
{
	s_seen_t *s = arg;
	uint8_t want[4096];
	size_t len = s_payload(r->seq, want, s->max);

	if (r->seq != s->last + 1) {
		s->contiguous = false;
	}
	if (r->len != len || memcmp(r->data, want, len) != 0 || r->type != 7) {
		s->bad++;
	}
	s->last = r->seq;
	s->n++;
	return 0;
}

static int
s_open(bm_journal_t **j, s_seen_t *seen, size_t max, size_t segsize, int sync,
       bm_journal_report_t *rep)
{
	bm_journal_opts_t o = {.segment_size = segsize, .sync = sync, .replay = s_check_rec,
	                       .arg = seen, .report = rep};

	memset(seen, 0, sizeof *seen);
	seen->max = max;
	seen->contiguous = true;
	return bm_journal_open(s_dir, &o, j);
}

/* Appends records first..last (payloads per s_payload), committing every
 * `group`; all LIVE so no segment is deleted. */
static void
s_fill(bm_journal_t *j, uint64_t first, uint64_t last, size_t max, int group)
{
	uint8_t buf[4096];

	for (uint64_t i = first; i <= last; i++) {
		uint64_t seq;
		size_t len = s_payload(i, buf, max);

		ck_assert_int_eq(bm_journal_append(j, 7, BM_JOURNAL_LIVE, buf, len, &seq), 0);
		ck_assert_uint_eq(seq, i);
		if ((int)(i % (uint64_t)group) == 0) {
			ck_assert_int_eq(bm_journal_commit(j), 0);
		}
	}
	ck_assert_int_eq(bm_journal_commit(j), 0);
}

static char *
s_seg_path(char *out, size_t cap, uint64_t segno)
{
	snprintf(out, cap, "%s/%016llx.log", s_dir, (unsigned long long)segno);
	return out;
}

static off_t
s_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* ---- basics ---- */

START_TEST(records_come_back_in_order_after_reopen_under_each_sync_policy)
{
	static const int pol[] = {BM_JOURNAL_SYNC_ALWAYS, BM_JOURNAL_SYNC_INTERVAL,
	                          BM_JOURNAL_SYNC_NEVER};

	for (int p = 0; p < 3; p++) {
		bm_journal_t *j = NULL;
		bm_journal_report_t rep;
		s_seen_t seen;

		ck_assert_int_eq(s_open(&j, &seen, 300, 0, pol[p], &rep), 0);
		ck_assert_uint_eq(seen.n, (uint64_t)p * 500);
		s_fill(j, (uint64_t)p * 500 + 1, (uint64_t)p * 500 + 500, 300, 10);
		if (pol[p] != BM_JOURNAL_SYNC_INTERVAL) {
			ck_assert_uint_eq(bm_journal_synced_seq(j), (uint64_t)p * 500 + 500);
		}
		ck_assert_uint_eq(bm_journal_written_seq(j), (uint64_t)p * 500 + 500);
		bm_journal_destroy(&j);
		ck_assert_ptr_null(j);
		ck_assert_int_eq(s_open(&j, &seen, 300, 0, pol[p], &rep), 0);
		ck_assert_uint_eq(seen.n, (uint64_t)p * 500 + 500);
		ck_assert(seen.contiguous);
		ck_assert_uint_eq(seen.bad, 0);
		ck_assert_uint_eq(rep.torn_bytes, 0);
		bm_journal_destroy(&j);
	}
}
END_TEST

START_TEST(a_second_open_of_the_same_directory_is_refused)
{
	bm_journal_t *a = NULL, *b = NULL;

	ck_assert_int_eq(bm_journal_open(s_dir, NULL, &a), 0);
	ck_assert_int_eq(bm_journal_open(s_dir, NULL, &b), -EBUSY);
	ck_assert_ptr_null(b);
	bm_journal_destroy(&a);
	ck_assert_int_eq(bm_journal_open(s_dir, NULL, &b), 0);
	bm_journal_destroy(&b);
}
END_TEST

START_TEST(segments_rotate_at_their_size_and_are_deleted_when_nothing_in_them_is_live)
{
	bm_journal_t *j = NULL;
	uint8_t buf[200] = {0};
	uint64_t seqs[100];
	s_seen_t seen;

	ck_assert_int_eq(s_open(&j, &seen, 200, 2100, BM_JOURNAL_SYNC_ALWAYS, NULL), 0);
	for (int i = 0; i < 100; i++) {
		ck_assert_int_eq(bm_journal_append(j, 7, BM_JOURNAL_LIVE, buf, sizeof buf, &seqs[i]), 0);
		ck_assert_int_eq(bm_journal_commit(j), 0);
	}
	/* 224-byte records after a 40-byte header, 2100-byte segments: 9 each. */
	ck_assert_uint_eq(bm_journal_segments(j), 12);
	ck_assert_uint_le(bm_journal_bytes(j), 12 * 2100);
	/* Releasing a later segment's records deletes nothing: the log is only
	 * cut at its front. */
	for (int i = 9; i < 18; i++) {
		bm_journal_release(j, seqs[i]);
	}
	ck_assert_uint_eq(bm_journal_segments(j), 12);
	for (int i = 0; i < 9; i++) {
		bm_journal_release(j, seqs[i]);
	}
	ck_assert_uint_eq(bm_journal_segments(j), 10);
	{
		char p[400];

		ck_assert_int_eq(s_size(s_seg_path(p, sizeof p, 1)), -1);
		ck_assert_int_eq(s_size(s_seg_path(p, sizeof p, 2)), -1);
		ck_assert_int_gt(s_size(s_seg_path(p, sizeof p, 3)), 0);
	}
	/* Everything released: only the head stays. */
	for (int i = 18; i < 100; i++) {
		bm_journal_release(j, seqs[i]);
	}
	ck_assert_uint_eq(bm_journal_segments(j), 1);
	bm_journal_destroy(&j);
	/* The sequence goes on after the deleted segments. */
	ck_assert_int_eq(s_open(&j, &seen, 200, 2100, BM_JOURNAL_SYNC_ALWAYS, NULL), 0);
	ck_assert_uint_eq(bm_journal_next_seq(j), 101);
	bm_journal_destroy(&j);
}
END_TEST

START_TEST(an_oversized_or_invalid_append_is_refused_and_changes_nothing)
{
	bm_journal_t *j = NULL;
	s_seen_t seen;

	ck_assert_int_eq(s_open(&j, &seen, 100, 0, 0, NULL), 0);
	ck_assert_int_eq(bm_journal_append(j, 0, 0, "x", 1, NULL), -EINVAL);
	ck_assert_int_eq(bm_journal_append(j, 256, 0, "x", 1, NULL), -EINVAL);
	ck_assert_int_eq(bm_journal_append(j, 7, 4, "x", 1, NULL), -EINVAL);
	{
		bm_journal_iov_t v[2] = {{"x", BM_JOURNAL_RECORD_MAX}, {"y", 1}};

		/* Lengths only: the data is never read before the size check. */
		ck_assert_int_eq(bm_journal_appendv(j, 7, 0, v, 2, NULL), BM_ETOOBIG);
	}
	ck_assert_uint_eq(bm_journal_next_seq(j), 1);
	ck_assert_int_eq(bm_journal_error(j), 0);
	bm_journal_destroy(&j);
}
END_TEST

/* ---- recovery ---- */

START_TEST(the_last_segment_cut_at_every_offset_of_its_last_record_recovers_every_complete_record)
{
	bm_journal_t *j = NULL;
	bm_journal_report_t rep;
	s_seen_t seen;
	char path[400];
	uint8_t *whole;
	off_t full, last_start;
	int fd;

	ck_assert_int_eq(s_open(&j, &seen, 150, 0, 0, NULL), 0);
	s_fill(j, 1, 29, 150, 29);
	ck_assert_int_eq(bm_journal_commit(j), 0);
	last_start = s_size(s_seg_path(path, sizeof path, 1));
	s_fill(j, 30, 30, 150, 1);
	bm_journal_destroy(&j);
	full = s_size(path);
	ck_assert_int_gt(full, last_start);
	whole = malloc((size_t)full);
	fd = open(path, O_RDONLY);
	ck_assert_int_eq(read(fd, whole, (size_t)full), full);
	close(fd);

	for (off_t cut = last_start; cut <= full; cut++) {
		/* Put back the file as it was, cut at this byte. */
		fd = open(path, O_WRONLY | O_TRUNC);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(write(fd, whole, (size_t)cut), cut);
		close(fd);
		ck_assert_int_eq(s_open(&j, &seen, 150, 0, 0, &rep), 0);
		ck_assert(seen.contiguous);
		ck_assert_uint_eq(seen.bad, 0);
		ck_assert_uint_eq(seen.n, cut == full ? 30 : 29);
		ck_assert_uint_eq(rep.torn_bytes, cut == full ? 0 : (uint64_t)(cut - last_start));
		if (cut > last_start && cut < full) {
			ck_assert_str_eq(rep.torn_segment, path);
		}
		ck_assert_int_eq(s_size(path), cut == full ? full : last_start);
		/* Appending after the cut continues the sequence. */
		ck_assert_uint_eq(bm_journal_next_seq(j), cut == full ? 31 : 30);
		bm_journal_destroy(&j);
	}
	free(whole);
}
END_TEST

START_TEST(a_torn_new_segment_header_is_removed_as_torn)
{
	bm_journal_t *j = NULL;
	bm_journal_report_t rep;
	s_seen_t seen;
	char path[400];
	int fd;

	ck_assert_int_eq(s_open(&j, &seen, 100, 0, 0, NULL), 0);
	s_fill(j, 1, 10, 100, 5);
	bm_journal_destroy(&j);
	/* A crash while segment 2 was being created left 17 bytes of it. */
	fd = open(s_seg_path(path, sizeof path, 2), O_WRONLY | O_CREAT, 0600);
	ck_assert_int_eq(write(fd, "BMJL\1\0\0\0\2\0\0\0\0\0\0\0\x55", 17), 17);
	close(fd);
	ck_assert_int_eq(s_open(&j, &seen, 100, 0, 0, &rep), 0);
	ck_assert_uint_eq(seen.n, 10);
	ck_assert_uint_eq(rep.torn_bytes, 17);
	s_fill(j, 11, 12, 100, 1);
	bm_journal_destroy(&j);
	ck_assert_int_eq(s_open(&j, &seen, 100, 0, 0, &rep), 0);
	ck_assert_uint_eq(seen.n, 12);
	ck_assert(seen.contiguous);
	bm_journal_destroy(&j);
}
END_TEST

static void
s_flip(const char *path, off_t at)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &b, 1, at), 1);
	b ^= 0x20;
	ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
	close(fd);
}

START_TEST(a_flipped_byte_mid_log_is_reported_not_dropped_and_salvage_keeps_the_rest)
{
	bm_journal_t *j = NULL;
	bm_journal_report_t rep;
	s_seen_t seen;
	char path[400];
	off_t before;

	/* 40 records of <= 144 bytes in 512-byte segments: several segments. */
	ck_assert_int_eq(s_open(&j, &seen, 120, 512, 0, NULL), 0);
	s_fill(j, 1, 40, 120, 1);
	ck_assert_uint_ge(bm_journal_segments(j), 4);
	bm_journal_destroy(&j);

	/* In an older segment. */
	s_seg_path(path, sizeof path, 2);
	before = s_size(path);
	s_flip(path, 40 + 21);
	ck_assert_int_eq(s_open(&j, &seen, 120, 512, 0, &rep), BM_ECORRUPT);
	ck_assert_ptr_null(j);
	ck_assert_str_eq(rep.corrupt_segment, path);
	ck_assert_uint_eq(rep.corrupt_offset, 40);
	ck_assert_int_eq(s_size(path), before);
	/* Refused again: nothing was silently changed. */
	ck_assert_int_eq(s_open(&j, &seen, 120, 512, 0, &rep), BM_ECORRUPT);

	ck_assert_int_eq(bm_journal_salvage(s_dir, &rep), 0);
	ck_assert_uint_eq(rep.quarantined, 1);
	ck_assert_uint_eq(rep.records, 39);
	ck_assert_int_eq(s_open(&j, &seen, 120, 512, 0, &rep), 0);
	ck_assert_uint_eq(seen.n, 39);
	ck_assert_uint_eq(seen.bad, 0);
	ck_assert(!seen.contiguous);
	ck_assert_uint_eq(bm_journal_next_seq(j), 41);
	bm_journal_destroy(&j);
	{
		char q[600];

		snprintf(q, sizeof q, "%s/quarantine", s_dir);
		ck_assert_int_eq(access(q, F_OK), 0);
	}
}
END_TEST

START_TEST(a_bad_record_in_the_newest_segment_followed_by_good_ones_is_corruption)
{
	bm_journal_t *j = NULL;
	bm_journal_report_t rep;
	s_seen_t seen;
	char path[400];

	ck_assert_int_eq(s_open(&j, &seen, 100, 0, 0, NULL), 0);
	s_fill(j, 1, 20, 100, 1);
	bm_journal_destroy(&j);
	s_seg_path(path, sizeof path, 1);
	/* The length field of the first record. */
	s_flip(path, 40 + 1);
	ck_assert_int_eq(s_open(&j, &seen, 100, 0, 0, &rep), BM_ECORRUPT);
	ck_assert_uint_eq(rep.corrupt_offset, 40);
	ck_assert_int_eq(bm_journal_salvage(s_dir, &rep), 0);
	ck_assert_int_eq(s_open(&j, &seen, 100, 0, 0, &rep), 0);
	ck_assert_uint_eq(seen.n, 19);
	bm_journal_destroy(&j);
}
END_TEST

/* ---- crashes and I/O errors ---- */

/*
 * The crash shim: real writes, but it remembers how much of each file was
 * synced.  At the Nth sync it "loses power": every file is cut back to its
 * synced size (drop) or to a random point of its unsynced bytes with
 * garbage after it (tear), and the process dies at once.
 */
typedef struct {
	int n;             /* crash at this sync (1-based) */
	int syncs;         /* syncs so far */
	bool tear;         /* tear rather than drop */
	uint32_t rnd;      /* xorshift state */
	int fds[64];       /* files seen */
	off_t synced[64];  /* their synced sizes */
	int nfds;
} s_shim_t;

static s_shim_t s_shim;

static int
s_shim_slot(int fd)
{
	struct stat st;

	for (int i = 0; i < s_shim.nfds; i++) {
		if (s_shim.fds[i] == fd) {
			return i;
		}
	}
	ck_assert_int_lt(s_shim.nfds, 64);
	ck_assert_int_eq(fstat(fd, &st), 0);
	s_shim.fds[s_shim.nfds] = fd;
	/* A file first seen was synced up to here (fresh files: header
	 * writes come through write() and count as unsynced). */
	s_shim.synced[s_shim.nfds] = st.st_size;
	return s_shim.nfds++;
}

static uint32_t
s_rand(void)
{
	s_shim.rnd ^= s_shim.rnd << 13;
	s_shim.rnd ^= s_shim.rnd >> 17;
	s_shim.rnd ^= s_shim.rnd << 5;
	return s_shim.rnd;
}

static ssize_t
s_shim_write(void *arg, int fd, const void *buf, size_t len)
{
	ssize_t n;

	(void)arg;
	(void)s_shim_slot(fd);
	n = write(fd, buf, len);
	return n < 0 ? -errno : n;
}

static int
s_shim_sync(void *arg, int fd, bool is_dir)
{
	struct stat st;

	(void)arg;
	if (++s_shim.syncs == s_shim.n) {
		for (int i = 0; i < s_shim.nfds; i++) {
			off_t keep = s_shim.synced[i];

			if (fstat(s_shim.fds[i], &st) < 0 || st.st_size <= keep) {
				continue;
			}
			if (s_shim.tear) {
				off_t torn = keep + (off_t)(s_rand() % (uint32_t)(st.st_size - keep + 1));
				uint8_t junk[16];

				for (int k = 0; k < 16; k++) {
					junk[k] = (uint8_t)s_rand();
				}
				/* Keep a prefix of the unsynced bytes, scribble over the
				 * bytes right after it, within what was unsynced. */
				if (torn < st.st_size) {
					size_t jn = (size_t)(st.st_size - torn) < 16 ? (size_t)(st.st_size - torn) : 16;

					(void)!pwrite(s_shim.fds[i], junk, jn, torn);
					torn += (off_t)jn;
				}
				(void)!ftruncate(s_shim.fds[i], torn);
			} else {
				(void)!ftruncate(s_shim.fds[i], keep);
			}
		}
		_exit(42);
	}
	if (!is_dir) {
		int i = s_shim_slot(fd);

		if (fdatasync(fd) < 0) {
			return -errno;
		}
		ck_assert_int_eq(fstat(fd, &st), 0);
		s_shim.synced[i] = st.st_size;
	}
	return 0;
}

/* Child: appends groups of records, reporting after each commit the last
 * seq the journal says is stored. */
static void
s_crash_writer(int out_fd, int n, bool tear)
{
	bm_journal_ops_t ops = {s_shim_write, s_shim_sync, NULL};
	bm_journal_opts_t o = {.segment_size = 4096, .ops = &ops};
	bm_journal_t *j = NULL;
	uint8_t buf[4096];

	memset(&s_shim, 0, sizeof s_shim);
	s_shim.n = n;
	s_shim.tear = tear;
	s_shim.rnd = 0x9e3779b9u ^ (uint32_t)n * 7919u;
	if (bm_journal_open(s_dir, &o, &j) < 0) {
		_exit(3);
	}
	for (uint64_t i = 1; i <= 2000; i++) {
		uint64_t seq, stored;

		if (bm_journal_append(j, 7, BM_JOURNAL_LIVE, buf, s_payload(i, buf, 200), &seq) < 0) {
			_exit(4);
		}
		if (i % (1 + i % 5) == 0) {
			if (bm_journal_commit(j) < 0) {
				_exit(5);
			}
			stored = bm_journal_synced_seq(j);
			if (write(out_fd, &stored, sizeof stored) != sizeof stored) {
				_exit(6);
			}
		}
	}
	_exit(0);
}

START_TEST(always_loses_nothing_it_reported_stored_when_unsynced_writes_are_dropped_or_torn)
{
	for (int round = 0; round < 24; round++) {
		int n = 1 + round * 23, p[2];
		bool tear = round % 2 == 1;
		uint64_t reported = 0, v;
		bm_journal_t *j = NULL;
		bm_journal_report_t rep;
		s_seen_t seen;
		pid_t pid;
		int status;
		char cmd[600];

		ck_assert_int_eq(pipe(p), 0);
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			close(p[0]);
			s_crash_writer(p[1], n, tear);
		}
		close(p[1]);
		while (read(p[0], &v, sizeof v) == sizeof v) {
			reported = v;
		}
		close(p[0]);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert(WIFEXITED(status));
		ck_assert_int_eq(WEXITSTATUS(status), 42);
		ck_assert_int_eq(s_open(&j, &seen, 200, 4096, 0, &rep), 0);
		ck_assert(seen.contiguous);
		ck_assert_uint_eq(seen.bad, 0);
		ck_assert_uint_ge(seen.last, reported);
		bm_journal_destroy(&j);
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
		ck_assert_int_eq(system(cmd), 0);
	}
}
END_TEST

static int s_fail_at;  /* fail the Nth sync with -EIO */
static int s_nsync;

static int
s_eio_sync(void *arg, int fd, bool is_dir)
{
	(void)arg;
	if (++s_nsync == s_fail_at) {
		return -EIO;
	}
	return is_dir ? fsync(fd) : fdatasync(fd);
}

static ssize_t
s_plain_write(void *arg, int fd, const void *buf, size_t len)
{
	ssize_t n = write(fd, buf, len);

	(void)arg;
	return n < 0 ? -errno : n;
}

START_TEST(an_fsync_error_is_sticky_and_the_journal_turns_read_only)
{
	bm_journal_ops_t ops = {s_plain_write, s_eio_sync, NULL};
	bm_journal_opts_t o = {.ops = &ops};
	bm_journal_t *j = NULL;
	s_seen_t seen;
	uint8_t buf[200];

	s_nsync = 0;
	/* Open syncs the new segment and the directory: fail the 5th sync,
	 * i.e. the third commit. */
	s_fail_at = 5;
	ck_assert_int_eq(bm_journal_open(s_dir, &o, &j), 0);
	for (uint64_t i = 1; i <= 2; i++) {
		ck_assert_int_eq(bm_journal_append(j, 7, 0, buf, s_payload(i, buf, 200), NULL), 0);
		ck_assert_int_eq(bm_journal_commit(j), 0);
	}
	ck_assert_int_eq(bm_journal_append(j, 7, 0, buf, s_payload(3, buf, 200), NULL), 0);
	ck_assert_int_eq(bm_journal_commit(j), -EIO);
	ck_assert_uint_eq(bm_journal_synced_seq(j), 2);
	ck_assert_int_eq(bm_journal_error(j), -EIO);
	/* Never retried: later calls say read-only, even though the next
	 * fsync would succeed. */
	ck_assert_int_eq(bm_journal_commit(j), BM_EREADONLY);
	ck_assert_int_eq(bm_journal_append(j, 7, 0, buf, 1, NULL), BM_EREADONLY);
	ck_assert_int_eq(bm_journal_close(j), -EIO);
	bm_journal_destroy(&j);
	ck_assert_int_eq(s_open(&j, &seen, 200, 0, 0, NULL), 0);
	ck_assert_uint_ge(seen.n, 2);
	ck_assert_uint_eq(seen.bad, 0);
	bm_journal_destroy(&j);
}
END_TEST

START_TEST(a_full_disk_gives_a_clear_error_and_loses_nothing_stored)
{
	int p[2];
	pid_t pid;
	uint64_t reported = 0, v;
	int status;
	bm_journal_t *j = NULL;
	bm_journal_report_t rep;
	s_seen_t seen;

	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* The file-size limit stands in for a full disk: writes past it
		 * fail with EFBIG (SIGXFSZ ignored), partial writes included. */
		struct rlimit rl = {.rlim_cur = 150000, .rlim_max = 150000};
		bm_journal_opts_t o = {.segment_size = 1u << 20};
		uint8_t buf[4096];
		int rc = 0;

		close(p[0]);
		signal(SIGXFSZ, SIG_IGN);
		if (bm_journal_open(s_dir, &o, &j) < 0 || setrlimit(RLIMIT_FSIZE, &rl) < 0) {
			_exit(3);
		}
		for (uint64_t i = 1; i <= 100000 && rc == 0; i++) {
			rc = bm_journal_append(j, 7, BM_JOURNAL_LIVE, buf, s_payload(i, buf, 1000), NULL);
			if (rc == 0 && i % 3 == 0) {
				rc = bm_journal_commit(j);
			}
			if (rc == 0 && i % 3 == 0) {
				v = bm_journal_synced_seq(j);
				(void)!write(p[1], &v, sizeof v);
			}
		}
		if (rc != -EFBIG || bm_journal_error(j) != -EFBIG ||
		    bm_journal_append(j, 7, 0, buf, 1, NULL) != BM_EREADONLY) {
			_exit(4);
		}
		bm_journal_destroy(&j);
		_exit(0);
	}
	close(p[1]);
	while (read(p[0], &v, sizeof v) == sizeof v) {
		reported = v;
	}
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	ck_assert_uint_gt(reported, 100);
	/* Consistent: it opens without a torn tail (the failed write was cut
	 * back) and everything reported stored is there. */
	ck_assert_int_eq(s_open(&j, &seen, 1000, 1u << 20, 0, &rep), 0);
	ck_assert_uint_eq(rep.torn_bytes, 0);
	ck_assert(seen.contiguous);
	ck_assert_uint_eq(seen.bad, 0);
	ck_assert_uint_ge(seen.last, reported);
	bm_journal_destroy(&j);
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("journal");
	TCase *tc = tcase_create("journal");

	tcase_add_checked_fixture(tc, s_setup, s_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, records_come_back_in_order_after_reopen_under_each_sync_policy);
	tcase_add_test(tc, a_second_open_of_the_same_directory_is_refused);
	tcase_add_test(tc, segments_rotate_at_their_size_and_are_deleted_when_nothing_in_them_is_live);
	tcase_add_test(tc, an_oversized_or_invalid_append_is_refused_and_changes_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("recovery");
	tcase_add_checked_fixture(tc, s_setup, s_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, the_last_segment_cut_at_every_offset_of_its_last_record_recovers_every_complete_record);
	tcase_add_test(tc, a_torn_new_segment_header_is_removed_as_torn);
	tcase_add_test(tc, a_flipped_byte_mid_log_is_reported_not_dropped_and_salvage_keeps_the_rest);
	tcase_add_test(tc, a_bad_record_in_the_newest_segment_followed_by_good_ones_is_corruption);
	suite_add_tcase(s, tc);

	tc = tcase_create("faults");
	tcase_add_checked_fixture(tc, s_setup, s_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, always_loses_nothing_it_reported_stored_when_unsynced_writes_are_dropped_or_torn);
	tcase_add_test(tc, an_fsync_error_is_sticky_and_the_journal_turns_read_only);
	tcase_add_test(tc, a_full_disk_gives_a_clear_error_and_loses_nothing_stored);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(s_suite());
	int failed;

	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

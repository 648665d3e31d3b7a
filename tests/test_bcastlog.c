/*
 * test_bcastlog.c - the shared-memory broadcast log (shm/bcastlog.c):
 * one publisher, readers in forked processes over real shared memory.
 *
 * What it pins down: every reader sees every record in order and intact;
 * an untethered reader that falls behind loses records and counts them
 * exactly (published - received == reported loss, record by record); a
 * tethered reader is never skipped (the publisher gets BM_EFULL and
 * retries); a tethered reader killed with -9 stops holding the publisher;
 * a publisher scribbling on the log gives its readers BM_ECORRUPT, a reader
 * scribbling on its cursor is released, and nobody crashes.
 *
 * Children report through their exit status; every loop is bounded and
 * every child is reaped (killed with -9 when it overruns).
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm_private.h"
#include "shmutil.h"

#define S_NAME "tpub"
#define S_WAIT_MS 20000

static char s_dir[64];

static void
s_dir_setup(void)
{
	su_dir_setup(s_dir, sizeof s_dir, "bmblog");
}

static void
s_dir_teardown(void)
{
	su_dir_teardown(s_dir);
}

typedef struct {
	unsigned flags;   /* BM_BCASTLOG_* */
	long count;       /* records the publisher sends (last one on "end/") */
	int slow_us;      /* sleep after this many... */
	int slow_every;   /* ...records */
	size_t len;       /* body bytes */
	int ready_fd;     /* write one byte once attached */
} s_rd_arg_t;

static void
s_fill(uint8_t *b, size_t len, uint64_t seq)
{
	for (size_t i = 0; i < len; i++) {
		b[i] = (uint8_t)(seq * 31 + i);
	}
}

static bool
s_check(const uint8_t *b, size_t len, uint64_t seq)
{
	for (size_t i = 0; i < len; i++) {
		if (b[i] != (uint8_t)(seq * 31 + i)) {
			return false;
		}
	}
	return true;
}

/* Reader child: reads until "end/", checks order, content and the loss
 * accounting.  Exit 0 ok, 10+ which check failed.  Exit 3 when tethered
 * and anything was lost. */
static int
s_reader(void *arg)
{
	s_rd_arg_t *a = arg;
	bm_bcastlog_reader_t *r = NULL;
	bm_bcastlog_rec_t rec;
	uint8_t *buf = malloc(a->len + 64);
	uint64_t got = 0, lost = 0, last = 0;
	char one = 1;
	int rc;

	if (buf == NULL || bm_bcastlog_attach(s_dir, S_NAME, a->flags, 5000, &r) < 0) {
		return 10;
	}
	if (write(a->ready_fd, &one, 1) != 1) {
		return 11;
	}
	for (long i = 0; i < 10 * a->count + 100; i++) {
		rc = bm_bcastlog_read(r, buf, a->len + 64, 5000, &rec);
		if (rc < 0) {
			fprintf(stderr, "reader: %s after %llu\n", bm_strerror(rc), (unsigned long long)got);
			return 12;
		}
		/* Exact: each record's gap is the hole in the sequence. */
		if (rec.seq != last + 1 + rec.gap || rec.len != a->len ||
		    !s_check(buf, rec.len, rec.seq) || rec.tseq != rec.seq) {
			fprintf(stderr, "reader: record %llu (last %llu gap %llu len %zu) is wrong\n",
			        (unsigned long long)rec.seq, (unsigned long long)last,
			        (unsigned long long)rec.gap, rec.len);
			return 13;
		}
		last = rec.seq;
		got++;
		lost += rec.gap;
		if (a->slow_every > 0 && got % (uint64_t)a->slow_every == 0) {
			usleep((useconds_t)a->slow_us);
		}
		if (strcmp(rec.topic, "end/") == 0) {
			break;
		}
	}
	if (last != (uint64_t)a->count || got + lost != (uint64_t)a->count ||
	    lost != bm_bcastlog_reader_lost(r)) {
		fprintf(stderr, "reader: got %llu lost %llu of %ld\n", (unsigned long long)got,
		        (unsigned long long)lost, a->count);
		return 14;
	}
	if ((a->flags & BM_BCASTLOG_TETHERED) && lost != 0) {
		return 3;
	}
	/* Untethered and slow: report whether anything was lost (2) or not (0). */
	bm_bcastlog_reader_destroy(&r);
	free(buf);
	return lost > 0 ? 2 : 0;
}

/* Services the log until n readers attached (each also writes a byte). */
static void
s_wait_readers(bm_bcastlog_t *log, int fd, int n)
{
	int64_t deadline = bm_mono_ms() + 10000;
	int seen = 0;

	while (seen < n) {
		struct pollfd p[2] = {{.fd = bm_bcastlog_fd(log), .events = POLLIN},
		                      {.fd = fd, .events = POLLIN}};
		char c;

		ck_assert_msg(bm_mono_ms() < deadline, "readers did not attach");
		(void)poll(p, 2, 10);
		ck_assert_int_ge(bm_bcastlog_service(log), 0);
		if (p[1].revents & POLLIN) {
			ck_assert_int_eq(read(fd, &c, 1), 1);
			seen++;
		}
	}
}

/* Publishes count records (tseq = seq, body from the seq), retrying on
 * BM_EFULL; the last on "end/".  Returns how many BM_EFULL it saw. */
static long
s_publish_all(bm_bcastlog_t *log, long count, size_t len)
{
	uint8_t *b = malloc(len + 1);
	int64_t deadline = bm_mono_ms() + S_WAIT_MS;
	long full = 0;

	ck_assert_ptr_nonnull(b);
	for (long i = 1; i <= count; i++) {
		int rc;

		s_fill(b, len, (uint64_t)i);
		for (;;) {
			rc = bm_bcastlog_publish(log, i == count ? "end/" : "t/1/", (uint64_t)i, b, len, 0);
			if (rc != BM_EFULL) {
				break;
			}
			full++;
			ck_assert_msg(bm_mono_ms() < deadline, "publisher held for too long");
			/* Wait for room the blocking way now and then. */
			if (full % 16 == 0) {
				rc = bm_bcastlog_publish(log, i == count ? "end/" : "t/1/", (uint64_t)i, b,
				                         len, 100);
				if (rc == 0 || rc != -ETIMEDOUT) {
					break;
				}
			}
		}
		ck_assert_msg(rc == 0, "publish %ld: %s", i, bm_strerror(rc));
	}
	free(b);
	return full;
}

START_TEST(bcastlog_readers_see_every_record_in_order_and_intact)
{
	bm_bcastlog_opts_t o = {.capacity = 256 << 10, .readers = 8};
	bm_bcastlog_t *log = NULL;
	s_rd_arg_t a[4];
	pid_t pid[4];
	int p[2];
	long count = 50000;

	ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log), 0);
	ck_assert_int_eq(pipe(p), 0);
	for (int i = 0; i < 4; i++) {
		a[i] = (s_rd_arg_t){.flags = BM_BCASTLOG_TETHERED, .count = count, .len = 300,
		                    .ready_fd = p[1]};
		pid[i] = su_fork(s_reader, &a[i]);
		ck_assert_int_gt(pid[i], 0);
	}
	s_wait_readers(log, p[0], 4);
	(void)s_publish_all(log, count, 300);
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(su_reap(pid[i], S_WAIT_MS), 0);
	}
	close(p[0]);
	close(p[1]);
	bm_bcastlog_destroy(&log);
}
END_TEST

static size_t
s_len_of(uint64_t seq)
{
	return (size_t)(seq * 37 % 5000);
}

/* Reader child for records of varying sizes (s_len_of). */
static int
s_sizes_reader(void *arg)
{
	s_rd_arg_t *a = arg;
	bm_bcastlog_reader_t *r = NULL;
	bm_bcastlog_rec_t rec;
	static uint8_t buf[8192];
	char one = 1;

	if (bm_bcastlog_attach(s_dir, S_NAME, BM_BCASTLOG_TETHERED, 5000, &r) < 0) {
		return 10;
	}
	if (write(a->ready_fd, &one, 1) != 1) {
		return 11;
	}
	for (long i = 1; i <= a->count; i++) {
		if (bm_bcastlog_read(r, buf, sizeof buf, 5000, &rec) != 0 || rec.seq != (uint64_t)i ||
		    rec.gap != 0 || rec.len != s_len_of(rec.seq) || !s_check(buf, rec.len, rec.seq)) {
			return 12;
		}
	}
	/* The publisher closes: every record was read, then BM_EPEER. */
	if (bm_bcastlog_read(r, buf, sizeof buf, 5000, &rec) != BM_EPEER) {
		return 13;
	}
	bm_bcastlog_reader_destroy(&r);
	return 0;
}

START_TEST(bcastlog_records_of_every_size_wrap_correctly)
{
	bm_bcastlog_opts_t o = {.capacity = 64 << 10};
	bm_bcastlog_t *log = NULL;
	s_rd_arg_t a = {.count = 30000};
	static uint8_t b[8192];
	int64_t deadline = bm_mono_ms() + S_WAIT_MS;
	int p[2];
	pid_t pid;

	ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log), 0);
	ck_assert_int_eq(pipe(p), 0);
	a.ready_fd = p[1];
	pid = su_fork(s_sizes_reader, &a);
	s_wait_readers(log, p[0], 1);
	for (long i = 1; i <= a.count; i++) {
		int rc;

		s_fill(b, s_len_of((uint64_t)i), (uint64_t)i);
		do {
			rc = bm_bcastlog_publish(log, "t/", (uint64_t)i, b, s_len_of((uint64_t)i), 1000);
		} while (rc == -ETIMEDOUT && bm_mono_ms() < deadline);
		ck_assert_int_eq(rc, 0);
	}
	bm_bcastlog_destroy(&log);
	ck_assert_int_eq(su_reap(pid, S_WAIT_MS), 0);
	close(p[0]);
	close(p[1]);
}
END_TEST

START_TEST(bcastlog_untethered_slow_reader_counts_its_loss_exactly)
{
	bm_bcastlog_opts_t o = {.capacity = 64 << 10};
	bm_bcastlog_t *log = NULL;
	bm_bcastlog_stats_t st;
	s_rd_arg_t a = {.flags = 0, .count = 200000, .len = 200, .slow_us = 200, .slow_every = 64};
	int p[2];
	pid_t pid;

	ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log), 0);
	ck_assert_int_eq(pipe(p), 0);
	a.ready_fd = p[1];
	pid = su_fork(s_reader, &a);
	s_wait_readers(log, p[0], 1);
	/* Never held: an untethered reader costs the publisher nothing. */
	ck_assert_int_eq(s_publish_all(log, a.count, a.len), 0);
	bm_bcastlog_stats(log, &st);
	ck_assert_uint_eq(st.full, 0);
	ck_assert_uint_eq(st.published, (uint64_t)a.count);
	/* 2: it lost records, and they add up (checked in the child). */
	ck_assert_int_eq(su_reap(pid, S_WAIT_MS), 2);
	close(p[0]);
	close(p[1]);
	bm_bcastlog_destroy(&log);
}
END_TEST

START_TEST(bcastlog_tethered_slow_reader_holds_the_publisher_and_loses_nothing)
{
	bm_bcastlog_opts_t o = {.capacity = 64 << 10};
	bm_bcastlog_t *log = NULL;
	bm_bcastlog_stats_t st;
	s_rd_arg_t a = {.flags = BM_BCASTLOG_TETHERED, .count = 20000, .len = 1000, .slow_us = 300,
	                .slow_every = 32};
	s_rd_arg_t u = {.flags = 0, .count = 20000, .len = 1000};
	int p[2];
	pid_t pid, upid;
	long full;
	int rc;

	ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log), 0);
	ck_assert_int_eq(pipe(p), 0);
	a.ready_fd = u.ready_fd = p[1];
	pid = su_fork(s_reader, &a);
	upid = su_fork(s_reader, &u); /* a fast untethered one alongside */
	s_wait_readers(log, p[0], 2);
	full = s_publish_all(log, a.count, a.len);
	ck_assert_int_gt(full, 0);
	bm_bcastlog_stats(log, &st);
	ck_assert_uint_gt(st.full, 0);
	ck_assert_int_eq(su_reap(pid, S_WAIT_MS), 0);
	/* Untethered: it may lose records (2) but counts them exactly. */
	rc = su_reap(upid, S_WAIT_MS);
	ck_assert_msg(rc == 0 || rc == 2, "untethered reader: %d", rc);
	close(p[0]);
	close(p[1]);
	bm_bcastlog_destroy(&log);
}
END_TEST

static int
s_stuck_reader(void *arg)
{
	s_rd_arg_t *a = arg;
	bm_bcastlog_reader_t *r = NULL;
	char one = 1;

	if (bm_bcastlog_attach(s_dir, S_NAME, BM_BCASTLOG_TETHERED, 5000, &r) < 0) {
		return 10;
	}
	if (write(a->ready_fd, &one, 1) != 1) {
		return 11;
	}
	for (int i = 0; i < 600; i++) {
		pause(); /* never reads; killed by the test */
	}
	return 0;
}

START_TEST(bcastlog_tethered_reader_killed_with_9_releases_the_publisher)
{
	bm_bcastlog_opts_t o = {.capacity = 64 << 10};
	bm_bcastlog_t *log = NULL;
	bm_bcastlog_stats_t st;
	s_rd_arg_t a = {0};
	uint8_t b[1000] = {0};
	int p[2], rc = 0, n = 0;
	pid_t pid;

	ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log), 0);
	ck_assert_int_eq(pipe(p), 0);
	a.ready_fd = p[1];
	pid = su_fork(s_stuck_reader, &a);
	s_wait_readers(log, p[0], 1);
	for (; n < 1000 && (rc = bm_bcastlog_publish(log, "t/", 0, b, sizeof b, 0)) == 0; n++) {
	}
	ck_assert_int_eq(rc, BM_EFULL);
	ck_assert_int_lt(n, 1000);
	/* Still held after a while: a live tethered reader is honoured. */
	ck_assert_int_eq(bm_bcastlog_publish(log, "t/", 0, b, sizeof b, 50), -ETIMEDOUT);
	kill(pid, SIGKILL);
	ck_assert_int_eq(su_reap(pid, S_WAIT_MS), 128 + SIGKILL);
	/* Its socket closed with it: the next publish goes through. */
	int64_t t0 = bm_mono_ms();
	ck_assert_int_eq(bm_bcastlog_publish(log, "t/", 0, b, sizeof b, 5000), 0);
	ck_assert_int_lt(bm_mono_ms() - t0, 1000);
	for (int i = 0; i < 1000; i++) {
		ck_assert_int_eq(bm_bcastlog_publish(log, "t/", 0, b, sizeof b, 0), 0);
	}
	bm_bcastlog_stats(log, &st);
	ck_assert_uint_eq(st.readers, 0);
	ck_assert_uint_eq(st.released, 1);
	close(p[0]);
	close(p[1]);
	bm_bcastlog_destroy(&log);
}
END_TEST

/* Reader child for the hostile publisher: reads the first record, says so,
 * then reads until an error; exit 0 when that error is BM_ECORRUPT. */
static int
s_victim(void *arg)
{
	s_rd_arg_t *a = arg;
	bm_bcastlog_reader_t *r = NULL;
	bm_bcastlog_rec_t rec;
	uint8_t buf[70000];
	char one = 1;
	int rc = 0;

	if (bm_bcastlog_attach(s_dir, S_NAME, a->flags, 5000, &r) < 0) {
		return 10;
	}
	if (write(a->ready_fd, &one, 1) != 1) {
		return 11;
	}
	if (bm_bcastlog_read(r, buf, sizeof buf, 5000, &rec) != 0 || rec.seq != 1) {
		return 12;
	}
	if (write(a->ready_fd, &one, 1) != 1) {
		return 11;
	}
	for (int i = 0; i < 100000; i++) {
		rc = bm_bcastlog_read(r, buf, sizeof buf, 2000, &rec);
		if (rc < 0) {
			break;
		}
	}
	if (rc != BM_ECORRUPT) {
		fprintf(stderr, "victim: %s\n", bm_strerror(rc));
		return 13;
	}
	/* Sticky. */
	return bm_bcastlog_read(r, buf, sizeof buf, 0, &rec) == BM_ECORRUPT ? 0 : 14;
}

enum { S_SCRIBBLE_LEN, S_SCRIBBLE_TAIL_BACK, S_SCRIBBLE_OLDEST, S_SCRIBBLE_SEQ,
       S_SCRIBBLE_KIND, S_SCRIBBLE_N };

START_TEST(bcastlog_publisher_scribbling_on_the_log_gives_readers_corrupt)
{
	for (int how = 0; how < S_SCRIBBLE_N; how++) {
		bm_bcastlog_opts_t o = {.capacity = 64 << 10};
		bm_bcastlog_t *log = NULL;
		s_rd_arg_t a = {.flags = how % 2 ? BM_BCASTLOG_TETHERED : 0};
		uint8_t b[100] = {0}, *base;
		size_t len;
		int p[2];
		pid_t pid;
		char c;
		_Atomic uint64_t *tail, *oldest;
		uint8_t *rec;

		ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log), 0);
		ck_assert_int_eq(pipe(p), 0);
		a.ready_fd = p[1];
		pid = su_fork(s_victim, &a);
		s_wait_readers(log, p[0], 1);
		ck_assert_int_eq(bm_bcastlog_publish(log, "t/", 1, b, sizeof b, 0), 0);
		ck_assert_int_eq(read(p[0], &c, 1), 1); /* it has read record 1 */
		base = bm__bcastlog_base(log, &len);
		tail = (_Atomic uint64_t *)(void *)(base + 128);
		oldest = (_Atomic uint64_t *)(void *)(base + 192);
		rec = base + 4096 + atomic_load(tail);
		switch (how) {
		case S_SCRIBBLE_LEN: /* a record longer than the space */
			memset(rec, 0, 64);
			rec[3] = 0x7f;
			rec[6] = 1;
			memset(rec + 8, 0, 8);
			rec[8] = 2;
			atomic_store(tail, atomic_load(tail) + 64);
			break;
		case S_SCRIBBLE_TAIL_BACK:
			atomic_store(tail, 0);
			/* and forward again so the reader looks */
			usleep(1000);
			atomic_store(tail, 0);
			break;
		case S_SCRIBBLE_OLDEST:
			atomic_store(oldest, atomic_load(tail) + 4096);
			atomic_store(tail, atomic_load(tail) + 64);
			break;
		case S_SCRIBBLE_SEQ: /* a well-formed record out of sequence */
			memset(rec, 0, 64);
			rec[4] = 2;  /* topic_len */
			rec[6] = 1;  /* kind: message */
			rec[8] = 77; /* seq: 2 expected */
			memcpy(rec + 32, "t/", 2);
			atomic_store(tail, atomic_load(tail) + 64);
			break;
		case S_SCRIBBLE_KIND:
			memset(rec, 0xff, 64);
			atomic_store(tail, atomic_load(tail) + 64);
			break;
		}
		ck_assert_msg(su_reap(pid, S_WAIT_MS) == 0, "scribble %d not reported as corrupt", how);
		close(p[0]);
		close(p[1]);
		bm_bcastlog_destroy(&log);
	}
}
END_TEST

/* Random bytes over the header's indexes and the records: whatever the
 * reader returns, it never crashes and never reads out of bounds (ASan). */
START_TEST(bcastlog_reader_survives_random_scribbles)
{
	bm_bcastlog_opts_t o = {.capacity = 64 << 10};
	bm_bcastlog_t *log = NULL;
	uint8_t b[300] = {0}, *base;
	size_t len;
	int p[2];
	pid_t pid;
	unsigned seed = 18;

	ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log), 0);
	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	if (pid == 0) {
		/* Reads until any error: exit 0 as long as nothing crashed. */
		bm_bcastlog_reader_t *r = NULL;
		bm_bcastlog_rec_t rec;
		uint8_t buf[70000];
		char one = 1;
		int rc = 0;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (bm_bcastlog_attach(s_dir, S_NAME, 0, 5000, &r) < 0) {
			_exit(10);
		}
		(void)!write(p[1], &one, 1);
		for (int i = 0; i < 200000 && rc >= 0; i++) {
			rc = bm_bcastlog_read(r, buf, sizeof buf, 500, &rec);
		}
		bm_bcastlog_reader_destroy(&r);
		_exit(rc == BM_ECORRUPT || rc == -ETIMEDOUT || rc == -EMSGSIZE ? 0 : 12);
	}
	s_wait_readers(log, p[0], 1);
	base = bm__bcastlog_base(log, &len);
	for (int round = 0; round < 2000; round++) {
		(void)bm_bcastlog_publish(log, "t/", 0, b, sizeof b, 0);
		if (round % 7 == 0) {
			size_t at = 4096 + (size_t)rand_r(&seed) % (len - 4096 - 8);

			for (int k = 0; k < 8; k++) {
				base[at + (size_t)k] = (uint8_t)rand_r(&seed);
			}
		}
		if (round % 97 == 0) {
			base[128 + (size_t)rand_r(&seed) % 80] = (uint8_t)rand_r(&seed);
		}
	}
	ck_assert_int_eq(su_reap(pid, S_WAIT_MS), 0);
	close(p[0]);
	close(p[1]);
	bm_bcastlog_destroy(&log);
}
END_TEST

START_TEST(bcastlog_reader_scribbling_its_cursor_is_released_not_trusted)
{
	bm_bcastlog_opts_t o = {.capacity = 64 << 10};
	bm_bcastlog_t *log = NULL;
	bm_bcastlog_stats_t st;
	s_rd_arg_t a = {0};
	uint8_t b[1000] = {0}, *cur;
	size_t len;
	int p[2], rc = 0, n = 0;
	pid_t pid;

	ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log), 0);
	ck_assert_int_eq(pipe(p), 0);
	a.ready_fd = p[1];
	pid = su_fork(s_stuck_reader, &a);
	s_wait_readers(log, p[0], 1);
	/* The reader's cursor (slot 0) pointed far beyond the tail. */
	cur = bm__bcastlog_cursors(log, &len);
	atomic_store((_Atomic uint64_t *)(void *)(cur + 128), UINT64_C(1) << 40);
	for (; n < 1000 && (rc = bm_bcastlog_publish(log, "t/", 0, b, sizeof b, 0)) == 0; n++) {
	}
	ck_assert_int_eq(rc, 0);
	bm_bcastlog_stats(log, &st);
	ck_assert_uint_eq(st.corrupt, 1);
	ck_assert_uint_eq(st.tethered, 0);
	kill(pid, SIGKILL);
	su_reap(pid, S_WAIT_MS);
	close(p[0]);
	close(p[1]);
	bm_bcastlog_destroy(&log);
}
END_TEST

START_TEST(bcastlog_refuses_bad_arguments_a_taken_name_and_an_absent_publisher)
{
	bm_bcastlog_opts_t o = {.capacity = 64 << 10};
	bm_bcastlog_t *log = NULL, *log2 = NULL;
	bm_bcastlog_reader_t *r = NULL;
	static uint8_t big[20000];

	ck_assert_int_eq(bm_bcastlog_attach(s_dir, S_NAME, 0, 100, &r), -ENOENT);
	ck_assert_int_eq(bm_bcastlog_open(s_dir, "bad/name", &o, &log), BM_EBADNAME);
	ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log), 0);
	ck_assert_int_eq(bm_bcastlog_open(s_dir, S_NAME, &o, &log2), BM_ENAMETAKEN);
	ck_assert_int_eq(bm_bcastlog_publish(log, "t/", 0, big, sizeof big, 0), BM_ETOOBIG);
	ck_assert_int_eq(bm_bcastlog_publish(log, "", 0, big, 1, 0), -EINVAL);
	/* No reader: publishing never blocks, whatever the volume. */
	for (int i = 0; i < 10000; i++) {
		ck_assert_int_eq(bm_bcastlog_publish(log, "t/", 0, big, 4000, 0), 0);
	}
	bm_bcastlog_destroy(&log);
	ck_assert_ptr_null(log);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("bcastlog");
	TCase *tc = tcase_create("bcastlog");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, s_dir_setup, s_dir_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, bcastlog_refuses_bad_arguments_a_taken_name_and_an_absent_publisher);
	tcase_add_test(tc, bcastlog_records_of_every_size_wrap_correctly);
	tcase_add_test(tc, bcastlog_readers_see_every_record_in_order_and_intact);
	tcase_add_test(tc, bcastlog_untethered_slow_reader_counts_its_loss_exactly);
	tcase_add_test(tc, bcastlog_tethered_slow_reader_holds_the_publisher_and_loses_nothing);
	tcase_add_test(tc, bcastlog_tethered_reader_killed_with_9_releases_the_publisher);
	tcase_add_test(tc, bcastlog_publisher_scribbling_on_the_log_gives_readers_corrupt);
	tcase_add_test(tc, bcastlog_reader_survives_random_scribbles);
	tcase_add_test(tc, bcastlog_reader_scribbling_its_cursor_is_released_not_trusted);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}

/*
 * test_shm.c - the bulk channel: ring, doorbell and channel, blobs, point
 * clouds, the blob CLI.
 *
 * Real processes (fork), real shared memory, real kill -9.  Every test gets
 * its own 0700 directory under /tmp for sockets; processes synchronise on
 * pipes and sockets, never on sleep.  Every loop is bounded in count and
 * time.  A last test checks that no /dev/shm object of ours is left.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm_private.h"
#include "shmutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define S_SLOW 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define S_SLOW 1
#endif
#endif
#ifndef S_SLOW
#define S_SLOW 0
#endif


/* ---- helpers ---- */

static char s_dir[64];

static void
s_dir_setup(void)
{
	su_dir_setup(s_dir, sizeof s_dir, "bmshm");
}

static void
s_dir_teardown(void)
{
	su_dir_teardown(s_dir);
}

/* Producer child: connects to "c" in s_dir. */
static bm_channel_t *
s_connect(size_t cap, unsigned flags, int spin_us)
{
	bm_channel_opts_t o = {.capacity = cap, .flags = flags, .spin_us = spin_us};
	bm_channel_t *ch = NULL;

	if (bm_channel_connect(s_dir, "c", "p", &o, 5000, &ch) < 0) {
		_exit(90);
	}
	return ch;
}

static bm_channel_t *
s_accept(bm_listener_t *l, int spin_us)
{
	bm_channel_opts_t o = {.spin_us = spin_us};
	bm_channel_t *ch = NULL;

	ck_assert_int_eq(bm_listener_accept(l, 10000, &o, &ch), 0);
	return ch;
}

static int
s_count_shm_leftovers(void)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	int n = 0;

	if (d == NULL) {
		return 0;
	}
	while ((e = readdir(d)) != NULL) {
		int pid;

		/* bm-shm-<pid>-<random>: a live creator may hold one for a
		 * few instructions; a dead creator's object is a leak. */
		if (sscanf(e->d_name, "bm-shm-%d-", &pid) == 1 && (kill(pid, 0) < 0 && errno == ESRCH)) {
			n++;
		}
	}
	closedir(d);
	return n;
}

/* ---- ring ---- */

static void
s_ring_pair(size_t cap, bm_ring_t **p, bm_ring_t **c)
{
	ck_assert_int_eq(bm_ring_create(cap, 0, p), 0);
	ck_assert_int_eq(bm_ring_attach(bm_ring_fd(*p), c), 0);
}

START_TEST(ring_hands_a_record_from_reserve_to_peek_in_place)
{
	bm_ring_t *p = NULL, *c = NULL;
	bm_ring_rec_t rec;
	void *w;

	s_ring_pair(BM_RING_MIN_CAPACITY, &p, &c);
	ck_assert_int_eq(bm_ring_peek(c, &rec), -EAGAIN);
	ck_assert_int_eq(bm_ring_reserve(p, 100, &w), 0);
	ck_assert_int_eq((uintptr_t)w % 16, 0);
	memset(w, 0xAB, 100);
	ck_assert_int_eq(bm_ring_peek(c, &rec), -EAGAIN); /* not yet committed */
	ck_assert_int_eq(bm_ring_commit(p, 7, 100), 0);
	ck_assert_int_eq(bm_ring_peek(c, &rec), 0);
	ck_assert_uint_eq(rec.len, 100);
	ck_assert_uint_eq(rec.type, 7);
	ck_assert_uint_eq(rec.seq, 0);
	ck_assert_uint_eq(((const uint8_t *)rec.data)[99], 0xAB);
	/* The consumer reads the producer's bytes in place: same pages. */
	memset(w, 0xCD, 1);
	ck_assert_uint_eq(((const uint8_t *)rec.data)[0], 0xCD);
	ck_assert_int_eq(bm_ring_release(c), 0);
	ck_assert_int_eq(bm_ring_release(c), -EINVAL);
	ck_assert_int_eq(bm_ring_peek(c, &rec), -EAGAIN);
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);
	ck_assert_ptr_null(p);
	bm_ring_destroy(&c);
}
END_TEST

START_TEST(ring_with_huge_pages_and_prefault_falls_back_and_works)
{
	bm_ring_t *p = NULL, *c = NULL;
	char buf[64];
	size_t len;

	ck_assert_int_eq(bm_ring_create((size_t)8 << 20, BM_RING_HUGEPAGES | BM_RING_PREFAULT, &p), 0);
	ck_assert_uint_ge(bm_ring_capacity(p), (size_t)8 << 20);
	ck_assert_int_eq(bm_ring_attach(bm_ring_fd(p), &c), 0);
	ck_assert_int_eq(bm_ring_write(p, 9, "huge", 4), 0);
	ck_assert_int_eq(bm_ring_read(c, buf, sizeof buf, &len, NULL), 0);
	ck_assert_int_eq(memcmp(buf, "huge", 4), 0);
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);
}
END_TEST

START_TEST(ring_refuses_a_record_longer_than_its_capacity)
{
	bm_ring_t *p = NULL, *c = NULL;
	void *w;

	s_ring_pair(BM_RING_MIN_CAPACITY, &p, &c);
	ck_assert_int_eq(bm_ring_reserve(p, BM_RING_MIN_CAPACITY, &w), BM_ETOOBIG);
	ck_assert_int_eq(bm_ring_reserve(p, bm_ring_max_record(p), &w), 0);
	ck_assert_int_eq(bm_ring_commit(p, 1, bm_ring_max_record(p)), 0);
	ck_assert_int_eq(bm_ring_reserve(p, 0, &w), BM_EFULL);
	ck_assert_int_eq(bm_ring_create(1000, 0, &p), -EINVAL);
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);
}
END_TEST

static void
s_put_get(bm_ring_t *p, bm_ring_t *c, size_t len, uint8_t tag)
{
	bm_ring_rec_t rec;
	void *w;

	int rc = bm_ring_reserve(p, len, &w);

	if (rc == BM_EFULL) {
		/* A wrap record went out first; skipping it frees the room. */
		ck_assert_int_eq(bm_ring_peek(c, &rec), -EAGAIN);
		rc = bm_ring_reserve(p, len, &w);
	}
	ck_assert_int_eq(rc, 0);
	memset(w, tag, len);
	ck_assert_int_eq(bm_ring_commit(p, tag, len), 0);
	ck_assert_int_eq(bm_ring_peek(c, &rec), 0);
	ck_assert_uint_eq(rec.len, len);
	ck_assert_uint_eq(rec.type, tag);
	for (size_t k = 0; k < len; k++) {
		if (((const uint8_t *)rec.data)[k] != tag) {
			ck_abort_msg("byte %zu of a %zu-byte record is wrong", k, len);
		}
	}
	ck_assert_int_eq(bm_ring_release(c), 0);
}

START_TEST(ring_wraps_around_at_every_alignment)
{
	const size_t cap = BM_RING_MIN_CAPACITY;
	bm_ring_t *p = NULL, *c = NULL;
	struct bm__ring_hdr *h;
	size_t pos = 0;
	uint64_t seq = 0;

	s_ring_pair(cap, &p, &c);
	h = bm__ring_hdr(p);
	/* For every 64-byte offset t, move the head to t with filler
	 * records, then write a record one slot too big for the space left:
	 * it must wrap to offset 0 and arrive intact, in sequence. */
	for (size_t t = 64; t < cap; t += 64) {
		size_t big = cap - t + 64;
		bm_ring_rec_t rec;

		if (pos > t) {
			s_put_get(p, c, cap - pos - 16, 1);
			pos = 0;
			seq++;
		}
		if (pos < t) {
			s_put_get(p, c, t - pos - 16, 2);
			seq++;
		}
		ck_assert_uint_eq(atomic_load(&h->head) % cap, t);
		s_put_get(p, c, big - 16 - (t % 7), 3);
		ck_assert_uint_eq(atomic_load(&h->head) % cap, big % cap);
		pos = big % cap;
		seq++;
		ck_assert_int_eq(bm_ring_write(p, 4, "x", 1), 0);
		ck_assert_int_eq(bm_ring_peek(c, &rec), 0);
		ck_assert_uint_eq(rec.seq, seq);
		ck_assert_int_eq(bm_ring_release(c), 0);
		pos = (pos + 64) % cap;
		seq++;
	}
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);
}
END_TEST

START_TEST(ring_reports_full_and_takes_records_again_after_release)
{
	bm_ring_t *p = NULL, *c = NULL;
	uint8_t buf[1000] = {0};
	size_t n = 0, len;
	uint32_t type;

	s_ring_pair(BM_RING_MIN_CAPACITY, &p, &c);
	while (bm_ring_write(p, 1, buf, sizeof buf) == 0) {
		n++;
		ck_assert_uint_lt(n, 1000);
	}
	ck_assert_int_eq(bm_ring_write(p, 1, buf, sizeof buf), BM_EFULL);
	ck_assert_uint_eq(n, BM_RING_MIN_CAPACITY / 1024);
	ck_assert_int_eq(bm_ring_read(c, buf, 10, &len, &type), -EMSGSIZE);
	ck_assert_uint_eq(len, sizeof buf);
	ck_assert_int_eq(bm_ring_read(c, buf, sizeof buf, &len, &type), 0);
	ck_assert_int_eq(bm_ring_write(p, 1, buf, sizeof buf), 0);
	ck_assert_int_eq(bm_ring_write(p, 1, buf, sizeof buf), BM_EFULL);
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);
}
END_TEST

START_TEST(ring_reports_scribbled_indexes_and_records_as_corrupt)
{
	struct bm__ring_hdr *h;
	bm_ring_t *p = NULL, *c = NULL;
	bm_ring_rec_t rec;
	uint8_t buf[100] = {0};
	uint8_t *data;

	/* head beyond tail + capacity */
	s_ring_pair(BM_RING_MIN_CAPACITY, &p, &c);
	h = bm__ring_hdr(c);
	atomic_store(&h->head, UINT64_MAX - 5);
	ck_assert_int_eq(bm_ring_peek(c, &rec), BM_ECORRUPT);
	ck_assert_int_eq(bm_ring_peek(c, &rec), BM_ECORRUPT); /* sticky */
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);

	/* record length beyond the ring */
	s_ring_pair(BM_RING_MIN_CAPACITY, &p, &c);
	data = (uint8_t *)bm__ring_hdr(c) + BM__RING_HDR_SIZE;
	ck_assert_int_eq(bm_ring_write(p, 1, buf, sizeof buf), 0);
	memset(data, 0xFF, 4);
	ck_assert_int_eq(bm_ring_peek(c, &rec), BM_ECORRUPT);
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);

	/* record longer than what head published */
	s_ring_pair(BM_RING_MIN_CAPACITY, &p, &c);
	data = (uint8_t *)bm__ring_hdr(c) + BM__RING_HDR_SIZE;
	ck_assert_int_eq(bm_ring_write(p, 1, buf, sizeof buf), 0);
	data[1] = 0x10; /* len 4096 + 100 */
	ck_assert_int_eq(bm_ring_peek(c, &rec), BM_ECORRUPT);
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);

	/* sequence number rewritten */
	s_ring_pair(BM_RING_MIN_CAPACITY, &p, &c);
	data = (uint8_t *)bm__ring_hdr(c) + BM__RING_HDR_SIZE;
	ck_assert_int_eq(bm_ring_write(p, 1, buf, sizeof buf), 0);
	data[8] = 5;
	ck_assert_int_eq(bm_ring_peek(c, &rec), BM_ECORRUPT);
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);

	/* consumer's tail moved backwards / past head, seen by the producer */
	s_ring_pair(BM_RING_MIN_CAPACITY, &p, &c);
	ck_assert_int_eq(bm_ring_write(p, 1, buf, sizeof buf), 0);
	atomic_store(&bm__ring_hdr(p)->tail, 1u << 20);
	ck_assert_int_eq(bm_ring_write(p, 1, buf, sizeof buf), BM_ECORRUPT);
	bm_ring_destroy(&p);
	bm_ring_destroy(&c);

	/* a bad header is refused at attach */
	ck_assert_int_eq(bm_ring_create(BM_RING_MIN_CAPACITY, 0, &p), 0);
	bm__ring_hdr(p)->capacity = 1u << 30;
	ck_assert_int_eq(bm_ring_attach(bm_ring_fd(p), &c), BM_ECORRUPT);
	bm__ring_hdr(p)->capacity = BM_RING_MIN_CAPACITY;
	bm__ring_hdr(p)->version = 9;
	ck_assert_int_eq(bm_ring_attach(bm_ring_fd(p), &c), BM_EVERSION);
	bm__ring_hdr(p)->version = BM__RING_VERSION;
	bm__ring_hdr(p)->magic = 0;
	ck_assert_int_eq(bm_ring_attach(bm_ring_fd(p), &c), BM_ECORRUPT);
	bm_ring_destroy(&p);
}
END_TEST

static void
s_reset_header(bm_ring_t *p)
{
	struct bm__ring_hdr *h = bm__ring_hdr(p);

	h->magic = BM__RING_MAGIC;
	h->version = BM__RING_VERSION;
	h->hdr_size = BM__RING_HDR_SIZE;
	h->capacity = BM_RING_MIN_CAPACITY;
	atomic_store(&h->head, 0);
	atomic_store(&h->tail, 0);
}

/* A hostile peer process scribbles random bytes over the header and the
 * records, and publishes random heads, while the reader reads: errors,
 * never a crash or an access out of bounds. */
START_TEST(ring_survives_a_hostile_peer_scribbling_over_shared_memory)
{
	bm_ring_t *p = NULL, *c = NULL;
	const size_t cap = BM_RING_MIN_CAPACITY, map_len = BM__RING_HDR_SIZE + cap;
	uint8_t buf[300] = {0};
	int go[2], corrupt = 0, ok = 0;
	pid_t pid;

	s_ring_pair(cap, &p, &c);
	for (int i = 0; i < 100; i++) {
		ck_assert_int_eq(bm_ring_write(p, 1, buf, (size_t)(i * 3)), 0);
	}
	ck_assert_int_eq(pipe(go), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		uint8_t *m = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, bm_ring_fd(p), 0);
		uint64_t r = (uint64_t)getpid() * 2654435761u + 1;

		if (m == MAP_FAILED) {
			_exit(1);
		}
		if (su_pipe_get(go[0], 10000) != 'g') {
			_exit(2);
		}
		int64_t end = bm_mono_ms() + 500;

		for (int i = 0; i < 20000000 && (i & 4095 || bm_mono_ms() < end); i++) {
			r ^= r << 13;
			r ^= r >> 7;
			r ^= r << 17;
			switch (r & 7) {
			case 0: /* a plausible head */
				atomic_store((_Atomic uint64_t *)(m + 64), (r >> 8) % (2 * cap));
				break;
			case 1: /* any head */
				atomic_store((_Atomic uint64_t *)(m + 64), r);
				break;
			case 2: /* a plausible record length */
				memcpy(m + BM__RING_HDR_SIZE + ((r >> 8) % (cap / 64)) * 64,
				       &(uint32_t){(uint32_t)(r >> 40) % (uint32_t)(2 * cap)}, 4);
				break;
			case 3: /* a first record in sequence, any length */
				memcpy(m + BM__RING_HDR_SIZE, &(uint32_t){(uint32_t)(r >> 40) % (uint32_t)(2 * cap)}, 4);
				memset(m + BM__RING_HDR_SIZE + 8, 0, 8);
				break;
			default: /* any byte anywhere */
				m[(r >> 8) % map_len] = (uint8_t)(r >> 3);
				break;
			}
		}
		_exit(0);
	}
	for (int i = 0; i < 50; i++) {
		bm_ring_rec_t rec;

		ck_assert_int_eq(bm_ring_peek(c, &rec), 0);
		ck_assert_int_eq(bm_ring_release(c), 0);
		ok++;
	}
	su_pipe_put(go[1], 'g');
	for (int i = 0; i < 40000000; i++) {
		bm_ring_rec_t rec;
		int rc = c ? bm_ring_peek(c, &rec) : BM_ECORRUPT;

		if (rc == BM_ECORRUPT) {
			corrupt++;
			/* Re-attach: the reader must keep surviving. */
			bm_ring_destroy(&c);
			s_reset_header(p);
			if (bm_ring_attach(bm_ring_fd(p), &c) < 0) {
				c = NULL;
			}
		} else if (rc == 0) {
			volatile uint8_t sum = 0;

			/* Read every byte the bounds allow: the MMU (and ASan)
			 * would catch anything outside. */
			for (size_t k = 0; k < rec.len; k++) {
				sum += ((const uint8_t *)rec.data)[k];
			}
			(void)sum;
			ok++;
			ck_assert_int_eq(bm_ring_release(c), 0);
		}
		if ((i & 1023) == 0 && waitpid(pid, NULL, WNOHANG) == pid) {
			pid = 0;
			break;
		}
	}
	if (pid > 0) {
		ck_assert_int_eq(su_reap(pid, 20000), 0);
	}
	fprintf(stderr, "hostile: %d records read, %d corruptions caught\n", ok, corrupt);
	ck_assert_int_gt(corrupt, 0);
	bm_ring_destroy(&c);
	bm_ring_destroy(&p);
}
END_TEST

/* ---- channel ---- */

static void
s_fill(uint8_t *p, size_t len, uint64_t i)
{
	memcpy(p, &i, 8);
	for (size_t k = 8; k < len; k++) {
		p[k] = (uint8_t)(i + k);
	}
}

static bool
s_check(const uint8_t *p, size_t len, uint64_t i)
{
	uint64_t v;

	memcpy(&v, p, 8);
	if (v != i) {
		return false;
	}
	for (size_t k = 8; k < len; k++) {
		if (p[k] != (uint8_t)(i + k)) {
			return false;
		}
	}
	return true;
}

static void
s_stream(uint64_t n, size_t cap, int prod_spin, int cons_spin, int64_t budget_ms)
{
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	uint64_t rnd = 0x9E3779B97F4A7C15ull, stalls = 0;
	int64_t t0 = bm_mono_ms();
	pid_t pid;

	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(cap, 0, prod_spin);

		for (uint64_t i = 0; i < n; i++) {
			size_t len = 8 + (size_t)(i % 57);
			void *w;

			if (bm_channel_reserve(pc, len, 10000, &w) < 0) {
				_exit(2);
			}
			s_fill(w, len, i);
			if (bm_channel_commit(pc, 1, len) < 0) {
				_exit(3);
			}
		}
		/* Committed records outlive us: the consumer reads them all
		 * and only then sees the hang-up. */
		bm_channel_destroy(&pc);
		_exit(0);
	}
	ch = s_accept(l, cons_spin);
	for (uint64_t i = 0; i < n; i++) {
		bm_ring_rec_t rec;

		int rc = bm_channel_peek(ch, 10000, &rec);

		/* No ck_assert per record: in fork mode each passing check
		 * writes to a pipe, which would dominate the run. */
		if (rc != 0 || rec.seq != i || rec.len != 8 + i % 57 || !s_check(rec.data, rec.len, i)) {
			ck_abort_msg("record %llu: rc %d seq %llu len %zu", (unsigned long long)i, rc,
			             (unsigned long long)rec.seq, rec.len);
		}
		if (bm_channel_release(ch) != 0) {
			ck_abort_msg("release failed");
		}
		rnd ^= rnd << 13;
		rnd ^= rnd >> 7;
		rnd ^= rnd << 17;
		if (rnd % 20000 == 0) {
			/* A random stall: the producer fills the ring and sleeps. */
			struct timespec ts = {0, (long)(rnd >> 20) % 2000000};

			nanosleep(&ts, NULL);
			stalls++;
		}
	}
	/* Producer gone after its last record: EOF, not a hang. */
	ck_assert_int_eq(bm_channel_peek(ch, 10000, &(bm_ring_rec_t){0}), BM_EPEER);
	ck_assert_int_eq(su_reap(pid, 10000), 0);
	ck_assert_int_lt(bm_mono_ms() - t0, budget_ms);
	fprintf(stderr, "stream: %llu records, %llu stalls, %lld ms\n", (unsigned long long)n,
	        (unsigned long long)stalls, (long long)(bm_mono_ms() - t0));
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}

START_TEST(channel_carries_ten_million_records_in_order_under_random_stalls)
{
	s_stream(S_SLOW ? 1000000 : 10000000, BM_RING_MIN_CAPACITY, -1, -1, 100000);
}
END_TEST

START_TEST(channel_loses_no_wake_up_when_both_sides_sleep_at_once)
{
	/* No spinning: every empty or full ring goes through the doorbell. */
	s_stream(S_SLOW ? 50000 : 300000, BM_RING_MIN_CAPACITY, 0, 0, 60000);
}
END_TEST

START_TEST(channel_producer_killed_between_reserve_and_commit_leaves_no_half_record)
{
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	bm_ring_rec_t rec;
	int sync[2];
	pid_t pid;

	ck_assert_int_eq(pipe(sync), 0);
	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(BM_RING_MIN_CAPACITY, 0, -1);
		void *w;

		for (uint64_t i = 0; i < 10; i++) {
			if (bm_channel_reserve(pc, 100, 1000, &w) < 0) {
				_exit(2);
			}
			s_fill(w, 100, i);
			bm_channel_commit(pc, 1, 100);
		}
		bm_channel_reserve(pc, 1000, 1000, &w);
		memset(w, 0xEE, 500); /* half-written record */
		su_pipe_put(sync[1], 'r');
		for (;;) {
			pause();
		}
	}
	ch = s_accept(l, -1);
	ck_assert_int_eq(su_pipe_get(sync[0], 10000), 'r');
	kill(pid, SIGKILL);
	for (uint64_t i = 0; i < 10; i++) {
		ck_assert_int_eq(bm_channel_peek(ch, 5000, &rec), 0);
		ck_assert(s_check(rec.data, rec.len, i));
		ck_assert_int_eq(bm_channel_release(ch), 0);
	}
	ck_assert_int_eq(bm_channel_peek(ch, 10000, &rec), BM_EPEER);
	ck_assert_int_eq(su_reap(pid, 10000), 128 + SIGKILL);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
	ck_assert_int_eq(s_count_shm_leftovers(), 0);
}
END_TEST

START_TEST(channel_consumer_killed_gives_the_producer_an_error_not_a_hang)
{
	bm_channel_t *ch = NULL;
	uint8_t buf[4096] = {0};
	int sync[2], rc = 0;
	int64_t t0;
	pid_t pid;

	ck_assert_int_eq(pipe(sync), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_listener_t *l = NULL;
		bm_channel_t *cc = NULL;

		if (bm_listener_open(s_dir, "c", &l) < 0) {
			_exit(1);
		}
		su_pipe_put(sync[1], 'l');
		if (bm_listener_accept(l, 10000, NULL, &cc) < 0) {
			_exit(2);
		}
		for (;;) {
			pause(); /* never reads */
		}
	}
	ck_assert_int_eq(su_pipe_get(sync[0], 10000), 'l');
	ck_assert_int_eq(bm_channel_connect(s_dir, "c", NULL, NULL, 5000, &ch), 0);
	for (int i = 0; i < 100000 && rc == 0; i++) {
		rc = bm_channel_send(ch, 1, buf, sizeof buf, 0);
	}
	ck_assert_int_eq(rc, BM_EFULL);
	ck_assert_int_eq(bm_channel_send(ch, 1, buf, sizeof buf, 30), -ETIMEDOUT);
	kill(pid, SIGKILL);
	t0 = bm_mono_ms();
	ck_assert_int_eq(bm_channel_send(ch, 1, buf, sizeof buf, 20000), BM_EPEER);
	ck_assert_int_lt(bm_mono_ms() - t0, 5000);
	ck_assert_int_eq(bm_channel_send(ch, 1, buf, sizeof buf, 0), BM_EPEER);
	ck_assert_int_eq(su_reap(pid, 10000), 128 + SIGKILL);
	bm_channel_destroy(&ch);
	ck_assert_int_eq(s_count_shm_leftovers(), 0);
}
END_TEST

START_TEST(channel_full_ring_blocks_the_producer_until_the_consumer_releases)
{
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	int sync[2];
	pid_t pid;
	bm_ring_rec_t rec;

	ck_assert_int_eq(pipe(sync), 0);
	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(BM_RING_MIN_CAPACITY, 0, 0);
		uint8_t buf[8192] = {0};
		int n = 0, rc;

		while ((rc = bm_channel_send(pc, 1, buf, sizeof buf, 0)) == 0) {
			n++;
		}
		if (rc != BM_EFULL || n != 7) {
			_exit(2);
		}
		if (bm_channel_send(pc, 1, buf, sizeof buf, 20) != -ETIMEDOUT) {
			_exit(3);
		}
		su_pipe_put(sync[1], 'f');
		/* Blocks until the consumer frees a record. */
		if (bm_channel_send(pc, 2, buf, sizeof buf, 20000) != 0) {
			_exit(4);
		}
		bm_channel_destroy(&pc);
		_exit(0);
	}
	ch = s_accept(l, 0);
	ck_assert_int_eq(su_pipe_get(sync[0], 10000), 'f');
	for (int i = 0; i < 8; i++) {
		ck_assert_int_eq(bm_channel_peek(ch, 10000, &rec), 0);
		ck_assert_uint_eq(rec.type, i < 7 ? 1 : 2);
		ck_assert_int_eq(bm_channel_release(ch), 0);
	}
	ck_assert_int_eq(su_reap(pid, 10000), 0);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}
END_TEST

START_TEST(channel_takes_over_a_stale_socket_and_refuses_a_live_name)
{
	bm_listener_t *l = NULL, *l2 = NULL;
	char path[256];
	pid_t pid;
	int sync[2];

	ck_assert_int_eq(pipe(sync), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_listener_t *cl = NULL;

		if (bm_listener_open(s_dir, "c", &cl) < 0) {
			_exit(1);
		}
		su_pipe_put(sync[1], 'l');
		for (;;) {
			pause();
		}
	}
	ck_assert_int_eq(su_pipe_get(sync[0], 10000), 'l');
	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), BM_ENAMETAKEN);
	su_kill(pid);
	snprintf(path, sizeof path, "%s/shm/c.sock", s_dir);
	ck_assert_int_eq(access(path, F_OK), 0); /* left behind */
	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l2), BM_ENAMETAKEN);
	ck_assert_int_eq(bm_listener_open(s_dir, "../x", &l2), BM_EBADNAME);
	ck_assert_int_eq(bm_listener_open(s_dir, ".x", &l2), BM_EBADNAME);
	bm_listener_destroy(&l);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(bm_channel_connect(s_dir, "c", NULL, NULL, 1000, &(bm_channel_t *){NULL}),
	                 -ENOENT);
}
END_TEST

START_TEST(channel_over_shm_open_leaves_nothing_in_dev_shm)
{
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	bm_ring_rec_t rec;
	pid_t pid;

	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(BM_RING_MIN_CAPACITY, BM_RING_SHM_OPEN | BM_RING_PREFAULT, -1);

		bm_channel_send(pc, 5, "hi", 2, 1000);
		for (;;) {
			pause(); /* killed with its channel open */
		}
	}
	ch = s_accept(l, -1);
	ck_assert_int_eq(bm_channel_peek(ch, 5000, &rec), 0);
	ck_assert_uint_eq(rec.type, 5);
	ck_assert_int_eq(bm_channel_release(ch), 0);
	ck_assert_int_eq(s_count_shm_leftovers(), 0);
	su_kill(pid);
	ck_assert_int_eq(bm_channel_peek(ch, 5000, &rec), BM_EPEER);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
	ck_assert_int_eq(s_count_shm_leftovers(), 0);
}
END_TEST

START_TEST(channel_fd_wakes_an_outside_poll_loop)
{
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	bm_ring_rec_t rec;
	int sync[2], got = 0;
	pid_t pid;

	ck_assert_int_eq(pipe(sync), 0);
	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(BM_RING_MIN_CAPACITY, 0, 0);

		for (int i = 0; i < 50; i++) {
			if (su_pipe_get(sync[0], 10000) != 'n') {
				_exit(2);
			}
			if (bm_channel_send(pc, 1, &i, sizeof i, 1000) < 0) {
				_exit(3);
			}
		}
		bm_channel_destroy(&pc);
		_exit(0);
	}
	ch = s_accept(l, 0);
	for (int i = 0; i < 50; i++) {
		struct pollfd p = {.fd = bm_channel_fd(ch), .events = POLLIN};
		int rc = bm_channel_arm(ch);

		ck_assert_int_ge(rc, 0);
		su_pipe_put(sync[1], 'n');
		for (int k = 0; k < 100 && rc == 0; k++) {
			rc = poll(&p, 1, 10000);
			ck_assert_int_eq(rc, 1);
			rc = bm_channel_peek(ch, 0, &rec);
			if (rc == -EAGAIN) {
				rc = bm_channel_arm(ch);
				continue;
			}
			ck_assert_int_eq(rc, 0);
			rc = 1;
		}
		ck_assert_int_eq(bm_channel_peek(ch, 5000, &rec), 0);
		ck_assert_int_eq(*(const int *)rec.data, i);
		ck_assert_int_eq(bm_channel_release(ch), 0);
		got++;
	}
	ck_assert_int_eq(got, 50);
	ck_assert_int_eq(su_reap(pid, 10000), 0);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}
END_TEST

/* ---- blobs ---- */

START_TEST(blob_of_one_gib_arrives_whole_with_its_checksum)
{
	size_t size = (size_t)1 << 30;
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	bm_blob_t *b = NULL;
	const uint64_t *w;
	pid_t pid;

	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(BM_RING_MIN_CAPACITY * 16, 0, -1);
		bm_blob_opts_t o = {.name = "big.bin", .flags = BM_BLOB_CHECKSUM};
		bm_blob_t *nb = NULL;
		uint64_t *p;
		int64_t id;

		if (bm_blob_new(size, &nb) < 0) {
			_exit(2);
		}
		p = bm_blob_wdata(nb);
		for (size_t i = 0; i < size / 8; i++) {
			p[i] = i * 0x9E3779B97F4A7C15ull;
		}
		id = bm_blob_send_blob(pc, &nb, &o, 10000);
		if (id != 1 || nb != NULL) {
			_exit(3);
		}
		_exit(bm_blob_wait(pc, 1, 30000) == 0 ? 0 : 4);
	}
	ch = s_accept(l, -1);
	ck_assert_int_eq(bm_blob_recv(ch, 30000, &b), 0);
	ck_assert_uint_eq(bm_blob_size(b), size);
	ck_assert_str_eq(bm_blob_info(b)->name, "big.bin");
	ck_assert(bm_blob_info(b)->via_fd);
	ck_assert(bm_blob_info(b)->has_crc);
	w = bm_blob_data(b);
	ck_assert_uint_eq(w[12345], 12345 * 0x9E3779B97F4A7C15ull);
	ck_assert_uint_eq(w[size / 8 - 1], (size / 8 - 1) * 0x9E3779B97F4A7C15ull);
	ck_assert_int_eq(su_reap(pid, 30000), 0);
	bm_blob_destroy(&b);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}
END_TEST

START_TEST(blob_adopted_from_a_memfd_we_wrote_arrives_without_a_copy)
{
	enum { SIZE = 3000000 };
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	bm_blob_t *b = NULL;
	const uint8_t *d;
	char path[BM_PATH_MAX + 16];
	pid_t pid;
	int fd;

	/* Only a memfd that can still be sealed against writes is adopted. */
	snprintf(path, sizeof path, "%s/plain", s_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bm_blob_adopt_fd(fd, &b), -EINVAL);
	close(fd);
	fd = memfd_create("no-seals", MFD_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bm_blob_adopt_fd(fd, &b), -EINVAL);
	close(fd);
	ck_assert_ptr_null(b);

	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(BM_RING_MIN_CAPACITY, 0, -1);
		bm_blob_opts_t o = {.name = "adopted", .flags = BM_BLOB_CHECKSUM};
		bm_blob_t *nb = NULL;
		uint8_t *buf = malloc(SIZE);
		int mfd = memfd_create("mine", MFD_CLOEXEC | MFD_ALLOW_SEALING);

		for (size_t i = 0; i < SIZE; i++) {
			buf[i] = (uint8_t)(i * 13 + i / 509);
		}
		if (mfd < 0 || write(mfd, buf, SIZE) != SIZE || bm_blob_adopt_fd(mfd, &nb) < 0 ||
		    bm_blob_size(nb) != SIZE) {
			_exit(2);
		}
		if (bm_blob_send_blob(pc, &nb, &o, 10000) != 1 || nb != NULL) {
			_exit(3);
		}
		/* Sealed and handed over: its pages can no longer change. */
		if (write(mfd, "x", 1) != -1) {
			_exit(4);
		}
		_exit(bm_blob_wait(pc, 1, 10000) == 0 ? 0 : 5);
	}
	ch = s_accept(l, -1);
	ck_assert_int_eq(bm_blob_recv(ch, 10000, &b), 0);
	ck_assert_uint_eq(bm_blob_size(b), SIZE);
	ck_assert(bm_blob_info(b)->via_fd);
	ck_assert(bm_blob_info(b)->has_crc);
	d = bm_blob_data(b);
	for (size_t i = 0; i < SIZE; i += 101) {
		ck_assert_uint_eq(d[i], (uint8_t)(i * 13 + i / 509));
	}
	ck_assert_int_eq(su_reap(pid, 10000), 0);
	bm_blob_destroy(&b);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}
END_TEST

START_TEST(blob_streams_small_and_hands_over_big_and_the_receiver_sees_no_difference)
{
	static const size_t sizes[] = {0, 1, 100, 16383, 16384, 16385, 70000, 300000, 5000000};
	const size_t n = sizeof sizes / sizeof sizes[0];
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	pid_t pid;

	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(BM_RING_MIN_CAPACITY, 0, -1);
		uint8_t *buf = malloc(sizes[n - 1]);

		for (size_t i = 0; i < sizes[n - 1]; i++) {
			buf[i] = (uint8_t)(i * 7 + i / 251);
		}
		for (size_t k = 0; k < n; k++) {
			char name[32];
			bm_blob_opts_t o = {.name = name, .content = BM_BLOB_RAW,
			                    .flags = (k % 2 ? BM_BLOB_CHECKSUM : 0) |
			                             (k == 2 ? BM_BLOB_FORCE_FD : 0) |
			                             (k == 7 ? BM_BLOB_FORCE_STREAM : 0)};

			snprintf(name, sizeof name, "b%zu", k);
			if (bm_blob_send(pc, buf, sizes[k], &o, 10000) != (int64_t)k + 1) {
				_exit(2);
			}
		}
		_exit(bm_blob_wait(pc, n, 10000) == 0 ? 0 : 3);
	}
	ch = s_accept(l, -1);
	for (size_t k = 0; k < n; k++) {
		bm_blob_t *b = NULL;
		const uint8_t *d;
		char name[32];

		ck_assert_int_eq(bm_blob_recv(ch, 10000, &b), 0);
		ck_assert_uint_eq(bm_blob_size(b), sizes[k]);
		snprintf(name, sizeof name, "b%zu", k);
		ck_assert_str_eq(bm_blob_info(b)->name, name);
		ck_assert_uint_eq(bm_blob_info(b)->id, k + 1);
		ck_assert(bm_blob_info(b)->via_fd == (k == 2 || (sizes[k] > BM_RING_MIN_CAPACITY / 4 && k != 7)));
		d = bm_blob_data(b);
		for (size_t i = 0; i < sizes[k]; i += 97) {
			ck_assert_uint_eq(d[i], (uint8_t)(i * 7 + i / 251));
		}
		bm_blob_destroy(&b);
	}
	ck_assert_int_eq(su_reap(pid, 10000), 0);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}
END_TEST

START_TEST(blob_with_a_bad_checksum_is_reported_to_both_sides)
{
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	bm_blob_t *b = NULL;
	pid_t pid;

	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(BM_RING_MIN_CAPACITY, 0, -1);
		uint8_t wire[32 + 1] = {0};
		uint64_t id = 1, size = 5;
		uint32_t flags = 1, crc = 0xdeadbeef, nl = 1;

		/* A hand-made streamed blob whose trailer lies about the CRC;
		 * counts it as sent so blob_wait accepts the id. */
		(void)bm__channel_next_blob_id(pc);
		memcpy(wire, &id, 8);
		memcpy(wire + 8, &size, 8);
		memcpy(wire + 20, &flags, 4);
		memcpy(wire + 28, &nl, 4);
		wire[32] = 'x';
		bm_channel_send(pc, BM__REC_BLOB_BEGIN, wire, 33, 1000);
		bm_channel_send(pc, BM__REC_BLOB_CHUNK, "hello", 5, 1000);
		memcpy(wire + 24, &crc, 4);
		memset(wire + 28, 0, 4);
		bm_channel_send(pc, BM__REC_BLOB_END, wire, 32, 1000);
		_exit(bm_blob_wait(pc, 1, 10000) == BM_ECORRUPT ? 0 : 3);
	}
	ch = s_accept(l, -1);
	ck_assert_int_eq(bm_blob_recv(ch, 10000, &b), BM_ECORRUPT);
	ck_assert_ptr_null(b);
	ck_assert_int_eq(su_reap(pid, 10000), 0);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}
END_TEST

START_TEST(blob_in_an_unsealed_memfd_is_refused)
{
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	bm_blob_t *b = NULL;
	pid_t pid;

	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(BM_RING_MIN_CAPACITY, 0, -1);
		uint8_t wire[32] = {0};
		uint64_t id = 1, size = 4096;
		int fd = memfd_create("x", MFD_CLOEXEC);

		if (fd < 0 || ftruncate(fd, 4096) < 0) {
			_exit(2);
		}
		(void)bm__channel_next_blob_id(pc);
		memcpy(wire, &id, 8);
		memcpy(wire + 8, &size, 8);
		bm__doorbell_send_fd(bm__channel_doorbell(pc), 1, fd);
		bm_channel_send(pc, BM__REC_BLOB_FD, wire, 32, 1000);
		_exit(bm_blob_wait(pc, 1, 10000) == BM_ECORRUPT ? 0 : 3);
	}
	ch = s_accept(l, -1);
	ck_assert_int_eq(bm_blob_recv(ch, 10000, &b), BM_ECORRUPT);
	ck_assert_int_eq(su_reap(pid, 10000), 0);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}
END_TEST

START_TEST(blob_file_streams_from_disk_to_disk_byte_for_byte)
{
	char in[128], out[128];
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	bm_blob_info_t info;
	size_t size = 3000000;
	uint8_t *a = malloc(size), *b2 = malloc(size);
	int fd;
	pid_t pid;

	for (size_t i = 0; i < size; i++) {
		a[i] = (uint8_t)(i ^ (i >> 9));
	}
	snprintf(in, sizeof in, "%s/in.bin", s_dir);
	snprintf(out, sizeof out, "%s/out.bin", s_dir);
	fd = open(in, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	ck_assert_int_eq(write(fd, a, size), (ssize_t)size);
	close(fd);
	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* 4 MiB ring: 3 MB streams through it in 1 MiB chunks. */
		bm_channel_t *pc = s_connect((size_t)16 << 20, 0, -1);
		bm_blob_opts_t o = {.name = "in.bin", .flags = BM_BLOB_CHECKSUM};
		int f = open(in, O_RDONLY);

		if (bm_blob_send_fd(pc, f, size, &o, 10000) != 1) {
			_exit(2);
		}
		_exit(bm_blob_wait(pc, 1, 10000) == 0 ? 0 : 3);
	}
	ch = s_accept(l, -1);
	fd = open(out, O_CREAT | O_RDWR | O_TRUNC, 0600);
	ck_assert_int_eq(bm_blob_recv_fd(ch, fd, 10000, &info), 0);
	ck_assert(!info.via_fd);
	ck_assert_uint_eq(info.size, size);
	ck_assert_uint_eq(info.crc, bm_crc32c(0, a, size));
	ck_assert_int_eq(pread(fd, b2, size, 0), (ssize_t)size);
	ck_assert_int_eq(memcmp(a, b2, size), 0);
	close(fd);
	ck_assert_int_eq(su_reap(pid, 10000), 0);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
	free(a);
	free(b2);
}
END_TEST

START_TEST(crc32c_matches_the_published_check_value)
{
	uint8_t buf[1000];

	ck_assert_uint_eq(bm_crc32c(0, "123456789", 9), 0xE3069283u);
	for (size_t i = 0; i < sizeof buf; i++) {
		buf[i] = (uint8_t)i;
	}
	/* Incremental equals one-shot, at any split and alignment. */
	for (size_t s = 0; s < 40; s++) {
		ck_assert_uint_eq(bm_crc32c(bm_crc32c(0, buf + 1, s), buf + 1 + s, 900 - s),
		                  bm_crc32c(0, buf + 1, 900));
	}
}
END_TEST

/* ---- point clouds ---- */

static void *
s_slurp(const char *path, size_t *ret_len)
{
	struct stat st;
	void *p;
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	p = malloc((size_t)st.st_size + 1);
	ck_assert_int_eq(read(fd, p, (size_t)st.st_size), st.st_size);
	close(fd);
	*ret_len = (size_t)st.st_size;
	return p;
}

START_TEST(cloud_round_trips_through_ply_and_pcd_files)
{
	static const int layouts[] = {BM_CLOUD_XYZ, BM_CLOUD_XYZ_RGB, BM_CLOUD_XYZ_INTENSITY};

	for (size_t k = 0; k < 3; k++) {
		bm_cloud_t *c = NULL, *r = NULL;
		char path[128];
		size_t len;
		void *buf;
		int fd;

		ck_assert_int_eq(bm_cloud_generate(10007, layouts[k], k, &c), 0);
		for (int fmt = 0; fmt < 2; fmt++) {
			snprintf(path, sizeof path, "%s/c%zu.%s", s_dir, k, fmt ? "pcd" : "ply");
			fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
			ck_assert_int_eq(fmt ? bm_cloud_write_pcd(c, fd) : bm_cloud_write_ply(c, fd), 0);
			close(fd);
			buf = s_slurp(path, &len);
			ck_assert_int_eq(bm_cloud_parse(buf, len, &r), 0);
			ck_assert_uint_eq(bm_cloud_count(r), 10007);
			ck_assert_uint_eq(bm_cloud_nfields(r), bm_cloud_nfields(c));
			ck_assert_uint_eq(bm_cloud_stride(r), bm_cloud_stride(c));
			ck_assert_int_eq(bm_cloud_find(r, "z"), 2);
			ck_assert_int_eq(memcmp(bm_cloud_data(r), bm_cloud_data(c),
			                        bm_cloud_stride(c) * 10007), 0);
			bm_cloud_destroy(&r);
			free(buf);
		}
		bm_cloud_destroy(&c);
		ck_assert_ptr_null(c);
	}
}
END_TEST

START_TEST(cloud_reader_refuses_truncated_malformed_and_unsupported_files)
{
	static const char *bad[] = {
		"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nend_header\nabcd",
		"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1.0\n",
		"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty list uchar int x\nend_header\n",
		"ply\nformat binary_little_endian 1.0\nelement vertex 99999999999999999999\nend_header\n",
		"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty quux x\nend_header\n",
		"ply\nelement vertex 1\nproperty float x\n",
		"VERSION 0.7\nFIELDS x y\nSIZE 4 4\nTYPE F F\nCOUNT 1 1\nPOINTS 3\nDATA binary\n12345678",
		"VERSION 0.7\nFIELDS x\nSIZE 4\nTYPE F\nCOUNT 1\nPOINTS 1\nDATA ascii\n1.0\n",
		"VERSION 0.7\nFIELDS x\nSIZE 3\nTYPE F\nCOUNT 1\nPOINTS 1\nDATA binary\n123",
		"VERSION 0.7\nFIELDS x\nSIZE 4\nTYPE F\nCOUNT 3\nPOINTS 1\nDATA binary\n123456789012",
		"",
	};
	static const int want[] = {BM_ECORRUPT, -ENOTSUP, -ENOTSUP, BM_ECORRUPT, BM_ECORRUPT,
	                           BM_ECORRUPT, BM_ECORRUPT, -ENOTSUP, BM_ECORRUPT, -ENOTSUP,
	                           BM_ECORRUPT};
	bm_cloud_t *c = NULL, *r = NULL;
	char path[128];
	size_t len;
	uint8_t *buf;
	uint64_t rnd = 1234567;
	int fd;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_msg(bm_cloud_parse(bad[i], strlen(bad[i]), &r) == want[i], "case %zu", i);
		ck_assert_ptr_null(r);
	}
	/* Random damage to a real header: an error or a cloud, never a crash. */
	ck_assert_int_eq(bm_cloud_generate(100, BM_CLOUD_XYZ_RGB, 1, &c), 0);
	snprintf(path, sizeof path, "%s/m.ply", s_dir);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	ck_assert_int_eq(bm_cloud_write_ply(c, fd), 0);
	close(fd);
	buf = s_slurp(path, &len);
	for (int i = 0; i < 20000; i++) {
		uint8_t *m = malloc(len);
		size_t cut;

		memcpy(m, buf, len);
		for (int k = 0; k < 3; k++) {
			rnd ^= rnd << 13;
			rnd ^= rnd >> 7;
			rnd ^= rnd << 17;
			m[rnd % 200] = (uint8_t)(rnd >> 32);
		}
		cut = (rnd >> 16) % 4 == 0 ? (size_t)(rnd >> 20) % len : len;
		if (bm_cloud_parse(m, cut, &r) == 0) {
			ck_assert_uint_le(bm_cloud_count(r) * bm_cloud_stride(r), cut);
			bm_cloud_destroy(&r);
		}
		free(m);
	}
	free(buf);
	bm_cloud_destroy(&c);
}
END_TEST

START_TEST(cloud_ply_file_moves_end_to_end_through_a_channel_with_checksum)
{
	bm_listener_t *l = NULL;
	bm_channel_t *ch;
	bm_cloud_t *c = NULL, *r = NULL;
	bm_blob_t *b = NULL;
	char path[128];
	uint64_t n = 1000000;
	pid_t pid;
	int fd;

	ck_assert_int_eq(bm_cloud_generate(n, BM_CLOUD_XYZ_RGB, 42, &c), 0);
	snprintf(path, sizeof path, "%s/scan.ply", s_dir);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	ck_assert_int_eq(bm_cloud_write_ply(c, fd), 0);
	close(fd);
	ck_assert_int_eq(bm_listener_open(s_dir, "c", &l), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		bm_channel_t *pc = s_connect(0, 0, -1);
		bm_blob_opts_t o = {.name = "scan.ply", .content = BM_BLOB_PLY, .flags = BM_BLOB_CHECKSUM};
		struct stat st;
		int f = open(path, O_RDONLY);

		if (f < 0 || fstat(f, &st) < 0 || bm_blob_send_fd(pc, f, (uint64_t)st.st_size, &o, 10000) != 1) {
			_exit(2);
		}
		_exit(bm_blob_wait(pc, 1, 10000) == 0 ? 0 : 3);
	}
	ch = s_accept(l, -1);
	ck_assert_int_eq(bm_blob_recv(ch, 10000, &b), 0);
	ck_assert_uint_eq(bm_blob_info(b)->content, BM_BLOB_PLY);
	ck_assert(bm_blob_info(b)->has_crc);
	ck_assert_int_eq(bm_cloud_parse(bm_blob_data(b), bm_blob_size(b), &r), 0);
	ck_assert_uint_eq(bm_cloud_count(r), n);
	ck_assert_int_eq(memcmp(bm_cloud_data(r), bm_cloud_data(c), n * bm_cloud_stride(c)), 0);
	ck_assert_int_eq(su_reap(pid, 10000), 0);
	bm_cloud_destroy(&r);
	bm_cloud_destroy(&c);
	bm_blob_destroy(&b);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}
END_TEST

/* ---- the blob CLI, as processes ---- */

#ifdef BM_SHM_BLOB_CLI
/* Starts the CLI driver with stdout/stderr on pipes; returns its pid. */
static pid_t
s_spawn(char *const argv[], int *ret_out, int *ret_err)
{
	int o[2], e[2];
	pid_t pid;

	ck_assert_int_eq(pipe(o), 0);
	ck_assert_int_eq(pipe(e), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(o[1], 1);
		dup2(e[1], 2);
		close(o[0]);
		close(e[0]);
		execv(BM_SHM_BLOB_CLI, argv);
		_exit(127);
	}
	close(o[1]);
	close(e[1]);
	*ret_out = o[0];
	*ret_err = e[0];
	return pid;
}

/* Reads from fd until `needle` shows up or ms pass. */
static bool
s_read_until(int fd, const char *needle, char *buf, size_t size, int ms)
{
	int64_t end = bm_mono_ms() + ms;
	size_t n = 0;

	buf[0] = '\0';
	while (n + 1 < size && strstr(buf, needle) == NULL) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)(end - bm_mono_ms());
		ssize_t r;

		if (left <= 0 || poll(&p, 1, left) != 1) {
			return false;
		}
		r = read(fd, buf + n, size - n - 1);
		if (r <= 0) {
			return false;
		}
		n += (size_t)r;
		buf[n] = '\0';
	}
	return strstr(buf, needle) != NULL;
}

START_TEST(cli_blob_send_and_recv_move_files_and_confirm_them)
{
	char out[128], f1[128], f2[128], r1[160], r2[160], buf[4096];
	bm_cloud_t *c = NULL;
	size_t l1, l2, m1, m2;
	void *a, *b, *x, *y;
	int ro, re, so, se, fd;
	pid_t rp, sp;

	snprintf(out, sizeof out, "%s/out", s_dir);
	ck_assert_int_eq(mkdir(out, 0700), 0);
	snprintf(f1, sizeof f1, "%s/scan.ply", s_dir);
	snprintf(f2, sizeof f2, "%s/small.bin", s_dir);
	ck_assert_int_eq(bm_cloud_generate(2000000, BM_CLOUD_XYZ_INTENSITY, 7, &c), 0);
	fd = open(f1, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	ck_assert_int_eq(bm_cloud_write_ply(c, fd), 0);
	close(fd);
	bm_cloud_destroy(&c);
	fd = open(f2, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	ck_assert_int_eq(write(fd, "hello, swarm\n", 13), 13);
	close(fd);

	rp = s_spawn((char *[]){"beast", "--dir", s_dir, "blob", "recv", "--out", out, "--count",
	                        "2", "sink", NULL},
	             &ro, &re);
	ck_assert_msg(s_read_until(re, "listening on", buf, sizeof buf, 10000), "recv: %s", buf);
	sp = s_spawn((char *[]){"beast", "--dir", s_dir, "blob", "send", "--as", "src", "sink", f1, f2,
	                        NULL},
	             &so, &se);
	ck_assert_int_eq(su_reap(sp, 30000), 0);
	ck_assert(s_read_until(so, "small.bin", buf, sizeof buf, 1000));
	ck_assert_ptr_nonnull(strstr(buf, "confirmed by sink"));
	ck_assert_int_eq(su_reap(rp, 30000), 0);
	ck_assert(s_read_until(ro, "small.bin", buf, sizeof buf, 1000));
	ck_assert_ptr_nonnull(strstr(buf, "scan.ply\t"));
	ck_assert_ptr_nonnull(strstr(buf, "GB/s"));
	ck_assert_ptr_nonnull(strstr(buf, "crc32c:"));

	snprintf(r1, sizeof r1, "%s/scan.ply", out);
	snprintf(r2, sizeof r2, "%s/small.bin", out);
	a = s_slurp(f1, &l1);
	x = s_slurp(r1, &m1);
	b = s_slurp(f2, &l2);
	y = s_slurp(r2, &m2);
	ck_assert_uint_eq(l1, m1);
	ck_assert_uint_eq(l2, m2);
	ck_assert_int_eq(memcmp(a, x, l1), 0);
	ck_assert_int_eq(memcmp(b, y, l2), 0);
	free(a);
	free(b);
	free(x);
	free(y);
	close(ro);
	close(re);
	close(so);
	close(se);
}
END_TEST

START_TEST(cli_blob_send_to_nobody_fails_and_says_what_to_start)
{
	char buf[4096], f[128];
	int so, se, fd;
	pid_t sp;

	snprintf(f, sizeof f, "%s/x", s_dir);
	fd = open(f, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	close(fd);
	sp = s_spawn((char *[]){"beast", "--dir", s_dir, "blob", "send", "nobody", f, NULL}, &so, &se);
	ck_assert_int_eq(su_reap(sp, 10000), 1);
	ck_assert(s_read_until(se, "beast blob recv nobody", buf, sizeof buf, 1000));
	sp = s_spawn((char *[]){"beast", "blob", "send", NULL}, &so, &se);
	ck_assert_int_eq(su_reap(sp, 10000), 2);
	sp = s_spawn((char *[]){"beast", "blob", "--help", NULL}, &so, &se);
	ck_assert_int_eq(su_reap(sp, 10000), 0);
}
END_TEST
#endif

/* ---- leftovers ---- */

START_TEST(no_shared_memory_object_of_ours_is_left_behind)
{
	ck_assert_int_eq(s_count_shm_leftovers(), 0);
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("shm");
	TCase *tc;

	tc = tcase_create("ring");
	tcase_add_checked_fixture(tc, s_dir_setup, s_dir_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, ring_hands_a_record_from_reserve_to_peek_in_place);
	tcase_add_test(tc, ring_refuses_a_record_longer_than_its_capacity);
	tcase_add_test(tc, ring_with_huge_pages_and_prefault_falls_back_and_works);
	tcase_add_test(tc, ring_wraps_around_at_every_alignment);
	tcase_add_test(tc, ring_reports_full_and_takes_records_again_after_release);
	tcase_add_test(tc, ring_reports_scribbled_indexes_and_records_as_corrupt);
	tcase_add_test(tc, ring_survives_a_hostile_peer_scribbling_over_shared_memory);
	suite_add_tcase(s, tc);

	tc = tcase_create("channel");
	tcase_add_checked_fixture(tc, s_dir_setup, s_dir_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, channel_carries_ten_million_records_in_order_under_random_stalls);
	tcase_add_test(tc, channel_loses_no_wake_up_when_both_sides_sleep_at_once);
	tcase_add_test(tc, channel_producer_killed_between_reserve_and_commit_leaves_no_half_record);
	tcase_add_test(tc, channel_consumer_killed_gives_the_producer_an_error_not_a_hang);
	tcase_add_test(tc, channel_full_ring_blocks_the_producer_until_the_consumer_releases);
	tcase_add_test(tc, channel_takes_over_a_stale_socket_and_refuses_a_live_name);
	tcase_add_test(tc, channel_over_shm_open_leaves_nothing_in_dev_shm);
	tcase_add_test(tc, channel_fd_wakes_an_outside_poll_loop);
	suite_add_tcase(s, tc);

	tc = tcase_create("blob");
	tcase_add_checked_fixture(tc, s_dir_setup, s_dir_teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, crc32c_matches_the_published_check_value);
	tcase_add_test(tc, blob_of_one_gib_arrives_whole_with_its_checksum);
	tcase_add_test(tc, blob_streams_small_and_hands_over_big_and_the_receiver_sees_no_difference);
	tcase_add_test(tc, blob_adopted_from_a_memfd_we_wrote_arrives_without_a_copy);
	tcase_add_test(tc, blob_with_a_bad_checksum_is_reported_to_both_sides);
	tcase_add_test(tc, blob_in_an_unsealed_memfd_is_refused);
	tcase_add_test(tc, blob_file_streams_from_disk_to_disk_byte_for_byte);
	suite_add_tcase(s, tc);

	tc = tcase_create("cloud");
	tcase_add_checked_fixture(tc, s_dir_setup, s_dir_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, cloud_round_trips_through_ply_and_pcd_files);
	tcase_add_test(tc, cloud_reader_refuses_truncated_malformed_and_unsupported_files);
	tcase_add_test(tc, cloud_ply_file_moves_end_to_end_through_a_channel_with_checksum);
	suite_add_tcase(s, tc);

#ifdef BM_SHM_BLOB_CLI
	tc = tcase_create("cli");
	tcase_add_checked_fixture(tc, s_dir_setup, s_dir_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, cli_blob_send_and_recv_move_files_and_confirm_them);
	tcase_add_test(tc, cli_blob_send_to_nobody_fails_and_says_what_to_start);
	suite_add_tcase(s, tc);
#endif

	tc = tcase_create("leftovers");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, no_shared_memory_object_of_ours_is_left_behind);
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

/*
 * fuzz_bcastlog.c - libFuzzer target for the broadcast log's reader side:
 * whatever a hostile or broken publisher leaves in the log, a reader must
 * return records whose topic and body fit what it was given, or -EAGAIN,
 * -EMSGSIZE, BM_ECORRUPT — never read outside the mapping, never loop for
 * ever.
 *
 * Input: byte 0 is a mode, bytes 1..8 the tail and 9..16 the oldest the
 * "publisher" shows, then the record space's first bytes.  With mode bit 0
 * the input is laid out as well-formed records first (lengths, kind, seq
 * in order, wraps left to the fuzzer) so the fuzzer reaches past the
 * first checks; with bit 2 tail is set to their end.
 *
 * Setup, once: a log and one reader attached to it through the real
 * socket (a thread services the publisher while the reader attaches);
 * each input then rewrites the log through the publisher's mapping and
 * resets the reader to position 0.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bm_shm.h"
#include "shm_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define S_CAP BM_BCASTLOG_MIN_CAPACITY

static bm_bcastlog_t *s_log;
static bm_bcastlog_reader_t *s_rd;
static char s_dir[64];
static _Atomic int s_attached;

static void *
s_service(void *arg)
{
	(void)arg;
	for (int i = 0; i < 5000 && !atomic_load(&s_attached); i++) {
		(void)bm_bcastlog_service(s_log);
		usleep(1000);
	}
	return NULL;
}

static void
s_setup(void)
{
	bm_bcastlog_opts_t o = {.capacity = S_CAP, .readers = 1};
	pthread_t t;

	snprintf(s_dir, sizeof s_dir, "/tmp/bmfuzz-XXXXXX");
	if (mkdtemp(s_dir) == NULL || chmod(s_dir, 0700) < 0 ||
	    bm_bcastlog_open(s_dir, "fuzz", &o, &s_log) < 0 ||
	    pthread_create(&t, NULL, s_service, NULL) != 0) {
		abort();
	}
	if (bm_bcastlog_attach(s_dir, "fuzz", 0, 5000, &s_rd) < 0) {
		abort();
	}
	atomic_store(&s_attached, 1);
	pthread_join(t, NULL);
	/* The socket files go now; the mappings and fds stay. */
	(void)bm_rmtree(s_dir);
}

static uint64_t
s_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--) {
		v = v << 8 | p[i];
	}
	return v;
}

/* Records [body_len:u32 topic_len:u16 kind:u16 seq:u64 tseq ts] topic body,
 * sizes from the input. */
static uint64_t
s_records(uint8_t *space, const uint8_t *in, size_t n)
{
	uint64_t pos = 0, seq = 1;

	while (n >= 3 && pos + 64 <= S_CAP) {
		uint32_t blen = (uint32_t)(in[0] | in[1] << 8) % 700;
		uint16_t tlen = in[2] % 40, kind = in[2] & 0x80 ? 0xFFFF : 1;
		size_t room = (32 + (size_t)tlen + blen + 63) & ~(size_t)63;

		if (kind == 0xFFFF) {
			room = S_CAP - pos;
			blen = (uint32_t)(room - 32);
			tlen = 0;
		}
		if (pos + room > S_CAP) {
			break;
		}
		memset(space + pos, 0, 32);
		memcpy(space + pos, &blen, 4);
		memcpy(space + pos + 4, &tlen, 2);
		memcpy(space + pos + 6, &kind, 2);
		memcpy(space + pos + 8, &seq, 8);
		in += 3;
		n -= 3;
		for (size_t i = 0; i < (size_t)tlen + blen && i < room - 32 && n > 0; i++, n--) {
			space[pos + 32 + i] = *in++;
		}
		pos += room;
		seq += kind == 1;
		if (kind == 0xFFFF) {
			break;
		}
	}
	return pos;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[4096];
	uint8_t *base, *space, mode;
	uint64_t tail, oldest, end;
	size_t len;

	if (s_log == NULL) {
		s_setup();
	}
	if (size < 17) {
		return 0;
	}
	mode = data[0];
	tail = s_get64(data + 1);
	oldest = s_get64(data + 9);
	data += 17;
	size -= 17;
	base = bm__bcastlog_base(s_log, &len);
	space = base + 4096;
	memset(space, 0, S_CAP);
	if (mode & 1) {
		end = s_records(space, data, size);
		if (mode & 4) {
			tail = end;
		}
	} else {
		memcpy(space, data, size < S_CAP ? size : S_CAP);
	}
	if (!(mode & 8)) {
		tail %= 2 * S_CAP;
		oldest %= tail + 1;
	}
	atomic_store((_Atomic uint64_t *)(void *)(base + 192), 0);
	atomic_store((_Atomic uint64_t *)(void *)(base + 128), tail);
	atomic_store((_Atomic uint64_t *)(void *)(base + 192), oldest);
	bm__bcastlog_reader_reset(s_rd);
	/* Bounded: the space holds at most S_CAP/64 records. */
	for (size_t k = 0; k < S_CAP / 64 + 2; k++) {
		bm_bcastlog_rec_t rec;
		int rc = bm_bcastlog_read(s_rd, buf, (mode & 16) ? 100 : sizeof buf, 0, &rec);

		if (rc != 0) {
			if (rc != -EAGAIN && rc != BM_ECORRUPT && rc != -EMSGSIZE) {
				abort();
			}
			break;
		}
		if (rec.len > sizeof buf || strlen(rec.topic) > BM_BCASTLOG_TOPIC_MAX) {
			abort();
		}
	}
	return 0;
}

/*
 * fuzz_journal.c - libFuzzer target for the journal reader: recovery and
 * salvage of a segment file built from the input.
 *
 * Input: byte 0 is a mode; the rest becomes the body of segment 1 (after a
 * valid 40-byte header, docs/journal.md).  With mode bit 0 set, every record
 * the body frames gets a correct checksum first, so the fuzzer reaches past
 * the CRC into lengths, types, flags and sequence numbers.  Then:
 *   - open must replay or refuse (BM_ECORRUPT) without a crash, a leak or an
 *     out-of-bounds read;
 *   - salvage must succeed, and after it open must succeed: salvage never
 *     leaves a journal open refuses;
 *   - the outbox on top replays what it can or refuses, and bm_outbox_trace
 *     reads one message's history, without a crash, a leak or a bad read.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bm_mesh.h"
#include "bm_shm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char s_dir[64];
static const uint64_t s_salt = 0x0123456789abcdefull;

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
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
s_clean(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[512];

	if (d == NULL) {
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.') {
			continue;
		}
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if (unlink(path) < 0) {
			/* A directory (quarantine/): empty it, then remove it. */
			s_clean(path);
			(void)rmdir(path);
		}
	}
	closedir(d);
}

static void
s_remove_dir(void)
{
	s_clean(s_dir);
	(void)rmdir(s_dir);
}

static int
s_replay(void *arg, const bm_journal_rec_t *r)
{
	uint64_t *sum = arg;

	/* Touch every byte: a bad extent shows up under ASan. */
	for (size_t i = 0; i < r->len; i++) {
		*sum += ((const uint8_t *)r->data)[i];
	}
	return 0;
}

/* The salvaged journal read as an outbox's: its records (PUT, DEAD with
 * a refusal's text, REQUEUE ...) are replayed, or refused, never crash;
 * and one message's history is read as `beast trace` reads it. */
static void
s_outbox(const uint8_t *data, size_t size)
{
	bm_outbox_opts_t oo = {.dir = s_dir, .sync = BM_JOURNAL_SYNC_NEVER};
	bm_outbox_entry_t *v = NULL;
	bm_outbox_trace_t t;
	bm_outbox_t *ob = NULL;
	size_t n = 0, sum = 0;
	bm_id_t id;

	memset(&id, 0, sizeof id);
	memcpy(id.b, data + 1, size - 1 < 16 ? size - 1 : 16);
	(void)bm_outbox_trace(s_dir, &id, &t);
	if (bm_outbox_open(&oo, &ob) < 0) {
		return;
	}
	for (int dead = 0; dead <= 1; dead++) {
		if (bm_outbox_list(ob, dead, &v, &n) == 0) {
			for (size_t i = 0; i < n; i++) {
				sum += strlen(v[i].why) + strlen(v[i].to) + strlen(v[i].type);
			}
			free(v);
			v = NULL;
		}
	}
	(void)sum;
	bm_outbox_destroy(&ob);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bm_journal_opts_t o = {.replay = s_replay, .sync = BM_JOURNAL_SYNC_NEVER};
	bm_journal_report_t rep;
	bm_journal_t *j = NULL;
	uint64_t sum = 0;
	uint8_t *seg;
	size_t len;
	char path[128];
	int fd, rc;

	if (size < 1 || size > (1u << 20)) {
		return 0;
	}
	if (s_dir[0] == '\0') {
		snprintf(s_dir, sizeof s_dir, "/tmp/fuzz-journal.XXXXXX");
		if (mkdtemp(s_dir) == NULL) {
			abort();
		}
		atexit(s_remove_dir);
	}
	s_clean(s_dir);
	len = 40 + size - 1;
	seg = calloc(1, len);
	if (seg == NULL) {
		return 0;
	}
	memcpy(seg, "BMJL", 4);
	s_put32(seg + 4, 1);
	s_put64(seg + 8, 1);
	s_put64(seg + 16, s_salt);
	s_put64(seg + 24, 1);
	s_put32(seg + 36, bm_crc32c(0, seg, 36));
	memcpy(seg + 40, data + 1, size - 1);
	if (data[0] & 1) {
		for (size_t off = 40; off + 24 <= len;) {
			uint32_t l = s_get32(seg + off);
			uint8_t salt[8];
			uint32_t crc;

			if (l > len - off - 24) {
				break;
			}
			s_put64(salt, s_salt);
			crc = bm_crc32c(0, salt, 8);
			crc = bm_crc32c(crc, seg + off, 20);
			crc = bm_crc32c(crc, seg + off + 24, l);
			s_put32(seg + off + 20, crc);
			off += 24 + l;
		}
	}
	snprintf(path, sizeof path, "%s/%016x.log", s_dir, 1);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, seg, len) != (ssize_t)len) {
		abort();
	}
	close(fd);
	free(seg);

	o.arg = &sum;
	o.report = &rep;
	rc = bm_journal_open(s_dir, &o, &j);
	if (rc != 0 && rc != BM_ECORRUPT) {
		abort();
	}
	bm_journal_destroy(&j);
	if (bm_journal_salvage(s_dir, &rep) != 0) {
		abort();
	}
	if (bm_journal_open(s_dir, &o, &j) != 0) {
		abort();
	}
	bm_journal_destroy(&j);
	s_outbox(data, size);
	return 0;
}

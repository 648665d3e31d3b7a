/*
 * fuzz_ring.c - libFuzzer target for the ring's consumer side: whatever a
 * hostile or broken producer leaves in the shared memory, peek and release
 * must return records that lie inside the record space, or -EAGAIN, or
 * BM_ECORRUPT — never read outside the mapping, never loop for ever.
 *
 * Input: byte 0 is a mode, bytes 1..8 the head the "producer" publishes,
 * then the record space's first bytes.  With mode bit 0 set, the input
 * is laid out as well-formed records first (len, type, seq in order) so the
 * fuzzer reaches past the first checks; bit 1 also lets the next 64 input
 * bytes overwrite the header's first line (magic, version, capacity) after
 * the consumer attached, as a producer may do at any time.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bm_shm.h"
#include "shm_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bm_ring_t *s_prod;  /* the producer's mapping: the fuzzer writes here */
static uint8_t s_line0[64]; /* the header's first line as created */

static uint64_t
s_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--) {
		v = v << 8 | p[i];
	}
	return v;
}

/* Lays input bytes out as records: [len:u32 type:u32 seq:u64] payload,
 * each on a 64-byte boundary, lengths taken from the input mod what fits. */
static uint64_t
s_records(uint8_t *space, size_t cap, const uint8_t *in, size_t n)
{
	uint64_t pos = 0, seq = 0;

	while (n >= 2 && pos + 64 <= cap) {
		uint32_t len = (uint32_t)(in[0] | in[1] << 8) % 512;
		uint32_t type = in[1] & 0x80 ? 0xB10B0001u : 7;
		size_t room = ((16 + (size_t)len + 63) & ~(size_t)63);

		if (pos + room > cap) {
			break;
		}
		memcpy(space + pos, &len, 4);
		memcpy(space + pos + 4, &type, 4);
		memcpy(space + pos + 8, &seq, 8);
		in += 2;
		n -= 2;
		for (size_t i = 0; i < len && n > 0; i++, n--) {
			space[pos + 16 + i] = *in++;
		}
		pos += room;
		seq++;
	}
	return pos;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bm__ring_hdr *h;
	bm_ring_t *cons = NULL;
	uint8_t *space, mode;
	const uint8_t *cspace;
	size_t cap;
	uint64_t head, end;
	volatile uint8_t sink = 0;

	if (s_prod == NULL) {
		if (bm_ring_create(BM_RING_MIN_CAPACITY, 0, &s_prod) < 0) {
			abort();
		}
		memcpy(s_line0, bm__ring_hdr(s_prod), sizeof s_line0);
	}
	if (size < 9) {
		return 0;
	}
	mode = data[0];
	head = s_get64(data + 1);
	data += 9;
	size -= 9;
	h = bm__ring_hdr(s_prod);
	cap = bm_ring_capacity(s_prod);
	space = (uint8_t *)h + BM__RING_HDR_SIZE;
	/* A fresh consumer over a fresh header each time. */
	memcpy(h, s_line0, sizeof s_line0);
	atomic_store(&h->head, 0);
	atomic_store(&h->tail, 0);
	memset(space, 0, cap);
	if (bm_ring_attach(bm_ring_fd(s_prod), &cons) < 0) {
		abort();
	}
	if (mode & 1) {
		end = s_records(space, cap, data, size);
		head = (mode & 4) ? end : head % (cap + 1);
	} else {
		memcpy(space, data, size < cap ? size : cap);
	}
	if ((mode & 2) && size >= 64) {
		memcpy(h, data + size - 64, 64);
	}
	atomic_store(&h->head, head);
	cspace = (const uint8_t *)bm__ring_hdr(cons) + BM__RING_HDR_SIZE;
	/* Bounded: a ring of capacity bytes holds at most capacity/64 records. */
	for (size_t k = 0; k < cap / 64 + 2; k++) {
		bm_ring_rec_t rec;
		int rc = bm_ring_peek(cons, &rec);

		if (rc != 0) {
			if (rc != -EAGAIN && rc != BM_ECORRUPT) {
				abort();
			}
			break;
		}
		/* Every byte handed out must lie inside the record space (of the
		 * consumer's own mapping). */
		if ((const uint8_t *)rec.data < cspace || (const uint8_t *)rec.data + rec.len > cspace + cap) {
			abort();
		}
		for (size_t i = 0; i < rec.len; i++) {
			sink ^= ((const uint8_t *)rec.data)[i];
		}
		if (bm_ring_release(cons) != 0) {
			abort();
		}
	}
	(void)sink;
	bm_ring_destroy(&cons);
	return 0;
}

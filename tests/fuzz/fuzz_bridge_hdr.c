/*
 * fuzz_bridge_hdr.c - libFuzzer target for the bridge's "Bm" header, the
 * one thing a bridge reads that another host wrote.
 *
 * Any value must parse or be refused without a crash or an out-of-bounds
 * read; whatever parses must format and parse again to the same fields.
 * The first byte picks what is read: a message's header, a record's, or
 * a record's body of ACK lines (read as bytes: it may hold NULs).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge_hdr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char v[BM_BH_MAX * 2], out[BM_BH_MAX];
	bool rec;

	if (size < 1 || size > sizeof v) {
		return 0;
	}
	if (data[0] & 2) {
		const char *p = (const char *)data + 1, *end = (const char *)data + size;
		char again[BM_BH_ACK_LINE + 1], peer[BM_NAME_MAX + 1], peer2[BM_NAME_MAX + 1];
		bm_id_t id, id2;

		for (int i = 0; i < BM_BH_ACKS_MAX; i++) {
			const char *was = p, *q = again;
			size_t len = 0;
			int rc = bm_bh_ack_next(&p, end, &id, peer);

			if (rc <= 0) {
				if (p != was) {
					abort(); /* a refused line is not consumed */
				}
				break;
			}
			if (p <= was || p > end || bm_bh_ack_add(again, sizeof again, &len, &id, peer) != 0 ||
			    bm_bh_ack_next(&q, again + len, &id2, peer2) != 1 || !bm_id_equal(&id, &id2) ||
			    strcmp(peer, peer2) != 0) {
				abort();
			}
		}
		return 0;
	}
	rec = data[0] & 1;
	memcpy(v, data + 1, size - 1);
	v[size - 1] = '\0'; /* a NUL inside cuts the value short, as a C string does */
	if (rec) {
		bm_bh_rec_t a, b;

		if (bm_bh_rec_parse(v, &a) != 0) {
			return 0;
		}
		if (bm_bh_rec_format(&a, out, sizeof out) < 0 || bm_bh_rec_parse(out, &b) != 0 ||
		    memcmp(&a, &b, sizeof a) != 0) {
			abort();
		}
	} else {
		bm_bh_msg_t a, b;

		if (bm_bh_msg_parse(v, &a) != 0) {
			return 0;
		}
		if (bm_bh_msg_format(&a, out, sizeof out) < 0 || bm_bh_msg_parse(out, &b) != 0 ||
		    memcmp(&a, &b, sizeof a) != 0) {
			abort();
		}
	}
	return 0;
}

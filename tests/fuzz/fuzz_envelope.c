/*
 * fuzz_envelope.c - libFuzzer target for the mesh header decoder.
 *
 * Any input must decode or be refused without a crash, a leak or an
 * out-of-bounds access; whatever decodes must encode and decode again to
 * the same envelope (the codec is its own oracle).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mesh_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The W3C trace context (SEND/DELIVER) is carried byte for byte. */
static bool
s_same_trace(const bm_env_t *a, const bm_env_t *b)
{
	return (a->tp == NULL) == (b->tp == NULL) && (a->ts == NULL) == (b->ts == NULL) &&
	       a->tp_len == b->tp_len && a->ts_len == b->ts_len &&
	       (a->tp == NULL || memcmp(a->tp, b->tp, a->tp_len) == 0) &&
	       (a->ts == NULL || memcmp(a->ts, b->ts, a->ts_len) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[BM_HEADER_MAX];
	const char *why;
	bm_env_t a, b;
	int n;

	if (bm__env_decode(data, size, &a, &why) != 0) {
		return 0;
	}
	/* The decoder's one-pass character tables agree with the public checks. */
	if ((a.name[0] != '\0' && bm_address_check(a.name) != 0) ||
	    ((a.cmd == BM_CMD_SEND || a.cmd == BM_CMD_DELIVER) && bm_type_check(a.type) != 0)) {
		abort();
	}
	for (int i = 0; i < a.ncaps; i++) {
		if (bm_cap_check(a.caps[i]) != 0) {
			abort();
		}
	}
	n = bm__env_encode(&a, buf, sizeof buf);
	if (n <= 0) {
		abort();
	}
	if (bm__env_decode(buf, (size_t)n, &b, &why) != 0) {
		abort();
	}
	/* Compare what the command carries; unused fields are zero in both. */
	if (a.cmd != b.cmd || !bm_id_equal(&a.id, &b.id) || !bm_id_equal(&a.corr, &b.corr) ||
	    strcmp(a.name, b.name) != 0 || strcmp(a.type, b.type) != 0 ||
	    a.priority != b.priority || a.ttl_ms != b.ttl_ms || a.attempt != b.attempt ||
	    a.ts_ms != b.ts_ms || a.heartbeat_ms != b.heartbeat_ms || a.max_body != b.max_body ||
	    a.code != b.code || strcmp(a.text, b.text) != 0 || a.ncaps != b.ncaps ||
	    a.features != b.features || a.nids != b.nids ||
	    (a.nids > 0 && memcmp(a.ids, b.ids, (size_t)a.nids * sizeof(bm_id_t)) != 0) ||
	    !s_same_trace(&a, &b) || strcmp(a.route, b.route) != 0 || a.has_report != b.has_report ||
	    memcmp(a.report, b.report, sizeof a.report) != 0) {
		abort();
	}
	/* What the broker relays (SEND -> DELIVER, ACK/NACK with another
	 * peer) must decode again with everything but command and name kept. */
	if (a.cmd == BM_CMD_SEND || a.cmd == BM_CMD_ACK || a.cmd == BM_CMD_NACK ||
	    a.cmd == BM_CMD_ACKS) {
		uint8_t cmd = a.cmd == BM_CMD_SEND ? BM_CMD_DELIVER : a.cmd;

		n = bm__env_retarget(data, size, &a, cmd, "relay-name", buf, sizeof buf);
		if (n <= 0 || bm__env_decode(buf, (size_t)n, &b, &why) != 0 || b.cmd != cmd ||
		    strcmp(b.name, "relay-name") != 0 || !bm_id_equal(&a.id, &b.id) ||
		    strcmp(a.type, b.type) != 0 || a.ts_ms != b.ts_ms || a.code != b.code ||
		    a.nids != b.nids ||
		    (a.nids > 0 && memcmp(a.ids, b.ids, (size_t)a.nids * sizeof(bm_id_t)) != 0) ||
		    !s_same_trace(&a, &b)) {
			abort();
		}
	}
	return 0;
}

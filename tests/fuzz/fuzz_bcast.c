/*
 * fuzz_bcast.c - libFuzzer target for the broadcast decoders: the
 * broadcast header and the subscriber report (bytes from any local
 * process), and the topic checks (strings from the command line and the
 * wire), alone and as a broadcast's frame 0.  Whatever decodes must
 * re-encode and decode to the same values and length.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
s_topics(const uint8_t *data, size_t size)
{
	char str[512], norm[512];
	const char *segs[64];
	size_t lens[64];
	int n;

	if (size >= sizeof str) {
		return;
	}
	memcpy(str, data, size);
	str[size] = '\0';
	for (int prefix = 0; prefix < 2; prefix++) {
		if (bm_topic_check(str, size, prefix) == 0) {
			n = prefix ? 0 : bm_topic_split(str, size, segs, lens, 64);
			if (n < 0 && n != -ENOSPC) {
				abort(); /* a valid topic always splits */
			}
			if (!bm_topic_matches(str, str)) {
				abort(); /* a topic selects itself */
			}
		}
		n = bm_topic_normalize(str, prefix, norm, sizeof norm);
		if (n >= 0 && bm_topic_check(norm, (size_t)n, prefix) != 0) {
			abort(); /* normalizing yields a valid topic */
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t buf[BM__REPORT_MAX > BM__HDR_MAX ? BM__REPORT_MAX : BM__HDR_MAX];
	bm__hdr_t h, h2;
	bm__report_t r, r2;
	int n;

	n = bm__hdr_decode(data, size, &h);
	if (n > (int)size) {
		abort(); /* a header never ends past its input */
	}
	if (n > 0) {
		n = bm__hdr_encode(&h, buf, sizeof buf);
		if (n <= 0 || bm__hdr_decode(buf, (size_t)n, &h2) != n || h2.seq != h.seq ||
		    h2.tseq != h.tseq || h2.session != h.session || h2.from_len != h.from_len ||
		    memcmp(h2.from, h.from, h.from_len) != 0) {
			abort();
		}
	}
	if (bm__report_decode(data, size, &r) == 0) {
		n = bm__report_encode(&r, buf, sizeof buf);
		if (n <= 0 || bm__report_decode(buf, (size_t)n, &r2) != 0 || r2.gaps != r.gaps ||
		    r2.received != r.received || r2.name_len != r.name_len) {
			abort();
		}
	}
	/* as a broadcast's frame 0: topic, then header, then body */
	{
		size_t t = bm__topic_span(data, size);

		if (t > size || t > BM_TOPIC_MAX + 1) {
			abort();
		}
		n = bm__hdr_decode(data + t, size - t, &h);
		if (n > (int)(size - t)) {
			abort();
		}
	}
	s_topics(data, size);
	return 0;
}

/*
 * topic.c - thought paths: build, normalise, split and check broadcast
 * topics, and the broadcast header and report codecs.
 *
 * A topic is 1..BM_TOPIC_DEPTH_MAX segments, each 1..BM_TOPIC_SEG_MAX
 * bytes from 0x21..0x7e except '/', each followed by '/':
 * "tot/<tree>/<branch>/<sub-branch>/".  The trailing '/' is what makes
 * ZeroMQ's byte-prefix matching follow whole segments: "tot/7/2/" is a
 * prefix of "tot/7/2/5/" but not of "tot/7/23/".  Thought paths are the
 * "tot" namespace; any other first segment works the same way.
 *
 * The codecs are hand-written msgpack for the few shapes the broadcast
 * uses (docs/protocol.md, "Broadcast"): the encoder writes the shortest
 * forms; the decoder accepts every msgpack integer and string form, so
 * pyzmq + msgpack peers interoperate.  All functions are pure and thread
 * safe.
 */
#include <stdio.h>
#include <string.h>

#include "proxy_private.h"

/* ---- topics ---- */

static bool
s_seg_byte(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != '/';
}

int
bm_topic_check(const char *topic, size_t len, bool prefix)
{
	size_t seg = 0, depth = 0;

	if (topic == NULL) {
		return BM_EBADNAME;
	}
	if (len == 0) {
		return prefix ? 0 : BM_EBADNAME;
	}
	if (len > BM_TOPIC_MAX || topic[len - 1] != '/') {
		return BM_EBADNAME;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)topic[i];

		if (c == '/') {
			if (seg == 0 || ++depth > BM_TOPIC_DEPTH_MAX) {
				return BM_EBADNAME;
			}
			seg = 0;
		} else if (!s_seg_byte(c) || ++seg > BM_TOPIC_SEG_MAX) {
			return BM_EBADNAME;
		}
	}
	return 0;
}

int
bm_topic_normalize(const char *in, bool prefix, char *ret, size_t ret_size)
{
	size_t len;
	int rc;

	if (in == NULL || ret == NULL) {
		return -EINVAL;
	}
	len = strlen(in);
	if (len == 0) {
		if (!prefix) {
			return BM_EBADNAME;
		}
		if (ret_size < 1) {
			return -ENOSPC;
		}
		ret[0] = '\0';
		return 0;
	}
	if (len + 2 > ret_size) {
		return len + 1 > BM_TOPIC_MAX ? BM_EBADNAME : -ENOSPC;
	}
	memcpy(ret, in, len);
	if (ret[len - 1] != '/') {
		ret[len++] = '/';
	}
	ret[len] = '\0';
	if ((rc = bm_topic_check(ret, len, prefix)) < 0) {
		return rc;
	}
	return (int)len;
}

int
bm_topic_build(char *ret, size_t ret_size, const char *const *segs, size_t n)
{
	size_t len = 0;

	if (ret == NULL || (segs == NULL && n > 0)) {
		return -EINVAL;
	}
	if (n == 0 || n > BM_TOPIC_DEPTH_MAX) {
		return BM_EBADNAME;
	}
	for (size_t i = 0; i < n; i++) {
		size_t sl = segs[i] ? strlen(segs[i]) : 0;

		if (sl == 0 || sl > BM_TOPIC_SEG_MAX || memchr(segs[i], '/', sl) != NULL) {
			return BM_EBADNAME;
		}
		if (len + sl + 1 > BM_TOPIC_MAX) {
			return BM_EBADNAME;
		}
		if (len + sl + 2 > ret_size) {
			return -ENOSPC;
		}
		memcpy(ret + len, segs[i], sl);
		len += sl;
		ret[len++] = '/';
	}
	ret[len] = '\0';
	if (bm_topic_check(ret, len, false) < 0) {
		return BM_EBADNAME;
	}
	return (int)len;
}

int
bm_topic_tot(char *ret, size_t ret_size, const char *tree, const uint32_t *path, size_t depth)
{
	char nums[BM_TOPIC_DEPTH_MAX][12];
	const char *segs[BM_TOPIC_DEPTH_MAX];

	if (depth + 2 > BM_TOPIC_DEPTH_MAX || (path == NULL && depth > 0)) {
		return BM_EBADNAME;
	}
	segs[0] = "tot";
	segs[1] = tree;
	for (size_t i = 0; i < depth; i++) {
		snprintf(nums[i], sizeof nums[i], "%u", path[i]);
		segs[i + 2] = nums[i];
	}
	return bm_topic_build(ret, ret_size, segs, depth + 2);
}

int
bm_topic_split(const char *topic, size_t len, const char **ret_segs, size_t *ret_lens,
               size_t max)
{
	size_t n = 0, start = 0;

	if (bm_topic_check(topic, len, false) < 0) {
		return BM_EBADNAME;
	}
	for (size_t i = 0; i < len; i++) {
		if (topic[i] == '/') {
			if (n == max) {
				return -ENOSPC;
			}
			ret_segs[n] = topic + start;
			ret_lens[n] = i - start;
			n++;
			start = i + 1;
		}
	}
	return (int)n;
}

bool
bm_topic_matches(const char *prefix, const char *topic)
{
	size_t pl = strlen(prefix);

	return strncmp(prefix, topic, pl) == 0;
}

/* ---- msgpack, the few shapes we need ---- */

typedef struct {
	uint8_t *p;   /* output buffer */
	size_t n;     /* bytes written */
	size_t cap;   /* its size */
	bool over;    /* ran out of room */
} s_out_t;

static void
s_put(s_out_t *o, const void *d, size_t n)
{
	if (o->n + n > o->cap) {
		o->over = true;
		return;
	}
	memcpy(o->p + o->n, d, n);
	o->n += n;
}

static void
s_put_be(s_out_t *o, uint8_t tag, uint64_t v, int bytes)
{
	uint8_t b[9];

	b[0] = tag;
	for (int i = 0; i < bytes; i++) {
		b[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
	}
	s_put(o, b, (size_t)bytes + 1);
}

static void
s_put_uint(s_out_t *o, uint64_t v)
{
	if (v < 128) {
		uint8_t b = (uint8_t)v;

		s_put(o, &b, 1);
	} else if (v <= 0xff) {
		s_put_be(o, 0xcc, v, 1);
	} else if (v <= 0xffff) {
		s_put_be(o, 0xcd, v, 2);
	} else if (v <= 0xffffffffu) {
		s_put_be(o, 0xce, v, 4);
	} else {
		s_put_be(o, 0xcf, v, 8);
	}
}

static void
s_put_int(s_out_t *o, int64_t v)
{
	if (v >= 0) {
		s_put_uint(o, (uint64_t)v);
	} else {
		s_put_be(o, 0xd3, (uint64_t)v, 8);
	}
}

static void
s_put_str(s_out_t *o, const char *s, size_t n)
{
	if (n < 32) {
		uint8_t b = (uint8_t)(0xa0 | n);

		s_put(o, &b, 1);
	} else if (n <= 0xff) {
		s_put_be(o, 0xd9, n, 1);
	} else {
		s_put_be(o, 0xda, n, 2);
	}
	s_put(o, s, n);
}

typedef struct {
	const uint8_t *p;  /* input */
	size_t n;          /* its length */
	size_t i;          /* read position */
	bool bad;          /* malformed */
} s_in_t;

static uint64_t
s_get_be(s_in_t *in, int bytes)
{
	uint64_t v = 0;

	if (in->i + (size_t)bytes > in->n) {
		in->bad = true;
		return 0;
	}
	for (int k = 0; k < bytes; k++) {
		v = (v << 8) | in->p[in->i++];
	}
	return v;
}

static int
s_get_tag(s_in_t *in)
{
	if (in->i >= in->n) {
		in->bad = true;
		return -1;
	}
	return in->p[in->i++];
}

/* Any msgpack integer as int64 (uint64 values above INT64_MAX refused
 * when !unsigned_ok). */
static uint64_t
s_get_u(s_in_t *in, bool *ret_neg)
{
	int t = s_get_tag(in);

	*ret_neg = false;
	if (t < 0) {
		return 0;
	}
	if (t < 0x80) {
		return (uint64_t)t;
	}
	if (t >= 0xe0) {
		*ret_neg = true;
		return (uint64_t)(int64_t)(int8_t)t;
	}
	switch (t) {
	case 0xcc:
		return s_get_be(in, 1);
	case 0xcd:
		return s_get_be(in, 2);
	case 0xce:
		return s_get_be(in, 4);
	case 0xcf:
		return s_get_be(in, 8);
	case 0xd0:
		*ret_neg = true;
		return (uint64_t)(int64_t)(int8_t)s_get_be(in, 1);
	case 0xd1:
		*ret_neg = true;
		return (uint64_t)(int64_t)(int16_t)s_get_be(in, 2);
	case 0xd2:
		*ret_neg = true;
		return (uint64_t)(int64_t)(int32_t)s_get_be(in, 4);
	case 0xd3:
		*ret_neg = true;
		return s_get_be(in, 8);
	default:
		in->bad = true;
		return 0;
	}
}

static uint64_t
s_get_uint(s_in_t *in)
{
	bool neg;
	uint64_t v = s_get_u(in, &neg);

	if (neg && (int64_t)v < 0) {
		in->bad = true;
	}
	return v;
}

static int64_t
s_get_int(s_in_t *in)
{
	bool neg;
	uint64_t v = s_get_u(in, &neg);

	if (!neg && v > INT64_MAX) {
		in->bad = true;
	}
	return (int64_t)v;
}

static const char *
s_get_str(s_in_t *in, size_t *ret_len)
{
	int t = s_get_tag(in);
	size_t len;
	const char *s;

	if (t < 0) {
		return NULL;
	}
	if (t >= 0xa0 && t <= 0xbf) {
		len = (size_t)(t & 0x1f);
	} else if (t == 0xd9) {
		len = (size_t)s_get_be(in, 1);
	} else if (t == 0xda) {
		len = (size_t)s_get_be(in, 2);
	} else if (t == 0xdb) {
		len = (size_t)s_get_be(in, 4);
	} else {
		in->bad = true;
		return NULL;
	}
	if (in->bad || in->i + len > in->n) {
		in->bad = true;
		return NULL;
	}
	s = (const char *)in->p + in->i;
	in->i += len;
	*ret_len = len;
	return s;
}

/* Array header; returns the element count or -1. */
static long
s_get_array(s_in_t *in)
{
	int t = s_get_tag(in);

	if (t >= 0x90 && t <= 0x9f) {
		return t & 0x0f;
	}
	if (t == 0xdc) {
		return (long)s_get_be(in, 2);
	}
	if (t == 0xdd) {
		return (long)s_get_be(in, 4);
	}
	in->bad = true;
	return -1;
}

static bool
s_name_ok(const char *s, size_t n, bool empty_ok)
{
	if (n == 0) {
		return empty_ok;
	}
	if (n > BM_NAME_MAX) {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-')) {
			return false;
		}
	}
	return true;
}

int
bm__hdr_encode(const bm__hdr_t *h, uint8_t *buf, size_t size)
{
	s_out_t o = {.p = buf, .cap = size};
	uint8_t arr = 0x97;

	s_put(&o, &arr, 1);
	s_put_uint(&o, BM_BCAST_VERSION);
	s_put_str(&o, h->from, h->from_len);
	s_put_uint(&o, h->session);
	s_put_uint(&o, h->seq);
	s_put_uint(&o, h->tseq);
	s_put_int(&o, h->ts_ms);
	s_put_uint(&o, h->flags);
	return o.over ? -ENOSPC : (int)o.n;
}

int
bm__hdr_decode(const uint8_t *p, size_t n, bm__hdr_t *ret)
{
	s_in_t in = {.p = p, .n = n};
	bm__hdr_t h = {0};
	long count = s_get_array(&in);
	uint64_t version;

	if (in.bad || count < 2) {
		return BM_EPROTO;
	}
	version = s_get_uint(&in);
	if (in.bad) {
		return BM_EPROTO;
	}
	if (version != BM_BCAST_VERSION) {
		return BM_EVERSION;
	}
	/* Exactly seven: the body may follow in the same frame, so the
	 * header's end must be known; a longer header is a new version. */
	if (count != 7) {
		return BM_EPROTO;
	}
	h.from = s_get_str(&in, &h.from_len);
	h.session = s_get_uint(&in);
	h.seq = s_get_uint(&in);
	h.tseq = s_get_uint(&in);
	h.ts_ms = s_get_int(&in);
	h.flags = s_get_uint(&in);
	if (in.bad || !s_name_ok(h.from, h.from_len, (h.flags & BM__HDR_FLAG_SYNC) != 0)) {
		return BM_EPROTO;
	}
	*ret = h;
	return (int)in.i;
}

int
bm__report_encode(const bm__report_t *r, uint8_t *buf, size_t size)
{
	s_out_t o = {.p = buf, .cap = size};
	uint8_t head[2] = {BM__REPORT_TAG, 0x95};

	s_put(&o, head, 2);
	s_put_uint(&o, BM_BCAST_VERSION);
	s_put_str(&o, r->name, r->name_len);
	s_put_str(&o, r->token, BM__SYNC_TOKEN_LEN);
	s_put_uint(&o, r->received);
	s_put_uint(&o, r->gaps);
	return o.over ? -ENOSPC : (int)o.n;
}

int
bm__report_decode(const uint8_t *p, size_t n, bm__report_t *ret)
{
	s_in_t in = {.p = p, .n = n, .i = 1};
	bm__report_t r = {0};
	size_t tlen = 0;
	long count;

	if (n < 2 || p[0] != BM__REPORT_TAG) {
		return BM_EPROTO;
	}
	count = s_get_array(&in);
	if (in.bad || count < 5 || s_get_uint(&in) != BM_BCAST_VERSION) {
		return BM_EPROTO;
	}
	r.name = s_get_str(&in, &r.name_len);
	r.token = s_get_str(&in, &tlen);
	r.received = s_get_uint(&in);
	r.gaps = s_get_uint(&in);
	if (in.bad || tlen != BM__SYNC_TOKEN_LEN || !s_name_ok(r.name, r.name_len, false)) {
		return BM_EPROTO;
	}
	*ret = r;
	return 0;
}

/* ---- frames ---- */

int
bm__recv_parts(void *sock, zmq_msg_t *f, int max, int flags)
{
	int n = 0;

	for (;;) {
		zmq_msg_t tmp, *m = n < max ? &f[n] : &tmp;
		int more;

		zmq_msg_init(m);
		if (zmq_msg_recv(m, sock, n == 0 ? flags : 0) < 0) {
			int rc = bm__pzerr();

			zmq_msg_close(m);
			bm__close_parts(f, n < max ? n : max);
			return rc;
		}
		more = zmq_msg_more(m);
		if (m == &tmp) {
			zmq_msg_close(&tmp);
		}
		n++;
		if (!more) {
			return n;
		}
	}
}

void
bm__close_parts(zmq_msg_t *f, int n)
{
	for (int i = 0; i < n; i++) {
		zmq_msg_close(&f[i]);
	}
}

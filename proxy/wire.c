/*
 * wire.c - the broadcast wire: the header and subscriber-report codecs,
 * multipart receive, and the endpoints publishers and subscribers connect
 * to.  The proxy, publishers and subscribers all speak through it; it
 * needs nothing from the files that use it.
 *
 * Wire format, version 2 (docs/protocol.md "Broadcast" is its twin).
 * A broadcast is one frame, or two when its body is over 64 KiB:
 *
 *   frame 0  topic, header, then (one frame) the body:
 *     topic  1..255 bytes, segments of 1..64 bytes in 0x21..0x7e except
 *            '/', each followed by '/', at most 16 segments: "tot/7/2/"
 *            (never "tot/7/2").  ZeroMQ prefix matching on frame 0 then
 *            follows whole segments: the subscription "tot/7/2/" gets
 *            "tot/7/2/" and "tot/7/2/5/", never "tot/7/23/".  The topic
 *            ends where the first byte outside 0x21..0x7e is: the
 *            header's first byte, 0x97.
 *     header msgpack array of exactly 7:
 *              [0] version   uint, 2
 *              [1] from      str, publisher name [A-Za-z0-9._-]{1,64}
 *              [2] session   uint64, random per publisher instance
 *              [3] seq       uint64, per (session): 1, 2, 3, ...
 *              [4] tseq      uint64, per (session, topic): 1, 2, 3, ...
 *              [5] ts_ms     int64, wall-clock ms when published
 *              [6] flags     uint, 0 (bit 0 = sync marker, proxy only)
 *            bytes: 0x97 0x02 <str from> <uint> <uint> <uint> <int> 0x00
 *     body   opaque bytes to the end of the frame (one-frame form)
 *   frame 1  (two-frame form only) the body, at most 16 MiB by default;
 *            frame 0 then ends with the header.
 *
 * One frame rather than three because every frame costs each hop and
 * each subscriber's pipe about as much as a message: with 8 subscribers
 * the one-frame form doubled the deliveries per second of small
 * broadcasts.  A large body keeps a frame of its own so it is not copied.
 *
 * Gap accounting: a subscriber keeps, per (session, topic), the last tseq
 * it saw; a jump of k > 1 means k - 1 messages were lost (XPUB drops
 * silently at a subscriber's high-water mark).  Per topic, because a
 * prefix subscriber does not see the publisher's other topics: a hole in
 * seq proves nothing there, a hole in tseq does.
 *
 * Sync and LVC.  A subscriber that wants the cache (and to know when its
 * subscription is in force) subscribes, after the prefix P itself, to a
 * request string R + P where R is 19 bytes:
 *
 *   0x00  token (16 lowercase hex digits, random per subscriber)
 *   mode ('L' = replay the LVC then sync, 'S' = sync only)  '/'
 *
 * The XPUB is verbose, so the proxy sees "\x01" R P even when P is
 * followed already.  It then sends, only to that subscriber (nobody else
 * holds the token):
 *   - for 'L', the cached last message of every topic T starting with P,
 *     oldest first: R + the message exactly as published (R + frame 0,
 *     and frame 1 when it has one);
 *   - then the sync marker: one frame R + P + header with from "" and
 *     flags 1, no body.
 * Since the proxy handles the plain subscription P before R + P (same
 * pipe, in order) and publishers already send everything, every live
 * message after the marker reaches the subscriber.  The subscriber then
 * unsubscribes R + P.  A subscriber to the empty prefix receives other
 * subscribers' replays too: a frame 0 starting 0x00 with another token
 * must be skipped.
 *
 * Subscriber reports, upstream on sub.sock (an XSUB can send them; a SUB
 * cannot and simply does not report): one frame
 *   0x02, msgpack [2, name, token, received, gaps]
 * with the subscriber's cumulative counts.  The proxy keeps the last
 * report per token (at most 4096 tokens; beyond that it forgets them all,
 * and a forgotten subscriber that reports again is counted twice) and
 * shows the sums as bcast_sub_received and bcast_sub_gaps in beast stats.
 * Frames on sub.sock that are neither a (un)subscription nor a report are
 * counted as malformed.
 *
 * The codecs are hand-written msgpack for the few shapes the broadcast
 * uses: the encoder writes the shortest forms; the decoder accepts every
 * msgpack integer and string form, so pyzmq + msgpack peers interoperate.
 * The codecs are pure and thread safe; the frame helpers use a socket the
 * caller owns.
 */
#include <stdio.h>
#include <string.h>

#include "proxy_private.h"

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

/* ---- endpoints ---- */

int
bm__proxy_endpoint(const char *dir, const char *endpoint, const char *sock, char *ret,
                   size_t size)
{
	char path[BM_PATH_MAX];
	int rc;

	if (endpoint != NULL) {
		return snprintf(ret, size, "%s", endpoint) < (int)size ? 0 : -ENAMETOOLONG;
	}
	if ((rc = bm_rundir_resolve(dir, false, path)) < 0) {
		return rc == -ENOENT ? BM_ENOBROKER : rc;
	}
	return bm_rundir_path(path, sock, true, ret, size);
}

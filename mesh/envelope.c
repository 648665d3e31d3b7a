/*
 * envelope.c - the frame-0 header codec of the mesh protocol.
 *
 * Frame 0 of every mesh message is one msgpack array:
 *
 *     [version, command, field, field, ...]
 *
 * version is 1.  The fields of each command, in order (docs/protocol.md is
 * the normative copy; keep the two in step):
 *
 *   HELLO     name:str  caps:[str]  heartbeat_ms:uint
 *   WELCOME   name:str  heartbeat_ms:uint  max_body:uint
 *   DENIED    code:uint  text:str
 *   SEND      id:bin16  corr:bin16|nil  to:str  type:str  priority:uint
 *             ttl_ms:uint  attempt:uint  ts_ms:uint
 *             [traceparent:str|nil  [tracestate:str|nil]]     + body frame
 *             (the W3C trace context, optional: carried untouched)
 *   DELIVER   as SEND, with from:str in place of to           + body frame
 *   ACK       id:bin16  peer:str
 *   NACK      id:bin16  peer:str  code:uint  text:str
 *   PING      [pending:uint  dead:uint  retries:uint]  (optional, all three
 *             or none: the sender's outbox as it stands; observability)
 *   LIST BYE  (no fields)
 *   PONG      [name:str|nil]  (the caller's registered name; nil or absent =
 *             not registered)
 *   DIRECTORY (no fields)                   + body frame: msgpack [ {..}, ... ]
 *   STATS     (no fields)          reply:   + body frame: msgpack { key: int }
 *   ERROR     code:uint  text:str
 *   NOTICE    event:str  name:str
 *   TRACE     id:bin16     (reply: + body frame: msgpack [ {..}, ... ])
 *   ROUTE     token:bin16|nil  peer:str  event:str  code:uint  count:uint
 *             (direct routes, protocol.md §16)
 *
 * Error codes travel as small positive numbers: wire = BM_E* + BM_EBASE
 * (BM_EPROTO = 1 ...); 0 means "other".  Fields after the last one a
 * command defines are ignored, so a later minor revision can append fields.
 *
 * Decoding is strict: the whole buffer must be exactly one msgpack object,
 * at most BM_HEADER_MAX bytes, every field of the right type and range,
 * names and types from their alphabets.  Anything else is BM_EPROTO with a
 * short static reason, never a crash: this function is fuzzed.
 */
#include <errno.h>
#include <string.h>

#include "mesh_private.h"

static const char *const s_cmd_names[] = {
	"?", "HELLO", "WELCOME", "DENIED", "SEND", "DELIVER", "ACK", "NACK", "PING",
	"PONG", "LIST", "DIRECTORY", "STATS", "BYE", "ERROR", "NOTICE", "ACKS", "TRACE", "ROUTE",
};

const char *
bm_cmd_name(int cmd)
{
	if (cmd < 1 || cmd > BM_CMD__MAX) {
		return "?";
	}
	return s_cmd_names[cmd];
}

bool
bm__cmd_has_body(int cmd)
{
	return cmd == BM_CMD_SEND || cmd == BM_CMD_DELIVER || cmd == BM_CMD_DIRECTORY ||
	       cmd == BM_CMD_STATS || cmd == BM_CMD_TRACE;
}

/* ---- encode ----
 *
 * Straight into the caller's buffer, smallest msgpack form for each value
 * (as msgpack-c would pick), no callbacks: this runs twice per routed
 * message.
 */

typedef struct {
	uint8_t *p;      /* next byte */
	uint8_t *end;    /* one past the buffer */
	bool overflow;   /* something did not fit */
} s_w_t;

static void
s_w_bytes(s_w_t *w, const void *src, size_t n)
{
	if (w->overflow || n > (size_t)(w->end - w->p)) {
		w->overflow = true;
		return;
	}
	memcpy(w->p, src, n);
	w->p += n;
}

static void
s_w_tag(s_w_t *w, uint8_t tag, uint64_t v, int width)
{
	uint8_t b[9];

	b[0] = tag;
	for (int i = 0; i < width; i++) {
		b[1 + i] = (uint8_t)(v >> (8 * (width - 1 - i)));
	}
	s_w_bytes(w, b, 1 + (size_t)width);
}

static void
s_w_uint(s_w_t *w, uint64_t v)
{
	if (v <= 0x7f) {
		s_w_tag(w, (uint8_t)v, 0, 0);
	} else if (v <= UINT8_MAX) {
		s_w_tag(w, 0xcc, v, 1);
	} else if (v <= UINT16_MAX) {
		s_w_tag(w, 0xcd, v, 2);
	} else if (v <= UINT32_MAX) {
		s_w_tag(w, 0xce, v, 4);
	} else {
		s_w_tag(w, 0xcf, v, 8);
	}
}

static void
s_w_array(s_w_t *w, size_t n)
{
	if (n <= 15) {
		s_w_tag(w, (uint8_t)(0x90 | n), 0, 0);
	} else {
		s_w_tag(w, 0xdc, n, 2); /* headers never hold more than 65535 */
	}
}

static void
s_w_str(s_w_t *w, const char *str)
{
	size_t n = strlen(str);

	if (n <= 31) {
		s_w_tag(w, (uint8_t)(0xa0 | n), 0, 0);
	} else if (n <= UINT8_MAX) {
		s_w_tag(w, 0xd9, n, 1);
	} else {
		s_w_tag(w, 0xda, n, 2);
	}
	s_w_bytes(w, str, n);
}

/* n bytes of s as a str, or nil for NULL. */
static void
s_w_strn(s_w_t *w, const char *s, size_t n)
{
	if (s == NULL) {
		s_w_tag(w, 0xc0, 0, 0);
		return;
	}
	if (n <= 31) {
		s_w_tag(w, (uint8_t)(0xa0 | n), 0, 0);
	} else if (n <= UINT8_MAX) {
		s_w_tag(w, 0xd9, n, 1);
	} else {
		s_w_tag(w, 0xda, n, 2);
	}
	s_w_bytes(w, s, n);
}

static void
s_w_id(s_w_t *w, const bm_id_t *id, bool nil_if_zero)
{
	if (nil_if_zero && bm_id_is_zero(id)) {
		s_w_tag(w, 0xc0, 0, 0);
		return;
	}
	s_w_tag(w, 0xc4, sizeof id->b, 1);
	s_w_bytes(w, id->b, sizeof id->b);
}

static uint32_t
s_code_to_wire(int code)
{
	if (code > BM_E__FIRST && code < BM_E__LAST) {
		return (uint32_t)(code + BM_EBASE);
	}
	return 0;
}

static int
s_code_from_wire(uint64_t w)
{
	if (w > 0 && w < (uint64_t)(BM_E__LAST + BM_EBASE)) {
		return (int)w - BM_EBASE;
	}
	return -EIO;
}

static int
s_field_count(int cmd)
{
	switch (cmd) {
	case BM_CMD_HELLO:
	case BM_CMD_WELCOME:
		return 3;
	case BM_CMD_DENIED:
	case BM_CMD_ACK:
	case BM_CMD_ERROR:
	case BM_CMD_NOTICE:
	case BM_CMD_ACKS:
		return 2;
	case BM_CMD_SEND:
	case BM_CMD_DELIVER:
		return 8;
	case BM_CMD_NACK:
		return 4;
	case BM_CMD_TRACE:
		return 1;
	case BM_CMD_ROUTE:
		return 5;
	default:
		return 0;
	}
}

int
bm__env_encode(const bm_env_t *e, void *buf, size_t cap)
{
	s_w_t w = {.p = buf, .end = (uint8_t *)buf + cap};

	if (e->cmd < 1 || e->cmd > BM_CMD__MAX) {
		return -EINVAL;
	}
	/* PONG's optional name and HELLO/WELCOME's features are always sent. */
	s_w_array(&w, 2 + (size_t)s_field_count(e->cmd) +
	                  ((e->cmd == BM_CMD_SEND || e->cmd == BM_CMD_DELIVER) &&
	                           (e->tp != NULL || e->ts != NULL || e->route[0] != '\0')
	                       ? 2
	                       : 0) +
	                  ((e->cmd == BM_CMD_SEND || e->cmd == BM_CMD_DELIVER) && e->route[0] ? 1 : 0) +
	                  (e->cmd == BM_CMD_PONG || e->cmd == BM_CMD_HELLO || e->cmd == BM_CMD_WELCOME) +
	                  (e->cmd == BM_CMD_PING && e->has_report ? 3 : 0));
	s_w_uint(&w, BM_PROTO_VERSION);
	s_w_uint(&w, e->cmd);
	switch (e->cmd) {
	case BM_CMD_HELLO:
		s_w_str(&w, e->name);
		s_w_array(&w, (size_t)e->ncaps);
		for (int i = 0; i < e->ncaps; i++) {
			s_w_str(&w, e->caps[i]);
		}
		s_w_uint(&w, e->heartbeat_ms);
		s_w_uint(&w, e->features);
		break;
	case BM_CMD_WELCOME:
		s_w_str(&w, e->name);
		s_w_uint(&w, e->heartbeat_ms);
		s_w_uint(&w, e->max_body);
		s_w_uint(&w, e->features);
		break;
	case BM_CMD_DENIED:
	case BM_CMD_ERROR:
		s_w_uint(&w, s_code_to_wire(e->code));
		s_w_str(&w, e->text);
		break;
	case BM_CMD_SEND:
	case BM_CMD_DELIVER:
		s_w_id(&w, &e->id, false);
		s_w_id(&w, &e->corr, true);
		s_w_str(&w, e->name);
		s_w_str(&w, e->type);
		s_w_uint(&w, e->priority);
		s_w_uint(&w, e->ttl_ms);
		s_w_uint(&w, e->attempt);
		s_w_uint(&w, (uint64_t)(e->ts_ms < 0 ? 0 : e->ts_ms));
		if (e->tp != NULL || e->ts != NULL || e->route[0] != '\0') {
			s_w_strn(&w, e->tp, e->tp_len);
			s_w_strn(&w, e->ts, e->ts_len);
		}
		if (e->route[0] != '\0') {
			/* Element 12, after the two trace fields. */
			s_w_str(&w, e->route);
		}
		break;
	case BM_CMD_ACK:
		s_w_id(&w, &e->id, false);
		s_w_str(&w, e->name);
		break;
	case BM_CMD_NACK:
		s_w_id(&w, &e->id, false);
		s_w_str(&w, e->name);
		s_w_uint(&w, s_code_to_wire(e->code));
		s_w_str(&w, e->text);
		break;
	case BM_CMD_NOTICE:
		s_w_str(&w, e->type);
		s_w_str(&w, e->name);
		break;
	case BM_CMD_ACKS:
		if (e->nids < 1 || e->nids > BM_ACKS_MAX || e->ids == NULL) {
			return -EINVAL;
		}
		s_w_tag(&w, 0xc5, (uint64_t)e->nids * sizeof(bm_id_t), 2);
		s_w_bytes(&w, e->ids, (size_t)e->nids * sizeof(bm_id_t));
		s_w_str(&w, e->name);
		break;
	case BM_CMD_TRACE:
		s_w_id(&w, &e->id, false);
		break;
	case BM_CMD_ROUTE:
		s_w_id(&w, &e->id, true);
		s_w_str(&w, e->name);
		s_w_str(&w, e->type);
		s_w_uint(&w, e->code != 0 ? s_code_to_wire(e->code) : 0); /* 0 = none */
		s_w_uint(&w, e->attempt);
		break;
	case BM_CMD_PING:
		if (e->has_report) {
			s_w_uint(&w, e->report[0]);
			s_w_uint(&w, e->report[1]);
			s_w_uint(&w, e->report[2]);
		}
		break;
	case BM_CMD_PONG:
		if (e->name[0] != '\0') {
			s_w_str(&w, e->name);
		} else {
			s_w_tag(&w, 0xc0, 0, 0);
		}
		break;
	default:
		break;
	}
	return w.overflow ? -ENOBUFS : (int)(w.p - (uint8_t *)buf);
}

/* ---- decode ----
 *
 * A cursor over the bytes, reading exactly the msgpack forms a header
 * uses.  No allocation, no recursion beyond skipping unknown trailing
 * fields (bounded depth); every length is checked against what is left.
 */

typedef struct {
	const uint8_t *base; /* the frame */
	const uint8_t *p;    /* next byte */
	const uint8_t *end;  /* one past the last */
	const char *why;     /* first failure reason */
} s_cur_t;

static bool
s_fail(s_cur_t *c, const char *why)
{
	if (c->why == NULL) {
		c->why = why;
	}
	return false;
}

static bool
s_be(s_cur_t *c, int width, uint64_t *out)
{
	uint64_t v = 0;

	if (c->end - c->p < width) {
		return false;
	}
	for (int i = 0; i < width; i++) {
		v = v << 8 | *c->p++;
	}
	*out = v;
	return true;
}

/* A non-negative integer in any msgpack integer form. */
static bool
s_rd_uint(s_cur_t *c, uint64_t max, uint64_t *out, const char *why)
{
	uint64_t v;
	uint8_t t;
	int w;

	if (c->p >= c->end) {
		return s_fail(c, why);
	}
	t = *c->p++;
	if (t <= 0x7f) {
		v = t;
	} else {
		switch (t) {
		case 0xcc: case 0xd0: w = 1; break;
		case 0xcd: case 0xd1: w = 2; break;
		case 0xce: case 0xd2: w = 4; break;
		case 0xcf: case 0xd3: w = 8; break;
		default: return s_fail(c, why);
		}
		if (!s_be(c, w, &v)) {
			return s_fail(c, why);
		}
		/* Signed forms are fine while the value is not negative. */
		if (t >= 0xd0 && (v >> (8 * w - 1)) != 0) {
			return s_fail(c, why);
		}
	}
	if (v > max) {
		return s_fail(c, why);
	}
	*out = v;
	return true;
}

static bool
s_rd_len(s_cur_t *c, uint8_t t, uint8_t fix_lo, uint8_t fix_mask, const uint8_t forms[3],
         uint64_t *out)
{
	if ((t & ~fix_mask) == fix_lo) {
		*out = t & fix_mask;
		return true;
	}
	for (int i = 0; i < 3; i++) {
		if (forms[i] != 0 && t == forms[i]) {
			return s_be(c, 1 << i, out);
		}
	}
	return false;
}

/* A str of 0..max bytes; points into the buffer. */
static bool
s_rd_str(s_cur_t *c, size_t max, const char **ret_s, size_t *ret_n, const char *why)
{
	static const uint8_t forms[3] = {0xd9, 0xda, 0xdb};
	uint64_t n;

	if (c->p >= c->end) {
		return s_fail(c, why);
	}
	if (!s_rd_len(c, *c->p++, 0xa0, 0x1f, forms, &n) || n > (uint64_t)(c->end - c->p) ||
	    n > max) {
		return s_fail(c, why);
	}
	*ret_s = (const char *)c->p;
	*ret_n = (size_t)n;
	c->p += n;
	return true;
}

static bool
s_rd_array(s_cur_t *c, uint64_t *ret_n, const char *why)
{
	static const uint8_t forms[3] = {0, 0xdc, 0xdd};

	if (c->p >= c->end || !s_rd_len(c, *c->p++, 0x90, 0x0f, forms, ret_n) ||
	    *ret_n > (uint64_t)(c->end - c->p)) {
		return s_fail(c, why);
	}
	return true;
}

/* A str copied out: 1..max bytes (0..max when allow_empty), no NUL. */
static bool
s_text(s_cur_t *c, char *out, size_t max, bool allow_empty, const char *why)
{
	const char *s;
	size_t n;

	if (!s_rd_str(c, max, &s, &n, why)) {
		return false;
	}
	if ((!allow_empty && n == 0) || (n > 0 && memchr(s, '\0', n) != NULL)) {
		return s_fail(c, why);
	}
	if (n > 0) {
		memcpy(out, s, n);
	}
	out[n] = '\0';
	return true;
}

/* Character classes: S_NAME for names and capabilities, S_TYPE for types. */
enum { S_NAME = 1, S_TYPE = 2 };
static const uint8_t s_class[256] = {
	[0x21 ... 0x2c] = S_TYPE,          /* ! " # $ % & ' ( ) * + , */
	['-'] = S_NAME | S_TYPE,
	['.'] = S_NAME | S_TYPE,
	['/'] = S_TYPE,
	['0' ... '9'] = S_NAME | S_TYPE,
	[0x3a ... 0x40] = S_TYPE,          /* : ; < = > ? @ */
	['A' ... 'Z'] = S_NAME | S_TYPE,
	[0x5b ... 0x5e] = S_TYPE,          /* [ \ ] ^ */
	['_'] = S_NAME | S_TYPE,
	['`'] = S_TYPE,
	['a' ... 'z'] = S_NAME | S_TYPE,
	[0x7b ... 0x7e] = S_TYPE,          /* { | } ~ */
};

/* A str of 1..max bytes all of class cls, copied out in the same pass.
 * With address, a leading '@' is allowed before a capability. */
static bool
s_token(s_cur_t *c, char *out, size_t max, uint8_t cls, bool address, const char *why)
{
	const char *str = NULL;
	const uint8_t *s;
	size_t n = 0, i = 0;

	if (!s_rd_str(c, max, &str, &n, why) || n == 0) {
		return s_fail(c, why);
	}
	s = (const uint8_t *)str;
	if (address) {
		/* name, @cap, name@host, @cap@host: rare enough to check
		 * the whole form with bm_address_check once copied. */
		for (; i < n; i++) {
			if (!(s_class[s[i]] & cls) && s[i] != '@' && s[i] != '*') {
				return s_fail(c, why);
			}
			out[i] = (char)s[i];
		}
		out[n] = '\0';
		return bm_address_check(out) == 0 || s_fail(c, why);
	}
	for (; i < n; i++) {
		if (!(s_class[s[i]] & cls)) {
			return s_fail(c, why);
		}
		out[i] = (char)s[i];
	}
	out[n] = '\0';
	return true;
}

static bool
s_name(s_cur_t *c, char *out, bool address, const char *why)
{
	return s_token(c, out, address ? BM_ADDR_MAX : BM_NAME_MAX, S_NAME, address, why);
}

/* s_name, remembering where the field lies in the frame (for retarget). */
static bool
s_name_at(s_cur_t *c, bm_env_t *e, bool address, const char *why)
{
	e->name_at = (uint16_t)(c->p - c->base);
	if (!s_name(c, e->name, address, why)) {
		return false;
	}
	e->name_end = (uint16_t)(c->p - c->base);
	return true;
}

static bool
s_is_nil(s_cur_t *c)
{
	if (c->p < c->end && *c->p == 0xc0) {
		c->p++;
		return true;
	}
	return false;
}

static bool
s_id(s_cur_t *c, bm_id_t *out, bool nil_ok, const char *why)
{
	if (nil_ok && s_is_nil(c)) {
		memset(out, 0, sizeof *out);
		return true;
	}
	/* bin8 of exactly 16 bytes */
	if (c->end - c->p < 2 + (ptrdiff_t)sizeof out->b || c->p[0] != 0xc4 ||
	    c->p[1] != sizeof out->b) {
		return s_fail(c, why);
	}
	memcpy(out->b, c->p + 2, sizeof out->b);
	c->p += 2 + sizeof out->b;
	if (bm_id_is_zero(out)) {
		return s_fail(c, why);
	}
	return true;
}

/* ACKS ids: a bin8/bin16 of 1..BM_ACKS_MAX ids of 16 bytes, none zero;
 * e->ids points into the frame. */
static bool
s_ids(s_cur_t *c, bm_env_t *e)
{
	static const char why[] = "bad ACKS ids (1..256 ids of 16 bytes, none zero)";
	size_t len, hdr;

	if (c->end - c->p >= 2 && c->p[0] == 0xc4) {
		len = c->p[1];
		hdr = 2;
	} else if (c->end - c->p >= 3 && c->p[0] == 0xc5) {
		len = (size_t)c->p[1] << 8 | c->p[2];
		hdr = 3;
	} else {
		return s_fail(c, why);
	}
	if (len == 0 || len % sizeof(bm_id_t) != 0 || len / sizeof(bm_id_t) > BM_ACKS_MAX ||
	    (size_t)(c->end - c->p) - hdr < len) {
		return s_fail(c, why);
	}
	e->ids = c->p + hdr;
	e->nids = (uint16_t)(len / sizeof(bm_id_t));
	for (size_t i = 0; i < e->nids; i++) {
		if (bm_id_is_zero((const bm_id_t *)(const void *)(e->ids + i * sizeof(bm_id_t)))) {
			return s_fail(c, why);
		}
	}
	c->p += hdr + len;
	return true;
}

static bool
s_code(s_cur_t *c, int32_t *out)
{
	uint64_t w;

	if (!s_rd_uint(c, UINT32_MAX, &w, "code is not an unsigned integer")) {
		return false;
	}
	*out = s_code_from_wire(w);
	return true;
}

static bool
s_caps(s_cur_t *c, bm_env_t *e)
{
	uint64_t n;

	if (!s_rd_array(c, &n, "caps is not an array")) {
		return false;
	}
	if (n > BM_CAPS_MAX) {
		return s_fail(c, "too many capabilities");
	}
	for (uint64_t k = 0; k < n; k++) {
		if (!s_token(c, e->caps[k], BM_CAP_MAX, S_NAME, false, "bad capability")) {
			return s_fail(c, "bad capability");
		}
	}
	e->ncaps = (int)n;
	return true;
}

/* Skips one object of any type (trailing fields of a later revision). */
static bool
s_skip(s_cur_t *c, int depth)
{
	uint64_t n = 0, items = 0;
	uint8_t t;

	if (c->p >= c->end || depth > 8) {
		return false;
	}
	t = *c->p++;
	if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
		return true; /* fixint, nil, bool */
	}
	if ((t & 0xe0) == 0xa0) {
		n = t & 0x1f; /* fixstr */
	} else if ((t & 0xf0) == 0x90) {
		items = t & 0x0f; /* fixarray */
	} else if ((t & 0xf0) == 0x80) {
		items = 2u * (t & 0x0f); /* fixmap */
	} else {
		switch (t) {
		case 0xcc: case 0xd0: n = 1; break;
		case 0xcd: case 0xd1: n = 2; break;
		case 0xce: case 0xd2: n = 4; break;
		case 0xcf: case 0xd3: n = 8; break;
		case 0xc4: case 0xd9: if (!s_be(c, 1, &n)) { return false; } break;
		case 0xc5: case 0xda: if (!s_be(c, 2, &n)) { return false; } break;
		case 0xc6: case 0xdb: if (!s_be(c, 4, &n)) { return false; } break;
		case 0xdc: if (!s_be(c, 2, &items)) { return false; } break;
		case 0xdd: if (!s_be(c, 4, &items)) { return false; } break;
		case 0xde: if (!s_be(c, 2, &items)) { return false; } items *= 2; break;
		case 0xdf: if (!s_be(c, 4, &items)) { return false; } items *= 2; break;
		default: return false; /* floats, ext and 0xc1 have no place here */
		}
	}
	if (n > (uint64_t)(c->end - c->p) || items > (uint64_t)(c->end - c->p)) {
		return false;
	}
	c->p += n;
	for (uint64_t i = 0; i < items; i++) {
		if (!s_skip(c, depth + 1)) {
			return false;
		}
	}
	return true;
}

static bool
s_message(s_cur_t *c, bm_env_t *e)
{
	uint64_t prio, ttl, attempt, ts;

	/* A DELIVER's sender may be on another host (name@host, put there
	 * by a bridge), never an anycast address. */
	if (!(s_id(c, &e->id, false, "bad message id") &&
	      s_id(c, &e->corr, true, "bad correlation id") &&
	      s_name_at(c, e, true, "bad agent name") &&
	      (e->cmd == BM_CMD_SEND || e->name[0] != '@' || s_fail(c, "bad agent name")) &&
	      s_token(c, e->type, BM_TYPE_MAX, S_TYPE, false, "bad type") &&
	      s_rd_uint(c, UINT8_MAX, &prio, "bad priority") &&
	      s_rd_uint(c, UINT32_MAX, &ttl, "bad ttl") &&
	      s_rd_uint(c, UINT32_MAX, &attempt, "bad attempt") &&
	      s_rd_uint(c, INT64_MAX, &ts, "bad timestamp"))) {
		return false;
	}
	e->priority = (uint8_t)prio;
	e->ttl_ms = (uint32_t)ttl;
	e->attempt = (uint32_t)attempt;
	e->ts_ms = (int64_t)ts;
	return true;
}

/*
 * An optional trace-context field: nil, or a str of 1..max bytes from
 * 0x20 (space allowed only when space_ok) to 0x7e.  Its bytes stay in the
 * buffer; *ret_s is NULL for nil or a bin (padding).
 */
static bool
s_trace_field(s_cur_t *c, size_t max, bool space_ok, const char **ret_s, uint16_t *ret_n,
              const char *why)
{
	const char *s;
	size_t n;

	*ret_s = NULL;
	*ret_n = 0;
	if (s_is_nil(c)) {
		return true;
	}
	/* A bin here is the padding a broker appends to a DELIVER that had
	 * no trace context (bm__env_pad, protocol.md §3): absent. */
	if (c->p < c->end && (*c->p == 0xc4 || *c->p == 0xc5 || *c->p == 0xc6)) {
		return s_skip(c, 0);
	}
	if (!s_rd_str(c, max, &s, &n, why) || n == 0) {
		return s_fail(c, why);
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = (uint8_t)s[i];

		if (ch > 0x7e || ch < 0x20 || (ch == 0x20 && !space_ok)) {
			return s_fail(c, why);
		}
	}
	*ret_s = s;
	*ret_n = (uint16_t)n;
	return true;
}

/*
 * Walks a msgpack encoding once, without allocating, and checks that it is
 * exactly one complete object whose every declared length fits in what is
 * left.  msgpack-c sizes its allocations by declared counts, so without
 * this a 9-byte body claiming a 2^32-entry map asks for 256 GiB: call it
 * before msgpack_unpack() on anything from outside.
 */
bool
bm__msgpack_check(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t pos = 0, pending = 1;

	while (pending > 0) {
		uint8_t t;
		uint64_t n = 0, skip = 0, items = 0;
		int w = 0;

		if (pos >= len) {
			return false;
		}
		t = p[pos++];
		pending--;
		if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
			continue; /* fixint, nil, bool */
		}
		if ((t & 0xe0) == 0xa0) {
			skip = t & 0x1f; /* fixstr */
		} else if ((t & 0xf0) == 0x90) {
			items = t & 0x0f; /* fixarray */
		} else if ((t & 0xf0) == 0x80) {
			items = 2u * (t & 0x0f); /* fixmap */
		} else {
			switch (t) {
			case 0xcc: case 0xd0: skip = 1; break;
			case 0xcd: case 0xd1: skip = 2; break;
			case 0xca: case 0xce: case 0xd2: skip = 4; break;
			case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
			case 0xd4: skip = 2; break; /* fixext 1..16: type + data */
			case 0xd5: skip = 3; break;
			case 0xd6: skip = 5; break;
			case 0xd7: skip = 9; break;
			case 0xd8: skip = 17; break;
			case 0xc4: case 0xd9: w = 1; break;       /* bin8, str8 */
			case 0xc5: case 0xda: w = 2; break;       /* bin16, str16 */
			case 0xc6: case 0xdb: w = 4; break;       /* bin32, str32 */
			case 0xc7: w = 1; skip = 1; break;        /* ext8 (+type) */
			case 0xc8: w = 2; skip = 1; break;
			case 0xc9: w = 4; skip = 1; break;
			case 0xdc: w = 2; items = 1; break;       /* array16 */
			case 0xdd: w = 4; items = 1; break;       /* array32 */
			case 0xde: w = 2; items = 2; break;       /* map16 */
			case 0xdf: w = 4; items = 2; break;       /* map32 */
			default: return false;                    /* 0xc1: never used */
			}
			if (w > 0) {
				if ((size_t)w > len - pos) {
					return false;
				}
				for (int i = 0; i < w; i++) {
					n = n << 8 | p[pos++];
				}
				if (items > 0) {
					items *= n;
				} else {
					skip += n;
				}
			}
		}
		if (skip > len - pos || items > len - pos) {
			return false;
		}
		pos += (size_t)skip;
		pending += (size_t)items;
	}
	return pos == len;
}

/* HELLO/WELCOME's optional features (absent = 0): a uint after the
 * fields, if the array has room for it; *fields counts it then. */
static bool
s_features(s_cur_t *c, bm_env_t *e, uint64_t n, int *fields)
{
	uint64_t v;

	if (n <= 2 + (uint64_t)*fields) {
		return true;
	}
	if (!s_rd_uint(c, UINT32_MAX, &v, "bad features")) {
		return false;
	}
	e->features = (uint32_t)v;
	(*fields)++;
	return true;
}

/*
 * SEND/DELIVER element 12, `route` (protocol.md §4, bridges): after the
 * two optional trace fields (10, 11: skipped here), a str address or nil.
 * A bin there, or anything shorter, is absent.
 */
static bool
s_route(s_cur_t *c, bm_env_t *e, uint64_t n, int *fields)
{
	bool ok;

	e->route[0] = '\0';
	e->route_at = e->route_end = 0;
	/* Only after both trace fields (elements 10 and 11). */
	if (*fields != 10 || n < 2 + (uint64_t)*fields + 1) {
		return true;
	}
	(*fields)++;
	e->route_at = (uint16_t)(c->p - c->base);
	if (s_is_nil(c)) {
		ok = true;
	} else if (c->p < c->end && (*c->p == 0xc4 || *c->p == 0xc5 || *c->p == 0xc6)) {
		ok = s_skip(c, 0) || s_fail(c, "malformed trailing field");
	} else {
		ok = s_token(c, e->route, BM_ADDR_MAX, S_NAME, true, "bad route address");
	}
	e->route_end = (uint16_t)(c->p - c->base);
	return ok;
}

int
bm__env_decode(const void *buf, size_t len, bm_env_t *e, const char **ret_why)
{
	s_cur_t c = {.base = buf, .p = buf, .end = (const uint8_t *)buf + len};
	uint64_t n, v, cmd;
	int fields;
	bool ok = true;

	/* Only the fixed part: caps and text are written where a command
	 * carries them, and read by nobody else. */
	memset(e, 0, offsetof(bm_env_t, text));
	e->text[0] = '\0';
	e->ncaps = 0;
	*ret_why = NULL;
	if (buf == NULL || len == 0) {
		*ret_why = "empty header";
		return BM_EPROTO;
	}
	if (len > BM_HEADER_MAX + BM_INLINE_MAX) {
		*ret_why = "header larger than 64 KiB";
		return BM_EPROTO;
	}
	if (!s_rd_array(&c, &n, "header is not an array [version, command, ...]") || n < 2) {
		*ret_why = "header is not an array [version, command, ...]";
		return BM_EPROTO;
	}
	if (!s_rd_uint(&c, UINT32_MAX, &v, "version is not an unsigned integer")) {
		*ret_why = c.why;
		return BM_EPROTO;
	}
	if (!s_rd_uint(&c, UINT8_MAX, &cmd, "unknown command")) {
		*ret_why = c.why;
		return BM_EPROTO;
	}
	e->cmd_at = (uint16_t)(c.p - c.base - 1); /* big-endian: the value's last byte */
	e->cmd = (uint8_t)cmd; /* reported with BM_EVERSION too */
	if (v != BM_PROTO_VERSION) {
		*ret_why = "unsupported protocol version";
		return BM_EVERSION;
	}
	if (cmd == 0 || cmd > BM_CMD__MAX) {
		*ret_why = "unknown command";
		return BM_EPROTO;
	}
	fields = s_field_count(e->cmd);
	if (n < 2 + (uint64_t)fields) {
		*ret_why = "too few fields for the command";
		return BM_EPROTO;
	}
	switch (e->cmd) {
	case BM_CMD_HELLO:
		ok = s_name(&c, e->name, false, "bad agent name") && s_caps(&c, e) &&
		     s_rd_uint(&c, 3600000, &v, "bad heartbeat");
		e->heartbeat_ms = (uint32_t)v;
		ok = ok && s_features(&c, e, n, &fields);
		break;
	case BM_CMD_WELCOME:
		ok = s_name(&c, e->name, false, "bad agent name") &&
		     s_rd_uint(&c, 3600000, &v, "bad heartbeat");
		e->heartbeat_ms = (uint32_t)v;
		ok = ok && s_rd_uint(&c, UINT64_MAX, &e->max_body, "bad max_body") &&
		     s_features(&c, e, n, &fields);
		break;
	case BM_CMD_DENIED:
	case BM_CMD_ERROR:
		ok = s_code(&c, &e->code) && s_text(&c, e->text, BM_TEXT_MAX, true, "bad text");
		break;
	case BM_CMD_SEND:
	case BM_CMD_DELIVER:
		ok = s_message(&c, e);
		e->nelem = (uint16_t)(n > 0xffff ? 0xffff : n);
		e->tail_at = (uint16_t)(c.p - c.base);
		/* W3C trace context, optional: traceparent, then tracestate. */
		if (ok && n > 2 + (uint64_t)fields) {
			ok = s_trace_field(&c, BM_TRACEPARENT_MAX, false, &e->tp, &e->tp_len,
			                   "bad traceparent");
			fields++;
		}
		if (ok && n > 2 + (uint64_t)fields) {
			ok = s_trace_field(&c, BM_TRACESTATE_MAX, true, &e->ts, &e->ts_len,
			                   "bad tracestate");
			fields++;
		}
		/* Then the route (bridges, protocol.md §15). */
		ok = ok && s_route(&c, e, n, &fields);
		break;
	case BM_CMD_ACK:
		ok = s_id(&c, &e->id, false, "bad message id") &&
		     s_name_at(&c, e, true, "bad peer name");
		break;
	case BM_CMD_NACK:
		ok = s_id(&c, &e->id, false, "bad message id") &&
		     s_name_at(&c, e, true, "bad peer name") && s_code(&c, &e->code) &&
		     s_text(&c, e->text, BM_TEXT_MAX, true, "bad text");
		break;
	case BM_CMD_NOTICE:
		ok = s_text(&c, e->type, BM_TYPE_MAX, false, "bad notice event") &&
		     s_name(&c, e->name, false, "bad agent name");
		break;
	case BM_CMD_ACKS:
		ok = s_ids(&c, e) && s_name_at(&c, e, true, "bad peer name");
		break;
	case BM_CMD_TRACE:
		ok = s_id(&c, &e->id, false, "bad message id");
		break;
	case BM_CMD_ROUTE:
		ok = s_id(&c, &e->id, true, "bad route token") &&
		     s_name(&c, e->name, false, "bad agent name") &&
		     s_text(&c, e->type, BM_TYPE_MAX, false, "bad route event") &&
		     s_rd_uint(&c, UINT32_MAX, &v, "bad route code");
		/* 0 = none, else a code we know: each encodes back as it came. */
		e->code = v != 0 ? s_code_from_wire(v) : 0;
		ok = ok && (v == 0 || e->code != -EIO || s_fail(&c, "bad route code"));
		ok = ok && s_rd_uint(&c, UINT32_MAX, &v, "bad route count");
		e->attempt = (uint32_t)v;
		break;
	case BM_CMD_PING:
		/* Optional outbox report: all three fields, or none read (fewer
		 * are skipped as trailing fields). */
		if (n >= 5) {
			ok = s_rd_uint(&c, UINT64_MAX, &e->report[0], "bad outbox report") &&
			     s_rd_uint(&c, UINT64_MAX, &e->report[1], "bad outbox report") &&
			     s_rd_uint(&c, UINT64_MAX, &e->report[2], "bad outbox report");
			e->has_report = ok;
			fields = 3;
		}
		break;
	case BM_CMD_PONG:
		/* Optional: absent or nil means "not registered". */
		if (n > 2) {
			ok = s_is_nil(&c) || s_name(&c, e->name, false, "bad agent name");
			fields = 1;
		}
		break;
	default:
		break;
	}
	if (!ok) {
		*ret_why = c.why ? c.why : "bad field";
		return BM_EPROTO;
	}
	/* Fields a later revision appends are skipped, but the buffer must
	 * still be exactly one well-formed object. */
	for (uint64_t i = 2 + (uint64_t)fields; i < n; i++) {
		if (!s_skip(&c, 0)) {
			*ret_why = "malformed trailing field";
			return BM_EPROTO;
		}
	}
	e->hdr_len = (uint32_t)(c.p - c.base);
	if (e->hdr_len > BM_HEADER_MAX) {
		*ret_why = "header larger than 64 KiB";
		return BM_EPROTO;
	}
	/* SEND and DELIVER may carry their body inline, after the header. */
	if (c.p != c.end && ((e->cmd != BM_CMD_SEND && e->cmd != BM_CMD_DELIVER) ||
	                     c.end - c.p > BM_INLINE_MAX)) {
		*ret_why = e->cmd == BM_CMD_SEND || e->cmd == BM_CMD_DELIVER
		               ? "inline body larger than 4 KiB"
		               : "bytes after the header";
		return BM_EPROTO;
	}
	return 0;
}

int
bm__env_retarget(const void *in, size_t len, const bm_env_t *e, uint8_t cmd, const char *name,
                 void *out, size_t cap)
{
	const uint8_t *src = in;
	s_w_t w = {.p = out, .end = (uint8_t *)out + cap};

	if (e->name_at == 0 || e->name_end <= e->name_at || e->name_end > len ||
	    e->cmd_at >= e->name_at || cmd > 0x7f) {
		return -EINVAL;
	}
	s_w_bytes(&w, src, e->name_at);
	if (!w.overflow) {
		/* Commands are below 128, so whatever width the sender used,
		 * the value sits in the last byte and the others are zero. */
		((uint8_t *)out)[e->cmd_at] = cmd;
	}
	s_w_str(&w, name);
	s_w_bytes(&w, src + e->name_end, len - e->name_end);
	return w.overflow ? -ENOBUFS : (int)(w.p - (uint8_t *)out);
}

int
bm__env_deliver(const void *in, const bm_env_t *e, const char *from, const char *route,
                void *out, size_t cap)
{
	const uint8_t *src = in;
	s_w_t w = {.p = out, .end = (uint8_t *)out + cap};
	size_t n = e->nelem < 13 ? 13 : e->nelem;

	if (e->name_at == 0 || e->tail_at <= e->name_end || e->hdr_len < e->tail_at ||
	    (src[0] & 0xf0) != 0x90 || n > 15 || e->cmd_at >= e->name_at) {
		return -EINVAL;
	}
	s_w_array(&w, n);
	s_w_bytes(&w, src + 1, e->name_at - 1);
	if (!w.overflow) {
		((uint8_t *)out)[e->cmd_at] = BM_CMD_DELIVER;
	}
	s_w_str(&w, from);
	if (e->route_at != 0) {
		/* Type .. ts and the two trace fields as they were. */
		s_w_bytes(&w, src + e->name_end, e->route_at - e->name_end);
	} else {
		s_w_bytes(&w, src + e->name_end, e->tail_at - e->name_end);
		/* Elements 10 and 11 when the SEND had them, else nils. */
		s_w_bytes(&w, src + e->tail_at, e->hdr_len - e->tail_at);
		for (size_t k = e->nelem; k < 12; k++) {
			s_w_bytes(&w, "\xc0", 1);
		}
	}
	if (route != NULL && route[0] != '\0') {
		s_w_str(&w, route);
	} else {
		s_w_bytes(&w, "\xc0", 1);
	}
	if (e->route_at != 0) {
		s_w_bytes(&w, src + e->route_end, e->hdr_len - e->route_end);
	}
	return w.overflow ? -ENOBUFS : (int)(w.p - (uint8_t *)out);
}

bool
bm__env_pad(uint8_t *buf, size_t len, size_t want)
{
	size_t d = want - len;

	if (want == len) {
		return true;
	}
	if (want < len || d > 257 || len == 0 || (buf[0] & 0xf0) != 0x90 || buf[0] == 0x9f) {
		return false;
	}
	buf[0]++; /* one more element */
	if (d == 1) {
		buf[len] = 0xc0; /* nil */
	} else {
		buf[len] = 0xc4; /* bin 8 */
		buf[len + 1] = (uint8_t)(d - 2);
		memset(buf + len + 2, 0, d - 2);
	}
	return true;
}

uint32_t
bm__code_to_wire(int code)
{
	return s_code_to_wire(code);
}

int
bm__code_from_wire(uint64_t w)
{
	return s_code_from_wire(w);
}

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
 *             ttl_ms:uint  attempt:uint  ts_ms:uint           + body frame
 *   DELIVER   as SEND, with from:str in place of to           + body frame
 *   ACK       id:bin16  peer:str
 *   NACK      id:bin16  peer:str  code:uint  text:str
 *   PING LIST BYE   (no fields)
 *   PONG      [name:str|nil]  (the caller's registered name; nil or absent =
 *             not registered)
 *   DIRECTORY (no fields)                   + body frame: msgpack [ {..}, ... ]
 *   STATS     (no fields)          reply:   + body frame: msgpack { key: int }
 *   ERROR     code:uint  text:str
 *   NOTICE    event:str  name:str
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
	"PONG", "LIST", "DIRECTORY", "STATS", "BYE", "ERROR", "NOTICE",
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
	       cmd == BM_CMD_STATS;
}

int
bm__wbuf_write(void *data, const char *buf, size_t len)
{
	bm_wbuf_t *w = data;

	if (w->overflow || len > w->cap - w->len) {
		w->overflow = true;
		return -1;
	}
	memcpy(w->p + w->len, buf, len);
	w->len += len;
	return 0;
}

/* ---- encode ---- */

static void
s_pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void
s_pack_id(msgpack_packer *pk, const bm_id_t *id, bool nil_if_zero)
{
	if (nil_if_zero && bm_id_is_zero(id)) {
		msgpack_pack_nil(pk);
		return;
	}
	msgpack_pack_bin(pk, sizeof id->b);
	msgpack_pack_bin_body(pk, id->b, sizeof id->b);
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
		return 2;
	case BM_CMD_SEND:
	case BM_CMD_DELIVER:
		return 8;
	case BM_CMD_NACK:
		return 4;
	default:
		return 0;
	}
}

int
bm__env_encode(const bm_env_t *e, void *buf, size_t cap)
{
	bm_wbuf_t w = {.p = buf, .cap = cap};
	msgpack_packer pk;

	if (e->cmd < 1 || e->cmd > BM_CMD__MAX) {
		return -EINVAL;
	}
	msgpack_packer_init(&pk, &w, bm__wbuf_write);
	msgpack_pack_array(&pk, 2 + (size_t)s_field_count(e->cmd) + (e->cmd == BM_CMD_PONG));
	msgpack_pack_uint8(&pk, BM_PROTO_VERSION);
	msgpack_pack_uint8(&pk, e->cmd);
	switch (e->cmd) {
	case BM_CMD_HELLO:
		s_pack_str(&pk, e->name);
		msgpack_pack_array(&pk, (size_t)e->ncaps);
		for (int i = 0; i < e->ncaps; i++) {
			s_pack_str(&pk, e->caps[i]);
		}
		msgpack_pack_uint32(&pk, e->heartbeat_ms);
		break;
	case BM_CMD_WELCOME:
		s_pack_str(&pk, e->name);
		msgpack_pack_uint32(&pk, e->heartbeat_ms);
		msgpack_pack_uint64(&pk, e->max_body);
		break;
	case BM_CMD_DENIED:
	case BM_CMD_ERROR:
		msgpack_pack_uint32(&pk, s_code_to_wire(e->code));
		s_pack_str(&pk, e->text);
		break;
	case BM_CMD_SEND:
	case BM_CMD_DELIVER:
		s_pack_id(&pk, &e->id, false);
		s_pack_id(&pk, &e->corr, true);
		s_pack_str(&pk, e->name);
		s_pack_str(&pk, e->type);
		msgpack_pack_uint8(&pk, e->priority);
		msgpack_pack_uint32(&pk, e->ttl_ms);
		msgpack_pack_uint32(&pk, e->attempt);
		msgpack_pack_uint64(&pk, (uint64_t)(e->ts_ms < 0 ? 0 : e->ts_ms));
		break;
	case BM_CMD_ACK:
		s_pack_id(&pk, &e->id, false);
		s_pack_str(&pk, e->name);
		break;
	case BM_CMD_NACK:
		s_pack_id(&pk, &e->id, false);
		s_pack_str(&pk, e->name);
		msgpack_pack_uint32(&pk, s_code_to_wire(e->code));
		s_pack_str(&pk, e->text);
		break;
	case BM_CMD_NOTICE:
		s_pack_str(&pk, e->type);
		s_pack_str(&pk, e->name);
		break;
	case BM_CMD_PONG:
		if (e->name[0] != '\0') {
			s_pack_str(&pk, e->name);
		} else {
			msgpack_pack_nil(&pk);
		}
		break;
	default:
		break;
	}
	return w.overflow ? -ENOBUFS : (int)w.len;
}

/* ---- decode ---- */

typedef struct {
	const msgpack_object *f; /* the header array's elements */
	uint32_t n;              /* how many */
	const char *why;         /* first failure reason */
} s_rd_t;

static bool
s_fail(s_rd_t *r, const char *why)
{
	if (r->why == NULL) {
		r->why = why;
	}
	return false;
}

static bool
s_uint(s_rd_t *r, uint32_t i, uint64_t max, uint64_t *out, const char *why)
{
	if (i >= r->n || r->f[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    r->f[i].via.u64 > max) {
		return s_fail(r, why);
	}
	*out = r->f[i].via.u64;
	return true;
}

/* A str of 1..max bytes (0..max when allow_empty) with no NUL inside. */
static bool
s_str(const msgpack_object *o, char *out, size_t max, bool allow_empty)
{
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > max ||
	    (!allow_empty && o->via.str.size == 0) ||
	    (o->via.str.size > 0 && memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL)) {
		return false;
	}
	if (o->via.str.size > 0) {
		memcpy(out, o->via.str.ptr, o->via.str.size);
	}
	out[o->via.str.size] = '\0';
	return true;
}

static bool
s_field_str(s_rd_t *r, uint32_t i, char *out, size_t max, bool allow_empty, const char *why)
{
	if (i >= r->n || !s_str(&r->f[i], out, max, allow_empty)) {
		return s_fail(r, why);
	}
	return true;
}

static bool
s_field_name(s_rd_t *r, uint32_t i, char *out, bool address, const char *why)
{
	if (!s_field_str(r, i, out, address ? BM_ADDR_MAX : BM_NAME_MAX, false, why)) {
		return false;
	}
	if ((address ? bm_address_check(out) : bm_name_check(out)) != 0) {
		return s_fail(r, why);
	}
	return true;
}

static bool
s_field_id(s_rd_t *r, uint32_t i, bm_id_t *out, bool nil_ok, const char *why)
{
	if (i >= r->n) {
		return s_fail(r, why);
	}
	if (nil_ok && r->f[i].type == MSGPACK_OBJECT_NIL) {
		memset(out, 0, sizeof *out);
		return true;
	}
	if (r->f[i].type != MSGPACK_OBJECT_BIN || r->f[i].via.bin.size != sizeof out->b) {
		return s_fail(r, why);
	}
	memcpy(out->b, r->f[i].via.bin.ptr, sizeof out->b);
	if (bm_id_is_zero(out)) {
		return s_fail(r, why);
	}
	return true;
}

static bool
s_field_code(s_rd_t *r, uint32_t i, int32_t *out)
{
	uint64_t w;

	if (!s_uint(r, i, UINT32_MAX, &w, "code is not an unsigned integer")) {
		return false;
	}
	*out = s_code_from_wire(w);
	return true;
}

static bool
s_caps(s_rd_t *r, uint32_t i, bm_env_t *e)
{
	const msgpack_object *a;

	if (i >= r->n || r->f[i].type != MSGPACK_OBJECT_ARRAY) {
		return s_fail(r, "caps is not an array");
	}
	a = &r->f[i];
	if (a->via.array.size > BM_CAPS_MAX) {
		return s_fail(r, "too many capabilities");
	}
	for (uint32_t k = 0; k < a->via.array.size; k++) {
		if (!s_str(&a->via.array.ptr[k], e->caps[k], BM_CAP_MAX, false) ||
		    bm_cap_check(e->caps[k]) != 0) {
			return s_fail(r, "bad capability");
		}
	}
	e->ncaps = (int)a->via.array.size;
	return true;
}

static bool
s_message(s_rd_t *r, bm_env_t *e)
{
	uint64_t prio, ttl, attempt, ts;

	if (!(s_field_id(r, 2, &e->id, false, "bad message id") &&
	      s_field_id(r, 3, &e->corr, true, "bad correlation id") &&
	      s_field_name(r, 4, e->name, e->cmd == BM_CMD_SEND, "bad agent name") &&
	      s_field_str(r, 5, e->type, BM_TYPE_MAX, false, "bad type") &&
	      (bm_type_check(e->type) == 0 || s_fail(r, "bad type")) &&
	      s_uint(r, 6, UINT8_MAX, &prio, "bad priority") &&
	      s_uint(r, 7, UINT32_MAX, &ttl, "bad ttl") &&
	      s_uint(r, 8, UINT32_MAX, &attempt, "bad attempt") &&
	      s_uint(r, 9, INT64_MAX, &ts, "bad timestamp"))) {
		return false;
	}
	e->priority = (uint8_t)prio;
	e->ttl_ms = (uint32_t)ttl;
	e->attempt = (uint32_t)attempt;
	e->ts_ms = (int64_t)ts;
	return true;
}

/*
 * Walks the msgpack encoding once, without allocating, and checks that it is
 * exactly one complete object whose every declared length fits in what is
 * left.  msgpack-c sizes its allocations by declared counts, so without
 * this a 9-byte header claiming a 2^32-entry map asks for 256 GiB.
 */
static bool
s_precheck(const uint8_t *p, size_t len)
{
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

int
bm__env_decode(const void *buf, size_t len, msgpack_zone *zone, bm_env_t *e,
               const char **ret_why)
{
	msgpack_object root;
	size_t off = 0;
	uint64_t v, cmd;
	s_rd_t r = {0};
	bool ok = true;

	memset(e, 0, sizeof *e);
	*ret_why = NULL;
	if (buf == NULL || len == 0) {
		*ret_why = "empty header";
		return BM_EPROTO;
	}
	if (len > BM_HEADER_MAX) {
		*ret_why = "header larger than 64 KiB";
		return BM_EPROTO;
	}
	msgpack_zone_clear(zone);
	if (!s_precheck(buf, len) ||
	    msgpack_unpack(buf, len, &off, zone, &root) != MSGPACK_UNPACK_SUCCESS) {
		*ret_why = "not exactly one msgpack object";
		return BM_EPROTO;
	}
	if (root.type != MSGPACK_OBJECT_ARRAY || root.via.array.size < 2) {
		*ret_why = "header is not an array [version, command, ...]";
		return BM_EPROTO;
	}
	r.f = root.via.array.ptr;
	r.n = root.via.array.size;
	if (!s_uint(&r, 0, UINT32_MAX, &v, "version is not an unsigned integer")) {
		*ret_why = r.why;
		return BM_EPROTO;
	}
	if (r.f[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && r.f[1].via.u64 <= UINT8_MAX) {
		e->cmd = (uint8_t)r.f[1].via.u64; /* reported with BM_EVERSION too */
	}
	if (v != BM_PROTO_VERSION) {
		*ret_why = "unsupported protocol version";
		return BM_EVERSION;
	}
	if (!s_uint(&r, 1, BM_CMD__MAX, &cmd, "unknown command") || cmd == 0) {
		*ret_why = "unknown command";
		return BM_EPROTO;
	}
	e->cmd = (uint8_t)cmd;
	if (r.n < 2 + (uint32_t)s_field_count(e->cmd)) {
		*ret_why = "too few fields for the command";
		return BM_EPROTO;
	}
	switch (e->cmd) {
	case BM_CMD_HELLO:
		ok = s_field_name(&r, 2, e->name, false, "bad agent name") && s_caps(&r, 3, e) &&
		     s_uint(&r, 4, 3600000, &v, "bad heartbeat");
		e->heartbeat_ms = (uint32_t)v;
		break;
	case BM_CMD_WELCOME:
		ok = s_field_name(&r, 2, e->name, false, "bad agent name") &&
		     s_uint(&r, 3, 3600000, &v, "bad heartbeat");
		e->heartbeat_ms = (uint32_t)v;
		ok = ok && s_uint(&r, 4, UINT64_MAX, &e->max_body, "bad max_body");
		break;
	case BM_CMD_DENIED:
	case BM_CMD_ERROR:
		ok = s_field_code(&r, 2, &e->code) &&
		     s_field_str(&r, 3, e->text, BM_TEXT_MAX, true, "bad text");
		break;
	case BM_CMD_SEND:
	case BM_CMD_DELIVER:
		ok = s_message(&r, e);
		break;
	case BM_CMD_ACK:
		ok = s_field_id(&r, 2, &e->id, false, "bad message id") &&
		     s_field_name(&r, 3, e->name, true, "bad peer name");
		break;
	case BM_CMD_NACK:
		ok = s_field_id(&r, 2, &e->id, false, "bad message id") &&
		     s_field_name(&r, 3, e->name, true, "bad peer name") &&
		     s_field_code(&r, 4, &e->code) &&
		     s_field_str(&r, 5, e->text, BM_TEXT_MAX, true, "bad text");
		break;
	case BM_CMD_NOTICE:
		ok = s_field_str(&r, 2, e->type, BM_TYPE_MAX, false, "bad notice event") &&
		     s_field_name(&r, 3, e->name, false, "bad agent name");
		break;
	case BM_CMD_PONG:
		/* Optional: absent or nil means "not registered". */
		ok = r.n < 3 || r.f[2].type == MSGPACK_OBJECT_NIL ||
		     s_field_name(&r, 2, e->name, false, "bad agent name");
		break;
	default:
		break;
	}
	if (!ok) {
		*ret_why = r.why ? r.why : "bad field";
		return BM_EPROTO;
	}
	return 0;
}

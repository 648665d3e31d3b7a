/*
 * test_envelope.c - the frame-0 header codec: every command round trips,
 * every malformed case is refused with BM_EPROTO (or BM_EVERSION).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mesh_private.h"


static void
s_roundtrip(const bm_env_t *in, bm_env_t *out)
{
	uint8_t buf[4096];
	const char *why = NULL;
	int n = bm__env_encode(in, buf, sizeof buf);

	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, out, &why), 0);
	ck_assert_ptr_null(why);
	ck_assert_int_eq(out->cmd, in->cmd);
}

START_TEST(send_and_deliver_round_trip_every_field)
{
	for (int cmd = BM_CMD_SEND; cmd <= BM_CMD_DELIVER; cmd++) {
		bm_env_t in = {.cmd = (uint8_t)cmd, .priority = 200, .ttl_ms = 60000, .attempt = 7,
		               .ts_ms = 1795380385340LL};
		bm_env_t out;

		bm_id_new(&in.id);
		bm_id_new(&in.corr);
		strcpy(in.name, cmd == BM_CMD_SEND ? "@lidar.scan" : "planner-1");
		strcpy(in.type, "plan.request/v2");
		s_roundtrip(&in, &out);
		ck_assert(bm_id_equal(&in.id, &out.id));
		ck_assert(bm_id_equal(&in.corr, &out.corr));
		ck_assert_str_eq(out.name, in.name);
		ck_assert_str_eq(out.type, in.type);
		ck_assert_uint_eq(out.priority, 200);
		ck_assert_uint_eq(out.ttl_ms, 60000);
		ck_assert_uint_eq(out.attempt, 7);
		ck_assert_int_eq(out.ts_ms, in.ts_ms);
	}
}
END_TEST

START_TEST(host_addresses_are_checked_and_the_route_field_round_trips)
{
	bm_env_t in = {.cmd = BM_CMD_SEND}, out, dl;
	uint8_t buf[4096], relay[4096];
	const char *why = NULL;
	int n, m;

	ck_assert_int_eq(bm_address_check("mapper@h2"), 0);
	ck_assert_int_eq(bm_address_check("@map@h2"), 0);
	ck_assert_int_eq(bm_address_check("a.b@host_2-x"), 0);
	ck_assert_int_eq(bm_address_check("mapper@"), BM_EBADNAME);
	ck_assert_int_eq(bm_address_check("@mapper"), 0);
	ck_assert_int_eq(bm_address_check("@@h2"), BM_EBADNAME);
	ck_assert_int_eq(bm_address_check("a@h.2"), BM_EBADNAME);   /* dots: subject tokens */
	ck_assert_int_eq(bm_address_check("a@b@c"), BM_EBADNAME);
	ck_assert_int_eq(bm_address_check("@a@b@c"), BM_EBADNAME);
	ck_assert_int_eq(bm_address_check("@map@*"), 0);
	ck_assert_int_eq(bm_address_check("mapper@*"), BM_EBADNAME); /* names are on one host */
	ck_assert_int_eq(bm_address_check("@map@h*"), BM_EBADNAME);
	ck_assert(bm_address_remote("x@h1") && bm_address_remote("@c@h1"));
	ck_assert(!bm_address_remote("x") && !bm_address_remote("@c"));
	{
		char longer[80];

		memset(longer, 'a', 60);
		strcpy(longer + 60, "@h123"); /* 65 bytes: over the 64 of a from field */
		ck_assert_int_eq(bm_address_check(longer), BM_EBADNAME);
	}
	/* A SEND to another host, then the DELIVER beastd builds for the
	 * bridge: the sender in from, the address in the route field. */
	bm_id_new(&in.id);
	strcpy(in.name, "mapper@h2");
	strcpy(in.type, "x");
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), 0);
	ck_assert_str_eq(out.name, "mapper@h2");
	ck_assert_str_eq(out.route, "");
	m = bm__env_deliver(buf, &out, "scout", out.name, relay, sizeof relay);
	ck_assert_int_gt(m, 0);
	ck_assert_int_eq(bm__env_decode(relay, (size_t)m, &dl, &why), 0);
	ck_assert_int_eq(dl.cmd, BM_CMD_DELIVER);
	ck_assert_str_eq(dl.name, "scout");
	ck_assert_str_eq(dl.route, "mapper@h2");
	ck_assert(bm_id_equal(&dl.id, &in.id));
	/* A bridge's SEND with an origin, delivered from it, route nil. */
	strcpy(in.name, "mapper");
	strcpy(in.route, "scout@h1");
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), 0);
	ck_assert_str_eq(out.route, "scout@h1");
	m = bm__env_deliver(buf, &out, out.route, NULL, relay, sizeof relay);
	ck_assert_int_eq(bm__env_decode(relay, (size_t)m, &dl, &why), 0);
	ck_assert_str_eq(dl.name, "scout@h1");
	ck_assert_str_eq(dl.route, "");
	/* With a trace context (elements 10, 11) the route is element 12
	 * and both survive the hand-over to a bridge. */
	{
		static const char tp[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
		bm_env_t t = {.cmd = BM_CMD_SEND};

		bm_id_new(&t.id);
		strcpy(t.name, "mapper@h2");
		strcpy(t.type, "x");
		t.tp = tp;
		t.tp_len = strlen(tp);
		n = bm__env_encode(&t, buf, sizeof buf);
		ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), 0);
		m = bm__env_deliver(buf, &out, "scout", out.name, relay, sizeof relay);
		ck_assert_int_eq(bm__env_decode(relay, (size_t)m, &dl, &why), 0);
		ck_assert_str_eq(dl.route, "mapper@h2");
		ck_assert_uint_eq(dl.tp_len, strlen(tp));
		ck_assert(memcmp(dl.tp, tp, dl.tp_len) == 0);
	}
	/* A DELIVER never comes from an anycast address. */
	dl.cmd = BM_CMD_DELIVER;
	strcpy(dl.name, "@map@h1");
	dl.route[0] = '\0';
	n = bm__env_encode(&dl, buf, sizeof buf);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), BM_EPROTO);
}
END_TEST

START_TEST(a_missing_correlation_id_travels_as_nil)
{
	bm_env_t in = {.cmd = BM_CMD_SEND}, out;

	bm_id_new(&in.id);
	strcpy(in.name, "mapper");
	strcpy(in.type, "x");
	s_roundtrip(&in, &out);
	ck_assert(bm_id_is_zero(&out.corr));
}
END_TEST

START_TEST(session_commands_round_trip)
{
	bm_env_t in = {.cmd = BM_CMD_HELLO, .heartbeat_ms = 250, .ncaps = 2}, out;

	strcpy(in.name, "agent_7");
	strcpy(in.caps[0], "plan");
	strcpy(in.caps[1], "map");
	s_roundtrip(&in, &out);
	ck_assert_str_eq(out.name, "agent_7");
	ck_assert_int_eq(out.ncaps, 2);
	ck_assert_str_eq(out.caps[1], "map");
	ck_assert_uint_eq(out.heartbeat_ms, 250);

	in = (bm_env_t){.cmd = BM_CMD_WELCOME, .heartbeat_ms = 1000, .max_body = 1u << 24};
	strcpy(in.name, "agent_7");
	s_roundtrip(&in, &out);
	ck_assert_uint_eq(out.max_body, 1u << 24);

	in = (bm_env_t){.cmd = BM_CMD_NACK, .code = BM_ENOAGENT};
	bm_id_new(&in.id);
	strcpy(in.name, "@gpu");
	strcpy(in.text, "no agent with capability 'gpu' is online");
	s_roundtrip(&in, &out);
	ck_assert_int_eq(out.code, BM_ENOAGENT);
	ck_assert_str_eq(out.text, in.text);

	in = (bm_env_t){.cmd = BM_CMD_NOTICE};
	strcpy(in.type, "online");
	strcpy(in.name, "mapper");
	s_roundtrip(&in, &out);
	ck_assert_str_eq(out.type, "online");

	/* PING may carry its sender's outbox report; old peers send none. */
	in = (bm_env_t){.cmd = BM_CMD_PING, .has_report = true, .report = {7, 2, 1u << 20}};
	s_roundtrip(&in, &out);
	ck_assert(out.has_report);
	ck_assert_uint_eq(out.report[0], 7);
	ck_assert_uint_eq(out.report[1], 2);
	ck_assert_uint_eq(out.report[2], 1u << 20);
	in = (bm_env_t){.cmd = BM_CMD_PING};
	s_roundtrip(&in, &out);
	ck_assert(!out.has_report);

	for (int cmd = BM_CMD_PING; cmd <= BM_CMD_BYE; cmd++) {
		if (cmd != BM_CMD_NACK) {
			in = (bm_env_t){.cmd = (uint8_t)cmd};
			if (cmd != BM_CMD_ACK) {
				s_roundtrip(&in, &out);
			}
		}
	}
}
END_TEST

START_TEST(route_carries_its_token_peer_event_code_and_count_and_refuses_an_unknown_code)
{
	bm_env_t in = {.cmd = BM_CMD_ROUTE, .attempt = 123456}, out;
	uint8_t buf[256];
	const char *why = NULL;
	int n;

	bm_id_new(&in.id);
	strcpy(in.name, "mapper");
	strcpy(in.type, "connect");
	s_roundtrip(&in, &out);
	ck_assert(bm_id_equal(&out.id, &in.id));
	ck_assert_str_eq(out.name, "mapper");
	ck_assert_str_eq(out.type, "connect");
	ck_assert_int_eq(out.code, 0);
	ck_assert_uint_eq(out.attempt, 123456);
	/* An ask has no token (nil); a refusal says why. */
	in = (bm_env_t){.cmd = BM_CMD_ROUTE, .code = BM_ENOAGENT};
	strcpy(in.name, "mapper");
	strcpy(in.type, "refused");
	s_roundtrip(&in, &out);
	ck_assert(bm_id_is_zero(&out.id));
	ck_assert_int_eq(out.code, BM_ENOAGENT);
	/* A code no revision defines is malformed (it would not encode back). */
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_gt(n, 0);
	ck_assert_uint_eq(buf[n - 2], bm__code_to_wire(BM_ENOAGENT)); /* code, count 0 */
	buf[n - 2] = 0x7f;
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), BM_EPROTO);
}
END_TEST

START_TEST(every_error_code_survives_the_wire)
{
	for (int code = BM_E__FIRST + 1; code < BM_E__LAST; code++) {
		bm_env_t in = {.cmd = BM_CMD_ERROR, .code = code}, out;

		s_roundtrip(&in, &out);
		ck_assert_int_eq(out.code, code);
	}
}
END_TEST

START_TEST(a_send_is_retargeted_into_a_deliver_byte_for_byte)
{
	bm_env_t in = {.cmd = BM_CMD_SEND, .priority = 9, .ttl_ms = 5000, .attempt = 3, .ts_ms = 77},
		 sent, out;
	uint8_t buf[512], re[512];
	const char *why;
	int n, m;

	bm_id_new(&in.id);
	bm_id_new(&in.corr);
	strcpy(in.name, "@lidar");
	strcpy(in.type, "scan.ready");
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &sent, &why), 0);
	m = bm__env_retarget(buf, (size_t)n, &sent, BM_CMD_DELIVER, "a-much-longer-sender-name", re,
	                     sizeof re);
	ck_assert_int_eq(m, n - 7 + 26);
	ck_assert_int_eq(bm__env_decode(re, (size_t)m, &out, &why), 0);
	ck_assert_int_eq(out.cmd, BM_CMD_DELIVER);
	ck_assert_str_eq(out.name, "a-much-longer-sender-name");
	ck_assert(bm_id_equal(&out.id, &in.id) && bm_id_equal(&out.corr, &in.corr));
	ck_assert_str_eq(out.type, "scan.ready");
	ck_assert_uint_eq(out.priority, 9);
	ck_assert_uint_eq(out.attempt, 3);
	ck_assert_int_eq(out.ts_ms, 77);
	/* An ACK keeps its command and swaps the peer. */
	in = (bm_env_t){.cmd = BM_CMD_ACK};
	bm_id_new(&in.id);
	strcpy(in.name, "tx");
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &sent, &why), 0);
	m = bm__env_retarget(buf, (size_t)n, &sent, BM_CMD_ACK, "rx", re, sizeof re);
	ck_assert_int_eq(bm__env_decode(re, (size_t)m, &out, &why), 0);
	ck_assert_str_eq(out.name, "rx");
	ck_assert(bm_id_equal(&out.id, &in.id));
	ck_assert_int_eq(bm__env_retarget(buf, (size_t)n, &sent, BM_CMD_ACK, "rx", re, 4), -ENOBUFS);
}
END_TEST

START_TEST(the_w3c_trace_context_rides_a_send_into_its_deliver_untouched)
{
	static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	static const char ts[] = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
	bm_env_t in = {.cmd = BM_CMD_SEND, .tp = tp, .tp_len = sizeof tp - 1, .ts = ts,
	               .ts_len = sizeof ts - 1},
		 sent, out;
	uint8_t buf[512], re[512];
	const char *why;
	int n, m;

	bm_id_new(&in.id);
	strcpy(in.name, "mapper");
	strcpy(in.type, "msg");
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &sent, &why), 0);
	ck_assert_int_eq(sent.tp_len, sizeof tp - 1);
	ck_assert(memcmp(sent.tp, tp, sent.tp_len) == 0);
	ck_assert(memcmp(sent.ts, ts, sent.ts_len) == 0);
	m = bm__env_retarget(buf, (size_t)n, &sent, BM_CMD_DELIVER, "scout", re, sizeof re);
	ck_assert_int_gt(m, 0);
	ck_assert(bm__env_pad(re, (size_t)m, (size_t)n));
	ck_assert_int_eq(bm__env_decode(re, (size_t)n, &out, &why), 0);
	ck_assert_int_eq(out.cmd, BM_CMD_DELIVER);
	ck_assert_int_eq(out.tp_len, sizeof tp - 1);
	ck_assert(memcmp(out.tp, tp, out.tp_len) == 0);
	ck_assert_int_eq(out.ts_len, sizeof ts - 1);
	ck_assert(memcmp(out.ts, ts, out.ts_len) == 0);

	/* Without it, a SEND is as before (old peers omit it). */
	in.tp = in.ts = NULL;
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), 0);
	ck_assert_ptr_null(out.tp);
	ck_assert_ptr_null(out.ts);
	/* traceparent alone, tracestate nil. */
	in.tp = tp;
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), 0);
	ck_assert_int_eq(out.tp_len, sizeof tp - 1);
	ck_assert_ptr_null(out.ts);
	/* A control character or a space in traceparent is refused. */
	in.tp = "00-abc def";
	in.tp_len = 10;
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), BM_EPROTO);
	ck_assert_str_eq(why, "bad traceparent");
}
END_TEST

/*
 * The broker relays a SEND's own frame when the DELIVER header fits in the
 * SEND header's bytes: shorter by 1..257 bytes, it is padded with one
 * trailing element (nil, or a bin 8 of zeros) that receivers skip.
 */
START_TEST(a_shorter_deliver_header_is_padded_to_the_send_headers_length)
{
	bm_env_t in = {.cmd = BM_CMD_SEND, .priority = 4, .attempt = 2, .ts_ms = 1795380385340LL},
		 sent, out;
	uint8_t buf[1024], re[1024];
	const char *why;

	bm_id_new(&in.id);
	strcpy(in.type, "scan.ready");
	/* Every addressed-name length against sender names every 7 lengths:
	 * shorter (padded by a nil or a bin 8), equal, and longer (refused). */
	for (size_t to_len = 1; to_len <= BM_NAME_MAX; to_len++) {
		for (size_t from_len = 1; from_len <= BM_NAME_MAX; from_len += 7) {
			char from[BM_NAME_MAX + 1];
			int n, m;

			memset(in.name, 'r', to_len);
			in.name[to_len] = '\0';
			memset(from, 's', from_len);
			from[from_len] = '\0';
			n = bm__env_encode(&in, buf, sizeof buf);
			ck_assert_int_gt(n, 0);
			memset(buf + n, 'b', 100); /* an inline body after it */
			ck_assert_int_eq(bm__env_decode(buf, (size_t)n + 100, &sent, &why), 0);
			m = bm__env_retarget(buf, sent.hdr_len, &sent, BM_CMD_DELIVER, from, re,
			                     sizeof re);
			ck_assert_int_gt(m, 0);
			if (m > n) {
				/* A longer sender name cannot fit: untouched. */
				ck_assert(!bm__env_pad(re, (size_t)m, (size_t)n));
				continue;
			}
			ck_assert(bm__env_pad(re, (size_t)m, (size_t)n));
			memcpy(buf, re, (size_t)n);
			ck_assert_int_eq(bm__env_decode(buf, (size_t)n + 100, &out, &why), 0);
			ck_assert_uint_eq(out.hdr_len, (unsigned)n);
			ck_assert_int_eq(out.cmd, BM_CMD_DELIVER);
			ck_assert_str_eq(out.name, from);
			ck_assert_str_eq(out.type, "scan.ready");
			ck_assert(bm_id_equal(&out.id, &in.id) && bm_id_is_zero(&out.corr));
			ck_assert_uint_eq(out.priority, 4);
			ck_assert_uint_eq(out.attempt, 2);
			ck_assert_int_eq(out.ts_ms, in.ts_ms);
			ck_assert_int_eq(buf[n], 'b');
			ck_assert_int_eq(buf[n + 99], 'b');
		}
	}
	/* Limits: 257 bytes to fill is the most; a 15-element array has no
	 * room for one more; nothing is written when it cannot. */
	memset(re, 0, sizeof re);
	re[0] = 0x92;
	re[1] = 0x01;
	re[2] = 0x05;
	ck_assert(bm__env_pad(re, 3, 3 + 257));
	ck_assert_int_eq(re[0], 0x93);
	ck_assert_int_eq(re[3], 0xc4);
	ck_assert_int_eq(re[4], 255);
	re[0] = 0x92;
	ck_assert(!bm__env_pad(re, 3, 3 + 258));
	ck_assert_int_eq(re[0], 0x92);
	ck_assert(bm__env_pad(re, 3, 4));
	ck_assert_int_eq(re[0], 0x93);
	ck_assert_int_eq(re[3], 0xc0);
	re[0] = 0x9f;
	ck_assert(!bm__env_pad(re, 3, 10));
	ck_assert_int_eq(re[0], 0x9f);
	ck_assert(bm__env_pad(re, 3, 3)); /* nothing to fill */
}
END_TEST

START_TEST(encode_refuses_a_buffer_too_small)
{
	bm_env_t in = {.cmd = BM_CMD_SEND};
	uint8_t buf[16];

	bm_id_new(&in.id);
	strcpy(in.name, "mapper");
	strcpy(in.type, "x");
	ck_assert_int_eq(bm__env_encode(&in, buf, sizeof buf), -ENOBUFS);
}
END_TEST

/* Packs an arbitrary header with msgpack-c. */
typedef void (*s_packfn)(msgpack_packer *pk);

static int
s_decode_packed(s_packfn fn, bm_env_t *out)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	const char *why = NULL;
	int rc;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	fn(&pk);
	rc = bm__env_decode(sb.data, sb.size, out, &why);
	if (rc < 0) {
		ck_assert_ptr_nonnull(why);
	}
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static void
s_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

static void
s_id(msgpack_packer *pk, size_t len, uint8_t fill)
{
	uint8_t b[32];

	memset(b, fill, sizeof b);
	msgpack_pack_bin(pk, len);
	msgpack_pack_bin_body(pk, b, len);
}

/* A SEND with one field spoiled per variant. */
static int s_variant;

static void
s_bad_send(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 10);
	msgpack_pack_uint8(pk, 1);
	msgpack_pack_uint8(pk, BM_CMD_SEND);
	s_id(pk, s_variant == 0 ? 15 : 16, s_variant == 1 ? 0 : 0xab); /* short id, zero id */
	if (s_variant == 2) {
		s_str(pk, "not-an-id");
	} else {
		msgpack_pack_nil(pk);
	}
	s_str(pk, s_variant == 3 ? "bad name!" : s_variant == 4 ? "" : "mapper");
	s_str(pk, s_variant == 5 ? "has space" : "t");
	if (s_variant == 6) {
		msgpack_pack_uint32(pk, 256); /* priority over 255 */
	} else if (s_variant == 7) {
		msgpack_pack_int32(pk, -1);
	} else {
		msgpack_pack_uint8(pk, 1);
	}
	msgpack_pack_uint32(pk, 0);
	if (s_variant == 8) {
		msgpack_pack_double(pk, 1.5);
	} else {
		msgpack_pack_uint32(pk, 0);
	}
	msgpack_pack_uint64(pk, 1);
}

START_TEST(each_bad_send_field_is_refused)
{
	bm_env_t out;

	s_variant = _i;
	ck_assert_int_eq(s_decode_packed(s_bad_send, &out), BM_EPROTO);
}
END_TEST

static void
s_wrong_version(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint8(pk, 2);
	msgpack_pack_uint8(pk, BM_CMD_PING);
}

static void
s_unknown_cmd(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint8(pk, 1);
	msgpack_pack_uint8(pk, 99);
}

static void
s_not_array(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 0);
}

static void
s_short_hello(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 3);
	msgpack_pack_uint8(pk, 1);
	msgpack_pack_uint8(pk, BM_CMD_HELLO);
	s_str(pk, "x");
}

static void
s_too_many_caps(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 5);
	msgpack_pack_uint8(pk, 1);
	msgpack_pack_uint8(pk, BM_CMD_HELLO);
	s_str(pk, "x");
	msgpack_pack_array(pk, BM_CAPS_MAX + 1);
	for (int i = 0; i <= BM_CAPS_MAX; i++) {
		s_str(pk, "cap");
	}
	msgpack_pack_uint32(pk, 1000);
}

static void
s_nul_in_text(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint8(pk, 1);
	msgpack_pack_uint8(pk, BM_CMD_ERROR);
	msgpack_pack_uint8(pk, 1);
	msgpack_pack_str(pk, 3);
	msgpack_pack_str_body(pk, "a\0b", 3);
}

static void
s_long_name(msgpack_packer *pk)
{
	char name[BM_NAME_MAX + 2];

	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	msgpack_pack_array(pk, 5);
	msgpack_pack_uint8(pk, 1);
	msgpack_pack_uint8(pk, BM_CMD_HELLO);
	s_str(pk, name);
	msgpack_pack_array(pk, 0);
	msgpack_pack_uint32(pk, 1000);
}

START_TEST(acks_carry_many_ids_and_features_ride_hello_and_welcome)
{
	static const uint8_t old_hello[] = {0x95, 0x01, 0x01, 0xa1, 'a', 0x90, 0x00};
	uint8_t ids[BM_ACKS_MAX * 16], buf[BM_ACKS_MAX * 16 + 128], re[BM_ACKS_MAX * 16 + 128];
	bm_env_t in = {.cmd = BM_CMD_HELLO, .features = BM_FEAT_ACKS}, out, again;
	const char *why;
	int n, m;

	/* HELLO and WELCOME carry features; a HELLO without them reads as 0. */
	strcpy(in.name, "agent");
	s_roundtrip(&in, &out);
	ck_assert_uint_eq(out.features, BM_FEAT_ACKS);
	in = (bm_env_t){.cmd = BM_CMD_WELCOME, .features = BM_FEAT_ACKS, .max_body = 7};
	strcpy(in.name, "agent");
	s_roundtrip(&in, &out);
	ck_assert_uint_eq(out.features, BM_FEAT_ACKS);
	ck_assert_uint_eq(out.max_body, 7);
	ck_assert_int_eq(bm__env_decode(old_hello, sizeof old_hello, &out, &why), 0);
	ck_assert_str_eq(out.name, "a");
	ck_assert_uint_eq(out.features, 0);

	/* ACKS: 1..256 ids, each back in order, peer swapped by retarget. */
	for (size_t i = 0; i < BM_ACKS_MAX; i++) {
		bm_id_new((bm_id_t *)(void *)(ids + 16 * i));
	}
	in = (bm_env_t){.cmd = BM_CMD_ACKS, .ids = ids, .nids = BM_ACKS_MAX};
	strcpy(in.name, "sender");
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_gt(n, BM_ACKS_MAX * 16);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), 0);
	ck_assert_uint_eq(out.nids, BM_ACKS_MAX);
	ck_assert_int_eq(memcmp(out.ids, ids, sizeof ids), 0);
	ck_assert_str_eq(out.name, "sender");
	m = bm__env_retarget(buf, (size_t)n, &out, BM_CMD_ACKS, "receiver_9", re, sizeof re);
	ck_assert_int_gt(m, 0);
	ck_assert_int_eq(bm__env_decode(re, (size_t)m, &again, &why), 0);
	ck_assert_str_eq(again.name, "receiver_9");
	ck_assert_uint_eq(again.nids, BM_ACKS_MAX);
	ck_assert_int_eq(memcmp(again.ids, ids, sizeof ids), 0);

	/* Encode refuses 0 or too many ids; decode refuses what is not 1..256
	 * whole non-zero ids. */
	in.nids = 0;
	ck_assert_int_eq(bm__env_encode(&in, buf, sizeof buf), -EINVAL);
	in.nids = BM_ACKS_MAX + 1;
	ck_assert_int_eq(bm__env_encode(&in, buf, sizeof buf), -EINVAL);
	in.nids = 2;
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_gt(n, 0);
	/* [1, 16, bin16(32 bytes), "sender"]: ids start at offset 6. */
	ck_assert_int_eq(buf[3], 0xc5);
	memset(buf + 6 + 16, 0, 16);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), BM_EPROTO);
	ck_assert_str_eq(why, "bad ACKS ids (1..256 ids of 16 bytes, none zero)");
	bm_id_new((bm_id_t *)(void *)(buf + 6 + 16));
	buf[5] = 31; /* 31 bytes: not whole ids */
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), BM_EPROTO);
	buf[5] = 0;
	buf[4] = 0x20; /* 8,192 bytes: past the frame and past 256 ids */
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), BM_EPROTO);
}
END_TEST

START_TEST(a_send_may_carry_a_small_body_inline_after_its_header)
{
	uint8_t buf[BM_HEADER_MAX + BM_INLINE_MAX + 64], re[BM_HEADER_MAX + BM_INLINE_MAX + 64];
	bm_env_t in = {.cmd = BM_CMD_SEND}, out, again;
	const char *why;
	int n, m;

	bm_id_new(&in.id);
	strcpy(in.name, "mapper");
	strcpy(in.type, "cloud.meta");
	n = bm__env_encode(&in, buf, sizeof buf);
	ck_assert_int_gt(n, 0);
	/* No inline body: hdr_len is the whole frame. */
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n, &out, &why), 0);
	ck_assert_uint_eq(out.hdr_len, (unsigned)n);
	/* 4 KiB after the header: the body, inline. */
	memset(buf + n, 'b', BM_INLINE_MAX);
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n + BM_INLINE_MAX, &out, &why), 0);
	ck_assert_uint_eq(out.hdr_len, (unsigned)n);
	ck_assert_str_eq(out.name, "mapper");
	/* Retargeted into a DELIVER, the inline body comes along unchanged. */
	m = bm__env_retarget(buf, (size_t)n + BM_INLINE_MAX, &out, BM_CMD_DELIVER, "scanner-0", re,
	                     sizeof re);
	ck_assert_int_gt(m, BM_INLINE_MAX);
	ck_assert_int_eq(bm__env_decode(re, (size_t)m, &again, &why), 0);
	ck_assert_int_eq(again.cmd, BM_CMD_DELIVER);
	ck_assert_str_eq(again.name, "scanner-0");
	ck_assert_uint_eq((unsigned)m - again.hdr_len, BM_INLINE_MAX);
	ck_assert_int_eq(re[m - 1], 'b');
	/* One byte more than 4 KiB: malformed (it belongs in a body frame). */
	buf[n + BM_INLINE_MAX] = 'b';
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n + BM_INLINE_MAX + 1, &out, &why), BM_EPROTO);
	ck_assert_str_eq(why, "inline body larger than 4 KiB");
	/* Other commands take no trailing bytes at all. */
	in = (bm_env_t){.cmd = BM_CMD_ACK};
	bm_id_new(&in.id);
	strcpy(in.name, "x");
	n = bm__env_encode(&in, buf, sizeof buf);
	buf[n] = 'b';
	ck_assert_int_eq(bm__env_decode(buf, (size_t)n + 1, &out, &why), BM_EPROTO);
	ck_assert_str_eq(why, "bytes after the header");
}
END_TEST

START_TEST(structural_garbage_is_refused)
{
	bm_env_t out;

	ck_assert_int_eq(s_decode_packed(s_wrong_version, &out), BM_EVERSION);
	ck_assert_int_eq(out.cmd, BM_CMD_PING);
	ck_assert_int_eq(s_decode_packed(s_unknown_cmd, &out), BM_EPROTO);
	ck_assert_int_eq(s_decode_packed(s_not_array, &out), BM_EPROTO);
	ck_assert_int_eq(s_decode_packed(s_short_hello, &out), BM_EPROTO);
	ck_assert_int_eq(s_decode_packed(s_too_many_caps, &out), BM_EPROTO);
	ck_assert_int_eq(s_decode_packed(s_nul_in_text, &out), BM_EPROTO);
	ck_assert_int_eq(s_decode_packed(s_long_name, &out), BM_EPROTO);
}
END_TEST

START_TEST(raw_bytes_that_are_not_one_msgpack_object_are_refused)
{
	static const uint8_t trailing[] = {0x92, 0x01, 0x08, 0x00}; /* [1,PING] + extra byte */
	static const uint8_t truncated[] = {0x93, 0x01};
	static const uint8_t deep[] = {0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
	                               0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
	                               0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
	                               0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x01};
	uint8_t *big = calloc(1, BM_HEADER_MAX + BM_INLINE_MAX + 1);
	const char *why;
	bm_env_t out;

	ck_assert_int_eq(bm__env_decode(trailing, sizeof trailing, &out, &why), BM_EPROTO);
	ck_assert_int_eq(bm__env_decode(truncated, sizeof truncated, &out, &why), BM_EPROTO);
	ck_assert_int_eq(bm__env_decode(deep, sizeof deep, &out, &why), BM_EPROTO);
	ck_assert_int_eq(bm__env_decode(NULL, 0, &out, &why), BM_EPROTO);
	ck_assert_ptr_nonnull(big);
	ck_assert_int_eq(bm__env_decode(big, BM_HEADER_MAX + BM_INLINE_MAX + 1, &out, &why),
	                 BM_EPROTO);
	ck_assert_str_eq(why, "header larger than 64 KiB");
	free(big);
}
END_TEST

START_TEST(extra_trailing_fields_are_ignored_for_forward_compatibility)
{
	static const uint8_t ping_plus[] = {0x93, 0x01, 0x08, 0xa1, 'x'};
	const char *why;
	bm_env_t out;

	ck_assert_int_eq(bm__env_decode(ping_plus, sizeof ping_plus, &out, &why), 0);
	ck_assert_int_eq(out.cmd, BM_CMD_PING);
}
END_TEST

START_TEST(ids_are_time_ordered_and_parse_back)
{
	bm_id_t a, b, c;
	char hex[BM_ID_HEX_LEN + 1];
	int64_t now = bm_wall_ms();

	bm_id_new(&a);
	bm_id_new(&b);
	ck_assert(!bm_id_equal(&a, &b));
	ck_assert_int_le(llabs(bm_id_ms(&a) - now), 1000);
	ck_assert_int_le(memcmp(a.b, b.b, 6), 0);
	bm_id_hex(&a, hex);
	ck_assert_int_eq(bm_id_parse(hex, &c), 0);
	ck_assert(bm_id_equal(&a, &c));
	ck_assert_int_eq(bm_id_parse("zz", &c), -EINVAL);
	hex[5] = 'g';
	ck_assert_int_eq(bm_id_parse(hex, &c), -EINVAL);
}
END_TEST

START_TEST(a_forked_child_never_repeats_its_parents_ids)
{
	enum { N = 200 };
	bm_id_t mine[N], theirs[N];
	int p[2];
	pid_t pid;
	ssize_t got = 0;

	bm_id_new(&mine[0]); /* the pool is now filled in this process */
	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		for (int i = 0; i < N; i++) {
			bm_id_new(&theirs[i]);
		}
		_exit(write(p[1], theirs, sizeof theirs) == (ssize_t)sizeof theirs ? 0 : 1);
	}
	close(p[1]);
	for (int i = 1; i < N; i++) {
		bm_id_new(&mine[i]);
	}
	while (got < (ssize_t)sizeof theirs) {
		ssize_t n = read(p[0], (char *)theirs + got, sizeof theirs - (size_t)got);

		ck_assert_int_gt(n, 0);
		got += n;
	}
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
	/* Same milliseconds, so the random tails must differ. */
	for (int i = 0; i < N; i++) {
		for (int k = 0; k < N; k++) {
			ck_assert(memcmp(mine[i].b + 6, theirs[k].b + 6, 10) != 0);
		}
	}
}
END_TEST

START_TEST(names_capabilities_and_types_are_checked)
{
	ck_assert_int_eq(bm_name_check("mapper-2.b_c"), 0);
	ck_assert_int_eq(bm_name_check(""), BM_EBADNAME);
	ck_assert_int_eq(bm_name_check("a b"), BM_EBADNAME);
	ck_assert_int_eq(bm_name_check("@x"), BM_EBADNAME);
	ck_assert_int_eq(bm_address_check("@x"), 0);
	ck_assert_int_eq(bm_address_check("@"), BM_EBADNAME);
	ck_assert_int_eq(bm_cap_check("0123456789012345678901234567890123"), BM_EBADNAME);
	ck_assert_int_eq(bm_type_check("pointcloud/ply"), 0);
	ck_assert_int_eq(bm_type_check("a\tb"), BM_EBADNAME);
	ck_assert_str_eq(bm_err_name(BM_ENOAGENT), "BM_ENOAGENT");
	ck_assert_str_eq(bm_err_name(-ENOENT), "ENOENT");
	ck_assert_ptr_nonnull(strstr(bm_strerror(BM_ENOAGENT), "no agent"));
}
END_TEST

START_TEST(the_directory_map_survives_churn)
{
	enum { N = 5000 };
	static char keys[N][16];
	bm_map_t *m = bm__map_new();
	size_t cur = 0, seen = 0;

	ck_assert_ptr_nonnull(m);
	for (int i = 0; i < N; i++) {
		snprintf(keys[i], sizeof keys[i], "agent-%d", i);
		ck_assert_int_eq(bm__map_put(m, keys[i], strlen(keys[i]), keys[i]), 0);
	}
	ck_assert_uint_eq(bm__map_size(m), N);
	/* Remove every third key in a scattered order; backward-shift deletion
	 * must keep every other key reachable. */
	for (int i = 0; i < N; i += 3) {
		int k = (i * 7919) % N;

		bm__map_del(m, keys[k], strlen(keys[k]));
		keys[k][0] = '\0';
	}
	for (int i = 0; i < N; i++) {
		void *v = keys[i][0] ? bm__map_get(m, keys[i], strlen(keys[i])) : NULL;

		ck_assert_ptr_eq(v, keys[i][0] ? keys[i] : NULL);
	}
	while (bm__map_next(m, &cur) != NULL) {
		seen++;
	}
	ck_assert_uint_eq(seen, bm__map_size(m));
	ck_assert_ptr_null(bm__map_get(m, "nobody", 6));
	bm__map_destroy(&m);
	ck_assert_ptr_null(m);
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("envelope");
	TCase *tc = tcase_create("codec");

	tcase_add_test(tc, send_and_deliver_round_trip_every_field);
	tcase_add_test(tc, a_missing_correlation_id_travels_as_nil);
	tcase_add_test(tc, host_addresses_are_checked_and_the_route_field_round_trips);
	tcase_add_test(tc, session_commands_round_trip);
	tcase_add_test(tc, every_error_code_survives_the_wire);
	tcase_add_test(tc, route_carries_its_token_peer_event_code_and_count_and_refuses_an_unknown_code);
	tcase_add_test(tc, encode_refuses_a_buffer_too_small);
	tcase_add_test(tc, a_send_is_retargeted_into_a_deliver_byte_for_byte);
	tcase_add_test(tc, the_w3c_trace_context_rides_a_send_into_its_deliver_untouched);
	tcase_add_test(tc, a_shorter_deliver_header_is_padded_to_the_send_headers_length);
	tcase_add_loop_test(tc, each_bad_send_field_is_refused, 0, 9);
	tcase_add_test(tc, acks_carry_many_ids_and_features_ride_hello_and_welcome);
	tcase_add_test(tc, a_send_may_carry_a_small_body_inline_after_its_header);
	tcase_add_test(tc, structural_garbage_is_refused);
	tcase_add_test(tc, raw_bytes_that_are_not_one_msgpack_object_are_refused);
	tcase_add_test(tc, extra_trailing_fields_are_ignored_for_forward_compatibility);
	suite_add_tcase(s, tc);
	tc = tcase_create("ids");
	tcase_add_test(tc, ids_are_time_ordered_and_parse_back);
	tcase_add_test(tc, a_forked_child_never_repeats_its_parents_ids);
	tcase_add_test(tc, names_capabilities_and_types_are_checked);
	tcase_add_test(tc, the_directory_map_survives_churn);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(s_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}

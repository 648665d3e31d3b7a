/*
 * test_bridge_hdr.c - the bridge's "Bm" header: what one bridge writes the
 * other reads back whole, and what no bridge wrote is refused.
 */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "bridge_hdr.h"
#include "testutil.h"

static bm_bh_msg_t
s_msg(void)
{
	bm_bh_msg_t h;

	memset(&h, 0, sizeof h);
	ck_assert_int_eq(bm_id_parse("01a24fd18b17fe8b9729877edbb8759c", &h.id), 0);
	snprintf(h.from, sizeof h.from, "mapper.7@h1");
	snprintf(h.to, sizeof h.to, "@map@h2");
	snprintf(h.type, sizeof h.type, "cloud.ready/v2");
	h.priority = 255;
	h.ttl_ms = 4000;
	h.attempt = 3;
	h.ts_ms = 1796635462423;
	return h;
}

START_TEST(a_message_envelope_reads_back_as_written_with_and_without_corr)
{
	bm_bh_msg_t in = s_msg(), out;
	char buf[BM_BH_MAX];

	ck_assert_int_gt(bm_bh_msg_format(&in, buf, sizeof buf), 0);
	ck_assert_str_eq(buf, "1 01a24fd18b17fe8b9729877edbb8759c - mapper.7@h1 @map@h2 255 4000 3 "
	                      "1796635462423 cloud.ready/v2");
	ck_assert_int_eq(bm_bh_msg_parse(buf, &out), 0);
	ck_assert_mem_eq(&out, &in, sizeof in);
	ck_assert(bm_id_is_zero(&out.corr));
	ck_assert_int_eq(bm_id_parse("01a24fd17b626a7d692bd9e5bd3720d6", &in.corr), 0);
	ck_assert_int_gt(bm_bh_msg_format(&in, buf, sizeof buf), 0);
	ck_assert_int_eq(bm_bh_msg_parse(buf, &out), 0);
	ck_assert(bm_id_equal(&out.corr, &in.corr));
	ck_assert_uint_eq(out.priority, 255);
	ck_assert_int_eq(out.ts_ms, 1796635462423);
}
END_TEST

START_TEST(the_longest_fields_fit_the_header)
{
	bm_bh_msg_t in = s_msg(), out;
	char buf[BM_BH_MAX];

	memset(in.from, 'a', 61);
	memcpy(in.from + 61, "@h1", 4);
	memset(in.to, 'b', 32);
	in.to[32] = '@';
	memset(in.to + 33, 'c', 31);
	in.to[64] = '\0';
	memset(in.type, 't', BM_TYPE_MAX);
	in.type[BM_TYPE_MAX] = '\0';
	in.ttl_ms = UINT32_MAX;
	in.attempt = UINT32_MAX;
	in.ts_ms = INT64_MAX;
	memset(&in.corr, 0xff, sizeof in.corr);
	ck_assert_int_gt(bm_bh_msg_format(&in, buf, sizeof buf), 0);
	ck_assert_int_eq(bm_bh_msg_parse(buf, &out), 0);
	ck_assert_mem_eq(&out, &in, sizeof in);
	ck_assert_int_eq(bm_bh_msg_format(&in, buf, 40), -ENOSPC);
}
END_TEST

START_TEST(a_record_reads_back_and_its_from_is_only_a_word)
{
	bm_bh_rec_t in, out;
	char buf[BM_BH_MAX];

	memset(&in, 0, sizeof in);
	ck_assert_int_eq(bm_id_parse("01a24fd18b17fe8b9729877edbb8759c", &in.id), 0);
	snprintf(in.peer, sizeof in.peer, "S");
	snprintf(in.from, sizeof in.from, "bridge@h2");
	in.code = 7;
	ck_assert_int_gt(bm_bh_rec_format(&in, buf, sizeof buf), 0);
	ck_assert_str_eq(buf, "1 01a24fd18b17fe8b9729877edbb8759c S bridge@h2 7");
	ck_assert_int_eq(bm_bh_rec_parse(buf, &out), 0);
	ck_assert_mem_eq(&out, &in, sizeof in);
	/* Cut short by a long acker name: still a record. */
	ck_assert_int_eq(bm_bh_rec_parse("1 01a24fd18b17fe8b9729877edbb8759c S verylongname@ 0", &out), 0);
	ck_assert_uint_eq(out.code, 0);
}
END_TEST

START_TEST(what_no_bridge_wrote_is_refused)
{
	static const char *const bad_msgs[] = {
	    NULL,
	    "",
	    "1",
	    "2 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 0 0 0 1 msg",  /* version */
	    "1 01a24fd18b17fe8b9729877edbb8759 - a@h1 b@h2 0 0 0 1 msg",   /* short id */
	    "1 01a24fd18b17fe8b9729877edbb8759c x a@h1 b@h2 0 0 0 1 msg",  /* corr */
	    "1 01a24fd18b17fe8b9729877edbb8759c - a b@h2 0 0 0 1 msg",     /* from: no host */
	    "1 01a24fd18b17fe8b9729877edbb8759c - @c@h1 b@h2 0 0 0 1 msg", /* from: anycast */
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b 0 0 0 1 msg",     /* to: local */
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 256 0 0 1 msg", /* priority */
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 0 -1 0 1 msg", /* ttl */
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 0 4294967296 0 1 msg",
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 0 0 0x1 1 msg", /* attempt */
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 0 0 0 99999999999999999999 msg",
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 0 0 0 1",      /* no type */
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 0 0 0 1 msg ", /* trailing */
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 0 0 0 1 msg x",
	    "1 01a24fd18b17fe8b9729877edbb8759c -  a@h1 b@h2 0 0 0 1 msg", /* two spaces */
	    "1 01a24fd18b17fe8b9729877edbb8759c - a@h1 b@h2 0 0 0 1 m\tg", /* type: a tab */
	};
	static const char *const bad_recs[] = {
	    NULL,
	    "1 01a24fd18b17fe8b9729877edbb8759c S bridge@h2",
	    "1 01a24fd18b17fe8b9729877edbb8759c S@h1 bridge@h2 0", /* peer: not a name */
	    "1 01a24fd18b17fe8b9729877edbb8759c S bridge@h2 0 0",
	    "1 01a24fd18b17fe8b9729877edbb8759c S bridge@h2 -3",
	};
	bm_bh_msg_t m = s_msg(), keep = m;
	bm_bh_rec_t r;

	for (size_t i = 0; i < sizeof bad_msgs / sizeof bad_msgs[0]; i++) {
		ck_assert_msg(bm_bh_msg_parse(bad_msgs[i], &m) == -EINVAL, "accepted: %s",
		              bad_msgs[i] ? bad_msgs[i] : "(null)");
		ck_assert_mem_eq(&m, &keep, sizeof m); /* untouched */
	}
	for (size_t i = 0; i < sizeof bad_recs / sizeof bad_recs[0]; i++) {
		ck_assert_msg(bm_bh_rec_parse(bad_recs[i], &r) == -EINVAL, "accepted: %s",
		              bad_recs[i] ? bad_recs[i] : "(null)");
	}
}
END_TEST

START_TEST(acks_in_a_body_read_back_in_order_and_a_bad_line_stops_the_reading)
{
	char body[4 * BM_BH_ACK_LINE], peer[BM_NAME_MAX + 1], longest[BM_NAME_MAX + 1];
	const char *p, *end;
	bm_id_t id[3], got;
	size_t len = 0;

	memset(longest, 'n', BM_NAME_MAX);
	longest[BM_NAME_MAX] = '\0';
	for (int i = 0; i < 3; i++) {
		memset(&id[i], 0x11 * (i + 1), sizeof id[i]);
	}
	ck_assert_int_eq(bm_bh_ack_add(body, sizeof body, &len, &id[0], "S"), 0);
	ck_assert_int_eq(bm_bh_ack_add(body, sizeof body, &len, &id[1], longest), 0);
	ck_assert_int_eq(bm_bh_ack_add(body, sizeof body, &len, &id[2], "a.b-c_d"), 0);
	ck_assert_uint_eq(len, 3 * (BM_ID_HEX_LEN + 2) + 1 + BM_NAME_MAX + 7);
	/* A line that does not fit is not written at all. */
	ck_assert_int_eq(bm_bh_ack_add(body, len + 10, &len, &id[0], "S"), -ENOSPC);
	ck_assert_uint_eq(len, 3 * (BM_ID_HEX_LEN + 2) + 1 + BM_NAME_MAX + 7);
	p = body;
	end = body + len;
	ck_assert_int_eq(bm_bh_ack_next(&p, end, &got, peer), 1);
	ck_assert(bm_id_equal(&got, &id[0]));
	ck_assert_str_eq(peer, "S");
	ck_assert_int_eq(bm_bh_ack_next(&p, end, &got, peer), 1);
	ck_assert(bm_id_equal(&got, &id[1]));
	ck_assert_str_eq(peer, longest);
	ck_assert_int_eq(bm_bh_ack_next(&p, end, &got, peer), 1);
	ck_assert(bm_id_equal(&got, &id[2]));
	ck_assert_str_eq(peer, "a.b-c_d");
	ck_assert_int_eq(bm_bh_ack_next(&p, end, &got, peer), 0);
	/* Cut mid-line, a name with a NUL or a space, a bad id: refused. */
	p = body;
	ck_assert_int_eq(bm_bh_ack_next(&p, body + 20, &got, peer), -EINVAL);
	ck_assert_ptr_eq(p, body);
	{
		static const char *const bad[] = {
		    "01a24fd18b17fe8b9729877edbb8759c\n",
		    "01a24fd18b17fe8b9729877edbb8759c \n",
		    "01a24fd18b17fe8b9729877edbb8759c a b\n",
		    "01a24fd18b17fe8b9729877edbb8759 Sx\n",
		    "01a24fd18b17fe8b9729877edbb8759cS\n",
		    "zza24fd18b17fe8b9729877edbb8759c S\n",
		};

		for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
			p = bad[i];
			ck_assert_msg(bm_bh_ack_next(&p, bad[i] + strlen(bad[i]), &got, peer) == -EINVAL,
			              "accepted: %s", bad[i]);
		}
		memcpy(body, "01a24fd18b17fe8b9729877edbb8759c a\0b\n", 37);
		p = body;
		ck_assert_int_eq(bm_bh_ack_next(&p, body + 37, &got, peer), -EINVAL);
	}
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("bridge_hdr");
	TCase *tc = tcase_create("bridge_hdr");

	tcase_add_test(tc, a_message_envelope_reads_back_as_written_with_and_without_corr);
	tcase_add_test(tc, the_longest_fields_fit_the_header);
	tcase_add_test(tc, a_record_reads_back_and_its_from_is_only_a_word);
	tcase_add_test(tc, what_no_bridge_wrote_is_refused);
	tcase_add_test(tc, acks_in_a_body_read_back_in_order_and_a_bad_line_stops_the_reading);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}

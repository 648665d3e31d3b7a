/*
 * test_env.c - bm_env_long: a tuning knob is read when it is a number in
 * range and otherwise left at its default, never an error.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "bm_common.h"
#include "testutil.h"

#define K "BM_TEST_KNOB"

START_TEST(a_number_in_range_is_read_and_anything_else_is_the_default)
{
	static const struct {
		const char *v; /* NULL: unset */
		long want;
	} cases[] = {
	    {NULL, 7},     {"", 7},      {"0", 0},      {"100", 100}, {"-5", -5},
	    {"101", 7},    {"-6", 7},    {"12x", 7},    {"x12", 7},   {" 12", 12},
	    {"1e2", 7},    {"0x10", 7},  {"99999999999999999999", 7},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		if (cases[i].v == NULL) {
			unsetenv(K);
		} else {
			setenv(K, cases[i].v, 1);
		}
		ck_assert_msg(bm_env_long(K, -5, 100, 7) == cases[i].want, "%s: got %ld, want %ld",
		              cases[i].v ? cases[i].v : "(unset)", bm_env_long(K, -5, 100, 7),
		              cases[i].want);
	}
	setenv(K, "9223372036854775807", 1);
	ck_assert_int_eq(bm_env_long(K, 0, LONG_MAX, 1), LONG_MAX);
	ck_assert_int_eq(bm_env_long(NULL, 0, 1, 1), 1);
	/* The parser under it: a value or -EINVAL, *ret untouched then. */
	{
		long v = 42;

		ck_assert_int_eq(bm_parse_long(NULL, 0, 9, &v), -EINVAL);
		ck_assert_int_eq(bm_parse_long("", 0, 9, &v), -EINVAL);
		ck_assert_int_eq(bm_parse_long("10", 0, 9, &v), -EINVAL);
		ck_assert_int_eq(v, 42);
		ck_assert_int_eq(bm_parse_long("9", 0, 9, &v), 0);
		ck_assert_int_eq(v, 9);
	}
	unsetenv(K);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("env");
	TCase *tc = tcase_create("env");

	tcase_add_test(tc, a_number_in_range_is_read_and_anything_else_is_the_default);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}

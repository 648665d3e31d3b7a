/*
 * test_httpd.c - beastd's HTTP server (agents/httpd.c) on its own, fed
 * made-up snapshots: the conditions and bounds that a live beastd cannot
 * be put into on demand — a broker loop that stopped publishing (503
 * "stalled"), more agents than the label bound (summed as "_other"), no
 * snapshot yet.  The multi-process suite (test_observability.c) covers
 * the rest against a real beastd.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "httpd.h"
#include "testutil.h"

static char *s_dir;

static void
s_setup(void)
{
	s_dir = tu_scratch_dir();
	ck_assert_ptr_nonnull(s_dir);
}

static void
s_teardown(void)
{
	tu_rmrf(&s_dir);
}

/* A snapshot with n agents named a000.., taken age_ms ago. */
static bm_broker_snap_t *
s_snap(size_t n, int64_t age_ms, bool paused)
{
	bm_broker_snap_t *s = calloc(1, sizeof *s);

	s->stats = calloc(8, sizeof *s->stats);
	s->agents = calloc(n ? n : 1, sizeof *s->agents);
	s->flows = calloc(1, sizeof *s->flows);
	s->taken_ms = bm_mono_ms() - age_ms;
	snprintf(s->stats[0].key, sizeof s->stats[0].key, "uptime_ms");
	s->stats[0].value = 5000;
	snprintf(s->stats[1].key, sizeof s->stats[1].key, "agents");
	s->stats[1].value = (int64_t)n;
	snprintf(s->stats[2].key, sizeof s->stats[2].key, "bcast_in");
	snprintf(s->stats[3].key, sizeof s->stats[3].key, "bcast_paused");
	s->stats[3].value = paused;
	s->nstats = 4;
	for (size_t i = 0; i < n; i++) {
		snprintf(s->agents[i].name, sizeof s->agents[i].name, "a%03zu", i);
		s->agents[i].inflight = 1;
		s->agents[i].outbox_pending = -1;
	}
	s->nagents = n;
	return s;
}

/* bm_broker_snap_destroy frees one block; these were made in four. */
static void
s_publish(bm_httpd_t *h, bm_broker_snap_t *s)
{
	/* Copy into the one-allocation layout the server frees. */
	size_t bytes = sizeof *s + s->nstats * sizeof *s->stats + s->nagents * sizeof *s->agents +
	               sizeof *s->flows;
	bm_broker_snap_t *d = calloc(1, bytes);

	*d = *s;
	d->stats = (bm_stat_t *)(d + 1);
	d->agents = (bm_snap_agent_t *)(d->stats + s->nstats);
	d->flows = (bm_snap_flow_t *)(d->agents + s->nagents);
	memcpy(d->stats, s->stats, s->nstats * sizeof *s->stats);
	memcpy(d->agents, s->agents, s->nagents * sizeof *s->agents);
	free(s->stats);
	free(s->agents);
	free(s->flows);
	free(s);
	bm_httpd_publish(h, &d, NULL, 0);
	ck_assert_ptr_null(d);
}

/* A mesh.sock in the dir, so only the condition under test fails. */
static void
s_fake_socket(void)
{
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(un.sun_path, sizeof un.sun_path, "%s/mesh.sock", s_dir);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
	close(fd);
}

START_TEST(healthz_says_stalled_when_the_broker_stops_publishing)
{
	bm_httpd_t *h = NULL;
	char *b = NULL;

	s_fake_socket();
	ck_assert_int_eq(bm_httpd_open("127.0.0.1:0", s_dir, &h), 0);
	/* Nothing published yet. */
	ck_assert_int_eq(tu_http(bm_httpd_address(h), "GET", "/healthz", 3000, &b), 503);
	ck_assert(strstr(b, "no snapshot") != NULL);
	free(b);
	ck_assert_int_eq(tu_http(bm_httpd_address(h), "GET", "/metrics", 3000, NULL), 503);
	s_publish(h, s_snap(2, 0, false));
	ck_assert_int_eq(tu_http(bm_httpd_address(h), "GET", "/healthz", 3000, &b), 200);
	ck_assert(strstr(b, "\"status\":\"ok\"") != NULL);
	free(b);
	/* The last snapshot is 2.5 s old: the broker loop is not turning. */
	s_publish(h, s_snap(2, 2500, false));
	ck_assert_int_eq(tu_http(bm_httpd_address(h), "GET", "/healthz", 3000, &b), 503);
	ck_assert_msg(strstr(b, "broker loop stalled") != NULL, "%s", b);
	free(b);
	/* Stalled and paused: both reasons. */
	s_publish(h, s_snap(2, 2500, true));
	ck_assert_int_eq(tu_http(bm_httpd_address(h), "GET", "/healthz", 3000, &b), 503);
	ck_assert_msg(strstr(b, "broker loop stalled") && strstr(b, "proxy paused"), "%s", b);
	free(b);
	bm_httpd_destroy(&h);
	ck_assert_ptr_null(h);
}
END_TEST

START_TEST(metrics_label_at_most_64_agents_and_sum_the_rest)
{
	bm_httpd_t *h = NULL;
	char *b = NULL, series[64];
	int labelled = 0;

	s_fake_socket();
	ck_assert_int_eq(bm_httpd_open("127.0.0.1:0", s_dir, &h), 0);
	s_publish(h, s_snap(100, 0, false));
	ck_assert_int_eq(tu_http(bm_httpd_address(h), "GET", "/metrics", 3000, &b), 200);
	for (const char *p = b; (p = strstr(p, "beastmesh_agent_inflight{agent=\"a")) != NULL; p++) {
		labelled++;
	}
	ck_assert_int_eq(labelled, BM_HTTPD_AGENTS_LABELLED);
	/* The first 64 by name have their own series; 36 more are summed. */
	ck_assert(strstr(b, "beastmesh_agent_inflight{agent=\"a063\"} 1\n") != NULL);
	ck_assert(strstr(b, "agent=\"a064\"") == NULL);
	snprintf(series, sizeof series, "beastmesh_agent_inflight{agent=\"_other\"} %d\n", 36);
	ck_assert_msg(strstr(b, series) != NULL, "%s", b);
	/* No agent reported an outbox: no such series. */
	ck_assert(strstr(b, "agent_outbox_pending") == NULL);
	free(b);
	/* HEAD has no body; bad methods and paths get 4xx. */
	ck_assert_int_eq(tu_http(bm_httpd_address(h), "HEAD", "/metrics", 3000, &b), 200);
	ck_assert_str_eq(b, "");
	free(b);
	ck_assert_int_eq(tu_http(bm_httpd_address(h), "PUT", "/metrics", 3000, NULL), 405);
	ck_assert_int_eq(tu_http(bm_httpd_address(h), "GET", "/../../etc/passwd", 3000, NULL), 404);
	bm_httpd_destroy(&h);
}
END_TEST

START_TEST(addresses_other_than_loopback_are_refused)
{
	ck_assert_int_eq(bm_httpd_check("127.0.0.1:9464"), 0);
	ck_assert_int_eq(bm_httpd_check("127.1.2.3:0"), 0);
	ck_assert_int_eq(bm_httpd_check("localhost:80"), 0);
	ck_assert_int_eq(bm_httpd_check("[::1]:9464"), 0);
	ck_assert_int_eq(bm_httpd_check("unix:/tmp/x.sock"), 0);
	ck_assert_int_eq(bm_httpd_check("0.0.0.0:9464"), -EADDRNOTAVAIL);
	ck_assert_int_eq(bm_httpd_check("10.0.0.1:80"), -EADDRNOTAVAIL);
	ck_assert_int_eq(bm_httpd_check("[::]:80"), -EADDRNOTAVAIL);
	ck_assert_int_eq(bm_httpd_check("example.com:80"), -EADDRNOTAVAIL);
	ck_assert_int_eq(bm_httpd_check("127.0.0.1"), -EINVAL);
	ck_assert_int_eq(bm_httpd_check("127.0.0.1:99999"), -EINVAL);
	ck_assert_int_eq(bm_httpd_check("127.0.0.1:x"), -EINVAL);
	ck_assert_int_eq(bm_httpd_check(":80"), -EINVAL);
	ck_assert_int_eq(bm_httpd_check("unix:"), -EINVAL);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("httpd");
	TCase *t = tcase_create("server");

	tcase_add_unchecked_fixture(t, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(t, s_setup, s_teardown);
	tcase_set_timeout(t, 30);
	tcase_add_test(t, healthz_says_stalled_when_the_broker_stops_publishing);
	tcase_add_test(t, metrics_label_at_most_64_agents_and_sum_the_rest);
	tcase_add_test(t, addresses_other_than_loopback_are_refused);
	suite_add_tcase(s, t);
	return tu_run_suite(s);
}

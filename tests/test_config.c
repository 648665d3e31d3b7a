/*
 * test_config.c - `beastd --config FILE`: the key = value reader on its
 * own, then the built beastd started with a file (its settings apply, the
 * command line overrides them) and refusing bad files with FILE:LINE and
 * exit status 2.  Also `--version` of the programs built here.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf.h"
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

static void
s_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* Runs argv with stdout and stderr into out (a file); its exit status,
 * or -1 after 10 s (then it is killed). */
static int
s_run(char *const argv[], const char *out)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (fd < 0) {
			_exit(126);
		}
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	return tu_wait(pid, 10000);
}

static char *
s_slurp(const char *path)
{
	static char buf[8192];
	FILE *f = fopen(path, "r");
	size_t n;

	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* A free loopback TCP port (bound, then released). */
static int
s_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* A client over tcp that gets a PONG within timeout_ms. */
static bool
s_tcp_answers(int port, int timeout_ms)
{
	char ep[64];
	int64_t deadline = bm_mono_ms() + timeout_ms;

	snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
	while (bm_mono_ms() < deadline) {
		bm_client_opts_t o = {.endpoint = ep, .connect_timeout_ms = 300};
		bm_client_t *c = NULL;

		if (bm_client_open(&o, &c) == 0) {
			bool ok = bm_client_ping(c, 1000) >= 0;

			bm_client_destroy(&c);
			if (ok) {
				return true;
			}
		}
		usleep(20000);
	}
	return false;
}

/* ---- the reader ---- */

typedef struct {
	char keys[8][32];
	char vals[8][64];
	int lines[8];
	int n;
} s_seen_t;

static int
s_collect(void *arg, const char *key, const char *value, int line)
{
	s_seen_t *s = arg;

	if (s->n == 8) {
		return -E2BIG;
	}
	snprintf(s->keys[s->n], sizeof s->keys[0], "%s", key);
	snprintf(s->vals[s->n], sizeof s->vals[0], "%s", value);
	s->lines[s->n++] = line;
	return 0;
}

START_TEST(reader_skips_comments_and_blank_lines_and_trims)
{
	char path[4096], *buf = NULL;
	s_seen_t seen = {0};
	int line = -1;

	snprintf(path, sizeof path, "%s/a.conf", s_dir);
	s_write(path, "# beastd\n\n  heartbeat = 500\t\n"
	              "tcp=tcp://127.0.0.1:5555\n   # indented comment\n"
	              "allow = \" spaced dir \"\nno-lvc =\n");
	ck_assert_int_eq(bm_conf_load(path, s_collect, &seen, &buf, &line), 0);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(seen.n, 4);
	ck_assert_str_eq(seen.keys[0], "heartbeat");
	ck_assert_str_eq(seen.vals[0], "500");
	ck_assert_int_eq(seen.lines[0], 3);
	ck_assert_str_eq(seen.vals[1], "tcp://127.0.0.1:5555");
	ck_assert_int_eq(seen.lines[1], 4);
	ck_assert_str_eq(seen.vals[2], " spaced dir ");
	ck_assert_str_eq(seen.keys[3], "no-lvc");
	ck_assert_str_eq(seen.vals[3], "");
	ck_assert_int_eq(seen.lines[3], 7);
	free(buf);
}
END_TEST

START_TEST(reader_reports_the_line_of_a_malformed_setting)
{
	char path[4096], *buf = NULL;
	s_seen_t seen = {0};
	int line = 0;

	snprintf(path, sizeof path, "%s/b.conf", s_dir);
	s_write(path, "heartbeat = 500\n\n# fine so far\nmax-pending 1000\n");
	ck_assert_int_eq(bm_conf_load(path, s_collect, &seen, &buf, &line), -EINVAL);
	ck_assert_int_eq(line, 4);
	ck_assert_int_eq(seen.n, 1);
	free(buf);
	buf = NULL;
	s_write(path, "Heart Beat = 1\n");
	ck_assert_int_eq(bm_conf_load(path, s_collect, &seen, &buf, &line), -EINVAL);
	ck_assert_int_eq(line, 1);
	free(buf);
	buf = NULL;
	snprintf(path, sizeof path, "%s/missing.conf", s_dir);
	ck_assert_int_eq(bm_conf_load(path, s_collect, &seen, &buf, &line), -ENOENT);
	ck_assert_ptr_null(buf);
}
END_TEST

/* ---- beastd --config ---- */

START_TEST(beastd_applies_a_config_file_and_the_command_line_overrides_it)
{
	char conf[4096], run[4096], text[8192], out[4096], ep[64];
	int port = s_free_port(), port2 = s_free_port();
	pid_t pid;

	snprintf(conf, sizeof conf, "%s/beastd.conf", s_dir);
	snprintf(run, sizeof run, "%s", s_dir); /* short: ipc paths are capped */
	snprintf(out, sizeof out, "%s/beastd.log", s_dir);
	snprintf(text, sizeof text,
	         "# a beastd configuration\n"
	         "dir = %s\n"
	         "heartbeat = 500\n"
	         "max-pending = 1000000\n"
	         "\n"
	         "tcp = tcp://127.0.0.1:%d\n"
	         "no-lvc = yes\n",
	         run, port);
	s_write(conf, text);

	/* The file alone: its dir and its tcp endpoint are used. */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		execl(BM_BEASTD_PATH, "beastd", "--config", conf, (char *)NULL);
		_exit(127);
	}
	ck_assert(tu_broker_answers(run, 5000));
	ck_assert(s_tcp_answers(port, 5000));
	ck_assert_int_eq(tu_term(pid, 5000), 0);

	/* --tcp on the command line wins over the file's tcp. */
	snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port2);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		execl(BM_BEASTD_PATH, "beastd", "--tcp", ep, "--config", conf, (char *)NULL);
		_exit(127);
	}
	ck_assert(tu_broker_answers(run, 5000));
	ck_assert(s_tcp_answers(port2, 5000));
	ck_assert_int_eq(tu_term(pid, 5000), 0);
}
END_TEST

START_TEST(beastd_refuses_a_bad_key_or_value_naming_file_and_line)
{
	char conf[4096], out[4096], want[4200];
	char *argv[] = {BM_BEASTD_PATH, "--config", conf, NULL};
	const char *log;

	snprintf(conf, sizeof conf, "%s/bad.conf", s_dir);
	snprintf(out, sizeof out, "%s/out", s_dir);

	s_write(conf, "# ok\nheartbeat = 500\n\nhartbeat = 500\n");
	ck_assert_int_eq(s_run(argv, out), 2);
	log = s_slurp(out);
	snprintf(want, sizeof want, "%s:4: unknown key 'hartbeat'", conf);
	ck_assert_msg(strstr(log, want) != NULL, "stderr: %s", log);

	s_write(conf, "heartbeat = 500\nmax-pending = lots\n");
	ck_assert_int_eq(s_run(argv, out), 2);
	log = s_slurp(out);
	snprintf(want, sizeof want, "%s:2: max-pending takes a positive byte count", conf);
	ck_assert_msg(strstr(log, want) != NULL, "stderr: %s", log);

	s_write(conf, "heartbeat 500\n");
	ck_assert_int_eq(s_run(argv, out), 2);
	log = s_slurp(out);
	snprintf(want, sizeof want, "%s:1: expected `key = value`", conf);
	ck_assert_msg(strstr(log, want) != NULL, "stderr: %s", log);

	s_write(conf, "no-lvc = perhaps\n");
	ck_assert_int_eq(s_run(argv, out), 2);
	log = s_slurp(out);
	snprintf(want, sizeof want, "%s:1: 'perhaps' is not yes or no", conf);
	ck_assert_msg(strstr(log, want) != NULL, "stderr: %s", log);

	snprintf(conf, sizeof conf, "%s/none.conf", s_dir);
	ck_assert_int_eq(s_run(argv, out), 2);
}
END_TEST

START_TEST(programs_print_their_version)
{
	char out[4096], want[128];
	char *beastd[] = {BM_BEASTD_PATH, "--version", NULL};
	char *beast[] = {BM_BEAST_PATH, "--version", NULL};
	char *beast_sub[] = {BM_BEAST_PATH, "send", "--version", NULL};

	snprintf(out, sizeof out, "%s/out", s_dir);
	ck_assert_int_eq(s_run(beastd, out), 0);
	snprintf(want, sizeof want, "beastd beastmesh %s\n", bm_version());
	ck_assert_str_eq(s_slurp(out), want);
	ck_assert_int_eq(s_run(beast, out), 0);
	snprintf(want, sizeof want, "beast beastmesh %s\n", bm_version());
	ck_assert_str_eq(s_slurp(out), want);
	ck_assert_int_eq(s_run(beast_sub, out), 0);
	ck_assert_str_eq(s_slurp(out), want);
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("reader");

	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_setup, s_teardown);
	tcase_add_test(tc, reader_skips_comments_and_blank_lines_and_trims);
	tcase_add_test(tc, reader_reports_the_line_of_a_malformed_setting);
	suite_add_tcase(s, tc);

	tc = tcase_create("beastd");
	tcase_set_timeout(tc, 60);
	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_setup, s_teardown);
	tcase_add_test(tc, beastd_applies_a_config_file_and_the_command_line_overrides_it);
	tcase_add_test(tc, beastd_refuses_a_bad_key_or_value_naming_file_and_line);
	tcase_add_test(tc, programs_print_their_version);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(s_suite());
}

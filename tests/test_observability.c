/*
 * test_observability.c - beastd's HTTP endpoints against a real beastd
 * (--http on a free loopback port), real agents (`beast echo`) and the
 * real CLI (`beast request`, `beast proxy pause`): /metrics passes
 * promtool and its counters move with the traffic, /healthz turns 503 when
 * it should, bad requests get 4xx, and a bounded HTTP flood with garbage
 * never delays a ping by more than a few ms nor crashes beastd.
 *
 * Every loop here is bounded in count and in time; every process is
 * killed and reaped, every scratch dir removed by the fixtures.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "testutil.h"

#ifndef BM_BEAST_PATH
#error "BM_BEAST_PATH must name the built beast"
#endif

static char *s_dir;
static pid_t s_beastd;
static char s_addr[160];

static void
s_up(void)
{
	s_dir = tu_scratch_dir();
	ck_assert_ptr_nonnull(s_dir);
	s_beastd = tu_beastd_start_http(s_dir, 1000, NULL, s_addr, sizeof s_addr);
	ck_assert_int_gt(s_beastd, 0);
	{
		/* Outboxes and de-dup windows of the CLI's agents: in scratch. */
		char state[BM_PATH_MAX + 16];

		snprintf(state, sizeof state, "%s/state", s_dir);
		setenv("BEAST_STATE", state, 1);
	}
}

static void
s_down(void)
{
	tu_broker_down(&s_dir, &s_beastd);
}

/* Starts `beast --dir DIR args...` (NULL-terminated) with its stdout to
 * out (NULL: /dev/null); returns its pid. */
static pid_t
s_beast_to(const char *const *args, const char *out)
{
	const char *argv[16] = {"beast", "--dir", s_dir};
	pid_t pid;
	int n = 3;

	for (; *args && n < 15; args++) {
		argv[n++] = *args;
	}
	argv[n] = NULL;
	pid = fork();
	if (pid == 0) {
		int null = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (null >= 0) {
			dup2(null, STDOUT_FILENO);
		}
		execv(BM_BEAST_PATH, (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static pid_t
s_beast(const char *const *args)
{
	return s_beast_to(args, NULL);
}

/* Runs a beast command to its end (10 s at most) with its stdout in
 * *ret_out (malloc'd; NULL to drop it); returns its exit status. */
static int
s_beast_out(const char *const *args, char **ret_out)
{
	char path[BM_PATH_MAX + 16];
	int st;
	FILE *f;
	long n;

	snprintf(path, sizeof path, "%s/beast.out", s_dir);
	st = tu_wait(s_beast_to(args, path), 10000);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	*ret_out = calloc(1, (size_t)n + 1);
	ck_assert_int_eq(fread(*ret_out, 1, (size_t)n, f), n);
	fclose(f);
	return st;
}

/* Each needle is in text, in this order (NULL-terminated). */
static void
s_in_order(const char *text, const char *const *needles)
{
	const char *at = text;

	for (; *needles != NULL; needles++) {
		const char *p = strstr(at, *needles);

		ck_assert_msg(p != NULL, "'%s' missing (or out of order) in:\n%s", *needles, text);
		at = p + strlen(*needles);
	}
}

/* Runs a beast command to its end (10 s at most); returns its status. */
static int
s_beast_run(const char *const *args)
{
	return tu_wait(s_beast(args), 10000);
}

/* A counter's value in a /metrics text ("name value" or "name{..} value"). */
static double
s_metric(const char *text, const char *series)
{
	size_t n = strlen(series);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ') {
			return atof(p + n + 1);
		}
	}
	return -1;
}

static char *
s_get(const char *path, int want)
{
	char *body = NULL;
	int st = tu_http(s_addr, "GET", path, 5000, &body);

	ck_assert_msg(st == want, "GET %s: status %d, wanted %d", path, st, want);
	return body;
}

/* Polls /healthz until its status is want (bounded); returns the body. */
static char *
s_health_until(int want, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;
	char *body = NULL;
	int st = -1;

	while (bm_mono_ms() < deadline) {
		free(body);
		body = NULL;
		st = tu_http(s_addr, "GET", "/healthz", 2000, &body);
		if (st == want) {
			return body;
		}
		usleep(50000);
	}
	ck_abort_msg("/healthz stayed %d (wanted %d): %s", st, want, body ? body : "");
	return NULL;
}

static bool
s_promtool(const char *text)
{
	char path[BM_PATH_MAX + 32], cmd[2 * BM_PATH_MAX];
	FILE *f;
	int rc;

	if (system("command -v promtool >/dev/null 2>&1") != 0) {
		fprintf(stderr, "SKIP promtool check: promtool is not installed "
		                "(Debian package prometheus; .ci/bootstrap.sh installs it)\n");
		return true;
	}
	snprintf(path, sizeof path, "%s/metrics.txt", s_dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
	rc = system(cmd);
	return rc == 0;
}

START_TEST(metrics_pass_promtool_and_move_with_traffic)
{
	const char *echo[] = {"echo", "--caps", "obs", "e1", NULL};
	const char *req[] = {"request", "--as", "r1", "e1", "obs.ping", "hello", NULL};
	const char *send[] = {"send", "--as", "s1", "@obs", "hi", NULL};
	char *m0, *m1, *agents, *flows, *varz;
	pid_t echo_pid;

	m0 = s_get("/metrics", 200);
	ck_assert_msg(s_promtool(m0), "promtool rejected /metrics:\n%s", m0);
	ck_assert(strstr(m0, "# TYPE beastmesh_routed_total counter") != NULL);
	ck_assert(strstr(m0, "# TYPE beastmesh_send_ack_seconds histogram") != NULL);
	ck_assert(s_metric(m0, "beastmesh_routed_total") == 0);

	echo_pid = s_beast(echo);
	ck_assert_int_ge(tu_wait_agent(s_dir, "e1", true, 5000), 0);
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(s_beast_run(req), 0);
	}
	ck_assert_int_eq(s_beast_run(send), 0);
	usleep(600000); /* two snapshots at least */
	m1 = s_get("/metrics", 200);
	ck_assert_msg(s_promtool(m1), "promtool rejected /metrics:\n%s", m1);
	/* 5 requests + 5 replies + 1 send. */
	ck_assert_msg(s_metric(m1, "beastmesh_routed_total") >= 11, "%s", m1);
	ck_assert(s_metric(m1, "beastmesh_acked_total") >= 11);
	ck_assert(s_metric(m1, "beastmesh_send_ack_seconds_count") >= 6);
	ck_assert(s_metric(m1, "beastmesh_send_ack_seconds_bucket{le=\"+Inf\"}") ==
	          s_metric(m1, "beastmesh_send_ack_seconds_count"));
	ck_assert(s_metric(m1, "beastmesh_agent_delivered_total{agent=\"e1\"}") >= 6);
	ck_assert(s_metric(m1, "beastmesh_agent_inflight{agent=\"e1\"}") == 0);
	ck_assert(s_metric(m1, "beastmesh_nacked_total{reason=\"noagent\"}") == 0);

	/* A send to nobody moves the NACK counter by its reason. */
	{
		const char *none[] = {"send", "--as", "s2", "--attempts", "1", "--timeout", "2000",
		                      "nobody", "x", NULL};

		(void)s_beast_run(none);
		usleep(600000);
		free(m1);
		m1 = s_get("/metrics", 200);
		ck_assert_msg(s_metric(m1, "beastmesh_nacked_total{reason=\"noagent\"}") >= 1, "%s",
		              m1);
	}
	agents = s_get("/agents", 200);
	ck_assert_msg(strstr(agents, "\"name\":\"e1\"") != NULL, "%s", agents);
	ck_assert(strstr(agents, "\"caps\":[\"obs\"]") != NULL);
	flows = s_get("/flows", 200);
	ck_assert_msg(strstr(flows, "{\"from\":\"r1\",\"to\":\"e1\",\"msgs\":5") != NULL, "%s", flows);
	ck_assert(strstr(flows, "{\"from\":\"e1\",\"to\":\"r1\",\"msgs\":5") != NULL);
	{
		/* A broadcast's topic shows in /topics (from the proxy's cache). */
		const char *pub[] = {"pub", "--as", "explorer", "tot/7/2", "west ridge", NULL};
		int64_t deadline = bm_mono_ms() + 3000;
		char *topics = NULL;

		ck_assert_int_eq(s_beast_run(pub), 0);
		ck_assert_int_eq(s_beast_run(pub), 0);
		while (bm_mono_ms() < deadline) {
			free(topics);
			topics = s_get("/topics", 200);
			if (strstr(topics, "{\"topic\":\"tot/7/2/\",\"msgs\":2,") != NULL) {
				break;
			}
			usleep(100000);
		}
		ck_assert_msg(strstr(topics, "{\"topic\":\"tot/7/2/\",\"msgs\":2,") != NULL, "%s",
		              topics);
		free(topics);
	}
	varz = s_get("/varz", 200);
	ck_assert(strstr(varz, "\"delivers\":") != NULL && strstr(varz, "\"bcast_in\":") != NULL);
	free(m0);
	free(m1);
	free(agents);
	free(flows);
	free(varz);
	tu_kill9(echo_pid);
}
END_TEST

START_TEST(an_agents_outbox_report_reaches_agents_and_metrics)
{
	bm_outbox_opts_t oo = {.sync = BM_JOURNAL_SYNC_NEVER, .base_ms = 10, .cap_ms = 40,
	                       .max_attempts = 3};
	bm_outbox_send_opts_t so = {.to = "nobody"};
	char state[BM_PATH_MAX + 16], *agents = NULL, *m;
	bm_client_t *c = tu_client(s_dir, "ob1", NULL, 100);
	bm_outbox_t *ob = NULL;
	int64_t deadline = bm_mono_ms() + 5000;

	ck_assert_ptr_nonnull(c);
	snprintf(state, sizeof state, "%s/ob1-outbox", s_dir);
	oo.dir = state;
	oo.client = c;
	ck_assert_int_eq(bm_outbox_open(&oo, &ob), 0);
	/* Two letters to nobody: NACKed, retried, dead after 3 attempts. */
	ck_assert_int_eq(bm_outbox_send(ob, &so, "a", 1, NULL), 0);
	ck_assert_int_eq(bm_outbox_send(ob, &so, "b", 1, NULL), 0);
	while (bm_mono_ms() < deadline) {
		bm_event_t ev = {0};

		if (bm_client_recv(c, 20, &ev) == 0) {
			(void)bm_outbox_handle(ob, &ev);
			bm_event_clear(&ev);
		}
		(void)bm_outbox_pump(ob);
		free(agents);
		agents = NULL;
		if (tu_http(s_addr, "GET", "/agents", 2000, &agents) == 200 &&
		    strstr(agents, "\"outbox_pending\":0,\"outbox_dead\":2,\"outbox_retries\":4") !=
		            NULL) {
			break;
		}
	}
	ck_assert_msg(agents && strstr(agents, "\"outbox_dead\":2"), "%s", agents ? agents : "");
	m = s_get("/metrics", 200);
	ck_assert_msg(s_metric(m, "beastmesh_agent_outbox_dead{agent=\"ob1\"}") == 2, "%s", m);
	ck_assert(s_metric(m, "beastmesh_agent_outbox_retries_total{agent=\"ob1\"}") == 4);
	ck_assert_msg(s_promtool(m), "promtool rejected /metrics:\n%s", m);
	free(m);
	free(agents);
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
}
END_TEST

START_TEST(healthz_turns_unhealthy_when_paused_or_socket_gone)
{
	const char *pause[] = {"proxy", "pause", NULL};
	const char *resume[] = {"proxy", "resume", NULL};
	char *b, path[BM_PATH_MAX + 16], moved[BM_PATH_MAX + 16];

	b = s_health_until(200, 3000);
	ck_assert(strstr(b, "\"status\":\"ok\"") != NULL);
	free(b);
	ck_assert_int_eq(s_beast_run(pause), 0);
	b = s_health_until(503, 3000);
	ck_assert_msg(strstr(b, "\"status\":\"unhealthy\"") && strstr(b, "proxy paused"), "%s", b);
	free(b);
	ck_assert_int_eq(s_beast_run(resume), 0);
	free(s_health_until(200, 3000));

	/* The mesh socket gone from the runtime dir: agents cannot reach us. */
	snprintf(path, sizeof path, "%s/mesh.sock", s_dir);
	snprintf(moved, sizeof moved, "%s/mesh.sock.away", s_dir);
	ck_assert_int_eq(rename(path, moved), 0);
	b = s_health_until(503, 3000);
	ck_assert_msg(strstr(b, "mesh socket missing") != NULL, "%s", b);
	free(b);
	ck_assert_int_eq(rename(moved, path), 0);
	free(s_health_until(200, 3000));

	/* The broker's loop stopped (SIGSTOP stops the HTTP thread too, so
	 * stop it, let the snapshot age, and look at it as it resumes:
	 * the first answer may come before the broker's next snapshot). */
	kill(s_beastd, SIGSTOP);
	usleep(2300000);
	kill(s_beastd, SIGCONT);
	free(s_health_until(200, 3000)); /* and it recovers */
}
END_TEST

START_TEST(bad_requests_get_4xx_and_non_loopback_is_refused)
{
	char *b = NULL;
	pid_t pid;

	ck_assert_int_eq(tu_http(s_addr, "POST", "/metrics", 3000, NULL), 405);
	ck_assert_int_eq(tu_http(s_addr, "DELETE", "/", 3000, NULL), 405);
	ck_assert_int_eq(tu_http(s_addr, "GET", "/nope", 3000, NULL), 404);
	ck_assert_int_eq(tu_http(s_addr, "GET", "/metrics/../etc", 3000, NULL), 404);
	ck_assert_int_eq(tu_http(s_addr, "GET", "/", 3000, &b), 200);
	ck_assert(strstr(b, "<html") != NULL);
	free(b);

	/* A non-loopback address: exit 2 with a clear error. */
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDERR_FILENO);
		execl(BM_BEASTD_PATH, "beastd", "--dir", s_dir, "--http", "0.0.0.0:0", (char *)NULL);
		_exit(127);
	}
	ck_assert_int_eq(tu_wait(pid, 5000), 2);
}
END_TEST

START_TEST(unix_socket_serves_the_endpoints)
{
	char *dir = tu_scratch_dir(), addr[BM_PATH_MAX + 16], bound[160], *b = NULL;
	pid_t pid;

	ck_assert_ptr_nonnull(dir);
	snprintf(addr, sizeof addr, "unix:%s/http.sock", dir);
	pid = tu_beastd_start_http(dir, 1000, addr, bound, sizeof bound);
	ck_assert_int_gt(pid, 0);
	ck_assert_str_eq(bound, addr);
	ck_assert_int_eq(tu_http(bound, "GET", "/healthz", 3000, &b), 200);
	free(b);
	ck_assert_int_eq(tu_term(pid, 5000), 0);
	snprintf(addr, sizeof addr, "%s/http.sock", dir);
	ck_assert_int_ne(access(addr, F_OK), 0); /* removed at exit */
	tu_rmrf(&dir);
}
END_TEST

/* ---- the flood ---- */

#define S_FLOODERS 4
#define S_FLOOD_REQUESTS 500 /* per flooder: 2,000 in all */
#define S_FLOOD_GARBAGE 50   /* per flooder: 200 garbage requests in all */

/* Writes raw bytes to a fresh connection, reads a little, closes. */
static void
s_garbage(const char *addr, const void *data, size_t len)
{
	struct sockaddr_in in = {.sin_family = AF_INET};
	char host[64], sink[512];
	const char *colon = strrchr(addr, ':');
	int fd;
	struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};

	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	in.sin_port = htons((uint16_t)atoi(colon + 1));
	inet_pton(AF_INET, host, &in.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&in, sizeof in) == 0) {
		(void)!write(fd, data, len);
		(void)!read(fd, sink, sizeof sink);
	}
	close(fd);
}

static int
s_flooder(void *arg)
{
	static const char *const paths[] = {"/metrics", "/healthz", "/varz", "/agents", "/flows",
	                                    "/", "/nope"};
	static char big[40000];
	unsigned seed = (unsigned)(uintptr_t)arg;
	int64_t deadline = bm_mono_ms() + 60000;
	int fails = 0;

	memset(big, 'A', sizeof big);
	memcpy(big, "GET /metrics HTTP/1.1\r\nX-Big: ", 30);
	for (int i = 0; i < S_FLOOD_REQUESTS && bm_mono_ms() < deadline; i++) {
		if (tu_http(s_addr, "GET", paths[i % 7], 5000, NULL) < 0) {
			fails++;
		}
		if (i % (S_FLOOD_REQUESTS / S_FLOOD_GARBAGE) == 0) {
			char junk[256];

			for (size_t k = 0; k < sizeof junk; k++) {
				junk[k] = (char)rand_r(&seed);
			}
			switch ((i / 10) % 4) {
			case 0:
				s_garbage(s_addr, junk, sizeof junk);
				break;
			case 1:
				s_garbage(s_addr, big, sizeof big); /* headers over the bound */
				break;
			case 2:
				s_garbage(s_addr, "GET /metrics HTTP/1.1\r\nHost:", 28); /* half */
				break;
			default:
				s_garbage(s_addr, "POST /metrics HTTP/1.1\r\nContent-Length: 9999999\r\n\r\nxx",
				          53);
				break;
			}
		}
	}
	/* A request may be refused while the connection limit is reached;
	 * most must be served. */
	return fails > S_FLOOD_REQUESTS / 10 ? 1 : 0;
}

static int
s_cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* Pings until the flooders are done (or 5,000 pings / 60 s); returns the
 * count and writes the round trips (µs) to v. */
static size_t
s_ping_while(bm_client_t *c, const pid_t *kids, int nkids, int64_t *v, size_t max,
             int *ret_status)
{
	int64_t deadline = bm_mono_ms() + 60000;
	size_t n = 0;
	int left = nkids;

	*ret_status = 0;
	while (n < max && left > 0 && bm_mono_ms() < deadline) {
		int64_t us = bm_client_ping(c, 2000);

		ck_assert_msg(us >= 0, "ping failed during the flood: %s", bm_strerror((int)us));
		v[n++] = us;
		left = 0;
		for (int i = 0; i < nkids; i++) {
			int st;

			if (kids[i] > 0 && waitpid(kids[i], &st, WNOHANG) == kids[i]) {
				*ret_status |= WIFEXITED(st) ? WEXITSTATUS(st) : 1;
				((pid_t *)kids)[i] = 0;
			}
			left += kids[i] > 0;
		}
		usleep(2000);
	}
	return n;
}

START_TEST(http_flood_never_delays_a_ping)
{
	tu_held_t held[S_FLOODERS];
	pid_t kids[S_FLOODERS];
	int64_t base[200], *v = calloc(5000, sizeof *v);
	bm_client_t *c;
	size_t n;
	int status;
	char *b;

	/* Fork before this process has threads (testutil.h). */
	for (int i = 0; i < S_FLOODERS; i++) {
		held[i] = tu_fork_held(s_flooder, (void *)(uintptr_t)(i + 1));
	}
	c = tu_client(s_dir, NULL, NULL, 1000);
	ck_assert_ptr_nonnull(c);
	for (int i = 0; i < 200; i++) {
		base[i] = bm_client_ping(c, 2000);
		ck_assert_int_ge(base[i], 0);
	}
	qsort(base, 200, sizeof base[0], s_cmp64);
	for (int i = 0; i < S_FLOODERS; i++) {
		kids[i] = tu_release(&held[i]);
	}
	n = s_ping_while(c, kids, S_FLOODERS, v, 5000, &status);
	for (int i = 0; i < S_FLOODERS; i++) {
		if (kids[i] > 0) {
			tu_kill9(kids[i]);
		}
	}
	qsort(v, n, sizeof v[0], s_cmp64);
	fprintf(stderr,
	        "ping round trip before the flood: p50 %lld us, p99 %lld us; during it (%zu "
	        "pings): p50 %lld us, p99 %lld us, max %lld us\n",
	        (long long)base[100], (long long)base[197], n, (long long)v[n / 2],
	        (long long)v[n * 99 / 100], (long long)v[n - 1]);
	ck_assert_msg(n >= 20, "only %zu pings during the flood", n);
	ck_assert_msg(status == 0, "a flooder had most of its requests refused");
	ck_assert_msg(v[n * 99 / 100] < 50000, "ping p99 %lld us during the flood",
	              (long long)v[n * 99 / 100]);
	bm_client_destroy(&c);
	/* beastd is alive and healthy after it. */
	ck_assert_int_eq(waitpid(s_beastd, &status, WNOHANG), 0);
	b = s_health_until(200, 3000);
	free(b);
	free(v);
}
END_TEST

/* ---- beast top ---- */

START_TEST(top_prints_plain_refreshes_and_stops_after_count)
{
	const char *echo[] = {"echo", "--caps", "plan", "planner", NULL};
	const char *req[] = {"request", "--as", "scout", "@plan", "plan.request", "go", NULL};
	const char *top[] = {"top", "--count", "3", "--interval", "300", NULL};
	const char *want[] = {"beast top", "mesh       routed", "broadcast  in", "blobs",
	                      "AGENT", "planner", "online", "plan", "TOPIC (tap)", NULL};
	pid_t e = s_beast(echo), t;
	char *out = NULL, path[BM_PATH_MAX + 16];
	int refreshes = 0;
	FILE *f;
	long n;

	ck_assert_int_ge(tu_wait_agent(s_dir, "planner", true, 5000), 0);
	snprintf(path, sizeof path, "%s/top.out", s_dir);
	t = s_beast_to(top, path);
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(s_beast_run(req), 0);
	}
	ck_assert_int_eq(tu_wait(t, 10000), 0);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	out = calloc(1, (size_t)n + 1);
	ck_assert_int_eq(fread(out, 1, (size_t)n, f), n);
	fclose(f);
	s_in_order(out, want);
	/* Not a terminal: plain lines, no escape sequences; one block per
	 * refresh. */
	ck_assert(strchr(out, '\033') == NULL);
	for (const char *p = out; (p = strstr(p, "beast top  ")) != NULL; p++) {
		refreshes++;
	}
	ck_assert_int_eq(refreshes, 3);
	free(out);
	tu_kill9(e);
}
END_TEST

/* ---- beast trace ---- */

START_TEST(trace_shows_an_acked_messages_timeline)
{
	const char *listen[] = {"listen", "mapper", NULL};
	const char *send[] = {"send", "--as", "scout", "--trace", "mapper", "tile 7", NULL};
	const char *want[] = {"from scout to mapper", "stored in scout's outbox: to mapper",
	                      "send 1 routed by beastd: delivered to mapper's connection",
	                      "ACK from mapper relayed to scout",
	                      "retired: ACK recorded in scout's outbox", NULL};
	pid_t l = s_beast(listen);
	char *out = NULL;

	ck_assert_int_ge(tu_wait_agent(s_dir, "mapper", true, 5000), 0);
	ck_assert_int_eq(s_beast_out(send, &out), 0);
	s_in_order(out, want);
	ck_assert(strstr(out, "NACKed") == NULL);
	free(out);
	tu_kill9(l);
}
END_TEST

START_TEST(trace_shows_a_retried_messages_timeline)
{
	const char *send[] = {"send", "--as", "scout2", "--no-wait", "late", "hello", NULL};
	const char *listen[] = {"listen", "late", NULL};
	const char *flush[] = {"outbox", "--as", "scout2", "flush", "--timeout", "5000", NULL};
	const char *want[] = {"stored in scout2's outbox: to late",
	                      "send 1 to late NACKed by beastd: no agent",
	                      "send 2 routed by beastd: delivered to late's connection",
	                      "ACK from late relayed to scout2",
	                      "handled by late (its de-dup window holds the id)",
	                      "retired: ACK recorded in scout2's outbox", NULL};
	char *out = NULL, *id;
	pid_t l;

	/* Stored while late is offline: the first send is NACKed. */
	ck_assert_int_eq(s_beast_out(send, &out), 0);
	id = strndup(out, BM_ID_HEX_LEN);
	free(out);
	ck_assert_int_ge(tu_wait_agent(s_dir, "scout2", false, 5000), 0);
	l = s_beast(listen);
	ck_assert_int_ge(tu_wait_agent(s_dir, "late", true, 5000), 0);
	ck_assert_int_eq(s_beast_out(flush, &out), 0);
	free(out);
	/* Stopped cleanly, the receiver's de-dup window can be read. */
	ck_assert_int_eq(tu_term(l, 5000), 0);
	{
		const char *trace[] = {"trace", id, NULL};

		ck_assert_int_eq(s_beast_out(trace, &out), 0);
	}
	s_in_order(out, want);
	free(out);
	{
		const char *trace[] = {"trace", "--json", id, NULL};

		ck_assert_int_eq(s_beast_out(trace, &out), 0);
		ck_assert_msg(strstr(out, "\"event\":\"nacked\"") && strstr(out, "\"event\":\"routed\"") &&
		                      strstr(out, "\"event\":\"handled\"") &&
		                      strstr(out, "\"event\":\"retired\""),
		              "%s", out);
	}
	free(out);
	free(id);
}
END_TEST

START_TEST(trace_shows_a_dead_letters_timeline)
{
	const char *send[] = {"send", "--as", "scout3", "--attempts", "2", "--trace", "nobody", "x",
	                      NULL};
	const char *want[] = {"stored in scout3's outbox: to nobody, type msg, 2 attempts at most",
	                      "send 1 to nobody NACKed by beastd: no agent",
	                      "send 2 to nobody NACKed by beastd: no agent",
	                      "DEAD in scout3's outbox after 2 attempts", NULL};
	char *out = NULL;

	ck_assert_int_eq(s_beast_out(send, &out), 1);
	s_in_order(out, want);
	ck_assert(strstr(out, "routed") == NULL && strstr(out, "retired") == NULL);
	free(out);
}
END_TEST

/* Receives the next message on c within 3 s (ACKing it). */
static bm_msg_t *
s_next_msg(bm_client_t *c)
{
	int64_t deadline = bm_mono_ms() + 3000;

	while (bm_mono_ms() < deadline) {
		bm_event_t ev = {0};

		if (bm_client_recv(c, 100, &ev) == 0 && ev.kind == BM_EV_MESSAGE) {
			bm_msg_t *m = ev.msg;

			ev.msg = NULL;
			(void)bm_client_ack(c, m);
			bm_event_clear(&ev);
			return m;
		}
		bm_event_clear(&ev);
	}
	return NULL;
}

START_TEST(traceparent_crosses_beastd_untouched_and_rides_the_reply)
{
	static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	static const char ts[] = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
	bm_client_t *a = tu_client(s_dir, "a-rather-long-sender-name", NULL, 1000);
	bm_client_t *b = tu_client(s_dir, "b", NULL, 1000);
	bm_send_opts_t so = {.to = "b", .traceparent = tp, .tracestate = ts};
	static char big[10000];
	bm_msg_t *m;

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	/* Inline (small) and in a frame of its own (big); a sender name longer
	 * than the address, so beastd re-encodes the header. */
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(bm_client_send(a, &so, big, i ? sizeof big : 10, NULL), 0);
		m = s_next_msg(b);
		ck_assert_ptr_nonnull(m);
		ck_assert_str_eq(m->traceparent, tp);
		ck_assert_ptr_nonnull(m->tracestate);
		ck_assert_str_eq(m->tracestate, ts);
		ck_assert_uint_eq(bm_msg_size(m), i ? sizeof big : 10);
		if (i == 0) {
			ck_assert_int_eq(bm_client_reply(b, m, "re", "ok", 2), 0);
		}
		bm_msg_destroy(&m);
		if (i == 0) {
			m = s_next_msg(a);
			ck_assert_ptr_nonnull(m);
			ck_assert_str_eq(m->traceparent, tp);
			bm_msg_destroy(&m);
		}
	}
	/* Without one, none arrives. */
	so.traceparent = so.tracestate = NULL;
	ck_assert_int_eq(bm_client_send(a, &so, "x", 1, NULL), 0);
	m = s_next_msg(b);
	ck_assert_ptr_nonnull(m);
	ck_assert_str_eq(m->traceparent, "");
	ck_assert_ptr_null(m->tracestate);
	bm_msg_destroy(&m);
	bm_client_destroy(&a);
	bm_client_destroy(&b);
}
END_TEST

START_TEST(the_outbox_stores_the_trace_context_and_resends_it)
{
	static const char tp[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
	const char *send[] = {"send", "--as", "tp1", "--no-wait", "--traceparent", tp,
	                      "--tracestate", "congo=t61rcWkgMzE", "late2", "hello", NULL};
	const char *listen[] = {"listen", "--json", "--count", "1", "late2", NULL};
	const char *flush[] = {"outbox", "--as", "tp1", "flush", "--timeout", "5000", NULL};
	char path[BM_PATH_MAX + 16], *out = NULL, *id, want[128];
	pid_t l;
	FILE *f;
	long n;

	/* Stored while late2 is offline; the flush is another process that
	 * reads it back from the journal. */
	ck_assert_int_eq(s_beast_out(send, &out), 0);
	id = strndup(out, BM_ID_HEX_LEN);
	free(out);
	ck_assert_int_ge(tu_wait_agent(s_dir, "tp1", false, 5000), 0);
	snprintf(path, sizeof path, "%s/listen.out", s_dir);
	l = s_beast_to(listen, path);
	ck_assert_int_ge(tu_wait_agent(s_dir, "late2", true, 5000), 0);
	ck_assert_int_eq(s_beast_out(flush, &out), 0);
	free(out);
	ck_assert_int_eq(tu_wait(l, 5000), 0);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	out = calloc(1, (size_t)n + 1);
	ck_assert_int_eq(fread(out, 1, (size_t)n, f), n);
	fclose(f);
	snprintf(want, sizeof want, "\"traceparent\":\"%s\"", tp);
	ck_assert_msg(strstr(out, want) != NULL, "%s", out);
	ck_assert(strstr(out, "\"tracestate\":\"congo=t61rcWkgMzE\"") != NULL);
	free(out);
	{
		const char *trace[] = {"trace", id, NULL};

		ck_assert_int_eq(s_beast_out(trace, &out), 0);
		ck_assert_msg(strstr(out, tp) != NULL, "%s", out);
		free(out);
	}
	free(id);
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("observability");
	TCase *t = tcase_create("http");

	tcase_add_unchecked_fixture(t, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(t, s_up, s_down);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, metrics_pass_promtool_and_move_with_traffic);
	tcase_add_test(t, an_agents_outbox_report_reaches_agents_and_metrics);
	tcase_add_test(t, healthz_turns_unhealthy_when_paused_or_socket_gone);
	tcase_add_test(t, bad_requests_get_4xx_and_non_loopback_is_refused);
	tcase_add_test(t, unix_socket_serves_the_endpoints);
	tcase_add_test(t, top_prints_plain_refreshes_and_stops_after_count);
	suite_add_tcase(s, t);

	t = tcase_create("trace");
	tcase_add_unchecked_fixture(t, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(t, s_up, s_down);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, trace_shows_an_acked_messages_timeline);
	tcase_add_test(t, trace_shows_a_retried_messages_timeline);
	tcase_add_test(t, trace_shows_a_dead_letters_timeline);
	tcase_add_test(t, traceparent_crosses_beastd_untouched_and_rides_the_reply);
	tcase_add_test(t, the_outbox_stores_the_trace_context_and_resends_it);
	suite_add_tcase(s, t);

	t = tcase_create("flood");
	tcase_add_unchecked_fixture(t, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(t, s_up, s_down);
	tcase_set_timeout(t, 120);
	tcase_add_test(t, http_flood_never_delays_a_ping);
	suite_add_tcase(s, t);
	return s;
}

int
main(void)
{
	return tu_run_suite(s_suite());
}

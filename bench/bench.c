/*
 * beast-bench - the transport shootout as one tool (first part).  Each row
 * is (scenario, transport, payload, placement): ping-pong latency and
 * streaming throughput between two processes pinned per placement, over raw
 * libzmq (PAIR on ipc and tcp loopback) and a plain Unix socket.  Rows go to
 * a terminal table and to results.csv and results.json in --out DIR.
 *
 * Every loop is bounded by a count and by a deadline (CLOCK_MONOTONIC); the
 * child peer is stopped by its own pid on every path.
 */
#include <errno.h>
#include <fnmatch.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define S_MAX_ROWS 256
#define S_DEADLINE_S 8.0 /* per measurement, hard bound */
#define S_TP_BYTES_CAP (256u << 20) /* bytes streamed per throughput row */

typedef struct {
	char scenario[24];
	char transport[32];
	size_t payload;
	char placement[12];
	char status[96];
	double p50_us, p90_us, p99_us, p999_us, max_us;
	double msgs_per_s, mb_per_s, cpu_s;
	long rss_kb;
	long lost;
} s_row_t;

static s_row_t s_rows[S_MAX_ROWS];
static int s_nrows;
static int s_tty;
static char s_sockdir[64];
static volatile pid_t s_child = -1;

static double
s_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
s_pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	(void)sched_setaffinity(0, sizeof set, &set);
}

static int
s_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
s_pct(const double *sorted, int n, double p)
{
	if (n <= 0)
		return 0;
	return sorted[(int)(p * (n - 1) + 0.5)];
}

/* ---- one end of a transport: zmq PAIR or a framed Unix stream socket ---- */

typedef struct {
	int uds;
	void *ctx, *sock;
	int fd;
} s_end_t;

static int
s_full_io(int fd, void *buf, size_t len, int wr)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = wr ? write(fd, p, len) : read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int
s_send(s_end_t *e, void *buf, size_t len)
{
	if (!e->uds)
		return zmq_send(e->sock, buf, len, 0) == (int)len ? 0 : -1;
	uint32_t hdr = (uint32_t)len;
	if (s_full_io(e->fd, &hdr, sizeof hdr, 1) != 0)
		return -1;
	return s_full_io(e->fd, buf, len, 1);
}

/* Receives one message into buf (cap bytes); returns its length or -1. */
static long
s_recv(s_end_t *e, void *buf, size_t cap)
{
	if (!e->uds) {
		int n = zmq_recv(e->sock, buf, cap, 0);
		return n < 0 ? -1 : n;
	}
	uint32_t hdr;
	if (s_full_io(e->fd, &hdr, sizeof hdr, 0) != 0 || hdr > cap)
		return -1;
	return s_full_io(e->fd, buf, hdr, 0) == 0 ? (long)hdr : -1;
}

static void
s_close(s_end_t *e)
{
	if (e->uds) {
		if (e->fd >= 0)
			close(e->fd);
	} else {
		if (e->sock)
			zmq_close(e->sock);
		if (e->ctx)
			zmq_ctx_term(e->ctx);
	}
}

static void
s_zmq_setup(s_end_t *e)
{
	e->ctx = zmq_ctx_new();
	e->sock = zmq_socket(e->ctx, ZMQ_PAIR);
	int zero = 0, tmo = (int)(S_DEADLINE_S * 1000);
	zmq_setsockopt(e->sock, ZMQ_SNDHWM, &zero, sizeof zero);
	zmq_setsockopt(e->sock, ZMQ_RCVHWM, &zero, sizeof zero);
	zmq_setsockopt(e->sock, ZMQ_LINGER, &zero, sizeof zero);
	zmq_setsockopt(e->sock, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
	zmq_setsockopt(e->sock, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
}

/* The child binds and reports its endpoint through the pipe. */
static int
s_bind(s_end_t *e, const char *transport, char *ep, size_t eplen)
{
	memset(e, 0, sizeof *e);
	e->fd = -1;
	if (strcmp(transport, "uds") == 0) {
		e->uds = 1;
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		snprintf(a.sun_path, sizeof a.sun_path, "%s/uds-%d", s_sockdir, (int)getpid());
		unlink(a.sun_path);
		int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0)
			return -1;
		snprintf(ep, eplen, "%s", a.sun_path);
		return lfd; /* accepted later */
	}
	s_zmq_setup(e);
	if (strcmp(transport, "zmq-pair-tcp") == 0)
		snprintf(ep, eplen, "tcp://127.0.0.1:*");
	else
		snprintf(ep, eplen, "ipc://%s/zmq-%d", s_sockdir, (int)getpid());
	if (zmq_bind(e->sock, ep) != 0)
		return -1;
	size_t len = eplen;
	zmq_getsockopt(e->sock, ZMQ_LAST_ENDPOINT, ep, &len);
	return 0;
}

static int
s_connect(s_end_t *e, const char *transport, const char *ep)
{
	memset(e, 0, sizeof *e);
	e->fd = -1;
	if (strcmp(transport, "uds") == 0) {
		e->uds = 1;
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		if (strlen(ep) >= sizeof a.sun_path)
			return -1;
		memcpy(a.sun_path, ep, strlen(ep) + 1);
		e->fd = socket(AF_UNIX, SOCK_STREAM, 0);
		return e->fd < 0 ? -1 : connect(e->fd, (struct sockaddr *)&a, sizeof a);
	}
	s_zmq_setup(e);
	return zmq_connect(e->sock, ep);
}

/* ---- the peer process: echoes (latency) or counts (throughput) ---- */

static void
s_child_main(const char *scenario, const char *transport, size_t payload, int cpu, int wfd)
{
	s_pin(cpu);
	s_end_t e;
	char ep[256];
	int lfd = s_bind(&e, transport, ep, sizeof ep);
	if (lfd < 0)
		ep[0] = '\0';
	ssize_t wn = write(wfd, ep, sizeof ep);
	close(wfd);
	if (lfd < 0 || wn != (ssize_t)sizeof ep)
		_exit(1);
	if (e.uds) {
		struct timeval tv = {.tv_sec = (time_t)S_DEADLINE_S};
		setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		e.fd = accept(lfd, NULL, NULL);
		close(lfd);
		unlink(ep);
		if (e.fd < 0)
			_exit(1);
		setsockopt(e.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	}
	char *buf = malloc(payload + 16);
	if (!buf)
		_exit(1);
	int rc = 0;
	double end = s_now() + 3 * S_DEADLINE_S;
	if (strcmp(scenario, "latency") == 0) {
		for (;;) {
			long n = s_recv(&e, buf, payload + 16);
			if (n <= 0 || s_now() > end)
				break; /* a zero-length message ends the run */
			if (s_send(&e, buf, (size_t)n) != 0) {
				rc = 1;
				break;
			}
		}
	} else {
		uint64_t got = 0;
		for (;;) {
			long n = s_recv(&e, buf, payload + 16);
			if (n < 0 || s_now() > end) {
				rc = 1;
				break;
			}
			if (n == 0)
				break;
			got++;
		}
		if (s_send(&e, &got, sizeof got) != 0)
			rc = 1;
	}
	free(buf);
	s_close(&e);
	_exit(rc);
}

/* ---- one measured row ---- */

static int s_quick;

static void
s_fail(s_row_t *r, const char *why)
{
	snprintf(r->status, sizeof r->status, "failed: %s", why);
}

static void
s_measure(s_row_t *r)
{
	int cross = strcmp(r->placement, "cross-cpu") == 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (cross && ncpu < 2) {
		s_fail(r, "one CPU online");
		return;
	}
	int pfd[2];
	if (pipe(pfd) != 0) {
		s_fail(r, "pipe");
		return;
	}
	struct rusage ru0, ruc;
	getrusage(RUSAGE_SELF, &ru0);
	pid_t pid = fork();
	if (pid < 0) {
		s_fail(r, "fork");
		close(pfd[0]);
		close(pfd[1]);
		return;
	}
	if (pid == 0) {
		close(pfd[0]);
		s_child_main(r->scenario, r->transport, r->payload, cross ? 1 : 0, pfd[1]);
	}
	s_child = pid;
	close(pfd[1]);
	cpu_set_t saved;
	sched_getaffinity(0, sizeof saved, &saved);
	s_pin(0);
	char ep[256];
	ssize_t rn = read(pfd[0], ep, sizeof ep);
	close(pfd[0]);
	s_end_t e = {.fd = -1};
	char *buf = malloc(r->payload + 16);
	double *lat = NULL;
	int conn = rn == (ssize_t)sizeof ep && ep[0] && buf && s_connect(&e, r->transport, ep) == 0;
	if (!conn) {
		s_fail(r, "peer did not start");
	} else if (strcmp(r->scenario, "latency") == 0) {
		int warm = s_quick ? 200 : 1000;
		int iters = r->payload >= (1u << 20) ? 200 : (s_quick ? 3000 : 20000);
		lat = calloc((size_t)iters, sizeof *lat);
		memset(buf, 'x', r->payload);
		int n = 0;
		double end = s_now() + S_DEADLINE_S;
		for (int i = 0; i < warm + iters && s_now() < end; i++) {
			double t0 = s_now();
			if (s_send(&e, buf, r->payload) != 0 || s_recv(&e, buf, r->payload + 16) != (long)r->payload) {
				s_fail(r, "echo lost or timed out");
				break;
			}
			if (i >= warm && lat)
				lat[n++] = (s_now() - t0) * 1e6 / 2; /* one way: half the round trip */
		}
		if (n > 0 && !r->status[0]) {
			qsort(lat, (size_t)n, sizeof *lat, s_cmp_double);
			r->p50_us = s_pct(lat, n, 0.50);
			r->p90_us = s_pct(lat, n, 0.90);
			r->p99_us = s_pct(lat, n, 0.99);
			r->p999_us = s_pct(lat, n, 0.999);
			r->max_us = lat[n - 1];
			double sum = 0;
			for (int i = 0; i < n; i++)
				sum += 2 * lat[i];
			r->msgs_per_s = sum > 0 ? n / (sum / 1e6) : 0;
			r->mb_per_s = r->msgs_per_s * (double)r->payload / 1e6;
		} else if (!r->status[0]) {
			s_fail(r, "no sample in time");
		}
		s_send(&e, buf, 0);
	} else {
		uint64_t count = S_TP_BYTES_CAP / (r->payload ? r->payload : 1);
		uint64_t cap = s_quick ? 100000 : 1000000;
		if (count > cap)
			count = cap;
		if (count < 4)
			count = 4;
		memset(buf, 'x', r->payload);
		uint64_t sent = 0;
		double t0 = s_now(), end = t0 + S_DEADLINE_S;
		while (sent < count && s_now() < end && s_send(&e, buf, r->payload) == 0)
			sent++;
		uint64_t got = 0;
		if (s_send(&e, buf, 0) != 0 || s_recv(&e, &got, sizeof got) != (long)sizeof got) {
			s_fail(r, "no count back from the receiver");
		} else {
			double dt = s_now() - t0;
			r->msgs_per_s = (double)got / dt;
			r->mb_per_s = r->msgs_per_s * (double)r->payload / 1e6;
			r->lost = (long)(sent - got);
		}
	}
	s_close(&e);
	free(buf);
	free(lat);
	int st = 0;
	double wend = s_now() + S_DEADLINE_S;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (s_now() > wend) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			if (!r->status[0])
				s_fail(r, "peer hung");
			break;
		}
		usleep(1000);
	}
	s_child = -1;
	if (conn && strncmp(ep, "ipc://", 6) == 0)
		unlink(ep + 6); /* the peer's socket file */
	sched_setaffinity(0, sizeof saved, &saved);
	struct rusage ru1;
	getrusage(RUSAGE_SELF, &ru1);
	getrusage(RUSAGE_CHILDREN, &ruc);
	r->cpu_s = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
	           (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
	r->rss_kb = ru1.ru_maxrss > ruc.ru_maxrss ? ru1.ru_maxrss : ruc.ru_maxrss;
	if (!r->status[0] && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))
		s_fail(r, "peer exited with an error");
	if (!r->status[0])
		snprintf(r->status, sizeof r->status, "ok");
}

/* ---- output ---- */

static void
s_progress(int i, int n, const s_row_t *r)
{
	if (s_tty)
		fprintf(stderr, "\r\033[K[%d/%d] %s %s %zu B %s", i, n, r->scenario, r->transport, r->payload, r->placement);
	else
		fprintf(stderr, "[%d/%d] %s %s %zu B %s\n", i, n, r->scenario, r->transport, r->payload, r->placement);
}

static const s_row_t *
s_find(const char *scenario, const char *transport, size_t payload, const char *placement)
{
	for (int i = 0; i < s_nrows; i++) {
		const s_row_t *r = &s_rows[i];
		if (!strcmp(r->scenario, scenario) && !strcmp(r->transport, transport) && r->payload == payload &&
		    !strcmp(r->placement, placement) && !strcmp(r->status, "ok"))
			return r;
	}
	return NULL;
}

static void
s_table(FILE *f, const char *baseline)
{
	fprintf(f, "%-11s %-14s %10s %-9s %9s %9s %9s %12s %10s %7s  %s\n", "scenario", "transport", "payload",
	        "placement", "p50_us", "p99_us", "max_us", "msgs/s", "MB/s", "ratio", "status");
	for (int i = 0; i < s_nrows; i++) {
		const s_row_t *r = &s_rows[i];
		const s_row_t *b = s_find(r->scenario, baseline, r->payload, r->placement);
		char ratio[16] = "-";
		if (b && !strcmp(r->status, "ok")) {
			if (!strcmp(r->scenario, "latency") && b->p50_us > 0)
				snprintf(ratio, sizeof ratio, "%.2fx", r->p50_us / b->p50_us);
			else if (b->msgs_per_s > 0)
				snprintf(ratio, sizeof ratio, "%.2fx", r->msgs_per_s / b->msgs_per_s);
		}
		fprintf(f, "%-11s %-14s %10zu %-9s %9.1f %9.1f %9.1f %12.0f %10.1f %7s  %s\n", r->scenario, r->transport,
		        r->payload, r->placement, r->p50_us, r->p99_us, r->max_us, r->msgs_per_s, r->mb_per_s, ratio,
		        r->status);
	}
	fprintf(f, "latency: one way (half the round trip), p50 ratio vs %s (lower is better); "
	           "throughput: msgs/s ratio vs %s (higher is better)\n", baseline, baseline);
}

static void
s_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if ((unsigned char)*s >= 0x20)
			fputc(*s, f);
	}
	fputc('"', f);
}

static int
s_write_json(const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f, "[\n");
	for (int i = 0; i < s_nrows; i++) {
		const s_row_t *r = &s_rows[i];
		fprintf(f, "  {\"scenario\": ");
		s_json_str(f, r->scenario);
		fprintf(f, ", \"transport\": ");
		s_json_str(f, r->transport);
		fprintf(f, ", \"payload\": %zu, \"placement\": ", r->payload);
		s_json_str(f, r->placement);
		fprintf(f, ", \"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, \"max_us\": %.3f, "
		           "\"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, \"cpu_s\": %.3f, \"rss_kb\": %ld, \"lost\": %ld, "
		           "\"status\": ",
		        r->p50_us, r->p90_us, r->p99_us, r->p999_us, r->max_us, r->msgs_per_s, r->mb_per_s, r->cpu_s,
		        r->rss_kb, r->lost);
		s_json_str(f, r->status);
		fprintf(f, "}%s\n", i + 1 < s_nrows ? "," : "");
	}
	fprintf(f, "]\n");
	return fclose(f);
}

static int
s_write_csv(const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f, "scenario,transport,payload,placement,p50_us,p90_us,p99_us,p999_us,max_us,msgs_per_s,mb_per_s,"
	           "cpu_s,rss_kb,lost,status\n");
	for (int i = 0; i < s_nrows; i++) {
		const s_row_t *r = &s_rows[i];
		fprintf(f, "%s,%s,%zu,%s,%.3f,%.3f,%.3f,%.3f,%.3f,%.1f,%.3f,%.3f,%ld,%ld,\"%s\"\n", r->scenario,
		        r->transport, r->payload, r->placement, r->p50_us, r->p90_us, r->p99_us, r->p999_us, r->max_us,
		        r->msgs_per_s, r->mb_per_s, r->cpu_s, r->rss_kb, r->lost, r->status);
	}
	return fclose(f);
}

/* ---- main: the matrix ---- */

static void
s_on_signal(int sig)
{
	if (s_child > 0)
		kill(s_child, SIGKILL);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void
s_usage(FILE *f)
{
	fprintf(f, "usage: beast-bench [--quick] [--only PATTERN] [--baseline TRANSPORT] [--json FILE] [--out DIR]\n"
	           "  --quick      a few payloads, short runs (under a minute)\n"
	           "  --only PAT   run rows whose scenario or transport matches the glob PAT\n"
	           "  --baseline T ratios against transport T (default zmq-pair-ipc)\n"
	           "  --json FILE  also write the rows as JSON to FILE\n"
	           "  --out DIR    results.csv and results.json go here (default bench/results/<timestamp>)\n");
}

static int
s_mkdirs(const char *path)
{
	char tmp[512];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
				return -1;
			*p = '/';
		}
	}
	return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int
main(int argc, char **argv)
{
	const char *only = NULL, *json = NULL, *out = NULL, *baseline = "zmq-pair-ipc";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--quick")) {
			s_quick = 1;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			s_usage(stdout);
			return 0;
		} else if ((!strcmp(a, "--only") || !strcmp(a, "--json") || !strcmp(a, "--out") ||
		            !strcmp(a, "--baseline")) && i + 1 < argc) {
			const char *v = argv[++i];
			if (!strcmp(a, "--only"))
				only = v;
			else if (!strcmp(a, "--json"))
				json = v;
			else if (!strcmp(a, "--out"))
				out = v;
			else
				baseline = v;
		} else {
			fprintf(stderr, "beast-bench: unknown or incomplete option '%s'\n", a);
			s_usage(stderr);
			return 2;
		}
	}
	char outbuf[512];
	if (!out) {
		time_t t = time(NULL);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(outbuf, sizeof outbuf, "bench/results/%Y%m%dT%H%M%SZ", &tm);
		out = outbuf;
	}
	if (s_mkdirs(out) != 0) {
		fprintf(stderr, "beast-bench: cannot create %s: %s\n", out, strerror(errno));
		return 1;
	}
	snprintf(s_sockdir, sizeof s_sockdir, "/tmp/beast-bench-XXXXXX");
	if (!mkdtemp(s_sockdir)) {
		fprintf(stderr, "beast-bench: cannot create a socket dir: %s\n", strerror(errno));
		return 1;
	}
	signal(SIGINT, s_on_signal);
	signal(SIGTERM, s_on_signal);
	signal(SIGPIPE, SIG_IGN);
	s_tty = isatty(2);

	static const char *transports[] = {"zmq-pair-ipc", "zmq-pair-tcp", "uds"};
	static const char *placements[] = {"cross-cpu", "same-cpu"};
	static const size_t lat_quick[] = {64, 4096}, lat_full[] = {64, 1024, 16384, 262144, 1048576};
	static const size_t tp_quick[] = {64, 4096, 65536},
	                    tp_full[] = {64, 1024, 16384, 262144, 1048576, 16777216, 104857600};
	const size_t *lat = s_quick ? lat_quick : lat_full, *tp = s_quick ? tp_quick : tp_full;
	size_t nlat = s_quick ? 2 : 5, ntp = s_quick ? 3 : 7;

	for (size_t t = 0; t < 3; t++) {
		for (int sc = 0; sc < 2; sc++) {
			const char *scen = sc == 0 ? "latency" : "throughput";
			if (only && fnmatch(only, scen, 0) != 0 && fnmatch(only, transports[t], 0) != 0)
				continue;
			size_t np = sc == 0 ? nlat : ntp;
			for (size_t p = 0; p < np; p++) {
				for (int pl = 0; pl < (sc == 0 ? 2 : 1); pl++) {
					if (s_nrows >= S_MAX_ROWS)
						break;
					s_row_t *r = &s_rows[s_nrows++];
					memset(r, 0, sizeof *r);
					snprintf(r->scenario, sizeof r->scenario, "%s", scen);
					snprintf(r->transport, sizeof r->transport, "%s", transports[t]);
					r->payload = sc == 0 ? lat[p] : tp[p];
					snprintf(r->placement, sizeof r->placement, "%s", placements[pl]);
				}
			}
		}
	}
	if (s_nrows == 0) {
		fprintf(stderr, "beast-bench: --only '%s' matches no row\n", only ? only : "");
		rmdir(s_sockdir);
		return 2;
	}
	for (int i = 0; i < s_nrows; i++) {
		s_progress(i + 1, s_nrows, &s_rows[i]);
		s_measure(&s_rows[i]);
	}
	if (s_tty)
		fprintf(stderr, "\r\033[K");
	rmdir(s_sockdir);
	s_table(stdout, baseline);
	char path[600];
	int rc = 0;
	snprintf(path, sizeof path, "%s/results.json", out);
	rc |= s_write_json(path);
	snprintf(path, sizeof path, "%s/results.csv", out);
	rc |= s_write_csv(path);
	if (json)
		rc |= s_write_json(json);
	if (rc != 0) {
		fprintf(stderr, "beast-bench: writing the results failed: %s\n", strerror(errno));
		return 1;
	}
	fprintf(stderr, "beast-bench: %d rows; results in %s\n", s_nrows, out);
	int failed = 0;
	for (int i = 0; i < s_nrows; i++)
		failed += strncmp(s_rows[i].status, "failed", 6) == 0;
	return failed ? 1 : 0;
}

/*
 * bb_core.c - what beast-bench lends its transport modules (sides,
 * servers, statistics) and the generic drivers that measure a row through
 * a module's bb_ops_t: ping-pong latency, streaming throughput, bulk
 * transfer, fan-out and overload.
 *
 * Every side runs in a child of its own; the parent only coordinates
 * through pipes, so no library state is ever forked.  Every loop is bounded
 * by a count and by BB_DEADLINE_S.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bb.h"
#include "bb_core.h"

const char *const bb_scen_name[BB_NSCEN] = {"latency", "throughput", "fanout-1", "fanout-8", "fanout-32",
                                            "durable", "bulk", "reconnect", "overload",
                                            "latency-load"};

double
bb_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
bb_pin(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	(void)sched_setaffinity(0, sizeof set, &set);
}

void
bb_fail(bb_row_t *r, const char *fmt, ...)
{
	if (strncmp(r->status, "failed", 6) == 0)
		return; /* the first cause is the one worth reading */
	char why[112];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	snprintf(r->status, sizeof r->status, "failed: %s", why);
}

static int
s_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
s_quantile(const double *sorted, int n, double q)
{
	return sorted[(int)(q * (n - 1) + 0.5)];
}

void
bb_latency_stats(bb_row_t *r, double *us, int n)
{
	if (n <= 0)
		return;
	qsort(us, (size_t)n, sizeof *us, s_cmp_double);
	r->p50_us = s_quantile(us, n, 0.50);
	r->p90_us = s_quantile(us, n, 0.90);
	r->p99_us = s_quantile(us, n, 0.99);
	r->p999_us = s_quantile(us, n, 0.999);
	r->max_us = us[n - 1];
	for (int i = 0; i < BB_CDF_N; i++)
		r->cdf[i] = s_quantile(us, n, (double)i / (BB_CDF_N - 1));
	r->has_cdf = 1;
}

/* ---- children to kill on Ctrl-C ---- */

#define S_MAX_TRACK 64
static volatile pid_t s_tracked[S_MAX_TRACK];

static void
s_track(pid_t pid)
{
	for (int i = 0; i < S_MAX_TRACK; i++) {
		if (s_tracked[i] == 0) {
			s_tracked[i] = pid;
			return;
		}
	}
}

static void
s_untrack(pid_t pid)
{
	for (int i = 0; i < S_MAX_TRACK; i++) {
		if (s_tracked[i] == pid) {
			s_tracked[i] = 0;
		}
	}
}

void
bb_core_kill_tracked(void)
{
	for (int i = 0; i < S_MAX_TRACK; i++) {
		if (s_tracked[i] > 0) {
			kill(s_tracked[i], SIGKILL);
		}
	}
}

static char s_signal_sh[512];

void
bb_core_on_signal_sh(const char *cmd)
{
	s_signal_sh[0] = '\0';
	if (cmd != NULL && strlen(cmd) < sizeof s_signal_sh) {
		memcpy(s_signal_sh, cmd, strlen(cmd) + 1);
	}
}

void
bb_core_run_signal_sh(void)
{
	pid_t pid;

	if (s_signal_sh[0] == '\0') {
		return;
	}
	if ((pid = fork()) == 0) {
		execl("/bin/sh", "sh", "-c", s_signal_sh, (char *)NULL);
		_exit(127);
	}
	if (pid > 0) {
		waitpid(pid, NULL, 0);
	}
}

/* ---- sides ---- */

pid_t
bb_side_spawn(int cpu, int (*fn)(void *arg, int wfd), void *arg, int *rfd)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		bb_pin(cpu);
		int rc = fn(arg, p[1]);
		close(p[1]);
		_exit(rc & 0xff);
	}
	close(p[1]);
	*rfd = p[0];
	s_track(pid);
	return pid;
}

static double
s_tv(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int
bb_side_reap(pid_t pid, double timeout_s, bb_row_t *r, int side)
{
	if (pid <= 0)
		return -1;
	int st = 0;
	struct rusage ru;
	memset(&ru, 0, sizeof ru);
	double end = bb_now() + timeout_s;
	pid_t w;
	while ((w = wait4(pid, &st, WNOHANG, &ru)) == 0) {
		if (bb_now() > end) {
			kill(pid, SIGKILL);
			w = wait4(pid, &st, 0, &ru);
			if (r)
				bb_fail(r, "a %s side hung; killed", side == BB_SIDE_TX ? "sending" : "receiving");
			break;
		}
		usleep(1000);
	}
	s_untrack(pid);
	if (w != pid)
		return -1;
	if (r && side >= 0 && side < BB_NSIDES) {
		r->side_cpu_s[side] += s_tv(ru.ru_utime) + s_tv(ru.ru_stime);
		if (ru.ru_maxrss > r->side_rss_kb[side])
			r->side_rss_kb[side] = ru.ru_maxrss;
	}
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int
bb_read_full(int fd, void *buf, size_t len, double deadline)
{
	char *p = buf;
	while (len > 0) {
		int left = (int)((deadline - bb_now()) * 1000);
		if (left <= 0)
			return -1;
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int rc = poll(&pfd, 1, left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			return -1;
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
bb_write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
bb_side_result(int wfd, bb_row_t *mine)
{
	if (!mine->status[0])
		snprintf(mine->status, sizeof mine->status, "ok");
	return bb_write_full(wfd, mine, sizeof *mine);
}

int
bb_side_collect(pid_t pid, int rfd, double timeout_s, bb_row_t *r, int side)
{
	static bb_row_t got;
	memset(&got, 0, sizeof got);
	int rc = bb_read_full(rfd, &got, sizeof got, bb_now() + timeout_s);
	close(rfd);
	bb_side_reap(pid, rc == 0 ? 2.0 : 0.1, r, side);
	if (rc != 0) {
		bb_fail(r, "no result from the %s side", side == BB_SIDE_TX ? "sending" : "receiving");
		return -1;
	}
	if (strncmp(got.status, "failed", 6) == 0) {
		bb_fail(r, "%s", got.status + 8);
		return -1;
	}
	if (got.p50_us > 0) {
		r->p50_us = got.p50_us;
		r->p90_us = got.p90_us;
		r->p99_us = got.p99_us;
		r->p999_us = got.p999_us;
		r->max_us = got.max_us;
	}
	if (got.has_cdf) {
		memcpy(r->cdf, got.cdf, sizeof r->cdf);
		r->has_cdf = 1;
	}
	if (got.msgs_per_s > 0) {
		r->msgs_per_s = got.msgs_per_s;
		r->mb_per_s = got.mb_per_s > 0 ? got.mb_per_s : got.msgs_per_s * (double)r->payload / 1e6;
	}
	if (got.sent)
		r->sent = got.sent;
	if (got.lost)
		r->lost = got.lost;
	if (got.note[0])
		snprintf(r->note, sizeof r->note, "%s", got.note);
	return 0;
}

/* ---- servers ---- */

pid_t
bb_server_spawn(char *const argv[], int cpu, const char *logpath)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		bb_pin(cpu);
		int fd = open(logpath ? logpath : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);
		int nul = open("/dev/null", O_RDONLY);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (nul >= 0)
			dup2(nul, 0);
		execvp(argv[0], argv);
		_exit(127);
	}
	s_track(pid);
	return pid;
}

void
bb_server_stop(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	double end = bb_now() + 3.0;
	int st;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (bb_now() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		usleep(2000);
	}
	s_untrack(pid);
}

int
bb_wait_listen(int port, const char *path, double timeout_s)
{
	double end = bb_now() + timeout_s;
	while (bb_now() < end) {
		int fd;
		int ok;
		if (port > 0) {
			struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
			a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
		} else {
			struct sockaddr_un a = {.sun_family = AF_UNIX};
			if (!path || strlen(path) >= sizeof a.sun_path)
				return -1;
			memcpy(a.sun_path, path, strlen(path) + 1);
			fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
		}
		if (fd >= 0)
			close(fd);
		if (ok)
			return 0;
		usleep(10000);
	}
	return -1;
}

pid_t
bb_server_start(const bb_env_t *env, char *const argv[], const char *logname,
                const bb_ready_t *ready)
{
	char log[600];
	snprintf(log, sizeof log, "%s/%s", env->dir, logname);
	pid_t pid = bb_server_spawn(argv, env->cpu_srv, log);
	if (pid < 0)
		return -1;
	int ok;
	if (ready->file) {
		struct stat st;
		double end = bb_now() + ready->timeout_s;
		while ((ok = stat(ready->file, &st) == 0) == 0 && bb_now() < end &&
		       waitpid(pid, NULL, WNOHANG) == 0)
			usleep(10000);
		if (ok && ready->settle_s > 0)
			usleep((useconds_t)(ready->settle_s * 1e6));
	} else {
		ok = bb_wait_listen(ready->port, ready->sock, ready->timeout_s) == 0;
	}
	if (!ok) {
		bb_server_stop(pid);
		return -1;
	}
	return pid;
}

int
bb_server_up(bb_env_t *env, char *const argv[], const char *logname, const bb_ready_t *ready,
             char *why, size_t whylen)
{
	const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	if (env->nsrv >= BB_MAX_SRV) {
		snprintf(why, whylen, "too many servers for one group");
		return -1;
	}
	pid_t pid = bb_server_start(env, argv, logname, ready);
	if (pid < 0) {
		snprintf(why, whylen, "%s did not start (its log: %s in the scratch dir)", prog, logname);
		return -1;
	}
	env->srv_pid[env->nsrv++] = pid;
	return 0;
}

int
bb_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof a;
	int port = -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

int
bb_find_program(const char *name, char *out, size_t outlen)
{
	const char *path = getenv("PATH");
	char dirs[4096];
	snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin:/sbin", path ? path : "/usr/bin:/bin");
	char *save = NULL;
	for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char p[1024];
		snprintf(p, sizeof p, "%s/%s", d, name);
		if (access(p, X_OK) == 0) {
			snprintf(out, outlen, "%s", p);
			return 0;
		}
	}
	return -1;
}

/* ---- the generic drivers ---- */

#define S_LATLOAD_MAX 40000 /* messages of a full latency-load row: 2 s at the rate */

/* What a side sends back: its own copy of the row (status, statistics) and
 * the counts and instants the parent combines. */
typedef struct {
	bb_row_t r;
	uint64_t n;      /* sent (sender) or received (receiver) data messages */
	double t0, t1;   /* first data sent / last data received */
	char ep[256];    /* receiver: what the sender dials (written first, alone) */
} s_res_t;

typedef struct {
	const bb_transport_t *t;
	const bb_env_t *env;
	const bb_row_t *row;
	char ep[256];
	int ctl;    /* publisher: read end of the parent's go pipe */
	int nsubs;
} s_arg_t;

static long
s_quick_count(const bb_env_t *env, long quick, long full)
{
	return env->quick ? quick : full;
}

bb_counts_t
bb_counts(const bb_env_t *env, int scen, size_t payload)
{
	bb_counts_t c = {0, 0};
	long n;

	switch (scen) {
	case BB_LATENCY:
		c.warm = s_quick_count(env, 200, 1000);
		c.n = payload >= (1u << 20) ? 100 : s_quick_count(env, 2000, 20000);
		break;
	case BB_BULK:
		c.n = payload >= (64u << 20) ? 3 : s_quick_count(env, 5, 10);
		break;
	case BB_THROUGHPUT:
		n = (long)((256ull << 20) / (payload > 0 ? payload : 1));
		c.n = s_quick_count(env, 50000, 1000000);
		c.n = n > c.n ? c.n : n < 8 ? 8 : n;
		break;
	case BB_DURABLE:
		c.n = s_quick_count(env, 10000, 100000);
		break;
	case BB_LATLOAD:
		c.n = s_quick_count(env, S_LATLOAD_MAX / 8, S_LATLOAD_MAX);
		break;
	case BB_FANOUT1:
	case BB_FANOUT8:
	case BB_FANOUT32:
	case BB_OVERLOAD:
		if (scen == BB_OVERLOAD)
			c.n = s_quick_count(env, 100000, 400000);
		else if (payload <= 1024)
			c.n = s_quick_count(env, 20000, 100000);
		else
			c.n = s_quick_count(env, 5000, 20000);
		if (scen == BB_FANOUT32)
			c.n /= 4;
		break;
	default:
		break;
	}
	return c;
}

static void
s_link_init(bb_link_t *l, const bb_row_t *r)
{
	memset(l, 0, sizeof *l);
	l->fd = -1;
	l->scen = r->scen;
	l->payload = r->payload;
}

static int
s_send_res(int wfd, s_res_t *res)
{
	if (!res->r.status[0])
		snprintf(res->r.status, sizeof res->r.status, "ok");
	return bb_write_full(wfd, res, sizeof *res);
}

/* Receiver of latency, throughput and bulk rows. */
static int
s_rx_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	const bb_ops_t *o = a->t->ops;
	static s_res_t res;
	memset(&res, 0, sizeof res);
	bb_link_t l;
	s_link_init(&l, a->row);
	char ep[256] = "";
	if (o->serve(&l, a->env, ep, sizeof ep) != 0) {
		ep[0] = '\0';
		bb_write_full(wfd, ep, sizeof ep);
		return 1;
	}
	if (bb_write_full(wfd, ep, sizeof ep) != 0)
		return 1;
	if (o->accept && o->accept(&l, a->env) != 0) {
		bb_fail(&res.r, "receiver: accept");
		o->close(&l);
		return s_send_res(wfd, &res) ? 1 : 0;
	}
	size_t cap = a->row->payload + 64;
	char *buf = malloc(cap);
	int scen = a->row->scen;
	int nbulk = 0;
	double *oneway = calloc(64, sizeof *oneway);
	double *load = scen == BB_LATLOAD ? calloc(S_LATLOAD_MAX, sizeof *load) : NULL;
	int nload = 0;
	double end = bb_now() + 2 * BB_DEADLINE_S;
	/* big messages through a server can take seconds each under load */
	int idle_ms = scen == BB_LATENCY || a->row->payload >= (1u << 20) ? 1000 * (int)BB_DEADLINE_S : 2000;
	while (buf && oneway && (scen != BB_LATLOAD || load) && bb_now() < end) {
		long n = o->recv(&l, buf, cap, idle_ms);
		if (n < 0) {
			if (scen != BB_THROUGHPUT || res.n == 0)
				bb_fail(&res.r, "receiver: nothing for %d ms", idle_ms);
			break; /* a stream whose end marker was dropped ends here */
		}
		if (n < 1 || buf[0] == BB_TAG_PROBE)
			continue;
		if (buf[0] == BB_TAG_END)
			break;
		if (scen == BB_LATENCY) {
			if (o->send(&l, buf, (size_t)n) != 0) {
				bb_fail(&res.r, "receiver: echo failed");
				break;
			}
		} else if (scen == BB_BULK) {
			/* the blob is in our hands: the transfer is timed; then every
			 * byte is read, as a consumer would (untimed: it costs the
			 * same whichever transport brought the blob) */
			double stamp, now = bb_now();
			memcpy(&stamp, buf + 8, sizeof stamp);
			if (nbulk < 64)
				oneway[nbulk++] = (now - stamp) * 1e6;
			volatile unsigned long sum = 0;
			for (long i = 0; i < n; i += 64)
				sum += (unsigned char)buf[i];
			char ack[64] = {BB_TAG_ACK};
			if (o->send(&l, ack, sizeof ack) != 0) {
				bb_fail(&res.r, "receiver: ack failed");
				break;
			}
			res.n++;
			(void)sum;
		} else if (scen == BB_LATLOAD && buf[0] == BB_TAG_DATA) {
			double due;
			memcpy(&due, buf + 8, sizeof due);
			if (nload < S_LATLOAD_MAX)
				load[nload++] = (bb_now() - due) * 1e6;
			res.n++;
		} else if (buf[0] == BB_TAG_DATA) {
			if (res.n++ == 0)
				res.t0 = bb_now();
			res.t1 = bb_now();
		}
	}
	if (scen == BB_BULK && nbulk > 0)
		bb_latency_stats(&res.r, oneway, nbulk);
	if (scen == BB_LATLOAD && nload > 0)
		bb_latency_stats(&res.r, load, nload);
	free(load);
	free(oneway);
	free(buf);
	o->close(&l);
	return s_send_res(wfd, &res) ? 1 : 0;
}

/* Sender of latency, throughput and bulk rows. */
static int
s_tx_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	const bb_ops_t *o = a->t->ops;
	static s_res_t res;
	memset(&res, 0, sizeof res);
	bb_link_t l;
	s_link_init(&l, a->row);
	if (o->dial(&l, a->env, a->ep) != 0) {
		bb_fail(&res.r, "sender: cannot reach the receiver");
		return s_send_res(wfd, &res) ? 1 : 0;
	}
	size_t payload = a->row->payload, cap = payload + 64;
	char *buf = malloc(cap);
	int scen = a->row->scen;
	double end = bb_now() + BB_DEADLINE_S;
	if (!buf) {
		bb_fail(&res.r, "out of memory");
	} else if (scen == BB_LATENCY) {
		bb_counts_t k = bb_counts(a->env, scen, payload);
		int warm = (int)k.warm, iters = (int)k.n;
		double *lat = calloc((size_t)iters, sizeof *lat);
		memset(buf, 'x', payload);
		buf[0] = BB_TAG_DATA;
		int n = 0;
		for (int i = 0; lat && i < warm + iters && bb_now() < end; i++) {
			double t0 = bb_now();
			long got = o->send(&l, buf, payload) == 0 ? o->recv(&l, buf, cap, 2000) : -1;
			while (got > 0 && buf[0] == BB_TAG_PROBE) /* a late probe of the set-up */
				got = o->recv(&l, buf, cap, 2000);
			if (got != (long)payload) {
				bb_fail(&res.r, "echo lost or late (round trip %d)", i);
				break;
			}
			if (i >= warm)
				lat[n++] = (bb_now() - t0) * 1e6 / 2; /* one way: half the round trip */
			buf[0] = BB_TAG_DATA;
		}
		if (n > 0)
			bb_latency_stats(&res.r, lat, n);
		else
			bb_fail(&res.r, "no round trip in time");
		res.n = (uint64_t)n;
		free(lat);
	} else if (scen == BB_BULK) {
		int blobs = (int)bb_counts(a->env, scen, payload).n;
		for (int i = 0; i < blobs && bb_now() < end; i++) {
			memset(buf, 'a' + i, payload); /* the producer writes every byte */
			buf[0] = BB_TAG_DATA;
			double t = bb_now();
			memcpy(buf + 8, &t, sizeof t);
			if (o->send(&l, buf, payload) != 0 || o->recv(&l, buf, cap, 4000) < 1 || buf[0] != BB_TAG_ACK) {
				bb_fail(&res.r, "blob %d not acknowledged", i);
				break;
			}
			res.n++;
		}
	} else if (scen == BB_LATLOAD) {
		/* a steady BB_LATLOAD_RATE: message i is due at t0 + i / rate and
		 * carries that time, so a send that waited behind a slow one is
		 * measured from when it was due, not from when it got out */
		int count = (int)bb_counts(a->env, scen, payload).n;
		memset(buf, 'x', payload);
		buf[0] = BB_TAG_DATA;
		res.t0 = bb_now() + 0.05;
		for (int i = 0; i < count && bb_now() < end; i++) {
			double due = res.t0 + (double)i / BB_LATLOAD_RATE;
			while (bb_now() < due)
				sched_yield(); /* to the schedule: a sleep would oversleep, and
				                  yielding lets a transport's own thread run */
			memcpy(buf + 8, &due, sizeof due);
			if (o->send(&l, buf, payload) != 0) {
				bb_fail(&res.r, "sender: send %d failed", i);
				break;
			}
			res.n++;
		}
	} else {
		uint64_t count = (uint64_t)bb_counts(a->env, scen, payload).n;
		memset(buf, 'x', payload);
		buf[0] = BB_TAG_DATA;
		res.t0 = bb_now();
		while (res.n < count && bb_now() < end && o->send(&l, buf, payload) == 0)
			res.n++;
	}
	if (buf && scen != BB_LATENCY && scen != BB_BULK && scen != BB_LATLOAD) {
		buf[0] = BB_TAG_END;
		if (o->send(&l, buf, payload) != 0)
			bb_fail(&res.r, "sender: end marker not sent");
	} else if (buf) {
		buf[0] = BB_TAG_END;
		(void)o->send(&l, buf, 64 < payload ? 64 : payload);
	}
	free(buf);
	/* give a lingering transport the time to hand the tail over */
	o->close(&l);
	return s_send_res(wfd, &res) ? 1 : 0;
}

static void
s_take_side(bb_row_t *r, const s_res_t *res)
{
	if (strncmp(res->r.status, "failed", 6) == 0)
		bb_fail(r, "%s", res->r.status + 8);
}

static void
s_p2p(const bb_transport_t *t, bb_row_t *r, const bb_env_t *env)
{
	static s_arg_t a;
	memset(&a, 0, sizeof a);
	a.t = t;
	a.env = env;
	a.row = r;
	int rxfd = -1, txfd = -1;
	pid_t rx = bb_side_spawn(env->cpu_rx, s_rx_main, &a, &rxfd);
	if (rx < 0) {
		bb_fail(r, "fork");
		return;
	}
	double end = bb_now() + 3 * BB_DEADLINE_S;
	static s_res_t rres, tres;
	memset(&rres, 0, sizeof rres);
	memset(&tres, 0, sizeof tres);
	if (bb_read_full(rxfd, a.ep, sizeof a.ep, bb_now() + BB_DEADLINE_S) != 0 || !a.ep[0]) {
		bb_fail(r, "the receiver did not start");
		close(rxfd);
		bb_side_reap(rx, 1.0, r, BB_SIDE_RX);
		return;
	}
	pid_t tx = bb_side_spawn(env->cpu_tx, s_tx_main, &a, &txfd);
	if (tx < 0) {
		bb_fail(r, "fork");
	} else {
		if (bb_read_full(txfd, &tres, sizeof tres, end) != 0)
			bb_fail(r, "no result from the sender");
		if (bb_read_full(rxfd, &rres, sizeof rres, end) != 0)
			bb_fail(r, "no result from the receiver");
		close(txfd);
		bb_side_reap(tx, 2.0, r, BB_SIDE_TX);
	}
	close(rxfd);
	bb_side_reap(rx, 2.0, r, BB_SIDE_RX);
	s_take_side(r, &tres);
	s_take_side(r, &rres);
	if (strncmp(r->status, "failed", 6) == 0)
		return;
	if (r->scen == BB_LATENCY) {
		const bb_row_t *s = &tres.r;
		r->p50_us = s->p50_us;
		r->p90_us = s->p90_us;
		r->p99_us = s->p99_us;
		r->p999_us = s->p999_us;
		r->max_us = s->max_us;
		memcpy(r->cdf, s->cdf, sizeof r->cdf);
		r->has_cdf = s->has_cdf;
		r->msgs_per_s = r->p50_us > 0 ? 1e6 / (2 * r->p50_us) : 0;
		r->sent = (long)tres.n;
	} else if (r->scen == BB_BULK || r->scen == BB_LATLOAD) {
		const bb_row_t *s = &rres.r;
		r->p50_us = s->p50_us;
		r->p90_us = s->p90_us;
		r->p99_us = s->p99_us;
		r->p999_us = s->p999_us;
		r->max_us = s->max_us;
		memcpy(r->cdf, s->cdf, sizeof r->cdf);
		r->has_cdf = s->has_cdf;
		r->sent = (long)tres.n;
		r->lost = (long)(tres.n - rres.n);
		if (r->scen == BB_LATLOAD)
			r->msgs_per_s = BB_LATLOAD_RATE;
		else
			r->msgs_per_s = r->p50_us > 0 ? 1e6 / r->p50_us : 0;
	} else {
		double dt = rres.t1 - tres.t0;
		r->sent = (long)tres.n;
		r->lost = (long)(tres.n - rres.n);
		r->msgs_per_s = dt > 0 ? (double)rres.n / dt : 0;
	}
	r->mb_per_s = r->msgs_per_s * (double)r->payload / 1e6;
	snprintf(r->status, sizeof r->status, "ok");
}

/* ---- fan-out and overload ---- */

static int
s_sub_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	const bb_ops_t *o = a->t->ops;
	static s_res_t res;
	memset(&res, 0, sizeof res);
	bb_link_t l;
	s_link_init(&l, a->row);
	char ready = 0;
	if (o->sub(&l, a->env) != 0) {
		bb_write_full(wfd, &ready, 1);
		return 1;
	}
	size_t cap = a->row->payload + 64;
	char *buf = malloc(cap);
	int overload = a->row->scen == BB_OVERLOAD;
	double end = bb_now() + 3 * BB_DEADLINE_S;
	while (buf && bb_now() < end) {
		long n = o->recv(&l, buf, cap, res.n ? 1000 : 1000 * (int)BB_DEADLINE_S);
		if (n < 0)
			break; /* quiet for a second after data: what was dropped is counted */
		if (n < 1)
			continue;
		if (buf[0] == BB_TAG_PROBE && !ready) {
			ready = 1;
			if (bb_write_full(wfd, &ready, 1) != 0)
				break;
		} else if (buf[0] == BB_TAG_DATA) {
			if (res.n++ == 0)
				res.t0 = bb_now();
			res.t1 = bb_now();
			if (overload) { /* a consumer with real work to do: ~5 µs a message */
				double until = bb_now() + 5e-6;
				while (bb_now() < until)
					;
			}
		} else if (buf[0] == BB_TAG_END) {
			break;
		}
	}
	if (!ready) {
		bb_write_full(wfd, &ready, 1);
		bb_fail(&res.r, "subscriber never saw a probe");
	}
	free(buf);
	o->close(&l);
	return s_send_res(wfd, &res) ? 1 : 0;
}

static int
s_pub_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	const bb_ops_t *o = a->t->ops;
	static s_res_t res;
	memset(&res, 0, sizeof res);
	bb_link_t l;
	s_link_init(&l, a->row);
	if (o->pub(&l, a->env) != 0) {
		bb_fail(&res.r, "publisher could not start");
		return s_send_res(wfd, &res) ? 1 : 0;
	}
	size_t payload = a->row->payload;
	char *buf = malloc(payload);
	double end = bb_now() + BB_DEADLINE_S;
	int go = 0;
	if (buf) {
		memset(buf, 'x', payload);
		/* probes until every subscriber has one (the parent says go) */
		while (!go && bb_now() < end) {
			buf[0] = BB_TAG_PROBE;
			(void)o->send(&l, buf, payload);
			struct pollfd p = {.fd = a->ctl, .events = POLLIN};
			if (poll(&p, 1, 2) == 1) {
				char c;
				go = read(a->ctl, &c, 1) == 1 && c == 'g';
				if (!go)
					break;
			}
		}
	}
	if (!go) {
		bb_fail(&res.r, "subscribers not all connected in %.0f s", BB_DEADLINE_S);
	} else {
		uint64_t count = (uint64_t)bb_counts(a->env, a->row->scen, payload).n;
		buf[0] = BB_TAG_DATA;
		res.t0 = bb_now();
		end = res.t0 + BB_DEADLINE_S;
		while (res.n < count && bb_now() < end && o->send(&l, buf, payload) == 0)
			res.n++;
		buf[0] = BB_TAG_END;
		for (int i = 0; i < 3; i++) {
			(void)o->send(&l, buf, payload);
			usleep(1000);
		}
	}
	free(buf);
	o->close(&l);
	return s_send_res(wfd, &res) ? 1 : 0;
}

static void
s_fanout(const bb_transport_t *t, bb_row_t *r, const bb_env_t *env, int nsubs)
{
	static s_arg_t a;
	memset(&a, 0, sizeof a);
	a.t = t;
	a.env = env;
	a.row = r;
	a.nsubs = nsubs;
	pid_t subs[32];
	int sfd[32];
	int started = 0;
	for (; started < nsubs; started++) {
		subs[started] = bb_side_spawn(env->cpu_rx, s_sub_main, &a, &sfd[started]);
		if (subs[started] < 0)
			break;
	}
	int ctl[2] = {-1, -1};
	pid_t pub = -1;
	int pfd = -1;
	if (started < nsubs) {
		bb_fail(r, "fork");
	} else if (pipe2(ctl, O_CLOEXEC) != 0) {
		bb_fail(r, "pipe");
	} else {
		a.ctl = ctl[0];
		pub = bb_side_spawn(env->cpu_tx, s_pub_main, &a, &pfd);
		close(ctl[0]);
	}
	double end = bb_now() + BB_DEADLINE_S;
	int ready = 0;
	for (int i = 0; pub > 0 && i < nsubs; i++) {
		char c = 0;
		if (bb_read_full(sfd[i], &c, 1, end) != 0 || c != 1)
			break;
		ready++;
	}
	if (ctl[1] >= 0) {
		char go = ready == nsubs ? 'g' : 'x';
		bb_write_full(ctl[1], &go, 1);
		close(ctl[1]);
	}
	if (pub > 0 && ready < nsubs)
		bb_fail(r, "only %d of %d subscribers connected", ready, nsubs);
	static s_res_t pres, sres;
	memset(&pres, 0, sizeof pres);
	end = bb_now() + 3 * BB_DEADLINE_S;
	if (pub > 0) {
		if (bb_read_full(pfd, &pres, sizeof pres, end) != 0)
			bb_fail(r, "no result from the publisher");
		close(pfd);
		bb_side_reap(pub, 2.0, r, BB_SIDE_TX);
		s_take_side(r, &pres);
	}
	uint64_t got = 0;
	double last = 0;
	for (int i = 0; i < started; i++) {
		memset(&sres, 0, sizeof sres);
		if (ready == nsubs && bb_read_full(sfd[i], &sres, sizeof sres, end) != 0)
			bb_fail(r, "no result from subscriber %d", i);
		close(sfd[i]);
		bb_side_reap(subs[i], 2.0, r, BB_SIDE_RX);
		s_take_side(r, &sres);
		got += sres.n;
		if (sres.t1 > last)
			last = sres.t1;
	}
	if (strncmp(r->status, "failed", 6) == 0)
		return;
	r->sent = (long)pres.n * nsubs;
	r->lost = r->sent - (long)got;
	double dt = last - pres.t0;
	r->msgs_per_s = dt > 0 ? (double)got / dt : 0; /* deliveries per second */
	r->mb_per_s = r->msgs_per_s * (double)r->payload / 1e6;
	snprintf(r->status, sizeof r->status, "ok");
}

void
bb_core_measure(const bb_transport_t *t, bb_row_t *r, bb_env_t *env)
{
	if (t->run && t->run(r, env))
		return;
	const bb_ops_t *o = t->ops;
	switch (r->scen) {
	case BB_LATENCY:
	case BB_THROUGHPUT:
	case BB_BULK:
	case BB_LATLOAD:
		if (o && o->serve && o->dial)
			s_p2p(t, r, env);
		else
			bb_fail(r, "no point-to-point driver");
		break;
	case BB_FANOUT1:
	case BB_FANOUT8:
	case BB_FANOUT32:
	case BB_OVERLOAD:
		if (o && o->sub && o->pub)
			s_fanout(t, r, env, r->scen == BB_FANOUT8 ? 8 : r->scen == BB_FANOUT32 ? 32 : 1);
		else
			bb_fail(r, "no fan-out driver");
		break;
	default:
		bb_fail(r, "%s has no generic driver", r->scenario);
	}
}

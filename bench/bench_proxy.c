/*
 * bench_proxy.c - the broadcast benchmark: fan-out deliveries per second
 * through beastd's proxy, beside a bare libzmq zmq_proxy and NATS core
 * pub/sub, in the same run, on the same machine, with the same payloads.
 *
 * Transports, through a small ops table:
 *
 *   beastmesh  a real beastd (fork+exec on a scratch dir, default
 *              options: LVC on, verbose XPUB, tap idle); bm_pub_t and
 *              bm_sub_t objects, so the header encode/decode and the
 *              per-topic gap accounting are in the measurement.
 *   zmq_proxy  a forked child running zmq_proxy(XSUB, XPUB) on ipc in the
 *              same scratch dir; bare PUB and SUB sockets; frames [topic,
 *              body].  The least a broadcast proxy can do.
 *   nats       nats-server on a free 127.0.0.1 port, started for the run;
 *              libnats connections, one per subscriber, core pub/sub
 *              (pending limits lifted so it is not cut short).  Skipped,
 *              with a note, when libnats or nats-server is missing.
 *
 * Scenario (per transport, payload size and subscriber count): every
 * subscriber is a thread with its own socket or connection; the
 * publisher is the main thread.  Subscribers first prove they are
 * connected: the publisher sends probe messages until each has seen one
 * (beastmesh subscribers also wait for their sync marker).  Then the
 * publisher sends N data messages as fast as the transport takes them
 * (beastmesh: retry on BM_EFULL; the others never refuse).  The clock
 * runs from the first data send to the moment the last subscriber has
 * all N, or has heard nothing for a second (then it counts what it got:
 * losses are reported in the table, never hidden).  deliveries/s = data
 * messages received by all subscribers / elapsed.  Queues are sized so
 * that N messages fit everywhere.  Each configuration runs `rounds`
 * times, transports interleaved, and the median is reported.
 *
 * Processes: the zmq_proxy child is forked before any zmq context
 * exists; beastd and nats-server are fork+exec'd; all get
 * PR_SET_PDEATHSIG and are stopped with SIGTERM/SIGKILL and reaped.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bm_proxy.h"

#ifdef BM_HAVE_NATS
#include <nats/nats.h>
#endif

#define S_SUBS_MAX 32
#define S_IDLE_MS 1000
#define S_HWM 1000000

static char s_dir[128];
static char s_bare_pub[256], s_bare_sub[256];
static char s_nats_url[64] __attribute__((unused)); /* only with libnats */
static volatile sig_atomic_t s_interrupted;

typedef struct s_run s_run_t;

typedef struct {
	const char *name;
	int (*sub_open)(s_run_t *r, int i);
	int (*sub_recv)(s_run_t *r, int i, int timeout_ms, uint8_t *ret_kind);
	void (*sub_close)(s_run_t *r, int i);
	int (*pub_open)(s_run_t *r);
	int (*pub_send)(s_run_t *r, const void *d, size_t n);
	void (*pub_close)(s_run_t *r);
} s_ops_t;

struct s_run {
	const s_ops_t *ops;
	int nsubs;
	long n;
	size_t size;
	void *ctx;                         /* zmq context for the run */
	void *zsub[S_SUBS_MAX];            /* bare SUB sockets */
	void *zpub;                        /* bare PUB */
	bm_sub_t *bsub[S_SUBS_MAX];        /* beastmesh subscribers */
	bm_pub_t *bpub;                    /* beastmesh publisher */
#ifdef BM_HAVE_NATS
	natsConnection *nc[S_SUBS_MAX + 1];
	natsSubscription *ns[S_SUBS_MAX];
#endif
	atomic_int opened;                 /* subscribers ready to go */
	atomic_int probed;                 /* subscribers that saw a probe */
	atomic_long received;              /* data messages, all subscribers */
	atomic_llong last_ns;              /* latest finish time */
	atomic_int failed;                 /* a subscriber could not open */
	uint64_t gaps;                     /* beastmesh: counted losses */
};

typedef struct {
	s_run_t *r;
	int i;
} s_sub_arg_t;

static void
s_on_signal(int sig)
{
	(void)sig;
	s_interrupted = 1;
}

/* ---- beastmesh ---- */

static int
s_b_sub_open(s_run_t *r, int i)
{
	bm_sub_opts_t o = {.dir = s_dir, .no_lvc = true, .hwm = S_HWM, .zmq_ctx = r->ctx};
	int64_t deadline = bm_mono_ms() + 5000;
	int rc = bm_sub_open(&o, &r->bsub[i]);

	if (rc < 0 || (rc = bm_sub_subscribe(r->bsub[i], "bench/fan")) < 0) {
		return rc;
	}
	while (bm_mono_ms() < deadline) {
		bm_bcast_t m = {0};

		if (bm_sub_recv(r->bsub[i], 100, &m) == 0) {
			int kind = m.kind;

			bm_bcast_clear(&m);
			if (kind == BM_BCAST_SYNC) {
				return 0;
			}
		}
	}
	return -ETIMEDOUT;
}

static int
s_b_sub_recv(s_run_t *r, int i, int timeout_ms, uint8_t *ret_kind)
{
	bm_bcast_t m = {0};
	int rc = bm_sub_recv(r->bsub[i], timeout_ms, &m);

	if (rc < 0) {
		return rc;
	}
	*ret_kind = bm_bcast_size(&m) > 0 ? *(const uint8_t *)bm_bcast_data(&m) : 0;
	bm_bcast_clear(&m);
	return 0;
}

static void
s_b_sub_close(s_run_t *r, int i)
{
	bm_sub_stats_t st;

	bm_sub_stats(r->bsub[i], &st);
	r->gaps += st.gaps;
	bm_sub_destroy(&r->bsub[i]);
}

static int
s_b_pub_open(s_run_t *r)
{
	bm_pub_opts_t o = {.dir = s_dir, .name = "bench", .hwm = S_HWM, .zmq_ctx = r->ctx};

	return bm_pub_open(&o, &r->bpub);
}

static int
s_b_pub_send(s_run_t *r, const void *d, size_t n)
{
	int rc;

	while ((rc = bm_pub_send(r->bpub, "bench/fan/x", d, n)) == BM_EFULL) {
		zmq_pollitem_t it = {.socket = bm_pub_socket(r->bpub), .events = ZMQ_POLLOUT};

		zmq_poll(&it, 1, 10);
	}
	return rc;
}

static void
s_b_pub_close(s_run_t *r)
{
	bm_pub_destroy(&r->bpub);
}

static const s_ops_t s_beast_ops = {"beastmesh", s_b_sub_open, s_b_sub_recv, s_b_sub_close,
                                    s_b_pub_open, s_b_pub_send, s_b_pub_close};

/* ---- bare zmq_proxy ---- */

static int
s_z_sub_open(s_run_t *r, int i)
{
	int hwm = S_HWM;

	r->zsub[i] = zmq_socket(r->ctx, ZMQ_SUB);
	if (r->zsub[i] == NULL || zmq_setsockopt(r->zsub[i], ZMQ_RCVHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(r->zsub[i], ZMQ_SUBSCRIBE, "bench/fan/", 10) < 0 ||
	    zmq_connect(r->zsub[i], s_bare_sub) < 0) {
		return -zmq_errno();
	}
	return 0;
}

static int
s_z_sub_recv(s_run_t *r, int i, int timeout_ms, uint8_t *ret_kind)
{
	zmq_pollitem_t it = {.socket = r->zsub[i], .events = ZMQ_POLLIN};
	zmq_msg_t t, b;

	if (zmq_poll(&it, 1, timeout_ms) <= 0) {
		return -ETIMEDOUT;
	}
	zmq_msg_init(&t);
	zmq_msg_init(&b);
	if (zmq_msg_recv(&t, r->zsub[i], 0) < 0 || zmq_msg_recv(&b, r->zsub[i], 0) < 0) {
		zmq_msg_close(&t);
		zmq_msg_close(&b);
		return -EIO;
	}
	*ret_kind = zmq_msg_size(&b) > 0 ? *(uint8_t *)zmq_msg_data(&b) : 0;
	zmq_msg_close(&t);
	zmq_msg_close(&b);
	return 0;
}

static void
s_z_sub_close(s_run_t *r, int i)
{
	int zero = 0;

	zmq_setsockopt(r->zsub[i], ZMQ_LINGER, &zero, sizeof zero);
	zmq_close(r->zsub[i]);
}

static int
s_z_pub_open(s_run_t *r)
{
	int hwm = S_HWM;

	r->zpub = zmq_socket(r->ctx, ZMQ_PUB);
	if (r->zpub == NULL || zmq_setsockopt(r->zpub, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_connect(r->zpub, s_bare_pub) < 0) {
		return -zmq_errno();
	}
	return 0;
}

static int
s_z_pub_send(s_run_t *r, const void *d, size_t n)
{
	if (zmq_send(r->zpub, "bench/fan/x/", 12, ZMQ_SNDMORE) < 0 || zmq_send(r->zpub, d, n, 0) < 0) {
		return -zmq_errno();
	}
	return 0;
}

static void
s_z_pub_close(s_run_t *r)
{
	int zero = 0;

	zmq_setsockopt(r->zpub, ZMQ_LINGER, &zero, sizeof zero);
	zmq_close(r->zpub);
}

static const s_ops_t s_bare_ops = {"zmq_proxy", s_z_sub_open, s_z_sub_recv, s_z_sub_close,
                                   s_z_pub_open, s_z_pub_send, s_z_pub_close};

/* The bare proxy child: forked before any zmq context exists. */
static void
s_bare_main(void)
{
	void *ctx = zmq_ctx_new();
	void *xs = zmq_socket(ctx, ZMQ_XSUB), *xp = zmq_socket(ctx, ZMQ_XPUB);
	int hwm = S_HWM;

	zmq_setsockopt(xs, ZMQ_RCVHWM, &hwm, sizeof hwm);
	zmq_setsockopt(xp, ZMQ_SNDHWM, &hwm, sizeof hwm);
	if (zmq_bind(xs, s_bare_pub) < 0 || zmq_bind(xp, s_bare_sub) < 0) {
		fprintf(stderr, "bench-proxy: bare proxy cannot bind: %s\n", zmq_strerror(zmq_errno()));
		_exit(1);
	}
	zmq_proxy(xs, xp, NULL);
	_exit(0);
}

/* ---- NATS ---- */

#ifdef BM_HAVE_NATS
static int
s_n_sub_open(s_run_t *r, int i)
{
	if (natsConnection_ConnectTo(&r->nc[i], s_nats_url) != NATS_OK ||
	    natsConnection_SubscribeSync(&r->ns[i], r->nc[i], "bench.fan.x") != NATS_OK ||
	    natsSubscription_SetPendingLimits(r->ns[i], -1, -1) != NATS_OK ||
	    natsConnection_Flush(r->nc[i]) != NATS_OK) {
		return -EIO;
	}
	return 0;
}

static int
s_n_sub_recv(s_run_t *r, int i, int timeout_ms, uint8_t *ret_kind)
{
	natsMsg *m = NULL;

	if (natsSubscription_NextMsg(&m, r->ns[i], timeout_ms) != NATS_OK) {
		return -ETIMEDOUT;
	}
	*ret_kind = natsMsg_GetDataLength(m) > 0 ? (uint8_t)natsMsg_GetData(m)[0] : 0;
	natsMsg_Destroy(m);
	return 0;
}

static void
s_n_sub_close(s_run_t *r, int i)
{
	natsSubscription_Destroy(r->ns[i]);
	natsConnection_Destroy(r->nc[i]);
}

static int
s_n_pub_open(s_run_t *r)
{
	return natsConnection_ConnectTo(&r->nc[S_SUBS_MAX], s_nats_url) == NATS_OK ? 0 : -EIO;
}

static int
s_n_pub_send(s_run_t *r, const void *d, size_t n)
{
	return natsConnection_Publish(r->nc[S_SUBS_MAX], "bench.fan.x", d, (int)n) == NATS_OK ? 0
	                                                                                     : -EIO;
}

static void
s_n_pub_close(s_run_t *r)
{
	natsConnection_Flush(r->nc[S_SUBS_MAX]);
	natsConnection_Destroy(r->nc[S_SUBS_MAX]);
}

static const s_ops_t s_nats_ops = {"nats", s_n_sub_open, s_n_sub_recv, s_n_sub_close,
                                   s_n_pub_open, s_n_pub_send, s_n_pub_close};
#endif

/* ---- the scenario ---- */

static void *
s_sub_main(void *arg)
{
	s_sub_arg_t *a = arg;
	s_run_t *r = a->r;
	long got = 0;
	bool probed = false;

	if (r->ops->sub_open(r, a->i) < 0) {
		atomic_fetch_add(&r->failed, 1);
		atomic_fetch_add(&r->opened, 1);
		return NULL;
	}
	atomic_fetch_add(&r->opened, 1);
	while (got < r->n && !s_interrupted) {
		uint8_t kind;

		if (r->ops->sub_recv(r, a->i, S_IDLE_MS, &kind) < 0) {
			if (probed) {
				break; /* idle: the rest is not coming */
			}
			continue;
		}
		if (kind == 'P' && !probed) {
			probed = true;
			atomic_fetch_add(&r->probed, 1);
		} else if (kind == 'D') {
			got++;
		}
	}
	if (got > 0) {
		long long now = bm_mono_ns(), prev = atomic_load(&r->last_ns);

		while (now > prev && !atomic_compare_exchange_weak(&r->last_ns, &prev, now)) {
		}
	}
	atomic_fetch_add(&r->received, got);
	r->ops->sub_close(r, a->i);
	return NULL;
}

typedef struct {
	double rate;     /* deliveries per second */
	double loss;     /* fraction of deliveries missing */
	uint64_t gaps;   /* beastmesh: counted */
	bool ok;         /* ran */
} s_result_t;

static s_result_t
s_run(const s_ops_t *ops, int nsubs, size_t size, long n)
{
	s_run_t *r = calloc(1, sizeof *r);
	pthread_t th[S_SUBS_MAX];
	s_sub_arg_t args[S_SUBS_MAX];
	uint8_t *buf = calloc(1, size);
	s_result_t res = {0};
	int64_t t0, deadline;

	if (r == NULL || buf == NULL) {
		free(r);
		free(buf);
		return res;
	}
	r->ops = ops;
	r->nsubs = nsubs;
	r->n = n;
	r->size = size;
	r->ctx = zmq_ctx_new();
	for (int i = 0; i < nsubs; i++) {
		args[i] = (s_sub_arg_t){r, i};
		pthread_create(&th[i], NULL, s_sub_main, &args[i]);
	}
	deadline = bm_mono_ms() + 20000;
	while (atomic_load(&r->opened) < nsubs && bm_mono_ms() < deadline) {
		zmq_poll(NULL, 0, 2);
	}
	if (ops->pub_open(r) < 0 || atomic_load(&r->failed) > 0) {
		fprintf(stderr, "bench-proxy: %s: could not connect\n", ops->name);
		s_interrupted = 1;
	}
	/* Probes until every subscriber has one (slow joiner). */
	buf[0] = 'P';
	while (!s_interrupted && atomic_load(&r->probed) < nsubs && bm_mono_ms() < deadline) {
		ops->pub_send(r, buf, size);
		zmq_poll(NULL, 0, 1);
	}
	buf[0] = 'D';
	t0 = bm_mono_ns();
	for (long i = 0; i < n && !s_interrupted; i++) {
		memcpy(buf + 1, &i, size > 9 ? 8 : 0);
		if (ops->pub_send(r, buf, size) < 0) {
			break;
		}
	}
	for (int i = 0; i < nsubs; i++) {
		pthread_join(th[i], NULL);
	}
	ops->pub_close(r);
	zmq_ctx_term(r->ctx);
	if (atomic_load(&r->last_ns) > t0) {
		res.rate = (double)atomic_load(&r->received) * 1e9 / (double)(atomic_load(&r->last_ns) - t0);
		res.loss = 1.0 - (double)atomic_load(&r->received) / ((double)n * nsubs);
		res.gaps = r->gaps;
		res.ok = true;
	}
	free(r);
	free(buf);
	return res;
}

/* ---- processes ---- */

static pid_t
s_spawn(char *const argv[], bool quiet)
{
	pid_t pid = fork();

	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (quiet) {
			/* nats-server logs every start and stop to stderr. */
			(void)!freopen("/dev/null", "w", stderr);
		}
		execv(argv[0], argv);
		fprintf(stderr, "bench-proxy: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

static void
s_stop_child(pid_t pid)
{
	if (pid <= 0) {
		return;
	}
	(void)kill(pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			return;
		}
		(void)nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	}
	(void)kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
	}
}

static void
s_remove_dir(void)
{
	DIR *d = opendir(s_dir);
	struct dirent *de;

	if (d == NULL) {
		return;
	}
	while ((de = readdir(d)) != NULL) {
		char p[sizeof s_dir + 256];

		if (de->d_name[0] != '.') {
			snprintf(p, sizeof p, "%s/%s", s_dir, de->d_name);
			(void)unlink(p);
		}
	}
	closedir(d);
	(void)rmdir(s_dir);
}

static bool
s_wait_file(const char *path, pid_t pid)
{
	int64_t deadline = bm_mono_ms() + 5000;

	while (bm_mono_ms() < deadline) {
		if (access(path, F_OK) == 0) {
			return true;
		}
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			return false;
		}
		(void)nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
	}
	return false;
}

#ifdef BM_HAVE_NATS
static int
s_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
		port = ntohs(a.sin_port);
	}
	if (fd >= 0) {
		close(fd);
	}
	return port;
}

static bool
s_wait_nats(pid_t pid)
{
	int64_t deadline = bm_mono_ms() + 5000;

	while (bm_mono_ms() < deadline) {
		natsConnection *c = NULL;

		if (natsConnection_ConnectTo(&c, s_nats_url) == NATS_OK) {
			natsConnection_Destroy(c);
			return true;
		}
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			return false;
		}
		(void)nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
	}
	return false;
}
#endif

static int
s_cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

static double
s_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, s_cmp);
	return n == 0 ? 0 : (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2);
}

static void
s_usage(FILE *out)
{
	fprintf(out, "usage: bench-proxy [--beastd PATH] [--nats-server PATH] [--rounds R] [--n N]\n"
	             "                   [--n-big N] [--subs LIST]\n"
	             "\n"
	             "Fan-out deliveries/s through beastd's broadcast proxy, a bare zmq_proxy\n"
	             "and NATS core pub/sub; N messages of 64 B (default 50000) and of 4 KiB\n"
	             "(--n-big, default 10000) to 1, 8 and 32 subscribers; median of R rounds (3).\n");
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {{"beastd", required_argument, NULL, 'b'},
	                                   {"nats-server", required_argument, NULL, 's'},
	                                   {"rounds", required_argument, NULL, 'r'},
	                                   {"n", required_argument, NULL, 'n'},
	                                   {"n-big", required_argument, NULL, 'N'},
	                                   {"help", no_argument, NULL, 'h'}, {0}};
	const char *beastd = BM_BENCH_BEASTD, *nats_server = BM_BENCH_NATS_SERVER;
	const int subs[] = {1, 8, 32};
	const size_t sizes[] = {64, 4096};
	long n_small = 50000, n_big = 10000;
	int rounds = 3, ch, status = 0;
	pid_t bare = -1, bd = -1, nats = -1;
	bool have_nats = false;
	struct sigaction sa = {.sa_handler = s_on_signal};
	char path[256];

	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'b':
			beastd = optarg;
			break;
		case 's':
			nats_server = optarg;
			break;
		case 'r':
			rounds = atoi(optarg) > 0 ? atoi(optarg) : 1;
			break;
		case 'n':
			n_small = atol(optarg) > 0 ? atol(optarg) : n_small;
			break;
		case 'N':
			n_big = atol(optarg) > 0 ? atol(optarg) : n_big;
			break;
		case 'h':
			s_usage(stdout);
			return 0;
		default:
			s_usage(stderr);
			return 2;
		}
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	snprintf(s_dir, sizeof s_dir, "/tmp/bench-proxy-XXXXXX");
	if (mkdtemp(s_dir) == NULL) {
		perror("bench-proxy: mkdtemp");
		return 1;
	}
	snprintf(s_bare_pub, sizeof s_bare_pub, "ipc://%s/bare-pub.sock", s_dir);
	snprintf(s_bare_sub, sizeof s_bare_sub, "ipc://%s/bare-sub.sock", s_dir);
	bare = fork();
	if (bare == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		s_bare_main();
	}
	{
		char *av[] = {(char *)beastd, "--dir", s_dir, NULL};

		bd = s_spawn(av, false);
	}
	snprintf(path, sizeof path, "%s/sub.sock", s_dir);
	if (!s_wait_file(path, bd)) {
		fprintf(stderr, "bench-proxy: beastd did not start (%s)\n", beastd);
		status = 1;
		goto out;
	}
	snprintf(path, sizeof path, "%s/bare-sub.sock", s_dir);
	if (!s_wait_file(path, bare)) {
		fprintf(stderr, "bench-proxy: the bare proxy did not start\n");
		status = 1;
		goto out;
	}
#ifdef BM_HAVE_NATS
	if (access(nats_server, X_OK) == 0) {
		int port = s_free_port();
		char ps[16];
		char *av[] = {(char *)nats_server, "-a", "127.0.0.1", "-p", ps, NULL};

		snprintf(ps, sizeof ps, "%d", port);
		snprintf(s_nats_url, sizeof s_nats_url, "nats://127.0.0.1:%d", port);
		nats = s_spawn(av, true);
		have_nats = s_wait_nats(nats);
		if (!have_nats) {
			fprintf(stderr, "bench-proxy: nats-server did not start; NATS column skipped\n");
		}
	} else {
		fprintf(stderr, "bench-proxy: no nats-server at %s; NATS column skipped\n", nats_server);
	}
#else
	(void)nats_server;
	fprintf(stderr, "bench-proxy: built without libnats; NATS column skipped\n");
#endif
	printf("broadcast fan-out, deliveries/s (median of %d rounds; N = %ld x 64 B, %ld x 4 KiB)\n",
	       rounds, n_small, n_big);
	printf("%-6s %5s %14s %14s %14s %9s %9s %7s %7s\n", "size", "subs", "beastmesh", "zmq_proxy",
	       "nats", "vs zmq", "vs nats", "loss%", "gaps");
	for (size_t si = 0; si < 2 && !s_interrupted; si++) {
		for (size_t k = 0; k < 3 && !s_interrupted; k++) {
			double vb[16], vz[16], vn[16], lossb = 0;
			uint64_t gaps = 0;
			int nr = rounds > 16 ? 16 : rounds;
			long n = sizes[si] > 64 ? n_big : n_small;
			double mb, mz, mn = 0;

			for (int rd = 0; rd < nr && !s_interrupted; rd++) {
				s_result_t a = s_run(&s_bare_ops, subs[k], sizes[si], n);
				s_result_t b = s_run(&s_beast_ops, subs[k], sizes[si], n);

				vz[rd] = a.rate;
				vb[rd] = b.rate;
				lossb += b.loss;
				gaps += b.gaps;
#ifdef BM_HAVE_NATS
				if (have_nats) {
					vn[rd] = s_run(&s_nats_ops, subs[k], sizes[si], n).rate;
				}
#endif
				if (!have_nats) {
					vn[rd] = 0;
				}
			}
			mb = s_median(vb, nr);
			mz = s_median(vz, nr);
			mn = s_median(vn, nr);
			printf("%-6s %5d %14.0f %14.0f ", sizes[si] > 64 ? "4KiB" : "64B", subs[k], mb, mz);
			if (have_nats) {
				printf("%14.0f %8.2fx %8.2fx", mn, mz > 0 ? mb / mz : 0, mn > 0 ? mb / mn : 0);
			} else {
				printf("%14s %8.2fx %9s", "-", mz > 0 ? mb / mz : 0, "-");
			}
			printf(" %7.3f %7llu\n", 100.0 * lossb / nr, (unsigned long long)gaps);
			fflush(stdout);
		}
	}
	printf("targets: >= 0.90x zmq_proxy; >= 1.50x nats at 8 subscribers. loss%% and gaps are "
	       "beastmesh's (missing deliveries; losses its subscribers counted).\n");
out:
	s_stop_child(nats);
	s_stop_child(bd);
	if (bare > 0) {
		(void)kill(bare, SIGKILL);
		while (waitpid(bare, NULL, 0) < 0 && errno == EINTR) {
		}
	}
	s_remove_dir();
	return status;
}

/*
 * bench_outbox.c - the durable outbox benchmark: acknowledged messages per
 * second and send->ACK latency (p50, p99) through beastd with the outbox
 * under each sync policy, beside the plain (non-durable) mesh, NATS
 * JetStream publish-with-ack and Redis XADD, in the same run, on the same
 * machine, with the same payloads and the same number in flight.
 *
 * Transports:
 *
 *   outbox/always    bm_outbox_t: each message is in the journal, synced
 *                    (group commit: one fdatasync per pump, whatever the
 *                    batch), before it is sent; it counts when the
 *                    receiver's ACK retires it (the ACK record rides
 *                    lazily, as in production).
 *   outbox/interval  the same with sync every 100 ms.
 *   outbox/never     the same, written but never synced.
 *   mesh             bm_client_send + the receiver's ACK, nothing stored.
 *   jetstream        nats-server -js on a free 127.0.0.1 port with its
 *                    store in the scratch dir, a file-storage stream;
 *                    js_PublishAsync with at most `window` pending; a
 *                    message counts at its PubAck.  JetStream does not
 *                    fsync each message (it syncs on an interval).
 *   redis            redis-server on a free port, appendonly yes,
 *                    appendfsync everysec; pipelined XADD, `window`
 *                    outstanding; a message counts at its reply.
 *
 * The beastmesh receiver is a forked process that ACKs every delivery at
 * once (it keeps no de-dup window: the bench measures the sender's side).
 * Latency is measured per message from the moment the sender hands it to
 * the library (put, publish, append) to its ACK, so the wait for group
 * commit is in it.  JetStream and Redis are skipped with a note when their
 * server or client library is missing.
 *
 * Processes: beastd, nats-server and redis-server are fork+exec'd with
 * PR_SET_PDEATHSIG, stopped with SIGTERM (then SIGKILL) and reaped; the
 * scratch directory is removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bm_mesh.h"

#ifdef BM_HAVE_NATS
#include <nats/nats.h>
#endif
#ifdef BM_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

#ifndef BM_BENCH_BEASTD
#define BM_BENCH_BEASTD "beastd"
#endif
#ifndef BM_BENCH_NATS_SERVER
#define BM_BENCH_NATS_SERVER "nats-server"
#endif
#ifndef BM_BENCH_REDIS_SERVER
#define BM_BENCH_REDIS_SERVER "redis-server"
#endif

static char s_scratch[64];       /* everything of this run */
static char s_rundir[128];       /* beastd's runtime dir */
static int s_window = 4096;      /* messages in flight */
static int64_t *s_t0;            /* per message: when it was handed over (ns) */
static int64_t *s_lat;           /* per message: send->ACK (ns), or -1 */
static _Atomic long s_acked;     /* ACKs seen */

typedef struct {
	const char *name;   /* table label */
	double rate;        /* acked messages / s */
	double p50, p99;    /* microseconds */
	bool ok;            /* it ran */
} s_row_t;

/* ---- processes ---- */

static pid_t
s_spawn(char *const argv[], const char *out)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);

		(void)prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], argv);
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
	for (int i = 0; i < 300; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			return;
		}
		(void)nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	}
	(void)kill(pid, SIGKILL);
	(void)waitpid(pid, NULL, 0);
}

/* Helpers of the optional peers: unused when none was found at build time. */
static int __attribute__((unused))
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

static void
s_rmrf(const char *path)
{
	(void)bm_rmtree(path);
}

/* ---- statistics ---- */

static int
s_cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void
s_finish(s_row_t *row, long n, int64_t elapsed_ns)
{
	long k = 0;

	for (long i = 0; i < n; i++) {
		if (s_lat[i] >= 0) {
			s_lat[k++] = s_lat[i];
		}
	}
	qsort(s_lat, (size_t)k, sizeof *s_lat, s_cmp_i64);
	row->rate = (double)k / ((double)elapsed_ns / 1e9);
	row->p50 = k ? (double)s_lat[k / 2] / 1000.0 : 0;
	row->p99 = k ? (double)s_lat[(k * 99) / 100] / 1000.0 : 0;
	row->ok = k == n;
	if (k != n) {
		fprintf(stderr, "bench-outbox: %s: only %ld of %ld acknowledged\n", row->name, k, n);
	}
}

static void
s_reset(long n)
{
	for (long i = 0; i < n; i++) {
		s_lat[i] = -1;
	}
	atomic_store(&s_acked, 0);
}

/* ---- beastmesh: the receiver and the senders ---- */

static int
s_receiver(void)
{
	bm_client_opts_t o = {.dir = s_rundir, .name = "brcv"};
	bm_client_t *c = NULL;

	if (bm_client_open(&o, &c) < 0) {
		return 1;
	}
	for (;;) {
		bm_event_t ev;
		int rc = bm_client_recv(c, 1000, &ev);

		if (rc == -ESHUTDOWN) {
			break;
		}
		if (rc == 0) {
			if (ev.kind == BM_EV_MESSAGE) {
				(void)bm_client_ack(c, ev.msg);
			}
			bm_event_clear(&ev);
		}
	}
	bm_client_destroy(&c);
	return 0;
}

static void
s_bench_id(long k, bm_id_t *id)
{
	memset(id, 0, sizeof *id);
	id->b[0] = 0xBE;
	memcpy(id->b + 8, &k, sizeof k);
}

static long
s_id_k(const bm_id_t *id)
{
	long k;

	memcpy(&k, id->b + 8, sizeof k);
	return id->b[0] == 0xBE ? k : -1;
}

static void
s_on_ack(const bm_id_t *id)
{
	long k = s_id_k(id);

	if (k >= 0 && s_lat[k] < 0) {
		s_lat[k] = bm_mono_ns() - s_t0[k];
		atomic_fetch_add(&s_acked, 1);
	}
}

/* policy < 0: the plain mesh, no outbox. */
static void
s_run_mesh(s_row_t *row, int policy, long n, size_t size, const char *jdir)
{
	bm_client_opts_t co = {.dir = s_rundir, .name = "bsnd"};
	bm_outbox_opts_t oo = {.sync = policy < 0 ? 0 : policy, .interval_ms = 100,
	                       .window = s_window, .ack_timeout_ms = 30000, .max_attempts = 1000};
	bm_outbox_send_opts_t so = {.to = "brcv", .type = "bench"};
	bm_send_opts_t mo = {.to = "brcv", .type = "bench"};
	bm_client_t *c = NULL;
	bm_outbox_t *ob = NULL;
	char *body = calloc(1, size);
	long put = 0;
	int64_t t_start, deadline;

	s_reset(n);
	if (body == NULL || bm_client_open(&co, &c) < 0) {
		free(body);
		return;
	}
	if (policy >= 0) {
		s_rmrf(jdir);
		oo.dir = jdir;
		oo.client = c;
		if (bm_outbox_open(&oo, &ob) < 0) {
			bm_client_destroy(&c);
			free(body);
			return;
		}
	}
	t_start = bm_mono_ns();
	deadline = bm_mono_ms() + 120000;
	while (atomic_load(&s_acked) < n && bm_mono_ms() < deadline) {
		bm_event_t ev;
		int rc, wait;

		while (put < n && put - atomic_load(&s_acked) < s_window) {
			bm_id_t id;

			s_bench_id(put, &id);
			s_t0[put] = bm_mono_ns();
			if (ob != NULL) {
				so.id = &id;
				rc = bm_outbox_put(ob, &so, body, size, NULL);
			} else {
				mo.id = &id;
				rc = bm_client_send(c, &mo, body, size, NULL);
			}
			if (rc < 0) {
				break;
			}
			put++;
		}
		if (ob != NULL && bm_outbox_pump(ob) < 0) {
			break;
		}
		wait = ob != NULL ? bm_outbox_timeout(ob) : -1;
		rc = bm_client_recv(c, wait >= 0 && wait < 10 ? wait : 10, &ev);
		while (rc == 0) {
			if (ev.kind == BM_EV_ACK) {
				s_on_ack(&ev.id);
			}
			if (ob != NULL) {
				(void)bm_outbox_handle(ob, &ev);
			}
			bm_event_clear(&ev);
			rc = bm_client_recv(c, 0, &ev);
		}
	}
	s_finish(row, n, bm_mono_ns() - t_start);
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
	free(body);
}

/* ---- JetStream ---- */

#ifdef BM_HAVE_NATS
static void
s_js_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	long k = -1;

	(void)js;
	(void)closure;
	if (pae == NULL && pa != NULL && natsMsg_GetDataLength(msg) >= (int)sizeof k) {
		memcpy(&k, natsMsg_GetData(msg), sizeof k);
		if (k >= 0 && s_lat[k] < 0) {
			s_lat[k] = bm_mono_ns() - s_t0[k];
		}
	}
	atomic_fetch_add(&s_acked, 1);
	natsMsg_Destroy(msg);
}

static void
s_run_js(s_row_t *row, const char *url, long n, size_t size)
{
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	jsOptions jo;
	jsStreamConfig sc;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	const char *subjects[] = {"bench.>"};
	char *body = calloc(1, size < sizeof(long) ? sizeof(long) : size);
	int64_t t_start;

	s_reset(n);
	if (body == NULL || natsConnection_ConnectTo(&nc, url) != NATS_OK) {
		free(body);
		return;
	}
	jsOptions_Init(&jo);
	jo.PublishAsync.MaxPending = s_window;
	jo.PublishAsync.AckHandler = s_js_ack;
	jo.PublishAsync.StallWait = 10000;
	if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) {
		goto out;
	}
	jsStreamConfig_Init(&sc);
	sc.Name = size < 1024 ? "BENCH64" : "BENCH4K";
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	(void)js_AddStream(&si, js, &sc, NULL, &jerr);
	jsStreamInfo_Destroy(si);
	t_start = bm_mono_ns();
	for (long k = 0; k < n; k++) {
		memcpy(body, &k, sizeof k);
		s_t0[k] = bm_mono_ns();
		if (js_PublishAsync(js, "bench.x", body, (int)size, NULL) != NATS_OK) {
			break;
		}
	}
	{
		jsPubOptions po;

		jsPubOptions_Init(&po);
		po.MaxWait = 60000;
		(void)js_PublishAsyncComplete(js, &po);
	}
	s_finish(row, n, bm_mono_ns() - t_start);
out:
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	free(body);
}
#endif

/* ---- Redis ---- */

#ifdef BM_HAVE_HIREDIS
static void
s_run_redis(s_row_t *row, int port, long n, size_t size)
{
	redisContext *rc = redisConnect("127.0.0.1", port);
	char *body = calloc(1, size);
	long sent = 0, got = 0;
	int64_t t_start;

	s_reset(n);
	if (rc == NULL || rc->err || body == NULL) {
		if (rc != NULL) {
			redisFree(rc);
		}
		free(body);
		return;
	}
	t_start = bm_mono_ns();
	while (got < n) {
		redisReply *r = NULL;

		while (sent < n && sent - got < s_window) {
			s_t0[sent] = bm_mono_ns();
			redisAppendCommand(rc, "XADD bench * k %b", body, size);
			sent++;
		}
		if (redisGetReply(rc, (void **)&r) != REDIS_OK || r == NULL) {
			break;
		}
		if (r->type != REDIS_REPLY_ERROR) {
			s_lat[got] = bm_mono_ns() - s_t0[got];
		}
		freeReplyObject(r);
		got++;
	}
	s_finish(row, n, bm_mono_ns() - t_start);
	redisFree(rc);
	free(body);
}
#endif

/* Waits until connecting to 127.0.0.1:port works. */
static bool __attribute__((unused))
s_wait_port(int port, pid_t pid)
{
	int64_t deadline = bm_mono_ms() + 10000;

	while (bm_mono_ms() < deadline) {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
		                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;

		if (fd >= 0) {
			close(fd);
		}
		if (ok) {
			return true;
		}
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			return false;
		}
		(void)nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
	}
	return false;
}

static void
s_usage(FILE *out)
{
	fprintf(out, "usage: bench-outbox [--beastd PATH] [--n64 N] [--n4k N] [--window W]\n"
	             "Acked messages/s and send->ACK latency: the outbox under each sync policy,\n"
	             "the plain mesh, NATS JetStream and Redis XADD (when installed).\n");
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {{"beastd", required_argument, NULL, 'b'},
	                                   {"n64", required_argument, NULL, 's'},
	                                   {"n4k", required_argument, NULL, 'k'},
	                                   {"window", required_argument, NULL, 'w'},
	                                   {"help", no_argument, NULL, 'h'},
	                                   {0}};
	const char *beastd = BM_BENCH_BEASTD;
	long n_small = 100000, n_big = 20000;
	pid_t bd = -1, rcv = -1, nats = -1, redis = -1;
	bool have_js = false, have_redis = false;
	int ch, status = 0, nats_port = -1, redis_port = -1;
	char nats_url[64] = "", jdir[256], path[256];

	/* Used only when the optional peers were found at build time. */
	(void)have_js;
	(void)have_redis;
	(void)nats_url;
	(void)redis_port;

	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'b':
			beastd = optarg;
			break;
		case 's':
			n_small = atol(optarg);
			break;
		case 'k':
			n_big = atol(optarg);
			break;
		case 'w':
			s_window = atoi(optarg);
			break;
		case 'h':
			s_usage(stdout);
			return 0;
		default:
			s_usage(stderr);
			return 2;
		}
	}
	if (n_small < 1 || n_big < 1 || s_window < 1) {
		s_usage(stderr);
		return 2;
	}
	snprintf(s_scratch, sizeof s_scratch, "/tmp/bmbench-outbox.XXXXXX");
	if (mkdtemp(s_scratch) == NULL) {
		perror("bench-outbox: mkdtemp");
		return 1;
	}
	snprintf(s_rundir, sizeof s_rundir, "%s/run", s_scratch);
	snprintf(jdir, sizeof jdir, "%s/journal", s_scratch);
	(void)mkdir(s_rundir, 0700);
	s_t0 = calloc((size_t)(n_small > n_big ? n_small : n_big), sizeof *s_t0);
	s_lat = calloc((size_t)(n_small > n_big ? n_small : n_big), sizeof *s_lat);
	if (s_t0 == NULL || s_lat == NULL) {
		return 1;
	}
	{
		char *av[] = {(char *)beastd, "--dir", s_rundir, NULL};

		bd = s_spawn(av, NULL);
	}
	{
		bm_client_opts_t o = {.dir = s_rundir, .connect_timeout_ms = 200};
		bm_client_t *c = NULL;
		int64_t deadline = bm_mono_ms() + 5000;

		while (bm_client_open(&o, &c) < 0 && bm_mono_ms() < deadline) {
			(void)nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
		}
		if (c == NULL) {
			fprintf(stderr, "bench-outbox: beastd did not start (%s)\n", beastd);
			status = 1;
			goto out;
		}
		bm_client_destroy(&c);
	}
	rcv = fork();
	if (rcv == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(s_receiver());
	}
#ifdef BM_HAVE_NATS
	if (access(BM_BENCH_NATS_SERVER, X_OK) == 0) {
		char ps[16], sd[160];
		char *av[] = {(char *)BM_BENCH_NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", ps, "-sd", sd,
		              NULL};

		nats_port = s_free_port();
		snprintf(ps, sizeof ps, "%d", nats_port);
		snprintf(sd, sizeof sd, "%s/jetstream", s_scratch);
		snprintf(nats_url, sizeof nats_url, "nats://127.0.0.1:%d", nats_port);
		nats = s_spawn(av, NULL);
		have_js = s_wait_port(nats_port, nats);
		if (!have_js) {
			fprintf(stderr, "bench-outbox: nats-server -js did not start; JetStream skipped\n");
		}
	} else {
		fprintf(stderr, "bench-outbox: no nats-server at %s; JetStream skipped\n",
		        BM_BENCH_NATS_SERVER);
	}
#else
	fprintf(stderr, "bench-outbox: built without libnats; JetStream skipped\n");
#endif
#ifdef BM_HAVE_HIREDIS
	if (access(BM_BENCH_REDIS_SERVER, X_OK) == 0) {
		char ps[16], rd[160];
		char *av[] = {(char *)BM_BENCH_REDIS_SERVER, "--bind", "127.0.0.1", "--port", ps,
		              "--dir", rd, "--appendonly", "yes", "--appendfsync", "everysec",
		              "--save", "", "--daemonize", "no", NULL};

		redis_port = s_free_port();
		snprintf(ps, sizeof ps, "%d", redis_port);
		snprintf(rd, sizeof rd, "%s/redis", s_scratch);
		(void)mkdir(rd, 0700);
		redis = s_spawn(av, NULL);
		have_redis = s_wait_port(redis_port, redis);
		if (!have_redis) {
			fprintf(stderr, "bench-outbox: redis-server did not start; Redis skipped\n");
		}
	} else {
		fprintf(stderr, "bench-outbox: no redis-server at %s; Redis skipped\n",
		        BM_BENCH_REDIS_SERVER);
	}
#else
	fprintf(stderr, "bench-outbox: built without hiredis; Redis skipped\n");
#endif
	/* Let the receiver register before the first send. */
	{
		bm_client_opts_t o = {.dir = s_rundir};
		bm_client_t *c = NULL;
		int64_t deadline = bm_mono_ms() + 5000;
		bool up = false;

		if (bm_client_open(&o, &c) == 0) {
			while (!up && bm_mono_ms() < deadline) {
				bm_agent_info_t *v = NULL;
				size_t k = 0;

				if (bm_client_list(c, 1000, &v, &k) == 0) {
					for (size_t i = 0; i < k; i++) {
						up = up || strcmp(v[i].name, "brcv") == 0;
					}
					free(v);
				}
			}
			bm_client_destroy(&c);
		}
		if (!up) {
			fprintf(stderr, "bench-outbox: the receiver did not register\n");
			status = 1;
			goto out;
		}
	}

	printf("send->ACK, %d in flight; N = %ld x 64 B, %ld x 4 KiB; journal on %s\n", s_window,
	       n_small, n_big, s_scratch);
	printf("%-6s %-16s %12s %10s %10s %9s %9s\n", "size", "transport", "acked/s", "p50 us",
	       "p99 us", "vs js", "vs redis");
	for (int si = 0; si < 2; si++) {
		size_t size = si == 0 ? 64 : 4096;
		long n = si == 0 ? n_small : n_big;
		s_row_t rows[6] = {{.name = "outbox/always"},   {.name = "outbox/interval"},
		                   {.name = "outbox/never"},    {.name = "mesh (no store)"},
		                   {.name = "jetstream async"}, {.name = "redis everysec"}};

		s_run_mesh(&rows[0], BM_JOURNAL_SYNC_ALWAYS, n, size, jdir);
		s_run_mesh(&rows[1], BM_JOURNAL_SYNC_INTERVAL, n, size, jdir);
		s_run_mesh(&rows[2], BM_JOURNAL_SYNC_NEVER, n, size, jdir);
		s_run_mesh(&rows[3], -1, n, size, jdir);
#ifdef BM_HAVE_NATS
		if (have_js) {
			s_run_js(&rows[4], nats_url, n, size);
		}
#endif
#ifdef BM_HAVE_HIREDIS
		if (have_redis) {
			s_run_redis(&rows[5], redis_port, n, size);
		}
#endif
		for (int r = 0; r < 6; r++) {
			char vj[16] = "-", vr[16] = "-";

			if (rows[r].rate <= 0) {
				printf("%-6s %-16s %12s\n", si == 0 ? "64 B" : "4 KiB", rows[r].name, "skipped");
				continue;
			}
			if (rows[4].rate > 0) {
				snprintf(vj, sizeof vj, "%.2fx", rows[r].rate / rows[4].rate);
			}
			if (rows[5].rate > 0) {
				snprintf(vr, sizeof vr, "%.2fx", rows[r].rate / rows[5].rate);
			}
			printf("%-6s %-16s %12.0f %10.0f %10.0f %9s %9s%s\n", si == 0 ? "64 B" : "4 KiB",
			       rows[r].name, rows[r].rate, rows[r].p50, rows[r].p99, vj, vr,
			       rows[r].ok ? "" : "  (incomplete)");
		}
		if (si == 0) {
			printf("target (64 B): outbox/always >= jetstream async: %s; >= redis everysec: %s\n",
			       rows[4].rate > 0 ? (rows[0].rate >= rows[4].rate ? "met" : "NOT met")
			                        : "not measured",
			       rows[5].rate > 0 ? (rows[0].rate >= rows[5].rate ? "met" : "NOT met")
			                        : "not measured");
		}
		fflush(stdout);
	}
out:
	if (rcv > 0) {
		(void)kill(rcv, SIGKILL);
		(void)waitpid(rcv, NULL, 0);
	}
	s_stop_child(bd);
	s_stop_child(nats);
	s_stop_child(redis);
	snprintf(path, sizeof path, "%s", s_scratch);
	s_rmrf(path);
	free(s_t0);
	free(s_lat);
	(void)nats_port;
	return status;
}

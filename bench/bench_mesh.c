/*
 * bench_mesh.c - the control mesh benchmark: brokered ping-pong latency and
 * streaming throughput, each measured beside a raw libzmq baseline in the
 * same run, on the same machine, with the same payload.
 *
 * Two transports run the same scenario code through a small ops table:
 *
 *   beastmesh   agents are bm_client_t sessions (DEALER) talking to a real
 *               beastd (ROUTER, ZMQ_ROUTER_MANDATORY) started by this
 *               program on a private scratch directory.  A message is
 *               SEND (header + body) -> broker -> DELIVER (header + body).
 *   raw zmq     agents are bare DEALERs with a fixed routing id talking to a
 *               forked child that runs a minimal ROUTER forwarder, also with
 *               ZMQ_ROUTER_MANDATORY and the same high-water marks.  A
 *               message is [dest, body] in, [src, body] out: the forwarder
 *               routes by the destination frame and rewrites it into the
 *               source, the least a broker can do.  An unroutable or full
 *               destination is answered with ["!", dest], the raw NACK.
 *
 * Both paths are structurally alike: agent thread -> its zmq I/O thread ->
 * ipc -> broker process -> ipc -> other agent's I/O thread -> agent thread;
 * three frames cross the broker each way; every agent owns its zmq context;
 * every send is ZMQ_DONTWAIT.  What the ratio shows is the cost of the mesh
 * itself: header encode/decode, name lookups, ids, the client's event queue.
 *
 * Scenarios (A is the main thread, B a second thread, broker a process):
 *
 *   ping-pong   A sends `size` bytes to B, B replies with the same bytes
 *               (bm_client_reply: a SEND with corr = the request id), A waits
 *               for it.  Round-trip time as seen by A, after a warm-up.  No
 *               ACK frames on this path (the raw side has none either).
 *   stream      A streams N messages to B through the broker, keeping at most
 *               `window` unconfirmed.  Without ACK, B sends a credit message
 *               back every 1000 messages; the clock stops when B has the last
 *               one.  With ACK, B acknowledges every message (bm_client_ack;
 *               raw: a 17-byte ack message) and A uses the ACKs as credit;
 *               the clock stops when A has the last ACK.  The window keeps
 *               every queue far below its high-water mark: any NACK (the
 *               broker's BM_EBUSY) is counted and makes the run invalid.
 *
 * Raw payloads carry a one-byte tag (first byte 'D' data, 'C' credit, 'A'
 * ack) because a bare forwarder has no message types; the mesh carries the
 * same bytes as its opaque body, so both move identical payloads.
 *
 * Processes: the forwarder child is forked before any zmq context exists;
 * beastd is fork+exec'd.  Both get PR_SET_PDEATHSIG, and both are stopped
 * with SIGTERM, SIGKILL after a grace period, and reaped.  Every loop is
 * bounded by a count and by a deadline.
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "bm_mesh.h"

#ifndef BM_BENCH_BEASTD
#define BM_BENCH_BEASTD ""
#endif

#define S_HWM 100000            /* same high-water marks on every socket */
#define S_CREDIT_EVERY 1000     /* stream without ACK: credit granularity */
#define S_PHASE_MS 120000       /* no phase may run longer */
#define S_START_MS 5000         /* beastd / forwarder must answer by then */
#define S_FWD_BATCH 4096        /* forwarder drain batch, like the broker's */

/* ---- options and results ---- */

typedef struct s_opts {
	const char *beastd;     /* beastd binary */
	long count;             /* ping-pong round trips measured */
	long warmup;            /* ping-pong round trips discarded first */
	long stream;            /* messages streamed */
	long window;            /* stream: most unconfirmed messages */
	size_t size;            /* payload bytes */
	bool json;              /* machine-readable output */
	bool strict;            /* exit 3 when a target is missed */
	int only;               /* profiling: 0 = both, 1 = mesh only, 2 = raw only */
	long rounds;            /* raw/mesh alternations; medians are reported */
} s_opts_t;

#define S_ROUNDS_MAX 15

typedef struct s_lat {
	double p50_us;          /* median round trip */
	double p99_us;          /* 99th percentile */
	double mean_us;         /* mean */
	double max_us;          /* worst */
} s_lat_t;

typedef struct s_tput {
	double msgs_s;          /* messages per second */
	double mb_s;            /* payload megabytes (1e6) per second */
	double secs;            /* wall time of the stream */
} s_tput_t;

typedef struct s_counts {
	long nacks;             /* NACKs seen by senders (must stay 0) */
	long efull;             /* local send high-water mark hits */
	long errors;            /* anything else unexpected */
} s_counts_t;

/* ---- transports ---- */

enum { S_IN_MSG = 1, S_IN_ACK, S_IN_NACK, S_IN_OTHER };

/* One received thing, in a transport-neutral shape. */
typedef struct s_in {
	int kind;                       /* S_IN_* */
	const uint8_t *data;            /* MSG: body bytes */
	size_t len;                     /* MSG: body size */
	char from[BM_ADDR_MAX + 1];     /* raw MSG: sender routing id */
	bm_event_t ev;                  /* mesh: the event (owns the body) */
	zmq_msg_t body;                 /* raw: the body frame */
} s_in_t;

typedef struct s_peer s_peer_t;

typedef struct s_ops {
	const char *name;                                            /* for output */
	int (*open)(s_peer_t *p, const char *name);                  /* connect, register */
	void (*close)(s_peer_t *p);                                  /* NULL-safe teardown */
	int (*send)(s_peer_t *p, const char *to, const void *d, size_t n); /* BM_EFULL */
	int (*recv)(s_peer_t *p, int timeout_ms, s_in_t *ret_in);    /* -ETIMEDOUT */
	int (*reply)(s_peer_t *p, const s_in_t *in, const void *d, size_t n); /* to sender */
	int (*ack)(s_peer_t *p, const s_in_t *in);                   /* confirm a MSG */
	void (*clear)(s_in_t *in);                                   /* frees what in owns */
} s_ops_t;

struct s_peer {
	const s_ops_t *ops;             /* transport */
	char name[BM_NAME_MAX + 1];     /* agent name / routing id */
	bm_client_t *c;                 /* mesh: the session */
	void *ctx;                      /* raw: own zmq context */
	void *sock;                     /* raw: DEALER */
};

static char s_dir[64];                  /* scratch runtime dir */
static char s_raw_ep[sizeof s_dir + 32]; /* ipc endpoint of the forwarder */
static volatile sig_atomic_t s_interrupted;
static volatile sig_atomic_t s_fwd_stop;

static void
s_on_signal(int sig)
{
	(void)sig;
	s_interrupted = 1;
	s_fwd_stop = 1;
}

static double
s_ns_to_us(int64_t ns)
{
	return (double)ns / 1000.0;
}

static int
s_zerr(void)
{
	int e = zmq_errno();

	return e > 0 ? -e : -EIO;
}

/* -- mesh transport -- */

static int
s_mesh_open(s_peer_t *p, const char *name)
{
	bm_client_opts_t o = {.dir = s_dir, .name = name, .connect_timeout_ms = S_START_MS};

	snprintf(p->name, sizeof p->name, "%s", name);
	return bm_client_open(&o, &p->c);
}

static void
s_mesh_close(s_peer_t *p)
{
	bm_client_destroy(&p->c);
}

static int
s_mesh_send(s_peer_t *p, const char *to, const void *d, size_t n)
{
	bm_send_opts_t o = {.to = to, .type = "bench"};

	return bm_client_send(p->c, &o, d, n, NULL);
}

static int
s_mesh_recv(s_peer_t *p, int timeout_ms, s_in_t *ret_in)
{
	int rc = bm_client_recv(p->c, timeout_ms, &ret_in->ev);

	if (rc < 0) {
		return rc;
	}
	switch (ret_in->ev.kind) {
	case BM_EV_MESSAGE:
		ret_in->kind = S_IN_MSG;
		ret_in->data = bm_msg_data(ret_in->ev.msg);
		ret_in->len = bm_msg_size(ret_in->ev.msg);
		break;
	case BM_EV_ACK:
		ret_in->kind = S_IN_ACK;
		break;
	case BM_EV_NACK:
		ret_in->kind = S_IN_NACK;
		break;
	default:
		ret_in->kind = S_IN_OTHER;
		break;
	}
	return 0;
}

static int
s_mesh_reply(s_peer_t *p, const s_in_t *in, const void *d, size_t n)
{
	return bm_client_reply(p->c, in->ev.msg, "bench", d, n);
}

static int
s_mesh_ack(s_peer_t *p, const s_in_t *in)
{
	return bm_client_ack(p->c, in->ev.msg);
}

static void
s_mesh_clear(s_in_t *in)
{
	bm_event_clear(&in->ev);
	in->kind = 0;
}

static const s_ops_t s_mesh_ops = {
	.name = "beastmesh",
	.open = s_mesh_open,
	.close = s_mesh_close,
	.send = s_mesh_send,
	.recv = s_mesh_recv,
	.reply = s_mesh_reply,
	.ack = s_mesh_ack,
	.clear = s_mesh_clear,
};

/* -- raw transport -- */

static int
s_raw_send(s_peer_t *p, const char *to, const void *d, size_t n)
{
	if (zmq_send(p->sock, to, strlen(to), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
		return zmq_errno() == EAGAIN ? BM_EFULL : s_zerr();
	}
	/* Multipart is atomic: the body goes where the first frame went. */
	if (zmq_send(p->sock, d, n, ZMQ_DONTWAIT) < 0) {
		return s_zerr();
	}
	return 0;
}

/* Reads one [from, body] message if one is waiting: 0 or -EAGAIN. */
static int
s_raw_read(s_peer_t *p, s_in_t *ret_in)
{
	zmq_msg_t from;
	size_t n;
	int more;

	zmq_msg_init(&from);
	if (zmq_msg_recv(&from, p->sock, ZMQ_DONTWAIT) < 0) {
		zmq_msg_close(&from);
		return s_zerr();
	}
	n = zmq_msg_size(&from) < BM_ADDR_MAX ? zmq_msg_size(&from) : BM_ADDR_MAX;
	memcpy(ret_in->from, zmq_msg_data(&from), n);
	ret_in->from[n] = '\0';
	more = zmq_msg_more(&from);
	zmq_msg_close(&from);
	zmq_msg_init(&ret_in->body);
	if (!more || zmq_msg_recv(&ret_in->body, p->sock, 0) < 0) {
		zmq_msg_close(&ret_in->body);
		return BM_EPROTO;
	}
	/* The forwarder never sends more than two frames; be safe anyway. */
	while (zmq_msg_more(&ret_in->body)) {
		zmq_msg_t extra;

		zmq_msg_init(&extra);
		(void)zmq_msg_recv(&extra, p->sock, 0);
		zmq_msg_close(&extra);
	}
	ret_in->data = zmq_msg_data(&ret_in->body);
	ret_in->len = zmq_msg_size(&ret_in->body);
	if (strcmp(ret_in->from, "!") == 0) {
		ret_in->kind = S_IN_NACK;
	} else if (ret_in->len == 17 && ret_in->data[0] == 'A') {
		ret_in->kind = S_IN_ACK;
	} else {
		ret_in->kind = S_IN_MSG;
	}
	return 0;
}

static int
s_raw_recv(s_peer_t *p, int timeout_ms, s_in_t *ret_in)
{
	int64_t deadline = timeout_ms < 0 ? -1 : bm_mono_ms() + timeout_ms;

	for (;;) {
		zmq_pollitem_t it = {.socket = p->sock, .events = ZMQ_POLLIN};
		int64_t now;
		int rc = s_raw_read(p, ret_in);

		if (rc != -EAGAIN) {
			return rc;
		}
		now = bm_mono_ms();
		if (deadline >= 0 && now >= deadline) {
			return -ETIMEDOUT;
		}
		if (zmq_poll(&it, 1, deadline < 0 ? -1 : (long)(deadline - now)) < 0) {
			return s_zerr();
		}
	}
}

static int
s_raw_reply(s_peer_t *p, const s_in_t *in, const void *d, size_t n)
{
	return s_raw_send(p, in->from, d, n);
}

static int
s_raw_ack(s_peer_t *p, const s_in_t *in)
{
	uint8_t ack[17] = {'A'};

	/* Echo the start of the payload, as the mesh's ACK echoes the id. */
	memcpy(ack + 1, in->data, in->len < 16 ? in->len : 16);
	return s_raw_send(p, in->from, ack, sizeof ack);
}

static void
s_raw_clear(s_in_t *in)
{
	if (in->kind != 0) {
		zmq_msg_close(&in->body);
	}
	in->kind = 0;
}

static void
s_raw_close(s_peer_t *p)
{
	if (p->sock != NULL) {
		zmq_close(p->sock);
		p->sock = NULL;
	}
	if (p->ctx != NULL) {
		zmq_ctx_term(p->ctx);
		p->ctx = NULL;
	}
}

/*
 * Connects a DEALER whose routing id is `name` and waits until the
 * forwarder knows it: a message addressed to ourselves comes back.
 */
static int
s_raw_open(s_peer_t *p, const char *name)
{
	int hwm = S_HWM, linger = 1000, ivl = 100, rc;
	int64_t deadline = bm_mono_ms() + S_START_MS;
	s_in_t in = {0};

	snprintf(p->name, sizeof p->name, "%s", name);
	p->ctx = zmq_ctx_new();
	if (p->ctx == NULL || (p->sock = zmq_socket(p->ctx, ZMQ_DEALER)) == NULL) {
		rc = p->ctx ? s_zerr() : -ENOMEM;
		goto fail;
	}
	if (zmq_setsockopt(p->sock, ZMQ_ROUTING_ID, name, strlen(name)) < 0 ||
	    zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
	    zmq_setsockopt(p->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(p->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(p->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) < 0 ||
	    zmq_connect(p->sock, s_raw_ep) < 0) {
		rc = s_zerr();
		goto fail;
	}
	if ((rc = s_raw_send(p, name, "H", 1)) < 0) {
		goto fail;
	}
	for (;;) {
		int64_t left = deadline - bm_mono_ms();

		if (left <= 0 || s_interrupted) {
			rc = -ETIMEDOUT;
			goto fail;
		}
		rc = s_raw_recv(p, (int)left, &in);
		if (rc == -ETIMEDOUT) {
			continue;
		}
		if (rc < 0) {
			goto fail;
		}
		rc = in.kind == S_IN_MSG && strcmp(in.from, name) == 0;
		s_raw_clear(&in);
		if (rc) {
			return 0;
		}
	}
fail:
	s_raw_close(p);
	return rc;
}

static const s_ops_t s_raw_ops = {
	.name = "raw zmq forwarder",
	.open = s_raw_open,
	.close = s_raw_close,
	.send = s_raw_send,
	.recv = s_raw_recv,
	.reply = s_raw_reply,
	.ack = s_raw_ack,
	.clear = s_raw_clear,
};

/* ---- the raw forwarder (child process) ---- */

/* Forwards one [src, dest, body] message as [dest, src, body]. */
static int
s_fwd_one(void *router, long *ret_dropped)
{
	zmq_msg_t f[3];
	int nf = 0, rc = 0;
	bool more = true;

	while (more) {
		zmq_msg_t *m = nf < 3 ? &f[nf] : &(zmq_msg_t){0};

		zmq_msg_init(m);
		if (zmq_msg_recv(m, router, ZMQ_DONTWAIT) < 0) {
			rc = s_zerr();
			zmq_msg_close(m);
			break;
		}
		more = zmq_msg_more(m);
		if (nf < 3) {
			nf++;
		} else {
			zmq_msg_close(m);
		}
	}
	if (nf == 3) {
		/* With ROUTER_MANDATORY the first frame is where an unknown or
		 * full peer is refused; the rest then goes into the same pipe. */
		if (zmq_msg_send(&f[1], router, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
			(void)zmq_msg_send(&f[0], router, ZMQ_SNDMORE | ZMQ_DONTWAIT);
			(void)zmq_msg_send(&f[2], router, ZMQ_DONTWAIT);
		} else {
			(*ret_dropped)++;
			if (zmq_msg_send(&f[0], router, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
				(void)zmq_send(router, "!", 1, ZMQ_SNDMORE | ZMQ_DONTWAIT);
				(void)zmq_msg_send(&f[1], router, ZMQ_DONTWAIT);
			}
		}
	} else if (nf > 0) {
		(*ret_dropped)++;
	}
	for (int i = 0; i < nf; i++) {
		zmq_msg_close(&f[i]);
	}
	return nf > 0 ? 0 : rc;
}

static int
s_fwd_main(void)
{
	int one = 1, hwm = S_HWM, linger = 100, rc = 0;
	long dropped = 0;
	void *ctx = zmq_ctx_new(), *router = NULL;

	if (ctx == NULL || (router = zmq_socket(ctx, ZMQ_ROUTER)) == NULL ||
	    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0 ||
	    zmq_setsockopt(router, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(router, ZMQ_RCVHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
	    zmq_bind(router, s_raw_ep) < 0) {
		fprintf(stderr, "bench-mesh: forwarder cannot bind %s: %s\n", s_raw_ep,
		        zmq_strerror(zmq_errno()));
		rc = 1;
	}
	while (rc == 0 && !s_fwd_stop) {
		zmq_pollitem_t it = {.socket = router, .events = ZMQ_POLLIN};

		if (zmq_poll(&it, 1, 250) < 0) {
			if (zmq_errno() == EINTR) {
				continue;
			}
			rc = 1;
			break;
		}
		for (int i = 0; i < S_FWD_BATCH; i++) {
			if (s_fwd_one(router, &dropped) < 0) {
				break;
			}
		}
	}
	if (dropped > 0) {
		fprintf(stderr, "bench-mesh: forwarder refused %ld messages\n", dropped);
	}
	if (router != NULL) {
		zmq_close(router);
	}
	if (ctx != NULL) {
		zmq_ctx_term(ctx);
	}
	return rc;
}

/* ---- child processes and the scratch dir ---- */

static pid_t
s_spawn_forwarder(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGTERM);
		_exit(s_fwd_main());
	}
	return pid;
}

static pid_t
s_spawn_beastd(const char *path)
{
	pid_t pid = fork();

	if (pid == 0) {
		char *argv[] = {(char *)path, "--dir", s_dir, NULL};

		(void)prctl(PR_SET_PDEATHSIG, SIGTERM);
		execv(path, argv);
		fprintf(stderr, "bench-mesh: cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	return pid;
}

/* SIGTERM, up to two seconds' grace, then SIGKILL; always reaps. */
static int
s_stop_child(pid_t pid, const char *what)
{
	int status = 0;

	if (pid <= 0) {
		return 0;
	}
	(void)kill(pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid || (r < 0 && errno != EINTR)) {
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		}
		(void)nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	}
	fprintf(stderr, "bench-mesh: %s did not stop on SIGTERM; killing it\n", what);
	(void)kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	return -1;
}

/* Removes the scratch dir and the few plain files left in it. */
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

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
			continue;
		}
		snprintf(p, sizeof p, "%s/%s", s_dir, de->d_name);
		(void)unlink(p);
	}
	closedir(d);
	if (rmdir(s_dir) < 0) {
		fprintf(stderr, "bench-mesh: could not remove %s: %s\n", s_dir, strerror(errno));
	}
}

/* Waits until beastd answers a PING; returns an anonymous client for stats. */
static int
s_wait_beastd(pid_t pid, bm_client_t **ret_client)
{
	int64_t deadline = bm_mono_ms() + S_START_MS;
	bm_client_opts_t o = {.dir = s_dir, .connect_timeout_ms = 500};
	int rc = BM_ENOBROKER;

	while (bm_mono_ms() < deadline && !s_interrupted) {
		int status;

		if (waitpid(pid, &status, WNOHANG) == pid) {
			return -ECHILD;
		}
		rc = bm_client_open(&o, ret_client);
		if (rc == 0 || rc != BM_ENOBROKER) {
			return rc;
		}
		(void)nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	}
	return rc;
}

static int64_t
s_broker_stat(bm_client_t *c, const char *key)
{
	bm_stat_t *st = NULL;
	size_t n = 0;
	int64_t v = -1;

	if (c == NULL || bm_client_stats(c, 2000, &st, &n) < 0) {
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(st[i].key, key) == 0) {
			v = st[i].value;
		}
	}
	free(st);
	return v;
}

/* ---- scenarios ---- */

static int s_run_id;

/* Opens B then A (so B is registered before A sends to it). */
static int
s_open_pair(const s_ops_t *ops, s_peer_t *a, s_peer_t *b)
{
	char na[BM_NAME_MAX + 1], nb[BM_NAME_MAX + 1];
	int rc;

	s_run_id++;
	snprintf(na, sizeof na, "bench-a%d", s_run_id);
	snprintf(nb, sizeof nb, "bench-b%d", s_run_id);
	memset(a, 0, sizeof *a);
	memset(b, 0, sizeof *b);
	a->ops = b->ops = ops;
	if ((rc = ops->open(b, nb)) < 0) {
		fprintf(stderr, "bench-mesh: %s: agent %s cannot connect: %s\n", ops->name, nb,
		        bm_strerror(rc));
		return rc;
	}
	if ((rc = ops->open(a, na)) < 0) {
		fprintf(stderr, "bench-mesh: %s: agent %s cannot connect: %s\n", ops->name, na,
		        bm_strerror(rc));
		ops->close(b);
		return rc;
	}
	return 0;
}

/* What B's thread does, and what it reports back. */
typedef struct s_side {
	s_peer_t *peer;             /* B */
	const char *to;             /* A's name (credit messages) */
	long expect;                /* stream: messages to wait for */
	bool ack;                   /* stream: ACK each message */
	int64_t deadline_ms;        /* monotonic */
	atomic_int stop;            /* set by A when done */
	long got;                   /* messages handled */
	int64_t t_last_ns;          /* stream: when the last one arrived */
	s_counts_t cnt;             /* B's trouble */
} s_side_t;

/* Ping-pong B: echoes each message to its sender, until told to stop. */
static void *
s_echo_main(void *arg)
{
	s_side_t *s = arg;
	s_peer_t *p = s->peer;
	s_in_t in = {0};

	while (!atomic_load(&s->stop) && bm_mono_ms() < s->deadline_ms) {
		int rc = p->ops->recv(p, 50, &in);

		if (rc == -ETIMEDOUT) {
			continue;
		}
		if (rc < 0) {
			s->cnt.errors++;
			break;
		}
		if (in.kind == S_IN_MSG) {
			rc = p->ops->reply(p, &in, in.data, in.len);
			if (rc < 0) {
				s->cnt.errors++;
			}
			s->got++;
		} else if (in.kind == S_IN_NACK) {
			s->cnt.nacks++;
		}
		p->ops->clear(&in);
	}
	return NULL;
}

/* Sends with a bounded retry on local back-pressure (credit, ACKs). */
static int
s_send_retry(s_peer_t *p, const char *to, const void *d, size_t n, s_counts_t *cnt)
{
	int rc = BM_EFULL;

	for (int i = 0; i < 1000 && rc == BM_EFULL; i++) {
		rc = p->ops->send(p, to, d, n);
		if (rc == BM_EFULL) {
			cnt->efull++;
			(void)nanosleep(&(struct timespec){.tv_nsec = 100000}, NULL);
		}
	}
	return rc;
}

/* Stream B: counts data messages, ACKs each or grants credit in batches. */
static void *
s_sink_main(void *arg)
{
	s_side_t *s = arg;
	s_peer_t *p = s->peer;
	s_in_t in = {0};

	while (!atomic_load(&s->stop) && s->got < s->expect && bm_mono_ms() < s->deadline_ms) {
		int rc = p->ops->recv(p, 50, &in);

		if (rc == -ETIMEDOUT) {
			continue;
		}
		if (rc < 0) {
			s->cnt.errors++;
			break;
		}
		if (in.kind == S_IN_MSG && in.len > 0 && in.data[0] == 'D') {
			s->got++;
			if (s->got == s->expect) {
				s->t_last_ns = bm_mono_ns();
			}
			if (s->ack) {
				if (p->ops->ack(p, &in) < 0) {
					s->cnt.errors++;
				}
			} else if (s->got % S_CREDIT_EVERY == 0 || s->got == s->expect) {
				uint8_t credit[9] = {'C'};
				uint64_t got = (uint64_t)s->got;

				memcpy(credit + 1, &got, sizeof got);
				if (s_send_retry(p, s->to, credit, sizeof credit, &s->cnt) < 0) {
					s->cnt.errors++;
				}
			}
		} else if (in.kind == S_IN_NACK) {
			s->cnt.nacks++;
		}
		p->ops->clear(&in);
	}
	return NULL;
}

static int
s_cmp_dbl(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

/* Median of one field over n results (each field on its own). */
static double
s_median_of(const void *base, size_t stride, size_t off, long n)
{
	double v[S_ROUNDS_MAX];

	for (long i = 0; i < n; i++) {
		memcpy(&v[i], (const char *)base + (size_t)i * stride + off, sizeof v[i]);
	}
	qsort(v, (size_t)n, sizeof v[0], s_cmp_dbl);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void
s_median_lat(const s_lat_t *v, long n, s_lat_t *ret)
{
	ret->p50_us = s_median_of(v, sizeof *v, offsetof(s_lat_t, p50_us), n);
	ret->p99_us = s_median_of(v, sizeof *v, offsetof(s_lat_t, p99_us), n);
	ret->mean_us = s_median_of(v, sizeof *v, offsetof(s_lat_t, mean_us), n);
}

static void
s_median_tput(const s_tput_t *v, long n, s_tput_t *ret)
{
	ret->msgs_s = s_median_of(v, sizeof *v, offsetof(s_tput_t, msgs_s), n);
	ret->mb_s = s_median_of(v, sizeof *v, offsetof(s_tput_t, mb_s), n);
	ret->secs = s_median_of(v, sizeof *v, offsetof(s_tput_t, secs), n);
}

static int
s_cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;

	return a < b ? -1 : a > b;
}

/* Nearest-rank percentile of a sorted array. */
static int64_t
s_pct(const int64_t *v, long n, double p)
{
	long k = (long)ceil(p * (double)n) - 1;

	return v[k < 0 ? 0 : (k >= n ? n - 1 : k)];
}

static void
s_fill(uint8_t *buf, size_t size, uint64_t seq)
{
	buf[0] = 'D';
	if (size > 1) {
		memcpy(buf + 1, &seq, size - 1 < sizeof seq ? size - 1 : sizeof seq);
	}
}

static int
s_pingpong(const s_ops_t *ops, const s_opts_t *o, s_lat_t *ret, s_counts_t *cnt)
{
	s_peer_t a, b;
	s_side_t side = {.peer = &b};
	pthread_t th;
	int64_t *rtt = calloc((size_t)o->count, sizeof *rtt), sum = 0;
	uint8_t *buf = calloc(1, o->size);
	long total = o->warmup + o->count, i;
	s_in_t in = {0};
	int rc = 0;

	if (rtt == NULL || buf == NULL) {
		free(rtt);
		free(buf);
		return -ENOMEM;
	}
	if ((rc = s_open_pair(ops, &a, &b)) < 0) {
		free(rtt);
		free(buf);
		return rc;
	}
	fprintf(stderr, "bench-mesh: %s: ping-pong, %ld round trips of %zu B (+%ld warm-up)\n",
	        ops->name, o->count, o->size, o->warmup);
	side.to = a.name;
	side.deadline_ms = bm_mono_ms() + S_PHASE_MS;
	atomic_init(&side.stop, 0);
	if (pthread_create(&th, NULL, s_echo_main, &side) != 0) {
		ops->close(&a);
		ops->close(&b);
		free(rtt);
		free(buf);
		return -EAGAIN;
	}
	for (i = 0; i < total && rc == 0; i++) {
		int64_t t0, t1;
		bool got = false;

		s_fill(buf, o->size, (uint64_t)i);
		t0 = bm_mono_ns();
		if ((rc = ops->send(&a, b.name, buf, o->size)) < 0) {
			break;
		}
		while (!got) {
			if (s_interrupted || bm_mono_ms() > side.deadline_ms) {
				rc = -ETIMEDOUT;
				break;
			}
			rc = ops->recv(&a, 1000, &in);
			if (rc == -ETIMEDOUT) {
				rc = 0;
				continue;
			}
			if (rc < 0) {
				break;
			}
			if (in.kind == S_IN_MSG) {
				got = true;
				/* The echo must be this round's payload, whole. */
				if (in.len != o->size || memcmp(in.data, buf, o->size) != 0) {
					cnt->errors++;
				}
			} else if (in.kind == S_IN_NACK) {
				cnt->nacks++;
				rc = BM_EBUSY;
			}
			ops->clear(&in);
		}
		t1 = bm_mono_ns();
		if (got && i >= o->warmup) {
			rtt[i - o->warmup] = t1 - t0;
			sum += t1 - t0;
		}
	}
	atomic_store(&side.stop, 1);
	pthread_join(th, NULL);
	cnt->errors += side.cnt.errors;
	cnt->nacks += side.cnt.nacks;
	ops->close(&a);
	ops->close(&b);
	if (rc == 0 && i == total) {
		qsort(rtt, (size_t)o->count, sizeof *rtt, s_cmp_i64);
		ret->p50_us = s_ns_to_us(s_pct(rtt, o->count, 0.50));
		ret->p99_us = s_ns_to_us(s_pct(rtt, o->count, 0.99));
		ret->mean_us = s_ns_to_us(sum / o->count);
		ret->max_us = s_ns_to_us(rtt[o->count - 1]);
		fprintf(stderr, "bench-mesh: %s: ping-pong p50 %.1f us, p99 %.1f us\n", ops->name,
		        ret->p50_us, ret->p99_us);
	} else if (rc == 0) {
		rc = -ETIMEDOUT;
	}
	free(rtt);
	free(buf);
	return rc;
}

static int
s_stream(const s_ops_t *ops, const s_opts_t *o, bool ack, s_tput_t *ret, s_counts_t *cnt)
{
	s_peer_t a, b;
	s_side_t side = {.peer = &b, .expect = o->stream, .ack = ack};
	pthread_t th;
	uint8_t *buf = calloc(1, o->size);
	long sent = 0, done = 0;
	int64_t t0, t_end;
	s_in_t in = {0};
	int rc = 0;

	if (buf == NULL) {
		return -ENOMEM;
	}
	if ((rc = s_open_pair(ops, &a, &b)) < 0) {
		free(buf);
		return rc;
	}
	fprintf(stderr, "bench-mesh: %s: streaming %ld messages of %zu B, %s, window %ld\n",
	        ops->name, o->stream, o->size, ack ? "B ACKs each" : "credit every 1000",
	        o->window);
	side.to = a.name;
	side.deadline_ms = bm_mono_ms() + S_PHASE_MS;
	atomic_init(&side.stop, 0);
	if (pthread_create(&th, NULL, s_sink_main, &side) != 0) {
		ops->close(&a);
		ops->close(&b);
		free(buf);
		return -EAGAIN;
	}
	t0 = bm_mono_ns();
	while (done < o->stream) {
		bool blocked = false;

		if (s_interrupted || bm_mono_ms() > side.deadline_ms) {
			rc = -ETIMEDOUT;
			break;
		}
		while (sent < o->stream && sent - done < o->window) {
			s_fill(buf, o->size, (uint64_t)sent);
			rc = ops->send(&a, b.name, buf, o->size);
			if (rc == BM_EFULL) {
				cnt->efull++;
				blocked = true;
				rc = 0;
				break;
			}
			if (rc < 0) {
				break;
			}
			sent++;
		}
		if (rc < 0) {
			break;
		}
		if (sent == o->stream || sent - done >= o->window) {
			blocked = true;
		}
		rc = ops->recv(&a, blocked ? 100 : 0, &in);
		if (rc == -ETIMEDOUT) {
			rc = 0;
			continue;
		}
		if (rc < 0) {
			break;
		}
		if (in.kind == S_IN_MSG && !ack && in.len == 9 && in.data[0] == 'C') {
			uint64_t credit;

			memcpy(&credit, in.data + 1, sizeof credit);
			if ((long)credit > done) {
				done = (long)credit;
			}
		} else if (in.kind == S_IN_ACK && ack) {
			done++;
		} else if (in.kind == S_IN_NACK) {
			/* Lost: count it so the loop ends; the run is invalid. */
			cnt->nacks++;
			done++;
		}
		ops->clear(&in);
	}
	t_end = bm_mono_ns();
	atomic_store(&side.stop, 1);
	pthread_join(th, NULL);
	cnt->errors += side.cnt.errors;
	cnt->nacks += side.cnt.nacks;
	cnt->efull += side.cnt.efull;
	ops->close(&a);
	ops->close(&b);
	free(buf);
	if (rc < 0) {
		return rc;
	}
	if (side.got != o->stream) {
		fprintf(stderr, "bench-mesh: %s: B received %ld of %ld messages\n", ops->name,
		        side.got, o->stream);
		return -EIO;
	}
	/* Without ACK the stream is over when B has the last message. */
	if (!ack) {
		t_end = side.t_last_ns;
	}
	ret->secs = (double)(t_end - t0) / 1e9;
	ret->msgs_s = (double)o->stream / ret->secs;
	ret->mb_s = ret->msgs_s * (double)o->size / 1e6;
	fprintf(stderr, "bench-mesh: %s: %.0f msgs/s, %.1f MB/s\n", ops->name, ret->msgs_s,
	        ret->mb_s);
	return 0;
}

/* ---- output ---- */

typedef struct s_row {
	const char *scenario;   /* what was measured */
	const char *unit;       /* "us", "msgs/s", "MB/s" */
	double mesh;            /* beastmesh value */
	double raw;             /* raw forwarder value */
	double ratio;           /* mesh / raw */
	const char *target;     /* "<= 1.30x", ">= 0.80x", or NULL = info only */
	bool pass;              /* target met */
} s_row_t;

static s_row_t
s_row(const char *scenario, const char *unit, double mesh, double raw, int dir, double limit)
{
	s_row_t r = {.scenario = scenario, .unit = unit, .mesh = mesh, .raw = raw};
	static char targets[2][16];

	r.ratio = raw > 0 ? mesh / raw : 0;
	if (dir < 0) {
		snprintf(targets[0], sizeof targets[0], "<= %.2fx", limit);
		r.target = targets[0];
		r.pass = r.ratio <= limit;
	} else if (dir > 0) {
		snprintf(targets[1], sizeof targets[1], ">= %.2fx", limit);
		r.target = targets[1];
		r.pass = r.ratio >= limit;
	}
	return r;
}

static void
s_print_table(const s_row_t *rows, int n)
{
	printf("%-34s | %-14s | %-17s | %-6s | %-8s | %s\n", "scenario", "beastmesh",
	       "raw zmq forwarder", "ratio", "target", "pass/fail");
	printf("%.34s-+-%.14s-+-%.17s-+-%.6s-+-%.8s-+-%s\n", "------------------------------------",
	       "----------------", "-------------------", "--------", "----------", "---------");
	for (int i = 0; i < n; i++) {
		const s_row_t *r = &rows[i];
		char m[32], w[32];

		if (strcmp(r->unit, "us") == 0) {
			snprintf(m, sizeof m, "%.1f us", r->mesh);
			snprintf(w, sizeof w, "%.1f us", r->raw);
		} else {
			snprintf(m, sizeof m, "%.0f %s", r->mesh, r->unit);
			snprintf(w, sizeof w, "%.0f %s", r->raw, r->unit);
		}
		printf("%-34s | %-14s | %-17s | %5.2fx | %-8s | %s\n", r->scenario, m, w, r->ratio,
		       r->target ? r->target : "-", r->target ? (r->pass ? "pass" : "FAIL") : "info");
	}
}

static void
s_print_json(const s_opts_t *o, const s_row_t *rows, int n, const s_counts_t *cm,
             const s_counts_t *cr, int64_t busy, bool valid)
{
	printf("{\"bench\":\"mesh\",\"transport\":\"ipc\",\"size\":%zu,\"round_trips\":%ld,"
	       "\"warmup\":%ld,\"stream\":%ld,\"window\":%ld,\n",
	       o->size, o->count, o->warmup, o->stream, o->window);
	printf(" \"results\":[\n");
	for (int i = 0; i < n; i++) {
		const s_row_t *r = &rows[i];

		printf("  {\"scenario\":\"%s\",\"unit\":\"%s\",\"beastmesh\":%.3f,\"raw\":%.3f,"
		       "\"ratio\":%.4f,\"target\":%s%s%s,\"pass\":%s}%s\n",
		       r->scenario, r->unit, r->mesh, r->raw, r->ratio, r->target ? "\"" : "",
		       r->target ? r->target : "null", r->target ? "\"" : "",
		       r->target ? (r->pass ? "true" : "false") : "null", i + 1 < n ? "," : "");
	}
	printf(" ],\n \"beastmesh\":{\"nacks\":%ld,\"efull\":%ld,\"errors\":%ld,"
	       "\"broker_nack_busy\":%lld},\n",
	       cm->nacks, cm->efull, cm->errors, (long long)busy);
	printf(" \"raw\":{\"nacks\":%ld,\"efull\":%ld,\"errors\":%ld},\n", cr->nacks, cr->efull,
	       cr->errors);
	printf(" \"valid\":%s}\n", valid ? "true" : "false");
}

/* ---- main ---- */

static void
s_usage(FILE *out)
{
	fprintf(out,
	        "usage: bench-mesh [--beastd PATH] [--count N] [--size BYTES] [--stream N]\n"
	        "                  [--window N] [--warmup N] [--rounds R] [--json] [--strict]\n"
	        "\n"
	        "Brokered ping-pong latency and streaming throughput over ipc, each beside a\n"
	        "raw libzmq DEALER -> ROUTER forwarder -> DEALER baseline in the same run.\n"
	        "Starts its own beastd on a private scratch directory.\n"
	        "\n"
	        "  --beastd PATH  beastd binary (default: the one built with this program)\n"
	        "  --count N      ping-pong round trips measured (20000)\n"
	        "  --warmup N     ping-pong round trips discarded first (1000)\n"
	        "  --size BYTES   payload size (64)\n"
	        "  --stream N     messages per streaming run (200000)\n"
	        "  --window N     streaming: most unconfirmed messages (10000)\n"
	        "  --rounds R     alternate raw and mesh R times, report medians (3)\n"
	        "  --json         print JSON instead of the table\n"
	        "  --strict       exit 3 when a target is missed\n"
	        "  --only WHICH   run only the mesh or only the raw phases (for profiling;\n"
	        "                 prints the phases' numbers on stderr, no table)\n"
	        "\n"
	        "Ping-pong and the stream without ACKs leave their messages unacknowledged:\n"
	        "(N + warm-up) x BYTES and stream N x BYTES must stay under beastd's 256 MiB\n"
	        "cap on unacknowledged bytes.\n"
	        "\n"
	        "Exit status: 0 valid run, 1 a phase failed or a NACK was seen, 2 bad usage,\n"
	        "3 (with --strict) a target was missed.\n");
}

static bool
s_parse_long(const char *s, long lo, long hi, long *ret)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		return false;
	}
	*ret = v;
	return true;
}

/* The built beastd: the path meson gave us, else ../agents/beastd from argv[0]. */
static const char *
s_default_beastd(const char *argv0, char *buf, size_t cap)
{
	const char *slash;

	if (BM_BENCH_BEASTD[0] != '\0' && access(BM_BENCH_BEASTD, X_OK) == 0) {
		return BM_BENCH_BEASTD;
	}
	slash = strrchr(argv0, '/');
	snprintf(buf, cap, "%.*s%sagents/beastd", slash ? (int)(slash - argv0) : 1,
	         slash ? argv0 : ".", "/../");
	return buf;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"beastd", required_argument, NULL, 'b'},
		{"count", required_argument, NULL, 'n'},
		{"warmup", required_argument, NULL, 'W'},
		{"size", required_argument, NULL, 's'},
		{"stream", required_argument, NULL, 'S'},
		{"window", required_argument, NULL, 'w'},
		{"json", no_argument, NULL, 'j'},
		{"strict", no_argument, NULL, 'x'},
		{"only", required_argument, NULL, 'o'},
		{"rounds", required_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	s_opts_t o = {.count = 20000, .warmup = 1000, .stream = 200000, .window = 10000, .size = 64,
	              .rounds = 3};
	struct sigaction sa = {.sa_handler = s_on_signal};
	char beastd_buf[PATH_MAX];
	s_lat_t lm = {0}, lr = {0};
	s_tput_t tm = {0}, tr = {0}, am = {0}, ar = {0};
	s_lat_t rlm[S_ROUNDS_MAX], rlr[S_ROUNDS_MAX];
	s_tput_t rtm[S_ROUNDS_MAX], rtr[S_ROUNDS_MAX], ram[S_ROUNDS_MAX], rar[S_ROUNDS_MAX];
	s_counts_t cm = {0}, cr = {0};
	s_row_t rows[8];
	int c, nrows = 0, failed = 0, rc;
	int64_t busy0 = -1, busy1 = -1, busy = -1;
	pid_t fwd = -1, bd = -1;
	bm_client_t *admin = NULL;
	bool valid, missed = false;
	long v;

	o.beastd = s_default_beastd(argv[0], beastd_buf, sizeof beastd_buf);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			o.beastd = optarg;
			break;
		case 'n':
			if (!s_parse_long(optarg, 1, 100000000, &o.count)) {
				fprintf(stderr, "bench-mesh: --count takes 1..100000000\n");
				return 2;
			}
			break;
		case 'W':
			if (!s_parse_long(optarg, 0, 100000000, &o.warmup)) {
				fprintf(stderr, "bench-mesh: --warmup takes 0..100000000\n");
				return 2;
			}
			break;
		case 's':
			if (!s_parse_long(optarg, 1, 1 << 20, &v)) {
				fprintf(stderr, "bench-mesh: --size takes 1..1048576 bytes\n");
				return 2;
			}
			o.size = (size_t)v;
			break;
		case 'S':
			if (!s_parse_long(optarg, 1, 100000000, &o.stream)) {
				fprintf(stderr, "bench-mesh: --stream takes 1..100000000\n");
				return 2;
			}
			break;
		case 'w':
			if (!s_parse_long(optarg, 1, S_HWM / 4, &o.window)) {
				fprintf(stderr, "bench-mesh: --window takes 1..%d (a quarter of the HWM)\n",
				        S_HWM / 4);
				return 2;
			}
			break;
		case 'j':
			o.json = true;
			break;
		case 'x':
			o.strict = true;
			break;
		case 'o':
			if (strcmp(optarg, "mesh") == 0) {
				o.only = 1;
			} else if (strcmp(optarg, "raw") == 0) {
				o.only = 2;
			} else {
				fprintf(stderr, "bench-mesh: --only takes mesh or raw\n");
				return 2;
			}
			break;
		case 'r':
			if (!s_parse_long(optarg, 1, S_ROUNDS_MAX, &o.rounds)) {
				fprintf(stderr, "bench-mesh: --rounds takes 1..%d\n", S_ROUNDS_MAX);
				return 2;
			}
			break;
		case 'h':
			s_usage(stdout);
			return 0;
		default:
			s_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		s_usage(stderr);
		return 2;
	}
	/* Ping-pong and the stream without ACKs leave every message
	 * unacknowledged in beastd, which refuses deliveries (BUSY) past
	 * its cap (--max-pending): each phase's bytes must fit under it. */
	if ((size_t)o.stream * o.size > BM_PENDING_MAX_DEFAULT ||
	    (size_t)(o.count + o.warmup) * o.size > BM_PENDING_MAX_DEFAULT) {
		fprintf(stderr,
		        "bench-mesh: %ld messages of %zu B in one phase; without ACKs they must "
		        "fit under beastd's %zu MiB cap on unacknowledged bytes (use fewer or "
		        "smaller messages)\n",
		        o.stream > o.count + o.warmup ? o.stream : o.count + o.warmup, o.size,
		        BM_PENDING_MAX_DEFAULT >> 20);
		return 2;
	}
	if (access(o.beastd, X_OK) < 0) {
		fprintf(stderr, "bench-mesh: no beastd at %s (build it, or pass --beastd PATH)\n",
		        o.beastd);
		return 1;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	snprintf(s_dir, sizeof s_dir, "/tmp/bm-bench-XXXXXX");
	if (mkdtemp(s_dir) == NULL) {
		fprintf(stderr, "bench-mesh: cannot make a scratch dir in /tmp: %s\n", strerror(errno));
		return 1;
	}
	(void)chmod(s_dir, 0700);
	snprintf(s_raw_ep, sizeof s_raw_ep, "ipc://%s/raw.sock", s_dir);

	/* Fork the forwarder before this process has any zmq context or thread. */
	fwd = s_spawn_forwarder();
	bd = fwd > 0 ? s_spawn_beastd(o.beastd) : -1;
	if (fwd < 0 || bd < 0) {
		fprintf(stderr, "bench-mesh: fork: %s\n", strerror(errno));
		failed = 1;
		goto out;
	}
	if ((rc = s_wait_beastd(bd, &admin)) < 0) {
		fprintf(stderr, "bench-mesh: beastd (%s) did not answer in %d ms: %s\n", o.beastd,
		        S_START_MS, bm_strerror(rc));
		failed = 1;
		goto out;
	}
	busy0 = s_broker_stat(admin, "nack_busy");

	if (o.only != 0) {
		const s_ops_t *ops = o.only == 1 ? &s_mesh_ops : &s_raw_ops;
		s_counts_t *cnt = o.only == 1 ? &cm : &cr;

		if (s_pingpong(ops, &o, &lm, cnt) < 0 || s_stream(ops, &o, false, &tm, cnt) < 0 ||
		    s_stream(ops, &o, true, &am, cnt) < 0) {
			failed = 1;
		}
		goto out;
	}
	/* Rounds alternate raw and mesh (raw first in each pair, so the mesh
	 * never gets the warmer cache); on a shared machine load drifts, and
	 * the median of several alternations is steadier than one long run. */
	for (long r = 0; r < o.rounds; r++) {
		if (o.rounds > 1) {
			fprintf(stderr, "bench-mesh: round %ld of %ld\n", r + 1, o.rounds);
		}
		if (s_pingpong(&s_raw_ops, &o, &rlr[r], &cr) < 0 ||
		    s_pingpong(&s_mesh_ops, &o, &rlm[r], &cm) < 0 ||
		    s_stream(&s_raw_ops, &o, false, &rtr[r], &cr) < 0 ||
		    s_stream(&s_mesh_ops, &o, false, &rtm[r], &cm) < 0 ||
		    s_stream(&s_raw_ops, &o, true, &rar[r], &cr) < 0 ||
		    s_stream(&s_mesh_ops, &o, true, &ram[r], &cm) < 0) {
			fprintf(stderr, "bench-mesh: a phase failed; no results\n");
			failed = 1;
			goto out;
		}
	}
	s_median_lat(rlr, o.rounds, &lr);
	s_median_lat(rlm, o.rounds, &lm);
	s_median_tput(rtr, o.rounds, &tr);
	s_median_tput(rtm, o.rounds, &tm);
	s_median_tput(rar, o.rounds, &ar);
	s_median_tput(ram, o.rounds, &am);
	busy1 = s_broker_stat(admin, "nack_busy");
	busy = busy0 >= 0 && busy1 >= 0 ? busy1 - busy0 : -1;

	rows[nrows++] = s_row("ping-pong RTT p50", "us", lm.p50_us, lr.p50_us, -1, 1.30);
	rows[nrows++] = s_row("ping-pong RTT p99", "us", lm.p99_us, lr.p99_us, 0, 0);
	rows[nrows++] = s_row("ping-pong RTT mean", "us", lm.mean_us, lr.mean_us, 0, 0);
	rows[nrows++] = s_row("stream, no ACK (msgs/s)", "msgs/s", tm.msgs_s, tr.msgs_s, 1, 0.80);
	rows[nrows++] = s_row("stream, no ACK (MB/s)", "MB/s", tm.mb_s, tr.mb_s, 0, 0);
	rows[nrows++] = s_row("stream, B ACKs each (msgs/s)", "msgs/s", am.msgs_s, ar.msgs_s, 1,
	                      0.80);
	rows[nrows++] = s_row("stream, B ACKs each (MB/s)", "MB/s", am.mb_s, ar.mb_s, 0, 0);
	for (int i = 0; i < nrows; i++) {
		if (rows[i].target != NULL && !rows[i].pass) {
			missed = true;
		}
	}
	valid = cm.nacks == 0 && cr.nacks == 0 && cm.errors == 0 && cr.errors == 0 && busy == 0;
	if (o.json) {
		s_print_json(&o, rows, nrows, &cm, &cr, busy, valid);
	} else {
		printf("bench-mesh: %zu B payloads over ipc; RTT = A -> broker -> B -> broker -> A "
		       "(SEND+DELIVER each way, no ACK);\n"
		       "stream: %ld messages, window %ld; medians of %ld alternating rounds; "
		       "ratio = beastmesh / raw\n\n",
		       o.size, o.stream, o.window, o.rounds);
		s_print_table(rows, nrows);
		printf("\nNACKs: beastmesh %ld (broker nack_busy %lld), raw %ld; local HWM waits: "
		       "beastmesh %ld, raw %ld; errors: %ld, %ld -> %s\n",
		       cm.nacks, (long long)busy, cr.nacks, cm.efull, cr.efull, cm.errors, cr.errors,
		       valid ? "valid run" : "INVALID RUN");
	}
	if (!valid) {
		failed = 1;
	}
out:
	bm_client_destroy(&admin);
	if (s_stop_child(bd, "beastd") != 0 && !failed) {
		fprintf(stderr, "bench-mesh: beastd did not exit cleanly\n");
	}
	(void)s_stop_child(fwd, "the forwarder");
	s_remove_dir();
	if (failed) {
		return 1;
	}
	return o.strict && missed ? 3 : 0;
}

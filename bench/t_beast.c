/*
 * t_beast.c - beastmesh's own transports, through the public C APIs
 * against a real beastd that up() starts on a fresh dir:
 *
 *   beast-mesh-ipc, beast-mesh-tcp   bm_client SEND -> beastd -> DELIVER; the
 *       receiver ACKs every message as agents do (ACKs of a burst leave as
 *       one ACKS frame; in ping-pong each side ACKs its deliveries in
 *       batches of 256 after a reply, so ACKs stay off the measured path
 *       but beastd's count of unacknowledged bytes stays bounded, as it
 *       must: past --max-pending it refuses deliveries with BUSY; a
 *       streaming sender keeps at most 10,000 messages or 64 MiB
 *       unacknowledged, as a reliable sender must); latency,
 *       throughput, latency-load; on ipc also
 *       durable (send -> ACK, nothing stored: the reference for the outbox)
 *       and reconnect (kill -9 beastd, start it again: the time to the
 *       first delivery of a message sent after the kill, clients
 *       re-registering by themselves).
 *   beast-direct   beast-mesh-ipc with direct routes on (docs/shm.md): after
 *       the first 8 messages beastd introduces the two clients and their
 *       messages and ACKs travel a shared-memory ring pair; same scenarios
 *       and the same client calls, so the two rows compare the paths.
 *   beast-mesh-ipc-http   beast-mesh-ipc with beastd --http on and a scraper
 *       process reading /metrics every 100 ms (a new connection each time,
 *       as Prometheus does without keep-alive): what observability costs.
 *   beast-proxy    bm_pub -> beastd's XSUB/XPUB proxy -> bm_sub (header with
 *       publisher id and sequence, gap counting, LVC on in beastd).
 *   beast-proxy-shm   the agents' path to a local publisher's shared-memory
 *       log: bm_pub with an 8 MiB log, bm_sub that hears the publisher
 *       through the proxy, attaches to its log (tethered) and switches to
 *       it (shm_auto); the proxy still carries every message beside it.
 *   beast-outbox-always|interval|never   durable: every message journalled
 *       with that sync policy before it is sent, retired by the ACK.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bb.h"
#include "bm_mesh.h"
#include "bm_proxy.h"

#define S_HELD_MAX 64
/* Ping-pong ACKs its deliveries in batches, after a reply, once this many
 * (or S_LATER_BYTES) are held: the ACKs stay off all but 1 in 256 round
 * trips (1 in 64 at 1 MiB) while beastd's count of unacknowledged bytes
 * stays far below its cap (--max-pending, 256 MiB), past which it would
 * refuse deliveries with BUSY. */
#define S_LATER_MAX 256
#define S_LATER_BYTES ((size_t)64 << 20)
#define S_START_S 5.0
/* Streaming (throughput, latency-load): most sends not yet ACKed. */
#define S_WINDOW_MSGS 10000L
#define S_WINDOW_BYTES ((size_t)64 << 20)

/* ---- beastd ---- */

typedef struct {
	char dir[200];
	char tcp[64];
	int http_port;   /* > 0: beastd --http 127.0.0.1:PORT and a scraper */
	int direct;      /* clients offer direct routes */
	int generation;
} s_bd_t;

static s_bd_t s_bd; /* the group's beastd (parent side; copied into children by fork) */

static pid_t
s_beastd_start(const bb_env_t *env)
{
	char *argv[8];
	int n = 0;
	argv[n++] = (char *)env->beastd;
	argv[n++] = "--dir";
	argv[n++] = s_bd.dir;
	char http[64];
	if (s_bd.tcp[0]) {
		argv[n++] = "--tcp";
		argv[n++] = s_bd.tcp;
	}
	if (s_bd.http_port > 0) {
		snprintf(http, sizeof http, "127.0.0.1:%d", s_bd.http_port);
		argv[n++] = "--http";
		argv[n++] = http;
	}
	argv[n] = NULL;
	char sock[300];
	snprintf(sock, sizeof sock, "%s/mesh.sock", s_bd.dir);
	return bb_server_start(env, argv, "beastd.log", &(bb_ready_t){.sock = sock, .timeout_s = S_START_S});
}

/* The scraper: GET /metrics every 100 ms until killed (or its parent
 * dies), each on a fresh connection, reading the whole answer. */
static void
s_scrape_loop(int port)
{
	static char buf[65536];
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	static const char req[] = "GET /metrics HTTP/1.0\r\nHost: beastd\r\n\r\n";

	inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
	for (;;) {
		double next = bb_now() + 0.1;
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd >= 0 && connect(fd, (struct sockaddr *)&in, sizeof in) == 0 &&
		    write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
			struct pollfd p = {.fd = fd, .events = POLLIN};

			while (poll(&p, 1, 2000) > 0 && read(fd, buf, sizeof buf) > 0) {
			}
		}
		if (fd >= 0) {
			close(fd);
		}
		while (bb_now() < next) {
			usleep((useconds_t)((next - bb_now()) * 1e6) + 1);
		}
	}
}

static pid_t
s_scraper_start(int port)
{
	pid_t parent = getpid(), pid = fork();

	if (pid == 0) {
		/* beast-bench's handlers remove the scratch dir: not ours. */
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent) {
			_exit(0);
		}
		s_scrape_loop(port);
		_exit(0);
	}
	return pid;
}

static int
s_up(bb_env_t *env, char *why, size_t whylen, int tcp)
{
	snprintf(s_bd.dir, sizeof s_bd.dir, "%s/bd%d", env->dir, ++s_bd.generation);
	if (mkdir(s_bd.dir, 0700) != 0) {
		snprintf(why, whylen, "cannot make %s", s_bd.dir);
		return -1;
	}
	s_bd.tcp[0] = '\0';
	if (tcp) {
		int port = bb_free_port();
		snprintf(s_bd.tcp, sizeof s_bd.tcp, "tcp://127.0.0.1:%d", port);
	}
	/* beastd restarts under the reconnect row (s_beastd_start), which
	 * keeps srv_pid[0] current */
	pid_t pid = s_beastd_start(env);
	if (pid < 0) {
		snprintf(why, whylen, "beastd (%s) did not start (its log: beastd.log in the scratch dir)",
		         env->beastd);
		return -1;
	}
	env->srv_pid[env->nsrv++] = pid;
	if (s_bd.http_port > 0) {
		if (bb_wait_listen(s_bd.http_port, NULL, S_START_S) != 0 ||
		    (pid = s_scraper_start(s_bd.http_port)) < 0) {
			snprintf(why, whylen, "beastd --http 127.0.0.1:%d did not serve", s_bd.http_port);
			return -1;
		}
		env->srv_pid[env->nsrv++] = pid;
	}
	return 0;
}

static int
s_up_ipc(bb_env_t *env, char *why, size_t whylen)
{
	s_bd.http_port = 0;
	s_bd.direct = 0;
	return s_up(env, why, whylen, 0);
}

static int
s_up_direct(bb_env_t *env, char *why, size_t whylen)
{
	s_bd.http_port = 0;
	s_bd.direct = 1;
	return s_up(env, why, whylen, 0);
}

static int
s_up_ipc_http(bb_env_t *env, char *why, size_t whylen)
{
	s_bd.direct = 0;
	s_bd.http_port = bb_free_port();
	if (s_bd.http_port <= 0) {
		snprintf(why, whylen, "no free port for --http");
		return -1;
	}
	return s_up(env, why, whylen, 0);
}

static int
s_up_tcp(bb_env_t *env, char *why, size_t whylen)
{
	s_bd.http_port = 0;
	s_bd.direct = 0;
	return s_up(env, why, whylen, 1);
}

/* ---- mesh links ---- */

typedef struct {
	bm_client_t *c;
	bm_event_t held[S_HELD_MAX]; /* deliveries met while draining ACKs */
	int nheld, hhead;
	long sends, acks, nacks;
	int ack;  /* ACK what arrives at once (every scenario but ping-pong) */
	bm_event_t later[S_LATER_MAX]; /* ping-pong: deliveries not ACKed yet */
	int nlater;
	size_t later_bytes;
	int wait; /* streams: a window of unconfirmed sends, all confirmed at close */
} s_ml_t;

static int
s_mesh_open(bb_link_t *l, const char *name)
{
	s_ml_t *m = calloc(1, sizeof *m);
	if (!m)
		return -1;
	l->impl = m;
	m->ack = l->scen != BB_LATENCY; /* ping-pong: ACKed in batches (s_ack_later) */
	m->wait = l->scen == BB_THROUGHPUT || l->scen == BB_LATLOAD;
	bm_client_opts_t o = {.name = name, .connect_timeout_ms = (int)(S_START_S * 1000),
	                      .direct = s_bd.direct ? 1 : -1};
	if (s_bd.tcp[0])
		o.endpoint = s_bd.tcp;
	else
		o.dir = s_bd.dir;
	return bm_client_open(&o, &m->c) == 0 ? 0 : -1;
}

/* One event, waiting up to timeout_ms: ACKs and NACKs are counted, a
 * delivery is kept for recv() (the caller checks there is room).  0, or
 * -1 when none came. */
static int
s_take(s_ml_t *m, int timeout_ms)
{
	bm_event_t ev;
	if (bm_client_recv(m->c, timeout_ms, &ev) != 0)
		return -1;
	if (ev.kind == BM_EV_MESSAGE) {
		m->held[(m->hhead + m->nheld++) % S_HELD_MAX] = ev;
		return 0;
	}
	m->acks += ev.kind == BM_EV_ACK;
	m->nacks += ev.kind == BM_EV_NACK;
	bm_event_clear(&ev);
	return 0;
}

/* Takes what the client has without waiting: ACKs are dropped, deliveries
 * are kept for recv() (a sender drains so its queue never fills). */
static void
s_drain(s_ml_t *m)
{
	while (m->nheld < S_HELD_MAX && s_take(m, 0) == 0)
		;
}

static int
s_mesh_serve(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen)
{
	(void)env;
	snprintf(ep, eplen, "rx%d", (int)getpid());
	return s_mesh_open(l, ep);
}

static int
s_mesh_dial(bb_link_t *l, const bb_env_t *env, const char *ep)
{
	(void)env;
	char self[32];
	snprintf(self, sizeof self, "tx%d", (int)getpid());
	snprintf(l->peer, sizeof l->peer, "%s", ep);
	return s_mesh_open(l, self);
}

/* Ping-pong: the delivery answered by the send just made is ACKed now. */
static void
s_ack_later(s_ml_t *m, int all)
{
	if (!all && m->nlater < S_LATER_MAX && m->later_bytes < S_LATER_BYTES)
		return;
	for (int i = 0; i < m->nlater; i++) {
		(void)bm_client_ack(m->c, m->later[i].msg);
		bm_event_clear(&m->later[i]);
	}
	(void)bm_client_flush(m->c);
	m->nlater = 0;
	m->later_bytes = 0;
}

/*
 * A streaming sender keeps at most this many messages unacknowledged, as a
 * reliable sender must: beastd refuses deliveries with BUSY past 256 MiB
 * not yet ACKed (--max-pending), and the zmq pipes toward a slower
 * receiver hold far more than that at 1 KiB.
 */
static long
s_window(size_t len)
{
	long w = (long)(S_WINDOW_BYTES / (len > 0 ? len : 1));
	return w > S_WINDOW_MSGS ? S_WINDOW_MSGS : w < 4 ? 4 : w;
}

/* Waits (bounded by end) until fewer than window sends are unconfirmed. */
static void
s_wait_window(s_ml_t *m, long window, double end)
{
	while (m->sends - (m->acks + m->nacks) >= window && m->nheld < S_HELD_MAX && bb_now() < end)
		(void)s_take(m, 10);
}

static int
s_mesh_send(bb_link_t *l, const void *buf, size_t len)
{
	s_ml_t *m = l->impl;
	bm_send_opts_t o = {.to = l->peer, .type = "bench"};
	double end = bb_now() + BB_DEADLINE_S;
	int rc;
	if (m->wait)
		s_wait_window(m, s_window(len), end);
	if (++m->sends % 1024 == 0)
		s_drain(m);
	while ((rc = bm_client_send(m->c, &o, buf, len, NULL)) == BM_EFULL && bb_now() < end) {
		s_drain(m);
		zmq_pollitem_t it = {.socket = bm_client_socket(m->c), .events = ZMQ_POLLOUT};
		zmq_poll(&it, 1, 1);
	}
	s_ack_later(m, 0);
	return rc == 0 ? 0 : -1;
}

static long
s_mesh_recv(bb_link_t *l, void *buf, size_t cap, int timeout_ms)
{
	s_ml_t *m = l->impl;
	double end = bb_now() + timeout_ms / 1000.0;
	for (;;) {
		bm_event_t ev;
		if (m->nheld > 0) {
			ev = m->held[m->hhead];
			m->hhead = (m->hhead + 1) % S_HELD_MAX;
			m->nheld--;
		} else {
			int left = (int)((end - bb_now()) * 1000);
			if (bm_client_recv(m->c, left > 0 ? left : 0, &ev) != 0)
				return -1;
		}
		if (ev.kind != BM_EV_MESSAGE) {
			m->acks += ev.kind == BM_EV_ACK;
			m->nacks += ev.kind == BM_EV_NACK;
			bm_event_clear(&ev);
			continue;
		}
		size_t n = bm_msg_size(ev.msg);
		long rc = n <= cap ? (long)n : -1;
		if (rc >= 0)
			memcpy(buf, bm_msg_data(ev.msg), n);
		snprintf(l->peer, sizeof l->peer, "%s", ev.msg->from);
		if (m->ack) {
			(void)bm_client_ack(m->c, ev.msg);
		} else {
			if (m->nlater == S_LATER_MAX)
				s_ack_later(m, 1); /* deliveries not answered: ACK them anyway */
			m->later[m->nlater++] = ev;
			m->later_bytes += n;
			return rc;
		}
		bm_event_clear(&ev);
		return rc;
	}
}

static void
s_mesh_close(bb_link_t *l)
{
	s_ml_t *m = l->impl;
	if (!m)
		return;
	s_ack_later(m, 1);
	/* a sender leaves once its stream is confirmed: destroy would give
	 * queued frames only a second */
	double end = bb_now() + BB_DEADLINE_S;
	while (m->wait && m->sends > 0 && m->acks + m->nacks < m->sends && bb_now() < end) {
		bm_event_t ev;
		if (bm_client_recv(m->c, 100, &ev) != 0)
			continue;
		m->acks += ev.kind == BM_EV_ACK;
		m->nacks += ev.kind == BM_EV_NACK;
		bm_event_clear(&ev);
	}
	for (int i = 0; i < m->nheld; i++)
		bm_event_clear(&m->held[(m->hhead + i) % S_HELD_MAX]);
	bm_client_destroy(&m->c);
	free(m);
	l->impl = NULL;
}

static const char *
s_mesh_refuse(int scen, size_t payload)
{
	if (payload > BM_BODY_MAX_DEFAULT)
		return "over the mesh's 16 MiB body cap (bulk goes through the shm ring)";
	(void)scen;
	return NULL;
}

/* ---- durable: send -> ACK, 4096 in flight, through the outbox or not ---- */

#define S_WINDOW 4096

typedef struct {
	int policy; /* -1: plain mesh; else enum bm_journal_sync */
	const bb_row_t *row;
	const bb_env_t *env;
	char rx[32];
} s_dur_t;

static int
s_acker_main(void *arg, int wfd)
{
	s_dur_t *d = arg;
	bb_link_t l = {.fd = -1, .scen = BB_DURABLE};
	char ok = s_mesh_open(&l, d->rx) == 0;
	bb_write_full(wfd, &ok, 1);
	s_ml_t *m = l.impl;
	double end = bb_now() + 4 * BB_DEADLINE_S;
	while (ok && bb_now() < end) {
		bm_event_t ev;
		int rc = bm_client_recv(m->c, 200, &ev);
		if (rc == -ESHUTDOWN)
			break;
		if (rc != 0)
			continue;
		int stop = ev.kind == BM_EV_MESSAGE && bm_msg_size(ev.msg) > 0 &&
		           *(const char *)bm_msg_data(ev.msg) == BB_TAG_END;
		if (ev.kind == BM_EV_MESSAGE)
			(void)bm_client_ack(m->c, ev.msg);
		bm_event_clear(&ev);
		if (stop)
			break;
	}
	s_mesh_close(&l);
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

static int
s_durable_main(void *arg, int wfd)
{
	s_dur_t *d = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	long n = bb_counts(d->env, BB_DURABLE, d->row->payload).n;
	size_t size = d->row->payload;
	double *t0 = calloc((size_t)n, sizeof *t0), *lat = calloc((size_t)n, sizeof *lat);
	char *body = calloc(1, size);
	bm_client_t *c = NULL;
	bm_outbox_t *ob = NULL;
	char self[32], jdir[300];
	snprintf(self, sizeof self, "tx%d", (int)getpid());
	bm_client_opts_t co = {.dir = s_bd.dir, .name = self, .connect_timeout_ms = (int)(S_START_S * 1000)};
	if (!t0 || !lat || !body || bm_client_open(&co, &c) != 0) {
		bb_fail(&res, "cannot start the sender");
		goto out;
	}
	if (d->policy >= 0) {
		snprintf(jdir, sizeof jdir, "%s/outbox-%s-%d", d->env->dir, self, (int)size);
		bm_outbox_opts_t oo = {.dir = jdir, .client = c, .sync = d->policy, .interval_ms = 100,
		                       .window = S_WINDOW, .ack_timeout_ms = 30000, .max_attempts = 1000};
		if (bm_outbox_open(&oo, &ob) != 0) {
			bb_fail(&res, "cannot open the outbox in %s", jdir);
			goto out;
		}
	}
	for (long i = 0; i < n; i++)
		lat[i] = -1;
	bm_outbox_send_opts_t so = {.to = d->rx, .type = "bench"};
	bm_send_opts_t mo = {.to = d->rx, .type = "bench"};
	long put = 0, acked = 0;
	double start = bb_now(), end = start + 3 * BB_DEADLINE_S;
	while (acked < n && bb_now() < end) {
		while (put < n && put - acked < S_WINDOW) {
			bm_id_t id;
			s_bench_id(put, &id);
			t0[put] = bb_now();
			int rc;
			if (ob) {
				so.id = &id;
				rc = bm_outbox_put(ob, &so, body, size, NULL);
			} else {
				mo.id = &id;
				rc = bm_client_send(c, &mo, body, size, NULL);
			}
			if (rc < 0)
				break;
			put++;
		}
		if (ob && bm_outbox_pump(ob) < 0) {
			bb_fail(&res, "the outbox failed: %s", bm_strerror(bm_outbox_pump(ob)));
			break;
		}
		int wait = ob ? bm_outbox_timeout(ob) : -1;
		bm_event_t ev;
		int rc = bm_client_recv(c, wait >= 0 && wait < 10 ? wait : 10, &ev);
		while (rc == 0) {
			if (ev.kind == BM_EV_ACK) {
				long k = s_id_k(&ev.id);
				if (k >= 0 && k < n && lat[k] < 0) {
					lat[k] = (bb_now() - t0[k]) * 1e6;
					acked++;
				}
			}
			if (ob)
				(void)bm_outbox_handle(ob, &ev);
			bm_event_clear(&ev);
			rc = bm_client_recv(c, 0, &ev);
		}
	}
	double dt = bb_now() - start;
	long k = 0;
	for (long i = 0; i < n; i++)
		if (lat[i] >= 0)
			lat[k++] = lat[i];
	bb_latency_stats(&res, lat, (int)k);
	res.msgs_per_s = dt > 0 ? (double)k / dt : 0;
	res.sent = n;
	res.lost = n - k;
	if (k < n)
		bb_fail(&res, "only %ld of %ld acknowledged in time", k, n);
	snprintf(res.note, sizeof res.note, "%s, %d in flight",
	         d->policy < 0 ? "ACKed, nothing stored" :
	         d->policy == BM_JOURNAL_SYNC_ALWAYS ? "fsync'd (group commit) before sent" :
	         d->policy == BM_JOURNAL_SYNC_INTERVAL ? "synced every 100 ms" : "written, never synced",
	         S_WINDOW);
	/* tell the receiver to stop */
	char bye[64] = {BB_TAG_END};
	mo.id = NULL;
	(void)bm_client_send(c, &mo, bye, sizeof bye, NULL);
	(void)bm_client_flush(c);
out:
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
	free(t0);
	free(lat);
	free(body);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_durable(bb_row_t *r, bb_env_t *env, int policy)
{
	static s_dur_t d;
	memset(&d, 0, sizeof d);
	d.policy = policy;
	d.row = r;
	d.env = env;
	snprintf(d.rx, sizeof d.rx, "ack%d", (int)getpid());
	int afd = -1, sfd = -1;
	pid_t acker = bb_side_spawn(env->cpu_rx, s_acker_main, &d, &afd);
	char ok = 0;
	if (acker < 0 || bb_read_full(afd, &ok, 1, bb_now() + S_START_S) != 0 || !ok) {
		bb_fail(r, "the receiver did not register");
		if (afd >= 0)
			close(afd);
		bb_side_reap(acker, 1.0, r, BB_SIDE_RX);
		return 1;
	}
	pid_t tx = bb_side_spawn(env->cpu_tx, s_durable_main, &d, &sfd);
	if (tx < 0)
		bb_fail(r, "fork");
	else if (bb_side_collect(tx, sfd, 4 * BB_DEADLINE_S, r, BB_SIDE_TX) == 0)
		snprintf(r->status, sizeof r->status, "ok");
	close(afd);
	if (bb_side_reap(acker, 3.0, r, BB_SIDE_RX) != 0 && !r->status[0])
		bb_fail(r, "the receiver failed");
	return 1;
}

/* ---- reconnect: kill -9 beastd mid-stream, start it again ----
 *
 * The sender sends a stamped message every millisecond (refused while
 * beastd is down: this is the plain mesh, no outbox); the receiver
 * reports (send stamp, receipt time) of every message.  A message that
 * crossed the restarted beastd was sent after the kill (one queued before
 * it reaches the new broker from a sender it does not know, and is
 * refused), so the first receipt stamped after the kill, minus the time
 * of the restart, is the row's number.  Lost: messages the sender saw
 * ACKed that the receiver never reported (must be 0). */

typedef struct {
	char rx[32];
	int ctl; /* sender: read end of the parent's stop pipe */
} s_rc_t;

typedef struct {
	double sent, got; /* sender's stamp, receipt; sent < 0: the end, got = count */
} s_rc_seen_t;

static int
s_rc_rx_main(void *arg, int wfd)
{
	s_rc_t *a = arg;
	bb_link_t l = {.fd = -1, .scen = BB_RECONNECT};
	s_rc_seen_t e = {-1, -1};
	if (s_mesh_open(&l, a->rx) != 0) {
		bb_write_full(wfd, &e, sizeof e);
		return 1;
	}
	e.got = 0; /* the stream is up: the parent may kill */
	bb_write_full(wfd, &e, sizeof e);
	char buf[256];
	long count = 0;
	double end = bb_now() + 4 * BB_DEADLINE_S;
	while (bb_now() < end) {
		long n = s_mesh_recv(&l, buf, sizeof buf, 200);
		if (n < 16)
			continue;
		count++; /* the end too: the sender counts its ACK */
		if (buf[0] == BB_TAG_END)
			break;
		s_rc_seen_t seen = {0, bb_now()};
		memcpy(&seen.sent, buf + 8, sizeof seen.sent);
		if (bb_write_full(wfd, &seen, sizeof seen) != 0)
			break;
	}
	e.sent = -1;
	e.got = (double)count;
	bb_write_full(wfd, &e, sizeof e);
	s_mesh_close(&l);
	return 0;
}

static int
s_rc_tx_main(void *arg, int wfd)
{
	s_rc_t *a = arg;
	bb_link_t l = {.fd = -1, .scen = BB_RECONNECT};
	char ok = s_mesh_dial(&l, NULL, a->rx) == 0;
	bb_write_full(wfd, &ok, 1);
	char buf[64] = {BB_TAG_DATA};
	double end = bb_now() + 4 * BB_DEADLINE_S;
	while (ok && bb_now() < end) {
		char c;
		if (read(a->ctl, &c, 1) == 1)
			break; /* the parent says stop */
		double now = bb_now();
		memcpy(buf + 8, &now, sizeof now);
		(void)s_mesh_send(&l, buf, sizeof buf); /* refused while beastd is down: fine */
		s_drain(l.impl);
		usleep(1000);
	}
	buf[0] = BB_TAG_END;
	(void)s_mesh_send(&l, buf, sizeof buf);
	/* The last ACKs, so every message seen ACKed is counted. */
	s_ml_t *m = l.impl;
	double quiet = bb_now() + 0.3;
	while (ok && bb_now() < quiet)
		(void)s_take(m, 50);
	long acks = ok ? m->acks : -1;
	bb_write_full(wfd, &acks, sizeof acks);
	s_mesh_close(&l);
	return 0;
}

static int
s_reconnect(bb_row_t *r, bb_env_t *env)
{
	static s_rc_t a;
	memset(&a, 0, sizeof a);
	snprintf(a.rx, sizeof a.rx, "rcv%d", (int)getpid());
	int ctl[2];
	if (pipe(ctl) != 0) {
		bb_fail(r, "pipe");
		return 1;
	}
	fcntl(ctl[0], F_SETFL, O_NONBLOCK);
	a.ctl = ctl[0];
	int rxfd = -1, txfd = -1;
	pid_t rx = bb_side_spawn(env->cpu_rx, s_rc_rx_main, &a, &rxfd);
	pid_t tx = rx > 0 ? bb_side_spawn(env->cpu_tx, s_rc_tx_main, &a, &txfd) : -1;
	char ok = 0;
	s_rc_seen_t e = {-1, -1};
	int tries = env->quick ? 1 : 3, n = 0;
	double took[3], up[3];
	long received = -1, acked = -1;
	if (tx < 0 || bb_read_full(txfd, &ok, 1, bb_now() + S_START_S) != 0 || !ok ||
	    bb_read_full(rxfd, &e, sizeof e, bb_now() + S_START_S) != 0 || e.got < 0) {
		bb_fail(r, "the stream did not start");
		tries = 0;
	}
	for (int i = 0; i < tries; i++) {
		usleep(300000);
		pid_t old = env->srv_pid[0];
		double t_kill = bb_now();
		kill(old, SIGKILL);
		waitpid(old, NULL, 0);
		env->srv_pid[0] = -1;
		double t_restart = bb_now();
		pid_t pid = s_beastd_start(env);
		if (pid < 0) {
			bb_fail(r, "beastd did not restart");
			break;
		}
		env->srv_pid[0] = pid;
		up[n] = (bb_now() - t_restart) * 1e3; /* beastd listens (the clients' part follows) */
		/* the first receipt of a message sent after the kill */
		int got = 0;
		while (bb_read_full(rxfd, &e, sizeof e, bb_now() + BB_DEADLINE_S) == 0 && e.sent >= 0) {
			if (e.sent >= t_kill) {
				got = 1;
				break;
			}
		}
		if (!got) {
			bb_fail(r, "no delivery within %.0f s of restart %d", BB_DEADLINE_S, i + 1);
			break;
		}
		took[n++] = (e.got - t_restart) * 1e6;
	}
	(void)write(ctl[1], "s", 1);
	close(ctl[1]);
	close(ctl[0]);
	/* The receiver's count ends its reports; the sender's ACK count. */
	while (n == tries && n > 0 &&
	       bb_read_full(rxfd, &e, sizeof e, bb_now() + BB_DEADLINE_S) == 0) {
		if (e.sent < 0) {
			received = (long)e.got;
			break;
		}
	}
	if (tx > 0 && n == tries && n > 0 &&
	    bb_read_full(txfd, &acked, sizeof acked, bb_now() + 3.0) != 0)
		acked = -1;
	if (tx > 0) {
		close(txfd);
		bb_side_reap(tx, 3.0, r, BB_SIDE_TX);
	}
	if (rx > 0) {
		close(rxfd);
		bb_side_reap(rx, 3.0, r, BB_SIDE_RX);
	}
	if (n == tries && n > 0 && (received < 0 || acked < 0)) {
		bb_fail(r, "no final counts from the %s", received < 0 ? "receiver" : "sender");
	} else if (n == tries && n > 0) {
		bb_latency_stats(r, took, n);
		r->has_cdf = 0;
		r->sent = acked;
		r->lost = acked > received ? acked - received : 0;
		double up_max = 0;
		for (int i = 0; i < n; i++)
			up_max = up[i] > up_max ? up[i] : up_max;
		snprintf(r->note, sizeof r->note,
		         "kill -9 + restart of beastd, %d tr%s, beastd up in <= %.0f ms; heartbeat 1000 ms", n,
		         n == 1 ? "y" : "ies", up_max);
		snprintf(r->status, sizeof r->status, "ok");
	}
	return 1;
}

static int
s_mesh_run(bb_row_t *r, bb_env_t *env)
{
	if (r->scen == BB_DURABLE)
		return s_durable(r, env, -1);
	if (r->scen == BB_RECONNECT)
		return s_reconnect(r, env);
	return 0;
}

static const bb_ops_t s_mesh_ops = {.serve = s_mesh_serve,
                                    .dial = s_mesh_dial,
                                    .send = s_mesh_send,
                                    .recv = s_mesh_recv,
                                    .close = s_mesh_close};

const bb_transport_t bb_t_beast_mesh_ipc = {
	.id = "beast-mesh-ipc",
	.about = "beastmesh mesh: bm_client -> beastd (ROUTER) -> bm_client over ipc://, ACKed",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_DURABLE) | BB_S(BB_RECONNECT),
	.up = s_up_ipc,
	.refuse = s_mesh_refuse,
	.ops = &s_mesh_ops,
	.run = s_mesh_run,
};

const bb_transport_t bb_t_beast_direct = {
	.id = "beast-direct",
	.about = "beastmesh mesh with direct routes: bm_client -> shared-memory ring -> bm_client, "
	         "introduced by beastd, ACKed",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT),
	.up = s_up_direct,
	.refuse = s_mesh_refuse,
	.ops = &s_mesh_ops,
};

const bb_transport_t bb_t_beast_mesh_ipc_http = {
	.id = "beast-mesh-ipc-http",
	.about = "beast-mesh-ipc with beastd --http and a scraper reading /metrics every 100 ms",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT),
	.up = s_up_ipc_http,
	.refuse = s_mesh_refuse,
	.ops = &s_mesh_ops,
};

const bb_transport_t bb_t_beast_mesh_tcp = {
	.id = "beast-mesh-tcp",
	.about = "beastmesh mesh over tcp://127.0.0.1 (beastd --tcp)",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT),
	.up = s_up_tcp,
	.refuse = s_mesh_refuse,
	.ops = &s_mesh_ops,
};

/* ---- the outbox ---- */

static int
s_ob_always(bb_row_t *r, bb_env_t *env)
{
	return s_durable(r, env, BM_JOURNAL_SYNC_ALWAYS);
}

static int
s_ob_interval(bb_row_t *r, bb_env_t *env)
{
	return s_durable(r, env, BM_JOURNAL_SYNC_INTERVAL);
}

static int
s_ob_never(bb_row_t *r, bb_env_t *env)
{
	return s_durable(r, env, BM_JOURNAL_SYNC_NEVER);
}

const bb_transport_t bb_t_beast_outbox_always = {
	.id = "beast-outbox-always",
	.about = "beastmesh outbox, sync always: each message fsync'd (group commit) before it is sent",
	.scens = BB_S(BB_DURABLE),
	.up = s_up_ipc,
	.run = s_ob_always,
};

const bb_transport_t bb_t_beast_outbox_interval = {
	.id = "beast-outbox-interval",
	.about = "beastmesh outbox, sync every 100 ms",
	.scens = BB_S(BB_DURABLE),
	.up = s_up_ipc,
	.run = s_ob_interval,
};

const bb_transport_t bb_t_beast_outbox_never = {
	.id = "beast-outbox-never",
	.about = "beastmesh outbox, journal written, never synced",
	.scens = BB_S(BB_DURABLE),
	.up = s_up_ipc,
	.run = s_ob_never,
};

/* ---- the broadcast proxy ---- */

typedef struct {
	bm_pub_t *pub;
	bm_sub_t *sub;
} s_pl_t;

static int
s_proxy_sub_shm(bb_link_t *l, bool shm)
{
	s_pl_t *p = calloc(1, sizeof *p);
	if (!p)
		return -1;
	l->impl = p;
	int keep = l->scen == BB_OVERLOAD ? 0 : 1000000; /* 0: the library's default */
	bm_sub_opts_t o = {.dir = s_bd.dir, .no_lvc = true, .hwm = keep, .shm_auto = shm,
	                   .shm_tethered = shm};
	if (bm_sub_open(&o, &p->sub) != 0 || bm_sub_subscribe(p->sub, "bench") != 0)
		return -1;
	double end = bb_now() + S_START_S;
	while (bb_now() < end) { /* until the proxy says the subscription is in force */
		bm_bcast_t m = {0};
		if (bm_sub_recv(p->sub, 100, &m) == 0) {
			int kind = m.kind;
			bm_bcast_clear(&m);
			if (kind == BM_BCAST_SYNC)
				return 0;
		}
	}
	return -1;
}

static int
s_proxy_sub(bb_link_t *l, const bb_env_t *env)
{
	(void)env;
	return s_proxy_sub_shm(l, false);
}

static int
s_proxy_pub_log(bb_link_t *l, size_t shm_log)
{
	s_pl_t *p = calloc(1, sizeof *p);
	if (!p)
		return -1;
	l->impl = p;
	char name[32];
	snprintf(name, sizeof name, "pub%d", (int)getpid());
	int keep = l->scen == BB_OVERLOAD ? 0 : 1000000;
	bm_pub_opts_t o = {.dir = s_bd.dir, .name = name, .hwm = keep,
	                   .linger_ms = (int)(BB_DEADLINE_S * 1000), .shm_log = shm_log};
	return bm_pub_open(&o, &p->pub) == 0 ? 0 : -1;
}

static int
s_proxy_pub(bb_link_t *l, const bb_env_t *env)
{
	(void)env;
	return s_proxy_pub_log(l, 0);
}

static int
s_proxy_send(bb_link_t *l, const void *buf, size_t len)
{
	s_pl_t *p = l->impl;
	int rc;
	double end = bb_now() + BB_DEADLINE_S;
	while ((rc = bm_pub_send(p->pub, "bench/fan/x", buf, len)) == BM_EFULL && bb_now() < end) {
		if (l->scen == BB_OVERLOAD)
			return 0; /* refused at the publisher: counted as lost */
		zmq_pollitem_t it = {.socket = bm_pub_socket(p->pub), .events = ZMQ_POLLOUT};
		/* Writable at once: a tethered log reader holds us (a publisher
		 * has no fd for log room: yield and retry, as an agent would). */
		if (zmq_poll(&it, 1, 1) > 0) {
			(void)bm_pub_service(p->pub);
			sched_yield();
		}
	}
	return rc == 0 ? 0 : -1;
}

static long
s_proxy_recv(bb_link_t *l, void *buf, size_t cap, int timeout_ms)
{
	s_pl_t *p = l->impl;
	double end = bb_now() + timeout_ms / 1000.0;
	for (;;) {
		bm_bcast_t m = {0};
		int left = (int)((end - bb_now()) * 1000);
		if (bm_sub_recv(p->sub, left > 0 ? left : 0, &m) != 0)
			return -1;
		if (m.kind != BM_BCAST_MSG) {
			bm_bcast_clear(&m);
			continue;
		}
		size_t n = bm_bcast_size(&m);
		long rc = n <= cap ? (long)n : -1;
		if (rc >= 0)
			memcpy(buf, bm_bcast_data(&m), n);
		bm_bcast_clear(&m);
		return rc;
	}
}

static void
s_proxy_close(bb_link_t *l)
{
	s_pl_t *p = l->impl;
	if (!p)
		return;
	bm_pub_destroy(&p->pub);
	bm_sub_destroy(&p->sub);
	free(p);
	l->impl = NULL;
}

static const bb_ops_t s_proxy_ops = {
	.sub = s_proxy_sub, .pub = s_proxy_pub, .send = s_proxy_send, .recv = s_proxy_recv, .close = s_proxy_close};

static int
s_proxy_shm_sub(bb_link_t *l, const bb_env_t *env)
{
	(void)env;
	return s_proxy_sub_shm(l, true);
}

static int
s_proxy_shm_pub(bb_link_t *l, const bb_env_t *env)
{
	(void)env;
	return s_proxy_pub_log(l, (size_t)8 << 20);
}

static const bb_ops_t s_proxy_shm_ops = {
	.sub = s_proxy_shm_sub, .pub = s_proxy_shm_pub, .send = s_proxy_send, .recv = s_proxy_recv,
	.close = s_proxy_close};

const bb_transport_t bb_t_beast_proxy_shm = {
	.id = "beast-proxy-shm",
	.about = "beastmesh broadcast as agents do it locally: bm_pub with a shared-memory log, "
	         "bm_sub switching from the proxy to the log (tethered)",
	.scens = BB_S(BB_FANOUT1) | BB_S(BB_FANOUT8) | BB_S(BB_FANOUT32),
	.up = s_up_ipc,
	.ops = &s_proxy_shm_ops,
};

const bb_transport_t bb_t_beast_proxy = {
	.id = "beast-proxy",
	.about = "beastmesh broadcast: bm_pub -> beastd's XSUB/XPUB proxy (LVC on) -> bm_sub",
	.scens = BB_S(BB_FANOUT1) | BB_S(BB_FANOUT8) | BB_S(BB_FANOUT32) | BB_S(BB_OVERLOAD),
	.up = s_up_ipc,
	.ops = &s_proxy_ops,
};

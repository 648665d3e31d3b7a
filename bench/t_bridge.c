/*
 * t_bridge.c - across hosts: beastmesh's bridge beside bare JetStream,
 * between the same network namespaces (docs/multihost.md).
 *
 * up() makes three namespaces joined by veth pairs — a hub running
 * nats-server (leafnode listener, JetStream domain "hub") and two hosts,
 * h1 and h2, each with a leaf nats-server (JetStream domain h1 / h2) — and
 * for the bridge rows beastd and beast-bridge on each host.  It needs
 * root (ip netns); without it the rows say why.
 *
 *   bridge      a mesh client on h1 sends to name@h2 through beastd, the
 *               bridges and JetStream; the receiver on h2 ACKs; the ACK
 *               comes back the same way.  Latency: send -> ACK, one at a
 *               time.  Throughput: ACKed messages per second, 512 in
 *               flight.
 *   bridge-js   the JetStream part alone: a client in h1 publishes (async)
 *               into h2's stream, a client in h2 pulls it, publishes a
 *               reply into h1's stream and acks, the h1 client pulls the
 *               reply.  The same round trip the bridges make, without
 *               beastd, agents or bridges.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bb.h"

#ifdef BB_HAVE_BRIDGE
#include <nats/nats.h>

#include "beastmesh.h"
#include "bridge_nats.h"

static char s_server[512]; /* nats-server, once found */
#endif

static const char *
s_missing(void)
{
#ifndef BB_HAVE_BRIDGE
	return "not installed: libnats (Debian libnats-dev), at build time: no beast-bridge";
#else
	if (!s_server[0] && bb_find_program("nats-server", s_server, sizeof s_server) != 0)
		return "not installed: nats-server (Debian nats-server)";
	if (geteuid() != 0)
		return "not installed: root, for network namespaces (ip netns)";
	if (access(BB_BRIDGE, X_OK) != 0)
		return "not installed: beast-bridge (not built)";
	return NULL;
#endif
}

#ifdef BB_HAVE_BRIDGE

typedef struct {
	char tag[32];
	int with_mesh;
} s_topo_t;

static int
s_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
s_sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	return rc == 0 ? 0 : -1;
}

/* Polls a log file for a line, up to timeout_s. */
static int
s_wait_log(const char *path, const char *what, int times, double timeout_s)
{
	double end = bb_now() + timeout_s;
	while (bb_now() < end) {
		FILE *f = fopen(path, "r");
		char line[1024];
		int n = 0;
		if (f) {
			while (fgets(line, sizeof line, f))
				n += strstr(line, what) != NULL;
			fclose(f);
		}
		if (n >= times)
			return 0;
		usleep(20000);
	}
	return -1;
}

/* The last non-empty line of a log (the scratch dir goes with the run:
 * a failure's words must travel in the row's status). */
static void
s_last_line(const char *path, char *out, size_t outlen)
{
	FILE *f = fopen(path, "r");
	char line[512];
	snprintf(out, outlen, "(empty log)");
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0])
			snprintf(out, outlen, "%.150s", line);
	}
	fclose(f);
}

static void
s_ns_del(const s_topo_t *t)
{
	(void)s_sh("ip netns del %s-hub 2>/dev/null; ip netns del %s-h1 2>/dev/null; "
	           "ip netns del %s-h2 2>/dev/null",
	           t->tag, t->tag, t->tag);
	bb_core_on_signal_sh(NULL);
}

/* Before the namespaces exist: a SIGINT/SIGTERM of the bench removes them. */
static void
s_ns_on_signal(const s_topo_t *t)
{
	char cmd[256];

	snprintf(cmd, sizeof cmd,
	         "ip netns del %s-hub 2>/dev/null; ip netns del %s-h1 2>/dev/null; "
	         "ip netns del %s-h2 2>/dev/null",
	         t->tag, t->tag, t->tag);
	bb_core_on_signal_sh(cmd);
}

static pid_t
s_spawn_in(bb_env_t *env, const char *ns, const char *log, char *const args[])
{
	char *argv[24] = {"ip", "netns", "exec", (char *)ns};
	int k = 4;
	for (int i = 0; args[i] && k < 23; i++)
		argv[k++] = args[i];
	argv[k] = NULL;
	char path[600];
	snprintf(path, sizeof path, "%s/%s.log", env->dir, log);
	if (env->nsrv >= BB_MAX_SRV)
		return -1; /* untracked, it would outlive the group */
	pid_t pid = bb_server_spawn(argv, -1, path);
	if (pid > 0)
		env->srv_pid[env->nsrv++] = pid;
	return pid;
}

static int
s_up_topo(bb_env_t *env, char *why, size_t whylen, int with_mesh)
{
	static s_topo_t topo;
	s_topo_t *t = &topo;
	memset(t, 0, sizeof *t);
	t->with_mesh = with_mesh;
	snprintf(t->tag, sizeof t->tag, "bbr%d", (int)getpid());
	env->priv = t;
	s_ns_del(t);
	s_ns_on_signal(t);
	/* Fresh stores and runtime dirs for every group: a stream left by
	 * the last group would hand its leftovers to this one. */
	(void)s_sh("cd '%s' && rm -rf js1 js2 jshub d1 d2 hub.log leaf1.log leaf2.log beastd1.log "
	           "beastd2.log bridge1.log bridge2.log",
	           env->dir);
	if (s_sh("ip netns add %s-hub && ip netns add %s-h1 && ip netns add %s-h2 && "
	         "ip -n %s-hub link set lo up && ip -n %s-h1 link set lo up && ip -n %s-h2 link set lo up",
	         t->tag, t->tag, t->tag, t->tag, t->tag, t->tag) != 0) {
		snprintf(why, whylen, "cannot make network namespaces (ip netns add)");
		s_ns_del(t);
		return -1;
	}
	for (int h = 1; h <= 2; h++) {
		if (s_sh("ip link add %sa%d type veth peer name %sb%d && ip link set %sa%d netns %s-hub && "
		         "ip link set %sb%d netns %s-h%d && ip -n %s-hub addr add 10.202.%d.1/24 dev %sa%d && "
		         "ip -n %s-h%d addr add 10.202.%d.2/24 dev %sb%d && ip -n %s-hub link set %sa%d up && "
		         "ip -n %s-h%d link set %sb%d up",
		         t->tag, h, t->tag, h, t->tag, h, t->tag, t->tag, h, t->tag, h, t->tag, h, t->tag, h, t->tag,
		         h, h, t->tag, h, t->tag, t->tag, h, t->tag, h, t->tag, h) != 0) {
			snprintf(why, whylen, "cannot make the veth pairs");
			s_ns_del(t);
			return -1;
		}
	}
	char path[600], ns[64];
	FILE *f;
	snprintf(path, sizeof path, "%s/hub.conf", env->dir);
	if (!(f = fopen(path, "w")))
		goto fail;
	fprintf(f, "server_name: hub\nlisten: 127.0.0.1:4222\njetstream { store_dir: \"%s/jshub\", domain: hub }\n"
	           "leafnodes { listen: 0.0.0.0:7422 }\n",
	        env->dir);
	fclose(f);
	snprintf(ns, sizeof ns, "%s-hub", t->tag);
	if (s_spawn_in(env, ns, "hub", (char *[]){s_server, "-c", path, NULL}) < 0)
		goto fail;
	snprintf(path, sizeof path, "%s/hub.log", env->dir);
	if (s_wait_log(path, "Server is ready", 1, 10) != 0) {
		snprintf(why, whylen, "the hub's nats-server did not start");
		goto fail2;
	}
	for (int h = 1; h <= 2; h++) {
		snprintf(path, sizeof path, "%s/leaf%d.conf", env->dir, h);
		if (!(f = fopen(path, "w")))
			goto fail;
		fprintf(f, "server_name: h%d\nlisten: 127.0.0.1:4222\n"
		           "jetstream { store_dir: \"%s/js%d\", domain: h%d }\n"
		           "leafnodes { remotes [ { urls: [\"nats-leaf://10.202.%d.1:7422\"] } ] }\n",
		        h, env->dir, h, h, h);
		fclose(f);
		char log[16];
		snprintf(ns, sizeof ns, "%s-h%d", t->tag, h);
		snprintf(log, sizeof log, "leaf%d", h);
		if (s_spawn_in(env, ns, log, (char *[]){s_server, "-c", path, NULL}) < 0)
			goto fail;
	}
	for (int h = 1; h <= 2; h++) {
		snprintf(path, sizeof path, "%s/leaf%d.log", env->dir, h);
		if (s_wait_log(path, "Leafnode connection created", 1, 10) != 0) {
			snprintf(why, whylen, "leaf h%d did not reach the hub", h);
			goto fail2;
		}
	}
	if (!with_mesh)
		return 0;
	/* The mesh part: beastd and beast-bridge per host; agents use the
	 * beastd sockets directly (ipc paths need no namespace). */
	for (int h = 1; h <= 2; h++) {
		char dir[200], log[16];
		snprintf(dir, sizeof dir, "%s/d%d", env->dir, h);
		mkdir(dir, 0700);
		snprintf(env->ep[h - 1], sizeof env->ep[0], "%s", dir);
		snprintf(ns, sizeof ns, "%s-h%d", t->tag, h);
		snprintf(log, sizeof log, "beastd%d", h);
		if (s_spawn_in(env, ns, log, (char *[]){(char *)env->beastd, "--dir", dir, NULL}) < 0)
			goto fail;
		snprintf(path, sizeof path, "%s/mesh.sock", dir);
		if (bb_wait_listen(0, path, 10) != 0) {
			snprintf(why, whylen, "beastd on h%d did not start", h);
			goto fail2;
		}
		char host[8];
		snprintf(host, sizeof host, "h%d", h);
		snprintf(log, sizeof log, "bridge%d", h);
		if (s_spawn_in(env, ns, log, (char *[]){BB_BRIDGE, "--host", host, "--dir", dir, "-v", NULL}) < 0)
			goto fail;
		snprintf(path, sizeof path, "%s/bridge%d.log", env->dir, h);
		if (s_wait_log(path, "up: mesh agent", 1, 20) != 0) {
			char last[160];
			s_last_line(path, last, sizeof last);
			snprintf(why, whylen, "beast-bridge on h%d did not start: %s", h, last);
			goto fail2;
		}
	}
	return 0;
fail:
	snprintf(why, whylen, "cannot start the servers");
fail2:
	for (int i = 0; i < env->nsrv; i++)
		bb_server_stop(env->srv_pid[i]);
	env->nsrv = 0;
	s_ns_del(t);
	return -1;
}

static int
s_up_mesh(bb_env_t *env, char *why, size_t whylen)
{
	return s_up_topo(env, why, whylen, 1);
}

static int
s_up_js(bb_env_t *env, char *why, size_t whylen)
{
	return s_up_topo(env, why, whylen, 0);
}

static void
s_down(bb_env_t *env)
{
	/* Bridges and beastds first, then the NATS servers. */
	for (int i = env->nsrv - 1; i >= 0; i--)
		bb_server_stop(env->srv_pid[i]);
	env->nsrv = 0;
	if (env->priv)
		s_ns_del(env->priv);
}

/* ---- the sides ---- */

typedef struct {
	const bb_env_t *env;
	const bb_row_t *row;
	int host; /* 1 or 2 */
} s_arg_t;

static int
s_enter(const bb_env_t *env, int host)
{
	const s_topo_t *t = env->priv;
	char path[128];
	snprintf(path, sizeof path, "/var/run/netns/%s-h%d", t->tag, host);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc = fd >= 0 ? setns(fd, CLONE_NEWNET) : -1;
	if (fd >= 0)
		close(fd);
	return rc;
}

static long
s_count(const bb_env_t *env, int scen)
{
	if (scen == BB_LATENCY)
		return env->quick ? 500 : 2000;
	return env->quick ? 5000 : 20000;
}

#define S_WINDOW 512

static char s_why[96];

/* bridge, receiver on h2: ACK everything until an 'E'. */
static int
s_mesh_rx(void *arg, int wfd)
{
	s_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	bm_client_opts_t o = {.dir = a->env->ep[1], .name = "bbrx"};
	bm_client_t *c = NULL;
	if (bm_client_open(&o, &c) < 0) {
		bb_fail(&res, "receiver cannot join beastd on h2");
		return bb_side_result(wfd, &res) ? 1 : 0;
	}
	char ready = 'R';
	(void)bb_write_full(wfd, &ready, 1);
	double end = bb_now() + 4 * BB_DEADLINE_S;
	while (bb_now() < end) {
		bm_event_t ev;
		if (bm_client_recv(c, 100, &ev) != 0)
			continue;
		int stop = 0;
		if (ev.kind == BM_EV_MESSAGE) {
			stop = bm_msg_size(ev.msg) > 0 && *(const char *)bm_msg_data(ev.msg) == 'E';
			bm_client_ack(c, ev.msg);
		}
		bm_event_clear(&ev);
		if (stop)
			break;
	}
	bm_client_flush(c);
	bm_client_destroy(&c);
	snprintf(res.status, sizeof res.status, "ok");
	return bb_side_result(wfd, &res) ? 1 : 0;
}

/* bridge, sender on h1. */
static int
s_mesh_tx(void *arg, int wfd)
{
	s_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	long n = s_count(a->env, a->row->scen);
	size_t size = a->row->payload;
	bm_client_opts_t o = {.dir = a->env->ep[0], .name = "bbtx"};
	bm_client_t *c = NULL;
	double *lat = calloc((size_t)n, sizeof *lat), *t0 = calloc((size_t)n, sizeof *t0);
	bm_id_t *ids = calloc((size_t)n, sizeof *ids);
	char *body = calloc(1, size);
	long acked = 0, sent = 0, inflight = 0, nacked = 0;
	if (!lat || !t0 || !ids || !body || bm_client_open(&o, &c) < 0) {
		bb_fail(&res, "sender cannot join beastd on h1");
		goto out;
	}
	memset(body, 'D', size);
	bm_send_opts_t so = {.to = "bbrx@h2"};
	int window = a->row->scen == BB_LATENCY ? 1 : S_WINDOW;
	double start = bb_now(), end = start + 3 * BB_DEADLINE_S;
	while (acked + nacked < n && bb_now() < end) {
		while (sent < n && inflight < window) {
			t0[sent] = bb_now();
			int rc = bm_client_send(c, &so, body, size, &ids[sent]);
			if (rc == BM_EFULL)
				break;
			if (rc < 0) {
				bb_fail(&res, "send: %s", bm_strerror(rc));
				goto out;
			}
			sent++;
			inflight++;
		}
		bm_event_t ev;
		if (bm_client_recv(c, 100, &ev) != 0)
			continue;
		if (ev.kind == BM_EV_ACK || ev.kind == BM_EV_NACK) {
			/* ids are time-ordered: look back from the newest */
			for (long k = sent - 1; k >= 0 && k >= sent - 2 * S_WINDOW; k--) {
				if (bm_id_equal(&ids[k], &ev.id)) {
					if (ev.kind == BM_EV_ACK)
						lat[acked++] = (bb_now() - t0[k]) * 1e6;
					else {
						nacked++;
						snprintf(s_why, sizeof s_why, "%.90s", ev.text);
					}
					inflight--;
					break;
				}
			}
		}
		bm_event_clear(&ev);
	}
	double dt = bb_now() - start;
	body[0] = 'E';
	bm_send_opts_t eo = {.to = "bbrx@h2"};
	(void)bm_client_send(c, &eo, body, size, NULL);
	bb_latency_stats(&res, lat, (int)acked);
	res.msgs_per_s = dt > 0 ? (double)acked / dt : 0;
	res.mb_per_s = res.msgs_per_s * (double)size / 1e6;
	res.sent = n;
	res.lost = n - acked;
	if (acked < n)
		bb_fail(&res, "only %ld of %ld ACKed in time (%ld NACKed: %s)", acked, n, nacked, s_why);
	else
		snprintf(res.status, sizeof res.status, "ok");
	snprintf(res.note, sizeof res.note, "send -> ACK from name@h2 via beastd, bridges, JetStream; %d in flight",
	         window);
out:
	bm_client_destroy(&c);
	free(lat);
	free(t0);
	free(ids);
	free(body);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

/* bridge-js helpers: a connection, a stream on "bb.hN.>", a pull consumer. */
static int
s_js_open(int host, natsConnection **nc, jsCtx **js, bm_bn_puller_t **pl)
{
	char name[8], subj[16];
	snprintf(name, sizeof name, "BB%d", host);
	snprintf(subj, sizeof subj, "bb.h%d.>", host);
	if (natsConnection_ConnectTo(nc, "nats://127.0.0.1:4222") != NATS_OK)
		return -1;
	/* JetStream may still be starting on a fresh leaf: try for a while. */
	for (int i = 0; i < 50; i++) {
		jsAccountInfo *ai = NULL;
		jsCtx *probe = NULL;
		int ok = natsConnection_JetStream(&probe, *nc, NULL) == NATS_OK &&
		         js_GetAccountInfo(&ai, probe, NULL, NULL) == NATS_OK;
		jsAccountInfo_Destroy(ai);
		jsCtx_Destroy(probe);
		if (ok)
			break;
		usleep(100000);
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.PublishAsync.MaxPending = S_WINDOW * 2;
	jo.PublishAsync.StallWait = (int64_t)(BB_DEADLINE_S * 1000);
	if (natsConnection_JetStream(js, *nc, &jo) != NATS_OK)
		return -1;
	jsStreamConfig sc;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	const char *subjects[] = {subj};
	jsStreamConfig_Init(&sc);
	sc.Name = name;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	if (js_AddStream(&si, *js, &sc, NULL, &jerr) != NATS_OK)
		return -1;
	jsStreamInfo_Destroy(si);
	char why[256];
	if (bm_bn_consumer(*js, name, "bb", 30000, 16384, why, sizeof why) != 0)
		return -1;
	return bm_bn_puller_open(*nc, name, "bb", pl) == 0 ? 0 : -1;
}

static int
s_js_rx(void *arg, int wfd)
{
	s_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	bm_bn_puller_t *pl = NULL;
	if (s_enter(a->env, 2) != 0 || s_js_open(2, &nc, &js, &pl) != 0) {
		bb_fail(&res, "receiver cannot use JetStream on h2");
		goto out;
	}
	char ready = 'R';
	(void)bb_write_full(wfd, &ready, 1);
	double end = bb_now() + 4 * BB_DEADLINE_S;
	int stop = 0;
	while (!stop && bb_now() < end) {
		natsMsg *m = NULL;
		if (bm_bn_puller_next(pl, 100, &m) != 1)
			continue;
		stop |= natsMsg_GetDataLength(m) > 0 && natsMsg_GetData(m)[0] == 'E';
		(void)js_PublishAsync(js, "bb.h1.r", natsMsg_GetData(m), natsMsg_GetDataLength(m), NULL);
		bm_bn_ack(nc, m);
		natsMsg_Destroy(m);
	}
	snprintf(res.status, sizeof res.status, "ok");
out:
	if (js) {
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = 2000;
		(void)js_PublishAsyncComplete(js, &po);
	}
	bm_bn_puller_destroy(&pl);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_js_tx(void *arg, int wfd)
{
	s_arg_t *a = arg;
	static bb_row_t res;
	memset(&res, 0, sizeof res);
	long n = s_count(a->env, a->row->scen), sent = 0, got = 0;
	size_t size = a->row->payload < 16 ? 16 : a->row->payload;
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	bm_bn_puller_t *pl = NULL;
	double *lat = calloc((size_t)n, sizeof *lat), *t0 = calloc((size_t)n, sizeof *t0);
	char *body = calloc(1, size);
	if (!lat || !t0 || !body || s_enter(a->env, 1) != 0 || s_js_open(1, &nc, &js, &pl) != 0) {
		bb_fail(&res, "sender cannot use JetStream on h1");
		goto out;
	}
	memset(body, 'D', size);
	long window = a->row->scen == BB_LATENCY ? 1 : S_WINDOW;
	double start = bb_now(), end = start + 3 * BB_DEADLINE_S;
	while (got < n && bb_now() < end) {
		while (sent < n && sent - got < window) {
			memcpy(body + 8, &sent, sizeof sent);
			t0[sent] = bb_now();
			if (js_PublishAsync(js, "bb.h2.x", body, (int)size, NULL) != NATS_OK) {
				bb_fail(&res, "publish %ld refused", sent);
				goto out;
			}
			sent++;
		}
		natsMsg *m = NULL;
		if (bm_bn_puller_next(pl, 100, &m) != 1)
			continue;
		long id = -1;
		if (natsMsg_GetDataLength(m) >= 16)
			memcpy(&id, natsMsg_GetData(m) + 8, sizeof id);
		/* at least once: a repeated reply counts once */
		if (id >= 0 && id < n && t0[id] > 0) {
			lat[got++] = (bb_now() - t0[id]) * 1e6;
			t0[id] = 0;
		}
		bm_bn_ack(nc, m);
		natsMsg_Destroy(m);
	}
	double dt = bb_now() - start;
	body[0] = 'E';
	(void)js_PublishAsync(js, "bb.h2.x", body, (int)size, NULL);
	bb_latency_stats(&res, lat, (int)got);
	res.msgs_per_s = dt > 0 ? (double)got / dt : 0;
	res.mb_per_s = res.msgs_per_s * (double)size / 1e6;
	res.sent = n;
	res.lost = n - got;
	if (got < n)
		bb_fail(&res, "only %ld of %ld replies in time", got, n);
	else
		snprintf(res.status, sizeof res.status, "ok");
	snprintf(res.note, sizeof res.note, "publish into h2's stream -> pull, reply into h1's -> pull; %ld in flight",
	         window);
out:
	if (js) {
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = 2000;
		(void)js_PublishAsyncComplete(js, &po);
	}
	bm_bn_puller_destroy(&pl);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	free(lat);
	free(t0);
	free(body);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_run_pair(bb_row_t *r, bb_env_t *env, int (*rx)(void *, int), int (*tx)(void *, int))
{
	if (r->scen != BB_LATENCY && r->scen != BB_THROUGHPUT)
		return 0;
	static s_arg_t arx, atx;
	arx = (s_arg_t){env, r, 2};
	atx = (s_arg_t){env, r, 1};
	int rfd = -1, tfd = -1;
	pid_t rp = bb_side_spawn(env->cpu_rx, rx, &arx, &rfd);
	char ready = 0;
	if (rp < 0 || bb_read_full(rfd, &ready, 1, bb_now() + 15) != 0 || ready != 'R') {
		bb_row_t rxrow;
		memset(&rxrow, 0, sizeof rxrow);
		if (rp > 0)
			(void)bb_side_collect(rp, rfd, 5, &rxrow, BB_SIDE_RX);
		bb_fail(r, "the receiver did not start: %s", rxrow.status[0] ? rxrow.status : "no word from it");
		return 1;
	}
	pid_t tp = bb_side_spawn(env->cpu_tx, tx, &atx, &tfd);
	if (tp < 0) {
		bb_fail(r, "fork");
		return 1;
	}
	int rc = bb_side_collect(tp, tfd, 4 * BB_DEADLINE_S, r, BB_SIDE_TX);
	bb_row_t rxrow;
	memset(&rxrow, 0, sizeof rxrow);
	(void)bb_side_collect(rp, rfd, 4 * BB_DEADLINE_S, &rxrow, BB_SIDE_RX);
	r->side_cpu_s[BB_SIDE_RX] = rxrow.side_cpu_s[BB_SIDE_RX];
	r->side_rss_kb[BB_SIDE_RX] = rxrow.side_rss_kb[BB_SIDE_RX];
	if (rc == 0 && strncmp(r->status, "failed", 6) != 0)
		snprintf(r->status, sizeof r->status, "ok");
	return 1;
}

static int
s_run_mesh(bb_row_t *r, bb_env_t *env)
{
	return s_run_pair(r, env, s_mesh_rx, s_mesh_tx);
}

static int
s_run_js(bb_row_t *r, bb_env_t *env)
{
	return s_run_pair(r, env, s_js_rx, s_js_tx);
}

#define S_UP_MESH s_up_mesh
#define S_UP_JS s_up_js
#define S_DOWN s_down
#define S_RUN_MESH s_run_mesh
#define S_RUN_JS s_run_js
#else
#define S_UP_MESH NULL
#define S_UP_JS NULL
#define S_DOWN NULL
#define S_RUN_MESH NULL
#define S_RUN_JS NULL
#endif

static const char *
s_refuse(int scen, size_t payload)
{
	(void)scen;
	return payload > (1u << 20) ? "cross-host rows stop at 1 MiB" : NULL;
}

const bb_transport_t bb_t_bridge = {
	.id = "bridge",
	.about = "across hosts (network namespaces): name@host through beastd, beast-bridge and JetStream, end-to-end ACK",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT),
	.missing = s_missing,
	.up = S_UP_MESH,
	.down = S_DOWN,
	.refuse = s_refuse,
	.run = S_RUN_MESH,
};

const bb_transport_t bb_t_bridge_js = {
	.id = "bridge-js",
	.about = "across hosts (network namespaces): bare JetStream publish/pull round trip between the same leaves",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT),
	.missing = s_missing,
	.up = S_UP_JS,
	.down = S_DOWN,
	.refuse = s_refuse,
	.run = S_RUN_JS,
};

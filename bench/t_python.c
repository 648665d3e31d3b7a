/*
 * t_python.c - the agent runtime from C and from Python, side by side.
 *
 * Two transports that differ only in the language of the measured agent:
 * beast-agent-c (bm_agent in C) and beast-agent-py (the beastmesh Python
 * package, cffi over the same libbeastmesh).  The other end is always a C
 * bm_agent, so the ratio of a py row to its c row is the cost of Python:
 *   latency 64 B     request/reply round trip (bm_agent_request /
 *                    Agent.request) to a C agent that echoes; full RTT,
 *                    not half, in both rows;
 *   throughput 64 B  reliable sends through the sender's outbox (sync
 *                    never on both sides: the binding is measured, not
 *                    fdatasync), counted once every one is ACKed;
 *   bulk 100 MiB     a point cloud (PLY, xyz + rgb) from a C sender to the
 *                    measured agent, from the send call until the receiver's
 *                    handler holds its points (Python: a numpy view of the
 *                    shared pages) and its answer is back at the sender.
 * Python sides run python/bench/bb_side.py in a child pinned like any side
 * and print one "ok k=v ..." line that becomes the row.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bb.h"
#include "bm_agent.h"

#define S_CLOUD_BYTES (100u << 20)

typedef struct {
	atomic_int stop;   /* the helper agent ends */
	atomic_int ready;  /* the helper agent registered */
} s_shared_t;

typedef struct {
	bb_row_t *row;
	bb_env_t *env;
	s_shared_t *sh;
	int py;            /* the measured agent is Python */
	int n;             /* requests, messages or clouds */
	char dir[512];     /* beastd's runtime dir */
	char state[600];   /* agents' state root */
} s_arg_t;

static char s_dir[512];
static int s_gen;

/* ---- beastd per group ---- */

static int
s_up(bb_env_t *env, char *why, size_t whylen)
{
	char sock[600];
	char *argv[] = {(char *)env->beastd, "--dir", s_dir, NULL};

	snprintf(s_dir, sizeof s_dir, "%s/ag%d", env->dir, ++s_gen);
	if (mkdir(s_dir, 0700) != 0) {
		snprintf(why, whylen, "cannot make %s", s_dir);
		return -1;
	}
	snprintf(sock, sizeof sock, "%s/mesh.sock", s_dir);
	return bb_server_up(env, argv, "beastd-agent.log",
	                    &(bb_ready_t){.sock = sock, .timeout_s = 5.0}, why, whylen);
}

static const char *
s_missing_py(void)
{
	static int checked, ok;

	if (!checked) {
		checked = 1;
		ok = access("/usr/bin/python3", X_OK) == 0 &&
		     system("/usr/bin/python3 -c 'import cffi, numpy' >/dev/null 2>&1") == 0;
	}
	return ok ? NULL : "not installed: /usr/bin/python3 with python3-cffi and python3-numpy";
}

static const char *
s_refuse(int scen, size_t payload)
{
	if (scen == BB_BULK) {
		return payload == S_CLOUD_BYTES ? NULL : "a cloud of 100 MiB only";
	}
	return payload == 64 ? NULL : "64 B only";
}

/* ---- C agents ---- */

static bm_agent_t *
s_open(const s_arg_t *a, const char *name)
{
	bm_agent_opts_t o = {.name = name, .dir = a->dir, .sync = BM_JOURNAL_SYNC_NEVER};
	char st[700];
	bm_agent_t *ag = NULL;

	snprintf(st, sizeof st, "%s/%s", a->state, name);
	o.state_dir = st;
	return bm_agent_open(&o, &ag) == 0 ? ag : NULL;
}

static int
s_echo(bm_agent_t *ag, bm_msg_t *m, void *arg)
{
	(void)arg;
	return bm_agent_reply(ag, m, m->type, bm_msg_data(m), bm_msg_size(m));
}

static int
s_got(bm_agent_t *ag, bm_msg_t *m, void *arg)
{
	(void)ag;
	(void)m;
	(*(int *)arg)++;
	return 0;
}

/* The C end that is not measured: an echo (latency), a sink (throughput)
 * or the cloud sender (bulk, which measures and reports). */
static int
s_peer_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	bm_agent_t *ag = s_open(a, "bbpeer");
	double deadline = bb_now() + 6 * BB_DEADLINE_S;

	(void)wfd;
	if (ag == NULL) {
		return 2;
	}
	bm_agent_on_request(ag, "bb.echo", s_echo, NULL);
	atomic_store(&a->sh->ready, 1);
	while (!atomic_load(&a->sh->stop) && bb_now() < deadline) {
		(void)bm_agent_step(ag, 20);
	}
	bm_agent_destroy(&ag);
	return 0;
}

static void
s_on_reply(bm_agent_t *ag, int err, bm_msg_t *reply, void *arg)
{
	(void)ag;
	(void)reply;
	*(int *)arg = err == 0 ? 1 : -1;
}

static int
s_request_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	bb_row_t res = *a->row;
	bm_agent_t *ag = s_open(a, "bbc");
	double *us = calloc((size_t)a->n, sizeof *us), deadline = bb_now() + 3 * BB_DEADLINE_S;
	char body[64];
	int k = 0;

	memset(body, 'x', sizeof body);
	if (ag == NULL || us == NULL) {
		bb_fail(&res, "agent or memory");
		return bb_side_result(wfd, &res) ? 1 : 0;
	}
	for (int i = -200; i < a->n && bb_now() < deadline; i++) {
		int done = 0;
		double t0 = bb_now();

		if (bm_agent_request(ag, "bbpeer", "bb.echo", body, sizeof body, 5000, s_on_reply,
		                     &done) < 0) {
			break;
		}
		while (done == 0 && bb_now() < deadline) {
			(void)bm_agent_step(ag, 100);
		}
		if (done != 1) {
			break;
		}
		if (i >= 0) {
			us[k++] = (bb_now() - t0) * 1e6;
		}
	}
	if (k == a->n) {
		bb_latency_stats(&res, us, k);
		snprintf(res.status, sizeof res.status, "ok");
	} else {
		bb_fail(&res, "%d of %d round trips", k, a->n);
	}
	snprintf(res.note, sizeof res.note, "request/reply round trip (not half)");
	free(us);
	bm_agent_destroy(&ag);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

static int
s_stream_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	bb_row_t res = *a->row;
	bm_agent_t *ag = s_open(a, "bbc");
	bm_agent_send_opts_t so = {.type = "bb.data"};
	char body[64];
	double t0;
	int rc = 0;

	memset(body, 's', sizeof body);
	if (ag == NULL) {
		bb_fail(&res, "agent");
		return bb_side_result(wfd, &res) ? 1 : 0;
	}
	t0 = bb_now();
	for (int i = 0; i < a->n && rc == 0; i++) {
		rc = bm_agent_send(ag, "bbpeer", &so, body, sizeof body, NULL);
		if ((i & 255) == 255) {
			(void)bm_agent_step(ag, 0);
		}
	}
	if (rc == 0 && (rc = bm_agent_drain(ag, (int)(3 * BB_DEADLINE_S * 1000))) == 0) {
		res.msgs_per_s = a->n / (bb_now() - t0);
		res.mb_per_s = res.msgs_per_s * 64 / 1e6;
		res.sent = a->n;
		snprintf(res.status, sizeof res.status, "ok");
	} else {
		bb_fail(&res, "%s", bm_strerror(rc));
	}
	snprintf(res.note, sizeof res.note, "reliable sends, outbox sync never, all ACKed");
	bm_agent_destroy(&ag);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

/* C cloud receiver: what a C consumer of a zero-copy cloud does — find the
 * points after the header and read one, in place. */
static int
s_on_cloud(bm_agent_t *ag, const char *from, bm_blob_t *blob, void *arg)
{
	const char *d = bm_blob_data(blob), *end;
	size_t n = bm_blob_size(blob);
	volatile float z = 0;

	(void)arg;
	end = memmem(d, n < 65536 ? n : 65536, "end_header\n", 11);
	if (end != NULL && n >= 15) {
		memcpy((float *)&z, d + n - 15 + 8, sizeof(float));
	}
	return bm_agent_send(ag, from, &(bm_agent_send_opts_t){.type = "bb.got"}, "1", 1, NULL);
}

static int
s_cloudrx_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	bm_agent_t *ag = s_open(a, "bbc");
	double deadline = bb_now() + 6 * BB_DEADLINE_S;

	(void)wfd;
	if (ag == NULL || bm_agent_on_blob(ag, s_on_cloud, NULL) < 0) {
		return 2;
	}
	atomic_store(&a->sh->ready, 1);
	while (!atomic_load(&a->sh->stop) && bb_now() < deadline) {
		(void)bm_agent_step(ag, 20);
	}
	(void)bm_agent_drain(ag, 2000);
	bm_agent_destroy(&ag);
	return 0;
}

static int
s_cloudtx_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	bb_row_t res = *a->row;
	bm_agent_t *ag = s_open(a, "bbpeer");
	bm_cloud_t *c = NULL;
	double us[16], deadline = bb_now() + 6 * BB_DEADLINE_S;
	int got = 0, k = 0, rc = 0;

	if (ag == NULL || bm_cloud_generate(S_CLOUD_BYTES / 15, BM_CLOUD_XYZ_RGB, 7, &c) < 0) {
		bb_fail(&res, "agent or cloud");
		return bb_side_result(wfd, &res) ? 1 : 0;
	}
	bm_agent_on_message(ag, "bb.got", s_got, &got);
	for (int i = 0; i < a->n && i < 16 && rc == 0 && bb_now() < deadline; i++) {
		double t0 = bb_now();

		rc = bm_agent_send_cloud(ag, "bbc", "bb.ply", c, 30000);
		while (rc == 0 && got <= i && bb_now() < deadline) {
			(void)bm_agent_step(ag, 50);
		}
		if (got > i) {
			us[k++] = (bb_now() - t0) * 1e6;
		}
	}
	if (k == a->n) {
		bb_latency_stats(&res, us, k);
		res.mb_per_s = S_CLOUD_BYTES / res.p50_us;
		snprintf(res.status, sizeof res.status, "ok");
	} else {
		bb_fail(&res, "%d of %d clouds (%s)", k, a->n, rc ? bm_strerror(rc) : "timeout");
	}
	snprintf(res.note, sizeof res.note, "cloud send -> receiver's handler holds the points -> answer");
	(void)bm_agent_drain(ag, 2000);
	bm_cloud_destroy(&c);
	bm_agent_destroy(&ag);
	return bb_side_result(wfd, &res) ? 1 : 0;
}

/* ---- Python sides ---- */

static int
s_py_main(void *arg, int wfd)
{
	s_arg_t *a = arg;
	bb_row_t res = *a->row;
	char cmd[2048], line[1 << 16];
	const char *mode = a->row->scen == BB_LATENCY ? "request"
	                   : a->row->scen == BB_THROUGHPUT ? "stream" : "cloudrx";
	FILE *p;
	int ok = 0;

	setenv("PYTHONPATH", BB_PYTHON_DIR, 1);
	if (getenv("BEASTMESH_LIB") == NULL) {
		setenv("BEASTMESH_LIB", BB_LIBBEASTMESH, 1);
	}
	snprintf(cmd, sizeof cmd,
	         "exec /usr/bin/python3 %s/bench/bb_side.py %s '%s' '%s' bbc %s %d %s 2>&1",
	         BB_PYTHON_DIR, mode, a->dir, a->state,
	         a->row->scen == BB_BULK ? "" : "bbpeer", a->n,
	         a->row->scen == BB_THROUGHPUT ? "64" : "");
	if ((p = popen(cmd, "r")) == NULL) {
		bb_fail(&res, "cannot run python3");
		return bb_side_result(wfd, &res) ? 1 : 0;
	}
	while (fgets(line, sizeof line, p) != NULL) {
		if (strncmp(line, "ready", 5) == 0) {
			atomic_store(&a->sh->ready, 1);
		} else if (strncmp(line, "ok ", 3) == 0) {
			char *s;

			ok = 1;
			if ((s = strstr(line, "samples=")) != NULL) {
				int n = 0;
				double *us = calloc((size_t)a->n, sizeof *us);

				for (s += 8; us != NULL && n < a->n && *s != '\0' && *s != '\n';) {
					char *end;

					us[n++] = strtod(s, &end);
					s = *end == ',' ? end + 1 : end;
					if (end == s && *end != ',') {
						break;
					}
				}
				if (us != NULL && n > 0) {
					bb_latency_stats(&res, us, n);
				}
				free(us);
				snprintf(res.note, sizeof res.note, "request/reply round trip (not half)");
			}
			if ((s = strstr(line, "msgs_per_s=")) != NULL) {
				res.msgs_per_s = strtod(s + 11, NULL);
				res.mb_per_s = res.msgs_per_s * 64 / 1e6;
				res.sent = a->n;
				snprintf(res.note, sizeof res.note,
				         "reliable sends, outbox sync never, all ACKed");
			}
		} else if (strncmp(line, "failed", 6) == 0 && !res.status[0]) {
			line[strcspn(line, "\n")] = '\0';
			bb_fail(&res, "%.100s", line);
		}
	}
	if (pclose(p) != 0 && !res.status[0]) {
		bb_fail(&res, "python side exited with an error");
	}
	if (ok && !res.status[0]) {
		snprintf(res.status, sizeof res.status, "ok");
	}
	return bb_side_result(wfd, &res) ? 1 : 0;
}

/* ---- rows ---- */

static int
s_run(bb_row_t *r, bb_env_t *env, int py)
{
	static s_arg_t a;
	int quick = env->quick, pfd = -1, mfd = -1;
	pid_t peer = -1, meas = -1;
	double t_end;

	memset(&a, 0, sizeof a);
	a.row = r;
	a.env = env;
	a.py = py;
	snprintf(a.dir, sizeof a.dir, "%s", s_dir);
	snprintf(a.state, sizeof a.state, "%s/state%d", s_dir, (int)getpid());
	mkdir(a.state, 0700);
	a.n = r->scen == BB_LATENCY ? (quick ? 2000 : 10000)
	      : r->scen == BB_THROUGHPUT ? (quick ? 50000 : 300000) : (quick ? 3 : 5);
	a.sh = mmap(NULL, sizeof *a.sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (a.sh == MAP_FAILED) {
		bb_fail(r, "mmap");
		return 1;
	}
	memset(a.sh, 0, sizeof *a.sh);
	if (r->scen == BB_BULK) {
		/* the measured agent receives; the C sender measures */
		meas = bb_side_spawn(env->cpu_rx, py ? s_py_main : s_cloudrx_main, &a, &mfd);
		t_end = bb_now() + BB_DEADLINE_S;
		while (meas > 0 && !atomic_load(&a.sh->ready) && bb_now() < t_end) {
			usleep(2000);
		}
		peer = bb_side_spawn(env->cpu_tx, s_cloudtx_main, &a, &pfd);
		if (peer < 0 || bb_side_collect(peer, pfd, 6 * BB_DEADLINE_S, r, BB_SIDE_TX) != 0) {
			if (!r->status[0]) {
				bb_fail(r, "cloud sender");
			}
		}
		atomic_store(&a.sh->stop, 1);
		if (meas > 0) {
			if (py) {
				bb_row_t scratch = *r;

				(void)bb_side_collect(meas, mfd, 3 * BB_DEADLINE_S, &scratch, BB_SIDE_RX);
			} else {
				(void)bb_side_reap(meas, 3 * BB_DEADLINE_S, r, BB_SIDE_RX);
			}
		}
	} else {
		peer = bb_side_spawn(env->cpu_rx, s_peer_main, &a, &pfd);
		t_end = bb_now() + BB_DEADLINE_S;
		while (peer > 0 && !atomic_load(&a.sh->ready) && bb_now() < t_end) {
			usleep(2000);
		}
		meas = bb_side_spawn(env->cpu_tx,
		                     py ? s_py_main : r->scen == BB_LATENCY ? s_request_main : s_stream_main,
		                     &a, &mfd);
		if (meas < 0 || bb_side_collect(meas, mfd, 6 * BB_DEADLINE_S, r, BB_SIDE_TX) != 0) {
			if (!r->status[0]) {
				bb_fail(r, "measured side");
			}
		}
		atomic_store(&a.sh->stop, 1);
		if (peer > 0) {
			(void)bb_side_reap(peer, 3 * BB_DEADLINE_S, r, BB_SIDE_RX);
		}
	}
	if (!r->status[0]) {
		snprintf(r->status, sizeof r->status, "ok");
	}
	munmap(a.sh, sizeof *a.sh);
	return 1;
}

static int
s_run_c(bb_row_t *r, bb_env_t *env)
{
	return s_run(r, env, 0);
}

static int
s_run_py(bb_row_t *r, bb_env_t *env)
{
	return s_run(r, env, 1);
}

const bb_transport_t bb_t_agent_c = {
	.id = "beast-agent-c",
	.about = "the agent runtime in C (bm_agent): request RTT, ACKed sends, cloud hand-off",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_BULK),
	.up = s_up,
	.refuse = s_refuse,
	.run = s_run_c,
};

const bb_transport_t bb_t_agent_py = {
	.id = "beast-agent-py",
	.about = "the same from Python (python/beastmesh, cffi over libbeastmesh)",
	.scens = BB_S(BB_LATENCY) | BB_S(BB_THROUGHPUT) | BB_S(BB_BULK),
	.missing = s_missing_py,
	.up = s_up,
	.refuse = s_refuse,
	.run = s_run_py,
};

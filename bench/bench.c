/*
 * beast-bench - the transport shootout: beastmesh's transports beside raw
 * ZeroMQ, a Unix socket, NATS, Redis, iceoryx and nng, measured in one run
 * on this machine.
 *
 * A row is (scenario, transport, payload, placement, mode).  The matrix is
 * built from every transport's scenarios (bb_table.c); each round measures
 * every row once, group by group (a group shares the servers up() started),
 * and the median round of each row is reported: in a terminal table with
 * ratios against a baseline, and in results.csv, results.json, report.md
 * and (with gnuplot) two plots in the output dir.  The targets are then
 * checked by reading results.json back.
 *
 * Exit status: 0 when every row was measured (or was skipped because a
 * peer is not installed), 1 when a row failed, 2 on a usage error.
 */
#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bb.h"
#include "bb_core.h"
#include "bb_report.h"
#include "bm_common.h"

#ifndef BB_BEASTD
#define BB_BEASTD "beastd"
#endif

#define S_MAX_ROWS 1024
#define S_MAX_ROUNDS 9

static char s_dir[64];

static void
s_on_signal(int sig)
{
	bb_core_kill_tracked();
	bb_core_run_signal_sh(); /* namespaces a row made */
	if (s_dir[0]) { /* the scratch dir goes too (fork and exec are safe here) */
		pid_t pid = fork();
		if (pid == 0) {
			execlp("rm", "rm", "-rf", "--", s_dir, (char *)NULL);
			_exit(127);
		}
		if (pid > 0)
			waitpid(pid, NULL, 0);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---- the matrix ---- */

typedef struct {
	bb_row_t r;                      /* the reported (median) round */
	const bb_transport_t *t;
	bb_row_t round[S_MAX_ROUNDS];
	int nround;
	char first_failure[128];
	int nfail;
} s_cell_t;

static s_cell_t s_cells[S_MAX_ROWS];
static int s_ncells;

static const size_t s_lat_quick[] = {64, 4096, 0};
static const size_t s_lat_full[] = {64, 1024, 4096, 16384, 262144, 1048576, 0};
static const size_t s_tp_quick[] = {64, 4096, 65536, 0};
static const size_t s_tp_full[] = {64, 1024, 4096, 16384, 262144, 1048576, 16777216, 104857600, 0};
static const size_t s_small[] = {64, 4096, 0};
static const size_t s_one[] = {64, 0};
static const size_t s_bulk_quick[] = {16u << 20, 100u << 20, 0};
static const size_t s_bulk_full[] = {1u << 20, 16u << 20, 100u << 20, 0};

static const size_t *
s_payloads(int scen, int quick)
{
	switch (scen) {
	case BB_LATENCY: return quick ? s_lat_quick : s_lat_full;
	case BB_THROUGHPUT: return quick ? s_tp_quick : s_tp_full;
	case BB_BULK: return quick ? s_bulk_quick : s_bulk_full;
	case BB_RECONNECT:
	case BB_LATLOAD:
	case BB_OVERLOAD: return s_one;
	default: return s_small;
	}
}

static int
s_matches(const char *only, const bb_transport_t *t, int scen)
{
	if (!only)
		return 1;
	char pats[512];
	snprintf(pats, sizeof pats, "%s", only);
	char *save = NULL;
	for (char *p = strtok_r(pats, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		if (fnmatch(p, t->id, 0) == 0 || fnmatch(p, bb_scen_name[scen], 0) == 0)
			return 1;
		/* scenario:transport narrows both */
		char *colon = strchr(p, ':');
		if (colon) {
			*colon = '\0';
			int ok = fnmatch(p, bb_scen_name[scen], 0) == 0 && fnmatch(colon + 1, t->id, 0) == 0;
			*colon = ':';
			if (ok)
				return 1;
		}
	}
	return 0;
}

static void
s_add(const bb_transport_t *t, int scen, size_t payload, const char *placement, const char *mode)
{
	if (s_ncells >= S_MAX_ROWS)
		return;
	s_cell_t *c = &s_cells[s_ncells++];
	memset(c, 0, sizeof *c);
	c->t = t;
	bb_row_t *r = &c->r;
	r->scen = scen;
	snprintf(r->scenario, sizeof r->scenario, "%s", bb_scen_name[scen]);
	snprintf(r->transport, sizeof r->transport, "%s", t->id);
	r->payload = payload;
	snprintf(r->placement, sizeof r->placement, "%s", placement);
	snprintf(r->mode, sizeof r->mode, "%s", mode ? mode : "");
}

static void
s_build(const char *only, int quick, int unpinned)
{
	for (int i = 0; bb_transports[i]; i++) {
		const bb_transport_t *t = bb_transports[i];
		for (int sc = 0; sc < BB_NSCEN; sc++) {
			unsigned scens = t->scens;
			if ((scens & BB_S(BB_LATENCY)) && t->ops && t->ops->serve && t->ops->dial)
				scens |= BB_S(BB_LATLOAD);
			if (!(scens & BB_S(sc)) || !s_matches(only, t, sc))
				continue;
			const char *pl[3] = {"cross-cpu", NULL, NULL};
			if (sc == BB_LATENCY) {
				pl[1] = "same-cpu";
				pl[2] = unpinned ? "unpinned" : NULL;
			} else if (sc != BB_THROUGHPUT && sc != BB_BULK && sc != BB_LATLOAD) {
				pl[0] = "unpinned"; /* many processes: let the scheduler place them */
			}
			const size_t *pay = s_payloads(sc, quick);
			static const char *const nomode[] = {"", NULL};
			const char *const *modes = t->modes && (sc == BB_LATENCY || sc == BB_THROUGHPUT) ? t->modes : nomode;
			for (int m = 0; modes[m]; m++)
				for (int p = 0; p < 3 && pl[p]; p++)
					for (int k = 0; pay[k]; k++)
						s_add(t, sc, pay[k], pl[p], modes[m]);
		}
	}
}

/* ---- running ---- */

static int s_tty;

static void
s_progress(int done, int total, int round, int rounds, const bb_row_t *r)
{
	char line[200];
	snprintf(line, sizeof line, "[%d/%d] round %d/%d  %s %s %zu B %s%s%s", done, total, round, rounds, r->scenario,
	         r->transport, r->payload, r->placement, r->mode[0] ? " " : "", r->mode);
	if (s_tty)
		fprintf(stderr, "\r\033[K%s", line);
	else
		fprintf(stderr, "%s\n", line);
}

/* The beastd to start: $BEAST_BENCH_BEASTD, the build tree's, the one
 * next to this binary (installed), else beastd on PATH. */
static const char *
s_beastd(void)
{
	static char path[1024];
	const char *bd = getenv("BEAST_BENCH_BEASTD");
	if (bd && *bd)
		return bd;
	if (access(BB_BEASTD, X_OK) == 0)
		return BB_BEASTD;
	ssize_t n = readlink("/proc/self/exe", path, sizeof path - 8);
	if (n > 0) {
		path[n] = '\0';
		char *slash = strrchr(path, '/');
		if (slash) {
			strcpy(slash + 1, "beastd");
			if (access(path, X_OK) == 0)
				return path;
		}
	}
	return "beastd";
}

static void
s_env_for(bb_env_t *env, const char *placement, int scen, int quick)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	memset(env, 0, sizeof *env);
	env->dir = s_dir;
	env->quick = quick;
	env->placement = placement;
	env->scen = scen;
	env->beastd = s_beastd();
	if (!strcmp(placement, "cross-cpu")) {
		env->cpu_tx = 0;
		env->cpu_rx = ncpu > 1 ? 1 : 0;
		env->cpu_srv = ncpu > 2 ? 2 : env->cpu_rx;
	} else if (!strcmp(placement, "same-cpu")) {
		env->cpu_tx = env->cpu_rx = env->cpu_srv = 0;
	} else {
		env->cpu_tx = env->cpu_rx = env->cpu_srv = -1;
	}
}

/* Servers' CPU time and peak RSS, read from /proc while they run. */
static void
s_srv_sample(const bb_env_t *env, double *cpu, long *rss)
{
	*cpu = 0;
	*rss = 0;
	long hz = sysconf(_SC_CLK_TCK);
	for (int i = 0; i < env->nsrv; i++) {
		char p[64], buf[1024];
		snprintf(p, sizeof p, "/proc/%d/stat", (int)env->srv_pid[i]);
		FILE *f = fopen(p, "r");
		if (f) {
			if (fgets(buf, sizeof buf, f)) {
				char *c = strrchr(buf, ')');
				unsigned long ut = 0, st = 0;
				if (c && sscanf(c + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
					*cpu += (double)(ut + st) / (double)hz;
			}
			fclose(f);
		}
		snprintf(p, sizeof p, "/proc/%d/status", (int)env->srv_pid[i]);
		f = fopen(p, "r");
		if (f) {
			while (fgets(buf, sizeof buf, f)) {
				long kb;
				if (sscanf(buf, "VmHWM: %ld", &kb) == 1 && kb > *rss)
					*rss = kb;
			}
			fclose(f);
		}
	}
}

static void
s_srv_reset_peak(const bb_env_t *env)
{
	for (int i = 0; i < env->nsrv; i++) {
		char p[64];
		snprintf(p, sizeof p, "/proc/%d/clear_refs", (int)env->srv_pid[i]);
		FILE *f = fopen(p, "w");
		if (f) {
			fputs("5", f); /* resets the peak RSS the row then reads */
			fclose(f);
		}
	}
}

static void
s_measure(s_cell_t *c, bb_env_t *env, int up_ok, const char *up_why)
{
	bb_row_t r = c->r;
	memset(r.status, 0, sizeof r.status);
	if (!up_ok) {
		bb_fail(&r, "%s", up_why);
	} else {
		double cpu0;
		long rss;
		s_srv_reset_peak(env);
		s_srv_sample(env, &cpu0, &rss);
		bb_core_measure(c->t, &r, env);
		double cpu1;
		s_srv_sample(env, &cpu1, &rss);
		r.side_cpu_s[BB_SIDE_SRV] += cpu1 - cpu0;
		if (rss > r.side_rss_kb[BB_SIDE_SRV])
			r.side_rss_kb[BB_SIDE_SRV] = rss;
	}
	if (!r.status[0])
		bb_fail(&r, "the driver left no status");
	r.cpu_s = 0;
	r.rss_kb = 0;
	for (int s = 0; s < BB_NSIDES; s++) {
		r.cpu_s += r.side_cpu_s[s];
		if (r.side_rss_kb[s] > r.rss_kb)
			r.rss_kb = r.side_rss_kb[s];
	}
	if (!strcmp(r.status, "ok")) {
		c->round[c->nround++] = r;
	} else {
		if (c->nfail++ == 0)
			snprintf(c->first_failure, sizeof c->first_failure, "%s", r.status);
	}
}

/* Lower is better for latency-like rows, higher for rates. */
static int
s_lower_better(int scen)
{
	return scen == BB_LATENCY || scen == BB_BULK || scen == BB_RECONNECT || scen == BB_LATLOAD;
}

static double
s_key(const bb_row_t *r)
{
	return s_lower_better(r->scen) ? r->p50_us : r->msgs_per_s;
}

static int
s_cmp_key(const void *a, const void *b)
{
	double x = s_key(a), y = s_key(b);
	return x < y ? -1 : x > y;
}

static void
s_settle(s_cell_t *c, int rounds)
{
	bb_row_t *r = &c->r;
	if (c->nround == 0) {
		if (c->nfail)
			snprintf(r->status, sizeof r->status, "%s", c->first_failure);
		return;
	}
	bb_row_t sorted[S_MAX_ROUNDS];
	memcpy(sorted, c->round, sizeof(bb_row_t) * (size_t)c->nround);
	qsort(sorted, (size_t)c->nround, sizeof sorted[0], s_cmp_key);
	*r = sorted[(c->nround - 1) / 2]; /* the median round (the lower middle of an even count) */
	r->rounds = c->nround;
	if (c->nfail)
		snprintf(r->note, sizeof r->note, "%d of %d rounds failed (%.60s)", c->nfail, rounds, c->first_failure);
}

static void
s_usage(FILE *f)
{
	fprintf(f,
	        "usage: beast-bench [--quick] [--rounds N] [--only PATTERN] [--baseline TRANSPORT]\n"
	        "                   [--unpinned] [--json FILE] [--out DIR] [--list] [--check FILE]\n"
	        "                   [--version]\n"
	        "  --quick        every transport, a few payloads, one round (about a minute)\n"
	        "  --rounds N     repetitions of every row; the median is reported (default 3; quick 1)\n"
	        "  --only PAT     rows whose scenario or transport matches a glob; a comma list;\n"
	        "                 SCENARIO:TRANSPORT narrows both (e.g. 'latency:beast-*')\n"
	        "  --baseline T   ratios against transport T (default zmq-dealer-ipc)\n"
	        "  --unpinned     also measure latency rows without pinning\n"
	        "  --json FILE    also write the rows as JSON to FILE\n"
	        "  --out DIR      results.csv, results.json, report.md, plots (default bench/results/<UTC time>)\n"
	        "  --list         the transports and what they measure, then exit\n"
	        "  --check FILE   check the targets against a results.json, then exit (1 when one is missed)\n"
	        "  --version      print \"beast-bench beastmesh VERSION\" and exit\n");
}

static void
s_list(void)
{
	for (int i = 0; bb_transports[i]; i++) {
		const bb_transport_t *t = bb_transports[i];
		const char *miss = t->missing ? t->missing() : NULL;
		printf("%-22s %s\n%-22s scenarios:", t->id, t->about, "");
		for (int s = 0; s < BB_NSCEN; s++)
			if (t->scens & BB_S(s))
				printf(" %s", bb_scen_name[s]);
		printf("%s%s\n", miss ? "  -- " : "", miss ? miss : "");
	}
}

int
main(int argc, char **argv)
{
	const char *only = NULL, *json = NULL, *out = NULL, *baseline = "zmq-dealer-ipc", *check = NULL;
	int quick = 0, rounds = -1, unpinned = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--quick")) {
			quick = 1;
		} else if (!strcmp(a, "--unpinned")) {
			unpinned = 1;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			s_usage(stdout);
			return 0;
		} else if (!strcmp(a, "--version")) {
			printf("beast-bench beastmesh %s\n", bm_version());
			return 0;
		} else if (!strcmp(a, "--list")) {
			s_list();
			return 0;
		} else if ((!strcmp(a, "--only") || !strcmp(a, "--json") || !strcmp(a, "--out") ||
		            !strcmp(a, "--baseline") || !strcmp(a, "--rounds") || !strcmp(a, "--check")) &&
		           i + 1 < argc) {
			const char *v = argv[++i];
			if (!strcmp(a, "--only"))
				only = v;
			else if (!strcmp(a, "--json"))
				json = v;
			else if (!strcmp(a, "--out"))
				out = v;
			else if (!strcmp(a, "--check"))
				check = v;
			else if (!strcmp(a, "--rounds")) {
				char *end;
				long n = strtol(v, &end, 10);
				if (*end || n < 1 || n > S_MAX_ROUNDS) {
					fprintf(stderr, "beast-bench: --rounds wants 1..%d, not '%s'\n", S_MAX_ROUNDS, v);
					return 2;
				}
				rounds = (int)n;
			} else
				baseline = v;
		} else {
			fprintf(stderr, "beast-bench: unknown or incomplete option '%s'\n", a);
			s_usage(stderr);
			return 2;
		}
	}
	if (check)
		return bb_report_check_file(check, stdout) == 0 ? 0 : 1;
	if (rounds < 0)
		rounds = quick ? 1 : 3;
	int known = 0;
	for (int i = 0; bb_transports[i]; i++)
		known |= !strcmp(bb_transports[i]->id, baseline);
	if (!known) {
		fprintf(stderr, "beast-bench: no transport named '%s' (see --list)\n", baseline);
		return 2;
	}
	s_build(only, quick, unpinned);
	if (s_ncells == 0) {
		fprintf(stderr, "beast-bench: --only '%s' matches no row (see --list)\n", only ? only : "");
		return 2;
	}
	char outbuf[512];
	if (!out) {
		time_t t = time(NULL);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(outbuf, sizeof outbuf, "bench/results/%Y%m%dT%H%M%SZ", &tm);
		out = outbuf;
	}
	if ((errno = -bm_mkdirs(out)) != 0) {
		fprintf(stderr, "beast-bench: cannot create %s: %s\n", out, strerror(errno));
		return 1;
	}
	snprintf(s_dir, sizeof s_dir, "/tmp/beast-bench-XXXXXX");
	if (!mkdtemp(s_dir)) {
		fprintf(stderr, "beast-bench: cannot create a scratch dir: %s\n", strerror(errno));
		return 1;
	}
	signal(SIGINT, s_on_signal);
	signal(SIGTERM, s_on_signal);
	signal(SIGPIPE, SIG_IGN);
	s_tty = isatty(2);

	/* Rows a missing peer or a refused payload rules out are settled now. */
	int measured = 0;
	for (int i = 0; i < s_ncells; i++) {
		s_cell_t *c = &s_cells[i];
		const char *miss = c->t->missing ? c->t->missing() : NULL;
		const char *ref = c->t->refuse ? c->t->refuse(c->r.scen, c->r.payload) : NULL;
		if (miss)
			snprintf(c->r.status, sizeof c->r.status, "%s", miss);
		else if (ref)
			snprintf(c->r.status, sizeof c->r.status, "skipped: %s", ref);
		else
			measured++;
	}
	double t0 = bb_now();
	int done = 0;
	for (int round = 1; round <= rounds; round++) {
		for (int i = 0; i < s_ncells;) {
			/* a group: same transport, placement and scenario, in a row */
			int j = i;
			while (j < s_ncells && s_cells[j].t == s_cells[i].t && s_cells[j].r.scen == s_cells[i].r.scen &&
			       !strcmp(s_cells[j].r.placement, s_cells[i].r.placement))
				j++;
			int todo = 0;
			for (int k = i; k < j; k++)
				todo += s_cells[k].r.status[0] == '\0';
			if (todo) {
				bb_env_t env;
				s_env_for(&env, s_cells[i].r.placement, s_cells[i].r.scen, quick);
				char why[112] = "";
				int up_ok = !s_cells[i].t->up || s_cells[i].t->up(&env, why, sizeof why) == 0;
				for (int k = i; k < j; k++) {
					s_cell_t *c = &s_cells[k];
					if (c->r.status[0])
						continue;
					s_progress(++done, measured * rounds, round, rounds, &c->r);
					s_measure(c, &env, up_ok, why[0] ? why : "its server did not start");
				}
				if (s_cells[i].t->down)
					s_cells[i].t->down(&env);
				for (int s = 0; s < env.nsrv; s++)
					bb_server_stop(env.srv_pid[s]); /* whatever down() left */
			}
			i = j;
		}
	}
	for (int i = 0; i < s_ncells; i++)
		if (!s_cells[i].r.status[0])
			s_settle(&s_cells[i], rounds);
	if (s_tty)
		fprintf(stderr, "\r\033[K");
	(void)bm_rmtree(s_dir); /* sockets, server files */

	bb_row_t *rows = calloc((size_t)s_ncells, sizeof *rows);
	if (!rows)
		return 1;
	for (int i = 0; i < s_ncells; i++)
		rows[i] = s_cells[i].r;
	bb_run_info_t info = {
		.quick = quick, .rounds = rounds, .seconds = bb_now() - t0, .baseline = baseline, .only = only};
	bb_report_table(stdout, rows, s_ncells, baseline);
	int rc = bb_report_write(out, json, rows, s_ncells, &info);
	int failed = 0;
	for (int i = 0; i < s_ncells; i++)
		failed += strncmp(rows[i].status, "failed", 6) == 0;
	free(rows);
	fflush(stdout); /* the table first, then the summary on stderr */
	if (rc != 0) {
		fprintf(stderr, "beast-bench: writing the results to %s failed: %s\n", out, strerror(errno));
		return 1;
	}
	fprintf(stderr, "beast-bench: %d rows (%d failed) in %.0f s; results in %s\n", s_ncells, failed,
	        bb_now() - t0, out);
	return failed ? 1 : 0;
}

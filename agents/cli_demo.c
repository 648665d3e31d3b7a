/*
 * cli_demo.c - `beast demo`: the main job.  Starts beastd and a swarm of
 * the example agents (agents/examples/) on a private scratch directory,
 * shows live progress, and ends with a summary that it checks.
 *
 * The swarm: planners solve 8-puzzles as trees of thoughts with thinkers
 * scoring the branches (requests to @think, branches broadcast on tot/);
 * scanners stream point clouds over shared memory to mappers, announcing
 * each through the mesh; every agent reports its counters to this
 * process, which is itself an agent named "demo".  With --chaos a thinker
 * and a scanner are killed with -9 mid-run and started again.
 *
 * Verdict: the exit status is 0 only if every planner's answer is a
 * shortest solution (checked here by breadth-first search), every cloud a
 * scanner had confirmed was mapped with a matching checksum, no agent
 * ends with a message pending or dead, and no broadcast was lost.
 *
 * Cleanup: children die with this process (PR_SET_PDEATHSIG), are killed
 * with -9 and reaped on every exit path, and the scratch directory
 * (sockets, journals, logs) is removed.  Rings are sealed memfds: nothing
 * is ever left in /dev/shm.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bm_agent.h"
#include "cli.h"
#include "examples/puzzle.h"

#define S_MAX_KIDS 64
#define S_MAX_INST 256
#define S_MAX_CLOUDS 4096

typedef struct {
	char name[BM_NAME_MAX + 1]; /* agent name */
	char role[16];              /* example program: planner, thinker ... */
	char *argv[16];             /* its command line */
	pid_t pid;                  /* 0 once reaped */
	int status;                 /* exit status once reaped, -1 while running */
	bool daemon;                /* runs until told to stop */
} s_kid_t;

typedef struct {
	char name[BM_NAME_MAX + 1];   /* reporting agent */
	long pid;                     /* its process */
	uint64_t v[24];               /* counters, in s_keys order */
	uint64_t ack_hist[BM_AGENT_HIST];
	uint64_t req_hist[BM_AGENT_HIST];
	uint64_t clouds;              /* scanner: clouds confirmed */
	int64_t seen_ms;              /* last report */
} s_inst_t;

static const char *const s_keys[] = {
	"sent", "acked", "retried", "dead", "pending", "received", "duplicates", "requests",
	"replies", "timeouts", "published", "bcasts", "gaps", "blobs_sent", "blob_bytes_sent",
	"blobs_received", "blob_bytes_received", "blob_errors", NULL};
enum { K_SENT, K_ACKED, K_RETRIED, K_DEAD, K_PENDING, K_RECEIVED, K_DUPS, K_REQUESTS,
       K_REPLIES, K_TIMEOUTS, K_PUBLISHED, K_BCASTS, K_GAPS, K_BLOBS_SENT, K_BLOB_BYTES_SENT,
       K_BLOBS_RECEIVED, K_BLOB_BYTES_RECEIVED, K_BLOB_ERRORS, K__N };

typedef struct {
	s_kid_t kids[S_MAX_KIDS];
	int nkids;
	s_inst_t inst[S_MAX_INST];
	int ninst;
	char answers[8][300];         /* planner i: "start path" */
	int nanswers;
	char clouds[S_MAX_CLOUDS][64]; /* distinct clouds mapped with a good checksum */
	int nclouds, bad_clouds;
	char scratch[PATH_MAX], bindir[PATH_MAX - 64];
	char pyscript[PATH_MAX];      /* python/examples/thinker.py, for --python-thinkers */
} s_demo_t;

/* ---- reports from the swarm ---- */

static s_inst_t *
s_inst(s_demo_t *d, const char *name, long pid)
{
	for (int i = 0; i < d->ninst; i++) {
		if (d->inst[i].pid == pid && strcmp(d->inst[i].name, name) == 0) {
			return &d->inst[i];
		}
	}
	if (d->ninst == S_MAX_INST) {
		return NULL;
	}
	snprintf(d->inst[d->ninst].name, sizeof d->inst[0].name, "%s", name);
	d->inst[d->ninst].pid = pid;
	return &d->inst[d->ninst++];
}

static void
s_hist_parse(const char *s, uint64_t *h)
{
	memset(h, 0, BM_AGENT_HIST * sizeof *h);
	while (*s != '\0' && *s != '\n') {
		char *end;
		long b = strtol(s, &end, 10);

		if (*end != ':' || b < 0 || b >= BM_AGENT_HIST) {
			return;
		}
		h[b] = strtoull(end + 1, &end, 10);
		s = *end == ',' ? end + 1 : end;
	}
}

/* "key value" per line. */
static const char *
s_field(const char *body, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);

	for (const char *p = body; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, key, kl) == 0 && p[kl] == ' ') {
			const char *e = strchr(p + kl + 1, '\n');
			size_t n = e ? (size_t)(e - p - kl - 1) : strlen(p + kl + 1);

			snprintf(out, cap, "%.*s", (int)n, p + kl + 1);
			return out;
		}
	}
	return NULL;
}

static int
s_on_report(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	s_demo_t *d = arg;
	char *body = strndup(bm_msg_data(m), bm_msg_size(m)), v[4096];
	s_inst_t *in;

	(void)a;
	if (body == NULL) {
		return -ENOMEM;
	}
	if (s_field(body, "pid", v, sizeof v) != NULL && (in = s_inst(d, m->from, atol(v)))) {
		for (int k = 0; s_keys[k] != NULL; k++) {
			if (s_field(body, s_keys[k], v, sizeof v) != NULL) {
				in->v[k] = strtoull(v, NULL, 10);
			}
		}
		if (s_field(body, "ack_hist", v, sizeof v) != NULL) {
			s_hist_parse(v, in->ack_hist);
		}
		if (s_field(body, "req_hist", v, sizeof v) != NULL) {
			s_hist_parse(v, in->req_hist);
		}
		if (s_field(body, "clouds", v, sizeof v) != NULL) {
			in->clouds = strtoull(v, NULL, 10);
		}
		in->seen_ms = bm_mono_ms();
	}
	free(body);
	return 0;
}

static int
s_on_answer(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	s_demo_t *d = arg;
	char *body = strndup(bm_msg_data(m), bm_msg_size(m)), start[64], path[200];

	(void)a;
	if (body == NULL) {
		return -ENOMEM;
	}
	if (d->nanswers < 8 && s_field(body, "start", start, sizeof start) &&
	    s_field(body, "path", path, sizeof path)) {
		snprintf(d->answers[d->nanswers++], sizeof d->answers[0], "%s %s", start, path);
	}
	free(body);
	return 0;
}

static int
s_on_result(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	s_demo_t *d = arg;
	char *body = strndup(bm_msg_data(m), bm_msg_size(m)), name[64], crc[16];

	(void)a;
	if (body == NULL) {
		return -ENOMEM;
	}
	if (s_field(body, "name", name, sizeof name) && s_field(body, "crc", crc, sizeof crc)) {
		bool dup = false;

		for (int i = 0; i < d->nclouds; i++) {
			dup = dup || strcmp(d->clouds[i], name) == 0;
		}
		if (strcmp(crc, "ok") != 0) {
			d->bad_clouds++;
		} else if (!dup && d->nclouds < S_MAX_CLOUDS) {
			snprintf(d->clouds[d->nclouds++], sizeof d->clouds[0], "%s", name);
		}
	}
	free(body);
	return 0;
}

/* ---- processes ---- */

static int
s_spawn(s_demo_t *d, s_kid_t *k)
{
	pid_t parent = getpid(), pid = fork();

	if (pid < 0) {
		return -errno;
	}
	if (pid == 0) {
		char log[PATH_MAX + 80];
		int fd;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent) {
			_exit(126);
		}
		snprintf(log, sizeof log, "%s/logs/%s.log", d->scratch, k->name);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		signal(SIGINT, SIG_IGN); /* Ctrl-C is for the demo: it stops us */
		if (strcmp(k->role, "beastd") != 0) {
			sigset_t term;

			/* A program takes a while before it has its handler (an
			 * interpreter tens of ms, a C agent its loader's work): a
			 * SIGTERM then — the run's end just after a chaos restart —
			 * would kill it outright.  Held back until the agent has its
			 * handler (ex_open() and the Python script unblock it). */
			sigemptyset(&term);
			sigaddset(&term, SIGTERM);
			sigprocmask(SIG_BLOCK, &term, NULL);
		}
		execv(k->argv[0], k->argv);
		_exit(127);
	}
	k->pid = pid;
	k->status = -1;
	return 0;
}

static void
s_reap(s_demo_t *d)
{
	for (int i = 0; i < d->nkids; i++) {
		int st;

		if (d->kids[i].pid > 0 && waitpid(d->kids[i].pid, &st, WNOHANG) == d->kids[i].pid) {
			d->kids[i].status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			d->kids[i].pid = 0;
		}
	}
}

static void
s_kill9_all(s_demo_t *d)
{
	for (int i = 0; i < d->nkids; i++) {
		if (d->kids[i].pid > 0) {
			kill(d->kids[i].pid, SIGKILL);
			waitpid(d->kids[i].pid, NULL, 0);
			d->kids[i].pid = 0;
		}
	}
}

static s_kid_t *
s_kid(s_demo_t *d, const char *role, const char *name)
{
	s_kid_t *k = &d->kids[d->nkids++];
	char *bin = malloc(PATH_MAX);

	if (bin == NULL) {
		abort(); /* a few bytes at start-up */
	}

	snprintf(k->name, sizeof k->name, "%s", name);
	snprintf(k->role, sizeof k->role, "%s", role);
	if (strcmp(role, "beastd") == 0) {
		snprintf(bin, PATH_MAX, "%s/beastd", d->bindir);
	} else if (strcmp(role, "pythinker") == 0) {
		snprintf(bin, PATH_MAX, "/usr/bin/python3");
	} else {
		snprintf(bin, PATH_MAX, "%s/examples/beast-%s", d->bindir, role);
		if (access(bin, X_OK) < 0) {
			snprintf(bin, PATH_MAX, "%s/beast-%s", d->bindir, role);
		}
	}
	k->argv[0] = bin;
	return k;
}

/* argv: bin, then the given strings (copied), NULL-terminated. */
static void
s_args(s_kid_t *k, const char *const *args)
{
	int n = 1;

	for (; args[n - 1] != NULL && n < 15; n++) {
		k->argv[n] = strdup(args[n - 1]);
	}
	k->argv[n] = NULL;
}

static void
s_free_kids(s_demo_t *d)
{
	for (int i = 0; i < d->nkids; i++) {
		for (int j = 0; d->kids[i].argv[j] != NULL; j++) {
			free(d->kids[i].argv[j]);
		}
	}
}

/* ---- checking the answer ---- */

/* Length of a shortest solution from start (breadth-first from the goal). */
static int
s_optimum(const char *start)
{
	enum { TABLE = 1 << 19, STATES = 181440 };
	uint32_t *keys = calloc(TABLE, sizeof *keys), *queue = malloc(STATES * sizeof *queue);
	uint8_t *dist = calloc(TABLE, 1);
	uint32_t want = pz_key(start);
	int head = 0, tail = 0, result = -1;

	if (keys == NULL || queue == NULL || dist == NULL) {
		goto out;
	}
#define S_SLOT(k, ret)                                                                  \
	do {                                                                                \
		uint32_t i_ = ((k) * 2654435761u) & (TABLE - 1);                                \
		while (keys[i_] != 0 && keys[i_] != (k)) {                                       \
			i_ = (i_ + 1) & (TABLE - 1);                                                 \
		}                                                                               \
		(ret) = i_;                                                                     \
	} while (0)
	{
		uint32_t s;

		S_SLOT(pz_key(PZ_GOAL), s);
		keys[s] = pz_key(PZ_GOAL);
		queue[tail++] = keys[s];
	}
	while (head < tail) {
		uint32_t k = queue[head++], s, c;
		char st[10];

		S_SLOT(k, s);
		if (k == want) {
			result = dist[s];
			break;
		}
		for (const char *m = PZ_MOVES; *m; m++) {
			char n[10];

			snprintf(st, sizeof st, "%09u", k);
			memcpy(n, st, 10);
			if (!pz_move(n, *m)) {
				continue;
			}
			S_SLOT(pz_key(n), c);
			if (keys[c] == 0 && tail < STATES) {
				keys[c] = pz_key(n);
				dist[c] = (uint8_t)(dist[s] + 1);
				queue[tail++] = keys[c];
			}
		}
	}
#undef S_SLOT
out:
	free(keys);
	free(queue);
	free(dist);
	return result;
}

/* 1 when path solves start in the fewest moves, else 0. */
static int
s_check_answer(const char *answer, int *ret_len, int *ret_opt)
{
	char start[10], path[200], s[10];

	if (sscanf(answer, "%9s %199s", start, path) != 2) {
		return 0;
	}
	memcpy(s, start, 10);
	for (const char *m = path; *m; m++) {
		if (!pz_move(s, *m)) {
			return 0;
		}
	}
	*ret_len = (int)strlen(path);
	*ret_opt = s_optimum(start);
	return strcmp(s, PZ_GOAL) == 0 && *ret_len == *ret_opt;
}

/* ---- totals ---- */

typedef struct {
	uint64_t v[K__N];                /* summed over every instance */
	uint64_t pending_now, dead_now;  /* latest instance of each name */
	uint64_t ack_hist[BM_AGENT_HIST], req_hist[BM_AGENT_HIST];
	uint64_t clouds;                 /* confirmed by scanners (latest instance) */
} s_total_t;

static void
s_totals(const s_demo_t *d, s_total_t *t)
{
	memset(t, 0, sizeof *t);
	for (int i = 0; i < d->ninst; i++) {
		const s_inst_t *in = &d->inst[i];
		bool latest = true;

		for (int j = 0; j < d->ninst; j++) {
			if (j != i && strcmp(d->inst[j].name, in->name) == 0 &&
			    d->inst[j].seen_ms > in->seen_ms) {
				latest = false;
			}
		}
		for (int k = 0; k < K__N; k++) {
			t->v[k] += in->v[k];
		}
		for (int b = 0; b < BM_AGENT_HIST; b++) {
			t->ack_hist[b] += in->ack_hist[b];
			t->req_hist[b] += in->req_hist[b];
		}
		if (latest) {
			t->pending_now += in->v[K_PENDING];
			t->dead_now += in->v[K_DEAD];
			t->clouds += in->clouds;
		}
	}
}

static void
s_progress(const s_demo_t *d, int64_t t0, bool tty, uint64_t *last_msgs, uint64_t *last_bc,
           int64_t *last_ms, bool final)
{
	s_total_t t;
	int up = 0, all = 0;
	int64_t now = bm_mono_ms();
	double dt = (double)(now - *last_ms) / 1000.0;

	s_totals(d, &t);
	for (int i = 1; i < d->nkids; i++) {
		all++;
		/* Running, or (at the end) stopped with exit status 0. */
		up += final ? d->kids[i].pid == 0 && d->kids[i].status == 0 : d->kids[i].pid > 0;
	}
	printf("%s[%5.1fs] agents %d/%d%s | msgs %llu (%.0f/s) | bcasts %llu (%.0f/s) | %.3f GB "
	       "moved | pending %llu dead %llu%s",
	       tty ? "\r\033[K" : "", (double)(now - t0) / 1000.0, up, all, final ? " exited 0" : "",
	       (unsigned long long)t.v[K_SENT], dt > 0 ? (double)(t.v[K_SENT] - *last_msgs) / dt : 0,
	       (unsigned long long)t.v[K_PUBLISHED],
	       dt > 0 ? (double)(t.v[K_PUBLISHED] - *last_bc) / dt : 0,
	       (double)t.v[K_BLOB_BYTES_RECEIVED] / 1e9, (unsigned long long)t.pending_now,
	       (unsigned long long)t.dead_now, tty ? "" : "\n");
	fflush(stdout);
	*last_msgs = t.v[K_SENT];
	*last_bc = t.v[K_PUBLISHED];
	*last_ms = now;
}

/* The Python thinkers: the beastmesh package and its examples live in
 * $BEAST_PYTHON, else the source tree this beast was built from, else the
 * installed data dir; the library is the one beside this program when
 * there is one (a build tree), else the system's. */
static int
s_find_python(s_demo_t *d)
{
	const char *tries[] = {getenv("BEAST_PYTHON"), BM_SOURCE_PYTHON, BM_DATA_PYTHON};
	char lib[PATH_MAX];

	if (access("/usr/bin/python3", X_OK) < 0) {
		fprintf(stderr, "beast demo: --python-thinkers needs /usr/bin/python3 (apt-get install "
		                "python3 python3-cffi python3-numpy)\n");
		return -1;
	}
	for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
		if (tries[i] == NULL || tries[i][0] == '\0') {
			continue;
		}
		snprintf(d->pyscript, sizeof d->pyscript, "%.*s/examples/thinker.py",
		         (int)sizeof d->pyscript - 24, tries[i]);
		if (access(d->pyscript, R_OK) == 0) {
			const char *old = getenv("PYTHONPATH");
			char *path = NULL;

			if (asprintf(&path, "%s%s%s", tries[i], old ? ":" : "", old ? old : "") < 0) {
				return -1;
			}
			setenv("PYTHONPATH", path, 1);
			free(path);
			snprintf(lib, sizeof lib, "%.*s/../libbeastmesh.so", (int)sizeof lib - 24,
			         d->bindir);
			if (getenv("BEASTMESH_LIB") == NULL && access(lib, R_OK) == 0) {
				setenv("BEASTMESH_LIB", lib, 1);
			}
			return 0;
		}
	}
	fprintf(stderr, "beast demo: cannot find the Python thinker (examples/thinker.py) in "
	                "$BEAST_PYTHON, %s or %s\n", BM_SOURCE_PYTHON, BM_DATA_PYTHON);
	return -1;
}

/* ---- the command ---- */

static const char s_help[] =
	"usage: beast demo [--planners N] [--thinkers N] [--scanners N] [--mappers N]\n"
	"                  [--depth D] [--clouds N] [--points P] [--duration S]\n"
	"                  [--python-thinkers N] [--sync always|interval|never] [--chaos] [--keep]\n"
	"                  [--http PORT]\n"
	"\n"
	"Starts beastd and a swarm on a private scratch directory: planners solve\n"
	"8-puzzles as trees of thoughts (scrambled D moves, default 40) with thinkers\n"
	"scoring branches; scanners stream N point clouds of P points (default 8 of\n"
	"1000000, ~15 MB each; --clouds 0 streams until the end) over shared\n"
	"memory to mappers.  --python-thinkers N adds N thinkers written in Python\n"
	"(python/examples/thinker.py, on the beastmesh package).\n"
	"Shows progress, then a summary it checks.  Defaults: 1 planner, 4 thinkers,\n"
	"1 scanner, 1 mapper; at most S seconds (default 120).  --chaos kills a thinker\n"
	"and a scanner with -9 mid-run and restarts them.  --keep keeps the scratch\n"
	"directory (logs of every agent).  Exit 0 only when nothing was lost, every\n"
	"checksum matched and every answer is a shortest solution.\n"
	"--http PORT: beastd serves its dashboard and endpoints on 127.0.0.1:PORT\n"
	"during the run; with --keep it goes on serving after the summary until\n"
	"Ctrl-C.\n";

static void
s_usage_row(const char *what, const char *value)
{
	printf("  %-34s %s\n", what, value);
}

int
bm_cli_demo(int argc, char **argv, const char *dir_unused)
{
	static const struct option lo[] = {
		{"planners", required_argument, NULL, 'P'}, {"thinkers", required_argument, NULL, 'T'},
		{"scanners", required_argument, NULL, 'S'}, {"mappers", required_argument, NULL, 'M'},
		{"depth", required_argument, NULL, 'd'},    {"clouds", required_argument, NULL, 'c'},
		{"points", required_argument, NULL, 'p'},   {"duration", required_argument, NULL, 'D'},
		{"sync", required_argument, NULL, 'y'},     {"chaos", no_argument, NULL, 'x'},
		{"keep", no_argument, NULL, 'k'},           {"help", no_argument, NULL, 'h'},
		{"python-thinkers", required_argument, NULL, 'Y'},
		{"http", required_argument, NULL, 'H'},
		{0}};
	long planners = 1, thinkers = 4, scanners = 1, mappers = 1, depth = 40, clouds = 8,
	     points = 1000000, duration = 120, pythinkers = 0, http_port = -1;
	const char *sync = "interval";
	bool chaos = false, keep = false, tty = isatty(1);
	s_demo_t *d = calloc(1, sizeof *d);
	bm_agent_t *a = NULL;
	char exe[PATH_MAX], state[PATH_MAX + 16], logs[PATH_MAX + 16], buf[64], http[32] = "", http_addr[64] = "";
	int ch, status = BM_EXIT_OK, chaos_stage = 0;
	int64_t t0, deadline, chaos_at = 0, last_ms, next_print = 0;
	uint64_t last_msgs = 0, last_bc = 0;
	ssize_t n;

	(void)dir_unused;
	if (d == NULL) {
		return BM_EXIT_FAIL;
	}
	optind = 0;
	while ((ch = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		long *tgt = NULL, min = 1, max = 64;

		switch (ch) {
		case 'P': tgt = &planners; max = 8; break;
		case 'T': tgt = &thinkers; max = 32; break;
		case 'Y': tgt = &pythinkers; min = 0; max = 32; break;
		case 'S': tgt = &scanners; max = 8; break;
		case 'M': tgt = &mappers; max = 8; break;
		case 'd': tgt = &depth; min = 0; max = 1000; break;
		case 'c': tgt = &clouds; min = 0; max = 1000; break;
		case 'p': tgt = &points; max = 50000000; break;
		case 'D': tgt = &duration; max = 86400; break;
		case 'y': sync = optarg; break;
		case 'x': chaos = true; break;
		case 'k': keep = true; break;
		case 'H': tgt = &http_port; min = 0; max = 65535; break;
		case 'h': fputs(s_help, stdout); free(d); return BM_EXIT_OK;
		default: goto usage;
		}
		if (tgt != NULL) {
			char *end;

			*tgt = strtol(optarg, &end, 10);
			if (*end != '\0' || *tgt < min || *tgt > max) {
				goto usage;
			}
		}
	}
	if (optind != argc || planners + thinkers + pythinkers + scanners + mappers + 1 > S_MAX_KIDS) {
		goto usage;
	}
	/* The programs sit beside this one (the build tree or bindir). */
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0) {
		fprintf(stderr, "beast demo: cannot find my own program\n");
		free(d);
		return BM_EXIT_FAIL;
	}
	exe[n] = '\0';
	snprintf(d->bindir, sizeof d->bindir, "%.*s", (int)sizeof d->bindir - 1, exe);
	*strrchr(d->bindir, '/') = '\0';
	if (pythinkers > 0 && s_find_python(d) < 0) {
		free(d);
		return BM_EXIT_FAIL;
	}
	snprintf(d->scratch, sizeof d->scratch, "/tmp/beast-demo.XXXXXX");
	if (mkdtemp(d->scratch) == NULL) {
		fprintf(stderr, "beast demo: cannot make a scratch directory in /tmp: %s\n",
		        strerror(errno));
		free(d);
		return BM_EXIT_FAIL;
	}
	snprintf(state, sizeof state, "%s/state", d->scratch);
	snprintf(logs, sizeof logs, "%s/logs", d->scratch);
	(void)mkdir(state, 0700);
	(void)mkdir(logs, 0700);
	setenv("BEAST_DIR", d->scratch, 1);
	setenv("BEAST_STATE", state, 1);
	bm_cli_signals();
	printf("beast demo: beastd, %ld planner(s), %ld thinker(s)%s, %ld scanner(s), %ld mapper(s) in "
	       "%s%s\n",
	       planners, thinkers + pythinkers, pythinkers > 0 ? " (some in Python)" : "", scanners,
	       mappers, d->scratch, chaos ? " — with chaos" : "");

	if (http_port >= 0) {
		snprintf(http, sizeof http, "127.0.0.1:%ld", http_port);
	}
	/* beastd, then the demo's own agent once it answers. */
	{
		s_kid_t *k = s_kid(d, "beastd", "beastd");
		const char *args[] = {"--dir", d->scratch, http_port >= 0 ? "--http" : NULL, http, NULL};
		bm_agent_opts_t ao = {.name = "demo", .dir = d->scratch, .sync = BM_JOURNAL_SYNC_NEVER};
		int64_t until = bm_mono_ms() + 5000;

		k->daemon = true;
		s_args(k, args);
		if (s_spawn(d, k) < 0) {
			status = BM_EXIT_FAIL;
			goto out;
		}
		while (bm_agent_open(&ao, &a) < 0 && bm_mono_ms() < until && !bm_cli_stop) {
			usleep(20000);
		}
		if (a == NULL) {
			fprintf(stderr, "beast demo: beastd did not start (see %s/beastd.log with --keep)\n",
			        logs);
			status = BM_EXIT_NOBROKER;
			goto out;
		}
	}
	if (http_port >= 0) {
		char *addr = http_addr, path[PATH_MAX + 16];
		FILE *f;

		/* beastd wrote the address it bound (the port picked for 0). */
		snprintf(path, sizeof path, "%s/http.addr", d->scratch);
		for (int i = 0; i < 100 && addr[0] == '\0'; i++) {
			if ((f = fopen(path, "r")) != NULL) {
				if (fgets(addr, sizeof http_addr, f) == NULL) {
					addr[0] = '\0';
				}
				fclose(f);
			}
			if (addr[0] == '\0') {
				usleep(20000);
			}
		}
		addr[strcspn(addr, "\n")] = '\0';
		if (addr[0] == '\0') {
			snprintf(http_addr, sizeof http_addr, "%s", http);
		}
		printf("beast demo: dashboard at http://%s/ (metrics at /metrics)\n", http_addr);
	}
	bm_agent_on_message(a, "stats.report", s_on_report, d);
	bm_agent_on_message(a, "tot.answer", s_on_answer, d);
	bm_agent_on_message(a, "map.result", s_on_result, d);

	/* The swarm: consumers first. */
	for (long i = 0; i < mappers; i++) {
		char name[32];
		s_kid_t *k;

		snprintf(name, sizeof name, "mapper-%ld", i);
		k = s_kid(d, "mapper", name);
		k->daemon = true;
		s_args(k, (const char *[]){"--name", name, "--report-to", "demo", "--sync", sync, NULL});
	}
	for (long i = 0; i < thinkers; i++) {
		char name[32];
		s_kid_t *k;

		snprintf(name, sizeof name, "thinker-%ld", i);
		k = s_kid(d, "thinker", name);
		k->daemon = true;
		s_args(k, (const char *[]){"--name", name, "--report-to", "demo", "--sync", sync, NULL});
	}
	for (long i = 0; i < pythinkers; i++) {
		char name[32];
		s_kid_t *k;

		snprintf(name, sizeof name, "pythinker-%ld", i);
		k = s_kid(d, "pythinker", name);
		k->daemon = true;
		s_args(k, (const char *[]){d->pyscript, "--name", name, "--report-to", "demo", "--sync",
		                           sync, NULL});
	}
	for (long i = 0; i < planners; i++) {
		char name[32], tree[24], start[10];

		snprintf(name, sizeof name, "planner-%ld", i);
		snprintf(tree, sizeof tree, "%ld", i + 1);
		pz_scramble(start, (int)depth, (uint32_t)(i + 1) * 7919u);
		s_args(s_kid(d, "planner", name),
		       (const char *[]){"--name", name, "--report-to", "demo", "--sync", sync, "--tree",
		                        tree, start, NULL});
	}
	for (long i = 0; i < scanners; i++) {
		char name[32], to[32], nc[24], np[24];

		snprintf(name, sizeof name, "scanner-%ld", i);
		snprintf(to, sizeof to, "mapper-%ld", i % mappers);
		snprintf(nc, sizeof nc, "%ld", clouds);
		snprintf(np, sizeof np, "%ld", points);
		s_args(s_kid(d, "scanner", name),
		       (const char *[]){"--name", name, "--report-to", "demo", "--sync", sync, "--to", to,
		                        "--clouds", nc, "--points", np, NULL});
	}
	for (int i = 1; i < d->nkids; i++) {
		if (s_spawn(d, &d->kids[i]) < 0) {
			status = BM_EXIT_FAIL;
			goto out;
		}
	}
	t0 = last_ms = bm_mono_ms();
	deadline = t0 + duration * 1000;

	/* Run: until every planner and scanner is done, the time is up or Ctrl-C. */
	while (!bm_cli_stop && bm_mono_ms() < deadline) {
		bool busy = false;
		s_total_t t;

		(void)bm_agent_step(a, 50);
		s_reap(d);
		s_totals(d, &t);
		for (int i = 1; i < d->nkids; i++) {
			busy = busy || (!d->kids[i].daemon && (d->kids[i].pid > 0 || chaos_stage == 1));
		}
		if (clouds > 0 && (uint64_t)d->nclouds < t.clouds) {
			busy = true; /* results still on their way to us */
		}
		if (clouds == 0 && scanners > 0 && bm_mono_ms() < deadline) {
			busy = busy || d->nanswers < planners;
		}
		/* Chaos: once thoughts and clouds flow, kill -9 a thinker and a
		 * scanner; start them again a moment later. */
		if (chaos && chaos_stage == 0 && t.v[K_REPLIES] >= 20 && t.clouds >= 1) {
			for (int i = 1; i < d->nkids; i++) {
				if ((strcmp(d->kids[i].name, thinkers > 1 ? "thinker-1" : "thinker-0") == 0 ||
				     strcmp(d->kids[i].name, "pythinker-0") == 0 ||
				     strcmp(d->kids[i].name, "scanner-0") == 0) &&
				    d->kids[i].pid > 0) {
					kill(d->kids[i].pid, SIGKILL);
					waitpid(d->kids[i].pid, NULL, 0);
					d->kids[i].pid = 0;
					d->kids[i].status = -2; /* killed by us */
					printf("%schaos: kill -9 %s\n", tty ? "\r\033[K" : "", d->kids[i].name);
				}
			}
			chaos_stage = 1;
			chaos_at = bm_mono_ms() + 300;
		} else if (chaos_stage == 1 && bm_mono_ms() >= chaos_at) {
			for (int i = 1; i < d->nkids; i++) {
				if (d->kids[i].status == -2) {
					printf("%schaos: restart %s\n", tty ? "\r\033[K" : "", d->kids[i].name);
					(void)s_spawn(d, &d->kids[i]);
				}
			}
			chaos_stage = 2;
		}
		if (bm_mono_ms() >= next_print) {
			s_progress(d, t0, tty, &last_msgs, &last_bc, &last_ms, false);
			next_print = bm_mono_ms() + (tty ? 250 : 1000);
		}
		if (!busy && chaos_stage != 1) {
			break;
		}
	}
	if (chaos && chaos_stage != 2) {
		printf("%sbeast demo: the swarm finished before chaos could strike (give it more "
		       "work: --clouds, --depth)\n", tty ? "\r\033[K" : "");
		status = BM_EXIT_FAIL;
	}
	if (bm_cli_stop) {
		printf("%sbeast demo: interrupted — stopping the swarm\n", tty ? "\r\033[K" : "");
		status = BM_EXIT_FAIL;
	} else if (bm_mono_ms() >= deadline) {
		printf("%sbeast demo: --duration reached — stopping the swarm\n", tty ? "\r\033[K" : "");
	}
	/* Stop: SIGTERM everyone but beastd; they drain and send a last
	 * report, which we keep receiving meanwhile. */
	for (int i = 1; i < d->nkids; i++) {
		if (d->kids[i].pid > 0) {
			kill(d->kids[i].pid, SIGTERM);
		}
	}
	{
		int64_t until = bm_mono_ms() + 15000;
		bool alive = true;

		while (alive && bm_mono_ms() < until) {
			(void)bm_agent_step(a, 20);
			s_reap(d);
			alive = false;
			for (int i = 1; i < d->nkids; i++) {
				alive = alive || d->kids[i].pid > 0;
			}
		}
		(void)bm_agent_step(a, 0);
	}
	s_progress(d, t0, tty, &last_msgs, &last_bc, &last_ms, true);
	if (tty) {
		printf("\n");
	}

	/* The summary, and the verdict. */
	{
		s_total_t t;
		bm_agent_stats_t me;
		double secs = (double)(bm_mono_ms() - t0) / 1000.0;
		int ok_answers = 0, clean = 0;
		char failed[256] = "";
		bool lost;

		s_totals(d, &t);
		bm_agent_stats(a, &me);
		printf("\n  %-34s %s\n", "summary", "");
		snprintf(buf, sizeof buf, "%llu / %llu / %llu / %llu", (unsigned long long)t.v[K_SENT],
		         (unsigned long long)t.v[K_ACKED], (unsigned long long)t.v[K_RETRIED],
		         (unsigned long long)t.v[K_DEAD]);
		s_usage_row("messages sent/acked/retried/dead", buf);
		snprintf(buf, sizeof buf, "%llu (dead %llu)", (unsigned long long)t.pending_now,
		         (unsigned long long)t.dead_now);
		s_usage_row("left pending at the end", buf);
		snprintf(buf, sizeof buf, "%llu us / %llu us",
		         (unsigned long long)bm_agent_hist_quantile(t.ack_hist, 0.5),
		         (unsigned long long)bm_agent_hist_quantile(t.ack_hist, 0.99));
		s_usage_row("send->ACK p50 / p99", buf);
		snprintf(buf, sizeof buf, "%llu us / %llu us",
		         (unsigned long long)bm_agent_hist_quantile(t.req_hist, 0.5),
		         (unsigned long long)bm_agent_hist_quantile(t.req_hist, 0.99));
		s_usage_row("request->reply p50 / p99", buf);
		snprintf(buf, sizeof buf, "%llu / %llu (timed out, asked again: %llu)",
		         (unsigned long long)t.v[K_REQUESTS], (unsigned long long)t.v[K_REPLIES],
		         (unsigned long long)t.v[K_TIMEOUTS]);
		s_usage_row("requests / replies", buf);
		snprintf(buf, sizeof buf, "%llu sent, %llu received, %llu gaps",
		         (unsigned long long)t.v[K_PUBLISHED], (unsigned long long)t.v[K_BCASTS],
		         (unsigned long long)t.v[K_GAPS]);
		s_usage_row("broadcasts", buf);
		snprintf(buf, sizeof buf, "%llu confirmed, %d mapped, %d bad",
		         (unsigned long long)t.clouds, d->nclouds, d->bad_clouds);
		s_usage_row("point clouds", buf);
		snprintf(buf, sizeof buf, "%.3f GB, %.2f GB/s over the run",
		         (double)t.v[K_BLOB_BYTES_RECEIVED] / 1e9,
		         secs > 0 ? (double)t.v[K_BLOB_BYTES_RECEIVED] / 1e9 / secs : 0);
		s_usage_row("moved through shared memory", buf);
		for (int i = 0; i < d->nanswers; i++) {
			int len = -1, opt = -1, good = s_check_answer(d->answers[i], &len, &opt);
			char row[400];

			ok_answers += good;
			snprintf(row, sizeof row, "%s: %d moves, shortest %d — %s", d->answers[i], len, opt,
			         good ? "right" : "WRONG");
			s_usage_row(i == 0 ? "thought-tree answer" : "", row);
		}
		if (d->nanswers == 0) {
			s_usage_row("thought-tree answer", "none");
		}
		for (int i = 1; i < d->nkids; i++) {
			if (d->kids[i].pid == 0 && d->kids[i].status == 0) {
				clean++;
			} else if (failed[0] == '\0' || strlen(failed) < sizeof failed - 80) {
				size_t o = strlen(failed);

				snprintf(failed + o, sizeof failed - o, "%s%s (%s %d)", o ? ", " : "",
				         d->kids[i].name, d->kids[i].pid > 0 ? "still running" : "exit",
				         d->kids[i].pid > 0 ? 0 : d->kids[i].status);
			}
		}
		snprintf(buf, sizeof buf, "%d of %d exited 0%s%s", clean, d->nkids - 1,
		         failed[0] ? "; not: " : "", failed);
		s_usage_row("agents stopped cleanly", buf);
		lost = t.pending_now + t.dead_now > 0 || t.v[K_GAPS] > 0 || d->bad_clouds > 0 ||
		       (uint64_t)d->nclouds < t.clouds || (clouds > 0 && t.clouds < (uint64_t)(clouds * scanners));
		if (ok_answers < planners || lost || clean < d->nkids - 1) {
			status = BM_EXIT_FAIL;
		}
		printf("\nbeast demo: %s\n",
		       status == BM_EXIT_OK ? "OK — nothing lost, checksums verified, right answer"
		       : lost              ? "FAILED — something was lost or unfinished (see above)"
		                           : "FAILED — see above");
		if (status != BM_EXIT_OK && !keep) {
			printf("beast demo: rerun with --keep to keep every agent's log\n");
		}
	}
out:
	bm_agent_destroy(&a);
	s_reap(d);
	if (keep && http_port >= 0 && d->nkids > 0 && d->kids[0].pid > 0 && !bm_cli_stop) {
		/* beastd is our child (it dies with us): we stay to keep it up. */
		printf("beast demo: beastd keeps serving http://%s/ — Ctrl-C stops it\n", http_addr);
		fflush(stdout);
		while (!bm_cli_stop && d->kids[0].pid > 0) {
			usleep(100000);
			s_reap(d);
		}
	}
	if (d->nkids > 0 && d->kids[0].pid > 0) {
		kill(d->kids[0].pid, SIGTERM);
		for (int k = 0; k < 200 && d->kids[0].pid > 0; k++) {
			usleep(10000);
			s_reap(d);
		}
	}
	s_kill9_all(d);
	s_free_kids(d);
	if (keep) {
		printf("beast demo: kept %s\n", d->scratch);
	} else {
		/* Everything we made lives under scratch: sockets, journals, logs. */
		if (bm_rmtree(d->scratch) < 0) {
			fprintf(stderr, "beast demo: could not remove %s\n", d->scratch);
		}
	}
	free(d);
	return status;
usage:
	fputs(s_help, stderr);
	free(d);
	return BM_EXIT_USAGE;
}

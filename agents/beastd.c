/*
 * beastd - the swarm's broker: mesh ROUTER and broadcast proxy (XSUB ->
 * XPUB, on a thread of its own) in one foreground process that logs to
 * stderr.
 *
 * This file only parses arguments, sets up logging and signals, and runs
 * the library's broker and proxy; the proxy's counters join the broker's
 * STATS reply through the broker's stats hook.  SIGINT/SIGTERM stop both
 * cleanly (sockets removed).  SIGUSR1 pauses the broadcast proxy (it stops
 * reading publishers, whose messages wait at their high-water marks) and
 * SIGUSR2 resumes it; `beast proxy pause|resume` sends them.  The steering
 * runs on the broker's thread, the proxy's owner, between two runs of the
 * broker loop: a signal ends the run, beastd acts on it and runs again.
 *
 * With --http ADDR beastd also serves read-only HTTP (httpd.c) on a thread
 * of libmicrohttpd's: every 250 ms the broker's thread takes a snapshot
 * (bm_broker_snap, the proxy's counters included through the stats hook)
 * and hands it to the server, which never reaches into the broker.  The
 * address bound (with the port picked for PORT 0) is written to
 * DIR/http.addr for tools and tests, and removed at exit.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bm_mesh.h"
#include "bm_proxy.h"
#include "conf.h"
#include "httpd.h"

#define S_SNAP_MS 250 /* how often the HTTP endpoints get a fresh snapshot */

static volatile sig_atomic_t s_wake;  /* ends a run of the broker loop */
static volatile sig_atomic_t s_term;  /* SIGINT/SIGTERM seen */
static volatile sig_atomic_t s_steer; /* 0, or the last SIGUSR1/SIGUSR2 */
static bm_broker_t *s_broker;          /* for the tick hook */
static bm_proxy_t *s_proxy;            /* for the tick hook */

static void
s_on_signal(int sig)
{
	if (sig == SIGUSR1 || sig == SIGUSR2) {
		s_steer = sig;
	} else {
		s_term = 1;
	}
	s_wake = 1;
}

/* Runs the broker until SIGINT/SIGTERM, pausing and resuming the proxy
 * on SIGUSR1/SIGUSR2 in between. */
static int
s_run(bm_broker_t *b, bm_proxy_t *p)
{
	for (;;) {
		int rc = bm_broker_run(b, &s_wake), sig;

		if (rc < 0 || s_term) {
			return rc;
		}
		/* Clear the wake-up before reading the request: a signal in
		 * between leaves s_wake set and is read on the next turn. */
		s_wake = 0;
		sig = s_steer;
		s_steer = 0;
		if (sig == SIGUSR1 || sig == SIGUSR2) {
			rc = sig == SIGUSR1 ? bm_proxy_pause(p) : bm_proxy_resume(p);
			if (rc < 0) {
				bm_log(BM_LOG_ERROR, "broadcast proxy: cannot %s: %s",
				       sig == SIGUSR1 ? "pause" : "resume", bm_strerror(rc));
			} else {
				bm_log(BM_LOG_INFO, "broadcast proxy %s",
				       sig == SIGUSR1 ? "paused" : "resumed");
			}
		}
	}
}

/*
 * Broker STATS hook: the proxy's counters, on the broker's thread (the
 * proxy's owner thread, as bm_proxy_stats requires).  Each call is a round
 * trip to the proxy's thread; a STATS request gets fresh counters, but the
 * snapshots taken every 250 ms for HTTP reuse the last ones for up to a
 * second, so the broker's thread waits on the proxy's at most once a second
 * for them.
 */
static bool s_snapping;                     /* inside s_publish */

static int
s_proxy_stats(void *arg, bm_stat_t *ret, size_t max)
{
	static bm_stat_t last[BM_PROXY_STATS_MAX];
	static int nlast = -1;
	static int64_t last_ms;
	int64_t now = bm_mono_ms();
	int n;

	if (s_snapping && nlast >= 0 && now - last_ms < 1000) {
		n = nlast < (int)max ? nlast : (int)max;
		memcpy(ret, last, (size_t)n * sizeof *ret);
		return n;
	}
	n = bm_proxy_stats(arg, ret, max);
	if (n >= 0) {
		nlast = n < BM_PROXY_STATS_MAX ? n : BM_PROXY_STATS_MAX;
		memcpy(last, ret, (size_t)nlast * sizeof *ret);
		last_ms = now;
	}
	return n;
}

/* Tick hook, on the broker's thread: a fresh snapshot for the HTTP
 * endpoints.  The proxy's part (counters, busiest topics) is refreshed
 * once a second: asking costs a round trip to the proxy's thread. */
static void
s_publish(void *arg)
{
	static bm_proxy_topic_t topics[BM_PROXY_TOPICS_MAX];
	static int ntopics, turn;
	bm_broker_snap_t *snap = NULL;

	if (turn++ % (1000 / S_SNAP_MS) == 0) {
		int n = bm_proxy_topics(s_proxy, topics, BM_PROXY_TOPICS_MAX);

		ntopics = n < 0 ? 0 : n;
	}
	s_snapping = true;
	if (bm_broker_snap(s_broker, &snap) == 0) {
		bm_httpd_publish(arg, &snap, topics, (size_t)ntopics);
	}
	s_snapping = false;
}

/* Writes DIR/http.addr (mode 0600): the address served, one line. */
static void
s_write_addr(const char *dir, const char *addr, char *ret_path, size_t size)
{
	char tmp[BM_PATH_MAX + 32];
	FILE *f;

	snprintf(ret_path, size, "%s/http.addr", dir);
	snprintf(tmp, sizeof tmp, "%s/http.addr.tmp", dir);
	f = fopen(tmp, "w");
	if (f == NULL) {
		ret_path[0] = '\0';
		return;
	}
	fprintf(f, "%s\n", addr);
	if (fclose(f) != 0 || rename(tmp, ret_path) != 0) {
		(void)unlink(tmp);
		ret_path[0] = '\0';
	}
}

static void
s_usage(FILE *out)
{
	fprintf(out,
	        "usage: beastd [--config FILE] [--dir DIR] [--tcp ENDPOINT] [--heartbeat MS]\n"
	        "              [--max-body BYTES] [--max-pending BYTES]\n"
	        "              [--pub-tcp ENDPOINT] [--sub-tcp ENDPOINT] [--no-lvc] [--lvc-max BYTES]\n"
	        "              [--no-direct]\n"
	        "              [--curve [--server-key FILE] [--allow DIR]] [--http ADDR] [-v]\n"
	        "              [--version]\n"
	        "\n"
	        "Runs the beastmesh broker in the foreground, logging to stderr.\n"
	        "\n"
	        "  --config FILE     read settings from FILE first: one `key = value` a line,\n"
	        "                    each key a long option below (heartbeat = 500, no-lvc = yes,\n"
	        "                    verbose = 2); '#' starts a comment line; the command line\n"
	        "                    overrides the file\n"
	        "  --dir DIR         runtime directory (default $BEAST_DIR, else\n"
	        "                    $XDG_RUNTIME_DIR/beast, else /tmp/beast-$UID); created 0700\n"
	        "  --tcp ENDPOINT    also listen on a loopback TCP endpoint, e.g. tcp://127.0.0.1:7450\n"
	        "                    (any address with --curve)\n"
	        "  --curve           CURVE on the --tcp endpoint: encrypted, and only keys in the\n"
	        "                    allow-list get in; each key may register only its own name\n"
	        "  --server-key FILE server secret key (default STATE/keys/server.key, made 0600\n"
	        "                    on first use with its public half beside it as server.pub)\n"
	        "  --allow DIR       allowed agents' .pub files (default STATE/keys/allowed/)\n"
	        "  --heartbeat MS    heartbeat interval agents default to (1000)\n"
	        "  --max-body BYTES  largest message body accepted (16777216)\n"
	        "  --max-pending BYTES  bytes delivered to one agent and not yet acknowledged\n"
	        "                    before senders to it get BUSY (268435456)\n"
	        "  --pub-tcp EP      broadcast: also take publishers on a loopback TCP endpoint\n"
	        "  --sub-tcp EP      broadcast: also serve subscribers on a loopback TCP endpoint\n"
	        "                    (with --curve: any address, CURVE and the same allow-list)\n"
	        "  --no-lvc          broadcast: no last-value cache for late joiners\n"
	        "  --lvc-max BYTES   broadcast: last-value cache memory bound (67108864)\n"
	        "  --no-direct       introduce no direct shared-memory routes between agents:\n"
	        "                    all traffic goes through beastd (docs/shm.md)\n"
	        "  --http ADDR       serve read-only HTTP: /metrics (Prometheus), /healthz, /varz,\n"
	        "                    /agents, /flows, /topics and the dashboard at /; ADDR is\n"
	        "                    loopback only: 127.0.0.1:PORT, [::1]:PORT or unix:PATH (PORT 0:\n"
	        "                    any free port; the address bound is written to DIR/http.addr)\n"
	        "  -v, --verbose     log agents coming and going (-vv: debug)\n"
	        "  -h, --help        this text\n"
	        "  --version         print \"beastd beastmesh VERSION\" and exit\n"
	        "\n"
	        "Signals: SIGINT/SIGTERM stop cleanly; SIGUSR1 pauses the broadcast proxy and\n"
	        "SIGUSR2 resumes it (what `beast proxy pause|resume` sends).\n"
	        "\n"
	        "Exit status: 0 after a clean stop (SIGINT/SIGTERM), 1 on error, 2 on bad usage.\n");
}

/* Every setting, from the command line or a --config file. */
typedef struct {
	bm_broker_opts_t o;  /* the broker's */
	bm_proxy_opts_t po;  /* the broadcast proxy's */
	int verbose;         /* -v count */
	const char *http;    /* --http address, or NULL */
} s_cfg_t;

static const struct option s_longopts[] = {
	{"dir", required_argument, NULL, 'd'},
	{"tcp", required_argument, NULL, 't'},
	{"heartbeat", required_argument, NULL, 'H'},
	{"max-body", required_argument, NULL, 'm'},
	{"max-pending", required_argument, NULL, 'p'},
	{"pub-tcp", required_argument, NULL, 'P'},
	{"sub-tcp", required_argument, NULL, 'S'},
	{"no-lvc", no_argument, NULL, 'N'},
	{"no-direct", no_argument, NULL, 'D'},
	{"lvc-max", required_argument, NULL, 'L'},
	{"curve", no_argument, NULL, 'C'},
	{"server-key", required_argument, NULL, 'K'},
	{"allow", required_argument, NULL, 'A'},
	{"http", required_argument, NULL, 'T'},
	{"verbose", no_argument, NULL, 'v'},
	{"config", required_argument, NULL, 'c'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{0},
};

/* A positive decimal count, all of v: its value, or 0. */
static unsigned long long
s_count(const char *v)
{
	char *end = NULL;
	unsigned long long n;

	if (v == NULL || *v < '0' || *v > '9') {
		return 0;
	}
	errno = 0;
	n = strtoull(v, &end, 10);
	return errno == 0 && *end == '\0' ? n : 0;
}

/*
 * Applies one setting; val is the argument (NULL for a flag on the
 * command line).  0, or -1 with what is wrong in why.  Strings are kept
 * by pointer: argv's, or the config file's buffer (alive until exit).
 */
static int
s_set(s_cfg_t *c, int id, const char *val, char *why, size_t whylen)
{
	unsigned long long n;

	switch (id) {
	case 'd':
		c->o.dir = val;
		break;
	case 't':
		c->o.tcp = val;
		break;
	case 'H':
		n = s_count(val);
		if (n < 10 || n > 600000) {
			snprintf(why, whylen, "heartbeat takes 10..600000 ms, not '%s'", val);
			return -1;
		}
		c->o.heartbeat_ms = (int)n;
		break;
	case 'm':
		if ((c->o.max_body = s_count(val)) == 0) {
			snprintf(why, whylen, "max-body takes a positive byte count, not '%s'", val);
			return -1;
		}
		break;
	case 'p':
		if ((c->o.max_pending = s_count(val)) == 0) {
			snprintf(why, whylen, "max-pending takes a positive byte count, not '%s'", val);
			return -1;
		}
		break;
	case 'P':
		c->po.pub_tcp = val;
		break;
	case 'S':
		c->po.sub_tcp = val;
		break;
	case 'L':
		if ((c->po.lvc_max_bytes = s_count(val)) == 0) {
			snprintf(why, whylen, "lvc-max takes a positive byte count, not '%s'", val);
			return -1;
		}
		break;
	case 'K':
		c->o.server_key = val;
		break;
	case 'A':
		c->o.allow_dir = val;
		break;
	case 'T': {
		int rc = bm_httpd_check(val);

		if (rc == -EADDRNOTAVAIL) {
			snprintf(why, whylen, "http %s: the HTTP endpoints serve loopback only "
			                      "(127.0.0.1:PORT, [::1]:PORT or unix:PATH)",
			         val);
			return -1;
		}
		if (rc < 0) {
			snprintf(why, whylen, "http %s: not an address (127.0.0.1:PORT, [::1]:PORT or "
			                      "unix:PATH)",
			         val);
			return -1;
		}
		c->http = val;
		break;
	}
	case 'N':
	case 'D':
	case 'C':
	case 'v': {
		/* Flags: on the command line val is NULL; in a file
		 * yes/no (true/false, on/off, 1/0), verbose also a level. */
		bool on = true;
		int level = 1;

		if (val != NULL) {
			if (!strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "on") ||
			    !strcmp(val, "1")) {
				on = true;
			} else if (!strcmp(val, "no") || !strcmp(val, "false") || !strcmp(val, "off") ||
			           !strcmp(val, "0")) {
				on = false;
				level = 0;
			} else if (id == 'v' && !strcmp(val, "2")) {
				level = 2;
			} else {
				snprintf(why, whylen, "'%s' is not yes or no%s", val,
				         id == 'v' ? " (or a level 0..2)" : "");
				return -1;
			}
		}
		if (id == 'N') {
			c->po.no_lvc = on;
		} else if (id == 'D') {
			c->o.no_direct = on;
		} else if (id == 'C') {
			c->o.curve = on;
		} else if (val == NULL) {
			c->verbose++;
		} else {
			c->verbose = level;
		}
		break;
	}
	default:
		snprintf(why, whylen, "not a setting");
		return -1;
	}
	return 0;
}

/* The --config file's text: the settings point into it until exit. */
static char *s_conf_buf;

typedef struct {
	s_cfg_t *cfg;     /* what the file sets */
	const char *path; /* for messages */
} s_conf_ctx_t;

static int
s_conf_one(void *arg, const char *key, const char *value, int line)
{
	s_conf_ctx_t *x = arg;
	char why[256];

	for (const struct option *lo = s_longopts; lo->name != NULL; lo++) {
		if (strcmp(lo->name, key) != 0) {
			continue;
		}
		if (lo->val == 'c' || lo->val == 'h' || lo->val == 'V') {
			break; /* options, not settings */
		}
		if (lo->has_arg == required_argument && *value == '\0') {
			fprintf(stderr, "beastd: %s:%d: '%s' needs a value (%s = VALUE)\n", x->path, line,
			        key, key);
			return -ECANCELED;
		}
		if (s_set(x->cfg, lo->val, value, why, sizeof why) < 0) {
			fprintf(stderr, "beastd: %s:%d: %s\n", x->path, line, why);
			return -ECANCELED;
		}
		return 0;
	}
	fprintf(stderr, "beastd: %s:%d: unknown key '%s' (keys are beastd's long options: "
	                "dir, tcp, heartbeat, max-body, max-pending, pub-tcp, sub-tcp, no-lvc, "
	                "no-direct, lvc-max, curve, server-key, allow, http, verbose)\n",
	        x->path, line, key);
	return -ECANCELED;
}

/* Finds --config FILE (or --config=FILE) in argv before getopt runs, so
 * the file is applied first and the command line overrides it. */
static const char *
s_config_arg(int argc, char **argv)
{
	const char *path = NULL;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			break;
		}
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			path = argv[i] + 9;
		}
	}
	return path;
}

int
main(int argc, char **argv)
{
	s_cfg_t cfg = {0};
	bm_broker_opts_t o;
	bm_broker_t *b = NULL;
	bm_proxy_opts_t po;
	bm_proxy_t *p = NULL;
	struct sigaction sa = {.sa_handler = s_on_signal};
	const char *conf_path;
	char dir[BM_PATH_MAX], why[256], addr_file[BM_PATH_MAX + 16] = "";
	bm_httpd_t *h = NULL;
	int c, rc, verbose;

	bm_log_set_ident("beastd");
	if ((conf_path = s_config_arg(argc, argv)) != NULL) {
		s_conf_ctx_t x = {.cfg = &cfg, .path = conf_path};
		int line = 0;

		rc = bm_conf_load(conf_path, s_conf_one, &x, &s_conf_buf, &line);
		if (rc == -EINVAL && line > 0) {
			fprintf(stderr, "beastd: %s:%d: expected `key = value` (a key is a long option's "
			                "name, e.g. heartbeat = 500)\n",
			        conf_path, line);
			return 2;
		}
		if (rc == -ECANCELED) {
			return 2; /* s_conf_one said why */
		}
		if (rc < 0) {
			fprintf(stderr, "beastd: --config %s: %s\n", conf_path, bm_strerror(rc));
			return 2;
		}
	}
	while ((c = getopt_long(argc, argv, "vh", s_longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			break; /* read above, before the rest */
		case 'h':
			s_usage(stdout);
			return 0;
		case 'V':
			printf("beastd beastmesh %s\n", bm_version());
			return 0;
		case '?':
			s_usage(stderr);
			return 2;
		default:
			if (s_set(&cfg, c, optarg, why, sizeof why) < 0) {
				fprintf(stderr, "beastd: --%s\n", why);
					return 2;
			}
			break;
		}
	}
	o = cfg.o;
	po = cfg.po;
	verbose = cfg.verbose;
	if (optind != argc) {
		s_usage(stderr);
		return 2;
	}
	if (o.curve && o.tcp == NULL) {
		fprintf(stderr, "beastd: --curve secures the --tcp endpoint; give one\n");
		return 2;
	}
	if (!o.curve && (o.server_key != NULL || o.allow_dir != NULL)) {
		fprintf(stderr, "beastd: --server-key and --allow take effect with --curve only\n");
		return 2;
	}
	if (verbose > 0 && getenv("BEAST_LOG") == NULL) {
		bm_log_set_level(verbose > 1 ? BM_LOG_DEBUG : BM_LOG_INFO);
	}
	/* No SA_RESTART: the signal must interrupt zmq_poll. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = bm_broker_open(&o, &b);
	if (rc < 0) {
		if (bm_rundir_resolve(o.dir, false, dir) < 0) {
			snprintf(dir, sizeof dir, "%s", o.dir ? o.dir : "the runtime directory");
		}
		if (rc == BM_ERUNNING) {
			bm_log(BM_LOG_ERROR, "beastd is already running in %s (stop it first, or use --dir)",
			       dir);
		} else if (rc == BM_EUNSAFEDIR) {
			bm_log(BM_LOG_ERROR,
			       "%s is not private: it must be a directory owned by uid %u with mode 0700 "
			       "(chmod 700 it, or pick another with --dir)",
			       dir, (unsigned)getuid());
		} else if (rc == -EADDRNOTAVAIL) {
			bm_log(BM_LOG_ERROR, "--tcp %s: only loopback endpoints (tcp://127.0.0.1:PORT) "
			                     "are allowed without --curve",
			       o.tcp);
		} else if (rc == BM_EBADKEY) {
			char kd[BM_PATH_MAX];

			if (o.server_key == NULL && bm_curve_keydir(kd) == 0) {
				strncat(kd, "/server.key", sizeof kd - strlen(kd) - 1);
			} else {
				snprintf(kd, sizeof kd, "%s", o.server_key ? o.server_key : "server.key");
			}
			bm_log(BM_LOG_ERROR, "server key %s is not usable: it must be a key file "
			                     "(public + secret) owned by you, not readable by group/others "
			                     "(chmod 600 it, or remove it to have a new one made)",
			       kd);
		} else if (rc == -ENOTDIR && o.curve) {
			bm_log(BM_LOG_ERROR, "--allow %s: not a directory (make it, and put the agents' "
			                     ".pub files in it)",
			       o.allow_dir ? o.allow_dir : "STATE/keys/allowed");
		} else if (rc == -ENAMETOOLONG) {
			bm_log(BM_LOG_ERROR, "runtime directory path is too long for ipc sockets "
			                     "(max %d bytes with the socket name); pick a shorter --dir",
			       BM_IPC_PATH_MAX);
		} else {
			bm_log(BM_LOG_ERROR, "cannot start: %s", bm_strerror(rc));
		}
		return 1;
	}
	/* The broker holds the directory's lock now, so the proxy may take
	 * over stale socket files. */
	po.dir = bm_broker_dir(b);
	po.curve = o.curve;
	po.server_key = o.server_key;
	po.allow_dir = o.allow_dir;
	po.max_body = o.max_body;
	rc = bm_proxy_open(&po, &p);
	if (rc < 0) {
		if (rc == -EADDRNOTAVAIL) {
			bm_log(BM_LOG_ERROR, "--pub-tcp/--sub-tcp: only loopback endpoints "
			                     "(tcp://127.0.0.1:PORT) are allowed without --curve");
		} else {
			bm_log(BM_LOG_ERROR, "cannot start the broadcast proxy: %s", bm_strerror(rc));
		}
		bm_broker_destroy(&b);
		return 1;
	}
	bm_broker_set_stats_hook(b, s_proxy_stats, p);
	if (cfg.http != NULL) {
		rc = bm_httpd_open(cfg.http, bm_broker_dir(b), &h);
		if (rc < 0) {
			bm_log(BM_LOG_ERROR, "--http %s: cannot serve: %s", cfg.http, bm_strerror(rc));
			bm_broker_set_stats_hook(b, NULL, NULL);
			bm_proxy_destroy(&p);
			bm_broker_destroy(&b);
			return 1;
		}
		s_broker = b;
		s_proxy = p;
		s_publish(h); /* the endpoints answer from the start */
		bm_broker_set_tick_hook(b, s_publish, h, S_SNAP_MS);
		s_write_addr(bm_broker_dir(b), bm_httpd_address(h), addr_file, sizeof addr_file);
		bm_log(BM_LOG_INFO, "HTTP on %s (/metrics /healthz /varz /agents /flows /topics /)",
		       bm_httpd_address(h));
	}
	bm_log(BM_LOG_INFO, "listening on %s%s%s%s; broadcast on %s/pub.sock -> %s/sub.sock%s",
	       bm_broker_endpoint(b), o.tcp ? " and " : "", o.tcp ? o.tcp : "",
	       o.curve ? " (CURVE)" : "", bm_broker_dir(b),
	       bm_broker_dir(b), po.no_lvc ? " (no LVC)" : "");
	rc = s_run(b, p);
	bm_broker_set_tick_hook(b, NULL, NULL, 0);
	bm_httpd_destroy(&h);
	if (addr_file[0] != '\0') {
		(void)unlink(addr_file);
	}
	bm_broker_set_stats_hook(b, NULL, NULL);
	bm_proxy_destroy(&p);
	bm_broker_destroy(&b);
	if (rc < 0) {
		bm_log(BM_LOG_ERROR, "broker stopped: %s", bm_strerror(rc));
		return 1;
	}
	bm_log(BM_LOG_INFO, "stopped");
	return 0;
}

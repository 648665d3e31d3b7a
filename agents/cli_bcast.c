/*
 * cli_bcast.c - the beast subcommands for broadcasts: pub, sub, tap, and
 * proxy (pause/resume/status of beastd's broadcast proxy).
 *
 * pub opens a bm_pub_t (which waits until the proxy has attached it),
 * sends one message, retrying while the proxy pushes back, and lingers
 * until it has left.  sub and tap open a bm_sub_t (tap: on the proxy's
 * capture) and print one line per message; with --json one object per
 * line.  Losses the subscriber can see (sequence gaps) are printed per
 * message in JSON ("gap") and summed on stderr at the end.
 *
 * Shared memory: pub --shm-log SIZE also offers the messages in a
 * shared-memory log (with --lines a publisher stays up, one message per
 * line of stdin, and local readers attach while it runs); sub --shm reads
 * local publishers that offer one from their logs (untethered, or
 * --tethered), the rest through the proxy.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "bm_proxy.h"
#include "bm_shm.h"
#include "cli.h"

#define S_DEFAULT_TIMEOUT 5000

static int
s_bad_topic(const char *cmd, const char *topic)
{
	fprintf(stderr, "beast %s: '%s' is not a valid topic: segments of 1..%d printable "
	                "ASCII bytes without '/' or spaces, separated by '/', at most %d deep and "
	                "%d bytes (e.g. tot/7/2)\n",
	        cmd, topic, BM_TOPIC_SEG_MAX, BM_TOPIC_DEPTH_MAX, BM_TOPIC_MAX);
	return BM_EXIT_USAGE;
}

static const char s_pub_help[] =
	"usage: beast pub [--as NAME] [--timeout MS] [--shm-log SIZE] [--lines] TOPIC [BODY]\n"
	"\n"
	"Broadcasts BODY (stdin when omitted or -) on TOPIC, e.g. tot/7/2 (tree 7,\n"
	"branch 2); subscribers to a prefix of it (tot/7) receive it.  Waits up to\n"
	"MS (5000) for the proxy to take it.  NAME (default pid-<pid>) is the\n"
	"publisher name subscribers see.  --lines: one message per line of stdin,\n"
	"published as lines come, until end of input.  --shm-log SIZE (bytes, or\n"
	"with K, M or G; at least 64K): also offer the messages in a shared-memory\n"
	"log that local subscribers (beast sub --shm) read instead of the proxy.\n";

/* SIZE with an optional K, M or G suffix; 0 when malformed. */
static size_t
s_size(const char *v)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || end == v || n == 0) {
		return 0;
	}
	switch (*end) {
	case 'K': case 'k': n <<= 10; end++; break;
	case 'M': case 'm': n <<= 20; end++; break;
	case 'G': case 'g': n <<= 30; end++; break;
	default: break;
	}
	return *end == '\0' && n <= BM_BCASTLOG_MAX_CAPACITY ? (size_t)n : 0;
}

/* Sends one message, retrying while the proxy or a tethered log reader
 * pushes back, and servicing readers that attach meanwhile. */
static int
s_pub_one(bm_pub_t *p, const char *topic, const void *body, size_t len, long timeout)
{
	int64_t deadline = bm_mono_ms() + timeout;
	int rc;

	while ((rc = bm_pub_send(p, topic, body, len)) == BM_EFULL && bm_mono_ms() < deadline) {
		zmq_pollitem_t it[2] = {{.socket = bm_pub_socket(p), .events = ZMQ_POLLOUT}};
		int n = 1;

		if (bm_pub_shm_fd(p) >= 0) {
			it[n++] = (zmq_pollitem_t){.fd = bm_pub_shm_fd(p), .events = ZMQ_POLLIN};
		}
		(void)zmq_poll(it, n, 5);
		(void)bm_pub_service(p);
	}
	return rc;
}

/* --lines: one message per line of stdin until its end. */
static int
s_pub_lines(bm_pub_t *p, const char *topic, long timeout)
{
	char *line = NULL;
	size_t cap = 0, used = 0;
	int rc = 0;

	bm_cli_signals();
	while (!bm_cli_stop) {
		struct pollfd w[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
		                      {.fd = bm_pub_shm_fd(p), .events = POLLIN}};
		char buf[4096];
		ssize_t n;

		if (poll(w, w[1].fd >= 0 ? 2 : 1, -1) < 0) {
			continue; /* a signal */
		}
		if (w[1].revents & POLLIN) {
			(void)bm_pub_service(p);
		}
		if (!(w[0].revents & (POLLIN | POLLHUP))) {
			continue;
		}
		if ((n = read(STDIN_FILENO, buf, sizeof buf)) <= 0) {
			break;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\n') {
				if (used == cap) {
					char *b = realloc(line, cap ? cap * 2 : 256);

					if (b == NULL || cap * 2 > BM_BCAST_BODY_MAX_DEFAULT) {
						free(b != NULL ? b : line);
						return -ENOMEM;
					}
					line = b;
					cap = cap ? cap * 2 : 256;
				}
				line[used++] = buf[i];
				continue;
			}
			if ((rc = s_pub_one(p, topic, line, used, timeout)) < 0) {
				free(line);
				return rc;
			}
			used = 0;
		}
	}
	if (used > 0) {
		rc = s_pub_one(p, topic, line, used, timeout);
	}
	free(line);
	return rc;
}

int
bm_cli_pub(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {{"as", required_argument, NULL, 'a'},
	                                   {"timeout", required_argument, NULL, 't'},
	                                   {"shm-log", required_argument, NULL, 'S'},
	                                   {"lines", no_argument, NULL, 'l'},
	                                   {"help", no_argument, NULL, 'h'}, {0}};
	bm_pub_opts_t o = {.dir = dir, .endpoint = bm_cli_pub_connect};
	bool lines = false;
	char topic[BM_TOPIC_MAX + 2], *buf = NULL;
	const char *body;
	bm_pub_t *p = NULL;
	long timeout = S_DEFAULT_TIMEOUT;
	size_t len;
	int ch, rc;

	if (bm_cli_pub_connect != NULL) {
		o.key_file = bm_cli_key;
		o.server_key_file = bm_cli_server_key;
	}
	optind = 0;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (ch == 'a') {
			o.name = optarg;
		} else if (ch == 't' && (timeout = bm_cli_num(optarg, 1, 3600000)) > 0) {
			continue;
		} else if (ch == 'S' && (o.shm_log = s_size(optarg)) >= BM_BCASTLOG_MIN_CAPACITY) {
			continue;
		} else if (ch == 'S') {
			fprintf(stderr, "beast pub: --shm-log '%s': a size of at least 64K and at most 4G "
			                "(bytes, or with K, M or G)\n", optarg);
			return BM_EXIT_USAGE;
		} else if (ch == 'l') {
			lines = true;
		} else if (ch == 'h') {
			fputs(s_pub_help, stdout);
			return BM_EXIT_OK;
		} else {
			fputs(s_pub_help, stderr);
			return BM_EXIT_USAGE;
		}
	}
	if (argc - optind < 1 || argc - optind > 2 || (lines && argc - optind == 2 &&
	                                               strcmp(argv[optind + 1], "-") != 0)) {
		fputs(s_pub_help, stderr);
		return BM_EXIT_USAGE;
	}
	if (o.shm_log > 0 && bm_cli_pub_connect != NULL) {
		fprintf(stderr, "beast pub: --shm-log is for local subscribers: not with --pub-connect\n");
		return BM_EXIT_USAGE;
	}
	if (bm_topic_normalize(argv[optind], false, topic, sizeof topic) < 0) {
		return s_bad_topic("pub", argv[optind]);
	}
	if (o.name != NULL && bm_name_check(o.name) < 0) {
		return bm_cli_fail("pub", BM_EBADNAME, dir, o.name);
	}
	if (lines) {
		body = NULL;
		len = 0;
	} else if (argc - optind == 2 && strcmp(argv[optind + 1], "-") != 0) {
		body = argv[optind + 1];
		len = strlen(body);
	} else {
		if ((rc = bm_cli_read_stdin(BM_BCAST_BODY_MAX_DEFAULT, &buf, &len)) < 0) {
			return bm_cli_fail("pub", rc, dir, "stdin");
		}
		body = buf;
	}
	o.connect_timeout_ms = (int)timeout;
	if ((rc = bm_pub_open(&o, &p)) < 0) {
		free(buf);
		return bm_cli_fail("pub", rc, dir, NULL);
	}
	rc = lines ? s_pub_lines(p, topic, timeout) : s_pub_one(p, topic, body, len, timeout);
	free(buf);
	bm_pub_destroy(&p); /* lingers until the message has left */
	if (rc == BM_EFULL) {
		fprintf(stderr, "beast pub: the broadcast proxy (or a tethered shared-memory reader) did "
		                "not take the message within %ld ms (is the proxy paused or "
		                "overloaded? beast stats shows bcast_paused)\n",
		        timeout);
		return BM_EXIT_TIMEOUT;
	}
	if (rc < 0) {
		return bm_cli_fail("pub", rc, dir, topic);
	}
	return BM_EXIT_OK;
}

static void
s_print(const bm_bcast_t *m, bool json)
{
	bm_bcast_t *mm = (bm_bcast_t *)m;

	if (json) {
		printf("{\"topic\":");
		bm_cli_json_str(stdout, m->topic, strlen(m->topic));
		printf(",\"from\":");
		bm_cli_json_str(stdout, m->from, strlen(m->from));
		printf(",\"seq\":%" PRIu64 ",\"tseq\":%" PRIu64 ",\"ts_ms\":%" PRId64
		       ",\"replay\":%s,\"gap\":%" PRIu64 ",",
		       m->seq, m->tseq, m->ts_ms, m->replay ? "true" : "false", m->gap);
		bm_cli_json_body(stdout, bm_bcast_data(mm), bm_bcast_size(mm));
		printf("}\n");
	} else {
		printf("%s %s#%" PRIu64 "%s ", m->topic, m->from, m->seq, m->replay ? " (cached)" : "");
		fwrite(bm_bcast_data(mm), 1, bm_bcast_size(mm), stdout);
		putchar('\n');
	}
	fflush(stdout);
}

/* sub and tap: print until count, timeout or a signal. */
static int
s_follow(const char *cmd, const char *dir, bool tap, bool no_lvc, int shm, char **prefixes,
         int nprefix, long count, long timeout, bool json)
{
	bm_sub_opts_t o = {.dir = dir, .tap = tap, .no_lvc = no_lvc, .shm_auto = shm > 0,
	                   .shm_tethered = shm > 1};
	bm_sub_t *s = NULL;
	bm_sub_stats_t st;
	int64_t deadline = timeout > 0 ? bm_mono_ms() + timeout : INT64_MAX;
	long got = 0;
	int rc, exit_code = BM_EXIT_OK;
	char probe[BM_PATH_MAX];

	/* Fail early and clearly when nobody serves this directory: a
	 * subscriber alone would wait for ever. */
	if (!tap && bm_cli_sub_connect != NULL) {
		o.endpoint = bm_cli_sub_connect;
		o.key_file = bm_cli_key;
		o.server_key_file = bm_cli_server_key;
	} else if ((rc = bm_rundir_resolve(dir, false, probe)) < 0) {
		return bm_cli_fail(cmd, rc == -ENOENT ? BM_ENOBROKER : rc, dir, NULL);
	} else {
		strncat(probe, tap ? "/tap.sock" : "/sub.sock", sizeof probe - strlen(probe) - 1);
		if (access(probe, F_OK) < 0) {
			return bm_cli_fail(cmd, BM_ENOBROKER, dir, NULL);
		}
	}
	for (int i = 0; i < nprefix; i++) {
		char t[BM_TOPIC_MAX + 2];

		if (bm_topic_normalize(prefixes[i], true, t, sizeof t) < 0) {
			return s_bad_topic(cmd, prefixes[i]);
		}
	}
	if ((rc = bm_sub_open(&o, &s)) < 0) {
		return bm_cli_fail(cmd, rc, dir, NULL);
	}
	for (int i = 0; i < nprefix; i++) {
		if ((rc = bm_sub_subscribe(s, prefixes[i])) < 0) {
			bm_sub_destroy(&s);
			return bm_cli_fail(cmd, rc, dir, prefixes[i]);
		}
	}
	if (nprefix == 0 && (rc = bm_sub_subscribe(s, "")) < 0) {
		bm_sub_destroy(&s);
		return bm_cli_fail(cmd, rc, dir, NULL);
	}
	bm_cli_signals();
	while (!bm_cli_stop && (count == 0 || got < count)) {
		bm_bcast_t m = {0};
		int64_t left = deadline - bm_mono_ms();

		if (left <= 0) {
			fprintf(stderr, "beast %s: timed out after %ld messages\n", cmd, got);
			exit_code = BM_EXIT_TIMEOUT;
			break;
		}
		rc = bm_sub_recv(s, left > 200 ? 200 : (int)left, &m);
		if (rc == -ETIMEDOUT || rc == -EINTR) {
			continue;
		}
		if (rc < 0) {
			exit_code = bm_cli_fail(cmd, rc, dir, NULL);
			break;
		}
		if (m.kind == BM_BCAST_SYNC) {
			fprintf(stderr, "beast %s: following '%s'\n", cmd, m.topic);
		} else {
			s_print(&m, json);
			got++;
		}
		bm_bcast_clear(&m);
	}
	bm_sub_stats(s, &st);
	if (st.shm_received > 0 || st.shm_fallbacks > 0) {
		fprintf(stderr, "beast %s: %" PRIu64 " messages came from shared-memory logs; %" PRIu64
		                " logs given up (%" PRIu64 " corrupt)\n",
		        cmd, st.shm_received, st.shm_fallbacks, st.shm_corrupt);
	}
	if (st.gaps > 0) {
		fprintf(stderr, "beast %s: %" PRIu64 " messages were lost on the way "
		                "(sequence gaps: this reader or the proxy fell behind)\n",
		        cmd, st.gaps);
	}
	bm_sub_destroy(&s);
	return exit_code;
}

static const char s_sub_help[] =
	"usage: beast sub [--count N] [--timeout MS] [--json] [--no-lvc] [--shm [--tethered]]\n"
	"                 PREFIX...\n"
	"\n"
	"Follows the topics under each PREFIX (tot/7 follows tree 7: tot/7/2,\n"
	"tot/7/2/5 ..., never tot/70) and prints one line per message: topic,\n"
	"publisher#seq, body.  The latest message of each topic already\n"
	"published is printed first (marked cached) unless --no-lvc.  With\n"
	"--json, one object per line: topic, from, seq, tseq, ts_ms, replay, gap\n"
	"(messages lost just before this one), body or body_b64.  Stops after N\n"
	"messages, after MS, or on Ctrl-C.  --shm: read local publishers that offer\n"
	"a shared-memory log (beast pub --shm-log) from it instead of the proxy,\n"
	"without a duplicate or an uncounted loss at the switch; untethered (a\n"
	"reader that falls behind skips ahead, its loss counted), or with\n"
	"--tethered holding the publisher back instead.\n";

static int
s_sub_or_tap(int argc, char **argv, const char *dir, bool tap)
{
	static const struct option lo[] = {{"count", required_argument, NULL, 'n'},
	                                   {"timeout", required_argument, NULL, 't'},
	                                   {"json", no_argument, NULL, 'j'},
	                                   {"no-lvc", no_argument, NULL, 'L'},
	                                   {"shm", no_argument, NULL, 'S'},
	                                   {"tethered", no_argument, NULL, 'T'},
	                                   {"help", no_argument, NULL, 'h'}, {0}};
	const char *cmd = tap ? "tap" : "sub", *help = tap ? NULL : s_sub_help;
	static const char tap_help[] =
		"usage: beast tap [--count N] [--timeout MS] [--json] [PREFIX]\n"
		"\n"
		"Prints the broadcast traffic passing through beastd's proxy, live, from\n"
		"its capture socket (everything, or what is under PREFIX), in the format\n"
		"of beast sub.  No cached messages.\n";
	long count = 0, timeout = 0;
	bool json = false, no_lvc = false, shm = false, tethered = false;
	int ch;

	help = tap ? tap_help : s_sub_help;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (ch == 'n' && (count = bm_cli_num(optarg, 1, 1000000000)) > 0) {
			continue;
		} else if (ch == 't' && (timeout = bm_cli_num(optarg, 1, 86400000)) > 0) {
			continue;
		} else if (ch == 'j') {
			json = true;
		} else if (ch == 'L' && !tap) {
			no_lvc = true;
		} else if (ch == 'S' && !tap) {
			shm = true;
		} else if (ch == 'T' && !tap) {
			tethered = true;
		} else if (ch == 'h') {
			fputs(help, stdout);
			return BM_EXIT_OK;
		} else {
			fputs(help, stderr);
			return BM_EXIT_USAGE;
		}
	}
	if ((!tap && argc - optind < 1) || (tap && argc - optind > 1) || (tethered && !shm)) {
		fputs(help, stderr);
		return BM_EXIT_USAGE;
	}
	if (shm && bm_cli_sub_connect != NULL) {
		fprintf(stderr, "beast sub: --shm reads local publishers: not with --sub-connect\n");
		return BM_EXIT_USAGE;
	}
	return s_follow(cmd, dir, tap, no_lvc, shm ? 1 + tethered : 0, argv + optind, argc - optind,
	                count, timeout, json);
}

int
bm_cli_sub(int argc, char **argv, const char *dir)
{
	return s_sub_or_tap(argc, argv, dir, false);
}

int
bm_cli_tap(int argc, char **argv, const char *dir)
{
	return s_sub_or_tap(argc, argv, dir, true);
}

/* ---- proxy: pause, resume, status ---- */

static const char s_proxy_help[] =
	"usage: beast proxy pause|resume|status [--timeout MS]\n"
	"\n"
	"Steers beastd's broadcast proxy.  pause: it stops reading publishers\n"
	"(their messages wait at the publishers' high-water marks, then\n"
	"bm_pub_send says the proxy is busy; nothing is dropped silently); resume:\n"
	"it reads them again.  status prints paused (0/1) and the message counts.\n"
	"pause and resume signal the beastd that holds DIR/beastd.lock (SIGUSR1,\n"
	"SIGUSR2) and wait up to MS (5000) until its counters show the change.\n";

/* The pid of the beastd that holds DIR/beastd.lock; BM_ENOBROKER if none. */
static int
s_beastd_pid(const char *rundir, pid_t *ret_pid)
{
	char path[BM_PATH_MAX + 16], buf[32];
	ssize_t n;
	long pid;
	int fd, rc = 0;

	snprintf(path, sizeof path, "%s/beastd.lock", rundir);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		return errno == ENOENT ? BM_ENOBROKER : -errno;
	}
	/* A live beastd holds the lock exclusively: if we can share it, the
	 * file is a dead one's and its pid may belong to anybody now. */
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		rc = BM_ENOBROKER;
	} else if (errno != EWOULDBLOCK) {
		rc = -errno;
	} else if ((n = pread(fd, buf, sizeof buf - 1, 0)) <= 0) {
		rc = BM_ENOBROKER;
	} else {
		buf[n] = '\0';
		pid = strtol(buf, NULL, 10);
		if (pid <= 1) {
			rc = BM_ENOBROKER;
		} else {
			*ret_pid = (pid_t)pid;
		}
	}
	close(fd);
	return rc;
}

/* bcast_paused and the message counts from beastd's STATS. */
static int
s_proxy_state(bm_client_t *c, int64_t *paused, int64_t *in, int64_t *out)
{
	bm_stat_t *v = NULL;
	size_t n = 0;
	int rc = bm_client_stats(c, 2000, &v, &n);

	if (rc < 0) {
		return rc;
	}
	*paused = *in = *out = -1;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].key, "bcast_paused") == 0) {
			*paused = v[i].value;
		} else if (strcmp(v[i].key, "bcast_in") == 0) {
			*in = v[i].value;
		} else if (strcmp(v[i].key, "bcast_out") == 0) {
			*out = v[i].value;
		}
	}
	free(v);
	return *paused < 0 ? -ENOTSUP : 0;
}

int
bm_cli_proxy(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {{"timeout", required_argument, NULL, 't'},
	                                   {"help", no_argument, NULL, 'h'}, {0}};
	char rundir[BM_PATH_MAX];
	const char *what;
	bm_client_t *c = NULL;
	long timeout = S_DEFAULT_TIMEOUT;
	int64_t paused, in, out, deadline;
	int ch, rc, want = -1;
	pid_t pid = 0;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (ch == 't' && (timeout = bm_cli_num(optarg, 1, 3600000)) > 0) {
			continue;
		}
		fputs(s_proxy_help, ch == 'h' ? stdout : stderr);
		return ch == 'h' ? BM_EXIT_OK : BM_EXIT_USAGE;
	}
	if (argc - optind != 1) {
		fputs(s_proxy_help, stderr);
		return BM_EXIT_USAGE;
	}
	what = argv[optind];
	if (strcmp(what, "pause") == 0) {
		want = 1;
	} else if (strcmp(what, "resume") == 0) {
		want = 0;
	} else if (strcmp(what, "status") != 0) {
		fprintf(stderr, "beast proxy: unknown action '%s' (pause, resume or status)\n", what);
		return BM_EXIT_USAGE;
	}
	if ((rc = bm_rundir_resolve(dir, false, rundir)) < 0) {
		return bm_cli_fail("proxy", rc == -ENOENT ? BM_ENOBROKER : rc, dir, "beastd");
	}
	if ((rc = bm_cli_open("proxy", dir, NULL, NULL, &c)) < 0) {
		return -rc;
	}
	if (want >= 0) {
		if ((rc = s_beastd_pid(rundir, &pid)) < 0) {
			bm_client_destroy(&c);
			return bm_cli_fail("proxy", rc, dir, "beastd's pid");
		}
		if (kill(pid, want ? SIGUSR1 : SIGUSR2) < 0) {
			rc = -errno;
			bm_client_destroy(&c);
			return bm_cli_fail("proxy", rc, dir, "beastd (signal)");
		}
	}
	deadline = bm_mono_ms() + timeout;
	for (;;) {
		if ((rc = s_proxy_state(c, &paused, &in, &out)) < 0) {
			bm_client_destroy(&c);
			return bm_cli_fail("proxy", rc, dir, "the proxy's counters");
		}
		if (want < 0 || paused == want || bm_mono_ms() >= deadline) {
			break;
		}
		usleep(10000);
	}
	bm_client_destroy(&c);
	if (want >= 0 && paused != want) {
		fprintf(stderr, "beast proxy: beastd (pid %ld) did not %s in %ld ms\n", (long)pid,
		        what, timeout);
		return BM_EXIT_TIMEOUT;
	}
	printf("broadcast proxy %s (in %" PRId64 ", out %" PRId64 ")\n",
	       paused ? "paused" : "running", in, out);
	return BM_EXIT_OK;
}

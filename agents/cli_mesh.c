/*
 * cli_mesh.c - the beast subcommands that talk to the control mesh:
 * ls, send, listen, echo, request, stats, ping.
 *
 * Each one parses its arguments, opens a bm_client, does one job and maps
 * the outcome to the exit codes in cli.h.  Output meant for scripts comes
 * with --json, one object per line.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define S_DEFAULT_TIMEOUT 5000

static void
s_help(FILE *out, const char *text)
{
	fputs(text, out);
}

/* Common option parsing: returns the option char, or -1 at the end. */
#define S_GETOPT(argc, argv, longopts) getopt_long(argc, argv, "h", longopts, NULL)

/*
 * Options of a command that takes only --json and --help and no operands.
 * Returns -1 to go on (with *json set), or the exit code to return.
 */
static int
s_json_only(int argc, char **argv, const char *help, bool *json)
{
	static const struct option lo[] = {{"json", no_argument, NULL, 'j'},
	                                   {"help", no_argument, NULL, 'h'}, {0}};
	int ch;

	optind = 0;
	while ((ch = S_GETOPT(argc, argv, lo)) != -1) {
		if (ch == 'j') {
			*json = true;
		} else if (ch == 'h') {
			s_help(stdout, help);
			return BM_EXIT_OK;
		} else {
			s_help(stderr, help);
			return BM_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		s_help(stderr, help);
		return BM_EXIT_USAGE;
	}
	return -1;
}

static const char s_ls_help[] =
	"usage: beast ls [--all] [--json]\n"
	"\n"
	"Lists the agents online: name, capabilities, time since last heard from,\n"
	"messages in flight to it, sent, delivered and acknowledged.  --all: every\n"
	"host's agents from the shared directory the local beast-bridge keeps\n"
	"(host, name, capabilities, idle time, age of the host's entry;\n"
	"docs/multihost.md).\n";

/* `beast ls --all`: DIR/bridge-directory, written by beast-bridge once a
 * second, one agent per line: host, name, caps, idle ms, entry age ms. */
static int
s_ls_all(const char *dir, bool json)
{
	char rundir[BM_PATH_MAX], path[BM_PATH_MAX + 32], line[1024];
	struct stat st;
	FILE *f;
	int rc;

	if ((rc = bm_rundir_resolve(dir, false, rundir)) < 0) {
		return bm_cli_fail("ls", rc, dir, "the runtime directory");
	}
	snprintf(path, sizeof path, "%s/bridge-directory", rundir);
	if ((f = fopen(path, "r")) == NULL || fstat(fileno(f), &st) < 0) {
		fprintf(stderr, "beast ls: no shared directory in %s: is beast-bridge running on "
		                "this host? (docs/multihost.md)\n", rundir);
		if (f != NULL) {
			fclose(f);
		}
		return BM_EXIT_FAIL;
	}
	if (time(NULL) - st.st_mtime > 5) {
		fprintf(stderr, "beast ls: the shared directory is %lld s old: is beast-bridge "
		                "still running?\n", (long long)(time(NULL) - st.st_mtime));
	}
	if (!json) {
		printf("%-16s %-24s %-32s %8s %8s\n", "HOST", "NAME", "CAPS", "IDLE", "AGE");
	}
	while (fgets(line, sizeof line, f) != NULL) {
		char host[BM_HOST_MAX + 1], name[BM_NAME_MAX + 1], caps[600];
		long long idle, age;

		if (sscanf(line, "%32[^\t]\t%64[^\t]\t%599[^\t]\t%lld\t%lld", host, name, caps,
		           &idle, &age) != 5) {
			continue;
		}
		if (!json) {
			printf("%-16s %-24s %-32s %6lldms %6llds\n", host, name, caps, idle,
			       age / 1000);
			continue;
		}
		printf("{\"host\":");
		bm_cli_json_str(stdout, host, strlen(host));
		printf(",\"name\":");
		bm_cli_json_str(stdout, name, strlen(name));
		printf(",\"caps\":[");
		if (strcmp(caps, "-") != 0) {
			char *sv = NULL;
			int k = 0;

			for (char *t = strtok_r(caps, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
				printf(k++ ? "," : "");
				bm_cli_json_str(stdout, t, strlen(t));
			}
		}
		printf("],\"idle_ms\":%lld,\"age_ms\":%lld}\n", idle, age);
	}
	fclose(f);
	return BM_EXIT_OK;
}

int
bm_cli_ls(int argc, char **argv, const char *dir)
{
	bm_agent_info_t *v = NULL;
	bm_client_t *c = NULL;
	size_t n = 0;
	bool json = false, all = false;
	int rc, kept = 1;

	/* --all is taken out here; the rest parses as before. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--all") == 0) {
			all = true;
		} else {
			argv[kept++] = argv[i];
		}
	}
	argc = kept;
	if ((rc = s_json_only(argc, argv, s_ls_help, &json)) >= 0) {
		return rc;
	}
	if (all) {
		return s_ls_all(dir, json);
	}
	if ((rc = bm_cli_open("ls", dir, NULL, NULL, &c)) < 0) {
		return -rc;
	}
	rc = bm_client_list(c, S_DEFAULT_TIMEOUT, &v, &n);
	bm_client_destroy(&c);
	if (rc < 0) {
		return bm_cli_fail("ls", rc, dir, "the directory");
	}
	if (!json) {
		printf("%-24s %-32s %8s %8s %10s %10s %10s %s\n", "NAME", "CAPS", "IDLE", "INFLIGHT",
		       "SENT", "DELIVERED", "ACKED", "DIRECT");
	}
	for (size_t i = 0; i < n; i++) {
		char caps[BM_CAPS_MAX * (BM_CAP_MAX + 1) + 1] = "";

		for (int k = 0; k < v[i].ncaps; k++) {
			strcat(caps, k ? "," : "");
			strcat(caps, v[i].caps[k]);
		}
		if (json) {
			printf("{\"name\":");
			bm_cli_json_str(stdout, v[i].name, strlen(v[i].name));
			printf(",\"caps\":[");
			for (int k = 0; k < v[i].ncaps; k++) {
				printf(k ? "," : "");
				bm_cli_json_str(stdout, v[i].caps[k], strlen(v[i].caps[k]));
			}
			printf("],\"idle_ms\":%lld,\"inflight\":%llu,\"sent\":%llu,\"delivered\":%llu,"
			       "\"acked\":%llu,\"unacked_bytes\":%llu",
			       (long long)v[i].idle_ms, (unsigned long long)v[i].inflight,
			       (unsigned long long)v[i].sent, (unsigned long long)v[i].delivered,
			       (unsigned long long)v[i].acked, (unsigned long long)v[i].unacked_bytes);
			if (v[i].outbox_pending >= 0) {
				printf(",\"outbox_pending\":%lld,\"outbox_dead\":%lld,\"outbox_retries\":%lld",
				       (long long)v[i].outbox_pending, (long long)v[i].outbox_dead,
				       (long long)v[i].outbox_retries);
			}
			if (v[i].direct[0] != '\0') {
				printf(",\"direct\":");
				bm_cli_json_str(stdout, v[i].direct, strlen(v[i].direct));
			}
			printf("}\n");
		} else {
			/* DIRECT: peer:messages this agent sent over each route. */
			printf("%-24s %-32s %6lldms %8llu %10llu %10llu %10llu %s\n", v[i].name,
			       caps[0] ? caps : "-", (long long)v[i].idle_ms,
			       (unsigned long long)v[i].inflight, (unsigned long long)v[i].sent,
			       (unsigned long long)v[i].delivered, (unsigned long long)v[i].acked,
			       v[i].direct[0] ? v[i].direct : "-");
		}
	}
	free(v);
	return BM_EXIT_OK;
}

static const char s_stats_help[] =
	"usage: beast stats [--json]\n"
	"\n"
	"Prints beastd's counters: agents online, messages routed, ACKs, NACKs by\n"
	"reason, malformed frames dropped, and more.\n";

int
bm_cli_stats(int argc, char **argv, const char *dir)
{
	bm_client_t *c = NULL;
	bm_stat_t *v = NULL;
	size_t n = 0;
	bool json = false;
	int rc;

	if ((rc = s_json_only(argc, argv, s_stats_help, &json)) >= 0) {
		return rc;
	}
	if ((rc = bm_cli_open("stats", dir, NULL, NULL, &c)) < 0) {
		return -rc;
	}
	rc = bm_client_stats(c, S_DEFAULT_TIMEOUT, &v, &n);
	bm_client_destroy(&c);
	if (rc < 0) {
		return bm_cli_fail("stats", rc, dir, "the counters");
	}
	if (json) {
		printf("{");
	}
	for (size_t i = 0; i < n; i++) {
		if (json) {
			printf("%s\"%s\":%lld", i ? "," : "", v[i].key, (long long)v[i].value);
		} else {
			printf("%-16s %lld\n", v[i].key, (long long)v[i].value);
		}
	}
	if (json) {
		printf("}\n");
	}
	free(v);
	return BM_EXIT_OK;
}

static const char s_ping_help[] =
	"usage: beast ping [--count N]\n"
	"\n"
	"Checks that beastd answers and prints the round trip in microseconds.\n";

int
bm_cli_ping(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {{"count", required_argument, NULL, 'n'},
	                                   {"help", no_argument, NULL, 'h'}, {0}};
	bm_client_t *c = NULL;
	long count = 1;
	int ch, rc;

	optind = 0;
	while ((ch = S_GETOPT(argc, argv, lo)) != -1) {
		if (ch == 'n' && (count = bm_cli_num(optarg, 1, 1000000)) > 0) {
			continue;
		}
		if (ch == 'h') {
			s_help(stdout, s_ping_help);
			return BM_EXIT_OK;
		}
		s_help(stderr, s_ping_help);
		return BM_EXIT_USAGE;
	}
	if ((rc = bm_cli_open("ping", dir, NULL, NULL, &c)) < 0) {
		return -rc;
	}
	for (long i = 0; i < count && !bm_cli_stop; i++) {
		int64_t us = bm_client_ping(c, S_DEFAULT_TIMEOUT);

		if (us < 0) {
			bm_client_destroy(&c);
			return bm_cli_fail("ping", (int)us, dir, "PONG");
		}
		printf("pong from beastd: %lld us\n", (long long)us);
	}
	bm_client_destroy(&c);
	return BM_EXIT_OK;
}

/* Body from the argument, or stdin when it is absent or "-". */
static int
s_body(const char *cmd, const char *arg, size_t max, char **ret_buf, size_t *ret_len)
{
	int rc;

	if (arg != NULL && strcmp(arg, "-") != 0) {
		*ret_buf = strdup(arg);
		*ret_len = strlen(arg);
		return *ret_buf ? 0 : -ENOMEM;
	}
	rc = bm_cli_read_stdin(max, ret_buf, ret_len);
	if (rc < 0) {
		fprintf(stderr, "beast %s: cannot read the body from stdin: %s%s\n", cmd, bm_strerror(rc),
		        rc == BM_ETOOBIG ? " (send bulk data with `beast blob send`)" : "");
		return -BM_EXIT_FAIL;
	}
	return 0;
}

static const char s_send_help[] =
	"usage: beast send [--as NAME] [--type TYPE] [--timeout MS] [--no-wait]\n"
	"                  [--ttl MS] [--priority N] [--attempts N] [--trace]\n"
	"                  [--traceparent TP [--tracestate TS]] TO [BODY]\n"
	"\n"
	"Sends one message to the agent TO (or to any agent with a capability: @CAP)\n"
	"reliably: it is first stored in NAME's outbox journal, then sent, retried\n"
	"with backoff (at once when TO comes online) and kept until TO's ACK.\n"
	"BODY comes from stdin when omitted or '-'.\n"
	"\n"
	"  --as NAME      register as NAME (default send-PID); the outbox is NAME's\n"
	"  --type TYPE    message type (default msg)\n"
	"  --timeout MS   how long to wait for the ACK (default 5000)\n"
	"  --no-wait      exit 0 once the message is durably stored, even when TO\n"
	"                 is offline (`beast outbox --as NAME flush` delivers it)\n"
	"  --ttl MS       dead-letter it if not ACKed within MS (default: never)\n"
	"  --priority N   0..255, higher goes first among NAME's pending messages\n"
	"  --attempts N   dead-letter it after N unacknowledged attempts (default 20)\n"
	"  --trace        then print the message's timeline (as `beast trace ID`)\n"
	"  --traceparent TP, --tracestate TS   the W3C trace context to carry (stored\n"
	"                 with the message, sent with every attempt)\n"
	"\n"
	"Exit status: 0 acknowledged (or stored, with --no-wait), 1 dead-lettered or\n"
	"an error (reason on stderr), 2 usage, 3 no ACK in time (still stored),\n"
	"4 beastd not running (still stored).\n";

/* Removes an outbox left empty by a send under a throw-away name. */
static void
s_forget_state(const char *name)
{
	char path[BM_PATH_MAX], seg[BM_PATH_MAX + 32];
	char *slash;

	if (bm_cli_state_path(name, "outbox", false, path, sizeof path) < 0) {
		return;
	}
	for (unsigned long long n = 1; n < 4096; n++) {
		snprintf(seg, sizeof seg, "%s/%016llx.log", path, n);
		(void)unlink(seg);
	}
	if (rmdir(path) == 0 && (slash = strrchr(path, '/')) != NULL) {
		*slash = '\0';
		(void)rmdir(path);
	}
}

int
bm_cli_send(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {
		{"as", required_argument, NULL, 'a'},       {"type", required_argument, NULL, 't'},
		{"timeout", required_argument, NULL, 'T'},  {"no-wait", no_argument, NULL, 'W'},
		{"ttl", required_argument, NULL, 'L'},      {"priority", required_argument, NULL, 'P'},
		{"attempts", required_argument, NULL, 'N'}, {"help", no_argument, NULL, 'h'},
		{"trace", no_argument, NULL, 'R'},          {"traceparent", required_argument, NULL, 'p'},
		{"tracestate", required_argument, NULL, 's'}, {0}};
	char defname[BM_NAME_MAX + 1], *body = NULL;
	const char *name = NULL, *type = "msg", *to;
	bm_outbox_send_opts_t so = {0};
	bm_outbox_entry_t ent;
	bm_outbox_t *ob = NULL;
	bm_client_t *c = NULL;
	bm_id_t id;
	char hex[BM_ID_HEX_LEN + 1], peer[BM_ADDR_MAX + 1] = "";
	size_t len = 0;
	long timeout = S_DEFAULT_TIMEOUT, v;
	bool no_wait = false, throwaway = false, told_offline = false, trace = false;
	int ch, rc, status;
	int64_t deadline;

	optind = 0;
	while ((ch = S_GETOPT(argc, argv, lo)) != -1) {
		switch (ch) {
		case 'a':
			name = optarg;
			break;
		case 't':
			type = optarg;
			break;
		case 'W':
			no_wait = true;
			break;
		case 'R':
			trace = true;
			break;
		case 'p':
			so.traceparent = optarg;
			break;
		case 's':
			so.tracestate = optarg;
			break;
		case 'T':
			if ((timeout = bm_cli_num(optarg, 1, 86400000)) > 0) {
				break;
			}
			goto usage;
		case 'L':
			if ((v = bm_cli_num(optarg, 1, 0x7fffffff)) > 0) {
				so.ttl_ms = (uint32_t)v;
				break;
			}
			goto usage;
		case 'P':
			if (strcmp(optarg, "0") == 0) {
				break;
			}
			if ((v = bm_cli_num(optarg, 1, 255)) > 0) {
				so.priority = (uint8_t)v;
				break;
			}
			goto usage;
		case 'N':
			if ((v = bm_cli_num(optarg, 1, 1000000)) > 0) {
				so.max_attempts = (uint32_t)v;
				break;
			}
			goto usage;
		case 'h':
			s_help(stdout, s_send_help);
			return BM_EXIT_OK;
		default:
			goto usage;
		}
	}
	if (argc - optind < 1 || argc - optind > 2) {
		goto usage;
	}
	to = argv[optind];
	if (bm_address_check(to) < 0) {
		return bm_cli_fail("send", BM_EBADNAME, dir, to);
	}
	if (bm_type_check(type) < 0) {
		fprintf(stderr, "beast send: '%s' is not a valid type (printable, no spaces, at most %d)\n",
		        type, BM_TYPE_MAX);
		return BM_EXIT_USAGE;
	}
	if (name == NULL) {
		snprintf(defname, sizeof defname, "send-%ld", (long)getpid());
		name = defname;
		throwaway = true;
	} else if (bm_name_check(name) < 0) {
		return bm_cli_fail("send", BM_EBADNAME, dir, name);
	}
	if ((rc = s_body("send", argc - optind == 2 ? argv[optind + 1] : NULL, BM_BODY_MAX_DEFAULT,
	                 &body, &len)) < 0) {
		return -rc;
	}
	/* Journal first: stored (synced) before anything leaves. */
	if ((rc = bm_cli_outbox_open("send", name, NULL, NULL, &ob)) < 0) {
		free(body);
		return -rc;
	}
	so.to = to;
	so.type = type;
	rc = bm_outbox_put(ob, &so, body, len, &id);
	free(body);
	if (rc == 0) {
		rc = bm_outbox_commit(ob);
	}
	if (rc < 0) {
		bm_outbox_destroy(&ob);
		fprintf(stderr, "beast send: the message was not stored in %s's outbox: %s\n", name,
		        bm_strerror(rc));
		return BM_EXIT_FAIL;
	}
	bm_id_hex(&id, hex);
	if (no_wait) {
		bm_client_opts_t co = {.dir = dir, .name = name, .connect_timeout_ms = 1000};

		bm_cli_remote(&co);
		/* Stored: that is the promise.  Hand it to beastd if one is there
		 * (the client lingers to flush the frame); the ACK, if it comes
		 * after we left, is made up for by a resend the receiver drops. */
		if (bm_client_open(&co, &c) == 0) {
			bm_outbox_set_client(ob, c);
			(void)bm_outbox_pump(ob);
		}
		printf("%s\n", hex);
		fprintf(stderr, "stored in %s's outbox: %s\n", name, hex);
		bm_outbox_destroy(&ob);
		bm_client_destroy(&c);
		return BM_EXIT_OK;
	}
	if ((rc = bm_cli_open("send", dir, name, NULL, &c)) < 0) {
		bm_outbox_destroy(&ob);
		fprintf(stderr, "beast send: message %s stays in %s's outbox (beast outbox --as %s "
		                "flush sends it)\n",
		        hex, name, name);
		return -rc;
	}
	bm_outbox_set_client(ob, c);
	bm_cli_signals();
	status = BM_EXIT_TIMEOUT;
	deadline = bm_mono_ms() + timeout;
	while (!bm_cli_stop) {
		bm_event_t ev;
		int wait;

		if ((rc = bm_outbox_pump(ob)) < 0) {
			status = bm_cli_fail("send", rc, dir, "the outbox journal");
			break;
		}
		if (bm_outbox_get(ob, &id, &ent) < 0) {
			status = BM_EXIT_OK;
			break;
		}
		if (ent.dead_code != 0) {
			fprintf(stderr, "beast send: message %s to %s is dead: %s%s%s (beast outbox --as %s "
			                "requeue %s retries it)\n",
			        hex, to, bm_outbox_reason(ent.dead_code), ent.why[0] ? "; last refusal: " : "",
			        ent.why, name, hex);
			status = BM_EXIT_FAIL;
			break;
		}
		if (bm_mono_ms() >= deadline) {
			break;
		}
		wait = bm_outbox_timeout(ob);
		if (wait < 0 || wait > deadline - bm_mono_ms()) {
			wait = (int)(deadline - bm_mono_ms());
		}
		rc = bm_client_recv(c, wait, &ev);
		while (rc == 0) {
			if (ev.kind == BM_EV_ACK && bm_id_equal(&ev.id, &id)) {
				snprintf(peer, sizeof peer, "%s", ev.peer);
			}
			if (ev.kind == BM_EV_NACK && bm_id_equal(&ev.id, &id) && ev.code == BM_ENOAGENT &&
			    !told_offline) {
				fprintf(stderr, "beast send: %s; the message stays stored and is retried\n",
				        ev.text[0] ? ev.text : bm_strerror(ev.code));
				told_offline = true;
			}
			(void)bm_outbox_handle(ob, &ev);
			bm_event_clear(&ev);
			rc = bm_client_recv(c, 0, &ev);
		}
	}
	if (status == BM_EXIT_OK) {
		fprintf(stderr, "acked by %s: %s\n", peer[0] ? peer : to, hex);
	} else if (status == BM_EXIT_TIMEOUT) {
		fprintf(stderr, "beast send: no ACK for %s within %ld ms; it stays in %s's outbox "
		                "(beast outbox --as %s flush)\n",
		        hex, timeout, name, name);
	}
	{
		bm_outbox_stats_t st;

		bm_outbox_stats(ob, &st);
		bm_outbox_destroy(&ob);
		bm_client_destroy(&c);
		if (trace) {
			/* The outbox is closed: its journal can be read. */
			(void)bm_cli_trace_print(dir, &id, name, NULL, false);
		}
		if (throwaway && st.pending + st.inflight + st.dead == 0) {
			s_forget_state(name);
		}
	}
	return status;
usage:
	s_help(stderr, s_send_help);
	return BM_EXIT_USAGE;
}

static const char s_listen_help[] =
	"usage: beast listen [--caps A,B] [--count N] [--json] NAME\n"
	"\n"
	"Registers as NAME, prints each message delivered to it and ACKs it.\n"
	"Plain output is one line per message: FROM TYPE BODY.  With --json, one\n"
	"object per line: id, from, type, corr, attempt, ts_ms, body (or body_b64).\n"
	"\n"
	"  --caps A,B   capabilities to advertise (for anycast to @A)\n"
	"  --count N    exit after N messages\n"
	"\n"
	"A message delivered again (its sender retried after a lost ACK) is ACKed\n"
	"but not printed twice: NAME's de-dup window is kept in STATE/NAME/dedup\n"
	"(STATE: $BEAST_STATE, else $XDG_STATE_HOME/beast, else ~/.local/state/beast).\n";

static void
s_print_msg(bm_msg_t *m, bool json)
{
	char hex[BM_ID_HEX_LEN + 1], corr[BM_ID_HEX_LEN + 1];

	if (!json) {
		printf("%s %s ", m->from, m->type);
		fwrite(bm_msg_data(m), 1, bm_msg_size(m), stdout);
		putchar('\n');
		fflush(stdout);
		return;
	}
	bm_id_hex(&m->id, hex);
	printf("{\"id\":\"%s\",\"from\":", hex);
	bm_cli_json_str(stdout, m->from, strlen(m->from));
	printf(",\"type\":");
	bm_cli_json_str(stdout, m->type, strlen(m->type));
	if (!bm_id_is_zero(&m->corr)) {
		bm_id_hex(&m->corr, corr);
		printf(",\"corr\":\"%s\"", corr);
	}
	if (m->traceparent[0] != '\0') {
		printf(",\"traceparent\":");
		bm_cli_json_str(stdout, m->traceparent, strlen(m->traceparent));
	}
	if (m->tracestate != NULL) {
		printf(",\"tracestate\":");
		bm_cli_json_str(stdout, m->tracestate, strlen(m->tracestate));
	}
	printf(",\"attempt\":%u,\"ts_ms\":%lld,", m->attempt, (long long)m->ts_ms);
	bm_cli_json_body(stdout, bm_msg_data(m), bm_msg_size(m));
	printf("}\n");
	fflush(stdout);
}

/* Shared by listen and echo: serve until count messages or a signal. */
static int
s_serve(const char *cmd, const char *dir, const char *name, const char *caps, long count,
        bool json, bool echo)
{
	bm_client_t *c = NULL;
	bm_dedup_t *d = NULL;
	long seen = 0;
	int rc;

	if (bm_name_check(name) < 0) {
		return bm_cli_fail(cmd, BM_EBADNAME, dir, name);
	}
	if (!echo) {
		bm_journal_report_t rep;
		bm_dedup_opts_t dopt = {.report = &rep};
		char path[BM_PATH_MAX];

		/* The de-dup window: a resend after a lost ACK is ACKed again
		 * but not printed twice, also after a restart of listen. */
		if ((rc = bm_cli_state_path(name, "dedup", true, path, sizeof path)) < 0) {
			fprintf(stderr, "beast %s: no state directory for '%s': %s (set BEAST_STATE)\n", cmd,
			        name, bm_strerror(rc));
			return BM_EXIT_FAIL;
		}
		if ((rc = bm_dedup_open(path, &dopt, &d)) < 0) {
			return bm_cli_journal_fail(cmd, name, path, rc, &rep);
		}
	}
	if ((rc = bm_cli_open(cmd, dir, name, caps, &c)) < 0) {
		bm_dedup_destroy(&d);
		return -rc;
	}
	bm_cli_signals();
	while (!bm_cli_stop && (count <= 0 || seen < count)) {
		bm_event_t ev;

		rc = bm_client_recv(c, 200, &ev);
		if (rc == -ETIMEDOUT || rc == -EINTR) {
			continue;
		}
		if (rc < 0) {
			bm_client_destroy(&c);
			bm_dedup_destroy(&d);
			return bm_cli_fail(cmd, rc, dir, "messages");
		}
		if (ev.kind == BM_EV_MESSAGE) {
			if (echo) {
				(void)bm_client_ack(c, ev.msg);
				rc = bm_client_reply(c, ev.msg, ev.msg->type, bm_msg_data(ev.msg),
				                     bm_msg_size(ev.msg));
				if (rc < 0) {
					fprintf(stderr, "beast %s: cannot reply to %s: %s\n", cmd, ev.msg->from,
					        bm_strerror(rc));
				}
			} else if (bm_dedup_seen(d, ev.msg->from, &ev.msg->id) == 1) {
				(void)bm_client_ack(c, ev.msg);
				bm_event_clear(&ev);
				continue;
			} else {
				s_print_msg(ev.msg, json);
				/* Remembered (stored) before the ACK lets the sender
				 * forget it. */
				rc = bm_dedup_mark(d, ev.msg->from, &ev.msg->id, NULL, 0);
				if (rc == 0) {
					rc = bm_dedup_commit(d);
				}
				if (rc < 0) {
					fprintf(stderr, "beast %s: cannot store the de-dup window: %s\n", cmd,
					        bm_strerror(rc));
					bm_event_clear(&ev);
					bm_client_destroy(&c);
					bm_dedup_destroy(&d);
					return BM_EXIT_FAIL;
				}
				(void)bm_client_ack(c, ev.msg);
			}
			seen++;
		} else if (ev.kind == BM_EV_DENIED) {
			fprintf(stderr, "beast %s: beastd restarted and '%s' is now held by another agent\n",
			        cmd, name);
			bm_event_clear(&ev);
			bm_client_destroy(&c);
			bm_dedup_destroy(&d);
			return BM_EXIT_FAIL;
		}
		bm_event_clear(&ev);
	}
	bm_client_destroy(&c);
	bm_dedup_destroy(&d);
	return BM_EXIT_OK;
}

int
bm_cli_listen(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {
		{"caps", required_argument, NULL, 'c'}, {"count", required_argument, NULL, 'n'},
		{"json", no_argument, NULL, 'j'},       {"help", no_argument, NULL, 'h'}, {0}};
	const char *caps = NULL;
	long count = 0;
	bool json = false;
	int ch;

	optind = 0;
	while ((ch = S_GETOPT(argc, argv, lo)) != -1) {
		switch (ch) {
		case 'c':
			caps = optarg;
			break;
		case 'n':
			if ((count = bm_cli_num(optarg, 1, 2000000000)) > 0) {
				break;
			}
			/* fallthrough */
		default:
			s_help(stderr, s_listen_help);
			return BM_EXIT_USAGE;
		case 'j':
			json = true;
			break;
		case 'h':
			s_help(stdout, s_listen_help);
			return BM_EXIT_OK;
		}
	}
	if (argc - optind != 1) {
		s_help(stderr, s_listen_help);
		return BM_EXIT_USAGE;
	}
	return s_serve("listen", dir, argv[optind], caps, count, json, false);
}

static const char s_echo_help[] =
	"usage: beast echo [--caps A,B] NAME\n"
	"\n"
	"Registers as NAME and answers every message with its own body and type\n"
	"(a reply: correlation id = the request's id).  Runs until SIGINT/SIGTERM.\n";

int
bm_cli_echo(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {{"caps", required_argument, NULL, 'c'},
	                                   {"help", no_argument, NULL, 'h'}, {0}};
	const char *caps = NULL;
	int ch;

	optind = 0;
	while ((ch = S_GETOPT(argc, argv, lo)) != -1) {
		if (ch == 'c') {
			caps = optarg;
		} else if (ch == 'h') {
			s_help(stdout, s_echo_help);
			return BM_EXIT_OK;
		} else {
			s_help(stderr, s_echo_help);
			return BM_EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		s_help(stderr, s_echo_help);
		return BM_EXIT_USAGE;
	}
	return s_serve("echo", dir, argv[optind], caps, 0, false, true);
}

static const char s_request_help[] =
	"usage: beast request [--as NAME] [--timeout MS] TO TYPE [BODY]\n"
	"\n"
	"Sends a request of TYPE to TO (a name or @CAP), waits for the reply and\n"
	"prints its body.  BODY comes from stdin when omitted or '-'.\n"
	"\n"
	"Exit status: 0 replied, 1 refused, 2 usage, 3 no reply in time,\n"
	"4 beastd not running.\n";

int
bm_cli_request(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {{"as", required_argument, NULL, 'a'},
	                                   {"timeout", required_argument, NULL, 'T'},
	                                   {"help", no_argument, NULL, 'h'},
	                                   {0}};
	char defname[BM_NAME_MAX + 1], *body = NULL;
	const char *name = NULL, *to, *type;
	bm_client_t *c = NULL;
	bm_msg_t *reply = NULL;
	size_t len = 0;
	long timeout = S_DEFAULT_TIMEOUT;
	int ch, rc;

	optind = 0;
	while ((ch = S_GETOPT(argc, argv, lo)) != -1) {
		switch (ch) {
		case 'a':
			name = optarg;
			break;
		case 'T':
			if ((timeout = bm_cli_num(optarg, 1, 86400000)) > 0) {
				break;
			}
			/* fallthrough */
		default:
			s_help(stderr, s_request_help);
			return BM_EXIT_USAGE;
		case 'h':
			s_help(stdout, s_request_help);
			return BM_EXIT_OK;
		}
	}
	if (argc - optind < 2 || argc - optind > 3) {
		s_help(stderr, s_request_help);
		return BM_EXIT_USAGE;
	}
	to = argv[optind];
	type = argv[optind + 1];
	if (bm_address_check(to) < 0) {
		return bm_cli_fail("request", BM_EBADNAME, dir, to);
	}
	if (bm_type_check(type) < 0) {
		fprintf(stderr, "beast request: '%s' is not a valid type\n", type);
		return BM_EXIT_USAGE;
	}
	if (name == NULL) {
		snprintf(defname, sizeof defname, "request-%ld", (long)getpid());
		name = defname;
	}
	if ((rc = s_body("request", argc - optind == 3 ? argv[optind + 2] : NULL,
	                 BM_BODY_MAX_DEFAULT, &body, &len)) < 0) {
		return -rc;
	}
	if ((rc = bm_cli_open("request", dir, name, NULL, &c)) < 0) {
		free(body);
		return -rc;
	}
	rc = bm_client_request(c, to, type, body, len, (int)timeout, &reply);
	free(body);
	bm_client_destroy(&c);
	if (rc < 0) {
		return bm_cli_fail("request", rc, dir, rc == -ETIMEDOUT ? "the reply" : to);
	}
	fwrite(bm_msg_data(reply), 1, bm_msg_size(reply), stdout);
	if (bm_msg_size(reply) == 0 || ((const char *)bm_msg_data(reply))[bm_msg_size(reply) - 1] != '\n') {
		putchar('\n');
	}
	bm_msg_destroy(&reply);
	return BM_EXIT_OK;
}

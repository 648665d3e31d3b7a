/*
 * cli_outbox.c - `beast outbox`: look into and repair an agent's outbox
 * (ls, dead, requeue, purge, stats, flush, salvage), and the state
 * directory helpers that `beast send` and `beast listen` share with it.
 *
 * State lives in $BEAST_STATE, else $XDG_STATE_HOME/beast, else
 * ~/.local/state/beast; each agent has a directory there with its outbox
 * journal (outbox/) and its de-dup window (dedup/).  The journals are
 * locked while open, so `beast outbox` on an agent that is running says so
 * instead of racing it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int
bm_cli_state_path(const char *name, const char *what, bool create, char *out, size_t cap)
{
	char base[BM_PATH_MAX];
	int n, rc;

	if ((rc = bm_statedir_resolve(base)) < 0) {
		return rc;
	}
	n = snprintf(out, cap, "%s/%s", base, name);
	if (n < 0 || (size_t)n >= cap) {
		return -ENAMETOOLONG;
	}
	if (create) {
		if ((rc = bm_mkdirs(out)) < 0) {
			return rc;
		}
	}
	if (what != NULL) {
		n = snprintf(out, cap, "%s/%s/%s", base, name, what);
		if (n < 0 || (size_t)n >= cap) {
			return -ENAMETOOLONG;
		}
	}
	return 0;
}

int
bm_cli_journal_fail(const char *cmd, const char *name, const char *path, int err,
                    const bm_journal_report_t *rep)
{
	if (err == BM_ECORRUPT && rep != NULL) {
		fprintf(stderr,
		        "beast %s: the journal in %s is corrupt at byte %llu of %s; nothing was "
		        "changed — run `beast outbox --as %s salvage` to keep what is readable\n",
		        cmd, path, (unsigned long long)rep->corrupt_offset, rep->corrupt_segment, name);
	} else if (err == -EBUSY) {
		fprintf(stderr, "beast %s: the journal in %s is open in another process (is an agent "
		                "named '%s' running?)\n",
		        cmd, path, name);
	} else {
		fprintf(stderr, "beast %s: cannot open the journal in %s: %s\n", cmd, path,
		        bm_strerror(err));
	}
	return BM_EXIT_FAIL;
}

int
bm_cli_outbox_open(const char *cmd, const char *name, bm_client_t *c, const bm_outbox_opts_t *tmpl,
                   bm_outbox_t **ret)
{
	bm_outbox_opts_t o = tmpl ? *tmpl : (bm_outbox_opts_t){0};
	bm_journal_report_t rep;
	char path[BM_PATH_MAX];
	int rc;

	if ((rc = bm_cli_state_path(name, "outbox", true, path, sizeof path)) < 0) {
		fprintf(stderr, "beast %s: no state directory for '%s': %s (set BEAST_STATE)\n", cmd, name,
		        bm_strerror(rc));
		return -BM_EXIT_FAIL;
	}
	o.dir = path;
	o.client = c;
	o.report = &rep;
	if ((rc = bm_outbox_open(&o, ret)) < 0) {
		return -bm_cli_journal_fail(cmd, name, path, rc, &rep);
	}
	if (rep.torn_bytes > 0) {
		fprintf(stderr, "beast %s: recovered %s: cut a torn tail of %llu bytes (a write the "
		                "last crash interrupted; nothing it reported stored)\n",
		        cmd, rep.torn_segment, (unsigned long long)rep.torn_bytes);
	}
	return 0;
}

static const char s_help[] =
	"usage: beast outbox --as NAME COMMAND\n"
	"\n"
	"Looks into NAME's outbox: the messages NAME sent reliably and that are not\n"
	"acknowledged yet, and its dead letters.\n"
	"\n"
	"  ls [--json]             pending messages: id, to, type, attempts, next retry\n"
	"  dead [--json]           dead letters, with the reason\n"
	"  requeue ID|--all        dead letter(s) back to pending, fresh attempts and TTL\n"
	"  purge ID|--dead         remove a message, or every dead letter\n"
	"  stats [--json]          counts and journal size\n"
	"  flush [--timeout MS]    run NAME's retry loop until nothing is pending\n"
	"                          (exit 0) or MS pass (exit 3; default 10000)\n"
	"  salvage                 after a corruption report: quarantine the damaged\n"
	"                          segment and keep every readable record\n"
	"\n"
	"State: $BEAST_STATE, else $XDG_STATE_HOME/beast, else ~/.local/state/beast;\n"
	"NAME's journals are in STATE/NAME/outbox and STATE/NAME/dedup.\n";

static void
s_list_print(bm_outbox_t *ob, bool dead, bool json)
{
	bm_outbox_entry_t *v = NULL;
	int64_t now = bm_wall_ms();
	size_t n = 0;

	if (bm_outbox_list(ob, dead, &v, &n) < 0) {
		return;
	}
	if (!json) {
		if (dead) {
			printf("%-32s %-20s %-16s %8s  %s\n", "ID", "TO", "TYPE", "ATTEMPTS", "REASON");
		} else {
			printf("%-32s %-20s %-16s %3s %8s %10s\n", "ID", "TO", "TYPE", "PRI", "ATTEMPTS",
			       "NEXT");
		}
	}
	for (size_t i = 0; i < n; i++) {
		char hex[BM_ID_HEX_LEN + 1], next[32];

		bm_id_hex(&v[i].id, hex);
		if (v[i].inflight) {
			snprintf(next, sizeof next, "inflight");
		} else if (v[i].next_ms <= now) {
			snprintf(next, sizeof next, "now");
		} else {
			snprintf(next, sizeof next, "%lldms", (long long)(v[i].next_ms - now));
		}
		if (json) {
			printf("{\"id\":\"%s\",\"to\":", hex);
			bm_cli_json_str(stdout, v[i].to, strlen(v[i].to));
			printf(",\"type\":");
			bm_cli_json_str(stdout, v[i].type, strlen(v[i].type));
			printf(",\"priority\":%u,\"attempts\":%u,\"max_attempts\":%u,\"ttl_ms\":%u,"
			       "\"created_ms\":%lld,\"size\":%zu",
			       v[i].priority, v[i].attempts, v[i].max_attempts, v[i].ttl_ms,
			       (long long)v[i].created_ms, v[i].size);
			if (dead) {
				printf(",\"reason\":");
				bm_cli_json_str(stdout, bm_outbox_reason(v[i].dead_code),
				                strlen(bm_outbox_reason(v[i].dead_code)));
				printf(",\"last_refusal\":");
				bm_cli_json_str(stdout, v[i].why, strlen(v[i].why));
			} else {
				printf(",\"inflight\":%s,\"next_retry_ms\":%lld", v[i].inflight ? "true" : "false",
				       (long long)v[i].next_ms);
			}
			printf("}\n");
		} else if (dead) {
			printf("%-32s %-20s %-16s %8u  %s%s%s\n", hex, v[i].to, v[i].type, v[i].attempts,
			       bm_outbox_reason(v[i].dead_code), v[i].why[0] ? "; last refusal: " : "",
			       v[i].why);
		} else {
			printf("%-32s %-20s %-16s %3u %8u %10s\n", hex, v[i].to, v[i].type, v[i].priority,
			       v[i].attempts, next);
		}
	}
	free(v);
}

static void
s_stats_print(bm_outbox_t *ob, bool json)
{
	bm_outbox_stats_t st;
	const struct {
		const char *k;
		uint64_t v;
	} kv[] = {
		{"pending", 0}, {"inflight", 0}, {"dead", 0}, {"bytes", 0}, {"segments", 0},
		{"journal_bytes", 0},
	};
	uint64_t vals[6];

	bm_outbox_stats(ob, &st);
	vals[0] = st.pending + st.inflight;
	vals[1] = st.inflight;
	vals[2] = st.dead;
	vals[3] = st.bytes;
	vals[4] = st.segments;
	vals[5] = st.journal_bytes;
	if (json) {
		putchar('{');
	}
	for (size_t i = 0; i < 6; i++) {
		if (json) {
			printf("%s\"%s\":%llu", i ? "," : "", kv[i].k, (unsigned long long)vals[i]);
		} else {
			printf("%-14s %llu\n", kv[i].k, (unsigned long long)vals[i]);
		}
	}
	if (json) {
		printf("}\n");
	}
}

static int
s_salvage(const char *name)
{
	static const char *const parts[] = {"outbox", "dedup"};
	int status = BM_EXIT_OK;

	for (int i = 0; i < 2; i++) {
		bm_journal_report_t rep;
		char path[BM_PATH_MAX];
		struct stat st;
		int rc;

		if (bm_cli_state_path(name, parts[i], false, path, sizeof path) < 0 ||
		    stat(path, &st) < 0) {
			continue;
		}
		rc = bm_journal_salvage(path, &rep);
		if (rc < 0) {
			status = bm_cli_journal_fail("outbox salvage", name, path, rc, NULL);
			continue;
		}
		if (rep.quarantined > 0) {
			printf("%s: kept %llu records, dropped %llu unreadable bytes; the damaged segment "
			       "is in %s\n",
			       path, (unsigned long long)rep.records, (unsigned long long)rep.torn_bytes,
			       rep.corrupt_segment);
		} else {
			printf("%s: %llu records, nothing damaged\n", path,
			       (unsigned long long)rep.records);
		}
	}
	return status;
}

int
bm_cli_outbox(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {
		{"as", required_argument, NULL, 'a'},      {"json", no_argument, NULL, 'j'},
		{"all", no_argument, NULL, 'A'},           {"dead", no_argument, NULL, 'D'},
		{"timeout", required_argument, NULL, 'T'}, {"help", no_argument, NULL, 'h'},
		{0}};
	const char *name = NULL, *sub, *arg = NULL;
	bool json = false, all = false, dead = false;
	long timeout = 10000;
	bm_outbox_t *ob = NULL;
	bm_client_t *c = NULL;
	int ch, rc, status = BM_EXIT_OK;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'a':
			name = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'A':
			all = true;
			break;
		case 'D':
			dead = true;
			break;
		case 'T':
			if ((timeout = bm_cli_num(optarg, 1, 86400000)) > 0) {
				break;
			}
			/* fallthrough */
		default:
			fputs(s_help, stderr);
			return BM_EXIT_USAGE;
		case 'h':
			fputs(s_help, stdout);
			return BM_EXIT_OK;
		}
	}
	if (name == NULL || optind >= argc || argc - optind > 2) {
		fputs(s_help, stderr);
		return BM_EXIT_USAGE;
	}
	if (bm_name_check(name) < 0) {
		return bm_cli_fail("outbox", BM_EBADNAME, dir, name);
	}
	sub = argv[optind];
	if (argc - optind == 2) {
		arg = argv[optind + 1];
	}
	if (strcmp(sub, "salvage") == 0) {
		return s_salvage(name);
	}
	if (strcmp(sub, "ls") != 0 && strcmp(sub, "dead") != 0 && strcmp(sub, "requeue") != 0 &&
	    strcmp(sub, "purge") != 0 && strcmp(sub, "stats") != 0 && strcmp(sub, "flush") != 0) {
		fprintf(stderr, "beast outbox: unknown command '%s'\n\n%s", sub, s_help);
		return BM_EXIT_USAGE;
	}
	if ((strcmp(sub, "requeue") == 0 && (arg == NULL) == !all) ||
	    (strcmp(sub, "purge") == 0 && (arg == NULL) == !dead)) {
		fputs(s_help, stderr);
		return BM_EXIT_USAGE;
	}
	if (strcmp(sub, "flush") == 0 && (rc = bm_cli_open("outbox flush", dir, name, NULL, &c)) < 0) {
		return -rc;
	}
	if ((rc = bm_cli_outbox_open("outbox", name, c, NULL, &ob)) < 0) {
		bm_client_destroy(&c);
		return -rc;
	}
	if (strcmp(sub, "ls") == 0 || strcmp(sub, "dead") == 0) {
		s_list_print(ob, strcmp(sub, "dead") == 0, json);
	} else if (strcmp(sub, "stats") == 0) {
		s_stats_print(ob, json);
	} else if (strcmp(sub, "requeue") == 0 || strcmp(sub, "purge") == 0) {
		bool rq = strcmp(sub, "requeue") == 0;
		bm_id_t id;

		if (arg != NULL && bm_id_parse(arg, &id) < 0) {
			fprintf(stderr, "beast outbox: '%s' is not a message id (32 hex digits)\n", arg);
			status = BM_EXIT_USAGE;
		} else if (arg != NULL) {
			rc = rq ? bm_outbox_requeue(ob, &id) : bm_outbox_purge(ob, &id);
			if (rc == -ENOENT) {
				fprintf(stderr, "beast outbox: no message %s in %s's outbox\n", arg, name);
				status = BM_EXIT_FAIL;
			} else if (rc == -EALREADY) {
				fprintf(stderr, "beast outbox: %s is not dead; nothing to requeue\n", arg);
				status = BM_EXIT_FAIL;
			} else if (rc < 0) {
				status = bm_cli_fail("outbox", rc, dir, sub);
			}
		} else {
			rc = rq ? bm_outbox_requeue_all(ob) : bm_outbox_purge_dead(ob);
			if (rc < 0) {
				status = bm_cli_fail("outbox", rc, dir, sub);
			} else {
				printf("%s %d\n", rq ? "requeued" : "purged", rc);
			}
		}
		/* Stored before we say so. */
		if (status == BM_EXIT_OK && (rc = bm_outbox_commit(ob)) < 0) {
			status = bm_cli_fail("outbox", rc, dir, "the journal");
		}
	} else {
		bm_cli_signals();
		rc = bm_outbox_run(ob, (int)timeout);
		if (rc == -ETIMEDOUT) {
			fprintf(stderr, "beast outbox flush: %zu messages still pending after %ld ms\n",
			        bm_outbox_count(ob), timeout);
			status = BM_EXIT_TIMEOUT;
		} else if (rc < 0) {
			status = bm_cli_fail("outbox flush", rc, dir, "the outbox");
		}
	}
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
	return status;
}

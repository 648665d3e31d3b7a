/*
 * cli_trace.c - `beast trace ID`: one message's timeline, joined from the
 * three places that saw it:
 *
 *   the sender's outbox journal  stored (wall ms), attempts made, ACK
 *                                recorded (retired) or DEAD with a reason
 *                                (bm_outbox_trace);
 *   beastd's trace ring          each attempt routed to the receiver, or
 *                                NACKed with a reason, and the receiver's
 *                                ACK or NACK relayed back (TRACE, µs);
 *   the receiver's de-dup window whether it handled the id (bm_dedup_seen).
 *
 * Journals are locked by the agent that owns them: a running agent's are
 * not read, and the timeline says so.  The sender and the receiver are
 * found in beastd's events, or named with --as and --receiver.
 * `beast send --trace` prints the same for the message it sent.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

typedef struct {
	int64_t t_us;                 /* wall µs; 0 = no time known */
	const char *source;           /* outbox, beastd, dedup */
	const char *event;            /* stored, routed, nacked, acked, refused, handled, ... */
	uint32_t attempt;             /* 1-based; 0 = not an attempt */
	char text[640];               /* the line's words */
	char reason[384];             /* NACK / dead reason, or "" */
} s_line_t;

#define S_LINES_MAX (BM_TRACE_MAX + 8)

static int
s_by_time(const void *a, const void *b)
{
	const s_line_t *x = a, *y = b;

	/* Untimed facts (handled, retired) go last, in the order added. */
	if (x->t_us == 0 || y->t_us == 0) {
		return (x->t_us == 0) - (y->t_us == 0);
	}
	return x->t_us < y->t_us ? -1 : x->t_us > y->t_us;
}

static void
s_time(int64_t t_us, char *out, size_t cap)
{
	time_t s = (time_t)(t_us / 1000000);
	struct tm tm;

	if (t_us == 0) {
		snprintf(out, cap, "%-19s", "");
		return;
	}
	gmtime_r(&s, &tm);
	snprintf(out, cap, "%02d:%02d:%02d.%06lld UTC", tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (long long)(t_us % 1000000));
}

/* A state dir of NAME's ("outbox", "dedup") when it exists. */
static bool
s_state_dir(const char *name, const char *what, char *out, size_t cap)
{
	struct stat st;

	return name[0] != '\0' && bm_cli_state_path(name, what, false, out, cap) == 0 &&
	       stat(out, &st) == 0 && S_ISDIR(st.st_mode);
}

int
bm_cli_trace_print(const char *dir, const bm_id_t *id, const char *sender_in,
                   const char *receiver_in, bool json)
{
	s_line_t *lines = calloc(S_LINES_MAX, sizeof *lines);
	bm_trace_event_t *ev = NULL;
	bm_outbox_trace_t ot;
	char hex[BM_ID_HEX_LEN + 1], sender[BM_NAME_MAX + 1] = "", receiver[BM_ADDR_MAX + 1] = "";
	char path[BM_PATH_MAX], note_beastd[160] = "", note_outbox[200] = "", note_dedup[200] = "";
	size_t nev = 0, n = 0;
	unsigned sends = 0;
	bm_client_t *c = NULL;
	bm_client_opts_t co = {.dir = dir, .connect_timeout_ms = 1000};
	int rc, handled = -1, orc = -ENOENT;

	if (lines == NULL) {
		return BM_EXIT_FAIL;
	}
	bm_id_hex(id, hex);
	snprintf(sender, sizeof sender, "%s", sender_in ? sender_in : "");
	snprintf(receiver, sizeof receiver, "%s", receiver_in ? receiver_in : "");

	/* beastd's ring. */
	bm_cli_remote(&co);
	if ((rc = bm_client_open(&co, &c)) < 0) {
		snprintf(note_beastd, sizeof note_beastd, "beastd not asked: %s", bm_strerror(rc));
	} else if ((rc = bm_client_trace(c, id, 3000, &ev, &nev)) < 0) {
		snprintf(note_beastd, sizeof note_beastd, "beastd did not answer TRACE: %s",
		         bm_strerror(rc));
	} else if (nev == 0) {
		snprintf(note_beastd, sizeof note_beastd,
		         "beastd's trace ring holds nothing about it (never routed, or older than its "
		         "last %d events)",
		         BM_TRACE_RING);
	}
	bm_client_destroy(&c);
	for (size_t i = 0; i < nev && n < S_LINES_MAX; i++) {
		s_line_t *l = &lines[n++];
		bool back = ev[i].kind == BM_TRACE_ACKED || ev[i].kind == BM_TRACE_REFUSED;

		/* ACK and NACK events run from the receiver back to the sender. */
		if (sender[0] == '\0') {
			const char *who = back ? ev[i].to : ev[i].from;
			size_t wl = strnlen(who, BM_NAME_MAX);

			memcpy(sender, who, wl);
			sender[wl] = '\0';
		}
		if (receiver[0] == '\0' && ev[i].kind != BM_TRACE_NACKED) {
			snprintf(receiver, sizeof receiver, "%s", back ? ev[i].from : ev[i].to);
		}
		l->t_us = ev[i].t_us;
		l->source = "beastd";
		l->event = bm_trace_kind_name(ev[i].kind);
		switch (ev[i].kind) {
		/* Sends are numbered as beastd saw them: the header's attempt
		 * field restarts when another process (outbox flush) resends. */
		case BM_TRACE_ROUTED:
			l->attempt = ++sends;
			snprintf(l->text, sizeof l->text,
			         "send %u routed by beastd: delivered to %s's connection", l->attempt,
			         ev[i].to);
			break;
		case BM_TRACE_NACKED:
			l->attempt = ++sends;
			snprintf(l->reason, sizeof l->reason, "%s", bm_strerror(ev[i].code));
			snprintf(l->text, sizeof l->text, "send %u to %s NACKed by beastd: %s", l->attempt,
			         ev[i].to, l->reason);
			break;
		case BM_TRACE_ACKED:
			snprintf(l->text, sizeof l->text, "ACK from %s relayed to %s", ev[i].from,
			         ev[i].to);
			break;
		default:
			snprintf(l->reason, sizeof l->reason, "%s", bm_strerror(ev[i].code));
			snprintf(l->text, sizeof l->text, "NACK from %s relayed to %s: %s", ev[i].from,
			         ev[i].to, l->reason);
			break;
		}
	}

	/* The sender's outbox. */
	if (sender[0] == '\0') {
		snprintf(note_outbox, sizeof note_outbox,
		         "sender unknown: name it with --as to read its outbox");
	} else if (!s_state_dir(sender, "outbox", path, sizeof path)) {
		snprintf(note_outbox, sizeof note_outbox, "%s has no outbox here (STATE/%s/outbox)",
		         sender, sender);
	} else if ((orc = bm_outbox_trace(path, id, &ot)) == -EBUSY) {
		snprintf(note_outbox, sizeof note_outbox,
		         "%s's outbox is in use by the running agent: not read", sender);
	} else if (orc == -ENOENT) {
		snprintf(note_outbox, sizeof note_outbox,
		         "%s's outbox holds no record of it (not sent from there, or retired long ago)",
		         sender);
	} else if (orc < 0) {
		snprintf(note_outbox, sizeof note_outbox, "%s's outbox could not be read: %s", sender,
		         bm_strerror(orc));
	}
	if (orc == 0) {
		s_line_t *l = &lines[n++];

		if (receiver[0] == '\0') {
			snprintf(receiver, sizeof receiver, "%s", ot.to);
		}
		l->t_us = ot.stored_ms * 1000;
		l->source = "outbox";
		l->event = "stored";
		snprintf(l->text, sizeof l->text, "stored in %s's outbox: to %s, type %s, %u attempts "
		                                  "at most%s%s%s",
		         sender, ot.to, ot.type, ot.max_attempts, ot.ttl_ms ? ", with a TTL" : "",
		         ot.traceparent[0] ? ", traceparent " : "", ot.traceparent);
		if (ot.requeued_ms != 0) {
			l = &lines[n++];
			l->t_us = ot.requeued_ms * 1000;
			l->source = "outbox";
			l->event = "requeued";
			snprintf(l->text, sizeof l->text, "requeued from the dead letters");
		}
	}

	/* The receiver's de-dup window. */
	if (receiver[0] == '\0' || receiver[0] == '@') {
		snprintf(note_dedup, sizeof note_dedup, "receiver unknown: name it with --receiver");
	} else if (s_state_dir(receiver, "dedup", path, sizeof path) && sender[0] != '\0') {
		bm_dedup_opts_t dopts = {.sync = BM_JOURNAL_SYNC_NEVER};
		bm_dedup_t *d = NULL;

		rc = bm_dedup_open(path, &dopts, &d);
		if (rc == -EBUSY) {
			snprintf(note_dedup, sizeof note_dedup,
			         "%s's de-dup window is in use by the running agent: not read", receiver);
		} else if (rc < 0) {
			snprintf(note_dedup, sizeof note_dedup, "%s's de-dup window could not be read: %s",
			         receiver, bm_strerror(rc));
		} else {
			handled = bm_dedup_seen(d, sender, id) == 1;
			bm_dedup_destroy(&d);
		}
	} else {
		snprintf(note_dedup, sizeof note_dedup,
		         "%s keeps no de-dup window here (not a `beast listen` or bm_agent receiver)",
		         receiver);
	}
	if (handled >= 0) {
		s_line_t *l = &lines[n++];

		l->source = "dedup";
		l->event = handled ? "handled" : "not-handled";
		snprintf(l->text, sizeof l->text, handled ? "handled by %s (its de-dup window holds the id)"
		                                          : "not in %s's de-dup window (not handled there)",
		         receiver);
	}
	if (orc == 0) {
		s_line_t *l = &lines[n++];

		l->source = "outbox";
		l->attempt = ot.attempts;
		switch (ot.fate) {
		case BM_OUTBOX_FATE_ACKED:
			l->event = "retired";
			snprintf(l->text, sizeof l->text, "retired: ACK recorded in %s's outbox", sender);
			break;
		case BM_OUTBOX_FATE_DEAD:
			l->event = "dead";
			snprintf(l->reason, sizeof l->reason, "%s%s%.255s", bm_outbox_reason(ot.dead_code),
			         ot.why[0] ? "; last refusal: " : "", ot.why);
			snprintf(l->text, sizeof l->text, "DEAD in %s's outbox after %u attempt%s: %s", sender,
			         ot.attempts, ot.attempts == 1 ? "" : "s", l->reason);
			break;
		case BM_OUTBOX_FATE_PURGED:
			l->event = "purged";
			snprintf(l->text, sizeof l->text, "purged from %s's dead letters", sender);
			break;
		default:
			l->event = "pending";
			snprintf(l->text, sizeof l->text,
			         "still pending in %s's outbox (%u attempt%s so far, no ACK yet)", sender,
			         ot.attempts, ot.attempts == 1 ? "" : "s");
			break;
		}
	}
	qsort(lines, n, sizeof *lines, s_by_time);

	if (json) {
		printf("{\"id\":\"%s\",\"from\":", hex);
		bm_cli_json_str(stdout, sender, strlen(sender));
		printf(",\"to\":");
		bm_cli_json_str(stdout, receiver, strlen(receiver));
		printf(",\"events\":[");
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"t_us\":%lld,\"source\":\"%s\",\"event\":\"%s\",\"attempt\":%u,"
			       "\"reason\":",
			       i ? "," : "", (long long)lines[i].t_us, lines[i].source, lines[i].event,
			       lines[i].attempt);
			bm_cli_json_str(stdout, lines[i].reason, strlen(lines[i].reason));
			printf(",\"text\":");
			bm_cli_json_str(stdout, lines[i].text, strlen(lines[i].text));
			printf("}");
		}
		printf("],\"notes\":[");
		{
			const char *notes[] = {note_beastd, note_outbox, note_dedup};
			int k = 0;

			for (int i = 0; i < 3; i++) {
				if (notes[i][0] != '\0') {
					printf(k++ ? "," : "");
					bm_cli_json_str(stdout, notes[i], strlen(notes[i]));
				}
			}
		}
		printf("]}\n");
	} else {
		printf("message %s%s%s%s%s\n", hex, sender[0] ? " from " : "", sender,
		       receiver[0] ? " to " : "", receiver);
		for (size_t i = 0; i < n; i++) {
			char t[40];

			s_time(lines[i].t_us, t, sizeof t);
			printf("  %s  %-7s %s\n", t, lines[i].source, lines[i].text);
		}
		if (note_beastd[0] || note_outbox[0] || note_dedup[0]) {
			printf("  notes:%s%s%s%s%s%s\n", note_beastd[0] ? "\n    " : "", note_beastd,
			       note_outbox[0] ? "\n    " : "", note_outbox, note_dedup[0] ? "\n    " : "",
			       note_dedup);
		}
	}
	free(ev);
	free(lines);
	return n > 0 ? BM_EXIT_OK : BM_EXIT_FAIL;
}

static const char s_help[] =
	"usage: beast trace [--as SENDER] [--receiver NAME] [--json] ID\n"
	"\n"
	"Prints message ID's timeline: stored in the sender's outbox, each attempt\n"
	"routed by beastd (or NACKed, with the reason), the receiver's ACK or NACK,\n"
	"handled by the receiver (its de-dup window), retired or dead (the reason).\n"
	"It joins beastd's trace ring (the last %d events), SENDER's outbox journal\n"
	"and NAME's de-dup window (journals of running agents are locked: not read).\n"
	"SENDER and NAME default to what beastd saw.  --json: one object.\n"
	"\n"
	"Exit status: 0 something was found, 1 nothing anywhere, 2 usage.\n";

int
bm_cli_trace(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {
		{"as", required_argument, NULL, 'a'},   {"receiver", required_argument, NULL, 'r'},
		{"json", no_argument, NULL, 'j'},       {"help", no_argument, NULL, 'h'},
		{0}};
	const char *as = NULL, *receiver = NULL;
	bool json = false;
	bm_id_t id;
	int ch;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'a':
			as = optarg;
			break;
		case 'r':
			receiver = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			printf(s_help, BM_TRACE_RING);
			return BM_EXIT_OK;
		default:
			fprintf(stderr, s_help, BM_TRACE_RING);
			return BM_EXIT_USAGE;
		}
	}
	if (argc - optind != 1 || bm_id_parse(argv[optind], &id) < 0 ||
	    (as != NULL && bm_name_check(as) < 0) ||
	    (receiver != NULL && bm_name_check(receiver) < 0)) {
		fprintf(stderr, s_help, BM_TRACE_RING);
		return BM_EXIT_USAGE;
	}
	return bm_cli_trace_print(dir, &id, as, receiver, json);
}

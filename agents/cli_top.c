/*
 * cli_top.c - `beast top`: the swarm, live, refreshed each second.
 *
 * Each refresh asks beastd for its directory (LIST) and counters (STATS)
 * and turns the differences since the last one into rates: per agent
 * (messages in and out per second, in flight, unacknowledged bytes, and
 * the outbox depth, dead letters and resends the agent reports in its
 * PINGs), for the whole mesh (routed, ACKed, NACKed), for broadcasts and
 * for blobs announced.  Unless --no-topics it also reads beastd's tap
 * (the proxy's capture of live broadcasts) between refreshes and shows the
 * busiest topics; the tap costs the proxy one copy per broadcast while
 * top runs.
 *
 * On a terminal the screen is redrawn in place; otherwise each refresh is
 * printed as plain lines under a timestamped header, so `beast top
 * --count 3 > file` makes a readable log.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bm_proxy.h"
#include "cli.h"

#define S_TOPICS_MAX 256 /* topics counted; the rest are summed as "(other)" */
#define S_TOPICS_SHOWN 10

typedef struct {
	char topic[BM_TOPIC_MAX + 1];  /* "" = free */
	uint64_t n;                    /* messages since the last refresh */
	uint64_t total;                /* since top started */
} s_topic_t;

typedef struct {
	bm_stat_t *stats;              /* last STATS */
	size_t nstats;
	bm_agent_info_t *agents;       /* last LIST */
	size_t nagents;
	int64_t t_ms;                  /* when they were read */
} s_view_t;

static int64_t
s_stat(const s_view_t *v, const char *key)
{
	for (size_t i = 0; v->stats && i < v->nstats; i++) {
		if (strcmp(v->stats[i].key, key) == 0) {
			return v->stats[i].value;
		}
	}
	return 0;
}

static double
s_rate(const s_view_t *now, const s_view_t *prev, const char *key)
{
	double dt = (double)(now->t_ms - prev->t_ms) / 1000.0;
	int64_t d = s_stat(now, key) - s_stat(prev, key);

	return prev->stats && dt > 0 && d > 0 ? (double)d / dt : 0;
}

static const bm_agent_info_t *
s_find(const s_view_t *v, const char *name)
{
	for (size_t i = 0; v->agents && i < v->nagents; i++) {
		if (strcmp(v->agents[i].name, name) == 0) {
			return &v->agents[i];
		}
	}
	return NULL;
}

static int
s_by_name(const void *a, const void *b)
{
	return strcmp(((const bm_agent_info_t *)a)->name, ((const bm_agent_info_t *)b)->name);
}

static int
s_by_rate(const void *a, const void *b)
{
	const s_topic_t *x = a, *y = b;

	return x->n < y->n ? 1 : x->n > y->n ? -1 : strcmp(x->topic, y->topic);
}

static void
s_count_topic(s_topic_t *t, size_t *nt, s_topic_t *other, const char *topic)
{
	for (size_t i = 0; i < *nt; i++) {
		if (strcmp(t[i].topic, topic) == 0) {
			t[i].n++;
			t[i].total++;
			return;
		}
	}
	if (*nt < S_TOPICS_MAX) {
		snprintf(t[*nt].topic, sizeof t[*nt].topic, "%s", topic);
		t[*nt].n = t[*nt].total = 1;
		(*nt)++;
		return;
	}
	other->n++;
	other->total++;
}

static void
s_fmt_num(double x, char *out, size_t cap)
{
	if (x < 0) {
		snprintf(out, cap, "-");
	} else if (x >= 1e9) {
		snprintf(out, cap, "%.1fG", x / 1e9);
	} else if (x >= 1e6) {
		snprintf(out, cap, "%.1fM", x / 1e6);
	} else if (x >= 1e4) {
		snprintf(out, cap, "%.1fk", x / 1e3);
	} else if (x >= 100 || x == (double)(int64_t)x) {
		snprintf(out, cap, "%.0f", x);
	} else {
		snprintf(out, cap, "%.1f", x);
	}
}

static void
s_draw(const s_view_t *now, const s_view_t *prev, s_topic_t *topics, size_t ntopics,
       const s_topic_t *other, bool tap, bool tty, int interval_ms)
{
	double dt = (double)(now->t_ms - prev->t_ms) / 1000.0;
	char a[16], b[16], c[16], d[16], e[16], f[16];
	time_t wall = time(NULL);
	struct tm tm;

	gmtime_r(&wall, &tm);
	if (tty) {
		fputs("\033[H\033[2J", stdout);
	}
	s_fmt_num(s_rate(now, prev, "delivers"), a, sizeof a);
	s_fmt_num(s_rate(now, prev, "acks"), b, sizeof b);
	s_fmt_num(s_rate(now, prev, "nacks"), c, sizeof c);
	printf("beast top  %02d:%02d:%02d UTC  beastd up %llds, %lld agents, every %d ms\n",
	       tm.tm_hour, tm.tm_min, tm.tm_sec, (long long)(s_stat(now, "uptime_ms") / 1000),
	       (long long)s_stat(now, "agents"), interval_ms);
	printf("mesh       routed %s/s  acked %s/s  nacked %s/s  (no agent %lld, busy %lld, "
	       "malformed %lld)\n",
	       a, b, c, (long long)s_stat(now, "nack_noagent"), (long long)s_stat(now, "nack_busy"),
	       (long long)s_stat(now, "malformed"));
	s_fmt_num(s_rate(now, prev, "bcast_in"), a, sizeof a);
	s_fmt_num(s_rate(now, prev, "bcast_out"), b, sizeof b);
	printf("broadcast  in %s/s  out %s/s  topics cached %lld  gaps %lld%s\n", a, b,
	       (long long)s_stat(now, "bcast_lvc_topics"), (long long)s_stat(now, "bcast_sub_gaps"),
	       s_stat(now, "bcast_paused") ? "  PAUSED" : "");
	s_fmt_num(s_rate(now, prev, "blobs_announced"), a, sizeof a);
	s_fmt_num(s_rate(now, prev, "blob_bytes_announced"), b, sizeof b);
	s_fmt_num((double)s_stat(now, "blob_bytes_announced"), c, sizeof c);
	printf("blobs      %s/s  %sB/s announced  (%lld blobs, %sB in all)\n\n", a, b,
	       (long long)s_stat(now, "blobs_announced"), c);
	printf("%-20s %-6s %-16s %7s %7s %8s %8s %7s %5s %7s\n", "AGENT", "STATE", "CAPS", "IN/S",
	       "OUT/S", "INFLIGHT", "UNACKED", "OUTBOX", "DEAD", "RETRIES");
	for (size_t i = 0; i < now->nagents; i++) {
		const bm_agent_info_t *x = &now->agents[i], *p = s_find(prev, x->name);
		char caps[BM_CAPS_MAX * (BM_CAP_MAX + 1) + 1] = "";

		for (int k = 0; k < x->ncaps; k++) {
			strcat(caps, k ? "," : "");
			strcat(caps, x->caps[k]);
		}
		/* A re-registered agent starts its counters afresh: no negative
		 * rates. */
		s_fmt_num(p && dt > 0 && x->delivered >= p->delivered
		                  ? (double)(x->delivered - p->delivered) / dt
		                  : 0,
		          a, sizeof a);
		s_fmt_num(p && dt > 0 && x->sent >= p->sent ? (double)(x->sent - p->sent) / dt : 0, b,
		          sizeof b);
		s_fmt_num((double)x->unacked_bytes, c, sizeof c);
		s_fmt_num((double)x->outbox_pending, d, sizeof d);
		s_fmt_num((double)x->outbox_dead, e, sizeof e);
		s_fmt_num((double)x->outbox_retries, f, sizeof f);
		printf("%-20.20s %-6s %-16.16s %7s %7s %8llu %8s %7s %5s %7s\n", x->name,
		       x->idle_ms > 3000 ? "quiet" : "online", caps[0] ? caps : "-", a, b,
		       (unsigned long long)x->inflight, c, d, e, f);
	}
	if (now->nagents == 0) {
		printf("(no agent online)\n");
	}
	if (tap) {
		qsort(topics, ntopics, sizeof *topics, s_by_rate);
		printf("\n%-44s %9s %10s\n", "TOPIC (tap)", "MSGS/S", "SEEN");
		for (size_t i = 0; i < ntopics && i < S_TOPICS_SHOWN && topics[i].n > 0; i++) {
			s_fmt_num(dt > 0 ? (double)topics[i].n / dt : 0, a, sizeof a);
			printf("%-44.44s %9s %10llu\n", topics[i].topic, a,
			       (unsigned long long)topics[i].total);
		}
		if (other->total > 0) {
			s_fmt_num(dt > 0 ? (double)other->n / dt : 0, a, sizeof a);
			printf("%-44s %9s %10llu\n", "(other topics)", a, (unsigned long long)other->total);
		}
	}
	if (!tty) {
		printf("\n");
	}
	fflush(stdout);
}

static const char s_help[] =
	"usage: beast top [--count N] [--interval MS] [--no-topics]\n"
	"\n"
	"Shows the swarm live, refreshed every second: mesh, broadcast and blob\n"
	"rates; each agent's state, capabilities, messages in and out per second,\n"
	"in flight, unacknowledged bytes, and the outbox depth, dead letters and\n"
	"resends it reports; the busiest broadcast topics (read from beastd's tap:\n"
	"--no-topics spares the proxy that copy).  On a terminal the screen is\n"
	"redrawn; otherwise each refresh is printed as plain lines.\n"
	"\n"
	"  --count N       stop after N refreshes (default: until Ctrl-C)\n"
	"  --interval MS   refresh period (default 1000)\n";

int
bm_cli_top(int argc, char **argv, const char *dir)
{
	static const struct option lo[] = {
		{"count", required_argument, NULL, 'n'}, {"interval", required_argument, NULL, 'i'},
		{"no-topics", no_argument, NULL, 'T'},   {"help", no_argument, NULL, 'h'},
		{0}};
	s_view_t now = {0}, prev = {0};
	s_topic_t *topics = NULL, other = {.topic = "(other)"};
	size_t ntopics = 0;
	long count = -1, interval = 1000;
	bool tap = true, tty = isatty(STDOUT_FILENO);
	bm_client_t *c = NULL;
	bm_sub_t *sub = NULL;
	int ch, rc, status = BM_EXIT_OK;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (ch == 'n' && (count = bm_cli_num(optarg, 1, 100000000)) > 0) {
			continue;
		}
		if (ch == 'i' && (interval = bm_cli_num(optarg, 100, 3600000)) > 0) {
			continue;
		}
		if (ch == 'T') {
			tap = false;
			continue;
		}
		if (ch == 'h') {
			fputs(s_help, stdout);
			return BM_EXIT_OK;
		}
		fputs(s_help, stderr);
		return BM_EXIT_USAGE;
	}
	if (optind != argc) {
		fputs(s_help, stderr);
		return BM_EXIT_USAGE;
	}
	if ((rc = bm_cli_open("top", dir, NULL, NULL, &c)) < 0) {
		return -rc;
	}
	if (tap) {
		bm_sub_opts_t so = {.dir = dir, .tap = true, .name = "beast-top"};

		topics = calloc(S_TOPICS_MAX, sizeof *topics);
		if (topics == NULL || bm_sub_open(&so, &sub) < 0 || bm_sub_subscribe(sub, "") < 0) {
			bm_sub_destroy(&sub);
			tap = false; /* the mesh view alone */
		}
	}
	bm_cli_signals();
	for (long shown = 0; !bm_cli_stop && (count < 0 || shown <= count);) {
		int64_t next = bm_mono_ms() + (shown == 0 ? 0 : interval);

		/* Between refreshes: count the tap's broadcasts per topic. */
		while (!bm_cli_stop && bm_mono_ms() < next) {
			int64_t left = next - bm_mono_ms();

			if (sub != NULL) {
				bm_bcast_t m;

				if (bm_sub_recv(sub, left > 100 ? 100 : (int)left, &m) == 0) {
					if (m.kind == BM_BCAST_MSG) {
						s_count_topic(topics, &ntopics, &other, m.topic);
					}
					bm_bcast_clear(&m);
				}
			} else {
				usleep((useconds_t)(left > 100 ? 100 : left) * 1000);
			}
		}
		free(prev.stats);
		free(prev.agents);
		prev = now;
		now = (s_view_t){.t_ms = bm_mono_ms()};
		if ((rc = bm_client_stats(c, 3000, &now.stats, &now.nstats)) < 0 ||
		    (rc = bm_client_list(c, 3000, &now.agents, &now.nagents)) < 0) {
			status = bm_cli_fail("top", rc, dir, "the counters");
			break;
		}
		qsort(now.agents, now.nagents, sizeof *now.agents, s_by_name);
		/* The first read is the baseline: rates need two. */
		if (shown++ > 0) {
			s_draw(&now, &prev, topics, ntopics, &other, tap, tty, (int)interval);
			for (size_t i = 0; i < ntopics; i++) {
				topics[i].n = 0;
			}
			other.n = 0;
		}
	}
	free(prev.stats);
	free(prev.agents);
	free(now.stats);
	free(now.agents);
	free(topics);
	bm_sub_destroy(&sub);
	bm_client_destroy(&c);
	return status;
}

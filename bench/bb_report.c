/*
 * bb_report.c - what beast-bench leaves behind: a terminal table with
 * ratios, results.csv, results.json (one object per row, stable ids),
 * latency CDF and throughput-vs-payload plots (gnuplot, SVG), report.md,
 * and the targets, which are checked by reading results.json back, so
 * that `beast-bench --check FILE` judges any earlier run the same way.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bb.h"
#include "bb_report.h"

/* ---- the table ---- */

/* Where the chosen baseline has no row of a scenario, ratios are taken
 * against the natural peer of that scenario. */
static const char *
s_fallback(int scen)
{
	switch (scen) {
	case BB_FANOUT1:
	case BB_FANOUT8:
	case BB_FANOUT32:
	case BB_OVERLOAD: return "zmq-proxy";
	case BB_DURABLE: return "nats-js";
	default: return "zmq-dealer-ipc";
	}
}

static int
s_ok(const bb_row_t *r)
{
	return strcmp(r->status, "ok") == 0;
}

static const bb_row_t *
s_find(const bb_row_t *rows, int n, const char *scen, const char *transport, size_t payload, const char *placement,
       const char *mode)
{
	for (int i = 0; i < n; i++) {
		const bb_row_t *r = &rows[i];
		if (!strcmp(r->scenario, scen) && !strcmp(r->transport, transport) && r->payload == payload &&
		    !strcmp(r->placement, placement) && (!mode || !strcmp(r->mode, mode)) && s_ok(r))
			return r;
	}
	return NULL;
}

static int
s_lower_better(const char *scen)
{
	return !strcmp(scen, "latency") || !strcmp(scen, "bulk") || !strcmp(scen, "reconnect") ||
	       !strcmp(scen, "latency-load");
}

static void
s_ratio(char *out, size_t len, const bb_row_t *rows, int n, const bb_row_t *r, const char *baseline)
{
	snprintf(out, len, "-");
	if (!s_ok(r))
		return;
	const bb_row_t *b = s_find(rows, n, r->scenario, baseline, r->payload, r->placement, NULL);
	if (!b)
		b = s_find(rows, n, r->scenario, s_fallback(r->scen), r->payload, r->placement, NULL);
	if (!b)
		return;
	double x = 0;
	if (s_lower_better(r->scenario) && b->p50_us > 0)
		x = r->p50_us / b->p50_us;
	else if (!s_lower_better(r->scenario) && b->msgs_per_s > 0)
		x = r->msgs_per_s / b->msgs_per_s;
	if (x > 0)
		snprintf(out, len, x < 0.1 ? "%.2gx" : "%.2fx", x);
}

static void
s_size(char *out, size_t len, size_t b)
{
	if (b >= (1u << 20) && b % (1u << 20) == 0)
		snprintf(out, len, "%zuMi", b >> 20);
	else if (b >= 1024 && b % 1024 == 0)
		snprintf(out, len, "%zuKi", b >> 10);
	else
		snprintf(out, len, "%zu", b);
}

void
bb_report_table(FILE *f, const bb_row_t *rows, int n, const char *baseline)
{
	fprintf(f, "%-12s %-20s %6s %-9s %-8s %9s %9s %11s %9s %7s %7s %8s %7s  %s\n", "scenario", "transport",
	        "bytes", "placement", "mode", "p50_us", "p99_us", "msgs/s", "MB/s", "cpu_s", "rss_MB", "lost", "ratio",
	        "status");
	for (int i = 0; i < n; i++) {
		const bb_row_t *r = &rows[i];
		char sz[24], ratio[16];
		s_size(sz, sizeof sz, r->payload);
		s_ratio(ratio, sizeof ratio, rows, n, r, baseline);
		if (!s_ok(r)) {
			fprintf(f, "%-12s %-20s %6s %-9s %-8s %9s %9s %11s %9s %7s %7s %8s %7s  %s\n", r->scenario,
			        r->transport, sz, r->placement, r->mode, "-", "-", "-", "-", "-", "-", "-", "-", r->status);
			continue;
		}
		char p50[16] = "-", p99[16] = "-";
		if (r->p50_us > 0) {
			snprintf(p50, sizeof p50, "%.1f", r->p50_us);
			snprintf(p99, sizeof p99, "%.1f", r->p99_us);
		}
		fprintf(f, "%-12s %-20s %6s %-9s %-8s %9s %9s %11.0f %9.1f %7.2f %7.1f %8ld %7s  %s\n", r->scenario,
		        r->transport, sz, r->placement, r->mode, p50, p99, r->msgs_per_s, r->mb_per_s, r->cpu_s,
		        (double)r->rss_kb / 1024.0, r->lost, ratio, r->note[0] ? r->note : "ok");
	}
	fprintf(f, "ratio: against %s where it has the row, else the scenario's usual peer (fan-out and overload: "
	           "zmq-proxy; durable: nats-js).\nlatency and bulk: p50 ratio, lower is better; the rest: msgs/s "
	           "ratio, higher is better.  latency is one way.\n",
	        baseline);
}

/* ---- files ---- */

static void
s_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if ((unsigned char)*s >= 0x20)
			fputc(*s, f);
	}
	fputc('"', f);
}

static int
s_write_json(const char *path, const bb_row_t *rows, int n)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f, "[\n");
	for (int i = 0; i < n; i++) {
		const bb_row_t *r = &rows[i];
		fprintf(f, "  {\"scenario\": ");
		s_json_str(f, r->scenario);
		fprintf(f, ", \"transport\": ");
		s_json_str(f, r->transport);
		fprintf(f, ", \"payload\": %zu, \"placement\": ", r->payload);
		s_json_str(f, r->placement);
		fprintf(f, ", \"mode\": ");
		s_json_str(f, r->mode);
		fprintf(f,
		        ", \"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, \"max_us\": %.3f, "
		        "\"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, \"cpu_s\": %.3f, \"cpu_tx_s\": %.3f, \"cpu_rx_s\": %.3f, "
		        "\"cpu_srv_s\": %.3f, \"rss_kb\": %ld, \"rss_tx_kb\": %ld, \"rss_rx_kb\": %ld, \"rss_srv_kb\": %ld, "
		        "\"sent\": %ld, \"lost\": %ld, \"rounds\": %d, \"status\": ",
		        r->p50_us, r->p90_us, r->p99_us, r->p999_us, r->max_us, r->msgs_per_s, r->mb_per_s, r->cpu_s,
		        r->side_cpu_s[BB_SIDE_TX], r->side_cpu_s[BB_SIDE_RX], r->side_cpu_s[BB_SIDE_SRV], r->rss_kb,
		        r->side_rss_kb[BB_SIDE_TX], r->side_rss_kb[BB_SIDE_RX], r->side_rss_kb[BB_SIDE_SRV], r->sent,
		        r->lost, r->rounds);
		s_json_str(f, r->status);
		fprintf(f, ", \"note\": ");
		s_json_str(f, r->note);
		fprintf(f, "}%s\n", i + 1 < n ? "," : "");
	}
	fprintf(f, "]\n");
	return fclose(f);
}

static int
s_write_csv(const char *path, const bb_row_t *rows, int n)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f, "scenario,transport,payload,placement,mode,p50_us,p90_us,p99_us,p999_us,max_us,msgs_per_s,mb_per_s,"
	           "cpu_s,cpu_tx_s,cpu_rx_s,cpu_srv_s,rss_kb,sent,lost,rounds,status\n");
	for (int i = 0; i < n; i++) {
		const bb_row_t *r = &rows[i];
		fprintf(f, "%s,%s,%zu,%s,%s,%.3f,%.3f,%.3f,%.3f,%.3f,%.1f,%.3f,%.3f,%.3f,%.3f,%.3f,%ld,%ld,%ld,%d,\"%s\"\n",
		        r->scenario, r->transport, r->payload, r->placement, r->mode, r->p50_us, r->p90_us, r->p99_us,
		        r->p999_us, r->max_us, r->msgs_per_s, r->mb_per_s, r->cpu_s, r->side_cpu_s[BB_SIDE_TX],
		        r->side_cpu_s[BB_SIDE_RX], r->side_cpu_s[BB_SIDE_SRV], r->rss_kb, r->sent, r->lost, r->rounds,
		        r->status);
	}
	return fclose(f);
}

/* ---- reading results.json back (our own format: one object a line) ---- */

static const char *
s_field(const char *line, const char *key)
{
	char k[40];
	snprintf(k, sizeof k, "\"%s\": ", key);
	const char *p = strstr(line, k);
	return p ? p + strlen(k) : NULL;
}

static void
s_get_str(const char *line, const char *key, char *out, size_t len)
{
	out[0] = '\0';
	const char *p = s_field(line, key);
	if (!p || *p != '"')
		return;
	p++;
	size_t i = 0;
	while (*p && *p != '"' && i + 1 < len) {
		if (*p == '\\' && p[1])
			p++;
		out[i++] = *p++;
	}
	out[i] = '\0';
}

static double
s_get_num(const char *line, const char *key)
{
	const char *p = s_field(line, key);
	return p ? strtod(p, NULL) : 0;
}

static int
s_read_json(const char *path, bb_row_t **rows_out)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int cap = 64, n = 0;
	bb_row_t *rows = calloc((size_t)cap, sizeof *rows);
	char line[4096];
	while (rows && fgets(line, sizeof line, f)) {
		if (!strstr(line, "\"scenario\""))
			continue;
		if (n == cap) {
			bb_row_t *more = realloc(rows, sizeof *rows * (size_t)(cap *= 2));
			if (!more)
				break;
			rows = more;
		}
		bb_row_t *r = &rows[n++];
		memset(r, 0, sizeof *r);
		s_get_str(line, "scenario", r->scenario, sizeof r->scenario);
		s_get_str(line, "transport", r->transport, sizeof r->transport);
		s_get_str(line, "placement", r->placement, sizeof r->placement);
		s_get_str(line, "mode", r->mode, sizeof r->mode);
		s_get_str(line, "status", r->status, sizeof r->status);
		r->payload = (size_t)s_get_num(line, "payload");
		r->p50_us = s_get_num(line, "p50_us");
		r->p99_us = s_get_num(line, "p99_us");
		r->msgs_per_s = s_get_num(line, "msgs_per_s");
		for (int s = 0; s < BB_NSCEN; s++)
			if (!strcmp(bb_scen_name[s], r->scenario))
				r->scen = s;
	}
	fclose(f);
	*rows_out = rows;
	return rows ? n : -1;
}

/* ---- targets ---- */

typedef struct {
	const char *what;
	const char *scen;
	size_t payload;
	const char *placement, *mode;
	const char *ours, *theirs;
	int rate;        /* 1: msgs/s ratio ours/theirs >= limit; 0: p50 ratio ours/theirs <= limit */
	double limit;
	const char *why; /* when missed: what we know of the cause */
} s_target_t;

static const s_target_t s_targets[] = {
	{"brokered mesh p50 <= 1.3x raw DEALER->ROUTER forwarder", "latency", 64, "cross-cpu", "", "beast-mesh-ipc",
	 "zmq-forwarder-ipc", 0, 1.3,
	 "the broker decodes and validates each header and re-encodes DELIVER; the forwarder only swaps two frames"},
	{"brokered mesh p50 <= 1.0x NATS request-reply", "latency", 64, "cross-cpu", "", "beast-mesh-ipc", "nats", 0,
	 1.0, "both are two hops through a server; see the forwarder ratio for our own overhead"},
	{"fan-out to 8 >= 0.9x bare zmq_proxy (64 B)", "fanout-8", 64, "unpinned", "", "beast-proxy", "zmq-proxy", 1,
	 0.9, "beyond the bare proxy each broadcast carries a header (publisher, sequences) and updates the last-value cache; on 2 vCPUs with 9+ processes the two trade places run to run"},
	{"fan-out to 8 >= 0.9x bare zmq_proxy (4 KiB)", "fanout-8", 4096, "unpinned", "", "beast-proxy", "zmq-proxy", 1,
	 0.9, "beyond the bare proxy each broadcast carries a header (publisher, sequences) and updates the last-value cache; on 2 vCPUs with 9+ processes the two trade places run to run"},
	{"fan-out to 8 >= 1.5x NATS (64 B)", "fanout-8", 64, "unpinned", "", "beast-proxy", "nats", 1, 1.5,
	 "a bare zmq_proxy itself reaches only about 0.8-1.0x NATS here: 1.5x needs another fan-out (one shared-memory "
	 "log read by all local subscribers), not a cheaper proxy hop"},
	{"fan-out to 8 >= 1.5x NATS (4 KiB)", "fanout-8", 4096, "unpinned", "", "beast-proxy", "nats", 1, 1.5,
	 "a bare zmq_proxy itself reaches only about 0.8-1.1x NATS here: 1.5x needs another fan-out (one shared-memory "
	 "log read by all local subscribers), not a cheaper proxy hop"},
	{"shm log fan-out to 8 >= 1.5x NATS (64 B)", "fanout-8", 64, "unpinned", "", "beast-shmlog", "nats", 1, 1.5,
	 "every subscriber wakes through its doorbell when it sleeps; on 2 vCPUs 9 processes share the cores"},
	{"shm log fan-out to 8 >= 1.5x NATS (4 KiB)", "fanout-8", 4096, "unpinned", "", "beast-shmlog", "nats", 1,
	 1.5, "every subscriber copies each 4 KiB record out of the log; on 2 vCPUs 9 processes share the cores"},
	{"shm ring 64 B p50 <= iceoryx, blocking", "latency", 64, "cross-cpu", "blocking", "beast-ring", "iceoryx", 0,
	 1.0, "both wake the consumer through the kernel; see the row notes"},
	{"shm ring 64 B p50 <= iceoryx, spinning", "latency", 64, "cross-cpu", "spinning", "beast-ring", "iceoryx", 0,
	 1.0, "both spin on shared memory; the difference is cache-line traffic"},
	{"100 MiB zero copy >= 20x faster than ZeroMQ ipc", "bulk", 100u << 20, "cross-cpu", "", "beast-ring",
	 "zmq-dealer-ipc", 0, 0.05, "end to end includes writing and reading every byte, which both sides pay"},
	{"durable `always` >= JetStream async publish-with-ack (64 B)", "durable", 64, "unpinned", "",
	 "beast-outbox-always", "nats-js", 1, 1.0,
	 "we fsync every message before it counts as stored; JetStream syncs every 2 minutes by default"},
	{"durable `always` >= Redis XADD, appendfsync everysec (64 B)", "durable", 64, "unpinned", "",
	 "beast-outbox-always", "redis-stream", 1, 1.0,
	 "the outbox journals, fsyncs and tracks every message before the send; Redis appends to memory and syncs "
	 "once a second"},
	{"Python request/reply p50 <= 1.5x the C agent's", "latency", 64, "cross-cpu", "", "beast-agent-py",
	 "beast-agent-c", 0, 1.5, "each round trip crosses cffi twice (the request, the reply callback) and builds "
	 "Python objects; see the same-cpu row"},
	{"Python ACKed sends >= 150,000 msgs/s (64 B)", "throughput", 64, "cross-cpu", "", "beast-agent-py", NULL, 1,
	 150000, "about 3 us of Python per send (argument checks, a cffi call) on top of the C outbox's"},
	{"cloud hand-off of 100 MiB to Python <= 2x C", "bulk", 100u << 20, "cross-cpu", "", "beast-agent-py",
	 "beast-agent-c", 0, 2.0, "both map the same sealed pages; Python adds a header parse and a numpy view"},
	{"direct route p50 <= Redis pub/sub (64 B, cross-cpu)", "latency", 64, "cross-cpu", "", "beast-direct", "redis-pubsub",
	 0, 1.0, "a directed message over the ring pair; the echo is a second message on the reverse ring"},
	{"direct route p50 <= 0.6x NATS request-reply (64 B, cross-cpu)", "latency", 64, "cross-cpu", "", "beast-direct", "nats",
	 0, 0.6, "both measure half a request/reply round trip; the ring pair has no server hop"},
	{"direct request/reply round trip <= NATS's (64 B, cross-cpu)", "latency", 64, "cross-cpu", "", "beast-direct", "nats",
	 0, 1.0, "the round trip is twice the one-way p50 on both rows"},
	{"direct route p50 <= Redis pub/sub (4 KiB, cross-cpu)", "latency", 4096, "cross-cpu", "", "beast-direct", "redis-pubsub",
	 0, 1.0, "a directed message over the ring pair; the echo is a second message on the reverse ring"},
	{"direct route p50 <= 0.6x NATS request-reply (4 KiB, cross-cpu)", "latency", 4096, "cross-cpu", "", "beast-direct", "nats",
	 0, 0.6, "both measure half a request/reply round trip; the ring pair has no server hop"},
	{"direct request/reply round trip <= NATS's (4 KiB, cross-cpu)", "latency", 4096, "cross-cpu", "", "beast-direct", "nats",
	 0, 1.0, "the round trip is twice the one-way p50 on both rows"},
	{"direct route p50 <= Redis pub/sub (64 B, same-cpu)", "latency", 64, "same-cpu", "", "beast-direct", "redis-pubsub",
	 0, 1.0, "a directed message over the ring pair; the echo is a second message on the reverse ring"},
	{"direct route p50 <= 0.6x NATS request-reply (64 B, same-cpu)", "latency", 64, "same-cpu", "", "beast-direct", "nats",
	 0, 0.6, "both measure half a request/reply round trip; the ring pair has no server hop"},
	{"direct request/reply round trip <= NATS's (64 B, same-cpu)", "latency", 64, "same-cpu", "", "beast-direct", "nats",
	 0, 1.0, "the round trip is twice the one-way p50 on both rows"},
	{"direct route p50 <= Redis pub/sub (4 KiB, same-cpu)", "latency", 4096, "same-cpu", "", "beast-direct", "redis-pubsub",
	 0, 1.0, "a directed message over the ring pair; the echo is a second message on the reverse ring"},
	{"direct route p50 <= 0.6x NATS request-reply (4 KiB, same-cpu)", "latency", 4096, "same-cpu", "", "beast-direct", "nats",
	 0, 0.6, "both measure half a request/reply round trip; the ring pair has no server hop"},
	{"direct request/reply round trip <= NATS's (4 KiB, same-cpu)", "latency", 4096, "same-cpu", "", "beast-direct", "nats",
	 0, 1.0, "the round trip is twice the one-way p50 on both rows"},
	{"direct ACKed stream >= raw zmq-dealer-ipc throughput (64 B)", "throughput", 64, "cross-cpu", "",
	 "beast-direct", "zmq-dealer-ipc", 1, 1.0,
	 "every message is ACKed over the reverse ring; a full ring sends the overflow through beastd"},
	{"direct ACKed stream >= raw zmq-dealer-ipc throughput (4 KiB)", "throughput", 4096, "cross-cpu", "",
	 "beast-direct", "zmq-dealer-ipc", 1, 1.0,
	 "every message is ACKed over the reverse ring; a full ring sends the overflow through beastd"},
	{"across hosts: bridge send->ACK p50 <= 2x bare JetStream round trip (64 B)", "latency", 64, "cross-cpu", "",
	 "bridge", "bridge-js", 0, 2.0,
	 "the bridge adds four beastd hops and two bridge hand-overs (each a wake-up) to the same JetStream path"},
	{"across hosts: bridge ACKed msgs/s >= 0.7x bare JetStream (64 B)", "throughput", 64, "cross-cpu", "",
	 "bridge", "bridge-js", 1, 0.7,
	 "per message the bridges add four beastd hops and their headers (ACKs go back in batches); on 2 vCPUs eight processes share the cores"},
};

/* A target's other row, or (theirs NULL: an absolute limit) a row whose
 * rate and p50 are 1. */
static const bb_row_t *
s_theirs(const bb_row_t *rows, int n, const s_target_t *t)
{
	static const bb_row_t one = {.msgs_per_s = 1, .p50_us = 1};
	const bb_row_t *b;

	if (t->theirs == NULL)
		return &one;
	b = s_find(rows, n, t->scen, t->theirs, t->payload, t->placement, "");
	return b ? b : s_find(rows, n, t->scen, t->theirs, t->payload, t->placement, t->mode);
}

static int
s_check(const bb_row_t *rows, int n, FILE *md, FILE *out)
{
	int missed = 0, met = 0, na = 0;
	if (out)
		fprintf(out, "\ntargets (checked from results.json):\n");
	if (md)
		fprintf(md, "## Targets\n\nChecked by reading `results.json` back (`beast-bench --check FILE` does the "
		            "same).\n\n| target | ours | theirs | ratio | limit | result |\n|---|---:|---:|---:|---:|---|\n");
	size_t nt = sizeof s_targets / sizeof s_targets[0];
	/* the fixed targets, then "ahead of Redis and nng on every latency row" */
	int extra = 0;
	for (int i = 0; i < n; i++)
		extra += !strcmp(rows[i].scenario, "latency") &&
		         (!strcmp(rows[i].transport, "redis-pubsub") || !strcmp(rows[i].transport, "nng-pair"));
	for (size_t k = 0; k < nt + (size_t)extra + 1; k++) {
		s_target_t t;
		char what[160];
		if (k < nt) {
			t = s_targets[k];
		} else {
			/* the k - nt'th latency row of redis or nng */
			int want = (int)(k - nt), seen = 0;
			const bb_row_t *peer = NULL;
			for (int i = 0; i < n && !peer; i++) {
				if (!strcmp(rows[i].scenario, "latency") &&
				    (!strcmp(rows[i].transport, "redis-pubsub") || !strcmp(rows[i].transport, "nng-pair")) &&
				    seen++ == want)
					peer = &rows[i];
			}
			if (!peer)
				break;
			int redis = !strcmp(peer->transport, "redis-pubsub");
			snprintf(what, sizeof what, "ahead of %s: latency %zu B %s", peer->transport, peer->payload,
			         peer->placement);
			t = (s_target_t){what, "latency", peer->payload, peer->placement, redis ? "" : "blocking",
			                 redis ? "beast-mesh-ipc" : "beast-ring", peer->transport, 0, 1.0,
			                 redis ? "both go through a server; see the row's cpu and the forwarder ratio"
			                       : "both are direct; see the row notes"};
			/* rows of peers without wait modes have mode "" */
		}
		const bb_row_t *a = s_find(rows, n, t.scen, t.ours, t.payload, t.placement, t.mode);
		const bb_row_t *b = s_theirs(rows, n, &t);
		char res[24] = "n/a", ov[24] = "-", tv[24] = "-", rv[24] = "-";
		if (a && b) {
			double x = t.rate ? a->msgs_per_s : a->p50_us, y = t.rate ? b->msgs_per_s : b->p50_us;
			double ratio = y > 0 ? x / y : 0;
			int ok = y > 0 && (t.rate ? ratio >= t.limit : ratio <= t.limit);
			snprintf(res, sizeof res, "%s", ok ? "met" : "MISSED");
			snprintf(ov, sizeof ov, t.rate ? "%.0f/s" : "%.1f us", x);
			snprintf(tv, sizeof tv, t.rate ? "%.0f/s" : "%.1f us", y);
			snprintf(rv, sizeof rv, ratio < 0.1 ? "%.2gx" : "%.2fx", ratio);
			if (t.theirs == NULL) { /* absolute: the limit is the number itself */
				snprintf(tv, sizeof tv, "-");
				snprintf(rv, sizeof rv, "-");
			}
			ok ? met++ : missed++;
		} else {
			na++;
		}
		char lim[24];
		if (t.theirs == NULL)
			snprintf(lim, sizeof lim, "%s %.0f%s", t.rate ? ">=" : "<=", t.limit, t.rate ? "/s" : " us");
		else
			snprintf(lim, sizeof lim, "%s %.2fx", t.rate ? ">=" : "<=", t.limit);
		if (out)
			fprintf(out, "  %-6s %-62s %12s vs %12s = %7s (%s)%s%s\n", res, t.what, ov, tv, rv, lim,
			        a && b ? "" : "  -- a row is missing or not installed", "");
		if (md) {
			fprintf(md, "| %s | %s | %s | %s | %s | %s |\n", t.what, ov, tv, rv, lim, res);
		}
		if (a && b && !strcmp(res, "MISSED")) {
			if (out)
				fprintf(out, "         why: %s\n", t.why);
		}
	}
	if (md) {
		fprintf(md, "\n%d met, %d missed, %d not measured (a row missing, failed, or a peer not installed).\n",
		        met, missed, na);
		int first = 1;
		for (size_t k = 0; k < nt; k++) {
			const s_target_t *t = &s_targets[k];
			const bb_row_t *a = s_find(rows, n, t->scen, t->ours, t->payload, t->placement, t->mode);
			const bb_row_t *b = s_theirs(rows, n, t);
			if (!a || !b)
				continue;
			double x = t->rate ? a->msgs_per_s : a->p50_us, y = t->rate ? b->msgs_per_s : b->p50_us;
			int ok = y > 0 && (t->rate ? x / y >= t->limit : x / y <= t->limit);
			if (!ok) {
				if (first)
					fprintf(md, "\nWhere a target is missed, and why (as far as we know):\n\n");
				first = 0;
				fprintf(md, "- %s: %s.\n", t->what, t->why);
			}
		}
		fprintf(md, "\n");
	}
	if (out)
		fprintf(out, "  %d met, %d missed, %d not measured\n", met, missed, na);
	return missed;
}

int
bb_report_check_file(const char *path, FILE *out)
{
	bb_row_t *rows = NULL;
	int n = s_read_json(path, &rows);
	if (n < 0) {
		fprintf(stderr, "beast-bench: cannot read %s: %s\n", path, strerror(errno));
		return -1;
	}
	int missed = s_check(rows, n, NULL, out);
	free(rows);
	return missed ? -1 : 0;
}

/* ---- plots ---- */

static int
s_find_gnuplot(char *out, size_t len)
{
	return bb_find_program("gnuplot", out, len);
}

static int
s_write_plots(const char *dir, const bb_row_t *rows, int n, char *note, size_t notelen)
{
	char path[700];
	snprintf(path, sizeof path, "%s/plots.gp", dir);
	FILE *gp = fopen(path, "w");
	if (!gp)
		return -1;
	fprintf(gp, "# beast-bench plots: gnuplot plots.gp (in this dir)\nset terminal svg size 900,560 dynamic "
	            "font 'sans,11'\nset key outside right\nset grid\n");
	/* latency CDF per transport: 64 B, cross-cpu */
	int ncdf = 0;
	for (int i = 0; i < n; i++) {
		const bb_row_t *r = &rows[i];
		if (!s_ok(r) || !r->has_cdf || strcmp(r->scenario, "latency") || r->payload != 64 ||
		    strcmp(r->placement, "cross-cpu"))
			continue;
		snprintf(path, sizeof path, "%s/cdf-%s%s%s.dat", dir, r->transport, r->mode[0] ? "-" : "", r->mode);
		FILE *f = fopen(path, "w");
		if (!f)
			continue;
		for (int q = 0; q < BB_CDF_N; q++)
			fprintf(f, "%.3f %.4f\n", r->cdf[q], (double)q / (BB_CDF_N - 1));
		fclose(f);
		fprintf(gp, "%s 'cdf-%s%s%s.dat' using 1:2 with lines lw 2 title '%s%s%s'", ncdf ? ", \\\n  " :
		            "set output 'latency-cdf.svg'\nset title 'one-way latency, 64 B, cross-cpu (CDF)'\n"
		            "set xlabel 'microseconds (log)'\nset ylabel 'fraction of messages'\nset logscale x\n"
		            "set yrange [0:1]\nplot",
		        r->transport, r->mode[0] ? "-" : "", r->mode, r->transport, r->mode[0] ? " " : "", r->mode);
		ncdf++;
	}
	if (ncdf)
		fprintf(gp, "\nunset logscale\nunset yrange\nset yrange [*:*]\n");
	/* throughput vs payload per transport: cross-cpu */
	int ntp = 0;
	const char *seen[64];
	int nseen = 0;
	for (int i = 0; i < n && nseen < 64; i++) {
		const bb_row_t *r = &rows[i];
		if (!s_ok(r) || strcmp(r->scenario, "throughput") || strcmp(r->placement, "cross-cpu"))
			continue;
		int dup = 0;
		for (int k = 0; k < nseen; k++)
			dup |= !strcmp(seen[k], r->transport);
		if (dup)
			continue;
		seen[nseen++] = r->transport;
		snprintf(path, sizeof path, "%s/tp-%s.dat", dir, r->transport);
		FILE *f = fopen(path, "w");
		if (!f)
			continue;
		for (int j = 0; j < n; j++) {
			const bb_row_t *q = &rows[j];
			if (s_ok(q) && !strcmp(q->scenario, "throughput") && !strcmp(q->transport, r->transport) &&
			    !strcmp(q->placement, "cross-cpu") && !strcmp(q->mode, r->mode))
				fprintf(f, "%zu %.3f\n", q->payload, q->mb_per_s);
		}
		fclose(f);
		fprintf(gp, "%s 'tp-%s.dat' using 1:2 with linespoints lw 2 title '%s'", ntp ? ", \\\n  " :
		            "set output 'throughput.svg'\nset title 'streaming throughput vs payload, cross-cpu'\n"
		            "set xlabel 'payload bytes (log)'\nset ylabel 'MB/s (log)'\nset logscale xy\nplot",
		        r->transport, r->transport);
		ntp++;
	}
	fprintf(gp, "\n");
	fclose(gp);
	char prog[512];
	if (ncdf + ntp == 0) {
		snprintf(note, notelen, "no latency or throughput rows: no plots");
		return 0;
	}
	if (s_find_gnuplot(prog, sizeof prog) != 0) {
		snprintf(note, notelen, "gnuplot not installed (Debian gnuplot-nox): plots.gp and the .dat files are in "
		                        "the output dir");
		return 0;
	}
	pid_t pid = fork();
	if (pid == 0) {
		if (chdir(dir) != 0)
			_exit(1);
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, 2);
		execl(prog, "gnuplot", "plots.gp", (char *)NULL);
		_exit(127);
	}
	int st = 0;
	if (pid > 0)
		waitpid(pid, &st, 0);
	if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		snprintf(note, notelen, "gnuplot failed on plots.gp (status %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	else
		snprintf(note, notelen, "%s%s%s", ncdf ? "latency-cdf.svg" : "", ncdf && ntp ? ", " : "",
		         ntp ? "throughput.svg" : "");
	return 0;
}

/* ---- report.md ---- */

static void
s_machine(FILE *md)
{
	struct utsname u;
	char model[160] = "unknown CPU";
	long mem_kb = 0;
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];
	while (f && fgets(line, sizeof line, f)) {
		char *c = strchr(line, ':');
		if (!strncmp(line, "model name", 10) && c) {
			snprintf(model, sizeof model, "%s", c + 2);
			model[strcspn(model, "\n")] = '\0';
			break;
		}
	}
	if (f)
		fclose(f);
	f = fopen("/proc/meminfo", "r");
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "MemTotal: %ld", &mem_kb) == 1)
			break;
	if (f)
		fclose(f);
	if (uname(&u) == 0)
		fprintf(md, "- machine: %s %s %s, %ld CPUs online (%s), %.1f GiB RAM\n", u.sysname, u.release, u.machine,
		        sysconf(_SC_NPROCESSORS_ONLN), model, (double)mem_kb / (1024.0 * 1024.0));
}

static void
s_write_report(const char *dir, const bb_row_t *rows, int n, const bb_run_info_t *info, const char *plots)
{
	char path[700];
	snprintf(path, sizeof path, "%s/report.md", dir);
	FILE *md = fopen(path, "w");
	if (!md)
		return;
	time_t now = time(NULL);
	struct tm tm;
	char when[64];
	gmtime_r(&now, &tm);
	strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
	fprintf(md, "# beast-bench report\n\n- run: %s, %s, %d round%s (median reported), %.0f s%s%s\n", when,
	        info->quick ? "--quick" : "full", info->rounds, info->rounds == 1 ? "" : "s", info->seconds,
	        info->only ? ", --only " : "", info->only ? info->only : "");
	s_machine(md);
	fprintf(md, "- ratios against `%s`; method and peer configurations: bench/README.md\n- plots: %s\n\n",
	        info->baseline, plots);
	bb_row_t *back = NULL;
	snprintf(path, sizeof path, "%s/results.json", dir);
	int nb = s_read_json(path, &back);
	if (nb >= 0)
		s_check(back, nb, md, NULL);
	free(back);
	const char *last = "";
	for (int i = 0; i < n; i++) {
		const bb_row_t *r = &rows[i];
		if (strcmp(last, r->scenario)) {
			last = r->scenario;
			fprintf(md, "\n## %s\n\n| transport | bytes | placement | mode | p50 us | p99 us | p99.9 us | msgs/s | "
			            "MB/s | cpu s | rss MB | lost | ratio | status |\n"
			            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
			        r->scenario);
		}
		char sz[24], ratio[16];
		s_size(sz, sizeof sz, r->payload);
		s_ratio(ratio, sizeof ratio, rows, n, r, info->baseline);
		if (!s_ok(r))
			fprintf(md, "| %s | %s | %s | %s | | | | | | | | | | %s |\n", r->transport, sz, r->placement, r->mode,
			        r->status);
		else
			fprintf(md, "| %s | %s | %s | %s | %.1f | %.1f | %.1f | %.0f | %.1f | %.2f | %.1f | %ld | %s | %s |\n",
			        r->transport, sz, r->placement, r->mode, r->p50_us, r->p99_us, r->p999_us, r->msgs_per_s,
			        r->mb_per_s, r->cpu_s, (double)r->rss_kb / 1024.0, r->lost, ratio,
			        r->note[0] ? r->note : "ok");
	}
	fclose(md);
}

int
bb_report_write(const char *dir, const char *json, const bb_row_t *rows, int n, const bb_run_info_t *info)
{
	char path[700];
	int rc = 0;
	snprintf(path, sizeof path, "%s/results.json", dir);
	rc |= s_write_json(path, rows, n);
	snprintf(path, sizeof path, "%s/results.csv", dir);
	rc |= s_write_csv(path, rows, n);
	if (json)
		rc |= s_write_json(json, rows, n);
	if (rc != 0)
		return -1;
	char plots[200] = "";
	s_write_plots(dir, rows, n, plots, sizeof plots);
	s_write_report(dir, rows, n, info, plots);
	snprintf(path, sizeof path, "%s/results.json", dir);
	bb_row_t *back = NULL;
	int nb = s_read_json(path, &back);
	if (nb < 0)
		return -1;
	s_check(back, nb, NULL, stdout);
	free(back);
	fprintf(stdout, "plots: %s\n", plots);
	return 0;
}

/*
 * httpd.c - beastd's read-only HTTP endpoints, on libmicrohttpd.
 *
 * The broker never waits for HTTP.  Its thread takes a snapshot (plain
 * numbers and names, bm_broker_snap) about every 250 ms and hands it over
 * with bm_httpd_publish: a pointer swap under a mutex that is held for
 * nothing else.  Requests are served on libmicrohttpd's own thread: each
 * one takes a reference on the current snapshot (under the same mutex,
 * again only for the pointer), renders its answer from it without any
 * lock, and drops the reference; the last holder of a replaced snapshot
 * frees it.  A slow or hostile HTTP client can therefore cost the broker
 * nothing but the CPU the HTTP thread uses.
 *
 * Bounds: BM_HTTPD_CONN_MAX connections at a time, an idle timeout of
 * BM_HTTPD_TIMEOUT_S, 32 KiB of memory per connection (request line and
 * headers included: a longer request is refused by libmicrohttpd), no
 * request bodies, GET and HEAD only (405 otherwise), unknown paths 404.
 * The listening socket is ours (bound here, handed to libmicrohttpd), on
 * loopback or a unix socket only.
 *
 * Endpoints (docs/observability.md is the reference):
 *   /metrics   Prometheus text format 0.0.4
 *   /healthz   200 {"status":"ok",...} or 503 {"status":"unhealthy","reasons":[...]}
 *   /varz      the counters of `beast stats --json`, one JSON object
 *   /agents    the directory of `beast ls --json`, as one JSON array
 *   /flows     messages per (from, to) pair, JSON
 *   /topics    the busiest broadcast topics (from the last-value cache), JSON
 *   /          the dashboard page (agents/dashboard/index.html, embedded)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>

#include "httpd.h"

/* The dashboard page (generated from agents/dashboard/index.html). */
extern const unsigned char bm_dashboard_html[];
extern const size_t bm_dashboard_html_len;

typedef struct {
	atomic_int refs;              /* the server's + one per request */
	bm_broker_snap_t *snap;       /* owned */
	size_t ntopics;               /* the proxy's busiest topics */
	bm_proxy_topic_t topics[BM_PROXY_TOPICS_MAX];
} s_pub_t;

struct bm_httpd {
	struct MHD_Daemon *mhd;       /* the server */
	int fd;                       /* listening socket (MHD closes it) */
	char addr[128];               /* as bound: "127.0.0.1:PORT" or "unix:PATH" */
	char unix_path[108];          /* unix socket to remove, or "" */
	char mesh_sock[BM_PATH_MAX + 16]; /* DIR/mesh.sock, for /healthz */
	pthread_mutex_t lock;         /* guards cur (the pointer only) */
	s_pub_t *cur;                 /* latest snapshot, or NULL */
};

static void
s_unref(s_pub_t *p)
{
	if (p != NULL && atomic_fetch_sub(&p->refs, 1) == 1) {
		bm_broker_snap_destroy(&p->snap);
		free(p);
	}
}

static s_pub_t *
s_take(bm_httpd_t *h)
{
	s_pub_t *p;

	pthread_mutex_lock(&h->lock);
	p = h->cur;
	if (p != NULL) {
		atomic_fetch_add(&p->refs, 1);
	}
	pthread_mutex_unlock(&h->lock);
	return p;
}

void
bm_httpd_publish(bm_httpd_t *h, bm_broker_snap_t **snap_p, const bm_proxy_topic_t *topics,
                 size_t ntopics)
{
	s_pub_t *p, *old;

	if (h == NULL || snap_p == NULL || *snap_p == NULL) {
		return;
	}
	p = malloc(sizeof *p);
	if (p == NULL) {
		bm_broker_snap_destroy(snap_p);
		return;
	}
	atomic_init(&p->refs, 1);
	p->snap = *snap_p;
	*snap_p = NULL;
	p->ntopics = topics && ntopics <= BM_PROXY_TOPICS_MAX ? ntopics : 0;
	if (p->ntopics > 0) {
		memcpy(p->topics, topics, p->ntopics * sizeof *topics);
	}
	pthread_mutex_lock(&h->lock);
	old = h->cur;
	h->cur = p;
	pthread_mutex_unlock(&h->lock);
	s_unref(old);
}

/* ---- reading a snapshot ---- */

static int64_t
s_stat(const bm_broker_snap_t *s, const char *key)
{
	for (size_t i = 0; i < s->nstats; i++) {
		if (strcmp(s->stats[i].key, key) == 0) {
			return s->stats[i].value;
		}
	}
	return 0;
}

static bool
s_has_stat(const bm_broker_snap_t *s, const char *key)
{
	for (size_t i = 0; i < s->nstats; i++) {
		if (strcmp(s->stats[i].key, key) == 0) {
			return true;
		}
	}
	return false;
}

/* JSON string; names are from a safe alphabet, but escape anyway. */
static void
s_json_str(FILE *f, const char *v)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p == '"' || *p == '\\') {
			fprintf(f, "\\%c", *p);
		} else if (*p < 0x20) {
			fprintf(f, "\\u%04x", *p);
		} else {
			fputc(*p, f);
		}
	}
	fputc('"', f);
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void
s_label(FILE *f, const char *v)
{
	for (const char *p = v; *p; p++) {
		if (*p == '"' || *p == '\\') {
			fprintf(f, "\\%c", *p);
		} else if (*p == '\n') {
			fputs("\\n", f);
		} else {
			fputc(*p, f);
		}
	}
}

/*
 * Health: the reasons beastd is unhealthy, each a short phrase; returns
 * how many were written (at most 4).
 */
static int
s_health(bm_httpd_t *h, const bm_broker_snap_t *s, const char *why[4], int64_t *ret_age)
{
	struct stat st;
	int n = 0;

	if (s == NULL) {
		why[n++] = "no snapshot from the broker yet";
		*ret_age = -1;
		return n;
	}
	*ret_age = bm_mono_ms() - s->taken_ms;
	if (*ret_age > BM_HTTPD_STALE_MS) {
		why[n++] = "broker loop stalled (no snapshot for over 2 s)";
	}
	if (s_stat(s, "bcast_paused") != 0) {
		why[n++] = "broadcast proxy paused (beast proxy resume)";
	}
	if (!s_has_stat(s, "bcast_in")) {
		why[n++] = "broadcast proxy not answering";
	}
	if (stat(h->mesh_sock, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		why[n++] = "mesh socket missing from the runtime directory";
	}
	return n;
}

static void
s_render_healthz(bm_httpd_t *h, const bm_broker_snap_t *s, FILE *f, unsigned *ret_status)
{
	const char *why[4];
	int64_t age;
	int n = s_health(h, s, why, &age);

	*ret_status = n == 0 ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
	fprintf(f, "{\"status\":\"%s\"", n == 0 ? "ok" : "unhealthy");
	if (n > 0) {
		fputs(",\"reasons\":[", f);
		for (int i = 0; i < n; i++) {
			fputs(i ? "," : "", f);
			s_json_str(f, why[i]);
		}
		fputc(']', f);
	}
	fprintf(f, ",\"snapshot_age_ms\":%lld", (long long)age);
	if (s != NULL) {
		fprintf(f, ",\"uptime_ms\":%lld,\"agents\":%lld,\"bcast_paused\":%s",
		        (long long)s_stat(s, "uptime_ms"), (long long)s_stat(s, "agents"),
		        s_stat(s, "bcast_paused") ? "true" : "false");
	}
	fputs("}\n", f);
}

static void
s_render_varz(const bm_broker_snap_t *s, FILE *f)
{
	fputc('{', f);
	for (size_t i = 0; i < s->nstats; i++) {
		fputs(i ? "," : "", f);
		s_json_str(f, s->stats[i].key);
		fprintf(f, ":%lld", (long long)s->stats[i].value);
	}
	fputs("}\n", f);
}

static void
s_render_agents(const bm_broker_snap_t *s, FILE *f)
{
	fputc('[', f);
	for (size_t i = 0; i < s->nagents; i++) {
		const bm_snap_agent_t *a = &s->agents[i];

		fputs(i ? ",\n{\"name\":" : "{\"name\":", f);
		s_json_str(f, a->name);
		fputs(",\"caps\":[", f);
		for (int k = 0; k < a->ncaps; k++) {
			fputs(k ? "," : "", f);
			s_json_str(f, a->caps[k]);
		}
		fprintf(f,
		        "],\"idle_ms\":%lld,\"inflight\":%llu,\"sent\":%llu,\"delivered\":%llu,"
		        "\"acked\":%llu,\"unacked_bytes\":%llu",
		        (long long)a->idle_ms, (unsigned long long)a->inflight,
		        (unsigned long long)a->sent, (unsigned long long)a->delivered,
		        (unsigned long long)a->acked, (unsigned long long)a->pending_bytes);
		if (a->outbox_pending >= 0) {
			fprintf(f, ",\"outbox_pending\":%lld,\"outbox_dead\":%lld,\"outbox_retries\":%lld",
			        (long long)a->outbox_pending, (long long)a->outbox_dead,
			        (long long)a->outbox_retries);
		}
		fputc('}', f);
	}
	fputs("]\n", f);
}

static void
s_render_flows(const bm_broker_snap_t *s, FILE *f)
{
	fprintf(f, "{\"uptime_ms\":%lld,\"flows\":[", (long long)s_stat(s, "uptime_ms"));
	for (size_t i = 0; i < s->nflows; i++) {
		fputs(i ? ",\n{\"from\":" : "{\"from\":", f);
		s_json_str(f, s->flows[i].from);
		fputs(",\"to\":", f);
		s_json_str(f, s->flows[i].to);
		fprintf(f, ",\"msgs\":%llu,\"bytes\":%llu}", (unsigned long long)s->flows[i].msgs,
		        (unsigned long long)s->flows[i].bytes);
	}
	fputs("]}\n", f);
}

static void
s_render_topics(const s_pub_t *p, FILE *f)
{
	fprintf(f, "{\"uptime_ms\":%lld,\"topics\":[", (long long)s_stat(p->snap, "uptime_ms"));
	for (size_t i = 0; i < p->ntopics; i++) {
		fputs(i ? ",\n{\"topic\":" : "{\"topic\":", f);
		s_json_str(f, p->topics[i].topic);
		fprintf(f, ",\"msgs\":%llu,\"bytes\":%llu}", (unsigned long long)p->topics[i].msgs,
		        (unsigned long long)p->topics[i].bytes);
	}
	fputs("]}\n", f);
}

/* ---- /metrics ---- */

/* Broker and proxy counters that map one to one onto a metric. */
static const struct {
	const char *key;    /* STATS key */
	const char *name;   /* metric name, after beastmesh_ */
	const char *type;   /* counter or gauge */
	const char *help;   /* # HELP text */
} s_plain[] = {
	{"uptime_ms", NULL, NULL, NULL}, /* rendered in seconds, below */
	{"agents", "agents", "gauge", "Agents registered with the broker."},
	{"frames", "frames_received_total", "counter", "Mesh messages received by the broker."},
	{"sends", "sends_total", "counter", "SEND commands received."},
	{"delivers", "routed_total", "counter", "Messages routed: DELIVERs forwarded to a receiver."},
	{"acks", "acked_total", "counter", "ACKs relayed back to senders (one per message id)."},
	{"ack_frames", "ack_frames_total", "counter", "ACK and ACKS frames received."},
	{"malformed", "malformed_frames_total", "counter", "Frames that did not decode (answered or dropped)."},
	{"unroutable", "unroutable_total", "counter", "ACKs and NACKs whose sender was gone."},
	{"hellos", "registrations_total", "counter", "Registrations (HELLO accepted)."},
	{"denied", "registrations_denied_total", "counter", "Registrations refused."},
	{"gone", "agents_gone_total", "counter", "Agents dropped for silence or a closed connection."},
	{"byes", "agents_bye_total", "counter", "Agents that said goodbye."},
	{"pings", "pings_total", "counter", "PINGs answered."},
	{"bcast_in", "broadcast_in_total", "counter", "Broadcasts read from publishers."},
	{"bcast_out", "broadcast_out_total", "counter", "Broadcasts forwarded to subscribers."},
	{"bcast_malformed", "broadcast_malformed_total", "counter", "Broadcast frames dropped as malformed."},
	{"bcast_paused", "broadcast_paused", "gauge", "1 while the broadcast proxy is paused."},
	{"bcast_sub_gaps", "broadcast_gaps_total", "counter", "Broadcasts subscribers reported lost (sum of their last reports)."},
	{"bcast_sub_received", "broadcast_subscriber_received_total", "counter", "Broadcasts subscribers reported received (sum of their last reports)."},
	{"bcast_lvc_topics", "lvc_topics", "gauge", "Topics held by the last-value cache."},
	{"bcast_lvc_bytes", "lvc_bytes", "gauge", "Bytes held by the last-value cache."},
	{"bcast_lvc_evicted", "lvc_evicted_total", "counter", "Topics evicted from the last-value cache by its bounds."},
	{"bcast_lvc_replayed", "lvc_replayed_total", "counter", "Cached broadcasts replayed to late joiners."},
};

static void
s_head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP beastmesh_%s %s\n# TYPE beastmesh_%s %s\n", name, help, name, type);
}

static int
s_by_name(const void *a, const void *b)
{
	return strcmp(((const bm_snap_agent_t *)a)->name, ((const bm_snap_agent_t *)b)->name);
}

/* Per-agent series: the first BM_HTTPD_AGENTS_LABELLED agents by name get
 * their own label, the rest are summed under agent="_other". */
static void
s_agent_metric(FILE *f, const bm_snap_agent_t *v, size_t n, const char *name, const char *type,
               const char *help, size_t off, bool reported_only)
{
	uint64_t other = 0;
	bool any_other = false, headed = false;

	for (size_t i = 0; i < n; i++) {
		int64_t x;

		if (reported_only && v[i].outbox_pending < 0) {
			continue;
		}
		x = *(const int64_t *)((const char *)&v[i] + off);
		if (!headed) {
			s_head(f, name, type, help);
			headed = true;
		}
		if (i < BM_HTTPD_AGENTS_LABELLED) {
			fprintf(f, "beastmesh_%s{agent=\"", name);
			s_label(f, v[i].name);
			fprintf(f, "\"} %lld\n", (long long)x);
		} else {
			other += (uint64_t)x;
			any_other = true;
		}
	}
	if (any_other) {
		fprintf(f, "beastmesh_%s{agent=\"_other\"} %llu\n", name, (unsigned long long)other);
	}
}

static void
s_render_metrics(const bm_broker_snap_t *s, FILE *f)
{
	static const int64_t bounds[BM_LAT_BUCKETS - 1] = BM_LAT_BOUNDS_US;
	static const struct {
		const char *reason, *key;
	} nack[] = {
		{"noagent", "nack_noagent"}, {"toobig", "nack_toobig"},
		{"busy", NULL},              {"pending", "nack_pending"},
		{"notreg", "nack_notreg"},   {"other", NULL},
	};
	int64_t busy = s_stat(s, "nack_busy") - s_stat(s, "nack_pending");
	int64_t other = s_stat(s, "nacks") - s_stat(s, "nack_noagent") - s_stat(s, "nack_toobig") -
	                s_stat(s, "nack_busy") - s_stat(s, "nack_notreg");
	bm_snap_agent_t *v;
	uint64_t cum = 0;

	s_head(f, "uptime_seconds", "gauge", "Seconds since beastd started.");
	fprintf(f, "beastmesh_uptime_seconds %.3f\n", (double)s_stat(s, "uptime_ms") / 1000.0);
	for (size_t i = 1; i < sizeof s_plain / sizeof s_plain[0]; i++) {
		if (!s_has_stat(s, s_plain[i].key)) {
			continue;
		}
		s_head(f, s_plain[i].name, s_plain[i].type, s_plain[i].help);
		fprintf(f, "beastmesh_%s %lld\n", s_plain[i].name, (long long)s_stat(s, s_plain[i].key));
	}
	s_head(f, "nacked_total", "counter",
	       "NACKs sent or relayed, by reason (other: refusals by receivers, relayed).");
	for (size_t i = 0; i < sizeof nack / sizeof nack[0]; i++) {
		int64_t x = nack[i].key ? s_stat(s, nack[i].key) : (i == 2 ? busy : other);

		fprintf(f, "beastmesh_nacked_total{reason=\"%s\"} %lld\n", nack[i].reason,
		        (long long)(x < 0 ? 0 : x));
	}
	s_head(f, "blobs_announced_total", "counter", "blob.announce messages routed.");
	fprintf(f, "beastmesh_blobs_announced_total %llu\n", (unsigned long long)s->blobs);
	s_head(f, "blob_bytes_announced_total", "counter", "Bytes the routed blob.announce messages announced.");
	fprintf(f, "beastmesh_blob_bytes_announced_total %llu\n", (unsigned long long)s->blob_bytes);
	s_head(f, "send_ack_seconds", "histogram",
	       "Time from routing a message to its receiver's ACK, as the broker sees it (sampled).");
	for (int k = 0; k < BM_LAT_BUCKETS - 1; k++) {
		cum += s->lat_buckets[k];
		fprintf(f, "beastmesh_send_ack_seconds_bucket{le=\"%g\"} %llu\n", (double)bounds[k] / 1e6,
		        (unsigned long long)cum);
	}
	fprintf(f, "beastmesh_send_ack_seconds_bucket{le=\"+Inf\"} %llu\n",
	        (unsigned long long)s->lat_count);
	fprintf(f, "beastmesh_send_ack_seconds_sum %.6f\n", (double)s->lat_sum_us / 1e6);
	fprintf(f, "beastmesh_send_ack_seconds_count %llu\n", (unsigned long long)s->lat_count);

	if (s->nagents == 0) {
		return;
	}
	v = malloc(s->nagents * sizeof *v);
	if (v == NULL) {
		return;
	}
	memcpy(v, s->agents, s->nagents * sizeof *v);
	qsort(v, s->nagents, sizeof *v, s_by_name);
	/* The fields below are read through their offsets as int64_t: all
	 * are 8-byte integers (signed or not, which may alias). */
#define S_OFF(field) offsetof(bm_snap_agent_t, field)
	s_agent_metric(f, v, s->nagents, "agent_inflight", "gauge",
	               "Messages delivered to the agent, not yet ACKed or NACKed.", S_OFF(inflight),
	               false);
	s_agent_metric(f, v, s->nagents, "agent_unacked_bytes", "gauge",
	               "Body bytes delivered to the agent and not yet acknowledged (estimate).",
	               S_OFF(pending_bytes), false);
	s_agent_metric(f, v, s->nagents, "agent_sent_total", "counter",
	               "SENDs the agent made (since it registered).", S_OFF(sent), false);
	s_agent_metric(f, v, s->nagents, "agent_delivered_total", "counter",
	               "Messages delivered to the agent (since it registered).", S_OFF(delivered),
	               false);
	s_agent_metric(f, v, s->nagents, "agent_acked_total", "counter",
	               "ACKs the agent gave (since it registered).", S_OFF(acked), false);
	s_agent_metric(f, v, s->nagents, "agent_outbox_pending", "gauge",
	               "Messages waiting in the agent's outbox, as it last reported.",
	               S_OFF(outbox_pending), true);
	s_agent_metric(f, v, s->nagents, "agent_outbox_dead", "gauge",
	               "Dead letters in the agent's outbox, as it last reported.", S_OFF(outbox_dead),
	               true);
	s_agent_metric(f, v, s->nagents, "agent_outbox_retries_total", "counter",
	               "Resends the agent's outbox made, as it last reported.",
	               S_OFF(outbox_retries), true);
#undef S_OFF
	free(v);
}

/* ---- requests ---- */

static enum MHD_Result
s_reply(struct MHD_Connection *conn, unsigned status, const char *type, char *body, size_t len)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer_with_free_callback(len, body, free);
	enum MHD_Result ret;

	if (r == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	}
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
s_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
	char *body = strdup(text);

	return body ? s_reply(conn, status, "text/plain; charset=utf-8", body, strlen(text)) : MHD_NO;
}

static enum MHD_Result
s_on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
             const char *version, const char *upload, size_t *upload_size, void **req_cls)
{
	bm_httpd_t *h = cls;
	const char *type = "application/json";
	unsigned status = MHD_HTTP_OK;
	s_pub_t *p;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	if (*req_cls == NULL) {
		/* First call: headers only.  A body is never wanted. */
		*req_cls = h;
		if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
		    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
			return s_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
			              "read-only: GET or HEAD only\n");
		}
		return MHD_YES;
	}
	if (*upload_size != 0) {
		*upload_size = 0;
		return s_text(conn, MHD_HTTP_CONTENT_TOO_LARGE, "no request body accepted\n");
	}
	if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
		buf = malloc(bm_dashboard_html_len);
		if (buf == NULL) {
			return MHD_NO;
		}
		memcpy(buf, bm_dashboard_html, bm_dashboard_html_len);
		return s_reply(conn, MHD_HTTP_OK, "text/html; charset=utf-8", buf,
		               bm_dashboard_html_len);
	}
	if (strcmp(url, "/metrics") != 0 && strcmp(url, "/healthz") != 0 &&
	    strcmp(url, "/varz") != 0 && strcmp(url, "/agents") != 0 &&
	    strcmp(url, "/flows") != 0 && strcmp(url, "/topics") != 0) {
		return s_text(conn, MHD_HTTP_NOT_FOUND,
		              "not found: try /metrics /healthz /varz /agents /flows /topics or /\n");
	}
	p = s_take(h);
	f = open_memstream(&buf, &len);
	if (f == NULL) {
		s_unref(p);
		return MHD_NO;
	}
	if (strcmp(url, "/healthz") == 0) {
		s_render_healthz(h, p ? p->snap : NULL, f, &status);
	} else if (p == NULL) {
		status = MHD_HTTP_SERVICE_UNAVAILABLE;
		type = "text/plain; charset=utf-8";
		fputs("no snapshot from the broker yet\n", f);
	} else if (strcmp(url, "/metrics") == 0) {
		type = "text/plain; version=0.0.4; charset=utf-8";
		s_render_metrics(p->snap, f);
	} else if (strcmp(url, "/varz") == 0) {
		s_render_varz(p->snap, f);
	} else if (strcmp(url, "/agents") == 0) {
		s_render_agents(p->snap, f);
	} else if (strcmp(url, "/topics") == 0) {
		s_render_topics(p, f);
	} else {
		s_render_flows(p->snap, f);
	}
	s_unref(p);
	if (fclose(f) != 0) {
		free(buf);
		return MHD_NO;
	}
	return s_reply(conn, status, type, buf, len);
}

/* ---- set-up ---- */

/* Parses addr into a bound, listening socket; see bm_httpd_check. */
static int
s_listen(const char *addr, bool bind_it, bm_httpd_t *h)
{
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	char host[64];
	const char *colon;
	char *end;
	long port;
	int fd, one = 1;

	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)&ss;
		size_t n = strlen(addr + 5);

		if (n == 0 || n >= sizeof un->sun_path) {
			return -EINVAL;
		}
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, addr + 5, n + 1);
		sl = sizeof *un;
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL || colon == addr || (size_t)(colon - addr) >= sizeof host) {
			return -EINVAL;
		}
		errno = 0;
		port = strtol(colon + 1, &end, 10);
		if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535) {
			return -EINVAL;
		}
		memcpy(host, addr, (size_t)(colon - addr));
		host[colon - addr] = '\0';
		if (strcmp(host, "localhost") == 0) {
			snprintf(host, sizeof host, "127.0.0.1");
		}
		if (host[0] == '[') {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			size_t n = strlen(host);

			if (n < 3 || host[n - 1] != ']') {
				return -EINVAL;
			}
			host[n - 1] = '\0';
			in6->sin6_family = AF_INET6;
			in6->sin6_port = htons((uint16_t)port);
			if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1) {
				return -EINVAL;
			}
			if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
				return -EADDRNOTAVAIL;
			}
			sl = sizeof *in6;
		} else {
			struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;

			in4->sin_family = AF_INET;
			in4->sin_port = htons((uint16_t)port);
			if (inet_pton(AF_INET, host, &in4->sin_addr) != 1) {
				/* A name other than localhost, or garbage. */
				return strspn(host, "0123456789.") == strlen(host) ? -EINVAL
				                                                    : -EADDRNOTAVAIL;
			}
			if ((ntohl(in4->sin_addr.s_addr) >> 24) != 127) {
				return -EADDRNOTAVAIL;
			}
			sl = sizeof *in4;
		}
	}
	if (!bind_it) {
		return 0;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -errno;
	}
	if (ss.ss_family == AF_UNIX) {
		struct stat st;
		const char *path = ((struct sockaddr_un *)&ss)->sun_path;

		/* A socket file left by a crashed beastd is taken over;
		 * anything else at that path is left alone. */
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
			(void)unlink(path);
		}
		snprintf(h->unix_path, sizeof h->unix_path, "%s", path);
	} else {
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 64) < 0) {
		int rc = -errno;

		close(fd);
		h->unix_path[0] = '\0';
		return rc;
	}
	if (ss.ss_family == AF_UNIX) {
		(void)chmod(h->unix_path, 0600);
		snprintf(h->addr, sizeof h->addr, "unix:%s", h->unix_path);
	} else {
		char ip[INET6_ADDRSTRLEN];

		sl = sizeof ss;
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
			int rc = -errno;

			close(fd);
			return rc;
		}
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
			snprintf(h->addr, sizeof h->addr, "[%s]:%u", ip, ntohs(in6->sin6_port));
		} else {
			struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof ip);
			snprintf(h->addr, sizeof h->addr, "%s:%u", ip, ntohs(in4->sin_port));
		}
	}
	h->fd = fd;
	return 0;
}

int
bm_httpd_check(const char *addr)
{
	bm_httpd_t h = {.fd = -1};

	return addr ? s_listen(addr, false, &h) : -EINVAL;
}

int
bm_httpd_open(const char *addr, const char *dir, bm_httpd_t **ret_httpd)
{
	bm_httpd_t *h;
	sigset_t all, old;
	int rc;

	if (addr == NULL || dir == NULL || ret_httpd == NULL) {
		return -EINVAL;
	}
	h = calloc(1, sizeof *h);
	if (h == NULL) {
		return -ENOMEM;
	}
	h->fd = -1;
	pthread_mutex_init(&h->lock, NULL);
	snprintf(h->mesh_sock, sizeof h->mesh_sock, "%s/mesh.sock", dir);
	if ((rc = s_listen(addr, true, h)) < 0) {
		bm_httpd_destroy(&h);
		return rc;
	}
	/* libmicrohttpd's thread inherits this mask: signals stay with the
	 * broker's thread, whose poll they must interrupt. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	h->mhd = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL, s_on_request, h,
		MHD_OPTION_LISTEN_SOCKET, h->fd,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned int)BM_HTTPD_CONN_MAX,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)BM_HTTPD_TIMEOUT_S,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768,
		MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (h->mhd == NULL) {
		close(h->fd);
		h->fd = -1;
		bm_httpd_destroy(&h);
		return -EIO;
	}
	*ret_httpd = h;
	return 0;
}

const char *
bm_httpd_address(const bm_httpd_t *h)
{
	return h ? h->addr : NULL;
}

void
bm_httpd_destroy(bm_httpd_t **self_p)
{
	bm_httpd_t *h;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	h = *self_p;
	if (h->mhd != NULL) {
		MHD_stop_daemon(h->mhd); /* closes the listening socket too */
	} else if (h->fd >= 0) {
		close(h->fd);
	}
	if (h->unix_path[0] != '\0') {
		(void)unlink(h->unix_path);
	}
	s_unref(h->cur);
	pthread_mutex_destroy(&h->lock);
	free(h);
	*self_p = NULL;
}

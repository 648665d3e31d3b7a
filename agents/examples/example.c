/*
 * example.c - start-up, reporting loop and finish for the example agents
 * (example.h).  Single-threaded; the signal handler only sets ex_stop.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "example.h"

#define S_REPORT_MS 250
#define S_DRAIN_MS 10000

volatile sig_atomic_t ex_stop;

static void
s_on_signal(int sig)
{
	(void)sig;
	ex_stop = 1;
}

int
ex_parse(int argc, char **argv, ex_opts_t *o, const char *default_name)
{
	int n = 1;

	*o = (ex_opts_t){.name = default_name, .sync = BM_JOURNAL_SYNC_INTERVAL};
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(argv[i], "--version") == 0) {
			printf("beast-%s beastmesh %s\n", default_name, bm_version());
			exit(0);
		} else if (strcmp(argv[i], "--dir") == 0 && v != NULL) {
			o->dir = v;
			i++;
		} else if (strcmp(argv[i], "--name") == 0 && v != NULL) {
			o->name = v;
			i++;
		} else if (strcmp(argv[i], "--report-to") == 0 && v != NULL) {
			o->report_to = v;
			i++;
		} else if (strcmp(argv[i], "--sync") == 0 && v != NULL) {
			o->sync = strcmp(v, "always") == 0 ? BM_JOURNAL_SYNC_ALWAYS
			          : strcmp(v, "never") == 0 ? BM_JOURNAL_SYNC_NEVER
			                                    : BM_JOURNAL_SYNC_INTERVAL;
			i++;
		} else {
			argv[n++] = argv[i];
		}
	}
	argv[n] = NULL;
	return n;
}

bm_agent_t *
ex_open(const ex_opts_t *o, const char *const *caps)
{
	struct sigaction sa;
	bm_agent_opts_t ao = {.name = o->name, .caps = caps, .dir = o->dir, .sync = o->sync,
	                      .ack_timeout_ms = 1000, .stop = &ex_stop};
	bm_agent_t *a = NULL;
	int rc;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = s_on_signal; /* no SA_RESTART: the poll returns */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* `beast demo` starts us with SIGTERM blocked, so that one sent
	 * before this point waits for the handler: it arrives now. */
	{
		sigset_t term;

		sigemptyset(&term);
		sigaddset(&term, SIGTERM);
		sigprocmask(SIG_UNBLOCK, &term, NULL);
	}
	bm_log_set_ident(o->name);
	while ((rc = bm_agent_open(&ao, &a)) == -EINTR && !ex_stop) {
		/* a signal that does not stop us: try again */
	}
	if (rc == -EINTR) {
		/* Told to stop (SIGTERM) before it had started: nothing to do,
		 * nothing left behind; a clean exit. */
		bm_log(BM_LOG_INFO, "'%s' stopped before it started", o->name);
		exit(0);
	}
	if (rc < 0) {
		bm_log(BM_LOG_ERROR, "cannot start agent '%s': %s", o->name, bm_strerror(rc));
		return NULL;
	}
	return a;
}

static void
s_hist(FILE *f, const char *key, const uint64_t *h)
{
	const char *sep = "";

	fprintf(f, "%s ", key);
	for (int i = 0; i < BM_AGENT_HIST; i++) {
		if (h[i] != 0) {
			fprintf(f, "%s%d:%llu", sep, i, (unsigned long long)h[i]);
			sep = ",";
		}
	}
	fprintf(f, "\n");
}

void
ex_report(bm_agent_t *a, const ex_opts_t *o, ex_extra_fn extra)
{
	bm_agent_send_opts_t so = {.type = "stats.report"};
	bm_agent_stats_t st;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	if (o->report_to == NULL || (f = open_memstream(&buf, &len)) == NULL) {
		return;
	}
	bm_agent_stats(a, &st);
#define S_KV(k) fprintf(f, #k " %llu\n", (unsigned long long)st.k)
	fprintf(f, "name %s\npid %ld\n", bm_agent_name(a), (long)getpid());
	S_KV(sent), S_KV(acked), S_KV(retried), S_KV(dead), S_KV(pending), S_KV(received);
	S_KV(duplicates), S_KV(requests), S_KV(replies), S_KV(timeouts), S_KV(published);
	S_KV(bcasts), S_KV(gaps), S_KV(blobs_sent), S_KV(blob_bytes_sent), S_KV(blobs_received);
	S_KV(blob_bytes_received), S_KV(blob_errors);
#undef S_KV
	s_hist(f, "ack_hist", st.ack_hist);
	s_hist(f, "req_hist", st.req_hist);
	if (extra != NULL) {
		char more[4096] = "";

		extra(a, more, sizeof more);
		fputs(more, f);
	}
	fclose(f);
	(void)bm_agent_send(a, o->report_to, &so, buf, len, NULL);
	free(buf);
}

void
ex_tick(bm_agent_t *a, const ex_opts_t *o, ex_extra_fn extra)
{
	static int64_t next;
	int64_t now = bm_mono_ms();

	if (now >= next) {
		next = now + S_REPORT_MS;
		ex_report(a, o, extra);
	}
}

int
ex_run(bm_agent_t *a, const ex_opts_t *o, ex_extra_fn extra)
{
	while (!bm_agent_stopped(a)) {
		int rc = bm_agent_step(a, S_REPORT_MS);

		if (rc < 0 && rc != -EINTR) {
			bm_log(BM_LOG_ERROR, "agent loop failed: %s", bm_strerror(rc));
			return rc;
		}
		ex_tick(a, o, extra);
	}
	return 0;
}

int
ex_finish(bm_agent_t **a, const ex_opts_t *o, ex_extra_fn extra)
{
	int rc;

	/* A signal ended the run; the drain still has to work. */
	ex_stop = 0;
	rc = bm_agent_drain(*a, S_DRAIN_MS);
	ex_report(*a, o, extra);
	if (bm_agent_drain(*a, S_DRAIN_MS) < 0 || rc < 0) {
		rc = -ETIMEDOUT;
	}
	bm_agent_destroy(a);
	return rc;
}

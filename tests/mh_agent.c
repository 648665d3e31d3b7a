/*
 * mh_agent.c - the agent the multihost suite runs on each host
 * (tests/multihost.sh): it sends COUNT numbered messages to an address
 * through its outbox and handles what others send it, writing one line per
 * handled message ("FROM BODY") to OUT.  Exactly once is checked from those
 * files by the script.
 *
 *   mh-agent --dir DIR --name NAME [--to ADDR --count N] [--expect M]
 *            [--ttl MS] [--attempts N] [--rate PER_S] --out FILE --done FILE
 *
 * With --publish TOPIC it broadcasts COUNT messages on TOPIC instead
 * (paced by --rate); with --subscribe PREFIX it follows PREFIX, writes
 * "TOPIC FROM TSEQ GAP" per broadcast to OUT, creates READY once the
 * subscription is in force, and counts broadcasts outside "tot/warm/"
 * toward --expect.
 *
 * It writes DONE once all of its own messages are settled (ACKed or
 * dead) and it has handled M messages, then keeps serving (a peer may
 * still need an ACK again) until SIGTERM, when it prints its counts as
 * "sent S acked A dead D pending P received R duplicates U" and exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bm_agent.h"

static volatile sig_atomic_t s_stop;
static FILE *s_out;
static uint64_t s_handled;
static uint64_t s_bcasts;

static void
s_on_signal(int sig)
{
	(void)sig;
	s_stop = 1;
}

static int
s_on_msg(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	size_t len;
	const char *body = bm_agent_msg_body(m, &len);

	(void)a;
	(void)arg;
	fprintf(s_out, "%s %.*s\n", m->from, (int)len, body);
	/* On disk before the ACK: a line per handled message. */
	fflush(s_out);
	s_handled++;
	return 0;
}

static void
s_on_bcast(bm_agent_t *a, bm_bcast_t *b, void *arg)
{
	(void)a;
	(void)arg;
	fprintf(s_out, "%s %s %llu %llu\n", b->topic, b->from, (unsigned long long)b->tseq,
	        (unsigned long long)b->gap);
	fflush(s_out);
	if (strncmp(b->topic, "tot/warm/", 9) != 0) {
		s_bcasts++;
	}
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"dir", required_argument, NULL, 'd'},   {"name", required_argument, NULL, 'n'},
		{"to", required_argument, NULL, 't'},    {"count", required_argument, NULL, 'c'},
		{"expect", required_argument, NULL, 'e'}, {"ttl", required_argument, NULL, 'T'},
		{"attempts", required_argument, NULL, 'A'}, {"out", required_argument, NULL, 'o'},
		{"done", required_argument, NULL, 'D'},  {"rate", required_argument, NULL, 'r'},
		{"publish", required_argument, NULL, 'p'}, {"subscribe", required_argument, NULL, 's'},
		{"ready", required_argument, NULL, 'R'},
		{NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *name = NULL, *to = NULL, *out = NULL, *done = NULL;
	const char *publish = NULL, *subscribe = NULL, *ready = NULL;
	long count = 0, expect = 0, sent = 0, rate = 0;
	int64_t t0 = 0;
	bm_agent_send_opts_t so = {0};
	bm_agent_opts_t ao = {0};
	bm_agent_t *a = NULL;
	bm_agent_stats_t st;
	struct sigaction sa;
	bool marked = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'n': name = optarg; break;
		case 't': to = optarg; break;
		case 'c': count = atol(optarg); break;
		case 'e': expect = atol(optarg); break;
		case 'T': so.ttl_ms = (uint32_t)atol(optarg); break;
		case 'A': so.max_attempts = (uint32_t)atol(optarg); break;
		case 'o': out = optarg; break;
		case 'D': done = optarg; break;
		case 'r': rate = atol(optarg); break;
		case 'p': publish = optarg; break;
		case 's': subscribe = optarg; break;
		case 'R': ready = optarg; break;
		default: return 2;
		}
	}
	if (name == NULL || out == NULL || done == NULL ||
	    (count > 0 && to == NULL && publish == NULL)) {
		fprintf(stderr, "mh-agent: --name, --out and --done are required\n");
		return 2;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = s_on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if ((s_out = fopen(out, "a")) == NULL) {
		perror(out);
		return 1;
	}
	ao.name = name;
	ao.dir = dir;
	ao.stop = &s_stop;
	ao.connect_timeout_ms = 10000;
	if ((rc = bm_agent_open(&ao, &a)) < 0) {
		fprintf(stderr, "mh-agent %s: %s\n", name, bm_strerror(rc));
		return 1;
	}
	bm_agent_on_message(a, NULL, s_on_msg, NULL);
	if (subscribe != NULL) {
		if ((rc = bm_agent_subscribe(a, subscribe, s_on_bcast, NULL)) < 0 ||
		    (rc = bm_agent_wait_subscribed(a, 10000)) < 0) {
			fprintf(stderr, "mh-agent %s: subscribe: %s\n", name, bm_strerror(rc));
			return 1;
		}
		if (ready != NULL) {
			int fd = open(ready, O_WRONLY | O_CREAT | O_TRUNC, 0600);

			if (fd >= 0) {
				close(fd);
			}
		}
	}
	while (!s_stop) {
		char body[64];

		/* Sends in slices so the loop keeps handling meanwhile; with
		 * --rate, no faster than that many per second. */
		long allowed = count;

		if (rate > 0) {
			if (t0 == 0) {
				t0 = bm_mono_ms();
			}
			allowed = (long)((bm_mono_ms() - t0) * rate / 1000) + 1;
		}
		for (int i = 0; i < 512 && sent < count && sent < allowed; i++) {
			snprintf(body, sizeof body, "%s:%ld", name, sent);
			if (publish != NULL) {
				snprintf(body, sizeof body, "%ld", sent);
				rc = bm_agent_publish(a, publish, body, strlen(body));
			} else {
				rc = bm_agent_send(a, to, &so, body, strlen(body), NULL);
			}
			if (rc == BM_EFULL) {
				break;
			}
			if (rc < 0) {
				fprintf(stderr, "mh-agent %s: send: %s\n", name, bm_strerror(rc));
				return 1;
			}
			sent++;
		}
		rc = bm_agent_step(a, 50);
		if (rc < 0 && rc != -EINTR) {
			fprintf(stderr, "mh-agent %s: %s\n", name, bm_strerror(rc));
			break;
		}
		bm_agent_stats(a, &st);
		if (!marked && sent == count && st.pending == 0 &&
		    (long)(subscribe != NULL ? s_bcasts : s_handled) >= expect) {
			int fd = open(done, O_WRONLY | O_CREAT | O_TRUNC, 0600);

			if (fd >= 0) {
				close(fd);
			}
			marked = true;
		}
	}
	bm_agent_flush(a);
	bm_agent_stats(a, &st);
	printf("sent %llu acked %llu dead %llu pending %llu received %llu duplicates %llu\n",
	       (unsigned long long)st.sent, (unsigned long long)st.acked,
	       (unsigned long long)st.dead, (unsigned long long)st.pending,
	       (unsigned long long)st.received, (unsigned long long)st.duplicates);
	bm_agent_destroy(&a);
	fclose(s_out);
	return 0;
}

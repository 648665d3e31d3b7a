/*
 * beast_bridge.c - main() of beast-bridge: parses arguments, sets up
 * signals and runs the bridge (agents/bridge.c; docs/multihost.md).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bm_agent.h"
#include "bm_bridge.h"

static volatile sig_atomic_t s_stop;

static void
s_on_signal(int sig)
{
	(void)sig;
	s_stop = 1;
}

static void
s_usage(FILE *out)
{
	fputs("usage: beast-bridge --host NAME [--nats URL] [--dir DIR] [--name NAME]\n"
	      "                    [--ack-wait MS] [--directory-domain DOMAIN] [--topics P,P] [-v]\n"
	      "Carries this host's messages to name@host addresses on other hosts, and theirs\n"
	      "to agents here, through the host's leaf nats-server with JetStream.\n"
	      "  --host NAME     this host's name ([A-Za-z0-9_-]{1,32}); the leaf's JetStream domain\n"
	      "  --nats URL      the leaf nats-server (default nats://127.0.0.1:4222)\n"
	      "  --dir DIR       beastd's runtime directory (default as beastd)\n"
	      "  --name NAME     mesh agent name (default bridge); capability 'bridge'\n"
	      "  --ack-wait MS   redeliver a message a local agent has not answered (10000)\n"
	      "  --directory-domain DOMAIN  JetStream domain of the shared directory (hub)\n"
	      "  --topics P,P    broadcast prefixes shared with the other hosts (e.g. tot/)\n"
	      "  -v              log start and stop (-vv more)\n"
	      "  --version       print \"beast-bridge beastmesh VERSION\" and exit\n"
	      "See docs/multihost.md.  Exit: 0 after SIGINT/SIGTERM, 1 error, 2 usage.\n",
	      out);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"host", required_argument, NULL, 'H'},  {"nats", required_argument, NULL, 'n'},
		{"dir", required_argument, NULL, 'd'},   {"name", required_argument, NULL, 'N'},
		{"ack-wait", required_argument, NULL, 'a'}, {"help", no_argument, NULL, 'h'},
		{"directory-domain", required_argument, NULL, 'D'},
		{"topics", required_argument, NULL, 't'},
		{"version", no_argument, NULL, 'V'},
		{"verbose", no_argument, NULL, 'v'},     {NULL, 0, NULL, 0},
	};
	bm_bridge_opts_t o = {.nats_url = "nats://127.0.0.1:4222"};
	bm_bridge_t *b = NULL;
	struct sigaction sa;
	int c, rc;

	while ((c = getopt_long(argc, argv, "hv", longopts, NULL)) != -1) {
		switch (c) {
		case 'H':
			o.host = optarg;
			break;
		case 'n':
			o.nats_url = optarg;
			break;
		case 'd':
			o.dir = optarg;
			break;
		case 'N':
			o.name = optarg;
			break;
		case 'a':
			o.ack_wait_ms = strtoll(optarg, NULL, 10);
			break;
		case 'D':
			o.dir_domain = optarg;
			break;
		case 't':
			o.topics = optarg;
			break;
		case 'v':
			o.verbose++;
			break;
		case 'h':
			s_usage(stdout);
			return 0;
		case 'V':
			printf("beast-bridge beastmesh %s\n", bm_version());
			return 0;
		default:
			s_usage(stderr);
			return 2;
		}
	}
	if (o.host == NULL || bm_host_check(o.host) < 0 || optind != argc ||
	    (o.name != NULL && bm_name_check(o.name) < 0)) {
		fprintf(stderr, "beast-bridge: --host NAME is required ([A-Za-z0-9_-]{1,32})\n");
		s_usage(stderr);
		return 2;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = s_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((rc = bm_bridge_open(&o, &b)) < 0) {
		fprintf(stderr, "beast-bridge: cannot start on host %s: %s\n", o.host,
		        bm_strerror(rc));
		return 1;
	}
	rc = bm_bridge_run(b, &s_stop);
	if (o.verbose > 0) {
		bm_bridge_stats_t st;

		bm_bridge_stats(b, &st);
		fprintf(stderr,
		        "beast-bridge[%s]: stopping: out %llu in %llu acked %llu nacked %llu "
		        "acks back %llu nacks back %llu publish failed %llu topics out %llu in %llu "
		        "dropped %llu\n",
		        o.host, (unsigned long long)st.out, (unsigned long long)st.in,
		        (unsigned long long)st.acked, (unsigned long long)st.nacked,
		        (unsigned long long)st.acks_back, (unsigned long long)st.nacks_back,
		        (unsigned long long)st.publish_failed, (unsigned long long)st.topics_out,
		        (unsigned long long)st.topics_in, (unsigned long long)st.topics_dropped);
	}
	bm_bridge_destroy(&b);
	return rc < 0 ? 1 : 0;
}

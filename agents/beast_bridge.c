/*
 * beast_bridge.c - main() of beast-bridge: parses arguments, sets up
 * signals and runs the bridge (agents/bridge.c; docs/multihost.md).
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
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
	      "       beast-bridge init hub|leaf ...   print a nats-server config (init --help)\n"
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

/* ---- beast-bridge init: the nats-server configs of docs/multihost.md ---- */

static void
s_init_usage(FILE *out)
{
	fputs("usage: beast-bridge init hub --leaf-listen ADDR:PORT --store DIR [--listen ADDR:PORT]\n"
	      "       beast-bridge init leaf --host NAME --hub ADDR:PORT[,ADDR:PORT...] --store DIR\n"
	      "                              [--listen ADDR:PORT]\n"
	      "Prints a nats-server config for the hub or for one host's leaf (docs/multihost.md).\n"
	      "  --leaf-listen ADDR:PORT  where the hub takes the leaves' connections (no default:\n"
	      "                           nothing listens beyond the addresses given)\n"
	      "  --hub ADDR:PORT,...      the hub's leafnode address(es); several for a cluster\n"
	      "  --store DIR              JetStream's directory\n"
	      "  --listen ADDR:PORT       client port (default 127.0.0.1:4222)\n"
	      "Exit: 0, 2 usage.\n",
	      out);
}

/* ADDR:PORT with a port 1..65535 and an address of [A-Za-z0-9.:[]-]. */
static bool
s_hostport_ok(const char *s)
{
	const char *colon = s ? strrchr(s, ':') : NULL;
	char *end;
	long port;

	if (colon == NULL || colon == s || strlen(s) > 255) {
		return false;
	}
	for (const char *p = s; p < colon; p++) {
		if (!(isalnum((unsigned char)*p) || strchr(".:[]-", *p) != NULL)) {
			return false;
		}
	}
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	return errno == 0 && *end == '\0' && end != colon + 1 && port > 0 && port < 65536;
}

static int
s_init(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"host", required_argument, NULL, 'H'},   {"hub", required_argument, NULL, 'u'},
		{"store", required_argument, NULL, 's'},  {"listen", required_argument, NULL, 'l'},
		{"leaf-listen", required_argument, NULL, 'L'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *role = argc > 1 ? argv[1] : "", *host = NULL, *hub = NULL, *store = NULL;
	const char *listen = "127.0.0.1:4222", *leaf_listen = NULL;
	char hubs[1024], *tok, *save = NULL;
	bool is_hub = strcmp(role, "hub") == 0;
	int c;

	if (!is_hub && strcmp(role, "leaf") != 0) {
		s_init_usage(strcmp(role, "--help") == 0 || strcmp(role, "-h") == 0 ? stdout : stderr);
		return strcmp(role, "--help") == 0 || strcmp(role, "-h") == 0 ? 0 : 2;
	}
	optind = 2;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'H':
			host = optarg;
			break;
		case 'u':
			hub = optarg;
			break;
		case 's':
			store = optarg;
			break;
		case 'l':
			listen = optarg;
			break;
		case 'L':
			leaf_listen = optarg;
			break;
		case 'h':
			s_init_usage(stdout);
			return 0;
		default:
			s_init_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		s_init_usage(stderr);
		return 2;
	}
	if (store == NULL || store[0] == '\0' || strpbrk(store, "\"\\\n") != NULL) {
		fprintf(stderr, "beast-bridge init: --store DIR is required (no quotes, backslashes or "
		                "newlines)\n");
		return 2;
	}
	if (!s_hostport_ok(listen)) {
		fprintf(stderr, "beast-bridge init: --listen wants ADDR:PORT, not '%s'\n", listen);
		return 2;
	}
	if (is_hub) {
		if (!s_hostport_ok(leaf_listen) || host != NULL || hub != NULL) {
			fprintf(stderr, "beast-bridge init hub: --leaf-listen ADDR:PORT is required; --host "
			                "and --hub are for a leaf\n");
			return 2;
		}
		printf("# nats-server config of the hub (beast-bridge init hub; docs/multihost.md)\n"
		       "server_name: hub\n"
		       "listen: %s\n"
		       "jetstream { store_dir: \"%s\", domain: hub }\n"
		       "leafnodes { listen: %s }\n",
		       listen, store, leaf_listen);
		return 0;
	}
	if (host == NULL || bm_host_check(host) < 0 || hub == NULL || leaf_listen != NULL ||
	    strlen(hub) >= sizeof hubs) {
		fprintf(stderr, "beast-bridge init leaf: --host NAME ([A-Za-z0-9_-]{1,32}) and --hub "
		                "ADDR:PORT are required; --leaf-listen is for the hub\n");
		return 2;
	}
	snprintf(hubs, sizeof hubs, "%s", hub);
	for (tok = strtok_r(hubs, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (!s_hostport_ok(tok)) {
			fprintf(stderr, "beast-bridge init leaf: --hub wants ADDR:PORT, not '%s'\n", tok);
			return 2;
		}
	}
	printf("# nats-server config of host %s's leaf (beast-bridge init leaf; docs/multihost.md)\n"
	       "# then: beastd & beast-bridge --host %s --nats nats://%s &\n"
	       "server_name: %s\n"
	       "listen: %s\n"
	       "jetstream { store_dir: \"%s\", domain: %s }\n"
	       "leafnodes { remotes [ { urls: [",
	       host, host, listen, host, listen, store, host);
	snprintf(hubs, sizeof hubs, "%s", hub);
	save = NULL;
	for (tok = strtok_r(hubs, ",", &save), c = 0; tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		printf("%s\"nats-leaf://%s\"", c++ ? ", " : "", tok);
	}
	printf("] } ] }\n");
	return 0;
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

	if (argc > 1 && strcmp(argv[1], "init") == 0) {
		return s_init(argc - 1, argv + 1);
	}
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

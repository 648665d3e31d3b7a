/*
 * beast - the swarm's command-line tool.  Parses the global options (--dir,
 * and --connect/--key/--server-key for a remote beastd over CURVE), picks
 * the subcommand and hands over; the subcommands live in cli_*.c.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_blob.h"

/* `beast bench ARGS` runs beast-bench, found next to this binary (or in the
 * build tree's bench/), else on PATH; beast itself links no bench peer. */
static int
s_bench(int argc, char **argv, const char *dir)
{
	char self[PATH_MAX], path[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	(void)argc;
	(void)dir;
	argv[0] = "beast-bench";
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash)
			*slash = '\0';
		snprintf(path, sizeof path, "%s/beast-bench", self);
		execv(path, argv);
		snprintf(path, sizeof path, "%s/../bench/beast-bench", self);
		execv(path, argv);
	}
	execvp("beast-bench", argv);
	fprintf(stderr, "beast: cannot run beast-bench (not next to beast, not on PATH)\n");
	return BM_EXIT_FAIL;
}

static int
s_version(void)
{
	printf("beast beastmesh %s\n", bm_version());
	return BM_EXIT_OK;
}

/* Whether a subcommand's options (up to a "--") hold --version. */
static bool
s_asks_version(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--version") == 0) {
			return true;
		}
	}
	return false;
}

typedef struct {
	const char *name;                                /* subcommand */
	int (*run)(int argc, char **argv, const char *dir); /* its entry */
	const char *summary;                             /* one line */
} s_cmd_t;

static const s_cmd_t s_cmds[] = {
	{"ls", bm_cli_ls, "list the agents online"},
	{"send", bm_cli_send, "send a message and wait for its ACK"},
	{"listen", bm_cli_listen, "register a name and print what it receives"},
	{"echo", bm_cli_echo, "register a name that answers every request with its body"},
	{"request", bm_cli_request, "send a request and print the reply"},
	{"stats", bm_cli_stats, "print beastd's counters"},
	{"ping", bm_cli_ping, "check that beastd answers"},
	{"pub", bm_cli_pub, "broadcast a message on a topic (thought path)"},
	{"sub", bm_cli_sub, "follow topics by prefix and print each broadcast"},
	{"tap", bm_cli_tap, "print the live broadcast traffic through beastd"},
	{"proxy", bm_cli_proxy, "pause, resume or show beastd's broadcast proxy"},
	{"blob", bm_cli_blob, "move files through shared memory (blob send / blob recv)"},
	{"demo", bm_cli_demo, "run the example swarm with live progress and a checked summary"},
	{"keygen", bm_cli_keygen, "make a CURVE key pair (NAME.key, NAME.pub) for TCP"},
	{"bench", s_bench, "measure transports side by side (runs beast-bench)"},
	{"outbox", bm_cli_outbox, "an agent's pending and dead messages (ls, dead, requeue, flush ...)"},
	{"trace", bm_cli_trace, "a message's timeline: outbox, beastd, receiver"},
	{"top", bm_cli_top, "the swarm live: agents, rates, outboxes, topics, blobs"},
};

static void
s_usage(FILE *out)
{
	fprintf(out, "usage: beast [--dir DIR] [--connect EP] [--pub-connect EP] [--sub-connect EP]\n"
	             "             [--key FILE --server-key FILE]\n"
	             "             COMMAND [ARGS]   (beast COMMAND --help for more)\n"
	             "       beast --version\n\n");
	for (size_t i = 0; i < sizeof s_cmds / sizeof s_cmds[0]; i++) {
		fprintf(out, "  %-8s %s\n", s_cmds[i].name, s_cmds[i].summary);
	}
	fprintf(out, "\n--connect tcp://HOST:PORT reaches a remote beastd (beastd --tcp EP --curve);\n"
	             "--pub-connect/--sub-connect reach its --pub-tcp/--sub-tcp (beast pub, beast sub);\n"
	             "--key is your NAME.key (beast keygen), --server-key beastd's server.pub.\n"
	             "DIR defaults to $BEAST_DIR, else $XDG_RUNTIME_DIR/beast, else /tmp/beast-$UID.\n"
	             "Exit status: 0 ok, 1 failure, 2 usage, 3 timeout, 4 beastd not running.\n");
}

int
main(int argc, char **argv)
{
	const char *dir = NULL;
	int i = 1;

	bm_log_set_ident("beast");
	bm_cli_blob_announce = bm_cli_blob_mesh_announce;
	while (i < argc && strncmp(argv[i], "--", 2) == 0 && strcmp(argv[i], "--help") != 0 &&
	       strcmp(argv[i], "--version") != 0) {
		static const char *const names[] = {"--dir", "--connect", "--key", "--server-key",
		                                    "--pub-connect", "--sub-connect"};
		const char **slot[] = {&dir, &bm_cli_connect, &bm_cli_key, &bm_cli_server_key,
		                       &bm_cli_pub_connect, &bm_cli_sub_connect};
		size_t k, n = 0;

		for (k = 0; k < 6; k++) {
			n = strlen(names[k]);
			if (strncmp(argv[i], names[k], n) == 0 && (argv[i][n] == '\0' || argv[i][n] == '=')) {
				break;
			}
		}
		if (k == 6 || (argv[i][n] == '\0' && i + 1 >= argc)) {
			s_usage(stderr);
			return BM_EXIT_USAGE;
		}
		if (argv[i][n] == '=') {
			*slot[k] = argv[i] + n + 1;
			i++;
		} else {
			*slot[k] = argv[i + 1];
			i += 2;
		}
	}
	if ((bm_cli_key == NULL) != (bm_cli_server_key == NULL) ||
	    (bm_cli_key != NULL && bm_cli_connect == NULL && bm_cli_pub_connect == NULL &&
	     bm_cli_sub_connect == NULL)) {
		fprintf(stderr, "beast: --key and --server-key go together, with --connect "
		                "(or --pub-connect/--sub-connect) tcp://HOST:PORT\n");
		return BM_EXIT_USAGE;
	}
	if (i >= argc) {
		s_usage(stderr);
		return BM_EXIT_USAGE;
	}
	if (strcmp(argv[i], "--version") == 0) {
		return s_version();
	}
	if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ||
	    strcmp(argv[i], "help") == 0) {
		s_usage(stdout);
		return BM_EXIT_OK;
	}
	for (size_t k = 0; k < sizeof s_cmds / sizeof s_cmds[0]; k++) {
		if (strcmp(argv[i], s_cmds[k].name) == 0) {
			/* beast CMD --version: answered here for every subcommand
			 * but bench, whose program answers for itself. */
			if (s_cmds[k].run != s_bench && s_asks_version(argc - i, argv + i)) {
				return s_version();
			}
			return s_cmds[k].run(argc - i, argv + i, dir);
		}
	}
	fprintf(stderr, "beast: unknown command '%s'\n\n", argv[i]);
	s_usage(stderr);
	return BM_EXIT_USAGE;
}

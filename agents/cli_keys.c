/*
 * cli_keys.c - `beast keygen`: makes a CURVE key pair for TCP.
 *
 * NAME.key (public + secret, 0600) stays with the agent that uses it
 * (`--key NAME.key`); NAME.pub goes into beastd's allow-list directory.
 * Both carry name=NAME: beastd lets that key register that name only.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char s_help[] =
	"usage: beast keygen [--out DIR] NAME\n"
	"\n"
	"Writes DIR/NAME.key (public + secret key, mode 0600) and DIR/NAME.pub (public\n"
	"key), both with name=NAME; never overwrites.  DIR defaults to STATE/keys\n"
	"(STATE: $BEAST_STATE, else $XDG_STATE_HOME/beast, else ~/.local/state/beast).\n"
	"\n"
	"Copy NAME.pub into beastd's allow-list (--allow DIR, default STATE/keys/allowed/)\n"
	"and run the agent with --key DIR/NAME.key --server-key SERVER.pub.\n";

int
bm_cli_keygen(int argc, char **argv, const char *dir)
{
	static const struct option longopts[] = {
		{"out", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	char keydir[BM_PATH_MAX];
	const char *out = NULL, *name;
	int c, rc;

	(void)dir;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'h':
			fputs(s_help, stdout);
			return BM_EXIT_OK;
		default:
			fputs(s_help, stderr);
			return BM_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		fputs(s_help, stderr);
		return BM_EXIT_USAGE;
	}
	name = argv[optind];
	if (bm_name_check(name) < 0) {
		return bm_cli_fail("keygen", BM_EBADNAME, NULL, name);
	}
	if (out == NULL) {
		if ((rc = bm_curve_keydir(keydir)) < 0) {
			fprintf(stderr, "beast keygen: no state directory: %s (set BEAST_STATE or use --out)\n",
			        bm_strerror(rc));
			return BM_EXIT_FAIL;
		}
		out = keydir;
	}
	rc = bm_curve_keygen(out, name);
	if (rc == -EEXIST) {
		fprintf(stderr, "beast keygen: %s/%s.key already exists; not overwriting it\n", out, name);
		return BM_EXIT_FAIL;
	}
	if (rc < 0) {
		fprintf(stderr, "beast keygen: cannot write %s/%s.key: %s\n", out, name, bm_strerror(rc));
		return BM_EXIT_FAIL;
	}
	printf("%s/%s.key\n%s/%s.pub\n", out, name, out, name);
	return BM_EXIT_OK;
}

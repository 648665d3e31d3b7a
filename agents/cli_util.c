/*
 * cli_util.c - helpers shared by the beast subcommands: error reporting
 * that names the way out, stdin bodies, JSON output.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"

volatile sig_atomic_t bm_cli_stop;

static void
s_on_signal(int sig)
{
	(void)sig;
	bm_cli_stop = 1;
}

void
bm_cli_signals(void)
{
	struct sigaction sa = {.sa_handler = s_on_signal};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int
bm_cli_fail(const char *cmd, int err, const char *dir, const char *what)
{
	char path[BM_PATH_MAX];

	if (bm_rundir_resolve(dir, false, path) < 0) {
		snprintf(path, sizeof path, "%s", dir ? dir : "the runtime directory");
	}
	switch (err) {
	case BM_ENOBROKER:
		fprintf(stderr, "beast %s: beastd is not running in %s — start it with `beastd%s%s`\n",
		        cmd, path, dir ? " --dir " : "", dir ? dir : "");
		return BM_EXIT_NOBROKER;
	case BM_EUNSAFEDIR:
		fprintf(stderr, "beast %s: %s is not private to you (it must be yours, mode 0700)\n", cmd,
		        path);
		return BM_EXIT_FAIL;
	case BM_ENAMETAKEN:
		fprintf(stderr, "beast %s: the name '%s' is held by a live agent — pick another "
		                "(beast ls lists agents)\n",
		        cmd, what ? what : "?");
		return BM_EXIT_FAIL;
	case BM_EBADNAME:
		fprintf(stderr, "beast %s: '%s' is not a valid name (letters, digits, '.', '_', '-'; "
		                "at most %d)\n",
		        cmd, what ? what : "?", BM_NAME_MAX);
		return BM_EXIT_USAGE;
	case BM_ENOAGENT:
		if (what != NULL && what[0] == '@') {
			fprintf(stderr, "beast %s: no agent with capability '%s' is online "
			                "(beast ls lists agents)\n",
			        cmd, what + 1);
		} else {
			fprintf(stderr, "beast %s: no agent named '%s' is online (beast ls lists agents)\n",
			        cmd, what ? what : "?");
		}
		return BM_EXIT_FAIL;
	case BM_ENOCURVE:
		fprintf(stderr, "beast %s: no answer over CURVE from %s: wrong server key or not in "
		                "the allow-list? (beastd --allow DIR must hold your .pub)\n",
		        cmd, bm_cli_connect ? bm_cli_connect : "beastd");
		return BM_EXIT_NOBROKER;
	case BM_EBADKEY:
		fprintf(stderr, "beast %s: key file %s or %s is missing, not a key, or readable by "
		                "group/others (chmod 600 it; beast keygen makes a pair)\n",
		        cmd, bm_cli_key ? bm_cli_key : "(none)",
		        bm_cli_server_key ? bm_cli_server_key : "(none)");
		return BM_EXIT_FAIL;
	case BM_EDENIED:
		fprintf(stderr, "beast %s: beastd refused the name '%s' for this key (a key may only "
		                "register the name written in its certificate)\n",
		        cmd, what ? what : "?");
		return BM_EXIT_FAIL;
	case -ETIMEDOUT:
		fprintf(stderr, "beast %s: timed out waiting for %s\n", cmd, what ? what : "an answer");
		return BM_EXIT_TIMEOUT;
	default:
		fprintf(stderr, "beast %s: %s%s%s\n", cmd, what ? what : "", what ? ": " : "",
		        bm_strerror(err));
		return BM_EXIT_FAIL;
	}
}

static int
s_split_caps(char *csv, const char **caps, int max)
{
	int n = 0;

	for (char *save = NULL, *t = strtok_r(csv, ",", &save); t != NULL;
	     t = strtok_r(NULL, ",", &save)) {
		if (n >= max) {
			return -1;
		}
		caps[n++] = t;
	}
	caps[n] = NULL;
	return n;
}

const char *bm_cli_connect;
const char *bm_cli_key;
const char *bm_cli_server_key;
const char *bm_cli_pub_connect;
const char *bm_cli_sub_connect;

void
bm_cli_remote(bm_client_opts_t *o)
{
	if (bm_cli_connect != NULL) {
		o->endpoint = bm_cli_connect;
	}
	o->key_file = bm_cli_key;
	o->server_key_file = bm_cli_server_key;
}

int
bm_cli_open(const char *cmd, const char *dir, const char *name, const char *caps_csv,
            bm_client_t **ret_client)
{
	const char *caps[BM_CAPS_MAX + 1] = {NULL};
	char csv[BM_CAPS_MAX * (BM_CAP_MAX + 1) + 1];
	bm_client_opts_t o = {.dir = dir, .name = name, .caps = caps};
	int rc;

	if (caps_csv != NULL) {
		if (strlen(caps_csv) >= sizeof csv) {
			fprintf(stderr, "beast %s: --caps is too long\n", cmd);
			return -BM_EXIT_USAGE;
		}
		strcpy(csv, caps_csv);
		if (s_split_caps(csv, caps, BM_CAPS_MAX) < 0) {
			fprintf(stderr, "beast %s: at most %d capabilities\n", cmd, BM_CAPS_MAX);
			return -BM_EXIT_USAGE;
		}
		for (int i = 0; caps[i] != NULL; i++) {
			if (bm_cap_check(caps[i]) < 0) {
				fprintf(stderr, "beast %s: '%s' is not a valid capability\n", cmd, caps[i]);
				return -BM_EXIT_USAGE;
			}
		}
	}
	bm_cli_remote(&o);
	rc = bm_client_open(&o, ret_client);
	if (rc < 0) {
		return -bm_cli_fail(cmd, rc, dir, name);
	}
	return 0;
}

int
bm_cli_read_stdin(size_t max, char **ret_buf, size_t *ret_len)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);

	if (buf == NULL) {
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *nb;

			if (cap > max) {
				free(buf);
				return BM_ETOOBIG;
			}
			nb = realloc(buf, cap * 2);
			if (nb == NULL) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		n = read(STDIN_FILENO, buf + len, cap - len);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0) {
			free(buf);
			return -errno;
		}
		if (n == 0) {
			break;
		}
		len += (size_t)n;
	}
	if (len > max) {
		free(buf);
		return BM_ETOOBIG;
	}
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

/* Length of a valid UTF-8 sequence starting at p, or 0. */
static size_t
s_utf8_len(const unsigned char *p, size_t left)
{
	size_t n;

	if (p[0] < 0x80) {
		return 1;
	}
	if ((p[0] & 0xe0) == 0xc0 && p[0] >= 0xc2) {
		n = 2;
	} else if ((p[0] & 0xf0) == 0xe0) {
		n = 3;
	} else if ((p[0] & 0xf8) == 0xf0 && p[0] <= 0xf4) {
		n = 4;
	} else {
		return 0;
	}
	if (n > left) {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80) {
			return 0;
		}
	}
	return n;
}

static bool
s_is_utf8(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len;) {
		size_t n = s_utf8_len(p + i, len - i);

		if (n == 0) {
			return false;
		}
		i += n;
	}
	return true;
}

void
bm_cli_json_str(FILE *out, const char *s, size_t len)
{
	fputc('"', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		switch (ch) {
		case '"':
			fputs("\\\"", out);
			break;
		case '\\':
			fputs("\\\\", out);
			break;
		case '\n':
			fputs("\\n", out);
			break;
		case '\r':
			fputs("\\r", out);
			break;
		case '\t':
			fputs("\\t", out);
			break;
		default:
			if (ch < 0x20 || ch == 0x7f) {
				fprintf(out, "\\u%04x", ch);
			} else {
				fputc(ch, out);
			}
		}
	}
	fputc('"', out);
}

void
bm_cli_json_body(FILE *out, const void *p, size_t len)
{
	if (s_is_utf8(p, len)) {
		fputs("\"body\":", out);
		bm_cli_json_str(out, p, len);
		return;
	}
	{
		size_t b64len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
		char *b64 = malloc(b64len);

		fputs("\"body\":null,\"body_b64\":", out);
		if (b64 == NULL) {
			fputs("null", out);
			return;
		}
		sodium_bin2base64(b64, b64len, p, len, sodium_base64_VARIANT_ORIGINAL);
		bm_cli_json_str(out, b64, strlen(b64));
		free(b64);
	}
}

long
bm_cli_num(const char *s, long min, long max)
{
	long v;

	return bm_parse_long(s, min, max, &v) == 0 ? v : -1;
}

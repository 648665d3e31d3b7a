/*
 * cli.h - what the `beast` subcommands share: exit codes, argument and
 * output helpers.  Internal to the beast program.
 */
#ifndef BM_CLI_H
#define BM_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "bm_mesh.h"

/* Exit codes of every beast command (README.md lists them). */
enum {
	BM_EXIT_OK = 0,        /* done */
	BM_EXIT_FAIL = 1,      /* refused, not delivered, or an error */
	BM_EXIT_USAGE = 2,     /* bad arguments */
	BM_EXIT_TIMEOUT = 3,   /* no answer in time */
	BM_EXIT_NOBROKER = 4,  /* beastd is not running */
};

extern volatile sig_atomic_t bm_cli_stop;

/* Global --connect ENDPOINT, --key FILE, --server-key FILE (NULL = ipc in
 * the runtime dir, as always). */
extern const char *bm_cli_connect;
extern const char *bm_cli_key;
extern const char *bm_cli_server_key;
/* Global --pub-connect / --sub-connect: the broadcast proxy's tcp endpoints
 * for beast pub and beast sub (with --key/--server-key under CURVE). */
extern const char *bm_cli_pub_connect;
extern const char *bm_cli_sub_connect;
/* Puts the global --connect/--key/--server-key into client options. */
void bm_cli_remote(bm_client_opts_t *o);

/* Installs SIGINT/SIGTERM handlers that set bm_cli_stop. */
void bm_cli_signals(void);
/* Prints "beast CMD: TEXT" for err to stderr and returns the exit code. */
int bm_cli_fail(const char *cmd, int err, const char *dir, const char *what);
/* Opens a client; on failure prints why and returns -exitcode. */
int bm_cli_open(const char *cmd, const char *dir, const char *name, const char *caps_csv,
                bm_client_t **ret_client);
/* Reads all of stdin (at most max bytes) into a malloc'd buffer. */
int bm_cli_read_stdin(size_t max, char **ret_buf, size_t *ret_len);
/* Writes s as a JSON string literal (with quotes). */
void bm_cli_json_str(FILE *out, const char *s, size_t len);
/* Writes a body as "body": "…" (UTF-8) or "body_b64": "…" (binary). */
void bm_cli_json_body(FILE *out, const void *p, size_t len);
/* Parses a positive int option or returns -1. */
long bm_cli_num(const char *s, long min, long max);

/* Outbox and de-dup state (cli_outbox.c).  Path of STATE/NAME[/what]
 * (created 0700 with create); -ENOENT when there is no HOME to default to. */
int bm_cli_state_path(const char *name, const char *what, bool create, char *out, size_t cap);
/* Prints why a journal did not open; returns the exit code. */
int bm_cli_journal_fail(const char *cmd, const char *name, const char *path, int err,
                        const bm_journal_report_t *rep);
/* Opens NAME's outbox (sending through c, which may be NULL); on failure
 * prints why and returns -exitcode. */
int bm_cli_outbox_open(const char *cmd, const char *name, bm_client_t *c,
                       const bm_outbox_opts_t *tmpl, bm_outbox_t **ret);

int bm_cli_ls(int argc, char **argv, const char *dir);
int bm_cli_send(int argc, char **argv, const char *dir);
int bm_cli_listen(int argc, char **argv, const char *dir);
int bm_cli_echo(int argc, char **argv, const char *dir);
int bm_cli_request(int argc, char **argv, const char *dir);
int bm_cli_stats(int argc, char **argv, const char *dir);
int bm_cli_ping(int argc, char **argv, const char *dir);
int bm_cli_pub(int argc, char **argv, const char *dir);
int bm_cli_sub(int argc, char **argv, const char *dir);
int bm_cli_tap(int argc, char **argv, const char *dir);
int bm_cli_proxy(int argc, char **argv, const char *dir);
int bm_cli_outbox(int argc, char **argv, const char *dir);
int bm_cli_demo(int argc, char **argv, const char *dir);
int bm_cli_keygen(int argc, char **argv, const char *dir);
int bm_cli_trace(int argc, char **argv, const char *dir);
int bm_cli_top(int argc, char **argv, const char *dir);
/* Prints message id's timeline (cli_trace.c); sender and receiver may be
 * NULL (found in beastd's events).  Returns the exit code. */
int bm_cli_trace_print(const char *dir, const bm_id_t *id, const char *sender,
                       const char *receiver, bool json);

#endif

/*
 * cli_blob.h - `beast blob recv|send`: files over the bulk channel.  Needs
 * no beastd: the two ends meet on $BEAST_DIR/shm/<name>.sock.
 */
#ifndef BM_CLI_BLOB_H
#define BM_CLI_BLOB_H

/*
 * Runs `beast blob ...`; argv[0] is "blob".  dir is the --dir value or NULL
 * (resolved as bm_rundir_resolve() does).  Returns the exit code: 0 ok,
 * 1 failure, 2 usage.  Prints results to stdout and errors to stderr.
 */
int bm_cli_blob(int argc, char **argv, const char *dir);

#endif

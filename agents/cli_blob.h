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

/*
 * Optional announcement over the mesh, called by `blob send` before each
 * blob: tells the mesh agent named `to` what is coming (name, size, content
 * type) and on which channel.  Best effort: returns 0 when the receiver
 * ACKed it, a negative code when there is no beastd or no such mesh agent.
 * NULL (the default) announces nothing; the beast program sets it, so the
 * bulk channel itself never needs the mesh.
 */
typedef int (*bm_cli_blob_announce_fn)(const char *dir, const char *as, const char *to,
                                       const char *name, unsigned long long size,
                                       const char *content);
extern bm_cli_blob_announce_fn bm_cli_blob_announce;

/* The mesh implementation (cli_announce.c, linked into beast only). */
int bm_cli_blob_mesh_announce(const char *dir, const char *as, const char *to, const char *name,
                              unsigned long long size, const char *content);

#endif

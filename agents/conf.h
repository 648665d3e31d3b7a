/*
 * conf.h - the `key = value` configuration files of beastmesh's programs
 * (beastd --config FILE).  Internal to the programs; libc only.
 */
#ifndef BM_CONF_H
#define BM_CONF_H

/*
 * Called for each setting, in file order, with the key and the value
 * (both trimmed, value possibly "") and the 1-based line number.  Returns
 * 0 to go on, or < 0 to stop: bm_conf_load then returns that value.
 */
typedef int(bm_conf_fn)(void *arg, const char *key, const char *value, int line);

/*
 * Reads path: one `key = value` per line; blank lines and lines whose
 * first non-blank character is '#' are skipped; spaces and tabs around
 * key and value are dropped; a value may be wrapped in double quotes
 * (kept verbatim inside them).  Keys are [a-z0-9-]+.
 *
 * The strings handed to fn point into one buffer that stays valid after
 * the call: it is returned in *ret_buf (on success and on failure, NULL
 * when nothing was read) and the caller frees it.  Returns 0; -errno when
 * the file cannot be read; -EINVAL on a malformed line (no '=', a bad key,
 * an unterminated quote, a NUL byte) with its number in *ret_line; or what
 * fn returned, with the line in *ret_line.
 */
int bm_conf_load(const char *path, bm_conf_fn *fn, void *arg, char **ret_buf, int *ret_line);

#endif

/*
 * bm_common.h - what every floor of beastmesh shares: the export macro,
 * error codes, logging, clocks and the runtime directory.
 *
 * Errors: every function that can fail returns an int, >= 0 on success (it
 * may be a count) and a negative value on failure: either -errno or one of
 * the BM_E* codes below.  BM_E* sit in their own negative band, far from
 * errno values and from libzmq's (which start at 156384712), so one int says
 * it all and bm_strerror() names any of them.
 *
 * Logging: libraries log at debug level only; programs (beastd, beast) pick
 * the level and log an error once, where they handle it.
 *
 * This header is libc-only: it is the ground floor (common/) every other
 * floor, shm/ included, builds on.
 */
#ifndef BM_COMMON_H
#define BM_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BM_EXPORT __attribute__((visibility("default")))
#define BM_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* X(NAME, text): one list makes the enum, bm_strerror() and bm_err_name(). */
#define BM_ERROR_LIST(X)                                                      \
	X(PROTO, "malformed or unexpected frame")                              \
	X(VERSION, "unsupported protocol version")                             \
	X(FULL, "queue is full; try again later")                              \
	X(CORRUPT, "data is corrupt")                                          \
	X(PEER, "the peer died or broke the protocol")                         \
	X(NOAGENT, "no agent by that name or capability is online")            \
	X(TOOBIG, "message is larger than the allowed maximum")                \
	X(DENIED, "request denied")                                            \
	X(NAMETAKEN, "that name is held by a live agent")                      \
	X(NOTREG, "not registered with the broker")                            \
	X(NOBROKER, "beastd is not running")                                   \
	X(BUSY, "receiver is not keeping up (high-water mark reached)")        \
	X(READONLY, "store is read-only after an I/O error")                   \
	X(BADNAME, "invalid name")                                             \
	X(UNSAFEDIR, "runtime directory is not private to this user")          \
	X(RUNNING, "another beastd is already running on this directory")      \
	X(TTL, "message expired")                                             \
	X(BADKEY, "key file is missing, not a key, or readable by group/others") \
	X(NOCURVE, "no answer over CURVE: wrong server key or not in the allow-list?") \
	X(HANDLER, "the receiver's handler failed; the message will be retried")

#define BM_EBASE 30000

enum bm_error {
	BM_E__FIRST = -BM_EBASE,
#define BM__ERR_ENUM(name, text) BM_E##name,
	BM_ERROR_LIST(BM__ERR_ENUM)
#undef BM__ERR_ENUM
	BM_E__LAST
};
/* BM_E__FIRST < BM_E* < BM_E__LAST, all negative, all > -BM_EBASE - 100. */

/* Text for any negative code (BM_E* or -errno).  Never NULL, never freed. */
BM_EXPORT const char *bm_strerror(int err);
/* Symbolic name: "BM_ENOAGENT", "ENOENT", ...; "EUNKNOWN" when unknown. */
BM_EXPORT const char *bm_err_name(int err);

/* The release beastmesh was built from ("0.1.0"): meson's project version.
 * Never NULL, never freed.  Programs print "NAME beastmesh VERSION". */
BM_EXPORT const char *bm_version(void);

/* ---- logging ---- */
enum bm_log_level {
	BM_LOG_ERROR = 0,
	BM_LOG_WARN = 1,
	BM_LOG_INFO = 2,
	BM_LOG_DEBUG = 3,
};
/* Messages above this level are discarded.  Default BM_LOG_WARN;
 * BEAST_LOG=debug|info|warn|error in the environment overrides it at the first
 * log call.  Not thread safe to change while other threads log. */
BM_EXPORT void bm_log_set_level(int level);
BM_EXPORT int bm_log_level(void);
/* Program name shown in front of each line ("beastd"). */
BM_EXPORT void bm_log_set_ident(const char *ident);
/* Writes one line to stderr: "ident: level: message".  Thread safe. */
BM_EXPORT void bm_log(int level, const char *fmt, ...) BM_PRINTF(2, 3);
#define bm_debug(...) \
	do { if (bm_log_level() >= BM_LOG_DEBUG) bm_log(BM_LOG_DEBUG, __VA_ARGS__); } while (0)

/* ---- clocks ---- */
/* Monotonic milliseconds / nanoseconds (for timeouts and latencies). */
BM_EXPORT int64_t bm_mono_ms(void);
BM_EXPORT int64_t bm_mono_ns(void);
/* Monotonic milliseconds as of the kernel's last timer tick: never ahead
 * of bm_mono_ms(), at most a tick (1-10 ms) behind, and several times
 * cheaper to read.  For stamps taken per message (heartbeat bookkeeping),
 * not for timeouts. */
BM_EXPORT int64_t bm_mono_coarse_ms(void);
/* Wall-clock milliseconds since the epoch (for timestamps and ids). */
BM_EXPORT int64_t bm_wall_ms(void);

/* ---- numbers from text, the environment ---- */
/* A whole decimal number within [lo, hi] (leading blanks allowed, nothing
 * after it): 0 with *ret set, or -EINVAL. */
BM_EXPORT int bm_parse_long(const char *s, long lo, long hi, long *ret);
/* An integer setting from the environment: its value when the variable
 * holds a whole decimal number within [lo, hi], else dflt (unset, empty,
 * malformed or out of range: a tuning knob never stops a program). */
BM_EXPORT long bm_env_long(const char *name, long lo, long hi, long dflt);

/* ---- runtime directory ---- */
#define BM_PATH_MAX 4096
/* Longest ipc socket path libzmq and the kernel accept (sun_path - 1). */
#define BM_IPC_PATH_MAX 107

/*
 * Resolves the runtime directory: `dir` when not NULL, else $BEAST_DIR, else
 * $XDG_RUNTIME_DIR/beast, else /tmp/beast-$UID.  With `create`, a missing
 * directory is made 0700.  Either way the directory must be owned by the
 * calling user and closed to group and others: else BM_EUNSAFEDIR.  Writes the
 * path to ret_path (BM_PATH_MAX bytes) on success.  -ENOENT when it does not
 * exist and !create; -ENAMETOOLONG when sockets inside would not fit.
 */
BM_EXPORT int bm_rundir_resolve(const char *dir, bool create, char *ret_path);

/*
 * Resolves the state directory (journals, keys): $BEAST_STATE, else
 * $XDG_STATE_HOME/beast, else $HOME/.local/state/beast.  Writes the path to
 * ret_path (BM_PATH_MAX bytes); creates nothing.  -ENOENT when none of the
 * three is set, -ENAMETOOLONG.
 */
BM_EXPORT int bm_statedir_resolve(char *ret_path);

/*
 * Makes each missing directory of path (like mkdir -p), mode 0700; one
 * that exists is left as it is.  0, -ENAMETOOLONG, or -errno of the
 * mkdir that failed.
 */
BM_EXPORT int bm_mkdirs(const char *path);

/*
 * Removes path and everything under it (like rm -rf), never following a
 * symlink: a link is removed, not what it points to.  Goes on past what
 * it cannot remove; 0 when all is gone (or was never there), else -errno
 * of the first failure.
 */
BM_EXPORT int bm_rmtree(const char *path);

/*
 * Checks a socket file before connecting to it: it must be a socket (not a
 * symlink, whatever it points to) owned by the calling user.  0,
 * BM_EUNSAFEDIR, or -errno from lstat (-ENOENT: nobody listens there).
 */
BM_EXPORT int bm_rundir_socket_check(const char *path);

/*
 * Joins the runtime dir and a file name into an endpoint "ipc://DIR/NAME"
 * (as_endpoint) or a plain path.  -ENAMETOOLONG when the socket path would be
 * longer than BM_IPC_PATH_MAX.
 */
BM_EXPORT int bm_rundir_path(const char *rundir, const char *name, bool as_endpoint,
                             char *ret, size_t ret_size);

#ifdef __cplusplus
}
#endif
#endif

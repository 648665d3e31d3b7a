/*
 * testutil.h - helpers for multi-process tests: scratch directories, a
 * beastd child that is waited for on its socket (never with sleep),
 * forked agent processes, kill -9 and reaping.
 */
#ifndef BM_TESTUTIL_H
#define BM_TESTUTIL_H

#include <check.h>
#include <stdbool.h>
#include <sys/types.h>

#include "bm_mesh.h"

/* Makes a fresh 0700 directory (under $BM_TEST_ROOT when set, else /tmp);
 * returns a malloc'd path. */
char *tu_scratch_dir(void);

/*
 * Unchecked fixture (tcase_add_unchecked_fixture): runs in the runner
 * process around each TCase.  Check skips a forked test's own teardown when
 * an assertion fails, so the root it creates (and every scratch dir under
 * it) is removed here whatever the tests did.  Children that tu_fork and
 * tu_beastd_start make die with their parent test process.
 */
void tu_root_setup(void);
void tu_root_teardown(void);
/* Removes a directory tree (best effort) and frees the path. */
void tu_rmrf(char **path_p);

/* Runs a suite in fork mode; returns the exit status for main(). */
int tu_run_suite(Suite *s);

/* Checked-fixture helpers: a fresh scratch dir with a beastd on it
 * (heartbeat hb_ms), and their removal.  up returns false on failure. */
bool tu_broker_up(char **ret_dir, pid_t *ret_pid, int hb_ms);
void tu_broker_down(char **dir_p, pid_t *pid_p);

/* Starts the built beastd on dir with a heartbeat, waits until it answers
 * a PING (up to 5 s).  Returns its pid, or -1. */
pid_t tu_beastd_start(const char *dir, int heartbeat_ms);
/* As tu_beastd_start, with beastd serving HTTP on a free loopback port
 * (--http 127.0.0.1:0), or on addr when not NULL; writes the address bound
 * (DIR/http.addr) to ret_addr.  Returns its pid, or -1. */
pid_t tu_beastd_start_http(const char *dir, int heartbeat_ms, const char *addr, char *ret_addr,
                           size_t size);

/*
 * One HTTP/1.0 request to addr ("127.0.0.1:PORT" or "unix:PATH"): sends
 * method and path, reads the whole answer (at most 4 MiB, timeout_ms in
 * all).  Returns the status code and *ret_body (malloc'd, NUL-terminated:
 * free it; NULL allowed to skip it), or -1 on failure.
 */
int tu_http(const char *addr, const char *method, const char *path, int timeout_ms,
            char **ret_body);

/* Waits until an anonymous client on dir gets a PONG; false on timeout. */
bool tu_broker_answers(const char *dir, int timeout_ms);

/*
 * Forks a child that runs fn(arg) and exits with its return value.
 * Fork only while this process has no threads, that is before the test
 * opens any client, agent, publisher or subscriber (tu_stat and the other
 * helpers close theirs): a child forked beside a running thread can
 * inherit a lock that thread held — the sanitizers' allocator has one —
 * and hang in its first malloc.  To start a child later, tu_fork_held()
 * it early and tu_release() it when it is wanted.
 */
pid_t tu_fork(int (*fn)(void *arg), void *arg);

typedef struct {
	pid_t pid; /* the child, or -1 */
	int go;    /* write end of its start pipe, or -1 */
} tu_held_t;

/* Forks now a child that runs fn(arg) only once tu_release() is called
 * (it exits quietly if the test ends first). */
tu_held_t tu_fork_held(int (*fn)(void *arg), void *arg);
/* Lets a held child run; returns its pid (-1 if it was never forked). */
pid_t tu_release(tu_held_t *h);
/* Waits for pid up to timeout_ms; returns its exit status, 128+signal, or
 * -1 on timeout (it is then killed with -9 and reaped). */
int tu_wait(pid_t pid, int timeout_ms);
/* kill -9 and reap. */
void tu_kill9(pid_t pid);
/* SIGTERM, then wait up to timeout_ms; returns the exit status as tu_wait. */
int tu_term(pid_t pid, int timeout_ms);

/* Opens a client on dir (heartbeat hb_ms); NULL on failure. */
bm_client_t *tu_client(const char *dir, const char *name, const char *const *caps, int hb_ms);
/* Polls LIST until name is (present) or is not (!present) in the directory;
 * returns the milliseconds it took, or -1 on timeout. */
int64_t tu_wait_agent(const char *dir, const char *name, bool present, int timeout_ms);
/* Reads one broker counter by name; -1 when unavailable. */
int64_t tu_stat(const char *dir, const char *key);

/* Appends data and a newline to path (created 0600) in one write, so a
 * kill -9 cannot leave half a line for the next writer to extend.
 * Returns 0, -EMSGSIZE (over 63 bytes) or -errno. */
int tu_append_line(const char *path, const void *data, size_t len);

#endif

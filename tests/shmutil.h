/*
 * shmutil.h - helpers the shared-memory suites (test_shm, test_bcastlog)
 * share: a 0700 scratch directory per test for their sockets, forked
 * children that die with their parent, reaping with a bound, and one-byte
 * pipe messages to order steps between processes (never sleep).
 *
 * libc and Check only: these suites sit on the shm floor and link no
 * beastd, so testutil (which starts one) is not theirs.
 */
#ifndef BM_SHMUTIL_H
#define BM_SHMUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* Makes dir (size bytes) a fresh 0700 directory /tmp/TAG-XXXXXX; asserts. */
void su_dir_setup(char *dir, size_t size, const char *tag);
/* Removes it and what is in it (best effort), and empties dir. */
void su_dir_teardown(char *dir);

/* Forks a child that runs fn(arg) and exits with its return value; the
 * child is killed when its parent dies.  Returns its pid (-1 on failure). */
pid_t su_fork(int (*fn)(void *arg), void *arg);
/* Waits up to ms for pid: its exit status, 128 + signal, or -1 (then it
 * was killed with -9 and reaped, or waitpid failed). */
int su_reap(pid_t pid, int ms);
/* kill -9 and reap (bounded). */
void su_kill(pid_t pid);

/* Writes the byte c to fd; asserts. */
void su_pipe_put(int fd, char c);
/* Reads one byte from fd, waiting up to ms; 0 when none came. */
char su_pipe_get(int fd, int ms);

#endif

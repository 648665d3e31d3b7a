/*
 * shmutil.c - the shared-memory suites' process and directory helpers
 * (shmutil.h).  Reaping polls waitpid with a short nap: that waits for a
 * child's exit, it does not order anything between processes (pipes do).
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bm_common.h"
#include "shmutil.h"

#define S_KILL_TIMEOUT_MS 20000

void
su_dir_setup(char *dir, size_t size, const char *tag)
{
	snprintf(dir, size, "/tmp/%s-XXXXXX", tag);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(chmod(dir, 0700), 0);
}

void
su_dir_teardown(char *dir)
{
	if (dir[0] != '\0') {
		(void)bm_rmtree(dir);
		dir[0] = '\0';
	}
}

pid_t
su_fork(int (*fn)(void *arg), void *arg)
{
	pid_t pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(fn(arg));
	}
	return pid;
}

int
su_reap(pid_t pid, int ms)
{
	int64_t end = bm_mono_ms() + ms;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid) {
			break;
		}
		if (r < 0 && errno != EINTR) {
			return -1;
		}
		if (bm_mono_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	if (WIFEXITED(st)) {
		return WEXITSTATUS(st);
	}
	return 128 + WTERMSIG(st);
}

void
su_kill(pid_t pid)
{
	kill(pid, SIGKILL);
	(void)su_reap(pid, S_KILL_TIMEOUT_MS);
}

void
su_pipe_put(int fd, char c)
{
	ck_assert_int_eq(write(fd, &c, 1), 1);
}

char
su_pipe_get(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char c = 0;

	if (poll(&p, 1, ms) == 1 && read(fd, &c, 1) == 1) {
		return c;
	}
	return 0;
}

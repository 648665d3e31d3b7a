/*
 * testutil.c - process and broker helpers for the multi-process suites.
 * See testutil.h.  Every wait here is bounded in time.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#ifndef BM_BEASTD_PATH
#error "BM_BEASTD_PATH must name the built beastd"
#endif

char *
tu_scratch_dir(void)
{
	const char *root = getenv("BM_TEST_ROOT");
	char tmpl[BM_PATH_MAX];
	char *p;

	/* Keep it short: socket paths inside must fit in 107 bytes. */
	snprintf(tmpl, sizeof tmpl, "%s/bmtest.XXXXXX", root && *root ? root : "/tmp");
	p = mkdtemp(tmpl);
	if (p == NULL || chmod(p, 0700) < 0) {
		return NULL;
	}
	return strdup(p);
}

static char *s_root;

void
tu_root_setup(void)
{
	char tmpl[] = "/tmp/bmroot.XXXXXX";

	s_root = mkdtemp(tmpl) ? strdup(tmpl) : NULL;
	if (s_root != NULL) {
		setenv("BM_TEST_ROOT", s_root, 1);
	}
}

void
tu_root_teardown(void)
{
	unsetenv("BM_TEST_ROOT");
	tu_rmrf(&s_root);
}

/* In a child: die with the test process that made us, even by SIGKILL. */
static void
s_die_with_parent(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent) {
		_exit(126); /* it died before prctl took effect */
	}
}

void
tu_rmrf(char **path_p)
{
	if (path_p == NULL || *path_p == NULL) {
		return;
	}
	(void)bm_rmtree(*path_p);
	free(*path_p);
	*path_p = NULL;
}

bool
tu_broker_answers(const char *dir, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;

	while (bm_mono_ms() < deadline) {
		bm_client_opts_t o = {.dir = dir, .connect_timeout_ms = 200};
		bm_client_t *c = NULL;

		if (bm_client_open(&o, &c) == 0) {
			bm_client_destroy(&c);
			return true;
		}
		/* No socket yet: beastd is still starting; the open fails fast,
		 * so pace the retries a little. */
		usleep(10000);
	}
	return false;
}

pid_t
tu_beastd_start(const char *dir, int heartbeat_ms)
{
	pid_t parent = getpid(), pid;
	char hb[32];

	snprintf(hb, sizeof hb, "%d", heartbeat_ms);
	pid = fork();
	if (pid < 0) {
		return -1;
	}
	if (pid == 0) {
		s_die_with_parent(parent);
		execl(BM_BEASTD_PATH, "beastd", "--dir", dir, "--heartbeat", hb, (char *)NULL);
		_exit(127);
	}
	if (!tu_broker_answers(dir, 5000)) {
		tu_kill9(pid);
		return -1;
	}
	return pid;
}

pid_t
tu_fork(int (*fn)(void *arg), void *arg)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid == 0) {
		s_die_with_parent(parent);
		_exit(fn(arg));
	}
	return pid;
}

tu_held_t
tu_fork_held(int (*fn)(void *arg), void *arg)
{
	tu_held_t h = {.pid = -1, .go = -1};
	pid_t parent = getpid();
	int p[2];
	char b = 0;
	ssize_t n;

	if (pipe2(p, O_CLOEXEC) < 0) {
		return h;
	}
	h.pid = fork();
	if (h.pid == 0) {
		s_die_with_parent(parent);
		close(p[1]);
		do {
			n = read(p[0], &b, 1);
		} while (n < 0 && errno == EINTR);
		/* EOF: the test ended without releasing us; exit quietly. */
		if (n != 1 || b != 'g') {
			_exit(0);
		}
		close(p[0]);
		_exit(fn(arg));
	}
	close(p[0]);
	if (h.pid < 0) {
		close(p[1]);
		return h;
	}
	h.go = p[1];
	return h;
}

pid_t
tu_release(tu_held_t *h)
{
	if (h->go >= 0) {
		(void)!write(h->go, "g", 1);
		close(h->go);
		h->go = -1;
	}
	return h->pid;
}

int
tu_wait(pid_t pid, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid) {
			if (WIFEXITED(status)) {
				return WEXITSTATUS(status);
			}
			return 128 + WTERMSIG(status);
		}
		if (r < 0 && errno != EINTR) {
			return -1;
		}
		if (bm_mono_ms() >= deadline) {
			tu_kill9(pid);
			return -1;
		}
		usleep(2000);
	}
}

void
tu_kill9(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
		}
	}
}

int
tu_term(pid_t pid, int timeout_ms)
{
	kill(pid, SIGTERM);
	return tu_wait(pid, timeout_ms);
}

bm_client_t *
tu_client(const char *dir, const char *name, const char *const *caps, int hb_ms)
{
	bm_client_opts_t o = {.dir = dir, .name = name, .caps = caps, .heartbeat_ms = hb_ms};
	bm_client_t *c = NULL;

	return bm_client_open(&o, &c) == 0 ? c : NULL;
}

int64_t
tu_wait_agent(const char *dir, const char *name, bool present, int timeout_ms)
{
	int64_t t0 = bm_mono_ms(), deadline = t0 + timeout_ms;
	bm_client_opts_t o = {.dir = dir};
	bm_client_t *c = NULL;
	int64_t result = -1;

	if (bm_client_open(&o, &c) < 0) {
		return -1;
	}
	while (bm_mono_ms() < deadline) {
		bm_agent_info_t *v = NULL;
		size_t n = 0;
		bool found = false;

		if (bm_client_list(c, 1000, &v, &n) == 0) {
			for (size_t i = 0; i < n; i++) {
				found = found || strcmp(v[i].name, name) == 0;
			}
			free(v);
			if (found == present) {
				result = bm_mono_ms() - t0;
				break;
			}
		}
		usleep(5000);
	}
	bm_client_destroy(&c);
	return result;
}

int64_t
tu_stat(const char *dir, const char *key)
{
	bm_client_opts_t o = {.dir = dir};
	bm_client_t *c = NULL;
	bm_stat_t *v = NULL;
	size_t n = 0;
	int64_t value = -1;

	if (bm_client_open(&o, &c) < 0) {
		return -1;
	}
	if (bm_client_stats(c, 2000, &v, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			if (strcmp(v[i].key, key) == 0) {
				value = v[i].value;
			}
		}
		free(v);
	}
	bm_client_destroy(&c);
	return value;
}

int
tu_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

bool
tu_broker_up(char **ret_dir, pid_t *ret_pid, int hb_ms)
{
	*ret_dir = tu_scratch_dir();
	*ret_pid = *ret_dir ? tu_beastd_start(*ret_dir, hb_ms) : -1;
	return *ret_pid > 0;
}

void
tu_broker_down(char **dir_p, pid_t *pid_p)
{
	if (*pid_p > 0) {
		tu_kill9(*pid_p);
		*pid_p = 0;
	}
	tu_rmrf(dir_p);
}

pid_t
tu_beastd_start_http(const char *dir, int heartbeat_ms, const char *addr, char *ret_addr,
                     size_t size)
{
	pid_t parent = getpid(), pid;
	char hb[32], path[BM_PATH_MAX + 16];
	int64_t deadline;

	snprintf(hb, sizeof hb, "%d", heartbeat_ms);
	snprintf(path, sizeof path, "%s/http.addr", dir);
	pid = fork();
	if (pid < 0) {
		return -1;
	}
	if (pid == 0) {
		s_die_with_parent(parent);
		execl(BM_BEASTD_PATH, "beastd", "--dir", dir, "--heartbeat", hb, "--http",
		      addr ? addr : "127.0.0.1:0", (char *)NULL);
		_exit(127);
	}
	if (!tu_broker_answers(dir, 5000)) {
		tu_kill9(pid);
		return -1;
	}
	/* beastd writes http.addr before it serves its first poll. */
	deadline = bm_mono_ms() + 5000;
	while (bm_mono_ms() < deadline) {
		FILE *f = fopen(path, "r");

		if (f != NULL) {
			bool ok = fgets(ret_addr, (int)size, f) != NULL;

			fclose(f);
			if (ok) {
				ret_addr[strcspn(ret_addr, "\n")] = '\0';
				return pid;
			}
		}
		usleep(10000);
	}
	tu_kill9(pid);
	return -1;
}

static int
s_http_connect(const char *addr)
{
	int fd;

	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un un = {.sun_family = AF_UNIX};

		snprintf(un.sun_path, sizeof un.sun_path, "%s", addr + 5);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&un, sizeof un) < 0) {
			close(fd);
			fd = -1;
		}
	} else {
		struct sockaddr_in in = {.sin_family = AF_INET};
		char host[64];
		const char *colon = strrchr(addr, ':');

		if (colon == NULL || (size_t)(colon - addr) >= sizeof host) {
			return -1;
		}
		memcpy(host, addr, (size_t)(colon - addr));
		host[colon - addr] = '\0';
		in.sin_port = htons((uint16_t)atoi(colon + 1));
		if (inet_pton(AF_INET, host, &in.sin_addr) != 1) {
			return -1;
		}
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&in, sizeof in) < 0) {
			close(fd);
			fd = -1;
		}
	}
	return fd;
}

int
tu_http(const char *addr, const char *method, const char *path, int timeout_ms,
        char **ret_body)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;
	size_t cap = 65536, len = 0, max = 4u << 20;
	char req[512], *buf;
	int fd, status = -1, n;
	const char *sep;

	n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: beastd\r\n\r\n", method, path);
	fd = s_http_connect(addr);
	if (fd < 0) {
		return -1;
	}
	if (write(fd, req, (size_t)n) != n || (buf = malloc(cap + 1)) == NULL) {
		close(fd);
		return -1;
	}
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - bm_mono_ms();
		ssize_t r;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
			break; /* timed out: status stays -1 */
		}
		if (len == cap) {
			char *more = cap < max ? realloc(buf, 2 * cap + 1) : NULL;

			if (more == NULL) {
				break;
			}
			buf = more;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r <= 0) {
			buf[len] = '\0';
			if (r == 0 && sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
				status = -1;
			}
			break;
		}
		len += (size_t)r;
	}
	close(fd);
	if (status < 0) {
		free(buf);
		return -1;
	}
	if (ret_body != NULL) {
		sep = strstr(buf, "\r\n\r\n");
		sep = sep ? sep + 4 : buf + len;
		memmove(buf, sep, len - (size_t)(sep - buf) + 1);
		*ret_body = buf;
	} else {
		free(buf);
	}
	return status;
}

int
tu_append_line(const char *path, const void *data, size_t len)
{
	char line[64];
	ssize_t n;
	int fd;

	if (len >= sizeof line) {
		return -EMSGSIZE;
	}
	memcpy(line, data, len);
	line[len] = '\n';
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		return -errno;
	}
	n = write(fd, line, len + 1);
	close(fd);
	return n == (ssize_t)(len + 1) ? 0 : -EIO;
}

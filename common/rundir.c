/*
 * rundir.c - where a swarm's sockets live.
 *
 * Every ipc socket (mesh.sock, pub.sock, sub.sock, shm/<name>.sock) sits in
 * one directory private to the user: mode 0700, owned by the caller.  A
 * socket file's own mode follows the umask and an abstract socket has no
 * permission at all, so the directory is the access control.  A directory
 * that is someone else's or open to group/other is refused, never "fixed".
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bm_common.h"

/* Longest socket name we put in the dir: "shm/" + 64-byte name + ".sock". */
#define S_LONGEST_CHILD (4 + 64 + 5)

static int
s_default(char *out)
{
	const char *v = getenv("BEAST_DIR");
	int n;

	if (v != NULL && *v != '\0') {
		n = snprintf(out, BM_PATH_MAX, "%s", v);
	} else if ((v = getenv("XDG_RUNTIME_DIR")) != NULL && *v == '/') {
		n = snprintf(out, BM_PATH_MAX, "%s/beast", v);
	} else {
		n = snprintf(out, BM_PATH_MAX, "/tmp/beast-%u", (unsigned)getuid());
	}
	return n < BM_PATH_MAX ? 0 : -ENAMETOOLONG;
}

int
bm_rundir_resolve(const char *dir, bool create, char *ret_path)
{
	char path[BM_PATH_MAX];
	struct stat st;
	int rc;

	if (ret_path == NULL) {
		return -EINVAL;
	}
	if (dir != NULL && *dir != '\0') {
		if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
			return -ENAMETOOLONG;
		}
	} else if ((rc = s_default(path)) < 0) {
		return rc;
	}
	/* A trailing slash would double up in socket paths. */
	for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--) {
		path[n - 1] = '\0';
	}
	if (strlen(path) + 1 + S_LONGEST_CHILD > BM_IPC_PATH_MAX) {
		return -ENAMETOOLONG;
	}
	if (create && mkdir(path, 0700) < 0 && errno != EEXIST) {
		return -errno;
	}
	/* lstat: a symlink planted in /tmp must not redirect us. */
	if (lstat(path, &st) < 0) {
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		return -ENOTDIR;
	}
	if (st.st_uid != getuid() || (st.st_mode & 077) != 0) {
		return BM_EUNSAFEDIR;
	}
	memcpy(ret_path, path, strlen(path) + 1);
	return 0;
}

int
bm_rundir_path(const char *rundir, const char *name, bool as_endpoint, char *ret,
               size_t ret_size)
{
	size_t plen;
	int n;

	if (rundir == NULL || name == NULL || ret == NULL) {
		return -EINVAL;
	}
	plen = strlen(rundir) + 1 + strlen(name);
	if (plen > BM_IPC_PATH_MAX) {
		return -ENAMETOOLONG;
	}
	n = snprintf(ret, ret_size, "%s%s/%s", as_endpoint ? "ipc://" : "", rundir, name);
	if (n < 0 || (size_t)n >= ret_size) {
		return -ENAMETOOLONG;
	}
	return 0;
}

int
bm_statedir_resolve(char *ret_path)
{
	const char *st = getenv("BEAST_STATE"), *xdg = getenv("XDG_STATE_HOME"),
	           *home = getenv("HOME");
	int n;

	if (ret_path == NULL) {
		return -EINVAL;
	}
	if (st != NULL && st[0] != '\0') {
		n = snprintf(ret_path, BM_PATH_MAX, "%s", st);
	} else if (xdg != NULL && xdg[0] == '/') {
		n = snprintf(ret_path, BM_PATH_MAX, "%s/beast", xdg);
	} else if (home != NULL && home[0] == '/') {
		n = snprintf(ret_path, BM_PATH_MAX, "%s/.local/state/beast", home);
	} else {
		return -ENOENT;
	}
	return n < 0 || n >= BM_PATH_MAX ? -ENAMETOOLONG : 0;
}

int
bm_mkdirs(const char *path)
{
	char buf[BM_PATH_MAX];

	if (path == NULL || path[0] == '\0') {
		return -EINVAL;
	}
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
		return -ENAMETOOLONG;
	}
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p == '/') {
			*p = '\0';
			if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
				return -errno;
			}
			*p = '/';
		}
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
		return -errno;
	}
	return 0;
}

static __thread int s_rm_err; /* first failure of one bm_rmtree() */

static int
s_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) < 0 && errno != ENOENT && s_rm_err == 0) {
		s_rm_err = -errno;
	}
	return 0;
}

int
bm_rmtree(const char *path)
{
	if (path == NULL || path[0] == '\0') {
		return -EINVAL;
	}
	s_rm_err = 0;
	if (nftw(path, s_rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT &&
	    s_rm_err == 0) {
		s_rm_err = -errno;
	}
	return s_rm_err;
}

int
bm_rundir_socket_check(const char *path)
{
	struct stat st;

	if (path == NULL) {
		return -EINVAL;
	}
	/* lstat: connect() would follow a symlink wherever it points. */
	if (lstat(path, &st) < 0) {
		return -errno;
	}
	if (!S_ISSOCK(st.st_mode) || st.st_uid != getuid()) {
		return BM_EUNSAFEDIR;
	}
	return 0;
}

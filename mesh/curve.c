/*
 * curve.c - CURVE key files for TCP: making them, loading them safely, and
 * putting them on a socket.
 *
 * A key pair is two files in czmq's certificate format (ZPL text):
 * NAME.key holds the public and the secret key (mode 0600) and NAME.pub the
 * public key alone; both carry the metadata name=NAME.  The .pub file is
 * what goes into a beastd's allow-list directory (and what a client gives
 * as --server-key); the .key file never leaves its owner.
 *
 * A secret key file that group or others may read is refused, never
 * "fixed": it may already have leaked, and whoever owns it must decide.
 *
 * The broker's server key is made on first use: when the file is missing,
 * a fresh pair is written (0600) with its public half beside it
 * (server.key -> server.pub).
 *
 * czmq installs SIGINT/SIGTERM handlers of its own on first use; every
 * entry here turns that off first (zsys_handler_set(NULL)) so beastd's
 * and the agents' handlers stay in charge.
 *
 * The server side of CURVE needs a ZAP handler in the context of the
 * sockets it guards: one czmq zauth actor per process, in czmq's context
 * (bm_curve_context), shared by reference count between the broker's and
 * the proxy's sockets, all checking the same allow-list directory.  A
 * socket gets its CURVE role at bind time (libzmq copies the options into
 * each listener), so one socket may serve plain ipc and CURVE tcp.
 *
 * Threading: the ZAP handler's reference count is under a mutex; every
 * other call stands alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <czmq.h>

#include "mesh_private.h"

/* The public twin of a secret key path: X.key -> X.pub, else X.pub. */
static int
s_pub_path(const char *secret, char *out, size_t cap)
{
	size_t n = strlen(secret);
	int w;

	if (n > 4 && strcmp(secret + n - 4, ".key") == 0) {
		w = snprintf(out, cap, "%.*s.pub", (int)(n - 4), secret);
	} else {
		w = snprintf(out, cap, "%s.pub", secret);
	}
	return w < 0 || (size_t)w >= cap ? -ENAMETOOLONG : 0;
}

/* Writes cert's secret file (0600, never through a symlink, never over an
 * existing file) and public file. */
static int
s_save(zcert_t *cert, const char *secret_path, const char *public_path)
{
	int fd = open(secret_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

	if (fd < 0) {
		return -errno;
	}
	close(fd);
	/* The empty 0600 file keeps its mode when czmq rewrites it. */
	if (zcert_save_secret(cert, secret_path) < 0 || chmod(secret_path, 0600) < 0) {
		int rc = errno ? -errno : -EIO;

		(void)unlink(secret_path);
		return rc;
	}
	if (zcert_save_public(cert, public_path) < 0) {
		return errno ? -errno : -EIO;
	}
	return 0;
}

int
bm_curve_keygen(const char *dir, const char *name)
{
	char sec[BM_PATH_MAX], pub[BM_PATH_MAX];
	zcert_t *cert;
	int rc;

	if (dir == NULL || name == NULL) {
		return -EINVAL;
	}
	if ((rc = bm_name_check(name)) < 0) {
		return rc;
	}
	if (snprintf(sec, sizeof sec, "%s/%s.key", dir, name) >= (int)sizeof sec ||
	    snprintf(pub, sizeof pub, "%s/%s.pub", dir, name) >= (int)sizeof pub) {
		return -ENAMETOOLONG;
	}
	if ((rc = bm_mkdirs(dir)) < 0) {
		return rc;
	}
	zsys_handler_set(NULL); /* the caller's signal handlers stay in charge */
	cert = zcert_new();
	if (cert == NULL) {
		return -ENOMEM;
	}
	zcert_set_meta(cert, "name", "%s", name);
	rc = s_save(cert, sec, pub);
	zcert_destroy(&cert);
	return rc;
}

int
bm_curve_keydir(char *ret_path)
{
	char st[BM_PATH_MAX];
	int rc = bm_statedir_resolve(st);

	if (rc < 0) {
		return rc;
	}
	if (snprintf(ret_path, BM_PATH_MAX, "%s/keys", st) >= BM_PATH_MAX) {
		return -ENAMETOOLONG;
	}
	return 0;
}

int
bm__curve_load(const char *path, bool secret, zcert_t **ret_cert)
{
	struct stat st;
	zcert_t *cert;
	char probe[BM_PATH_MAX + 16];

	if (path == NULL || ret_cert == NULL) {
		return -EINVAL;
	}
	if (stat(path, &st) < 0) {
		return errno == ENOENT ? BM_EBADKEY : -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		return BM_EBADKEY;
	}
	if (secret && ((st.st_mode & 077) != 0 || st.st_uid != geteuid())) {
		return BM_EBADKEY;
	}
	/* zcert_load prefers PATH_secret when it exists: refuse the surprise. */
	snprintf(probe, sizeof probe, "%s_secret", path);
	if (access(probe, F_OK) == 0) {
		return BM_EBADKEY;
	}
	cert = zcert_load(path);
	if (cert == NULL) {
		return BM_EBADKEY;
	}
	if (secret) {
		static const uint8_t zero[32];

		if (memcmp(zcert_secret_key(cert), zero, sizeof zero) == 0) {
			zcert_destroy(&cert);
			return BM_EBADKEY;
		}
	}
	*ret_cert = cert;
	return 0;
}

int
bm__curve_server_cert(const char *path, zcert_t **ret_cert)
{
	char dir[BM_PATH_MAX], pub[BM_PATH_MAX];
	zcert_t *cert;
	char *slash;
	int rc;

	if (access(path, F_OK) == 0 || errno != ENOENT) {
		return bm__curve_load(path, true, ret_cert);
	}
	snprintf(dir, sizeof dir, "%s", path);
	slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		if ((rc = bm_mkdirs(dir)) < 0) {
			return rc;
		}
	}
	if ((rc = s_pub_path(path, pub, sizeof pub)) < 0) {
		return rc;
	}
	zsys_handler_set(NULL);
	cert = zcert_new();
	if (cert == NULL) {
		return -ENOMEM;
	}
	zcert_set_meta(cert, "name", "beastd");
	rc = s_save(cert, path, pub);
	zcert_destroy(&cert);
	if (rc < 0) {
		return rc;
	}
	bm_log(BM_LOG_DEBUG, "made a server key %s (public half %s)", path, pub);
	return bm__curve_load(path, true, ret_cert);
}

int
bm_curve_client(void *sock, const char *key_file, const char *server_key_file)
{
	zcert_t *mine = NULL, *server = NULL;
	int rc;

	if (key_file == NULL || server_key_file == NULL) {
		return -EINVAL;
	}
	zsys_handler_set(NULL);
	if ((rc = bm__curve_load(key_file, true, &mine)) < 0 ||
	    (rc = bm__curve_load(server_key_file, false, &server)) < 0) {
		zcert_destroy(&mine);
		return rc;
	}
	if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, zcert_public_key(server), 32) < 0 ||
	    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, zcert_public_key(mine), 32) < 0 ||
	    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, zcert_secret_key(mine), 32) < 0) {
		rc = bm__zmq_err();
	}
	zcert_destroy(&mine);
	zcert_destroy(&server);
	return rc;
}

int
bm__curve_client(void *sock, const char *key_file, const char *server_key_file)
{
	return bm_curve_client(sock, key_file, server_key_file);
}

void *
bm_curve_context(void)
{
	zsys_handler_set(NULL);
	return zsys_init();
}

static pthread_mutex_t s_auth_lock = PTHREAD_MUTEX_INITIALIZER;
static zactor_t *s_auth;               /* the process' ZAP handler */
static int s_auth_refs;                /* servers using it */
static char s_auth_dir[BM_PATH_MAX];   /* its allow-list directory */

/* Takes a reference on the ZAP handler for allow_dir, starting it. */
static int
s_auth_acquire(const char *allow_dir)
{
	int rc = 0;

	pthread_mutex_lock(&s_auth_lock);
	if (s_auth != NULL && strcmp(s_auth_dir, allow_dir) != 0) {
		rc = -EBUSY; /* one allow-list per process */
	} else if (s_auth == NULL) {
		(void)bm_curve_context();
		s_auth = zactor_new(zauth, NULL);
		if (s_auth == NULL) {
			rc = -ENOMEM;
		} else if (zstr_sendx(s_auth, "CURVE", allow_dir, NULL) < 0 || zsock_wait(s_auth) < 0) {
			zactor_destroy(&s_auth);
			rc = -EIO;
		} else {
			snprintf(s_auth_dir, sizeof s_auth_dir, "%s", allow_dir);
		}
	}
	if (rc == 0) {
		s_auth_refs++;
	}
	pthread_mutex_unlock(&s_auth_lock);
	return rc;
}

void
bm_curve_server_release(void)
{
	pthread_mutex_lock(&s_auth_lock);
	if (s_auth_refs > 0 && --s_auth_refs == 0) {
		zactor_destroy(&s_auth);
		s_auth_dir[0] = '\0';
	}
	pthread_mutex_unlock(&s_auth_lock);
}

int
bm_curve_paths(const char *server_key, const char *allow_dir, char *ret_key, char *ret_allow)
{
	char keydir[BM_PATH_MAX];
	struct stat st;
	int rc;

	if (server_key == NULL || allow_dir == NULL) {
		if ((rc = bm_curve_keydir(keydir)) < 0) {
			return rc;
		}
	}
	if ((server_key ? snprintf(ret_key, BM_PATH_MAX, "%s", server_key)
	                : snprintf(ret_key, BM_PATH_MAX, "%s/server.key", keydir)) >= BM_PATH_MAX) {
		return -ENAMETOOLONG;
	}
	if (allow_dir != NULL) {
		if (snprintf(ret_allow, BM_PATH_MAX, "%s", allow_dir) >= BM_PATH_MAX) {
			return -ENAMETOOLONG;
		}
		if (stat(ret_allow, &st) < 0 || !S_ISDIR(st.st_mode)) {
			return -ENOTDIR;
		}
		return 0;
	}
	if (snprintf(ret_allow, BM_PATH_MAX, "%s/allowed", keydir) >= BM_PATH_MAX) {
		return -ENAMETOOLONG;
	}
	return bm_mkdirs(ret_allow);
}

int
bm_curve_server(void *sock, const char *server_key, const char *allow_dir)
{
	char key[BM_PATH_MAX], allow[BM_PATH_MAX];
	zcert_t *cert = NULL;
	int rc, one = 1;

	if (sock == NULL) {
		return -EINVAL;
	}
	zsys_handler_set(NULL);
	if ((rc = bm_curve_paths(server_key, allow_dir, key, allow)) < 0 ||
	    (rc = bm__curve_server_cert(key, &cert)) < 0) {
		return rc;
	}
	if ((rc = s_auth_acquire(allow)) < 0) {
		zcert_destroy(&cert);
		return rc;
	}
	if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) < 0 ||
	    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, zcert_public_key(cert), 32) < 0 ||
	    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, zcert_secret_key(cert), 32) < 0 ||
	    zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "beast", 5) < 0) {
		rc = bm__zmq_err();
		bm_curve_server_release();
	}
	zcert_destroy(&cert);
	return rc;
}

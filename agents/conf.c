/*
 * conf.c - a reader for `key = value` files (see conf.h).
 *
 * The file is read whole (at most S_MAX bytes: a configuration, not a data
 * file) into one buffer and cut in place: each key and value becomes a
 * NUL-terminated string inside it, so the caller may keep the pointers it
 * was given for as long as it keeps the buffer.  What a key means is the
 * caller's business; this file only knows the syntax and line numbers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"

#define S_MAX (1u << 20)

static bool
s_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static bool
s_key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static char *
s_trim(char *s, char *end)
{
	while (s < end && s_blank(*s)) {
		s++;
	}
	while (end > s && s_blank(end[-1])) {
		end--;
	}
	*end = '\0';
	return s;
}

static int
s_read(const char *path, char **ret_buf, size_t *ret_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	size_t len = 0;
	char *buf;

	if (fd < 0) {
		return -errno;
	}
	if (fstat(fd, &st) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	}
	if ((size_t)st.st_size > S_MAX) {
		close(fd);
		return -EFBIG;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			int e = n < 0 ? -errno : -EIO;

			free(buf);
			close(fd);
			return e;
		}
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

int
bm_conf_load(const char *path, bm_conf_fn *fn, void *arg, char **ret_buf, int *ret_line)
{
	char *buf = NULL, *p;
	size_t len = 0;
	int rc, line = 0;

	*ret_buf = NULL;
	*ret_line = 0;
	if ((rc = s_read(path, &buf, &len)) < 0) {
		return rc;
	}
	*ret_buf = buf;
	if (memchr(buf, '\0', len) != NULL) {
		*ret_line = 1;
		return -EINVAL;
	}
	for (p = buf; p < buf + len;) {
		char *nl = strchr(p, '\n'), *end = nl ? nl : buf + len, *eq, *key, *val;

		line++;
		*ret_line = line;
		*end = '\0';
		key = s_trim(p, end);
		p = end + 1;
		if (*key == '\0' || *key == '#') {
			continue;
		}
		if ((eq = strchr(key, '=')) == NULL) {
			return -EINVAL;
		}
		val = s_trim(eq + 1, key + strlen(key));
		key = s_trim(key, eq);
		if (*key == '\0') {
			return -EINVAL;
		}
		for (const char *k = key; *k; k++) {
			if (!s_key_char(*k)) {
				return -EINVAL;
			}
		}
		if (*val == '"') {
			size_t vl = strlen(val);

			if (vl < 2 || val[vl - 1] != '"') {
				return -EINVAL;
			}
			val[vl - 1] = '\0';
			val++;
		}
		if ((rc = fn(arg, key, val, line)) < 0) {
			return rc;
		}
	}
	*ret_line = 0;
	return 0;
}

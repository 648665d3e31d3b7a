/*
 * topic.c - thought paths: build, normalise, split and check broadcast
 * topics, and the broadcast header and report codecs.
 *
 * A topic is 1..BM_TOPIC_DEPTH_MAX segments, each 1..BM_TOPIC_SEG_MAX
 * bytes from 0x21..0x7e except '/', each followed by '/':
 * "tot/<tree>/<branch>/<sub-branch>/".  The trailing '/' is what makes
 * ZeroMQ's byte-prefix matching follow whole segments: "tot/7/2/" is a
 * prefix of "tot/7/2/5/" but not of "tot/7/23/".  Thought paths are the
 * "tot" namespace; any other first segment works the same way. All functions are pure and thread safe.
 */
#include <stdio.h>
#include <string.h>

#include "proxy_private.h"

/* ---- topics ---- */

static bool
s_seg_byte(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != '/';
}

int
bm_topic_check(const char *topic, size_t len, bool prefix)
{
	size_t seg = 0, depth = 0;

	if (topic == NULL) {
		return BM_EBADNAME;
	}
	if (len == 0) {
		return prefix ? 0 : BM_EBADNAME;
	}
	if (len > BM_TOPIC_MAX || topic[len - 1] != '/') {
		return BM_EBADNAME;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)topic[i];

		if (c == '/') {
			if (seg == 0 || ++depth > BM_TOPIC_DEPTH_MAX) {
				return BM_EBADNAME;
			}
			seg = 0;
		} else if (!s_seg_byte(c) || ++seg > BM_TOPIC_SEG_MAX) {
			return BM_EBADNAME;
		}
	}
	return 0;
}

int
bm_topic_normalize(const char *in, bool prefix, char *ret, size_t ret_size)
{
	size_t len;
	int rc;

	if (in == NULL || ret == NULL) {
		return -EINVAL;
	}
	len = strlen(in);
	if (len == 0) {
		if (!prefix) {
			return BM_EBADNAME;
		}
		if (ret_size < 1) {
			return -ENOSPC;
		}
		ret[0] = '\0';
		return 0;
	}
	if (len + 2 > ret_size) {
		return len + 1 > BM_TOPIC_MAX ? BM_EBADNAME : -ENOSPC;
	}
	memcpy(ret, in, len);
	if (ret[len - 1] != '/') {
		ret[len++] = '/';
	}
	ret[len] = '\0';
	if ((rc = bm_topic_check(ret, len, prefix)) < 0) {
		return rc;
	}
	return (int)len;
}

int
bm_topic_build(char *ret, size_t ret_size, const char *const *segs, size_t n)
{
	size_t len = 0;

	if (ret == NULL || (segs == NULL && n > 0)) {
		return -EINVAL;
	}
	if (n == 0 || n > BM_TOPIC_DEPTH_MAX) {
		return BM_EBADNAME;
	}
	for (size_t i = 0; i < n; i++) {
		size_t sl = segs[i] ? strlen(segs[i]) : 0;

		if (sl == 0 || sl > BM_TOPIC_SEG_MAX || memchr(segs[i], '/', sl) != NULL) {
			return BM_EBADNAME;
		}
		if (len + sl + 1 > BM_TOPIC_MAX) {
			return BM_EBADNAME;
		}
		if (len + sl + 2 > ret_size) {
			return -ENOSPC;
		}
		memcpy(ret + len, segs[i], sl);
		len += sl;
		ret[len++] = '/';
	}
	ret[len] = '\0';
	if (bm_topic_check(ret, len, false) < 0) {
		return BM_EBADNAME;
	}
	return (int)len;
}

int
bm_topic_tot(char *ret, size_t ret_size, const char *tree, const uint32_t *path, size_t depth)
{
	char nums[BM_TOPIC_DEPTH_MAX][12];
	const char *segs[BM_TOPIC_DEPTH_MAX];

	if (depth + 2 > BM_TOPIC_DEPTH_MAX || (path == NULL && depth > 0)) {
		return BM_EBADNAME;
	}
	segs[0] = "tot";
	segs[1] = tree;
	for (size_t i = 0; i < depth; i++) {
		snprintf(nums[i], sizeof nums[i], "%u", path[i]);
		segs[i + 2] = nums[i];
	}
	return bm_topic_build(ret, ret_size, segs, depth + 2);
}

int
bm_topic_split(const char *topic, size_t len, const char **ret_segs, size_t *ret_lens,
               size_t max)
{
	size_t n = 0, start = 0;

	if (bm_topic_check(topic, len, false) < 0) {
		return BM_EBADNAME;
	}
	for (size_t i = 0; i < len; i++) {
		if (topic[i] == '/') {
			if (n == max) {
				return -ENOSPC;
			}
			ret_segs[n] = topic + start;
			ret_lens[n] = i - start;
			n++;
			start = i + 1;
		}
	}
	return (int)n;
}

bool
bm_topic_matches(const char *prefix, const char *topic)
{
	size_t pl = strlen(prefix);

	return strncmp(prefix, topic, pl) == 0;
}

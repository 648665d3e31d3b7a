/*
 * id.c - 128-bit message ids and name validation.
 *
 * An id is 16 bytes: a 48-bit big-endian count of wall-clock milliseconds
 * followed by 80 random bits from libsodium (drawn 64 ids at a time).  Sorting ids bytewise sorts
 * them by creation time; the random tail makes collisions between agents
 * negligible without coordination.  An all-zero id means "none".
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <sodium.h>

#include "bm_mesh.h"

/*
 * The random tails come from a per-thread pool refilled 64 ids at a time
 * (one getrandom() per 64 ids instead of one each).  A forked child must
 * not reuse its parent's pool — both would hand out the same ids — so a
 * fork bumps a generation that every pool checks.
 */
#define S_POOL_IDS 64

static atomic_uint s_fork_gen = 1;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static void
s_after_fork(void)
{
	atomic_fetch_add(&s_fork_gen, 1);
}

static void
s_init(void)
{
	/* sodium_init() is idempotent and thread safe; it cannot fail on
	 * Linux with getrandom(), and randombytes_buf() works regardless. */
	if (sodium_init() < 0) {
		/* unreachable on Linux */
	}
	(void)pthread_atfork(NULL, NULL, s_after_fork);
}

void
bm_id_new(bm_id_t *ret_id)
{
	static __thread uint8_t pool[S_POOL_IDS * 10];
	static __thread size_t left;
	static __thread unsigned gen;
	uint64_t ms = (uint64_t)bm_wall_ms();
	unsigned now_gen;

	(void)pthread_once(&s_once, s_init);
	now_gen = atomic_load(&s_fork_gen);
	if (left < 10 || gen != now_gen) {
		randombytes_buf(pool, sizeof pool);
		left = sizeof pool;
		gen = now_gen;
	}
	for (int i = 0; i < 6; i++) {
		ret_id->b[i] = (uint8_t)(ms >> (40 - 8 * i));
	}
	memcpy(ret_id->b + 6, pool + sizeof pool - left, 10);
	/* Used bits are not kept around. */
	sodium_memzero(pool + sizeof pool - left, 10);
	left -= 10;
}

bool
bm_id_is_zero(const bm_id_t *id)
{
	static const bm_id_t zero;

	return memcmp(id, &zero, sizeof zero) == 0;
}

bool
bm_id_equal(const bm_id_t *a, const bm_id_t *b)
{
	return memcmp(a->b, b->b, sizeof a->b) == 0;
}

int64_t
bm_id_ms(const bm_id_t *id)
{
	uint64_t ms = 0;

	for (int i = 0; i < 6; i++) {
		ms = ms << 8 | id->b[i];
	}
	return (int64_t)ms;
}

void
bm_id_hex(const bm_id_t *id, char ret_hex[BM_ID_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < 16; i++) {
		ret_hex[2 * i] = digits[id->b[i] >> 4];
		ret_hex[2 * i + 1] = digits[id->b[i] & 15];
	}
	ret_hex[BM_ID_HEX_LEN] = '\0';
}

static int
s_nibble(char c)
{
	if (c >= '0' && c <= '9') {
		return c - '0';
	}
	if (c >= 'a' && c <= 'f') {
		return c - 'a' + 10;
	}
	if (c >= 'A' && c <= 'F') {
		return c - 'A' + 10;
	}
	return -1;
}

int
bm_id_parse(const char *hex, bm_id_t *ret_id)
{
	bm_id_t id;

	if (hex == NULL || ret_id == NULL || strlen(hex) != BM_ID_HEX_LEN) {
		return -EINVAL;
	}
	for (int i = 0; i < 16; i++) {
		int hi = s_nibble(hex[2 * i]), lo = s_nibble(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			return -EINVAL;
		}
		id.b[i] = (uint8_t)(hi << 4 | lo);
	}
	*ret_id = id;
	return 0;
}

static int
s_check_token(const char *s, size_t max)
{
	size_t n = 0;

	if (s == NULL) {
		return BM_EBADNAME;
	}
	for (; s[n] != '\0'; n++) {
		char c = s[n];

		if (n >= max) {
			return BM_EBADNAME;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')) {
			return BM_EBADNAME;
		}
	}
	return n == 0 ? BM_EBADNAME : 0;
}

int
bm_name_check(const char *name)
{
	return s_check_token(name, BM_NAME_MAX);
}

int
bm_cap_check(const char *cap)
{
	return s_check_token(cap, BM_CAP_MAX);
}

int
bm_host_check(const char *host)
{
	if (host == NULL || strchr(host, '.') != NULL) {
		return BM_EBADNAME; /* a NATS subject token: no dots */
	}
	return s_check_token(host, BM_HOST_MAX);
}

/*
 * name | @cap | name@host | @cap@host | @cap@* (docs/protocol.md §15).  The part
 * before the second '@' is checked in a copy, so the token checker stays
 * one loop.
 */
int
bm_address_check(const char *to)
{
	char part[BM_NAME_MAX + 1];
	const char *at;
	bool any;
	size_t n;

	if (to == NULL) {
		return BM_EBADNAME;
	}
	any = to[0] == '@';
	at = strchr(to + any, '@');
	if (at == NULL) {
		return any ? bm_cap_check(to + 1) : bm_name_check(to);
	}
	n = (size_t)(at - to) - any;
	/* "@cap@*": any host that has the capability (the local one first). */
	if (strlen(to) > BM_NAME_MAX || n == 0 ||
	    (bm_host_check(at + 1) < 0 && !(any && strcmp(at + 1, "*") == 0))) {
		return BM_EBADNAME;
	}
	memcpy(part, to + any, n);
	part[n] = '\0';
	return any ? bm_cap_check(part) : bm_name_check(part);
}

bool
bm_address_remote(const char *to)
{
	return to != NULL && to[0] != '\0' && strchr(to + 1, '@') != NULL;
}

int
bm_type_check(const char *type)
{
	size_t n;

	if (type == NULL) {
		return BM_EBADNAME;
	}
	for (n = 0; type[n] != '\0'; n++) {
		if (n >= BM_TYPE_MAX || type[n] <= ' ' || type[n] > '~') {
			return BM_EBADNAME;
		}
	}
	return n == 0 ? BM_EBADNAME : 0;
}

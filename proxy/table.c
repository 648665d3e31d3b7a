/*
 * table.c - the proxy floor's hash table: byte-string keys to pointers.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), power-of-two capacity kept at most 3/4 full.  Keys are
 * copied; values are the caller's.  The hash is FNV-1a 64 over the key:
 * keys here are short topics, so a byte loop beats anything clever.  The
 * proxy thread, each publisher and each subscriber own their own tables;
 * a table is never shared between threads.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy_private.h"

typedef struct {
	uint64_t hash;   /* 0 = empty slot */
	char *key;       /* malloc'd copy */
	size_t klen;     /* its length */
	void *val;       /* caller's value */
} s_slot_t;

struct bm__tab {
	s_slot_t *slots; /* capacity entries */
	size_t cap;      /* power of two */
	size_t n;        /* used slots */
};

static uint64_t
s_hash(const void *key, size_t len)
{
	const uint8_t *p = key;
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h ? h : 1;
}

bm__tab_t *
bm__tab_new(void)
{
	bm__tab_t *t = calloc(1, sizeof *t);

	if (t == NULL) {
		return NULL;
	}
	t->cap = 64;
	t->slots = calloc(t->cap, sizeof *t->slots);
	if (t->slots == NULL) {
		free(t);
		return NULL;
	}
	return t;
}

void
bm__tab_clear(bm__tab_t *t)
{
	for (size_t i = 0; i < t->cap; i++) {
		if (t->slots[i].hash != 0) {
			free(t->slots[i].key);
		}
	}
	memset(t->slots, 0, t->cap * sizeof *t->slots);
	t->n = 0;
}

void
bm__tab_destroy(bm__tab_t **self_p)
{
	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	bm__tab_clear(*self_p);
	free((*self_p)->slots);
	free(*self_p);
	*self_p = NULL;
}

static size_t
s_find(const bm__tab_t *t, uint64_t h, const void *key, size_t klen)
{
	size_t mask = t->cap - 1;

	for (size_t i = h & mask;; i = (i + 1) & mask) {
		const s_slot_t *s = &t->slots[i];

		if (s->hash == 0 ||
		    (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)) {
			return i;
		}
	}
}

void *
bm__tab_get(const bm__tab_t *t, const void *key, size_t klen)
{
	size_t i = s_find(t, s_hash(key, klen), key, klen);

	return t->slots[i].hash ? t->slots[i].val : NULL;
}

static int
s_grow(bm__tab_t *t)
{
	size_t ncap = t->cap * 2;
	s_slot_t *old = t->slots, *ns = calloc(ncap, sizeof *ns);

	if (ns == NULL) {
		return -ENOMEM;
	}
	t->slots = ns;
	for (size_t i = 0; i < t->cap; i++) {
		if (old[i].hash != 0) {
			size_t mask = ncap - 1, k = old[i].hash & mask;

			while (ns[k].hash != 0) {
				k = (k + 1) & mask;
			}
			ns[k] = old[i];
		}
	}
	t->cap = ncap;
	free(old);
	return 0;
}

void **
bm__tab_slot(bm__tab_t *t, const void *key, size_t klen, bool *ret_new)
{
	uint64_t h = s_hash(key, klen);
	size_t i = s_find(t, h, key, klen);
	s_slot_t *s;

	if (t->slots[i].hash != 0) {
		*ret_new = false;
		return &t->slots[i].val;
	}
	if ((t->n + 1) * 4 > t->cap * 3) {
		if (s_grow(t) < 0) {
			return NULL;
		}
		i = s_find(t, h, key, klen);
	}
	s = &t->slots[i];
	s->key = malloc(klen ? klen : 1);
	if (s->key == NULL) {
		return NULL;
	}
	memcpy(s->key, key, klen);
	s->klen = klen;
	s->hash = h;
	s->val = NULL;
	t->n++;
	*ret_new = true;
	return &s->val;
}

void *
bm__tab_del(bm__tab_t *t, const void *key, size_t klen)
{
	size_t mask = t->cap - 1, i = s_find(t, s_hash(key, klen), key, klen), j;
	void *val;

	if (t->slots[i].hash == 0) {
		return NULL;
	}
	val = t->slots[i].val;
	free(t->slots[i].key);
	t->slots[i].hash = 0;
	t->n--;
	/* Backward shift: pull later members of the probe run into the hole
	 * when their home slot does not lie cyclically in (i, j]. */
	for (j = (i + 1) & mask; t->slots[j].hash != 0; j = (j + 1) & mask) {
		size_t home = t->slots[j].hash & mask;
		bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);

		if (!stays) {
			t->slots[i] = t->slots[j];
			t->slots[j].hash = 0;
			i = j;
		}
	}
	return val;
}

size_t
bm__tab_size(const bm__tab_t *t)
{
	return t->n;
}

void *
bm__tab_next(const bm__tab_t *t, size_t *cur, const void **ret_key, size_t *ret_klen)
{
	for (size_t i = *cur; i < t->cap; i++) {
		if (t->slots[i].hash != 0) {
			*cur = i + 1;
			if (ret_key != NULL) {
				*ret_key = t->slots[i].key;
				*ret_klen = t->slots[i].klen;
			}
			return t->slots[i].val;
		}
	}
	*cur = t->cap;
	return NULL;
}

/*
 * map.c - a small open-addressing hash map from byte strings to pointers,
 * for the broker's directory (name -> agent, routing id -> agent).
 *
 * Keys are not copied: the caller keeps each key's bytes alive and
 * unchanged while it is in the map (the broker points them into the agent
 * record).  Linear probing with backward-shift deletion, so there are no
 * tombstones and lookups stay short; the table doubles at 1/2 load.
 * Iteration walks the slots in order and is stable while nothing is
 * inserted or removed.  FNV-1a hashing: keys here are short (5-byte
 * routing ids, names up to 64 bytes).  Not thread safe.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mesh_private.h"

typedef struct {
	uint64_t hash;     /* full hash; 0 = empty slot */
	const void *key;   /* caller-owned bytes */
	size_t klen;       /* their length */
	void *val;         /* the item */
} s_slot_t;

struct bm_map {
	s_slot_t *slots;   /* cap entries */
	size_t cap;        /* a power of two */
	size_t n;          /* items */
	s_slot_t last;     /* the last hit (a stream hits one key in a row) */
};

static uint64_t
s_hash(const void *key, size_t len)
{
	const uint8_t *p = key;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h = (h ^ p[i]) * 0x100000001b3ull;
	}
	return h ? h : 1; /* 0 marks an empty slot */
}

bm_map_t *
bm__map_new(void)
{
	bm_map_t *m = calloc(1, sizeof *m);

	if (m == NULL) {
		return NULL;
	}
	m->cap = 64;
	m->slots = calloc(m->cap, sizeof *m->slots);
	if (m->slots == NULL) {
		free(m);
		return NULL;
	}
	return m;
}

void
bm__map_destroy(bm_map_t **self_p)
{
	if (self_p != NULL && *self_p != NULL) {
		free((*self_p)->slots);
		free(*self_p);
		*self_p = NULL;
	}
}

size_t
bm__map_size(const bm_map_t *m)
{
	return m->n;
}

static size_t
s_find(const bm_map_t *m, uint64_t h, const void *key, size_t klen)
{
	size_t mask = m->cap - 1;

	for (size_t i = h & mask;; i = (i + 1) & mask) {
		const s_slot_t *s = &m->slots[i];

		if (s->hash == 0 ||
		    (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)) {
			return i;
		}
	}
}

void *
bm__map_get(bm_map_t *m, const void *key, size_t klen)
{
	size_t i;

	/* Traffic comes in runs from and to the same agents: the memo skips
	 * the hash.  It is cleared by every put and delete. */
	if (m->last.val != NULL && m->last.klen == klen && memcmp(m->last.key, key, klen) == 0) {
		return m->last.val;
	}
	i = s_find(m, s_hash(key, klen), key, klen);
	if (m->slots[i].hash == 0) {
		return NULL;
	}
	m->last = m->slots[i];
	return m->last.val;
}

static int
s_grow(bm_map_t *m)
{
	s_slot_t *old = m->slots;
	size_t oldcap = m->cap;

	m->slots = calloc(oldcap * 2, sizeof *m->slots);
	if (m->slots == NULL) {
		m->slots = old;
		return -ENOMEM;
	}
	m->cap = oldcap * 2;
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i].hash != 0) {
			m->slots[s_find(m, old[i].hash, old[i].key, old[i].klen)] = old[i];
		}
	}
	free(old);
	return 0;
}

int
bm__map_put(bm_map_t *m, const void *key, size_t klen, void *val)
{
	uint64_t h = s_hash(key, klen);
	size_t i;

	m->last = (s_slot_t){0};
	if ((m->n + 1) * 2 > m->cap && s_grow(m) < 0) {
		return -ENOMEM;
	}
	i = s_find(m, h, key, klen);
	if (m->slots[i].hash == 0) {
		m->n++;
	}
	m->slots[i] = (s_slot_t){.hash = h, .key = key, .klen = klen, .val = val};
	return 0;
}

void
bm__map_del(bm_map_t *m, const void *key, size_t klen)
{
	size_t mask = m->cap - 1, i = s_find(m, s_hash(key, klen), key, klen), j;

	m->last = (s_slot_t){0};
	if (m->slots[i].hash == 0) {
		return;
	}
	m->n--;
	/* Backward shift: pull later members of the probe run into the hole
	 * when their home slot does not lie between the hole and them. */
	for (j = (i + 1) & mask; m->slots[j].hash != 0; j = (j + 1) & mask) {
		size_t home = m->slots[j].hash & mask;

		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	m->slots[i] = (s_slot_t){0};
}

void *
bm__map_next(const bm_map_t *m, size_t *cursor)
{
	for (; *cursor < m->cap; (*cursor)++) {
		if (m->slots[*cursor].hash != 0) {
			return m->slots[(*cursor)++].val;
		}
	}
	return NULL;
}

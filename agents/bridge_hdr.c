/*
 * bridge_hdr.c - the bridge's "Bm" header: format and parse
 * (agents/bridge_hdr.h has the layout).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge_hdr.h"

int
bm_bh_msg_format(const bm_bh_msg_t *h, char *buf, size_t cap)
{
	char id[BM_ID_HEX_LEN + 1], corr[BM_ID_HEX_LEN + 1] = "-";
	int n;

	bm_id_hex(&h->id, id);
	if (!bm_id_is_zero(&h->corr)) {
		bm_id_hex(&h->corr, corr);
	}
	n = snprintf(buf, cap, "1 %s %s %s %s %u %" PRIu32 " %" PRIu32 " %" PRId64 " %s", id, corr,
	             h->from, h->to, (unsigned)h->priority, h->ttl_ms, h->attempt, h->ts_ms,
	             h->type);
	return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

int
bm_bh_rec_format(const bm_bh_rec_t *h, char *buf, size_t cap)
{
	char id[BM_ID_HEX_LEN + 1];
	int n;

	bm_id_hex(&h->id, id);
	n = snprintf(buf, cap, "1 %s %s %s %" PRIu32, id, h->peer, h->from, h->code);
	return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

/* ---- parsing: one field at a time, each ended by one space or the end ---- */

typedef struct {
	const char *p;  /* the next field */
	bool bad;       /* a field was missing or malformed */
} s_cur_t;

/* Copies the next field into out (cap bytes with its NUL). */
static void
s_word(s_cur_t *c, char *out, size_t cap)
{
	size_t n = 0;

	if (c->bad || c->p == NULL) {
		c->bad = true;
		return;
	}
	while (c->p[n] != '\0' && c->p[n] != ' ') {
		n++;
	}
	if (n == 0 || n >= cap) {
		c->bad = true;
		return;
	}
	memcpy(out, c->p, n);
	out[n] = '\0';
	c->p = c->p[n] == ' ' ? c->p + n + 1 : NULL;
}

/* The next field as a decimal number no larger than max. */
static uint64_t
s_num(s_cur_t *c, uint64_t max)
{
	char w[24], *end;
	unsigned long long v;

	s_word(c, w, sizeof w);
	if (c->bad) {
		return 0;
	}
	errno = 0;
	v = strtoull(w, &end, 10);
	if (w[0] < '0' || w[0] > '9' || *end != '\0' || errno != 0 || v > max) {
		c->bad = true;
		return 0;
	}
	return v;
}

static void
s_id(s_cur_t *c, bm_id_t *ret, bool dash_is_zero)
{
	char w[BM_ID_HEX_LEN + 1];

	s_word(c, w, sizeof w);
	if (c->bad) {
		return;
	}
	if (dash_is_zero && strcmp(w, "-") == 0) {
		memset(ret, 0, sizeof *ret);
		return;
	}
	if (bm_id_parse(w, ret) < 0) {
		c->bad = true;
	}
}

/* The layout's version, first. */
static s_cur_t
s_open(const char *v)
{
	s_cur_t c = {.p = v, .bad = v == NULL};

	if (!c.bad && s_num(&c, UINT32_MAX) != 1) {
		c.bad = true;
	}
	return c;
}

int
bm_bh_msg_parse(const char *v, bm_bh_msg_t *ret)
{
	s_cur_t c = s_open(v);
	bm_bh_msg_t h;

	memset(&h, 0, sizeof h);
	s_id(&c, &h.id, false);
	s_id(&c, &h.corr, true);
	s_word(&c, h.from, sizeof h.from);
	s_word(&c, h.to, sizeof h.to);
	h.priority = (uint8_t)s_num(&c, UINT8_MAX);
	h.ttl_ms = (uint32_t)s_num(&c, UINT32_MAX);
	h.attempt = (uint32_t)s_num(&c, UINT32_MAX);
	h.ts_ms = (int64_t)s_num(&c, INT64_MAX);
	s_word(&c, h.type, sizeof h.type);
	/* The sender must be name@host; the destination any remote address. */
	if (c.bad || c.p != NULL || bm_address_check(h.from) < 0 || !bm_address_remote(h.from) ||
	    h.from[0] == '@' || bm_address_check(h.to) < 0 || !bm_address_remote(h.to) ||
	    bm_type_check(h.type) < 0) {
		return -EINVAL;
	}
	*ret = h;
	return 0;
}

int
bm_bh_rec_parse(const char *v, bm_bh_rec_t *ret)
{
	s_cur_t c = s_open(v);
	bm_bh_rec_t h;

	memset(&h, 0, sizeof h);
	s_id(&c, &h.id, false);
	s_word(&c, h.peer, sizeof h.peer);
	s_word(&c, h.from, sizeof h.from);
	h.code = (uint32_t)s_num(&c, UINT32_MAX);
	/* from only informs (acker@host, cut when long): any one word. */
	if (c.bad || c.p != NULL || bm_name_check(h.peer) < 0) {
		return -EINVAL;
	}
	*ret = h;
	return 0;
}

int
bm_bh_ack_add(char *buf, size_t cap, size_t *len, const bm_id_t *id, const char *peer)
{
	size_t pl = strlen(peer);

	if (*len + BM_ID_HEX_LEN + 1 + pl + 1 > cap) {
		return -ENOSPC;
	}
	bm_id_hex(id, buf + *len); /* writes a NUL, overwritten below */
	buf[*len + BM_ID_HEX_LEN] = ' ';
	memcpy(buf + *len + BM_ID_HEX_LEN + 1, peer, pl);
	buf[*len + BM_ID_HEX_LEN + 1 + pl] = '\n';
	*len += BM_ID_HEX_LEN + 1 + pl + 1;
	return 0;
}

int
bm_bh_ack_next(const char **p, const char *end, bm_id_t *ret_id, char ret_peer[BM_NAME_MAX + 1])
{
	const char *s = *p, *nl;
	char hex[BM_ID_HEX_LEN + 1];
	size_t pl;

	if (s >= end) {
		return 0;
	}
	nl = memchr(s, '\n', (size_t)(end - s));
	if (nl == NULL || nl - s < BM_ID_HEX_LEN + 2 || s[BM_ID_HEX_LEN] != ' ') {
		return -EINVAL;
	}
	memcpy(hex, s, BM_ID_HEX_LEN);
	hex[BM_ID_HEX_LEN] = '\0';
	pl = (size_t)(nl - s) - BM_ID_HEX_LEN - 1;
	if (pl > BM_NAME_MAX || memchr(s + BM_ID_HEX_LEN + 1, '\0', pl) != NULL ||
	    bm_id_parse(hex, ret_id) < 0) {
		return -EINVAL;
	}
	memcpy(ret_peer, s + BM_ID_HEX_LEN + 1, pl);
	ret_peer[pl] = '\0';
	if (bm_name_check(ret_peer) < 0) {
		return -EINVAL;
	}
	*p = nl + 1;
	return 1;
}

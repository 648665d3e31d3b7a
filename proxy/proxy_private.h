/*
 * proxy_private.h - what the proxy floor's files share: a small hash
 * table, the broadcast header codec and the wire constants.  Not
 * installed; nothing above proxy/ includes it.
 */
#ifndef BM_PROXY_PRIVATE_H
#define BM_PROXY_PRIVATE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "bm_proxy.h"

/* ---- wire constants (wire.c specifies them byte by byte) ---- */
#define BM__SYNC_TOKEN_LEN 16            /* lowercase hex digits */
#define BM__SYNC_HEAD (1 + BM__SYNC_TOKEN_LEN + 2) /* 0x00 token mode '/' */
#define BM__SYNC_MODE_LVC 'L'            /* replay the LVC, then sync */
#define BM__SYNC_MODE_SYNC 'S'           /* sync only */
#define BM__HDR_FLAG_SYNC 1u             /* header flags: a sync marker */
#define BM__HDR_MAX 128                  /* encoded header bound */
#define BM__REPORT_TAG 0x02              /* subscriber report, upstream */
#define BM__REPORT_MAX 160               /* encoded report bound */

typedef struct bm__hdr {
	const char *from;     /* points into the frame (decode) */
	size_t from_len;      /* its length */
	uint64_t session;     /* publisher instance */
	uint64_t seq;         /* per publisher */
	uint64_t tseq;        /* per (publisher, topic) */
	int64_t ts_ms;        /* wall ms */
	uint64_t flags;       /* BM__HDR_FLAG_* */
} bm__hdr_t;

/* Encodes [1, from, session, seq, tseq, ts_ms, flags]; returns the length
 * or -ENOSPC. */
int bm__hdr_encode(const bm__hdr_t *h, uint8_t *buf, size_t size);
/* Decodes and checks a header at p (a body may follow it); returns the
 * header's length (> 0) or BM_EPROTO / BM_EVERSION. */
int bm__hdr_decode(const uint8_t *p, size_t n, bm__hdr_t *ret);

/* The topic at the start of a broadcast's frame 0: the run of bytes in
 * 0x21..0x7e (the header after it starts with 0x97).  Returns its length,
 * 0 when there is none. */
static inline size_t
bm__topic_span(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n && i <= BM_TOPIC_MAX && p[i] >= 0x21 && p[i] <= 0x7e) {
		i++;
	}
	return i;
}

/* Frame 0 holds the whole message (topic, header, body) up to this body
 * size; a larger body travels, zero copy, in a second frame. */
#define BM__BCAST_INLINE_MAX (64u << 10)

typedef struct bm__report {
	const char *name;     /* subscriber name */
	size_t name_len;
	const char *token;    /* its 16-hex-digit token */
	uint64_t received;    /* broadcasts it received so far */
	uint64_t gaps;        /* messages it knows it lost so far */
} bm__report_t;

/* 0x02 + msgpack [1, name, token, received, gaps]. */
int bm__report_encode(const bm__report_t *r, uint8_t *buf, size_t size);
int bm__report_decode(const uint8_t *p, size_t n, bm__report_t *ret);

/* ---- hash table: byte-string keys (copied) -> void * ---- */
typedef struct bm__tab bm__tab_t;

bm__tab_t *bm__tab_new(void);
/* Frees keys and the table (not the values).  NULL-safe. */
void bm__tab_destroy(bm__tab_t **self_p);
void *bm__tab_get(const bm__tab_t *t, const void *key, size_t klen);
/* Slot for key, inserted (value NULL, *ret_new true) when missing; NULL on
 * allocation failure.  The slot is valid until the next insert or delete. */
void **bm__tab_slot(bm__tab_t *t, const void *key, size_t klen, bool *ret_new);
/* Removes key; returns its value or NULL. */
void *bm__tab_del(bm__tab_t *t, const void *key, size_t klen);
size_t bm__tab_size(const bm__tab_t *t);
/* Removes everything (values are not freed). */
void bm__tab_clear(bm__tab_t *t);
/* Iterates: start with *cur = 0; NULL at the end.  ret_key may be NULL. */
void *bm__tab_next(const bm__tab_t *t, size_t *cur, const void **ret_key, size_t *ret_klen);

/* libzmq -1/errno to a negative errno. */
static inline int
bm__pzerr(void)
{
	int e = zmq_errno();

	if (e == ETERM) {
		return -ESHUTDOWN;
	}
	return -e;
}

/* Reads one whole multipart message into f[0..max-1]; extra parts are
 * dropped.  Returns the part count (> max when parts were dropped), or a
 * negative errno (-EAGAIN when nothing is waiting with ZMQ_DONTWAIT). */
int bm__recv_parts(void *sock, zmq_msg_t *f, int max, int flags);

/* The endpoint a publisher or subscriber connects to: `endpoint` when
 * given, else ipc://DIR/sock with DIR resolved from `dir` (BM_ENOBROKER
 * when it does not exist).  Returns 0 or a negative code. */
int bm__proxy_endpoint(const char *dir, const char *endpoint, const char *sock, char *ret,
                       size_t size);
void bm__close_parts(zmq_msg_t *f, int n);

/* A publisher's shared-memory log, or NULL (tests scribble on it). */
struct bm_bcastlog;
struct bm_bcastlog *bm__pub_log(bm_pub_t *p);

#endif

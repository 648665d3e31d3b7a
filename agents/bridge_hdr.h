/*
 * bridge_hdr.h - the one header, "Bm", that carries a message's envelope
 * (or an ACK/NACK record's) between bridges through JetStream.
 *
 * One header of space-separated fields and not one header per field:
 * every header is a map entry that libnats builds, encodes and parses on
 * both sides and that nats-server scans when it stores the message; eight
 * of them cost a fifth of bare JetStream's throughput on a 2-vCPU machine
 * (bench/README.md).  Every field is a name, an id or a number (none holds
 * a space); the type, printable ASCII without spaces, goes last.
 *
 *   message  "1 <id> <corr|-> <from name@host> <to> <priority> <ttl ms>
 *             <attempt> <ts wall ms> <type>"
 *   record   "1 <id> <peer> <from acker@host> <code>"
 *
 * "1" is the layout's version: a bridge refuses (and acks away) what it
 * cannot read.  A NACK's words travel apart, in Bm-Text.
 *
 * ACKs for one host go out together: an ACK record's body may name more
 * ACKed messages, a line "<id> <peer>\n" each (up to BM_BH_ACKS_MAX in
 * all), so the way back costs one JetStream message per batch and not
 * one per message.
 *
 * Private to beast-bridge: not installed, not part of libbeastmesh.
 */
#ifndef BM_BRIDGE_HDR_H
#define BM_BRIDGE_HDR_H

#include <stddef.h>
#include <stdint.h>

#include "bm_mesh.h"

#define BM_BH_NAME "Bm"
/* Room for either layout, with every field at its longest. */
#define BM_BH_MAX 320

typedef struct bm_bh_msg {
	bm_id_t id;
	bm_id_t corr;                          /* all zero: none */
	char from[BM_NAME_MAX + 1];            /* sender as name@host */
	char to[BM_ADDR_MAX + BM_HOST_MAX + 2]; /* name@host or @cap@host */
	char type[BM_TYPE_MAX + 1];
	uint8_t priority;
	uint32_t ttl_ms;                       /* 0 = none */
	uint32_t attempt;
	int64_t ts_ms;                         /* wall ms at the first send */
} bm_bh_msg_t;

typedef struct bm_bh_rec {
	bm_id_t id;                            /* the message answered */
	char peer[BM_NAME_MAX + 1];            /* its local sender */
	char from[BM_NAME_MAX + 1];            /* who answered, as acker@host */
	uint32_t code;                         /* 0 = ACK, else a NACK's wire code */
} bm_bh_rec_t;

/* ACKs in one record, the header's included; a body line at its longest. */
#define BM_BH_ACKS_MAX 256
#define BM_BH_ACK_LINE (BM_ID_HEX_LEN + 1 + BM_NAME_MAX + 1)

/* Writes the header value into buf; returns its length, or -ENOSPC. */
int bm_bh_msg_format(const bm_bh_msg_t *h, char *buf, size_t cap);
int bm_bh_rec_format(const bm_bh_rec_t *h, char *buf, size_t cap);

/* Reads a header value (NULL allowed); 0, or -EINVAL when any field is
 * missing, malformed, out of range or followed by more. */
int bm_bh_msg_parse(const char *v, bm_bh_msg_t *ret);
int bm_bh_rec_parse(const char *v, bm_bh_rec_t *ret);

/* Appends the body line for one more ACK at buf + *len (cap bytes in
 * all): 0, or -ENOSPC (nothing written). */
int bm_bh_ack_add(char *buf, size_t cap, size_t *len, const bm_id_t *id, const char *peer);
/* Reads the next body line from [*p, end): 1 with *p moved past it, 0 at
 * the end, -EINVAL when the line is not one (the rest is then unread). */
int bm_bh_ack_next(const char **p, const char *end, bm_id_t *ret_id,
                   char ret_peer[BM_NAME_MAX + 1]);

#endif

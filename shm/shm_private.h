/*
 * shm_private.h - what the shm floor's files share and nobody else sees:
 * the ring header layout, record types reserved for blobs, the doorbell.
 */
#ifndef BM_SHM_PRIVATE_H
#define BM_SHM_PRIVATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bm_shm.h"

/* ---- ring (ring.c specifies the layout byte by byte) ---- */

#define BM__RING_MAGIC UINT64_C(0x474e495248534d42) /* "BMSHRING" little-endian */
#define BM__RING_VERSION 1
#define BM__RING_HDR_SIZE 4096
#define BM__RING_ALIGN 64
#define BM__RING_TYPE_WRAP 0xFFFFFFFFu

/* Doorbell state words. */
enum {
	BM__DB_IDLE = 0,     /* the side is awake */
	BM__DB_WAITING = 1,  /* the side is asleep or about to sleep */
	BM__DB_NOTIFIED = 2, /* the peer claimed the wake-up: one datagram sent */
};

struct bm__ring_hdr {
	uint64_t magic;        /* 0: BM__RING_MAGIC */
	uint32_t version;      /* 8: BM__RING_VERSION */
	uint32_t hdr_size;     /* 12: BM__RING_HDR_SIZE */
	uint64_t capacity;     /* 16: bytes of record space after the header */
	uint32_t flags;        /* 24: BM_RING_* the producer used (informational) */
	uint32_t producer_pid; /* 28: informational */
	uint8_t pad0[32];      /* 32 */
	_Atomic uint64_t head; /* 64: producer's write position (bytes, monotonic) */
	uint8_t pad1[56];      /* 72 */
	_Atomic uint64_t tail; /* 128: consumer's read position */
	_Atomic uint64_t blob_done; /* 136: blobs the consumer has finished */
	_Atomic uint64_t blob_bad;  /* 144: of those, blobs that failed checks */
	uint8_t pad2[40];           /* 152 */
	_Atomic uint32_t cons_wait; /* 192: consumer's doorbell state */
	uint8_t pad3[60];           /* 196 */
	_Atomic uint32_t prod_wait; /* 256: producer's doorbell state */
	uint8_t pad4[BM__RING_HDR_SIZE - 260]; /* 260 */
};

_Static_assert(sizeof(struct bm__ring_hdr) == BM__RING_HDR_SIZE, "ring header is one page");

/* Internal ring access for the channel and blob layers. */
struct bm__ring_hdr *bm__ring_hdr(bm_ring_t *ring);
bool bm__ring_is_producer(const bm_ring_t *ring);
/* Consumer: a record (not a wrap) is committed and unread. */
bool bm__ring_readable(bm_ring_t *ring);
/* Producer: room for a payload of len bytes (counting a wrap record). */
bool bm__ring_writable(bm_ring_t *ring, size_t len);
/* Whether the ring has failed a check (sticky). */
bool bm__ring_broken(const bm_ring_t *ring);

/* ---- doorbell (doorbell.c) ---- */

#define BM__DB_MAX_FDS 8

typedef struct {
	int fd;                   /* connected SOCK_SEQPACKET socket */
	_Atomic uint32_t *mine;   /* my waiting word in the ring header */
	_Atomic uint32_t *theirs; /* the peer's waiting word */
	int owed;                 /* wake datagrams promised to us, not yet read */
	int spin_us;              /* spin before sleeping */
	bool dead;                /* EOF or error seen on the socket */
	int nfds;                 /* fds received and not yet taken */
	int fds[BM__DB_MAX_FDS];  /* received fds (blob objects) */
	uint64_t fd_ids[BM__DB_MAX_FDS]; /* their blob ids */
} bm__doorbell_t;

typedef bool (*bm__ready_fn)(void *arg);

void bm__doorbell_init(bm__doorbell_t *db, int fd, _Atomic uint32_t *mine,
                       _Atomic uint32_t *theirs, int spin_us);
void bm__doorbell_fini(bm__doorbell_t *db);
/* Waits until ready(arg) (1), deadline passes (-ETIMEDOUT), or the peer is
 * gone (BM_EPEER).  deadline_ns < 0 = forever, 0 = check once. */
int bm__doorbell_wait(bm__doorbell_t *db, bm__ready_fn ready, void *arg, int64_t deadline_ns);
typedef int (*bm__try_fn)(void *arg);
/*
 * A consumer's read loop, shared by the bulk channel and the broadcast
 * log: calls try_fn(try_arg) until it returns anything but -EAGAIN, waiting on
 * the doorbell (until ready(arg)) between tries.  timeout_ms 0: one try,
 * then -EAGAIN, or BM_EPEER when the peer has hung up and nothing is
 * left; otherwise -ETIMEDOUT at the deadline (also when ready() keeps
 * saying yes and every try fails), BM_EPEER, or try_fn's result.
 */
int bm__doorbell_read(bm__doorbell_t *db, bm__try_fn try_fn, void *try_arg,
                      bm__ready_fn ready, void *arg, int timeout_ms);
/* After publishing: wakes the peer if it sleeps.  BM_EPEER when it is gone. */
int bm__doorbell_ring(bm__doorbell_t *db);
/* Sets my waiting word for an outside poll: 1 = ready now, 0 = armed. */
int bm__doorbell_arm(bm__doorbell_t *db, bm__ready_fn ready, void *arg);
/* Clears my waiting word and reads what is queued (never blocks). */
int bm__doorbell_drain(bm__doorbell_t *db);
/* Whether the peer has hung up (never blocks). */
bool bm__doorbell_peer_gone(bm__doorbell_t *db);
/* Sends an fd with a blob id (producer → consumer). */
int bm__doorbell_send_fd(bm__doorbell_t *db, uint64_t id, int fd);
/* Takes the fd sent with blob id, waiting up to the deadline. */
int bm__doorbell_take_fd(bm__doorbell_t *db, uint64_t id, int64_t deadline_ns, int *ret_fd);

/* Deadline in bm_mono_ns() terms from a timeout in ms (-1 forever, 0 now). */
int64_t bm__deadline(int timeout_ms);

/* ---- channel internals for blob.c ---- */
bm__doorbell_t *bm__channel_doorbell(bm_channel_t *ch);
uint64_t bm__channel_next_blob_id(bm_channel_t *ch);
/* Consumer: the streamed-blob size cap (bm_channel_opts_t.max_blob). */
uint64_t bm__channel_max_blob(const bm_channel_t *ch);
uint64_t *bm__channel_bad_seen(bm_channel_t *ch);
/* Blobs handed over so far (ids 1..n). */
uint64_t bm__channel_blobs_sent(const bm_channel_t *ch);

/* ---- setup helpers shared by channel.c and bcastlog.c ---- */
struct sockaddr_un;
/* Names: 1-64 bytes of [A-Za-z0-9._-], not starting with '.'. */
bool bm__shm_name_ok(const char *name);
/* <rundir>/shm/<name>.sock into *ret_addr; with create, makes the 0700
 * shm/ directory.  BM_EBADNAME, BM_EUNSAFEDIR, -ENAMETOOLONG, -errno. */
int bm__shm_sock_path(const char *rundir, const char *name, bool create,
                      struct sockaddr_un *ret_addr);
/* SO_PEERCRED of a connected Unix socket: 0 when the peer is our uid,
 * else BM_EDENIED (or -errno). */
int bm__shm_check_peer(int fd);

/* ---- broadcast log internals, for tests and fuzzers (bcastlog.c) ---- */
/* The publisher's mapping of the log (header page + records) and of the
 * cursor table: what a hostile test scribbles on. */
uint8_t *bm__bcastlog_base(bm_bcastlog_t *log, size_t *ret_len);
uint8_t *bm__bcastlog_cursors(bm_bcastlog_t *log, size_t *ret_len);
/* Puts a reader back at position 0, sequence 1, unbroken (fuzzing). */
void bm__bcastlog_reader_reset(bm_bcastlog_reader_t *r);

/* Our ring of a route, header page and records (tests scribble on it). */
uint8_t *bm__route_out_base(bm_route_t *r, size_t *ret_len);

/* Reserved record types (>= BM_RING_TYPE_RESERVED). */
enum {
	BM__REC_BLOB_BEGIN = 0xB10B0001u, /* blob header, data follows in CHUNKs */
	BM__REC_BLOB_CHUNK = 0xB10B0002u, /* blob bytes */
	BM__REC_BLOB_END = 0xB10B0003u,   /* blob trailer with checksum */
	BM__REC_BLOB_FD = 0xB10B0004u,    /* blob in a sealed memfd sent on the socket */
};

#endif

/*
 * bm_shm.h - bulk channel: SPSC rings in shared memory with Unix-socket
 * doorbells, zero-copy blobs and point clouds.  docs/shm.md explains the
 * design; shm/ring.c specifies the shared layout byte by byte.
 *
 * Objects:
 *   bm_ring_t      one single-producer single-consumer ring in a shared
 *                  memory object; non-blocking, no system calls.
 *   bm_listener_t  the consumer's listening socket $BEAST_DIR/shm/<name>.sock.
 *   bm_channel_t   one connected (producer, consumer) pair: a ring plus a
 *                  SOCK_SEQPACKET doorbell; blocking calls with timeouts.
 *   bm_blob_t      a received blob (mapped read-only or assembled).
 *   bm_cloud_t     a point cloud in memory; PLY/PCD readers and writers.
 *
 * Threading: every object belongs to one thread at a time.  A channel's two
 * ends live in two processes (or threads); that is the only concurrency.
 *
 * Errors: negative errno or BM_E*: BM_EPEER (the peer died or broke the
 * protocol), BM_ECORRUPT (shared memory failed a bounds or sequence check),
 * BM_EFULL (ring full, non-blocking call), -ETIMEDOUT, -EAGAIN (nothing to
 * read, non-blocking call), BM_ETOOBIG (record larger than the ring allows).
 */
#ifndef BM_SHM_H
#define BM_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bm_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- ring ---- */

typedef struct bm_ring bm_ring_t;

/* Smallest and largest ring capacity (bytes of record space). */
#define BM_RING_MIN_CAPACITY ((size_t)64 << 10)
#define BM_RING_MAX_CAPACITY ((size_t)64 << 30)
/* Record header size; a record of len bytes takes align64(16 + len). */
#define BM_RING_RECORD_HEADER 16
/* Record types at or above this value are reserved for beastmesh. */
#define BM_RING_TYPE_RESERVED 0xB10B0000u

/* Flags for bm_ring_create() and bm_channel_connect(). */
enum {
	BM_RING_HUGEPAGES = 1 << 0, /* ask for huge pages (hugetlb, else THP advice) */
	BM_RING_PREFAULT = 1 << 1,  /* touch every page at creation */
	BM_RING_SHM_OPEN = 1 << 2,  /* use shm_open(O_EXCL, random name) not memfd */
};

/* One record seen by the consumer.  data points into the ring (read only,
 * valid until release); len is bounds-checked against the ring. */
typedef struct {
	const void *data; /* payload in place */
	size_t len;       /* payload length */
	uint32_t type;    /* caller's record type */
	uint64_t seq;     /* record sequence number (0, 1, 2, ...) */
} bm_ring_rec_t;

/*
 * Creates a ring of `capacity` bytes (rounded up to 4 KiB, between
 * BM_RING_MIN_CAPACITY and BM_RING_MAX_CAPACITY) in a new shared-memory
 * object and maps it as the producer.  The object is a memfd sealed against
 * shrink and grow (or, with BM_RING_SHM_OPEN, a 0600 O_EXCL shm_open object
 * unlinked at once): nothing is left behind when the process dies.
 * bm_ring_fd() gives the fd to hand to the consumer.  -EINVAL, -ENOMEM, -errno.
 */
BM_EXPORT int bm_ring_create(size_t capacity, unsigned flags, bm_ring_t **ret_ring);
/*
 * Maps an existing ring fd as the consumer.  The fd is dup'ed; the caller
 * keeps its own.  The header is validated (magic, version, capacity against
 * the object's size) and the seals checked: BM_ECORRUPT or BM_EVERSION.
 */
BM_EXPORT int bm_ring_attach(int fd, bm_ring_t **ret_ring);
/* Unmaps and closes.  NULL-safe; sets *self_p to NULL. */
BM_EXPORT void bm_ring_destroy(bm_ring_t **self_p);
/* The shared-memory fd (owned by the ring). */
BM_EXPORT int bm_ring_fd(const bm_ring_t *self);
/* Record space in bytes. */
BM_EXPORT size_t bm_ring_capacity(const bm_ring_t *self);
/* Largest payload one record can carry. */
BM_EXPORT size_t bm_ring_max_record(const bm_ring_t *self);

/*
 * Producer: reserves room for a record of len bytes and returns a pointer
 * to its payload in the ring (64-byte aligned + 16).  Nothing is visible to
 * the consumer until bm_ring_commit().  One reservation at a time (-EBUSY).
 * BM_EFULL when there is no room now, BM_ETOOBIG when len can never fit,
 * BM_ECORRUPT when the consumer's index is out of bounds.
 */
BM_EXPORT int bm_ring_reserve(bm_ring_t *self, size_t len, void **ret_ptr);
/* Publishes the reserved record with `type` and final length len (<= the
 * reserved length).  -EINVAL without a reservation. */
BM_EXPORT int bm_ring_commit(bm_ring_t *self, uint32_t type, size_t len);
/* Drops a reservation. */
BM_EXPORT void bm_ring_abort(bm_ring_t *self);
/*
 * Consumer: the oldest record, in place.  -EAGAIN when empty, BM_ECORRUPT
 * when the shared header or record fails a check (the ring is then dead:
 * every later call returns BM_ECORRUPT).  Peeking twice returns the same
 * record.
 */
BM_EXPORT int bm_ring_peek(bm_ring_t *self, bm_ring_rec_t *ret_rec);
/* Frees the peeked record's space.  -EINVAL when nothing is peeked. */
BM_EXPORT int bm_ring_release(bm_ring_t *self);
/* Copying conveniences: write = reserve + memcpy + commit;
 * read = peek + memcpy + release (-EMSGSIZE, record kept, when size is too
 * small; ret_len then says how much is needed). */
BM_EXPORT int bm_ring_write(bm_ring_t *self, uint32_t type, const void *buf, size_t len);
BM_EXPORT int bm_ring_read(bm_ring_t *self, void *buf, size_t size, size_t *ret_len,
                           uint32_t *ret_type);
/* Bytes committed and not yet released, as the caller's side sees them. */
BM_EXPORT size_t bm_ring_used(const bm_ring_t *self);

/* ---- channel ---- */

typedef struct bm_listener bm_listener_t;
typedef struct bm_channel bm_channel_t;

/* Names of channels: 1-64 bytes of [A-Za-z0-9._-], not starting with '.'. */
#define BM_CHANNEL_NAME_MAX 64

typedef struct {
	size_t capacity; /* ring bytes; 0 = 4 MiB */
	unsigned flags;  /* BM_RING_* */
	int spin_us;     /* spin this long before sleeping; <0 = default (50) */
	uint64_t max_blob; /* consumer: a streamed blob larger than this is
	                    * drained, not assembled, and refused with
	                    * BM_ETOOBIG; 0 = BM_BLOB_MAX_DEFAULT */
} bm_channel_opts_t;

/* Largest streamed blob a consumer assembles by default (16 GiB). */
#define BM_BLOB_MAX_DEFAULT ((uint64_t)16 << 30)

/*
 * Consumer: listens on <rundir>/shm/<name>.sock (rundir as for
 * bm_rundir_resolve(); the shm/ subdirectory is made 0700).  A stale socket
 * left by a dead listener is taken over; a live one gives BM_ENAMETAKEN.
 * BM_EBADNAME for a bad name.
 */
BM_EXPORT int bm_listener_open(const char *rundir, const char *name, bm_listener_t **ret_l);
/* Closes and unlinks the socket.  NULL-safe. */
BM_EXPORT void bm_listener_destroy(bm_listener_t **self_p);
/* Pollable fd: readable when a producer is connecting. */
BM_EXPORT int bm_listener_fd(const bm_listener_t *self);
/*
 * Accepts one producer (waits up to timeout_ms; -1 forever), checks its
 * SO_PEERCRED uid, receives and validates its ring, and answers.
 * -ETIMEDOUT, BM_EDENIED (other uid), BM_EPEER, BM_ECORRUPT.
 */
BM_EXPORT int bm_listener_accept(bm_listener_t *self, int timeout_ms, const bm_channel_opts_t *opts,
                                 bm_channel_t **ret_ch);

/*
 * Producer: connects to consumer `to` in rundir, creates the ring
 * (opts may be NULL) and hands it over.  -ENOENT/-ECONNREFUSED when nobody
 * listens, -ETIMEDOUT, BM_EDENIED, BM_EPEER.  `as` (may be NULL) names the
 * producer to the consumer.
 */
BM_EXPORT int bm_channel_connect(const char *rundir, const char *to, const char *as,
                                 const bm_channel_opts_t *opts, int timeout_ms,
                                 bm_channel_t **ret_ch);
/* Closes the socket (the peer sees EOF), unmaps the ring.  NULL-safe. */
BM_EXPORT void bm_channel_destroy(bm_channel_t **self_p);
/* The producer's name as it introduced itself ("" when none). */
BM_EXPORT const char *bm_channel_peer_name(const bm_channel_t *self);
BM_EXPORT bool bm_channel_is_producer(const bm_channel_t *self);
BM_EXPORT bm_ring_t *bm_channel_ring(bm_channel_t *self);

/*
 * The doorbell socket, for the caller's own poll/zmq_poll loop: call
 * bm_channel_arm() first; if it returns 1 the channel is ready now (do not
 * sleep); if 0, poll the fd for POLLIN, then call the channel again (peek
 * or reserve with timeout 0).  Ready means: a record to read (consumer),
 * room or a blob confirmation (producer).
 */
BM_EXPORT int bm_channel_fd(const bm_channel_t *self);
BM_EXPORT int bm_channel_arm(bm_channel_t *self);

/*
 * Blocking forms of the ring calls.  timeout_ms: 0 = do not wait, -1 =
 * forever.  Reserve: BM_EFULL (timeout 0), -ETIMEDOUT, BM_EPEER (consumer
 * gone).  Peek: -EAGAIN (timeout 0), -ETIMEDOUT, BM_EPEER (producer gone and
 * every committed record read).  Commit and release ring the peer when it
 * sleeps; they return BM_EPEER when it is gone.
 */
BM_EXPORT int bm_channel_reserve(bm_channel_t *self, size_t len, int timeout_ms, void **ret_ptr);
BM_EXPORT int bm_channel_commit(bm_channel_t *self, uint32_t type, size_t len);
BM_EXPORT int bm_channel_peek(bm_channel_t *self, int timeout_ms, bm_ring_rec_t *ret_rec);
BM_EXPORT int bm_channel_release(bm_channel_t *self);
BM_EXPORT int bm_channel_send(bm_channel_t *self, uint32_t type, const void *buf, size_t len,
                              int timeout_ms);
BM_EXPORT int bm_channel_recv(bm_channel_t *self, void *buf, size_t size, int timeout_ms,
                              bm_ring_rec_t *ret_rec);

/* ---- direct routes ----
 *
 * A route joins two agents on one host in both directions: a ring each
 * way (each side creates the ring it writes) and one Unix socket that
 * carried the setup and then rings both doorbells (shm/route.c specifies
 * the setup datagrams; docs/shm.md explains it).  The mesh client uses
 * routes for directed messages once beastd has introduced the two agents
 * (the token).  Non-blocking throughout: a full ring is BM_EFULL and the
 * caller takes another path.
 */
typedef struct bm_route bm_route_t;

#define BM_ROUTE_TOKEN 16            /* bytes of an introduction token */
#define BM_ROUTE_NAME_MAX 64         /* agent names */
#define BM_ROUTE_REC 0x524f5554u     /* record type of a route's records */

/* Listens for routes to agent `name` on <rundir>/shm/rt.<name>.sock (a
 * bm_listener_t: poll bm_listener_fd, destroy with bm_listener_destroy). */
BM_EXPORT int bm_route_listen(const char *rundir, const char *name, bm_listener_t **ret_l);
/*
 * Acceptor: accepts one connection waiting on l (never blocks on l; waits
 * at most 20 ms for the connector's offer), checks its uid, maps the
 * offered ring.  The route is not up until bm_route_answer(); check
 * bm_route_peer() and bm_route_token() first.  -EAGAIN (nobody waiting),
 * BM_EDENIED, BM_EPEER, BM_ECORRUPT, BM_EVERSION.
 */
BM_EXPORT int bm_route_accept(bm_listener_t *l, bm_route_t **ret_route);
BM_EXPORT const char *bm_route_peer(const bm_route_t *r);
BM_EXPORT const uint8_t *bm_route_token(const bm_route_t *r);
/* Acceptor: creates our ring (capacity bytes) and hands it over; the
 * route is up.  BM_EPEER, -errno. */
BM_EXPORT int bm_route_answer(bm_route_t *r, size_t capacity);
/*
 * Connector: connects to agent `to`'s listener, creates our ring, offers
 * it with our name `as` and the token; never waits for the acceptor.  Poll
 * bm_route_fd() and call bm_route_finish(): 1 = up, 0 = not yet, < 0 =
 * refused (BM_EPEER when the acceptor closed).  -ENOENT/-ECONNREFUSED
 * (nobody listens), BM_EFULL (its backlog is full), BM_EDENIED.
 */
BM_EXPORT int bm_route_connect(const char *rundir, const char *to, const char *as,
                               const uint8_t token[BM_ROUTE_TOKEN], size_t capacity,
                               bm_route_t **ret_route);
BM_EXPORT int bm_route_finish(bm_route_t *r);
/* Closes the socket (the peer sees EOF) and unmaps both rings.  NULL-safe. */
BM_EXPORT void bm_route_destroy(bm_route_t **self_p);
BM_EXPORT bool bm_route_up(const bm_route_t *r);
/* The socket: readable for the answer (connecting), a doorbell or EOF. */
BM_EXPORT int bm_route_fd(const bm_route_t *r);
/* Largest record (a + b bytes) bm_route_send takes. */
BM_EXPORT size_t bm_route_max_record(const bm_route_t *r);
/*
 * Writes one record of a (alen bytes) then b (blen, may be 0) and wakes
 * the peer if it sleeps.  0, BM_EFULL (no room now: nothing written),
 * BM_ETOOBIG, BM_EPEER (gone), BM_ECORRUPT (the peer broke the ring's
 * shared indices), -ENOTCONN (not up yet).  BM_EPEER and BM_ECORRUPT are
 * sticky: the route is dead.
 */
BM_EXPORT int bm_route_send(bm_route_t *r, const void *a, size_t alen, const void *b,
                            size_t blen);
/* The oldest record from the peer, in place (copy it before trusting its
 * bytes), then release it.  -EAGAIN (none), BM_EPEER (the peer is gone and
 * everything it committed is read), BM_ECORRUPT (sticky). */
BM_EXPORT int bm_route_peek(bm_route_t *r, bm_ring_rec_t *ret_rec);
BM_EXPORT int bm_route_release(bm_route_t *r);
/* A record is waiting (cheap: one shared load). */
BM_EXPORT bool bm_route_readable(bm_route_t *r);
/* Before sleeping on bm_route_fd(): 1 = look now (a record, or a failure
 * to find), 0 = armed (the peer will ring).  After waking, read until
 * -EAGAIN; bm_route_disarm() reads the doorbell datagrams. */
BM_EXPORT int bm_route_arm(bm_route_t *r);
BM_EXPORT void bm_route_disarm(bm_route_t *r);

/* ---- broadcast log ----
 *
 * One publisher, many local readers of one immutable log in shared memory
 * (shm/bcastlog.c specifies every shared byte; docs/shm.md explains it).
 * The publisher listens on <rundir>/shm/pub-<name>.sock; a reader connects,
 * gets the log (read-only, sealed) and the cursor table over SCM_RIGHTS and
 * reads with a cursor of its own.  Per reader: TETHERED (a reader that
 * falls behind holds the publisher: publish returns BM_EFULL, nothing is
 * dropped) or untethered (the publisher never waits for it; a reader lapped
 * by more than the capacity jumps to the oldest intact record and counts
 * exactly how many it lost).  A tethered reader that dies (its socket
 * closes, its pid is gone) is released at once and cannot hold the
 * publisher for ever.
 */
typedef struct bm_bcastlog bm_bcastlog_t;
typedef struct bm_bcastlog_reader bm_bcastlog_reader_t;

#define BM_BCASTLOG_MIN_CAPACITY ((size_t)64 << 10)
#define BM_BCASTLOG_MAX_CAPACITY ((size_t)4 << 30)
#define BM_BCASTLOG_MAX_READERS 256
#define BM_BCASTLOG_TOPIC_MAX 255
/* Record header size; a record of topic t and body b bytes takes
 * align64(32 + t + b) bytes. */
#define BM_BCASTLOG_RECORD_HEADER 32

typedef struct {
	size_t capacity;     /* record space; 0 = 4 MiB (rounded up to 4 KiB) */
	unsigned readers;    /* reader slots; 0 = 64, at most BM_BCASTLOG_MAX_READERS */
	int spin_us;         /* publisher: spin before sleeping on a full log; <0 = 50 */
	uint64_t session;    /* publisher instance for the header (the broadcast
	                      * header's, so readers can match the two); 0 = random */
} bm_bcastlog_opts_t;

/* Reader flags. */
enum {
	BM_BCASTLOG_TETHERED = 1 << 0, /* hold the publisher rather than lose records */
};

/* One record as a reader sees it (topic and body copied to the caller's
 * buffer, bounds-checked, and validated after the copy). */
typedef struct {
	char topic[BM_BCASTLOG_TOPIC_MAX + 1]; /* NUL-terminated */
	size_t len;          /* body bytes (in the caller's buffer) */
	uint64_t seq;        /* log sequence, from 1 */
	uint64_t tseq;       /* publisher's per-topic sequence (0 = none) */
	int64_t ts_ms;       /* publisher's wall clock when published */
	uint64_t gap;        /* records lost (skipped over) just before this one */
} bm_bcastlog_rec_t;

typedef struct {
	uint64_t published;  /* records published */
	uint64_t full;       /* publishes refused with BM_EFULL (tethered readers) */
	uint64_t readers;    /* readers attached now */
	uint64_t tethered;   /* of which tethered */
	uint64_t attached;   /* readers ever attached */
	uint64_t released;   /* readers released: closed, died, or bad cursor */
	uint64_t corrupt;    /* of those, released for a cursor out of bounds */
} bm_bcastlog_stats_t;

/*
 * Publisher: creates the log (a memfd sealed against shrink, grow and
 * future writable mappings) and listens on <rundir>/shm/pub-<name>.sock.
 * BM_EBADNAME, BM_ENAMETAKEN (a live publisher has that name),
 * BM_EUNSAFEDIR, -EINVAL, -ENOMEM, -errno.
 */
BM_EXPORT int bm_bcastlog_open(const char *rundir, const char *name,
                               const bm_bcastlog_opts_t *opts, bm_bcastlog_t **ret_log);
/* Closes every reader's socket (they see BM_EPEER after the last record),
 * unlinks the socket, unmaps.  NULL-safe. */
BM_EXPORT void bm_bcastlog_destroy(bm_bcastlog_t **self_p);
/*
 * Appends one record: topic (1..255 bytes, not checked further here) and
 * body.  Waits up to timeout_ms (0 = not at all, -1 = for ever) while a
 * tethered reader holds the space it needs.  0, BM_EFULL (timeout 0),
 * -ETIMEDOUT, BM_ETOOBIG (larger than a quarter of the capacity), -EINVAL.
 * Never drops: with only untethered readers it never waits.
 */
BM_EXPORT int bm_bcastlog_publish(bm_bcastlog_t *self, const char *topic, uint64_t tseq,
                                  const void *body, size_t len, int timeout_ms);
/* 0 when a publish of this size would go through now without waiting,
 * BM_EFULL when a tethered reader holds the space, BM_ETOOBIG, -EINVAL.
 * Room only grows until the next publish, so a caller may check, do
 * something that must not be undone, then publish with timeout 0. */
BM_EXPORT int bm_bcastlog_room(bm_bcastlog_t *self, size_t topic_len, size_t len);
/* Accepts readers waiting to attach and releases dead ones (never blocks).
 * Call it when bm_bcastlog_fd() is readable, or now and then.  Returns
 * the number of readers attached, or -errno. */
BM_EXPORT int bm_bcastlog_service(bm_bcastlog_t *self);
/* The listening socket, for poll (POLLIN: a reader is attaching). */
BM_EXPORT int bm_bcastlog_fd(const bm_bcastlog_t *self);
BM_EXPORT void bm_bcastlog_stats(const bm_bcastlog_t *self, bm_bcastlog_stats_t *ret);

/*
 * Reader: attaches to publisher `name` in rundir (flags BM_BCASTLOG_*).
 * Starts at the publisher's next record.  -ENOENT/-ECONNREFUSED (no such
 * publisher), BM_EFULL (no free reader slot), BM_EDENIED (other uid),
 * BM_ECORRUPT (the log failed a check), BM_EPEER, -ETIMEDOUT.
 */
BM_EXPORT int bm_bcastlog_attach(const char *rundir, const char *name, unsigned flags,
                                 int timeout_ms, bm_bcastlog_reader_t **ret_reader);
/*
 * The same in two steps, for a poll loop that must not wait: start
 * connects and asks (errors as attach, before any waiting) and gives the
 * socket to poll for POLLIN; finish reads the answer: 0 and the reader
 * (which now owns fd), -EAGAIN (no answer yet: fd is still the caller's),
 * or an error as attach (fd closed).
 */
BM_EXPORT int bm_bcastlog_attach_start(const char *rundir, const char *name, unsigned flags,
                                       int *ret_fd);
BM_EXPORT int bm_bcastlog_attach_finish(int fd, unsigned flags, bm_bcastlog_reader_t **ret_reader);
/* Detaches (the publisher releases the slot), unmaps.  NULL-safe. */
BM_EXPORT void bm_bcastlog_reader_destroy(bm_bcastlog_reader_t **self_p);
/*
 * Reads the next record: topic into ret_rec, body into buf (size bytes).
 * Waits up to timeout_ms.  0, -EAGAIN (timeout 0, nothing new),
 * -ETIMEDOUT, -EMSGSIZE (body larger than size: ret_rec->len says how
 * large; the record is still unread), BM_EPEER (the publisher is gone and
 * every record it published has been read or lost), BM_ECORRUPT (the log
 * failed a check; sticky).
 */
BM_EXPORT int bm_bcastlog_read(bm_bcastlog_reader_t *self, void *buf, size_t size,
                               int timeout_ms, bm_bcastlog_rec_t *ret_rec);
/* For poll loops: 1 = a read would find something now; 0 = poll
 * bm_bcastlog_reader_fd() for POLLIN, then read with timeout 0. */
BM_EXPORT int bm_bcastlog_reader_arm(bm_bcastlog_reader_t *self);
BM_EXPORT int bm_bcastlog_reader_fd(const bm_bcastlog_reader_t *self);
/* The sequence of the next record this reader expects (at attach: the
 * publisher's next). */
BM_EXPORT uint64_t bm_bcastlog_reader_next_seq(const bm_bcastlog_reader_t *self);
/* Records this reader lost (skipped over) so far. */
BM_EXPORT uint64_t bm_bcastlog_reader_lost(const bm_bcastlog_reader_t *self);
/* The publisher's name and instance (random) as the log header says. */
BM_EXPORT const char *bm_bcastlog_reader_from(const bm_bcastlog_reader_t *self);
BM_EXPORT uint64_t bm_bcastlog_reader_session(const bm_bcastlog_reader_t *self);

/* ---- blobs ---- */

typedef struct bm_blob bm_blob_t;

/* Content types carried with a blob. */
enum {
	BM_BLOB_RAW = 0,
	BM_BLOB_PLY = 1,
	BM_BLOB_PCD = 2,
};
/* bm_blob_opts_t.flags */
enum {
	BM_BLOB_CHECKSUM = 1 << 0, /* compute CRC32C; the receiver verifies it */
	BM_BLOB_FORCE_FD = 1 << 1, /* send as a sealed memfd even when small */
	BM_BLOB_FORCE_STREAM = 1 << 2, /* stream through the ring even when big */
};
#define BM_BLOB_NAME_MAX 255

typedef struct {
	const char *name;  /* blob name (file name); NULL = "" */
	uint32_t content;  /* BM_BLOB_* */
	unsigned flags;    /* BM_BLOB_* flags */
} bm_blob_opts_t;

typedef struct {
	char name[BM_BLOB_NAME_MAX + 1]; /* NUL-terminated */
	uint64_t id;       /* sender's blob number, from 1 */
	uint64_t size;     /* bytes */
	uint32_t content;  /* BM_BLOB_* */
	uint32_t crc;      /* CRC32C when has_crc */
	bool has_crc;      /* sender computed a checksum (verified on receipt) */
	bool via_fd;       /* came as a sealed memfd, not through the ring */
} bm_blob_info_t;

/*
 * Producer: sends len bytes as one blob.  Blobs larger than a quarter of the
 * ring (or with BM_BLOB_FORCE_FD) go as one sealed memfd, the rest stream
 * through the ring in chunks; the receiver does not see the difference.
 * Returns the blob id (> 0) once it is handed over; bm_blob_wait() waits for
 * the receiver's confirmation.
 */
BM_EXPORT int64_t bm_blob_send(bm_channel_t *ch, const void *data, size_t len,
                               const bm_blob_opts_t *opts, int timeout_ms);
/*
 * Zero copy: bm_blob_new() makes a writable blob of size bytes in a fresh
 * memfd; fill bm_blob_wdata(), then bm_blob_send_blob() seals it (no more
 * writes, shrink or grow) and hands the fd over.  It takes ownership of
 * *blob_p on success and NULLs it.  Returns the blob id.
 */
BM_EXPORT int bm_blob_new(size_t size, bm_blob_t **ret_blob);
/* Zero copy from a memfd you filled yourself (created with
 * MFD_ALLOW_SEALING; its whole size is the blob): the blob takes the fd
 * (closed by bm_blob_destroy or sent by bm_blob_send_blob).  -EINVAL when
 * fd is not a sealable memfd, or already sealed against writes. */
BM_EXPORT int bm_blob_adopt_fd(int fd, bm_blob_t **ret_blob);
BM_EXPORT void *bm_blob_wdata(bm_blob_t *self);
BM_EXPORT int64_t bm_blob_send_blob(bm_channel_t *ch, bm_blob_t **blob_p,
                                    const bm_blob_opts_t *opts, int timeout_ms);
/* Same as bm_blob_send() from a file descriptor (reads size bytes from its
 * current offset; streamed blobs are read straight into the ring). */
BM_EXPORT int64_t bm_blob_send_fd(bm_channel_t *ch, int fd, uint64_t size,
                                  const bm_blob_opts_t *opts, int timeout_ms);
/*
 * Producer: waits until the receiver has confirmed blob `id` (and every
 * earlier one).  0 when it arrived intact, BM_ECORRUPT when the receiver
 * found a checksum or size mismatch in any blob since the last call,
 * BM_EPEER, -ETIMEDOUT.
 */
BM_EXPORT int bm_blob_wait(bm_channel_t *ch, uint64_t id, int timeout_ms);

/*
 * Consumer: receives the next blob whole.  A memfd blob is mapped read-only
 * (zero copy; its seals stop the sender changing it); a streamed blob is
 * assembled in memory.  The checksum, when sent, is verified: BM_ECORRUPT.
 * BM_EPROTO when the next record is not a blob.  Confirms to the sender as
 * it returns: a consumer that dies before it has handled the blob loses it
 * (the sender counts it delivered).  One that must not lose a blob receives
 * it into a file with bm_blob_recv_fd(), which confirms only once every
 * byte is written (tests/chaos/chaos_soak.c shows the pattern).
 */
BM_EXPORT int bm_blob_recv(bm_channel_t *ch, int timeout_ms, bm_blob_t **ret_blob);
/* Same, writing the content to fd as it arrives (no assembly); confirms
 * after the last byte is written. */
BM_EXPORT int bm_blob_recv_fd(bm_channel_t *ch, int fd, int timeout_ms, bm_blob_info_t *ret_info);
BM_EXPORT void bm_blob_destroy(bm_blob_t **self_p);
BM_EXPORT const void *bm_blob_data(const bm_blob_t *self);
BM_EXPORT size_t bm_blob_size(const bm_blob_t *self);
BM_EXPORT const bm_blob_info_t *bm_blob_info(const bm_blob_t *self);

/* CRC32C (Castagnoli) of len bytes, continuing from crc (start with 0). */
BM_EXPORT uint32_t bm_crc32c(uint32_t crc, const void *buf, size_t len);

/* ---- point clouds ---- */

typedef struct bm_cloud bm_cloud_t;

/* Scalar types of a point field. */
enum {
	BM_CLOUD_F32 = 0,
	BM_CLOUD_F64,
	BM_CLOUD_U8,
	BM_CLOUD_I8,
	BM_CLOUD_U16,
	BM_CLOUD_I16,
	BM_CLOUD_U32,
	BM_CLOUD_I32,
};
#define BM_CLOUD_MAX_FIELDS 16
#define BM_CLOUD_FIELD_NAME_MAX 31

typedef struct {
	char name[BM_CLOUD_FIELD_NAME_MAX + 1]; /* "x", "intensity", "red" ... */
	uint32_t type;   /* BM_CLOUD_* */
	uint32_t offset; /* byte offset in a point */
} bm_cloud_field_t;

/* Layouts for bm_cloud_generate(). */
enum {
	BM_CLOUD_XYZ = 0,           /* x y z f32 */
	BM_CLOUD_XYZ_RGB = 1,       /* x y z f32, red green blue u8 */
	BM_CLOUD_XYZ_INTENSITY = 2, /* x y z f32, intensity f32 */
};

/* A cloud of count points with the given fields (packed in order). */
BM_EXPORT int bm_cloud_new(uint64_t count, const bm_cloud_field_t *fields, size_t nfields,
                           bm_cloud_t **ret_cloud);
/* Synthetic cloud: points on a noisy sphere and plane, reproducible from seed. */
BM_EXPORT int bm_cloud_generate(uint64_t count, int layout, uint64_t seed, bm_cloud_t **ret_cloud);
BM_EXPORT void bm_cloud_destroy(bm_cloud_t **self_p);
BM_EXPORT uint64_t bm_cloud_count(const bm_cloud_t *self);
BM_EXPORT size_t bm_cloud_stride(const bm_cloud_t *self);
BM_EXPORT size_t bm_cloud_nfields(const bm_cloud_t *self);
BM_EXPORT const bm_cloud_field_t *bm_cloud_field(const bm_cloud_t *self, size_t i);
/* Index of the named field or -ENOENT. */
BM_EXPORT int bm_cloud_find(const bm_cloud_t *self, const char *name);
/* Points, count * stride bytes, packed. */
BM_EXPORT void *bm_cloud_data(bm_cloud_t *self);

/* Binary little-endian PLY ("element vertex") and binary PCD v0.7.  Readers
 * parse from memory (e.g. a received blob) and check every size:
 * BM_ECORRUPT for a malformed file, -ENOTSUP for ascii/compressed ones. */
BM_EXPORT int bm_cloud_write_ply(const bm_cloud_t *self, int fd);
BM_EXPORT int bm_cloud_write_pcd(const bm_cloud_t *self, int fd);
BM_EXPORT int bm_cloud_parse_ply(const void *buf, size_t len, bm_cloud_t **ret_cloud);
BM_EXPORT int bm_cloud_parse_pcd(const void *buf, size_t len, bm_cloud_t **ret_cloud);
/* Either format, told apart by its first bytes. */
BM_EXPORT int bm_cloud_parse(const void *buf, size_t len, bm_cloud_t **ret_cloud);

#ifdef __cplusplus
}
#endif
#endif

"""The C runtime, bound with cffi in ABI mode (no compiler needed).

The declarations below mirror agents/bm_agent.h and the headers under it.
Struct layouts must match the library exactly; on load the library's own
account of them (bm_agent_abi()) is compared with these declarations, and a
library that does not match is refused with an error that says so, rather
than corrupting memory later.

The library is found, in order: $BEASTMESH_LIB (a path to the .so); a
build tree next to this package (../../build/libbeastmesh.so when the
package is used from the source tree); the system loader
(libbeastmesh.so.0, as `meson install` puts it).
"""
import os

from cffi import FFI

CDEF = r"""
typedef struct bm_agent bm_agent_t;
typedef struct bm_blob bm_blob_t;
typedef struct { uint8_t b[16]; } bm_id_t;
typedef struct { uint64_t _[8]; } zmq_msg_t;

typedef struct {
    bm_id_t id; bm_id_t corr;
    char from[65]; char to[66]; char type[65];
    uint8_t priority; uint32_t ttl_ms; uint32_t attempt; int64_t ts_ms;
    zmq_msg_t body; size_t body_at;
    char traceparent[128]; char *tracestate;
} bm_msg_t;

typedef struct {
    int kind; char topic[256]; char from[65];
    uint64_t session; uint64_t seq; uint64_t tseq; int64_t ts_ms;
    bool replay; uint64_t gap;
    zmq_msg_t body; size_t body_off;
} bm_bcast_t;

typedef struct {
    const char *name; const char *const *caps; const char *dir; const char *state_dir;
    int sync; int heartbeat_ms; int connect_timeout_ms; uint32_t ack_timeout_ms;
    size_t channel_capacity; int *stop; void *user;
    const char *endpoint; const char *pub_endpoint; const char *sub_endpoint;
    const char *key_file; const char *server_key_file;
    size_t shm_log;
} bm_agent_opts_t;

typedef struct {
    const char *type; uint8_t priority; uint32_t ttl_ms; uint32_t max_attempts; bool expire;
    const char *traceparent; const char *tracestate;
} bm_agent_send_opts_t;

typedef struct { const char *to; const char *type; const char *body; size_t len; } bm_agent_item_t;

typedef struct {
    uint64_t sent, acked, retried, dead, pending, received, duplicates, unhandled;
    uint64_t requests, replies, timeouts, replies_expired, published, bcasts, gaps;
    uint64_t blobs_sent, blob_bytes_sent, blobs_received, blob_bytes_received, blob_errors;
    uint64_t ack_hist[128]; uint64_t req_hist[128];
    uint64_t bcasts_shm, shm_fallbacks, shm_corrupt;
} bm_agent_stats_t;

typedef struct {
    char name[256]; uint64_t id; uint64_t size; uint32_t content; uint32_t crc;
    bool has_crc; bool via_fd;
} bm_blob_info_t;

typedef int (*bm_agent_msg_fn)(bm_agent_t *, bm_msg_t *, void *);
typedef void (*bm_agent_bcast_fn)(bm_agent_t *, bm_bcast_t *, void *);
typedef int (*bm_agent_blob_fn)(bm_agent_t *, const char *, bm_blob_t *, void *);
typedef void (*bm_agent_reply_fn)(bm_agent_t *, int, bm_msg_t *, void *);

int bm_agent_open(const bm_agent_opts_t *, bm_agent_t **);
void bm_agent_destroy(bm_agent_t **);
const char *bm_agent_name(const bm_agent_t *);
int bm_agent_on_message(bm_agent_t *, const char *, bm_agent_msg_fn, void *);
int bm_agent_on_request(bm_agent_t *, const char *, bm_agent_msg_fn, void *);
int bm_agent_subscribe(bm_agent_t *, const char *, bm_agent_bcast_fn, void *);
int bm_agent_subscribe_shm(bm_agent_t *, const char *, int, bm_agent_bcast_fn, void *);
int bm_agent_wait_subscribed(bm_agent_t *, int);
int bm_agent_on_blob(bm_agent_t *, bm_agent_blob_fn, void *);
int bm_agent_send(bm_agent_t *, const char *, const bm_agent_send_opts_t *,
                  const char *, size_t, bm_id_t *);
int bm_agent_send_batch(bm_agent_t *, const bm_agent_item_t *, size_t, bm_id_t *);
int bm_agent_request(bm_agent_t *, const char *, const char *, const char *, size_t, int,
                     bm_agent_reply_fn, void *);
int bm_agent_reply(bm_agent_t *, const bm_msg_t *, const char *, const char *, size_t);
size_t bm_agent_requests_pending(const bm_agent_t *);
int bm_agent_publish(bm_agent_t *, const char *, const char *, size_t);
int bm_agent_send_blob(bm_agent_t *, const char *, const char *, const char *, size_t,
                       uint32_t, int);
int bm_agent_send_blob_take(bm_agent_t *, const char *, const char *, bm_blob_t **,
                            uint32_t, int);
int bm_agent_step(bm_agent_t *, int);
int bm_agent_run(bm_agent_t *);
void bm_agent_stop(bm_agent_t *);
bool bm_agent_stopped(const bm_agent_t *);
int bm_agent_drain(bm_agent_t *, int);
int bm_agent_flush(bm_agent_t *);
int bm_agent_timeout(bm_agent_t *);
int bm_agent_fds(bm_agent_t *, int *, int);
int bm_agent_ready(bm_agent_t *);
int bm_agent_status(bm_agent_t *, const bm_id_t *, int *);
int bm_agent_refusal(bm_agent_t *, const bm_id_t *, char *, size_t);
int bm_agent_refuse_text(bm_agent_t *, const char *);
const char *bm_agent_msg_body(bm_msg_t *, size_t *);
const char *bm_agent_bcast_body(bm_bcast_t *, size_t *);
const char *bm_agent_abi(void);
void bm_agent_stats(const bm_agent_t *, bm_agent_stats_t *);
uint64_t bm_agent_hist_quantile(const uint64_t *, double);

int bm_blob_new(size_t, bm_blob_t **);
char *bm_blob_wdata(bm_blob_t *);
void bm_blob_destroy(bm_blob_t **);
const char *bm_blob_data(const bm_blob_t *);
size_t bm_blob_size(const bm_blob_t *);
const bm_blob_info_t *bm_blob_info(const bm_blob_t *);
uint32_t bm_crc32c(uint32_t, const char *, size_t);

const char *bm_strerror(int);
const char *bm_err_name(int);
void bm_log_set_level(int);
void bm_log_set_ident(const char *);
void bm_id_hex(const bm_id_t *, char *);
int bm_id_parse(const char *, bm_id_t *);
int bm_name_check(const char *);
int bm_type_check(const char *);
int bm_address_check(const char *);
int bm_topic_check(const char *, size_t, bool);
const char *bm_outbox_reason(int);
"""

# The fields bm_agent_abi() reports, per struct, as declared above.
_ABI_FIELDS = {
    "bm_msg_t": ["id", "corr", "from", "to", "type", "priority", "ttl_ms", "attempt",
                 "ts_ms"],
    "bm_bcast_t": ["kind", "topic", "from", "session", "seq", "tseq", "ts_ms", "replay",
                   "gap"],
    "bm_agent_opts_t": ["name", "caps", "dir", "state_dir", "sync", "heartbeat_ms",
                        "connect_timeout_ms", "ack_timeout_ms", "channel_capacity", "stop",
                        "user", "endpoint", "key_file", "shm_log"],
    "bm_agent_send_opts_t": ["type", "priority", "ttl_ms", "max_attempts", "expire"],
    "bm_agent_item_t": ["to", "type", "body", "len"],
    "bm_agent_stats_t": ["sent", "blob_errors", "ack_hist", "req_hist", "bcasts_shm"],
    "bm_blob_info_t": ["name", "id", "size", "content", "crc", "has_crc", "via_fd"],
}

ffi = FFI()
ffi.cdef(CDEF)


class LibraryError(ImportError):
    """libbeastmesh could not be found or does not match this package."""


def _candidates():
    env = os.environ.get("BEASTMESH_LIB")
    if env:
        return [("$BEASTMESH_LIB", env)]
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.join(here, "..", "..", "build", "libbeastmesh.so")
    out = []
    if os.path.exists(tree):
        out.append(("the build tree", os.path.normpath(tree)))
    out.append(("the system loader", "libbeastmesh.so.0"))
    return out


def _abi_of_ours():
    parts = []
    for t, fields in _ABI_FIELDS.items():
        offs = ",".join("%s@%d" % (f, ffi.offsetof(t, f)) for f in fields)
        parts.append("%s:%d:%s" % (t, ffi.sizeof(t), offs))
    return ";".join(parts)


def _load():
    tried = []
    for where, path in _candidates():
        try:
            lib = ffi.dlopen(path)
        except OSError as e:
            tried.append("%s (%s): %s" % (where, path, e))
            continue
        try:
            theirs = ffi.string(lib.bm_agent_abi()).decode()
        except AttributeError:
            raise LibraryError("%s at %s is too old for this beastmesh package "
                               "(no bm_agent_abi)" % (where, path))
        if theirs != _abi_of_ours():
            raise LibraryError("libbeastmesh at %s does not match this beastmesh package:\n"
                               "  library: %s\n  package: %s" % (path, theirs, _abi_of_ours()))
        return lib, path
    raise LibraryError(
        "cannot load libbeastmesh; looked in: $BEASTMESH_LIB (unset, or set it to the .so), "
        "the build tree next to this package (<source>/build/libbeastmesh.so: run "
        "`meson setup build && ninja -C build`), and the system loader (libbeastmesh.so.0: "
        "`meson install`). Tried: " + "; ".join(tried))


lib, LIBRARY_PATH = _load()

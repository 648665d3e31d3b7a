"""The Agent: a Python face on the C agent runtime (agents/bm_agent.h).

Everything reliable happens in C: the outbox journal, group commit, retries
with backoff, dead letters, de-dup of what arrives, blobs over shared
memory.  This module turns handlers into C callbacks, bodies into bytes,
return codes into exceptions, and adds what Python users expect: context
managers, decorators, handles that can be waited on, numpy views of point
clouds, and an asyncio driver.

Threading: an Agent belongs to the thread that made it (like the C object).
Handlers run inside step()/run()/serve(), on that thread.
"""
import asyncio
import errno as _errno
import logging
import os
import time

from ._ffi import ffi, lib
from . import errors as _e
from .errors import BadArgument, DeadLetter, Error, Timeout, check
from .cloud import Blob, Cloud, build_ply

log = logging.getLogger("beastmesh")

_SYNC = {"always": 0, "interval": 1, "never": 2}
_SHM = {"auto": 0, "tethered": 1, "off": 2}  # enum bm_agent_shm
_EHANDLER = _e.HandlerFailed.code
_EAGAIN_LIKE = (-_errno.EINTR,)
_NULL = ffi.NULL


def _text(v, what):
    """str/bytes -> NUL-free bytes for a char* argument."""
    if isinstance(v, str):
        v = v.encode()
    elif not isinstance(v, bytes):
        raise BadArgument(detail="%s must be str or bytes, not %s" % (what, type(v).__name__))
    if b"\0" in v:
        raise _e.BadName(detail="%s %r contains a NUL byte" % (what, v))
    return v


def _body(v):
    """Anything with bytes -> (pointer-able object, length)."""
    if isinstance(v, bytes):
        return v, len(v)
    if isinstance(v, str):
        b = v.encode()
        return b, len(b)
    if v is None:
        return b"", 0
    try:
        m = memoryview(v)
    except TypeError:
        raise BadArgument(detail="a body must be bytes, str or a buffer, not %s" %
                          type(v).__name__) from None
    if not m.contiguous:
        raise BadArgument(detail="a body buffer must be contiguous")
    return ffi.from_buffer(m), m.nbytes


def _ms(seconds, what):
    if seconds is None:
        return -1
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise BadArgument(detail="%s must be a number of seconds >= 0" % what)
    return int(seconds * 1000)


def _hex(idp):
    out = ffi.new("char[33]")
    lib.bm_id_hex(idp, out)
    return ffi.string(out).decode()


class Message:
    """A delivered message.  `body` is bytes (a copy: it outlives the
    handler); `corr` is the id of the request this replies to, or None."""

    __slots__ = ("id", "sender", "to", "type", "body", "corr", "attempt", "priority", "ts_ms",
                 "ttl_ms")

    def __init__(self, m, cell=None):
        # cell: the agent's size_t cell for the body call (one allocation
        # per agent, not per message); the body is read before returning.
        self.id = _hex(ffi.addressof(m, "id"))
        self.sender = ffi.string(m.__getattribute__("from")).decode()
        self.to = ffi.string(m.to).decode()
        self.type = ffi.string(m.type).decode()
        n = cell if cell is not None else ffi.new("size_t *")
        p = lib.bm_agent_msg_body(m, n)
        self.body = ffi.unpack(p, n[0])
        self.corr = None if bytes(m.corr.b) == bytes(16) else _hex(ffi.addressof(m, "corr"))
        self.attempt = m.attempt
        self.priority = m.priority
        self.ts_ms = m.ts_ms
        self.ttl_ms = m.ttl_ms

    def __repr__(self):
        return "Message(id=%s, sender=%r, type=%r, %d bytes)" % (self.id, self.sender, self.type,
                                                                  len(self.body))


class Broadcast:
    """A broadcast received on a followed topic.  `gap` counts the messages
    of this publisher known lost just before this one; `replay` is true for
    the last-value cache's copy that a late joiner gets first."""

    __slots__ = ("topic", "sender", "seq", "tseq", "gap", "replay", "ts_ms", "body")

    def __init__(self, b, cell=None):
        self.topic = ffi.string(b.topic).decode().rstrip("/")
        self.sender = ffi.string(b.__getattribute__("from")).decode()
        self.seq = b.seq
        self.tseq = b.tseq
        self.gap = b.gap
        self.replay = bool(b.replay)
        self.ts_ms = b.ts_ms
        n = cell if cell is not None else ffi.new("size_t *")
        p = lib.bm_agent_bcast_body(b, n)
        self.body = ffi.unpack(p, n[0])

    def __repr__(self):
        return "Broadcast(topic=%r, sender=%r, seq=%d, gap=%d)" % (self.topic, self.sender,
                                                                    self.seq, self.gap)


class Sent:
    """The handle of a reliable send.  The message is in the outbox (stored
    at the next turn of the loop); wait() steps the agent until the
    receiver's ACK retires it, or raises DeadLetter / Timeout."""

    __slots__ = ("_agent", "_id", "_keep")

    def __init__(self, agent, idp, keep=None):
        self._agent = agent
        self._id = idp
        self._keep = keep  # the id's storage, when idp points into it

    @property
    def id(self):
        return _hex(self._id)

    def status(self):
        """'pending', 'acked' or 'dead'."""
        return ("acked", "pending", "dead")[self._status()[0]]

    def _status(self):
        a = self._agent._ptr()
        code = ffi.new("int *")
        st = lib.bm_agent_status(a, self._id, code)
        check(st)
        return st, code[0]

    def _refusal(self):
        buf = ffi.new("char[]", 256)
        n = lib.bm_agent_refusal(self._agent._ptr(), self._id, buf, 256)
        return ffi.string(buf).decode(errors="replace") if n > 0 else ""

    def done(self):
        return self._status()[0] != 1

    def wait(self, timeout=None):
        """Returns once ACKed; raises DeadLetter (with its reason), Timeout
        (still pending after timeout seconds: it stays in the outbox and
        is retried), or the loop's error."""
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            st, code = self._status()
            if st == 0:
                return self
            if st == 2:
                raise DeadLetter(code, self.id, self._refusal())
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                raise Timeout(detail="message %s not acknowledged yet (still in the outbox)" %
                              self.id)
            self._agent.step(left)

    def __repr__(self):
        return "Sent(%s)" % self.id




class _Request:
    __slots__ = ("done", "err", "reply", "future", "handle")

    def __init__(self):
        self.done = False
        self.err = 0
        self.reply = None
        self.future = None
        self.handle = None


class _ArrayView:
    """Exports pages owned by `owner` to numpy without copying them."""

    __slots__ = ("__array_interface__", "owner")


class Agent:
    """An agent: a name (and capabilities) registered with beastd, an outbox
    journal, handlers, and one loop.

        with beastmesh.Agent("echo", caps=["echo"]) as agent:
            @agent.on_request("echo")
            def echo(msg):
                return msg.body
            agent.run()

    dir: beastd's runtime directory (default like the CLI: $BEAST_DIR, else
    $XDG_RUNTIME_DIR/beast, else /tmp/beast-$UID).  state: the root of the
    agents' state (default $BEAST_STATE, else $XDG_STATE_HOME/beast, else
    ~/.local/state/beast); this agent's journals live in state/<name>.
    sync: the outbox's fsync policy, "always" (group commit), "interval" or
    "never" (survives kill -9, not power loss).  shm_log: also offer this
    agent's broadcasts to local subscribers in a shared-memory log of that
    many bytes (at least 64 KiB; bodies then at most a quarter of it).
    """

    def __init__(self, name, caps=(), dir=None, state=None, sync="always", heartbeat=None,
                 ack_timeout=None, connect_timeout=None, channel_capacity=0, log_level=None,
                 shm_log=0):
        self._a = None
        self._keep = []
        self._callbacks = []
        self._requests = {}
        self._watch = {}
        self._raise = None
        self._on_blob = None
        self._on_cloud = None
        self._blob_cb = None
        self._serving = None
        self._encoded = {}
        self._ctypes = {}
        self.name = _text(name, "an agent name").decode()
        check(lib.bm_name_check(self.name.encode()), "agent name %r" % self.name)
        if isinstance(caps, (str, bytes)):
            caps = [caps]
        try:
            caps = [_text(c, "a capability") for c in caps]
        except TypeError:
            raise BadArgument(detail="caps must be a list of strings") from None
        if sync not in _SYNC:
            raise BadArgument(detail="sync must be one of %s" % ", ".join(_SYNC))
        if log_level is not None:
            lib.bm_log_set_level(int(log_level))
        o = ffi.new("bm_agent_opts_t *")
        self._keep.append(o)

        def cstr(v):
            p = ffi.new("char[]", v)
            self._keep.append(p)
            return p

        o.name = cstr(self.name.encode())
        if caps:
            arr = ffi.new("char *[]", [cstr(c) for c in caps] + [_NULL])
            self._keep.append(arr)
            o.caps = arr
        if dir is not None:
            o.dir = cstr(os.fsencode(dir))
        if state is not None:
            o.state_dir = cstr(os.fsencode(os.path.join(state, self.name)))
        o.sync = _SYNC[sync]
        o.heartbeat_ms = 0 if heartbeat is None else _ms(heartbeat, "heartbeat")
        o.ack_timeout_ms = 0 if ack_timeout is None else _ms(ack_timeout, "ack_timeout")
        o.connect_timeout_ms = 0 if connect_timeout is None else _ms(connect_timeout,
                                                                        "connect_timeout")
        o.channel_capacity = int(channel_capacity)
        o.shm_log = int(shm_log)
        pp = ffi.new("bm_agent_t **")
        check(lib.bm_agent_open(o, pp), "cannot start agent %r" % self.name)
        self._a = pp[0]
        self._sopts = {}
        self._ids = None
        self._idk = 256
        self._reply_cb = ffi.callback("bm_agent_reply_fn", self._on_reply)
        self._int = ffi.new("int *")
        self._size = ffi.new("size_t *")

    # ---- lifetime ----

    def _ptr(self):
        if self._a is None:
            raise _e.NotRegistered(detail="the agent is closed")
        return self._a

    def close(self, drain=0):
        """Stores what is buffered and closes (what is not yet ACKed stays
        in the outbox for the next run).  drain: first wait up to that many
        seconds for every pending message to be ACKed."""
        if self._a is None:
            return
        if drain:
            lib.bm_agent_drain(self._a, _ms(drain, "drain"))
        pp = ffi.new("bm_agent_t **", self._a)
        self._a = None
        lib.bm_agent_destroy(pp)
        for r in self._requests.values():
            if r.future is not None and not r.future.done():
                r.future.set_exception(_e.NotRegistered(detail="the agent closed"))
        self._requests.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- handlers ----

    def _handler(self, fn, request, reply_type):
        def cb(a, m, arg):
            msg = None
            try:
                msg = Message(m, self._size)
                r = fn(msg)
                if asyncio.iscoroutine(r):
                    return self._defer(r, m, msg, request, reply_type)
                if request:
                    return self._reply_now(m, msg, r, reply_type)
                return 0
            except Error as e:
                log.warning("%s: handler refused %r: %s", self.name, msg, e)
                self._refuse_text(e)
                return e.code if isinstance(e.code, int) and e.code < 0 else _EHANDLER
            except Exception as e:
                log.exception("%s: handler failed; the message is NACKed and will be retried",
                              self.name)
                self._refuse_text(e)
                return _EHANDLER
            except BaseException as e:  # KeyboardInterrupt, SystemExit: after the step
                self._raise = e
                return _EHANDLER
        return cb

    def _refuse_text(self, e):
        # The NACK carries the exception's words, so the sender sees them
        # as the message's last refusal (DeadLetter.refusal).
        text = "%s: %s" % (type(e).__name__, e) if not isinstance(e, Error) else str(e)
        lib.bm_agent_refuse_text(self._a, text.encode("utf-8", "replace")[:255])

    def _reply_now(self, m, msg, r, reply_type):
        body, n = _body(r)
        t = reply_type if reply_type is not None else msg.type.encode()
        return check(lib.bm_agent_reply(self._a, m, t, body, n))

    def _defer(self, coro, m, msg, request, reply_type):
        loop = self._serving
        if loop is None:
            coro.close()
            log.error("%s: an async handler needs the agent served by `await agent.serve()`",
                      self.name)
            return _EHANDLER
        # The message is ACKed when this call returns; the reply (reliable,
        # through the outbox) follows when the coroutine finishes.  A copy
        # of the header is what bm_agent_reply needs to address it.
        hdr = ffi.new("bm_msg_t *", m[0])

        async def finish():
            try:
                r = await coro
                if request and self._a is not None:
                    body, n = _body(r)
                    t = reply_type if reply_type is not None else msg.type.encode()
                    check(lib.bm_agent_reply(self._a, hdr, t, body, n))
                    self._kick()
            except Exception:
                log.exception("%s: async handler for %s failed (the message was ACKed)",
                              self.name, msg.id)
        loop.create_task(finish())
        return 0

    def _register(self, kind, type, fn, reply_type=None):
        t = _NULL if type is None else _text(type, "a message type")
        if t is not _NULL:
            check(lib.bm_type_check(t), "message type %r" % type)
        cb = ffi.callback("bm_agent_msg_fn", self._handler(fn, kind == "request",
                                                            None if reply_type is None else
                                                            _text(reply_type, "a reply type")))
        self._callbacks.append(cb)
        reg = lib.bm_agent_on_request if kind == "request" else lib.bm_agent_on_message
        check(reg(self._ptr(), t, cb, _NULL))
        return fn

    def on_message(self, type=None):
        """Decorator: fn(msg) handles messages of `type` (None: any type
        without a handler of its own).  Return normally and the message is
        ACKed once what fn sent is stored; raise and it is NACKed (see
        docs/python.md for what the sender then sees)."""
        if callable(type):
            return self._register("message", None, type)
        return lambda fn: self._register("message", type, fn)

    def on_request(self, type=None, reply_type=None):
        """Decorator: fn(msg) answers requests of `type`; it returns the
        reply body (bytes, str, a buffer or None), sent reliably to the
        requester with the request's type (or reply_type).  fn may be
        `async def` when the agent is served with `await agent.serve()`."""
        if callable(type):
            return self._register("request", None, type)
        return lambda fn: self._register("request", type, fn, reply_type)

    def _ensure_blob_cb(self):
        if self._blob_cb is not None:
            return

        def cb(a, frm, blob, arg):
            try:
                sender = ffi.string(frm).decode()
                owned = ffi.gc(blob, _blob_free)
                if self._on_cloud is not None and lib.bm_blob_info(blob).content == 1:
                    obj = Cloud(owned, sender)
                    self._on_cloud(obj)
                elif self._on_blob is not None:
                    self._on_blob(Blob(owned, sender))
                elif self._on_cloud is not None:
                    self._on_cloud(Cloud(owned, sender))
            except BaseException as e:
                if not isinstance(e, Exception):
                    self._raise = e
                else:
                    log.exception("%s: blob handler failed", self.name)
            # Python owns the blob now (ffi.gc frees it with the last view).
            return 1
        self._blob_cb = ffi.callback("bm_agent_blob_fn", cb)
        check(lib.bm_agent_on_blob(self._ptr(), self._blob_cb, _NULL), "cannot accept blobs")

    def on_cloud(self, fn):
        """Decorator: fn(cloud) gets each point cloud (a PLY blob) sent to this
        agent; cloud.points is a read-only numpy view of the shared pages."""
        self._on_cloud = fn
        self._ensure_blob_cb()
        return fn

    def on_blob(self, fn):
        """Decorator: fn(blob) gets each blob (blob.data: a read-only view)."""
        self._on_blob = fn
        self._ensure_blob_cb()
        return fn

    def subscribe(self, prefix, handler=None, shm="auto"):
        """Follows every topic under prefix ("tot/7" gets "tot/7/2/5", never
        "tot/70"); handler(bcast) for each.  Usable as a decorator.

        shm: how a local publisher that offers a shared-memory log (Agent's
        shm_log) is read: "auto" (its log, untethered: a reader that falls
        behind skips ahead, its loss counted in gaps), "tethered" (its log;
        the publisher waits for this agent rather than lose anything) or
        "off" (through beastd's proxy only)."""
        if handler is None:
            return lambda fn: self.subscribe(prefix, fn, shm=shm)
        if shm not in _SHM:
            raise BadArgument(detail="shm must be one of %s" % ", ".join(_SHM))
        p = _text(prefix, "a topic prefix")

        def cb(a, b, arg):
            try:
                handler(Broadcast(b, self._size))
            except Exception:
                log.exception("%s: broadcast handler failed", self.name)
            except BaseException as e:
                self._raise = e
        c = ffi.callback("bm_agent_bcast_fn", cb)
        self._callbacks.append(c)
        check(lib.bm_agent_subscribe_shm(self._ptr(), p, _SHM[shm], c, _NULL),
              "cannot follow %r" % prefix)
        return handler

    def wait_subscribed(self, timeout=5.0):
        """Steps until every subscription is in force at beastd's proxy."""
        check(lib.bm_agent_wait_subscribed(self._ptr(), _ms(timeout, "timeout")),
              "subscriptions not confirmed")

    # ---- sending ----

    def _enc(self, v, what):
        b = self._encoded.get(v)
        if b is None:
            b = _text(v, what)
            if len(self._encoded) < 4096:
                self._encoded[v] = b
        return b

    def _cenc(self, v, what):
        c = self._ctypes.get(v)
        if c is None:
            c = ffi.new("char[]", _text(v, what))
            if len(self._ctypes) < 4096:
                self._ctypes[v] = c
        return c

    def _opts(self, type, ttl, priority, attempts, expire):
        key = (type, ttl, priority, attempts, expire)
        so = self._sopts.get(key)
        if so is not None:
            return so
        if not isinstance(priority, int) or not 0 <= priority <= 255:
            raise BadArgument(detail="priority must be an int in 0..255")
        if not isinstance(attempts, int) or attempts < 0:
            raise BadArgument(detail="attempts must be an int >= 0")
        so = ffi.new("bm_agent_send_opts_t *")
        so.type = self._cenc(type, "a message type")
        so.priority = priority
        so.ttl_ms = 0 if ttl is None else max(1, _ms(ttl, "ttl"))
        so.max_attempts = attempts
        so.expire = bool(expire)
        if len(self._sopts) < 256:
            try:
                self._sopts[key] = so
            except TypeError:  # an unhashable argument: checked, not cached
                pass
        return so

    def send(self, to, type="msg", body=b"", ttl=None, priority=0, attempts=0, expire=False):
        """Reliable send to an agent name or "@capability": stored in the
        outbox (at the next turn of the loop), retried until ACKed.  Returns
        a Sent handle.  ttl: seconds before it dies (None: never); priority
        0..255; attempts: before it dies (0: the default, 20).  Raises Full
        (the outbox is full: back-pressure), TooBig, BadName."""
        a = self._a
        if a is None:
            self._ptr()
        try:
            so = self._sopts[(type, ttl, priority, attempts, expire)]
        except (KeyError, TypeError):
            so = self._opts(type, ttl, priority, attempts, expire)
        if body.__class__ is bytes:
            b, n = body, len(body)
        else:
            b, n = _body(body)
        t = self._encoded.get(to)
        if t is None:
            t = self._enc(to, "a destination")
        # Ids are written into chunks of 256 (one allocation per chunk);
        # each handle keeps its chunk alive.
        k = self._idk
        if k == 256:
            self._ids = ffi.new("bm_id_t[256]")
            k = 0
        ids = self._ids
        idp = ids + k
        self._idk = k + 1
        rc = lib.bm_agent_send(a, t, so, b, n, idp)
        if rc < 0:
            raise _e.error_for(rc, "send to %r" % (to,))
        if self._serving is not None:
            self._kick()
        return Sent(self, idp, ids)

    def send_batch(self, items):
        """Atomic batch: items are (to, type, body) tuples; after any crash
        all are sent or none.  Returns a list of Sent handles."""
        items = list(items)
        if not items:
            return []
        arr = ffi.new("bm_agent_item_t[]", len(items))
        keep = []
        for i, it in enumerate(items):
            try:
                to, type, body = it
            except (TypeError, ValueError):
                raise BadArgument(detail="batch items are (to, type, body) tuples") from None
            b, n = _body(body)
            cells = (ffi.new("char[]", _text(to, "a destination")),
                     ffi.new("char[]", _text(type, "a message type")),
                     ffi.from_buffer(b) if isinstance(b, bytes) else b)
            keep.append(cells)
            arr[i].to, arr[i].type, arr[i].body = cells
            arr[i].len = n
        ids = ffi.new("bm_id_t[]", len(items))
        check(lib.bm_agent_send_batch(self._ptr(), arr, len(items), ids), "batch")
        if self._serving is not None:
            self._kick()
        return [Sent(self, ffi.new("bm_id_t *", ids[i])) for i in range(len(items))]

    def _on_reply(self, a, err, reply, arg):
        r = ffi.from_handle(arg)
        self._requests.pop(id(r), None)
        r.done = True
        r.err = err
        if err == 0 and reply != _NULL:
            n = self._size
            p = lib.bm_agent_msg_body(reply, n)
            r.reply = ffi.unpack(p, n[0])
        if r.future is not None and not r.future.done():
            if err == 0:
                r.future.set_result(r.reply)
            else:
                r.future.set_exception(_reply_error(err, to=None))

    def _request(self, to, type, body, timeout):
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise BadArgument(detail="timeout must be a number of seconds > 0")
        r = _Request()
        r.handle = ffi.new_handle(r)
        b, n = _body(body)
        rc = lib.bm_agent_request(self._ptr(), self._enc(to, "a destination"),
                                  self._enc(type, "a message type"), b, n,
                                  max(1, int(timeout * 1000)), self._reply_cb, r.handle)
        if rc < 0:
            raise _e.error_for(rc, "request to %r" % (to,))
        self._requests[id(r)] = r
        return r

    def request(self, to, type, body=b"", timeout=5.0):
        """Sends a request (reliably) and steps the loop until its reply:
        returns the reply body (bytes).  Raises Timeout, or DeadLetter when
        the request died (e.g. the receiver's handler rejected it)."""
        r = self._request(to, type, body, timeout)
        while not r.done:
            self.step(0.1)
        if r.err:
            raise _reply_error(r.err, to)
        return r.reply

    def publish(self, topic, body=b""):
        """Broadcast on a topic such as "tot/7/2".  Raises BadName, Full
        (the proxy is not keeping up), NoBroker."""
        b, n = _body(body)
        t = self._enc(topic, "a topic")
        check(lib.bm_agent_publish(self._ptr(), t, b, n), "publish on %r" % (topic,))

    def send_blob(self, to, data, name=None, timeout=30.0):
        """Sends bytes (or a buffer) or a file (a path) to agent `to` over
        shared memory and waits until it confirms them intact.  A file is
        read once, straight into the shared pages."""
        t = self._enc(to, "a destination")
        if isinstance(data, (str, os.PathLike)):
            path = os.fspath(data)
            nm = _text(name if name is not None else os.path.basename(path), "a blob name")
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                bp = ffi.new("bm_blob_t **")
                check(lib.bm_blob_new(max(size, 1), bp), "blob of %d bytes" % size)
                try:
                    view = ffi.buffer(lib.bm_blob_wdata(bp[0]), size)
                    got = f.readinto(view) if size else 0
                    if got != size:
                        raise Error(-_errno.EIO, "%s changed while read" % path)
                    rc = lib.bm_agent_send_blob_take(self._ptr(), t, nm, bp, 0,
                                                     _ms(timeout, "timeout"))
                finally:
                    if bp[0] != _NULL:
                        lib.bm_blob_destroy(bp)
            check(rc, "blob to %r" % (to,))
            return
        b, n = _body(data)
        nm = _text(name if name is not None else "blob", "a blob name")
        check(lib.bm_agent_send_blob(self._ptr(), t, nm, b, n, 0, _ms(timeout, "timeout")),
              "blob to %r" % (to,))

    def send_cloud(self, to, points, colors=None, name=None, timeout=30.0):
        """Sends a point cloud — points: numpy (N,3) float32, colors: (N,3)
        uint8 or None — as a binary PLY written once into shared pages that
        the receiver maps as they are."""
        t = self._enc(to, "a destination")
        nm = _text(name if name is not None else "cloud.ply", "a cloud name")
        bp = build_ply(points, colors)
        try:
            rc = lib.bm_agent_send_blob_take(self._ptr(), t, nm, bp, 1, _ms(timeout, "timeout"))
        finally:
            if bp[0] != _NULL:
                lib.bm_blob_destroy(bp)
        check(rc, "cloud to %r" % (to,))

    # ---- the loop ----

    def step(self, timeout=0):
        """One turn: stores and sends, waits up to timeout seconds (None:
        until something happens) and runs the handlers of what arrived.
        Returns how many things it handled."""
        rc = lib.bm_agent_step(self._ptr(), _ms(timeout, "timeout"))
        exc = self._raise
        if exc is not None:
            self._raise = None
            raise exc
        if rc < 0 and rc != -_errno.EINTR:
            raise _e.error_for(rc, "agent loop")
        return max(rc, 0)

    def run(self):
        """Steps until stop() (or SIGINT, which stops it cleanly)."""
        try:
            while not lib.bm_agent_stopped(self._ptr()):
                self.step(0.25)
        except KeyboardInterrupt:
            lib.bm_agent_flush(self._a)

    def stop(self):
        if self._a is not None:
            lib.bm_agent_stop(self._a)
            if self._serving is not None:
                self._kick()

    @property
    def stopped(self):
        return self._a is None or bool(lib.bm_agent_stopped(self._a))

    def flush(self):
        """Stores what was sent since the last turn (one journal commit) and
        sends it now."""
        check(lib.bm_agent_flush(self._ptr()))

    def drain(self, timeout=10.0):
        """Steps until nothing is pending in the outbox; raises Timeout."""
        check(lib.bm_agent_drain(self._ptr(), _ms(timeout, "timeout")), "drain")

    # ---- asyncio ----

    def _kick(self):
        ev = self._aev
        if ev is not None:
            ev.set()

    _aev = None

    async def serve(self):
        """Drives the agent from the running asyncio loop until stop(): its
        file descriptors are watched with loop.add_reader, its timers with
        the loop's own, so coroutines (arequest, asend, async handlers) run
        beside it."""
        loop = asyncio.get_running_loop()
        a = self._ptr()
        self._serving = loop
        self._aev = ev = asyncio.Event()
        readers = set()
        fds = ffi.new("int[96]")
        try:
            while not lib.bm_agent_stopped(a):
                for _ in range(64):
                    self.step(0)
                    self._settle_watch()
                    if lib.bm_agent_ready(a) != 1:
                        break
                else:
                    await asyncio.sleep(0)  # busy: let coroutines run, then go on
                    continue
                n = check(lib.bm_agent_fds(a, fds, 96))
                now = set(fds[i] for i in range(n))
                for fd in readers - now:
                    loop.remove_reader(fd)
                for fd in now - readers:
                    loop.add_reader(fd, ev.set)
                readers = now
                ev.clear()
                if lib.bm_agent_ready(a) == 1:
                    continue  # edge-triggered fds: look again before sleeping
                t = lib.bm_agent_timeout(a)
                try:
                    await asyncio.wait_for(ev.wait(), None if t < 0 else t / 1000.0)
                except asyncio.TimeoutError:
                    pass
        finally:
            for fd in readers:
                loop.remove_reader(fd)
            self._serving = None
            self._aev = None
            lib.bm_agent_flush(a) if self._a is not None else None

    def _settle_watch(self):
        if not self._watch:
            return
        code = self._int
        for key, (sent, fut) in list(self._watch.items()):
            if fut.done():
                del self._watch[key]
                continue
            st = lib.bm_agent_status(self._a, sent._id, code)
            if st == 0:
                fut.set_result(sent)
            elif st == 2:
                fut.set_exception(DeadLetter(code[0], sent.id, sent._refusal()))
            else:
                continue
            del self._watch[key]

    async def asend(self, to, type="msg", body=b"", **kw):
        """send(), awaited until the receiver's ACK (needs serve())."""
        s = self.send(to, type, body, **kw)
        fut = asyncio.get_running_loop().create_future()
        self._watch[id(fut)] = (s, fut)
        self._kick()
        return await fut

    async def arequest(self, to, type, body=b"", timeout=5.0):
        """request(), awaited (needs serve()); many may be outstanding."""
        r = self._request(to, type, body, timeout)
        r.future = asyncio.get_running_loop().create_future()
        self._kick()
        return await r.future

    # ---- statistics ----

    def stats(self, hist=False):
        """The agent's counters (dict), with send->ACK and request->reply
        p50/p99 in microseconds; hist: also the raw latency histograms
        (`ack_hist`, `req_hist`: 128 buckets, 4 per octave of µs)."""
        st = ffi.new("bm_agent_stats_t *")
        lib.bm_agent_stats(self._ptr(), st)
        out = {}
        for k in ("sent", "acked", "retried", "dead", "pending", "received", "duplicates",
                  "unhandled", "requests", "replies", "timeouts", "replies_expired",
                  "published", "bcasts", "gaps", "blobs_sent", "blob_bytes_sent",
                  "blobs_received", "blob_bytes_received", "blob_errors", "bcasts_shm",
                  "shm_fallbacks", "shm_corrupt"):
            out[k] = getattr(st, k)
        for h in ("ack", "req"):
            for q in (50, 99):
                out["%s_p%d_us" % (h, q)] = lib.bm_agent_hist_quantile(
                    getattr(st, h + "_hist"), q / 100.0)
            if hist:
                out[h + "_hist"] = list(getattr(st, h + "_hist"))
        return out

    @property
    def gaps(self):
        """Broadcasts known lost on the way to this agent (counted exactly)."""
        return self.stats()["gaps"]

    def requests_pending(self):
        return lib.bm_agent_requests_pending(self._ptr())


def _reply_error(err, to):
    if err == -_errno.ETIMEDOUT:
        return Timeout(detail="no reply%s in time" % ("" if to is None else " from %r" % (to,)))
    if err == _e.Expired.code:
        return DeadLetter(1)
    return DeadLetter(err) if err < 0 else Error(err)


def _blob_free(p):
    pp = ffi.new("bm_blob_t **", p)
    lib.bm_blob_destroy(pp)

#!/usr/bin/env python3
"""py_agent.py - a beastmesh agent written with pyzmq and msgpack alone, and
the interoperability test that runs it against the C broker and CLI.

The Agent class below speaks the mesh wire protocol exactly as
docs/protocol.md specifies it, with nothing from the C library: one DEALER
socket, frame 0 a msgpack header [version, command, fields...], frame 1 a
body for SEND/DELIVER/DIRECTORY/STATS.  If this file works, a Python or Go
agent can join a swarm from the spec alone.

Run as the test driver:

    python3 py_agent.py PATH/TO/beastd PATH/TO/beast

It starts beastd on a fresh private directory, registers the agent, has the
C CLI send to it and receive from it, and checks NACK and LIST on the way;
then broadcasts (docs/protocol.md 14) both ways through beastd's proxy:
Python frames read by `beast sub`, `beast pub` read by a Python SUB with
the last-value cache.
Every wait is bounded; beastd and the CLI processes are killed and reaped and
the directory removed at the end, also on failure.  Exit status 0 when every
check passed, 1 otherwise, 77 (skip) when pyzmq or msgpack is missing.
"""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

try:
    import msgpack
    import zmq
except ImportError as exc:  # pragma: no cover - depends on the host
    print("python-agent: skipped, %s" % exc)
    sys.exit(77)

# ---- the protocol (docs/protocol.md) ----

VERSION = 1
HELLO, WELCOME, DENIED, SEND, DELIVER, ACK, NACK = 1, 2, 3, 4, 5, 6, 7
PING, PONG, LIST, DIRECTORY, STATS, BYE, ERROR, NOTICE = 8, 9, 10, 11, 12, 13, 14, 15

# Wire error codes: BM_E* + 30000, in the order of bm_common.h's list.
E_PROTO, E_VERSION, E_NOAGENT, E_TOOBIG, E_NAMETAKEN, E_NOTREG, E_BUSY = 1, 2, 6, 7, 9, 10, 12

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


def new_id():
    """A message id: 48-bit big-endian wall-clock ms, then 80 random bits."""
    return (int(time.time() * 1000) & 0xFFFFFFFFFFFF).to_bytes(6, "big") + os.urandom(10)


def id_ms(mid):
    return int.from_bytes(mid[:6], "big")


def resolve_dir(explicit=None):
    """The runtime directory, as beastd resolves it."""
    if explicit:
        return explicit.rstrip("/") or "/"
    env = os.environ.get("BEAST_DIR")
    if env:
        return env.rstrip("/") or "/"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and xdg.startswith("/"):
        return xdg + "/beast"
    return "/tmp/beast-%d" % os.getuid()


class ProtocolError(Exception):
    pass


class Agent:
    """One mesh session: a DEALER connected to beastd's ROUTER.

    Frames that arrive while the caller waits for something else are kept in
    self.pending, so waiting for an ACK never eats a DELIVER.
    """

    def __init__(self, ctx, endpoint, name=None, caps=(), heartbeat_ms=1000):
        self.name = name
        self.caps = list(caps)
        self.heartbeat_ms = heartbeat_ms
        self.max_body = 16 << 20
        self.sock = ctx.socket(zmq.DEALER)
        # A close right after a send must not lose the send.
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.connect(endpoint)
        self.pending = []
        self.registered = False
        self.last_tx = time.monotonic()

    def close(self):
        self.sock.close(linger=0)

    # -- frames --

    def tx(self, header, body=None):
        frames = [msgpack.packb([VERSION] + header, use_bin_type=True)]
        if body is not None:
            frames.append(body)
        self.sock.send_multipart(frames, flags=zmq.DONTWAIT)
        self.last_tx = time.monotonic()

    def tx_raw(self, frames):
        self.sock.send_multipart(frames, flags=zmq.DONTWAIT)
        self.last_tx = time.monotonic()

    def _rx(self, timeout_ms):
        """One message as (header list, body or None), or None on timeout."""
        if not self.sock.poll(max(0, int(timeout_ms)), zmq.POLLIN):
            return None
        frames = self.sock.recv_multipart()
        hdr = msgpack.unpackb(frames[0], raw=False)
        if not isinstance(hdr, list) or len(hdr) < 2 or hdr[0] != VERSION:
            raise ProtocolError("bad header from the broker: %r" % (hdr,))
        return hdr, (frames[1] if len(frames) > 1 else None)

    def wait_for(self, match, timeout_s):
        """Returns the first message (hdr, body) for which match(hdr) holds,
        keeping the session alive (PING once per heartbeat interval)
        meanwhile.  Raises TimeoutError after timeout_s."""
        for i, m in enumerate(self.pending):
            if match(m[0]):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError("no matching frame within %.1f s" % timeout_s)
            if self.name and now - self.last_tx >= self.heartbeat_ms / 1000.0:
                self.tx([PING])
            wait = min(deadline - now, self.heartbeat_ms / 1000.0 / 2)
            m = self._rx(wait * 1000)
            if m is None:
                continue
            if match(m[0]):
                return m
            cmd = m[0][1]
            if cmd == PONG and self.registered and len(m[0]) > 2 and m[0][2] != self.name:
                # The broker does not know us (it restarted, or dropped
                # us): register again; the WELCOME is handled below.
                self.registered = False
                self.tx([HELLO, self.name, self.caps, self.heartbeat_ms])
            elif cmd == WELCOME:
                self.registered = True
            elif cmd not in (PING, PONG):
                # The broker's PING is a liveness probe: never answered.
                self.pending.append(m)

    # -- commands --

    def hello(self, timeout_s=5):
        self.tx([HELLO, self.name, self.caps, self.heartbeat_ms])
        hdr, _ = self.wait_for(lambda h: h[1] in (WELCOME, DENIED), timeout_s)
        if hdr[1] == DENIED:
            raise ProtocolError("DENIED %d: %s" % (hdr[2], hdr[3]))
        if hdr[3]:
            self.heartbeat_ms = hdr[3]
        self.max_body = hdr[4]
        self.registered = True
        return hdr

    def send(self, to, mtype, body, corr=None, priority=0, ttl_ms=0, attempt=0):
        mid = new_id()
        self.tx([SEND, mid, corr, to, mtype, priority, ttl_ms, attempt,
                 int(time.time() * 1000)], body)
        return mid

    def ack(self, mid, peer):
        self.tx([ACK, mid, peer])

    def nack(self, mid, peer, code, text):
        self.tx([NACK, mid, peer, code, text])

    def outcome(self, mid, timeout_s):
        """Waits for the ACK or NACK of message mid."""
        return self.wait_for(lambda h: h[1] in (ACK, NACK) and h[2] == mid, timeout_s)

    def ping(self, timeout_s):
        self.tx([PING])
        return self.wait_for(lambda h: h[1] == PONG, timeout_s)

    def list(self, timeout_s=5):
        self.tx([LIST])
        _, body = self.wait_for(lambda h: h[1] == DIRECTORY, timeout_s)
        return msgpack.unpackb(body, raw=False)

    def stats(self, timeout_s=5):
        self.tx([STATS])
        _, body = self.wait_for(lambda h: h[1] == STATS, timeout_s)
        return msgpack.unpackb(body, raw=False)

    def bye(self):
        self.tx([BYE])
        self.registered = False


# ---- the test driver ----

class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, what, cond, detail=""):
        if cond:
            self.passed += 1
            print("ok   - %s" % what)
        else:
            self.failed += 1
            print("FAIL - %s%s" % (what, (": " + str(detail)) if detail else ""))
        sys.stdout.flush()
        return cond


class Deadline(Exception):
    pass


def scratch_dir():
    """A fresh 0700 directory whose socket paths fit the ipc limit."""
    base = tempfile.gettempdir()
    # beastd needs len(dir) + 74 <= 107 (room for shm/NAME.sock).
    if len(base) > 20:
        base = "/tmp"
    d = tempfile.mkdtemp(prefix="bm-py-", dir=base)
    os.chmod(d, 0o700)
    return d


def stop(proc):
    """SIGTERM, then SIGKILL; always reaped."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_broker(ctx, proc, d, endpoint, timeout_s):
    """True once the socket exists and beastd answers a PING with a PONG."""
    sock_path = os.path.join(d, "mesh.sock")
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(sock_path):
        if proc.poll() is not None or time.monotonic() >= deadline:
            return False
        time.sleep(0.02)  # polling for the socket file, bounded
    probe = Agent(ctx, endpoint)  # anonymous: PING is allowed
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            probe.tx([PING])
            m = probe._rx(200)
            if m is not None and m[0][1] == PONG:
                # An unregistered peer's PONG names nobody.
                return len(m[0]) < 3 or m[0][2] is None
        return False
    finally:
        probe.close()


def run(beastd, beast, ck, procs, d):
    endpoint = "ipc://%s/mesh.sock" % d
    ctx = zmq.Context.instance()
    agents = []
    try:
        log = open(os.path.join(d, "beastd.log"), "wb")
        procs.append(subprocess.Popen([beastd, "--dir", d, "-v"], stdout=log, stderr=log,
                                      stdin=subprocess.DEVNULL))
        log.close()
        if not ck.ok("beastd starts and answers PING with PONG",
                     wait_for_broker(ctx, procs[0], d, endpoint, 10)):
            return
        st = os.stat(os.path.join(d, "mesh.sock"))
        ck.ok("the socket file is private (0600)", stat.S_IMODE(st.st_mode) == 0o600,
              oct(stat.S_IMODE(st.st_mode)))

        # A SEND before HELLO is refused, not dropped.
        anon = Agent(ctx, endpoint)
        agents.append(anon)
        mid = anon.send("anyone", "msg", b"x")
        hdr, _ = anon.outcome(mid, 5)
        ck.ok("a SEND before HELLO gets NACK NOTREG (wire %d)" % E_NOTREG,
              hdr[1] == NACK and hdr[4] == E_NOTREG, hdr)

        # A malformed header gets ERROR PROTO and the broker goes on.
        anon.tx_raw([b"\x93\x01"])  # a truncated msgpack array
        hdr, _ = anon.wait_for(lambda h: h[1] == ERROR, 5)
        ck.ok("a malformed header gets ERROR PROTO (wire %d)" % E_PROTO, hdr[2] == E_PROTO, hdr)

        # Registration.
        py = Agent(ctx, endpoint, "pyagent", caps=["py", "test.interop"], heartbeat_ms=1000)
        agents.append(py)
        hdr = py.hello()
        ck.ok("HELLO gets WELCOME with our name, heartbeat and body cap",
              hdr[1] == WELCOME and hdr[2] == "pyagent" and hdr[3] == 1000
              and isinstance(hdr[4], int) and hdr[4] >= 1 << 20, hdr)

        hdr, _ = py.ping(5)
        ck.ok("PONG names us once we are registered", hdr[2:3] == ["pyagent"], hdr)

        # C -> Python: the CLI's send waits for our ACK.
        send = subprocess.Popen([beast, "--dir", d, "send", "--timeout", "5000", "pyagent",
                                 "hello from C"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        procs.append(send)
        hdr, body = py.wait_for(lambda h: h[1] == DELIVER, 10)
        mid = hdr[2]
        now = time.time() * 1000
        ck.ok("DELIVER from the C CLI carries id, from, type and body",
              isinstance(mid, bytes) and len(mid) == 16 and abs(id_ms(mid) - now) < 60000
              and hdr[3] is None and hdr[4] == "send-%d" % send.pid and hdr[5] == "msg"
              and hdr[6:9] == [0, 0, 0] and abs(hdr[9] - now) < 60000
              and body == b"hello from C", (hdr, body))
        py.ack(mid, hdr[4])
        try:
            out, err = send.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            stop(send)
            out, err = send.communicate()
        ck.ok("our ACK reaches the C sender (beast send exits 0)",
              send.returncode == 0 and ("acked by pyagent: %s" % mid.hex()).encode() in err,
              "exit %s, stderr %r" % (send.returncode, err))

        # Python -> C: start a listener, wait for its NOTICE online.
        listen = subprocess.Popen([beast, "--dir", d, "listen", "--count", "1", "--json",
                                   "clisten"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        procs.append(listen)
        py.wait_for(lambda h: h[1] == NOTICE and h[2] == "online" and h[3] == "clisten", 10)
        body = "hello from Python \u2713".encode()
        mid = py.send("clisten", "py.greeting", body)
        hdr, _ = py.outcome(mid, 10)
        ck.ok("a SEND to the C listener comes back as its ACK",
              hdr[1] == ACK and hdr[2] == mid and hdr[3] == "clisten", hdr)
        try:
            out, err = listen.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            stop(listen)
            out, err = listen.communicate()
        try:
            line = json.loads(out.decode().splitlines()[0])
        except (IndexError, ValueError) as exc:
            line = {"error": str(exc), "stdout": out, "stderr": err}
        ck.ok("the C listener got our id, name, type and body",
              listen.returncode == 0 and line.get("id") == mid.hex()
              and line.get("from") == "pyagent" and line.get("type") == "py.greeting"
              and line.get("body") == body.decode() and line.get("attempt") == 0,
              "exit %s, %r" % (listen.returncode, line))

        # Refusals.
        mid = py.send("nobody-here", "msg", b"?")
        hdr, _ = py.outcome(mid, 5)
        ck.ok("a SEND to an unknown agent gets NACK NOAGENT (wire %d)" % E_NOAGENT,
              hdr[1] == NACK and hdr[2] == mid and hdr[3] == "nobody-here"
              and hdr[4] == E_NOAGENT and isinstance(hdr[5], str), hdr)

        # Directory and counters.
        agents_now = py.list()
        mine = [a for a in agents_now if isinstance(a, dict) and a.get("name") == "pyagent"]
        ck.ok("LIST returns a DIRECTORY that lists us with our caps and counts",
              len(mine) == 1 and mine[0].get("caps") == ["py", "test.interop"]
              and mine[0].get("sent") == 2 and mine[0].get("delivered") == 1
              and mine[0].get("acked") == 1 and mine[0].get("inflight") == 0
              and isinstance(mine[0].get("idle_ms"), int), agents_now)
        counters = py.stats()
        ck.ok("STATS returns the broker counters",
              isinstance(counters, dict) and counters.get("agents", 0) >= 1
              and counters.get("nack_noagent") == 1 and counters.get("nack_notreg") == 1
              and counters.get("malformed") == 1 and counters.get("delivers") == 2,
              counters)
        broadcast(beast, ck, procs, d)
        py.bye()
    finally:
        for a in agents:
            a.close()


def bcast_frame0(topic, hdr_fields, body=b""):
    """A broadcast's frame 0 (docs/protocol.md 14.2): topic, header, body."""
    return topic + msgpack.packb(hdr_fields) + body


def bcast_parse(parts, token=None):
    """(topic, header, body, replayed) of a received broadcast, as 14.2 and
    14.4 say: the topic runs to the first byte outside 0x21..0x7e, the
    header is one msgpack array, the body is the rest or frame 1."""
    f0, replayed = parts[0], parts[0][:1] == b"\x00"
    if replayed:
        if token is not None and f0[1:17] != token:
            return None
        f0 = f0[19:]
    n = next((i for i, c in enumerate(f0) if not 0x21 <= c <= 0x7E), len(f0))
    u = msgpack.Unpacker(raw=False)
    u.feed(f0[n:])
    hdr = u.unpack()
    body = parts[1] if len(parts) == 2 else f0[n + u.tell():]
    return f0[:n].decode(), hdr, body, replayed


def broadcast(beast, ck, procs, d):
    """Python publisher -> beastd's proxy -> `beast sub`, and `beast pub` ->
    proxy -> a Python SUB asking for the last-value cache."""
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 2000)
    pub.setsockopt(zmq.RCVTIMEO, 5000)
    pub.connect("ipc://%s/pub.sock" % d)
    ck.ok("the proxy subscribes to a publisher on connect", pub.recv() == b"\x01")
    session = int.from_bytes(os.urandom(8), "big")
    big = b"b" * (100 << 10)
    now = int(time.time() * 1000)
    pub.send(bcast_frame0(b"tot/py/1/", [2, "py-pub", session, 1, 1, now, 0], b"one frame"))
    pub.send_multipart([bcast_frame0(b"tot/py/2/", [2, "py-pub", session, 2, 1, now, 0]), big])
    # both reach a late `beast sub` from the proxy's last-value cache
    sub = subprocess.Popen([beast, "--dir", d, "sub", "--count", "2", "--timeout", "5000",
                            "--json", "tot/py"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    procs.append(sub)
    try:
        out, err = sub.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        stop(sub)
        out, err = sub.communicate()
    try:
        got = {m["topic"]: m for m in map(json.loads, out.decode().splitlines())}
    except ValueError as exc:
        got = {"error": str(exc)}
    one, two = got.get("tot/py/1/", {}), got.get("tot/py/2/", {})
    ck.ok("`beast sub` reads our one-frame and two-frame broadcasts",
          sub.returncode == 0 and one.get("from") == "py-pub" and one.get("seq") == 1
          and one.get("body") == "one frame" and two.get("seq") == 2
          and two.get("body") == big.decode(),
          "exit %s, stderr %r, %r" % (sub.returncode, err, {k: str(v)[:120] for k, v in got.items()}))
    pub.close()

    rc = subprocess.run([beast, "--dir", d, "pub", "--as", "cpub", "tot/py/c", "from C"],
                        stdin=subprocess.DEVNULL, capture_output=True, timeout=10).returncode
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    s.connect("ipc://%s/sub.sock" % d)
    token = os.urandom(8).hex().encode()
    s.setsockopt(zmq.SUBSCRIBE, b"tot/py/c/")
    s.setsockopt(zmq.SUBSCRIBE, b"\x00" + token + b"L/" + b"tot/py/c/")
    seen, synced = [], False
    for _ in range(10):
        m = bcast_parse(s.recv_multipart(), token)
        if m is None:
            continue
        if m[1][6] & 1:
            synced = True
            break
        seen.append(m)
    s.close()
    ck.ok("a Python SUB gets `beast pub`'s message from the cache, then the sync marker",
          rc == 0 and synced and len(seen) == 1 and seen[0][0] == "tot/py/c/"
          and seen[0][1][1] == "cpub" and seen[0][2] == b"from C" and seen[0][3],
          "pub exit %s, %r, synced %s" % (rc, seen, synced))


def main(argv):
    if len(argv) != 3:
        print("usage: py_agent.py BEASTD BEAST", file=sys.stderr)
        return 2
    beastd, beast = argv[1], argv[2]
    ck = Checks()
    procs = []
    d = scratch_dir()

    def on_alarm(sig, frame):
        raise Deadline("the test took longer than 50 s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(50)
    try:
        run(beastd, beast, ck, procs, d)
    except (Deadline, TimeoutError, ProtocolError, zmq.ZMQError, OSError) as exc:
        ck.ok("the run finished", False, "%s: %s" % (type(exc).__name__, exc))
    finally:
        signal.alarm(0)
        for p in reversed(procs):
            stop(p)
        if ck.failed:
            try:
                with open(os.path.join(d, "beastd.log"), "rb") as f:
                    sys.stdout.write("--- beastd log ---\n" + f.read().decode(errors="replace"))
            except OSError:
                pass
        zmq.Context.instance().term()
        shutil.rmtree(d, ignore_errors=True)
    print("python-agent: %d passed, %d failed" % (ck.passed, ck.failed))
    return 0 if ck.failed == 0 and ck.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

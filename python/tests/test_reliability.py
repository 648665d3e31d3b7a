"""Exactly once across kill -9, timeouts, anycast, dead letters, failing handlers."""
import json
import os
import random
import time

import pytest

import beastmesh
from conftest import BEAST, pump, wait_for

N = int(os.environ.get("BM_PY_STREAM", "10000"))


def _ledger(path):
    try:
        with open(path) as f:
            return [json.loads(x) for x in f.read().splitlines() if x.endswith("}")]
    except OSError:
        return []


def test_python_receiver_killed_mid_stream_handles_each_message_exactly_once(swarm):
    """10,000 messages to a Python receiver that forwards each to a ledger
    (beast listen, C); the receiver is killed with -9 three times and
    restarted.  The ledger must hold every message exactly once."""
    out = os.path.join(swarm.base, "ledger.out")
    with open(out, "wb") as f:
        swarm.spawn([BEAST, "--dir", swarm.dir, "listen", "--json", "ledger"], log="ledger",
                    stdout=f)
    swarm.wait_online("ledger")
    rcv = swarm.py("forwarder", "rcv", "ledger", log="rcv")
    swarm.wait_online("rcv")
    kills = 0
    with beastmesh.Agent("snd", ack_timeout=1.0) as snd:
        for k in range(N):
            snd.send("rcv", "work", b"%d" % k)
            if k % 500 == 0:
                snd.step(0)
        deadline = time.monotonic() + 180
        rng = random.Random(os.getpid())
        points = sorted(rng.sample(range(N // 8, N * 7 // 8), 3))
        while time.monotonic() < deadline:
            snd.step(0.02)
            if kills < len(points) and len(_ledger(out)) >= points[kills]:
                time.sleep(rng.random() * 0.02)
                swarm.kill9(rcv)
                kills += 1
                rcv = swarm.py("forwarder", "rcv", "ledger", log="rcv")
            if snd.stats()["pending"] == 0 and len(_ledger(out)) >= N:
                break
        assert kills == 3
        snd.drain(30)
        assert snd.stats()["pending"] == 0 and snd.stats()["dead"] == 0
    wait_for(lambda: len(_ledger(out)) >= N, 30, "the ledger to fill")
    time.sleep(0.3)  # anything extra (a duplicate) would show now
    seen = {}
    for x in _ledger(out):
        seen[x["body"]] = seen.get(x["body"], 0) + 1
    twice = [k for k, v in seen.items() if v != 1]
    missing = [k for k in range(N) if str(k) not in seen]
    assert not missing, "lost: %s" % missing[:20]
    assert not twice, "handled more than once: %s" % twice[:20]
    assert len(seen) == N


def test_a_handler_rerun_after_a_crash_between_its_send_and_its_mark_sends_once(swarm):
    """The forwarder stores and sends its forward, then dies with -9 before
    the message it handles is marked handled.  Restarted, it handles the
    resent message again and sends the forward again -- with the id derived
    from the handled message's, so the ledger's de-dup (or the outbox, when
    the first copy is still held) keeps it to one.  With fresh ids the
    ledger would hold the forward twice."""
    out = os.path.join(swarm.base, "ledger.out")
    mark = os.path.join(swarm.base, "crashed")
    with open(out, "wb") as f:
        swarm.spawn([BEAST, "--dir", swarm.dir, "listen", "--json", "ledger"], log="ledger",
                    stdout=f)
    swarm.wait_online("ledger")
    fwd = swarm.py("crash_forwarder", "fwd", "ledger", mark, log="fwd")
    swarm.wait_online("fwd")
    with beastmesh.Agent("boss", ack_timeout=0.5) as a:
        s = a.send("fwd", "work", b"job-1")
        pump([a], lambda: os.path.exists(mark) and fwd.poll() is not None, 15,
             "the forwarder to store its forward and die")
        assert fwd.returncode == -9
        # The forward is in the dead forwarder's outbox (ZeroMQ may not
        # even have put it on the wire before the kill).
        r = swarm.beast("outbox", "--as", "fwd", "stats", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["pending"] == 1, r.stdout
        fwd = swarm.py("crash_forwarder", "fwd", "ledger", mark, log="fwd")
        s.wait(30)  # handled by the restarted forwarder, ACKed
    time.sleep(0.5)  # a second forward would show now
    got = [x["body"] for x in _ledger(out)]
    assert got == ["job-1"], "the ledger holds %r" % got
    assert swarm.log("fwd").count("ready fwd") == 2


def test_request_times_out_when_the_handler_is_too_slow(swarm):
    swarm.py("echo", "slow", "", "2.0")
    swarm.wait_online("slow")
    with beastmesh.Agent("impatient") as a:
        t0 = time.monotonic()
        with pytest.raises(beastmesh.Timeout):
            a.request("slow", "q", b"x", timeout=0.5)
        assert time.monotonic() - t0 < 1.9
        assert a.stats()["timeouts"] == 1


def test_request_to_a_capability_nobody_has_times_out(swarm):
    with beastmesh.Agent("lonely") as a:
        with pytest.raises(beastmesh.Timeout) as ei:
            a.request("@nobody", "q", b"x", timeout=0.5)
        assert isinstance(ei.value, beastmesh.Error) and isinstance(ei.value, TimeoutError)


def test_anycast_spreads_requests_over_every_capable_python_agent(swarm):
    for n in ("calc-1", "calc-2"):
        swarm.py("echo", n, "calc", log=n)
    for n in ("calc-1", "calc-2"):
        swarm.wait_online(n)
    with beastmesh.Agent("asker") as a:
        who = set()
        for i in range(20):
            r = a.request("@calc", "add", b"%d" % i, timeout=10)
            name, body = r.split(b":")
            assert body == b"%d" % i
            who.add(name)
        assert who <= {b"calc-1", b"calc-2"}
        assert len(who) == 2


def test_a_message_nobody_acknowledges_in_time_is_a_dead_letter_with_its_reason(swarm):
    with beastmesh.Agent("mortal") as a:
        s = a.send("ghost", "boo", b"x", ttl=0.3)
        with pytest.raises(beastmesh.DeadLetter) as ei:
            s.wait(10)
        assert "ttl" in ei.value.reason
        # beastd refused each attempt; its words stay with the dead letter.
        assert "no agent named 'ghost'" in ei.value.refusal
        assert ei.value.code == beastmesh.Expired.code
        assert s.status() == "dead"
    r = swarm.beast("outbox", "--as", "mortal", "dead", "--json")
    assert r.returncode == 0 and s.id.encode() in r.stdout
    assert b'"last_refusal":"no agent named \'ghost\' is online"' in r.stdout


def test_a_handler_that_rejects_turns_the_send_into_a_dead_letter_at_once(swarm):
    with beastmesh.Agent("strict") as b, beastmesh.Agent("hopeful") as a:
        @b.on_message("x")
        def refuse(msg):
            raise beastmesh.Reject("not today")

        @b.on_request("y")
        def refuse_req(msg):
            raise beastmesh.Reject("no")
        s = a.send("strict", "x", b"1")
        pump([a, b], s.done, 10, "the NACK")
        with pytest.raises(beastmesh.DeadLetter) as ei:
            s.wait(1)
        assert ei.value.reason == "request denied"
        assert "not today" in ei.value.refusal  # the receiver's words
        r = a._request("strict", "y", b"", 5.0)
        pump([a, b], lambda: r.done, 10, "the dead request")
        assert r.err == beastmesh.Denied.code


def test_a_handler_that_raises_is_retried_and_the_message_handled_once(swarm):
    swarm.py("echo", "flaky", "", "0", "2")
    swarm.wait_online("flaky")
    with beastmesh.Agent("patient", ack_timeout=1.0) as a:
        s = a.send("flaky", "note", b"eventually")
        s.wait(30)
        assert a.stats()["retried"] >= 2
    wait_for(lambda: "got note eventually" in swarm.log("echo"), 5, "the handled message")
    assert swarm.log("echo").count("got note eventually") == 1
    print(swarm.log("echo"))
    assert swarm.log("echo").count("RuntimeError: planned failure") == 2


def test_send_batch_is_stored_and_delivered_whole(swarm):
    with beastmesh.Agent("batcher") as a, beastmesh.Agent("bin") as b:
        got = []
        b.on_message(lambda m: got.append(m.body))
        handles = a.send_batch([("bin", "t", b"1"), ("bin", "t", "2"), ("bin", "t", bytearray(b"3"))])
        pump([a, b], lambda: all(h.done() for h in handles), 10, "the batch")
        assert sorted(got) == [b"1", b"2", b"3"]

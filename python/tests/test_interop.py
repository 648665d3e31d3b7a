"""Python and C agents, both ways, each a real process against a real beastd."""
import json
import os
import time

import beastmesh
from conftest import EXAMPLES, pump, wait_for


def test_cli_beast_send_reaches_a_python_agent_and_is_acked(swarm):
    p = swarm.py("echo", "pyl")
    swarm.wait_online("pyl")
    r = swarm.beast("send", "--as", "clisend", "--type", "note", "pyl", "hello from C")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "got note hello from C" in swarm.log("echo"), 10, "the Python handler")
    assert p.poll() is None


def test_python_sends_are_received_by_beast_listen(swarm):
    out = os.path.join(swarm.base, "listen.out")
    with open(out, "wb") as f:
        lst = swarm.spawn(["%s" % os.path.join(os.path.dirname(swarm.beastd.args[0]), "beast"),
                           "--dir", swarm.dir, "listen", "--json", "--count", "3", "clil"],
                          log="listen", stdout=f)
    swarm.wait_online("clil")
    with beastmesh.Agent("pysend") as a:
        sent = [a.send("clil", "note", "body %d" % i) for i in range(3)]
        for s in sent:
            s.wait(10)
            assert s.status() == "acked"
    assert lst.wait(10) == 0
    lines = [json.loads(x) for x in open(out).read().splitlines()]
    assert [x["body"] for x in lines] == ["body 0", "body 1", "body 2"]
    assert all(x["from"] == "pysend" and x["type"] == "note" for x in lines)
    assert [x["id"] for x in lines] == [s.id for s in sent]


def test_python_requests_answered_by_c_beast_echo_by_name_and_capability(swarm):
    swarm.spawn([os.path.join(os.path.dirname(swarm.beastd.args[0]), "beast"), "--dir",
                 swarm.dir, "echo", "--caps", "cecho", "cecho"], log="cecho")
    swarm.wait_online("cecho")
    with beastmesh.Agent("pyreq") as a:
        assert a.request("cecho", "q", b"abc", timeout=10) == b"abc"
        assert a.request("@cecho", "q", b"\x00\xffbinary", timeout=10) == b"\x00\xffbinary"


def test_beast_request_from_c_is_answered_by_a_python_handler(swarm):
    swarm.py("echo", "pyecho", "pyc")
    swarm.wait_online("pyecho")
    r = swarm.beast("request", "@pyc", "ask", "ping")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"pyecho:ping"


def test_the_c_thinker_example_scores_a_python_request(swarm):
    swarm.spawn([os.path.join(EXAMPLES, "beast-thinker"), "--dir", swarm.dir, "--name",
                 "cthinker"], log="cthinker")
    swarm.wait_online("cthinker")
    with beastmesh.Agent("pyplanner") as a:
        # 8-puzzle state, 0 = blank; two tiles out of place by one move each.
        assert a.request("@think", "think.score", b"123456708", timeout=10) == b"1"
        try:
            a.request("@think", "think.score", b"nonsense", timeout=10)
        except beastmesh.DeadLetter as e:
            assert "malformed" in e.reason
        else:
            raise AssertionError("an invalid state must be refused")


def test_python_agents_talk_to_each_other_in_one_process(swarm):
    with beastmesh.Agent("a1") as a, beastmesh.Agent("a2", caps=["two"]) as b:
        got = []
        b.on_message("t")(lambda m: got.append((m.sender, m.type, m.body)))
        s = a.send("@two", "t", b"x" * 10000, priority=7)
        pump([a, b], lambda: s.done(), 10, "the ACK")
        assert got == [("a1", "t", b"x" * 10000)]
        assert a.stats()["acked"] == 1 and b.stats()["received"] == 1


def test_every_ack_of_a_burst_is_timed_in_the_histogram(swarm):
    with beastmesh.Agent("burst", sync="never") as a, beastmesh.Agent("burst-sink") as b:
        for i in range(20000):
            a.send("burst-sink", "t", b"%d" % i)
        pump([a, b], lambda: a.stats()["pending"] == 0, 60, "every ACK")
        st = a.stats(hist=True)
        assert st["acked"] == 20000 and sum(st["ack_hist"]) == 20000
        assert 0 < st["ack_p50_us"] <= st["ack_p99_us"]

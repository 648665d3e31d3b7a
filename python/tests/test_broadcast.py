"""Broadcasts between Python and the CLI: prefixes, sequences, counted gaps."""
import json
import os

import beastmesh
from conftest import BEAST, pump, wait_for


def test_python_follows_a_subtree_and_sees_sequences_without_gaps(swarm):
    with beastmesh.Agent("follower") as f, beastmesh.Agent("explorer") as p:
        got, other = [], []
        f.subscribe("tot/7", got.append)
        f.subscribe("tot/70", other.append)
        f.wait_subscribed(5)
        for i in range(200):
            p.publish("tot/7/%d" % (i % 4), b"branch %d" % i)
            if i % 20 == 0:
                p.step(0)
        p.publish("tot/70/1", b"not 7")
        pump([f, p], lambda: len(got) >= 200 and other, 20, "the broadcasts")
        assert [b.body for b in got] == [b"branch %d" % i for i in range(200)]
        assert [b.seq for b in got] == list(range(1, 201))
        assert all(b.topic.startswith("tot/7/") and b.sender == "explorer" for b in got)
        assert other[0].topic == "tot/70/1"
        assert f.gaps == 0 and sum(b.gap for b in got) == 0


def test_beast_pub_reaches_python_and_python_reaches_beast_sub(swarm):
    out = os.path.join(swarm.base, "sub.out")
    with open(out, "wb") as fo:
        sub = swarm.spawn([BEAST, "--dir", swarm.dir, "sub", "--json", "--count", "2",
                           "--no-lvc", "tot/9"], log="sub", stdout=fo)
    with beastmesh.Agent("pyfollow") as f, beastmesh.Agent("pypub") as p:
        got = []
        f.subscribe("tot/9", got.append)
        f.wait_subscribed(5)
        r = swarm.beast("pub", "--as", "clipub", "tot/9/1", "from C")
        assert r.returncode == 0, r.stderr
        pump([f], lambda: got, 10, "the C broadcast")
        assert got[0].body == b"from C" and got[0].sender == "clipub"
        # beast sub has no handshake here: publish until it has one line.
        def sub_got():
            p.publish("tot/9/2", b"from Python")
            p.step(0.05)
            return sub.poll() is not None
        wait_for(sub_got, 10, "beast sub to get a Python broadcast")
    lines = [json.loads(x) for x in open(out).read().splitlines()]
    line = [x for x in lines if x["from"] == "pypub"][0]
    assert line["topic"].rstrip("/") == "tot/9/2" and line["from"] == "pypub" and line["body"] == "from Python"

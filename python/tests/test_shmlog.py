"""Broadcasts through a publisher's shared-memory log: a Python agent
offering one (shm_log) read by beast sub --shm, and a Python subscriber
reading beast pub --shm-log, tethered (nothing lost, the first messages
through the proxy, the rest from the log, none twice)."""
import json
import os
import subprocess

import pytest

import beastmesh
from conftest import BEAST, pump, wait_for

N = 3000


def test_python_subscriber_reads_a_local_log_tethered_without_a_loss_or_a_duplicate(swarm):
    with beastmesh.Agent("shmfollow") as f:
        got = []
        f.subscribe("tot/5", got.append, shm="tethered")
        f.wait_subscribed(5)
        pub = swarm.spawn([BEAST, "--dir", swarm.dir, "pub", "--as", "shmpub", "--shm-log", "64K",
                           "--lines", "tot/5/1"], log="pub", stdin=subprocess.PIPE)
        pub.stdin.write(b"line 1\n")
        pub.stdin.flush()
        pump([f], lambda: got, 10, "the first broadcast")
        # The rest in one go: the tethered log fills and holds beast pub
        # until this agent has read (it writes while we pump).
        pub.stdin.write(b"".join(b"line %d\n" % i for i in range(2, N + 1)))
        pub.stdin.close()
        pump([f], lambda: len(got) >= N, 60, "every broadcast")
        assert pub.wait(timeout=20) == 0
        assert [b.seq for b in got] == list(range(1, N + 1))
        assert [b.body for b in got] == [b"line %d" % i for i in range(1, N + 1)]
        st = f.stats()
        assert st["gaps"] == 0 and sum(b.gap for b in got) == 0
        # The first came through the proxy (that is how the log is found).
        assert 0 < st["bcasts_shm"] < N
        # beast pub has left: its log is given up (not corrupt).
        assert st["shm_corrupt"] == 0


def test_python_publisher_offers_a_log_that_beast_sub_reads(swarm):
    out = os.path.join(swarm.base, "sub.out")
    with beastmesh.Agent("pylog", shm_log=1 << 20) as p:
        p.publish("tot/6/1", b"hello 0")  # the publisher opens with its log
        with open(out, "wb") as fo:
            sub = swarm.spawn([BEAST, "--dir", swarm.dir, "sub", "--shm", "--tethered", "--json",
                               "--no-lvc", "--count", "500", "--timeout", "30000", "tot/6"],
                              log="sub", stdout=fo)
        wait_for(lambda: "following" in swarm.log("sub"), 10, "beast sub to subscribe")
        sent = 0
        while sub.poll() is None and sent < 500:
            try:
                p.publish("tot/6/1", b"hello %d" % (sent + 1))
                sent += 1
            except beastmesh.Full:
                pass
            p.step(0.001)
        pump([p], lambda: sub.poll() is not None, 30, "beast sub to finish")
    assert sub.returncode == 0, swarm.log("sub")
    lines = [json.loads(x) for x in open(out).read().splitlines()]
    seqs = [x["seq"] for x in lines]
    assert len(seqs) == 500 and seqs == list(range(seqs[0], seqs[0] + 500))
    assert all(x["gap"] == 0 and x["from"] == "pylog" for x in lines)
    assert "came from shared-memory logs" in swarm.log("sub")


def test_subscribe_refuses_an_unknown_shm_mode(swarm):
    with beastmesh.Agent("shmbad") as f:
        with pytest.raises(beastmesh.BadArgument):
            f.subscribe("tot/1", lambda b: None, shm="sideways")

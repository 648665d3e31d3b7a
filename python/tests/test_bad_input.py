"""Bad input gets a beastmesh.Error with a clear text, never a crash."""
import os
import shutil
import tempfile
import subprocess
import sys

import numpy as np
import pytest

import beastmesh
from conftest import PYDIR, PYTHON


@pytest.mark.parametrize("call", [
    lambda a: a.send(123, "t", b""),
    lambda a: a.send("x", 5, b""),
    lambda a: a.send("x", "t", 3.5),
    lambda a: a.send("x", "t", b"", priority=300),
    lambda a: a.send("x", "t", b"", ttl=-1),
    lambda a: a.send_batch([("x", "t")]),
    lambda a: a.request("x", "t", b"", timeout="soon"),
    lambda a: a.request("x", "t", b"", timeout=0),
    lambda a: a.step("now"),
    lambda a: a.send_cloud("x", np.zeros((4, 2), np.float32)),
    lambda a: a.send_cloud("x", np.zeros((4, 3), np.float64)),
    lambda a: a.send_cloud("x", np.zeros((4, 3), np.float32), np.zeros((3, 3), np.uint8)),
    lambda a: a.subscribe(7, print),
])
def test_wrong_types_raise_bad_argument(swarm, call):
    with beastmesh.Agent("typed") as a:
        with pytest.raises(beastmesh.BadArgument):
            call(a)


@pytest.mark.parametrize("call", [
    lambda a: a.send("no spaces allowed", "t", b""),
    lambda a: a.send("x" * 65, "t", b""),
    lambda a: a.send("", "t", b""),
    lambda a: a.send("x", "bad type", b""),
    lambda a: a.send("nul\0name", "t", b""),
    lambda a: a.publish("tot//7", b""),
    lambda a: a.publish("", b""),
    lambda a: a.publish("t" * 300, b""),
    lambda a: a.subscribe("bad prefix", print),
    lambda a: a.on_message("bad type")(print),
])
def test_invalid_names_types_and_topics_raise_bad_name(swarm, call):
    with beastmesh.Agent("named") as a:
        with pytest.raises(beastmesh.BadName):
            call(a)


def test_oversized_bodies_are_refused_with_too_big(swarm):
    with beastmesh.Agent("big") as a:
        with pytest.raises(beastmesh.TooBig):
            a.send("x", "t", bytes(17 << 20))
        with pytest.raises(beastmesh.TooBig):
            a.request("x", "t", bytes(17 << 20), timeout=1)
        a.send("x", "t", bytes(1 << 20))  # within the cap: fine


def test_agent_names_are_checked_and_owned(swarm, tmp_path):
    with pytest.raises(beastmesh.BadName):
        beastmesh.Agent("bad name")
    with pytest.raises(beastmesh.BadArgument):
        beastmesh.Agent(None)
    with beastmesh.Agent("solo"):
        with pytest.raises(beastmesh.Error) as ei:
            beastmesh.Agent("solo")  # same journals
        assert "open in another agent" in str(ei.value)
        with pytest.raises(beastmesh.NameTaken):
            beastmesh.Agent("solo", state=str(tmp_path))  # beastd owns the name


def test_no_beastd_is_a_clear_no_broker():
    base = tempfile.mkdtemp(prefix="bmpy.")
    try:
        d = os.path.join(base, "run")
        os.mkdir(d, 0o700)
        with pytest.raises(beastmesh.NoBroker) as ei:
            beastmesh.Agent("alone", dir=d, state=base, connect_timeout=0.3)
        assert "beastd is not running" in str(ei.value)
    finally:
        shutil.rmtree(base)


def test_closed_agents_refuse_politely(swarm):
    a = beastmesh.Agent("closing")
    a.close()
    with pytest.raises(beastmesh.Error):
        a.send("x", "t", b"")
    a.close()  # twice is fine


def test_a_missing_library_is_one_error_naming_where_it_looked():
    env = dict(os.environ, BEASTMESH_LIB="/nonexistent/libbeastmesh.so", PYTHONPATH=PYDIR)
    r = subprocess.run([PYTHON, "-c", "import beastmesh"], env=env, capture_output=True,
                       timeout=30)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "LibraryError" in err and "$BEASTMESH_LIB" in err and "build" in err and \
        "system loader" in err

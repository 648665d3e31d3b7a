"""Fixtures: a real beastd on a private scratch directory, and helpers that
start real processes (Python agents, the beast CLI, the C example agents)
against it.  Everything a test starts is killed with -9 and reaped at the
end, and the scratch directory (sockets, journals) removed.

Paths come from the build: $BM_BUILD (the meson build dir; default
<source>/build).  The library under test is $BEASTMESH_LIB, else
<build>/libbeastmesh.so.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("BM_BUILD", os.path.join(ROOT, "build")))
PYDIR = os.path.join(ROOT, "python")
AGENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agents")
os.environ.setdefault("BEASTMESH_LIB", os.path.join(BUILD, "libbeastmesh.so"))
sys.path.insert(0, PYDIR)

BEASTD = os.path.join(BUILD, "agents", "beastd")
BEAST = os.path.join(BUILD, "agents", "beast")
EXAMPLES = os.path.join(BUILD, "agents", "examples")
PYTHON = "/usr/bin/python3"


def wait_for(pred, timeout, what, step=0.02):
    """Polls pred() until true (bounded); fails the test with `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    pytest.fail("timed out after %.1fs waiting for %s" % (timeout, what))


class Swarm:
    """One beastd and the processes a test starts around it."""

    def __init__(self, base):
        self.base = base
        self.dir = os.path.join(base, "run")
        self.state = os.path.join(base, "state")
        os.makedirs(self.state, mode=0o700)
        self.env = dict(os.environ, BEAST_DIR=self.dir, BEAST_STATE=self.state,
                        PYTHONPATH=PYDIR + os.pathsep + AGENTS, PYTHONUNBUFFERED="1")
        self.procs = []
        self.beastd = None

    def start_beastd(self, *args):
        self.beastd = self.spawn([BEASTD, "--dir", self.dir, "--heartbeat", "200"] + list(args),
                                 log="beastd")
        wait_for(lambda: subprocess.run([BEAST, "--dir", self.dir, "ping", "--count", "1"],
                                        env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, timeout=10).returncode == 0,
                 10, "beastd to answer")
        return self.beastd

    def spawn(self, argv, log=None, stdout=None, stdin=None):
        logf = open(os.path.join(self.base, (log or os.path.basename(argv[0])) + ".log"), "ab")
        p = subprocess.Popen(argv, env=self.env, stdout=stdout or logf, stderr=logf, stdin=stdin,
                             start_new_session=True)
        p.logf = logf
        self.procs.append(p)
        return p

    def py(self, script, *args, log=None, stdout=None):
        """A Python agent process: tests/agents/<script>.py ARGS."""
        return self.spawn([PYTHON, os.path.join(AGENTS, script + ".py")] + [str(a) for a in args],
                          log=log or script, stdout=stdout)

    def beast(self, *args, timeout=30, input=None):
        return subprocess.run([BEAST, "--dir", self.dir] + [str(a) for a in args], env=self.env,
                              capture_output=True, timeout=timeout, input=input)

    def agent_online(self, name):
        r = self.beast("ls", "--json")
        if r.returncode != 0:
            return False
        agents = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        return any(a.get("name") == name for a in agents)

    def wait_online(self, name, timeout=10):
        wait_for(lambda: self.agent_online(name), timeout, "agent %r online" % name)

    def log(self, name):
        try:
            with open(os.path.join(self.base, name + ".log"), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def kill9(p):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                self.kill9(p)
            p.logf.close()


@pytest.fixture
def swarm():
    base = tempfile.mkdtemp(prefix="bmpy.")  # short: ipc paths are limited to 107 bytes
    s = Swarm(base)
    old = {k: os.environ.get(k) for k in ("BEAST_DIR", "BEAST_STATE")}
    os.environ["BEAST_DIR"] = s.dir
    os.environ["BEAST_STATE"] = s.state
    try:
        s.start_beastd()
        yield s
    finally:
        s.close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(base, ignore_errors=True)


def pump(agents, cond, timeout, what):
    """Steps in-process agents until cond() (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for a in agents:
            a.step(0.005)
    pytest.fail("timed out after %.1fs waiting for %s" % (timeout, what))

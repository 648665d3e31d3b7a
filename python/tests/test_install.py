"""The package installs with pip (into a venv here) and the installed copy
finds the library through $BEASTMESH_LIB and works against beastd."""
import os
import shutil
import subprocess
import tempfile

from conftest import PYDIR, PYTHON


def test_pip_installs_the_package_into_a_venv_and_it_runs(swarm):
    venv = tempfile.mkdtemp(prefix="bmvenv.")
    work = tempfile.mkdtemp(prefix="bmsrc.")
    try:
        subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", venv], check=True,
                       timeout=120)
        # A copy of the source, so the build leaves nothing in the tree;
        # no index and no build isolation: this machine may be offline.
        src = os.path.join(work, "python")
        shutil.copytree(PYDIR, src, ignore=shutil.ignore_patterns("tests", "__pycache__",
                                                                  "build", "*.egg-info"))
        r = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-index",
                            "--no-build-isolation", "--quiet", src], capture_output=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr.decode()
        code = ("import beastmesh, sys\n"
                "assert beastmesh.__file__.startswith(sys.prefix), beastmesh.__file__\n"
                "with beastmesh.Agent('installed') as a:\n"
                "    print(a.request('@cecho', 'q', b'hi', timeout=10).decode())\n")
        swarm.spawn([os.path.join(os.path.dirname(swarm.beastd.args[0]), "beast"), "--dir",
                     swarm.dir, "echo", "--caps", "cecho", "cecho"], log="cecho")
        swarm.wait_online("cecho")
        env = dict(swarm.env)
        env.pop("PYTHONPATH")
        r = subprocess.run([os.path.join(venv, "bin", "python"), "-c", code], env=env, cwd=work,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout.decode().strip() == "hi"
    finally:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

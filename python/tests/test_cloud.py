"""Point clouds and blobs over shared memory: zero-copy numpy views."""
import gc
import os
import threading

import numpy as np

import beastmesh
from conftest import pump


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _mapped(addr):
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


def test_a_ten_million_point_cloud_arrives_as_a_view_of_the_shared_pages(swarm):
    n, seed = 10_000_000, 7
    clouds = []
    with beastmesh.Agent("pymapper") as a:
        a.on_cloud(clouds.append)
        snd = swarm.py("cloud_sender", "pyscanner", "pymapper", n, seed, stdout=None)
        pump([a], lambda: clouds, 120, "the cloud")
        c = clouds.pop()
        assert c.sender == "pyscanner" and c.count == n and c.via_fd
        anon0 = _status("RssAnon")
        p, col = c.points, c.colors
        # No copy: the arrays own nothing, cannot be written, and point into
        # the mapping of the memfd itself.
        assert not p.flags.owndata and not p.flags.writeable
        assert not col.flags.owndata and not col.flags.writeable
        assert p.shape == (n, 3) and p.dtype == np.float32
        assert col.shape == (n, 3) and col.dtype == np.uint8
        assert c.address <= p.ctypes.data < c.address + c.size
        assert c.address <= col.ctypes.data < c.address + c.size
        assert p.base is not None
        total = float(p.sum(dtype=np.float64))
        csum = int(col.sum(dtype=np.int64))
        # Reading every point of a 150 MB cloud did not copy it into
        # private memory (the pages are shared: RssShmem, not RssAnon).
        assert _status("RssAnon") - anon0 < 64 << 20, "the view was copied"
        # Same content as the sender drew (reproducible from the seed).
        rng = np.random.default_rng(seed)
        want = rng.random((n, 3), dtype=np.float32)
        assert np.array_equal(p, want)
        assert csum == int(rng.integers(0, 256, (n, 3), dtype=np.uint8).sum(dtype=np.int64))
        del want
        assert snd.wait(60) == 0
        sent = [x for x in swarm.log("cloud_sender").split("\n") if x.startswith("sent")]
        assert sent and abs(float(sent[0].split()[1]) - total) < 1e-6 * abs(total)
        assert int(sent[0].split()[2]) == csum
        try:
            p[0, 0] = 1.0
        except ValueError:
            pass
        else:
            raise AssertionError("a view of sealed pages must be read-only")


def test_a_view_keeps_its_pages_mapped_after_the_cloud_is_gone(swarm):
    clouds = []
    with beastmesh.Agent("keeper") as a, beastmesh.Agent("giver") as b:
        a.on_cloud(clouds.append)
        pts = np.arange(300_000, dtype=np.float32).reshape(100_000, 3)
        t = threading.Thread(target=b.send_cloud, args=("keeper", pts), kwargs={"timeout": 30})
        t.start()
        pump([a], lambda: clouds, 30, "the cloud")
        t.join()
        c = clouds.pop()
        assert c.colors is None
        addr = c.address
        view = c.points
        c.close()
        del c
        gc.collect()
        # The Cloud is gone; its view still reads the right numbers.
        assert np.array_equal(view, pts)
        assert _mapped(addr)
        del view
        gc.collect()
        assert not _mapped(addr), "the mapping outlived its last view"


def test_blobs_from_bytes_and_from_a_file_arrive_intact(swarm, tmp_path):
    got = []
    with beastmesh.Agent("sink") as a, beastmesh.Agent("source") as b:
        a.on_blob(got.append)
        data = os.urandom(3 << 20)
        f = tmp_path / "scan.bin"
        f.write_bytes(data[::-1])
        for what in (data, str(f), b"small"):
            t = threading.Thread(target=b.send_blob, args=("sink", what), kwargs={"timeout": 30})
            t.start()
            pump([a], lambda: len(got) >= 1, 30, "a blob")
            t.join()
            blob = got.pop()
            want = what if isinstance(what, bytes) else data[::-1]
            assert blob.size == len(want)
            assert blob.bytes() == want
            assert not blob.data.flags.writeable
        assert blob.name == "blob"
        assert a.stats()["blobs_received"] == 3

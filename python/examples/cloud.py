#!/usr/bin/python3
"""cloud.py — two agents in one process: "pyscanner" sends a
1,000,000-point cloud to "mapper", which gets read-only numpy views of the
shared pages (no copy) and prints the centroid."""
import threading

import numpy as np

import beastmesh

with beastmesh.Agent("pymapper") as mapper, beastmesh.Agent("pyscanner") as scanner:
    done = []

    @mapper.on_cloud
    def on_cloud(c):
        p = c.points  # (N, 3) float32, a view: p.flags.owndata is False
        print("%s: %d points, centroid %s, zero copy: %s" %
              (c.name, c.count, p.mean(axis=0), not p.flags.owndata))
        done.append(c)

    pts = np.random.default_rng(1).random((1_000_000, 3), dtype=np.float32)
    rgb = np.full((1_000_000, 3), 200, np.uint8)
    # send_cloud waits for the receiver's confirmation: the receiver must be
    # stepping meanwhile (here: another thread; usually another process).
    t = threading.Thread(target=scanner.send_cloud, args=("pymapper", pts, rgb))
    t.start()
    while not done:
        mapper.step(0.05)
    t.join()

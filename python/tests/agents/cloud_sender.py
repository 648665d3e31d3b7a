"""cloud_sender.py NAME TO POINTS SEED: sends one cloud of POINTS points
(numpy, reproducible from SEED), then exits 0 once TO confirmed it."""
import sys

import numpy as np

from _common import open_agent

name, to, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
pts = rng.random((n, 3), dtype=np.float32)
cols = rng.integers(0, 256, (n, 3), dtype=np.uint8)
with open_agent(name) as agent:
    agent.send_cloud(to, pts, cols, name="cloud-%d.ply" % seed, timeout=60)
    print("sent", float(pts.sum(dtype=np.float64)), int(cols.sum(dtype=np.int64)), flush=True)
    agent.drain(10)

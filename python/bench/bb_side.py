"""The Python side of beast-bench's beast-agent-py rows (bench/t_python.c).

    bb_side.py request DIR STATE NAME TO N       request/reply round trips, 64 B
    bb_side.py stream  DIR STATE NAME TO N SIZE  reliable sends, ACKed, msgs/s
    bb_side.py cloudrx DIR STATE NAME COUNT      receive clouds, answer "got" each

Prints one line "ok KEY=VALUE ..." (samples in µs for request) that the C
module parses into its row; anything else is a failure.
"""
import sys
import time

import numpy as np

import beastmesh


def main():
    mode, d, state, name = sys.argv[1:5]
    rest = sys.argv[5:]
    with beastmesh.Agent(name, dir=d, state=state, sync="never") as a:
        if mode == "request":
            to, n = rest[0], int(rest[1])
            body = b"x" * 64
            for _ in range(min(200, n)):  # warm up
                a.request(to, "bb.echo", body, timeout=5)
            us = []
            for _ in range(n):
                t0 = time.perf_counter()
                a.request(to, "bb.echo", body, timeout=5)
                us.append((time.perf_counter() - t0) * 1e6)
            print("ok samples=" + ",".join("%.2f" % x for x in us), flush=True)
        elif mode == "stream":
            to, n, size = rest[0], int(rest[1]), int(rest[2])
            body = b"s" * size
            send, step = a.send, a.step
            t0 = time.perf_counter()
            for i in range(n):
                send(to, "bb.data", body)
                if i & 255 == 255:
                    step(0)
            a.drain(60)
            dt = time.perf_counter() - t0
            st = a.stats()
            print("ok msgs_per_s=%.1f sent=%d acked=%d" % (n / dt, n, st["acked"]), flush=True)
        elif mode == "cloudrx":
            count = int(rest[0])
            got = []

            @a.on_cloud
            def on_cloud(c):
                p = c.points  # the view a consumer works on: no copy
                got.append(float(p[-1, 2]))
                a.send(c.sender, "bb.got", b"%d" % c.count)
            print("ready", flush=True)
            deadline = time.monotonic() + 120
            while len(got) < count and time.monotonic() < deadline:
                a.step(0.05)
            a.drain(10)
            print("ok clouds=%d" % len(got), flush=True)
        else:
            print("usage: bb_side.py request|stream|cloudrx ...", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except beastmesh.Error as e:
        print("failed %s" % e, flush=True)
        sys.exit(1)

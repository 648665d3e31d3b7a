#!/usr/bin/python3
"""thinker.py — a thinker of the demo swarm, in Python.

    thinker.py [--dir DIR] [--name NAME] [--report-to MONITOR] [--sync POLICY]

The twin of agents/examples/thinker.c: it follows every thought tree under
"tot/" and answers "think.score" requests sent to anycast @think with a
score for an 8-puzzle state (lower is more promising).  score() is the
plug-in point where an agent backed by a language model would ask the
model.  `beast demo --python-thinkers N` runs N of these beside the C ones.
"""
import signal

# SIGTERM (how the demo stops its agents) may come while the imports below
# still run: remember it from the first moment, act on it in the loop.
_stop = []
signal.signal(signal.SIGTERM, lambda *_: _stop.append(1))
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])  # beast demo holds it back

import argparse  # noqa: E402
import errno  # noqa: E402
import time  # noqa: E402

import beastmesh  # noqa: E402

GOAL = "123456780"


def score(state):
    """Manhattan distance: never overestimates, so the planner stays optimal."""
    h = 0
    for i, c in enumerate(state):
        if c != "0":
            t = int(c) - 1
            h += abs(i // 3 - t // 3) + abs(i % 3 - t % 3)
    return h


def valid(state):
    return len(state) == 9 and sorted(state) == sorted(GOAL)


def report(agent, to, extra):
    """The demo's stats.report: "key value" lines, as the C examples send."""
    st = agent.stats(hist=True)
    lines = ["name %s" % agent.name, "pid %d" % __import__("os").getpid()]
    for k in ("sent", "acked", "retried", "dead", "pending", "received", "duplicates",
              "requests", "replies", "timeouts", "published", "bcasts", "gaps", "blobs_sent",
              "blob_bytes_sent", "blobs_received", "blob_bytes_received", "blob_errors"):
        lines.append("%s %d" % (k, st[k]))
    for h in ("ack_hist", "req_hist"):
        lines.append("%s %s" % (h, ",".join("%d:%d" % (i, v) for i, v in enumerate(st[h]) if v)))
    lines += ["%s %d" % kv for kv in extra.items()]
    agent.send(to, "stats.report", "\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir")
    ap.add_argument("--name", default="pythinker")
    ap.add_argument("--report-to")
    ap.add_argument("--sync", default="interval", choices=["always", "interval", "never"])
    o = ap.parse_args()
    counts = {"scored": 0, "followed": 0}

    while True:
        try:
            agent = beastmesh.Agent(o.name, caps=["think"], dir=o.dir, sync=o.sync,
                                    ack_timeout=1.0)
            break
        except beastmesh.Error as e:
            if e.code != -errno.EINTR:
                raise
            if _stop:
                return 0  # told to stop before it had started: a clean exit
    with agent:
        @agent.on_request("think.score")
        def on_score(msg):
            state = msg.body.decode(errors="replace")
            if not valid(state):
                raise beastmesh.Proto("not an 8-puzzle state: %r" % state)  # NACKed for good
            counts["scored"] += 1
            return str(score(state))

        def on_branch(b):
            counts["followed"] += 1

        try:
            agent.subscribe("tot", on_branch)
        except beastmesh.Error as e:
            print("%s: cannot follow tot/: %s" % (o.name, e), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_stop.append(1), agent.stop()))
        next_report = 0.0
        try:
            while not agent.stopped and not _stop:
                agent.step(0.25)
                if o.report_to and time.monotonic() >= next_report:
                    next_report = time.monotonic() + 0.25
                    report(agent, o.report_to, counts)
        except KeyboardInterrupt:
            pass
        # Like the C examples: drain, a last report, drain again.
        try:
            agent.drain(10)
            if o.report_to:
                report(agent, o.report_to, counts)
            agent.drain(10)
        except beastmesh.Timeout:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/python3
"""send.py TO TEXT — a reliable send: stored in this agent's outbox, retried
until TO acknowledges it; prints the outcome (try a TO that is offline with
a short TTL to see a dead letter)."""
import sys

import beastmesh

to, text = sys.argv[1], sys.argv[2]
with beastmesh.Agent("pysend") as agent:
    sent = agent.send(to, "note", text, ttl=5.0)
    try:
        sent.wait(10)
        print("acknowledged:", sent.id)
    except beastmesh.DeadLetter as e:
        print("dead letter:", e.reason, "(beast outbox --as pysend dead)")
    except beastmesh.Timeout:
        print("still in the outbox, retried on the next run:", sent.id)

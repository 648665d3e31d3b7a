#!/usr/bin/python3
"""broadcast.py — follows thought tree 7 and publishes three branches on it;
prints what arrives with its sequence and gap count."""
import beastmesh

with beastmesh.Agent("pythought") as agent:
    got = []

    @agent.subscribe("tot/7")
    def branch(b):
        print("%s seq=%d gap=%d %s" % (b.topic, b.seq, b.gap, b.body.decode()))
        got.append(b)

    agent.wait_subscribed()
    for i in range(3):
        agent.publish("tot/7/%d" % i, "branch %d: try the west ridge" % i)
    for _ in range(100):
        if len(got) >= 3:
            break
        agent.step(0.05)
    print("lost on the way:", agent.gaps)

"""Start-up shared by the test agents: open with retries while a killed
predecessor's name is still held (beastd frees it after missed heartbeats)."""
import sys
import time

import beastmesh


def open_agent(name, caps=(), timeout=15.0, **kw):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return beastmesh.Agent(name, caps=caps, **kw)
        except beastmesh.NameTaken:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ready(name):
    print("ready", name, flush=True)
    sys.stderr.flush()

#!/usr/bin/python3
"""request.py TO TYPE BODY — a request to an agent or "@capability"; prints
the reply."""
import sys

import beastmesh

with beastmesh.Agent("pyrequest") as agent:
    try:
        print(agent.request(sys.argv[1], sys.argv[2], sys.argv[3], timeout=5).decode())
    except beastmesh.Timeout:
        sys.exit("no reply in 5 s")

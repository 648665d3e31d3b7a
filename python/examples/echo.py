#!/usr/bin/python3
"""echo.py NAME — answers every request with its own body (any agent with
capability "echo" can be asked: `beast request @echo ping hello`)."""
import sys

import beastmesh

with beastmesh.Agent(sys.argv[1] if len(sys.argv) > 1 else "pyecho", caps=["echo"]) as agent:
    @agent.on_request
    def echo(msg):
        return msg.body

    agent.run()  # until Ctrl-C

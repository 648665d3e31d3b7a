#!/usr/bin/python3
"""asyncio_requests.py — an asyncio agent with 100 requests outstanding at
once to any "@echo" agent (start examples/echo.py or `beast echo --caps echo
e1` first)."""
import asyncio

import beastmesh


async def main():
    with beastmesh.Agent("pyasync") as agent:
        server = asyncio.ensure_future(agent.serve())
        replies = await asyncio.gather(*[agent.arequest("@echo", "ping", "n%d" % i, timeout=10)
                                         for i in range(100)])
        print(len(replies), "replies, first", replies[0], "last", replies[-1])
        agent.stop()
        await server

asyncio.run(main())

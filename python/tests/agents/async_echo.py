"""async_echo.py NAME: an asyncio agent whose request handler is a
coroutine (it awaits before answering), served by agent.serve()."""
import asyncio
import sys

from _common import open_agent, ready


async def main(name):
    with open_agent(name, caps=["aecho"]) as agent:
        @agent.on_request("aecho")
        async def aecho(msg):
            await asyncio.sleep(0.01)
            return b"async:" + msg.body

        ready(name)
        await agent.serve()

asyncio.run(main(sys.argv[1]))

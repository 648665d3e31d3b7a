"""beastmesh for Python: agents on the C runtime (libbeastmesh) through cffi.

    import beastmesh

    with beastmesh.Agent("mapper", caps=["map"]) as agent:
        @agent.on_message("tile")
        def tile(msg):
            print(msg.sender, msg.body)

        @agent.on_cloud
        def cloud(c):
            print(c.count, c.points.mean(axis=0))   # a view of shared pages

        agent.run()

See docs/python.md.
"""
from ._ffi import LIBRARY_PATH, LibraryError
from .errors import *  # noqa: F401,F403  (one class per BM_E* code)
from .errors import Error, DeadLetter, Timeout, BadArgument, Reject
from .agent import Agent, Message, Broadcast, Sent
from .cloud import Blob, Cloud

__version__ = "0.1.0"

"""forwarder.py NAME LEDGER: forwards the body of every message it handles
to agent LEDGER (a reliable send made inside the handler)."""
import sys

from _common import open_agent, ready

name, ledger = sys.argv[1], sys.argv[2]
with open_agent(name, sync="always") as agent:
    @agent.on_message("work")
    def work(msg):
        agent.send(ledger, "done", msg.body)

    ready(name)
    agent.run()
    agent.drain(10)

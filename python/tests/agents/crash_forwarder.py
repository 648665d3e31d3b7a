"""crash_forwarder.py NAME LEDGER MARK: forwards the body of every message
it handles to agent LEDGER; the first time (no file MARK yet) it kills
itself with SIGKILL right after its forward is stored and sent, before the
message it handles is marked handled — the narrowest window of a crash."""
import os
import signal
import sys

from _common import open_agent, ready

name, ledger, mark = sys.argv[1], sys.argv[2], sys.argv[3]
with open_agent(name, sync="always") as agent:
    @agent.on_message("work")
    def work(msg):
        agent.send(ledger, "done", msg.body)
        agent.flush()  # the forward is stored (fsync'd) and on its way
        if not os.path.exists(mark):
            with open(mark, "w") as f:
                f.write("crashed once\n")
            os.kill(os.getpid(), signal.SIGKILL)

    ready(name)
    agent.run()
    agent.drain(10)

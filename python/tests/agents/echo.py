"""echo.py NAME [CAPS] [DELAY_S] [FAIL_FIRST]: answers every request with
"NAME:" + its body (after DELAY_S seconds); the first FAIL_FIRST messages
make the handler raise."""
import sys
import time

from _common import open_agent, ready

name = sys.argv[1]
caps = [c for c in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if c]
delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
fail_first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
calls = 0

with open_agent(name, caps) as agent:
    @agent.on_message("note")
    def note(msg):
        global calls
        calls += 1
        if calls <= fail_first:
            raise RuntimeError("planned failure %d" % calls)
        print("got", msg.type, msg.body.decode(errors="replace"), flush=True)

    @agent.on_request
    def echo(msg):
        global calls
        calls += 1
        if calls <= fail_first:
            raise RuntimeError("planned failure %d" % calls)
        if delay:
            time.sleep(delay)
        return name.encode() + b":" + msg.body

    ready(name)
    agent.run()

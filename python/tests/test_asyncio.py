"""asyncio: serve() on the event loop, many requests outstanding at once."""
import asyncio

import beastmesh


def test_an_asyncio_agent_with_a_thousand_requests_outstanding_gets_every_answer(swarm):
    swarm.py("echo", "aserver", "svc")
    swarm.wait_online("aserver")

    async def main():
        with beastmesh.Agent("aclient") as a:
            server = asyncio.ensure_future(a.serve())
            try:
                reqs = [a.arequest("@svc", "q", b"%d" % i, timeout=60) for i in range(1000)]
                replies = await asyncio.wait_for(asyncio.gather(*reqs), 90)
                assert a.stats()["requests"] == 1000
                return replies
            finally:
                a.stop()
                await asyncio.wait_for(server, 10)

    replies = asyncio.run(main())
    assert replies == [b"aserver:%d" % i for i in range(1000)]


def test_asend_resolves_on_the_ack_and_async_handlers_reply_later(swarm):
    swarm.py("async_echo", "coro")
    swarm.wait_online("coro")

    async def main():
        with beastmesh.Agent("aio") as a, beastmesh.Agent("aio-sink") as b:
            got = []
            b.on_message("m")(lambda m: got.append(m.body))
            tasks = [asyncio.ensure_future(a.serve()), asyncio.ensure_future(b.serve())]
            try:
                sent = await asyncio.wait_for(asyncio.gather(
                    *[a.asend("aio-sink", "m", b"%d" % i) for i in range(50)]), 30)
                assert all(s.status() == "acked" for s in sent)
                assert sorted(got, key=int) == [b"%d" % i for i in range(50)]
                r = await a.arequest("@aecho", "aecho", b"hi", timeout=10)
                assert r == b"async:hi"
                try:
                    await a.arequest("@nobody-here", "q", b"", timeout=0.3)
                except beastmesh.Timeout:
                    pass
                else:
                    raise AssertionError("expected a timeout")
            finally:
                a.stop()
                b.stop()
                await asyncio.wait_for(asyncio.gather(*tasks), 10)

    asyncio.run(main())

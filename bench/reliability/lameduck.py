#!/usr/bin/env python3
"""Scenario 6: lame duck exit time.

A server with `lame_duck_grace_period: 1s` (lame_duck_duration left at its
2 minute default) and CLIENTS idle clients (which do not reconnect); SIGUSR2;
seconds until the process exits, and until the last client was closed.
Every (server, client count) pair runs at the same time on its own ports
(all idle, timer-bound). Gives up after LIMIT seconds (then SIGKILL).

    SERVER=shoal|nats|both SHOAL=path CLIENTS="6 20" python3 lameduck.py
"""
import asyncio
import os
import signal
import time

from common import Client, Server, emit, servers_from_env, write_config

LIMIT = float(os.environ.get("LIMIT", "180"))


async def one(kind, shoal, n, conf):
    srv = Server(kind, shoal, config=conf).start()
    try:
        clients = [await Client(srv.port, f"idle{i}").connect() for i in range(n)]
        for c in clients:
            await c.flush()
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        srv.signal(signal.SIGUSR2)
        closed_at = []

        async def watch(c):
            await c.closed.wait()
            closed_at.append(time.monotonic() - t0)

        watchers = [asyncio.ensure_future(watch(c)) for c in clients]
        loop = asyncio.get_running_loop()
        exited = None
        end = t0 + LIMIT
        while time.monotonic() < end:
            if srv.proc.poll() is not None:
                exited = time.monotonic() - t0
                break
            await asyncio.sleep(0.02)
        for w in watchers:
            w.cancel()
        return {"scenario": "lameduck", "server": kind, "clients": n,
                "exit_s": exited, "last_client_closed_s": max(closed_at) if closed_at else None,
                "first_client_closed_s": min(closed_at) if closed_at else None,
                "clients_closed": len(closed_at), "limit_s": LIMIT}
    finally:
        srv.kill9()


async def main():
    kinds, shoal = servers_from_env()
    counts = [int(x) for x in os.environ.get("CLIENTS", "6 20").split()]
    conf = write_config("lame_duck_grace_period: 1s\n")
    try:
        res = await asyncio.gather(*[one(k, shoal, n, conf) for k in kinds for n in counts])
        for r in res:
            emit(r)
    finally:
        os.unlink(conf)


if __name__ == "__main__":
    asyncio.run(main())

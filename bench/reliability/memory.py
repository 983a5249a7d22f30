#!/usr/bin/env python3
"""Scenario 5: memory per idle connection and per subscription.

One server with its default limits (its max_connections from /varz is
reported). The open-file limit of this process and of the server is raised
to the hard limit. CONNS clients connect (CONNECT + PING/PONG, 200 at a
time) and stay idle; RSS delta over the empty server / CONNS. Then every
client subscribes to SUBS distinct literal subjects (and PINGs); RSS delta
over the connected state / (CONNS * SUBS). RSS is VmRSS from /proc for both
servers, read after 2 s of settling.

    SERVER=shoal|nats|both SHOAL=path CONNS=10000 SUBS=10 python3 memory.py
"""
import asyncio
import os
import time

from common import Client, Server, emit, raise_nofile, servers_from_env

CONNS = int(os.environ.get("CONNS", "10000"))
SUBS = int(os.environ.get("SUBS", "10"))


async def run(kind, shoal):
    srv = Server(kind, shoal).start()
    clients = []
    try:
        await asyncio.sleep(1)
        varz0 = srv.varz()
        rss0 = srv.rss()
        t = time.monotonic()
        for i in range(0, CONNS, 200):
            clients += await asyncio.gather(*[Client(srv.port, f"m{j}").connect(30)
                                              for j in range(i, min(CONNS, i + 200))])
        connect_s = time.monotonic() - t
        await asyncio.sleep(2)
        rss1 = srv.rss()
        varz1 = srv.varz()
        t = time.monotonic()
        for i in range(0, CONNS, 500):
            batch = clients[i:i + 500]
            for n, c in enumerate(batch, i):
                c.send(b"".join(b"SUB mem.%d.%d %d\r\n" % (n, k, k + 1) for k in range(SUBS)))
            await asyncio.gather(*[c.flush(30) for c in batch])
        sub_s = time.monotonic() - t
        await asyncio.sleep(2)
        rss2 = srv.rss()
        varz2 = srv.varz()
        try:
            subsz = srv.http_json("/subsz").get("num_subscriptions")
        except Exception:
            subsz = None
        return {"scenario": "memory", "server": kind, "conns": CONNS, "subs_per_conn": SUBS,
                "max_connections": varz0.get("max_connections"),
                "rss_empty": rss0, "rss_conns": rss1, "rss_subs": rss2,
                "bytes_per_conn": (rss1 - rss0) / CONNS,
                "bytes_per_sub": (rss2 - rss1) / (CONNS * SUBS),
                "varz_mem_conns": varz1.get("mem"), "varz_mem_subs": varz2.get("mem"),
                "varz_connections": varz1.get("connections"), "subsz": subsz,
                "connect_s": connect_s, "subscribe_s": sub_s}
    finally:
        for c in clients:
            c.close()
        await asyncio.sleep(0.2)
        srv.stop()


def main():
    raise_nofile()
    kinds, shoal = servers_from_env()
    for kind in kinds:
        emit(asyncio.run(run(kind, shoal)))


if __name__ == "__main__":
    main()

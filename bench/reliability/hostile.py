#!/usr/bin/env python3
"""Scenario 4: hostile bytes next to a healthy stream.

One server. A healthy publisher (own process) sends RATE msgs/s of 128 B
with sequence numbers for DURATION s to a healthy subscriber (own process)
that counts every message. Meanwhile WORKERS hostile loops open connection
after connection, each sending one kind of bad input and reading until the
server closes it (or 2 s):
  garbage      4 KiB of random bytes, before CONNECT
  garbage_late CONNECT, then 4 KiB of random bytes
  bad_size     PUB with sizes -5, abc, 99999999999999999999
  oversized    PUB of 2,000,000 bytes (over the 1 MB max_payload), sent in full
  huge_line    "PUB " followed by 1 MiB without a line end
  unknown_op   FOO/HELLO/SUBX lines
and IDLE connections send CONNECT, "PUB x.half 1000000" and half of the
payload, then stay idle until the end (they answer no PINGs).
Healthy messages lost must be 0. RSS (VmRSS from /proc, same source for both
servers) before the hostile traffic, its peak, and after every hostile
connection is closed (+2 s).

    SERVER=shoal|nats|both SHOAL=path python3 hostile.py
    DURATION=15 RATE=20000 WORKERS=4 IDLE=100
"""
import asyncio
import multiprocessing as mp
import os
import random
import time

import slowsub
from common import Server, emit, servers_from_env

DURATION = float(os.environ.get("DURATION", "15"))
RATE = int(os.environ.get("RATE", "20000"))
WORKERS = int(os.environ.get("WORKERS", "4"))
IDLE = int(os.environ.get("IDLE", "100"))
CONNECT = b'CONNECT {"verbose":false,"pedantic":false}\r\n'


def payloads():
    rnd = random.Random(7)
    junk = bytes(rnd.getrandbits(8) for _ in range(4096))
    return {
        "garbage": [junk],
        "garbage_late": [CONNECT, junk],
        "bad_size": [CONNECT, b"PUB x.bad -5\r\nhello\r\n", b"PUB x.bad abc\r\n",
                     b"PUB x.bad 99999999999999999999\r\n"],
        "oversized": [CONNECT, b"PUB x.big 2000000\r\n", b"y" * 2000000 + b"\r\n"],
        "huge_line": [CONNECT, b"PUB " + b"a" * (1 << 20)],
        "unknown_op": [CONNECT, b"FOO bar\r\nHELLO\r\nSUBX a 1\r\n"],
    }


async def hostile_one(port, chunks):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, asyncio.TimeoutError):
        return "refused"
    try:
        await asyncio.wait_for(r.readline(), 2)
        for c in chunks:
            w.write(c)
            await asyncio.wait_for(w.drain(), 2)
        t_end = time.monotonic() + 2
        while time.monotonic() < t_end:
            d = await asyncio.wait_for(r.read(65536), t_end - time.monotonic())
            if not d:
                return "closed"
        return "open"
    except (asyncio.TimeoutError, TimeoutError):
        return "open"
    except OSError:
        return "closed"
    finally:
        w.close()


async def hostile(port, stop_at):
    kinds = payloads()
    names = sorted(kinds)
    stats = {}
    idle = []
    for _ in range(IDLE):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            await r.readline()
            w.write(CONNECT + b"PUB x.half 1000000\r\n" + b"z" * 500000)
            await w.drain()
            idle.append((r, w))
        except OSError:
            stats["idle_refused"] = stats.get("idle_refused", 0) + 1

    async def worker(k):
        i = k
        while time.monotonic() < stop_at:
            name = names[i % len(names)]
            i += 1
            res = await hostile_one(port, kinds[name])
            key = f"{name}:{res}"
            stats[key] = stats.get(key, 0) + 1

    await asyncio.gather(*[worker(k) for k in range(WORKERS)])
    # Did the server keep the idle half-written connections open?
    still = 0
    for r, w in idle:
        try:
            d = await asyncio.wait_for(r.read(65536), 0.01)
            if d:
                still += 1
        except asyncio.TimeoutError:
            still += 1
        except OSError:
            pass
    stats["idle_still_open_at_end"] = still
    return stats, idle


def run(kind, shoal):
    srv = Server(kind, shoal).start()
    try:
        ctx = mp.get_context("fork")
        ready, start = ctx.Event(), ctx.Event()
        total = ctx.Value("q", 0)
        hq, pq = ctx.Queue(), ctx.Queue()
        slowsub.SUBJ = b"load.healthy"
        h = ctx.Process(target=slowsub.healthy, args=(srv.port, total, ready, hq))
        h.start()
        ready.wait(10)
        p = ctx.Process(target=slowsub.publisher, args=(srv.port, RATE, 128, start, pq, DURATION))
        p.start()
        time.sleep(0.3)
        start.set()
        time.sleep(1.0)
        rss0 = srv.rss()
        rss_max = [rss0]

        async def go():
            async def sample():
                while p.is_alive():
                    rss_max[0] = max(rss_max[0], srv.rss())
                    await asyncio.sleep(0.1)
            samp = asyncio.ensure_future(sample())
            stats, idle = await hostile(srv.port, time.monotonic() + DURATION - 2.5)
            rss_max[0] = max(rss_max[0], srv.rss())
            for _, w in idle:
                w.close()
            await samp
            return stats

        stats = asyncio.run(go())
        pr = pq.get(timeout=60)
        total.value = pr["sent"]
        hr = hq.get(timeout=60)
        h.join(5)
        p.join(5)
        time.sleep(2)
        varz = srv.varz()
        return {"scenario": "hostile", "server": kind, "sent": pr["sent"],
                "healthy_got": hr["got"], "healthy_lost": pr["sent"] - hr["got"],
                "healthy_dups": hr["dups"], "healthy_max_gap_ms": hr["max_gap_ms"],
                "rss_before": rss0, "rss_max": rss_max[0], "rss_after": srv.rss(),
                "varz_mem_after": varz.get("mem"), "connections_after": varz.get("connections"),
                "hostile": stats}
    finally:
        srv.stop()


def main():
    kinds, shoal = servers_from_env()
    for kind in kinds:
        emit(run(kind, shoal))


if __name__ == "__main__":
    main()

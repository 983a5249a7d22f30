#!/usr/bin/env python3
"""Scenario 1: a node SIGKILLed under steady request-reply load.

3-node cluster (n0 seeds n1 and n2). One responder in queue group "svc" on
each node, subject "svc.echo"; the one on n2 reconnects to n2 every 100 ms
while it is down (a client pinned to its node). Two requesters, on n0 and
n1, each send RATE/2 requests/s (open loop, paced) for DURATION s; each
request has its own reply subject and a TIMEOUT. n2 is SIGKILLed at KILL_AT
s and started again (same ports) at RESTART_AT s.

Counted: requests answered, timed out, answered with no-responders (503);
a request answered twice (duplicate reply); a request delivered twice to
responders (duplicate delivery); "back to normal" = the send time of the
last failed request, relative to the kill (after it every request
succeeded). LAYOUT=remote: no responder on n0, so n0's requests always cross
a route (to n1 or n2); with queue_prefer_local (Shoal's default) the
LAYOUT=all requests never leave their node. HOGS=1 adds a busy loop pinned to each CPU for the whole run.

    SERVER=shoal|nats|both SHOAL=path HOGS=0|1 LAYOUT=all|remote python3 killnode.py
    RATE=200 DURATION=20 KILL_AT=5 RESTART_AT=10 TIMEOUT=1
"""
import asyncio
import os
import time

from common import (Client, is_no_responders, main_async,
                    start_cluster, wait_mesh, wait_port)

RATE = float(os.environ.get("RATE", "200"))
DURATION = float(os.environ.get("DURATION", "20"))
KILL_AT = float(os.environ.get("KILL_AT", "5"))
RESTART_AT = float(os.environ.get("RESTART_AT", "10"))
TIMEOUT = float(os.environ.get("TIMEOUT", "1"))
HOGS = os.environ.get("HOGS", "0") == "1"
LAYOUT = os.environ.get("LAYOUT", "all")


async def responder(node, name, deliveries, stop, reconnect, served, phase):
    while not stop.is_set():
        c = None
        try:
            c = Client(node.port, name)

            def on_msg(subj, reply, payload, hdr, c=c):
                deliveries[payload] = deliveries.get(payload, 0) + 1
                k = f"{name}_{phase[0]}"
                served[k] = served.get(k, 0) + 1
                if reply:
                    c.send(b"PUB %s %d\r\n%s\r\n" % (reply, len(payload), payload))
            c.on_msg = on_msg
            await c.connect(2)
            c.send(b"SUB svc.echo svc 1\r\n")
            await c.flush()
            closed = asyncio.ensure_future(c.closed.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([closed, stopped], return_when=asyncio.FIRST_COMPLETED)
            closed.cancel(); stopped.cancel()
        except (OSError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            if c:
                c.close()
        if not reconnect:
            return
        await asyncio.sleep(0.1)


async def requester(node, rid, rate, t0, results):
    pending = {}

    def on_msg(subj, reply, payload, hdr):
        seq = int(subj.rsplit(b".", 1)[1])
        r = results[seq]
        if is_no_responders(hdr):
            r["nr"] += 1
        else:
            r["replies"] += 1
            if r["lat"] is None:
                r["lat"] = time.monotonic() - r["sent_mono"]
        f = pending.get(seq)
        if f and not f.done():
            f.set_result(True)

    c = Client(node.port, f"req{rid}", on_msg)
    await c.connect()
    c.send(b"SUB _INBOX.%d.* 1\r\n" % rid)
    await c.flush()
    interval = 1.0 / rate
    seq = 0
    waits = []

    async def wait_one(seq):
        try:
            await asyncio.wait_for(pending[seq], TIMEOUT)
        except asyncio.TimeoutError:
            pass

    while True:
        due = t0 + seq * interval
        now = time.monotonic()
        if due - t0 >= DURATION:
            break
        if due > now:
            await asyncio.sleep(due - now)
        results[seq] = {"t": time.monotonic() - t0, "sent_mono": time.monotonic(),
                        "replies": 0, "nr": 0, "lat": None}
        pending[seq] = asyncio.get_running_loop().create_future()
        body = b"%d.%d" % (rid, seq)
        c.send(b"PUB svc.echo _INBOX.%d.%d %d\r\n%s\r\n" % (rid, seq, len(body), body))
        waits.append(asyncio.ensure_future(wait_one(seq)))
        seq += 1
    await asyncio.gather(*waits)
    await asyncio.sleep(0.5)  # late duplicates
    c.close()


async def run(kind, shoal):
    nodes = start_cluster(kind, shoal, 3)
    try:
        if not wait_mesh(nodes):
            raise RuntimeError("mesh did not form")
        stop = asyncio.Event()
        deliveries, served, phase = {}, {}, ["before_kill"]
        resp = [asyncio.ensure_future(responder(n, f"n{i}", deliveries, stop, i == 2, served, phase))
                for i, n in enumerate(nodes) if not (LAYOUT == "remote" and i == 0)]
        await asyncio.sleep(1.0)
        t0 = time.monotonic() + 0.2
        results = [dict(), dict()]
        reqs = [asyncio.ensure_future(requester(nodes[i], i, RATE / 2, t0, results[i]))
                for i in (0, 1)]
        await asyncio.sleep(t0 + KILL_AT - time.monotonic())
        nodes[2].kill9()
        phase[0] = "down"
        kill_t = time.monotonic() - t0
        await asyncio.sleep(t0 + RESTART_AT - time.monotonic())
        restart_mono = time.monotonic()
        nodes[2].start(wait=False)
        phase[0] = "after_restart"
        try:
            await asyncio.get_running_loop().run_in_executor(None, lambda: wait_port(nodes[2].port, 10))
            listening_s = time.monotonic() - restart_mono
        except RuntimeError:
            listening_s = None
        await asyncio.gather(*reqs)
        stop.set()
        await asyncio.gather(*resp)
        rows = [r for res in results for r in res.values()]
        ok = [r for r in rows if r["replies"] >= 1]
        fails = [r for r in rows if r["replies"] == 0]
        timeouts = [r for r in fails if r["nr"] == 0]
        nrs = [r for r in fails if r["nr"] > 0]
        lats = sorted(r["lat"] for r in ok)
        last_fail = max((r["t"] for r in fails), default=None)
        return {"scenario": "killnode", "server": kind, "hogs": HOGS, "layout": LAYOUT, "sent": len(rows),
                "ok": len(ok), "failed": len(fails), "timeouts": len(timeouts),
                "no_responders": len(nrs),
                "failed_before_restart": sum(1 for r in fails if r["t"] < RESTART_AT),
                "failed_after_restart": sum(1 for r in fails if r["t"] >= RESTART_AT),
                "dup_replies": sum(1 for r in rows if r["replies"] > 1),
                "dup_deliveries": sum(1 for v in deliveries.values() if v > 1),
                "first_fail_t": min((r["t"] for r in fails), default=None),
                "last_fail_t": last_fail,
                "back_to_normal_after_kill_s": (last_fail - kill_t) if last_fail is not None else 0,
                "restarted_listening_s": listening_s,
                "p50_ms": lats[len(lats) // 2] * 1000 if lats else None,
                "p99_ms": lats[int(len(lats) * 0.99)] * 1000 if lats else None,
                "max_ms": lats[-1] * 1000 if lats else None,
                "kill_t": kill_t, "served": served}
    finally:
        for n in nodes:
            n.stop()


def main():
    main_async(run, HOGS)


if __name__ == "__main__":
    main()

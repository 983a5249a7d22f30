#!/usr/bin/env python3
"""Scenario 2: subscription churn during node restarts, then an audit.

3-node cluster. WORKERS clients per node each do OPS subscribe/unsubscribe
operations per second on subjects of their own (churn.<worker>.<n>, every
subscription a new subject; at most 200 held, at least 20). n2 is
SIGKILLed RESTARTS times during CHURN s and started again 1 s later; its
clients reconnect to it every 100 ms and resubscribe what they hold
(operations while disconnected only change what they hold, as in the
official clients). Then the churn stops, the cluster settles (healthz and a
full mesh, then SETTLE s) and the audit runs:

  missing/dup   one message from a checker client on every node to every
                held subject: each must arrive exactly once
  stray         messages delivered for a subject the client does not hold
  ghost_nr      a request from every node to every subject that was
                unsubscribed: it must get no-responders (503); a timeout
                means some node still announces interest nobody holds
  routez        per route, the churn.* subjects the peer announced
                (/routez?subs=1) against what that peer's clients hold:
                ghosts (announced, not held) and missing (held, not announced),
                where the server lists subjects (nats-server; Shoal gives counts);
                route_count_off: sum over routes of |announced count - held|,
                the announced count less what the peer announced before any
                client connected (nats-server's $SYS subscriptions)

    SERVER=shoal|nats|both SHOAL=path python3 churn.py
    WORKERS=2 OPS=100 CHURN=20 RESTARTS=3 SETTLE=2 HOGS=0|1
"""
import asyncio
import os
import random
import signal
import time

from common import Client, is_no_responders, main_async, start_cluster, wait_mesh

WORKERS = int(os.environ.get("WORKERS", "2"))
OPS = float(os.environ.get("OPS", "100"))
CHURN = float(os.environ.get("CHURN", "20"))
RESTARTS = int(os.environ.get("RESTARTS", "3"))
SETTLE = float(os.environ.get("SETTLE", "2"))
HOGS = os.environ.get("HOGS", "0") == "1"


class Worker:
    def __init__(self, node, wid, reconnect):
        self.node, self.wid, self.reconnect = node, wid, reconnect
        self.held = {}        # sid -> subject
        self.by_subj = {}     # subject -> sid
        self.dead = set()
        self.n = 0
        self.c = None
        self.rx = {}          # (subject, payload) -> count
        self.stray = 0
        self.reconnects = 0
        self.rnd = random.Random(wid)

    def on_msg(self, subj, reply, payload, hdr):
        if subj not in self.by_subj:
            self.stray += 1
        k = (subj, payload)
        self.rx[k] = self.rx.get(k, 0) + 1

    async def connect(self):
        c = Client(self.node.port, f"w{self.wid}", self.on_msg)
        await c.connect(2)
        c.send(b"".join(b"SUB %s %d\r\n" % (s, sid) for sid, s in self.held.items()))
        self.c = c

    def live(self):
        return self.c is not None and not self.c.closed.is_set()

    def op(self):
        if len(self.held) < 20 or (len(self.held) < 200 and self.rnd.random() < 0.5):
            self.n += 1
            sid = self.n
            subj = b"churn.%d.%d" % (self.wid, sid)
            self.held[sid] = subj
            self.by_subj[subj] = sid
            if self.live():
                self.c.send(b"SUB %s %d\r\n" % (subj, sid))
        else:
            sid = self.rnd.choice(list(self.held))
            subj = self.held.pop(sid)
            del self.by_subj[subj]
            self.dead.add(subj)
            if self.live():
                self.c.send(b"UNSUB %d\r\n" % sid)

    async def run(self, stop):
        await self.connect()
        interval = 1.0 / OPS
        nxt = time.monotonic()
        while not stop.is_set():
            if not self.live() and self.reconnect:
                try:
                    await self.connect()
                    self.reconnects += 1
                except (OSError, asyncio.TimeoutError, ConnectionError):
                    pass
            self.op()
            nxt += interval
            await asyncio.sleep(max(0, nxt - time.monotonic()))
        if self.live():
            await self.c.flush()


async def settle(nodes):
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            if all(n.http_json("/healthz").get("status") == "ok" for n in nodes) and wait_mesh(nodes, 0.1):
                break
        except Exception:
            pass
        await asyncio.sleep(0.1)
    await asyncio.sleep(SETTLE)


async def run(kind, shoal):
    nodes = start_cluster(kind, shoal, 3)
    workers = []
    checkers = []
    try:
        wait_mesh(nodes)
        await asyncio.sleep(1)
        base = {}
        for i, n in enumerate(nodes):
            for r in n.http_json("/routez").get("routes") or []:
                base[i] = min(base.get(i, 1 << 30), r.get("subscriptions") or 0)
        stop = asyncio.Event()
        workers = [Worker(nodes[i], i * WORKERS + k, i == 2) for i in range(3) for k in range(WORKERS)]
        tasks = [asyncio.ensure_future(w.run(stop)) for w in workers]
        gap = CHURN / (RESTARTS + 1)
        for r in range(RESTARTS):
            await asyncio.sleep(gap - 1 if r == 0 else gap - 1)
            nodes[2].kill9()
            await asyncio.sleep(1)
            nodes[2].start()
        await asyncio.sleep(gap)
        stop.set()
        await asyncio.gather(*tasks)
        t_settle = time.monotonic()
        await settle(nodes)
        settle_s = time.monotonic() - t_settle

        # routez audit
        ids = {n.varz()["server_id"]: i for i, n in enumerate(nodes)}
        held_on = [set() for _ in nodes]
        for i in range(3):
            for w in workers[i * WORKERS:(i + 1) * WORKERS]:
                held_on[i].update(s.decode() for s in w.held.values())
        route_ghosts = route_missing = count_off = 0
        have_list = False
        route_counts = []
        for i, n in enumerate(nodes):
            announced = {}
            for r in n.http_json("/routez?subs=1").get("routes") or []:
                peer = ids.get(r.get("remote_id"))
                lst = r.get("subscriptions_list")
                have_list = have_list or lst is not None
                announced.setdefault(peer, set()).update(s for s in lst or [] if s.startswith("churn."))
                # what peer announced, less what it announced with no client (nats-server: $SYS)
                got = (r.get("subscriptions") or 0) - base.get(peer, 0)
                route_counts.append((i, peer, got, len(held_on[peer])))
                count_off += abs(got - len(held_on[peer]))
            for j in range(3):
                if j == i or not have_list:
                    continue
                a = announced.get(j, set())
                route_ghosts += len(a - held_on[j])
                route_missing += len(held_on[j] - a)

        # delivery audit: every node publishes once to every held subject
        sent = 0
        for i, n in enumerate(nodes):
            c = Client(n.port, f"chk{i}")
            await c.connect()
            checkers.append(c)
        for i, c in enumerate(checkers):
            for w in workers:
                for s in w.held.values():
                    c.send(b"PUB %s 2\r\nn%d\r\n" % (s, i))
                    sent += 1
            await c.flush()
        await asyncio.sleep(1.0)
        for w in workers:
            if w.live():
                await w.c.flush()
        missing = dup = 0
        for w in workers:
            for s in w.held.values():
                for i in range(3):
                    k = w.rx.get((s, b"n%d" % i), 0)
                    missing += k == 0
                    dup += k > 1
        stray = sum(w.stray for w in workers)

        # ghost audit: requests to every unsubscribed subject from every node
        dead = sorted(set().union(*[w.dead for w in workers]) - set().union(*[set(w.held.values()) for w in workers]))
        answers = {}

        def on_reply(i):
            def f(subj, reply, payload, hdr):
                answers[subj] = "nr" if is_no_responders(hdr) else "msg"
            return f
        for i, c in enumerate(checkers):
            c.on_msg = on_reply(i)
            c.send(b"SUB _INBOX.g%d.* 1\r\n" % i)
            await c.flush()
            for k, s in enumerate(dead):
                c.send(b"PUB %s _INBOX.g%d.%d 0\r\n\r\n" % (s, i, k))
            await c.flush()
        await asyncio.sleep(2.0)
        ghost_timeouts = 3 * len(dead) - sum(1 for v in answers.values() if v == "nr")
        ghost_answered = sum(1 for v in answers.values() if v == "msg")
        return {"scenario": "churn", "server": kind, "hogs": HOGS,
                "ops": sum(w.n + len(w.dead) for w in workers),
                "held": sum(len(w.held) for w in workers), "unsubscribed": len(dead),
                "reconnects": sum(w.reconnects for w in workers), "settle_s": settle_s,
                "deliveries_expected": sent, "missing": missing, "dup": dup, "stray": stray,
                "ghost_no_503": ghost_timeouts, "ghost_answered": ghost_answered,
                "route_ghosts": route_ghosts if have_list else None,
                "route_missing": route_missing if have_list else None,
                "route_count_off": count_off,
                "route_counts": route_counts}
    finally:
        for w in workers:
            if w.c:
                w.c.close()
        for c in checkers:
            c.close()
        for n in nodes:
            n.stop()


def main():
    main_async(run, HOGS)


if __name__ == "__main__":
    main()

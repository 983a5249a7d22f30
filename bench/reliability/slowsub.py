#!/usr/bin/env python3
"""Scenario 3: a subscriber that never reads next to a healthy one.

One server. A publisher (own process) sends RATE msgs/s of SIZE bytes to one
subject for DURATION s, paced in 5 ms batches; every payload starts with a
sequence number. Two subscribers on that subject: a healthy one (own
process, reads everything, counts loss/duplicates and the longest gap
between two reads that delivered data) and one that subscribes and then
never reads its socket (receive buffer shrunk to 4 KiB). The driver polls
/varz every 50 ms: when slow_consumers first rises is when the slow one was
cut, in seconds from the first publish.

    SERVER=shoal|nats|both SHOAL=path SIZES="16 1024" python3 slowsub.py
    RATE_16=50000 RATE_1024=20000 DURATION=30
"""
import multiprocessing as mp
import os
import socket
import time

from common import Server, emit, servers_from_env

DURATION = float(os.environ.get("DURATION", "30"))
SUBJ = b"load.slow"


def raw_connect(port, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    while b"\r\n" not in buf:
        buf += s.recv(4096)
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
    return s


def wait_pong(s):
    s.sendall(b"PING\r\n")
    buf = b""
    while b"PONG\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise ConnectionError("closed")
        buf += d


def healthy(port, total_expected, ready, out):
    s = raw_connect(port, None)
    s.sendall(b"SUB %s 1\r\n" % SUBJ)
    wait_pong(s)
    ready.set()
    s.settimeout(0.2)
    buf = bytearray()
    pos = 0
    got = dups = lost = 0
    last_seq = -1
    first_t = last_t = None
    max_gap = 0.0
    idle_after_end = None
    while True:
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            d = None
            now = time.monotonic()
            if got >= total_expected.value > 0:
                break
            if total_expected.value > 0:
                idle_after_end = idle_after_end or now
                if now - idle_after_end > 5:
                    break
            continue
        if d is not None and not d:
            break
        now = time.monotonic()
        if first_t is None:
            first_t = now
        elif now - last_t > max_gap:
            max_gap = now - last_t
        last_t = now
        buf += d
        while True:
            i = buf.find(b"\r\n", pos)
            if i < 0:
                break
            if buf.startswith(b"MSG ", pos):
                n = int(buf[buf.rfind(b" ", pos, i) + 1:i])
                if len(buf) < i + 2 + n + 2:
                    break
                seq = int(buf[i + 2:i + 12])
                if seq <= last_seq:
                    dups += 1
                else:
                    lost += seq - last_seq - 1
                    last_seq = seq
                got += 1
                pos = i + 2 + n + 2
            else:
                if buf.startswith(b"PING", pos):
                    s.sendall(b"PONG\r\n")
                pos = i + 2
        del buf[:pos]
        pos = 0
    out.put({"got": got, "dups": dups, "lost_gaps": lost, "last_seq": last_seq,
             "max_gap_ms": max_gap * 1000,
             "span_s": (last_t - first_t) if first_t and last_t else 0})


def publisher(port, rate, size, start, out, duration=None):
    s = raw_connect(port, None)
    wait_pong(s)
    start.wait()
    pad = b"x" * (size - 10)
    per = max(1, int(rate * 0.005))
    seq = 0
    t0 = time.monotonic()
    nxt = t0
    end = t0 + (duration or DURATION)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now < nxt:
            time.sleep(nxt - now)
        batch = b"".join(b"PUB %s %d\r\n%010d%s\r\n" % (SUBJ, size, seq + k, pad) for k in range(per))
        s.sendall(batch)
        seq += per
        nxt += 0.005
    wait_pong(s)
    out.put({"sent": seq, "pub_s": time.monotonic() - t0, "t0": t0})


def run(kind, shoal, size, rate):
    srv = Server(kind, shoal).start()
    try:
        ctx = mp.get_context("fork")
        ready, start = ctx.Event(), ctx.Event()
        total = ctx.Value("q", 0)
        hq, pq = ctx.Queue(), ctx.Queue()
        h = ctx.Process(target=healthy, args=(srv.port, total, ready, hq))
        h.start()
        ready.wait(10)
        slow = raw_connect(srv.port, 4096)
        slow.sendall(b"SUB %s 1\r\n" % SUBJ)
        wait_pong(slow)  # then never read again
        rss0 = srv.rss()
        p = ctx.Process(target=publisher, args=(srv.port, rate, size, start, pq))
        p.start()
        time.sleep(0.3)
        start.set()
        t0 = time.monotonic()
        cut_s = None
        rss_max = rss0
        while p.is_alive():
            try:
                if cut_s is None and srv.varz().get("slow_consumers", 0) > 0:
                    cut_s = time.monotonic() - t0
            except Exception:
                pass
            rss_max = max(rss_max, srv.rss())
            time.sleep(0.05)
        pr = pq.get(timeout=30)
        total.value = pr["sent"]
        hr = hq.get(timeout=60)
        h.join(5)
        p.join(5)
        varz = srv.varz()
        slow.close()
        lost = pr["sent"] - hr["got"]
        return {"scenario": "slowsub", "server": kind, "size": size, "rate": rate,
                "sent": pr["sent"], "healthy_got": hr["got"], "healthy_lost": lost,
                "healthy_dups": hr["dups"],
                "healthy_rate": hr["got"] / pr["pub_s"], "healthy_max_gap_ms": hr["max_gap_ms"],
                "slow_cut_s": cut_s, "slow_consumers": varz.get("slow_consumers"),
                "rss_before": rss0, "rss_max": rss_max, "rss_after": srv.rss()}
    finally:
        srv.stop()


def main():
    kinds, shoal = servers_from_env()
    for size in [int(x) for x in os.environ.get("SIZES", "16 1024").split()]:
        rate = int(os.environ.get(f"RATE_{size}", "50000" if size <= 128 else "20000"))
        for kind in kinds:
            emit(run(kind, shoal, size, rate))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A second, independent request-reply generator (raw NATS protocol over
blocking sockets, standard library only), to check shoal-bench's latency
figures with a generator that shares none of its code.

    python3 bench/rr.py nats://127.0.0.1:4222 [requests] [requesters]

One responder connection answers every request; each requester sends a
request and waits for its reply (closed loop). Prints requests/s and latency
percentiles in microseconds as one JSON line.
"""
import json
import socket
import sys
import threading
import time


def connect(url):
    host, port = url.replace("nats://", "").split(":")
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    line = f.readline()
    assert line.startswith(b"INFO "), line
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\nPING\r\n')
    while f.readline().strip() != b"PONG":
        pass
    return s, f


def read_msg(s, f):
    """The next MSG as (subject, reply, payload); answers server PINGs."""
    while True:
        line = f.readline()
        if not line:
            raise EOFError("server closed the connection")
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
            continue
        if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
            parts = line.split()
            size = int(parts[-1])
            reply = parts[3] if len(parts) == (5 if parts[0] == b"MSG" else 6) else None
            payload = f.read(size + 2)[:-2]
            return parts[1], reply, payload


def responder(url, subject, ready, stop):
    s, f = connect(url)
    s.sendall(b"SUB %s svc 1\r\nPING\r\n" % subject)
    while f.readline().strip() != b"PONG":
        pass
    ready.set()
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            _, reply, payload = read_msg(s, f)
        except (socket.timeout, TimeoutError):
            continue
        except (OSError, ValueError, EOFError):
            return
        s.sendall(b"PUB %s %d\r\n%s\r\n" % (reply, len(payload), payload))


def requester(url, subject, n, k, out):
    s, f = connect(url)
    inbox = b"_INBOX.rr.%d" % k
    s.sendall(b"SUB %s 1\r\nPING\r\n" % inbox)
    while f.readline().strip() != b"PONG":
        pass
    req = b"PUB %s %s 16\r\n%s\r\n" % (subject, inbox, b"r" * 16)
    for _ in range(200):  # warm-up
        s.sendall(req)
        read_msg(s, f)
    lat = []
    for _ in range(n):
        t = time.perf_counter_ns()
        s.sendall(req)
        read_msg(s, f)
        lat.append((time.perf_counter_ns() - t) / 1000)
    out.extend(lat)


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    c = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    subject = b"rr.bench"
    ready, stop = threading.Event(), threading.Event()
    threading.Thread(target=responder, args=(url, subject, ready, stop), daemon=True).start()
    ready.wait(5)
    time.sleep(0.05)
    lat = []
    threads = [threading.Thread(target=requester, args=(url, subject, n, k, lat)) for k in range(c)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - start
    stop.set()
    lat.sort()
    q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))]
    print(json.dumps({"requests": len(lat), "requests_per_sec": len(lat) / secs,
                      "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99), "p999_us": q(0.999),
                      "max_us": lat[-1]}))


if __name__ == "__main__":
    main()

"""Shared helpers for the reliability scenarios (standard library only).

Servers are started on 127.0.0.1 with free ports picked by the kernel and are
always stopped by PID (never by name). A tiny raw-protocol asyncio client
speaks just enough NATS for the scenarios: CONNECT (headers and
no_responders on), SUB/UNSUB/PUB, PING/PONG, MSG/HMSG parsing.
"""
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

NATS_SERVER = os.environ.get("NATS_SERVER", "/usr/sbin/nats-server")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")


class Server:
    """One shoal or nats-server process. kind: 'shoal' or 'nats'."""

    def __init__(self, kind, shoal=None, port=None, http=None, cluster=None,
                 routes=None, config=None, shards=None, name=None, log=None):
        self.kind, self.shoal = kind, shoal
        self.port = port or free_port()
        self.http = http or free_port()
        self.cluster, self.routes, self.config = cluster, routes, config
        self.shards, self.name = shards, name
        self.log = log
        self.proc = None

    def argv(self):
        exe = self.shoal if self.kind == "shoal" else NATS_SERVER
        a = [exe, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.http)]
        if self.name:
            a += ["-n", self.name]
        if self.config:
            a += ["-c", self.config]
        if self.cluster:
            a += ["--cluster", f"nats://127.0.0.1:{self.cluster}", "--cluster_name", "rel"]
        if self.routes:
            a += ["--routes", ",".join(f"nats://127.0.0.1:{r}" for r in self.routes)]
        if self.kind == "shoal" and self.shards:
            a += ["--shards", str(self.shards)]
        return a

    def start(self, wait=True):
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=out,
                                     preexec_fn=raise_nofile)
        if wait:
            wait_port(self.port)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout=15):
        if not self.proc or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def http_json(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5) as r:
            return json.loads(r.read())

    def varz(self):
        return self.http_json("/varz")

    def rss(self):
        """Resident set size in bytes, from /proc (same source for both servers)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def start_cluster(kind, shoal, n=3, log=None, shards=None):
    """n nodes, every node seeded with node 0 (as bench/compare.sh)."""
    rports = [free_port() for _ in range(n)]
    nodes = []
    for i in range(n):
        nodes.append(Server(kind, shoal, cluster=rports[i], name=f"n{i}",
                            routes=[rports[0]] if i else None, log=log, shards=shards).start())
    return nodes


def wait_mesh(nodes, timeout=15.0):
    """Until every node reports n-1 routes."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            if all(len({r.get("remote_id") for r in s.http_json("/routez").get("routes") or []})
                   >= len(nodes) - 1 for s in nodes):
                return True
        except Exception:
            pass
        time.sleep(0.1)
    return False


def write_config(text):
    fd, path = tempfile.mkstemp(suffix=".conf", prefix="shoal-rel-")
    os.write(fd, text.encode())
    os.close(fd)
    return path


class Hogs:
    """One busy loop pinned to each CPU (as bench/stress.sh), stopped by PID."""

    def __init__(self, on):
        self.on, self.procs = on, []

    def __enter__(self):
        if self.on:
            for cpu in range(os.cpu_count()):
                self.procs.append(subprocess.Popen(
                    ["taskset", "-c", str(cpu), "sh", "-c", "while :; do :; done"]))
        return self

    def __exit__(self, *a):
        for p in self.procs:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


class Client:
    """Raw NATS client. on_msg(subject, reply, payload, headers_bytes_or_None)."""

    def __init__(self, port, name="c", on_msg=None):
        self.port, self.name, self.on_msg = port, name, on_msg
        self.r = self.w = None
        self.pongs = asyncio.Queue()
        self.task = None
        self.closed = asyncio.Event()

    async def connect(self, timeout=5.0):
        self.r, self.w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22), timeout)
        sock = self.w.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        line = await asyncio.wait_for(self.r.readline(), timeout)
        if not line.startswith(b"INFO"):
            raise ConnectionError(line)
        self.w.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                     b'"no_responders":true,"protocol":1,"name":"%s"}\r\nPING\r\n' % self.name.encode())
        self.task = asyncio.ensure_future(self._read())
        await asyncio.wait_for(self.pongs.get(), timeout)
        return self

    async def _read(self):
        r = self.r
        try:
            while True:
                line = await r.readline()
                if not line:
                    break
                if line.startswith(b"MSG "):
                    p = line.split()
                    n = int(p[-1])
                    data = await r.readexactly(n + 2)
                    reply = p[3] if len(p) == 5 else None
                    if self.on_msg:
                        self.on_msg(p[1], reply, data[:-2], None)
                elif line.startswith(b"HMSG "):
                    p = line.split()
                    hn, tn = int(p[-2]), int(p[-1])
                    data = await r.readexactly(tn + 2)
                    reply = p[3] if len(p) == 6 else None
                    if self.on_msg:
                        self.on_msg(p[1], reply, data[hn:tn], data[:hn])
                elif line.startswith(b"PING"):
                    self.w.write(b"PONG\r\n")
                elif line.startswith(b"PONG"):
                    self.pongs.put_nowait(1)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()

    def send(self, data):
        self.w.write(data)

    async def flush(self, timeout=5.0):
        self.w.write(b"PING\r\n")
        await self.w.drain()
        await asyncio.wait_for(self.pongs.get(), timeout)

    def close(self):
        if self.task:
            self.task.cancel()
        if self.w:
            self.w.close()


def is_no_responders(headers):
    return headers is not None and b" 503" in headers.split(b"\r\n", 1)[0]


def fmt_range(vals, f="{:.0f}"):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    lo, hi = min(vals), max(vals)
    return f.format(lo) if f.format(lo) == f.format(hi) else f"{f.format(lo)}-{f.format(hi)}"


def servers_from_env():
    """SERVER=shoal|nats|both (default both), SHOAL=path."""
    want = os.environ.get("SERVER", "both")
    kinds = ["shoal", "nats"] if want == "both" else [want]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shoal = os.environ.get("SHOAL", os.path.join(repo, "target", "release", "shoal"))
    return kinds, shoal


def emit(result):
    """One JSON line per run on stdout (run.sh collects them)."""
    print(json.dumps(result), flush=True)


def main_async(run, hogs):
    """Runs the async scenario `run(kind, shoal)` once per server asked
    for (`SERVER`), with the CPU hogs when `hogs`, and emits each result."""
    import asyncio

    kinds, shoal = servers_from_env()
    for kind in kinds:
        with Hogs(hogs):
            emit(asyncio.run(run(kind, shoal)))

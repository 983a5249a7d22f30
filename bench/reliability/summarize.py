#!/usr/bin/env python3
"""Markdown tables (ranges over runs) from run.sh's JSON lines.

    OUT=/tmp/rel.jsonl bash bench/reliability/run.sh; python3 bench/reliability/summarize.py /tmp/rel.jsonl
"""
import json
import sys
from collections import defaultdict

from common import fmt_range

rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.startswith("{")]
MB = 1 << 20


def groups(sc, *keys):
    g = defaultdict(list)
    for r in rows:
        if r["scenario"] == sc:
            g[tuple(r.get(k) for k in keys)].append(r)
    return sorted(g.items(), key=lambda kv: tuple(str(x) for x in kv[0]))


def table(title, head, lines):
    if not lines:
        return
    print(f"\n### {title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for l in lines:
        print("| " + " | ".join(str(x) for x in l) + " |")


def R(rs, f, fmt="{:.0f}"):
    return fmt_range([f(r) for r in rs], fmt)


srv = {"shoal": "Shoal", "nats": "nats-server"}

table("killnode", ["layout", "hogs", "server", "runs", "requests", "failed", "of which no-responders",
                   "failed after restart", "dup replies", "dup deliveries", "back to normal (s after kill)",
                   "p99 ms", "max ms", "n2 served after restart"],
      [[k[0], "yes" if k[1] else "no", srv[k[2]], len(rs), R(rs, lambda r: r["sent"]), R(rs, lambda r: r["failed"]),
        R(rs, lambda r: r["no_responders"]), R(rs, lambda r: r["failed_after_restart"]),
        R(rs, lambda r: r["dup_replies"]), R(rs, lambda r: r["dup_deliveries"]),
        R(rs, lambda r: max(0, r["back_to_normal_after_kill_s"]), "{:.2f}"),
        R(rs, lambda r: r["p99_ms"], "{:.1f}"), R(rs, lambda r: r["max_ms"], "{:.0f}"),
        R(rs, lambda r: r["served"].get("n2_after_restart", 0))]
       for k, rs in groups("killnode", "layout", "hogs", "server")])

table("churn", ["hogs", "server", "runs", "sub+unsub ops", "held at end", "unsubscribed", "deliveries expected",
                "missing", "duplicate", "stray", "no 503 for unsubscribed", "route count off", "route ghosts (list)"],
      [["yes" if k[0] else "no", srv[k[1]], len(rs), R(rs, lambda r: r["ops"]), R(rs, lambda r: r["held"]),
        R(rs, lambda r: r["unsubscribed"]), R(rs, lambda r: r["deliveries_expected"]),
        R(rs, lambda r: r["missing"]), R(rs, lambda r: r["dup"]), R(rs, lambda r: r["stray"]),
        R(rs, lambda r: r["ghost_no_503"]), R(rs, lambda r: r["route_count_off"]),
        R(rs, lambda r: r["route_ghosts"])]
       for k, rs in groups("churn", "hogs", "server")])

table("slowsub", ["size B", "offered msgs/s", "server", "runs", "healthy msgs/s", "healthy lost", "healthy dups",
                  "healthy longest gap ms", "slow cut at s", "server RSS peak MB"],
      [[k[0], k[1], srv[k[2]], len(rs), R(rs, lambda r: r["healthy_rate"]), R(rs, lambda r: r["healthy_lost"]),
        R(rs, lambda r: r["healthy_dups"]), R(rs, lambda r: r["healthy_max_gap_ms"]),
        R(rs, lambda r: r["slow_cut_s"], "{:.1f}"), R(rs, lambda r: r["rss_max"] / MB)]
       for k, rs in groups("slowsub", "size", "rate", "server")])

table("hostile", ["server", "runs", "healthy sent", "healthy lost", "healthy dups", "healthy longest gap ms",
                  "hostile conns", "RSS before MB", "RSS peak MB", "RSS after MB"],
      [[srv[k[0]], len(rs), R(rs, lambda r: r["sent"]), R(rs, lambda r: r["healthy_lost"]),
        R(rs, lambda r: r["healthy_dups"]), R(rs, lambda r: r["healthy_max_gap_ms"]),
        R(rs, lambda r: sum(v for kk, v in r["hostile"].items() if ":" in kk)),
        R(rs, lambda r: r["rss_before"] / MB, "{:.1f}"), R(rs, lambda r: r["rss_max"] / MB),
        R(rs, lambda r: r["rss_after"] / MB, "{:.1f}")]
       for k, rs in groups("hostile", "server")])

table("memory", ["server", "runs", "max_connections", "RSS empty MB", "RSS 10k conns MB", "bytes / idle conn",
                 "RSS +100k subs MB", "bytes / sub"],
      [[srv[k[0]], len(rs), R(rs, lambda r: r["max_connections"]), R(rs, lambda r: r["rss_empty"] / MB, "{:.1f}"),
        R(rs, lambda r: r["rss_conns"] / MB), R(rs, lambda r: r["bytes_per_conn"], "{:,.0f}"),
        R(rs, lambda r: r["rss_subs"] / MB), R(rs, lambda r: r["bytes_per_sub"], "{:,.0f}")]
       for k, rs in groups("memory", "server")])

table("lameduck", ["clients", "server", "runs", "SIGUSR2 -> exit s", "last client closed s"],
      [[k[0], srv[k[1]], len(rs), R(rs, lambda r: r["exit_s"], "{:.1f}"),
        R(rs, lambda r: r["last_client_closed_s"], "{:.1f}")]
       for k, rs in groups("lameduck", "clients", "server")])

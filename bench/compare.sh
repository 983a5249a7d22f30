#!/usr/bin/env bash
# Shoal vs nats-server on loopback, measured by the same load generator
# (shoal-bench) in one run, alternating between the two servers, ROUNDS times
# per scenario; prints a markdown table of medians and ratios (the table in
# docs/benchmarks.md is this script's output). For connect time lower is
# better; for every other row higher is better except latencies.
#
#   bash bench/compare.sh            # both modes
#   MODES=pinned ROUNDS=5 bash bench/compare.sh
#
# Modes:
#   pinned   each server on CPU 0 (taskset), Shoal --shards 1, nats-server
#            GOMAXPROCS=1; the load generator on CPU 1: per-core comparison.
#   unpinned Shoal --shards 2, nats-server default; nothing pinned.
#   cluster  a 3-node cluster of each on loopback (same topology: every node
#            seeded with node 1), Shoal --shards 1 per node, nothing pinned;
#            publishers/requesters on node 1, subscribers/responders on
#            node 2 (shoal-bench --url A,B). Not in the default MODES.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nats-server >/dev/null 2>&1; then
  apt-get install -y nats-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nats-server >/dev/null; }
fi
cargo build --release -p shoal -p shoal-bench

ROUNDS=${ROUNDS:-3}
MODES=${MODES:-"pinned unpinned"}
SHOAL_PORT=${SHOAL_PORT:-14222}
NATS_PORT=${NATS_PORT:-14223}
BENCH=./target/release/shoal-bench
OUT=$(mktemp)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -f "$OUT"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "server on $1 did not start" >&2; exit 1; }

SCENARIOS=(
  "pub 16B|pub --publishers 1 --size 16 --msgs 3000000"
  "pub 1KiB|pub --publishers 1 --size 1024 --msgs 1000000"
  "pub->sub 16B|pubsub --subs 1 --size 16 --msgs 2000000"
  "pub->10 subs 16B|pubsub --subs 10 --size 16 --msgs 300000"
  "pub->sub 1KiB|pubsub --subs 1 --size 1024 --msgs 500000"
  "queue group of 4 16B|queue --members 4 --size 16 --msgs 500000"
  "request-reply sequential|reqrep --requesters 1 --size 16 --requests 20000"
  "request-reply 8 concurrent|reqrep --requesters 8 --size 16 --requests 5000"
  "conns 1000|conns --connections 1000 --size 16 --msgs 100"
)
CLUSTER_SCENARIOS=(
  "cross-node pub->sub 16B|pubsub --subs 1 --size 16 --msgs 1000000"
  "cross-node pub->sub 1KiB|pubsub --subs 1 --size 1024 --msgs 300000"
  "cross-node request-reply sequential|reqrep --requesters 1 --size 16 --requests 20000"
  "cross-node request-reply 8 concurrent|reqrep --requesters 8 --size 16 --requests 5000"
)

stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }

# measure MODE GEN SHOAL_URL NATS_URL SCENARIO...: every scenario, ROUNDS
# times, alternating servers; one JSON line per run into $OUT.
# cpu_ticks PID...: user+system CPU time of these processes, in clock ticks.
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/"$p"/stat))); done; echo "$t"; }

# ONLY="name,name": run just these scenarios. SHOAL_PIDS / NATS_PIDS: the
# server processes whose CPU time is charged to each run.
measure() {
  local mode=$1 gen=$2 shoal_url=$3 nats_url=$4; shift 4
  local hz; hz=$(getconf CLK_TCK)
  for sc in "$@"; do
    local name=${sc%%|*} args=${sc#*|}
    if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
    for round in $(seq 1 "$ROUNDS"); do
      # Which server goes first alternates: the first run of a round was
      # measured 5-13 % slower, whichever server it was.
      local order="shoal nats"; [ $((round % 2)) -eq 0 ] && order="nats shoal"
      for server in $order; do
        local url=$shoal_url pids=$SHOAL_PIDS; [ "$server" = nats ] && { url=$nats_url; pids=$NATS_PIDS; }
        local before; before=$(cpu_ticks $pids)
        # shellcheck disable=SC2086
        res=$($gen $BENCH --url "$url" --json $args) || { echo "$server failed: $name" >&2; exit 1; }
        local cpu_s; cpu_s=$(echo "$(cpu_ticks $pids) $before $hz" | awk '{print ($1 - $2) / $3}')
        echo "{\"mode\":\"$mode\",\"scenario\":\"$name\",\"server\":\"$server\",\"round\":$round,\"cpu_s\":$cpu_s,\"r\":$res}" >> "$OUT"
      done
    done
  done
}

# start_cluster NAME BASEPORT: three nodes of shoal or nats-server; client
# ports BASE..BASE+2, route ports BASE+10..BASE+12.
start_cluster() {
  local seed="nats://127.0.0.1:$(($2 + 10))"
  for i in 0 1 2; do
    local cport=$(($2 + i)) rport=$(($2 + 10 + i)) routes=()
    [ "$i" -gt 0 ] && routes=(--routes "$seed")
    if [ "$1" = shoal ]; then
      ./target/release/shoal -a 127.0.0.1 -p "$cport" --shards 1 --cluster "nats://127.0.0.1:$rport" --cluster_name bench "${routes[@]}" 2>>"${SHOAL_LOG:-/dev/null}" & PIDS+=($!)
      SHOAL_PIDS="$SHOAL_PIDS $!"
    else
      nats-server -a 127.0.0.1 -p "$cport" --cluster "nats://127.0.0.1:$rport" --cluster_name bench "${routes[@]}" 2>/dev/null & PIDS+=($!)
      NATS_PIDS="$NATS_PIDS $!"
    fi
  done
  for i in 0 1 2; do wait_port $(($2 + i)); done
  sleep 2 # the mesh forms (gossip) before the first round
}

for mode in $MODES; do
  if [ "$mode" = cluster ]; then
    unset GOMAXPROCS || true
    SHOAL_PIDS=""; NATS_PIDS=""
    start_cluster shoal "$SHOAL_PORT"; start_cluster nats $((SHOAL_PORT + 100))
    measure "$mode" "" "nats://127.0.0.1:$SHOAL_PORT,nats://127.0.0.1:$((SHOAL_PORT + 1))" \
      "nats://127.0.0.1:$((SHOAL_PORT + 100)),nats://127.0.0.1:$((SHOAL_PORT + 101))" "${CLUSTER_SCENARIOS[@]}"
    stop_all
    continue
  fi
  if [ "$mode" = pinned ]; then
    SRV="taskset -c 0"; GEN="taskset -c 1"; SHARDS=1; export GOMAXPROCS=1
  else
    SRV=""; GEN=""; SHARDS=2; unset GOMAXPROCS || true
  fi
  # shellcheck disable=SC2086
  $SRV ./target/release/shoal -a 127.0.0.1 -p "$SHOAL_PORT" --shards "$SHARDS" ${SHOAL_ARGS:-} 2>>"${SHOAL_LOG:-/dev/null}" & PIDS+=($!)
  SHOAL_PIDS=$!
  $SRV nats-server -a 127.0.0.1 -p "$NATS_PORT" 2>/dev/null & PIDS+=($!)
  NATS_PIDS=$!
  wait_port "$SHOAL_PORT"; wait_port "$NATS_PORT"
  measure "$mode" "$GEN" "nats://127.0.0.1:$SHOAL_PORT" "nats://127.0.0.1:$NATS_PORT" "${SCENARIOS[@]}"
  stop_all
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys, statistics, os
rows = [json.loads(l) for l in open(sys.argv[1])]
rounds = sys.argv[2]
cpu = os.popen("grep -m1 'model name' /proc/cpuinfo").read().split(':')[-1].strip()
print(f"Machine: {os.cpu_count()} CPUs, {cpu}; medians of {rounds} alternating rounds.\n")
print("| mode | scenario | metric | Shoal | nats-server | Shoal / nats |")
print("|---|---|---|---:|---:|---:|")
seen = []
for r in rows:
    k = (r["mode"], r["scenario"])
    if k not in seen: seen.append(k)
for x in rows:
    if "requests" in x["r"] and x["r"]["requests"]:
        x["r"]["cpu_us_per_req"] = x["cpu_s"] * 1e6 / x["r"]["requests"]
def med(mode, sc, srv, key):
    return statistics.median(x["r"][key] for x in rows if x["mode"]==mode and x["scenario"]==sc and x["server"]==srv)
for mode, sc in seen:
    if "request" in sc:
        metrics = [("req/s", "requests_per_sec", "{:,.0f}"), ("p50 µs", "p50_us", "{:.0f}"), ("p99 µs", "p99_us", "{:.0f}"), ("p99.9 µs", "p999_us", "{:.0f}"), ("server CPU µs/req", "cpu_us_per_req", "{:.1f}")]
    elif sc.startswith("pub ") :
        metrics = [("msgs/s", "msgs_per_sec", "{:,.0f}"), ("MB/s", "mb_per_sec", "{:,.1f}")]
    elif sc.startswith("conns"):
        metrics = [("delivered msgs/s", "delivered_per_sec", "{:,.0f}"), ("connect+subscribe s", "connect_secs", "{:.2f}")]
    elif sc.startswith("queue"):
        metrics = [("delivered msgs/s (exactly once)", "delivered_per_sec", "{:,.0f}")]
    else:
        metrics = [("delivered msgs/s", "delivered_per_sec", "{:,.0f}"), ("MB/s", "delivered_mb_per_sec", "{:,.1f}")]
        lost = sum(x["r"]["lost"] for x in rows if x["mode"]==mode and x["scenario"]==sc)
        if lost: metrics.append(("lost", "lost", "{:.0f}"))
    for label, key, fmt in metrics:
        a, b = med(mode, sc, "shoal", key), med(mode, sc, "nats", key)
        ratio = f"{a/b:.2f}x" if b else "-"
        print(f"| {mode} | {sc} | {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")
PY

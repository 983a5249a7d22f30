#!/usr/bin/env bash
# Liveness under CPU contention: RUNS rounds of short exchanges (request-reply,
# 4 concurrent requesters, pub->sub, queue group; fresh connections every
# round, so with several shards most pairs talk across shards) while two busy
# loops keep both CPUs occupied, as on a host that runs anything besides the
# broker. Any wait over DEADLINE_MS is a stall; prints stalls per 1,000 runs
# of each shape and exits 1 if there was any.
#
#   bash bench/stress.sh                          # 1,000 rounds, 2 shards then 1
#   RUNS=200 SHARDS="2" bash bench/stress.sh
#   MODES=cluster bash bench/stress.sh             # 3-node cluster, across nodes
#   SHOAL=/path/to/other/shoal bash bench/stress.sh  # e.g. an older build
#   HOGS=0 bash bench/stress.sh                    # idle machine
#   SERVER=nats bash bench/stress.sh               # nats-server instead
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1000}
MSGS=${MSGS:-100}
DEADLINE_MS=${DEADLINE_MS:-1000}
SHARDS=${SHARDS:-"2 1"}
MODES=${MODES:-"single"}
HOGS=${HOGS:-1}
SERVER=${SERVER:-shoal}
PORT=${PORT:-15222}

cargo build --release -q -p shoal -p shoal-bench
SHOAL=${SHOAL:-./target/release/shoal}
BENCH=./target/release/shoal-bench
if [ "$SERVER" = nats ] && ! command -v nats-server >/dev/null 2>&1; then
  apt-get install -y nats-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nats-server >/dev/null; }
fi

PIDS=()
HOG_PIDS=()
stop_servers() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done; PIDS=(); }
stop_hogs() { for p in "${HOG_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; HOG_PIDS=(); }
trap 'stop_hogs; stop_servers' EXIT

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "server on $1 did not start" >&2; exit 2; }

start_hogs() {
  [ "$HOGS" = 1 ] || return 0
  local n; n=$(nproc)
  for cpu in $(seq 0 $((n - 1))); do
    taskset -c "$cpu" sh -c 'while :; do :; done' &
    HOG_PIDS+=($!)
  done
}

# start_one PORT SHARDS [extra args]: one server in the background.
start_one() {
  local port=$1 shards=$2; shift 2
  if [ "$SERVER" = nats ]; then
    nats-server -a 127.0.0.1 -p "$port" "$@" >/dev/null 2>&1 &
  else
    "$SHOAL" -a 127.0.0.1 -p "$port" --shards "$shards" "$@" >/dev/null 2>&1 &
  fi
  PIDS+=($!)
  wait_port "$port"
}

failed=0
run_liveness() {
  local label=$1 url=$2
  echo "== $label, $RUNS rounds, hogs=$HOGS"
  start_hogs
  if ! "$BENCH" --url "$url" liveness --runs "$RUNS" --msgs "$MSGS" --deadline-ms "$DEADLINE_MS"; then
    failed=1
  fi
  stop_hogs
}

for mode in $MODES; do
  for shards in $SHARDS; do
    case $mode in
      single)
        start_one "$PORT" "$shards"
        run_liveness "$SERVER, --shards $shards" "nats://127.0.0.1:$PORT"
        ;;
      cluster)
        c1=$((PORT + 100)); c2=$((PORT + 101)); c3=$((PORT + 102))
        start_one "$PORT" "$shards" --cluster "nats://127.0.0.1:$c1" --cluster_name stress
        start_one "$((PORT + 1))" "$shards" --cluster "nats://127.0.0.1:$c2" --routes "nats://127.0.0.1:$c1" --cluster_name stress
        start_one "$((PORT + 2))" "$shards" --cluster "nats://127.0.0.1:$c3" --routes "nats://127.0.0.1:$c1" --cluster_name stress
        sleep 2
        run_liveness "$SERVER 3-node cluster, --shards $shards per node, across nodes" \
          "nats://127.0.0.1:$PORT,nats://127.0.0.1:$((PORT + 1))"
        ;;
      *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    stop_servers
  done
done
exit $failed

#!/usr/bin/env bash
# Reliability scenarios (docs/reliability.md), Shoal and nats-server in the
# same run, each scenario RUNS times; one JSON line per run on stdout (and
# appended to OUT if set). Every server a script starts listens on
# 127.0.0.1 on a free port and is stopped by its PID; CPU hogs likewise.
#
#   bash bench/reliability/run.sh                       # everything, 3 runs
#   SHOAL=./target/release/shoal SERVER=shoal bash bench/reliability/run.sh
#   SCENARIOS="killnode churn" RUNS=1 bash bench/reliability/run.sh
#
# SHOAL      the Shoal binary (default ./target/release/shoal; the scripts
#            do not build it)
# SERVER     shoal | nats | both (default both)
# SCENARIOS  any of: killnode churn slowsub hostile memory lameduck
# RUNS       repetitions (default 3)
# HOGS_MODES for killnode and churn: "0 1" (default) runs each without and
#            with a busy loop pinned to every CPU
set -euo pipefail
cd "$(dirname "$0")"

export SHOAL=${SHOAL:-$(cd ../.. && pwd)/target/release/shoal}
export SERVER=${SERVER:-both}
SCENARIOS=${SCENARIOS:-"killnode churn slowsub hostile memory lameduck"}
RUNS=${RUNS:-3}
HOGS_MODES=${HOGS_MODES:-"0 1"}
OUT=${OUT:-/dev/null}
[ -x "$SHOAL" ] || { echo "no Shoal binary at $SHOAL" >&2; exit 2; }
[ "$SERVER" = shoal ] || command -v "${NATS_SERVER:-/usr/sbin/nats-server}" >/dev/null || { echo "nats-server not found" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"

for sc in $SCENARIOS; do
  for run in $(seq 1 "$RUNS"); do
    case $sc in
      killnode)
        for layout in all remote; do
          for hogs in $HOGS_MODES; do
            LAYOUT=$layout HOGS=$hogs python3 killnode.py | tee -a "$OUT"
          done
        done ;;
      churn)
        for hogs in $HOGS_MODES; do HOGS=$hogs python3 churn.py | tee -a "$OUT"; done ;;
      slowsub|hostile|memory|lameduck)
        python3 "$sc.py" | tee -a "$OUT" ;;
      *) echo "unknown scenario $sc" >&2; exit 2 ;;
    esac
  done
done

#!/bin/bash
# Monitoring load vs the message path: pub->sub 16 B with and without a
# scraper hitting /connz?subs=1, /varz and /metrics every 100 ms (set
# PATHS=healthz to scrape only /healthz, which never asks the shards).
# Server on CPU 0 (--shards 1), generator and scraper on CPU 1.
set -u
cd "$(dirname "$0")/.."
cargo build --release -p shoal -p shoal-bench >/dev/null 2>&1
taskset -c 0 target/release/shoal -a 127.0.0.1 -p 4911 -m 8911 --shards 1 2>/dev/null & SH=$!
sleep 0.5
B=target/release/shoal-bench
run() { taskset -c 1 $B --url nats://127.0.0.1:4911 --json pubsub --subs 1 --size 16 --msgs 2000000 | python3 -c "import json,sys; print(round(json.load(sys.stdin)['delivered_per_sec']))"; }
if [ "${PATHS:-}" = healthz ]; then P="healthz healthz healthz"; else P="connz?subs=1 varz metrics"; fi
export P
scrape() { while true; do for p in $P; do curl -s "http://127.0.0.1:8911/$p" >/dev/null; done; sleep 0.1; done; }
for r in 1 2 3 4 5 6; do
  if [ $((r % 2)) = 1 ]; then a=$(run); taskset -c 1 bash -c "$(declare -f scrape); scrape" & SP=$!; b=$(run); kill $SP
  else taskset -c 1 bash -c "$(declare -f scrape); scrape" & SP=$!; b=$(run); kill $SP; a=$(run); fi
  wait $SP 2>/dev/null
  echo "round $r: quiet $a scraped $b"
done
curl -s http://127.0.0.1:8911/varz | python3 -c "import json,sys; print(json.load(sys.stdin)['http_req_stats'])"
kill $SH

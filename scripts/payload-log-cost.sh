#!/usr/bin/env bash
# What payload logging costs on the request path: the same release binary on
# fraud_mlp, in alternating rounds of quiver-loadtest (server on core 0,
# load generator and event sink on core 1):
#   plain    no logging
#   http     every request and answer to a local HTTP sink (quiver-event-sink),
#            one CloudEvent per POST, KServe's default
#   batch    the same in batch mode (--payload-log-batch-size 64)
#   file     every event to a JSON Lines file (--payload-log-file)
#   hang     to a sink that never answers (queue full, events dropped)
# SERVER_CPUS=0,1 SERVER_THREADS=2 CLIENT_CPUS=0,1 lets everything share
# both cores instead (what a load generator on the same node sees);
# WORKER_CPUS=1 moves the sinks' worker threads onto core 1 (beside the load
# generator), to tell the worker's CPU from the tap's on the request path;
# BATCH_SIZE sets batch mode's events a POST (64). The server's environment
# passes through: QUIVER_PAYLOAD_LOG_SCHEDULING=normal compares the workers'
# scheduling policies.
# Prints each round's rows and what the sink received and quiver dropped.
#   ./scripts/payload-log-cost.sh    (ROUNDS=3 DURATION=8 PROTOCOLS=grpc CONCURRENCY=1,16 MODES="plain http batch file hang")
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh
cargo build --release --locked -p quiver-loadtest --bin quiver-event-sink
duration="${DURATION:-8}"
repo="$out/payload-log-cost/repo"
fraud_mlp_repo "$out/payload-log-cost"

run() { # $1 mode, $2 round
  local label="$1-$2" sink="" args=()
  case "$1" in
    http|batch|hang)
      local extra=()
      [ "$1" = hang ] && extra=(--hang)
      taskset -c "${CLIENT_CPUS:-1}" "$bin/quiver-event-sink" "${extra[@]}" > "$out/plc-sink-$label.log" &
      sink=$!
      for _ in $(seq 50); do grep -q listening "$out/plc-sink-$label.log" && break; sleep 0.1; done
      args=(--payload-log-url "http://$(awk '/listening on/ {print $3}' "$out/plc-sink-$label.log")/")
      [ "$1" = batch ] && args+=(--payload-log-batch-size "${BATCH_SIZE:-64}" --payload-log-batch-interval-ms 100)
      ;;
    file)
      rm -f "$out/plc-events.jsonl"*
      args=(--payload-log-file "$out/plc-events.jsonl" --payload-log-file-max-bytes 1000000000 --payload-log-file-keep 1)
      ;;
  esac
  start_quiver "$out/plc-$label.log" --model-repository "$repo" "${args[@]}"
  if [ -n "${WORKER_CPUS:-}" ]; then
    for t in $(grep -l quiver-payload /proc/"$server"/task/*/comm | cut -d/ -f5); do
      taskset -p -c "$WORKER_CPUS" "$t" > /dev/null
    done
  fi
  metrics="http://$(grep -o 'metrics listening address=[^ ]*' "$out/plc-$label.log" | cut -d= -f2)"
  taskset -c "${CLIENT_CPUS:-1}" "$bin/quiver-loadtest" --model fraud_mlp --http "$http" --grpc "$grpc" \
    --protocols "${PROTOCOLS:-grpc}" --concurrency "${CONCURRENCY:-1,16}" --duration "$duration" --warmup 2 \
    --server-pid "$server" --markdown "$out/plc-$label.md" > /dev/null
  local dropped sent
  dropped=$(metric quiver_payload_log_events_dropped_total)
  sent=$(metric quiver_payload_log_events_sent_total)
  kill "$server"; wait "$server" 2> /dev/null || true
  if [ -n "$sink" ]; then
    kill "$sink"; wait "$sink" 2> /dev/null || true
  fi
  grep '^| fraud_mlp' "$out/plc-$label.md" | sed "s/^/$label /"
  if [ "$1" != plain ]; then
    local received=""
    [ -n "$sink" ] && received=" sink_$(grep -o 'events=[0-9]*' "$out/plc-sink-$label.log" || true)"
    [ "$1" = file ] && received=" file_lines=$(cat "$out/plc-events.jsonl"* | wc -l)"
    echo "$label sent=$sent dropped=$dropped$received"
  fi
}

for round in $(seq "${ROUNDS:-3}"); do
  for mode in ${MODES:-plain http batch file hang}; do
    run "$mode" "$round"
  done
done

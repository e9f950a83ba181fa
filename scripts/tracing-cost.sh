#!/usr/bin/env bash
# What tracing costs on the request path: the same release binary on
# fraud_mlp, in alternating rounds of quiver-loadtest (server on core 0,
# load generator and OTLP receiver on core 1):
#   off      no --trace-config (the tracer's tap is there, level OFF)
#   rate1000 OpenTelemetry mode, one request in 1,000 traced, to a local receiver
#   all      every request traced, to a local receiver
#   down     every request traced, to a receiver that is not there (connection refused)
#   hang     every request traced, to a receiver that never answers (queue full, dropped)
#   before   BEFORE_BIN, an earlier build (one without tracing: what "off" costs)
# The receiver is quiver-event-sink (it answers any POST). SERVER_CPUS,
# SERVER_THREADS and CLIENT_CPUS as in payload-log-cost.sh.
#   ./scripts/tracing-cost.sh    (ROUNDS=3 DURATION=8 PROTOCOLS=grpc CONCURRENCY=1,16 MODES="off rate1000 all down hang")
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh
cargo build --release --locked -p quiver-loadtest --bin quiver-event-sink
duration="${DURATION:-8}"
repo="$out/tracing-cost/repo"
fraud_mlp_repo "$out/tracing-cost"

run() { # $1 mode, $2 round
  local label="$1-$2" sink="" url="http://127.0.0.1:9/v1/traces" rate=1
  case "$1" in
    rate1000|all|hang)
      local extra=()
      [ "$1" = hang ] && extra=(--hang)
      taskset -c "${CLIENT_CPUS:-1}" "$bin/quiver-event-sink" "${extra[@]}" > "$out/tc-sink-$label.log" &
      sink=$!
      for _ in $(seq 50); do grep -q listening "$out/tc-sink-$label.log" && break; sleep 0.1; done
      url="http://$(awk '/listening on/ {print $3}' "$out/tc-sink-$label.log")/v1/traces"
      ;;
  esac
  [ "$1" = rate1000 ] && rate=1000
  local args=()
  if [ "$1" != off ] && [ "$1" != before ]; then
    args=(--trace-config mode=opentelemetry --trace-config level=TIMESTAMPS --trace-config "rate=$rate"
          --trace-config "opentelemetry,url=$url")
  fi
  if [ "$1" = before ]; then
    QUIVER_BIN="$BEFORE_BIN" start_quiver "$out/tc-$label.log" --model-repository "$repo"
  else
    start_quiver "$out/tc-$label.log" --model-repository "$repo" "${args[@]}"
  fi
  metrics="http://$(grep -o 'metrics listening address=[^ ]*' "$out/tc-$label.log" | cut -d= -f2)"
  taskset -c "${CLIENT_CPUS:-1}" "$bin/quiver-loadtest" --model fraud_mlp --http "$http" --grpc "$grpc" \
    --protocols "${PROTOCOLS:-grpc}" --concurrency "${CONCURRENCY:-1,16}" --duration "$duration" --warmup 2 \
    --server-pid "$server" --markdown "$out/tc-$label.md" > /dev/null
  local exported failed dropped
  exported=$(metric quiver_trace_spans_exported_total)
  failed=$(metric quiver_trace_spans_failed_total)
  dropped=$(metric quiver_trace_spans_dropped_total)
  kill "$server"; wait "$server" 2> /dev/null || true
  if [ -n "$sink" ]; then
    kill "$sink"; wait "$sink" 2> /dev/null || true
  fi
  grep '^| fraud_mlp' "$out/tc-$label.md" | sed "s/^/$label /"
  [ "$1" != off ] && [ "$1" != before ] && echo "$label spans exported=$exported failed=$failed dropped=$dropped"
  return 0
}

for round in $(seq "${ROUNDS:-3}"); do
  for mode in ${MODES:-off rate1000 all down hang}; do
    run "$mode" "$round"
  done
done

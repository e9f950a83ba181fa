#!/usr/bin/env bash
# The hot-swap benchmark of docs/performance.md: a new version of a model
# every SWAP_EVERY seconds (default 0.5), SWAPS times (default 100), while
# REST and gRPC clients (CONCURRENCY in total, default 16) drive it; the
# steady window before (DURATION seconds, default 10) is the baseline.
# Server on core 0, load generator on core 1, as in scripts/bench.sh.
# Output: target/bench/swap.json, swap.md and the summary on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh
repo="$out/swap-repository"

rm -rf "$repo" && mkdir -p "$repo/scale"
cat > "$repo/scale/config.pbtxt" <<'CFG'
name: "scale"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
CFG

start_quiver "$out/swap-server.log" --model-repository "$repo" --model-control-mode explicit

taskset -c 1 "$bin/quiver-loadtest" --model scale --http "$http" --grpc "$grpc" \
  --swap-repository "$repo" --swaps "${SWAPS:-100}" --swap-every "${SWAP_EVERY:-0.5}" \
  --concurrency "${CONCURRENCY:-16}" --duration "${DURATION:-10}" --threads 1 \
  --json "$out/swap.json" --markdown "$out/swap.md"
echo "server threads at the end: $(ls /proc/$server/task | wc -l)"

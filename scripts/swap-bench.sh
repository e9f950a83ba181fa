#!/usr/bin/env bash
# The hot-swap benchmark of docs/performance.md: a new version of a model
# every SWAP_EVERY seconds (default 0.5), SWAPS times (default 100), while
# REST and gRPC clients (CONCURRENCY in total, default 16) drive it; the
# steady window before (DURATION seconds, default 10) is the baseline.
# Server on core 0, load generator on core 1, as in scripts/bench.sh.
# Output: target/bench/swap.json, swap.md and the summary on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="$root/target/bench"
repo="$out/swap-repository"
mkdir -p "$out"
./scripts/fetch-onnxruntime.sh
export ORT_DYLIB_PATH="$root/.cache/onnxruntime/libonnxruntime.so"
export XDG_CACHE_HOME="$root/.cache/xdg"
cargo build --release --locked --bin quiver --bin quiver-loadtest
bin="${CARGO_TARGET_DIR:-$root/target}/release"

rm -rf "$repo" && mkdir -p "$repo/scale"
cat > "$repo/scale/config.pbtxt" <<'CFG'
name: "scale"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
CFG

taskset -c 0 "$bin/quiver" --model-repository "$repo" --host 127.0.0.1 --http-port 0 --grpc-port 0 --metrics-port 0 \
  --worker-threads 1 --shutdown-drain-seconds 0 --model-control-mode explicit --log info 2> "$out/swap-server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "metrics listening" "$out/swap-server.log" && break
  sleep 0.2
done
http="http://$(grep -o 'HTTP listening address=[^ ]*' "$out/swap-server.log" | cut -d= -f2)"
grpc="http://$(grep -o 'gRPC listening address=[^ ]*' "$out/swap-server.log" | cut -d= -f2)"

taskset -c 1 "$bin/quiver-loadtest" --model scale --http "$http" --grpc "$grpc" \
  --swap-repository "$repo" --swaps "${SWAPS:-100}" --swap-every "${SWAP_EVERY:-0.5}" \
  --concurrency "${CONCURRENCY:-16}" --duration "${DURATION:-10}" --threads 1 \
  --json "$out/swap.json" --markdown "$out/swap.md"
echo "server threads at the end: $(ls /proc/$server/task | wc -l)"

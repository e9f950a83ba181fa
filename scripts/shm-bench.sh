#!/usr/bin/env bash
# What system shared memory saves on a large input: a 16 MB FP32 tensor (a
# batch of four 1024x1024 float images) through a light model (a sum per
# request: reading the input is the work), on one release server (core 0),
# the clients on core 1. Side by side, in one run:
#   - the in-process ceiling: the same model called directly on ONNX Runtime;
#   - tritonclient (gRPC and HTTP) sending the tensor in the request;
#   - tritonclient with the tensor in a registered region (written once);
#   - quiver-loadtest's gRPC client sending the tensor (a fast Rust client);
#   - Triton's perf_analyzer over gRPC, --shared-memory=none and =system.
#   ./scripts/shm-bench.sh   (ROUNDS=3 DURATION=8 CONCURRENCY=2)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh
./scripts/fetch-perf-analyzer.sh
duration="${DURATION:-8}"
conc="${CONCURRENCY:-2}"
py="$root/.venv/tritonclient/bin/python"
repo="$out/shm/repo"
rm -rf "$out/shm"
mkdir -p "$repo/big_sum/1"
# wide_sum's graph with the width fixed, so the in-process ceiling (which
# reads the shapes from the model file) runs the same 16 MB tensor.
"$py" - "$repo/big_sum/1/model.onnx" <<'PY'
import sys
import onnx
model = onnx.load("tests/fixtures/wide_sum.onnx")
for value in (model.graph.input[0], model.graph.output[0]):
    dims = value.type.tensor_type.shape.dim
    dims[0].dim_value = 1
    if value is model.graph.input[0]:
        dims[1].dim_value = 4194304
onnx.save(model, sys.argv[1])
PY
# No batching: a batch of such requests would be one more 16 MB copy each.
cat > "$repo/big_sum/config.pbtxt" <<'CFG'
name: "big_sum"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1, 4194304 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1, 1 ] } ]
CFG
# glibc hands a freed 16 MB block back to the kernel and maps a fresh one for
# the next call, so a bare loop would measure 4,000 page faults a call, not
# the model: every process here (the ceiling's loop, the server, the clients)
# keeps its freed memory instead.
export GLIBC_TUNABLES="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
start_quiver "$out/shm/server.log" --model-repository "$repo"
for round in $(seq "${ROUNDS:-3}"); do
  taskset -c "${SERVER_CPUS:-0}" "$bin/quiver-loadtest" --model big_sum --in-process "$repo/big_sum/1/model.onnx" \
    --duration "$duration" --warmup 1 --markdown "$out/shm/inproc-$round.md" > /dev/null
  grep "^| " "$out/shm/inproc-$round.md" | tail -1 | sed "s/^/round $round in-process /"
  taskset -c "${CLIENT_CPUS:-1}" "$bin/quiver-loadtest" --model big_sum --http "$http" --grpc "$grpc" \
    --protocols grpc --concurrency "$conc" --duration "$duration" --warmup 1 \
    --server-pid "$server" --markdown "$out/shm/loadtest-$round.md" > /dev/null
  grep "^| big_sum " "$out/shm/loadtest-$round.md" | sed "s/^/round $round quiver-loadtest /"
  for mode in none system; do
    rate="$(taskset -c "${CLIENT_CPUS:-1}" .cache/perf_analyzer/run -m big_sum -u "${grpc#http://}" -i grpc \
      --shared-memory="$mode" --output-shared-memory-size=64 --concurrency-range "$conc" \
      --measurement-interval "$((duration * 1000))" 2>&1 | grep -o 'throughput: [0-9.]* infer/sec' | tail -1)"
    echo "round $round perf_analyzer grpc --shared-memory=$mode c$conc: $rate"
  done
  for protocol in grpc http; do
    addr="$grpc"
    [ "$protocol" = http ] && addr="$http"
    for mode in plain shm; do
      echo "round $round $(taskset -c "${CLIENT_CPUS:-1}" "$py" scripts/shm_client.py "$protocol" "$addr" big_sum x y "$mode" "$conc" "$duration")"
    done
  done
done

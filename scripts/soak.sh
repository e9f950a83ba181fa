#!/usr/bin/env bash
# The soak run: quiver under a steady mixed load (REST, gRPC, streams) for
# MINUTES (default 30) while it is kept changing: a model hot-swapped every
# few seconds through poll mode (new version folders appear, old ones go),
# another's traffic policy replaced every 3 s, and, where .venv/registry
# exists (./scripts/test.sh makes it), a model following an MLflow alias
# that moves every 10 s. Reports failed requests by cause, RSS, open file
# descriptors, threads, /metrics size and p99 per minute
# (docs/reliability.md). Exits non-zero if any request failed.
#   scripts/soak.sh 30                 # release builds (built if missing)
#   SOAK_PROFILE=debug scripts/soak.sh 2   # what the test command runs
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
minutes="${1:-30}"
profile="${SOAK_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-$root/target}/$profile"
if [ ! -x "$target/quiver" ] || [ ! -x "$target/quiver-loadtest" ]; then
  if [ "$profile" = release ]; then
    cargo build --release --locked -p quiver-server -p quiver-loadtest
  else
    cargo build --locked -p quiver-server -p quiver-loadtest
  fi
fi
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$root/.cache/onnxruntime/libonnxruntime.so}"
work="$(mktemp -d -t quiver-soak-XXXXXX)"
pids=()
cleanup() {
  touch "$work/stop"
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The repository: soak_swap (swapped) and soak_split (two versions, split).
repo="$work/repo"
scale_config='max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200 }'
scale() { # folder, K
  mkdir -p "$1"
  python3 - "$root/tests/fixtures/scale.onnx" "$1/model.onnx" "$2" << 'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
at = data.find(struct.pack("<f", 12345.678))
data[at:at + 4] = struct.pack("<f", float(sys.argv[3]))
open(sys.argv[2], "wb").write(bytes(data))
PY
}
mkdir -p "$repo/soak_swap" "$repo/soak_split"
printf 'name: "soak_swap"\n%s\n' "$scale_config" > "$repo/soak_swap/config.pbtxt"
scale "$repo/soak_swap/1" 1
printf 'name: "soak_split"\nversion_policy { all {} }\n%s\n' "$scale_config" > "$repo/soak_split/config.pbtxt"
scale "$repo/soak_split/1" 1
scale "$repo/soak_split/2" 2

args=(--model-repository "$repo" --model-control-mode poll --repository-poll-secs 1
  --host 127.0.0.1 --http-port 0 --grpc-port 0 --metrics-port 0 --cache-dir "$work/cache")
others=""
if [ "${SOAK_REGISTRY:-1}" = 1 ] && [ -x "$root/.venv/registry/bin/python" ]; then
  mkdir -p "$work/mlflow"
  "$root/.venv/registry/bin/python" "$root/scripts/soak_registry.py" "$work/mlflow" 10 "$work/stop" \
    > "$work/mlflow.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 900); do [ -s "$work/mlflow/url" ] && break; sleep 0.2; done
  [ -s "$work/mlflow/url" ] || { cat "$work/mlflow.log"; echo "soak: MLflow did not start" >&2; exit 1; }
  args+=(--mlflow-tracking-uri "$(head -1 "$work/mlflow/url")" --registry-model "soak_registry=models:/soak-scale@champion")
  others="soak_registry"
else
  echo "soak: no .venv/registry (./scripts/test.sh --venvs-only makes the others); no registry follower" >&2
fi

XDG_CACHE_HOME="$work/xdg" QUIVER_LOG=info "$target/quiver" "${args[@]}" 2> "$work/quiver.log" &
quiver=$!
pids+=($quiver)
port() { sed -n "s/.*$1 listening address=[^ ]*:\([0-9]*\).*/\1/p" "$work/quiver.log" | head -1; }
for _ in $(seq 300); do [ -n "$(port metrics)" ] && break; sleep 0.2; done
http="$(port HTTP)" grpc="$(port gRPC)"
[ -n "$http" ] || { cat "$work/quiver.log"; echo "soak: quiver did not start" >&2; exit 1; }
python3 - "http://127.0.0.1:$http/v2/health/ready" << 'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200:
            break
    except OSError:
        time.sleep(0.2)
PY

status=0
"$target/quiver-loadtest" --soak-repository "$repo" --model "$others" \
  --http "http://127.0.0.1:$http" --grpc "http://127.0.0.1:$grpc" \
  --server-pid "$quiver" --duration "$((minutes * 60))" --swap-every 3 \
  --concurrency 8 --streams 2 --threads 1 --soak-report "${SOAK_REPORT:-$work/report.md}" || status=$?
kill -0 "$quiver" 2> /dev/null || { echo "soak: quiver died" >&2; status=1; }
if [ -n "$others" ]; then
  echo "registry: $(wc -l < "$work/mlflow/moves" 2> /dev/null || echo 0) alias moves; quiver loaded" \
    "$(grep -c 'model version ready model="soak_registry"' "$work/quiver.log" || true) versions of soak_registry"
fi
touch "$work/stop"
if [ "$status" -ne 0 ]; then
  echo "--- quiver log (last 40 lines)"
  tail -40 "$work/quiver.log"
fi
exit "$status"

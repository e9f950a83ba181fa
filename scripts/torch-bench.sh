#!/usr/bin/env bash
# LibTorch rows of docs/performance.md: the TorchScript conv net (conv_net_pt)
# and its ONNX twin, served over gRPC at 16 concurrent clients, against the
# same model called in-process in a loop (loadtest --in-process: the backend
# alone, no server) at batch sizes 1, 8 and 16, with the same threads.
#
# Server and in-process loops on core 0 (one instance, intra-op threads 1),
# the load generator on core 1. Each row: 1 s warm-up, then DURATION seconds
# (default 5). Output: target/bench/torch-*.json and .md, and the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-5}"
source scripts/bench-env.sh
repo="$out/torch-repository"
rm -rf "$repo" && mkdir -p "$repo"
cp -r models/conv_net models/conv_net_pt "$repo/"
# The TorchScript conv net capped at batch 8, where LibTorch runs it fastest here.
cp -r models/conv_net_pt "$repo/conv_net_pt_b8"
sed -i 's/name: "conv_net_pt"/name: "conv_net_pt_b8"/; s/max_batch_size: 16/max_batch_size: 8/' \
  "$repo/conv_net_pt_b8/config.pbtxt"

ceiling() { # model batch
  taskset -c 0 "$bin/quiver-loadtest" --model "$1" --in-process "$repo/$1/1/$3" --batch "$2" \
    --duration "$duration" --warmup 1 --json "$out/torch-ceiling-$1-$2.json" \
    --markdown "$out/torch-ceiling-$1-$2.md" > /dev/null
}
for batch in 1 8 16; do
  ceiling conv_net_pt "$batch" model.pt
  ceiling conv_net "$batch" model.onnx
done

start_quiver "$out/torch-server.log" --model-repository "$repo"
load() { taskset -c 1 "$bin/quiver-loadtest" --http "$http" --grpc "$grpc" --server-pid "$server" \
  --duration "$duration" --warmup 1 --protocols grpc --concurrency 1,16 "$@"; }
load --model conv_net_pt --ceiling "$out/torch-ceiling-conv_net_pt-16.json" \
  --json "$out/torch-conv_net_pt.json" --markdown "$out/torch-conv_net_pt.md" > /dev/null
load --model conv_net_pt_b8 --ceiling "$out/torch-ceiling-conv_net_pt-8.json" \
  --json "$out/torch-conv_net_pt_b8.json" --markdown "$out/torch-conv_net_pt_b8.md" > /dev/null
load --model conv_net --ceiling "$out/torch-ceiling-conv_net-16.json" \
  --json "$out/torch-conv_net.json" --markdown "$out/torch-conv_net.md" > /dev/null

for f in torch-ceiling-conv_net_pt-1 torch-ceiling-conv_net_pt-8 torch-ceiling-conv_net_pt-16 \
         torch-ceiling-conv_net-1 torch-ceiling-conv_net-8 torch-ceiling-conv_net-16 \
         torch-conv_net_pt torch-conv_net_pt_b8 torch-conv_net; do
  echo "### $f"
  cat "$out/$f.md"
  echo
done
# The server's rows against the in-process loop at the batch size the
# server actually ran (its average batch, rounded to the nearest measured size).
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for model in ("conv_net_pt", "conv_net_pt_b8", "conv_net"):
    rows = json.load(open(f"{out}/torch-{model}.json"))
    row = next(r for r in rows if r.get("concurrency") == 16)
    batch = row.get("avg_batch") or 1
    nearest = min((1, 8, 16), key=lambda b: abs(b - batch))
    base = model.removesuffix("_b8")
    ceiling = json.load(open(f"{out}/torch-ceiling-{base}-{nearest}.json"))[0]["inferences_per_s"]
    print(f"{model}: gRPC c=16 {row['inferences_per_s']:.1f} inf/s at average batch {batch:.1f}; "
          f"in-process batch {nearest}: {ceiling:.1f} inf/s; ratio {row['inferences_per_s'] / ceiling:.3f}")
PY

#!/usr/bin/env bash
# Reproduces every table of docs/performance.md on this machine.
#
# The server is pinned to core 0 (one tokio I/O thread, one instance thread
# per model, ONNX Runtime intra-op threads 1); the load generator to core 1.
# Each row: 1 s warm-up, then DURATION seconds measured (default 5).
# Output: target/bench/*.json and *.md, and the combined tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-5}"
source scripts/bench-env.sh
repo="$out/repository"

# The benchmark repository: the demo models, plus variants for the
# batching-off comparison and the overload test.
rm -rf "$repo" && mkdir -p "$repo"
cp -r models/add_sub models/fraud_mlp models/conv_net "$repo/"
python3 - "$repo" <<'PY'
import os, re, shutil, sys
repo = sys.argv[1]
def variant(src, dst, edit):
    shutil.copytree(os.path.join(repo, src), os.path.join(repo, dst))
    path = os.path.join(repo, dst, "config.pbtxt")
    text = open(path).read().replace(f'name: "{src}"', f'name: "{dst}"')
    open(path, "w").write(edit(text))
no_batching = lambda t: re.sub(r"dynamic_batching \{[^}]*\}", "", t)
variant("fraud_mlp", "fraud_mlp_nobatch", no_batching)
# One request at a time, at most 3 waiting: under overload the excess is
# refused at once instead of queueing without bound.
variant("conv_net", "conv_net_bounded", lambda t: re.sub(
    r"dynamic_batching \{[^}]*\}", "dynamic_batching { default_queue_policy { max_queue_size: 3 } }",
    t.replace("max_batch_size: 16", "max_batch_size: 1")))
PY

start_quiver "$out/server.log" --model-repository "$repo"

load() { taskset -c 1 "$bin/quiver-loadtest" --http "$http" --grpc "$grpc" --server-pid "$server" \
  --duration "$duration" --warmup 1 "$@"; }
ceiling() { # model batch -> target/bench/ceiling-<model>-<batch>.json, on the server's core
  taskset -c 0 "$bin/quiver-loadtest" --model "$1" --in-process "$repo/$1/1/model.onnx" --batch "$2" \
    --duration "$duration" --warmup 1 --json "$out/ceiling-$1-$2.json" --markdown "$out/ceiling-$1-$2.md" > /dev/null
}

ceiling add_sub 1
ceiling fraud_mlp 1
ceiling fraud_mlp 16
ceiling conv_net 1
ceiling conv_net 8

load --model add_sub --ceiling "$out/ceiling-add_sub-1.json" --json "$out/add_sub.json" --markdown "$out/add_sub.md" > /dev/null
load --model fraud_mlp --ceiling "$out/ceiling-fraud_mlp-16.json" --json "$out/fraud_mlp.json" --markdown "$out/fraud_mlp.md" > /dev/null
load --model conv_net --ceiling "$out/ceiling-conv_net-8.json" --json "$out/conv_net.json" --markdown "$out/conv_net.md" > /dev/null
load --model fraud_mlp_nobatch --protocols grpc --concurrency 16,64 --ceiling "$out/ceiling-fraud_mlp-1.json" \
  --json "$out/fraud_mlp_nobatch.json" --markdown "$out/fraud_mlp_nobatch.md" > /dev/null
load --model add_sub --protocols grpc-live --concurrency 1,16 --json "$out/floor.json" --markdown "$out/floor.md" > /dev/null

# Overload: measure the unloaded latency and the capacity, then send twice
# the capacity open-loop.
load --model conv_net_bounded --protocols grpc --concurrency 1,4 --json "$out/overload-base.json" \
  --markdown "$out/overload-base.md" > /dev/null
capacity=$(python3 -c "import json; print(json.load(open('$out/overload-base.json'))[1]['requests_per_s'])")
rate=$(python3 -c "print(round(2 * $capacity))")
load --model conv_net_bounded --protocols grpc,http-binary --rate "$rate" --json "$out/overload.json" \
  --markdown "$out/overload.md" > /dev/null

for f in ceiling-add_sub-1 ceiling-fraud_mlp-1 ceiling-fraud_mlp-16 ceiling-conv_net-1 ceiling-conv_net-8 \
         add_sub fraud_mlp conv_net fraud_mlp_nobatch floor overload-base overload; do
  echo "### $f"
  cat "$out/$f.md"
  echo
done

#!/usr/bin/env bash
# The batching and latency-floor benchmarks of docs/performance.md
# ("Adaptive batching"): server on core 0, load generator on core 1.
#
#   fraud_mlp, max_batch_size 32, no preferred sizes, with
#     d0       max_queue_delay_microseconds 0
#     d1000    1000 µs, the server's default delay policy (adaptive)
#     d1000f   1000 µs, queue_delay_policy "fixed" (Triton's behaviour)
#   closed loop c=16 and c=1 over gRPC; open loop at 70% of the fixed
#   policy's open-loop capacity; one ModelStreamInfer stream of 10,000 requests
#   on the demo fraud_mlp; add_sub gRPC c=1 against ServerLive c=1.
#
# QUIVER_BIN=<binary> benchmarks another build (the "before" column).
# Output: target/bench/batching-*.json|md, and the tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-5}"
source scripts/bench-env.sh
repo="$out/batching-repository"
tag="${TAG:-batching}"

rm -rf "$repo" && mkdir -p "$repo"
cp -r models/add_sub models/fraud_mlp "$repo/"
python3 - "$repo" <<'PY'
import os, re, shutil, sys
repo = sys.argv[1]
def variant(dst, delay, policy=None):
    shutil.copytree(os.path.join(repo, "fraud_mlp"), os.path.join(repo, dst))
    path = os.path.join(repo, dst, "config.pbtxt")
    text = open(path).read().replace('name: "fraud_mlp"', f'name: "{dst}"')
    text = text.replace("max_batch_size: 64", "max_batch_size: 32")
    text = re.sub(r"dynamic_batching \{[^}]*\}",
                  f"dynamic_batching {{ max_queue_delay_microseconds: {delay} }}", text)
    if policy:
        text += f'parameters {{ key: "queue_delay_policy" value: {{ string_value: "{policy}" }} }}\n'
    open(path, "w").write(text)
variant("fraud_d0", 0)
variant("fraud_d1000", 1000)
variant("fraud_d1000f", 1000, "fixed")
PY

start_quiver "$out/$tag-server.log" --model-repository "$repo"

load() { taskset -c 1 "$bin/quiver-loadtest" --http "$http" --grpc "$grpc" --server-pid "$server" \
  --duration "$duration" --warmup 1 "$@" > /dev/null; }

for m in fraud_d0 fraud_d1000 fraud_d1000f; do
  load --model "$m" --protocols grpc --concurrency 16,1 --json "$out/$tag-$m.json" --markdown "$out/$tag-$m.md"
done
# Capacity: what the fixed policy sustains in open loop when offered far
# more than it can take (at most 256 outstanding); the comparison then runs
# at 70% of that, each policy twice, alternating.
load --model fraud_d1000f --protocols grpc --rate 100000 --max-in-flight 256 --json "$out/$tag-capacity.json" \
  --markdown "$out/$tag-capacity.md"
capacity=$(python3 -c "import json; print(json.load(open('$out/$tag-capacity.json'))[0]['inferences_per_s'])")
rate=$(python3 -c "print(round(0.7 * $capacity))")
for round in 1 2; do
  for m in fraud_d1000f fraud_d1000; do
    load --model "$m" --protocols grpc --rate "$rate" --json "$out/$tag-open-$m-$round.json" \
      --markdown "$out/$tag-open-$m-$round.md"
  done
done
load --model fraud_mlp --protocols grpc-stream --concurrency 1 --stream-requests 10000 \
  --json "$out/$tag-stream.json" --markdown "$out/$tag-stream.md"
load --model add_sub --protocols grpc,grpc-live --concurrency 1 --json "$out/$tag-floor.json" \
  --markdown "$out/$tag-floor.md"

echo "capacity (fraud_d1000f, open loop): $capacity/s; open loop at $rate/s"
for f in fraud_d0 fraud_d1000 fraud_d1000f capacity open-fraud_d1000f-1 open-fraud_d1000-1 \
         open-fraud_d1000f-2 open-fraud_d1000-2 stream floor; do
  echo "### $f"
  cat "$out/$tag-$f.md"
  echo
done

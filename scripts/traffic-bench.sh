#!/usr/bin/env bash
# Traffic splitting under load (docs/performance.md, "Traffic splitting"):
# 1. fraud_mlp with a shadow at 100% against the same model without one,
#    side by side in one run (alternating rows), primary p50 compared;
# 2. weights stepped, a rollout promoted, and a rollback, while
#    quiver-loadtest drives concurrency 16 over gRPC and HTTP: errors counted.
# Output: target/bench/traffic-*.md and the lines printed here.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh
duration="${DURATION:-10}"

# Two versions of fraud_mlp (the same file), both live.
repo="$out/traffic-repo"
rm -rf "$repo" && mkdir -p "$repo/fraud_mlp"
cp -r models/fraud_mlp/1 "$repo/fraud_mlp/1"
cp -r models/fraud_mlp/1 "$repo/fraud_mlp/2"
{ cat models/fraud_mlp/config.pbtxt; echo 'version_policy: { all: {} }'; } > "$repo/fraud_mlp/config.pbtxt"
start_quiver "$out/traffic-server.log" --model-repository "$repo" --model-control-mode explicit --load-model fraud_mlp

put() { curl -sf -X PUT "$http/v2/models/fraud_mlp/traffic" -H 'content-type: application/json' -d "$1" > /dev/null; }
plain='{"variants": [{"name": "primary", "version": 1, "weight": 1}, {"name": "shadow", "version": 2, "weight": 0}]}'
shadowed='{"variants": [{"name": "primary", "version": 1, "weight": 1}, {"name": "shadow", "version": 2, "weight": 0}], "shadow": {"variant": "shadow", "percent": 100}}'

load() { # $1: label, $2: concurrency, $3: protocols, $4: seconds (default $duration)
  taskset -c 1 "$bin/quiver-loadtest" --model fraud_mlp --http "$http" --grpc "$grpc" \
    --protocols "$3" --concurrency "$2" --duration "${4:-$duration}" --warmup 2 --server-pid "$server" \
    --markdown "$out/traffic-$1.md" > /dev/null
  tail -n 1 "$out/traffic-$1.md"
}

echo "## shadow at 100% vs none (fraud_mlp, http-binary, alternating)"
for c in 1 4; do
  for round in 1 2; do
    put "$plain";    echo "no shadow  c=$c round $round: $(load "plain-$c-$round" "$c" http-binary)"
    put "$shadowed"; echo "shadow 100 c=$c round $round: $(load "shadow-$c-$round" "$c" http-binary)"
  done
done
curl -s "$http/v2/models/fraud_mlp/traffic" | python3 -c 'import json,sys; print("shadow:", json.load(sys.stdin).get("shadow_stats"))'

echo "## weights, a promoted rollout and a rolled-back one under concurrency 16"
put '{"variants": [{"name": "stable", "version": 1, "weight": 100}, {"name": "canary", "version": 2, "weight": 0}]}'
(
  sleep 3
  for w in 5 25 50 75 100 0 10; do
    put "{\"variants\": [{\"name\": \"stable\", \"version\": 1, \"weight\": $((100 - w))}, {\"name\": \"canary\", \"version\": 2, \"weight\": $w}]}"
    sleep 0.5
  done
  put '{"variants": [{"name": "stable", "version": 1, "weight": 100}, {"name": "canary", "version": 2, "weight": 0}], "rollout": {"canary": "canary", "stable": "stable", "steps": [10, 50, 100], "step_seconds": 1}}'
  sleep 5
  put '{"variants": [{"name": "stable", "version": 1, "weight": 100}, {"name": "canary", "version": 2, "weight": 0}], "rollout": {"canary": "canary", "stable": "stable", "steps": [10, 50, 100], "step_seconds": 1, "max_p99_ratio": 1, "p99_slack_ms": 0, "max_error_rate_increase": 0}}'
) &
changer=$!
load changes-16 16 grpc,http-binary $((duration + 8))
wait "$changer"
grep -h '^|' "$out/traffic-changes-16.md" | tail -n 2
curl -s "$http/v2/models/fraud_mlp/traffic" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("rollout:", d.get("rollout_state")); print("stats:", [(s["name"], s["requests"], s["errors"]) for s in d["stats"]])'

#!/usr/bin/env bash
# What the response cache saves: conv_net with `response_cache { enable: true }`
# against the same model without it, on one release server (core 0, a local
# cache of 64 MB), quiver-loadtest on core 1. The load generator sends one
# request over and over, so after its first request every request to the
# cached model is a hit; the plain model computes every one.
#   ./scripts/cache-bench.sh   (ROUNDS=3 DURATION=6 CONCURRENCY=1,16 MODELS="conv_net fraud_mlp")
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh
duration="${DURATION:-6}"
repo="$out/cache/repo"
rm -rf "$out/cache"
mkdir -p "$repo"
for m in ${MODELS:-conv_net fraud_mlp}; do
  cp -r "models/$m" "$repo/$m"
  cp -r "models/$m" "$repo/${m}_plain"
  sed -i "s/name: \"$m\"/name: \"${m}_plain\"/" "$repo/${m}_plain/config.pbtxt"
  printf '\nresponse_cache { enable: true }\n' >> "$repo/$m/config.pbtxt"
done
start_quiver "$out/cache/server.log" --model-repository "$repo" --cache-config local,size=67108864
for round in $(seq "${ROUNDS:-3}"); do
  for m in ${MODELS:-conv_net fraud_mlp}; do
    for model in "${m}_plain" "$m"; do
      taskset -c "${CLIENT_CPUS:-1}" "$bin/quiver-loadtest" --model "$model" --http "$http" --grpc "$grpc" \
        --protocols grpc --concurrency "${CONCURRENCY:-1,16}" --duration "$duration" --warmup 1 \
        --server-pid "$server" --markdown "$out/cache/$model-$round.md" > /dev/null
      grep "^| $model " "$out/cache/$model-$round.md" | sed "s/^/round $round /"
    done
  done
done

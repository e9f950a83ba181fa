#!/usr/bin/env bash
# What an ensemble costs against the same graphs fused into one ONNX model
# (onnx.compose, scripts/compose_pipeline.py), and what it saves against a
# client calling the step models in turn. One release server (core 0, as
# bench-env.sh places it) serves the demo pipelines, their step models and
# the fused models; the clients run on core 1.
#   throughput: quiver-loadtest, gRPC, concurrency 16, alternating rounds of
#               image_pipeline / image_fused and fraud_pipeline / fraud_fused
#   round trips: scripts/pipeline_client.py (tritonclient, concurrency 1):
#               one call to the ensemble against the three (two) step calls,
#               over gRPC and over HTTP with JSON tensors
#   ./scripts/ensemble-bench.sh   (ROUNDS=3 DURATION=8 CONCURRENCY=16)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh
[ -x .venv/tritonclient/bin/python ] || ./scripts/test.sh --venvs-only
py=.venv/tritonclient/bin/python
duration="${DURATION:-8}"
repo="$out/ensemble/repo"
rm -rf "$out/ensemble"
mkdir -p "$repo"
for m in image_preprocess conv_net calibrate image_pipeline fraud_scaler fraud_mlp fraud_pipeline; do
  cp -r "models/$m" "$repo/"
done
"$py" scripts/compose_pipeline.py "$repo" image_fused raw scores 16 2000 \
  "image_preprocess:image->image" "conv_net:probabilities->probabilities" calibrate
"$py" scripts/compose_pipeline.py "$repo" fraud_fused raw probabilities 64 200 "fraud_scaler:scaled->input" fraud_mlp
start_quiver "$out/ensemble/server.log" --model-repository "$repo"

for round in $(seq "${ROUNDS:-3}"); do
  for model in image_pipeline image_fused fraud_pipeline fraud_fused; do
    taskset -c "${CLIENT_CPUS:-1}" "$bin/quiver-loadtest" --model "$model" --http "$http" --grpc "$grpc" \
      --protocols grpc --concurrency "${CONCURRENCY:-16}" --duration "$duration" --warmup 2 \
      --server-pid "$server" --markdown "$out/ensemble/$model-$round.md" > /dev/null
    grep "^| $model" "$out/ensemble/$model-$round.md" | sed "s/^/round $round /"
  done
done
for round in $(seq "${ROUNDS:-3}"); do
  taskset -c "${CLIENT_CPUS:-1}" "$py" scripts/pipeline_client.py "$grpc" "$duration" image_pipeline:raw:scores
  taskset -c "${CLIENT_CPUS:-1}" "$py" scripts/pipeline_client.py "$grpc" "$duration" \
    image_preprocess:raw:image conv_net:image:probabilities calibrate:probabilities:scores
  PROTOCOL=http-json taskset -c "${CLIENT_CPUS:-1}" "$py" scripts/pipeline_client.py "$http" "$duration" \
    image_pipeline:raw:scores
  PROTOCOL=http-json taskset -c "${CLIENT_CPUS:-1}" "$py" scripts/pipeline_client.py "$http" "$duration" \
    image_preprocess:raw:image conv_net:image:probabilities calibrate:probabilities:scores
  taskset -c "${CLIENT_CPUS:-1}" "$py" scripts/pipeline_client.py "$grpc" "$duration" fraud_pipeline:raw:probabilities
  taskset -c "${CLIENT_CPUS:-1}" "$py" scripts/pipeline_client.py "$grpc" "$duration" \
    fraud_scaler:raw:scaled fraud_mlp:input:probabilities
done

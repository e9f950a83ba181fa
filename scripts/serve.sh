#!/usr/bin/env bash
# Runs quiver on the demo repository in models/ (HTTP 8080, gRPC 8081,
# metrics 8082): the ONNX models and their TorchScript twins. Extra arguments
# go to quiver, e.g. --http-port 9000.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-onnxruntime.sh
./scripts/fetch-libtorch.sh
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$PWD/.cache/xdg}"
# The LibTorch backend is a library of its own, loaded beside the binary.
cargo build --release --locked -p quiver-torch
exec cargo run --release --locked --bin quiver -- \
  --model-repository models \
  --onnxruntime-lib "$PWD/.cache/onnxruntime/libonnxruntime.so" "$@"

#!/usr/bin/env bash
# The whole test suite, on a fresh machine: fetches ONNX Runtime (its CPU and
# GPU builds) and a CPU LibTorch (all from PyPI wheels, into .cache/, reused when there), builds,
# checks formatting and lints, runs the Rust tests (unit, codec properties,
# the real server over HTTP and gRPC), a short fuzz run of the decoders
# (AFL++ via cargo-afl, installed on first use), then the Python suites with the clients
# users run: tritonclient and the KServe SDK, each in its own virtualenv, the
# registry suite, which starts a real MLflow tracking server and an S3-compatible
# server (moto) on 127.0.0.1 from a third virtualenv (.venv/registry), and the
# monitoring suite (scipy, the CloudEvents SDK, Debian's Prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

venv() {
  local name="$1" requirements="$2"
  local dir="$root/.venv/$name"
  local stamp="$dir/.requirements"
  if [ ! -x "$dir/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
  fi
}
# --venvs-only: the Python client environments and nothing else (for
# scripts/container-test.sh, which runs the suites against a container).
if [ "${1:-}" = --venvs-only ]; then
  venv tritonclient tests/python/requirements-tritonclient.txt
  venv kserve tests/python/requirements-kserve.txt
  exit 0
fi

./scripts/fetch-onnxruntime.sh
# The GPU build too: the tests check that on a machine without CUDA a
# KIND_GPU model fails to load naming the missing library (no silent CPU).
ORT_PACKAGE=onnxruntime-gpu ORT_DEST="$root/.cache/onnxruntime-gpu" ./scripts/fetch-onnxruntime.sh
./scripts/fetch-libtorch.sh
# The TLS tests make their certificates with the openssl command line; the
# monitoring suite starts Debian's Prometheus (and runs promtool); the cache
# suite starts Debian's redis-server.
if ! command -v openssl > /dev/null || ! command -v prometheus > /dev/null || ! command -v redis-server > /dev/null; then
  apt-get update -q && apt-get install -y -q --no-install-recommends openssl prometheus redis-server
fi
export ORT_DYLIB_PATH="$root/.cache/onnxruntime/libonnxruntime.so"
# ONNX Runtime's telemetry writes under XDG_CACHE_HOME; keep it out of $HOME.
export XDG_CACHE_HOME="$root/.cache/xdg"

venv tritonclient tests/python/requirements-tritonclient.txt &
venv_triton=$!
venv kserve tests/python/requirements-kserve.txt &
venv_kserve=$!
venv registry tests/python/requirements-registry.txt &
venv_registry=$!
venv monitoring tests/python/requirements-monitoring.txt &
venv_monitoring=$!

# A one-shot build gains nothing from incremental state (2 GB of it on a
# fresh clone); a developer's own shell keeps the default. Disk matters: CI
# machines can have less than 10 GB free.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# All libraries and binaries: the LibTorch backend is a library (cdylib)
# the server tests load.
cargo build --workspace --locked
cargo test --workspace --locked
# A short coverage-guided run of every decoder (scripts/fuzz.sh; longer runs
# are for finding bugs, this one keeps the targets building and honest).
./scripts/fuzz.sh "${FUZZ_SECONDS:-15}"

wait "$venv_triton"
wait "$venv_kserve"
wait "$venv_registry"
wait "$venv_monitoring"
export QUIVER_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/quiver"
# deploy/: the CRD schemas (where ../shared/k8s exists) and quiver's command
# line, probes and grace period in every manifest.
"$root/.venv/registry/bin/python" scripts/check-manifests.py
cd tests/python
"$root/.venv/tritonclient/bin/python" -m pytest -q -p no:cacheprovider test_tritonclient.py test_model_control.py test_security.py test_onnx_backend_models.py test_logging.py test_log_settings.py test_tracing.py test_classification.py test_ensembles.py test_cache.py test_shared_memory.py
"$root/.venv/kserve/bin/python" -m pytest -q -p no:cacheprovider test_kserve.py
"$root/.venv/registry/bin/python" -m pytest -q -p no:cacheprovider test_registry.py
"$root/.venv/monitoring/bin/python" -m pytest -q -p no:cacheprovider test_monitoring.py
cd "$root"
# Two minutes of the soak run (docs/reliability.md has the 30-minute one):
# mixed load through hot swaps, policy changes and alias moves; any failed
# request fails the run.
SOAK_PROFILE=debug ./scripts/soak.sh "${SOAK_MINUTES:-2}"

# Sourced by the benchmark scripts: ONNX Runtime, a release build, and
# start_quiver LOG ARGS... which starts the server on core 0 (SERVER_CPUS,
# a taskset list) with one async worker thread (SERVER_THREADS), every port
# picked by the OS and sets $server (pid), $http and $grpc (base URLs).
# QUIVER_BIN runs another server binary (an earlier build, for before/after).
root="$PWD"
out="$root/target/bench"
mkdir -p "$out"
./scripts/fetch-onnxruntime.sh
./scripts/fetch-libtorch.sh
export ORT_DYLIB_PATH="$root/.cache/onnxruntime/libonnxruntime.so"
export XDG_CACHE_HOME="$root/.cache/xdg"
cargo build --release --locked -p quiver-server -p quiver-loadtest -p quiver-torch
bin="${CARGO_TARGET_DIR:-$root/target}/release"

start_quiver() {
  local log="$1"
  shift
  taskset -c "${SERVER_CPUS:-0}" "${QUIVER_BIN:-$bin/quiver}" --host 127.0.0.1 --http-port 0 --grpc-port 0 --metrics-port 0 \
    --worker-threads "${SERVER_THREADS:-1}" --shutdown-drain-seconds 0 --log info "$@" 2> "$log" &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    grep -q "metrics listening" "$log" && break
    sleep 0.2
  done
  http="http://$(grep -o 'HTTP listening address=[^ ]*' "$log" | cut -d= -f2)"
  grpc="http://$(grep -o 'gRPC listening address=[^ ]*' "$log" | cut -d= -f2)"
}

# metric NAME: the sum of the series of that name on $metrics (a base URL).
metric() {
  curl -s "$metrics/metrics" | awk -v n="$1" '$1 ~ "^"n"([{]|$)" {s += $NF} END {printf "%d", s}'
}

# fraud_mlp_repo DIR: a fresh repository holding the demo fraud_mlp, for the cost scripts.
fraud_mlp_repo() {
  rm -rf "$1"
  mkdir -p "$1/repo"
  cp -r models/fraud_mlp "$1/repo/"
}

#!/usr/bin/env bash
# Two quiver binaries side by side in one run: the same loadtest rows
# against each, alternating, so a change's cost on the request path is a
# ratio measured under the same conditions.
#   ./scripts/ab-bench.sh OLD_QUIVER_BINARY [MODEL] [PROTOCOLS] [CONCURRENCY]
# ROUNDS=<n> alternates n times (default 2); on a noisy machine take the
# median of each row over more rounds.
# REPOSITORY=<dir> serves another repository than models/ (e.g. one holding
# only MODEL, so that both binaries load exactly the same models).
# e.g. build the old commit with `git worktree add /tmp/old <rev>` and
# `CARGO_TARGET_DIR=/tmp/old-target cargo build --release --bin quiver`.
set -euo pipefail
cd "$(dirname "$0")/.."
old_bin="$1"
model="${2:-add_sub}"
protocols="${3:-grpc,http-binary}"
concurrency="${4:-1,16}"
source scripts/bench-env.sh
new_bin="$bin/quiver"
duration="${DURATION:-8}"
repository="${REPOSITORY:-models}"

run() { # $1 label, $2 binary
  local log="$out/ab-$1.log"
  taskset -c 0 "$2" --model-repository "$repository" --host 127.0.0.1 --http-port 0 --grpc-port 0 --metrics-port 0 \
    --worker-threads 1 --shutdown-drain-seconds 0 --log info 2> "$log" &
  server=$!
  for _ in $(seq 100); do grep -q "metrics listening" "$log" && break; sleep 0.2; done
  http="http://$(grep -o 'HTTP listening address=[^ ]*' "$log" | cut -d= -f2)"
  grpc="http://$(grep -o 'gRPC listening address=[^ ]*' "$log" | cut -d= -f2)"
  taskset -c 1 "$bin/quiver-loadtest" --model "$model" --http "$http" --grpc "$grpc" --protocols "$protocols" \
    --concurrency "$concurrency" --duration "$duration" --warmup 2 --server-pid "$server" \
    --markdown "$out/ab-$1.md" > /dev/null
  kill "$server"; wait "$server" 2> /dev/null || true
  grep '^| '"$model" "$out/ab-$1.md" | sed "s/^/$1 /"
}

for round in $(seq "${ROUNDS:-2}"); do
  run "old-$round" "$old_bin"
  run "new-$round" "$new_bin"
done

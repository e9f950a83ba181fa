#!/usr/bin/env bash
# What monitoring costs on the request path: the same release binary over two
# repositories holding only fraud_mlp, one without a reference and one with a
# reference.npz (so every request is monitored, 100% sampling), alternating
# rounds of quiver-loadtest, server on core 0 (with its monitoring thread)
# and load generator on core 1. Prints each round's rows and, for monitored
# rounds, how many requests the monitor saw and dropped.
#   ./scripts/monitoring-cost.sh            (ROUNDS=3 DURATION=8 PROTOCOLS=grpc CONCURRENCY=1,16)
#   SOAK_SECONDS=600 ./scripts/monitoring-cost.sh   also samples the monitored server's RSS over a long run
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh
python="${PYTHON:-$root/.venv/monitoring/bin/python}"
if [ ! -x "$python" ]; then
  python3 -m venv "$root/.venv/monitoring"
  "$root/.venv/monitoring/bin/python" -m pip install -q -r tests/python/requirements-monitoring.txt
fi
base="$out/monitoring-cost"
rm -rf "$base"
for repo in plain monitored; do
  mkdir -p "$base/$repo"
  cp -r models/fraud_mlp "$base/$repo/"
done
"$python" -c "
import numpy as np
rng = np.random.default_rng(0)
np.savez('$base/monitored/fraud_mlp/reference.npz', input=rng.standard_normal((5000, 32)).astype(np.float32))
"
duration="${DURATION:-8}"

run() { # $1 label, $2 repository
  start_quiver "$out/mc-$1.log" --model-repository "$2"
  taskset -c 1 "$bin/quiver-loadtest" --model fraud_mlp --http "$http" --grpc "$grpc" \
    --protocols "${PROTOCOLS:-grpc}" --concurrency "${CONCURRENCY:-1,16}" --duration "$duration" --warmup 2 \
    --server-pid "$server" --markdown "$out/mc-$1.md" > /dev/null
  if [ "${2##*/}" = monitored ]; then
    curl -s "$http/v2/models/fraud_mlp/versions/1/monitoring" \
      | "$python" -c "import json,sys; r=json.load(sys.stdin); print(f'$1 monitor observed {r[\"observed\"]} requests, dropped {r[\"dropped\"]}')"
  fi
  kill "$server"; wait "$server" 2> /dev/null || true
  grep '^| fraud_mlp' "$out/mc-$1.md" | sed "s/^/$1 /"
}

for round in $(seq "${ROUNDS:-3}"); do
  run "plain-$round" "$base/plain"
  run "monitored-$round" "$base/monitored"
done

if [ -n "${SOAK_SECONDS:-}" ]; then
  # RSS of the monitored server under steady load, sampled every 30 s; 5-second
  # windows, so that the freeze history (its last closed windows) is full
  # within the first three minutes and whatever grows after that is a leak.
  start_quiver "$out/mc-soak.log" --model-repository "$base/monitored" --monitoring-window-seconds 5
  taskset -c 1 "$bin/quiver-loadtest" --model fraud_mlp --http "$http" --grpc "$grpc" --protocols grpc \
    --concurrency 16 --duration "$SOAK_SECONDS" --warmup 0 --markdown "$out/mc-soak.md" > /dev/null &
  load=$!
  for _ in $(seq $((SOAK_SECONDS / 30))); do
    sleep 30
    echo "soak t=+${SECONDS}s rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$server/status)"
  done
  wait "$load" || true
  kill "$server"; wait "$server" 2> /dev/null || true
  grep '^| fraud_mlp' "$out/mc-soak.md" | sed "s/^/soak /"
fi

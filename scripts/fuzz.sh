#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders with AFL++ through cargo-afl, on the
# stable toolchain: the JSON and binary-extension HTTP bodies, the raw binary
# form, gRPC ModelInferRequest messages and config.pbtxt. Each target runs
# SECONDS (first argument, default 20) from the seeds in fuzz/corpus/<target>;
# AFL counts an input as a hang past 1 s and runs the target under a 2 GiB
# memory limit, so unbounded allocation shows as a crash. Any crash or hang
# fails the run; its input is left in target/fuzz/findings/<target>/default/
# {crashes,hangs}: add it to fuzz/regressions/<target>/ so the test suite
# replays it forever (codec/tests/fuzz_regressions.rs).
#   TARGETS="http_json grpc_infer" ./scripts/fuzz.sh 600
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
targets="${TARGETS:-http_json http_raw grpc_infer config_pbtxt}"
if ! command -v cargo-afl > /dev/null; then
  cargo install cargo-afl --locked --version 0.18.2
fi
export CARGO_TARGET_DIR="$PWD/target/fuzz"
# Not --locked: fuzz/Cargo.lock pins what it can, and a dependency the server
# gained since is resolved here instead of failing the run.
(cd fuzz && cargo afl build --release)
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
findings="$CARGO_TARGET_DIR/findings"
mkdir -p "$findings"
failed=0
for t in $targets; do
  rm -rf "${findings:?}/$t"
  cargo afl fuzz -i "fuzz/corpus/$t" -o "$findings/$t" -V "$seconds" -t 1000 -m 2048 \
    "$CARGO_TARGET_DIR/release/$t" > "$findings/$t.log" 2>&1 || {
      echo "fuzz $t: afl-fuzz failed:"; tail -20 "$findings/$t.log"; failed=1; continue; }
  stats="$findings/$t/default/fuzzer_stats"
  value() { grep "^$1 " "$stats" | sed 's/.*: //'; }
  crashes=$(find "$findings/$t/default/crashes" -type f -name 'id:*' | wc -l)
  hangs=$(find "$findings/$t/default/hangs" -type f -name 'id:*' | wc -l)
  echo "fuzz $t: $(value execs_done) executions in ${seconds} s, $(value corpus_count) paths, $crashes crashes, $hangs hangs"
  if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
    failed=1
  fi
done
exit "$failed"

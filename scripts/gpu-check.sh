#!/usr/bin/env bash
# The GPU check: quiver on an NVIDIA GPU with ONNX Runtime's CUDA (and, where
# its libraries are present, TensorRT) provider and, where a CUDA LibTorch is
# installed, LibTorch on CUDA. It checks every answer against the same model
# on the CPU, measures the conv net and the fraud MLP in-process and over gRPC
# at c=1/16/64, checks CUDA shared memory with a client's GPU buffers, and
# checks that GPU memory comes back after the models are unloaded. It prints a table and a list of what it skipped, and writes both
# to $OUT (or target/gpu-check/). Within 8 minutes on one GPU.
#
#   scripts/gpu-check.sh          run the check (on any machine: without a GPU it
#                                 runs up to the point where it needs one, checks
#                                 its own answer checker on the CPU, and says what
#                                 it skipped)
#   scripts/gpu-check.sh stage    on a machine with the internet and cargo: build
#                                 the release binaries, fetch onnxruntime-gpu, and
#                                 pack both into .gpu-stage/part-NN (56 MiB each,
#                                 since one file over 64 MiB cannot travel to a
#                                 device machine) plus .gpu-stage/SHA256
#
# The GPU machine needs no internet. Carry .gpu-stage/SHA256 and one or more
# parts per call; each run gathers what has arrived into .cache/gpu-check/
# (kept between runs on the same machine), and once every part is there it
# joins, verifies and unpacks them and runs. A machine with cargo and the
# internet needs no parts: the script builds and fetches for itself.
#
# CUDA, cuDNN and TensorRT libraries are found as quiver finds them
# (--cuda-library-path, $CUDA_HOME, /usr/local/cuda, the nvidia-* wheels of
# the python3 on PATH); LibTorch on CUDA is the one of the python3's torch.
#   DURATION   seconds measured per row (default 5), after a 2 s warm-up
#   GPU_CHECK_DRY_RUN=1  on a machine without a GPU, run the GPU steps with
#              the "_gpu" copies on the CPU: checks this script, measures nothing
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
stage="$root/.gpu-stage"
have="$root/.cache/gpu-check"
out="${OUT:-$root/target/gpu-check}"
duration="${DURATION:-5}"
part_mib=56
mkdir -p "$out"
report="$out/gpu-check.md"
: > "$report"
say() { echo "$*" | tee -a "$report"; }
skipped=()
skip() { skipped+=("$1"); say "SKIPPED: $1"; }
finish() {
  say ""
  say "## Skipped"
  if [ ${#skipped[@]} -eq 0 ]; then say "- nothing"; fi
  for s in "${skipped[@]}"; do say "- $s"; done
  exit "${1:-0}"
}

if [ "${1:-}" = stage ]; then
  set -e
  cargo build --release --locked -p quiver-server -p quiver-loadtest -p quiver-torch
  ORT_PACKAGE=onnxruntime-gpu ORT_DEST="$root/.cache/onnxruntime-gpu" ./scripts/fetch-onnxruntime.sh
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/bundle/bin" "$tmp/bundle/onnxruntime-gpu"
  rel="${CARGO_TARGET_DIR:-$root/target}/release"
  for f in quiver quiver-loadtest libquiver_torch.so; do strip -o "$tmp/bundle/bin/$f" "$rel/$f"; done
  cp -a "$root/.cache/onnxruntime-gpu/." "$tmp/bundle/onnxruntime-gpu/"
  git rev-parse HEAD > "$tmp/bundle/COMMIT"
  tar -C "$tmp" -cf - bundle | xz -T0 -6 > "$tmp/bundle.tar.xz"
  rm -rf "$stage" && mkdir -p "$stage"
  split -b "${part_mib}M" -d -a 2 "$tmp/bundle.tar.xz" "$stage/part-"
  (cd "$tmp" && sha256sum bundle.tar.xz) > "$stage/SHA256"
  ls "$stage"/part-* | wc -l > "$stage/PARTS"
  echo "staged $(cat "$stage/PARTS") parts of ${part_mib} MiB in $stage for $(git rev-parse --short HEAD):"
  ls -la "$stage"
  exit 0
fi

# --- What runs where ---------------------------------------------------------
gpu=0
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
  gpu=1
  say "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i 0)"
else
  say "GPU: none (nvidia-smi finds no NVIDIA GPU on this machine)"
fi
dry=0
if [ "$gpu" = 0 ] && [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
  dry=1
  gpu=1
  say "DRY RUN: the GPU steps run with the _gpu copies on the CPU; nothing here is a GPU measurement"
fi

# Parts carried to this machine: gather, and unpack once all are here.
mkdir -p "$have"
if ls "$stage"/part-* > /dev/null 2>&1; then
  cp "$stage"/part-* "$stage/SHA256" "$stage/PARTS" "$have/" 2> /dev/null
fi
if [ -f "$have/SHA256" ] && [ ! -x "$have/bundle/bin/quiver" ]; then
  wanted="$(cat "$have/PARTS" 2> /dev/null || echo '?')"
  got="$(ls "$have"/part-* 2> /dev/null | wc -l)"
  if [ "$got" = "$wanted" ]; then
    cat "$have"/part-* > "$have/bundle.tar.xz"
    if (cd "$have" && sha256sum -c --quiet SHA256); then
      python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
        "$have/bundle.tar.xz" "$have" && rm -f "$have/bundle.tar.xz" "$have"/part-*
      say "bundle: unpacked (commit $(cat "$have/bundle/COMMIT"))"
    else
      say "bundle: the joined parts do not match SHA256; carry them again"
      rm -f "$have"/part-* "$have/bundle.tar.xz"
      finish 2
    fi
  else
    say "bundle: $got of $wanted parts have arrived ($(cd "$have" && ls part-* | tr '\n' ' ')); carry the others"
    skip "the whole check, until every part has arrived"
    finish 3
  fi
fi

if [ -x "$have/bundle/bin/quiver" ]; then
  bin="$have/bundle/bin"
  ortlib="$have/bundle/onnxruntime-gpu/libonnxruntime.so"
  say "binaries: the staged bundle (commit $(cat "$have/bundle/COMMIT"))"
elif command -v cargo > /dev/null; then
  cargo build --release --locked -p quiver-server -p quiver-loadtest -p quiver-torch || finish 1
  bin="${CARGO_TARGET_DIR:-$root/target}/release"
  ORT_PACKAGE=onnxruntime-gpu ORT_DEST="$root/.cache/onnxruntime-gpu" ./scripts/fetch-onnxruntime.sh || {
    say "cannot fetch onnxruntime-gpu (no internet?): stage it with 'scripts/gpu-check.sh stage' elsewhere"
    finish 1
  }
  ortlib="$root/.cache/onnxruntime-gpu/libonnxruntime.so"
  say "binaries: built here at $(git rev-parse --short HEAD)"
else
  say "no quiver build: run 'scripts/gpu-check.sh stage' on a machine with cargo and carry .gpu-stage/"
  finish 1
fi
export XDG_CACHE_HOME="$root/.cache/xdg"

# TensorRT: present when its runtime library is where quiver looks.
trt=0
if python3 - << 'PY'
import glob, os, sys, sysconfig
dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
hits = [g for d in dirs for g in glob.glob(os.path.join(d, "tensorrt_libs", "libnvinfer.so.*"))]
sys.exit(0 if hits else 1)
PY
then trt=1; elif ldconfig -p 2> /dev/null | grep -q 'libnvinfer.so.10'; then trt=1; fi
# LibTorch on CUDA: the python3's torch, if it sees a GPU.
torch_dir="$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__)) if torch.cuda.is_available() else None' 2> /dev/null | tail -n1)"
[ "$torch_dir" = None ] && torch_dir=""

# --- The repository: every ONNX demo model on the CPU and on GPU 0 -----------
repo="$out/repository"
rm -rf "$repo" && mkdir -p "$repo"
pairs=()
gpu_models=()
while read -r kind name copy; do
  case "$kind" in
    pair) pairs+=("$name:$copy") ;;
    gpu) gpu_models+=("$copy") ;;
  esac
done < <(python3 - "$root/models" "$repo" "$trt" "$([ -n "$torch_dir" ] && echo 1 || echo 0)" "$gpu" "$dry" << 'PY'
import os, re, shutil, sys
models, repo, trt, torch, gpu = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1", sys.argv[5] == "1"
on_gpu = "{ count: 1 kind: KIND_CPU }" if sys.argv[6] == "1" else "{ count: 1 kind: KIND_GPU gpus: [ 0 ] }"
def copy(src, dst, group, extra=""):
    shutil.copytree(os.path.join(models, src), os.path.join(repo, dst))
    path = os.path.join(repo, dst, "config.pbtxt")
    text = open(path).read() if os.path.exists(path) else f'name: "{src}"\n'
    text = re.sub(r'instance_group\s*\[[^\]]*\]', "", text)
    text = re.sub(r'name:\s*"[^"]*"', f'name: "{dst}"', text, count=1)
    open(path, "w").write(text + f"\ninstance_group [ {group} ]\n" + extra)
for m in sorted(os.listdir(models)):
    onnx = os.path.exists(os.path.join(models, m, "1", "model.onnx"))
    pt = os.path.exists(os.path.join(models, m, "1", "model.pt"))
    if not (onnx or (pt and torch)):
        continue
    copy(m, m, "{ count: 1 kind: KIND_CPU }")
    if gpu:
        copy(m, f"{m}_gpu", on_gpu)
        print("gpu", m, f"{m}_gpu"); print("pair", m, f"{m}_gpu")
    else:
        # No GPU: a second CPU copy checks the answer checker itself.
        copy(m, f"{m}_copy", "{ count: 1 kind: KIND_CPU }")
        print("pair", m, f"{m}_copy")
    if gpu and trt and onnx and m in ("conv_net", "fraud_mlp"):
        copy(m, f"{m}_trt", on_gpu,
             'optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "tensorrt" '
             'parameters { key: "precision_mode" value: "FP16" } } ] } }\n')
        print("gpu", m, f"{m}_trt"); print("pair", m, f"{m}_trt")
PY
)

# --- The server ----------------------------------------------------------------
log="$out/server.log"
args=(--model-repository "$repo" --model-control-mode explicit --host 127.0.0.1 --http-port 0 --grpc-port 0
  --metrics-port 0 --onnxruntime-lib "$ortlib" --log info --shutdown-drain-seconds 0 --metrics-interval-ms 500)
[ -n "$torch_dir" ] && args+=(--backend-config "pytorch,libtorch=$torch_dir")
"$bin/quiver" "${args[@]}" 2> "$log" &
server=$!
trap 'kill $server 2> /dev/null' EXIT
for _ in $(seq 150); do grep -q "metrics listening" "$log" && break; sleep 0.2; done
http="http://$(grep -o 'HTTP listening address=[^ ]*' "$log" | cut -d= -f2)"
grpc="http://$(grep -o 'gRPC listening address=[^ ]*' "$log" | cut -d= -f2)"
control() { # load|unload MODEL
  curl -sf -X POST "$http/v2/repository/models/$2/$1" -o /dev/null -w '' || {
    say "$1 of $2 failed: $(curl -s -X POST "$http/v2/repository/models/$2/$1")"
    return 1
  }
}
gpu_mib() {
  if [ "$dry" = 1 ]; then echo 0; return; fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | tr -d ' '
}

failures=0
for p in "${pairs[@]}"; do control load "${p%%:*}" || failures=$((failures + 1)); done

if [ "$gpu" = 0 ]; then
  say ""
  say "## Answers (no GPU: a second CPU copy of each model checks the checker)"
  copies=()
  for p in "${pairs[@]}"; do control load "${p#*:}" && copies+=("$p"); done
  python3 scripts/gpu-check-answers.py "$http" "${copies[@]}" | tee -a "$report" || failures=$((failures + 1))
  skip "every GPU step: answers on CUDA and TensorRT, CUDA shared memory, in-process and gRPC throughput on the GPU, GPU memory after unload (no NVIDIA GPU here)"
  [ "$trt" = 0 ] && skip "TensorRT: libnvinfer.so.10 not found (configured and unverified)"
  [ -z "$torch_dir" ] && skip "LibTorch on CUDA: the python3 here has no torch that sees a GPU"
  [ "$failures" -gt 0 ] && finish 1
  finish 0
fi

# --- On the GPU ------------------------------------------------------------------
[ "$trt" = 0 ] && skip "TensorRT: libnvinfer.so.10 not found, so the _trt models are configured and unverified"
[ -z "$torch_dir" ] && skip "LibTorch on CUDA: the python3 here has no torch that sees a GPU"
declare -A mem
base="$(gpu_mib)"
for m in "${gpu_models[@]}"; do
  before="$(gpu_mib)"
  start=$(date +%s.%N)
  if control load "$m"; then
    mem[$m]=$(($(gpu_mib) - before))
    say "loaded $m in $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s (warm-up included), +${mem[$m]} MiB"
  else
    failures=$((failures + 1))
  fi
done
ls "$repo"/*_trt/.quiver-trt-cache/1/* > /dev/null 2>&1 && say "TensorRT engines cached beside the models: $(ls "$repo"/*_trt/.quiver-trt-cache/1/ | wc -l) files"

say ""
say "## Answers: GPU against CPU"
python3 scripts/gpu-check-answers.py "$http" "${pairs[@]}" | tee -a "$report" || failures=$((failures + 1))

say ""
say "## CUDA shared memory (a client process's GPU buffers, REST)"
if [ "$dry" = 1 ]; then
  skip "CUDA shared memory: a dry run has no GPU buffers to share"
else
  python3 scripts/gpu-check-cuda-shm.py "$http" fraud_mlp fraud_mlp_gpu | tee -a "$report"
  case "${PIPESTATUS[0]}" in
    0) ;;
    2) skip "CUDA shared memory: this python3 finds no CUDA runtime (libcudart) to allocate GPU buffers with" ;;
    *) failures=$((failures + 1)) ;;
  esac
fi

say ""
say "## Throughput"
for m in conv_net_gpu fraud_mlp_gpu conv_net_trt fraud_mlp_trt; do
  [ -d "$repo/$m" ] || continue
  max="$(grep -o 'max_batch_size: *[0-9]*' "$repo/$m/config.pbtxt" | grep -o '[0-9]*$')"
  batch=$((max < 16 ? max : 16))
  "$bin/quiver-loadtest" --model "$m" --in-process "$repo/$m/1/model.onnx" --onnxruntime-lib "$ortlib" \
    --batch "$batch" --duration "$duration" --warmup 2 --json "$out/ceiling-$m.json" > /dev/null 2>> "$out/loadtest.log" ||
    { say "in-process $m failed (see loadtest.log)"; failures=$((failures + 1)); continue; }
  "$bin/quiver-loadtest" --model "$m" --http "$http" --grpc "$grpc" --protocols grpc --concurrency 1,16,64 \
    --threads 4 --connections 4 --server-pid "$server" --duration "$duration" --warmup 2 \
    --ceiling "$out/ceiling-$m.json" --json "$out/load-$m.json" > /dev/null 2>> "$out/loadtest.log" ||
    { say "gRPC load on $m failed (see loadtest.log)"; failures=$((failures + 1)); }
done
python3 - "$out" "$(declare -p mem)" << 'PY' | tee -a "$report"
import glob, json, os, re, sys
out, mem_decl = sys.argv[1], sys.argv[2]
mem = dict(re.findall(r'\[([^\]]+)\]="?(-?\d+)"?', mem_decl))
print("| model | provider | batch (in-process / c=16 avg) | in-process inf/s | c=1 inf/s, p99 ms | c=16 inf/s, p99 ms | c=64 inf/s, p99 ms | c=16 / in-process | GPU memory |")
print("|---|---|---|---|---|---|---|---|---|")
for ceiling in sorted(glob.glob(os.path.join(out, "ceiling-*.json"))):
    m = os.path.basename(ceiling)[len("ceiling-"):-len(".json")]
    c = json.load(open(ceiling))
    c = c[0] if isinstance(c, list) else c
    rows = {}
    path = os.path.join(out, f"load-{m}.json")
    if os.path.exists(path):
        rows = {r["concurrency"]: r for r in json.load(open(path))}
    cell = lambda r: f'{r["inferences_per_s"]:,.0f}, {r["p99_ms"]:.2f}' if r else "-"
    c16 = rows.get(16)
    ratio = f'{c16["inferences_per_s"] / c["inferences_per_s"]:.0%}' if c16 else "-"
    provider = "TensorRT (FP16)" if m.endswith("_trt") else "CUDA"
    print(f'| {m.rsplit("_", 1)[0]} | {provider} | {c["batch"]} / {c16["avg_batch"]:.1f} | {c["inferences_per_s"]:,.0f} | '
          f'{cell(rows.get(1))} | {cell(c16)} | {cell(rows.get(64))} | {ratio} | {mem.get(m, "?")} MiB |'
          if c16 else f'| {m} | {provider} | {c["batch"]} | {c["inferences_per_s"]:,.0f} | - | - | - | - | {mem.get(m, "?")} MiB |')
PY

say ""
say "## GPU memory after unloading"
for m in "${gpu_models[@]}"; do control unload "$m"; done
sleep 1
first="$(gpu_mib)"
for m in "${gpu_models[@]}"; do control load "$m"; done
for m in "${gpu_models[@]}"; do control unload "$m"; done
sleep 1
second="$(gpu_mib)"
say "before any GPU model: $base MiB; after unloading: $first MiB; after a second load and unload: $second MiB"
say "(what stays after the first unload is the CUDA context of the process and the libraries' handles)"
if [ $((second - first)) -gt 64 ]; then
  say "FAIL: GPU memory grew by $((second - first)) MiB over one load/unload cycle"
  failures=$((failures + 1))
fi
kill "$server" 2> /dev/null
wait "$server" 2> /dev/null
[ "$dry" = 1 ] && skip "every GPU measurement: this was a dry run on the CPU"
say ""
say "failures: $failures"
[ "$failures" -gt 0 ] && finish 1
finish 0

#!/usr/bin/env bash
# Builds quiver's image and tests it as a platform would run it:
#   1. build the image (Dockerfile) with Docker if a daemon answers, else with
#      Podman (installed with apt-get when missing); report build time and size;
#   2. run it with the demo repository mounted read-only, check it runs as
#      uid 1000 and that its HEALTHCHECK passes;
#   3. run the tritonclient and KServe SDK suites against it over REST and gRPC;
#   4. send SIGTERM while clients keep requests in flight: no request may fail,
#      and the container must exit within its drain + grace time;
#   5. run KServe's kserve-tritonserver and Seldon Core 2's triton command lines
#      in the image, and Seldon's agent sequence (model folder written as
#      <model>_<version>, gRPC load, ready, infer, unload).
#
# Base images: where docker.io cannot be reached (this project's build
# machines), the script makes local ones and passes them as build arguments:
#   RUST_IMAGE     Debian bookworm + gcc + this machine's Rust toolchain
#   PYTHON_IMAGE   Debian bookworm + python3-pip (fetches ONNX Runtime's wheel)
#   RUNTIME_IMAGE  Debian bookworm, minbase (debootstrap from the apt mirror)
# Set them yourself to use other local images, e.g.
#   RUNTIME_IMAGE=localhost/debian:bookworm-slim scripts/container-test.sh
# WITH_LIBTORCH=1 builds and tests the image with LibTorch: every demo model,
# the TorchScript twins too.
# Needs root for apt-get and debootstrap when it must make them.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="$root/target/container-test"
mkdir -p "$out"
tag="${IMAGE:-localhost/quiver:test}"
[ "${WITH_LIBTORCH:-0}" = 1 ] && tag="${IMAGE:-localhost/quiver:test-torch}"
flags=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

# --- The engine ----------------------------------------------------------------
if command -v docker > /dev/null && docker info > /dev/null 2>&1; then
  engine=docker
  flags=()
else
  if ! command -v podman > /dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap
  fi
  engine=podman
  # This kind of machine needs runc (crun fails on hybrid cgroups).
  flags+=(--runtime runc)
fi
echo "engine: $engine"
run_flags=("${flags[@]}")
build_flags=("${flags[@]}")

# --- Base images -----------------------------------------------------------------
have_image() { $engine image exists "$1" 2> /dev/null || $engine image inspect "$1" > /dev/null 2>&1; }
debian_base() {
  have_image localhost/quiver-base:bookworm && return
  command -v debootstrap > /dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
  local mirror rootfs
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2> /dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d)/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$out/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  mkdir -p "$rootfs/var/lib/apt/lists/partial" "$rootfs/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2> /dev/null || true
  tar -C "$rootfs" -c . | $engine import --change 'CMD ["/bin/bash"]' - localhost/quiver-base:bookworm
  rm -rf "$(dirname "$rootfs")"
}
if [ -z "${RUNTIME_IMAGE:-}${RUST_IMAGE:-}${PYTHON_IMAGE:-}" ] && ! $engine pull -q docker.io/library/debian:bookworm-slim > /dev/null 2>&1; then
  echo "docker.io cannot be reached: making local base images"
  debian_base
  RUNTIME_IMAGE=localhost/quiver-base:bookworm
  if ! have_image localhost/quiver-python:bookworm; then
    # pip inside the build must trust what this machine trusts (a proxy's
    # CA, say): the host's extra CA certificates go in with python3-pip.
    ctx="$(mktemp -d)"
    mkdir -p "$ctx/ca"
    cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2> /dev/null || true
    printf '%s\n' 'FROM localhost/quiver-base:bookworm' \
      'COPY ca/ /usr/local/share/ca-certificates/' \
      'RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3-pip ca-certificates && update-ca-certificates && rm -rf /var/lib/apt/lists/*' \
      > "$ctx/Dockerfile"
    $engine build "${build_flags[@]}" -t localhost/quiver-python:bookworm "$ctx"
    rm -rf "$ctx"
  fi
  PYTHON_IMAGE=localhost/quiver-python:bookworm
  if ! have_image localhost/quiver-rust:bookworm; then
    toolchain="$(rustc --print sysroot)"
    ctx="$(mktemp -d)"
    cp -a "$toolchain" "$ctx/rust"
    rm -rf "$ctx/rust/share/doc" "$ctx/rust/lib/rustlib/src"
    printf '%s\n' 'FROM localhost/quiver-base:bookworm' \
      'RUN apt-get update -q && apt-get install -y -q --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*' \
      'COPY rust /usr/local/rust' \
      'ENV PATH=/usr/local/rust/bin:$PATH' > "$ctx/Dockerfile"
    $engine build "${build_flags[@]}" -t localhost/quiver-rust:bookworm "$ctx"
    rm -rf "$ctx"
  fi
  RUST_IMAGE=localhost/quiver-rust:bookworm
fi
with_libtorch="${WITH_LIBTORCH:-0}"
args=(--build-arg "WITH_LIBTORCH=$with_libtorch")
[ -n "${RUST_IMAGE:-}" ] && args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
[ -n "${PYTHON_IMAGE:-}" ] && args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
[ -n "${RUNTIME_IMAGE:-}" ] && args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")

# --- 1. Build --------------------------------------------------------------------
start=$(date +%s)
$engine build "${build_flags[@]}" "${args[@]}" -t "$tag" . 2>&1 | tee "$out/build.log" | tail -n 3
built=$(($(date +%s) - start))
size=$($engine image inspect "$tag" --format '{{.Size}}')
echo "image $tag: built in ${built} s, $((size / 1024 / 1024)) MiB"

# --- 2. Run ----------------------------------------------------------------------
cid=""
cleanup() { [ -n "$cid" ] && $engine rm -f "$cid" > /dev/null 2>&1 || true; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http=$(port) grpc=$(port) metrics=$(port)
# The demo models; without LibTorch in the image, not their TorchScript twins.
repo="$out/models"
rm -rf "$repo" && mkdir -p "$repo"
for m in "$root"/models/*; do
  case "$m" in *_pt) [ "$with_libtorch" = 1 ] && cp -r "$m" "$repo/" ;; *) cp -r "$m" "$repo/" ;; esac
done
chmod -R a+rX "$repo"
cid=$($engine run -d "${run_flags[@]}" -p "127.0.0.1:$http:8080" -p "127.0.0.1:$grpc:8081" -p "127.0.0.1:$metrics:8082" \
  -v "$repo:/models:ro" "$tag" --shutdown-drain-seconds=3 --shutdown-grace-seconds=10)
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$http/v2/health/ready" > /dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$http/v2/health/ready" > /dev/null || { $engine logs "$cid" | tail -20; echo "FAIL: not ready"; exit 1; }
uid=$($engine exec "$cid" id -u)
[ "$uid" = 1000 ] || { echo "FAIL: runs as uid $uid"; exit 1; }
echo "runs as uid $uid"
$engine exec "$cid" bash -c "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /v2/health/ready HTTP/1.0\r\n\r\n' >&3 && head -n1 <&3 | grep -q ' 200 '" ||
  { echo "FAIL: the HEALTHCHECK command fails"; exit 1; }
echo "HEALTHCHECK command passes"

# --- 3. Client suites ------------------------------------------------------------
./scripts/test.sh --venvs-only
export QUIVER_EXTERNAL="127.0.0.1:$http,$grpc,$metrics"
[ "$with_libtorch" = 1 ] || export QUIVER_ONNX_ONLY=1
(cd tests/python && "$root/.venv/tritonclient/bin/python" -m pytest -q -p no:cacheprovider test_tritonclient.py &&
  "$root/.venv/kserve/bin/python" -m pytest -q -p no:cacheprovider test_kserve.py)
unset QUIVER_EXTERNAL QUIVER_ONNX_ONLY

# --- 4. SIGTERM under load ---------------------------------------------------------
# A load balancer's view: a watcher polls readiness the way an endpoint
# controller does and takes the pod out of rotation 1 s after it turns false
# (quiver's drain, 3 s here, must outlast that); clients send new requests
# only while the pod is in rotation. Every request sent must succeed.
"$root/.venv/tritonclient/bin/python" - "$http" "$engine" "$cid" << 'PY'
import subprocess, sys, threading, time, urllib.request
import numpy as np
import tritonclient.http as httpclient
http, engine, cid = sys.argv[1:]
ok, failed, removed = [0], [], threading.Event()
def balancer():
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1)
        except Exception:
            time.sleep(1.0)
            removed.set()
            return
        time.sleep(0.05)
def client():
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{http}")
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    while not removed.is_set():
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(a); inputs[1].set_data_from_numpy(a)
        try:
            r = c.infer("add_sub", inputs)
            assert (r.as_numpy("OUTPUT0") == 2 * a).all()
            ok[0] += 1
        except Exception as e:
            failed.append(repr(e))
threads = [threading.Thread(target=client) for _ in range(8)] + [threading.Thread(target=balancer)]
for t in threads: t.start()
time.sleep(2)
before = ok[0]
start = time.time()
subprocess.run([engine, "kill", "--signal", "TERM", cid], check=True, capture_output=True)
code = subprocess.run([engine, "wait", cid], capture_output=True, text=True).stdout.strip()
took = time.time() - start
for t in threads: t.join()
print(f"SIGTERM under load: {before} answered before it, {ok[0] - before} after it (drain), "
      f"{len(failed)} failed, exit code {code} after {took:.1f} s")
if failed:
    print("\n".join(failed[:5])); sys.exit(1)
if took > 3 + 10 + 5 or code != "0":
    print("FAIL: did not exit cleanly within drain + grace"); sys.exit(1)
PY

# --- 5. Triton's command lines in the image ----------------------------------------
# KServe's kserve-tritonserver runtime: its command line, the model store
# where KServe mounts it.
kserve=$($engine run -d "${run_flags[@]}" -p "127.0.0.1:$http:8080" -p "127.0.0.1:$grpc:9000" \
  -v "$repo:/mnt/models:ro" --entrypoint tritonserver "$tag" \
  --model-store=/mnt/models --grpc-port=9000 --http-port=8080 --allow-grpc=true --allow-http=true)
cid="$kserve"
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$http/v2/health/ready" > /dev/null && break; sleep 0.5; done
curl -sf -X POST "http://127.0.0.1:$http/v2/models/add_sub/infer" -H 'Content-Type: application/json' \
  -d '{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]},{"name":"INPUT1","shape":[1,16],"datatype":"INT32","data":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]}' \
  > /dev/null || { $engine logs "$cid" | tail; echo "FAIL: KServe's tritonserver command line"; exit 1; }
echo "KServe's kserve-tritonserver command line: serving"
$engine rm -f "$cid" > /dev/null

# Seldon Core 2's triton ServerConfig: bash -c "tritonserver ..." with its
# env, a writable models folder the agent fills, then the agent's calls.
agent="$out/agent-models"
rm -rf "$agent" && mkdir -p "$agent" && chmod 777 "$agent"
cid=$($engine run -d "${run_flags[@]}" -p "127.0.0.1:$http:9000" -p "127.0.0.1:$grpc:9500" \
  -v "$agent:/mnt/agent/models" -e SERVER_HTTP_PORT=9000 -e SERVER_GRPC_PORT=9500 \
  -e SERVER_MODELS_DIR=/mnt/agent/models --entrypoint bash "$tag" \
  -c 'tritonserver --model-repository=$SERVER_MODELS_DIR --http-port=$SERVER_HTTP_PORT --grpc-port=$SERVER_GRPC_PORT --log-verbose=1 --model-control-mode=explicit --backend-config=python,shm-default-byte-size=16777216')
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$http/v2/health/live" > /dev/null && break; sleep 0.5; done
# The agent copies the model in as <model>_<version> and renames it in the config.
cp -r "$root/models/add_sub" "$agent/add_sub_1"
sed -i 's/^name: "add_sub"/name: "add_sub_1"/' "$agent/add_sub_1/config.pbtxt"
chmod -R a+rX "$agent"
"$root/.venv/tritonclient/bin/python" - "127.0.0.1:$grpc" << 'PY'
import sys
import numpy as np
import tritonclient.grpc as grpcclient
c = grpcclient.InferenceServerClient(url=sys.argv[1])
c.load_model("add_sub_1")
assert c.is_model_ready("add_sub_1")
a = np.arange(16, dtype=np.int32).reshape(1, 16)
inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
inputs[0].set_data_from_numpy(a); inputs[1].set_data_from_numpy(a)
assert (c.infer("add_sub_1", inputs).as_numpy("OUTPUT0") == 2 * a).all()
c.unload_model("add_sub_1")
assert not c.is_model_ready("add_sub_1")
print("Seldon Core 2's triton command line and agent sequence (load, ready, infer, unload): ok")
PY
$engine rm -f "$cid" > /dev/null
cid=""

echo "container test passed (image ${built} s to build, $((size / 1024 / 1024)) MiB)"

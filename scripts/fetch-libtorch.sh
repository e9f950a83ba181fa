#!/usr/bin/env bash
# Puts a CPU LibTorch where the build and quiver look for it by default
# (.cache/libtorch, with lib/ and include/), taken from the official `torch`
# wheel on PyPI: download.pytorch.org is not needed. The version is the one the
# `tch` release in Cargo.lock expects (tch 0.24 -> torch 2.11.0).
#
# From the wheel only libtorch_cpu, libtorch, libc10, libgomp and the headers
# are kept; libtorch_cpu.so also needs the CUDA runtime and CUPTI sonames even
# on CPU, which come from their own small wheels (the versions torch's
# cuda-toolkit pin names). About 450 MB of libraries, 60 MB of headers.
#   TORCH_VERSION  wheel version (default 2.11.0)
#   TORCH_CUDA     1: also keep libtorch_cuda.so and libc10_cuda.so, for KIND_GPU
#                  instances (the CUDA libraries themselves must then be on the
#                  machine, as on a GPU node with torch installed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="${TORCH_VERSION:-2.11.0}"
cuda="${TORCH_CUDA:-0}"
dest="$root/.cache/libtorch"
stamp="torch==$version cuda=$cuda"
if [ -e "$dest/lib/libtorch_cpu.so" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
# pip 23 finds the CUDA runtime wheels only when the older manylinux tags are
# allowed too.
platforms=()
for glibc in 28 27 26 25 24 17; do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
  "${platforms[@]}" \
  -d "$tmp" "torch==$version"
# The CUDA runtime and CUPTI versions torch was built against, from the
# wheel's own `cuda-toolkit==X` requirement and that package's extras.
toolkit="$(python3 - "$tmp" <<'PY'
import glob, re, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/torch-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
m = re.search(r"^Requires-Dist: cuda-toolkit\[[^\]]*\]==([0-9.]+)", text, re.M)
print(m.group(1) if m else "")
PY
)"
if [ -z "$toolkit" ]; then
  echo "fetch-libtorch: torch $version names no cuda-toolkit version" >&2
  exit 1
fi
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "cuda-toolkit==$toolkit"
read -r cudart cupti < <(python3 - "$tmp" <<'PY'
import glob, re, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/cuda_toolkit-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
def pin(pkg):
    return re.search(r"^Requires-Dist: %s==([0-9.]+)" % pkg, text, re.M).group(1).rstrip(".")
print(pin("nvidia-cuda-runtime"), pin("nvidia-cuda-cupti"))
PY
)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
  "${platforms[@]}" \
  -d "$tmp" "nvidia-cuda-runtime==$cudart.*" "nvidia-cuda-cupti==$cupti.*"
rm -rf "$dest"
mkdir -p "$dest/lib"
python3 - "$tmp" "$dest" "$cuda" <<'PY'
import glob, os, shutil, sys, zipfile
src, dest, cuda = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
keep = {"libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1"}
if cuda:
    keep |= {"libtorch_cuda.so", "libc10_cuda.so", "libtorch_cuda_linalg.so"}
def extract(z, name, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with z.open(name) as r, open(target, "wb") as w:
        shutil.copyfileobj(r, w, 1 << 20)
for wheel in glob.glob(os.path.join(src, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if name.startswith("torch/lib/") and base in keep:
                extract(z, name, os.path.join(dest, "lib", base))
            elif name.startswith("torch/include/") and not name.endswith("/"):
                extract(z, name, os.path.join(dest, "include", name[len("torch/include/"):]))
            elif name.startswith("nvidia/") and "/lib/" in name and (
                base.startswith("libcudart.so.") or base.startswith("libcupti.so.")
            ):
                extract(z, name, os.path.join(dest, "lib", base))
PY
# torch-sys checks the headers against this file before it builds.
echo "$version" > "$dest/build-version"
echo "$stamp" > "$dest/VERSION"
echo "libtorch: $dest ($(du -sh "$dest/lib" | cut -f1) of libraries)"

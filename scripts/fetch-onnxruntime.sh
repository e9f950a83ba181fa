#!/usr/bin/env bash
# Puts ONNX Runtime's shared library where quiver looks for it by default
# (.cache/onnxruntime/libonnxruntime.so under the project root), taken from the
# official `onnxruntime` wheel on PyPI. Nothing is downloaded at build time:
# quiver loads the library at start-up (ort's `load-dynamic`).
#   ORT_VERSION   wheel version (default 1.31.1)
#   ORT_PACKAGE   onnxruntime (CPU) or onnxruntime-gpu (adds the CUDA and
#                 TensorRT providers: libonnxruntime_providers_{cuda,tensorrt}.so
#                 beside libonnxruntime.so; 1.31 needs CUDA 13 and cuDNN 9, see
#                 the README's GPU section)
#   ORT_DEST      folder to put it in (default .cache/onnxruntime)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="${ORT_VERSION:-1.31.1}"
package="${ORT_PACKAGE:-onnxruntime}"
dest="${ORT_DEST:-$root/.cache/onnxruntime}"
if [ -e "$dest/libonnxruntime.so" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$package==$version" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$package==$version"
rm -f "$dest"/libonnxruntime*.so*
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(src, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if "/capi/" in name and base.startswith("libonnxruntime") and ".so" in base:
            with open(os.path.join(dest, base), "wb") as f:
                f.write(z.read(name))
PY
lib="$(ls "$dest"/libonnxruntime.so.* | head -n1)"
ln -sf "$(basename "$lib")" "$dest/libonnxruntime.so"
echo "$package==$version" > "$dest/VERSION"
echo "onnxruntime: $dest/libonnxruntime.so -> $(basename "$lib")"

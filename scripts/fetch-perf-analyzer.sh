#!/usr/bin/env bash
# Puts Triton's perf_analyzer in .cache/perf_analyzer and writes a wrapper,
# .cache/perf_analyzer/run, that runs it. PyPI has it only as a
# manylinux_2_38 wheel, newer than Debian bookworm's glibc: it runs through
# Debian trixie's loader and libraries, unpacked beside it (the host's
# packages are not touched). Its shared memory modes open the CUDA runtime
# even for system shared memory, so NVIDIA's libcudart wheel is unpacked
# there too (it loads without a GPU).
#   PA_VERSION   perf-analyzer version (default 2.60.0)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="${PA_VERSION:-2.60.0}"
dest="$root/.cache/perf_analyzer"
if [ -x "$dest/run" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
rm -rf "$dest"
mkdir -p "$dest/apt/lists/partial" "$dest/apt/archives/partial" "$dest/trixie" "$dest/wheels"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_38_x86_64 -d "$dest/wheels" "perf-analyzer==$version"
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$dest/wheels" "nvidia-cuda-runtime-cu12==12.9.79"
python3 - "$dest" <<'PY'
import glob, os, sys, zipfile
dest = sys.argv[1]
for wheel in glob.glob(os.path.join(dest, "wheels", "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if name.endswith("bin/perf_analyzer") or base.startswith("libcudart.so"):
                target = os.path.join(dest, "bin" if base == "perf_analyzer" else "lib", base)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with z.open(name) as src, open(target, "wb") as out:
                    out.write(src.read())
                os.chmod(target, 0o755)
PY
ln -sf "$(basename "$(ls "$dest"/lib/libcudart.so.*)")" "$dest/lib/libcudart.so"
mirror="$(grep -rhoE 'https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 | tr -d ' ' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$dest/apt/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$dest/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$dest/apt/lists" -o "Dir::Cache=$dest/apt" -o "Dir::Cache::Archives=$dest/apt/archives"
  -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" -qq update
(cd "$dest/apt/archives" && apt-get "${apt_opts[@]}" -qq download libc6 libstdc++6 libgcc-s1 libssl3t64 zlib1g)
for deb in "$dest"/apt/archives/*.deb; do
  dpkg -x "$deb" "$dest/trixie"
done
rm -rf "$dest/apt" "$dest/wheels"
cat > "$dest/run" <<RUN
#!/bin/sh
lib="$dest/trixie/usr/lib/x86_64-linux-gnu"
exec "\$lib/ld-linux-x86-64.so.2" --library-path "\$lib:$dest/lib" "$dest/bin/perf_analyzer" "\$@"
RUN
chmod +x "$dest/run"
echo "$version" > "$dest/VERSION"

#!/usr/bin/env python3
"""Checks Triton's CUDA shared memory extension on a GPU.

Usage: gpu-check-cuda-shm.py HTTP_BASE REFERENCE CANDIDATE

As a client in another process would: allocates an input and an output
region on GPU 0 with the CUDA runtime (ctypes, no other package), exports
them with cudaIpcGetMemHandle, registers them over REST
(/v2/cudasharedmemory), runs CANDIDATE with its first input read from one
region and its first output written into the other, reads that output back
from the device and compares it with REFERENCE's answer to the same input
sent as JSON. Then the misuses: a handle of zeros, a region larger than its
allocation, an input past the region's end, an output region too small;
each must be refused with a 400 while the server keeps answering. Prints one
line per check; exits 1 if any fails, 2 if there is no CUDA runtime or GPU.
"""
import base64
import ctypes
import glob
import json
import os
import struct
import sys
import urllib.request

RTOL, ATOL = 2e-2, 2e-3


def cudart():
    dirs = [os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64"), "/usr/local/cuda/lib64"]
    for p in sys.path:
        dirs += glob.glob(os.path.join(p, "nvidia", "cuda_runtime", "lib"))
    names = [f for d in dirs for f in sorted(glob.glob(os.path.join(d, "libcudart.so.*")), reverse=True)]
    for name in names + ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def call(url, body=None, expect=200):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    if status != expect:
        raise RuntimeError(f"{url}: expected {expect}, got {status}: {text.decode(errors='replace')}")
    return json.loads(text) if text else None


def main():
    base, reference, candidate = sys.argv[1:4]
    rt = cudart()
    count = ctypes.c_int(0)
    if rt is None or rt.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value == 0:
        print("no CUDA runtime or no GPU: CUDA shared memory not checked")
        return 2
    rt.cudaSetDevice(0)

    def check(code, what):
        if code != 0:
            raise RuntimeError(f"{what}: CUDA error {code}")

    def alloc(n):
        p = ctypes.c_void_p()
        check(rt.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(n)), "cudaMalloc")
        handle = ctypes.create_string_buffer(64)
        check(rt.cudaIpcGetMemHandle(handle, p), "cudaIpcGetMemHandle")
        return p, base64.b64encode(handle.raw).decode()

    meta = call(f"{base}/v2/models/{reference}")
    inp, out = meta["inputs"][0], meta["outputs"][0]
    if inp["datatype"] != "FP32" or out["datatype"] != "FP32":
        print(f"{reference}: the check needs an FP32 first input and output")
        return 1
    shape = [2 if d == -1 else d for d in inp["shape"]]
    n = 1
    for d in shape:
        n *= d
    values = [((i * 37) % 101) / 101.0 - 0.5 for i in range(n)]
    raw = struct.pack(f"<{n}f", *values)
    want = call(f"{base}/v2/models/{reference}/infer",
                {"inputs": [{"name": inp["name"], "datatype": "FP32", "shape": shape, "data": values}],
                 "outputs": [{"name": out["name"]}]})["outputs"][0]
    out_bytes = 4 * len(want["data"])

    in_ptr, in_handle = alloc(len(raw))
    out_ptr, out_handle = alloc(out_bytes)
    check(rt.cudaMemcpy(in_ptr, raw, ctypes.c_size_t(len(raw)), 1), "cudaMemcpy H2D")
    failures = 0

    def step(name, fn):
        nonlocal failures
        try:
            fn()
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failures += 1
            print(f"FAIL {name}: {e}")

    shm = f"{base}/v2/cudasharedmemory"

    def register():
        call(f"{shm}/region/cin/register", {"raw_handle": {"b64": in_handle}, "device_id": 0, "byte_size": len(raw)})
        call(f"{shm}/region/cout/register", {"raw_handle": {"b64": out_handle}, "device_id": 0, "byte_size": out_bytes})
        listed = {r["name"]: r for r in call(f"{shm}/status")}
        assert listed["cin"]["byte_size"] == len(raw) and listed["cout"]["device_id"] == 0, listed

    def infer(in_size=len(raw), in_offset=0, out_size=out_bytes, expect=200):
        return call(f"{base}/v2/models/{candidate}/infer", {
            "inputs": [{"name": inp["name"], "datatype": "FP32", "shape": shape, "parameters": {
                "shared_memory_region": "cin", "shared_memory_byte_size": in_size,
                "shared_memory_offset": in_offset}}],
            "outputs": [{"name": out["name"], "parameters": {
                "shared_memory_region": "cout", "shared_memory_byte_size": out_size}}]}, expect)

    def answer_in_device_memory():
        got = infer()["outputs"][0]
        assert "data" not in got and got["name"] == out["name"], got
        host = ctypes.create_string_buffer(out_bytes)
        check(rt.cudaMemcpy(host, out_ptr, ctypes.c_size_t(out_bytes), 2), "cudaMemcpy D2H")
        answer = struct.unpack(f"<{len(want['data'])}f", host.raw)
        bad = [(a, b) for a, b in zip(answer, want["data"]) if abs(a - b) > ATOL + RTOL * abs(b)]
        assert not bad, f"{len(bad)} values differ from {reference}'s, first {bad[0]}"

    def misuses():
        zeros = base64.b64encode(bytes(64)).decode()
        e = call(f"{shm}/region/bad/register", {"raw_handle": {"b64": zeros}, "device_id": 0, "byte_size": 64}, 400)
        assert "cudaIpcOpenMemHandle" in e["error"], e
        small_ptr, small_handle = alloc(256)
        e = call(f"{shm}/region/big/register",
                 {"raw_handle": {"b64": small_handle}, "device_id": 0, "byte_size": 1 << 40}, 400)
        rt.cudaFree(small_ptr)
        assert "larger than the exported allocation" in e["error"], e
        e = infer(in_offset=4, expect=400)
        assert "past the end of region 'cin'" in e["error"], e
        e = infer(out_size=4, expect=400)
        assert "output" in e["error"], e
        answer_in_device_memory()

    def unregister():
        call(f"{shm}/region/cin/unregister", {})
        call(f"{shm}/unregister", {})
        assert call(f"{shm}/status") == []

    step("register two regions exported from GPU 0", register)
    step(f"{candidate} reads its input from and writes its answer to GPU memory, equal to {reference}'s",
         answer_in_device_memory)
    step("misuses are refused with 400 and the server keeps answering", misuses)
    step("unregistered", unregister)
    rt.cudaFree(in_ptr)
    rt.cudaFree(out_ptr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Closed-loop tritonclient load on one model input, the tensor either sent
in the request (plain) or placed once in system shared memory and named by
each request (shm), the output likewise. Prints requests per second.

    shm_client.py grpc|http ADDR MODEL INPUT OUTPUT plain|shm CONCURRENCY SECONDS

Each client thread has its own input and output regions (as a
pre-processing sidecar would), written before the clock starts. The input
is FP32 with the model's metadata shape (a leading -1 becomes 1)."""
import sys
import threading
import time
import uuid

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm


def main():
    protocol, addr, model, inp, out, mode, concurrency, seconds = sys.argv[1:]
    lib = grpcclient if protocol == "grpc" else httpclient
    addr = addr.removeprefix("http://")
    meta = lib.InferenceServerClient(addr).get_model_metadata(model, **({"as_json": True} if protocol == "grpc" else {}))
    spec = next(i for i in meta["inputs"] if i["name"] == inp)
    shape = [1 if int(d) < 0 else int(d) for d in spec["shape"]]
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out_bytes = 1 << 20
    stop, counts, errors = threading.Event(), [], []
    ready = threading.Barrier(int(concurrency) + 1)

    def worker(n):
        client = lib.InferenceServerClient(addr, **({"connection_timeout": 120.0, "network_timeout": 120.0}
                                                   if protocol == "http" else {}))
        x = lib.InferInput(inp, shape, "FP32")
        y = lib.InferRequestedOutput(out)
        regions = []
        if mode == "shm":
            tag = uuid.uuid4().hex[:8]
            for role, size in (("in", data.nbytes), ("out", out_bytes)):
                name = f"bench_{role}_{tag}_{n}"
                handle = shm.create_shared_memory_region(name, "/" + name, size)
                client.register_system_shared_memory(name, "/" + name, size)
                regions.append((name, handle))
            shm.set_shared_memory_region(regions[0][1], [data])
            x.set_shared_memory(regions[0][0], data.nbytes)
            y.set_shared_memory(regions[1][0], out_bytes)
        else:
            x.set_data_from_numpy(data)
        done = 0
        ready.wait()
        try:
            while not stop.is_set():
                client.infer(model, [x], outputs=[y])
                done += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(str(e))
        counts.append(done)
        for name, handle in regions:
            client.unregister_system_shared_memory(name)
            shm.destroy_shared_memory_region(handle)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(int(concurrency))]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(float(seconds))
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        sys.exit(f"errors: {errors[:3]}")
    print(f"{protocol} {mode} c{concurrency}: {sum(counts) / elapsed:.1f} req/s "
          f"({data.nbytes / 1e6:.1f} MB input)")


if __name__ == "__main__":
    main()

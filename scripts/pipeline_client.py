#!/usr/bin/env python3
"""One client at a time (concurrency 1) over gRPC with tritonclient: either
one call to a pipeline model (an ensemble, or the fused graph), or the same
pipeline as the client calling each step model in turn, each answer sent on
as the next call's input. Prints the pipelines per second and the latency
percentiles.

    pipeline_client.py ADDR SECONDS MODEL:INPUT:OUTPUT [MODEL:INPUT:OUTPUT ...]

One MODEL: one call per pipeline; several: the steps in turn. ADDR is the
gRPC address, or with PROTOCOL=http-json the HTTP address (tritonclient.http
with JSON tensors, as a client without the binary extension sends them)."""
import os
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def main():
    addr, seconds, *steps = sys.argv[1:]
    steps = [s.split(":") for s in steps]
    json_mode = os.environ.get("PROTOCOL") == "http-json"
    lib = httpclient if json_mode else grpcclient
    client = lib.InferenceServerClient(addr.removeprefix("http://"))
    meta = client.get_model_metadata(steps[0][0]) if json_mode else client.get_model_metadata(steps[0][0], as_json=True)
    first = next(i for i in meta["inputs"] if i["name"] == steps[0][1])
    shape = [1] + [int(d) for d in first["shape"][1:]]
    rng = np.random.default_rng(0)
    if first["datatype"] == "UINT8":
        data = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        data = rng.standard_normal(shape).astype(np.float32)

    def pipeline():
        value, datatype = data, first["datatype"]
        for model, inp, out in steps:
            x = lib.InferInput(inp, list(value.shape), datatype)
            if json_mode:
                x.set_data_from_numpy(value, binary_data=False)
                asked = lib.InferRequestedOutput(out, binary_data=False)
            else:
                x.set_data_from_numpy(value)
                asked = lib.InferRequestedOutput(out)
            value = client.infer(model, [x], outputs=[asked]).as_numpy(out)
            datatype = "FP32"
        return value

    for _ in range(20):
        pipeline()
    latencies = []
    end = time.perf_counter() + float(seconds)
    while (start := time.perf_counter()) < end:
        pipeline()
        latencies.append(time.perf_counter() - start)
    lat = np.array(latencies) * 1000
    name = "+".join(s[0] for s in steps) + (" (HTTP JSON)" if json_mode else " (gRPC)")
    print(f"{name}: {len(lat) / float(seconds):.1f}/s p50 {np.percentile(lat, 50):.3f} ms "
          f"p99 {np.percentile(lat, 99):.3f} ms ({len(lat)} pipelines)")


if __name__ == "__main__":
    main()

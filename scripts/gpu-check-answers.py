#!/usr/bin/env python3
"""Checks that a model served on a GPU answers as the same model on the CPU.

Usage: gpu-check-answers.py HTTP_BASE REFERENCE:CANDIDATE ...

For each pair, reads the reference model's metadata, builds deterministic
inputs for every input (batch 2 where the model batches, variable dimensions
as 3), sends the same request to both models over the V2 REST API and compares
every output: integers, booleans and strings exactly; floating point within
a tolerance that covers FP16 and TF32 arithmetic (|a - b| <= 2e-3 + 2e-2 |a|).
Standard library only, so it runs on any machine with Python 3.
Prints one line per pair and exits 1 if any pair differs.
"""
import json
import sys
import urllib.request

RTOL, ATOL = 2e-2, 2e-3
FLOATS = {"FP16", "BF16", "FP32", "FP64"}


def call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url}: {e.code} {e.read().decode(errors='replace')}") from None


def values(datatype, n, seed):
    x = (seed * 2654435761) % 2**32
    out = []
    for _ in range(n):
        x = (1103515245 * x + 12345) % 2**31
        u = x / 2**31
        if datatype in FLOATS:
            out.append(round(2 * u - 1, 3))
        elif datatype == "BOOL":
            out.append(u < 0.5)
        elif datatype == "BYTES":
            out.append(f"s{int(u * 1000)}")
        elif datatype.startswith("UINT"):
            out.append(int(u * 100))
        else:
            out.append(int(u * 200) - 100)
    return out


def request(meta):
    inputs = []
    for i, t in enumerate(meta["inputs"]):
        shape = [d if d >= 0 else (2 if j == 0 else 3) for j, d in enumerate(t["shape"])]
        n = 1
        for d in shape:
            n *= d
        inputs.append({"name": t["name"], "shape": shape, "datatype": t["datatype"],
                       "data": values(t["datatype"], n, i + 1)})
    return {"inputs": inputs}


def close(a, b, datatype):
    # A non-finite float is JSON's null: it must be null on both sides (a
    # model such as calibrate takes the log of the random inputs).
    if datatype not in FLOATS or a is None or b is None:
        return a == b
    return abs(a - b) <= ATOL + RTOL * abs(a)


def compare(http, reference, candidate):
    meta = call(f"{http}/v2/models/{reference}")
    body = request(meta)
    want = {o["name"]: o for o in call(f"{http}/v2/models/{reference}/infer", body)["outputs"]}
    got = {o["name"]: o for o in call(f"{http}/v2/models/{candidate}/infer", body)["outputs"]}
    if set(want) != set(got):
        return f"outputs {sorted(got)} instead of {sorted(want)}"
    worst = 0.0
    for name, w in want.items():
        g = got[name]
        if w["shape"] != g["shape"] or w["datatype"] != g["datatype"]:
            return f"output {name}: {g['datatype']}{g['shape']} instead of {w['datatype']}{w['shape']}"
        for k, (a, b) in enumerate(zip(w["data"], g["data"])):
            if not close(a, b, w["datatype"]):
                return f"output {name}[{k}]: {b} instead of {a}"
            if w["datatype"] in FLOATS and a is not None:
                worst = max(worst, abs(a - b))
    return f"ok ({len(want)} outputs, max |diff| {worst:.2g})"


def main():
    http, pairs = sys.argv[1], sys.argv[2:]
    failed = 0
    for pair in pairs:
        reference, candidate = pair.split(":")
        try:
            verdict = compare(http, reference, candidate)
        except Exception as e:  # a failed call is a failed check, reported
            verdict = f"error: {e}"
        if not verdict.startswith("ok"):
            failed += 1
        print(f"answers {candidate:<24} vs {reference:<20} {verdict}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""The golden inputs and outputs of the demo models (models/golden.json)."""
import json
import os

import ml_dtypes
import numpy as np

from quiver_server import MODELS

with open(os.path.join(MODELS, "golden.json")) as f:
    GOLDEN = json.load(f)
# A server without LibTorch (the default image, scripts/container-test.sh)
# serves the ONNX models only.
if os.environ.get("QUIVER_ONNX_ONLY") == "1":
    GOLDEN = {m: case for m, case in GOLDEN.items() if not m.endswith("_pt")}

NP = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_, "BF16": ml_dtypes.bfloat16,  # what tritonclient >= r26.06 takes
}


def array(tensor):
    """A golden tensor as the numpy array a client would send or receive."""
    if tensor["datatype"] == "BYTES":
        data = [s.encode() for s in tensor["data"]]
    else:
        data = tensor["data"]
    return np.array(data, dtype=NP[tensor["datatype"]]).reshape(tensor["shape"])


def assert_matches(expected, actual):
    """Compares a received array with the golden tensor, with a tolerance for floats."""
    want = array(expected)
    assert actual is not None, f"output {expected['name']} missing"
    assert list(actual.shape) == expected["shape"], (expected["name"], actual.shape)
    if expected["datatype"] == "BYTES":
        got = [x if isinstance(x, bytes) else str(x).encode() for x in actual.reshape(-1)]
        assert got == list(want.reshape(-1)), expected["name"]
    elif expected["datatype"] in ("FP16", "BF16"):
        np.testing.assert_allclose(actual.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=1e-3)
    elif expected["datatype"] in ("FP32", "FP64"):
        np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(actual, want)

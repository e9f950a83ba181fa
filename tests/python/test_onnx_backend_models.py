"""Models that a default warm-up on zeros cannot run still load and serve,
as in Triton (which runs no warm-up it was not given): ONNX's own backend
test models of `Expand`, whose INT64 `shape` input of zeros is "invalid
expand shape". Each is served from a repository holding only its
model.onnx (no config.pbtxt) and asked through tritonclient, over HTTP and
gRPC, with the inputs of its test_data_set_0; the answers are compared
with the reference outputs ONNX ships beside them."""
import glob
import os
import shutil
import tempfile

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import numpy_helper
from tritonclient.utils import np_to_triton_dtype

from quiver_server import QuiverServer

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
CASES = sorted(
    d for d in glob.glob(os.path.join(DATA, "*", "test_expand*"))
    if not d.endswith("_expanded")
)
NAMES = [os.path.basename(d) for d in CASES]


def tensors(case, prefix):
    files = sorted(glob.glob(os.path.join(case, "test_data_set_0", f"{prefix}_*.pb")))
    out = []
    for f in files:
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            t.ParseFromString(fh.read())
        out.append(numpy_helper.to_array(t))
    return out


def graph_inputs(case):
    graph = onnx.load(os.path.join(case, "model.onnx")).graph
    initialized = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initialized], [o.name for o in graph.output]


@pytest.fixture(scope="module")
def expand_server():
    repo = tempfile.mkdtemp(prefix="quiver-expand-")
    for case, name in zip(CASES, NAMES):
        os.makedirs(os.path.join(repo, name, "1"))
        shutil.copy(os.path.join(case, "model.onnx"), os.path.join(repo, name, "1", "model.onnx"))
    server = QuiverServer(repository=repo)
    yield server
    assert server.alive(), "quiver exited during the tests"
    server.stop()
    shutil.rmtree(repo, ignore_errors=True)


def test_the_expand_models_are_found():
    # ONNX 1.19 ships two node tests and four "simple" shape models.
    assert len(CASES) >= 4, CASES


@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_expand_models_load_and_answer_like_onnx_reference_outputs(expand_server, case):
    name = os.path.basename(case)
    http = httpclient.InferenceServerClient(url=expand_server.http)
    grpc = grpcclient.InferenceServerClient(url=expand_server.grpc)
    assert http.is_model_ready(name), http.get_model_repository_index()
    input_names, output_names = graph_inputs(case)
    inputs, expected = tensors(case, "input"), tensors(case, "output")
    assert len(inputs) == len(input_names) and len(expected) == len(output_names)

    def build(module):
        built = []
        for n, x in zip(input_names, inputs):
            i = module.InferInput(n, list(x.shape), np_to_triton_dtype(x.dtype))
            i.set_data_from_numpy(x)
            built.append(i)
        return built

    for client, module in ((http, httpclient), (grpc, grpcclient)):
        result = client.infer(name, build(module))
        for n, want in zip(output_names, expected):
            got = result.as_numpy(n)
            assert got.shape == want.shape, (n, got.shape, want.shape)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)

"""Triton's classification extension against the real server, with
tritonclient's own `class_count` (HTTP and gRPC): the top k per batch row
as "value:index:label" BYTES, labels from the output's label_filename; a
request that cannot be classified is refused naming the output."""
import os
import shutil
import tempfile

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from quiver_server import MODELS, QuiverServer

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse"]  # 8 of 10 classes


@pytest.fixture(scope="module")
def quiver():
    repo = os.path.join(tempfile.mkdtemp(prefix="quiver-class-"), "repo")
    for m in ("conv_net", "add_sub", "text_greet"):
        shutil.copytree(os.path.join(MODELS, m), os.path.join(repo, m))
    config = os.path.join(repo, "conv_net", "config.pbtxt")
    text = open(config).read().replace('dims: [ 10 ] }', 'dims: [ 10 ] label_filename: "labels.txt" }')
    assert "label_filename" in text
    open(config, "w").write(text)
    open(os.path.join(repo, "conv_net", "labels.txt"), "w").write("\n".join(LABELS) + "\n")
    s = QuiverServer(repository=repo)
    yield s
    assert s.alive()
    s.stop()


def strings(array):
    """BYTES answers as lists of str (JSON gives str, binary data bytes)."""
    return [[s.decode() if isinstance(s, bytes) else s for s in row] for row in array]


def expected(probs, k, labels=()):
    """What Triton answers: per row, the k highest as value:index[:label]."""
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([f"{row[i]:.6f}:{i}" + (f":{labels[i]}" if i < len(labels) else "") for i in order])
    return out


def test_top_k_with_labels_over_http_and_grpc_equals_the_raw_output_sorted(quiver):
    image = np.random.default_rng(7).random((3, 3, 64, 64), dtype=np.float32)
    h = httpclient.InferenceServerClient(quiver.http)
    g = grpcclient.InferenceServerClient(quiver.grpc)
    x = httpclient.InferInput("image", list(image.shape), "FP32")
    x.set_data_from_numpy(image)
    raw = h.infer("conv_net", [x]).as_numpy("probabilities")
    want = expected(raw, 4, LABELS)

    for binary in (False, True):
        out = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=4)
        got = h.infer("conv_net", [x], outputs=[out]).as_numpy("probabilities")
        assert got.shape == (3, 4)
        assert strings(got) == want

    gx = grpcclient.InferInput("image", list(image.shape), "FP32")
    gx.set_data_from_numpy(image)
    got = g.infer("conv_net", [gx], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=4)])
    got = got.as_numpy("probabilities")
    assert got.shape == (3, 4)
    assert strings(got) == want

    # k past the row's width gives the row; classes 8 and 9 have no label line.
    out = httpclient.InferRequestedOutput("probabilities", class_count=50)
    got = h.infer("conv_net", [x], outputs=[out]).as_numpy("probabilities")
    assert got.shape == (3, 10)
    assert strings(got) == expected(raw, 10, LABELS)


def test_integer_outputs_without_labels(quiver):
    a = np.array([[5, -3, 9, 0] + [1] * 12], dtype=np.int32)
    b = np.zeros((1, 16), dtype=np.int32)
    h = httpclient.InferenceServerClient(quiver.http)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", class_count=2), httpclient.InferRequestedOutput("OUTPUT1")]
    r = h.infer("add_sub", inputs, outputs=outputs)
    assert strings(r.as_numpy("OUTPUT0"))[0] == ["9:2", "5:0"]
    # The output asked for without classification is the plain tensor.
    assert (r.as_numpy("OUTPUT1") == a - b).all()


def test_what_cannot_be_classified_is_refused_naming_the_output(quiver):
    url = f"http://{quiver.http}/v2/models"
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
                       {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16}]}
    for k in (0, -2, "three", 1.5):
        r = requests.post(f"{url}/add_sub/infer", timeout=10,
                          json=dict(body, outputs=[{"name": "OUTPUT0", "parameters": {"classification": k}}]))
        assert r.status_code == 400 and "OUTPUT0" in r.json()["error"] and "classification" in r.json()["error"], r.text
    # A BYTES output has no order to rank.
    meta = requests.get(f"{url}/text_greet", timeout=10).json()
    inp, out = meta["inputs"][0], meta["outputs"][0]
    shape = [1 if d == -1 else d for d in inp["shape"]]
    r = requests.post(f"{url}/text_greet/infer", timeout=10, json={
        "inputs": [{"name": inp["name"], "shape": shape, "datatype": inp["datatype"], "data": ["ada"] * int(np.prod(shape))}],
        "outputs": [{"name": out["name"], "parameters": {"classification": 1}}]})
    assert r.status_code == 400 and out["name"] in r.json()["error"] and "BYTES" in r.json()["error"], r.text
    # The same over gRPC.
    g = grpcclient.InferenceServerClient(quiver.grpc)
    gi = grpcclient.InferInput(inp["name"], shape, "BYTES")
    gi.set_data_from_numpy(np.array(["ada"] * int(np.prod(shape)), dtype=object).reshape(shape))
    with pytest.raises(InferenceServerException) as e:
        g.infer("text_greet", [gi], outputs=[grpcclient.InferRequestedOutput(out["name"], class_count=1)])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and out["name"] in e.value.message()

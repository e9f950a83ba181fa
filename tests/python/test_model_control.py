"""Model control with tritonclient, unchanged: the sequence Seldon Core 2's
agent sends (load by name, poll ModelReady, infer, unload), over gRPC and
HTTP, a hot swap to a new version, a load with Triton's `config` and `file:`
parameters, and the refusal outside explicit mode."""
import json
import os
import shutil
import struct
import tempfile
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from quiver_server import MODELS, ROOT, QuiverServer

TEMPLATE_K = struct.pack("<f", 12345.678)
SCALE_CONFIG = """
name: "{name}"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
"""
X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def scale_model(k):
    """tests/fixtures/scale.onnx computing y = x * k."""
    with open(os.path.join(ROOT, "tests", "fixtures", "scale.onnx"), "rb") as f:
        data = f.read()
    assert data.count(TEMPLATE_K) == 1
    return data.replace(TEMPLATE_K, struct.pack("<f", k))


def write_version(repo, name, version, k):
    d = os.path.join(repo, name, str(version))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(scale_model(k))


@pytest.fixture(scope="module")
def repo():
    d = tempfile.mkdtemp(prefix="quiver-control-")
    # Seldon Core 2 names a model's folder "<model>_<version>".
    for name in ("iris_1", "iris_2"):
        os.makedirs(os.path.join(d, name))
        with open(os.path.join(d, name, "config.pbtxt"), "w") as f:
            f.write(SCALE_CONFIG.format(name=name))
        write_version(d, name, 1, 2.0)
    shutil.copytree(os.path.join(MODELS, "add_sub"), os.path.join(d, "add_sub"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def explicit(repo):
    s = QuiverServer(repo, ["--model-control-mode", "explicit", "--load-model", "add_sub"])
    yield s
    assert s.alive(), "quiver exited during the tests"
    s.stop()


def infer(client, module, name):
    inp = module.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(X)
    r = client.infer(name, [inp])
    return r.get_response()["model_version"] if module is httpclient else r.get_response().model_version, r.as_numpy("y")


def wait_ready(client, name, timeout=10):
    deadline = time.time() + timeout
    while not client.is_model_ready(name):
        assert time.time() < deadline, f"{name} never became ready"
        time.sleep(0.05)


@pytest.mark.parametrize("module,model", [(grpcclient, "iris_1"), (httpclient, "iris_2")], ids=["grpc", "http"])
def test_seldon_agent_sequence(explicit, module, model):
    url = explicit.grpc if module is grpcclient else explicit.http
    client = module.InferenceServerClient(url=url)
    assert not client.is_model_ready(model)
    client.load_model(model)
    wait_ready(client, model)
    version, y = infer(client, module, model)
    assert version == "1"
    np.testing.assert_array_equal(y, X * 2.0)
    client.unload_model(model)
    assert not client.is_model_ready(model)
    with pytest.raises(InferenceServerException):
        infer(client, module, model)
    # The other models were never touched.
    assert client.is_model_ready("add_sub")


def test_hot_swap_to_a_new_version(explicit, repo):
    client = grpcclient.InferenceServerClient(url=explicit.grpc)
    client.load_model("iris_1")
    assert infer(client, grpcclient, "iris_1")[0] == "1"
    write_version(repo, "iris_1", 2, 3.0)
    client.load_model("iris_1")
    version, y = infer(client, grpcclient, "iris_1")
    assert version == "2"
    np.testing.assert_array_equal(y, X * 3.0)
    index = {(m.name, m.version): m.state for m in client.get_model_repository_index().models}
    assert index[("iris_1", "2")] == "READY"
    assert index[("iris_1", "1")] in ("UNLOADING", "UNAVAILABLE")


@pytest.mark.parametrize("module", [grpcclient, httpclient], ids=["grpc", "http"])
def test_load_with_config_and_files(explicit, module):
    url = explicit.grpc if module is grpcclient else explicit.http
    client = module.InferenceServerClient(url=url)
    name = "inline_" + ("grpc" if module is grpcclient else "http")
    config = json.dumps({"name": name, "max_batch_size": 2,
                         "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
                         "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]})
    client.load_model(name, config=config, files={"file:3/model.onnx": scale_model(5.0)})
    version, y = infer(client, module, name)
    assert version == "3"
    np.testing.assert_array_equal(y, X * 5.0)
    cfg = client.get_model_config(name)
    max_batch = cfg["max_batch_size"] if module is httpclient else cfg.config.max_batch_size
    assert max_batch == 2


def test_a_broken_model_is_reported_and_the_rest_serve(explicit, repo):
    client = httpclient.InferenceServerClient(url=explicit.http)
    os.makedirs(os.path.join(repo, "broken", "1"))
    with open(os.path.join(repo, "broken", "1", "model.onnx"), "w") as f:
        f.write("not onnx")
    with pytest.raises(InferenceServerException) as e:
        client.load_model("broken")
    assert "failed to load 'broken'" in str(e.value)
    assert client.is_model_ready("add_sub")


def test_control_is_refused_in_mode_none():
    s = QuiverServer(os.path.join(MODELS))
    try:
        for module, url in ((grpcclient, s.grpc), (httpclient, s.http)):
            client = module.InferenceServerClient(url=url)
            with pytest.raises(InferenceServerException) as e:
                client.load_model("add_sub")
            assert "--model-control-mode=explicit" in str(e.value)
            assert client.is_model_ready("add_sub")
    finally:
        s.stop()


def test_sigterm_exits_with_an_idle_stream_open():
    """An idle ModelStreamInfer stream must not keep the process alive."""
    s = QuiverServer(os.path.join(MODELS), ["--shutdown-grace-seconds", "3"])
    client = grpcclient.InferenceServerClient(url=s.grpc)
    answers = []
    client.start_stream(callback=lambda result, error: answers.append((result, error)))
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    client.async_stream_infer("linear_noconfig", [inp])
    deadline = time.time() + 10
    while not answers:
        assert time.time() < deadline, "no answer on the stream"
        time.sleep(0.01)
    assert answers[0][1] is None
    started = time.time()
    s.proc.terminate()
    s.proc.wait(timeout=30)
    assert s.proc.returncode == 0, "".join(s.log[-20:])
    assert time.time() - started < 20
    client.stop_stream(cancel_requests=True)

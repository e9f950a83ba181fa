"""Triton ensembles through tritonclient (HTTP and gRPC): Triton's own
L0_simple_ensemble repositories (six steps over two versions of an add/sub
model, and a chain of two), rebuilt here on the demo add_sub model, and the
demo image pipeline asked for its top classes with `class_count`."""
import os
import shutil
import tempfile

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from golden import GOLDEN
from quiver_server import MODELS, QuiverServer


def step(model, version, inputs, outputs):
    """A step: model input -> ensemble tensor, model output -> ensemble tensor."""
    ins = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    outs = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'{{ model_name: "{model}" model_version: {version} {ins} {outs} }}'


def ensemble(repo, name, inputs, outputs, steps):
    tensors = lambda names: ", ".join(f'{{ name: "{n}" data_type: TYPE_INT32 dims: [ 16 ] }}' for n in names)
    os.makedirs(os.path.join(repo, name, "1"))
    with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
        f.write(f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: 8\n'
                f"input [ {tensors(inputs)} ]\noutput [ {tensors(outputs)} ]\n"
                f"ensemble_scheduling {{ step [ {', '.join(steps)} ] }}\n")


@pytest.fixture(scope="module")
def quiver():
    """Triton's test models on quiver's add_sub: `simple` with versions 1
    and 2 both served; `ensemble_add_sub` computes INPUT0 +/- INPUT1 the long
    way round (2a - a + b; a - (2b - b)), its OUTPUT1 branch all on version 1;
    `ensemble_sub_addsub` is (a - b) +/- c."""
    repo = os.path.join(tempfile.mkdtemp(prefix="quiver-ensembles-"), "repo")
    simple = os.path.join(repo, "simple")
    for v in ("1", "2"):
        shutil.copytree(os.path.join(MODELS, "add_sub", "1"), os.path.join(simple, v))
    with open(os.path.join(MODELS, "add_sub", "config.pbtxt")) as f:
        config = f.read().replace('name: "add_sub"', 'name: "simple"\nversion_policy: { all {} }')
    with open(os.path.join(simple, "config.pbtxt"), "w") as f:
        f.write(config)
    ensemble(repo, "ensemble_add_sub", ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"], [
        step("simple", -1, {"INPUT0": "INPUT0", "INPUT1": "INPUT0"}, {"OUTPUT0": "double_input0"}),
        step("simple", 1, {"INPUT0": "INPUT1", "INPUT1": "INPUT1"}, {"OUTPUT0": "double_input1"}),
        step("simple", -1, {"INPUT0": "double_input0", "INPUT1": "INPUT0"}, {"OUTPUT1": "input0_val"}),
        step("simple", 1, {"INPUT0": "double_input1", "INPUT1": "INPUT1"}, {"OUTPUT1": "input1_val"}),
        step("simple", -1, {"INPUT0": "input0_val", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0"}),
        step("simple", 1, {"INPUT0": "INPUT0", "INPUT1": "input1_val"}, {"OUTPUT1": "OUTPUT1"}),
    ])
    ensemble(repo, "ensemble_sub_addsub", ["INPUT0", "INPUT1", "INPUT2"], ["OUTPUT0", "OUTPUT1"], [
        step("simple", -1, {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT1": "subres_tensor"}),
        step("simple", -1, {"INPUT0": "subres_tensor", "INPUT1": "INPUT2"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"}),
    ])
    for m in ("image_preprocess", "conv_net", "calibrate", "image_pipeline"):
        shutil.copytree(os.path.join(MODELS, m), os.path.join(repo, m))
    s = QuiverServer(repository=repo)
    yield s
    assert s.alive()
    s.stop()


def counts(client, grpc):
    """simple's inference count per version."""
    stats = client.get_inference_statistics("simple", as_json=True) if grpc else client.get_inference_statistics("simple")
    return {int(m["version"]): int(m.get("inference_count", 0)) for m in stats["model_stats"]}


def send(protocol, quiver, model, arrays, outputs=None):
    lib = grpcclient if protocol == "grpc" else httpclient
    client = lib.InferenceServerClient(quiver.grpc if protocol == "grpc" else quiver.http)
    inputs = []
    for i, a in enumerate(arrays):
        x = lib.InferInput(f"INPUT{i}", list(a.shape), "INT32")
        x.set_data_from_numpy(a)
        inputs.append(x)
    asked = [lib.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client, client.infer(model, inputs, outputs=asked)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritons_ensemble_add_sub_answers_as_add_sub_and_splits_its_steps_between_versions(quiver, protocol):
    rng = np.random.default_rng(3)
    client = None
    for bs in (1, 8):
        a = rng.integers(-1000, 1000, (bs, 16), dtype=np.int32)
        b = rng.integers(-1000, 1000, (bs, 16), dtype=np.int32)
        client, r = send(protocol, quiver, "ensemble_add_sub", [a, b])
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)
    before = counts(client, protocol == "grpc")
    # Three steps on each version per request, so the counts grow alike.
    a = rng.integers(-9, 9, (4, 16), dtype=np.int32)
    send(protocol, quiver, "ensemble_add_sub", [a, a])
    after = counts(client, protocol == "grpc")
    assert after[1] - before[1] == after[2] - before[2] == 3 * 4, (before, after)
    # Only OUTPUT0 asked: the steps on version 1 feed only OUTPUT1 and do not run.
    client, r = send(protocol, quiver, "ensemble_add_sub", [a, a + 1], outputs=["OUTPUT0"])
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), 2 * a + 1)
    assert r.as_numpy("OUTPUT1") is None
    last = counts(client, protocol == "grpc")
    assert last[1] == after[1] and last[2] == after[2] + 3 * 4, (after, last)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritons_ensemble_sub_addsub_chains_two_steps(quiver, protocol):
    rng = np.random.default_rng(4)
    a, b, c = (rng.integers(-50, 50, (2, 16), dtype=np.int32) for _ in range(3))
    _, r = send(protocol, quiver, "ensemble_sub_addsub", [a, b, c])
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a - b + c)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b - c)


def test_the_ensemble_reports_itself_as_triton_does(quiver):
    h = httpclient.InferenceServerClient(quiver.http)
    g = grpcclient.InferenceServerClient(quiver.grpc)
    assert h.is_model_ready("ensemble_add_sub") and g.is_model_ready("ensemble_add_sub")
    assert h.get_model_metadata("ensemble_add_sub")["platform"] == "ensemble"
    config = h.get_model_config("ensemble_add_sub")
    steps = config["ensemble_scheduling"]["step"]
    assert [s["model_version"] for s in steps] == ["-1", "1", "-1", "1", "-1", "1"] or \
        [int(s["model_version"]) for s in steps] == [-1, 1, -1, 1, -1, 1]
    assert steps[0]["input_map"] == {"INPUT0": "INPUT0", "INPUT1": "INPUT0"}
    gconfig = g.get_model_config("ensemble_add_sub").config
    assert gconfig.platform == "ensemble"
    assert len(gconfig.ensemble_scheduling.step) == 6
    assert dict(gconfig.ensemble_scheduling.step[4].output_map) == {"OUTPUT0": "OUTPUT0"}
    stats = h.get_inference_statistics("ensemble_add_sub")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] > 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_class_count_through_the_image_pipeline_uses_the_writing_steps_labels(quiver, protocol):
    lib = grpcclient if protocol == "grpc" else httpclient
    client = lib.InferenceServerClient(quiver.grpc if protocol == "grpc" else quiver.http)
    case = GOLDEN["image_pipeline"]
    raw = np.asarray(case["inputs"][0]["data"], dtype=np.uint8).reshape(case["inputs"][0]["shape"])
    raw = np.concatenate([raw, raw[:, ::-1]])  # two rows, two different images
    x = lib.InferInput("raw", list(raw.shape), "UINT8")
    x.set_data_from_numpy(raw)
    scores = client.infer("image_pipeline", [x]).as_numpy("scores")
    np.testing.assert_allclose(scores[0], np.asarray(case["outputs"][0]["data"]), rtol=1e-5, atol=1e-6)
    top = client.infer("image_pipeline", [x], outputs=[lib.InferRequestedOutput("scores", class_count=3)])
    got = top.as_numpy("scores")
    assert got.shape == (2, 3)
    labels = open(os.path.join(MODELS, "calibrate", "labels.txt")).read().split()
    for row, answer in zip(scores, got):
        order = np.argsort(-row, kind="stable")[:3]
        want = [f"{row[i]:.6f}:{i}:{labels[i]}" for i in order]
        assert [s.decode() if isinstance(s, bytes) else s for s in answer] == want


def test_a_step_models_own_payload_log_sees_the_pipelines_traffic():
    """A payload log set on fraud_mlp alone logs its step requests inside
    fraud_pipeline (the scaled features it saw), and the pipeline's answer
    equals what fraud_mlp answered."""
    import json
    import threading
    import time

    from post_server import serve_posts

    events, lock = [], threading.Lock()

    def post(path, headers, body):
        with lock:
            events.append((headers, body))
        return 200

    sink, url = serve_posts(post)
    repo = os.path.join(tempfile.mkdtemp(prefix="quiver-ensemble-log-"), "repo")
    for m in ("fraud_scaler", "fraud_mlp", "fraud_pipeline"):
        shutil.copytree(os.path.join(MODELS, m), os.path.join(repo, m))
    config = os.path.join(repo, "fraud_mlp", "config.pbtxt")
    with open(config, "a") as f:
        f.write(f'parameters {{ key: "payload_log_url" value: {{ string_value: "{url}" }} }}\n')
    s = QuiverServer(repository=repo)
    try:
        case = GOLDEN["fraud_pipeline"]
        raw = np.asarray(case["inputs"][0]["data"], dtype=np.float32).reshape(case["inputs"][0]["shape"])
        h = httpclient.InferenceServerClient(s.http)
        x = httpclient.InferInput("raw", list(raw.shape), "FP32")
        x.set_data_from_numpy(raw, binary_data=False)
        answer = h.infer("fraud_pipeline", [x]).as_numpy("probabilities")
        deadline = time.time() + 10
        while time.time() < deadline:
            with lock:
                if len(events) >= 2:
                    break
            time.sleep(0.05)
    finally:
        s.stop()
        sink.shutdown()
    by_type = {hd["ce-type"].rsplit(".", 1)[1]: (hd, json.loads(body)) for hd, body in events}
    assert set(by_type) == {"request", "response"}, [hd["ce-type"] for hd, _ in events]
    request, response = by_type["request"][1], by_type["response"][1]
    assert by_type["request"][0]["ce-id"] == by_type["response"][0]["ce-id"]
    # What fraud_mlp saw: the scaler's output, the standardised features.
    seen = np.asarray(request["inputs"][0]["data"], dtype=np.float32).reshape(raw.shape)
    assert request["inputs"][0]["name"] == "input"
    assert np.abs(seen).max() < 10 and np.abs(raw).max() > 10
    logged = np.asarray(response["outputs"][0]["data"], dtype=np.float32).reshape(answer.shape)
    np.testing.assert_array_equal(logged, answer)

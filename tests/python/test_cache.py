"""Triton's response cache against the real server, with tritonclient: a
local cache (`--cache-config local,size=N`) and a Redis cache shared by two
replicas (Debian's redis-server, started here). Checked: a repeated request
is answered without running the model; requests with the same bytes under
another shape are never confused; hits + misses = lookups under concurrent
load; the cache stays within its bytes; a hot swap (of a model, or of an
ensemble's step) never answers from the old version's cache; Redis stopped
mid-run fails no request."""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

from golden import GOLDEN
from quiver_server import MODELS, ROOT, QuiverServer

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TEMPLATE_K = np.float32(12345.678).tobytes()
CACHED = '\nresponse_cache { enable: true }\n'


def scale_model(k):
    data = open(os.path.join(FIXTURES, "scale.onnx"), "rb").read()
    return data.replace(TEMPLATE_K, np.float32(k).tobytes())


def write_scale(repo, name, k):
    d = os.path.join(repo, name, "1")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, ".model.tmp"), "wb") as f:
        f.write(scale_model(k))
    os.replace(os.path.join(d, ".model.tmp"), os.path.join(d, "model.onnx"))
    with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
        f.write(f'name: "{name}"\nmax_batch_size: 8\n'
                'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
                'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n' + CACHED)


def repository():
    repo = os.path.join(tempfile.mkdtemp(prefix="quiver-cache-"), "repo")
    for m in ("conv_net", "fraud_mlp", "fraud_scaler", "fraud_pipeline"):
        shutil.copytree(os.path.join(MODELS, m), os.path.join(repo, m))
    for m in ("conv_net", "fraud_pipeline"):
        with open(os.path.join(repo, m, "config.pbtxt"), "a") as f:
            f.write(CACHED)
    os.makedirs(os.path.join(repo, "wide_sum", "1"))
    shutil.copy(os.path.join(FIXTURES, "wide_sum.onnx"), os.path.join(repo, "wide_sum", "1", "model.onnx"))
    with open(os.path.join(repo, "wide_sum", "config.pbtxt"), "w") as f:
        f.write('name: "wide_sum"\nmax_batch_size: 8\n'
                'input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
                'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n' + CACHED)
    write_scale(repo, "scale", 2.0)
    return repo


def stats(client, model):
    s = client.get_inference_statistics(model)["model_stats"][-1]
    i = s["inference_stats"]
    return s["inference_count"], i["cache_hit"]["count"], i["cache_miss"]["count"], i["success"]["count"]


def metric(server, name, model):
    text = requests.get(f"http://{server.metrics}/metrics", timeout=10).text
    pattern = re.compile(rf'^{name}\{{model="{model}",version="1"\}} (\S+)$', re.M)
    m = pattern.search(text)
    return float(m.group(1)) if m else 0.0


def gauge(server, name):
    text = requests.get(f"http://{server.metrics}/metrics", timeout=10).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def infer(client, model, name, array):
    x = httpclient.InferInput(name, list(array.shape), "FP32")
    x.set_data_from_numpy(array)
    return client.infer(model, [x])


@pytest.fixture(scope="module")
def local():
    repo = repository()
    s = QuiverServer(repository=repo, extra_args=["--model-control-mode", "explicit", "--load-model", "*",
                                                  "--cache-config", "local,size=2000000"])
    yield s, repo
    assert s.alive()
    s.stop()


def test_a_repeated_request_is_answered_from_the_cache_without_running_the_model(local):
    server, _ = local
    c = httpclient.InferenceServerClient(server.http)
    image = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    first = infer(c, "conv_net", "image", image).as_numpy("probabilities")
    runs, hits, misses, ok = stats(c, "conv_net")
    assert (hits, misses) == (0, 1)
    again = infer(c, "conv_net", "image", image).as_numpy("probabilities")
    np.testing.assert_array_equal(first, again)
    assert stats(c, "conv_net") == (runs, 1, 1, ok + 1), "the model ran again, or the hit was not counted"
    assert metric(server, "nv_cache_num_hits_per_model", "conv_net") == 1
    assert metric(server, "nv_cache_num_misses_per_model", "conv_net") == 1
    assert metric(server, "nv_cache_hit_duration_per_model", "conv_net") >= 0
    # Over gRPC too: the same cache.
    import tritonclient.grpc as grpcclient
    g = grpcclient.InferenceServerClient(server.grpc)
    x = grpcclient.InferInput("image", [1, 3, 64, 64], "FP32")
    x.set_data_from_numpy(image)
    np.testing.assert_array_equal(g.infer("conv_net", [x]).as_numpy("probabilities"), first)
    gstats = g.get_inference_statistics("conv_net", as_json=True)["model_stats"][0]["inference_stats"]
    assert int(gstats["cache_hit"]["count"]) == 2


def test_a_model_without_response_cache_always_runs(local):
    server, _ = local
    c = httpclient.InferenceServerClient(server.http)
    x = np.ones((1, 32), dtype=np.float32)
    before = stats(c, "fraud_mlp")[0]
    for _ in range(3):
        infer(c, "fraud_mlp", "input", x)
    runs, hits, misses, _ = stats(c, "fraud_mlp")
    assert (runs - before, hits, misses) == (3, 0, 0)


def test_the_same_bytes_under_another_shape_are_another_request(local):
    server, _ = local
    c = httpclient.InferenceServerClient(server.http)
    values = np.arange(8, dtype=np.float32)
    one_row = infer(c, "wide_sum", "x", values.reshape(1, 8)).as_numpy("y")
    two_rows = infer(c, "wide_sum", "x", values.reshape(2, 4)).as_numpy("y")
    assert one_row.tolist() == [[28.0]]
    assert two_rows.tolist() == [[6.0], [22.0]]
    assert infer(c, "wide_sum", "x", values.reshape(1, 8)).as_numpy("y").tolist() == [[28.0]]
    assert stats(c, "wide_sum")[1:3] == (1, 2)


def test_hits_and_misses_add_up_to_the_requests_under_concurrent_load(local):
    server, _ = local
    rng = np.random.default_rng(5)
    pool = [rng.random((1, 4), dtype=np.float32) for _ in range(20)]
    picks = rng.integers(0, len(pool), 800)
    c0 = httpclient.InferenceServerClient(server.http)
    _, h0, m0, _ = stats(c0, "scale")

    def send(chunk):
        c = httpclient.InferenceServerClient(server.http)
        for i in chunk:
            y = infer(c, "scale", "x", pool[i]).as_numpy("y")
            np.testing.assert_allclose(y, pool[i] * 2.0, rtol=1e-6)

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(send, np.array_split(picks, 16)))
    _, hits, misses, _ = stats(c0, "scale")
    assert (hits - h0) + (misses - m0) == len(picks)
    assert misses - m0 >= len(set(picks.tolist())), "each distinct request misses at least once"
    assert hits - h0 > 0
    total = metric(server, "nv_cache_num_hits_per_model", "scale") + \
        metric(server, "nv_cache_num_misses_per_model", "scale")
    assert total == hits + misses


def test_the_cache_stays_within_its_bytes(local):
    server, _ = local
    c = httpclient.InferenceServerClient(server.http)
    rng = np.random.default_rng(9)
    # 60 distinct 48 KB images: about 3 MB of keys, more than the 2 MB cache.
    for _ in range(60):
        infer(c, "conv_net", "image", rng.random((1, 3, 64, 64), dtype=np.float32))
    held = gauge(server, "quiver_response_cache_bytes")
    assert held is not None and 0 < held <= 2_000_000
    assert gauge(server, "quiver_response_cache_capacity_bytes") == 2_000_000
    assert gauge(server, "quiver_response_cache_evictions_total") > 0


def test_a_hot_swap_never_answers_from_the_old_versions_cache(local):
    server, repo = local
    c = httpclient.InferenceServerClient(server.http)
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    np.testing.assert_allclose(infer(c, "scale", "x", x).as_numpy("y"), x * 2.0)
    np.testing.assert_allclose(infer(c, "scale", "x", x).as_numpy("y"), x * 2.0)  # a hit
    write_scale(repo, "scale", 3.0)
    c.load_model("scale")
    np.testing.assert_allclose(infer(c, "scale", "x", x).as_numpy("y"), x * 3.0)


def test_an_ensemble_is_cached_whole_and_a_swapped_step_is_not_served_stale(local):
    server, repo = local
    c = httpclient.InferenceServerClient(server.http)
    case = GOLDEN["fraud_pipeline"]
    raw = np.asarray(case["inputs"][0]["data"], dtype=np.float32).reshape(case["inputs"][0]["shape"])
    first = infer(c, "fraud_pipeline", "raw", raw).as_numpy("probabilities")
    mlp_runs = stats(c, "fraud_mlp")[0]
    np.testing.assert_array_equal(infer(c, "fraud_pipeline", "raw", raw).as_numpy("probabilities"), first)
    assert stats(c, "fraud_mlp")[0] == mlp_runs, "a hit of the ensemble ran its steps"
    assert stats(c, "fraud_pipeline")[1] == 1
    # The scaler swapped for one that doubles its output: the next answer
    # is computed by the new step, not taken from the cache.
    scaler = os.path.join(repo, "fraud_scaler", "1", "model.onnx")
    import onnx
    from onnx import helper, numpy_helper
    m = onnx.load(scaler)
    m.graph.initializer.append(numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"))
    m.graph.node[-1].output[0] = "half"
    m.graph.node.append(helper.make_node("Mul", ["half", "two"], ["scaled"]))
    onnx.save(m, scaler)
    c.load_model("fraud_scaler")
    changed = infer(c, "fraud_pipeline", "raw", raw).as_numpy("probabilities")
    assert not np.allclose(changed, first)
    assert stats(c, "fraud_mlp")[0] == mlp_runs + len(raw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port):
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def test_two_replicas_share_hits_through_redis_and_survive_it_stopping():
    repo = repository()
    port = free_port()
    redis = start_redis(port)
    args = ["--cache-config", "redis,host=127.0.0.1", "--cache-config", f"redis,port={port}",
            "--cache-config", "redis,wait_timeout_ms=100"]
    a, b = QuiverServer(repository=repo, extra_args=args), QuiverServer(repository=repo, extra_args=args)
    try:
        ca, cb = httpclient.InferenceServerClient(a.http), httpclient.InferenceServerClient(b.http)
        image = np.random.default_rng(3).random((1, 3, 64, 64), dtype=np.float32)
        first = infer(ca, "conv_net", "image", image).as_numpy("probabilities")
        assert stats(ca, "conv_net")[1:3] == (0, 1)
        runs_b = stats(cb, "conv_net")[0]
        np.testing.assert_array_equal(infer(cb, "conv_net", "image", image).as_numpy("probabilities"), first)
        assert stats(cb, "conv_net")[0] == runs_b, "replica b ran the model for a request replica a answered"
        assert stats(cb, "conv_net")[1] == 1
        # Same bytes, another shape: never each other's answer, across replicas too.
        values = np.arange(8, dtype=np.float32)
        assert infer(ca, "wide_sum", "x", values.reshape(1, 8)).as_numpy("y").tolist() == [[28.0]]
        assert infer(cb, "wide_sum", "x", values.reshape(2, 4)).as_numpy("y").tolist() == [[6.0], [22.0]]
        # Redis goes away mid-run: every request is answered (as a miss).
        redis.terminate()
        redis.wait(timeout=10)
        x = np.ones((1, 4), dtype=np.float32)
        for i in range(50):
            np.testing.assert_allclose(infer(ca if i % 2 else cb, "scale", "x", x * i).as_numpy("y"), x * i * 2.0)
        errors = requests.get(f"http://{a.metrics}/metrics", timeout=10).text
        assert re.search(r'^quiver_response_cache_errors_total\{op="get"\} [1-9]', errors, re.M), errors[-2000:]
        _, hits, misses, _ = stats(ca, "scale")
        assert hits + misses == 25
    finally:
        a.stop()
        b.stop()
        if redis.poll() is None:
            redis.kill()

"""NVIDIA's tritonclient, unchanged, against quiver: HTTP (binary and JSON
tensor data, compression) and gRPC, on every demo model, checked against the
golden outputs."""
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from golden import GOLDEN, array, assert_matches

MODELS = sorted(GOLDEN)


@pytest.fixture(scope="module")
def http(server):
    return httpclient.InferenceServerClient(url=server.http)


@pytest.fixture(scope="module")
def grpc(server):
    return grpcclient.InferenceServerClient(url=server.grpc)


def http_inputs(case, binary):
    inputs = []
    for t in case["inputs"]:
        inp = httpclient.InferInput(t["name"], t["shape"], t["datatype"])
        # tritonclient refuses BF16 as JSON: it always travels as a blob.
        inp.set_data_from_numpy(array(t), binary_data=binary or t["datatype"] == "BF16")
        inputs.append(inp)
    return inputs


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_matches_golden(http, model, binary):
    case = GOLDEN[model]
    outputs = [httpclient.InferRequestedOutput(t["name"], binary_data=binary or t["datatype"] == "BF16")
               for t in case["outputs"]]
    result = http.infer(model, http_inputs(case, binary), outputs=outputs)
    for t in case["outputs"]:
        assert_matches(t, result.as_numpy(t["name"]))


@pytest.mark.parametrize("model", MODELS)
def test_http_infer_without_requested_outputs_returns_all(http, model):
    case = GOLDEN[model]
    result = http.infer(model, http_inputs(case, True))
    for t in case["outputs"]:
        assert_matches(t, result.as_numpy(t["name"]))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_http_compression_both_ways(http, algorithm):
    case = GOLDEN["fraud_mlp"]
    result = http.infer("fraud_mlp", http_inputs(case, True),
                        request_compression_algorithm=algorithm,
                        response_compression_algorithm=algorithm)
    assert_matches(case["outputs"][0], result.as_numpy("probabilities"))


@pytest.mark.parametrize("model", MODELS)
def test_grpc_infer_matches_golden(grpc, model):
    case = GOLDEN[model]
    inputs = []
    for t in case["inputs"]:
        inp = grpcclient.InferInput(t["name"], t["shape"], t["datatype"])
        inp.set_data_from_numpy(array(t))
        inputs.append(inp)
    outputs = [grpcclient.InferRequestedOutput(t["name"]) for t in case["outputs"]]
    result = grpc.infer(model, inputs, outputs=outputs, model_version="1")
    for t in case["outputs"]:
        assert_matches(t, result.as_numpy(t["name"]))


def test_grpc_stream_infer(grpc):
    import queue
    answers = queue.Queue()
    grpc.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        case = GOLDEN["add_sub"]
        for _ in range(3):
            inputs = []
            for t in case["inputs"]:
                inp = grpcclient.InferInput(t["name"], t["shape"], t["datatype"])
                inp.set_data_from_numpy(array(t))
                inputs.append(inp)
            grpc.async_stream_infer("add_sub", inputs)
        bad = grpcclient.InferInput("INPUT0", [1, 3], "INT32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.int32))
        grpc.async_stream_infer("add_sub", [bad])
        for _ in range(3):
            result, error = answers.get(timeout=10)
            assert error is None
            assert_matches(case["outputs"][0], result.as_numpy("OUTPUT0"))
        result, error = answers.get(timeout=10)
        assert result is None and "INPUT0" in str(error)
    finally:
        grpc.stop_stream()


def test_health_and_metadata_http(http):
    assert http.is_server_live()
    assert http.is_server_ready()
    assert http.is_model_ready("add_sub")
    assert http.is_model_ready("add_sub", "1")
    assert not http.is_model_ready("no_such_model")
    meta = http.get_server_metadata()
    assert meta["name"] == "quiver"
    assert "binary_tensor_data" in meta["extensions"]
    m = http.get_model_metadata("add_sub")
    assert m["versions"] == ["1"]
    assert m["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]}
    config = http.get_model_config("fraud_mlp")
    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == [32]
    index = http.get_model_repository_index()
    assert {r["name"] for r in index} >= set(MODELS)
    assert all(r["state"] == "READY" for r in index)


def test_health_and_metadata_grpc(grpc):
    assert grpc.is_server_live()
    assert grpc.is_server_ready()
    assert grpc.is_model_ready("text_greet")
    assert not grpc.is_model_ready("text_greet", "7")
    assert grpc.get_server_metadata().name == "quiver"
    m = grpc.get_model_metadata("linear_noconfig")
    assert [i.name for i in m.inputs] == ["x"] and list(m.inputs[0].shape) == [-1, 4]
    config = grpc.get_model_config("tanh_nameonly", as_json=True)["config"]
    assert config["max_batch_size"] == 4  # completed from the model file
    assert config["input"][0]["name"] == "x"
    index = grpc.get_model_repository_index(as_json=True)
    assert {m["name"] for m in index["models"]} >= set(MODELS)


def test_config_less_and_name_only_models_are_completed(http):
    for model, shape in [("linear_noconfig", [-1, 4]), ("tanh_nameonly", [-1, 6])]:
        m = http.get_model_metadata(model)
        assert m["platform"] == "onnxruntime_onnx"
        assert m["inputs"][0]["shape"] == shape


def test_errors_reach_the_client_with_the_reason(http, grpc):
    bad = httpclient.InferInput("INPUT0", [1, 15], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 15), np.int32))
    good = httpclient.InferInput("INPUT1", [1, 16], "INT32")
    good.set_data_from_numpy(np.zeros((1, 16), np.int32))
    with pytest.raises(InferenceServerException, match="INPUT0"):
        http.infer("add_sub", [bad, good])
    with pytest.raises(InferenceServerException, match="unknown model"):
        http.infer("nope", [good])
    g = grpcclient.InferInput("INPUT1", [1, 16], "FP32")
    g.set_data_from_numpy(np.zeros((1, 16), np.float32))
    with pytest.raises(InferenceServerException) as e:
        grpc.infer("add_sub", [g])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "FP32" in e.value.message()
    # The server still answers correctly afterwards.
    case = GOLDEN["add_sub"]
    result = http.infer("add_sub", http_inputs(case, True))
    assert_matches(case["outputs"][1], result.as_numpy("OUTPUT1"))


def test_inference_statistics_through_tritonclient(http, grpc):
    case = GOLDEN["fraud_mlp"]
    before = http.get_inference_statistics("fraud_mlp")["model_stats"][0]["inference_count"]
    http.infer("fraud_mlp", http_inputs(case, True))
    stats = http.get_inference_statistics("fraud_mlp")["model_stats"][0]
    assert stats["name"] == "fraud_mlp" and stats["version"] == "1"
    assert stats["inference_count"] == before + 3  # the golden request has 3 rows
    assert stats["inference_stats"]["success"]["count"] >= 1
    assert stats["batch_stats"], "batch statistics are reported"
    g = grpc.get_inference_statistics("fraud_mlp", as_json=True)["model_stats"][0]
    assert int(g["inference_count"]) == before + 3
    assert "statistics" in http.get_server_metadata()["extensions"]

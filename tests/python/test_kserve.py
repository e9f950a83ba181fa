"""The KServe Python SDK, unchanged, against quiver: InferenceRESTClient (V2,
JSON and binary tensor data) and InferenceGRPCClient, on the demo models,
checked against the golden outputs. Runs in its own process (and virtualenv):
the SDK's generated protobuf module clashes with tritonclient's."""
import asyncio

import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

from golden import GOLDEN, array, assert_matches

# The SDK has no BF16 numpy dtype: it can send BF16 only as JSON numbers over
# REST (covered below), never as gRPC raw contents, so bf16_double is left out
# of the gRPC case.
GRPC_MODELS = sorted(m for m in GOLDEN if not m.startswith("bf16_double"))
REST_MODELS = sorted(GOLDEN)


def inputs(case, binary):
    result = []
    for t in case["inputs"]:
        if t["datatype"] == "BF16":
            result.append(InferInput(t["name"], t["shape"], "BF16", data=t["data"]))
            continue
        inp = InferInput(t["name"], t["shape"], t["datatype"])
        # The SDK refuses FP16 as JSON: it always travels as a blob.
        inp.set_data_from_numpy(array(t), binary_data=binary or t["datatype"] == "FP16")
        result.append(inp)
    return result


def output_array(output, expected):
    if expected["datatype"] == "BF16":
        return np.array(output.data, dtype=np.float32).reshape(output.shape)
    return output.as_numpy()


@pytest.mark.parametrize("model", REST_MODELS)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_rest_infer_matches_golden(server, model, binary):
    case = GOLDEN[model]

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            outputs = [RequestedOutput(t["name"], {"binary_data": binary and t["datatype"] != "BF16"})
                       for t in case["outputs"]]
            request = InferRequest(model_name=model, infer_inputs=inputs(case, binary),
                                   request_outputs=outputs, request_id="kserve-1")
            return await client.infer(f"http://{server.http}", request, model_name=model)
        finally:
            await client.close()

    response = asyncio.run(run())
    assert response.model_name == model
    assert response.id == "kserve-1"
    for t in case["outputs"]:
        out = response.get_output_by_name(t["name"])
        assert_matches(t, output_array(out, t))


@pytest.mark.parametrize("model", GRPC_MODELS)
def test_grpc_infer_matches_golden(server, model):
    case = GOLDEN[model]

    async def run():
        client = InferenceGRPCClient(server.grpc)
        try:
            request = InferRequest(model_name=model, infer_inputs=inputs(case, True))
            return await client.infer(request)
        finally:
            await client.close()

    response = asyncio.run(run())
    for t in case["outputs"]:
        assert_matches(t, response.get_output_by_name(t["name"]).as_numpy())


def test_readiness_through_the_sdk(server):
    async def run():
        rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        grpc = InferenceGRPCClient(server.grpc)
        try:
            return (
                await rest.is_server_ready(f"http://{server.http}"),
                await rest.is_model_ready(f"http://{server.http}", "fraud_mlp"),
                await grpc.is_server_ready(),
                await grpc.is_model_ready("fraud_mlp"),
                await grpc.is_model_ready("missing"),
            )
        finally:
            await rest.close()
            await grpc.close()

    assert asyncio.run(run()) == (True, True, True, True, False)

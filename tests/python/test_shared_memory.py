"""Triton's system shared memory extension against the real server, driven
the way Triton's users drive it: tritonclient.utils.shared_memory regions,
registered over HTTP and gRPC, inputs read from them and outputs written
into them, answers equal to the plain path. Then every hostile case the
extension must survive (each its own test): offsets and sizes past the end,
overflowing, a region larger than its object, an output region too small,
an object shrunk by ftruncate after registration, unknown keys, keys outside
the allow-list, unregistering during requests. After each, the server still
answers everyone else."""
import base64
import os
import subprocess
import threading
import uuid

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from quiver_server import QuiverServer

ADD_SUB_BYTES = 16 * 4


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class RawObject:
    """A POSIX shared memory object written with pwrite, never mapped here:
    the hostile tests shrink objects, and a mapping in this process would
    fault on them too."""

    def __init__(self, size, key=None):
        self.key = key or "/" + unique("quiver_test")
        self.path = "/dev/shm/" + self.key.lstrip("/")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, size)

    def write(self, data, offset=0):
        os.pwrite(self.fd, data, offset)

    def read(self, size, offset=0):
        return os.pread(self.fd, size, offset)

    def truncate(self, size):
        os.ftruncate(self.fd, size)

    def close(self):
        os.close(self.fd)
        os.unlink(self.path)


def add_sub_inputs():
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    return a, b


def plain_answer(server):
    a, b = add_sub_inputs()
    client = httpclient.InferenceServerClient(server.http)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    r = client.infer("add_sub", inputs)
    return r.as_numpy("OUTPUT0"), r.as_numpy("OUTPUT1")


def still_serving(server):
    out0, out1 = plain_answer(server)
    a, b = add_sub_inputs()
    assert (out0 == a + b).all() and (out1 == a - b).all()
    assert server.alive()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_and_outputs_in_shared_memory_answer_as_the_plain_path(server, protocol):
    lib = httpclient if protocol == "http" else grpcclient
    client = lib.InferenceServerClient(server.http if protocol == "http" else server.grpc)
    a, b = add_sub_inputs()
    names = {k: unique(k) for k in ("in", "out")}
    keys = {k: "/" + v for k, v in names.items()}
    ip = shm.create_shared_memory_region(names["in"], keys["in"], 2 * ADD_SUB_BYTES)
    op = shm.create_shared_memory_region(names["out"], keys["out"], 2 * ADD_SUB_BYTES)
    try:
        shm.set_shared_memory_region(ip, [a])
        shm.set_shared_memory_region(ip, [b], offset=ADD_SUB_BYTES)
        client.register_system_shared_memory(names["in"], keys["in"], 2 * ADD_SUB_BYTES)
        client.register_system_shared_memory(names["out"], keys["out"], 2 * ADD_SUB_BYTES)
        status = client.get_system_shared_memory_status()
        if protocol == "http":
            listed = {r["name"]: r for r in status}
            assert listed[names["in"]]["key"] == keys["in"]
            assert int(listed[names["in"]]["byte_size"]) == 2 * ADD_SUB_BYTES
        else:
            assert status.regions[names["in"]].key == keys["in"]
            assert status.regions[names["out"]].byte_size == 2 * ADD_SUB_BYTES

        inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory(names["in"], ADD_SUB_BYTES)
        inputs[1].set_shared_memory(names["in"], ADD_SUB_BYTES, offset=ADD_SUB_BYTES)
        outputs = [lib.InferRequestedOutput("OUTPUT0"), lib.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory(names["out"], ADD_SUB_BYTES)
        outputs[1].set_shared_memory(names["out"], ADD_SUB_BYTES, offset=ADD_SUB_BYTES)
        result = client.infer("add_sub", inputs, outputs=outputs)
        out0 = result.get_output("OUTPUT0")
        if protocol == "http":
            # As Triton answers it: no data and no parameters (Triton's C++
            # client reads any output parameters as a binary blob's size).
            assert out0 == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16]}
        else:
            assert out0.parameters["shared_memory_region"].string_param == names["out"]
        got0 = shm.get_contents_as_numpy(op, np.int32, [1, 16])
        got1 = shm.get_contents_as_numpy(op, np.int32, [1, 16], offset=ADD_SUB_BYTES)
        plain0, plain1 = plain_answer(server)
        assert (got0 == plain0).all() and (got1 == plain1).all()
        assert (got0 == a + b).all() and (got1 == a - b).all()

        # Mixed: one input plain, one in memory; one output back in the answer.
        inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_shared_memory(names["in"], ADD_SUB_BYTES, offset=ADD_SUB_BYTES)
        outputs = [lib.InferRequestedOutput("OUTPUT0"), lib.InferRequestedOutput("OUTPUT1")]
        outputs[1].set_shared_memory(names["out"], ADD_SUB_BYTES, offset=ADD_SUB_BYTES)
        shm.set_shared_memory_region(op, [np.zeros((2, 16), dtype=np.int32)])
        result = client.infer("add_sub", inputs, outputs=outputs)
        assert (result.as_numpy("OUTPUT0") == a + b).all()
        assert (shm.get_contents_as_numpy(op, np.int32, [1, 16], offset=ADD_SUB_BYTES) == a - b).all()

        client.unregister_system_shared_memory(names["in"])
        status = client.get_system_shared_memory_status()
        listed = [r["name"] for r in status] if protocol == "http" else list(status.regions)
        assert names["in"] not in listed and names["out"] in listed
        client.unregister_system_shared_memory(names["out"])
    finally:
        shm.destroy_shared_memory_region(ip)
        shm.destroy_shared_memory_region(op)


def test_server_metadata_lists_the_extension_and_cuda_says_why_not(server):
    meta = httpclient.InferenceServerClient(server.http).get_server_metadata()
    assert "system_shared_memory" in meta["extensions"]
    client = grpcclient.InferenceServerClient(server.grpc)
    with pytest.raises(InferenceServerException) as e:
        client.register_cuda_shared_memory("gpu", b"\0" * 64, 0, 1024)
    assert "CUDA" in str(e.value) and "system shared memory" in str(e.value)
    r = requests.post(f"http://{server.http}/v2/cudasharedmemory/region/gpu/register",
                      json={"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 1024})
    assert r.status_code == 503 and "CUDA" in r.json()["error"]
    assert requests.get(f"http://{server.http}/v2/cudasharedmemory/status").json() == []
    # Malformed registrations are named before CUDA is needed.
    r = requests.post(f"http://{server.http}/v2/cudasharedmemory/region/gpu/register",
                      json={"raw_handle": {"b64": "not base64!"}, "device_id": 0, "byte_size": 1024})
    assert r.status_code == 400 and "raw_handle.b64 is not base64" in r.json()["error"]
    r = requests.post(f"http://{server.http}/v2/cudasharedmemory/region/gpu/register", json={"device_id": 0})
    assert r.status_code == 400 and "raw_handle" in r.json()["error"]
    r = requests.get(f"http://{server.http}/v2/cudasharedmemory/region/gpu/status")
    assert r.status_code == 404 and "no CUDA shared memory region 'gpu'" in r.json()["error"]


class Region:
    """A registered region over a RawObject, unregistered and removed after."""

    def __init__(self, server, size, register_size=None, offset=0):
        self.server = server
        self.obj = RawObject(size)
        self.name = unique("region")
        self.client = httpclient.InferenceServerClient(server.http)
        self.client.register_system_shared_memory(self.name, self.obj.key, register_size or size, offset)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.client.unregister_system_shared_memory(self.name)
        self.obj.close()


def infer_raw(server, inputs, outputs=None):
    """A JSON request built by hand, so any parameter value can be sent."""
    body = {"inputs": inputs}
    if outputs is not None:
        body["outputs"] = outputs
    return requests.post(f"http://{server.http}/v2/models/add_sub/infer", json=body)


def shm_input(name, region, byte_size, offset=None):
    p = {"shared_memory_region": region, "shared_memory_byte_size": byte_size}
    if offset is not None:
        p["shared_memory_offset"] = offset
    return {"name": name, "shape": [1, 16], "datatype": "INT32", "parameters": p}


def plain_input(name):
    return {"name": name, "shape": [1, 16], "datatype": "INT32", "data": list(range(16))}


def refused(r, *words):
    assert r.status_code == 400, (r.status_code, r.text)
    message = r.json()["error"]
    for w in words:
        assert w in message, message
    return message


def test_offset_past_the_end_is_refused(server):
    with Region(server, 128) as region:
        r = infer_raw(server, [shm_input("INPUT0", region.name, 64, offset=4096), plain_input("INPUT1")])
        refused(r, "input 'INPUT0'", "past the end", region.name)
    still_serving(server)


def test_a_tensor_straddling_the_end_is_refused(server):
    with Region(server, 128) as region:
        r = infer_raw(server, [shm_input("INPUT0", region.name, 64, offset=96), plain_input("INPUT1")])
        refused(r, "input 'INPUT0'", "past the end")
        r = infer_raw(server, [plain_input("INPUT0"), plain_input("INPUT1")],
                      [{"name": "OUTPUT0", "parameters": {"shared_memory_region": region.name,
                                                          "shared_memory_byte_size": 64,
                                                          "shared_memory_offset": 100}}])
        refused(r, "output 'OUTPUT0'", "past the end")
    still_serving(server)


def test_sizes_that_overflow_are_refused(server):
    with Region(server, 128) as region:
        huge = 2**64 - 8
        r = infer_raw(server, [shm_input("INPUT0", region.name, 64, offset=huge), plain_input("INPUT1")])
        refused(r, "input 'INPUT0'", "past the end")
        r = infer_raw(server, [shm_input("INPUT0", region.name, huge, offset=64), plain_input("INPUT1")])
        refused(r, "input 'INPUT0'")
        r = infer_raw(server, [shm_input("INPUT0", region.name, -1), plain_input("INPUT1")])
        refused(r, "input 'INPUT0'", "non-negative")
    # Registration: offset + byte_size overflowing.
    obj = RawObject(128)
    try:
        r = requests.post(f"http://{server.http}/v2/systemsharedmemory/region/of/register",
                          json={"key": obj.key, "offset": 2**64 - 1, "byte_size": 2})
        assert r.status_code == 400 and "overflows" in r.json()["error"], r.text
    finally:
        obj.close()
    still_serving(server)


def test_a_region_registered_larger_than_its_object_is_refused(server):
    obj = RawObject(4096)
    client = httpclient.InferenceServerClient(server.http)
    try:
        with pytest.raises(InferenceServerException) as e:
            client.register_system_shared_memory("too_big", obj.key, 8192)
        assert "past the end" in str(e.value) and "4096 bytes" in str(e.value)
        with pytest.raises(InferenceServerException) as e:
            client.register_system_shared_memory("too_far", obj.key, 16, offset=4090)
        assert "past the end" in str(e.value)
        names = [r["name"] for r in client.get_system_shared_memory_status()]
        assert "too_big" not in names and "too_far" not in names
    finally:
        obj.close()
    still_serving(server)


def test_an_output_region_too_small_for_the_answer_is_refused(server):
    with Region(server, 32) as region:
        r = infer_raw(server, [plain_input("INPUT0"), plain_input("INPUT1")],
                      [{"name": "OUTPUT0", "parameters": {"shared_memory_region": region.name,
                                                          "shared_memory_byte_size": 32}}])
        refused(r, "output 'OUTPUT0'", "64 bytes", "32")
        assert region.obj.read(32) == b"\0" * 32, "nothing was written"
    still_serving(server)


def inference_counts(server):
    stats = requests.get(f"http://{server.http}/v2/models/add_sub/stats", timeout=10).json()
    inference = stats["model_stats"][0]["inference_stats"]
    return inference["success"]["count"], inference["fail"]["count"]


@pytest.mark.parametrize("direction", ["input", "output"])
def test_a_region_shrunk_by_ftruncate_fails_its_requests_not_the_server(server, direction):
    size = 3 * 4096
    with Region(server, size) as region:
        a, _ = add_sub_inputs()
        region.obj.write(np.tile(a, 3 * 4096 // 64).tobytes()[:size])
        region.obj.truncate(0)
        before = inference_counts(server)
        if direction == "input":
            r = infer_raw(server, [shm_input("INPUT0", region.name, 64, offset=8192), plain_input("INPUT1")])
            # The model read zero pages: the engine counts a failure (what
            # its taps and the response cache see too), never a success.
            success, fail = inference_counts(server)
            assert (success, fail) == (before[0], before[1] + 1), (before, success, fail)
        else:
            r = infer_raw(server, [plain_input("INPUT0"), plain_input("INPUT1")],
                          [{"name": "OUTPUT0", "parameters": {"shared_memory_region": region.name,
                                                              "shared_memory_byte_size": 64,
                                                              "shared_memory_offset": 4096}}])
        refused(r, "shrank", region.name)
        # The region stays refused until registered again.
        r = infer_raw(server, [shm_input("INPUT0", region.name, 64), plain_input("INPUT1")])
        refused(r, "shrank")
        still_serving(server)
        region.obj.truncate(size)
    # Recreated and registered again, it serves.
    with Region(server, 128) as fresh:
        fresh.obj.write(np.arange(16, dtype=np.int32).tobytes())
        r = infer_raw(server, [shm_input("INPUT0", fresh.name, 64), plain_input("INPUT1")])
        assert r.status_code == 200, r.text
        out = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert out["OUTPUT0"] == [2 * i for i in range(16)]


def test_unknown_keys_and_regions_are_refused(server):
    client = httpclient.InferenceServerClient(server.http)
    with pytest.raises(InferenceServerException) as e:
        client.register_system_shared_memory("nokey", "/" + unique("missing"), 64)
    assert "cannot open shared memory object" in str(e.value)
    for key in ("/../../etc/passwd", "/a/b", ""):
        with pytest.raises(InferenceServerException) as e:
            client.register_system_shared_memory("bad", key, 64)
        assert "key" in str(e.value)
    r = infer_raw(server, [shm_input("INPUT0", "never_registered", 64), plain_input("INPUT1")])
    refused(r, "input 'INPUT0'", "'never_registered' is not registered")
    with pytest.raises(InferenceServerException) as e:
        client.get_system_shared_memory_status("never_registered")
    assert "never_registered" in str(e.value)
    # A name taken twice.
    with Region(server, 64) as region:
        with pytest.raises(InferenceServerException) as e:
            client.register_system_shared_memory(region.name, region.obj.key, 64)
        assert "registered already" in str(e.value)
    # Both data and a region for one input.
    with Region(server, 64) as region:
        both = shm_input("INPUT0", region.name, 64)
        both["data"] = list(range(16))
        refused(infer_raw(server, [both, plain_input("INPUT1")]), "also sends data")
    still_serving(server)


def test_keys_outside_the_allow_list_are_refused():
    server = QuiverServer(extra_args=["--shared-memory-key-prefix", "/quiver_ok_,/other_"])
    allowed = RawObject(64, key="/quiver_ok_" + uuid.uuid4().hex[:8])
    denied = RawObject(64)
    try:
        client = httpclient.InferenceServerClient(server.http)
        client.register_system_shared_memory("ok", allowed.key, 64)
        with pytest.raises(InferenceServerException) as e:
            client.register_system_shared_memory("denied", denied.key, 64)
        assert "outside the allowed prefixes" in str(e.value)
        g = grpcclient.InferenceServerClient(server.grpc)
        with pytest.raises(InferenceServerException) as e:
            g.register_system_shared_memory("denied", denied.key, 64)
        assert "PERMISSION_DENIED" in str(e.value) or "outside the allowed" in str(e.value)
        assert list(g.get_system_shared_memory_status().regions) == ["ok"]
        still_serving(server)
    finally:
        allowed.close()
        denied.close()
        server.stop()


def test_unregister_during_requests_fails_none_that_started_and_never_crashes(server):
    obj = RawObject(2 * ADD_SUB_BYTES)
    a, b = add_sub_inputs()
    obj.write(a.tobytes() + b.tobytes())
    name = unique("churn")
    client = httpclient.InferenceServerClient(server.http)
    client.register_system_shared_memory(name, obj.key, 2 * ADD_SUB_BYTES)
    stop = threading.Event()
    results = {"ok": 0, "unregistered": 0, "other": []}

    def drive():
        g = grpcclient.InferenceServerClient(server.grpc)
        while not stop.is_set():
            inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
                      grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
            inputs[0].set_shared_memory(name, ADD_SUB_BYTES)
            inputs[1].set_shared_memory(name, ADD_SUB_BYTES, offset=ADD_SUB_BYTES)
            try:
                r = g.infer("add_sub", inputs)
                assert (r.as_numpy("OUTPUT0") == a + b).all() and (r.as_numpy("OUTPUT1") == a - b).all()
                results["ok"] += 1
            except InferenceServerException as e:
                if "is not registered" in str(e):
                    results["unregistered"] += 1
                else:
                    results["other"].append(str(e))

    threads = [threading.Thread(target=drive) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(150):
            client.unregister_system_shared_memory(name)
            client.register_system_shared_memory(name, obj.key, 2 * ADD_SUB_BYTES)
    finally:
        stop.set()
        for t in threads:
            t.join()
        client.unregister_system_shared_memory(name)
        obj.close()
    assert results["other"] == []
    assert results["ok"] > 0, results
    still_serving(server)


def test_registering_memory_needs_the_control_token():
    server = QuiverServer(extra_args=["--data-token", "data-secret", "--control-token", "control-secret"])
    # A new dict per call: tritonclient.http adds its own headers to the one it is given.
    def data():
        return {"authorization": "Bearer data-secret"}

    def control():
        return {"authorization": "Bearer control-secret"}

    obj = RawObject(2 * ADD_SUB_BYTES)
    a, b = add_sub_inputs()
    obj.write(a.tobytes() + b.tobytes())
    try:
        client = httpclient.InferenceServerClient(server.http)
        with pytest.raises(InferenceServerException) as e:
            client.register_system_shared_memory("r", obj.key, 2 * ADD_SUB_BYTES, headers=data())
        assert "control-plane token" in str(e.value)
        g = grpcclient.InferenceServerClient(server.grpc)
        with pytest.raises(InferenceServerException) as e:
            g.register_system_shared_memory("r", obj.key, 2 * ADD_SUB_BYTES, headers=data())
        assert "control-plane token" in str(e.value)
        with pytest.raises(InferenceServerException):
            client.get_system_shared_memory_status(headers=data())
        client.register_system_shared_memory("r", obj.key, 2 * ADD_SUB_BYTES, headers=control())
        # Using a registered region is inference: the data token.
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory("r", ADD_SUB_BYTES)
        inputs[1].set_shared_memory("r", ADD_SUB_BYTES, offset=ADD_SUB_BYTES)
        result = client.infer("add_sub", inputs, headers=data())
        assert (result.as_numpy("OUTPUT0") == a + b).all()
        client.unregister_system_shared_memory("r", headers=control())
    finally:
        obj.close()
        server.stop()


def test_streams_and_ensembles_read_and_write_shared_memory(server):
    """A gRPC stream's requests, and an ensemble's inputs and outputs, go
    through the same regions as a unary call to one model."""
    rows = np.random.default_rng(7).standard_normal((4, 32)).astype(np.float32)
    name = unique("pipe")
    region = shm.create_shared_memory_region(name, "/" + name, rows.nbytes + 64)
    g = grpcclient.InferenceServerClient(server.grpc)
    try:
        shm.set_shared_memory_region(region, [rows])
        g.register_system_shared_memory(name, "/" + name, rows.nbytes + 64)

        def request(lib):
            x = lib.InferInput("raw", [4, 32], "FP32")
            x.set_shared_memory(name, rows.nbytes)
            y = lib.InferRequestedOutput("probabilities")
            y.set_shared_memory(name, 64, offset=rows.nbytes)
            return [x], [y]

        plain = grpcclient.InferInput("raw", [4, 32], "FP32")
        plain.set_data_from_numpy(rows)
        expected = g.infer("fraud_pipeline", [plain]).as_numpy("probabilities")

        inputs, outputs = request(grpcclient)
        g.infer("fraud_pipeline", inputs, outputs=outputs)
        got = shm.get_contents_as_numpy(region, np.float32, [4, 2], offset=rows.nbytes)
        np.testing.assert_allclose(got, expected, rtol=1e-6)

        shm.set_shared_memory_region(region, [np.zeros((4, 2), np.float32)], offset=rows.nbytes)
        answers = []
        done = threading.Event()

        def callback(result, error):
            answers.append(error or result)
            done.set()

        g.start_stream(callback=callback)
        try:
            inputs, outputs = request(grpcclient)
            g.async_stream_infer("fraud_pipeline", inputs, outputs=outputs)
            assert done.wait(30)
        finally:
            g.stop_stream()
        assert not isinstance(answers[0], Exception), answers[0]
        got = shm.get_contents_as_numpy(region, np.float32, [4, 2], offset=rows.nbytes)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        g.unregister_system_shared_memory(name)
    finally:
        shm.destroy_shared_memory_region(region)


@pytest.fixture(scope="module")
def stand_in_cuda(tmp_path_factory):
    """A server whose CUDA runtime and driver are fake_cuda.c: "device
    memory" is POSIX shared memory. It checks quiver's side of CUDA shared
    memory (loading, signatures, endpoints, data path) on a machine without
    a GPU; scripts/gpu-check.sh checks CUDA itself."""
    lib = tmp_path_factory.mktemp("fake_cuda")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_cuda.c")
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(lib / "libcudart.so.12"), source], check=True)
    # One library for both (the same file is loaded once): the driver's
    # call looks up what the runtime's opened.
    os.symlink(lib / "libcudart.so.12", lib / "libcuda.so.1")
    server = QuiverServer(extra_args=["--cuda-library-path", str(lib)], env={"LD_LIBRARY_PATH": str(lib)})
    yield server
    assert server.alive(), "quiver exited during the CUDA shared memory tests"
    server.stop()


def stand_in_handle(key):
    """The base64 of a handle as fake_cuda.c reads it, as tritonclient's
    cuda_shared_memory.get_raw_handle returns a real one."""
    raw = b"QVFAKECU" + key.encode()
    return base64.b64encode(raw + b"\0" * (64 - len(raw)))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_cuda_regions_through_tritonclient_with_a_stand_in_runtime(stand_in_cuda, protocol):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(stand_in_cuda.http if protocol == "http" else stand_in_cuda.grpc)
    device_in, device_out = RawObject(128), RawObject(128)
    names = unique("cuda_in"), unique("cuda_out")
    try:
        a, b = add_sub_inputs()
        device_in.write(a.tobytes())
        device_in.write(b.tobytes(), 64)
        client.register_cuda_shared_memory(names[0], stand_in_handle(device_in.key), 0, 128)
        client.register_cuda_shared_memory(names[1], stand_in_handle(device_out.key), 0, 128)
        status = client.get_cuda_shared_memory_status()
        listed = {r["name"]: r for r in status} if protocol == "http" else dict(status.regions)
        assert set(names) <= set(listed)
        entry = listed[names[0]]
        assert (entry["byte_size"], entry["device_id"]) == (128, 0) if protocol == "http" else \
            (entry.byte_size, entry.device_id) == (128, 0)
        # The system endpoints do not see CUDA regions.
        system = client.get_system_shared_memory_status()
        system_names = [r["name"] for r in system] if protocol == "http" else list(system.regions)
        assert names[0] not in system_names

        inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory(names[0], 64)
        inputs[1].set_shared_memory(names[0], 64, offset=64)
        outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory(names[1], 64)
        outputs[1].set_shared_memory(names[1], 64, offset=64)
        result = client.infer("add_sub", inputs, outputs=outputs)
        out0 = result.get_output("OUTPUT0")
        if protocol == "http":
            assert out0 == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16]}
        else:
            assert out0.parameters["shared_memory_region"].string_param == names[1]
        got = np.frombuffer(device_out.read(128), dtype=np.int32)
        np.testing.assert_array_equal(got[:16], (a + b).ravel())
        np.testing.assert_array_equal(got[16:], (a - b).ravel())

        # Misuses: each refused with its reason, the server still serving.
        with pytest.raises(InferenceServerException, match="larger than the exported allocation"):
            client.register_cuda_shared_memory(unique("big"), stand_in_handle(device_in.key), 0, 4096)
        with pytest.raises(InferenceServerException, match="device_id 3 does not exist"):
            client.register_cuda_shared_memory(unique("dev"), stand_in_handle(device_in.key), 3, 128)
        with pytest.raises(InferenceServerException, match="invalid resource handle"):
            client.register_cuda_shared_memory(unique("bad"), base64.b64encode(bytes(64)), 0, 128)
        with pytest.raises(InferenceServerException, match="registered already"):
            client.register_cuda_shared_memory(names[0], stand_in_handle(device_in.key), 0, 128)
        inputs[1].set_shared_memory(names[0], 64, offset=96)
        with pytest.raises(InferenceServerException, match="past the end of region"):
            client.infer("add_sub", inputs, outputs=outputs)
        client.unregister_system_shared_memory()
        client.unregister_cuda_shared_memory(names[0])
        with pytest.raises(InferenceServerException, match="is not registered"):
            client.infer("add_sub", inputs, outputs=outputs)
        client.unregister_cuda_shared_memory()
        status = client.get_cuda_shared_memory_status()
        assert (status == []) if protocol == "http" else (len(status.regions) == 0)
        assert client.is_server_live()
    finally:
        device_in.close()
        device_out.close()

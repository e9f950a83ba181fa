"""Request tracing against the real server: an OTLP/HTTP receiver started
here decodes what quiver exports with the reference protobuf classes
(opentelemetry-proto); tritonclient changes the trace settings over HTTP
and gRPC; Triton's trace file mode writes its JSON files."""
import contextlib
import glob
import json
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from post_server import serve_posts
from quiver_server import MODELS, QuiverServer

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
MODEL_EVENTS = ["REQUEST_START", "QUEUE_START", "REQUEST_END"]
COMPUTE_EVENTS = ["COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "COMPUTE_END"]


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.server, base = serve_posts(self._post)
        self.url = base + "/v1/traces"

    def _post(self, path, headers, body):
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        with self.lock:
            self.requests.append((path, headers.get("content-type"), message))
        return 200

    def spans(self):
        with self.lock:
            messages = [m for _, _, m in self.requests]
        return [s for m in messages for rs in m.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def traces(self, requests_only=True):
        """Spans by trace id: the traces of requests (their root is
        InferRequest), or every trace (model loads too)."""
        out = {}
        for s in self.spans():
            out.setdefault(s.trace_id.hex(), []).append(s)
        if requests_only:
            out = {t: spans for t, spans in out.items() if any(s.name == "InferRequest" for s in spans)}
        return out

    def wait_for_traces(self, n, timeout=30):
        deadline = time.time() + timeout
        while len(self.traces()) < n and time.time() < deadline:
            time.sleep(0.1)
        return self.traces()

    def close(self):
        self.server.shutdown()


def otel_args(url, *extra):
    return ["--trace-config", "mode=opentelemetry", "--trace-config", f"opentelemetry,url={url}",
            "--trace-config", "opentelemetry,bsp_schedule_delay=100",
            "--trace-config", "opentelemetry,resource=deployment.environment=test", *extra]


@contextlib.contextmanager
def traced(*extra, repository=MODELS):
    """A quiver exporting to a receiver of its own, both stopped after."""
    receiver = Receiver()
    server = QuiverServer(repository=repository, extra_args=otel_args(receiver.url, *extra))
    try:
        yield server, receiver
    finally:
        server.stop()
        receiver.close()


def attributes(span):
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


def add_sub_json(rid="r"):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    return {"id": rid, "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": a.flatten().tolist()},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": a.flatten().tolist()}]}


def grpc_request(rid):
    req = service_pb2.ModelInferRequest(model_name="add_sub", id=rid)
    for name in ("INPUT0", "INPUT1"):
        t = req.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        t.contents.int_contents.extend(range(16))
    return req


def check_trace(spans, model="add_sub", parent=None):
    """The spans of one traced request: InferRequest > model > compute, with
    Triton's events in order and times that nest."""
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == sorted(["InferRequest", model, "compute"]), [s.name for s in spans]
    root, m, c = by_name["InferRequest"], by_name[model], by_name["compute"]
    assert root.kind == root.SPAN_KIND_SERVER
    assert root.parent_span_id.hex() == (parent or "")
    assert m.parent_span_id == root.span_id and c.parent_span_id == m.span_id
    assert [e.name for e in m.events] == MODEL_EVENTS
    assert [e.name for e in c.events] == COMPUTE_EVENTS
    for s in (root, m, c):
        times = [e.time_unix_nano for e in s.events]
        assert times == sorted(times)
        assert s.start_time_unix_nano <= s.end_time_unix_nano
    assert root.start_time_unix_nano <= m.start_time_unix_nano <= c.start_time_unix_nano
    assert c.end_time_unix_nano <= m.end_time_unix_nano <= root.end_time_unix_nano
    a = attributes(m)
    assert a["triton.model_name"] == model and a["triton.model_version"] == 1
    assert attributes(c)["quiver.batch.execution"] > 0
    assert attributes(c)["quiver.batch.requests"] >= 1
    return root, m, c


def test_a_traced_request_over_rest_grpc_and_a_stream():
    with traced("--trace-config", "level=TIMESTAMPS", "--trace-config", "rate=1") as (server, receiver):
        parents = {}
        # REST, with the client's trace context: the answer carries the trace.
        tp = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
        r = requests.post(f"http://{server.http}/v2/models/add_sub/infer", json=add_sub_json("rest"),
                          headers={"traceparent": tp}, timeout=10)
        assert r.status_code == 200
        assert r.headers["traceparent"].startswith(f"00-{CLIENT_TRACE}-")
        parents[CLIENT_TRACE] = (CLIENT_SPAN, "rest", "http")

        # gRPC unary with its own context, read back from the initial metadata.
        channel = grpc.insecure_channel(server.grpc)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        g_trace, g_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        _, call = stub.ModelInfer.with_call(grpc_request("grpc"),
                                            metadata=[("traceparent", f"00-{g_trace}-{g_span}-01")])
        answered = dict(call.initial_metadata())
        assert answered["traceparent"].startswith(f"00-{g_trace}-")
        parents[g_trace] = (g_span, "grpc", "grpc")

        # A stream: its metadata's context parents each request on it.
        s_trace, s_span = "11111111111111111111111111111111", "2222222222222222"
        g = grpcclient.InferenceServerClient(server.grpc)
        got = []
        g.start_stream(callback=lambda result, error: got.append((result, error)),
                       headers={"traceparent": f"00-{s_trace}-{s_span}-01"})
        inputs = [grpcclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
        g.async_stream_infer("add_sub", inputs, request_id="stream")
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            time.sleep(0.05)
        g.stop_stream()
        assert got and got[0][1] is None
        parents[s_trace] = (s_span, "stream", "grpc-stream")

        # Without a context: a trace of its own, named in the answer.
        r = requests.post(f"http://{server.http}/v2/models/add_sub/infer", json=add_sub_json("fresh"), timeout=10)
        own = r.headers["traceparent"].split("-")[1]
        assert own not in parents

        traces = receiver.wait_for_traces(4)
        assert set(parents) | {own} == set(traces)
        for trace_id, (span, rid, protocol) in parents.items():
            root, m, _ = check_trace(traces[trace_id], parent=span)
            assert attributes(m)["triton.request_id"] == rid
            assert attributes(root)["quiver.protocol"] == protocol
            events = (["HTTP_RECV_END", "HTTP_SEND_START", "HTTP_SEND_END"] if protocol == "http"
                      else ["GRPC_WAITREAD_END", "GRPC_SEND_START", "GRPC_SEND_END"])
            assert [e.name for e in root.events] == events
        root, _, compute = check_trace(traces[own])
        assert r.headers["traceparent"].split("-")[2] == root.span_id.hex()

        # Each compute span links to its execution's batch span, a trace of its own.
        link, = compute.links
        batch, = receiver.traces(requests_only=False)[link.trace_id.hex()]
        assert batch.name == "batch" and batch.span_id == link.span_id and not batch.parent_span_id
        assert attributes(batch)["quiver.batch.execution"] == attributes(compute)["quiver.batch.execution"]
        assert [e.name for e in batch.events] == COMPUTE_EVENTS

        path, content_type, message = receiver.requests[0]
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        resource = {kv.key: kv.value.string_value for kv in message.resource_spans[0].resource.attributes}
        assert resource["service.name"] == "quiver"
        assert resource["deployment.environment"] == "test"


def test_rate_counts_requests_exactly_and_count_stops():
    with traced("--trace-config", "level=TIMESTAMPS", "--trace-config", "rate=100") as (server, receiver):
        def send(n):
            with requests.Session() as s:
                for _ in range(n):
                    assert s.post(f"http://{server.http}/v2/models/add_sub/infer", json=add_sub_json(),
                                  timeout=10).status_code == 200

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, [2500] * 4))
        traces = receiver.wait_for_traces(100)
        time.sleep(0.5)
        assert len(receiver.traces()) == 100

        # Counted, not sampled: rate 10 and a count of 5 give 5 more, then none.
        h = httpclient.InferenceServerClient(server.http)
        settings = h.update_trace_settings(settings={"trace_rate": "10", "trace_count": "5"})
        assert settings["trace_rate"] == "10" and settings["trace_count"] == "5"
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, [250] * 4))
        receiver.wait_for_traces(105)
        time.sleep(0.5)
        assert len(receiver.traces()) == 105
        assert h.get_trace_settings()["trace_count"] == "0"
        for spans in traces.values():
            check_trace(spans)


def test_settings_round_trip_with_tritonclient_and_bad_values_are_refused():
    server = QuiverServer()
    try:
        h = httpclient.InferenceServerClient(server.http)
        g = grpcclient.InferenceServerClient(server.grpc)
        assert "trace" in h.get_server_metadata()["extensions"]
        defaults = {"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1", "log_frequency": "0",
                    "trace_file": "", "trace_mode": "triton"}
        assert h.get_trace_settings() == defaults

        def grpc_settings(model_name=None):
            got = g.get_trace_settings(model_name=model_name, as_json=True)["settings"]
            return {k: v.get("value", []) for k, v in got.items()}

        assert grpc_settings() == {k: v if isinstance(v, list) else [v] for k, v in defaults.items()}

        # A model's own setting: what it names, the rest from the global one.
        answer = h.update_trace_settings(model_name="add_sub", settings={"trace_rate": "7"})
        assert answer == dict(defaults, trace_rate="7")
        g.update_trace_settings(model_name="add_sub", settings={"trace_level": ["TIMESTAMPS"]})
        assert h.get_trace_settings(model_name="add_sub") == dict(defaults, trace_rate="7",
                                                                  trace_level=["TIMESTAMPS"])
        # The global setting changes; the model keeps its own fields and follows the rest.
        g.update_trace_settings(settings={"trace_count": "50"})
        assert grpc_settings("add_sub")["trace_count"] == ["50"]
        assert grpc_settings("add_sub")["trace_rate"] == ["7"]
        assert h.get_trace_settings() == dict(defaults, trace_count="50")
        # null clears: a model with nothing of its own follows the global setting.
        h.update_trace_settings(model_name="add_sub", settings={"trace_rate": None})
        g.update_trace_settings(model_name="add_sub", settings={"trace_level": None})
        assert h.get_trace_settings(model_name="add_sub") == dict(defaults, trace_count="50")
        h.update_trace_settings(settings={"trace_count": None})
        assert h.get_trace_settings() == defaults

        for settings, needle in [({"trace_level": ["LOUD"]}, "trace_level"),
                                 ({"trace_rate": "-1"}, "trace_rate"),
                                 ({"trace_count": "many"}, "trace_count"),
                                 ({"log_frequency": "-3"}, "log_frequency"),
                                 ({"trace_file": "/etc/passwd"}, "trace_file"),
                                 ({"colour": "blue"}, "colour")]:
            r = requests.post(f"http://{server.http}/v2/trace/setting", json=settings, timeout=10)
            assert r.status_code == 400 and needle in r.json()["error"], (settings, r.text)
            with pytest.raises(InferenceServerException) as e:
                g.update_trace_settings(settings=settings)
            assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and needle in e.value.message()
        assert h.get_trace_settings() == defaults
    finally:
        server.stop()


def test_tensors_level_is_refused_in_opentelemetry_mode_at_start_and_at_run_time():
    receiver = Receiver()
    try:
        server = QuiverServer(extra_args=otel_args(receiver.url))
        try:
            r = requests.post(f"http://{server.http}/v2/trace/setting", json={"trace_level": ["TENSORS"]},
                              timeout=10)
            assert r.status_code == 400 and "not supported with OpenTelemetry" in r.json()["error"]
        finally:
            server.stop()
        with pytest.raises(RuntimeError) as e:
            QuiverServer(extra_args=otel_args(receiver.url, "--trace-config", "level=TENSORS"))
        assert "not supported with OpenTelemetry" in str(e.value)
    finally:
        receiver.close()


def test_a_receiver_that_is_down_fails_no_request_and_is_counted():
    server = QuiverServer(extra_args=otel_args("http://127.0.0.1:9/v1/traces", "--trace-config", "rate=1"))
    try:
        # Turned on after start-up, so that only the requests are traced.
        httpclient.InferenceServerClient(server.http).update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]})
        with requests.Session() as s:
            for i in range(50):
                assert s.post(f"http://{server.http}/v2/models/add_sub/infer", json=add_sub_json(),
                              timeout=10).status_code == 200
        deadline = time.time() + 20
        failed = 0
        # Four spans a request: each ran alone, so its batch span is its own.
        while time.time() < deadline and failed < 200:
            text = requests.get(f"http://{server.metrics}/metrics", timeout=10).text
            m = re.search(r"^quiver_trace_spans_failed_total (\S+)$", text, re.M)
            failed = float(m.group(1)) if m else 0
            time.sleep(0.2)
        assert failed == 200
    finally:
        server.stop()


def test_triton_mode_writes_its_trace_file_every_log_frequency_traces():
    tmp = tempfile.mkdtemp(prefix="quiver-trace-")
    path = os.path.join(tmp, "trace.json")
    server = QuiverServer(extra_args=["--trace-config", f"triton,file={path}", "--trace-config",
                                      "triton,log-frequency=2", "--trace-config", "level=TIMESTAMPS",
                                      "--trace-config", "rate=1"])

    def send(ids):
        with requests.Session() as s:
            for i in ids:
                assert s.post(f"http://{server.http}/v2/models/add_sub/infer", json=add_sub_json(f"r{i}"),
                              timeout=10).status_code == 200

    def wait_for_files(n):
        deadline = time.time() + 10
        while len(glob.glob(path + ".*")) < n and time.time() < deadline:
            time.sleep(0.1)

    try:
        send(range(5))
        wait_for_files(2)
        # The frequency changes at run time: the fifth trace and the next two fill a file of three.
        h = httpclient.InferenceServerClient(server.http)
        assert h.update_trace_settings(settings={"log_frequency": "3"})["log_frequency"] == "3"
        send(range(5, 7))
        wait_for_files(3)
    finally:
        server.stop()
    files = sorted(glob.glob(path + ".*"))
    assert [os.path.basename(f) for f in files] == ["trace.json.0", "trace.json.1", "trace.json.2"]
    ids = []
    for f in files:
        entries = json.load(open(f))
        heads = [e for e in entries if "model_name" in e]
        assert all(h["model_name"] == "add_sub" and h["model_version"] == 1 for h in heads)
        for e in entries:
            if "timestamps" in e:
                names = [t["name"] for t in e["timestamps"]]
                assert names == ["HTTP_RECV_END", "REQUEST_START", "QUEUE_START", *COMPUTE_EVENTS, "REQUEST_END",
                                 "HTTP_SEND_START", "HTTP_SEND_END"]
                ns = [t["ns"] for t in e["timestamps"]]
                assert ns == sorted(ns)
        ids += [h["request_id"] for h in heads]
    # Two entries a trace: its identity, then its timestamps.
    assert [len(json.load(open(f))) for f in files] == [4, 4, 6]
    assert ids == [f"r{i}" for i in range(7)]


def test_loads_and_swaps_are_traced_step_by_step():
    repo = os.path.join(tempfile.mkdtemp(prefix="quiver-trace-"), "repo")
    shutil.copytree(os.path.join(MODELS, "add_sub"), os.path.join(repo, "add_sub"))
    with traced("--trace-config", "level=TIMESTAMPS", "--model-control-mode", "explicit", "--load-model", "add_sub",
                repository=repo) as (server, receiver):
        def loads():
            out = []
            for spans in receiver.traces(requests_only=False).values():
                roots = [s for s in spans if not s.parent_span_id]
                if roots and roots[0].name in ("ModelLoad", "ModelDrain"):
                    steps = sorted((s for s in spans if s.parent_span_id), key=lambda s: s.start_time_unix_nano)
                    out.append((roots[0], [(s.name, attributes(s).get("triton.model_version")) for s in steps]))
            return sorted(out, key=lambda x: x[0].start_time_unix_nano)

        deadline = time.time() + 20
        while len(loads()) < 1 and time.time() < deadline:
            time.sleep(0.1)
        (root, steps), = loads()
        assert root.name == "ModelLoad" and attributes(root)["triton.model_name"] == "add_sub"
        assert steps == [("load", 1), ("warm-up", 1), ("switch", None)]

        # A new version swaps in; the old one drains.
        shutil.copytree(os.path.join(repo, "add_sub", "1"), os.path.join(repo, "add_sub", "2"))
        httpclient.InferenceServerClient(server.http).load_model("add_sub")
        deadline = time.time() + 20
        while len(loads()) < 3 and time.time() < deadline:
            time.sleep(0.1)
        (_, first), (swap, swap_steps), (drain, drain_steps) = loads()
        assert swap.name == "ModelLoad" and swap_steps == [("load", 2), ("warm-up", 2), ("switch", None)]
        assert drain.name == "ModelDrain" and drain_steps == [("drain", 1)]
        assert swap.end_time_unix_nano <= drain.end_time_unix_nano


def test_the_log_lines_of_a_traced_request_name_its_trace_and_span():
    with traced("--trace-config", "level=TIMESTAMPS", "--trace-config", "rate=1", "--log-verbose", "1") as (
            server, receiver):
        r = requests.post(f"http://{server.http}/v2/models/add_sub/infer", json=add_sub_json("logged"),
                          headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}, timeout=10)
        span = r.headers["traceparent"].split("-")[2]
        deadline = time.time() + 10
        answered = []
        while not answered and time.time() < deadline:
            answered = [line for line in server.log if "answered" in line and 'id=logged' in line]
            time.sleep(0.05)
        assert answered, "".join(server.log[-20:])
        assert f"trace_id={CLIENT_TRACE}" in answered[0] and f"span_id={span}" in answered[0], answered[0]
        # The root span the trace shows is the one the log names.
        traces = receiver.wait_for_traces(1)
        root = next(s for s in traces[CLIENT_TRACE] if s.name == "InferRequest")
        assert root.span_id.hex() == span


def fraud_pipeline_json(rid):
    from golden import GOLDEN
    return {"id": rid, "inputs": GOLDEN["fraud_pipeline"]["inputs"]}


def test_an_ensemble_request_traces_each_step_under_the_pipeline():
    with traced("--trace-config", "level=TIMESTAMPS", "--trace-config", "rate=1") as (server, receiver):
        r = requests.post(f"http://{server.http}/v2/models/fraud_pipeline/infer", json=fraud_pipeline_json("p1"),
                          timeout=10)
        assert r.status_code == 200, r.text
        traces = receiver.wait_for_traces(1)
        spans = list(traces.values())[0]
        deadline = time.time() + 10
        while len(spans) < 6 and time.time() < deadline:
            time.sleep(0.1)
            spans = list(receiver.traces().values())[0]
    by_name = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    pipeline = by_name["fraud_pipeline"][0]
    assert by_name["InferRequest"][0].span_id == pipeline.parent_span_id
    scaler, mlp = by_name["fraud_scaler"][0], by_name["fraud_mlp"][0]
    # Each step is the step model's own request: a child of the pipeline's
    # span, with Triton's events, inside the pipeline's time, one after the other.
    for step, index in ((scaler, 0), (mlp, 1)):
        assert step.parent_span_id == pipeline.span_id
        assert [e.name for e in step.events] == MODEL_EVENTS
        assert attributes(step)["quiver.ensemble.step"] == index
        assert attributes(step)["triton.model_version"] == 1
        assert pipeline.start_time_unix_nano <= step.start_time_unix_nano <= step.end_time_unix_nano
        assert step.end_time_unix_nano <= pipeline.end_time_unix_nano
    assert scaler.end_time_unix_nano <= mlp.start_time_unix_nano
    computes = [s for s in by_name["compute"]]
    assert {c.parent_span_id for c in computes} == {scaler.span_id, mlp.span_id}
    for c in computes:
        assert [e.name for e in c.events] == COMPUTE_EVENTS


def test_triton_mode_writes_an_ensembles_steps_as_child_traces():
    tmp = tempfile.mkdtemp(prefix="quiver-trace-")
    path = os.path.join(tmp, "trace.json")
    server = QuiverServer(extra_args=["--trace-config", f"triton,file={path}", "--trace-config", "level=TIMESTAMPS",
                                      "--trace-config", "rate=1"])
    try:
        r = requests.post(f"http://{server.http}/v2/models/fraud_pipeline/infer", json=fraud_pipeline_json("p2"),
                          timeout=10)
        assert r.status_code == 200, r.text
    finally:
        server.stop()
    entries = json.load(open(path))
    heads = {e["model_name"]: e for e in entries if "model_name" in e}
    assert set(heads) == {"fraud_pipeline", "fraud_scaler", "fraud_mlp"}
    top = heads["fraud_pipeline"]
    assert "parent_id" not in top
    for step in ("fraud_scaler", "fraud_mlp"):
        assert heads[step]["parent_id"] == top["id"]
        assert heads[step]["request_id"] == "p2"
        stamps = next(e for e in entries if e.get("id") == heads[step]["id"] and "timestamps" in e)
        assert [t["name"] for t in stamps["timestamps"]] == ["REQUEST_START", "QUEUE_START", *COMPUTE_EVENTS,
                                                             "REQUEST_END"]

"""Payload logging against the real server, with sinks started here.

- 10,000 mixed requests (REST JSON, REST binary, gRPC, gRPC stream) each
  arrive exactly once as a request event and once as a response event with
  the same ce-id, read by the CloudEvents SDK, with bodies that decode to the
  tensors sent and answered; the ce- header set is KServe's; failed
  requests are logged with their error.
- A sink that answers 503 for 30 s loses nothing that was not counted, and
  serving never fails.
- A sink that never answers: quiver's memory stays within the queue's bound,
  dropped events are counted, every request is answered.
- The file sink: JSON Lines, rotated, flushed on SIGTERM. Batch mode.
"""
import glob
import json
import os
import queue
import re
import shutil
import signal
import tempfile
import threading
import time

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from post_server import serve_posts
from quiver_server import MODELS, QuiverServer

# KServe's logger (pkg/logger/worker.go) sets exactly these on every event.
KSERVE_HEADERS = {
    "ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time", "ce-recordedtime",
    "ce-inferenceservicename", "ce-namespace", "ce-component", "ce-endpoint", "ce-metadata",
}
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
DTYPES = {"INT32": np.int32, "FP32": np.float32}


class Sink:
    """A CloudEvents receiver on 127.0.0.1. `fail_until`: answer 503 until
    then; `hang`: never answer."""

    def __init__(self, hang=False):
        self.posts = []
        self.refused = 0
        self.lock = threading.Lock()
        self.fail_until = 0.0
        self.status = 200
        self.hang = hang
        self.server, base = serve_posts(self._post)
        self.url = base + "/"

    def _post(self, path, headers, body):
        if self.hang:
            time.sleep(3600)
        status = 503 if time.time() < self.fail_until else self.status
        with self.lock:
            if status == 200:
                self.posts.append((headers, body))
            else:
                self.refused += 1
        return status

    def events(self):
        """Every event received, read by the CloudEvents SDK (batches split)."""
        with self.lock:
            posts = list(self.posts)
        out = []
        for headers, body in posts:
            if headers.get("content-type") == "application/cloudevents-batch+json":
                for e in json.loads(body):
                    out.append((None, structured(json.dumps(e).encode())))
            else:
                out.append((headers, from_http_event(HTTPMessage(headers=headers, body=body))))
        return out

    def wait_for(self, n, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.events()) >= n:
                return
            time.sleep(0.2)

    def close(self):
        self.server.shutdown()


def structured(line):
    return from_http_event(HTTPMessage(headers={"content-type": "application/cloudevents+json"}, body=line))


def metric(server, name, **labels):
    text = requests.get(f"http://{server.metrics}/metrics", timeout=10).text
    total = 0.0
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        if all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def tensors(body, header_length=None):
    """The tensors of a V2 request or answer body, by name."""
    if header_length is None:
        doc, blobs = json.loads(body), b""
    else:
        doc, blobs = json.loads(body[:header_length]), body[header_length:]
    out, offset = {}, 0
    for t in doc.get("inputs", doc.get("outputs", [])):
        dtype = DTYPES[t["datatype"]]
        size = t.get("parameters", {}).get("binary_data_size")
        if size is not None:
            a = np.frombuffer(blobs[offset:offset + size], dtype=dtype)
            offset += size
        else:
            a = np.array(t["data"], dtype=dtype)
        out[t["name"]] = a.reshape(t["shape"])
    return doc, out


def add_sub_inputs(rng):
    return rng.integers(-1000, 1000, (1, 16), dtype=np.int32), rng.integers(-1000, 1000, (1, 16), dtype=np.int32)


def repository(tmp, *models):
    """A repository in `tmp` holding copies of the named demo models."""
    repo = os.path.join(tmp, "repo")
    for m in models:
        shutil.copytree(os.path.join(MODELS, m), os.path.join(repo, m))
    return repo


def http_add_sub(a, b, binary):
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    return inputs


def test_every_request_and_answer_once_over_rest_grpc_and_streams():
    sink = Sink()
    server = QuiverServer(extra_args=[
        "--payload-log-url", sink.url, "--payload-log-metadata-headers", "x-user",
        "--payload-log-queue", "100000", "--payload-log-inference-service", "adder",
        "--payload-log-namespace", "ml", "--load-model", "add_sub", "--model-control-mode", "explicit"])
    rng = np.random.default_rng(7)
    sent, answered, given_ids = {}, {}, {}
    try:
        rest = requests.Session()
        th = httpclient.InferenceServerClient(url=server.http)
        tg = grpcclient.InferenceServerClient(url=server.grpc)
        n = 10_000
        kinds = ["rest-json", "rest-binary", "grpc", "stream"]
        stream_answers = queue.Queue()
        tg.start_stream(callback=lambda result, error: stream_answers.put((result, error)))
        streamed = []
        for i in range(n):
            kind = kinds[i % 4]
            rid = f"{kind}-{i}"
            a, b = add_sub_inputs(rng)
            sent[rid] = {"INPUT0": a, "INPUT1": b}
            if kind == "rest-json":
                headers = {"x-user": f"user-{i}"}
                if i % 8 == 0:
                    headers["ce-id"] = given_ids[rid] = f"client-{i}"
                body = {"id": rid, "inputs": [
                    {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": a.ravel().tolist()},
                    {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": b.ravel().tolist()}]}
                r = rest.post(f"http://{server.http}/v2/models/add_sub/infer", json=body, headers=headers, timeout=30)
                assert r.status_code == 200, r.text
                _, answered[rid] = tensors(r.content)
            elif kind in ("rest-binary", "grpc", "stream"):
                client = httpclient if kind == "rest-binary" else grpcclient
                inputs = [client.InferInput("INPUT0", [1, 16], "INT32"), client.InferInput("INPUT1", [1, 16], "INT32")]
                if kind == "rest-binary":
                    inputs[0].set_data_from_numpy(a, binary_data=True)
                    inputs[1].set_data_from_numpy(b, binary_data=True)
                    result = th.infer("add_sub", inputs, request_id=rid, headers={"x-user": f"user-{i}"})
                else:
                    inputs[0].set_data_from_numpy(a)
                    inputs[1].set_data_from_numpy(b)
                    if kind == "grpc":
                        result = tg.infer("add_sub", inputs, request_id=rid, headers={"x-user": f"user-{i}"})
                    else:
                        tg.async_stream_infer("add_sub", inputs, request_id=rid)
                        streamed.append(rid)
                        continue
                answered[rid] = {o: result.as_numpy(o) for o in ("OUTPUT0", "OUTPUT1")}
        for _ in streamed:
            result, error = stream_answers.get(timeout=30)
            assert error is None, error
            answered[result.get_response().id] = {o: result.as_numpy(o) for o in ("OUTPUT0", "OUTPUT1")}
        tg.stop_stream()
        # A failed request is logged too, with its error.
        bad = {"id": "bad-1", "inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}]}
        r = rest.post(f"http://{server.http}/v2/models/add_sub/infer", json=bad, timeout=30)
        assert r.status_code == 400

        total = 2 * (n + 1)
        sink.wait_for(total)
        events = sink.events()
        assert len(events) == total, (len(events), total)
        assert metric(server, "quiver_payload_log_events_dropped_total") == 0
        assert metric(server, "quiver_payload_log_events_sent_total", model="add_sub") == total

        by_id = {}
        for headers, e in events:
            data = e.get_data()
            if headers is not None and headers.get("content-type") == "application/octet-stream":
                doc, ts = tensors(data, int(headers["inference-header-content-length"]))
            else:
                doc, ts = tensors(json.dumps(data).encode()) if "error" not in data else (data, {})
            rid = doc.get("id", "bad-1")
            slot = by_id.setdefault(rid, {})
            assert e.get_type() not in slot, f"{rid}: two {e.get_type()} events"
            slot[e.get_type()] = (e, headers, doc, ts)
        assert set(by_id) == set(sent) | {"bad-1"}
        for rid, slot in by_id.items():
            (req, req_headers, _, req_tensors), (resp, _, resp_doc, resp_tensors) = slot[REQUEST], slot[RESPONSE]
            assert req.get_id() == resp.get_id(), rid
            assert req.get_specversion() == "1.0"
            assert req.get_extension("inferenceservicename") == "adder"
            assert req.get_extension("namespace") == "ml"
            assert req.get_extension("component") == "predictor"
            assert req.get_extension("endpoint") == "default"
            if rid in given_ids:
                assert req.get_id() == given_ids[rid]
            if rid == "bad-1":
                assert "INPUT0" in resp_doc["error"] and resp.get_extension("quivererror") == "400"
                continue
            for name, a in sent[rid].items():
                np.testing.assert_array_equal(req_tensors[name], a, err_msg=rid)
            for name, a in answered[rid].items():
                np.testing.assert_array_equal(resp_tensors[name], a, err_msg=rid)
            assert resp_doc["model_name"] == "add_sub"
            kind = rid.rsplit("-", 1)[0]
            meta = json.loads(req.get_extension("metadata"))
            if kind != "stream":
                assert meta == {"X-User": [f"user-{rid.rsplit('-', 1)[1]}"]}, meta
            if req_headers is not None and kind in ("rest-json", "grpc"):
                assert {k for k in req_headers if k.startswith("ce-")} == KSERVE_HEADERS
                assert req_headers["content-type"] == "application/json"
            if kind == "rest-binary":
                assert req_headers["content-type"] == "application/octet-stream"
    finally:
        server.stop()
        sink.close()


def rest_requests(server, n, x, pause=0.0):
    """n binary-extension requests of `x` to fraud_mlp; every one must succeed."""
    raw = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    s = requests.Session()
    for _ in range(n):
        r = s.post(f"http://{server.http}/v2/models/fraud_mlp/infer", data=header + raw,
                   headers={"Inference-Header-Content-Length": str(len(header))}, timeout=30)
        assert r.status_code == 200, r.text
        if pause:
            time.sleep(pause)


def test_a_sink_down_for_30_seconds_loses_nothing_uncounted():
    sink = Sink()
    sink.fail_until = time.time() + 30
    server = QuiverServer(extra_args=["--payload-log-url", sink.url, "--load-model", "fraud_mlp",
                                      "--model-control-mode", "explicit"])
    try:
        x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
        n = 0
        start = time.time()
        while time.time() < start + 36:
            rest_requests(server, 10, x, pause=0.01)
            n += 10
        sink.wait_for(2 * n, timeout=90)
        time.sleep(1)
        events = sink.events()
        keys = [(e.get_id(), e.get_type()) for _, e in events]
        assert len(keys) == len(set(keys)), "an event arrived twice"
        dropped = metric(server, "quiver_payload_log_events_dropped_total")
        failed = metric(server, "quiver_payload_log_events_failed_total")
        assert sink.refused > 0 and metric(server, "quiver_payload_log_events_retried_total") > 0
        assert len(events) + dropped + failed == 2 * n, (len(events), dropped, failed, n)
        # The default queue holds 30 s of this load: nothing had to be given up.
        assert len(events) == 2 * n
    finally:
        server.stop()
        sink.close()


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def test_a_sink_that_never_answers_costs_only_the_queue():
    sink = Sink(hang=True)
    tmp = tempfile.mkdtemp()
    repo = repository(tmp, "fraud_mlp")
    config = os.path.join(repo, "fraud_mlp", "config.pbtxt")
    with open(config) as f:
        text = f.read().replace("max_batch_size: 64", "max_batch_size: 8192")
    with open(config, "w") as f:
        f.write(text)
    bound = 16 << 20
    server = QuiverServer(repository=repo, extra_args=[
        "--payload-log-url", sink.url, "--payload-log-queue", "1000",
        "--payload-log-queue-bytes", str(bound), "--payload-log-workers", "2",
        "--payload-log-max-event-bytes", str(8 << 20)])
    try:
        # 1 MiB a request: 400 requests would keep 800 MiB if nothing bounded them.
        x = np.random.default_rng(2).standard_normal((8192, 32)).astype(np.float32)
        rest_requests(server, 20, x)
        before = rss_bytes(server.proc.pid)
        rest_requests(server, 400, x)
        grown = rss_bytes(server.proc.pid) - before
        dropped = metric(server, "quiver_payload_log_events_dropped_total", model="fraud_mlp")
        assert dropped >= 2 * 300, dropped
        assert metric(server, "quiver_payload_log_queue_bytes") <= bound
        # The queue's bytes, two POSTs in flight and the allocator's slack.
        assert grown < bound + (96 << 20), f"RSS grew {grown >> 20} MiB"
    finally:
        server.stop()
        sink.close()
        shutil.rmtree(tmp)


def test_the_file_sink_rotates_and_is_flushed_on_sigterm():
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "log", "events.jsonl")
    server = QuiverServer(extra_args=[
        "--payload-log-file", path, "--payload-log-file-max-bytes", "200000",
        "--payload-log-file-keep", "100", "--payload-log-mode", "all",
        "--payload-log-redact-inputs", "INPUT1", "--load-model", "add_sub", "--model-control-mode", "explicit"])
    try:
        rng = np.random.default_rng(3)
        th = httpclient.InferenceServerClient(url=server.http)
        n = 1500
        for i in range(n):
            th.infer("add_sub", http_add_sub(*add_sub_inputs(rng), binary=False), request_id=f"f-{i}")
        # SIGTERM right away: what is still queued or buffered is written first.
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        files = glob.glob(path + "*")
        assert len(files) > 2, files
        lines = []
        for f in files:
            with open(f, "rb") as fh:
                lines.extend(fh.read().splitlines())
            assert os.path.getsize(f) <= 200000
        events = [structured(line) for line in lines]
        assert len(events) == 2 * n
        ids = {}
        for e in events:
            ids.setdefault(e.get_id(), set()).add(e.get_type())
            data = e.get_data()
            if e.get_type() == REQUEST:
                assert "data" not in data["inputs"][1] and data["parameters"]["payload_log_redacted"] is True
                assert len(data["inputs"][0]["data"]) == 16
        assert len(ids) == n and all(t == {REQUEST, RESPONSE} for t in ids.values())
    finally:
        if server.alive():
            server.stop()
        shutil.rmtree(tmp)


def test_batch_mode_and_a_models_own_settings():
    sink = Sink()
    tmp = tempfile.mkdtemp()
    repo = repository(tmp, "add_sub", "fraud_mlp")
    # fraud_mlp logs its answers only; add_sub takes the server's settings.
    with open(os.path.join(repo, "fraud_mlp", "config.pbtxt"), "a") as f:
        f.write('parameters { key: "payload_log_mode" value: { string_value: "response" } }\n')
    server = QuiverServer(repository=repo, extra_args=[
        "--payload-log-url", sink.url, "--payload-log-batch-size", "50", "--payload-log-batch-interval-ms", "200"])
    try:
        rest_requests(server, 100, np.zeros((2, 32), np.float32))
        th = httpclient.InferenceServerClient(url=server.http)
        rng = np.random.default_rng(4)
        for i in range(100):
            th.infer("add_sub", http_add_sub(*add_sub_inputs(rng), binary=True))
        sink.wait_for(300)
        events = sink.events()
        assert len(events) == 300
        with sink.lock:
            assert all(h.get("content-type") == "application/cloudevents-batch+json" for h, _ in sink.posts)
            assert len(sink.posts) < 300 / 10
        fraud = [e for _, e in events if "fraud_mlp" in e.get_source()]
        assert len(fraud) == 100 and all(e.get_type() == RESPONSE for e in fraud)
        adder = [e for _, e in events if "add_sub" in e.get_source()]
        assert sorted(e.get_type() for e in adder) == [REQUEST] * 100 + [RESPONSE] * 100
    finally:
        server.stop()
        sink.close()
        shutil.rmtree(tmp)


def test_canary_and_shadow_answers_say_their_variant():
    sink = Sink()
    tmp = tempfile.mkdtemp()
    model = os.path.join(repository(tmp, "fraud_mlp"), "fraud_mlp")
    repo = os.path.dirname(model)
    shutil.copytree(os.path.join(model, "1"), os.path.join(model, "2"))
    with open(os.path.join(model, "config.pbtxt"), "a") as f:
        f.write("version_policy: { all: {} }\n")
    with open(os.path.join(model, "traffic.json"), "w") as f:
        json.dump({"variants": [{"name": "stable", "version": 1, "weight": 1},
                                {"name": "canary", "version": 2, "weight": 1},
                                {"name": "mirror", "version": 2, "weight": 0}],
                   "shadow": {"variant": "mirror", "percent": 100}}, f)
    server = QuiverServer(repository=repo, extra_args=["--payload-log-url", sink.url, "--payload-log-mode", "response"])
    try:
        rest_requests(server, 20, np.ones((1, 32), np.float32))
        sink.wait_for(40)
        time.sleep(0.5)
        events = sink.events()
        assert len(events) == 40
        seen = {}
        for headers, e in events:
            shadow = headers.get("ce-quivershadow") == "true"
            key = (e.get_extension("endpoint"), shadow, e.get_data()["model_version"])
            seen[key] = seen.get(key, 0) + 1
        assert seen == {("stable", False, "1"): 10, ("canary", False, "2"): 10, ("mirror", True, "2"): 20}, seen
    finally:
        server.stop()
        sink.close()
        shutil.rmtree(tmp)


def test_sigterm_sends_a_waiting_batch_and_a_refusing_sink_is_not_retried():
    sink = Sink()
    # A batch that would wait 60 s: SIGTERM sends it within the grace period.
    server = QuiverServer(extra_args=[
        "--payload-log-url", sink.url, "--payload-log-batch-size", "1000",
        "--payload-log-batch-interval-ms", "60000", "--load-model", "fraud_mlp", "--model-control-mode", "explicit"])
    try:
        rest_requests(server, 30, np.ones((1, 32), np.float32))
        time.sleep(0.5)
        assert sink.events() == []
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        assert len(sink.events()) == 60
    finally:
        if server.alive():
            server.stop()
    # A sink that answers 400 refuses the events: failed at once, never retried.
    sink.status = 400
    posts = len(sink.posts)
    server = QuiverServer(extra_args=["--payload-log-url", sink.url, "--load-model", "fraud_mlp",
                                      "--model-control-mode", "explicit"])
    try:
        rest_requests(server, 10, np.ones((1, 32), np.float32))
        deadline = time.time() + 20
        while time.time() < deadline and metric(server, "quiver_payload_log_events_failed_total") < 20:
            time.sleep(0.2)
        assert metric(server, "quiver_payload_log_events_failed_total", model="fraud_mlp") == 20
        assert metric(server, "quiver_payload_log_events_retried_total") == 0
        assert metric(server, "quiver_payload_log_events_sent_total") == 0
        # POST latency is a histogram with buckets (one observation per POST).
        assert metric(server, "quiver_payload_log_send_seconds_bucket", le="+Inf") == 20
        # One POST per event: none was tried again.
        assert sink.refused == 20 and len(sink.posts) == posts
    finally:
        server.stop()
        sink.close()

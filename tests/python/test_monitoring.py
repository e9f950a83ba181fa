"""Model monitoring against the real server and the real tools.

- The scores equal what scipy and numpy compute on the same data.
- One feature of fraud_mlp's inputs shifted by 0.5 standard deviations is
  flagged within one window, and only that feature; unshifted data raises no
  drift over 20 windows at the defaults.
- The webhook receives exactly one CloudEvent per state change, read with
  the CloudEvents SDK.
- A real Prometheus (Debian's package) scrapes quiver with the shipped alert
  rules: the drift alert fires on drifted traffic and clears after it stops;
  `promtool check rules` passes; the Grafana dashboard and the rules name
  only metrics quiver exports.
"""
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import numpy as np
import pytest
import requests
import yaml
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from scipy import stats
from scipy.spatial.distance import jensenshannon

from quiver_server import MODELS, ROOT, QuiverServer

FEATURES = 32
# Features of different scales: the methods are scale-free (Wasserstein is
# divided by the reference's standard deviation).
SCALES = 1.0 + np.arange(FEATURES) / 8.0
RULES = os.path.join(ROOT, "deploy", "monitoring", "prometheus-rule.yaml")
DASHBOARD = os.path.join(ROOT, "deploy", "monitoring", "grafana-dashboard.json")


def rows(rng, n, shift=None):
    """n rows of fraud_mlp input, feature f ~ N(0, SCALES[f]^2); `shift`
    (feature, standard deviations) moves one feature."""
    x = rng.standard_normal((n, FEATURES))
    if shift is not None:
        x[:, shift[0]] += shift[1]
    return (x * SCALES).astype(np.float32)


def repository(tmp, reference, monitoring=None, compressed=False, traffic=None):
    repo = os.path.join(tmp, "repo")
    shutil.copytree(os.path.join(MODELS, "fraud_mlp"), os.path.join(repo, "fraud_mlp"))
    save = np.savez_compressed if compressed else np.savez
    save(os.path.join(repo, "fraud_mlp", "reference.npz"), **reference)
    if monitoring is not None:
        with open(os.path.join(repo, "fraud_mlp", "monitoring.json"), "w") as f:
            json.dump(monitoring, f)
    if traffic is not None:
        with open(os.path.join(repo, "fraud_mlp", "traffic.json"), "w") as f:
            json.dump(traffic, f)
    return repo


def infer(server, x):
    """One binary-extension request (NaN and Inf travel as they are)."""
    raw = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    r = requests.post(f"http://{server.http}/v2/models/fraud_mlp/infer", data=header + raw,
                      headers={"Inference-Header-Content-Length": str(len(header))}, timeout=30)
    assert r.status_code == 200, r.text


def send(server, x, batch=50):
    for i in range(0, len(x), batch):
        infer(server, x[i:i + batch])


def report(server, version=None):
    path = f"/v2/models/fraud_mlp/versions/{version}/monitoring" if version else "/v2/models/fraud_mlp/monitoring"
    r = requests.get(f"http://{server.http}{path}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def judged_end(server):
    """The end time of the last judged window (None before the first)."""
    variants = report(server)["versions"][0]["variants"]
    return variants[0].get("window", {}).get("end") if variants else None


def next_window(server, after, timeout=30):
    """Waits for a window judged after `after`; returns the report."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if judged_end(server) != after:
            return report(server)
        time.sleep(0.05)
    raise AssertionError(f"no window was judged in {timeout} s:\n{''.join(server.log[-20:])}")


def states(rep):
    return {(f["input"], f["feature"]): f["state"] for f in rep["features"]}


class Hook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/events", Hook.received
    server.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping quiver every second and
    evaluating the shipped rules every second (their `for` set to 0 s: the
    test checks the expressions, not the patience)."""

    def __init__(self, tmp, target):
        assert shutil.which("prometheus"), "prometheus is not installed (scripts/test.sh installs Debian's package)"
        groups = yaml.safe_load(open(RULES))["spec"]["groups"]
        for g in groups:
            for r in g["rules"]:
                if "for" in r:
                    r["for"] = "0s"
        rules = os.path.join(tmp, "rules.yml")
        yaml.safe_dump({"groups": groups}, open(rules, "w"))
        config = os.path.join(tmp, "prometheus.yml")
        yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": [{"job_name": "quiver", "static_configs": [{"targets": [target]}]}],
        }, open(config, "w"))
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(self.url("/-/ready"), timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not start")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def alerts(self, name):
        r = requests.get(self.url("/api/v1/alerts"), timeout=5).json()
        return [a for a in r["data"]["alerts"] if a["labels"]["alertname"] == name]

    def wait_for(self, what, check, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = check()
            if got:
                return got
            time.sleep(0.25)
        raise AssertionError(f"prometheus: {what} did not happen in {timeout} s")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_scores_equal_scipy_and_numpy_on_the_same_data():
    """One window of exactly the rows sent: every score against the library
    practitioners use, on the same values and (for the binned ones) the
    same bins."""
    rng = np.random.default_rng(11)
    ref = rows(rng, 3000)
    # Feature 0 holds category codes: chi-square, not KS.
    ref[:, 0] = rng.choice(5, size=3000, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    win = rows(rng, 800, shift=(1, 0.3))
    win[:, 0] = rng.choice(6, size=800, p=[0.3, 0.3, 0.15, 0.1, 0.1, 0.05])  # 5 is unseen
    win[::40, 2] = 1e6  # out of the reference's range
    with tempfile.TemporaryDirectory() as tmp:
        # min_samples = the rows sent: the window cannot close before it has all of them.
        repo = repository(tmp, {"input": ref}, compressed=True, monitoring={
            "window_seconds": 0.5, "min_samples": len(win),
            "tensors": {"input": {"features": {"0": "categorical"}}}})
        server = QuiverServer(repo)
        try:
            send(server, win)
            rep = next_window(server, None)
        finally:
            server.stop()
    by = {f["feature"]: f for f in rep["features"]}
    assert rep["versions"][0]["variants"][0]["window"]["rows"] == len(win)
    ref64, win64 = ref.astype(np.float64), win.astype(np.float64)
    errors = {}
    for f in range(1, FEATURES):
        item = by[str(f)]
        a, b = ref64[:, f], win64[:, f]
        assert item["kind"] == "numeric" and item["samples"] == len(win)
        s = item["scores"]
        edges = np.array(item["reference"]["edges"])
        assert np.allclose(edges, np.quantile(a, np.arange(1, 10) / 10), rtol=0, atol=1e-12)
        bins = np.concatenate([[-np.inf], edges, [np.inf]])
        ref_counts, _ = np.histogram(a, bins)
        win_counts, _ = np.histogram(b, bins)
        assert item["reference"]["counts"] == ref_counts.tolist()
        assert item["window"]["counts"] == win_counts.tolist()
        # PSI: the plain formula, an empty bin counted as a share of 1e-4.
        e = np.where(ref_counts == 0, 1e-4, ref_counts / ref_counts.sum())
        o = np.where(win_counts == 0, 1e-4, win_counts / win_counts.sum())
        assert s["psi"] == pytest.approx(float(np.sum((o - e) * np.log(o / e))), rel=1e-9, abs=1e-12)
        assert s["jensen_shannon"] == pytest.approx(float(jensenshannon(ref_counts, win_counts)), rel=1e-9, abs=1e-12)
        ks = stats.ks_2samp(a, b)
        assert s["ks_statistic"] == pytest.approx(ks.statistic, abs=1e-12)
        asymp = stats.ks_2samp(a, b, method="asymp").pvalue
        errors.setdefault("ks_pvalue_vs_asymp", []).append(abs(s["ks_pvalue"] - asymp))
        errors.setdefault("ks_pvalue_vs_exact", []).append(abs(s["ks_pvalue"] - ks.pvalue))
        assert s["wasserstein"] == pytest.approx(stats.wasserstein_distance(a, b) / np.std(a), rel=1e-9)
    # The p-value is Kolmogorov's limit with Stephens' correction; scipy's
    # default here is the exact distribution (measured, docs/monitoring.md).
    assert max(errors["ks_pvalue_vs_asymp"]) < 0.01, errors
    assert max(errors["ks_pvalue_vs_exact"]) < 0.01, errors
    print("max |p - scipy|:", {k: max(v) for k, v in errors.items()})
    # The shifted feature is the one the test flags (0.3 sd in 800 rows).
    assert by["1"]["scores"]["ks_pvalue"] < 1e-6
    # Categorical: chi-square over the 2 x K table of reference and window
    # counts (the unseen code is a column of its own), as scipy computes it.
    cat = by["0"]
    assert cat["kind"] == "categorical"
    assert cat["reference"]["categories"] == ["0", "1", "2", "3", "4"]
    ref_c = np.bincount(ref[:, 0].astype(int), minlength=5)
    win_c = np.bincount(win[:, 0].astype(int), minlength=6)
    assert cat["reference"]["counts"] == ref_c.tolist()
    assert cat["window"]["counts"] + [cat["window"]["unseen"]] == win_c.tolist()
    table = np.array([np.append(ref_c, 0), win_c])
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    assert cat["scores"]["chi2_statistic"] == pytest.approx(chi2, rel=1e-9)
    assert cat["scores"]["chi2_pvalue"] == pytest.approx(p, rel=1e-6, abs=1e-300)
    assert cat["scores"]["jensen_shannon"] == pytest.approx(float(jensenshannon(table[0], table[1])), rel=1e-9)
    assert cat["scores"]["unseen_rate"] == pytest.approx(win_c[5] / len(win))
    # Data quality: feature 2's out-of-range values over all finite numeric
    # values of the input (the categorical column aside), and the unseen codes.
    q = rep["versions"][0]["variants"][0]["quality"][0]
    out = int(((win64[:, 1:] < ref64[:, 1:].min(axis=0)) | (win64[:, 1:] > ref64[:, 1:].max(axis=0))).sum())
    assert q["out_of_range"] == pytest.approx(out / (len(win) * (FEATURES - 1)))
    assert q["unseen_category"] == pytest.approx(win_c[5] / len(win))
    assert q["nan"] == 0


def test_a_half_sd_shift_of_one_feature_is_flagged_alerted_and_announced(webhook, tmp_path):
    """At the defaults (but a 1-second window): 20 windows of unshifted
    data raise no drift; one feature shifted by 0.5 sd drifts in the first
    window of shifted data, and only it; the webhook gets one CloudEvent per
    state change; Prometheus with the shipped rules fires the drift alert
    and clears it once the shift stops."""
    url, received = webhook
    rng = np.random.default_rng(22)
    policy = {"variants": [{"name": "stable", "version": 1, "weight": 100}]}
    repo = repository(str(tmp_path), {"input": rows(rng, 5000)}, traffic=policy)
    server = QuiverServer(repo, extra_args=["--monitoring-window-seconds", "1", "--monitoring-webhook", url])
    prom = Prometheus(str(tmp_path), server.metrics)
    try:
        seen, changes = None, []
        previous = None

        def window(x):
            nonlocal seen, previous
            send(server, x)
            rep = next_window(server, seen)
            seen = rep["versions"][0]["variants"][0]["window"]["end"]
            now = states(rep)
            for key, state in now.items():
                old = previous.get(key, "ok") if previous else "ok"
                if old != state:
                    changes.append((key[0], key[1], old, state))
            previous = now
            return rep

        for i in range(20):
            rep = window(rows(rng, 600))
            drifting = [k for k, s in states(rep).items() if s == "drift"]
            assert not drifting, f"window {i}: {drifting} drift on unshifted data"
            assert rep["versions"][0]["variants"][0]["variant"] == "stable"

        rep = window(rows(rng, 600, shift=(7, 0.5)))
        drifting = sorted(k for k, s in states(rep).items() if s == "drift")
        assert drifting == [("input", "7")], drifting
        seven = next(f for f in rep["features"] if f["feature"] == "7")
        assert seven["variant"] == "stable" and seven["samples"] >= 500

        firing = prom.wait_for("QuiverFeatureDrift fires", lambda: [
            a for a in prom.alerts("QuiverFeatureDrift") if a["state"] == "firing"])
        assert {(a["labels"]["feature"], a["labels"]["variant"]) for a in firing} == {("7", "stable")}

        # The shift stops: the feature is judged ok again and the alert clears.
        rep = window(rows(rng, 600))
        assert states(rep)[("input", "7")] != "drift"
        prom.wait_for("QuiverFeatureDrift clears", lambda: not prom.alerts("QuiverFeatureDrift"))

        # Every state change, one event each, in order, read by the SDK.
        deadline = time.time() + 10
        while len(received) < len(changes) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # nothing more comes
        events = [from_http_event(HTTPMessage(headers={k.lower(): v for k, v in h.items()}, body=b))
                  for h, b in received]
        assert len(events) == len(changes), (changes, [e.get_data() for e in events])
        got = []
        for e in events:
            assert e.get_specversion() == "1.0"
            assert e.get_type() == "io.quiver.monitoring.feature_state_changed"
            assert e.get_source() == "/v2/models/fraud_mlp/versions/1/monitoring"
            data = e.get_data()
            assert data["model"] == "fraud_mlp" and data["version"] == "1" and data["variant"] == "stable"
            assert len(data["changes"]) == 1 and data["changes"][0]["scores"]
            got.append((data["input"], data["feature"], data["from"], data["to"]))
        assert got == changes
        assert ("input", "7", "ok", "drift") in got or ("input", "7", "warning", "drift") in got
        assert len({e.get_id() for e in events}) == len(events)

        # What the dashboard and the rules query, quiver exports.
        metrics = requests.get(f"http://{server.metrics}/metrics", timeout=5).text
        check_queries_name_exported_metrics(metrics)
        assert 'quiver_model_drift_share{model="fraud_mlp",version="1",variant="stable"}' in metrics
    finally:
        prom.stop()
        server.stop()


def check_queries_name_exported_metrics(exposition):
    exported = set(re.findall(r"^([a-z_:][a-z0-9_:]*)(?:\{| )", exposition, re.M))
    # Absent here, exported elsewhere: GPU series (no GPU on this machine)
    # and gRPC request series (this suite sends none); each must still be a
    # name quiver's source exports.
    sources = "".join(open(os.path.join(ROOT, p)).read() for p in [
        "server/src/gpu_metrics.rs", "server/src/telemetry.rs"])
    queries = []
    dashboard = json.load(open(DASHBOARD))
    for panel in dashboard["panels"]:
        queries += [t["expr"] for t in panel["targets"]]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for group in yaml.safe_load(open(RULES))["spec"]["groups"]:
        queries += [r["expr"] for r in group["rules"]]
    named = set()
    for q in queries:
        named |= set(re.findall(r"\b((?:nv|quiver)_[a-z0-9_]+)", q))
    missing = []
    for name in sorted(named):
        if name in exported:
            continue
        if (name.startswith("nv_gpu") or name.startswith("quiver_grpc")) and f'"{name}"' in sources:
            continue
        missing.append(name)
    assert not missing, f"queried but not exported: {missing}"
    assert len(named) >= 20, named


def test_promtool_accepts_the_shipped_rules(tmp_path):
    assert shutil.which("promtool"), "promtool is not installed (scripts/test.sh installs Debian's prometheus)"
    groups = yaml.safe_load(open(RULES))["spec"]["groups"]
    path = tmp_path / "rules.yml"
    yaml.safe_dump({"groups": groups}, open(path, "w"))
    run = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_a_reference_that_does_not_fit_fails_the_load_with_the_reason(tmp_path):
    """Startup with a broken reference: the model does not load, the log and
    the index say why; the server serves on."""
    rng = np.random.default_rng(3)
    repo = repository(str(tmp_path), {"input": rows(rng, 100)[:, :30]})
    server = QuiverServer(repo)
    try:
        r = requests.post(f"http://{server.http}/v2/repository/index", json={}, timeout=5).json()
        row = next(m for m in r if m["name"] == "fraud_mlp")
        assert row["state"] == "UNAVAILABLE"
        assert "reference array 'input' has rows of shape [30]" in row["reason"], row
        assert requests.get(f"http://{server.http}/v2/health/live", timeout=5).status_code == 200
    finally:
        server.stop()


def test_outputs_are_watched_for_prediction_drift_and_class_shares(tmp_path):
    """A reference that holds the model's answers too: each score is a
    feature, and the argmax is one more (`class`, categorical)."""
    rng = np.random.default_rng(5)
    x = rows(rng, 2000)
    plain = QuiverServer(MODELS)
    try:
        raw = np.ascontiguousarray(x).tobytes()
        header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                         "parameters": {"binary_data_size": len(raw)}}],
                             "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
        probabilities = []
        for i in range(0, len(x), 64):
            part = x[i:i + 64]
            raw = np.ascontiguousarray(part).tobytes()
            header = json.dumps({"inputs": [{"name": "input", "shape": list(part.shape), "datatype": "FP32",
                                             "parameters": {"binary_data_size": len(raw)}}],
                                 "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
            r = requests.post(f"http://{plain.http}/v2/models/fraud_mlp/infer", data=header + raw,
                              headers={"Inference-Header-Content-Length": str(len(header))}, timeout=30)
            assert r.status_code == 200, r.text
            length = int(r.headers["Inference-Header-Content-Length"])
            probabilities.append(np.frombuffer(r.content[length:], dtype=np.float32).reshape(-1, 2))
    finally:
        plain.stop()
    out = np.concatenate(probabilities)
    repo = repository(str(tmp_path), {"input": x, "probabilities": out},
                      monitoring={"window_seconds": 0.5, "min_samples": 600})
    server = QuiverServer(repo)
    try:
        send(server, rows(rng, 600, shift=(3, 3.0)))
        rep = next_window(server, None)
    finally:
        server.stop()
    outputs = {f["feature"]: f for f in rep["features"] if f["input"] == "probabilities"}
    assert set(outputs) == {"0", "1", "class"}
    assert all(f["output"] and f["judged"] for f in outputs.values())
    assert outputs["0"]["kind"] == "numeric"
    cls = outputs["class"]
    assert cls["kind"] == "categorical"
    assert cls["reference"]["categories"] == ["0", "1"] or cls["reference"]["categories"] in (["0"], ["1"])
    want = np.bincount(out.argmax(axis=1), minlength=2)
    assert sum(cls["reference"]["counts"]) == len(out)
    assert cls["reference"]["counts"] == [int(c) for c in want if c > 0]
    # Outputs have states of their own but do not count in the model's share.
    inputs = [f for f in rep["features"] if not f["output"]]
    drifting = sum(f["state"] == "drift" for f in inputs)
    assert rep["versions"][0]["variants"][0]["drift_share"] == pytest.approx(drifting / len(inputs))


class FlakyHook(Hook):
    """Refuses the first two deliveries with 503, then takes them."""
    received = []
    failures = 2

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FlakyHook.received.append((dict(self.headers.items()), body))
        status = 503 if FlakyHook.failures > 0 else 200
        FlakyHook.failures -= 1
        self.send_response(status)
        self.end_headers()


def test_a_failed_delivery_is_retried_with_the_same_event(tmp_path):
    FlakyHook.received, FlakyHook.failures = [], 2
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyHook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    rng = np.random.default_rng(6)
    repo = repository(str(tmp_path), {"input": rows(rng, 2000)},
                      monitoring={"window_seconds": 0.5, "min_samples": 600})
    server = QuiverServer(repo, extra_args=["--monitoring-webhook", f"http://127.0.0.1:{hook.server_port}/"])
    try:
        send(server, rows(rng, 600, shift=(0, 2.0)))
        next_window(server, None)
        deadline = time.time() + 15
        metrics = ""
        while 'outcome="sent"' not in metrics and time.time() < deadline:
            time.sleep(0.1)
            metrics = requests.get(f"http://{server.metrics}/metrics", timeout=5).text
    finally:
        server.stop()
        hook.shutdown()
    # Feature 0's change, tried three times with one id (a receiver can
    # de-duplicate); nothing else changed state.
    first = FlakyHook.received[0][0]["ce-id"]
    tries = [(h, b) for h, b in FlakyHook.received if h["ce-id"] == first]
    assert len(tries) == 3, [h["ce-id"] for h, _ in FlakyHook.received]
    event = from_http_event(HTTPMessage(headers={k.lower(): v for k, v in tries[-1][0].items()}, body=tries[-1][1]))
    assert event.get_data()["feature"] == "0" and event.get_data()["to"] == "drift"
    assert re.search(r'quiver_monitoring_events_total\{outcome="sent"\} \d+', metrics), metrics

"""quiver following registries it does not own, against real servers started
here: an S3-compatible store (moto's server mode) holding a Triton-layout
repository, and an MLflow tracking server whose aliases and stages move.
Every answer's value tells which model computed it (y = x * k, one k per
version), whatever version number it claims."""
import os
import tempfile
import threading
import time

import boto3
import mlflow
import pytest
import requests
from mlflow import MlflowClient

from quiver_server import QuiverServer
from registry_servers import SCALE_CONFIG, free_port, mlflow_server, moto_server, scale_model

# Credentials that must never appear in quiver's log, metrics or index.
S3_SECRET = "s3-secret-Q7x9-never-shown"
MLFLOW_TOKEN = "mlflow-token-Z3k8-never-shown"
URI_PASSWORD = "uri-password-M2p4-never-shown"
SECRETS = (S3_SECRET, MLFLOW_TOKEN, URI_PASSWORD)
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
POLL = "1"
# Stages are deprecated in MLflow (aliases replace them) but still what many
# registries use; quiver follows both.
pytestmark = pytest.mark.filterwarnings("ignore:.*transition_model_version_stage.*:FutureWarning")


def eventually(check, seconds=60, what="condition"):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ask(q, model, session=requests):
    """(version, k) of one answer, or (None, error text)."""
    r = session.post(f"http://{q.http}/v2/models/{model}/infer", json=BODY, timeout=30)
    if r.status_code != 200:
        return None, f"{r.status_code} {r.text}"
    body = r.json()
    return int(body["model_version"]), body["outputs"][0]["data"][0]


def index(q):
    return requests.post(f"http://{q.http}/v2/repository/index", json={}, timeout=10).json()


def row(q, model, version):
    return next((r for r in index(q) if r["name"] == model and r.get("version") == str(version)), None)


def metric(q, name, **labels):
    text = requests.get(f"http://{q.metrics}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def assert_no_secrets(q):
    """Nothing quiver printed or serves holds a credential (after stop(),
    only the log is left to read)."""
    seen = ["".join(q.log)]
    if q.alive():
        seen += [requests.get(f"http://{q.metrics}/metrics", timeout=10).text,
                 requests.post(f"http://{q.http}/v2/repository/index", json={}, timeout=10).text]
    for text in seen:
        for secret in SECRETS:
            assert secret not in text, f"a credential leaked: ...{text[max(0, text.find(secret) - 200):][:400]}"


class Traffic:
    """A client sending throughout: every answer recorded, every failure kept."""

    def __init__(self, q, model):
        self.q, self.model = q, model
        self.answers, self.failures = [], []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        session = requests.Session()
        while not self.stop_flag.is_set():
            try:
                version, k = ask(self.q, self.model, session)
            except requests.RequestException as e:
                self.failures.append(str(e))
                continue
            if version is None:
                self.failures.append(k)
            else:
                self.answers.append((version, k))

    def stop(self):
        self.stop_flag.set()
        self.thread.join(timeout=30)
        return self.answers, self.failures


# ---------------------------------------------------------------- S3


def s3_client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="AKIAQUIVERTEST",
                        aws_secret_access_key=S3_SECRET, region_name="us-east-1")


def s3_env(endpoint):
    return {"AWS_ACCESS_KEY_ID": "AKIAQUIVERTEST", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}


def put_repo(s3, versions):
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="repo/scale/config.pbtxt", Body=SCALE_CONFIG)
    for v, k in versions.items():
        s3.put_object(Bucket="models", Key=f"repo/scale/{v}/model.onnx", Body=scale_model(k))


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="quiver-registry-")
    yield d


def test_s3_repository_follows_the_bucket(workdir):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    store = moto_server(port, os.path.join(workdir, "moto.log"))
    store.start()
    q = None
    try:
        s3 = s3_client(endpoint)
        put_repo(s3, {1: 2.0})
        q = QuiverServer(repository="s3://models/repo", env=s3_env(endpoint), extra_args=[
            "--model-control-mode", "poll", "--repository-poll-secs", POLL,
            "--cache-dir", os.path.join(workdir, "cache")])
        assert ask(q, "scale") == (1, 2.0)
        v1 = row(q, "scale", 1)
        assert v1["provenance"]["uri"] == "s3://models/repo/scale/1/", v1
        assert v1["provenance"]["etag"].startswith("model.onnx="), v1
        fetched = metric(q, "quiver_source_objects_fetched_total")
        assert fetched == 2  # config.pbtxt and 1/model.onnx

        # Version 2 uploaded: served by the next poll; only its object fetched.
        s3.put_object(Bucket="models", Key="repo/scale/2/model.onnx", Body=scale_model(3.0))
        eventually(lambda: ask(q, "scale") == (2, 3.0), what="version 2 served")
        assert metric(q, "quiver_source_objects_fetched_total") == fetched + 1

        # Deleted again: back to version 1.
        s3.delete_object(Bucket="models", Key="repo/scale/2/model.onnx")
        eventually(lambda: ask(q, "scale") == (1, 2.0), what="fallback to version 1")
        eventually(lambda: (row(q, "scale", 2) or {}).get("state") == "UNAVAILABLE", what="version 2 unloaded")
        assert_no_secrets(q)
    finally:
        if q:
            q.stop()
            assert_no_secrets(q)
        store.stop()


def test_s3_unreachable_at_start_up_and_later_recovers(workdir):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    store = moto_server(port, os.path.join(workdir, "moto.log"))
    # Nothing listens yet: quiver starts, serves nothing, and retries.
    q = QuiverServer(repository="s3://models/repo", env=s3_env(endpoint), extra_args=[
        "--model-control-mode", "poll", "--repository-poll-secs", POLL,
        "--cache-dir", os.path.join(workdir, "cache")])
    try:
        assert q.alive()
        assert metric(q, "quiver_source_errors_total", source="object_store") >= 1
        store.start()
        put_repo(s3_client(endpoint), {1: 2.0})
        # Back-off doubles up to 8 poll intervals: recovered well within that.
        eventually(lambda: ask(q, "scale") == (1, 2.0), what="served once the store is up")

        # The store goes away: version 1 keeps serving, the index says why.
        store.stop()
        traffic = Traffic(q, "scale")
        eventually(lambda: "source is unavailable" in (row(q, "scale", 1) or {}).get("reason", ""),
                   what="the index to report the store")
        reason = row(q, "scale", 1)["reason"]
        assert reason.startswith("serving; the source is unavailable: cannot list s3://models/repo"), reason
        assert endpoint.split("//")[1] in "".join(q.log) or "127.0.0.1" in reason
        answers, failures = traffic.stop()
        assert failures == [] and answers and all(a == (1, 2.0) for a in answers)

        # Back (moto keeps nothing: the bucket is uploaded again, with a v2).
        store.start()
        put_repo(s3_client(endpoint), {1: 2.0, 2: 3.0})
        eventually(lambda: ask(q, "scale") == (2, 3.0), what="version 2 after the store came back")
        eventually(lambda: "reason" not in row(q, "scale", 2), what="the error to clear")
        assert_no_secrets(q)
    finally:
        q.stop()
        assert_no_secrets(q)
        store.stop()


# ---------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def registry():
    workdir = tempfile.mkdtemp(prefix="quiver-mlflow-")
    port = free_port()
    server = mlflow_server(port, workdir)
    server.start()
    url = f"http://127.0.0.1:{port}"
    yield url
    server.stop()


def register(url, name, versions, golden=None, reference=False):
    """Registers one version per k of `versions` (in order), each an MLflow
    artifact with an MLmodel file naming the onnx flavour's model file;
    `golden[i]`, when given, is version i+1's expected k for its golden set;
    `reference`: a monitoring reference.npz beside the model file."""
    mlflow.set_tracking_uri(url)
    client = MlflowClient(url)
    client.create_registered_model(name)
    for i, k in enumerate(versions):
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "net.onnx"), "wb") as f:
            f.write(scale_model(k))
        with open(os.path.join(d, "MLmodel"), "w") as f:
            f.write("artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.onnx\n"
                    "    data: net.onnx\n  onnx:\n    data: net.onnx\n    onnx_version: 1.17.0\n")
        if reference:
            import numpy as np
            np.savez(os.path.join(d, "reference.npz"),
                     x=np.random.default_rng(i).standard_normal((500, 4)).astype(np.float32))
        if golden:
            os.makedirs(os.path.join(d, "validation"))
            with open(os.path.join(d, "validation", "case.json"), "w") as f:
                import json
                json.dump({"request": BODY, "response": {"outputs": [
                    {"name": "y", "datatype": "FP32", "shape": [1, 4],
                     "data": [x * golden[i] for x in (1, 2, 3, 4)]}]}}, f)
        with mlflow.start_run() as run:
            mlflow.log_artifacts(d, "model")
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    return client


def follow(workdir, url, *models, extra_env=None, poll=POLL):
    args = ["--repository-poll-secs", str(poll), "--cache-dir", os.path.join(workdir, "cache"),
            "--mlflow-tracking-uri", url]
    for m in models:
        args += ["--registry-model", m]
    env = {"MLFLOW_TRACKING_TOKEN": MLFLOW_TOKEN, **(extra_env or {})}
    return QuiverServer(repository=os.path.join(workdir, "no-repository"), extra_args=args, env=env)


def test_alias_moves_are_hot_swapped_without_a_failed_request(registry, workdir):
    client = register(registry, "fraud-alias", [2.0, 3.0])
    client.set_registered_model_alias("fraud-alias", "champion", "1")
    q = follow(workdir, registry, "fraud=models:/fraud-alias@champion")
    try:
        assert ask(q, "fraud") == (1, 2.0)
        prov = row(q, "fraud", 1)["provenance"]
        assert prov["uri"] == "models:/fraud-alias@champion"
        assert prov["registered_model"] == "fraud-alias" and prov["registry_version"] == "1"
        assert len(prov["run_id"]) == 32 and prov["artifact_uri"].startswith("mlflow-artifacts:")
        config = requests.get(f"http://{q.http}/v2/models/fraud/config", timeout=10).json()
        assert config["parameters"]["provenance.run_id"]["string_value"] == prov["run_id"]

        traffic = Traffic(q, "fraud")
        client.set_registered_model_alias("fraud-alias", "champion", "2")
        eventually(lambda: ask(q, "fraud") == (2, 3.0), what="the alias move to 2")
        # Rollback: the alias moves back, version 1 comes back from the cache.
        client.set_registered_model_alias("fraud-alias", "champion", "1")
        eventually(lambda: ask(q, "fraud") == (1, 2.0), what="the rollback to 1")
        time.sleep(0.5)
        answers, failures = traffic.stop()
        assert failures == [], failures[:3]
        assert set(answers) == {(1, 2.0), (2, 3.0)}, set(answers)
        # A version's answers always come from that version's model.
        assert metric(q, "quiver_model_swaps_total", model="fraud") == 2
        assert_no_secrets(q)
    finally:
        q.stop()
        assert_no_secrets(q)


def test_a_monitoring_reference_comes_along_with_the_registered_model(registry, workdir):
    """A reference.npz logged in the model's artifact folder is served with
    it: the version is monitored (docs/monitoring.md)."""
    client = register(registry, "fraud-monitored", [2.0], reference=True)
    client.set_registered_model_alias("fraud-monitored", "champion", "1")
    q = follow(workdir, registry, "watched=models:/fraud-monitored@champion")
    try:
        assert ask(q, "watched") == (1, 2.0)
        report = requests.get(f"http://{q.http}/v2/models/watched/versions/1/monitoring", timeout=10).json()
        assert report["reference"] == {"source": "1/reference.npz", "rows": 500}, report
        assert {f["feature"] for f in report["features"] if f["input"] == "x"} == {"0", "1", "2", "3"}
    finally:
        q.stop()


def test_a_model_logged_by_mlflow_onnx_is_served(registry, workdir):
    """MLflow 3's own flow: log_model with a registered name (the version's
    source is then a logged model, models:/m-..., resolved by the server)."""
    import onnx
    mlflow.set_tracking_uri(registry)
    model = onnx.load_from_string(scale_model(7.0))
    with mlflow.start_run():
        mlflow.onnx.log_model(model, name="model", registered_model_name="fraud-logged")
    MlflowClient(registry).set_registered_model_alias("fraud-logged", "champion", "1")
    q = follow(workdir, registry, "logged=models:/fraud-logged@champion")
    try:
        assert ask(q, "logged") == (1, 7.0)
        assert row(q, "logged", 1)["provenance"]["artifact_uri"].startswith("models:/m-")
    finally:
        q.stop()


def test_a_torchscript_model_logged_with_the_pytorch_flavour_is_served(registry, workdir):
    """mlflow.pytorch.log_model's layout (MLmodel's pytorch flavour names the
    folder `data`, which holds model.pth) around a TorchScript file, with the
    config.pbtxt a TorchScript model needs: quiver finds the file from the
    flavour and serves it with LibTorch."""
    from quiver_server import MODELS
    name = "adder-pt"
    d = tempfile.mkdtemp()
    os.makedirs(os.path.join(d, "data"))
    with open(os.path.join(MODELS, "add_sub_pt", "1", "model.pt"), "rb") as src, \
            open(os.path.join(d, "data", "model.pth"), "wb") as dst:
        dst.write(src.read())
    with open(os.path.join(MODELS, "add_sub_pt", "config.pbtxt")) as f:
        config = f.read().replace('name: "add_sub_pt"', 'name: "adder"')
    with open(os.path.join(d, "config.pbtxt"), "w") as f:
        f.write(config)
    with open(os.path.join(d, "MLmodel"), "w") as f:
        f.write("artifact_path: model\nflavors:\n  python_function:\n    data: data\n"
                "    loader_module: mlflow.pytorch\n  pytorch:\n    code: null\n    model_data: data\n"
                "    pytorch_version: 2.11.0\n")
    mlflow.set_tracking_uri(registry)
    client = MlflowClient(registry)
    client.create_registered_model(name)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(d, "model")
    client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_registered_model_alias(name, "champion", "1")
    q = follow(workdir, registry, f"adder=models:/{name}@champion")
    try:
        a, b = list(range(16)), [3] * 16
        body = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
                           {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b}]}
        r = requests.post(f"http://{q.http}/v2/models/adder/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        outputs = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert outputs["OUTPUT0"] == [x + 3 for x in a]
        assert outputs["OUTPUT1"] == [x - 3 for x in a]
        assert row(q, "adder", 1)["provenance"]["registered_model"] == name
    finally:
        q.stop()


def test_stage_transitions_and_fixed_versions(registry, workdir):
    client = register(registry, "fraud-stage", [2.0, 3.0])
    client.transition_model_version_stage("fraud-stage", "1", "Production")
    q = follow(workdir, registry, "prod=models:/fraud-stage/Production", "pinned=models:/fraud-stage/2",
               "newest=models:/fraud-stage/latest")
    try:
        assert ask(q, "prod") == (1, 2.0)
        assert ask(q, "pinned") == (2, 3.0)
        assert ask(q, "newest") == (2, 3.0)
        traffic = Traffic(q, "prod")
        client.transition_model_version_stage("fraud-stage", "2", "Production", archive_existing_versions=True)
        eventually(lambda: ask(q, "prod") == (2, 3.0), what="the stage transition to 2")
        client.transition_model_version_stage("fraud-stage", "1", "Production", archive_existing_versions=True)
        eventually(lambda: ask(q, "prod") == (1, 2.0), what="the stage transition back to 1")
        answers, failures = traffic.stop()
        assert failures == [], failures[:3]
        assert {a[0] for a in answers} <= {1, 2}
        assert ask(q, "pinned") == (2, 3.0)
        assert_no_secrets(q)
    finally:
        q.stop()


def test_a_version_failing_its_golden_set_never_serves(registry, workdir):
    # Version 2 computes x * 5 but its golden set expects x * 3.
    client = register(registry, "fraud-gate", [2.0, 5.0], golden=[2.0, 3.0])
    client.set_registered_model_alias("fraud-gate", "champion", "1")
    q = follow(workdir, registry, "gate=models:/fraud-gate@champion")
    try:
        assert ask(q, "gate") == (1, 2.0)
        assert row(q, "gate", 1)["provenance"]["validation"].startswith("passed")
        traffic = Traffic(q, "gate")
        client.set_registered_model_alias("fraud-gate", "champion", "2")
        eventually(lambda: (row(q, "gate", 2) or {}).get("state") == "UNAVAILABLE", what="version 2 refused")
        time.sleep(2.5)  # more polls: it is not retried, and never served
        answers, failures = traffic.stop()
        assert failures == [] and answers and set(answers) == {(1, 2.0)}, (failures[:3], set(answers))
        reason = row(q, "gate", 2)["reason"]
        assert "validation failed (golden)" in reason and "is 5 where 3 was expected" in reason, reason
        assert "validation failed" in "".join(q.log)
        assert metric(q, "quiver_validation_failures_total", model="gate", check="golden") == 1
        assert metric(q, "quiver_model_loads_total", model="gate", outcome="failure") == 1
        assert_no_secrets(q)
    finally:
        q.stop()


def test_artifacts_in_s3_behind_mlflow(workdir, monkeypatch):
    """MLflow without its artifact proxy: versions point at s3:// and quiver
    reads them from the store (MLFLOW_S3_ENDPOINT_URL, the AWS variables)."""
    s3_port, port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{s3_port}"
    store = moto_server(s3_port, os.path.join(workdir, "moto.log"))
    store.start()
    s3_client(endpoint).create_bucket(Bucket="mlflow")
    env = {**s3_env(endpoint), "MLFLOW_S3_ENDPOINT_URL": endpoint}
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # the MLflow client writes to S3 itself
    url = f"http://127.0.0.1:{port}"
    server = mlflow_server(port, os.path.join(workdir, "mlflow"), artifact_root="s3://mlflow/artifacts")
    server.start()
    q = None
    try:
        client = register(url, "fraud-s3", [2.0, 3.0])
        client.set_registered_model_alias("fraud-s3", "champion", "2")
        q = follow(workdir, url, "fraud=models:/fraud-s3@champion", extra_env=env)
        assert ask(q, "fraud") == (2, 3.0)
        assert row(q, "fraud", 2)["provenance"]["artifact_uri"].startswith("s3://mlflow/artifacts/")
        client.set_registered_model_alias("fraud-s3", "champion", "1")
        eventually(lambda: ask(q, "fraud") == (1, 2.0), what="the alias move to 1")
        assert_no_secrets(q)
    finally:
        if q:
            q.stop()
        server.stop()
        store.stop()


def test_registry_unreachable_at_start_up_and_later(workdir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = mlflow_server(port, os.path.join(workdir, "mlflow"))
    server.start()
    client = register(url, "fraud-down", [2.0, 3.0])
    client.set_registered_model_alias("fraud-down", "champion", "1")
    server.stop()
    # A password in the tracking URI: used, never shown.
    secret_url = f"http://quiver:{URI_PASSWORD}@127.0.0.1:{port}"
    q = follow(workdir, secret_url, "fraud=models:/fraud-down@champion", extra_env={"MLFLOW_TRACKING_TOKEN": ""})
    try:
        assert q.alive()
        unavailable = next(r for r in index(q) if r["name"] == "fraud")
        assert unavailable["state"] == "UNAVAILABLE"
        assert f"MLflow at http://127.0.0.1:{port} unreachable" in unavailable["reason"], unavailable
        assert metric(q, "quiver_source_errors_total", source="mlflow", model="fraud") >= 1

        server.start()
        eventually(lambda: ask(q, "fraud") == (1, 2.0), seconds=90, what="served once MLflow is up")

        server.stop()
        traffic = Traffic(q, "fraud")
        eventually(lambda: "source is unavailable" in (row(q, "fraud", 1) or {}).get("reason", ""),
                   what="the index to report the registry")
        answers, failures = traffic.stop()
        assert failures == [] and answers and set(answers) == {(1, 2.0)}

        server.start()
        MlflowClient(url).set_registered_model_alias("fraud-down", "champion", "2")
        eventually(lambda: ask(q, "fraud") == (2, 3.0), seconds=90, what="recovered and followed the alias")
        eventually(lambda: "reason" not in row(q, "fraud", 2), what="the error to clear")
        assert_no_secrets(q)
    finally:
        q.stop()
        assert_no_secrets(q)
        server.stop()


def test_mlflow_down_for_a_minute_serving_goes_on_with_back_off_then_catches_up(workdir):
    """The tracking server stops for QUIVER_OUTAGE_SECONDS (60 by default)
    while quiver follows an alias under traffic: the last good version keeps
    answering, the index says why, quiver backs off rather than asking every
    poll, and once the server is back an alias move is followed."""
    outage = float(os.environ.get("QUIVER_OUTAGE_SECONDS", "60"))
    mlflow_dir = os.path.join(workdir, "mlflow-outage")
    port = free_port()
    server = mlflow_server(port, mlflow_dir)
    server.start()
    url = f"http://127.0.0.1:{port}"
    q = None
    try:
        client = register(url, "fraud-outage", [2.0, 3.0])
        client.set_registered_model_alias("fraud-outage", "champion", "1")
        q = follow(workdir, url, "fraud=models:/fraud-outage@champion")
        eventually(lambda: ask(q, "fraud") == (1, 2.0), what="version 1 served")
        traffic = Traffic(q, "fraud")
        server.stop()
        errors_at_stop = metric(q, "quiver_source_errors_total", source="mlflow", model="fraud")
        eventually(lambda: "source is unavailable" in (row(q, "fraud", 1) or {}).get("reason", ""),
                   what="the index to report the registry")
        time.sleep(outage)
        errors = metric(q, "quiver_source_errors_total", source="mlflow", model="fraud") - errors_at_stop
        polls = outage / float(POLL)
        # Back-off: far fewer attempts than polls (it doubles up to 8 intervals).
        assert 1 <= errors <= polls / 3, (errors, polls)
        server.start()
        client.set_registered_model_alias("fraud-outage", "champion", "2")
        eventually(lambda: ask(q, "fraud") == (2, 3.0), seconds=60, what="the alias move after the outage")
        answers, failures = traffic.stop()
        assert failures == [], failures[:5]
        assert answers and all(a in ((1, 2.0), (2, 3.0)) for a in answers)
        assert_no_secrets(q)
    finally:
        if q:
            q.stop()
        server.stop()

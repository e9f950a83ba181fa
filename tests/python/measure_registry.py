"""How long a change in a registry takes to be served, and what clients see
meanwhile: S3 upload -> served, MLflow alias move -> served, at two poll
intervals. Not a test (timings never pass or fail); numbers for
docs/performance.md. Run: .venv/registry/bin/python tests/python/measure_registry.py"""
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import test_registry as t  # noqa: E402
from quiver_server import QuiverServer  # noqa: E402
from registry_servers import free_port, mlflow_server, moto_server, scale_model  # noqa: E402


def served_after(q, model, want, start):
    while t.ask(q, model) != want:
        time.sleep(0.01)
    return time.time() - start


def s3(poll, rounds):
    work = tempfile.mkdtemp()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    store = moto_server(port, os.path.join(work, "moto.log"))
    store.start()
    s3c = t.s3_client(endpoint)
    t.put_repo(s3c, {1: 2.0})
    q = QuiverServer(repository="s3://models/repo", env=t.s3_env(endpoint), extra_args=[
        "--model-control-mode", "poll", "--repository-poll-secs", str(poll),
        "--cache-dir", os.path.join(work, "cache")])
    times = []
    traffic = t.Traffic(q, "scale")
    for i in range(rounds):
        v, k = i + 2, float(i + 3)
        start = time.time()
        s3c.put_object(Bucket="models", Key=f"repo/scale/{v}/model.onnx", Body=scale_model(k))
        times.append(served_after(q, "scale", (v, k), start))
    answers, failures = traffic.stop()
    q.stop()
    store.stop()
    return times, len(answers), len(failures)


def mlflow(poll, rounds):
    work = tempfile.mkdtemp()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = mlflow_server(port, work)
    server.start()
    client = t.register(url, "m", [2.0, 3.0])
    client.set_registered_model_alias("m", "champion", "1")
    q = t.follow(work, url, "m=models:/m@champion", poll=poll)
    traffic = t.Traffic(q, "m")
    times = []
    for i in range(rounds):
        v = 2 if i % 2 == 0 else 1
        start = time.time()
        client.set_registered_model_alias("m", "champion", str(v))
        times.append(served_after(q, "m", (v, 2.0 if v == 1 else 3.0), start))
    answers, failures = traffic.stop()
    q.stop()
    server.stop()
    return times, len(answers), len(failures)


for name, fn in [(n, f) for n, f in (("s3 upload", s3), ("mlflow alias move", mlflow)) if n.split()[0] in sys.argv[1:] or len(sys.argv) == 1]:
    for poll in (1, 5):
        times, answers, failures = fn(poll, 6)
        print(f"{name:18} poll {poll}s: served after median {statistics.median(times):.2f}s, "
              f"max {max(times):.2f}s over {len(times)} changes; {answers} requests during, {failures} failed",
              flush=True)

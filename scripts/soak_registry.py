"""The MLflow part of scripts/soak.sh, run with .venv/registry's Python:
starts a tracking server on 127.0.0.1, registers `soak-scale` with two
versions of y = x * K (K = the version number, so the soak checks every
answer), points alias `champion` at version 1, writes the server's URL to WORKDIR/url, and
then moves the alias between the versions every SECONDS until STOPFILE
exists. The server stops with it."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from registry_servers import free_port, mlflow_server, scale_model  # noqa: E402


def main(workdir, seconds, stopfile):
    port = free_port()
    server = mlflow_server(port, workdir)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        mlflow.set_tracking_uri(url)
        client = MlflowClient(url)
        client.create_registered_model("soak-scale")
        for k in (1.0, 2.0):
            d = tempfile.mkdtemp()
            with open(os.path.join(d, "net.onnx"), "wb") as f:
                f.write(scale_model(k))
            with open(os.path.join(d, "MLmodel"), "w") as f:
                f.write("artifact_path: model\nflavors:\n  onnx:\n    data: net.onnx\n    onnx_version: 1.17.0\n")
            with mlflow.start_run() as run:
                mlflow.log_artifacts(d, "model")
            client.create_model_version("soak-scale", f"{run.info.artifact_uri}/model", run.info.run_id)
        client.set_registered_model_alias("soak-scale", "champion", "1")
        with open(os.path.join(workdir, "url.tmp"), "w") as f:
            f.write(url + "\n")
        os.replace(os.path.join(workdir, "url.tmp"), os.path.join(workdir, "url"))
        moves, version = 0, 1
        while not os.path.exists(stopfile):
            time.sleep(seconds)
            version = 3 - version
            client.set_registered_model_alias("soak-scale", "champion", str(version))
            moves += 1
            with open(os.path.join(workdir, "moves"), "a") as f:
                f.write(f"{time.time():.3f} champion -> {version}\n")
        print(f"alias moves: {moves}", file=sys.stderr, flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])

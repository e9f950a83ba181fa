"""Real registries for the registry suite, started on 127.0.0.1 by the tests:
an S3-compatible server (moto's server mode) and an MLflow tracking server
(SQLite backend, local artifact store behind its artifact proxy)."""
import os
import socket
import struct
import subprocess
import sys
import time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)
SCALE_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "scale.onnx")
SCALE_CONFIG = b"""name: "scale"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200 }
"""


def scale_model(k):
    """The ONNX bytes of y = x * k (the fixture's constant replaced)."""
    data = bytearray(open(SCALE_FIXTURE, "rb").read())
    marker = struct.pack("<f", 12345.678)
    at = data.find(marker)
    assert at >= 0
    data[at:at + 4] = struct.pack("<f", k)
    return bytes(data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited during start-up")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not start in {seconds} s")


class Process:
    """A server process with a log file; start() and stop() may repeat."""

    def __init__(self, args, log, health, what):
        self.args, self.log, self.health, self.what = args, log, health, what
        self.proc = None

    def start(self, seconds=120):
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_http(self.health, self.proc, seconds, self.what)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None


def moto_server(port, log):
    return Process([os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log,
                   f"http://127.0.0.1:{port}/moto-api/", "moto_server")


def mlflow_server(port, workdir, artifact_root=None):
    """With `artifact_root` (an s3:// URI), artifacts live there and clients
    read and write them directly (no proxy); otherwise in `workdir` behind
    the server's artifact proxy."""
    os.makedirs(workdir, exist_ok=True)
    args = [os.path.join(BIN, "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{workdir}/mlflow.db",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if artifact_root:
        args += ["--default-artifact-root", artifact_root, "--no-serve-artifacts"]
    else:
        args += ["--artifacts-destination", f"{workdir}/artifacts"]
    return Process(args, os.path.join(workdir, "server.log"), f"http://127.0.0.1:{port}/health",
                   "mlflow server")

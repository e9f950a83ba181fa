"""Starts a real quiver binary on 127.0.0.1 with every port 0 and reads the
bound addresses from its start-up log. Shared by the Python client suites."""
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("QUIVER_BIN", os.path.join(ROOT, "target", "debug", "quiver"))
MODELS = os.path.join(ROOT, "models")
ADDRESS = re.compile(r"(HTTP|gRPC|metrics) listening address=\S+:(\d+)")


class ExternalServer:
    """A quiver started elsewhere (a container: scripts/container-test.sh),
    named by QUIVER_EXTERNAL=<host>:<http port>,<grpc port>,<metrics port>."""

    def __init__(self, spec):
        host, http, grpc, metrics = re.match(r"(.+):(\d+),(\d+),(\d+)$", spec).groups()
        self.http, self.grpc, self.metrics = f"{host}:{http}", f"{host}:{grpc}", f"{host}:{metrics}"
        self.log = []

    def alive(self):
        return True

    def stop(self):
        pass


def session_server():
    """The server a suite's session runs against: the one QUIVER_EXTERNAL
    names, else a quiver started here on the demo models."""
    spec = os.environ.get("QUIVER_EXTERNAL")
    return ExternalServer(spec) if spec else QuiverServer()


class QuiverServer:
    def __init__(self, repository=MODELS, extra_args=(), env=None):
        self.cache = tempfile.mkdtemp(prefix="quiver-xdg-")
        env = dict(os.environ, XDG_CACHE_HOME=self.cache, QUIVER_LOG="info", **(env or {}))
        args = [BINARY, "--model-repository", repository, "--host", "127.0.0.1",
                "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                "--shutdown-drain-seconds", "0", *extra_args]
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.ports = {}
        self.log = []
        deadline = time.time() + 60
        while len(self.ports) < 3:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("quiver exited during start-up:\n" + "".join(self.log))
            self.log.append(line)
            m = ADDRESS.search(line)
            if m:
                self.ports[m.group(1)] = int(m.group(2))
            if time.time() > deadline:
                raise RuntimeError("quiver did not start in 60 s:\n" + "".join(self.log))
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def http(self):
        return f"127.0.0.1:{self.ports['HTTP']}"

    @property
    def grpc(self):
        return f"127.0.0.1:{self.ports['gRPC']}"

    @property
    def metrics(self):
        return f"127.0.0.1:{self.ports['metrics']}"

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        sys.stderr.write("".join(self.log[-20:]))

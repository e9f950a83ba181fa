#!/usr/bin/env python3
"""Checks the Kubernetes manifests in deploy/.

1. Every KServe and Seldon resource against the real CRD schemas, with
   ../shared/k8s/validate.py, where that folder exists (it is not part of
   the project; without it this step is reported as skipped).
2. Every container that runs quiver: its command line, with Kubernetes'
   $(VAR) references expanded from the container's env and `bash -c`
   unwrapped, is accepted by the quiver binary ($QUIVER_BIN, --check-config:
   quiver's flags and Triton's); its probes use quiver's health endpoints on
   a port it declares; and where it sets --shutdown-drain-seconds and
   --shutdown-grace-seconds, the pod's terminationGracePeriodSeconds covers
   both.

Needs pyyaml (and jsonschema for step 1). Exit status 1 on any failure.
"""
import glob
import os
import re
import shlex
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIVER = os.environ.get("QUIVER_BIN", os.path.join(ROOT, "target", "debug", "quiver"))
HEALTH = {"/v2/health/live", "/v2/health/ready"}


def pod_specs(doc):
    """(name, pod spec) of every pod template in a document."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Deployment":
        yield "Deployment", spec["template"]["spec"]
    elif kind == "ServerConfig":
        yield "ServerConfig", spec["podSpec"]
    elif kind == "ClusterServingRuntime":
        yield "ClusterServingRuntime", {"containers": spec["containers"]}
    elif kind == "InferenceService":
        # A model on quiver's runtime: its args and env join the runtime's container.
        model = (spec.get("predictor") or {}).get("model") or {}
        if model.get("runtime") == "kserve-quiver":
            yield "InferenceService", {"containers": [dict(model, name="kserve-container", image="quiver")]}
    elif kind == "SeldonDeployment":
        for p in spec["predictors"]:
            for c in p.get("componentSpecs", []):
                yield "SeldonDeployment", c["spec"]


def command_line(container):
    """The quiver arguments a container runs with, $(VAR) expanded."""
    env = {e["name"]: e.get("value", "") for e in container.get("env", []) if "value" in e}
    words = list(container.get("command", [])) + list(container.get("args", []))
    words = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), w) for w in words]
    if words[:2] == ["bash", "-c"]:
        words = shlex.split(words[2])
    if words and os.path.basename(words[0]) in ("tritonserver", "quiver"):
        words = words[1:]
    # KServe fills {{.Name}} in.
    return [w.replace("{{.Name}}", "model") for w in words]


def flag(args, name):
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return None


def check_quiver(path, kind, pod, container):
    problems = []
    args = command_line(container)
    # The container's own QUIVER_* settings are checked with its flags.
    env = dict(os.environ, **{e["name"]: str(e["value"]) for e in container.get("env", [])
                              if e["name"].startswith("QUIVER_") and "value" in e})
    run = subprocess.run([QUIVER, *args, "--check-config"], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        problems.append(f"quiver refuses {args}: {run.stderr.strip()}")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = (container.get(probe) or {}).get("httpGet")
        if not get:
            continue
        if get["path"] not in HEALTH:
            problems.append(f"{probe} path {get['path']} is not a quiver health endpoint")
        port = get["port"]
        if isinstance(port, str) and port not in ports:
            problems.append(f"{probe} port {port} is not declared")
    drain, grace = flag(args, "shutdown-drain-seconds"), flag(args, "shutdown-grace-seconds")
    period = pod.get("terminationGracePeriodSeconds")
    if drain and grace and period is not None and int(period) < int(drain) + int(grace):
        problems.append(f"terminationGracePeriodSeconds {period} < drain {drain} + grace {grace}")
    where = f"{path} {kind} container {container['name']}"
    for p in problems:
        print(f"FAIL {where}: {p}")
    if not problems:
        print(f"ok   {where}: {' '.join(args)}")
    return len(problems)


def main():
    files = sorted(glob.glob(os.path.join(ROOT, "deploy", "**", "*.yaml"), recursive=True))
    failures = 0
    validate = os.path.join(ROOT, "..", "shared", "k8s", "validate.py")
    if os.path.exists(validate):
        failures += subprocess.run([sys.executable, validate, *files]).returncode != 0
    else:
        print("skipped: CRD schema validation (../shared/k8s is not on this machine)")
    quivers = 0
    for path in files:
        for doc in yaml.safe_load_all(open(path)):
            for kind, pod in pod_specs(doc or {}):
                for c in pod.get("containers", []):
                    if str(c.get("image", "")).startswith("quiver"):
                        quivers += 1
                        failures += check_quiver(os.path.relpath(path, ROOT), kind, pod, c)
    if quivers == 0:
        print("FAIL: no quiver container found in deploy/")
        failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

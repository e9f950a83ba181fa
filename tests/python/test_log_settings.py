"""Triton's logging extension against the real server, with tritonclient's
own calls: the settings round-trip over HTTP and gRPC, bad values are
refused naming the setting, and the settings act on what quiver writes
(lines switched off stop, a log file gets the lines)."""
import os
import subprocess
import tempfile
import time

import grpc
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from quiver_server import BINARY, MODELS, ROOT, QuiverServer

DEFAULTS = {"log_file": "", "log_info": True, "log_warnings": True, "log_errors": True,
            "log_verbose_level": 0, "log_format": "default"}
CHANGED = "log settings changed"


@pytest.fixture(scope="module")
def quiver():
    s = QuiverServer()
    yield s
    assert s.alive()
    s.stop()


def grpc_settings(response):
    """A LogSettingsResponse as a plain dict."""
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.settings.items()}


def lines(server, needle):
    return sum(needle in line for line in server.log)


def eventually(check, seconds=5):
    deadline = time.time() + seconds
    while not check():
        assert time.time() < deadline
        time.sleep(0.05)


def test_settings_round_trip_over_http_and_grpc_and_act(quiver):
    h = httpclient.InferenceServerClient(quiver.http)
    g = grpcclient.InferenceServerClient(quiver.grpc)
    assert "logging" in h.get_server_metadata()["extensions"]
    assert h.get_log_settings() == DEFAULTS
    assert grpc_settings(g.get_log_settings()) == DEFAULTS

    # HTTP: only what is named changes; the answer has every setting.
    before = lines(quiver, CHANGED)
    answer = h.update_log_settings({"log_verbose_level": 1, "log_format": "ISO8601"})
    assert answer == dict(DEFAULTS, log_verbose_level=1, log_format="ISO8601")
    eventually(lambda: lines(quiver, CHANGED) == before + 1)

    # gRPC sees the change, and makes its own.
    assert grpc_settings(g.get_log_settings())["log_verbose_level"] == 1
    answer = grpc_settings(g.update_log_settings({"log_verbose_level": 0, "log_format": "default"}))
    assert answer == DEFAULTS
    assert h.get_log_settings() == DEFAULTS
    eventually(lambda: lines(quiver, CHANGED) == before + 2)

    # Info lines off: the next change is not logged; back on, it is.
    h.update_log_settings({"log_info": False})
    h.update_log_settings({"log_verbose_level": 2})
    time.sleep(0.3)
    assert lines(quiver, CHANGED) == before + 2
    h.update_log_settings({"log_info": True, "log_verbose_level": 0})
    eventually(lambda: lines(quiver, CHANGED) == before + 3)

    # A log file takes the lines from then on; "" goes back to stderr.
    path = os.path.join(tempfile.mkdtemp(prefix="quiver-log-"), "quiver.log")
    g.update_log_settings({"log_file": path})
    g.update_log_settings({"log_warnings": False})
    eventually(lambda: os.path.exists(path) and CHANGED in open(path).read())
    count = lines(quiver, CHANGED)
    g.update_log_settings({"log_file": "", "log_warnings": True})
    eventually(lambda: lines(quiver, CHANGED) == count + 1)
    assert h.get_log_settings() == DEFAULTS


@pytest.mark.parametrize("settings,name", [
    ({"log_verbose_level": -1}, "log_verbose_level"),
    ({"log_verbose_level": "high"}, "log_verbose_level"),
    ({"log_info": "yes"}, "log_info"),
    ({"log_format": "json"}, "log_format"),
    ({"log_file": "/nonexistent-dir/quiver.log"}, "log_file"),
    ({"log_level": 1}, "log_level"),
])
def test_bad_values_are_refused_naming_the_setting_and_change_nothing(quiver, settings, name):
    h = httpclient.InferenceServerClient(quiver.http)
    with pytest.raises(InferenceServerException) as e:
        h.update_log_settings(dict(settings, log_errors=False))
    assert e.value.status() == "400" and name in e.value.message(), e.value
    assert h.get_log_settings() == DEFAULTS


# tritonclient picks the oneof by the setting's name, so a wrong type never
# leaves it; None sends a SettingValue with no value.
@pytest.mark.parametrize("settings,name", [
    ({"log_format": "json"}, "log_format"),
    ({"log_file": "/nonexistent-dir/quiver.log"}, "log_file"),
    ({"log_info": None}, "log_info"),
])
def test_bad_values_over_grpc_are_invalid_argument(quiver, settings, name):
    g = grpcclient.InferenceServerClient(quiver.grpc)
    with pytest.raises(InferenceServerException) as e:
        g.update_log_settings(settings)
    assert e.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT) and name in e.value.message(), e.value
    assert grpc_settings(g.get_log_settings()) == DEFAULTS


def test_tritons_log_flags_set_the_initial_settings():
    s = QuiverServer(extra_args=["--log-warning=false", "--log-error", "false", "--log-verbose", "1",
                                 "--log-format", "ISO8601"])
    try:
        h = httpclient.InferenceServerClient(s.http)
        assert h.get_log_settings() == dict(DEFAULTS, log_warnings=False, log_errors=False,
                                            log_verbose_level=1, log_format="ISO8601")
        # Verbose level 1: quiver's own debug lines are written.
        assert any(" DEBUG " in line for line in s.log), "".join(s.log[-20:])
    finally:
        s.stop()


def test_a_log_file_that_cannot_be_opened_stops_the_start_naming_it():
    run = subprocess.run([BINARY, "--model-repository", MODELS, "--check-config",
                          "--log-file", "/nonexistent-dir/quiver.log"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "log_file" in run.stderr and "/nonexistent-dir" in run.stderr, run


def test_a_log_file_gets_the_lines_from_the_start():
    path = os.path.join(tempfile.mkdtemp(prefix="quiver-log-"), "quiver.log")
    run = subprocess.run([BINARY, "--model-repository", MODELS, "--check-config", "--log-file", path,
                          "--log-verbose", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run
    # The start-up line that records the settings went to the file, not to stderr.
    assert CHANGED in open(path).read() and CHANGED not in run.stderr, run

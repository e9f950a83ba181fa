"""Triton's logging extension against the real server, with tritonclient's
own calls: the settings round-trip over HTTP and gRPC, bad values are
refused naming the setting, and the settings act on what quiver writes
(lines switched off stop, a log file gets the lines)."""
import os
import tempfile
import time

import grpc
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from quiver_server import QuiverServer

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

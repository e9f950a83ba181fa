import pytest

from quiver_server import QuiverServer


@pytest.fixture(scope="session")
def server():
    s = QuiverServer()
    yield s
    assert s.alive(), "quiver exited during the tests"
    s.stop()

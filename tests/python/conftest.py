import pytest

from quiver_server import session_server


@pytest.fixture(scope="session")
def server():
    s = session_server()
    yield s
    assert s.alive(), "quiver exited during the tests"
    s.stop()

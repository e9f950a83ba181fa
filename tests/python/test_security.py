"""tritonclient, unchanged, over HTTPS and gRPC with TLS, sending tokens in
headers: the data-plane token infers, only the control-plane token may load
or unload models, and no token gets 401 / UNAUTHENTICATED."""
import os
import subprocess
import tempfile

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from quiver_server import MODELS, QuiverServer



def data():
    # A new dict per call: tritonclient.http adds its own headers to the one it is given.
    return {"authorization": "Bearer data-secret"}


def control():
    return {"authorization": "Bearer control-secret"}


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="quiver-tls-")
    openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", "/CN=quiver-test-ca", "-keyout", "ca.key", "-out", "ca.pem")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=localhost", "-keyout", "tls.key", "-out", "tls.csr")
    openssl(d, "x509", "-req", "-in", "tls.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "tls.crt")
    return d


@pytest.fixture(scope="module")
def server(certs):
    s = QuiverServer(MODELS, ["--tls-cert", os.path.join(certs, "tls.crt"),
                              "--tls-key", os.path.join(certs, "tls.key"),
                              "--model-control-mode", "explicit", "--load-model", "add_sub",
                              "--data-token", "data-secret", "--control-token", "control-secret"])
    yield s
    assert s.alive(), "quiver exited during the tests"
    s.stop()


def inputs(module):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    out = []
    for name, value in (("INPUT0", a), ("INPUT1", b)):
        i = module.InferInput(name, [1, 16], "INT32")
        i.set_data_from_numpy(value)
        out.append(i)
    return out, a + b


def test_https(server, certs):
    url = "localhost:" + server.http.split(":")[1]
    client = httpclient.InferenceServerClient(url=url, ssl=True,
                                              ssl_options={"ca_certs": os.path.join(certs, "ca.pem")})
    assert client.is_server_ready()  # health stays open
    ins, expected = inputs(httpclient)
    result = client.infer("add_sub", ins, headers=data())
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected)
    with pytest.raises(InferenceServerException) as e:
        client.infer("add_sub", ins)
    assert "token" in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        client.load_model("fraud_mlp", headers=data())
    assert "control-plane token" in str(e.value)
    client.load_model("fraud_mlp", headers=control())
    assert client.is_model_ready("fraud_mlp", headers=data())


def test_grpc_tls(server, certs):
    url = "localhost:" + server.grpc.split(":")[1]
    client = grpcclient.InferenceServerClient(url=url, ssl=True, root_certificates=os.path.join(certs, "ca.pem"))
    ins, expected = inputs(grpcclient)
    result = client.infer("add_sub", ins, headers=data())
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected)
    with pytest.raises(InferenceServerException) as e:
        client.infer("add_sub", ins)
    assert "UNAUTHENTICATED" in str(e.value.status()) or "token" in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        client.unload_model("add_sub", headers=data())
    assert "control-plane token" in str(e.value)
    client.unload_model("add_sub", headers=control())
    assert not client.is_model_ready("add_sub", headers=data())

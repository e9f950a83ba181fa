"""tritonclient, unchanged, over HTTPS and gRPC with TLS, sending tokens in
headers: the data-plane token infers, only the control-plane token may load
or unload models, and no token gets 401 / UNAUTHENTICATED."""
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

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


# Mutual TLS: --tls-client-ca, and Triton's --grpc-use-ssl-mutual with
# --grpc-root-cert, make both listeners require a client certificate.

def client_cert(d, ca, name):
    """A client certificate `name`.crt/.key signed by CA `ca` (made if new)."""
    if not os.path.exists(os.path.join(d, f"{ca}.pem")):
        openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-days", "2", "-subj", f"/CN={ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", "client.ext", "-out", f"{name}.crt")
    return os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key")


@pytest.fixture(scope="module")
def clients(certs):
    return {
        "good": client_cert(certs, "client-ca", "client-good"),
        "rogue": client_cert(certs, "rogue-ca", "client-rogue"),
    }


MUTUAL_FLAGS = {
    "quiver": lambda d: ["--tls-cert", os.path.join(d, "tls.crt"), "--tls-key", os.path.join(d, "tls.key"),
                         "--tls-client-ca", os.path.join(d, "bundle.pem")],
    "triton": lambda d: ["--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true",
                         "--grpc-server-cert", os.path.join(d, "tls.crt"),
                         "--grpc-server-key", os.path.join(d, "tls.key"),
                         "--grpc-root-cert", os.path.join(d, "bundle.pem")],
}


@pytest.fixture(params=sorted(MUTUAL_FLAGS))
def mutual(request, certs, clients):
    shutil.copy(os.path.join(certs, "client-ca.pem"), os.path.join(certs, "bundle.pem"))
    s = QuiverServer(MODELS, [*MUTUAL_FLAGS[request.param](certs), "--tls-reload-seconds", "1",
                              "--model-control-mode", "explicit", "--load-model", "add_sub"])
    yield s
    assert s.alive(), "quiver exited during the tests"
    s.stop()


def https_client(server, certs, identity):
    url = "localhost:" + server.http.split(":")[1]
    options = {"ca_certs": os.path.join(certs, "ca.pem")}
    if identity:
        options["certfile"], options["keyfile"] = identity
    return httpclient.InferenceServerClient(url=url, ssl=True, ssl_options=options)


def grpc_client(server, certs, identity):
    url = "localhost:" + server.grpc.split(":")[1]
    key, chain = (identity[1], identity[0]) if identity else (None, None)
    return grpcclient.InferenceServerClient(url=url, ssl=True, root_certificates=os.path.join(certs, "ca.pem"),
                                            private_key=key, certificate_chain=chain)


def infers(client, module):
    ins, expected = inputs(module)
    result = client.infer("add_sub", ins)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected)


def test_mutual_tls_admits_only_clients_the_ca_signed(mutual, certs, clients):
    for module, make in ((httpclient, https_client), (grpcclient, grpc_client)):
        infers(make(mutual, certs, clients["good"]), module)
        for identity in (None, clients["rogue"]):
            # Refused at the handshake: no answer of quiver's comes back.
            with pytest.raises(Exception):
                infers(make(mutual, certs, identity), module)
    metrics = urllib.request.urlopen(f"http://{mutual.metrics}/metrics").read().decode()
    assert 'quiver_tls_handshake_failures_total{listener="http"}' in metrics, metrics
    assert 'quiver_tls_handshake_failures_total{listener="grpc"}' in metrics, metrics


def test_the_client_ca_bundle_is_reloaded_when_it_changes(mutual, certs, clients):
    infers(https_client(mutual, certs, clients["good"]), httpclient)
    # Rotate the bundle to the other CA: its clients get in, the old ones no longer.
    tmp = os.path.join(certs, "bundle.pem.tmp")
    shutil.copy(os.path.join(certs, "rogue-ca.pem"), tmp)
    os.replace(tmp, os.path.join(certs, "bundle.pem"))
    deadline = time.time() + 20
    while True:
        try:
            infers(grpc_client(mutual, certs, clients["rogue"]), grpcclient)
            break
        except Exception:
            assert time.time() < deadline, "the new client CA was not picked up:\n" + "".join(mutual.log[-20:])
            time.sleep(0.2)
    with pytest.raises(Exception):
        infers(https_client(mutual, certs, clients["good"]), httpclient)

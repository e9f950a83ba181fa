//! Tokens with two scopes over REST and gRPC, and TLS on both listeners.
mod common;

use common::*;
use quiver_proto::inference::*;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    r
}

fn infer_request() -> ModelInferRequest {
    add_sub_grpc("add_sub", 1, 2)
}

#[tokio::test]
async fn tokens_guard_the_data_and_control_planes() {
    let mut c = explicit(&root().join("models"), &["add_sub"]);
    c.data_token = vec!["data-secret".into()];
    c.control_token = vec!["control-secret".into()];
    let s = TestServer::start(c).await;
    let infer = |token: Option<(&'static str, &'static str)>| {
        let mut r = s.client.post(s.url("/v2/models/add_sub/infer")).json(&add_sub_json());
        if let Some((k, v)) = token {
            r = r.header(k, v);
        }
        r.send()
    };

    // Health and metrics stay open.
    assert_eq!(s.get_status("/v2/health/ready").await, 200);
    assert_eq!(s.get_status("/metrics").await, 200);
    // No token, a wrong one, and a wrong scheme: 401 with the JSON body and a challenge.
    for token in [
        None,
        Some(("authorization", "Bearer nope")),
        Some(("authorization", "Basic data-secret")),
    ] {
        let r = infer(token).await.unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        expect_error(r, 401, "token").await;
    }
    assert_eq!(
        infer(Some(("authorization", "Bearer data-secret")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(infer(Some(("x-api-key", "data-secret"))).await.unwrap().status(), 200);
    assert_eq!(
        infer(Some(("authorization", "Bearer control-secret")))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = s.client.get(s.url("/v2/models/add_sub")).send().await.unwrap();
    expect_error(r, 401, "needs a token").await;

    // A data-plane token cannot load or unload.
    for action in ["load", "unload"] {
        let r = s
            .client
            .post(s.url(&format!("/v2/repository/models/add_sub/{action}")))
            .header("authorization", "Bearer data-secret")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_error(r, 403, "control-plane token").await;
    }
    let r = s
        .client
        .post(s.url("/v2/repository/models/fraud_mlp/load"))
        .header("x-api-key", "control-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // gRPC: the same rules on metadata.
    let mut grpc = s.grpc_client().await;
    let e = grpc.model_infer(infer_request()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    grpc.model_infer(with_token(infer_request(), "data-secret"))
        .await
        .unwrap();
    let load = || RepositoryModelLoadRequest {
        model_name: "tanh_nameonly".into(),
        ..Default::default()
    };
    let e = grpc
        .repository_model_load(with_token(load(), "data-secret"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    grpc.repository_model_load(with_token(load(), "control-secret"))
        .await
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await;
    assert!(health.is_ok(), "gRPC health stays open: {health:?}");
    s.stop().await;
}

/// A CA and a certificate for localhost / 127.0.0.1 signed by it, made with
/// the openssl command line. Returns (ca.pem, cert.pem, key.pem).
fn certificates(dir: &std::path::Path, cn: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::create_dir_all(dir).unwrap();
    if !dir.join("ca.pem").exists() {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=quiver-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    }
    let (cert, key) = (format!("{cn}.pem"), format!("{cn}.key"));
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        &key,
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        &cert,
    ]);
    (dir.join("ca.pem"), dir.join(cert), dir.join(key))
}

mod tls_client {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::crypto::ring;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    pub fn connector(ca: &std::path::Path, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// GET `path` over HTTPS/1.1; returns (the server's certificate, the answer).
    pub async fn get(addr: &str, ca: &std::path::Path, path: &str) -> (Vec<u8>, String) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector(ca, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.unwrap();
        (peer, answer)
    }
}

fn der_of(pem: &std::path::Path) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_listeners_and_certificate_rotation() {
    let dir = temp_dir("tls");
    let (ca, cert, key) = certificates(&dir, "first");
    let live = dir.join("live");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::copy(&cert, live.join("tls.crt")).unwrap();
    std::fs::copy(&key, live.join("tls.key")).unwrap();
    let mut c = config(&root().join("models"));
    c.tls_cert = Some(live.join("tls.crt"));
    c.tls_key = Some(live.join("tls.key"));
    c.tls_reload_seconds = 1;
    let s = TestServer::start(c).await;
    let http = s.http.trim_start_matches("http://").to_owned();

    let (peer, answer) = tls_client::get(&http, &ca, "/v2/health/ready").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(peer, der_of(&cert));
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = s.client.get(s.url("/v2/health/ready")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // gRPC over TLS (ALPN h2), through a tonic channel on our own connector.
    let connector = tls_client::connector(&ca, &[b"h2"]);
    let grpc_addr = s.grpc.trim_start_matches("http://").to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, addr) = (connector.clone(), grpc_addr.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();
    let mut grpc = quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel);
    assert!(grpc.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    grpc.model_infer(infer_request()).await.unwrap();

    // cert-manager rotates the Secret: new handshakes get the new certificate.
    let (_, cert2, key2) = certificates(&dir, "second");
    std::fs::copy(&key2, live.join("tls.key")).unwrap();
    std::fs::copy(&cert2, live.join("tls.crt")).unwrap();
    let second = der_of(&cert2);
    eventually(15, "the rotated certificate is served", || {
        let (http, ca) = (http.clone(), ca.clone());
        let second = second.clone();
        async move { tls_client::get(&http, &ca, "/v2/health/live").await.0 == second }
    })
    .await;
    // The open gRPC connection keeps working across the rotation.
    grpc.model_infer(infer_request()).await.unwrap();
    s.stop().await;
}

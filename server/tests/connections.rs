//! Connection limits against the real server: a connection over
//! --max-connections is refused at once with the reason, a slow client
//! (slowloris) and an idle one are closed, and a client on an established
//! connection keeps being served through a flood of idle connections.
mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(s: &TestServer) -> String {
    s.http.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `secs` pass: a hang
/// fails the test). Returns what arrived.
async fn read_until_closed(tcp: &mut TcpStream, secs: u64) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open: {}",
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

/// One add_sub request over an open HTTP/1.1 connection; its status, once
/// the whole answer (by content-length) has been read.
async fn infer_on(tcp: &mut TcpStream) -> u16 {
    let body = serde_json::to_vec(&add_sub_json()).unwrap();
    let head = format!(
        "POST /v2/models/add_sub/infer HTTP/1.1\r\nhost: quiver\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_len, length) = loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            break (end + 4, length);
        }
    };
    while got.len() < head_len + length {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got[9..12]).parse().unwrap()
}

#[tokio::test]
async fn a_connection_over_the_limit_is_refused_with_the_reason_and_the_slot_comes_back() {
    let repo = temp_dir("conn-limit");
    copy_model("add_sub", &repo.join("add_sub"));
    let mut c = config(&repo);
    c.max_connections = 3;
    let s = TestServer::start(c).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&s)).await.unwrap());
    }
    // The slots are taken once accepted: wait until the gate says so.
    let gate = std::sync::Arc::clone(&s.server.as_ref().unwrap().connections);
    eventually(10, "three connections open", || async { gate.open() == 3 }).await;
    let mut over = TcpStream::connect(addr(&s)).await.unwrap();
    let answer = read_until_closed(&mut over, 10).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("--max-connections"), "{answer}");
    // gRPC shares the budget: its connection is closed before any answer
    // (grpc-core clients report UNAVAILABLE; tonic's, a cancelled call).
    match tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
    {
        Err(_) => {}
        Ok(channel) => {
            let mut client =
                quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel);
            let status = client
                .server_live(quiver_proto::inference::ServerLiveRequest {})
                .await
                .unwrap_err();
            assert!(
                matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Cancelled),
                "{status:?}"
            );
        }
    }
    // Counted (process-wide, so at least this test's refusal).
    let m = s.metrics().await;
    assert!(
        sample(&m, "quiver_connections_refused_total{listener=\"http\"}") >= 1.0,
        "{m}"
    );
    // One closes: its slot comes back and a client is served again.
    held.pop();
    eventually(10, "a slot given back", || async { gate.open() == 2 }).await;
    let r = http_client()
        .post(s.url("/v2/models/add_sub/infer"))
        .json(&add_sub_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(held);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

#[tokio::test]
async fn slow_and_idle_clients_are_closed_while_others_are_served() {
    let repo = temp_dir("conn-slow");
    copy_model("add_sub", &repo.join("add_sub"));
    let mut c = config(&repo);
    c.http_header_read_timeout_seconds = 1;
    c.http_idle_timeout_seconds = 3;
    let s = TestServer::start(c).await;
    // A keep-alive connection quiet for longer than the header timeout (but
    // not the idle one) is still open: the header clock starts at a head's
    // first byte, not while waiting for the next request.
    let mut quiet = TcpStream::connect(addr(&s)).await.unwrap();
    assert_eq!(infer_on(&mut quiet).await, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(infer_on(&mut quiet).await, 200);
    drop(quiet);
    // Slowloris: a request head that never ends.
    let mut slow = TcpStream::connect(addr(&s)).await.unwrap();
    slow.write_all(b"POST /v2/models/add_sub/infer HTTP/1.1\r\nhost: quiver\r\n")
        .await
        .unwrap();
    // Idle: connects and sends nothing.
    let mut idle = TcpStream::connect(addr(&s)).await.unwrap();
    // A normal client is served meanwhile.
    for _ in 0..5 {
        assert_eq!(
            s.post_json("/v2/models/add_sub/infer", &add_sub_json()).await.status(),
            200
        );
    }
    read_until_closed(&mut slow, 20).await;
    read_until_closed(&mut idle, 20).await;
    // A keep-alive connection that served a request and then went quiet is
    // closed too, not held for ever.
    let mut kept = TcpStream::connect(addr(&s)).await.unwrap();
    let body = serde_json::to_vec(&add_sub_json()).unwrap();
    let head = format!(
        "POST /v2/models/add_sub/infer HTTP/1.1\r\nhost: quiver\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    kept.write_all(head.as_bytes()).await.unwrap();
    kept.write_all(&body).await.unwrap();
    let answer = read_until_closed(&mut kept, 20).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_its_connection_is_served_through_a_flood_of_idle_connections() {
    let repo = temp_dir("conn-flood");
    copy_model("add_sub", &repo.join("add_sub"));
    let mut c = config(&repo);
    c.max_connections = 1000;
    // This process holds both ends: raise its open-file limit as quiver's
    // default does (to the hard limit).
    let _ = quiver_server::connections::default_limit();
    let s = TestServer::start(c).await;
    // One keep-alive connection, established before the flood, driven by
    // hand so that every request goes over it (a pooling client may open
    // another, which the full server rightly refuses).
    let mut kept = TcpStream::connect(addr(&s)).await.unwrap();
    assert_eq!(infer_on(&mut kept).await, 200);
    let mut flood = Vec::new();
    for _ in 0..2000 {
        flood.push(TcpStream::connect(addr(&s)).await.unwrap());
    }
    // 999 idle connections fit beside the client's; the rest are refused,
    // in the order they came: the last one hears why.
    let gate = std::sync::Arc::clone(&s.server.as_ref().unwrap().connections);
    eventually(30, "the budget full", || async { gate.open() == 1000 }).await;
    let answer = read_until_closed(flood.last_mut().unwrap(), 20).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    for _ in 0..20 {
        assert_eq!(infer_on(&mut kept).await, 200);
    }
    assert_eq!(gate.open(), 1000);
    drop(flood);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

/// An HTTP/2 client that opens streams and never reads the answers: it gets
/// --max-concurrent-streams at a time, its unread answers wait in HTTP/2
/// flow control, and a client on another connection is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_does_not_read_its_answers_holds_only_its_streams() {
    let repo = temp_dir("conn-h2-unread");
    std::fs::create_dir_all(repo.join("echo/1")).unwrap();
    std::fs::write(
        repo.join("echo/config.pbtxt"),
        "backend: \"mock\"\nmax_batch_size: 0\ninput [ { name: \"x\" data_type: TYPE_FP32 dims: [ -1 ] } ]\n\
         output [ { name: \"y\" data_type: TYPE_FP32 dims: [ -1 ] } ]\n",
    )
    .unwrap();
    std::fs::write(repo.join("echo/1/model.mock"), "echo").unwrap();
    let mut c = config(&repo);
    c.max_concurrent_streams = 4;
    let s = TestServer::start(c).await;
    // 256 KiB answers, four times HTTP/2's initial stream window.
    let n = 64 * 1024;
    let header = format!(
        r#"{{"inputs":[{{"name":"x","shape":[{n}],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"y","parameters":{{"binary_data":true}}}}]}}"#,
        n * 4
    );
    let mut body = header.clone().into_bytes();
    body.extend(std::iter::repeat_n(0u8, n * 4));
    // HTTP/2's initial windows (64 KiB a stream), not reqwest's larger ones.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(65_535)
        .http2_initial_connection_window_size(4 * 65_535)
        .build()
        .unwrap();
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let request = h2
            .post(s.url("/v2/models/echo/infer"))
            .header("inference-header-content-length", header.len())
            .body(body.clone());
        pending.spawn(async move {
            // Headers come back; the body is held, never read.
            let held = request.send().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(held);
        });
    }
    // Requests the model has answered (success count of the statistics).
    let answered = || async {
        s.get_json("/v2/models/echo/stats").await["model_stats"][0]["inference_stats"]["success"]["count"]
            .as_u64()
            .unwrap_or(0)
    };
    eventually(20, "four streams answered", || async { answered().await >= 4 }).await;
    // The server answers others on their own connections meanwhile.
    for _ in 0..10 {
        let r = http_client()
            .post(s.url("/v2/models/echo/infer"))
            .json(&serde_json::json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Four of the sixteen reached the server: their answers sit unread in
    // flow control, and the other twelve wait on the client's side for a
    // stream to end.
    assert_eq!(answered().await, 4 + 10);
    let admission = std::sync::Arc::clone(&s.server.as_ref().unwrap().admission);
    // The client goes: its connection, streams and budget come back.
    pending.abort_all();
    while pending.join_next().await.is_some() {}
    drop(h2);
    eventually(20, "the budget back", || async {
        admission.requests_in_flight() == 0 && admission.bytes_in_flight() == 0
    })
    .await;
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

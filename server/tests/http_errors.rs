//! Errors the HTTP framework answers by itself get the same `{"error": ...}`
//! body as quiver's own, and a body over the limit gets its 413 even when the
//! client writes the whole body before it reads (lingering close).
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: usize = 1 << 20;

async fn server() -> TestServer {
    let mut c = config(&root().join("models"));
    c.http_max_body_bytes = LIMIT;
    TestServer::start(c).await
}

/// Writes `head` and then `body` in full, and only then reads the answer:
/// what Python's `http.client` and `requests` do.
async fn send_all_then_read(s: &TestServer, head: String, body: &[u8], chunked: bool) -> (u16, Value) {
    let addr = s.http.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let exchange = async {
        tcp.write_all(head.as_bytes()).await?;
        if chunked {
            for part in body.chunks(64 * 1024) {
                tcp.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await?;
                tcp.write_all(part).await?;
                tcp.write_all(b"\r\n").await?;
            }
            tcp.write_all(b"0\r\n\r\n").await?;
        } else {
            tcp.write_all(body).await?;
        }
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await?;
        std::io::Result::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the exchange finished")
        .expect("no broken pipe or reset: the server read the body before closing");
    parse(&answer)
}

fn parse(answer: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(answer);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body: {text}"));
    (status, json)
}

#[tokio::test]
async fn an_oversized_body_gets_413_with_json_even_when_sent_in_full() {
    let s = server().await;
    let body = vec![b'x'; 8 * LIMIT];
    for chunked in [false, true] {
        let length = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {}", body.len())
        };
        let head = format!(
            "POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: q\r\nContent-Type: application/json\r\n{length}\r\nConnection: close\r\n\r\n"
        );
        let (status, json) = send_all_then_read(&s, head, &body, chunked).await;
        assert_eq!(status, 413, "chunked: {chunked}: {json}");
        let message = json["error"].as_str().unwrap();
        assert!(message.contains("over the limit of 1048576 bytes"), "{message}");
    }
    // A client that waits for 100 Continue is answered at once.
    let addr = s.http.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: q\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let (status, json) = parse(&answer);
    assert_eq!(status, 413);
    assert!(json["error"].as_str().unwrap().contains("over the limit"), "{json}");
    // A body at the limit is read and judged on its content.
    let r = s
        .client
        .post(s.url("/v2/models/add_sub/infer"))
        .body(vec![b' '; LIMIT])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "malformed inference request JSON").await;
    assert_eq!(
        s.post_json("/v2/models/add_sub/infer", &add_sub_json()).await.status(),
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn framework_errors_have_json_bodies() {
    let s = server().await;
    // (method, path, status, part of the message)
    let cases = [
        (
            "GET",
            "/v2/models/add_sub/infer",
            405,
            "method GET is not allowed on /v2/models/add_sub/infer",
        ),
        ("DELETE", "/v2/health/ready", 405, "method DELETE is not allowed"),
        ("GET", "/v2/models/%FF/ready", 400, "/v2/models/%FF/ready"),
        ("GET", "/v2/nothing/here", 404, "no endpoint at /v2/nothing/here"),
    ];
    for (method, path, status, needle) in cases {
        let r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/json",
            "{method} {path}"
        );
        let body: Value = r.json().await.unwrap();
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: {body}"));
        assert!(
            message.contains(needle),
            "{method} {path}: '{message}' lacks '{needle}'"
        );
    }
    s.stop().await;
}

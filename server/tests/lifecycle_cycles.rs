//! 200 load/unload cycles of one model give back what they take: resident
//! memory at the end is within 10% of after the first cycle, and no thread
//! is left behind. Alone in its test binary, so that no other test's
//! allocations or threads are counted.
mod common;

use common::versions::*;
use common::*;
use serde_json::{Value, json};

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Threads of the model's instances still alive (named `q-cycled:<version>-<i>`;
/// the kernel keeps 15 bytes of a thread's name).
fn instance_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("q-cycled:"))
        .count()
}

async fn cycle(s: &TestServer) {
    let r = s.post_json("/v2/repository/models/cycled/load", &json!({})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = s.post_json("/v2/models/cycled/infer", &infer_body()).await;
    assert_eq!(r.status(), 200);
    let r = s.post_json("/v2/repository/models/cycled/unload", &json!({})).await;
    assert_eq!(r.status(), 200);
    eventually(10, "the version drained", || async {
        let index: Vec<Value> = s
            .post_json("/v2/repository/index", &json!({}))
            .await
            .json()
            .await
            .unwrap();
        index
            .iter()
            .any(|r| r["name"] == "cycled" && r["state"] == "UNAVAILABLE" && r["reason"] == "unloaded")
    })
    .await;
}

#[tokio::test]
async fn load_unload_cycles_return_memory_and_threads() {
    let repo = temp_dir("cycles");
    scale_repo(&repo, "cycled");
    // Two instances: two threads and two ONNX Runtime sessions per cycle.
    let config = format!(
        "{}\ninstance_group [ {{ count: 2 kind: KIND_CPU }} ]",
        scale_config("cycled")
    );
    std::fs::write(repo.join("cycled/config.pbtxt"), config).unwrap();
    write_version(&repo, "cycled", 1, 2.0);
    let s = TestServer::start(explicit(&repo, &[])).await;

    cycle(&s).await;
    // The first cycle's instance threads have exited before measuring.
    eventually(10, "the first cycle's instance threads exited", || async {
        instance_threads() == 0
    })
    .await;
    let (rss_first, threads_first) = (resident_bytes(), threads());
    for _ in 1..200 {
        cycle(&s).await;
    }
    eventually(20, "threads back to the count after the first cycle", || async {
        threads() <= threads_first
    })
    .await;
    let rss_last = resident_bytes();
    eprintln!(
        "RSS after cycle 1: {} KiB, after 200: {} KiB ({:+.1}%); threads {} -> {}",
        rss_first / 1024,
        rss_last / 1024,
        (rss_last as f64 / rss_first as f64 - 1.0) * 100.0,
        threads_first,
        threads()
    );
    assert!(
        rss_last as f64 <= rss_first as f64 * 1.10,
        "resident memory grew from {rss_first} to {rss_last} bytes over 200 cycles"
    );
    s.stop().await;
}

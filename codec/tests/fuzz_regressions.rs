//! Replays the fuzz seeds (`fuzz/corpus/<target>/`) and every input a fuzzer
//! ever found (`fuzz/regressions/<target>/`) through the same entry points
//! the fuzz targets drive: none may panic.

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn replay(target: &str, run: fn(&[u8])) {
    let mut replayed = 0;
    for folder in ["fuzz/corpus", "fuzz/regressions"] {
        let Ok(entries) = std::fs::read_dir(root().join(folder).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs for {target}");
}

#[test]
fn http_json() {
    replay("http_json", quiver_codec::fuzzing::http_json);
}

#[test]
fn http_raw() {
    replay("http_raw", quiver_codec::fuzzing::http_raw);
}

#[test]
fn grpc_infer() {
    replay("grpc_infer", quiver_codec::fuzzing::grpc_infer);
}

#[test]
fn config_pbtxt() {
    replay("config_pbtxt", quiver_codec::fuzzing::config_pbtxt);
}

//! Fuzz target: `quiver_server::fuzzing::http_json`.
fn main() {
    afl::fuzz!(|data: &[u8]| quiver_server::fuzzing::http_json(data));
}

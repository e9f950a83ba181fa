//! Fuzz target: `quiver_server::fuzzing::http_raw`.
fn main() {
    afl::fuzz!(|data: &[u8]| quiver_server::fuzzing::http_raw(data));
}

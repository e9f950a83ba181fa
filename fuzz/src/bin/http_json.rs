//! Fuzz target: `quiver_codec::fuzzing::http_json`.
fn main() {
    afl::fuzz!(|data: &[u8]| quiver_codec::fuzzing::http_json(data));
}

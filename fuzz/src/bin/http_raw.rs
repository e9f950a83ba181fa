//! Fuzz target: `quiver_codec::fuzzing::http_raw`.
fn main() {
    afl::fuzz!(|data: &[u8]| quiver_codec::fuzzing::http_raw(data));
}

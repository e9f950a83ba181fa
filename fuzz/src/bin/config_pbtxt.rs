//! Fuzz target: `quiver_codec::fuzzing::config_pbtxt`.
fn main() {
    afl::fuzz!(|data: &[u8]| quiver_codec::fuzzing::config_pbtxt(data));
}

//! Fuzz target: `quiver_server::fuzzing::config_pbtxt`.
fn main() {
    afl::fuzz!(|data: &[u8]| quiver_server::fuzzing::config_pbtxt(data));
}

//! Fuzz target: `quiver_codec::fuzzing::grpc_infer`.
fn main() {
    afl::fuzz!(|data: &[u8]| quiver_codec::fuzzing::grpc_infer(data));
}

//! Fuzz target: `quiver_server::fuzzing::grpc_infer`.
fn main() {
    afl::fuzz!(|data: &[u8]| quiver_server::fuzzing::grpc_infer(data));
}

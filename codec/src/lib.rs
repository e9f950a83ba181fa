//! The wire encodings of the Open Inference Protocol <-> the engine's
//! requests and answers, as pure functions with no I/O: the binary tensor
//! data extension and its raw form (HTTP), gRPC's `ModelInferRequest` and
//! `ModelInferResponse`, Triton's load parameters. The V2 JSON codec is the
//! engine's (`quiver_engine::codec::json`), because the validation gate reads
//! its golden cases with it. No HTTP or gRPC transport types: the fuzz
//! targets build on this crate without the server (`fuzzing`).
pub mod binary;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
#[cfg(test)]
mod proptests;
pub mod repository;

pub use quiver_engine::codec::json;

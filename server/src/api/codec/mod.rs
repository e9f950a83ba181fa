//! Wire encodings <-> engine requests and responses. Pure functions: no I/O.
//! The V2 JSON codec is the engine's (`quiver_engine::codec::json`): the
//! validation gate reads its golden cases with it.
pub mod binary;
pub mod grpc;
pub use quiver_engine::codec::json;
#[cfg(test)]
mod proptests;
pub mod repository;

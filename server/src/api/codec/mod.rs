//! Wire encodings <-> engine requests and responses. Pure functions: no I/O.
pub mod binary;
mod elements;
pub mod grpc;
pub mod json;
#[cfg(test)]
mod proptests;
pub mod repository;

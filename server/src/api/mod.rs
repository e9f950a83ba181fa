//! The protocol front ends. Everything protocol-specific lives under here.
pub mod codec;
pub mod grpc;
pub mod http;

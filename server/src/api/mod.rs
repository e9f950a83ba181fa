//! The protocol front ends. Everything protocol-specific lives under here.
pub mod grpc;
pub mod http;

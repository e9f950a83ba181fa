//! The gRPC front end (tonic): `inference.GRPCInferenceService`, the standard
//! `grpc.health.v1.Health` (Kubernetes gRPC probes) and server reflection.
pub mod guard;
mod service;

pub use service::InferenceService;

use crate::error::Codes as _;

/// An engine error as a gRPC status: the code from the one table
/// (`crate::error`), the message as is.
pub fn status(e: crate::error::Error) -> tonic::Status {
    tonic::Status::new(e.kind.grpc_code(), e.message)
}

//! The gRPC front end (tonic): `inference.GRPCInferenceService`, the standard
//! `grpc.health.v1.Health` (Kubernetes gRPC probes) and server reflection.
pub mod guard;
mod service;

pub use service::InferenceService;

impl From<crate::error::Error> for tonic::Status {
    fn from(e: crate::error::Error) -> Self {
        tonic::Status::new(e.kind.grpc_code(), e.message)
    }
}

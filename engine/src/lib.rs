//! Everything between a decoded request and a runtime: the repository, the
//! live registry, routing and traffic, validation, admission and the
//! instance queues. No HTTP, gRPC or command-line types: the compiler keeps
//! it so (this crate does not depend on axum, hyper, tonic or clap).
pub mod admission;
pub mod batcher;
pub mod cache;
pub mod classify;
pub mod codec;
pub mod compare;
pub mod engine;
pub mod ensemble;
pub mod error;
pub mod gate;
pub mod infer;
pub mod lifecycle;
pub mod live;
pub mod load;
pub mod model;
pub mod provenance;
pub mod repository;
pub mod request;
pub mod rollout;
pub mod routing;
pub mod stats;
pub mod tap;
pub mod telemetry;
pub mod traffic;
pub mod validate;
pub mod warmup;

/// Name and version quiver reports in server metadata.
pub const SERVER_NAME: &str = "quiver";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Protocol extensions quiver implements, as server metadata lists them.
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "model_configuration",
    "statistics",
    "schedule_policy",
    "model_repository",
    "model_repository(unload_dependents)",
    "logging",
    "trace",
    "system_shared_memory",
];

pub use engine::{Engine, Fetch, IndexEntry, ModelMetadata, TensorMetadata};

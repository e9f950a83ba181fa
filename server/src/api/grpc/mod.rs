//! The gRPC front end (tonic): `inference.GRPCInferenceService`, the standard
//! `grpc.health.v1.Health` (Kubernetes gRPC probes) and server reflection.
pub mod guard;
mod service;

pub use service::InferenceService;

use crate::auth::Scope;

/// The scope a token needs for each method of `GRPCInferenceService`
/// (`crate::auth`). A method the service gains must be added here.
const INFERENCE_METHODS: &[(&str, Scope)] = &[
    ("ServerLive", Scope::Data),
    ("ServerReady", Scope::Data),
    ("ModelReady", Scope::Data),
    ("ServerMetadata", Scope::Data),
    ("ModelMetadata", Scope::Data),
    ("ModelInfer", Scope::Data),
    ("ModelStreamInfer", Scope::Data),
    ("ModelConfig", Scope::Data),
    ("ModelStatistics", Scope::Data),
    ("RepositoryIndex", Scope::Data),
    ("RepositoryModelLoad", Scope::Control),
    ("RepositoryModelUnload", Scope::Control),
    ("LogSettings", Scope::Control),
    ("TraceSetting", Scope::Control),
    // Registering memory is control, as Triton's restricted "shared-memory"
    // API group has it; the status lists keys, so it is control too.
    ("SystemSharedMemoryStatus", Scope::Control),
    ("SystemSharedMemoryRegister", Scope::Control),
    ("SystemSharedMemoryUnregister", Scope::Control),
    ("CudaSharedMemoryStatus", Scope::Control),
    ("CudaSharedMemoryRegister", Scope::Control),
    ("CudaSharedMemoryUnregister", Scope::Control),
];

/// The scope of a call, from its path (`/package.Service/Method`): the
/// standard health service is open (unless `--auth-health`), reflection and
/// anything unknown need a data token.
pub fn scope(path: &str) -> Scope {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some(("grpc.health.v1.Health", _)) => Scope::Open,
        Some(("inference.GRPCInferenceService", method)) => INFERENCE_METHODS
            .iter()
            .find(|(m, _)| *m == method)
            .map_or(Scope::Data, |(_, scope)| *scope),
        _ => Scope::Data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_scopes() {
        assert_eq!(
            scope("/inference.GRPCInferenceService/RepositoryModelUnload"),
            Scope::Control
        );
        assert_eq!(scope("/inference.GRPCInferenceService/ModelInfer"), Scope::Data);
        assert_eq!(scope("/grpc.health.v1.Health/Check"), Scope::Open);
        assert_eq!(
            scope("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Scope::Data
        );
    }

    #[test]
    fn every_method_of_the_service_has_a_scope() {
        let pool = quiver_proto::descriptor_pool();
        let service = pool
            .get_service_by_name("inference.GRPCInferenceService")
            .expect("the service is in the descriptor set");
        let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
        let listed: Vec<&str> = INFERENCE_METHODS.iter().map(|(m, _)| *m).collect();
        assert_eq!(methods, listed);
    }
}

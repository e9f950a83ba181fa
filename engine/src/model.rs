//! A loaded, servable model version.
use std::sync::Arc;

use quiver_proto::inference::ModelConfig;

use super::batcher::Scheduler;
use super::provenance::Provenance;
use super::repository::model_config::ModelSpec;
use super::stats::VersionStats;

pub struct ModelVersion {
    pub version: u64,
    /// Content hash of the config and the version's files it was loaded
    /// from: a reload keeps this version when the hash has not changed.
    pub fingerprint: u64,
    /// The completed configuration, as the config endpoints report it.
    pub config: Arc<ModelConfig>,
    pub spec: ModelSpec,
    pub stats: Arc<VersionStats>,
    pub scheduler: Scheduler,
    /// Where it came from (URI, registry version, run id, ETags, digest)
    /// and what the validation gate found.
    pub provenance: Provenance,
}

impl ModelVersion {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

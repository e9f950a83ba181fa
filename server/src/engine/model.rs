//! A loaded, servable model version.
use std::sync::Arc;

use quiver_proto::inference::ModelConfig;

use super::instance::Instances;
use super::repository::model_config::ModelSpec;

pub struct ModelVersion {
    pub version: u64,
    /// The completed configuration, as the config endpoints report it.
    pub config: Arc<ModelConfig>,
    pub spec: ModelSpec,
    pub instances: Instances,
}

impl ModelVersion {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

//! The live models: an `ArcSwap` snapshot of name -> versions. Resolving a
//! request is one atomic load plus a map lookup, and the `Arc` it returns keeps
//! the version alive until the request is answered even if the snapshot is
//! replaced meanwhile.
use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::model::ModelVersion;
use crate::error::{Error, Result};

/// The state of one version, as the repository index reports it.
#[derive(Clone)]
pub enum VersionSlot {
    Ready(Arc<ModelVersion>),
    Unavailable(String),
}

/// One model folder of the repository.
#[derive(Clone, Default)]
pub struct ModelEntry {
    pub name: String,
    pub versions: BTreeMap<u64, VersionSlot>,
    /// Why the model as a whole could not load (bad config, no versions).
    pub error: Option<String>,
}

impl ModelEntry {
    /// The ready versions, lowest first.
    pub fn ready(&self) -> impl DoubleEndedIterator<Item = &Arc<ModelVersion>> {
        self.versions.values().filter_map(|s| match s {
            VersionSlot::Ready(v) => Some(v),
            VersionSlot::Unavailable(_) => None,
        })
    }

    /// The highest ready version.
    pub fn latest_ready(&self) -> Option<&Arc<ModelVersion>> {
        self.ready().next_back()
    }
}

#[derive(Default)]
pub struct Registry {
    models: ArcSwap<BTreeMap<String, Arc<ModelEntry>>>,
}

impl Registry {
    pub fn replace_all(&self, entries: impl IntoIterator<Item = ModelEntry>) {
        let map = entries.into_iter().map(|e| (e.name.clone(), Arc::new(e))).collect();
        self.models.store(Arc::new(map));
    }

    /// Adds or replaces one model; readers see the old or the new map, never a mix.
    pub fn insert(&self, entry: ModelEntry) {
        self.models.rcu(|current| {
            let mut map = BTreeMap::clone(current);
            map.insert(entry.name.clone(), Arc::new(entry.clone()));
            map
        });
    }

    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<ModelEntry>>> {
        self.models.load_full()
    }

    pub fn entry(&self, name: &str) -> Result<Arc<ModelEntry>> {
        self.models
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("unknown model '{name}'")))
    }

    /// The version that serves `name` at `version` (`None` or "" = highest ready).
    pub fn resolve(&self, name: &str, version: Option<&str>) -> Result<Arc<ModelVersion>> {
        let entry = self.entry(name)?;
        match version.filter(|v| !v.is_empty()) {
            None => entry.latest_ready().cloned().ok_or_else(|| {
                let why = entry
                    .error
                    .clone()
                    .or_else(|| {
                        entry.versions.values().rev().find_map(|s| match s {
                            VersionSlot::Unavailable(r) => Some(r.clone()),
                            VersionSlot::Ready(_) => None,
                        })
                    })
                    .unwrap_or_else(|| "no version loaded".into());
                Error::unavailable(format!("model '{name}' has no ready version: {why}"))
            }),
            Some(v) => {
                let number = v
                    .parse::<u64>()
                    .map_err(|_| Error::not_found(format!("unknown version '{v}' of model '{name}'")))?;
                match entry.versions.get(&number) {
                    Some(VersionSlot::Ready(m)) => Ok(Arc::clone(m)),
                    Some(VersionSlot::Unavailable(why)) => Err(Error::unavailable(format!(
                        "model '{name}' version {number} is not ready: {why}"
                    ))),
                    None => Err(Error::not_found(format!("unknown version '{v}' of model '{name}'"))),
                }
            }
        }
    }
}

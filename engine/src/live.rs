//! The live models: an `ArcSwap` snapshot of name -> versions. Resolving a
//! request is one atomic load plus a map lookup, and the `Arc` it returns keeps
//! the version alive until the request is answered even if the snapshot is
//! replaced meanwhile.
//!
//! Only the lifecycle (`lifecycle.rs`) writes here, one model at a time under
//! that model's lock, and every write is one atomic swap of the whole map: a
//! reader sees the state before a swap or after it, never half of it.
use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::model::ModelVersion;
use crate::error::{Error, Result};

/// The state of one version, as the repository index reports it.
#[derive(Clone)]
pub enum VersionSlot {
    /// Being loaded and warmed up for the first time; not routable yet.
    Loading,
    Ready(Arc<ModelVersion>),
    /// Taken out of routing; requests it already accepted are finishing.
    Unloading,
    Unavailable(String),
}

impl VersionSlot {
    /// Triton's name for the state.
    pub fn state(&self) -> &'static str {
        match self {
            VersionSlot::Loading => "LOADING",
            VersionSlot::Ready(_) => "READY",
            VersionSlot::Unloading => "UNLOADING",
            VersionSlot::Unavailable(_) => "UNAVAILABLE",
        }
    }
}

/// One model folder of the repository.
#[derive(Clone, Default)]
pub struct ModelEntry {
    pub name: String,
    pub versions: BTreeMap<u64, VersionSlot>,
    /// Why the model as a whole could not load (bad config, no versions).
    pub error: Option<String>,
    /// Why the last load failed while older versions kept serving: shown as
    /// the reason of the model's READY rows until a load succeeds.
    pub last_load_error: Option<String>,
    /// Unloaded on request (or its folder removed in poll mode): strict
    /// readiness does not wait for it.
    pub unloaded: bool,
    /// Why the model's source (bucket, registry) cannot be read right now:
    /// what serves keeps serving, and the index says so.
    pub source_error: Option<String>,
}

impl ModelEntry {
    pub fn new(name: &str) -> ModelEntry {
        ModelEntry {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// The ready versions, lowest first.
    pub fn ready(&self) -> impl DoubleEndedIterator<Item = &Arc<ModelVersion>> {
        self.versions.values().filter_map(|s| match s {
            VersionSlot::Ready(v) => Some(v),
            _ => None,
        })
    }

    /// The highest ready version.
    pub fn latest_ready(&self) -> Option<&Arc<ModelVersion>> {
        self.ready().next_back()
    }

    /// The version that serves `version` (`None` or "" = highest ready).
    pub fn resolve(&self, version: Option<&str>) -> Result<Arc<ModelVersion>> {
        let name = &self.name;
        let Some(v) = version.filter(|v| !v.is_empty()) else {
            return self.latest_ready().cloned().ok_or_else(|| {
                let why = self
                    .error
                    .clone()
                    .or_else(|| {
                        self.versions.values().rev().find_map(|s| match s {
                            VersionSlot::Unavailable(r) => Some(r.clone()),
                            VersionSlot::Loading => Some("loading".into()),
                            VersionSlot::Unloading => Some("unloading".into()),
                            VersionSlot::Ready(_) => None,
                        })
                    })
                    .unwrap_or_else(|| "no version loaded".into());
                Error::unavailable(format!("model '{name}' has no ready version: {why}"))
            });
        };
        let number = v
            .parse::<u64>()
            .map_err(|_| Error::not_found(format!("unknown version '{v}' of model '{name}'")))?;
        match self.versions.get(&number) {
            Some(VersionSlot::Ready(m)) => Ok(Arc::clone(m)),
            Some(VersionSlot::Unavailable(why)) => Err(Error::unavailable(format!(
                "model '{name}' version {number} is not ready: {why}"
            ))),
            Some(slot) => Err(Error::unavailable(format!(
                "model '{name}' version {number} is {}",
                slot.state().to_ascii_lowercase()
            ))),
            None => Err(Error::not_found(format!("unknown version '{v}' of model '{name}'"))),
        }
    }
}

#[derive(Default)]
pub struct LiveModels {
    models: ArcSwap<BTreeMap<String, Arc<ModelEntry>>>,
}

impl LiveModels {
    /// Adds or replaces one model; readers see the old or the new map, never a mix.
    pub fn insert(&self, entry: ModelEntry) {
        let entry = Arc::new(entry);
        self.models.rcu(|current| {
            let mut map = BTreeMap::clone(current);
            map.insert(entry.name.clone(), Arc::clone(&entry));
            map
        });
    }

    /// Rewrites one model's entry (a new one when absent) in one atomic swap.
    /// `change` may run more than once if another model is written meanwhile.
    pub fn update(&self, name: &str, change: impl Fn(&mut ModelEntry)) {
        self.models.rcu(|current| {
            let mut entry = current
                .get(name)
                .map_or_else(|| ModelEntry::new(name), |e| ModelEntry::clone(e));
            change(&mut entry);
            let mut map = BTreeMap::clone(current);
            map.insert(name.to_owned(), Arc::new(entry));
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
        self.entry(name)?.resolve(version)
    }
}

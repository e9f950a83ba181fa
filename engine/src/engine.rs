//! The engine: the registry of live versions, traffic policies, load
//! options and what watches requests, and the read-only questions the front
//! ends ask (readiness, metadata, configuration, statistics, the index).
//! Changing what serves is `lifecycle.rs`, running a request `infer.rs`,
//! traffic policies `routing.rs`.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use quiver_proto::inference::ModelConfig;
use quiver_runtimes::DataType;

use crate::error::Result;
use crate::live::{LiveModels, VersionSlot};
use crate::load::LoadOptions;
use crate::model::ModelVersion;

/// One lock per model name: loads and unloads of one model run one at a time.
pub(crate) type ModelLocks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

pub struct TensorMetadata {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// One row of the repository index.
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub state: &'static str,
    pub reason: String,
    /// Where the version came from; empty for rows without a loaded version.
    pub provenance: crate::provenance::Provenance,
}

/// A source that keeps the repository folder as a copy of something else
/// (an object store): before the repository API loads a model, it brings
/// that model's files up to date. The engine never names the source; the
/// source reports trouble through [`Engine::source_failed`].
pub trait Fetch: Send + Sync {
    /// `Err`: the model's files could not be brought; the load fails with
    /// that, and what was loaded before keeps serving.
    fn fetch<'a>(
        &'a self,
        engine: &'a Engine,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;
}

pub struct Engine {
    pub(crate) live: Arc<LiveModels>,
    pub(crate) ready: AtomicBool,
    pub(crate) repository: PathBuf,
    pub(crate) options: LoadOptions,
    pub(crate) model_locks: ModelLocks,
    /// Loads running at once, across models (`--model-load-threads`).
    pub(crate) load_slots: Arc<tokio::sync::Semaphore>,
    /// Models served from a folder of their own rather than the repository
    /// (followed in a model registry): name -> folder.
    pub(crate) external: std::collections::BTreeMap<String, PathBuf>,
    /// What brings a model's files into the repository folder before the
    /// repository API loads it (the object-store mirror), when anything must.
    pub(crate) fetch: Option<Arc<dyn Fetch>>,
    /// Traffic policies by served model name.
    pub(crate) traffic: crate::traffic::Policies,
    /// Scans (or mirror syncs) poll mode has finished.
    pub(crate) polls: std::sync::atomic::AtomicU64,
    /// Server-wide taps: they see every request (`tap.rs`).
    pub(crate) taps: crate::tap::Taps,
    /// What makes a version's own taps when it loads.
    pub(crate) tap_factories: Vec<Arc<dyn crate::tap::TapFactory>>,
    /// The response cache (`--cache-config`), for the models whose config
    /// enables it.
    pub(crate) cache: Option<Arc<dyn crate::cache::ResponseCache>>,
}

impl Engine {
    pub fn new(repository: PathBuf, options: LoadOptions) -> Engine {
        Engine {
            live: Arc::default(),
            ready: AtomicBool::new(false),
            repository,
            load_slots: Arc::new(tokio::sync::Semaphore::new(options.parallel_loads.max(1))),
            options,
            model_locks: Default::default(),
            external: Default::default(),
            fetch: None,
            traffic: Default::default(),
            polls: Default::default(),
            taps: Default::default(),
            tap_factories: Vec::new(),
            cache: None,
        }
    }

    /// Keeps the answers of the models whose config enables
    /// `response_cache` in `cache`.
    pub fn with_cache(mut self, cache: Arc<dyn crate::cache::ResponseCache>) -> Engine {
        self.cache = Some(cache);
        self
    }

    /// Whether the server has a response cache.
    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// Adds a tap that sees every request of every model.
    pub fn with_tap(mut self, tap: Arc<dyn crate::tap::Tap>) -> Engine {
        let mut all: Vec<_> = self.taps.iter().cloned().collect();
        all.push(tap);
        self.taps = crate::tap::Taps::new(all);
        self
    }

    /// Adds a maker of per-version taps, asked at each version's load.
    pub fn with_tap_factory(mut self, factory: Arc<dyn crate::tap::TapFactory>) -> Engine {
        self.tap_factories.push(factory);
        self
    }

    /// The taps the factories make for `version`, whose model folder is
    /// `model_dir`; the first factory's refusal, when one refuses.
    pub(crate) fn version_taps(
        &self,
        version: &ModelVersion,
        model_dir: Option<&std::path::Path>,
    ) -> Result<crate::tap::Taps, String> {
        let mut taps = Vec::new();
        for factory in &self.tap_factories {
            taps.extend(factory.tap(&version.view(), model_dir)?);
        }
        Ok(crate::tap::Taps::new(taps))
    }

    /// How many scans of the repository (or syncs of its mirror) poll mode
    /// has finished: what a wait for "the poller has looked again" reads.
    pub fn repository_polls(&self) -> u64 {
        self.polls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A source (`folder`, `object_store`) finished a look at the repository.
    pub fn repository_polled(&self, source: &'static str) {
        self.polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::telemetry::repository_polled(source);
    }

    /// Has `fetch` bring a model's files before each load the repository
    /// API asks for (`repository` given to [`Engine::new`] is then the
    /// source's local copy).
    pub fn with_fetch(mut self, fetch: Arc<dyn Fetch>) -> Engine {
        self.fetch = Some(fetch);
        self
    }

    /// Serves model `name` from `dir` instead of the repository.
    pub fn with_external_model(mut self, name: &str, dir: PathBuf) -> Engine {
        self.external.insert(name.to_owned(), dir);
        self
    }

    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// Whether `name` has a version serving.
    pub fn serves(&self, name: &str) -> bool {
        self.live.entry(name).is_ok_and(|e| e.latest_ready().is_some())
    }

    /// Whether `name` is served from a folder of its own (a registry model).
    pub fn is_external(&self, name: &str) -> bool {
        self.external.contains_key(name)
    }

    /// A source of `name` (`None`: every model of the mirrored repository)
    /// failed: logged, counted, and shown in the index until it recovers.
    pub fn source_failed(&self, name: Option<&str>, source: &'static str, why: &str) {
        tracing::warn!(
            model = name.unwrap_or("*"),
            source,
            reason = why,
            "model source unavailable; serving what is loaded"
        );
        crate::telemetry::source_error(source, name.unwrap_or(""));
        let names: Vec<String> = match name {
            Some(n) => vec![n.to_owned()],
            None => self
                .live
                .snapshot()
                .keys()
                .filter(|n| !self.is_external(n))
                .cloned()
                .collect(),
        };
        for n in names {
            self.live.update(&n, |e| e.source_error = Some(why.to_owned()));
        }
    }

    /// The source of `name` (`None`: of the mirrored repository's models)
    /// answers again.
    pub fn source_recovered(&self, name: Option<&str>) {
        for (n, e) in self.live.snapshot().iter() {
            let ours = match name {
                Some(only) => n == only,
                None => !self.is_external(n),
            };
            if ours && e.source_error.is_some() {
                tracing::info!(model = n, "model source reachable again");
                self.live.update(n, |e| e.source_error = None);
            }
        }
    }

    pub fn repository(&self) -> &std::path::Path {
        &self.repository
    }

    /// Serves `runtimes` (one per instance) as version 1 of model `name`, with
    /// `config` completed from the first runtime's inputs and outputs. For
    /// embedding quiver, benchmarks, and tests with mock runtimes.
    pub fn add_model(
        &self,
        name: &str,
        mut config: ModelConfig,
        runtimes: Vec<Box<dyn quiver_runtimes::Runtime>>,
    ) -> std::result::Result<(), String> {
        let first = runtimes.first().ok_or("no runtime given")?;
        let io = first.io().clone();
        let names = (config.platform.clone(), config.backend.clone());
        let mut spec = crate::repository::model_config::complete(
            &mut config,
            name,
            (&names.0, &names.1),
            &io,
            self.options.default_max_batch_size,
        )?;
        spec.utf8_strings = first.utf8_strings();
        let mut version = crate::load::start_version(name, 1, config, spec, runtimes, &self.options)?;
        // A model given as runtimes has no folder.
        version.taps = self.version_taps(&version, None)?;
        let mut entry = crate::live::ModelEntry::new(name);
        entry.versions.insert(1, VersionSlot::Ready(Arc::new(version)));
        self.live.insert(entry);
        Ok(())
    }

    /// Server readiness. With strict readiness, also every model that should
    /// serve (loaded or asked for, not unloaded) has a READY version.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && (!self.options.strict_readiness
                || self
                    .live
                    .snapshot()
                    .values()
                    .all(|e| e.unloaded || e.latest_ready().is_some()))
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn model_ready(&self, name: &str, version: Option<&str>) -> bool {
        self.ready_version(name, version).is_ok()
    }

    /// The version readiness asks about: one that resolves, and for an
    /// ensemble only while every step can run (else why not).
    pub fn ready_version(&self, name: &str, version: Option<&str>) -> Result<Arc<ModelVersion>> {
        let model = self.resolve(name, version)?;
        match model.composite.as_ref().and_then(|c| c.unavailable()) {
            None => Ok(model),
            Some(why) => Err(crate::error::Error::unavailable(format!(
                "model '{name}' is not ready: {why}"
            ))),
        }
    }

    /// The version that serves `name` at `version`: resolved once per
    /// request, and carried by it to the end.
    pub fn resolve(&self, name: &str, version: Option<&str>) -> Result<Arc<ModelVersion>> {
        self.live.resolve(name, self.version_number(name, version).as_deref())
    }

    pub fn model_metadata(&self, name: &str, version: Option<&str>) -> Result<ModelMetadata> {
        // One snapshot of the entry: the versions listed and the version
        // described come from the same moment, even during a swap.
        let entry = self.live.entry(name)?;
        let model = entry.resolve(self.version_number(name, version).as_deref())?;
        let spec = &model.spec;
        let meta = |io: &crate::repository::model_config::IoSpec| TensorMetadata {
            name: io.name.clone(),
            datatype: io.datatype,
            shape: spec.metadata_shape(io),
        };
        Ok(ModelMetadata {
            name: spec.name.clone(),
            versions: entry.ready().map(|m| m.version.to_string()).collect(),
            platform: spec.platform.clone(),
            inputs: spec.inputs.iter().map(meta).collect(),
            outputs: spec.outputs.iter().map(meta).collect(),
        })
    }

    pub fn model_config(&self, name: &str, version: Option<&str>) -> Result<Arc<ModelConfig>> {
        Ok(Arc::clone(&self.resolve(name, version)?.config))
    }

    /// Statistics of every ready version of every model, of one model (all
    /// its ready versions), or of one version.
    pub fn statistics(&self, name: Option<&str>, version: Option<&str>) -> Result<Vec<crate::stats::StatsSnapshot>> {
        let of = |m: &ModelVersion| m.stats.snapshot(m.name(), m.version);
        match (name, version.filter(|v| !v.is_empty())) {
            (Some(n), Some(_)) => Ok(vec![of(&*self.resolve(n, version)?)]),
            (Some(n), None) => Ok(self.live.entry(n)?.ready().map(|m| of(m)).collect()),
            (None, _) => Ok(self
                .live
                .snapshot()
                .values()
                .flat_map(|e| e.ready().map(|m| of(m)))
                .collect()),
        }
    }

    pub fn repository_index(&self) -> Vec<IndexEntry> {
        let mut rows = Vec::new();
        for entry in self.live.snapshot().values() {
            if let Some(e) = &entry.error {
                rows.push(IndexEntry {
                    name: entry.name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: e.clone(),
                    provenance: Default::default(),
                });
            } else if entry.versions.is_empty()
                && let Some(s) = &entry.source_error
            {
                rows.push(IndexEntry {
                    name: entry.name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: s.clone(),
                    provenance: Default::default(),
                });
            }
            for (v, slot) in &entry.versions {
                let reason = match slot {
                    VersionSlot::Unavailable(r) => r.clone(),
                    VersionSlot::Ready(_) => {
                        let notes: Vec<String> = [
                            entry
                                .last_load_error
                                .as_ref()
                                .map(|e| format!("the last load failed: {e}")),
                            entry
                                .source_error
                                .as_ref()
                                .map(|e| format!("the source is unavailable: {e}")),
                        ]
                        .into_iter()
                        .flatten()
                        .collect();
                        match notes.is_empty() {
                            true => String::new(),
                            false => format!("serving; {}", notes.join("; ")),
                        }
                    }
                    _ => String::new(),
                };
                // An ensemble whose steps cannot all run is not ready.
                let (state, reason) = match slot {
                    VersionSlot::Ready(m) => match m.composite.as_ref().and_then(|c| c.unavailable()) {
                        Some(why) => ("UNAVAILABLE", why),
                        None => (slot.state(), reason),
                    },
                    _ => (slot.state(), reason),
                };
                rows.push(IndexEntry {
                    name: entry.name.clone(),
                    version: v.to_string(),
                    state,
                    reason,
                    provenance: match slot {
                        VersionSlot::Ready(m) => m.provenance.clone(),
                        _ => Default::default(),
                    },
                });
            }
        }
        rows
    }
}

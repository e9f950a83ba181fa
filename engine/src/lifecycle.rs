//! Changing what is served while serving: load, reload (hot swap) and unload.
//!
//! A load is **load → warm up → validate → switch → drain**:
//! 1. The versions the policy selects are fingerprinted (config text + file
//!    bytes). A version already serving with the same fingerprint is kept.
//! 2. The others load and warm up on a blocking thread while the versions
//!    already serving keep serving. A version with nothing serving shows
//!    LOADING meanwhile; one being replaced stays READY.
//!    Each new version then passes the model's validation gate (`gate.rs`),
//!    if it ships one, on its own queue before any client can reach it; a
//!    version that fails is dropped like one that failed to load.
//! 3. One atomic registry swap publishes the result: new versions READY,
//!    replaced ones out, ones the policy no longer selects UNLOADING. Readiness
//!    never drops: the old version is routable until the very swap that makes
//!    the new one routable.
//! 4. Retired versions drain: a request already holding one finishes on it.
//!    When the last holder drops it, its queue closes and its instance threads
//!    exit on their own, freeing the model's memory off the I/O threads. A
//!    retiring thread watches that happen and then reports UNAVAILABLE
//!    ("unloaded").
//!
//! A load that fails leaves every serving version serving and says why (the
//! answer, the log, the index's reason, a failure counter). Loads of one model
//! are serialised by that model's lock; loads of different models run in
//! parallel up to `--model-load-threads`.
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_proto::inference::ModelConfig;

use super::ensemble;
use super::gate::Gate;
use super::live::{ModelEntry, VersionSlot};
use super::load;
use super::model::{BoxFuture, ModelVersion};
use super::provenance;
use super::repository::{self, ControlMode, fingerprint, model_config};
use super::tap::{Load, Step};
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::telemetry;

/// What one load will do, decided before anything loads.
struct Plan {
    dir: PathBuf,
    /// Files written from the request's `file:` parameters; removed when
    /// the load ends.
    inline: Option<InlineFiles>,
    config: ModelConfig,
    /// The versions the version policy selects.
    selected: Vec<u64>,
    /// The versions to load, with their content fingerprints.
    to_load: Vec<(u64, u64)>,
    /// Versions that failed, with why.
    failures: BTreeMap<u64, String>,
    /// The model's entry when the plan was made (its lock is held).
    current: Option<Arc<ModelEntry>>,
}

/// What a load takes besides the repository: Triton's load parameters.
#[derive(Clone, Debug, Default)]
pub struct LoadParameters {
    /// `parameters.config`: a JSON `ModelConfig` used instead of `config.pbtxt`.
    pub config: Option<String>,
    /// `file:<path>` parameters: the model's files (e.g. `1/model.onnx`),
    /// loaded instead of the repository's folder.
    pub files: Vec<(String, Bytes)>,
}

/// How long a retired version is watched for its last request before the
/// watcher lets go (the version still drains and frees itself after that).
const DRAIN_WATCH: Duration = Duration::from_secs(120);

impl Engine {
    pub fn control_mode(&self) -> ControlMode {
        self.options.control
    }

    fn control_allowed(&self) -> Result<()> {
        match self.options.control {
            ControlMode::Explicit => Ok(()),
            mode => Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "model load and unload are not allowed in model control mode '{}'; start quiver \
                     with --model-control-mode=explicit to use them",
                    format!("{mode:?}").to_ascii_lowercase()
                ),
            )),
        }
    }

    /// The repository API's load: explicit mode only.
    pub async fn api_load(self: &Arc<Self>, name: &str, request: LoadParameters) -> Result<()> {
        self.control_allowed()?;
        // A repository copied from elsewhere (an object store) brings this
        // model's files up to date first; the source decides what a failure
        // means (see `Fetch`).
        if let Some(fetch) = &self.fetch
            && request.files.is_empty()
            && !self.is_external(name)
        {
            check_name(name)?;
            fetch.fetch(self, name).await?;
        }
        self.load(name, request).await
    }

    /// The repository API's unload: explicit mode only. `dependents`
    /// (Triton's `unload_dependents`): an ensemble's step models are
    /// unloaded too, nested ensembles' as well, except those another
    /// ensemble that stays still runs.
    pub async fn api_unload(self: &Arc<Self>, name: &str, dependents: bool) -> Result<()> {
        self.control_allowed()?;
        let steps = match dependents {
            true => self.step_models_of(name),
            false => Vec::new(),
        };
        self.unload(name).await?;
        for step in steps {
            let still_used = self.live.snapshot().iter().any(|(other, e)| {
                *other != step
                    && e.latest_ready()
                        .and_then(|m| m.composite.as_ref())
                        .is_some_and(|c| c.models().contains(&step))
            });
            if !still_used && self.serves(&step) {
                self.unload(&step).await?;
            }
        }
        Ok(())
    }

    /// The models an ensemble runs, nested ensembles' included, the outer
    /// ones first.
    fn step_models_of(&self, name: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut todo = vec![name.to_owned()];
        while let Some(n) = todo.pop() {
            let Ok(m) = self.live.resolve(&n, None) else { continue };
            for step in m.composite.as_ref().map(|c| c.models()).unwrap_or_default() {
                if step != name && !found.contains(&step) {
                    found.push(step.clone());
                    todo.push(step);
                }
            }
        }
        found
    }

    fn model_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.model_locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(name.to_owned()).or_default())
    }

    /// Loads or reloads `name` and answers once every selected version is
    /// READY or has failed. Runs as a task of its own, so a client that hangs
    /// up does not cancel a load halfway.
    pub async fn load(self: &Arc<Self>, name: &str, request: LoadParameters) -> Result<()> {
        self.load_after(name, request, Vec::new()).await
    }

    /// A load within the dependency loads of the ensembles in `chain`.
    fn load_after<'a>(
        self: &'a Arc<Self>,
        name: &'a str,
        request: LoadParameters,
        chain: Vec<String>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_name(name)?;
            self.load_steps(name, &request, chain).await?;
            self.load_one(name, request).await
        })
    }

    /// Before an ensemble loads, the models its steps name, as Triton does:
    /// a load of one already under way is waited for; one not serving is
    /// loaded (its failure is then what the ensemble's own check reports).
    async fn load_steps(self: &Arc<Self>, name: &str, request: &LoadParameters, mut chain: Vec<String>) -> Result<()> {
        let (engine, model, json) = (Arc::clone(self), name.to_owned(), request.config.clone());
        let steps = tokio::task::spawn_blocking(move || {
            let config = match json {
                Some(json) => model_config::from_json(&json).ok(),
                None => repository::read_config(&engine.model_dir(&model)).ok().map(|(c, _)| c),
            };
            config.map(|c| ensemble::step_models(&c)).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        if steps.is_empty() {
            return Ok(());
        }
        chain.push(name.to_owned());
        for step in steps {
            if let Some(at) = chain.iter().position(|c| *c == step) {
                let cycle = format!("{} -> {step}", chain[at..].join(" -> "));
                return Err(self.model_failed(name, format!("ensembles that run each other: {cycle}")));
            }
            if self.serves(&step) {
                continue;
            }
            drop(self.model_lock(&step).lock().await);
            let exists = self.live.entry(&step).is_ok() || self.model_dir(&step).is_dir();
            if !self.serves(&step) && exists {
                // Its failure is recorded under its own name.
                let _ = self.load_after(&step, LoadParameters::default(), chain.clone()).await;
            }
        }
        Ok(())
    }

    /// Loads `name` itself, its dependencies settled.
    async fn load_one(self: &Arc<Self>, name: &str, request: LoadParameters) -> Result<()> {
        let engine = Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            let _model = engine.model_lock(&name).lock_owned().await;
            let _slot = Arc::clone(&engine.load_slots)
                .acquire_owned()
                .await
                .map_err(|_| Error::unavailable("the server is shutting down"))?;
            let (loader, model) = (Arc::clone(&engine), name.clone());
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || loader.load_versions(&model, &request))
                .await
                .map_err(|e| Error::internal(format!("a model load panicked: {e}")))?;
            telemetry::model_loaded(&name, result.is_ok(), started.elapsed());
            if let Err(e) = &result {
                tracing::error!(model = name, reason = %e.message, "model load failed");
            }
            result
        })
        .await
        .map_err(|e| Error::internal(format!("a model load panicked: {e}")))?
    }

    /// Takes every version of `name` out of routing and answers; the versions
    /// drain in the background.
    pub async fn unload(self: &Arc<Self>, name: &str) -> Result<()> {
        check_name(name)?;
        let _model = self.model_lock(name).lock_owned().await;
        let mut entry = ModelEntry::clone(&*self.live.entry(name)?);
        let mut retired = Vec::new();
        for slot in entry.versions.values_mut() {
            *slot = match std::mem::replace(slot, VersionSlot::Unloading) {
                VersionSlot::Ready(m) => {
                    retired.push(m);
                    VersionSlot::Unloading
                }
                VersionSlot::Unloading => VersionSlot::Unloading,
                _ => VersionSlot::Unavailable("unloaded".into()),
            };
        }
        entry.error = None;
        entry.last_load_error = None;
        entry.unloaded = true;
        self.live.insert(entry);
        tracing::info!(model = name, versions = retired.len(), "model unloaded");
        telemetry::model_unloaded(name);
        self.retire(name, retired);
        Ok(())
    }

    /// Start-up: loads `names` (every model folder when `None`) in parallel
    /// up to the load limit, and returns when each is READY or failed.
    pub async fn load_many(self: &Arc<Self>, names: Option<Vec<String>>) -> std::io::Result<()> {
        let names = match names {
            Some(n) => n,
            None => {
                let (root, single) = (self.repository.clone(), self.options.model_name.clone());
                tokio::task::spawn_blocking(move || repository::model_dirs(&root, single.as_deref()))
                    .await
                    .map_err(std::io::Error::other)??
                    .into_iter()
                    .map(|(name, _)| name)
                    .filter(|name| !self.is_external(name))
                    .collect()
            }
        };
        let mut loads = tokio::task::JoinSet::new();
        for name in names {
            let engine = Arc::clone(self);
            // Failures are recorded in the registry and logged.
            loads.spawn(async move { engine.load(&name, LoadParameters::default()).await });
        }
        while loads.join_next().await.is_some() {}
        Ok(())
    }

    /// The folder a model is loaded from.
    pub fn model_dir(&self, name: &str) -> PathBuf {
        if let Some(dir) = self.external.get(name) {
            return dir.clone();
        }
        if self.options.model_name.as_deref() == Some(name)
            && repository::version_dirs(&self.repository).is_ok_and(|v| !v.is_empty())
        {
            return self.repository.clone();
        }
        self.repository.join(name)
    }

    /// The blocking body of a load: plan what must load, load it (each
    /// version warmed up and through the validation gate), then switch in
    /// one atomic swap.
    /// The server-wide taps see its steps (`tap::Load`).
    fn load_versions(&self, name: &str, request: &LoadParameters) -> Result<()> {
        let mut steps = Vec::new();
        let result = self.plan_load(name, request).and_then(|mut plan| {
            let loaded = self.load_planned(name, &mut plan, &mut steps);
            let start = Instant::now();
            let switched = self.switch(name, plan, loaded);
            steps.push(Step {
                name: "switch",
                version: None,
                start,
                end: Instant::now(),
                error: switched.as_ref().err().map(|e| e.message.clone()),
            });
            switched
        });
        self.taps.load(&Load {
            model: name,
            steps: &steps,
            error: result.as_ref().err().map(|e| e.message.as_str()),
        });
        result
    }

    /// Reads the config and the version folders and decides what loads:
    /// every version the policy selects that is not already serving the
    /// same bytes. Those show LOADING unless a version serves in their place.
    fn plan_load(&self, name: &str, request: &LoadParameters) -> Result<Plan> {
        let inline = match request.files.is_empty() {
            true => None,
            false => Some(InlineFiles::write(name, &request.files).map_err(Error::invalid)?),
        };
        let dir = inline.as_ref().map_or_else(|| self.model_dir(name), |d| d.path.clone());
        let config = match &request.config {
            Some(json) => model_config::from_json(json).map(|c| (c, json.clone())),
            None if !dir.is_dir() => Err(format!("no model folder '{name}' in the repository")),
            None => repository::read_config(&dir),
        };
        let (config, config_text) = config.map_err(|e| self.model_failed(name, e))?;
        let available = repository::version_dirs(&dir)
            .map_err(|e| self.model_failed(name, format!("cannot read {}: {e}", dir.display())))?;
        let selected = model_config::select_versions(config.version_policy.as_ref(), available);
        if selected.is_empty() {
            return Err(self.model_failed(name, "no version folder matches the version policy".into()));
        }

        let current = self.live.entry(name).ok();
        let serving = |v: u64| match current.as_ref().and_then(|e| e.versions.get(&v)) {
            Some(VersionSlot::Ready(m)) => Some(m.fingerprint),
            _ => None,
        };
        let mut failures: BTreeMap<u64, String> = BTreeMap::new();
        let mut to_load = Vec::new();
        for &v in &selected {
            match fingerprint::content(config_text.as_bytes(), &dir.join(v.to_string())) {
                Ok(fp) if serving(v) == Some(fp) => {}
                Ok(fp) => to_load.push((v, fp)),
                Err(e) => {
                    failures.insert(v, format!("cannot read version {v}: {e}"));
                }
            }
        }
        self.live.update(name, |e| {
            e.error = None;
            e.unloaded = false;
            for (v, _) in &to_load {
                if !matches!(e.versions.get(v), Some(VersionSlot::Ready(_))) {
                    e.versions.insert(*v, VersionSlot::Loading);
                }
            }
        });
        Ok(Plan {
            dir,
            inline,
            config,
            selected,
            to_load,
            failures,
            current,
        })
    }

    /// Loads, warms up and validates the planned versions, none of them
    /// routable yet; a version that fails joins the plan's failures.
    fn load_planned(&self, name: &str, plan: &mut Plan, steps: &mut Vec<Step>) -> Vec<Arc<ModelVersion>> {
        // A blocking-pool thread of the runtime: the gate sends its runs
        // through the new version's queue and awaits them here.
        let runtime = tokio::runtime::Handle::current();
        let dir = &plan.dir;
        let mut loaded = Vec::new();
        for &(v, fp) in &plan.to_load {
            let version = match ensemble::is_ensemble(&plan.config) {
                true => ensemble::load_version(name, v, plan.config.clone(), fp, &self.live, &self.options),
                false => load::load_version(name, dir, v, plan.config.clone(), fp, &self.options, steps),
            };
            match version {
                Ok(mut m) => {
                    m.provenance = provenance::of_version(dir, v, fp);
                    let serving = plan.current.as_ref().and_then(|e| e.latest_ready()).cloned();
                    let start = Instant::now();
                    let gate = validate(&runtime, name, dir, &m, serving.as_deref());
                    if !matches!(gate, Ok(None)) {
                        steps.push(Step {
                            name: "gate",
                            version: Some(v),
                            start,
                            end: Instant::now(),
                            error: gate.as_ref().err().cloned(),
                        });
                    }
                    match gate {
                        Ok(Some(summary)) => {
                            m.provenance.insert("validation".into(), summary);
                        }
                        Ok(None) => {}
                        Err(why) => {
                            plan.failures.insert(v, why);
                            continue;
                        }
                    }
                    m.taps = match self.version_taps(&m, Some(dir)) {
                        Ok(taps) => taps,
                        Err(why) => {
                            tracing::error!(model = name, version = v, reason = %why, "model version failed to load");
                            plan.failures.insert(v, why);
                            continue;
                        }
                    };
                    if m.caches() && !self.has_cache() {
                        tracing::warn!(
                            model = name,
                            version = v,
                            "response_cache is enabled but the server has no cache (--cache-config): answers are computed"
                        );
                    }
                    publish_provenance(&mut m);
                    tracing::info!(
                        model = name,
                        version = v,
                        source = m.provenance.get("uri").map(String::as_str),
                        "model version ready"
                    );
                    loaded.push(Arc::new(m));
                }
                Err(e) => {
                    tracing::error!(model = name, version = v, reason = %e, "model version failed to load");
                    plan.failures.insert(v, e);
                }
            }
        }
        loaded
    }

    /// Publishes the loaded versions and retires what they replace (or the
    /// policy no longer selects) in one swap of the model's entry, then
    /// applies the folder's traffic policy.
    fn switch(&self, name: &str, plan: Plan, loaded: Vec<Arc<ModelVersion>>) -> Result<()> {
        // The switch: this model's lock is held, so the entry read here is
        // the one the swap replaces.
        let mut entry = self
            .live
            .entry(name)
            .map_or_else(|_| ModelEntry::new(name), |e| ModelEntry::clone(&e));
        let mut retired = Vec::new();
        let swapped_in = !loaded.is_empty();
        let Plan {
            dir,
            inline,
            selected,
            failures,
            ..
        } = plan;
        for m in loaded {
            if let Some(VersionSlot::Ready(old)) = entry.versions.insert(m.version, VersionSlot::Ready(m)) {
                retired.push(old);
            }
        }
        for (v, why) in &failures {
            if !matches!(entry.versions.get(v), Some(VersionSlot::Ready(_))) {
                entry.versions.insert(*v, VersionSlot::Unavailable(why.clone()));
            }
        }
        let failed = (!failures.is_empty()).then(|| {
            failures
                .iter()
                .map(|(v, why)| format!("version {v}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        // Versions the policy no longer selects retire, unless part of this
        // load failed: then what served keeps serving until a load succeeds.
        let keep_serving = failed.is_some();
        entry.versions.retain(|v, slot| {
            if selected.contains(v) || (keep_serving && matches!(slot, VersionSlot::Ready(_))) {
                return true;
            }
            match std::mem::replace(slot, VersionSlot::Unloading) {
                VersionSlot::Ready(old) => {
                    retired.push(old);
                    true
                }
                VersionSlot::Unloading => true,
                _ => false,
            }
        });
        entry.last_load_error = failed.clone().filter(|_| entry.latest_ready().is_some());
        self.live.insert(entry);
        // A swap: something new went live and something old left routing.
        if swapped_in && !retired.is_empty() {
            telemetry::model_swapped(name);
        }
        self.retire(name, retired);
        // The folder's traffic policy follows its files like the config does.
        let policy = match &inline {
            None => self.apply_policy_file(name, &dir).err(),
            Some(_) => None,
        };
        if let Some(why) = &policy {
            tracing::error!(
                model = name,
                reason = why,
                "traffic policy file refused; the policy in force stays"
            );
            self.live.update(name, |e| e.last_load_error = Some(why.clone()));
        }
        match failed.or(policy) {
            None => Ok(()),
            Some(why) => Err(Error::invalid(format!("failed to load '{name}': {why}"))),
        }
    }

    /// A failure found outside a load (a registry artifact that cannot be
    /// served): recorded like a failed load.
    pub fn record_load_failure(&self, name: &str, why: String) {
        telemetry::model_loaded(name, false, Duration::ZERO);
        let _ = self.model_failed(name, why);
    }

    /// A failure of the model as a whole (config, folder): the versions that
    /// serve keep serving; a model with none reports the reason.
    fn model_failed(&self, name: &str, why: String) -> Error {
        self.live.update(name, |e| {
            e.unloaded = false;
            if e.latest_ready().is_some() {
                e.last_load_error = Some(why.clone());
            } else {
                e.error = Some(why.clone());
                e.versions.retain(|_, s| matches!(s, VersionSlot::Unloading));
            }
        });
        let kind = if why.starts_with("no model folder") {
            ErrorKind::NotFound
        } else {
            ErrorKind::InvalidArgument
        };
        Error::new(kind, format!("failed to load '{name}': {why}"))
    }

    /// Drains retired versions off every request path: a thread watches for
    /// the last request to let go of each, then reports it UNAVAILABLE.
    fn retire(&self, name: &str, retired: Vec<Arc<ModelVersion>>) {
        if retired.is_empty() {
            return;
        }
        let registry = Arc::clone(&self.live);
        let lock = self.model_lock(name);
        let name = name.to_owned();
        let taps = self.taps.clone();
        let spawned = std::thread::Builder::new().name("q-retire".into()).spawn(move || {
            let start = Instant::now();
            let deadline = start + DRAIN_WATCH;
            let mut pause = Duration::from_millis(1);
            let versions: Vec<u64> = retired.iter().map(|m| m.version).collect();
            while retired.iter().any(|m| Arc::strong_count(m) > 1) && Instant::now() < deadline {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            // Ours is the last reference unless the watch gave up: the queue
            // closes now and the instance threads exit once it is empty.
            drop(retired);
            // Under the model's lock: a load computing its switch meanwhile
            // would otherwise write UNLOADING back over this.
            let _model = lock.blocking_lock();
            registry.update(&name, |e| {
                for v in &versions {
                    if let Some(slot @ VersionSlot::Unloading) = e.versions.get_mut(v) {
                        *slot = VersionSlot::Unavailable("unloaded".into());
                    }
                }
            });
            tracing::info!(model = name, ?versions, "retired versions drained");
            let end = Instant::now();
            let steps: Vec<Step> = versions
                .iter()
                .map(|v| Step {
                    name: "drain",
                    version: Some(*v),
                    start,
                    end,
                    error: None,
                })
                .collect();
            taps.load(&Load {
                model: &name,
                steps: &steps,
                error: None,
            });
        });
        if let Err(e) = spawned {
            // Dropping the versions here is still correct, only unobserved.
            tracing::warn!(error = %e, "cannot start a thread to watch retired versions");
        }
    }
}

/// Runs the version's validation gate, if its model ships one. `Ok(None)`:
/// no gate; `Ok(Some)`: passed, with a summary; `Err`: why it failed
/// (already logged and counted).
fn validate(
    runtime: &tokio::runtime::Handle,
    name: &str,
    dir: &Path,
    new: &ModelVersion,
    serving: Option<&ModelVersion>,
) -> std::result::Result<Option<String>, String> {
    let version_dir = dir.join(new.version.to_string());
    let outcome = Gate::read(name, dir, new.version).and_then(|gate| match gate {
        None => Ok(None),
        Some(g) => g.check(runtime, new, serving, &version_dir).map(Some),
    });
    match outcome {
        Ok(None) => Ok(None),
        Ok(Some(summary)) => {
            telemetry::validation_passed(name);
            tracing::info!(
                model = name,
                version = new.version,
                result = summary,
                "validation passed"
            );
            Ok(Some(summary))
        }
        Err(f) => {
            telemetry::validation_failed(name, f.check);
            tracing::error!(
                model = name,
                version = new.version,
                check = f.check,
                reason = f.message,
                "validation failed; the version is not switched in"
            );
            Err(format!("validation failed ({}): {}", f.check, f.message))
        }
    }
}

/// Copies a version's provenance into its config's `parameters`
/// (`provenance.uri`, ...), where gRPC and REST config readers find it.
fn publish_provenance(m: &mut ModelVersion) {
    use quiver_proto::inference::ModelParameter;
    let config = Arc::make_mut(&mut m.config);
    for (k, v) in &m.provenance {
        config.parameters.insert(
            format!("provenance.{k}"),
            ModelParameter {
                string_value: v.clone(),
            },
        );
    }
}

/// A model name from a client must name a folder inside the repository.
fn check_name(name: &str) -> Result<()> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !name.starts_with('.') => Ok(()),
        _ => Err(Error::invalid(format!(
            "'{name}' is not a model name (one folder name of the repository)"
        ))),
    }
}

/// `file:` parameters written to a private folder for one load, removed
/// afterwards (ONNX Runtime has read the files by then).
struct InlineFiles {
    path: PathBuf,
}

impl InlineFiles {
    fn write(name: &str, files: &[(String, Bytes)]) -> std::result::Result<InlineFiles, String> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("quiver-load-{}-{n}-{name}", std::process::id()));
        let dir = InlineFiles { path };
        for (rel, bytes) in files {
            let safe = Path::new(rel).components().all(|c| matches!(c, Component::Normal(_)));
            if !safe || rel.is_empty() {
                return Err(format!(
                    "parameter 'file:{rel}' must be a relative path inside the model folder"
                ));
            }
            let to = dir.path.join(rel);
            let written = to
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::write(&to, bytes));
            written.map_err(|e| format!("cannot write parameter 'file:{rel}': {e}"))?;
        }
        Ok(dir)
    }
}

impl Drop for InlineFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

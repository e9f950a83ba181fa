//! One followed model: poll the reference, fetch a newly named version once,
//! lay it out as `<model>/<registry version>/`, and hand it to the engine.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::client::Client;
use super::mlmodel::model_file;
use super::reference::Follow;
use crate::sources::Backoff;
use crate::sources::secrets::display_url;
use quiver_engine::Engine;
use quiver_engine::lifecycle::LoadParameters;
use quiver_engine::provenance::{self, Provenance};
use quiver_engine::repository;

/// One followed model: where its artifacts and its served folder live.
pub struct Follower {
    follow: Follow,
    client: Arc<Client>,
    /// Downloaded artifacts, one folder per registry version (immutable).
    store: PathBuf,
    /// The served folder: `config.pbtxt` and the one version folder to serve.
    model_dir: PathBuf,
    /// A `config.pbtxt` in the local repository for this name, used when
    /// the artifact has none.
    local_config: PathBuf,
    /// The registry version serving (or last tried and failed: not retried
    /// until the reference moves).
    current: Option<u64>,
}

impl Follower {
    pub fn new(follow: Follow, client: Arc<Client>, cache: &Path, repository: &Path) -> Follower {
        let base = cache.join("mlflow").join(&follow.served);
        Follower {
            local_config: repository.join(&follow.served).join("config.pbtxt"),
            store: base.join("artifacts"),
            model_dir: base.join("model"),
            follow,
            client,
            current: None,
        }
    }

    /// The folder the engine loads this model from.
    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    pub fn served(&self) -> &str {
        &self.follow.served
    }

    /// Start-up: follow the registry once; if it cannot be reached, serve
    /// the version the cache holds from an earlier run, if any.
    pub async fn start(&mut self, engine: &Arc<Engine>) -> Result<(), String> {
        match self.step(engine).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let cached = repository::version_dirs(&self.model_dir).unwrap_or_default();
                if let Some(&v) = cached.iter().max() {
                    tracing::warn!(
                        model = self.follow.served,
                        version = v,
                        "registry unreachable at start-up; serving the cached version"
                    );
                    self.current = Some(v);
                    let _ = engine.load(&self.follow.served, LoadParameters::default()).await;
                }
                Err(e)
            }
        }
    }

    /// One poll: resolve; if another version is named, fetch and swap it in.
    /// `Err` only for registry trouble (a failed load is the engine's to
    /// report, and is not retried until the reference moves).
    pub async fn step(&mut self, engine: &Arc<Engine>) -> Result<(), String> {
        let name = self.follow.served.clone();
        let found = self.client.resolve(&self.follow.reference).await?;
        let version = found
            .version
            .parse::<u64>()
            .map_err(|_| format!("MLflow named version '{}', not a number", found.version))?;
        if found.status.eq_ignore_ascii_case("PENDING_REGISTRATION") {
            return Ok(()); // not downloadable yet; the next poll looks again
        }
        if self.current == Some(version) {
            return Ok(());
        }
        tracing::info!(
            model = name,
            reference = self.follow.reference.uri,
            version,
            "registry names a new version; fetching"
        );
        let artifact = self.store.join(version.to_string());
        if !artifact.is_dir() {
            let partial = self.store.join(format!(".partial-{version}"));
            let _ = tokio::fs::remove_dir_all(&partial).await;
            let downloaded = self.client.download(&found, &partial).await;
            if let Err(e) = downloaded {
                let _ = tokio::fs::remove_dir_all(&partial).await;
                return Err(e);
            }
            tokio::fs::rename(&partial, &artifact)
                .await
                .map_err(|e| format!("cannot keep the artifact in {}: {e}", artifact.display()))?;
        }
        let record = Provenance::from([
            ("uri".to_owned(), self.follow.reference.uri.clone()),
            ("registry".to_owned(), format!("mlflow {}", self.client.shown())),
            ("registered_model".to_owned(), found.name.clone()),
            ("registry_version".to_owned(), found.version.clone()),
            ("run_id".to_owned(), found.run_id.clone()),
            ("artifact_uri".to_owned(), display_url(&found.source)),
        ]);
        let (artifact_dir, model_dir, local_config) = (artifact, self.model_dir.clone(), self.local_config.clone());
        let prepared =
            tokio::task::spawn_blocking(move || materialize(&artifact_dir, &model_dir, version, &local_config, record))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
        // Tried once per move of the reference: a broken version is not
        // fetched and failed again every poll.
        self.current = Some(version);
        match prepared {
            // The engine logs, counts and shows a load's outcome.
            Ok(()) => drop(engine.load(&name, LoadParameters::default()).await),
            Err(e) => {
                let why = format!("registry version {version} cannot be served: {e}");
                tracing::error!(model = name, reason = why, "model load failed");
                engine.record_load_failure(&name, why);
            }
        }
        Ok(())
    }

    /// Polls until `stop`, backing off while the registry fails.
    pub async fn run(mut self, engine: Arc<Engine>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(every);
        loop {
            if !backoff.wait(&mut stop).await {
                return;
            }
            match self.step(&engine).await {
                Ok(()) => {
                    backoff.succeeded();
                    engine.source_recovered(Some(&self.follow.served));
                }
                Err(e) => {
                    backoff.failed();
                    engine.source_failed(Some(&self.follow.served), "mlflow", &e);
                }
            }
        }
    }
}

/// Lays out the served folder for `version`: its files (hard links into the
/// artifact cache), the config, the provenance; other versions' folders go.
fn materialize(
    artifact: &Path,
    model_dir: &Path,
    version: u64,
    local_config: &Path,
    record: Provenance,
) -> Result<(), String> {
    let model = model_file(artifact)?;
    let file = model.path;
    std::fs::create_dir_all(model_dir).map_err(|e| e.to_string())?;
    let target = model_dir.join(version.to_string());
    let staging = model_dir.join(format!(".staging-{version}"));
    let _ = std::fs::remove_dir_all(&staging);
    link_tree(artifact, &staging).map_err(|e| e.to_string())?;
    let config = [artifact.join("config.pbtxt"), local_config.to_path_buf()]
        .into_iter()
        .find(|p| p.is_file());
    let default_name = match &config {
        Some(p) => std::fs::read_to_string(p)
            .ok()
            .and_then(|t| repository::model_config::parse(&t).ok())
            .map(|c| c.default_model_filename)
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| model.backend.default_model_filename.into()),
        None => model.backend.default_model_filename.into(),
    };
    if file != default_name && !staging.join(&default_name).exists() {
        std::fs::hard_link(staging.join(&file), staging.join(&default_name))
            .or_else(|_| std::fs::copy(staging.join(&file), staging.join(&default_name)).map(|_| ()))
            .map_err(|e| format!("the artifact names model file '{file}', which cannot be read: {e}"))?;
    }
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&staging, &target).map_err(|e| e.to_string())?;
    match config {
        Some(p) => std::fs::copy(p, model_dir.join("config.pbtxt")).map(|_| ()),
        None => match std::fs::remove_file(model_dir.join("config.pbtxt")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
    .map_err(|e| e.to_string())?;
    // Only the named version stays: the default policy serves the highest
    // folder, and a rollback must serve the lower one.
    for v in repository::version_dirs(model_dir).map_err(|e| e.to_string())? {
        if v != version {
            let _ = std::fs::remove_dir_all(model_dir.join(v.to_string()));
        }
    }
    provenance::write(model_dir, &BTreeMap::from([(version.to_string(), record)])).map_err(|e| e.to_string())
}

/// Mirrors a folder tree with hard links (a copy where linking fails).
fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            link_tree(&src, &dst)?;
        } else if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

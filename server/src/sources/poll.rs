//! Poll mode: follows the repository's changes while serving (a folder, or
//! an object store through its mirror), and the mirror's part in loads the
//! repository API asks for.
//!
//! Every interval the poller takes each model folder's stat signature (paths,
//! sizes, mtimes). A folder is loaded only once its signature has held still
//! across two scans, so a model still being copied in is never loaded
//! half-written. The load itself compares content fingerprints per version
//! and swaps only what changed, so a `touch` costs a hash and nothing else.
//!
//! A failed load is not retried until the folder changes again, and each load
//! runs as a task of its own: one slow or broken model never wedges the
//! poller or delays the others. A folder that disappears is unloaded.
//!
//! A repository mirrored from an object store is followed through the
//! mirror instead: each poll syncs it, and the models whose objects changed
//! load at once (the mirror only moves a model's files into place once all
//! of them have arrived, so there is nothing to wait out). A store that
//! cannot be read leaves everything serving and is retried with back-off.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use quiver_engine::Engine;
use quiver_engine::error::{Error, Result};
use quiver_engine::lifecycle::LoadParameters;
use quiver_engine::repository::{self, fingerprint};

use super::Backoff;
use super::object::Mirror;

/// What the poller remembers of one model folder.
#[derive(Clone, Copy, Default)]
struct Seen {
    /// Signature at the last scan.
    last: Option<u64>,
    /// Signature the last load was started for.
    loaded: Option<u64>,
}

/// One scan: every model folder's stat signature (`None` if unreadable).
fn scan(root: PathBuf, single: Option<String>) -> Vec<(String, Option<u64>)> {
    match repository::model_dirs(&root, single.as_deref()) {
        Ok(dirs) => dirs
            .into_iter()
            .map(|(name, dir)| (name, fingerprint::stat_signature(&dir).ok()))
            .collect(),
        Err(e) => {
            tracing::warn!(repository = %root.display(), error = %e, "cannot scan the model repository");
            Vec::new()
        }
    }
}

/// What the repository folder holds before the start-up load reads it:
/// the poller's starting point. Taken before the load, so that a change
/// made while the server starts (or before the poller's first scan) is
/// seen as a change and loaded, never taken for what was loaded.
pub struct Baseline(Vec<(String, Option<u64>)>);

pub async fn baseline(engine: &Engine) -> Baseline {
    let (root, single) = (engine.repository().to_path_buf(), engine.options().model_name.clone());
    Baseline(
        tokio::task::spawn_blocking(move || scan(root, single))
            .await
            .unwrap_or_default(),
    )
}

/// Polls until `stop` turns true, from `baseline` (taken before the
/// start-up load).
pub async fn run(
    engine: Arc<Engine>,
    mirror: Option<Arc<Mirror>>,
    every: Duration,
    stop: watch::Receiver<bool>,
    baseline: Baseline,
) {
    match mirror {
        Some(mirror) => follow_mirror(engine, mirror, every, stop, false).await,
        None => follow_folder(engine, every, stop, baseline).await,
    }
}

/// Mode `none` with a store that could not be read at start-up: retries
/// until one sync succeeds, loads what changed, and stops.
pub async fn sync_once(engine: Arc<Engine>, mirror: Arc<Mirror>, every: Duration, stop: watch::Receiver<bool>) {
    follow_mirror(engine, mirror, every, stop, true).await
}

async fn follow_mirror(
    engine: Arc<Engine>,
    mirror: Arc<Mirror>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    once: bool,
) {
    let mut backoff = Backoff::new(every);
    loop {
        if !backoff.wait(&mut stop).await {
            return;
        }
        let report = match mirror.sync(None).await {
            Ok(r) => r,
            Err(e) => {
                backoff.failed();
                engine.source_failed(None, "object_store", &e);
                continue;
            }
        };
        backoff.succeeded();
        engine.source_recovered(None);
        for (name, why) in &report.failed {
            engine.source_failed(Some(name), "object_store", why);
        }
        for name in report.changed {
            let engine = Arc::clone(&engine);
            if engine.model_dir(&name).is_dir() {
                tracing::info!(model = name, "model changed in the store; loading");
                tokio::spawn(async move { engine.load(&name, LoadParameters::default()).await });
            } else if engine.serves(&name) {
                tracing::info!(model = name, "model removed from the store; unloading");
                tokio::spawn(async move { engine.unload(&name).await });
            }
        }
        engine.repository_polled("object_store");
        if once {
            return;
        }
    }
}

async fn follow_folder(engine: Arc<Engine>, every: Duration, mut stop: watch::Receiver<bool>, baseline: Baseline) {
    let root = engine.repository().to_path_buf();
    let single = engine.options().model_name.clone();
    let mut seen: HashMap<String, Seen> = baseline
        .0
        .into_iter()
        .filter_map(|(name, signature)| {
            let signature = signature?;
            Some((
                name,
                Seen {
                    last: Some(signature),
                    loaded: Some(signature),
                },
            ))
        })
        .collect();
    loop {
        let (root, single) = (root.clone(), single.clone());
        let Ok(folders) = tokio::task::spawn_blocking(move || scan(root, single)).await else {
            continue;
        };
        let present: HashSet<&String> = folders.iter().map(|(n, _)| n).collect();
        for (name, signature) in &folders {
            let Some(signature) = *signature else { continue };
            if engine.is_external(name) {
                continue; // followed in its registry, not here
            }
            let s = seen.entry(name.clone()).or_default();
            let still = s.last == Some(signature);
            s.last = Some(signature);
            if !still || s.loaded == Some(signature) {
                continue;
            }
            s.loaded = Some(signature);
            tracing::info!(model = name, "model folder changed; loading");
            let (engine, name) = (Arc::clone(&engine), name.clone());
            // The outcome is logged, counted and shown in the index by the load.
            tokio::spawn(async move { engine.load(&name, LoadParameters::default()).await });
        }
        let gone: Vec<String> = seen.keys().filter(|n| !present.contains(n)).cloned().collect();
        for name in gone {
            seen.remove(&name);
            if engine.serves(&name) {
                tracing::info!(model = name, "model folder removed; unloading");
                let engine = Arc::clone(&engine);
                tokio::spawn(async move { engine.unload(&name).await });
            }
        }
        engine.repository_polled("folder");
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Before the repository API loads a model of a mirrored repository, the
/// mirror brings that model's objects over. If the store cannot be read at
/// all, the mirror's copy loads (the store may be down; what it held last
/// still serves). If this model's files could not be brought over (a full
/// cache disk, an object that failed), the load fails with why: answering
/// "loaded" while the old files serve would hide it.
impl quiver_engine::Fetch for Mirror {
    fn fetch<'a>(
        &'a self,
        engine: &'a Engine,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            match self.sync(Some(name)).await {
                Ok(report) => match report.failed.iter().find(|(m, _)| m == name) {
                    Some((_, why)) => {
                        engine.source_failed(Some(name), "object_store", why);
                        Err(Error::unavailable(format!(
                            "model '{name}' could not be brought from the store into the cache: {why}; \
                             what was loaded before keeps serving"
                        )))
                    }
                    None => {
                        engine.source_recovered(Some(name));
                        Ok(())
                    }
                },
                Err(e) => {
                    engine.source_failed(Some(name), "object_store", &e);
                    Ok(())
                }
            }
        })
    }
}

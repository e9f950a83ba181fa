//! Start-up, before any listener: the engine over its sources, the start-up
//! load, and the tasks that follow the sources afterwards (poll mode, the
//! mirror, registry followers, rollouts).
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quiver_engine::Engine;
use quiver_engine::load::LoadOptions;
use quiver_engine::tap::{Tap, TapFactory};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{CacheConfig, Config, ControlMode};
use crate::sources;

/// What an embedding program or a test adds to the engine's request path
/// (`quiver_engine::tap`): taps that see every request, and makers of
/// per-version taps.
#[derive(Default)]
pub struct Observers {
    pub taps: Vec<Arc<dyn Tap>>,
    pub tap_factories: Vec<Arc<dyn TapFactory>>,
}

/// The engine with the start-up load done, and what follows its sources.
pub struct Loaded {
    pub engine: Arc<Engine>,
    mirror: Option<Arc<sources::object::Mirror>>,
    followers: Vec<sources::mlflow::Follower>,
    baseline: Option<sources::poll::Baseline>,
    /// The object store could not be read at start-up.
    unsynced: bool,
}

/// The engine with its sources attached, and the registry followers to start.
struct Sourced {
    engine: Engine,
    /// The object store the repository mirrors, when it is one.
    mirror: Option<Arc<sources::object::Mirror>>,
    followers: Vec<sources::mlflow::Follower>,
}

/// Builds the engine over the configured repository (a folder, or the
/// local mirror of an object store) and the registry models.
fn open(config: &Config, options: LoadOptions) -> anyhow::Result<Sourced> {
    let repository = config.model_repository.to_string_lossy().into_owned();
    let secrets = sources::secrets::Secrets::from_env(
        config
            .mlflow_tracking_token
            .iter()
            .chain(&config.mlflow_tracking_password)
            .cloned()
            .chain(
                config
                    .mlflow_tracking_uri
                    .iter()
                    .flat_map(|u| sources::secrets::url_credentials(u)),
            )
            .chain(sources::secrets::url_credentials(&repository)),
    );
    let (root, mirror) = if sources::is_url(&repository) {
        let root = config.cache_dir.join("repository");
        let mirror = sources::object::Mirror::new(&repository, config.s3_endpoint.as_deref(), root, secrets.clone())
            .map_err(anyhow::Error::msg)?;
        (mirror.root().to_path_buf(), Some(Arc::new(mirror)))
    } else {
        (PathBuf::from(&repository), None)
    };
    let mut engine = Engine::new(root.clone(), options);
    match config.cache().map_err(anyhow::Error::msg)? {
        None => {}
        Some(CacheConfig::Local { size }) => {
            tracing::info!(bytes = size, "response cache: local");
            engine = engine.with_cache(Arc::new(quiver_engine::cache::LocalCache::new(size)));
        }
        Some(CacheConfig::Redis(settings)) => {
            tracing::info!(host = settings.host, port = settings.port, "response cache: redis");
            engine = engine.with_cache(Arc::new(crate::redis_cache::RedisCache::new(settings)));
        }
    }
    if let Some(m) = &mirror {
        engine = engine.with_fetch(Arc::clone(m) as Arc<dyn quiver_engine::Fetch>);
    }
    let mut followers = Vec::new();
    if let Some(uri) = config
        .mlflow_tracking_uri
        .as_deref()
        .filter(|_| !config.registry_model.is_empty())
    {
        let client = Arc::new(
            sources::mlflow::Client::new(uri, mlflow_access(config), secrets.clone()).map_err(anyhow::Error::msg)?,
        );
        for flag in &config.registry_model {
            let follow = sources::mlflow::Follow::parse(flag).map_err(anyhow::Error::msg)?;
            let follower = sources::mlflow::Follower::new(follow, Arc::clone(&client), &config.cache_dir, &root);
            engine = engine.with_external_model(follower.served(), follower.model_dir().to_path_buf());
            followers.push(follower);
        }
    }
    Ok(Sourced {
        engine,
        mirror,
        followers,
    })
}

/// The MLflow credentials and artifact endpoint the config carries.
fn mlflow_access(config: &Config) -> sources::mlflow::client::Access {
    sources::mlflow::client::Access {
        token: config.mlflow_tracking_token.clone(),
        basic: config
            .mlflow_tracking_username
            .clone()
            .zip(config.mlflow_tracking_password.clone()),
        s3_endpoint: config.mlflow_s3_endpoint_url.clone(),
    }
}

/// What every load takes from the command line.
fn load_options(config: &Config) -> anyhow::Result<LoadOptions> {
    // Backends initialise when their first model loads: a missing ONNX
    // Runtime or LibTorch fails those models, not the server.
    let backends = Arc::new(config.backend_settings().map_err(anyhow::Error::msg)?);
    Ok(LoadOptions {
        default_max_batch_size: config.default_max_batch_size,
        intra_op_threads: config.intra_op_threads,
        queue_capacity: config.queue_capacity,
        delay_policy: config.queue_delay_policy,
        instance_scheduling: config.instance_scheduling,
        model_name: config.model_name.clone(),
        default_warmup: !config.no_default_warmup,
        control: config.model_control_mode,
        parallel_loads: config.model_load_threads,
        strict_readiness: config.strict_readiness(),
        backends,
    })
}

/// Builds the engine over the configured sources and loads what start-up
/// serves.
pub async fn load(config: &Config, observers: Observers) -> anyhow::Result<Loaded> {
    let sourced = open(config, load_options(config)?)?;
    let mut engine = sourced.engine;
    for tap in observers.taps {
        engine = engine.with_tap(tap);
    }
    for factory in observers.tap_factories {
        engine = engine.with_tap_factory(factory);
    }
    let engine = Arc::new(engine);
    // An object-store repository is mirrored before the first load: what
    // the store holds now is what start-up serves. If it cannot be read, the
    // mirror's copy from an earlier run serves and the sync is retried.
    let mut unsynced = None;
    let mut failed_models = Vec::new();
    if let Some(mirror) = &sourced.mirror {
        match mirror.sync(None).await {
            Ok(report) => failed_models = report.failed,
            Err(e) => unsynced = Some(e),
        }
    }
    let startup = match config.model_control_mode {
        ControlMode::Explicit if !config.load_model.iter().any(|m| m == "*") => Some(config.load_model.clone()),
        _ => None,
    };
    // Poll mode starts from what the folder holds before the load reads it.
    let baseline = match config.model_control_mode {
        ControlMode::Poll => Some(sources::poll::baseline(&engine).await),
        _ => None,
    };
    // Only registry models and no repository folder: nothing else to load.
    let repository_needed = sourced.followers.is_empty() || engine.repository().is_dir();
    if repository_needed {
        engine
            .load_many(startup)
            .await
            .with_context(|| format!("cannot read model repository {}", config.model_repository.display()))?;
    }
    if config.exit_on_error {
        let failed: Vec<String> = engine
            .repository_index()
            .into_iter()
            .filter(|row| row.state == "UNAVAILABLE" && !row.reason.is_empty())
            .map(|row| format!("{}: {}", row.name, row.reason))
            .collect();
        if !failed.is_empty() {
            anyhow::bail!(
                "--exit-on-error: {} model(s) failed to load: {}",
                failed.len(),
                failed.join("; ")
            );
        }
    }
    // Reported once the models exist, so the index shows it on their rows.
    if let Some(e) = &unsynced {
        engine.source_failed(None, "object_store", e);
    }
    for (name, why) in &failed_models {
        engine.source_failed(Some(name), "object_store", why);
    }
    let mut followers = sourced.followers;
    for follower in &mut followers {
        if let Err(e) = follower.start(&engine).await {
            engine.source_failed(Some(follower.served()), "mlflow", &e);
        }
    }
    Ok(Loaded {
        engine,
        mirror: sourced.mirror,
        followers,
        baseline,
        unsynced: unsynced.is_some(),
    })
}

/// Starts the tasks that follow the sources until `stopped` turns true.
pub fn follow(config: &Config, loaded: Loaded, stopped: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let engine = &loaded.engine;
    let every = Duration::from_secs(config.repository_poll_secs.max(1));
    if let Some(baseline) = loaded.baseline {
        tasks.push(tokio::spawn(sources::poll::run(
            Arc::clone(engine),
            loaded.mirror.clone(),
            every,
            stopped.clone(),
            baseline,
        )));
    } else if let Some(mirror) = loaded.mirror.clone().filter(|_| loaded.unsynced)
        && config.model_control_mode == ControlMode::None
    {
        tasks.push(tokio::spawn(sources::poll::sync_once(
            Arc::clone(engine),
            mirror,
            every,
            stopped.clone(),
        )));
    }
    tasks.push(tokio::spawn(quiver_engine::rollout::run(
        Arc::clone(engine),
        stopped.clone(),
    )));
    for follower in loaded.followers {
        tasks.push(tokio::spawn(follower.run(Arc::clone(engine), every, stopped.clone())));
    }

    tasks
}

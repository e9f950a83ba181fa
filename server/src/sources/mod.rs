//! Where models come from besides a local folder: an object store mirrored
//! into a local cache (`object.rs`) and an MLflow Model Registry followed by
//! alias, stage or version (`mlflow.rs`). Both end in a folder laid out like
//! a Triton repository, and in the engine's load → warm up → validate →
//! switch → drain; nothing here decides what serves.
pub mod mlflow;
pub mod object;
pub mod poll;
pub mod secrets;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use quiver_engine::Engine;
use quiver_engine::load::LoadOptions;

/// The engine with its sources attached, and the registry followers to start.
pub struct Sourced {
    pub engine: Engine,
    /// The object store the repository mirrors, when it is one.
    pub mirror: Option<Arc<object::Mirror>>,
    pub followers: Vec<mlflow::Follower>,
}

/// Builds the engine over the configured repository (a folder, or the
/// local mirror of an object store) and the registry models.
pub fn open(config: &Config, options: LoadOptions) -> anyhow::Result<Sourced> {
    let repository = config.model_repository.to_string_lossy().into_owned();
    let secrets = secrets::Secrets::from_env(
        config
            .mlflow_tracking_token
            .iter()
            .chain(&config.mlflow_tracking_password)
            .cloned()
            .chain(
                config
                    .mlflow_tracking_uri
                    .iter()
                    .flat_map(|u| secrets::url_credentials(u)),
            )
            .chain(secrets::url_credentials(&repository)),
    );
    let (root, mirror) = if is_url(&repository) {
        let root = config.cache_dir.join("repository");
        let mirror = object::Mirror::new(&repository, config.s3_endpoint.as_deref(), root, secrets.clone())
            .map_err(anyhow::Error::msg)?;
        (mirror.root().to_path_buf(), Some(Arc::new(mirror)))
    } else {
        (PathBuf::from(&repository), None)
    };
    let mut engine = Engine::new(root.clone(), options);
    if let Some(m) = &mirror {
        engine = engine.with_fetch(Arc::clone(m) as Arc<dyn quiver_engine::Fetch>);
    }
    let mut followers = Vec::new();
    if let Some(uri) = config
        .mlflow_tracking_uri
        .as_deref()
        .filter(|_| !config.registry_model.is_empty())
    {
        let client =
            Arc::new(mlflow::Client::new(uri, mlflow_access(config), secrets.clone()).map_err(anyhow::Error::msg)?);
        for flag in &config.registry_model {
            let follow = mlflow::Follow::parse(flag).map_err(anyhow::Error::msg)?;
            let follower = mlflow::Follower::new(follow, Arc::clone(&client), &config.cache_dir, &root);
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
fn mlflow_access(config: &Config) -> mlflow::client::Access {
    mlflow::client::Access {
        token: config.mlflow_tracking_token.clone(),
        basic: config
            .mlflow_tracking_username
            .clone()
            .zip(config.mlflow_tracking_password.clone()),
        s3_endpoint: config.mlflow_s3_endpoint_url.clone(),
    }
}

/// `true` for a repository given as a URL (`s3://`, `gs://`, `az://`,
/// `file://`, ...) rather than a local path.
pub fn is_url(repository: &str) -> bool {
    repository.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// Waits between attempts at a source that failed: the poll interval, doubled
/// after each consecutive failure up to 8 intervals or 5 minutes, whichever
/// is shorter, and back to the interval after a success.
#[derive(Debug)]
pub struct Backoff {
    every: Duration,
    failures: u32,
    /// When the last attempt started.
    started: tokio::time::Instant,
}

impl Backoff {
    pub fn new(every: Duration) -> Backoff {
        Backoff {
            every,
            failures: 0,
            started: tokio::time::Instant::now(),
        }
    }

    /// Waits for the next attempt, counted from the start of the last one
    /// (a change is seen within one interval however long the last sync or
    /// swap took); `false` when `stop` turned true first.
    pub async fn wait(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(self.started + self.next_wait()) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
        self.started = tokio::time::Instant::now();
        true
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// How long to wait before the next attempt.
    pub fn next_wait(&self) -> Duration {
        let factor = 1u32 << self.failures.min(3);
        let cap = (self.every * 8).min(Duration::from_secs(300)).max(self.every);
        (self.every * factor).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("s3://models/prod"));
        assert!(is_url("gs://b/p"));
        assert!(is_url("file:///srv/models"));
        assert!(!is_url("models"));
        assert!(!is_url("/srv/models"));
        assert!(!is_url("./odd://name"));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2));
        assert_eq!(b.next_wait(), Duration::from_secs(2));
        b.failed();
        assert_eq!(b.next_wait(), Duration::from_secs(4));
        for _ in 0..10 {
            b.failed();
        }
        assert_eq!(b.next_wait(), Duration::from_secs(16));
        b.succeeded();
        assert_eq!(b.next_wait(), Duration::from_secs(2));
        let mut slow = Backoff::new(Duration::from_secs(60));
        for _ in 0..5 {
            slow.failed();
        }
        assert_eq!(slow.next_wait(), Duration::from_secs(300));
    }
}

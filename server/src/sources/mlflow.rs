//! Following an MLflow Model Registry: `--registry-model fraud=models:/fraud-detection@champion`.
//!
//! Every poll interval the follower resolves the reference through MLflow's
//! REST API (an alias, a stage, `latest`, or a fixed version). When it names
//! another version than the one serving, that version's artifact is
//! downloaded once into the cache (through MLflow's artifact proxy, from the
//! object store behind it, or from a local path the server shares), laid
//! out as `<model>/<registry version>/`, and loaded through the engine's
//! lifecycle: warm up, validation gate, switch, drain. A rollback (the alias
//! moving back) is the same swap, served from the cache. A registry that
//! cannot be reached leaves what serves serving; the follower reports the
//! error and retries with back-off.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::secrets::{Secrets, display_url};
use super::{Backoff, object};
use crate::engine::Engine;
use crate::engine::lifecycle::LoadRequest;
use crate::engine::provenance::{self, Provenance};
use crate::engine::repository;
use crate::telemetry;

/// What a `models:/` URI points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Alias(String),
    Stage(String),
    Version(u64),
    /// `models:/name/latest`: the highest version in any stage.
    Latest,
}

/// A parsed `models:/<name>@<alias>`, `models:/<name>/<stage>` or
/// `models:/<name>/<version>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub selector: Selector,
    /// As the user wrote it, for logs and provenance.
    pub uri: String,
}

impl Reference {
    pub fn parse(uri: &str) -> Result<Reference, String> {
        let bad = |why: &str| {
            format!(
                "'{uri}' is not a registry reference ({why}); expected models:/<name>@<alias>, models:/<name>/<stage> or models:/<name>/<version>"
            )
        };
        let rest = uri
            .strip_prefix("models:/")
            .ok_or_else(|| bad("it must start with models:/"))?;
        let (name, selector) = if let Some((name, alias)) = rest.rsplit_once('@') {
            (name, Selector::Alias(alias.to_owned()))
        } else if let Some((name, last)) = rest.rsplit_once('/') {
            let selector = match last.parse::<u64>() {
                Ok(v) => Selector::Version(v),
                Err(_) if last.eq_ignore_ascii_case("latest") => Selector::Latest,
                Err(_) => Selector::Stage(last.to_owned()),
            };
            (name, selector)
        } else {
            return Err(bad("no alias, stage or version"));
        };
        if name.is_empty() || matches!(&selector, Selector::Alias(a) | Selector::Stage(a) if a.is_empty()) {
            return Err(bad("empty name, alias or stage"));
        }
        Ok(Reference {
            name: name.to_owned(),
            selector,
            uri: uri.to_owned(),
        })
    }
}

/// `--registry-model <served name>=<models:/ reference>`.
#[derive(Clone, Debug)]
pub struct Follow {
    pub served: String,
    pub reference: Reference,
}

impl Follow {
    pub fn parse(flag: &str) -> Result<Follow, String> {
        let (served, uri) = flag
            .split_once('=')
            .ok_or_else(|| format!("--registry-model '{flag}' must be <served name>=models:/<name>@<alias>"))?;
        let valid = !served.is_empty() && !served.starts_with('.') && !served.contains(['/', '\\']);
        if !valid {
            return Err(format!("--registry-model '{flag}': '{served}' is not a model name"));
        }
        Ok(Follow {
            served: served.to_owned(),
            reference: Reference::parse(uri)?,
        })
    }
}

/// One registered model version as MLflow describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub current_stage: String,
    #[serde(default)]
    pub status: String,
}

/// MLflow's REST API (`/api/2.0/mlflow/...`), with the tracking server's
/// credentials: `MLFLOW_TRACKING_TOKEN` (bearer), or
/// `MLFLOW_TRACKING_USERNAME`/`_PASSWORD` or a user and password in the URI
/// (basic).
pub struct Client {
    base: url::Url,
    shown: String,
    http: reqwest::Client,
    token: Option<String>,
    basic: Option<(String, String)>,
    /// For artifacts kept in an object store (`s3://`): MLflow's
    /// `MLFLOW_S3_ENDPOINT_URL`.
    s3_endpoint: Option<String>,
    secrets: Secrets,
}

impl Client {
    pub fn new(tracking_uri: &str, token: Option<String>, secrets: Secrets) -> Result<Client, String> {
        let shown = display_url(tracking_uri);
        let mut base =
            url::Url::parse(tracking_uri).map_err(|e| format!("--mlflow-tracking-uri '{shown}' is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "--mlflow-tracking-uri '{shown}' must be an http(s) URL of a tracking server"
            ));
        }
        let basic = match (base.username(), base.password()) {
            ("", None) => std::env::var("MLFLOW_TRACKING_USERNAME")
                .ok()
                .zip(std::env::var("MLFLOW_TRACKING_PASSWORD").ok()),
            (user, password) => Some((user.to_owned(), password.unwrap_or_default().to_owned())),
        };
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Client {
            base,
            shown: shown.trim_end_matches('/').to_owned(),
            http,
            token,
            basic,
            s3_endpoint: std::env::var("MLFLOW_S3_ENDPOINT_URL").ok(),
            secrets,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder, String> {
        let url = self
            .base
            .join(path)
            .map_err(|e| format!("bad MLflow path '{path}': {e}"))?;
        let mut r = self.http.request(method, url);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        } else if let Some((u, p)) = &self.basic {
            r = r.basic_auth(u, Some(p));
        }
        Ok(r)
    }

    /// Sends, and turns a failure into one line naming the call, never the
    /// credentials.
    async fn send(&self, what: &str, r: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        let response = r.send().await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!(
                "MLflow at {} unreachable ({what}): {}{cause}",
                self.shown,
                e.without_url()
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        #[derive(Deserialize, Default)]
        struct ApiError {
            #[serde(default)]
            error_code: String,
            #[serde(default)]
            message: String,
        }
        let body: ApiError = response.json().await.unwrap_or_default();
        Err(format!(
            "MLflow at {} answered {what} with {status}: {} {}",
            self.shown, body.error_code, body.message
        ))
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, String> {
        let r = self.request(reqwest::Method::GET, path)?.query(query);
        let response = self.send(what, r).await?;
        response.json().await.map_err(|e| {
            format!(
                "MLflow at {} sent an unreadable answer to {what}: {}",
                self.shown,
                e.without_url()
            )
        })
    }

    /// The version a reference names now.
    pub async fn resolve(&self, reference: &Reference) -> Result<ModelVersion, String> {
        #[derive(Deserialize)]
        struct One {
            model_version: ModelVersion,
        }
        #[derive(Deserialize)]
        struct Many {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
        }
        let name = reference.name.as_str();
        let result = match &reference.selector {
            Selector::Alias(alias) => self
                .get_json::<One>(
                    &format!("alias '{alias}' of '{name}'"),
                    "api/2.0/mlflow/registered-models/alias",
                    &[("name", name), ("alias", alias)],
                )
                .await
                .map(|o| o.model_version),
            Selector::Version(v) => self
                .get_json::<One>(
                    &format!("version {v} of '{name}'"),
                    "api/2.0/mlflow/model-versions/get",
                    &[("name", name), ("version", &v.to_string())],
                )
                .await
                .map(|o| o.model_version),
            Selector::Stage(_) | Selector::Latest => {
                let stages: Vec<&str> = match &reference.selector {
                    Selector::Stage(s) => vec![s.as_str()],
                    _ => Vec::new(),
                };
                let what = format!("the latest versions of '{name}'");
                let r = self
                    .request(
                        reqwest::Method::POST,
                        "api/2.0/mlflow/registered-models/get-latest-versions",
                    )?
                    .json(&serde_json::json!({ "name": name, "stages": stages }));
                let many: Many = self
                    .send(&what, r)
                    .await?
                    .json()
                    .await
                    .map_err(|e| format!("MLflow sent an unreadable answer to {what}: {}", e.without_url()))?;
                many.model_versions
                    .into_iter()
                    .filter(|v| match &reference.selector {
                        Selector::Stage(s) => v.current_stage.eq_ignore_ascii_case(s),
                        _ => true,
                    })
                    .max_by_key(|v| v.version.parse::<u64>().unwrap_or(0))
                    .ok_or_else(|| format!("'{}' has no version in stage '{}'", name, stages.join(",")))
            }
        };
        result.map_err(|e| self.secrets.scrub(&e))
    }

    /// Downloads a version's artifact into `dest` (which must not exist).
    pub async fn download(&self, version: &ModelVersion, dest: &Path) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Uri {
            artifact_uri: String,
        }
        let what = format!(
            "the artifact location of '{}' version {}",
            version.name, version.version
        );
        let uri = self
            .get_json::<Uri>(
                &what,
                "api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", &version.name), ("version", &version.version)],
            )
            .await
            .map(|u| u.artifact_uri)
            .unwrap_or_else(|_| version.source.clone());
        let fetched = self.fetch_tree(&uri, dest).await;
        fetched.map_err(|e| {
            self.secrets
                .scrub(&format!("cannot download {}: {e}", display_url(&uri)))
        })
    }

    async fn fetch_tree(&self, uri: &str, dest: &Path) -> Result<(), String> {
        tokio::fs::create_dir_all(dest).await.map_err(|e| e.to_string())?;
        if let Some(path) = uri.strip_prefix("mlflow-artifacts:") {
            // mlflow-artifacts:/<path> or mlflow-artifacts://<host>/<path>:
            // either way through this tracking server's proxy.
            let path = match path.strip_prefix("//") {
                Some(rest) => rest.split_once('/').map_or("", |(_, p)| p),
                None => path,
            };
            return self.fetch_proxied(path.trim_matches('/'), dest).await;
        }
        let local = if uri.starts_with('/') {
            Some(format!("file://{uri}"))
        } else {
            None
        };
        let url = local.as_deref().unwrap_or(uri);
        if url.starts_with("runs:/") || url.starts_with("models:/") {
            return Err("the server did not resolve this URI to a storage location".into());
        }
        let (store, prefix) = object::open(url, self.s3_endpoint.as_deref())?;
        let files = object::download_tree(store.as_ref(), &prefix, dest).await?;
        if files.is_empty() {
            return Err("no files there".into());
        }
        Ok(())
    }

    /// Walks the artifact proxy's listing (`/api/2.0/mlflow-artifacts/artifacts?path=`)
    /// and streams each file.
    async fn fetch_proxied(&self, root: &str, dest: &Path) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            files: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            path: String,
            #[serde(default)]
            is_dir: bool,
        }
        let mut pending = vec![String::new()];
        let mut count = 0u64;
        let mut bytes = 0u64;
        while let Some(rel) = pending.pop() {
            let path = if rel.is_empty() {
                root.to_owned()
            } else {
                format!("{root}/{rel}")
            };
            let listing: Listing = self
                .get_json(
                    "an artifact listing",
                    "api/2.0/mlflow-artifacts/artifacts",
                    &[("path", &path)],
                )
                .await?;
            for e in listing.files {
                // Entries are named relative to the listed folder.
                let name = e.path.rsplit('/').next().unwrap_or(&e.path).to_owned();
                if name.is_empty() || name == "." || name == ".." {
                    continue;
                }
                let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                if e.is_dir {
                    pending.push(child);
                    continue;
                }
                let file = dest.join(&child);
                if let Some(parent) = file.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(|e| e.to_string())?;
                }
                let r = self.request(
                    reqwest::Method::GET,
                    &format!("api/2.0/mlflow-artifacts/artifacts/{root}/{child}"),
                )?;
                let mut response = self.send(&format!("artifact '{child}'"), r).await?;
                let mut out = tokio::fs::File::create(&file).await.map_err(|e| e.to_string())?;
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| format!("artifact '{child}' broke off: {}", e.without_url()))?
                {
                    bytes += chunk.len() as u64;
                    out.write_all(&chunk).await.map_err(|e| e.to_string())?;
                }
                out.flush().await.map_err(|e| e.to_string())?;
                count += 1;
            }
        }
        if count == 0 {
            return Err("the artifact holds no files".into());
        }
        telemetry::source_fetched("mlflow", count, bytes);
        Ok(())
    }
}

/// The model file an MLflow artifact names: the `onnx` flavour's `data` in
/// `MLmodel`; without an `MLmodel`, `model.onnx`.
pub fn model_file(artifact: &Path) -> Result<String, String> {
    let Ok(text) = std::fs::read_to_string(artifact.join("MLmodel")) else {
        return match artifact.join("model.onnx").is_file() {
            true => Ok("model.onnx".into()),
            false => Err("the artifact has neither an MLmodel file nor a model.onnx".into()),
        };
    };
    let flavors = mlmodel_flavors(&text);
    match flavors.iter().find(|(f, _)| f == "onnx") {
        Some((_, Some(data))) => Ok(data.clone()),
        Some((_, None)) => Ok("model.onnx".into()),
        None => Err(format!(
            "the artifact's MLmodel has no onnx flavour (it has: {})",
            flavors.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The flavours of an `MLmodel` file (YAML) with each one's `data` entry.
/// MLflow writes a fixed shape (`flavors:` then two-space-indented names),
/// so reading that shape needs no YAML library.
fn mlmodel_flavors(text: &str) -> Vec<(String, Option<String>)> {
    let mut flavors: Vec<(String, Option<String>)> = Vec::new();
    let mut inside = false;
    let mut flavor_indent = None;
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            inside = line.trim_end() == "flavors:";
            flavor_indent = None;
            continue;
        }
        if !inside {
            continue;
        }
        let trimmed = line.trim();
        let level = *flavor_indent.get_or_insert(indent);
        if indent == level {
            if let Some(name) = trimmed.strip_suffix(':') {
                flavors.push((name.to_owned(), None));
            }
        } else if indent > level
            && let Some(value) = trimmed.strip_prefix("data:")
            && let Some(last) = flavors.last_mut()
            && last.1.is_none()
        {
            last.1 = Some(value.trim().trim_matches(['\'', '"']).to_owned());
        }
    }
    flavors
}

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
                    let _ = engine.load(&self.follow.served, LoadRequest::default()).await;
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
            ("registry".to_owned(), format!("mlflow {}", self.client.shown)),
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
            Ok(()) => drop(engine.load(&name, LoadRequest::default()).await),
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
        let mut started = tokio::time::Instant::now();
        loop {
            // Counted from the start of the last attempt: a change is seen
            // within one interval however long the last sync or swap took.
            tokio::select! {
                _ = tokio::time::sleep_until(started + backoff.next_wait()) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            started = tokio::time::Instant::now();
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
    let file = model_file(artifact)?;
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
            .unwrap_or_else(|| "model.onnx".into()),
        None => "model.onnx".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = Reference::parse("models:/fraud-detection@champion").unwrap();
        assert_eq!(
            (r.name.as_str(), r.selector),
            ("fraud-detection", Selector::Alias("champion".into()))
        );
        let r = Reference::parse("models:/fraud/Production").unwrap();
        assert_eq!(r.selector, Selector::Stage("Production".into()));
        assert_eq!(
            Reference::parse("models:/fraud/3").unwrap().selector,
            Selector::Version(3)
        );
        assert_eq!(
            Reference::parse("models:/fraud/latest").unwrap().selector,
            Selector::Latest
        );
        for bad in ["fraud@champion", "models:/fraud", "models:/@x", "models:/fraud@"] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let f = Follow::parse("fraud=models:/fraud-detection@champion").unwrap();
        assert_eq!(f.served, "fraud");
        assert!(Follow::parse("../x=models:/a/1").is_err());
        assert!(Follow::parse("models:/a/1").is_err());
    }

    #[test]
    fn the_onnx_flavour_names_the_model_file() {
        let text = "artifact_path: model\nflavors:\n  python_function:\n    data: model.onnx\n    loader_module: mlflow.onnx\n  onnx:\n    code: null\n    data: net.onnx\n    onnx_version: 1.17.0\nmlflow_version: 3.1.0\n";
        let f = mlmodel_flavors(text);
        assert_eq!(f[0], ("python_function".into(), Some("model.onnx".into())));
        assert_eq!(f[1], ("onnx".into(), Some("net.onnx".into())));
        let dir = std::env::temp_dir().join(format!("quiver-mlmodel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("MLmodel"), text).unwrap();
        assert_eq!(model_file(&dir).unwrap(), "net.onnx");
        std::fs::write(
            dir.join("MLmodel"),
            "flavors:\n  sklearn:\n    pickled_model: model.pkl\n",
        )
        .unwrap();
        let e = model_file(&dir).unwrap_err();
        assert!(e.contains("no onnx flavour") && e.contains("sklearn"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! MLflow's REST API: resolving a reference to a registered version, and
//! downloading that version's artifact from wherever it is kept.
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::reference::{Reference, Selector};
use crate::sources::object;
use crate::sources::secrets::{Secrets, display_url};
use crate::telemetry;

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

/// How to reach the tracking server and the artifacts behind it.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `MLFLOW_TRACKING_TOKEN`: sent as a bearer token.
    pub token: Option<String>,
    /// `MLFLOW_TRACKING_USERNAME` / `_PASSWORD`: basic auth (a user and
    /// password inside the tracking URI win).
    pub basic: Option<(String, String)>,
    /// `MLFLOW_S3_ENDPOINT_URL`, for artifacts kept in an S3-compatible store.
    pub s3_endpoint: Option<String>,
}

impl Client {
    pub fn new(tracking_uri: &str, access: Access, secrets: Secrets) -> Result<Client, String> {
        let shown = display_url(tracking_uri);
        let mut base =
            url::Url::parse(tracking_uri).map_err(|e| format!("--mlflow-tracking-uri '{shown}' is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "--mlflow-tracking-uri '{shown}' must be an http(s) URL of a tracking server"
            ));
        }
        let basic = match (base.username(), base.password()) {
            ("", None) => access.basic,
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
            token: access.token.filter(|t| !t.is_empty()),
            basic,
            s3_endpoint: access.s3_endpoint,
            secrets,
        })
    }

    /// The tracking server's URL as it may be shown (no credentials).
    pub fn shown(&self) -> &str {
        &self.shown
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

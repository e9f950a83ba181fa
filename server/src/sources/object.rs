//! An object-store repository (`s3://bucket/prefix`, `gs://`, `az://`,
//! `file://`) mirrored into a local folder that the engine serves like any
//! repository.
//!
//! A sync lists the prefix, compares each object's ETag (size and mtime when
//! the store gives none) with what the mirror holds, and downloads only the
//! objects that changed. A model's changed objects are all downloaded into a
//! staging folder first and moved into place together, after the last one
//! arrived: the loader never sees a model with some files new and some old,
//! or half a file. Objects that disappeared are deleted, and a model folder
//! left empty is removed (poll mode then unloads it). What the mirror holds
//! is recorded in `.quiver-mirror.json`, so a restart fetches nothing that
//! did not change.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use super::secrets::{Secrets, display_url};
use crate::telemetry;
use quiver_engine::provenance::{self, Provenance};

/// The file recording what the mirror holds, in the mirror's root.
const MANIFEST: &str = ".quiver-mirror.json";
/// Where downloads wait until their model is complete.
const STAGING: &str = ".quiver-staging";

/// What identifies an object's content without downloading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub etag: String,
    pub size: u64,
}

impl Stamp {
    fn of(meta: &ObjectMeta) -> Stamp {
        Stamp {
            etag: meta
                .e_tag
                .clone()
                .unwrap_or_else(|| format!("mtime:{}", meta.last_modified.timestamp_millis())),
            size: meta.size,
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    /// The repository URL mirrored: a cache folder reused for another
    /// repository starts over.
    #[serde(default)]
    source: String,
    /// Path relative to the repository prefix ("model/1/model.onnx") -> stamp.
    files: BTreeMap<String, Stamp>,
}

/// What one sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Models whose files changed (new, updated or removed objects).
    pub changed: Vec<String>,
    /// Objects downloaded.
    pub fetched: u64,
    /// Models that could not be brought up to date, with why; their previous
    /// files stay in place.
    pub failed: Vec<(String, String)>,
}

/// Opens the store a URL names. S3 takes the usual AWS variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, ...); `endpoint` overrides the endpoint for
/// S3-compatible stores (MinIO, Ceph), and a plain-HTTP endpoint is allowed
/// as given. GCS and Azure take their own variables.
pub fn open(url: &str, endpoint: Option<&str>) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    use object_store::RetryConfig;
    let parsed = url::Url::parse(url).map_err(|e| format!("'{}' is not a URL: {e}", display_url(url)))?;
    // Few retries inside one attempt: quiver's own back-off retries a failed
    // sync, and an unreachable store must not hold a sync for minutes.
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(15),
        ..Default::default()
    };
    let prefix = |p: &str| ObjectPath::from(p.trim_matches('/'));
    let store: Arc<dyn ObjectStore> = match parsed.scheme() {
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry);
            let endpoint = endpoint.map(str::to_owned).or_else(|| {
                ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                    .iter()
                    .find_map(|v| std::env::var(v).ok())
            });
            if let Some(e) = endpoint {
                b = b.with_allow_http(e.starts_with("http://")).with_endpoint(e);
            }
            Arc::new(
                b.build()
                    .map_err(|e| format!("cannot open {}: {e}", display_url(url)))?,
            )
        }
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry)
                .build()
                .map_err(|e| format!("cannot open {}: {e}", display_url(url)))?,
        ),
        "az" | "azure" | "abfs" | "abfss" | "adl" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry)
                .build()
                .map_err(|e| format!("cannot open {}: {e}", display_url(url)))?,
        ),
        "file" => {
            let path = parsed
                .to_file_path()
                .map_err(|_| format!("'{url}' is not a local file URL"))?;
            return Ok((
                Arc::new(object_store::local::LocalFileSystem::new()),
                ObjectPath::from_absolute_path(&path).map_err(|e| format!("'{url}': {e}"))?,
            ));
        }
        other => {
            return Err(format!(
                "repository URL scheme '{other}://' is not supported (s3, gs, az, file are)"
            ));
        }
    };
    // The bucket (container) is the URL's host; the prefix its path.
    Ok((store, prefix(parsed.path())))
}

/// A repository in an object store, mirrored into `root`.
pub struct Mirror {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The repository's URL as it may be shown (no credentials).
    uri: String,
    root: PathBuf,
    manifest: tokio::sync::Mutex<Manifest>,
    secrets: Secrets,
}

impl Mirror {
    /// A mirror of `url` in `root` (created if missing). Nothing is fetched yet.
    pub fn new(url: &str, endpoint: Option<&str>, root: PathBuf, secrets: Secrets) -> Result<Mirror, String> {
        let (store, prefix) = open(url, endpoint).map_err(|e| secrets.scrub(&e))?;
        let uri = display_url(url).trim_end_matches('/').to_owned();
        let manifest: Manifest = std::fs::read(root.join(MANIFEST))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let manifest = if manifest.source == uri {
            manifest
        } else {
            // Another repository's mirror (or none): start from an empty folder.
            let _ = std::fs::remove_dir_all(&root);
            Manifest {
                source: uri.clone(),
                files: BTreeMap::new(),
            }
        };
        std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let _ = std::fs::remove_dir_all(root.join(STAGING));
        Ok(Mirror {
            store,
            prefix,
            uri,
            root,
            manifest: tokio::sync::Mutex::new(manifest),
            secrets,
        })
    }

    /// The local folder the engine serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Brings the mirror up to date with the store: every model, or only
    /// `model`. `Err` when the store cannot be listed at all (nothing
    /// changed locally); per-model download failures are in the report.
    pub async fn sync(&self, model: Option<&str>) -> Result<SyncReport, String> {
        let mut manifest = self.manifest.lock().await;
        let scope = match model {
            Some(m) => self.prefix.clone().join(m),
            None => self.prefix.clone(),
        };
        let listed = self.list(&scope).await?;
        let mut remote: BTreeMap<String, BTreeMap<String, ObjectMeta>> = BTreeMap::new();
        for (rel, meta) in listed {
            let Some((name, _)) = rel.split_once('/') else {
                continue; // a file at the repository's top level
            };
            remote.entry(name.to_owned()).or_default().insert(rel, meta);
        }
        let mut models: BTreeSet<String> = remote.keys().cloned().collect();
        for rel in manifest.files.keys() {
            if let Some((name, _)) = rel.split_once('/')
                && model.is_none_or(|m| m == name)
            {
                models.insert(name.to_owned());
            }
        }

        let mut report = SyncReport::default();
        for name in models {
            let wanted = remote.remove(&name).unwrap_or_default();
            match self.sync_model(&mut manifest, &name, wanted).await {
                Ok(0) => {}
                Ok(fetched) => {
                    report.fetched += fetched - 1;
                    report.changed.push(name);
                }
                Err(why) => {
                    let why = self.secrets.scrub(&why);
                    tracing::warn!(model = name, repository = self.uri, reason = why, "cannot mirror model");
                    report.failed.push((name, why));
                }
            }
        }
        self.save(&manifest).await;
        Ok(report)
    }

    /// Every object under `scope`, by path relative to the repository prefix.
    async fn list(&self, scope: &ObjectPath) -> Result<Vec<(String, ObjectMeta)>, String> {
        let mut stream = self.store.list(Some(scope));
        let mut all = Vec::new();
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| {
                self.secrets
                    .scrub(&format!("cannot list {}: {}", self.uri, compact(&e.to_string())))
            })?;
            let Some(parts) = meta.location.prefix_match(&self.prefix) else {
                continue;
            };
            let rel = parts.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>().join("/");
            // Staging and bookkeeping names never come from a store, and no
            // key may write outside the mirror.
            if !safe_relative(&rel) || rel.split('/').any(|p| p.starts_with(".quiver")) {
                continue;
            }
            all.push((rel, meta));
        }
        // A zero-byte "folder marker" object (`model/1/`) is not a file.
        let paths: BTreeSet<String> = all.iter().map(|(r, _)| r.clone()).collect();
        all.retain(|(rel, meta)| {
            !(meta.size == 0
                && paths
                    .range(format!("{rel}/")..)
                    .next()
                    .is_some_and(|p| p.starts_with(&format!("{rel}/"))))
        });
        Ok(all)
    }

    /// Brings one model up to date. `Ok(0)`: nothing changed; `Ok(n + 1)`:
    /// changed, with `n` objects downloaded.
    async fn sync_model(
        &self,
        manifest: &mut Manifest,
        name: &str,
        wanted: BTreeMap<String, ObjectMeta>,
    ) -> Result<u64, String> {
        let prefix = format!("{name}/");
        let have: BTreeMap<String, Stamp> = manifest
            .files
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let changed: Vec<(&String, &ObjectMeta)> = wanted
            .iter()
            .filter(|(rel, meta)| have.get(*rel) != Some(&Stamp::of(meta)) || !self.root.join(rel).is_file())
            .collect();
        let removed: Vec<&String> = have.keys().filter(|rel| !wanted.contains_key(*rel)).collect();
        if changed.is_empty() && removed.is_empty() {
            return Ok(0);
        }

        static NEXT: AtomicU64 = AtomicU64::new(0);
        let staging = self
            .root
            .join(STAGING)
            .join(format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let mut bytes = 0;
        for (rel, meta) in &changed {
            let to = staging.join(rel);
            match download(self.store.as_ref(), &meta.location, &to).await {
                Ok(n) => bytes += n,
                Err(e) => {
                    let _ = tokio::fs::remove_dir_all(&staging).await;
                    return Err(format!("cannot fetch {}/{rel}: {e}", self.uri));
                }
            }
        }
        telemetry::source_fetched("object_store", changed.len() as u64, bytes);

        // Every changed object is here: move them in, delete the removed ones.
        let root = self.root.clone();
        let moves: Vec<String> = changed.iter().map(|(rel, _)| (*rel).clone()).collect();
        let deletes: Vec<String> = removed.iter().map(|r| (*r).clone()).collect();
        let record = self.provenance(name, &wanted);
        let (model, staged) = (name.to_owned(), staging.clone());
        tokio::task::spawn_blocking(move || apply(&root, &model, &staged, &moves, &deletes, &record))
            .await
            .map_err(|e| format!("mirroring '{name}' stopped: {e}"))?
            .map_err(|e| format!("cannot update the mirror of '{name}': {e}"))?;

        for rel in removed {
            manifest.files.remove(rel);
        }
        for (rel, meta) in &wanted {
            manifest.files.insert(rel.clone(), Stamp::of(meta));
        }
        tracing::info!(
            model = name,
            repository = self.uri,
            fetched = changed.len(),
            removed = have.keys().filter(|r| !wanted.contains_key(*r)).count(),
            bytes,
            "model mirrored"
        );
        Ok(changed.len() as u64 + 1)
    }

    /// Each version's source URL and ETags, for the index.
    fn provenance(&self, name: &str, wanted: &BTreeMap<String, ObjectMeta>) -> BTreeMap<String, Provenance> {
        let mut all: BTreeMap<String, Provenance> = BTreeMap::new();
        for (rel, meta) in wanted {
            let mut parts = rel.splitn(3, '/');
            let (Some(_), Some(version), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if version.parse::<u64>().is_err() {
                continue;
            }
            let p = all
                .entry(version.to_owned())
                .or_insert_with(|| Provenance::from([("uri".to_owned(), format!("{}/{name}/{version}/", self.uri))]));
            let etag = Stamp::of(meta).etag;
            let entry = p.entry("etag".to_owned()).or_default();
            if !entry.is_empty() {
                entry.push_str(", ");
            }
            entry.push_str(&format!("{file}={}", etag.trim_matches('"')));
        }
        all
    }

    async fn save(&self, manifest: &Manifest) {
        let path = self.root.join(MANIFEST);
        let tmp = self.root.join(format!("{MANIFEST}.tmp"));
        let written = match serde_json::to_vec(manifest) {
            Ok(bytes) => match tokio::fs::write(&tmp, bytes).await {
                Ok(()) => tokio::fs::rename(&tmp, &path).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(e) = written {
            // Only costs a refetch after a restart.
            tracing::warn!(path = %path.display(), error = %e, "cannot record the mirror's contents");
        }
    }
}

/// Streams one object into `to` (parent folders created), returning its size.
pub async fn download(store: &dyn ObjectStore, location: &ObjectPath, to: &Path) -> Result<u64, String> {
    if let Some(parent) = to.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| e.to_string())?;
    }
    let got = store.get(location).await.map_err(|e| compact(&e.to_string()))?;
    let mut stream = got.into_stream();
    let mut file = tokio::fs::File::create(to).await.map_err(|e| e.to_string())?;
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| compact(&e.to_string()))?;
        n += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    file.flush().await.map_err(|e| e.to_string())?;
    Ok(n)
}

/// Every object under `prefix`, downloaded into `dest` by relative path.
/// Returns the relative paths and stamps.
pub async fn download_tree(
    store: &dyn ObjectStore,
    prefix: &ObjectPath,
    dest: &Path,
) -> Result<Vec<(String, Stamp)>, String> {
    let mut stream = store.list(Some(prefix));
    let mut files = Vec::new();
    while let Some(item) = stream.next().await {
        let meta = item.map_err(|e| compact(&e.to_string()))?;
        let Some(parts) = meta.location.prefix_match(prefix) else {
            continue;
        };
        let rel = parts.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>().join("/");
        if !safe_relative(&rel) {
            continue;
        }
        download(store, &meta.location, &dest.join(&rel)).await?;
        files.push((rel, Stamp::of(&meta)));
    }
    Ok(files)
}

/// A key's path below the prefix that stays inside the folder it lands in.
fn safe_relative(rel: &str) -> bool {
    !rel.is_empty() && !rel.contains('\\') && rel.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
}

/// object_store's errors can run to several nested sentences; one line is
/// enough for a log and an index reason.
fn compact(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Moves a model's staged downloads into place, deletes its removed files,
/// drops folders left empty, and records the versions' provenance.
fn apply(
    root: &Path,
    model: &str,
    staging: &Path,
    moves: &[String],
    deletes: &[String],
    record: &BTreeMap<String, Provenance>,
) -> std::io::Result<()> {
    for rel in moves {
        let to = root.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(staging.join(rel), &to)?;
    }
    let _ = std::fs::remove_dir_all(staging);
    let model_dir = root.join(model);
    for rel in deletes {
        let path = root.join(rel);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Empty folders up to (not including) the model folder go too.
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != model_dir && d.starts_with(&model_dir)) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
    if record.is_empty() && !has_files(&model_dir) {
        // Every object is gone: so is the model.
        return match std::fs::remove_dir_all(&model_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    provenance::write(&model_dir, record)
}

/// Whether a folder holds any file other than quiver's own bookkeeping.
fn has_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(".quiver") {
            return false;
        }
        match e.file_type() {
            Ok(t) if t.is_dir() => has_files(&e.path()),
            Ok(_) => true,
            Err(_) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    async fn put(store: &InMemory, key: &str, body: &'static [u8]) {
        store
            .put(&ObjectPath::from(key), PutPayload::from_static(body))
            .await
            .unwrap();
    }

    fn mirror(store: Arc<InMemory>, root: &Path) -> Mirror {
        let manifest = Manifest {
            source: "mem://repo".into(),
            files: BTreeMap::new(),
        };
        std::fs::create_dir_all(root).unwrap();
        Mirror {
            store,
            prefix: ObjectPath::from("repo"),
            uri: "mem://repo".into(),
            root: root.to_owned(),
            manifest: tokio::sync::Mutex::new(manifest),
            secrets: Secrets::default(),
        }
    }

    /// A monitoring reference and its settings come along with the model,
    /// at model and at version level (docs/monitoring.md).
    #[tokio::test]
    async fn a_monitoring_reference_is_mirrored_with_the_model() {
        let root = std::env::temp_dir().join(format!("quiver-mirror-ref-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = Arc::new(InMemory::new());
        put(&store, "repo/m/config.pbtxt", b"name: \"m\"").await;
        put(&store, "repo/m/monitoring.json", b"{}").await;
        put(&store, "repo/m/reference.npz", b"PK").await;
        put(&store, "repo/m/1/model.onnx", b"one").await;
        put(&store, "repo/m/1/reference.npz", b"PK1").await;
        let m = mirror(Arc::clone(&store), &root);
        m.sync(None).await.unwrap();
        assert_eq!(std::fs::read(root.join("m/reference.npz")).unwrap(), b"PK");
        assert_eq!(std::fs::read(root.join("m/1/reference.npz")).unwrap(), b"PK1");
        assert!(root.join("m/monitoring.json").is_file());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn only_changed_objects_are_fetched_and_removed_ones_deleted() {
        let root = std::env::temp_dir().join(format!("quiver-mirror-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = Arc::new(InMemory::new());
        put(&store, "repo/m/config.pbtxt", b"name: \"m\"").await;
        put(&store, "repo/m/1/model.onnx", b"one").await;
        put(&store, "repo/top-level-file", b"ignored").await;
        let m = mirror(Arc::clone(&store), &root);

        let r = m.sync(None).await.unwrap();
        assert_eq!((r.changed.clone(), r.fetched), (vec!["m".to_string()], 2));
        assert_eq!(std::fs::read(root.join("m/1/model.onnx")).unwrap(), b"one");
        let prov = provenance::read(&root.join("m"));
        assert_eq!(prov["1"]["uri"], "mem://repo/m/1/");
        assert!(prov["1"]["etag"].starts_with("model.onnx="), "{prov:?}");

        // Nothing changed: nothing fetched.
        let r = m.sync(None).await.unwrap();
        assert!(r.changed.is_empty() && r.fetched == 0);

        // A new version: only its object.
        put(&store, "repo/m/2/model.onnx", b"two").await;
        let r = m.sync(None).await.unwrap();
        assert_eq!(r.fetched, 1);
        assert!(root.join("m/2/model.onnx").is_file());

        // Deleted: its file and folder go; the last object gone takes the model.
        store.delete(&ObjectPath::from("repo/m/2/model.onnx")).await.unwrap();
        let r = m.sync(None).await.unwrap();
        assert_eq!((r.changed.len(), r.fetched), (1, 0));
        assert!(!root.join("m/2").exists() && root.join("m/1/model.onnx").is_file());
        store.delete(&ObjectPath::from("repo/m/1/model.onnx")).await.unwrap();
        store.delete(&ObjectPath::from("repo/m/config.pbtxt")).await.unwrap();
        m.sync(None).await.unwrap();
        assert!(!root.join("m").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn keys_cannot_escape_the_mirror() {
        assert!(safe_relative("m/1/model.onnx"));
        for bad in ["", "m/../../etc/passwd", "m/./x", "m//x", "m\\..\\x", ".."] {
            assert!(!safe_relative(bad), "{bad}");
        }
    }
}

//! Where each version came from. A source that materialises a model folder
//! (the object-store mirror, the MLflow follower) writes `.quiver-source.json`
//! beside the version folders: `{"<version>": {"uri": ..., "etag": ...}}`.
//! The loader reads it and adds what it knows itself (the content digest,
//! the validation result); the index and the config's `parameters` show it.
use std::collections::BTreeMap;
use std::path::Path;

/// The file a source writes in a model folder.
pub const FILE: &str = ".quiver-source.json";

/// Facts about one version, in a stable order: key -> value.
pub type Provenance = BTreeMap<String, String>;

/// Every version's facts a model folder records (none when it has no file).
pub fn read(model_dir: &Path) -> BTreeMap<String, Provenance> {
    std::fs::read(model_dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes a model folder's provenance through a rename (never half a file).
pub fn write(model_dir: &Path, all: &BTreeMap<String, Provenance>) -> std::io::Result<()> {
    let tmp = model_dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(all).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, model_dir.join(FILE))
}

/// One version's facts: what the source recorded, or the local folder.
pub fn of_version(model_dir: &Path, version: u64, fingerprint: u64) -> Provenance {
    let mut p = read(model_dir).remove(&version.to_string()).unwrap_or_else(|| {
        let dir = model_dir.join(version.to_string());
        let shown = std::fs::canonicalize(&dir).unwrap_or(dir);
        Provenance::from([("uri".to_owned(), format!("file://{}", shown.display()))])
    });
    p.insert("digest".into(), format!("{fingerprint:016x}"));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_source_wins_over_the_local_folder() {
        let dir = std::env::temp_dir().join(format!("quiver-prov-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("3")).unwrap();
        let local = of_version(&dir, 3, 0xabc);
        assert!(
            local["uri"].starts_with("file://") && local["uri"].ends_with("/3"),
            "{local:?}"
        );
        assert_eq!(local["digest"], "0000000000000abc");
        let recorded = BTreeMap::from([(
            "3".to_owned(),
            Provenance::from([("uri".to_owned(), "s3://b/m/3/".to_owned())]),
        )]);
        write(&dir, &recorded).unwrap();
        assert_eq!(of_version(&dir, 3, 1)["uri"], "s3://b/m/3/");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

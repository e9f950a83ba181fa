//! What tells the lifecycle that a model changed on disk.
//!
//! Two measures: a cheap *stat signature* of a model folder (every file's
//! path, size and mtime), which the poller takes each round to see whether
//! anything moved and whether it has stopped moving; and a *content
//! fingerprint* of one version (the config text and every byte of the
//! version's files), which decides whether a version must be reloaded. A
//! `touch` changes the first and not the second; a file rewritten within one
//! mtime tick with the same size changes the second and not the first, which
//! is why loads compare contents.
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Every regular file under `dir`, as paths relative to it, sorted. Hidden
/// folders are skipped: the loader never reads them, and quiver writes its
/// TensorRT engine cache into one (`.quiver-trt-cache`), which must not look
/// like a change to the model.
fn files(dir: &Path) -> std::io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            // Follows symlinks, as the loader does.
            let meta = std::fs::metadata(entry.path())?;
            if meta.is_dir() {
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    pending.push(path);
                }
            } else if meta.is_file() {
                out.push((path, meta));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Paths, sizes and modification times of everything under a model folder.
pub fn stat_signature(dir: &Path) -> std::io::Result<u64> {
    let mut h = DefaultHasher::new();
    for (path, meta) in files(dir)? {
        path.hash(&mut h);
        meta.len().hash(&mut h);
        let mtime = meta.modified()?.duration_since(UNIX_EPOCH).unwrap_or_default();
        mtime.hash(&mut h);
    }
    Ok(h.finish())
}

/// Hash of `config` and of the names and bytes of every file under `dir`.
pub fn content(config: &[u8], dir: &Path) -> std::io::Result<u64> {
    let mut h = DefaultHasher::new();
    config.hash(&mut h);
    let mut buf = vec![0u8; 256 * 1024];
    for (path, _) in files(dir)? {
        path.hash(&mut h);
        let mut f = std::fs::File::open(dir.join(&path))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
        }
        // Separates one file's bytes from the next file's name.
        h.write_u8(0xff);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_changes_with_bytes_not_with_touch() {
        let dir = std::env::temp_dir().join(format!("quiver-fp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/model.onnx"), b"abc").unwrap();
        let a = content(b"cfg", &dir).unwrap();
        assert_eq!(a, content(b"cfg", &dir).unwrap());
        assert_ne!(a, content(b"cfg2", &dir).unwrap(), "the config is part of it");
        let s1 = stat_signature(&dir).unwrap();
        std::fs::write(dir.join("sub/model.onnx"), b"abd").unwrap();
        assert_ne!(a, content(b"cfg", &dir).unwrap(), "same size, other bytes");
        std::fs::write(dir.join("extra.txt"), b"").unwrap();
        let s2 = stat_signature(&dir).unwrap();
        assert_ne!(s1, s2, "a new file shows");
        // A TensorRT engine written into the hidden cache folder is no change.
        std::fs::create_dir_all(dir.join(".quiver-trt-cache/1")).unwrap();
        std::fs::write(dir.join(".quiver-trt-cache/1/engine"), b"plan").unwrap();
        assert_eq!(s2, stat_signature(&dir).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

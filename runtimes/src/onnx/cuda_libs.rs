//! Finding the CUDA, cuDNN and TensorRT libraries that ONNX Runtime's GPU
//! providers link against, without asking the operator to set
//! `LD_LIBRARY_PATH`.
//!
//! `libonnxruntime_providers_cuda.so` needs `libcudart`, `libcublas`,
//! `libcublasLt`, `libcurand`, `libcufft` and cuDNN by their sonames. A
//! machine with PyTorch already has them as the `nvidia-*` wheels'
//! `site-packages/nvidia/<part>/lib` folders, which the dynamic loader does
//! not search. quiver opens each such library once, by full path and with
//! `RTLD_GLOBAL`, before the first GPU session: the provider's own load then
//! finds the sonames already loaded. A library found nowhere is left to the
//! system's loader, whose error then names it.
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Library name stems, dependencies first. Each is loaded as
/// `<stem>.so.<major>`, every major found (a machine can hold CUDA 12 and 13).
const STEMS: &[&str] = &[
    "libcudart",
    "libnvJitLink",
    "libnvrtc",
    "libcublasLt",
    "libcublas",
    "libcurand",
    "libcufft",
    "libcudnn",
    "libnvinfer",
    "libnvinfer_plugin",
    "libnvonnxparser",
];

/// Folders that may hold the libraries, best first: `explicit`, then
/// `$CUDA_HOME`'s and `/usr/local/cuda`'s, then the `nvidia-*` and
/// `tensorrt` wheels' folders of the Python installations quiver can see
/// (`$VIRTUAL_ENV`, `$CONDA_PREFIX`, every `python3` on `PATH`,
/// `/usr/local`, `/usr`). Only folders that exist.
pub fn search_dirs(explicit: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = explicit.to_vec();
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    for cuda in [env("CUDA_HOME"), Some(PathBuf::from("/usr/local/cuda"))]
        .into_iter()
        .flatten()
    {
        dirs.push(cuda.join("lib64"));
        dirs.push(cuda.join("targets/x86_64-linux/lib"));
    }
    let mut prefixes: Vec<PathBuf> = [env("VIRTUAL_ENV"), env("CONDA_PREFIX")]
        .into_iter()
        .flatten()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        for bin in std::env::split_paths(&path) {
            if bin.join("python3").exists()
                && let Some(prefix) = bin.parent()
            {
                prefixes.push(prefix.to_owned());
            }
        }
    }
    prefixes.push("/usr/local".into());
    prefixes.push("/usr".into());
    for prefix in prefixes {
        for lib in ["lib", "lib64"] {
            for python in subdirs(&prefix.join(lib), |n| n.starts_with("python3")) {
                for site in ["site-packages", "dist-packages"] {
                    let site = python.join(site);
                    for part in subdirs(&site.join("nvidia"), |_| true) {
                        dirs.push(part.join("lib"));
                    }
                    dirs.push(site.join("tensorrt_libs"));
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| d.is_dir() && seen.insert(d.clone()));
    dirs
}

fn subdirs(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&keep) && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// `<stem>.so.<digits>`: a soname, not a fully versioned file or a dev link.
fn is_soname(file: &str, stem: &str) -> bool {
    file.strip_prefix(stem)
        .and_then(|rest| rest.strip_prefix(".so."))
        .is_some_and(|major| !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
}

/// The library files to preload from `dirs`, in load order: for each stem,
/// each soname from the first folder that has it.
pub fn libraries(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for stem in STEMS {
        let mut names: Vec<String> = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut found: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|f| is_soname(f, stem) && !names.contains(f))
                .collect();
            found.sort();
            for f in found {
                out.push(dir.join(&f));
                names.push(f);
            }
        }
    }
    out
}

/// What the preload did, for messages: the folders searched and the files
/// loaded. Runs once per process; later calls return the first result.
#[derive(Clone, Debug, Default)]
pub struct Preloaded {
    pub dirs: Vec<PathBuf>,
    pub loaded: Vec<PathBuf>,
    pub failed: Vec<String>,
}

static PRELOADED: Mutex<Option<Preloaded>> = Mutex::new(None);

pub fn preload(explicit: &[PathBuf]) -> Preloaded {
    let mut done = PRELOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*done {
        return p.clone();
    }
    let dirs = search_dirs(explicit);
    let mut result = Preloaded {
        dirs: dirs.clone(),
        ..Default::default()
    };
    for file in libraries(&dirs) {
        // SAFETY: these are the vendor's CUDA libraries, whose initialisers
        // only register themselves; they stay loaded for the process's life.
        let opened = unsafe {
            libloading::os::unix::Library::open(
                Some(&file),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            )
        };
        match opened {
            Ok(lib) => {
                std::mem::forget(lib);
                result.loaded.push(file);
            }
            Err(e) => result.failed.push(format!("{}: {e}", file.display())),
        }
    }
    *done = Some(result.clone());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonames_only() {
        assert!(is_soname("libcudart.so.13", "libcudart"));
        assert!(is_soname("libcudnn.so.9", "libcudnn"));
        assert!(!is_soname("libcudnn.so.9.1.0", "libcudnn"));
        assert!(!is_soname("libcudnn.so", "libcudnn"));
        assert!(!is_soname("libcudnn_graph.so.9", "libcudnn"));
        assert!(!is_soname("libcublasLt.so.13", "libcublas"));
    }

    #[test]
    fn wheel_folders_are_found_and_libraries_ordered() {
        let root = std::env::temp_dir().join(format!("quiver-cuda-libs-{}", std::process::id()));
        let site = root.join("venv/lib/python3.12/site-packages");
        for (part, files) in [
            ("cudnn", &["libcudnn.so.9", "libcudnn_graph.so.9"][..]),
            ("cu13", &["libcublas.so.13", "libcudart.so.13", "libcublasLt.so.13"][..]),
        ] {
            let lib = site.join("nvidia").join(part).join("lib");
            std::fs::create_dir_all(&lib).unwrap();
            for f in files {
                std::fs::write(lib.join(f), b"").unwrap();
            }
        }
        let explicit = root.join("explicit");
        std::fs::create_dir_all(&explicit).unwrap();
        std::fs::write(explicit.join("libcudart.so.13"), b"").unwrap();
        // SAFETY: this test alone reads VIRTUAL_ENV in this process.
        unsafe { std::env::set_var("VIRTUAL_ENV", root.join("venv")) };
        let dirs = search_dirs(std::slice::from_ref(&explicit));
        assert_eq!(dirs[0], explicit);
        assert!(dirs.contains(&site.join("nvidia/cudnn/lib")), "{dirs:?}");
        assert!(dirs.contains(&site.join("nvidia/cu13/lib")), "{dirs:?}");
        let libs = libraries(&dirs);
        let names: Vec<String> = libs
            .iter()
            .filter(|p| p.starts_with(&root))
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "explicit/libcudart.so.13",
                "venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublasLt.so.13",
                "venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13",
                "venv/lib/python3.12/site-packages/nvidia/cudnn/lib/libcudnn.so.9",
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}

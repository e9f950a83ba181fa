//! The LibTorch backend, as the server sees it: a loader. LibTorch is linked
//! by a library of its own, `libquiver_torch.so` (crate `runtimes/torch`),
//! opened with `dlopen` when the first TorchScript model loads. A machine
//! without LibTorch then fails those models' loads with the reason, and the
//! server and its other models run on: as with Triton's backend libraries.
//!
//! Where things are looked for:
//! - LibTorch: `--backend-config pytorch,libtorch=<dir>`, else `LIBTORCH`
//!   (a folder with `lib/`, as the build takes it). Its libraries are opened
//!   first, so the backend library finds them loaded. Neither set: the
//!   backend library's RUNPATH (the LibTorch it was built against, then its
//!   own folder).
//! - The backend library: `--backend-directory`, else beside the executable.
use std::ffi::{CStr, CString, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::backend::{Backend, LoadRequest, Settings};
use crate::{Runtime, RuntimeError};

/// The backend library's file name.
pub const LIBRARY: &str = "libquiver_torch.so";
const ENTRY: &CStr = c"quiver_torch_backend";
/// The signature of the library's entry point (`quiver_torch::quiver_torch_backend`).
type EntryFn = fn(abi: &str) -> Result<Box<dyn Backend>, String>;

pub struct TorchBackend;

static LOADED: OnceLock<Box<dyn Backend>> = OnceLock::new();

impl Backend for TorchBackend {
    fn init(&self, settings: &Settings) -> Result<(), RuntimeError> {
        if LOADED.get().is_some() {
            return Ok(());
        }
        let libtorch = settings
            .get("pytorch", "libtorch")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("LIBTORCH").map(PathBuf::from));
        if let Some(dir) = &libtorch {
            preload(dir)?;
        }
        let dirs = settings.library_dirs();
        let library = dirs
            .iter()
            .map(|d| d.join(LIBRARY))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                RuntimeError::Load(format!(
                    "the LibTorch backend library {LIBRARY} is not in {}: build it with `cargo build -p quiver-torch` \
                 (the README's build does), or point --backend-directory at its folder",
                    looked.join(" or ")
                ))
            })?;
        let handle = open(&library).map_err(|e| {
            RuntimeError::Load(format!(
                "cannot load the LibTorch backend {}: {e}. LibTorch is missing or incomplete: run \
                 scripts/fetch-libtorch.sh, or point --backend-config pytorch,libtorch=<dir> (or LIBTORCH) \
                 at a LibTorch folder",
                library.display()
            ))
        })?;
        // SAFETY: the handle is open (and never closed); the symbol, if
        // present, is the entry point with this signature, and the ABI
        // check below refuses a library of another build.
        let entry = unsafe { libc::dlsym(handle, ENTRY.as_ptr()) };
        if entry.is_null() {
            return Err(RuntimeError::Load(format!(
                "{} has no {ENTRY:?}: it is not quiver's LibTorch backend",
                library.display()
            )));
        }
        let entry: EntryFn = unsafe { std::mem::transmute::<*mut c_void, EntryFn>(entry) };
        let backend = entry(crate::ABI).map_err(RuntimeError::Load)?;
        backend.init(settings)?;
        let _ = LOADED.set(backend);
        Ok(())
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Runtime>, RuntimeError> {
        LOADED
            .get()
            .ok_or_else(|| RuntimeError::Load("the LibTorch backend is not loaded".into()))?
            .load(request)
    }
}

/// Opens LibTorch's libraries from `dir` (or `dir/lib`), process-wide, so the
/// backend library links against exactly these.
fn preload(dir: &Path) -> Result<(), RuntimeError> {
    let lib = if dir.join("lib").is_dir() {
        dir.join("lib")
    } else {
        dir.to_owned()
    };
    let missing = |what: &str| {
        RuntimeError::Load(format!(
            "LibTorch not found: {} has no {what}. Run scripts/fetch-libtorch.sh, or point \
             --backend-config pytorch,libtorch=<dir> (or LIBTORCH) at a LibTorch folder with lib/",
            lib.display()
        ))
    };
    for required in ["libc10.so", "libtorch_cpu.so"] {
        if !lib.join(required).is_file() {
            return Err(missing(required));
        }
        open(&lib.join(required)).map_err(|e| RuntimeError::Load(format!("cannot load LibTorch: {e}")))?;
    }
    // CUDA parts where this LibTorch has them; libtorch.so needs them.
    for optional in ["libc10_cuda.so", "libtorch_cuda.so", "libtorch.so"] {
        if lib.join(optional).is_file() {
            let _ = open(&lib.join(optional));
        }
    }
    Ok(())
}

/// `dlopen` with every symbol resolved now and visible to what loads later.
fn open(path: &Path) -> Result<*mut c_void, String> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| "a path with a NUL byte".to_owned())?;
    // SAFETY: a valid C string; dlerror is read right after, on this thread.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if handle.is_null() {
            let error = libc::dlerror();
            return Err(if error.is_null() {
                format!("dlopen({}) failed", path.display())
            } else {
                CStr::from_ptr(error).to_string_lossy().into_owned()
            });
        }
        Ok(handle)
    }
}

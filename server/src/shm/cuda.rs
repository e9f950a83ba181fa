//! CUDA shared memory: GPU memory a client allocated and exported with
//! `cudaIpcGetMemHandle`, opened here with `cudaIpcOpenMemHandle` from the
//! 64 bytes of its handle. The CUDA runtime (`libcudart`) is opened at run
//! time, found as the ONNX Runtime CUDA provider's libraries are, so the
//! same binary serves with or without CUDA; without it, or without devices,
//! registering a CUDA region is refused with a clear error.
//!
//! Inputs are copied from the device into host memory once, outputs from
//! host memory into the device once, on a blocking thread (a 16 MB copy
//! takes about a millisecond over PCIe, too long for the async runtime).
//! Every copy's offset and size is checked against the region, and the
//! region against the allocation the handle names (the driver's
//! `cuMemGetAddressRange`), so a client cannot make the server read or
//! write device memory outside what it exported.
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::path::PathBuf;
use std::sync::Arc;

/// `CUDA_IPC_HANDLE_SIZE`: the bytes of a `cudaIpcMemHandle_t`.
pub const HANDLE_BYTES: usize = 64;

/// `cudaIpcMemHandle_t`, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpcHandle(pub [u8; HANDLE_BYTES]);

const SUCCESS: c_int = 0;
/// `cudaIpcMemLazyEnablePeerAccess`.
const LAZY_PEER_ACCESS: c_uint = 1;
const HOST_TO_DEVICE: c_int = 1;
const DEVICE_TO_HOST: c_int = 2;

/// The CUDA calls quiver makes, as function pointers: from the loaded
/// libraries, or from a unit test's stand-in.
#[derive(Clone, Copy)]
pub struct Api {
    pub get_device_count: unsafe extern "C" fn(*mut c_int) -> c_int,
    pub set_device: unsafe extern "C" fn(c_int) -> c_int,
    pub ipc_open: unsafe extern "C" fn(*mut *mut c_void, IpcHandle, c_uint) -> c_int,
    pub ipc_close: unsafe extern "C" fn(*mut c_void) -> c_int,
    pub memcpy: unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int) -> c_int,
    pub error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    /// The driver's `cuMemGetAddressRange_v2(base, size, pointer)`.
    pub address_range: unsafe extern "C" fn(*mut u64, *mut usize, u64) -> c_int,
}

impl Api {
    /// Opens the CUDA runtime and driver: `libcudart.so.<major>` from the
    /// folders ONNX Runtime's CUDA provider is searched in (`explicit`
    /// first), else the system loader's; `libcuda.so.1` from the driver.
    pub fn load(explicit: &[PathBuf]) -> Result<Api, String> {
        let mut candidates: Vec<PathBuf> = runtime_files(explicit);
        candidates.extend(["libcudart.so.13", "libcudart.so.12", "libcudart.so"].map(PathBuf::from));
        let mut errors = Vec::new();
        let runtime = candidates.iter().find_map(|file| {
            // SAFETY: the vendor's CUDA runtime; kept loaded for the
            // process's life (its pointers are used until exit).
            match unsafe { libloading::Library::new(file) } {
                Ok(lib) => Some(lib),
                Err(e) => {
                    errors.push(format!("{}: {e}", file.display()));
                    None
                }
            }
        });
        let Some(runtime) = runtime else {
            return Err(format!(
                "no CUDA runtime (libcudart) could be loaded ({})",
                errors.join("; ")
            ));
        };
        // SAFETY: as above, the driver's library, kept loaded.
        let driver = unsafe { libloading::Library::new("libcuda.so.1") }
            .map_err(|e| format!("the NVIDIA driver's libcuda.so.1 could not be loaded: {e}"))?;
        // SAFETY: each symbol has the C signature it is given here, as
        // declared in `cuda_runtime_api.h` and `cuda.h`.
        let api = unsafe {
            Api {
                get_device_count: symbol(&runtime, b"cudaGetDeviceCount\0")?,
                set_device: symbol(&runtime, b"cudaSetDevice\0")?,
                ipc_open: symbol(&runtime, b"cudaIpcOpenMemHandle\0")?,
                ipc_close: symbol(&runtime, b"cudaIpcCloseMemHandle\0")?,
                memcpy: symbol(&runtime, b"cudaMemcpy\0")?,
                error_string: symbol(&runtime, b"cudaGetErrorString\0")?,
                address_range: symbol(&driver, b"cuMemGetAddressRange_v2\0")?,
            }
        };
        std::mem::forget(runtime);
        std::mem::forget(driver);
        Ok(api)
    }

    /// The devices this process sees.
    pub fn devices(&self) -> Result<usize, String> {
        let mut n: c_int = 0;
        // SAFETY: writes one int.
        self.check(unsafe { (self.get_device_count)(&mut n) }, "cudaGetDeviceCount")?;
        Ok(n.max(0) as usize)
    }

    fn check(&self, code: c_int, call: &str) -> Result<(), String> {
        if code == SUCCESS {
            return Ok(());
        }
        // SAFETY: the runtime returns a static string for any code.
        let text = unsafe {
            let s = (self.error_string)(code);
            match s.is_null() {
                true => "unknown error".into(),
                false => CStr::from_ptr(s).to_string_lossy().into_owned(),
            }
        };
        Err(format!("{call} failed: {text} (CUDA error {code})"))
    }

    /// The calling thread's device (CUDA keeps one per host thread).
    fn on(&self, device: usize) -> Result<(), String> {
        // SAFETY: a plain call; the id was checked against the device count.
        self.check(unsafe { (self.set_device)(device as c_int) }, "cudaSetDevice")
    }
}

#[cfg(feature = "onnx")]
fn runtime_files(explicit: &[PathBuf]) -> Vec<PathBuf> {
    use quiver_runtimes::onnx::cuda_libs;
    cuda_libs::libraries(&cuda_libs::search_dirs(explicit))
        .into_iter()
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libcudart.so."))
        })
        .collect()
}

#[cfg(not(feature = "onnx"))]
fn runtime_files(explicit: &[PathBuf]) -> Vec<PathBuf> {
    explicit.iter().map(|d| d.join("libcudart.so")).collect()
}

/// # Safety
/// `T` must be the symbol's true type.
unsafe fn symbol<T: Copy>(lib: &libloading::Library, name: &[u8]) -> Result<T, String> {
    // SAFETY: the caller names the type.
    unsafe { lib.get::<T>(name) }.map(|s| *s).map_err(|e| {
        format!(
            "the CUDA library has no {}: {e}",
            String::from_utf8_lossy(&name[..name.len() - 1])
        )
    })
}

/// One opened IPC handle: `byte_size` bytes of device memory on `device`.
pub struct DeviceMemory {
    api: Api,
    pub device: usize,
    pub byte_size: u64,
    pointer: *mut c_void,
}

// SAFETY: a device address, used only through CUDA calls that set the
// device first; closed once, on drop.
unsafe impl Send for DeviceMemory {}
unsafe impl Sync for DeviceMemory {}

impl DeviceMemory {
    /// Opens `handle` on `device`, refusing a `byte_size` larger than what
    /// is left of the exported allocation after the handle's address.
    pub fn open(api: Api, handle: &[u8], device: usize, byte_size: u64) -> Result<DeviceMemory, String> {
        let handle: [u8; HANDLE_BYTES] = handle.try_into().map_err(|_| {
            format!(
                "raw_handle is {} bytes; a cudaIpcMemHandle_t is {HANDLE_BYTES}",
                handle.len()
            )
        })?;
        let devices = api.devices()?;
        if device >= devices {
            return Err(format!(
                "device_id {device} does not exist: this server sees {devices} CUDA device(s)"
            ));
        }
        api.on(device)?;
        let mut pointer: *mut c_void = std::ptr::null_mut();
        // SAFETY: writes one pointer; the handle is read by value.
        api.check(
            unsafe { (api.ipc_open)(&mut pointer, IpcHandle(handle), LAZY_PEER_ACCESS) },
            "cudaIpcOpenMemHandle",
        )?;
        // Closed on every path from here.
        let memory = DeviceMemory {
            api,
            device,
            byte_size,
            pointer,
        };
        let (mut base, mut size) = (0u64, 0usize);
        // SAFETY: writes one address and one size.
        api.check(
            unsafe { (api.address_range)(&mut base, &mut size, pointer as u64) },
            "cuMemGetAddressRange",
        )?;
        let left = (base + size as u64).saturating_sub(pointer as u64);
        if byte_size > left {
            return Err(format!(
                "byte_size {byte_size} is larger than the exported allocation ({left} bytes from the handle's address)"
            ));
        }
        Ok(memory)
    }

    /// Copies `len` bytes at `offset` of the region to host memory.
    pub fn read(&self, offset: usize, len: usize) -> Result<Vec<u8>, String> {
        if offset as u64 + len as u64 > self.byte_size {
            return Err(format!(
                "{len} bytes at {offset} are past the region's {} bytes",
                self.byte_size
            ));
        }
        let mut out = Vec::<u8>::with_capacity(len);
        self.api.on(self.device)?;
        // SAFETY: the source lies inside the opened region (checked above
        // and against the allocation at open); the destination has `len`
        // bytes of capacity, all written by the copy before `set_len`.
        unsafe {
            let from = (self.pointer as *const u8).add(offset) as *const c_void;
            self.api.check(
                (self.api.memcpy)(out.as_mut_ptr() as *mut c_void, from, len, DEVICE_TO_HOST),
                "cudaMemcpy (device to host)",
            )?;
            out.set_len(len);
        }
        Ok(out)
    }

    /// Copies `data` into the region at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), String> {
        if offset as u64 + data.len() as u64 > self.byte_size {
            return Err(format!(
                "{} bytes at {offset} are past the region's {} bytes",
                data.len(),
                self.byte_size
            ));
        }
        self.api.on(self.device)?;
        // SAFETY: the destination lies inside the opened region; the source
        // is `data.len()` readable bytes.
        unsafe {
            let to = (self.pointer as *mut u8).add(offset) as *mut c_void;
            self.api.check(
                (self.api.memcpy)(to, data.as_ptr() as *const c_void, data.len(), HOST_TO_DEVICE),
                "cudaMemcpy (host to device)",
            )
        }
    }
}

impl Drop for DeviceMemory {
    fn drop(&mut self) {
        let closed = self.api.on(self.device).and_then(|()| {
            // SAFETY: opened by `ipc_open`, closed once.
            self.api
                .check(unsafe { (self.api.ipc_close)(self.pointer) }, "cudaIpcCloseMemHandle")
        });
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing a CUDA shared memory region");
        }
    }
}

/// Where the CUDA runtime comes from: loaded on first use, or given (tests).
pub enum Loader {
    Search(Vec<PathBuf>),
    Given(Api),
}

/// The runtime, loaded once.
pub struct Cuda {
    loader: Loader,
    api: std::sync::OnceLock<Result<Api, String>>,
}

impl Cuda {
    pub fn new(loader: Loader) -> Arc<Cuda> {
        Arc::new(Cuda {
            loader,
            api: std::sync::OnceLock::new(),
        })
    }

    pub fn api(&self) -> Result<Api, String> {
        self.api
            .get_or_init(|| match &self.loader {
                Loader::Search(dirs) => Api::load(dirs),
                Loader::Given(api) => Ok(*api),
            })
            .clone()
    }
}

/// A stand-in for the CUDA runtime over host memory, for unit tests: one
/// device; a handle's first 8 bytes are the address of a host buffer whose
/// length its next 8 bytes give. Opens and closes are counted.
#[cfg(test)]
pub mod fake {
    use std::ffi::{c_char, c_int, c_uint, c_void};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use crate::shm::cuda::{Api, HANDLE_BYTES, IpcHandle};

    const SUCCESS: c_int = 0;

    pub static OPEN: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn get_device_count(n: *mut c_int) -> c_int {
        unsafe { *n = 1 };
        SUCCESS
    }
    unsafe extern "C" fn set_device(d: c_int) -> c_int {
        if d == 0 { SUCCESS } else { 101 }
    }
    unsafe extern "C" fn ipc_open(p: *mut *mut c_void, h: IpcHandle, _: c_uint) -> c_int {
        let address = u64::from_le_bytes(h.0[..8].try_into().unwrap());
        if address == 0 {
            return 400;
        }
        OPEN.fetch_add(1, SeqCst);
        unsafe { *p = address as *mut c_void };
        SUCCESS
    }
    unsafe extern "C" fn ipc_close(_: *mut c_void) -> c_int {
        OPEN.fetch_sub(1, SeqCst);
        SUCCESS
    }
    unsafe extern "C" fn memcpy(to: *mut c_void, from: *const c_void, n: usize, _: c_int) -> c_int {
        unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, n) };
        SUCCESS
    }
    unsafe extern "C" fn error_string(_: c_int) -> *const c_char {
        c"invalid resource handle".as_ptr()
    }
    /// The handle's length is kept by [`handle`] in a table by address.
    unsafe extern "C" fn address_range(base: *mut u64, size: *mut usize, p: u64) -> c_int {
        let sizes = SIZES.lock().unwrap();
        match sizes.iter().find(|(b, n)| p >= *b && p < b + *n as u64) {
            Some((b, n)) => {
                unsafe {
                    *base = *b;
                    *size = *n;
                }
                SUCCESS
            }
            None => 1,
        }
    }

    static SIZES: std::sync::Mutex<Vec<(u64, usize)>> = std::sync::Mutex::new(Vec::new());

    pub fn api() -> Api {
        Api {
            get_device_count,
            set_device,
            ipc_open,
            ipc_close,
            memcpy,
            error_string,
            address_range,
        }
    }

    /// The handle of `buffer` (which must outlive its use).
    pub fn handle(buffer: &mut [u8]) -> Vec<u8> {
        let address = buffer.as_mut_ptr() as u64;
        SIZES.lock().unwrap().push((address, buffer.len()));
        let mut h = vec![0u8; HANDLE_BYTES];
        h[..8].copy_from_slice(&address.to_le_bytes());
        h
    }
}

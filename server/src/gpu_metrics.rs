//! GPU metrics under Triton's names and label (`gpu_uuid`), so the Grafana
//! dashboards built for Triton read quiver unchanged:
//! `nv_gpu_utilization` (0 to 1), `nv_gpu_memory_total_bytes`,
//! `nv_gpu_memory_used_bytes`, `nv_gpu_power_usage` and `nv_gpu_power_limit`
//! (watts), and `nv_energy_consumption` (joules since quiver started).
//!
//! They are read through NVML, `libnvidia-ml.so.1`, which the NVIDIA driver
//! installs; it is opened at run time, so quiver builds and runs without it.
//! On a machine without the driver, or without a GPU, none of these metrics
//! exist (nothing is exported as zero) and nothing is logged above debug.
use std::ffi::{CStr, c_char, c_int, c_uint};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge};

pub const UTILIZATION: &str = "nv_gpu_utilization";
pub const MEMORY_TOTAL: &str = "nv_gpu_memory_total_bytes";
pub const MEMORY_USED: &str = "nv_gpu_memory_used_bytes";
pub const POWER_USAGE: &str = "nv_gpu_power_usage";
pub const POWER_LIMIT: &str = "nv_gpu_power_limit";
pub const ENERGY: &str = "nv_energy_consumption";

type Device = *mut std::ffi::c_void;

/// A device handle carried to the poller thread.
struct Handle(Device);

// SAFETY: NVML device handles are valid on any thread until nvmlShutdown,
// which quiver never calls.
unsafe impl Send for Handle {}

#[repr(C)]
#[derive(Default)]
struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

#[repr(C)]
#[derive(Default)]
struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

/// The NVML entry points quiver reads, resolved once.
struct Nvml {
    _lib: libloading::Library,
    count: unsafe extern "C" fn(*mut c_uint) -> c_int,
    handle: unsafe extern "C" fn(c_uint, *mut Device) -> c_int,
    uuid: unsafe extern "C" fn(Device, *mut c_char, c_uint) -> c_int,
    utilization: unsafe extern "C" fn(Device, *mut Utilization) -> c_int,
    memory: unsafe extern "C" fn(Device, *mut Memory) -> c_int,
    power: unsafe extern "C" fn(Device, *mut c_uint) -> c_int,
    power_limit: unsafe extern "C" fn(Device, *mut c_uint) -> c_int,
    energy: unsafe extern "C" fn(Device, *mut u64) -> c_int,
}

// SAFETY: NVML is thread-safe; the handles are only used from the poller.
unsafe impl Send for Nvml {}

const SUCCESS: c_int = 0;

impl Nvml {
    fn open(library: &Path) -> Result<Nvml, String> {
        // SAFETY: NVML's initialiser has no preconditions; every symbol is
        // looked up with the signature NVML's header gives it.
        unsafe {
            let lib = libloading::Library::new(library).map_err(|e| e.to_string())?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get($name).map_err(|e| format!("{e}"))?
                };
            }
            let init: unsafe extern "C" fn() -> c_int = sym!(b"nvmlInit_v2\0");
            let status = init();
            if status != SUCCESS {
                return Err(format!("nvmlInit_v2 returned {status}"));
            }
            Ok(Nvml {
                count: sym!(b"nvmlDeviceGetCount_v2\0"),
                handle: sym!(b"nvmlDeviceGetHandleByIndex_v2\0"),
                uuid: sym!(b"nvmlDeviceGetUUID\0"),
                utilization: sym!(b"nvmlDeviceGetUtilizationRates\0"),
                memory: sym!(b"nvmlDeviceGetMemoryInfo\0"),
                power: sym!(b"nvmlDeviceGetPowerUsage\0"),
                power_limit: sym!(b"nvmlDeviceGetPowerManagementLimit\0"),
                energy: sym!(b"nvmlDeviceGetTotalEnergyConsumption\0"),
                _lib: lib,
            })
        }
    }

    /// Every GPU with its UUID ("GPU-…").
    fn devices(&self) -> Vec<(Device, String)> {
        let mut count: c_uint = 0;
        // SAFETY: out-pointers to locals of the types NVML writes.
        if unsafe { (self.count)(&mut count) } != SUCCESS {
            return Vec::new();
        }
        (0..count)
            .filter_map(|i| {
                let mut device: Device = std::ptr::null_mut();
                let mut buf = [0 as c_char; 96];
                // SAFETY: as above; NVML writes a NUL-terminated UUID of at
                // most 96 bytes (NVML_DEVICE_UUID_V2_BUFFER_SIZE).
                unsafe {
                    if (self.handle)(i, &mut device) != SUCCESS
                        || (self.uuid)(device, buf.as_mut_ptr(), buf.len() as c_uint) != SUCCESS
                    {
                        return None;
                    }
                    Some((device, CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()))
                }
            })
            .collect()
    }
}

/// One GPU's readings; a field is `None` where the GPU does not report it.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    utilization: Option<f64>,
    memory: Option<(u64, u64)>,
    power_watts: Option<f64>,
    power_limit_watts: Option<f64>,
    energy_millijoules: Option<u64>,
}

fn read(nvml: &Nvml, device: Device) -> Reading {
    let mut r = Reading::default();
    let mut u = Utilization::default();
    let mut m = Memory::default();
    let mut milliwatts: c_uint = 0;
    let mut limit: c_uint = 0;
    let mut energy: u64 = 0;
    // SAFETY: out-pointers to locals of the types NVML writes.
    unsafe {
        if (nvml.utilization)(device, &mut u) == SUCCESS {
            r.utilization = Some(f64::from(u.gpu) / 100.0);
        }
        if (nvml.memory)(device, &mut m) == SUCCESS {
            r.memory = Some((m.total, m.used));
        }
        if (nvml.power)(device, &mut milliwatts) == SUCCESS {
            r.power_watts = Some(f64::from(milliwatts) / 1000.0);
        }
        if (nvml.power_limit)(device, &mut limit) == SUCCESS {
            r.power_limit_watts = Some(f64::from(limit) / 1000.0);
        }
        if (nvml.energy)(device, &mut energy) == SUCCESS {
            r.energy_millijoules = Some(energy);
        }
    }
    r
}

/// Starts the poller once per process: every `interval`, each GPU's
/// readings become the metrics above. `library` overrides where NVML is
/// looked for (default: the driver's `libnvidia-ml.so.1` on the loader's
/// path). Returns how many GPUs are reported (0: NVML or GPUs absent).
pub fn start(interval: Duration, library: Option<&Path>) -> usize {
    static STARTED: OnceLock<usize> = OnceLock::new();
    *STARTED.get_or_init(|| {
        let library = library.unwrap_or(Path::new("libnvidia-ml.so.1"));
        let nvml = match Nvml::open(library) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(library = %library.display(), error = %e, "no NVML: GPU metrics are off");
                return 0;
            }
        };
        let devices = nvml.devices();
        if devices.is_empty() {
            tracing::debug!("NVML sees no GPU: GPU metrics are off");
            return 0;
        }
        let count = devices.len();
        let uuids: Vec<&str> = devices.iter().map(|(_, u)| u.as_str()).collect();
        tracing::info!(gpus = %uuids.join(", "), "GPU metrics on");
        let devices: Vec<(Handle, String)> = devices.into_iter().map(|(d, u)| (Handle(d), u)).collect();
        let spawned = std::thread::Builder::new().name("gpu-metrics".into()).spawn(move || {
            // Energy is reported since start, as Triton does.
            let mut start_energy: Vec<Option<u64>> = vec![None; devices.len()];
            loop {
                for (i, (device, uuid)) in devices.iter().enumerate() {
                    let r = read(&nvml, device.0);
                    let label = [("gpu_uuid", uuid.clone())];
                    if let Some(u) = r.utilization {
                        gauge!(UTILIZATION, &label).set(u);
                    }
                    if let Some((total, used)) = r.memory {
                        gauge!(MEMORY_TOTAL, &label).set(total as f64);
                        gauge!(MEMORY_USED, &label).set(used as f64);
                    }
                    if let Some(w) = r.power_watts {
                        gauge!(POWER_USAGE, &label).set(w);
                    }
                    if let Some(w) = r.power_limit_watts {
                        gauge!(POWER_LIMIT, &label).set(w);
                    }
                    if let Some(mj) = r.energy_millijoules {
                        let first = *start_energy[i].get_or_insert(mj);
                        counter!(ENERGY, &label).absolute(mj.saturating_sub(first) / 1000);
                    }
                }
                std::thread::sleep(interval);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the GPU metrics thread");
            return 0;
        }
        count
    })
}

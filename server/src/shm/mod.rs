//! Triton's system shared memory extension: clients register regions of
//! POSIX shared memory objects by name, then send inputs that live in a
//! region and ask for outputs to be written into one, so large tensors skip
//! the socket. A region is mapped once, at registration; an input is a
//! zero-copy slice of the mapping that the model reads directly, and the
//! mapping stays alive while any request holds such a slice, even after the
//! region is unregistered. Every offset and size is checked against the
//! region; a shrunk object is caught by the guard in [`mapping`].
//!
//! CUDA shared memory regions ([`cuda`]) share the names: a name is one
//! region of either kind, as in Triton. Their inputs are copied from the
//! device and their outputs to it. Where the CUDA runtime or a device is
//! missing, registering one says so (not "unimplemented": the extension is
//! known, the device is missing).
pub mod cuda;
pub mod mapping;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quiver_engine::request::{InferRequest, InferResponse, InputGuard, ShmRef};

use crate::error::{Error, ErrorKind, Result};
use mapping::Mapping;

/// A registered region.
pub struct Region {
    pub name: String,
    pub byte_size: u64,
    memory: Memory,
}

enum Memory {
    /// `offset` into POSIX shared memory object `key`, mapped.
    System { key: String, offset: u64, map: Mapping },
    /// Shared with the copies in flight, which keep it open.
    Cuda(Arc<cuda::DeviceMemory>),
}

impl Region {
    fn is_cuda(&self) -> bool {
        matches!(self.memory, Memory::Cuda(_))
    }

    /// A system region whose object shrank under it.
    fn poisoned(&self) -> bool {
        match &self.memory {
            Memory::System { map, .. } => map.poisoned(),
            Memory::Cuda(_) => false,
        }
    }

    fn key(&self) -> &str {
        match &self.memory {
            Memory::System { key, .. } => key,
            Memory::Cuda(_) => "",
        }
    }
}

/// A region as the status endpoints report it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RegionStatus {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
}

/// A CUDA region as the status endpoints report it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CudaRegionStatus {
    pub name: String,
    pub device_id: u64,
    pub byte_size: u64,
}

/// The registered shared memory regions, system and CUDA.
pub struct Regions {
    regions: Mutex<BTreeMap<String, Arc<Region>>>,
    /// Key prefixes a region may use (`--shared-memory-key-prefix`); empty:
    /// every key, as Triton allows.
    allowed: Vec<String>,
    cuda: Arc<cuda::Cuda>,
    /// The host bytes one request's CUDA inputs may be copied into: what
    /// the request could have sent in its body.
    max_copy_bytes: usize,
}

impl Regions {
    pub fn new(allowed: Vec<String>, cuda: cuda::Loader, max_copy_bytes: usize) -> Regions {
        Regions {
            regions: Mutex::new(BTreeMap::new()),
            allowed,
            cuda: cuda::Cuda::new(cuda),
            max_copy_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Region>>> {
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Maps `byte_size` bytes at `offset` of object `key` as region `name`.
    pub fn register(&self, name: &str, key: &str, offset: u64, byte_size: u64) -> Result<()> {
        let refuse = |m: String| Error::invalid(format!("cannot register shared memory region '{name}': {m}"));
        if name.is_empty() {
            return Err(Error::invalid("a shared memory region needs a name"));
        }
        check_key(key).map_err(refuse)?;
        if !self.allowed.is_empty() && !self.allowed.iter().any(|p| key.starts_with(p.as_str())) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "cannot register shared memory region '{name}': key '{key}' is outside the allowed prefixes ({})",
                    self.allowed.join(", ")
                ),
            ));
        }
        // Checked before mapping, and again under the lock after.
        if self.lock().contains_key(name) {
            return Err(already(name));
        }
        let map = Mapping::open(key, offset, byte_size).map_err(refuse)?;
        self.insert(Region {
            name: name.to_owned(),
            byte_size,
            memory: Memory::System {
                key: key.to_owned(),
                offset,
                map,
            },
        })?;
        tracing::info!(region = name, key, offset, byte_size, "shared memory region registered");
        Ok(())
    }

    /// Opens the CUDA IPC handle `handle` (a `cudaIpcMemHandle_t`'s 64
    /// bytes) on device `device_id` as region `name` of `byte_size` bytes,
    /// on a blocking thread: the first call initialises CUDA (up to a
    /// second).
    pub async fn register_cuda(&self, name: &str, handle: Vec<u8>, device_id: i64, byte_size: u64) -> Result<()> {
        let refuse = |m: String| Error::invalid(format!("cannot register CUDA shared memory region '{name}': {m}"));
        if name.is_empty() {
            return Err(Error::invalid("a shared memory region needs a name"));
        }
        if self.lock().contains_key(name) {
            return Err(already(name));
        }
        let device = usize::try_from(device_id).map_err(|_| refuse(format!("device_id {device_id} is negative")))?;
        let cuda = Arc::clone(&self.cuda);
        let opened = blocking(move || {
            let api = cuda.api().map_err(|e| cuda_unavailable(&e))?;
            Ok(cuda::DeviceMemory::open(api, &handle, device, byte_size))
        })
        .await?;
        self.insert(Region {
            name: name.to_owned(),
            byte_size,
            memory: Memory::Cuda(Arc::new(opened.map_err(refuse)?)),
        })?;
        tracing::info!(region = name, device, byte_size, "CUDA shared memory region registered");
        Ok(())
    }

    fn insert(&self, region: Region) -> Result<()> {
        let mut regions = self.lock();
        if regions.contains_key(&region.name) {
            // The region is closed (unmapped) as it drops, outside the lock.
            drop(regions);
            return Err(already(&region.name));
        }
        regions.insert(region.name.clone(), Arc::new(region));
        Ok(())
    }

    /// Unregisters system region `name`, or every system region. Requests
    /// using a region keep their mapping until they finish. An unknown
    /// name is no error, as in Triton.
    pub fn unregister(&self, name: Option<&str>) {
        self.remove(name, false);
    }

    /// [`Regions::unregister`] for CUDA regions.
    pub fn unregister_cuda(&self, name: Option<&str>) {
        self.remove(name, true);
    }

    fn remove(&self, name: Option<&str>, cuda: bool) {
        let mut regions = self.lock();
        // Dropped (unmapped, closed) after the lock.
        let gone: Vec<Arc<Region>> = match name {
            Some(n) => match regions.get(n) {
                Some(r) if r.is_cuda() == cuda => regions.remove(n).into_iter().collect(),
                _ => Vec::new(),
            },
            None => {
                let names: Vec<String> = regions
                    .values()
                    .filter(|r| r.is_cuda() == cuda)
                    .map(|r| r.name.clone())
                    .collect();
                names.iter().filter_map(|n| regions.remove(n)).collect()
            }
        };
        drop(regions);
        drop(gone);
    }

    pub fn status(&self, name: Option<&str>) -> Result<Vec<RegionStatus>> {
        self.list(name, false, |r| match &r.memory {
            Memory::System { key, offset, .. } => Some(RegionStatus {
                name: r.name.clone(),
                key: key.clone(),
                offset: *offset,
                byte_size: r.byte_size,
            }),
            Memory::Cuda(_) => None,
        })
    }

    pub fn cuda_status(&self, name: Option<&str>) -> Result<Vec<CudaRegionStatus>> {
        self.list(name, true, |r| match &r.memory {
            Memory::Cuda(d) => Some(CudaRegionStatus {
                name: r.name.clone(),
                device_id: d.device as u64,
                byte_size: r.byte_size,
            }),
            Memory::System { .. } => None,
        })
    }

    /// The regions of one kind (`status` answers `None` for the other).
    fn list<T>(&self, name: Option<&str>, cuda: bool, status: impl Fn(&Region) -> Option<T>) -> Result<Vec<T>> {
        let regions = self.lock();
        match name {
            None => Ok(regions.values().filter_map(|r| status(r)).collect()),
            Some(n) => regions.get(n).and_then(|r| status(r)).map(|s| vec![s]).ok_or_else(|| {
                let kind = if cuda { "CUDA" } else { "system" };
                Error::not_found(format!("no {kind} shared memory region '{n}' is registered"))
            }),
        }
    }

    /// `what` names the tensor in an error (formatted only then).
    fn get(&self, what: impl Fn() -> String, r: &ShmRef) -> Result<Arc<Region>> {
        let region = self.lock().get(&r.region).cloned().ok_or_else(|| {
            Error::invalid(format!(
                "{}: shared memory region '{}' is not registered",
                what(),
                r.region
            ))
        })?;
        if region.poisoned() {
            return Err(truncated(&region));
        }
        let fits = r
            .offset
            .checked_add(r.byte_size)
            .is_some_and(|end| end <= region.byte_size);
        if !fits {
            return Err(Error::invalid(format!(
                "{}: shared_memory_offset {} + shared_memory_byte_size {} is past the end of region '{}' ({} bytes)",
                what(),
                r.offset,
                r.byte_size,
                region.name,
                region.byte_size
            )));
        }
        Ok(region)
    }

    /// Fills the request's shared memory inputs with their regions' bytes
    /// (zero-copy for system regions, copied from the device for CUDA ones)
    /// and takes hold of the regions its outputs go to. Nothing to do, and
    /// no lock taken, for a request that uses none.
    pub async fn attach(&self, req: &mut InferRequest) -> Result<Attached> {
        let mut attached = Attached::default();
        let mut from_device = Vec::new();
        for (i, r) in std::mem::take(&mut req.shared_memory) {
            let input = &mut req.inputs[i];
            let region = self.get(|| format!("input '{}'", input.name), &r)?;
            let (start, len) = (r.offset as usize, r.byte_size as usize);
            if let Memory::Cuda(device) = &region.memory {
                from_device.push((
                    i,
                    input.name.clone(),
                    region.name.clone(),
                    Arc::clone(device),
                    start,
                    len,
                ));
                continue;
            }
            input.data = Bytes::from_owner(Slice {
                region: Arc::clone(&region),
                start,
                len,
            });
            req.guards.push(Arc::clone(&region) as Arc<dyn InputGuard>);
            attached.inputs.push(region);
        }
        let copied: usize = from_device.iter().map(|(.., len)| len).sum();
        if copied > self.max_copy_bytes {
            return Err(Error::invalid(format!(
                "inputs in CUDA shared memory: {copied} bytes to copy to the host, over the {} a request may \
                 carry (--grpc-max-message-bytes, --http-max-body-bytes)",
                self.max_copy_bytes
            )));
        }
        if !from_device.is_empty() {
            for (i, data) in copy_from_devices(from_device).await? {
                req.inputs[i].data = Bytes::from(data);
            }
        }
        for o in &req.outputs {
            if let Some(r) = &o.shared_memory {
                let region = self.get(|| format!("output '{}'", o.name), r)?;
                attached.outputs.push((o.name.clone(), r.clone(), region));
            }
        }
        Ok(attached)
    }
}

/// The regions one request uses.
#[derive(Default, Debug)]
pub struct Attached {
    inputs: Vec<Arc<Region>>,
    outputs: Vec<(String, ShmRef, Arc<Region>)>,
}

impl Attached {
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.outputs.is_empty()
    }

    /// After the model ran: fails if an input's region shrank while the
    /// model read it, else writes the outputs placed in regions and returns
    /// where they went (with the bytes written) for the answer.
    pub async fn finish(self, resp: &mut InferResponse) -> Result<Vec<(String, ShmRef)>> {
        if let Some(r) = self.inputs.iter().find(|r| r.poisoned()) {
            return Err(truncated(r));
        }
        let mut placed = Vec::with_capacity(self.outputs.len());
        let mut to_device = Vec::new();
        for (name, r, region) in self.outputs {
            let Some(t) = resp.outputs.iter_mut().find(|t| t.name == name) else {
                continue;
            };
            let need = t.data.len() as u64;
            if need > r.byte_size {
                return Err(Error::invalid(format!(
                    "output '{name}' is {need} bytes but its shared_memory_byte_size in region '{}' is {}",
                    r.region, r.byte_size
                )));
            }
            match &region.memory {
                Memory::System { map, .. } => {
                    map.write(r.offset as usize, &t.data);
                    if map.poisoned() {
                        return Err(truncated(&region));
                    }
                }
                Memory::Cuda(device) => to_device.push((
                    name.clone(),
                    region.name.clone(),
                    Arc::clone(device),
                    r.offset as usize,
                    t.data.clone(),
                )),
            }
            t.data = Bytes::new();
            placed.push((name, ShmRef { byte_size: need, ..r }));
        }
        if !to_device.is_empty() {
            copy_to_devices(to_device).await?;
        }
        Ok(placed)
    }
}

/// An input copied from the device: its index and name, its region's
/// name, the device memory, offset and length.
type FromDevice = (usize, String, String, Arc<cuda::DeviceMemory>, usize, usize);
/// An output copied to the device: its name, its region's name, the device
/// memory, the offset and the bytes.
type ToDevice = (String, String, Arc<cuda::DeviceMemory>, usize, Bytes);

/// Copies CUDA regions' input bytes to host memory, on a blocking thread.
async fn copy_from_devices(inputs: Vec<FromDevice>) -> Result<Vec<(usize, Vec<u8>)>> {
    blocking(move || {
        inputs
            .into_iter()
            .map(|(i, input, region, device, start, len)| {
                device.read(start, len).map(|data| (i, data)).map_err(|e| {
                    Error::invalid(format!(
                        "input '{input}': cannot read CUDA shared memory region '{region}': {e}"
                    ))
                })
            })
            .collect()
    })
    .await
}

/// Writes outputs into CUDA regions, on a blocking thread.
async fn copy_to_devices(outputs: Vec<ToDevice>) -> Result<()> {
    blocking(move || {
        for (output, region, device, offset, data) in outputs {
            device.write(offset, &data).map_err(|e| {
                Error::invalid(format!(
                    "output '{output}': cannot write CUDA shared memory region '{region}': {e}"
                ))
            })?;
        }
        Ok(())
    })
    .await
}

/// CUDA work (loading, opening, copies) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("a CUDA call stopped: {e}")))?
}

/// A region truncated while the model read it fails the request in the
/// engine, before the answer (computed on zero pages) is cached or shown to
/// a tap as a success.
impl InputGuard for Region {
    fn check(&self) -> Result<()> {
        match self.poisoned() {
            true => Err(truncated(self)),
            false => Ok(()),
        }
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("key", &self.key())
            .field("cuda", &self.is_cuda())
            .finish_non_exhaustive()
    }
}

/// An input's bytes inside a mapped region; holding it keeps the mapping.
struct Slice {
    region: Arc<Region>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        match &self.region.memory {
            Memory::System { map, .. } => &map.bytes()[self.start..self.start + self.len],
            // Slices are made of system regions only.
            Memory::Cuda(_) => &[],
        }
    }
}

fn already(name: &str) -> Error {
    Error::new(
        ErrorKind::NotAllowed,
        format!("shared memory region '{name}' is registered already; unregister it first"),
    )
}

fn truncated(r: &Region) -> Error {
    Error::invalid(format!(
        "shared memory region '{}' (key '{}') shrank below its registered size while in use: \
         its data is lost; recreate the object and register it again",
        r.name,
        r.key()
    ))
}

/// A key as `shm_open` names objects: one leading `/` at most, no other
/// slash (no path into another directory), printable, short.
fn check_key(key: &str) -> std::result::Result<(), String> {
    let body = key.strip_prefix('/').unwrap_or(key);
    if body.is_empty() || body.len() > 255 {
        return Err(format!(
            "key '{key}' must name a shared memory object (1 to 255 characters)"
        ));
    }
    if body == "." || body == ".." || body.chars().any(|c| c == '/' || c.is_control()) {
        return Err(format!(
            "key '{key}' is not a shared memory object name (a leading '/', then no '/')"
        ));
    }
    Ok(())
}

/// The answer to a CUDA region's registration where CUDA is missing.
fn cuda_unavailable(why: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "CUDA shared memory needs the CUDA runtime and a CUDA device, and this server has none: {why}. \
             Point --cuda-library-path at CUDA's libraries, or use system shared memory \
             (/v2/systemsharedmemory) instead"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_engine::request::RequestedOutput;
    use quiver_runtimes::{DataType, Tensor};

    #[test]
    fn keys_cannot_leave_the_shared_memory_directory() {
        for bad in ["", "/", "/../etc/passwd", "/a/b", "..", "/.."] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        for good in ["/input_simple", "output0", "/quiver.region-1"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
    }

    fn object(name: &str, len: usize) {
        let c = std::ffi::CString::new(name).unwrap();
        unsafe {
            let fd = libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o600);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
            libc::close(fd);
        }
    }

    fn unlink(name: &str) {
        let c = std::ffi::CString::new(name).unwrap();
        unsafe { libc::shm_unlink(c.as_ptr()) };
    }

    fn mapped(r: &Region) -> &[u8] {
        match &r.memory {
            Memory::System { map, .. } => map.bytes(),
            Memory::Cuda(_) => panic!("not a system region"),
        }
    }

    #[tokio::test]
    async fn inputs_are_slices_of_the_region_and_outputs_are_written_back() {
        let key = format!("/quiver-regions-{}", std::process::id());
        object(&key, 64);
        let regions = Regions::new(vec![], cuda::Loader::Search(vec![]), 1 << 20);
        regions.register("r", &key, 0, 64).unwrap();
        assert_eq!(
            regions.register("r", &key, 0, 8).unwrap_err().kind,
            ErrorKind::NotAllowed
        );
        let at = |offset, byte_size| ShmRef {
            region: "r".into(),
            offset,
            byte_size,
        };
        let mut req = request(at(8, 8), at(32, 16));
        let attached = regions.attach(&mut req).await.unwrap();
        assert_eq!(req.inputs[0].data.len(), 8);
        assert_eq!(req.inputs[0].data.as_ptr(), unsafe {
            mapped(&regions.lock()["r"]).as_ptr().add(8)
        });
        let mut resp = answer(&[1, 2, 3, 4]);
        let placed = attached.finish(&mut resp).await.unwrap();
        assert_eq!(placed, vec![("y".to_string(), at(32, 4))]);
        assert!(resp.outputs[0].data.is_empty());
        assert_eq!(&mapped(&regions.lock()["r"])[32..36], &[1, 2, 3, 4]);
        // Unregistered while the input slice is held: the slice stays valid.
        let held = req.inputs[0].data.clone();
        regions.unregister(Some("r"));
        assert_eq!(held.len(), 8);
        assert!(regions.status(None).unwrap().is_empty());
        drop(held);
        unlink(&key);
    }

    fn request(input_at: ShmRef, output_at: ShmRef) -> InferRequest {
        InferRequest {
            inputs: vec![Tensor {
                name: "x".into(),
                datatype: DataType::Uint8,
                shape: vec![input_at.byte_size as i64],
                data: Bytes::new(),
            }],
            outputs: vec![RequestedOutput {
                name: "y".into(),
                shared_memory: Some(output_at),
                ..Default::default()
            }],
            shared_memory: vec![(0, input_at)],
            ..Default::default()
        }
    }

    fn answer(data: &'static [u8]) -> InferResponse {
        InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: String::new(),
            outputs: vec![Tensor {
                name: "y".into(),
                datatype: DataType::Uint8,
                shape: vec![data.len() as i64],
                data: Bytes::from_static(data),
            }],
        }
    }

    #[tokio::test]
    async fn cuda_regions_are_copied_from_and_to_the_device_and_checked() {
        let mut device: Vec<u8> = (0..64).collect();
        let handle = cuda::fake::handle(&mut device);
        let regions = Regions::new(vec![], cuda::Loader::Given(cuda::fake::api()), 16);
        let opened = cuda::fake::OPEN.load(std::sync::atomic::Ordering::SeqCst);
        // The handle's size, the device and the allocation's size are checked.
        let err = regions
            .register_cuda("g", handle[..60].to_vec(), 0, 64)
            .await
            .unwrap_err();
        assert!(err.message.contains("raw_handle is 60 bytes"), "{}", err.message);
        let err = regions.register_cuda("g", handle.clone(), 1, 64).await.unwrap_err();
        assert!(err.message.contains("device_id 1 does not exist"), "{}", err.message);
        let err = regions.register_cuda("g", handle.clone(), -1, 64).await.unwrap_err();
        assert!(err.message.contains("negative"), "{}", err.message);
        let err = regions.register_cuda("g", handle.clone(), 0, 65).await.unwrap_err();
        assert!(
            err.message.contains("larger than the exported allocation"),
            "{}",
            err.message
        );
        let err = regions.register_cuda("g", vec![0; 64], 0, 8).await.unwrap_err();
        assert!(err.message.contains("invalid resource handle"), "{}", err.message);
        regions.register_cuda("g", handle.clone(), 0, 64).await.unwrap();
        assert_eq!(
            regions
                .register_cuda("g", handle.clone(), 0, 64)
                .await
                .unwrap_err()
                .kind,
            ErrorKind::NotAllowed
        );
        // Refused registrations closed what they opened.
        assert_eq!(cuda::fake::OPEN.load(std::sync::atomic::Ordering::SeqCst), opened + 1);
        let status = regions.cuda_status(None).unwrap();
        assert_eq!(
            status,
            vec![CudaRegionStatus {
                name: "g".into(),
                device_id: 0,
                byte_size: 64
            }]
        );
        // The kinds' endpoints keep to their own regions.
        assert!(regions.status(None).unwrap().is_empty());
        assert_eq!(regions.status(Some("g")).unwrap_err().kind, ErrorKind::NotFound);
        regions.unregister(None);
        regions.unregister(Some("g"));
        assert_eq!(regions.cuda_status(Some("g")).unwrap().len(), 1);

        let at = |offset, byte_size| ShmRef {
            region: "g".into(),
            offset,
            byte_size,
        };
        let mut req = request(at(8, 4), at(32, 16));
        let attached = regions.attach(&mut req).await.unwrap();
        assert_eq!(&req.inputs[0].data[..], &[8, 9, 10, 11]);
        let placed = attached.finish(&mut answer(&[7, 7, 7])).await.unwrap();
        assert_eq!(placed, vec![("y".to_string(), at(32, 3))]);
        // Past the end, for an input and for an output.
        let mut req = request(at(60, 8), at(0, 4));
        let err = regions.attach(&mut req).await.unwrap_err();
        assert!(err.message.contains("past the end of region 'g'"), "{}", err.message);
        let mut req = request(at(0, 4), at(62, 4));
        let err = regions.attach(&mut req).await.unwrap_err();
        assert!(err.message.contains("output 'y'"), "{}", err.message);
        // More than a request may carry, copied to the host.
        let mut req = request(at(0, 17), at(32, 4));
        let err = regions.attach(&mut req).await.unwrap_err();
        assert!(err.message.contains("17 bytes to copy"), "{}", err.message);
        // An answer larger than its output's place.
        let mut req = request(at(0, 4), at(60, 2));
        let attached = regions.attach(&mut req).await.unwrap();
        assert!(attached.finish(&mut answer(&[1, 2, 3])).await.is_err());

        regions.unregister_cuda(None);
        assert!(regions.cuda_status(None).unwrap().is_empty());
        assert_eq!(cuda::fake::OPEN.load(std::sync::atomic::Ordering::SeqCst), opened);
        assert_eq!(&device[32..36], &[7, 7, 7, 35]);
    }
}

//! Triton's system shared memory extension: clients register regions of
//! POSIX shared memory objects by name, then send inputs that live in a
//! region and ask for outputs to be written into one, so large tensors skip
//! the socket. A region is mapped once, at registration; an input is a
//! zero-copy slice of the mapping that the model reads directly, and the
//! mapping stays alive while any request holds such a slice, even after the
//! region is unregistered. Every offset and size is checked against the
//! region; a shrunk object is caught by the guard in [`mapping`].
//!
//! CUDA shared memory needs CUDA: this build has none, and its endpoints say
//! so (not "unimplemented": the extension is known, the device is missing).
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
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
    map: Mapping,
}

/// A region as the status endpoints report it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RegionStatus {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
}

/// The registered system shared memory regions.
pub struct Regions {
    regions: Mutex<BTreeMap<String, Arc<Region>>>,
    /// Key prefixes a region may use (`--shared-memory-key-prefix`); empty:
    /// every key, as Triton allows.
    allowed: Vec<String>,
}

impl Regions {
    pub fn new(allowed: Vec<String>) -> Regions {
        Regions {
            regions: Mutex::new(BTreeMap::new()),
            allowed,
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
        let region = Arc::new(Region {
            name: name.to_owned(),
            key: key.to_owned(),
            offset,
            byte_size,
            map,
        });
        let mut regions = self.lock();
        if regions.contains_key(name) {
            return Err(already(name));
        }
        regions.insert(name.to_owned(), region);
        tracing::info!(region = name, key, offset, byte_size, "shared memory region registered");
        Ok(())
    }

    /// Unregisters region `name`, or every region. Requests using a region
    /// keep their mapping until they finish. An unknown name is no error,
    /// as in Triton.
    pub fn unregister(&self, name: Option<&str>) {
        let mut regions = self.lock();
        match name {
            Some(n) => {
                regions.remove(n);
            }
            None => regions.clear(),
        }
    }

    pub fn status(&self, name: Option<&str>) -> Result<Vec<RegionStatus>> {
        let regions = self.lock();
        let status = |r: &Region| RegionStatus {
            name: r.name.clone(),
            key: r.key.clone(),
            offset: r.offset,
            byte_size: r.byte_size,
        };
        match name {
            None => Ok(regions.values().map(|r| status(r)).collect()),
            Some(n) => regions
                .get(n)
                .map(|r| vec![status(r)])
                .ok_or_else(|| Error::not_found(format!("no shared memory region '{n}' is registered"))),
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
        if region.map.poisoned() {
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
    /// (zero-copy) and takes hold of the regions its outputs go to. Nothing
    /// to do, and no lock taken, for a request that uses none.
    pub fn attach(&self, req: &mut InferRequest) -> Result<Attached> {
        let mut attached = Attached::default();
        for (i, r) in std::mem::take(&mut req.shared_memory) {
            let input = &mut req.inputs[i];
            let region = self.get(|| format!("input '{}'", input.name), &r)?;
            let (start, len) = (r.offset as usize, r.byte_size as usize);
            input.data = Bytes::from_owner(Slice {
                region: Arc::clone(&region),
                start,
                len,
            });
            req.guards.push(Arc::clone(&region) as Arc<dyn InputGuard>);
            attached.inputs.push(region);
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
#[derive(Default)]
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
    pub fn finish(self, resp: &mut InferResponse) -> Result<Vec<(String, ShmRef)>> {
        if let Some(r) = self.inputs.iter().find(|r| r.map.poisoned()) {
            return Err(truncated(r));
        }
        let mut placed = Vec::with_capacity(self.outputs.len());
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
            region.map.write(r.offset as usize, &t.data);
            if region.map.poisoned() {
                return Err(truncated(&region));
            }
            t.data = Bytes::new();
            placed.push((name, ShmRef { byte_size: need, ..r }));
        }
        Ok(placed)
    }
}

/// A region truncated while the model read it fails the request in the
/// engine, before the answer (computed on zero pages) is cached or shown to
/// a tap as a success.
impl InputGuard for Region {
    fn check(&self) -> Result<()> {
        match self.map.poisoned() {
            true => Err(truncated(self)),
            false => Ok(()),
        }
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("key", &self.key)
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
        &self.region.map.bytes()[self.start..self.start + self.len]
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
        r.name, r.key
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

/// The message the CUDA shared memory endpoints answer in a build without
/// CUDA.
pub fn cuda_unavailable() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "CUDA shared memory needs a GPU build of quiver with CUDA devices; this server has none. \
         Use system shared memory (/v2/systemsharedmemory) instead",
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

    #[test]
    fn inputs_are_slices_of_the_region_and_outputs_are_written_back() {
        let key = format!("/quiver-regions-{}", std::process::id());
        object(&key, 64);
        let regions = Regions::new(vec![]);
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
        let mut req = InferRequest {
            inputs: vec![Tensor {
                name: "x".into(),
                datatype: DataType::Uint8,
                shape: vec![8],
                data: Bytes::new(),
            }],
            outputs: vec![RequestedOutput {
                name: "y".into(),
                shared_memory: Some(at(32, 16)),
                ..Default::default()
            }],
            shared_memory: vec![(0, at(8, 8))],
            ..Default::default()
        };
        let attached = regions.attach(&mut req).unwrap();
        assert_eq!(req.inputs[0].data.len(), 8);
        assert_eq!(req.inputs[0].data.as_ptr(), unsafe {
            regions.lock()["r"].map.bytes().as_ptr().add(8)
        });
        let mut resp = InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: String::new(),
            outputs: vec![Tensor {
                name: "y".into(),
                datatype: DataType::Uint8,
                shape: vec![4],
                data: Bytes::from_static(&[1, 2, 3, 4]),
            }],
        };
        let placed = attached.finish(&mut resp).unwrap();
        assert_eq!(placed, vec![("y".to_string(), at(32, 4))]);
        assert!(resp.outputs[0].data.is_empty());
        assert_eq!(&regions.lock()["r"].map.bytes()[32..36], &[1, 2, 3, 4]);
        // Unregistered while the input slice is held: the slice stays valid.
        let held = req.inputs[0].data.clone();
        regions.unregister(Some("r"));
        assert_eq!(held.len(), 8);
        assert!(regions.status(None).unwrap().is_empty());
        drop(held);
        unlink(&key);
    }
}

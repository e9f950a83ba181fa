//! ONNX Runtime through `ort` with `load-dynamic`: the shared library is found
//! at start-up (see [`init`]), never downloaded at build time.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use ort::ep::{ArbitrarilyConfigurableExecutionProvider, CUDA, ExecutionProvider, TensorRT};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{DynTensor, DynTensorValueType, DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use super::providers::{Provider, ProviderKind};
use crate::{DataType, InputBatch, ModelIo, Runtime, RuntimeError, Tensor, TensorSpec, bytes_elements, element_count};

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

/// Loads `libonnxruntime.so` from `library` and creates the process-wide
/// environment with telemetry off. Must run before any model loads; a second
/// call is a no-op (ONNX Runtime can be loaded once per process).
///
/// The path is checked here because `ort` panics when the library cannot be
/// opened later on.
pub fn init(library: &Path) -> Result<(), RuntimeError> {
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    if !library.is_file() {
        return Err(RuntimeError::Load(format!(
            "ONNX Runtime library not found at {}: run scripts/fetch-onnxruntime.sh, or point \
             --onnxruntime-lib / ORT_DYLIB_PATH at libonnxruntime.so (the `onnxruntime` PyPI wheel \
             carries it under onnxruntime/capi/)",
            library.display()
        )));
    }
    let env = ort::init_from(library)
        .map_err(|e| RuntimeError::Load(format!("cannot load ONNX Runtime from {}: {e}", library.display())))?
        .with_name("quiver")
        .with_telemetry(false)
        .build()
        .map_err(|e| RuntimeError::Load(format!("cannot create ONNX Runtime environment: {e}")))?;
    let _ = ENVIRONMENT.set(env);
    Ok(())
}

/// Session options quiver exposes per model.
#[derive(Clone, Debug)]
pub struct OnnxOptions {
    /// Threads ONNX Runtime uses inside one operator (0 = its default, all cores).
    pub intra_op_threads: usize,
    /// Threads for running independent graph branches in parallel (0 = default).
    pub inter_op_threads: usize,
    /// Triton's `optimization { graph { level } }`: -1 basic only, 0 all (default), 1 extended.
    pub graph_level: i32,
    /// Execution providers ahead of the CPU's, best first (see `providers`).
    /// Each must register: a failure fails the load.
    pub providers: Vec<Provider>,
    /// Run through I/O binding: inputs in host memory the provider can copy
    /// from directly (pinned when a CUDA provider is registered), outputs
    /// copied back once into the same kind of memory. Always on with a GPU
    /// provider; settable for the CPU so the path is tested without a GPU.
    pub bind_io: bool,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions {
            intra_op_threads: 1,
            inter_op_threads: 1,
            graph_level: 0,
            providers: Vec::new(),
            bind_io: false,
        }
    }
}

/// One ONNX Runtime session: owned by one instance thread.
pub struct OnnxModel {
    session: Session,
    io: ModelIo,
    path: PathBuf,
    /// Where batch buffers live: the CPU allocator, or CUDA's pinned one.
    allocator: Allocator,
    /// Plain host memory, for string outputs: ONNX Runtime builds string
    /// tensors on the CPU allocator only.
    cpu_memory: MemoryInfo<'static>,
    bind_io: bool,
    /// What the load did that an operator should hear of (pinned memory
    /// unavailable, say).
    pub notes: Vec<String>,
}

/// Registers `provider` so that a failure is an error naming the provider,
/// never a quiet fall back to the CPU.
fn register(builder: &mut SessionBuilder, provider: &Provider) -> Result<(), String> {
    /// One provider type with its options: the registration's result, and
    /// whether the loaded ONNX Runtime build has the provider at all.
    fn with_options<E>(builder: &mut SessionBuilder, options: &[(String, String)]) -> (ort::Result<()>, bool)
    where
        E: ExecutionProvider + ArbitrarilyConfigurableExecutionProvider + Default,
    {
        let ep = options
            .iter()
            .fold(E::default(), |ep, (k, v)| ep.with_arbitrary_config(k, v));
        (ep.register(builder), E::is_available().unwrap_or(false))
    }
    let (result, in_build) = match provider.kind {
        ProviderKind::TensorRt => with_options::<TensorRT>(builder, &provider.options),
        ProviderKind::Cuda => with_options::<CUDA>(builder, &provider.options),
    };
    result.map_err(|e| {
        // ONNX Runtime prefixes its source location; the reason follows "FAIL : ".
        let message = e.to_string();
        let message = message
            .rsplit_once("FAIL : ")
            .map_or(message.as_str(), |(_, m)| m)
            .trim();
        let hint = if in_build {
            "the provider is in this ONNX Runtime build, so a library it needs is missing (see \
             --cuda-library-path) or no NVIDIA driver is installed"
        } else {
            "the ONNX Runtime library loaded is a CPU-only build: fetch the GPU one with \
             ORT_PACKAGE=onnxruntime-gpu scripts/fetch-onnxruntime.sh"
        };
        format!(
            "cannot start ONNX Runtime's {} execution provider: {message} ({hint})",
            provider.kind.name()
        )
    })
}

/// The host memory batches are built in: CUDA's pinned memory, so copies to
/// the device need no staging, or ONNX Runtime's CPU allocator.
fn host_allocator(session: &Session, providers: &[Provider], notes: &mut Vec<String>) -> Allocator {
    if !providers.iter().any(|p| p.kind == ProviderKind::Cuda) {
        return Allocator::default();
    }
    let pinned = |device_id| {
        MemoryInfo::new(
            AllocationDevice::CUDA_PINNED,
            device_id,
            AllocatorType::Device,
            MemoryType::CPUOutput,
        )
        .and_then(|info| Allocator::new(session, info))
    };
    let gpu: i32 = providers
        .iter()
        .find_map(|p| p.options.iter().find(|(k, _)| k == "device_id"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    // ONNX Runtime has registered the pinned allocator under device 0 in
    // some releases and under the GPU's id in others.
    match pinned(gpu).or_else(|_| pinned(0)) {
        Ok(a) => a,
        Err(e) => {
            notes.push(format!(
                "pinned host memory is unavailable ({e}); batches use pageable memory"
            ));
            Allocator::default()
        }
    }
}

impl OnnxModel {
    pub fn load(path: &Path, options: &OnnxOptions) -> Result<OnnxModel, RuntimeError> {
        let env = ENVIRONMENT
            .get()
            .ok_or_else(|| RuntimeError::Load("ONNX Runtime is not initialised".into()))?;
        let fail = |e: &dyn std::fmt::Display| RuntimeError::Load(format!("{}: {e}", path.display()));
        let level = match options.graph_level {
            l if l < 0 => GraphOptimizationLevel::Level1,
            1 => GraphOptimizationLevel::Level2,
            _ => GraphOptimizationLevel::All,
        };
        let mut builder = Session::builder(env).map_err(|e| fail(&e))?;
        builder = builder.with_optimization_level(level).map_err(|e| fail(&e))?;
        if options.intra_op_threads > 0 {
            builder = builder
                .with_intra_threads(options.intra_op_threads)
                .map_err(|e| fail(&e))?;
        }
        if options.inter_op_threads > 0 {
            builder = builder
                .with_inter_threads(options.inter_op_threads)
                .map_err(|e| fail(&e))?;
        }
        for provider in &options.providers {
            register(&mut builder, provider).map_err(|e| fail(&e))?;
        }
        let session = builder.commit_from_file(path).map_err(|e| fail(&e))?;
        let mut notes = Vec::new();
        let allocator = host_allocator(&session, &options.providers, &mut notes);
        let io = ModelIo {
            inputs: session
                .inputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
            outputs: session
                .outputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
        };
        Ok(OnnxModel {
            session,
            io,
            path: path.to_owned(),
            allocator,
            bind_io: options.bind_io || !options.providers.is_empty(),
            cpu_memory: MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default)
                .map_err(|e| fail(&e))?,
            notes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn spec(name: &str, dtype: &ValueType) -> Result<TensorSpec, RuntimeError> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
            name: name.to_owned(),
            datatype: from_ort(*ty).ok_or_else(|| {
                RuntimeError::Load(format!(
                    "tensor '{name}' has element type {ty:?}, which the V2 protocol cannot carry"
                ))
            })?,
            shape: shape.iter().copied().collect(),
        }),
        other => Err(RuntimeError::Load(format!(
            "'{name}' is a {other:?}; quiver serves models whose inputs and outputs are tensors"
        ))),
    }
}

fn from_ort(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        TensorElementType::Bfloat16 => DataType::Bf16,
        _ => return None,
    })
}

fn to_ort(datatype: DataType) -> TensorElementType {
    match datatype {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp16 => TensorElementType::Float16,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
        DataType::Bf16 => TensorElementType::Bfloat16,
    }
}

/// A tensor of `shape` from `allocator`, its bytes left as they are:
/// `DynTensor::new` zero-fills host tensors, a pass over every input (16 MB
/// of memset for a 16 MB image batch) just before `to_value` overwrites all
/// of it (`checked_len` guarantees every byte is written).
fn uninit_tensor(allocator: &Allocator, dtype: TensorElementType, shape: &[i64]) -> ort::Result<DynTensor> {
    use ort::AsPointer as _;
    let mut value: *mut ort::sys::OrtValue = std::ptr::null_mut();
    // SAFETY: a live allocator and a shape slice valid for the call; the
    // value's ownership passes to `from_ptr` with the allocator it came from.
    unsafe {
        ort::Error::result_from_status((ort::api().CreateTensorAsOrtValue)(
            allocator.ptr().cast_mut(),
            shape.as_ptr(),
            shape.len(),
            dtype.into(),
            &mut value,
        ))?;
        let value = std::ptr::NonNull::new(value).expect("CreateTensorAsOrtValue succeeded with a value");
        Ok(DynTensor::from_ptr(value, Some(allocator)))
    }
}

/// One request's bytes as an ONNX Runtime tensor where they lie, without a
/// copy: for a CPU session whose batch is one request (a large image batch
/// from a shared memory region, a model without batching) whose bytes are
/// aligned for their element type. ONNX Runtime reads graph inputs and
/// never frees or writes a buffer it was lent; the value must not outlive
/// `input`'s bytes, which [`OnnxModel::run`] guarantees (the values die
/// before it returns, and an output that aliases a lent input is copied).
fn lent_value(
    input: &InputBatch<'_>,
    memory: &MemoryInfo<'_>,
    allocator: &Allocator,
) -> Option<ort::Result<DynTensor>> {
    use ort::AsPointer as _;
    let [part] = input.parts.as_slice() else { return None };
    // BYTES has no element size: its tensors are always built (and copied).
    let align = input.datatype.size()?;
    if part.is_empty() || !(part.as_ptr() as usize).is_multiple_of(align) {
        return None;
    }
    let mut value: *mut ort::sys::OrtValue = std::ptr::null_mut();
    // SAFETY: `part` is valid for reads of its length for as long as the
    // value lives (above); ONNX Runtime takes the pointer as mutable but does
    // not write graph inputs. The value's ownership passes to `from_ptr`.
    Some(unsafe {
        ort::Error::result_from_status((ort::api().CreateTensorWithDataAsOrtValue)(
            memory.ptr(),
            part.as_ptr().cast_mut().cast(),
            part.len(),
            input.shape.as_ptr(),
            input.shape.len(),
            to_ort(input.datatype).into(),
            &mut value,
        ))
        .map(|()| {
            let value = std::ptr::NonNull::new(value).expect("CreateTensorWithDataAsOrtValue succeeded with a value");
            DynTensor::from_ptr(value, Some(allocator))
        })
    })
}

/// Copies one batched input into an ONNX Runtime value: each request's bytes
/// are copied once, straight into a buffer `allocator` gives (so alignment is
/// its problem, not the wire's, and a GPU copy starts from pinned memory).
/// With `lend` (a CPU session), a batch of one request is lent instead
/// ([`lent_value`]); the second value says so.
fn to_value(
    input: &InputBatch<'_>,
    allocator: &Allocator,
    lend: Option<&MemoryInfo<'_>>,
) -> Result<(DynValue, bool), RuntimeError> {
    let name = input.name;
    let exec = |e: ort::Error| RuntimeError::Execution(format!("input '{name}': {e}"));
    if input.datatype == DataType::Bytes {
        let mut strings = Vec::new();
        for part in &input.parts {
            for (i, item) in bytes_elements(part).enumerate() {
                let raw = item.map_err(|_| {
                    RuntimeError::InvalidInput(format!("input '{name}': BYTES element {i} is truncated"))
                })?;
                let s = std::str::from_utf8(raw).map_err(|_| {
                    RuntimeError::InvalidInput(format!(
                        "input '{name}': BYTES element {i} is not valid UTF-8, which ONNX string tensors require"
                    ))
                })?;
                strings.push(s.to_owned());
            }
        }
        return Ok((
            OrtTensor::from_string_array((input.shape.clone(), strings.as_slice()))
                .map_err(exec)?
                .into_dyn(),
            false,
        ));
    }
    let len = input.checked_len()?;
    if let Some(lent) = lend.and_then(|memory| lent_value(input, memory, allocator)) {
        return Ok((lent.map_err(exec)?.into_dyn(), true));
    }
    let mut value = uninit_tensor(allocator, to_ort(input.datatype), &input.shape).map_err(exec)?;
    if len > 0 {
        // SAFETY: ONNX Runtime allocated exactly `len` bytes of host memory
        // (pageable or pinned) for this shape and element type.
        unsafe { input.copy_to(value.data_ptr_mut().cast::<u8>()) };
    }
    Ok((value.into_dyn(), false))
}

/// An output tensor's memory, owned by ONNX Runtime, handed to the wire as
/// `Bytes` without a copy; freed when the last slice of it is dropped.
struct OrtBuffer {
    tensor: DynTensor,
    len: usize,
}

impl AsRef<[u8]> for OrtBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a host tensor (outputs are bound to host memory) of this
        // shape and element type holds `len` contiguous bytes at `data_ptr`,
        // alive as long as `tensor` is.
        unsafe { std::slice::from_raw_parts(self.tensor.data_ptr().cast::<u8>(), self.len) }
    }
}

/// `lent`: the address ranges of inputs lent to ONNX Runtime; an output
/// whose bytes lie in one (an identity graph may hand an input back as it
/// is) is copied, so that it never outlives the request it came from.
fn from_value(name: &str, value: DynValue, lent: &[std::ops::Range<usize>]) -> Result<Tensor, RuntimeError> {
    let exec = |e: ort::Error| RuntimeError::Execution(format!("output '{name}': {e}"));
    let (ty, shape) = match value.dtype() {
        ValueType::Tensor { ty, shape, .. } => (*ty, shape.iter().copied().collect::<Vec<i64>>()),
        other => {
            return Err(RuntimeError::Interface(format!(
                "output '{name}' is a {other:?}, not a tensor"
            )));
        }
    };
    let datatype = from_ort(ty)
        .ok_or_else(|| RuntimeError::Interface(format!("output '{name}' has unsupported element type {ty:?}")))?;
    let data = if datatype == DataType::Bytes {
        let (_, strings) = value.try_extract_strings().map_err(exec)?;
        let mut buf = Vec::with_capacity(strings.iter().map(|s| s.len() + 4).sum());
        for s in &strings {
            buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        Bytes::from(buf)
    } else {
        let tensor = value.downcast::<DynTensorValueType>().map_err(exec)?;
        let len = element_count(&shape).unwrap_or(0) * datatype.size().unwrap_or(0);
        let at = tensor.data_ptr() as usize;
        if len == 0 {
            Bytes::new()
        } else if lent.iter().any(|r| at < r.end && r.start < at + len) {
            Bytes::copy_from_slice(OrtBuffer { tensor, len }.as_ref())
        } else {
            Bytes::from_owner(OrtBuffer { tensor, len })
        }
    };
    Ok(Tensor {
        name: name.to_owned(),
        datatype,
        shape,
        data,
    })
}

impl Runtime for OnnxModel {
    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn utf8_strings(&self) -> bool {
        true
    }

    fn run(&mut self, inputs: &[InputBatch<'_>], outputs: &[String]) -> Result<Vec<Tensor>, RuntimeError> {
        // Lending inputs is for plain CPU sessions: with I/O binding the
        // providers copy from `allocator`'s (pinned) memory.
        let lend = (!self.bind_io).then_some(&self.cpu_memory);
        let mut lent = Vec::new();
        let values = inputs
            .iter()
            .map(|t| {
                let (value, is_lent) = to_value(t, &self.allocator, lend)?;
                if is_lent {
                    let start = t.parts[0].as_ptr() as usize;
                    lent.push(start..start + t.parts[0].len());
                }
                Ok((t.name, value))
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let wanted: Vec<&str> = if outputs.is_empty() {
            self.io.outputs.iter().map(|o| o.name.as_str()).collect()
        } else {
            outputs.iter().map(String::as_str).collect()
        };
        let failed = |e: ort::Error| RuntimeError::Execution(format!("{}: {e}", self.path.display()));
        // With I/O binding, inputs go from host memory to wherever the
        // providers want them; outputs come back once, into host memory of
        // the same allocator, and reach the wire without another copy.
        let binding = if self.bind_io {
            let mut binding = self.session.create_binding().map_err(failed)?;
            for (name, value) in &values {
                binding.bind_input(*name, value).map_err(failed)?;
            }
            for name in &wanted {
                let strings = self
                    .io
                    .outputs
                    .iter()
                    .any(|o| o.name == *name && o.datatype == DataType::Bytes);
                let memory = if strings {
                    &self.cpu_memory
                } else {
                    self.allocator.memory_info()
                };
                binding.bind_output_to_device(*name, memory).map_err(failed)?;
            }
            Some(binding)
        } else {
            None
        };
        let mut results = match &binding {
            Some(binding) => self.session.run_binding(binding).map_err(failed)?,
            None => self.session.run(values).map_err(failed)?,
        };
        wanted
            .into_iter()
            .map(|name| {
                let value = results
                    .remove(name)
                    .ok_or_else(|| RuntimeError::Execution(format!("the model produced no output '{name}'")))?;
                from_value(name, value, &lent)
            })
            .collect()
    }
}

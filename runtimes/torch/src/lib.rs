//! quiver's LibTorch backend, Triton's `pytorch_libtorch` / `pytorch`: a
//! shared library (`libquiver_torch.so`) that links LibTorch through `tch`.
//! The server opens it when the first TorchScript model loads (see
//! `quiver_runtimes::torch`), so a server without LibTorch still serves its
//! other models.
//!
//! The library shares Rust types with the server (`Box<dyn Backend>`,
//! tensors); [`quiver_torch_backend`] refuses a server of another build.
//! Nothing unwinds across that boundary: every entry point catches panics.
mod ffi;
mod model;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use quiver_runtimes::{Backend, Device, LoadRequest, Runtime, RuntimeError, Settings};

pub use model::TorchModel;

/// The entry point the server looks up: the backend, if `abi` (the server's
/// `quiver_runtimes::ABI`) is this library's.
#[unsafe(no_mangle)]
pub fn quiver_torch_backend(abi: &str) -> Result<Box<dyn Backend>, String> {
    if abi != quiver_runtimes::ABI {
        return Err(format!(
            "the LibTorch backend library was built for quiver {}, this server is {abi}: build both in one `cargo build`",
            quiver_runtimes::ABI
        ));
    }
    Ok(Box::new(Torch::default()))
}

/// LibTorch's thread pools are per process: these are the values set so far.
#[derive(Default)]
struct Threads {
    intra_op: Option<usize>,
    inter_op: Option<usize>,
}

#[derive(Default)]
struct Torch {
    threads: Mutex<Threads>,
}

impl Torch {
    /// Applies a model's thread counts. Intra-op threads can change at any
    /// time and then hold for every TorchScript model; inter-op threads can be
    /// set once per process, before any inter-op work, so the first model's
    /// value stays.
    fn threads(&self, request: &LoadRequest<'_>) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let intra = request.intra_op_threads;
        if intra > 0 && threads.intra_op != Some(intra) {
            if let Some(before) = threads.intra_op {
                (request.warn)(&format!(
                    "LibTorch's intra-op threads are per process: model '{}' sets {intra} for every \
                     TorchScript model (was {before})",
                    request.model
                ));
            }
            tch::set_num_threads(intra as i32);
            threads.intra_op = Some(intra);
        }
        let inter = request.inter_op_threads;
        match threads.inter_op {
            None if inter > 0 => {
                tch::set_num_interop_threads(inter as i32);
                threads.inter_op = Some(inter);
            }
            Some(set) if inter > 0 && set != inter => (request.warn)(&format!(
                "LibTorch's inter-op threads are fixed per process at {set} by the first TorchScript \
                 model; model '{}' asks for {inter}",
                request.model
            )),
            _ => {}
        }
    }
}

/// Runs `body`, turning a panic (tch panics where LibTorch reports an error
/// it did not expect) into an error of `kind`.
fn guarded<T>(
    what: &str,
    kind: fn(String) -> RuntimeError,
    body: impl FnOnce() -> Result<T, RuntimeError>,
) -> Result<T, RuntimeError> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(kind(format!("LibTorch failed while {what}: {message}")))
    })
}

impl Backend for Torch {
    fn init(&self, _: &Settings) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Runtime>, RuntimeError> {
        guarded("loading a model", RuntimeError::Load, || {
            if let Some(a) = request.accelerators.gpu.iter().chain(&request.accelerators.cpu).next() {
                return Err(RuntimeError::Load(format!(
                    "model '{}': execution accelerator '{}' is an ONNX Runtime setting; LibTorch models \
                     run on the instance group's device as they are",
                    request.model, a.name
                )));
            }
            let cuda = match request.device {
                Device::Cpu => None,
                Device::Gpu(gpu) => {
                    let available = tch::Cuda::device_count();
                    if !tch::Cuda::is_available() || i64::from(gpu) >= available {
                        return Err(RuntimeError::Load(format!(
                            "model '{}' asks for a KIND_GPU instance on GPU {gpu}, but LibTorch sees {} \
                             CUDA device(s){}",
                            request.model,
                            if tch::Cuda::is_available() { available } else { 0 },
                            if tch::Cuda::is_available() {
                                ""
                            } else {
                                " (a CPU-only LibTorch, or no GPU on this machine)"
                            }
                        )));
                    }
                    Some(gpu)
                }
            };
            self.threads(request);
            let model = TorchModel::load(request.file, request.declared, cuda)?;
            Ok(Box::new(Guarded(model)) as Box<dyn Runtime>)
        })
    }
}

/// A model whose runs cannot unwind into the server.
struct Guarded(TorchModel);

impl Runtime for Guarded {
    fn io(&self) -> &quiver_runtimes::ModelIo {
        self.0.io()
    }

    fn run(
        &mut self,
        inputs: &[quiver_runtimes::InputBatch<'_>],
        outputs: &[String],
    ) -> Result<Vec<quiver_runtimes::Tensor>, RuntimeError> {
        guarded("running a batch", RuntimeError::Execution, || {
            self.0.run(inputs, outputs)
        })
    }
}

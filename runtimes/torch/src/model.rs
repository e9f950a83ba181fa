//! One instance of a TorchScript model: the config's inputs matched to
//! forward's arguments, requests' bytes copied once into LibTorch tensors,
//! outputs handed to the wire without a copy.
use std::path::{Path, PathBuf};

use bytes::Bytes;
use quiver_runtimes::{DataType, InputBatch, ModelIo, Runtime, RuntimeError, Tensor, TensorSpec, element_count};
use tch::{Device, Kind};

use crate::ffi::{Argument, Module};

/// The datatypes LibTorch and the protocol share (LibTorch has no unsigned
/// types wider than 8 bits, and no strings in tensors).
fn kind(datatype: DataType) -> Option<Kind> {
    Some(match datatype {
        DataType::Bool => Kind::Bool,
        DataType::Uint8 => Kind::Uint8,
        DataType::Int8 => Kind::Int8,
        DataType::Int16 => Kind::Int16,
        DataType::Int32 => Kind::Int,
        DataType::Int64 => Kind::Int64,
        DataType::Fp16 => Kind::Half,
        DataType::Fp32 => Kind::Float,
        DataType::Fp64 => Kind::Double,
        DataType::Bf16 => Kind::BFloat16,
        DataType::Uint16 | DataType::Uint32 | DataType::Uint64 | DataType::Bytes => return None,
    })
}

fn datatype(kind: Kind) -> Option<DataType> {
    DataType::ALL.into_iter().find(|&d| self::kind(d) == Some(kind))
}

pub const SERVED: &str = "BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, FP32, FP64 and BF16";

/// Triton's positional naming: `<anything>__<index>`.
fn position(name: &str) -> Option<usize> {
    let (_, index) = name.rsplit_once("__")?;
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
        .then(|| index.parse().ok())
        .flatten()
}

#[derive(Debug)]
struct InputSlot {
    name: String,
    argument: usize,
    kind: Kind,
}

struct OutputSlot {
    name: String,
    /// Where a tuple or list result holds it: the `__<index>` of its name, or
    /// its place in config.pbtxt.
    index: usize,
    datatype: DataType,
}

pub struct TorchModel {
    module: Module,
    io: ModelIo,
    arguments: usize,
    inputs: Vec<InputSlot>,
    outputs: Vec<OutputSlot>,
    device: Device,
    path: PathBuf,
}

impl TorchModel {
    pub fn load(path: &Path, declared: &ModelIo, cuda: Option<u32>) -> Result<TorchModel, RuntimeError> {
        let fail = |e: String| RuntimeError::Load(format!("{}: {e}", path.display()));
        if declared.inputs.is_empty() || declared.outputs.is_empty() {
            return Err(fail(
                "a TorchScript file does not describe its inputs and outputs: config.pbtxt must list them \
                 (platform: \"pytorch_libtorch\", input [...], output [...])"
                    .into(),
            ));
        }
        for (what, spec) in declared
            .inputs
            .iter()
            .map(|s| ("input", s))
            .chain(declared.outputs.iter().map(|s| ("output", s)))
        {
            if kind(spec.datatype).is_none() {
                return Err(fail(format!(
                    "{what} '{}' is {}, which LibTorch tensors cannot hold (the pytorch backend serves {SERVED})",
                    spec.name,
                    spec.datatype.as_str()
                )));
            }
        }
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        let module =
            Module::load(path, cuda).map_err(|e| fail(format!("not a TorchScript module LibTorch can load: {e}")))?;
        let arguments = module
            .forward_arguments()
            .map_err(|e| fail(format!("no usable forward method: {e}")))?;
        let inputs = match_inputs(&declared.inputs, &arguments).map_err(fail)?;
        let outputs = declared
            .outputs
            .iter()
            .enumerate()
            .map(|(i, spec)| OutputSlot {
                name: spec.name.clone(),
                index: position(&spec.name).unwrap_or(i),
                datatype: spec.datatype,
            })
            .collect();
        Ok(TorchModel {
            module,
            io: declared.clone(),
            arguments: arguments.len(),
            inputs,
            outputs,
            device: cuda.map_or(Device::Cpu, |d| Device::Cuda(d as usize)),
            path: path.to_owned(),
        })
    }

    fn tensor(&self, input: &InputBatch<'_>, kind: Kind) -> Result<tch::Tensor, RuntimeError> {
        let name = input.name;
        let len = input.checked_len()?;
        let exec = |e: tch::TchError| RuntimeError::Execution(format!("input '{name}': {e}"));
        let tensor = tch::Tensor::f_empty(input.shape.as_slice(), (kind, Device::Cpu)).map_err(exec)?;
        if len > 0 {
            // SAFETY: LibTorch allocated `len` contiguous bytes on the CPU for
            // this shape and kind.
            unsafe { input.copy_to(tensor.data_ptr().cast::<u8>()) };
        }
        match self.device {
            Device::Cpu => Ok(tensor),
            device => tensor.f_to_device(device).map_err(exec),
        }
    }
}

/// Matches config.pbtxt's inputs to forward's arguments: `<name>__<index>`
/// by position, any other name by argument name (Triton's two conventions).
fn match_inputs(declared: &[TensorSpec], arguments: &[Argument]) -> Result<Vec<InputSlot>, String> {
    let signature = || {
        let names: Vec<&str> = arguments.iter().map(|a| a.name.as_str()).collect();
        format!("forward({})", names.join(", "))
    };
    let mut slots: Vec<InputSlot> = Vec::with_capacity(declared.len());
    for spec in declared {
        let argument = match position(&spec.name) {
            Some(i) if i < arguments.len() => i,
            Some(i) => {
                return Err(format!(
                    "input '{}' names argument {i} by position, but {} takes {}",
                    spec.name,
                    signature(),
                    arguments.len()
                ));
            }
            None => arguments.iter().position(|a| a.name == spec.name).ok_or_else(|| {
                format!(
                    "input '{}' in config.pbtxt is not an argument of {}: name inputs after forward's \
                     arguments, or <name>__<index> to pass them by position",
                    spec.name,
                    signature()
                )
            })?,
        };
        let arg = &arguments[argument];
        if arg.ty != "Tensor" && arg.ty != "Optional[Tensor]" {
            return Err(format!(
                "forward's argument '{}' is a {}; quiver passes each input as one Tensor",
                arg.name, arg.ty
            ));
        }
        if let Some(other) = slots.iter().find(|s| s.argument == argument) {
            return Err(format!(
                "inputs '{}' and '{}' both go to forward's argument '{}'",
                other.name, spec.name, arg.name
            ));
        }
        slots.push(InputSlot {
            name: spec.name.clone(),
            argument,
            kind: kind(spec.datatype).expect("checked by the caller"),
        });
    }
    for (i, arg) in arguments.iter().enumerate() {
        let optional = arg.has_default || arg.ty.starts_with("Optional[");
        if !optional && !slots.iter().any(|s| s.argument == i) {
            return Err(format!(
                "{}'s argument '{}' has no input in config.pbtxt",
                signature(),
                arg.name
            ));
        }
    }
    Ok(slots)
}

/// An output tensor's memory, owned by LibTorch, handed to the wire as
/// `Bytes` without a copy; freed when the last slice of it is dropped.
struct TorchBuffer {
    tensor: tch::Tensor,
    len: usize,
}

impl AsRef<[u8]> for TorchBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a contiguous CPU tensor of `len` bytes, alive as long as `tensor`.
        unsafe { std::slice::from_raw_parts(self.tensor.data_ptr().cast::<u8>(), self.len) }
    }
}

fn to_wire(name: &str, declared: DataType, tensor: tch::Tensor) -> Result<Tensor, RuntimeError> {
    let exec = |e: tch::TchError| RuntimeError::Execution(format!("output '{name}': {e}"));
    let got = tensor.f_kind().map_err(exec)?;
    let datatype = datatype(got).ok_or_else(|| {
        RuntimeError::Interface(format!(
            "output '{name}' is a {got:?} tensor, which the protocol cannot carry"
        ))
    })?;
    if datatype != declared {
        return Err(RuntimeError::Interface(format!(
            "output '{name}' is {} but config.pbtxt declares {}",
            datatype.as_str(),
            declared.as_str()
        )));
    }
    let tensor = tensor
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .map_err(exec)?;
    let shape = tensor.size();
    let len = element_count(&shape).unwrap_or(0) * datatype.size().unwrap_or(0);
    let data = if len == 0 {
        Bytes::new()
    } else {
        Bytes::from_owner(TorchBuffer { tensor, len })
    };
    Ok(Tensor {
        name: name.to_owned(),
        datatype,
        shape,
        data,
    })
}

impl Runtime for TorchModel {
    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn run(&mut self, inputs: &[InputBatch<'_>], outputs: &[String]) -> Result<Vec<Tensor>, RuntimeError> {
        let mut arguments: Vec<Option<tch::Tensor>> = (0..self.arguments).map(|_| None).collect();
        for input in inputs {
            let slot = self
                .inputs
                .iter()
                .find(|s| s.name == input.name)
                .ok_or_else(|| RuntimeError::InvalidInput(format!("unexpected input '{}'", input.name)))?;
            arguments[slot.argument] = Some(self.tensor(input, slot.kind)?);
        }
        let mut results = self
            .module
            .forward(&arguments)
            .map_err(|e| RuntimeError::Execution(format!("{}: {e}", self.path.display())))?;
        drop(arguments);
        let keyed = results.iter().any(|(key, _)| key.is_some());
        let count = results.len();
        let mut take = |slot: &OutputSlot| -> Result<Tensor, RuntimeError> {
            let found = if keyed {
                results
                    .iter()
                    .position(|(key, _)| key.as_deref() == Some(slot.name.as_str()))
            } else {
                (slot.index < count).then_some(slot.index)
            };
            let Some(i) = found else {
                return Err(RuntimeError::Interface(if keyed {
                    let keys: Vec<&str> = results.iter().filter_map(|(k, _)| k.as_deref()).collect();
                    format!(
                        "forward returned no '{}' (its dict holds {})",
                        slot.name,
                        keys.join(", ")
                    )
                } else {
                    format!(
                        "output '{}' is result {} of forward, which returned {count}",
                        slot.name, slot.index
                    )
                }));
            };
            // Each result is taken once; an empty placeholder keeps the indices.
            let tensor = std::mem::replace(&mut results[i].1, tch::Tensor::new());
            to_wire(&slot.name, slot.datatype, tensor)
        };
        if outputs.is_empty() {
            return self.outputs.iter().map(&mut take).collect();
        }
        outputs
            .iter()
            .map(|name| {
                let slot = self
                    .outputs
                    .iter()
                    .find(|s| &s.name == name)
                    .ok_or_else(|| RuntimeError::Execution(format!("no output named '{name}'")))?;
                take(slot)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(name: &str, ty: &str, has_default: bool) -> Argument {
        Argument {
            name: name.into(),
            ty: ty.into(),
            has_default,
        }
    }

    fn spec(name: &str) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 4],
        }
    }

    #[test]
    fn inputs_match_by_name_or_by_position() {
        let args = [arg("x", "Tensor", false), arg("y", "Tensor", false)];
        let by_name = match_inputs(&[spec("y"), spec("x")], &args).unwrap();
        assert_eq!(by_name.iter().map(|s| s.argument).collect::<Vec<_>>(), [1, 0]);
        let by_position = match_inputs(&[spec("INPUT__1"), spec("INPUT__0")], &args).unwrap();
        assert_eq!(by_position.iter().map(|s| s.argument).collect::<Vec<_>>(), [1, 0]);
    }

    #[test]
    fn mismatches_name_the_input_and_forward() {
        let args = [arg("x", "Tensor", false), arg("y", "Tensor", false)];
        let e = match_inputs(&[spec("x"), spec("z")], &args).unwrap_err();
        assert!(e.contains("'z'") && e.contains("forward(x, y)"), "{e}");
        let e = match_inputs(&[spec("x")], &args).unwrap_err();
        assert!(e.contains("argument 'y' has no input"), "{e}");
        let e = match_inputs(&[spec("INPUT__2"), spec("x"), spec("y")], &args).unwrap_err();
        assert!(e.contains("argument 2 by position"), "{e}");
        let e = match_inputs(&[spec("x"), spec("INPUT__0"), spec("y")], &args).unwrap_err();
        assert!(e.contains("both go to"), "{e}");
        let lists = [arg("xs", "List[Tensor]", false)];
        assert!(
            match_inputs(&[spec("xs")], &lists)
                .unwrap_err()
                .contains("List[Tensor]")
        );
    }

    #[test]
    fn arguments_with_defaults_may_be_left_out() {
        let args = [
            arg("x", "Tensor", false),
            arg("scale", "Optional[Tensor]", false),
            arg("k", "Tensor", true),
        ];
        assert_eq!(match_inputs(&[spec("x")], &args).unwrap().len(), 1);
    }

    #[test]
    fn positions_follow_tritons_double_underscore() {
        assert_eq!(position("INPUT__0"), Some(0));
        assert_eq!(position("out__12"), Some(12));
        assert_eq!(position("INPUT0"), None);
        assert_eq!(position("a__b"), None);
        assert_eq!(position("x__"), None);
    }

    #[test]
    fn every_shared_datatype_maps_both_ways() {
        for d in DataType::ALL {
            if let Some(k) = kind(d) {
                assert_eq!(datatype(k), Some(d));
            }
        }
        assert!(kind(DataType::Bytes).is_none() && kind(DataType::Uint32).is_none());
    }
}

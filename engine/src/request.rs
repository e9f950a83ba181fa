//! The protocol-independent inference request and response: what both front
//! ends decode into and encode from.
use std::sync::Arc;

use quiver_runtimes::{DataType, Tensor};

use crate::error::{Error, Result};

/// A request parameter as the protocol carries it.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
    /// A structured value (an object, an array, null) from a JSON request,
    /// such as MLServer's `headers`: kept as sent, for what reads request
    /// parameters downstream (payload logs, ensemble steps).
    Json(serde_json::Value),
}

impl ParamValue {
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ParamValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParamValue::Int(i) => Some(*i),
            ParamValue::Uint(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }
}

/// Named parameters, in the order they arrived (a handful at most).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parameters(pub Vec<(String, ParamValue)>);

impl Parameters {
    pub fn get(&self, key: &str) -> Option<&ParamValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An output the client asked for, with how it wants it encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    /// Binary tensor data extension: `Some(true)` sends this output as a blob.
    pub binary_data: Option<bool>,
    /// Classification extension: the top k of this output, as sent
    /// (validation checks it is a positive integer).
    pub classification: Option<ParamValue>,
    /// Shared memory extension: write this output into a registered region
    /// instead of the answer.
    pub shared_memory: Option<ShmRef>,
}

/// Where a tensor lives in a registered shared memory region: the
/// `shared_memory_region`, `shared_memory_byte_size` and
/// `shared_memory_offset` parameters of an input or a requested output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmRef {
    pub region: String,
    pub offset: u64,
    pub byte_size: u64,
}

impl ShmRef {
    /// Adds input `name`, whose bytes are in this region, to a request being
    /// decoded: an empty tensor until the server reads the region. Refused
    /// when the request sends the input's data too (`also_sent`).
    pub fn push_input(
        self,
        (name, datatype, shape): (String, DataType, Vec<i64>),
        also_sent: bool,
        inputs: &mut Vec<Tensor>,
        shared_memory: &mut Vec<(usize, ShmRef)>,
    ) -> Result<()> {
        if also_sent {
            return Err(Error::invalid(format!(
                "input '{name}' names shared memory region '{}' and also sends data; send one",
                self.region
            )));
        }
        shared_memory.push((inputs.len(), self));
        inputs.push(Tensor {
            name,
            datatype,
            shape,
            data: bytes::Bytes::new(),
        });
        Ok(())
    }

    /// The reference in `params`, if they name a region; `what` names the
    /// tensor in errors ("input 'x'").
    pub fn from_parameters(what: &str, params: &Parameters) -> Result<Option<ShmRef>> {
        let Some(region) = params.get("shared_memory_region") else {
            return Ok(None);
        };
        let ParamValue::String(region) = region else {
            return Err(Error::invalid(format!("{what}: shared_memory_region must be a string")));
        };
        let size = |key: &str| -> Result<Option<u64>> {
            params
                .get(key)
                .map(|v| match v {
                    ParamValue::Int(i) => u64::try_from(*i).ok(),
                    ParamValue::Uint(u) => Some(*u),
                    _ => None,
                })
                .map(|v| v.ok_or_else(|| Error::invalid(format!("{what}: {key} must be a non-negative integer"))))
                .transpose()
        };
        let byte_size = size("shared_memory_byte_size")?.ok_or_else(|| {
            Error::invalid(format!(
                "{what}: shared_memory_region '{region}' needs shared_memory_byte_size"
            ))
        })?;
        Ok(Some(ShmRef {
            region: region.clone(),
            offset: size("shared_memory_offset")?.unwrap_or(0),
            byte_size,
        }))
    }
}

#[derive(Clone, Debug, Default)]
pub struct InferRequest {
    pub model_name: String,
    /// `None`: the version routing picks (the highest ready version).
    pub model_version: Option<String>,
    pub id: String,
    pub parameters: Parameters,
    pub inputs: Vec<Tensor>,
    /// Empty: every output of the model, in the model's order.
    pub outputs: Vec<RequestedOutput>,
    /// Inputs (by index) whose bytes are in a registered shared memory
    /// region: their `data` is empty until the server reads the region.
    pub shared_memory: Vec<(usize, ShmRef)>,
    /// What the inputs' bytes depend on that can fail while the model reads
    /// them (a shared memory region truncated under it), checked once the
    /// model has run: a failed check fails the request before the answer
    /// is cached, counted as a success or shown to a tap.
    pub guards: Vec<Arc<dyn InputGuard>>,
}

impl InferRequest {
    /// The copy that observers keep past the answer (taps, a shadow): tensor
    /// data of at most [`OWN_AT_MOST`] bytes is copied into one buffer of
    /// the copy's own (see [`own_small_tensors`]).
    pub fn kept_copy(&self) -> InferRequest {
        let mut copy = self.clone();
        own_small_tensors([&mut copy.inputs[..]]);
        copy
    }
}

/// Tensors this small that outlive their request (kept by a tap, queued
/// for a payload log) get a buffer of their own rather than staying
/// slices: a slice keeps the whole buffer it came from alive. A gRPC
/// request's input is a slice of the buffer its message was read into
/// (kilobytes for a few hundred bytes of tensor, which the connection's
/// next read must then allocate anew); an answer's output is a slice of
/// its batch's output. Copying a few kilobytes costs less than either.
pub const OWN_AT_MOST: usize = 4096;

/// Copies the data of the tensors of `groups` that are at most
/// [`OWN_AT_MOST`] bytes into one new buffer that they share.
pub fn own_small_tensors<const N: usize>(mut groups: [&mut [Tensor]; N]) {
    let small = |t: &Tensor| !t.data.is_empty() && t.data.len() <= OWN_AT_MOST;
    let total: usize = groups
        .iter()
        .flat_map(|g| g.iter())
        .filter(|t| small(t))
        .map(|t| t.data.len())
        .sum();
    if total == 0 {
        return;
    }
    let mut own = Vec::with_capacity(total);
    for t in groups.iter().flat_map(|g| g.iter()).filter(|t| small(t)) {
        own.extend_from_slice(&t.data);
    }
    let own = bytes::Bytes::from(own);
    let mut at = 0;
    for t in groups.iter_mut().flat_map(|g| g.iter_mut()).filter(|t| small(t)) {
        let n = t.data.len();
        t.data = own.slice(at..at + n);
        at += n;
    }
}

/// See [`InferRequest::guards`].
pub trait InputGuard: Send + Sync + std::fmt::Debug {
    /// `Err`: the bytes the model read were not the client's.
    fn check(&self) -> Result<()>;
}

#[derive(Clone, Debug)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: String,
    pub outputs: Vec<Tensor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tensors_get_a_buffer_of_their_own_and_large_ones_stay_shared() {
        let tensor = |name: &str, data: bytes::Bytes| Tensor {
            name: name.into(),
            datatype: DataType::Uint8,
            shape: vec![data.len() as i64],
            data,
        };
        let wire = bytes::Bytes::from(vec![7u8; 3 * OWN_AT_MOST]);
        let mut outputs = [
            tensor("a", wire.slice(0..8)),
            tensor("big", wire.slice(8..8 + 2 * OWN_AT_MOST)),
            tensor("b", wire.slice(100..104)),
        ];
        let mut inputs = [tensor("in", wire.slice(200..202))];
        own_small_tensors([&mut inputs[..], &mut outputs[..]]);
        assert_eq!(inputs[0].data, wire.slice(200..202));
        assert_eq!(outputs[0].data.as_ptr(), inputs[0].data.as_ptr().wrapping_add(2));
        assert_eq!(outputs[0].data, wire.slice(0..8));
        assert_eq!(outputs[2].data, wire.slice(100..104));
        // The small ones now sit side by side in one new buffer.
        assert_eq!(outputs[2].data.as_ptr(), outputs[0].data.as_ptr().wrapping_add(8));
        assert_ne!(outputs[0].data.as_ptr(), wire.as_ptr());
        assert_eq!(outputs[1].data.as_ptr(), wire.as_ptr().wrapping_add(8));
    }

    #[test]
    fn a_kept_copy_pins_no_wire_buffer() {
        let wire = bytes::Bytes::from(vec![3u8; 8192]);
        let req = InferRequest {
            model_name: "m".into(),
            inputs: vec![Tensor {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![1, 32],
                data: wire.slice(64..192),
            }],
            ..Default::default()
        };
        let kept = req.kept_copy();
        assert_eq!(kept.inputs, req.inputs);
        let range = wire.as_ptr_range();
        assert!(!range.contains(&kept.inputs[0].data.as_ptr()));
        // The wire buffer is shared by the request alone now.
        drop(req);
        assert!(wire.is_unique());
    }
}

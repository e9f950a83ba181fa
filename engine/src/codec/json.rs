//! The V2 JSON encoding, plus the JSON half of the binary tensor data
//! extension (the header that says which inputs arrive as blobs and which
//! outputs leave as blobs).
//!
//! Tensor `data` is kept as a borrowed raw JSON slice while the header is
//! parsed (its datatype may come after it), then decoded straight into
//! little-endian bytes: no `serde_json::Value` per element.
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use quiver_runtimes::{DataType, Tensor, element_count};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::elements::{self, Element};
use crate::error::{Error, Result};
use crate::request::{InferRequest, InferResponse, ParamValue, Parameters, RequestedOutput, ShmRef};

#[derive(Deserialize)]
struct RequestJson<'a> {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

/// Request ids are strings in the protocol; some clients send numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    String(String),
    Number(serde_json::Number),
}

#[derive(Deserialize)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

fn parameters(map: Option<Map<String, Value>>) -> Parameters {
    let Some(map) = map else {
        return Parameters::default();
    };
    Parameters(
        map.into_iter()
            .map(|(k, v)| {
                let p = match v {
                    Value::Bool(b) => ParamValue::Bool(b),
                    Value::String(s) => ParamValue::String(s),
                    Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                        (Some(i), _, _) => ParamValue::Int(i),
                        (None, Some(u), _) => ParamValue::Uint(u),
                        (None, None, Some(f)) => ParamValue::Double(f),
                        _ => ParamValue::Json(Value::Number(n)),
                    },
                    // Kept as sent (MLServer's headers, say): nothing in the
                    // codec acts on them, but what logs or forwards requests does.
                    other => ParamValue::Json(other),
                };
                (k, p)
            })
            .collect(),
    )
}

/// Decodes a JSON request header; inputs marked with `binary_data_size` take
/// their bytes, in order, from `binary` (zero-copy slices of it).
pub fn decode_request(header: &[u8], mut binary: Bytes, model: &str, version: Option<&str>) -> Result<InferRequest> {
    let req: RequestJson<'_> =
        serde_json::from_slice(header).map_err(|e| Error::invalid(format!("malformed inference request JSON: {e}")))?;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut shared_memory = Vec::new();
    for input in req.inputs {
        let name = input.name;
        let datatype = DataType::parse(&input.datatype)
            .ok_or_else(|| Error::invalid(format!("input '{name}': unknown datatype '{}'", input.datatype)))?;
        let params = parameters(input.parameters);
        let binary_size = match params.get("binary_data_size") {
            None => None,
            Some(p) => Some(p.as_i64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
                Error::invalid(format!(
                    "input '{name}': binary_data_size must be a non-negative integer"
                ))
            })?),
        };
        let what = format!("input '{name}'");
        if let Some(shm) = ShmRef::from_parameters(&what, &params)? {
            let sent = binary_size.is_some() || input.data.is_some();
            shm.push_input((name, datatype, input.shape), sent, &mut inputs, &mut shared_memory)?;
            continue;
        }
        let data = match (binary_size, input.data) {
            (Some(n), _) => {
                if n > binary.len() {
                    return Err(Error::invalid(format!(
                        "input '{name}': binary_data_size is {n} but only {} bytes of binary data remain",
                        binary.len()
                    )));
                }
                binary.split_to(n)
            }
            (None, Some(raw)) => {
                let base64 = matches!(params.get("content_type"), Some(ParamValue::String(s)) if s == "base64");
                decode_data(&name, datatype, &input.shape, raw, base64)?
            }
            (None, None) => {
                return Err(Error::invalid(format!(
                    "input '{name}' has neither data nor binary_data_size"
                )));
            }
        };
        let tensor = Tensor {
            name,
            datatype,
            shape: input.shape,
            data,
        };
        inputs.push(tensor);
    }
    if !binary.is_empty() {
        return Err(Error::invalid(format!(
            "{} bytes of binary data follow the last input that declares binary_data_size",
            binary.len()
        )));
    }
    let outputs = req
        .outputs
        .into_iter()
        .map(|o| {
            let params = parameters(o.parameters);
            Ok(RequestedOutput {
                binary_data: params.get("binary_data").and_then(ParamValue::as_bool),
                classification: params.get("classification").cloned(),
                shared_memory: ShmRef::from_parameters(&format!("output '{}'", o.name), &params)?,
                name: o.name,
            })
        })
        .collect::<Result<_>>()?;
    Ok(InferRequest {
        model_name: model.to_owned(),
        model_version: version.map(str::to_owned),
        id: match req.id {
            Some(Id::String(s)) => s,
            Some(Id::Number(n)) => n.to_string(),
            None => String::new(),
        },
        parameters: parameters(req.parameters),
        inputs,
        outputs,
        shared_memory,
        guards: Vec::new(),
    })
}

/// Decodes JSON tensor data, flat or nested, into little-endian bytes.
fn decode_data(name: &str, datatype: DataType, shape: &[i64], raw: &RawValue, base64: bool) -> Result<Bytes> {
    let expected = element_count(shape).ok_or_else(|| {
        Error::invalid(format!(
            "input '{name}': shape {shape:?} has a negative or too large dimension"
        ))
    })?;
    // Every element takes at least two characters of JSON (a digit and a
    // separator; the last one none), so the text bounds what the claimed
    // shape may make us reserve: at most 4x the text, for FP64.
    let capacity = expected
        .min(raw.get().len().div_ceil(2))
        .saturating_mul(datatype.size().unwrap_or(4));
    let mut out = Vec::with_capacity(capacity);
    let mut count = 0usize;
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Flatten {
        datatype,
        base64,
        out: &mut out,
        count: &mut count,
    }
    .deserialize(&mut de)
    .map_err(|e| Error::invalid(format!("input '{name}': {e}")))?;
    if count != expected {
        return Err(Error::invalid(format!(
            "input '{name}': {count} data elements for shape {shape:?}, expected {expected}"
        )));
    }
    Ok(out.into())
}

struct Flatten<'o> {
    datatype: DataType,
    base64: bool,
    out: &'o mut Vec<u8>,
    count: &'o mut usize,
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.datatype {
            DataType::Bool => f.write_str("true/false values, flat or in nested arrays"),
            DataType::Bytes => f.write_str("string values, flat or in nested arrays"),
            d => write!(f, "{d} numbers, flat or in nested arrays"),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Flatten {
            datatype,
            base64,
            out,
            count,
        } = self;
        while seq
            .next_element_seed(Flatten {
                datatype,
                base64,
                out: &mut *out,
                count: &mut *count,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if self.datatype != DataType::Bool {
            return Err(E::invalid_type(de::Unexpected::Bool(v), &self));
        }
        self.out.push(v as u8);
        *self.count += 1;
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        elements::push_int(self.datatype, v as i128, self.out).map_err(E::custom)?;
        *self.count += 1;
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        elements::push_int(self.datatype, v as i128, self.out).map_err(E::custom)?;
        *self.count += 1;
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        elements::push_float(self.datatype, v, self.out).map_err(E::custom)?;
        *self.count += 1;
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.datatype != DataType::Bytes {
            return Err(E::invalid_type(de::Unexpected::Str(v), &self));
        }
        if self.base64 {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| E::custom(format!("element {} is not valid base64: {e}", *self.count)))?;
            elements::push_bytes(&decoded, self.out).map_err(E::custom)?;
        } else {
            elements::push_bytes(v.as_bytes(), self.out).map_err(E::custom)?;
        }
        *self.count += 1;
        Ok(())
    }
}

/// An encoded response: the JSON header, then the binary blobs (if any).
pub struct EncodedResponse {
    pub body: Vec<u8>,
    /// `Some(header length)` when blobs follow the header.
    pub header_len: Option<usize>,
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Map<String, Value>>,
    // `outputs` follows, written by `write_tensors`.
}

/// A request as V2 JSON, for what records requests (payload logs).
#[derive(Serialize)]
struct RequestOutJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<RequestedOutputJson<'a>>,
    // `inputs` follows, written by `write_tensors`.
}

#[derive(Serialize)]
struct RequestedOutputJson<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutputParameters>,
}

#[derive(Serialize)]
struct OutputParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    binary_data: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classification: Option<i64>,
}

/// How one tensor's data is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorData<'a> {
    /// Written into a shared memory region: the name, datatype and shape
    /// only (where it went is the client's own request).
    SharedMemory(&'a ShmRef),
    /// A JSON array in `data`.
    Json,
    /// A blob after the JSON header (binary tensor data extension).
    Binary,
    /// Left out: the name, datatype and shape only (a redacted input, an
    /// event over its size cap).
    Omitted,
}

/// Appends `json` (which serialises as an object) to `out` with one more
/// member, `name`, last, its value written by `value`; with the blobs after
/// the JSON when there are any. Returns the JSON's length when blobs follow.
fn write_with_blobs<'a>(
    out: &mut Vec<u8>,
    json: &impl Serialize,
    (name, value): (
        &str,
        impl FnOnce(&mut Vec<u8>, &mut Vec<&'a Bytes>) -> std::result::Result<(), String>,
    ),
    what: impl Fn() -> String,
) -> Result<Option<usize>> {
    let mut blobs = Vec::new();
    let start = out.len();
    let fail = |e: String| Error::internal(format!("cannot encode {} as JSON: {e}", what()));
    serde_json::to_writer(&mut *out, json).map_err(|e| fail(e.to_string()))?;
    out.pop(); // the object's `}`
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    write_str(out, name);
    out.push(b':');
    value(out, &mut blobs).map_err(fail)?;
    out.push(b'}');
    if blobs.is_empty() {
        return Ok(None);
    }
    let header_len = out.len() - start;
    for b in blobs {
        out.extend_from_slice(b);
    }
    Ok(Some(header_len))
}

/// Appends `tensors` as a V2 JSON array: name, datatype and shape, the
/// binary extension's `binary_data_size` for a tensor sent as a blob (its
/// data collected into `blobs`), `data` for one written as JSON.
///
/// Written by hand rather than through serde's derive: the payload log
/// encodes every request and answer, and the derive's work per message (a
/// vector of tensor structs, its struct and sequence calls) cost more than
/// a small request's numbers (both events of a fraud_mlp exchange: 1.21 µs
/// before, 0.75 µs after, `benches/payload_log.rs`).
fn write_tensors<'a>(
    out: &mut Vec<u8>,
    tensors: &'a [Tensor],
    data: &impl Fn(&Tensor) -> TensorData<'a>,
    blobs: &mut Vec<&'a Bytes>,
) -> std::result::Result<(), String> {
    let mut int = itoa::Buffer::new();
    out.push(b'[');
    for t in tensors {
        out.extend_from_slice(b"{\"name\":");
        write_str(out, &t.name);
        out.extend_from_slice(b",\"datatype\":\"");
        out.extend_from_slice(t.datatype.as_str().as_bytes());
        out.extend_from_slice(b"\",\"shape\":[");
        for d in &t.shape {
            out.extend_from_slice(int.format(*d).as_bytes());
            out.push(b',');
        }
        close(out, b']');
        match data(t) {
            TensorData::Binary => {
                // As Triton answers it: `parameters` only for a blob.
                // Triton's C++ client (perf_analyzer) takes any `parameters`
                // on an output to announce a binary blob.
                blobs.push(&t.data);
                out.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
                out.extend_from_slice(int.format(t.data.len()).as_bytes());
                out.push(b'}');
            }
            TensorData::Json => {
                out.extend_from_slice(b",\"data\":");
                write_data(out, t)?;
            }
            TensorData::SharedMemory(_) | TensorData::Omitted => {}
        }
        out.extend_from_slice(b"},");
    }
    close(out, b']');
    Ok(())
}

/// Ends a list whose every item was followed by a comma (none, when it is
/// empty) with `end`.
fn close(out: &mut Vec<u8>, end: u8) {
    if out.last() == Some(&b',') {
        out.pop();
    }
    out.push(end);
}

/// A tensor's elements as a flat JSON array. Non-finite floats are written
/// as `null`, as serde_json writes them.
fn write_data(out: &mut Vec<u8>, t: &Tensor) -> std::result::Result<(), String> {
    // Room for the usual case (an FP32 is 9 to 15 characters with its
    // comma: about 3 a byte); the vector grows for the rest.
    out.reserve(t.data.len() * 3 + 2);
    out.push(b'[');
    let mut float = zmij::Buffer::new();
    let mut int = itoa::Buffer::new();
    elements::for_each(
        t.datatype,
        &t.data,
        |e| {
            match e {
                Element::Float32(f) if f.is_finite() => out.extend_from_slice(float.format_finite(f).as_bytes()),
                Element::Float(f) if f.is_finite() => out.extend_from_slice(float.format_finite(f).as_bytes()),
                Element::Float32(_) | Element::Float(_) => out.extend_from_slice(b"null"),
                Element::Int(i) => out.extend_from_slice(int.format(i).as_bytes()),
                Element::Uint(u) => out.extend_from_slice(int.format(u).as_bytes()),
                Element::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
                Element::Bytes(b) => write_str(out, &String::from_utf8_lossy(b)),
            }
            out.push(b',');
            Ok(())
        },
        || format!("output '{}' holds malformed BYTES data", t.name),
    )?;
    close(out, b']');
    Ok(())
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Names rarely need an escape: copy them whole.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a vector cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn param_json(value: &ParamValue) -> Value {
    match value {
        ParamValue::Bool(b) => Value::Bool(*b),
        ParamValue::Int(i) => Value::from(*i),
        ParamValue::Uint(u) => Value::from(*u),
        ParamValue::Double(f) => Value::from(*f),
        ParamValue::String(s) => Value::String(s.clone()),
        ParamValue::Json(v) => v.clone(),
    }
}

/// A request as V2 JSON (with the blobs of [`TensorData::Binary`] inputs
/// after the header), appended to `out`: what the client sent, re-encoded
/// from the decoded request, for payload logs. `extra` parameters are added
/// to the request's. Returns the header's length when blobs follow it.
pub fn encode_request<'a>(
    req: &'a InferRequest,
    data: impl Fn(&Tensor) -> TensorData<'a>,
    extra: &Map<String, Value>,
    out: &mut Vec<u8>,
) -> Result<Option<usize>> {
    let mut parameters: Map<String, Value> = req
        .parameters
        .0
        .iter()
        .map(|(k, v)| (k.clone(), param_json(v)))
        .collect();
    parameters.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let json = RequestOutJson {
        id: &req.id,
        parameters,
        outputs: req
            .outputs
            .iter()
            .map(|o| RequestedOutputJson {
                name: &o.name,
                parameters: (o.binary_data.is_some() || o.classification.is_some()).then(|| OutputParameters {
                    binary_data: o.binary_data,
                    classification: o.classification.as_ref().and_then(ParamValue::as_i64),
                }),
            })
            .collect(),
    };
    let inputs = |out: &mut Vec<u8>, blobs: &mut Vec<&'a Bytes>| write_tensors(out, &req.inputs, &data, blobs);
    write_with_blobs(out, &json, ("inputs", inputs), || {
        format!("a request for model '{}'", req.model_name)
    })
}

/// [`encode_response`], choosing per output how its data is written, with
/// response-level `parameters` when `extra` has any (payload logs),
/// appended to `out`. Returns the header's length when blobs follow it.
pub fn encode_response_with<'a>(
    resp: &'a InferResponse,
    data: impl Fn(&Tensor) -> TensorData<'a>,
    extra: &Map<String, Value>,
    out: &mut Vec<u8>,
) -> Result<Option<usize>> {
    let json = ResponseJson {
        model_name: &resp.model_name,
        model_version: &resp.model_version,
        id: &resp.id,
        parameters: (!extra.is_empty()).then_some(extra),
    };
    let outputs = |out: &mut Vec<u8>, blobs: &mut Vec<&'a Bytes>| write_tensors(out, &resp.outputs, &data, blobs);
    write_with_blobs(out, &json, ("outputs", outputs), || {
        format!("the answer of model '{}'", resp.model_name)
    })
}

/// How the client asked for outputs to be encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputEncoding {
    /// Request-level `binary_data_output`.
    pub binary_by_default: bool,
    /// Per-output `binary_data` choices.
    pub per_output: Vec<(String, bool)>,
    /// Outputs written into shared memory regions (their placement, with
    /// the bytes written), answered without data.
    pub shared_memory: Vec<(String, ShmRef)>,
}

impl OutputEncoding {
    pub fn of(req: &InferRequest) -> OutputEncoding {
        OutputEncoding {
            binary_by_default: req
                .parameters
                .get("binary_data_output")
                .and_then(ParamValue::as_bool)
                .unwrap_or(false),
            per_output: req
                .outputs
                .iter()
                .filter_map(|o| Some((o.name.clone(), o.binary_data?)))
                .collect(),
            shared_memory: Vec::new(),
        }
    }

    pub fn all_binary() -> OutputEncoding {
        OutputEncoding {
            binary_by_default: true,
            per_output: Vec::new(),
            shared_memory: Vec::new(),
        }
    }

    /// How output `t` is written.
    pub fn data_of(&self, t: &Tensor) -> TensorData<'_> {
        if let Some((_, r)) = self.shared_memory.iter().find(|(n, _)| *n == t.name) {
            return TensorData::SharedMemory(r);
        }
        match self.is_binary(&t.name) {
            true => TensorData::Binary,
            false => TensorData::Json,
        }
    }

    pub fn is_binary(&self, name: &str) -> bool {
        self.per_output
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.binary_by_default, |(_, b)| *b)
    }
}

/// Encodes a response: outputs chosen as binary go after the JSON header.
/// Fails (and the client gets a 500, never a 200 with an error inside) only
/// if an output cannot be written as JSON.
pub fn encode_response(resp: &InferResponse, encoding: &OutputEncoding) -> Result<EncodedResponse> {
    let blob_len: usize = resp
        .outputs
        .iter()
        .filter(|t| encoding.data_of(t) == TensorData::Binary)
        .map(|t| t.data.len())
        .sum();
    let mut body = Vec::with_capacity(256 + blob_len);
    let header_len = encode_response_with(resp, |t| encoding.data_of(t), &Map::new(), &mut body)?;
    Ok(EncodedResponse { body, header_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<InferRequest> {
        decode_request(json.as_bytes(), Bytes::new(), "m", None)
    }

    #[test]
    fn flat_and_nested_data_decode_the_same() {
        let flat = decode(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[1,2,3,4]}]}"#).unwrap();
        let nested =
            decode(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#).unwrap();
        assert_eq!(flat.inputs, nested.inputs);
        let expected: Vec<u8> = [1i32, 2, 3, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(flat.inputs[0].data.as_ref(), expected.as_slice());
    }

    #[test]
    fn errors_name_the_input_and_problem() {
        let cases = [
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[300]}]}"#,
                "out of range for UINT8",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}]}"#,
                "not an integer",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
                "2 data elements",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#,
                "unknown datatype 'FLOAT'",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}]}"#,
                "BOOL takes true or false",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#,
                "FP32 numbers",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
                "neither data nor binary_data_size",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[]}]}"#,
                "negative",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}"#,
                "malformed inference request JSON",
            ),
        ];
        for (json, needle) in cases {
            let e = decode(json).unwrap_err();
            assert!(e.message.contains(needle), "{json}: {}", e.message);
            assert!(
                e.message.contains("'x'") || needle.starts_with("malformed"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn structured_request_parameters_are_kept_as_sent() {
        let req = decode(
            r#"{"parameters":{"headers":{"x-user":"a"},"tags":[1,2],"n":3,"none":null},
                "inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#,
        )
        .unwrap();
        assert_eq!(
            req.parameters.get("headers"),
            Some(&ParamValue::Json(serde_json::json!({"x-user": "a"})))
        );
        assert_eq!(
            req.parameters.get("tags"),
            Some(&ParamValue::Json(serde_json::json!([1, 2])))
        );
        assert_eq!(req.parameters.get("n"), Some(&ParamValue::Int(3)));
        assert_eq!(req.parameters.get("none"), Some(&ParamValue::Json(Value::Null)));
    }

    #[test]
    fn huge_claimed_shape_allocates_nothing_big() {
        let e = decode(r#"{"inputs":[{"name":"x","shape":[100000000000],"datatype":"FP64","data":[1]}]}"#).unwrap_err();
        assert!(e.message.contains("1 data elements"), "{}", e.message);
    }

    #[test]
    fn binary_inputs_slice_the_body_and_sizes_are_checked() {
        let header = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}],
                         "outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
        let body = Bytes::from([1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        let req = decode_request(header.as_bytes(), body.clone(), "m", Some("1")).unwrap();
        assert_eq!(req.inputs[0].data, body);
        assert_eq!(req.outputs[0].binary_data, Some(true));
        let e = decode_request(header.as_bytes(), body.slice(..6), "m", None).unwrap_err();
        assert!(e.message.contains("only 6 bytes"), "{}", e.message);
        let mut long = body.to_vec();
        long.push(0);
        let e = decode_request(header.as_bytes(), long.into(), "m", None).unwrap_err();
        assert!(e.message.contains("1 bytes of binary data follow"), "{}", e.message);
    }

    #[test]
    fn bytes_take_strings_and_base64() {
        let req = decode(
            r#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["hi",""]},
                          {"name":"b","shape":[1],"datatype":"BYTES","parameters":{"content_type":"base64"},"data":["AP8="]}]}"#,
        )
        .unwrap();
        assert_eq!(req.inputs[0].data.as_ref(), &[2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]);
        assert_eq!(req.inputs[1].data.as_ref(), &[2, 0, 0, 0, 0, 0xff]);
    }

    /// The hand-written tensor writer against serde_json, text for text:
    /// every datatype, the edges of each (non-finite floats, -0, subnormals,
    /// extremes, strings that need escapes, invalid UTF-8), empty tensors.
    #[test]
    fn tensor_json_is_what_serde_json_writes() {
        use half::{bf16, f16};
        let t = |name: &str, datatype: DataType, count: usize, data: Vec<u8>| Tensor {
            name: name.into(),
            datatype,
            shape: vec![count as i64],
            data: data.into(),
        };
        let f32s = [
            0.1f32,
            -0.0,
            1.0,
            -3.5e-41,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::NAN,
            f32::INFINITY,
            16777216.0,
        ];
        let f64s = [0.1f64, -2.5e300, 5e-324, f64::NEG_INFINITY, 1e21, 123456789.125];
        let halves = [1.5f32, -65504.0, 6e-8, f32::NAN];
        let strings: [&[u8]; 5] = [b"plain", b"quo\"te\\", b"ctl\n\x01", b"caf\xc3\xa9", b"bad\xff"];
        let cases: Vec<(Tensor, String)> = vec![
            (
                t(
                    "a\"b\n",
                    DataType::Fp32,
                    f32s.len(),
                    f32s.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                serde_json::to_string(&f32s).unwrap(),
            ),
            (
                t(
                    "f64",
                    DataType::Fp64,
                    f64s.len(),
                    f64s.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                serde_json::to_string(&f64s).unwrap(),
            ),
            (
                t(
                    "f16",
                    DataType::Fp16,
                    4,
                    halves.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
                ),
                serde_json::to_string(&halves.map(|v| f16::from_f32(v).to_f32())).unwrap(),
            ),
            (
                t(
                    "bf16",
                    DataType::Bf16,
                    4,
                    halves.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
                ),
                serde_json::to_string(&halves.map(|v| bf16::from_f32(v).to_f32())).unwrap(),
            ),
            (
                t(
                    "i64",
                    DataType::Int64,
                    3,
                    [i64::MIN, -1, i64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                serde_json::to_string(&[i64::MIN, -1, i64::MAX]).unwrap(),
            ),
            (t("i8", DataType::Int8, 2, vec![0x80, 0x7f]), "[-128,127]".into()),
            (
                t(
                    "u64",
                    DataType::Uint64,
                    2,
                    [0u64, u64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                serde_json::to_string(&[0u64, u64::MAX]).unwrap(),
            ),
            (
                t("u16", DataType::Uint16, 1, 65535u16.to_le_bytes().to_vec()),
                "[65535]".into(),
            ),
            (t("bool", DataType::Bool, 3, vec![1, 0, 2]), "[true,false,true]".into()),
            (t("empty", DataType::Fp32, 0, vec![]), "[]".into()),
            (
                t(
                    "s",
                    DataType::Bytes,
                    strings.len(),
                    strings
                        .iter()
                        .flat_map(|s| {
                            let mut e = (s.len() as u32).to_le_bytes().to_vec();
                            e.extend_from_slice(s);
                            e
                        })
                        .collect(),
                ),
                serde_json::to_string(&strings.map(|s| String::from_utf8_lossy(s).into_owned())).unwrap(),
            ),
        ];
        for (tensor, expected) in cases {
            let name = tensor.name.clone();
            let shape = serde_json::to_string(&tensor.shape).unwrap();
            let resp = InferResponse {
                model_name: "m".into(),
                model_version: "1".into(),
                id: String::new(),
                outputs: vec![tensor],
            };
            let out = encode_response(&resp, &OutputEncoding::default()).unwrap();
            let body = String::from_utf8(out.body).unwrap();
            let datatype = resp.outputs[0].datatype.as_str();
            let want = format!(
                r#"{{"model_name":"m","model_version":"1","outputs":[{{"name":{},"datatype":"{datatype}","shape":{shape},"data":{expected}}}]}}"#,
                serde_json::to_string(&name).unwrap()
            );
            assert_eq!(body, want, "{name}");
        }
        // No outputs at all; a request with nothing but its inputs.
        let none = InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: String::new(),
            outputs: vec![],
        };
        let body = encode_response(&none, &OutputEncoding::default()).unwrap().body;
        assert_eq!(body, br#"{"model_name":"m","model_version":"1","outputs":[]}"#);
        let req = InferRequest {
            model_name: "m".into(),
            inputs: vec![t("x", DataType::Int32, 0, vec![])],
            ..Default::default()
        };
        let mut body = Vec::new();
        encode_request(&req, |_| TensorData::Json, &Map::new(), &mut body).unwrap();
        assert_eq!(
            body,
            br#"{"inputs":[{"name":"x","datatype":"INT32","shape":[0],"data":[]}]}"#
        );
    }

    /// Long lists of numbers of every printed length (1 to 24 characters):
    /// the same text as serde_json.
    #[test]
    fn long_number_lists_are_what_serde_json_writes() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let f64s: Vec<f64> = (0..3000)
            .map(|i| {
                let v = f64::from_bits(next());
                match i % 3 {
                    0 if v.is_finite() => v,
                    1 => (next() % 1000) as f64 / 8.0,
                    _ => (next() as i64 as f64) * 1e-9,
                }
            })
            .collect();
        let f32s: Vec<f32> = f64s.iter().map(|v| *v as f32).filter(|v| v.is_finite()).collect();
        let i64s: Vec<i64> = (0..3000).map(|i| (next() as i64) >> (i % 64)).collect();
        let tensor = |datatype, count: usize, data: Vec<u8>| InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: String::new(),
            outputs: vec![Tensor {
                name: "y".into(),
                datatype,
                shape: vec![count as i64],
                data: data.into(),
            }],
        };
        let cases = [
            (
                DataType::Fp64,
                f64s.len(),
                f64s.iter().flat_map(|v| v.to_le_bytes()).collect(),
                serde_json::to_string(&f64s),
            ),
            (
                DataType::Fp32,
                f32s.len(),
                f32s.iter().flat_map(|v| v.to_le_bytes()).collect(),
                serde_json::to_string(&f32s),
            ),
            (
                DataType::Int64,
                i64s.len(),
                i64s.iter().flat_map(|v| v.to_le_bytes()).collect(),
                serde_json::to_string(&i64s),
            ),
        ];
        for (datatype, count, data, expected) in cases {
            let resp = tensor(datatype, count, data);
            let body = encode_response(&resp, &OutputEncoding::default()).unwrap().body;
            let body = String::from_utf8(body).unwrap();
            assert!(
                body.ends_with(&format!(r#""data":{}}}]}}"#, expected.unwrap())),
                "{datatype:?}"
            );
        }
    }

    #[test]
    fn response_mixes_json_and_binary_outputs() {
        let t = |name: &str, v: &[f32]| Tensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: vec![v.len() as i64],
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into(),
        };
        let resp = InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: "7".into(),
            outputs: vec![t("a", &[0.1, 2.0]), t("b", &[3.0])],
        };
        let mut enc = OutputEncoding {
            binary_by_default: false,
            per_output: vec![("b".into(), true)],
            shared_memory: vec![],
        };
        let out = encode_response(&resp, &enc).unwrap();
        let n = out.header_len.unwrap();
        let header: Value = serde_json::from_slice(&out.body[..n]).unwrap();
        assert_eq!(header["id"], "7");
        assert_eq!(header["outputs"][0]["data"], serde_json::json!([0.1, 2.0]));
        assert_eq!(header["outputs"][1]["parameters"]["binary_data_size"], 4);
        // An output written into shared memory: the region's parameters, no data.
        let region = ShmRef {
            region: "out".into(),
            offset: 16,
            byte_size: 8,
        };
        enc.shared_memory = vec![("a".into(), region)];
        let placed = encode_response(&resp, &enc).unwrap();
        let header: Value = serde_json::from_slice(&placed.body[..placed.header_len.unwrap()]).unwrap();
        assert_eq!(
            header["outputs"][0],
            serde_json::json!({"name": "a", "datatype": "FP32", "shape": [2]})
        );
        assert_eq!(&out.body[n..], &3.0f32.to_le_bytes());
        let plain = encode_response(&resp, &OutputEncoding::default()).unwrap();
        assert!(plain.header_len.is_none());
    }
}

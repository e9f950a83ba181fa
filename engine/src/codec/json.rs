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
use serde::ser::{SerializeSeq, Serializer};
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
    outputs: Vec<TensorJson<'a>>,
}

/// A request as V2 JSON, for what records requests (payload logs).
#[derive(Serialize)]
struct RequestOutJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    inputs: Vec<TensorJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<RequestedOutputJson<'a>>,
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

#[derive(Serialize)]
struct TensorJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataJson<'a>>,
}

#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
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

/// Writes `tensors` as JSON, collecting the blobs of binary ones.
fn tensors_json<'a>(
    tensors: &'a [Tensor],
    data: &impl Fn(&Tensor) -> TensorData<'a>,
    blobs: &mut Vec<&'a Bytes>,
) -> Vec<TensorJson<'a>> {
    tensors
        .iter()
        .map(|t| {
            let how = data(t);
            let parameters = match how {
                TensorData::Binary => {
                    blobs.push(&t.data);
                    Some(BinaryParameters {
                        binary_data_size: t.data.len(),
                    })
                }
                // As Triton answers it: the name, datatype and shape only.
                // Triton's C++ client (perf_analyzer) takes any `parameters`
                // on an output to announce a binary blob.
                TensorData::SharedMemory(_) | TensorData::Json | TensorData::Omitted => None,
            };
            TensorJson {
                name: &t.name,
                datatype: t.datatype.as_str(),
                shape: &t.shape,
                parameters,
                data: (how == TensorData::Json).then_some(DataJson(t)),
            }
        })
        .collect()
}

/// Appends the JSON header, then the blobs, to `out`; the header's length
/// when blobs follow it.
fn write_with_blobs(
    out: &mut Vec<u8>,
    json: &impl Serialize,
    blobs: Vec<&Bytes>,
    what: impl FnOnce() -> String,
) -> Result<Option<usize>> {
    let start = out.len();
    serde_json::to_writer(&mut *out, json)
        .map_err(|e| Error::internal(format!("cannot encode {} as JSON: {e}", what())))?;
    if blobs.is_empty() {
        return Ok(None);
    }
    let header_len = out.len() - start;
    for b in blobs {
        out.extend_from_slice(b);
    }
    Ok(Some(header_len))
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
    let mut blobs = Vec::new();
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
        inputs: tensors_json(&req.inputs, &data, &mut blobs),
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
    write_with_blobs(out, &json, blobs, || {
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
    let mut blobs = Vec::new();
    let json = ResponseJson {
        model_name: &resp.model_name,
        model_version: &resp.model_version,
        id: &resp.id,
        parameters: (!extra.is_empty()).then_some(extra),
        outputs: tensors_json(&resp.outputs, &data, &mut blobs),
    };
    write_with_blobs(out, &json, blobs, || {
        format!("the answer of model '{}'", resp.model_name)
    })
}

/// Serialises tensor data as a flat JSON array, element by element.
struct DataJson<'a>(&'a Tensor);

impl Serialize for DataJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let t = self.0;
        let mut seq = s.serialize_seq(t.element_count())?;
        elements::for_each(
            t.datatype,
            &t.data,
            |e| match e {
                Element::Bool(b) => seq.serialize_element(&b),
                Element::Uint(u) => seq.serialize_element(&u),
                Element::Int(i) => seq.serialize_element(&i),
                Element::Float(f) => seq.serialize_element(&f),
                Element::Float32(f) => seq.serialize_element(&f),
                Element::Bytes(b) => seq.serialize_element(&String::from_utf8_lossy(b)),
            },
            || S::Error::custom(format!("output '{}' holds malformed BYTES data", t.name)),
        )?;
        seq.end()
    }
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

//! One logged exchange ([`Record`], made on the request path from shared
//! buffers) and the CloudEvents it becomes off the request path
//! ([`Event`]): KServe's logger format, attribute for attribute
//! (`pkg/logger/worker.go`), in binary mode for one event per HTTP POST and
//! in structured mode (JSON) for batches and the file sink.
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use quiver_engine::codec::json::{self, OutputEncoding, TensorData};
use quiver_engine::request::{InferRequest, InferResponse};
use serde_json::{Map, Value};

use super::id::EventId;
use super::settings::Settings;

/// KServe's event types.
pub const REQUEST_TYPE: &str = "org.kubeflow.serving.inference.request";
pub const RESPONSE_TYPE: &str = "org.kubeflow.serving.inference.response";

/// What a version's events share: the model, `ce-source`, the settings.
pub struct Origin {
    pub model: Arc<str>,
    pub version: u64,
    pub source: String,
    pub settings: Settings,
    pub inference_service: String,
    pub namespace: String,
    pub component: String,
    /// The attributes every event of the version carries, as JSON members
    /// (written once, not per event).
    pub fixed_json: String,
}

impl Origin {
    pub fn new(
        model: Arc<str>,
        version: u64,
        source: String,
        settings: Settings,
        (inference_service, namespace, component): (String, String, String),
    ) -> Origin {
        let fixed_json = format!(
            "\"specversion\":\"1.0\",\"source\":{},\"inferenceservicename\":{},\"namespace\":{},\"component\":{}",
            Value::from(source.as_str()),
            Value::from(inference_service.as_str()),
            Value::from(namespace.as_str()),
            Value::from(component.as_str()),
        );
        Origin {
            model,
            version,
            source,
            settings,
            inference_service,
            namespace,
            component,
            fixed_json,
        }
    }
}

/// How the client's request was framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// V2 JSON over HTTP, or gRPC: logged as V2 JSON.
    Json,
    /// HTTP with the binary tensor data extension: logged the same way.
    Binary,
    /// The raw form (`Inference-Header-Content-Length: 0`, one input):
    /// logged with the binary extension, every output as a blob.
    Raw,
}

/// One request and its outcome, as the request path hands it over: the
/// tensors share the wire buffers (no copy until the event is encoded).
pub struct Record {
    pub origin: Arc<Origin>,
    /// `ce-id`: the client's `ce-id` header, else a new one.
    pub id: EventId,
    /// `ce-endpoint`: the traffic variant, else the configured endpoint.
    pub endpoint: Arc<str>,
    pub shadow: bool,
    pub framing: Framing,
    /// `ce-metadata`: the configured headers, as KServe writes them (JSON,
    /// name to a list of values); empty for `{}`.
    pub metadata: String,
    pub received: SystemTime,
    pub answered: SystemTime,
    /// The engine's copy of the request, shared with the other taps.
    pub request: Option<Arc<InferRequest>>,
    /// The answer, or the HTTP status and message of the error.
    pub outcome: Result<InferResponse, (u16, String)>,
}

impl Record {
    /// Tensor bytes this record keeps alive (the queue's byte bound).
    pub fn bytes(&self) -> usize {
        let inputs: usize = self.request.iter().flat_map(|r| &r.inputs).map(|t| t.data.len()).sum();
        let outputs: usize = self.outcome.iter().flat_map(|r| &r.outputs).map(|t| t.data.len()).sum();
        inputs + outputs
    }
}

/// One CloudEvent of a record: its request or its answer. The body is
/// encoded where it goes (a POST's body, a batch's or a file's line), so it
/// is written once and never copied.
pub struct Event {
    pub record: Arc<Record>,
    pub request: bool,
    /// `ce-recordedtime`: when the worker took the record.
    pub recorded: SystemTime,
}

/// What [`Event::write_body`] wrote.
#[derive(Clone, Copy, Debug)]
pub struct Body {
    pub content_type: &'static str,
    /// Set when the body uses the binary tensor data extension.
    pub header_len: Option<usize>,
    /// Over the size cap: written without tensor data.
    pub truncated: bool,
}

impl Event {
    /// Appends the V2 body to `out`: the request, the answer as the client
    /// got it, or the V2 error body of a failed request. Redacted inputs and
    /// bodies over the size cap are written without tensor data.
    pub fn write_body(&self, out: &mut Vec<u8>) -> Body {
        let record = &self.record;
        let settings = &record.origin.settings;
        let start = out.len();
        let mut extra = Map::new();
        // `Some(header length if blobs follow)` when the whole body fits the cap.
        let full: Option<Option<usize>> = match (self.request, &record.request, &record.outcome) {
            (true, Some(req), _) => {
                let binary = record.framing != Framing::Json;
                let redacted = |name: &str| settings.redact_inputs.iter().any(|r| r == name);
                if req.inputs.iter().any(|t| redacted(&t.name)) {
                    extra.insert("payload_log_redacted".into(), Value::Bool(true));
                }
                let raw: usize = req.inputs.iter().map(|t| t.data.len()).sum();
                (raw <= settings.max_event_bytes)
                    .then(|| {
                        json::encode_request(
                            req,
                            |t| match (redacted(&t.name), binary) {
                                (true, _) => TensorData::Omitted,
                                (false, true) => TensorData::Binary,
                                (false, false) => TensorData::Json,
                            },
                            &extra,
                            out,
                        )
                        .ok()
                    })
                    .flatten()
                    .filter(|_| out.len() - start <= settings.max_event_bytes)
            }
            (true, None, _) => {
                out.extend_from_slice(b"{}");
                return Body {
                    content_type: "application/json",
                    header_len: None,
                    truncated: false,
                };
            }
            (false, _, Err((_, message))) => {
                let _ = serde_json::to_writer(&mut *out, &serde_json::json!({ "error": message }));
                return Body {
                    content_type: "application/json",
                    header_len: None,
                    truncated: false,
                };
            }
            (false, _, Ok(resp)) => {
                let encoding = match (record.framing, &record.request) {
                    (Framing::Raw, _) => OutputEncoding::all_binary(),
                    (Framing::Json, _) | (_, None) => OutputEncoding::default(),
                    (Framing::Binary, Some(req)) => OutputEncoding::of(req),
                };
                let binary = record.framing != Framing::Json;
                let raw: usize = resp.outputs.iter().map(|t| t.data.len()).sum();
                (raw <= settings.max_event_bytes)
                    .then(|| {
                        json::encode_response_with(
                            resp,
                            |t| match binary && encoding.is_binary(&t.name) {
                                true => TensorData::Binary,
                                false => TensorData::Json,
                            },
                            &extra,
                            out,
                        )
                        .ok()
                    })
                    .flatten()
                    .filter(|_| out.len() - start <= settings.max_event_bytes)
            }
        };
        if let Some(header_len) = full {
            return Body {
                content_type: match header_len {
                    Some(_) => "application/octet-stream",
                    None => "application/json",
                },
                header_len,
                truncated: false,
            };
        }
        out.truncate(start);
        extra.insert("payload_log_truncated".into(), Value::Bool(true));
        let _ = match (&record.request, &record.outcome) {
            (Some(req), _) if self.request => json::encode_request(req, |_| TensorData::Omitted, &extra, out),
            (_, Ok(resp)) => json::encode_response_with(resp, |_| TensorData::Omitted, &extra, out),
            _ => Ok(None),
        };
        Body {
            content_type: "application/json",
            header_len: None,
            truncated: true,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.request {
            true => REQUEST_TYPE,
            false => RESPONSE_TYPE,
        }
    }

    fn time(&self) -> SystemTime {
        match self.request {
            true => self.record.received,
            false => self.record.answered,
        }
    }

    /// The context attributes and extensions, as (name, value), in KServe's
    /// set; `quivershadow` and `quivererror` only on shadow and failed
    /// exchanges, which KServe does not log.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let r = &self.record;
        let o = &r.origin;
        let mut a = vec![
            ("specversion", "1.0".to_owned()),
            ("id", r.id.to_string()),
            ("type", self.kind().to_owned()),
            ("source", o.source.clone()),
            ("time", crate::clock::rfc3339(self.time())),
            ("recordedtime", crate::clock::rfc3339(self.recorded)),
            ("inferenceservicename", o.inference_service.clone()),
            ("namespace", o.namespace.clone()),
            ("component", o.component.clone()),
            ("endpoint", r.endpoint.to_string()),
            ("metadata", r.metadata_json().to_owned()),
        ];
        if r.shadow {
            a.push(("quivershadow", "true".to_owned()));
        }
        if let (false, Err((status, _))) = (self.request, &r.outcome) {
            a.push(("quivererror", status.to_string()));
        }
        a
    }

    /// Binary mode: the HTTP headers of one event per POST whose body `body` describes.
    pub fn headers(&self, body: &Body) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = self
            .attributes()
            .into_iter()
            .map(|(k, v)| (format!("ce-{k}"), v))
            .collect();
        h.push(("content-type".into(), body.content_type.into()));
        if let Some(n) = body.header_len {
            h.push(("inference-header-content-length".into(), n.to_string()));
        }
        h
    }

    /// Structured mode (one JSON object), appended to `out`: the attributes,
    /// `datacontenttype`, and `data` (the JSON body as it is) or
    /// `data_base64` (a body with blobs, whose header length is the
    /// `headerlength` attribute). This runs for every event of the file sink
    /// and of batches: no allocation but the base64 path's.
    pub fn write_structured(&self, out: &mut Vec<u8>) -> Body {
        let r = &self.record;
        out.extend_from_slice(b"{\"id\":");
        r.id.write_json(out);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(self.kind().as_bytes());
        out.extend_from_slice(b"\",");
        out.extend_from_slice(r.origin.fixed_json.as_bytes());
        out.extend_from_slice(b",\"time\":\"");
        crate::clock::write_rfc3339(out, self.time());
        out.extend_from_slice(b"\",\"recordedtime\":\"");
        crate::clock::write_rfc3339(out, self.recorded);
        out.extend_from_slice(b"\",\"endpoint\":");
        json_str(out, &r.endpoint);
        out.extend_from_slice(b",\"metadata\":");
        json_str(out, r.metadata_json());
        if r.shadow {
            out.extend_from_slice(b",\"quivershadow\":\"true\"");
        }
        if let (false, Err((status, _))) = (self.request, &r.outcome) {
            out.extend_from_slice(format!(",\"quivererror\":\"{status}\"").as_bytes());
        }
        // The body goes in place; its content type comes after it.
        out.extend_from_slice(b",\"data\":");
        let start = out.len();
        let body = self.write_body(out);
        if let Some(n) = body.header_len {
            let raw = out.split_off(start);
            out.truncate(start - b"\"data\":".len());
            out.extend_from_slice(format!("\"headerlength\":\"{n}\",\"data_base64\":\"").as_bytes());
            let at = out.len();
            out.resize(at + base64::encoded_len(raw.len(), true).unwrap_or(0), 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(&raw, &mut out[at..])
                .unwrap_or(0);
            out.truncate(at + written);
            out.push(b'"');
        }
        out.extend_from_slice(b",\"datacontenttype\":\"");
        out.extend_from_slice(body.content_type.as_bytes());
        out.extend_from_slice(b"\"}");
        body
    }
}

impl Record {
    fn metadata_json(&self) -> &str {
        match self.metadata.is_empty() {
            true => "{}",
            false => &self.metadata,
        }
    }
}

/// `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Ids, names and the metadata JSON rarely need escapes: copy them whole.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// The events of `record` its mode asks for, appended to `out`.
pub fn events(record: &Arc<Record>, recorded: SystemTime, out: &mut Vec<Event>) {
    let Some(mode) = record.origin.settings.mode else {
        return;
    };
    for request in [true, false] {
        if (request && mode.requests()) || (!request && mode.responses()) {
            out.push(Event {
                record: Arc::clone(record),
                request,
                recorded,
            });
        }
    }
}

/// The configured headers of a request as KServe's `ce-metadata`: a JSON
/// object of the header's canonical name (Go's `X-User-Id`) to its values.
pub fn metadata(settings: &Settings, get: impl Fn(&str) -> Option<String>) -> String {
    let mut map = Map::new();
    for name in &settings.metadata_headers {
        if let Some(value) = get(name) {
            let value = match settings.redact_headers.contains(name) {
                true => "[REDACTED]".to_owned(),
                false => value,
            };
            map.insert(canonical(name), Value::Array(vec![Value::String(value)]));
        }
    }
    Value::Object(map).to_string()
}

/// Go's `CanonicalMIMEHeaderKey`: each dash-separated word capitalised.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// For the queue's tests.
#[cfg(test)]
pub(super) use tests::record_with_input;

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_runtimes::{DataType, Tensor};

    fn origin(settings: Settings) -> Arc<Origin> {
        Arc::new(Origin::new(
            "m".into(),
            1,
            "http://localhost:8080/v2/models/m/versions/1".into(),
            settings,
            ("isvc".into(), "ns".into(), "predictor".into()),
        ))
    }

    fn settings() -> Settings {
        Settings {
            mode: Some(super::super::settings::Mode::All),
            url: None,
            file: true,
            sample_rate: 1.0,
            metadata_headers: vec!["x-user".into(), "authorization".into()],
            redact_inputs: vec![],
            redact_headers: vec!["authorization".into()],
            max_event_bytes: 1 << 20,
        }
    }

    fn tensor(name: &str, values: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: vec![1, values.len() as i64],
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
        }
    }

    fn record(settings: Settings, framing: Framing, outcome: Result<InferResponse, (u16, String)>) -> Arc<Record> {
        Arc::new(Record {
            origin: origin(settings),
            id: EventId::Given("abc".into()),
            endpoint: "default".into(),
            shadow: false,
            framing,
            metadata: String::new(),
            received: SystemTime::UNIX_EPOCH,
            answered: SystemTime::UNIX_EPOCH,
            request: Some(Arc::new(InferRequest {
                model_name: "m".into(),
                id: "r1".into(),
                inputs: vec![tensor("x", &[1.0, 2.5]), tensor("ssn", &[7.0])],
                ..Default::default()
            })),
            outcome,
        })
    }

    /// A record of a request whose one input holds `values`.
    pub fn record_with_input(values: &[f32]) -> Arc<Record> {
        let mut r = record(settings(), Framing::Json, Ok(answer()));
        let rec = Arc::get_mut(&mut r).unwrap();
        rec.request = Some(Arc::new(InferRequest {
            model_name: "m".into(),
            inputs: vec![tensor("x", values)],
            ..Default::default()
        }));
        r
    }

    fn answer() -> InferResponse {
        InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: "r1".into(),
            outputs: vec![tensor("y", &[0.5])],
        }
    }

    fn event(r: &Arc<Record>, request: bool) -> Event {
        Event {
            record: Arc::clone(r),
            request,
            recorded: SystemTime::UNIX_EPOCH,
        }
    }

    fn body(r: &Arc<Record>, request: bool) -> (Vec<u8>, Body) {
        let mut out = b"before".to_vec();
        let b = event(r, request).write_body(&mut out);
        (out[6..].to_vec(), b)
    }

    #[test]
    fn request_and_response_bodies_decode_as_v2() {
        let r = record(settings(), Framing::Json, Ok(answer()));
        let (req, b) = body(&r, true);
        assert_eq!(b.content_type, "application/json");
        let back = json::decode_request(&req, bytes::Bytes::new(), "m", None).unwrap();
        assert_eq!(back.inputs, r.request.as_ref().unwrap().inputs);
        assert_eq!(back.id, "r1");
        let (resp, _) = body(&r, false);
        let v: Value = serde_json::from_slice(&resp).unwrap();
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([0.5]));
        assert_eq!(v["model_version"], "1");
    }

    #[test]
    fn binary_requests_are_logged_with_the_extension() {
        let r = record(settings(), Framing::Binary, Ok(answer()));
        let (req, b) = body(&r, true);
        let n = b.header_len.unwrap();
        assert_eq!(b.content_type, "application/octet-stream");
        let req = bytes::Bytes::from(req);
        let back = json::decode_request(&req[..n], req.slice(n..), "m", None).unwrap();
        assert_eq!(back.inputs, r.request.as_ref().unwrap().inputs);
        assert!(
            event(&r, true)
                .headers(&b)
                .contains(&("inference-header-content-length".into(), n.to_string()))
        );
    }

    #[test]
    fn redaction_size_cap_and_errors() {
        let mut s = settings();
        s.redact_inputs = vec!["ssn".into()];
        let r = record(s.clone(), Framing::Json, Err((503, "model 'm' is unavailable".into())));
        let (req, b) = body(&r, true);
        let v: Value = serde_json::from_slice(&req).unwrap();
        assert_eq!(v["inputs"][0]["data"], serde_json::json!([1.0, 2.5]));
        assert!(v["inputs"][1].get("data").is_none());
        assert_eq!(v["inputs"][1]["shape"], serde_json::json!([1, 1]));
        assert_eq!(v["parameters"]["payload_log_redacted"], true);
        assert!(!b.truncated);
        let (resp, _) = body(&r, false);
        let v: Value = serde_json::from_slice(&resp).unwrap();
        assert_eq!(v["error"], "model 'm' is unavailable");
        assert!(event(&r, false).attributes().contains(&("quivererror", "503".into())));

        s.max_event_bytes = 1024;
        let mut big = record(s, Framing::Json, Ok(answer()));
        Arc::get_mut(Arc::get_mut(&mut big).unwrap().request.as_mut().unwrap())
            .unwrap()
            .inputs[0] = tensor("x", &[0.25; 4096]);
        let (req, b) = body(&big, true);
        assert!(b.truncated && req.len() < 1024);
        let v: Value = serde_json::from_slice(&req).unwrap();
        assert_eq!(v["parameters"]["payload_log_truncated"], true);
        assert_eq!(v["inputs"][0]["shape"], serde_json::json!([1, 4096]));
    }

    #[test]
    fn the_attributes_are_kserves() {
        let r = record(settings(), Framing::Json, Ok(answer()));
        let (_, b) = body(&r, false);
        let names: Vec<String> = event(&r, false).headers(&b).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "ce-specversion",
                "ce-id",
                "ce-type",
                "ce-source",
                "ce-time",
                "ce-recordedtime",
                "ce-inferenceservicename",
                "ce-namespace",
                "ce-component",
                "ce-endpoint",
                "ce-metadata",
                "content-type"
            ]
        );
        let meta = metadata(&settings(), |h| Some(format!("value of {h}")));
        let v: Value = serde_json::from_str(&meta).unwrap();
        assert_eq!(v["X-User"], serde_json::json!(["value of x-user"]));
        assert_eq!(v["Authorization"], serde_json::json!(["[REDACTED]"]));
    }

    #[test]
    fn structured_events_embed_json_and_base64_blobs() {
        let r = record(settings(), Framing::Json, Ok(answer()));
        let mut out = Vec::new();
        event(&r, false).write_structured(&mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], RESPONSE_TYPE);
        assert_eq!(v["data"]["outputs"][0]["name"], "y");
        assert_eq!(v["datacontenttype"], "application/json");
        // The same attributes as binary mode's headers.
        for (k, value) in event(&r, false).attributes() {
            assert_eq!(v[k], value.as_str(), "{k}");
        }
        let r = record(settings(), Framing::Raw, Ok(answer()));
        let mut out = Vec::new();
        let b = event(&r, false).write_structured(&mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v["data_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, body(&r, false).0);
        assert_eq!(v["headerlength"], b.header_len.unwrap().to_string());
        assert_eq!(v["datacontenttype"], "application/octet-stream");
        assert!(v.get("data").is_none());
    }
}

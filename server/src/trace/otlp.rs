//! A traced request as OTLP spans (the `opentelemetry.proto.trace.v1`
//! messages quiver sends, with OTLP's field numbers), in the shape Triton's
//! OpenTelemetry mode gives them:
//!
//! - `InferRequest`, the root (a server span, child of the client's span
//!   when it sent a `traceparent`): the front end's receive event;
//! - a span named for the model (`triton.model_name`, `triton.model_version`,
//!   `triton.request_id`, quiver's variant and shadow attributes):
//!   REQUEST_START, QUEUE_START, REQUEST_END;
//! - `compute`, child of the model's span: COMPUTE_START, COMPUTE_INPUT_END,
//!   COMPUTE_OUTPUT_START, COMPUTE_END, and what batching did: the
//!   execution's number (shared by the requests batched together), its
//!   requests and rows.
use prost::Message;

use super::{Item, LoadRecord, ProtocolNames, Record};

#[derive(Clone, PartialEq, Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    /// SpanKind: 1 internal, 2 server.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(string, tag = "2")]
    pub name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// StatusCode: 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
    }
}

const SERVER: i32 = 2;
const INTERNAL: i32 = 1;
const ERROR: i32 = 2;

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
    }
}

fn flag(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
    }
}

fn events(list: &[(&str, u64)]) -> Vec<Event> {
    list.iter()
        .map(|(name, t)| Event {
            time_unix_nano: *t,
            name: (*name).to_owned(),
        })
        .collect()
}

/// The spans of one traced request.
pub fn spans(r: &Record) -> Vec<Span> {
    let status = r.error.as_ref().map(|e| Status {
        message: e.clone(),
        code: ERROR,
    });
    let span = |id: [u8; 8], parent: Option<[u8; 8]>, name: &str, kind, start, end| Span {
        trace_id: r.ids.trace_id.to_vec(),
        span_id: id.to_vec(),
        trace_state: r.trace_state.clone(),
        parent_span_id: parent.map_or_else(Vec::new, |p| p.to_vec()),
        name: name.to_owned(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: Vec::new(),
        events: Vec::new(),
        status: status.clone(),
    };
    let t = &r.times;
    let mut root = span(r.ids.span_id, r.parent, "InferRequest", SERVER, t.received, t.end);
    root.events = events(&[(r.protocol.received_event(), t.received)]);
    root.attributes = vec![text("quiver.protocol", r.protocol.name())];

    let mut model = span(
        r.model_span,
        Some(r.ids.span_id),
        &r.model,
        INTERNAL,
        t.started,
        t.answered,
    );
    model.events = events(&[
        ("REQUEST_START", t.started),
        ("QUEUE_START", t.started),
        ("REQUEST_END", t.answered),
    ]);
    model.attributes = vec![
        text("triton.model_name", r.model.as_str()),
        int("triton.model_version", r.version as i64),
        text("triton.request_id", r.request_id.as_str()),
        flag("quiver.shadow", r.shadow),
        int(
            "quiver.queue_wait_us",
            ((t.compute_start.max(t.started) - t.started) / 1000) as i64,
        ),
    ];
    if let Some(v) = &r.variant {
        model.attributes.push(text("quiver.variant", v.as_str()));
    }
    let mut all = vec![root, model];
    if r.execution.id != 0 {
        let e = &r.execution;
        let input_end = t.compute_start + e.input.as_nanos() as u64;
        let output_start = input_end + e.infer.as_nanos() as u64;
        let end = output_start + e.output.as_nanos() as u64;
        let mut compute = span(
            r.compute_span,
            Some(r.model_span),
            "compute",
            INTERNAL,
            t.compute_start,
            end,
        );
        compute.status = None;
        compute.events = events(&[
            ("COMPUTE_START", t.compute_start),
            ("COMPUTE_INPUT_END", input_end),
            ("COMPUTE_OUTPUT_START", output_start),
            ("COMPUTE_END", end),
        ]);
        compute.attributes = vec![
            int("quiver.batch.execution", e.id as i64),
            int("quiver.batch.requests", e.requests as i64),
            int("quiver.batch.size", r.batch_rows as i64),
        ];
        all.push(compute);
    }
    all
}

/// A load's spans: the root (`ModelLoad`, or `ModelDrain` for a drain)
/// from its first step to its last, and one span per step.
pub fn load_spans(l: &LoadRecord) -> Vec<Span> {
    let start = l.steps.iter().map(|s| s.start).min().unwrap_or_default();
    let end = l.steps.iter().map(|s| s.end).max().unwrap_or_default();
    let drain = !l.steps.is_empty() && l.steps.iter().all(|s| s.name == "drain");
    let error = |e: &Option<String>| {
        e.as_ref().map(|m| Status {
            message: m.clone(),
            code: ERROR,
        })
    };
    let root = Span {
        trace_id: l.trace_id.to_vec(),
        span_id: l.span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id: Vec::new(),
        name: if drain { "ModelDrain" } else { "ModelLoad" }.to_owned(),
        kind: INTERNAL,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: vec![text("triton.model_name", l.model.as_str())],
        events: Vec::new(),
        status: error(&l.error),
    };
    let steps = l.steps.iter().map(|s| Span {
        trace_id: l.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id: l.span_id.to_vec(),
        name: s.name.to_owned(),
        kind: INTERNAL,
        start_time_unix_nano: s.start,
        end_time_unix_nano: s.end,
        attributes: s
            .version
            .map(|v| vec![int("triton.model_version", v as i64)])
            .unwrap_or_default(),
        events: Vec::new(),
        status: error(&s.error),
    });
    std::iter::once(root).chain(steps).collect()
}

/// One export request of `items`, under quiver's resource and scope.
pub fn encode(items: &[Item], resource: &[(String, String)]) -> Vec<u8> {
    let spans = items
        .iter()
        .flat_map(|i| match i {
            Item::Request(r) => spans(r),
            Item::Load(l) => load_spans(l),
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| text(k, v.as_str())).collect(),
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "quiver".to_owned(),
                    version: quiver_engine::SERVER_VERSION.to_owned(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec()
}

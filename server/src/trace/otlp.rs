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
//!
//! Encoded by hand into one reused buffer per nesting level, in OTLP's field
//! order and skipping default values as protobuf does: building prost
//! messages cost some 45 allocations per traced request, which with every
//! request traced was a tenth of a core on the exporter's thread.
use quiver_engine::tap::Execution;

use super::record::{Item, LoadRecord, ProtocolNames, Record};

const SERVER: u64 = 2;
const INTERNAL: u64 = 1;
/// Status code ERROR.
const ERROR: u64 = 2;

const LEN: u64 = 2;
const VARINT: u64 = 0;
const FIXED64: u64 = 1;

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn key(buf: &mut Vec<u8>, tag: u64, wire: u64) {
    varint(buf, (tag << 3) | wire);
}

/// A bytes or string field, left out when empty (protobuf's default).
fn bytes(buf: &mut Vec<u8>, tag: u64, value: &[u8]) {
    if !value.is_empty() {
        key(buf, tag, LEN);
        varint(buf, value.len() as u64);
        buf.extend_from_slice(value);
    }
}

fn uint(buf: &mut Vec<u8>, tag: u64, value: u64) {
    if value != 0 {
        key(buf, tag, VARINT);
        varint(buf, value);
    }
}

fn fixed64(buf: &mut Vec<u8>, tag: u64, value: u64) {
    if value != 0 {
        key(buf, tag, FIXED64);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// A nested message: `body` writes it into `levels[1]` (its own level,
/// with the deeper ones after it), then it is framed into `levels[0]`.
fn message(levels: &mut [Vec<u8>], tag: u64, body: impl FnOnce(&mut [Vec<u8>])) {
    let (parent, rest) = levels.split_first_mut().expect("a level for the nested message");
    rest[0].clear();
    body(rest);
    key(parent, tag, LEN);
    varint(parent, rest[0].len() as u64);
    parent.extend_from_slice(&rest[0]);
}

/// An attribute's value (AnyValue's oneof: written even when default).
#[derive(Clone, Copy)]
enum Value<'a> {
    Text(&'a str),
    Bool(bool),
    Int(i64),
}

/// A KeyValue (field `tag` of its parent).
fn attribute(levels: &mut [Vec<u8>], tag: u64, name: &str, value: Value<'_>) {
    message(levels, tag, |l| {
        bytes(&mut l[0], 1, name.as_bytes());
        message(l, 2, |l| {
            let b = &mut l[0];
            match value {
                Value::Text(t) => {
                    key(b, 1, LEN);
                    varint(b, t.len() as u64);
                    b.extend_from_slice(t.as_bytes());
                }
                Value::Bool(v) => {
                    key(b, 2, VARINT);
                    varint(b, v.into());
                }
                Value::Int(v) => {
                    key(b, 3, VARINT);
                    varint(b, v as u64);
                }
            }
        });
    });
}

/// What every span has.
struct Head<'a> {
    trace_id: &'a [u8; 16],
    span_id: &'a [u8; 8],
    trace_state: &'a str,
    parent: Option<&'a [u8; 8]>,
    name: &'a str,
    kind: u64,
    start: u64,
    end: u64,
    error: Option<&'a str>,
    /// A span of another trace this one links to (trace id, span id).
    link: Option<([u8; 16], [u8; 8])>,
}

/// A Span (field 2 of ScopeSpans), in OTLP's field order.
fn span(levels: &mut [Vec<u8>], h: Head<'_>, attributes: &[(&str, Value<'_>)], events: &[(&str, u64)]) {
    message(levels, 2, |l| {
        let b = &mut l[0];
        bytes(b, 1, h.trace_id);
        bytes(b, 2, h.span_id);
        bytes(b, 3, h.trace_state.as_bytes());
        bytes(b, 4, h.parent.map_or(&[][..], |p| &p[..]));
        bytes(b, 5, h.name.as_bytes());
        uint(b, 6, h.kind);
        fixed64(b, 7, h.start);
        fixed64(b, 8, h.end);
        for (name, value) in attributes {
            attribute(l, 9, name, *value);
        }
        for (name, time) in events {
            message(l, 11, |l| {
                fixed64(&mut l[0], 1, *time);
                bytes(&mut l[0], 2, name.as_bytes());
            });
        }
        if let Some((trace_id, span_id)) = &h.link {
            message(l, 13, |l| {
                bytes(&mut l[0], 1, trace_id);
                bytes(&mut l[0], 2, span_id);
            });
        }
        if let Some(e) = h.error {
            message(l, 15, |l| {
                bytes(&mut l[0], 2, e.as_bytes());
                uint(&mut l[0], 3, ERROR);
            });
        }
    });
}

/// The root span's events: the front end's receive, and its send when it
/// sent the answer.
fn root_events(r: &Record) -> Vec<(&'static str, u64)> {
    let mut events = vec![(r.protocol.received_event(), r.times.received)];
    if let Some((start, end)) = r.times.sent {
        let (s, e) = r.protocol.send_events();
        events.extend([(s, start), (e, end)]);
    }
    events
}

/// The spans of one traced request; returns how many.
fn request_spans(levels: &mut [Vec<u8>], r: &Record, batches: &mut Batches) -> u64 {
    let t = &r.times;
    span(
        levels,
        Head {
            trace_id: &r.ids.trace_id,
            span_id: &r.ids.span_id,
            trace_state: &r.trace_state,
            parent: r.parent.as_ref(),
            name: "InferRequest",
            kind: SERVER,
            start: t.received,
            end: t.root_end(),
            error: r.error.as_deref(),
            link: None,
        },
        &[("quiver.protocol", Value::Text(r.protocol.name()))],
        &root_events(r),
    );
    let wait_us = (t.compute_start.max(t.started) - t.started) / 1000;
    let mut attributes = vec![
        ("triton.model_name", Value::Text(&r.model)),
        ("triton.model_version", Value::Int(r.version as i64)),
        ("triton.request_id", Value::Text(&r.request_id)),
        ("quiver.shadow", Value::Bool(r.shadow)),
        ("quiver.queue_wait_us", Value::Int(wait_us as i64)),
    ];
    if let Some(v) = &r.variant {
        attributes.push(("quiver.variant", Value::Text(v)));
    }
    let mut spans = 1 + model_spans(
        levels,
        r,
        ModelRun {
            span_id: &r.model_span,
            compute_span: &r.compute_span,
            parent: &r.ids.span_id,
            model: &r.model,
            version: r.version,
            started: t.started,
            compute_start: t.compute_start,
            answered: t.answered,
            execution: &r.execution,
            batch_rows: r.batch_rows,
            error: r.error.as_deref(),
            compute_events: r.compute_events(),
        },
        &attributes,
        batches,
    );
    for s in &r.steps {
        let wait_us = (s.compute_start.max(s.started) - s.started) / 1000;
        let attributes = [
            ("triton.model_name", Value::Text(&s.model)),
            ("triton.model_version", Value::Int(s.version as i64)),
            ("quiver.ensemble.step", Value::Int(s.step as i64)),
            ("quiver.queue_wait_us", Value::Int(wait_us as i64)),
        ];
        let run = ModelRun {
            span_id: &s.span_id,
            compute_span: &s.compute_span,
            parent: &s.parent,
            model: &s.model,
            version: s.version,
            started: s.started,
            compute_start: s.compute_start,
            answered: s.answered,
            execution: &s.execution,
            batch_rows: s.batch_rows,
            error: s.error.as_deref(),
            compute_events: s.compute_events(),
        };
        spans += model_spans(levels, r, run, &attributes, batches);
    }
    spans
}

/// A model's run in a traced request: the request's own, or one of its
/// ensemble steps'.
struct ModelRun<'a> {
    span_id: &'a [u8; 8],
    compute_span: &'a [u8; 8],
    parent: &'a [u8; 8],
    model: &'a str,
    version: u64,
    started: u64,
    compute_start: u64,
    answered: u64,
    execution: &'a Execution,
    batch_rows: usize,
    error: Option<&'a str>,
    compute_events: Option<[(&'static str, u64); 4]>,
}

/// A run's model span, its `compute` span when it ran, and the first time
/// its execution comes by the `batch` span; returns how many.
fn model_spans(
    levels: &mut [Vec<u8>],
    r: &Record,
    run: ModelRun<'_>,
    attributes: &[(&str, Value<'_>)],
    batches: &mut Batches,
) -> u64 {
    let head = |span_id, parent, name, start, end| Head {
        trace_id: &r.ids.trace_id,
        span_id,
        trace_state: &r.trace_state,
        parent: Some(parent),
        name,
        kind: INTERNAL,
        start,
        end,
        error: run.error,
        link: None,
    };
    span(
        levels,
        head(run.span_id, run.parent, run.model, run.started, run.answered),
        attributes,
        &[
            ("REQUEST_START", run.started),
            ("QUEUE_START", run.started),
            ("REQUEST_END", run.answered),
        ],
    );
    let Some(events) = run.compute_events else {
        return 1;
    };
    let e = run.execution;
    let end = events[3].1;
    let mut h = head(run.compute_span, run.span_id, "compute", run.compute_start, end);
    // The execution did not fail for this request's fault alone.
    h.error = None;
    let batch = batches.ids(e.id);
    h.link = Some(batch);
    let attributes = [
        ("quiver.batch.execution", Value::Int(e.id as i64)),
        ("quiver.batch.requests", Value::Int(e.requests as i64)),
        ("quiver.batch.size", Value::Int(run.batch_rows as i64)),
    ];
    span(levels, h, &attributes, &events);
    // The execution itself, once, as a trace of its own that every traced
    // request in it links to.
    if !batches.first(e.id) {
        return 2;
    }
    let h = Head {
        trace_id: &batch.0,
        span_id: &batch.1,
        trace_state: "",
        parent: None,
        name: "batch",
        kind: INTERNAL,
        start: run.compute_start,
        end,
        error: None,
        link: None,
    };
    let mut attributes = attributes.to_vec();
    attributes.push(("triton.model_name", Value::Text(run.model)));
    attributes.push(("triton.model_version", Value::Int(run.version as i64)));
    span(levels, h, &attributes, &events);
    3
}

/// The spans a run makes without encoding them: what `model_spans` returns.
fn model_span_count(execution: u64, batches: &mut Batches) -> u64 {
    match execution {
        0 => 1,
        id => 2 + u64::from(batches.first(id)),
    }
}

/// The batch executions already exported, and their ids: a batch span is
/// sent once, by the first traced request of its execution to come by.
pub struct Batches {
    /// Random per process: batch traces of two servers never collide.
    prefix: [u8; 8],
    seen: std::collections::HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

/// Executions remembered; older ones are long exported.
const BATCHES_KEPT: usize = 4096;

impl Batches {
    fn new(prefix: [u8; 8]) -> Batches {
        Batches {
            prefix,
            seen: Default::default(),
            order: Default::default(),
        }
    }

    /// The batch span's trace and span ids of an execution.
    fn ids(&self, execution: u64) -> ([u8; 16], [u8; 8]) {
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&self.prefix);
        trace[8..].copy_from_slice(&execution.to_be_bytes());
        (trace, execution.to_be_bytes())
    }

    /// Whether this is the first time the execution comes by.
    fn first(&mut self, execution: u64) -> bool {
        if !self.seen.insert(execution) {
            return false;
        }
        self.order.push_back(execution);
        if self.order.len() > BATCHES_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// A load's spans: the root (`ModelLoad`, or `ModelDrain` for a drain)
/// from its first step to its last, and one span per step.
fn load_spans(levels: &mut [Vec<u8>], l: &LoadRecord) {
    let start = l.steps.iter().map(|s| s.start).min().unwrap_or_default();
    let end = l.steps.iter().map(|s| s.end).max().unwrap_or_default();
    let drain = !l.steps.is_empty() && l.steps.iter().all(|s| s.name == "drain");
    let head = |span_id, parent, name, start, end, error| Head {
        trace_id: &l.trace_id,
        span_id,
        trace_state: "",
        parent,
        name,
        kind: INTERNAL,
        start,
        end,
        error,
        link: None,
    };
    let name = if drain { "ModelDrain" } else { "ModelLoad" };
    span(
        levels,
        head(&l.span_id, None, name, start, end, l.error.as_deref()),
        &[("triton.model_name", Value::Text(&l.model))],
        &[],
    );
    for s in &l.steps {
        let version = s.version.map(|v| ("triton.model_version", Value::Int(v as i64)));
        span(
            levels,
            head(&s.span_id, Some(&l.span_id), s.name, s.start, s.end, s.error.as_deref()),
            version.as_slice(),
            &[],
        );
    }
}

/// Encodes export requests, reusing its buffers from one to the next.
pub struct Encoder {
    levels: Vec<Vec<u8>>,
    batches: Batches,
}

impl Encoder {
    /// `prefix`: random, the first half of every batch trace's id.
    pub fn new(prefix: [u8; 8]) -> Encoder {
        Encoder {
            levels: Vec::new(),
            batches: Batches::new(prefix),
        }
    }

    /// The spans `items` make, without encoding them (an export skipped
    /// while the receiver is down is still counted span by span).
    pub fn count(&mut self, items: &[Item]) -> u64 {
        items
            .iter()
            .map(|i| match i {
                Item::Request(r) => {
                    let steps: u64 = r
                        .steps
                        .iter()
                        .map(|s| model_span_count(s.execution.id, &mut self.batches))
                        .sum();
                    1 + model_span_count(r.execution.id, &mut self.batches) + steps
                }
                Item::Load(l) => 1 + l.steps.len() as u64,
            })
            .sum()
    }

    /// One ExportTraceServiceRequest of `items`, under quiver's resource
    /// and scope.
    /// Returns it and the spans in it.
    pub fn encode(&mut self, items: &[Item], resource: &[(String, String)]) -> (Vec<u8>, u64) {
        // Request > ResourceSpans > ScopeSpans > Span > KeyValue > AnyValue.
        self.levels.resize_with(7, Vec::new);
        self.levels[0].clear();
        let batches = &mut self.batches;
        let mut spans = 0;
        message(&mut self.levels, 1, |l| {
            message(l, 1, |l| {
                for (k, v) in resource {
                    attribute(l, 1, k, Value::Text(v));
                }
            });
            message(l, 2, |l| {
                message(l, 1, |l| {
                    bytes(&mut l[0], 1, b"quiver");
                    bytes(&mut l[0], 2, quiver_engine::SERVER_VERSION.as_bytes());
                });
                for item in items {
                    spans += match item {
                        Item::Request(r) => request_spans(l, r, batches),
                        Item::Load(x) => {
                            load_spans(l, x);
                            1 + x.steps.len() as u64
                        }
                    };
                }
            });
        });
        (self.levels[0].clone(), spans)
    }
}

/// OTLP's messages as prost decodes them: the tests' check of the encoder.
#[cfg(test)]
mod decode {
    use prost::Message;

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
        #[prost(message, repeated, tag = "13")]
        pub links: Vec<Link>,
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
    pub struct Link {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
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
            Text(String),
            #[prost(bool, tag = "2")]
            Bool(bool),
            #[prost(int64, tag = "3")]
            Int(i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost::Message;
    use quiver_engine::tap::{Execution, Protocol, TraceIds};

    use super::decode::*;
    use super::*;
    use crate::trace::record::{StepRecord, StepSpan, Times};

    fn value(kv: &KeyValue) -> any_value::Value {
        kv.value.clone().unwrap().value.unwrap()
    }

    #[test]
    fn a_batched_request_and_a_load_decode_as_otlp() {
        let record = Record {
            ids: TraceIds {
                trace_id: [7; 16],
                span_id: [1; 8],
            },
            parent: Some([9; 8]),
            trace_state: "k=v".into(),
            model_span: [2; 8],
            compute_span: [3; 8],
            number: 1,
            model: "fraud".into(),
            version: 3,
            request_id: String::new(),
            protocol: Protocol::Grpc,
            variant: Some("canary".into()),
            shadow: false,
            error: None,
            execution: Execution {
                id: 42,
                requests: 4,
                input: Duration::from_nanos(10),
                infer: Duration::from_nanos(100),
                output: Duration::from_nanos(5),
            },
            batch_rows: 8,
            log_frequency: 0,
            times: Times {
                received: 1_000,
                started: 1_100,
                compute_start: 2_000,
                answered: 3_000,
                end: 3_100,
                sent: Some((3_050, 3_200)),
            },
            steps: Vec::new(),
        };
        let load = LoadRecord {
            trace_id: [5; 16],
            span_id: [6; 8],
            model: "fraud".into(),
            error: Some("gate failed".into()),
            steps: vec![StepRecord {
                span_id: [4; 8],
                name: "gate",
                version: Some(3),
                start: 10,
                end: 20,
                error: Some("gate failed".into()),
            }],
        };
        let resource = [("service.name".to_owned(), "quiver".to_owned())];
        let mut encoder = Encoder::new([8; 8]);
        let items = [Item::Request(record), Item::Load(load)];
        // The first export has the execution's batch span, the second not:
        // it went with the first. The reused buffers start clean.
        let (_, first) = encoder.encode(&items, &resource);
        let (bytes, second) = encoder.encode(&items, &resource);
        assert_eq!((first, second), (6, 5));
        assert_eq!(Encoder::new([8; 8]).count(&items), 6);
        let request = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let rs = &request.resource_spans[0];
        assert_eq!(rs.resource.as_ref().unwrap().attributes[0].key, "service.name");
        let scope = &rs.scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "quiver");
        let names: Vec<&str> = scope.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["InferRequest", "fraud", "compute", "ModelLoad", "gate"]);
        let [root, model, compute, load, gate] = &scope.spans[..] else {
            unreachable!()
        };
        assert_eq!(
            (root.trace_id.as_slice(), root.parent_span_id.as_slice()),
            (&[7; 16][..], &[9; 8][..])
        );
        assert_eq!((root.kind, root.trace_state.as_str()), (2, "k=v"));
        assert_eq!((root.start_time_unix_nano, root.end_time_unix_nano), (1_000, 3_200));
        let events: Vec<(&str, u64)> = root
            .events
            .iter()
            .map(|e| (e.name.as_str(), e.time_unix_nano))
            .collect();
        assert_eq!(
            events,
            [
                ("GRPC_WAITREAD_END", 1_000),
                ("GRPC_SEND_START", 3_050),
                ("GRPC_SEND_END", 3_200)
            ]
        );
        assert_eq!(model.parent_span_id, [1; 8]);
        let events: Vec<&str> = model.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(events, ["REQUEST_START", "QUEUE_START", "REQUEST_END"]);
        let attrs: Vec<(&str, any_value::Value)> =
            model.attributes.iter().map(|kv| (kv.key.as_str(), value(kv))).collect();
        assert!(attrs.contains(&("triton.model_version", any_value::Value::Int(3))));
        // An empty request id is still a value (a oneof is always written).
        assert!(attrs.contains(&("triton.request_id", any_value::Value::Text(String::new()))));
        assert!(attrs.contains(&("quiver.shadow", any_value::Value::Bool(false))));
        assert!(attrs.contains(&("quiver.variant", any_value::Value::Text("canary".into()))));
        assert!(attrs.contains(&("quiver.queue_wait_us", any_value::Value::Int(0))));
        assert_eq!(compute.parent_span_id, [2; 8]);
        let times: Vec<u64> = compute.events.iter().map(|e| e.time_unix_nano).collect();
        assert_eq!(times, [2_000, 2_010, 2_110, 2_115]);
        assert_eq!(value(&compute.attributes[0]), any_value::Value::Int(42));
        let link = &compute.links[0];
        let mut batch_trace = [8u8; 16];
        batch_trace[8..].copy_from_slice(&42u64.to_be_bytes());
        assert_eq!(
            (link.trace_id.as_slice(), link.span_id.as_slice()),
            (&batch_trace[..], &42u64.to_be_bytes()[..])
        );
        assert!(load.parent_span_id.is_empty());
        assert_eq!(load.status.as_ref().unwrap().code, 2);
        assert_eq!((gate.start_time_unix_nano, gate.end_time_unix_nano), (10, 20));
        assert_eq!(gate.status.as_ref().unwrap().message, "gate failed");
        assert!(root.status.is_none());
    }

    #[test]
    fn an_ensemble_request_has_a_span_per_step_under_its_model_span() {
        let execution = |id| Execution {
            id,
            requests: 2,
            input: Duration::from_nanos(10),
            infer: Duration::from_nanos(100),
            output: Duration::from_nanos(5),
        };
        let step = |n: u8, model: &str, id| StepSpan {
            span_id: [n; 8],
            compute_span: [n + 10; 8],
            parent: [2; 8],
            number: u64::from(n),
            parent_number: 1,
            step: usize::from(n),
            model: model.into(),
            version: 1,
            started: 1_200,
            compute_start: 1_300,
            answered: 1_500,
            execution: execution(id),
            batch_rows: 2,
            error: None,
        };
        let record = Record {
            ids: TraceIds {
                trace_id: [7; 16],
                span_id: [1; 8],
            },
            parent: None,
            trace_state: String::new(),
            model_span: [2; 8],
            compute_span: [3; 8],
            number: 1,
            model: "pipeline".into(),
            version: 1,
            request_id: "r".into(),
            protocol: Protocol::Http,
            variant: None,
            shadow: false,
            error: None,
            // An ensemble runs nothing itself.
            execution: Execution::default(),
            batch_rows: 0,
            log_frequency: 0,
            times: Times {
                received: 1_000,
                started: 1_100,
                compute_start: 1_100,
                answered: 2_000,
                end: 2_100,
                sent: None,
            },
            steps: vec![step(4, "scaler", 50), step(5, "mlp", 51)],
        };
        let items = [Item::Request(record)];
        let mut encoder = Encoder::new([8; 8]);
        assert_eq!(Encoder::new([8; 8]).count(&items), 8);
        let (bytes, spans) = encoder.encode(&items, &[]);
        assert_eq!(spans, 8);
        let request = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "InferRequest",
                "pipeline",
                "scaler",
                "compute",
                "batch",
                "mlp",
                "compute",
                "batch"
            ]
        );
        let scaler = &spans[2];
        assert_eq!(scaler.trace_id, [7; 16]);
        assert_eq!(
            scaler.parent_span_id, [2; 8],
            "a step is a child of the ensemble's model span"
        );
        assert_eq!((scaler.start_time_unix_nano, scaler.end_time_unix_nano), (1_200, 1_500));
        let attribute = |span: &Span, key: &str| span.attributes.iter().find(|a| a.key == key).map(value);
        assert_eq!(
            attribute(scaler, "quiver.ensemble.step"),
            Some(any_value::Value::Int(4))
        );
        assert_eq!(
            attribute(scaler, "quiver.queue_wait_us"),
            Some(any_value::Value::Int(0))
        );
        assert_eq!(spans[3].parent_span_id, [4; 8]);
        assert_eq!(spans[3].links[0].span_id, 50u64.to_be_bytes());
        assert_eq!(spans[6].parent_span_id, [5; 8]);
    }
}

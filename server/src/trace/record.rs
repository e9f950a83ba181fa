//! What the tracer hands its exporter: a traced request's record (ids,
//! names and the engine's times, as Unix nanoseconds) or a load's steps.
use quiver_engine::tap::{Execution, Protocol, TraceIds};

/// What goes to the exporter. Requests are nearly all of it: boxing them
/// to shrink the rare load would cost an allocation per traced request.
#[allow(clippy::large_enum_variant)]
pub enum Item {
    Request(Record),
    Load(LoadRecord),
}

/// A model's load (or the drain of what it retired) as one trace: a root
/// span `ModelLoad` (or `ModelDrain`) and a span per step. Times are Unix
/// nanoseconds.
pub struct LoadRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub model: String,
    pub error: Option<String>,
    pub steps: Vec<StepRecord>,
}

pub struct StepRecord {
    pub span_id: [u8; 8],
    pub name: &'static str,
    pub version: Option<u64>,
    pub start: u64,
    pub end: u64,
    pub error: Option<String>,
}

/// One traced request, as the exporter needs it. Times are Unix
/// nanoseconds.
pub struct Record {
    pub ids: TraceIds,
    pub parent: Option<[u8; 8]>,
    pub trace_state: String,
    pub model_span: [u8; 8],
    pub compute_span: [u8; 8],
    /// Numbered from 1 for Triton's trace file.
    pub number: u64,
    pub model: String,
    pub version: u64,
    pub request_id: String,
    pub protocol: Protocol,
    pub variant: Option<String>,
    pub shadow: bool,
    pub error: Option<String>,
    pub execution: Execution,
    pub batch_rows: usize,
    pub times: Times,
    /// Triton mode: the trace setting's `log_frequency` when it was traced.
    pub log_frequency: u32,
    /// An ensemble's request: its steps' requests, in the order they ended.
    pub steps: Vec<StepSpan>,
}

impl Record {
    /// Triton's compute events, when the request ran.
    pub fn compute_events(&self) -> Option<[(&'static str, u64); 4]> {
        compute_events(&self.execution, self.times.compute_start)
    }
}

/// One step of a traced ensemble request: the step model's request, a
/// child of the ensemble's model span (of the step's span, for the steps of
/// an ensemble that is itself a step). Times are Unix nanoseconds.
pub struct StepSpan {
    pub span_id: [u8; 8],
    pub compute_span: [u8; 8],
    pub parent: [u8; 8],
    /// Numbered like requests, for Triton's trace file, where the parent
    /// is named by its number.
    pub number: u64,
    pub parent_number: u64,
    /// The position in the ensemble's config, from 0.
    pub step: usize,
    pub model: String,
    pub version: u64,
    pub started: u64,
    pub compute_start: u64,
    pub answered: u64,
    pub execution: Execution,
    pub batch_rows: usize,
    pub error: Option<String>,
}

impl StepSpan {
    pub fn compute_events(&self) -> Option<[(&'static str, u64); 4]> {
        compute_events(&self.execution, self.compute_start)
    }
}

/// Triton's compute events of an execution that started at `start`: its
/// phases laid end to end; `None` when there was none.
fn compute_events(e: &Execution, start: u64) -> Option<[(&'static str, u64); 4]> {
    if e.id == 0 {
        return None;
    }
    let input_end = start + e.input.as_nanos() as u64;
    let output_start = input_end + e.infer.as_nanos() as u64;
    Some([
        ("COMPUTE_START", start),
        ("COMPUTE_INPUT_END", input_end),
        ("COMPUTE_OUTPUT_START", output_start),
        ("COMPUTE_END", output_start + e.output.as_nanos() as u64),
    ])
}

/// A traced request's moments, in Unix nanoseconds.
pub struct Times {
    /// The front end had the whole request.
    pub received: u64,
    /// The engine took it (REQUEST_START, QUEUE_START).
    pub started: u64,
    /// Its execution began (COMPUTE_START); `started` when it never ran.
    pub compute_start: u64,
    /// The answer was ready (REQUEST_END).
    pub answered: u64,
    /// The tracer saw it: the root span's end, unless sent later.
    pub end: u64,
    /// The front end began encoding the answer, and handed it to the
    /// connection; `None` for an answer not sent (an error, a shadow copy).
    pub sent: Option<(u64, u64)>,
}

impl Times {
    /// The root span's end: when the answer was handed over, if it was.
    pub fn root_end(&self) -> u64 {
        self.sent.map_or(self.end, |(_, end)| end.max(self.end))
    }
}

pub trait ProtocolNames {
    fn name(self) -> &'static str;
    fn received_event(self) -> &'static str;
    /// Triton's names for the start and end of sending the answer.
    fn send_events(self) -> (&'static str, &'static str);
}

impl ProtocolNames for Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::GrpcStream => "grpc-stream",
            Protocol::Internal => "internal",
        }
    }

    /// Triton's name for the moment the front end had the request.
    fn received_event(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP_RECV_END",
            Protocol::Grpc | Protocol::GrpcStream => "GRPC_WAITREAD_END",
            Protocol::Internal => "REQUEST_RECEIVED",
        }
    }

    fn send_events(self) -> (&'static str, &'static str) {
        match self {
            Protocol::Http => ("HTTP_SEND_START", "HTTP_SEND_END"),
            _ => ("GRPC_SEND_START", "GRPC_SEND_END"),
        }
    }
}

//! Taps: where what watches the request path plugs in.
//!
//! Every request, whichever front end it came from (REST, gRPC, a stream),
//! ends in one [`Exchange`] record, built once on the one request path
//! (`infer.rs`) after the answer is ready: the version and traffic variant
//! that served it, the routing context the front end extracted, the request
//! and the answer (tensors as shared `Bytes`: no copies), or the error, and
//! the times the engine took anyway. Observers see that record:
//!
//! - the traffic statistics of the variant (`traffic/`) and its shadow copy
//!   (whose own run is an exchange of [`Kind::Shadow`] in turn);
//! - the taps registered server-wide ([`crate::Engine::with_tap`]);
//! - the taps of the version itself, made at load by the [`TapFactory`]s
//!   registered with the engine, so that they swap with the version: a hot
//!   swap never sends one version's traffic to another version's monitor.
//!
//! A tap must return at once: it copies what it needs (shared buffers cost
//! a reference count) into a bounded queue of its own ([`Queue`]) and does
//! its work elsewhere. A full queue drops and counts; the answer never waits
//! for a tap. With no tap registered, a request pays two length checks.
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use quiver_proto::inference::ModelConfig;

use crate::error::Error;
use crate::provenance::Provenance;
use crate::repository::model_config::ModelSpec;
use crate::request::{InferRequest, InferResponse};

/// A request's headers (HTTP) or metadata (gRPC), by lower-case name.
pub trait Headers: Sync {
    fn get(&self, name: &str) -> Option<&str>;
}

/// The front end a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
    /// `ModelStreamInfer`.
    GrpcStream,
    /// From inside the server: a shadow copy.
    Internal,
}

/// What the front end knows of a request besides its tensors: the protocol,
/// its headers or metadata (routing reads them; a tap reads what it needs,
/// such as a trace context or a request id), and when it arrived.
pub struct Context<'a> {
    pub protocol: Protocol,
    headers: &'a dyn Headers,
    /// When the front end had the whole request.
    pub received: Instant,
    /// Set by a tap that traced the request; the front end answers it.
    trace: OnceLock<TraceIds>,
    /// What a tap left to finish once the answer is sent (a traced
    /// request's record, which wants the send times); run by
    /// [`Context::sent`], or at drop without them.
    after_send: Mutex<Option<AfterSend>>,
}

/// When the front end began encoding the answer and when it handed the
/// encoded answer to its connection.
pub type SendTimes = Option<(Instant, Instant)>;

type AfterSend = Box<dyn FnOnce(SendTimes) + Send>;

/// The W3C trace context of a traced request's server span: what the
/// answer's `traceparent` carries back to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl TraceIds {
    /// The trace id in lower-case hex, as W3C and OTLP's JSON write it.
    pub fn trace_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        hex(&mut s, &self.trace_id);
        s
    }

    pub fn span_hex(&self) -> String {
        let mut s = String::with_capacity(16);
        hex(&mut s, &self.span_id);
        s
    }

    /// As a `traceparent` header value (version 00, sampled).
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex(&mut s, &self.trace_id);
        s.push('-');
        hex(&mut s, &self.span_id);
        s.push_str("-01");
        s
    }
}

fn hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

struct NoHeaders;

impl Headers for NoHeaders {
    fn get(&self, _: &str) -> Option<&str> {
        None
    }
}

impl<'a> Context<'a> {
    pub fn new(protocol: Protocol, headers: &'a dyn Headers) -> Context<'a> {
        Context {
            protocol,
            headers,
            received: Instant::now(),
            trace: OnceLock::new(),
            after_send: Mutex::new(None),
        }
    }

    /// A request with no headers (embedding, benchmarks, shadow copies).
    pub fn internal() -> Context<'static> {
        Context {
            protocol: Protocol::Internal,
            headers: &NoHeaders,
            received: Instant::now(),
            trace: OnceLock::new(),
            after_send: Mutex::new(None),
        }
    }

    /// A header (HTTP) or metadata entry (gRPC), by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    pub(crate) fn headers(&self) -> &dyn Headers {
        self.headers
    }

    /// Marks the request as traced (the first tap to do so wins).
    pub fn set_trace(&self, ids: TraceIds) {
        let _ = self.trace.set(ids);
    }

    /// The trace the request joined, when a tap traced it.
    pub fn trace(&self) -> Option<&TraceIds> {
        self.trace.get()
    }

    /// Leaves `work` to run when the answer is sent ([`Context::sent`]), or
    /// when the context is dropped without that. Only for traced requests:
    /// it costs an allocation.
    pub fn after_send(&self, work: impl FnOnce(SendTimes) + Send + 'static) {
        *self.after_send.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(work));
    }

    /// The front end encoded the answer between `start` and now and handed
    /// it to the connection. Free unless a tap left work ([`Context::after_send`]).
    pub fn sent(&self, start: Instant) {
        if self.trace.get().is_none() {
            return;
        }
        let work = self.after_send.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(work) = work {
            work(Some((start, Instant::now())));
        }
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        if let Some(work) = self.after_send.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            work(None);
        }
    }
}

/// Where a request spent its time, as the batcher measured it.
#[derive(Clone, Debug)]
pub struct Timing {
    /// When the engine took the request (after decoding).
    pub started: Instant,
    /// From `started` until the answer (or the error) was ready.
    pub elapsed: Duration,
    /// Time in the version's queue; zero when it never reached one.
    pub queued: Duration,
    /// Rows of the execution it was part of; zero when it did not run.
    pub batch_rows: usize,
    /// The execution it was part of; all zero when it did not run.
    pub execution: Execution,
    /// An ensemble's request: each step it ran, in the order they ended
    /// (empty otherwise, and then no allocation).
    pub steps: Vec<StepRun>,
}

/// One step of an ensemble's request: the step model's own request.
#[derive(Clone, Debug)]
pub struct StepRun {
    /// The step's position in the ensemble's config, from 0.
    pub step: usize,
    pub model: String,
    /// The version that ran it; 0 when none could be resolved.
    pub version: u64,
    pub timing: Timing,
    pub error: Option<String>,
}

/// The model execution a request ran in, as its instance measured it. The
/// requests batched together share it (same `id`): the tracer shows who a
/// request ran with, and what the batch's phases cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Execution {
    /// Numbered process-wide from 1; 0 when the request never ran.
    pub id: u64,
    /// Requests in the execution.
    pub requests: usize,
    /// Laying out the batch's inputs, the runtime's run, slicing outputs back.
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

impl Timing {
    /// A request the engine takes now.
    pub fn start() -> Timing {
        Timing {
            started: Instant::now(),
            elapsed: Duration::ZERO,
            queued: Duration::ZERO,
            batch_rows: 0,
            execution: Execution::default(),
            steps: Vec::new(),
        }
    }
}

/// A model version as observers see it.
#[derive(Clone, Copy)]
pub struct Version<'a> {
    pub name: &'a str,
    pub version: u64,
    /// Inputs and outputs, batching.
    pub spec: &'a ModelSpec,
    /// The completed configuration (parameters a tap may read).
    pub config: &'a Arc<ModelConfig>,
    /// Where it came from.
    pub provenance: &'a Provenance,
}

/// Whose request an exchange is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A client's request, answered to the client.
    Client,
    /// The shadow copy of a client's request (traffic splitting), run on
    /// the shadow variant's version after the client had its answer; its
    /// answer goes nowhere but the comparison.
    Shadow,
    /// A step of an ensemble's request: the step model's request, seen by
    /// that model's own taps (its monitor sees the pipeline's traffic);
    /// the server-wide taps see the ensemble's request instead.
    Step,
}

/// One request and its outcome, as observers see it.
pub struct Exchange<'a> {
    pub kind: Kind,
    /// The version that served it.
    pub model: Version<'a>,
    /// The traffic variant that chose the version, when a policy did.
    pub variant: Option<&'a str>,
    pub context: &'a Context<'a>,
    /// The request as decoded (inputs share the wire buffers), shared by
    /// the observers: one that keeps it takes a reference count. `None`
    /// when no observer asked for it ([`Tap::wants_request`]).
    pub request: Option<&'a Arc<InferRequest>>,
    pub result: &'a Result<InferResponse, Error>,
    pub timing: Timing,
}

/// One step of a model's load, as the engine timed it: `load` (the
/// runtimes of every instance), `warm-up`, `gate` (per version), `switch`
/// (the one swap of the model's entry), `drain` (until the last request on
/// a retired version let go).
#[derive(Clone, Debug)]
pub struct Step {
    pub name: &'static str,
    pub version: Option<u64>,
    pub start: Instant,
    pub end: Instant,
    /// Why the step failed, when it did.
    pub error: Option<String>,
}

/// A model's load (plan, each version's steps, the switch), or the drain of
/// the versions a load retired, which ends later on a thread of its own.
pub struct Load<'a> {
    pub model: &'a str,
    pub steps: &'a [Step],
    /// Why the load failed, when it did.
    pub error: Option<&'a str>,
}

/// Something that watches requests. `observe` runs on the request's task
/// right after its answer is ready: it must not block or do real work there.
pub trait Tap: Send + Sync {
    fn observe(&self, exchange: &Exchange<'_>);

    /// Before the request runs on `model`: a tracer decides here whether it
    /// is traced and marks the context ([`Context::set_trace`]), so that the
    /// log lines of its run carry the trace. Same rule: return at once.
    fn begin(&self, _model: &Version<'_>, _context: &Context<'_>) {}

    /// A load or a drain ended (server-wide taps only). Runs on the loading
    /// thread: the same rule, return at once.
    fn load(&self, _load: &Load<'_>) {}

    /// Whether [`Exchange::request`] should be filled: keeping the request
    /// for observers costs a clone of its names and shapes (never of its
    /// tensor bytes).
    fn wants_request(&self) -> bool {
        true
    }
}

/// Makes the taps of a version when it loads (from its config or the files
/// of its model folder, when it has one: a drift reference, a payload-log
/// setting); `None` when it needs none. An `Err` fails the version's load with that reason
/// (the version it would replace keeps serving).
pub trait TapFactory: Send + Sync {
    fn tap(&self, version: &Version<'_>, model_dir: Option<&Path>) -> Result<Option<Arc<dyn Tap>>, String>;
}

/// The observers a request's route carries: the engine's and the version's.
#[derive(Clone, Default)]
pub struct Taps(Arc<[Arc<dyn Tap>]>);

impl Taps {
    pub fn new(taps: Vec<Arc<dyn Tap>>) -> Taps {
        Taps(taps.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn wants_request(&self) -> bool {
        self.0.iter().any(|t| t.wants_request())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tap>> {
        self.0.iter()
    }

    pub fn observe(&self, exchange: &Exchange<'_>) {
        for tap in self.0.iter() {
            tap.observe(exchange);
        }
    }

    pub fn begin(&self, model: &Version<'_>, context: &Context<'_>) {
        for tap in self.0.iter() {
            tap.begin(model, context);
        }
    }

    pub fn load(&self, load: &Load<'_>) {
        for tap in self.0.iter() {
            tap.load(load);
        }
    }
}

/// A bounded hand-off from the request path to a tap's worker: `push`
/// never waits; when the worker is behind, the record is dropped and
/// counted.
pub struct Queue<T> {
    sender: tokio::sync::mpsc::Sender<T>,
    dropped: AtomicU64,
}

impl<T> Queue<T> {
    /// A queue of `capacity` records and the receiving end for the worker.
    pub fn new(capacity: usize) -> (Queue<T>, tokio::sync::mpsc::Receiver<T>) {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        (
            Queue {
                sender,
                dropped: AtomicU64::new(0),
            },
            receiver,
        )
    }

    /// `false`: dropped (the queue was full or the worker has gone).
    pub fn push(&self, record: T) -> bool {
        let sent = self.sender.try_send(record).is_ok();
        if !sent {
            self.dropped.fetch_add(1, Relaxed);
        }
        sent
    }

    /// Records dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (queue, mut rx) = Queue::new(2);
        assert!(queue.push(1));
        assert!(queue.push(2));
        assert!(!queue.push(3));
        assert_eq!(queue.dropped(), 1);
        assert_eq!(rx.try_recv().ok(), Some(1));
        assert!(queue.push(4));
        drop(rx);
        assert!(!queue.push(5));
        assert_eq!(queue.dropped(), 2);
    }
}

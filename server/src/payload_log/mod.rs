//! Payload logging (docs/logging.md): every request a version serves and
//! its answer (or error) as CloudEvents in KServe's logger format, to an
//! HTTP sink and/or a JSON Lines file.
//!
//! A version's tap ([`LogTap`]) runs on the request path: it decides
//! whether to log (the model's mode and sample rate), takes the id and the
//! metadata headers, and pushes a [`Record`] sharing the request's and the
//! answer's tensor buffers into each sink's bounded queue; a full queue
//! drops and counts. The sinks' workers encode and send, off the request
//! path; the server's stop flushes them within its grace period.
pub mod event;
mod file;
mod http;
pub mod id;
mod queue;
pub mod settings;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use metrics::counter;
use quiver_engine::request::own_small_tensors;
use quiver_engine::tap::{Exchange, Kind, Protocol, Tap, TapFactory, Version};

use crate::error::Codes as _;
pub use event::{Event, Framing, Origin, Record};
pub use id::EventId;
use id::mix;
use queue::Sink;
pub use settings::{Global, Mode, Scheduling, Settings};

pub use queue::{DROPPED, FAILED, RETRIED, SENT, TRUNCATED};

/// Runs a sink's worker on a thread of its own, with a runtime of its own:
/// its encoding, writes and POSTs never queue behind (or ahead of) the
/// serving runtime's tasks, and the OS can run it on a core that serving
/// leaves idle. Under [`Scheduling::Idle`] it runs only on such time: on a
/// busy core, the serving threads win every wake-up, and a worker that falls
/// behind lets its queue fill (what overflows is dropped and counted) rather
/// than take the core's time from serving (KServe's one event a POST on one
/// core: 20k requests a second served with the default policy, 48k under
/// SCHED_IDLE; docs/logging.md).
fn on_own_thread(
    scheduling: Scheduling,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("quiver-payload-log".into())
        .spawn(move || {
            if scheduling == Scheduling::Idle {
                idle_scheduling();
            }
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(work),
                Err(e) => tracing::error!(error = %e, "payload log: cannot start a sink's runtime"),
            }
        })?;
    Ok(())
}

/// Puts the calling thread under Linux's `SCHED_IDLE` (no privilege needed
/// to lower a thread's own priority). Elsewhere, or if refused, the default
/// policy stays.
fn idle_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: the calling thread (0) and a valid parameter block.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "payload log: SCHED_IDLE refused; the sink's worker keeps the default policy"
            );
        }
    }
}

/// The payload logger: makes each version's tap, owns the sinks.
pub struct PayloadLog {
    global: Global,
    /// HTTP sinks by URL (a model may name its own), made on first use.
    http: Mutex<HashMap<String, Arc<Sink>>>,
    file: Option<Arc<Sink>>,
}

impl PayloadLog {
    pub fn new(global: Global) -> std::io::Result<Arc<PayloadLog>> {
        let file = match &global.file {
            None => None,
            Some(settings) => {
                let taker = Sink::open(
                    format!("file {}", settings.path.display()),
                    global.queue,
                    global.queue_bytes,
                );
                let sink = Arc::clone(&taker.sink);
                let out = file::Rotating::open(settings.clone())?;
                on_own_thread(global.scheduling, file::run(taker, out))?;
                Some(sink)
            }
        };
        Ok(Arc::new(PayloadLog {
            global,
            http: Mutex::new(HashMap::new()),
            file,
        }))
    }

    fn http_sink(&self, url: &str) -> Arc<Sink> {
        let mut sinks = self.http.lock().unwrap_or_else(|e| e.into_inner());
        let sink = sinks.entry(url.to_owned()).or_insert_with(|| {
            let taker = Sink::open(format!("http {url}"), self.global.queue, self.global.queue_bytes);
            let sink = Arc::clone(&taker.sink);
            let (url, global) = (url.to_owned(), self.global.clone());
            if let Err(e) = on_own_thread(global.scheduling, http::run(url, taker, global)) {
                // Without a worker the queue fills and every event is counted as dropped.
                tracing::error!(error = %e, sink = sink.label, "payload log: cannot start the sink's thread");
            }
            sink
        });
        Arc::clone(sink)
    }

    /// The server is stopping: every sink sends what it holds within `budget`;
    /// what it cannot is counted as failed and logged.
    pub async fn close(&self, budget: Duration) {
        let deadline = Instant::now() + budget;
        let mut sinks: Vec<Arc<Sink>> = self
            .http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        sinks.extend(self.file.clone());
        let waiting: usize = sinks.iter().map(|s| s.depth()).sum();
        if waiting > 0 {
            tracing::info!(records = waiting, "payload log: flushing before stopping");
        }
        for sink in &sinks {
            sink.signal(deadline);
        }
        for sink in &sinks {
            sink.wait(deadline).await;
        }
    }
}

impl TapFactory for PayloadLog {
    fn tap(&self, version: &Version<'_>, _model_dir: Option<&Path>) -> Result<Option<Arc<dyn Tap>>, String> {
        let settings = self.global.defaults.for_model(version.config)?;
        if !settings.logs() {
            return Ok(None);
        }
        let Some(mode) = settings.mode else { return Ok(None) };
        let mut sinks = Vec::new();
        if let Some(url) = &settings.url {
            sinks.push(self.http_sink(url));
        }
        if settings.file {
            sinks.extend(self.file.clone());
        }
        let source = match &self.global.source_uri {
            Some(s) => s.clone(),
            None => format!(
                "http://localhost:{}/v2/models/{}/versions/{}",
                self.global.http_port, version.name, version.version
            ),
        };
        let model: Arc<str> = version.name.into();
        let dropped = sinks
            .iter()
            .map(|s| counter!(DROPPED, "model" => model.to_string(), "sink" => s.label.clone()))
            .collect();
        tracing::info!(
            model = version.name,
            version = version.version,
            mode = ?mode,
            sinks = ?sinks.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(),
            "payload logging"
        );
        Ok(Some(Arc::new(LogTap {
            origin: Arc::new(Origin::new(
                model,
                version.version,
                source,
                settings,
                (
                    self.global.inference_service.clone(),
                    self.global.namespace.clone(),
                    self.global.component.clone(),
                ),
            )),
            mode,
            endpoint: self.global.endpoint.as_str().into(),
            sinks,
            dropped,
            seen: AtomicU64::new(0),
        })))
    }
}

/// A version's payload log, on the request path.
pub struct LogTap {
    origin: Arc<Origin>,
    mode: Mode,
    endpoint: Arc<str>,
    sinks: Vec<Arc<Sink>>,
    /// Per sink.
    dropped: Vec<metrics::Counter>,
    seen: AtomicU64,
}

impl LogTap {
    /// Whether this exchange is in the sample: a Weyl sequence through a
    /// mixer, so every rate is met evenly with no lock and no RNG state.
    fn sampled(&self) -> bool {
        let rate = self.origin.settings.sample_rate;
        if rate >= 1.0 {
            return true;
        }
        let n = self.seen.fetch_add(1, Relaxed);
        (mix(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as f64) < rate * u64::MAX as f64
    }
}

impl Tap for LogTap {
    fn observe(&self, exchange: &Exchange<'_>) {
        for sink in &self.sinks {
            sink.reap();
        }
        if !self.sampled() {
            return;
        }
        if self.sinks.iter().all(|s| s.full()) {
            for dropped in &self.dropped {
                dropped.increment(self.mode.events());
            }
            return;
        }
        let context = exchange.context;
        let answered = SystemTime::now();
        let received = answered.checked_sub(context.received.elapsed()).unwrap_or(answered);
        // The binary extension is REST's: a gRPC call is logged as V2 JSON
        // whatever its metadata says.
        let binary = match context.protocol {
            Protocol::Http => context.header("inference-header-content-length"),
            _ => None,
        };
        let framing = match binary {
            None => Framing::Json,
            Some(n) if n.trim() == "0" => Framing::Raw,
            Some(_) => Framing::Binary,
        };
        // The request is the engine's kept copy (a reference count); the
        // answer goes to the client, so its names and shapes are cloned, and
        // its small outputs copied out of their batch's buffer.
        let request = exchange.request.cloned();
        let mut outcome = match exchange.result {
            Ok(r) => Ok(r.clone()),
            Err(e) => Err((e.kind.http_status().as_u16(), e.message.clone())),
        };
        if let Ok(answer) = &mut outcome {
            own_small_tensors([&mut answer.outputs[..]]);
        }
        let record = Arc::new(Record {
            origin: Arc::clone(&self.origin),
            id: context
                .header("ce-id")
                .map_or_else(EventId::new, |id| EventId::Given(id.to_owned())),
            endpoint: exchange.variant.map_or_else(|| Arc::clone(&self.endpoint), Arc::from),
            shadow: exchange.kind == Kind::Shadow,
            framing,
            metadata: match self.origin.settings.metadata_headers.is_empty() {
                true => String::new(),
                false => event::metadata(&self.origin.settings, |h| context.header(h).map(str::to_owned)),
            },
            received,
            answered,
            request,
            outcome,
        });
        let bytes = record.bytes();
        for (sink, dropped) in self.sinks.iter().zip(&self.dropped) {
            if !sink.push(&record, bytes) {
                dropped.increment(self.mode.events());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn workers_run_under_the_policy_asked_for() {
        for (scheduling, policy) in [
            (Scheduling::Idle, libc::SCHED_IDLE),
            (Scheduling::Normal, libc::SCHED_OTHER),
        ] {
            let (tx, rx) = std::sync::mpsc::channel();
            on_own_thread(scheduling, async move {
                // SAFETY: no arguments; the calling thread's policy.
                let _ = tx.send(unsafe { libc::sched_getscheduler(0) });
            })
            .unwrap();
            assert_eq!(rx.recv().unwrap(), policy, "{scheduling:?}");
        }
        assert_eq!("normal".parse(), Ok(Scheduling::Normal));
        let refused = "fast".parse::<Scheduling>().unwrap_err();
        assert!(
            refused.contains("'fast'") && refused.contains("idle, normal"),
            "{refused}"
        );
    }
}

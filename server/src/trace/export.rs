//! The exporter: traced requests off the request path, on a thread of
//! their own, to an OTLP/HTTP receiver (batched as OpenTelemetry's batch
//! span processor does: a bounded queue, a batch size, a schedule delay) or
//! to Triton's JSON trace file.
//!
//! Nothing here can slow a request: the queue never waits, a receiver that
//! is slow or down only fills it, and what does not fit is dropped and
//! counted (`quiver_trace_spans_dropped_total`).
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quiver_engine::tap::Queue;
use tokio::sync::{mpsc, oneshot, watch};

use super::otlp;
use super::record::{Item, ProtocolNames, Record};
use super::settings::{Config, Mode};

const EXPORTED: &str = "quiver_trace_spans_exported_total";
const FAILED: &str = "quiver_trace_spans_failed_total";
const DROPPED: &str = "quiver_trace_spans_dropped_total";

fn span_count(item: &Item) -> u64 {
    match item {
        Item::Request(r) if r.execution.id == 0 => 2,
        Item::Request(_) => 3,
        Item::Load(l) => 1 + l.steps.len() as u64,
    }
}

pub struct Exporter {
    queue: Option<Queue<Item>>,
    closing: watch::Sender<bool>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

enum Sink {
    Otlp {
        client: reqwest::Client,
        url: String,
        resource: Vec<(String, String)>,
        encoder: otlp::Encoder,
        /// After a refused connection, batches fail without being encoded
        /// until then: a receiver that is down costs less than one that answers.
        down_until: Option<Instant>,
        /// Failed exports so far; logged at the 1st, 2nd, 4th, ... time.
        failures: u64,
    },
    /// Triton's trace file: every `frequency` traces to `<file>.<n>`, or
    /// all of them at exit to `<file>` when `frequency` is 0.
    File {
        path: PathBuf,
        frequency: usize,
        index: usize,
        pending: Vec<String>,
    },
}

impl Exporter {
    /// Starts the thread; in Triton mode without a trace file there is
    /// nowhere to write, and traced requests are counted as dropped.
    /// `batch_prefix`: random, the first half of every batch trace's id.
    pub fn start(config: &Config, batch_prefix: [u8; 8]) -> std::io::Result<Exporter> {
        let (closing, closed) = watch::channel(false);
        let (sink, capacity, batch, delay) = match config.mode {
            Mode::OpenTelemetry => {
                // reqwest builds no client before a rustls provider is installed.
                crate::tls::install_crypto_provider();
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(std::io::Error::other)?;
                let o = &config.otel;
                let sink = Sink::Otlp {
                    client,
                    url: o.url.clone(),
                    resource: o.resource.clone(),
                    encoder: otlp::Encoder::new(batch_prefix),
                    down_until: None,
                    failures: 0,
                };
                (sink, o.max_queue, o.max_batch.max(1), o.schedule_delay)
            }
            Mode::Triton if config.values.file.is_empty() => {
                return Ok(Exporter {
                    queue: None,
                    closing,
                    done: Mutex::new(None),
                });
            }
            Mode::Triton => {
                let sink = Sink::File {
                    path: PathBuf::from(&config.values.file),
                    frequency: config.values.log_frequency as usize,
                    index: 0,
                    pending: Vec::new(),
                };
                (sink, 65_536, 1024, Duration::from_millis(200))
            }
        };
        let (queue, records) = Queue::new(capacity);
        let (finished, done) = oneshot::channel();
        std::thread::Builder::new().name("quiver-trace".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(run(records, sink, batch, delay, closed)),
                Err(e) => tracing::error!(error = %e, "tracing: cannot start the exporter's runtime"),
            }
            let _ = finished.send(());
        })?;
        Ok(Exporter {
            queue: Some(queue),
            closing,
            done: Mutex::new(Some(done)),
        })
    }

    pub fn push(&self, record: Item) {
        let spans = span_count(&record);
        if !self.queue.as_ref().is_some_and(|q| q.push(record)) {
            metrics::counter!(DROPPED).increment(spans);
        }
    }

    /// Exports what is queued and stops, within `grace`.
    pub async fn close(&self, grace: Duration) {
        let _ = self.closing.send(true);
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(done) = done
            && tokio::time::timeout(grace, done).await.is_err()
        {
            tracing::warn!("tracing: traces still unsent after the grace period");
        }
    }
}

/// How long batches fail unsent after the receiver refused a connection.
const DOWN_PAUSE: Duration = Duration::from_secs(1);

/// How often the exporter looks at its queue. It is never woken by the
/// request path: a wake-up per traced request (a futex call) cost more
/// than the rest of the tap.
const POLL: Duration = Duration::from_millis(5);

async fn run(
    mut records: mpsc::Receiver<Item>,
    mut sink: Sink,
    max_batch: usize,
    delay: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let mut batch: Vec<Item> = Vec::with_capacity(max_batch);
    let mut due = Instant::now() + delay;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open {
        tokio::select! {
            _ = poll.tick() => {}
            _ = closing.changed() => open = false,
        }
        loop {
            match records.try_recv() {
                Ok(r) => {
                    if batch.is_empty() {
                        due = Instant::now() + delay;
                    }
                    batch.push(r);
                    if batch.len() >= max_batch {
                        sink.send(std::mem::take(&mut batch)).await;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if open && !batch.is_empty() && Instant::now() >= due {
            sink.send(std::mem::take(&mut batch)).await;
        }
    }
    for chunk in batch.chunks(max_batch) {
        sink.send_slice(chunk).await;
    }
    sink.finish();
}

impl Sink {
    async fn send(&mut self, batch: Vec<Item>) {
        self.send_slice(&batch).await;
    }

    async fn send_slice(&mut self, batch: &[Item]) {
        if batch.is_empty() {
            return;
        }
        match self {
            Sink::Otlp {
                client,
                url,
                resource,
                encoder,
                down_until,
                failures,
            } => {
                if down_until.is_some_and(|t| Instant::now() < t) {
                    metrics::counter!(FAILED).increment(encoder.count(batch));
                    return;
                }
                // With the batch spans of executions seen for the first time.
                let (body, spans) = encoder.encode(batch, resource);
                let sent = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => metrics::counter!(EXPORTED).increment(spans),
                    outcome => {
                        metrics::counter!(FAILED).increment(spans);
                        let why = match outcome {
                            Ok(r) => format!("HTTP {}", r.status()),
                            Err(e) => {
                                if e.is_connect() {
                                    *down_until = Some(Instant::now() + DOWN_PAUSE);
                                }
                                e.to_string()
                            }
                        };
                        *failures += 1;
                        if failures.is_power_of_two() {
                            tracing::warn!(url = %url, error = %why, failures = *failures, "tracing: export failed");
                        }
                    }
                }
            }
            Sink::File {
                path,
                frequency,
                index,
                pending,
            } => {
                for item in batch {
                    if let Item::Request(r) = item {
                        pending.push(triton_json(r));
                        // The setting that traced it: `log_frequency` changes at run time.
                        *frequency = r.log_frequency as usize;
                    }
                }
                metrics::counter!(EXPORTED).increment(batch.iter().map(span_count).sum());
                while *frequency > 0 && pending.len() >= *frequency {
                    let rest = pending.split_off(*frequency);
                    let full = std::mem::replace(pending, rest);
                    write(path, *frequency, index, &full);
                }
            }
        }
    }

    /// At exit: what the file sink still holds.
    fn finish(&mut self) {
        if let Sink::File {
            path,
            frequency,
            index,
            pending,
        } = self
            && !pending.is_empty()
        {
            write(path, *frequency, index, pending);
        }
    }
}

/// Writes traces as one JSON array: to `path` when the frequency is 0 (at
/// exit), else to `path.<index>`, the next index each time.
fn write(path: &std::path::Path, frequency: usize, index: &mut usize, traces: &[String]) {
    let target = if frequency == 0 {
        path.to_path_buf()
    } else {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{index}"));
        *index += 1;
        PathBuf::from(name)
    };
    let written = std::fs::File::create(&target).and_then(|mut f| {
        f.write_all(b"[")?;
        f.write_all(traces.join(",").as_bytes())?;
        f.write_all(b"]")
    });
    if let Err(e) = written {
        tracing::error!(file = %target.display(), error = %e, "tracing: cannot write the trace file");
    }
}

/// One trace in Triton's trace file format: the request's identity, then
/// its timestamps (nanoseconds).
fn triton_json(r: &Record) -> String {
    let t = &r.times;
    let mut stamps = vec![
        (r.protocol.received_event(), t.received),
        ("REQUEST_START", t.started),
        ("QUEUE_START", t.started),
    ];
    stamps.extend(r.compute_events().into_iter().flatten());
    stamps.push(("REQUEST_END", t.answered));
    if let Some((start, end)) = t.sent {
        let (s, e) = r.protocol.send_events();
        stamps.extend([(s, start), (e, end)]);
    }
    let head = serde_json::json!({
        "id": r.number,
        "model_name": r.model,
        "model_version": r.version,
        "request_id": r.request_id,
    });
    let mut out = format!("{head},{}", timestamps(r.number, stamps));
    // An ensemble's steps: a trace each, naming the ensemble's as its
    // parent, as Triton writes its composing models' traces.
    for s in &r.steps {
        let head = serde_json::json!({
            "id": s.number,
            "model_name": s.model,
            "model_version": s.version,
            "request_id": r.request_id,
            "parent_id": s.parent_number,
        });
        let mut stamps = vec![("REQUEST_START", s.started), ("QUEUE_START", s.started)];
        stamps.extend(s.compute_events().into_iter().flatten());
        stamps.push(("REQUEST_END", s.answered));
        out.push_str(&format!(",{head},{}", timestamps(s.number, stamps)));
    }
    out
}

/// The second object of a trace in Triton's file: its timestamps.
fn timestamps(id: u64, stamps: Vec<(&str, u64)>) -> serde_json::Value {
    let stamps: Vec<serde_json::Value> = stamps
        .into_iter()
        .map(|(name, ns)| serde_json::json!({"name": name, "ns": ns}))
        .collect();
    serde_json::json!({"id": id, "timestamps": stamps})
}

//! The bounded hand-off between the request path and one sink's worker,
//! bounded twice: in records and in the tensor bytes they keep alive. A
//! record that does not fit is dropped and counted, never waited for.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use metrics::gauge;
use tokio::sync::{mpsc, watch};

use super::event::Record;

/// How often the sinks' workers take what the request path queued. They
/// poll rather than wait on the queue, so that a request never wakes a
/// worker (a wake-up per request, a futex call and a context switch on a
/// busy core, cost more than the logging itself).
pub const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

pub const SENT: &str = "quiver_payload_log_events_sent_total";
pub const FAILED: &str = "quiver_payload_log_events_failed_total";
pub const DROPPED: &str = "quiver_payload_log_events_dropped_total";
pub const RETRIED: &str = "quiver_payload_log_events_retried_total";
pub const TRUNCATED: &str = "quiver_payload_log_events_truncated_total";

pub const QUEUE_DEPTH: &str = "quiver_payload_log_queue_depth";
pub const QUEUE_BYTES: &str = "quiver_payload_log_queue_bytes";

/// Records waiting in a graveyard at most, and dropped per request: more
/// than the two a request adds (its request and answer events).
const GRAVEYARD: usize = 65_536;
const REAP: usize = 4;

pub struct Sink {
    /// The `sink` label: `http <url>` or `file <path>`.
    pub label: String,
    sender: mpsc::Sender<Arc<Record>>,
    bytes: AtomicUsize,
    max_bytes: usize,
    /// Records the worker is done with, for the request path to drop (see
    /// [`Sink::bury`]).
    graveyard: std::sync::Mutex<Vec<Arc<Record>>>,
    depth_gauge: metrics::Gauge,
    bytes_gauge: metrics::Gauge,
    /// Set when the server stops: the worker sends what it holds by then.
    closing: watch::Sender<Option<Instant>>,
    /// Resolves when the worker has finished.
    finished: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

/// The worker's end.
pub struct Taker {
    pub sink: Arc<Sink>,
    pub records: mpsc::Receiver<Arc<Record>>,
    pub closing: watch::Receiver<Option<Instant>>,
    pub finished: tokio::sync::oneshot::Sender<()>,
}

impl Taker {
    /// A drain pass timer: the worker polls rather than being woken by
    /// each request (`DRAIN_EVERY`).
    pub fn ticks() -> tokio::time::Interval {
        let mut tick = tokio::time::interval(DRAIN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }

    /// Waits for the next pass; `None` once the server is stopping, else
    /// the time the pass's events are recorded at.
    pub async fn pass(&mut self, tick: &mut tokio::time::Interval) -> Option<std::time::SystemTime> {
        self.sink.publish();
        tokio::select! {
            biased;
            _ = self.closing.changed() => None,
            _ = tick.tick() => Some(std::time::SystemTime::now()),
        }
    }

    /// The next record waiting, if any, taken off the queue's counts.
    pub fn take(&mut self) -> Option<Arc<Record>> {
        let record = self.records.try_recv().ok()?;
        self.sink.taken(&record);
        Some(record)
    }

    /// The shutdown deadline, once there is one.
    pub fn deadline(&self) -> Option<Instant> {
        *self.closing.borrow()
    }
}

impl Sink {
    pub fn open(label: String, records: usize, max_bytes: usize) -> Taker {
        let (sender, receiver) = mpsc::channel(records.max(1));
        let (closing, closing_rx) = watch::channel(None);
        let (done, finished) = tokio::sync::oneshot::channel();
        let sink = Arc::new(Sink {
            graveyard: std::sync::Mutex::new(Vec::new()),
            depth_gauge: gauge!(QUEUE_DEPTH, "sink" => label.clone()),
            bytes_gauge: gauge!(QUEUE_BYTES, "sink" => label.clone()),
            label,
            sender,
            bytes: AtomicUsize::new(0),
            max_bytes,
            closing,
            finished: tokio::sync::Mutex::new(Some(finished)),
        });
        Taker {
            sink,
            records: receiver,
            closing: closing_rx,
            finished: done,
        }
    }

    /// Whether the queue is full in records: the tap checks it before it
    /// builds a record, so that while a sink cannot keep up (or hangs), a
    /// request costs it a count rather than a record made and freed.
    pub fn full(&self) -> bool {
        self.sender.capacity() == 0
    }

    /// `false`: dropped (full, or the worker has gone).
    pub fn push(&self, record: &Arc<Record>, bytes: usize) -> bool {
        let before = self.bytes.fetch_add(bytes, Relaxed);
        // One record larger than the whole bound still goes into an empty queue.
        if before > 0 && before + bytes > self.max_bytes {
            self.bytes.fetch_sub(bytes, Relaxed);
            return false;
        }
        match self.sender.try_send(Arc::clone(record)) {
            Ok(()) => true,
            Err(_) => {
                self.bytes.fetch_sub(bytes, Relaxed);
                false
            }
        }
    }

    /// The worker has taken `record` off the queue.
    pub fn taken(&self, record: &Record) {
        self.bytes.fetch_sub(record.bytes(), Relaxed);
    }

    /// Sets the queue's gauges, once a drain pass (every `DRAIN_EVERY`)
    /// rather than per record.
    fn publish(&self) {
        self.depth_gauge.set(self.depth() as f64);
        self.bytes_gauge.set(self.bytes.load(Relaxed) as f64);
    }

    /// The worker is done with these events. Their records were allocated
    /// on a serving thread, and freeing them there keeps that thread's
    /// allocator caches warm: under glibc's malloc a free on the worker
    /// cost +4 µs a request (the arena's lock, cold caches); under mimalloc
    /// (the binary's allocator now) it still measured worse, batch mode
    /// −17.5% against −13.2% (docs/performance.md). So the serving threads
    /// drop them, a few per request ([`Sink::reap`]); past a bound the
    /// worker drops them itself.
    pub fn bury(&self, events: impl IntoIterator<Item = super::event::Event>) {
        let mut graveyard = self.graveyard.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            if graveyard.len() < GRAVEYARD {
                graveyard.push(event.record);
            }
        }
    }

    /// Drops a few records the worker is done with (on the request path).
    pub fn reap(&self) {
        let dead: [Option<Arc<Record>>; REAP] = match self.graveyard.try_lock() {
            Ok(mut graveyard) => std::array::from_fn(|_| graveyard.pop()),
            Err(_) => return,
        };
        drop(dead);
    }

    /// Records waiting.
    pub fn depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Tells the worker to send what it holds before `deadline`.
    pub fn signal(&self, deadline: Instant) {
        let _ = self.closing.send(Some(deadline));
    }

    /// Waits for the worker to finish (at most until `deadline`, and a
    /// moment more for its count).
    pub async fn wait(&self, deadline: Instant) {
        let finished = self.finished.lock().await.take();
        if let Some(finished) = finished {
            let wait = deadline.saturating_duration_since(Instant::now()) + std::time::Duration::from_millis(500);
            let _ = tokio::time::timeout(wait, finished).await;
        }
    }
}

/// Adds `events` to the counter `name`, per model.
pub fn counts(events: &[super::event::Event], name: &'static str, sink: &str) {
    let mut i = 0;
    while i < events.len() {
        let model = &events[i].record.origin.model;
        let n = events[i..]
            .iter()
            .take_while(|e| &e.record.origin.model == model)
            .count();
        metrics::counter!(name, "model" => model.to_string(), "sink" => sink.to_owned()).increment(n as u64);
        i += n;
    }
}

/// Counts an event written without its tensor data (over the size cap).
pub fn note(event: &super::event::Event, body: &super::event::Body) {
    if body.truncated {
        metrics::counter!(TRUNCATED, "model" => event.record.origin.model.to_string()).increment(1);
    }
}

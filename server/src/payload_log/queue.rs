//! The bounded hand-off between the request path and one sink's worker,
//! bounded twice: in records and in the tensor bytes they keep alive. A
//! record that does not fit is dropped and counted, never waited for.
//!
//! The queue is a vector under a mutex that the worker empties whole, once
//! a pass: a push is a lock and a `Vec::push`, a pass one lock for all the
//! records since the last. (A channel cost more on both sides: tokio's
//! bounded `mpsc` takes a semaphore permit per record and returns it under
//! a lock on the worker's side, and allocates a block every 32 records.)
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics::gauge;
use tokio::sync::watch;

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
    /// Records pushed and not yet taken by the worker's pass.
    queued: Mutex<Vec<Arc<Record>>>,
    /// Records pushed and not yet taken by the worker (its pass's share
    /// included): the bound in records.
    waiting: AtomicUsize,
    max_records: usize,
    /// The worker has gone: nothing more is queued.
    gone: AtomicBool,
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
    /// What the last pass took off the shared queue, oldest first.
    records: VecDeque<Arc<Record>>,
    pub closing: watch::Receiver<Option<Instant>>,
    finished: Option<tokio::sync::oneshot::Sender<()>>,
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
        if self.records.is_empty() {
            // The pass's records change hands by swapping vectors: the lock
            // is held for a few words' copy, never for a copy of the queue,
            // so a worker preempted while holding it (it runs at idle
            // priority) stalls no request's push for long.
            let mut taken = Vec::from(std::mem::take(&mut self.records));
            std::mem::swap(
                &mut *self.sink.queued.lock().unwrap_or_else(|e| e.into_inner()),
                &mut taken,
            );
            self.records = VecDeque::from(taken);
        }
        let record = self.records.pop_front()?;
        self.sink.taken(&record);
        Some(record)
    }

    /// Tells the server's stop that the worker has finished.
    pub fn finish(&mut self) {
        if let Some(finished) = self.finished.take() {
            let _ = finished.send(());
        }
    }

    /// The shutdown deadline, once there is one.
    pub fn deadline(&self) -> Option<Instant> {
        *self.closing.borrow()
    }
}

impl Drop for Taker {
    /// The worker has stopped: what is still queued (pushed after its last
    /// pass) will not be written, and is counted as failed, so no record
    /// is lost without a count. Pushes from now on are refused (dropped
    /// and counted by the tap).
    fn drop(&mut self) {
        let mut left: Vec<Arc<Record>> = {
            let mut queued = self.sink.queued.lock().unwrap_or_else(|e| e.into_inner());
            self.sink.gone.store(true, Relaxed);
            queued.drain(..).collect()
        };
        left.extend(self.records.drain(..));
        let mut events = 0;
        for record in &left {
            self.sink.taken(record);
            let n = record.origin.settings.mode.map_or(0, |m| m.events());
            metrics::counter!(FAILED, "model" => record.origin.model.to_string(), "sink" => self.sink.label.clone())
                .increment(n);
            events += n;
        }
        if events > 0 {
            tracing::warn!(
                sink = self.sink.label,
                events,
                "payload log: events queued after the sink's worker stopped (counted as failed)"
            );
        }
    }
}

impl Sink {
    pub fn open(label: String, records: usize, max_bytes: usize) -> Taker {
        let (closing, closing_rx) = watch::channel(None);
        let (done, finished) = tokio::sync::oneshot::channel();
        let sink = Arc::new(Sink {
            graveyard: std::sync::Mutex::new(Vec::new()),
            depth_gauge: gauge!(QUEUE_DEPTH, "sink" => label.clone()),
            bytes_gauge: gauge!(QUEUE_BYTES, "sink" => label.clone()),
            label,
            queued: Mutex::new(Vec::new()),
            waiting: AtomicUsize::new(0),
            max_records: records.max(1),
            gone: AtomicBool::new(false),
            bytes: AtomicUsize::new(0),
            max_bytes,
            closing,
            finished: tokio::sync::Mutex::new(Some(finished)),
        });
        Taker {
            sink,
            records: VecDeque::new(),
            closing: closing_rx,
            finished: Some(done),
        }
    }

    /// Whether the queue is full in records: the tap checks it before it
    /// builds a record, so that while a sink cannot keep up (or hangs), a
    /// request costs it a count rather than a record made and freed.
    pub fn full(&self) -> bool {
        self.waiting.load(Relaxed) >= self.max_records
    }

    /// `false`: dropped (full, or the worker has gone).
    pub fn push(&self, record: &Arc<Record>, bytes: usize) -> bool {
        // Both bounds are reserved before the record goes in, so that
        // concurrent pushes never overshoot them.
        if self.waiting.fetch_add(1, Relaxed) >= self.max_records {
            self.waiting.fetch_sub(1, Relaxed);
            return false;
        }
        let before = self.bytes.fetch_add(bytes, Relaxed);
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        // One record larger than the whole bound still goes into an empty
        // queue. `gone` is set under this lock by the worker's end.
        if (before > 0 && before + bytes > self.max_bytes) || self.gone.load(Relaxed) {
            drop(queued);
            self.bytes.fetch_sub(bytes, Relaxed);
            self.waiting.fetch_sub(1, Relaxed);
            return false;
        }
        queued.push(Arc::clone(record));
        true
    }

    /// The worker has taken `record` off the queue.
    pub fn taken(&self, record: &Record) {
        self.bytes.fetch_sub(record.bytes(), Relaxed);
        self.waiting.fetch_sub(1, Relaxed);
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
        self.waiting.load(Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload_log::event::record_with_input;

    #[test]
    fn bounded_in_records_and_bytes_taken_in_order() {
        let mut taker = Sink::open("test".into(), 3, 1 << 20);
        let sink = Arc::clone(&taker.sink);
        let records: Vec<_> = (0..4).map(|i| record_with_input(&[i as f32])).collect();
        for r in &records[..3] {
            assert!(sink.push(r, r.bytes()));
        }
        assert!(sink.full());
        assert!(!sink.push(&records[3], records[3].bytes()), "over the bound in records");
        assert_eq!(sink.depth(), 3);
        for r in &records[..3] {
            assert!(Arc::ptr_eq(&taker.take().unwrap(), r), "oldest first");
        }
        assert!(taker.take().is_none());
        assert_eq!((sink.depth(), sink.bytes.load(Relaxed)), (0, 0));

        // In bytes: one record larger than the bound goes into an empty
        // queue, and nothing after it until it is taken.
        let big = record_with_input(&[0.5; 64]);
        let mut small = Sink::open("small".into(), 10, 100);
        assert!(small.sink.push(&big, big.bytes()));
        assert!(!small.sink.push(&records[0], records[0].bytes()));
        assert!(small.take().is_some());
        assert!(small.sink.push(&records[0], records[0].bytes()));

        // A worker that has gone takes nothing more, and what it left
        // queued is taken off the counts (and counted as failed).
        assert!(sink.push(&records[0], records[0].bytes()));
        drop(taker);
        assert_eq!((sink.depth(), sink.bytes.load(Relaxed)), (0, 0));
        assert!(!sink.push(&records[0], records[0].bytes()));
        assert_eq!(sink.depth(), 0);
    }
}

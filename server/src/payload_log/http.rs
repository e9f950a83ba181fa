//! The HTTP sink: events POSTed as CloudEvents, one per POST in binary mode
//! (what KServe's logger sends), or `batch_size` per POST in CloudEvents'
//! batch mode. One client (one connection pool) per sink, at most
//! `workers` POSTs in flight; a failed POST (5xx, 408, 429, no connection,
//! a timeout) is retried with back-off until `retry_for` has passed.
//! While every slot is busy the worker takes nothing more: the queue fills
//! and the request path drops and counts, so a slow sink costs memory up to
//! the queue's bound and nothing else.
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use metrics::{counter, histogram};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::event::Event;
use super::queue::Taker;
use super::queue::counts;
use super::settings::Global;

/// The first pause between two tries, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// One POST's limit; a sink that never answers costs a slot this long.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(url: String, mut taker: Taker, global: Global) {
    let sink = Arc::clone(&taker.sink);
    // reqwest builds no client before a rustls provider is installed.
    crate::tls::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(POST_TIMEOUT)
        .pool_max_idle_per_host(global.workers)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, sink = sink.label, "cannot build the payload log's HTTP client; its events are dropped");
            return;
        }
    };
    let post = Arc::new(Post {
        sink: Arc::clone(&sink),
        client,
        url,
        label: sink.label.clone(),
        retry_for: global.retry_for,
        closing: taker.closing.clone(),
        abandoned: AtomicU64::new(0),
        failures: AtomicU64::new(0),
    });
    let slots = Arc::new(Semaphore::new(global.workers));
    let mut sends = JoinSet::new();
    let mut batch: Vec<Event> = Vec::with_capacity(global.batch_size);
    // When the first event of the batch being filled was taken.
    let mut first: Option<Instant> = None;
    let mut tick = Taker::ticks();
    while let Some(now) = taker.pass(&mut tick).await {
        while let Some(record) = taker.take() {
            super::event::events(&record, now, &mut batch);
            first.get_or_insert_with(Instant::now);
            if batch.len() >= global.batch_size {
                dispatch(&post, &slots, &mut sends, &mut batch, global.batch_size).await;
                first = None;
            }
        }
        if first.is_some_and(|t| t.elapsed() >= global.batch_interval) {
            dispatch(&post, &slots, &mut sends, &mut batch, global.batch_size).await;
            first = None;
        }
        while sends.try_join_next().is_some() {}
    }
    // Stopping: what is queued now goes out too, within the deadline.
    let deadline = taker.deadline().unwrap_or_else(Instant::now);
    while let Some(record) = taker.take() {
        if Instant::now() >= deadline {
            // Too late to encode: counted, not sent.
            let events = record.origin.settings.mode.map_or(0, |m| m.events());
            counter!(super::queue::FAILED, "model" => record.origin.model.to_string(), "sink" => sink.label.clone())
                .increment(events);
            post.abandoned.fetch_add(events, Relaxed);
            continue;
        }
        super::event::events(&record, std::time::SystemTime::now(), &mut batch);
        if batch.len() >= global.batch_size {
            dispatch(&post, &slots, &mut sends, &mut batch, global.batch_size).await;
        }
    }
    dispatch(&post, &slots, &mut sends, &mut batch, global.batch_size).await;
    // Every send gives up at the deadline by itself; a moment more for that.
    let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(200);
    if tokio::time::timeout(left, async { while sends.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            sink = sink.label,
            posts = sends.len(),
            "payload log: POSTs still open at the shutdown deadline are abandoned"
        );
        sends.abort_all();
    }
    let abandoned = post.abandoned.load(Relaxed);
    if abandoned > 0 {
        tracing::warn!(
            sink = sink.label,
            events = abandoned,
            "payload log: events not delivered by the shutdown deadline (counted as failed)"
        );
    }
    taker.finish();
}

/// Hands the batch to a send task once a slot is free.
async fn dispatch(
    post: &Arc<Post>,
    slots: &Arc<Semaphore>,
    sends: &mut JoinSet<()>,
    batch: &mut Vec<Event>,
    batch_size: usize,
) {
    while !batch.is_empty() {
        let Ok(slot) = Arc::clone(slots).acquire_owned().await else {
            return;
        };
        let events: Vec<Event> = match batch_size {
            // One event per POST: the request and answer of a record are two.
            1 => vec![batch.remove(0)],
            _ => std::mem::replace(batch, Vec::with_capacity(batch_size)),
        };
        let post = Arc::clone(post);
        sends.spawn(async move {
            post.send(events).await;
            drop(slot);
        });
    }
}

struct Post {
    sink: Arc<super::queue::Sink>,
    client: reqwest::Client,
    url: String,
    label: String,
    retry_for: Duration,
    closing: watch::Receiver<Option<Instant>>,
    /// Events given up at the shutdown deadline (logged once, at the end).
    abandoned: AtomicU64,
    /// POSTs given up (refused or retried past the limit), for the log.
    failures: AtomicU64,
}

impl Post {
    /// POSTs `events` until a 2xx, a refusal, or the retry time (or the
    /// shutdown deadline) is up, and counts the outcome per model.
    async fn send(&self, events: Vec<Event>) {
        self.try_send(&events).await;
        self.sink.bury(events);
    }

    async fn try_send(&self, events: &[Event]) {
        let (body, headers) = encode(events);
        let give_up = Instant::now() + self.retry_for;
        let mut pause = FIRST_PAUSE;
        loop {
            let start = Instant::now();
            let mut request = self.client.post(&self.url).body(body.clone());
            for (k, v) in &headers {
                request = request.header(k.as_str(), v.as_str());
            }
            let outcome = tokio::select! {
                r = request.send() => r,
                _ = shut(self.closing.clone()) => {
                    counts(events, super::queue::FAILED, &self.label);
                    self.abandoned.fetch_add(events.len() as u64, Relaxed);
                    return;
                }
            };
            histogram!(crate::telemetry::PAYLOAD_LOG_SEND_SECONDS, "sink" => self.label.clone())
                .record(start.elapsed().as_secs_f64());
            let retry = match outcome {
                Ok(r) if r.status().is_success() => {
                    counts(events, super::queue::SENT, &self.label);
                    return;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let again = r.status().is_server_error() || status == 408 || status == 429;
                    (again, format!("HTTP {status}"))
                }
                Err(e) => (true, e.to_string()),
            };
            let (retry, why) = retry;
            let stop = self.closing.borrow().map_or(give_up, |d| d.min(give_up));
            if !retry || Instant::now() + pause > stop {
                counts(events, super::queue::FAILED, &self.label);
                // A sink that refuses everything would log every POST: the
                // 1st, 2nd, 4th, 8th, ... failure is logged, with the count.
                let failures = self.failures.fetch_add(1, Relaxed) + 1;
                if failures.is_power_of_two() {
                    tracing::warn!(
                        sink = self.label,
                        events = events.len(),
                        reason = why,
                        retried = retry,
                        failed_posts_so_far = failures,
                        "payload log: events not delivered"
                    );
                }
                return;
            }
            counts(events, super::queue::RETRIED, &self.label);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}

/// Resolves at the shutdown deadline, once there is one.
async fn shut(mut closing: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *closing.borrow_and_update();
        if let Some(d) = deadline {
            tokio::time::sleep_until(d.into()).await;
            return;
        }
        if closing.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One event: binary mode. Several: a JSON array of structured events.
fn encode(events: &[Event]) -> (Bytes, Vec<(String, String)>) {
    let mut out = Vec::with_capacity(1024 * events.len());
    if let [one] = events {
        let body = one.write_body(&mut out);
        super::queue::note(one, &body);
        return (Bytes::from(out), one.headers(&body));
    }
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let body = e.write_structured(&mut out);
        super::queue::note(e, &body);
    }
    out.push(b']');
    (
        Bytes::from(out),
        vec![("content-type".into(), "application/cloudevents-batch+json".into())],
    )
}

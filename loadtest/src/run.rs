//! The load loops: closed loop (N clients, each sends as soon as it has its
//! answer) and open loop (requests at a constant rate whatever the answers
//! do; latency measured from the scheduled send time, so a slow server cannot
//! hide its queueing by slowing the generator down).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::Sender;

/// Latencies (µs) and outcomes of one measured window.
pub struct Measured {
    pub latencies: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Measured {
    pub fn new() -> Measured {
        Measured {
            latencies: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn merge(&mut self, other: Measured) {
        let _ = self.latencies.add(&other.latencies);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    pub fn record(&mut self, latency: Duration, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let _ = self.latencies.record((latency.as_micros() as u64).max(1));
            }
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }
}

/// `concurrency` clients, spread over the given senders (connections).
pub async fn closed_loop(senders: &[Sender], concurrency: usize, warmup: Duration, duration: Duration) -> Measured {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut sender = senders[i % senders.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut m = Measured::new();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let result = sender.send().await;
                if t0 >= measure_from {
                    m.record(t0.elapsed(), result);
                }
            }
            m
        }));
    }
    let mut total = Measured::new();
    for t in tasks {
        if let Ok(m) = t.await {
            total.merge(m);
        }
    }
    total.elapsed = duration;
    total
}

/// The open loop's pacing resolution.
const TICK: Duration = Duration::from_micros(100);

/// Requests at `rate` per second; at most `max_in_flight` outstanding (the
/// rest are counted as "generator saturated", never silently skipped).
///
/// A thread of its own paces the sends with high-resolution sleeps, waking
/// at most every [`TICK`] and sending what is due: tokio's timer ticks in
/// milliseconds and would send a 40,000/s stream as bursts of 40 every
/// millisecond, which is not the steady load this mode promises, and a wake
/// per request would cost the generator more than the requests do.
pub async fn open_loop(
    senders: &[Sender],
    rate: f64,
    warmup: Duration,
    duration: Duration,
    max_in_flight: usize,
) -> Measured {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Duration, Result<(), String>)>();
    let collector = tokio::spawn(async move {
        let mut m = Measured::new();
        while let Some((latency, result)) = rx.recv().await {
            m.record(latency, result);
        }
        m
    });
    let runtime = tokio::runtime::Handle::current();
    let senders = senders.to_vec();
    let pacer = std::thread::spawn(move || {
        // The default 50 µs timer slack would round every sleep up.
        // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's slack.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        }
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now();
        let measure_from = start + warmup;
        let end = measure_from + duration;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut saturated = 0u64;
        let mut tasks = Vec::new();
        for i in 0u64.. {
            let scheduled = start + interval.mul_f64(i as f64);
            if scheduled >= end {
                break;
            }
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep((scheduled - now).max(TICK));
            }
            let measured = scheduled >= measure_from;
            if in_flight.load(Ordering::Relaxed) >= max_in_flight {
                if measured {
                    saturated += 1;
                }
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let mut sender = senders[i as usize % senders.len()].clone();
            let (tx, in_flight) = (tx.clone(), Arc::clone(&in_flight));
            tasks.push(runtime.spawn(async move {
                let result = sender.send().await;
                let latency = scheduled.elapsed();
                in_flight.fetch_sub(1, Ordering::Relaxed);
                if measured {
                    let _ = tx.send((latency, result));
                }
            }));
            if tasks.len() > 4096 {
                tasks.retain(|t| !t.is_finished());
            }
        }
        (tasks, saturated)
    });
    let (tasks, saturated) = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    for t in tasks {
        let _ = t.await;
    }
    let mut m = collector.await.unwrap_or_else(|_| Measured::new());
    if saturated > 0 {
        m.errors.insert("generator saturated (max in flight)".into(), saturated);
    }
    m.elapsed = duration;
    m
}

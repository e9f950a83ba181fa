//! The monitoring thread: one for the server, off the async runtime. It
//! takes the records the taps queued, adds them to their windows, closes the
//! windows that are due (also when no traffic comes), and hands the state
//! changes to the event sink.
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::events::Event;
use crate::monitor::{Monitor, Record};
use crate::queue::{Jobs, QUEUE};

/// Every live monitor of the process, for `/metrics` (whose exposition is
/// process-wide, like the engine's per-version series).
pub static ALL: Mutex<Vec<Weak<Monitor>>> = Mutex::new(Vec::new());

pub type Registry = Arc<Mutex<Vec<Weak<Monitor>>>>;

/// How often the thread wakes to take what the taps queued. The request
/// path never wakes it: a push only stores into the channel, so no request
/// pays for a system call or a switch to this thread on its core.
pub const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// Starts the thread; it ends when every sender (the factory and the
/// monitors) is gone.
pub fn start(registry: Registry, sink: Box<dyn Fn(Event) + Send>) -> Arc<Jobs<Record>> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
    let jobs = Jobs::new(sender);
    let queued = jobs.queued_bytes();
    std::thread::Builder::new()
        .name("quiver-monitor".into())
        .spawn(move || run(receiver, queued, registry, sink))
        .expect("the monitoring thread starts");
    Arc::new(jobs)
}

fn run(receiver: Receiver<Record>, queued: Arc<AtomicUsize>, registry: Registry, sink: Box<dyn Fn(Event) + Send>) {
    let mut events = Vec::new();
    loop {
        std::thread::sleep(DRAIN_EVERY);
        let now = Instant::now();
        loop {
            match receiver.try_recv() {
                Ok(record) => {
                    queued.fetch_sub(record.bytes, Relaxed);
                    let monitor = Arc::clone(&record.monitor);
                    monitor.absorb(record, now, &mut events);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let live: Vec<Arc<Monitor>> = {
            let mut all = registry.lock().unwrap();
            all.retain(|m| m.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        for m in live {
            m.tick(Instant::now(), &mut events);
        }
        for event in events.drain(..) {
            sink(event);
        }
    }
}

//! The bounded hand-off from the request path to the monitoring thread.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError};

/// Records waiting for the thread, over all monitored versions: what
/// arrives between two drains (`worker::DRAIN_EVERY`) at three million requests a
/// second. A record is small, but it shares its tensors' bytes with the
/// request, so the queue also keeps those alive: [`MAX_BYTES`] bounds them.
pub const QUEUE: usize = 16_384;
/// The most tensor bytes queued records may hold.
pub const MAX_BYTES: usize = 64 << 20;

/// Records dropped in this process, over every server and version (a
/// counter that never goes back, as Prometheus expects).
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The bounded hand-off from the request path.
pub struct Jobs<T> {
    sender: SyncSender<T>,
    /// Tensor bytes the queued records hold; the thread subtracts what it takes.
    bytes: Arc<AtomicUsize>,
}

impl<T> Jobs<T> {
    pub fn new(sender: SyncSender<T>) -> Jobs<T> {
        Jobs {
            sender,
            bytes: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn queued_bytes(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.bytes)
    }

    /// `false` when the record was dropped (the thread is behind, or the
    /// queue holds its share of tensor bytes already).
    pub fn push(&self, record: T, bytes: usize) -> bool {
        if self.bytes.fetch_add(bytes, Relaxed) + bytes > MAX_BYTES {
            self.bytes.fetch_sub(bytes, Relaxed);
            DROPPED.fetch_add(1, Relaxed);
            return false;
        }
        match self.sender.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.bytes.fetch_sub(bytes, Relaxed);
                DROPPED.fetch_add(1, Relaxed);
                false
            }
        }
    }
}

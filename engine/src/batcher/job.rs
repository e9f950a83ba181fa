//! What travels through an instance's queue: one request's work, and what
//! comes back for it.
use std::time::{Duration, Instant};

use quiver_runtimes::Tensor;
use tokio::sync::oneshot;

use crate::error::Result;

/// One request's work for an instance.
pub struct Job {
    pub inputs: Vec<Tensor>,
    /// Output names to return, in order.
    pub outputs: Vec<String>,
    /// Rows this request adds to a batch (its dim 0; 1 without batching).
    pub rows: usize,
    pub shape_key: u64,
    /// Priority level, 0-based (0 = Triton's priority 1, the highest).
    pub priority: usize,
    pub timeout: Option<Duration>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Answer>>,
    /// Shadow work: a batch of nothing else runs at the lowest CPU priority.
    pub background: bool,
}

/// What an instance sends back for one request.
#[derive(Debug)]
pub struct Answer {
    pub outputs: Vec<Tensor>,
    pub queued: Duration,
    /// Rows in the execution this request was part of.
    pub batch_rows: usize,
    pub execution: crate::tap::Execution,
}

//! Where a progressive rollout is: shared by the policies its steps write,
//! read for the policy's summary. The supervisor that moves it is
//! `crate::rollout`.
use std::sync::Mutex;
use std::time::Instant;

use super::stats::Snapshot;

/// Where a rollout is; shared by the policies its steps write.
#[derive(Default)]
pub struct State {
    pub(crate) inner: Mutex<Inner>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) phase: Phase,
    pub(crate) status: String,
}

#[derive(Default)]
pub(crate) enum Phase {
    #[default]
    Pending,
    Step {
        index: usize,
        started: Instant,
        canary: Snapshot,
        stable: Snapshot,
    },
    Done,
}

impl State {
    /// One line for the summary: the step, or how it ended.
    pub fn status(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.status.is_empty() {
            true => "pending".into(),
            false => inner.status.clone(),
        }
    }
}

//! The bounded request queue of one model version: priority levels, queue
//! timeouts (REJECT or DELAY), per-level size limits, and the hand-off to the
//! instance threads, which block here until the policy says a batch is ready.
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::job::Job;
use super::policy::{self, Arrivals, BatchingConfig, Candidate, Decision};
use crate::error::{Error, ErrorKind};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Answer DEADLINE_EXCEEDED / 504 and drop the request.
    #[default]
    Reject,
    /// Keep it, behind every request that has not timed out.
    Delay,
}

/// Triton's `ModelQueuePolicy` for one priority level.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueuePolicy {
    pub timeout_action: TimeoutAction,
    /// `default_timeout_microseconds`; `None` for no timeout.
    pub default_timeout: Option<Duration>,
    pub allow_timeout_override: bool,
    /// Requests this level may hold; 0 for no limit but the queue's capacity.
    pub max_queue_size: usize,
}

impl QueuePolicy {
    /// The timeout a request gets: its own only where the policy allows it
    /// and it is shorter than the default (or there is no default).
    pub fn timeout(&self, requested: Option<Duration>) -> Option<Duration> {
        match (requested, self.default_timeout) {
            (Some(r), Some(d)) if self.allow_timeout_override && r < d => Some(r),
            (Some(r), None) if self.allow_timeout_override => Some(r),
            (_, d) => d,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfig {
    /// Requests queued across all levels before new ones are refused.
    pub capacity: usize,
    /// One policy per priority level; index 0 is priority 1, the highest.
    pub levels: Vec<QueuePolicy>,
    /// Level of requests that do not ask for one (0-based).
    pub default_level: usize,
    /// `None`: every request runs alone, in arrival order.
    pub batching: Option<BatchingConfig>,
}

struct Queued {
    job: Job,
    deadline: Option<Instant>,
}

struct State {
    levels: Vec<VecDeque<Queued>>,
    /// Per level, requests whose timeout passed under DELAY: served after
    /// the level's other requests, before lower levels.
    delayed: Vec<VecDeque<Queued>>,
    len: usize,
    with_deadline: usize,
    closed: bool,
    /// Batches handed out so far: the order ticket for `preserve_ordering`.
    next_ticket: u64,
    /// Arrival gaps and requests in flight, for the adaptive delay.
    arrivals: Arrivals,
    /// Instances blocked on `arrived`. A push wakes one only when one waits:
    /// `notify_one` is a futex system call even with no waiter, and under
    /// load the instances are mostly busy running a batch.
    waiting: usize,
}

impl State {
    fn candidates(&self) -> impl Iterator<Item = Candidate> + '_ {
        self.levels
            .iter()
            .zip(&self.delayed)
            .flat_map(|(l, d)| l.iter().chain(d))
            .map(|q| Candidate {
                rows: q.job.rows,
                shape_key: q.job.shape_key,
                arrived: q.job.enqueued,
            })
    }

    fn pop(&mut self) -> Option<Queued> {
        let level = (0..self.levels.len()).find(|&i| !self.levels[i].is_empty() || !self.delayed[i].is_empty())?;
        let q = self.levels[level]
            .pop_front()
            .or_else(|| self.delayed[level].pop_front())?;
        self.len -= 1;
        if q.deadline.is_some() {
            self.with_deadline -= 1;
        }
        Some(q)
    }

    /// Applies queue timeouts at `now`; returns rejected jobs and the next deadline.
    fn expire(&mut self, now: Instant, policies: &[QueuePolicy]) -> (Vec<Job>, Option<Instant>) {
        let mut rejected = Vec::new();
        let mut next: Option<Instant> = None;
        if self.with_deadline == 0 {
            return (rejected, None);
        }
        for (level, queue) in self.levels.iter_mut().enumerate() {
            let mut i = 0;
            while i < queue.len() {
                match queue[i].deadline {
                    Some(d) if d <= now => {
                        let mut q = queue.remove(i).expect("index in range");
                        self.with_deadline -= 1;
                        q.deadline = None;
                        if policies[level].timeout_action == TimeoutAction::Delay {
                            self.delayed[level].push_back(q);
                        } else {
                            self.len -= 1;
                            rejected.push(q.job);
                        }
                    }
                    Some(d) => {
                        next = Some(next.map_or(d, |n| n.min(d)));
                        i += 1;
                    }
                    None => i += 1,
                }
            }
        }
        (rejected, next)
    }
}

/// A batch taken from the queue, with its place in the delivery order.
pub struct Taken {
    pub ticket: u64,
    pub jobs: Vec<Job>,
}

pub struct JobQueue {
    state: Mutex<State>,
    arrived: Condvar,
    config: QueueConfig,
}

impl JobQueue {
    pub fn new(config: QueueConfig) -> JobQueue {
        let n = config.levels.len().max(1);
        JobQueue {
            state: Mutex::new(State {
                levels: (0..n).map(|_| VecDeque::new()).collect(),
                delayed: (0..n).map(|_| VecDeque::new()).collect(),
                len: 0,
                with_deadline: 0,
                closed: false,
                next_ticket: 0,
                arrivals: Arrivals::default(),
                waiting: 0,
            }),
            arrived: Condvar::new(),
            config,
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue inconsistent
        // in a way that matters more than stopping service would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` at its level without waiting. Refused at once when the
    /// queue or the level is full, or the queue is closed.
    pub fn push(&self, job: Job) -> Result<(), Error> {
        let level = job.priority.min(self.config.levels.len().saturating_sub(1));
        let policy = &self.config.levels[level];
        let deadline = job.timeout.map(|t| job.enqueued + t);
        let mut st = self.lock();
        if st.closed {
            return Err(Error::unavailable("the model version is unloading"));
        }
        if st.len >= self.config.capacity {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!("the model's queue is full ({} requests waiting); retry later", st.len),
            ));
        }
        if policy.max_queue_size > 0 && st.levels[level].len() >= policy.max_queue_size {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "the queue of priority level {} is full (max_queue_size {})",
                    level + 1,
                    policy.max_queue_size
                ),
            ));
        }
        st.len += 1;
        if deadline.is_some() {
            st.with_deadline += 1;
        }
        st.arrivals.arrived(Instant::now());
        st.levels[level].push_back(Queued { job, deadline });
        // Read under the lock: an instance counts itself before it waits,
        // and reads the queue under the same lock first, so no arrival is
        // missed.
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.arrived.notify_one();
        }
        Ok(())
    }

    /// Stops taking requests; instances drain what is queued, then stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
    }

    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An instance has answered the `n` requests of a batch it took.
    pub fn finished(&self, n: usize) {
        self.lock().arrivals.left(n);
    }

    /// Blocks until the policy releases a batch; `None` once closed and empty.
    /// Requests that time out meanwhile are handed to `timed_out`, and ones
    /// whose client went away to `cancelled`, both without running.
    pub fn next_batch(&self, mut timed_out: impl FnMut(Job), mut cancelled: impl FnMut(Job)) -> Option<Taken> {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let (rejected, next_deadline) = st.expire(now, &self.config.levels);
            st.arrivals.left(rejected.len());
            for job in rejected {
                timed_out(job);
            }
            let decision = match (&self.config.batching, st.closed) {
                (_, _) if st.len == 0 => Decision::Idle,
                (None, _) => Decision::Run(1),
                // Closing: no point waiting for requests that will not come.
                (Some(c), true) => policy::decide(
                    &BatchingConfig {
                        max_queue_delay: Duration::ZERO,
                        ..c.clone()
                    },
                    st.candidates(),
                    &st.arrivals,
                    now,
                ),
                (Some(c), false) => policy::decide(c, st.candidates(), &st.arrivals, now),
            };
            match decision {
                Decision::Run(n) => {
                    let mut jobs = Vec::with_capacity(n);
                    for _ in 0..n {
                        let Some(q) = st.pop() else { break };
                        if q.job.reply.is_closed() {
                            st.arrivals.left(1);
                            cancelled(q.job);
                        } else {
                            jobs.push(q.job);
                        }
                    }
                    if jobs.is_empty() {
                        continue;
                    }
                    let ticket = st.next_ticket;
                    st.next_ticket += 1;
                    if st.len > 0 && st.waiting > 0 {
                        // Work is left: pass the wake-up on to another idle
                        // instance, or it would wait for the next arrival.
                        self.arrived.notify_one();
                    }
                    return Some(Taken { ticket, jobs });
                }
                Decision::Wait(d) => {
                    let d = next_deadline.map_or(d, |t| d.min(t.saturating_duration_since(now)));
                    st.waiting += 1;
                    st = self.arrived.wait_timeout(st, d).unwrap_or_else(|e| e.into_inner()).0;
                    st.waiting -= 1;
                }
                Decision::Idle => {
                    if st.closed {
                        return None;
                    }
                    st.waiting += 1;
                    st = match next_deadline {
                        Some(t) => {
                            self.arrived
                                .wait_timeout(st, t.saturating_duration_since(now))
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                        None => self.arrived.wait(st).unwrap_or_else(|e| e.into_inner()),
                    };
                    st.waiting -= 1;
                }
            }
        }
    }
}

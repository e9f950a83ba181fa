//! The dynamic-batching decision, as a pure function of what is queued and
//! the time: no channels, no clock, no threads. Triton's semantics:
//!
//! - requests join a batch in queue order while their rows fit
//!   `max_batch_size` and their non-batch dims equal the first request's;
//! - a batch runs at once when it is full, when the next request cannot join
//!   it, or when it reaches a preferred batch size (the largest one that can
//!   be formed from what is queued);
//! - otherwise it waits for more until the oldest request has waited
//!   `max_queue_delay`, then runs with what it has.
use std::time::{Duration, Instant};

/// The `dynamic_batching` settings the policy needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchingConfig {
    /// Rows per batch at most (the model's `max_batch_size`).
    pub max_batch_size: usize,
    /// `preferred_batch_size`, sorted ascending; empty means "as full as possible".
    pub preferred: Vec<usize>,
    /// `max_queue_delay_microseconds`.
    pub max_queue_delay: Duration,
}

/// What the policy sees of one queued request, in dispatch order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Rows this request contributes (its dim 0).
    pub rows: usize,
    /// Equal keys mean equal non-batch dims (and input set): joinable.
    pub shape_key: u64,
    pub arrived: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take this many requests from the head of the queue and run them as one batch.
    Run(usize),
    /// Nothing to run yet; decide again after this long (or when a request arrives).
    Wait(Duration),
    /// The queue is empty.
    Idle,
}

/// Decides what to do with the queue `candidates` (in dispatch order) at `now`.
pub fn decide(config: &BatchingConfig, candidates: impl IntoIterator<Item = Candidate>, now: Instant) -> Decision {
    let mut candidates = candidates.into_iter();
    let Some(first) = candidates.next() else {
        return Decision::Idle;
    };
    let max = config.max_batch_size.max(1);
    let mut count = 1;
    let mut rows = first.rows;
    // Requests taken when the batch last matched a preferred size.
    let mut preferred_count = usize::from(config.preferred.contains(&rows));
    let mut blocked = false;
    for c in candidates {
        if c.shape_key != first.shape_key || rows + c.rows > max {
            blocked = true;
            break;
        }
        count += 1;
        rows += c.rows;
        if config.preferred.contains(&rows) {
            preferred_count = count;
        }
        if rows == max {
            break;
        }
    }
    if rows >= max || blocked {
        // Full, or the next request cannot join: more waiting cannot help.
        return Decision::Run(count);
    }
    if preferred_count > 0 {
        return Decision::Run(preferred_count);
    }
    let waited = now.saturating_duration_since(first.arrived);
    if waited >= config.max_queue_delay {
        Decision::Run(count)
    } else {
        Decision::Wait(config.max_queue_delay - waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max: usize, preferred: &[usize], delay_us: u64) -> BatchingConfig {
        BatchingConfig {
            max_batch_size: max,
            preferred: preferred.to_vec(),
            max_queue_delay: Duration::from_micros(delay_us),
        }
    }

    /// `rows` requests of shape key 0 that arrived `ages_us` before `now`.
    fn queue(now: Instant, reqs: &[(usize, u64, u64)]) -> Vec<Candidate> {
        reqs.iter()
            .map(|&(rows, key, age)| Candidate {
                rows,
                shape_key: key,
                arrived: now - Duration::from_micros(age),
            })
            .collect()
    }

    #[test]
    fn empty_queue_is_idle() {
        assert_eq!(decide(&config(8, &[], 100), [], Instant::now()), Decision::Idle);
    }

    #[test]
    fn zero_delay_runs_whatever_is_queued() {
        let now = Instant::now();
        let q = queue(now, &[(1, 0, 0), (1, 0, 0), (1, 0, 0)]);
        assert_eq!(decide(&config(8, &[], 0), q, now), Decision::Run(3));
    }

    #[test]
    fn waits_for_the_rest_of_the_delay_then_runs() {
        let now = Instant::now();
        let q = queue(now, &[(1, 0, 30), (1, 0, 10)]);
        assert_eq!(
            decide(&config(8, &[], 100), q.clone(), now),
            Decision::Wait(Duration::from_micros(70))
        );
        let later = now + Duration::from_micros(70);
        assert_eq!(decide(&config(8, &[], 100), q, later), Decision::Run(2));
    }

    #[test]
    fn full_batch_runs_at_once_and_leaves_the_rest() {
        let now = Instant::now();
        let q = queue(now, &[(1, 0, 0); 10]);
        assert_eq!(decide(&config(4, &[], 1_000_000), q, now), Decision::Run(4));
    }

    #[test]
    fn rows_count_not_requests() {
        let now = Instant::now();
        // 3 + 3 rows = 6 fits 8; adding 3 more would not.
        let q = queue(now, &[(3, 0, 0), (3, 0, 0), (3, 0, 0)]);
        assert_eq!(decide(&config(8, &[], 1_000), q, now), Decision::Run(2));
        // A single multi-row request that fills the batch runs alone.
        let q = queue(now, &[(8, 0, 0), (1, 0, 0)]);
        assert_eq!(decide(&config(8, &[], 1_000), q, now), Decision::Run(1));
    }

    #[test]
    fn different_shapes_are_not_joined() {
        let now = Instant::now();
        let q = queue(now, &[(1, 7, 0), (1, 7, 0), (1, 9, 0), (1, 7, 0)]);
        // The batch ends before the request with other dims, and runs now.
        assert_eq!(decide(&config(8, &[], 1_000), q, now), Decision::Run(2));
    }

    #[test]
    fn preferred_size_runs_before_the_delay() {
        let now = Instant::now();
        let q = queue(now, &[(1, 0, 0); 5]);
        // 5 queued, preferred 2 and 4: the largest that can be formed is 4.
        assert_eq!(decide(&config(8, &[2, 4], 1_000_000), q, now), Decision::Run(4));
        let q = queue(now, &[(1, 0, 0); 3]);
        assert_eq!(
            decide(&config(8, &[4, 8], 1_000_000), q, now),
            Decision::Wait(Duration::from_micros(1_000_000))
        );
    }

    #[test]
    fn a_preferred_size_that_rows_jump_over_does_not_count() {
        let now = Instant::now();
        let q = queue(now, &[(3, 0, 0), (3, 0, 0)]);
        assert_eq!(
            decide(&config(8, &[4], 500), q, now),
            Decision::Wait(Duration::from_micros(500))
        );
    }
}

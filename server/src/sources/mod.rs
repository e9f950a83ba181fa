//! Where models come from besides a local folder: an object store mirrored
//! into a local cache (`object.rs`) and an MLflow Model Registry followed by
//! alias, stage or version (`mlflow.rs`). Both end in a folder laid out like
//! a Triton repository, and in the engine's load → warm up → validate →
//! switch → drain; nothing here decides what serves.
pub mod mlflow;
pub mod object;
pub mod poll;
pub mod secrets;

use std::time::Duration;

/// `true` for a repository given as a URL (`s3://`, `gs://`, `az://`,
/// `file://`, ...) rather than a local path.
pub fn is_url(repository: &str) -> bool {
    repository.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// Waits between attempts at a source that failed: the poll interval, doubled
/// after each consecutive failure up to 8 intervals or 5 minutes, whichever
/// is shorter, and back to the interval after a success.
#[derive(Debug)]
pub struct Backoff {
    every: Duration,
    failures: u32,
    /// When the last attempt started.
    started: tokio::time::Instant,
}

impl Backoff {
    pub fn new(every: Duration) -> Backoff {
        Backoff {
            every,
            failures: 0,
            started: tokio::time::Instant::now(),
        }
    }

    /// Waits for the next attempt, counted from the start of the last one
    /// (a change is seen within one interval however long the last sync or
    /// swap took); `false` when `stop` turned true first.
    pub async fn wait(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(self.started + self.next_wait()) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
        self.started = tokio::time::Instant::now();
        true
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// How long to wait before the next attempt.
    pub fn next_wait(&self) -> Duration {
        let factor = 1u32 << self.failures.min(3);
        let cap = (self.every * 8).min(Duration::from_secs(300)).max(self.every);
        (self.every * factor).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("s3://models/prod"));
        assert!(is_url("gs://b/p"));
        assert!(is_url("file:///srv/models"));
        assert!(!is_url("models"));
        assert!(!is_url("/srv/models"));
        assert!(!is_url("./odd://name"));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2));
        assert_eq!(b.next_wait(), Duration::from_secs(2));
        b.failed();
        assert_eq!(b.next_wait(), Duration::from_secs(4));
        for _ in 0..10 {
            b.failed();
        }
        assert_eq!(b.next_wait(), Duration::from_secs(16));
        b.succeeded();
        assert_eq!(b.next_wait(), Duration::from_secs(2));
        let mut slow = Backoff::new(Duration::from_secs(60));
        for _ in 0..5 {
            slow.failed();
        }
        assert_eq!(slow.next_wait(), Duration::from_secs(300));
    }
}

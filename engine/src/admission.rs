//! Admission control: a server-wide budget of request bytes and of requests
//! in flight, checked as a request arrives, before its body is buffered any
//! further. A request over budget is refused at once (429 /
//! RESOURCE_EXHAUSTED) instead of taking memory the server does not have.
//!
//! A [`Ticket`] is what one request holds: its slot and the bytes it was
//! granted, which may grow as more of its body arrives. Dropping the ticket
//! gives both back. Bytes in flight are a request's body as received; what a
//! request costs on top (a runtime's copy of its inputs, its outputs, a JSON
//! body's decoded numbers) is what the default budget leaves room for, see
//! `docs/limits.md`.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics::Gauge;

use crate::error::{Error, ErrorKind, Result};
use crate::telemetry;

pub struct Admission {
    max_bytes: usize,
    max_requests: usize,
    bytes: AtomicUsize,
    requests: AtomicUsize,
    bytes_gauge: Gauge,
    requests_gauge: Gauge,
}

/// Adds `n` to `counter` unless that would pass `max`.
fn take(counter: &AtomicUsize, n: usize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
            cur.checked_add(n).filter(|&next| next <= max)
        })
        .is_ok()
}

impl Admission {
    pub fn new(max_bytes: usize, max_requests: usize) -> Arc<Admission> {
        let (bytes_gauge, requests_gauge) = telemetry::admission_gauges(max_bytes, max_requests);
        Arc::new(Admission {
            max_bytes,
            max_requests,
            bytes: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            bytes_gauge,
            requests_gauge,
        })
    }

    pub fn bytes_in_flight(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn requests_in_flight(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    /// A slot for one request with `bytes` of it granted up front.
    pub fn admit(self: &Arc<Self>, bytes: usize) -> Result<Ticket> {
        if !take(&self.requests, 1, self.max_requests) {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "the server is at its limit of {} requests in flight (--max-inflight-requests); retry later",
                    self.max_requests
                ),
            ));
        }
        self.requests_gauge.increment(1.0);
        let ticket = Ticket {
            admission: Arc::clone(self),
            bytes: AtomicUsize::new(0),
        };
        ticket.grow(bytes)?;
        Ok(ticket)
    }
}

/// One request's share of the budget; dropping it gives the share back.
pub struct Ticket {
    admission: Arc<Admission>,
    bytes: AtomicUsize,
}

impl Ticket {
    /// Takes `n` more bytes for this request, or refuses the request. A
    /// large request (over 1/64 of the budget) may fill only 3/4 of it: the
    /// last quarter is kept for small requests, so a flood of large ones
    /// cannot lock out everyone else.
    pub fn grow(&self, n: usize) -> Result<()> {
        let a = &self.admission;
        if n == 0 {
            return Ok(());
        }
        let total = self.bytes.load(Ordering::Acquire) + n;
        let cap = if total > a.max_bytes / 64 {
            a.max_bytes / 4 * 3
        } else {
            a.max_bytes
        };
        if !take(&a.bytes, n, cap) {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "the server holds {} of its {} bytes of requests in flight and this request needs {n} \
                     more (--max-inflight-bytes); retry later",
                    a.bytes_in_flight(),
                    a.max_bytes
                ),
            ));
        }
        self.bytes.fetch_add(n, Ordering::AcqRel);
        a.bytes_gauge.increment(n as f64);
        Ok(())
    }

    /// Gives back `n` of this request's bytes (a stream's message answered).
    pub fn shrink(&self, n: usize) {
        let n = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| Some(cur.saturating_sub(n)))
            .map_or(0, |before| before.min(n));
        self.admission.bytes.fetch_sub(n, Ordering::AcqRel);
        self.admission.bytes_gauge.decrement(n as f64);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let n = *self.bytes.get_mut();
        let a = &self.admission;
        a.bytes.fetch_sub(n, Ordering::AcqRel);
        a.bytes_gauge.decrement(n as f64);
        a.requests.fetch_sub(1, Ordering::AcqRel);
        a.requests_gauge.decrement(1.0);
    }
}

/// The memory this process may use: the smallest of its cgroup's limit
/// (v2 or v1, at the process's own cgroup and at the mount's root, which is
/// what a container sees), its address-space rlimit and the machine's memory.
pub fn memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let mut limits = Vec::new();
    let mut files = vec![
        "/sys/fs/cgroup/memory.max".to_owned(),
        "/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned(),
    ];
    for line in read("/proc/self/cgroup").unwrap_or_default().lines() {
        // "0::/path" (v2) or "4:memory:/path" (v1).
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if controllers.is_empty() {
            files.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    for file in &files {
        if let Some(v) = read(file).as_deref().and_then(number) {
            limits.push(v);
        }
    }
    if let Some(limits_text) = read("/proc/self/limits")
        && let Some(line) = limits_text.lines().find(|l| l.starts_with("Max address space"))
        && let Some(v) = line.split_whitespace().nth(3).and_then(number)
    {
        limits.push(v);
    }
    if let Some(meminfo) = read("/proc/meminfo")
        && let Some(line) = meminfo.lines().find(|l| l.starts_with("MemTotal:"))
        && let Some(kb) = line.split_whitespace().nth(1).and_then(number)
    {
        limits.push(kb * 1024);
    }
    limits.into_iter().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_past_the_limit_and_come_back_on_drop() {
        let a = Admission::new(100, 2);
        let t1 = a.admit(60).unwrap();
        // Large requests stop at 3/4 of the budget (75 bytes here).
        let e = a.admit(20).err().unwrap();
        assert_eq!(e.kind, ErrorKind::ResourceExhausted);
        assert!(e.message.contains("--max-inflight-bytes"), "{}", e.message);
        assert_eq!(
            (a.bytes_in_flight(), a.requests_in_flight()),
            (60, 1),
            "a refused request holds nothing"
        );
        let t2 = a.admit(15).unwrap();
        let e = a.admit(0).err().unwrap();
        assert!(e.message.contains("--max-inflight-requests"), "{}", e.message);
        assert!(t2.grow(1).is_err());
        drop(t1);
        // Small requests may use the last quarter.
        let small = a.admit(1).unwrap();
        assert_eq!((a.bytes_in_flight(), a.requests_in_flight()), (16, 2));
        t2.shrink(10);
        assert_eq!(a.bytes_in_flight(), 6);
        drop(small);
        drop(t2);
        assert_eq!((a.bytes_in_flight(), a.requests_in_flight()), (0, 0));
    }

    #[test]
    fn a_memory_limit_is_found() {
        assert!(memory_limit().is_some_and(|m| m > 0));
    }
}

//! CPU time of a process from /proc, so every figure comes with how much CPU
//! the load generator (and the server) used to produce it.
use std::time::Instant;

/// Clock ticks per second for /proc times (100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Measures CPU use of a process over an interval, as a share of one core.
pub struct CpuMeter {
    pid: Option<u32>,
    start_cpu: Option<f64>,
    start: Instant,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            start_cpu: cpu_seconds(pid),
            start: Instant::now(),
        }
    }

    /// Cores used on average since `start` (1.0 = one core fully busy).
    pub fn cores(&self) -> Option<f64> {
        let used = cpu_seconds(self.pid)? - self.start_cpu?;
        Some(used / self.start.elapsed().as_secs_f64())
    }
}

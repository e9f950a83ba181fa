//! Progressive rollout: the canary's weight rises step by step while its
//! error rate and p99 stay within bounds of the stable variant's over the
//! same step; it goes back to 0 (with the reason logged and counted) when
//! they do not, and at 100% the canary becomes the new stable.
//!
//! One supervisor task ticks every policy that has a rollout; each tick is
//! a small state machine step, and a weight change is a policy swap like an
//! API PUT (applied only if the policy is still the one the tick read, so a
//! PUT meanwhile wins).
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::telemetry;
use crate::traffic::rollout::Phase;
use crate::traffic::stats::Snapshot;
use crate::traffic::{PolicySpec, Traffic};

/// Ticks every rollout until `stop`.
pub async fn run(engine: Arc<Engine>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for (name, t) in engine.traffic.load().iter() {
            if t.rollout.is_some() {
                tick(&engine, name, t);
            }
        }
    }
}

fn tick(engine: &Engine, name: &str, t: &Arc<Traffic>) {
    let (Some(state), Some(plan)) = (&t.rollout, &t.spec.rollout) else {
        return;
    };
    let (Some(ci), Some(si)) = (t.index(&plan.canary), t.index(&plan.stable)) else {
        return;
    };
    let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
    let next = match &inner.phase {
        Phase::Done => return,
        Phase::Pending => 0,
        Phase::Step {
            index,
            started,
            canary,
            stable,
        } => {
            if started.elapsed().as_secs_f64() < plan.step_seconds {
                return;
            }
            let c = t.stats[ci].snapshot().since(canary);
            if c.requests < plan.min_requests {
                return; // the step lasts until the canary has been judged on enough
            }
            let s = t.stats[si].snapshot().since(stable);
            let bounds = Bounds {
                error_increase: plan.max_error_rate_increase,
                p99_ratio: plan.max_p99_ratio,
                p99_slack: plan.p99_slack_ms / 1e3,
            };
            if let Some((check, why)) = judge(&c, &s, bounds) {
                let weights = weights(&t.spec, ci, si, 0);
                if engine.replace_traffic(name, t, weights) {
                    let status = format!("rolled back at step {} ({}%): {why}", index + 1, plan.steps[*index]);
                    tracing::error!(model = name, reason = status, "rollout rolled back");
                    counter!(telemetry::ROLLOUT_ROLLBACKS, "model" => name.to_owned(), "check" => check).increment(1);
                    gauge!(telemetry::ROLLOUT_WEIGHT, "model" => name.to_owned()).set(0.0);
                    inner.status = status;
                    inner.phase = Phase::Done;
                }
                return;
            }
            index + 1
        }
    };
    if next == plan.steps.len() {
        // Every step held. At 100% the canary is the new stable.
        let last = plan.steps[next - 1];
        if last == 100 {
            let promoted = promote(&t.spec, ci, si, engine, name);
            if engine.replace_traffic(name, t, promoted) {
                tracing::info!(model = name, "rollout promoted the canary to stable");
                inner.status = format!("promoted: '{}' now serves what '{}' did", plan.stable, plan.canary);
                inner.phase = Phase::Done;
                gauge!(telemetry::ROLLOUT_WEIGHT, "model" => name.to_owned()).set(0.0);
            }
        } else {
            inner.status = format!("completed at {last}%");
            inner.phase = Phase::Done;
        }
        return;
    }
    let percent = plan.steps[next];
    let spec = weights(&t.spec, ci, si, percent);
    // Snapshots before the swap: the step's window counts only what follows.
    let (canary, stable) = (t.stats[ci].snapshot(), t.stats[si].snapshot());
    if engine.replace_traffic(name, t, spec) {
        tracing::info!(model = name, step = next + 1, percent, "rollout step");
        counter!(telemetry::ROLLOUT_STEPS, "model" => name.to_owned()).increment(1);
        gauge!(telemetry::ROLLOUT_WEIGHT, "model" => name.to_owned()).set(f64::from(percent));
        inner.status = format!("step {}/{}: canary at {percent}%", next + 1, plan.steps.len());
        inner.phase = Phase::Step {
            index: next,
            started: Instant::now(),
            canary,
            stable,
        };
    }
}

/// How much worse than the stable variant a canary may do.
#[derive(Clone, Copy)]
struct Bounds {
    error_increase: f64,
    p99_ratio: f64,
    /// Seconds.
    p99_slack: f64,
}

/// The check that failed and why, if the canary did worse than allowed.
fn judge(canary: &Snapshot, stable: &Snapshot, b: Bounds) -> Option<(&'static str, String)> {
    let (max_increase, max_ratio) = (b.error_increase, b.p99_ratio);
    let (ce, se) = (canary.error_rate(), stable.error_rate());
    if ce > se + max_increase {
        return Some((
            "error_rate",
            format!(
                "canary error rate {:.2}% ({} of {}) exceeds stable's {:.2}% by more than {:.2} points",
                ce * 100.0,
                canary.errors,
                canary.requests,
                se * 100.0,
                max_increase * 100.0
            ),
        ));
    }
    if let (Some(cp), Some(sp)) = (canary.quantile(0.99), stable.quantile(0.99))
        && cp > sp * max_ratio + b.p99_slack
    {
        return Some((
            "p99",
            format!(
                "canary p99 {:.3} ms exceeds stable's {:.3} ms x {max_ratio} + {:.1} ms",
                cp * 1e3,
                sp * 1e3,
                b.p99_slack * 1e3
            ),
        ));
    }
    None
}

/// The policy with the canary at `percent` and the stable variant at the rest.
fn weights(spec: &PolicySpec, canary: usize, stable: usize, percent: u32) -> PolicySpec {
    let mut s = spec.clone();
    s.variants[canary].weight = percent;
    s.variants[stable].weight = 100 - percent;
    s
}

/// The policy after promotion: the stable variant (and a `stable` label)
/// serves the canary's version, at 100%.
fn promote(spec: &PolicySpec, canary: usize, stable: usize, engine: &Engine, name: &str) -> PolicySpec {
    let mut s = weights(spec, canary, stable, 0);
    let c = spec.variants[canary].clone();
    let target = c.model.clone().unwrap_or_else(|| name.to_owned());
    // Pin the version the canary serves now (a label may move later).
    let version = match c.version.as_deref() {
        Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => Some(v.to_owned()),
        Some(label) if c.model.is_none() => spec.labels.get(label).map(|n| n.to_string()),
        _ => engine.resolve(&target, None).ok().map(|m| m.version.to_string()),
    };
    s.variants[stable].model = c.model;
    s.variants[stable].version = version.clone().or(c.version);
    if let (Some(v), true) = (
        version.and_then(|v| v.parse::<u64>().ok()),
        s.variants[stable].model.is_none(),
    ) && s.labels.contains_key("stable")
    {
        s.labels.insert("stable".into(), v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(requests: u64, errors: u64, fast: u64) -> Snapshot {
        let s = crate::traffic::stats::VariantStats::new("m", "v");
        for i in 0..requests {
            let ms = if i < fast { 1 } else { 25 };
            s.record(i >= errors, Duration::from_millis(ms));
        }
        s.snapshot()
    }

    const B: Bounds = Bounds {
        error_increase: 0.01,
        p99_ratio: 1.5,
        p99_slack: 0.005,
    };

    #[test]
    fn the_canary_is_judged_against_the_stable_variant() {
        let stable = window(1000, 5, 1000);
        assert!(judge(&window(100, 1, 100), &stable, B).is_none());
        let (check, why) = judge(&window(100, 20, 100), &stable, B).unwrap();
        assert_eq!(check, "error_rate");
        assert!(why.contains("20.00% (20 of 100)") && why.contains("0.50%"), "{why}");
        let (check, why) = judge(&window(100, 0, 50), &stable, B).unwrap();
        assert_eq!(check, "p99");
        assert!(
            why.contains("canary p99 27.264 ms exceeds stable's 1.067 ms x 1.5 + 5.0 ms"),
            "{why}"
        );
        // Three times slower, but by less than the slack: kept.
        let slow = crate::traffic::stats::VariantStats::new("m", "slow");
        for _ in 0..100 {
            slow.record(true, Duration::from_millis(3));
        }
        assert!(judge(&slow.snapshot(), &stable, B).is_none());
    }
}

//! Traffic splitting inside the server: a served model name's policy sends
//! each request to one of its variants (a version, a labelled version, or
//! another model), the same way over REST and gRPC.
//!
//! The choice, in order: `x-quiver-variant` names a variant (a client that
//! sends back the value it was answered with is routed to it again); else the
//! sticky header's value is hashed onto the weights, so one user keeps one
//! variant while the weights stand; else a smooth weighted round-robin, whose
//! shares are exact over every cycle of the weights (90/10 is 9 in 10 for
//! every 10 requests), with no lock on the request path.
pub mod policy;
pub mod rollout;
pub mod shadow;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use policy::PolicySpec;
use stats::{Snapshot, VariantStats};

use crate::error::{Error, Result};
use crate::tap::Headers;

/// Request header (gRPC metadata key) that forces a variant, and response
/// header (initial metadata) that names the variant that answered.
pub const VARIANT_HEADER: &str = "x-quiver-variant";

/// Where a policy came from: a file the repository owns, or the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    File,
    Api,
}

/// A checked policy, ready to route.
pub struct Traffic {
    pub spec: PolicySpec,
    pub origin: Origin,
    /// Where a request goes when the variant chosen by weight or hash has
    /// no ready version (a canary that failed to load).
    pub default: usize,
    /// Variant indexes in smooth weighted round-robin order; one cycle.
    schedule: Vec<u16>,
    next: AtomicU64,
    /// Cumulative weights, for sticky hashing.
    cumulative: Vec<u64>,
    /// Each variant's record, by index; kept (by name) when the policy is
    /// replaced, so counts and rollout windows span weight changes.
    pub stats: Vec<Arc<VariantStats>>,
    /// The records when this policy took effect: the summary's window.
    pub window_start: (Instant, Vec<Snapshot>),
    pub shadow: Option<shadow::Shadow>,
    /// The rollout's state, shared by the policies its steps write.
    pub rollout: Option<Arc<rollout::State>>,
}

/// The largest schedule kept: weights are reduced by their gcd first, so
/// only unusual weights (e.g. 999_983/17) need the hash instead.
const MAX_SCHEDULE: u64 = 100_000;

impl Traffic {
    /// A policy for `model`; `previous` is the policy it replaces, whose
    /// variant records (and rollout state, when `keep_rollout`) carry over.
    pub fn new(
        model: &str,
        spec: PolicySpec,
        origin: Origin,
        previous: Option<&Traffic>,
        keep_rollout: bool,
    ) -> Traffic {
        let weights: Vec<u64> = spec.variants.iter().map(|v| u64::from(v.weight)).collect();
        let gcd = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
        let reduced: Vec<u64> = weights.iter().map(|w| w / gcd.max(1)).collect();
        let total: u64 = reduced.iter().sum();
        let schedule = if total <= MAX_SCHEDULE {
            smooth_schedule(&reduced)
        } else {
            Vec::new()
        };
        let cumulative = weights
            .iter()
            .scan(0u64, |acc, w| {
                *acc += w;
                Some(*acc)
            })
            .collect();
        let default = spec
            .default
            .as_ref()
            .and_then(|d| spec.variants.iter().position(|v| &v.name == d))
            .unwrap_or(0);
        let stats: Vec<Arc<VariantStats>> = spec
            .variants
            .iter()
            .map(|v| {
                previous
                    .and_then(|p| {
                        p.spec
                            .variants
                            .iter()
                            .position(|o| o.name == v.name)
                            .map(|i| Arc::clone(&p.stats[i]))
                    })
                    .unwrap_or_else(|| Arc::new(VariantStats::new(model, &v.name)))
            })
            .collect();
        let window_start = (Instant::now(), stats.iter().map(|s| s.snapshot()).collect());
        let shadow = spec.shadow.as_ref().and_then(|s| {
            let index = spec.variants.iter().position(|v| v.name == s.variant)?;
            Some(shadow::Shadow::new(model, s, index))
        });
        let rollout = match (keep_rollout, previous, &spec.rollout) {
            (true, Some(p), Some(_)) => p.rollout.clone(),
            (_, _, Some(_)) => Some(Arc::new(rollout::State::default())),
            _ => None,
        };
        Traffic {
            stats,
            window_start,
            shadow,
            rollout,
            default,
            schedule,
            next: AtomicU64::new(0),
            cumulative,
            origin,
            spec,
        }
    }

    pub fn variant_name(&self, index: usize) -> &str {
        &self.spec.variants[index].name
    }

    /// The variant a request goes to.
    pub fn pick(&self, headers: &dyn Headers) -> Result<usize> {
        if let Some(forced) = headers.get(VARIANT_HEADER) {
            return self.spec.variants.iter().position(|v| v.name == forced).ok_or_else(|| {
                Error::invalid(format!(
                    "header {VARIANT_HEADER}: '{forced}' is not a variant of this model (variants: {})",
                    self.names()
                ))
            });
        }
        if let Some(key) = self.spec.sticky_header.as_deref().and_then(|h| headers.get(h)) {
            return Ok(self.by_hash(stable_hash(key.as_bytes())));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.schedule.is_empty() {
            return Ok(self.by_hash(mix(n)));
        }
        Ok(self.schedule[(n % self.schedule.len() as u64) as usize] as usize)
    }

    /// The variant whose share of the weights `hash` falls in.
    fn by_hash(&self, hash: u64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return self.default;
        }
        let point = hash % total;
        self.cumulative.partition_point(|&c| c <= point)
    }

    fn names(&self) -> String {
        self.spec
            .variants
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The version number a label names.
    pub fn label(&self, label: &str) -> Option<u64> {
        self.spec.labels.get(label).copied()
    }

    pub fn record(&self, index: usize, ok: bool, elapsed: std::time::Duration) {
        self.stats[index].record(ok, elapsed);
    }

    /// The index of a variant by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.spec.variants.iter().position(|v| v.name == name)
    }
}

/// nginx's smooth weighted round-robin, unrolled into one cycle: each step
/// adds every weight to its variant's credit and picks the highest credit,
/// which then pays the total. Shares are exact per cycle and spread out.
fn smooth_schedule(weights: &[u64]) -> Vec<u16> {
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut credit = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            credit[i] += *w as i64;
            if credit[i] > credit[best] {
                best = i;
            }
        }
        credit[best] -= total;
        out.push(best as u16);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// FNV-1a, then a finaliser: stable across builds and platforms (a user
/// keeps their variant across restarts and replicas), and well spread.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Live policies by served model name.
pub type Policies = arc_swap::ArcSwap<std::collections::BTreeMap<String, Arc<Traffic>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct H(HashMap<&'static str, String>);
    impl Headers for H {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).map(String::as_str)
        }
    }

    fn traffic(json: &str) -> Traffic {
        Traffic::new(
            "m",
            PolicySpec::parse("m", json.as_bytes(), |_| true).unwrap(),
            Origin::Api,
            None,
            false,
        )
    }

    #[test]
    fn weights_are_exact_per_cycle_and_spread() {
        let t = traffic(r#"{"variants": [{"name": "a", "weight": 90}, {"name": "b", "weight": 10}]}"#);
        let none = H(HashMap::new());
        let picks: Vec<usize> = (0..10_000).map(|_| t.pick(&none).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 1_000);
        // Spread: never two 'b' in a row at 90/10.
        assert!(picks.windows(2).all(|w| w != [1, 1]));
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn sticky_users_keep_their_variant_and_follow_the_weights() {
        let t = traffic(
            r#"{"variants": [{"name": "a", "weight": 70}, {"name": "b", "weight": 30}], "sticky_header": "x-user"}"#,
        );
        let mut b = 0;
        for user in 0..10_000 {
            let h = H(HashMap::from([("x-user", format!("user-{user}"))]));
            let first = t.pick(&h).unwrap();
            assert!((0..5).all(|_| t.pick(&h).unwrap() == first));
            b += first;
        }
        assert!((2_800..=3_200).contains(&b), "{b}");
    }

    #[test]
    fn the_header_forces_a_variant_and_unknown_ones_are_refused() {
        let t = traffic(r#"{"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 0}]}"#);
        let h = H(HashMap::from([(VARIANT_HEADER, "b".to_string())]));
        assert_eq!(t.pick(&h).unwrap(), 1);
        let h = H(HashMap::from([(VARIANT_HEADER, "c".to_string())]));
        let e = t.pick(&h).unwrap_err().message;
        assert!(e.contains("'c' is not a variant") && e.contains("a, b"), "{e}");
    }
}

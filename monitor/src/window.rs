//! One time window of what a version saw, per feature: bin or category
//! counts over every row, a fixed-size uniform sample (reservoir) for the
//! tests that need values, moments, and data-quality counts. Its size
//! depends on the profile and the settings, never on the traffic.
use std::time::{Instant, SystemTime};

use crate::profile::{Cells, Layout, Reference, TensorProfile, Value};

pub struct Window {
    pub opened: Instant,
    pub opened_at: SystemTime,
    /// Requests seen (answered or refused).
    pub requests: u64,
    /// Requests refused as invalid, per watched tensor the refusal named.
    pub refused: Vec<u64>,
    pub tensors: Vec<TensorWindow>,
    rng: u64,
}

#[derive(Default)]
pub struct TensorWindow {
    pub rows: u64,
    /// Numeric elements looked at, how many were NaN or infinite, and how
    /// many finite ones fell outside the reference's range.
    pub numeric: u64,
    pub nan: u64,
    pub out_of_range: u64,
    /// Categorical elements looked at, how many the reference never had.
    pub categorical: u64,
    pub unseen: u64,
    pub features: Vec<FeatureWindow>,
}

#[derive(Default)]
pub struct FeatureWindow {
    /// Values counted (finite numbers, or categories).
    pub n: u64,
    /// Per reference bin, or per reference category and one more for
    /// unseen ones.
    pub counts: Vec<u64>,
    /// A uniform sample of the finite values (numeric features).
    pub sample: Vec<f64>,
    offered: u64,
    skip: Skip,
    pub sum: f64,
    pub sum_sq: f64,
    pub min: f64,
    pub max: f64,
}

impl Window {
    pub fn new(tensors: &[TensorProfile], seed: u64) -> Window {
        Window {
            opened: Instant::now(),
            opened_at: SystemTime::now(),
            requests: 0,
            refused: vec![0; tensors.len()],
            tensors: tensors
                .iter()
                .map(|t| TensorWindow {
                    features: t
                        .features
                        .iter()
                        .map(|f| FeatureWindow {
                            counts: vec![
                                0;
                                match &f.reference {
                                    Reference::Numeric(n) => n.counts.len(),
                                    Reference::Categorical(c) => c.counts.len() + 1,
                                }
                            ],
                            min: f64::INFINITY,
                            max: f64::NEG_INFINITY,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            rng: seed | 1,
        }
    }

    /// The rows the window holds: what the minimum sample is checked against.
    pub fn rows(&self) -> u64 {
        self.tensors.iter().map(|t| t.rows).max().unwrap_or(0)
    }

    /// Adds `rows` rows of tensor `t`.
    pub fn add<C: Cells + ?Sized>(
        &mut self,
        t: usize,
        profile: &TensorProfile,
        cells: &C,
        rows: usize,
        row_len: usize,
        reservoir: usize,
    ) {
        let Window { tensors, rng, .. } = self;
        let window = &mut tensors[t];
        window.rows += rows as u64;
        let class = match profile.layout {
            Layout::Columns { class: true } => Some(profile.features.len() - 1),
            _ => None,
        };
        profile.visit(cells, rows, row_len, |_, f, v| {
            let feature = &profile.features[f];
            let w = &mut window.features[f];
            let quality = Some(f) != class;
            match (&feature.reference, v) {
                (Reference::Numeric(n), Value::Number(x)) => {
                    if quality {
                        window.numeric += 1;
                    }
                    if !x.is_finite() {
                        if quality {
                            window.nan += 1;
                        }
                        return;
                    }
                    if quality && (x < n.min || x > n.max) {
                        window.out_of_range += 1;
                    }
                    w.n += 1;
                    w.counts[n.bin(x)] += 1;
                    w.sum += x;
                    w.sum_sq += x * x;
                    w.min = w.min.min(x);
                    w.max = w.max.max(x);
                    w.offered += 1;
                    if w.sample.len() < reservoir {
                        w.sample.push(x);
                        if w.sample.len() == reservoir {
                            w.skip = Skip::start(reservoir, w.offered, rng);
                        }
                    } else if w.offered == w.skip.next {
                        let j = (next(rng) % reservoir as u64) as usize;
                        w.sample[j] = x;
                        w.skip.advance(reservoir, rng);
                    }
                }
                (Reference::Categorical(c), v) => {
                    if let Value::Number(x) = v
                        && !x.is_finite()
                    {
                        if quality {
                            window.numeric += 1;
                            window.nan += 1;
                        }
                        return;
                    }
                    if quality {
                        window.categorical += 1;
                    }
                    w.n += 1;
                    match c.index(&v) {
                        Some(i) => w.counts[i] += 1,
                        None => {
                            *w.counts.last_mut().unwrap() += 1;
                            if quality {
                                window.unseen += 1;
                            }
                        }
                    }
                }
                // A string where a number was expected: the tensor's type
                // changed under the reference; count it as unseen.
                (Reference::Numeric(_), Value::Text(_)) => {
                    window.unseen += 1;
                }
            }
        });
    }
}

/// Li's Algorithm L: a uniform sample of k values from a stream, drawing
/// random numbers only for the values it takes (O(k log(n/k)) of them)
/// instead of one per value: past the first k, a value costs a compare.
#[derive(Default)]
struct Skip {
    /// The count (1-based) of the next value to take.
    next: u64,
    w: f64,
}

impl Skip {
    fn start(k: usize, offered: u64, rng: &mut u64) -> Skip {
        let mut s = Skip {
            next: offered,
            w: (unit(rng).ln() / k as f64).exp(),
        };
        s.jump(rng);
        s
    }

    fn advance(&mut self, k: usize, rng: &mut u64) {
        self.w *= (unit(rng).ln() / k as f64).exp();
        self.jump(rng);
    }

    fn jump(&mut self, rng: &mut u64) {
        let gap = (unit(rng).ln() / (1.0 - self.w).ln()).floor();
        // w close to 1 (tiny k): take the next value.
        let gap = if gap.is_finite() && gap >= 0.0 {
            gap.min(1e15) as u64
        } else {
            0
        };
        self.next += gap + 1;
    }
}

/// A uniform number in (0, 1).
fn unit(rng: &mut u64) -> f64 {
    ((next(rng) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// xorshift64: the reservoir's coin, no allocation, no lock.
fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

impl FeatureWindow {
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.sum / self.n as f64
        }
    }

    pub fn std(&self) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        let m = self.mean();
        (self.sum_sq / self.n as f64 - m * m).max(0.0).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every position of a long stream is kept about equally often.
    #[test]
    fn the_skipping_reservoir_samples_uniformly() {
        let (k, n, trials) = (10usize, 1000u64, 4000);
        let mut hits = vec![0u32; n as usize];
        let mut rng = 0x1234_5678u64;
        for _ in 0..trials {
            let mut sample: Vec<u64> = (1..=k as u64).collect();
            let mut skip = Skip::start(k, k as u64, &mut rng);
            for i in (k as u64 + 1)..=n {
                if i == skip.next {
                    let j = (next(&mut rng) % k as u64) as usize;
                    sample[j] = i;
                    skip.advance(k, &mut rng);
                }
            }
            for v in sample {
                hits[(v - 1) as usize] += 1;
            }
        }
        // Each position is kept with probability k/n: 40 times of 4000.
        let expected = trials as f64 * k as f64 / n as f64;
        for (quarter, chunk) in hits.chunks(250).enumerate() {
            let mean = chunk.iter().sum::<u32>() as f64 / chunk.len() as f64;
            assert!(
                (mean - expected).abs() < expected * 0.1,
                "quarter {quarter}: {mean} vs {expected}"
            );
        }
    }
}

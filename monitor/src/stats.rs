//! The drift statistics, each the textbook definition on two samples or two
//! binned distributions. Tests in `tests/python/test_monitoring.py` compare
//! them with scipy and numpy on the same data.

/// A share a bin with no rows counts as in PSI (a zero would make the
/// logarithm infinite); the value other monitoring tools use.
pub const PSI_FLOOR: f64 = 1e-4;

/// Population stability index of `actual` against `expected`, both counts
/// over the same bins: sum of (a - e) * ln(a / e) over the bins' shares.
pub fn psi(expected: &[u64], actual: &[u64]) -> f64 {
    let (ne, na) = (total(expected), total(actual));
    if ne == 0.0 || na == 0.0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let e = floor(e as f64 / ne);
            let a = floor(a as f64 / na);
            (a - e) * (a / e).ln()
        })
        .sum()
}

fn floor(share: f64) -> f64 {
    if share == 0.0 { PSI_FLOOR } else { share }
}

fn total(counts: &[u64]) -> f64 {
    counts.iter().sum::<u64>() as f64
}

/// Jensen-Shannon distance (the square root of the divergence, natural
/// logarithm) between two binned distributions, as
/// `scipy.spatial.distance.jensenshannon` computes it.
pub fn jensen_shannon(p: &[u64], q: &[u64]) -> f64 {
    let (np, nq) = (total(p), total(q));
    if np == 0.0 || nq == 0.0 {
        return 0.0;
    }
    let mut divergence = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a as f64 / np, b as f64 / nq);
        let m = (a + b) / 2.0;
        if a > 0.0 {
            divergence += a * (a / m).ln();
        }
        if b > 0.0 {
            divergence += b * (b / m).ln();
        }
    }
    (divergence / 2.0).max(0.0).sqrt()
}

/// The two-sample Kolmogorov-Smirnov statistic of two sorted samples: the
/// largest distance between their empirical distribution functions (ties
/// handled as `scipy.stats.ks_2samp` does).
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// The asymptotic p-value of a two-sample KS statistic `d` for samples of
/// `n` and `m` rows: Kolmogorov's limiting distribution at Stephens'
/// small-sample-corrected argument. scipy's default is exact below 10,000
/// rows; the difference is measured in docs/monitoring.md.
pub fn ks_pvalue(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let en = (n as f64 * m as f64 / (n as f64 + m as f64)).sqrt();
    kolmogorov_sf((en + 0.12 + 0.11 / en) * d)
}

/// P(K > x) for Kolmogorov's distribution.
fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.18 {
        // The series in exp(-(2k-1)^2 pi^2 / 8x^2) converges fast here.
        let w = std::f64::consts::PI.powi(2) / (8.0 * x * x);
        let cdf: f64 = (1..=9).map(|k| (-((2 * k - 1) as f64).powi(2) * w).exp()).sum::<f64>()
            * (2.0 * std::f64::consts::PI).sqrt()
            / x;
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    let sf: f64 = (1..=100)
        .map(|k| {
            let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
            sign * (-2.0 * (k * k) as f64 * x * x).exp()
        })
        .sum::<f64>()
        * 2.0;
    sf.clamp(0.0, 1.0)
}

/// The first Wasserstein distance between two sorted samples' empirical
/// distributions (`scipy.stats.wasserstein_distance`): the area between
/// their distribution functions.
pub fn wasserstein(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut x = a[0].min(b[0]);
    let mut area = 0.0;
    while i < a.len() || j < b.len() {
        // Step past every value equal to x, then integrate to the next one.
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => break,
        };
        area += (i as f64 / n - j as f64 / m).abs() * (next - x);
        x = next;
    }
    area
}

/// Pearson's chi-square test of homogeneity on the 2 x K table of two
/// samples' category counts (`scipy.stats.chi2_contingency` without Yates'
/// correction): the statistic and its p-value. Categories neither sample
/// has are left out.
pub fn chi2_homogeneity(a: &[u64], b: &[u64]) -> (f64, f64) {
    let (na, nb) = (total(a), total(b));
    let n = na + nb;
    if na == 0.0 || nb == 0.0 {
        return (0.0, 1.0);
    }
    let mut statistic = 0.0;
    let mut columns = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        let column = (x + y) as f64;
        if column == 0.0 {
            continue;
        }
        columns += 1;
        let (ex, ey) = (na * column / n, nb * column / n);
        statistic += (x as f64 - ex).powi(2) / ex + (y as f64 - ey).powi(2) / ey;
    }
    if columns < 2 {
        return (0.0, 1.0);
    }
    (statistic, chi2_sf(statistic, (columns - 1) as f64))
}

/// P(X > x) for a chi-square variable with `k` degrees of freedom: the
/// regularised upper incomplete gamma function Q(k/2, x/2).
pub fn chi2_sf(x: f64, k: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(k / 2.0, x / 2.0)
}

fn gamma_q(a: f64, x: f64) -> f64 {
    if x < a + 1.0 {
        1.0 - gamma_p_series(a, x)
    } else {
        gamma_q_fraction(a, x)
    }
    .clamp(0.0, 1.0)
}

/// P(a, x) by its series (Numerical Recipes' `gser`).
fn gamma_p_series(a: f64, x: f64) -> f64 {
    let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
    for _ in 0..1000 {
        ap += 1.0;
        term *= x / ap;
        sum += term;
        if term.abs() < sum.abs() * 1e-15 {
            break;
        }
    }
    sum * (-x + a * x.ln() - ln_gamma(a)).exp()
}

/// Q(a, x) by Lentz's continued fraction (Numerical Recipes' `gcf`).
fn gamma_q_fraction(a: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..1000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    (-x + a * x.ln() - ln_gamma(a)).exp() * h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let series = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// The `q` quantile of a sorted sample, interpolated linearly between the
/// two nearest ranks (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn ks_of_disjoint_and_equal_samples() {
        assert_eq!(ks_statistic(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        assert_eq!(ks_statistic(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        // Ties across the samples: F_a(2) = 2/3, F_b(2) = 1/2 at most.
        let d = ks_statistic(&[1.0, 2.0, 2.0], &[2.0, 3.0]);
        assert!(close(d, 0.5, 1e-12), "{d}");
    }

    #[test]
    fn kolmogorov_tail_at_known_points() {
        // P(K > 1.358) = 0.05 and P(K > 1.628) = 0.01, the classic table.
        assert!(close(kolmogorov_sf(1.3581), 0.05, 1e-4));
        assert!(close(kolmogorov_sf(1.6276), 0.01, 1e-4));
        // Both branches agree where they meet.
        let (below, above) = (kolmogorov_sf(1.1799), kolmogorov_sf(1.1801));
        // (the distribution falls about 0.6 per unit there)
        assert!(close(below, above, 2e-4), "{below} {above}");
    }

    #[test]
    fn wasserstein_of_shifted_samples_is_the_shift() {
        let a = [0.0, 1.0, 2.0, 3.0];
        let b = [0.5, 1.5, 2.5, 3.5];
        assert!(close(wasserstein(&a, &b), 0.5, 1e-12));
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5.
        assert!(close(wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]), 5.0, 1e-12));
        // Unequal sizes: ([0, 1], [0, 0, 3]) == 5/6 (scipy).
        assert!(close(wasserstein(&[0.0, 1.0], &[0.0, 0.0, 3.0]), 5.0 / 6.0, 1e-12));
    }

    #[test]
    fn chi2_tail_at_known_points() {
        // chi2.sf(3.841, 1) = 0.05; chi2.sf(18.307, 10) = 0.05.
        assert!(close(chi2_sf(3.841_458_8, 1.0), 0.05, 1e-6));
        assert!(close(chi2_sf(18.307_038, 10.0), 0.05, 1e-6));
        assert!(close(chi2_sf(2.0, 2.0), (-1.0f64).exp(), 1e-12));
    }

    #[test]
    fn chi2_homogeneity_of_a_small_table() {
        // chi2_contingency([[10, 20, 30], [30, 20, 10]], correction=False):
        // statistic 20.0, dof 2, p = exp(-10).
        let (s, p) = chi2_homogeneity(&[10, 20, 30], &[30, 20, 10]);
        assert!(close(s, 20.0, 1e-9), "{s}");
        assert!(close(p, (-10.0f64).exp(), 1e-12), "{p}");
    }

    #[test]
    fn psi_and_js_of_identical_and_different_bins() {
        assert_eq!(psi(&[10, 20, 30], &[1, 2, 3]), 0.0);
        assert_eq!(jensen_shannon(&[10, 20, 30], &[1, 2, 3]), 0.0);
        // Two halves swapped: JS divergence = ln 2 - (0.25 ln(0.25/0.5)...).
        let p = psi(&[50, 50], &[90, 10]);
        let want = (0.9 - 0.5) * (0.9f64 / 0.5).ln() + (0.1 - 0.5) * (0.1f64 / 0.5).ln();
        assert!(close(p, want, 1e-12));
        // Disjoint supports: the largest distance, sqrt(ln 2).
        assert!(close(jensen_shannon(&[1, 0], &[0, 1]), 2f64.ln().sqrt(), 1e-12));
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&s, 0.5), 2.5);
        assert_eq!(quantile(&s, 0.0), 1.0);
        assert_eq!(quantile(&s, 1.0), 4.0);
        assert!(close(quantile(&s, 0.1), 1.3, 1e-12));
    }
}

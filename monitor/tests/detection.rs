//! The profile, the windows and the judge together, on synthetic data with
//! a known shift: one shifted feature is flagged, and only that one; data
//! from the reference's own distribution stays ok window after window.
use std::collections::BTreeMap;
use std::time::Duration;

use quiver_engine::repository::model_config::{IoSpec, ModelSpec};
use quiver_monitor::judge::{State, judge};
use quiver_monitor::profile::{self, Profile};
use quiver_monitor::reference::{Array, Values};
use quiver_monitor::settings::Settings;
use quiver_monitor::window::Window;
use quiver_runtimes::DataType;

const FEATURES: usize = 32;

/// Standard normal values (xorshift and Box-Muller: no crate, reproducible).
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn next(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn rows(rng: &mut Normal, n: usize, shift: Option<(usize, f64)>) -> Array {
    let mut values = Vec::with_capacity(n * FEATURES);
    for _ in 0..n {
        for f in 0..FEATURES {
            let scale = 1.0 + f as f64 / 8.0; // features of different scales
            let delta = match shift {
                Some((g, d)) if g == f => d,
                _ => 0.0,
            };
            values.push((rng.next() + delta) * scale);
        }
    }
    Array {
        shape: vec![n, FEATURES],
        values: Values::Numbers {
            values,
            integral: false,
        },
    }
}

fn spec() -> ModelSpec {
    ModelSpec {
        name: "fraud".into(),
        platform: "onnxruntime_onnx".into(),
        max_batch_size: 64,
        inputs: vec![IoSpec {
            name: "input".into(),
            datatype: DataType::Fp32,
            dims: vec![FEATURES as i64],
            optional: false,
        }],
        outputs: vec![],
        utf8_strings: false,
    }
}

fn profile(rng: &mut Normal, settings: &Settings) -> Profile {
    let arrays = BTreeMap::from([("input".to_owned(), rows(rng, 2000, None))]);
    profile::build("reference.npz".into(), &arrays, &spec(), settings).unwrap()
}

/// Each feature's state after one window of `n` rows.
fn states(p: &Profile, settings: &Settings, data: &Array, n: usize) -> Vec<State> {
    let mut w = Window::new(&p.tensors, 7);
    w.add(0, &p.tensors[0], data, n, FEATURES, settings.reservoir);
    p.tensors[0]
        .features
        .iter()
        .zip(&w.tensors[0].features)
        .map(|(f, fw)| judge(f, fw, settings, p.tests).state)
        .collect()
}

#[test]
fn a_half_sigma_shift_of_one_feature_is_flagged_and_only_that_one() {
    let settings = Settings::defaults(Duration::from_secs(60), 500);
    let mut rng = Normal(0x5eed);
    let p = profile(&mut rng, &settings);
    for n in [500, 1000, 5000] {
        let data = rows(&mut rng, n, Some((7, 0.5)));
        let s = states(&p, &settings, &data, n);
        assert_eq!(s[7], State::Drift, "{n} rows: feature 7 is {:?}", s[7]);
        let others: Vec<usize> = (0..FEATURES).filter(|&f| f != 7 && s[f] == State::Drift).collect();
        assert!(others.is_empty(), "{n} rows: features {others:?} drift too");
    }
}

#[test]
fn unshifted_data_raises_no_drift_over_many_windows() {
    let settings = Settings::defaults(Duration::from_secs(60), 500);
    let mut rng = Normal(0xfeed);
    let p = profile(&mut rng, &settings);
    let mut warnings = 0;
    for n in [500, 1000, 3000] {
        for window in 0..20 {
            let data = rows(&mut rng, n, None);
            let s = states(&p, &settings, &data, n);
            let drifting: Vec<usize> = (0..FEATURES).filter(|&f| s[f] == State::Drift).collect();
            assert!(drifting.is_empty(), "window {window} of {n} rows: {drifting:?} drift");
            warnings += s.iter().filter(|s| **s == State::Warning).count();
        }
    }
    // A warning (most methods, not all, flag a feature) is allowed, but rare.
    assert!(warnings <= 3, "{warnings} warnings over 60 windows");
}

/// The rates behind the defaults (docs/monitoring.md): false drift and
/// warning windows on unchanged data, and detected shifts, by window size.
/// `cargo test -p quiver-monitor --test detection rates -- --ignored --nocapture`
/// (`DECIDE=ks,psi` and `REFROWS=5000` try other settings).
#[test]
#[ignore]
fn rates() {
    let mut settings = Settings::defaults(Duration::from_secs(60), 500);
    if let Ok(d) = std::env::var("DECIDE") {
        settings.decide_numeric = d
            .split(',')
            .map(|m| quiver_monitor::settings::Method::parse(m).unwrap())
            .collect();
    }
    let refrows: usize = std::env::var("REFROWS").map(|r| r.parse().unwrap()).unwrap_or(2000);
    let mut rng = Normal(0xabc);
    let arrays = BTreeMap::from([("input".to_owned(), rows(&mut rng, refrows, None))]);
    let p = profile::build("reference.npz".into(), &arrays, &spec(), &settings).unwrap();
    for n in [100, 200, 300, 500, 1000, 3000] {
        let (mut fp_windows, mut warn, mut tp, mut tp_shift_small) = (0, 0, 0, 0);
        let trials = 400;
        for _ in 0..trials {
            let s = states(&p, &settings, &rows(&mut rng, n, None), n);
            fp_windows += s.contains(&State::Drift) as usize;
            warn += s.contains(&State::Warning) as usize;
        }
        for _ in 0..50 {
            let s = states(&p, &settings, &rows(&mut rng, n, Some((7, 0.5))), n);
            tp += (s[7] == State::Drift) as usize;
            let s = states(&p, &settings, &rows(&mut rng, n, Some((7, 0.3))), n);
            tp_shift_small += (s[7] == State::Drift) as usize;
        }
        println!(
            "n={n}: false-drift windows {fp_windows}/{trials}, warning windows {warn}/{trials}, 0.5σ detected {tp}/50, 0.3σ {tp_shift_small}/50"
        );
    }
}

#[test]
fn a_version_watches_at_most_the_feature_cap() {
    let settings = Settings::defaults(Duration::from_secs(60), 500);
    let wide = 300;
    let mut spec = spec();
    spec.inputs[0].dims = vec![wide as i64];
    let array = Array {
        shape: vec![50, wide],
        values: Values::Numbers {
            values: (0..50 * wide).map(|i| (i % 97) as f64 + 0.5).collect(),
            integral: false,
        },
    };
    let arrays = BTreeMap::from([("input".to_owned(), array)]);
    let p = profile::build("reference.npz".into(), &arrays, &spec, &settings).unwrap();
    assert_eq!(p.tensors[0].features.len(), quiver_monitor::settings::MAX_FEATURES);
    assert_eq!(p.unwatched, wide - quiver_monitor::settings::MAX_FEATURES);
}

/// A tensor whose rows are images is one feature named after it, its
/// values pooled: a change of brightness drifts, the same light does not.
#[test]
fn a_tensor_of_images_is_one_pooled_feature() {
    let settings = Settings::defaults(Duration::from_secs(60), 500);
    let mut spec = spec();
    spec.inputs[0].name = "image".into();
    spec.inputs[0].dims = vec![3, 8, 8];
    let pixels = 3 * 8 * 8;
    let images = |rng: &mut Normal, n: usize, brightness: f64| Array {
        shape: vec![n, 3, 8, 8],
        values: Values::Numbers {
            values: (0..n * pixels).map(|_| 0.5 + 0.1 * rng.next() + brightness).collect(),
            integral: false,
        },
    };
    let mut rng = Normal(0x1ea5);
    let arrays = BTreeMap::from([("image".to_owned(), images(&mut rng, 1000, 0.0))]);
    let p = profile::build("reference.npz".into(), &arrays, &spec, &settings).unwrap();
    assert_eq!(p.tensors[0].features.len(), 1);
    assert_eq!(p.tensors[0].features[0].label, "image");
    let judge_one = |data: &Array| {
        let mut w = Window::new(&p.tensors, 1);
        w.add(0, &p.tensors[0], data, 600, pixels, settings.reservoir);
        judge(&p.tensors[0].features[0], &w.tensors[0].features[0], &settings, p.tests).state
    };
    assert_eq!(judge_one(&images(&mut rng, 600, 0.0)), State::Ok);
    assert_eq!(judge_one(&images(&mut rng, 600, 0.05)), State::Drift);
}

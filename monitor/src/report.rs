//! What the monitors show: the JSON of `GET /v2/models/{m}/monitoring` and
//! the Prometheus series, both read from the last judged windows.
use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{Value, json};

use crate::events::{finite, scores, seconds};
use crate::judge::State;
use crate::monitor::{Judged, Monitor};
use crate::profile::{FeatureProfile, Profile, Reference};
use crate::settings::Kind;

/// One version's report.
pub fn version(m: &Monitor) -> Value {
    let now = Instant::now();
    let s = &m.settings;
    let mut variants = Vec::new();
    let mut features = Vec::new();
    let profile = m.with_variants(|profile, all| {
        for v in all {
            let name = v.name.as_deref();
            let stale = v.judged.as_ref().is_some_and(|j| m.stale(j, now));
            let current = json!({
                "start": seconds(v.window.opened_at),
                "rows": v.window.rows(),
                "requests": v.window.requests,
            });
            match &v.judged {
                Some(j) => {
                    variants.push(json!({
                        "variant": name,
                        "state": j.state.name(),
                        "drift_share": finite(j.drift_share),
                        "stale": stale,
                        "window": window(j),
                        "current_window": current,
                        "quality": quality(profile, j),
                    }));
                    features.extend(feature_items(m, profile, name, Some((j, stale)), j.rows));
                }
                None => {
                    variants.push(json!({
                        "variant": name,
                        "state": "ok",
                        "judged": false,
                        "current_window": current,
                    }));
                    features.extend(feature_items(m, profile, name, None, v.window.rows()));
                }
            }
        }
        if all.is_empty() {
            features.extend(feature_items(m, profile, None, None, 0));
        }
        (profile.source.clone(), profile.rows)
    });
    json!({
        "model": m.model,
        "version": m.version.to_string(),
        "reference": {"source": profile.0, "rows": profile.1},
        "settings": {
            "window_seconds": s.window.as_secs_f64(),
            "min_samples": s.min_samples,
            "sample_rate": s.sample_rate,
            "drift_share": s.drift_share,
            "bins": s.bins,
            "reservoir": s.reservoir,
            "correction": if s.bonferroni { "bonferroni" } else { "none" },
            "decide": {
                "numeric": s.decide_numeric.iter().map(|m| m.name()).collect::<Vec<_>>(),
                "categorical": s.decide_categorical.iter().map(|m| m.name()).collect::<Vec<_>>(),
            },
        },
        "unwatched_features": m.layout().unwatched,
        "observed": m.observed.load(std::sync::atomic::Ordering::Relaxed),
        "dropped": m.dropped.load(std::sync::atomic::Ordering::Relaxed),
        "variants": variants,
        "features": features,
    })
}

fn window(j: &Judged) -> Value {
    json!({
        "start": seconds(j.opened_at),
        "end": seconds(j.closed_at),
        "rows": j.rows,
        "requests": j.requests,
    })
}

fn quality(profile: &Profile, j: &Judged) -> Vec<Value> {
    profile
        .tensors
        .iter()
        .zip(&j.quality)
        .map(|(t, q)| {
            json!({
                "input": t.name,
                "nan": q.nan,
                "out_of_range": q.out_of_range,
                "unseen_category": q.unseen_category,
                "refused": q.refused,
            })
        })
        .collect()
}

/// The thresholds a feature is judged by, keyed like its scores.
fn thresholds(m: &Monitor, tests: usize, f: &FeatureProfile) -> Value {
    let t = &m.settings.thresholds;
    let divisor = if m.settings.bonferroni {
        tests.max(1) as f64
    } else {
        1.0
    };
    match f.reference.kind() {
        Kind::Numeric => json!({
            "psi": [t.psi.0, t.psi.1],
            "ks_pvalue": t.ks / divisor,
            "jensen_shannon": t.jensen_shannon,
            "wasserstein": t.wasserstein,
        }),
        Kind::Categorical => json!({
            "psi": [t.psi.0, t.psi.1],
            "chi2_pvalue": t.chi2 / divisor,
            "jensen_shannon": t.jensen_shannon,
        }),
    }
}

fn reference(f: &FeatureProfile) -> Value {
    match &f.reference {
        Reference::Numeric(n) => json!({
            "rows": n.counts.iter().sum::<u64>(),
            "min": n.min,
            "max": n.max,
            "mean": n.mean,
            "std": n.std,
            "edges": n.edges,
            "counts": n.counts,
        }),
        Reference::Categorical(c) => json!({
            "rows": c.counts.iter().sum::<u64>(),
            "categories": c.categories.iter().map(|c| c.label()).collect::<Vec<_>>(),
            "counts": c.counts,
        }),
    }
}

/// One item of the `features` list per feature of `current`: what every
/// item says, plus what the last judgement says (`None`: not judged yet,
/// `rows` so far).
fn feature_items(
    m: &Monitor,
    current: &Profile,
    variant: Option<&str>,
    judged: Option<(&Judged, bool)>,
    rows: u64,
) -> Vec<Value> {
    let mut out = Vec::new();
    for (t, profile) in current.tensors.iter().enumerate() {
        for (f, feature) in profile.features.iter().enumerate() {
            let mut item = json!({
                "version": m.version.to_string(),
                "variant": variant,
                "input": profile.name,
                "output": profile.output,
                "feature": feature.label,
                "kind": feature.reference.kind().name(),
                "state": State::Ok.name(),
                "judged": false,
                "samples": rows,
                "scores": {},
                "thresholds": thresholds(m, current.tests, feature),
                "reference": reference(feature),
            });
            if let Some((j, stale)) = judged {
                let fj = &j.features[t][f];
                item["state"] = json!(fj.state.name());
                item["judged"] = json!(true);
                item["stale"] = json!(stale);
                item["samples"] = json!(fj.samples);
                item["scores"] = scores(&fj.scores);
                item["window"] = match &feature.reference {
                    Reference::Numeric(_) => json!({
                        "min": finite(fj.min), "max": finite(fj.max),
                        "mean": finite(fj.mean), "std": finite(fj.std),
                        "counts": fj.counts,
                    }),
                    Reference::Categorical(_) => json!({
                        "counts": &fj.counts[..fj.counts.len() - 1],
                        "unseen": fj.counts.last(),
                    }),
                };
            }
            out.push(item);
        }
    }
    out
}

/// Appends the monitoring series of `monitors` in Prometheus' text format.
/// A variant whose last judgement is stale has none (alerts on it resolve).
pub fn prometheus(monitors: &[std::sync::Arc<Monitor>], dropped: u64, out: &mut String) {
    let now = Instant::now();
    let mut drift = String::new();
    let mut state = String::new();
    let mut quality = String::new();
    let mut share = String::new();
    let mut rows = String::new();
    for m in monitors {
        m.with_variants(|current, all| {
            for v in all {
                let Some(j) = &v.judged else { continue };
                if m.stale(j, now) {
                    continue;
                }
                let mut base = format!("model=\"{}\",version=\"{}\"", escape(&m.model), m.version);
                if let Some(name) = &v.name {
                    let _ = write!(base, ",variant=\"{}\"", escape(name));
                }
                let _ = writeln!(share, "quiver_model_drift_share{{{base}}} {}", j.drift_share);
                let _ = writeln!(rows, "quiver_monitoring_window_rows{{{base}}} {}", j.rows);
                for (t, profile) in current.tensors.iter().enumerate() {
                    let input = escape(&profile.name);
                    let q = &j.quality[t];
                    for (check, value) in [
                        ("nan", q.nan),
                        ("out_of_range", q.out_of_range),
                        ("unseen_category", q.unseen_category),
                        ("refused", q.refused),
                    ] {
                        let _ = writeln!(
                            quality,
                            "quiver_data_quality_ratio{{{base},input=\"{input}\",check=\"{check}\"}} {value}"
                        );
                    }
                    for (f, feature) in profile.features.iter().enumerate() {
                        let fj = &j.features[t][f];
                        let labels = format!("{base},input=\"{input}\",feature=\"{}\"", escape(&feature.label));
                        let _ = writeln!(state, "quiver_feature_drift_state{{{labels}}} {}", fj.state as u8);
                        for (method, value) in &fj.scores {
                            if value.is_finite() {
                                let _ = writeln!(drift, "quiver_feature_drift{{{labels},method=\"{method}\"}} {value}");
                            }
                        }
                    }
                }
            }
        });
    }
    for (name, kind, help, body) in [
        (
            "quiver_feature_drift",
            "gauge",
            "A feature's drift score in the last closed monitoring window, by method.",
            drift,
        ),
        (
            "quiver_feature_drift_state",
            "gauge",
            "A feature's drift state in the last closed window: 0 ok, 1 warning, 2 drift.",
            state,
        ),
        (
            "quiver_data_quality_ratio",
            "gauge",
            "Share of an input's values in the last closed window failing a check (nan, out_of_range, unseen_category) or of requests refused naming it (refused).",
            quality,
        ),
        (
            "quiver_model_drift_share",
            "gauge",
            "Share of a version's input features in drift in the last closed window.",
            share,
        ),
        (
            "quiver_monitoring_window_rows",
            "gauge",
            "Rows in a version's last closed monitoring window.",
            rows,
        ),
    ] {
        if body.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        out.push_str(&body);
    }
    let _ = writeln!(
        out,
        "# HELP quiver_monitoring_dropped_total Requests the monitor skipped because its queue was full.\n# TYPE quiver_monitoring_dropped_total counter\nquiver_monitoring_dropped_total {dropped}"
    );
}

/// A label value in Prometheus' text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

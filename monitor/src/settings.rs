//! What to watch and how to judge it: the server's defaults (its flags),
//! overridden per model by `monitoring.json` in the model folder (or in a
//! version folder, for that version). Anything out of range fails the
//! version's load with the reason.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The per-model file.
pub const FILE: &str = "monitoring.json";

/// The most features (columns and whole tensors) one version exports:
/// every feature is a handful of Prometheus series per method.
pub const MAX_FEATURES: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Psi,
    Ks,
    JensenShannon,
    Wasserstein,
    Chi2,
}

impl Method {
    pub fn parse(name: &str) -> Result<Method, String> {
        Ok(match name {
            "psi" => Method::Psi,
            "ks" => Method::Ks,
            "jensen_shannon" => Method::JensenShannon,
            "wasserstein" => Method::Wasserstein,
            "chi2" => Method::Chi2,
            other => {
                return Err(format!(
                    "unknown method '{other}' (known: psi, ks, jensen_shannon, wasserstein, chi2)"
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Psi => "psi",
            Method::Ks => "ks",
            Method::JensenShannon => "jensen_shannon",
            Method::Wasserstein => "wasserstein",
            Method::Chi2 => "chi2",
        }
    }

    /// Whether the method applies to a feature of this kind.
    pub fn applies(self, kind: Kind) -> bool {
        match kind {
            Kind::Numeric => self != Method::Chi2,
            Kind::Categorical => !matches!(self, Method::Ks | Method::Wasserstein),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Numeric,
    Categorical,
}

impl Kind {
    fn parse(name: &str) -> Result<Kind, String> {
        match name {
            "numeric" => Ok(Kind::Numeric),
            "categorical" => Ok(Kind::Categorical),
            other => Err(format!("unknown feature kind '{other}' (numeric or categorical)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Numeric => "numeric",
            Kind::Categorical => "categorical",
        }
    }
}

/// Where each method turns a feature's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// PSI: warning at or above the first, drift at or above the second.
    pub psi: (f64, f64),
    /// KS and chi-square: drift below this p-value (after the correction).
    pub ks: f64,
    pub chi2: f64,
    /// Distances: drift at or above.
    pub jensen_shannon: f64,
    /// Wasserstein distance over the reference's standard deviation.
    pub wasserstein: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub window: Duration,
    pub min_samples: u64,
    /// The share of requests the monitor looks at.
    pub sample_rate: f64,
    /// The model drifts when this share of its input features drift.
    pub drift_share: f64,
    /// Quantile bins of a numeric feature (PSI, Jensen-Shannon).
    pub bins: usize,
    /// Rows per window kept for KS and Wasserstein.
    pub reservoir: usize,
    /// Bonferroni: p-values are compared with alpha / the number of tests.
    pub bonferroni: bool,
    pub thresholds: Thresholds,
    /// The methods whose verdicts make a feature's state. One method: its
    /// verdict. Several: drift when every one flags the feature (a test
    /// below its p-value, a distance at or over its threshold, PSI at or
    /// over its warning level), warning when more than half do.
    pub decide_numeric: Vec<Method>,
    pub decide_categorical: Vec<Method>,
    pub tensors: BTreeMap<String, TensorSettings>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorSettings {
    pub watch: bool,
    pub kind: Option<Kind>,
    /// Per column, by index.
    pub features: BTreeMap<usize, Kind>,
}

impl Settings {
    /// The server's defaults: its flags' window and minimum, the rest the
    /// values practitioners use.
    pub fn defaults(window: Duration, min_samples: u64) -> Settings {
        Settings {
            window,
            min_samples,
            sample_rate: 1.0,
            drift_share: 0.5,
            bins: 10,
            reservoir: 1000,
            bonferroni: true,
            thresholds: Thresholds {
                psi: (0.1, 0.25),
                ks: 0.05,
                chi2: 0.05,
                jensen_shannon: 0.1,
                wasserstein: 0.1,
            },
            // Drift is a change that is both significant (the test) and
            // material (every distance over its threshold): a test alone
            // flags 5% of windows of unchanged data by design, and a
            // distance alone flags the noise of small windows.
            decide_numeric: vec![Method::Ks, Method::Wasserstein, Method::JensenShannon, Method::Psi],
            decide_categorical: vec![Method::Chi2, Method::JensenShannon, Method::Psi],
            tensors: BTreeMap::new(),
        }
    }

    /// The defaults overridden by the version's or the model's
    /// `monitoring.json`; `found` says whether either had one.
    pub fn for_version(&self, model_dir: &Path, version: u64) -> Result<(Settings, bool), String> {
        for path in [model_dir.join(version.to_string()).join(FILE), model_dir.join(FILE)] {
            if path.is_file() {
                let text = std::fs::read(&path).map_err(|e| format!("cannot read {FILE}: {e}"))?;
                return self
                    .overridden(&text)
                    .map(|s| (s, true))
                    .map_err(|e| format!("{FILE}: {e}"));
            }
        }
        Ok((self.clone(), false))
    }

    /// The defaults with a `monitoring.json` document's values.
    pub fn overridden(&self, json: &[u8]) -> Result<Settings, String> {
        let file: File = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut s = self.clone();
        if let Some(w) = file.window_seconds {
            range("window_seconds", w, 0.1, 86_400.0)?;
            s.window = Duration::from_secs_f64(w);
        }
        if let Some(n) = file.min_samples {
            s.min_samples = n;
        }
        if let Some(r) = file.sample_rate {
            if !(r > 0.0 && r <= 1.0) {
                return Err(format!("sample_rate {r} is out of range (0, 1]"));
            }
            s.sample_rate = r;
        }
        if let Some(d) = file.drift_share {
            if !(d > 0.0 && d <= 1.0) {
                return Err(format!("drift_share {d} is out of range (0, 1]"));
            }
            s.drift_share = d;
        }
        if let Some(b) = file.bins {
            range("bins", b as f64, 2.0, 100.0)?;
            s.bins = b;
        }
        if let Some(r) = file.reservoir {
            range("reservoir", r as f64, 10.0, 100_000.0)?;
            s.reservoir = r;
        }
        if let Some(c) = file.correction {
            s.bonferroni = match c.as_str() {
                "bonferroni" => true,
                "none" => false,
                other => return Err(format!("unknown correction '{other}' (bonferroni or none)")),
            };
        }
        for (name, value) in file.thresholds {
            let method = Method::parse(&name).map_err(|e| format!("thresholds: {e}"))?;
            let t = &mut s.thresholds;
            match (method, value) {
                (Method::Psi, Threshold::Pair([w, d])) => {
                    if !(w > 0.0 && w <= d) {
                        return Err(format!(
                            "thresholds: psi [{w}, {d}] must be a warning above 0 and a drift at or above it"
                        ));
                    }
                    t.psi = (w, d);
                }
                (Method::Psi, Threshold::One(d)) => {
                    range("thresholds: psi", d, f64::MIN_POSITIVE, 100.0)?;
                    t.psi = (t.psi.0.min(d), d);
                }
                (Method::Ks | Method::Chi2, Threshold::One(p)) => {
                    if !(p > 0.0 && p < 1.0) {
                        return Err(format!("thresholds: {name} p-value {p} is out of range (0, 1)"));
                    }
                    *if method == Method::Ks { &mut t.ks } else { &mut t.chi2 } = p;
                }
                (Method::JensenShannon, Threshold::One(d)) => {
                    // The distance (natural logarithm) is at most sqrt(ln 2).
                    if !(d > 0.0 && d <= 2f64.ln().sqrt()) {
                        return Err(format!("thresholds: jensen_shannon {d} is out of range (0, 0.8326]"));
                    }
                    t.jensen_shannon = d;
                }
                (Method::Wasserstein, Threshold::One(d)) => {
                    range("thresholds: wasserstein", d, f64::MIN_POSITIVE, 1e6)?;
                    t.wasserstein = d;
                }
                (_, Threshold::Pair(_)) => {
                    return Err(format!("thresholds: {name} takes one number (only psi takes a pair)"));
                }
            }
        }
        if let Some(d) = file.decide {
            for (kind, methods) in d {
                let kind = Kind::parse(&kind).map_err(|e| format!("decide: {e}"))?;
                let methods = methods
                    .iter()
                    .map(|m| Method::parse(m))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("decide: {e}"))?;
                if methods.is_empty() {
                    return Err(format!("decide: {} names no method", kind.name()));
                }
                if let Some(m) = methods.iter().find(|m| !m.applies(kind)) {
                    return Err(format!(
                        "decide: {} does not apply to {} features",
                        m.name(),
                        kind.name()
                    ));
                }
                *match kind {
                    Kind::Numeric => &mut s.decide_numeric,
                    Kind::Categorical => &mut s.decide_categorical,
                } = methods;
            }
        }
        for (name, t) in file.tensors {
            let kind = t
                .kind
                .as_deref()
                .map(Kind::parse)
                .transpose()
                .map_err(|e| format!("tensors.{name}: {e}"))?;
            let mut features = BTreeMap::new();
            for (column, k) in t.features {
                let index: usize = column
                    .parse()
                    .map_err(|_| format!("tensors.{name}.features: '{column}' is not a column index"))?;
                features.insert(
                    index,
                    Kind::parse(&k).map_err(|e| format!("tensors.{name}.features.{column}: {e}"))?,
                );
            }
            s.tensors.insert(
                name,
                TensorSettings {
                    watch: t.watch.unwrap_or(true),
                    kind,
                    features,
                },
            );
        }
        Ok(s)
    }

    pub fn decide(&self, kind: Kind) -> &[Method] {
        match kind {
            Kind::Numeric => &self.decide_numeric,
            Kind::Categorical => &self.decide_categorical,
        }
    }
}

fn range(what: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(format!("{what} {v} is out of range [{lo}, {hi}]"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    window_seconds: Option<f64>,
    min_samples: Option<u64>,
    sample_rate: Option<f64>,
    drift_share: Option<f64>,
    bins: Option<usize>,
    reservoir: Option<usize>,
    correction: Option<String>,
    #[serde(default)]
    thresholds: BTreeMap<String, Threshold>,
    decide: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    tensors: BTreeMap<String, TensorFile>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Threshold {
    One(f64),
    Pair([f64; 2]),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorFile {
    watch: Option<bool>,
    kind: Option<String>,
    #[serde(default)]
    features: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Settings {
        Settings::defaults(Duration::from_secs(60), 200)
    }

    #[test]
    fn a_file_overrides_the_defaults() {
        let s = defaults()
            .overridden(
                br#"{"window_seconds": 5, "thresholds": {"psi": [0.2, 0.3], "ks": 0.01},
                     "decide": {"numeric": ["psi"]},
                     "tensors": {"x": {"features": {"3": "categorical"}}, "y": {"watch": false}}}"#,
            )
            .unwrap();
        assert_eq!(s.window, Duration::from_secs(5));
        assert_eq!(s.thresholds.psi, (0.2, 0.3));
        assert_eq!(s.thresholds.ks, 0.01);
        assert_eq!(s.decide_numeric, vec![Method::Psi]);
        assert_eq!(s.tensors["x"].features[&3], Kind::Categorical);
        assert!(s.tensors["x"].watch && !s.tensors["y"].watch);
        assert_eq!(s.min_samples, 200);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        for (json, want) in [
            (r#"{"thresholds": {"kl": 0.1}}"#, "unknown method 'kl'"),
            (r#"{"thresholds": {"ks": 1.5}}"#, "ks p-value 1.5 is out of range"),
            (r#"{"thresholds": {"psi": [0.3, 0.2]}}"#, "psi [0.3, 0.2]"),
            (
                r#"{"thresholds": {"jensen_shannon": 2}}"#,
                "jensen_shannon 2 is out of range",
            ),
            (r#"{"decide": {"numeric": ["chi2"]}}"#, "chi2 does not apply to numeric"),
            (r#"{"sample_rate": 0}"#, "sample_rate 0 is out of range"),
            (r#"{"windows": 3}"#, "unknown field `windows`"),
            (
                r#"{"tensors": {"x": {"kind": "ordinal"}}}"#,
                "tensors.x: unknown feature kind 'ordinal'",
            ),
        ] {
            let e = defaults().overridden(json.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}

//! The validation gate: a new version must prove itself before it takes
//! traffic. It runs between warm-up and the switch, on the new version's own
//! queue and instances, which no client can reach yet.
//!
//! A model ships its checks in `validation/` beside `config.pbtxt` (or in the
//! version folder, which wins: a registry artifact carries its own):
//! - `*.json` golden cases: `{"request": <V2 request body>, "response":
//!   {"outputs": [...]}, "tolerance": {"atol": .., "rtol": ..}}`. The
//!   response and tolerance are optional: a case without expected outputs
//!   still feeds the latency and deviation checks.
//! - `gate.json` (optional): `{"tolerance": {..}, "max_p99_latency_ms": ..,
//!   "latency_runs": 20, "max_deviation": {"atol": .., "rtol": ..}}`.
//!
//! Checks, each a label of `quiver_validation_failures_total{check}`:
//! `golden` (outputs match within tolerance, |a - e| <= atol + rtol * |e|),
//! `latency` (p99 of `latency_runs` timed runs of the cases, or of the
//! warm-up samples when there are none, under the limit), `deviation`
//! (outputs within `max_deviation` of the version serving now, on the same
//! inputs), and `golden_set` (the files themselves cannot be read).
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use quiver_runtimes::Tensor;
use serde::Deserialize;

use super::compare::{Tolerance, compare};
use super::model::{ModelVersion, Priority};
use super::request::InferRequest;
use super::warmup;
use crate::codec::json;

/// The folder name that holds a model's checks.
pub const FOLDER: &str = "validation";
const SETTINGS: &str = "gate.json";
/// Golden cases a model may ship; more is a mistake, not a test set.
const MAX_CASES: usize = 1000;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {
    tolerance: Option<Tolerance>,
    max_p99_latency_ms: Option<f64>,
    latency_runs: Option<usize>,
    max_deviation: Option<Tolerance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    request: Box<serde_json::value::RawValue>,
    response: Option<ResponseFile>,
    tolerance: Option<Tolerance>,
}

#[derive(Deserialize)]
struct ResponseFile {
    outputs: Box<serde_json::value::RawValue>,
}

struct Case {
    name: String,
    request: InferRequest,
    expected: Option<Vec<Tensor>>,
    tolerance: Tolerance,
}

/// Why a version did not pass: the check and what it found.
#[derive(Debug)]
pub struct Failure {
    pub check: &'static str,
    pub message: String,
}

impl Failure {
    fn new(check: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            check,
            message: message.into(),
        }
    }
}

/// A model's gate, read from its files.
pub struct Gate {
    folder: PathBuf,
    cases: Vec<Case>,
    settings: Settings,
}

impl Gate {
    /// The gate of `model_dir`'s version `version`; `None` when the model
    /// ships no `validation/` folder.
    pub fn read(name: &str, model_dir: &Path, version: u64) -> Result<Option<Gate>, Failure> {
        let folder = [model_dir.join(version.to_string()).join(FOLDER), model_dir.join(FOLDER)]
            .into_iter()
            .find(|p| p.is_dir());
        let Some(folder) = folder else { return Ok(None) };
        let bad = |what: &str, e: &dyn std::fmt::Display| Failure::new("golden_set", format!("{what}: {e}"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .map_err(|e| bad(&folder.display().to_string(), &e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let settings: Settings = match std::fs::read(folder.join(SETTINGS)) {
            Ok(text) => serde_json::from_slice(&text).map_err(|e| bad(SETTINGS, &e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Settings::default(),
            Err(e) => return Err(bad(SETTINGS, &e)),
        };
        let mut cases = Vec::new();
        for path in files {
            let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if file == SETTINGS {
                continue;
            }
            let text = std::fs::read(&path).map_err(|e| bad(&file, &e))?;
            if cases.len() == MAX_CASES {
                return Err(Failure::new("golden_set", format!("more than {MAX_CASES} cases")));
            }
            let case: CaseFile = serde_json::from_slice(&text).map_err(|e| bad(&file, &e))?;
            let request = json::decode_request(case.request.get().as_bytes(), Bytes::new(), name, None)
                .map_err(|e| bad(&file, &e.message))?;
            let expected = match case.response {
                None => None,
                Some(r) => {
                    // Expected outputs are written like inputs: decode them so.
                    let as_inputs = format!("{{\"inputs\":{}}}", r.outputs.get());
                    let decoded = json::decode_request(as_inputs.as_bytes(), Bytes::new(), name, None)
                        .map_err(|e| bad(&file, &format!("response: {}", e.message.replace("input", "output"))))?;
                    Some(decoded.inputs)
                }
            };
            cases.push(Case {
                name: file,
                request,
                expected,
                tolerance: case.tolerance.or(settings.tolerance).unwrap_or_default(),
            });
        }
        Ok(Some(Gate {
            folder,
            cases,
            settings,
        }))
    }

    /// Runs every check on `new` (started, not routable) and, for the
    /// deviation check, on `serving`. `Ok` carries a one-line summary.
    pub fn check(
        &self,
        runtime: &tokio::runtime::Handle,
        new: &ModelVersion,
        serving: Option<&ModelVersion>,
        version_dir: &Path,
    ) -> Result<String, Failure> {
        let run = |model: &ModelVersion, req: &InferRequest| -> Result<(Vec<Tensor>, Duration), String> {
            let (answer, timing) = runtime.block_on(model.run(req.clone(), Priority::Client));
            answer.map(|r| (r.outputs, timing.elapsed)).map_err(|e| e.message)
        };
        let mut summary = Vec::new();

        let mut golden = 0;
        for case in &self.cases {
            let (outputs, _) = run(new, &case.request)
                .map_err(|e| Failure::new("golden", format!("case '{}' failed to run: {e}", case.name)))?;
            if let Some(expected) = &case.expected {
                compare(&outputs, expected, case.tolerance)
                    .map_err(|e| Failure::new("golden", format!("case '{}': {e}", case.name)))?;
                golden += 1;
            }
        }
        if golden > 0 {
            summary.push(format!("{golden} golden case(s) matched"));
        }

        if let Some(limit) = self.settings.max_p99_latency_ms {
            let requests: Vec<InferRequest> = if self.cases.is_empty() {
                let samples = warmup::samples(&new.config, &new.spec, version_dir, true, false, &|_| {})
                    .map_err(|e| Failure::new("latency", format!("no inputs to time: {e}")))?;
                samples
                    .into_iter()
                    .map(|s| InferRequest {
                        model_name: new.name().to_owned(),
                        inputs: s.inputs,
                        ..Default::default()
                    })
                    .collect()
            } else {
                self.cases.iter().map(|c| c.request.clone()).collect()
            };
            let runs = self.settings.latency_runs.unwrap_or(20).clamp(1, 10_000);
            let mut times = Vec::with_capacity(runs);
            for i in 0..runs {
                let (_, took) = run(new, &requests[i % requests.len()])
                    .map_err(|e| Failure::new("latency", format!("a timed run failed: {e}")))?;
                times.push(took);
            }
            let p99 = percentile(&mut times, 0.99);
            let p99_ms = p99.as_secs_f64() * 1e3;
            if p99_ms > limit {
                return Err(Failure::new(
                    "latency",
                    format!("p99 latency {p99_ms:.3} ms over {runs} runs exceeds max_p99_latency_ms {limit}"),
                ));
            }
            summary.push(format!("p99 {p99_ms:.3} ms <= {limit} ms over {runs} runs"));
        }

        if let Some(tolerance) = self.settings.max_deviation {
            match serving {
                None => summary.push("no serving version to compare with".into()),
                Some(old) => {
                    if self.cases.is_empty() {
                        return Err(Failure::new(
                            "golden_set",
                            "max_deviation needs at least one case's inputs",
                        ));
                    }
                    for case in &self.cases {
                        let (ours, _) = run(new, &case.request)
                            .map_err(|e| Failure::new("deviation", format!("case '{}': {e}", case.name)))?;
                        let mut on_old = case.request.clone();
                        on_old.model_version = None;
                        let (theirs, _) = run(old, &on_old).map_err(|e| {
                            Failure::new(
                                "deviation",
                                format!("case '{}' failed on version {}: {e}", case.name, old.version),
                            )
                        })?;
                        compare(&ours, &theirs, tolerance).map_err(|e| {
                            Failure::new(
                                "deviation",
                                format!("case '{}' against serving version {}: {e}", case.name, old.version),
                            )
                        })?;
                    }
                    summary.push(format!("within max_deviation of version {}", old.version));
                }
            }
        }
        if summary.is_empty() {
            summary.push(format!("{} case(s) ran", self.cases.len()));
        }
        Ok(format!("passed ({}): {}", self.folder.display(), summary.join("; ")))
    }
}

/// The `q` quantile of `times` (nearest rank).
fn percentile(times: &mut [Duration], q: f64) -> Duration {
    times.sort_unstable();
    let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
    times[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_runtimes::DataType;

    fn f32s(name: &str, shape: Vec<i64>, v: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape,
            data: Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()),
        }
    }

    #[test]
    fn outputs_compare_within_tolerance() {
        let t = Tolerance { atol: 0.01, rtol: 0.0 };
        let e = [f32s("y", vec![1, 3], &[1.0, 2.0, 3.0])];
        assert!(compare(&[f32s("y", vec![1, 3], &[1.0, 2.005, 3.0])], &e, t).is_ok());
        let err = compare(&[f32s("y", vec![1, 3], &[1.0, 2.5, 3.5])], &e, t).unwrap_err();
        assert!(
            err.contains("'y'[1] is 2.5 where 2 was expected") && err.contains("1 more"),
            "{err}"
        );
        let err = compare(&[f32s("y", vec![3], &[1.0, 2.0, 3.0])], &e, t).unwrap_err();
        assert!(err.contains("shape [3], expected [1, 3]"), "{err}");
        let err = compare(&[f32s("z", vec![1, 3], &[1.0, 2.0, 3.0])], &e, t).unwrap_err();
        assert!(err.contains("'y' is missing"), "{err}");
        // Relative tolerance scales with the expected value.
        let big = [f32s("y", vec![1], &[1000.0])];
        assert!(
            compare(
                &[f32s("y", vec![1], &[1000.5])],
                &big,
                Tolerance { atol: 0.0, rtol: 1e-3 }
            )
            .is_ok()
        );
        assert!(
            compare(
                &[f32s("y", vec![1], &[1002.0])],
                &big,
                Tolerance { atol: 0.0, rtol: 1e-3 }
            )
            .is_err()
        );
        // NaN matches only NaN.
        let nan = [f32s("y", vec![1], &[f32::NAN])];
        assert!(compare(&nan, &nan, t).is_ok());
        assert!(compare(&[f32s("y", vec![1], &[0.0])], &nan, t).is_err());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut t: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut t, 0.99), Duration::from_millis(99));
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(percentile(&mut one, 0.99), Duration::from_millis(7));
    }

    #[test]
    fn golden_sets_are_read_and_bad_ones_named() {
        let dir = std::env::temp_dir().join(format!("quiver-gate-{}", std::process::id()));
        let v = dir.join("1").join(FOLDER);
        std::fs::create_dir_all(&v).unwrap();
        assert!(Gate::read("m", &dir.join("nothing"), 1).unwrap().is_none());
        std::fs::write(
            v.join("a.json"),
            r#"{"request": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]},
                "response": {"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [2, 4]}]},
                "tolerance": {"atol": 0.5}}"#,
        )
        .unwrap();
        std::fs::write(v.join("gate.json"), r#"{"max_p99_latency_ms": 50}"#).unwrap();
        let gate = Gate::read("m", &dir, 1).unwrap().unwrap();
        assert_eq!(gate.cases.len(), 1);
        assert_eq!(gate.cases[0].tolerance, Tolerance { atol: 0.5, rtol: 0.0 });
        assert_eq!(gate.cases[0].expected.as_ref().unwrap()[0].name, "y");
        assert_eq!(gate.settings.max_p99_latency_ms, Some(50.0));
        std::fs::write(
            v.join("b.json"),
            r#"{"request": {"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}}"#,
        )
        .unwrap();
        let e = Gate::read("m", &dir, 1).err().unwrap();
        assert_eq!(e.check, "golden_set");
        assert!(
            e.message.contains("b.json") && e.message.contains("FP99"),
            "{}",
            e.message
        );
        std::fs::write(v.join("b.json"), r#"{"request": {}, "expected": 1}"#).unwrap();
        let e = Gate::read("m", &dir, 1).err().unwrap();
        assert!(
            e.message.contains("b.json") && e.message.contains("expected"),
            "{}",
            e.message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

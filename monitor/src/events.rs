//! What the monitor tells the outside when states change: one event per
//! change of a feature's state, and one per change of the version's
//! (model-level) state, as the JSON data of a CloudEvent (the server posts
//! it to the webhooks).
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::judge::{Scores, State};

/// The CloudEvents `type` of a feature's state change.
pub const FEATURE_TYPE: &str = "io.quiver.monitoring.feature_state_changed";
/// The CloudEvents `type` of a version's drift state change.
pub const MODEL_TYPE: &str = "io.quiver.monitoring.model_state_changed";

pub struct Event {
    pub model: String,
    pub version: u64,
    pub variant: Option<String>,
    pub window_start: SystemTime,
    pub window_end: SystemTime,
    pub rows: u64,
    pub drift_share: f64,
    pub model_state: (State, State),
    /// The feature whose state changed; `None`: the version's state did.
    pub change: Option<Change>,
    /// Unique per event (the CloudEvents `id`; a retry sends it again).
    pub id: String,
}

pub struct Change {
    pub input: String,
    pub feature: String,
    pub from: State,
    pub to: State,
    pub samples: u64,
    pub scores: Scores,
}

impl Event {
    /// The `source` attribute: the version's monitoring endpoint.
    pub fn source(&self) -> String {
        format!("/v2/models/{}/versions/{}/monitoring", self.model, self.version)
    }

    pub fn kind(&self) -> &'static str {
        if self.change.is_some() {
            FEATURE_TYPE
        } else {
            MODEL_TYPE
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let (from, to) = match &self.change {
            Some(c) => (c.from, c.to),
            None => self.model_state,
        };
        json!({
            "from": from.name(),
            "to": to.name(),
            "input": self.change.as_ref().map(|c| &c.input),
            "feature": self.change.as_ref().map(|c| &c.feature),
            "model": self.model,
            "version": self.version.to_string(),
            "variant": self.variant,
            "window": {
                "start": seconds(self.window_start),
                "end": seconds(self.window_end),
                "rows": self.rows,
            },
            "model_state": {"from": self.model_state.0.name(), "to": self.model_state.1.name()},
            "drift_share": finite(self.drift_share),
            "changes": self.change.iter().map(|c| json!({
                "input": c.input,
                "feature": c.feature,
                "from": c.from.name(),
                "to": c.to.name(),
                "samples": c.samples,
                "scores": scores(&c.scores),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Seconds since the Unix epoch.
pub fn seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// JSON has no NaN or infinity: they become null.
pub fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

pub fn scores(s: &Scores) -> Value {
    Value::Object(s.iter().map(|(k, v)| ((*k).to_owned(), finite(*v))).collect())
}

//! A model's traffic policy as clients write it (`PUT /v2/models/{m}/traffic`,
//! or `traffic.json` beside `config.pbtxt`), and its checks. The JSON is the
//! interface: fields are added, never renamed.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::compare::Tolerance;

/// The policy document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub variants: Vec<VariantSpec>,
    /// The variant a request without a usable routing decision goes to, and
    /// the one `x-quiver-variant` values that name nothing are refused for.
    /// Default: the first variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Version labels (TF Serving's): label -> version number. Usable
    /// wherever a version is (URLs, a variant's `version`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, u64>,
    /// A request header whose value (a user or session id) is hashed to pick
    /// the variant: one user always sees one variant while the weights stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// Also send a share of requests to a variant whose answers are
    /// compared with the primary's and discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
    /// Raise a canary's weight in steps while it stays within bounds of the
    /// stable variant; set it back to 0 when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    pub variant: String,
    /// Share of routed requests also sent to the shadow, 0-100.
    pub percent: f64,
    /// Outputs further apart than this count as a mismatch (the gate's
    /// comparison and defaults).
    #[serde(default)]
    pub tolerance: Tolerance,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The variant whose weight rises, and the one it is judged against
    /// (which takes the rest of the traffic).
    pub canary: String,
    pub stable: String,
    /// The canary's share at each step, in percent, rising; ends at 100
    /// for a promotion.
    pub steps: Vec<u32>,
    pub step_seconds: f64,
    /// Roll back when the canary's error rate exceeds the stable one's by
    /// more than this (absolute: 0.01 = one percentage point).
    #[serde(default = "default_error_increase")]
    pub max_error_rate_increase: f64,
    /// Roll back when the canary's p99 exceeds the stable one's times this
    /// plus `p99_slack_ms` (so sub-millisecond jitter never rolls back).
    #[serde(default = "default_p99_ratio")]
    pub max_p99_ratio: f64,
    #[serde(default = "default_p99_slack_ms")]
    pub p99_slack_ms: f64,
    /// A step is judged only once the canary has had this many requests in
    /// it (the step is extended until it has).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_error_increase() -> f64 {
    0.01
}
fn default_p99_ratio() -> f64 {
    1.5
}
fn default_p99_slack_ms() -> f64 {
    5.0
}
fn default_min_requests() -> u64 {
    20
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub name: String,
    /// A version number or label of the served model (or of `model`).
    /// None: the highest ready version.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "number_or_string"
    )]
    pub version: Option<String>,
    /// Another model of the repository to send this variant's requests to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub weight: u32,
}

/// `"version": 2` and `"version": "2"` (or a label) are both accepted.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        N(u64),
        S(String),
    }
    Ok(match Option::<V>::deserialize(d)? {
        None => None,
        Some(V::N(n)) => Some(n.to_string()),
        Some(V::S(s)) => Some(s),
    })
}

/// The largest weight: keeps sums far from overflow and schedules small.
pub const MAX_WEIGHT: u32 = 1_000_000;

impl PolicySpec {
    /// Parses and checks a policy for `model`. `model_exists` tells whether
    /// another model a variant names is known. Errors name the field.
    pub fn parse(model: &str, json: &[u8], model_exists: impl Fn(&str) -> bool) -> Result<PolicySpec, String> {
        let spec: PolicySpec =
            serde_json::from_slice(json).map_err(|e| format!("malformed traffic policy for '{model}': {e}"))?;
        spec.check(model, model_exists)?;
        Ok(spec)
    }

    fn check(&self, model: &str, model_exists: impl Fn(&str) -> bool) -> Result<(), String> {
        let bad = |why: String| Err(format!("traffic policy for '{model}': {why}"));
        if self.variants.is_empty() {
            return bad("'variants' is empty".into());
        }
        let mut total: u64 = 0;
        for (i, v) in self.variants.iter().enumerate() {
            if v.name.is_empty() || v.name.len() > 64 || !v.name.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(format!(
                    "variant {i} has name '{}': use 1-64 visible ASCII characters",
                    v.name
                ));
            }
            if self.variants[..i].iter().any(|o| o.name == v.name) {
                return bad(format!("variant '{}' is named twice", v.name));
            }
            if v.weight > MAX_WEIGHT {
                return bad(format!(
                    "variant '{}' has weight {}, over {MAX_WEIGHT}",
                    v.name, v.weight
                ));
            }
            total += u64::from(v.weight);
            let target = v.model.as_deref().unwrap_or(model);
            if let Some(other) = &v.model
                && (other.is_empty() || !model_exists(other))
            {
                return bad(format!(
                    "variant '{}' names model '{other}', which is not in the repository",
                    v.name
                ));
            }
            if let Some(version) = &v.version
                && version.parse::<u64>().is_err()
                && (target != model || !self.labels.contains_key(version))
            {
                return bad(format!(
                    "variant '{}' names version '{version}', which is neither a number nor a label of this policy",
                    v.name
                ));
            }
        }
        if total == 0 {
            return bad("the weights sum to 0".into());
        }
        if let Some(d) = &self.default
            && !self.variants.iter().any(|v| &v.name == d)
        {
            return bad(format!("'default' names variant '{d}', which is not in 'variants'"));
        }
        for label in self.labels.keys() {
            if label.is_empty() || label.parse::<u64>().is_ok() || label.contains('/') {
                return bad(format!("label '{label}' must be a non-numeric name"));
            }
        }
        let known = |v: &str| self.variants.iter().any(|x| x.name == v);
        if let Some(s) = &self.shadow {
            if !known(&s.variant) {
                return bad(format!(
                    "'shadow.variant' names variant '{}', which is not in 'variants'",
                    s.variant
                ));
            }
            if !(0.0..=100.0).contains(&s.percent) {
                return bad(format!("'shadow.percent' is {}, outside 0-100", s.percent));
            }
            if !(s.tolerance.atol >= 0.0 && s.tolerance.rtol >= 0.0) {
                return bad("'shadow.tolerance' must be non-negative".into());
            }
        }
        if let Some(r) = &self.rollout {
            for (field, v) in [("canary", &r.canary), ("stable", &r.stable)] {
                if !known(v) {
                    return bad(format!(
                        "'rollout.{field}' names variant '{v}', which is not in 'variants'"
                    ));
                }
            }
            if r.canary == r.stable {
                return bad("'rollout.canary' and 'rollout.stable' are the same variant".into());
            }
            if r.steps.is_empty() || r.steps.windows(2).any(|w| w[0] >= w[1]) || r.steps.iter().any(|&s| s > 100) {
                return bad(format!(
                    "'rollout.steps' {:?} must rise strictly, within 0-100",
                    r.steps
                ));
            }
            if !(r.step_seconds > 0.0 && r.step_seconds <= 86_400.0) {
                return bad(format!(
                    "'rollout.step_seconds' is {}, outside (0, 86400]",
                    r.step_seconds
                ));
            }
            if !(r.max_error_rate_increase >= 0.0 && r.max_p99_ratio >= 1.0 && r.p99_slack_ms >= 0.0) {
                return bad(
                    "'rollout.max_error_rate_increase' and 'p99_slack_ms' must be >= 0, 'max_p99_ratio' >= 1".into(),
                );
            }
        }
        if let Some(h) = &self.sticky_header
            && !is_header_name(h)
        {
            return bad(format!("'sticky_header' '{h}' is not a header name"));
        }
        Ok(())
    }
}

/// An HTTP field name (RFC 9110's token: letters, digits and
/// ``!#$%&'*+-.^_`|~``); gRPC metadata keys are a subset.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<PolicySpec, String> {
        PolicySpec::parse("fraud", json.as_bytes(), |m| m == "other")
    }

    #[test]
    fn good_policies_parse() {
        let p = parse(
            r#"{"variants": [{"name": "stable", "version": 1, "weight": 90},
                             {"name": "canary", "version": "canary", "weight": 10},
                             {"name": "elsewhere", "model": "other", "weight": 0}],
                "labels": {"canary": 2}, "sticky_header": "x-user-id", "default": "stable"}"#,
        )
        .unwrap();
        assert_eq!(p.variants[0].version.as_deref(), Some("1"));
        assert_eq!(p.labels["canary"], 2);
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        let cases = [
            (r#"{"variants": []}"#, "'variants' is empty"),
            (r#"{"variants": [{"name": "a", "weight": 0}]}"#, "the weights sum to 0"),
            (
                r#"{"variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}"#,
                "named twice",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 1}], "default": "b"}"#,
                "'default' names variant 'b'",
            ),
            (
                r#"{"variants": [{"name": "a", "model": "nope", "weight": 1}]}"#,
                "model 'nope'",
            ),
            (
                r#"{"variants": [{"name": "a", "version": "beta", "weight": 1}]}"#,
                "version 'beta'",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 1}], "shadow": {"variant": "b", "percent": 5}}"#,
                "'shadow.variant' names variant 'b'",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 1}], "shadow": {"variant": "a", "percent": 500}}"#,
                "outside 0-100",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 0}], "rollout": {"canary": "b", "stable": "a", "steps": [50, 10], "step_seconds": 60}}"#,
                "must rise strictly",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 1}], "rollout": {"canary": "c", "stable": "a", "steps": [50], "step_seconds": 60}}"#,
                "'rollout.canary' names variant 'c'",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 1}], "sticky_header": "bad header"}"#,
                "not a header name",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 1}], "labels": {"3": 3}}"#,
                "non-numeric",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 1, "colour": "red"}]}"#,
                "unknown field `colour`",
            ),
            (r#"{"variants": [{"name": "a", "weight": -1}]}"#, "malformed"),
        ];
        for (json, needle) in cases {
            let e = parse(json).unwrap_err();
            assert!(e.contains(needle) && e.contains("'fraud'"), "{json}: {e}");
        }
    }
}
